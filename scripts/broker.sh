#!/usr/bin/env bash
# The project's Kafka-API broker for `make up` and tests: Tansu 0.6.0 with SQLite storage on loopback.
#
#   scripts/broker.sh install                      install tansu when missing (about 10-20 minutes)
#   scripts/broker.sh start DIR PORT [TOPIC:N...]  start on 127.0.0.1:PORT with data in DIR, wait until
#                                                  it answers, create each TOPIC with N partitions
#   scripts/broker.sh stop DIR                     stop the broker started in DIR
#
# Never Tansu's memory:// engine: it skips records after a seek or a rebalance (REFERENCE.md §7).
set -euo pipefail

TANSU_VERSION=0.6.0
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

tansu_ok() {
  command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"
}

install() {
  if tansu_ok; then
    return 0
  fi
  echo "broker: installing tansu $TANSU_VERSION (cargo install, takes a while)..." >&2
  cargo install tansu --locked --version "$TANSU_VERSION" --features dynostore,libsql
}

# Whether the pid recorded in DIR/tansu.pid is a tansu broker serving DIR (a recorded pid may have
# been reused by another process since, after a reboot for instance).
running_pid() {
  local dir=$1 pid
  pid=$(cat "$dir/tansu.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  grep -q tansu "/proc/$pid/cmdline" 2>/dev/null || return 1
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$dir" ] || return 1
  echo "$pid"
}

start() {
  local dir=$1 port=$2
  shift 2
  install
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  if running_pid "$dir" >/dev/null; then
    echo "broker: already running (pid $(running_pid "$dir"))" >&2
  else
    local url="tcp://127.0.0.1:$port"
    # Its own session: a terminal's Ctrl-C reaches the whole foreground process group, and the
    # broker must outlive the components that drain into it; `stop` ends it, last.
    (cd "$dir" && exec setsid tansu broker --listener-url "$url" --advertised-listener-url "$url" \
      --storage-engine sqlite://spanline.db >>"$dir/tansu.log" 2>&1 </dev/null) &
    echo $! >"$dir/tansu.pid"
  fi
  local tries=0
  until tansu topic list --broker "tcp://127.0.0.1:$port" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ $tries -gt 100 ]; then
      echo "broker: no answer on 127.0.0.1:$port; see $dir/tansu.log" >&2
      return 1
    fi
    sleep 0.2
  done
  local existing
  existing=$(tansu topic list --broker "tcp://127.0.0.1:$port" 2>/dev/null || true)
  for spec in "$@"; do
    local topic=${spec%%:*} partitions=${spec##*:}
    if grep -q "\"name\":\"$topic\"" <<<"$existing"; then
      echo "broker: topic $topic exists" >&2
    else
      tansu topic create "$topic" --partitions "$partitions" --broker "tcp://127.0.0.1:$port" >/dev/null
      echo "broker: created topic $topic with $partitions partitions" >&2
    fi
  done
}

stop() {
  local dir pid
  dir=$(cd "$1" 2>/dev/null && pwd -P) || return 0
  if pid=$(running_pid "$dir"); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$dir/tansu.pid"
}

case "${1:-}" in
  install) install ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
