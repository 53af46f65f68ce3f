//! Records built to make the ingester do unbounded work (issue 12), against the real binary, the
//! real broker and the dev store: each is dead-lettered with the bound it passed, the records around
//! it are indexed once, the partition moves on, and memory stays bounded.

use std::time::Duration;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, any_value},
    trace::v1::Span,
};
use prost::Message as _;
use spanline_devstore::Faults;
use spanline_proto::{DeadLetter, PayloadKind, Stage};
use spanline_testkit::{
    Broker, devstore_with_faults, fixtures, free_port, metric,
    process::{self, Killed},
    produce, read_at_least, read_topic, settled_count, wait_for,
};

/// The most the ingester may hold at its peak (VmHWM) while taking the hostile record. Without the
/// bound it builds 2.4 GB of documents.
const PEAK_RSS_BOUND: u64 = 300 << 20;

/// The release ingester binary with the tests' timings, then `extra` (`SPANLINE_INGESTER__...`, value).
/// Every other setting (the `[limits]` among them) is its default, or what this process's
/// environment says.
fn spawn_ingester(broker: &Broker, store: &str, admin: u16, extra: &[(&str, &str)]) -> Killed {
    process::ingester(&process::release_bin("spanline-ingester"), &broker.bootstrap(), store, admin, extra)
}

fn key(trace: u64) -> String {
    spanline_common::ids::to_hex(&fixtures::trace_id(trace))
}

/// The group's committed offset of partition 0 of `otlp_spans` once it is `want` (fails after 20 s).
async fn committed_to(bootstrap: &str, want: i64) -> anyhow::Result<i64> {
    wait_for(Duration::from_secs(20), || {
        let bootstrap = bootstrap.to_owned();
        async move {
            tokio::task::spawn_blocking(move || {
                spanline_testkit::committed_sum(&bootstrap, "spanline-ingester", "otlp_spans", 1).ok()
            })
            .await
            .ok()
            .flatten()
            .filter(|c| *c == want)
        }
    })
    .await
}

/// Issue 12's record: one resource with an 800 KiB attribute and 3 000 spans of one trace, about
/// 900 KiB (under Kafka's default 1 MB record limit), which Jaeger's schema turns into 3 000
/// documents of 800 KiB each.
fn hostile_record(trace: u64, start: u64) -> (String, Vec<u8>) {
    let mut request = fixtures::request("hostile", trace, 1, 0, start);
    let resource_spans = &mut request.resource_spans[0];
    resource_spans.resource.as_mut().expect("resource").attributes.push(fixtures::attr("blob", &"x".repeat(800 << 10)));
    resource_spans.scope_spans[0].spans = (0..3_000)
        .map(|n| Span {
            trace_id: fixtures::trace_id(trace),
            span_id: fixtures::span_id(trace * 1_000_000 + n),
            name: "op".into(),
            start_time_unix_nano: start + n,
            ..Default::default()
        })
        .collect();
    (key(trace), request.encode_to_vec())
}

