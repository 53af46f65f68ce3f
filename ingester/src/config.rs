//! Ingester configuration: parsed once from a TOML file plus `SPANLINE_INGESTER__*` environment
//! variables, validated by [`Config::validate`], then trusted. See `deploy/ingester.toml`.

use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};
use spanline_common::{
    ByteSize,
    admin::AdminConfig,
    config::{ConfigError, Validate},
    kafka::{KafkaClientConfig, KafkaSasl, KafkaTls, Overrides, require_override},
    secret::Secret,
};

/// The whole ingester configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: Kafka,
    pub opensearch: OpenSearch,
    pub batch: Batch,
    pub limits: Limits,
    pub dependencies: Dependencies,
    /// The admin server. Default `127.0.0.1:14270`.
    pub admin: AdminConfig,
    /// How long shutdown may take to flush, index and commit. Default `20s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// Where spans are consumed from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kafka {
    /// Bootstrap brokers, comma-separated `host:port`. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// TLS to the brokers (`[kafka.tls]`), for the consumer, the dead-letter producer and `replay`.
    /// Default off.
    pub tls: KafkaTls,
    /// SASL authentication (`[kafka.sasl]`), for every client like `tls`. Default none.
    pub sasl: KafkaSasl,
    /// Extra librdkafka properties, applied last to every client. Settings that weaken delivery
    /// (`enable.auto.offset.store = true`, `enable.auto.commit = false`; for the dead-letter producer
    /// `acks` other than `all`, `enable.idempotence = false`) and keys `tls`/`sasl` set are refused.
    /// Default empty.
    pub librdkafka: Overrides,
    /// Topic to consume. Default `otlp_spans`.
    pub topic: String,
    /// Consumer group. Default `spanline-ingester`.
    pub group_id: String,
    /// Deprecated: `kafka.dead_letter.topic`. Still read (with a warning at start) so older
    /// configuration files load; naming both with different topics is refused. Default unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// The dead-letter producer (`[kafka.dead_letter]`).
    pub dead_letter: DeadLetterProducer,
    /// librdkafka `partition.assignment.strategy`: `cooperative-sticky` (incremental rebalances: a
    /// member keeps its partitions while others join or leave), or the eager `range` / `roundrobin`.
    /// Default `cooperative-sticky`.
    pub assignment_strategy: String,
    /// Static membership (`group.instance.id`): a member restarted under the same id within the
    /// session timeout gets its partitions back without a rebalance (a StatefulSet's pod name).
    /// Empty for dynamic membership. Default empty.
    pub group_instance_id: String,
    /// How long a revoked partition's worker may take to flush, finish its bulk requests and commit
    /// before the rebalance goes on without it (its uncommitted records are then re-read by the new
    /// owner). Must be shorter than `session_timeout`. Default `15s`.
    #[serde(with = "humantime_serde")]
    pub drain_deadline: Duration,
    /// Records librdkafka may fetch ahead per partition (`queued.max.messages.kbytes`; with one
    /// queue per partition it applies per partition, passed by at most one fetch). Default `4MiB`.
    pub max_prefetch_bytes: ByteSize,
    /// How long a partition this member does not own may lag with its committed offset standing
    /// still before this member says so (a log line, the `stalled_partitions` metric) and, when it
    /// owns no partition at all, turns `/health/ready` false: a member holds the partition without
    /// consuming it (or its owner cannot write). `0s` disables the check. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub stalled_group_timeout: Duration,
    /// librdkafka `session.timeout.ms`. Default `45s`.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// librdkafka `max.poll.interval.ms`: must exceed the longest bulk retry pause. Default `300s`.
    #[serde(with = "humantime_serde")]
    pub max_poll_interval: Duration,
    /// How record values are encoded: `otlp_proto` (what Spanline's collector, the OpenTelemetry
    /// Collector's kafkaexporter and Jaeger v2 write), `otlp_json`, or a Jaeger v1 collector's
    /// `jaeger_proto` / `jaeger_json` (one Jaeger span per record; the names the OpenTelemetry
    /// Collector's kafkareceiver uses). Default `otlp_proto`.
    pub encoding: Encoding,
}

/// The encoding of span records on the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// A protobuf `ExportTraceServiceRequest`.
    OtlpProto,
    /// The OTLP/JSON form of `ExportTraceServiceRequest` (camelCase keys, hex ids).
    OtlpJson,
    /// One Jaeger `model.Span` (`jaeger.api_v2`) in protobuf, as a Jaeger v1 collector writes it
    /// with `--kafka.producer.encoding=protobuf`; translated to OTLP as the collector translates
    /// Jaeger Thrift (docs/inputs.md).
    JaegerProto,
    /// The same span in protobuf's JSON mapping as Jaeger writes it (`jsonpb`: camelCase keys,
    /// base64 ids, RFC 3339 times), `--kafka.producer.encoding=json`.
    JaegerJson,
    /// `spanline.v1.DeadLetter` envelopes (the dead-letter topic, re-driven by `replay`): the span
    /// payload is unwrapped and indexed; a raw record inside is decoded as the encoding its
    /// envelope names (`source_encoding`; OTLP protobuf when unnamed).
    DeadLetter,
}

impl Encoding {
    /// The name `kafka.encoding` spells it with, and a raw record's dead letter records it under
    /// (`source_encoding`).
    pub fn name(self) -> &'static str {
        match self {
            Self::OtlpProto => "otlp_proto",
            Self::OtlpJson => "otlp_json",
            Self::JaegerProto => "jaeger_proto",
            Self::JaegerJson => "jaeger_json",
            Self::DeadLetter => "dead_letter",
        }
    }

    /// The encoding [`Self::name`] spells `name`; the empty name (a dead letter written before
    /// `source_encoding` existed, when every topic was OTLP protobuf) is `otlp_proto`.
    pub fn of_name(name: &str) -> Option<Self> {
        if name.is_empty() {
            return Some(Self::OtlpProto);
        }
        [Self::OtlpProto, Self::OtlpJson, Self::JaegerProto, Self::JaegerJson, Self::DeadLetter]
            .into_iter()
            .find(|e| e.name() == name)
    }
}

