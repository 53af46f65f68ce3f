//! The worker's side of the dependency links ([`crate::dependencies`]): a partition's records → its
//! tracker → one document per final window, written in the batch of the record that made the window
//! final, so it is durable before that record's offset is committed.
//!
//! After an assignment (a start, a restart, a rebalance, a replay) the first record received is the
//! committed offset `R`. Before indexing anything the worker re-reads the partition from the
//! tracker's rewind point (derived from record `R − 1`'s timestamp, found with ListOffsets by
//! timestamp), feeding records below `R` to the tracker only, so every window that was not final
//! when `R − 1` was read is counted again whole and its document replaced ([`Links::rewind`]). A
//! partition with nothing to read writes on its own the windows the wall clock (`lateness` behind)
//! has passed, with the counts they will have ([`Links::idle`]); those windows were not final at its
//! last committed record, so a later rewind counts them again too.

use std::{sync::Arc, time::Duration};

use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{Consumer as _, ConsumerContext, StreamConsumer, stream_consumer::StreamPartitionQueue},
};
use tokio_util::sync::CancellationToken;

use crate::{
    batch::Item,
    config::Encoding,
    dependencies::{Bounds, Rewind, Stats, Tracker, WindowCounts},
    document::{DocKind, IndexNames, dependency_document, span_facts},
    metrics::Metrics,
    worker::{Shared, decode, decoded_cost},
};

/// Seeks, watermarks and ListOffsets during a rewind.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the queue stands after a re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reread {
    /// The queue delivers record `R` next: the caller drops the copy it holds.
    Redeliver,
    /// The queue is past `R` (nothing was re-read, or the re-read took `R`): the caller indexes
    /// its copy, and drops whatever the queue delivers below `resume`.
    KeepCopy,
}

/// One partition's tracker and what it still has to write.
pub(crate) struct Links {
    tracker: Tracker,
    bounds: Bounds,
    topic: String,
    partition: i32,
    names: IndexNames,
    /// Records below this offset were indexed before this assignment: counted, not indexed.
    pub resume: i64,
    /// The rewind is done (or was not needed).
    pub primed: bool,
    /// Final windows not yet handed to a batch.
    pending: Vec<WindowCounts>,
    /// What was last reported to the metrics.
    reported: Stats,
    held: i64,
    /// Windows an idle partition finished, being written.
    idle_writes: Vec<tokio::task::JoinHandle<()>>,
    /// A bounded replay: its clock never follows the wall clock (the windows its end cuts short
    /// are not final, whatever the time).
    bounded: bool,
}

impl Drop for Links {
    fn drop(&mut self) {
        for task in &self.idle_writes {
            task.abort();
        }
    }
}

impl Links {
    pub fn new(bounds: Bounds, shared: &Shared, partition: i32, bounded: bool) -> Self {
        Self {
            tracker: Tracker::new(bounds, i64::MIN),
            bounds,
            topic: shared.topic.clone(),
            partition,
            names: shared.routing.names.clone(),
            resume: i64::MIN,
            primed: false,
            pending: Vec::new(),
            reported: Stats::default(),
            held: 0,
            idle_writes: Vec::new(),
            bounded,
        }
    }

    /// Feeds one record (`value` as consumed, at Kafka time `ts_ms`) to the tracker. A record the
    /// mapping would not decode (over `limits.max_record_bytes`, or priced over
    /// `limits.max_record_decoded_bytes`) only moves the clock.
    pub fn record(&mut self, shared: &Shared, ts_ms: i64, value: &[u8]) {
        self.tracker.record(ts_ms);
        let limits = &shared.record_limits;
        if value.len() > limits.max_record_bytes
            || decoded_cost(shared.encoding, value).is_some_and(|cost| cost > limits.max_record_decoded_bytes)
        {
            return;
        }
        let tracker = &mut self.tracker;
        let read = shared.encoding == Encoding::OtlpProto && span_facts(value, |fact| tracker.span(fact));
        if !read && let Ok((request, _)) = decode(shared.encoding, &bytes::Bytes::copy_from_slice(value)) {
            use prost::Message as _;
            span_facts(&request.encode_to_vec(), |fact| tracker.span(fact));
        }
        self.pending.extend(self.tracker.take_final());
    }

    /// The documents of the windows that became final, as batch items.
    pub fn items(&mut self, metrics: &Metrics) -> Vec<Item> {
        self.report(metrics);
        self.pending.drain(..).map(|w| item(&self.names, &self.topic, self.partition, &w, metrics)).collect()
    }

