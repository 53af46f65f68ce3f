//! `encode`: OTLP request → validated spans grouped into Kafka records, one per trace.
//!
//! Called by the receivers through [`crate::pipeline::Exporter`]. Pure (no I/O). Guarantees: every
//! input span ends up in exactly one record or is counted as rejected with its reason; a record holds
//! the spans of one trace with their original resource and scope, its key is the trace id as 32
//! lowercase hex characters, and its value (an `ExportTraceServiceRequest`) never exceeds
//! `max_message_bytes` — a larger trace is split over several records.

use std::{collections::HashMap, fmt};

use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{ScopeSpans, Span},
};
use prost::Message;
use spanline_common::ids;

/// One Kafka record to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The trace id as 32 lowercase hex characters (ASCII), given to librdkafka as bytes.
    pub key: [u8; 32],
    /// An encoded `ExportTraceServiceRequest` holding spans of this trace only: a slice of the one
    /// buffer all records of a request are written into.
    pub payload: Bytes,
    /// How many spans the payload holds.
    pub spans: usize,
}

impl Record {
    /// The key as text.
    pub fn key_str(&self) -> &str {
        std::str::from_utf8(&self.key).unwrap_or_default()
    }
}

/// The record key of a trace: its id as 32 lowercase hex characters.
pub(crate) fn hex_key(trace_id: &[u8; 16]) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = [0u8; 32];
    for (i, b) in trace_id.iter().enumerate() {
        key[2 * i] = HEX[usize::from(b >> 4)];
        key[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
    key
}

/// Why a span was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    InvalidTraceId,
    InvalidSpanId,
    InvalidParentSpanId,
    EndBeforeStart,
    TooLarge,
    AttributeLimit,
}

impl RejectReason {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidTraceId => "invalid_trace_id",
            RejectReason::InvalidSpanId => "invalid_span_id",
            RejectReason::InvalidParentSpanId => "invalid_parent_span_id",
            RejectReason::EndBeforeStart => "end_before_start",
            RejectReason::TooLarge => "too_large",
            RejectReason::AttributeLimit => "attribute_limit",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            RejectReason::InvalidTraceId => "trace id not 16 bytes or all zero",
            RejectReason::InvalidSpanId => "span id not 8 bytes or all zero",
            RejectReason::InvalidParentSpanId => "parent span id neither empty nor 8 bytes",
            RejectReason::EndBeforeStart => "end time before start time",
            RejectReason::TooLarge => "span larger than kafka.max_message_bytes",
            RejectReason::AttributeLimit => {
                "over limits.max_attributes_per_span, max_attributes_per_resource or max_attribute_value_bytes"
            }
        }
    }
}

/// Rejected spans counted by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections(pub Vec<(RejectReason, usize)>);

impl Rejections {
    fn add(&mut self, reason: RejectReason) {
        self.add_many(reason, 1);
    }
    /// Counts `n` more spans rejected for `reason`.
    pub fn add_many(&mut self, reason: RejectReason, n: usize) {
        if n == 0 {
            return;
        }
        match self.0.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += n,
            None => self.0.push((reason, n)),
        }
    }
    /// Total rejected spans.
    pub fn total(&self) -> usize {
        self.0.iter().map(|(_, n)| n).sum()
    }
}

impl fmt::Display for Rejections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sorted = self.0.clone();
        sorted.sort();
        for (i, (reason, n)) in sorted.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{n} span(s) rejected: {}", reason.describe())?;
        }
        Ok(())
    }
}

/// The result of encoding one request.
#[derive(Debug, Default)]
pub struct Encoded {
    pub records: Vec<Record>,
    pub accepted_spans: usize,
    pub rejected: Rejections,
}

impl Encoded {
    /// Bytes of all record values.
    pub fn payload_bytes(&self) -> usize {
        self.records.iter().map(|r| r.payload.len()).sum()
    }
}

