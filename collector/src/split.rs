//! `split`: the wire bytes of a protobuf OTLP request → Kafka records, one per trace, without
//! decoding it. The byte path beside `decode → limit → process → encode`.
//!
//! Called by [`crate::pipeline::Exporter`] for every protobuf body. One walk over the bytes checks
//! every field of every message (field numbers, wire types, lengths, UTF-8 of every string at any
//! depth), reads per span only its ids and times, checks the attribute limits, samples by trace id,
//! validates ([`encode::check`]) and plans the records ([`Planner`], the decode path's planner, on
//! wire lengths). The records are then written by copying the original bytes of resources, scopes
//! and spans ([`encode::write_records`], the decode path's layout).
//!
//! Guarantees: a request taken here gets exactly what the decode path would give it: the same
//! records, byte for byte, the same rejections and counts. It takes only bodies whose copied parts
//! (resources, scopes, spans) are written as prost writes them (fields in number order, a singular
//! field once, default values left out, shortest varints), as OpenTelemetry SDKs write them: for
//! those, the copy is what re-encoding would write. Whatever it does not take it hands back
//! untouched with a [`Fallback`] reason: a configured redaction rule, an attribute over a limit
//! (the limits would change the request), and any byte it does not expect (malformed protobuf,
//! invalid UTF-8, an unknown field, a field not written as prost writes it, nesting past
//! [`MAX_DEPTH`]). So every body prost refuses goes to the decode path, and its error is prost's.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::{
    encode::{self, Encoded, Member, Planned, Planner, Rejections, Source},
    limit::AttributeLimits,
    process::Processors,
    span_metrics,
};

/// Nesting (messages from the request down) past which the decode path decides; prost refuses
/// past 100, so anything taken here is within prost's limit.
pub const MAX_DEPTH: usize = 64;

/// Upper bound of what the split's tables hold per span of the body, charged before the walk: its
/// place in a record (32 bytes, and half again while sorted), its record's plan (48 bytes, three
/// times while the vector grows) and its trace's entry in the open-record map (about 72 bytes
/// while it grows), the record's `Record` (72 bytes).
const TABLE_BYTES_PER_SPAN: usize = 384;

/// Likewise per `ResourceSpans` and `ScopeSpans` (a position and a schema url, 20 bytes).
const TABLE_BYTES_PER_WRAPPER: usize = 32;

/// Why a request goes to the decode path; the `reason` label of
/// `spanline_collector_decode_fallbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// The body is OTLP/JSON.
    Json,
    /// A redaction rule is configured (`processors.redaction`).
    Redaction,
    /// An attribute count, key or value is over a limit of `[limits]`.
    AttributeLimit,
    /// Bytes the byte path does not copy as they are: malformed protobuf or invalid UTF-8 (the
    /// decode path gives the error), an unknown field, a field not written as prost writes it
    /// (out of order, twice, a default value, a longer varint), nesting past [`MAX_DEPTH`], or more
    /// spans than `limits.max_spans_per_request` (the decode path refuses it).
    Encoding,
}

impl Fallback {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Json => "json",
            Fallback::Redaction => "redaction",
            Fallback::AttributeLimit => "attribute_limit",
            Fallback::Encoding => "encoding",
        }
    }
}

/// The top three levels of a body, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub resource_spans: usize,
    pub scope_spans: usize,
    pub spans: usize,
}

impl Counts {
    /// Counts a body's `ResourceSpans`, `ScopeSpans` and spans, hopping over each span by its
    /// length (nothing below the third level is read).
    pub fn of(body: &[u8]) -> Result<Counts, Fallback> {
        let mut counts = Counts::default();
        let mut request = body;
        while let Some(field) = next_field(&mut request)? {
            let (1, Wire::Len(mut resource_spans)) = field else { return Err(Fallback::Encoding) };
            counts.resource_spans += 1;
            while let Some(field) = next_field(&mut resource_spans)? {
                if let (2, Wire::Len(mut scope_spans)) = field {
                    counts.scope_spans += 1;
                    while let Some(field) = next_field(&mut scope_spans)? {
                        counts.spans += usize::from(matches!(field, (2, Wire::Len(_))));
                    }
                }
            }
        }
        Ok(counts)
    }

    /// Upper bound of the memory [`plan`] and [`SplitPlan::build`] hold beside the body and the
    /// records' bytes: charge it before calling them.
    pub fn table_bytes(&self) -> usize {
        self.spans
            .saturating_mul(TABLE_BYTES_PER_SPAN)
            .saturating_add((self.resource_spans + self.scope_spans).saturating_mul(TABLE_BYTES_PER_WRAPPER))
    }
}

/// A resource or a scope: where its message is in the body (`None` when absent) and its schema url.
#[derive(Debug, Clone, Copy)]
struct Wrapper {
    message: Option<Part>,
    schema_url: Part,
}

/// A part of the body: offset and length.
type Part = (u32, u32);

/// A request planned on the byte path: where every span goes, from sizes alone. Nothing is copied
/// until [`SplitPlan::build`], so the caller can charge [`SplitPlan::bytes`] first.
#[derive(Debug)]
pub struct SplitPlan {
    resources: Vec<Wrapper>,
    scopes: Vec<Wrapper>,
    members: Vec<Member<Part>>,
    records: Vec<Planned>,
    rejected: Rejections,
    sampled_out: usize,
    /// The valid spans' RED metrics, to be recorded once Kafka holds the records.
    counted: span_metrics::Counted,
}

