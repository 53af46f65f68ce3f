//! `encode`: OTLP request → validated spans grouped into Kafka records, one per trace.
//!
//! Called by the receivers through [`crate::pipeline::Exporter`]. Pure (no I/O). Guarantees: every
//! input span ends up in exactly one record or is counted as rejected with its reason; a record holds
//! the spans of one trace with their original resource and scope, its key is the trace id as 32
//! lowercase hex characters, and its value (an `ExportTraceServiceRequest`) never exceeds
//! `max_message_bytes` — a larger trace is split over several records.

use std::{collections::HashMap, fmt};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message;
use spanline_common::ids;

/// One Kafka record to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The trace id as 32 lowercase hex characters.
    pub key: String,
    /// An encoded `ExportTraceServiceRequest` holding spans of this trace only.
    pub payload: Vec<u8>,
    /// How many spans the payload holds.
    pub spans: usize,
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
    if !ids::is_valid_trace_id(&span.trace_id) {
        return Some(RejectReason::InvalidTraceId);
    }
    if !ids::is_valid_span_id(&span.span_id) {
        return Some(RejectReason::InvalidSpanId);
    }
    if !(span.parent_span_id.is_empty() || span.parent_span_id.len() == 8) {
        return Some(RejectReason::InvalidParentSpanId);
    }
    if span.end_time_unix_nano < span.start_time_unix_nano {
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
struct Planned {
    key: [u8; 16],
    /// Upper bound of the record value's encoded length.
    size: usize,
    /// Input (resource, scope) positions of the last span appended, to reuse their wrappers.
    last: Option<(usize, usize)>,
    spans: usize,
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
        self.records.iter().map(|r| r.size + RECORD_OVERHEAD).sum()
    }

    /// How many records the request becomes.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// Builds the records as planned, writing each record's protobuf bytes directly: every resource
    /// and scope is encoded once and copied into the records that need it, so building allocates
    /// the records' bytes and little else.
    pub fn build(self, request: &ExportTraceServiceRequest) -> Encoded {
        let Plan { records: planned, assignment, rejected } = self;
        // Each record's spans as (resource, scope, span, encoded length) in input order.
        let mut members: Vec<Vec<Member<'_>>> = planned.iter().map(|p| Vec::with_capacity(p.spans)).collect();
        let mut assignment = assignment.into_iter();
        let mut resources: Vec<Option<Vec<u8>>> = vec![None; request.resource_spans.len()];
        let mut scopes: Vec<Vec<Option<Vec<u8>>>> =
            request.resource_spans.iter().map(|rs| vec![None; rs.scope_spans.len()]).collect();
        for (ri, rs) in request.resource_spans.iter().enumerate() {
            for (si, ss) in rs.scope_spans.iter().enumerate() {
                for span in &ss.spans {
                    let Some(Some((i, len))) = assignment.next() else { continue };
                    if let Some(m) = members.get_mut(i as usize) {
                        m.push((index(ri), index(si), span, len as usize));
                    }
                    // Encoded once, the first time a record needs them.
                    resources[ri]
                        .get_or_insert_with(|| rs.resource.as_ref().map(Message::encode_to_vec).unwrap_or_default());
                    scopes[ri][si]
                        .get_or_insert_with(|| ss.scope.as_ref().map(Message::encode_to_vec).unwrap_or_default());
                }
            }
        }
        let layout = Layout { request, resources: &resources, scopes: &scopes };
        let mut out = Encoded { rejected, ..Encoded::default() };
        out.records = planned
            .iter()
            .zip(&members)
            .map(|(p, spans)| {
                out.accepted_spans += spans.len();
                let payload = layout.write(spans);
                debug_assert!(payload.len() <= p.size, "size bound {} below real size {}", p.size, payload.len());
                Record { key: ids::to_hex(&p.key), payload, spans: spans.len() }
            })
            .collect();
        out
    }
}

fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// What the records of one request are written from.
struct Layout<'a> {
    request: &'a ExportTraceServiceRequest,
    /// Each resource's encoding (empty when it has none), once some record uses it.
    resources: &'a [Option<Vec<u8>>],
    scopes: &'a [Vec<Option<Vec<u8>>>],
}

/// A span's place and size: (resource, scope, span, encoded length).
type Member<'a> = (u32, u32, &'a Span, usize);

impl Layout<'_> {
    fn resource_spans(&self, ri: u32) -> &ResourceSpans {
        &self.request.resource_spans[ri as usize]
    }

    fn scope_spans(&self, ri: u32, si: u32) -> &ScopeSpans {
        &self.resource_spans(ri).scope_spans[si as usize]
    }

    /// The `ExportTraceServiceRequest` holding `spans`: one `ResourceSpans` per run of spans of one
    /// resource, one `ScopeSpans` per run of one scope within it, as prost would encode them.
    fn write(&self, spans: &[Member<'_>]) -> Vec<u8> {
        let total: usize = runs(spans, |a, b| a.0 == b.0).map(|r| framed(self.resource_len(&spans[r]))).sum();
        let mut buf = Vec::with_capacity(total);
        for r in runs(spans, |a, b| a.0 == b.0) {
            let group = &spans[r];
            let ri = group[0].0;
            let rs = self.resource_spans(ri);
            field(&mut buf, 1, self.resource_len(group));
            if rs.resource.is_some() {
                let bytes = self.resources[ri as usize].as_deref().unwrap_or_default();
                field(&mut buf, 1, bytes.len());
                buf.extend_from_slice(bytes);
            }
            for r in runs(group, |a, b| a.1 == b.1) {
                let scope_group = &group[r];
                let si = scope_group[0].1;
                let ss = self.scope_spans(ri, si);
                field(&mut buf, 2, self.scope_len(scope_group));
                if ss.scope.is_some() {
                    let bytes = self.scopes[ri as usize][si as usize].as_deref().unwrap_or_default();
                    field(&mut buf, 1, bytes.len());
                    buf.extend_from_slice(bytes);
                }
                for &(_, _, span, len) in scope_group {
                    field(&mut buf, 2, len);
                    span.encode_raw(&mut buf);
                }
                string_field(&mut buf, 3, &ss.schema_url);
            }
            string_field(&mut buf, 3, &rs.schema_url);
        }
        debug_assert_eq!(buf.len(), total);
        buf
    }

    /// Encoded length of the `ResourceSpans` holding `group` (spans of one resource).
    fn resource_len(&self, group: &[Member<'_>]) -> usize {
        let ri = group[0].0;
        let rs = self.resource_spans(ri);
        let resource =
            if rs.resource.is_some() { framed(self.resources[ri as usize].as_ref().map_or(0, Vec::len)) } else { 0 };
        let scopes: usize = runs(group, |a, b| a.1 == b.1).map(|r| framed(self.scope_len(&group[r]))).sum();
        resource + scopes + string_len(&rs.schema_url)
    }

    /// Encoded length of the `ScopeSpans` holding `group` (spans of one scope).
    fn scope_len(&self, group: &[Member<'_>]) -> usize {
        let (ri, si) = (group[0].0, group[0].1);
        let ss = self.scope_spans(ri, si);
        let scope = if ss.scope.is_some() {
            framed(self.scopes[ri as usize][si as usize].as_ref().map_or(0, Vec::len))
        } else {
            0
        };
        scope + group.iter().map(|m| framed(m.3)).sum::<usize>() + string_len(&ss.schema_url)
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

fn string_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { framed(s.len()) }
}

/// Writes the tag and length of a length-delimited field.
fn field(buf: &mut Vec<u8>, tag: u32, len: usize) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(len as u64, buf);
}

fn string_field(buf: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        field(buf, tag, s.len());
        buf.extend_from_slice(s.as_bytes());
    }
}

/// Validates every span and plans records of at most `max_message_bytes`, one trace each.
pub fn plan(request: &ExportTraceServiceRequest, max_message_bytes: usize) -> Plan {
    let mut plan = Plan::default();
    // Trace id → index in `plan.records` of that trace's open (last) record.
    let mut open: HashMap<[u8; 16], usize> = HashMap::new();

    for (ri, resource_spans) in request.resource_spans.iter().enumerate() {
        let resource_cost = resource_spans.resource.as_ref().map_or(0, |r| r.encoded_len() + FRAMING)
            + resource_spans.schema_url.len()
            + 2 * FRAMING;
        for (si, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            let scope_cost = scope_spans.scope.as_ref().map_or(0, |s| s.encoded_len() + FRAMING)
                + scope_spans.schema_url.len()
                + 2 * FRAMING;
            for span in &scope_spans.spans {
                if let Some(reason) = validate(span) {
                    plan.rejected.add(reason);
                    plan.assignment.push(None);
                    continue;
                }
                let span_len = span.encoded_len();
                let span_cost = span_len + FRAMING;
                if resource_cost + scope_cost + span_cost > max_message_bytes {
                    plan.rejected.add(RejectReason::TooLarge);
                    plan.assignment.push(None);
                    continue;
                }
                let mut key = [0u8; 16];
                key.copy_from_slice(&span.trace_id);
                let fits = |g: &Planned| {
                    let header = match g.last {
                        Some((r, s)) if r == ri && s == si => 0,
                        Some((r, _)) if r == ri => scope_cost,
                        _ => resource_cost + scope_cost,
                    };
                    g.size + header + span_cost <= max_message_bytes
                };
                let i = match open.get(&key) {
                    Some(&i) if fits(&plan.records[i]) => i,
                    _ => {
                        plan.records.push(Planned { key, size: 0, last: None, spans: 0 });
                        open.insert(key, plan.records.len() - 1);
                        plan.records.len() - 1
                    }
                };
                let g = &mut plan.records[i];
                let same_resource = g.last.is_some_and(|(r, _)| r == ri);
                if !same_resource {
                    g.size += resource_cost;
                }
                if !(same_resource && g.last.is_some_and(|(_, s)| s == si)) {
                    g.size += scope_cost;
                }
                g.size += span_cost;
                g.last = Some((ri, si));
                g.spans += 1;
                // Under max_message_bytes, so it fits.
                plan.assignment.push(Some((index(i), u32::try_from(span_len).unwrap_or(u32::MAX))));
            }
        }
    }
    plan
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
        ExportTraceServiceRequest::decode(r.payload.as_slice()).expect("payload decodes")
    }

    #[test]
    fn groups_by_trace_keeping_resource_and_scope() {
        let req = request(vec![("a", vec![span(1, 1, 0), span(2, 2, 0), span(1, 3, 0)]), ("b", vec![span(1, 4, 0)])]);
        let enc = encode(&req, 900 * 1024);
        assert_eq!(enc.accepted_spans, 4);
        assert_eq!(enc.records.len(), 2);
        let first = &enc.records[0];
        assert_eq!(first.key, "01".repeat(16));
        assert_eq!(first.spans, 3);
        let decoded = decode(first);
        assert_eq!(decoded.resource_spans.len(), 2, "spans of services a and b keep their own resource");
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), 2);
        assert_eq!(decoded.resource_spans[0].scope_spans[0].scope.as_ref().map(|s| s.name.as_str()), Some("lib"));
        assert_eq!(enc.records[1].key, "02".repeat(16));
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
            assert_eq!(r.key, "07".repeat(16));
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
            assert_eq!(r.payload, oracle(&req, r), "record {}", r.key);
        }
        // Split records too.
        let enc = encode(&req, 250);
        assert!(enc.records.len() > 3);
        for r in &enc.records {
            assert_eq!(r.payload, oracle(&req, r), "record {}", r.key);
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
