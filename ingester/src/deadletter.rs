//! `deadletter`: what can never be indexed → the dead-letter topic, before its offset is stored.
//!
//! Called by the worker for records that are not OTLP protobuf or are larger than
//! `limits.max_record_bytes` (stage `DECODE`, the raw record), records whose documents would pass
//! `limits.max_record_document_bytes` (stage `MAP`, the raw record), spans refused alone (stage
//! `MAP`: outside the accepted window, or a document over `limits.max_document_bytes`) and span
//! documents the store rejects for good (stage `INDEX`); a span goes alone in an OTLP request with its
//! resource and scope. Guarantees:
//! - [`DeadLetters::send`] returns only when the dead-letter topic acknowledged every envelope
//!   (idempotent producer, `acks=all`), retrying with backoff until then or until `abort`; the
//!   caller stores offsets only after it returns, so a rejected span is in OpenSearch or in the
//!   dead-letter topic with its reason, never neither.
//! - No envelope is larger than `limits.max_dead_letter_bytes`, and one the broker refuses as too
//!   large is sent again without its payload: such an envelope keeps the source record's topic,
//!   partition and offset and the left-out bytes' length and SHA-256, so an oversize payload cannot
//!   wedge the partition in endless retries and the record can still be found and verified.
//! - A write that keeps failing (a missing or unwritable topic) is never silent: while it is
//!   retried the ingester is not ready (`spanline_ingester_stalled{cause="dead_letter_failing"}`),
//!   `spanline_ingester_dead_letter_failures_total{class}` counts the failures and an error naming
//!   the cause, the topic and what to fix is logged once per interval; all of it clears when the
//!   letters are written.
//! - A span re-driven from the dead-letter topic that fails again keeps its original source
//!   coordinates; the new envelope names the re-driven dead-letter record and counts the re-drives
//!   ([`Redrive`]).

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{ResourceSpans, ScopeSpans},
};
use prost::Message;
use rdkafka::{error::KafkaError, producer::FutureRecord, types::RDKafkaErrorCode};
use sha2::{Digest as _, Sha256};
use spanline_common::{
    ByteSize,
    kafka::{QuietContext, QuietProducer, without_value},
    repeats::Repeats,
};
use spanline_proto::{DeadLetter, DeadLetterSource, PayloadKind, Stage};
use tokio_util::sync::CancellationToken;

use crate::{
    batch::Origin,
    config::Config,
    document::{DocumentLimits, OverRecord},
    error::Error,
    health::{Cause, Stalled},
    metrics::{ClassLabels, LimitLabels, Metrics, StageLabels},
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

/// The longest topic name Kafka accepts.
const MAX_TOPIC_NAME: usize = 249;

/// Where a re-driven dead letter's spans came from, stamped on every envelope they get again, so a
/// span that fails again still names its original record (and not the dead-letter record it was
/// re-driven from, which the envelope names separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    /// The original record, as the re-driven envelope named it.
    source: DeadLetterSource,
    /// The dead-letter record being re-driven.
    topic: String,
    partition: i32,
    offset: i64,
}

impl Redrive {
    /// The provenance of the dead-letter record `value` read at `topic`/`partition`/`offset`;
    /// `None` when it is not an envelope naming a source (then its letters name the dead-letter
    /// record itself, the only place known). Reads only the coordinate fields: the payload is
    /// skipped, not copied, so this costs nothing even for an envelope that is not decoded.
    pub fn of(value: &[u8], topic: &str, partition: i32, offset: i64) -> Option<Arc<Self>> {
        // A topic name longer than Kafka allows is not a source (and would be copied into every
        // letter of the record).
        let source = DeadLetterSource::decode(value)
            .ok()
            .filter(|s| !s.source_topic.is_empty() && s.source_topic.len() <= MAX_TOPIC_NAME)?;
        Some(Arc::new(Self { source, topic: topic.to_owned(), partition, offset }))
    }