impl SplitPlan {
    /// Memory the records will hold until Kafka acknowledges them, as [`encode::Plan::bytes`].
    pub fn bytes(&self) -> usize {
        encode::records_bytes(&self.records)
    }

    /// How many records the request becomes.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// Spans left out by sampling.
    pub fn sampled_out(&self) -> usize {
        self.sampled_out
    }

    /// The valid spans' RED metrics (empty unless planned with `span_metrics`).
    pub fn take_counted(&mut self) -> span_metrics::Counted {
        std::mem::take(&mut self.counted)
    }

    /// Writes the records, copying resources, scopes and spans from `body` (the body planned).
    pub fn build(self, body: &[u8]) -> Encoded {
        let source = WireSource { body, resources: &self.resources, scopes: &self.scopes };
        encode::write_records(&source, &self.records, self.members, self.rejected)
    }
}

/// Walks `body` once and plans its records of at most `max_message_bytes`, one trace each, as the
/// decode path would after `limits` and `processors`; or says why the decode path must take it.
/// `counts` are the body's ([`Counts::of`]), their [`Counts::table_bytes`] charged. With
/// `span_metrics`, the valid spans' RED metrics are tallied too ([`SplitPlan::take_counted`]).
pub fn plan(
    body: &[u8],
    counts: &Counts,
    limits: &AttributeLimits,
    processors: &Processors,
    max_message_bytes: usize,
    span_metrics: bool,
) -> Result<SplitPlan, Fallback> {
    if processors.redacts() {
        return Err(Fallback::Redaction);
    }
    if u32::try_from(body.len()).is_err() {
        return Err(Fallback::Encoding);
    }
    let mut walk = Walk {
        body,
        per_span: limits.per_span(),
        per_resource: limits.per_resource(),
        value_bytes: limits.value_bytes(),
        processors,
        planner: Planner::new(max_message_bytes),
        resources: Vec::with_capacity(counts.resource_spans),
        scopes: Vec::with_capacity(counts.scope_spans),
        members: Vec::with_capacity(counts.spans),
        sampled_out: 0,
        service: b"",
        tally: span_metrics.then(span_metrics::Tally::default),
    };
    walk.request()?;
    let (records, rejected) = walk.planner.finish();
    Ok(SplitPlan {
        resources: walk.resources,
        scopes: walk.scopes,
        members: walk.members,
        records,
        rejected,
        sampled_out: walk.sampled_out,
        counted: walk.tally.map(span_metrics::Tally::into_owned).unwrap_or_default(),
    })
}

/// Plans and builds in one step, for callers that have nothing to charge (tests, benches): the
/// records and how many spans sampling left out.
pub fn split(
    body: &[u8],
    limits: &AttributeLimits,
    processors: &Processors,
    max_message_bytes: usize,
) -> Result<(Encoded, usize), Fallback> {
    let counts = Counts::of(body)?;
    let plan = plan(body, &counts, limits, processors, max_message_bytes, false)?;
    let sampled_out = plan.sampled_out();
    Ok((plan.build(body), sampled_out))
}

/// The body as the records' [`Source`]: every part is a slice of it.
struct WireSource<'a> {
    body: &'a [u8],
    resources: &'a [Wrapper],
    scopes: &'a [Wrapper],
}

impl WireSource<'_> {
    fn part(&self, (start, len): Part) -> &[u8] {
        let start = start as usize;
        self.body.get(start..start + len as usize).unwrap_or_default()
    }
}

impl Source for WireSource<'_> {
    type Span = Part;

    fn resource(&self, ri: u32) -> Option<&[u8]> {
        self.resources[ri as usize].message.map(|m| self.part(m))
    }

    fn resource_schema_url(&self, ri: u32) -> &[u8] {
        self.part(self.resources[ri as usize].schema_url)
    }

    fn scope(&self, _ri: u32, si: u32) -> Option<&[u8]> {
        self.scopes[si as usize].message.map(|m| self.part(m))
    }

    fn scope_schema_url(&self, _ri: u32, si: u32) -> &[u8] {
        self.part(self.scopes[si as usize].schema_url)
    }

    fn write_span(&self, span: Part, buf: &mut bytes::BytesMut) {
        buf.extend_from_slice(self.part(span));
    }
}

/// A field's value as the wire gives it.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    I64(u64),
    I32(u32),
    Len(&'a [u8]),
}

/// The next field of a message (its number and value); `None` at its end. Stricter than prost:
/// groups, and anything prost refuses, are [`Fallback::Encoding`].
#[inline(always)]
fn next_field<'a>(buf: &mut &'a [u8]) -> Result<Option<(u64, Wire<'a>)>, Fallback> {
    if buf.is_empty() {
        return Ok(None);
    }
    let key = varint(buf)?;
    let number = key >> 3;
    if number == 0 || key > u64::from(u32::MAX) {
        return Err(Fallback::Encoding);
    }
    let value = match key & 7 {
        0 => Wire::Varint(varint(buf)?),
        1 => {
            let (value, rest) = buf.split_first_chunk::<8>().ok_or(Fallback::Encoding)?;
            *buf = rest;
            Wire::I64(u64::from_le_bytes(*value))
        }
        2 => {
            let len = usize::try_from(varint(buf)?).map_err(|_| Fallback::Encoding)?;
            let (value, rest) = buf.split_at_checked(len).ok_or(Fallback::Encoding)?;
            *buf = rest;
            Wire::Len(value)
        }
        5 => {
            let (value, rest) = buf.split_first_chunk::<4>().ok_or(Fallback::Encoding)?;
            *buf = rest;
            Wire::I32(u32::from_le_bytes(*value))
        }
        _ => return Err(Fallback::Encoding),
    };
    Ok(Some((number, value)))
}

