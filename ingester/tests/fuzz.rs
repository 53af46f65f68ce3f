//! Fuzzing every ingester decoder that reads untrusted bytes, on the stable toolchain: property tests
//! over arbitrary bytes and mutated encodings of generated messages (docs/development.md,
//! "Fuzzing"). `PROPTEST_CASES` sets the cases per property (256 by default; `make fuzz` runs many
//! more).
//!
//! - `worker::decode` for the topic encodings: OTLP protobuf records, OTLP/JSON records,
//!   `spanline.v1.DeadLetter` envelopes (what `replay` re-drives from the dead-letter topic), and
//!   Jaeger v1's `jaeger_proto` / `jaeger_json` records, each held within its price
//!   (`worker::decoded_cost`);
//! - `document::map_request` on whatever decodes: the documents built from a hostile record;
//! - `document::map_record`, the live path that reads a protobuf record in place without decoding
//!   it: bounded as the mapping is, whatever it takes or leaves;
//! - `bulk::parse_response`: the store's `_bulk` answer.
//!
//! Property: no panic; `Ok` or an error starting with the decoder's name, at most 4 KiB; and at most
//! the target's bound held at once, measured per thread by `allocation-counter`.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use proptest::{collection::vec, prelude::*};
use prost::Message as _;
use spanline_ingester::{
    bulk::parse_response,
    config::Encoding,
    document::{DocumentLimits, IndexNames, Mapped, RecordTime, Routing, TraceIds, map_record, map_request},
    worker,
};
use spanline_proto::{DeadLetter, PayloadKind};
use spanline_testkit::{
    fuzz::{self, Bound, JSON_TOKENS, Outcome, PROTO_TOKENS, Run, Target},
    jaeger,
};

/// The most bytes this thread held at once while `f` ran.
fn peak(f: &mut dyn FnMut()) -> u64 {
    allocation_counter::measure(f).bytes_max
}

/// OTLP protobuf. The worst case per byte is a run of empty spans (`12 00`: 2 bytes become a 264-byte
/// `Span`), 396 × len when the vector has just grown (old and new buffers held at once); see
/// `bounds_are_tight`.
const PROTO: Target = Target {
    name: "otlp protobuf record",
    bound: Bound { per_byte: 512, fixed: 64 * 1024 },
    errors: &["invalid OTLP protobuf: "],
};

/// OTLP/JSON, decoded then re-encoded as protobuf. The worst case per byte is a run of empty objects
/// where spans are expected (`{},`: 3 bytes become a `Span`), 264 × len just after the vector grew.
const JSON: Target = Target {
    name: "otlp json record",
    bound: Bound { per_byte: 320, fixed: 64 * 1024 },
    errors: &["invalid OTLP JSON: ", "OTLP JSON uses camelCase keys"],
};

/// A dead letter: the envelope's payload copied out, then decoded as OTLP protobuf, so the protobuf
/// worst case plus one copy (397 × len).
const DEAD_LETTER: Target = Target {
    name: "dead letter",
    bound: Bound { per_byte: 512, fixed: 64 * 1024 },
    errors: &[
        "invalid spanline.v1.DeadLetter: ",
        "dead letter with unknown payload kind ",
        "invalid OTLP protobuf: ",
        "dead letter's raw record ",
        // A raw record decoded as the encoding its envelope names.
        "invalid OTLP JSON: ",
        "OTLP JSON uses camelCase keys",
        "jaeger_proto: ",
        "jaeger_json: ",
    ],
};

