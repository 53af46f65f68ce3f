//! `consume`: Kafka records → documents → batches → bulk → stored offsets.
//!
//! Run by the pipeline as one task per ingester. Records are read from the group's partitions,
//! decoded as OTLP protobuf, mapped to documents and batched; a flushed batch is written by
//! [`BulkClient::write_all`] and only then are its offsets stored ([`commit::store`]).
//! Batches are written one at a time, so a partition's offsets are stored in order and never ahead
//! of durable documents.
//!
//! A record that is not OTLP protobuf, and a span document the store rejects for good, are written to
//! the dead-letter topic ([`DeadLetters`]) before the offsets that cover them are stored.
//!
//! Rebalances (cooperative-sticky): records of a revoked partition still in the open batch are
//! written and their offsets fail to store (`ERR__STATE`), so the new owner re-reads them; document
//! ids are deterministic, so nothing is duplicated.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rdkafka::{
    ClientContext, Message,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    statistics::Statistics,
};
use spanline_proto::Stage;
use tokio_util::sync::CancellationToken;

use crate::{
    batch::{Batch, Batcher, FlushReason, Item, Origin},
    bulk::{BulkClient, encode_item},
    commit,
    config::Encoding,
    deadletter::{self, DeadLetters},
    document::{DocKind, Mapped, Routing, map_request},
    error::Error,
    metrics::{Metrics, PartitionLabels, ReasonLabels},
};

/// librdkafka callbacks: rebalance logging and per-partition lag from the statistics.
#[derive(Debug)]
pub struct IngestContext {
    pub metrics: Metrics,
    pub topic: String,
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (&partition, p) in &topic.partitions {
                if partition >= 0 && p.consumer_lag_stored >= 0 {
                    self.metrics.lag.get_or_create(&PartitionLabels { partition }).set(p.consumer_lag_stored);
                }
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => tracing::info!(partitions = ?partitions(tpl), "partitions revoked"),
            Rebalance::Assign(tpl) => tracing::info!(partitions = ?partitions(tpl), "partitions assigned"),
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
        if let Ok(assignment) = consumer.assignment() {
            self.metrics.assigned_partitions.set(i64::try_from(assignment.count()).unwrap_or(i64::MAX));
        }
    }
}

