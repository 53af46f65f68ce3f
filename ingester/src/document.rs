//! `document`: one OTLP `ExportTraceServiceRequest` (a Kafka record) → Jaeger span documents and
//! service documents (REFERENCE.md §4), each with its target index and a deterministic `_id`.
//!
//! Called by the worker for every record. Pure. Guarantees: a span's index and `_id` are defined by
//! the record alone, so reading the same record again — live, in a replay, on another day, with a
//! later version — lands on the same document, and the bulk `create` action makes that idempotent:
//! - `_id` = `{traceID}_{spanID}_{digest as hex}`, the digest taken over the span's, its scope's and
//!   its resource's protobuf bytes as they are in the record ([`spanline_common::spans`]), never
//!   over the mapped JSON, so a change of mapping output keeps every id;
//! - the index is the span's start day in UTC; which starts are accepted, and the day an
//!   out-of-window span is clamped to, are judged against the record's Kafka timestamp
//!   ([`RecordTime`]), not the time it is read; the ingestion time stands in only for a record
//!   without a usable timestamp;
//! - a service document's `_id` is Jaeger's, from (service, operation) alone; its index is its
//!   span's.
//!
//! See docs/ingester.md, "Document ids and indices", for the scheme and what changes an id.
//!
//! Bounded ([`DocumentLimits`]): Jaeger's schema repeats the resource's attributes (the process tags)
//! in every span document, so a small record can expand a thousandfold. Each document's size is
//! known before it is kept: the process part is written once per resource, a span's own part is
//! written up to the room left and only counted past it, so a span whose document would be over
//! `max_document_bytes` is refused alone having cost its length, not its bytes. A record's documents
//! (and the dead letters of its refused spans) are added up as they are made, and mapping stops as
//! soon as the sum passes `max_record_document_bytes`: the work done for a record that is refused
//! whole is at most that bound plus one document.

mod json;
mod resources;
mod wire;

use std::{collections::HashSet, fmt, io::Write as _};

use bytes::{Bytes, BytesMut};

use chrono::{DateTime, Datelike, NaiveDate};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use prost::Message as _;
use spanline_common::{
    ByteSize,
    ids::fnv64a,
    spans::{Digests, SpanSources},
};

use crate::bulk::framing::{ACTION_HEAD, ACTION_ID, ACTION_TAIL};
use json::{Sink, Writer, push_hex_bytes, push_hex_u64, push_padded};
use wire::{Read, Unusual};

/// A document ready for `_bulk`: its NDJSON `create` item, of which the index name, the `_id` and
/// the JSON source are parts (`{"create":{"_index":"…","_id":"…"}}`, newline, source, newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The bulk item, as it goes into a `_bulk` body ([`crate::bulk::encode_item`]). The items of a
    /// record (and of the records after it) share one allocation.
    pub ndjson: Bytes,
    index_len: usize,
    id_len: usize,
    pub kind: DocKind,
    /// For span documents, where the span is in its request: (resource, scope, span) indices.
    pub position: Option<[usize; 3]>,
    /// For span documents, the span's end in µs since the epoch; 0 for service documents.
    pub end_micros: i64,
}

impl Document {
    /// A document of `kind` with the JSON `source` (for tests, and anything not on the hot path:
    /// the mapping writes its items in place).
    pub fn new(
        kind: DocKind,
        index: &str,
        id: &str,
        source: &[u8],
        position: Option<[usize; 3]>,
        end_micros: i64,
    ) -> Self {
        let mut ndjson = BytesMut::with_capacity(
            ACTION_HEAD.len() + index.len() + ACTION_ID.len() + id.len() + ACTION_TAIL.len() + source.len() + 1,
        );
        for part in [ACTION_HEAD, index.as_bytes(), ACTION_ID, id.as_bytes(), ACTION_TAIL, source, b"\n"] {
            ndjson.extend_from_slice(part);
        }
        Self { ndjson: ndjson.freeze(), index_len: index.len(), id_len: id.len(), kind, position, end_micros }
    }

    /// The index name.
    pub fn index(&self) -> &str {
        let start = ACTION_HEAD.len();
        self.text(start, start + self.index_len)
    }

    /// The document `_id`.
    pub fn id(&self) -> &str {
        let start = ACTION_HEAD.len() + self.index_len + ACTION_ID.len();
        self.text(start, start + self.id_len)
    }

    /// The JSON source.
    pub fn source(&self) -> &[u8] {
        let start = self.source_start();
        self.ndjson.get(start..self.ndjson.len().saturating_sub(1)).unwrap_or_default()
    }

    /// The JSON source's length.
    pub fn source_len(&self) -> usize {
        self.ndjson.len().saturating_sub(self.source_start() + 1)
    }

    fn source_start(&self) -> usize {
        ACTION_HEAD.len() + self.index_len + ACTION_ID.len() + self.id_len + ACTION_TAIL.len()
    }

    /// Index names and ids are ASCII, written by this module.
    fn text(&self, start: usize, end: usize) -> &str {
        self.ndjson.get(start..end).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or_default()
    }
}

/// Span, service or dependency-links document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    Span,
    Service,
    /// One partition's links of one window ([`dependency_document`]).
    Dependencies,
}

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Span => "span",
            DocKind::Service => "service",
            DocKind::Dependencies => "dependencies",
        }
    }
}

/// Which index a span goes to, and which start times are accepted.
#[derive(Debug, Clone)]
pub struct Routing {
    pub names: IndexNames,
    /// Oldest accepted start, as a distance before the [`RecordTime`] time, in microseconds.
    pub max_age_micros: i64,
    /// Latest accepted start, as a distance after the [`RecordTime`] time, in microseconds.
    pub max_skew_micros: i64,
    /// Out-of-window spans are indexed in the nearest allowed day's index instead of being refused.
    pub clamp: bool,
    /// How trace ids are written in `traceID` fields ([`TraceIds`]).
    pub trace_ids: TraceIds,
}

/// How a trace id is written in a document's `traceID` fields (the span's and its references').
/// Its `_id` always holds all 32 hex digits (it is derived from the record, not from the document).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceIds {
    /// As Jaeger v1 writes them: 16 hex digits when the high 64 bits are zero (a trace from a
    /// Jaeger or 64-bit B3 client), else 32. Jaeger Query 1.x looks a trace up by this form, so
    /// such traces are found in its UI.
    #[default]
    Jaeger,
    /// Always 32 hex digits.
    Full,
}

/// The time a record's spans are judged against: the accepted window is [reference − max age,
/// reference + max skew], and an out-of-window span is clamped into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordTime {
    /// The record's Kafka timestamp (the producer's create time, or the broker's append time on a
    /// topic set to `LogAppendTime`), µs since the epoch: the same whenever the record is read.
    Timestamp(i64),
    /// The ingestion time, µs since the epoch: the record has no usable timestamp, so the decision
    /// depends on when it is read.
    Ingestion(i64),
}

impl RecordTime {
    /// The record's timestamp (`record_ms`, as librdkafka gives it) if it has one that can be real,
    /// else the ingestion time `now_micros`. A timestamp further ahead of `now_micros` than the
    /// routing's max skew cannot be real (the record would have been produced in the future: its
    /// producer's clock is wrong); trusting it would clamp spans into a far-future day's index, so
    /// such a record is judged against the ingestion time, as one without a timestamp.
    pub fn of(record_ms: Option<i64>, now_micros: i64, routing: &Routing) -> Self {
        match record_ms.filter(|&ms| ms >= 0).map(|ms| ms.saturating_mul(1_000)) {
            Some(at) if at <= now_micros.saturating_add(routing.max_skew_micros) => RecordTime::Timestamp(at),
            _ => RecordTime::Ingestion(now_micros),
        }
    }

    /// The reference time in µs since the epoch.
    pub fn micros(self) -> i64 {
        match self {
            RecordTime::Timestamp(at) | RecordTime::Ingestion(at) => at,
        }
    }
}

impl fmt::Display for RecordTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.micros();
        let at = DateTime::from_timestamp_micros(at).map_or_else(|| at.to_string(), |t| t.to_rfc3339());
        match self {
            RecordTime::Timestamp(_) => write!(f, "the record's Kafka timestamp {at}"),
            RecordTime::Ingestion(_) => {
                write!(f, "the ingestion time {at} (the record has no usable Kafka timestamp)")
            }
        }
    }
}

/// How far one record may expand (`[limits]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentLimits {
    /// The largest span document (JSON source bytes); a span whose document is larger is refused
    /// alone (`limits.max_document_bytes`).
    pub max_document_bytes: usize,
    /// The most one record may cost: per span and service document its JSON bytes plus 128 (the
    /// bulk action line); per span refused alone the larger of its document and the dead letter that
    /// replaces it (256 bytes plus the span with its resource and scope as protobuf); past it the
    /// record is refused whole (`limits.max_record_document_bytes`).
    pub max_record_document_bytes: usize,
}

impl DocumentLimits {
    /// No bound: for measuring the mapping alone.
    pub const UNBOUNDED: Self = Self { max_document_bytes: usize::MAX, max_record_document_bytes: usize::MAX };
}

/// Why a span gets no document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its start time is outside the accepted window.
    OutOfWindow,
    /// Its document is larger than `max_document_bytes`.
    TooLarge,
    /// Its document cannot be written as JSON (no known span does this).
    Unwritable,
    /// Its trace id is not 16 bytes, or its span id (or parent span id) not 8: the ids Jaeger
    /// reads and the document `_id` is made of (an oversized `_id` fails a whole bulk request).
    InvalidId,
}

impl Refusal {
    /// The dead letter's `error_type`.
    pub fn error_type(self) -> &'static str {
        match self {
            Refusal::OutOfWindow => "span_out_of_range",
            Refusal::TooLarge => "document_too_large",
            Refusal::Unwritable => "document_error",
            Refusal::InvalidId => "invalid_span_id",
        }
    }
}

/// A span that gets no document, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// (resource, scope, span) indices in the request.
    pub position: [usize; 3],
    pub refusal: Refusal,
    pub reason: String,
}

/// A record whose documents would pass `max_record_document_bytes`: mapping stopped there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverRecord {
    /// The bytes counted when mapping stopped (more than `limit`).
    pub counted: usize,
    /// Spans looked at before it stopped, of `spans`.
    pub spans_seen: usize,
    pub spans: usize,
    pub limit: usize,
}

impl OverRecord {
    /// The dead letter's reason: what was counted, and the setting that bounds it.
    pub fn reason(&self) -> String {
        format!(
            "record would produce more than {} bytes of documents (counted over {} of its {} spans), over limits.max_record_document_bytes ({})",
            self.counted,
            self.spans_seen,
            self.spans,
            ByteSize::from_usize(self.limit)
        )
    }
}

/// What [`map_request`] produces.
#[derive(Debug, Default)]
pub struct Mapped {
    pub docs: Vec<Document>,
    /// Spans refused alone (each to be dead-lettered); the record's other spans are in `docs`.
    pub refused: Vec<Refused>,
    /// Spans in the request.
    pub spans: usize,
    /// What the record cost, as [`DocumentLimits::max_record_document_bytes`] counts it.
    pub bytes: usize,
    /// Set when the record is refused whole; `docs` and `refused` are then empty.
    pub over: Option<OverRecord>,
    /// Kept from record to record.
    buffers: Buffers,
}

/// What the mapping writes into, kept between records so that a record costs few allocations.
#[derive(Debug, Default)]
struct Buffers {
    /// The documents' bulk items, each split off as its own [`Bytes`] once written; a new buffer is
    /// taken when the items still held leave too little room (see [`CHUNK`]).
    arena: BytesMut,
    /// The current resource's process part, at most `max_document_bytes`.
    process: Vec<u8>,
    /// Values formatted before they are written: doubles and unknown value kinds (short).
    scratch: Vec<u8>,
    /// Resources read through by earlier records (the live path's).
    resources: resources::Resources,
}

impl Mapped {
    pub fn clear(&mut self) {
        self.docs.clear();
        self.refused.clear();
        self.spans = 0;
        self.bytes = 0;
        self.over = None;
    }

    /// Stops the record: nothing of it is kept.
    fn refuse_whole(&mut self, spans_seen: usize, limit: usize) {
        self.docs.clear();
        self.refused.clear();
        self.over = Some(OverRecord { counted: self.bytes, spans_seen, spans: self.spans, limit });
    }
}

/// Index names for a prefix.
#[derive(Debug, Clone)]
pub struct IndexNames {
    span: String,
    service: String,
    dependencies: String,
}

impl IndexNames {
    /// `{prefix}-jaeger-span-`, `{prefix}-jaeger-service-` and `{prefix}-jaeger-dependencies-`, or
    /// without prefix when empty.
    pub fn new(prefix: &str) -> Self {
        let p = if prefix.is_empty() { String::new() } else { format!("{prefix}-") };
        Self {
            span: format!("{p}jaeger-span-"),
            service: format!("{p}jaeger-service-"),
            dependencies: format!("{p}jaeger-dependencies-"),
        }
    }

    /// The daily index of `kind` holding a span that started at `start_micros`.
    pub fn daily(&self, kind: DocKind, start_micros: i64) -> String {
        self.on(kind, day_of(start_micros))
    }

    /// The index of `kind` for `date`.
    fn on(&self, kind: DocKind, date: NaiveDate) -> String {
        let mut name = Vec::new();
        self.push(kind, date, &mut name);
        String::from_utf8(name).unwrap_or_default()
    }

