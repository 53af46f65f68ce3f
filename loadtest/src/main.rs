//! `spanline-loadtest`: sends generated traces to a collector over OTLP gRPC and reports
//! throughput and export latency, with a live progress line on stderr.
//!
//! This is the first cut: a seeded generator and a gRPC sender. Rate control per second, HTTP,
//! verification in the store and the benchmark harness come with the loadtest issue.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use clap::Parser;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, span::SpanKind},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::sync::Mutex;
use tonic::codec::CompressionEncoding;

/// Send generated traces to a Spanline collector.
#[derive(Debug, Parser)]
#[command(name = "spanline-loadtest", version)]
struct Args {
    /// Collector OTLP gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Traces to send.
    #[arg(long, default_value_t = 1_000)]
    traces: u64,
    /// Spans per trace.
    #[arg(long, default_value_t = 8)]
    spans_per_trace: u64,
    /// Traces per export request.
    #[arg(long, default_value_t = 64)]
    traces_per_request: u64,
    /// Concurrent export streams.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seed of the trace generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Extra attribute bytes per span, to set the span size.
    #[arg(long, default_value_t = 200)]
    pad: usize,
}

const SERVICES: [&str; 4] = ["frontend", "cart", "checkout", "payments"];
const OPERATIONS: [&str; 5] = ["GET /", "GET /cart", "POST /checkout", "charge", "SELECT orders"];

fn string_attr(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
        ..Default::default()
    }
}

/// One request of `traces` traces, deterministic for (`seed`, `first`).
fn request(args: &Args, first: u64, traces: u64) -> ExportTraceServiceRequest {
    let mut rng = StdRng::seed_from_u64(args.seed ^ first.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    for t in first..first + traces {
        let mut trace_id = [0u8; 16];
        rng.fill(&mut trace_id[..]);
        trace_id[15] |= 1;
        let root: u64 = rng.random::<u64>() | 1;
        for n in 0..args.spans_per_trace {
            let start = now - 5_000_000_000 + n * 1_000_000;
            let service = if n == 0 { 0 } else { rng.random_range(0..SERVICES.len()) };
            by_service[service].push(Span {
                trace_id: trace_id.to_vec(),
                span_id: (root.wrapping_add(n)).to_be_bytes().to_vec(),
                parent_span_id: if n == 0 { Vec::new() } else { root.to_be_bytes().to_vec() },
                name: OPERATIONS[rng.random_range(0..OPERATIONS.len())].into(),
                kind: SpanKind::Server as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + rng.random_range(100_000..50_000_000),
                attributes: vec![
                    string_attr("loadtest.trace", t.to_string()),
                    string_attr("loadtest.pad", "x".repeat(args.pad)),
                ],
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .enumerate()
            .filter(|(_, spans)| !spans.is_empty())
            .map(|(i, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string_attr("service.name", SERVICES[i].into())],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "spanline-loadtest".into(), ..Default::default() }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

// The summary line is this tool's output.
#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    spanline_common::telemetry::init("warn");
    let args = Arc::new(Args::parse());
    let requests = args.traces.div_ceil(args.traces_per_request);
    let next = Arc::new(AtomicU64::new(0));
    let sent_spans = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(usize::try_from(requests).unwrap_or(0))));
    let started = Instant::now();

    let mut workers = Vec::new();
    for _ in 0..args.connections.max(1) {
        let client = TraceServiceClient::connect(args.endpoint.clone())
            .await
            .with_context(|| format!("cannot connect to {}", args.endpoint))?
            .send_compressed(CompressionEncoding::Gzip);
        let (args, next, sent_spans, failed, latencies) =
            (args.clone(), next.clone(), sent_spans.clone(), failed.clone(), latencies.clone());
        workers.push(tokio::spawn(async move {
            let mut client = client;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let first = i * args.traces_per_request;
                let traces = args.traces_per_request.min(args.traces - first);
                let req = request(&args, first, traces);
                let t = Instant::now();
                match client.export(req).await {
                    Ok(response) => {
                        let rejected = response.into_inner().partial_success.map_or(0, |p| p.rejected_spans);
                        sent_spans.fetch_add(
                            traces * args.spans_per_trace - u64::try_from(rejected).unwrap_or(0),
                            Ordering::Relaxed,
                        );
                        latencies.lock().await.push(t.elapsed());
                    }
                    Err(status) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(code = ?status.code(), message = status.message(), "export failed");
                    }
                }
            }
        }));
    }
    let total_spans = args.traces * args.spans_per_trace;
    let progress = {
        let sent_spans = sent_spans.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let n = sent_spans.load(Ordering::Relaxed);
                let rate = n as f64 / started.elapsed().as_secs_f64();
                eprint!("\r  sent {n}/{total_spans} spans, {rate:.0} spans/s   ");
            }
        })
    };
    for w in workers {
        w.await?;
    }
    progress.abort();
    let elapsed = started.elapsed();
    let mut lat = latencies.lock().await.clone();
    lat.sort_unstable();
    let n = sent_spans.load(Ordering::Relaxed);
    eprintln!();
    println!(
        "acknowledged {n} spans in {:.2}s ({:.0} spans/s); failed requests {}; export latency p50 {:?} p99 {:?} max {:?}",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        failed.load(Ordering::Relaxed),
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or_default()
    );
    Ok(())
}
