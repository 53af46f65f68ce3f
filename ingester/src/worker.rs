//! `worker`: one task per assigned partition — records → documents → batches → up to
//! `max_inflight_bulks` bulk requests in flight → the contiguous durable watermark stored.
//!
//! Started and stopped by the group membership in [`crate::consume`], which hands it the partition's
//! own queue (split from the consumer before librdkafka starts fetching it). Guarantees:
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
//!   while a full batch waits, the partition's fetching is paused (the store is pushing back) and
//!   resumed when the waiting batches are all in flight;
//! - on drain (revocation or shutdown) it stops reading, flushes the open batch, waits for its bulk
//!   requests, stores and synchronously commits the watermark, then ends. On abort it ends at once
//!   and stores nothing more.

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _, future::BoxFuture, stream::FuturesUnordered};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rdkafka::{
    Message, TopicPartitionList,
    consumer::{Consumer, stream_consumer::StreamPartitionQueue},
    error::KafkaError,
};
use spanline_proto::{DeadLetter, PayloadKind, Stage};
use tokio_util::sync::CancellationToken;

use crate::{
    batch::{Batch, Batcher, FlushReason, Item, Limits, Origin},
    bulk::{BulkClient, encode_item},
    commit::{Covered, Fence, Watermark},
    config::Encoding,
    consume::{IngestConsumer, IngestContext},
    deadletter::{self, DeadLetters, OverLimit, RecordLimits},
    document::{DocKind, Mapped, Refusal, Routing, map_request},
    error::Error,
    metrics::{Metrics, PartitionLabels, ReasonLabels},
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

/// The service documents already sent, so each (service, operation) is written once per daily index
/// rather than with every record. Bounded: cleared when full, after which some are written again
/// (harmlessly: the id is deterministic and `create` answers 409).
#[derive(Debug, Default)]
pub struct ServiceCache(HashSet<u64>);

impl ServiceCache {
    /// True the first time (`index`, `id`) is seen since the last clear. Keyed by a 64-bit hash, so
    /// a lookup allocates nothing; a collision only skips one repeat write of a service document.
    pub fn first_time(&mut self, index: &str, id: &str) -> bool {
        if self.0.len() >= SERVICE_CACHE_CAPACITY {
            self.0.clear();
        }
        self.0.insert(spanline_common::ids::fnv64a(&[index.as_bytes(), b"/", id.as_bytes()]))
    }
}

/// How the group membership steers a worker; shared by the worker and its handle.
#[derive(Debug)]
pub struct Control {
    pub partition: i32,
    /// Stop reading, flush, finish the bulk requests, commit, end.
    pub drain: CancellationToken,
    /// End now; store nothing more.
    pub abort: CancellationToken,
    /// Whether the drain is for shutdown (else a revocation): the flush reason.
    pub shutting_down: AtomicBool,
    pub fence: Fence,
    /// Replay: the first offset not to index; the worker drains itself on reaching it.
    pub end: Option<i64>,
    /// Progress: the last offset whose record is durable (-1: none).
    pub durable: AtomicI64,
    /// Progress: spans taken from records (before indexing).
    pub spans: AtomicU64,
}

impl Control {
    pub fn new(topic: &str, partition: i32, end: Option<i64>) -> Self {
        Self {
            partition,
            drain: CancellationToken::new(),
            abort: CancellationToken::new(),
            shutting_down: AtomicBool::new(false),
            fence: Fence::new(topic, partition),
            end,
            durable: AtomicI64::new(-1),
            spans: AtomicU64::new(0),
        }
    }
}

/// One partition's worker.
pub struct Worker {
    pub shared: Arc<Shared>,
    pub consumer: Arc<IngestConsumer>,
    pub queue: StreamPartitionQueue<IngestContext>,
    pub control: Arc<Control>,
}

/// A bulk request in flight: its batch's sequence number and outcome.
type InFlight = BoxFuture<'static, (u64, Result<(), Error>)>;

impl Worker {
    /// Runs until drained or aborted; a failure that must stop the ingester is reported to
    /// `shared.failures`.
    pub async fn run(self) {
        let partition = self.control.partition;
        match self.work().await {
            Ok(()) => tracing::debug!(partition, "worker drained"),
            Err(Error::Aborted) => tracing::debug!(partition, "worker aborted"),
            Err(error) => {
                tracing::error!(partition, %error, "worker failed");
                let _ = self.shared.failures.send(error);
            }
        }
    }

    async fn work(&self) -> Result<(), Error> {
        let Self { shared, control, .. } = self;
        let partition = control.partition;
        let labels = PartitionLabels { partition };
        let mut batcher = Batcher::new(shared.limits);
        let mut watermark = Watermark::default();
        let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
        // Flushed batches waiting for a free bulk slot, oldest first; while any waits, nothing is
        // read. Bounded by one record: its items fill at most (max_record_document_bytes +
        // max_document_bytes) / max_bytes + 1 batches, each at most max_bytes plus one item.
        let mut waiting: VecDeque<Batch> = VecDeque::new();
        let mut paused = false;
        // Set when draining (revocation, shutdown, or a replay's end bound), with the flush reason.
        let mut draining: Option<FlushReason> = None;
        let mut stored: Option<i64> = None;
        let mut last_timestamp_ms = 0;
        let mut mapped = Mapped::default();
        let result = loop {
            // Draining: the open batch is flushed once no full batch waits before it (batches
            // must enter the watermark in offset order).
            if waiting.is_empty()
                && let Some(reason) = draining
            {
                waiting.extend(batcher.take(reason));
            }
            while in_flight.len() < shared.max_inflight_bulks
                && let Some(batch) = waiting.pop_front()
            {
                let covered = Covered { offset: batch.last_offset, timestamp_ms: last_timestamp_ms };
                in_flight.push(self.launch(batch, watermark.open(covered)));
            }
            let blocked = !waiting.is_empty();
            if blocked != paused {
                self.pause(blocked);
                paused = blocked;
            }
            if draining.is_some() && waiting.is_empty() && in_flight.is_empty() && batcher.is_empty() {
                break Ok(());
            }
            let reading = waiting.is_empty() && draining.is_none();
            tokio::select! {
                biased;
                () = control.abort.cancelled() => break Err(Error::Aborted),
                () = control.drain.cancelled(), if draining.is_none() => {
                    draining = Some(if control.shutting_down.load(Ordering::Relaxed) {
                        FlushReason::Shutdown
                    } else {
                        FlushReason::Revoke
                    });
                }
                Some((seq, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Err(error) = outcome {
                        break Err(error);
                    }
                    // A batch holding only the middle of a large record covers no new offset.
                    if let Some(covered) = watermark.finish(seq)
                        && covered.offset >= 0
                        && stored.is_none_or(|last| covered.offset > last)
                        && control.fence.store(self.consumer.as_ref(), covered.offset)
                    {
                        stored = Some(covered.offset);
                        control.durable.store(covered.offset, Ordering::Relaxed);
                        let age = now_ms().saturating_sub(covered.timestamp_ms).max(0);
                        // Milliseconds to seconds; precision loss is irrelevant at these magnitudes.
                        #[allow(clippy::cast_precision_loss)]
                        shared.metrics.lag_seconds.get_or_create(&labels).set(age as f64 / 1000.0);
                    }
                }
                () = sleep_until(batcher.deadline()), if reading => waiting.extend(batcher.take(FlushReason::Timeout)),
                received = self.queue.recv(), if reading => match received {
                    // Replays ask for end-of-partition events: the end bound is at or below the
                    // high watermark it was resolved against, so the partition's end is past it.
                    Err(KafkaError::PartitionEOF(_)) => {
                        if control.end.is_some() {
                            draining = Some(FlushReason::End);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(partition, %error, "kafka consume error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(message) if control.end.is_some_and(|end| message.offset() >= end) => {
                        draining = Some(FlushReason::End);
                    }
                    Ok(message) => {
                        let offset = message.offset();
                        if control.end.is_some_and(|end| offset + 1 >= end) {
                            draining = Some(FlushReason::End);
                        }
                        let record = Record {
                            offset,
                            key: message.key().map(Bytes::copy_from_slice),
                            value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                        };
                        last_timestamp_ms = message.timestamp().to_millis().unwrap_or(last_timestamp_ms);
                        drop(message);
                        let items = self.take(record, &mut mapped).await?;
                        waiting.extend(batcher.push(offset, items, Instant::now()));
                    }
                },
            }
        };
        shared.metrics.inflight_bulks.dec_by(i64::try_from(in_flight.len()).unwrap_or(0));
        if paused {
            self.pause(false);
        }
        result?;
        if let Some(last) = stored {
            let (consumer, control) = (self.consumer.clone(), self.control.clone());
            let _ = tokio::task::spawn_blocking(move || control.fence.commit(consumer.as_ref(), last)).await;
        }
        Ok(())
    }

    /// Pauses or resumes fetching for the partition.
    fn pause(&self, pause: bool) {
        let partition = self.control.partition;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.shared.topic, partition);
        let result = if pause { self.consumer.pause(&tpl) } else { self.consumer.resume(&tpl) };
        match result {
            Ok(()) if pause => {
                tracing::debug!(partition, "every bulk slot busy: fetching paused");
                self.shared.metrics.paused_partitions.inc();
            }
            Ok(()) => {
                tracing::debug!(partition, "fetching resumed");
                self.shared.metrics.paused_partitions.dec();
            }
            Err(error) => tracing::warn!(partition, pause, %error, "cannot pause or resume fetching"),
        }
    }

    fn launch(&self, batch: Batch, seq: u64) -> InFlight {
        let (shared, abort) = (self.shared.clone(), self.control.abort.clone());
        shared.metrics.inflight_bulks.inc();
        async move {
            let outcome = write(&shared, batch, &abort).await;
            shared.metrics.inflight_bulks.dec();
            (seq, outcome)
        }
        .boxed()
    }

    /// Decodes and maps one record into bulk items. What can never be indexed (a record that is
    /// undecodable, over `limits.max_record_bytes`, or whose documents would pass
    /// `limits.max_record_document_bytes`; spans refused alone) is dead-lettered first, so the
    /// record's offset enters a batch only after that is durable.
    async fn take(&self, record: Record, mapped: &mut Mapped) -> Result<Vec<Item>, Error> {
        let shared = &self.shared;
        let partition = self.control.partition;
        shared.metrics.records.inc();
        let Record { offset, key, value } = record;
        let limits = shared.record_limits;
        mapped.clear();
        let mut letters = Vec::new();
        // The request's protobuf bytes, which a dead letter of one of its spans is cut from.
        let mut payload = value.clone();
        // A re-driven dead letter's spans keep their original coordinates if they fail again.
        let redrive = (shared.encoding == Encoding::DeadLetter)
            .then(|| deadletter::Redrive::of(&value, &shared.topic, partition, offset))
            .flatten();
        let origin = |payload: &Bytes, position: [usize; 3], index: String| Origin {
            partition,
            offset,
            key: key.clone(),
            record: payload.clone(),
            position,
            index,
            redrive: redrive.clone(),
        };
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
                    map_request(&request, &shared.routing, limits.documents, now_ms() * 1000, mapped);
                    control_spans(&self.control, mapped.spans);
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
                            &origin(&payload, refused.position, String::new()),
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
                    letters.push(deadletter::undecodable(&shared.topic, partition, offset, key.clone(), &value, error));
                }
            }
        }
        if let Some(rate) = &shared.rate {
            rate.acquire(mapped.docs.iter().filter(|d| d.kind == DocKind::Span).count()).await;
        }
        if !letters.is_empty() {
            if let Some(redrive) = &redrive {
                letters.iter_mut().for_each(|l| redrive.stamp(&mut l.envelope));
            }
            shared.dead_letters.send(letters, &self.control.abort).await?;
        }
        let mut services = shared.services.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Documents are moved into their items: the index name goes to the origin without a copy.
        Ok(mapped
            .docs
            .drain(..)
            .filter(|d| d.kind == DocKind::Span || services.first_time(&d.index, &d.id))
            .map(|d| Item {
                ndjson: encode_item(&d),
                kind: d.kind,
                end_micros: d.end_micros,
                origin: d.position.map(|position| origin(&payload, position, d.index)),
            })
            .collect())
    }
}