impl Default for Kafka {
    fn default() -> Self {
        Self {
            brokers: KafkaClientConfig::default().brokers,
            tls: KafkaTls::default(),
            sasl: KafkaSasl::default(),
            librdkafka: Overrides::default(),
            topic: "otlp_spans".into(),
            group_id: "spanline-ingester".into(),
            dead_letter_topic: None,
            dead_letter: DeadLetterProducer::default(),
            assignment_strategy: "cooperative-sticky".into(),
            group_instance_id: String::new(),
            drain_deadline: Duration::from_secs(15),
            max_prefetch_bytes: ByteSize::mib(4),
            stalled_group_timeout: Duration::from_secs(60),
            session_timeout: Duration::from_secs(45),
            max_poll_interval: Duration::from_secs(300),
            encoding: Encoding::OtlpProto,
        }
    }
}

impl Kafka {
    /// The connection part, shared with the other components' Kafka settings.
    pub fn client(&self) -> KafkaClientConfig {
        KafkaClientConfig {
            brokers: self.brokers.clone(),
            tls: self.tls.clone(),
            sasl: self.sasl.clone(),
            librdkafka: self.librdkafka.clone(),
        }
    }
}

/// The dead-letter producer: where what can never be indexed goes, as `spanline.v1.DeadLetter`
/// envelopes (`proto/`), and how it is written. It connects with `kafka.brokers` and
/// `[kafka.tls]`, `[kafka.sasl]` and `kafka.librdkafka`, then applies its own settings, then its own `librdkafka` map.
/// A partition's offsets wait until its dead letters are acknowledged, so these settings decide
/// how a dead-letter topic that cannot be written shows: see docs/ingester.md ("Dead letters").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterProducer {
    /// The dead-letter topic. Create it before starting (with the span topic's partition count,
    /// and a `max.message.bytes` of at least `limits.max_dead_letter_bytes`): a missing topic
    /// holds every partition that has a dead letter to write. Default `otlp_spans_dlq`.
    pub topic: String,
    /// librdkafka `message.timeout.ms`: how long one attempt to write a dead letter may take before
    /// it counts as failed (then retried with backoff; the partition's offsets wait). Default `30s`.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// librdkafka `compression.type`: none, gzip, snappy, lz4 or zstd. Default `none`.
    pub compression: String,
    /// librdkafka `message.max.bytes`: the largest record this producer builds. Must be at least
    /// `limits.max_dead_letter_bytes` plus 1KiB of record framing. Default unset: that sum, and at
    /// least 1 000 000 bytes (librdkafka's default).
    pub max_message_bytes: Option<ByteSize>,
    /// librdkafka properties for this producer only, applied last (after `kafka.librdkafka`).
    /// Settings that could lose a dead letter are refused: `acks` other than `all`/`-1`,
    /// `enable.idempotence` other than `true`. Default empty.
    pub librdkafka: Overrides,
}

/// Room for a record's framing around the largest envelope (record header, key length, headers).
pub(crate) const DEAD_LETTER_FRAMING: u64 = 1024;

impl Default for DeadLetterProducer {
    fn default() -> Self {
        Self {
            topic: "otlp_spans_dlq".into(),
            message_timeout: Duration::from_secs(30),
            compression: "none".into(),
            max_message_bytes: None,
            librdkafka: Overrides::default(),
        }
    }
}

impl DeadLetterProducer {
    /// librdkafka `message.max.bytes` for an envelope bound of `max_dead_letter_bytes`: the
    /// configured value, else the bound plus framing (at least librdkafka's default).
    pub fn message_max_bytes(&self, max_dead_letter_bytes: ByteSize) -> u64 {
        self.max_message_bytes.map_or_else(
            || max_dead_letter_bytes.bytes().saturating_add(DEAD_LETTER_FRAMING).max(1_000_000),
            |b| b.bytes(),
        )
    }

    /// The producer's librdkafka configuration: the connection (`client`, its overrides included),
    /// these settings, then this section's own overrides, last. Secret files are read now; the error
    /// names the setting, never the secret.
    pub fn client_config(
        &self,
        client: &KafkaClientConfig,
        max_dead_letter_bytes: ByteSize,
    ) -> Result<rdkafka::ClientConfig, String> {
        let mut cfg = client.base("spanline-ingester-dlq")?;
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", self.message_timeout.as_millis().to_string())
            .set("compression.type", &self.compression)
            .set("message.max.bytes", self.message_max_bytes(max_dead_letter_bytes).to_string());
        client.apply_overrides(&mut cfg);
        for (key, value) in &self.librdkafka {
            cfg.set(key, value);
        }
        Ok(cfg)
    }

