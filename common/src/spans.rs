//! Each span's source in a protobuf `ExportTraceServiceRequest`, found by walking its wire form
//! without decoding or copying it: the span message's own bytes and digests of its resource's and
//! its scope's bytes, in the order prost decodes the spans.
//!
//! The ingester derives a span document's `_id` from [`SpanSource::digest`], so the id is a
//! function of the record's bytes alone: the same record read on any day, by any version, in any
//! mode gives the same ids, while a span whose bytes differ (a changed attribute, a different
//! resource or scope) gets a new one. Bounded: no allocation, one pass over the request's top
//! three levels (requests, resource spans, scope spans), each resource's and scope's bytes hashed
//! once, and a span's bytes only when its digest is asked for.

use crate::ids::Fnv64a;

/// `ExportTraceServiceRequest.resource_spans`.
const RESOURCE_SPANS: u64 = 1;
/// `ResourceSpans.resource`.
const RESOURCE: u64 = 1;
/// `ResourceSpans.scope_spans`.
const SCOPE_SPANS: u64 = 2;
/// `ScopeSpans.scope`.
const SCOPE: u64 = 1;
/// `ScopeSpans.spans`.
const SPANS: u64 = 2;

/// Bytes that are not a request prost could decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A truncated field, a bad varint or an unsupported wire type.
    #[error("malformed protobuf: {0}")]
    Malformed(String),
    /// A message field written with another wire type than length-delimited.
    #[error("field {number} holds a message but has wire type {wire}")]
    NotAMessage { number: u64, wire: u64 },
}

/// Where one span comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanSource<'a> {
    /// FNV-64a of the bytes of its `ResourceSpans.resource` (every occurrence, in order: prost
    /// merges repeated occurrences of a message field); the empty digest when there is none.
    pub resource: u64,
    /// FNV-64a of the bytes of its `ScopeSpans.scope`, likewise.
    pub scope: u64,
    /// The span message as it is in the request (inside its length prefix).
    pub span: &'a [u8],
}

impl SpanSource<'_> {
    /// FNV-64a over the resource digest and the scope digest (8 bytes each, little-endian) followed
    /// by the span's bytes. Fixed-width digests keep the parts' boundaries unambiguous.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv64a::default();
        h.write(&self.resource.to_le_bytes());
        h.write(&self.scope.to_le_bytes());
        h.write(self.span);
        h.finish()
    }
}

/// [`SpanSource::digest`] of each span of a request, in order, up to the first span the walk
/// cannot read. FNV-1a is one multiply per byte, each waiting for the one before: one span at a
/// time, the multiplier waits on its own result. Four spans at a time, interleaved byte by byte
/// over their common length, keep it busy (the same values at about three times the throughput:
/// `cargo bench -p spanline-ingester --bench document -- ids/`). Holds four digests, nothing more.
#[derive(Debug, Clone)]
pub struct Digests<'a> {
    sources: SpanSources<'a>,
    ready: [u64; 4],
    /// The digests in `ready` not yet taken: `ready[next..len]`.
    next: usize,
    len: usize,
}

impl<'a> Digests<'a> {
    pub fn new(request: &'a [u8]) -> Self {
        Self { sources: SpanSources::new(request), ready: [0; 4], next: 0, len: 0 }
    }
}

impl Iterator for Digests<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.next == self.len {
            let mut quad = [SpanSource { resource: 0, scope: 0, span: &[] }; 4];
            self.len = 0;
            for slot in &mut quad {
                match self.sources.next() {
                    Some(Ok(source)) => *slot = source,
                    _ => break,
                }
                self.len += 1;
            }
            self.next = 0;
            if self.len > 1 {
                // Fewer than four spans left (a record's last ones): the free lanes repeat the
                // first span, whose digests are not taken, so the rest are still interleaved.
                let first = quad[0];
                quad[self.len..].fill(first);
                self.ready = digest4(&quad);
            } else if let Some(source) = quad[..self.len].first() {
                self.ready[0] = source.digest();
            }
        }
        let digest = self.ready.get(self.next).copied().filter(|_| self.next < self.len)?;
        self.next += 1;
        Some(digest)
    }
}