/// A varint as prost reads it (at most ten bytes, the tenth at most 1) and writes it (no trailing
/// zero byte). Most are one byte (tags, short lengths): that case is inlined.
#[inline(always)]
fn varint(buf: &mut &[u8]) -> Result<u64, Fallback> {
    match buf.split_first() {
        Some((&byte, rest)) if byte < 0x80 => {
            *buf = rest;
            Ok(u64::from(byte))
        }
        _ => long_varint(buf),
    }
}

#[inline(never)]
fn long_varint(buf: &mut &[u8]) -> Result<u64, Fallback> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first().ok_or(Fallback::Encoding)?;
        *buf = rest;
        if (i == 9 && byte > 1) || (i > 0 && byte == 0) {
            return Err(Fallback::Encoding);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(Fallback::Encoding)
}

/// The fields of a copied message in the order prost writes them: ascending numbers, a repeated
/// field's elements together, a singular field once. Anything else would make the copy differ from
/// what the decode path writes.
#[derive(Default)]
struct Order {
    last: u64,
}

impl Order {
    fn next(&mut self, number: u64, repeated: bool) -> Result<(), Fallback> {
        if number < self.last || (number == self.last && !repeated) {
            return Err(Fallback::Encoding);
        }
        self.last = number;
        Ok(())
    }
}

/// A singular string or bytes field as prost writes it: only when not empty.
fn set(value: &[u8]) -> Result<&[u8], Fallback> {
    if value.is_empty() { Err(Fallback::Encoding) } else { Ok(value) }
}

/// A singular scalar as prost writes it: only when not zero.
fn nonzero(value: u64) -> Result<u64, Fallback> {
    if value == 0 { Err(Fallback::Encoding) } else { Ok(value) }
}

/// An `int32` or enum as prost writes it: sign-extended to 64 bits.
fn int32(value: u64) -> Result<(), Fallback> {
    let low = i64::from(value as u32 as i32) as u64;
    if value == low { Ok(()) } else { Err(Fallback::Encoding) }
}

/// A `uint32` as prost writes it: below 2^32 (prost keeps the low bits and writes them alone).
fn uint32(value: u64) -> Result<(), Fallback> {
    if u32::try_from(value).is_ok() { Ok(()) } else { Err(Fallback::Encoding) }
}

/// The service of a resource without a `service.name` string, as OpenTelemetry names it.
const UNKNOWN_SERVICE: &[u8] = b"unknown_service";

/// An enum already checked by [`int32`]: its low 32 bits.
#[allow(clippy::cast_possible_truncation)]
fn enum_value(value: u64) -> i32 {
    value as i32
}

/// A checked `KeyValue`'s key and, when its value is a non-empty string, the string (`None` for
/// any other value).
fn string_attribute(mut kv: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (mut key, mut value) = (&b""[..], None);
    while let Ok(Some(field)) = next_field(&mut kv) {
        match field {
            (1, Wire::Len(k)) => key = k,
            (2, Wire::Len(mut any)) => {
                value = match next_field(&mut any) {
                    Ok(Some((1, Wire::Len(s)))) if !s.is_empty() => Some(s),
                    _ => None,
                };
            }
            _ => {}
        }
    }
    Some((key, value))
}

fn utf8(s: &[u8]) -> Result<(), Fallback> {
    std::str::from_utf8(s).map(|_| ()).map_err(|_| Fallback::Encoding)
}

fn deeper(depth: usize) -> Result<(), Fallback> {
    if depth > MAX_DEPTH { Err(Fallback::Encoding) } else { Ok(()) }
}

/// A span's fields the byte path needs (the last occurrence of each, as prost keeps).
#[derive(Debug, Default)]
struct SpanFields<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    parent_span_id: &'a [u8],
    start: u64,
    end: u64,
    name: &'a [u8],
    kind: i32,
    status: i32,
}

/// One walk over a body: checks, samples, validates and plans. Depths count messages from the
/// request (0): `ResourceSpans` 1, `Resource` and `ScopeSpans` 2, scope and span 3.
struct Walk<'a> {
    body: &'a [u8],
    per_span: usize,
    per_resource: usize,
    value_bytes: usize,
    processors: &'a Processors,
    planner: Planner,
    resources: Vec<Wrapper>,
    scopes: Vec<Wrapper>,
    members: Vec<Member<Part>>,
    sampled_out: usize,
    /// The current resource's `service.name` (its first, when a string).
    service: &'a [u8],
    /// RED metrics of the valid spans, sampled or not, when they are counted.
    tally: Option<span_metrics::Tally<'a>>,
}

