//! The ingester against a real broker (Tansu, SQLite) and the dev store, counting every span.

mod common;

use std::{collections::BTreeSet, time::Duration};

use spanline_devstore::{Faults, Settings};
use spanline_testkit::{
    Broker, count, devstore_with, devstore_with_faults, exactly_once, fixtures, metric, produce, read_at_least,
    settled_count, span_conflicts, wait_for,
};
use tokio_util::sync::CancellationToken;

use common::config;

async fn broker() -> Broker {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", 3).await.expect("topic");
    broker
}

async fn wait_count(url: &str, want: u64) -> u64 {
    settled_count(url, "jaeger-span-*", want, Duration::from_secs(60)).await
}

/// Asserts the store holds exactly the spans `want` names, each in one document, and that none was
/// written twice: with deterministic ids a span indexed again lands on its own document, which the
/// count cannot see but the store's conflict count does.
async fn assert_exactly_once(url: &str, want: &BTreeSet<String>) {
    let conflicts = exactly_once(url, want, Duration::from_secs(60)).await.expect("every span exactly once");
    assert_eq!(conflicts, 0, "a span was written twice: a record or a bulk item was processed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_level_429s_are_retried_until_every_span_is_indexed_once() {
    let broker = broker().await;
    let store = devstore_with(Settings {
        refresh_interval: Duration::from_millis(100),
        faults: Faults { item_429_rate: 0.3, ..Faults::default() },
        seed: Some(3),
        ..Settings::default()
    })
    .await
    .expect("store");
    let records = fixtures::trace_records("svc", 1, 200, 5, fixtures::now_unix_nano());
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");

    let shutdown = CancellationToken::new();
    let mut c = config(&broker, &store.url());
    c.batch.max_docs = 100;
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    // Every span once despite 30% item 429s: a refused item was not written, so its retry is its
    // first write.
    assert_exactly_once(&store.url(), &fixtures::span_keys(1, 200, 5)).await;
    let stats: serde_json::Value =
        reqwest::get(format!("{}/_devstore/stats", store.url())).await.expect("stats").json().await.expect("json");
    assert!(stats["bulk"]["items_by_status"]["429"].as_u64().unwrap_or(0) > 100, "the fault was exercised: {stats}");
    assert!(metric(ingester.admin_addr, "spanline_ingester_bulk_retries_total", "").await.expect("metrics") > 0.0);
    assert!(
        metric(ingester.admin_addr, "spanline_ingester_flushes_total", "reason=\"docs\"").await.expect("metrics") > 0.0
    );
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_trickle_is_flushed_by_time_and_a_restart_duplicates_nothing() {
    let broker = broker().await;
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let start = fixtures::now_unix_nano();
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1, 3, 2, start))
        .await
        .expect("produced");

    let shutdown = CancellationToken::new();
    let mut c = config(&broker, &store.url());
    c.batch.flush_interval = Duration::from_millis(300);
    let ingester = spanline_ingester::start(c.clone(), shutdown.clone()).await.expect("starts");
    assert_eq!(wait_count(&store.url(), 6).await, 6);
    // The three records share two (service, operation) pairs: each service document is sent once.
    let stats: serde_json::Value =
        reqwest::get(format!("{}/_devstore/stats", store.url())).await.expect("stats").json().await.expect("json");
    assert_eq!(
        stats["bulk"]["items_by_status"]["409"],
        serde_json::Value::Null,
        "no repeated service documents: {stats}"
    );
    assert_eq!(count(&store.url(), "jaeger-service-*").await.expect("count"), 2);
    assert!(
        metric(ingester.admin_addr, "spanline_ingester_flushes_total", "reason=\"timeout\"").await.expect("metrics")
            >= 1.0
    );
    assert_eq!(
        metric(ingester.admin_addr, "spanline_ingester_flushes_total", "reason=\"bytes\"").await.expect("metrics"),
        0.0
    );
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");

    // A second ingester of the same group resumes from the committed offsets: only new spans.
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 100, 4, 2, start))
        .await
        .expect("produced");
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("restarts");
    // Old spans not indexed twice, new ones indexed.
    let mut want = fixtures::span_keys(1, 3, 2);
    want.extend(fixtures::span_keys(100, 4, 2));
    assert_exactly_once(&store.url(), &want).await;
    // Re-read records would show as span documents answered 409, which are counted here too.
    let spans = metric(ingester.admin_addr, "spanline_ingester_documents_indexed_total", "kind=\"span\"")
        .await
        .expect("metrics");
    assert_eq!(spans, 8.0, "only the 8 new spans went through this ingester: committed records were not read again");
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_documents_and_undecodable_records_are_dead_lettered_once_and_the_partition_moves() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    use spanline_proto::{DeadLetter, PayloadKind, Stage};

    let broker = broker().await;
    broker.create_topic("otlp_spans_dlq", 3).await.expect("dlq topic");
    let store = devstore_with_faults(Faults {
        reject: Some(spanline_devstore::RejectRule { field: "operationName".into(), contains: "operation-1".into() }),
        ..Faults::default()
    })
    .await
    .expect("store");
    // 50 traces of 3 spans: span 1 of each ("operation-1") is poison for the store.
    let mut records = fixtures::trace_records("svc", 1, 50, 3, fixtures::now_unix_nano());
    records.insert(10, ("garbage-1".into(), vec![0xff, 0xff, 0x01]));
    records.push(("garbage-2".into(), b"not protobuf at all".to_vec()));
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");

    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(config(&broker, &store.url()), shutdown.clone()).await.expect("starts");
    // Every good span (0 and 2 of each trace) indexed once.
    let good: BTreeSet<String> = (1..=50).flat_map(|t| [fixtures::span_key(t, 0), fixtures::span_key(t, 2)]).collect();
    assert_exactly_once(&store.url(), &good).await;

    let letters = read_at_least(&broker.bootstrap(), "otlp_spans_dlq", 52).await.expect("dead letters arrive");
    assert_eq!(letters.len(), 52, "50 poison spans and 2 undecodable records, each once");
    let mut poison_spans = Vec::new();
    let mut raw = Vec::new();
    for record in &letters {
        let letter = DeadLetter::decode(record.payload.as_slice()).expect("envelope");
        assert_eq!(letter.source_topic, "otlp_spans");
        match letter.stage() {
            Stage::Index => {
                assert_eq!(letter.payload_kind(), PayloadKind::OtlpProto);
                assert_eq!(letter.error_type, "mapper_parsing_exception");
                assert!(letter.target_index.starts_with("jaeger-span-"));
                let request = ExportTraceServiceRequest::decode(letter.payload.as_slice()).expect("otlp payload");
                let span = &request.resource_spans[0].scope_spans[0].spans[0];
                assert_eq!(span.name, "operation-1");
                assert_eq!(
                    record.key.as_deref(),
                    Some(spanline_common::ids::to_hex(&span.trace_id).as_bytes()),
                    "keyed like the source"
                );
                poison_spans.push(span.span_id.clone());
            }
            Stage::Decode => {
                assert_eq!(letter.payload_kind(), PayloadKind::RawRecord);
                raw.push(letter.payload.clone());
            }
            other => panic!("unexpected stage {other:?}"),
        }
    }
    poison_spans.sort();
    poison_spans.dedup();
    assert_eq!(poison_spans.len(), 50, "each poison span dead-lettered exactly once");
    raw.sort();
    assert_eq!(raw, vec![b"not protobuf at all".to_vec(), vec![0xff, 0xff, 0x01]]);
    assert_eq!(
        metric(ingester.admin_addr, "spanline_ingester_dead_lettered_total", "stage=\"index\"").await.expect("metrics"),
        50.0
    );
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");

    // The partitions moved past the poison: a new member of the group reads nothing old. Reading
    // nothing proves it only once the member owns the partitions and is reading: it is assigned
    // every partition, then a new record arrives and is the only one it reads.
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(config(&broker, &store.url()), shutdown.clone()).await.expect("restarts");
    let admin = ingester.admin_addr;
    wait_for(Duration::from_secs(30), || async move {
        (metric(admin, "spanline_ingester_assigned_partitions", "").await.ok()? == 3.0).then_some(())
    })
    .await
    .expect("the new member owns every partition");
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 500, 1, 3, fixtures::now_unix_nano()))
        .await
        .expect("produced");
    wait_for(Duration::from_secs(30), || async move {
        (metric(admin, "spanline_ingester_records_total", "").await.ok()? >= 1.0).then_some(())
    })
    .await
    .expect("the new member reads the new record");
    // Time for any old record fetched along with it to be counted too.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        metric(admin, "spanline_ingester_records_total", "").await.expect("metrics"),
        1.0,
        "committed past every record: only the new one is read"
    );
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_1970_are_dead_lettered_and_create_no_index() {
    use prost::Message;
    use spanline_proto::{DeadLetter, Stage};
    let broker = broker().await;
    broker.create_topic("otlp_spans_dlq", 1).await.expect("dlq topic");
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let mut records = fixtures::trace_records("svc", 1, 5, 2, fixtures::now_unix_nano());
    records.extend(fixtures::trace_records("svc", 100, 3, 2, 1_000));
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(config(&broker, &store.url()), shutdown.clone()).await.expect("starts");
    assert_exactly_once(&store.url(), &fixtures::span_keys(1, 5, 2)).await;
    let letters = read_at_least(&broker.bootstrap(), "otlp_spans_dlq", 6).await.expect("dead letters");
    assert_eq!(letters.len(), 6, "each 1970 span once");
    for record in &letters {
        let letter = DeadLetter::decode(record.payload.as_slice()).expect("envelope");
        assert_eq!(letter.stage(), Stage::Map);
        assert_eq!(letter.error_type, "span_out_of_range");
        assert!(letter.reason.contains("1970"), "{}", letter.reason);
    }
    let indices: serde_json::Value = reqwest::get(format!("{}/_cat/indices?format=json", store.url()))
        .await
        .expect("cat")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = indices.as_array().expect("rows").iter().filter_map(|r| r["index"].as_str()).collect();
    assert!(!names.iter().any(|n| n.contains("1970")), "no index for 1970: {names:?}");
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_records_are_indexed() {
    let broker = broker().await;
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let records: Vec<(String, Vec<u8>)> = (1..=4)
        .map(|t| {
            let request = fixtures::request("json-svc", t, 1, 3, fixtures::now_unix_nano());
            (format!("{t}"), serde_json::to_vec(&request).expect("otlp json"))
        })
        .collect();
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");
    let mut c = config(&broker, &store.url());
    c.kafka.encoding = spanline_ingester::config::Encoding::OtlpJson;
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    assert_exactly_once(&store.url(), &fixtures::span_keys(1, 4, 3)).await;
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_nodes_share_the_bulks_and_a_down_node_is_passed_over() {
    let broker = broker().await;
    let up = devstore_with_faults(Faults::default()).await.expect("store");
    let other = devstore_with_faults(Faults::default()).await.expect("store");
    let down = devstore_with(Settings { refuse_for: Some(Duration::from_secs(600)), ..Settings::default() })
        .await
        .expect("store");
    let start = fixtures::now_unix_nano();

    // Two healthy nodes (separate stores here, so each one's share is visible): both get bulks.
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1, 200, 2, start))
        .await
        .expect("produced");
    let mut c = config(&broker, &format!("{}, {}", up.url(), other.url()));
    c.batch.max_docs = 20;
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    let (a, b) = (up.url(), other.url());
    let total = wait_for(Duration::from_secs(60), || {
        let (a, b) = (a.clone(), b.clone());
        async move {
            let n = count(&a, "jaeger-span-*").await.unwrap_or(0) + count(&b, "jaeger-span-*").await.unwrap_or(0);
            (n >= 400).then_some(n)
        }
    })
    .await
    .expect("all spans");
    assert_eq!(total, 400);
    assert!(
        count(&a, "jaeger-span-*").await.expect("count") > 0 && count(&b, "jaeger-span-*").await.expect("count") > 0
    );
    for node in [&a, &b] {
        assert_eq!(span_conflicts(node).await.expect("stats"), 0, "a bulk written twice to one node");
    }
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");

    // A node that refuses connections: its turns fail and are retried on the next node.
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1_000, 100, 2, start))
        .await
        .expect("produced");
    let before = count(&a, "jaeger-span-*").await.expect("count");
    let mut c = config(&broker, &format!("{},{}", down.url(), up.url()));
    c.batch.max_docs = 20;
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    assert_eq!(settled_count(&a, "jaeger-span-*", before + 200, Duration::from_secs(60)).await, before + 200);
    assert_eq!(span_conflicts(&a).await.expect("stats"), 0, "a bulk passed over to the next node is written once");
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}

