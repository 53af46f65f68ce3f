#!/usr/bin/env bash
# `make up`: the whole pipeline on this machine, in the foreground, until Ctrl-C.
#
#   COLLECTORS=N      collectors to run (default 1); collector i listens on OTLP gRPC GRPC_PORT+2i,
#                     OTLP HTTP HTTP_PORT+2i, admin ADMIN_PORT+10i
#   INGESTERS=N       ingesters in group spanline-ingester (default 1), static members
#                     spanline-ingester-J; ingester j: admin ADMIN_PORT+1+10j
#   PARTITIONS=N      partitions of the span topic when this script creates it (default 6)
#   KAFKA_BROKERS     use this Kafka instead of starting Tansu on 127.0.0.1:BROKER_PORT
#                     (the topics otlp_spans and otlp_spans_dlq must exist there)
#   OPENSEARCH_URL    use this OpenSearch instead of starting the dev store on 127.0.0.1:STORE_PORT
#   RUN_DIR           where logs, process ids and broker data go (default .run)
#   BROKER_PORT, STORE_PORT, GRPC_PORT, HTTP_PORT, ADMIN_PORT
#                     defaults 9092, 9200, 4317, 4318, 14269
#   SHUTDOWN_GRACE    seconds each collector and ingester may take to drain on stop (default 20)
#   SPANLINE_BIN      run the binaries in this directory instead of building target/release
#
# Ctrl-C (or SIGTERM) stops the stack in order: collectors first (no new spans; in-flight exports
# answered), then the ingesters (final flush, bulk, commit), then the dev store, the broker last.
# Every component runs in its own session, so the terminal's SIGINT reaches only this script,
# which stops them in that order, each bounded by its grace.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

COLLECTORS=${COLLECTORS:-1}
INGESTERS=${INGESTERS:-1}
PARTITIONS=${PARTITIONS:-6}
BROKER_PORT=${BROKER_PORT:-9092}
STORE_PORT=${STORE_PORT:-9200}
GRPC_PORT=${GRPC_PORT:-4317}
HTTP_PORT=${HTTP_PORT:-4318}
ADMIN_PORT=${ADMIN_PORT:-14269}
SHUTDOWN_GRACE=${SHUTDOWN_GRACE:-20}
for var in COLLECTORS INGESTERS PARTITIONS BROKER_PORT STORE_PORT GRPC_PORT HTTP_PORT ADMIN_PORT SHUTDOWN_GRACE; do
  if ! [[ ${!var} =~ ^[0-9]+$ ]]; then
    echo "make up: $var must be a whole number (seconds for SHUTDOWN_GRACE), not '${!var}'" >&2
    exit 2
  fi
done
RUN_DIR=${RUN_DIR:-.run}
mkdir -p "$RUN_DIR/logs"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
LOGS=$RUN_DIR/logs
PIDS=$RUN_DIR/pids

if [ -n "${SPANLINE_BIN:-}" ]; then
  BIN=$SPANLINE_BIN
else
  BIN=target/release
  echo "building release binaries..." >&2
  cargo build --release --locked --quiet --bin spanline-collector --bin spanline-ingester --bin spanline-devstore \
    --bin spanline-loadtest
fi

# Waits up to $2 seconds for process $1 to end; 1 if it is still there.
wait_gone() {
  local pid=$1 tenths=$(($2 * 10))
  while kill -0 "$pid" 2>/dev/null; do
    [ "$tenths" -gt 0 ] || return 1
    sleep 0.1
    tenths=$((tenths - 1))
  done
}