impl<'a> Walk<'a> {
    /// Where `part` (a slice of the body, or empty) is in the body.
    fn place_of(&self, part: &[u8]) -> Part {
        if part.is_empty() {
            return (0, 0);
        }
        let start = (part.as_ptr() as usize).wrapping_sub(self.body.as_ptr() as usize);
        // The body is shorter than u32::MAX (checked in `plan`).
        (u32::try_from(start).unwrap_or(u32::MAX), u32::try_from(part.len()).unwrap_or(u32::MAX))
    }

    fn request(&mut self) -> Result<(), Fallback> {
        let mut buf = self.body;
        while let Some(field) = next_field(&mut buf)? {
            let (1, Wire::Len(resource_spans)) = field else { return Err(Fallback::Encoding) };
            self.resource_spans(resource_spans)?;
        }
        Ok(())
    }

    /// The resource and schema url are read first (they may come after the scopes on the wire):
    /// every record of its spans needs their size.
    fn resource_spans(&mut self, bytes: &'a [u8]) -> Result<(), Fallback> {
        let (mut resource, mut schema_url) = (None, None);
        let mut buf = bytes;
        while let Some(field) = next_field(&mut buf)? {
            match field {
                (1, Wire::Len(r)) if resource.replace(r).is_none() => {}
                (2, Wire::Len(_)) => {}
                (3, Wire::Len(s)) if schema_url.replace(s).is_none() => {}
                _ => return Err(Fallback::Encoding),
            }
        }
        self.service = UNKNOWN_SERVICE;
        if let Some(r) = resource {
            self.resource(r)?;
        }
        let schema_url = schema_url.unwrap_or_default();
        utf8(schema_url)?;
        let ri = encode_index(self.resources.len());
        let wrapper = Wrapper { message: resource.map(|r| self.place_of(r)), schema_url: self.place_of(schema_url) };
        self.resources.push(wrapper);
        let cost = Planner::wrapper_cost(resource.map(<[u8]>::len), schema_url.len());
        let mut buf = bytes;
        while let Some(field) = next_field(&mut buf)? {
            if let (2, Wire::Len(scope_spans)) = field {
                self.scope_spans(ri, cost, scope_spans)?;
            }
        }
        Ok(())
    }

    fn scope_spans(&mut self, ri: u32, resource_cost: usize, bytes: &'a [u8]) -> Result<(), Fallback> {
        let (mut scope, mut schema_url) = (None, None);
        let mut buf = bytes;
        while let Some(field) = next_field(&mut buf)? {
            match field {
                (1, Wire::Len(s)) if scope.replace(s).is_none() => {}
                (2, Wire::Len(_)) => {}
                (3, Wire::Len(s)) if schema_url.replace(s).is_none() => {}
                _ => return Err(Fallback::Encoding),
            }
        }
        if let Some(s) = scope {
            self.scope(s)?;
        }
        let schema_url = schema_url.unwrap_or_default();
        utf8(schema_url)?;
        let si = encode_index(self.scopes.len());
        let wrapper = Wrapper { message: scope.map(|s| self.place_of(s)), schema_url: self.place_of(schema_url) };
        self.scopes.push(wrapper);
        let scope_cost = Planner::wrapper_cost(scope.map(<[u8]>::len), schema_url.len());
        let mut buf = bytes;
        while let Some(field) = next_field(&mut buf)? {
            if let (2, Wire::Len(span)) = field {
                self.place(span, (ri, si), resource_cost, scope_cost)?;
            }
        }
        Ok(())
    }

    /// Checks a span, then samples, validates and places it as the decode path does.
    fn place(
        &mut self,
        span: &'a [u8],
        at: (u32, u32),
        resource_cost: usize,
        scope_cost: usize,
    ) -> Result<(), Fallback> {
        let fields = self.span(span)?;
        let invalid = encode::check(fields.trace_id, fields.span_id, fields.parent_span_id, fields.start, fields.end);
        if let Some(tally) = self.tally.as_mut()
            && invalid.is_none()
        {
            let key = span_metrics::Key {
                service: self.service,
                name: fields.name,
                kind: fields.kind,
                status: fields.status,
            };
            tally.add(key, fields.start, fields.end);
        }
        if !self.processors.keeps_trace(fields.trace_id) {
            self.sampled_out += 1;
            return Ok(());
        }
        if let Some(reason) = invalid {
            self.planner.reject(reason);
            return Ok(());
        }
        let key = <[u8; 16]>::try_from(fields.trace_id).map_err(|_| Fallback::Encoding)?;
        if let Some(record) = self.planner.place(key, at, resource_cost, scope_cost, span.len()) {
            let member = Member { record, resource: at.0, scope: at.1, span: self.place_of(span), len: span.len() };
            self.members.push(member);
        }
        Ok(())
    }

