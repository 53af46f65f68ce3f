//! Group failures on librdkafka's mock cluster (`spanline_testkit::MockKafka`, a process of its
//! own) instead of Tansu, whose coordinator never hands a dead member's partitions to another member
//! (REFERENCE.md §7). The real ingester binary runs as separate processes with the defaults that
//! matter here: the `cooperative-sticky` strategy and dynamic membership (no `group_instance_id`),
//! 6 s sessions (`testkit::process::ingester`). Every span is counted and its id compared.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
    mocking::MockCluster,
};
use spanline_devstore::Faults;
use spanline_ingester::commit::Fence;
use spanline_testkit::{
    MockKafka, count, devstore_with_faults, fixtures, free_port, process, process::Killed as Guard, produce, wait_for,
};
use tokio::task::JoinHandle;

const PARTITIONS: i32 = 6;
const TOPICS: &[(&str, i32)] = &[("otlp_spans", PARTITIONS), ("otlp_spans_dlq", 1)];
const SPANS_PER_TRACE: u64 = 4;

/// An ingester member with the tests' timings and the default strategy and membership.
fn member(mock: &MockKafka, store: &str, admin: u16) -> Guard {
    member_with(mock, store, admin, &[])
}

/// A member as [`member`], then the `extra` settings. `$SPANLINE_INGESTER_BIN` runs another build
/// of the binary (a copy that a concurrent build into the same target directory cannot replace).
fn member_with(mock: &MockKafka, store: &str, admin: u16, extra: &[(&str, &str)]) -> Guard {
    let bin = std::env::var_os("SPANLINE_INGESTER_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_spanline-ingester")), PathBuf::from);
    process::ingester(&bin, mock.bootstrap(), store, admin, extra)
}

/// A sample of this member's metrics; `None` while it does not answer.
async fn metric(admin: u16, name: &str, labels: &str) -> Option<f64> {
    spanline_testkit::metric(format!("127.0.0.1:{admin}").parse().ok()?, name, labels).await.ok()
}

async fn assigned(admin: u16) -> Option<f64> {
    metric(admin, "spanline_ingester_assigned_partitions", "").await
}