    /// Appends the index name of `kind` for `date` to `out`: `{base}YYYY-MM-DD`, the year
    /// zero-padded to four digits (as `{:04}` writes it).
    fn push(&self, kind: DocKind, date: NaiveDate, out: &mut impl Sink) {
        let base = match kind {
            DocKind::Span => &self.span,
            DocKind::Service => &self.service,
            DocKind::Dependencies => &self.dependencies,
        };
        out.put(base.as_bytes());
        // `YYYY-MM-DD` in one write for every year a span can start in.
        if let Ok(year @ 0..=9999) = u32::try_from(date.year()) {
            let digit = |v: u32| b'0' + (v % 10) as u8;
            let (month, day) = (date.month(), date.day());
            out.put(&[
                digit(year / 1000),
                digit(year / 100),
                digit(year / 10),
                digit(year),
                b'-',
                digit(month / 10),
                digit(month),
                b'-',
                digit(day / 10),
                digit(day),
            ]);
            return;
        }
        match u64::try_from(date.year()) {
            Ok(year) => push_padded(out, year, 4),
            // Before year 0: not a time a span can start at (its nanoseconds are unsigned).
            Err(_) => out.put(format!("{:04}", date.year()).as_bytes()),
        }
        out.put(b"-");
        push_padded(out, date.month().into(), 2);
        out.put(b"-");
        push_padded(out, date.day().into(), 2);
    }

    /// The longer base name (without the date).
    fn longest(&self) -> usize {
        self.span.len().max(self.service.len())
    }

    /// Index-template patterns matching these names.
    pub fn patterns(&self) -> (String, String) {
        (format!("{}*", self.span), format!("{}*", self.service))
    }
}

/// The Jaeger tag for an OTLP attribute: type name and value as a string (REFERENCE.md §4: every
/// Jaeger Query version reads string values). Values derived from large inputs (hex of bytes, the
/// JSON of arrays and maps) are written straight into the document, never built apart; `scratch`
/// holds the rare ones that go through `fmt` or serde_json first.
///
/// `decoded` is the same attribute as prost decoded it, when the record was: an array or a list is
/// written from it. Read in place, a small one is decoded alone ([`NESTED_DECODE_MAX`]); a larger
/// one is [`Unusual`], for the record to be priced and decoded whole.
fn write_tag<S: Sink>(
    w: &mut Writer<'_, S>,
    kv: &wire::KeyValue<'_>,
    decoded: Option<&KeyValue>,
    scratch: &mut Vec<u8>,
) -> Read<()> {
    // The quotes around the key and a value are written with the constant parts beside them:
    // a tag is the most frequent thing written, and each write has its own bookkeeping.
    w.raw(b"{\"key\":\"");
    w.text(kv.key)?;
    match kv.value.unwrap_or(wire::AnyValue::Empty) {
        wire::AnyValue::String(s) => {
            w.raw(b"\",\"type\":\"string\",\"value\":\"");
            w.text(s)?;
            w.raw(b"\"}");
            return Ok(());
        }
        wire::AnyValue::Bool(b) => {
            w.raw(if b {
                b"\",\"type\":\"bool\",\"value\":\"true\"}"
            } else {
                b"\",\"type\":\"bool\",\"value\":\"false\"}"
            });
            return Ok(());
        }
        wire::AnyValue::Int(i) => {
            w.raw(b"\",\"type\":\"int64\",\"value\":\"");
            w.i64(i);
            w.raw(b"\"}");
            return Ok(());
        }
        wire::AnyValue::Double(d) => {
            // Rust's `Display` of an f64 (no exponent; `NaN`, `inf`), as a string: no escapes.
            w.raw(b"\",\"type\":\"float64\",\"value\":\"");
            scratch.clear();
            let _ = write!(scratch, "{d}");
            w.raw(scratch);
            w.raw(b"\"}");
            return Ok(());
        }
        wire::AnyValue::Bytes(b) => {
            w.raw(b"\",\"type\":\"binary\",\"value\":");
            w.hex_str(b);
        }
        wire::AnyValue::Nested(any) => {
            // The OTLP/JSON form of the value, as a string, escaped as serde_json writes it (never
            // held whole: it can be far larger than the record). The reader checked the value
            // whole, so prost decodes it; a serialization error can only leave it cut short.
            let alone;
            let any = match decoded.and_then(|kv| kv.value.as_ref()) {
                Some(any) => any,
                None if any.len() <= NESTED_DECODE_MAX => {
                    alone = AnyValue::decode(any).map_err(|_| Unusual)?;
                    &alone
                }
                None => return Err(Unusual),
            };
            w.raw(b"\",\"type\":\"string\",\"value\":");
            w.str_of(|out| {
                let _ = serde_json::to_writer(out, any);
            });
        }
        // Newer OTLP value kinds (references into a string table) are written as their debug form.
        wire::AnyValue::StringIndex(index) => {
            w.raw(b"\",\"type\":\"string\",\"value\":");
            scratch.clear();
            let _ = write!(scratch, "{:?}", any_value::Value::StringValueStrindex(index));
            w.str(scratch);
        }
        wire::AnyValue::Empty => w.raw(b"\",\"type\":\"string\",\"value\":\"\""),
    }
    w.raw(b"}");
    Ok(())
}

/// The next element of a tag list: a string tag with a fixed key (`key_json` is
/// `{"key":"…","type":"string","value":"`, the value's opening quote included).
fn write_str_tag<S: Sink>(w: &mut Writer<'_, S>, first: &mut bool, key_json: &[u8], value: &str) {
    debug_assert!(key_json.ends_with(b":\""));
    separate(w, first);
    w.raw(key_json);
    w.escaped(value.as_bytes());
    w.raw(b"\"}");
}

/// A trace id as a JSON string, in the form `ids` says.
fn write_trace_id<S: Sink>(w: &mut Writer<'_, S>, trace_id: &[u8], ids: TraceIds) {
    match trace_id.split_at_checked(8) {
        Some((high, low)) if ids == TraceIds::Jaeger && low.len() == 8 && high == [0; 8] => w.hex_str(low),
        _ => w.hex_str(trace_id),
    }
}

/// The next element of a `references` list.
fn write_reference<S: Sink>(
    w: &mut Writer<'_, S>,
    first: &mut bool,
    kind: &[u8],
    (trace_id, ids): (&[u8], TraceIds),
    span_id: &[u8],
) {
    separate(w, first);
    w.raw(b"{\"refType\":\"");
    w.raw(kind);
    w.raw(b"\",\"traceID\":");
    write_trace_id(w, trace_id, ids);
    w.raw(b",\"spanID\":");
    w.hex_str(span_id);
    w.raw(b"}");
}

/// `,` before every element but the first.
fn separate<S: Sink>(w: &mut Writer<'_, S>, first: &mut bool) {
    if !std::mem::take(first) {
        w.raw(b",");
    }
}

/// `{"serviceName":…,"tags":[…]}`: the resource's attributes but `service.name`.
/// `decoded` is the resource's attributes as prost decoded them, when the record was.
fn write_process<S: Sink>(
    w: &mut Writer<'_, S>,
    service: &str,
    resource: &wire::ResourceSpans<'_>,
    decoded: Option<&[KeyValue]>,
    scratch: &mut Vec<u8>,
) -> Read<()> {
    w.raw(b"{\"serviceName\":\"");
    w.escaped(service.as_bytes());
    w.raw(b"\",\"tags\":[");
    let mut first = true;
    for (i, kv) in resource.attributes().enumerate().filter(|(_, kv)| kv.key != b"service.name") {
        separate(w, &mut first);
        write_tag(w, &kv, decoded.and_then(|d| d.get(i)), scratch)?;
    }
    w.raw(b"]}");
    Ok(())
}

/// A span document but its `process` and closing brace: `{"traceID":…,…,"logs":[…]`, the fields
/// in Jaeger's order (REFERENCE.md §4) — parentSpanID omitted when empty, flags when 0; the
/// span's attributes, then the tags synthesized from its scope, kind, status and trace state; its
/// events as logs (timestamp in µs, the event's name as field `event`).
///
/// `decoded` is the span as prost decoded it, when the record was.
fn write_span_head<S: Sink>(
    w: &mut Writer<'_, S>,
    span: &wire::Span<'_>,
    decoded: Option<&Span>,
    scope: Option<&wire::Scope<'_>>,
    ids: TraceIds,
    scratch: &mut Vec<u8>,
) -> Read<()> {
    w.raw(b"{\"traceID\":");
    write_trace_id(w, span.trace_id, ids);
    w.raw(b",\"spanID\":");
    w.hex_str(span.span_id);
    if !span.parent_span_id.is_empty() {
        w.raw(b",\"parentSpanID\":");
        w.hex_str(span.parent_span_id);
    }
    let flags = span.flags & 0xff;
    if flags != 0 {
        w.raw(b",\"flags\":");
        w.u64(flags.into());
    }
    w.raw(b",\"operationName\":\"");
    w.escaped(span.name.as_bytes());
    w.raw(b"\",\"references\":[");
    let mut first = true;
    if !span.parent_span_id.is_empty() {
        write_reference(w, &mut first, b"CHILD_OF", (span.trace_id, ids), span.parent_span_id);
    }
    // A link keeps the reference type it came from (a Jaeger or OpenTracing span's CHILD_OF
    // references but its parent); any other link is FOLLOWS_FROM.
    for link in span.links() {
        let link = link?;
        let kind: &[u8] = if link.child_of { b"CHILD_OF" } else { b"FOLLOWS_FROM" };
        write_reference(w, &mut first, kind, (link.trace_id, ids), link.span_id);
    }
    let start_time = span.start_time_unix_nano / 1_000;
    w.raw(b"],\"startTime\":");
    w.u64(start_time);
    w.raw(b",\"startTimeMillis\":");
    w.u64(start_time / 1_000);
    w.raw(b",\"duration\":");
    w.u64(span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) / 1_000);
    w.raw(b",\"tags\":[");
    let mut first = true;
    for (i, kv) in span.attributes().enumerate() {
        separate(w, &mut first);
        write_tag(w, &kv?, decoded.and_then(|d| d.attributes.get(i)), scratch)?;
    }
    if let Some(scope) = scope {
        if !scope.name.is_empty() {
            write_str_tag(w, &mut first, b"{\"key\":\"otel.scope.name\",\"type\":\"string\",\"value\":\"", scope.name);
        }
        if !scope.version.is_empty() {
            write_str_tag(
                w,
                &mut first,
                b"{\"key\":\"otel.scope.version\",\"type\":\"string\",\"value\":\"",
                scope.version,
            );
        }
    }
    if let Some(kind) = span_kind(span.kind) {
        write_str_tag(w, &mut first, b"{\"key\":\"span.kind\",\"type\":\"string\",\"value\":\"", kind);
    }
    if let Some(status) = &span.status {
        match StatusCode::try_from(status.code) {
            Ok(StatusCode::Ok) => {
                separate(w, &mut first);
                w.raw(b"{\"key\":\"otel.status_code\",\"type\":\"string\",\"value\":\"OK\"}");
            }
            Ok(StatusCode::Error) => {
                separate(w, &mut first);
                w.raw(b"{\"key\":\"otel.status_code\",\"type\":\"string\",\"value\":\"ERROR\"},{\"key\":\"error\",\"type\":\"bool\",\"value\":\"true\"}");
            }
            _ => {}
        }
        if !status.message.is_empty() {
            write_str_tag(
                w,
                &mut first,
                b"{\"key\":\"otel.status_description\",\"type\":\"string\",\"value\":\"",
                status.message,
            );
        }
    }
    if !span.trace_state.is_empty() {
        write_str_tag(w, &mut first, b"{\"key\":\"w3c.tracestate\",\"type\":\"string\",\"value\":\"", span.trace_state);
    }
    w.raw(b"],\"logs\":[");
    let mut first = true;
    for (e, event) in span.events().enumerate() {
        let event = event?;
        let decoded = decoded.and_then(|d| d.events.get(e));
        separate(w, &mut first);
        w.raw(b"{\"timestamp\":");
        w.u64(event.time_unix_nano / 1_000);
        w.raw(b",\"fields\":[");
        let mut first_field = true;
        if !event.name.is_empty() {
            write_str_tag(w, &mut first_field, b"{\"key\":\"event\",\"type\":\"string\",\"value\":\"", event.name);
        }
        for (i, kv) in event.attributes().enumerate() {
            separate(w, &mut first_field);
            write_tag(w, &kv?, decoded.and_then(|d| d.attributes.get(i)), scratch)?;
        }
        w.raw(b"]}");
    }
    w.raw(b"]");
    Ok(())
}

/// What a document costs beyond its JSON: its bulk action line (index and id) and bookkeeping.
const DOCUMENT_OVERHEAD: usize = 128;

/// What a dead letter costs beyond its payload: the envelope's other fields (the reason, the source
/// and target names) and bookkeeping.
const LETTER_OVERHEAD: usize = 256;

/// The largest array or list value (its protobuf bytes) decoded alone when a record is read in
/// place: decoding one costs up to tens of times its bytes, so a larger one has the whole record
/// priced first (`limits.max_record_decoded_bytes`) and decoded with it.
const NESTED_DECODE_MAX: usize = 4096;

/// What joins a span's own part to its process part.
const PROCESS_KEY: &[u8] = b",\"process\":";

/// The most a buffer kept between records may hold beyond its documents.
const RETAINED: usize = 64 * 1024;

/// The least a fresh document buffer holds: documents are written one after another into it and
/// split off without copying, so a new allocation serves several of them.
const CHUNK: usize = 8 * 1024;

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

/// Maps one protobuf record (`proto`, the record's bytes) to its documents, into `out` (cleared
/// first), reading it in place ([`wire`]): the live path. Returns false, with `out` cleared, when
/// the record is not for this path: an encoding the reader leaves to prost, a span that would be
/// refused, or documents over `limits.max_record_document_bytes`; the caller then decodes it with
/// prost and maps it with [`map_request`], which also makes the dead letters. On true, every span
/// has its document, exactly the documents [`map_request`] makes of the decoded record.
pub fn map_record(
    proto: &[u8],
    routing: &Routing,
    limits: DocumentLimits,
    reference: RecordTime,
    out: &mut Mapped,
) -> bool {
    out.clear();
    let mut buffers = std::mem::take(&mut out.buffers);
    let mapped = map_wire(proto, None, Digests::new(proto), routing, limits, reference, out, &mut buffers, Pass::Fast);
    retain(&mut buffers);
    out.buffers = buffers;
    if mapped.is_err() {
        out.clear();
    }
    mapped.is_ok()
}

