//! Sends generated traces to a collector over OTLP gRPC or HTTP, from N connections, as fast as
//! possible or at a target rate, measuring export latency with an HdrHistogram.
//!
//! Latency is measured from each request's *intended* send time when a rate is set, so a stalled
//! collector shows up in the percentiles instead of silently slowing the sender (no coordinated
//! omission).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse, trace_service_client::TraceServiceClient,
};
use prost::Message as _;
use tokio::sync::{Mutex, mpsc};
use tonic::{codec::CompressionEncoding, service::interceptor::InterceptedService};

use crate::model::{Model, Trace};

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
}

/// What to send, and how.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `http://host:4317` for gRPC, `http://host:4318` for HTTP.
    pub endpoint: String,
    pub protocol: Protocol,
    pub connections: usize,
    pub traces_per_request: u64,
    /// Stop after this many traces.
    pub traces: u64,
    /// Stop after this long (whichever comes first).
    pub duration: Option<Duration>,
    /// Spans per second over all connections; `None`: as fast as possible.
    pub rate: Option<f64>,
    pub gzip: bool,
    pub model: Model,
    /// TLS to an `https://` endpoint, and the bearer token every request carries.
    pub security: Security,
}

/// How the load generator authenticates itself to a secured collector (docs/security.md).
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// PEM CA certificates the collector's certificate must chain to (`https://` endpoints).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key, for a collector that requires mTLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<spanline_common::secret::Secret>,
}

impl Security {
    /// Reads the files the command line names; errors name the file.
    pub fn from_files(
        ca: Option<&std::path::Path>,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
        token: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let read = |p: &std::path::Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => anyhow::bail!("--client-cert and --client-key go together"),
        };
        let token = token
            .map(|p| spanline_common::secret::read_file("--token-file", p).map_err(anyhow::Error::msg))
            .transpose()?;
        Ok(Self { ca_pem: ca.map(read).transpose()?, identity, token })
    }
}

/// A trace whose arrival in the store is watched (freshness, exact counts).
#[derive(Debug, Clone)]
pub struct Sample {
    pub trace_id: String,
    pub spans: u64,
    pub end_unix_nano: u64,
}

/// What a run did.
#[derive(Debug)]
pub struct Report {
    pub acknowledged_spans: u64,
    pub rejected_spans: u64,
    pub failed_requests: u64,
    pub requests: u64,
    pub elapsed: Duration,
    /// Export latency in microseconds.
    pub latency: Histogram<u64>,
}

impl Report {
    pub fn spans_per_second(&self) -> f64 {
        self.acknowledged_spans as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn now_unix_nano() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Adds the bearer token, if any, to every gRPC request.
type Authorize = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

enum Client {
    Grpc(TraceServiceClient<InterceptedService<tonic::transport::Channel, Authorize>>),
    Http(reqwest::Client, String),
}

impl Client {
    async fn connect(plan: &Plan) -> anyhow::Result<Self> {
        Ok(match plan.protocol {
            Protocol::Grpc => {
                let mut endpoint = tonic::transport::Endpoint::from_shared(plan.endpoint.clone())
                    .with_context(|| format!("bad endpoint {}", plan.endpoint))?;
                if plan.endpoint.starts_with("https://") {
                    let mut tls = tonic::transport::ClientTlsConfig::new();
                    if let Some(ca) = &plan.security.ca_pem {
                        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
                    }
                    if let Some((cert, key)) = &plan.security.identity {
                        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
                    }
                    endpoint = endpoint.tls_config(tls).context("tls settings")?;
                }
                let channel =
                    endpoint.connect().await.with_context(|| format!("cannot connect to {}", plan.endpoint))?;
                let token = match &plan.security.token {
                    Some(token) => Some(
                        tonic::metadata::MetadataValue::try_from(format!("Bearer {}", token.expose()))
                            .context("the token is not a valid header value")?,
                    ),
                    None => None,
                };
                let with_token = move |mut request: tonic::Request<()>| {
                    if let Some(token) = &token {
                        request.metadata_mut().insert("authorization", token.clone());
                    }
                    Ok(request)
                };
                let with_token: Authorize = Box::new(with_token);
                let mut client =
                    TraceServiceClient::with_interceptor(channel, with_token).max_decoding_message_size(64 << 20);
                if plan.gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                Client::Grpc(client)
            }
            Protocol::Http => {
                let mut builder = reqwest::Client::builder();
                if let Some(ca) = &plan.security.ca_pem {
                    builder = builder.tls_built_in_root_certs(false);
                    for cert in reqwest::Certificate::from_pem_bundle(ca).context("--ca-file")? {
                        builder = builder.add_root_certificate(cert);
                    }
                }
                if let Some((cert, key)) = &plan.security.identity {
                    let pem = [cert.as_slice(), b"\n", key.as_slice()].concat();
                    builder =
                        builder.identity(reqwest::Identity::from_pem(&pem).context("--client-cert/--client-key")?);
                }
                if let Some(token) = &plan.security.token {
                    let mut value = reqwest::header::HeaderValue::try_from(format!("Bearer {}", token.expose()))
                        .context("the token is not a valid header value")?;
                    value.set_sensitive(true);
                    let headers = [(reqwest::header::AUTHORIZATION, value)].into_iter().collect();
                    builder = builder.default_headers(headers);
                }
                let client = builder.build().context("http client")?;
                Client::Http(client, format!("{}/v1/traces", plan.endpoint.trim_end_matches('/')))
            }
        })
    }

    /// Sends one request; `Ok(rejected spans)` or an error message.
    async fn export(&mut self, request: ExportTraceServiceRequest) -> Result<u64, String> {
        let response = match self {
            Client::Grpc(client) => client
                .export(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?,
            Client::Http(client, url) => {
                let answer = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = answer.status();
                let body = answer.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)])));
                }
                ExportTraceServiceResponse::decode(body.as_ref()).map_err(|e| e.to_string())?
            }
        };
        Ok(response.partial_success.map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0)))
    }
}

