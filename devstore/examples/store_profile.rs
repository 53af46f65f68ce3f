//! Profiles the dev store in process: `_bulk` creates of Jaeger span documents (about 900 bytes,
//! shaped like the ingester's) through the real router, then the term, count and Jaeger look-up
//! queries at that size. Prints the store's CPU per document and each query's time.
//!
//! Then the same documents again through the real HTTP server (as the benchmarks run it: a
//! multi-threaded runtime, 1 s refreshes, ~5 MB bodies with a few service documents, two
//! connections at a time), counting only the server's threads' CPU: the figure `make bench`
//! reports as the dev store's CPU per document.
//!
//! `cargo run --release -p spanline-devstore --example store_profile -- [DOCS] [BATCH] [http|once]`
//! (`http`: only the HTTP phase, for profiling it alone; `once`: the instruction count mode below)
//!
//! `once` sends DOCS documents shaped like the ingester's own (~1.5 KB: 13 span tags, a log with
//! two fields, four process tags, references; and a few service documents per body) through the
//! router in bodies of BATCH, then one refresh, inside [`measured`], and nothing else, so that
//! `valgrind --tool=callgrind --dump-instr=no --toggle-collect='*measured*'
//! target/release/examples/store_profile 10000 500 once` counts the store's work alone,
//! deterministically: total instructions over DOCS is the cost per document.

// The figures printed are this tool's whole output.
#![allow(clippy::print_stdout)]

use std::{sync::Arc, time::Instant};

use axum::{
    body::{Body, to_bytes},
    http::Request,
};
use serde_json::{Value, json};
use spanline_devstore::{AppState, Faults, api};
use tower::ServiceExt;

/// Process CPU time (user + system) in seconds, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat (utime, stime), counted from the state field (3) here.
    (ticks(11) + ticks(12)) / 100.0
}

fn keyword() -> Value {
    json!({"type": "keyword", "ignore_above": 256})
}

fn template() -> Value {
    let kv = json!({"type": "nested", "dynamic": false, "properties": {"key": keyword(), "value": keyword(), "type": keyword()}});
    json!({"index_patterns": ["jaeger-span-*"], "priority": 100, "template": {"mappings": {
    "properties": {
        "traceID": keyword(), "spanID": keyword(), "parentSpanID": keyword(), "operationName": keyword(),
        "flags": {"type": "integer"}, "startTime": {"type": "long"},
        "startTimeMillis": {"type": "date", "format": "epoch_millis"}, "duration": {"type": "long"},
        "references": {"type": "nested", "dynamic": false, "properties": {"refType": keyword(), "traceID": keyword(), "spanID": keyword()}},
        "tags": kv, "tag": {"type": "object"},
        "logs": {"type": "nested", "dynamic": false, "properties": {"timestamp": {"type": "long"}, "fields": kv}},
        "process": {"properties": {"serviceName": keyword(), "tags": kv, "tag": {"type": "object"}}}
    }}}})
}

const T0: u64 = 1_764_460_800_000_000;
const SERVICES: [&str; 8] = ["frontend", "checkout", "cart", "payment", "shipping", "email", "ads", "currency"];

