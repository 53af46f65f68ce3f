//! Real Zipkin and Jaeger client libraries (the OpenTelemetry Python SDK's exporters, pinned in
//! `scripts/install-deps.sh`) through the whole pipeline — the collector's release binary, the real
//! broker (Tansu, SQLite), the ingester — into the dev store, with 64-bit trace ids as Jaeger and B3
//! clients make them: every span is found once by the 16-digit `traceID` Jaeger Query 1.x looks a
//! trace up by, with its operation, service, kind, error and parent reference written as Jaeger's
//! schema has them.

mod common;

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use spanline_devstore::Settings;
use spanline_testkit::{
    Broker, devstore_with, free_ports,
    process::{Killed, release_bin},
    wait_for,
};
use tokio_util::sync::CancellationToken;

/// The spans `send.py` finished: (trace id, span id, parent, name, kind, error).
fn send(protocol: &str, endpoint: &str) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".run/clients-venv/bin/python");
    assert!(python.exists(), "{} missing: `make test` installs it (scripts/install-deps.sh)", python.display());
    let out = Command::new(python)
        .arg(root.join("collector/tests/clients/send.py"))
        .args([protocol, endpoint, "64"])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{protocol}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a span")).collect()
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

    let client = reqwest::Client::new();
    let search = format!("{}/jaeger-span-*/_search", store.url());
    for (protocol, span) in &sent {
        let full = span["trace_id"].as_str().expect("trace id");
        assert!(full.starts_with("0000000000000000"), "a 64-bit trace: {full}");
        let short = &full[16..];
        let span_id = span["span_id"].as_str().expect("span id");
        // As Jaeger Query 1.x asks for a trace: a term on the 16-digit form.
        let body = json!({"query": {"bool": {"must": [{"term": {"traceID": short}}, {"term": {"spanID": span_id}}]}}});
        let (client, search) = (client.clone(), search.clone());
        let hits = wait_for(Duration::from_secs(60), || {
            let (client, search, body) = (client.clone(), search.clone(), body.clone());
            async move {
                let answer: Value = client.post(&search).json(&body).send().await.ok()?.json().await.ok()?;
                let hits = answer["hits"]["hits"].as_array()?.clone();
                (!hits.is_empty()).then_some(hits)
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{protocol}: {span} not found by traceID {short}"));
        assert_eq!(hits.len(), 1, "{protocol}: {span} indexed once");
        let doc = &hits[0]["_source"];
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
    shutdown.cancel();
    let _ = ingester.task.await;
}
