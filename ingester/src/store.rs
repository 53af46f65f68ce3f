//! `store`: the OpenSearch nodes every request of the ingester goes through (`_bulk`, cluster info,
//! index templates) → one client per node with its TLS settings, and the `Authorization` header
//! added to each request from the current credentials.
//!
//! Built once by the pipeline ([`nodes`]); [`crate::bulk`] and the start-up requests
//! ([`crate::pipeline::prepare_store`], [`crate::templates`]) call [`Node::send`], never the
//! `opensearch` client directly. What it guarantees:
//!
//! - credentials are never baked into the transport: a `password_file` or `api_key_file` is watched
//!   ([`Watched`]) and the header is read from it per request, so an operator who fixes or rotates
//!   the file unblocks the next retry without a restart;
//! - the header value is marked sensitive, and no message built here quotes a credential or a key
//!   file's content, only setting names and paths;
//! - a client certificate (mTLS) is handed to the client as an in-memory PKCS#12 archive built from
//!   the PEM files, the only form the `opensearch` crate takes with its native-tls backend;
//! - [`tls_failure`] tells a failed TLS handshake (an untrusted or expired server certificate, a
//!   client certificate the store refuses) from a store that is just away, so the first is held
//!   and alerted instead of retried quietly.

use std::{path::Path, time::Duration};

use base64::Engine as _;
use opensearch::{
    OpenSearch,
    auth::{ClientCertificate, Credentials},
    cert::{Certificate, CertificateValidation},
    http::{
        Method,
        headers::{AUTHORIZATION, HeaderMap, HeaderValue},
        request::Body,
        response::Response,
        transport::{SingleNodeConnectionPool, TransportBuilder},
    },
};
use spanline_common::{
    reload::{ReloadMetrics, Watched},
    secret::{self, Secret},
};
use tokio_util::sync::CancellationToken;

use crate::{config, error::Error};

/// One OpenSearch node and the credentials every request to it carries.
#[derive(Clone)]
pub struct Node {
    client: OpenSearch,
    auth: Auth,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("auth", &self.auth.kind()).finish_non_exhaustive()
    }
}

/// Where the `Authorization` header comes from.
#[derive(Clone)]
enum Auth {
    None,
    /// From an inline setting: fixed for the process's life.
    Fixed(HeaderValue),
    /// From a file, rebuilt when it changes (a bad rewrite keeps the last good header).
    File(Watched<HeaderValue>),
}

impl Auth {
    fn header(&self) -> Option<HeaderValue> {
        match self {
            Auth::None => None,
            Auth::Fixed(value) => Some(value.clone()),
            Auth::File(watched) => Some(HeaderValue::clone(&watched.get())),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Fixed(_) => "inline",
            Auth::File(_) => "file",
        }
    }
}

impl Node {
    /// Sends one request with the current credentials. `headers` must not hold `Authorization`
    /// (the credentials' header replaces it).
    pub async fn send<B: Body>(
        &self,
        method: Method,
        path: &str,
        mut headers: HeaderMap,
        body: Option<B>,
        timeout: Option<Duration>,
    ) -> Result<Response, opensearch::Error> {
        if let Some(value) = self.auth.header() {
            headers.insert(AUTHORIZATION, value);
        }
        self.client.send(method, path, headers, None::<&()>, body, timeout).await
    }
}

/// What the ingester authenticates with, for the start-up log line (never the secret).
pub fn auth_mode(config: &config::OpenSearch) -> &'static str {
    if config.api_key_auth() {
        "api_key"
    } else if config.basic_auth() {
        "basic"
    } else {
        "none"
    }
}

/// One client per configured node. Callers take them in turn ([`crate::bulk::BulkClient`] per
/// request, start-up per attempt), so a request that fails on one node is retried on the next.
/// Reads the CA, client certificate and credential files now (an error names the setting and the
/// path); credential files are then watched, counted in `reloads`, while any node is alive.
pub fn nodes(config: &config::OpenSearch, reloads: ReloadMetrics) -> Result<Vec<Node>, Error> {
    let auth = auth(config, reloads)?;
    let identity = identity(config)?;
    let ca = ca(config)?;
    let nodes: Vec<Node> = config
        .urls()
        .map(|url| {
            let parsed = url.parse().map_err(|e| Error::Setup(format!("opensearch.url {url:?}: {e}")))?;
            let mut builder =
                TransportBuilder::new(SingleNodeConnectionPool::new(parsed)).timeout(config.request_timeout);
            if config.tls_insecure {
                builder = builder.cert_validation(CertificateValidation::None);
            } else if let Some(pem) = &ca {
                // Parsed per node: the client's certificate type cannot be cloned.
                let ca = Certificate::from_pem(pem).map_err(|e| {
                    Error::Setup(format!("opensearch.ca_file {}: not a PEM certificate: {e}", config.ca_file))
                })?;
                builder = builder.cert_validation(CertificateValidation::Full(ca));
            }
            // A client certificate is the one credential the transport must hold: it belongs to the
            // TLS connection, not to a request.
            if let Some(identity) = &identity {
                builder = builder.auth(Credentials::Certificate(identity.clone()));
            }
            let transport =
                builder.build().map_err(|e| Error::Setup(format!("cannot build the opensearch client: {e}")))?;
            Ok(Node { client: OpenSearch::new(transport), auth: auth.clone() })
        })
        .collect::<Result<_, Error>>()?;
    if nodes.is_empty() {
        return Err(Error::Setup("opensearch.url names no node".into()));
    }
    Ok(nodes)
}

