//! `produce`: encoded records → the span topic, answered only after Kafka acknowledged every one.
//!
//! Called by [`crate::pipeline::Exporter`] once per export, with the records' [`Charge`] on the
//! memory budget. Guarantees: `publish` returns `Ok` only when every record of the request has a
//! successful delivery report from an idempotent producer (`enable.idempotence=true`, so
//! `acks=all`). librdkafka's queue is sized by the same budget (`queue.buffering.max.kbytes` =
//! `limits.max_inflight_bytes`, and no message-count bound short of librdkafka's maximum), so a
//! request whose records were charged always fits the queue whole: it is never refused half-way
//! with `QueueFull`. Each record's own copy is freed as soon as librdkafka has copied it. A request
//! that fails later (a delivery error or timeout) may leave some records in Kafka; the client retries
//! the whole request and the ingester's deterministic document ids make the repeat harmless.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt as _, stream::FuturesUnordered};
use rdkafka::{
    ClientConfig,
    producer::{FutureRecord, Producer as _},
    util::Timeout,
};
use spanline_common::kafka::{QuietContext, QuietProducer};

use crate::{budget::Charge, config::Config, encode::Record, error::Error, metrics::Metrics};

/// librdkafka's largest `queue.buffering.max.messages`: the queue is bounded by bytes (the budget),
/// and a count bound below it would refuse a request of many small traces part-way.
const QUEUE_MAX_MESSAGES: u32 = 2_147_483_647;

/// The Kafka side of the collector.
#[derive(Clone)]
pub struct Producer {
    inner: QuietProducer,
    topic: Arc<str>,
    metrics: Metrics,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("topic", &self.topic).finish_non_exhaustive()
    }
}

/// librdkafka settings for the collector's producer (secret files read now; the error names the
/// setting, never the secret).
pub fn client_config(config: &Config) -> Result<ClientConfig, String> {
    let kafka = &config.kafka;
    let client = kafka.client();
    let mut cfg = client.base("spanline-collector")?;
    // librdkafka's largest queue.buffering.max.kbytes (2 TiB).
    let queue_kib = (config.limits.max_inflight_bytes.bytes() / 1024).clamp(1, 2_147_483_647);
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", kafka.delivery_timeout.as_millis().to_string())
        .set("linger.ms", kafka.linger.as_millis().to_string())
        .set("compression.type", &kafka.compression)
        .set("partitioner", &kafka.partitioner)
        // librdkafka's own queue has the same byte bound as the collector, so neither grows past it.
        .set("queue.buffering.max.kbytes", queue_kib.to_string())
        .set("queue.buffering.max.messages", QUEUE_MAX_MESSAGES.to_string())
        .set("message.max.bytes", (kafka.max_message_bytes.bytes() + 64 * 1024).to_string());
    client.apply_overrides(&mut cfg);
    Ok(cfg)
}

impl Producer {
    /// Creates the producer; it connects lazily.
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, Error> {
        let inner: QuietProducer = client_config(config)
            .map_err(Error::Setup)?
            .create_with_context(QuietContext::default())
            .map_err(spanline_common::kafka::without_value)
            .map_err(|e| Error::Setup(format!("cannot create kafka producer: {e}")))?;
        Ok(Self { inner, topic: Arc::from(config.kafka.topic.as_str()), metrics })
    }

    /// Produces `records` and waits up to `timeout` for all their delivery reports. `charge` (the
    /// records' share of the memory budget) is held until librdkafka is done with every record: when
    /// the export fails early (a refused record, a failed delivery, the timeout), a task keeps it
    /// until the remaining reports arrive, so librdkafka's queue never holds uncharged records.
    pub async fn publish(&self, records: Vec<Record>, charge: Charge, timeout: Duration) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        let count = records.len() as u64;
        let started = Instant::now();
        let mut deliveries = FuturesUnordered::new();
        let mut result = Ok(());
        for record in records {
            let message = FutureRecord::to(&self.topic).key(&record.key[..]).payload(&record.payload[..]);
            // `send_result` never blocks: a full queue comes back at once as `QueueFull`. librdkafka
            // copies the record; the buffer all of a request's records share is freed once the last is handed over.
            match self.inner.send_result(message) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => {
                    result = Err(Error::from(error));
                    break;
                }
            }
        }
        if result.is_ok() {
            result = tokio::time::timeout(timeout, async {
                while let Some(delivery) = deliveries.next().await {
                    match delivery {
                        Ok(Ok(_)) => {}
                        Ok(Err((error, _))) => return Err(Error::from(error)),
                        Err(_cancelled) => return Err(Error::Delivery(rdkafka::error::KafkaError::Canceled)),
                    }
                }
                Ok(())
            })
            .await
            .unwrap_or(Err(Error::Timeout(timeout)));
        }
        if !deliveries.is_empty() {
            // librdkafka still holds these records (until kafka.delivery_timeout at most).
            tokio::spawn(async move {
                while deliveries.next().await.is_some() {}
                drop(charge);
            });
        }
        self.metrics.kafka_queue_messages.set(i64::from(self.inner.in_flight_count()));
        if result.is_ok() {
            self.metrics.produce_latency.observe(started.elapsed().as_secs_f64());
            self.metrics.records_produced.inc_by(count);
        }
        result
    }

    /// Whether the brokers answer a metadata request for the span topic within `timeout`.
    pub async fn check_metadata(&self, timeout: std::time::Duration) -> Result<(), String> {
        let producer = self.inner.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let metadata =
                producer.client().fetch_metadata(Some(&topic), Timeout::After(timeout)).map_err(|e| e.to_string())?;
            match metadata.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                Some(t) => Err(format!("topic {topic} not available: {:?}", t.error())),
                None => Err(format!("topic {topic} missing from metadata")),
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Waits for every queued record to be delivered, up to `timeout`.
    pub fn flush(&self, timeout: std::time::Duration) -> Result<(), Error> {
        self.inner.flush(Timeout::After(timeout)).map_err(Error::Delivery)
    }
}