/// Checks one span; `None` when valid.
pub fn validate(span: &Span) -> Option<RejectReason> {
    check(&span.trace_id, &span.span_id, &span.parent_span_id, span.start_time_unix_nano, span.end_time_unix_nano)
}

/// Checks a span's ids and times (its only fields validation reads); `None` when valid.
pub(crate) fn check(
    trace_id: &[u8],
    span_id: &[u8],
    parent_span_id: &[u8],
    start: u64,
    end: u64,
) -> Option<RejectReason> {
    if !ids::is_valid_trace_id(trace_id) {
        return Some(RejectReason::InvalidTraceId);
    }
    if !ids::is_valid_span_id(span_id) {
        return Some(RejectReason::InvalidSpanId);
    }
    if !(parent_span_id.is_empty() || parent_span_id.len() == 8) {
        return Some(RejectReason::InvalidParentSpanId);
    }
    if end < start {
        return Some(RejectReason::EndBeforeStart);
    }
    None
}

/// Upper bound of a length-delimited field's framing: one tag byte and a five-byte length.
const FRAMING: usize = 6;

/// Memory per record beside its value, until it is acknowledged: the hex key (ours and librdkafka's
/// copy), the `Record`, librdkafka's message header and the delivery report's future and channel.
const RECORD_OVERHEAD: usize = 512;

/// A record as planned: its trace, its size bound and how many spans it takes.
#[derive(Debug)]
pub(crate) struct Planned {
    key: [u8; 16],
    /// Upper bound of the record value's encoded length.
    size: usize,
    /// (resource, scope) positions of the last span appended, to reuse their wrappers.
    last: Option<(u32, u32)>,
    spans: usize,
}

/// Memory the planned records will hold until Kafka acknowledges them (see [`Plan::bytes`]).
pub(crate) fn records_bytes(records: &[Planned]) -> usize {
    records.iter().map(|r| r.size + RECORD_OVERHEAD).sum()
}

/// Places valid spans into records of at most `max_message_bytes`, one trace each, from sizes
/// alone. Shared by both paths: the decode path measures decoded spans, the byte path
/// ([`crate::split`]) their wire bytes, which are the same for canonically encoded input.
#[derive(Debug)]
pub(crate) struct Planner {
    max_message_bytes: usize,
    records: Vec<Planned>,
    /// Trace id → index in `records` of that trace's open (last) record.
    open: HashMap<[u8; 16], u32>,
    rejected: Rejections,
}

impl Planner {
    pub(crate) fn new(max_message_bytes: usize) -> Self {
        Self { max_message_bytes, records: Vec::new(), open: HashMap::new(), rejected: Rejections::default() }
    }

    /// What a resource's (or a scope's) wrapper costs in a record: the `ResourceSpans` (or
    /// `ScopeSpans`) framing, the resource (or scope) message when present, and its schema url.
    pub(crate) fn wrapper_cost(message_len: Option<usize>, schema_url_len: usize) -> usize {
        message_len.map_or(0, |len| len + FRAMING) + schema_url_len + 2 * FRAMING
    }

    /// Counts a span rejected for `reason`.
    pub(crate) fn reject(&mut self, reason: RejectReason) {
        self.rejected.add(reason);
    }

