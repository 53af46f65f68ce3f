//! Kafka client settings shared by every component: where the brokers are, how to reach them
//! securely (`[kafka.tls]`, `[kafka.sasl]`), and the librdkafka override map, applied last.
//!
//! [`KafkaClientConfig::base`] is the one place these settings become librdkafka properties: every
//! client (the collector's producer, the ingester's consumer and dead-letter producer, the replay's
//! consumers, readiness checks) starts from it, adds its own settings and then calls
//! [`KafkaClientConfig::apply_overrides`]. Secrets given as files are read there, when the client is
//! created, so a rotated password is picked up by the next client without a config reload.

use std::collections::BTreeMap;

use rdkafka::{ClientConfig, ClientContext, config::RDKafkaLogLevel, error::KafkaError};
use serde::{Deserialize, Serialize};

use crate::{
    repeats::Repeats,
    secret::{self, Secret},
};

/// Connection settings for one Kafka cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaClientConfig {
    /// Bootstrap brokers, comma-separated `host:port`. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// TLS to the brokers (`[kafka.tls]`). Default off.
    pub tls: KafkaTls,
    /// SASL authentication (`[kafka.sasl]`). Default none.
    pub sasl: KafkaSasl,
    /// Extra librdkafka properties, applied after Spanline's own settings. Keys set by `tls` and
    /// `sasl` may not be repeated here. Default empty.
    pub librdkafka: Overrides,
}

impl Default for KafkaClientConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            tls: KafkaTls::default(),
            sasl: KafkaSasl::default(),
            librdkafka: Overrides::default(),
        }
    }
}

/// `[kafka.tls]`: TLS to the brokers (librdkafka `security.protocol` `SSL` or `SASL_SSL`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTls {
    /// Connect with TLS. Default `false`.
    pub enabled: bool,
    /// PEM file of the CA(s) the brokers' certificates must chain to (`ssl.ca.location`); empty for
    /// the system's roots. Default empty.
    pub ca_file: String,
    /// PEM client certificate, for brokers that require mutual TLS (`ssl.certificate.location`).
    /// Needs `key_file`. Default empty.
    pub cert_file: String,
    /// PEM private key of `cert_file` (`ssl.key.location`). Default empty.
    pub key_file: String,
    /// Password of an encrypted `key_file` (`ssl.key.password`). Default empty.
    pub key_password: Secret,
    /// File holding `key_password`, read when a client is created. Default empty.
    pub key_password_file: String,
}

/// `[kafka.sasl]`: SASL authentication (librdkafka `security.protocol` `SASL_PLAINTEXT`, or
/// `SASL_SSL` with `[kafka.tls]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (`sasl.mechanisms`); empty for no SASL.
    /// Default empty.
    pub mechanism: SaslMechanism,
    /// SASL user name (`sasl.username`). Default empty.
    pub username: String,
    /// SASL password (`sasl.password`); never logged. Set it or `password_file`. Default empty.
    pub password: Secret,
    /// File holding the password, read when a client is created. Default empty.
    pub password_file: String,
}

/// A SASL mechanism Spanline configures first-class (others, e.g. `GSSAPI` or `OAUTHBEARER`, go in
/// `[kafka.librdkafka]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// No SASL.
    #[default]
    #[serde(rename = "")]
    None,
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's name for it (`sasl.mechanisms`); `None` for no SASL.
    pub fn name(self) -> Option<&'static str> {
        match self {
            SaslMechanism::None => None,
            SaslMechanism::Plain => Some("PLAIN"),
            SaslMechanism::ScramSha256 => Some("SCRAM-SHA-256"),
            SaslMechanism::ScramSha512 => Some("SCRAM-SHA-512"),
        }
    }
}

/// The librdkafka override map (`[kafka.librdkafka]`). `Debug` and `Serialize` hide the values of
/// keys that look secret ([`is_secret_key`]), so a configuration dump never shows a password given
/// here.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Overrides(pub BTreeMap<String, String>);

