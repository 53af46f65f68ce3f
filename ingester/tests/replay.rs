//! `spanline-ingester replay` against a real broker (Tansu, SQLite) and the dev store, counting every
//! span: overlap with live ingestion, time windows, interruption and resume, dead-letter re-drive.

mod common;

use std::{collections::BTreeSet, time::Duration};

use spanline_devstore::Faults;
use spanline_ingester::replay::{self, Bound, ReplayArgs, Summary};
use spanline_testkit::{Broker, count, devstore_with_faults, exactly_once, fixtures, produce};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 3;

async fn broker() -> Broker {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", PARTITIONS).await.expect("topic");
    broker.create_topic("otlp_spans_dlq", PARTITIONS).await.expect("dlq topic");
    broker
}

fn config(broker: &Broker, store: &str) -> spanline_ingester::Config {
    let mut c = common::config(broker, store);
    c.batch.flush_interval = Duration::from_millis(200);
    c.batch.max_docs = 300;
    c
}

fn args(from: Bound, to: Bound) -> ReplayArgs {
    ReplayArgs { group: Some("spanline-replay".into()), ..ReplayArgs::window(from, to) }
}

async fn replay(config: &spanline_ingester::Config, args: ReplayArgs) -> Summary {
    replay::run(config.clone(), args, CancellationToken::new()).await.expect("replay runs")
}

/// Asserts the store holds exactly the spans `want` names, each in one document, and that none was
/// written twice (deterministic ids: a second write is a conflict, invisible to a count).
async fn assert_exactly_once(url: &str, want: &BTreeSet<String>) {
    let conflicts = exactly_once(url, want, Duration::from_secs(60)).await.expect("every span exactly once");
    assert_eq!(conflicts, 0, "a span was written twice");
}

