//! Replay progress is keyed to the window under the default group: a replay of another window never
//! starts where an earlier replay stopped, while the same window run again resumes.

mod common;

use std::time::Duration;

use spanline_devstore::Faults;
use spanline_ingester::replay::{self, Bound, ReplayArgs, Summary};
use spanline_testkit::{Broker, committed_sum, count, devstore_with_faults, fixtures, produce, settled_count};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 3;

fn args(from: Bound, to: Bound) -> ReplayArgs {
    ReplayArgs::window(from, to)
}

async fn replay(config: &spanline_ingester::Config, args: ReplayArgs) -> Summary {
    replay::run(config.clone(), args, CancellationToken::new()).await.expect("replay runs")
}

async fn setup() -> (Broker, spanline_devstore::Running, spanline_ingester::Config) {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", PARTITIONS).await.expect("topic");
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let mut c = common::config(&broker, &store.url());
    c.batch.flush_interval = Duration::from_millis(200);
    c.batch.max_docs = 300;
    (broker, store, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_window_under_the_default_group_indexes_all_of_its_records() {
    let (broker, store, c) = setup().await;
    let start = fixtures::now_unix_nano();
    let t0 = chrono::Utc::now().timestamp_millis() - 1_000;
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("old", 1, 90, 2, start)).await.expect("a");

    // Yesterday: everything there was, under the default group.
    let yesterday = replay(&c, args(Bound::Earliest, Bound::Latest)).await;
    assert_eq!((yesterday.records, yesterday.spans), (90, 180), "{yesterday}");
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("new", 1_000, 60, 2, start)).await.expect("b");

    // Today: another window (from a time before every record, into another index prefix so what
    // it indexes is counted alone). Keyed by group only, it would start at yesterday's end.
    let mut today = args(Bound::Time(t0), Bound::Latest);
    today.index_prefix = Some("today".into());
    let summary = replay(&c, today).await;
    assert_eq!((summary.records, summary.spans, summary.indexed), (150, 300, 300), "the whole window: {summary}");
    assert_eq!(settled_count(&store.url(), "today-jaeger-span-*", 300, Duration::from_secs(60)).await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_window_run_again_resumes_under_the_default_group() {
    let (broker, store, c) = setup().await;
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1, 120, 2, fixtures::now_unix_nano()))
        .await
        .expect("produced");
    let window = args(Bound::Offset(0), Bound::Latest);
    let first = replay(&c, window.clone()).await;
    assert_eq!((first.records, first.spans), (120, 240), "{first}");
    assert_eq!(settled_count(&store.url(), "jaeger-span-*", 240, Duration::from_secs(60)).await, 240);
    let group = replay::default_group("otlp_spans", &window);
    let bootstrap = broker.bootstrap();
    let committed = tokio::task::spawn_blocking(move || committed_sum(&bootstrap, &group, "otlp_spans", PARTITIONS))
        .await
        .expect("join")
        .expect("committed");
    assert_eq!(committed, 120, "progress is committed to the window's own group");

    let again = replay(&c, window).await;
    assert_eq!(again.records, 0, "resumed at the window's end: {again}");
    assert!(again.partitions.values().all(|&(records, _)| records == 0));
    assert_eq!(count(&store.url(), "jaeger-span-*").await.expect("count"), 240);
    assert_eq!(spanline_testkit::span_conflicts(&store.url()).await.expect("stats"), 0, "nothing offered twice");
}
