//! A seeded model of realistic traces: a call tree through services and operations with a chosen
//! depth and fan-out, HTTP/DB attributes, events, error spans, and spans padded to a target size.
//!
//! Deterministic for (seed, trace number, `now`): two runs with the same seed send the same traces.

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status::StatusCode},
};
use prost::Message as _;
use rand::{Rng, SeedableRng, rngs::StdRng};

const SERVICE_NAMES: [&str; 12] = [
    "frontend",
    "cart",
    "checkout",
    "payments",
    "shipping",
    "catalog",
    "search",
    "recommendations",
    "ads",
    "email",
    "currency",
    "auth",
];
const VERBS: [&str; 6] = ["GET", "POST", "PUT", "SELECT", "publish", "charge"];

/// The shape of generated traces.
#[derive(Debug, Clone)]
pub struct Model {
    pub seed: u64,
    /// Distinct services (at most 12).
    pub services: usize,
    /// Operations per service.
    pub operations: usize,
    /// Levels below the root span (0: single-span traces).
    pub depth: u32,
    /// Children per span, at most (each span gets 1..=fan_out).
    pub fan_out: u32,
    /// At most this many spans per trace (the tree is cut there).
    pub max_spans: usize,
    /// Target encoded size of a span in bytes; attributes are padded up to it.
    pub span_bytes: usize,
    /// Share of spans with status ERROR and an exception event.
    pub error_rate: f64,
    /// Events per span, at most.
    pub events: u32,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            seed: 1,
            services: 8,
            operations: 6,
            depth: 3,
            fan_out: 3,
            max_spans: 8,
            span_bytes: 500,
            error_rate: 0.02,
            events: 2,
        }
    }
}

fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn s(key: &str, value: impl Into<String>) -> KeyValue {
    attr(key, any_value::Value::StringValue(value.into()))
}

/// One generated trace: its id and spans, each with its service index.
#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: [u8; 16],
    pub spans: Vec<(usize, Span)>,
}

impl Trace {
    /// The latest span end, in nanoseconds since the epoch.
    pub fn end_unix_nano(&self) -> u64 {
        self.spans.iter().map(|(_, s)| s.end_time_unix_nano).max().unwrap_or(0)
    }
}