/// Whether a librdkafka property holds a secret: any key naming a password or a secret
/// (`sasl.password`, `ssl.key.password`, `ssl.keystore.password`, `sasl.oauthbearer.client.secret`),
/// an inline private key (`ssl.key.pem`) or the OAUTHBEARER config string, which carries credentials.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passphrase", "secret", "private", "token"].iter().any(|word| key.contains(word))
        || key.ends_with(".pem")
        || key == "sasl.oauthbearer.config"
}

const REDACTED: &str = "<redacted>";

impl Overrides {
    fn shown(&self) -> impl Iterator<Item = (&String, &str)> {
        self.0.iter().map(|(k, v)| (k, if is_secret_key(k) && !v.is_empty() { REDACTED } else { v.as_str() }))
    }
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

impl Serialize for Overrides {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.shown())
    }
}

impl std::ops::Deref for Overrides {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Overrides {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a Overrides {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<BTreeMap<String, String>> for Overrides {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }
}

/// The librdkafka property `tls` and `sasl` together decide.
const SECURITY_PROTOCOL: &str = "security.protocol";

impl KafkaClientConfig {
    /// A client config with the brokers, `client.id` and the security settings (`tls`, `sasl`; secret
    /// files read now). Callers add their own settings and then call
    /// [`KafkaClientConfig::apply_overrides`]. The error names the setting, never a secret.
    pub fn base(&self, client_id: &str) -> Result<ClientConfig, String> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers).set("client.id", client_id);
        for (key, value) in self.security()? {
            cfg.set(key, value);
        }
        Ok(cfg)
    }

    /// The librdkafka properties `tls` and `sasl` map to, secrets included (read from their files).
    fn security(&self) -> Result<Vec<(&'static str, String)>, String> {
        let mut out = vec![(SECURITY_PROTOCOL, self.security_protocol().to_owned())];
        let tls = &self.tls;
        if tls.enabled {
            for (key, path) in [
                ("ssl.ca.location", &tls.ca_file),
                ("ssl.certificate.location", &tls.cert_file),
                ("ssl.key.location", &tls.key_file),
            ] {
                if !path.is_empty() {
                    out.push((key, path.clone()));
                }
            }
            if let Some(password) =
                secret::resolve("kafka.tls.key_password", &tls.key_password, &tls.key_password_file)?
            {
                out.push(("ssl.key.password", password.expose().to_owned()));
            }
        }
        if let Some(mechanism) = self.sasl.mechanism.name() {
            let sasl = &self.sasl;
            let password = secret::resolve("kafka.sasl.password", &sasl.password, &sasl.password_file)?
                .ok_or_else(|| "kafka.sasl.password or kafka.sasl.password_file must be set".to_owned())?;
            out.push(("sasl.mechanisms", mechanism.to_owned()));
            out.push(("sasl.username", sasl.username.clone()));
            out.push(("sasl.password", password.expose().to_owned()));
        }
        Ok(out)
    }

    /// What in the override map turns TLS verification off, to be logged as a warning at start.
    pub fn weakened_verification(&self) -> Vec<String> {
        let mut found = Vec::new();
        let value = |key: &str| self.librdkafka.get(key).map(|v| v.trim().to_ascii_lowercase());
        if value("enable.ssl.certificate.verification").is_some_and(|v| ["false", "f", "0"].contains(&v.as_str())) {
            found.push("enable.ssl.certificate.verification = false: the broker's certificate is not checked".into());
        }
        if value("ssl.endpoint.identification.algorithm").is_some_and(|v| v == "none") {
            found.push("ssl.endpoint.identification.algorithm = none: the broker's host name is not checked".into());
        }
        found
    }