/// Dead letters of one batch are sent in groups of about this many payload bytes, so a batch whose
/// spans the store all rejects holds at most this much of them at once (each decodes its record
/// again to cut its span out).
const DEAD_LETTER_GROUP_BYTES: usize = 8 << 20;

/// Writes one batch until every item is durable, dead-lettering the spans the store rejects for
/// good. The batch's offsets are the caller's business.
async fn write(shared: &Shared, batch: Batch, abort: &CancellationToken) -> Result<(), Error> {
    let Shared { bulk, dead_letters, metrics, topic, .. } = shared;
    metrics.flushes.get_or_create(&ReasonLabels { reason: batch.reason.as_str() }).inc();
    tracing::debug!(reason = %batch.reason, items = batch.items.len(), bytes = batch.bytes, "flushing batch");
    let ends: Vec<i64> = batch.items.iter().filter(|i| i.kind == DocKind::Span).map(|i| i.end_micros).collect();
    let rejected = bulk.write_all(batch.items, abort).await?;
    let mut letters = Vec::new();
    let mut letter_bytes = 0;
    for r in rejected {
        let letter = r.item.origin.as_ref().and_then(|origin| {
            deadletter::rejected_span(topic, origin, Stage::Index, r.error_type.clone(), r.reason.clone())
        });
        match letter {
            Some(letter) => {
                tracing::warn!(status = r.status, error_type = %r.error_type, reason = %r.reason, "span rejected by the store, dead-lettering it");
                letter_bytes += letter.envelope.payload.len();
                letters.push(letter);
                if letter_bytes >= DEAD_LETTER_GROUP_BYTES {
                    dead_letters.send(std::mem::take(&mut letters), abort).await?;
                    letter_bytes = 0;
                }
            }
            // Service documents are derived from spans that are themselves indexed or
            // dead-lettered; losing one only hides an operation name from the service list.
            None => {
                let kind = if r.item.kind == DocKind::Span { "span" } else { "service" };
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
    Ok(())
}

fn control_spans(control: &Control, n: usize) {
    control.spans.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// What decoding a record as `encoding` would take, priced from its wire shape without decoding it
/// (protobuf records and dead letters); `None` when it cannot be priced (JSON, or bytes the decoder
/// will refuse anyway).
pub fn decoded_cost(encoding: Encoding, value: &[u8]) -> Option<usize> {
    match encoding {
        Encoding::OtlpProto => spanline_common::otlp::scan(value).ok().map(|shape| shape.decoded_bytes),
        Encoding::DeadLetter => {
            let letter = DeadLetter::decode(value).ok()?;
            let cost = spanline_common::otlp::scan(&letter.payload).ok()?.decoded_bytes;
            // The envelope's own copy of the payload is held while its request is decoded.
            Some(cost.saturating_add(letter.payload.len()))
        }
        Encoding::OtlpJson => None,
    }
}

/// Decodes a record as `encoding`: the request, and its protobuf bytes (the record itself when it
/// is protobuf).
pub fn decode(encoding: Encoding, value: &Bytes) -> Result<(ExportTraceServiceRequest, Bytes), String> {
    match encoding {
        Encoding::OtlpProto => ExportTraceServiceRequest::decode(value.as_ref())
            .map(|r| (r, value.clone()))
            .map_err(|e| format!("invalid OTLP protobuf: {e}")),
        Encoding::OtlpJson => spanline_common::otlp::decode_json(value).map(|r| {
            let proto = Bytes::from(r.encode_to_vec());
            (r, proto)
        }),
        Encoding::DeadLetter => {
            let letter =
                DeadLetter::decode(value.as_ref()).map_err(|e| format!("invalid spanline.v1.DeadLetter: {e}"))?;
            let payload = Bytes::from(letter.payload);
            match PayloadKind::try_from(letter.payload_kind) {
                Ok(PayloadKind::OtlpProto | PayloadKind::RawRecord) => decode(Encoding::OtlpProto, &payload),
                _ => Err(format!("dead letter with unknown payload kind {}", letter.payload_kind)),
            }
        }
    }
}

/// One consumed record, copied out of librdkafka's buffer.
struct Record {
    offset: i64,
    key: Option<Bytes>,
    value: Bytes,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
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
