//! The dead-letter path against a real broker (Tansu, SQLite) and the dev store: a dead-letter
//! topic that cannot be written holds the partition visibly (readiness, a metric by class, a log
//! line naming the cause) until it can; an envelope refused as too large goes again without its
//! payload (its SHA-256 kept); a re-driven span that fails again keeps its original coordinates.
//!
//! Tansu 0.6 facts these tests rest on (probed with librdkafka 2.12): it never creates a topic on
//! a produce or metadata request, and answers metadata for a missing one with
//! `UNKNOWN_TOPIC_OR_PART`; librdkafka keeps a record for an unknown topic queued and reports
//! `MessageTimedOut` after `message.timeout.ms`. It enforces no record size at all (a 12 MB record
//! is accepted whatever `max.message.bytes` says), so the "too large" refusal is librdkafka's own
//! `message.max.bytes` check, which answers with the same error code a broker does.

mod common;

use std::time::Duration;

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use spanline_devstore::{Faults, RejectRule};
use spanline_ingester::replay::{self, Bound, ReplayArgs};
use spanline_proto::{DeadLetter, PayloadKind, Stage};
use spanline_testkit::{
    Broker, committed_sum, devstore_with_faults, fixtures, metric, produce, read_at_least, read_topic, settled_count,
    span_conflicts, wait_for,
};
use tokio_util::sync::CancellationToken;

/// Every log line of this test binary.
fn logs() {
    spanline_testkit::logs::capture(tracing::Level::INFO);
}

fn log_lines(containing: &[&str]) -> Vec<String> {
    spanline_testkit::logs::lines(containing)
}

async fn ready(admin: std::net::SocketAddr) -> bool {
    reqwest::get(format!("http://{admin}/health/ready")).await.is_ok_and(|r| r.status().is_success())
}

fn committed(bootstrap: &str, topic: &str) -> i64 {
    committed_sum(bootstrap, "spanline-ingester", topic, 1).expect("committed offsets")
}