    /// Refuses settings under which a dead letter could be lost or could never fit.
    fn validate(&self, client: &KafkaClientConfig, max_dead_letter_bytes: ByteSize) -> Result<(), String> {
        if self.topic.is_empty() {
            return Err("kafka.dead_letter.topic must not be empty".into());
        }
        if self.message_timeout < Duration::from_secs(1) {
            return Err(format!("kafka.dead_letter.message_timeout ({:?}) must be at least 1s", self.message_timeout));
        }
        const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
        if !COMPRESSIONS.contains(&self.compression.as_str()) {
            return Err(format!(
                "kafka.dead_letter.compression must be one of {COMPRESSIONS:?}, got {:?}",
                self.compression
            ));
        }
        client.check_conflicts("kafka.dead_letter.librdkafka", &self.librdkafka)?;
        // Built without the secrets (validation never reads a password file): only the delivery
        // settings are checked here.
        let unsecured = KafkaClientConfig { tls: KafkaTls::default(), sasl: KafkaSasl::default(), ..client.clone() };
        let cfg = self.client_config(&unsecured, max_dead_letter_bytes)?;
        for key in ["acks", "request.required.acks"] {
            if let Some(acks) = cfg.get(key).filter(|a| !["all", "-1"].contains(a)) {
                return Err(format!(
                    "{key} = {acks:?} for the dead-letter producer (kafka.librdkafka or kafka.dead_letter.librdkafka) could lose dead letters: only \"all\" is accepted"
                ));
            }
        }
        if cfg.get("enable.idempotence") != Some("true") {
            return Err(
                "enable.idempotence must stay true for the dead-letter producer (kafka.librdkafka or kafka.dead_letter.librdkafka): retries could reorder or duplicate dead letters".into(),
            );
        }
        let need = max_dead_letter_bytes.bytes().saturating_add(DEAD_LETTER_FRAMING);
        let have = cfg.get("message.max.bytes").and_then(|v| v.parse::<u64>().ok());
        if have.is_none_or(|have| have < need) {
            return Err(format!(
                "the dead-letter producer's message.max.bytes ({}) must be at least limits.max_dead_letter_bytes ({max_dead_letter_bytes}) plus {DEAD_LETTER_FRAMING} bytes of framing ({need}): raise kafka.dead_letter.max_message_bytes or lower the limit",
                cfg.get("message.max.bytes").unwrap_or("unreadable")
            ));
        }
        Ok(())
    }
}

/// Where documents are written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenSearch {
    /// OpenSearch node URLs, comma-separated; requests go round robin over them. A URL with
    /// credentials in it (`user:password@host`) is refused: they would reach logs and errors; use
    /// `username`/`password`. Default `http://127.0.0.1:9200`.
    pub url: String,
    /// PEM file of the CA that signed the nodes' certificates (https only); empty for the system's
    /// roots. Read at start. Default empty.
    pub ca_file: String,
    /// Skip certificate validation (https only; for test clusters). Default `false`.
    pub tls_insecure: bool,
    /// PEM client certificate (leaf first, then any intermediates) presented to the nodes (mTLS,
    /// https only; the security plugin's `clientcert_auth_domain`). Goes with `key_file`. Read at
    /// start: a rotated certificate needs a restart. Default empty.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted) of `cert_file`. Default empty.
    pub key_file: String,
    /// Basic-auth user; empty for none. Needs `password` or `password_file`. Default empty.
    pub username: String,
    /// Basic-auth password, inline (or `SPANLINE_INGESTER__OPENSEARCH__PASSWORD`). Never printed.
    /// Excludes `password_file`. Default empty.
    pub password: Secret,
    /// File holding the basic-auth password (one trailing newline ignored; how Kubernetes mounts a
    /// Secret). Read again every `credentials_reload_interval` and on SIGHUP: a changed password is
    /// used from the next request on, without a restart. Default empty.
    pub password_file: String,
    /// API key sent as `Authorization: ApiKey <api_key>`: the encoded value (base64 of `id:key`)
    /// as the store gives it. Excludes basic auth and `api_key_file`. Never printed. Default empty.
    pub api_key: Secret,
    /// File holding the API key, reloaded like `password_file`. Default empty.
    pub api_key_file: String,
    /// How often `password_file` / `api_key_file` are read again (also at once on SIGHUP). At
    /// least `1s`. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub credentials_reload_interval: Duration,
    /// Allow credentials (`username`/`password*`, `api_key*`) with an `http://` URL, where they
    /// travel in clear text. Refused at start unless set. Default `false`.
    pub allow_credentials_over_http: bool,
    /// Prefix of index names: `{prefix}-jaeger-span-YYYY-MM-DD`; empty for none. Default empty.
    pub index_prefix: String,
    /// Spans that started longer than this before their record's Kafka timestamp (the ingestion
    /// time for a record without a usable one) are not indexed as they are (see `out_of_range`), so
    /// a bad clock cannot create an index for 1970. Default `72h` (Jaeger Query's `max_span_age`).
    #[serde(with = "humantime_serde")]
    pub max_span_age: Duration,
    /// Spans that start further than this after their record's Kafka timestamp are not indexed as
    /// they are; a record stamped further than this ahead of the ingester's clock is judged against
    /// the ingestion time. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// What happens to a span outside [T − max_span_age, T + max_clock_skew], T its record's time:
    /// `dead_letter` (with the reason) or `clamp` (indexed unchanged, in the index of the nearest
    /// allowed day). Default `dead_letter`.
    pub out_of_range: OutOfRange,
    /// How trace ids are written in the documents' `traceID` fields: `jaeger` (16 hex digits when
    /// the high 64 bits are zero, as Jaeger v1 writes them and Jaeger Query 1.x looks them up, so
    /// traces from Jaeger and 64-bit B3 clients are found in its UI; else 32) or `full` (always
    /// 32). Default `jaeger`.
    pub trace_ids: crate::document::TraceIds,
    /// Install the span and service index templates at start when missing. Default `true`.
    pub create_templates: bool,
    /// `priority` of those composable templates (a non-negative integer; the type refuses
    /// negatives). OpenSearch refuses a template whose patterns overlap another composable
    /// template's at the same priority, and the ingester then stops at start naming that
    /// template: pick a priority it does not use (higher to win over it). Jaeger's own templates
    /// on OpenSearch are legacy ones: ours may be installed over them, but OpenSearch 2.x then
    /// refuses Jaeger creating (or re-patterning) an overlapping legacy template. Default `100`.
    pub template_priority: u32,
    /// Timeout of one `_bulk` request. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First retry pause after a transient failure; doubles up to `max_backoff`, with jitter.
    /// Default `100ms`.
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    /// Longest retry pause. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl OpenSearch {
    /// The node URLs of `url`.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty())
    }

    /// Whether basic auth is configured (a user, or a password in either form).
    pub fn basic_auth(&self) -> bool {
        !self.username.is_empty() || !self.password.is_empty() || !self.password_file.is_empty()
    }

    /// Whether an API key is configured, in either form.
    pub fn api_key_auth(&self) -> bool {
        !self.api_key.is_empty() || !self.api_key_file.is_empty()
    }

    /// The credential and TLS settings that hang together (no file is read here).
    fn validate_security(&self) -> Result<(), String> {
        if !self.password.is_empty() && !self.password_file.is_empty() {
            return Err("opensearch.password and opensearch.password_file exclude each other: set one".into());
        }
        if !self.api_key.is_empty() && !self.api_key_file.is_empty() {
            return Err("opensearch.api_key and opensearch.api_key_file exclude each other: set one".into());
        }
        if self.basic_auth() && self.api_key_auth() {
            return Err(
                "opensearch basic auth (username, password) and opensearch.api_key exclude each other: set one".into(),
            );
        }
        let has_password = !self.password.is_empty() || !self.password_file.is_empty();
        if self.username.is_empty() && has_password {
            return Err("opensearch.password needs opensearch.username".into());
        }
        if !self.username.is_empty() && !has_password {
            return Err("opensearch.username needs opensearch.password or opensearch.password_file".into());
        }
        if self.username.contains(':') {
            // Basic auth joins user and password with ':'; the user part cannot hold one.
            return Err("opensearch.username must not contain ':'".into());
        }
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            return Err("opensearch.cert_file and opensearch.key_file go together".into());
        }
        if self.credentials_reload_interval < Duration::from_secs(1) {
            return Err("opensearch.credentials_reload_interval must be at least 1s".into());
        }
        let credentials = self.basic_auth() || self.api_key_auth();
        if credentials
            && !self.allow_credentials_over_http
            && let Some(n) = self.urls().position(|u| u.starts_with("http://"))
        {
            return Err(format!(
                "opensearch.url entry {} is http://: the credentials (username/password or api_key) would travel in clear text; use https:// or set opensearch.allow_credentials_over_http = true",
                n + 1
            ));
        }
        Ok(())
    }
}