    /// Places a valid span of `span_len` encoded bytes of trace `key`, from resource `ri` and scope
    /// `si` (indexes in input order; scopes may be numbered per resource or across the request);
    /// the record it goes to, or `None` when it can never fit one (counted as too large).
    pub(crate) fn place(
        &mut self,
        key: [u8; 16],
        (ri, si): (u32, u32),
        resource_cost: usize,
        scope_cost: usize,
        span_len: usize,
    ) -> Option<u32> {
        let max = self.max_message_bytes;
        let span_cost = span_len + FRAMING;
        if resource_cost + scope_cost + span_cost > max {
            self.rejected.add(RejectReason::TooLarge);
            return None;
        }
        let fits = |g: &Planned| {
            let header = match g.last {
                Some((r, s)) if r == ri && s == si => 0,
                Some((r, _)) if r == ri => scope_cost,
                _ => resource_cost + scope_cost,
            };
            g.size + header + span_cost <= max
        };
        let i = match self.open.get(&key) {
            Some(&i) if fits(&self.records[i as usize]) => i,
            _ => {
                self.records.push(Planned { key, size: 0, last: None, spans: 0 });
                let i = index(self.records.len() - 1);
                self.open.insert(key, i);
                i
            }
        };
        let g = &mut self.records[i as usize];
        let same_resource = g.last.is_some_and(|(r, _)| r == ri);
        if !same_resource {
            g.size += resource_cost;
        }
        if !(same_resource && g.last.is_some_and(|(_, s)| s == si)) {
            g.size += scope_cost;
        }
        // Under max_message_bytes, so it fits.
        g.size += span_cost;
        g.last = Some((ri, si));
        g.spans += 1;
        Some(i)
    }

    pub(crate) fn finish(self) -> (Vec<Planned>, Rejections) {
        (self.records, self.rejected)
    }
}

/// Where every span of a request goes, computed from sizes alone: nothing is copied until
/// [`Plan::build`], so the caller can charge [`Plan::bytes`] before paying for it.
#[derive(Debug, Default)]
pub struct Plan {
    records: Vec<Planned>,
    /// For each input span in order: the record it goes to and its encoded length (measured once,
    /// here), or `None` when rejected.
    assignment: Vec<Option<(u32, u32)>>,
    rejected: Rejections,
}

impl Plan {
    /// Memory the records will hold until Kafka acknowledges them, an upper bound: their values and
    /// keys, and per record our bookkeeping and librdkafka's (its message header and copy of the
    /// key, the delivery report's channel).
    pub fn bytes(&self) -> usize {
        records_bytes(&self.records)
    }

    /// How many records the request becomes.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// Builds the records as planned, writing each record's protobuf bytes directly: every resource
    /// and scope is encoded once and copied into the records that need it, so building allocates
    /// the records' bytes (one buffer for all) and little else.
    pub fn build(self, request: &ExportTraceServiceRequest) -> Encoded {
        let Plan { records: planned, assignment, rejected } = self;
        let mut assignment = assignment.into_iter();
        let mut source = DecodedSource {
            request,
            resources: vec![None; request.resource_spans.len()],
            scopes: request.resource_spans.iter().map(|rs| vec![None; rs.scope_spans.len()]).collect(),
        };
        let mut members = Vec::with_capacity(planned.iter().map(|p| p.spans).sum());
        for (ri, rs) in request.resource_spans.iter().enumerate() {
            for (si, ss) in rs.scope_spans.iter().enumerate() {
                for span in &ss.spans {
                    let Some(Some((record, len))) = assignment.next() else { continue };
                    members.push(Member { record, resource: index(ri), scope: index(si), span, len: len as usize });
                    // Encoded once, the first time a record needs them.
                    source.resources[ri]
                        .get_or_insert_with(|| rs.resource.as_ref().map(Message::encode_to_vec).unwrap_or_default());
                    source.scopes[ri][si]
                        .get_or_insert_with(|| ss.scope.as_ref().map(Message::encode_to_vec).unwrap_or_default());
                }
            }
        }
        write_records(&source, &planned, members, rejected)
    }
}

fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// What records are written from: the resources, scopes and spans of one request, by position.
pub(crate) trait Source {
    /// How a span is found (a decoded span, or its wire bytes).
    type Span: Copy;
    /// The encoded resource of resource `ri`; `None` when it has none.
    fn resource(&self, ri: u32) -> Option<&[u8]>;
    fn resource_schema_url(&self, ri: u32) -> &[u8];
    /// The encoded scope of scope `si` of resource `ri`; `None` when it has none.
    fn scope(&self, ri: u32, si: u32) -> Option<&[u8]>;
    fn scope_schema_url(&self, ri: u32, si: u32) -> &[u8];
    /// Appends the span's encoding (without its framing).
    fn write_span(&self, span: Self::Span, buf: &mut BytesMut);
}

