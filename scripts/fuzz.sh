#!/usr/bin/env bash
# Bounded libFuzzer run of chat-server's frame target (chat-server/fuzz).
#
#   scripts/fuzz.sh [SECONDS]    # default 60; longer by hand, e.g. 3600
#
# Needs the nightly toolchain (rustup) and cargo-fuzz, which it installs from
# crates.io when missing. Prints libFuzzer's final stats (execs, coverage); a
# crash fails the run and leaves the input under chat-server/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../chat-server/fuzz"
secs=${1:-60}

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly); skipped"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo +nightly install cargo-fuzz --locked --quiet
fi
mkdir -p corpus/frames
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# No sanitizer: the code is safe Rust; panics abort and count as crashes.
cargo +nightly fuzz run frames --sanitizer none corpus/frames seeds -- \
  -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1 || status=$?
grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|thread .* panicked|SUMMARY|error)' "$log" || true
if [ "$status" -ne 0 ]; then
  tail -n 40 "$log"
  echo "fuzz: FAILED (status $status); the crashing input is under chat-server/fuzz/artifacts/"
fi
exit "$status"