/// The digests of four spans, interleaved over their common length.
fn digest4(quad: &[SpanSource<'_>; 4]) -> [u64; 4] {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let head = |s: &SpanSource<'_>| {
        let mut h = Fnv64a::default();
        h.write(&s.resource.to_le_bytes());
        h.write(&s.scope.to_le_bytes());
        h.0
    };
    let [a, b, c, d] = quad;
    let (mut ha, mut hb, mut hc, mut hd) = (head(a), head(b), head(c), head(d));
    let common = a.span.len().min(b.span.len()).min(c.span.len()).min(d.span.len());
    let lanes = a.span[..common].iter().zip(&b.span[..common]).zip(&c.span[..common]).zip(&d.span[..common]);
    for (((&xa, &xb), &xc), &xd) in lanes {
        ha = (ha ^ u64::from(xa)).wrapping_mul(PRIME);
        hb = (hb ^ u64::from(xb)).wrapping_mul(PRIME);
        hc = (hc ^ u64::from(xc)).wrapping_mul(PRIME);
        hd = (hd ^ u64::from(xd)).wrapping_mul(PRIME);
    }
    let mut out = [0; 4];
    for ((out, h), s) in out.iter_mut().zip([ha, hb, hc, hd]).zip(quad) {
        let mut h = Fnv64a(h);
        h.write(&s.span[common..]);
        *out = h.finish();
    }
    out
}

/// The spans of a protobuf request, in the order prost decodes them into
/// `resource_spans[r].scope_spans[s].spans[p]` (fields in wire order, whatever order a
/// `ResourceSpans` or `ScopeSpans` writes its fields in). Stops after the first error.
#[derive(Debug, Clone)]
pub struct SpanSources<'a> {
    /// What is left of the request's fields.
    request: &'a [u8],
    /// What is left of the current `ResourceSpans`' fields, and its resource's digest.
    resource_spans: &'a [u8],
    resource: u64,
    /// What is left of the current `ScopeSpans`' fields, and its scope's digest.
    scope_spans: &'a [u8],
    scope: u64,
    failed: bool,
}

impl<'a> SpanSources<'a> {
    pub fn new(request: &'a [u8]) -> Self {
        Self { request, resource_spans: &[], resource: 0, scope_spans: &[], scope: 0, failed: false }
    }

    /// How many spans `request` holds, walking it once without reading any span.
    pub fn count(request: &[u8]) -> Result<usize, WireError> {
        SpanSources::new(request).try_fold(0, |n, source| source.map(|_| n + 1))
    }

    fn step(&mut self) -> Result<Option<SpanSource<'a>>, WireError> {
        loop {
            if let Some(span) = next_field(&mut self.scope_spans, SPANS)? {
                return Ok(Some(SpanSource { resource: self.resource, scope: self.scope, span }));
            }
            if let Some(scope_spans) = next_field(&mut self.resource_spans, SCOPE_SPANS)? {
                // The scope may come after the spans on the wire: hash it before walking them.
                self.scope = field_digest(scope_spans, SCOPE)?;
                self.scope_spans = scope_spans;
                continue;
            }
            let Some(resource_spans) = next_field(&mut self.request, RESOURCE_SPANS)? else { return Ok(None) };
            self.resource = field_digest(resource_spans, RESOURCE)?;
            self.resource_spans = resource_spans;
        }
    }
}

impl<'a> Iterator for SpanSources<'a> {
    type Item = Result<SpanSource<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let step = self.step();
        self.failed = step.is_err();
        step.transpose()
    }
}

/// The value of the next field `number` of `buf`, skipping the other fields; `None` at the end.
fn next_field<'a>(buf: &mut &'a [u8], number: u64) -> Result<Option<&'a [u8]>, WireError> {
    while !buf.is_empty() {
        let key = crate::otlp::varint(buf).map_err(WireError::Malformed)?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err(WireError::Malformed("field number 0".into()));
        }
        if field != number {
            *buf = crate::otlp::skip_value(buf, field, wire, 0).map_err(WireError::Malformed)?;
            continue;
        }
        if wire != 2 {
            return Err(WireError::NotAMessage { number, wire });
        }
        let len = crate::otlp::varint(buf).map_err(WireError::Malformed)?;
        let value = usize::try_from(len)
            .ok()
            .and_then(|len| buf.split_at_checked(len))
            .ok_or_else(|| WireError::Malformed(format!("field {number} claims {len} bytes, {} left", buf.len())))?;
        *buf = value.1;
        return Ok(Some(value.0));
    }
    Ok(None)
}

