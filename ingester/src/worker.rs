//! `worker`: one task per assigned partition — the partition's records → documents → batches →
//! up to `max_inflight_bulks` bulk requests in flight → the contiguous durable watermark stored.
//!
//! Started and stopped by the group membership ([`crate::consume`]), which hands it the partition's
//! own queue (split from the consumer before librdkafka starts fetching it, and kept by the
//! membership across reassignments). The loop itself is [`partition`]; this module is its Kafka and
//! OpenSearch side: records are read from the partition queue and mapped here ([`KafkaSource`]),
//! batches are written by [`write`] and offsets stored through the partition's fence ([`KafkaIo`]).
//! Guarantees:
//! - every record's spans are indexed or dead-lettered before its offset is stored: a record that
//!   is undecodable, larger than `limits.max_record_bytes` or whose documents would pass
//!   `limits.max_record_document_bytes` is dead-lettered whole, and spans refused alone (outside the
//!   accepted window, a document over `limits.max_document_bytes`) are dead-lettered, before the
//!   record enters a batch (a record refused whole enters it with no items, so the watermark passes
//!   it); spans the store rejects for good are dead-lettered inside the batch's bulk task;
//! - offsets are stored only up to [`Watermark`]'s contiguous prefix of durable batches, through the
//!   partition's [`Fence`], so never after the partition is given up;
//! - memory is bounded: one record's documents at a time, at most `limits.max_record_document_bytes`
//!   plus one document, counted before they are kept ([`crate::document`]); at most
//!   `max_inflight_bulks` batches in flight, the full batches of one record waiting and one open;
//!   while a full batch waits (the store is pushing back), the partition's queue is not read, so
//!   librdkafka stops fetching it once `kafka.max_prefetch_bytes` wait there, and reading resumes
//!   when the waiting batches are all in flight;
//! - on drain (revocation or shutdown) it stops reading, flushes the open batch, waits for its bulk
//!   requests, stores and synchronously commits the watermark, then ends. On abort it ends at once
//!   and stores nothing more;
//! - a service document is remembered as written only once the batch holding it is durable.
//!
//! [`Watermark`]: crate::commit::Watermark

pub(crate) mod links;
pub(crate) mod partition;

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use futures::{FutureExt as _, future::BoxFuture};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rdkafka::{
    Message,
    consumer::{ConsumerContext, StreamConsumer, stream_consumer::StreamPartitionQueue},
    error::KafkaError,
};
use spanline_proto::{DeadLetter, PayloadKind, Stage};
use tokio_util::sync::CancellationToken;

use crate::{
    batch::{Batch, FlushReason, Item, Limits, Origin},
    bulk::{BulkClient, framing},
    commit::{Covered, Fence},
    config::Encoding,
    deadletter::{self, DeadLetters, OverLimit, RecordLimits},
    document::{DocKind, Mapped, RecordTime, Refusal, Routing, map_record, map_request},
    error::Error,
    health::{Cause, Stalled},
    metrics::{Metrics, PartitionLabels, ReasonLabels},
};
use partition::{Io, Partition, Progress, Steering, Written};
use spanline_common::{
    jaeger::{
        self,
        model::{self, ModelError},
    },
    repeats::Repeats,
};

/// What every worker shares.
pub struct Shared {
    pub topic: String,
    pub encoding: Encoding,
    pub routing: Routing,
    pub limits: Limits,
    /// What one record may cost (`[limits]`).
    pub record_limits: RecordLimits,
    pub max_inflight_bulks: usize,
    pub bulk: BulkClient,
    pub dead_letters: DeadLetters,
    pub services: Mutex<ServiceCache>,
    pub metrics: Metrics,
    /// Where workers report a failure that must stop the ingester.
    pub failures: tokio::sync::mpsc::UnboundedSender<Error>,
    /// Spans per second over all partitions (replay's `--rate`); `None` for no limit.
    pub rate: Option<RateLimiter>,
    /// The dependency links' settings, when they are counted (`[dependencies]`).
    pub dependencies: Option<crate::config::Dependencies>,
}

/// A token bucket shared by every worker: `acquire(n)` waits until `n` spans may go.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    /// (tokens available, when last refilled)
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(per_second: u64) -> Self {
        // Spans per second as a float; precision loss above 2^52 spans/s is irrelevant.
        #[allow(clippy::cast_precision_loss)]
        let per_second = per_second.max(1) as f64;
        Self { per_second, state: Mutex::new((per_second, Instant::now())) }
    }

    /// Waits until `n` spans fit in the rate. A request larger than one second's worth waits for
    /// its share of time rather than forever.
    pub async fn acquire(&self, n: usize) {
        // Span counts are far below 2^52.
        #[allow(clippy::cast_precision_loss)]
        let want = n as f64;
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let (tokens, last) = *state;
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.per_second).min(self.per_second);
            let left = tokens - want;
            *state = (left, now);
            if left >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-left / self.per_second) }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// How many (index, service document) pairs are remembered; past it the memory is cleared.
