//! Kafka client settings shared by every component: where the brokers are, and the librdkafka
//! override map (TLS, SASL and any other property), applied last so it always wins.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

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
