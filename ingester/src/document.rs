//! `document`: one OTLP `ExportTraceServiceRequest` (a Kafka record) → Jaeger span documents and
//! service documents (REFERENCE.md §4), each with its target index and a deterministic `_id`.
//!
//! Called by the consume loop for every record. Pure. Guarantees: the same span always maps to the
//! same bytes and the same `_id` (`{traceID}_{spanID}_{fnv64a(document) as hex}`), so retries and
//! replays are idempotent under the bulk `create` action; indices are chosen by the span's start
//! time in UTC.

use std::borrow::Cow;

use chrono::{DateTime, Datelike};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use serde::Serialize;
use spanline_common::ids::{fnv64a, to_hex};

/// A document ready for `_bulk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub index: String,
    pub id: String,
    /// The JSON source.
    pub source: Vec<u8>,
    pub kind: DocKind,
    /// For span documents, where the span is in its request: (resource, scope, span) indices.
    pub position: Option<[usize; 3]>,
    /// For span documents, the span's end in µs since the epoch; 0 for service documents.
    pub end_micros: i64,
}

/// Span or service document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    Span,
    Service,
}

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Span => "span",
            DocKind::Service => "service",
        }
    }
}

/// Which index a span goes to, and which start times are accepted.
#[derive(Debug, Clone)]
pub struct Routing {
    pub names: IndexNames,
    /// Oldest accepted start, as a distance before now, in microseconds.
    pub max_age_micros: i64,
    /// Latest accepted start, as a distance after now, in microseconds.
    pub max_skew_micros: i64,
    /// Out-of-window spans are indexed in the nearest allowed day's index instead of being refused.
    pub clamp: bool,
}

/// A span whose start time is outside the accepted window, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfWindow {
    /// (resource, scope, span) indices in the request.
    pub position: [usize; 3],
    pub reason: String,
}

/// What [`map_request`] produces.
#[derive(Debug, Default)]
pub struct Mapped {
    pub docs: Vec<Document>,
    pub out_of_window: Vec<OutOfWindow>,
}

impl Mapped {
    pub fn clear(&mut self) {
        self.docs.clear();
        self.out_of_window.clear();
    }
}

/// Index names for a prefix.
#[derive(Debug, Clone)]
pub struct IndexNames {
    span: String,
    service: String,
}

impl IndexNames {
    /// `{prefix}-jaeger-span-` and `{prefix}-jaeger-service-`, or without prefix when empty.
    pub fn new(prefix: &str) -> Self {
        let p = if prefix.is_empty() { String::new() } else { format!("{prefix}-") };
        Self { span: format!("{p}jaeger-span-"), service: format!("{p}jaeger-service-") }
    }

    /// The daily index of `kind` holding a span that started at `start_micros`.
    pub fn daily(&self, kind: DocKind, start_micros: i64) -> String {
        let base = match kind {
            DocKind::Span => &self.span,
            DocKind::Service => &self.service,
        };
        let date = DateTime::from_timestamp_micros(start_micros).unwrap_or_default().date_naive();
        format!("{base}{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
    }

    /// Index-template patterns matching these names.
    pub fn patterns(&self) -> (String, String) {
        (format!("{}*", self.span), format!("{}*", self.service))
    }
}

#[derive(Serialize)]
struct Tag<'a> {
    key: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    value: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Reference {
    ref_type: &'static str,
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Serialize)]
struct Log<'a> {
    timestamp: u64,
    fields: Vec<Tag<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Process<'a> {
    service_name: &'a str,
    tags: Vec<Tag<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JaegerSpan<'a> {
    #[serde(rename = "traceID")]
    trace_id: &'a str,
    #[serde(rename = "spanID")]
    span_id: &'a str,
    #[serde(rename = "parentSpanID", skip_serializing_if = "str::is_empty")]
    parent_span_id: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    flags: u32,
    operation_name: &'a str,
    references: Vec<Reference>,
    start_time: u64,
    start_time_millis: u64,
    duration: u64,
    tags: Vec<Tag<'a>>,
    logs: Vec<Log<'a>>,
    process: &'a Process<'a>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceDoc<'a> {
    service_name: &'a str,
    operation_name: &'a str,
}

