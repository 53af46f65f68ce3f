//! Jaeger's protobuf model (`jaeger.api_v2`, `model.proto`), written from its documented field
//! numbers, and its translation to OTLP. It is what a Jaeger v1 collector writes to Kafka: one
//! [`Span`] per record, in protobuf (`jaeger_proto`, [`decode_proto`]) or in protobuf's JSON
//! mapping as Go's `jsonpb` writes it (`jaeger_json`, [`decode_json`]); each span carries its own
//! [`Process`]. [`to_request`] turns a span into an `ExportTraceServiceRequest` by the rules of
//! [`super`] (the same as for Jaeger Thrift).
//!
//! Guarantees: hostile records are priced before they are decoded ([`proto_cost`], [`json_cost`]:
//! an upper bound of the heap the decoded span and its translation hold); nesting is bounded (the
//! model nests three deep; protobuf groups are refused; JSON under unknown keys is skipped without
//! recursing, and under known keys must have the model's shape);
//! counts past [`Limits`] and ids of the wrong length refuse the record with a reason. Never panics.

use std::mem::size_of;

use base64::Engine as _;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue as OtlpKeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span as OtlpSpan, span::Event, span::Link},
};
use prost::Message as _;
use serde::{Deserialize, Deserializer, de};

use super::{Limits, Reference, SpanParts};

/// `ValueType`: note the order differs from Thrift's `TagType`.
pub const STRING: i32 = 0;
pub const BOOL: i32 = 1;
pub const INT64: i32 = 2;
pub const FLOAT64: i32 = 3;
pub const BINARY: i32 = 4;

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `KeyValue`: a typed tag; the field `v_type` names holds the value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    /// `ValueType` ([`STRING`] … [`BINARY`]).
    #[prost(int32, tag = "2")]
    pub v_type: i32,
    #[prost(string, tag = "3")]
    pub v_str: String,
    #[prost(bool, tag = "4")]
    pub v_bool: bool,
    #[prost(int64, tag = "5")]
    pub v_int64: i64,
    #[prost(double, tag = "6")]
    pub v_float64: f64,
    #[prost(bytes = "vec", tag = "7")]
    pub v_binary: Vec<u8>,
}

/// `Log`: a timestamped set of fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Log {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "2")]
    pub fields: Vec<KeyValue>,
}

/// `SpanRef`: a 16-byte trace id, an 8-byte span id, and `SpanRefType` (CHILD_OF 0, FOLLOWS_FROM 1).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SpanRef {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(int32, tag = "3")]
    pub ref_type: i32,
}

/// `Process`: the service that emitted a span.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Process {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(message, repeated, tag = "2")]
    pub tags: Vec<KeyValue>,
}

/// `Span`. Ids are big-endian bytes: 16 for the trace, 8 for the span.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub operation_name: String,
    #[prost(message, repeated, tag = "4")]
    pub references: Vec<SpanRef>,
    #[prost(uint32, tag = "5")]
    pub flags: u32,
    #[prost(message, optional, tag = "6")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub duration: Option<Duration>,
    #[prost(message, repeated, tag = "8")]
    pub tags: Vec<KeyValue>,
    #[prost(message, repeated, tag = "9")]
    pub logs: Vec<Log>,
    #[prost(message, optional, tag = "10")]
    pub process: Option<Process>,
    #[prost(string, tag = "11")]
    pub process_id: String,
    #[prost(string, repeated, tag = "12")]
    pub warnings: Vec<String>,
}

/// `Batch`: spans and the process they share unless a span has its own (`PostSpans`' request).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Batch {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<Span>,
    #[prost(message, optional, tag = "2")]
    pub process: Option<Process>,
}

/// Why a record is not a span this module can translate. Every message starts with the encoding's
/// name (`jaeger_proto: ` / `jaeger_json: `), so a dead letter says which decoder refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("jaeger_proto: {0}")]
    Proto(String),
    #[error("jaeger_json: {0}")]
    Json(String),
}

/// A `jaeger_proto` record → the span, priced first by [`proto_cost`] (whose wire errors it
/// reports) and decoded by prost (UTF-8 checked, nesting bounded).
pub fn decode_proto(bytes: &[u8]) -> Result<Span, ModelError> {
    proto_cost(bytes).map_err(ModelError::Proto)?;
    Span::decode(bytes).map_err(|e| ModelError::Proto(e.to_string()))
}

/// A `jaeger_json` record → the span. Keys in jsonpb's camelCase (`traceId`) or the proto names
/// (`trace_id`); ids in base64; 64-bit integers as strings or numbers; enums by name or number;
/// timestamps in RFC 3339, durations as `"1.5s"`. Unknown keys are ignored, as jsonpb does.
pub fn decode_json(bytes: &[u8]) -> Result<Span, ModelError> {
    let span: JsonSpan =
        serde_json::from_slice(bytes).map_err(|e| ModelError::Json(crate::clip::clip(e.to_string())))?;
    span.into_model().map_err(ModelError::Json)
}

// --- Pricing -----------------------------------------------------------------------------------

/// A `Vec` grown by pushing holds up to three times its length at once (see [`crate::otlp::GROWTH`]).
const GROWTH: usize = crate::otlp::GROWTH;

/// The allocator's bookkeeping per heap allocation, and the heap bytes an element may hold beside its
/// struct (its ids, a link's attribute, an `AnyValue`), generously.
const PER_ELEMENT_HEAP: usize = 256;

/// What one tag costs at most once decoded and translated: the model's struct, the OTLP attribute,
/// its boxed value, and the heap beside them.
fn tag_cost() -> usize {
    (size_of::<KeyValue>() + size_of::<OtlpKeyValue>() + size_of::<AnyValue>()) * GROWTH + PER_ELEMENT_HEAP
}