/// Span `i`'s trace id, span id, parent id, service and start time (µs): ten spans per trace.
fn identity(i: u64) -> (String, String, String, &'static str, u64) {
    let trace = format!("{:032x}", (i / 10).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let span = format!("{:016x}", i.wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
    let parent = format!("{:016x}", (i - i % 10).wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
    (trace, span, parent, SERVICES[(i % 8) as usize], T0 + i * 37)
}

fn span(i: u64) -> (String, String) {
    let (trace, span, parent, service, start) = identity(i);
    let doc = json!({
        "traceID": trace, "spanID": span, "parentSpanID": parent, "flags": 1,
        "operationName": format!("GET /api/v1/items/{}", i % 50),
        "references": [{"refType": "CHILD_OF", "traceID": trace, "spanID": parent}],
        "startTime": start, "startTimeMillis": start / 1000, "duration": 1000 + i % 9000,
        "tags": [
            {"key": "otel.scope.name", "type": "string", "value": "io.opentelemetry.http"},
            {"key": "span.kind", "type": "string", "value": "server"},
            {"key": "http.method", "type": "string", "value": "GET"},
            {"key": "http.status_code", "type": "int64", "value": (200 + (i % 5) * 100).to_string()},
            {"key": "http.url", "type": "string", "value": format!("https://shop.example.com/api/v1/items/{}", i % 1000)},
            {"key": "otel.status_code", "type": "string", "value": "OK"}
        ],
        "logs": [],
        "process": {"serviceName": service, "tags": [
            {"key": "host.name", "type": "string", "value": format!("node-{}", i % 16)},
            {"key": "telemetry.sdk.language", "type": "string", "value": "rust"}
        ]}
    });
    (format!("{trace}_{span}_{:x}", i.wrapping_mul(31)), doc.to_string())
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    let response = app.clone().oneshot(request.body(Body::from(body)).expect("request")).await.expect("answer");
    let status = response.status().as_u16();
    (status, to_bytes(response.into_body(), usize::MAX).await.expect("body").to_vec())
}

/// Name of the HTTP server's runtime threads, whose CPU the HTTP phase counts.
const SERVER_THREADS: &str = "devstore-srv";

/// CPU time (user + system) in seconds of this process's threads named [`SERVER_THREADS`], from
/// `/proc/self/task/*/stat`.
fn server_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let mut ticks = 0.0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(SERVER_THREADS) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        ticks += field(11) + field(12);
    }
    ticks / 100.0
}

/// A Jaeger service document's bulk item, as the ingester writes a few per batch.
fn service_item(i: u64) -> String {
    let service = SERVICES[(i % 8) as usize];
    let operation = format!("GET /api/v1/items/{}", i % 50);
    let doc = json!({"serviceName": service, "operationName": operation});
    format!(
        "{{\"index\":{{\"_index\":\"jaeger-service-2025-11-30\",\"_id\":\"{:016x}\"}}}}\n{doc}\n",
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

/// `_bulk` bodies of about 5 MB (the ingester's `batch.max_bytes`) of span documents `0..docs`,
/// each with a few service documents, as the ingester sends them.
fn http_bodies(docs: u64) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut body = String::new();
    for i in 0..docs {
        let (id, doc) = span(i);
        body.push_str(&format!("{{\"create\":{{\"_index\":\"jaeger-span-2025-11-30\",\"_id\":\"{id}\"}}}}\n"));
        body.push_str(&doc);
        body.push('\n');
        if body.len() >= 5 << 20 || i + 1 == docs {
            for s in 0..4 {
                body.push_str(&service_item(i + s));
            }
            bodies.push(std::mem::take(&mut body).into_bytes());
        }
    }
    bodies
}

/// The HTTP phase: a server on its own runtime, fed over two connections; its threads' CPU per
/// span document.
async fn http_phase(docs: u64) {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()
        .expect("server runtime");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = server
        .spawn(spanline_devstore::start(spanline_devstore::Settings::default(), shutdown.clone()))
        .await
        .expect("server task")
        .expect("server starts");
    let url = running.url();
    let client = reqwest::Client::new();
    let put = client.put(format!("{url}/_index_template/jaeger-span")).json(&template()).send().await;
    assert!(put.expect("template").status().is_success());
    let bodies = http_bodies(docs);
    let count = bodies.len();
    let (cpu, wall) = (server_cpu_seconds(), Instant::now());
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let (client, queue, url) = (client.clone(), queue.clone(), url.clone());
            tokio::spawn(async move {
                loop {
                    let Some(body) = queue.lock().expect("queue").pop() else { break };
                    let answer = client
                        .post(format!("{url}/_bulk"))
                        .header("content-type", "application/x-ndjson")
                        .body(body)
                        .send()
                        .await
                        .expect("bulk");
                    assert_eq!(answer.status(), 200);
                    let answer = answer.bytes().await.expect("answer");
                    assert!(answer.starts_with(b"{\"errors\":false"));
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("sender");
    }
    let refreshed = client.post(format!("{url}/_refresh")).send().await.expect("refresh");
    assert!(refreshed.status().is_success());
    let (cpu, wall) = (server_cpu_seconds() - cpu, wall.elapsed().as_secs_f64());
    #[allow(clippy::cast_precision_loss)]
    let per_doc = |s: f64| s * 1e6 / docs as f64;
    println!(
        "http bulk ({count} bodies of ~5 MB, 2 connections): {:.2} µs server CPU per document, {:.2} µs wall per document",
        per_doc(cpu),
        per_doc(wall)
    );
    shutdown.cancel();
    server.shutdown_background();
}

/// A Jaeger span document as the ingester writes it (`ingester/src/document/`): about 1.5 KB, the
/// tag keys and types of an OpenTelemetry HTTP server span, a log with two fields, process tags.
fn ingester_span(i: u64) -> (String, String) {
    let (trace, span, parent, service, start) = identity(i);
    let tag = |key: &str, ty: &str, value: String| json!({"key": key, "type": ty, "value": value});
    let doc = json!({
        "traceID": trace, "spanID": span, "parentSpanID": parent, "flags": 1,
        "operationName": format!("GET /api/v1/items/{}", i % 50),
        "references": [{"refType": "CHILD_OF", "traceID": trace, "spanID": parent}],
        "startTime": start, "startTimeMillis": start / 1000, "duration": 1000 + i % 9000,
        "tags": [
            tag("otel.scope.name", "string", "io.opentelemetry.http".into()),
            tag("otel.scope.version", "string", "1.27.0".into()),
            tag("span.kind", "string", "server".into()),
            tag("http.request.method", "string", "GET".into()),
            tag("http.response.status_code", "int64", (200 + (i % 5) * 100).to_string()),
            tag("url.full", "string", format!("https://shop.example.com/api/v1/items/{}?page={}", i % 1000, i % 7)),
            tag("url.scheme", "string", "https".into()),
            tag("server.address", "string", "shop.example.com".into()),
            tag("server.port", "int64", "443".into()),
            tag("client.address", "string", format!("10.0.{}.{}", i % 7, i % 251)),
            tag("user_agent.original", "string", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36".into()),
            tag("network.protocol.version", "string", "1.1".into()),
            tag("otel.status_code", "string", if i % 5 == 4 { "ERROR" } else { "OK" }.into())
        ],
        "logs": [{"timestamp": start + 500, "fields": [
            tag("event", "string", "cache.lookup".into()),
            tag("cache.hit", "bool", i.is_multiple_of(3).to_string())
        ]}],
        "process": {"serviceName": service, "tags": [
            tag("host.name", "string", format!("node-{}", i % 16)),
            tag("telemetry.sdk.language", "string", "rust".into()),
            tag("telemetry.sdk.name", "string", "opentelemetry".into()),
            tag("service.instance.id", "string", format!("{:08x}-{}", (i % 16).wrapping_mul(0x9e37_79b9), i % 16))
        ]}
    });
    (format!("{trace}_{span}_{:x}", i.wrapping_mul(31)), doc.to_string())
}

/// The `once` mode's bodies: `batch` ingester-shaped span documents each, then a few service
/// documents, as the ingester sends them.
fn once_bodies(docs: u64, batch: u64) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    for start in (0..docs).step_by(batch.max(1) as usize) {
        let mut body = String::new();
        let end = (start + batch).min(docs);
        for i in start..end {
            let (id, doc) = ingester_span(i);
            body.push_str(&format!("{{\"create\":{{\"_index\":\"jaeger-span-2025-11-30\",\"_id\":\"{id}\"}}}}\n"));
            body.push_str(&doc);
            body.push('\n');
        }
        for s in 0..4 {
            body.push_str(&service_item(end + s));
        }
        bodies.push(body.into_bytes());
    }
    bodies
}

/// The `once` mode's measured work: every body through the router, then one refresh. Named for
/// callgrind's `--toggle-collect='*measured*'`.
#[inline(never)]
fn measured(runtime: &tokio::runtime::Runtime, app: &axum::Router, state: &AppState, bodies: Vec<Vec<u8>>) {
    runtime.block_on(async {
        for body in bodies {
            let (status, answer) = call(app, "POST", "/_bulk", body).await;
            assert_eq!(status, 200);
            let ok = b"\"errors\":false";
            assert!(answer.windows(ok.len()).any(|w| w == ok), "a bulk item failed");
        }
    });
    state.store.lock().refresh_all();
}

fn once(docs: u64, batch: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let state = Arc::new(AppState::new(u64::MAX, Faults::default(), 200 << 20, Some(1)));
    let app = api::router(state.clone());
    runtime.block_on(call(&app, "PUT", "/_index_template/jaeger-span", template().to_string().into_bytes()));
    let bodies = once_bodies(docs, batch);
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    measured(&runtime, &app, &state, bodies);
    let (cpu, wall) = (cpu_seconds() - cpu, wall.elapsed().as_secs_f64());
    #[allow(clippy::cast_precision_loss)]
    let per_doc = |s: f64| s * 1e6 / docs.max(1) as f64;
    println!(
        "once: {docs} documents, {} body bytes per document, {batch} per bulk: {:.2} µs CPU, {:.2} µs wall per document; bytes_used {}",
        bytes / docs.max(1) as usize,
        per_doc(cpu),
        per_doc(wall),
        state.store.lock().bytes_used()
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let docs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let batch: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    match args.next().as_deref() {
        Some("once") => once(docs, batch),
        mode => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(profile(docs, batch, mode == Some("http")));
        }
    }
}

async fn profile(docs: u64, batch: u64, http_only: bool) {
    if http_only {
        http_phase(docs).await;
        return;
    }
    let state = Arc::new(AppState::new(u64::MAX, Faults::default(), 200 << 20, Some(1)));
    let app = api::router(state.clone());
    call(&app, "PUT", "/_index_template/jaeger-span", template().to_string().into_bytes()).await;

    // Bodies built before measuring: only the store's work is timed.
    let mut bodies = Vec::new();
    let mut bytes = 0usize;
    for start in (0..docs).step_by(batch as usize) {
        let mut body = String::new();
        for i in start..(start + batch).min(docs) {
            let (id, doc) = span(i);
            bytes += doc.len();
            body.push_str(&format!("{{\"create\":{{\"_index\":\"jaeger-span-2025-11-30\",\"_id\":\"{id}\"}}}}\n"));
            body.push_str(&doc);
            body.push('\n');
        }
        bodies.push(body.into_bytes());
    }
    println!("documents: {docs}, mean source {} bytes, {batch} per bulk", bytes / docs as usize);

    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let mut refresh_cpu = 0.0;
    for (n, body) in bodies.into_iter().enumerate() {
        let (status, answer) = call(&app, "POST", "/_bulk", body).await;
        assert_eq!(status, 200);
        assert!(answer.starts_with(b"{\"errors\":false") || !answer.windows(13).any(|w| w == b"\"errors\":true"));
        // A refresh a second, as the default `refresh_interval`, taken as every 40 bulks here.
        if n % 40 == 39 {
            let c = cpu_seconds();
            state.store.lock().refresh_all();
            refresh_cpu += cpu_seconds() - c;
        }
    }
    let c = cpu_seconds();
    state.store.lock().refresh_all();
    refresh_cpu += cpu_seconds() - c;
    let (cpu, wall) = (cpu_seconds() - cpu, wall.elapsed().as_secs_f64());
    #[allow(clippy::cast_precision_loss)]
    let per_doc = |s: f64| s * 1e6 / docs as f64;
    println!(
        "bulk: {:.2} µs CPU per document (of which refresh {:.2}), {:.2} µs wall per document",
        per_doc(cpu),
        per_doc(refresh_cpu),
        per_doc(wall)
    );

    let trace = format!("{:032x}", (docs / 20).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let queries: Vec<(&str, &str, Value)> = vec![
        ("search term traceID", "/jaeger-span-*/_search", json!({"query": {"term": {"traceID": trace}}, "size": 100})),
        (
            "count term serviceName",
            "/jaeger-span-*/_count",
            json!({"query": {"term": {"process.serviceName": "payment"}}}),
        ),
        ("count match_all", "/jaeger-span-*/_count", json!({})),
        (
            "jaeger trace by id",
            "/jaeger-span-*/_search",
            json!({"size": 10000, "query": {"bool": {"must": [
            {"term": {"traceID": trace}},
            {"range": {"startTimeMillis": {"gte": T0 / 1000, "lte": T0 / 1000 + 86_400_000}}}]}}}),
        ),
        (
            "jaeger find traces",
            "/jaeger-span-*/_search",
            json!({"size": 0, "query": {"bool": {"must": [
            {"range": {"startTimeMillis": {"gte": T0 / 1000 + 3_000, "lte": T0 / 1000 + 3_100}}},
            {"match": {"process.serviceName": {"query": "payment"}}},
            {"nested": {"path": "tags", "query": {"bool": {"must": [
                {"match": {"tags.key": {"query": "http.status_code"}}}, {"regexp": {"tags.value": {"value": "5.."}}}]}}}}]}},
            "aggregations": {"traceIDs": {"terms": {"field": "traceID", "size": 20, "order": [{"startTime": "desc"}]},
                "aggregations": {"startTime": {"max": {"field": "startTime"}}}}}}),
        ),
    ];
    for (name, uri, body) in queries {
        let started = Instant::now();
        let mut answer = Vec::new();
        for _ in 0..5 {
            let (status, got) = call(&app, "POST", uri, body.to_string().into_bytes()).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&got));
            answer = got;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0 / 5.0;
        let answer: Value = serde_json::from_slice(&answer).unwrap_or_default();
        let hits = answer.pointer("/hits/total/value").or_else(|| answer.get("count")).cloned().unwrap_or_default();
        println!("{name}: {ms:.2} ms (matches {hits})");
    }

    http_phase(docs).await;
}
