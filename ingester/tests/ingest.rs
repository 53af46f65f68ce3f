//! The ingester against a real broker (Tansu, SQLite) and the dev store, counting every span.

use std::time::Duration;

use spanline_devstore::{Faults, Settings};
use spanline_testkit::{Broker, count, devstore_with, fixtures, metric, produce, wait_for};
use tokio_util::sync::CancellationToken;

async fn broker() -> Broker {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", 3).await.expect("topic");
    broker
}

fn config(broker: &Broker, store: &str) -> spanline_ingester::Config {
    let mut c = spanline_ingester::Config::default();
    c.admin.listen = "127.0.0.1:0".parse().expect("addr");
    c.kafka.brokers = broker.bootstrap();
    c.opensearch.url = store.to_owned();
    c.opensearch.min_backoff = Duration::from_millis(20);
    c.opensearch.max_backoff = Duration::from_millis(200);
    // Short enough that a restarted member is not kept waiting by the previous one's session.
    c.kafka.session_timeout = Duration::from_secs(6);
    c.shutdown_grace = Duration::from_secs(3);
    c
}

async fn wait_count(url: &str, want: u64) -> u64 {
    let _ =
        wait_for(
            Duration::from_secs(60),
            || async move { (count(url, "jaeger-span-*").await.ok()? >= want).then_some(()) },
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    count(url, "jaeger-span-*").await.expect("count")
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
    assert_eq!(wait_count(&store.url(), 1_000).await, 1_000, "every span once despite 30% item 429s");
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
    let store = devstore_with(Settings { refresh_interval: Duration::from_millis(100), ..Settings::default() })
        .await
        .expect("store");
    let start = fixtures::now_unix_nano();
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1, 3, 2, start))
        .await
        .expect("produced");

    let shutdown = CancellationToken::new();
    let mut c = config(&broker, &store.url());
    c.batch.flush_interval = Duration::from_millis(300);
    let ingester = spanline_ingester::start(c.clone(), shutdown.clone()).await.expect("starts");
    assert_eq!(wait_count(&store.url(), 6).await, 6);
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
    assert_eq!(wait_count(&store.url(), 14).await, 14, "old spans not indexed twice, new ones indexed");
    // Re-read records would show as span documents answered 409, which are counted here too.
    let spans = metric(ingester.admin_addr, "spanline_ingester_documents_indexed_total", "kind=\"span\"")
        .await
        .expect("metrics");
    assert_eq!(spans, 8.0, "only the 8 new spans went through this ingester: committed records were not read again");
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}
