//! Collector configuration: parsed once from a TOML file plus `SPANLINE_COLLECTOR__*` environment
//! variables, validated by [`Config::validate`], then trusted. See `deploy/collector.toml`.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    auth::AuthConfig,
    process::{Processors, ProcessorsConfig},
};
use spanline_common::{
    ByteSize,
    admin::AdminConfig,
    config::{ConfigError, Validate},
    kafka::{KafkaClientConfig, KafkaSasl, KafkaTls, Overrides, require_override},
    tls::ServerTls,
};

/// The whole collector configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub receivers: Receivers,
    pub kafka: Kafka,
    pub limits: Limits,
    /// Sampling and redaction, applied before anything reaches Kafka.
    pub processors: ProcessorsConfig,
    /// The admin server. Default `127.0.0.1:14269`.
    pub admin: AdminConfig,
    /// Jaeger remote sampling strategies (`[sampling]`), served on `receivers.sampling_http_listen`,
    /// `receivers.sampling_grpc_listen` and `receivers.jaeger_http_listen` (docs/sampling.md).
    pub sampling: SamplingConfig,
    /// RED metrics for Jaeger's Monitor tab (`[span_metrics]`, docs/collector.md).
    pub span_metrics: SpanMetricsConfig,
}

/// Calls and durations per service, span name, span kind and status code, counted before sampling
/// and exported on the admin server's `/metrics` as `traces_span_metrics_*` ([`crate::span_metrics`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    /// Count them. Default `false`; `deploy/collector.toml` turns it on.
    pub enabled: bool,
    /// Series (service, span name, kind, status) kept; spans of series past it are counted in one
    /// overflow series (`otel_metric_overflow="true"`). Span names come from clients: this bounds
    /// what they can make the collector hold and Prometheus store. Default `5000`.
    pub max_series: usize,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        Self { enabled: false, max_series: 5000 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            receivers: Receivers::default(),
            kafka: Kafka::default(),
            limits: Limits::default(),
            processors: ProcessorsConfig::default(),
            admin: AdminConfig::loopback(14269),
            sampling: SamplingConfig::default(),
            span_metrics: SpanMetricsConfig::default(),
        }
    }
}

/// Where the OTLP receivers listen, and who may use them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Receivers {
    /// OTLP gRPC listen address. Default `127.0.0.1:4317`.
    pub grpc_listen: SocketAddr,
    /// OTLP HTTP listen address. Default `127.0.0.1:4318`.
    pub http_listen: SocketAddr,
    /// Zipkin v2 HTTP listen address (`POST /api/v2/spans`, JSON or protobuf; Zipkin's port is
    /// 9411). Default none: off. TLS and bearer tokens as on the OTLP listeners.
    pub zipkin_listen: Option<SocketAddr>,
    /// Jaeger collector HTTP listen address (`POST /api/traces`, a Thrift binary `Batch`; Jaeger's
    /// port is 14268). Default none: off. TLS and bearer tokens as on the OTLP listeners.
    pub jaeger_http_listen: Option<SocketAddr>,
    /// Jaeger agent UDP address for Thrift compact `emitBatch` (Jaeger's port 6831). At most once:
    /// docs/inputs.md. Default none: off.
    pub jaeger_compact_listen: Option<SocketAddr>,
    /// Jaeger agent UDP address for Thrift binary `emitBatch` (Jaeger's port 6832). Default none.
    pub jaeger_binary_listen: Option<SocketAddr>,
    /// Jaeger remote sampling over HTTP (`GET /sampling?service=`, what the Jaeger agent served on
    /// 5778 and where SDKs ask by default). Default none: off. TLS as on the OTLP listeners; no
    /// bearer token (SDKs send none). Connections here and on `sampling_grpc_listen` have their
    /// own bound (1,024 open at once), apart from `limits.max_connections`. Setting this (or
    /// `sampling_grpc_listen`, or `sampling.strategies_file`) turns remote sampling on, which also
    /// serves the strategies on `jaeger_http_listen` as `GET /api/sampling?service=`.
    pub sampling_http_listen: Option<SocketAddr>,
    /// Jaeger remote sampling over gRPC (`jaeger.api_v2.SamplingManager/GetSamplingStrategy`;
    /// Jaeger v2's port 5779). Default none: off. TLS as on the OTLP listeners; no bearer token.
    pub sampling_grpc_listen: Option<SocketAddr>,
    /// TLS on both OTLP listeners (`[receivers.tls]`); default off (plaintext). The admin listener
    /// never serves TLS: keep it on a network only Prometheus and probes reach (docs/security.md).
    pub tls: ServerTls,
    /// Bearer-token authentication on both OTLP listeners (`[receivers.auth]`); default off.
    pub auth: AuthConfig,
}

