//! The ingester's Prometheus metrics, all named `spanline_ingester_*`. Labels hold only values the
//! ingester chooses (reason, class, kind, partition number).

use std::sync::atomic::AtomicU64;

use crate::health::Health;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use spanline_common::reload::ReloadMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

/// A `[limits]` setting's name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
}

/// A refusal of the store: the whole request or items of it, and the status (a bounded set, see
/// `bulk::classify::status_label`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub level: &'static str,
    pub status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub partition: i32,
}

/// Every ingester metric.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub records: Counter,
    pub decode_errors: Counter,
    pub documents_indexed: Family<KindLabels, Counter>,
    pub flushes: Family<ReasonLabels, Counter>,
    pub bulk_latency: Histogram,
    pub items: Family<ClassLabels, Counter>,
    pub retries: Counter,
    /// Bulk answers held because the store refuses for a reason only an operator can fix.
    pub bulk_refusals: Family<RefusalLabels, Counter>,
    pub dead_lettered: Family<StageLabels, Counter>,
    pub over_limit_records: Family<LimitLabels, Counter>,
    pub over_limit_spans: Family<LimitLabels, Counter>,
    pub dead_letter_payloads_left_out: Counter,
    pub dead_letter_failures: Family<ClassLabels, Counter>,
    pub assigned_partitions: Gauge,
    pub lag: Family<PartitionLabels, Gauge>,
    pub lag_seconds: Family<PartitionLabels, Gauge<f64, AtomicU64>>,
    pub paused_partitions: Gauge,
    pub inflight_bulks: Gauge,
    pub rebalances: Family<EventLabels, Counter>,
    pub freshness: Histogram,
    pub unowned_lag: Gauge,
    pub stalled_partitions: Gauge,
    /// Dependency links: windows written, records re-read after an assignment, spans held, and what
    /// the tracker's bounds cost (`crate::dependencies::Stats`).
    pub dependency_windows: Counter,
    pub dependency_reread_records: Counter,
    pub dependency_spans_held: Gauge,
    pub dependency_evictions: Counter,
    pub dependency_links_dropped: Counter,
    pub dependency_late_records: Counter,
    /// Readiness, and what stalls the ingester (`spanline_ingester_stalled`).
    pub health: Health,
    /// Reloads of the OpenSearch credential files (`spanline_ingester_reloads_total`).
    pub reloads: ReloadMetrics,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        let m = Self {
            records: Counter::default(),
            decode_errors: Counter::default(),
            documents_indexed: Family::default(),
            flushes: Family::default(),
            bulk_latency: Histogram::new(buckets),
            items: Family::default(),
            retries: Counter::default(),
            bulk_refusals: Family::default(),
            dead_lettered: Family::default(),
            over_limit_records: Family::default(),
            over_limit_spans: Family::default(),
            dead_letter_payloads_left_out: Counter::default(),
            dead_letter_failures: Family::default(),
            assigned_partitions: Gauge::default(),
            lag: Family::default(),
            lag_seconds: Family::default(),
            paused_partitions: Gauge::default(),
            inflight_bulks: Gauge::default(),
            rebalances: Family::default(),
            freshness: Histogram::new(buckets),
            unowned_lag: Gauge::default(),
            stalled_partitions: Gauge::default(),
            dependency_windows: Counter::default(),
            dependency_reread_records: Counter::default(),
            dependency_spans_held: Gauge::default(),
            dependency_evictions: Counter::default(),
            dependency_links_dropped: Counter::default(),
            dependency_late_records: Counter::default(),
            health: Health::register(registry),
            reloads: ReloadMetrics::register(registry, "spanline_ingester"),
        };
        let r = registry.sub_registry_with_prefix("spanline_ingester");
        r.register("records", "Kafka records consumed", m.records.clone());
        r.register("decode_errors", "Records that could not be decoded as OTLP protobuf", m.decode_errors.clone());
        r.register(
            "documents_indexed",
            "Documents durable in the store (created, or already there)",
            m.documents_indexed.clone(),
        );
        r.register("flushes", "Batches flushed, by reason", m.flushes.clone());
        r.register_with_unit(
            "bulk_latency",
            "Time from sending a batch to every item being durable",
            Unit::Seconds,
            m.bulk_latency.clone(),
        );
        r.register(
            "bulk_items",
            "Bulk item outcomes by class (created, exists, transient, blocked, terminal)",
            m.items.clone(),
        );
        r.register("bulk_retries", "Bulk requests retried after a transient failure or a refusal", m.retries.clone());
        r.register(
            "bulk_refusals",
            "Store answers that refused for a reason only an operator can fix (offsets held, retried), by level (request, item, or start for the start-up requests) and status (301, 302, 303, 307, 308, 400, 401, 403, 404, 405, 429, 200 for an unreadable answer, tls for a failed TLS handshake, else 1xx/2xx/3xx/4xx/5xx)",
            m.bulk_refusals.clone(),
        );
        r.register("assigned_partitions", "Partitions this member owns", m.assigned_partitions.clone());
        r.register(
            "dead_lettered",
            "Envelopes written to the dead-letter topic, by stage (decode, map, index)",
            m.dead_lettered.clone(),
        );
        r.register(
            "over_limit_records",
            "Records dead-lettered whole for a [limits] bound, by setting (max_record_bytes, max_record_document_bytes)",
            m.over_limit_records.clone(),
        );
        r.register(
            "over_limit_spans",
            "Spans dead-lettered for a [limits] bound, by setting (max_record_document_bytes: every span of a record refused whole; max_document_bytes: one span); records over max_record_bytes are not decoded, so their spans are not counted",
            m.over_limit_spans.clone(),
        );
        r.register(
            "dead_letter_payloads_left_out",
            "Dead letters written without their payload because the envelope would pass limits.max_dead_letter_bytes or the broker refused it as too large",
            m.dead_letter_payloads_left_out.clone(),
        );
        r.register(
            "dead_letter_failures",
            "Dead-letter writes that failed, by class (too_large, unknown_topic, authorization, timed_out, queue_full, fatal, other); each is retried with the partition's offsets held",
            m.dead_letter_failures.clone(),
        );
        r.register(
            "consumer_lag_records",
            "Records between the stored offset and the high watermark, per partition",
            m.lag.clone(),
        );
        r.register_with_unit(
            "consumer_lag",
            "Age of the newest record whose offset was stored, when it was stored, per partition",
            Unit::Seconds,
            m.lag_seconds.clone(),
        );
        r.register(
            "paused_partitions",
            "Partitions not read because their bulk requests are all busy (librdkafka stops fetching them once max_prefetch_bytes is queued)",
            m.paused_partitions.clone(),
        );
        r.register("inflight_bulks", "Bulk requests in flight, all partitions", m.inflight_bulks.clone());
        r.register(
            "rebalance_events",
            "Partition events: assigned, revoked, drained, drain_uncommitted (drained, the broker refused the final commit), drain_timeout, drain_failed (the worker failed or panicked), lost",
            m.rebalances.clone(),
        );
        r.register_with_unit(
            "freshness",
            "Time from a span's end to its document being durable in the store",
            Unit::Seconds,
            m.freshness.clone(),
        );
        r.register(
            "unowned_lag_records",
            "The group's lag (high watermark minus committed offset) summed over the partitions this member does not own",
            m.unowned_lag.clone(),
        );
        r.register(
            "stalled_partitions",
            "Partitions this member does not own whose committed offset lags and has not moved for kafka.stalled_group_timeout (a member owning none is then not ready)",
            m.stalled_partitions.clone(),
        );
        r.register(
            "dependency_windows",
            "Dependency-link documents handed to the store (one per partition and window; a window counted again after a rebalance or restart is written again, replacing the first)",
            m.dependency_windows.clone(),
        );
        r.register(
            "dependency_reread_records",
            "Records re-read after an assignment to count unfinished dependency windows again (their spans are not indexed again)",
            m.dependency_reread_records.clone(),
        );
        r.register(
            "dependency_spans_held",
            "Spans held in open traces for the dependency links, all partitions",
            m.dependency_spans_held.clone(),
        );
        r.register(
            "dependency_evictions",
            "Traces closed early because dependencies.max_spans was reached (links to their later spans are lost)",
            m.dependency_evictions.clone(),
        );
        r.register(
            "dependency_links_dropped",
            "Calls left out of a window's document because it already held dependencies.max_links distinct links",
            m.dependency_links_dropped.clone(),
        );
        r.register(
            "dependency_late_records",
            "Records whose timestamp was more than dependencies.lateness behind the partition's newest (counts may then differ on a re-read)",
            m.dependency_late_records.clone(),
        );
        m
    }
}