/// The Jaeger tag for an OTLP attribute: type name and value as a string (REFERENCE.md §4: every
/// Jaeger Query version reads string values).
fn tag(kv: &KeyValue) -> Tag<'_> {
    let (kind, value) = any_value_text(kv.value.as_ref());
    Tag { key: Cow::Borrowed(&kv.key), kind, value }
}

fn any_value_text(v: Option<&AnyValue>) -> (&'static str, Cow<'_, str>) {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => ("string", Cow::Borrowed(s)),
        Some(any_value::Value::BoolValue(b)) => ("bool", Cow::Borrowed(if *b { "true" } else { "false" })),
        Some(any_value::Value::IntValue(i)) => ("int64", Cow::Owned(i.to_string())),
        Some(any_value::Value::DoubleValue(d)) => ("float64", Cow::Owned(d.to_string())),
        Some(any_value::Value::BytesValue(b)) => ("binary", Cow::Owned(to_hex(b))),
        Some(other @ (any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_))) => {
            ("string", Cow::Owned(serde_json::to_string(&AnyValue { value: Some(other.clone()) }).unwrap_or_default()))
        }
        // Newer OTLP value kinds (e.g. references into a string table) are written as their debug form.
        Some(other) => ("string", Cow::Owned(format!("{other:?}"))),
        None => ("string", Cow::Borrowed("")),
    }
}

fn str_tag<'a>(key: &'static str, value: &'a str) -> Tag<'a> {
    Tag { key: Cow::Borrowed(key), kind: "string", value: Cow::Borrowed(value) }
}

fn span_kind(kind: i32) -> Option<&'static str> {
    match SpanKind::try_from(kind).ok()? {
        SpanKind::Client => Some("client"),
        SpanKind::Server => Some("server"),
        SpanKind::Producer => Some("producer"),
        SpanKind::Consumer => Some("consumer"),
        SpanKind::Internal => Some("internal"),
        SpanKind::Unspecified => None,
    }
}

/// The service name of a resource: `service.name`, or `unknown_service` as OpenTelemetry defines.
fn service_name(attributes: &[KeyValue]) -> &str {
    attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("unknown_service")
}

/// Maps every span of `request` to its documents, appending to `out`: one span document per span,
/// and one service document per distinct (service, operation, day) in the request. Spans starting
/// outside [now − max age, now + max skew] are listed in `out.out_of_window` instead, unless the
/// routing clamps them to the nearest allowed day.
pub fn map_request(request: &ExportTraceServiceRequest, routing: &Routing, now_micros: i64, out: &mut Mapped) {
    let names = &routing.names;
    let (oldest, newest) = (now_micros - routing.max_age_micros, now_micros + routing.max_skew_micros);
    let mut services: Vec<(String, String)> = Vec::new();
    for (ri, resource_spans) in request.resource_spans.iter().enumerate() {
        let attributes = resource_spans.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let service = service_name(attributes);
        let process = Process {
            service_name: service,
            tags: attributes.iter().filter(|kv| kv.key != "service.name").map(tag).collect(),
        };
        for (si, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            let scope = scope_spans.scope.as_ref();
            for (pi, span) in scope_spans.spans.iter().enumerate() {
                let start = micros(span.start_time_unix_nano);
                let day = if (oldest..=newest).contains(&start) {
                    start
                } else if routing.clamp {
                    start.clamp(oldest, newest)
                } else {
                    let when =
                        DateTime::from_timestamp_micros(start).map_or_else(|| start.to_string(), |t| t.to_rfc3339());
                    out.out_of_window.push(OutOfWindow {
                        position: [ri, si, pi],
                        reason: format!(
                            "span start {when} is outside the accepted window (max_span_age, max_clock_skew)"
                        ),
                    });
                    continue;
                };
                let mut doc = span_document(span, scope, &process);
                doc.index = names.daily(DocKind::Span, day);
                doc.position = Some([ri, si, pi]);
                let key = (names.daily(DocKind::Service, day), span.name.clone());
                if !services.contains(&key) {
                    services.push(key);
                }
                out.docs.push(doc);
            }
        }
        for (index, operation) in services.drain(..) {
            out.docs.push(service_document(service, &operation, index));
        }
    }
}

