//! `spanline-devstore`: an in-memory server speaking the OpenSearch REST subset Spanline uses, with
//! OpenSearch's response bodies, status codes and error shapes, plus fault injection. It serves the
//! tests, the benchmarks and `make up`; `docker-compose.yml` runs real OpenSearch. See
//! docs/devstore.md for the API and the faults.

pub mod aggs;
pub mod api;
pub mod error;
pub mod faults;
pub mod mapping;
pub mod postings;
pub mod query;
pub mod scan;
pub mod search;
pub mod security;
pub mod store;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use spanline_common::{ByteSize, tls::ServerTls};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use api::AppState;
pub use faults::{Faults, RejectRule};
pub use security::AuthSettings;

/// Command-line flags; each also reads an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(name = "spanline-devstore", version, about = "OpenSearch-compatible in-memory dev store")]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "DEVSTORE_LISTEN", default_value = "127.0.0.1:9200")]
    pub listen: SocketAddr,
    /// Memory cap for stored documents; writes past it get 429 `circuit_breaking_exception`.
    #[arg(long, env = "DEVSTORE_MEMORY_LIMIT", default_value = "4GiB")]
    pub memory_limit: ByteSize,
    /// Largest request body accepted (OpenSearch's `http.max_content_length`).
    #[arg(long, env = "DEVSTORE_MAX_CONTENT_LENGTH", default_value = "100MiB")]
    pub max_content_length: ByteSize,
    /// How often pending writes become searchable (OpenSearch's `index.refresh_interval`); 0 means
    /// only on `_refresh` or `?refresh=true`.
    #[arg(long, env = "DEVSTORE_REFRESH_INTERVAL", default_value = "1s", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub refresh_interval: Duration,
    /// Fault: answer every `_bulk` with this status (3xx, 400, 401, 403, 404, 405, 429, 503, ...).
    #[arg(long, env = "DEVSTORE_BULK_STATUS")]
    pub bulk_status: Option<u16>,
    /// Fault: answer every `_bulk` item with this item-level status (403 index write block, 404
    /// index missing with auto-create off).
    #[arg(long, env = "DEVSTORE_ITEM_STATUS")]
    pub item_status: Option<u16>,
    /// Fault: answer 413 to `_bulk` bodies larger than this.
    #[arg(long, env = "DEVSTORE_MAX_BULK_BYTES")]
    pub max_bulk_bytes: Option<ByteSize>,
    /// Fault: share of bulk items (0 to 1) rejected with an item-level 429.
    #[arg(long, env = "DEVSTORE_ITEM_429_RATE", default_value_t = 0.0)]
    pub item_429_rate: f64,
    /// Fault: reject items whose document has FIELD containing TEXT, as `FIELD~TEXT`, with an
    /// item-level 400 `mapper_parsing_exception`.
    #[arg(long, env = "DEVSTORE_REJECT")]
    pub reject: Option<String>,
    /// Fault: latency added to every request.
    #[arg(long, env = "DEVSTORE_LATENCY", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub latency: Option<Duration>,
    /// Fault: refuse connections for this long after start.
    #[arg(long, env = "DEVSTORE_REFUSE_FOR", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub refuse_for: Option<Duration>,
    /// Seed for the random fault choices, for repeatable runs.
    #[arg(long, env = "DEVSTORE_SEED")]
    pub seed: Option<u64>,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs `--tls-key`.
    #[arg(long, env = "DEVSTORE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "DEVSTORE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mTLS); needs `--tls-cert`.
    #[arg(long, env = "DEVSTORE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Require HTTP basic auth as this user (with `--basic-auth-password-file`); other requests get
    /// the security plugin's 401.
    #[arg(long, env = "DEVSTORE_BASIC_AUTH_USER")]
    pub basic_auth_user: Option<String>,
    /// File holding the basic-auth password; read again every second.
    #[arg(long, env = "DEVSTORE_BASIC_AUTH_PASSWORD_FILE")]
    pub basic_auth_password_file: Option<PathBuf>,
    /// Accept `Authorization: ApiKey <key>` with the key in this file; read again every second.
    #[arg(long, env = "DEVSTORE_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Also serve on this address in plaintext without authentication, for inspecting a secured
    /// store (tests, local tools). Never expose it.
    #[arg(long, env = "DEVSTORE_OPEN_LISTEN")]
    pub open_listen: Option<SocketAddr>,
}

