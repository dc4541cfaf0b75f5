#!/usr/bin/env bash
# Lints the deploy path with the real tools (called by scripts/test.sh):
#   - hadolint on the Dockerfiles, failing on any finding, even style;
#   - the Docker build context and build commands match the workspace;
#   - the CRD copies in k8s/base/ equal the generated crds/*.yaml;
#   - `kubectl kustomize k8s/`, `k8s/namespaced/` and `k8s/monitoring/` build;
#   - every manifest under k8s/ and crds/, and the kustomize output, is valid
#     for Kubernetes 1.30 and 1.33 (kubernetes-validate --strict for built-in
#     kinds; ChatClusters and ChatLoadTests against their CRD's schema,
#     defaults and CEL rules, judged by fake-apiserver's crd-admit: the same
#     admission the operator's tests meet);
#   - every example under k8s/examples/invalid/ is rejected, for its reason;
#   - `operator render` of every ChatCluster example prints objects that pass the
#     same validation;
#   - checkov finds no failed check in k8s/, the Dockerfiles and the rendered
#     objects.
# The Python tools live in a virtualenv cached under ~/.cache/chatback (or
# $CHATBACK_CACHE_DIR), built once per version of lint-k8s/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

here=scripts/lint-k8s
kube_versions=(-k 1.30.0 -k 1.33.0)
crds=(crds/chatcluster.yaml crds/chatloadtest.yaml)
crd_args=(--crd crds/chatcluster.yaml --crd crds/chatloadtest.yaml --admit target/debug/crd-admit)
dockerfiles=(Dockerfile.server Dockerfile.operator Dockerfile.loadtest)

fail() { echo "lint-k8s: $*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------
cache=${CHATBACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/chatback}
venv="$cache/lint-k8s-$(sha256sum "$here/requirements.txt" | cut -c1-16)"
mkdir -p "$cache"
(
  flock 9  # one installer at a time; the others wait, then find it done
  if [[ ! -e $venv/.complete ]]; then
    echo "installing lint tools into $venv (once)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check \
        -r "$here/requirements.txt" >"$venv/install.log" 2>&1; then
      cat "$venv/install.log" >&2
      fail "pip install -r $here/requirements.txt failed"
    fi
    touch "$venv/.complete"
  fi
) 9>"$cache/lint-k8s.lock"
py="$venv/bin/python"

work=$(mktemp -d /tmp/chatback-lint-k8s.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- Dockerfiles -------------------------------------------------------------
"$venv/bin/hadolint" --no-color --failure-threshold style "${dockerfiles[@]}" \
  || fail "hadolint found issues in the Dockerfiles"
"$py" "$here/dockerfiles.py" "${dockerfiles[@]}"
echo "hadolint: ${dockerfiles[*]} clean"

# --- manifests ---------------------------------------------------------------
# Custom resources are admitted by the fake API server's own code (one judge for
# the lint and the operator's tests); --workspace keeps the feature set of the
# workspace build, so nothing is compiled again after `cargo test --workspace`.
cargo build -q --locked --workspace --bin crd-admit || fail "cargo build --bin crd-admit failed"
for crd in "${crds[@]}"; do
  copy="k8s/base/crd-$(basename "$crd")"
  cmp -s "$crd" "$copy" || fail "$copy differs from $crd; run: cp $crd $copy"
done

# k8s/monitoring/ holds prometheus-operator kinds (PodMonitor,
# PrometheusRule), whose CRDs are not vendored here, and plain Prometheus and
# prometheus-adapter files: operator/tests/monitoring checks those with
# promtool and a real Prometheus (scripts/monitoring.sh); here it must build.
mapfile -t manifests < <(
  find k8s crds -name '*.yaml' -not -name kustomization.yaml -not -path 'k8s/examples/invalid/*' \
    -not -path 'k8s/monitoring/*' | sort)
if command -v kubectl >/dev/null; then
  kubectl kustomize k8s >"$work/install.yaml" || fail "kubectl kustomize k8s/ failed"
  kubectl kustomize k8s/namespaced >"$work/install-namespaced.yaml" \
    || fail "kubectl kustomize k8s/namespaced/ failed"
  kubectl kustomize k8s/monitoring >/dev/null || fail "kubectl kustomize k8s/monitoring/ failed"
  manifests+=("$work/install.yaml" "$work/install-namespaced.yaml")
else
  echo "kubectl not found: skipping the kustomize build of k8s/ (the files are still validated)"
fi
"$py" "$here/validate.py" validate "${crd_args[@]}" "${kube_versions[@]}" "${manifests[@]}"

invalid=(k8s/examples/invalid/*.yaml)
[[ -e ${invalid[0]} ]] || fail "no invalid examples under k8s/examples/invalid/"
"$py" "$here/validate.py" reject "${crd_args[@]}" "${kube_versions[@]}" "${invalid[@]}"

# --- what the operator makes of the examples -----------------------------------
mkdir "$work/rendered" "$work/rendered-skips"
# (A ChatLoadTest renders to nothing; its Job is made by the controller.)
examples=(k8s/examples/chatcluster*.yaml)
for example in "${examples[@]}"; do
  cargo run -q --locked -p operator -- render -f "$example" >"$work/rendered/$(basename "$example")" \
    || fail "operator render -f $example failed"
done
echo "operator render of ${examples[*]}:"
"$py" "$here/validate.py" validate "${kube_versions[@]}" "$work"/rendered/*.yaml
"$py" "$here/checkov_skips.py" "$here/checkov-rendered.yaml" "$work/rendered-skips" "$work"/rendered/*.yaml

# --- checkov -----------------------------------------------------------------
# Every skip is justified where it applies: an annotation (checkov.io/skipN) or
# comment (checkov:skip=ID: reason) in k8s/ and the Dockerfiles, and for the
# rendered objects the documented list in lint-k8s/checkov-rendered.yaml.
checkov() {
  "$venv/bin/checkov" --quiet --compact --skip-download "$@" >"$work/checkov.txt" 2>&1 \
    || { cat "$work/checkov.txt"; fail "checkov found failed checks"; }
  awk '/scan results:/ {kind = $1} /^Passed checks/ {print "checkov " kind ": " $0}' "$work/checkov.txt"
}
mapfile -t k8s_files < <(find k8s -name '*.yaml' -not -name kustomization.yaml -not -path 'k8s/monitoring/*' | sort)
checkov --framework kubernetes dockerfile -f "${k8s_files[@]}" "${dockerfiles[@]}"
echo "operator render of ${examples[*]}:"
checkov --framework kubernetes -f "$work"/rendered-skips/*.yaml
