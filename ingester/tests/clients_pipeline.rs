//! Real Zipkin and Jaeger client libraries through the whole pipeline — the collector's release
//! binary, the real broker (Tansu, SQLite), the ingester — into the dev store:
//! - the OpenTelemetry Python SDK's Zipkin and Jaeger exporters and Jaeger's own Python client
//!   (`jaeger-client`, agent UDP), pinned in `scripts/install-deps.sh`, with 64-bit trace ids as
//!   Jaeger and B3 clients make them: every span is found once by the 16-digit `traceID` Jaeger
//!   Query 1.x looks a trace up by;
//! - the Rust `opentelemetry-zipkin` exporter (a dev-dependency), to the Zipkin receiver;
//!
//! each span with its operation, service, kind, error and parent reference written as Jaeger's
//! schema has them, and the Jaeger client's and the Rust exporter's spans field by field (tags,
//! process tags, logs, references, status, instrumentation scope, times).

mod common;

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _},
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};
// opentelemetry-zipkin 0.33 deprecates its exporter (OTLP instead); it is still what Rust services
// that export Zipkin run, and so what the Zipkin receiver must take.
#[allow(deprecated)]
use opentelemetry_zipkin::ZipkinExporter;
use serde_json::{Value, json};
use spanline_devstore::Settings;
use spanline_testkit::{
    Broker, devstore_with, free_ports,
    process::{Killed, release_bin},
    wait_for,
};
use tokio_util::sync::CancellationToken;

/// The spans a script of collector/tests/clients sent, one JSON object per line.
fn run_script(script: &str, args: &[&str]) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".run/clients-venv/bin/python");
    assert!(python.exists(), "{} missing: `make test` installs it (scripts/install-deps.sh)", python.display());
    let out = Command::new(python)
        .arg(root.join("collector/tests/clients").join(script))
        .args(args)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{script} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a span")).collect()
}

/// The spans `send.py` finished: (trace id, span id, parent, name, kind, error).
fn send(protocol: &str, endpoint: &str) -> Vec<Value> {
    run_script("send.py", &[protocol, endpoint, "64"])
}