impl Model {
    fn service(&self, i: usize) -> &'static str {
        SERVICE_NAMES[i % self.services.clamp(1, SERVICE_NAMES.len())]
    }

    /// Trace number `n`, ending at about `now_unix_nano`.
    pub fn trace(&self, n: u64, now_unix_nano: u64) -> Trace {
        let mut rng = StdRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut trace_id = [0u8; 16];
        rng.fill(&mut trace_id[..]);
        trace_id[15] |= 1;
        let services = self.services.clamp(1, SERVICE_NAMES.len());
        let duration: u64 = rng.random_range(2_000_000..200_000_000);
        let start = now_unix_nano.saturating_sub(duration);
        let mut spans = Vec::new();
        // (parent span id, service, start, duration, level)
        let mut frontier = vec![(Vec::new(), 0usize, start, duration, 0u32)];
        while let Some((parent, service, start, duration, level)) = frontier.pop() {
            if spans.len() >= self.max_spans.max(1) {
                break;
            }
            let span_id = (rng.random::<u64>() | 1).to_be_bytes().to_vec();
            let op = rng.random_range(0..self.operations.max(1));
            let verb = VERBS[op % VERBS.len()];
            let name = format!("{verb} /{}/{op}", self.service(service));
            let error = rng.random_bool(self.error_rate.clamp(0.0, 1.0));
            let kind = if parent.is_empty() { span::SpanKind::Server } else { span::SpanKind::Client };
            let mut attributes = vec![
                s("http.request.method", verb),
                s("url.path", format!("/{}/{op}", self.service(service))),
                attr("http.response.status_code", any_value::Value::IntValue(if error { 500 } else { 200 })),
                attr("retry", any_value::Value::BoolValue(rng.random_bool(0.05))),
                s("peer.service", self.service((service + 1) % services)),
            ];
            let mut events: Vec<span::Event> = (0..rng.random_range(0..=self.events))
                .map(|e| span::Event {
                    time_unix_nano: start + duration / 2,
                    name: format!("checkpoint {e}"),
                    attributes: vec![s("stage", "cache")],
                    ..Default::default()
                })
                .collect();
            if error {
                events.push(span::Event {
                    time_unix_nano: start + duration,
                    name: "exception".into(),
                    attributes: vec![s("exception.type", "TimeoutError"), s("exception.message", "upstream timed out")],
                    ..Default::default()
                });
            }
            let mut span = Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.clone(),
                parent_span_id: parent,
                name,
                kind: kind as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + duration,
                attributes: std::mem::take(&mut attributes),
                events,
                status: Some(Status {
                    code: if error { StatusCode::Error } else { StatusCode::Ok } as i32,
                    message: if error { "upstream timed out".into() } else { String::new() },
                }),
                ..Default::default()
            };
            let size = span.encoded_len();
            if size + 24 < self.span_bytes {
                span.attributes.push(s("payload", "x".repeat(self.span_bytes - size - 24)));
            }
            if level < self.depth {
                let children = rng.random_range(1..=self.fan_out.max(1));
                for c in 0..children {
                    let child_duration = duration / u64::from(children + 1);
                    let child_start = start + u64::from(c) * child_duration + child_duration / 4;
                    let child_service = rng.random_range(0..services);
                    frontier.push((span_id.clone(), child_service, child_start, child_duration, level + 1));
                }
            }
            spans.push((service, span));
        }
        Trace { trace_id, spans }
    }

    /// The service of a span of [`Model::trace`] by its service index.
    pub fn service_name(&self, i: usize) -> &'static str {
        self.service(i)
    }

    /// The calls trace `trace` makes, as Jaeger's dependency job counts them from its spans
    /// (docs/dependencies.md): each child span under its parent (parent's service → child's), and
    /// each leaf span that has a parent, to its `peer.service` (every model span names one). Read
    /// from the model's own tree, not from the derivation the ingester runs.
    pub fn calls(&self, trace: &Trace) -> Vec<(&'static str, &'static str)> {
        let service_of: std::collections::HashMap<&[u8], usize> =
            trace.spans.iter().map(|(service, span)| (span.span_id.as_slice(), *service)).collect();
        let parents: std::collections::HashSet<&[u8]> =
            trace.spans.iter().map(|(_, span)| span.parent_span_id.as_slice()).collect();
        let mut calls = Vec::new();
        for (service, span) in &trace.spans {
            let Some(&parent) = service_of.get(span.parent_span_id.as_slice()) else { continue };
            calls.push((self.service(parent), self.service(*service)));
            if !parents.contains(span.span_id.as_slice()) {
                let peer = span.attributes.iter().find(|kv| kv.key == "peer.service").and_then(|kv| {
                    match kv.value.as_ref()?.value.as_ref()? {
                        any_value::Value::StringValue(s) => Some(s.as_str()),
                        _ => None,
                    }
                });
                if let Some(peer) = peer.and_then(|p| SERVICE_NAMES.iter().find(|n| **n == p)) {
                    calls.push((self.service(*service), *peer));
                }
            }
        }
        calls
    }

    /// An export request holding `traces`, grouped by service as an SDK would send them.
    pub fn request(&self, traces: &[Trace]) -> ExportTraceServiceRequest {
        let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); self.services.clamp(1, SERVICE_NAMES.len())];
        for trace in traces {
            for (service, span) in &trace.spans {
                by_service[*service].push(span.clone());
            }
        }
        ExportTraceServiceRequest {
            resource_spans: by_service
                .into_iter()
                .enumerate()
                .filter(|(_, spans)| !spans.is_empty())
                .map(|(i, spans)| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            s("service.name", self.service(i)),
                            s("service.version", "1.4.2"),
                            s("host.name", format!("node-{}", i % 3)),
                            s("telemetry.sdk.language", "rust"),
                        ],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "spanline-loadtest".into(),
                            version: "1".into(),
                            ..Default::default()
                        }),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_deterministic_trees_of_the_requested_size() {
        let model = Model::default();
        let a = model.trace(7, 1_800_000_000_000_000_000);
        let b = model.trace(7, 1_800_000_000_000_000_000);
        assert_eq!(a.trace_id, b.trace_id);
        assert_eq!(a.spans.len(), b.spans.len());
        assert!(!a.spans.is_empty() && a.spans.len() <= model.max_spans);
        let roots = a.spans.iter().filter(|(_, s)| s.parent_span_id.is_empty()).count();
        assert_eq!(roots, 1, "one root per trace");
        for (_, span) in &a.spans {
            let size = span.encoded_len();
            assert!(size >= model.span_bytes - 30 && size <= model.span_bytes + 200, "span of {size} bytes");
            assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        }
        assert_ne!(model.trace(8, 1).trace_id, a.trace_id);
    }

    #[test]
    fn requests_group_spans_by_service() {
        let model = Model::default();
        let traces: Vec<Trace> = (0..64).map(|n| model.trace(n, 1_800_000_000_000_000_000)).collect();
        let request = model.request(&traces);
        let spans: usize = request.resource_spans.iter().map(|r| r.scope_spans[0].spans.len()).sum();
        assert_eq!(spans, traces.iter().map(|t| t.spans.len()).sum::<usize>());
        assert!(request.resource_spans.len() > 1);
    }
}