/// A span placed in a record: the record, its resource and scope, the span and its encoded length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member<S> {
    pub(crate) record: u32,
    pub(crate) resource: u32,
    pub(crate) scope: u32,
    pub(crate) span: S,
    pub(crate) len: usize,
}

/// Writes every planned record into one buffer, each a slice of it. `members` are the placed spans
/// in input order.
pub(crate) fn write_records<S: Source>(
    source: &S,
    planned: &[Planned],
    mut members: Vec<Member<S::Span>>,
    rejected: Rejections,
) -> Encoded {
    // Stable: each record keeps its spans in input order.
    members.sort_by_key(|m| m.record);
    let mut buf = BytesMut::with_capacity(planned.iter().map(|p| p.size).sum());
    let mut out = Encoded { records: Vec::with_capacity(planned.len()), accepted_spans: members.len(), rejected };
    let mut rest = members.as_slice();
    for p in planned {
        let (spans, tail) = rest.split_at(p.spans.min(rest.len()));
        rest = tail;
        write(source, spans, &mut buf);
        let payload = buf.split().freeze();
        debug_assert!(payload.len() <= p.size, "size bound {} below real size {}", p.size, payload.len());
        out.records.push(Record { key: hex_key(&p.key), payload, spans: spans.len() });
    }
    out
}

/// The `ExportTraceServiceRequest` holding `spans`: one `ResourceSpans` per run of spans of one
/// resource, one `ScopeSpans` per run of one scope within it, as prost would encode them.
fn write<S: Source>(source: &S, spans: &[Member<S::Span>], buf: &mut BytesMut) {
    for r in runs(spans, |a, b| a.resource == b.resource) {
        let group = &spans[r];
        let ri = group[0].resource;
        field(buf, 1, resource_len(source, group));
        if let Some(bytes) = source.resource(ri) {
            field(buf, 1, bytes.len());
            buf.extend_from_slice(bytes);
        }
        for r in runs(group, |a, b| a.scope == b.scope) {
            let scope_group = &group[r];
            let si = scope_group[0].scope;
            field(buf, 2, scope_len(source, scope_group));
            if let Some(bytes) = source.scope(ri, si) {
                field(buf, 1, bytes.len());
                buf.extend_from_slice(bytes);
            }
            for m in scope_group {
                field(buf, 2, m.len);
                source.write_span(m.span, buf);
            }
            bytes_field(buf, 3, source.scope_schema_url(ri, si));
        }
        bytes_field(buf, 3, source.resource_schema_url(ri));
    }
}

/// Encoded length of the `ResourceSpans` holding `group` (spans of one resource).
fn resource_len<S: Source>(source: &S, group: &[Member<S::Span>]) -> usize {
    let ri = group[0].resource;
    let resource = source.resource(ri).map_or(0, |r| framed(r.len()));
    let scopes: usize = runs(group, |a, b| a.scope == b.scope).map(|r| framed(scope_len(source, &group[r]))).sum();
    resource + scopes + bytes_len(source.resource_schema_url(ri))
}

/// Encoded length of the `ScopeSpans` holding `group` (spans of one scope).
fn scope_len<S: Source>(source: &S, group: &[Member<S::Span>]) -> usize {
    let (ri, si) = (group[0].resource, group[0].scope);
    let scope = source.scope(ri, si).map_or(0, |s| framed(s.len()));
    scope + group.iter().map(|m| framed(m.len)).sum::<usize>() + bytes_len(source.scope_schema_url(ri, si))
}

/// A decoded request as a [`Source`]: resources and scopes encoded once, when a record first needs
/// them; spans encoded into each record.
struct DecodedSource<'a> {
    request: &'a ExportTraceServiceRequest,
    resources: Vec<Option<Vec<u8>>>,
    scopes: Vec<Vec<Option<Vec<u8>>>>,
}

