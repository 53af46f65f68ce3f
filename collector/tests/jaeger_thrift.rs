//! Fuzzing the Jaeger Thrift translation (`spanline_collector::jaeger`) on the stable toolchain, as
//! `tests/fuzz.rs` fuzzes the OTLP decoders (docs/development.md, "Fuzzing"). `PROPTEST_CASES` sets
//! the cases per property (256 by default).
//!
//! Properties, for the HTTP body (binary `Batch`) and the agent's `emitBatch` datagrams (compact and
//! binary): no panic; `Ok` or an error starting `jaeger thrift: `; and at most [`BOUND`] held at
//! once while one input is translated, the translated request included.

#![allow(clippy::unwrap_used)]

use proptest::{collection::vec, prelude::*};
use spanline_collector::jaeger::{self, Limits};
use spanline_testkit::{
    fuzz::{self, Bound, Outcome, Run, Target},
    thrift::{self as t, Batch, Kind, Log, Protocol, Span, SpanRef, Tag, TagValue, Value},
};

/// The most bytes this thread held at once while `f` ran.
fn peak(f: &mut dyn FnMut()) -> u64 {
    allocation_counter::measure(f).bytes_max
}

/// What a translation may hold per input byte, plus a fixed allowance. The costliest shapes per
/// byte are the smallest structs that become an OTLP value (a 5-byte compact tag → a 56-byte
/// `KeyValue`; a 5-byte log → an 80-byte `Event`; a 9-byte reference → a `Link` with its
/// attribute; a 17-byte span → a 264-byte `Span` with its ids), twice that while a vector grows.
const BOUND: Bound = Bound { per_byte: 64, fixed: 64 * 1024 };

const BODY: Target = Target { name: "jaeger thrift body", bound: BOUND, errors: &["jaeger thrift: "] };
const COMPACT: Target = Target { name: "jaeger emitBatch (compact)", bound: BOUND, errors: &["jaeger thrift: "] };
const BINARY: Target = Target { name: "jaeger emitBatch (binary)", bound: BOUND, errors: &["jaeger thrift: "] };

fn body(bytes: &[u8]) -> Run {
    fuzz::measured(peak, bytes.len(), || {
        jaeger::batch_from_binary(bytes, &Limits::default()).map_err(|e| e.to_string())
    })
}

fn compact(bytes: &[u8]) -> Run {
    fuzz::measured(peak, bytes.len(), || {
        jaeger::emit_batch_from_compact(bytes, &Limits::default()).map_err(|e| e.to_string())
    })
}

fn binary(bytes: &[u8]) -> Run {
    fuzz::measured(peak, bytes.len(), || {
        jaeger::emit_batch_from_binary(bytes, &Limits::default()).map_err(|e| e.to_string())
    })
}

/// Thrift tokens worth inserting: stop bytes, struct and list field headers of both protocols,
/// list headers claiming 2^31 - 1 elements, long varints, compact bool fields.
const THRIFT_TOKENS: &[&[u8]] = &[
    &[0x00],
    &[0x0c, 0x00, 0x01],
    &[0x0f, 0x00, 0x02, 0x0c, 0x7f, 0xff, 0xff, 0xff],
    &[0x0b, 0x7f, 0xff, 0xff, 0xff],
    &[0x1c],
    &[0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07],
    &[0xfc, 0xff, 0xff, 0xff, 0xff, 0x07],
    &[0x11],
    &[0x12],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
    &[0x0d, 0x00, 0x07, 0x0b, 0x0c, 0x00, 0x00, 0x00, 0x01],
    &[0x10, 0x00, 0x63, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => Just(String::new()), 4 => "[a-z.]{1,12}", 1 => Just("span.kind".into()), 1 => Just("error".into())]
}

fn tag() -> impl Strategy<Value = Tag> {
    let value = prop_oneof![
        text().prop_map(TagValue::Str),
        any::<f64>().prop_map(TagValue::Double),
        any::<bool>().prop_map(TagValue::Bool),
        any::<i64>().prop_map(TagValue::Long),
        vec(any::<u8>(), 0..8).prop_map(TagValue::Binary),
    ];
    (text(), value).prop_map(|(key, value)| Tag { key, value })
}

