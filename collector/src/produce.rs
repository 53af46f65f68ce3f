//! `produce`: encoded records → the span topic, answered only after Kafka acknowledged every one.
//!
//! Called by [`crate::pipeline::Exporter`] once per export. Guarantees: `publish` returns `Ok` only
//! when every record of the request has a successful delivery report from an idempotent producer
//! (`enable.idempotence=true`, so `acks=all`). Encoded bytes waiting for Kafka are bounded by
//! `limits.max_inflight_bytes`: past the bound `publish` fails at once with
//! [`Error::Overloaded`] instead of buffering. A failed `publish` may leave some records of the
//! request in Kafka; the client retries the whole request and the ingester's deterministic document
//! ids make the repeat harmless.

use std::{sync::Arc, time::Instant};

use futures::future::try_join_all;
use rdkafka::{
    ClientConfig,
    producer::{FutureRecord, Producer as _},
    util::Timeout,
};
use spanline_common::kafka::{QuietContext, QuietProducer};
use tokio::sync::Semaphore;

use crate::{config::Config, encode::Record, error::Error, metrics::Metrics};

/// Permits of the in-flight semaphore are KiB, so a `u32` permit count covers 4 TiB.
const PERMIT_BYTES: usize = 1024;

/// The Kafka side of the collector.
#[derive(Clone)]
pub struct Producer {
    inner: QuietProducer,
    topic: Arc<str>,
    inflight: Arc<Semaphore>,
    metrics: Metrics,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("topic", &self.topic).finish_non_exhaustive()
    }
}

/// librdkafka settings for the collector's producer.
pub fn client_config(config: &Config) -> ClientConfig {
    let kafka = &config.kafka;
    let client = kafka.client();
    let mut cfg = client.base("spanline-collector");
    let queue_kib = (config.limits.max_inflight_bytes.bytes() / 1024).clamp(1, 2_097_151);
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", kafka.delivery_timeout.as_millis().to_string())
        .set("linger.ms", kafka.linger.as_millis().to_string())
        .set("compression.type", &kafka.compression)
        .set("partitioner", &kafka.partitioner)
        // librdkafka's own queue has the same byte bound as the collector, so neither grows past it.
        .set("queue.buffering.max.kbytes", queue_kib.to_string())
        .set("message.max.bytes", (kafka.max_message_bytes.bytes() + 64 * 1024).to_string());
    client.apply_overrides(&mut cfg);
    cfg
}

impl Producer {
    /// Creates the producer; it connects lazily.
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, Error> {
        let inner: QuietProducer = client_config(config)
            .create_with_context(QuietContext::default())
            .map_err(|e| Error::Setup(format!("cannot create kafka producer: {e}")))?;
        let permits = config.limits.max_inflight_bytes.as_usize() / PERMIT_BYTES;
        Ok(Self {
            inner,
            topic: Arc::from(config.kafka.topic.as_str()),
            inflight: Arc::new(Semaphore::new(permits)),
            metrics,
        })
    }

    /// Produces `records` and waits for all their delivery reports.
    pub async fn publish(&self, records: &[Record]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        let bytes: usize = records.iter().map(|r| r.payload.len() + r.key.len()).sum();
        let permits = u32::try_from(bytes.div_ceil(PERMIT_BYTES)).unwrap_or(u32::MAX);
        let _permit = self.inflight.clone().try_acquire_many_owned(permits).map_err(|_| {
            Error::Overloaded(format!(
                "more than limits.max_inflight_bytes waiting for kafka (this request needs {bytes} bytes)"
            ))
        })?;
        let bytes_i64 = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.metrics.inflight_bytes.inc_by(bytes_i64);
        let started = Instant::now();
        let result = self.send_all(records).await;
        self.metrics.inflight_bytes.dec_by(bytes_i64);
        self.metrics.kafka_queue_messages.set(i64::from(self.inner.in_flight_count()));
        if result.is_ok() {
            self.metrics.produce_latency.observe(started.elapsed().as_secs_f64());
            self.metrics.records_produced.inc_by(records.len() as u64);
        }
        result
    }

    async fn send_all(&self, records: &[Record]) -> Result<(), Error> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let message = FutureRecord::to(&self.topic).key(record.key.as_str()).payload(record.payload.as_slice());
            // `send_result` never blocks: a full queue comes back at once as `QueueFull`.
            let delivery = self.inner.send_result(message).map_err(|(error, _)| Error::from(error))?;
            deliveries.push(async move {
                match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => Err(Error::from(error)),
                    Err(_cancelled) => Err(Error::Delivery(rdkafka::error::KafkaError::Canceled)),
                }
            });
        }
        try_join_all(deliveries).await.map(|_| ())
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
