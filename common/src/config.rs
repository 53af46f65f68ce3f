//! Loading a component's configuration: an optional file, then environment overrides, parsed once
//! into the component's serde structs (which use `deny_unknown_fields`) and validated by the caller.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A configuration's cross-field checks; the message names the offending field.
pub trait Validate {
    fn validate(&self) -> Result<(), String>;
}

/// [`load`], then [`Validate::validate`]: what every binary calls once at start.
pub fn load_validated<T: DeserializeOwned + Validate>(file: Option<&Path>, env_prefix: &str) -> Result<T, ConfigError> {
    let config: T = load(file, env_prefix)?;
    config.validate().map_err(ConfigError::Invalid)?;
    Ok(config)
}

/// Reads `file` (TOML, optional) and then environment variables named
/// `{env_prefix}__SECTION__KEY` (for example `SPANLINE_COLLECTOR__KAFKA__BROKERS`), later sources
/// overriding earlier ones, into `T`. An environment value is kept as the string it is and converted
/// only by the field it sets: a password `0123456` stays `0123456` (parsing every value as a number
/// first would make it `123456`), while a numeric or boolean field still reads `7` or `true`.
///
/// librdkafka's property names have dots, which neither a shell variable nor the path syntax of
/// the `config` crate can hold: below a `LIBRDKAFKA` level, each `_` of the variable's last part
/// stands for a dot, so `SPANLINE_INGESTER__KAFKA__LIBRDKAFKA__SOCKET_KEEPALIVE_ENABLE=true` sets
/// `kafka.librdkafka."socket.keepalive.enable"` (only `log_level` has an underscore: set it in the file).
pub fn load<T: DeserializeOwned>(file: Option<&Path>, env_prefix: &str) -> Result<T, ConfigError> {
    load_with_env(file, env_prefix, None)
}

/// The level below which environment keys are librdkafka property names.
const LIBRDKAFKA: &str = "librdkafka";

/// [`load`] with the environment given as a map instead of read from the process (for tests).
pub fn load_with_env<T: DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    env: Option<config::Map<String, String>>,
) -> Result<T, ConfigError> {
    let prefix = format!("{}__", env_prefix.to_ascii_lowercase());
    let env = match env {
        Some(env) => env,
        None => own_variables(&prefix)?,
    };
    // Variables naming a librdkafka property are set on the loaded tree below, by hand.
    let (properties, plain): (Vec<_>, Vec<_>) = env.into_iter().partition(|(key, _)| {
        let key = key.to_ascii_lowercase();
        key.strip_prefix(&prefix).is_some_and(|path| path.rsplit("__").nth(1) == Some(LIBRDKAFKA))
    });
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix(env_prefix)
            .prefix_separator("__")
            .separator("__")
            .source(Some(plain.into_iter().collect())),
    );
    let mut root: config::Value = builder.build().map_err(quiet)?.try_deserialize()?;
    for (key, value) in properties {
        let key = key.to_ascii_lowercase();
        let path: Vec<&str> = key[prefix.len()..].split("__").collect();
        let (property, sections) = path.split_last().unwrap_or((&"", &[]));
        set(&mut root, sections, &property.replace('_', "."), value);
    }
    Ok(root.try_deserialize()?)
}

/// The process's variables under `prefix` (lowercase, with its `__`). Others are not read at all,
/// so one that is not UTF-8 (another program's) costs nothing; one of ours that is not UTF-8 is an
/// error naming the variable, never quoting its value.
fn own_variables(prefix: &str) -> Result<config::Map<String, String>, ConfigError> {
    let mut own = config::Map::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str().filter(|k| k.to_ascii_lowercase().starts_with(prefix)) else { continue };
        let value = value
            .into_string()
            .map_err(|_| ConfigError::Invalid(format!("environment variable {key} is not UTF-8")))?;
        own.insert(key.to_owned(), value);
    }
    Ok(own)
}

/// A configuration file's syntax error without the quoted source line the TOML parser adds: that
/// line may be a secret (`password = "…` with a missing quote). Keeps the position and the reason.
fn quiet(error: config::ConfigError) -> ConfigError {
    match error {
        config::ConfigError::FileParse { uri, cause } => {
            let text = cause.to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let at = lines.next().unwrap_or("syntax error").to_owned();
            // The parser's last line is its reason; the lines between quote the source.
            let reason = text
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty() && !l.contains('|') && !l.starts_with(|c: char| c.is_ascii_digit()))
                .filter(|l| *l != at)
                .map_or(String::new(), |l| format!(": {l}"));
            let file = uri.unwrap_or_else(|| "configuration file".into());
            ConfigError::Invalid(format!("{file}: {at}{reason}"))
        }
        other => ConfigError::Load(other),
    }
}

