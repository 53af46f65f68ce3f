//! `deadletter`: what can never be indexed → the dead-letter topic, before its offset is stored.
//!
//! Called by the consume loop for records that are not OTLP protobuf (stage `DECODE`, the raw record)
//! and for span documents the store rejects for good (stage `INDEX`, the span alone in an OTLP
//! request with its resource and scope). Guarantees: [`DeadLetters::send`] returns only when the
//! dead-letter topic acknowledged every envelope (idempotent producer), retrying with backoff until
//! then or until `abort`; the caller stores offsets only after it returns, so a rejected span is in
//! OpenSearch or in the dead-letter topic with its reason, never neither.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{ResourceSpans, ScopeSpans},
};
use prost::Message;
use rdkafka::producer::FutureRecord;
use spanline_common::{
    kafka::{QuietContext, QuietProducer},
    repeats::Repeats,
};
use spanline_proto::{DeadLetter, PayloadKind, Stage};
use tokio_util::sync::CancellationToken;

use crate::{
    batch::Origin,
    config::Config,
    error::Error,
    metrics::{Metrics, StageLabels},
};

/// One envelope and the key it is produced with.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    pub key: Option<Bytes>,
    pub envelope: DeadLetter,
}

/// The dead-letter producer.
#[derive(Clone)]
pub struct DeadLetters {
    producer: QuietProducer,
    topic: String,
    source_topic: String,
    backoff: ExponentialBuilder,
    metrics: Metrics,
    /// A dead-letter topic that cannot be written fails every retry: logged once per interval.
    repeats: std::sync::Arc<Repeats>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters").field("topic", &self.topic).finish_non_exhaustive()
    }
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// The envelope for a record that could not be decoded.
pub fn undecodable(
    source_topic: &str,
    partition: i32,
    offset: i64,
    key: Option<Bytes>,
    record: &[u8],
    reason: String,
) -> Letter {
    Letter {
        key,
        envelope: DeadLetter {
            payload_kind: PayloadKind::RawRecord as i32,
            payload: record.to_vec(),
            stage: Stage::Decode as i32,
            error_type: "decode_error".into(),
            reason,
            source_topic: source_topic.into(),
            source_partition: partition,
            source_offset: offset,
            target_index: String::new(),
            dead_lettered_at_unix_nano: now_nanos(),
            span_count: 0,
        },
    }
}

/// The envelope for one span that will never be indexed (`stage` says why: the store rejected it,
/// or its start time is outside the accepted window): the span alone in an OTLP request, with its
/// resource and scope. `None` if the record no longer holds the span (it always should).
pub fn rejected_span(
    source_topic: &str,
    origin: &Origin,
    stage: Stage,
    error_type: String,
    reason: String,
) -> Option<Letter> {
    let request = ExportTraceServiceRequest::decode(origin.record.as_ref()).ok()?;
    let [r, s, p] = origin.position;
    let resource_spans = request.resource_spans.into_iter().nth(r)?;
    let scope_spans = resource_spans.scope_spans.into_iter().nth(s)?;
    let span = scope_spans.spans.into_iter().nth(p)?;
    let single = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource_spans.resource,
            schema_url: resource_spans.schema_url,
            scope_spans: vec![ScopeSpans {
                scope: scope_spans.scope,
                schema_url: scope_spans.schema_url,
                spans: vec![span],
            }],
        }],
    };
    Some(Letter {
        key: origin.key.clone(),
        envelope: DeadLetter {
            payload_kind: PayloadKind::OtlpProto as i32,
            payload: single.encode_to_vec(),
            stage: stage as i32,
            error_type,
            reason,
            source_topic: source_topic.into(),
            source_partition: origin.partition,
            source_offset: origin.offset,
            target_index: origin.index.clone(),
            dead_lettered_at_unix_nano: now_nanos(),
            span_count: 1,
        },
    })
}

