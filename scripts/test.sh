#!/usr/bin/env bash
# Runs every Rust test of the workspace and closes with one line summing all test binaries:
# "tests: N passed, N failed" (cargo prints one "test result" line per binary, many with 0 tests).
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The memory tests measure the release binaries users run (spanline_testkit::process::release_bin).
cargo build --release --locked --bins -p spanline-collector -p spanline-ingester || exit 1
# The group-failure tests start librdkafka's mock cluster from this binary (spanline_testkit::MockKafka);
# cargo builds another package's binaries only when asked.
cargo build --locked -p spanline-testkit --bin mock-kafka || exit 1
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$log")
echo
echo "tests: $passed passed, $failed failed"
if [ "$status" -eq 0 ] && [ "$passed" -eq 0 ]; then
  echo "no test ran" >&2
  exit 1
fi
exit "$status"