/// Waits until the members at `admins` own every partition between them, each at least one.
async fn shared_by(admins: &[u16], what: &str) {
    let admins = admins.to_vec();
    wait_for(Duration::from_secs(60), || {
        let admins = admins.clone();
        async move {
            let mut total = 0.0;
            for admin in admins {
                let owned = assigned(admin).await?;
                if owned < 1.0 {
                    return None;
                }
                total += owned;
            }
            (total == f64::from(PARTITIONS)).then_some(())
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

/// Produces `chunks` chunks of `traces` traces (numbered from 1) every `pause`, so that batches are
/// open and bulks in flight whenever the group changes.
fn stream(bootstrap: &str, chunks: u64, traces: u64, pause: Duration) -> JoinHandle<()> {
    let bootstrap = bootstrap.to_owned();
    let start = fixtures::now_unix_nano();
    tokio::spawn(async move {
        for c in 0..chunks {
            let records = fixtures::trace_records("svc", 1 + c * traces, traces, SPANS_PER_TRACE, start);
            produce(&bootstrap, "otlp_spans", &records).await.expect("produced");
            tokio::time::sleep(pause).await;
        }
    })
}

/// Asserts the store holds exactly the spans of `traces` traces as `stream` writes them, each in
/// one document (`testkit::exactly_once`); returns the store's conflict count (spans written again
/// onto their existing document).
async fn assert_exactly_once(url: &str, traces: u64) -> u64 {
    let want = fixtures::span_keys(1, traces, SPANS_PER_TRACE);
    spanline_testkit::exactly_once(url, &want, Duration::from_secs(90)).await.expect("every span exactly once")
}

/// Sum of the group's committed offsets, once it reaches `records` (or what it is after 20 s).
async fn committed_reaches(mock: &MockKafka, records: u64) -> i64 {
    let want = i64::try_from(records).expect("fits");
    let read = |bootstrap: String| {
        tokio::task::spawn_blocking(move || {
            spanline_testkit::committed_sum(&bootstrap, "spanline-ingester", "otlp_spans", PARTITIONS)
        })
    };
    let bootstrap = mock.bootstrap().to_owned();
    let reached = wait_for(Duration::from_secs(20), || {
        let bootstrap = bootstrap.clone();
        async move { read(bootstrap).await.ok()?.ok().filter(|c| *c == want) }
    })
    .await;
    match reached {
        Ok(c) => c,
        Err(_) => read(bootstrap).await.expect("join").expect("committed offsets"),
    }
}

fn signal(child: &Guard, signal: &str) {
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill {signal}");
}

fn ingester_log(admin: u16) -> String {
    std::fs::read_to_string(std::env::temp_dir().join(format!("spanline-ingester-{admin}.log"))).unwrap_or_default()
}

async fn store() -> spanline_devstore::Running {
    // Slow bulks keep batches in flight while partitions change hands.
    devstore_with_faults(Faults { latency: Some(Duration::from_millis(20)), ..Faults::default() }).await.expect("store")
}

/// A SIGKILLed member never drains nor commits: its partitions stay with it until its session times
/// out, then the survivor resumes them from the last committed offsets. Records after those were
/// indexed by the dead member and are read again, so conflicts may be above 0; the documents are
/// still exactly the spans produced, because ids are deterministic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_member_s_partitions_go_to_the_survivor_after_its_session_and_nothing_is_lost() {
    let mock = MockKafka::start(TOPICS).expect("mock cluster");
    let store = store().await;
    let (admin_a, admin_b) = (free_port(), free_port());
    let mut a = member(&mock, &store.url(), admin_a);
    let b = member(&mock, &store.url(), admin_b);
    shared_by(&[admin_a, admin_b], "the group settles with partitions on both members").await;

    let (chunks, traces) = (40, 50);
    let producer = stream(mock.bootstrap(), chunks, traces, Duration::from_millis(300));
    let url = store.url();
    wait_for(Duration::from_secs(60), || {
        let url = url.clone();
        async move { (count(&url, "jaeger-span-*").await.ok()? > 1_500).then_some(()) }
    })
    .await
    .expect("progress before the kill");
    let consumed_by_a = metric(admin_a, "spanline_ingester_records_total", "").await.expect("a's metrics");
    assert!(consumed_by_a > 0.0, "the member about to die was consuming its share");
    assert!(!producer.is_finished(), "the kill lands under load");
    a.kill().expect("SIGKILL");
    a.wait().expect("reaped");
    let killed = Instant::now();
    wait_for(
        Duration::from_secs(60),
        || async move { (assigned(admin_b).await? == f64::from(PARTITIONS)).then_some(()) },
    )
    .await
    .expect("the survivor owns every partition");
    let took = killed.elapsed();
    eprintln!("the survivor owned every partition {took:?} after the SIGKILL");
    producer.await.expect("producer");

    let conflicts = assert_exactly_once(&store.url(), chunks * traces).await;
    eprintln!("spans re-read after the dead member's last commit (conflicts): {conflicts}");
    assert_eq!(committed_reaches(&mock, chunks * traces).await, i64::try_from(chunks * traces).expect("fits"));
    drop(b);
}

/// SIGKILL between a durable bulk and its offset commit loses and duplicates nothing. One member
/// at a time reads a topic of 30 000 spans (10 per record) into a store whose bulks take 500 ms,
/// and is SIGKILLed each time it has indexed 1 500 more spans, three times; each restart is a new
/// member (dynamic membership, as the mock has no static membership), which gets the partitions
/// once the dead one's session expires and resumes from the last committed offsets. Records
/// indexed after those are read again and written onto their own documents (deterministic ids):
/// store conflicts, never a second document. A kill that lands after a durable bulk but before
/// its commit shows as more spans in the store than the committed records hold; at least one of
/// the three must, or the test did not test what it says. (It ran on Tansu until 2026-12-01:
/// there a member restarted under its `group.instance.id` after a SIGKILL sometimes never got an
/// assignment; docs/development.md, "Tansu quirks seen here".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_bulk_and_commit_loses_and_duplicates_nothing() {
    let mock = MockKafka::start(TOPICS).expect("mock cluster");
    // Bulks of 200 spans that take 500 ms, two in flight per partition: at most 4 800 spans a
    // second, so a member is still busy when it is killed (on the mock an unthrottled one indexed
    // 15 600 of 20 000 spans before the first kill) and there is always a durable bulk that its
    // commit (every second) has not covered; and a bulk lasts half a commit interval, so an
    // ingester that committed offsets before their spans were durable would lose spans at most
    // kills.
    let store = devstore_with_faults(Faults { latency: Some(Duration::from_millis(500)), ..Faults::default() })
        .await
        .expect("store");
    let small_bulks =
        [("SPANLINE_INGESTER__BATCH__MAX_DOCS", "200"), ("SPANLINE_INGESTER__BATCH__MAX_INFLIGHT_BULKS", "2")];
    let (traces, spans) = (3_000_u64, 10_u64);
    let total = traces * spans;
    produce(
        mock.bootstrap(),
        "otlp_spans",
        &fixtures::trace_records("svc", 1, traces, spans, fixtures::now_unix_nano()),
    )
    .await
    .expect("produced");
    let url = store.url();
    let committed_records = || {
        let bootstrap = mock.bootstrap().to_owned();
        async move {
            tokio::task::spawn_blocking(move || {
                spanline_testkit::committed_sum(&bootstrap, "spanline-ingester", "otlp_spans", PARTITIONS)
            })
            .await
            .expect("join")
            .expect("committed offsets")
        }
    };
    let mut in_window = 0;
    for round in 0..3 {
        let admin = free_port();
        let mut child = member_with(&mock, &url, admin, &small_bulks);
        wait_for(
            Duration::from_secs(60),
            || async move { (assigned(admin).await? == f64::from(PARTITIONS)).then_some(()) },
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: the restarted member owns every partition"));
        let floor = count(&url, "jaeger-span-*").await.unwrap_or(0);
        // Killed once it wrote 1 500 more spans, or everything there is, or once it committed every
        // record (an ingester that lost spans never writes them all: the check below says which).
        let target = (floor + 1_500).min(total);
        wait_for(Duration::from_secs(60), || {
            let url = url.clone();
            async move {
                let written = count(&url, "jaeger-span-*").await.ok()? >= target;
                (written || committed_records().await == i64::try_from(traces).ok()?).then_some(())
            }
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: no progress"));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        // The dead member commits nothing more; whatever the store holds beyond its commits was
        // durable and uncommitted at the kill.
        let committed = u64::try_from(committed_records().await).expect("offsets are not negative") * spans;
        let indexed = count(&url, "jaeger-span-*").await.expect("count");
        eprintln!("round {round}: killed with {indexed} spans indexed, {committed} committed");
        if indexed > committed {
            in_window += 1;
        }
    }
    let last = member_with(&mock, &url, free_port(), &small_bulks);
    // After three SIGKILLs every span is indexed, in exactly one document, and every offset
    // committed.
    let want = fixtures::span_keys(1, traces, spans);
    assert_eq!(want.len() as u64, total);
    let conflicts =
        spanline_testkit::exactly_once(&url, &want, Duration::from_secs(90)).await.expect("every span exactly once");
    eprintln!("spans written again after the SIGKILLs (conflicts): {conflicts}, kills in the window: {in_window}");
    assert!(in_window > 0, "no SIGKILL landed between a durable bulk and its commit");
    assert_eq!(committed_reaches(&mock, traces).await, i64::try_from(traces).expect("fits"));
    drop(last);
}

/// Joins and leaves under load (b joins a, a leaves on SIGTERM, c joins b), batches flushed every
/// 2 s so that a revoke almost always finds an open batch that the drain must flush, write and
/// commit. Returns the store's conflicts and whether any member logged a refused commit.
async fn join_leave_join() -> (u64, bool) {
    let mock = MockKafka::start(TOPICS).expect("mock cluster");
    let store = store().await;
    let (admin_a, admin_b, admin_c) = (free_port(), free_port(), free_port());
    let slow_flush = [("SPANLINE_INGESTER__BATCH__FLUSH_INTERVAL", "2s")];
    let member = |mock: &MockKafka, store: &str, admin: u16| member_with(mock, store, admin, &slow_flush);
    let a = member(&mock, &store.url(), admin_a);
    shared_by(&[admin_a], "the first member owns every partition").await;

    let (chunks, traces) = (60, 30);
    let producer = stream(mock.bootstrap(), chunks, traces, Duration::from_millis(500));
    let url = store.url();
    let progress = |n: u64| {
        let url = url.clone();
        wait_for(Duration::from_secs(60), move || {
            let url = url.clone();
            async move { (count(&url, "jaeger-span-*").await.ok()? > n).then_some(()) }
        })
    };
    // Drained, whether or not the broker then took the final commit (the mock refuses it while the
    // group joins: `drain_uncommitted`).
    let drained = |admin: u16| async move {
        let mut n = 0.0;
        for event in ["event=\"drained\"", "event=\"drain_uncommitted\""] {
            n += metric(admin, "spanline_ingester_rebalance_events_total", event).await.unwrap_or(0.0);
        }
        n
    };
    progress(400).await.expect("progress before the first join");
    let b = member(&mock, &store.url(), admin_b);
    shared_by(&[admin_a, admin_b], "the second member joins").await;
    assert!(!producer.is_finished(), "the join happened under load");
    assert!(drained(admin_a).await > 0.0, "the first member drained what it gave up");

    signal(&a, "-TERM");
    let exit = tokio::task::spawn_blocking(move || {
        let mut a = a;
        let status = a.wait();
        drop(a);
        status
    })
    .await
    .expect("joined")
    .expect("exit status");
    assert!(exit.success(), "a graceful leave exits 0: {exit:?}");
    shared_by(&[admin_b], "the leaver's partitions go to the other member").await;
    assert!(!producer.is_finished(), "the leave happened under load");

    let before = drained(admin_b).await;
    let c = member(&mock, &store.url(), admin_c);
    shared_by(&[admin_b, admin_c], "a third member joins").await;
    assert!(!producer.is_finished(), "the second join happened under load");
    assert!(drained(admin_b).await > before, "the second member drained what it gave up");
    producer.await.expect("producer");

    let conflicts = assert_exactly_once(&store.url(), chunks * traces).await;
    assert_eq!(committed_reaches(&mock, chunks * traces).await, i64::try_from(chunks * traces).expect("fits"));
    for admin in [admin_b, admin_c] {
        let timeouts = metric(admin, "spanline_ingester_rebalance_events_total", "event=\"drain_timeout\"").await;
        assert_eq!(timeouts, Some(0.0), "no drain ran out of time");
    }
    drop((b, c));
    let refused = [admin_a, admin_b, admin_c].iter().any(|admin| ingester_log(*admin).contains("offset commit failed"));
    eprintln!("conflicts: {conflicts}; a drain commit refused: {refused}");
    (conflicts, refused)
}

/// Graceful joins and leaves under load with `cooperative-sticky`: every partition that moves is
/// drained (flushed, bulked, committed) before its new owner reads it, and every span is in exactly
/// one document. A drained handover re-reads nothing, so store conflicts are allowed only where a
/// drain's commit was refused (the mock refuses commits while the group is joining or syncing; see
/// the ignored test below): conflicts with no refused commit mean a drain that wrote without
/// committing, or no drain at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_under_load_hand_partitions_over_drained() {
    let (conflicts, refused) = join_leave_join().await;
    assert!(conflicts == 0 || refused, "{conflicts} spans written twice with every drain committed");
}

/// The claim in full: clean handovers re-read nothing, so the store's conflicts are 0. Fails on the
/// mock cluster in most runs (seen: 820 conflicts): a member that gives partitions up drains them,
/// but its synchronous commit is refused with `REBALANCE_IN_PROGRESS` because the joining member
/// has already rejoined (the mock refuses commits while the group is joining; Kafka accepts them
/// from a current member while a rebalance is being prepared), so the new owner re-reads from the
/// last background commit. The ingester says so (`rebalance_events{event="drain_uncommitted"}` and
/// a warning naming the partitions) and nothing is indexed twice; the re-read itself is the mock's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the mock cluster refuses a draining member's commit while the group joins (Kafka accepts it): run by hand against a real broker"]
async fn members_joining_and_leaving_under_load_re_read_nothing() {
    let (conflicts, refused) = join_leave_join().await;
    assert!(!refused, "a drain's commit was refused");
    assert_eq!(conflicts, 0, "a drained handover re-reads nothing");
}

/// A member frozen past its session (SIGSTOP) is expired by the coordinator and its partitions go to
/// the other member. When it runs again librdkafka reports the assignment lost: its workers are
/// fenced at once, without a flush or a commit (another member owns the partitions), and it
/// rejoins. Records after its last commit are read again by the other member, so conflicts may be
/// above 0; the documents are exactly the spans produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_session_expires_loses_its_assignment_without_committing() {
    let mock = MockKafka::start(TOPICS).expect("mock cluster");
    let store = store().await;
    let (admin_a, admin_b) = (free_port(), free_port());
    let a = member(&mock, &store.url(), admin_a);
    let b = member(&mock, &store.url(), admin_b);
    shared_by(&[admin_a, admin_b], "the group settles with partitions on both members").await;

    let (chunks, traces) = (50, 40);
    let producer = stream(mock.bootstrap(), chunks, traces, Duration::from_millis(400));
    let url = store.url();
    wait_for(Duration::from_secs(60), || {
        let url = url.clone();
        async move { (count(&url, "jaeger-span-*").await.ok()? > 1_500).then_some(()) }
    })
    .await
    .expect("progress before the freeze");
    let lost_before = metric(admin_a, "spanline_ingester_rebalance_events_total", "event=\"lost\"").await;
    assert_eq!(lost_before, Some(0.0));

    signal(&a, "-STOP");
    let frozen = Instant::now();
    let took_over = wait_for(Duration::from_secs(60), || async move {
        (assigned(admin_b).await? == f64::from(PARTITIONS)).then_some(())
    })
    .await;
    // Thawed even when the assertion below fails, so the guard can reap it.
    let frozen_for = frozen.elapsed();
    signal(&a, "-CONT");
    took_over.expect("the other member owns every partition once the frozen one's session expired");
    eprintln!("frozen {frozen_for:?} until the other member owned every partition");
    assert!(!producer.is_finished(), "the session expired under load");

    let lost = wait_for(Duration::from_secs(30), || async move {
        metric(admin_a, "spanline_ingester_rebalance_events_total", "event=\"lost\"").await.filter(|l| *l > 0.0)
    })
    .await
    .expect("the thawed member reports its assignment lost");
    eprintln!("partitions reported lost: {lost}");
    shared_by(&[admin_a, admin_b], "the thawed member rejoins and gets partitions again").await;
    producer.await.expect("producer");

    let conflicts = assert_exactly_once(&store.url(), chunks * traces).await;
    eprintln!("spans re-read after the frozen member's last commit (conflicts): {conflicts}");
    assert_eq!(committed_reaches(&mock, chunks * traces).await, i64::try_from(chunks * traces).expect("fits"));
    let log = ingester_log(admin_a);
    assert!(log.contains("assignment lost"), "the lost path ran:\n{log}");
    // A drain on the lost path would commit through the fence, which the coordinator refuses for
    // a generation that is gone.
    assert!(!log.contains("offset commit failed"), "a lost partition was committed:\n{log}");
    drop((a, b));
}

/// The offset arithmetic on a broker that keeps offsets (librdkafka's mock cluster, in process):
/// `Fence::store(last)` stores the next offset to read, `last + 1`, which the background commit
/// sends; `Fence::commit(last)` commits `last + 1` itself; a closed fence changes nothing.
#[test]
fn a_fence_stores_and_commits_the_offset_after_the_last_durable_record() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("t", 2, 1).expect("topic");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "fence")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("t", 0, Offset::Beginning).expect("tpl");
    tpl.add_partition_offset("t", 1, Offset::Beginning).expect("tpl");
    consumer.assign(&tpl).expect("assigned");
    let committed = |consumer: &BaseConsumer| -> (Offset, Offset) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("t", 0);
        tpl.add_partition("t", 1);
        let c = consumer.committed_offsets(tpl, Duration::from_secs(5)).expect("committed offsets");
        let at = |p| c.find_partition("t", p).map(|e| e.offset()).expect("partition");
        (at(0), at(1))
    };

    let fence = Fence::new("t", 0);
    // `assign` takes effect on librdkafka's main thread: until then the store is refused (`State`).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fence.store(&consumer, 41) {
        assert!(Instant::now() < deadline, "the assigned partition never took a stored offset");
        let _ = consumer.poll(Duration::from_millis(100));
    }
    consumer.commit_consumer_state(CommitMode::Sync).expect("stored offsets committed");
    assert_eq!(committed(&consumer), (Offset::Offset(42), Offset::Invalid), "store(41) commits 42, the next to read");

    assert!(fence.commit(&consumer, 99), "committed");
    assert_eq!(committed(&consumer), (Offset::Offset(100), Offset::Invalid), "commit(99) commits 100");

    fence.close();
    assert!(!fence.store(&consumer, 199));
    assert!(!fence.commit(&consumer, 199));
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    assert_eq!(committed(&consumer), (Offset::Offset(100), Offset::Invalid), "a closed fence moves nothing");
}