fn span() -> impl Strategy<Value = Span> {
    let ids = (0i64..3, any::<i64>(), 0i64..4, 0i64..4);
    let refs = proptest::option::of(vec(
        (0i32..3, 0i64..3, 0i64..2, 0i64..4).prop_map(|(ref_type, trace_id_low, trace_id_high, span_id)| SpanRef {
            ref_type,
            trace_id_low,
            trace_id_high,
            span_id,
        }),
        0..4,
    ));
    let logs = proptest::option::of(vec(
        (any::<i64>(), vec(tag(), 0..3)).prop_map(|(timestamp, fields)| Log { timestamp, fields }),
        0..3,
    ));
    let tags = proptest::option::of(vec(tag(), 0..6));
    (ids, text(), refs, any::<i32>(), any::<i64>(), any::<i64>(), tags, logs).prop_map(
        |((low, high, id, parent), name, references, flags, start, duration, tags, logs)| Span {
            trace_id_low: low,
            trace_id_high: high,
            span_id: id,
            parent_span_id: parent,
            operation_name: name,
            references,
            flags,
            start_time: start,
            duration,
            tags,
            logs,
            extra: Vec::new(),
        },
    )
}

/// Batches of every shape: ordinary ones, and the cheapest per byte (thousands of empty spans,
/// tags, logs or references).
fn batch() -> impl Strategy<Value = Batch> {
    prop_oneof![
        6 => (text(), proptest::option::of(vec(tag(), 0..4)), vec(span(), 0..6))
            .prop_map(|(service_name, process_tags, spans)| Batch { service_name, process_tags, spans }),
        1 => (0usize..3000).prop_map(|n| Batch::new("s", vec![Span::new(1, 1, ""); n])),
        1 => (0usize..1000).prop_map(|n| Batch::new("s", vec![Span {
            tags: Some(vec![Tag::str("", ""); n]),
            ..Span::new(1, 1, "")
        }])),
        1 => (0usize..1000).prop_map(|n| Batch::new("s", vec![Span {
            logs: Some(vec![Log { timestamp: 0, fields: vec![] }; n]),
            ..Span::new(1, 1, "")
        }])),
        1 => (0usize..128).prop_map(|n| Batch::new("s", vec![Span {
            references: Some(vec![SpanRef { ref_type: 1, trace_id_low: 0, trace_id_high: 0, span_id: 0 }; n]),
            ..Span::new(1, 1, "")
        }])),
    ]
}

#[test]
fn bodies_survive_arbitrary_bytes() {
    fuzz::check(file!(), BODY, fuzz::raw_bytes(512), |b| body(b));
}

#[test]
fn compact_datagrams_survive_arbitrary_bytes() {
    // Mostly past the message header: arbitrary bytes rarely start with 0x82 0x81.
    let inputs = prop_oneof![
        1 => fuzz::raw_bytes(512),
        3 => fuzz::raw_bytes(512).prop_map(|rest| {
            let mut m = t::message(Protocol::Compact, "emitBatch", 4, 0, &Value::Struct(vec![]));
            m.pop();
            m.extend(rest);
            m
        }),
    ];
    fuzz::check(file!(), COMPACT, inputs, |b| compact(b));
}

#[test]
fn binary_datagrams_survive_arbitrary_bytes() {
    let inputs = prop_oneof![
        1 => fuzz::raw_bytes(512),
        3 => fuzz::raw_bytes(512).prop_map(|rest| {
            let mut m = t::message(Protocol::Binary, "emitBatch", 4, 0, &Value::Struct(vec![]));
            m.pop();
            m.extend(rest);
            m
        }),
    ];
    fuzz::check(file!(), BINARY, inputs, |b| binary(b));
}

#[test]
fn mutated_bodies_hold_a_bounded_memory() {
    fuzz::check(file!(), BODY, fuzz::mutated(batch().prop_map(|b| b.binary()), THRIFT_TOKENS), |b| body(b));
}

