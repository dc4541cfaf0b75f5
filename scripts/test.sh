#!/usr/bin/env bash
# The project's one test command (README, .ci/run).
#
# Starts throwaway Redis and PostgreSQL on free loopback ports (installing the
# Debian packages if missing), then runs fmt, clippy -D warnings and every test
# against them (the web page's in headless Chromium, installed the same way),
# and stops them again, whatever happens. The fault-injection
# suite (CHAT_FAULTS=1) starts Redis and PostgreSQL processes of its own, from
# the same packages, so that it can kill them.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d /tmp/chatback-test.XXXXXX)
cleanup() {
  scripts/services.sh stop "$work" || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }

step "services"
scripts/services.sh start "$work" >/dev/null
# shellcheck disable=SC1091
source "$work/env"
echo "redis:    $CHAT_TEST_REDIS_URL"
echo "postgres: $CHAT_TEST_DATABASE_URL"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

# After the workspace tests, so target/debug/chat-server is already built.
step "browser: the web page in headless Chromium (scripts/browser-test.sh)"
scripts/browser-test.sh

step "fuzz: frames (${CHAT_FUZZ_SECS:-60} s; CHAT_FUZZ_SECS=0 skips)"
if [ "${CHAT_FUZZ_SECS:-60}" -gt 0 ]; then
  scripts/fuzz.sh "${CHAT_FUZZ_SECS:-60}"
fi

# After the workspace tests, so target/debug/chat-server is fresh; --workspace
# keeps their feature set (with -p the dependencies would be rebuilt), and
# --nocapture puts every scenario's figures (the storm's included) in the log.
step "fault-injection suite (loadtest/tests/faults.rs, CHAT_FAULTS=1)"
CHAT_FAULTS=1 cargo test --workspace --locked --test faults -- --nocapture

# Also after the workspace tests, for the same target/debug/chat-server.
step "monitoring: a real Prometheus, promtool, the dashboard's metrics"
scripts/monitoring.sh

step "kubernetes manifests, CRD, Dockerfiles"
scripts/lint-k8s.sh

echo
echo "all checks passed"