/// A log: the model's `Log` and the OTLP event.
fn log_cost() -> usize {
    (size_of::<Log>() + size_of::<Event>()) * GROWTH + PER_ELEMENT_HEAP
}

/// A reference: the model's `SpanRef`, the parts' `Reference` and the OTLP link with its attribute.
fn reference_cost() -> usize {
    (size_of::<SpanRef>() + size_of::<Reference>() + size_of::<Link>() + size_of::<OtlpKeyValue>()) * GROWTH
        + PER_ELEMENT_HEAP
}

/// A string of a repeated field (a warning).
fn string_cost() -> usize {
    size_of::<String>() * GROWTH + PER_ELEMENT_HEAP
}

/// What any record costs beside its elements: the span, the request around it, and four times its
/// bytes (strings copied from the record and moved into the translation; the request re-encoded;
/// a status message copied from `http.status_message`, which stays as an attribute).
fn fixed_cost(len: usize) -> usize {
    (size_of::<Span>() + size_of::<OtlpSpan>() + size_of::<ResourceSpans>() + size_of::<ScopeSpans>())
        + 4 * PER_ELEMENT_HEAP
        + len.saturating_mul(4)
}

/// Counts of the repeated elements a record holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub tags: usize,
    pub logs: usize,
    pub references: usize,
    pub strings: usize,
}

impl Counts {
    fn cost(self, len: usize) -> usize {
        fixed_cost(len)
            .saturating_add(self.tags.saturating_mul(tag_cost()))
            .saturating_add(self.logs.saturating_mul(log_cost()))
            .saturating_add(self.references.saturating_mul(reference_cost()))
            .saturating_add(self.strings.saturating_mul(string_cost()))
    }
}

/// The most heap bytes decoding and translating a `jaeger_proto` record holds, read from its wire
/// form without decoding it: every tag, log, reference and warning counted. An error for bytes that
/// are not a well-formed message of the model's shape (a length past the end, a bad varint, a
/// group, a wire type that does not fit a known field).
pub fn proto_cost(bytes: &[u8]) -> Result<usize, String> {
    let mut counts = Counts::default();
    walk(bytes, &mut |number, field| {
        match (number, field) {
            (4, Wire::Len(_)) => counts.references += 1,
            (8, Wire::Len(_)) => counts.tags += 1,
            (12, Wire::Len(_)) => counts.strings += 1,
            (9, Wire::Len(log)) => {
                counts.logs += 1;
                walk(log, &mut |n, f| {
                    if let (2, Wire::Len(_)) = (n, f) {
                        counts.tags += 1;
                    }
                    Ok(())
                })?;
            }
            (10, Wire::Len(process)) => walk(process, &mut |n, f| {
                if let (2, Wire::Len(_)) = (n, f) {
                    counts.tags += 1;
                }
                Ok(())
            })?,
            (1..=4 | 8..=12, Wire::Other) => return Err(format!("field {number} has the wrong wire type")),
            _ => {}
        }
        Ok(())
    })?;
    Ok(counts.cost(bytes.len()))
}

/// One field's value as the walk sees it.
enum Wire<'a> {
    Len(&'a [u8]),
    Other,
}

/// Calls `f` with each field of one message; unknown fields are passed too (and ignored by the
/// callers). Groups (wire types 3 and 4, which no Jaeger writer uses) are refused.
fn walk<'a>(mut bytes: &'a [u8], f: &mut dyn FnMut(u64, Wire<'a>) -> Result<(), String>) -> Result<(), String> {
    while !bytes.is_empty() {
        let key = crate::otlp::varint(&mut bytes)?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 {
            return Err("field number 0".into());
        }
        match wire {
            0 => {
                crate::otlp::varint(&mut bytes)?;
                f(number, Wire::Other)?;
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                bytes = bytes.get(n..).ok_or("a fixed-width value runs past the end")?;
                f(number, Wire::Other)?;
            }
            2 => {
                let len = usize::try_from(crate::otlp::varint(&mut bytes)?).map_err(|_| "a length past the end")?;
                if len > bytes.len() {
                    return Err(format!("a length of {len} bytes runs past the end ({} left)", bytes.len()));
                }
                let (value, rest) = bytes.split_at(len);
                bytes = rest;
                f(number, Wire::Len(value))?;
            }
            _ => return Err(format!("wire type {wire} (groups are not part of the model)")),
        }
    }
    Ok(())
}

/// The most heap bytes decoding and translating a `jaeger_json` record holds: every object (a tag,
/// log, reference, process …) and every array counted as the costliest element (serde reads a
/// struct from an array too, so `[]` where a tag is expected is an empty tag), every string that
/// is not a key as an element of a repeated field, without decoding anything (a scan for `{`,
/// `[`, `"` and `:` outside strings).
pub fn json_cost(bytes: &[u8]) -> usize {
    let (mut objects, mut strings, mut keys) = (0usize, 0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    // A string has just closed (whitespace aside): a `:` now makes it a key, once.
    let mut after_string = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                after_string = true;
            }
            continue;
        }
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        if b == b':' && after_string {
            // The string before it was a key: read into a field name, never kept.
            keys += 1;
        }
        after_string = false;
        match b {
            b'"' => {
                in_string = true;
                strings += 1;
            }
            b'{' | b'[' => objects += 1,
            _ => {}
        }
    }
    let strings = strings.saturating_sub(keys);
    let element = tag_cost().max(log_cost()).max(reference_cost());
    Counts { tags: 0, logs: 0, references: 0, strings }
        .cost(bytes.len())
        .saturating_add(objects.saturating_mul(element))
}

// --- Translation -------------------------------------------------------------------------------