#[test]
fn mutated_compact_datagrams_hold_a_bounded_memory() {
    let inputs = fuzz::mutated(batch().prop_map(|b| t::emit_batch(Protocol::Compact, &b)), THRIFT_TOKENS);
    fuzz::check(file!(), COMPACT, inputs, |b| compact(b));
}

#[test]
fn mutated_binary_datagrams_hold_a_bounded_memory() {
    let inputs = fuzz::mutated(batch().prop_map(|b| t::emit_batch(Protocol::Binary, &b)), THRIFT_TOKENS);
    fuzz::check(file!(), BINARY, inputs, |b| binary(b));
}

/// The generated batches translate in both protocols to the same request: the compact and binary
/// readers agree.
#[test]
fn compact_and_binary_agree() {
    proptest!(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }, |(b in batch())| {
        let from_body = jaeger::batch_from_binary(&b.binary(), &Limits::default());
        let from_compact = jaeger::emit_batch_from_compact(&t::emit_batch(Protocol::Compact, &b), &Limits::default());
        prop_assert_eq!(&from_body, &from_compact);
        prop_assert!(from_body.is_ok(), "{:?}", from_body);
    });
}

/// The costliest shapes, full size: within the bound, and the worst of them needs more than a
/// quarter of its per-byte factor (the bound is not vacuous). Measured: 27 × len for references,
/// 21 for spans, 20 for logs, 14 for tags.
#[test]
fn the_bound_is_tight() {
    let empty_tags = Batch::new("s", vec![Span { tags: Some(vec![Tag::str("", ""); 1000]), ..Span::new(1, 1, "") }]);
    let empty_logs = Batch::new(
        "s",
        vec![Span { logs: Some(vec![Log { timestamp: 0, fields: vec![] }; 1000]), ..Span::new(1, 1, "") }],
    );
    let spans = Batch::new("s", (1..=3000).map(|i| Span::new(1, i, "")).collect());
    let refs = Batch::new(
        "s",
        vec![Span {
            references: Some(vec![SpanRef { ref_type: 1, trace_id_low: 0, trace_id_high: 0, span_id: 0 }; 128]),
            ..Span::new(1, 1, "")
        }],
    );
    let mut worst = 0.0f64;
    for (name, batch) in [("tags", empty_tags), ("logs", empty_logs), ("spans", spans), ("references", refs)] {
        let bytes = t::emit_batch(Protocol::Compact, &batch);
        let run = compact(&bytes);
        assert_eq!(run.outcome, Outcome::Ok, "{name}");
        assert!(run.peak <= BOUND.of(bytes.len()), "{name}: {} bytes held for {}", run.peak, bytes.len());
        worst = worst.max(run.peak as f64 / bytes.len() as f64);
        eprintln!(
            "{name}: {} bytes → {} held ({:.1} × len)",
            bytes.len(),
            run.peak,
            run.peak as f64 / bytes.len() as f64
        );
    }
    assert!(worst > (BOUND.per_byte / 4) as f64, "the worst shape needs only {worst:.1} × len");
}

/// A span list claiming 2^31 - 1 spans in a 64 KB datagram is refused at its header, allocating
/// nothing for it.
#[test]
fn a_huge_declared_list_allocates_nothing() {
    let mut m = t::message(Protocol::Compact, "emitBatch", 4, 0, &Value::Struct(vec![]));
    m.pop();
    m.push(0x1c); // args field 1: the batch
    m.extend(Value::Struct(vec![(1, Batch::new("s", vec![]).process())]).encode(Protocol::Compact));
    m.pop();
    m.push(0x19); // batch field 2: list
    t::list_header(&mut m, Protocol::Compact, Kind::Struct, i32::MAX as usize);
    m.resize(65_000, 0);
    let run = compact(&m);
    assert!(matches!(&run.outcome, Outcome::Err(e) if e.contains("more than the")), "{:?}", run.outcome);
    assert!(run.peak < 4096, "held {} bytes", run.peak);
}