/// Maps every span of `request` to its documents, into `out` (cleared first): one span document
/// per span, and one service document per distinct (service, operation, day) of each resource.
/// `proto` is the request's protobuf bytes as read (the record itself, or for an OTLP/JSON record
/// its protobuf encoding), which each span's `_id` is derived from; `reference` is the time its
/// spans are judged against.
///
/// Spans starting outside [reference − max age, reference + max skew] are listed in `out.refused`
/// instead, unless the routing clamps them to the nearest allowed day; so are spans whose document
/// would be over `limits.max_document_bytes` (their service documents are not made either). Each
/// span and service document costs what [`DocumentLimits::max_record_document_bytes`] says; once
/// the sum passes it, mapping stops and `out.over` says so, with nothing kept.
///
/// The documents' bulk items are written one after another into a buffer `out` keeps between
/// records, each split off as its own [`Bytes`] without a copy. The request is read from `proto`
/// when [`wire`] takes it, else from prost's encoding of it (which it always takes). A span's dead
/// letter is priced by its, its scope's and its resource's bytes as read.
pub fn map_request(
    request: &ExportTraceServiceRequest,
    proto: &[u8],
    routing: &Routing,
    limits: DocumentLimits,
    reference: RecordTime,
    out: &mut Mapped,
) {
    let spans = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
    let mut buffers = std::mem::take(&mut out.buffers);
    let mut map = |bytes: &[u8], ids: &[u8], out: &mut Mapped| {
        out.clear();
        out.spans = spans;
        map_wire(bytes, Some(request), Digests::new(ids), routing, limits, reference, out, &mut buffers, Pass::Full)
    };
    // Read from the bytes as they are, when the reader takes them (it then reads what prost
    // decoded, value for value); else from prost's encoding of the request, which it always takes.
    let walks = SpanSources::count(proto) == Ok(spans);
    let mut mapped = if walks { map(proto, proto, out) } else { Err(Unusual) };
    if mapped.is_err() {
        // prost decoded `proto` into `request`, so the walk finds the same spans; should it ever
        // not, the ids come from the request's own encoding, which is as deterministic.
        let canonical = request.encode_to_vec();
        mapped = map(&canonical, if walks { proto } else { &canonical[..] }, out);
    }
    retain(&mut buffers);
    out.buffers = buffers;
    if mapped.is_err() {
        // Cannot happen (the reader takes prost's own encoding): every span refused rather than
        // anything indexed from a half-read record.
        out.clear();
        out.spans = spans;
        for (ri, resource_spans) in request.resource_spans.iter().enumerate() {
            for (si, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
                out.refused.extend((0..scope_spans.spans.len()).map(|pi| Refused {
                    position: [ri, si, pi],
                    refusal: Refusal::Unwritable,
                    reason: "the record's own encoding cannot be read back".into(),
                }));
            }
        }
    }
}

/// A large resource's process part or a large document's room is not kept for the records after
/// it: the buffers kept between records stay small.
fn retain(buffers: &mut Buffers) {
    if buffers.process.capacity() > RETAINED {
        buffers.process = Vec::new();
    }
    if buffers.arena.capacity() > RETAINED {
        buffers.arena = BytesMut::new();
    }
}

/// Which mapping [`map_wire`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The live path on the record's own bytes: a span to refuse, or a record over its bound, ends
    /// it ([`Unusual`]), to be mapped again by [`Pass::Full`] with the dead letters' prices.
    Fast,
    /// With the decoded request: refusals and the record's bound as documented on
    /// [`map_request`]; `out.spans` is set by the caller.
    Full,
}

/// The mapping of the request in `proto`, read in place (`decoded` is it as prost decoded it, when
/// it was: `proto` is then its encoding); each span's digest from `digests`, in order. See
/// [`map_request`] for what it produces, and [`Pass`] for how it ends.
#[allow(clippy::too_many_arguments)]
fn map_wire(
    proto: &[u8],
    decoded: Option<&ExportTraceServiceRequest>,
    mut digests: Digests<'_>,
    routing: &Routing,
    limits: DocumentLimits,
    reference: RecordTime,
    out: &mut Mapped,
    buffers: &mut Buffers,
    pass: Pass,
) -> Read<()> {
    let names = &routing.names;
    let at = reference.micros();
    let (oldest, newest) = (at.saturating_sub(routing.max_age_micros), at.saturating_add(routing.max_skew_micros));
    let max_record = limits.max_record_document_bytes;
    let mut seen = 0;
    // The last document's size: room reserved for the next one, as a record's spans are alike.
    let mut last_len = 0;
    let mut services = Operations::default();
    for (ri, resource_spans) in wire::request(proto).enumerate() {
        // The live path takes a resource read before from `buffers.resources`; the full path reads
        // every resource itself (its process part may hold values only prost decoded).
        let resource_spans = match pass {
            Pass::Fast => wire::ResourceSpans::read_with(resource_spans?, |r| buffers.resources.service(r))?,
            Pass::Full => wire::ResourceSpans::read_with(resource_spans?, wire::read_resource)?,
        };
        let decoded_resource = decoded.and_then(|d| d.resource_spans.get(ri));
        let decoded_attributes = decoded_resource.map(|r| r.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]));
        let service = resource_spans.service;
        // Written once per resource (when it has a span to index) into `buffers.process`, kept up
        // to `max_document_bytes`: its length, and whether it was kept.
        let mut process: Option<(usize, bool)> = None;
        for (si, scope_spans) in resource_spans.scope_spans().enumerate() {
            let scope_spans = wire::ScopeSpans::read(scope_spans?)?;
            let scope = scope_spans.scope.as_ref();
            for (pi, span) in scope_spans.spans().enumerate() {
                let span = wire::Span::read(span?)?;
                let decoded_span = decoded_resource.and_then(|r| r.scope_spans.get(si)).and_then(|s| s.spans.get(pi));
                seen += 1;
                let position = [ri, si, pi];
                // The dead letter if the span is refused: a request of this span alone, its resource
                // and scope, in an envelope (prost's encoding of each is at most its bytes as read).
                let letter = || {
                    // prost's encoding of a part is usually at most its bytes as read, but not
                    // always (a negative enum written in five bytes takes ten): the larger.
                    let decoded_rs = decoded_resource;
                    let resource = resource_spans
                        .resource
                        .map_or(0, <[u8]>::len)
                        .max(decoded_rs.and_then(|r| r.resource.as_ref()).map_or(0, prost::Message::encoded_len));
                    let scope_len = scope.map_or(0, |s| s.bytes.len()).max(
                        decoded_rs
                            .and_then(|r| r.scope_spans.get(si))
                            .and_then(|s| s.scope.as_ref())
                            .map_or(0, prost::Message::encoded_len),
                    );
                    let span_len = span.bytes.len().max(decoded_span.map_or(0, prost::Message::encoded_len));
                    resource + scope_len + span_len + LETTER_OVERHEAD
                };
                let start = micros(span.start_time_unix_nano);
                let day = if (oldest..=newest).contains(&start) {
                    Some(start)
                } else if routing.clamp {
                    Some(start.clamp(oldest, newest))
                } else {
                    None
                };
                let digest = digests.next();
                let refused = |refusal: Refusal, reason: String| {
                    if pass == Pass::Fast { Err(Unusual) } else { Ok(Refused { position, refusal, reason }) }
                };
                let cost = match (day, digest) {
                    _ if span.trace_id.len() != 16
                        || span.span_id.len() != 8
                        || !(span.parent_span_id.is_empty() || span.parent_span_id.len() == 8) =>
                    {
                        out.refused.push(refused(
                            Refusal::InvalidId,
                            format!(
                                "trace id of {} bytes, span id of {} bytes, parent span id of {} bytes: OTLP ids are 16, 8 and 8 (or no parent)",
                                span.trace_id.len(),
                                span.span_id.len(),
                                span.parent_span_id.len()
                            ),
                        )?);
                        letter()
                    }
                    (None, _) => {
                        let when = DateTime::from_timestamp_micros(start)
                            .map_or_else(|| start.to_string(), |t| t.to_rfc3339());
                        out.refused.push(refused(
                            Refusal::OutOfWindow,
                            format!(
                                "span start {when} is outside the accepted window around {reference} (max_span_age, max_clock_skew)"
                            ),
                        )?);
                        letter()
                    }
                    // Cannot happen (the walk reads the spans the reader reads); refused rather
                    // than given an id that is not its own.
                    (Some(_), None) => {
                        out.refused.push(refused(
                            Refusal::Unwritable,
                            "span not found in the record's protobuf bytes".into(),
                        )?);
                        letter()
                    }
                    (Some(day), Some(digest)) => {
                        let Buffers { arena, process: process_json, scratch, resources } = &mut *buffers;
                        let max = limits.max_document_bytes;
                        let resource_bytes = resource_spans.resource.unwrap_or_default();
                        let (process_len, process_fits) = match process {
                            Some(written) => written,
                            None => {
                                process_json.clear();
                                let kept =
                                    if pass == Pass::Fast { resources.process(resource_bytes, max) } else { None };
                                match kept {
                                    Some((json, len, fits)) => {
                                        process_json.extend_from_slice(json);
                                        *process.insert((len, fits))
                                    }
                                    None => {
                                        let mut w = Writer::new(process_json, max);
                                        write_process(&mut w, service, &resource_spans, decoded_attributes, scratch)?;
                                        let (len, fits) = (w.len(), w.fits());
                                        if pass == Pass::Fast {
                                            resources.keep_process(resource_bytes, process_json, len, fits, max);
                                        }
                                        *process.insert((len, fits))
                                    }
                                }
                            }
                        };
                        let part = Part { json: process_json, len: process_len, fits: process_fits };
                        let date = day_of(day);
                        let span_doc =
                            SpanDoc { span: &span, decoded: decoded_span, scope, date, digest, ids: routing.trace_ids };
                        match span_document(arena, scratch, names, &span_doc, &part, max, last_len)? {
                            Written::Doc(mut doc) => {
                                let len = doc.source_len();
                                last_len = len;
                                doc.position = Some(position);
                                services.insert(date, span.name);
                                out.docs.push(doc);
                                len + DOCUMENT_OVERHEAD
                            }
                            Written::TooLarge(len) => {
                                out.refused.push(refused(
                                    Refusal::TooLarge,
                                    format!(
                                        "span document of {len} bytes is over limits.max_document_bytes ({})",
                                        ByteSize::from_usize(limits.max_document_bytes)
                                    ),
                                )?);
                                len.max(letter())
                            }
                        }
                    }
                };
                out.bytes = out.bytes.saturating_add(cost);
                if out.bytes > max_record {
                    if pass == Pass::Fast {
                        return Err(Unusual);
                    }
                    out.refuse_whole(seen, max_record);
                    return Ok(());
                }
            }
        }
        for (date, operation) in services.drain() {
            let doc = write_service_document(&mut buffers.arena, names, service, operation, date);
            out.bytes = out.bytes.saturating_add(doc.source_len() + DOCUMENT_OVERHEAD);
            out.docs.push(doc);
            if out.bytes > max_record {
                if pass == Pass::Fast {
                    return Err(Unusual);
                }
                out.refuse_whole(seen, max_record);
                return Ok(());
            }
        }
    }
    if pass == Pass::Fast {
        out.spans = seen;
    }
    Ok(())
}

/// A resource's distinct (day, operation) pairs: its service documents. Kept in the order first seen
/// (so documents come in a stable order); past [`FEW_OPERATIONS`] also as a set, so each span's
/// look-up is O(1) whatever the number of operations (a record's resource usually has one or two,
/// found faster in the list than by hashing). Both borrow from the request and hold at most one
/// entry per span document kept, which the record's bound counts.
#[derive(Default)]
struct Operations<'a> {
    order: Vec<(NaiveDate, &'a str)>,
    known: HashSet<(NaiveDate, &'a str)>,
}

/// Up to this many pairs, a resource's operations are looked up in their list.
const FEW_OPERATIONS: usize = 8;

impl<'a> Operations<'a> {
    fn insert(&mut self, date: NaiveDate, operation: &'a str) {
        if self.order.len() < FEW_OPERATIONS {
            if !self.order.contains(&(date, operation)) {
                self.order.push((date, operation));
            }
            return;
        }
        if self.known.is_empty() {
            self.known.extend(self.order.iter().copied());
        }
        if self.known.insert((date, operation)) {
            self.order.push((date, operation));
        }
    }

    /// The pairs in the order first seen; empty afterwards, for the next resource.
    fn drain(&mut self) -> std::vec::Drain<'_, (NaiveDate, &'a str)> {
        self.known.clear();
        self.order.drain(..)
    }
}

/// The UTC date of `micros` since the epoch (1970-01-01 for a time chrono cannot represent).
fn day_of(micros: i64) -> NaiveDate {
    DateTime::from_timestamp_micros(micros).unwrap_or_default().date_naive()
}

fn micros(nanos: u64) -> i64 {
    i64::try_from(nanos / 1_000).unwrap_or(i64::MAX)
}

/// What [`span_document`] made.
enum Written {
    /// The document, not yet positioned.
    Doc(Document),
    /// The document would be this many bytes, over the limit: nothing was kept.
    TooLarge(usize),
}

/// A resource's process part (`{"serviceName":…,"tags":[…]}`): its JSON if it was kept, its length.
struct Part<'a> {
    json: &'a [u8],
    len: usize,
    fits: bool,
}