/// The CA file's PEM, when one is trusted instead of the system's roots.
fn ca(config: &config::OpenSearch) -> Result<Option<Vec<u8>>, Error> {
    if config.tls_insecure || config.ca_file.is_empty() {
        return Ok(None);
    }
    secret::read_bounded("opensearch.ca_file", Path::new(&config.ca_file)).map(Some).map_err(Error::Setup)
}

/// The `Authorization` header: fixed from an inline setting, or watched from a file.
fn auth(config: &config::OpenSearch, reloads: ReloadMetrics) -> Result<Auth, Error> {
    let interval = config.credentials_reload_interval;
    // Watching ends when the last node is dropped (the watcher holds only a weak reference).
    let token = CancellationToken::new();
    if config.api_key_auth() {
        if !config.api_key.is_empty() {
            return api_key_header("opensearch.api_key", &config.api_key).map(Auth::Fixed).map_err(Error::Setup);
        }
        let path = config.api_key_file.clone();
        let build = move |files: &[Vec<u8>]| {
            let key = secret::from_file_bytes("opensearch.api_key_file", Path::new(&path), files[0].clone())?;
            api_key_header(&format!("opensearch.api_key_file {path}"), &key)
        };
        let watched = Watched::start(
            "opensearch_credentials",
            vec![config.api_key_file.clone().into()],
            interval,
            build,
            reloads,
            token,
        )
        .map_err(Error::Setup)?;
        return Ok(Auth::File(watched));
    }
    if config.username.is_empty() {
        return Ok(Auth::None);
    }
    if !config.password.is_empty() {
        return Ok(Auth::Fixed(basic_header(&config.username, &config.password)));
    }
    let (path, user) = (config.password_file.clone(), config.username.clone());
    let build = move |files: &[Vec<u8>]| {
        let password = secret::from_file_bytes("opensearch.password_file", Path::new(&path), files[0].clone())?;
        Ok(basic_header(&user, &password))
    };
    Watched::start("opensearch_credentials", vec![config.password_file.clone().into()], interval, build, reloads, token)
        .map(Auth::File)
        .map_err(Error::Setup)
}

