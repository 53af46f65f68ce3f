//! `span_metrics`: RED metrics (calls, errors, durations) per service, span name, span kind and
//! status code, in the names and labels Jaeger's Monitor tab queries — the ones the OpenTelemetry
//! Collector's span-metrics connector writes with its default `traces.span.metrics` namespace:
//! `traces_span_metrics_calls_total` and `traces_span_metrics_duration_milliseconds_{bucket,sum,count}`
//! with labels `service_name`, `span_name`, `span_kind` (`SPAN_KIND_SERVER`, …) and `status_code`
//! (`STATUS_CODE_ERROR`, …).
//!
//! Fed by the export path: each request's valid spans are tallied while they are read, before
//! sampling (so the rates are true whatever fraction of traces is kept), into a [`Tally`]; the tally
//! reaches the series ([`SpanMetrics::record`]) only once Kafka acknowledged the request's records,
//! so a request that fails, and that its client sends again, is counted once.
//!
//! Span names and service names come from clients: the series are bounded by `max_series`. A span
//! whose series would be new past it is counted in one overflow series labelled only
//! `otel_metric_overflow="true"` (as the connector does), and in
//! `spanline_collector_span_metrics_overflow_total`. Label values are cut at [`MAX_LABEL_BYTES`].

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use prometheus_client::{
    encoding::{EncodeLabelKey, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

/// The connector's default duration buckets, in milliseconds.
pub const BUCKETS_MS: [f64; 16] =
    [2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0, 10000.0, 15000.0];

/// Longest label value kept, in bytes (cut at a character boundary).
pub const MAX_LABEL_BYTES: usize = 256;

/// One span's series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key<'a> {
    pub service: &'a [u8],
    pub name: &'a [u8],
    /// OTLP span kind.
    pub kind: i32,
    /// OTLP status code.
    pub status: i32,
}

/// One request's spans per series: (calls, durations in ms).
#[derive(Debug, Default)]
pub struct Tally<'a> {
    series: HashMap<Key<'a>, Vec<f64>>,
}

impl<'a> Tally<'a> {
    /// Counts one span that lasted from `start` to `end` (ns).
    pub fn add(&mut self, key: Key<'a>, start: u64, end: u64) {
        // Nanoseconds to milliseconds: precision loss is irrelevant.
        #[allow(clippy::cast_precision_loss)]
        let ms = end.saturating_sub(start) as f64 / 1e6;
        self.series.entry(key).or_default().push(ms);
    }

    /// The tally without borrowing the request (which is dropped before the records are
    /// acknowledged).
    pub fn into_owned(self) -> Counted {
        Counted(
            self.series
                .into_iter()
                .map(|(k, durations)| {
                    let labels = Labels::Series {
                        service_name: label(k.service),
                        span_name: label(k.name),
                        span_kind: kind_name(k.kind),
                        status_code: status_name(k.status),
                    };
                    (labels, durations)
                })
                .collect(),
        )
    }
}

/// A request's tally, owned, waiting for Kafka's acknowledgement.
#[derive(Debug, Default)]
pub struct Counted(Vec<(Labels, Vec<f64>)>);

impl Counted {
    /// Spans counted.
    pub fn spans(&self) -> usize {
        self.0.iter().map(|(_, d)| d.len()).sum()
    }
}

fn label(bytes: &[u8]) -> Arc<str> {
    let text = String::from_utf8_lossy(bytes);
    let mut end = text.len().min(MAX_LABEL_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Arc::from(&text[..end])
}

/// OTLP span kind as the connector writes it.
pub fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

/// OTLP status code as the connector writes it.
pub fn status_name(code: i32) -> &'static str {
    match code {
        1 => "STATUS_CODE_OK",
        2 => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

/// A series' labels: the four dimensions, or the overflow series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Labels {
    Series { service_name: Arc<str>, span_name: Arc<str>, span_kind: &'static str, status_code: &'static str },
    Overflow,
}

impl EncodeLabelSet for Labels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let mut put = |key: &str, value: &str| -> Result<(), std::fmt::Error> {
            let mut label = encoder.encode_label();
            let mut key_encoder = label.encode_label_key()?;
            EncodeLabelKey::encode(&key, &mut key_encoder)?;
            let mut value_encoder = key_encoder.encode_label_value()?;
            EncodeLabelValue::encode(&value, &mut value_encoder)?;
            value_encoder.finish()
        };
        match self {
            Labels::Series { service_name, span_name, span_kind, status_code } => {
                put("service_name", service_name)?;
                put("span_name", span_name)?;
                put("span_kind", span_kind)?;
                put("status_code", status_code)
            }
            Labels::Overflow => put("otel_metric_overflow", "true"),
        }
    }
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS_MS)
}