/// A decoded record mapped to documents (the decoding measured by the targets above). `map_request`
/// stops once the documents and dead letters it counts pass `LIMITS.max_record_document_bytes`, with
/// at most one document of `LIMITS.max_document_bytes` over; what they hold on the heap (`Document`
/// structs, ids, index names, the vector's growth) is more than what it counts: 1.33 times for many
/// small documents (see `bounds_are_tight`), 1.46 times the most a 100 000-case run found. So: at
/// most twice the two limits, whatever the record's length.
const DOCUMENTS: Target = Target {
    name: "record to documents",
    bound: Bound { per_byte: 0, fixed: 2 * COUNTED_LIMIT + 16 * 1024 },
    errors: &[
        "invalid OTLP protobuf: ",
        "invalid OTLP JSON: ",
        "OTLP JSON uses camelCase keys",
        "invalid spanline.v1.DeadLetter: ",
        "dead letter with unknown payload kind ",
        "dead letter's raw record ",
    ],
};

/// A protobuf record read in place (`map_record`): nothing decoded but an array or list value of at
/// most 4 KiB at a time (up to 64 × its bytes, then dropped), so the documents' bound and that.
const IN_PLACE: Target = Target {
    name: "record read in place",
    bound: Bound { per_byte: 0, fixed: 2 * COUNTED_LIMIT + 320 * 1024 },
    errors: &[],
};

/// A `_bulk` answer. The worst case per byte is a run of empty items (`{},`: 3 bytes become an empty
/// 48-byte map), 51 × len just after the vector grew.
const BULK: Target = Target {
    name: "_bulk answer",
    bound: Bound { per_byte: 64, fixed: 64 * 1024 },
    errors: &["unreadable _bulk answer: ", "_bulk answered "],
};

/// The mapping's clock: 2027-01-15T08:00:00Z in µs, inside the generated times' usual range.
const NOW_MICROS: i64 = 1_800_000_000_000_000;

/// The mapping's bounds, small so that short runs reach them (the defaults are 1 MiB and 32 MiB).
const LIMITS: DocumentLimits = DocumentLimits { max_document_bytes: 16 * 1024, max_record_document_bytes: 256 * 1024 };

/// What one record's mapping may count before it stops: the record bound plus one document.
const COUNTED_LIMIT: u64 = (LIMITS.max_record_document_bytes + LIMITS.max_document_bytes) as u64;

/// A decoded record mapped to documents as the worker maps it (`Worker::take`). The one call of
/// `map_request` in these tests.
fn map(request: &ExportTraceServiceRequest, proto: &[u8], clamp: bool) -> Mapped {
    let routing = routing(clamp);
    let mut mapped = Mapped::default();
    map_request(request, proto, &routing, LIMITS, RecordTime::Timestamp(NOW_MICROS), &mut mapped);
    mapped
}

/// The routing live ingestion uses, with the default window.
fn routing(clamp: bool) -> Routing {
    Routing {
        names: IndexNames::new("fuzz"),
        max_age_micros: 72 * 3_600_000_000,
        max_skew_micros: 3_600_000_000,
        clamp,
        trace_ids: TraceIds::Jaeger,
    }
}

/// The live path on a record: `Ok` whether it took the record or left it to prost.
fn in_place(bytes: &[u8], clamp: bool) -> Run {
    let routing = routing(clamp);
    let mut mapped = Mapped::default();
    fuzz::measured(peak, bytes.len(), || {
        map_record(bytes, &routing, LIMITS, RecordTime::Timestamp(NOW_MICROS), &mut mapped);
        Ok::<_, String>(std::mem::take(&mut mapped))
    })
}

fn decode(encoding: Encoding, bytes: &[u8]) -> Run {
    let value = Bytes::copy_from_slice(bytes);
    fuzz::measured(peak, bytes.len(), || worker::decode(encoding, &value).map_err(|e| e.to_string()))
}

fn documents(encoding: Encoding, bytes: &[u8], clamp: bool) -> Run {
    let value = Bytes::copy_from_slice(bytes);
    match worker::decode(encoding, &value) {
        Ok((request, proto)) => {
            // The walk that span ids come from finds exactly the spans prost decoded.
            let spans = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
            assert_eq!(spanline_common::spans::SpanSources::count(&proto), Ok(spans), "span walk and prost disagree");
            fuzz::measured(peak, bytes.len(), || Ok::<_, String>(map(&request, &proto, clamp)))
        }
        Err(error) => Run { len: bytes.len(), peak: 0, outcome: Outcome::Err(error.to_string()) },
    }
}