/// A span to write, with what its index and `_id` are made of.
struct SpanDoc<'a> {
    span: &'a wire::Span<'a>,
    /// The span as prost decoded it, when the record was.
    decoded: Option<&'a Span>,
    /// How its trace ids are written.
    ids: TraceIds,
    scope: Option<&'a wire::Scope<'a>>,
    /// The day of its index.
    date: NaiveDate,
    /// Its source's digest ([`spanline_common::spans::SpanSource::digest`]), the end of its `_id`.
    digest: u64,
}

/// Makes sure `arena` has `room` bytes to spare for the next document: a buffer no document holds
/// any more is reused, else a new one of at least [`CHUNK`] bytes is taken.
fn reserve_room(arena: &mut BytesMut, room: usize) {
    debug_assert!(arena.is_empty(), "the previous document was split off");
    if arena.capacity() < room {
        arena.reserve(room.max(CHUNK));
    }
}

/// The span's bulk item, into `arena`: the action line, then its own part written up to the room
/// the process part leaves in `max` bytes, then the process part; `size_hint` is the document's
/// likely size. The document (source) is `own part + "," + "process":… + "}"`, exactly the bytes
/// serde_json wrote for it with `process` as its last field.
fn span_document(
    arena: &mut BytesMut,
    scratch: &mut Vec<u8>,
    names: &IndexNames,
    doc: &SpanDoc<'_>,
    process: &Part<'_>,
    max: usize,
    size_hint: usize,
) -> Read<Written> {
    let SpanDoc { span, decoded, scope, date, digest, ids } = *doc;
    // The process part and the closing brace, after the own part.
    let rest = PROCESS_KEY.len().saturating_add(process.len).saturating_add(1);
    // Room for the whole item, so appending the process part does not move it.
    reserve_room(arena, ACTION_MAX + names.longest() + size_hint.saturating_add(64).min(max.saturating_add(1)));
    // From the record's bytes, not from the document: a later version writing other JSON for the
    // same span must land on the same document.
    let (index_len, id_len) = write_action(arena, names, DocKind::Span, date, |arena| {
        push_hex_bytes(arena, span.trace_id);
        arena.put(b"_");
        push_hex_bytes(arena, span.span_id);
        arena.put(b"_");
        push_hex_u64(arena, digest);
    });
    let mut w = Writer::new(arena, max.saturating_sub(rest));
    if let Err(unusual) = write_span_head(&mut w, span, decoded, scope, ids, scratch) {
        // Nothing of a document half written stays for the next one.
        arena.clear();
        return Err(unusual);
    }
    let len = w.len().saturating_add(rest);
    if !w.fits() || !process.fits || len > max {
        arena.clear();
        return Ok(Written::TooLarge(len));
    }
    // Room for the rest at once: a first document (no size hint yet) grows once, by what it needs.
    let tail = PROCESS_KEY.len() + process.json.len() + 2;
    if arena.capacity() - arena.len() < tail {
        arena.reserve(tail);
    }
    arena.put(PROCESS_KEY);
    arena.put(process.json);
    arena.put(b"}\n");
    let end_micros = i64::try_from(span.end_time_unix_nano / 1_000).unwrap_or(i64::MAX);
    Ok(Written::Doc(Document {
        ndjson: arena.split().freeze(),
        index_len,
        id_len,
        kind: DocKind::Span,
        position: None,
        end_micros,
    }))
}

/// The longest bulk action line but the index name: `{"create":{"_index":"`, the date,
/// `","_id":"`, the longest span id (32 + 1 + 16 + 1 + 16 hex), `"}}` and the newline.
const ACTION_MAX: usize = ACTION_HEAD.len() + 10 + ACTION_ID.len() + 66 + ACTION_TAIL.len();

/// Writes a bulk action line for a document of `kind` on `date` into `arena` (empty), its id
/// written by `id`; the lengths of the index name and of the id.
fn write_action(
    arena: &mut BytesMut,
    names: &IndexNames,
    kind: DocKind,
    date: NaiveDate,
    id: impl FnOnce(&mut BytesMut),
) -> (usize, usize) {
    arena.put(ACTION_HEAD);
    names.push(kind, date, arena);
    let index_len = arena.len() - ACTION_HEAD.len();
    arena.put(ACTION_ID);
    let id_start = arena.len();
    id(arena);
    let id_len = arena.len() - id_start;
    arena.put(ACTION_TAIL);
    (index_len, id_len)
}

/// The service document for (service, operation) in the service index of `date`, with Jaeger's id:
/// FNV-64a of the service name followed by the operation name, as unpadded lowercase hex.
fn write_service_document(
    arena: &mut BytesMut,
    names: &IndexNames,
    service: &str,
    operation: &str,
    date: NaiveDate,
) -> Document {
    reserve_room(arena, ACTION_MAX + names.longest() + 40 + 2 * (service.len() + operation.len()));
    let (index_len, id_len) = write_action(arena, names, DocKind::Service, date, |arena| {
        push_hex_u64(arena, fnv64a(&[service.as_bytes(), operation.as_bytes()]));
    });
    let mut w = Writer::new(arena, usize::MAX);
    w.raw(b"{\"serviceName\":");
    w.str(service.as_bytes());
    w.raw(b",\"operationName\":");
    w.str(operation.as_bytes());
    w.raw(b"}\n");
    Document {
        ndjson: arena.split().freeze(),
        index_len,
        id_len,
        kind: DocKind::Service,
        position: None,
        end_micros: 0,
    }
}

/// The `index` action's head, as long as [`ACTION_HEAD`] (a space after the colon), so that
/// [`Document`]'s accessors read a dependency document's index, id and source where they read a
/// span's.
const INDEX_HEAD: &[u8] = b"{\"index\": {\"_index\":\"";
const _: () = assert!(INDEX_HEAD.len() == ACTION_HEAD.len());

