//! The ingester against a store that refuses for reasons only an operator can fix (a wrong path, a
//! proxy's redirect, a write block), with a real broker (Tansu) and the dev store: nothing is
//! dead-lettered, readiness drops and the refusal is counted while it lasts, and once it clears
//! every span is indexed exactly once and the committed offsets reach the end. A document the store
//! refuses for its own content is still dead-lettered and the partition moves.

mod common;

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use serde_json::{Value, json};
use spanline_devstore::Faults;
use spanline_testkit::{
    Broker, committed_sum, devstore_with_faults, documents, fixtures, metric, produce, read_topic, set_faults,
    settled_count, span_conflicts, wait_for,
};
use tokio_util::sync::CancellationToken;

use common::config;

const PARTITIONS: i32 = 3;

async fn ready(admin: SocketAddr) -> bool {
    reqwest::get(format!("http://{admin}/health/ready")).await.is_ok_and(|r| r.status().is_success())
}

/// Produces 40 traces of 5 spans, starts the ingester with the store answering `fault`, checks the
/// refusal holds everything (counted under `status`), clears the fault and checks every span is
/// indexed once, nothing dead-lettered and every record committed.
async fn held_while_refused_then_indexed_once(fault: Value, status: &str) {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", PARTITIONS).await.expect("topic");
    broker.create_topic("otlp_spans_dlq", PARTITIONS).await.expect("dlq topic");
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let url = store.url();
    set_faults(&url, fault.clone()).await.expect("fault set");
    let records = fixtures::trace_records("svc", 1, 40, 5, fixtures::now_unix_nano());
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");

    let shutdown = CancellationToken::new();
    let mut c = config(&broker, &url);
    c.batch.max_docs = 50;
    c.batch.flush_interval = Duration::from_millis(200);
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    let admin = ingester.admin_addr;

    let refusals = format!("status=\"{status}\"");
    wait_for(Duration::from_secs(30), || {
        let refusals = refusals.clone();
        async move { (metric(admin, "spanline_ingester_bulk_refusals_total", &refusals).await.ok()? > 0.0).then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{fault}: the refusal is counted under {refusals}: {e}"));
    // Held, not given up: a while later still nothing stored, dead-lettered or committed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(read_topic(&broker.bootstrap(), "otlp_spans_dlq").await.expect("dlq read").is_empty(), "{fault}");
    assert_eq!(
        metric(admin, "spanline_ingester_dead_lettered_total", "").await.expect("metrics"),
        0.0,
        "{fault}: nothing dead-lettered"
    );
    assert_eq!(
        committed_sum(&broker.bootstrap(), "spanline-ingester", "otlp_spans", PARTITIONS).expect("committed"),
        0,
        "{fault}: no offset passes what is durable"
    );
    assert_eq!(spanline_testkit::count(&url, "jaeger-span-*").await.expect("count"), 0, "{fault}: nothing stored");
    assert!(
        metric(admin, "spanline_ingester_stalled", "cause=\"store_refusing\"").await.expect("metrics") > 0.0,
        "{fault}: stalled on the store"
    );
    assert!(!ready(admin).await, "{fault}: not ready while the store refuses");

    set_faults(&url, json!({})).await.expect("fault cleared");
    assert_eq!(settled_count(&url, "jaeger-span-*", 200, Duration::from_secs(60)).await, 200, "{fault}");
    let ids: HashSet<String> =
        documents(&url, "jaeger-span-*").await.expect("documents").into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 200, "{fault}: 200 distinct span documents");
    assert_eq!(span_conflicts(&url).await.expect("stats"), 0, "{fault}: no span written twice");
    let produced = i64::try_from(records.len()).expect("count");
    wait_for(Duration::from_secs(30), || {
        let bootstrap = broker.bootstrap();
        async move {
            (committed_sum(&bootstrap, "spanline-ingester", "otlp_spans", PARTITIONS).ok()? == produced).then_some(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{fault}: committed offsets reach the {produced} records produced: {e}"));
    wait_for(Duration::from_secs(10), || async move { ready(admin).await.then_some(()) })
        .await
        .unwrap_or_else(|e| panic!("{fault}: ready again once the store accepts: {e}"));
    assert_eq!(metric(admin, "spanline_ingester_stalled", "cause=\"store_refusing\"").await.expect("metrics"), 0.0);
    assert!(read_topic(&broker.bootstrap(), "otlp_spans_dlq").await.expect("dlq read").is_empty(), "{fault}");
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}

/// An ingress with no route for the path: a whole-request 404 page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_request_404_holds_every_span_until_it_clears() {
    held_while_refused_then_indexed_once(json!({"bulk_status": 404}), "404").await;
}

/// OpenSearch with a path prefix in the URL: "no handler found", a whole-request 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_request_400_holds_every_span_until_it_clears() {
    held_while_refused_then_indexed_once(json!({"bulk_status": 400}), "400").await;
}

/// A proxy redirecting (http → https): the client follows the 302 with GET, and OpenSearch answers
/// that with 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_followed_into_a_405_holds_every_span_until_it_clears() {
    held_while_refused_then_indexed_once(json!({"bulk_status": 302}), "405").await;
}

/// An index write block: every item answered 403 `cluster_block_exception` inside a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_level_403_write_blocks_hold_every_span_until_they_clear() {
    held_while_refused_then_indexed_once(json!({"item_status": 403}), "403").await;
}

/// Auto-create disabled: every item answered 404 `index_not_found_exception` inside a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_level_404_missing_indices_hold_every_span_until_they_clear() {
    held_while_refused_then_indexed_once(json!({"item_status": 404}), "404").await;
}

/// A document error is still the span's own: with a write block first and a reject rule behind
/// it, nothing is dead-lettered while the block lasts; once it clears, each poison span is
/// dead-lettered exactly once, the others are indexed once, and every record is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapper_parsing_errors_are_still_dead_lettered_and_the_partition_moves() {
    use prost::Message;
    use spanline_proto::{DeadLetter, Stage};

    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", PARTITIONS).await.expect("topic");
    broker.create_topic("otlp_spans_dlq", PARTITIONS).await.expect("dlq topic");
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let url = store.url();
    let reject = json!({"field": "operationName", "contains": "operation-1"});
    set_faults(&url, json!({"item_status": 403, "reject": reject})).await.expect("faults set");
    // 30 traces of 3 spans: span 1 of each ("operation-1") is poison for the store.
    let records = fixtures::trace_records("svc", 1, 30, 3, fixtures::now_unix_nano());
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");

    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(config(&broker, &url), shutdown.clone()).await.expect("starts");
    let admin = ingester.admin_addr;
    wait_for(Duration::from_secs(30), || async move {
        (metric(admin, "spanline_ingester_bulk_refusals_total", "status=\"403\"").await.ok()? > 0.0).then_some(())
    })
    .await
    .expect("the write block is counted");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(read_topic(&broker.bootstrap(), "otlp_spans_dlq").await.expect("dlq read").is_empty(), "blocked first");

    set_faults(&url, json!({"reject": reject})).await.expect("block cleared");
    assert_eq!(settled_count(&url, "jaeger-span-*", 60, Duration::from_secs(60)).await, 60, "every good span once");
    let letters = spanline_testkit::read_at_least(&broker.bootstrap(), "otlp_spans_dlq", 30).await.expect("letters");
    assert_eq!(letters.len(), 30, "each poison span once");
    for record in &letters {
        let letter = DeadLetter::decode(record.payload.as_slice()).expect("envelope");
        assert_eq!(letter.stage(), Stage::Index);
        assert_eq!(letter.error_type, "mapper_parsing_exception");
    }
    assert_eq!(span_conflicts(&url).await.expect("stats"), 0);
    let produced = i64::try_from(records.len()).expect("count");
    wait_for(Duration::from_secs(30), || {
        let bootstrap = broker.bootstrap();
        async move {
            (committed_sum(&bootstrap, "spanline-ingester", "otlp_spans", PARTITIONS).ok()? == produced).then_some(())
        }
    })
    .await
    .expect("the partitions moved past the poison");
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}