/// The one document of span `span_id` found by a term on `trace_id` (the form Jaeger Query asks
/// with), waiting for the ingester; fails if there is none or more than one.
async fn find_once(store: &str, trace_id: &str, span_id: &str, what: &str) -> Value {
    let client = reqwest::Client::new();
    let search = format!("{store}/jaeger-span-*/_search");
    let body = json!({"query": {"bool": {"must": [{"term": {"traceID": trace_id}}, {"term": {"spanID": span_id}}]}}});
    let hits = wait_for(Duration::from_secs(60), || {
        let (client, search, body) = (client.clone(), search.clone(), body.clone());
        async move {
            let answer: Value = client.post(&search).json(&body).send().await.ok()?.json().await.ok()?;
            let hits = answer["hits"]["hits"].as_array()?.clone();
            (!hits.is_empty()).then_some(hits)
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: span {span_id} not found by traceID {trace_id}"));
    assert_eq!(hits.len(), 1, "{what}: span {span_id} indexed once");
    hits[0]["_source"].clone()
}

/// `tags` (a document's `tags` or `process.tags`) as (key, type, value) triples, sorted.
fn tag_set(tags: &Value) -> Vec<(String, String, String)> {
    let mut set: Vec<_> = tags
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| {
            let field = |f: &str| t[f].as_str().unwrap_or_else(|| panic!("tag {t}: {f}")).to_owned();
            (field("key"), field("type"), field("value"))
        })
        .collect();
    set.sort();
    set
}

fn string_tag(key: &str, value: &str) -> (String, String, String) {
    (key.to_owned(), "string".to_owned(), value.to_owned())
}

/// Checks the documents of Jaeger's own client's spans (`send_jaeger_client.py`: the Thrift
/// structs it sent) against the mapping of docs/inputs.md ("Jaeger Thrift") and the span schema.
async fn check_jaeger_client(store: &str, sent: &[Value]) {
    for span in sent {
        let what = format!("jaeger-client {}", span["name"]);
        let full = span["trace_id"].as_str().expect("trace id");
        assert!(full.starts_with("0000000000000000"), "{what}: jaeger-client makes 64-bit trace ids: {full}");
        let short = &full[16..];
        let span_id = span["span_id"].as_str().expect("span id");
        let doc = find_once(store, short, span_id, &what).await;
        assert_eq!(doc["traceID"], short, "{what}");
        assert_eq!(doc["operationName"], span["name"], "{what}");
        assert_eq!(doc["flags"], span["flags"], "{what}: the sampled flag");
        assert_eq!(doc["startTime"], span["start"], "{what}: µs");
        assert_eq!(doc["duration"], span["duration"], "{what}: µs");

        // The process: service name; tags as the OpenTelemetry translator maps them (`hostname` →
        // `host.name`, `jaeger.version` V → `opencensus.exporterversion` Jaeger-V), others verbatim.
        assert_eq!(doc["process"]["serviceName"], span["service"], "{what}");
        let mut process = Vec::new();
        for (key, kind, value) in tag_set(&span["process_tags"]) {
            process.push(match key.as_str() {
                "hostname" => (String::from("host.name"), kind, value),
                "jaeger.version" => string_tag("opencensus.exporterversion", &format!("Jaeger-{value}")),
                _ => (key, kind, value),
            });
        }
        process.sort();
        let keys: Vec<&str> = process.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["host.name", "ip", "opencensus.exporterversion"], "{what}: the client's process tags");
        assert_eq!(tag_set(&doc["process"]["tags"]), process, "{what}: process tags");

        // Span tags: verbatim (`sampler.type`, `sampler.param` included) but `error` = true, which
        // becomes the status (written back as `error` = true beside `otel.status_code` ERROR), and
        // `span.kind`, which becomes the kind (written back as `span.kind`).
        let mut tags = Vec::new();
        let mut error = false;
        for (key, kind, value) in tag_set(&span["tags"]) {
            if key == "error" && kind == "bool" && value == "true" {
                error = true;
                tags.push(string_tag("otel.status_code", "ERROR"));
            }
            tags.push((key, kind, value));
        }
        tags.sort();
        assert_eq!(tag_set(&doc["tags"]), tags, "{what}: tags");
        if span["parent"] == "" {
            let sampler: Vec<_> = tags.iter().filter(|(k, _, _)| k.starts_with("sampler.")).cloned().collect();
            let expected =
                vec![("sampler.param".into(), "bool".into(), "true".into()), string_tag("sampler.type", "const")];
            assert_eq!(sampler, expected, "{what}: the const sampler's tags on the root span");
        }
        assert_eq!(error, span["name"] == "SELECT cart", "{what}: the client set error on one span");

        // Logs: one per log, same µs timestamp, the `event` field (the OTLP event's name) and the
        // other fields with their types.
        let logs = doc["logs"].as_array().expect("logs");
        let sent_logs = span["logs"].as_array().expect("logs");
        assert_eq!(logs.len(), sent_logs.len(), "{what}: logs");
        for (log, sent_log) in logs.iter().zip(sent_logs) {
            assert_eq!(log["timestamp"], sent_log["timestamp"], "{what}: log time");
            assert_eq!(tag_set(&log["fields"]), tag_set(&sent_log["fields"]), "{what}: log fields");
        }

        // References: the parent (CHILD_OF) first, then every other reference with its own type.
        let parent = span["parent"].as_str().expect("parent");
        let mut references = Vec::new();
        if parent.is_empty() {
            assert!(doc.get("parentSpanID").is_none(), "{what}: a root");
        } else {
            assert_eq!(doc["parentSpanID"], parent, "{what}: parent");
            references.push(json!({"refType": "CHILD_OF", "traceID": short, "spanID": parent}));
        }
        for reference in span["references"].as_array().expect("references") {
            if reference["refType"] == "CHILD_OF" && reference["spanID"] == parent {
                continue;
            }
            let trace = reference["traceID"].as_str().expect("trace id");
            let trace = trace.strip_prefix("0000000000000000").unwrap_or(trace);
            references.push(json!({"refType": reference["refType"], "traceID": trace, "spanID": reference["spanID"]}));
        }
        assert_eq!(doc["references"], json!(references), "{what}: references");
    }
    let with_follows_from = sent.iter().filter(|s| s["references"].to_string().contains("FOLLOWS_FROM")).count();
    assert_eq!(with_follows_from, 1, "the client sent one span with a FOLLOWS_FROM reference");
}

/// A Zipkin exporter that keeps what it exported, and counts the exports that failed.
#[allow(deprecated)]
#[derive(Debug)]
struct Keeping {
    zipkin: ZipkinExporter,
    exported: Arc<Mutex<Vec<SpanData>>>,
    failed: Arc<Mutex<Vec<String>>>,
}

#[allow(deprecated)]
impl SpanExporter for Keeping {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let copy = batch.clone();
        let result = self.zipkin.export(batch).await;
        match &result {
            Ok(()) => self.exported.lock().expect("lock").extend(copy),
            Err(e) => self.failed.lock().expect("lock").push(e.to_string()),
        }
        result
    }
}