fn micros(nanos: u64) -> i64 {
    i64::try_from(nanos / 1_000).unwrap_or(i64::MAX)
}

fn span_document(
    span: &Span,
    scope: Option<&opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
    process: &Process<'_>,
) -> Document {
    let trace_id = to_hex(&span.trace_id);
    let span_id = to_hex(&span.span_id);
    let parent_span_id = to_hex(&span.parent_span_id);
    let mut references = Vec::with_capacity(usize::from(!span.parent_span_id.is_empty()) + span.links.len());
    if !span.parent_span_id.is_empty() {
        references.push(Reference {
            ref_type: "CHILD_OF",
            trace_id: trace_id.clone(),
            span_id: parent_span_id.clone(),
        });
    }
    for link in &span.links {
        references.push(Reference {
            ref_type: "FOLLOWS_FROM",
            trace_id: to_hex(&link.trace_id),
            span_id: to_hex(&link.span_id),
        });
    }

    let mut tags: Vec<Tag<'_>> = span.attributes.iter().map(tag).collect();
    if let Some(scope) = scope {
        if !scope.name.is_empty() {
            tags.push(str_tag("otel.scope.name", &scope.name));
        }
        if !scope.version.is_empty() {
            tags.push(str_tag("otel.scope.version", &scope.version));
        }
    }
    if let Some(kind) = span_kind(span.kind) {
        tags.push(str_tag("span.kind", kind));
    }
    if let Some(status) = &span.status {
        match StatusCode::try_from(status.code) {
            Ok(StatusCode::Ok) => tags.push(str_tag("otel.status_code", "OK")),
            Ok(StatusCode::Error) => {
                tags.push(str_tag("otel.status_code", "ERROR"));
                tags.push(Tag { key: Cow::Borrowed("error"), kind: "bool", value: Cow::Borrowed("true") });
            }
            _ => {}
        }
        if !status.message.is_empty() {
            tags.push(str_tag("otel.status_description", &status.message));
        }
    }
    if !span.trace_state.is_empty() {
        tags.push(str_tag("w3c.tracestate", &span.trace_state));
    }

    let logs = span
        .events
        .iter()
        .map(|event| {
            let mut fields = Vec::with_capacity(event.attributes.len() + 1);
            if !event.name.is_empty() {
                fields.push(str_tag("event", &event.name));
            }
            fields.extend(event.attributes.iter().map(tag));
            Log { timestamp: event.time_unix_nano / 1_000, fields }
        })
        .collect();

    let start_time = span.start_time_unix_nano / 1_000;
    let doc = JaegerSpan {
        trace_id: &trace_id,
        span_id: &span_id,
        parent_span_id: &parent_span_id,
        flags: span.flags & 0xff,
        operation_name: &span.name,
        references,
        start_time,
        start_time_millis: start_time / 1_000,
        duration: span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) / 1_000,
        tags,
        logs,
        process,
    };
    // Serializing plain structs of strings and integers cannot fail.
    let source = serde_json::to_vec(&doc).unwrap_or_default();
    let id = format!("{trace_id}_{span_id}_{:x}", fnv64a(&[&source]));
    // The caller routes it.
    let end_micros = i64::try_from(span.end_time_unix_nano / 1_000).unwrap_or(i64::MAX);
    Document { index: String::new(), id, source, kind: DocKind::Span, position: None, end_micros }
}