/// `Basic base64(user:password)`, marked sensitive. Base64 is always a valid header value.
fn basic_header(user: &str, password: &Secret) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.expose()));
    let mut value = HeaderValue::from_bytes(format!("Basic {encoded}").as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// `ApiKey <key>`, marked sensitive; a key that cannot be a header value is refused, `what`
/// naming where it came from.
fn api_key_header(what: &str, key: &Secret) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_bytes(format!("ApiKey {}", key.expose()).as_bytes())
        .map_err(|_| format!("{what}: not a valid header value (use the encoded key, printable ASCII)"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The client certificate and key as an in-memory PKCS#12 archive (the `opensearch` crate's
/// native-tls backend takes no PEM identity). Read once, at start.
fn identity(config: &config::OpenSearch) -> Result<Option<ClientCertificate>, Error> {
    if config.cert_file.is_empty() {
        return Ok(None);
    }
    let cert_pem = secret::read_bounded("opensearch.cert_file", Path::new(&config.cert_file)).map_err(Error::Setup)?;
    let key_pem = secret::read_bounded("opensearch.key_file", Path::new(&config.key_file)).map_err(Error::Setup)?;
    pkcs12(&config.cert_file, &cert_pem, &config.key_file, &key_pem)
        .map(|der| Some(ClientCertificate::Pkcs12(der, None)))
        .map_err(Error::Setup)
}

/// A DER PKCS#12 archive (empty passphrase) of the chain in `cert_pem` (leaf first) and the key in
/// `key_pem`. Errors name the files, never their content.
fn pkcs12(cert_file: &str, cert_pem: &[u8], key_file: &str, key_pem: &[u8]) -> Result<Vec<u8>, String> {
    let mut chain = openssl::x509::X509::stack_from_pem(cert_pem)
        .map_err(|_| format!("opensearch.cert_file {cert_file}: not a PEM certificate file"))?
        .into_iter();
    let leaf = chain.next().ok_or_else(|| format!("opensearch.cert_file {cert_file}: no certificate in it"))?;
    // An empty passphrase: an encrypted key fails here instead of OpenSSL asking on the terminal.
    let key = openssl::pkey::PKey::private_key_from_pem_passphrase(key_pem, b"").map_err(|_| {
        format!("opensearch.key_file {key_file}: no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) in it")
    })?;
    let mut builder = openssl::pkcs12::Pkcs12::builder();
    builder.name("spanline-ingester").pkey(&key).cert(&leaf);
    let rest: Vec<_> = chain.collect();
    if !rest.is_empty() {
        let mut stack = openssl::stack::Stack::new().map_err(|e| format!("pkcs12: {e}"))?;
        for cert in rest {
            stack.push(cert).map_err(|e| format!("pkcs12: {e}"))?;
        }
        builder.ca(stack);
    }
    let archive = builder.build2("").map_err(|_| {
        format!("opensearch.cert_file {cert_file} and opensearch.key_file {key_file} do not make a usable client certificate (does the key match the certificate?)")
    })?;
    archive.to_der().map_err(|e| format!("pkcs12: {e}"))
}

/// Why a request that got no answer failed, when it is the TLS handshake: the server's certificate
/// not trusted (unknown CA, expired, wrong host name) or our client certificate refused. `None` for
/// anything else (refused connection, timeout, reset), which waiting may fix. The reason joins the
/// error's causes (TLS library messages, never a credential); the outermost one, which repeats the
/// URL, is left out.
pub fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut causes = Vec::new();
    let mut current = error.source();
    while let Some(cause) = current {
        causes.push(cause.to_string());
        current = cause.source();
    }
    // A peer that closes mid-handshake (a node restarting, a balancer without a backend) is
    // "unexpected eof" under OpenSSL 3: a store that is away, retried quietly, not a refusal.
    let away = causes.iter().any(|c| {
        let c = c.to_ascii_lowercase();
        c.contains("unexpected eof") || c.contains("connection reset") || c.contains("broken pipe")
    });
    let tls = !away
        && causes.iter().any(|c| {
            let c = c.to_ascii_lowercase();
            c.contains("certificate") || c.contains("ssl routines") || c.contains("handshake")
        });
    tls.then(|| causes.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("request failed")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_refused_certificate_is_a_tls_failure_and_a_peer_gone_mid_handshake_is_not() {
        let refused = Outer(std::io::Error::other(
            "error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed",
        ));
        assert!(tls_failure(&refused).is_some());
        let away = Outer(std::io::Error::other("error:0A000126:SSL routines::unexpected eof while reading"));
        assert!(tls_failure(&away).is_none(), "a node restarting is not a certificate problem");
        assert!(tls_failure(&Outer(std::io::Error::other("connection refused"))).is_none());
    }

    #[test]
    fn headers_are_sensitive_and_never_shown() {
        let basic = basic_header("spanline", &Secret::new("pa55word"));
        assert!(basic.is_sensitive());
        assert_eq!(basic.to_str().expect("ascii"), "Basic c3BhbmxpbmU6cGE1NXdvcmQ=");
        assert!(!format!("{basic:?}").contains("c3Bhbmxpbm"), "{basic:?}");
        let key = api_key_header("opensearch.api_key", &Secret::new("aWQ6a2V5")).expect("valid");
        assert_eq!(key.to_str().expect("ascii"), "ApiKey aWQ6a2V5");
        let error = api_key_header("opensearch.api_key", &Secret::new("bad\nkey")).expect_err("newline");
        assert!(error.contains("opensearch.api_key") && !error.contains("bad"), "{error}");
    }

    #[test]
    fn a_key_that_does_not_parse_is_named_not_quoted() {
        let error = pkcs12("c.pem", b"", "k.pem", b"s3cret").expect_err("no certificate");
        assert!(error.contains("c.pem"), "{error}");
        let dir = tempfile_dir();
        let pki = spanline_testkit::certs::Pki::write(&dir);
        let cert = std::fs::read(&pki.client.cert).expect("cert");
        let error = pkcs12("c.pem", &cert, "k.pem", b"s3cret-key-bytes").expect_err("bad key");
        assert!(error.contains("k.pem") && !error.contains("s3cret"), "{error}");
        let key = std::fs::read(&pki.client.key).expect("key");
        assert!(!pkcs12("c.pem", &cert, "k.pem", &key).expect("archive").is_empty());
        let other = std::fs::read(&pki.server.key).expect("key");
        let error = pkcs12("c.pem", &cert, "k.pem", &other).expect_err("mismatch");
        assert!(error.contains("does the key match"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("spanline-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }
}