    /// Names the original record as `envelope`'s source, the re-driven record, and one re-drive more.
    pub fn stamp(&self, envelope: &mut DeadLetter) {
        envelope.source_topic.clone_from(&self.source.source_topic);
        envelope.source_partition = self.source.source_partition;
        envelope.source_offset = self.source.source_offset;
        envelope.redriven_topic.clone_from(&self.topic);
        envelope.redriven_partition = self.partition;
        envelope.redriven_offset = self.offset;
        envelope.redrives = self.source.redrives.saturating_add(1);
    }
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
    /// A dead-letter topic that cannot be written fails every retry: logged once per interval and
    /// failure class.
    repeats: Arc<Repeats>,
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
            ..DeadLetter::default()
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
    target_index: &str,
    stage: Stage,
    error_type: String,
    reason: String,
) -> Option<Letter> {
    let request = ExportTraceServiceRequest::decode(origin.record.as_ref()).ok()?;
    refused_span(source_topic, &request, origin, target_index, stage, error_type, reason)
}

/// [`rejected_span`] for a request already decoded (`origin.record` is not read).
pub fn refused_span(
    source_topic: &str,
    request: &ExportTraceServiceRequest,
    origin: &Origin,
    target_index: &str,
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
            target_index: target_index.into(),
            dead_lettered_at_unix_nano: now_nanos(),
            span_count: 1,
            ..DeadLetter::default()
        },
        over_limit: None,
    })
    .map(|mut letter| {
        if let Some(redrive) = &origin.redrive {
            redrive.stamp(&mut letter.envelope);
        }
        letter
    })
}

/// The longest reason kept in an envelope that had to shed its payload.
const MAX_SHED_REASON: usize = 4096;

/// Leaves `letter`'s payload out, keeping its length and SHA-256 and saying in the reason `why`
/// and where the source record is. The reason is first cut to `keep_reason` bytes. Returns false
/// when there was no payload to leave out.
///
/// SHA-256 rather than a 64-bit FNV-1a: an operator verifies the record found at the coordinates
/// with standard tools (`sha256sum`), and a collision-resistant digest cannot be matched by a
/// different record (a recreated topic reusing offsets, or a crafted one); its cost only falls on
/// the rare envelopes that do not fit.
fn leave_out_payload(letter: &mut Letter, keep_reason: usize, why: &str) -> bool {
    let env = &mut letter.envelope;
    if env.payload.is_empty() {
        return false;
    }
    let payload = std::mem::take(&mut env.payload);
    let digest = Sha256::digest(&payload);
    env.omitted_payload_bytes = u64::try_from(payload.len()).unwrap_or(u64::MAX);
    env.omitted_payload_sha256 = digest.to_vec();
    env.payload_kind = PayloadKind::Unspecified as i32;
    env.span_count = 0;
    if env.reason.len() > keep_reason {
        let mut cut = keep_reason;
        while !env.reason.is_char_boundary(cut) {
            cut -= 1;
        }
        env.reason.truncate(cut);
        env.reason.push('…');
    }
    env.reason = format!(
        "{}; payload of {} bytes left out (sha256 {}): {why}; the source record is {} partition {} offset {}",
        env.reason,
        payload.len(),
        spanline_common::ids::to_hex(&digest),
        env.source_topic,
        env.source_partition,
        env.source_offset
    );
    true
}

/// `letter`'s envelope as bytes, at most `max` of them with its key: past it the payload is left
/// out (its length and digest kept; the reason says so and where the record is), then, if still
/// too large, the key and the end of the reason. Returns whether the payload was left out.
fn encode_within(letter: &mut Letter, max: usize) -> (Vec<u8>, bool) {
    let key_len = letter.key.as_ref().map_or(0, Bytes::len);
    if letter.envelope.encoded_len() + key_len <= max {
        return (letter.envelope.encode_to_vec(), false);
    }
    // Half the bound at most, so the envelope's other fields (names, the note) fit in the rest.
    let why = format!("the envelope would pass limits.max_dead_letter_bytes ({})", ByteSize::from_usize(max));
    let shed = leave_out_payload(letter, MAX_SHED_REASON.min(max / 2), &why);
    let bytes = letter.envelope.encode_to_vec();
    if bytes.len() + key_len > max {
        letter.key = None;
    }
    (bytes, shed)
}

