# Spanline images: one build, the binaries in a small non-root runtime image.
#   docker build -t spanline .
#   docker run spanline spanline-collector --config /etc/spanline/collector.toml
# The compose file and the Kubernetes manifests mount deploy/collector.toml and
# deploy/ingester.toml, the same files `make up` and the tests use.

FROM rust:1.95-slim-bookworm AS build
# librdkafka is built from source by rdkafka-sys (cmake-free build: make, gcc, perl); gssapi needs
# libsasl2, ssl needs OpenSSL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev libsasl2-dev \
      zlib1g-dev python3 perl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p spanline-collector -p spanline-ingester -p spanline-loadtest -p spanline-devstore \
 && mkdir -p /out \
 && cp target/release/spanline-collector target/release/spanline-ingester \
       target/release/spanline-loadtest target/release/spanline-devstore /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libsasl2-2 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin spanline
COPY --from=build /out/ /usr/local/bin/
COPY deploy/collector.toml deploy/ingester.toml /etc/spanline/
USER 10001:10001
# OTLP gRPC, OTLP HTTP, collector admin, ingester admin.
EXPOSE 4317 4318 14269 14270
ENTRYPOINT []
CMD ["spanline-collector", "--config", "/etc/spanline/collector.toml"]