impl Default for OpenSearch {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9200".into(),
            ca_file: String::new(),
            tls_insecure: false,
            cert_file: String::new(),
            key_file: String::new(),
            username: String::new(),
            password: Secret::default(),
            password_file: String::new(),
            api_key: Secret::default(),
            api_key_file: String::new(),
            credentials_reload_interval: spanline_common::reload::DEFAULT_INTERVAL,
            allow_credentials_over_http: false,
            index_prefix: String::new(),
            max_span_age: Duration::from_secs(72 * 3600),
            max_clock_skew: Duration::from_secs(3600),
            out_of_range: OutOfRange::DeadLetter,
            trace_ids: crate::document::TraceIds::Jaeger,
            create_templates: true,
            template_priority: crate::templates::DEFAULT_PRIORITY,
            request_timeout: Duration::from_secs(30),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What happens to a span whose start time is outside the accepted window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfRange {
    DeadLetter,
    Clamp,
}

/// When a batch is flushed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Batch {
    /// Flush when the NDJSON body reaches this size. Default `5MiB`.
    pub max_bytes: ByteSize,
    /// Flush when the batch holds this many documents. Default `10000`.
    pub max_docs: usize,
    /// Flush this long after the first document entered an empty batch. Default `200ms` (Jaeger's
    /// `es.bulk.flush-interval`): with OpenSearch's 1 s refresh, spans are searchable within 2 s of
    /// their end at p99 (BENCHMARKS.md); under load batches fill by size first.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Bulk requests one partition may have in flight at once; its offsets are committed only up to
    /// the highest offset below which every batch is durable. When all are busy and the next batch
    /// is full, the partition's fetching pauses. Default `2`.
    pub max_inflight_bulks: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            max_bytes: ByteSize::mib(5),
            max_docs: 10_000,
            flush_interval: Duration::from_millis(200),
            max_inflight_bulks: 2,
        }
    }
}

/// Service dependency links (Jaeger's System Architecture tab) counted from the stream: each
/// partition's worker puts its traces together and writes one document per partition and `window`
/// to `{prefix}jaeger-dependencies-YYYY-MM-DD` (`crate::dependencies`, docs/dependencies.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dependencies {
    /// Count links and write their documents. Default `false`; `deploy/ingester.toml` turns it on.
    pub enabled: bool,
    /// One document per partition and window of this length, aligned to the epoch; a divisor of a
    /// day. Jaeger Query reads at most 10 000 (`es.max-doc-count`) per lookback: partitions × windows
    /// per day × days looked back must stay under it. On every assignment the worker re-reads up to
    /// up to about `window + 3 × max_trace_duration` of the partition to count unfinished windows again.
    /// Default `15m`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A trace's spans are put together over at most about this long (slots of this length, aligned
    /// to the epoch): a trace still sending spans past it is counted in pieces. A divisor of
    /// `window`. Default `3m`.
    #[serde(with = "humantime_serde")]
    pub max_trace_duration: Duration,
    /// A trace is complete once no span of it arrived for this long. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// How far out of order Kafka record timestamps may be (the collectors' clocks and produce
    /// delays); an idle partition's clock follows the wall clock this far behind. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// Spans (and their same-trace links) held per partition while their traces are open (about
    /// 100 bytes each); past it the
    /// trace with the oldest deadline is closed early and counted
    /// (`spanline_ingester_dependency_evictions_total`). Default `500000`.
    pub max_spans: usize,
    /// Distinct (parent, child) links in one window's document; more are counted and left out.
    /// Default `10000`.
    pub max_links: usize,
    /// Count the links without indexing spans: what `replay --dependencies-only` sets, never read
    /// from a file or the environment (a live ingester with it would commit spans it never indexed).
    #[serde(skip)]
    pub only: bool,
}

impl Default for Dependencies {
    fn default() -> Self {
        Self {
            enabled: false,
            window: Duration::from_secs(15 * 60),
            max_trace_duration: Duration::from_secs(180),
            idle: Duration::from_secs(30),
            lateness: Duration::from_secs(10),
            max_spans: 500_000,
            max_links: 10_000,
            only: false,
        }
    }
}