impl<'a> Source for DecodedSource<'a> {
    type Span = &'a Span;

    fn resource(&self, ri: u32) -> Option<&[u8]> {
        let ri = ri as usize;
        self.request.resource_spans[ri].resource.as_ref().map(|_| self.resources[ri].as_deref().unwrap_or_default())
    }

    fn resource_schema_url(&self, ri: u32) -> &[u8] {
        self.request.resource_spans[ri as usize].schema_url.as_bytes()
    }

    fn scope(&self, ri: u32, si: u32) -> Option<&[u8]> {
        let (ri, si) = (ri as usize, si as usize);
        let ss: &ScopeSpans = &self.request.resource_spans[ri].scope_spans[si];
        ss.scope.as_ref().map(|_| self.scopes[ri][si].as_deref().unwrap_or_default())
    }

    fn scope_schema_url(&self, ri: u32, si: u32) -> &[u8] {
        self.request.resource_spans[ri as usize].scope_spans[si as usize].schema_url.as_bytes()
    }

    fn write_span(&self, span: &'a Span, buf: &mut BytesMut) {
        span.encode_raw(buf);
    }
}

/// The index ranges of maximal runs of `items` that `same` joins.
fn runs<'a, T>(
    items: &'a [T],
    same: impl Fn(&T, &T) -> bool + 'a,
) -> impl Iterator<Item = std::ops::Range<usize>> + 'a {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= items.len() {
            return None;
        }
        let mut end = start + 1;
        while end < items.len() && same(&items[start], &items[end]) {
            end += 1;
        }
        let run = start..end;
        start = end;
        Some(run)
    })
}

/// Bytes of a length-delimited field (tag below 16) holding `len` bytes.
fn framed(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Bytes of a string or bytes field, omitted when empty (as prost omits it).
fn bytes_len(s: &[u8]) -> usize {
    if s.is_empty() { 0 } else { framed(s.len()) }
}

/// Writes the tag and length of a length-delimited field.
fn field(buf: &mut BytesMut, tag: u32, len: usize) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(len as u64, buf);
}

fn bytes_field(buf: &mut BytesMut, tag: u32, s: &[u8]) {
    if !s.is_empty() {
        field(buf, tag, s.len());
        buf.extend_from_slice(s);
    }
}

/// The 16 bytes of a valid trace id.
fn trace_key(trace_id: &[u8]) -> [u8; 16] {
    let mut key = [0u8; 16];
    if let Ok(id) = <[u8; 16]>::try_from(trace_id) {
        key = id;
    }
    key
}

/// Validates every span and plans records of at most `max_message_bytes`, one trace each.
pub fn plan(request: &ExportTraceServiceRequest, max_message_bytes: usize) -> Plan {
    let mut planner = Planner::new(max_message_bytes);
    let mut assignment = Vec::new();
    for (ri, resource_spans) in request.resource_spans.iter().enumerate() {
        let resource_cost = Planner::wrapper_cost(
            resource_spans.resource.as_ref().map(Message::encoded_len),
            resource_spans.schema_url.len(),
        );
        for (si, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            let scope_cost = Planner::wrapper_cost(
                scope_spans.scope.as_ref().map(Message::encoded_len),
                scope_spans.schema_url.len(),
            );
            for span in &scope_spans.spans {
                if let Some(reason) = validate(span) {
                    planner.reject(reason);
                    assignment.push(None);
                    continue;
                }
                let span_len = span.encoded_len();
                let placed = planner.place(
                    trace_key(&span.trace_id),
                    (index(ri), index(si)),
                    resource_cost,
                    scope_cost,
                    span_len,
                );
                assignment.push(placed.map(|i| (i, u32::try_from(span_len).unwrap_or(u32::MAX))));
            }
        }
    }
    let (records, rejected) = planner.finish();
    Plan { records, assignment, rejected }
}

