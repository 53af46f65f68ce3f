//! Dependency links counted from the stream (`[dependencies]`), against a real broker (Tansu,
//! SQLite) and the dev store: a known call graph split over records and partitions, out of order,
//! with missing parents, gives exactly its links and call counts; re-reading from any committed
//! offset (what a crash between a window's write and its commit leaves) and a replay of the whole
//! topic by another group leave every count unchanged.

mod common;

use std::{collections::BTreeMap, time::Duration};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message as _;
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer as _},
    producer::{FutureProducer, FutureRecord},
};
use spanline_testkit::{Broker, dependency_links, devstore, fixtures, metric, wait_for};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "otlp_spans";
const PARTITIONS: i32 = 3;
const TRACES: u64 = 60;
/// Traces whose only span's parent never arrives.
const ORPHANS: u64 = 7;

fn span(trace: u64, id: u64, parent: Option<u64>, kind: i32, start_ms: i64, peer: Option<&str>) -> Span {
    let start = u64::try_from(start_ms).expect("positive") * 1_000_000;
    Span {
        trace_id: fixtures::trace_id(trace),
        span_id: fixtures::span_id(trace * 100 + id),
        parent_span_id: parent.map(|p| fixtures::span_id(trace * 100 + p)).unwrap_or_default(),
        name: format!("op-{id}"),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        attributes: peer.map(|p| vec![fixtures::attr("peer.service", p)]).unwrap_or_default(),
        ..Default::default()
    }
}

