//! Document ids and indices are defined by the record itself (docs/ingester.md, "Document ids and
//! indices"), against a real broker (Tansu, SQLite) and the dev store: records whose Kafka timestamp
//! is days old are judged as they were when produced, so a replay backfills them into their own
//! days, and reading a record again — live, then replayed — lands on the same documents.
//!
//! Tansu keeps the producer's timestamp (`CreateTime`) and finds records by it (offsets-for-times),
//! which the first test checks before relying on it.

mod common;

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;
use chrono::Utc;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rdkafka::{
    ClientConfig, Message as _, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    producer::{FutureProducer, FutureRecord},
};
use spanline_devstore::Faults;
use spanline_ingester::{
    config::OutOfRange,
    document::{DocKind, DocumentLimits, IndexNames, Mapped, RecordTime, Routing, TraceIds, map_request},
    replay::{self, Bound, ReplayArgs, Summary},
};
use spanline_testkit::{Broker, count, devstore_with_faults, documents, fixtures, read_topic, settled_count};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 3;
const DAY_MS: i64 = 86_400_000;

async fn broker() -> Broker {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", PARTITIONS).await.expect("topic");
    broker.create_topic("otlp_spans_dlq", PARTITIONS).await.expect("dlq topic");
    broker
}

/// Produces `records` (key, value) to `topic` with the Kafka timestamp `timestamp_ms`, as a
/// producer that stamped them then would have, and waits for every delivery report.
async fn produce_at(bootstrap: &str, topic: &str, records: &[(String, Vec<u8>)], timestamp_ms: i64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut deliveries = Vec::with_capacity(records.len());
    for (key, value) in records {
        let record = FutureRecord::to(topic).key(key.as_str()).payload(value.as_slice()).timestamp(timestamp_ms);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).expect("enqueued"));
    }
    for delivery in deliveries {
        delivery.await.expect("delivery report").map_err(|(e, _)| e).expect("delivered");
    }
}

/// The Kafka timestamps of every record of `topic`, as a consumer reads them back.
async fn timestamps(bootstrap: &str, topic: &str) -> Vec<Option<i64>> {
    let records = read_topic(bootstrap, topic).await.expect("read");
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Option<i64>>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "stable-ids-timestamps")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while out.len() < records.len() {
            anyhow::ensure!(std::time::Instant::now() < deadline, "read {} of {} records", out.len(), records.len());
            if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                out.push(message.context("poll")?.timestamp().to_millis());
            }
        }
        Ok(out)
    })
    .await
    .expect("join")
    .expect("timestamps")
}

fn args(from: Bound, to: Bound) -> ReplayArgs {
    ReplayArgs::window(from, to)
}

async fn replay(config: &spanline_ingester::Config, args: ReplayArgs) -> Summary {
    replay::run(config.clone(), args, CancellationToken::new()).await.expect("replay runs")
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn nanos(ms: i64) -> u64 {
    u64::try_from(ms).expect("after 1970") * 1_000_000
}

/// `jaeger-span-YYYY-MM-DD` of a time in ms.
fn span_index(ms: i64) -> String {
    IndexNames::new("").daily(DocKind::Span, ms * 1_000)
}

/// How many spans of `records` start on each day, by span index name.
fn spans_per_index(records: &[(String, Vec<u8>)]) -> BTreeMap<String, u64> {
    let mut days = BTreeMap::new();
    for (_, value) in records {
        let request = ExportTraceServiceRequest::decode(value.as_slice()).expect("fixture decodes");
        for span in request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
            let ms = i64::try_from(span.start_time_unix_nano / 1_000_000).expect("fits");
            *days.entry(span_index(ms)).or_insert(0) += 1;
        }
    }
    days
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_four_days_back_indexes_every_span_in_its_own_day_once_with_the_default_max_span_age() {
    let broker = broker().await;
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let bootstrap = broker.bootstrap();
    let now = now_ms();
    // Two batches of old records, each produced when its spans ran: five and four days ago, both
    // past the default 72 h `max_span_age` from now. Then records of today, outside the window.
    let (five, four) = (now - 5 * DAY_MS, now - 4 * DAY_MS);
    let older = fixtures::trace_records("backfill", 1, 40, 3, nanos(five));
    let old = fixtures::trace_records("backfill", 1_000, 50, 4, nanos(four));
    let today = fixtures::trace_records("today", 2_000, 30, 2, nanos(now));
    produce_at(&bootstrap, "otlp_spans", &older, five).await;
    produce_at(&bootstrap, "otlp_spans", &old, four).await;
    produce_at(&bootstrap, "otlp_spans", &today, now).await;

    // The broker keeps the producer's timestamps (else nothing below means anything).
    let mut stamps = timestamps(&bootstrap, "otlp_spans").await;
    stamps.sort_unstable();
    stamps.dedup();
    assert_eq!(stamps, vec![Some(five), Some(four), Some(now)], "Tansu keeps CreateTime");

    let c = common::config(&broker, &store.url());
    assert_eq!(c.opensearch.max_span_age, Duration::from_secs(72 * 3600), "the default");
    assert_eq!(c.opensearch.out_of_range, OutOfRange::DeadLetter, "the default: nothing is clamped");
    let summary = replay(&c, args(Bound::Time(five - 60_000), Bound::Time(four + 60_000))).await;
    let spans = 40 * 3 + 50 * 4;
    assert_eq!((summary.records, summary.spans), (90, spans), "exactly the window's records: {summary}");
    assert_eq!((summary.indexed, summary.dead_lettered), (spans, 0), "{summary}");
    assert!(!summary.interrupted);

    assert_eq!(settled_count(&store.url(), "jaeger-span-*", spans, Duration::from_secs(60)).await, spans);
    let mut want = spans_per_index(&older);
    want.extend(spans_per_index(&old));
    assert!(want.len() >= 2, "two days at least: {want:?}");
    for (index, n) in &want {
        assert_eq!(count(&store.url(), index).await.expect("count"), *n, "{index} holds its own day's spans");
    }
    assert_eq!(spanline_testkit::span_conflicts(&store.url()).await.expect("stats"), 0, "each span written once");
    assert!(read_topic(&bootstrap, "otlp_spans_dlq").await.expect("dlq").is_empty(), "nothing dead-lettered");
}

/// The documents (index, id) a record's spans get when mapped as the worker does, read at `now_ms`
/// with `routing`.
fn expected(records: &[(String, Vec<u8>)], timestamp_ms: i64, now_ms: i64, routing: &Routing) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut mapped = Mapped::default();
    for (_, value) in records {
        let request = ExportTraceServiceRequest::decode(value.as_slice()).expect("decodes");
        let at = RecordTime::of(Some(timestamp_ms), now_ms * 1_000, routing);
        map_request(&request, value, routing, DocumentLimits::UNBOUNDED, at, &mut mapped);
        assert!(mapped.refused.is_empty());
        out.extend(
            mapped
                .docs
                .drain(..)
                .filter(|d| d.kind == DocKind::Span)
                .map(|d| (d.index().to_owned(), d.id().to_owned())),
        );
    }
    out.sort();
    out
}