/// Sets `value` at `sections` then `key` in the tree, making the tables on the way.
fn set(node: &mut config::Value, sections: &[&str], key: &str, value: String) {
    use config::{Value, ValueKind};
    if !matches!(node.kind, ValueKind::Table(_)) {
        *node = Value::new(None, ValueKind::Table(config::Map::new()));
    }
    let ValueKind::Table(table) = &mut node.kind else { return };
    match sections.split_first() {
        None => {
            table.insert(key.to_owned(), Value::new(None, ValueKind::String(value)));
        }
        Some((first, rest)) => {
            let child = table.entry((*first).to_owned()).or_insert_with(|| Value::new(None, ValueKind::Nil));
            set(child, rest, key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::io::Write;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        count: u32,
    }

    #[test]
    fn file_then_env() {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().expect("temp file");
        writeln!(file, "name = \"from-file\"\n[inner]\ncount = 1").expect("write");
        let env = [("SPANLINE_T__INNER__COUNT".to_owned(), "7".to_owned())].into_iter().collect();
        let sample: Sample = load_with_env(Some(file.path()), "SPANLINE_T", Some(env)).expect("loads");
        assert_eq!(sample.name, "from-file");
        assert_eq!(sample.inner.count, 7);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Secrets {
        password: String,
        port: u16,
        enabled: bool,
        #[serde(default)]
        ratio: Option<f64>,
    }

    #[test]
    fn environment_strings_stay_verbatim_and_typed_fields_still_parse() {
        let env = [
            ("SPANLINE_S__PASSWORD", "0123456"),
            ("SPANLINE_S__PORT", "0443"),
            ("SPANLINE_S__ENABLED", "true"),
            ("SPANLINE_S__RATIO", "0.50"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let s: Secrets = load_with_env(None, "SPANLINE_S", Some(env)).expect("loads");
        assert_eq!(s.password, "0123456", "a secret keeps its leading zero");
        assert_eq!((s.port, s.enabled, s.ratio), (443, true, Some(0.5)));
        let env = [("SPANLINE_S__PASSWORD".to_owned(), "true".to_owned())].into_iter().collect();
        let err = load_with_env::<Secrets>(None, "SPANLINE_S", Some(env)).expect_err("port and enabled missing");
        assert!(err.to_string().contains("missing configuration field \"port\""), "{err}");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct WithKafka {
        kafka: KafkaSection,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct KafkaSection {
        brokers: String,
        librdkafka: std::collections::BTreeMap<String, String>,
    }

    #[test]
    fn librdkafka_properties_with_dots_come_from_the_environment() {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().expect("temp file");
        writeln!(file, "[kafka]\nbrokers = \"b:9092\"\n[kafka.librdkafka]\n\"socket.timeout.ms\" = \"1000\"")
            .expect("write");
        let env = [
            ("SPANLINE_K__KAFKA__LIBRDKAFKA__SSL_KEY_PASSWORD", "0123456"),
            ("SPANLINE_K__KAFKA__LIBRDKAFKA__SOCKET_TIMEOUT_MS", "2000"),
            ("SPANLINE_K__KAFKA__BROKERS", "c:9092"),
            ("OTHER__KAFKA__LIBRDKAFKA__X", "ignored"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let c: WithKafka = load_with_env(Some(file.path()), "SPANLINE_K", Some(env)).expect("loads");
        assert_eq!(c.kafka.brokers, "c:9092");
        assert_eq!(c.kafka.librdkafka.get("ssl.key.password").map(String::as_str), Some("0123456"));
        assert_eq!(c.kafka.librdkafka.get("socket.timeout.ms").map(String::as_str), Some("2000"), "env wins");
        assert_eq!(c.kafka.librdkafka.len(), 2);
    }

    #[test]
    fn a_syntax_error_names_the_place_without_quoting_the_line() {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().expect("temp file");
        writeln!(file, "name = \"x\"\npassword = \"hunter2\\qsecret\"\n[inner]\ncount = 1").expect("write");
        let err = load::<Sample>(Some(file.path()), "SPANLINE_CONFIG_TEST_Q").expect_err("bad escape");
        let text = err.to_string();
        assert!(text.contains("line 2") && !text.contains("hunter2") && !text.contains("qsecret"), "{text}");
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().expect("temp file");
        writeln!(file, "name = \"x\"\npassword = \"hunter2\n[inner]\ncount = 1").expect("write");
        let text = load::<Sample>(Some(file.path()), "SPANLINE_CONFIG_TEST_Q").expect_err("open quote").to_string();
        assert!(text.contains("line 2") && !text.contains("hunter2"), "{text}");
    }

    #[test]
    fn unknown_fields_are_errors() {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().expect("temp file");
        writeln!(file, "name = \"x\"\ncolour = \"red\"\n[inner]\ncount = 1").expect("write");
        let err = load::<Sample>(Some(file.path()), "SPANLINE_CONFIG_TEST_B").expect_err("rejects");
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
