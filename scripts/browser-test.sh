#!/usr/bin/env bash
# The built-in web page in headless Chromium (chat-server/tests/browser).
#
#   scripts/browser-test.sh
#
# Installs Debian's chromium when it is missing (as services.sh installs Redis);
# without it (no apt), the test is skipped with a message. Playwright
# (playwright-core, pinned in package-lock.json) drives /usr/bin/chromium; it
# never downloads a browser. Uses CHAT_TEST_REDIS_URL and CHAT_TEST_DATABASE_URL
# when set (scripts/test.sh sets them), else starts throwaway services itself.
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ] && command -v apt-get >/dev/null; then
  echo "browser-test: installing chromium" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q chromium >/dev/null 2>&1 ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; }
fi
if [ ! -x "$chromium" ]; then
  echo "browser-test: SKIPPED, no Chromium at $chromium" >&2
  exit 0
fi

if [ -z "${CHAT_TEST_REDIS_URL:-}" ] || [ -z "${CHAT_TEST_DATABASE_URL:-}" ]; then
  work=$(mktemp -d /tmp/chatback-browser.XXXXXX)
  trap 'scripts/services.sh stop "$work" || true; rm -rf "$work"' EXIT
  scripts/services.sh start "$work" >/dev/null
  # shellcheck disable=SC1091
  source "$work/env"
fi

# --workspace keeps the feature set of the workspace build (no rebuild after it).
cargo build --workspace --locked --bin chat-server --quiet
export CHAT_SERVER_BIN=$PWD/target/debug/chat-server CHROMIUM=$chromium

cd chat-server/tests/browser
npm ci --no-audit --no-fund --loglevel=error >/dev/null
node --test page.test.mjs
