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

# The side-by-side peer: the Rotel agent, whose PyPI wheel ships its binary (pinned; a venv of our
# own, so nothing outside .run/ changes). SPANLINE_BENCH_NO_ROTEL=1 skips it.
ROTEL_VERSION=0.0.1a15
venv=.run/bench/rotel-venv
peer=()
if [ -z "${SPANLINE_BENCH_NO_ROTEL:-}" ]; then
  if ! "$venv/bin/python" -c "import importlib.metadata as m; assert m.version('rotel') == '$ROTEL_VERSION'" 2>/dev/null; then
    echo "bench: installing the Rotel agent (PyPI rotel==$ROTEL_VERSION) into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "rotel==$ROTEL_VERSION"
  fi
  agent=$("$venv/bin/python" -c "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))")
  peer=(--rotel "$agent")
fi
exec target/release/spanline-bench "${peer[@]}" "$@"
