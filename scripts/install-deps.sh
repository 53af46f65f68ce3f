#!/usr/bin/env bash
# Installs what building and testing Spanline needs on a fresh machine; fast when all is present.
# With --run-only, only what `make up` needs (the Debian packages and the broker).
#   - Debian: libsasl2-dev (rdkafka's GSSAPI support), pkg-config, libssl-dev, curl
#   - tansu 0.6.0, the test broker (scripts/broker.sh install)
#   - cargo-deny, for the offline license/ban/source checks, and every crate Cargo.lock names (for all
#     target platforms: cargo-deny reads them all)
#   - Python's opentelemetry-proto, the independent decoder the collector tests use
#   - Node.js + npm and deploy/check's pinned packages (schemas for the offline deployment check)
set -euo pipefail
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cd "$(dirname "$0")/.."

run_only=0
[ "${1:-}" = "--run-only" ] && run_only=1

missing=()
for pkg in libsasl2-dev pkg-config libssl-dev curl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "$run_only" = 0 ]; then
  python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
  python3 -c "import ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: apt-get install ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

scripts/broker.sh install

# `make up` needs only what builds and runs the pipeline (above); `make test` needs the rest too.
if [ "$run_only" = 1 ]; then
  exit 0
fi

# An independent OTLP implementation, to check the collector's records decode elsewhere.
if ! python3 -c "import opentelemetry.proto.collector.trace.v1.trace_service_pb2" >/dev/null 2>&1; then
  echo "deps: pip install opentelemetry-proto" >&2
  # Debian's own python3 refuses user installs (PEP 668); the tests only need the package importable.
  python3 -m pip install --quiet --disable-pip-version-check "opentelemetry-proto==1.45.2" ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "opentelemetry-proto==1.45.2"
fi

# Real Zipkin and Jaeger client libraries (ingester/tests/clients_pipeline.rs), pinned, in their own
# venv: the Jaeger Thrift exporter's last release (1.21.0) needs the SDK of its time; Jaeger's own
# OpenTracing client (jaeger-client 4.8.0, its last) with what it imports (its generated Thrift code
# still imports six, which thrift no longer brings).
clients=.run/clients-venv
client_pins=("opentelemetry-api==1.21.0" "opentelemetry-sdk==1.21.0" "opentelemetry-exporter-zipkin-json==1.21.0"
  "opentelemetry-exporter-zipkin-proto-http==1.21.0" "opentelemetry-exporter-jaeger-thrift==1.21.0" "Deprecated==1.2.14"
  "jaeger-client==4.8.0" "opentracing==2.4.0" "threadloop==1.0.2" "thrift==0.25.0" "tornado==6.6.1" "six==1.17.0")
if ! "$clients/bin/python" -c "import opentelemetry.exporter.jaeger.thrift, opentelemetry.exporter.zipkin.json, opentelemetry.exporter.zipkin.proto.http, jaeger_client" >/dev/null 2>&1; then
  echo "deps: Zipkin and Jaeger client libraries into $clients" >&2
  rm -rf "$clients"
  python3 -m venv "$clients"
  "$clients/bin/pip" install --quiet --disable-pip-version-check "${client_pins[@]}"
fi

# The deployment check's schemas and parsers, exactly as package-lock.json pins them.
if [ ! -d deploy/check/node_modules ] || [ deploy/check/package-lock.json -nt deploy/check/node_modules ]; then
  echo "deps: npm ci (deploy/check)" >&2
  npm ci --prefix deploy/check --no-audit --no-fund --loglevel=error
fi

# Every crate of Cargo.lock, for every target platform: `cargo deny --offline` reads the metadata of
# crates the host build never downloads (android_system_properties, valuable, ...). Fast when they
# are all in the cargo home already.
echo "deps: cargo fetch --locked" >&2
cargo fetch --locked --quiet

if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "deps: installing cargo-deny" >&2
  cargo install cargo-deny --locked --version 0.20.2
fi