const SERVICE_CACHE_CAPACITY: usize = 100_000;

/// The service documents already written, so each (service, operation) is written once per daily
/// index rather than with every record. A document is *claimed* by the worker whose record first
/// holds it, remembered as *written* once the batch holding it is durable, and released again if
/// that worker ends before (aborted with its batch): a document lost with an aborted batch is
/// written again by the next record that holds it. Bounded: the written set is cleared when full,
/// after which some are written again (harmlessly: the id is deterministic and `create` answers
/// 409). Keyed by a 64-bit hash, so a lookup allocates nothing; a collision only skips one repeat
/// write of a service document.
#[derive(Debug, Default)]
pub struct ServiceCache {
    written: HashSet<u64>,
    /// Claimed by a worker, not yet durable.
    pending: HashSet<u64>,
}

impl ServiceCache {
    /// The key of (`index`, `id`).
    pub fn key(index: &str, id: &str) -> u64 {
        spanline_common::ids::fnv64a(&[index.as_bytes(), b"/", id.as_bytes()])
    }

    /// Claims the document with `key` for writing: false when it is written or another batch
    /// already carries it.
    pub fn claim(&mut self, key: u64) -> bool {
        !self.written.contains(&key) && self.pending.insert(key)
    }

    /// Whether the document with `key` is claimed and not yet durable.
    pub fn is_pending(&self, key: u64) -> bool {
        self.pending.contains(&key)
    }

    /// Remembers the documents of `keys` as durable.
    pub fn mark(&mut self, keys: impl IntoIterator<Item = u64>) {
        for key in keys {
            self.pending.remove(&key);
            if self.written.len() >= SERVICE_CACHE_CAPACITY {
                self.written.clear();
            }
            self.written.insert(key);
        }
    }

    /// Gives up the claims of `keys` that are not durable (their batch will never be written).
    pub fn release(&mut self, keys: impl IntoIterator<Item = u64>) {
        for key in keys {
            self.pending.remove(&key);
        }
    }
}

/// How the group membership steers a worker; shared by the worker and its handle.
#[derive(Debug)]
pub(crate) struct Control {
    pub partition: i32,
    /// Drain (stop reading, flush, finish the bulks, commit, end) and abort (end now).
    pub(crate) steering: Steering,
    /// Whether the drain is for shutdown (else a revocation): the flush reason.
    pub shutting_down: AtomicBool,
    pub fence: Fence,
}

impl Control {
    pub fn new(topic: &str, partition: i32) -> Self {
        Self {
            partition,
            steering: Steering::default(),
            shutting_down: AtomicBool::new(false),
            fence: Fence::new(topic, partition),
        }
    }

    /// Asks the worker to drain, for shutdown or a revocation.
    pub fn drain(&self, shutting_down: bool) {
        self.shutting_down.store(shutting_down, Ordering::Relaxed);
        self.steering.drain.cancel();
    }

    /// Closes the fence (no store or commit can follow) and asks the worker to end now.
    pub fn fence(&self) {
        self.fence.close();
        self.steering.abort.cancel();
    }

    fn drain_reason(&self) -> FlushReason {
        if self.shutting_down.load(Ordering::Relaxed) { FlushReason::Shutdown } else { FlushReason::Revoke }
    }
}

/// One partition's worker.
pub(crate) struct Worker<C: ConsumerContext + 'static> {
    pub shared: Arc<Shared>,
    pub consumer: Arc<StreamConsumer<C>>,
    /// The partition's queue; the membership keeps it for the partition's next assignment.
    pub queue: Arc<StreamPartitionQueue<C>>,
    pub control: Arc<Control>,
    /// Replay: the first offset not to index; the worker drains itself on reaching it.
    pub end: Option<i64>,
    pub progress: tokio::sync::watch::Sender<Progress>,
}