# Stops process $1 (named $2): SIGTERM, up to $3 seconds, then SIGKILL.
stop_one() {
  local pid=$1 name=$2 grace=$3
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" "$grace"; then
    say '  %s (pid %s) still running after %ss: killed\n' "$name" "$pid" "$grace"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# Whether pid $1 is one of this project's processes (a recorded pid may have been reused since).
ours() {
  kill -0 "$1" 2>/dev/null && grep -q spanline "/proc/$1/cmdline" 2>/dev/null
}

# Messages from the cleanup must never stop it: after a closed terminal (HUP) or a dead `| tee`, a
# write to stderr fails, and with `set -e` the script would exit with the stack still running.
exec 3>&2
say() {
  { printf "$@" >&3; } 2>/dev/null || true
}

# The recorded pids (`.run/pids`, one "name pid" line per component) whose name starts with $1 and
# that are still ours. The file is the one record of what runs: the cleanup, the liveness check
# and the next run all read it.
pids_of() {
  [ -f "$PIDS" ] || return 0
  local name pid
  while read -r name pid; do
    if [[ $name == "$1"* ]] && ours "$pid"; then echo "$pid"; fi
  done <"$PIDS"
}

# A previous run that was killed before its cleanup leaves its processes behind, holding the ports.
for pid in $(pids_of ""); do
  say 'stopping pid %s left from an earlier run\n' "$pid"
  stop_one "$pid" "leftover" "$SHUTDOWN_GRACE"
done
rm -f "$PIDS"

started_broker=0

cleanup() {
  set +e
  trap '' INT TERM HUP PIPE
  trap - EXIT
  local started=$SECONDS
  say '\nstopping: collectors, then ingesters (final flush and commit), then the store, then the broker\n'
  # One group at a time, members of a group in parallel.
  local group pid stoppers
  for group in collector ingester devstore; do
    stoppers=()
    for pid in $(pids_of "$group"); do
      stop_one "$pid" "$group" $((SHUTDOWN_GRACE + 5)) &
      stoppers+=($!)
    done
    for pid in "${stoppers[@]}"; do wait "$pid" 2>/dev/null || true; done
  done
  # Reap the components themselves (children of this script).
  if [ -f "$PIDS" ]; then
    for pid in $(cut -d' ' -f2 "$PIDS"); do wait "$pid" 2>/dev/null; done
  fi
  if [ "$started_broker" = 1 ]; then scripts/broker.sh stop "$RUN_DIR/broker" 2>/dev/null; fi
  rm -f "$PIDS"
  say 'stopped in %ss; logs in %s\n' "$((SECONDS - started))" "$LOGS"
}
trap 'cleanup; exit 0' INT TERM HUP
trap cleanup EXIT

# Starts "$@" in its own session (out of reach of the terminal's Ctrl-C), output to log $2... and
# records its pid under name $1.
spawn() {
  local name=$1 log=$2
  shift 2
  setsid "$@" >"$log" 2>&1 </dev/null &
  echo "$name $!" >>"$PIDS"
}

KAFKA_BROKERS_GIVEN=${KAFKA_BROKERS:-}
if [ -z "${KAFKA_BROKERS:-}" ]; then
  # Set first: a Ctrl-C while broker.sh waits for the broker must still stop it.
  started_broker=1
  scripts/broker.sh start "$RUN_DIR/broker" "$BROKER_PORT" "otlp_spans:$PARTITIONS" "otlp_spans_dlq:$PARTITIONS"
  KAFKA_BROKERS=127.0.0.1:$BROKER_PORT
  broker_desc="tansu (sqlite, $RUN_DIR/broker)"
else
  broker_desc="external"
fi

if [ -z "${OPENSEARCH_URL:-}" ]; then
  spawn devstore "$LOGS/devstore.log" env DEVSTORE_LISTEN=127.0.0.1:$STORE_PORT "$BIN/spanline-devstore"
  OPENSEARCH_URL=http://127.0.0.1:$STORE_PORT
  store_desc="spanline-devstore (in memory)"
  for _ in $(seq 1 50); do curl -fsS "$OPENSEARCH_URL" >/dev/null 2>&1 && break; sleep 0.1; done
else
  store_desc="external"
fi

# Static members keep their partitions across runs: with fewer ingesters than last time, the
# missing members' partitions stay theirs (Tansu 0.6.0 never hands them over), unread.
if [ -z "${KAFKA_BROKERS_GIVEN:-}" ] && [ -f "$RUN_DIR/ingesters" ] && [ "$(cat "$RUN_DIR/ingesters")" -gt "$INGESTERS" ]; then
  say 'warning: the last run had %s ingesters and this one %s: the partitions of static members spanline-ingester-%s.. stay unread; run with INGESTERS=%s, or remove %s for a new broker\n' \
    "$(cat "$RUN_DIR/ingesters")" "$INGESTERS" "$INGESTERS" "$(cat "$RUN_DIR/ingesters")" "$RUN_DIR/broker"
else
  echo "$INGESTERS" >"$RUN_DIR/ingesters"
fi

collector_admins=()
ingester_admins=()
rows=()
for i in $(seq 0 $((COLLECTORS - 1))); do
  grpc=$((GRPC_PORT + 2 * i)); http=$((HTTP_PORT + 2 * i)); admin=$((ADMIN_PORT + 10 * i))
  # Zipkin, Jaeger and Jaeger remote sampling on their usual ports (deploy/collector.toml) for
  # collector 0; the others take free ports (their startup log line says which).
  others=()
  if [ "$i" -gt 0 ]; then
    for key in ZIPKIN JAEGER_HTTP JAEGER_COMPACT JAEGER_BINARY SAMPLING_HTTP SAMPLING_GRPC; do
      others+=("SPANLINE_COLLECTOR__RECEIVERS__${key}_LISTEN=127.0.0.1:0")
    done
  fi
  spawn "collector-$i" "$LOGS/collector-$i.log" env "${others[@]}" \
    SPANLINE_COLLECTOR__KAFKA__BROKERS="$KAFKA_BROKERS" \
    SPANLINE_COLLECTOR__RECEIVERS__GRPC_LISTEN=127.0.0.1:$grpc \
    SPANLINE_COLLECTOR__RECEIVERS__HTTP_LISTEN=127.0.0.1:$http \
    SPANLINE_COLLECTOR__ADMIN__LISTEN=127.0.0.1:$admin \
    SPANLINE_COLLECTOR__LIMITS__SHUTDOWN_GRACE="${SHUTDOWN_GRACE}s" \
    "$BIN/spanline-collector" --config deploy/collector.toml
  collector_admins+=("127.0.0.1:$admin")
  rows+=("collector $i|OTLP gRPC 127.0.0.1:$grpc, OTLP HTTP http://127.0.0.1:$http/v1/traces, admin http://127.0.0.1:$admin/metrics")
  if [ "$i" -eq 0 ]; then
    rows+=("collector 0|Zipkin http://127.0.0.1:9411/api/v2/spans, Jaeger http://127.0.0.1:14268/api/traces, Jaeger agent udp 127.0.0.1:6831 (compact) and :6832 (binary)")
    rows+=("collector 0|Jaeger remote sampling http://127.0.0.1:5778/sampling?service=NAME, gRPC 127.0.0.1:5779, deploy/sampling-strategies.json")
  fi
done
for j in $(seq 0 $((INGESTERS - 1))); do
  admin=$((ADMIN_PORT + 1 + 10 * j))
  # Static membership: a restarted stack's ingester j takes back ingester j's partitions, even when
  # the last run ended without leaving the group (Tansu 0.6.0 never gives a vanished dynamic
  # member's partitions to a newcomer).
  spawn "ingester-$j" "$LOGS/ingester-$j.log" env \
    SPANLINE_INGESTER__KAFKA__BROKERS="$KAFKA_BROKERS" \
    SPANLINE_INGESTER__KAFKA__GROUP_INSTANCE_ID="spanline-ingester-$j" \
    SPANLINE_INGESTER__OPENSEARCH__URL="$OPENSEARCH_URL" \
    SPANLINE_INGESTER__ADMIN__LISTEN=127.0.0.1:$admin \
    SPANLINE_INGESTER__SHUTDOWN_GRACE="${SHUTDOWN_GRACE}s" \
    "$BIN/spanline-ingester" --config deploy/ingester.toml
  ingester_admins+=("127.0.0.1:$admin")
  rows+=("ingester $j|group spanline-ingester (member spanline-ingester-$j), admin http://127.0.0.1:$admin/metrics")
done

echo
echo "Spanline is up:"
printf '  %-12s %s\n' "kafka" "$KAFKA_BROKERS  [$broker_desc], topic otlp_spans"
printf '  %-12s %s\n' "opensearch" "$OPENSEARCH_URL  [$store_desc], indices jaeger-span-*, jaeger-service-*, jaeger-dependencies-* (one document per partition and window, docs/dependencies.md)"
for row in "${rows[@]}"; do printf '  %-12s %s\n' "${row%%|*}" "${row#*|}"; done
echo "  logs         $LOGS"
echo "Send spans with any OTLP exporter (OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$GRPC_PORT), or:"
echo "  $BIN/spanline-loadtest --endpoint http://127.0.0.1:$GRPC_PORT --traces 1000"
echo "Ctrl-C stops everything."
echo

# Sums the samples of metric $2 (with optional label filter $3) over the admin endpoints in $1.
sum_metric() {
  local total=0 v
  for addr in $1; do
    v=$(curl -fsS --max-time 1 "http://$addr/metrics" 2>/dev/null | awk -v m="$2" -v f="${3:-}" '
      index($0, m) == 1 && (f == "" || index($0, f) > 0) { s += $NF } END { printf "%d", s }') || v=0
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

broker_pid() {
  cat "$RUN_DIR/broker/tansu.pid" 2>/dev/null || true
}

while true; do
  for pid in $(cut -d' ' -f2 "$PIDS") $([ "$started_broker" = 1 ] && broker_pid); do
    if ! kill -0 "$pid" 2>/dev/null; then
      printf '\na component (pid %s) exited; see %s\n' "$pid" "$LOGS" >&2
      exit 1
    fi
  done
  received=$(sum_metric "${collector_admins[*]}" spanline_collector_spans_total)
  produced=$(sum_metric "${collector_admins[*]}" spanline_collector_spans_total 'outcome="accepted"')
  indexed=$(sum_metric "${ingester_admins[*]}" spanline_ingester_documents_indexed_total 'kind="span"')
  lag=$(sum_metric "${ingester_admins[*]}" spanline_ingester_consumer_lag_records)
  owned=$(sum_metric "${ingester_admins[*]}" spanline_ingester_assigned_partitions)
  warning=""
  stalled=$(sum_metric "${ingester_admins[0]}" spanline_ingester_stalled_partitions)
  if [ "$stalled" -gt 0 ]; then
    warning="  ! $stalled partition(s) lag without moving: held by no live ingester? (see docs/development.md)"
  fi
  printf '\r  spans received %-10s produced %-10s indexed %-10s consumer lag %-8s partitions owned %-4s%s' \
    "$received" "$produced" "$indexed" "$lag" "$owned" "$warning"
  sleep 2
done