impl Dependencies {
    /// The tracker's bounds.
    pub fn bounds(&self) -> crate::dependencies::Bounds {
        crate::dependencies::Bounds {
            window: self.window,
            max_trace_duration: self.max_trace_duration,
            idle: self.idle,
            lateness: self.lateness,
            max_spans: self.max_spans,
            max_edges: self.max_links,
        }
    }

    fn validate(&self) -> Result<(), String> {
        let (window, slot, idle) =
            (self.window.as_millis(), self.max_trace_duration.as_millis(), self.idle.as_millis());
        if window == 0 || 86_400_000 % window != 0 {
            return Err(format!("dependencies.window ({:?}) must divide a day", self.window));
        }
        if slot == 0 || window % slot != 0 {
            return Err(format!(
                "dependencies.max_trace_duration ({:?}) must divide dependencies.window ({:?})",
                self.max_trace_duration, self.window
            ));
        }
        if idle == 0 || idle >= slot {
            return Err(format!(
                "dependencies.idle ({:?}) must be positive and shorter than dependencies.max_trace_duration ({:?})",
                self.idle, self.max_trace_duration
            ));
        }
        if self.lateness.is_zero() || self.lateness > self.idle {
            return Err("dependencies.lateness must be positive and at most dependencies.idle".into());
        }
        if self.only && !self.enabled {
            return Err("dependencies.only needs dependencies.enabled".into());
        }
        if self.max_spans == 0 || self.max_links == 0 {
            return Err("dependencies.max_spans and dependencies.max_links must be at least 1".into());
        }
        Ok(())
    }
}

/// What one Kafka record may cost. A record or span over a bound is dead-lettered with a reason
/// naming the setting, and its offset moves on: never indexed in part, never lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A record whose value is larger is dead-lettered whole without being decoded (stage `DECODE`,
    /// error type `record_too_large`). Default `1MiB`, above Kafka's default `max.message.bytes`
    /// (1 MB).
    pub max_record_bytes: ByteSize,
    /// The most memory decoding one record may take, priced from its wire shape before decoding
    /// (the walk the collector prices requests with): a protobuf record over it is dead-lettered
    /// whole without being decoded (stage `DECODE`, error type `record_too_costly`). Ordinary
    /// records decode to 3 to 6 times their size. Default `64MiB`.
    pub max_record_decoded_bytes: ByteSize,
    /// The most one record may expand to: the JSON of its documents plus 128 bytes each (the bulk
    /// action line), and for a span refused alone the dead letter replacing it if larger. Jaeger's
    /// schema repeats the resource's attributes in every span document, so a small record can make
    /// gigabytes. Counted while mapping, which stops at the bound: the record is dead-lettered whole
    /// (stage `MAP`, error type `record_documents_too_large`). Default `32MiB`.
    pub max_record_document_bytes: ByteSize,
    /// A span whose document's JSON is larger is dead-lettered alone (stage `MAP`, error type
    /// `document_too_large`); the record's other spans are indexed. Default `1MiB`.
    pub max_document_bytes: ByteSize,
    /// The largest dead-letter record (envelope and key). An envelope that would be larger is
    /// written without its payload, keeping the source topic, partition, offset, key and reason,
    /// and the left-out bytes' length and SHA-256 (the payload stays in the source topic until its
    /// retention ends). Should not exceed the dead-letter topic's `max.message.bytes`: an envelope
    /// the broker refuses as too large is written again without its payload. Must fit in the
    /// dead-letter producer's `message.max.bytes` with 1KiB of framing (checked at start). Default
    /// `1MB` (1 000 000 bytes).
    pub max_dead_letter_bytes: ByteSize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_record_bytes: ByteSize::mib(1),
            max_record_decoded_bytes: ByteSize::mib(64),
            max_record_document_bytes: ByteSize::mib(32),
            max_document_bytes: ByteSize::mib(1),
            max_dead_letter_bytes: ByteSize(1_000_000),
        }
    }
}

