//! `jaeger`: Jaeger Thrift spans → an OTLP `ExportTraceServiceRequest`, a pure translation (no I/O).
//!
//! Input: a `jaeger.thrift` `Batch` in the Thrift BINARY protocol (the body of `POST /api/traces`,
//! [`batch_from_binary`]), or the Jaeger agent's `Agent.emitBatch` message (a UDP datagram, COMPACT
//! on 6831, [`emit_batch_from_compact`], or BINARY on 6832, [`emit_batch_from_binary`]). No
//! listener calls it yet: a receiver will hand it each body or datagram and send the request on to
//! `limit → process → encode` like an OTLP one. The mapping follows the OpenTelemetry Collector's
//! Jaeger translator (`pkg/translator/jaeger`); docs/inputs.md, "Jaeger Thrift", is its table.
//!
//! Guarantees:
//! - Hostile input is bounded before it costs anything: the decoder ([`thrift`]) checks every length
//!   and collection size against the bytes left, and bounds nesting by [`Limits::max_depth`]. A span
//!   list longer than [`Limits::max_spans`] is refused at its header. What is allocated is the
//!   translated request itself (at most a few dozen times the input's size) and nothing per span
//!   beyond it: spans are translated one by one as they are read.
//! - A body that is not valid Thrift for these structs (truncated, unknown type codes, a required
//!   field missing, a process that breaks a limit, too many spans, too deep) is a [`JaegerError`]:
//!   nothing of it is kept.
//! - A span that is valid Thrift but cannot be translated (a zero trace or span id, a negative or
//!   overflowing time, more tags, logs or references than the limits, a string over
//!   [`Limits::max_string_bytes`] or not UTF-8) is [`Refused`] alone, with its index and a reason;
//!   the other spans of the batch are kept.
//! - Never panics.

pub mod thrift;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event},
};
pub use spanline_common::jaeger::Limits;
use spanline_common::jaeger::{Reference, SpanParts, event, kv_owned, micros_to_nanos, span, unknown_type};

use thrift::{Protocol, Reader, ThriftError, Type};