impl DeadLetters {
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, Error> {
        let client = config.kafka.client();
        let mut cfg = client.base("spanline-ingester-dlq");
        cfg.set("enable.idempotence", "true").set("linger.ms", "5").set("message.timeout.ms", "30000");
        client.apply_overrides(&mut cfg);
        let producer: QuietProducer = cfg.create_with_context(QuietContext::default()).map_err(Error::Kafka)?;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.opensearch.min_backoff)
            .with_max_delay(config.opensearch.max_backoff)
            .with_jitter()
            .without_max_times();
        Ok(Self {
            producer,
            topic: config.kafka.dead_letter_topic.clone(),
            source_topic: config.kafka.topic.clone(),
            backoff,
            metrics,
            repeats: std::sync::Arc::new(Repeats::default()),
        })
    }

    /// The topic records are consumed from (named in every envelope).
    pub fn source_topic(&self) -> &str {
        &self.source_topic
    }

    /// Produces every letter and waits for its acknowledgement, retrying failed ones with backoff.
    pub async fn send(&self, letters: Vec<Letter>, abort: &CancellationToken) -> Result<(), Error> {
        let mut pending: Vec<(Letter, Vec<u8>)> = letters
            .into_iter()
            .map(|l| {
                let bytes = l.envelope.encode_to_vec();
                (l, bytes)
            })
            .collect();
        let mut delays = self.backoff.build();
        while !pending.is_empty() {
            let mut failed = Vec::new();
            let results = futures_join(&self.producer, &self.topic, &pending).await;
            for ((letter, bytes), result) in pending.into_iter().zip(results) {
                match result {
                    Ok(()) => {
                        let stage = Stage::try_from(letter.envelope.stage).map_or("unknown", stage_name);
                        self.metrics.dead_lettered.get_or_create(&StageLabels { stage }).inc();
                    }
                    Err(error) => {
                        if let Some(repeated) = self.repeats.check("dead_letter_retry") {
                            tracing::warn!(%error, topic = %self.topic, repeated, "dead-letter write failed, retrying; offsets held");
                        }
                        failed.push((letter, bytes));
                    }
                }
            }
            pending = failed;
            if !pending.is_empty() {
                let delay = delays.next().unwrap_or(Duration::from_secs(1));
                tokio::select! {
                    () = abort.cancelled() => return Err(Error::Aborted),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
        Ok(())
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Decode => "decode",
        Stage::Map => "map",
        Stage::Index => "index",
        Stage::Unspecified => "unknown",
    }
}

async fn futures_join(producer: &QuietProducer, topic: &str, pending: &[(Letter, Vec<u8>)]) -> Vec<Result<(), String>> {
    let mut deliveries = Vec::with_capacity(pending.len());
    for (letter, bytes) in pending {
        let mut record = FutureRecord::to(topic).payload(bytes.as_slice());
        if let Some(key) = &letter.key {
            record = record.key(key.as_ref());
        }
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e.to_string()));
    }
    let mut out = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        out.push(match delivery {
            Ok(future) => match future.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(e.to_string()),
                Err(_) => Err("delivery cancelled".into()),
            },
            Err(e) => Err(e),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{resource::v1::Resource, trace::v1::Span};

    #[test]
    fn rejected_span_keeps_only_that_span_with_its_resource() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource::default()),
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        Span { name: "a".into(), ..Default::default() },
                        Span { name: "b".into(), ..Default::default() },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let origin = Origin {
            partition: 2,
            offset: 9,
            key: Some(Bytes::from_static(b"k")),
            record: Bytes::from(request.encode_to_vec()),
            position: [0, 0, 1],
            index: "jaeger-span-2026-11-25".into(),
        };
        let letter =
            rejected_span("otlp_spans", &origin, Stage::Index, "mapper_parsing_exception".into(), "bad".into())
                .expect("letter");
        assert_eq!(letter.key.as_deref(), Some(&b"k"[..]));
        let env = letter.envelope;
        assert_eq!((env.source_partition, env.source_offset, env.span_count), (2, 9, 1));
        assert_eq!(env.stage(), Stage::Index);
        assert_eq!(env.target_index, "jaeger-span-2026-11-25");
        let payload = ExportTraceServiceRequest::decode(env.payload.as_slice()).expect("otlp");
        assert_eq!(payload.resource_spans[0].scope_spans[0].spans.len(), 1);
        assert_eq!(payload.resource_spans[0].scope_spans[0].spans[0].name, "b");
        let raw = undecodable("otlp_spans", 1, 5, None, b"\xff", "bad".into());
        assert_eq!(raw.envelope.payload_kind(), PayloadKind::RawRecord);
        assert_eq!(raw.envelope.payload, b"\xff");
    }
}