impl<C: ConsumerContext + 'static> Worker<C> {
    /// Runs until drained or aborted ([`Error::Aborted`]); then, when drained, commits the stored
    /// watermark and waits for the broker. Returns whether the watermark is committed (or there was
    /// nothing to commit): a broker can refuse the final commit (a rebalance already under way), and
    /// then the partition's next owner re-reads from the last commit.
    pub async fn run(self) -> Result<bool, Error> {
        let Self { shared, consumer, queue, control, end, progress } = self;
        let io = KafkaIo {
            shared: shared.clone(),
            consumer: consumer.clone(),
            control: control.clone(),
            paused: AtomicBool::new(false),
        };
        let mut source = KafkaSource {
            links: shared
                .dependencies
                .as_ref()
                .map(|d| links::Links::new(d.bounds(), &shared, control.partition, end.is_some())),
            shared: shared.clone(),
            consumer: consumer.clone(),
            control: control.clone(),
            queue,
            end,
            ended: false,
            mapped: Mapped::default(),
            claimed: Vec::new(),
            failing: None,
            repeats: Repeats::default(),
        };
        let mut partition = Partition::new(shared.limits, shared.max_inflight_bulks);
        let steering = &control.steering;
        partition::run(&mut partition, &io, &mut source, steering, || control.drain_reason(), &progress).await?;
        let Some(last) = partition.progress().durable else { return Ok(true) };
        // Blocking on the broker's answer; the membership's drain deadline bounds the wait, and the
        // fence never waits for this commit (see `Fence::commit`).
        let fence_control = control.clone();
        let committed = tokio::task::spawn_blocking(move || fence_control.fence.commit(consumer.as_ref(), last)).await;
        Ok(committed.unwrap_or(false))
    }
}

/// Bulk requests and offsets, for the partition loop.
struct KafkaIo<C: ConsumerContext + 'static> {
    shared: Arc<Shared>,
    consumer: Arc<StreamConsumer<C>>,
    control: Arc<Control>,
    /// This worker is blocked, not reading its queue (counted in `paused_partitions`).
    paused: AtomicBool,
}

impl<C: ConsumerContext + 'static> Drop for KafkaIo<C> {
    /// An aborted worker leaves the gauge as it found it.
    fn drop(&mut self) {
        if self.paused.load(Ordering::Relaxed) {
            self.shared.metrics.paused_partitions.dec();
        }
    }
}

impl<C: ConsumerContext + 'static> Io for KafkaIo<C> {
    fn launch(&self, batch: Batch) -> BoxFuture<'static, Result<Written, Error>> {
        let (shared, abort) = (self.shared.clone(), self.control.steering.abort.clone());
        async move {
            let _in_flight = InFlightGauge::raise(&shared.metrics);
            write(&shared, batch, &abort).await
        }
        .boxed()
    }

    fn store(&self, covered: Covered) -> bool {
        if !self.control.fence.store(self.consumer.as_ref(), covered.offset) {
            return false;
        }
        let age = now_ms().saturating_sub(covered.timestamp_ms).max(0);
        let labels = PartitionLabels { partition: self.control.partition };
        // Milliseconds to seconds; precision loss is irrelevant at these magnitudes.
        #[allow(clippy::cast_precision_loss)]
        self.shared.metrics.lag_seconds.get_or_create(&labels).set(age as f64 / 1000.0);
        true
    }

    /// Not librdkafka's pause, which throws away what it prefetched for the partition and fetches
    /// (and decompresses) it again on resume: a worker that stops reading its queue lets librdkafka
    /// fill it up to `kafka.max_prefetch_bytes` and then stop fetching, and nothing is fetched twice.
    fn pause(&self, pause: bool) {
        let partition = self.control.partition;
        if self.paused.swap(pause, Ordering::Relaxed) == pause {
            return;
        }
        if pause {
            tracing::debug!(partition, "every bulk slot busy: reading paused");
            self.shared.metrics.paused_partitions.inc();
        } else {
            tracing::debug!(partition, "reading resumed");
            self.shared.metrics.paused_partitions.dec();
        }
    }
}

/// `inflight_bulks` raised while a bulk runs, lowered however it ends (a dropped future too).
struct InFlightGauge(Metrics);

impl InFlightGauge {
    fn raise(metrics: &Metrics) -> Self {
        metrics.inflight_bulks.inc();
        Self(metrics.clone())
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        self.0.inflight_bulks.dec();
    }
}

/// The partition's records, mapped into bulk items.
struct KafkaSource<C: ConsumerContext + 'static> {
    shared: Arc<Shared>,
    /// For the dependency re-read's seeks.
    consumer: Arc<StreamConsumer<C>>,
    control: Arc<Control>,
    queue: Arc<StreamPartitionQueue<C>>,
    end: Option<i64>,
    /// The end bound was reached: no more records.
    ended: bool,
    /// The current record's documents; its buffers are reused from record to record.
    mapped: Mapped,
    /// Service documents this worker claimed ([`ServiceCache::claim`]); released when it ends.
    claimed: Vec<u64>,
    /// Held while the partition queue answers errors instead of records.
    failing: Option<Stalled>,
    repeats: Repeats,
    /// The dependency links, when counted.
    links: Option<links::Links>,
}

/// How long a partition with a dependency tracker waits for a record before it writes the windows
/// the wall clock has passed ([`links::Links::idle`]), and, when it had nothing to read since its
/// assignment, re-reads from the committed offset ([`links::Links::rewind_idle`]).
const IDLE_TICK: Duration = Duration::from_secs(1);