/// One span → a request of one resource (its process) holding it, by [`super::span`]'s rules.
/// Refused with a reason: counts past `limits`, a string or binary value past
/// `limits.max_string_bytes`, ids not 16 / 8 bytes or all zeros, a missing or negative start time,
/// a negative duration, a time past what `u64` nanoseconds hold.
pub fn to_request(mut span: Span, limits: &Limits) -> Result<ExportTraceServiceRequest, String> {
    let attributes = match span.process.take() {
        Some(p) => resource(p, limits)?,
        None => Vec::new(),
    };
    let span = to_span(span, limits)?;
    Ok(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes, ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            ..Default::default()
        }],
    })
}

/// A process → resource attributes ([`super::resource_attributes`]).
pub fn resource(process: Process, limits: &Limits) -> Result<Vec<OtlpKeyValue>, String> {
    check_len(process.service_name.len(), "process.serviceName", limits)?;
    let tags = tags(process.tags, "process tags", limits)?;
    Ok(super::resource_attributes(process.service_name, tags))
}

/// One span (its process aside) → an OTLP span.
pub fn to_span(span: Span, limits: &Limits) -> Result<OtlpSpan, String> {
    let trace = trace_halves(&span.trace_id, "trace id")?;
    let span_id = span_half(&span.span_id, "span id")?;
    check_len(span.operation_name.len(), "operationName", limits)?;
    if span.references.len() > limits.max_references {
        let max = limits.max_references;
        return Err(format!("{} references, more than the limit of {max}", span.references.len()));
    }
    if span.logs.len() > limits.max_logs {
        let max = limits.max_logs;
        return Err(format!("{} logs, more than the limit of {max}", span.logs.len()));
    }
    let mut references = Vec::with_capacity(span.references.len());
    for r in &span.references {
        let (trace_high, trace_low) = trace_halves(&r.trace_id, "a reference's trace id")?;
        let span_id = span_half(&r.span_id, "a reference's span id")?;
        references.push(Reference { kind: r.ref_type, trace_low, trace_high, span_id });
    }
    let attributes = tags(span.tags, "span tags", limits)?;
    let mut events = Vec::with_capacity(span.logs.len());
    for log in span.logs {
        let time = log.timestamp.ok_or("a log has no timestamp")?;
        let time = nanos(time.seconds, time.nanos).map_err(|why| format!("a log timestamp {why}"))?;
        events.push(super::event(time, tags(log.fields, "log fields", limits)?));
    }
    let times = match span.start_time {
        None => Err("startTime is missing".to_owned()),
        Some(start) => nanos(start.seconds, start.nanos).map_err(|why| format!("startTime {why}")).and_then(|start| {
            let d = span.duration.unwrap_or_default();
            if d.seconds < 0 || d.nanos < 0 {
                return Err(format!("duration is negative ({}s {}ns)", d.seconds, d.nanos));
            }
            let d = nanos(d.seconds, d.nanos).map_err(|why| format!("duration {why}"))?;
            let end = start.checked_add(d).ok_or("startTime + duration overflows")?;
            Ok((start, end))
        }),
    };
    super::span(SpanParts {
        trace_low: trace.1,
        trace_high: trace.0,
        span_id,
        parent_span_id: 0,
        name: span.operation_name,
        references,
        flags: span.flags,
        times,
        attributes,
        events,
    })
}

/// Seconds and nanoseconds since the epoch (or of a duration) → nanoseconds, refusing negative
/// values, nanoseconds outside 0..1e9, and what `u64` cannot hold.
fn nanos(seconds: i64, nanos: i32) -> Result<u64, String> {
    let s = u64::try_from(seconds).map_err(|_| format!("is negative ({seconds}s)"))?;
    let n = u32::try_from(nanos).ok().filter(|&n| n < 1_000_000_000).ok_or(format!("has {nanos} nanoseconds"))?;
    s.checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(u64::from(n)))
        .ok_or_else(|| format!("is past what nanoseconds since 1970 can hold ({seconds}s)"))
}

/// A 16-byte trace id → (high, low); empty is all zeros (refused by [`super::span`]).
fn trace_halves(id: &[u8], what: &str) -> Result<(i64, i64), String> {
    match id.len() {
        0 => Ok((0, 0)),
        16 => {
            let (high, low) = id.split_at(8);
            Ok((half(high), half(low)))
        }
        n => Err(format!("{what} holds {n} bytes, not 16")),
    }
}

/// An 8-byte span id; empty is all zeros.
fn span_half(id: &[u8], what: &str) -> Result<i64, String> {
    match id.len() {
        0 => Ok(0),
        8 => Ok(half(id)),
        n => Err(format!("{what} holds {n} bytes, not 8")),
    }
}

/// Eight big-endian bytes (the callers check the length).
fn half(bytes: &[u8]) -> i64 {
    <[u8; 8]>::try_from(bytes).map_or(0, i64::from_be_bytes)
}

fn check_len(len: usize, what: &str, limits: &Limits) -> Result<(), String> {
    if len > limits.max_string_bytes {
        return Err(format!("{what} holds {len} bytes, more than the limit of {}", limits.max_string_bytes));
    }
    Ok(())
}

/// Tags → typed attributes: the value of the field `v_type` names; an unknown type becomes the
/// string `<Unknown Jaeger TagType N>`.
fn tags(tags: Vec<KeyValue>, what: &str, limits: &Limits) -> Result<Vec<OtlpKeyValue>, String> {
    if tags.len() > limits.max_tags {
        return Err(format!("{what}: {} tags, more than the limit of {}", tags.len(), limits.max_tags));
    }
    tags.into_iter()
        .map(|t| {
            check_len(t.key.len(), "a tag key", limits)?;
            let value = match t.v_type {
                STRING => {
                    check_len(t.v_str.len(), "a tag's vStr", limits)?;
                    Value::StringValue(t.v_str)
                }
                BOOL => Value::BoolValue(t.v_bool),
                INT64 => Value::IntValue(t.v_int64),
                FLOAT64 => Value::DoubleValue(t.v_float64),
                BINARY => {
                    check_len(t.v_binary.len(), "a tag's vBinary", limits)?;
                    Value::BytesValue(t.v_binary)
                }
                other => super::unknown_type(other),
            };
            Ok(super::kv_owned(t.key, value))
        })
        .collect()
}