fn partitions(tpl: &rdkafka::TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// The consumer type the ingester uses.
pub type IngestConsumer = StreamConsumer<IngestContext>;

/// Everything the loop needs.
pub struct Consume {
    pub consumer: Arc<IngestConsumer>,
    pub topic: String,
    pub encoding: Encoding,
    pub routing: Routing,
    pub batcher: Batcher,
    pub bulk: BulkClient,
    pub dead_letters: DeadLetters,
    pub services: ServiceCache,
    pub metrics: Metrics,
}

/// How many (index, service document) pairs are remembered; past it the memory is cleared.
const SERVICE_CACHE_CAPACITY: usize = 100_000;

/// The service documents already sent, so each (service, operation) is written once per daily index
/// rather than with every record. Bounded: cleared when full, after which some are written again
/// (harmlessly: the id is deterministic and `create` answers 409).
#[derive(Debug, Default)]
pub struct ServiceCache(std::collections::HashSet<u64>);

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

impl Consume {
    /// Runs until `shutdown`; then flushes, writes and stores the last batch unless `abort` fires
    /// first (in which case its offsets are not stored and its records will be read again).
    pub async fn run(mut self, shutdown: CancellationToken, abort: CancellationToken) -> Result<(), Error> {
        let mut mapped = Mapped::default();
        loop {
            let deadline = self.batcher.deadline();
            let flush = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = sleep_until(deadline) => self.batcher.take(FlushReason::Timeout),
                received = self.consumer.recv() => match received {
                    Err(error) => {
                        tracing::warn!(%error, "kafka consume error");
                        None
                    }
                    Ok(message) => {
                        let record = Record {
                            partition: message.partition(),
                            offset: message.offset(),
                            key: message.key().map(Bytes::copy_from_slice),
                            value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                        };
                        drop(message);
                        self.take(record, &mut mapped, &abort).await?
                    }
                },
            };
            if let Some(batch) = flush {
                self.write(batch, &abort).await?;
            }
        }
        if let Some(batch) = self.batcher.take(FlushReason::Shutdown) {
            self.write(batch, &abort).await?;
        }
        commit::commit_now(self.consumer.as_ref());
        Ok(())
    }

    /// Decodes and maps one record into the batch. What can never be indexed (an undecodable record,
    /// spans outside the accepted time window) is dead-lettered first, so the record's offset enters
    /// the batch only after that is durable.
    async fn take(
        &mut self,
        record: Record,
        mapped: &mut Mapped,
        abort: &CancellationToken,
    ) -> Result<Option<Batch>, Error> {
        self.metrics.records.inc();
        let Record { partition, offset, key, value } = record;
        mapped.clear();
        let decoded = match self.encoding {
            Encoding::OtlpProto => ExportTraceServiceRequest::decode(value.as_ref()).map_err(|e| e.to_string()),
            Encoding::OtlpJson => spanline_common::otlp::decode_json(&value),
        };
        let mut letters = Vec::new();
        match decoded {
            Ok(request) => map_request(&request, &self.routing, now_micros(), mapped),
            Err(error) => {
                self.metrics.decode_errors.inc();
                tracing::warn!(partition, offset, %error, "record cannot be decoded, dead-lettering it");
                letters.push(deadletter::undecodable(&self.topic, partition, offset, key.clone(), &value, error));
            }
        }
        let origin = |position: [usize; 3], index: String| Origin {
            partition,
            offset,
            key: key.clone(),
            record: value.clone(),
            position,
            index,
        };
        for out in mapped.out_of_window.drain(..) {
            tracing::debug!(partition, offset, reason = %out.reason, "span outside the accepted window, dead-lettering it");
            letters.extend(deadletter::rejected_span(
                &self.topic,
                &origin(out.position, String::new()),
                Stage::Map,
                "span_out_of_range".into(),
                out.reason,
            ));
        }
        if !letters.is_empty() {
            self.dead_letters.send(letters, abort).await?;
        }
        let services = &mut self.services;
        // Documents are moved into their items: the index name goes to the origin without a copy.
        let items =
            mapped.docs.drain(..).filter(|d| d.kind == DocKind::Span || services.first_time(&d.index, &d.id)).map(
                |d| Item {
                    ndjson: encode_item(&d),
                    kind: d.kind,
                    origin: d.position.map(|position| origin(position, d.index)),
                },
            );
        Ok(self.batcher.push(partition, offset, items, Instant::now()))
    }

    async fn write(&self, batch: Batch, abort: &CancellationToken) -> Result<(), Error> {
        self.metrics.flushes.get_or_create(&ReasonLabels { reason: batch.reason.as_str() }).inc();
        tracing::debug!(reason = %batch.reason, items = batch.items.len(), bytes = batch.bytes, "flushing batch");
        let rejected = self.bulk.write_all(batch.items, abort).await?;
        let mut letters = Vec::new();
        for r in rejected {
            let letter = r.item.origin.as_ref().and_then(|origin| {
                deadletter::rejected_span(&self.topic, origin, Stage::Index, r.error_type.clone(), r.reason.clone())
            });
            match letter {
                Some(letter) => {
                    tracing::warn!(status = r.status, error_type = %r.error_type, reason = %r.reason, "span rejected by the store, dead-lettering it");
                    letters.push(letter);
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
            self.dead_letters.send(letters, abort).await?;
        }
        commit::store(self.consumer.as_ref(), &self.topic, &batch.offsets);
        self.metrics.freshness.observe(batch.opened.elapsed().as_secs_f64());
        Ok(())
    }
}

/// One consumed record, copied out of librdkafka's buffer.
struct Record {
    partition: i32,
    offset: i64,
    key: Option<Bytes>,
    value: Bytes,
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