fn bulk(body: &[u8], expected: usize) -> Run {
    fuzz::measured(peak, body.len(), || parse_response(body, expected).map_err(|e| e.to_string()))
}

fn proto(request: &ExportTraceServiceRequest) -> Vec<u8> {
    request.encode_to_vec()
}

fn json(request: &ExportTraceServiceRequest) -> Vec<u8> {
    serde_json::to_vec(&fuzz::compact_json(request)).unwrap()
}

fn letter(kind: i32, payload: Vec<u8>) -> Vec<u8> {
    letter_of(kind, payload, "")
}

/// A dead letter whose raw record names `source_encoding`.
fn letter_of(kind: i32, payload: Vec<u8>, source_encoding: &str) -> Vec<u8> {
    DeadLetter {
        source_encoding: source_encoding.into(),
        payload_kind: kind,
        payload,
        stage: 1,
        error_type: "decode_error".into(),
        reason: "invalid OTLP protobuf: buffer underflow".into(),
        source_topic: "otlp_spans".into(),
        source_partition: 3,
        source_offset: 42,
        target_index: "jaeger-span-2027-01-15".into(),
        dead_lettered_at_unix_nano: 1,
        span_count: 1,
        ..DeadLetter::default()
    }
    .encode_to_vec()
}

/// Payload kinds: the two that replay indexes, the unspecified one, and anything.
fn payload_kind() -> impl Strategy<Value = i32> {
    prop_oneof![
        4 => Just(PayloadKind::OtlpProto as i32),
        2 => Just(PayloadKind::RawRecord as i32),
        1 => Just(0),
        1 => any::<i32>(),
    ]
}

/// A record of `encoding` holding `request`.
fn record(encoding: Encoding, request: &ExportTraceServiceRequest, kind: i32) -> Vec<u8> {
    match encoding {
        Encoding::OtlpProto => proto(request),
        Encoding::OtlpJson => json(request),
        Encoding::DeadLetter => letter(kind, proto(request)),
        Encoding::JaegerProto | Encoding::JaegerJson => panic!("Jaeger records hold Jaeger spans: see jaeger_record"),
    }
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![Just(Encoding::OtlpProto), Just(Encoding::OtlpJson), Just(Encoding::DeadLetter)]
}

// ---------------------------------------------------------------------------------------------
// OTLP protobuf records.

#[test]
fn proto_survives_arbitrary_bytes() {
    fuzz::check(file!(), PROTO, fuzz::raw_bytes(512), |b| decode(Encoding::OtlpProto, b));
}

#[test]
fn proto_survives_mutated_requests() {
    let inputs = fuzz::mutated(fuzz::request().prop_map(|r| proto(&r)), PROTO_TOKENS);
    fuzz::check(file!(), PROTO, inputs, |b| decode(Encoding::OtlpProto, b));
}

#[test]
fn records_read_in_place_stay_bounded() {
    let inputs = prop_oneof![
        1 => fuzz::raw_bytes(512),
        2 => fuzz::request().prop_map(|r| proto(&r)),
        3 => fuzz::mutated(fuzz::request().prop_map(|r| proto(&r)), PROTO_TOKENS),
    ];
    fuzz::check(file!(), IN_PLACE, (inputs, any::<bool>()), |(bytes, clamp)| in_place(bytes, *clamp));
}

// ---------------------------------------------------------------------------------------------
// OTLP/JSON records (decoded, then re-encoded as protobuf for dead letters).

#[test]
fn json_record_survives_mutated_requests() {
    let inputs = prop_oneof![
        1 => fuzz::raw_bytes(256),
        3 => fuzz::mutated(fuzz::otlp_json(fuzz::request()).prop_map(|v| serde_json::to_vec(&v).unwrap()), JSON_TOKENS),
        2 => fuzz::json_confused(fuzz::otlp_json(fuzz::request())),
    ];
    fuzz::check(file!(), JSON, inputs, |b| decode(Encoding::OtlpJson, b));
}

