//! Builds the collector: metrics → producer → exporter → receivers and the admin server, all under
//! one cancellation token. On shutdown the receivers stop accepting, in-flight exports finish, and
//! the producer is flushed, all within `limits.shutdown_grace`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prometheus_client::registry::Registry;
use spanline_common::{
    admin::{self, Readiness},
    tls::TlsAcceptor,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::{
    agent,
    auth::Gate,
    budget::{Budget, Charge},
    config::Config,
    decode,
    encode::{self, Encoded, RejectReason},
    error::Error,
    limit::AttributeLimits,
    metrics::{FallbackLabels, HandshakeLabels, LimitLabels, Metrics, SpanLabels},
    process::Processors,
    produce::Producer,
    receive::{
        GrpcService, charge_grpc_body, http_router, jaeger_router, oversized_is_resource_exhausted, zipkin_router,
    },
    sampling::{self, Sampling},
    span_metrics::{self, SpanMetrics},
    split::{self, Fallback},
};

/// How often readiness re-checks Kafka metadata.
const READINESS_INTERVAL: Duration = Duration::from_secs(5);

/// HTTP/2 keep-alive on gRPC connections: a ping after this much silence...
const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// ...and the connection is closed when the ping is not answered within this.
const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared by both receivers: admits, limits, encodes and publishes a request.
#[derive(Debug, Clone)]
pub struct Exporter {
    inner: Arc<ExporterInner>,
}

#[derive(Debug)]
struct ExporterInner {
    /// Who may export (`receivers.auth`), checked before a body is read.
    gate: Gate,
    producer: Producer,
    processors: Processors,
    attribute_limits: AttributeLimits,
    metrics: Metrics,
    budget: Budget,
    /// `limits.max_concurrent_requests` slots, taken once a request's body has arrived.
    slots: Arc<Semaphore>,
    max_message_bytes: usize,
    max_request_bytes: usize,
    max_spans: usize,
    /// `limits.max_attribute_value_bytes` and `max_attributes_per_span`: the Zipkin and Jaeger
    /// translations refuse a span only past these (the OTLP limits then apply as to any request).
    max_value_bytes: usize,
    max_attributes: usize,
    read_timeout: Duration,
    request_timeout: Duration,
    /// RED metrics of the spans (`[span_metrics]`), when counted.
    span_metrics: Option<SpanMetrics>,
}

impl Exporter {
    pub fn new(
        config: &Config,
        producer: Producer,
        metrics: Metrics,
        gate: Gate,
        span_metrics: Option<SpanMetrics>,
    ) -> Result<Self, Error> {
        let processors = Processors::new(&config.processors).map_err(Error::Setup)?;
        let limits = &config.limits;
        Ok(Self {
            inner: Arc::new(ExporterInner {
                gate,
                producer,
                processors,
                attribute_limits: AttributeLimits::new(limits),
                budget: Budget::new(limits.max_inflight_bytes.as_usize(), metrics.inflight_bytes.clone()),
                metrics,
                slots: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
                max_message_bytes: config.kafka.max_message_bytes.as_usize(),
                max_request_bytes: limits.max_request_bytes.as_usize(),
                max_spans: limits.max_spans_per_request,
                max_value_bytes: limits.max_attribute_value_bytes.as_usize(),
                max_attributes: limits.max_attributes_per_span,
                read_timeout: limits.read_timeout,
                request_timeout: limits.request_timeout,
                span_metrics,
            }),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn budget(&self) -> &Budget {
        &self.inner.budget
    }

    pub fn max_request_bytes(&self) -> usize {
        self.inner.max_request_bytes
    }

    pub fn max_spans(&self) -> usize {
        self.inner.max_spans
    }

    /// What a Zipkin or Jaeger translation may take: (spans per request, bytes of one value,
    /// tags of one span), from `[limits]`.
    pub fn translate_limits(&self) -> (usize, usize, usize) {
        (self.inner.max_spans, self.inner.max_value_bytes, self.inner.max_attributes)
    }

    pub fn read_timeout(&self) -> Duration {
        self.inner.read_timeout
    }

    /// Checks a request's credentials (`receivers.auth`).
    pub fn authenticate(&self, headers: &axum::http::HeaderMap) -> Result<(), Error> {
        self.inner.gate.check(headers)
    }

    /// Takes one of the `limits.max_concurrent_requests` slots, or refuses the request (retryable).
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Error> {
        self.inner
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded("limits.max_concurrent_requests exports already in progress".into()))
    }

    /// Splits (or limits, samples, redacts, validates and groups) per trace, then publishes; answers
    /// after Kafka acknowledged every record. `charge` holds the request's share of the memory
    /// budget (a protobuf body, or a decoded request); the records are charged before they are
    /// built.
    pub async fn export(&self, request: Request, mut charge: Charge) -> Result<ExportTraceServiceResponse, Error> {
        let body = match request {
            Request::Decoded(request) => return self.export_decoded(request, charge).await,
            Request::Protobuf(body) => body,
        };
        let body_bytes = charge.bytes();
        let encoded = match self.split(&body, &mut charge) {
            Ok(encoded) => encoded,
            Err(SplitError::Refused(error)) => return Err(error),
            Err(SplitError::Fallback(reason)) => {
                self.fell_back(reason);
                let request = decode::protobuf(&body, self.inner.max_spans, &mut charge)?;
                drop(body);
                // Only the decoded request stays charged.
                charge.shrink_to(charge.bytes() - body_bytes);
                return self.export_decoded(request, charge).await;
            }
        };
        drop(body);
        // Only the records stay charged.
        charge.shrink_to(charge.bytes() - body_bytes);
        self.publish(encoded.encoded, encoded.sampled_out, 0, encoded.counted, charge).await
    }

    /// Counts a request that takes the decode path (`spanline_collector_decode_fallbacks_total`).
    pub fn fell_back(&self, reason: Fallback) {
        self.inner.metrics.decode_fallbacks.get_or_create(&FallbackLabels { reason: reason.as_str() }).inc();
    }

    /// The byte path ([`split`]): the records of `body`, their bound charged before they are built
    /// (beside the body, whose charge is `charge`'s on entry), or why the decode path must take it.
    fn split(&self, body: &[u8], charge: &mut Charge) -> Result<Split, SplitError> {
        let inner = &self.inner;
        if inner.processors.redacts() {
            return Err(SplitError::Fallback(Fallback::Redaction));
        }
        let counts = split::Counts::of(body).map_err(SplitError::Fallback)?;
        if counts.spans > inner.max_spans {
            // The decode path refuses it, with its own error for a malformed body.
            return Err(SplitError::Fallback(Fallback::Encoding));
        }
        let tables = counts.table_bytes();
        charge.fits_with(tables, "splitting the request")?;
        charge.grow(tables, "splitting the request")?;
        let span_metrics = inner.span_metrics.is_some();
        let mut plan = match split::plan(
            body,
            &counts,
            &inner.attribute_limits,
            &inner.processors,
            inner.max_message_bytes,
            span_metrics,
        ) {
            Ok(plan) => plan,
            Err(reason) => {
                charge.shrink_to(charge.bytes() - tables);
                return Err(SplitError::Fallback(reason));
            }
        };
        // The resource and scope are copied into every trace's record: what that costs is known
        // from the plan and charged before a byte is copied.
        charge.grow(plan.bytes(), "encoding one Kafka record per trace")?;
        let sampled_out = plan.sampled_out();
        let counted = plan.take_counted();
        let encoded = plan.build(body);
        charge.shrink_to(charge.bytes() - tables);
        Ok(Split { encoded, sampled_out, counted })
    }

    /// The decode path: limits, samples, redacts, validates and groups a decoded request, whose
    /// decoded size `charge` holds.
    async fn export_decoded(
        &self,
        mut request: ExportTraceServiceRequest,
        mut charge: Charge,
    ) -> Result<ExportTraceServiceResponse, Error> {
        let inner = &self.inner;
        let limited = inner.attribute_limits.apply(&mut request);
        for (action, n) in [("dropped", limited.dropped), ("truncated", limited.truncated)] {
            if n > 0 {
                inner.metrics.limited_attributes.get_or_create(&LimitLabels { action }).inc_by(n as u64);
            }
        }
        // Before sampling: the rates are the clients', whatever fraction of traces is kept.
        let counted = inner.span_metrics.as_ref().map(|_| tally(&request)).unwrap_or_default();
        let processed = inner.processors.apply(&mut request);
        if processed.redacted > 0 {
            inner.metrics.redacted_attributes.inc_by(processed.redacted as u64);
        }
        let plan = encode::plan(&request, inner.max_message_bytes);
        let decoded = charge.bytes();
        // The resource and scope are copied into every trace's record: what that costs is known
        // from the plan and charged before a byte is copied.
        charge.grow(plan.bytes(), "encoding one Kafka record per trace")?;
        let encoded = plan.build(&request);
        drop(request);
        charge.shrink_to(charge.bytes() - decoded);
        self.publish(encoded, processed.sampled_out, limited.rejected_spans, counted, charge).await
    }

    /// Counts the spans' outcomes, produces the records and answers.
    async fn publish(
        &self,
        mut encoded: Encoded,
        sampled_out: usize,
        over_limits: usize,
        counted: span_metrics::Counted,
        charge: Charge,
    ) -> Result<ExportTraceServiceResponse, Error> {
        let inner = &self.inner;
        if sampled_out > 0 {
            inner
                .metrics
                .spans
                .get_or_create(&SpanLabels { outcome: "sampled_out", reason: "none" })
                .inc_by(sampled_out as u64);
        }
        encoded.rejected.add_many(RejectReason::AttributeLimit, over_limits);
        for (reason, n) in &encoded.rejected.0 {
            inner
                .metrics
                .spans
                .get_or_create(&SpanLabels { outcome: "rejected", reason: reason.as_str() })
                .inc_by(*n as u64);
        }
        let accepted = encoded.accepted_spans;
        let rejected = encoded.rejected;
        inner.producer.publish(encoded.records, charge, inner.request_timeout).await?;
        // Only now: a request that failed is sent again by its client, and counted then.
        if let Some(span_metrics) = &inner.span_metrics {
            span_metrics.record(counted);
        }
        inner.metrics.spans.get_or_create(&SpanLabels { outcome: "accepted", reason: "none" }).inc_by(accepted as u64);
        let total = rejected.total();
        Ok(ExportTraceServiceResponse {
            partial_success: (total > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: i64::try_from(total).unwrap_or(i64::MAX),
                error_message: rejected.to_string(),
            }),
        })
    }
}

/// A request as a receiver hands it to [`Exporter::export`].
#[derive(Debug)]
pub enum Request {
    /// A protobuf body (decompressed), charged. Nothing else of the request is held by then: tonic
    /// drops a gRPC request's compressed body, and its charge, before the service runs.
    Protobuf(Bytes),
    /// A request the receiver decoded (OTLP/JSON), its decoded size charged.
    Decoded(ExportTraceServiceRequest),
}

/// What the byte path made of a request.
struct Split {
    encoded: Encoded,
    sampled_out: usize,
    counted: span_metrics::Counted,
}

/// The RED metrics of a decoded request's valid spans ([`span_metrics`]), as the byte path
/// tallies them.
fn tally(request: &ExportTraceServiceRequest) -> span_metrics::Counted {
    let mut tally = span_metrics::Tally::default();
    for resource_spans in &request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) if !s.is_empty() => {
                    Some(s.as_bytes())
                }
                _ => None,
            })
            .unwrap_or(b"unknown_service");
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            if encode::check(
                &span.trace_id,
                &span.span_id,
                &span.parent_span_id,
                span.start_time_unix_nano,
                span.end_time_unix_nano,
            )
            .is_none()
            {
                let status = span.status.as_ref().map_or(0, |s| s.code);
                let key = span_metrics::Key { service, name: span.name.as_bytes(), kind: span.kind, status };
                tally.add(key, span.start_time_unix_nano, span.end_time_unix_nano);
            }
        }
    }
    tally.into_owned()
}

