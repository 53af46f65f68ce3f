//! Kafka client settings shared by every component: where the brokers are, and the librdkafka
//! override map (TLS, SASL and any other property), applied last so it always wins.

use std::collections::BTreeMap;

use rdkafka::{ClientConfig, ClientContext, config::RDKafkaLogLevel, error::KafkaError};
use serde::{Deserialize, Serialize};

use crate::repeats::Repeats;

/// Connection settings for one Kafka cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaClientConfig {
    /// Bootstrap brokers, comma-separated `host:port`. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// Extra librdkafka properties, applied after Spanline's own settings, e.g.
    /// `"security.protocol" = "SASL_SSL"`, `"sasl.mechanism" = "SCRAM-SHA-512"`,
    /// `"ssl.ca.location" = "/etc/ssl/ca.pem"`. Default empty.
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaClientConfig {
    fn default() -> Self {
        Self { brokers: "127.0.0.1:9092".into(), librdkafka: BTreeMap::new() }
    }
}

impl KafkaClientConfig {
    /// A client config with the brokers and `client.id` set. Callers add their own settings and then
    /// call [`KafkaClientConfig::apply_overrides`].
    pub fn base(&self, client_id: &str) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers).set("client.id", client_id);
        cfg
    }

    /// Applies the user's librdkafka overrides, last.
    pub fn apply_overrides(&self, cfg: &mut ClientConfig) {
        for (key, value) in &self.librdkafka {
            cfg.set(key, value);
        }
    }

    /// Checks what can be checked without a broker.
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.split(',').all(|b| b.trim().is_empty()) {
            return Err("kafka.brokers must name at least one broker".into());
        }
        Ok(())
    }
}

/// librdkafka's own log lines, through `repeats`: a broker that stays down makes librdkafka say the
/// same thing on every reconnect, which is logged once per interval with a count instead.
pub fn log_librdkafka(repeats: &Repeats, level: RDKafkaLogLevel, facility: &str, message: &str) {
    // Keyed by level and facility (librdkafka's own short words): a warning never hides an error.
    let quiet = || repeats.check(&format!("{}:{facility}", level as i32));
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            if let Some(repeated) = quiet() {
                tracing::error!(target: "librdkafka", facility, repeated, %message, "librdkafka error");
            }
        }
        RDKafkaLogLevel::Warning => {
            if let Some(repeated) = quiet() {
                tracing::warn!(target: "librdkafka", facility, repeated, %message, "librdkafka warning");
            }
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility, %message, "librdkafka");
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, %message, "librdkafka"),
    }
}

/// The kind under which a client error is counted by [`Repeats`]: its error code, never its text.
pub fn error_kind(error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => "other".to_owned(),
    }
}

/// A client-level error (all brokers down, a transport failure), through `repeats`.
pub fn log_client_error(repeats: &Repeats, error: &KafkaError, reason: &str) {
    if let Some(repeated) = repeats.check(&error_kind(error)) {
        tracing::warn!(target: "librdkafka", %error, reason, repeated, "kafka client error");
    }
}

/// The client context of every producer: librdkafka's logs and client errors through
/// [`Repeats`], so a broker that stays down is one line per interval, not one per reconnect.
#[derive(Debug, Default)]
pub struct QuietContext {
    repeats: Repeats,
}

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_librdkafka(&self.repeats, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&self.repeats, &error, reason);
    }
}

/// A producer whose logs go through [`QuietContext`].
pub type QuietProducer = rdkafka::producer::FutureProducer<QuietContext>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win() {
        let mut k = KafkaClientConfig::default();
        k.librdkafka.insert("client.id".into(), "mine".into());
        let mut cfg = k.base("spanline");
        k.apply_overrides(&mut cfg);
        assert_eq!(cfg.get("client.id"), Some("mine"));
        assert_eq!(cfg.get("bootstrap.servers"), Some("127.0.0.1:9092"));
    }

    #[test]
    fn empty_brokers_rejected() {
        let k = KafkaClientConfig { brokers: " , ".into(), ..Default::default() };
        assert!(k.validate().is_err());
    }
}
