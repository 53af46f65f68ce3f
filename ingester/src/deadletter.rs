//! `deadletter`: what can never be indexed → the dead-letter topic, before its offset is stored.
//!
//! Called by the worker for records that are not OTLP protobuf or are larger than
//! `limits.max_record_bytes` (stage `DECODE`, the raw record), records whose documents would pass
//! `limits.max_record_document_bytes` (stage `MAP`, the raw record), spans refused alone (stage
//! `MAP`: outside the accepted window, or a document over `limits.max_document_bytes`) and span
//! documents the store rejects for good (stage `INDEX`); a span goes alone in an OTLP request with its
//! resource and scope. Guarantees: [`DeadLetters::send`] returns only when the dead-letter topic
//! acknowledged every envelope (idempotent producer), retrying with backoff until then or until
//! `abort`; the caller stores offsets only after it returns, so a rejected span is in OpenSearch or
//! in the dead-letter topic with its reason, never neither. No envelope is larger than
//! `limits.max_dead_letter_bytes`: one that would be is sent without its payload, naming the source
//! record's topic, partition and offset, so an oversize payload cannot wedge the partition in
//! endless retries.

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
    ByteSize,
    kafka::{QuietContext, QuietProducer},
    repeats::Repeats,
};
use spanline_proto::{DeadLetter, PayloadKind, Stage};
use tokio_util::sync::CancellationToken;

use crate::{
    batch::Origin,
    config::Config,
    document::{DocumentLimits, OverRecord},
    error::Error,
    metrics::{LimitLabels, Metrics, StageLabels},
};

/// One envelope and the key it is produced with.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    pub key: Option<Bytes>,
    pub envelope: DeadLetter,
    /// Set when a `[limits]` bound refused the record or span, for the metrics.
    pub over_limit: Option<OverLimit>,
}

/// Which `[limits]` setting refused a dead-lettered record or span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    /// The setting's name under `[limits]`.
    pub setting: &'static str,
    /// The whole record was refused (else one span).
    pub whole_record: bool,
    /// Spans refused (0 for a record that was not decoded).
    pub spans: u64,
}

/// The bounds on one record, from `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// `limits.max_record_bytes`: larger records are not decoded.
    pub max_record_bytes: usize,
    /// `limits.max_record_decoded_bytes`: records priced higher are not decoded.
    pub max_record_decoded_bytes: usize,
    pub documents: DocumentLimits,
}

impl RecordLimits {
    pub fn from_config(config: &Config) -> Self {
        let l = &config.limits;
        Self {
            max_record_bytes: l.max_record_bytes.as_usize(),
            max_record_decoded_bytes: l.max_record_decoded_bytes.as_usize(),
            documents: DocumentLimits {
                max_document_bytes: l.max_document_bytes.as_usize(),
                max_record_document_bytes: l.max_record_document_bytes.as_usize(),
            },
        }
    }
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
    /// `limits.max_dead_letter_bytes`: the largest envelope plus key.
    max_bytes: usize,
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
        over_limit: None,
    }
}

/// The envelope for a record larger than `limits.max_record_bytes`, which was not decoded.
pub fn record_too_large(
    source_topic: &str,
    partition: i32,
    offset: i64,
    key: Option<Bytes>,
    record: &[u8],
    max_record_bytes: usize,
) -> Letter {
    let reason = format!(
        "record of {} bytes is over limits.max_record_bytes ({}), not decoded",
        record.len(),
        ByteSize::from_usize(max_record_bytes)
    );
    refused_undecoded(
        undecodable(source_topic, partition, offset, key, record, reason),
        "record_too_large",
        "max_record_bytes",
    )
}

/// The envelope for a record whose decoding would take more than `limits.max_record_decoded_bytes`
/// (priced from its wire shape), which was not decoded.
pub fn record_too_costly(
    source_topic: &str,
    partition: i32,
    offset: i64,
    key: Option<Bytes>,
    record: &[u8],
    cost: usize,
    bound: usize,
) -> Letter {
    let reason = format!(
        "record of {} bytes would take {cost} bytes to decode, over limits.max_record_decoded_bytes ({}), not decoded",
        record.len(),
        ByteSize::from_usize(bound)
    );
    refused_undecoded(
        undecodable(source_topic, partition, offset, key, record, reason),
        "record_too_costly",
        "max_record_decoded_bytes",
    )
}

