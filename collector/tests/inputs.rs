//! Zipkin and Jaeger clients' protocols through the real collector into a real broker (Tansu,
//! SQLite): what is answered 202 is in the topic, each span once, keyed by its trace; a malformed
//! body is 400 with the reason; a bad span is refused alone; the agent's UDP datagrams are exported
//! or counted as dropped. And real client libraries (the OpenTelemetry Python SDK's Zipkin JSON,
//! Zipkin protobuf and Jaeger Thrift exporters, from PyPI, pinned in `scripts/install-deps.sh`):
//! every span they finished is in the topic exactly once, with its ids, parent, name, kind,
//! service and error status mapped as docs/inputs.md says; 64-bit trace ids (a Jaeger or B3
//! client's) widened with zero high bits.

use std::{collections::BTreeSet, path::Path, process::Command, time::Duration};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::any_value,
    trace::v1::{span::SpanKind, status::StatusCode},
};
use prost::Message;
use spanline_testkit::{
    Broker, read_topic,
    thrift::{self, Batch, Span, Tag},
};
use tokio_util::sync::CancellationToken;

async fn start() -> (Broker, spanline_collector::Running) {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", 3).await.expect("topic");
    let mut c = spanline_collector::Config::default();
    let any = || Some("127.0.0.1:0".parse().expect("addr"));
    c.receivers.grpc_listen = "127.0.0.1:0".parse().expect("addr");
    c.receivers.http_listen = "127.0.0.1:0".parse().expect("addr");
    (c.receivers.zipkin_listen, c.receivers.jaeger_http_listen) = (any(), any());
    (c.receivers.jaeger_compact_listen, c.receivers.jaeger_binary_listen) = (any(), any());
    c.admin.listen = "127.0.0.1:0".parse().expect("addr");
    c.kafka.brokers = broker.bootstrap();
    let running = spanline_collector::start(c, CancellationToken::new()).await.expect("starts");
    (broker, running)
}