impl Default for Receivers {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 4317)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 4318)),
            zipkin_listen: None,
            jaeger_http_listen: None,
            jaeger_compact_listen: None,
            jaeger_binary_listen: None,
            sampling_http_listen: None,
            sampling_grpc_listen: None,
            tls: ServerTls::default(),
            auth: AuthConfig::default(),
        }
    }
}

/// Where the Jaeger remote sampling strategies come from (`[sampling]`, Jaeger's `--sampling.*` flags).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// A strategies file in Jaeger's format (`--sampling.strategies-file`: `default_strategy`,
    /// `service_strategies`, `operation_strategies`), at most 4 MiB. Read at start (an unreadable
    /// or invalid file stops the collector), then again every `reload_interval` and on SIGHUP; a
    /// changed file that is invalid keeps the last good strategies (logged, and counted in
    /// `spanline_collector_reloads_total{what="sampling_strategies",outcome="failed"}`). Default
    /// empty: every service gets probabilistic `default_probability`.
    pub strategies_file: String,
    /// How often the strategies file is read again (`--sampling.strategies-reload-interval`);
    /// it is rebuilt only when its bytes changed. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// The sampling probability (0 to 1) when the file sets no `default_strategy`, or none at all,
    /// and of operations a per-operation strategy does not name under a rate-limiting service
    /// (`--sampling.default-sampling-probability`). Default 0.001.
    pub default_probability: f64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            strategies_file: String::new(),
            reload_interval: spanline_common::reload::DEFAULT_INTERVAL,
            default_probability: crate::sampling::DEFAULT_PROBABILITY,
        }
    }
}

/// The span topic and how records are produced to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kafka {
    /// Bootstrap brokers, comma-separated `host:port`. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// TLS to the brokers (`[kafka.tls]`). Default off.
    pub tls: KafkaTls,
    /// SASL authentication (`[kafka.sasl]`). Default none.
    pub sasl: KafkaSasl,
    /// Extra librdkafka properties, applied last. Settings that weaken delivery (`acks` other than
    /// `all`, `enable.idempotence = false`) and keys `tls`/`sasl` set are refused. Default empty.
    pub librdkafka: Overrides,
    /// Topic spans are published to. Default `otlp_spans`.
    pub topic: String,
    /// Largest record value produced; a trace whose spans exceed it is split into several records.
    /// Must stay below the broker's `message.max.bytes` (1 MB by default). Default `900KiB`.
    pub max_message_bytes: ByteSize,
    /// How long librdkafka may try to deliver a record before the export fails
    /// (`message.timeout.ms`). Default `30s`.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// librdkafka `linger.ms`: how long to wait to fill a produce batch. Default `20ms`: a record is
    /// one trace (a few KiB), so a shorter linger makes batches of a handful of records, each paying
    /// its own compression context and produce request (BENCHMARKS.md: 5 ms cost the collector
    /// about 20 % more CPU per span); the price is up to 20 ms more export latency.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// librdkafka `compression.type`: none, gzip, snappy, lz4 or zstd. Default `zstd`.
    pub compression: String,
    /// librdkafka `partitioner`, which maps the trace-id key to a partition. Default
    /// `consistent_random` (CRC32, librdkafka's default); `murmur2_random` matches Java clients
    /// (and Jaeger v1's collector); `fnv1a_random` matches Sarama's and the OpenTelemetry
    /// Collector's Kafka exporter (FNV-1a of the key). On a topic shared with other producers,
    /// pick theirs, so that a trace's records stay on one partition.
    pub partitioner: String,
}