impl<C: ConsumerContext + 'static> Drop for KafkaSource<C> {
    /// The claims of documents whose batch never became durable (an abort) are given up, so another
    /// record writes them; the durable ones were already moved to the written set.
    fn drop(&mut self) {
        let mut services = self.shared.services.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        services.release(self.claimed.drain(..));
    }
}

/// One consumed record, copied out of librdkafka's buffer.
pub(crate) struct Record {
    offset: i64,
    /// Its Kafka timestamp, which its spans are judged against ([`RecordTime`]).
    timestamp_ms: Option<i64>,
    key: Option<Bytes>,
    value: Bytes,
}

impl<C: ConsumerContext + 'static> partition::Source for KafkaSource<C> {
    type Raw = Record;

    async fn recv(&mut self) -> Option<Record> {
        let partition = self.control.partition;
        loop {
            if self.ended {
                return None;
            }
            let received = if self.links.is_some() {
                match tokio::time::timeout(IDLE_TICK, self.queue.recv()).await {
                    Ok(received) => received,
                    Err(_) => {
                        if let Some(links) = &mut self.links {
                            if !links.primed && self.end.is_none() {
                                links.rewind_idle(&self.shared, &self.consumer, &self.queue, now_ms()).await;
                            }
                            links.idle(&self.shared, now_ms(), &self.control.steering.abort);
                        }
                        continue;
                    }
                }
            } else {
                self.queue.recv().await
            };
            match received {
                // Replays ask for end-of-partition events: the end bound is at or below the high
                // watermark it was resolved against, so the partition's end is past it.
                Err(KafkaError::PartitionEOF(_)) if self.end.is_some() => self.ended = true,
                Err(KafkaError::PartitionEOF(_)) => {}
                // librdkafka retries these itself (a deleted topic, an ACL taken away): the partition
                // does not move meanwhile, so it is a stall an operator sees, logged once per interval.
                Err(error) => {
                    if let Some(repeated) = self.repeats.check("consume") {
                        tracing::error!(partition, %error, repeated, "cannot consume the partition; retrying, offsets held");
                    }
                    if self.failing.is_none() {
                        self.failing = Some(self.shared.metrics.health.stall(Cause::ConsumerFailing));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(message) if self.end.is_some_and(|end| message.offset() >= end) => self.ended = true,
                Ok(message) => {
                    self.failing = None;
                    let offset = message.offset();
                    if self.links.as_ref().is_some_and(|l| offset < l.resume) {
                        continue; // before the dependency re-read's end: counted, indexed before
                    }
                    let record = Record {
                        offset,
                        timestamp_ms: message.timestamp().to_millis(),
                        key: message.key().map(Bytes::copy_from_slice),
                        value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                    };
                    drop(message);
                    if let Some(links) = self.links.as_mut().filter(|l| !l.primed) {
                        let ts = links.time_of(record.timestamp_ms, now_ms());
                        let reread = links.rewind(&self.shared, &self.consumer, &self.queue, offset, ts).await;
                        if reread == links::Reread::Redeliver {
                            continue;
                        }
                    }
                    self.ended = self.end.is_some_and(|end| offset + 1 >= end);
                    return Some(record);
                }
            }
        }
    }

    async fn map(&mut self, record: Record) -> Result<partition::Incoming, Error> {
        self.take(record).await
    }
}

impl<C: ConsumerContext + 'static> KafkaSource<C> {
    /// Decodes and maps one record into bulk items. What can never be indexed (a record that is
    /// undecodable, over `limits.max_record_bytes`, or whose documents would pass
    /// `limits.max_record_document_bytes`; spans refused alone) is dead-lettered first, so the
    /// record's offset enters a batch only after that is durable.
    async fn take(&mut self, record: Record) -> Result<partition::Incoming, Error> {
        let Self { shared, control, mapped, claimed, links, .. } = self;
        let partition = control.partition;
        shared.metrics.records.inc();
        let Record { offset, timestamp_ms, key, value } = record;
        if let Some(links) = links.as_mut().filter(|_| shared.dependencies.as_ref().is_some_and(|d| d.only)) {
            // `dependencies.only` (replay --dependencies-only): counted, nothing indexed.
            links.record(shared, links.time_of(timestamp_ms, now_ms()), &value);
            let items = links.items().await;
            return Ok(partition::Incoming { offset, timestamp_ms, items, spans: 0, dead_lettered: 0 });
        }
        let limits = shared.record_limits;
        mapped.clear();
        let mut letters = Vec::new();
        // The request's protobuf bytes, which a dead letter of one of its spans is cut from.
        let mut payload = value.clone();
        // A re-driven dead letter's spans keep their original coordinates if they fail again.
        let redrive = (shared.encoding == Encoding::DeadLetter)
            .then(|| deadletter::Redrive::of(&value, &shared.topic, partition, offset))
            .flatten();
        let origin = |payload: &Bytes, position: [usize; 3]| Origin {
            partition,
            offset,
            key: key.clone(),
            record: payload.clone(),
            position,
            redrive: redrive.clone(),
        };
        // The time the record's spans are judged against, the same on either path below.
        let at = RecordTime::of(timestamp_ms, now_ms() * 1000, &shared.routing);
        if value.len() > limits.max_record_bytes {
            tracing::warn!(
                partition,
                offset,
                bytes = value.len(),
                "record over limits.max_record_bytes, dead-lettering it undecoded"
            );
            letters.push(deadletter::record_too_large(
                &shared.topic,
                partition,
                offset,
                key.clone(),
                &value,
                limits.max_record_bytes,
            ));
        } else if shared.encoding == Encoding::OtlpProto
            && map_record(&value, &shared.routing, limits.documents, at, mapped)
        {
            // Read in place, every span with its document: nothing to dead-letter. Anything else
            // (a span refused, a record over its bound, an encoding left to prost) goes below.
        } else if let Some(cost) =
            decoded_cost(shared.encoding, &value).filter(|&c| c > limits.max_record_decoded_bytes)
        {
            tracing::warn!(
                partition,
                offset,
                bytes = value.len(),
                cost,
                "record would take over limits.max_record_decoded_bytes to decode, dead-lettering it undecoded"
            );
            letters.push(deadletter::record_too_costly(
                &shared.topic,
                partition,
                offset,
                key.clone(),
                &value,
                cost,
                limits.max_record_decoded_bytes,
            ));
        } else {
            match decode(shared.encoding, &value) {
                Ok((request, proto)) => {
                    payload = proto;
                    map_request(&request, &payload, &shared.routing, limits.documents, at, mapped);
                    if let Some(over) = &mapped.over {
                        tracing::warn!(
                            partition,
                            offset,
                            spans = over.spans,
                            counted = over.counted,
                            "record's documents over limits.max_record_document_bytes, dead-lettering it whole"
                        );
                        letters.push(deadletter::record_over_documents(
                            &shared.topic,
                            partition,
                            offset,
                            key.clone(),
                            &payload,
                            over,
                        ));
                    }
                    // Built from the decoded request; their sizes were counted in the record's bound.
                    for refused in mapped.refused.drain(..) {
                        tracing::debug!(partition, offset, reason = %refused.reason, "span refused, dead-lettering it");
                        let letter = deadletter::refused_span(
                            &shared.topic,
                            &request,
                            &origin(&payload, refused.position),
                            "",
                            Stage::Map,
                            refused.refusal.error_type().into(),
                            refused.reason,
                        );
                        letters.extend(letter.map(|mut letter| {
                            if refused.refusal == Refusal::TooLarge {
                                letter.over_limit =
                                    Some(OverLimit { setting: "max_document_bytes", whole_record: false, spans: 1 });
                            }
                            letter
                        }));
                    }
                }
                Err(error) => {
                    shared.metrics.decode_errors.inc();
                    tracing::warn!(partition, offset, %error, "record cannot be decoded, dead-lettering it");
                    letters.push(deadletter::undecodable(
                        &shared.topic,
                        partition,
                        offset,
                        key.clone(),
                        &value,
                        error.to_string(),
                    ));
                }
            }
        }
        if let Some(rate) = &shared.rate {
            rate.acquire(mapped.docs.iter().filter(|d| d.kind == DocKind::Span).count()).await;
        }
        let dead_lettered = letters.len() as u64;
        if !letters.is_empty() {
            // A raw record names its encoding, so that a re-drive decodes it as it was written.
            for letter in letters.iter_mut().filter(|l| l.envelope.payload_kind() == PayloadKind::RawRecord) {
                letter.envelope.source_encoding = shared.encoding.name().into();
            }
            if let Some(redrive) = &redrive {
                letters.iter_mut().for_each(|l| redrive.stamp(&mut l.envelope));
            }
            shared.dead_letters.send(letters, &control.steering.abort).await?;
        }
        // Service documents: claimed under the lock (one already written, or carried by another
        // batch, is left out), encoded after it is released.
        let services: Vec<Option<u64>> = {
            let mut cache = shared.services.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if claimed.len() >= SERVICE_CACHE_CAPACITY {
                // Only claims still pending need releasing later: the list stays as long as what is
                // in flight.
                claimed.retain(|&key| cache.is_pending(key));
            }
            mapped
                .docs
                .iter()
                .map(|d| {
                    if d.kind == DocKind::Span {
                        return Some(0);
                    }
                    let key = ServiceCache::key(d.index(), d.id());
                    cache.claim(key).then(|| {
                        claimed.push(key);
                        key
                    })
                })
                .collect()
        };
        // Documents are moved into their items: the bulk item as written, without a copy.
        let mut items: Vec<Item> = mapped
            .docs
            .drain(..)
            .zip(services)
            .filter_map(|(d, claim)| {
                let claim = claim?;
                Some(Item {
                    kind: d.kind,
                    end_micros: d.end_micros,
                    service: (d.kind != DocKind::Span).then_some(claim),
                    origin: d.position.map(|position| origin(&payload, position)),
                    ndjson: d.ndjson,
                })
            })
            .collect();
        // The windows this record makes final go in its batch: durable before its offset is stored.
        if let Some(links) = links {
            links.record(shared, links.time_of(timestamp_ms, now_ms()), &value);
            items.extend(links.items().await);
        }
        Ok(partition::Incoming { offset, timestamp_ms, items, spans: mapped.spans as u64, dead_lettered })
    }
}

