//! The worker's side of the dependency links ([`crate::dependencies`]): a partition's records → its
//! tracker → one document per final window, written in the batch of the record that made the window
//! final, so it is durable before that record's offset is committed.
//!
//! After an assignment (a start, a restart, a rebalance, a replay) the first record received is the
//! committed offset `R`. Before indexing anything the worker re-reads the partition from the
//! tracker's rewind point (derived from record `R − 1`'s timestamp, found with ListOffsets by
//! timestamp), feeding records below `R` to the tracker only, so every window that was not final
//! when `R − 1` was read is counted again whole and its document replaced ([`Links::rewind`]). Where
//! records needed for that are gone (retention) or cannot be read, counting starts at the first
//! window that can be counted whole, with a warning: a window is never written from part of its
//! records over a complete count.
//!
//! A partition with nothing to read writes on its own the windows the wall clock (`lateness`
//! behind) has passed, with the counts they will have ([`Links::idle`]). Such a *preview* is one
//! write task per window; when the window becomes final, the final write waits for the preview to
//! be durable and is left out when the counts agree, so a preview retried late can never land over a
//! final count.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

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

/// A window written before it was final, by an idle partition.
struct Preview {
    links: WindowCounts,
    /// Whether the write became durable; taken when the window becomes final.
    write: Option<tokio::task::JoinHandle<bool>>,
}

/// One partition's tracker and what it still has to write.
pub(crate) struct Links {
    tracker: Tracker,
    bounds: Bounds,
    topic: String,
    partition: i32,
    names: IndexNames,
    metrics: Metrics,
    /// Records below this offset were indexed before this assignment: not indexed again.
    pub resume: i64,
    /// The rewind is done (or was not needed). Set only once it is complete: a rewind cut short
    /// (its future dropped by a drain) leaves it false, and the next record starts another.
    pub primed: bool,
    /// Final windows not yet handed to a batch.
    pending: Vec<WindowCounts>,
    /// What was last reported to the metrics.
    reported: Stats,
    held: i64,
    /// Windows written by [`Links::idle`] before they were final.
    previews: BTreeMap<i64, Preview>,
    /// A bounded replay: it never writes previews (the windows its end cuts short are not final,
    /// whatever the time).
    bounded: bool,
}

