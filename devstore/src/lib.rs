//! `spanline-devstore`: an in-memory server speaking the OpenSearch REST subset Spanline uses, with
//! OpenSearch's response bodies, status codes and error shapes, plus fault injection. It serves the
//! tests, the benchmarks and `make up`; `docker-compose.yml` runs real OpenSearch. See
//! docs/devstore.md for the API and the faults.

pub mod aggs;
pub mod api;
pub mod error;
pub mod faults;
pub mod mapping;
pub mod query;
pub mod search;
pub mod store;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use spanline_common::ByteSize;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use api::AppState;
pub use faults::{Faults, RejectRule};

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
        Ok(Settings {
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
}

impl Running {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
    let listener =
        TcpListener::bind(settings.listen).await.with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, memory_limit = %settings.memory_limit, refresh_interval = ?settings.refresh_interval, faults = ?settings.faults, "spanline-devstore listening (OpenSearch REST subset)");
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
    let task = tokio::spawn(serve_loop(addr, listener, state.clone(), shutdown.clone()));
    Ok(Running { addr, state, shutdown, task })
}

/// Serves until `shutdown`; when asked to refuse connections, drops the listening socket (so clients
/// get "connection refused") and every open connection, waits, then listens again on the same address.
async fn serve_loop(
    addr: SocketAddr,
    mut listener: Option<TcpListener>,
    state: Arc<AppState>,
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
        let server =
            axum::serve(current, api::router(state.clone())).with_graceful_shutdown(stop.clone().cancelled_owned());
        let server = tokio::spawn(async move { server.await });
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