/// Dead letters of one batch are sent in groups of about this many payload bytes, so a batch whose
/// spans the store all rejects holds at most this much of them at once (each decodes its record
/// again to cut its span out).
const DEAD_LETTER_GROUP_BYTES: usize = 8 << 20;

/// Writes one batch until every item is durable, dead-lettering the spans the store rejects for
/// good. The batch's offsets are the caller's business.
async fn write(shared: &Shared, batch: Batch, abort: &CancellationToken) -> Result<Written, Error> {
    let Shared { bulk, dead_letters, metrics, topic, .. } = shared;
    metrics.flushes.get_or_create(&ReasonLabels { reason: batch.reason.as_str() }).inc();
    tracing::debug!(reason = %batch.reason, items = batch.items.len(), bytes = batch.bytes, "flushing batch");
    let ends: Vec<i64> = batch.items.iter().filter(|i| i.kind == DocKind::Span).map(|i| i.end_micros).collect();
    let mut services: HashSet<u64> = batch.items.iter().filter_map(|i| i.service).collect();
    let rejected = bulk.write_all(batch.items, abort).await?;
    let mut written = Written { indexed: ends.len() as u64, dead_lettered: 0 };
    let mut refused = Vec::new();
    let mut letters = Vec::new();
    let mut letter_bytes = 0;
    for r in rejected {
        if let Some(key) = r.item.service {
            services.remove(&key);
            refused.push(key);
        }
        if r.item.kind == DocKind::Span {
            written.indexed -= 1;
        }
        let letter = r.item.origin.as_ref().and_then(|origin| {
            // The index the item was written to, read back from its action line.
            let index = framing::index_of(&r.item.ndjson);
            deadletter::rejected_span(topic, origin, index, Stage::Index, r.error_type.clone(), r.reason.clone())
        });
        match letter {
            Some(letter) => {
                tracing::warn!(status = r.status, error_type = %r.error_type, reason = %r.reason, "span rejected by the store, dead-lettering it");
                letter_bytes += letter.envelope.payload.len();
                written.dead_lettered += 1;
                letters.push(letter);
                if letter_bytes >= DEAD_LETTER_GROUP_BYTES {
                    dead_letters.send(std::mem::take(&mut letters), abort).await?;
                    letter_bytes = 0;
                }
            }
            // Service documents are derived from spans that are themselves indexed or
            // dead-lettered; losing one only hides an operation name from the service list. A
            // dependency document refused for good (the store's mapping refuses its shape) is lost:
            // its window stays as it was, and the error says so.
            None => {
                let kind = r.item.kind.as_str();
                tracing::error!(kind, status = r.status, error_type = %r.error_type, reason = %r.reason, "document rejected by the store");
            }
        }
    }
    if !letters.is_empty() {
        dead_letters.send(letters, abort).await?;
    }
    let now = now_ms() * 1000;
    for end in ends {
        // Microseconds to seconds for a histogram: precision loss is irrelevant.
        #[allow(clippy::cast_precision_loss)]
        metrics.freshness.observe(now.saturating_sub(end).max(0) as f64 / 1e6);
    }
    // Only now are this batch's service documents durable.
    let mut cache = shared.services.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    cache.mark(services);
    cache.release(refused);
    drop(cache);
    Ok(written)
}

