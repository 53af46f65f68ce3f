//! Fuzzing the collector's decoders (`decode::protobuf`, `decode::json`, and the wire scan that
//! prices a request before it is decoded) on the stable toolchain (docs/development.md, "Fuzzing").
//! `PROPTEST_CASES` sets the cases per property (256 by default; `make fuzz` runs many more).
//!
//! Properties: no panic; `Ok` or an error naming the decoder; at most the target's bound held at
//! once; and, the collector's own promise, never more held than the memory charged to the budget
//! before decoding (plus a fixed allowance for the decoder's own bookkeeping): the price is paid
//! before the work. And the scan never refuses a body prost accepts.

#![allow(clippy::unwrap_used)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prometheus_client::metrics::gauge::Gauge;
use proptest::prelude::*;
use prost::Message;
use spanline_collector::{budget::Budget, decode};
use spanline_testkit::fuzz::{self, Bound, JSON_TOKENS, Outcome, PROTO_TOKENS, Run, Target};

/// The most bytes this thread held at once while `f` ran.
fn peak(f: &mut dyn FnMut()) -> u64 {
    allocation_counter::measure(f).bytes_max
}

/// What a decoder may hold beyond its charge: prost's and serde's own small buffers.
const ALLOWANCE: u64 = 64 * 1024;

/// OTLP protobuf bodies. The worst case per byte is empty spans (two bytes, a 264-byte `Span` each,
/// twice that while the vector grows); the scan refuses nothing of it, the budget does.
const PROTO: Target = Target {
    name: "otlp protobuf body",
    bound: Bound { per_byte: 512, fixed: ALLOWANCE },
    errors: &["malformed request: invalid OTLP protobuf: "],
};

/// OTLP/JSON bodies (common/tests/fuzz.rs measures the decoder alone at 320 × len).
const JSON: Target = Target {
    name: "otlp json body",
    bound: Bound { per_byte: 400, fixed: ALLOWANCE },
    errors: &["malformed request: invalid OTLP JSON: ", "malformed request: OTLP JSON uses camelCase keys"],
};

/// Decodes `bytes` as the receivers do, with a budget that never refuses, and checks the held
/// memory against what was charged.
fn charged(bytes: &[u8], json: bool) -> Run {
    let budget = Budget::new(1 << 40, Gauge::default());
    let mut charge = budget.start();
    let mut run = fuzz::measured(peak, bytes.len(), || {
        let decoded = if json {
            decode::json(bytes, usize::MAX, &mut charge)
        } else {
            decode::protobuf(bytes, usize::MAX, &mut charge)
        };
        decoded.map_err(|e| e.to_string())
    });
    let paid = charge.bytes() as u64;
    if run.peak > paid + ALLOWANCE {
        run.outcome = Outcome::Panic(format!("held {} bytes, only {paid} charged before decoding", run.peak));
    }
    run
}

fn proto(request: &ExportTraceServiceRequest) -> Vec<u8> {
    request.encode_to_vec()
}

#[test]
fn protobuf_bodies_survive_arbitrary_bytes() {
    fuzz::check(file!(), PROTO, fuzz::raw_bytes(512), |b| charged(b, false));
}

#[test]
fn protobuf_bodies_hold_no_more_than_they_were_charged() {
    let inputs = prop_oneof![
        3 => fuzz::mutated(fuzz::request().prop_map(|r| proto(&r)), PROTO_TOKENS),
        1 => (0usize..4, 0usize..64, 1usize..400).prop_map(|(a, l, n)| proto(&fuzz::fan_out(a, l, n))),
        1 => (1usize..120).prop_map(|d| {
            let mut r = ExportTraceServiceRequest::default();
            r.resource_spans.push(Default::default());
            r.resource_spans[0].scope_spans.push(Default::default());
            r.resource_spans[0].scope_spans[0].spans.push(opentelemetry_proto::tonic::trace::v1::Span {
                attributes: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                    key: "k".into(),
                    value: Some(fuzz::nested(d)),
                    ..Default::default()
                }],
                ..Default::default()
            });
            proto(&r)
        }),
    ];
    fuzz::check(file!(), PROTO, inputs, |b| charged(b, false));
}