/// Why a whole batch is refused. Every message starts with `jaeger thrift: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JaegerError {
    /// The bytes are not valid Thrift.
    #[error("jaeger thrift: {0}")]
    Thrift(#[from] ThriftError),
    /// A field the IDL marks `required` is absent.
    #[error("jaeger thrift: {strukt} has no {field} (a required field)")]
    Missing { strukt: &'static str, field: &'static str },
    /// A list of known structs holds another element type.
    #[error("jaeger thrift: {field} is a list of {found:?}, not of structs")]
    ElementType { field: &'static str, found: Type },
    /// The message is not a call of `emitBatch`.
    #[error("jaeger thrift: message {name:?} is not emitBatch")]
    NotEmitBatch { name: String },
    /// The message type is neither CALL nor ONEWAY.
    #[error("jaeger thrift: message type {0} is neither CALL (1) nor ONEWAY (4)")]
    MessageType(u8),
    /// More spans than [`Limits::max_spans`].
    #[error("jaeger thrift: the batch holds {size} spans, more than the limit of {max}")]
    TooManySpans { size: usize, max: usize },
    /// The batch's process cannot be translated (a limit, or a string not UTF-8).
    #[error("jaeger thrift: process refused: {0}")]
    Process(String),
}

/// The collector's classification, for the receiver that will call this: too many spans is over a
/// count limit (413, `RESOURCE_EXHAUSTED`), anything else a malformed request (400,
/// `INVALID_ARGUMENT`); none is retryable.
impl From<JaegerError> for crate::error::Error {
    fn from(error: JaegerError) -> Self {
        match error {
            JaegerError::TooManySpans { .. } => crate::error::Error::OverLimit(error.to_string()),
            other => crate::error::Error::Malformed(other.to_string()),
        }
    }
}

pub use crate::translate::{Refused, Translated};

/// A bare `Batch` struct in the Thrift binary protocol: the body of `POST /api/traces`
/// (`Content-Type: application/x-thrift`).
pub fn batch_from_binary(body: &[u8], limits: &Limits) -> Result<Translated, JaegerError> {
    Decoder::new(body, Protocol::Binary, limits).batch()
}

/// An `Agent.emitBatch` message in the Thrift compact protocol (a datagram on UDP 6831).
pub fn emit_batch_from_compact(datagram: &[u8], limits: &Limits) -> Result<Translated, JaegerError> {
    Decoder::new(datagram, Protocol::Compact, limits).emit_batch()
}

/// An `Agent.emitBatch` message in the Thrift binary protocol (a datagram on UDP 6832).
pub fn emit_batch_from_binary(datagram: &[u8], limits: &Limits) -> Result<Translated, JaegerError> {
    Decoder::new(datagram, Protocol::Binary, limits).emit_batch()
}

/// `Tag.vType`.
const STRING: i32 = 0;
const DOUBLE: i32 = 1;
const BOOL: i32 = 2;
const LONG: i32 = 3;
const BINARY: i32 = 4;

/// A span's fields as read, before translation.
#[derive(Debug, Default)]
struct RawSpan {
    trace_low: Option<i64>,
    trace_high: Option<i64>,
    span_id: Option<i64>,
    parent_span_id: Option<i64>,
    name: Option<String>,
    references: Vec<Reference>,
    flags: Option<i32>,
    start: Option<i64>,
    duration: Option<i64>,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
}

/// Reads one body. `refusal` is the first reason the span being read cannot be kept: once set,
/// the rest of the span is still read (to find the next one) but no longer kept.
struct Decoder<'a, 'l> {
    r: Reader<'a>,
    limits: &'l Limits,
    refusal: Option<String>,
}

impl<'a, 'l> Decoder<'a, 'l> {
    fn new(bytes: &'a [u8], protocol: Protocol, limits: &'l Limits) -> Self {
        Self { r: Reader::new(bytes, protocol, limits.max_depth), limits, refusal: None }
    }

    fn refuse(&mut self, reason: impl FnOnce() -> String) {
        if self.refusal.is_none() {
            self.refusal = Some(reason());
        }
    }

    /// The message header, then the arguments struct, whose field 1 is the batch. Bytes after the
    /// message are ignored, as Thrift servers do.
    fn emit_batch(mut self) -> Result<Translated, JaegerError> {
        let message = self.r.message()?;
        if message.name != b"emitBatch" {
            let name: String = String::from_utf8_lossy(message.name).chars().take(64).collect();
            return Err(JaegerError::NotEmitBatch { name });
        }
        if message.kind != thrift::CALL && message.kind != thrift::ONEWAY {
            return Err(JaegerError::MessageType(message.kind));
        }
        self.r.enter()?;
        let mut batch = None;
        let mut last = 0;
        while let Some((ty, id)) = self.r.field(&mut last)? {
            match (id, ty) {
                (1, Type::Struct) => batch = Some(self.batch()?),
                _ => self.r.skip(ty)?,
            }
        }
        self.r.leave();
        batch.ok_or(JaegerError::Missing { strukt: "emitBatch arguments", field: "batch" })
    }

    /// `Batch { 1: required Process process, 2: required list<Span> spans }`. A field given twice
    /// (which Thrift writers never do): the last process wins, the span lists add up.
    fn batch(&mut self) -> Result<Translated, JaegerError> {
        self.r.enter()?;
        let (mut process, mut seen_spans) = (None, false);
        let (mut spans, mut refused, mut index) = (Vec::new(), Vec::new(), 0usize);
        let mut last = 0;
        while let Some((ty, id)) = self.r.field(&mut last)? {
            match (id, ty) {
                (1, Type::Struct) => process = Some(self.process()?),
                (2, Type::List) => {
                    seen_spans = true;
                    self.spans(&mut spans, &mut refused, &mut index)?;
                }
                _ => self.r.skip(ty)?,
            }
        }
        self.r.leave();
        let attributes = process.ok_or(JaegerError::Missing { strukt: "Batch", field: "process" })?;
        if !seen_spans {
            return Err(JaegerError::Missing { strukt: "Batch", field: "spans" });
        }
        let scope_spans = if spans.is_empty() { Vec::new() } else { vec![ScopeSpans { spans, ..Default::default() }] };
        let resource = Resource { attributes, ..Default::default() };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans { resource: Some(resource), scope_spans, ..Default::default() }],
        };
        Ok(Translated { request, refused })
    }

    /// A list header whose elements must be structs.
    fn struct_list(&mut self, field: &'static str) -> Result<usize, JaegerError> {
        let (ty, size) = self.r.list()?;
        if ty != Type::Struct {
            return Err(JaegerError::ElementType { field, found: ty });
        }
        Ok(size)
    }

    /// `Process { 1: required string serviceName, 2: optional list<Tag> tags }` → resource
    /// attributes ([`spanline_common::jaeger::resource_attributes`]).
    fn process(&mut self) -> Result<Vec<KeyValue>, JaegerError> {
        self.r.enter()?;
        self.refusal = None;
        let (mut service, mut tags) = (None, Vec::new());
        let mut last = 0;
        while let Some((ty, id)) = self.r.field(&mut last)? {
            match (id, ty) {
                (1, Type::Binary) => {
                    let bytes = self.r.binary()?;
                    service = Some(self.string(bytes, "process.serviceName"));
                }
                (2, Type::List) => self.tags(&mut tags, "process tags")?,
                _ => self.r.skip(ty)?,
            }
        }
        self.r.leave();
        if let Some(reason) = self.refusal.take() {
            return Err(JaegerError::Process(reason));
        }
        let service = service.ok_or(JaegerError::Missing { strukt: "Process", field: "serviceName" })?;
        Ok(spanline_common::jaeger::resource_attributes(service, tags))
    }

    /// The span list: each span translated, or refused, as soon as it is read.
    fn spans(&mut self, out: &mut Vec<Span>, refused: &mut Vec<Refused>, index: &mut usize) -> Result<(), JaegerError> {
        let size = self.struct_list("Batch.spans")?;
        let total = index.saturating_add(size);
        if total > self.limits.max_spans {
            return Err(JaegerError::TooManySpans { size: total, max: self.limits.max_spans });
        }
        for _ in 0..size {
            self.refusal = None;
            let raw = self.span()?;
            match self.refusal.take() {
                Some(reason) => refused.push(Refused { index: *index, reason: reason.into() }),
                None => match translate(raw) {
                    Ok(span) => out.push(span),
                    Err(reason) => refused.push(Refused { index: *index, reason: reason.into() }),
                },
            }
            *index += 1;
        }
        Ok(())
    }

    /// One `Span` struct (field ids of jaeger.thrift).
    fn span(&mut self) -> Result<RawSpan, JaegerError> {
        self.r.enter()?;
        let mut s = RawSpan::default();
        let mut last = 0;
        while let Some((ty, id)) = self.r.field(&mut last)? {
            match (id, ty) {
                (1, Type::I64) => s.trace_low = Some(self.r.i64()?),
                (2, Type::I64) => s.trace_high = Some(self.r.i64()?),
                (3, Type::I64) => s.span_id = Some(self.r.i64()?),
                (4, Type::I64) => s.parent_span_id = Some(self.r.i64()?),
                (5, Type::Binary) => {
                    let bytes = self.r.binary()?;
                    s.name = Some(self.string(bytes, "operationName"));
                }
                (6, Type::List) => self.references(&mut s.references)?,
                (7, Type::I32) => s.flags = Some(self.r.i32()?),
                (8, Type::I64) => s.start = Some(self.r.i64()?),
                (9, Type::I64) => s.duration = Some(self.r.i64()?),
                (10, Type::List) => self.tags(&mut s.attributes, "span tags")?,
                (11, Type::List) => self.logs(&mut s.events)?,
                // 12: incomplete, not kept; unknown fields and known ones of another type skipped,
                // as Thrift's generated readers do.
                _ => self.r.skip(ty)?,
            }
        }
        self.r.leave();
        let missing = |field| JaegerError::Missing { strukt: "Span", field };
        if s.trace_low.is_none() {
            return Err(missing("traceIdLow"));
        }
        if s.trace_high.is_none() {
            return Err(missing("traceIdHigh"));
        }
        if s.span_id.is_none() {
            return Err(missing("spanId"));
        }
        if s.parent_span_id.is_none() {
            return Err(missing("parentSpanId"));
        }
        if s.name.is_none() {
            return Err(missing("operationName"));
        }
        if s.flags.is_none() {
            return Err(missing("flags"));
        }
        if s.start.is_none() {
            return Err(missing("startTime"));
        }
        if s.duration.is_none() {
            return Err(missing("duration"));
        }
        Ok(s)
    }

    /// A string or binary value within [`Limits::max_string_bytes`]; a string must be UTF-8.
    /// Empty once the span is refused (nothing more is kept).
    fn string(&mut self, bytes: &[u8], what: &'static str) -> String {
        if self.check_len(bytes, what) {
            match std::str::from_utf8(bytes) {
                Ok(s) => return s.to_owned(),
                Err(_) => self.refuse(|| format!("{what} is not valid UTF-8")),
            }
        }
        String::new()
    }

    /// Whether `bytes` are within the string limit and still worth keeping.
    fn check_len(&mut self, bytes: &[u8], what: &'static str) -> bool {
        if bytes.len() > self.limits.max_string_bytes {
            let max = self.limits.max_string_bytes;
            self.refuse(|| format!("{what} holds {} bytes, more than the limit of {max}", bytes.len()));
        }
        self.refusal.is_none()
    }

    /// `list<Tag>` appended to `out` as attributes.
    fn tags(&mut self, out: &mut Vec<KeyValue>, what: &'static str) -> Result<(), JaegerError> {
        let size = self.struct_list("a tag list")?;
        if out.len().saturating_add(size) > self.limits.max_tags {
            let max = self.limits.max_tags;
            self.refuse(|| format!("{what}: {} tags, more than the limit of {max}", out.len() + size));
            self.r.skip_elements(Type::Struct, size)?;
            return Ok(());
        }
        for _ in 0..size {
            let tag = self.tag()?;
            if let Some(tag) = tag
                && self.refusal.is_none()
            {
                out.push(tag);
            }
        }
        Ok(())
    }

    /// `Tag { 1: key, 2: vType, 3: vStr, 4: vDouble, 5: vBool, 6: vLong, 7: vBinary }` → a typed
    /// attribute: the value of the field `vType` names (its default if absent); an unknown `vType`
    /// becomes the string `<Unknown Jaeger TagType N>`.
    fn tag(&mut self) -> Result<Option<KeyValue>, JaegerError> {
        self.r.enter()?;
        let (mut key, mut v_type) = (None, None);
        let (mut v_str, mut v_double, mut v_bool, mut v_long, mut v_binary) = (None, 0.0, false, 0, None);
        let mut last = 0;
        while let Some((ty, id)) = self.r.field(&mut last)? {
            match (id, ty) {
                (1, Type::Binary) => key = Some(self.r.binary()?),
                (2, Type::I32) => v_type = Some(self.r.i32()?),
                (3, Type::Binary) => v_str = Some(self.r.binary()?),
                (4, Type::Double) => v_double = self.r.double()?,
                (5, Type::Bool) => v_bool = self.r.bool()?,
                (6, Type::I64) => v_long = self.r.i64()?,
                (7, Type::Binary) => v_binary = Some(self.r.binary()?),
                _ => self.r.skip(ty)?,
            }
        }
        self.r.leave();
        let key = key.ok_or(JaegerError::Missing { strukt: "Tag", field: "key" })?;
        let v_type = v_type.ok_or(JaegerError::Missing { strukt: "Tag", field: "vType" })?;
        if self.refusal.is_some() {
            return Ok(None);
        }
        let key = self.string(key, "a tag key");
        let value = match v_type {
            STRING => Value::StringValue(self.string(v_str.unwrap_or_default(), "a tag's vStr")),
            DOUBLE => Value::DoubleValue(v_double),
            BOOL => Value::BoolValue(v_bool),
            LONG => Value::IntValue(v_long),
            BINARY => {
                let bytes = v_binary.unwrap_or_default();
                let keep = self.check_len(bytes, "a tag's vBinary");
                Value::BytesValue(if keep { bytes.to_vec() } else { Vec::new() })
            }
            other => unknown_type(other),
        };
        Ok(Some(kv_owned(key, value)))
    }

    /// `list<Log>` appended to `out` as events.
    fn logs(&mut self, out: &mut Vec<Event>) -> Result<(), JaegerError> {
        let size = self.struct_list("Span.logs")?;
        if out.len().saturating_add(size) > self.limits.max_logs {
            let max = self.limits.max_logs;
            self.refuse(|| format!("{} logs, more than the limit of {max}", out.len() + size));
            self.r.skip_elements(Type::Struct, size)?;
            return Ok(());
        }
        for _ in 0..size {
            let event = self.log()?;
            if self.refusal.is_none() {
                out.push(event);
            }
        }
        Ok(())
    }

    /// `Log { 1: required i64 timestamp, 2: required list<Tag> fields }` → an event at the
    /// timestamp (µs → ns), [`spanline_common::jaeger::event`].
    fn log(&mut self) -> Result<Event, JaegerError> {
        self.r.enter()?;
        let (mut timestamp, mut fields, mut seen_fields) = (None, Vec::new(), false);
        let mut last = 0;
        while let Some((ty, id)) = self.r.field(&mut last)? {
            match (id, ty) {
                (1, Type::I64) => timestamp = Some(self.r.i64()?),
                (2, Type::List) => {
                    seen_fields = true;
                    self.tags(&mut fields, "log fields")?;
                }
                _ => self.r.skip(ty)?,
            }
        }
        self.r.leave();
        let timestamp = timestamp.ok_or(JaegerError::Missing { strukt: "Log", field: "timestamp" })?;
        if !seen_fields {
            return Err(JaegerError::Missing { strukt: "Log", field: "fields" });
        }
        let time_unix_nano = match micros_to_nanos(timestamp) {
            Ok(ns) => ns,
            Err(why) => {
                self.refuse(|| format!("a log timestamp {why}"));
                0
            }
        };
        Ok(event(time_unix_nano, fields))
    }

    /// `list<SpanRef>` appended to `out`.
    fn references(&mut self, out: &mut Vec<Reference>) -> Result<(), JaegerError> {
        let size = self.struct_list("Span.references")?;
        if out.len().saturating_add(size) > self.limits.max_references {
            let max = self.limits.max_references;
            self.refuse(|| format!("{} references, more than the limit of {max}", out.len() + size));
            self.r.skip_elements(Type::Struct, size)?;
            return Ok(());
        }
        for _ in 0..size {
            let reference = self.reference()?;
            if self.refusal.is_none() {
                out.push(reference);
            }
        }
        Ok(())
    }

    /// `SpanRef { 1: refType, 2: traceIdLow, 3: traceIdHigh, 4: spanId }`, all required.
    fn reference(&mut self) -> Result<Reference, JaegerError> {
        self.r.enter()?;
        let (mut kind, mut trace_low, mut trace_high, mut span_id) = (None, None, None, None);
        let mut last = 0;
        while let Some((ty, id)) = self.r.field(&mut last)? {
            match (id, ty) {
                (1, Type::I32) => kind = Some(self.r.i32()?),
                (2, Type::I64) => trace_low = Some(self.r.i64()?),
                (3, Type::I64) => trace_high = Some(self.r.i64()?),
                (4, Type::I64) => span_id = Some(self.r.i64()?),
                _ => self.r.skip(ty)?,
            }
        }
        self.r.leave();
        let missing = |field| JaegerError::Missing { strukt: "SpanRef", field };
        Ok(Reference {
            kind: kind.ok_or(missing("refType"))?,
            trace_low: trace_low.ok_or(missing("traceIdLow"))?,
            trace_high: trace_high.ok_or(missing("traceIdHigh"))?,
            span_id: span_id.ok_or(missing("spanId"))?,
        })
    }
}