    /// Nothing arrived for a while: the windows that will be final once the clock reaches the wall
    /// clock, `lateness` behind, are written on their own, with the counts they will have
    /// ([`Tracker::preview`]); the tracker's state does not move.
    pub fn idle(&mut self, shared: &Arc<Shared>, now_ms: i64, abort: &CancellationToken) {
        if !self.primed || self.bounded {
            return;
        }
        let lateness = i64::try_from(self.bounds.lateness.as_millis()).unwrap_or(i64::MAX);
        self.pending.extend(self.tracker.preview(now_ms.saturating_sub(lateness)));
        self.idle_writes.retain(|t| !t.is_finished());
        let items = self.items(&shared.metrics);
        if items.is_empty() {
            return;
        }
        let (shared, abort, partition) = (shared.clone(), abort.clone(), self.partition);
        self.idle_writes.push(tokio::spawn(async move {
            // Retried until durable; on an abort the next owner's rewind counts them again.
            if let Err(error) = shared.bulk.write_all(items, &abort).await {
                tracing::debug!(partition, %error, "dependency documents of an idle partition not written");
            }
        }));
    }

    fn report(&mut self, metrics: &Metrics) {
        let now = self.tracker.stats();
        metrics.dependency_evictions.inc_by(now.evicted_for_memory - self.reported.evicted_for_memory);
        metrics.dependency_links_dropped.inc_by(now.edges_dropped - self.reported.edges_dropped);
        metrics.dependency_late_records.inc_by(now.late_records - self.reported.late_records);
        self.reported = now;
        let held = i64::try_from(self.tracker.spans_held()).unwrap_or(i64::MAX);
        metrics.dependency_spans_held.inc_by(held - self.held);
        self.held = held;
    }

