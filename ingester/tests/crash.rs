//! Failures against the real binary and the real broker (Tansu), counting every span: a search
//! store that refuses connections or pushes back (bounded memory), members joining, leaving and
//! dying, and shutdown. SIGKILL between a durable bulk and its offset commit is tested on
//! librdkafka's mock cluster (`group.rs`): on Tansu 0.6.0 a member restarted after a SIGKILL
//! sometimes never gets an assignment (docs/development.md, "Tansu quirks seen here").

use std::{path::Path, process::Command, time::Duration};

use spanline_devstore::Faults;
use spanline_testkit::{
    Broker, count, devstore_with_faults, exactly_once, fixtures, free_port, process, process::Killed as Guard, produce,
    settled_count, wait_for,
};

const PARTITIONS: i32 = 6;

/// Tansu 0.6.0 sometimes never completes the rejoin of a cooperative-sticky member that lost its
/// assignment when another member's session expired (its partitions are revoked and never
/// reassigned), so the failover test here uses an eager strategy; the same failover with the
/// default strategy runs on librdkafka's mock cluster in `group.rs`. See docs/development.md.
const EAGER: &str = "roundrobin";

fn spawn_ingester(broker: &Broker, store: &str) -> Guard {
    spawn_ingester_with_admin(broker, store, free_port(), "cooperative-sticky")
}

fn spawn_ingester_with_admin(broker: &Broker, store: &str, admin: u16, strategy: &str) -> Guard {
    spawn_ingester_with(broker, store, admin, strategy, &[])
}

/// An ingester binary with the tests' settings and `strategy`, then `extra`.
fn spawn_ingester_with(broker: &Broker, store: &str, admin: u16, strategy: &str, extra: &[(&str, &str)]) -> Guard {
    let mut settings = vec![("SPANLINE_INGESTER__KAFKA__ASSIGNMENT_STRATEGY", strategy)];
    settings.extend_from_slice(extra);
    process::ingester(Path::new(env!("CARGO_BIN_EXE_spanline-ingester")), &broker.bootstrap(), store, admin, &settings)
}

/// Sum over partitions of the live group's committed offsets (0 where none).
fn committed(bootstrap: &str) -> i64 {
    spanline_testkit::committed_sum(bootstrap, "spanline-ingester", "otlp_spans", PARTITIONS)
        .expect("committed offsets")
}

/// A broker with the span topic holding 500 spans (traces 1-100 of 5 spans, starting at the returned
/// time), and a healthy store.
async fn broker_store_and_500_spans() -> (Broker, spanline_devstore::Running, u64) {
    let broker = Broker::start().await.expect("broker");
    broker.create_topic("otlp_spans", PARTITIONS).await.expect("topic");
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let start = fixtures::now_unix_nano();
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1, 100, 5, start))
        .await
        .expect("produced");
    (broker, store, start)
}

async fn settle(url: &str, want: u64) -> u64 {
    settled_count(url, "jaeger-span-*", want, Duration::from_secs(90)).await
}

/// Asserts the store holds exactly the spans `want` names, each in one document; returns the
/// conflicts (spans written again onto their own document, which deterministic ids make harmless
/// and a count cannot see).
async fn spans_exactly(url: &str, want: &std::collections::BTreeSet<String>) -> u64 {
    exactly_once(url, want, Duration::from_secs(90)).await.expect("every span exactly once")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_holds_offsets_and_everything_arrives_after() {
    let (broker, store, start) = broker_store_and_500_spans().await;
    let mut child = spawn_ingester(&broker, &store.url());
    assert_eq!(settle(&store.url(), 500).await, 500);
    let bootstrap = broker.bootstrap();
    let before = wait_for(Duration::from_secs(20), || {
        let bootstrap = bootstrap.clone();
        async move { tokio::task::spawn_blocking(move || committed(&bootstrap)).await.ok().filter(|c| *c == 100) }
    })
    .await
    .expect("first 100 records committed");

    // The store goes away; more records arrive meanwhile.
    reqwest::Client::new()
        .post(format!("{}/_devstore/refuse_connections", store.url()))
        .json(&serde_json::json!({"for": "6s"}))
        .send()
        .await
        .expect("refusing");
    tokio::time::sleep(Duration::from_millis(300)).await;
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1_000, 200, 5, start))
        .await
        .expect("produced");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = tokio::task::spawn_blocking(move || committed(&bootstrap)).await.expect("join");
    assert_eq!(during, before, "no offset advanced while the store was unreachable");

    // Everything arrives after recovery, once: a refused connection wrote nothing, so nothing is
    // written twice either.
    let mut want = fixtures::span_keys(1, 100, 5);
    want.extend(fixtures::span_keys(1_000, 200, 5));
    assert_eq!(spans_exactly(&store.url(), &want).await, 0, "a span was written twice");
    let _ = child.kill();
    let _ = child.wait();
}