/// A read span → an OTLP span, or why it cannot be one ([`spanline_common::jaeger::span`]),
/// its times in µs turned into ns first.
fn translate(s: RawSpan) -> Result<Span, String> {
    let start = s.start.unwrap_or(0);
    let duration = s.duration.unwrap_or(0);
    let times = if duration < 0 {
        Err(format!("duration is negative ({duration} µs)"))
    } else {
        micros_to_nanos(start).map_err(|why| format!("startTime {why}")).and_then(|start_ns| {
            let end = start.checked_add(duration).ok_or_else(|| "startTime + duration overflows".to_owned())?;
            let end_ns = micros_to_nanos(end).map_err(|why| format!("startTime + duration {why}"))?;
            Ok((start_ns, end_ns))
        })
    };
    span(SpanParts {
        trace_low: s.trace_low.unwrap_or(0),
        trace_high: s.trace_high.unwrap_or(0),
        span_id: s.span_id.unwrap_or(0),
        parent_span_id: s.parent_span_id.unwrap_or(0),
        name: s.name.unwrap_or_default(),
        references: s.references,
        // Jaeger's flags are a bit set: the i32 read as its bits.
        flags: s.flags.unwrap_or(0) as u32,
        times,
        attributes: s.attributes,
        events: s.events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
    use spanline_common::jaeger::{REF_TYPE, get, trace_id};
    use spanline_testkit::thrift::{
        self as t, Batch, Kind, Log, Protocol as P, Span as JSpan, SpanRef, Tag, TagValue, Value as V,
    };

    const START_NS: u64 = 1_704_067_200_000_000_000;

    fn limits() -> Limits {
        Limits::default()
    }

    /// Translates `batch` as an HTTP body and as emitBatch datagrams in both protocols, checks that
    /// all three agree, and returns the result.
    fn all_ways(batch: &Batch) -> Translated {
        let body = batch_from_binary(&batch.binary(), &limits()).unwrap();
        let compact = emit_batch_from_compact(&t::emit_batch(P::Compact, batch), &limits()).unwrap();
        let binary = emit_batch_from_binary(&t::emit_batch(P::Binary, batch), &limits()).unwrap();
        assert_eq!(body, compact, "compact emitBatch differs from the binary body");
        assert_eq!(body, binary, "binary emitBatch differs from the binary body");
        body
    }

    fn spans(translated: &Translated) -> &[Span] {
        translated.request.resource_spans[0].scope_spans.first().map_or(&[], |ss| &ss.spans)
    }

    fn one(span: JSpan) -> Span {
        let translated = all_ways(&Batch::new("svc", vec![span]));
        assert_eq!(translated.refused, []);
        spans(&translated)[0].clone()
    }

    fn value(attributes: &[KeyValue], key: &str) -> Option<Value> {
        get(attributes, key).and_then(|v| v.value.clone())
    }

    fn string(s: &str) -> Option<Value> {
        Some(Value::StringValue(s.into()))
    }

    #[test]
    fn ids_64_and_128_bit_big_endian() {
        let span = one(JSpan { trace_id_low: 0x0102_0304_0506_0708, span_id: -2, ..JSpan::new(0, 0, "op") });
        assert_eq!(span.trace_id, [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(span.span_id, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(span.parent_span_id, Vec::<u8>::new(), "parentSpanId 0 is no parent");
        let span = one(JSpan { trace_id_high: i64::MIN, trace_id_low: 1, parent_span_id: 7, ..JSpan::new(0, 9, "op") });
        assert_eq!(span.trace_id, [0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(span.span_id, 9i64.to_be_bytes());
        assert_eq!(span.parent_span_id, 7i64.to_be_bytes());
        // Only the high half set is a valid id too.
        assert_eq!(one(JSpan { trace_id_high: 5, ..JSpan::new(0, 1, "op") }).trace_id[..8], 5i64.to_be_bytes());
    }

    #[test]
    fn zero_ids_refuse_the_span_alone() {
        let batch = Batch::new(
            "svc",
            vec![JSpan::new(1, 1, "a"), JSpan::new(0, 2, "b"), JSpan::new(3, 0, "c"), JSpan::new(4, 4, "d")],
        );
        let translated = all_ways(&batch);
        let names: Vec<&str> = spans(&translated).iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "d"]);
        assert_eq!(
            translated.refused,
            [
                Refused { index: 1, reason: "trace id is all zeros".into() },
                Refused { index: 2, reason: "span id is all zeros".into() }
            ]
        );
    }

    #[test]
    fn times_microseconds_to_nanoseconds() {
        let span = one(JSpan::new(1, 1, "op"));
        assert_eq!((span.start_time_unix_nano, span.end_time_unix_nano), (START_NS, START_NS + 1_500_000));
        let batch = Batch::new(
            "svc",
            vec![
                JSpan { start_time: -1, ..JSpan::new(1, 1, "negative start") },
                JSpan { duration: -1, ..JSpan::new(1, 2, "negative duration") },
                JSpan { start_time: i64::MAX / 100, ..JSpan::new(1, 3, "past u64 nanoseconds") },
                JSpan { duration: i64::MAX, ..JSpan::new(1, 4, "overflowing end") },
            ],
        );
        let translated = all_ways(&batch);
        assert_eq!(spans(&translated), []);
        let reasons: Vec<&str> = translated.refused.iter().map(|r| r.reason.as_ref()).collect();
        assert!(reasons[0].starts_with("startTime is negative"), "{reasons:?}");
        assert!(reasons[1].starts_with("duration is negative"), "{reasons:?}");
        assert!(reasons[2].starts_with("startTime is past"), "{reasons:?}");
        assert_eq!(reasons[3], "startTime + duration overflows");
    }

    #[test]
    fn process_becomes_the_resource() {
        let batch = Batch {
            service_name: "checkout".into(),
            process_tags: Some(vec![
                Tag::str("hostname", "h1"),
                Tag::str("jaeger.version", "Go-2.30.0"),
                Tag::str("ip", "10.0.0.1"),
                Tag::new("client-uuid", TagValue::Long(7)),
            ]),
            spans: vec![JSpan::new(1, 1, "op")],
        };
        let translated = all_ways(&batch);
        let resource = translated.request.resource_spans[0].resource.clone().unwrap();
        let keys: Vec<&str> = resource.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["service.name", "ip", "client-uuid", "host.name", "opencensus.exporterversion"]);
        assert_eq!(value(&resource.attributes, "service.name"), string("checkout"));
        assert_eq!(value(&resource.attributes, "host.name"), string("h1"));
        assert_eq!(value(&resource.attributes, "opencensus.exporterversion"), string("Jaeger-Go-2.30.0"));
        assert_eq!(value(&resource.attributes, "client-uuid"), Some(Value::IntValue(7)));
        // An empty service name is left out; host.name already there keeps hostname as it is.
        let batch = Batch {
            service_name: String::new(),
            process_tags: Some(vec![Tag::str("host.name", "a"), Tag::str("hostname", "b")]),
            spans: vec![],
        };
        let translated = all_ways(&batch);
        let resource = translated.request.resource_spans[0].resource.clone().unwrap();
        let keys: Vec<&str> = resource.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["host.name", "hostname"]);
        assert_eq!(translated.request.resource_spans[0].scope_spans, [], "no spans, no scope");
    }

    #[test]
    fn every_tag_type_becomes_a_typed_attribute() {
        let span = one(JSpan {
            tags: Some(vec![
                Tag::str("s", "text"),
                Tag::new("d", TagValue::Double(2.5)),
                Tag::new("b", TagValue::Bool(true)),
                Tag::new("f", TagValue::Bool(false)),
                Tag::new("l", TagValue::Long(-42)),
                Tag::new("x", TagValue::Binary(vec![0, 0xff])),
                Tag::str("sampler.type", "probabilistic"),
                Tag::new("sampler.param", TagValue::Double(0.001)),
            ]),
            ..JSpan::new(1, 1, "op")
        });
        let a = &span.attributes;
        assert_eq!(value(a, "s"), string("text"));
        assert_eq!(value(a, "d"), Some(Value::DoubleValue(2.5)));
        assert_eq!(value(a, "b"), Some(Value::BoolValue(true)));
        assert_eq!(value(a, "f"), Some(Value::BoolValue(false)));
        assert_eq!(value(a, "l"), Some(Value::IntValue(-42)));
        assert_eq!(value(a, "x"), Some(Value::BytesValue(vec![0, 0xff])));
        assert_eq!(value(a, "sampler.type"), string("probabilistic"));
        assert_eq!(value(a, "sampler.param"), Some(Value::DoubleValue(0.001)));
        assert_eq!(a.len(), 8);
    }

    #[test]
    fn unknown_tag_types_and_missing_values() {
        // vType 9, and a LONG tag without vLong (its default, 0).
        let tag9 = V::Struct(vec![(1, V::str("odd")), (2, V::I32(9))]);
        let long = V::Struct(vec![(1, V::str("n")), (2, V::I32(3))]);
        let span = JSpan { extra: vec![(10, V::List(Kind::Struct, vec![tag9, long]))], ..JSpan::new(1, 1, "op") };
        let span = one(span);
        assert_eq!(value(&span.attributes, "odd"), string("<Unknown Jaeger TagType 9>"));
        assert_eq!(value(&span.attributes, "n"), Some(Value::IntValue(0)));
    }

    fn tagged(tags: Vec<Tag>) -> Span {
        one(JSpan { tags: Some(tags), ..JSpan::new(1, 1, "op") })
    }

    #[test]
    fn span_kind_tag_sets_the_kind_and_is_removed() {
        for (tag, kind) in [
            ("client", SpanKind::Client),
            ("server", SpanKind::Server),
            ("producer", SpanKind::Producer),
            ("consumer", SpanKind::Consumer),
            ("internal", SpanKind::Internal),
            ("SERVER", SpanKind::Unspecified),
        ] {
            let span = tagged(vec![Tag::str("span.kind", tag), Tag::str("k", "v")]);
            assert_eq!(span.kind, kind as i32, "{tag}");
            assert_eq!(span.attributes.len(), 1, "{tag}");
        }
        assert_eq!(tagged(vec![]).kind, SpanKind::Unspecified as i32);
    }

    fn status_of(tags: Vec<Tag>) -> (Option<(StatusCode, String)>, Vec<String>) {
        let span = tagged(tags);
        let status = span.status.map(|s| (StatusCode::try_from(s.code).unwrap(), s.message));
        (status, span.attributes.into_iter().map(|a| a.key).collect())
    }

    #[test]
    fn status_from_error_otel_and_http_tags() {
        let error = |v| Tag::new("error", TagValue::Bool(v));
        assert_eq!(status_of(vec![error(true)]), (Some((StatusCode::Error, String::new())), vec![]));
        assert_eq!(
            status_of(vec![
                error(true),
                Tag::str("otel.status_description", "boom"),
                Tag::str("http.status_message", "m")
            ]),
            (Some((StatusCode::Error, "boom".into())), vec!["http.status_message".into()])
        );
        assert_eq!(
            status_of(vec![error(true), Tag::str("http.status_message", "m")]),
            (Some((StatusCode::Error, "m".into())), vec!["http.status_message".into()])
        );
        // error=false, or error as a string, is kept as it is and sets nothing.
        assert_eq!(status_of(vec![error(false)]), (None, vec!["error".into()]));
        assert_eq!(status_of(vec![Tag::str("error", "true")]), (None, vec!["error".into()]));
        // otel.status_code, any case; removed even when error=true decided.
        assert_eq!(
            status_of(vec![Tag::str("otel.status_code", "ok"), Tag::str("otel.status_description", "d")]),
            (Some((StatusCode::Ok, "d".into())), vec![])
        );
        assert_eq!(
            status_of(vec![Tag::str("otel.status_code", "ERROR")]),
            (Some((StatusCode::Error, String::new())), vec![])
        );
        assert_eq!(
            status_of(vec![Tag::str("otel.status_code", "what")]),
            (Some((StatusCode::Unset, String::new())), vec![])
        );
        assert_eq!(
            status_of(vec![error(true), Tag::str("otel.status_code", "OK")]),
            (Some((StatusCode::Error, String::new())), vec![])
        );
        // http.status_code when nothing else decided.
        let http = |code: i64, kind: &str| {
            status_of(vec![Tag::new("http.status_code", TagValue::Long(code)), Tag::str("span.kind", kind)]).0
        };
        assert_eq!(http(200, "server"), None);
        assert_eq!(http(404, "server"), None);
        assert_eq!(http(404, "client"), Some((StatusCode::Error, String::new())));
        assert_eq!(http(503, "server"), Some((StatusCode::Error, String::new())));
        assert_eq!(
            status_of(vec![Tag::str("http.status_code", "500"), Tag::str("http.status_message", "down")]).0,
            Some((StatusCode::Error, "down".into()))
        );
    }

    #[test]
    fn flags_keep_the_sampled_bit() {
        assert_eq!(one(JSpan { flags: 1, ..JSpan::new(1, 1, "op") }).flags, 1);
        assert_eq!(one(JSpan { flags: 0, ..JSpan::new(1, 1, "op") }).flags, 0);
        assert_eq!(one(JSpan { flags: 2, ..JSpan::new(1, 1, "op") }).flags, 0, "debug alone is not sampled");
        assert_eq!(one(JSpan { flags: 3, ..JSpan::new(1, 1, "op") }).flags, 1);
    }

    fn reference(ref_type: i32, trace: i64, span_id: i64) -> SpanRef {
        SpanRef { ref_type, trace_id_low: trace, trace_id_high: 0, span_id }
    }

    fn link_summary(span: &Span) -> Vec<(Vec<u8>, Option<Value>)> {
        span.links.iter().map(|l| (l.span_id.clone(), value(&l.attributes, REF_TYPE))).collect()
    }

    #[test]
    fn references_give_the_parent_and_links() {
        // parentSpanId wins; a CHILD_OF ref to it is not repeated as a link.
        let span = one(JSpan {
            parent_span_id: 5,
            references: Some(vec![reference(0, 1, 5), reference(1, 1, 6), reference(0, 2, 7)]),
            ..JSpan::new(1, 1, "op")
        });
        assert_eq!(span.parent_span_id, 5i64.to_be_bytes());
        assert_eq!(
            link_summary(&span),
            [(6i64.to_be_bytes().to_vec(), string("follows_from")), (7i64.to_be_bytes().to_vec(), string("child_of"))]
        );
        assert_eq!(span.links[1].trace_id, t_id(2));
        // No parentSpanId: the first CHILD_OF of the same trace, even after a FOLLOWS_FROM.
        let span = one(JSpan {
            references: Some(vec![reference(0, 9, 3), reference(1, 1, 4), reference(0, 1, 5)]),
            ..JSpan::new(1, 1, "op")
        });
        assert_eq!(span.parent_span_id, 5i64.to_be_bytes());
        assert_eq!(link_summary(&span).len(), 2);
        // Only a FOLLOWS_FROM of the same trace: it is the parent, and stays a link.
        let span = one(JSpan { references: Some(vec![reference(1, 1, 4)]), ..JSpan::new(1, 1, "op") });
        assert_eq!(span.parent_span_id, 4i64.to_be_bytes());
        assert_eq!(link_summary(&span), [(4i64.to_be_bytes().to_vec(), string("follows_from"))]);
        // A reference to another trace is never the parent.
        let span = one(JSpan { references: Some(vec![reference(0, 2, 4)]), ..JSpan::new(1, 1, "op") });
        assert_eq!(span.parent_span_id, Vec::<u8>::new());
        assert_eq!(link_summary(&span), [(4i64.to_be_bytes().to_vec(), string("child_of"))]);
    }

    fn t_id(low: i64) -> Vec<u8> {
        trace_id(0, low)
    }

    #[test]
    fn logs_become_events() {
        let span = one(JSpan {
            logs: Some(vec![
                Log {
                    timestamp: 1_704_067_200_000_100,
                    fields: vec![Tag::str("event", "retry"), Tag::new("attempt", TagValue::Long(2))],
                },
                Log { timestamp: 1_704_067_200_000_200, fields: vec![Tag::str("message", "no event field")] },
                Log { timestamp: 1_704_067_200_000_300, fields: vec![Tag::new("event", TagValue::Long(1))] },
                Log { timestamp: 1_704_067_200_000_400, fields: vec![] },
            ]),
            ..JSpan::new(1, 1, "op")
        });
        let e = &span.events;
        assert_eq!(e.len(), 4);
        assert_eq!((e[0].time_unix_nano, e[0].name.as_str()), (START_NS + 100_000, "retry"));
        assert_eq!(e[0].attributes.len(), 1);
        assert_eq!(value(&e[0].attributes, "attempt"), Some(Value::IntValue(2)));
        assert_eq!((e[1].name.as_str(), value(&e[1].attributes, "message")), ("", string("no event field")));
        assert_eq!((e[2].name.as_str(), value(&e[2].attributes, "event")), ("", Some(Value::IntValue(1))));
        assert_eq!((e[3].time_unix_nano, e[3].attributes.len()), (START_NS + 400_000, 0));
        // A negative log time refuses the span.
        let batch = Batch::new(
            "svc",
            vec![JSpan { logs: Some(vec![Log { timestamp: -5, fields: vec![] }]), ..JSpan::new(1, 1, "op") }],
        );
        assert_eq!(all_ways(&batch).refused[0].reason, "a log timestamp is negative (-5 µs)");
    }

    /// Every Thrift type as an unknown field, and known fields with the wrong type: skipped.
    fn unknown_fields() -> Vec<(i16, V)> {
        let s = V::Struct(vec![(1, V::Bool(true)), (2, V::Struct(vec![(3, V::str("x"))]))]);
        vec![
            (100, V::Bool(true)),
            (101, V::Bool(false)),
            (102, V::I8(-1)),
            (103, V::I16(-300)),
            (104, V::I32(1 << 20)),
            (105, V::I64(-1)),
            (106, V::Double(1.5)),
            (107, V::str("unknown")),
            (108, s.clone()),
            (109, V::Map(Kind::Binary, Kind::Struct, vec![(V::str("k"), s.clone())])),
            (110, V::Map(Kind::I32, Kind::I32, vec![])),
            (111, V::Set(Kind::I64, vec![V::I64(1), V::I64(2)])),
            (112, V::List(Kind::Bool, vec![V::Bool(true), V::Bool(false)])),
            (113, V::List(Kind::List, vec![V::List(Kind::Double, vec![V::Double(0.5)])])),
            (114, V::Uuid([7; 16])),
            (-3, V::I32(1)),
            (12, V::Bool(true)),
            // Known ids, wrong types.
            (5, V::I32(3)),
            (10, V::I64(1)),
        ]
    }

    #[test]
    fn unknown_fields_of_every_type_are_skipped() {
        let plain = JSpan { tags: Some(vec![Tag::str("k", "v")]), ..JSpan::new(1, 1, "op") };
        let noisy = JSpan { extra: unknown_fields(), ..plain.clone() };
        assert_eq!(one(noisy), one(plain));
        // And in the batch, the process, tags, logs and the emitBatch arguments.
        let tag = V::Struct(vec![(1, V::str("k")), (2, V::I32(0)), (3, V::str("v")), (9, V::Uuid([0; 16]))]);
        let log = V::Struct(vec![(1, V::I64(0)), (2, V::List(Kind::Struct, vec![tag.clone()])), (3, V::Double(0.0))]);
        let mut span_fields = match JSpan::new(1, 1, "op").value() {
            V::Struct(f) => f,
            _ => unreachable!(),
        };
        span_fields.push((10, V::List(Kind::Struct, vec![tag.clone()])));
        span_fields.push((11, V::List(Kind::Struct, vec![log])));
        let mut process = vec![(9, V::Set(Kind::Binary, vec![V::str("a")])), (1, V::str("svc"))];
        process.extend(unknown_fields().into_iter().filter(|(id, _)| *id != 5));
        let batch = V::Struct(vec![
            (3, V::I32(3)),
            (2, V::List(Kind::Struct, vec![V::Struct(span_fields)])),
            (1, V::Struct(process)),
            (4, V::str("after")),
        ]);
        for protocol in [P::Binary, P::Compact] {
            let args = V::Struct(vec![(2, V::I64(5)), (1, batch.clone()), (3, V::Bool(true))]);
            let message = t::message(protocol, "emitBatch", 1, 9, &args);
            let translated = match protocol {
                P::Binary => emit_batch_from_binary(&message, &limits()),
                P::Compact => emit_batch_from_compact(&message, &limits()),
            }
            .unwrap();
            assert_eq!(translated.refused, []);
            let span = &spans(&translated)[0];
            assert_eq!(value(&span.attributes, "k"), string("v"));
            assert_eq!(span.events.len(), 1);
        }
        assert!(batch_from_binary(&batch.encode(P::Binary), &limits()).is_ok());
    }

    #[test]
    fn emit_batch_messages() {
        let batch = Batch::new("svc", vec![JSpan::new(1, 1, "op")]);
        let expected = batch_from_binary(&batch.binary(), &limits()).unwrap();
        let args = V::Struct(vec![(1, batch.value())]);
        for kind in [thrift::CALL, thrift::ONEWAY] {
            let m = t::message(P::Compact, "emitBatch", kind, 0, &args);
            assert_eq!(emit_batch_from_compact(&m, &limits()), Ok(expected.clone()));
        }
        // The old (non-strict) binary header.
        let mut old = vec![0, 0, 0, 9];
        old.extend(b"emitBatch");
        old.extend([4, 0, 0, 0, 1]);
        old.extend(args.encode(P::Binary));
        assert_eq!(emit_batch_from_binary(&old, &limits()), Ok(expected.clone()));
        // Another method, another message type, no batch, the wrong protocol.
        let zipkin = t::message(P::Compact, "emitZipkinBatch", 4, 0, &args);
        assert!(matches!(emit_batch_from_compact(&zipkin, &limits()), Err(JaegerError::NotEmitBatch { .. })));
        let reply = t::message(P::Binary, "emitBatch", 2, 0, &args);
        assert_eq!(emit_batch_from_binary(&reply, &limits()), Err(JaegerError::MessageType(2)));
        let empty = t::message(P::Binary, "emitBatch", 4, 0, &V::Struct(vec![]));
        assert!(matches!(emit_batch_from_binary(&empty, &limits()), Err(JaegerError::Missing { field: "batch", .. })));
        let compact = t::emit_batch(P::Compact, &batch);
        assert!(emit_batch_from_binary(&compact, &limits()).is_err());
        assert!(batch_from_binary(&compact, &limits()).is_err());
    }

    /// A batch using every mapping, for the truncation test.
    fn rich_batch() -> Batch {
        Batch {
            service_name: "svc".into(),
            process_tags: Some(vec![Tag::str("hostname", "h")]),
            spans: vec![
                JSpan {
                    trace_id_high: 3,
                    references: Some(vec![reference(0, 1, 2), reference(1, 1, 3)]),
                    tags: Some(vec![
                        Tag::str("span.kind", "client"),
                        Tag::new("error", TagValue::Bool(true)),
                        Tag::new("x", TagValue::Binary(vec![1, 2])),
                        Tag::new("d", TagValue::Double(1.0)),
                    ]),
                    logs: Some(vec![Log { timestamp: 5, fields: vec![Tag::str("event", "e")] }]),
                    extra: unknown_fields(),
                    ..JSpan::new(1, 7, "op")
                },
                JSpan::new(1, 8, "second"),
            ],
        }
    }

    #[test]
    fn truncated_input_is_an_error_at_every_length() {
        let batch = rich_batch();
        let body = batch.binary();
        let compact = t::emit_batch(P::Compact, &batch);
        let binary = t::emit_batch(P::Binary, &batch);
        assert_eq!(spans(&batch_from_binary(&body, &limits()).unwrap()).len(), 2);
        for cut in 0..body.len() {
            assert!(batch_from_binary(&body[..cut], &limits()).is_err(), "body cut at {cut}");
        }
        for cut in 0..compact.len() {
            assert!(emit_batch_from_compact(&compact[..cut], &limits()).is_err(), "compact cut at {cut}");
        }
        for cut in 0..binary.len() {
            assert!(emit_batch_from_binary(&binary[..cut], &limits()).is_err(), "binary cut at {cut}");
        }
    }

    #[test]
    fn sizes_larger_than_the_input_are_refused_before_allocating() {
        for protocol in [P::Binary, P::Compact] {
            // Batch { 1: process, 2: list<Span> claiming 2^31 - 1 elements }.
            let mut bytes = V::Struct(vec![(1, Batch::new("s", vec![]).process())]).encode(protocol);
            bytes.pop();
            match protocol {
                P::Binary => bytes.extend([15, 0, 2]),
                P::Compact => bytes.push(0x19),
            }
            t::list_header(&mut bytes, protocol, Kind::Struct, i32::MAX as usize);
            bytes.extend([0; 32]);
            let err = match protocol {
                P::Binary => batch_from_binary(&bytes, &limits()).unwrap_err(),
                P::Compact => {
                    let mut m = t::message(P::Compact, "emitBatch", 4, 0, &V::Struct(vec![]));
                    m.pop();
                    m.push(0x1c);
                    m.extend(bytes);
                    emit_batch_from_compact(&m, &limits()).unwrap_err()
                }
            };
            assert!(matches!(err, JaegerError::Thrift(ThriftError::SizeExceedsInput { .. })), "{protocol:?}: {err}");
        }
        // A tag list claiming more tags than bytes, inside a span.
        let mut bytes = Vec::new();
        t::list_header(&mut bytes, P::Binary, Kind::Struct, 1 << 30);
        let span = JSpan { extra: vec![(10, V::Binary(bytes))], ..JSpan::new(1, 1, "op") };
        let mut body = Batch::new("svc", vec![span]).binary();
        // Turn the binary field 10 (type 11) into a list field (type 15) whose header is its bytes:
        // the 4-byte length prefix goes, the list header stays.
        let at = body.windows(3).position(|w| w == [11, 0, 10]).unwrap();
        body[at] = 15;
        body.drain(at + 3..at + 7);
        let err = batch_from_binary(&body, &limits()).unwrap_err();
        assert!(matches!(err, JaegerError::Thrift(ThriftError::SizeExceedsInput { .. })), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut deep = V::I32(1);
        for _ in 0..40 {
            deep = V::Struct(vec![(1, deep)]);
        }
        let span = JSpan { extra: vec![(99, deep.clone())], ..JSpan::new(1, 1, "op") };
        let batch = Batch::new("svc", vec![span]);
        let err = batch_from_binary(&batch.binary(), &limits()).unwrap_err();
        assert!(matches!(err, JaegerError::Thrift(ThriftError::TooDeep { max: 32, .. })), "{err}");
        let err = emit_batch_from_compact(&t::emit_batch(P::Compact, &batch), &limits()).unwrap_err();
        assert!(matches!(err, JaegerError::Thrift(ThriftError::TooDeep { .. })), "{err}");
        // Lists of lists count too.
        let mut deep = V::List(Kind::I8, vec![]);
        for _ in 0..40 {
            deep = V::List(Kind::List, vec![deep]);
        }
        let span = JSpan { extra: vec![(99, deep)], ..JSpan::new(1, 1, "op") };
        assert!(batch_from_binary(&Batch::new("svc", vec![span]).binary(), &limits()).is_err());
        // Within the bound, it is skipped.
        let lenient = Limits { max_depth: 64, ..limits() };
        let span = JSpan { extra: vec![(99, V::Struct(vec![(1, V::Struct(vec![]))]))], ..JSpan::new(1, 1, "op") };
        assert!(batch_from_binary(&Batch::new("svc", vec![span]).binary(), &lenient).is_ok());
    }

    #[test]
    fn missing_required_fields_are_errors() {
        let no_name = V::Struct(vec![(1, V::I64(1)), (2, V::I64(0)), (3, V::I64(1)), (4, V::I64(0))]);
        let batch = V::Struct(vec![(1, Batch::new("s", vec![]).process()), (2, V::List(Kind::Struct, vec![no_name]))]);
        assert_eq!(
            batch_from_binary(&batch.encode(P::Binary), &limits()),
            Err(JaegerError::Missing { strukt: "Span", field: "operationName" })
        );
        let no_spans = V::Struct(vec![(1, Batch::new("s", vec![]).process())]);
        assert!(matches!(batch_from_binary(&no_spans.encode(P::Binary), &limits()), Err(JaegerError::Missing { .. })));
        let no_process = V::Struct(vec![(2, V::List(Kind::Struct, vec![]))]);
        assert!(matches!(
            batch_from_binary(&no_process.encode(P::Binary), &limits()),
            Err(JaegerError::Missing { .. })
        ));
        let no_key = V::Struct(vec![(2, V::I32(0))]);
        let span = JSpan { extra: vec![(10, V::List(Kind::Struct, vec![no_key]))], ..JSpan::new(1, 1, "op") };
        assert_eq!(
            batch_from_binary(&Batch::new("s", vec![span]).binary(), &limits()),
            Err(JaegerError::Missing { strukt: "Tag", field: "key" })
        );
        let spans_of_ints = V::Struct(vec![(1, Batch::new("s", vec![]).process()), (2, V::List(Kind::I32, vec![]))]);
        assert!(matches!(
            batch_from_binary(&spans_of_ints.encode(P::Binary), &limits()),
            Err(JaegerError::ElementType { .. })
        ));
    }

    #[test]
    fn limits_refuse_the_span_or_the_batch() {
        let small =
            Limits { max_spans: 4, max_tags: 2, max_logs: 1, max_references: 1, max_string_bytes: 8, max_depth: 32 };
        let check = |batch: &Batch| batch_from_binary(&batch.binary(), &small);
        let five = Batch::new("s", (1..=5).map(|i| JSpan::new(1, i, "op")).collect());
        assert_eq!(check(&five), Err(JaegerError::TooManySpans { size: 5, max: 4 }));
        let log = Log { timestamp: 1, fields: vec![] };
        let batch = Batch::new(
            "s",
            vec![
                JSpan {
                    tags: Some(vec![Tag::str("a", ""), Tag::str("b", ""), Tag::str("c", "")]),
                    ..JSpan::new(1, 1, "tags")
                },
                JSpan { logs: Some(vec![log.clone(), log]), ..JSpan::new(1, 2, "logs") },
                JSpan { references: Some(vec![reference(0, 1, 1), reference(0, 1, 2)]), ..JSpan::new(1, 3, "refs") },
            ],
        );
        let translated = check(&batch).unwrap();
        assert_eq!(spans(&translated), []);
        let reasons: Vec<&str> = translated.refused.iter().map(|r| r.reason.as_ref()).collect();
        assert_eq!(
            reasons,
            [
                "span tags: 3 tags, more than the limit of 2",
                "2 logs, more than the limit of 1",
                "2 references, more than the limit of 1"
            ]
        );
        let batch = Batch::new(
            "s",
            vec![
                JSpan::new(1, 1, "a long operation name"),
                JSpan { tags: Some(vec![Tag::str("k", "a long value")]), ..JSpan::new(1, 2, "ok") },
                JSpan { tags: Some(vec![Tag::new("k", TagValue::Binary(vec![0; 9]))]), ..JSpan::new(1, 3, "ok") },
                JSpan::new(1, 4, "kept"),
            ],
        );
        let translated = check(&batch).unwrap();
        assert_eq!(spans(&translated).len(), 1);
        assert_eq!(translated.refused[0].reason, "operationName holds 21 bytes, more than the limit of 8");
        assert_eq!(translated.refused[1].reason, "a tag's vStr holds 12 bytes, more than the limit of 8");
        assert_eq!(translated.refused[2].reason, "a tag's vBinary holds 9 bytes, more than the limit of 8");
        // The process is the whole batch's: over a limit, the batch is refused.
        let batch = Batch::new("a long service name", vec![]);
        assert!(matches!(check(&batch), Err(JaegerError::Process(_))));
    }

    #[test]
    fn errors_are_classified_once() {
        let error = crate::error::Error::from(JaegerError::TooManySpans { size: 2, max: 1 });
        assert_eq!(error.http_status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!error.is_retryable());
        let error = crate::error::Error::from(JaegerError::MessageType(2));
        assert_eq!(error.http_status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(
            error.to_string(),
            "malformed request: jaeger thrift: message type 2 is neither CALL (1) nor ONEWAY (4)"
        );
    }

    #[test]
    fn invalid_utf8_refuses_the_span() {
        let span = JSpan { extra: vec![(5, V::Binary(vec![0xff, 0xfe]))], ..JSpan::new(1, 1, "") };
        let translated =
            batch_from_binary(&Batch::new("s", vec![span, JSpan::new(1, 2, "ok")]).binary(), &limits()).unwrap();
        assert_eq!(translated.refused, [Refused { index: 0, reason: "operationName is not valid UTF-8".into() }]);
        assert_eq!(spans(&translated).len(), 1);
    }
}