/// Why the byte path made nothing of a request.
enum SplitError {
    /// The decode path takes it.
    Fallback(Fallback),
    /// Refused (the memory budget).
    Refused(Error),
}

impl From<Error> for SplitError {
    fn from(error: Error) -> Self {
        SplitError::Refused(error)
    }
}

/// A running collector.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The Zipkin listener's address, when `receivers.zipkin_listen` is set.
    pub zipkin_addr: Option<SocketAddr>,
    /// The Jaeger listeners' addresses, when set: HTTP, and the agent's UDP ports.
    pub jaeger_http_addr: Option<SocketAddr>,
    pub jaeger_compact_addr: Option<SocketAddr>,
    pub jaeger_binary_addr: Option<SocketAddr>,
    /// The Jaeger remote sampling listeners' addresses, when set: HTTP (`/sampling`) and gRPC.
    pub sampling_http_addr: Option<SocketAddr>,
    pub sampling_grpc_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<Result<(), Error>>,
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|e| Error::Setup(format!("cannot listen for {what} on {addr}: {e}")))
}

async fn bind_udp(addr: SocketAddr, what: &'static str) -> Result<tokio::net::UdpSocket, Error> {
    tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|e| Error::Setup(format!("cannot listen for {what} on {addr}: {e}")))
}

