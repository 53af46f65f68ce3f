//! Jaeger spans → OTLP: the mapping rules every Jaeger input shares, whatever its wire form. The
//! collector's Thrift decoder (`collector/src/jaeger.rs`) and the Jaeger protobuf model
//! ([`model`]: Jaeger v1's Kafka records in `jaeger_proto` / `jaeger_json`, which the ingester
//! reads) each read their own bytes into [`SpanParts`], then call [`span`], [`resource_attributes`]
//! and [`event`] here. The rules follow the OpenTelemetry Collector's Jaeger translator
//! (`pkg/translator/jaeger`); docs/inputs.md, "Jaeger Thrift", is their table.
//!
//! Pure functions, no I/O, never panics.

pub mod model;

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{
        Span, Status,
        span::{Event, Link, SpanKind},
        status::StatusCode,
    },
};

/// Bounds on what one batch (or one Kafka record) may hold. The defaults are well above what Jaeger
/// clients send (their UDP datagrams are at most 65 000 bytes; their HTTP batches a few MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Spans per batch; more refuses the whole batch. Default 10 000.
    pub max_spans: usize,
    /// Tags per span, per log and per process; more refuses the span (the batch, for a Thrift
    /// batch's process). Default 1 024.
    pub max_tags: usize,
    /// Logs per span; more refuses the span. Default 1 024.
    pub max_logs: usize,
    /// References per span; more refuses the span. Default 128.
    pub max_references: usize,
    /// Bytes of one string or binary value (names, tag keys and values); more refuses the span (the
    /// batch, for a Thrift batch's process). Default 64 KiB.
    pub max_string_bytes: usize,
    /// Thrift structs and collections nested in one another, the batch counting as one; deeper
    /// refuses the batch. The known structs nest four deep (batch, span, log, tag; five under
    /// `emitBatch`'s arguments); the rest is room for unknown fields, which are skipped. Default 32.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_spans: 10_000,
            max_tags: 1024,
            max_logs: 1024,
            max_references: 128,
            max_string_bytes: 64 * 1024,
            max_depth: 32,
        }
    }
}

/// `SpanRef.refType` (the same numbers in Thrift and protobuf), and the link attribute that keeps it.
pub const CHILD_OF: i32 = 0;
pub const FOLLOWS_FROM: i32 = 1;
pub const REF_TYPE: &str = "opentracing.ref_type";

/// The sampled bit of Jaeger's `flags`, and of OTLP's W3C trace flags.
const SAMPLED: u32 = 1;

/// A span reference, with the ids as Jaeger's 64-bit halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    pub kind: i32,
    pub trace_low: i64,
    pub trace_high: i64,
    pub span_id: i64,
}

/// A Jaeger span's fields as read from its wire form, before translation. The attributes and
/// events are already OTLP (each wire form types its tag values its own way).
#[derive(Debug)]
pub struct SpanParts {
    pub trace_low: i64,
    pub trace_high: i64,
    pub span_id: i64,
    /// 0 when the span has none of its own (Thrift's `parentSpanId`; protobuf has only references).
    pub parent_span_id: i64,
    pub name: String,
    pub references: Vec<Reference>,
    pub flags: u32,
    /// Start and end in nanoseconds since the epoch, or why they cannot be (checked after the ids).
    pub times: Result<(u64, u64), String>,
    pub attributes: Vec<KeyValue>,
    pub events: Vec<Event>,
}

