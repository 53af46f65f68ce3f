//! `decode`: the bytes of an OTLP request → a decoded `ExportTraceServiceRequest`, once its cost is
//! known and charged to the memory budget.
//!
//! Called by both receivers with the (decompressed) body. A decoded message can be hundreds of times
//! its wire size (an empty span is two bytes on the wire and a few hundred in memory), so protobuf
//! bodies are first walked by [`scan`] (shared with the ingester), which allocates nothing, to count spans and bound what
//! decoding will allocate. Guarantees: a request over `limits.max_spans_per_request` or whose decoded
//! size does not fit `limits.max_inflight_bytes` is refused before anything is decoded; what decoding
//! allocates is charged to the export's [`Charge`] first. JSON bodies are charged by a bound computed
//! from their structure ([`json_cost`]) for the same reason.

use std::mem::size_of;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{ResourceSpans, Span},
};
use prost::Message as _;
pub use spanline_common::otlp::{Shape, scan};

use crate::{budget::Charge, error::Error};

use spanline_common::otlp::GROWTH;

/// Upper bound of what decoding an OTLP/JSON body allocates, from one pass over its bytes:
/// - every object may become the largest message of the schema, in a growing vector;
/// - every other value (each `,`, `:` and `[` starts one) may first be buffered by serde as a
///   `Content` node (opentelemetry-proto decodes `AnyValue` through `flatten` and `untagged`, which
///   buffer the whole subtree, unknown keys and scalar arrays included), with a key beside it;
/// - every string is copied once, and the longest may be quoted in an error (escaped, up to six
///   bytes per byte, in a growing buffer, then formatted once more) before the error is clipped.
///
/// Pessimistic for ordinary JSON (about 50 times its size): large batches are cheaper as protobuf.
pub fn json_cost(raw: &[u8]) -> usize {
    /// serde's `Content` node, and a map entry is two of them.
    const CONTENT: usize = 64;
    let (mut objects, mut values, mut longest) = (0usize, 0usize, 0usize);
    let (mut in_string, mut escaped, mut run) = (false, false, 0usize);
    for &b in raw {
        if in_string {
            run += 1;
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_string = false;
                    longest = longest.max(run);
                }
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                run = 0;
            }
            b'{' => objects += 1,
            b',' | b':' | b'[' => values += 1,
            _ => {}
        }
    }
    let largest = size_of::<Span>().max(size_of::<ResourceSpans>());
    raw.len()
        .saturating_add(objects.saturating_mul(GROWTH * largest))
        .saturating_add(values.saturating_mul(GROWTH * CONTENT))
        .saturating_add(longest.saturating_mul(32))
}

/// Decodes a protobuf body after checking its shape and charging its decoded size: a request whose
/// body and decoded size together could never fit is refused for good, not as busy.
pub fn protobuf(raw: &[u8], max_spans: usize, charge: &mut Charge) -> Result<ExportTraceServiceRequest, Error> {
    let shape = scan(raw).map_err(|e| Error::Malformed(format!("invalid OTLP protobuf: {e}")))?;
    check_spans(shape.spans, max_spans)?;
    charge.fits_with(shape.decoded_bytes, "the decoded request")?;
    charge.grow(shape.decoded_bytes, "the decoded request")?;
    ExportTraceServiceRequest::decode(raw).map_err(|e| Error::Malformed(format!("invalid OTLP protobuf: {e}")))
}

/// Decodes an OTLP/JSON body after charging its bound.
pub fn json(raw: &[u8], max_spans: usize, charge: &mut Charge) -> Result<ExportTraceServiceRequest, Error> {
    charge.grow(json_cost(raw), "the decoded request")?;
    let request = spanline_common::otlp::decode_json(raw).map_err(Error::Malformed)?;
    check_spans(spans(&request), max_spans)?;
    Ok(request)
}

fn check_spans(spans: usize, max: usize) -> Result<(), Error> {
    if spans > max {
        return Err(Error::OverLimit(format!(
            "request holds {spans} spans, more than limits.max_spans_per_request ({max}): send smaller batches"
        )));
    }
    Ok(())
}