/// Every span document in the store as (index, id), over `indices`.
async fn stored(url: &str, indices: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for index in indices {
        out.extend(documents(url, index).await.expect("documents").into_iter().map(|(id, _)| (index.clone(), id)));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_read_live_and_replayed_days_after_it_was_produced_lands_on_the_same_documents() {
    let broker = broker().await;
    let store = devstore_with_faults(Faults::default()).await.expect("store");
    let bootstrap = broker.bootstrap();
    let now = now_ms();
    // Produced four days ago, by a service whose clock was five days behind: every span is out of
    // the window around its record and is clamped to that window's oldest day, 72 h before the
    // record (7 days ago) — not 72 h before whenever it happens to be read.
    let produced = now - 4 * DAY_MS;
    let records = fixtures::trace_records("late", 1, 60, 3, nanos(produced - 5 * DAY_MS));
    produce_at(&bootstrap, "otlp_spans", &records, produced).await;
    let spans = 60 * 3;

    let mut c = common::config(&broker, &store.url());
    c.opensearch.out_of_range = OutOfRange::Clamp;
    let routing = Routing {
        names: IndexNames::new(""),
        max_age_micros: 72 * 3_600_000_000,
        max_skew_micros: 3_600_000_000,
        clamp: true,
        trace_ids: TraceIds::Jaeger,
    };
    // What mapping the records when they were produced gives: the documents they must land on.
    let want = expected(&records, produced, produced, &routing);
    let clamped = span_index(produced - 3 * DAY_MS);
    assert!(want.iter().all(|(index, _)| *index == clamped), "{want:?}");
    assert_ne!(clamped, span_index(now - 3 * DAY_MS), "what judging against the ingestion time would give");

    let shutdown = CancellationToken::new();
    let live = spanline_ingester::start(c.clone(), shutdown.clone()).await.expect("starts");
    assert_eq!(settled_count(&store.url(), "jaeger-span-*", spans, Duration::from_secs(60)).await, spans);
    shutdown.cancel();
    live.task.await.expect("join").expect("clean stop");
    let in_clamped = count(&store.url(), &clamped).await.unwrap_or(0);
    assert_eq!(in_clamped, spans, "every span in {clamped}, the oldest day of the window around its record");
    let indices = [clamped.clone()];
    let live_docs = stored(&store.url(), &indices).await;
    assert_eq!(live_docs, want, "live ingestion four days later: the documents of the day it was produced");

    // Replayed (as an operator would, a day or a version later): the same index, the same ids.
    let summary = replay(&c, args(Bound::Earliest, Bound::Latest)).await;
    assert_eq!((summary.records, summary.spans, summary.indexed, summary.dead_lettered), (60, spans, spans, 0));
    assert_eq!(count(&store.url(), "jaeger-span-*").await.expect("count"), spans, "no new document");
    assert_eq!(
        spanline_testkit::span_conflicts(&store.url()).await.expect("stats"),
        spans,
        "each span offered once more and found present"
    );
    assert_eq!(stored(&store.url(), &indices).await, want);
}