/// Why a dead letter was not written, in words of our own (a metric label and a log key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FailureClass {
    /// The broker (or librdkafka's `message.max.bytes`) refuses the record as too large.
    TooLarge,
    /// The topic does not exist (or its name is invalid).
    UnknownTopic,
    /// This client may not write the topic, or cannot authenticate.
    Authorization,
    /// No acknowledgement within `kafka.dead_letter.message_timeout` (brokers down or
    /// unreachable, no partition leader, or a topic librdkafka is still waiting to see).
    TimedOut,
    /// librdkafka's own queue is full: backpressure, not a fault.
    QueueFull,
    /// The idempotent producer hit an error it cannot continue from.
    Fatal,
    Other,
}

impl FailureClass {
    pub(crate) fn of(error: &DeliveryError) -> Self {
        let DeliveryError::Kafka(error) = error else {
            return FailureClass::Other;
        };
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge) => {
                FailureClass::TooLarge
            }
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::UnknownTopicId
                | RDKafkaErrorCode::InvalidTopic,
            ) => FailureClass::UnknownTopic,
            Some(
                RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication,
            ) => FailureClass::Authorization,
            Some(RDKafkaErrorCode::MessageTimedOut) => FailureClass::TimedOut,
            Some(RDKafkaErrorCode::QueueFull) => FailureClass::QueueFull,
            Some(RDKafkaErrorCode::Fatal) => FailureClass::Fatal,
            _ => FailureClass::Other,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailureClass::TooLarge => "too_large",
            FailureClass::UnknownTopic => "unknown_topic",
            FailureClass::Authorization => "authorization",
            FailureClass::TimedOut => "timed_out",
            FailureClass::QueueFull => "queue_full",
            FailureClass::Fatal => "fatal",
            FailureClass::Other => "other",
        }
    }

    /// What an operator can do about it.
    fn fix(self) -> &'static str {
        match self {
            FailureClass::TooLarge => {
                "raise the dead-letter topic's max.message.bytes (or lower limits.max_dead_letter_bytes): even without its payload the envelope is refused"
            }
            FailureClass::UnknownTopic => {
                "create the dead-letter topic (kafka.dead_letter.topic) or fix its name; the broker does not create it"
            }
            FailureClass::Authorization => {
                "grant this client WRITE and IDEMPOTENT_WRITE on the dead-letter topic, or fix its credentials"
            }
            FailureClass::TimedOut => {
                "check that the brokers are reachable and the dead-letter topic's partitions have leaders (kafka.dead_letter.message_timeout bounds each attempt)"
            }
            FailureClass::QueueFull => "none: the producer's queue is full, writes wait for it",
            FailureClass::Fatal => "restart the ingester: the dead-letter producer cannot continue",
            FailureClass::Other => "see the error",
        }
    }

    /// Whether retrying it means the ingester is stuck on something only an operator can fix.
    fn stalls(self) -> bool {
        self != FailureClass::QueueFull
    }
}

/// Why one dead letter was not written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    #[error("{0}")]
    Kafka(#[from] KafkaError),
    /// The delivery report never came (the producer was dropped).
    #[error("delivery report lost")]
    Cancelled,
}

