//! Jaeger remote sampling (`collector/src/sampling.rs`) through the real collector, started on
//! port 0 with every sampling endpoint on: `GET /sampling` (the agent's port), `GET /api/sampling`
//! (Jaeger's collector HTTP port) and `SamplingManager/GetSamplingStrategy` (gRPC) give the file's
//! strategy in the shapes SDKs parse, 400 / INVALID_ARGUMENT without a service, and count what they
//! answered. And a real client from crates.io, the OpenTelemetry Rust SDK's Jaeger remote sampler:
//! its decisions follow the strategies file as it is rewritten (probability 0 → nothing sampled;
//! 1 → everything; per-operation strategies by span name). No Kafka is needed: sampling does not
//! touch it (the collector starts without a reachable broker and is simply not ready).

#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, path::Path, time::Duration};

use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
use serde_json::{Value, json};
use spanline_collector::sampling::wire;
use tokio_util::sync::CancellationToken;

/// How long a change may take to show (the file is read every 50 ms, the SDK polls every 50 ms):
/// an upper bound for a loop that returns as soon as the change is seen, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

async fn start(file: &Path) -> (spanline_collector::Running, CancellationToken) {
    start_with(file, |_| {}).await
}

async fn start_with(
    file: &Path,
    change: impl FnOnce(&mut spanline_collector::Config),
) -> (spanline_collector::Running, CancellationToken) {
    let mut c = spanline_collector::Config::default();
    let any = || Some("127.0.0.1:0".parse().expect("addr"));
    c.receivers.grpc_listen = "127.0.0.1:0".parse().expect("addr");
    c.receivers.http_listen = "127.0.0.1:0".parse().expect("addr");
    c.receivers.jaeger_http_listen = any();
    (c.receivers.sampling_http_listen, c.receivers.sampling_grpc_listen) = (any(), any());
    c.admin.listen = "127.0.0.1:0".parse().expect("addr");
    // Nothing listens there: the collector is not ready, and sampling does not care.
    c.kafka.brokers = "127.0.0.1:1".into();
    c.sampling.strategies_file = file.display().to_string();
    c.sampling.reload_interval = Duration::from_millis(50);
    change(&mut c);
    let token = CancellationToken::new();
    let running = spanline_collector::start(c, token.clone()).await.expect("starts");
    (running, token)
}

/// Writes `contents` to `file` as an operator should (docs/sampling.md): a new file renamed over
/// the old one, so a reload never reads half of it.
fn replace(file: &Path, contents: &str) {
    let new = file.with_extension("new");
    std::fs::write(&new, contents).unwrap();
    std::fs::rename(&new, file).unwrap();
}

/// `spanline_collector_reloads_total{what="sampling_strategies",outcome="failed"}` now (0 before
/// the first failure).
async fn failed_reloads(admin: SocketAddr) -> u64 {
    let prefix = r#"spanline_collector_reloads_total{what="sampling_strategies",outcome="failed"} "#;
    let (_, metrics) = get(admin, "/metrics").await;
    metrics.lines().find_map(|l| l.strip_prefix(prefix)).map_or(0, |n| n.trim().parse().unwrap())
}

async fn get(addr: SocketAddr, path_and_query: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path_and_query}")).await.expect("answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

async fn grpc(addr: SocketAddr, service: &str) -> Result<wire::Response, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<wire::Parameters, wire::Response>::default();
    let path = "/jaeger.api_v2.SamplingManager/GetSamplingStrategy".parse().unwrap();
    let request = tonic::Request::new(wire::Parameters { service_name: service.into() });
    client.unary(request, path, codec).await.map(tonic::Response::into_inner)
}

