//! A secured test broker: SASL users and TLS in front of Tansu, and the client settings that reach it.
//!
//! Tansu 0.6.0 authenticates (SASL SCRAM, `--authentication`, users made with `tansu user create`)
//! but does not serve TLS: it builds an acceptor and never uses it, and its CLI refuses `--cert`
//! with `--key` (REFERENCE.md §7, docs/security.md). So TLS here is a small rustls terminator on
//! its own port, forwarding each connection to Tansu's plain listener, with Tansu advertising the
//! terminator's address: every client connection after the bootstrap one goes through TLS too.
//!
//! Users are created while the broker runs without `--authentication` on the same storage (with it
//! on, the CLI cannot log in); then it is restarted with it.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use anyhow::{Context, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use spanline_common::{
    kafka::{KafkaClientConfig, KafkaSasl, KafkaTls, SaslMechanism},
    secret::Secret,
};
use tokio::net::{TcpListener, TcpStream};

/// What [`crate::Broker::start_secured`] sets up.
#[derive(Debug, Clone, Default)]
pub struct SecureBroker {
    /// TLS in front of the broker, or plaintext.
    pub tls: Option<TlsFiles>,
    /// SASL users, created before authentication is switched on; empty for no authentication.
    pub users: Vec<User>,
}

/// The terminator's certificate and key, and the CA clients are told to trust.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A SASL user as Tansu stores it: SCRAM credentials for one hash (`ScramSha256` or
/// `ScramSha512`).
#[derive(Debug, Clone)]
pub struct User {
    pub mechanism: SaslMechanism,
    pub name: String,
    pub password: String,
}

/// The secured part of a running [`crate::Broker`].
#[derive(Debug)]
pub(crate) struct Secured {
    pub(crate) settings: SecureBroker,
    /// Whether Tansu runs with `--authentication` (off while users are created).
    pub(crate) authentication: bool,
    pub(crate) proxy: Option<TlsProxy>,
}

impl Secured {
    /// The listener URL Tansu advertises: the terminator's when there is one (after the users are
    /// made: the user CLI talks plaintext to Tansu itself).
    pub(crate) fn advertised(&self, plain: &str) -> String {
        match self.proxy.as_ref().filter(|_| self.serving()) {
            Some(proxy) => format!("tcp://{}", proxy.addr),
            None => plain.to_owned(),
        }
    }

    /// Whether the broker runs as configured (not in its first run, while users are made).
    fn serving(&self) -> bool {
        self.authentication || self.settings.users.is_empty()
    }

    /// The client settings that reach the broker as configured: through TLS when it has it, as the
    /// first user when there are users. `plain` is Tansu's own address.
    pub(crate) fn client(&self, plain: &str) -> KafkaClientConfig {
        let mut k = KafkaClientConfig::default();
        match (self.proxy.as_ref().filter(|_| self.serving()), &self.settings.tls) {
            (Some(proxy), Some(files)) => {
                k.brokers = proxy.addr.to_string();
                k.tls = KafkaTls { enabled: true, ca_file: files.ca.display().to_string(), ..KafkaTls::default() };
            }
            _ => plain.clone_into(&mut k.brokers),
        }
        if let Some(user) = self.settings.users.first().filter(|_| self.authentication) {
            k.sasl = KafkaSasl {
                mechanism: user.mechanism,
                username: user.name.clone(),
                password: Secret::new(user.password.clone()),
                password_file: String::new(),
            };
        }
        k
    }
}

/// Creates `users` on the broker at `plain` (`host:port`, running without `--authentication`).
pub(crate) fn create_users(plain: &str, users: &[User]) -> anyhow::Result<()> {
    for user in users {
        let mechanism = match user.mechanism {
            SaslMechanism::ScramSha256 => "scram256",
            SaslMechanism::ScramSha512 => "scram512",
            other => bail!("tansu stores SCRAM credentials only, not {other:?}"),
        };
        let output = Command::new(crate::tansu_bin()?)
            .args(["user", "create", &user.name, &user.password, "--mechanism", mechanism])
            .args(["--broker", &format!("tcp://{plain}")])
            .stdin(Stdio::null())
            .output()
            .context("cannot run tansu user create")?;
        if !output.status.success() {
            bail!(
                "tansu user create {} failed: {}{}",
                user.name,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(())
}

/// A TLS terminator on a free loopback port forwarding every connection to `upstream`, on a runtime
/// of its own (so it outlives any one test runtime's blocking calls). Dropping it stops it.
pub struct TlsProxy {
    pub addr: SocketAddr,
    /// Why handshakes failed, in order (a plaintext client, one that refused the certificate).
    pub refused: Arc<Mutex<Vec<String>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for TlsProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsProxy").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl TlsProxy {
    /// Serves TLS with `files.cert`/`files.key` on a free port, forwarding to `upstream`.
    pub fn start(files: &TlsFiles, upstream: SocketAddr) -> anyhow::Result<Self> {
        let chain = CertificateDer::pem_file_iter(&files.cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&files.key)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let refused = Arc::new(Mutex::new(Vec::new()));
        let seen = refused.clone();
        runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else { return };
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(stream).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            seen.lock().unwrap().push(e.to_string());
                            return;
                        }
                    };
                    let Ok(mut plain) = TcpStream::connect(upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Ok(Self { addr, refused, runtime: Some(runtime) })
    }
}