/// Runs `plan`; every `sample_every` one acknowledged trace is reported on `samples`.
pub async fn run(
    plan: Plan,
    samples: Option<(mpsc::Sender<Sample>, Duration)>,
    progress: bool,
) -> anyhow::Result<Report> {
    let plan = Arc::new(plan);
    let requests = plan.traces.div_ceil(plan.traces_per_request.max(1));
    let next = Arc::new(AtomicU64::new(0));
    let scheduled_spans = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let sent_requests = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?));
    let last_sample = Arc::new(Mutex::new(Instant::now()));
    let started = Instant::now();
    let deadline = plan.duration.map(|d| started + d);

    let mut workers = Vec::new();
    for _ in 0..plan.connections.max(1) {
        let mut client = Client::connect(&plan).await?;
        let (plan, next, scheduled_spans, acknowledged, rejected, failed, sent_requests, latency, samples, last_sample) = (
            plan.clone(),
            next.clone(),
            scheduled_spans.clone(),
            acknowledged.clone(),
            rejected.clone(),
            failed.clone(),
            sent_requests.clone(),
            latency.clone(),
            samples.clone(),
            last_sample.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let first = i * plan.traces_per_request;
                let count = plan.traces_per_request.min(plan.traces - first);
                let build =
                    |at: u64| -> Vec<Trace> { (first..first + count).map(|n| plan.model.trace(n, at)).collect() };
                let mut traces = build(now_unix_nano());
                let spans: u64 = traces.iter().map(|t| t.spans.len() as u64).sum();
                let intended = match plan.rate {
                    Some(rate) => {
                        let before = scheduled_spans.fetch_add(spans, Ordering::Relaxed);
                        let at = started + Duration::from_secs_f64(before as f64 / rate);
                        tokio::time::sleep_until(at.into()).await;
                        // Spans end when they are sent, not when they were scheduled: freshness
                        // counts from the end of a span, and the wait is the sender's own.
                        traces = build(now_unix_nano());
                        at
                    }
                    None => Instant::now(),
                };
                let request = plan.model.request(&traces);
                sent_requests.fetch_add(1, Ordering::Relaxed);
                match client.export(request).await {
                    Ok(refused) => {
                        let micros = u64::try_from(intended.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let _ = latency.lock().await.record(micros.max(1));
                        acknowledged.fetch_add(spans - refused.min(spans), Ordering::Relaxed);
                        rejected.fetch_add(refused, Ordering::Relaxed);
                        if let Some((tx, every)) = &samples {
                            let mut last = last_sample.lock().await;
                            if last.elapsed() >= *every && refused == 0 {
                                *last = Instant::now();
                                if let Some(t) = traces.first() {
                                    let _ = tx.try_send(Sample {
                                        trace_id: t.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                                        spans: t.spans.len() as u64,
                                        end_unix_nano: t.end_unix_nano(),
                                    });
                                }
                            }
                        }
                    }
                    Err(error) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "export failed");
                    }
                }
            }
        }));
    }
    let ticker = progress.then(|| {
        let (acknowledged, failed, latency) = (acknowledged.clone(), failed.clone(), latency.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let n = acknowledged.load(Ordering::Relaxed);
                let rate = n as f64 / started.elapsed().as_secs_f64();
                let p99 = latency.lock().await.value_at_quantile(0.99);
                eprint!(
                    "\r  acknowledged {n} spans  {rate:>9.0} spans/s  p99 {:>7.1} ms  failed requests {}   ",
                    p99 as f64 / 1000.0,
                    failed.load(Ordering::Relaxed)
                );
            }
        })
    });
    for w in workers {
        w.await?;
    }
    if let Some(t) = ticker {
        t.abort();
        eprintln!();
    }
    let latency = latency.lock().await.clone();
    Ok(Report {
        acknowledged_spans: acknowledged.load(Ordering::Relaxed),
        rejected_spans: rejected.load(Ordering::Relaxed),
        failed_requests: failed.load(Ordering::Relaxed),
        requests: sent_requests.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latency,
    })
}