const STRATEGIES: &str = r#"{
  "default_strategy": {"type": "probabilistic", "param": 0.5,
    "operation_strategies": [{"operation": "/health", "type": "probabilistic", "param": 0}]},
  "service_strategies": [
    {"service": "checkout", "type": "probabilistic", "param": 1.0},
    {"service": "search", "type": "ratelimiting", "param": 20}
  ]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_serves_the_files_strategies_in_jaegers_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strategies.json");
    std::fs::write(&file, STRATEGIES).unwrap();
    let (running, token) = start(&file).await;
    let sampling_http = running.sampling_http_addr.expect("sampling http");
    let jaeger_http = running.jaeger_http_addr.expect("jaeger http");
    let sampling_grpc = running.sampling_grpc_addr.expect("sampling grpc");

    let (status, body) = get(sampling_http, "/sampling?service=checkout").await;
    assert_eq!(status, 200, "{body}");
    let checkout: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        checkout,
        json!({
            "strategyType": "PROBABILISTIC",
            "probabilisticSampling": {"samplingRate": 1.0},
            "operationSampling": {
                "defaultSamplingProbability": 1.0,
                "defaultLowerBoundTracesPerSecond": 0.0,
                "perOperationStrategies": [{"operation": "/health", "probabilisticSampling": {"samplingRate": 0.0}}],
                "defaultUpperBoundTracesPerSecond": 0.0
            }
        })
    );
    let (status, same) = get(jaeger_http, "/api/sampling?service=checkout").await;
    assert_eq!((status, same), (200, body), "the collector port answers as the agent port");
    let (_, search) = get(jaeger_http, "/api/sampling?service=search").await;
    let search: Value = serde_json::from_str(&search).unwrap();
    assert_eq!(search["strategyType"], "RATE_LIMITING");
    assert_eq!(search["rateLimitingSampling"]["maxTracesPerSecond"], 20);
    assert_eq!(search["operationSampling"]["defaultSamplingProbability"], 0.5);
    let (_, unknown) = get(sampling_http, "/sampling?service=unknown%20service").await;
    let unknown: Value = serde_json::from_str(&unknown).unwrap();
    assert_eq!(unknown["probabilisticSampling"]["samplingRate"], 0.5, "the default strategy");

    for query in ["/sampling", "/sampling?service=a&service=b", "/sampling?service="] {
        let (status, reason) = get(sampling_http, query).await;
        assert_eq!(status, 400, "{query}");
        assert!(reason.contains("'service'"), "{query}: {reason}");
    }

    let answer = grpc(sampling_grpc, "search").await.expect("grpc answers");
    assert_eq!(answer.strategy_type, wire::StrategyType::RateLimiting as i32);
    assert_eq!(answer.rate_limiting_sampling, Some(wire::RateLimiting { max_traces_per_second: 20 }));
    let operations = answer.operation_sampling.expect("inherited operations");
    assert_eq!(operations.per_operation_strategies[0].operation, "/health");
    let answer = grpc(sampling_grpc, "nobody").await.expect("grpc answers");
    assert_eq!(answer.probabilistic_sampling, Some(wire::Probabilistic { sampling_rate: 0.5 }));
    let refused = grpc(sampling_grpc, "").await.expect_err("no service");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let (_, metrics) = get(running.admin_addr, "/metrics").await;
    for (endpoint, outcome, n) in [
        ("sampling_http", "service", 1),
        ("sampling_http", "default", 1),
        ("sampling_http", "bad_request", 3),
        ("jaeger_http", "service", 2),
        ("grpc", "service", 1),
        ("grpc", "default", 1),
        ("grpc", "bad_request", 1),
    ] {
        let line =
            format!("spanline_collector_sampling_requests_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    token.cancel();
    running.task.await.unwrap().unwrap();
}

/// The decisions of `sampler` for 200 traces' root spans named `name`: how many are sampled.
fn sampled(sampler: &Sampler, name: &str) -> usize {
    (1..=200u128)
        .filter(|i| {
            // Spread over the id space, so a probability between 0 and 1 would give a mix.
            let id = TraceId::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
            let result = sampler.should_sample(None, id, name, &SpanKind::Server, &[], &[]);
            result.decision == SamplingDecision::RecordAndSample
        })
        .count()
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not seen within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opentelemetry_sdk_remote_sampler_follows_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strategies.json");
    let write = |json: Value| replace(&file, &json.to_string());
    write(json!({"service_strategies": [{"service": "shop", "type": "probabilistic", "param": 0.0}]}));
    let (running, token) = start(&file).await;
    let endpoint = format!("http://{}/sampling", running.sampling_http_addr.expect("sampling http"));

    // Until its first answer the SDK uses the default sampler given here: everything sampled.
    let client = opentelemetry_http::hyper::HyperClient::with_default_connector(Duration::from_secs(5), None);
    let sampler = Sampler::jaeger_remote(opentelemetry_sdk::runtime::Tokio, client, Sampler::AlwaysOn, "shop")
        .with_endpoint(endpoint)
        .with_update_interval(Duration::from_millis(50))
        .build()
        .expect("sampler");

    eventually("probability 0 from the file: nothing sampled", || sampled(&sampler, "GET /") == 0).await;

    write(json!({"service_strategies": [{"service": "shop", "type": "probabilistic", "param": 1.0}]}));
    eventually("probability 1 after the file changed: everything sampled", || sampled(&sampler, "GET /") == 200).await;

    // A bad file keeps the last good strategies; the SDK goes on sampling everything. The change
    // is seen once the reload failure is counted.
    let admin = running.admin_addr;
    let before = failed_reloads(admin).await;
    replace(&file, r#"{"service_strategies": [{"service": "shop", "type": "probabilistic", "param": 2}]}"#);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while failed_reloads(admin).await <= before {
        assert!(tokio::time::Instant::now() < deadline, "the bad file's reload failure is never counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, body) = get(running.sampling_http_addr.unwrap(), "/sampling?service=shop").await;
    assert!(body.contains(r#""samplingRate":1.0"#), "still the last good strategy: {body}");
    assert_eq!(sampled(&sampler, "GET /"), 200);

    // Per-operation strategies: the SDK samples by span name.
    write(json!({"service_strategies": [{"service": "shop", "type": "probabilistic", "param": 0.0,
        "operation_strategies": [{"operation": "POST /order", "type": "probabilistic", "param": 1.0}]}]}));
    eventually("per-operation strategies: POST /order always, the rest never", || {
        sampled(&sampler, "POST /order") == 200 && sampled(&sampler, "GET /") == 0
    })
    .await;
    token.cancel();
    running.task.await.unwrap().unwrap();
}

/// Without sampling configured (no strategies file, no sampling listener), Jaeger's collector port
/// takes spans only: `/api/sampling` is 404, as before the collector served sampling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jaeger_port_serves_sampling_only_when_it_is_configured() {
    let (running, token) = start_with(Path::new(""), |c| {
        c.sampling.strategies_file = String::new();
        (c.receivers.sampling_http_listen, c.receivers.sampling_grpc_listen) = (None, None);
    })
    .await;
    let jaeger_http = running.jaeger_http_addr.expect("jaeger http");
    let (status, _) = get(jaeger_http, "/api/sampling?service=checkout").await;
    assert_eq!(status, 404, "not configured: not served");
    token.cancel();
    running.task.await.unwrap().unwrap();

    // A sampling listener alone turns it on, with the fall-back strategy.
    let (running, token) = start_with(Path::new(""), |c| {
        c.sampling.strategies_file = String::new();
        c.receivers.sampling_grpc_listen = None;
    })
    .await;
    let (status, body) = get(running.jaeger_http_addr.unwrap(), "/api/sampling?service=checkout").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""samplingRate":0.001"#), "{body}");
    token.cancel();
    running.task.await.unwrap().unwrap();
}

/// The sampling listeners have their own connection slots: with every one of
/// `limits.max_connections` taken by span intake, SDKs are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_connections_do_not_share_intakes_slots() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strategies.json");
    std::fs::write(&file, STRATEGIES).unwrap();
    let (running, token) = start_with(&file, |c| {
        c.limits.max_connections = 1;
        c.limits.read_timeout = Duration::from_secs(60);
    })
    .await;
    // One intake connection, answered once (so it was accepted) and kept alive: it holds the only
    // slot, and another intake connection is closed unanswered.
    let mut held = tokio::net::TcpStream::connect(running.http_addr).await.unwrap();
    held.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = [0u8; 64];
    assert!(held.read(&mut answer).await.unwrap() > 0, "the intake connection is answered");
    assert!(reqwest::get(format!("http://{}/", running.http_addr)).await.is_err(), "intake is full");
    let (status, body) = get(running.sampling_http_addr.unwrap(), "/sampling?service=checkout").await;
    assert_eq!(status, 200, "{body}");
    let answer = grpc(running.sampling_grpc_addr.unwrap(), "checkout").await.expect("grpc answers");
    assert_eq!(answer.probabilistic_sampling, Some(wire::Probabilistic { sampling_rate: 1.0 }));
    drop(held);
    token.cancel();
    running.task.await.unwrap().unwrap();
}
