//! `auth`: the receivers' gate, before a request's body is read. A client sends
//! `Authorization: Bearer <token>` (the OpenTelemetry Collector's `bearertokenauth` convention);
//! the token must be one of those in `receivers.auth.bearer_tokens_file`, one per line, so a new
//! token can be added before the old one is removed. The file is read again when it changes
//! ([`spanline_common::reload`]). Tokens are compared in constant time and never logged.

use std::{path::PathBuf, time::Duration};

use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use spanline_common::{
    reload::{DEFAULT_INTERVAL, ReloadMetrics, Watched},
    secret::constant_time_eq,
};
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// `[receivers.auth]`: who may export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A file of bearer tokens, one per line (blank lines and lines starting with `#` are skipped).
    /// Set, every OTLP request must carry `Authorization: Bearer <one of them>`, else gRPC
    /// UNAUTHENTICATED / HTTP 401. Default empty: no authentication.
    pub bearer_tokens_file: String,
    /// How often the file is read again (also at once on SIGHUP). Default `10s`.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { bearer_tokens_file: String::new(), reload_interval: DEFAULT_INTERVAL }
    }
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.reload_interval < Duration::from_secs(1) {
            return Err("receivers.auth.reload_interval must be at least 1s".into());
        }
        Ok(())
    }
}

/// The tokens a request is checked against, as SHA-256 digests; none configured lets every request
/// through. Comparing digests of equal length makes the time taken independent of the presented
/// token's length and content alike.
#[derive(Clone, Debug)]
pub struct Gate(Option<Watched<Vec<Digest>>>);

/// A token's SHA-256.
#[derive(Clone)]
pub struct Digest([u8; 32]);

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digest(<redacted>)")
    }
}

fn digest(token: &[u8]) -> Digest {
    use sha2::Digest as _;
    Digest(sha2::Sha256::digest(token).into())
}

/// The longest token line kept: a longer one is a mistake in the file, refused when it is read.
const MAX_TOKEN_BYTES: usize = 4096;
/// The shortest token accepted: anything shorter can be guessed.
const MIN_TOKEN_BYTES: usize = 16;

impl Gate {
    /// An open gate (no authentication).
    pub fn open() -> Self {
        Self(None)
    }

    /// Reads the token file and watches it.
    pub fn new(config: &AuthConfig, metrics: ReloadMetrics, token: CancellationToken) -> Result<Self, String> {
        if config.bearer_tokens_file.is_empty() {
            return Ok(Self::open());
        }
        let file = config.bearer_tokens_file.clone();
        let parse = move |contents: &[Vec<u8>]| parse_tokens(&file, &contents[0]);
        let paths = vec![PathBuf::from(&config.bearer_tokens_file)];
        Watched::start("bearer_tokens", paths, config.reload_interval, parse, metrics, token).map(|w| Self(Some(w)))
    }

    pub fn is_open(&self) -> bool {
        self.0.is_none()
    }

    /// Checks a request's headers. Every configured token is compared, whether or not an earlier one
    /// matched, so the time taken says nothing about which token was close.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Error> {
        let Some(tokens) = &self.0 else { return Ok(()) };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(presented) = presented else {
            return Err(Error::Unauthenticated("missing bearer token"));
        };
        let presented = digest(presented.as_bytes());
        let matched =
            tokens.get().iter().fold(false, |matched, token| constant_time_eq(&token.0, &presented.0) | matched);
        if matched { Ok(()) } else { Err(Error::Unauthenticated("invalid bearer token")) }
    }
}

/// The tokens in a file's bytes; an error names the file and the line, never the token.
fn parse_tokens(file: &str, contents: &[u8]) -> Result<Vec<Digest>, String> {
    let text = std::str::from_utf8(contents).map_err(|_| format!("{file}: not UTF-8 text"))?;
    let mut tokens = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&line.len()) || line.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(format!(
                "{file} line {}: a token is printable ASCII without spaces, {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES} bytes",
                n + 1
            ));
        }
        tokens.push(digest(line.as_bytes()));
    }
    if tokens.is_empty() {
        return Err(format!("{file}: no token in it"));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
        h
    }

    #[tokio::test]
    async fn any_listed_token_passes_and_nothing_else_does() {
        let mut file = tempfile::NamedTempFile::new().expect("temp");
        std::io::Write::write_all(
            &mut file,
            b"# rotated on 2026-11-30\nold-token-0123456789\n\nnew-token-0123456789\n",
        )
        .expect("write");
        let config = AuthConfig { bearer_tokens_file: file.path().display().to_string(), ..AuthConfig::default() };
        let token = CancellationToken::new();
        let gate = Gate::new(&config, ReloadMetrics::default(), token.clone()).expect("reads");
        assert!(gate.check(&headers("Bearer old-token-0123456789")).is_ok());
        assert!(gate.check(&headers("bearer new-token-0123456789")).is_ok());
        for refused in [
            "Bearer wrong",
            "Bearer old-token-012345678",
            "Bearer old-token-01234567890",
            "Basic old-token-0123456789",
            "old-token-0123456789",
            "Bearer ",
        ] {
            let err = gate.check(&headers(refused)).expect_err(refused);
            assert!(matches!(err, Error::Unauthenticated(_)), "{refused}");
            assert!(!err.to_string().contains("0123456789"), "{err}");
        }
        assert!(matches!(gate.check(&HeaderMap::new()), Err(Error::Unauthenticated("missing bearer token"))));
        assert!(Gate::open().check(&HeaderMap::new()).is_ok());
        token.cancel();
    }

    #[test]
    fn a_bad_token_file_is_named_without_its_content() {
        let err = parse_tokens("tokens", b"good-token-0123456789\nhas space s3cret-0123456789\n").expect_err("space");
        assert!(err.contains("tokens line 2") && !err.contains("s3cret"), "{err}");
        let err = parse_tokens("tokens", b"short-s3cret\n").expect_err("short");
        assert!(err.contains("tokens line 1") && !err.contains("s3cret"), "{err}");
        assert!(parse_tokens("tokens", b"# only a comment\n").is_err());
    }
}