impl Drop for Links {
    fn drop(&mut self) {
        for preview in self.previews.values() {
            if let Some(write) = &preview.write {
                write.abort();
            }
        }
        self.metrics.dependency_spans_held.dec_by(self.held);
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
            metrics: shared.metrics.clone(),
            resume: i64::MIN,
            primed: false,
            pending: Vec::new(),
            reported: Stats::default(),
            held: 0,
            previews: BTreeMap::new(),
            bounded,
        }
    }

    /// The time of a record: its Kafka timestamp, else the clock (else now), on every path alike.
    pub fn time_of(&self, timestamp_ms: Option<i64>, now_ms: i64) -> i64 {
        timestamp_ms.or(self.tracker.clock()).unwrap_or(now_ms)
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

    /// The documents of the windows that became final, as batch items. A window an idle partition
    /// wrote before waits for that write, and is left out when its counts did not change.
    pub async fn items(&mut self) -> Vec<Item> {
        self.report();
        let mut items = Vec::with_capacity(self.pending.len());
        for window in std::mem::take(&mut self.pending) {
            if let Some(mut preview) = self.previews.remove(&window.start_ms) {
                let durable = match preview.write.take() {
                    Some(write) => write.await.unwrap_or(false),
                    None => false,
                };
                if durable && preview.links == window {
                    continue;
                }
            }
            items.push(self.item(&window));
        }
        items
    }

    fn item(&self, window: &WindowCounts) -> Item {
        self.metrics.dependency_windows.inc();
        let doc = dependency_document(&self.names, &self.topic, self.partition, window);
        Item { kind: DocKind::Dependencies, end_micros: 0, service: None, origin: None, ndjson: doc.ndjson }
    }

    /// Nothing arrived for a while: the windows that will be final once the clock reaches the wall
    /// clock, `lateness` behind, are written on their own, with the counts they will have
    /// ([`Tracker::preview`]); the tracker's state does not move.
    pub fn idle(&mut self, shared: &Arc<Shared>, now_ms: i64, abort: &CancellationToken) {
        self.report();
        if !self.primed || self.bounded {
            return;
        }
        let lateness = i64::try_from(self.bounds.lateness.as_millis()).unwrap_or(i64::MAX);
        for window in self.tracker.preview(now_ms.saturating_sub(lateness)) {
            let items = vec![self.item(&window)];
            let (shared, abort, partition) = (shared.clone(), abort.clone(), self.partition);
            let write = tokio::spawn(async move {
                // Retried until durable, or the worker ends (the next owner's rewind counts it).
                match shared.bulk.write_all(items, &abort).await {
                    Ok(rejected) if rejected.is_empty() => true,
                    Ok(rejected) => {
                        let reason = rejected.first().map(|r| r.reason.clone()).unwrap_or_default();
                        tracing::error!(partition, %reason, "dependency document rejected by the store");
                        false
                    }
                    Err(_) => false,
                }
            });
            self.previews.insert(window.start_ms, Preview { links: window, write: Some(write) });
        }
    }

    fn report(&mut self) {
        let now = self.tracker.stats();
        let metrics = &self.metrics;
        metrics.dependency_evictions.inc_by(now.evicted_for_memory - self.reported.evicted_for_memory);
        metrics.dependency_links_dropped.inc_by(now.edges_dropped - self.reported.edges_dropped);
        metrics.dependency_late_records.inc_by(now.late_records - self.reported.late_records);
        self.reported = now;
        let held = i64::try_from(self.tracker.spans_held()).unwrap_or(i64::MAX);
        metrics.dependency_spans_held.inc_by(held - self.held);
        self.held = held;
    }

    /// Re-reads the partition before its first record, `first` (offset `R`, timestamp `first_ts`),
    /// is indexed: from the rewind point of record `R − 1` up to `R`, records counted only.
    pub async fn rewind<C: ConsumerContext + 'static>(
        &mut self,
        shared: &Shared,
        consumer: &Arc<StreamConsumer<C>>,
        queue: &StreamPartitionQueue<C>,
        first: i64,
        first_ts: i64,
    ) -> Reread {
        let partition = self.partition;
        let low = {
            let (consumer, topic) = (consumer.clone(), self.topic.clone());
            tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&topic, partition, KAFKA_TIMEOUT))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|(low, _)| low)
        };
        let (reread, resume) = match low {
            None => {
                self.gap(first_ts, "cannot read the partition's low watermark");
                (Reread::KeepCopy, first + 1)
            }
            Some(low) if first <= low => {
                // Nothing before `R`: a topic read from its start counts everything; one whose
                // older records are gone counts from the first window it has whole.
                if low > 0 {
                    self.gap(first_ts, "the records before the committed offset are gone (retention)");
                }
                (Reread::KeepCopy, first + 1)
            }
            Some(low) => match self.reread(shared, consumer, queue, low, first).await {
                Ok(done) => done,
                Err(why) => {
                    self.gap(first_ts, why);
                    // The copy is kept, and anything below `resume` the queue still delivers is
                    // dropped; back to `R + 1` if the queue moved.
                    let _ = self.seek(consumer, first + 1).await;
                    (Reread::KeepCopy, first + 1)
                }
            },
        };
        self.resume = resume;
        self.primed = true;
        reread
    }

    /// Records needed to count the windows around `first_ms` whole cannot be read: counting starts
    /// at the first window that can be.
    fn gap(&mut self, first_ms: i64, why: &str) {
        let from = Rewind::whole_after(&self.bounds, first_ms);
        tracing::warn!(
            partition = self.partition,
            why,
            count_from_ms = from,
            "dependency windows before this one are left as they are: they cannot be counted whole"
        );
        self.tracker = Tracker::new(self.bounds, from);
    }

    async fn reread<C: ConsumerContext + 'static>(
        &mut self,
        shared: &Shared,
        consumer: &Arc<StreamConsumer<C>>,
        queue: &StreamPartitionQueue<C>,
        low: i64,
        first: i64,
    ) -> Result<(Reread, i64), &'static str> {
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
        // An answer outside [low, R) is not trusted (Tansu answers 0 for a time after its newest
        // record, REFERENCE.md §7; a broker may not answer by time at all): then from the start.
        let from = found
            .find_partition(&topic, partition)
            .and_then(|e| e.offset().to_raw())
            .filter(|&o| (low..first).contains(&o))
            .unwrap_or(low);
        let mut tracker = Tracker::new(self.bounds, rewind.count_from_ms);
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
        std::mem::swap(&mut self.tracker, &mut tracker);
        loop {
            let message = next_at_or_after(queue, next).await?;
            let offset = message.offset();
            if offset >= first && next == from {
                continue; // fetched before the seek
            }
            if offset >= first {
                // Offsets without a record (transaction markers) just before `R`: the queue gave `R`.
                return Ok((Reread::KeepCopy, first + 1));
            }
            let ts = self.time_of(message.timestamp().to_millis(), last_ts);
            if next == from && from == low && low > 0 && ts > rewind.prime_from_ms {
                // The records the rewind needs start before the partition's oldest: gone.
                self.tracker.count_from_at_least(Rewind::whole_after(&self.bounds, ts));
                tracing::warn!(
                    partition,
                    "records the dependency re-read needs are gone (retention): windows before the first whole one are left as they are"
                );
            }
            next = offset + 1;
            self.record(shared, ts, message.payload().unwrap_or_default());
            shared.metrics.dependency_reread_records.inc();
            if next == first {
                return Ok((Reread::Redeliver, first));
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
