//! Fuzzing `otlp::decode_json`, the decoder of every OTLP/JSON body (collector) and record
//! (ingester), on the stable toolchain: property tests over arbitrary bytes and mutated encodings of
//! generated requests (docs/development.md, "Fuzzing"). `PROPTEST_CASES` sets the cases per property
//! (256 by default; `make fuzz` runs many more).
//!
//! Property: no panic; `Ok` or an error starting with the decoder's name, at most 4 KiB; and at most
//! [`JSON`]'s bound held at once while decoding, measured per thread by `allocation-counter`.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use spanline_common::otlp::decode_json;
use spanline_testkit::fuzz::{self, Bound, JSON_TOKENS, Run, Target};

/// The most bytes this thread held at once while `f` ran.
fn peak(f: &mut dyn FnMut()) -> u64 {
    allocation_counter::measure(f).bytes_max
}

/// OTLP/JSON. The worst case per byte is a run of empty objects where spans are expected
/// (`"spans":[{},{},…]`: 3 bytes each become a 264-byte `Span`), 264 × len when the vector has just
/// grown (old and new buffers held at once); see `json_bound_is_tight`.
const JSON: Target = Target {
    name: "otlp json",
    bound: Bound { per_byte: 320, fixed: 64 * 1024 },
    errors: &["invalid OTLP JSON: ", "OTLP JSON uses camelCase keys"],
};

fn decode(bytes: &[u8]) -> Run {
    fuzz::measured(peak, bytes.len(), || decode_json(bytes))
}

/// Nesting `depth` levels deep: plain arrays, objects, or `AnyValue` arrays inside an attribute.
fn deep(depth: usize, shape: u8) -> Vec<u8> {
    let (open, close): (&str, &str) = match shape % 3 {
        0 => ("[", "]"),
        1 => ("{\"a\":", "}"),
        _ => ("{\"arrayValue\":{\"values\":[", "]}}"),
    };
    format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"attributes":[{{"key":"k","value":{}{}}}]}}]}}]}}]}}"#,
        open.repeat(depth),
        close.repeat(depth)
    )
    .into_bytes()
}

#[test]
fn json_survives_arbitrary_bytes() {
    fuzz::check(file!(), JSON, fuzz::raw_bytes(512), |b| decode(b));
}

#[test]
fn json_survives_mutated_requests() {
    let inputs = prop_oneof![
        fuzz::mutated(fuzz::otlp_json(fuzz::request()).prop_map(|v| serde_json::to_vec(&v).unwrap()), JSON_TOKENS),
        fuzz::json_confused(fuzz::otlp_json(fuzz::request())),
    ];
    fuzz::check(file!(), JSON, inputs, |b| decode(b));
}

#[test]
fn json_survives_deep_nesting() {
    let inputs = (prop_oneof![0usize..200, 0usize..4000], any::<u8>()).prop_map(|(depth, shape)| deep(depth, shape));
    fuzz::check(file!(), JSON, fuzz::mutated(inputs, JSON_TOKENS), |b| decode(b));
}

/// The worst shape found needs more than half the stated factor, so the bound is not vacuous.
#[test]
fn json_bound_is_tight() {
    // 2^14 + 1 spans: the vector has just doubled.
    let spans = vec!["{}"; 16_385].join(",");
    let body = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#);
    let run = decode(body.as_bytes());
    assert_eq!(run.outcome, fuzz::Outcome::Ok);
    assert!(JSON.violation(&run).is_none(), "{run:?}");
    let lowered = Target { bound: JSON.bound.lowered(2), ..JSON };
    assert!(lowered.violation(&run).is_some(), "{} × len would hold too: {run:?}", lowered.bound);
}

/// Found by fuzzing (type confusion with a long string, and a quote inserted before a run of `{},`,
/// 53 248 cases into a long run): serde quotes a wrongly typed string whole in
/// its error, so the error grows with the input. A 600 KB record whose `resourceSpans` is a string
/// makes a 600 KB error, which the ingester logs at warn and puts in the dead letter's `reason`
/// beside the record itself: the envelope passes `limits.max_dead_letter_bytes` (1 MB) and is
/// written without its payload; the collector answers it in its 400. `decode_json` now clips its
/// error (`spanline_common::clip`), and this pins it.
#[test]
fn decode_json_errors_do_not_echo_the_input() {
    let body = format!(r#"{{"resourceSpans":"{}"}}"#, "x".repeat(600_000));
    let run = decode(body.as_bytes());
    let strict = JSON;
    assert!(strict.violation(&run).is_none(), "{}", strict.violation(&run).unwrap_or_default());
}