    /// Re-reads the partition before its first record, `first` (offset `R`, timestamp `first_ts`),
    /// is indexed: from the rewind point of record `R − 1` up to `R`, records counted only. When
    /// the partition cannot be re-read, a warning says so and windows are counted from `R`'s on
    /// (those already begun come out short).
    pub async fn rewind<C: ConsumerContext + 'static>(
        &mut self,
        shared: &Shared,
        consumer: &Arc<StreamConsumer<C>>,
        queue: &StreamPartitionQueue<C>,
        first: i64,
        first_ts: i64,
    ) -> Reread {
        self.primed = true;
        self.resume = first + 1;
        let partition = self.partition;
        let low = {
            let (consumer, topic) = (consumer.clone(), self.topic.clone());
            tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&topic, partition, KAFKA_TIMEOUT))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|(low, _)| low)
        };
        let Some(low) = low else {
            tracing::warn!(
                partition,
                "cannot read the partition's low watermark: dependency windows counted from here, those begun come out short"
            );
            self.tracker = Tracker::new(self.bounds, first_ts);
            return Reread::KeepCopy;
        };
        if first <= low {
            // Nothing before: every window is counted from the start.
            return Reread::KeepCopy;
        }
        match self.reread(shared, consumer, queue, low, first).await {
            Ok(reread) => reread,
            Err(why) => {
                tracing::warn!(
                    partition,
                    offset = first,
                    why,
                    "cannot re-read the partition: dependency windows counted from here, those begun come out short"
                );
                self.tracker = Tracker::new(self.bounds, first_ts);
                // Back to `R` if the queue moved; the copy is kept either way and anything below
                // `resume` the queue still delivers is dropped.
                let _ = self.seek(consumer, first + 1).await;
                Reread::KeepCopy
            }
        }
    }

    async fn reread<C: ConsumerContext + 'static>(
        &mut self,
        shared: &Shared,
        consumer: &Arc<StreamConsumer<C>>,
        queue: &StreamPartitionQueue<C>,
        low: i64,
        first: i64,
    ) -> Result<Reread, &'static str> {
        let (topic, partition) = (self.topic.clone(), self.partition);
        // Record R − 1's timestamp decides which windows were not final.
        if !self.seek(consumer, first - 1).await {
            return Err("seek failed");
        }
        let last = next_at_or_after(queue, first - 1).await?;
        let last_ts = match (last.offset() == first - 1, last.timestamp().to_millis()) {
            (true, Some(ts)) => ts,
            _ => return Err("the record before the committed offset is gone or has no timestamp"),
        };
        drop(last);
        let rewind = Rewind::from_committed(&self.bounds, last_ts);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, Offset::Offset(rewind.prime_from_ms)).map_err(|_| "bad offset")?;
        let found = {
            let consumer = consumer.clone();
            tokio::task::spawn_blocking(move || consumer.offsets_for_times(tpl, KAFKA_TIMEOUT))
                .await
                .map_err(|_| "ListOffsets failed")?
                .map_err(|_| "ListOffsets failed")?
        };
        // Tansu answers 0 for a time after its newest record (REFERENCE.md §7): kept inside [low, R).
        let from = found
            .find_partition(&topic, partition)
            .and_then(|e| e.offset().to_raw())
            .filter(|&o| o >= 0)
            .unwrap_or(low)
            .clamp(low, first - 1);
        self.tracker = Tracker::new(self.bounds, rewind.count_from_ms);
        tracing::info!(
            partition,
            from,
            to = first,
            "re-reading the partition to count unfinished dependency windows again"
        );
        if !self.seek(consumer, from).await {
            return Err("seek failed");
        }
        // Records [from, R) in order, counted only; any fetched before the seek is passed over.
        let mut next = from;
        loop {
            let message = next_at_or_after(queue, next).await?;
            let offset = message.offset();
            if offset >= first && next == from {
                continue; // fetched before the seek
            }
            if offset >= first {
                // Offsets without a record (transaction markers) just before `R`: the queue gave `R`.
                self.resume = first + 1;
                return Ok(Reread::KeepCopy);
            }
            next = offset + 1;
            let ts = message.timestamp().to_millis().or(self.tracker.clock()).unwrap_or(last_ts);
            self.record(shared, ts, message.payload().unwrap_or_default());
            shared.metrics.dependency_reread_records.inc();
            if next == first {
                self.resume = first;
                return Ok(Reread::Redeliver);
            }
        }
    }

    /// A partition that had nothing to read since its assignment re-reads all the same, from the
    /// group's committed offset: the windows its last owner left unfinished are written without
    /// waiting for a new record. The queue is left at the committed offset.
    pub async fn rewind_idle<C: ConsumerContext + 'static>(
        &mut self,
        shared: &Shared,
        consumer: &Arc<StreamConsumer<C>>,
        queue: &StreamPartitionQueue<C>,
        now_ms: i64,
    ) {
        let (topic, partition) = (self.topic.clone(), self.partition);
        let committed = {
            let consumer = consumer.clone();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            tokio::task::spawn_blocking(move || consumer.committed_offsets(tpl, KAFKA_TIMEOUT))
                .await
                .ok()
                .and_then(Result::ok)
        };
        let Some(committed) = committed else { return };
        match committed.find_partition(&topic, partition).and_then(|e| e.offset().to_raw()).filter(|&o| o >= 0) {
            None => {
                // Nothing committed: the partition is read from its start, nothing to count again.
                self.primed = true;
            }
            Some(first) => {
                self.rewind(shared, consumer, queue, first, now_ms).await;
                // Whatever the re-read took from the queue, it goes on from the committed offset.
                let _ = self.seek(consumer, first).await;
                self.resume = first;
            }
        }
    }

    async fn seek<C: ConsumerContext + 'static>(&self, consumer: &Arc<StreamConsumer<C>>, offset: i64) -> bool {
        let (consumer, topic, partition) = (consumer.clone(), self.topic.clone(), self.partition);
        let sought = tokio::task::spawn_blocking(move || {
            consumer.seek(&topic, partition, Offset::Offset(offset), KAFKA_TIMEOUT)
        })
        .await;
        match sought {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::warn!(partition, offset, %error, "seek for the dependency re-read failed");
                false
            }
            Err(_) => false,
        }
    }
}

/// The next record of `queue` at or after `offset` (one fetched before a seek is passed over).
async fn next_at_or_after<C: ConsumerContext + 'static>(
    queue: &StreamPartitionQueue<C>,
    offset: i64,
) -> Result<rdkafka::message::BorrowedMessage<'_>, &'static str> {
    loop {
        match tokio::time::timeout(KAFKA_TIMEOUT, queue.recv()).await {
            Ok(Ok(message)) if message.offset() >= offset => return Ok(message),
            Ok(Ok(_) | Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Ok(Err(_)) => return Err("reading the partition failed"),
            Err(_) => return Err("no record in time"),
        }
    }
}

fn item(names: &IndexNames, topic: &str, partition: i32, window: &WindowCounts, metrics: &Metrics) -> Item {
    metrics.dependency_windows.inc();
    let doc = dependency_document(names, topic, partition, window);
    Item { kind: DocKind::Dependencies, end_micros: 0, service: None, origin: None, ndjson: doc.ndjson }
}