// --- jsonpb ------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan {
    #[serde(default, alias = "trace_id", deserialize_with = "base64_bytes")]
    trace_id: Vec<u8>,
    #[serde(default, alias = "span_id", deserialize_with = "base64_bytes")]
    span_id: Vec<u8>,
    #[serde(default, alias = "operation_name", deserialize_with = "nullable")]
    operation_name: String,
    #[serde(default, deserialize_with = "nullable")]
    references: Vec<JsonRef>,
    #[serde(default, deserialize_with = "uint32")]
    flags: u32,
    #[serde(default, alias = "start_time", deserialize_with = "nullable")]
    start_time: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    duration: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    tags: Vec<JsonKeyValue>,
    #[serde(default, deserialize_with = "nullable")]
    logs: Vec<JsonLog>,
    #[serde(default, deserialize_with = "nullable")]
    process: Option<JsonProcess>,
    #[serde(default, alias = "process_id", deserialize_with = "nullable")]
    process_id: String,
    #[serde(default, deserialize_with = "nullable")]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonRef {
    #[serde(default, alias = "trace_id", deserialize_with = "base64_bytes")]
    trace_id: Vec<u8>,
    #[serde(default, alias = "span_id", deserialize_with = "base64_bytes")]
    span_id: Vec<u8>,
    #[serde(default, alias = "ref_type", deserialize_with = "ref_type")]
    ref_type: i32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonKeyValue {
    #[serde(default, deserialize_with = "nullable")]
    key: String,
    #[serde(default, alias = "v_type", deserialize_with = "value_type")]
    v_type: i32,
    #[serde(default, alias = "v_str", deserialize_with = "nullable")]
    v_str: String,
    #[serde(default, alias = "v_bool", deserialize_with = "nullable")]
    v_bool: bool,
    #[serde(default, alias = "v_int64", deserialize_with = "int64")]
    v_int64: i64,
    #[serde(default, alias = "v_float64", deserialize_with = "float64")]
    v_float64: f64,
    #[serde(default, alias = "v_binary", deserialize_with = "base64_bytes")]
    v_binary: Vec<u8>,
}

#[derive(Deserialize)]
struct JsonLog {
    #[serde(default, deserialize_with = "nullable")]
    timestamp: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    fields: Vec<JsonKeyValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonProcess {
    #[serde(default, alias = "service_name", deserialize_with = "nullable")]
    service_name: String,
    #[serde(default, deserialize_with = "nullable")]
    tags: Vec<JsonKeyValue>,
}

impl JsonSpan {
    fn into_model(self) -> Result<Span, String> {
        let timestamp = |s: Option<String>, what: &str| s.map(|s| parse_timestamp(&s, what)).transpose();
        Ok(Span {
            trace_id: self.trace_id,
            span_id: self.span_id,
            operation_name: self.operation_name,
            references: self
                .references
                .into_iter()
                .map(|r| SpanRef { trace_id: r.trace_id, span_id: r.span_id, ref_type: r.ref_type })
                .collect(),
            flags: self.flags,
            start_time: timestamp(self.start_time, "startTime")?,
            duration: self.duration.map(|d| parse_duration(&d)).transpose()?,
            tags: self.tags.into_iter().map(JsonKeyValue::into_model).collect(),
            logs: self
                .logs
                .into_iter()
                .map(|l| {
                    Ok(Log {
                        timestamp: timestamp(l.timestamp, "a log timestamp")?,
                        fields: l.fields.into_iter().map(JsonKeyValue::into_model).collect(),
                    })
                })
                .collect::<Result<_, String>>()?,
            process: self.process.map(|p| Process {
                service_name: p.service_name,
                tags: p.tags.into_iter().map(JsonKeyValue::into_model).collect(),
            }),
            process_id: self.process_id,
            warnings: self.warnings,
        })
    }
}

impl JsonKeyValue {
    fn into_model(self) -> KeyValue {
        let Self { key, v_type, v_str, v_bool, v_int64, v_float64, v_binary } = self;
        KeyValue { key, v_type, v_str, v_bool, v_int64, v_float64, v_binary }
    }
}

/// RFC 3339 (`2026-12-01T04:00:00.123456789Z`, any offset) → a `Timestamp`.
fn parse_timestamp(text: &str, what: &str) -> Result<Timestamp, String> {
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{what} {:?} is not an RFC 3339 time: {e}", crate::clip::clip(text.to_owned())))?;
    let nanos = i32::try_from(time.timestamp_subsec_nanos()).map_err(|_| format!("{what} has a leap second"))?;
    Ok(Timestamp { seconds: time.timestamp(), nanos })
}

/// jsonpb's duration: decimal seconds with at most nine fractional digits and an `s`
/// (`"0.000123s"`, `"-1.5s"`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("duration {:?} is not seconds such as \"1.5s\"", crate::clip::clip(text.to_owned()));
    let body = text.strip_suffix('s').ok_or_else(bad)?;
    let (negative, body) = match body.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (!fraction.is_empty() && !digits(fraction)) || fraction.len() > 9 || body.ends_with('.') {
        return Err(bad());
    }
    let seconds: i64 = whole.parse().map_err(|_| bad())?;
    let nanos: i32 = if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").parse().map_err(|_| bad())? };
    Ok(if negative { Duration { seconds: -seconds, nanos: -nanos } } else { Duration { seconds, nanos } })
}

