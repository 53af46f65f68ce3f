//! The collector's Prometheus metrics, all named `spanline_collector_*`. Labels hold only values the
//! collector chooses (protocol, outcome, reason), never client-controlled strings.

use spanline_common::reload::ReloadMetrics;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub protocol: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanLabels {
    /// `accepted`, `rejected` or `sampled_out`.
    pub outcome: &'static str,
    /// Why a span was rejected; `none` for accepted spans.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `grpc` or `http`.
    pub protocol: &'static str,
    /// `ok`, `failed` (refused: no TLS, an untrusted or invalid certificate, no client certificate
    /// under mTLS) or `timeout`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `dropped` (past a count limit) or `truncated` (past the length limit).
    pub action: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    /// Why a request went to the decode path: `json`, `redaction`, `attribute_limit` or `encoding`
    /// ([`crate::split::Fallback`]).
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatagramLabels {
    /// `jaeger_compact` (6831) or `jaeger_binary` (6832).
    pub port: &'static str,
    /// `exported` (Kafka holds its spans), or why it was dropped: `queue_full`, `over_budget`,
    /// `malformed` (not an `emitBatch` the translation reads, or every span refused), `failed` (the
    /// export failed: Kafka, the budget or the slots), `kernel_dropped` (the kernel dropped it
    /// before the collector read it: the socket's receive buffer was full).
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SamplingLabels {
    /// `sampling_http` (`GET /sampling`), `jaeger_http` (`GET /api/sampling`) or `grpc`
    /// (`SamplingManager/GetSamplingStrategy`).
    pub endpoint: &'static str,
    /// `service` (the service's own strategy), `default` (the default strategy) or `bad_request`
    /// (no service named).
    pub outcome: &'static str,
}

/// Every collector metric.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub spans: Family<SpanLabels, Counter>,
    pub received_bytes: Family<ProtocolLabels, Counter>,
    pub records_produced: Counter,
    pub redacted_attributes: Counter,
    pub limited_attributes: Family<LimitLabels, Counter>,
    /// Requests decoded instead of split on the byte path.
    pub decode_fallbacks: Family<FallbackLabels, Counter>,
    pub produce_latency: Histogram,
    pub inflight_bytes: Gauge,
    pub kafka_queue_messages: Gauge,
    pub tls_handshakes: Family<HandshakeLabels, Counter>,
    /// Jaeger agent datagrams by port and outcome (UDP: the one input that is at most once).
    pub datagrams: Family<DatagramLabels, Counter>,
    /// Certificate, token and sampling strategies files read again after they changed.
    pub reloads: ReloadMetrics,
    /// Jaeger remote sampling requests by endpoint and outcome.
    pub sampling_requests: Family<SamplingLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            spans: Family::default(),
            received_bytes: Family::default(),
            records_produced: Counter::default(),
            redacted_attributes: Counter::default(),
            limited_attributes: Family::default(),
            decode_fallbacks: Family::default(),
            produce_latency: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            inflight_bytes: Gauge::default(),
            kafka_queue_messages: Gauge::default(),
            tls_handshakes: Family::default(),
            datagrams: Family::default(),
            reloads: ReloadMetrics::register(registry, "spanline_collector"),
            sampling_requests: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("spanline_collector");
        r.register("requests", "Export requests by protocol and outcome", m.requests.clone());
        r.register("spans", "Spans by outcome and rejection reason", m.spans.clone());
        r.register(
            "agent_datagrams",
            "Jaeger agent UDP datagrams by port and outcome: exported, or dropped and why",
            m.datagrams.clone(),
        );
        r.register_with_unit(
            "received",
            "Request body bytes received, after decompression",
            Unit::Bytes,
            m.received_bytes.clone(),
        );
        r.register(
            "redacted_attributes",
            "Attributes dropped, masked or hashed by redaction rules",
            m.redacted_attributes.clone(),
        );
        r.register(
            "limited_attributes",
            "Attributes dropped or keys and values truncated by the attribute limits",
            m.limited_attributes.clone(),
        );
        r.register(
            "decode_fallbacks",
            "Requests decoded (decode, limit, process, encode) instead of split on the byte path, by reason",
            m.decode_fallbacks.clone(),
        );
        r.register("records_produced", "Kafka records acknowledged by the broker", m.records_produced.clone());
        r.register_with_unit(
            "produce_latency",
            "Time from producing a request's records to the last delivery report",
            Unit::Seconds,
            m.produce_latency.clone(),
        );
        r.register_with_unit(
            "inflight",
            "Bytes of limits.max_inflight_bytes held by exports: bodies, decoded requests and records until acknowledged",
            Unit::Bytes,
            m.inflight_bytes.clone(),
        );
        r.register("kafka_queue_messages", "Messages in the librdkafka producer queue", m.kafka_queue_messages.clone());
        r.register(
            "sampling_requests",
            "Jaeger remote sampling requests by endpoint and outcome",
            m.sampling_requests.clone(),
        );
        r.register("tls_handshakes", "TLS handshakes on the OTLP listeners by outcome", m.tls_handshakes.clone());
        m
    }
}