/// A read span → an OTLP span, or why it cannot be one:
/// - ids: 64-bit halves, big-endian, high half first (a 64-bit id has a zero high half); an
///   all-zero trace or span id refuses the span;
/// - parent: `parent_span_id` if not 0; else, among references to the same trace, the first
///   CHILD_OF, else the first FOLLOWS_FROM (as Jaeger's own model infers it); other references
///   become links that keep their type in `opentracing.ref_type`;
/// - `span.kind` tag → kind (removed); `error`, `otel.status_code`, `http.status_code` → status
///   ([`status`]); flags → the sampled bit.
pub fn span(s: SpanParts) -> Result<Span, String> {
    if s.trace_low == 0 && s.trace_high == 0 {
        return Err("trace id is all zeros".into());
    }
    if s.span_id == 0 {
        return Err("span id is all zeros".into());
    }
    let (start_time_unix_nano, end_time_unix_nano) = s.times.clone()?;
    let parent = parent_span_id(&s);
    let mut attributes = s.attributes;
    let kind = match take(&mut attributes, "span.kind").as_ref().map(str_of) {
        Some("client") => SpanKind::Client,
        Some("server") => SpanKind::Server,
        Some("producer") => SpanKind::Producer,
        Some("consumer") => SpanKind::Consumer,
        Some("internal") => SpanKind::Internal,
        _ => SpanKind::Unspecified,
    };
    let status = status(&mut attributes, kind);
    let links = s
        .references
        .iter()
        .filter(|r| !(r.kind == CHILD_OF && r.span_id == parent))
        .map(|r| Link {
            trace_id: trace_id(r.trace_high, r.trace_low),
            span_id: r.span_id.to_be_bytes().to_vec(),
            attributes: vec![kv(REF_TYPE, Value::StringValue(ref_type(r.kind).into()))],
            ..Default::default()
        })
        .collect();
    Ok(Span {
        trace_id: trace_id(s.trace_high, s.trace_low),
        span_id: s.span_id.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 { Vec::new() } else { parent.to_be_bytes().to_vec() },
        flags: s.flags & SAMPLED,
        name: s.name,
        kind: kind as i32,
        start_time_unix_nano,
        end_time_unix_nano,
        attributes,
        events: s.events,
        links,
        status,
        ..Default::default()
    })
}

/// A process → resource attributes: `service.name` (if not empty), the tags, then `hostname` →
/// `host.name` and `jaeger.version` → `opencensus.exporterversion` = `Jaeger-<version>` (unless
/// the target key is already there), as the OpenTelemetry translator does.
pub fn resource_attributes(service: String, mut tags: Vec<KeyValue>) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(tags.len() + 1);
    if !service.is_empty() {
        attributes.push(kv("service.name", Value::StringValue(service)));
    }
    attributes.append(&mut tags);
    if !has(&attributes, "host.name")
        && let Some(hostname) = take(&mut attributes, "hostname")
    {
        attributes.push(KeyValue { key: "host.name".into(), value: Some(hostname), ..Default::default() });
    }
    if !has(&attributes, "opencensus.exporterversion")
        && let Some(version) = take(&mut attributes, "jaeger.version")
    {
        let version = format!("Jaeger-{}", str_of(&version));
        attributes.push(kv("opencensus.exporterversion", Value::StringValue(version)));
    }
    attributes
}

/// A log → an event at its time, named by its `event` field if that is a string (then removed, as
/// the OpenTelemetry translator does), the other fields as attributes.
pub fn event(time_unix_nano: u64, mut fields: Vec<KeyValue>) -> Event {
    let mut name = String::new();
    if matches!(get(&fields, "event"), Some(AnyValue { value: Some(Value::StringValue(_)) }))
        && let Some(AnyValue { value: Some(Value::StringValue(s)) }) = take(&mut fields, "event")
    {
        name = s;
    }
    Event { time_unix_nano, name, attributes: fields, dropped_attributes_count: 0 }
}

/// The value a tag of an unknown value type becomes.
pub fn unknown_type(v_type: i32) -> Value {
    Value::StringValue(format!("<Unknown Jaeger TagType {v_type}>"))
}

/// The parent: see [`span`].
fn parent_span_id(s: &SpanParts) -> i64 {
    if s.parent_span_id != 0 {
        return s.parent_span_id;
    }
    let same_trace = |r: &&Reference| r.trace_low == s.trace_low && r.trace_high == s.trace_high;
    let first = |kind| s.references.iter().filter(same_trace).find(|r| r.kind == kind).map(|r| r.span_id);
    first(CHILD_OF).or_else(|| first(FOLLOWS_FROM)).unwrap_or(0)
}

fn ref_type(kind: i32) -> &'static str {
    if kind == CHILD_OF { "child_of" } else { "follows_from" }
}

/// 16 bytes, big-endian, high half first (a 64-bit id has a zero high half).
pub fn trace_id(high: i64, low: i64) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    id.extend_from_slice(&high.to_be_bytes());
    id.extend_from_slice(&low.to_be_bytes());
    id
}