/// A JSON string or number, or `null` (jsonpb reads it as the field's default).
enum Scalar {
    Int(i64),
    Uint(u64),
    Float(f64),
    Text(String),
    Null,
}

impl<'de> Deserialize<'de> for Scalar {
    /// By hand, not `#[serde(untagged)]`: an untagged enum buffers the whole value (an array of a
    /// million numbers, say) before trying its variants, holding far more than the record's
    /// price. This visitor has no `visit_seq` or `visit_map`, so an array or object is refused at
    /// its first byte, before anything inside it is read.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string, a number or null")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(i64::try_from(v).map_or(Scalar::Uint(v), Scalar::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Text(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
}

/// jsonpb reads `null` as the field's default: any field of the span may be `null`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn base64_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = Option::<String>::deserialize(d)?.unwrap_or_default();
    let engine = &base64::engine::general_purpose::STANDARD;
    engine
        .decode(&text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&text))
        .map_err(|_| de::Error::custom(format!("{:?} is not base64", crate::clip::clip(text))))
}

fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Scalar::deserialize(d)? {
        Scalar::Int(i) => Ok(i),
        Scalar::Null => Ok(0),
        Scalar::Text(s) => s.parse().map_err(|_| de::Error::custom("an int64 that is not an integer")),
        _ => Err(de::Error::custom("an int64 out of range")),
    }
}

fn uint32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = match Scalar::deserialize(d)? {
        Scalar::Int(i) => i64::try_into(i).ok(),
        Scalar::Null => Some(0),
        Scalar::Uint(u) => u.try_into().ok(),
        Scalar::Text(s) => s.parse().ok(),
        Scalar::Float(_) => None,
    };
    n.ok_or_else(|| de::Error::custom("flags is not a uint32"))
}

fn float64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match Scalar::deserialize(d)? {
        Scalar::Float(f) => Ok(f),
        Scalar::Null => Ok(0.0),
        Scalar::Int(i) => Ok(i as f64),
        Scalar::Uint(u) => Ok(u as f64),
        Scalar::Text(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other.parse().map_err(|_| de::Error::custom("a double that is not a number")),
        },
    }
}

/// An enum by name (from `names`, its number the index) or by number.
fn enumeration<'de, D: Deserializer<'de>>(d: D, names: &[&str], what: &str) -> Result<i32, D::Error> {
    match Scalar::deserialize(d)? {
        Scalar::Int(i) => i32::try_from(i).map_err(|_| de::Error::custom(format!("{what} out of range"))),
        Scalar::Null => Ok(0),
        Scalar::Text(s) => names
            .iter()
            .position(|n| *n == s)
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(|| de::Error::custom(format!("{what} {:?} is not one of {names:?}", crate::clip::clip(s)))),
        _ => Err(de::Error::custom(format!("{what} out of range"))),
    }
}

fn value_type<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    enumeration(d, &["STRING", "BOOL", "INT64", "FLOAT64", "BINARY"], "vType")
}

