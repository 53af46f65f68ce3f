//! OTLP encodings shared by the collector (HTTP bodies) and the ingester (topic records), and
//! [`scan`], which prices a protobuf request before it is decoded (its wire reading is shared with
//! [`crate::spans`]).

use std::mem::size_of;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, EntityRef, KeyValue},
    trace::v1::{
        ResourceSpans, ScopeSpans, Span,
        span::{Event, Link},
    },
};

/// Decodes OTLP/JSON: camelCase keys, hex trace and span ids.
pub fn decode_json(raw: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    let request: ExportTraceServiceRequest =
        serde_json::from_slice(raw).map_err(|e| crate::clip::clip(format!("invalid OTLP JSON: {e}")))?;
    // Unknown keys are ignored by the decoder, so snake_case `resource_spans` silently decodes to an
    // empty request; say so instead of accepting nothing.
    if request.resource_spans.is_empty() && raw.windows(16).any(|w| w == b"\"resource_spans\"") {
        return Err("OTLP JSON uses camelCase keys: found \"resource_spans\", expected \"resourceSpans\"".into());
    }
    Ok(request)
}

/// Nesting prost refuses to decode past (its default recursion limit).
const MAX_DEPTH: usize = 100;

/// A `Vec` grown by pushing holds up to twice its length, and while it grows its old and new buffers
/// are held at once: up to three times its length (`collector/tests/fuzz.rs` finds exactly that).
pub const GROWTH: usize = 3;

/// A vector's first allocation holds four elements (Rust's minimum non-zero capacity).
const MIN_CAPACITY: usize = 4;

/// The allocator's bookkeeping per heap allocation.
const ALLOCATION: usize = 16;

/// What decoding a protobuf request will produce, read from its wire form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub spans: usize,
    /// Upper bound of the heap bytes the decoded message holds.
    pub decoded_bytes: usize,
}

/// The messages of `ExportTraceServiceRequest` whose fields the scan follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
    EntityRef,
}

/// What a length-delimited field holds.
enum Field {
    /// A nested message; `element` is its in-memory size when it is an element of a repeated field,
    /// 0 when it is stored inline in its parent.
    Message(Msg, usize),
    /// A string or bytes value; `element` as above for repeated strings.
    Bytes(usize),
}

/// The length-delimited fields of each message (the others allocate nothing when decoded).
fn field(msg: Msg, number: u64) -> Option<Field> {
    use Field::{Bytes, Message};
    let kv = size_of::<KeyValue>();
    Some(match (msg, number) {
        (Msg::Request, 1) => Message(Msg::ResourceSpans, size_of::<ResourceSpans>()),
        (Msg::ResourceSpans, 1) => Message(Msg::Resource, 0),
        (Msg::ResourceSpans, 2) => Message(Msg::ScopeSpans, size_of::<ScopeSpans>()),
        (Msg::Resource, 1) | (Msg::Scope, 3) | (Msg::Span, 9) | (Msg::Event, 3) | (Msg::Link, 4) | (Msg::KvList, 1) => {
            Message(Msg::KeyValue, kv)
        }
        (Msg::Resource, 3) => Message(Msg::EntityRef, size_of::<EntityRef>()),
        (Msg::ScopeSpans, 1) => Message(Msg::Scope, 0),
        (Msg::ScopeSpans, 2) => Message(Msg::Span, size_of::<Span>()),
        (Msg::Span, 11) => Message(Msg::Event, size_of::<Event>()),
        (Msg::Span, 13) => Message(Msg::Link, size_of::<Link>()),
        (Msg::Span, 15) => Message(Msg::Status, 0),
        (Msg::KeyValue, 2) => Message(Msg::AnyValue, 0),
        (Msg::AnyValue, 5) => Message(Msg::ArrayValue, 0),
        (Msg::AnyValue, 6) => Message(Msg::KvList, 0),
        (Msg::ArrayValue, 1) => Message(Msg::AnyValue, size_of::<AnyValue>()),
        (Msg::EntityRef, 3 | 4) => Bytes(size_of::<String>()),
        (Msg::ResourceSpans | Msg::ScopeSpans, 3)
        | (Msg::Scope, 1 | 2)
        | (Msg::Span, 1..=5)
        | (Msg::Event | Msg::Status, 2)
        | (Msg::Link, 1..=3)
        | (Msg::KeyValue, 1)
        | (Msg::AnyValue, 1 | 7)
        | (Msg::EntityRef, 1 | 2) => Bytes(0),
        _ => return None,
    })
}