impl Config {
    /// Loads `file` then `SPANLINE_INGESTER__*` variables, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::settle(spanline_common::config::load(file, "SPANLINE_INGESTER")?)
    }

    /// A configuration as loaded → deprecated settings moved, then validated.
    fn settle(mut config: Self) -> Result<Self, ConfigError> {
        config.migrate().map_err(ConfigError::Invalid)?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Moves deprecated settings to their new place, saying so once at start.
    fn migrate(&mut self) -> Result<(), String> {
        if let Some(old) = self.kafka.dead_letter_topic.take() {
            let default = DeadLetterProducer::default().topic;
            if self.kafka.dead_letter.topic != default && self.kafka.dead_letter.topic != old {
                return Err(format!(
                    "kafka.dead_letter_topic ({old:?}, deprecated) and kafka.dead_letter.topic ({:?}) disagree: keep only kafka.dead_letter.topic",
                    self.kafka.dead_letter.topic
                ));
            }
            tracing::warn!(topic = %old, "kafka.dead_letter_topic is deprecated: use kafka.dead_letter.topic");
            self.kafka.dead_letter.topic = old;
        }
        Ok(())
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.kafka.client().validate()?;
        // Offsets are stored only once their spans are durable and librdkafka commits what was
        // stored (commit.rs): storing on delivery to the application would commit spans never
        // indexed, and without auto commit progress is saved only at a rebalance or shutdown.
        let overrides = [("kafka.librdkafka", &self.kafka.librdkafka)];
        require_override(
            &overrides,
            &["enable.auto.offset.store"],
            &["false", "f", "0"],
            "offsets must be stored only once their spans are indexed or dead-lettered",
        )?;
        require_override(
            &overrides,
            &["enable.auto.commit"],
            &["true", "t", "1"],
            "the ingester commits the offsets it stores through librdkafka's auto commit; without it a crash re-reads everything since the last rebalance",
        )?;
        require_override(
            &overrides,
            &["auto.offset.reset"],
            &["earliest", "smallest", "beginning"],
            "a partition without a committed offset must be read from its start; any other reset skips or stops on unread spans",
        )?;
        if let Some(ms) = self.kafka.librdkafka.get("auto.commit.interval.ms")
            && ms.trim().parse::<u64>().is_ok_and(|ms| ms == 0)
        {
            return Err("kafka.librdkafka.\"auto.commit.interval.ms\" = \"0\" is refused: it turns auto commit off, so a crash would re-read everything since the last rebalance".into());
        }
        if self.kafka.topic.is_empty() || self.kafka.group_id.is_empty() {
            return Err("kafka.topic and kafka.group_id must not be empty".into());
        }
        if self.kafka.dead_letter_topic.is_some() {
            // Only a configuration built in code gets here: `load` moves it.
            return Err("kafka.dead_letter_topic is deprecated: set kafka.dead_letter.topic".into());
        }
        if !["cooperative-sticky", "range", "roundrobin"].contains(&self.kafka.assignment_strategy.as_str()) {
            return Err(format!(
                "kafka.assignment_strategy must be cooperative-sticky, range or roundrobin, got {:?}",
                self.kafka.assignment_strategy
            ));
        }
        if self.kafka.topic == self.kafka.dead_letter.topic {
            return Err("kafka.dead_letter.topic must differ from kafka.topic".into());
        }
        for (n, url) in self.opensearch.urls().enumerate() {
            // Credentials in a URL end up in logs and error messages: refused, and not repeated here.
            let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
            let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.contains('@') {
                return Err(format!(
                    "opensearch.url entry {} carries credentials (user-info before '@'): set opensearch.username and opensearch.password instead (the URL is not repeated here)",
                    n + 1
                ));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("opensearch.url entries must start with http:// or https://, got {url:?}"));
            }
        }
        if self.opensearch.urls().next().is_none() {
            return Err("opensearch.url must name at least one node".into());
        }
        let prefix = &self.opensearch.index_prefix;
        if !prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            || prefix.starts_with(['_', '-', '.'])
        {
            return Err(format!(
                "opensearch.index_prefix {prefix:?} must be lowercase letters, digits, '.', '_' or '-', not starting with '_', '-' or '.'"
            ));
        }
        self.opensearch.validate_security()?;
        if self.opensearch.tls_insecure && !self.opensearch.ca_file.is_empty() {
            return Err("opensearch.tls_insecure and opensearch.ca_file exclude each other".into());
        }
        if self.batch.max_docs == 0 || self.batch.max_bytes.bytes() < 1024 {
            return Err("batch.max_docs must be at least 1 and batch.max_bytes at least 1KiB".into());
        }
        if self.batch.max_inflight_bulks == 0 || self.batch.max_inflight_bulks > 64 {
            return Err("batch.max_inflight_bulks must be between 1 and 64".into());
        }
        let limits = &self.limits;
        if limits.max_record_decoded_bytes < limits.max_record_bytes {
            return Err("limits.max_record_decoded_bytes must be at least limits.max_record_bytes".into());
        }
        if limits.max_record_bytes.bytes() < 1024 || limits.max_document_bytes.bytes() < 1024 {
            return Err("limits.max_record_bytes and limits.max_document_bytes must be at least 1KiB".into());
        }
        if limits.max_record_document_bytes < limits.max_document_bytes {
            return Err(format!(
                "limits.max_record_document_bytes ({}) must be at least limits.max_document_bytes ({})",
                limits.max_record_document_bytes, limits.max_document_bytes
            ));
        }
        if limits.max_dead_letter_bytes.bytes() < 4096 {
            return Err("limits.max_dead_letter_bytes must be at least 4KiB".into());
        }
        self.kafka.dead_letter.validate(&self.kafka.client(), limits.max_dead_letter_bytes)?;
        if self.kafka.max_prefetch_bytes.bytes() < 1024 {
            return Err("kafka.max_prefetch_bytes must be at least 1KiB".into());
        }
        if self.kafka.drain_deadline.is_zero() || self.kafka.drain_deadline >= self.kafka.session_timeout {
            return Err(format!(
                "kafka.drain_deadline ({:?}) must be positive and shorter than kafka.session_timeout ({:?})",
                self.kafka.drain_deadline, self.kafka.session_timeout
            ));
        }
        if self.batch.flush_interval.is_zero() {
            return Err("batch.flush_interval must be positive".into());
        }
        if self.opensearch.min_backoff.is_zero() || self.opensearch.min_backoff > self.opensearch.max_backoff {
            return Err("opensearch.min_backoff must be positive and at most opensearch.max_backoff".into());
        }
        if self.shutdown_grace >= self.kafka.session_timeout {
            return Err(format!(
                "shutdown_grace ({:?}) must be shorter than kafka.session_timeout ({:?}) so a draining member is not evicted",
                self.shutdown_grace, self.kafka.session_timeout
            ));
        }
        self.dependencies.validate()?;
        if self.opensearch.max_backoff >= self.kafka.max_poll_interval {
            return Err("opensearch.max_backoff must be shorter than kafka.max_poll_interval".into());
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kafka: Kafka::default(),
            opensearch: OpenSearch::default(),
            batch: Batch::default(),
            limits: Limits::default(),
            dependencies: Dependencies::default(),
            admin: AdminConfig::loopback(14270),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
    }

    /// The secure deployment's file (deploy/secure/ingester.toml) is one this ingester takes.
    #[test]
    fn secure_example_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/secure/ingester.toml");
        let config: Config =
            spanline_common::config::load_with_env(Some(&path), "SPANLINE_INGESTER", Some(Default::default()))
                .expect("deploy/secure/ingester.toml loads");
        assert_eq!(config.kafka.client().security_protocol(), "SASL_SSL");
        assert!(config.opensearch.url.starts_with("https://"));
        assert!(config.opensearch.password.is_empty() && !config.opensearch.password_file.is_empty());
        config.validate().expect("the secure example validates");
    }

    #[test]
    fn example_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ingester.toml");
        let config = Config::load(Some(&path)).expect("deploy/ingester.toml loads");
        assert_eq!(config.kafka.group_id, "spanline-ingester");
        assert_eq!(config.limits, Limits::default(), "the example shows the defaults");
        assert_eq!(config.kafka.dead_letter, DeadLetterProducer::default(), "the example shows the defaults");
        assert_eq!(config.kafka.dead_letter_topic, None, "the example uses the new section");
    }

    #[test]
    fn drain_must_fit_in_the_session() {
        let c = Config { shutdown_grace: Duration::from_secs(60), ..Config::default() };
        assert!(c.validate().expect_err("rejected").contains("session_timeout"));
        let mut c = Config::default();
        c.kafka.drain_deadline = Duration::from_secs(50);
        assert!(c.validate().expect_err("rejected").contains("drain_deadline"));
        let mut c = Config::default();
        c.batch.max_inflight_bulks = 0;
        assert!(c.validate().expect_err("rejected").contains("max_inflight_bulks"));
        let mut c = Config::default();
        c.limits.max_record_document_bytes = ByteSize::kib(512);
        assert!(c.validate().expect_err("rejected").contains("limits.max_record_document_bytes"));
        let mut c = Config::default();
        c.limits.max_dead_letter_bytes = ByteSize(100);
        assert!(c.validate().expect_err("rejected").contains("limits.max_dead_letter_bytes"));
        let mut c = Config::default();
        c.opensearch.url = "localhost:9200".into();
        assert!(c.validate().expect_err("rejected").contains("opensearch.url"));
        for url in
            ["http://admin:s3cret@os:9200", "http://os:9200,https://admin:s3cret@os2:9200/", "admin:s3cret@os:9200"]
        {
            c.opensearch.url = url.into();
            let error = c.validate().expect_err("credentials in the URL are refused");
            assert!(error.contains("carries credentials") && !error.contains("s3cret"), "{error}");
        }
        c.opensearch.url = "https://os:9200/path@v1?q=a@b".into();
        assert!(c.validate().is_ok(), "an '@' after the host is not user-info");
        let mut c = Config::default();
        c.opensearch.index_prefix = "Prod\"x".into();
        assert!(c.validate().expect_err("rejected").contains("index_prefix"));
        c.opensearch.index_prefix = "prod-eu.1".into();
        c.validate().expect("a valid prefix");
    }

    #[test]
    fn credentials_over_http_are_refused_unless_allowed() {
        let mut c = Config::default();
        c.opensearch.username = "spanline".into();
        c.opensearch.password = Secret::new("hunter2-s3cret");
        let error = c.validate().expect_err("clear-text credentials");
        assert!(
            error.contains("http://") && error.contains("allow_credentials_over_http") && !error.contains("hunter2"),
            "{error}"
        );
        c.opensearch.allow_credentials_over_http = true;
        c.validate().expect("allowed explicitly");
        c.opensearch.allow_credentials_over_http = false;
        c.opensearch.url = "https://os:9200,http://os2:9200".into();
        assert!(c.validate().expect_err("one node in clear").contains("entry 2"));
        c.opensearch.url = "https://os:9200".into();
        c.validate().expect("https");
        let mut k = Config::default();
        k.opensearch.api_key_file = "/run/secrets/key".into();
        assert!(k.validate().expect_err("api key over http").contains("allow_credentials_over_http"));
    }

    #[test]
    fn credential_settings_hang_together() {
        let with = |f: &dyn Fn(&mut OpenSearch)| {
            let mut c = Config::default();
            c.opensearch.url = "https://os:9200".into();
            f(&mut c.opensearch);
            c.validate()
        };
        let both = with(&|o| {
            o.username = "u".into();
            o.password = Secret::new("p");
            o.password_file = "/f".into();
        });
        assert!(both.expect_err("both").contains("password_file exclude"));
        let mixed = with(&|o| {
            o.username = "u".into();
            o.password_file = "/f".into();
            o.api_key = Secret::new("k");
        });
        assert!(mixed.expect_err("basic and key").contains("exclude each other"));
        assert!(with(&|o| o.username = "u".into()).expect_err("no password").contains("needs opensearch.password"));
        assert!(with(&|o| o.password = Secret::new("p")).expect_err("no user").contains("needs opensearch.username"));
        assert!(with(&|o| o.cert_file = "/c".into()).expect_err("no key").contains("go together"));
        with(&|o| {
            o.username = "u".into();
            o.password_file = "/f".into();
        })
        .expect("user and password file");
        with(&|o| o.api_key_file = "/k".into()).expect("an api key file");
    }

    /// Neither `Debug` nor `Serialize` of the configuration shows a password or an API key.
    #[test]
    fn debug_and_serialize_never_show_credentials() {
        let mut c = Config::default();
        c.opensearch.username = "spanline".into();
        c.opensearch.password = Secret::new("hunter2-s3cret");
        c.opensearch.api_key = Secret::new("a2V5LXMzY3JldA==");
        let debug = format!("{c:?}");
        let json = serde_json::to_string(&c).expect("json");
        for shown in [&debug, &json] {
            assert!(!shown.contains("hunter2") && !shown.contains("a2V5LXMzY3JldA"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    fn loaded(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (format!("SPANLINE_INGESTER__{k}"), (*v).to_owned())).collect();
        Config::settle(spanline_common::config::load_with_env(None, "SPANLINE_INGESTER", Some(env))?)
    }

    #[test]
    fn the_old_dead_letter_topic_setting_still_loads_into_the_new_section() {
        let c = loaded(&[("KAFKA__DEAD_LETTER_TOPIC", "old_dlq")]).expect("loads");
        assert_eq!((c.kafka.dead_letter.topic.as_str(), c.kafka.dead_letter_topic), ("old_dlq", None));
        let c = loaded(&[("KAFKA__DEAD_LETTER__TOPIC", "new_dlq")]).expect("loads");
        assert_eq!(c.kafka.dead_letter.topic, "new_dlq");
        let c = loaded(&[("KAFKA__DEAD_LETTER_TOPIC", "same"), ("KAFKA__DEAD_LETTER__TOPIC", "same")]).expect("loads");
        assert_eq!(c.kafka.dead_letter.topic, "same");
        let error =
            loaded(&[("KAFKA__DEAD_LETTER_TOPIC", "a"), ("KAFKA__DEAD_LETTER__TOPIC", "b")]).expect_err("refused");
        assert!(error.to_string().contains("disagree"), "{error}");
        let error = loaded(&[("KAFKA__DEAD_LETTER__TIMEOUT", "3s")]).expect_err("unknown field");
        assert!(error.to_string().contains("timeout"), "{error}");
        let c =
            loaded(&[("KAFKA__DEAD_LETTER__MESSAGE_TIMEOUT", "3s"), ("KAFKA__DEAD_LETTER__MAX_MESSAGE_BYTES", "2MiB")])
                .expect("typed duration and size");
        assert_eq!(c.kafka.dead_letter.message_timeout, Duration::from_secs(3));
        assert_eq!(c.kafka.dead_letter.message_max_bytes(c.limits.max_dead_letter_bytes), 2 << 20);
    }

    #[test]
    fn the_dead_letter_producer_refuses_lossy_or_too_small_settings() {
        let with = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate()
        };
        let cfg = Config::default()
            .kafka
            .dead_letter
            .client_config(&KafkaClientConfig::default(), ByteSize(1_000_000))
            .expect("config");
        assert_eq!(cfg.get("message.max.bytes"), Some("1001024"), "the bound plus framing by default");
        assert_eq!((cfg.get("acks"), cfg.get("enable.idempotence")), (Some("all"), Some("true")));
        let error = with(&|c| {
            c.kafka.dead_letter.librdkafka.insert("acks".into(), "1".into());
        })
        .expect_err("acks=1");
        assert!(error.contains("acks"), "{error}");
        let error = with(&|c| {
            c.kafka.librdkafka.insert("enable.idempotence".into(), "false".into());
        })
        .expect_err("idempotence off");
        assert!(error.contains("enable.idempotence"), "{error}");
        let error = with(&|c| {
            c.kafka.dead_letter.max_message_bytes = Some(ByteSize(1_000_000));
        })
        .expect_err("no room for framing");
        assert!(error.contains("limits.max_dead_letter_bytes"), "{error}");
        let error = with(&|c| {
            c.kafka.dead_letter.librdkafka.insert("message.max.bytes".into(), "500000".into());
        })
        .expect_err("an override below the bound");
        assert!(error.contains("message.max.bytes (500000)"), "{error}");
        with(&|c| {
            c.limits.max_dead_letter_bytes = ByteSize::mib(4);
            c.kafka.dead_letter.max_message_bytes = Some(ByteSize::mib(5));
        })
        .expect("a larger bound with room");
        with(&|c| c.limits.max_dead_letter_bytes = ByteSize::mib(4)).expect("unset, it follows the bound");
        let error = with(&|c| {
            c.limits.max_dead_letter_bytes = ByteSize::mib(4);
            c.kafka.dead_letter.max_message_bytes = Some(ByteSize::mib(4));
        })
        .expect_err("set, it must leave room for the framing");
        assert!(error.contains("kafka.dead_letter.max_message_bytes"), "{error}");
        let error = with(&|c| c.kafka.dead_letter.compression = "brotli".into()).expect_err("compression");
        assert!(error.contains("kafka.dead_letter.compression"), "{error}");
        let error = with(&|c| c.kafka.dead_letter.topic = "otlp_spans".into()).expect_err("same topic");
        assert!(error.contains("kafka.dead_letter.topic"), "{error}");
        let error = with(&|c| c.kafka.dead_letter_topic = Some("x".into())).expect_err("unmigrated");
        assert!(error.contains("deprecated"), "{error}");
    }

    #[test]
    fn consumer_overrides_weakening_delivery_are_refused() {
        for (key, value) in [
            ("enable.auto.offset.store", "true"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "latest"),
            ("auto.commit.interval.ms", "0"),
        ] {
            let mut c = Config::default();
            c.kafka.librdkafka.insert(key.into(), value.into());
            let e = c.validate().expect_err(key);
            assert!(e.contains(&format!("kafka.librdkafka.\"{key}\"")), "{e}");
        }
        let mut c = Config::default();
        c.kafka.librdkafka.insert("enable.auto.offset.store".into(), "false".into());
        c.validate().expect("keeps the contract");
    }

    #[test]
    fn first_class_security_reaches_every_client_and_conflicts_are_refused() {
        let mut c = Config::default();
        c.kafka.tls.enabled = true;
        c.kafka.sasl = KafkaSasl {
            mechanism: spanline_common::kafka::SaslMechanism::ScramSha256,
            username: "ingester".into(),
            password: spanline_common::secret::Secret::new("hunter2-ingester"),
            password_file: String::new(),
        };
        c.validate().expect("valid");
        let consumer = crate::pipeline::consumer_config(&c).expect("consumer");
        let dlq = c.kafka.dead_letter.client_config(&c.kafka.client(), c.limits.max_dead_letter_bytes).expect("dlq");
        for cfg in [consumer, dlq] {
            assert_eq!(cfg.get("security.protocol"), Some("SASL_SSL"));
            assert_eq!(cfg.get("sasl.mechanisms"), Some("SCRAM-SHA-256"));
            assert_eq!(cfg.get("sasl.password"), Some("hunter2-ingester"));
        }
        assert!(!format!("{c:?}").contains("hunter2"));
        c.kafka.dead_letter.librdkafka.insert("sasl.password".into(), "hunter3-dlq".into());
        let e = c.validate().expect_err("conflict");
        assert!(e.contains("kafka.dead_letter.librdkafka.\"sasl.password\" conflicts"), "{e}");
        assert!(!e.contains("hunter") && !format!("{c:?}").contains("hunter3"), "{e}");
    }
}