async fn ready(admin: std::net::SocketAddr) -> bool {
    reqwest::get(format!("http://{admin}/health/ready")).await.is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_owning_nothing_while_the_group_does_not_move_says_so_and_is_not_ready() {
    // One partition, two members: the second owns nothing. The first cannot write (the store
    // answers 503), so the group's offsets lag and stand still.
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", 1).await.expect("topic");
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let shutdown = CancellationToken::new();
    let mut c = config(&broker, &store.url());
    c.kafka.stalled_group_timeout = Duration::from_secs(2);
    let first = spanline_ingester::start(c.clone(), shutdown.clone()).await.expect("first starts");
    let owns = |admin| async move { metric(admin, "spanline_ingester_assigned_partitions", "").await.ok() };
    wait_for(Duration::from_secs(30), || async { (owns(first.admin_addr).await? == 1.0).then_some(()) })
        .await
        .expect("the first member owns the partition");
    let second = spanline_ingester::start(c, shutdown.clone()).await.expect("second starts");
    wait_for(Duration::from_secs(30), || async { ready(second.admin_addr).await.then_some(()) })
        .await
        .expect("the second member is ready");

    spanline_testkit::set_faults(&store.url(), serde_json::json!({"bulk_status": 503})).await.expect("faults");
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1, 20, 3, fixtures::now_unix_nano()))
        .await
        .expect("produced");
    let stalled = |admin| async move { metric(admin, "spanline_ingester_stalled_partitions", "").await.ok() };
    wait_for(Duration::from_secs(30), || async { (stalled(second.admin_addr).await? == 1.0).then_some(()) })
        .await
        .expect("the idle member reports the stalled group");
    assert_eq!(owns(second.admin_addr).await, Some(0.0));
    assert!(
        metric(second.admin_addr, "spanline_ingester_unowned_lag_records", "").await.expect("metrics") >= 20.0,
        "the group's lag is shown"
    );
    assert!(!ready(second.admin_addr).await, "a member of a stalled group is not ready");
    assert!(ready(first.admin_addr).await, "the owner is busy retrying, not idle");

    // The store recovers, the owner commits: the group moves and the idle member is ready again.
    spanline_testkit::set_faults(&store.url(), serde_json::json!({})).await.expect("faults cleared");
    assert_exactly_once(&store.url(), &fixtures::span_keys(1, 20, 3)).await;
    wait_for(Duration::from_secs(30), || async {
        (stalled(second.admin_addr).await? == 0.0 && ready(second.admin_addr).await).then_some(())
    })
    .await
    .expect("ready again once the group moves");
    shutdown.cancel();
    first.task.await.expect("join").expect("clean stop");
    second.task.await.expect("join").expect("clean stop");
}