impl DeadLetters {
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, Error> {
        let section = &config.kafka.dead_letter;
        let max_bytes = config.limits.max_dead_letter_bytes.as_usize();
        let cfg =
            section.client_config(&config.kafka.client(), config.limits.max_dead_letter_bytes).map_err(Error::Setup)?;
        let producer: QuietProducer =
            cfg.create_with_context(QuietContext::default()).map_err(without_value).map_err(Error::Kafka)?;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.opensearch.min_backoff)
            .with_max_delay(config.opensearch.max_backoff)
            .with_jitter()
            .without_max_times();
        Ok(Self {
            producer,
            topic: section.topic.clone(),
            source_topic: config.kafka.topic.clone(),
            backoff,
            metrics,
            repeats: Arc::new(Repeats::default()),
            max_bytes,
        })
    }

    /// The bounds on one record (`[limits]`).
    /// The topic records are consumed from (named in every envelope).
    pub fn source_topic(&self) -> &str {
        &self.source_topic
    }

    /// Produces every letter and waits for its acknowledgement, retrying failed ones with backoff
    /// (an envelope refused as too large is sent again at once without its payload). While retries
    /// go on past a first failure the ingester is marked stalled (`Cause::DeadLetterFailing`).
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
        // Held from the first failed round until every letter is written (or the future is dropped).
        let mut stalled: Option<Stalled> = None;
        let mut failures = 0_u64;
        while !pending.is_empty() {
            let results = deliver(&self.producer, &self.topic, &pending).await;
            let mut next = Vec::new();
            let mut wait = false;
            let mut first: Option<(FailureClass, DeliveryError)> = None;
            let mut classes = Vec::new();
            for ((mut letter, bytes), result) in pending.into_iter().zip(results) {
                let error = match result {
                    Ok(()) => {
                        self.delivered(&letter);
                        continue;
                    }
                    Err(error) => error,
                };
                let class = FailureClass::of(&error);
                failures += 1;
                if class == FailureClass::TooLarge {
                    let why = format!(
                        "the broker refused the envelope of {} bytes as too large (raise the dead-letter topic's max.message.bytes to keep payloads)",
                        bytes.len()
                    );
                    if leave_out_payload(&mut letter, MAX_SHED_REASON, &why) {
                        let env = &letter.envelope;
                        tracing::warn!(
                            partition = env.source_partition,
                            offset = env.source_offset,
                            bytes = bytes.len(),
                            topic = %self.topic,
                            "dead letter refused as too large, writing it again without its payload"
                        );
                        self.count_failure(class);
                        self.metrics.dead_letter_payloads_left_out.inc();
                        let bytes = letter.envelope.encode_to_vec();
                        next.push((letter, bytes));
                        continue;
                    }
                }
                wait = true;
                classes.push(class);
                first.get_or_insert((class, error));
                next.push((letter, bytes));
            }
            if let Some((class, error)) = first {
                // librdkafka reports a topic it cannot find as a timeout: ask the broker why, once
                // per round (each round waited for the timeout already).
                let diagnosed = if classes.contains(&FailureClass::TimedOut) { self.diagnose().await } else { None };
                let refine = |c: FailureClass| if c == FailureClass::TimedOut { diagnosed.unwrap_or(c) } else { c };
                let stalls = classes.iter().any(|c| c.stalls());
                for c in classes {
                    self.count_failure(refine(c));
                }
                let class = refine(class);
                if stalls && stalled.is_none() {
                    stalled = Some(self.metrics.health.stall(Cause::DeadLetterFailing));
                }
                if let Some(repeated) = self.repeats.check(class.as_str()) {
                    tracing::error!(
                        class = class.as_str(),
                        topic = %self.topic,
                        %error,
                        fix = class.fix(),
                        repeated,
                        "dead-letter topic cannot be written; retrying, offsets held"
                    );
                }
            }
            pending = next;
            if wait {
                let delay = delays.next().unwrap_or(Duration::from_secs(1));
                tokio::select! {
                    () = abort.cancelled() => return Err(Error::Aborted),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
        if stalled.take().is_some() {
            tracing::info!(topic = %self.topic, failures, "dead-letter topic written again");
        }
        Ok(())
    }

    fn count_failure(&self, class: FailureClass) {
        self.metrics.dead_letter_failures.get_or_create(&ClassLabels { class: class.as_str() }).inc();
    }

    fn delivered(&self, letter: &Letter) {
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

    /// The broker's word on the dead-letter topic (missing, not authorized), `None` when it names
    /// no fault or cannot be asked. Blocking metadata call, off the runtime.
    async fn diagnose(&self) -> Option<FailureClass> {
        let (producer, topic) = (self.producer.clone(), self.topic.clone());
        let code = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer as _;
            let metadata = producer.client().fetch_metadata(Some(&topic), Duration::from_secs(5)).ok()?;
            let found = metadata.topics().iter().find(|t| t.name() == topic)?;
            found.error().map(RDKafkaErrorCode::from)
        })
        .await
        .ok()
        .flatten()?;
        match FailureClass::of(&DeliveryError::Kafka(KafkaError::MetadataFetch(code))) {
            FailureClass::UnknownTopic => Some(FailureClass::UnknownTopic),
            FailureClass::Authorization => Some(FailureClass::Authorization),
            _ => None,
        }
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

/// Produces every pending letter, then waits for each delivery report.
async fn deliver(
    producer: &QuietProducer,
    topic: &str,
    pending: &[(Letter, Vec<u8>)],
) -> Vec<Result<(), DeliveryError>> {
    let mut deliveries = Vec::with_capacity(pending.len());
    for (letter, bytes) in pending {
        let mut record = FutureRecord::to(topic).payload(bytes.as_slice());
        if let Some(key) = &letter.key {
            record = record.key(key.as_ref());
        }
        deliveries.push(producer.send_result(record).map_err(|(e, _)| DeliveryError::Kafka(e)));
    }
    let mut out = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        out.push(match delivery {
            Ok(future) => match future.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(DeliveryError::Kafka(e)),
                Err(_) => Err(DeliveryError::Cancelled),
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
            redrive: None,
        };
        let letter = rejected_span(
            "otlp_spans",
            &origin,
            "jaeger-span-2026-11-25",
            Stage::Index,
            "mapper_parsing_exception".into(),
            "bad".into(),
        )
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
        assert_eq!(env.omitted_payload_bytes, 50_000);
        let digest = Sha256::digest(&record);
        assert_eq!(env.omitted_payload_sha256, digest.to_vec(), "the SHA-256 of the source record's value");
        assert!(
            env.reason.contains(&format!(
                "payload of 50000 bytes left out (sha256 {})",
                spanline_common::ids::to_hex(&digest)
            )),
            "{}",
            env.reason
        );
        assert!(env.reason.contains("otlp_spans partition 3 offset 42"), "{}", env.reason);
        assert_eq!(letter.key.as_deref(), Some(&b"k"[..]), "the key stays when it fits");
        // A key that alone passes the bound goes too; a huge reason is cut.
        let mut letter =
            undecodable("otlp_spans", 0, 1, Some(Bytes::from(vec![b'k'; 9_000])), b"x", "r".repeat(20_000));
        let (bytes, shed) = encode_within(&mut letter, 8_192);
        assert!(shed && bytes.len() <= 8_192 && letter.key.is_none());
        // A fitting envelope keeps its payload and carries no digest.
        let (bytes, shed) = encode_within(&mut undecodable("t", 0, 1, None, b"xyz", "r".into()), 8_192);
        let env = DeadLetter::decode(bytes.as_slice()).expect("envelope");
        assert!(!shed && env.omitted_payload_bytes == 0 && env.omitted_payload_sha256.is_empty());
    }

    #[test]
    fn an_envelope_the_broker_refuses_as_too_large_loses_only_its_payload() {
        let record = vec![3u8; 300_000];
        let mut letter = undecodable("otlp_spans", 1, 77, Some(Bytes::from_static(b"k")), &record, "bad".into());
        assert!(leave_out_payload(&mut letter, MAX_SHED_REASON, "the broker refused it"));
        let env = &letter.envelope;
        assert!(env.payload.is_empty() && env.encoded_len() < 1_000);
        assert_eq!((env.omitted_payload_bytes, env.source_partition, env.source_offset), (300_000, 1, 77));
        assert_eq!(env.omitted_payload_sha256, Sha256::digest(&record).to_vec());
        assert!(env.reason.starts_with("bad; payload of 300000 bytes"), "{}", env.reason);
        assert!(env.reason.contains("the broker refused it; the source record is otlp_spans partition 1 offset 77"));
        assert_eq!(letter.key.as_deref(), Some(&b"k"[..]));
        // Nothing more to leave out: the next refusal is a failure to retry.
        assert!(!leave_out_payload(&mut letter, MAX_SHED_REASON, "again"));
        assert_eq!(letter.envelope.omitted_payload_bytes, 300_000, "the first digest stays");
    }

    #[test]
    fn delivery_errors_are_classified_once() {
        use RDKafkaErrorCode as C;
        let class = |code| FailureClass::of(&DeliveryError::Kafka(KafkaError::MessageProduction(code)));
        for (code, want) in [
            (C::MessageSizeTooLarge, "too_large"),
            (C::MessageBatchTooLarge, "too_large"),
            (C::UnknownTopicOrPartition, "unknown_topic"),
            (C::UnknownTopic, "unknown_topic"),
            (C::TopicAuthorizationFailed, "authorization"),
            (C::ClusterAuthorizationFailed, "authorization"),
            (C::SaslAuthenticationFailed, "authorization"),
            (C::MessageTimedOut, "timed_out"),
            (C::QueueFull, "queue_full"),
            (C::Fatal, "fatal"),
            (C::NotEnoughReplicas, "other"),
        ] {
            assert_eq!(class(code).as_str(), want, "{code:?}");
        }
        assert_eq!(FailureClass::of(&DeliveryError::Cancelled), FailureClass::Other);
        assert!(!FailureClass::QueueFull.stalls() && FailureClass::UnknownTopic.stalls());
    }

    #[test]
    fn a_re_driven_letter_keeps_the_original_record_and_counts_the_re_drive() {
        let mut first = undecodable("otlp_spans", 4, 1_234, None, b"\xff", "bad".into());
        first.envelope.payload = vec![0; 10_000];
        let value = first.envelope.encode_to_vec();
        let redrive = Redrive::of(&value, "otlp_spans_dlq", 2, 9).expect("an envelope");
        let mut again = undecodable("otlp_spans_dlq", 2, 9, None, b"x", "still bad".into());
        redrive.stamp(&mut again.envelope);
        let env = &again.envelope;
        assert_eq!((env.source_topic.as_str(), env.source_partition, env.source_offset), ("otlp_spans", 4, 1_234));
        assert_eq!(
            (env.redriven_topic.as_str(), env.redriven_partition, env.redriven_offset),
            ("otlp_spans_dlq", 2, 9)
        );
        assert_eq!(env.redrives, 1);
        // Re-driven once more, from another dead-letter record: still the original, two re-drives.
        let twice = Redrive::of(&env.encode_to_vec(), "otlp_spans_dlq", 0, 50).expect("an envelope");
        let mut third = undecodable("otlp_spans_dlq", 0, 50, None, b"x", "bad".into());
        twice.stamp(&mut third.envelope);
        assert_eq!(
            (third.envelope.source_offset, third.envelope.redriven_offset, third.envelope.redrives),
            (1_234, 50, 2)
        );
        // Bytes that are not an envelope naming a source keep the dead-letter record's coordinates.
        assert!(Redrive::of(b"\xff\xff", "otlp_spans_dlq", 0, 1).is_none());
        assert!(Redrive::of(&DeadLetter::default().encode_to_vec(), "otlp_spans_dlq", 0, 1).is_none());
        let hostile = DeadLetter { source_topic: "t".repeat(250), ..DeadLetter::default() };
        assert!(Redrive::of(&hostile.encode_to_vec(), "otlp_spans_dlq", 0, 1).is_none(), "no name Kafka refuses");
        // A span cut from a re-driven record is stamped too (the store's rejection, in `write`).
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![Span::default()], ..Default::default() }],
                ..Default::default()
            }],
        };
        let origin = Origin {
            partition: 2,
            offset: 9,
            key: None,
            record: Bytes::from(request.encode_to_vec()),
            position: [0, 0, 0],
            redrive: Some(redrive),
        };
        let letter =
            rejected_span("otlp_spans_dlq", &origin, "", Stage::Index, "e".into(), "r".into()).expect("letter");
        assert_eq!((letter.envelope.source_topic.as_str(), letter.envelope.source_offset), ("otlp_spans", 1_234));
        assert_eq!((letter.envelope.redriven_offset, letter.envelope.redrives), (9, 1));
    }
}