/// What decoding a record as `encoding` would take, priced from its wire shape without decoding it
/// (protobuf records and dead letters); `None` when it cannot be priced (JSON, or bytes the decoder
/// will refuse anyway).
pub fn decoded_cost(encoding: Encoding, value: &[u8]) -> Option<usize> {
    match encoding {
        Encoding::OtlpProto => spanline_common::otlp::scan(value).ok().map(|shape| shape.decoded_bytes),
        Encoding::DeadLetter => {
            let letter = DeadLetter::decode(value).ok()?;
            // A raw record is decoded as its source encoding (never as another envelope); the rest
            // as OTLP protobuf.
            let inner = match PayloadKind::try_from(letter.payload_kind) {
                Ok(PayloadKind::RawRecord) => {
                    Encoding::of_name(&letter.source_encoding).filter(|&e| e != Encoding::DeadLetter)?
                }
                _ => Encoding::OtlpProto,
            };
            let cost = decoded_cost(inner, &letter.payload)?;
            // The envelope's own copy of the payload is held while its request is decoded.
            Some(cost.saturating_add(letter.payload.len()))
        }
        Encoding::OtlpJson => None,
        // A record the scan refuses is refused again, with its reason, by `decode`.
        Encoding::JaegerProto => model::proto_cost(value).ok(),
        Encoding::JaegerJson => Some(model::json_cost(value)),
    }
}