/// What `start` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub memory_limit: ByteSize,
    pub max_content_length: ByteSize,
    pub refresh_interval: Duration,
    pub faults: Faults,
    pub refuse_for: Option<Duration>,
    pub seed: Option<u64>,
    /// HTTPS on `listen` when `tls.cert_file` is set; a `client_ca_file` requires client
    /// certificates. Default plaintext.
    pub tls: ServerTls,
    /// Credentials required on `listen`. Default none.
    pub auth: AuthSettings,
    /// A second, plaintext and unauthenticated listener on the same data, for inspection.
    pub open_listen: Option<SocketAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            memory_limit: ByteSize::mib(4096),
            max_content_length: ByteSize::mib(100),
            refresh_interval: Duration::from_secs(1),
            faults: Faults::default(),
            refuse_for: None,
            seed: None,
            tls: ServerTls::default(),
            auth: AuthSettings::default(),
            open_listen: None,
        }
    }
}

impl Args {
    /// Turns flags into validated settings.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let faults = Faults {
            bulk_status: self.bulk_status,
            bulk_status_times: None,
            item_status: self.item_status,
            item_status_times: None,
            max_bulk_bytes: self.max_bulk_bytes.map(ByteSize::bytes),
            item_429_rate: self.item_429_rate,
            reject: self.reject.as_deref().map(RejectRule::parse).transpose().map_err(anyhow::Error::msg)?,
            latency: self.latency,
        };
        faults.validate().map_err(anyhow::Error::msg)?;
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let tls = ServerTls {
            cert_file: path(&self.tls_cert),
            key_file: path(&self.tls_key),
            client_ca_file: path(&self.tls_client_ca),
            ..ServerTls::default()
        };
        tls.validate("tls").map_err(anyhow::Error::msg)?;
        let auth = AuthSettings {
            basic_user: self.basic_auth_user.clone(),
            basic_password_file: self.basic_auth_password_file.clone(),
            api_key_file: self.api_key_file.clone(),
        };
        auth.validate().map_err(anyhow::Error::msg)?;
        Ok(Settings {
            tls,
            auth,
            open_listen: self.open_listen,
            listen: self.listen,
            memory_limit: self.memory_limit,
            max_content_length: self.max_content_length,
            refresh_interval: self.refresh_interval,
            faults,
            refuse_for: self.refuse_for,
            seed: self.seed,
        })
    }
}

/// A running dev store.
#[derive(Debug)]
pub struct Running {
    /// Where it listens (the real port when started on port 0).
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
    /// Whether `addr` serves HTTPS.
    pub tls: bool,
    /// The plaintext, unauthenticated listener's address, when asked for.
    pub open_addr: Option<SocketAddr>,
}

impl Running {
    /// `http://ADDR`, or `https://localhost:PORT` with TLS (the test certificates name `localhost`).
    pub fn url(&self) -> String {
        if self.tls { format!("https://localhost:{}", self.addr.port()) } else { format!("http://{}", self.addr) }
    }

    /// `http://ADDR` of the open listener (no TLS, no authentication), when there is one.
    pub fn open_url(&self) -> Option<String> {
        self.open_addr.map(|addr| format!("http://{addr}"))
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("dev store task panicked")?
    }
}