/// A record of five spans, one of which holds a 600 KB binary attribute: its document (the value in
/// hex) is over the default 1 MiB `max_document_bytes`, the record itself is not.
fn one_oversize_span_record(trace: u64, start: u64) -> (String, Vec<u8>) {
    let mut request = fixtures::request("svc", trace, 1, 5, start);
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans[3].attributes.push(opentelemetry_proto::tonic::common::v1::KeyValue {
        key: "payload".into(),
        value: Some(AnyValue { value: Some(any_value::Value::BytesValue(vec![0xab; 600_000])) }),
        ..Default::default()
    });
    (key(trace), request.encode_to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_would_expand_to_gigabytes_is_dead_lettered_whole_in_bounded_memory() {
    let broker = Broker::start().await.expect("broker");
    broker.create_topic("otlp_spans", 1).await.expect("topic");
    broker.create_topic("otlp_spans_dlq", 1).await.expect("dlq topic");
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let start = fixtures::now_unix_nano();

    // Offsets 0-19: good; 20: hostile; 21: one span too large; 22-41: good. 204 good spans.
    let mut records = fixtures::trace_records("svc", 1, 20, 5, start);
    let hostile = hostile_record(500, start);
    let hostile_len = hostile.1.len();
    assert!((900 << 10..=990_000).contains(&hostile_len), "the hostile record is {hostile_len} bytes");
    records.push(hostile.clone());
    records.push(one_oversize_span_record(600, start));
    records.extend(fixtures::trace_records("svc", 100, 20, 5, start));
    let good_spans = 20 * 5 + 4 + 20 * 5;
    let total_records = i64::try_from(records.len()).expect("fits");
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");

    let admin = free_port();
    let child = spawn_ingester(&broker, &store.url(), admin, &[]);
    let pid = child.id();
    let indexed = settled_count(&store.url(), "jaeger-span-*", good_spans, Duration::from_secs(90)).await;
    // Read while the process lives; a value that cannot be read fails the test rather than pass as 0.
    let peak = spanline_testkit::process::peak_rss(pid).expect("the ingester's VmHWM is readable in /proc");
    eprintln!(
        "hostile record: {hostile_len} bytes; ingester peak RSS {} MiB (bound {} MiB)",
        peak >> 20,
        PEAK_RSS_BOUND >> 20
    );
    assert_eq!(indexed, good_spans, "every good span indexed, once");
    assert_eq!(spanline_testkit::span_conflicts(&store.url()).await.expect("stats"), 0, "none written twice");

    let letters = read_at_least(&broker.bootstrap(), "otlp_spans_dlq", 2).await.expect("dead letters");
    let letters: Vec<DeadLetter> =
        letters.iter().map(|r| DeadLetter::decode(r.payload.as_slice()).expect("envelope")).collect();
    let whole: Vec<&DeadLetter> = letters.iter().filter(|l| l.source_offset == 20).collect();
    assert_eq!(whole.len(), 1, "the hostile record is dead-lettered exactly once");
    let whole = whole[0];
    assert_eq!(whole.stage(), Stage::Map);
    assert_eq!(whole.error_type, "record_documents_too_large");
    assert!(whole.reason.contains("over limits.max_record_document_bytes (32MiB)"), "{}", whole.reason);
    assert_eq!(whole.payload_kind(), PayloadKind::OtlpProto);
    assert_eq!(whole.payload, hostile.1, "the record itself, whole");
    assert_eq!(whole.span_count, 3_000);
    let single: Vec<&DeadLetter> = letters.iter().filter(|l| l.source_offset == 21).collect();
    assert_eq!(single.len(), 1, "one span of record 21 dead-lettered alone");
    assert_eq!((single[0].stage(), single[0].error_type.as_str()), (Stage::Map, "document_too_large"));
    assert!(single[0].reason.contains("over limits.max_document_bytes (1MiB)"), "{}", single[0].reason);
    let span = ExportTraceServiceRequest::decode(single[0].payload.as_slice()).expect("otlp");
    assert_eq!(span.resource_spans[0].scope_spans[0].spans.len(), 1);
    assert_eq!(letters.len(), 2, "nothing else dead-lettered");

    let committed = committed_to(&broker.bootstrap(), total_records).await;
    assert!(committed.is_ok(), "the partition is committed past the hostile record, to its end");
    let admin_addr = format!("127.0.0.1:{admin}").parse().expect("addr");
    let over = |name: &'static str, limit: &'static str| async move {
        metric(admin_addr, name, &format!("limit=\"{limit}\"")).await.expect("metrics")
    };
    assert_eq!(over("spanline_ingester_over_limit_records_total", "max_record_document_bytes").await, 1.0);
    assert_eq!(over("spanline_ingester_over_limit_spans_total", "max_record_document_bytes").await, 3_000.0);
    assert_eq!(over("spanline_ingester_over_limit_spans_total", "max_document_bytes").await, 1.0);
    // Still once, after everything settled.
    let again = read_topic(&broker.bootstrap(), "otlp_spans_dlq").await.expect("dlq");
    assert_eq!(again.len(), 2);

    let peak = spanline_testkit::process::peak_rss(pid).expect("the ingester's VmHWM is readable in /proc");
    assert!(
        peak < PEAK_RSS_BOUND,
        "peak RSS {} MiB over the {} MiB bound: the record's documents were built",
        peak >> 20,
        PEAK_RSS_BOUND >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_max_record_bytes_is_dead_lettered_undecoded_and_an_envelope_too_large_goes_without_payload() {
    let broker = Broker::start().await.expect("broker");
    broker.create_topic("otlp_spans", 1).await.expect("topic");
    broker.create_topic("otlp_spans_dlq", 1).await.expect("dlq topic");
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let start = fixtures::now_unix_nano();
    // Offsets 0-4 good, 5 a 200 KiB record (not even protobuf: it is never decoded), 6-10 good.
    let mut records = fixtures::trace_records("svc", 1, 5, 3, start);
    records.push((key(50), vec![0xff; 200 << 10]));
    records.extend(fixtures::trace_records("svc", 100, 5, 3, start));
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");

    let admin = free_port();
    let _child = spawn_ingester(
        &broker,
        &store.url(),
        admin,
        &[
            ("SPANLINE_INGESTER__LIMITS__MAX_RECORD_BYTES", "64KiB"),
            ("SPANLINE_INGESTER__LIMITS__MAX_DEAD_LETTER_BYTES", "100KiB"),
        ],
    );
    let mut good = fixtures::span_keys(1, 5, 3);
    good.extend(fixtures::span_keys(100, 5, 3));
    let conflicts = spanline_testkit::exactly_once(&store.url(), &good, Duration::from_secs(60))
        .await
        .expect("the records around it indexed, each span once");
    assert_eq!(conflicts, 0, "none written twice");
    let letters = read_at_least(&broker.bootstrap(), "otlp_spans_dlq", 1).await.expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].key.as_deref(), Some(key(50).as_bytes()), "keyed like the source");
    let letter = DeadLetter::decode(letters[0].payload.as_slice()).expect("envelope");
    assert_eq!(
        (letter.stage(), letter.error_type.as_str(), letter.source_offset),
        (Stage::Decode, "record_too_large", 5)
    );
    assert!(
        letter.reason.contains("record of 204800 bytes is over limits.max_record_bytes (64KiB)"),
        "{}",
        letter.reason
    );
    assert!(letter.reason.contains("payload of 204800 bytes left out"), "{}", letter.reason);
    assert!(letter.reason.contains("otlp_spans partition 0 offset 5"), "{}", letter.reason);
    assert_eq!((letter.payload_kind(), letter.payload.len()), (PayloadKind::Unspecified, 0));
    assert!(committed_to(&broker.bootstrap(), 11).await.is_ok(), "committed past it, to the end");
    let admin_addr = format!("127.0.0.1:{admin}").parse().expect("addr");
    let records_over = metric(admin_addr, "spanline_ingester_over_limit_records_total", "limit=\"max_record_bytes\"");
    assert_eq!(records_over.await.expect("metrics"), 1.0);
    let left_out = metric(admin_addr, "spanline_ingester_dead_letter_payloads_left_out_total", "");
    assert_eq!(left_out.await.expect("metrics"), 1.0);
}

/// A record of 400 000 empty spans: 800 KB on the wire, under `max_record_bytes`, and 300 MB once
/// decoded (a `Span` is a few hundred bytes in memory, two on the wire). Priced from its wire shape,
/// it is dead-lettered undecoded; the records around it are indexed and memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_would_decode_to_hundreds_of_megabytes_is_dead_lettered_undecoded() {
    let broker = Broker::start().await.expect("broker");
    broker.create_topic("otlp_spans", 1).await.expect("topic");
    broker.create_topic("otlp_spans_dlq", 1).await.expect("dlq topic");
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let start = fixtures::now_unix_nano();
    let mut empty = fixtures::request("hostile", 700, 1, 0, start);
    empty.resource_spans[0].scope_spans[0].spans = vec![Span::default(); 400_000];
    let empty = (key(700), empty.encode_to_vec());
    assert!(empty.1.len() < 1 << 20, "under max_record_bytes: {} bytes", empty.1.len());
    // Offsets 0-4 good, 5 the empty spans, 6-10 good.
    let mut records = fixtures::trace_records("svc", 1, 5, 3, start);
    records.push(empty.clone());
    records.extend(fixtures::trace_records("svc", 100, 5, 3, start));
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");

    let admin = free_port();
    let child = spawn_ingester(&broker, &store.url(), admin, &[]);
    let pid = child.id();
    assert_eq!(settled_count(&store.url(), "jaeger-span-*", 30, Duration::from_secs(60)).await, 30);
    assert_eq!(spanline_testkit::span_conflicts(&store.url()).await.expect("stats"), 0, "none written twice");
    let letters = read_at_least(&broker.bootstrap(), "otlp_spans_dlq", 1).await.expect("dead letters");
    assert_eq!(letters.len(), 1);
    let letter = DeadLetter::decode(letters[0].payload.as_slice()).expect("envelope");
    assert_eq!(
        (letter.stage(), letter.error_type.as_str(), letter.source_offset),
        (Stage::Decode, "record_too_costly", 5)
    );
    assert!(letter.reason.contains("over limits.max_record_decoded_bytes (64MiB)"), "{}", letter.reason);
    assert_eq!(letter.payload, empty.1, "the record itself");
    assert!(committed_to(&broker.bootstrap(), 11).await.is_ok(), "committed past it, to the end");
    let admin_addr = format!("127.0.0.1:{admin}").parse().expect("addr");
    let over = metric(admin_addr, "spanline_ingester_over_limit_records_total", "limit=\"max_record_decoded_bytes\"");
    assert_eq!(over.await.expect("metrics"), 1.0);
    let peak = spanline_testkit::process::peak_rss_of(pid);
    eprintln!("empty-span record: ingester peak RSS {} MiB", peak >> 20);
    assert!(peak < 150 << 20, "peak RSS {} MiB: the record was decoded", peak >> 20);
}
