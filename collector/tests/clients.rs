//! Real Zipkin and Jaeger client libraries (the OpenTelemetry Python SDK's Zipkin JSON, Zipkin
//! protobuf and Jaeger Thrift exporters, from PyPI, pinned in `scripts/install-deps.sh`) sending
//! through the collector into a real broker (Tansu, SQLite): every span they finished is in the
//! topic exactly once, keyed by its trace, with its ids, parent, name, kind, service and error
//! status mapped as docs/inputs.md says; 64-bit trace ids (a Jaeger or B3 client's) widened with
//! zero high bits.

use std::{path::Path, process::Command, time::Duration};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::any_value,
    trace::v1::{span::SpanKind, status::StatusCode},
};
use prost::Message;
use spanline_testkit::{Broker, read_topic};
use tokio_util::sync::CancellationToken;

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
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", 3).await.expect("topic");
    let mut c = spanline_collector::Config::default();
    let any = || Some("127.0.0.1:0".parse().expect("addr"));
    c.receivers.grpc_listen = "127.0.0.1:0".parse().expect("addr");
    c.receivers.http_listen = "127.0.0.1:0".parse().expect("addr");
    (c.receivers.zipkin_listen, c.receivers.jaeger_http_listen, c.receivers.jaeger_compact_listen) =
        (any(), any(), any());
    c.admin.listen = "127.0.0.1:0".parse().expect("addr");
    c.kafka.brokers = broker.bootstrap();
    let running = spanline_collector::start(c, CancellationToken::new()).await.expect("starts");
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