    /// librdkafka `security.protocol` for `tls` and `sasl`.
    pub fn security_protocol(&self) -> &'static str {
        match (self.tls.enabled, self.sasl.mechanism != SaslMechanism::None) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }

    /// The librdkafka keys the first-class settings set (with librdkafka's aliases for them): an
    /// override naming one conflicts.
    fn first_class_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let tls = &self.tls;
        let sasl_on = self.sasl.mechanism != SaslMechanism::None;
        if tls.enabled || sasl_on {
            keys.push(SECURITY_PROTOCOL);
        }
        if tls.enabled {
            if !tls.ca_file.is_empty() {
                keys.extend(["ssl.ca.location", "ssl.ca.pem"]);
            }
            if !tls.cert_file.is_empty() {
                keys.extend(["ssl.certificate.location", "ssl.certificate.pem", "ssl.keystore.location"]);
            }
            if !tls.key_file.is_empty() {
                keys.extend(["ssl.key.location", "ssl.key.pem", "ssl.key.password"]);
            }
        }
        if sasl_on {
            keys.extend(["sasl.mechanisms", "sasl.mechanism", "sasl.username", "sasl.password"]);
        }
        keys
    }

    /// Refuses an override map (`section` names it in the message) that repeats a key the
    /// first-class `tls`/`sasl` settings set: which one wins would be a surprise.
    pub fn check_conflicts(&self, section: &str, overrides: &Overrides) -> Result<(), String> {
        for key in self.first_class_keys() {
            if overrides.contains_key(key) {
                return Err(format!(
                    "{section}.\"{key}\" conflicts with [kafka.tls] / [kafka.sasl], which set it: remove one of them"
                ));
            }
        }
        Ok(())
    }

    /// Applies the user's librdkafka overrides, last.
    pub fn apply_overrides(&self, cfg: &mut ClientConfig) {
        for (key, value) in &self.librdkafka {
            cfg.set(key, value);
        }
    }

    /// Checks what can be checked without a broker (secret files are read only when a client is
    /// created).
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.split(',').all(|b| b.trim().is_empty()) {
            return Err("kafka.brokers must name at least one broker".into());
        }
        let tls = &self.tls;
        if !tls.enabled {
            let set = [
                ("ca_file", tls.ca_file.is_empty()),
                ("cert_file", tls.cert_file.is_empty()),
                ("key_file", tls.key_file.is_empty()),
                ("key_password", tls.key_password.is_empty()),
                ("key_password_file", tls.key_password_file.is_empty()),
            ];
            if let Some((name, _)) = set.iter().find(|(_, empty)| !empty) {
                return Err(format!("kafka.tls.{name} requires kafka.tls.enabled = true"));
            }
        }
        if tls.cert_file.is_empty() != tls.key_file.is_empty() {
            return Err("kafka.tls.cert_file and kafka.tls.key_file go together: set both or neither".into());
        }
        if !tls.key_password.is_empty() && !tls.key_password_file.is_empty() {
            return Err("kafka.tls.key_password and kafka.tls.key_password_file exclude each other: set one".into());
        }
        if tls.key_file.is_empty() && !(tls.key_password.is_empty() && tls.key_password_file.is_empty()) {
            return Err("kafka.tls.key_password needs kafka.tls.key_file".into());
        }
        let sasl = &self.sasl;
        if sasl.mechanism == SaslMechanism::None {
            if !sasl.username.is_empty() || !sasl.password.is_empty() || !sasl.password_file.is_empty() {
                return Err("kafka.sasl.username and kafka.sasl.password need kafka.sasl.mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)".into());
            }
        } else {
            if sasl.username.is_empty() {
                return Err("kafka.sasl.username must be set with kafka.sasl.mechanism".into());
            }
            match (sasl.password.is_empty(), sasl.password_file.is_empty()) {
                (true, true) => {
                    return Err(
                        "kafka.sasl.password or kafka.sasl.password_file must be set with kafka.sasl.mechanism".into(),
                    );
                }
                (false, false) => {
                    return Err("kafka.sasl.password and kafka.sasl.password_file exclude each other: set one".into());
                }
                _ => {}
            }
        }
        self.check_conflicts("kafka.librdkafka", &self.librdkafka)
    }
}