/// Walks a protobuf `ExportTraceServiceRequest` without decoding it. Fails on what prost would fail
/// on structurally (truncated fields, bad wire types, nesting past prost's limit, groups).
pub fn scan(buf: &[u8]) -> Result<Shape, String> {
    let mut shape = Shape { spans: 0, decoded_bytes: size_of::<ExportTraceServiceRequest>() };
    walk(Msg::Request, buf, 0, &mut shape)?;
    Ok(shape)
}

fn walk(msg: Msg, mut buf: &[u8], depth: usize, shape: &mut Shape) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("message nested too deeply".into());
    }
    // Which fields of this message were seen, to price a repeated field's first element.
    let mut seen = 0u32;
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 {
            return Err("field number 0".into());
        }
        match wire {
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| "length overflows".to_owned())?;
                let Some((value, rest)) = buf.split_at_checked(len) else {
                    return Err(format!("field {number} claims {len} bytes, {} left", buf.len()));
                };
                buf = rest;
                // A repeated field's first element allocates the vector's minimum capacity.
                let first = number < 32 && seen & (1 << number) == 0;
                if number < 32 {
                    seen |= 1 << number;
                }
                let element_cost = |element: usize| {
                    if element == 0 {
                        0
                    } else if first {
                        MIN_CAPACITY * element + ALLOCATION
                    } else {
                        GROWTH * element
                    }
                };
                match field(msg, number) {
                    Some(Field::Message(child, element)) => {
                        if child == Msg::Span {
                            shape.spans += 1;
                        }
                        shape.decoded_bytes = shape.decoded_bytes.saturating_add(element_cost(element));
                        walk(child, value, depth + 1, shape)?;
                    }
                    Some(Field::Bytes(element)) => {
                        let heap = if len == 0 { 0 } else { len + ALLOCATION };
                        shape.decoded_bytes = shape.decoded_bytes.saturating_add(element_cost(element) + heap);
                    }
                    None => {}
                }
            }
            // Scalars allocate nothing; a group (deprecated, never written by OTLP) is skipped as
            // prost skips unknown ones.
            0 | 1 | 3 | 5 => buf = skip_value(buf, number, wire, depth)?,
            _ => return Err(format!("unsupported wire type {wire} in field {number}")),
        }
    }
    Ok(())
}

/// Skips the value of field `number` of wire type `wire` (0, 1, 2, 3 or 5); what follows it.
pub(crate) fn skip_value(mut buf: &[u8], number: u64, wire: u64, depth: usize) -> Result<&[u8], String> {
    match wire {
        0 => varint(&mut buf).map(|_| buf),
        1 => skip(buf, 8),
        5 => skip(buf, 4),
        2 => {
            let len = usize::try_from(varint(&mut buf)?).map_err(|_| "length overflows".to_owned())?;
            buf.get(len..).ok_or_else(|| format!("field {number} claims {len} bytes past the end"))
        }
        3 => skip_group(buf, number, depth + 1),
        _ => Err(format!("unsupported wire type {wire} in field {number}")),
    }
}

/// Skips the rest of group `number` (after its start tag); what follows its end tag.
fn skip_group(mut buf: &[u8], number: u64, depth: usize) -> Result<&[u8], String> {
    if depth > MAX_DEPTH {
        return Err("message nested too deeply".into());
    }
    loop {
        let key = varint(&mut buf)?;
        let (inner, wire) = (key >> 3, key & 7);
        if wire == 4 {
            return if inner == number { Ok(buf) } else { Err(format!("unexpected end of group {inner} in {number}")) };
        }
        buf = skip_value(buf, inner, wire, depth)?;
    }
}

pub(crate) fn varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn skip(buf: &[u8], n: usize) -> Result<&[u8], String> {
    buf.get(n..).ok_or_else(|| format!("truncated {n}-byte field"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_with_hex_ids_decodes() {
        let json = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
            "scopeSpans":[{"scope":{"name":"lib"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "name":"op","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000"}]}]}]}"#;
        let request = decode_json(json).expect("decodes");
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id[0], 0x5b);
        assert_eq!(span.span_id.len(), 8);
        assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 1_000_000_000);
    }

    #[test]
    fn snake_case_json_is_rejected() {
        let err = decode_json(br#"{"resource_spans":[{"scope_spans":[]}]}"#).expect_err("rejected");
        assert!(err.contains("camelCase"));
        assert!(decode_json(b"{not json").is_err());
    }
}