/// The service document for (service, operation), with Jaeger's id: FNV-64a of the service name
/// followed by the operation name, as unpadded lowercase hex.
pub fn service_document(service: &str, operation: &str, index: String) -> Document {
    let source =
        serde_json::to_vec(&ServiceDoc { service_name: service, operation_name: operation }).unwrap_or_default();
    let id = format!("{:x}", fnv64a(&[service.as_bytes(), operation.as_bytes()]));
    Document { index, id, source, kind: DocKind::Service, position: None, end_micros: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::{ArrayValue, InstrumentationScope},
        resource::v1::Resource,
        trace::v1::{
            ResourceSpans, ScopeSpans, Status,
            span::{Event, Link},
        },
    };
    use serde_json::{Value, json};

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn sample() -> ExportTraceServiceRequest {
        let span = Span {
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            parent_span_id: vec![9; 8],
            trace_state: "vendor=1".into(),
            flags: 0x101,
            name: "GET /cart".into(),
            kind: SpanKind::Server as i32,
            // 2026-11-25T12:00:00.123456789Z
            start_time_unix_nano: 1_795_608_000_123_456_789,
            end_time_unix_nano: 1_795_608_000_123_456_789 + 2_500_000,
            attributes: vec![
                kv("http.method", any_value::Value::StringValue("GET".into())),
                kv("http.status_code", any_value::Value::IntValue(200)),
                kv("cache.hit", any_value::Value::BoolValue(true)),
                kv("ratio", any_value::Value::DoubleValue(0.5)),
                kv("raw", any_value::Value::BytesValue(vec![0xde, 0xad])),
                kv(
                    "list",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue { value: Some(any_value::Value::IntValue(1)) }],
                    }),
                ),
            ],
            events: vec![Event {
                time_unix_nano: 1_795_608_000_124_000_000,
                name: "exception".into(),
                attributes: vec![kv("exception.message", any_value::Value::StringValue("boom".into()))],
                ..Default::default()
            }],
            links: vec![Link { trace_id: vec![7; 16], span_id: vec![8; 8], ..Default::default() }],
            status: Some(Status { code: StatusCode::Error as i32, message: "failed".into() }),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", any_value::Value::StringValue("cart".into())),
                        kv("host.name", any_value::Value::StringValue("h1".into())),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.http".into(),
                        version: "1.2".into(),
                        ..Default::default()
                    }),
                    spans: vec![span.clone(), Span { span_id: vec![3; 8], ..span }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn routing(prefix: &str) -> Routing {
        Routing {
            names: IndexNames::new(prefix),
            max_age_micros: i64::MAX / 4,
            max_skew_micros: i64::MAX / 4,
            clamp: false,
        }
    }

    fn map(request: &ExportTraceServiceRequest, routing: &Routing, now_micros: i64) -> Mapped {
        let mut out = Mapped::default();
        map_request(request, routing, now_micros, &mut out);
        out
    }

    fn tags_of(doc: &Value, field: &str) -> Vec<(String, String, String)> {
        doc[field]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| {
                        (
                            t["key"].as_str().unwrap_or_default().into(),
                            t["type"].as_str().unwrap_or_default().into(),
                            t["value"].as_str().unwrap_or_default().into(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn span_document_has_every_jaeger_field() {
        let docs = map(&sample(), &routing(""), 1_795_608_000_000_000).docs;
        assert_eq!(docs.len(), 3, "two spans and one service document");
        let span = &docs[0];
        assert_eq!(span.kind, DocKind::Span);
        assert_eq!(span.index, "jaeger-span-2026-11-25");
        let doc: Value = serde_json::from_slice(&span.source).expect("json");
        assert_eq!(doc["traceID"], "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(doc["spanID"], "0102030405060708");
        assert_eq!(doc["parentSpanID"], "0909090909090909");
        assert_eq!(doc["flags"], 1);
        assert_eq!(doc["operationName"], "GET /cart");
        assert_eq!(doc["startTime"], 1_795_608_000_123_456_u64);
        assert_eq!(doc["startTimeMillis"], 1_795_608_000_123_u64);
        assert_eq!(doc["duration"], 2_500);
        assert_eq!(
            doc["references"],
            json!([
                {"refType": "CHILD_OF", "traceID": "0102030405060708090a0b0c0d0e0f10", "spanID": "0909090909090909"},
                {"refType": "FOLLOWS_FROM", "traceID": "07".repeat(16), "spanID": "08".repeat(8)}
            ])
        );
        let tags = tags_of(&doc, "tags");
        let t = |k: &str, ty: &str, v: &str| (k.to_owned(), ty.to_owned(), v.to_owned());
        for expected in [
            t("http.method", "string", "GET"),
            t("http.status_code", "int64", "200"),
            t("cache.hit", "bool", "true"),
            t("ratio", "float64", "0.5"),
            t("raw", "binary", "dead"),
            t("list", "string", r#"{"arrayValue":{"values":[{"intValue":"1"}]}}"#),
            t("otel.scope.name", "string", "io.opentelemetry.http"),
            t("otel.scope.version", "string", "1.2"),
            t("span.kind", "string", "server"),
            t("otel.status_code", "string", "ERROR"),
            t("error", "bool", "true"),
            t("otel.status_description", "string", "failed"),
            t("w3c.tracestate", "string", "vendor=1"),
        ] {
            assert!(tags.contains(&expected), "missing {expected:?} in {tags:?}");
        }
        assert_eq!(doc["logs"][0]["timestamp"], 1_795_608_000_124_000_u64);
        assert_eq!(
            tags_of(&doc["logs"][0], "fields"),
            vec![t("event", "string", "exception"), t("exception.message", "string", "boom")]
        );
        assert_eq!(doc["process"]["serviceName"], "cart");
        assert_eq!(tags_of(&doc["process"], "tags"), vec![t("host.name", "string", "h1")]);
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = map(&sample(), &routing(""), 1_795_608_000_000_000).docs;
        let b = map(&sample(), &routing(""), 1_795_608_000_000_000).docs;
        assert_eq!(a, b);
        assert_ne!(a[0].id, a[1].id);
        assert!(a[0].id.starts_with("0102030405060708090a0b0c0d0e0f10_0102030405060708_"));
    }

    #[test]
    fn empty_fields_are_omitted() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "root".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let docs = map(&request, &routing("prod"), 0).docs;
        let doc: Value = serde_json::from_slice(&docs[0].source).expect("json");
        assert!(doc.get("parentSpanID").is_none());
        assert!(doc.get("flags").is_none());
        assert_eq!(doc["references"], json!([]));
        assert_eq!(doc["process"]["serviceName"], "unknown_service");
        assert_eq!(docs[0].index, "prod-jaeger-span-1970-01-01");
        assert_eq!(docs[1].index, "prod-jaeger-service-1970-01-01");
    }

    #[test]
    fn spans_outside_the_window_are_listed_or_clamped() {
        let now = 1_795_608_000_000_000_i64; // 2026-11-25T12:00:00Z
        let hour = 3_600_000_000_i64;
        let mut r =
            Routing { names: IndexNames::new(""), max_age_micros: 72 * hour, max_skew_micros: hour, clamp: false };
        let mut request = sample();
        let spans = &mut request.resource_spans[0].scope_spans[0].spans;
        spans[0].start_time_unix_nano = 1_000; // 1970
        spans[1].start_time_unix_nano = u64::try_from(now + 5 * hour).expect("positive") * 1_000; // 5 h ahead
        let refused = map(&request, &r, now);
        assert!(refused.docs.is_empty(), "no document, not even a service document, for refused spans");
        assert_eq!(refused.out_of_window.iter().map(|o| o.position).collect::<Vec<_>>(), vec![[0, 0, 0], [0, 0, 1]]);
        assert!(refused.out_of_window[0].reason.contains("1970"));
        r.clamp = true;
        let clamped = map(&request, &r, now);
        let indices: Vec<&str> = clamped.docs.iter().map(|d| d.index.as_str()).collect();
        assert_eq!(
            indices,
            vec![
                "jaeger-span-2026-11-22",
                "jaeger-span-2026-11-25",
                "jaeger-service-2026-11-22",
                "jaeger-service-2026-11-25"
            ]
        );
        let doc: Value = serde_json::from_slice(&clamped.docs[0].source).expect("json");
        assert_eq!(doc["startTime"], 1, "the document keeps the span's own start time");
    }

    #[test]
    fn service_document_id_is_jaegers_fnv() {
        let doc = service_document("cart", "GET /cart", "jaeger-service-2026-11-25".into());
        assert_eq!(doc.id, format!("{:x}", fnv64a(&[b"cartGET /cart"])));
        let source: Value = serde_json::from_slice(&doc.source).expect("json");
        assert_eq!(source, json!({"serviceName": "cart", "operationName": "GET /cart"}));
    }
}