impl Kafka {
    /// The connection part, shared with the other components' Kafka settings.
    pub fn client(&self) -> KafkaClientConfig {
        KafkaClientConfig {
            brokers: self.brokers.clone(),
            tls: self.tls.clone(),
            sasl: self.sasl.clone(),
            librdkafka: self.librdkafka.clone(),
        }
    }
}

impl Default for Kafka {
    fn default() -> Self {
        Self {
            brokers: KafkaClientConfig::default().brokers,
            tls: KafkaTls::default(),
            sasl: KafkaSasl::default(),
            librdkafka: Overrides::default(),
            topic: "otlp_spans".into(),
            max_message_bytes: ByteSize::kib(900),
            delivery_timeout: Duration::from_secs(30),
            linger: Duration::from_millis(20),
            compression: "zstd".into(),
            partitioner: "consistent_random".into(),
        }
    }
}

/// Request limits and backpressure bounds. docs/collector.md ("Memory") derives the process's
/// worst-case memory from them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, compressed or not, and after decompression. Default `16MiB`.
    pub max_request_bytes: ByteSize,
    /// Memory held by exports in progress, across all requests: request bodies as they arrive, the
    /// decoded requests (estimated from their wire shape before decoding) and the encoded records
    /// until Kafka acknowledges them (also librdkafka's queue bound). A request that needs more
    /// than is free gets UNAVAILABLE / 503 and `Retry-After`; one that needs more than the whole
    /// budget gets RESOURCE_EXHAUSTED / 413. Default `256MiB`.
    pub max_inflight_bytes: ByteSize,
    /// Requests exported at once over both receivers, counted once a request's body has arrived;
    /// beyond it a request is refused with UNAVAILABLE / 503 and `Retry-After`. Default 256.
    pub max_concurrent_requests: usize,
    /// Most spans in one request: RESOURCE_EXHAUSTED / 413 above it, checked before decoding.
    /// Default 200000.
    pub max_spans_per_request: usize,
    /// Most attributes on a span, and on each of its events and links. Default 1024.
    pub max_attributes_per_span: usize,
    /// Most attributes on a resource or an instrumentation scope. Default 1024.
    pub max_attributes_per_resource: usize,
    /// Longest string or bytes attribute value (also inside arrays and maps). Default `256KiB`.
    pub max_attribute_value_bytes: ByteSize,
    /// What happens past an attribute limit: `truncate` (extra attributes are dropped and counted
    /// in `dropped_attributes_count`, long values cut at a character boundary) or `reject` (the
    /// span, or every span of the resource, is rejected through partial success). Default `truncate`.
    pub attribute_limit_action: LimitAction,
    /// Longest a client may take to send a request's headers and whole body; a slower client loses
    /// its connection (HTTP) or gets DEADLINE_EXCEEDED (gRPC). Default `10s`.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Requests one HTTP/2 connection may have open at once (gRPC, and h2c on the HTTP port).
    /// Default 100.
    pub max_concurrent_streams: u32,
    /// Connections open at once over both receivers; past it a new connection is closed at once.
    /// A connection must send its first byte within `read_timeout`. Default 4096.
    pub max_connections: usize,
    /// Longest time one export may take before it fails with UNAVAILABLE / 503. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight exports and the producer flush. Default `20s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// What happens to data past an attribute limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitAction {
    Truncate,
    Reject,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: ByteSize::mib(16),
            max_inflight_bytes: ByteSize::mib(256),
            max_concurrent_requests: 256,
            max_spans_per_request: 200_000,
            max_attributes_per_span: 1024,
            max_attributes_per_resource: 1024,
            max_attribute_value_bytes: ByteSize::kib(256),
            attribute_limit_action: LimitAction::Truncate,
            read_timeout: Duration::from_secs(10),
            max_concurrent_streams: 100,
            max_connections: 4096,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