/// Every span in the topic: (key, trace id hex, span id hex, service, name), checking each record's
/// key is its spans' trace.
async fn spans(broker: &Broker) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for record in read_topic(&broker.bootstrap(), "otlp_spans").await.expect("read") {
        let request = ExportTraceServiceRequest::decode(&record.payload[..]).expect("OTLP record");
        let key = String::from_utf8(record.key.expect("keyed")).expect("utf-8");
        for rs in &request.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                assert_eq!(key, hex(&span.trace_id), "the record's key is its trace");
                out.push((hex(&span.trace_id), hex(&span.span_id), service.clone(), span.name.clone()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_and_jaeger_http_spans_are_in_the_topic_once() {
    let (broker, running) = start().await;
    let client = reqwest::Client::new();
    let zipkin = format!("http://{}/api/v2/spans", running.zipkin_addr.expect("zipkin on"));
    // Zipkin v2 JSON: a 64-bit trace (widened), a 128-bit one, and a span without a timestamp,
    // refused alone.
    let body = serde_json::json!([
        {"traceId": "463ac35c9f6413ad", "id": "72485a3953bb6124", "name": "get", "timestamp": 1_700_000_000_000_000u64,
         "duration": 200, "kind": "SERVER", "localEndpoint": {"serviceName": "front"}},
        {"traceId": "463ac35c9f6413ad48485a3953bb6124", "id": "a2fb4a1d1a96d312", "parentId": "72485a3953bb6124",
         "name": "query", "timestamp": 1_700_000_000_000_100u64, "duration": 50, "localEndpoint": {"serviceName": "db"}},
        {"traceId": "463ac35c9f6413ad", "id": "0000000000000003", "name": "no-time", "localEndpoint": {"serviceName": "front"}}
    ]);
    let response = client.post(&zipkin).json(&body).send().await.expect("sent");
    assert_eq!(response.status(), 202);
    // Malformed, and every span refused: 400 with the reason, nothing produced.
    let response =
        client.post(&zipkin).header("content-type", "application/json").body("[{").send().await.expect("sent");
    assert_eq!(response.status(), 400);
    assert!(response.text().await.expect("text").contains("Zipkin"), "the reason names the format");
    let only_bad = serde_json::json!([{"traceId": "zz", "id": "72485a3953bb6124", "timestamp": 1}]);
    assert_eq!(client.post(&zipkin).json(&only_bad).send().await.expect("sent").status(), 400);
    let response = client.post(&zipkin).header("content-type", "text/plain").body("x").send().await.expect("sent");
    assert_eq!(response.status(), 415);

    // Jaeger Thrift binary over HTTP: a 64-bit trace from a Jaeger client.
    let jaeger = format!("http://{}/api/traces", running.jaeger_http_addr.expect("jaeger on"));
    let mut span = Span::new(0x1234, 0x99, "checkout");
    span.tags = Some(vec![Tag::str("sampler.type", "const")]);
    let batch = Batch::new("shop", vec![span, Span::new(0x1234, 0x9a, "pay")]);
    let response = client
        .post(&jaeger)
        .header("content-type", "application/x-thrift")
        .body(batch.binary())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let response = client
        .post(&jaeger)
        .header("content-type", "application/x-thrift")
        .body(vec![0x0c])
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);

    let got = spans(&broker).await;
    let want = vec![
        (
            "00000000000000000000000000001234".into(),
            "0000000000000099".into(),
            "StringValue(\"shop\")".into(),
            "checkout".into(),
        ),
        (
            "00000000000000000000000000001234".into(),
            "000000000000009a".into(),
            "StringValue(\"shop\")".into(),
            "pay".into(),
        ),
        (
            "0000000000000000463ac35c9f6413ad".into(),
            "72485a3953bb6124".into(),
            "StringValue(\"front\")".into(),
            "get".into(),
        ),
        (
            "463ac35c9f6413ad48485a3953bb6124".into(),
            "a2fb4a1d1a96d312".into(),
            "StringValue(\"db\")".into(),
            "query".into(),
        ),
    ];
    assert_eq!(got, want, "every span taken is in the topic once, nothing else");
    let refused = spanline_testkit::metric(
        running.admin_addr,
        "spanline_collector_spans_total",
        "outcome=\"rejected\",reason=\"invalid_zipkin_span\"",
    )
    .await
    .expect("metric");
    assert_eq!(refused, 2.0, "the span without a timestamp and the one with a bad trace id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_agent_datagrams_are_exported_or_counted() {
    let (broker, running) = start().await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let compact = Batch::new("agent-c", vec![Span::new(7, 1, "c1"), Span::new(7, 2, "c2")]);
    let binary = Batch::new("agent-b", vec![Span::new(8, 1, "b1")]);
    let to = |addr: Option<std::net::SocketAddr>| addr.expect("agent port on");
    let sent = [
        (thrift::emit_batch(thrift::Protocol::Compact, &compact), to(running.jaeger_compact_addr)),
        (thrift::emit_batch(thrift::Protocol::Binary, &binary), to(running.jaeger_binary_addr)),
        (vec![0x82, 0x21, 0x01], to(running.jaeger_compact_addr)),
    ];
    for (datagram, addr) in &sent {
        socket.send_to(datagram, addr).await.expect("sent");
    }
    let counted = |port: &'static str, outcome: &'static str| {
        let labels = format!("port=\"{port}\",outcome=\"{outcome}\"");
        async move {
            spanline_testkit::metric(running.admin_addr, "spanline_collector_agent_datagrams_total", &labels)
                .await
                .unwrap_or(0.0)
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let done = counted("jaeger_compact", "exported").await == 1.0
            && counted("jaeger_binary", "exported").await == 1.0
            && counted("jaeger_compact", "malformed").await == 1.0;
        if done {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "datagrams not all accounted for");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: BTreeSet<String> = spans(&broker).await.into_iter().map(|(.., name)| name).collect();
    assert_eq!(names, ["b1", "c1", "c2"].into_iter().map(String::from).collect(), "each datagram's spans, once");
}

/// A burst of datagrams past what the agent's queue and exports take: every datagram is either
/// exported (its span in the topic, once) or counted as dropped with its reason; none is lost
/// without a count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_agent_datagrams_is_exported_or_counted_every_one() {
    let (broker, running) = start().await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let to = running.jaeger_compact_addr.expect("agent port on");
    const SENT: i64 = 4_000;
    for n in 1..=SENT {
        let batch = Batch::new("burst", vec![Span::new(0x5000 + n, n, "burst")]);
        socket.send_to(&thrift::emit_batch(thrift::Protocol::Compact, &batch), to).await.expect("sent");
    }
    let outcomes = ["exported", "queue_full", "over_budget", "malformed", "failed", "kernel_dropped"];
    let count = |outcome: &'static str| {
        let labels = format!("port=\"jaeger_compact\",outcome=\"{outcome}\"");
        async move {
            spanline_testkit::metric(running.admin_addr, "spanline_collector_agent_datagrams_total", &labels)
                .await
                .unwrap_or(0.0)
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let counted = loop {
        let mut counted = Vec::new();
        for outcome in outcomes {
            counted.push((outcome, count(outcome).await));
        }
        let total: f64 = counted.iter().map(|(_, n)| n).sum();
        if total >= SENT as f64 || tokio::time::Instant::now() > deadline {
            break counted;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let total: f64 = counted.iter().map(|(_, n)| n).sum();
    eprintln!("{SENT} datagrams: {counted:?}");
    assert_eq!(total, SENT as f64, "every datagram counted once: {counted:?}");
    let dropped: f64 = counted.iter().filter(|(o, _)| *o != "exported").map(|(_, n)| n).sum();
    assert!(dropped > 0.0, "the burst is past what the agent takes: {counted:?}");
    let exported = counted[0].1;
    let spans = spans(&broker).await;
    assert_eq!(spans.len() as f64, exported, "each exported datagram's span in the topic once: {counted:?}");
}

/// A span as the client library reports it finished.
#[derive(Debug, serde::Deserialize)]
struct Sent {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: String,
    error: bool,
    events: usize,
}

/// Runs `send.py` with the pinned client libraries; the spans it finished.
fn send(protocol: &str, endpoint: &str, bits: u32) -> Vec<Sent> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".run/clients-venv/bin/python");
    assert!(python.exists(), "{} missing: `make test` installs it (scripts/install-deps.sh)", python.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/send.py");
    let out =
        Command::new(python).arg(script).args([protocol, endpoint, &bits.to_string()]).output().expect("python runs");
    assert!(out.status.success(), "{protocol}: {}", String::from_utf8_lossy(&out.stderr));
    // The exporters log a failed export instead of failing: their log is the test's business.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("Traceback") && !log.to_lowercase().contains("fail"), "{protocol}: {log}");
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a span")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_and_jaeger_client_libraries_reach_the_topic_once_each_span_mapped() {
    let (broker, running) = start().await;
    let zipkin = format!("http://{}/api/v2/spans", running.zipkin_addr.expect("on"));
    let jaeger = format!("http://{}/api/traces", running.jaeger_http_addr.expect("on"));
    let agent = running.jaeger_compact_addr.expect("on").to_string();

    let mut sent = Vec::new();
    for (protocol, endpoint) in
        [("zipkin-json", &zipkin), ("zipkin-proto", &zipkin), ("jaeger-http", &jaeger), ("jaeger-agent", &agent)]
    {
        for bits in [128, 64] {
            let spans = tokio::task::block_in_place(|| send(protocol, endpoint, bits));
            assert_eq!(spans.len(), 2, "{protocol}: the client finished its two spans");
            if bits == 64 {
                assert!(spans.iter().all(|s| s.trace_id.starts_with("0000000000000000")), "{spans:?}");
            }
            sent.extend(spans.into_iter().map(|s| (protocol, s)));
        }
    }

    // The agent's datagrams are exported asynchronously: wait until every span is in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let found = loop {
        let mut found = Vec::new();
        for record in read_topic(&broker.bootstrap(), "otlp_spans").await.expect("read") {
            let request = ExportTraceServiceRequest::decode(&record.payload[..]).expect("OTLP record");
            let key = String::from_utf8(record.key.expect("keyed")).expect("utf-8");
            for rs in request.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        any_value::Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                    assert_eq!(key, hex(&span.trace_id), "the record's key is its trace");
                    found.push((service.clone(), span));
                }
            }
        }
        if found.len() >= sent.len() || tokio::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(found.len(), sent.len(), "every span once, nothing else");
    for (protocol, s) in &sent {
        let matching: Vec<_> = found
            .iter()
            .filter(|(_, span)| hex(&span.trace_id) == s.trace_id && hex(&span.span_id) == s.span_id)
            .collect();
        assert_eq!(matching.len(), 1, "{protocol}: {s:?} found once");
        let (service, span) = matching[0];
        assert_eq!(service, &format!("py-{protocol}"), "{protocol}: service");
        assert_eq!(hex(&span.parent_span_id), s.parent, "{protocol}: parent");
        assert_eq!(span.name, s.name, "{protocol}: name");
        let kind = match s.kind.as_str() {
            "SERVER" => SpanKind::Server,
            "CLIENT" => SpanKind::Client,
            other => panic!("{other}"),
        };
        assert_eq!(span.kind, kind as i32, "{protocol}: {} kind", s.name);
        let code = span.status.as_ref().map_or(0, |st| st.code);
        assert_eq!(code == StatusCode::Error as i32, s.error, "{protocol}: {} status {:?}", s.name, span.status);
        assert_eq!(span.events.len(), s.events, "{protocol}: {} events", s.name);
        assert!(span.end_time_unix_nano > span.start_time_unix_nano, "{protocol}: times in ns");
        assert!(span.start_time_unix_nano > 1_600_000_000_000_000_000, "{protocol}: not 1970");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