/// An undecoded record's letter marked as refused whole by the bound `setting`.
fn refused_undecoded(mut letter: Letter, error_type: &str, setting: &'static str) -> Letter {
    letter.envelope.error_type = error_type.into();
    letter.over_limit = Some(OverLimit { setting, whole_record: true, spans: 0 });
    letter
}

/// The envelope for a record whose documents would pass `limits.max_record_document_bytes`, at
/// stage `MAP`: `request` (the record as OTLP protobuf) whole, every span in it.
pub fn record_over_documents(
    source_topic: &str,
    partition: i32,
    offset: i64,
    key: Option<Bytes>,
    request: &[u8],
    over: &OverRecord,
) -> Letter {
    let spans = u64::try_from(over.spans).unwrap_or(u64::MAX);
    let mut letter = undecodable(source_topic, partition, offset, key, request, over.reason());
    let env = &mut letter.envelope;
    env.payload_kind = PayloadKind::OtlpProto as i32;
    env.stage = Stage::Map as i32;
    env.error_type = "record_documents_too_large".into();
    env.span_count = u32::try_from(spans).unwrap_or(u32::MAX);
    letter.over_limit = Some(OverLimit { setting: "max_record_document_bytes", whole_record: true, spans });
    letter
}

/// The envelope for one span that will never be indexed (`stage` says why: the store rejected it,
/// or it was refused before indexing), cut from the record's bytes: the span alone in an OTLP
/// request, with its resource and scope. `None` if the record no longer holds the span (it always
/// should).
pub fn rejected_span(
    source_topic: &str,
    origin: &Origin,
    stage: Stage,
    error_type: String,
    reason: String,
) -> Option<Letter> {
    let request = ExportTraceServiceRequest::decode(origin.record.as_ref()).ok()?;
    refused_span(source_topic, &request, origin, stage, error_type, reason)
}

/// [`rejected_span`] for a request already decoded (`origin.record` is not read).
pub fn refused_span(
    source_topic: &str,
    request: &ExportTraceServiceRequest,
    origin: &Origin,
    stage: Stage,
    error_type: String,
    reason: String,
) -> Option<Letter> {
    let [r, s, p] = origin.position;
    let resource_spans = request.resource_spans.get(r)?;
    let scope_spans = resource_spans.scope_spans.get(s)?;
    let span = scope_spans.spans.get(p)?;
    let single = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource_spans.resource.clone(),
            schema_url: resource_spans.schema_url.clone(),
            scope_spans: vec![ScopeSpans {
                scope: scope_spans.scope.clone(),
                schema_url: scope_spans.schema_url.clone(),
                spans: vec![span.clone()],
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
        over_limit: None,
    })
}

/// The longest reason kept in an envelope that had to shed its payload.
const MAX_SHED_REASON: usize = 4096;

/// `letter`'s envelope as bytes, at most `max` of them with its key: past it the payload is left
/// out (the reason says so and where the record is), then, if still too large, the key and the end
/// of the reason. Returns whether the payload was left out.
fn encode_within(letter: &mut Letter, max: usize) -> (Vec<u8>, bool) {
    let key_len = letter.key.as_ref().map_or(0, Bytes::len);
    if letter.envelope.encoded_len() + key_len <= max {
        return (letter.envelope.encode_to_vec(), false);
    }
    let env = &mut letter.envelope;
    let omitted = std::mem::take(&mut env.payload).len();
    env.payload_kind = PayloadKind::Unspecified as i32;
    env.span_count = 0;
    // Half the bound at most, so the envelope's other fields (names, the note below) fit in the rest.
    let keep = MAX_SHED_REASON.min(max / 2);
    if env.reason.len() > keep {
        let mut cut = keep;
        while !env.reason.is_char_boundary(cut) {
            cut -= 1;
        }
        env.reason.truncate(cut);
        env.reason.push('…');
    }
    env.reason = format!(
        "{}; payload of {omitted} bytes left out: the envelope would pass limits.max_dead_letter_bytes ({}); the source record is {} partition {} offset {}",
        env.reason,
        ByteSize::from_usize(max),
        env.source_topic,
        env.source_partition,
        env.source_offset
    );
    let bytes = env.encode_to_vec();
    if bytes.len() + key_len > max {
        letter.key = None;
    }
    (bytes, true)
}