// ---------------------------------------------------------------------------------------------
// Dead letters, as replay re-drives them.

#[test]
fn dead_letter_survives_mutated_envelopes() {
    let payload = prop_oneof![
        3 => fuzz::request().prop_map(|r| proto(&r)),
        2 => fuzz::mutated(fuzz::request().prop_map(|r| proto(&r)), PROTO_TOKENS),
        1 => fuzz::raw_bytes(256),
    ];
    let envelope = (payload_kind(), payload).prop_map(|(kind, payload)| letter(kind, payload));
    // Raw records of each encoding, named by their envelopes (or misnamed).
    let named = || {
        let name = prop_oneof![
            Just("otlp_proto"),
            Just("otlp_json"),
            Just("jaeger_proto"),
            Just("jaeger_json"),
            Just("dead_letter"),
            Just("thrift")
        ];
        let payload = prop_oneof![
            fuzz::request().prop_map(|r| proto(&r)),
            fuzz::request().prop_map(|r| json(&r)),
            jaeger::span().prop_map(|s| jaeger_record(Encoding::JaegerProto, &s)),
            jaeger::span().prop_map(|s| jaeger_record(Encoding::JaegerJson, &s)),
        ];
        (name, payload).prop_map(|(name, payload)| letter_of(PayloadKind::RawRecord as i32, payload, name))
    };
    let inputs = prop_oneof![
        1 => fuzz::raw_bytes(256),
        4 => fuzz::mutated(envelope, PROTO_TOKENS),
        2 => named(),
        2 => fuzz::mutated(named(), PROTO_TOKENS),
    ];
    fuzz::check(file!(), DEAD_LETTER, inputs, |b| decode(Encoding::DeadLetter, b));
}

// ---------------------------------------------------------------------------------------------
// Jaeger v1 records (`jaeger_proto`, `jaeger_json`): one Jaeger span, translated to OTLP.

/// A Jaeger protobuf span. The worst case per byte is a run of empty tags (`42 00`: 2 bytes become
/// a model `KeyValue` in a vector that has just grown, then an OTLP attribute).
const JAEGER_PROTO: Target = Target {
    name: "jaeger_proto record",
    bound: Bound { per_byte: 256, fixed: 64 * 1024 },
    errors: &["jaeger_proto: "],
};

/// A Jaeger jsonpb span: empty objects where tags are expected (`{},`: 3 bytes each).
const JAEGER_JSON: Target =
    Target { name: "jaeger_json record", bound: Bound { per_byte: 256, fixed: 64 * 1024 }, errors: &["jaeger_json: "] };

/// A Jaeger span's record in `encoding`.
fn jaeger_record(encoding: Encoding, span: &spanline_common::jaeger::model::Span) -> Vec<u8> {
    if encoding == Encoding::JaegerProto { span.encode_to_vec() } else { jaeger::jsonpb(span) }
}

/// Decodes a Jaeger record as the worker does, and checks that it held no more than the worker
/// priced it at before decoding (`worker::decoded_cost`, which the worker compares with
/// `limits.max_record_decoded_bytes`): the price is an upper bound, whatever the bytes.
fn jaeger_priced(encoding: Encoding, bytes: &[u8]) -> Run {
    let run = decode(encoding, bytes);
    if let Some(cost) = worker::decoded_cost(encoding, bytes) {
        assert!(run.peak <= cost as u64, "{encoding:?}: held {} bytes, priced at {cost}", run.peak);
    }
    run
}

