//! Builds the collector: metrics → producer → exporter → receivers and the admin server, all under
//! one cancellation token. On shutdown the receivers stop accepting, in-flight exports finish, and
//! the producer is flushed, all within `limits.shutdown_grace`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::TraceServiceServer,
};
use prometheus_client::registry::Registry;
use spanline_common::admin::{self, Readiness};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;

use crate::{
    config::Config,
    encode::encode,
    error::Error,
    metrics::{Metrics, SpanLabels},
    process::Processors,
    produce::Producer,
    receive::{GrpcReceiver, http_router, malformed_is_invalid_argument, overloaded_is_unavailable},
};

/// How often readiness re-checks Kafka metadata.
const READINESS_INTERVAL: Duration = Duration::from_secs(5);

/// Shared by both receivers: encodes a request and publishes it.
#[derive(Debug, Clone)]
pub struct Exporter {
    inner: Arc<ExporterInner>,
}

#[derive(Debug)]
struct ExporterInner {
    producer: Producer,
    processors: Processors,
    metrics: Metrics,
    max_message_bytes: usize,
    max_request_bytes: usize,
    request_timeout: Duration,
}

impl Exporter {
    pub fn new(config: &Config, producer: Producer, metrics: Metrics) -> Result<Self, Error> {
        let processors = Processors::new(&config.processors).map_err(Error::Setup)?;
        Ok(Self {
            inner: Arc::new(ExporterInner {
                producer,
                processors,
                metrics,
                max_message_bytes: config.kafka.max_message_bytes.as_usize(),
                max_request_bytes: config.limits.max_request_bytes.as_usize(),
                request_timeout: config.limits.request_timeout,
            }),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn max_request_bytes(&self) -> usize {
        self.inner.max_request_bytes
    }

    /// Validates, groups per trace and publishes; answers after Kafka acknowledged every record.
    pub async fn export(&self, mut request: ExportTraceServiceRequest) -> Result<ExportTraceServiceResponse, Error> {
        let inner = &self.inner;
        let processed = inner.processors.apply(&mut request);
        if processed.sampled_out > 0 {
            inner
                .metrics
                .spans
                .get_or_create(&SpanLabels { outcome: "sampled_out", reason: "none" })
                .inc_by(processed.sampled_out as u64);
        }
        if processed.redacted > 0 {
            inner.metrics.redacted_attributes.inc_by(processed.redacted as u64);
        }
        let encoded = encode(request, inner.max_message_bytes);
        for (reason, n) in &encoded.rejected.0 {
            inner
                .metrics
                .spans
                .get_or_create(&SpanLabels { outcome: "rejected", reason: reason.as_str() })
                .inc_by(*n as u64);
        }
        tokio::time::timeout(inner.request_timeout, inner.producer.publish(&encoded.records))
            .await
            .map_err(|_| Error::Timeout(inner.request_timeout))??;
        inner
            .metrics
            .spans
            .get_or_create(&SpanLabels { outcome: "accepted", reason: "none" })
            .inc_by(encoded.accepted_spans as u64);
        let rejected = encoded.rejected.total();
        Ok(ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
                error_message: encoded.rejected.to_string(),
            }),
        })
    }
}

/// A running collector.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<Result<(), Error>>,
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|e| Error::Setup(format!("cannot listen for {what} on {addr}: {e}")))
}

