//! TLS and authentication in front of the REST routes, answering as OpenSearch's security plugin
//! does, so the ingester's secured paths (a CA, a client certificate, basic auth, an API key, a
//! rotated password) can be tested without a real cluster.
//!
//! - TLS: [`TlsListener`] accepts connections with `spanline_common::tls` (rustls; with a client CA
//!   every client must present a certificate it signs, as `plugins.security.ssl.http.clientauth_mode:
//!   REQUIRE`). A failed handshake is logged and the connection dropped.
//! - Authentication: [`require`] checks every request's `Authorization` header (`Basic` with the
//!   configured user and password, or `ApiKey` with the configured key; secrets compared in constant
//!   time) and answers anything else like the security plugin's basic-auth domain with its HTTP
//!   challenge: HTTP 401, `WWW-Authenticate: Basic realm="OpenSearch Security"`, body `Unauthorized`
//!   (`text/plain`). The password and key files are watched ([`Watched`]): a rewritten file takes
//!   effect within a second, which is how the tests rotate a password under a running ingester.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use spanline_common::{
    reload::{ReloadMetrics, Watched},
    secret::{self, Secret, constant_time_eq},
    tls::TlsAcceptor,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How often the password and key files are read again.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// How long a client may take over its TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may call the store. With neither basic auth nor an API key, every request is served.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// The one basic-auth user; needs `basic_password_file`.
    pub basic_user: Option<String>,
    /// File holding that user's password (one trailing newline ignored).
    pub basic_password_file: Option<PathBuf>,
    /// File holding the API key accepted as `Authorization: ApiKey <key>`.
    pub api_key_file: Option<PathBuf>,
}

impl AuthSettings {
    pub fn enabled(&self) -> bool {
        self.basic_user.is_some() || self.api_key_file.is_some()
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.basic_user.is_some() != self.basic_password_file.is_some() {
            return Err("--basic-auth-user and --basic-auth-password-file go together".into());
        }
        if self.basic_user.as_deref().is_some_and(|u| u.is_empty() || u.contains(':')) {
            return Err("--basic-auth-user must be non-empty without ':'".into());
        }
        Ok(())
    }

    /// Reads the files (an error names them) and watches them.
    pub fn start(&self) -> Result<Guard, String> {
        let mut paths = Vec::new();
        let password_at = self.basic_password_file.clone().map(|p| {
            paths.push(p);
            paths.len() - 1
        });
        let key_at = self.api_key_file.clone().map(|p| {
            paths.push(p);
            paths.len() - 1
        });
        let (user, files) = (self.basic_user.clone(), paths.clone());
        let build = move |contents: &[Vec<u8>]| {
            let read = |at: usize| secret::from_file_bytes("devstore secret", &files[at], contents[at].clone());
            Ok(Accepted {
                basic: match (&user, password_at) {
                    (Some(user), Some(at)) => Some((user.clone(), read(at)?)),
                    _ => None,
                },
                api_key: key_at.map(read).transpose()?,
            })
        };
        let watched = Watched::start(
            "devstore_credentials",
            paths,
            RELOAD_INTERVAL,
            build,
            ReloadMetrics::default(),
            CancellationToken::new(),
        )?;
        Ok(Guard(Arc::new(watched)))
    }
}

/// The credentials currently accepted.
struct Accepted {
    basic: Option<(String, Secret)>,
    api_key: Option<Secret>,
}

/// The credentials check every request passes, shared by the routes.
#[derive(Clone)]
pub struct Guard(Arc<Watched<Accepted>>);

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

impl Guard {
    /// Whether `authorization` (the header's value) carries accepted credentials.
    fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let accepted = self.0.get();
        let Some(value) = authorization.and_then(|v| v.to_str().ok()) else { return false };
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let Some((user, password)) = &accepted.basic else { return false };
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else { return false };
            let Some(colon) = decoded.iter().position(|&b| b == b':') else { return false };
            let (given_user, given_password) = (&decoded[..colon], &decoded[colon + 1..]);
            // Both compared, always, so the time taken does not say which one was wrong.
            let user_ok = constant_time_eq(given_user, user.as_bytes());
            let password_ok = constant_time_eq(given_password, password.expose().as_bytes());
            user_ok & password_ok
        } else if scheme.eq_ignore_ascii_case("apikey") {
            accepted
                .api_key
                .as_ref()
                .is_some_and(|key| constant_time_eq(credentials.as_bytes(), key.expose().as_bytes()))
        } else {
            false
        }
    }
}

/// Middleware: serves the request only with accepted credentials, else the security plugin's 401.
pub async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if guard.admits(request.headers().get(header::AUTHORIZATION)) {
        return next.run(request).await;
    }
    tracing::debug!(path = %request.uri().path(), "unauthenticated request refused");
    unauthorized()
}

/// OpenSearch security's answer to missing or wrong credentials with the HTTP basic challenge on.
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Basic realm=\"OpenSearch Security\""),
            (header::CONTENT_TYPE, "text/plain; charset=UTF-8"),
        ],
        "Unauthorized",
    )
        .into_response()
}

/// A TCP listener whose connections are served only after a TLS handshake.
pub struct TlsListener {
    pub tcp: TcpListener,
    pub acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    /// Handshakes one connection at a time (bounded by [`HANDSHAKE_TIMEOUT`]): enough for a dev
    /// store on loopback, where a handshake takes a millisecond.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(error)) => tracing::warn!(%addr, %error, "tls handshake failed"),
                Err(_) => tracing::warn!(%addr, "tls handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(dir: &std::path::Path) -> Guard {
        let password = dir.join("password");
        let key = dir.join("key");
        std::fs::write(&password, "s3cret\n").expect("write");
        std::fs::write(&key, "aWQ6a2V5").expect("write");
        AuthSettings {
            basic_user: Some("spanline".into()),
            basic_password_file: Some(password),
            api_key_file: Some(key),
        }
        .start()
        .expect("starts")
    }

    #[tokio::test]
    async fn basic_and_api_key_credentials_are_checked() {
        let dir = std::env::temp_dir().join(format!("devstore-security-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let guard = guard(&dir);
        let basic = |user: &str, password: &str| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            HeaderValue::from_str(&format!("Basic {encoded}")).expect("header")
        };
        assert!(guard.admits(Some(&basic("spanline", "s3cret"))));
        assert!(!guard.admits(Some(&basic("spanline", "s3cret2"))));
        assert!(!guard.admits(Some(&basic("other", "s3cret"))));
        assert!(!guard.admits(None));
        assert!(!guard.admits(Some(&HeaderValue::from_static("Basic !!!"))));
        assert!(guard.admits(Some(&HeaderValue::from_static("ApiKey aWQ6a2V5"))));
        assert!(!guard.admits(Some(&HeaderValue::from_static("ApiKey aWQ6a2V6"))));
        assert!(!guard.admits(Some(&HeaderValue::from_static("Bearer aWQ6a2V5"))));
        let answer = unauthorized();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(answer.headers()[header::WWW_AUTHENTICATE], "Basic realm=\"OpenSearch Security\"");
        let _ = std::fs::remove_dir_all(dir);
    }
}