#[test]
fn jaeger_proto_records_stay_within_their_price() {
    let span = || jaeger::span().prop_map(|s| jaeger_record(Encoding::JaegerProto, &s));
    let inputs = prop_oneof![
        1 => fuzz::raw_bytes(256),
        2 => span(),
        3 => fuzz::mutated(span(), PROTO_TOKENS),
    ];
    fuzz::check(file!(), JAEGER_PROTO, inputs, |b| jaeger_priced(Encoding::JaegerProto, b));
}

#[test]
fn jaeger_json_records_stay_within_their_price() {
    let span = || jaeger::span().prop_map(|s| jaeger_record(Encoding::JaegerJson, &s));
    let value = jaeger::span()
        .prop_map(|s| serde_json::from_slice::<serde_json::Value>(&jaeger_record(Encoding::JaegerJson, &s)).unwrap());
    let inputs = prop_oneof![
        1 => fuzz::raw_bytes(256),
        2 => span(),
        3 => fuzz::mutated(span(), JSON_TOKENS),
        2 => fuzz::json_confused(value),
    ];
    fuzz::check(file!(), JAEGER_JSON, inputs, |b| jaeger_priced(Encoding::JaegerJson, b));
}

/// The worst shapes: within the static bound and the price, and the price not far above what is
/// held (so the worker does not refuse ordinary records as too costly).
#[test]
fn jaeger_prices_are_upper_bounds_that_bite() {
    let mut span = spanline_common::jaeger::model::Span {
        trace_id: vec![1; 16],
        span_id: vec![1; 8],
        start_time: Some(spanline_common::jaeger::model::Timestamp { seconds: 1_800_000_000, nanos: 0 }),
        ..Default::default()
    };
    // 1 024 tags: the record is translated whole.
    span.tags = vec![Default::default(); 1024];
    for encoding in [Encoding::JaegerProto, Encoding::JaegerJson] {
        let bytes = jaeger_record(encoding, &span);
        let run = jaeger_priced(encoding, &bytes);
        assert_eq!(run.outcome, Outcome::Ok, "{encoding:?}");
        let target = if encoding == Encoding::JaegerProto { JAEGER_PROTO } else { JAEGER_JSON };
        assert!(target.violation(&run).is_none(), "{encoding:?}: {run:?}");
        let cost = worker::decoded_cost(encoding, &bytes).unwrap() as u64;
        // Protobuf prices each tag with the growth of both vectors it is in (about 6 times what a
        // run of empty tags holds); JSON is priced without knowing what each object is, every
        // object as the costliest element (a reference): about 10 times.
        let over = if encoding == Encoding::JaegerProto { 8 } else { 16 };
        assert!(cost < over * run.peak, "{encoding:?}: priced at {cost}, held {}", run.peak);
    }
    // Jaeger v1 set no limit on tags: more are kept, within the price and the bounds.
    span.tags = vec![Default::default(); 16_385];
    for encoding in [Encoding::JaegerProto, Encoding::JaegerJson] {
        let run = jaeger_priced(encoding, &jaeger_record(encoding, &span));
        assert_eq!(run.outcome, Outcome::Ok, "{encoding:?}");
        let target = if encoding == Encoding::JaegerProto { JAEGER_PROTO } else { JAEGER_JSON };
        assert!(target.violation(&run).is_none(), "{encoding:?}: {run:?}");
    }
}

/// `limits.max_record_bytes` by default: the largest record the worker decodes.
const MAX_RECORD: usize = 1024 * 1024;

/// `prefix`, then `item` repeated with commas up to about `MAX_RECORD` bytes, then `suffix`.
fn repeated(prefix: &str, item: &str, suffix: &str) -> Vec<u8> {
    let n = (MAX_RECORD - prefix.len() - suffix.len()) / (item.len() + 1);
    let mut out = prefix.as_bytes().to_vec();
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.as_bytes());
    }
    out.extend_from_slice(suffix.as_bytes());
    out
}