fn record(service: &str, spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![fixtures::attr("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// (key, value, timestamp): each trace is `frontend` (server, then a client call) → `api` (server,
/// then a client call to the uninstrumented `postgres`), in two records 300 ms apart, the `api`
/// record first in every other trace (children before their parents). Traces start 2 s apart from
/// `base_ms`, so they spread over several windows and slots.
fn records(base_ms: i64) -> Vec<(String, Vec<u8>, i64)> {
    const SERVER: i32 = 2;
    const CLIENT: i32 = 3;
    let mut out = Vec::new();
    for t in 1..=TRACES {
        let at = base_ms + i64::try_from(t).expect("small") * 2_000;
        let key: String = fixtures::trace_id(t).iter().map(|b| format!("{b:02x}")).collect();
        let frontend =
            record("frontend", vec![span(t, 1, None, SERVER, at, None), span(t, 2, Some(1), CLIENT, at + 1, None)]);
        let api = record(
            "api",
            vec![span(t, 3, Some(2), SERVER, at + 2, None), span(t, 4, Some(3), CLIENT, at + 3, Some("postgres"))],
        );
        let (first, second) = if t % 2 == 0 { (api, frontend) } else { (frontend, api) };
        out.push((key.clone(), first, at));
        out.push((key, second, at + 300));
    }
    for t in 1000..1000 + ORPHANS {
        let at = base_ms + i64::try_from(t - 1000).expect("small") * 9_000;
        let key: String = fixtures::trace_id(t).iter().map(|b| format!("{b:02x}")).collect();
        out.push((key, record("api", vec![span(t, 3, Some(2), SERVER, at, None)]), at));
    }
    out
}

fn expected() -> BTreeMap<(String, String), u64> {
    [("frontend", "frontend"), ("frontend", "api"), ("api", "api"), ("api", "postgres")]
        .into_iter()
        .map(|(p, c)| ((p.to_owned(), c.to_owned()), TRACES))
        .collect()
}

async fn produce(bootstrap: &str, records: &[(String, Vec<u8>, i64)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for (key, value, ts) in records {
        producer
            .send(FutureRecord::to(TOPIC).key(key).payload(value).timestamp(*ts), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

async fn stored_links(url: &str) -> (BTreeMap<(String, String), u64>, usize) {
    dependency_links(url).await.expect("dependency links")
}

/// Waits until the store's links equal `want` (the last documents are written once the partitions
/// are idle and their clocks pass the windows), then that they stay so.
async fn assert_links(url: &str, want: &BTreeMap<(String, String), u64>) -> usize {
    let found = wait_for(Duration::from_secs(60), || async {
        let (links, docs) = stored_links(url).await;
        (links == *want).then_some(docs)
    })
    .await;
    let (links, docs) = stored_links(url).await;
    assert!(found.is_ok(), "links never matched: stored {links:?}, expected {want:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (after, _) = stored_links(url).await;
    assert_eq!(after, *want, "the links changed after matching");
    docs
}

fn ingester_config(broker: &Broker, store: &str, group: &str) -> spanline_ingester::Config {
    let mut c = common::config(broker, store);
    c.kafka.group_id = group.into();
    c.batch.flush_interval = Duration::from_millis(100);
    c.dependencies.enabled = true;
    c.dependencies.window = Duration::from_secs(60);
    c.dependencies.max_trace_duration = Duration::from_secs(10);
    c.dependencies.idle = Duration::from_secs(2);
    c.dependencies.lateness = Duration::from_secs(1);
    spanline_common::config::Validate::validate(&c).expect("valid");
    c
}

/// Runs an ingester until it has done its share (written `windows` window documents, and re-read
/// records when `reread`), checks the links, stops it and checks them again.
async fn run_until_links(c: spanline_ingester::Config, url: &str, windows: f64, reread: bool) -> usize {
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    let admin = ingester.admin_addr;
    let worked = wait_for(Duration::from_secs(60), || async move {
        let written = metric(admin, "spanline_ingester_dependency_windows_total", "").await.ok()?;
        let reread_records = metric(admin, "spanline_ingester_dependency_reread_records_total", "").await.ok()?;
        (written >= windows && (!reread || reread_records > 0.0)).then_some(())
    })
    .await;
    assert!(worked.is_ok(), "the ingester wrote fewer than {windows} windows or did not re-read");
    let docs = assert_links(url, &expected()).await;
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
    assert_eq!(stored_links(url).await.0, expected(), "the links after the ingester stopped");
    docs
}

/// Commits `offsets[p]` for each partition in `group` (no member running), as a crash leaves a
/// group whose last commit is behind what was written.
fn commit(bootstrap: &str, group: &str, offsets: &[i64]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for (p, &offset) in offsets.iter().enumerate() {
        tpl.add_partition_offset(TOPIC, i32::try_from(p).expect("small"), Offset::Offset(offset)).expect("offset");
    }
    consumer.commit(&tpl, CommitMode::Sync).expect("committed");
}

fn high_watermarks(bootstrap: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "watermarks")
        .create()
        .expect("consumer");
    (0..PARTITIONS)
        .map(|p| consumer.fetch_watermarks(TOPIC, p, Duration::from_secs(10)).expect("watermarks").1)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_call_graph_gives_its_links_once_through_re_reads_from_any_commit_and_a_replay() {
    let broker = Broker::start().await.expect("broker");
    broker.create_topic(TOPIC, PARTITIONS).await.expect("topic");
    let store = devstore().await.expect("store");
    // Ten minutes ago, so every window is over by the wall clock once the records are read.
    let base = i64::try_from(fixtures::now_unix_nano() / 1_000_000).expect("ms") - 10 * 60_000;
    produce(&broker.bootstrap(), &records(base)).await;

    let docs = run_until_links(ingester_config(&broker, &store.url(), "deps"), &store.url(), 3.0, false).await;
    assert!(docs >= 3, "the traces spread over several partitions and windows: {docs} documents");

    // What a crash leaves: the store has every window, the group's commit is anywhere behind.
    // Each restart re-reads from its rewind point and rewrites the unfinished windows whole.
    let ends = high_watermarks(&broker.bootstrap());
    for fraction in [1, 2, 3] {
        let offsets: Vec<i64> = ends.iter().map(|&end| end * fraction / 4).collect();
        commit(&broker.bootstrap(), "deps", &offsets);
        // It re-reads and rewrites at least one window of each partition.
        run_until_links(ingester_config(&broker, &store.url(), "deps"), &store.url(), f64::from(PARTITIONS), true)
            .await;
    }

    // A replay of the whole topic by another group rewrites every window with the same counts.
    let docs_now = stored_links(&store.url()).await.1;
    let replayed = run_until_links(
        ingester_config(&broker, &store.url(), "deps-replay"),
        &store.url(),
        // Every window again.
        f64::from(u32::try_from(docs_now).expect("few documents")),
        false,
    )
    .await;
    assert_eq!(replayed, docs_now, "the replay wrote the same documents, not new ones");
}

/// The real binary SIGKILLed while windows are being counted and written, then replaced by a new
/// member: the replacement re-reads from its rewind point and the links come out exactly the
/// graph's. On librdkafka's mock cluster (a process of its own), which expires the dead member after
/// its session and hands its partitions over (Tansu 0.6.0 sometimes never does, REFERENCE.md §7);
/// the mock answers ListOffsets only for the ends, so the replacement re-reads each partition from
/// its start, which the rewind allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_ingester_replaced_by_a_new_member_counts_every_call_once() {
    use spanline_testkit::{MockKafka, free_port, process};
    let mock = MockKafka::start(&[(TOPIC, PARTITIONS), ("otlp_spans_dlq", 1)]).expect("mock cluster");
    let store = devstore().await.expect("store");
    let base = i64::try_from(fixtures::now_unix_nano() / 1_000_000).expect("ms") - 10 * 60_000;
    let all = records(base);
    // Half the records first, so the kill lands with windows written and others half counted.
    let (first, second) = all.split_at(all.len() / 2);
    produce(mock.bootstrap(), first).await;
    let settings = [
        ("SPANLINE_INGESTER__DEPENDENCIES__ENABLED", "true"),
        ("SPANLINE_INGESTER__DEPENDENCIES__WINDOW", "60s"),
        ("SPANLINE_INGESTER__DEPENDENCIES__MAX_TRACE_DURATION", "10s"),
        ("SPANLINE_INGESTER__DEPENDENCIES__IDLE", "2s"),
        ("SPANLINE_INGESTER__DEPENDENCIES__LATENESS", "1s"),
    ];
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_spanline-ingester"));
    let mut ingester = process::ingester(binary, mock.bootstrap(), &store.url(), free_port(), &settings);
    // Some windows are written (the wall clock passed them once the records were read).
    let written =
        wait_for(Duration::from_secs(60), || async { (stored_links(&store.url()).await.1 > 0).then_some(()) }).await;
    assert!(written.is_ok(), "no dependency document was written before the kill");
    ingester.0.kill().expect("SIGKILL");
    let _ = ingester.0.wait();
    produce(mock.bootstrap(), second).await;
    let _replacement = process::ingester(binary, mock.bootstrap(), &store.url(), free_port(), &settings);
    assert_links(&store.url(), &expected()).await;
}
