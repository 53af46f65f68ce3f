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
pub fn load<T: DeserializeOwned>(file: Option<&Path>, env_prefix: &str) -> Result<T, ConfigError> {
    load_with_env(file, env_prefix, None)
}

/// [`load`] with the environment given as a map instead of read from the process (for tests).
pub fn load_with_env<T: DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    env: Option<config::Map<String, String>>,
) -> Result<T, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    builder = builder
        .add_source(config::Environment::with_prefix(env_prefix).prefix_separator("__").separator("__").source(env));
    Ok(builder.build()?.try_deserialize()?)
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

    #[test]
    fn unknown_fields_are_errors() {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().expect("temp file");
        writeln!(file, "name = \"x\"\ncolour = \"red\"\n[inner]\ncount = 1").expect("write");
        let err = load::<Sample>(Some(file.path()), "SPANLINE_CONFIG_TEST_B").expect_err("rejects");
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