/// Sends a small trace through the Rust `opentelemetry-zipkin` exporter (its blocking reqwest
/// client: call from a thread outside the runtime) to `endpoint`; the spans the collector took.
#[allow(deprecated)]
fn send_rust_zipkin(endpoint: &str) -> Vec<SpanData> {
    let exported = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let zipkin = ZipkinExporter::builder()
        .with_collector_endpoint(endpoint)
        .with_service_address(SocketAddr::from(([127, 0, 0, 1], 8080)))
        .build()
        .expect("exporter");
    let exporter = Keeping { zipkin, exported: exported.clone(), failed: failed.clone() };
    let provider = SdkTracerProvider::builder()
        .with_resource(opentelemetry_sdk::Resource::builder_empty().with_service_name("rust-zipkin").build())
        .with_simple_exporter(exporter)
        .build();
    let tracer =
        provider.tracer_with_scope(InstrumentationScope::builder("spanline-clients").with_version("1.2.3").build());
    let mut root = tracer
        .span_builder("GET /orders")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.method", "GET"),
            KeyValue::new("retries", 3),
            KeyValue::new("cached", true),
        ])
        .start(&tracer);
    let cx = opentelemetry::Context::current().with_remote_span_context(root.span_context().clone());
    let mut child = tracer.span_builder("SELECT orders").with_kind(SpanKind::Client).start_with_context(&tracer, &cx);
    child.add_event("retry", vec![KeyValue::new("attempt", 1)]);
    child.set_status(Status::error("boom"));
    child.end();
    let mut render = tracer.span_builder("render").with_kind(SpanKind::Internal).start_with_context(&tracer, &cx);
    render.set_status(Status::Ok);
    render.end();
    root.end();
    provider.shutdown().expect("shutdown");
    assert_eq!(*failed.lock().expect("lock"), Vec::<String>::new(), "every export answered 202");
    std::mem::take(&mut *exported.lock().expect("lock"))
}

fn micros(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_micros() as u64
}