    /// `Span`: every field checked, ids and times read.
    fn span(&self, mut buf: &'a [u8]) -> Result<SpanFields<'a>, Fallback> {
        const DEPTH: usize = 3;
        let mut fields = SpanFields::default();
        let mut attributes = 0;
        let mut order = Order::default();
        while let Some(field) = next_field(&mut buf)? {
            order.next(field.0, matches!(field.0, 9 | 11 | 13))?;
            match field {
                (1, Wire::Len(v)) => fields.trace_id = set(v)?,
                (2, Wire::Len(v)) => fields.span_id = set(v)?,
                (4, Wire::Len(v)) => fields.parent_span_id = set(v)?,
                (3, Wire::Len(s)) => utf8(set(s)?)?,
                (5, Wire::Len(s)) => {
                    utf8(set(s)?)?;
                    fields.name = s;
                }
                (6, Wire::Varint(v)) => {
                    int32(nonzero(v)?)?;
                    fields.kind = enum_value(v);
                }
                (10 | 12 | 14, Wire::Varint(v)) => uint32(nonzero(v)?)?,
                (16, Wire::I32(v)) => _ = nonzero(u64::from(v))?,
                (7, Wire::I64(t)) => fields.start = nonzero(t)?,
                (8, Wire::I64(t)) => fields.end = nonzero(t)?,
                (9, Wire::Len(kv)) => {
                    attributes += 1;
                    self.key_value(kv, DEPTH + 1)?;
                }
                (11, Wire::Len(event)) => self.event(event)?,
                (13, Wire::Len(link)) => self.link(link)?,
                (15, Wire::Len(status)) => fields.status = self.status(status)?,
                _ => return Err(Fallback::Encoding),
            }
        }
        self.count(attributes, self.per_span)?;
        Ok(fields)
    }

    /// `Span.Event`.
    fn event(&self, mut buf: &[u8]) -> Result<(), Fallback> {
        const DEPTH: usize = 4;
        let mut attributes = 0;
        let mut order = Order::default();
        while let Some(field) = next_field(&mut buf)? {
            order.next(field.0, field.0 == 3)?;
            match field {
                (1, Wire::I64(t)) => _ = nonzero(t)?,
                (4, Wire::Varint(v)) => uint32(nonzero(v)?)?,
                (2, Wire::Len(s)) => utf8(set(s)?)?,
                (3, Wire::Len(kv)) => {
                    attributes += 1;
                    self.key_value(kv, DEPTH + 1)?;
                }
                _ => return Err(Fallback::Encoding),
            }
        }
        self.count(attributes, self.per_span)
    }

    /// `Span.Link`.
    fn link(&self, mut buf: &[u8]) -> Result<(), Fallback> {
        const DEPTH: usize = 4;
        let mut attributes = 0;
        let mut order = Order::default();
        while let Some(field) = next_field(&mut buf)? {
            order.next(field.0, field.0 == 4)?;
            match field {
                (1 | 2, Wire::Len(id)) => _ = set(id)?,
                (5, Wire::Varint(v)) => uint32(nonzero(v)?)?,
                (6, Wire::I32(v)) => _ = nonzero(u64::from(v))?,
                (3, Wire::Len(s)) => utf8(set(s)?)?,
                (4, Wire::Len(kv)) => {
                    attributes += 1;
                    self.key_value(kv, DEPTH + 1)?;
                }
                _ => return Err(Fallback::Encoding),
            }
        }
        self.count(attributes, self.per_span)
    }

    /// `Status`.
    /// `Status`: its code.
    fn status(&self, mut buf: &[u8]) -> Result<i32, Fallback> {
        let mut order = Order::default();
        let mut code = 0;
        while let Some(field) = next_field(&mut buf)? {
            order.next(field.0, false)?;
            match field {
                (2, Wire::Len(s)) => utf8(set(s)?)?,
                (3, Wire::Varint(v)) => {
                    int32(nonzero(v)?)?;
                    code = enum_value(v);
                }
                _ => return Err(Fallback::Encoding),
            }
        }
        Ok(code)
    }

    /// `Resource`.
    fn resource(&mut self, mut buf: &'a [u8]) -> Result<(), Fallback> {
        const DEPTH: usize = 2;
        let mut attributes = 0;
        let mut order = Order::default();
        let mut service = None;
        while let Some(field) = next_field(&mut buf)? {
            order.next(field.0, matches!(field.0, 1 | 3))?;
            match field {
                (1, Wire::Len(kv)) => {
                    attributes += 1;
                    self.key_value(kv, DEPTH + 1)?;
                    if service.is_none()
                        && let Some((key, value)) = string_attribute(kv)
                        && key == b"service.name"
                    {
                        service = Some(value);
                    }
                }
                (2, Wire::Varint(v)) => uint32(nonzero(v)?)?,
                (3, Wire::Len(entity)) => entity_ref(entity)?,
                _ => return Err(Fallback::Encoding),
            }
        }
        // The first `service.name` decides, when it holds a non-empty string (as the ingester reads it).
        if let Some(Some(name)) = service {
            self.service = name;
        }
        self.count(attributes, self.per_resource)
    }

    /// `InstrumentationScope`.
    fn scope(&self, mut buf: &[u8]) -> Result<(), Fallback> {
        const DEPTH: usize = 3;
        let mut attributes = 0;
        let mut order = Order::default();
        while let Some(field) = next_field(&mut buf)? {
            order.next(field.0, field.0 == 3)?;
            match field {
                (1 | 2, Wire::Len(s)) => utf8(set(s)?)?,
                (3, Wire::Len(kv)) => {
                    attributes += 1;
                    self.key_value(kv, DEPTH + 1)?;
                }
                (4, Wire::Varint(v)) => uint32(nonzero(v)?)?,
                _ => return Err(Fallback::Encoding),
            }
        }
        self.count(attributes, self.per_resource)
    }

    /// `KeyValue` at `depth`: its key and value within the length limit.
    fn key_value(&self, mut buf: &[u8], depth: usize) -> Result<(), Fallback> {
        deeper(depth)?;
        let mut order = Order::default();
        while let Some(field) = next_field(&mut buf)? {
            order.next(field.0, false)?;
            match field {
                (1, Wire::Len(key)) => self.text(set(key)?)?,
                (2, Wire::Len(value)) => self.any_value(value, depth + 1)?,
                (3, Wire::Varint(v)) => int32(nonzero(v)?)?,
                _ => return Err(Fallback::Encoding),
            }
        }
        Ok(())
    }

    /// `AnyValue` at `depth`: strings and bytes at any depth within the length limit.
    fn any_value(&self, mut buf: &[u8], depth: usize) -> Result<(), Fallback> {
        deeper(depth)?;
        // A oneof: prost writes the one variant set, even when its value is the default.
        let Some(field) = next_field(&mut buf)? else { return Ok(()) };
        if !buf.is_empty() {
            return Err(Fallback::Encoding);
        }
        match field {
            (1, Wire::Len(s)) => self.text(s)?,
            (2, Wire::Varint(b)) if b <= 1 => {}
            (3, Wire::Varint(_)) | (4, Wire::I64(_)) => {}
            (8, Wire::Varint(v)) => int32(v)?,
            (5, Wire::Len(array)) => {
                deeper(depth + 1)?;
                let mut array = array;
                // One repeated field: in order whatever it holds.
                while let Some(field) = next_field(&mut array)? {
                    let (1, Wire::Len(value)) = field else { return Err(Fallback::Encoding) };
                    self.any_value(value, depth + 2)?;
                }
            }
            (6, Wire::Len(list)) => {
                deeper(depth + 1)?;
                let mut list = list;
                while let Some(field) = next_field(&mut list)? {
                    let (1, Wire::Len(kv)) = field else { return Err(Fallback::Encoding) };
                    self.key_value(kv, depth + 2)?;
                }
            }
            (7, Wire::Len(b)) => self.length(b.len())?,
            _ => return Err(Fallback::Encoding),
        }
        Ok(())
    }

    /// An attribute key or string value: UTF-8 and within the length limit.
    fn text(&self, s: &[u8]) -> Result<(), Fallback> {
        utf8(s)?;
        self.length(s.len())
    }

    fn length(&self, len: usize) -> Result<(), Fallback> {
        if len > self.value_bytes { Err(Fallback::AttributeLimit) } else { Ok(()) }
    }

    fn count(&self, attributes: usize, max: usize) -> Result<(), Fallback> {
        if attributes > max { Err(Fallback::AttributeLimit) } else { Ok(()) }
    }
}

/// `EntityRef`: four strings (the limits do not look at them).
fn entity_ref(mut buf: &[u8]) -> Result<(), Fallback> {
    let mut order = Order::default();
    while let Some(field) = next_field(&mut buf)? {
        order.next(field.0, matches!(field.0, 3 | 4))?;
        match field {
            (1 | 2, Wire::Len(s)) => utf8(set(s)?)?,
            // Repeated strings are written even when empty.
            (3 | 4, Wire::Len(s)) => utf8(s)?,
            _ => return Err(Fallback::Encoding),
        }
    }
    Ok(())
}

fn encode_index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// The decode path's answer for the same body, for tests: decode, limits, processors, encode.
#[doc(hidden)]
pub fn decode_path(
    body: &[u8],
    limits: &AttributeLimits,
    processors: &Processors,
    max_message_bytes: usize,
) -> Result<(Encoded, usize), prost::DecodeError> {
    use prost::Message as _;
    let mut request = ExportTraceServiceRequest::decode(body)?;
    let limited = limits.apply(&mut request);
    let processed = processors.apply(&mut request);
    let mut encoded = encode::encode(&request, max_message_bytes);
    encoded.rejected.add_many(encode::RejectReason::AttributeLimit, limited.rejected_spans);
    Ok((encoded, processed.sampled_out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::Event},
    };
    use prost::Message as _;
    use spanline_common::ByteSize;

    use crate::{
        config::{LimitAction, Limits},
        process::{ProcessorsConfig, RedactAction, RedactionRule},
    };

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            ..Default::default()
        }
    }

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: format!("op-{id}"),
            kind: 2,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            attributes: vec![kv("http.method", "GET"), kv("pad", &"x".repeat(usize::from(id) * 10))],
            events: vec![Event {
                time_unix_nano: 1_500,
                name: "e".into(),
                attributes: vec![kv("k", "v")],
                ..Default::default()
            }],
            status: Some(Status { code: 1, ..Default::default() }),
            flags: 0x100,
            ..Default::default()
        }
    }

    fn request() -> ExportTraceServiceRequest {
        let mut bad_parent = span(1, 9);
        bad_parent.parent_span_id = vec![1; 3];
        let mut backwards = span(2, 10);
        backwards.end_time_unix_nano = 10;
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource { attributes: vec![kv("service.name", "a")], ..Default::default() }),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "lib".into(),
                                version: "1".into(),
                                ..Default::default()
                            }),
                            spans: vec![span(1, 1), span(2, 2), span(1, 3), span(0, 4), bad_parent],
                            schema_url: "s".into(),
                        },
                        ScopeSpans { scope: None, spans: vec![span(1, 5), backwards], ..Default::default() },
                    ],
                    schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                },
                ResourceSpans {
                    resource: None,
                    scope_spans: vec![ScopeSpans { spans: vec![span(3, 6), span(1, 7)], ..Default::default() }],
                    ..Default::default()
                },
            ],
        }
    }

    fn limits() -> AttributeLimits {
        AttributeLimits::new(&Limits::default())
    }

    /// A length-delimited field.
    fn field(number: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2];
        prost::encoding::encode_varint(value.len() as u64, &mut out);
        out.extend_from_slice(value);
        out
    }

    fn keep_all() -> Processors {
        Processors::new(&ProcessorsConfig::default()).expect("defaults")
    }

    /// Splits `body` on both paths and checks they agree exactly.
    fn same_as_decode_path(body: &[u8], limits: &AttributeLimits, processors: &Processors, max: usize) -> Encoded {
        let (split, sampled_out) = split(body, limits, processors, max).expect("the byte path takes it");
        let (decoded, decoded_sampled_out) = decode_path(body, limits, processors, max).expect("prost decodes it");
        assert_eq!(split.records, decoded.records);
        assert_eq!(split.accepted_spans, decoded.accepted_spans);
        assert_eq!(split.rejected, decoded.rejected);
        assert_eq!(sampled_out, decoded_sampled_out);
        split
    }

    #[test]
    fn records_are_the_decode_paths_byte_for_byte() {
        let body = request().encode_to_vec();
        let split = same_as_decode_path(&body, &limits(), &keep_all(), 900 * 1024);
        assert_eq!(split.accepted_spans, 6);
        assert_eq!(split.rejected.total(), 3);
        assert_eq!(split.records.len(), 3);
        // Split over several records per trace too.
        let split = same_as_decode_path(&body, &limits(), &keep_all(), 400);
        assert!(split.records.len() > 3, "{}", split.records.len());
        assert!(split.records.iter().all(|r| r.payload.len() <= 400));
        // And one span too large for any record.
        let split = same_as_decode_path(&body, &limits(), &keep_all(), 250);
        assert!(split.rejected.0.iter().any(|(r, _)| *r == encode::RejectReason::TooLarge), "{:?}", split.rejected);
    }

    #[test]
    fn sampling_works_on_the_bytes() {
        let processors =
            Processors::new(&ProcessorsConfig { sampling_ratio: 0.5, ..ProcessorsConfig::default() }).expect("valid");
        let mut request = request();
        for (i, span) in request.resource_spans[0].scope_spans[0].spans.iter_mut().enumerate() {
            span.trace_id[15] = u8::try_from(i * 60).unwrap_or(0);
            span.trace_id[9] = if i % 2 == 0 { 0x10 } else { 0xf0 };
        }
        let body = request.encode_to_vec();
        let (_, sampled_out) = split(&body, &limits(), &processors, 900 * 1024).expect("taken");
        assert!(sampled_out > 0);
        same_as_decode_path(&body, &limits(), &processors, 900 * 1024);
    }

    #[test]
    fn what_the_limits_would_change_goes_to_the_decode_path() {
        let body = request().encode_to_vec();
        let small = |f: fn(&mut Limits)| {
            let mut limits = Limits::default();
            f(&mut limits);
            AttributeLimits::new(&limits)
        };
        for (name, limits) in [
            ("per span", small(|l| l.max_attributes_per_span = 1)),
            ("per resource", small(|l| l.max_attributes_per_resource = 0)),
            ("value bytes", small(|l| l.max_attribute_value_bytes = ByteSize(20))),
            (
                "reject",
                small(|l| {
                    l.max_attributes_per_span = 1;
                    l.attribute_limit_action = LimitAction::Reject;
                }),
            ),
        ] {
            assert_eq!(split(&body, &limits, &keep_all(), 900 * 1024).err(), Some(Fallback::AttributeLimit), "{name}");
        }
        // A long value nested in an array, and a long key in a map.
        let nested = |value: any_value::Value| {
            let mut request = request();
            request.resource_spans[1].scope_spans[0].spans[0].attributes.push(KeyValue {
                key: "k".into(),
                value: Some(AnyValue { value: Some(value) }),
                ..Default::default()
            });
            request.encode_to_vec()
        };
        let limits = small(|l| l.max_attribute_value_bytes = ByteSize(100));
        let long = AnyValue { value: Some(any_value::Value::BytesValue(vec![7; 101])) };
        let array = nested(any_value::Value::ArrayValue(ArrayValue { values: vec![long] }));
        assert_eq!(split(&array, &limits, &keep_all(), 900 * 1024).err(), Some(Fallback::AttributeLimit));
        let list = nested(any_value::Value::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
            values: vec![kv(&"k".repeat(101), "v")],
        }));
        assert_eq!(split(&list, &limits, &keep_all(), 900 * 1024).err(), Some(Fallback::AttributeLimit));
        // Within every limit, exactly at them.
        let within = small(|l| {
            l.max_attributes_per_span = 2;
            l.max_attributes_per_resource = 1;
            l.max_attribute_value_bytes = ByteSize(100);
        });
        same_as_decode_path(&body, &within, &keep_all(), 900 * 1024);
    }

    #[test]
    fn redaction_goes_to_the_decode_path() {
        let processors = Processors::new(&ProcessorsConfig {
            redaction: vec![RedactionRule { key: Some("x".into()), key_pattern: None, action: RedactAction::Drop }],
            ..ProcessorsConfig::default()
        })
        .expect("valid");
        let body = request().encode_to_vec();
        assert_eq!(split(&body, &limits(), &processors, 900 * 1024).err(), Some(Fallback::Redaction));
    }

    #[test]
    fn unusual_or_malformed_bytes_go_to_the_decode_path() {
        let body = request().encode_to_vec();
        let check = |bytes: &[u8], what: &str| {
            assert_eq!(split(bytes, &limits(), &keep_all(), 900 * 1024).err(), Some(Fallback::Encoding), "{what}");
        };
        check(&body[..body.len() - 1], "truncated");
        check(&[body.as_slice(), &[0x10u8, 0x01][..]].concat(), "an unknown field");
        // Invalid UTF-8 in a string value: prost refuses it.
        let mut bad = request();
        bad.resource_spans[0].scope_spans[0].spans[0].attributes[0] = kv("k", "\u{e9}t\u{e9}");
        let mut bytes = bad.encode_to_vec();
        let at = bytes.windows(2).position(|w| w == "\u{e9}".as_bytes()).expect("found");
        bytes[at + 1] = 0x28;
        assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err());
        check(&bytes, "invalid UTF-8");
        // A non-minimal varint (prost takes it, and would write it shorter).
        let one = span(1, 1).encode_to_vec();
        let kind = one.windows(2).position(|w| w == [0x30, 0x02]).expect("kind field");
        let long = [&one[..=kind], &[0x82u8, 0x00][..], &one[kind + 2..]].concat();
        let body = field(1, &field(2, &field(2, &long)));
        assert!(ExportTraceServiceRequest::decode(body.as_slice()).is_ok());
        check(&body, "a two-byte kind");
        let mut request = ExportTraceServiceRequest::default();
        request.resource_spans.push(ResourceSpans::default());
        request.resource_spans[0].scope_spans.push(ScopeSpans { spans: vec![span(1, 1)], ..Default::default() });
        // Past the nesting the byte path takes.
        let mut value = AnyValue::default();
        for _ in 0..MAX_DEPTH {
            value = AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![value] })) };
        }
        request.resource_spans[0].scope_spans[0].spans[0].attributes[0].value = Some(value);
        check(&request.encode_to_vec(), "deep");
    }

    #[test]
    fn fields_in_another_order_are_decoded() {
        // A ScopeSpans writing its scope after its spans is taken (the wrappers are rewritten); a span
        // writing its fields out of order is not (its copy would differ from prost's).
        let scope = InstrumentationScope { name: "late".into(), ..Default::default() }.encode_to_vec();
        let one = span(7, 1).encode_to_vec();
        let scope_spans = [field(2, &one), field(1, &scope)].concat();
        let body = field(1, &field(2, &scope_spans));
        same_as_decode_path(&body, &limits(), &keep_all(), 900 * 1024);
        let reordered = [&one[18..], &one[..18]].concat();
        let body = field(1, &field(2, &field(2, &reordered)));
        assert!(ExportTraceServiceRequest::decode(body.as_slice()).is_ok());
        assert_eq!(split(&body, &limits(), &keep_all(), 900 * 1024).err(), Some(Fallback::Encoding));
    }

    /// What planning and building really hold beside the records' bytes stays under the charged
    /// table bound, for the shape that needs the most: every span its own trace (a record, a map
    /// entry and a key each), 20 000 of them.
    #[test]
    fn planning_and_building_hold_no_more_than_charged() {
        let spans: Vec<Span> = (1..=20_000u32)
            .map(|i| {
                let mut s = span(1, 1);
                s.trace_id = u128::from(i).to_be_bytes().to_vec();
                s.span_id = u64::from(i).to_be_bytes().to_vec();
                s.attributes.clear();
                s.events.clear();
                s
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        };
        let body = request.encode_to_vec();
        let counts = Counts::of(&body).expect("well formed");
        let (limits, processors) = (limits(), keep_all());
        let records = plan(&body, &counts, &limits, &processors, 900 * 1024, false).expect("byte path").bytes();
        let mut built = None;
        let held = allocation_counter::measure(|| {
            let planned = plan(&body, &counts, &limits, &processors, 900 * 1024, false).expect("byte path");
            built = Some(planned.build(&body));
        });
        let built = built.expect("built");
        assert_eq!(built.records.len(), 20_000);
        assert!(held.bytes_max <= (counts.table_bytes() + records) as u64, "more than the whole charge");
        // The tables alone: the peak less what the records themselves are (their bytes and structs).
        let own = built.payload_bytes() + built.records.len() * std::mem::size_of::<encode::Record>();
        let tables = held.bytes_max - own as u64;
        assert!(tables <= counts.table_bytes() as u64, "tables took {tables} bytes, {} charged", counts.table_bytes());
    }

    #[test]
    fn counts_and_tables_are_bounded_by_the_top_levels() {
        let body = request().encode_to_vec();
        let counts = Counts::of(&body).expect("well formed");
        assert_eq!(counts, Counts { resource_spans: 2, scope_spans: 3, spans: 9 });
        assert_eq!(counts.table_bytes(), 9 * TABLE_BYTES_PER_SPAN + 5 * TABLE_BYTES_PER_WRAPPER);
    }
}