/// The shapes that cost most per byte in jsonpb, each near `limits.max_record_bytes`: arrays
/// where a scalar is expected (refused at once, nothing buffered), arrays where a tag is expected
/// (serde reads a struct from an array), nulls and trailing colons. Every one held within its
/// price.
#[test]
fn jaeger_json_worst_shapes_stay_within_their_price() {
    let ids = r#""traceId":"AAAAAAAAAAAAAAAAAAAAAQ==","spanId":"AAAAAAAAAAE=","startTime":"2027-01-15T08:00:00Z""#;
    let cases = [
        ("flags array", repeated(r#"{"flags":["#, "1", "]}")),
        ("vInt64 array", repeated(r#"{"tags":[{"vInt64":["#, "1", "]}]}")),
        ("vType array", repeated(r#"{"tags":[{"vType":["#, "1", "]}]}")),
        ("refType array", repeated(r#"{"references":[{"refType":["#, "1", "]}]}")),
        ("vFloat64 array", repeated(r#"{"tags":[{"vFloat64":["#, "1", "]}]}")),
        ("flags object", repeated(r#"{"flags":{"a":["#, "1", "]}}")),
        ("tags as arrays", repeated(&format!("{{{ids},\"tags\":["), "[]", "]}")),
        ("tags as objects", repeated(&format!("{{{ids},\"tags\":["), "{}", "]}")),
        ("null tags", repeated(&format!("{{{ids},\"tags\":["), r#"{"key":null,"vStr":null,"vInt64":null}"#, "]}")),
        ("warnings", repeated(&format!("{{{ids},\"warnings\":["), r#""""#, "]}")),
        ("trailing colons", repeated(r#"{"warnings":["#, r#""":::"#, "]}")),
    ];
    for (name, bytes) in cases {
        assert!(bytes.len() <= MAX_RECORD, "{name}");
        let cost = worker::decoded_cost(Encoding::JaegerJson, &bytes).unwrap();
        let run = decode(Encoding::JaegerJson, &bytes);
        eprintln!("{name}: {} bytes held {} at most, priced {cost}: {:?}", bytes.len(), run.peak, run.outcome);
        assert!(run.peak <= cost as u64, "{name}: held {} bytes, priced at {cost}", run.peak);
        assert!(JAEGER_JSON.violation(&run).is_none(), "{name}: {run:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Records to documents.

#[test]
fn documents_from_hostile_records_stay_bounded() {
    let tokens = |e: Encoding| if e == Encoding::OtlpJson { JSON_TOKENS } else { PROTO_TOKENS };
    let inputs = (encoding(), fuzz::request(), payload_kind(), any::<bool>(), any::<bool>()).prop_flat_map(
        |(encoding, request, kind, clamp, mutate)| {
            let bytes = record(encoding, &request, kind);
            let bytes = if mutate { fuzz::mutated(Just(bytes), tokens(encoding)).boxed() } else { Just(bytes).boxed() };
            (Just(encoding), bytes, Just(clamp))
        },
    );
    fuzz::check(file!(), DOCUMENTS, inputs, |(encoding, bytes, clamp)| documents(*encoding, bytes, *clamp));
}

// ---------------------------------------------------------------------------------------------
// `_bulk` answers.

fn bulk_answer() -> impl Strategy<Value = Vec<u8>> {
    let error = (prop_oneof![Just("mapper_parsing_exception".to_owned()), any::<String>()], any::<String>())
        .prop_map(|(kind, reason)| serde_json::json!({"type": kind, "reason": reason}));
    let status = prop_oneof![Just(200u16), Just(201), Just(409), Just(429), Just(400), Just(503), any::<u16>()];
    let item = (prop_oneof![Just("create"), Just("index"), Just("")], status, proptest::option::of(error)).prop_map(
        |(op, status, error)| {
            let mut inner = serde_json::json!({"_index": "jaeger-span-2027-01-15", "_id": "a_b_c", "status": status});
            if let Some(error) = error {
                inner["error"] = error;
            }
            serde_json::json!({ op: inner })
        },
    );
    let answer = (any::<bool>(), vec(item, 0..40))
        .prop_map(|(errors, items)| serde_json::json!({"took": 3, "errors": errors, "items": items}));
    prop_oneof![
        3 => answer.clone().prop_map(|a| serde_json::to_vec(&a).unwrap()),
        2 => fuzz::json_confused(answer),
        // Thousands of empty items: 3 bytes each in the answer.
        1 => (0usize..20_000).prop_map(|n| format!(r#"{{"errors":true,"items":[{}]}}"#, vec!["{}"; n].join(",")).into_bytes()),
        // Deep nesting in a field nobody reads.
        1 => (0usize..4000).prop_map(|d| format!(r#"{{"took":{}{},"errors":true}}"#, "[".repeat(d), "]".repeat(d)).into_bytes()),
        1 => fuzz::raw_bytes(256),
    ]
}

#[test]
fn bulk_answer_survives_mutations() {
    let inputs = (fuzz::mutated(bulk_answer(), JSON_TOKENS), prop_oneof![0usize..50, 0usize..20_001]);
    fuzz::check(file!(), BULK, inputs, |(body, expected)| bulk(body, *expected));
}

/// Found by fuzzing (a quote inserted before a long string, 10 205 cases into a long run): like
/// `decode_json` (common/tests/fuzz.rs), `parse_response` quotes a wrongly typed string whole in its
/// error, so an answer of any size up to `bulk::answer_cap` comes back in the retry's reason and its
/// warning. The error is now clipped (`spanline_common::clip`), and this pins it.
#[test]
fn bulk_answer_errors_do_not_echo_the_answer() {
    let body = format!(r#"{{"errors":true,"items":[{{"create":{{"status":"{}"}}}}]}}"#, "x".repeat(100_000));
    let run = bulk(body.as_bytes(), 1);
    let strict = BULK;
    assert!(strict.violation(&run).is_none(), "{}", strict.violation(&run).unwrap_or_default());
}

// ---------------------------------------------------------------------------------------------
// The bounds bite: each target's worst shape needs more than half its stated factor.

fn empty_spans(n: usize) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![Span::default(); n], ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// Asserts `run` is within `target`'s bound but over the bound with its per-byte factor halved.
fn assert_tight(target: Target, run: &Run) {
    assert_eq!(run.outcome, Outcome::Ok, "{}", target.name);
    assert!(target.violation(run).is_none(), "{}: {run:?}", target.name);
    let lowered = Target { bound: target.bound.lowered(2), ..target };
    assert!(lowered.violation(run).is_some(), "{}: {} would hold too: {run:?}", target.name, lowered.bound);
}

#[test]
fn bounds_are_tight() {
    // 2^14 + 1 spans: the vector has just doubled.
    let request = empty_spans(16_385);
    assert_tight(PROTO, &decode(Encoding::OtlpProto, &proto(&request)));
    assert_tight(DEAD_LETTER, &decode(Encoding::DeadLetter, &letter(1, proto(&request))));
    let spans = vec!["{}"; 16_385].join(",");
    let body = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#);
    assert_tight(JSON, &decode(Encoding::OtlpJson, body.as_bytes()));
    let body = format!(r#"{{"errors":true,"items":[{}]}}"#, vec!["{}"; 16_385].join(","));
    assert_tight(BULK, &bulk(body.as_bytes(), 16_385));

    // Many small in-window span documents, stopped at the record bound; its fixed part bites.
    let run = documents(Encoding::OtlpProto, &proto(&fuzz::fan_out(0, 0, 1000)), false);
    assert_eq!(run.outcome, Outcome::Ok);
    assert!(DOCUMENTS.violation(&run).is_none(), "{run:?}");
    let lowered = Target { bound: Bound { per_byte: 0, fixed: COUNTED_LIMIT + 16 * 1024 }, ..DOCUMENTS };
    assert!(lowered.violation(&run).is_some(), "{} would hold too: {run:?}", lowered.bound);
}