/// Checks the documents of the Rust Zipkin exporter's spans against what it was given.
async fn check_rust_zipkin(store: &str, exported: &[SpanData]) {
    assert_eq!(exported.len(), 3, "three spans exported");
    for span in exported {
        let what = format!("opentelemetry-zipkin {}", span.name);
        let trace_id = span.span_context.trace_id().to_string();
        let doc = find_once(store, &trace_id, &span.span_context.span_id().to_string(), &what).await;
        assert_eq!(doc["operationName"], span.name.as_ref(), "{what}");
        assert_eq!(doc["startTime"], micros(span.start_time), "{what}: µs");
        // The exporter sends the start in whole µs and the duration as (end − start) in whole µs.
        let duration = span.end_time.duration_since(span.start_time).expect("ends after it starts").as_micros() as u64;
        assert_eq!(doc["duration"], duration, "{what}: µs");
        // opentelemetry-zipkin 0.33 writes no `localEndpoint.serviceName` (its exporter never reads
        // the resource), so the span has no service: the store's placeholder.
        assert_eq!(doc["process"]["serviceName"], "unknown_service", "{what}");
        assert_eq!(tag_set(&doc["process"]["tags"]), Vec::new(), "{what}: process tags");

        // Tags: the attributes as Zipkin strings, the local endpoint (net.host.*), the scope from
        // `otel.library.*` (docs/inputs.md), the kind, and the status.
        let mut tags: Vec<_> =
            span.attributes.iter().map(|kv| string_tag(kv.key.as_str(), &kv.value.to_string())).collect();
        tags.push(string_tag("net.host.ip", "127.0.0.1"));
        tags.push(("net.host.port".into(), "int64".into(), "8080".into()));
        tags.push(string_tag("otel.scope.name", "spanline-clients"));
        tags.push(string_tag("otel.scope.version", "1.2.3"));
        match span.span_kind {
            SpanKind::Server => tags.push(string_tag("span.kind", "server")),
            SpanKind::Client => tags.push(string_tag("span.kind", "client")),
            // Zipkin has no internal kind: the exporter leaves `kind` out, and so the store.
            _ => {}
        }
        match &span.status {
            Status::Error { description } => {
                tags.push(string_tag("otel.status_code", "ERROR"));
                tags.push(("error".into(), "bool".into(), "true".into()));
                // The exporter writes the description as tag `error`: kept, and the message.
                tags.push(string_tag("error", description));
                tags.push(string_tag("otel.status_description", description));
            }
            Status::Ok => tags.push(string_tag("otel.status_code", "OK")),
            Status::Unset => {}
        }
        tags.sort();
        assert_eq!(tag_set(&doc["tags"]), tags, "{what}: tags");

        // Events as logs: the exporter sends each as an annotation, its name only.
        let logs: Vec<Value> = span
            .events
            .events
            .iter()
            .map(|e| json!({"timestamp": micros(e.timestamp), "fields": [{"key": "event", "type": "string", "value": e.name}]}))
            .collect();
        assert_eq!(doc["logs"], json!(logs), "{what}: logs");

        if span.parent_span_id == opentelemetry::trace::SpanId::INVALID {
            assert!(doc.get("parentSpanID").is_none(), "{what}: a root");
            assert_eq!(doc["references"], json!([]), "{what}");
        } else {
            let parent = span.parent_span_id.to_string();
            assert_eq!(doc["parentSpanID"], parent, "{what}: parent");
            assert_eq!(doc["references"], json!([{"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent}]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_libraries_spans_are_found_by_the_id_jaeger_query_uses() {
    let broker = Broker::start().await.expect("broker");
    broker.create_topic("otlp_spans", 3).await.expect("topic");
    let store = devstore_with(Settings { refresh_interval: Duration::from_millis(100), ..Settings::default() })
        .await
        .expect("store");
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(common::config(&broker, &store.url()), shutdown.clone())
        .await
        .expect("ingester starts");

    let [grpc, http, zipkin, jaeger, agent, admin] = free_ports::<6>();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[receivers]\ngrpc_listen = \"127.0.0.1:{grpc}\"\nhttp_listen = \"127.0.0.1:{http}\"\nzipkin_listen = \"127.0.0.1:{zipkin}\"\njaeger_http_listen = \"127.0.0.1:{jaeger}\"\njaeger_compact_listen = \"127.0.0.1:{agent}\"\n[kafka]\nbrokers = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
            broker.bootstrap()
        ),
    )
    .expect("config");
    let log = dir.path().join("collector.log");
    let _collector = Killed(
        Command::new(release_bin("spanline-collector"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("collector starts"),
    );
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    wait_for(Duration::from_secs(60), || async move {
        reqwest::get(format!("http://{admin}/health/ready")).await.ok().filter(|r| r.status().is_success())
    })
    .await
    .unwrap_or_else(|_| panic!("collector not ready: {}", std::fs::read_to_string(&log).unwrap_or_default()));

    let mut sent = Vec::new();
    for (protocol, endpoint) in [
        ("zipkin-json", format!("http://127.0.0.1:{zipkin}/api/v2/spans")),
        ("zipkin-proto", format!("http://127.0.0.1:{zipkin}/api/v2/spans")),
        ("jaeger-http", format!("http://127.0.0.1:{jaeger}/api/traces")),
        ("jaeger-agent", format!("127.0.0.1:{agent}")),
    ] {
        let spans = tokio::task::block_in_place(|| send(protocol, &endpoint));
        assert_eq!(spans.len(), 2, "{protocol}");
        sent.extend(spans.into_iter().map(|s| (protocol, s)));
    }

    // Jaeger's own client to the agent port; the Rust Zipkin exporter to the Zipkin receiver.
    let jaeger_client =
        tokio::task::block_in_place(|| run_script("send_jaeger_client.py", &[&format!("127.0.0.1:{agent}")]));
    assert_eq!(jaeger_client.len(), 3, "jaeger-client: three spans reported");
    let zipkin_url = format!("http://127.0.0.1:{zipkin}/api/v2/spans");
    let rust_zipkin = std::thread::spawn(move || send_rust_zipkin(&zipkin_url)).join().expect("the Rust client");

    for (protocol, span) in &sent {
        let full = span["trace_id"].as_str().expect("trace id");
        assert!(full.starts_with("0000000000000000"), "a 64-bit trace: {full}");
        let short = &full[16..];
        let span_id = span["span_id"].as_str().expect("span id");
        // As Jaeger Query 1.x asks for a trace: a term on the 16-digit form.
        let doc = &find_once(&store.url(), short, span_id, protocol).await;
        assert_eq!(doc["operationName"], span["name"], "{protocol}");
        assert_eq!(doc["process"]["serviceName"], format!("py-{protocol}"), "{protocol}");
        let tags = doc["tags"].as_array().expect("tags");
        let tag = |key: &str| tags.iter().find(|t| t["key"] == key).map(|t| t["value"].clone());
        let kind = span["kind"].as_str().expect("kind").to_lowercase();
        assert_eq!(tag("span.kind"), Some(json!(kind)), "{protocol}: kind");
        // As Jaeger UI marks an error span: some tag `error` = true. (A Zipkin client's own
        // `error` tag, its message, is kept beside it, as the OpenTelemetry translators keep it.)
        let error = tags.iter().any(|t| t["key"] == "error" && t["value"] == "true");
        assert_eq!(error, span["error"] == true, "{protocol}: error {doc}");
        let parent = span["parent"].as_str().expect("parent");
        if parent.is_empty() {
            assert!(doc.get("parentSpanID").is_none(), "{protocol}: a root");
        } else {
            assert_eq!(doc["parentSpanID"], parent, "{protocol}: parent");
            assert_eq!(doc["references"][0], json!({"refType": "CHILD_OF", "traceID": short, "spanID": parent}));
        }
    }
    check_jaeger_client(&store.url(), &jaeger_client).await;
    check_rust_zipkin(&store.url(), &rust_zipkin).await;
    shutdown.cancel();
    let _ = ingester.task.await;
}