#[test]
fn json_bodies_hold_no_more_than_they_were_charged() {
    let inputs = prop_oneof![
        1 => fuzz::raw_bytes(256),
        3 => fuzz::mutated(fuzz::request().prop_map(|r| serde_json::to_vec(&r).unwrap()), JSON_TOKENS),
        2 => fuzz::json_confused(fuzz::request().prop_map(|r| serde_json::to_value(&r).unwrap())),
    ];
    fuzz::check(file!(), JSON, inputs, |b| charged(b, true));
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// The scan prices every body prost can decode: it never refuses one, and its span count is exact.
    #[test]
    fn the_scan_accepts_what_prost_accepts(bytes in fuzz::mutated(fuzz::request().prop_map(|r| proto(&r)), PROTO_TOKENS)) {
        if let Ok(request) = ExportTraceServiceRequest::decode(bytes.as_slice()) {
            let shape = decode::scan(&bytes);
            prop_assert!(shape.is_ok(), "prost decodes what the scan refused: {shape:?}");
            prop_assert_eq!(shape.map(|s| s.spans).unwrap_or_default(), decode::spans(&request));
        }
    }
}

/// The charge bound bites: an estimate that ignored decoded sizes (the wire length alone) is caught.
#[test]
fn the_charge_property_catches_an_estimate_of_wire_bytes() {
    let bytes = proto(&spanline_testkit::fixtures::hostile::empty_attributes(1, 20_000));
    let run = fuzz::measured(peak, bytes.len(), || {
        ExportTraceServiceRequest::decode(bytes.as_slice()).map_err(|e| e.to_string())
    });
    assert!(run.peak > bytes.len() as u64 + ALLOWANCE, "decoding {} bytes held {}", bytes.len(), run.peak);
    assert_eq!(charged(&bytes, false).outcome, Outcome::Ok, "the scan's price covers it");
}

/// Found by review: serde buffers an `AnyValue` subtree (unknown keys and scalar arrays included)
/// before decoding it, so `"value":{"x":[0,0,…]}` costs tens of times its size; and a long string of
/// the wrong type is quoted, escaped, in an error. Both priced.
#[test]
fn json_scalar_arrays_and_quoted_strings_are_priced() {
    let zeros = vec!["0"; 200_000].join(",");
    for value in [format!(r#"{{"x":[{zeros}]}}"#), format!(r#"{{"intValue":[{zeros}]}}"#)] {
        let body = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"attributes":[{{"key":"k","value":{value}}}]}}]}}]}}]}}"#
        );
        let run = charged(body.as_bytes(), true);
        assert!(!matches!(run.outcome, Outcome::Panic(_)), "{:?}", run.outcome);
    }
    let quoted =
        format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"kind":"{}"}}]}}]}}]}}"#, "\u{7f}".repeat(200_000));
    let run = charged(quoted.as_bytes(), true);
    assert!(matches!(run.outcome, Outcome::Err(_)), "{:?}", run.outcome);
}

/// Found by review: a repeated field's first element allocates a vector of four; chains of
/// single-element arrays cost more than three times their elements.
#[test]
fn chains_of_single_element_arrays_are_priced() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};
    let mut chain = AnyValue::default();
    for _ in 0..45 {
        chain = AnyValue { value: Some(Value::ArrayValue(ArrayValue { values: vec![chain] })) };
    }
    let mut request = spanline_testkit::fixtures::hostile::empty_attributes(1, 0);
    request.resource_spans[0].scope_spans[0].spans[0].attributes =
        vec![KeyValue { key: "k".into(), value: Some(chain), ..Default::default() }; 2_000];
    let run = charged(&proto(&request), false);
    assert_eq!(run.outcome, Outcome::Ok, "held within the charge");
}
