//! Topics a Jaeger v1 collector wrote (`jaeger_proto` and `jaeger_json`: one Jaeger `model.Span`
//! per record, keyed by its trace id in hex) drained through the real ingester into the dev store,
//! against a real broker (Tansu): every span lands once with the mapped fields, and a malformed
//! record is dead-lettered with its reason while the good ones around it are indexed.

#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::BTreeSet, time::Duration};

use prost::Message as _;
use serde_json::{Value, json};
use spanline_common::jaeger::model::{self, KeyValue, Log, Process, SpanRef, Timestamp};
use spanline_devstore::Faults;
use spanline_ingester::config::Encoding;
use spanline_proto::{DeadLetter, PayloadKind, Stage};
use spanline_testkit::{
    Broker, devstore_with_faults, documents, exactly_once, fixtures, jaeger, produce, read_at_least,
};
use tokio_util::sync::CancellationToken;

const TRACES: u64 = 4;
const SPANS: u64 = 3;

fn trace_id(trace: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&0x00ab_cdef_0000_0001u64.to_be_bytes());
    id[8..].copy_from_slice(&trace.to_be_bytes());
    id
}

fn span_id(trace: u64, n: u64) -> [u8; 8] {
    (trace * 100 + n + 1).to_be_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key(trace: u64, n: u64) -> String {
    format!("{}:{}", hex(&trace_id(trace)), hex(&span_id(trace, n)))
}

fn keys() -> BTreeSet<String> {
    (1..=TRACES).flat_map(|t| (0..SPANS).map(move |n| key(t, n))).collect()
}

fn tag(key: &str, v_type: i32, f: impl FnOnce(&mut KeyValue)) -> KeyValue {
    let mut t = KeyValue { key: key.into(), v_type, ..Default::default() };
    f(&mut t);
    t
}

/// Span `n` of `trace` as a Jaeger v1 collector stores it: its process inside, the root's children
/// pointing at it with a CHILD_OF reference (protobuf has no parentSpanId).
fn span(trace: u64, n: u64, start_ns: u64) -> model::Span {
    let at = |ns: u64| Timestamp { seconds: (ns / 1_000_000_000) as i64, nanos: (ns % 1_000_000_000) as i32 };
    let references = if n == 0 {
        Vec::new()
    } else {
        vec![SpanRef { trace_id: trace_id(trace).to_vec(), span_id: span_id(trace, 0).to_vec(), ref_type: 0 }]
    };
    model::Span {
        trace_id: trace_id(trace).to_vec(),
        span_id: span_id(trace, n).to_vec(),
        operation_name: format!("op-{n}"),
        references,
        flags: 1,
        start_time: Some(at(start_ns + n * 1_000)),
        duration: Some(model::Duration { seconds: 0, nanos: 1_500_000 }),
        tags: vec![
            tag("span.kind", model::STRING, |t| t.v_str = "server".into()),
            tag("http.status_code", model::INT64, |t| t.v_int64 = 200),
            tag("sampler.param", model::FLOAT64, |t| t.v_float64 = 0.5),
            tag("cached", model::BOOL, |t| t.v_bool = true),
        ],
        logs: vec![Log {
            timestamp: Some(at(start_ns + 500_000)),
            fields: vec![
                tag("event", model::STRING, |t| t.v_str = "retry".into()),
                tag("attempt", model::INT64, |t| t.v_int64 = 2),
            ],
        }],
        process: Some(Process {
            service_name: "jaeger-v1-svc".into(),
            tags: vec![tag("hostname", model::STRING, |t| t.v_str = "host-1".into())],
        }),
        process_id: "p1".into(),
        warnings: Vec::new(),
    }
}

/// Every span's records, keyed as Jaeger keys them (the trace id in hex), with two malformed ones
/// among them: bytes that are not the encoding, and a span with an all-zero trace id.
fn records(encoding: Encoding, start_ns: u64) -> Vec<(String, Vec<u8>)> {
    let encode =
        |s: &model::Span| if encoding == Encoding::JaegerProto { s.encode_to_vec() } else { jaeger::jsonpb(s) };
    let mut records: Vec<(String, Vec<u8>)> = (1..=TRACES)
        .flat_map(|t| (0..SPANS).map(move |n| (t, n)))
        .map(|(t, n)| (hex(&trace_id(t)), encode(&span(t, n, start_ns))))
        .collect();
    let garbage = if encoding == Encoding::JaegerProto { vec![0x0a, 0x7f, 0x01] } else { b"{\"traceId\":".to_vec() };
    records.insert(3, ("garbage".into(), garbage));
    let mut zero = span(99, 0, start_ns);
    zero.trace_id = vec![0; 16];
    records.insert(7, ("zero".into(), encode(&zero)));
    records
}

async fn drain(encoding: Encoding, topic: &str) {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic(topic, 1).await.expect("topic");
    let dlq = format!("{topic}_dlq");
    broker.create_topic(&dlq, 1).await.expect("dlq topic");
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let start_ns = fixtures::now_unix_nano();
    produce(&broker.bootstrap(), topic, &records(encoding, start_ns)).await.expect("produced");

    let mut c = common::config(&broker, &store.url());
    c.kafka.topic = topic.into();
    c.kafka.dead_letter.topic = dlq.clone();
    c.kafka.encoding = encoding;
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    let conflicts =
        exactly_once(&store.url(), &keys(), Duration::from_secs(60)).await.expect("every span exactly once");
    assert_eq!(conflicts, 0);

    // The mapped fields, span by span.
    let docs = documents(&store.url(), "jaeger-span-*").await.expect("documents");
    assert_eq!(docs.len(), (TRACES * SPANS) as usize);
    for (_, doc) in &docs {
        let (trace, n) = (1..=TRACES)
            .flat_map(|t| (0..SPANS).map(move |n| (t, n)))
            .find(|&(t, n)| doc["spanID"] == hex(&span_id(t, n)))
            .expect("a known span");
        assert_eq!(doc["traceID"], hex(&trace_id(trace)), "128-bit ids in 32 characters");
        assert_eq!(doc["operationName"], format!("op-{n}"));
        assert_eq!(doc["flags"], 1);
        let start_us = start_ns / 1000 + n;
        assert_eq!(doc["startTime"], start_us);
        assert_eq!(doc["duration"], 1500);
        let parent = if n == 0 {
            json!([])
        } else {
            json!([{"refType": "CHILD_OF", "traceID": hex(&trace_id(trace)), "spanID": hex(&span_id(trace, 0))}])
        };
        assert_eq!(doc["references"], parent, "{doc}");
        assert_eq!(doc["process"]["serviceName"], "jaeger-v1-svc");
        let tag = |tags: &Value, key: &str| {
            tags.as_array().unwrap().iter().find(|t| t["key"] == key).map(|t| (t["type"].clone(), t["value"].clone()))
        };
        assert_eq!(tag(&doc["process"]["tags"], "host.name"), Some((json!("string"), json!("host-1"))), "{doc}");
        assert_eq!(tag(&doc["tags"], "span.kind"), Some((json!("string"), json!("server"))));
        assert_eq!(tag(&doc["tags"], "http.status_code"), Some((json!("int64"), json!("200"))));
        assert_eq!(tag(&doc["tags"], "sampler.param"), Some((json!("float64"), json!("0.5"))));
        assert_eq!(tag(&doc["tags"], "cached"), Some((json!("bool"), json!("true"))));
        assert_eq!(tag(&doc["tags"], "error"), None, "status 200 is no error");
        let logs = doc["logs"].as_array().expect("logs");
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0]["timestamp"], start_ns / 1000 + 500);
        assert_eq!(tag(&logs[0]["fields"], "event"), Some((json!("string"), json!("retry"))));
        assert_eq!(tag(&logs[0]["fields"], "attempt"), Some((json!("int64"), json!("2"))));
    }

    // The two malformed records, dead-lettered with their reasons and their bytes.
    let letters = read_at_least(&broker.bootstrap(), &dlq, 2).await.expect("dead letters arrive");
    let name = if encoding == Encoding::JaegerProto { "jaeger_proto: " } else { "jaeger_json: " };
    let mut reasons: Vec<(Option<Vec<u8>>, String)> = letters
        .iter()
        .map(|r| {
            let letter = DeadLetter::decode(r.payload.as_slice()).expect("envelope");
            assert_eq!(letter.stage(), Stage::Decode);
            assert_eq!(letter.payload_kind(), PayloadKind::RawRecord);
            assert_eq!(letter.source_topic, topic);
            assert!(letter.reason.starts_with(name), "{}", letter.reason);
            (r.key.clone(), letter.reason)
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0.as_deref(), Some(b"garbage".as_slice()));
    assert_eq!(reasons[1], (Some(b"zero".to_vec()), format!("{name}span refused: trace id is all zeros")));
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jaeger_proto_topic_is_drained_span_for_span() {
    drain(Encoding::JaegerProto, "jaeger_proto_spans").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jaeger_json_topic_is_drained_span_for_span() {
    drain(Encoding::JaegerJson, "jaeger_json_spans").await;
}