/// What a Jaeger record's span may hold: no bound on counts or strings of its own, as a Jaeger v1
/// collector set none (a bound here would dead-letter, on every re-drive, spans Jaeger indexed).
/// None is needed for memory: the record is priced per tag, log, reference and string before it
/// is decoded ([`decoded_cost`] against `limits.max_record_decoded_bytes`) and its bytes are
/// bounded by `limits.max_record_bytes`; each span's document by `limits.max_document_bytes`.
const JAEGER_LIMITS: jaeger::Limits = jaeger::Limits {
    max_spans: 1,
    max_tags: usize::MAX,
    max_logs: usize::MAX,
    max_references: usize::MAX,
    max_string_bytes: usize::MAX,
    max_depth: 32,
};

/// Why a record could not be decoded; its text goes into the dead letter's reason.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid OTLP protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The JSON decoder's own message, clipped to 1 KiB.
    #[error("{0}")]
    Json(String),
    #[error("invalid spanline.v1.DeadLetter: {0}")]
    Envelope(prost::DecodeError),
    #[error("dead letter with unknown payload kind {0}")]
    PayloadKind(i32),
    /// A raw record's envelope names an encoding this ingester does not read, or another
    /// envelope (a letter that failed to re-drive is not re-driven inside itself).
    #[error("dead letter's raw record has source encoding {0:?}, which is not re-driven")]
    SourceEncoding(String),
    /// A raw record that decodes, as its source encoding, to no span at all: not what was
    /// dead-lettered (a record is dead-lettered raw only when it could not be decoded).
    #[error("dead letter's raw record decodes as {0} to no spans")]
    NoSpans(&'static str),
    /// Not a Jaeger span in the topic's encoding (the text names the encoding).
    #[error("{0}")]
    Jaeger(#[from] ModelError),
    /// A Jaeger span that decodes but cannot be translated (a zero id, a negative time …).
    #[error("{encoding}: span refused: {reason}")]
    JaegerSpan { encoding: &'static str, reason: String },
}

/// Decodes a record as `encoding`: the request, and its protobuf bytes (the record itself when it
/// is protobuf).
pub fn decode(encoding: Encoding, value: &Bytes) -> Result<(ExportTraceServiceRequest, Bytes), DecodeError> {
    match encoding {
        Encoding::OtlpProto => Ok((ExportTraceServiceRequest::decode(value.as_ref())?, value.clone())),
        Encoding::OtlpJson => {
            let request = spanline_common::otlp::decode_json(value).map_err(DecodeError::Json)?;
            let proto = Bytes::from(request.encode_to_vec());
            Ok((request, proto))
        }
        Encoding::DeadLetter => {
            let letter = DeadLetter::decode(value.as_ref()).map_err(DecodeError::Envelope)?;
            let payload = Bytes::from(letter.payload);
            match PayloadKind::try_from(letter.payload_kind) {
                Ok(PayloadKind::OtlpProto) => decode(Encoding::OtlpProto, &payload),
                Ok(PayloadKind::RawRecord) => {
                    let source =
                        Encoding::of_name(&letter.source_encoding).filter(|&e| e != Encoding::DeadLetter).ok_or_else(
                            || DecodeError::SourceEncoding(spanline_common::clip::clip(letter.source_encoding)),
                        )?;
                    let (request, proto) = decode(source, &payload)?;
                    let spans = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len());
                    if spans.sum::<usize>() == 0 {
                        return Err(DecodeError::NoSpans(source.name()));
                    }
                    Ok((request, proto))
                }
                _ => Err(DecodeError::PayloadKind(letter.payload_kind)),
            }
        }
        Encoding::JaegerProto | Encoding::JaegerJson => {
            let (span, name) = if encoding == Encoding::JaegerProto {
                (model::decode_proto(value)?, "jaeger_proto")
            } else {
                (model::decode_json(value)?, "jaeger_json")
            };
            let request = model::to_request(span, &JAEGER_LIMITS)
                .map_err(|reason| DecodeError::JaegerSpan { encoding: name, reason })?;
            let proto = Bytes::from(request.encode_to_vec());
            Ok((request, proto))
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::KeyValue,
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };

    /// The most decoding a record allocates, as a multiple of its size, on the worst inputs known
    /// (many empty spans or attributes): the figure `limits.max_record_bytes` is documented with.
    const DECODE_AMPLIFICATION: usize = 300;

    /// A Jaeger span whose protobuf also decodes as OTLP: its trace id reads as a resource
    /// (`1a 0e` + 14 letters: a `schema_url`), every other field as unknown to OTLP. So as OTLP it
    /// is a request of no spans.
    fn jaeger_span_that_reads_as_empty_otlp() -> Vec<u8> {
        let mut trace_id = vec![0x1a, 14];
        trace_id.extend_from_slice(b"abcdefghijklmn");
        let span = model::Span {
            trace_id,
            span_id: vec![1; 8],
            operation_name: "get".into(),
            start_time: Some(model::Timestamp { seconds: 1_800_000_000, nanos: 0 }),
            ..Default::default()
        };
        span.encode_to_vec()
    }

    fn raw_letter(payload: Vec<u8>, source_encoding: &str) -> Bytes {
        let letter = DeadLetter {
            payload_kind: PayloadKind::RawRecord as i32,
            payload,
            source_encoding: source_encoding.into(),
            ..Default::default()
        };
        Bytes::from(letter.encode_to_vec())
    }

    fn spans(request: &ExportTraceServiceRequest) -> usize {
        request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
    }

    #[test]
    fn a_raw_dead_letter_is_re_driven_as_its_source_encoding() {
        let record = jaeger_span_that_reads_as_empty_otlp();
        let (as_otlp, _) = decode(Encoding::OtlpProto, &Bytes::from(record.clone())).unwrap();
        assert_eq!(spans(&as_otlp), 0, "the record reads as OTLP with no spans");
        // Named: decoded as Jaeger, its one span.
        let (request, _) = decode(Encoding::DeadLetter, &raw_letter(record.clone(), "jaeger_proto")).unwrap();
        assert_eq!(spans(&request), 1);
        assert!(decoded_cost(Encoding::DeadLetter, &raw_letter(record.clone(), "jaeger_proto")).is_some());
        // Unnamed (a letter from before `source_encoding`): OTLP, and no span is no decode.
        let error = decode(Encoding::DeadLetter, &raw_letter(record.clone(), "")).unwrap_err();
        assert_eq!(error.to_string(), "dead letter's raw record decodes as otlp_proto to no spans");
        // An envelope inside is not re-driven; an unknown name is refused.
        for name in ["dead_letter", "thrift"] {
            let error = decode(Encoding::DeadLetter, &raw_letter(record.clone(), name)).unwrap_err();
            assert!(matches!(error, DecodeError::SourceEncoding(_)), "{error}");
            assert_eq!(decoded_cost(Encoding::DeadLetter, &raw_letter(record.clone(), name)), None);
        }
        // JSON too.
        let json = serde_json::json!({
            "traceId": "AAAAAAAAAAAAAAAAAAAAAQ==", "spanId": "AAAAAAAAAAE=", "startTime": "2027-01-15T08:00:00Z"
        });
        let (request, _) =
            decode(Encoding::DeadLetter, &raw_letter(json.to_string().into_bytes(), "jaeger_json")).unwrap();
        assert_eq!(spans(&request), 1);
    }

    #[test]
    fn encoding_names_round_trip() {
        for e in
            [Encoding::OtlpProto, Encoding::OtlpJson, Encoding::JaegerProto, Encoding::JaegerJson, Encoding::DeadLetter]
        {
            assert_eq!(Encoding::of_name(e.name()), Some(e));
            let configured: Encoding = serde_json::from_value(serde_json::json!(e.name())).unwrap();
            assert_eq!(configured, e, "the name kafka.encoding spells");
        }
        assert_eq!(Encoding::of_name(""), Some(Encoding::OtlpProto));
        assert_eq!(Encoding::of_name("OTLP_PROTO"), None);
    }

    #[test]
    fn decoding_allocates_at_most_the_documented_multiple_of_the_record() {
        let spans = |n| ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![Span::default(); n], ..Default::default() }],
                ..Default::default()
            }],
        };
        let attributes = |n| ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![KeyValue::default(); n], ..Default::default() }),
                ..Default::default()
            }],
        };
        for (name, request) in [("empty spans", spans(50_000)), ("empty attributes", attributes(50_000))] {
            let record = Bytes::from(request.encode_to_vec());
            let info = allocation_counter::measure(|| {
                let decoded = decode(Encoding::OtlpProto, &record);
                assert!(decoded.is_ok());
            });
            let factor = usize::try_from(info.bytes_max).unwrap_or(usize::MAX) / record.len();
            eprintln!("{name}: {} bytes decode to a peak of {} bytes ({factor}x)", record.len(), info.bytes_max);
            assert!(factor <= DECODE_AMPLIFICATION, "{name}: {factor}x");
        }
    }
}