impl Config {
    /// Loads `file` then `SPANLINE_COLLECTOR__*` variables, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        spanline_common::config::load_validated(file, "SPANLINE_COLLECTOR")
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.kafka.client().validate()?;
        if self.span_metrics.enabled && self.span_metrics.max_series == 0 {
            return Err("span_metrics.max_series must be at least 1".into());
        }
        self.receivers.tls.validate("receivers.tls")?;
        self.receivers.auth.validate()?;
        // The collector answers an export only once Kafka holds every record: an override that lets
        // the broker acknowledge less, or retries duplicate and reorder, breaks that promise.
        let overrides = [("kafka.librdkafka", &self.kafka.librdkafka)];
        require_override(
            &overrides,
            &["acks", "request.required.acks"],
            &["all", "-1"],
            "the collector acknowledges an export only once every replica has it (acks=all)",
        )?;
        require_override(
            &overrides,
            &["enable.idempotence"],
            &["true", "t", "1"],
            "the producer must stay idempotent, or retries could duplicate or reorder records",
        )?;
        if self.kafka.topic.is_empty() {
            return Err("kafka.topic must not be empty".into());
        }
        if self.kafka.max_message_bytes.bytes() < 1024 {
            return Err("kafka.max_message_bytes must be at least 1KiB".into());
        }
        if self.kafka.max_message_bytes.bytes() >= 1_000_000 && !self.kafka.librdkafka.contains_key("message.max.bytes")
        {
            return Err(format!(
                "kafka.max_message_bytes ({}) must stay below the 1MB Kafka default, or set kafka.librdkafka.\"message.max.bytes\" and the broker's limit to match",
                self.kafka.max_message_bytes
            ));
        }
        if self.limits.max_inflight_bytes < self.kafka.max_message_bytes {
            return Err("limits.max_inflight_bytes must be at least kafka.max_message_bytes".into());
        }
        if self.limits.max_inflight_bytes < self.limits.max_request_bytes {
            return Err("limits.max_inflight_bytes must be at least limits.max_request_bytes".into());
        }
        if self.limits.max_concurrent_requests == 0
            || self.limits.max_spans_per_request == 0
            || self.limits.max_concurrent_streams == 0
            || self.limits.max_connections == 0
        {
            return Err(
                "limits.max_concurrent_requests, max_spans_per_request, max_concurrent_streams and max_connections must be at least 1"
                    .into(),
            );
        }
        if self.limits.read_timeout.is_zero() {
            return Err("limits.read_timeout must be positive".into());
        }
        if self.kafka.delivery_timeout.is_zero() || self.limits.request_timeout.is_zero() {
            return Err("kafka.delivery_timeout and limits.request_timeout must be positive".into());
        }
        Processors::new(&self.processors)?;
        // librdkafka's key-hashing partitioners (`random` would scatter a trace's records).
        const PARTITIONERS: [&str; 6] =
            ["consistent", "consistent_random", "murmur2", "murmur2_random", "fnv1a", "fnv1a_random"];
        if !PARTITIONERS.contains(&self.kafka.partitioner.as_str()) {
            return Err(format!(
                "kafka.partitioner must be one of {PARTITIONERS:?} (a hash of the trace-id key), got {:?}",
                self.kafka.partitioner
            ));
        }
        if self.sampling.reload_interval.is_zero() {
            return Err("sampling.reload_interval must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.sampling.default_probability) {
            return Err(format!(
                "sampling.default_probability must be between 0 and 1, got {}",
                self.sampling.default_probability
            ));
        }
        const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
        if !COMPRESSIONS.contains(&self.kafka.compression.as_str()) {
            return Err(format!("kafka.compression must be one of {COMPRESSIONS:?}, got {:?}", self.kafka.compression));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
    }

    #[test]
    fn example_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/collector.toml");
        let config = Config::load(Some(&path)).expect("deploy/collector.toml loads");
        assert_eq!(config.kafka.topic, "otlp_spans");
    }