/// Sum over partitions of `group`'s committed offsets.
fn committed(bootstrap: &str, group: &str, topic: &str) -> i64 {
    spanline_testkit::committed_sum(bootstrap, group, topic, PARTITIONS).expect("committed offsets")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_window_live_ingestion_indexed_changes_nothing_and_leaves_the_live_group_alone() {
    let broker = broker().await;
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1, 200, 4, fixtures::now_unix_nano()))
        .await
        .expect("produced");
    let c = config(&broker, &store.url());
    let shutdown = CancellationToken::new();
    let live = spanline_ingester::start(c.clone(), shutdown.clone()).await.expect("starts");
    assert_exactly_once(&store.url(), &fixtures::span_keys(1, 200, 4)).await;
    shutdown.cancel();
    live.task.await.expect("join").expect("clean stop");
    let bootstrap = broker.bootstrap();
    let live_before = tokio::task::spawn_blocking(move || committed(&bootstrap, "spanline-ingester", "otlp_spans"))
        .await
        .expect("join");
    assert_eq!(live_before, 200);

    let summary = replay(&c, args(Bound::Earliest, Bound::Latest)).await;
    assert_eq!(summary.records, 200, "{summary}");
    assert_eq!(summary.spans, 800);
    assert_eq!(summary.indexed, 800, "every span is durable (already there)");
    assert!(!summary.interrupted);
    assert_eq!(count(&store.url(), "jaeger-span-*").await.expect("count"), 800, "no new document");
    assert_eq!(
        spanline_testkit::span_conflicts(&store.url()).await.expect("stats"),
        800,
        "each span was offered once more and found present"
    );
    let bootstrap = broker.bootstrap();
    let (live_after, replay_group) = tokio::task::spawn_blocking(move || {
        (
            committed(&bootstrap, "spanline-ingester", "otlp_spans"),
            committed(&bootstrap, "spanline-replay", "otlp_spans"),
        )
    })
    .await
    .expect("join");
    assert_eq!(live_after, 200, "the live group is untouched");
    assert_eq!(replay_group, 200, "the replay committed its own progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_window_indexes_exactly_the_records_produced_inside_it() {
    let broker = broker().await;
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let start = fixtures::now_unix_nano();
    let now = || chrono::Utc::now().timestamp_millis();
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("before", 1, 60, 2, start)).await.expect("a");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let t1 = now();
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("inside", 1_000, 90, 3, start))
        .await
        .expect("b");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let t2 = now();
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("after", 2_000, 40, 5, start))
        .await
        .expect("c");

    let c = config(&broker, &store.url());
    let mut dry = args(Bound::Time(t1), Bound::Time(t2));
    dry.dry_run = true;
    let counted = replay(&c, dry).await;
    assert_eq!((counted.records, counted.spans), (90, 270), "dry run counts the window: {counted}");
    assert_eq!(count(&store.url(), "jaeger-span-*").await.unwrap_or(0), 0, "a dry run writes nothing");

    let summary = replay(&c, args(Bound::Time(t1), Bound::Time(t2))).await;
    assert_eq!((summary.records, summary.spans, summary.indexed), (90, 270, 270), "{summary}");
    // Exactly the window's spans.
    assert_exactly_once(&store.url(), &fixtures::span_keys(1_000, 90, 3)).await;
    let services: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/jaeger-span-*/_search", store.url()))
        .json(&serde_json::json!({"size": 0, "query": {"term": {"process.serviceName": "inside"}}}))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(services["hits"]["total"]["value"], 270, "only spans produced inside the window");

    // A window ending after the newest record ends at the partitions' ends (the test broker
    // answers offset 0 for such a time; the replay must not read that as "nothing").
    let mut tail = args(Bound::Time(t2), Bound::Time(now() + 3_600_000));
    tail.group = Some("spanline-replay-tail".into());
    let summary = replay(&c, tail).await;
    assert_eq!((summary.records, summary.spans), (40, 200), "{summary}");
    let mut want = fixtures::span_keys(1_000, 90, 3);
    want.extend(fixtures::span_keys(2_000, 40, 5));
    assert_exactly_once(&store.url(), &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replay_resumes_where_it_stopped_and_indexes_everything_once() {
    let broker = broker().await;
    let store = devstore_with_faults(Faults { latency: Some(Duration::from_millis(20)), ..Faults::default() })
        .await
        .expect("store");
    let total: u64 = 1_500 * 4;
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1, 1_500, 4, fixtures::now_unix_nano()))
        .await
        .expect("produced");
    let c = config(&broker, &store.url());
    let mut slow = args(Bound::Earliest, Bound::Latest);
    // 2 000 spans/s: the whole window takes about 3 s.
    slow.rate = Some(2_000);
    let stop = CancellationToken::new();
    let first = tokio::spawn(replay::run(c.clone(), slow.clone(), stop.clone()));
    let url = store.url();
    spanline_testkit::wait_for(Duration::from_secs(30), || {
        let url = url.clone();
        async move { (count(&url, "jaeger-span-*").await.ok()? >= 1_000).then_some(()) }
    })
    .await
    .expect("progress");
    stop.cancel();
    let first = first.await.expect("join").expect("first run");
    assert!(first.interrupted, "{first}");
    assert!(first.records > 0 && first.records < 1_500, "stopped part way: {first}");

    slow.rate = None;
    let second = replay(&c, slow).await;
    assert!(!second.interrupted);
    assert_eq!(
        first.records + second.records,
        1_500,
        "the second run starts where the first stopped: {first} / {second}"
    );
    let want = fixtures::span_keys(1, 1_500, 4);
    assert_eq!(want.len() as u64, total);
    assert_exactly_once(&store.url(), &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_spans_are_indexed_once_when_re_driven_after_the_fault_is_fixed() {
    let broker = broker().await;
    let store = devstore_with_faults(Faults {
        reject: Some(spanline_devstore::RejectRule { field: "operationName".into(), contains: "operation-2".into() }),
        ..Faults::default()
    })
    .await
    .expect("store");
    // 80 traces of 3 spans: span 2 of each is refused by the store's "mapping".
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1, 80, 3, fixtures::now_unix_nano()))
        .await
        .expect("produced");
    let c = config(&broker, &store.url());
    let shutdown = CancellationToken::new();
    let live = spanline_ingester::start(c.clone(), shutdown.clone()).await.expect("starts");
    // Spans 0 and 1 of each trace; span 2 is dead-lettered.
    let good: BTreeSet<String> = (1..=80).flat_map(|t| [fixtures::span_key(t, 0), fixtures::span_key(t, 1)]).collect();
    assert_exactly_once(&store.url(), &good).await;
    let letters = spanline_testkit::read_at_least(&broker.bootstrap(), "otlp_spans_dlq", 80).await.expect("letters");
    assert_eq!(letters.len(), 80);
    shutdown.cancel();
    live.task.await.expect("join").expect("clean stop");

    // The mapping is fixed; the dead letters are re-driven.
    spanline_testkit::set_faults(&store.url(), serde_json::json!({})).await.expect("faults cleared");
    let mut redrive = args(Bound::Earliest, Bound::Latest);
    redrive.dead_letters = true;
    let summary = replay(&c, redrive.clone()).await;
    assert_eq!((summary.records, summary.spans, summary.indexed, summary.dead_lettered), (80, 80, 80, 0), "{summary}");
    // Every span indexed, each once: the re-driven ones had never been written.
    assert_exactly_once(&store.url(), &fixtures::span_keys(1, 80, 3)).await;
    // Run again: resumes at the end, nothing to do.
    let again = replay(&c, redrive).await;
    assert_eq!(again.records, 0, "{again}");
    assert_eq!(count(&store.url(), "jaeger-span-*").await.expect("count"), 240);
    assert_eq!(spanline_testkit::span_conflicts(&store.url()).await.expect("stats"), 0, "nothing re-driven twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_whose_last_record_fills_a_batch_while_the_bulk_slot_is_busy_still_writes_it() {
    let broker = broker().await;
    let store = devstore_with_faults(Faults { latency: Some(Duration::from_millis(40)), ..Faults::default() })
        .await
        .expect("store");
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1, 120, 4, fixtures::now_unix_nano()))
        .await
        .expect("produced");
    // Every record fills a batch (4 span documents; service documents are cached after the first)
    // and the one bulk slot is always busy, so the end bound is met with a full batch waiting.
    let mut c = config(&broker, &store.url());
    c.batch.max_docs = 4;
    c.batch.max_inflight_bulks = 1;
    let summary = replay(&c, args(Bound::Earliest, Bound::Latest)).await;
    assert_eq!((summary.records, summary.spans, summary.indexed), (120, 480, 480), "{summary}");
    assert_exactly_once(&store.url(), &fixtures::span_keys(1, 120, 4)).await;
}