/// Validates and groups `request` into records of at most `max_message_bytes` (plan and build in
/// one step, for callers that have nothing to charge).
pub fn encode(request: &ExportTraceServiceRequest, max_message_bytes: usize) -> Encoded {
    plan(request, max_message_bytes).build(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
        resource::v1::Resource,
        trace::v1::ResourceSpans,
    };

    fn span(trace: u8, id: u8, pad: usize) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: format!("op-{id}"),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            attributes: vec![KeyValue {
                key: "pad".into(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue("x".repeat(pad))) }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn request(groups: Vec<(&str, Vec<Span>)>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: groups
                .into_iter()
                .map(|(service, spans)| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![KeyValue {
                            key: "service.name".into(),
                            value: Some(AnyValue { value: Some(any_value::Value::StringValue(service.into())) }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "lib".into(),
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

    fn decode(r: &Record) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest::decode(&r.payload[..]).expect("payload decodes")
    }

    #[test]
    fn groups_by_trace_keeping_resource_and_scope() {
        let req = request(vec![("a", vec![span(1, 1, 0), span(2, 2, 0), span(1, 3, 0)]), ("b", vec![span(1, 4, 0)])]);
        let enc = encode(&req, 900 * 1024);
        assert_eq!(enc.accepted_spans, 4);
        assert_eq!(enc.records.len(), 2);
        let first = &enc.records[0];
        assert_eq!(first.key_str(), "01".repeat(16));
        assert_eq!(first.spans, 3);
        let decoded = decode(first);
        assert_eq!(decoded.resource_spans.len(), 2, "spans of services a and b keep their own resource");
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), 2);
        assert_eq!(decoded.resource_spans[0].scope_spans[0].scope.as_ref().map(|s| s.name.as_str()), Some("lib"));
        assert_eq!(enc.records[1].key_str(), "02".repeat(16));
    }

    #[test]
    fn invalid_spans_are_counted_by_reason_and_valid_ones_kept() {
        let mut zero_trace = span(0, 1, 0);
        zero_trace.trace_id = vec![0; 16];
        let mut short_span = span(1, 2, 0);
        short_span.span_id = vec![1; 4];
        let mut backwards = span(1, 3, 0);
        backwards.end_time_unix_nano = 10;
        let mut bad_parent = span(1, 4, 0);
        bad_parent.parent_span_id = vec![1; 3];
        let req = request(vec![("a", vec![zero_trace, short_span, backwards, bad_parent, span(1, 5, 0)])]);
        let enc = encode(&req, 900 * 1024);
        assert_eq!(enc.accepted_spans, 1);
        assert_eq!(enc.rejected.total(), 4);
        let msg = enc.rejected.to_string();
        assert!(
            msg.contains("trace id") && msg.contains("span id") && msg.contains("end time") && msg.contains("parent"),
            "{msg}"
        );
    }

    #[test]
    fn splits_large_traces_and_rejects_oversize_spans() {
        let max = 10_000;
        let spans: Vec<Span> = (1..=40).map(|i| span(7, i, 900)).collect();
        let req = request(vec![("a", spans), ("b", vec![span(7, 99, 20_000)])]);
        let enc = encode(&req, max);
        assert_eq!(enc.rejected.0, vec![(RejectReason::TooLarge, 1)]);
        assert_eq!(enc.accepted_spans, 40);
        assert!(enc.records.len() >= 4, "40 spans of ~1KB split into 10KB records: {}", enc.records.len());
        let mut seen = Vec::new();
        for r in &enc.records {
            assert!(r.payload.len() <= max, "record of {} bytes over {max}", r.payload.len());
            assert_eq!(r.key_str(), "07".repeat(16));
            let d = decode(r);
            let n: usize = d.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
            assert_eq!(n, r.spans);
            seen.extend(
                d.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).map(|s| s.span_id[0]),
            );
        }
        seen.sort_unstable();
        assert_eq!(seen, (1..=40).collect::<Vec<u8>>(), "every span in exactly one record");
    }

    /// The records as prost encodes them when built as messages (the old way): one `ResourceSpans`
    /// per run of one resource, one `ScopeSpans` per run of one scope.
    fn oracle(request: &ExportTraceServiceRequest, r: &Record) -> Vec<u8> {
        let wanted: Vec<Vec<u8>> = decode(r)
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| s.span_id.clone())
            .collect();
        let mut out = ExportTraceServiceRequest::default();
        let mut last: Option<(usize, usize)> = None;
        for (ri, rs) in request.resource_spans.iter().enumerate() {
            for (si, ss) in rs.scope_spans.iter().enumerate() {
                for span in ss.spans.iter().filter(|s| wanted.contains(&s.span_id)) {
                    if last.is_none_or(|(r, _)| r != ri) {
                        out.resource_spans.push(ResourceSpans { scope_spans: vec![], ..rs.clone() });
                    }
                    if last != Some((ri, si)) {
                        let target = out.resource_spans.last_mut().expect("pushed");
                        target.scope_spans.push(ScopeSpans { spans: vec![], ..ss.clone() });
                    }
                    let target =
                        out.resource_spans.last_mut().and_then(|rs| rs.scope_spans.last_mut()).expect("pushed");
                    target.spans.push(span.clone());
                    last = Some((ri, si));
                }
            }
        }
        out.encode_to_vec()
    }

    #[test]
    fn records_are_byte_for_byte_what_prost_writes() {
        let mut req = request(vec![
            ("a", vec![span(1, 1, 10), span(2, 2, 0), span(1, 3, 300)]),
            ("b", vec![span(1, 4, 0), span(3, 5, 2000)]),
            ("a", vec![span(1, 6, 0)]),
        ]);
        req.resource_spans[1].schema_url = "https://opentelemetry.io/schemas/1.21.0".into();
        req.resource_spans[1].scope_spans[0].schema_url = "s".into();
        req.resource_spans[1].scope_spans.push(ScopeSpans {
            scope: None,
            spans: vec![span(1, 7, 0)],
            schema_url: String::new(),
        });
        req.resource_spans[2].resource = None;
        let enc = encode(&req, 900 * 1024);
        assert_eq!(enc.accepted_spans, 7);
        for r in &enc.records {
            assert_eq!(r.payload, oracle(&req, r), "record {}", r.key_str());
        }
        // Split records too.
        let enc = encode(&req, 250);
        assert!(enc.records.len() > 3);
        for r in &enc.records {
            assert_eq!(r.payload, oracle(&req, r), "record {}", r.key_str());
        }
    }

    #[test]
    fn the_plan_prices_resource_copies_before_any_is_made() {
        // An 800 KiB resource in front of 5 000 spans of different traces: 3.9 GiB of records.
        let mut spans: Vec<Span> = (0..5_000u32)
            .map(|i| {
                let mut s = span(1, 1, 0);
                s.trace_id = [i.to_be_bytes().as_slice(), &[7; 12]].concat();
                s.attributes.clear();
                s
            })
            .collect();
        spans.truncate(5_000);
        let mut req = request(vec![("a", spans)]);
        if let Some(resource) = req.resource_spans[0].resource.as_mut() {
            resource.attributes.push(KeyValue {
                key: "blob".into(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue("r".repeat(800 * 1024))) }),
                ..Default::default()
            });
        }
        let plan = plan(&req, 900 * 1024);
        assert_eq!(plan.records(), 5_000);
        assert!(plan.bytes() > 5_000 * 800 * 1024, "{}", plan.bytes());
    }

    #[test]
    fn empty_request_is_empty() {
        let enc = encode(&ExportTraceServiceRequest::default(), 1024);
        assert!(enc.records.is_empty());
        assert_eq!(enc.accepted_spans, 0);
        assert_eq!(enc.rejected.total(), 0);
    }
}