/// Binds `addr` with `bind` when it is set.
async fn optional<T, F: Future<Output = Result<T, Error>>>(
    addr: Option<SocketAddr>,
    bind: impl FnOnce(SocketAddr, &'static str) -> F,
    what: &'static str,
) -> Result<Option<T>, Error> {
    match addr {
        Some(addr) => bind(addr, what).await.map(Some),
        None => Ok(None),
    }
}

/// Binds every listener and starts serving in the background.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let producer = Producer::new(&config, metrics.clone())?;
    let watchers = shutdown.child_token();
    let gate = Gate::new(&config.receivers.auth, metrics.reloads.clone(), watchers.clone()).map_err(Error::Setup)?;
    let tls = &config.receivers.tls;
    let (grpc_tls, http_tls) = if tls.enabled() {
        let acceptor = |what, alpn: &[&[u8]]| {
            tls.acceptor(what, alpn, metrics.reloads.clone(), watchers.clone()).map_err(Error::Setup).map(Some)
        };
        // gRPC is HTTP/2 only; the HTTP receiver offers both, HTTP/2 first.
        (acceptor("receiver_tls_grpc", &[b"h2"])?, acceptor("receiver_tls_http", &[b"h2", b"http/1.1"])?)
    } else {
        (None, None)
    };
    let span_metrics =
        config.span_metrics.enabled.then(|| SpanMetrics::register(&mut registry, config.span_metrics.max_series));
    let exporter = Exporter::new(&config, producer.clone(), metrics.clone(), gate.clone(), span_metrics)?;
    let ready = Readiness::default();

    let grpc = bind(config.receivers.grpc_listen, "otlp grpc").await?;
    let http = bind(config.receivers.http_listen, "otlp http").await?;
    let receivers = &config.receivers;
    let zipkin = optional(receivers.zipkin_listen, bind, "zipkin").await?;
    let jaeger_http = optional(receivers.jaeger_http_listen, bind, "jaeger http").await?;
    let jaeger_compact = optional(receivers.jaeger_compact_listen, bind_udp, "jaeger agent compact (udp)").await?;
    let jaeger_binary = optional(receivers.jaeger_binary_listen, bind_udp, "jaeger agent binary (udp)").await?;
    let sampling_http = optional(receivers.sampling_http_listen, bind, "jaeger sampling http").await?;
    let sampling_grpc = optional(receivers.sampling_grpc_listen, bind, "jaeger sampling grpc").await?;
    let admin_listener = bind(config.admin.listen, "admin").await?;
    let (grpc_addr, http_addr, admin_addr) = (local(&grpc)?, local(&http)?, local(&admin_listener)?);
    let zipkin_addr = zipkin.as_ref().map(local).transpose()?;
    let jaeger_http_addr = jaeger_http.as_ref().map(local).transpose()?;
    let sampling_http_addr = sampling_http.as_ref().map(local).transpose()?;
    let sampling_grpc_addr = sampling_grpc.as_ref().map(local).transpose()?;
    // Remote sampling is on when configured: a strategies file, or a sampling listener. Only then
    // does jaeger_http_listen answer /api/sampling too (else 404, as before sampling existed).
    let configured =
        !config.sampling.strategies_file.is_empty() || sampling_http_addr.is_some() || sampling_grpc_addr.is_some();
    let served = [jaeger_http_addr, sampling_http_addr, sampling_grpc_addr].iter().any(Option::is_some);
    // The strategies are read (and watched) only when an endpoint serves them.
    let sampling = if configured && served {
        let requests = metrics.sampling_requests.clone();
        Some(Sampling::start(&config.sampling, requests, metrics.reloads.clone(), watchers.clone())?)
    } else {
        if configured {
            tracing::warn!(
                "sampling.strategies_file is set but no listener serves it: set receivers.sampling_http_listen, sampling_grpc_listen or jaeger_http_listen"
            );
        }
        None
    };
    let udp_addr = |s: &Option<tokio::net::UdpSocket>| {
        s.as_ref().map(|s| s.local_addr().map_err(|e| Error::Setup(format!("udp listener address: {e}")))).transpose()
    };
    let (jaeger_compact_addr, jaeger_binary_addr) = (udp_addr(&jaeger_compact)?, udp_addr(&jaeger_binary)?);
    let shown = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(
        otlp_grpc = %grpc_addr, otlp_http = %http_addr, admin = %admin_addr,
        zipkin = %shown(zipkin_addr), jaeger_http = %shown(jaeger_http_addr),
        jaeger_agent_compact_udp = %shown(jaeger_compact_addr), jaeger_agent_binary_udp = %shown(jaeger_binary_addr),
        sampling_http = %shown(sampling_http_addr), sampling_grpc = %shown(sampling_grpc_addr),
        sampling_strategies = %if sampling.is_none() { "off" } else if config.sampling.strategies_file.is_empty() { "default" } else { &config.sampling.strategies_file },
        tls = if tls.enabled() { if tls.client_ca_file.is_empty() { "on" } else { "mutual" } } else { "off" },
        auth = if gate.is_open() { "none" } else { "bearer" },
        brokers = %config.kafka.brokers, kafka_security = config.kafka.client().security_protocol(), topic = %config.kafka.topic,
        max_message_bytes = %config.kafka.max_message_bytes, partitioner = %config.kafka.partitioner,
        "spanline-collector listening"
    );

    for weakened in config.kafka.client().weakened_verification() {
        tracing::warn!(setting = %weakened, "kafka tls verification weakened by kafka.librdkafka");
    }
    // The sampling listeners take no credentials, so they carry no token to leak.
    let loopback_only = grpc_addr.ip().is_loopback()
        && http_addr.ip().is_loopback()
        && [zipkin_addr, jaeger_http_addr].iter().flatten().all(|a| a.ip().is_loopback());
    if !gate.is_open() && (jaeger_compact_addr.is_some() || jaeger_binary_addr.is_some()) {
        tracing::warn!(
            "receivers.auth is on, but the Jaeger agent's UDP ports take no credentials: anyone who reaches them can send spans; keep them on loopback or a trusted network"
        );
    }
    if !gate.is_open() && !tls.enabled() && !loopback_only {
        tracing::warn!(
            "bearer tokens travel in plaintext: set receivers.tls, or keep the receivers behind a TLS proxy"
        );
    }

    // Receivers stop on their own token, so shutdown can stop intake before flushing the producer.
    let intake = shutdown.child_token();
    let mut servers = JoinSet::new();
    let limits = &config.limits;
    let body_exporter = exporter.clone();
    let grpc_server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        // Every body is charged to the memory budget as it arrives and must arrive within
        // limits.read_timeout; the export slot is taken only once it has been decoded.
        .layer(
            tower::ServiceBuilder::new()
                .map_response(oversized_is_resource_exhausted)
                .map_request(move |request| charge_grpc_body(&body_exporter, request)),
        )
        .add_service(GrpcService::new(exporter.clone()));
    let connection_slots = Arc::new(Semaphore::new(limits.max_connections));
    let grpc_connections = accept(
        Listener { listener: grpc, tls: grpc_tls.clone(), protocol: "grpc" },
        connection_slots.clone(),
        limits.read_timeout,
        metrics.clone(),
        intake.clone(),
    );
    let http_connections = accept(
        Listener { listener: http, tls: http_tls.clone(), protocol: "http" },
        connection_slots.clone(),
        limits.read_timeout,
        metrics.clone(),
        intake.clone(),
    );
    // Jaeger's collector port also serves the sampling strategies, as Jaeger's collector does.
    let jaeger_http_router = match &sampling {
        Some(sampling) => {
            jaeger_router(exporter.clone()).merge(sampling::router("/api/sampling", "jaeger_http", sampling.clone()))
        }
        None => jaeger_router(exporter.clone()),
    };
    let sampling_http_router = sampling.clone().map(|s| sampling::router("/sampling", "sampling_http", s));
    // gRPC is HTTP/2, which these servers speak (h2c, or h2 by ALPN under TLS).
    let sampling_grpc_router = sampling.map(sampling::grpc_router);
    // The sampling listeners have their own connection slots: SDKs polling for strategies cannot
    // take limits.max_connections' slots from span intake.
    let sampling_slots = Arc::new(Semaphore::new(sampling::MAX_CONNECTIONS));
    let http_apis = [
        (zipkin, "zipkin", Some(zipkin_router(exporter.clone())), &http_tls, &connection_slots),
        (jaeger_http, "jaeger_http", Some(jaeger_http_router), &http_tls, &connection_slots),
        (sampling_http, "sampling_http", sampling_http_router, &http_tls, &sampling_slots),
        (sampling_grpc, "sampling_grpc", sampling_grpc_router, &grpc_tls, &sampling_slots),
    ];
    for (listener, protocol, router, tls, slots) in http_apis {
        let (Some(listener), Some(router)) = (listener, router) else { continue };
        let connections = accept(
            Listener { listener, tls: tls.clone(), protocol },
            slots.clone(),
            limits.read_timeout,
            metrics.clone(),
            intake.clone(),
        );
        let token = intake.clone();
        let (read_timeout, max_streams) = (limits.read_timeout, limits.max_concurrent_streams);
        servers.spawn(async move { serve_http(connections, router, read_timeout, max_streams, token).await });
    }
    for (socket, protocol) in [(jaeger_compact, agent::Protocol::Compact), (jaeger_binary, agent::Protocol::Binary)] {
        let Some(socket) = socket else { continue };
        let (exporter, token) = (exporter.clone(), intake.clone());
        servers.spawn(async move { agent::serve(socket, protocol, exporter, token).await });
    }
    drop(metrics);
    let token = intake.clone();
    servers.spawn(async move {
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::ReceiverStream::new(grpc_connections),
            Ok::<_, std::io::Error>,
        );
        grpc_server
            .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
            .await
            .map_err(|e| Error::Setup(format!("otlp grpc server failed: {e}")))
    });
    let router = http_router(exporter.clone());
    let token = intake.clone();
    let (read_timeout, max_streams) = (limits.read_timeout, limits.max_concurrent_streams);
    servers.spawn(async move { serve_http(http_connections, router, read_timeout, max_streams, token).await });
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
    Ok(Running {
        grpc_addr,
        http_addr,
        zipkin_addr,
        jaeger_http_addr,
        jaeger_compact_addr,
        jaeger_binary_addr,
        sampling_http_addr,
        sampling_grpc_addr,
        admin_addr,
        task,
    })
}