/// Binds every listener and starts serving in the background.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let producer = Producer::new(&config, metrics.clone())?;
    let exporter = Exporter::new(&config, producer.clone(), metrics)?;
    let ready = Readiness::default();

    let grpc = bind(config.receivers.grpc_listen, "otlp grpc").await?;
    let http = bind(config.receivers.http_listen, "otlp http").await?;
    let admin_listener = bind(config.admin.listen, "admin").await?;
    let (grpc_addr, http_addr, admin_addr) = (local(&grpc)?, local(&http)?, local(&admin_listener)?);
    tracing::info!(
        otlp_grpc = %grpc_addr, otlp_http = %http_addr, admin = %admin_addr,
        brokers = %config.kafka.brokers, topic = %config.kafka.topic,
        max_message_bytes = %config.kafka.max_message_bytes, partitioner = %config.kafka.partitioner,
        "spanline-collector listening"
    );

    // Receivers stop on their own token, so shutdown can stop intake before flushing the producer.
    let intake = shutdown.child_token();
    let mut servers = JoinSet::new();
    let limit = config.limits.max_request_bytes.as_usize();
    let service = TraceServiceServer::new(GrpcReceiver::new(exporter.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    // Shared by both protocols: the transport-level bound on requests being read and served.
    let slots = Arc::new(tokio::sync::Semaphore::new(config.limits.max_concurrent_requests));
    let grpc_slots = slots.clone();
    let shed_metrics = exporter.metrics().clone();
    let token = intake.clone();
    servers.spawn(async move {
        tonic::transport::Server::builder()
            // Beyond limits.max_concurrent_requests an export is refused with UNAVAILABLE before
            // its body is read, so request bodies in memory stay bounded whatever the clients do.
            .layer(
                tower::ServiceBuilder::new()
                    .map_response(malformed_is_invalid_argument)
                    .map_result(move |result| overloaded_is_unavailable(&shed_metrics, result))
                    .load_shed()
                    .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(grpc_slots)),
            )
            .add_service(service)
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(grpc), token.cancelled_owned())
            .await
            .map_err(|e| Error::Setup(format!("otlp grpc server failed: {e}")))
    });
    let router = http_router(exporter.clone(), limit, slots);
    let token = intake.clone();
    servers.spawn(async move {
        axum::serve(http, router)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .map_err(|e| Error::Setup(format!("otlp http server failed: {e}")))
    });
    let admin_router = admin::router(Arc::new(registry), ready.clone());
    let admin_token = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_router, admin_token.clone()));

    let readiness_token = shutdown.clone();
    let readiness_producer = producer.clone();
    let readiness_ready = ready.clone();
    let readiness = tokio::spawn(async move {
        let mut was = None;
        loop {
            let state = readiness_producer.check_metadata(Duration::from_secs(3)).await;
            readiness_ready.set(state.is_ok());
            if was.as_ref() != Some(&state) {
                match &state {
                    Ok(()) => tracing::info!("kafka reachable, ready"),
                    Err(reason) => tracing::warn!(%reason, "kafka not reachable, not ready"),
                }
                was = Some(state);
            }
            tokio::select! {
                () = readiness_token.cancelled() => break,
                () = tokio::time::sleep(READINESS_INTERVAL) => {}
            }
        }
    });

    let grace = config.limits.shutdown_grace;
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        ready.set(false);
        tracing::info!(?grace, "stopping intake, finishing in-flight exports");
        let deadline = tokio::time::Instant::now() + grace;
        let drained = tokio::time::timeout_at(deadline, async {
            while let Some(joined) = servers.join_next().await {
                match joined {
                    Ok(Err(error)) => tracing::error!(%error, "receiver stopped with an error"),
                    Err(error) => tracing::error!(%error, "receiver task failed"),
                    Ok(Ok(())) => {}
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("in-flight exports did not finish within the grace period, aborting them");
            servers.abort_all();
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_millis(100));
        let flushed = tokio::task::spawn_blocking(move || producer.flush(remaining)).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::warn!("producer queue not empty at shutdown");
        }
        readiness.abort();
        admin_token.cancel();
        let _ = admin_task.await;
        tracing::info!("collector stopped");
        Ok(())
    });
    Ok(Running { grpc_addr, http_addr, admin_addr, task })
}

fn local(listener: &TcpListener) -> Result<SocketAddr, Error> {
    listener.local_addr().map_err(|e| Error::Setup(format!("cannot read listen address: {e}")))
}

/// Runs the collector until `shutdown` is cancelled and everything is drained.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, shutdown).await?;
    running.task.await??;
    Ok(())
}