/// Reads what the dependency links need of every span of a protobuf record, in order, into
/// `each` (read in place, like [`map_record`]). False when the reader leaves the record to prost:
/// the caller reads prost's encoding of the decoded request instead, which it always takes. A span
/// without a 16-byte trace id or an 8-byte span id is passed over (the mapping refuses it).
pub fn span_facts(proto: &[u8], mut each: impl FnMut(&crate::dependencies::SpanFact<'_>)) -> bool {
    let mut links: Vec<[u8; 8]> = Vec::new();
    let mut read = || -> Read<()> {
        for resource_spans in wire::request(proto) {
            let resource_spans = wire::ResourceSpans::read_with(resource_spans?, wire::read_resource)?;
            for scope_spans in resource_spans.scope_spans() {
                for span in wire::ScopeSpans::read(scope_spans?)?.spans() {
                    let span = wire::Span::read(span?)?;
                    let (Ok(trace_id), Ok(span_id)) =
                        (<[u8; 16]>::try_from(span.trace_id), <[u8; 8]>::try_from(span.span_id))
                    else {
                        continue;
                    };
                    let parent = <[u8; 8]>::try_from(span.parent_span_id).ok().filter(|p| *p != [0; 8]);
                    let mut peer_service = None;
                    for kv in span.attributes() {
                        let kv = kv?;
                        if kv.key == b"peer.service"
                            && let Some(wire::AnyValue::String(value)) = kv.value
                        {
                            peer_service = std::str::from_utf8(value).ok().filter(|v| !v.is_empty());
                        }
                    }
                    links.clear();
                    for link in span.links() {
                        let link = link?;
                        if link.trace_id == span.trace_id
                            && let Ok(id) = <[u8; 8]>::try_from(link.span_id)
                        {
                            links.push(id);
                        }
                    }
                    each(&crate::dependencies::SpanFact {
                        trace_id,
                        span_id,
                        parent,
                        links: &links,
                        kind: span.kind,
                        service: resource_spans.service,
                        peer_service,
                    });
                }
            }
        }
        Ok(())
    };
    read().is_ok()
}

/// The document of one partition's links in one window, as Jaeger's dependency reader reads it
/// (`{"timestamp": RFC 3339, "dependencies": [{"parent", "child", "callCount"}]}`), in the daily
/// dependencies index of the window's start. Its `_id` is the topic, the partition and the window:
/// written with `index`, so a window counted again replaces what was there.
pub fn dependency_document(
    names: &IndexNames,
    topic: &str,
    partition: i32,
    window: &crate::dependencies::WindowCounts,
) -> Document {
    let index = names.on(DocKind::Dependencies, day_of(window.start_ms.saturating_mul(1000)));
    let id = format!("{topic}-{partition}-{}", window.start_ms);
    let timestamp = chrono::DateTime::from_timestamp_millis(window.start_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let links: Vec<serde_json::Value> = window
        .links
        .iter()
        .map(|(parent, child, calls)| serde_json::json!({"parent": &**parent, "child": &**child, "callCount": calls}))
        .collect();
    let source = serde_json::json!({"timestamp": timestamp, "dependencies": links}).to_string();
    let mut ndjson = BytesMut::with_capacity(index.len() + id.len() + source.len() + 48);
    for part in [INDEX_HEAD, index.as_bytes(), ACTION_ID, id.as_bytes(), ACTION_TAIL, source.as_bytes(), b"\n"] {
        ndjson.extend_from_slice(part);
    }
    Document {
        ndjson: ndjson.freeze(),
        index_len: index.len(),
        id_len: id.len(),
        kind: DocKind::Dependencies,
        position: None,
        end_micros: 0,
    }
}

/// The service document for (service, operation), with Jaeger's id: FNV-64a of the service name
/// followed by the operation name, as unpadded lowercase hex.
pub fn service_document(service: &str, operation: &str, index: &str) -> Document {
    let mut source = Vec::new();
    let mut w = Writer::new(&mut source, usize::MAX);
    w.raw(b"{\"serviceName\":");
    w.str(service.as_bytes());
    w.raw(b",\"operationName\":");
    w.str(operation.as_bytes());
    w.raw(b"}");
    let id = format!("{:x}", fnv64a(&[service.as_bytes(), operation.as_bytes()]));
    Document::new(DocKind::Service, index, &id, &source, None, 0)
}

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::{ArrayValue, InstrumentationScope, KeyValue},
        resource::v1::Resource,
        trace::v1::{
            ResourceSpans, ScopeSpans, Span, Status,
            span::{Event, Link},
        },
    };
    use serde_json::{Value, json};
    use spanline_common::ids::to_hex;

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
            trace_ids: TraceIds::Jaeger,
        }
    }

    /// `request` as a record of its protobuf encoding with the Kafka timestamp `at_micros`.
    fn map(request: &ExportTraceServiceRequest, routing: &Routing, at_micros: i64) -> Mapped {
        map_bytes(request, &request.encode_to_vec(), routing, RecordTime::Timestamp(at_micros))
    }

    /// Ids of the wrong length would make a document `_id` OpenSearch refuses for the whole bulk
    /// request (held forever as a configuration error): the span is refused alone instead.
    #[test]
    fn spans_with_ids_of_the_wrong_length_are_refused_alone() {
        let mut request = sample();
        let spans = &mut request.resource_spans[0].scope_spans[0].spans;
        let start = micros(spans[0].start_time_unix_nano);
        spans[0].trace_id = vec![7; 300];
        spans[1].parent_span_id = vec![1; 3];
        let mapped = map(&request, &routing(""), start);
        let refused: Vec<([usize; 3], Refusal)> = mapped.refused.iter().map(|r| (r.position, r.refusal)).collect();
        assert_eq!(refused, vec![([0, 0, 0], Refusal::InvalidId), ([0, 0, 1], Refusal::InvalidId)]);
        assert!(mapped.refused[0].reason.contains("trace id of 300 bytes"), "{}", mapped.refused[0].reason);
        assert!(mapped.docs.iter().all(|d| d.kind != DocKind::Span), "no span document for either");
    }

    /// `request` decoded from `proto`, judged against `reference`.
    fn map_bytes(
        request: &ExportTraceServiceRequest,
        proto: &[u8],
        routing: &Routing,
        reference: RecordTime,
    ) -> Mapped {
        let mut out = Mapped::default();
        map_request(request, proto, routing, DocumentLimits::UNBOUNDED, reference, &mut out);
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
        assert_eq!(span.index(), "jaeger-span-2026-11-25");
        let doc: Value = serde_json::from_slice(span.source()).expect("json");
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
        let doc: Value = serde_json::from_slice(docs[0].source()).expect("json");
        assert!(doc.get("parentSpanID").is_none());
        assert!(doc.get("flags").is_none());
        assert_eq!(doc["references"], json!([]));
        assert_eq!(doc["process"]["serviceName"], "unknown_service");
        assert_eq!(docs[0].index(), "prod-jaeger-span-1970-01-01");
        assert_eq!(docs[1].index(), "prod-jaeger-service-1970-01-01");
    }

    #[test]
    fn spans_outside_the_window_are_listed_or_clamped() {
        let now = 1_795_608_000_000_000_i64; // 2026-11-25T12:00:00Z
        let hour = 3_600_000_000_i64;
        let mut r = Routing {
            names: IndexNames::new(""),
            max_age_micros: 72 * hour,
            max_skew_micros: hour,
            clamp: false,
            trace_ids: TraceIds::Jaeger,
        };
        let mut request = sample();
        let spans = &mut request.resource_spans[0].scope_spans[0].spans;
        spans[0].start_time_unix_nano = 1_000; // 1970
        spans[1].start_time_unix_nano = u64::try_from(now + 5 * hour).expect("positive") * 1_000; // 5 h ahead
        let refused = map(&request, &r, now);
        assert!(refused.docs.is_empty(), "no document, not even a service document, for refused spans");
        assert_eq!(refused.refused.iter().map(|o| o.position).collect::<Vec<_>>(), vec![[0, 0, 0], [0, 0, 1]]);
        assert!(refused.refused.iter().all(|o| o.refusal == Refusal::OutOfWindow));
        assert!(refused.refused[0].reason.contains("1970"));
        r.clamp = true;
        let clamped = map(&request, &r, now);
        let indices: Vec<&str> = clamped.docs.iter().map(|d| d.index()).collect();
        assert_eq!(
            indices,
            vec![
                "jaeger-span-2026-11-22",
                "jaeger-span-2026-11-25",
                "jaeger-service-2026-11-22",
                "jaeger-service-2026-11-25"
            ]
        );
        let doc: Value = serde_json::from_slice(clamped.docs[0].source()).expect("json");
        assert_eq!(doc["startTime"], 1, "the document keeps the span's own start time");
    }

    /// Attributes whose JSON needs escaping, every value kind, on the resource, the span and an event.
    fn tricky() -> ExportTraceServiceRequest {
        use opentelemetry_proto::tonic::common::v1::KeyValueList;
        let mut request = sample();
        let odd = "quote \" backslash \\ newline \n tab \t control \u{1} unicode é ✓ 😀";
        let values = vec![
            kv("s", any_value::Value::StringValue(odd.into())),
            kv("i", any_value::Value::IntValue(-42)),
            kv("d", any_value::Value::DoubleValue(1e300)),
            kv("b", any_value::Value::BytesValue((0..=255).collect())),
            kv(
                "a",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue { value: Some(any_value::Value::StringValue(odd.into())) },
                        AnyValue { value: Some(any_value::Value::BytesValue(vec![1, 2])) },
                        AnyValue { value: None },
                    ],
                }),
            ),
            kv(
                "kv",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("inner", any_value::Value::BoolValue(false))],
                }),
            ),
            KeyValue { key: "none".into(), value: None, ..Default::default() },
            kv(odd, any_value::Value::StringValue(String::new())),
        ];
        let resource = request.resource_spans[0].resource.as_mut().expect("resource");
        resource.attributes.extend(values.clone());
        let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
        span.attributes.extend(values.clone());
        span.events[0].attributes.extend(values);
        span.name = odd.into();
        request
    }

    #[test]
    fn documents_are_byte_stable() {
        // The FNV-64a of every document's index and source of two requests, as released: a change
        // here changes what Jaeger reads. (Checked equal to the documents of the release before ids
        // moved to the record bytes.) Ids do not depend on it: `ids_are_pinned_to_the_record`.
        for (request, want) in [(sample(), 0x8643_49ac_f40a_feb0_u64), (tricky(), 0x39a7_580e_86a7_ec0f_u64)] {
            let docs = map(&request, &routing(""), 1_795_608_000_000_000).docs;
            let parts: Vec<&[u8]> = docs.iter().flat_map(|d| [d.index().as_bytes(), d.source()]).collect();
            let got = fnv64a(&parts);
            assert_eq!(got, want, "documents changed: {got:#x}\n{}", String::from_utf8_lossy(docs[0].source()));
        }
    }

    #[test]
    fn ids_are_pinned_to_the_record() {
        // Each span's id is its ids and the digest of its, its scope's and its resource's bytes
        // (FNV-64a each, as `SpanSource::digest` combines them), here rebuilt from the parts.
        let request = sample();
        let rs = &request.resource_spans[0];
        let resource = fnv64a(&[&rs.resource.as_ref().expect("resource").encode_to_vec()]);
        let scope = fnv64a(&[&rs.scope_spans[0].scope.as_ref().expect("scope").encode_to_vec()]);
        let docs = map(&request, &routing(""), NOW).docs;
        for (doc, span) in docs.iter().zip(&rs.scope_spans[0].spans) {
            let span_bytes = span.encode_to_vec();
            let digest = fnv64a(&[&resource.to_le_bytes(), &scope.to_le_bytes(), &span_bytes]);
            assert_eq!(doc.id(), format!("{}_{}_{digest:x}", to_hex(&span.trace_id), to_hex(&span.span_id)));
        }
        // As released: a change here changes every document id, so replaying a window indexed before
        // it would index its spans twice (docs/ingester.md, "Document ids and indices").
        let ids: Vec<&str> = docs.iter().map(|d| d.id()).collect();
        assert_eq!(
            ids,
            vec![
                "0102030405060708090a0b0c0d0e0f10_0102030405060708_25f720752c0b4855",
                "0102030405060708090a0b0c0d0e0f10_0303030303030303_a02e7faeeeb738ed",
                "881de2ed547db5b2",
            ]
        );
    }

    /// `request` as the worker maps it when it reads the record (Kafka timestamp `record_ms`) at
    /// `now_micros`, with Jaeger's default window.
    fn read_at(request: &ExportTraceServiceRequest, record_ms: i64, now_micros: i64, clamp: bool) -> Mapped {
        let hour = 3_600_000_000_i64;
        let window = Routing {
            names: IndexNames::new(""),
            max_age_micros: 72 * hour,
            max_skew_micros: hour,
            clamp,
            trace_ids: TraceIds::Jaeger,
        };
        let mut out = Mapped::default();
        let at = RecordTime::of(Some(record_ms), now_micros, &window);
        map_request(request, &request.encode_to_vec(), &window, DocumentLimits::UNBOUNDED, at, &mut out);
        out
    }

    #[test]
    fn the_same_record_gives_the_same_documents_whatever_day_it_is_read() {
        // Produced at NOW; span 0 started then, span 1 five days before (outside the 72 h window).
        let day = 24 * 3_600_000_000_i64;
        let mut request = sample();
        request.resource_spans[0].scope_spans[0].spans[1].start_time_unix_nano -= 5 * 86_400 * 1_000_000_000;
        for clamp in [false, true] {
            let first = read_at(&request, NOW / 1000, NOW, clamp);
            for later in [1, 4, 30, 400] {
                let again = read_at(&request, NOW / 1000, NOW + later * day, clamp);
                assert_eq!(again.docs, first.docs, "read {later} days later (clamp: {clamp})");
                assert_eq!(again.refused, first.refused, "read {later} days later (clamp: {clamp})");
            }
            let indices: Vec<&str> = first.docs.iter().map(|d| d.index()).collect();
            if clamp {
                // Span 1 goes to the oldest day of the window around the record, 72 h before NOW.
                assert_eq!(
                    indices,
                    vec![
                        "jaeger-span-2026-11-25",
                        "jaeger-span-2026-11-22",
                        "jaeger-service-2026-11-25",
                        "jaeger-service-2026-11-22"
                    ]
                );
            } else {
                assert_eq!(indices, vec!["jaeger-span-2026-11-25", "jaeger-service-2026-11-25"]);
                assert_eq!(first.refused.len(), 1);
                assert!(
                    first.refused[0].reason.contains("the record's Kafka timestamp 2026-11-25T12:00:00+00:00"),
                    "{}",
                    first.refused[0].reason
                );
            }
        }
    }

    #[test]
    fn the_record_time_is_its_timestamp_unless_it_has_none_that_can_be_real() {
        let hour = 3_600_000_000_i64;
        let window = Routing {
            names: IndexNames::new(""),
            max_age_micros: 72 * hour,
            max_skew_micros: hour,
            clamp: true,
            trace_ids: TraceIds::Jaeger,
        };
        let ms = NOW / 1000;
        assert_eq!(RecordTime::of(Some(ms - 3_600_000 * 96), NOW, &window), RecordTime::Timestamp(NOW - 96 * hour));
        assert_eq!(
            RecordTime::of(Some(ms + 3_600_000), NOW, &window),
            RecordTime::Timestamp(NOW + hour),
            "within skew"
        );
        for none in [None, Some(-1), Some(-5), Some(ms + 3_600_001)] {
            assert_eq!(RecordTime::of(none, NOW, &window), RecordTime::Ingestion(NOW), "{none:?}");
        }
        // A record without a timestamp is judged against the time it is read, and the reason says so.
        let mut request = sample();
        request.resource_spans[0].scope_spans[0].spans[1].start_time_unix_nano = 1_000;
        let mut out = Mapped::default();
        let mut strict = window.clone();
        strict.clamp = false;
        let at = RecordTime::of(None, NOW, &strict);
        map_request(&request, &request.encode_to_vec(), &strict, DocumentLimits::UNBOUNDED, at, &mut out);
        assert!(
            out.refused[0]
                .reason
                .contains("the ingestion time 2026-11-25T12:00:00+00:00 (the record has no usable Kafka timestamp)"),
            "{}",
            out.refused[0].reason
        );
    }

    #[test]
    fn ids_do_not_depend_on_the_mapping_output() {
        // The same record bytes mapped to other JSON (as a later version might): a span attribute,
        // an event and the resource's host written differently. The documents differ, the ids not.
        let request = sample();
        let proto = request.encode_to_vec();
        let mut remapped = request.clone();
        let rs = &mut remapped.resource_spans[0];
        rs.resource.as_mut().expect("resource").attributes[1] =
            kv("host.name", any_value::Value::StringValue("h2".into()));
        let span = &mut rs.scope_spans[0].spans[0];
        span.attributes[0] = kv("http.method", any_value::Value::StringValue("POST".into()));
        span.events.clear();
        let at = RecordTime::Timestamp(NOW);
        let before = map_bytes(&request, &proto, &routing(""), at);
        // The other documents, with the ids of the record as read.
        let mut after = Mapped::default();
        let mut buffers = Buffers::default();
        let other = remapped.encode_to_vec();
        map_wire(
            &other,
            Some(&remapped),
            Digests::new(&proto),
            &routing(""),
            DocumentLimits::UNBOUNDED,
            at,
            &mut after,
            &mut buffers,
            Pass::Fast,
        )
        .expect("maps");
        assert_eq!(before.docs.len(), after.docs.len());
        for (b, a) in before.docs.iter().zip(&after.docs).filter(|(b, _)| b.kind == DocKind::Span) {
            assert_ne!(b.source(), a.source(), "the mapping output changed");
            assert_eq!(b.id(), a.id(), "the id did not");
        }
    }

    #[test]
    fn distinct_spans_get_distinct_ids_and_a_changed_span_a_new_one() {
        let request = sample();
        let ids = |request: &ExportTraceServiceRequest| -> Vec<String> {
            map(request, &routing(""), NOW)
                .docs
                .into_iter()
                .filter(|d| d.kind == DocKind::Span)
                .map(|d| d.id().to_owned())
                .collect()
        };
        let base = ids(&request);
        assert_ne!(base[0], base[1]);
        assert!(base[0].starts_with("0102030405060708090a0b0c0d0e0f10_0102030405060708_"), "{}", base[0]);
        assert_eq!(ids(&request), base, "deterministic");
        // Span 1 given span 0's ids is span 0 byte for byte: the same document, the same id.
        let mut twin = request.clone();
        twin.resource_spans[0].scope_spans[0].spans[1].span_id = (1..=8).collect();
        assert_eq!(ids(&twin), vec![base[0].clone(), base[0].clone()]);
        // The same ids with other content (it ended later): same prefix, other digest.
        twin.resource_spans[0].scope_spans[0].spans[1].end_time_unix_nano += 1;
        let twins = ids(&twin);
        assert!(twins[1].starts_with("0102030405060708090a0b0c0d0e0f10_0102030405060708_") && twins[1] != twins[0]);
        // Span 1 re-encoded with a changed attribute: a new id for it, span 0 keeps its own.
        let mut changed = request.clone();
        changed.resource_spans[0].scope_spans[0].spans[1].attributes[0] =
            kv("http.method", any_value::Value::StringValue("PUT".into()));
        let after = ids(&changed);
        assert_eq!(after[0], base[0]);
        assert_ne!(after[1], base[1]);
        assert!(after[1].starts_with("0102030405060708090a0b0c0d0e0f10_0303030303030303_"), "{}", after[1]);
        // A changed resource or scope is part of every span's source.
        let mut resource = request.clone();
        resource.resource_spans[0]
            .resource
            .as_mut()
            .expect("resource")
            .attributes
            .push(kv("k8s.pod.name", any_value::Value::StringValue("p".into())));
        let mut scope = request.clone();
        scope.resource_spans[0].scope_spans[0].scope.as_mut().expect("scope").version = "1.3".into();
        for other in [ids(&resource), ids(&scope)] {
            assert!(other.iter().zip(&base).all(|(o, b)| o != b), "{other:?}");
        }
        // Many spans of one trace: every id distinct.
        let many = map(&hostile(0, 2_000, NOW_NANOS), &routing(""), NOW).docs;
        let distinct: HashSet<&str> = many.iter().filter(|d| d.kind == DocKind::Span).map(|d| d.id()).collect();
        assert_eq!(distinct.len(), 2_000);
    }

    #[test]
    fn a_json_record_gets_the_ids_of_its_protobuf_encoding() {
        // The worker maps an OTLP/JSON record with its canonical protobuf encoding as the source.
        let request = sample();
        let json = serde_json::to_vec(&request).expect("json");
        let decoded = spanline_common::otlp::decode_json(&json).expect("decodes");
        let from_json = map_bytes(&decoded, &decoded.encode_to_vec(), &routing(""), RecordTime::Timestamp(NOW));
        assert_eq!(from_json.docs, map(&request, &routing(""), NOW).docs);
    }

    #[test]
    fn bytes_prost_decodes_differently_from_the_walk_fall_back_to_its_encoding() {
        // Not the request's bytes at all (the walk finds no span): ids from the request's own encoding.
        let request = sample();
        let out = map_bytes(&request, b"", &routing(""), RecordTime::Timestamp(NOW));
        assert_eq!(out.docs, map(&request, &routing(""), NOW).docs);
    }

    /// One resource with a `resource_bytes` attribute and `spans` spans of one trace.
    fn hostile(resource_bytes: usize, spans: u64, start_unix_nano: u64) -> ExportTraceServiceRequest {
        let mut request = sample();
        let resource_spans = &mut request.resource_spans[0];
        resource_spans
            .resource
            .as_mut()
            .expect("resource")
            .attributes
            .push(kv("big", any_value::Value::StringValue("x".repeat(resource_bytes))));
        let template = resource_spans.scope_spans[0].spans[0].clone();
        resource_spans.scope_spans[0].spans = (0..spans)
            .map(|n| Span {
                span_id: (n + 1).to_be_bytes().to_vec(),
                name: format!("op-{n}"),
                start_time_unix_nano: start_unix_nano,
                end_time_unix_nano: start_unix_nano + 1_000,
                ..template.clone()
            })
            .collect();
        request
    }

    const NOW: i64 = 1_795_608_000_000_000;
    const NOW_NANOS: u64 = 1_795_608_000_000_000_000;

    fn limits(max_document_bytes: usize, max_record_document_bytes: usize) -> DocumentLimits {
        DocumentLimits { max_document_bytes, max_record_document_bytes }
    }

    fn map_within(
        request: &ExportTraceServiceRequest,
        limits: DocumentLimits,
    ) -> (Mapped, allocation_counter::AllocationInfo) {
        let mut out = Mapped::default();
        let proto = request.encode_to_vec();
        let info = allocation_counter::measure(|| {
            map_request(request, &proto, &routing(""), limits, RecordTime::Timestamp(NOW), &mut out);
        });
        (out, info)
    }

    #[test]
    fn a_record_over_its_bound_is_refused_whole_after_at_most_the_bound_plus_one_document() {
        // Issue 12: 3 000 spans sharing an 800 KiB resource attribute would make 2.4 GB of documents.
        let request = hostile(800 << 10, 3_000, NOW_NANOS);
        let (bound, per_doc) = (32 << 20, 1 << 20);
        let (out, info) = map_within(&request, limits(per_doc, bound));
        let over = out.over.expect("refused whole");
        assert!(out.docs.is_empty() && out.refused.is_empty(), "nothing of the record is kept");
        assert_eq!(over.spans, 3_000);
        assert!(over.counted > bound && over.counted <= bound + per_doc, "{over:?}");
        assert!(over.spans_seen < 50, "stopped at the bound: {over:?}");
        let reason = over.reason();
        assert!(reason.contains("limits.max_record_document_bytes (32MiB)"), "{reason}");
        // The work done: at most the bound, one document, and the process part, allocated in all.
        assert!(info.bytes_total < (bound + 4 * per_doc) as u64, "allocated {} bytes", info.bytes_total);
        assert!(info.bytes_max < (bound + 4 * per_doc) as u64, "peak {} bytes", info.bytes_max);
    }

    #[test]
    fn refused_spans_count_their_dead_letters_toward_the_record_bound() {
        // The same record from 1970: no document, but each span's dead letter carries the resource.
        let hour = 3_600_000_000_i64;
        let window = Routing {
            names: IndexNames::new(""),
            max_age_micros: 72 * hour,
            max_skew_micros: hour,
            clamp: false,
            trace_ids: TraceIds::Jaeger,
        };
        let within = |request: &ExportTraceServiceRequest| {
            let mut out = Mapped::default();
            let proto = request.encode_to_vec();
            let info = allocation_counter::measure(|| {
                map_request(request, &proto, &window, limits(1 << 20, 32 << 20), RecordTime::Timestamp(NOW), &mut out);
            });
            (out, info)
        };
        let (out, info) = within(&hostile(800 << 10, 3_000, 1_000));
        let over = out.over.expect("refused whole");
        assert!(over.spans_seen < 50, "{over:?}");
        assert!(info.bytes_total < 40 << 20, "allocated {} bytes", info.bytes_total);
        // A few such spans stay under the bound: refused alone, each with its reason.
        let (out, _) = within(&hostile(800 << 10, 3, 1_000));
        assert!(out.over.is_none());
        assert_eq!(out.refused.len(), 3);
        assert!(out.bytes > 3 * (800 << 10), "each refused span costs its dead letter: {}", out.bytes);
    }

    #[test]
    fn a_span_over_max_document_bytes_is_refused_alone() {
        let mut request = sample();
        let spans = &mut request.resource_spans[0].scope_spans[0].spans;
        spans[1].name = "huge".into();
        spans[1].attributes.push(kv("blob", any_value::Value::StringValue("y".repeat(10_000))));
        let (out, info) = map_within(&request, limits(4096, 1 << 20));
        assert!(out.over.is_none());
        assert_eq!(out.refused.len(), 1);
        let refused = &out.refused[0];
        assert_eq!((refused.position, refused.refusal), ([0, 0, 1], Refusal::TooLarge));
        assert!(refused.reason.contains("over limits.max_document_bytes (4KiB)"), "{}", refused.reason);
        let kinds: Vec<_> = out.docs.iter().map(|d| (d.kind, d.position)).collect();
        assert_eq!(
            kinds,
            vec![(DocKind::Span, Some([0, 0, 0])), (DocKind::Service, None)],
            "no service document for it"
        );
        // Counted, not kept: the oversize document was never held whole.
        assert!(info.bytes_max < 16_000, "peak {} bytes", info.bytes_max);
        assert!(out.bytes > 10_000, "its bytes count toward the record: {}", out.bytes);
    }

    #[test]
    fn a_large_array_value_is_counted_not_held() {
        // An array attribute whose OTLP/JSON is about 1 MB, in a span whose documents may have
        // 4 KiB: escaped into the document as serde_json writes it, never held whole.
        let mut request = sample();
        let values = (0..10_000).map(|_| AnyValue { value: Some(any_value::Value::StringValue("v".repeat(90))) });
        request.resource_spans[0].scope_spans[0].spans[1]
            .attributes
            .push(kv("array", any_value::Value::ArrayValue(ArrayValue { values: values.collect() })));
        let (out, info) = map_within(&request, limits(4096, 1 << 30));
        assert_eq!(out.refused.len(), 1);
        assert!(out.refused[0].reason.contains("span document of 1"), "{}", out.refused[0].reason);
        assert!(info.bytes_max < 64 * 1024, "peak {} bytes", info.bytes_max);
    }

    #[test]
    fn the_document_size_is_known_exactly_before_it_is_kept() {
        let request = tricky();
        let full = map(&request, &routing(""), NOW);
        let first = full.docs[0].source().len();
        let (fits, _) = map_within(&request, limits(first, usize::MAX));
        assert_eq!(fits.docs[0].source().len(), first, "a document exactly at the limit is kept");
        let (over, _) = map_within(&request, limits(first - 1, usize::MAX));
        assert_eq!(over.refused[0].position, [0, 0, 0]);
        assert!(
            over.refused[0].reason.contains(&format!("span document of {first} bytes")),
            "{}",
            over.refused[0].reason
        );
        // A process part alone over the limit refuses every span of its resource.
        let (all, _) = map_within(&hostile(8_000, 3, NOW_NANOS), limits(4096, usize::MAX));
        assert_eq!(all.refused.len(), 3);
        assert!(all.docs.is_empty());
        // And the record's sum is what the documents hold, plus their dead letters where larger.
        let (sum, _) = map_within(&request, DocumentLimits::UNBOUNDED);
        assert!(sum.bytes >= full.docs.iter().map(|d| d.source().len()).sum::<usize>());
    }

    #[test]
    fn service_documents_are_one_per_operation_and_day_in_the_order_first_seen() {
        // One resource, 30 000 spans over 10 000 distinct operations, each operation three times.
        let mut request = hostile(0, 30_000, NOW_NANOS);
        for (n, span) in request.resource_spans[0].scope_spans[0].spans.iter_mut().enumerate() {
            span.name = format!("op-{}", n % 10_000);
        }
        let out = map(&request, &routing(""), NOW);
        let services: Vec<&Document> = out.docs.iter().filter(|d| d.kind == DocKind::Service).collect();
        assert_eq!(services.len(), 10_000);
        for (n, doc) in services.iter().enumerate() {
            assert_eq!(doc.id(), format!("{:x}", fnv64a(&[b"cart", format!("op-{n}").as_bytes()])));
            assert_eq!(doc.index(), "jaeger-service-2026-11-25");
        }
    }

    #[test]
    fn service_operations_are_found_in_constant_time_each() {
        // 100 000 distinct operations on one day, each seen twice: linear, about 0.1 s even
        // unoptimized; a look-up that scanned the operations seen (as it once did) makes 10¹⁰
        // comparisons (218 s measured).
        let names: Vec<String> = (0..100_000).map(|n| format!("operation-{n}")).collect();
        let date = day_of(NOW);
        let started = std::time::Instant::now();
        let mut operations = Operations::default();
        for name in names.iter().chain(&names) {
            operations.insert(date, name);
        }
        assert_eq!(operations.drain().len(), 100_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
        assert_eq!(operations.drain().len(), 0, "empty for the next resource");
    }

    #[test]
    fn index_dates_are_written_zero_padded_in_every_year() {
        let names = IndexNames::new("p");
        for (y, m, d) in
            [(1970, 1, 1), (2026, 12, 1), (999, 9, 9), (5, 10, 31), (9999, 12, 31), (10_000, 1, 2), (0, 1, 1)]
        {
            let date = NaiveDate::from_ymd_opt(y, m, d).expect("a date");
            let mut out = Vec::new();
            names.push(DocKind::Span, date, &mut out);
            assert_eq!(String::from_utf8(out).expect("ascii"), format!("p-jaeger-span-{y:04}-{m:02}-{d:02}"));
        }
    }

    #[test]
    fn service_operations_are_each_kept_once_in_first_seen_order_below_and_past_the_list() {
        let date = day_of(NOW);
        let names: Vec<String> = (0..40).map(|n| format!("op-{}", n % 13)).collect();
        for count in [0, 1, FEW_OPERATIONS - 1, FEW_OPERATIONS, FEW_OPERATIONS + 1, 40] {
            let mut operations = Operations::default();
            let mut want: Vec<(NaiveDate, &str)> = Vec::new();
            for (i, name) in names[..count].iter().enumerate() {
                let day = if i % 5 == 0 { date.succ_opt().expect("a day") } else { date };
                operations.insert(day, name);
                if !want.contains(&(day, name.as_str())) {
                    want.push((day, name));
                }
            }
            assert_eq!(operations.drain().collect::<Vec<_>>(), want, "{count} spans");
            assert_eq!(operations.drain().len(), 0);
        }
    }

    #[test]
    fn service_document_id_is_jaegers_fnv() {
        let doc = service_document("cart", "GET /cart", "jaeger-service-2026-11-25");
        assert_eq!(doc.id(), format!("{:x}", fnv64a(&[b"cartGET /cart"])));
        let source: Value = serde_json::from_slice(doc.source()).expect("json");
        assert_eq!(source, json!({"serviceName": "cart", "operationName": "GET /cart"}));
    }

    /// Strings that JSON escaping must get right: every control character, quotes, backslashes,
    /// the line separators JavaScript minds, non-BMP characters, DEL, the replacement character.
    fn hostile_strings() -> Vec<String> {
        let controls: String = (0u8..0x20).map(char::from).collect();
        vec![
            String::new(),
            controls,
            "\"\\/\u{7f}".into(),
            "line\u{2028}para\u{2029}end".into(),
            "😀𝄞\u{10ffff}\u{fffd}é✓".into(),
            "\\\"\\\"".into(),
            "plain ascii run then \u{1} and after".into(),
            "</script>".into(),
        ]
    }

    /// Every `AnyValue` kind, with odd doubles and integers, nested arrays and key-value lists.
    fn every_value() -> Vec<KeyValue> {
        use opentelemetry_proto::tonic::common::v1::KeyValueList;
        let mut values = Vec::new();
        for (n, s) in hostile_strings().into_iter().enumerate() {
            values.push(kv(&format!("s{n}"), any_value::Value::StringValue(s.clone())));
            values.push(kv(&s, any_value::Value::StringValue(format!("key{n}"))));
        }
        for (n, d) in [
            0.0,
            -0.0,
            0.1,
            1e-7,
            1e21,
            1e22,
            123_456_789.125,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ]
        .into_iter()
        .enumerate()
        {
            values.push(kv(&format!("d{n}"), any_value::Value::DoubleValue(d)));
        }
        for (n, i) in [0, -1, 1, i64::MIN, i64::MAX].into_iter().enumerate() {
            values.push(kv(&format!("i{n}"), any_value::Value::IntValue(i)));
        }
        values.push(kv("bt", any_value::Value::BoolValue(true)));
        values.push(kv("bf", any_value::Value::BoolValue(false)));
        values.push(kv("bytes-empty", any_value::Value::BytesValue(Vec::new())));
        values.push(kv("bytes-all", any_value::Value::BytesValue((0..=255).collect())));
        values.push(kv("strindex", any_value::Value::StringValueStrindex(-7)));
        values.push(KeyValue { key: "no-value".into(), value: None, ..Default::default() });
        values.push(KeyValue {
            key: "empty-value".into(),
            value: Some(AnyValue { value: None }),
            ..Default::default()
        });
        let leaves: Vec<AnyValue> = [
            any_value::Value::StringValue("a\"b\\c\n\u{2028}😀".into()),
            any_value::Value::IntValue(i64::MIN),
            any_value::Value::DoubleValue(f64::NAN),
            any_value::Value::DoubleValue(2.5),
            any_value::Value::DoubleValue(f64::INFINITY),
            any_value::Value::BoolValue(true),
            any_value::Value::BytesValue(vec![0, 1, 0xfe, 0xff]),
            any_value::Value::StringValueStrindex(3),
        ]
        .into_iter()
        .map(|v| AnyValue { value: Some(v) })
        .chain([AnyValue { value: None }])
        .collect();
        values.push(kv("array", any_value::Value::ArrayValue(ArrayValue { values: leaves.clone() })));
        values.push(kv("array-empty", any_value::Value::ArrayValue(ArrayValue::default())));
        values.push(kv(
            "kvlist",
            any_value::Value::KvlistValue(KeyValueList {
                values: leaves
                    .iter()
                    .enumerate()
                    .map(|(n, v)| KeyValue {
                        key: format!("k\"{n}\u{1}"),
                        value: Some(v.clone()),
                        ..Default::default()
                    })
                    .chain([KeyValue { key: "none".into(), value: None, ..Default::default() }])
                    .collect(),
            }),
        ));
        values.push(kv("kvlist-empty", any_value::Value::KvlistValue(KeyValueList::default())));
        values.push(KeyValue {
            key: "nested".into(),
            value: Some(spanline_testkit::fuzz::nested(12)),
            ..Default::default()
        });
        values
    }

    /// Spans of every shape the mapping distinguishes: kinds, statuses, flags, parents, links,
    /// events, times, scopes and resources present or not, several resources, scopes and days.
    fn shapes() -> ExportTraceServiceRequest {
        let base = sample().resource_spans[0].scope_spans[0].spans[0].clone();
        let strings = hostile_strings();
        let mut spans = Vec::new();
        for (n, kind) in [0, 1, 2, 3, 4, 5, 9, -1].into_iter().enumerate() {
            spans.push(Span { kind, span_id: vec![10 + n as u8; 8], status: None, ..base.clone() });
        }
        for (n, (code, message)) in
            [(0, ""), (1, "fine"), (2, ""), (2, "bad \"x\""), (7, "odd code"), (-3, "")].into_iter().enumerate()
        {
            spans.push(Span {
                span_id: vec![20 + n as u8; 8],
                status: Some(Status { code, message: message.into() }),
                ..base.clone()
            });
        }
        for (n, flags) in [0, 1, 0x100, 0x1ff, u32::MAX].into_iter().enumerate() {
            spans.push(Span { span_id: vec![30 + n as u8; 8], flags, parent_span_id: Vec::new(), ..base.clone() });
        }
        for (n, (start, end)) in [
            (0, 0),
            (1_999, 999),
            (1_795_608_000_123_456_789, 1_795_608_000_000_000_000),
            (u64::MAX, u64::MAX),
            (u64::MAX - 5, 3),
            (1_795_694_400_000_000_000, 1_795_694_400_000_001_000),
        ]
        .into_iter()
        .enumerate()
        {
            spans.push(Span {
                span_id: vec![40 + n as u8; 8],
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                ..base.clone()
            });
        }
        for (n, s) in strings.iter().enumerate() {
            spans.push(Span {
                span_id: vec![50 + n as u8; 8],
                name: s.clone(),
                trace_state: s.clone(),
                attributes: Vec::new(),
                events: vec![
                    Event { time_unix_nano: 0, name: s.clone(), ..Default::default() },
                    Event {
                        time_unix_nano: u64::MAX,
                        name: String::new(),
                        attributes: vec![kv(s, any_value::Value::StringValue(s.clone()))],
                        ..Default::default()
                    },
                ],
                links: (0..n)
                    .map(|l| Link {
                        trace_id: vec![l as u8; 16],
                        span_id: vec![0xf0 | l as u8; 8],
                        ..Default::default()
                    })
                    .collect(),
                status: Some(Status { code: 2, message: s.clone() }),
                ..base.clone()
            });
        }
        spans.push(Span {
            span_id: vec![70; 8],
            attributes: every_value(),
            events: vec![Event {
                time_unix_nano: 1_999,
                name: "values".into(),
                attributes: every_value(),
                ..Default::default()
            }],
            ..base.clone()
        });
        spans.push(Span {
            span_id: vec![71; 8],
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            status: None,
            trace_state: String::new(),
            name: String::new(),
            ..base.clone()
        });
        let scope = |name: &str, version: &str| {
            Some(InstrumentationScope { name: name.into(), version: version.into(), ..Default::default() })
        };
        let resource = |attributes: Vec<KeyValue>| Some(Resource { attributes, ..Default::default() });
        let mut odd_service = every_value();
        odd_service.insert(3, kv("service.name", any_value::Value::StringValue(strings[1].clone())));
        let few = |first: u8| -> Vec<Span> {
            (0..3u8)
                .map(|n| Span { span_id: vec![first + n; 8], name: format!("op-{}", n % 2), ..base.clone() })
                .collect()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: sample().resource_spans[0].resource.clone(),
                    scope_spans: vec![
                        ScopeSpans { scope: scope("io.opentelemetry.http", "1.2"), spans, ..Default::default() },
                        ScopeSpans { scope: None, spans: few(100), ..Default::default() },
                        ScopeSpans { scope: scope("", ""), spans: few(110), ..Default::default() },
                        ScopeSpans { scope: scope(&strings[2], &strings[3]), spans: few(120), ..Default::default() },
                    ],
                    ..Default::default()
                },
                ResourceSpans {
                    resource: None,
                    scope_spans: vec![ScopeSpans { scope: None, spans: few(130), ..Default::default() }],
                    ..Default::default()
                },
                ResourceSpans {
                    resource: resource(odd_service),
                    scope_spans: vec![ScopeSpans { scope: scope("s", "v"), spans: few(140), ..Default::default() }],
                    ..Default::default()
                },
                ResourceSpans {
                    resource: resource(vec![
                        kv("service.name", any_value::Value::IntValue(5)),
                        kv("service.name", any_value::Value::StringValue("second".into())),
                    ]),
                    scope_spans: vec![ScopeSpans { scope: None, spans: few(150), ..Default::default() }],
                    ..Default::default()
                },
                ResourceSpans {
                    resource: resource(vec![kv("service.name", any_value::Value::StringValue(String::new()))]),
                    scope_spans: vec![ScopeSpans { scope: None, spans: few(160), ..Default::default() }],
                    ..Default::default()
                },
            ],
        }
    }

    /// Everything `map_request` produces, as text: each document's bulk item (action line and
    /// source) with its kind, position and end, each refusal with its reason, and the record's sums.
    fn dump(name: &str, mapped: &Mapped) -> Vec<u8> {
        let mut out = format!(
            "# {name}: spans {} bytes {} over {:?} docs {} refused {}\n",
            mapped.spans,
            mapped.bytes,
            mapped.over,
            mapped.docs.len(),
            mapped.refused.len()
        )
        .into_bytes();
        for doc in &mapped.docs {
            out.extend_from_slice(
                format!("doc {} {:?} end {}\n", doc.kind.as_str(), doc.position, doc.end_micros).as_bytes(),
            );
            out.extend_from_slice(&crate::bulk::encode_item(doc));
        }
        for refused in &mapped.refused {
            out.extend_from_slice(
                format!("refused {:?} {:?} {}\n", refused.position, refused.refusal, refused.reason).as_bytes(),
            );
        }
        out
    }

    /// The golden fixtures: (name, request, routing, limits).
    fn golden_cases() -> Vec<(&'static str, ExportTraceServiceRequest, Routing, DocumentLimits)> {
        let hour = 3_600_000_000_i64;
        let window = |clamp| Routing {
            names: IndexNames::new("prod"),
            max_age_micros: 72 * hour,
            max_skew_micros: hour,
            clamp,
            trace_ids: TraceIds::Jaeger,
        };
        let fixture = spanline_testkit::fixtures::request("fixture-service", 7, 3, 4, 1_795_608_000_000_000_000);
        let mut bad_ids = sample();
        let spans = &mut bad_ids.resource_spans[0].scope_spans[0].spans;
        spans[0].trace_id = vec![7; 15];
        spans.push(Span { parent_span_id: vec![1; 9], ..spans[1].clone() });
        let unbounded = DocumentLimits::UNBOUNDED;
        vec![
            ("sample", sample(), routing(""), unbounded),
            ("tricky", tricky(), routing(""), unbounded),
            ("shapes", shapes(), routing(""), unbounded),
            ("shapes-window-clamped", shapes(), window(true), unbounded),
            ("shapes-window-refused", shapes(), window(false), unbounded),
            ("testkit-fixture", fixture, routing("p-1"), unbounded),
            ("bad-ids", bad_ids, routing(""), unbounded),
            ("empty", ExportTraceServiceRequest::default(), routing(""), unbounded),
            ("shapes-doc-limit", shapes(), routing(""), limits(1_400, usize::MAX)),
            ("tricky-doc-limit", tricky(), routing(""), limits(2_000, usize::MAX)),
            ("shapes-record-limit", shapes(), routing(""), limits(1 << 20, 20_000)),
            ("hostile-record-limit", hostile(8_000, 50, NOW_NANOS), routing(""), limits(1 << 20, 100_000)),
        ]
    }

    /// The documents of the golden fixtures, byte for byte as the release before the hand-written
    /// JSON writer made them (`tests/golden/documents.txt`, written by serde_json; regenerate only
    /// on purpose with `SPANLINE_BLESS=1`: a change here changes what Jaeger reads, or the bounds).
    #[test]
    fn documents_match_the_golden_file() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/documents.txt");
        let mut got = Vec::new();
        for (name, request, routing, limits) in golden_cases() {
            let mut out = Mapped::default();
            map_request(&request, &request.encode_to_vec(), &routing, limits, RecordTime::Timestamp(NOW), &mut out);
            got.extend_from_slice(&dump(name, &out));
        }
        if std::env::var_os("SPANLINE_BLESS").is_some() {
            std::fs::write(path, &got).expect("golden file written");
        }
        let want = std::fs::read(path).expect("golden file (SPANLINE_BLESS=1 writes it)");
        if got != want {
            let (g, w) = (String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
            let line = g.lines().zip(w.lines()).position(|(a, b)| a != b).unwrap_or(0);
            panic!(
                "documents differ from the golden file at line {}:\n got: {}\nwant: {}",
                line + 1,
                g.lines().nth(line).unwrap_or_default(),
                w.lines().nth(line).unwrap_or_default()
            );
        }
    }

    /// The service name of decoded resource attributes, as [`wire::ResourceSpans::service`] reads it.
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

    /// Everything a mapping produced, comparable: each document's item, kind, position and end;
    /// the refusals, the spans, the bytes counted and whether it was over.
    type Outcome = (Vec<(Bytes, DocKind, Option<[usize; 3]>, i64)>, Vec<Refused>, usize, usize, Option<OverRecord>);

    fn outcome(out: &Mapped) -> Outcome {
        let docs = out.docs.iter().map(|d| (d.ndjson.clone(), d.kind, d.position, d.end_micros)).collect();
        (docs, out.refused.clone(), out.spans, out.bytes, out.over)
    }

    /// The live path on `bytes` against prost's decode and [`map_request`]: when the live path takes
    /// the record, prost decodes it and maps it to exactly the same documents, with nothing refused;
    /// when prost cannot decode it, the live path does not take it either. Returns whether the live
    /// path took it.
    fn live_path_agrees(bytes: &[u8], routing: &Routing, limits: DocumentLimits) -> Result<bool, String> {
        let mut live = Mapped::default();
        let took = map_record(bytes, routing, limits, RecordTime::Timestamp(NOW), &mut live);
        let Ok(request) = ExportTraceServiceRequest::decode(bytes) else {
            return if took { Err("the live path took a record prost cannot decode".into()) } else { Ok(false) };
        };
        let mut full = Mapped::default();
        map_request(&request, bytes, routing, limits, RecordTime::Timestamp(NOW), &mut full);
        // Independently of how the reader took `bytes`: the documents of prost's own encoding of
        // what prost decoded, with the ids of `bytes`.
        let mut canonical = Mapped::default();
        let spans = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        let ids = if SpanSources::count(bytes) == Ok(spans) { bytes.to_vec() } else { request.encode_to_vec() };
        canonical.spans = spans;
        map_wire(
            &request.encode_to_vec(),
            Some(&request),
            Digests::new(&ids),
            routing,
            limits,
            RecordTime::Timestamp(NOW),
            &mut canonical,
            &mut Buffers::default(),
            Pass::Full,
        )
        .map_err(|_| "prost's own encoding is not read".to_owned())?;
        let docs = |m: &Mapped| m.docs.iter().map(|d| (d.ndjson.clone(), d.kind, d.position)).collect::<Vec<_>>();
        if docs(&full) != docs(&canonical) || full.refused.len() != canonical.refused.len() {
            return Err(format!(
                "the bytes as read and prost's encoding differ:\n read: {:?}\n prost: {:?}",
                outcome(&full),
                outcome(&canonical)
            ));
        }
        if took {
            if outcome(&live) != outcome(&full) {
                return Err(format!("documents differ:\n live: {:?}\n full: {:?}", outcome(&live), outcome(&full)));
            }
        } else if !live.docs.is_empty() || live.spans != 0 {
            return Err("a record the live path left holds documents".into());
        }
        // An array or list value over NESTED_DECODE_MAX has the record priced and decoded whole.
        let large = |attributes: &[KeyValue]| {
            attributes.iter().filter_map(|kv| kv.value.as_ref()).any(|any| {
                matches!(any.value, Some(any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_)))
                    && any.encoded_len() > NESTED_DECODE_MAX
            })
        };
        let nested_large = request.resource_spans.iter().any(|rs| {
            rs.resource.as_ref().is_some_and(|r| large(&r.attributes))
                || rs
                    .scope_spans
                    .iter()
                    .flat_map(|ss| &ss.spans)
                    .any(|span| large(&span.attributes) || span.events.iter().any(|e| large(&e.attributes)))
        });
        if !took && !nested_large && full.refused.is_empty() && full.over.is_none() && bytes == request.encode_to_vec()
        {
            return Err("the live path left prost's own encoding with nothing to refuse".into());
        }
        Ok(took)
    }

    /// Checks every document of `request` against the serde_json reference (`reference.rs`): the
    /// same bytes, and the same JSON value; `Err` names the first difference.
    fn same_as_reference(request: &ExportTraceServiceRequest) -> Result<(), String> {
        let wide = Routing {
            names: IndexNames::new("p"),
            max_age_micros: i64::MAX,
            max_skew_micros: i64::MAX,
            clamp: true,
            trace_ids: TraceIds::Jaeger,
        };
        let mut out = Mapped::default();
        map_request(
            request,
            &request.encode_to_vec(),
            &wide,
            DocumentLimits::UNBOUNDED,
            RecordTime::Timestamp(NOW),
            &mut out,
        );
        let mut services = Vec::new();
        for doc in &out.docs {
            let (want, what) = match doc.position {
                Some([r, s, p]) => {
                    let rs = &request.resource_spans[r];
                    let attributes = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
                    let scope_spans = &rs.scope_spans[s];
                    services.push((service_name(attributes), scope_spans.spans[p].name.as_str()));
                    let want = reference::span_source(
                        &scope_spans.spans[p],
                        scope_spans.scope.as_ref(),
                        attributes,
                        service_name(attributes),
                    );
                    (want, format!("span {r}/{s}/{p}"))
                }
                None => {
                    let source: Value = serde_json::from_slice(doc_source(doc)).map_err(|e| e.to_string())?;
                    let (service, operation) = (
                        source["serviceName"].as_str().unwrap_or_default(),
                        source["operationName"].as_str().unwrap_or_default(),
                    );
                    if !services.contains(&(service, operation)) {
                        return Err(format!("service document for an operation without a span: {source}"));
                    }
                    (reference::service_source(service, operation), format!("service {service}/{operation}"))
                }
            };
            let got = doc_source(doc);
            if got != want.as_slice() {
                return Err(format!(
                    "{what}: bytes differ\n got: {}\nwant: {}",
                    String::from_utf8_lossy(got),
                    String::from_utf8_lossy(&want)
                ));
            }
            let (g, w): (Value, Value) = (
                serde_json::from_slice(got).map_err(|e| format!("{what}: {e}"))?,
                serde_json::from_slice(&want).map_err(|e| format!("{what}: {e}"))?,
            );
            if g != w {
                return Err(format!("{what}: values differ"));
            }
        }
        Ok(())
    }

    #[test]
    fn golden_fixtures_match_the_reference() {
        for (name, request, ..) in golden_cases() {
            if let Err(e) = same_as_reference(&request) {
                panic!("{name}: {e}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 256, ..Default::default() })]

        /// Generated requests of every shape (odd strings, every value kind, nested values, odd
        /// ids and times): each document byte for byte what the serde_json reference writes.
        #[test]
        fn documents_match_the_reference(request in spanline_testkit::fuzz::request()) {
            if let Err(e) = same_as_reference(&request) {
                proptest::prop_assert!(false, "{}", e);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 512, ..Default::default() })]

        /// Generated requests, as prost encodes them: the live path maps them exactly as prost's
        /// decode does, and leaves only those with a span to refuse or over the record's bound.
        #[test]
        fn the_live_path_maps_records_as_prost_decodes_them(
            request in spanline_testkit::fuzz::request(),
            narrow in proptest::bool::ANY,
        ) {
            let hour = 3_600_000_000;
            let routing = if narrow {
                Routing { names: IndexNames::new(""), max_age_micros: 72 * hour, max_skew_micros: hour, clamp: false, trace_ids: TraceIds::Jaeger }
            } else {
                Routing { names: IndexNames::new(""), max_age_micros: i64::MAX, max_skew_micros: i64::MAX, clamp: true, trace_ids: TraceIds::Jaeger }
            };
            let limits = DocumentLimits { max_document_bytes: 4096, max_record_document_bytes: 64 << 10 };
            if let Err(e) = live_path_agrees(&request.encode_to_vec(), &routing, limits) {
                proptest::prop_assert!(false, "{}", e);
            }
        }

        /// Records one after another through one partition's mapping, sharing resources (so the
        /// resources it keeps are hit, displaced — two slots in tests — and hit under another
        /// document bound): each mapped exactly as by a mapping that never saw the others.
        #[test]
        fn records_mapped_after_others_are_mapped_as_alone(
            records in proptest::collection::vec((spanline_testkit::fuzz::request(), 0usize..3, proptest::bool::ANY), 1..8),
        ) {
            let routing = Routing { names: IndexNames::new(""), max_age_micros: i64::MAX, max_skew_micros: i64::MAX, clamp: true, trace_ids: TraceIds::Jaeger };
            let resources: Vec<Option<Resource>> = records.iter().flat_map(|(r, ..)| r.resource_spans.iter().map(|rs| rs.resource.clone())).collect();
            let mut warm = Mapped::default();
            for (i, (mut request, from, small)) in records.into_iter().enumerate() {
                // Resources taken from the records' pool, so several records carry the same bytes.
                for (j, rs) in request.resource_spans.iter_mut().enumerate() {
                    if let Some(shared) = resources.get((from + j) % resources.len().max(1)) {
                        rs.resource = shared.clone();
                    }
                }
                let max_document_bytes = if small { 600 } else { 4096 };
                let limits = DocumentLimits { max_document_bytes, max_record_document_bytes: 64 << 10 };
                let bytes = request.encode_to_vec();
                let mut alone = Mapped::default();
                let took_alone = map_record(&bytes, &routing, limits, RecordTime::Timestamp(NOW), &mut alone);
                let took = map_record(&bytes, &routing, limits, RecordTime::Timestamp(NOW), &mut warm);
                proptest::prop_assert_eq!(took, took_alone, "record {}", i);
                proptest::prop_assert_eq!(outcome(&warm), outcome(&alone), "record {}", i);
            }
        }

        /// The same records corrupted (bytes overwritten, cut short): whatever the live path takes,
        /// prost decodes to the same documents; whatever prost refuses, the live path leaves.
        #[test]
        fn the_live_path_takes_no_corrupted_record_prost_refuses(
            request in spanline_testkit::fuzz::request(),
            edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..4),
            cut in proptest::option::of(proptest::num::usize::ANY),
        ) {
            let mut bytes = request.encode_to_vec();
            if bytes.is_empty() {
                return Ok(());
            }
            for (at, byte) in edits {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut % (bytes.len() + 1));
            }
            if let Err(e) = live_path_agrees(&bytes, &routing(""), DocumentLimits::UNBOUNDED) {
                proptest::prop_assert!(false, "{}", e);
            }
        }
    }

    /// A trace from a Jaeger or 64-bit B3 client (high 64 bits zero) is written in the 16-digit
    /// form Jaeger Query 1.x looks it up by, in the span and in its references, unless `full` is
    /// asked for; its `_id` keeps all 32 digits either way. A 128-bit id is always 32 digits.
    #[test]
    fn sixty_four_bit_trace_ids_are_written_as_jaeger_writes_them() {
        let mut request = sample();
        let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
        span.trace_id = [[0; 8], [0xab; 8]].concat();
        span.links = vec![Link { trace_id: span.trace_id.clone(), span_id: vec![7; 8], ..Default::default() }];
        let mut routing = routing("");
        let docs = |routing: &Routing| {
            let out = map_bytes(&request, &request.encode_to_vec(), routing, RecordTime::Timestamp(NOW));
            out.docs.into_iter().filter(|d| d.kind == DocKind::Span).collect::<Vec<_>>()
        };
        for (ids, want) in
            [(TraceIds::Jaeger, "abababababababab"), (TraceIds::Full, "0000000000000000abababababababab")]
        {
            routing.trace_ids = ids;
            let docs = docs(&routing);
            let source: Value = serde_json::from_slice(docs[0].source()).expect("json");
            assert_eq!(source["traceID"], want, "{ids:?}");
            let refs: Vec<&str> = source["references"]
                .as_array()
                .expect("refs")
                .iter()
                .map(|r| r["traceID"].as_str().expect("id"))
                .collect();
            assert_eq!(refs, vec![want, want], "{ids:?}: the parent's and the link's");
            assert!(docs[0].id().starts_with("0000000000000000abababababababab_"), "{}", docs[0].id());
            let other: Value = serde_json::from_slice(docs[1].source()).expect("json");
            assert_eq!(other["traceID"].as_str().map(str::len), Some(32), "a 128-bit id");
        }
    }

    /// A link that came from an OpenTracing CHILD_OF reference (a Jaeger span's second parent, as
    /// the OpenTelemetry translators keep it) stays CHILD_OF; others are FOLLOWS_FROM.
    #[test]
    fn links_keep_the_reference_type_they_came_from() {
        let mut request = sample();
        let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
        let link = |n: u8, ref_type: Option<&str>| Link {
            trace_id: vec![n; 16],
            span_id: vec![n; 8],
            attributes: ref_type
                .map(|t| kv("opentracing.ref_type", any_value::Value::StringValue(t.into())))
                .into_iter()
                .collect(),
            ..Default::default()
        };
        span.links = vec![link(1, Some("child_of")), link(2, Some("follows_from")), link(3, None)];
        let out = map_bytes(&request, &request.encode_to_vec(), &routing(""), RecordTime::Timestamp(NOW));
        let source: Value = serde_json::from_slice(out.docs[0].source()).expect("json");
        let kinds: Vec<&str> = source["references"]
            .as_array()
            .expect("refs")
            .iter()
            .map(|r| r["refType"].as_str().expect("type"))
            .collect();
        assert_eq!(kinds, vec!["CHILD_OF", "CHILD_OF", "FOLLOWS_FROM", "FOLLOWS_FROM"]);
    }

    /// Encodings prost decodes differently from field to field (a message field twice is merged, a
    /// value set twice keeps the last, a group is skipped) or refuses (bad UTF-8 in a field never
    /// written to a document, nesting past its limit): the live path leaves each to prost, and
    /// takes the ordinary encoding of the same request.
    #[test]
    fn unusual_encodings_are_left_to_prost() {
        let field = |number: u32, wire: u8, value: &[u8]| {
            let mut out = Vec::new();
            prost::encoding::encode_varint(u64::from(number << 3 | u32::from(wire)), &mut out);
            if wire == 2 {
                prost::encoding::encode_varint(value.len() as u64, &mut out);
            }
            out.extend_from_slice(value);
            out
        };
        // request > resource_spans > scope_spans > span, with `extra` appended to the span.
        let wrap = |span_extra: &[u8], scope_spans_extra: &[u8]| {
            let mut span = sample().resource_spans[0].scope_spans[0].spans[0].encode_to_vec();
            span.extend_from_slice(span_extra);
            let scope_spans = [field(2, 2, &span), scope_spans_extra.to_vec()].concat();
            field(1, 2, &field(2, 2, &scope_spans))
        };
        let routing = routing("");
        let live = |bytes: &[u8]| live_path_agrees(bytes, &routing, DocumentLimits::UNBOUNDED).expect("agrees");
        assert!(live(&wrap(&[], &[])), "the ordinary encoding is read in place");
        let status = Status { message: "m".into(), code: 2 }.encode_to_vec();
        assert!(!live(&wrap(&field(15, 2, &status), &[])), "a second status is merged by prost");
        let any = |v: &[u8]| field(2, 2, v);
        let twice = [field(1, 2, b"k"), any(&[field(1, 2, b"a"), field(3, 0, &[5])].concat())].concat();
        assert!(!live(&wrap(&field(9, 2, &twice), &[])), "a value set twice keeps prost's last");
        assert!(!live(&wrap(&[0x9b, 0x06, 0x9c, 0x06], &[])), "an unknown group (field 99) is prost's to skip");
        assert!(!live(&wrap(&field(3, 0, &[1]), &[])), "trace_state with a varint's wire type");
        assert!(!live(&wrap(&[], &field(3, 2, &[0xff, 0xfe]))), "a schema_url that is not UTF-8");
        // Span and event attribute keys and string values are checked as they are written:
        // invalid UTF-8 in any of them, and in a key written twice (only the last is written), is
        // still prost's to refuse.
        let attribute = |key: &[u8], value: &[u8]| field(9, 2, &[field(1, 2, key), any(&field(1, 2, value))].concat());
        assert!(!live(&wrap(&attribute(b"k\xff", b"v"), &[])), "an attribute key that is not UTF-8");
        assert!(!live(&wrap(&attribute(b"k", b"\xc3"), &[])), "an attribute value that is not UTF-8");
        assert!(!live(&wrap(&attribute(b"long key, clean for two words\xff", b"v"), &[])), "past the first words");
        let key_twice = [field(1, 2, b"\xff"), field(1, 2, b"k"), any(&field(1, 2, b"v"))].concat();
        assert!(!live(&wrap(&field(9, 2, &key_twice), &[])), "a key written twice, the first not UTF-8");
        let event =
            |attribute: &[u8]| field(11, 2, &[field(1, 1, &[1, 0, 0, 0, 0, 0, 0, 0]), field(3, 2, attribute)].concat());
        let event_attribute = [field(1, 2, b"e"), any(&field(1, 2, b"caf\xc3"))].concat();
        assert!(!live(&wrap(&event(&event_attribute), &[])), "an event attribute value that is not UTF-8");
        assert!(
            live(&wrap(&attribute("clé".as_bytes(), "valeur é".as_bytes()), &[])),
            "UTF-8 beyond ASCII is read in place"
        );
        // Arrays nested in a span attribute: the attribute's value is at level 5, each array adds
        // two; prost refuses a message past level 100.
        let nested = |depth: usize| {
            let mut value = field(1, 2, b"leaf");
            for _ in 0..depth {
                value = field(5, 2, &field(1, 2, &value));
            }
            wrap(&field(9, 2, &[field(1, 2, b"deep"), field(2, 2, &value)].concat()), &[])
        };
        let deepest = (0..60).take_while(|&d| ExportTraceServiceRequest::decode(nested(d).as_slice()).is_ok()).last();
        let deepest = deepest.expect("some nesting decodes");
        assert!(deepest < 59, "prost's limit is reached in the range tried");
        assert!(live(&nested(deepest)), "as deep as prost goes is read in place");
        assert!(!live(&nested(deepest + 1)), "one level deeper is prost's to refuse");
    }

    /// A document's JSON source.
    fn doc_source(doc: &Document) -> &[u8] {
        doc.source()
    }
}
