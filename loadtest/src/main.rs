//! `spanline-loadtest`: sends seeded, realistic traces to a collector over OTLP gRPC or HTTP, as fast
//! as possible or at a target rate, with a live progress line; reports throughput and export latency
//! percentiles, and with `--verify` checks the store (exact total, exact per sampled trace) and
//! reports end-to-end freshness.

use std::time::Duration;

use clap::Parser;
use spanline_loadtest::{
    model::Model,
    send::{self, Plan, Protocol},
    verify::{self, Store},
};

/// Send generated traces to a Spanline collector.
#[derive(Debug, Parser)]
#[command(name = "spanline-loadtest", version)]
struct Args {
    /// Collector endpoint: OTLP gRPC (`:4317`) or HTTP (`:4318`).
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
    /// Traces to send.
    #[arg(long, default_value_t = 10_000)]
    traces: u64,
    /// Stop after this long, e.g. `30s` (whichever of this and `--traces` comes first).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Target rate in spans per second; unset: as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Traces per export request (with the default model, about 8 spans each: 64 → ~512 spans).
    #[arg(long, default_value_t = 64)]
    traces_per_request: u64,
    /// Gzip request bodies (gRPC).
    #[arg(long)]
    gzip: bool,
    /// Seed of the trace model (trace and span ids derive from it). Default: a new one per run, so
    /// runs never share trace ids; the report prints it so a run can be repeated.
    #[arg(long)]
    seed: Option<u64>,
    /// Target encoded size of a span, bytes.
    #[arg(long, default_value_t = 500)]
    span_bytes: usize,
    /// Services in the model.
    #[arg(long, default_value_t = 8)]
    services: usize,
    /// Call-tree depth below the root.
    #[arg(long, default_value_t = 3)]
    depth: u32,
    /// Children per span, at most.
    #[arg(long, default_value_t = 3)]
    fan_out: u32,
    /// Spans per trace, at most.
    #[arg(long, default_value_t = 8)]
    max_spans: usize,
    /// Share of error spans.
    #[arg(long, default_value_t = 0.02)]
    error_rate: f64,
    /// After sending, check the store at this URL: exact total and per sampled trace, freshness.
    #[arg(long)]
    verify: Option<String>,
    /// Index prefix of the store's span indices.
    #[arg(long, default_value = "")]
    index_prefix: String,
    /// PEM CA file the collector's certificate must chain to (an `https://` endpoint).
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate, for a collector that requires mTLS (with `--client-key`).
    #[arg(long)]
    client_cert: Option<std::path::PathBuf>,
    /// PEM key of `--client-cert`.
    #[arg(long)]
    client_key: Option<std::path::PathBuf>,
    /// A file holding the bearer token sent with every request (a file, so it is never in `ps`).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

// The report is this tool's output.
#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    spanline_common::telemetry::init("warn");
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let model = Model {
        seed,
        services: args.services,
        depth: args.depth,
        fan_out: args.fan_out,
        max_spans: args.max_spans,
        span_bytes: args.span_bytes,
        error_rate: args.error_rate,
        ..Model::default()
    };
    let plan = Plan {
        endpoint: args.endpoint.clone(),
        protocol: args.protocol,
        connections: args.connections,
        traces_per_request: args.traces_per_request,
        traces: args.traces,
        duration: args.duration,
        rate: args.rate,
        gzip: args.gzip,
        model,
        security: send::Security::from_files(
            args.ca_file.as_deref(),
            args.client_cert.as_deref(),
            args.client_key.as_deref(),
            args.token_file.as_deref(),
        )?,
    };
    let store = args.verify.as_deref().map(|url| Store::new(url, &args.index_prefix));
    let baseline = match &store {
        Some(store) => store.count(None).await.unwrap_or(0),
        None => 0,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    let watcher = store.clone().map(|store| tokio::spawn(verify::watch_freshness(store, rx, Duration::from_secs(60))));
    let samples = watcher.is_some().then(|| (tx, Duration::from_millis(100)));
    let report = send::run(plan, samples, !args.json).await?;
    let l = &report.latency;
    let ms = |q: f64| l.value_at_quantile(q) as f64 / 1000.0;
    let mut out = serde_json::json!({
        "seed": seed,
        "acknowledged_spans": report.acknowledged_spans,
        "rejected_spans": report.rejected_spans,
        "failed_requests": report.failed_requests,
        "requests": report.requests,
        "elapsed_s": report.elapsed.as_secs_f64(),
        "spans_per_s": report.spans_per_second(),
        "latency_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": l.max() as f64 / 1000.0 },
    });
    let mut ok = report.failed_requests == 0;
    if let (Some(store), Some(watcher)) = (store, watcher) {
        let (freshness, samples, unseen) = watcher.await?;
        let verdict =
            verify::check(&store, baseline, report.acknowledged_spans, &samples, Duration::from_secs(120)).await?;
        ok &= verdict.ok() && unseen == 0;
        out["verify"] = serde_json::json!({
            "expected_spans": verdict.expected, "found_spans": verdict.found,
            "sampled_traces": verdict.samples, "exact": verdict.samples_exact,
            "missing": verdict.samples_missing, "duplicated": verdict.samples_duplicated, "ok": verdict.ok(),
        });
        out["freshness_ms"] = serde_json::json!({
            "samples": freshness.len(), "unseen": unseen,
            "p50": freshness.value_at_quantile(0.5), "p99": freshness.value_at_quantile(0.99), "max": freshness.max(),
        });
    }
    if args.json {
        println!("{out}");
    } else {
        println!(
            "seed {seed}: acknowledged {} spans in {:.2}s ({:.0} spans/s); rejected spans {}; failed requests {}; export latency p50 {:.1} ms p90 {:.1} ms p99 {:.1} ms max {:.1} ms",
            report.acknowledged_spans,
            report.elapsed.as_secs_f64(),
            report.spans_per_second(),
            report.rejected_spans,
            report.failed_requests,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            l.max() as f64 / 1000.0
        );
        if let Some(v) = out.get("verify") {
            println!("verify: {v}");
            println!("freshness (span end → searchable, ms): {}", out["freshness_ms"]);
        }
    }
    if !ok {
        anyhow::bail!(
            "the run failed: failed requests, or the store does not hold every acknowledged span exactly once"
        );
    }
    Ok(())
}