/// FNV-64a of the values of every field `number` of the message `buf`, in order.
fn field_digest(mut buf: &[u8], number: u64) -> Result<u64, WireError> {
    let mut h = Fnv64a::default();
    while let Some(value) = next_field(&mut buf, number)? {
        h.write(value);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::fnv64a;
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        common::v1::InstrumentationScope,
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };
    use prost::Message as _;

    fn span(n: u8) -> Span {
        Span { trace_id: vec![n; 16], span_id: vec![n; 8], name: format!("op-{n}"), ..Default::default() }
    }

    fn request() -> ExportTraceServiceRequest {
        let scope = |name: &str, spans| ScopeSpans {
            scope: Some(InstrumentationScope { name: name.into(), ..Default::default() }),
            spans,
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource::default()),
                    scope_spans: vec![
                        scope("a", vec![span(1), span(2)]),
                        scope("b", vec![]),
                        scope("c", vec![span(3)]),
                    ],
                    ..Default::default()
                },
                ResourceSpans::default(),
                ResourceSpans { scope_spans: vec![scope("a", vec![span(4)])], ..Default::default() },
            ],
        }
    }

    #[test]
    fn spans_come_in_decode_order_with_their_own_bytes() {
        let request = request();
        let bytes = request.encode_to_vec();
        let sources: Vec<SpanSource<'_>> = SpanSources::new(&bytes).collect::<Result<_, _>>().expect("walks");
        let decoded: Vec<&Span> =
            request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
        assert_eq!(sources.len(), decoded.len());
        for (source, span) in sources.iter().zip(&decoded) {
            assert_eq!(source.span, span.encode_to_vec(), "the span's bytes, borrowed from the request");
        }
        let scope_a = InstrumentationScope { name: "a".into(), ..Default::default() }.encode_to_vec();
        assert_eq!(sources[0].scope, fnv64a(&[&scope_a]));
        assert_eq!(sources[0].resource, fnv64a(&[]), "an empty resource has the empty digest");
        assert_eq!(sources[0].resource, sources[3].resource, "no resource and an empty one are alike");
        assert_eq!(sources[0].scope, sources[3].scope, "the same scope bytes, the same digest");
        assert_ne!(sources[0].scope, sources[2].scope);
        assert_eq!(SpanSources::count(&bytes), Ok(4));
    }

    #[test]
    fn fields_in_any_order_are_found() {
        // A ScopeSpans writing its spans before its scope, and a ResourceSpans its scope spans
        // before its resource: prost decodes both alike, and so does the walk.
        let scope = InstrumentationScope { name: "late".into(), ..Default::default() }.encode_to_vec();
        let resource = Resource { dropped_attributes_count: 3, ..Default::default() }.encode_to_vec();
        let one = span(7).encode_to_vec();
        let field = |number: u8, value: &[u8]| {
            let mut out = vec![number << 3 | 2];
            prost::encoding::encode_varint(value.len() as u64, &mut out);
            out.extend_from_slice(value);
            out
        };
        let scope_spans = [field(SPANS as u8, &one), field(SCOPE as u8, &scope)].concat();
        let resource_spans = [field(SCOPE_SPANS as u8, &scope_spans), field(RESOURCE as u8, &resource)].concat();
        let bytes = field(RESOURCE_SPANS as u8, &resource_spans);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("prost decodes it");
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans, vec![span(7)]);
        let sources: Vec<_> = SpanSources::new(&bytes).collect::<Result<_, _>>().expect("walks");
        assert_eq!(
            sources,
            vec![SpanSource { resource: fnv64a(&[&resource]), scope: fnv64a(&[&scope]), span: &one[..] }]
        );
    }

    #[test]
    fn digests_four_at_a_time_are_each_spans_own() {
        // Spans of many lengths over several resources and scopes; every count from 0 to 11.
        for n in 0..=11u8 {
            let spans: Vec<Span> = (0..n)
                .map(|i| {
                    let mut s = span(i);
                    s.name = "x".repeat(usize::from(i) * 37 % 90);
                    s
                })
                .collect();
            let mut request = request();
            request.resource_spans[0].scope_spans[0].spans.extend(spans);
            let bytes = request.encode_to_vec();
            let one_by_one: Vec<u64> = SpanSources::new(&bytes).map(|s| s.expect("walks").digest()).collect();
            assert_eq!(Digests::new(&bytes).collect::<Vec<_>>(), one_by_one, "{n} more spans");
        }
        // Up to the first span the walk cannot read.
        let mut bytes = request().encode_to_vec();
        bytes.truncate(bytes.len() - 3);
        let readable = SpanSources::new(&bytes).map_while(Result::ok).count();
        assert_eq!(Digests::new(&bytes).count(), readable);
    }

    #[test]
    fn a_digest_changes_with_any_part_and_only_then() {
        let source = SpanSource { resource: 1, scope: 2, span: b"span" };
        let digest = source.digest();
        assert_eq!(digest, SpanSource { ..source }.digest());
        assert_ne!(digest, SpanSource { resource: 3, ..source }.digest());
        assert_ne!(digest, SpanSource { scope: 3, ..source }.digest());
        assert_ne!(digest, SpanSource { span: b"spam", ..source }.digest());
        // Pinned (checked against an independent FNV-1a): a change of this scheme changes every span
        // document's id.
        assert_eq!(digest, 0xf70c_e7b9_6616_6c7e, "{digest:#x}");
    }

    #[test]
    fn malformed_bytes_are_an_error_and_end_the_walk() {
        let bytes = request().encode_to_vec();
        let cut = &bytes[..bytes.len() - 3];
        let mut walk = SpanSources::new(cut);
        assert!(walk.by_ref().any(|s| s.is_err()));
        assert_eq!(walk.next(), None);
        // A message field written as a varint.
        assert_eq!(SpanSources::count(&[0x08, 0x01]), Err(WireError::NotAMessage { number: 1, wire: 0 }));
    }
}
