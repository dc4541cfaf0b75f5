#!/usr/bin/env bash
# The monitoring path with a real Prometheus (called by scripts/test.sh):
# installs Debian's `prometheus` package (prometheus and promtool) when
# missing, the way scripts/services.sh installs Redis, then runs
# operator/tests/monitoring with CHAT_MONITORING=1: promtool check/test on
# k8s/monitoring's rules, a real Prometheus scraping two chat-servers and the
# operator, connections per pod read back through the recording rules and the
# prometheus-adapter rule, and the check that the Grafana dashboard, the rules
# and the adapter rule read only metrics that exist.
#
# Run after the workspace tests (or `cargo build -p chat-server`): the test
# starts the workspace's own target/debug/chat-server.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  echo "monitoring: installing prometheus" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 ||
    { $sudo apt-get update -q >/dev/null &&
      $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
fi
prometheus --version 2>&1 | head -1

# --workspace keeps the feature set of the workspace build (see scripts/test.sh).
CHAT_MONITORING=1 timeout 900 cargo test --workspace --locked --test monitoring -- --nocapture