/// Serves OTLP HTTP on the connections `accept` hands over until `token` is cancelled, then lets
/// open requests finish. HTTP/1 clients must send their headers within `read_timeout`; bodies are
/// bounded in [`crate::receive`].
async fn serve_http(
    mut connections: mpsc::Receiver<Connection>,
    router: axum::Router,
    read_timeout: Duration,
    max_streams: u32,
    token: CancellationToken,
) -> Result<(), Error> {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::{conn::auto, graceful::GracefulShutdown},
        service::TowerToHyperService,
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(max_streams)
        .keep_alive_interval(GRPC_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(GRPC_KEEPALIVE_TIMEOUT);
    let graceful = GracefulShutdown::new();
    loop {
        let connection = tokio::select! {
            () = token.cancelled() => break,
            connection = connections.recv() => match connection {
                Some(connection) => connection,
                None => break,
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(connection), service).into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "otlp http connection ended with an error");
            }
        });
    }
    drop(connections);
    graceful.shutdown().await;
    Ok(())
}

/// Connections waiting to be handed to a server: few, since each waits at most `read_timeout`.
const HANDOFF: usize = 64;

/// A receiver's listening socket and, when `receivers.tls` is set, its TLS acceptor.
struct Listener {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    protocol: &'static str,
}

/// Accepts connections on `listener` while `slots` has one (`limits.max_connections` over the span
/// listeners, [`sampling::MAX_CONNECTIONS`] over the sampling ones; past it a new connection is
/// closed at once), and hands each on only once its first byte arrived and, under TLS, its
/// handshake finished, both within `first_byte`: a client that connects and says nothing, or never
/// completes a handshake, holds nothing for long. A handshake
/// that fails (a plaintext client, an untrusted or expired client certificate, none under mTLS)
/// closes the connection before any HTTP is read; it is counted, and logged at debug only, since
/// anyone who can connect can cause one.
fn accept(
    Listener { listener, tls, protocol }: Listener,
    slots: Arc<Semaphore>,
    first_byte: Duration,
    metrics: Metrics,
    token: CancellationToken,
) -> mpsc::Receiver<Connection> {
    let (tx, rx) = mpsc::channel(HANDOFF);
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                () = token.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(protocol, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(protocol, "every connection slot of this listener is taken, closing a new one");
                continue;
            };
            let (tx, tls, metrics) = (tx.clone(), tls.clone(), metrics.clone());
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + first_byte;
                let mut byte = [0u8; 1];
                if !matches!(tokio::time::timeout_at(deadline, stream.peek(&mut byte)).await, Ok(Ok(n)) if n > 0) {
                    return;
                }
                let stream = match tls {
                    None => Stream::Plain(stream),
                    Some(tls) => {
                        let outcome = match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
                            Ok(Ok(stream)) => Ok(stream),
                            Ok(Err(error)) => Err(("failed", error.to_string())),
                            Err(_) => Err(("timeout", "no handshake within limits.read_timeout".to_owned())),
                        };
                        let labels =
                            HandshakeLabels { protocol, outcome: outcome.as_ref().map_or_else(|e| e.0, |_| "ok") };
                        metrics.tls_handshakes.get_or_create(&labels).inc();
                        match outcome {
                            Ok(stream) => Stream::Tls(Box::new(stream)),
                            Err((_, reason)) => {
                                tracing::debug!(protocol, %reason, "tls handshake refused");
                                return;
                            }
                        }
                    }
                };
                let _ = tx.send(Connection { stream, _slot: slot }).await;
            });
        }
    });
    rx
}

/// A client's connection, plaintext or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection holding one of the `limits.max_connections` slots until it closes.
pub struct Connection {
    stream: Stream,
    _slot: OwnedSemaphorePermit,
}

/// Forwards an I/O call to whichever stream the connection is.
macro_rules! forward {
    ($self:ident, $s:ident => $call:expr) => {
        match &mut $self.stream {
            Stream::Plain($s) => $call,
            Stream::Tls($s) => $call,
        }
    };
}

impl tokio::io::AsyncRead for Connection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        forward!(self, s => std::pin::Pin::new(s).poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        forward!(self, s => std::pin::Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        forward!(self, s => std::pin::Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        forward!(self, s => std::pin::Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        forward!(self, s => std::pin::Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match &self.stream {
            Stream::Plain(s) => s.connect_info(),
            Stream::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
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