impl DeadLetters {
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, Error> {
        let client = config.kafka.client();
        let mut cfg = client.base("spanline-ingester-dlq");
        let max_bytes = config.limits.max_dead_letter_bytes.as_usize();
        cfg.set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            // Room for the largest envelope and its record framing (librdkafka's default is 1000000).
            .set("message.max.bytes", max_bytes.saturating_add(1024).max(1_000_000).to_string());
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
            max_bytes,
        })
    }

    /// The bounds on one record (`[limits]`).
    /// The topic records are consumed from (named in every envelope).
    pub fn source_topic(&self) -> &str {
        &self.source_topic
    }

    /// Produces every letter and waits for its acknowledgement, retrying failed ones with backoff.
    pub async fn send(&self, letters: Vec<Letter>, abort: &CancellationToken) -> Result<(), Error> {
        let mut pending: Vec<(Letter, Vec<u8>)> = letters
            .into_iter()
            .map(|mut l| {
                let (bytes, shed) = encode_within(&mut l, self.max_bytes);
                if shed {
                    let env = &l.envelope;
                    tracing::warn!(
                        partition = env.source_partition,
                        offset = env.source_offset,
                        stage = env.stage,
                        "dead letter over limits.max_dead_letter_bytes, written without its payload"
                    );
                    self.metrics.dead_letter_payloads_left_out.inc();
                }
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
                        if let Some(over) = letter.over_limit {
                            let labels = LimitLabels { limit: over.setting };
                            if over.whole_record {
                                self.metrics.over_limit_records.get_or_create(&labels).inc();
                            }
                            self.metrics.over_limit_spans.get_or_create(&labels).inc_by(over.spans);
                        }
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

    #[test]
    fn an_envelope_over_the_bound_goes_without_its_payload_naming_the_record() {
        let record = vec![7u8; 50_000];
        let mut letter = record_too_large("otlp_spans", 3, 42, Some(Bytes::from_static(b"k")), &record, 10_240);
        assert_eq!(letter.over_limit, Some(OverLimit { setting: "max_record_bytes", whole_record: true, spans: 0 }));
        assert!(letter.envelope.reason.contains("record of 50000 bytes is over limits.max_record_bytes (10KiB)"));
        let (fits, shed) = encode_within(&mut letter.clone(), 60_000);
        assert!(!shed);
        assert_eq!(DeadLetter::decode(fits.as_slice()).expect("envelope").payload, record);
        let (bytes, shed) = encode_within(&mut letter, 8_192);
        assert!(shed && bytes.len() <= 8_192);
        let env = DeadLetter::decode(bytes.as_slice()).expect("envelope");
        assert!(env.payload.is_empty());
        assert_eq!(env.payload_kind(), PayloadKind::Unspecified);
        assert_eq!((env.stage(), env.error_type.as_str(), env.source_offset), (Stage::Decode, "record_too_large", 42));
        assert!(env.reason.contains("payload of 50000 bytes left out"), "{}", env.reason);
        assert!(env.reason.contains("otlp_spans partition 3 offset 42"), "{}", env.reason);
        assert_eq!(letter.key.as_deref(), Some(&b"k"[..]), "the key stays when it fits");
        // A key that alone passes the bound goes too; a huge reason is cut.
        let mut letter =
            undecodable("otlp_spans", 0, 1, Some(Bytes::from(vec![b'k'; 9_000])), b"x", "r".repeat(20_000));
        let (bytes, shed) = encode_within(&mut letter, 8_192);
        assert!(shed && bytes.len() <= 8_192 && letter.key.is_none());
    }
}
