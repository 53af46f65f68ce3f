#!/usr/bin/env bash
# make bench: release builds, then spanline-bench runs each stage alone and the whole pipeline on
# this machine against Tansu and the dev store, writing bench/results.json. Extra arguments go to
# spanline-bench (see `target/release/spanline-bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
scripts/broker.sh install
cargo build --release --locked --quiet \
  --bin spanline-collector --bin spanline-ingester --bin spanline-devstore --bin spanline-bench
exec target/release/spanline-bench "$@"