/// Refuses overrides (from the maps in `sections`) that set one of `keys` to a value outside
/// `allowed` (compared trimmed and lowercased; list every spelling librdkafka accepts, e.g. `true`,
/// `t` and `1` for a boolean): `why` says what the setting would break. The value is quoted: only
/// delivery settings go through here, never a secret.
pub fn require_override(
    sections: &[(&str, &Overrides)],
    keys: &[&str],
    allowed: &[&str],
    why: &str,
) -> Result<(), String> {
    for (section, map) in sections {
        for key in keys {
            if let Some(value) = map.get(*key).filter(|v| !allowed.contains(&v.trim().to_ascii_lowercase().as_str())) {
                return Err(format!("{section}.\"{key}\" = {value:?} is refused: {why}"));
            }
        }
    }
    Ok(())
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

/// A client-creation error fit to print: librdkafka's configuration errors carry the offending
/// property's value (a mistyped `sasl.passwrod` would print the password), so the value is
/// dropped, and blotted out of the description too.
pub fn without_value(error: KafkaError) -> KafkaError {
    match error {
        KafkaError::ClientConfig(code, desc, key, value) => {
            // librdkafka may cut a long value in its description: for a secret property none of
            // the description is kept.
            let desc = if is_secret_key(&key) {
                "refused".to_owned()
            } else if value.is_empty() {
                desc
            } else {
                desc.replace(&value, REDACTED)
            };
            KafkaError::ClientConfig(code, desc, key, REDACTED.to_owned())
        }
        // A NUL byte in a property (a password file with one): the bytes must not be printed.
        KafkaError::Nul(_) => KafkaError::ClientCreation("a kafka setting contains a NUL byte".to_owned()),
        other => other,
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
    fn a_misspelt_property_does_not_print_its_value() {
        let mut cfg = ClientConfig::new();
        cfg.set("sasl.passwrod", "hunter2-0123").set("bootstrap.servers", "127.0.0.1:9");
        let error = cfg.create::<rdkafka::producer::BaseProducer>().map(|_| ()).expect_err("unknown property");
        assert!(error.to_string().contains("hunter2"), "librdkafka's own error quotes it: {error}");
        let shown = without_value(error).to_string();
        assert!(shown.contains("sasl.passwrod") && !shown.contains("hunter2"), "{shown}");
    }
    use std::io::Write as _;

    fn sasl(mechanism: SaslMechanism, password: &str) -> KafkaSasl {
        KafkaSasl {
            mechanism,
            username: "spanline".into(),
            password: Secret::new(password),
            password_file: String::new(),
        }
    }

    #[test]
    fn overrides_win() {
        let mut k = KafkaClientConfig::default();
        k.librdkafka.insert("client.id".into(), "mine".into());
        let mut cfg = k.base("spanline").expect("base");
        k.apply_overrides(&mut cfg);
        assert_eq!(cfg.get("client.id"), Some("mine"));
        assert_eq!(cfg.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(cfg.get("security.protocol"), Some("PLAINTEXT"));
    }

    #[test]
    fn empty_brokers_rejected() {
        let k = KafkaClientConfig { brokers: " , ".into(), ..Default::default() };
        assert!(k.validate().is_err());
    }

    #[test]
    fn tls_and_sasl_map_onto_librdkafka() {
        let mut password_file = tempfile::NamedTempFile::new().expect("temp");
        password_file.write_all(b"from-a-file\n").expect("write");
        let k = KafkaClientConfig {
            tls: KafkaTls {
                enabled: true,
                ca_file: "/ca.pem".into(),
                cert_file: "/client.pem".into(),
                key_file: "/client.key".into(),
                key_password: Secret::new("key-pass"),
                key_password_file: String::new(),
            },
            sasl: KafkaSasl {
                password: Secret::default(),
                password_file: password_file.path().display().to_string(),
                ..sasl(SaslMechanism::ScramSha512, "")
            },
            ..Default::default()
        };
        k.validate().expect("valid");
        let cfg = k.base("c").expect("base");
        let want = [
            ("security.protocol", "SASL_SSL"),
            ("ssl.ca.location", "/ca.pem"),
            ("ssl.certificate.location", "/client.pem"),
            ("ssl.key.location", "/client.key"),
            ("ssl.key.password", "key-pass"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "spanline"),
            ("sasl.password", "from-a-file"),
        ];
        for (key, value) in want {
            assert_eq!(cfg.get(key), Some(value), "{key}");
        }
        let only_tls =
            KafkaClientConfig { tls: KafkaTls { enabled: true, ..Default::default() }, ..Default::default() };
        let cfg = only_tls.base("c").expect("base");
        assert_eq!(cfg.get("security.protocol"), Some("SSL"));
        assert_eq!(cfg.get("ssl.ca.location"), None, "the system's roots");
        let only_sasl = KafkaClientConfig { sasl: sasl(SaslMechanism::Plain, "p"), ..Default::default() };
        let cfg = only_sasl.base("c").expect("base");
        assert_eq!((cfg.get("security.protocol"), cfg.get("sasl.mechanisms")), (Some("SASL_PLAINTEXT"), Some("PLAIN")));
    }

    #[test]
    fn mechanisms_parse_by_their_kafka_names() {
        #[derive(Deserialize)]
        struct S {
            m: SaslMechanism,
        }
        for (text, want) in [
            ("", SaslMechanism::None),
            ("PLAIN", SaslMechanism::Plain),
            ("SCRAM-SHA-256", SaslMechanism::ScramSha256),
            ("SCRAM-SHA-512", SaslMechanism::ScramSha512),
        ] {
            let s: S = serde_json::from_value(serde_json::json!({ "m": text })).expect("parses");
            assert_eq!(s.m, want);
            assert_eq!(s.m.name().unwrap_or(""), text);
        }
        assert!(serde_json::from_value::<S>(serde_json::json!({ "m": "GSSAPI" })).is_err());
    }

    #[test]
    fn inconsistent_security_settings_are_named() {
        let check = |f: &dyn Fn(&mut KafkaClientConfig)| {
            let mut k = KafkaClientConfig::default();
            f(&mut k);
            k.validate().expect_err("refused")
        };
        let e = check(&|k| k.tls.ca_file = "/ca.pem".into());
        assert!(e.contains("kafka.tls.ca_file requires kafka.tls.enabled"), "{e}");
        let e = check(&|k| k.tls.key_password = Secret::new("x"));
        assert!(e.contains("kafka.tls.key_password requires"), "{e}");
        let e = check(&|k| {
            k.tls.enabled = true;
            k.tls.cert_file = "/c.pem".into();
        });
        assert!(e.contains("kafka.tls.cert_file and kafka.tls.key_file"), "{e}");
        let e = check(&|k| k.sasl.username = "u".into());
        assert!(e.contains("kafka.sasl.mechanism"), "{e}");
        let e = check(&|k| k.sasl = KafkaSasl { password: Secret::default(), ..sasl(SaslMechanism::Plain, "") });
        assert!(e.contains("kafka.sasl.password or kafka.sasl.password_file"), "{e}");
        let e = check(&|k| k.sasl = KafkaSasl { password_file: "/p".into(), ..sasl(SaslMechanism::Plain, "p") });
        assert!(e.contains("exclude each other"), "{e}");
        let e = check(&|k| k.sasl = KafkaSasl { username: String::new(), ..sasl(SaslMechanism::Plain, "p") });
        assert!(e.contains("kafka.sasl.username"), "{e}");
    }

    #[test]
    fn overrides_repeating_first_class_keys_conflict() {
        for (key, value) in [
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl.username", "other"),
            ("sasl.password", "other-secret"),
            ("ssl.ca.location", "/other.pem"),
            ("ssl.key.password", "other-secret"),
        ] {
            let mut k = KafkaClientConfig {
                tls: KafkaTls {
                    enabled: true,
                    ca_file: "/ca.pem".into(),
                    cert_file: "/c.pem".into(),
                    key_file: "/c.key".into(),
                    ..Default::default()
                },
                sasl: sasl(SaslMechanism::ScramSha256, "p"),
                ..Default::default()
            };
            k.librdkafka.insert(key.into(), value.into());
            let e = k.validate().expect_err(key);
            assert!(e.contains(&format!("kafka.librdkafka.\"{key}\" conflicts")), "{e}");
            assert!(!e.contains("other-secret"), "{e}");
        }
        // Without first-class settings the escape hatch still works, and a TLS tweak they do not
        // set is no conflict.
        let mut k = KafkaClientConfig::default();
        k.librdkafka.insert("security.protocol".into(), "SSL".into());
        k.validate().expect("no first-class settings");
        let mut k = KafkaClientConfig { tls: KafkaTls { enabled: true, ..Default::default() }, ..Default::default() };
        k.librdkafka.insert("ssl.endpoint.identification.algorithm".into(), "none".into());
        k.validate().expect("not set by [kafka.tls]");
    }

    #[test]
    fn a_missing_password_file_is_named_at_client_creation() {
        let k = KafkaClientConfig {
            sasl: KafkaSasl {
                password: Secret::default(),
                password_file: "/nowhere/pw".into(),
                ..sasl(SaslMechanism::Plain, "")
            },
            ..Default::default()
        };
        k.validate().expect("files are read when a client is created");
        let e = k.base("c").expect_err("unreadable");
        assert!(e.contains("kafka.sasl.password_file /nowhere/pw"), "{e}");
    }

    #[test]
    fn debug_and_serialize_hide_secret_looking_overrides() {
        let mut k = KafkaClientConfig {
            sasl: sasl(SaslMechanism::ScramSha512, "first-class-pw-1"),
            tls: KafkaTls {
                enabled: true,
                key_file: "/k".into(),
                cert_file: "/c".into(),
                key_password: Secret::new("key-pw-2"),
                ..Default::default()
            },
            ..Default::default()
        };
        for (key, value) in [
            ("sasl.password", "override-pw-3"),
            ("ssl.key.password", "override-pw-4"),
            ("ssl.keystore.password", "override-pw-5"),
            ("sasl.oauthbearer.client.secret", "override-pw-6"),
            ("some.future.Password", "override-pw-7"),
            ("ssl.key.pem", "override-pw-8"),
            ("sasl.oauthbearer.assertion.private.key.passphrase", "override-pw-9"),
            ("sasl.oauthbearer.assertion.private.key.pem", "override-pw-10"),
            ("sasl.oauthbearer.config", "override-pw-11"),
        ] {
            k.librdkafka.insert(key.into(), value.into());
        }
        k.librdkafka.insert("linger.ms".into(), "7".into());
        let shown = [format!("{k:?}"), format!("{k:#?}"), serde_json::to_string(&k).expect("json")];
        for text in &shown {
            for n in 1..=11 {
                assert!(!text.contains(&format!("-pw-{n}")), "secret {n} shown: {text}");
            }
            assert!(text.contains("linger.ms") && text.contains('7') && text.contains("sasl.password"), "{text}");
        }
    }

    #[test]
    fn weakening_overrides_are_refused_by_name() {
        let mut map = Overrides::default();
        map.insert("acks".into(), "1".into());
        let e = require_override(
            &[("kafka.librdkafka", &map)],
            &["acks", "request.required.acks"],
            &["all", "-1"],
            "could lose spans",
        )
        .expect_err("acks=1");
        assert!(e.contains("kafka.librdkafka.\"acks\" = \"1\"") && e.contains("could lose spans"), "{e}");
        map.insert("acks".into(), "ALL".into());
        require_override(&[("kafka.librdkafka", &map)], &["acks"], &["all", "-1"], "x").expect("all, any case");
    }
}