    /// The secure deployment's file (deploy/secure/collector.toml) is one this collector takes: every
    /// secret a `*_file`, TLS and tokens on the receivers, SASL_SSL to Kafka.
    #[test]
    fn secure_example_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/secure/collector.toml");
        let mut config: Config =
            spanline_common::config::load_with_env(Some(&path), "SPANLINE_COLLECTOR", Some(Default::default()))
                .expect("deploy/secure/collector.toml loads");
        assert!(config.receivers.tls.enabled());
        assert!(!config.receivers.auth.bearer_tokens_file.is_empty());
        assert_eq!(config.kafka.client().security_protocol(), "SASL_SSL");
        assert!(config.kafka.sasl.password.is_empty() && !config.kafka.sasl.password_file.is_empty());
        assert!(
            config.processors.redaction_hash_key.is_empty() && !config.processors.redaction_hash_key_file.is_empty()
        );
        // The key file is read when the configuration is validated; it exists only where deployed.
        config.processors.redaction_hash_key_file.clear();
        config.validate().expect("the secure example validates");
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = Config::default();
        c.kafka.max_message_bytes = ByteSize::mib(2);
        assert!(c.validate().expect_err("too big").contains("max_message_bytes"));
        let mut c = Config::default();
        c.kafka.partitioner = "random".into();
        assert!(c.validate().expect_err("bad").contains("kafka.partitioner"));
        c.kafka.partitioner = "fnv1a_random".into();
        assert!(c.validate().is_ok());
        c.kafka.compression = "brotli".into();
        assert!(c.validate().expect_err("bad").contains("compression"));
    }

    #[test]
    fn overrides_weakening_delivery_are_refused() {
        for (key, value) in [("acks", "1"), ("request.required.acks", "0"), ("enable.idempotence", "false")] {
            let mut c = Config::default();
            c.kafka.librdkafka.insert(key.into(), value.into());
            let e = c.validate().expect_err(key);
            assert!(e.contains(&format!("kafka.librdkafka.\"{key}\"")), "{e}");
        }
        for (key, value) in [("acks", "all"), ("acks", "-1"), ("enable.idempotence", "true")] {
            let mut c = Config::default();
            c.kafka.librdkafka.insert(key.into(), value.into());
            c.validate().expect("keeps the contract");
        }
    }

    #[test]
    fn security_sections_parse_validate_and_never_show_secrets() {
        let dir = tempfile::tempdir().expect("temp");
        let file = dir.path().join("collector.toml");
        std::fs::write(
            &file,
            r#"
[kafka]
brokers = "kafka:9093"
[kafka.tls]
enabled = true
ca_file = "/etc/spanline/kafka-ca.pem"
[kafka.sasl]
mechanism = "SCRAM-SHA-512"
username = "collector"
password = "hunter2-collector"
[kafka.librdkafka]
"ssl.keystore.password" = "hunter3-keystore"
"#,
        )
        .expect("write");
        let c = Config::load(Some(&file)).expect("loads");
        let cfg = crate::produce::client_config(&c).expect("client config");
        assert_eq!(cfg.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(cfg.get("sasl.password"), Some("hunter2-collector"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
        std::fs::write(&file, "[kafka.tls]\nca_file = \"/ca.pem\"\n").expect("write");
        let e = Config::load(Some(&file)).expect_err("files need enabled").to_string();
        assert!(e.contains("kafka.tls.ca_file"), "{e}");
    }
}