/// Microseconds since the epoch → nanoseconds, refusing what OTLP's unsigned nanoseconds cannot
/// hold (the translator would wrap a negative time to the year 2554).
pub fn micros_to_nanos(micros: i64) -> Result<u64, String> {
    u64::try_from(micros)
        .map_err(|_| format!("is negative ({micros} µs)"))?
        .checked_mul(1000)
        .ok_or_else(|| format!("is past what nanoseconds since 1970 can hold ({micros} µs)"))
}

/// The span status from its tags, as the OpenTelemetry translator sets it:
/// - `error` = bool true → ERROR (the tag removed), message from `otel.status_description`
///   (removed) or `http.status_message` (kept); `error` = false, or not a bool, is kept as it is;
/// - else `otel.status_code` = `OK`/`ERROR` (any case) → OK/ERROR, anything else → UNSET, message
///   from `otel.status_description` (removed); `otel.status_code` is removed in every case;
/// - else `http.status_code` (an int, or a string of one): 100–398 → no status; 4xx on a SERVER
///   span → no status; anything else (4xx on other kinds, 5xx, 399, <100) → ERROR, message from
///   `http.status_message`;
/// - else no status.
fn status(attributes: &mut Vec<KeyValue>, kind: SpanKind) -> Option<Status> {
    let mut status = None;
    if matches!(get(attributes, "error"), Some(AnyValue { value: Some(Value::BoolValue(true)) })) {
        take(attributes, "error");
        let message = match take(attributes, "otel.status_description") {
            Some(desc) => str_of(&desc).to_owned(),
            None => get(attributes, "http.status_message").map(|m| str_of(m).to_owned()).unwrap_or_default(),
        };
        status = Some(Status { code: StatusCode::Error as i32, message });
    }
    if let Some(code) = take(attributes, "otel.status_code") {
        if status.is_none() {
            let code = match str_of(&code).to_ascii_uppercase().as_str() {
                "OK" => StatusCode::Ok,
                "ERROR" => StatusCode::Error,
                _ => StatusCode::Unset,
            };
            let message =
                take(attributes, "otel.status_description").map(|d| str_of(&d).to_owned()).unwrap_or_default();
            status = Some(Status { code: code as i32, message });
        }
    } else if status.is_none()
        && let Some(http) = get(attributes, "http.status_code").and_then(http_code)
    {
        let error = match http {
            400..=499 => kind != SpanKind::Server,
            100..=398 => false,
            _ => true,
        };
        if error {
            let message = get(attributes, "http.status_message").map(|m| str_of(m).to_owned()).unwrap_or_default();
            status = Some(Status { code: StatusCode::Error as i32, message });
        }
    }
    status
}

fn http_code(value: &AnyValue) -> Option<i64> {
    match &value.value {
        Some(Value::IntValue(code)) => Some(*code),
        Some(Value::StringValue(code)) => code.parse().ok(),
        _ => None,
    }
}

pub fn kv(key: &str, value: Value) -> KeyValue {
    kv_owned(key.to_owned(), value)
}

pub fn kv_owned(key: String, value: Value) -> KeyValue {
    KeyValue { key, value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

/// A string value's text; "" for any other type (as the translator's `Value.Str()`).
fn str_of(value: &AnyValue) -> &str {
    match &value.value {
        Some(Value::StringValue(s)) => s,
        _ => "",
    }
}

fn has(attributes: &[KeyValue], key: &str) -> bool {
    attributes.iter().any(|a| a.key == key)
}

/// The value of the last attribute named `key` (tags given twice: the last one wins, as in the
/// translator's attribute map).
pub fn get<'v>(attributes: &'v [KeyValue], key: &str) -> Option<&'v AnyValue> {
    attributes.iter().rev().find(|a| a.key == key).and_then(|a| a.value.as_ref())
}

/// Removes every attribute named `key`, returning the last one's value.
fn take(attributes: &mut Vec<KeyValue>, key: &str) -> Option<AnyValue> {
    let i = attributes.iter().rposition(|a| a.key == key)?;
    let value = attributes.remove(i).value;
    attributes.retain(|a| a.key != key);
    value
}