/// Binds and starts serving in the background; returns once the port is known.
pub async fn start(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let state = Arc::new(AppState::new(
        settings.memory_limit.bytes(),
        settings.faults.clone(),
        settings.max_content_length.as_usize(),
        settings.seed,
    ));
    let security = Security {
        acceptor: if settings.tls.enabled() {
            let acceptor = settings.tls.acceptor(
                "devstore_tls",
                &[b"http/1.1"],
                spanline_common::reload::ReloadMetrics::default(),
                shutdown.clone(),
            );
            Some(acceptor.map_err(anyhow::Error::msg)?)
        } else {
            None
        },
        guard: if settings.auth.enabled() { Some(settings.auth.start().map_err(anyhow::Error::msg)?) } else { None },
    };
    let listener =
        TcpListener::bind(settings.listen).await.with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr, memory_limit = %settings.memory_limit, refresh_interval = ?settings.refresh_interval, faults = ?settings.faults,
        tls = settings.tls.enabled(), client_certificates = !settings.tls.client_ca_file.is_empty(),
        basic_auth = settings.auth.basic_user.is_some(), api_key = settings.auth.api_key_file.is_some(),
        "spanline-devstore listening (OpenSearch REST subset)"
    );
    let open = match settings.open_listen {
        Some(open) => {
            let open = TcpListener::bind(open).await.with_context(|| format!("cannot listen on {open}"))?;
            tracing::warn!(addr = %open.local_addr()?, "also serving without TLS or authentication (--open-listen)");
            Some(open)
        }
        None => None,
    };
    let open_addr = open.as_ref().map(TcpListener::local_addr).transpose()?;
    let listener = match settings.refuse_for {
        Some(duration) => {
            drop(listener);
            *state.refuse_for.lock() = duration;
            None
        }
        None => Some(listener),
    };
    if !settings.refresh_interval.is_zero() {
        let (state, token, every) = (state.clone(), shutdown.clone(), settings.refresh_interval);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => state.store.lock().refresh_all(),
                }
            }
        });
    }
    let tls = security.acceptor.is_some();
    let open_task = open.map(|open| {
        let server =
            axum::serve(open, api::router(state.clone())).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        tokio::spawn(async move { server.await })
    });
    let main = serve_loop(addr, listener, state.clone(), security, shutdown.clone());
    let task = tokio::spawn(async move {
        let served = main.await;
        if let Some(open) = open_task {
            open.await.context("open listener task")??;
        }
        served
    });
    Ok(Running { addr, state, shutdown, task, tls, open_addr })
}

/// TLS and credentials on the main listener.
#[derive(Clone)]
struct Security {
    acceptor: Option<spanline_common::tls::TlsAcceptor>,
    guard: Option<security::Guard>,
}

impl Security {
    /// Serves `router` (with the credentials check) on `listener` (with TLS) until `stop`.
    fn serve(
        &self,
        listener: TcpListener,
        router: axum::Router,
        stop: CancellationToken,
    ) -> JoinHandle<std::io::Result<()>> {
        let router = match &self.guard {
            Some(guard) => router.layer(axum::middleware::from_fn_with_state(guard.clone(), security::require)),
            None => router,
        };
        match &self.acceptor {
            Some(acceptor) => {
                let listener = security::TlsListener { tcp: listener, acceptor: acceptor.clone() };
                let server = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
                tokio::spawn(async move { server.await })
            }
            None => {
                let server = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
                tokio::spawn(async move { server.await })
            }
        }
    }
}

/// Serves until `shutdown`; when asked to refuse connections, drops the listening socket (so clients
/// get "connection refused") and every open connection, waits, then listens again on the same address.
async fn serve_loop(
    addr: SocketAddr,
    mut listener: Option<TcpListener>,
    state: Arc<AppState>,
    security: Security,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let current = match listener.take() {
            Some(l) => l,
            None => {
                let pause = *state.refuse_for.lock();
                tracing::warn!(?pause, "refusing connections");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(pause) => {}
                }
                let l = bind_again(addr, &shutdown).await?;
                tracing::info!(%addr, "accepting connections again");
                l
            }
        };
        let stop = CancellationToken::new();
        let server = security.serve(current, api::router(state.clone()), stop.clone());
        tokio::select! {
            () = shutdown.cancelled() => {
                stop.cancel();
                server.await.context("server task")??;
                return Ok(());
            }
            () = state.refuse.notified() => {
                // Graceful shutdown lets the admin request that asked for this get its answer and
                // closes idle keep-alive connections; whatever is still busy after a second is cut.
                stop.cancel();
                let abort = server.abort_handle();
                if tokio::time::timeout(Duration::from_secs(1), server).await.is_err() {
                    abort.abort();
                }
            }
        }
    }
}

async fn bind_again(addr: SocketAddr, shutdown: &CancellationToken) -> anyhow::Result<TcpListener> {
    let mut attempts = 0u32;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(error) if attempts < 100 => {
                attempts += 1;
                tracing::debug!(%error, "rebinding");
                tokio::select! {
                    () = shutdown.cancelled() => anyhow::bail!("shut down while rebinding"),
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            Err(error) => return Err(error).with_context(|| format!("cannot listen on {addr} again")),
        }
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(settings, shutdown).await?;
    running.task.await.context("dev store task panicked")?
}
