#!/usr/bin/env bash
# `make up`: the whole pipeline on this machine, in the foreground, until Ctrl-C.
#
#   COLLECTORS=N     collectors to run (default 1); collector i listens on OTLP gRPC 4317+2i,
#                    OTLP HTTP 4318+2i, admin 14269+10i
#   INGESTERS=N      ingesters in group spanline-ingester (default 1); ingester j: admin 14270+10j
#   PARTITIONS=N     partitions of the span topic when this script creates it (default 6)
#   KAFKA_BROKERS    use this Kafka instead of starting Tansu on 127.0.0.1:9092
#                    (the topics otlp_spans and otlp_spans_dlq must exist there)
#   OPENSEARCH_URL   use this OpenSearch instead of starting the dev store on 127.0.0.1:9200
#   RUN_DIR          where logs and broker data go (default .run)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

COLLECTORS=${COLLECTORS:-1}
INGESTERS=${INGESTERS:-1}
PARTITIONS=${PARTITIONS:-6}
RUN_DIR=${RUN_DIR:-.run}
mkdir -p "$RUN_DIR/logs"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
LOGS=$RUN_DIR/logs
BIN=target/release

echo "building release binaries..." >&2
cargo build --release --quiet --bin spanline-collector --bin spanline-ingester --bin spanline-devstore --bin spanline-loadtest

pids=()
started_broker=0
cleanup() {
  trap - INT TERM EXIT
  printf '\nstopping...\n' >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$started_broker" = 1 ]; then scripts/broker.sh stop "$RUN_DIR/broker"; fi
  echo "stopped; logs in $LOGS" >&2
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

if [ -z "${KAFKA_BROKERS:-}" ]; then
  scripts/broker.sh start "$RUN_DIR/broker" 9092 "otlp_spans:$PARTITIONS" "otlp_spans_dlq:$PARTITIONS"
  started_broker=1
  KAFKA_BROKERS=127.0.0.1:9092
  broker_desc="tansu (sqlite, $RUN_DIR/broker)"
else
  broker_desc="external"
fi

if [ -z "${OPENSEARCH_URL:-}" ]; then
  DEVSTORE_LISTEN=127.0.0.1:9200 "$BIN/spanline-devstore" >"$LOGS/devstore.log" 2>&1 &
  pids+=($!)
  OPENSEARCH_URL=http://127.0.0.1:9200
  store_desc="spanline-devstore (in memory)"
  for _ in $(seq 1 50); do curl -fsS "$OPENSEARCH_URL" >/dev/null 2>&1 && break; sleep 0.1; done
else
  store_desc="external"
fi

collector_admins=()
ingester_admins=()
rows=()
for i in $(seq 0 $((COLLECTORS - 1))); do
  grpc=$((4317 + 2 * i)); http=$((4318 + 2 * i)); admin=$((14269 + 10 * i))
  SPANLINE_COLLECTOR__KAFKA__BROKERS=$KAFKA_BROKERS \
  SPANLINE_COLLECTOR__RECEIVERS__GRPC_LISTEN=127.0.0.1:$grpc \
  SPANLINE_COLLECTOR__RECEIVERS__HTTP_LISTEN=127.0.0.1:$http \
  SPANLINE_COLLECTOR__ADMIN__LISTEN=127.0.0.1:$admin \
    "$BIN/spanline-collector" --config deploy/collector.toml >"$LOGS/collector-$i.log" 2>&1 &
  pids+=($!)
  collector_admins+=("127.0.0.1:$admin")
  rows+=("collector $i|OTLP gRPC 127.0.0.1:$grpc, OTLP HTTP http://127.0.0.1:$http/v1/traces, admin http://127.0.0.1:$admin/metrics")
done
for j in $(seq 0 $((INGESTERS - 1))); do
  admin=$((14270 + 10 * j))
  SPANLINE_INGESTER__KAFKA__BROKERS=$KAFKA_BROKERS \
  SPANLINE_INGESTER__OPENSEARCH__URL=$OPENSEARCH_URL \
  SPANLINE_INGESTER__ADMIN__LISTEN=127.0.0.1:$admin \
    "$BIN/spanline-ingester" --config deploy/ingester.toml >"$LOGS/ingester-$j.log" 2>&1 &
  pids+=($!)
  ingester_admins+=("127.0.0.1:$admin")
  rows+=("ingester $j|group spanline-ingester, admin http://127.0.0.1:$admin/metrics")
done

echo
echo "Spanline is up:"
printf '  %-12s %s\n' "kafka" "$KAFKA_BROKERS  [$broker_desc], topic otlp_spans"
printf '  %-12s %s\n' "opensearch" "$OPENSEARCH_URL  [$store_desc], indices jaeger-span-*, jaeger-service-*"
for row in "${rows[@]}"; do printf '  %-12s %s\n' "${row%%|*}" "${row#*|}"; done
echo "  logs         $LOGS"
echo "Send spans with any OTLP exporter (OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317), or:"
echo "  $BIN/spanline-loadtest --traces 1000"
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

while true; do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      printf '\na component exited; see %s\n' "$LOGS" >&2
      exit 1
    fi
  done
  received=$(sum_metric "${collector_admins[*]}" spanline_collector_spans_total)
  produced=$(sum_metric "${collector_admins[*]}" spanline_collector_spans_total 'outcome="accepted"')
  indexed=$(sum_metric "${ingester_admins[*]}" spanline_ingester_documents_indexed_total 'kind="span"')
  lag=$(sum_metric "${ingester_admins[*]}" spanline_ingester_consumer_lag_records)
  printf '\r  spans received %-10s produced %-10s indexed %-10s consumer lag %-8s' "$received" "$produced" "$indexed" "$lag"
  sleep 2
done