fn ref_type<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    enumeration(d, &["CHILD_OF", "FOLLOWS_FROM"], "refType")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};

    /// 2024-01-01T00:00:00Z.
    const START_S: i64 = 1_704_067_200;
    const START_NS: u64 = 1_704_067_200_000_000_000;

    fn key(number: u8, wire: u8) -> u8 {
        number << 3 | wire
    }

    /// A length-delimited field, written by hand (every length here is under 128: one byte).
    fn len(number: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 128);
        let mut out = vec![key(number, 2), payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    const TRACE: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];

    /// A span encoded field by field from model.proto's numbers, not by the derive: this checks the
    /// tags of the structs above, not only that they round-trip.
    fn hand_encoded() -> Vec<u8> {
        let tag = |k: &str, rest: Vec<u8>| len(8, &cat(&[len(1, k.as_bytes()), rest]));
        cat(&[
            len(1, &TRACE),
            len(2, &[0, 0, 0, 0, 0, 0, 0, 9]),
            len(3, b"get"),
            // references: { trace_id, span_id 5 } (ref_type CHILD_OF = 0 left out, as proto3 does)
            len(4, &cat(&[len(1, &TRACE), len(2, &[0, 0, 0, 0, 0, 0, 0, 5])])),
            // references: { trace_id, span_id 6, ref_type FOLLOWS_FROM }
            len(4, &cat(&[len(1, &TRACE), len(2, &[0, 0, 0, 0, 0, 0, 0, 6]), vec![key(3, 0), 1]])),
            vec![key(5, 0), 3],
            // start_time { seconds 1704067200, nanos 123000 }
            len(6, &[0x08, 0x80, 0x81, 0xc8, 0xac, 0x06, 0x10, 0xf8, 0xc0, 0x07]),
            // duration { nanos 1500000 }
            len(7, &[0x10, 0xe0, 0xc6, 0x5b]),
            tag("span.kind", len(3, b"server")),
            tag("n", vec![key(2, 0), 2, key(5, 0), 42]),
            tag("b", vec![key(2, 0), 1, key(4, 0), 1]),
            tag("f", cat(&[vec![key(2, 0), 3, key(6, 1)], 2.5f64.to_le_bytes().to_vec()])),
            tag("x", cat(&[vec![key(2, 0), 4], len(7, &[0, 0xff])])),
            tag("error", vec![key(2, 0), 1, key(4, 0), 1]),
            // logs: { timestamp { seconds, nanos 200000 }, fields: [event = "retry"] }
            len(
                9,
                &cat(&[
                    len(1, &[0x08, 0x80, 0x81, 0xc8, 0xac, 0x06, 0x10, 0xc0, 0x9a, 0x0c]),
                    len(2, &cat(&[len(1, b"event"), len(3, b"retry")])),
                ]),
            ),
            // process: { service_name "svc", tags: [hostname = "h1"] }
            len(10, &cat(&[len(1, b"svc"), len(2, &cat(&[len(1, b"hostname"), len(3, b"h1")]))])),
            len(11, b"p1"),
            len(12, b"w"),
        ])
    }

    /// The same span as Jaeger's `jsonpb.Marshaler{}` writes it: camelCase keys, defaults (STRING,
    /// CHILD_OF) left out, base64 ids, int64 as a string, RFC 3339 times with trailing zeros
    /// trimmed to 3, 6 or 9 digits, the duration in seconds.
    const JSONPB: &str = r#"{"traceId":"AAAAAAAAAAABAgMEBQYHCA==","spanId":"AAAAAAAAAAk=","operationName":"get","references":[{"traceId":"AAAAAAAAAAABAgMEBQYHCA==","spanId":"AAAAAAAAAAU="},{"traceId":"AAAAAAAAAAABAgMEBQYHCA==","spanId":"AAAAAAAAAAY=","refType":"FOLLOWS_FROM"}],"flags":3,"startTime":"2024-01-01T00:00:00.000123Z","duration":"0.001500s","tags":[{"key":"span.kind","vStr":"server"},{"key":"n","vType":"INT64","vInt64":"42"},{"key":"b","vType":"BOOL","vBool":true},{"key":"f","vType":"FLOAT64","vFloat64":2.5},{"key":"x","vType":"BINARY","vBinary":"AP8="},{"key":"error","vType":"BOOL","vBool":true}],"logs":[{"timestamp":"2024-01-01T00:00:00.000200Z","fields":[{"key":"event","vStr":"retry"}]}],"process":{"serviceName":"svc","tags":[{"key":"hostname","vStr":"h1"}]},"processId":"p1","warnings":["w"]}"#;

    fn expected_model() -> Span {
        let kv = |key: &str, v_type, f: fn(&mut KeyValue)| {
            let mut t = KeyValue { key: key.into(), v_type, ..Default::default() };
            f(&mut t);
            t
        };
        let reference = |span: u8, ref_type| SpanRef {
            trace_id: TRACE.to_vec(),
            span_id: vec![0, 0, 0, 0, 0, 0, 0, span],
            ref_type,
        };
        Span {
            trace_id: TRACE.to_vec(),
            span_id: vec![0, 0, 0, 0, 0, 0, 0, 9],
            operation_name: "get".into(),
            references: vec![reference(5, 0), reference(6, 1)],
            flags: 3,
            start_time: Some(Timestamp { seconds: START_S, nanos: 123_000 }),
            duration: Some(Duration { seconds: 0, nanos: 1_500_000 }),
            tags: vec![
                kv("span.kind", STRING, |t| t.v_str = "server".into()),
                kv("n", INT64, |t| t.v_int64 = 42),
                kv("b", BOOL, |t| t.v_bool = true),
                kv("f", FLOAT64, |t| t.v_float64 = 2.5),
                kv("x", BINARY, |t| t.v_binary = vec![0, 0xff]),
                kv("error", BOOL, |t| t.v_bool = true),
            ],
            logs: vec![Log {
                timestamp: Some(Timestamp { seconds: START_S, nanos: 200_000 }),
                fields: vec![kv("event", STRING, |t| t.v_str = "retry".into())],
            }],
            process: Some(Process {
                service_name: "svc".into(),
                tags: vec![kv("hostname", STRING, |t| t.v_str = "h1".into())],
            }),
            process_id: "p1".into(),
            warnings: vec!["w".into()],
        }
    }

    #[test]
    fn hand_encoded_bytes_decode_to_the_model() {
        assert_eq!(decode_proto(&hand_encoded()).unwrap(), expected_model());
        // And the derive writes what model.proto says (fields in number order, as hand-encoded).
        assert_eq!(expected_model().encode_to_vec(), hand_encoded());
    }

    #[test]
    fn jsonpb_as_jaeger_writes_it_decodes_to_the_same_model() {
        assert_eq!(decode_json(JSONPB.as_bytes()).unwrap(), expected_model());
        // Proto field names, numbers for enums and int64, and nulls are read too (jsonpb accepts them).
        let other = JSONPB
            .replace("\"traceId\"", "\"trace_id\"")
            .replace("\"vType\":\"INT64\"", "\"vType\":2")
            .replace("\"vInt64\":\"42\"", "\"vInt64\":42")
            .replace("\"refType\":\"FOLLOWS_FROM\"", "\"refType\":1");
        assert_eq!(decode_json(other.as_bytes()).unwrap(), expected_model());
    }

    fn value(attributes: &[OtlpKeyValue], key: &str) -> Option<Value> {
        super::super::get(attributes, key).and_then(|v| v.value.clone())
    }

    #[test]
    fn a_span_translates_by_the_thrift_rules() {
        let request = to_request(decode_proto(&hand_encoded()).unwrap(), &Limits::default()).unwrap();
        let rs = &request.resource_spans[0];
        let resource = rs.resource.as_ref().unwrap();
        let keys: Vec<&str> = resource.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["service.name", "host.name"]);
        assert_eq!(value(&resource.attributes, "service.name"), Some(Value::StringValue("svc".into())));
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(span.trace_id, TRACE);
        assert_eq!(span.span_id, [0, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(span.parent_span_id, [0, 0, 0, 0, 0, 0, 0, 5], "the first CHILD_OF of the same trace");
        assert_eq!(span.name, "get");
        assert_eq!(span.flags, 1, "the sampled bit alone");
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.start_time_unix_nano, START_NS + 123_000, "nanoseconds kept");
        assert_eq!(span.end_time_unix_nano, START_NS + 123_000 + 1_500_000);
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
        let a = &span.attributes;
        assert_eq!(a.len(), 4, "span.kind and error are taken out: {a:?}");
        assert_eq!(value(a, "n"), Some(Value::IntValue(42)));
        assert_eq!(value(a, "b"), Some(Value::BoolValue(true)));
        assert_eq!(value(a, "f"), Some(Value::DoubleValue(2.5)));
        assert_eq!(value(a, "x"), Some(Value::BytesValue(vec![0, 0xff])));
        assert_eq!(span.links.len(), 1, "the parent is not repeated as a link");
        assert_eq!(span.links[0].span_id, [0, 0, 0, 0, 0, 0, 0, 6]);
        assert_eq!(value(&span.links[0].attributes, REF_TYPE), Some(Value::StringValue("follows_from".into())));
        assert_eq!(span.events.len(), 1);
        assert_eq!((span.events[0].name.as_str(), span.events[0].time_unix_nano), ("retry", START_NS + 200_000));
        assert!(span.events[0].attributes.is_empty());
    }

    use super::super::REF_TYPE;

    fn refused(f: fn(&mut Span)) -> String {
        let mut span = expected_model();
        f(&mut span);
        to_request(span, &Limits::default()).unwrap_err()
    }

    #[test]
    fn spans_that_cannot_be_translated_say_why() {
        assert_eq!(refused(|s| s.trace_id = vec![0; 16]), "trace id is all zeros");
        assert_eq!(refused(|s| s.trace_id.clear()), "trace id is all zeros");
        assert_eq!(refused(|s| s.span_id = vec![0; 8]), "span id is all zeros");
        assert_eq!(refused(|s| s.trace_id = vec![1; 8]), "trace id holds 8 bytes, not 16");
        assert_eq!(refused(|s| s.span_id = vec![1; 16]), "span id holds 16 bytes, not 8");
        assert_eq!(refused(|s| s.references[0].span_id = vec![1]), "a reference's span id holds 1 bytes, not 8");
        assert_eq!(refused(|s| s.start_time = None), "startTime is missing");
        assert_eq!(
            refused(|s| s.start_time = Some(Timestamp { seconds: -1, nanos: 0 })),
            "startTime is negative (-1s)"
        );
        assert_eq!(
            refused(|s| s.start_time = Some(Timestamp { seconds: 1, nanos: 1_000_000_000 })),
            "startTime has 1000000000 nanoseconds"
        );
        assert_eq!(
            refused(|s| s.duration = Some(Duration { seconds: -1, nanos: 0 })),
            "duration is negative (-1s 0ns)"
        );
        assert_eq!(
            refused(|s| s.start_time = Some(Timestamp { seconds: i64::MAX, nanos: 0 })),
            format!("startTime is past what nanoseconds since 1970 can hold ({}s)", i64::MAX)
        );
        assert_eq!(
            refused(|s| s.duration = Some(Duration { seconds: (u64::MAX / 1_000_000_000) as i64, nanos: 0 })),
            "startTime + duration overflows"
        );
        assert_eq!(refused(|s| s.logs[0].timestamp = None), "a log has no timestamp");
        assert_eq!(
            refused(|s| s.tags = vec![KeyValue::default(); 1025]),
            "span tags: 1025 tags, more than the limit of 1024"
        );
        assert_eq!(
            refused(|s| s.references = vec![s.references[0].clone(); 129]),
            "129 references, more than the limit of 128"
        );
        assert_eq!(refused(|s| s.logs = vec![s.logs[0].clone(); 1025]), "1025 logs, more than the limit of 1024");
        let small = Limits { max_string_bytes: 2, ..Limits::default() };
        assert_eq!(
            to_request(expected_model(), &small).unwrap_err(),
            "process.serviceName holds 3 bytes, more than the limit of 2"
        );
        // An unknown value type is kept as a string saying so; no process, no resource attributes.
        let mut span = expected_model();
        span.tags = vec![KeyValue { key: "odd".into(), v_type: 9, ..Default::default() }];
        span.process = None;
        let request = to_request(span, &Limits::default()).unwrap();
        let rs = &request.resource_spans[0];
        assert_eq!(rs.resource.as_ref().unwrap().attributes, []);
        let attributes = &rs.scope_spans[0].spans[0].attributes;
        assert_eq!(value(attributes, "odd"), Some(Value::StringValue("<Unknown Jaeger TagType 9>".into())));
    }

    #[test]
    fn malformed_records_are_errors_that_name_the_encoding() {
        let bytes = hand_encoded();
        for cut in 1..bytes.len() {
            // Every prefix either decodes (it ends on a field boundary) or is an error; never a panic.
            if let Err(e) = decode_proto(&bytes[..cut]) {
                assert!(e.to_string().starts_with("jaeger_proto: "), "{e}");
            }
        }
        assert_eq!(
            decode_proto(&[key(3, 2), 100, b'a']).unwrap_err().to_string(),
            "jaeger_proto: a length of 100 bytes runs past the end (1 left)"
        );
        assert_eq!(
            decode_proto(&[key(1, 3), key(1, 4)]).unwrap_err().to_string(),
            "jaeger_proto: wire type 3 (groups are not part of the model)"
        );
        assert_eq!(
            decode_proto(&[key(8, 0), 1]).unwrap_err().to_string(),
            "jaeger_proto: field 8 has the wrong wire type"
        );
        assert!(decode_proto(&len(3, &[0xff])).unwrap_err().to_string().starts_with("jaeger_proto: "), "not UTF-8");
        for (json, why) in [
            ("{", "EOF"),
            (r#"{"traceId":"not base64!"}"#, "is not base64"),
            (r#"{"tags":[{"vType":"LONG"}]}"#, "vType \"LONG\" is not one of"),
            (r#"{"startTime":"yesterday"}"#, "startTime \"yesterday\" is not an RFC 3339 time"),
            (r#"{"duration":"5ms"}"#, "is not seconds"),
            (r#"{"duration":"1.0000000001s"}"#, "is not seconds"),
            (r#"{"flags":-1}"#, "flags is not a uint32"),
            ("42", "expected struct"),
        ] {
            let e = decode_json(json.as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with("jaeger_json: ") && e.contains(why), "{json}: {e}");
        }
        // Deep nesting under an unknown key is skipped without recursing (serde_json ignores a
        // value iteratively); under a known key it is refused at the first level that is not the
        // model's shape.
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(decode_json(deep.as_bytes()).unwrap(), Span::default());
        let deep = format!("{{\"tags\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let e = decode_json(deep.as_bytes()).unwrap_err().to_string();
        assert!(e.starts_with("jaeger_json: invalid type: sequence"), "{e}");
    }

    #[test]
    fn durations_and_times_in_jsonpb_form() {
        assert_eq!(parse_duration("0.000123s").unwrap(), Duration { seconds: 0, nanos: 123_000 });
        assert_eq!(parse_duration("3s").unwrap(), Duration { seconds: 3, nanos: 0 });
        assert_eq!(parse_duration("-1.5s").unwrap(), Duration { seconds: -1, nanos: -500_000_000 });
        assert_eq!(parse_duration("1.000000001s").unwrap(), Duration { seconds: 1, nanos: 1 });
        for bad in ["", "s", "1", ".5s", "1.s", "1.5 s", "+1s", "1e3s", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let t = |s| parse_timestamp(s, "t").unwrap();
        assert_eq!(t("2024-01-01T00:00:00Z"), Timestamp { seconds: START_S, nanos: 0 });
        assert_eq!(t("2024-01-01T00:00:00.5Z"), Timestamp { seconds: START_S, nanos: 500_000_000 });
        assert_eq!(t("2024-01-01T01:00:00.000000001+01:00"), Timestamp { seconds: START_S, nanos: 1 });
    }

    #[test]
    fn costs_count_every_element_and_bound_the_json_scan() {
        let base = proto_cost(&[]).unwrap();
        let one_tag = proto_cost(&len(8, &[])).unwrap();
        assert_eq!(one_tag - base, tag_cost() + 4 * 2, "one tag and its two bytes");
        let log_with_two_fields = proto_cost(&len(9, &cat(&[len(2, &[]), len(2, &[])]))).unwrap();
        assert_eq!(log_with_two_fields - base, log_cost() + 2 * tag_cost() + 4 * 6);
        let process = proto_cost(&len(10, &len(2, &[]))).unwrap();
        assert_eq!(process - base, tag_cost() + 4 * 4);
        assert_eq!(proto_cost(&len(4, &[])).unwrap() - base, reference_cost() + 4 * 2);
        assert_eq!(proto_cost(&len(12, &[])).unwrap() - base, string_cost() + 4 * 2);
        // Unknown fields cost only their bytes.
        assert_eq!(proto_cost(&len(15, &[1, 2])).unwrap() - base, 4 * 4);
        // JSON: braces inside strings are not objects.
        assert_eq!(json_cost(br#"{"a":"{{{{"}"#), json_cost(br#"{"a":"xxxx"}"#));
        assert!(json_cost(br#"{"a":[{},{}]}"#) > json_cost(br#"{"a":["x","y"]}"#));
        // A key is read into a field name, not kept: only value strings are priced.
        assert!(json_cost(br#"{"a":1}"#) < json_cost(br#"{"a":"1"}"#));
        // Only a `:` right after a string (whitespace aside) makes it a key, once: stray colons
        // do not make value strings free.
        let one = json_cost(br#"["x"]"#);
        assert_eq!(json_cost(br#"["x",:::]"#) - one, 4 * 4, "the colons' bytes only");
        assert_eq!(json_cost(br#"["x","y"::]"#) - one, 6 * 4, "one key at most");
        assert_eq!(json_cost(br#"{"a" : "x"}"#), json_cost(br#"{"a":"x"}"#) + 2 * 4);
        // An array is priced as an element: serde reads a tag from `[]` as from `{}`.
        assert_eq!(json_cost(br#"[[]]"#), json_cost(br#"[{}]"#));
    }

    #[test]
    fn nulls_read_as_defaults() {
        let nulls = r#"{"traceId":"AAAAAAAAAAABAgMEBQYHCA==","spanId":"AAAAAAAAAAk=","operationName":null,
            "references":null,"flags":null,"startTime":"2024-01-01T00:00:00Z","duration":null,
            "tags":[{"key":null,"vType":null,"vStr":null,"vBool":null,"vInt64":null,"vFloat64":null,"vBinary":null}],
            "logs":[{"timestamp":null,"fields":null}],"process":{"serviceName":null,"tags":null},
            "processId":null,"warnings":null}"#;
        let span = decode_json(nulls.as_bytes()).unwrap();
        let expected = Span {
            trace_id: TRACE.to_vec(),
            span_id: vec![0, 0, 0, 0, 0, 0, 0, 9],
            start_time: Some(Timestamp { seconds: START_S, nanos: 0 }),
            tags: vec![KeyValue::default()],
            logs: vec![Log::default()],
            process: Some(Process::default()),
            ..Default::default()
        };
        assert_eq!(span, expected);
        let all_null = r#"{"traceId":null,"spanId":null,"references":[{"traceId":null,"spanId":null,"refType":null}],"process":null}"#;
        let span = decode_json(all_null.as_bytes()).unwrap();
        assert_eq!(span.references, vec![SpanRef::default()]);
    }

    #[test]
    fn arrays_where_a_scalar_is_expected_are_refused() {
        for text in [r#"{"flags":[1,2]}"#, r#"{"tags":[{"vInt64":[1]}]}"#, r#"{"tags":[{"vType":{"a":1}}]}"#] {
            let error = decode_json(text.as_bytes()).unwrap_err().to_string();
            assert!(error.contains("a string, a number or null"), "{text}: {error}");
        }
    }
}