/// Partitions this ingester owns, from its metrics; `None` while it is not answering.
async fn assigned(admin: u16) -> Option<f64> {
    spanline_testkit::metric(format!("127.0.0.1:{admin}").parse().ok()?, "spanline_ingester_assigned_partitions", "")
        .await
        .ok()
}

/// Records this ingester has consumed so far, from its metrics; `None` while it is not answering.
async fn records_consumed(admin: u16) -> Option<f64> {
    spanline_testkit::metric(format!("127.0.0.1:{admin}").parse().ok()?, "spanline_ingester_records_total", "")
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingesters_share_the_partitions_and_one_takes_over_when_the_other_is_killed() {
    let broker = Broker::start().await.expect("broker");
    broker.create_topic("otlp_spans", PARTITIONS).await.expect("topic");
    let store = devstore_with_faults(Faults { latency: Some(Duration::from_millis(20)), ..Faults::default() })
        .await
        .expect("store");
    let start = fixtures::now_unix_nano();
    let (admin_a, admin_b) = (free_port(), free_port());
    let mut a = spawn_ingester_with_admin(&broker, &store.url(), admin_a, EAGER);
    let mut b = spawn_ingester_with_admin(&broker, &store.url(), admin_b, EAGER);
    wait_for(Duration::from_secs(60), || async move {
        let (x, y) = (assigned(admin_a).await?, assigned(admin_b).await?);
        (x > 0.0 && y > 0.0 && x + y == f64::from(PARTITIONS)).then_some(())
    })
    .await
    .expect("the group settles with partitions on both members");
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1, 600, 5, start))
        .await
        .expect("produced");
    assert_eq!(settle(&store.url(), 3_000).await, 3_000);
    let (ra, rb) = (records_consumed(admin_a).await.unwrap_or(0.0), records_consumed(admin_b).await.unwrap_or(0.0));
    assert!(ra > 0.0 && rb > 0.0, "both members consumed a share: {ra} and {rb}");

    // More data, then one member dies mid-stream; the survivor takes its partitions over.
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 10_000, 1_400, 5, start))
        .await
        .expect("produced");
    let url = store.url();
    wait_for(Duration::from_secs(60), || {
        let url = url.clone();
        async move { (count(&url, "jaeger-span-*").await.ok()? > 4_000).then_some(()) }
    })
    .await
    .expect("progress");
    a.kill().expect("SIGKILL");
    a.wait().expect("reaped");
    // Nothing lost, no span in two documents. The killed member's records after its last commit
    // are read again by the survivor, so conflicts may be above 0.
    let mut want = fixtures::span_keys(1, 600, 5);
    want.extend(fixtures::span_keys(10_000, 1_400, 5));
    let conflicts = spans_exactly(&store.url(), &want).await;
    eprintln!("spans written again after the SIGKILL (conflicts): {conflicts}");
    // Offsets are committed in the background every second after they are stored.
    let bootstrap = broker.bootstrap();
    let after = wait_for(Duration::from_secs(20), || {
        let bootstrap = bootstrap.clone();
        async move { tokio::task::spawn_blocking(move || committed(&bootstrap)).await.ok().filter(|c| *c == 2_000) }
    })
    .await;
    assert!(after.is_ok(), "the survivor committed every partition to its end");
    let _ = b.kill();
    let _ = b.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_hand_partitions_over_drained_so_no_record_is_read_twice() {
    let broker = Broker::start().await.expect("broker");
    broker.create_topic("otlp_spans", PARTITIONS).await.expect("topic");
    let store = devstore_with_faults(Faults { latency: Some(Duration::from_millis(30)), ..Faults::default() })
        .await
        .expect("store");
    let (admin_a, admin_b) = (free_port(), free_port());
    let mut a = spawn_ingester_with_admin(&broker, &store.url(), admin_a, "cooperative-sticky");
    wait_for(
        Duration::from_secs(60),
        || async move { (assigned(admin_a).await? == f64::from(PARTITIONS)).then_some(()) },
    )
    .await
    .expect("the first member owns every partition");

    // A steady stream, so batches are open and bulks in flight whenever partitions change hands.
    let (chunks, per_chunk, spans) = (24_u64, 100_u64, 3_u64);
    let bootstrap = broker.bootstrap();
    let start = fixtures::now_unix_nano();
    let producer = tokio::spawn(async move {
        for c in 0..chunks {
            let records = fixtures::trace_records("svc", 1 + c * per_chunk, per_chunk, spans, start);
            produce(&bootstrap, "otlp_spans", &records).await.expect("produced");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let total = chunks * per_chunk * spans;
    let url = store.url();
    let progress = |n: u64| {
        let url = url.clone();
        wait_for(Duration::from_secs(60), move || {
            let url = url.clone();
            async move { (count(&url, "jaeger-span-*").await.ok()? > n).then_some(()) }
        })
    };
    progress(total / 6).await.expect("progress before the join");
    let mut b = spawn_ingester_with_admin(&broker, &store.url(), admin_b, "cooperative-sticky");
    wait_for(Duration::from_secs(60), || async move {
        let (x, y) = (assigned(admin_a).await?, assigned(admin_b).await?);
        (x > 0.0 && y > 0.0 && x + y == f64::from(PARTITIONS)).then_some(())
    })
    .await
    .expect("the joining member gets partitions, the first keeps the rest");
    let drained = spanline_testkit::metric(
        format!("127.0.0.1:{admin_a}").parse().expect("addr"),
        "spanline_ingester_rebalance_events_total",
        "event=\"drained\"",
    )
    .await
    .expect("metrics");
    assert!(drained > 0.0, "the first member drained the partitions it gave up");

    progress(total / 2).await.expect("progress before the leave");
    let term = Command::new("kill").args(["-TERM", &a.id().to_string()]).status().expect("kill -TERM");
    assert!(term.success());
    let exit = tokio::task::spawn_blocking(move || {
        let status = a.wait();
        drop(a);
        status
    })
    .await
    .expect("joined")
    .expect("exit status");
    assert!(exit.success(), "a graceful stop exits 0: {exit:?}");
    producer.await.expect("producer");

    let want = fixtures::span_keys(1, chunks * per_chunk, spans);
    assert_eq!(want.len() as u64, total);
    assert_eq!(spans_exactly(&store.url(), &want).await, 0, "no span was written twice: no record was read twice");
    let bootstrap = broker.bootstrap();
    let records = i64::try_from(chunks * per_chunk).expect("fits");
    let after = wait_for(Duration::from_secs(20), || {
        let bootstrap = bootstrap.clone();
        async move { tokio::task::spawn_blocking(move || committed(&bootstrap)).await.ok().filter(|c| *c == records) }
    })
    .await;
    assert!(after.is_ok(), "every partition committed to its end");
    let _ = b.kill();
    let _ = b.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_pushing_back_pauses_fetching_and_memory_stays_bounded() {
    let broker = Broker::start().await.expect("broker");
    broker.create_topic("otlp_spans", PARTITIONS).await.expect("topic");
    let store = devstore_with_faults(Faults { bulk_status: Some(503), ..Faults::default() }).await.expect("store");
    let admin = free_port();
    // Per partition: 2 bulks in flight + 1 waiting + 1 open of 256 KiB, and 256 KiB fetched ahead.
    let child = spawn_ingester_with(
        &broker,
        &store.url(),
        admin,
        "cooperative-sticky",
        &[
            ("SPANLINE_INGESTER__BATCH__MAX_BYTES", "256KiB"),
            ("SPANLINE_INGESTER__BATCH__MAX_DOCS", "100000"),
            ("SPANLINE_INGESTER__BATCH__MAX_INFLIGHT_BULKS", "2"),
            ("SPANLINE_INGESTER__KAFKA__MAX_PREFETCH_BYTES", "256KiB"),
            ("SPANLINE_INGESTER__OPENSEARCH__MAX_BACKOFF", "500ms"),
        ],
    );
    // 60 MB of records (10 spans of ~1 KB each per record): far more than the bounds above.
    let (records, spans) = (6_000_u64, 10_u64);
    let start = fixtures::now_unix_nano();
    let padding = "x".repeat(1_000);
    for chunk in 0..10 {
        let batch: Vec<(String, Vec<u8>)> = (0..records / 10)
            .map(|i| {
                use prost::Message as _;
                let t = 1 + chunk * (records / 10) + i;
                let mut request = fixtures::request("svc", t, 1, spans, start);
                for span in
                    request.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans)
                {
                    span.attributes.push(fixtures::attr("padding", &padding));
                }
                (fixtures::trace_id(t).iter().map(|b| format!("{b:02x}")).collect(), request.encode_to_vec())
            })
            .collect();
        produce(&broker.bootstrap(), "otlp_spans", &batch).await.expect("produced");
    }
    let paused = wait_for(Duration::from_secs(60), || async move {
        let paused = spanline_testkit::metric(
            format!("127.0.0.1:{admin}").parse().ok()?,
            "spanline_ingester_paused_partitions",
            "",
        )
        .await
        .ok()?;
        (paused >= 1.0).then_some(paused)
    })
    .await
    .expect("partitions pause while every bulk is refused");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bootstrap = broker.bootstrap();
    let during = tokio::task::spawn_blocking(move || committed(&bootstrap)).await.expect("join");
    assert_eq!(during, 0, "no offset advanced while the store refused every bulk");
    // A peak that cannot be read fails here instead of passing as 0.
    let peak = spanline_testkit::process::peak_rss_of(child.id());
    eprintln!("paused partitions: {paused}, peak RSS during the outage: {} MiB", peak >> 20);
    assert!(peak < 64 << 20, "peak RSS {} MiB: buffered instead of pausing", peak >> 20);

    spanline_testkit::set_faults(&store.url(), serde_json::json!({})).await.expect("faults cleared");
    let total = records * spans;
    let want = fixtures::span_keys(1, records, spans);
    assert_eq!(want.len() as u64, total);
    let conflicts = exactly_once(&store.url(), &want, Duration::from_secs(180)).await.expect("every span exactly once");
    assert_eq!(conflicts, 0, "a refused bulk wrote nothing, so its retry wrote each span once");
    let peak = spanline_testkit::process::peak_rss_of(child.id());
    eprintln!("peak RSS after catching up: {} MiB", peak >> 20);
    assert!(peak < 64 << 20, "peak RSS {} MiB while catching up", peak >> 20);
}

/// Sends SIGTERM to `child` and returns how long it took to exit (at most `limit`).
fn terminate(child: &mut Guard, limit: Duration) -> Duration {
    let started = std::time::Instant::now();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    while started.elapsed() < limit {
        if child.try_wait().expect("wait").is_some() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the ingester did not exit within {limit:?} of SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_its_grace_with_the_broker_and_the_store_gone_and_logs_each_failure_once() {
    let (mut broker, store, start) = broker_store_and_500_spans().await;
    let admin = free_port();
    let mut child = spawn_ingester_with_admin(&broker, &store.url(), admin, "cooperative-sticky");
    assert_eq!(settle(&store.url(), 500).await, 500);

    // The store now fails every bulk (retried, offsets held), then the broker goes away.
    spanline_testkit::set_faults(&store.url(), serde_json::json!({"bulk_status": 503})).await.expect("faults");
    produce(&broker.bootstrap(), "otlp_spans", &fixtures::trace_records("svc", 1_000, 50, 5, start))
        .await
        .expect("produced");
    wait_for(Duration::from_secs(30), || async move { (records_consumed(admin).await? >= 150.0).then_some(()) })
        .await
        .expect("the new records are read and their bulks fail");
    broker.kill();
    // Long enough for librdkafka to notice and retry its connections many times.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // The tests' grace is 3 s: drain, final commit and close must all fit in it.
    let took = terminate(&mut child, Duration::from_secs(30));
    assert!(took <= Duration::from_millis(4_500), "shutdown took {took:?} against a 3s grace");

    let log = std::fs::read_to_string(std::env::temp_dir().join(format!("spanline-ingester-{admin}.log")))
        .expect("ingester log");
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert!(lines("bulk request failed") <= 2, "bulk retries logged once per interval:\n{log}");
    // Two clients (the consumer and the dead-letter producer), each saying it once per kind
    // (all brokers down; a transport failure; librdkafka's own FAIL line): not once per reconnect.
    assert!(lines("AllBrokersDown") <= 4, "a broker that is down is logged once per interval, not per retry:\n{log}");
    assert!(lines("Connection refused") <= 6, "librdkafka's reconnect complaints once per interval:\n{log}");
    assert!(log.contains("shutdown grace passed") || log.contains("ingester stopped"), "{log}");
    assert_eq!(count(&store.url(), "jaeger-span-*").await.expect("count"), 500, "nothing written while failing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once_instead_of_waiting_out_the_drain() {
    let (broker, store, _) = broker_store_and_500_spans().await;
    // Every bulk fails, so the drain cannot finish and would take the whole 20 s grace.
    spanline_testkit::set_faults(&store.url(), serde_json::json!({"bulk_status": 503})).await.expect("faults");
    let admin = free_port();
    let mut child = spawn_ingester_with(
        &broker,
        &store.url(),
        admin,
        "cooperative-sticky",
        &[
            ("SPANLINE_INGESTER__KAFKA__SESSION_TIMEOUT", "30s"),
            ("SPANLINE_INGESTER__SHUTDOWN_GRACE", "20s"),
            ("SPANLINE_INGESTER__KAFKA__DRAIN_DEADLINE", "20s"),
        ],
    );
    wait_for(Duration::from_secs(30), || async move { (records_consumed(admin).await? >= 100.0).then_some(()) })
        .await
        .expect("the records are read and their bulks fail");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(child.try_wait().expect("wait").is_none(), "the first SIGTERM drains (and the drain is stuck)");

    let took = terminate(&mut child, Duration::from_secs(15));
    assert!(took < Duration::from_secs(2), "the second SIGTERM took {took:?}");
    let status = child.try_wait().expect("wait").expect("exited");
    assert_eq!(status.code(), Some(143), "128 + SIGTERM, as a shell reports a process killed by it");
    assert_eq!(count(&store.url(), "jaeger-span-*").await.expect("count"), 0, "nothing written while failing");
}
