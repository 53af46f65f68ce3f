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
    Broker, devstore_with_faults, documents, exactly_once, fixtures, jaeger, produce, read_at_least, read_topic,
    span_conflicts, wait_for,
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
    let records = records(encoding, start_ns);
    produce(&broker.bootstrap(), topic, &records).await.expect("produced");

    let mut c = common::config(&broker, &store.url());
    c.kafka.topic = topic.into();
    c.kafka.dead_letter.topic = dlq.clone();
    c.kafka.encoding = encoding;
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(c.clone(), shutdown.clone()).await.expect("starts");
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

    // The two malformed records, dead-lettered with their reasons, their bytes and their encoding.
    let name = if encoding == Encoding::JaegerProto { "jaeger_proto: " } else { "jaeger_json: " };
    let zero_reason = format!("{name}span refused: trace id is all zeros");
    let check_letters = |dlq: &str, n: usize, source_encoding: &str, payload_of: &dyn Fn(&str) -> Vec<u8>| {
        let (broker, dlq, source_encoding) = (broker.bootstrap(), dlq.to_owned(), source_encoding.to_owned());
        let zero_reason = zero_reason.clone();
        let payloads: Vec<(String, Vec<u8>)> =
            ["garbage", "zero"].iter().map(|k| ((*k).into(), payload_of(k))).collect();
        async move {
            let letters = read_at_least(&broker, &dlq, n).await.expect("dead letters arrive");
            let mut reasons: Vec<(Option<Vec<u8>>, String)> = letters
                .iter()
                .map(|r| {
                    let letter = DeadLetter::decode(r.payload.as_slice()).expect("envelope");
                    assert_eq!(letter.stage(), Stage::Decode);
                    assert_eq!(letter.payload_kind(), PayloadKind::RawRecord);
                    assert_eq!(letter.source_topic, topic);
                    assert_eq!(letter.source_encoding, source_encoding);
                    assert!(letter.reason.starts_with(name), "{}", letter.reason);
                    let key = String::from_utf8(r.key.clone().expect("keyed")).expect("utf-8");
                    let payload = &payloads.iter().find(|(k, _)| *k == key).expect("a malformed record's key").1;
                    assert_eq!(&letter.payload, payload, "{key}: the record's bytes");
                    (r.key.clone(), letter.reason)
                })
                .collect();
            reasons.sort();
            assert_eq!(reasons.len(), n, "{reasons:?}");
            let garbage = reasons.iter().filter(|(k, _)| k.as_deref() == Some(b"garbage".as_slice())).count();
            assert_eq!(garbage, n / 2, "{reasons:?}");
            let mut zero = reasons.iter().filter(|(k, _)| k.as_deref() == Some(b"zero".as_slice()));
            assert!(zero.clone().count() == n / 2 && zero.all(|(_, r)| *r == zero_reason), "{reasons:?}");
        }
    };
    let record_of = |key: &str| records.iter().find(|(k, _)| k == key).expect("produced").1.clone();
    check_letters(&dlq, 2, encoding.name(), &record_of).await;
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");

    // Read again by a new group into the same store: every span written onto its own document
    // (deterministic ids, answered 409), nothing changed, the malformed records dead-lettered again.
    let before = documents(&store.url(), "jaeger-span-*").await.expect("documents");
    let mut again = c.clone();
    again.kafka.group_id = format!("{}-again", c.kafka.group_id);
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(again, shutdown.clone()).await.expect("starts again");
    let spans = TRACES * SPANS;
    let conflicts =
        wait_for(Duration::from_secs(60), || async { span_conflicts(&store.url()).await.ok().filter(|&c| c >= spans) })
            .await
            .expect("every span answered 409");
    assert_eq!(conflicts, spans, "each span once more");
    check_letters(&dlq, 4, encoding.name(), &record_of).await;
    let mut after = documents(&store.url(), "jaeger-span-*").await.expect("documents");
    let mut before = before;
    before.sort_by(|a, b| a.0.cmp(&b.0));
    after.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(before, after, "the documents unchanged");
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");

    // Re-driven: each raw letter decoded as the topic's encoding (not as OTLP), so refused again
    // with the same reason, naming the envelope it came from as its encoding.
    let dlq2 = format!("{topic}_dlq2");
    broker.create_topic(&dlq2, 1).await.expect("dlq2 topic");
    let mut redrive = c.clone();
    redrive.kafka.topic = dlq.clone();
    redrive.kafka.encoding = Encoding::DeadLetter;
    redrive.kafka.group_id = format!("{}-redrive", c.kafka.group_id);
    redrive.kafka.dead_letter.topic = dlq2.clone();
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(redrive, shutdown.clone()).await.expect("starts to re-drive");
    let first = read_topic(&broker.bootstrap(), &dlq).await.expect("dead letters");
    let redriven = read_at_least(&broker.bootstrap(), &dlq2, 4).await.expect("re-driven letters arrive");
    for r in &redriven {
        let letter = DeadLetter::decode(r.payload.as_slice()).expect("envelope");
        assert_eq!(letter.source_encoding, "dead_letter");
        assert_eq!(letter.redrives, 1);
        assert!(letter.reason.starts_with(name), "decoded as the topic's encoding: {}", letter.reason);
        if r.key.as_deref() == Some(b"zero".as_slice()) {
            assert_eq!(letter.reason, zero_reason);
        }
        assert!(first.iter().any(|f| f.payload == letter.payload), "the re-driven envelope's bytes");
    }
    assert_eq!(span_conflicts(&store.url()).await.expect("stats"), spans, "nothing indexed by the re-drive");
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
