#!/usr/bin/env python3
"""Validate Kubernetes manifests offline, the way the API server would judge them.

Why this exists: `kubernetes-validate --strict` knows every built-in kind, but
for a custom resource it only prints "WARN couldn't find schema" and passes. So
this script runs the same kubernetes-validate check (strict, per Kubernetes
version) on built-in kinds. A custom resource's metadata is checked against
Kubernetes' ObjectMeta here too, but the rest of it is judged by one judge
shared with the operator's tests: `crd-admit` (fake-apiserver/src/bin), which
runs the fake API server's own admission against the CRDs given with --crd
(undeclared fields rejected, as `kubectl apply` does with its default strict
field validation; defaults; the structural schema; the `x-kubernetes-validations`
CEL rules, through kube-cel). So the lint and the fake cannot disagree about a
ChatCluster. An unknown kind is an error, never a silent pass.

  validate.py validate --admit target/debug/crd-admit --crd crds/chatcluster.yaml -k 1.30.0 FILE...
      every object in every FILE must be valid.
  validate.py reject --admit target/debug/crd-admit --crd crds/chatcluster.yaml -k 1.30.0 FILE...
      every FILE must be rejected, and each `# expect-error: TEXT` line in it
      must match one of the errors, so a file rejected for the wrong reason
      (a typo, say) does not count as a passing negative test.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv
import yaml
from referencing import Registry, Resource

# kubernetes-validate parses its (large) schema files on every call; the script
# validates many objects, so parse each file once.
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)

EXPECT = re.compile(r"^#\s*expect-error:\s*(.+?)\s*$", re.MULTILINE)
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


# --- YAML -------------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys, as the API server's
    strict decoding does (PyYAML would silently keep the last one)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=StrictLoader) if doc is not None]


# --- custom resources ----------------------------------------------------------


@dataclass
class Admission:
    """The fake API server's admission of custom resources: one `crd-admit`
    process for the whole run, an object a line in, its errors a line out."""
    binary: Path | None
    crds: list[Path]
    process: subprocess.Popen | None = None

    def errors(self, obj: dict) -> list[str]:
        if self.process is None:
            args = [arg for crd in self.crds for arg in ("--crd", str(crd))]
            self.process = subprocess.Popen([str(self.binary), *args], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        # default=str: a YAML timestamp is sent as the string the API server would read.
        self.process.stdin.write(json.dumps(obj, default=str) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"{self.binary} stopped without a verdict (its error is above)")
        return json.loads(line)


def object_meta_validator(kube_version: str) -> jsonschema.protocols.Validator:
    definitions = kv.schema_contents(
        f"kubernetes-json-schema/v{kv_schema_version(kube_version)}-local-strict/_definitions.json",
        kube_version)
    registry = Resource.from_contents(definitions) @ Registry()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$ref": f"https://kubernetes.io/api/_definitions.json#/$defs/{OBJECT_META}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def kv_schema_version(kube_version: str) -> str:
    """The newest schema set kubernetes-validate ships that is not newer than kube_version."""
    wanted = kv.major_minor(kube_version.lstrip("v"))
    candidates = [v for v in kv.all_versions() if kv.major_minor(v) <= wanted]
    if not candidates:
        raise SystemExit(f"kubernetes-validate {kv.__version__} has no schemas for Kubernetes {kube_version}")
    return candidates[-1]


def validate_custom_resource(obj: dict, admission: Admission, kube_version: str) -> list[str]:
    """ObjectMeta as Kubernetes defines it, then the CRD's schema and rules as
    the fake API server admits them."""
    errors: list[str] = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        errors.append("metadata.name: Required value")
    else:
        for error in object_meta_validator(kube_version).iter_errors(meta):
            errors.append(f"metadata{''.join('.' + str(p) for p in error.path)}: {error.message}")
        if not DNS1123_SUBDOMAIN.match(str(meta["name"])) or len(meta["name"]) > 253:
            errors.append(f"metadata.name: Invalid value: {meta['name']!r}: must be a DNS-1123 subdomain")
    return errors + admission.errors(obj)


# --- one object, one file --------------------------------------------------------


@dataclass
class Validator:
    custom_kinds: set[tuple[str, str]]
    admission: Admission
    kube_versions: list[str]

    def check_object(self, obj: Any) -> list[str]:
        if not isinstance(obj, dict) or not isinstance(obj.get("apiVersion"), str) or not isinstance(obj.get("kind"), str):
            return ["not a Kubernetes object: apiVersion and kind are required strings"]
        group = obj["apiVersion"].split("/", 1)[0] if "/" in obj["apiVersion"] else ""
        if (group, obj["kind"]) in self.custom_kinds:
            # The CRD's own schema decides; only ObjectMeta comes from Kubernetes.
            return validate_custom_resource(obj, self.admission, self.kube_versions[0])
        errors: list[str] = []
        for kube_version in self.kube_versions:
            errors += [f"[k8s {kube_version}] {e}" for e in self.check_builtin(obj, kube_version)]
        return errors

    @staticmethod
    def check_builtin(obj: dict, kube_version: str) -> list[str]:
        try:
            kv.validate(obj, kube_version, strict=True)
        except kv.ValidationError as error:
            hint = ""
            if isinstance(error.instance, bool) and "string" in str(error.validator_value):
                hint = (" (an unquoted yes/no/on/off is a boolean in YAML 1.1, which is how"
                        " kubectl reads it: the emitter must quote it)")
            return [f"{field_path(list(error.path))}: {error.message}{hint}"]
        except kv.SchemaNotFoundError as error:
            return [f"{error.message} (a typo, a removed API, or a custom resource whose CRD was not given with --crd)"]
        return []

    def check_file(self, path: Path) -> tuple[int, list[str]]:
        try:
            documents = load_documents(path)
        except yaml.YAMLError as error:
            return 0, [f"not valid YAML: {error}"]
        if not documents:
            return 0, ["no Kubernetes object in the file"]
        errors: list[str] = []
        for obj in documents:
            name = f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}" if isinstance(obj, dict) else "?"
            errors += [f"{name}: {e}" for e in self.check_object(obj)]
        return len(documents), errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["validate", "reject"])
    parser.add_argument("--crd", action="append", default=[], type=Path, help="a CRD manifest; repeatable")
    parser.add_argument("--admit", type=Path, help="the crd-admit binary (needed with --crd)")
    parser.add_argument("-k", "--kubernetes-version", action="append", dest="versions",
                        help="Kubernetes version to validate against; repeatable (default 1.30.0)")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()

    if args.crd and args.admit is None:
        parser.error("--crd needs --admit: custom resources are judged by crd-admit")
    custom_kinds = {(doc["spec"]["group"], doc["spec"]["names"]["kind"])
                    for path in args.crd for doc in load_documents(path)
                    if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"}
    validator = Validator(custom_kinds=custom_kinds, admission=Admission(args.admit, args.crd),
                          kube_versions=args.versions or ["1.30.0"])

    failed = objects = 0
    for path in args.files:
        count, errors = validator.check_file(path)
        objects += count
        if args.mode == "validate":
            if errors:
                failed += 1
                print(f"FAIL {path}:", *errors, sep="\n  ")
            continue
        expected = EXPECT.findall(path.read_text())
        missing = [text for text in expected if not any(text in e for e in errors)]
        if not expected:
            failed += 1
            print(f"FAIL {path}: an invalid example needs an '# expect-error: <text>' line naming why it is invalid")
        elif not errors:
            failed += 1
            print(f"FAIL {path}: was ACCEPTED, but it is an invalid example (expected: {'; '.join(expected)})")
        elif missing:
            failed += 1
            print(f"FAIL {path}: rejected, but not for the expected reason {missing}; errors:", *errors, sep="\n  ")

    verdict = "valid" if args.mode == "validate" else "rejected as expected"
    kinds = ", ".join(sorted(f"{k}.{g}" for g, k in custom_kinds)) or "none"
    print(f"{args.mode}: {len(args.files) - failed}/{len(args.files)} files {verdict} "
          f"({objects} objects; Kubernetes {', '.join(validator.kube_versions)}; CRDs: {kinds})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