/// Spans in a decoded request.
pub fn spans(request: &ExportTraceServiceRequest) -> usize {
    request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, ArrayValue, KeyValue, any_value},
        resource::v1::Resource,
        trace::v1::{
            ScopeSpans,
            span::{Event, Link},
        },
    };
    use prometheus_client::metrics::gauge::Gauge;

    use crate::budget::Budget;

    fn string(s: &str) -> AnyValue {
        AnyValue { value: Some(any_value::Value::StringValue(s.into())) }
    }

    fn sample() -> ExportTraceServiceRequest {
        let kv = |k: &str, v: AnyValue| KeyValue { key: k.into(), value: Some(v), ..Default::default() };
        let span = |n: u8| Span {
            trace_id: vec![n; 16],
            span_id: vec![n; 8],
            name: "op".into(),
            attributes: vec![
                kv("a", string("b")),
                kv(
                    "list",
                    AnyValue {
                        value: Some(any_value::Value::ArrayValue(ArrayValue {
                            values: vec![string("x"), string("y")],
                        })),
                    },
                ),
            ],
            events: vec![Event { name: "e".into(), attributes: vec![kv("k", string("v"))], ..Default::default() }],
            links: vec![Link { trace_id: vec![1; 16], span_id: vec![2; 8], ..Default::default() }],
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("service.name", string("svc"))], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans: (1..=3).map(span).collect(), ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    /// Heap bytes a decoded request holds, walked exactly (capacities equal lengths here).
    fn heap(request: &ExportTraceServiceRequest) -> usize {
        fn value(v: &AnyValue) -> usize {
            match &v.value {
                Some(any_value::Value::StringValue(s)) => s.len(),
                Some(any_value::Value::BytesValue(b)) => b.len(),
                Some(any_value::Value::ArrayValue(a)) => {
                    a.values.len() * size_of::<AnyValue>() + a.values.iter().map(value).sum::<usize>()
                }
                Some(any_value::Value::KvlistValue(l)) => attrs(&l.values),
                _ => 0,
            }
        }
        fn attrs(kvs: &[KeyValue]) -> usize {
            std::mem::size_of_val(kvs)
                + kvs.iter().map(|kv| kv.key.len() + kv.value.as_ref().map_or(0, value)).sum::<usize>()
        }
        request.resource_spans.len() * size_of::<ResourceSpans>()
            + request
                .resource_spans
                .iter()
                .map(|rs| {
                    rs.resource.as_ref().map_or(0, |r| attrs(&r.attributes))
                        + rs.scope_spans.len() * size_of::<ScopeSpans>()
                        + rs.scope_spans
                            .iter()
                            .flat_map(|ss| &ss.spans)
                            .map(|s| {
                                size_of::<Span>()
                                    + s.trace_id.len()
                                    + s.span_id.len()
                                    + s.name.len()
                                    + attrs(&s.attributes)
                                    + s.events.len() * size_of::<Event>()
                                    + s.events.iter().map(|e| e.name.len() + attrs(&e.attributes)).sum::<usize>()
                                    + s.links.len() * size_of::<Link>()
                                    + s.links.iter().map(|l| l.trace_id.len() + l.span_id.len()).sum::<usize>()
                            })
                            .sum::<usize>()
                })
                .sum::<usize>()
    }

    #[test]
    fn scan_counts_spans_and_bounds_the_decoded_size() {
        let request = sample();
        let bytes = request.encode_to_vec();
        let shape = scan(&bytes).expect("valid");
        assert_eq!(shape.spans, 3);
        let exact = heap(&request);
        assert!(shape.decoded_bytes >= exact, "estimate {} below the real {exact}", shape.decoded_bytes);
        assert!(shape.decoded_bytes <= 4 * exact, "estimate {} far above the real {exact}", shape.decoded_bytes);
    }

    #[test]
    fn empty_spans_cost_their_memory_not_their_wire_size() {
        // 100 000 empty spans: 200 KB on the wire, tens of MB decoded.
        let mut body = vec![0x0a];
        let mut inner = vec![0x12];
        let spans: Vec<u8> = std::iter::repeat_n([0x12, 0x00], 100_000).flatten().collect();
        push_len(&mut inner, spans.len());
        inner.extend_from_slice(&spans);
        push_len(&mut body, inner.len());
        body.extend_from_slice(&inner);
        let shape = scan(&body).expect("valid");
        assert_eq!(shape.spans, 100_000);
        assert!(shape.decoded_bytes >= 100_000 * size_of::<Span>(), "{}", shape.decoded_bytes);
        let budget = Budget::new(16 << 20, Gauge::default());
        let mut charge = budget.start();
        let err = protobuf(&body, 1_000_000, &mut charge).expect_err("over the budget");
        assert!(matches!(err, Error::OverBudget { .. }), "{err}");
        assert_eq!(charge.bytes(), 0);
        let err = protobuf(&body, 50_000, &mut budget.start()).expect_err("over the span limit");
        assert!(err.to_string().contains("max_spans_per_request"), "{err}");
    }

    fn push_len(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push(u8::try_from(n & 0x7f).unwrap_or(0) | 0x80);
            n >>= 7;
        }
        out.push(u8::try_from(n).unwrap_or(0));
    }

    #[test]
    fn malformed_bodies_fail_like_prost_does() {
        let bytes = sample().encode_to_vec();
        for cut in [1, 2, 10, bytes.len() - 1] {
            let prefix = &bytes[..cut];
            assert_eq!(scan(prefix).is_err(), ExportTraceServiceRequest::decode(prefix).is_err(), "truncated at {cut}");
        }
        assert!(scan(&[0x0b]).is_err(), "an unterminated group is refused");
        assert_eq!(scan(&[0x5b, 0x08, 0x01, 0x5c]).map(|s| s.spans), Ok(0), "a group is skipped, as prost does");
        assert!(ExportTraceServiceRequest::decode(&[0x5b, 0x08, 0x01, 0x5c][..]).is_ok());
        assert!(scan(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err(), "a length past the end");
        // Nested arrays past prost's recursion limit.
        let mut value = AnyValue::default();
        for _ in 0..120 {
            value = AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![value] })) };
        }
        let mut request = sample();
        request.resource_spans[0].scope_spans[0].spans[0].attributes[0].value = Some(value);
        let deep = request.encode_to_vec();
        assert!(scan(&deep).is_err());
        assert!(ExportTraceServiceRequest::decode(deep.as_slice()).is_err());
    }

    #[test]
    fn json_is_charged_before_decoding() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"op"}]}]}]}"#;
        let budget = Budget::new(1 << 20, Gauge::default());
        let mut charge = budget.start();
        let request = json(body, 10, &mut charge).expect("decodes");
        assert_eq!(spans(&request), 1);
        assert_eq!(charge.bytes(), json_cost(body));
        let many: Vec<u8> = std::iter::repeat_n(&b"{},"[..], 10_000).flatten().copied().collect();
        let err = json(&many, 10, &mut budget.start()).expect_err("10 000 objects do not fit 1 MiB");
        assert!(matches!(err, Error::OverBudget { .. }), "{err}");
    }
}