/// Good records around one poison record (not protobuf), on one partition: (records, poison's offset).
fn records_around(poison: Vec<u8>) -> (Vec<(String, Vec<u8>)>, i64) {
    let mut records = fixtures::trace_records("svc", 1, 20, 3, fixtures::now_unix_nano());
    records.insert(8, ("poison".into(), poison));
    (records, 8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_topic_holds_the_partition_visibly_until_it_is_created() {
    logs();
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", 1).await.expect("topic");
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let (records, poison) = records_around(b"not protobuf at all".to_vec());
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");

    let mut c = common::config(&broker, &store.url());
    c.kafka.dead_letter.topic = "missing_dlq".into();
    c.kafka.dead_letter.message_timeout = Duration::from_secs(2);
    c.batch.flush_interval = Duration::from_millis(200);
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    let admin = ingester.admin_addr;

    // The poison record cannot be dead-lettered: the partition holds, and says so.
    let stalled =
        || async move { metric(admin, "spanline_ingester_stalled", "cause=\"dead_letter_failing\"").await.ok() };
    wait_for(Duration::from_secs(30), || async { (stalled().await? == 1.0).then_some(()) })
        .await
        .expect("the stall is shown");
    assert!(!ready(admin).await, "not ready while dead letters cannot be written");
    let failures = metric(admin, "spanline_ingester_dead_letter_failures_total", "class=\"unknown_topic\"")
        .await
        .expect("metrics");
    assert!(failures > 0.0, "failures counted by class");
    let lines = log_lines(&["dead-letter topic cannot be written", "missing_dlq"]);
    assert!(!lines.is_empty(), "an error names the topic");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("ERROR") && l.contains("unknown_topic") && l.contains("create the dead-letter topic")),
        "with the cause and what to fix: {lines:?}"
    );
    // Several retries within the log interval make one line, not one per retry.
    wait_for(Duration::from_secs(20), || async {
        (metric(admin, "spanline_ingester_dead_letter_failures_total", "").await.ok()? >= 3.0).then_some(())
    })
    .await
    .expect("retries go on");
    assert_eq!(log_lines(&["dead-letter topic cannot be written", "missing_dlq"]).len(), 1, "logged once per interval");
    tokio::time::sleep(Duration::from_millis(1_500)).await; // past an auto-commit
    let bootstrap = broker.bootstrap();
    let held = tokio::task::spawn_blocking(move || committed(&bootstrap, "otlp_spans")).await.expect("join");
    assert!(held <= poison, "the committed offset ({held}) does not pass the poison record ({poison})");

    // The topic is created: the letter is written once, readiness returns, the partition moves.
    broker.create_topic("missing_dlq", 1).await.expect("dead-letter topic");
    wait_for(Duration::from_secs(60), || async { (stalled().await? == 0.0 && ready(admin).await).then_some(()) })
        .await
        .expect("ready again once the letter is written");
    assert_eq!(settled_count(&store.url(), "jaeger-span-*", 60, Duration::from_secs(60)).await, 60, "every good span");
    assert_eq!(span_conflicts(&store.url()).await.expect("stats"), 0, "each indexed once");
    let letters = read_at_least(&broker.bootstrap(), "missing_dlq", 1).await.expect("the letter");
    assert_eq!(letters.len(), 1, "written once");
    let letter = DeadLetter::decode(letters[0].payload.as_slice()).expect("envelope");
    assert_eq!((letter.stage(), letter.source_offset), (Stage::Decode, poison));
    assert_eq!(letter.payload, b"not protobuf at all");
    assert_eq!(log_lines(&["dead-letter topic written again", "missing_dlq"]).len(), 1);
    committed_reaches(&broker.bootstrap(), records.len()).await.expect("the partition committed past every record");
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_refused_as_too_large_is_written_without_its_payload_and_the_partition_moves() {
    logs();
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", 1).await.expect("topic");
    broker.create_topic("otlp_spans_dlq", 1).await.expect("dead-letter topic");
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    // 50 000 bytes that are not protobuf: under limits.max_record_bytes (dead-lettered whole, with
    // its payload, as the envelope fits limits.max_dead_letter_bytes), over what the topic takes.
    let poison_bytes = vec![0xff_u8; 50_000];
    let (records, poison) = records_around(poison_bytes.clone());
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");

    let mut c = common::config(&broker, &store.url());
    c.batch.flush_interval = Duration::from_millis(200);
    // A topic whose max.message.bytes is below limits.max_dead_letter_bytes cannot be seen at start;
    // librdkafka's own limit stands in for it (set after validation, which refuses it).
    c.kafka.dead_letter.librdkafka.insert("message.max.bytes".into(), "20000".into());
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    let admin = ingester.admin_addr;

    assert_eq!(settled_count(&store.url(), "jaeger-span-*", 60, Duration::from_secs(60)).await, 60, "every good span");
    assert_eq!(span_conflicts(&store.url()).await.expect("stats"), 0, "each indexed once");
    let letters = read_at_least(&broker.bootstrap(), "otlp_spans_dlq", 1).await.expect("the letter");
    assert_eq!(letters.len(), 1, "written once");
    let letter = DeadLetter::decode(letters[0].payload.as_slice()).expect("envelope");
    assert!(letter.payload.is_empty(), "without its payload");
    assert_eq!(letter.payload_kind(), PayloadKind::Unspecified);
    assert_eq!(
        (letter.stage(), letter.source_topic.as_str(), letter.source_offset),
        (Stage::Decode, "otlp_spans", poison)
    );
    assert_eq!(letter.omitted_payload_bytes, 50_000);
    assert_eq!(letter.omitted_payload_sha256, Sha256::digest(&poison_bytes).to_vec(), "the record's digest");
    assert!(letter.reason.contains("refused the envelope"), "{}", letter.reason);
    assert_eq!(letters[0].key.as_deref(), Some(&b"poison"[..]), "keyed like the source");
    committed_reaches(&broker.bootstrap(), records.len()).await.expect("the partition moved past the poison record");
    let too_large = metric(admin, "spanline_ingester_dead_letter_failures_total", "class=\"too_large\"").await;
    assert_eq!(too_large.expect("metrics"), 1.0, "one refusal, then written");
    assert_eq!(metric(admin, "spanline_ingester_dead_letter_payloads_left_out_total", "").await.expect("metrics"), 1.0);
    assert_eq!(
        metric(admin, "spanline_ingester_stalled", "cause=\"dead_letter_failing\"").await.expect("metrics"),
        0.0,
        "a refusal handled at once is no stall"
    );
    assert!(ready(admin).await);
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_driven_spans_that_fail_again_keep_their_original_coordinates() {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", 2).await.expect("topic");
    broker.create_topic("otlp_spans_dlq", 2).await.expect("dead-letter topic");
    let store = devstore_with_faults(Faults {
        reject: Some(RejectRule { field: "operationName".into(), contains: "operation-2".into() }),
        ..Faults::default()
    })
    .await
    .expect("store");
    // 30 traces of 3 spans (span 2 of each refused by the store) and one record that is not protobuf.
    let mut records = fixtures::trace_records("svc", 1, 30, 3, fixtures::now_unix_nano());
    records.push(("garbage".into(), b"not protobuf".to_vec()));
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");
    let mut c = common::config(&broker, &store.url());
    c.batch.flush_interval = Duration::from_millis(200);
    let shutdown = CancellationToken::new();
    let live = spanline_ingester::start(c.clone(), shutdown.clone()).await.expect("starts");
    assert_eq!(settled_count(&store.url(), "jaeger-span-*", 60, Duration::from_secs(60)).await, 60);
    let first = read_at_least(&broker.bootstrap(), "otlp_spans_dlq", 31).await.expect("letters");
    assert_eq!(first.len(), 31);
    shutdown.cancel();
    live.task.await.expect("join").expect("clean stop");

    // Re-driven before the fault is fixed: every span fails again, and the garbage stays garbage.
    let redrive = ReplayArgs { dead_letters: true, ..ReplayArgs::window(Bound::Earliest, Bound::Latest) };
    let summary = replay::run(c, redrive, CancellationToken::new()).await.expect("replay runs");
    assert_eq!((summary.records, summary.indexed, summary.dead_lettered), (31, 0, 31), "{summary}");

    let all = read_topic(&broker.bootstrap(), "otlp_spans_dlq").await.expect("letters");
    assert_eq!(all.len(), 62, "the 31 letters and their 31 successors");
    let decoded = |r: &spanline_testkit::ReadRecord| DeadLetter::decode(r.payload.as_slice()).expect("envelope");
    let mut seen = Vec::new();
    for record in &all {
        let letter = decoded(record);
        assert_eq!(letter.source_topic, "otlp_spans", "every letter names the original topic");
        if letter.redrives == 0 {
            assert!(letter.redriven_topic.is_empty());
            continue;
        }
        assert_eq!(letter.redrives, 1);
        assert_eq!(letter.redriven_topic, "otlp_spans_dlq");
        // The re-driven record is one of the first letters, which names the same original record.
        let from = all
            .iter()
            .find(|r| r.partition == letter.redriven_partition && r.offset == letter.redriven_offset)
            .expect("the re-driven record exists");
        let original = decoded(from);
        assert_eq!(original.redrives, 0);
        assert_eq!(
            (letter.source_partition, letter.source_offset, letter.stage()),
            (original.source_partition, original.source_offset, original.stage()),
            "the original coordinates, not the dead-letter record's"
        );
        seen.push((letter.source_partition, letter.source_offset, letter.stage()));
    }
    seen.sort_by_key(|(p, o, s)| (*p, *o, *s as i32));
    seen.dedup();
    assert_eq!(seen.len(), 31, "each original letter re-driven once");
    assert_eq!(seen.iter().filter(|(_, _, s)| *s == Stage::Decode).count(), 1, "the garbage record too");
}

/// Waits until the group's committed offset on `otlp_spans` is `records` (every record passed).
async fn committed_reaches(bootstrap: &str, records: usize) -> anyhow::Result<()> {
    let end = i64::try_from(records)?;
    let bootstrap = bootstrap.to_owned();
    wait_for(Duration::from_secs(30), || {
        let bootstrap = bootstrap.clone();
        async move {
            let at = tokio::task::spawn_blocking(move || committed(&bootstrap, "otlp_spans")).await.ok()?;
            (at == end).then_some(())
        }
    })
    .await
}