/// The series, bounded.
#[derive(Debug)]
pub struct SpanMetrics {
    calls: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// The series that exist, at most `max_series`.
    series: Mutex<HashSet<Labels>>,
    max_series: usize,
    overflow: Counter,
}

impl SpanMetrics {
    /// Registers the series at the registry's top level (their names are Jaeger's, not
    /// `spanline_collector_*`) and the overflow counter under the collector's prefix.
    pub fn register(registry: &mut Registry, max_series: usize) -> Self {
        let m = Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(histogram),
            series: Mutex::new(HashSet::new()),
            max_series,
            overflow: Counter::default(),
        };
        registry.register(
            "traces_span_metrics_calls",
            "Spans received, by service, span name, span kind and status code (counted before sampling)",
            m.calls.clone(),
        );
        registry.register_with_unit(
            "traces_span_metrics_duration",
            "Span durations, by service, span name, span kind and status code",
            Unit::Other("milliseconds".into()),
            m.duration.clone(),
        );
        registry.sub_registry_with_prefix("spanline_collector").register(
            "span_metrics_overflow",
            "Spans counted in the overflow series because span_metrics.max_series series exist",
            m.overflow.clone(),
        );
        m
    }

    /// Adds a request's tally, once Kafka holds its records.
    pub fn record(&self, counted: Counted) {
        for (labels, durations) in counted.0 {
            let labels = {
                let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
                if series.contains(&labels) {
                    labels
                } else if series.len() < self.max_series {
                    series.insert(labels.clone());
                    labels
                } else {
                    self.overflow.inc_by(durations.len() as u64);
                    Labels::Overflow
                }
            };
            self.calls.get_or_create(&labels).inc_by(durations.len() as u64);
            let histogram = self.duration.get_or_create(&labels);
            for ms in durations {
                histogram.observe(ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encodes");
        out
    }

    #[test]
    fn series_have_the_connector_names_and_labels_and_overflow_past_the_bound() {
        let mut registry = Registry::default();
        let metrics = SpanMetrics::register(&mut registry, 2);
        let key = |service: &'static str, name: &'static str, status| Key {
            service: service.as_bytes(),
            name: name.as_bytes(),
            kind: 2,
            status,
        };
        // One request per series, so the third is the one past the bound.
        let mut tally = Tally::default();
        tally.add(key("api", "GET /", 0), 0, 3_000_000);
        tally.add(key("api", "GET /", 0), 0, 30_000_000);
        metrics.record(tally.into_owned());
        let mut tally = Tally::default();
        tally.add(key("api", "GET /", 2), 0, 1_000_000);
        metrics.record(tally.into_owned());
        let mut tally = Tally::default();
        tally.add(key("web", "x", 0), 0, 1);
        tally.add(key("web", "x", 0), 0, 1);
        let counted = tally.into_owned();
        assert_eq!(counted.spans(), 2);
        metrics.record(counted);
        let text = exposition(&registry);
        let series =
            r#"service_name="api",span_name="GET /",span_kind="SPAN_KIND_SERVER",status_code="STATUS_CODE_UNSET""#;
        assert!(text.contains(&format!("traces_span_metrics_calls_total{{{series}}} 2")), "{text}");
        assert!(
            text.contains(&format!(r#"traces_span_metrics_duration_milliseconds_bucket{{le="4.0",{series}}} 1"#)),
            "{text}"
        );
        assert!(
            text.contains(&format!(r#"traces_span_metrics_duration_milliseconds_bucket{{le="50.0",{series}}} 2"#)),
            "{text}"
        );
        assert!(text.contains(r#"status_code="STATUS_CODE_ERROR"} 1"#), "{text}");
        assert!(!text.contains(r#"service_name="web""#), "{text}");
        assert!(text.contains(r#"traces_span_metrics_calls_total{otel_metric_overflow="true"} 2"#), "{text}");
        assert!(text.contains("spanline_collector_span_metrics_overflow_total 2"), "{text}");
    }

    #[test]
    fn label_values_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_LABEL_BYTES);
        assert_eq!(label(long.as_bytes()).len(), MAX_LABEL_BYTES);
        assert_eq!(label(format!("a{long}").as_bytes()).len(), MAX_LABEL_BYTES - 1);
    }
}
