//! The collector against a real broker (Tansu, SQLite): what it acknowledges is in the topic, keyed
//! by trace id; what it refuses says why.

use std::{collections::HashMap, time::Duration};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, trace_service_client::TraceServiceClient,
};
use prost::Message;
use spanline_testkit::{Broker, fixtures, read_topic};
use tokio_util::sync::CancellationToken;

fn config(broker: &Broker) -> spanline_collector::Config {
    let mut c = spanline_collector::Config::default();
    c.receivers.grpc_listen = "127.0.0.1:0".parse().expect("addr");
    c.receivers.http_listen = "127.0.0.1:0".parse().expect("addr");
    c.admin.listen = "127.0.0.1:0".parse().expect("addr");
    c.kafka.brokers = broker.bootstrap();
    c
}

async fn broker() -> Broker {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", 4).await.expect("topic");
    broker
}

fn spans_in(payload: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let request = ExportTraceServiceRequest::decode(payload).expect("record is OTLP protobuf");
    request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_are_in_the_topic_keyed_by_trace_with_each_trace_on_one_partition() {
    let broker = broker().await;
    let mut c = config(&broker);
    // Small records, so the 40-span traces below are split over several records.
    c.kafka.max_message_bytes = spanline_common::ByteSize::kib(4);
    let running = spanline_collector::start(c, CancellationToken::new()).await.expect("starts");
    let mut client = TraceServiceClient::connect(format!("http://{}", running.grpc_addr)).await.expect("connects");

    let mut request = fixtures::request("svc", 1, 20, 40, fixtures::now_unix_nano());
    // One invalid span among the valid ones, and one larger than a record.
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans[3].span_id = vec![0; 8];
    spans[5].attributes.push(fixtures::attr("huge", &"x".repeat(8 * 1024)));
    let response = client.export(request.clone()).await.expect("export acknowledged").into_inner();
    let partial = response.partial_success.expect("partial success reported");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("span id") && partial.error_message.contains("max_message_bytes"),
        "{}",
        partial.error_message
    );

    let records = read_topic(&broker.bootstrap(), "otlp_spans").await.expect("read topic");
    let mut partition_of_trace: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut seen = Vec::new();
    for record in &records {
        assert!(record.payload.len() <= 4 * 1024, "record of {} bytes", record.payload.len());
        let spans = spans_in(&record.payload);
        assert!(!spans.is_empty());
        for (trace, span) in spans {
            let key = String::from_utf8(record.key.clone().expect("keyed")).expect("utf-8 key");
            assert_eq!(key, trace.iter().map(|b| format!("{b:02x}")).collect::<String>(), "key is the trace id hex");
            let p = *partition_of_trace.entry(trace.clone()).or_insert(record.partition);
            assert_eq!(p, record.partition, "a trace stays on one partition");
            seen.push(span);
        }
    }
    assert!(records.len() > 20, "traces were split: {} records", records.len());
    let mut want: Vec<Vec<u8>> =
        request.resource_spans[0].scope_spans[0].spans.iter().map(|s| s.span_id.clone()).collect();
    want.retain(|id| id != &vec![0; 8] && id != &fixtures::span_id(1_000_005));
    want.sort();
    seen.sort();
    assert_eq!(seen, want, "every accepted span exactly once");
    assert!(
        partition_of_trace.values().collect::<std::collections::HashSet<_>>().len() > 1,
        "traces spread over partitions"
    );
    let fallbacks = spanline_testkit::metric(running.admin_addr, "spanline_collector_decode_fallbacks_total", "")
        .await
        .expect("metrics");
    assert_eq!(fallbacks, 0.0, "a request as SDKs send it takes the byte path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_json_with_gzip_and_malformed_bodies() {
    use std::io::Write;
    let broker = broker().await;
    let running = spanline_collector::start(config(&broker), CancellationToken::new()).await.expect("starts");
    let url = format!("http://{}/v1/traces", running.http_addr);
    let json = serde_json::json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "j"}}]},
    "scopeSpans": [{"spans": [
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "ok", "startTimeUnixNano": "1", "endTimeUnixNano": "2"},
        {"traceId": "00000000000000000000000000000000", "spanId": "eee19b7ec3c1b175", "name": "bad", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
    ]}]}]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(json.to_string().as_bytes()).expect("gzip");
    let client = reqwest::Client::new();
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().expect("gzip"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["partialSuccess"]["rejectedSpans"], 1, "{body}");
    let records = read_topic(&broker.bootstrap(), "otlp_spans").await.expect("read");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key.as_deref(), Some(&b"5b8efff798038103d269b633813fc60c"[..]));
    let fallbacks = |reason: &'static str| {
        spanline_testkit::metric(
            running.admin_addr,
            "spanline_collector_decode_fallbacks_total",
            match reason {
                "json" => "reason=\"json\"",
                _ => "reason=\"encoding\"",
            },
        )
    };
    assert_eq!(fallbacks("json").await.expect("metrics"), 1.0, "JSON is decoded");

    let response = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff, 0xff, 0xff])
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    assert_eq!(fallbacks("encoding").await.expect("metrics"), 1.0, "prost gives the error");
    let response = client.post(&url).header("content-type", "text/plain").body("hi").send().await.expect("sent");
    assert_eq!(response.status(), 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_means_unavailable_never_success_and_success_again_after_restart() {
    let mut broker = broker().await;
    let mut c = config(&broker);
    c.kafka.delivery_timeout = Duration::from_secs(3);
    c.limits.request_timeout = Duration::from_secs(5);
    let shutdown = CancellationToken::new();
    let running = spanline_collector::start(c.clone(), shutdown.clone()).await.expect("starts");
    let mut client = TraceServiceClient::connect(format!("http://{}", running.grpc_addr)).await.expect("connects");
    client.export(fixtures::request("svc", 1, 2, 2, fixtures::now_unix_nano())).await.expect("first export while up");

    broker.kill();
    for first in [10, 12] {
        let status = client
            .export(fixtures::request("svc", first, 2, 2, fixtures::now_unix_nano()))
            .await
            .expect_err("no success while the broker is down");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    shutdown.cancel();
    running.task.await.expect("join").expect("stops even with kafka down");

    // Tansu 0.6.0's storage task dies when an idempotent producer that lived through its restart
    // resumes its sequence (every request then fails, Metadata included), so the producer that saw
    // the outage is not reused here; real Kafka resumes it (librdkafka epoch bump, KIP-360).
    broker.restart().await.expect("broker back");
    let running = spanline_collector::start(c, CancellationToken::new()).await.expect("starts again");
    let mut client = TraceServiceClient::connect(format!("http://{}", running.grpc_addr)).await.expect("connects");
    client.export(fixtures::request("svc", 20, 2, 2, fixtures::now_unix_nano())).await.expect("exports succeed again");
    let records = read_topic(&broker.bootstrap(), "otlp_spans").await.expect("read");
    let traces: std::collections::HashSet<Vec<u8>> = records.iter().filter_map(|r| r.key.clone()).collect();
    for t in [1, 2, 20, 21] {
        let key = fixtures::trace_id(t).iter().map(|b| format!("{b:02x}")).collect::<String>().into_bytes();
        assert!(traces.contains(&key), "acknowledged trace {t} is in the topic");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_with_the_same_ratio_keep_the_same_traces() {
    let broker = broker().await;
    broker.create_topic("sampled_a", 2).await.expect("topic");
    broker.create_topic("sampled_b", 2).await.expect("topic");
    let mut kept = Vec::new();
    for topic in ["sampled_a", "sampled_b"] {
        let mut c = config(&broker);
        c.kafka.topic = topic.into();
        c.processors.sampling_ratio = 0.3;
        let running = spanline_collector::start(c, CancellationToken::new()).await.expect("starts");
        let mut client = TraceServiceClient::connect(format!("http://{}", running.grpc_addr)).await.expect("connects");
        // Trace ids with random low bits, as SDKs make them.
        let mut request = fixtures::request("svc", 1, 300, 2, fixtures::now_unix_nano());
        for span in &mut request.resource_spans[0].scope_spans[0].spans {
            let n = u64::from_be_bytes(span.trace_id[8..].try_into().expect("8 bytes"));
            span.trace_id[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        }
        let response = client.export(request).await.expect("export").into_inner();
        assert!(response.partial_success.is_none(), "sampling is not a rejection");
        let records = read_topic(&broker.bootstrap(), topic).await.expect("read");
        let mut keys: Vec<Vec<u8>> = records.into_iter().filter_map(|r| r.key).collect();
        keys.sort();
        keys.dedup();
        kept.push(keys);
    }
    assert!((50..130).contains(&kept[0].len()), "about 30% of 300 traces kept: {}", kept[0].len());
    assert_eq!(kept[0], kept[1], "both collectors kept exactly the same traces");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_values_never_reach_kafka() {
    use spanline_collector::process::{RedactAction, RedactionRule};
    let broker = broker().await;
    let mut c = config(&broker);
    c.processors.redaction_hash_key = spanline_common::secret::Secret::new("k");
    c.processors.redaction = vec![
        RedactionRule { key: Some("user.email".into()), key_pattern: None, action: RedactAction::Mask },
        RedactionRule { key: None, key_pattern: Some("^secret\\.".into()), action: RedactAction::Drop },
        RedactionRule { key: Some("user.id".into()), key_pattern: None, action: RedactAction::Hash },
    ];
    let running = spanline_collector::start(c, CancellationToken::new()).await.expect("starts");
    let mut client = TraceServiceClient::connect(format!("http://{}", running.grpc_addr)).await.expect("connects");
    let mut request = fixtures::request("svc", 1, 3, 2, fixtures::now_unix_nano());
    request.resource_spans[0]
        .resource
        .as_mut()
        .expect("resource")
        .attributes
        .push(fixtures::attr("user.email", "alice@example.com"));
    for span in &mut request.resource_spans[0].scope_spans[0].spans {
        span.attributes.push(fixtures::attr("user.email", "alice@example.com"));
        span.attributes.push(fixtures::attr("secret.token", "tok-XYZZY"));
        span.attributes.push(fixtures::attr("user.id", "user-31337"));
    }
    client.export(request).await.expect("export");
    let records = read_topic(&broker.bootstrap(), "otlp_spans").await.expect("read");
    assert_eq!(records.len(), 3);
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for r in &records {
        assert!(!contains(&r.payload, b"alice@example.com"), "masked value reached kafka");
        assert!(
            !contains(&r.payload, b"tok-XYZZY") && !contains(&r.payload, b"secret.token"),
            "dropped attribute reached kafka"
        );
        assert!(!contains(&r.payload, b"user-31337"), "hashed value reached kafka in clear");
        assert!(contains(&r.payload, b"****") && contains(&r.payload, b"hmac-sha256:"));
    }
    let fallbacks = spanline_testkit::metric(
        running.admin_addr,
        "spanline_collector_decode_fallbacks_total",
        "reason=\"redaction\"",
    )
    .await
    .expect("metrics");
    assert_eq!(fallbacks, 1.0, "redaction needs the decoded request");
}

/// The records decode with an independent OTLP implementation: Python's `opentelemetry-proto`
/// (installed by scripts/install-deps.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_decode_with_pythons_opentelemetry_proto() {
    let broker = broker().await;
    let running = spanline_collector::start(config(&broker), CancellationToken::new()).await.expect("starts");
    let mut client = TraceServiceClient::connect(format!("http://{}", running.grpc_addr)).await.expect("connects");
    client.export(fixtures::request("py-svc", 7, 1, 3, fixtures::now_unix_nano())).await.expect("export");
    let records = read_topic(&broker.bootstrap(), "otlp_spans").await.expect("read");
    assert_eq!(records.len(), 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("record.bin");
    std::fs::write(&path, &records[0].payload).expect("write");
    let script = r#"
import sys
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
req = ExportTraceServiceRequest()
req.ParseFromString(open(sys.argv[1], "rb").read())
spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
service = [a.value.string_value for a in req.resource_spans[0].resource.attributes if a.key == "service.name"][0]
print(len(spans), spans[0].trace_id.hex(), service, req.resource_spans[0].scope_spans[0].scope.name)
"#;
    let out = std::process::Command::new("python3").args(["-c", script]).arg(&path).output().expect("python3 runs");
    assert!(out.status.success(), "python could not decode the record: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let key = String::from_utf8(records[0].key.clone().expect("key")).expect("utf-8");
    assert_eq!(text.trim(), format!("3 {key} py-svc spanline-fixtures"));
}

/// A message whose field 1 is a varint where OTLP has a length-delimited `resource_spans`.
#[derive(Clone, PartialEq, prost::Message)]
struct NotOtlp {
    #[prost(uint64, tag = "1")]
    value: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_body_is_invalid_argument() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    let broker = broker().await;
    let running = spanline_collector::start(config(&broker), CancellationToken::new()).await.expect("starts");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let codec = tonic_prost::ProstCodec::<NotOtlp, ExportTraceServiceResponse>::default();
    let status = grpc.unary(tonic::Request::new(NotOtlp { value: 7 }), path, codec).await.expect_err("malformed");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // The well-formed path is untouched.
    let mut client = TraceServiceClient::connect(format!("http://{}", running.grpc_addr)).await.expect("connects");
    client.export(fixtures::request("svc", 1, 1, 1, fixtures::now_unix_nano())).await.expect("valid export");
}

/// POSTs `request` as OTLP/HTTP protobuf to the collector at `addr`.
async fn post_protobuf(
    addr: std::net::SocketAddr,
    request: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{addr}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(prost::Message::encode_to_vec(request))
        .send()
        .await
        .expect("sent")
}

/// Past `limits.max_inflight_bytes` held by exports waiting for Kafka, exports are refused at once
/// with UNAVAILABLE / 503 + Retry-After instead of being buffered, and nothing is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_bytes_over_the_bound_are_refused_not_buffered() {
    let mut broker = broker().await;
    let mut c = config(&broker);
    c.kafka.max_message_bytes = spanline_common::ByteSize::kib(64);
    c.limits.max_request_bytes = spanline_common::ByteSize::kib(64);
    // One export of `big()` (a 62 KB body) peaks near 135 KB on the byte path: its body, the split's
    // tables (4 KB), then its 69 KB of records beside them; it then holds the records until Kafka
    // answers, and a second one no longer fits beside them.
    c.limits.max_inflight_bytes = spanline_common::ByteSize::kib(180);
    c.kafka.delivery_timeout = Duration::from_secs(5);
    c.limits.request_timeout = Duration::from_secs(8);
    let running = spanline_collector::start(c, CancellationToken::new()).await.expect("starts");
    // With the broker gone, the first export's records wait for Kafka and hold their bytes.
    broker.kill();
    let big = || {
        let mut request = fixtures::request("svc", 1, 10, 1, fixtures::now_unix_nano());
        for span in &mut request.resource_spans[0].scope_spans[0].spans {
            span.attributes.push(fixtures::attr("pad", &"x".repeat(6 * 1024)));
        }
        request
    };
    let addr = running.grpc_addr;
    let first = tokio::spawn(async move {
        let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.expect("connects");
        client.export(big()).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.expect("connects");
    let status = client.export(big()).await.expect_err("over the in-flight bound");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("max_inflight_bytes"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once, not after waiting");

    let response = post_protobuf(running.http_addr, &big()).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let first = first.await.expect("join");
    assert!(first.is_err(), "the export Kafka never acknowledged is not a success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_concurrent_requests_are_refused_at_once() {
    let mut broker = broker().await;
    let mut c = config(&broker);
    c.limits.max_concurrent_requests = 2;
    c.kafka.delivery_timeout = Duration::from_secs(5);
    c.limits.request_timeout = Duration::from_secs(8);
    let running = spanline_collector::start(c, CancellationToken::new()).await.expect("starts");
    // With the broker gone, two exports wait for Kafka and hold both slots.
    broker.kill();
    let addr = running.grpc_addr;
    let waiting: Vec<_> = (0..2)
        .map(|t| {
            tokio::spawn(async move {
                let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.expect("connects");
                client.export(fixtures::request("svc", t + 1, 1, 2, fixtures::now_unix_nano())).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.expect("connects");
    let status = client
        .export(fixtures::request("svc", 9, 1, 2, fixtures::now_unix_nano()))
        .await
        .expect_err("a third concurrent export is over the bound");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once, not queued");

    let response =
        post_protobuf(running.http_addr, &fixtures::request("svc", 10, 1, 2, fixtures::now_unix_nano())).await;
    assert_eq!(response.status(), 503, "HTTP shares the same slots");
    assert_eq!(response.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let shed =
        spanline_testkit::metric(running.admin_addr, "spanline_collector_requests_total", "outcome=\"overloaded\"")
            .await
            .expect("metrics");
    assert_eq!(shed, 2.0, "both refusals are counted");
    for w in waiting {
        assert!(w.await.expect("join").is_err(), "exports Kafka never acknowledged are not successes");
    }
}

/// A gRPC client that sends its headers and a few bytes of its message, then nothing: at
/// `limits.read_timeout` it gets DEADLINE_EXCEEDED, and meanwhile it holds no export slot (the only
/// one serves a normal export) and only the bytes it sent are charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_grpc_client_times_out_without_holding_a_slot() {
    use bytes::Bytes;
    use http_body_util::StreamBody;
    use tower::ServiceExt as _;
    let broker = broker().await;
    let mut c = config(&broker);
    c.limits.max_concurrent_requests = 1;
    c.limits.read_timeout = Duration::from_secs(2);
    let running = spanline_collector::start(c, CancellationToken::new()).await.expect("starts");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    // The gRPC frame announces 1 000 bytes; 5 arrive.
    let (tx, rx) = futures::channel::mpsc::channel::<Result<http_body::Frame<Bytes>, tonic::Status>>(4);
    let mut tx = tx;
    tx.try_send(Ok(http_body::Frame::data(Bytes::from_static(&[0, 0, 0, 3, 232, 10, 1, 2, 3, 4])))).expect("room");
    let request = tonic::codegen::http::Request::post(format!(
        "http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        running.grpc_addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(tonic::body::Body::new(StreamBody::new(rx)))
    .expect("request");
    let started = std::time::Instant::now();
    let slow = tokio::spawn(channel.clone().oneshot(request));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", running.grpc_addr)).await.expect("connects");
    client
        .export(fixtures::request("svc", 1, 1, 2, fixtures::now_unix_nano()))
        .await
        .expect("the only slot is free while the slow client trickles");

    let response = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the slow request is answered, not left hanging")
        .expect("join")
        .expect("answered");
    let status = tonic::Status::from_header_map(response.headers()).expect("a trailers-only status");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() >= Duration::from_secs(2) && started.elapsed() < Duration::from_secs(5));
    drop(tx);
}

/// A gRPC request over `limits.max_request_bytes`, uncompressed, is refused for good
/// (RESOURCE_EXHAUSTED), as over HTTP (413): tonic's own OUT_OF_RANGE would be retried by clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_grpc_request_is_resource_exhausted() {
    let broker = broker().await;
    let mut c = config(&broker);
    c.limits.max_request_bytes = spanline_common::ByteSize::mib(1);
    let running = spanline_collector::start(c, CancellationToken::new()).await.expect("starts");
    let mut request = fixtures::request("svc", 1, 1, 1, fixtures::now_unix_nano());
    request.resource_spans[0].scope_spans[0].spans[0].attributes.push(fixtures::attr("pad", &"a".repeat(2 << 20)));
    let mut client = TraceServiceClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connects")
        .max_encoding_message_size(usize::MAX);
    let status = client.export(request).await.expect_err("over the limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
}

/// Past `limits.max_connections` open connections over both ports a new one is closed at once, and a
/// connection that never sends a byte is closed at `limits.read_timeout`, freeing its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_bound_are_closed_and_silent_ones_time_out() {
    use std::io::{Read as _, Write as _};
    let broker = broker().await;
    let mut c = config(&broker);
    c.limits.max_connections = 2;
    c.limits.read_timeout = Duration::from_secs(2);
    let running = spanline_collector::start(c, CancellationToken::new()).await.expect("starts");
    let (http, grpc) = (running.http_addr, running.grpc_addr);
    // Two silent connections, one per port, take both places.
    let silent: Vec<std::net::TcpStream> =
        [http, grpc].iter().map(|a| std::net::TcpStream::connect(a).expect("connects")).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let mut third = std::net::TcpStream::connect(http).expect("accepted by the kernel");
    third.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = third.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    assert!(matches!(third.read(&mut buf), Ok(0) | Err(_)), "closed without an answer");
    assert!(started.elapsed() < Duration::from_secs(1), "closed at once, not after the read timeout");
    // The silent ones are closed at the read timeout; an export then gets a place.
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "a silent connection is closed");
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    let mut client = TraceServiceClient::connect(format!("http://{grpc}")).await.expect("connects");
    client.export(fixtures::request("svc", 1, 1, 1, fixtures::now_unix_nano())).await.expect("export after they left");
}

/// `[span_metrics]`: calls, errors and durations per service, span name, kind and status, counted
/// before sampling on both the byte path (gRPC protobuf) and the decode path (OTLP/JSON), in the
/// names and labels Jaeger's Monitor tab queries; invalid spans are not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_metrics_count_every_valid_span_before_sampling_on_both_paths() {
    let broker = broker().await;
    let mut c = config(&broker);
    c.span_metrics.enabled = true;
    c.processors.sampling_ratio = 0.5;
    let running = spanline_collector::start(c, CancellationToken::new()).await.expect("starts");
    let mut client = TraceServiceClient::connect(format!("http://{}", running.grpc_addr)).await.expect("connects");
    let mut request = fixtures::request("svc", 1, 10, 4, fixtures::now_unix_nano());
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    // Trace ids with random-looking low bits, which sampling decides on.
    for span in spans.iter_mut() {
        let h = spanline_common::ids::fnv64a(&[&span.trace_id]).to_be_bytes();
        span.trace_id = [h, h].concat();
    }
    for span in spans.iter_mut().take(2) {
        span.status = Some(opentelemetry_proto::tonic::trace::v1::Status { code: 2, ..Default::default() });
    }
    spans[7].span_id = vec![0; 8];
    client.export(request).await.expect("export acknowledged");

    let json = serde_json::json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
    "scopeSpans": [{"spans": [
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "get", "kind": 3, "startTimeUnixNano": "1000000", "endTimeUnixNano": "8000000"},
        {"traceId": "6b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175", "name": "get", "kind": 3, "startTimeUnixNano": "1000000", "endTimeUnixNano": "1500000"}
    ]}]}]});
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", running.http_addr))
        .header("content-type", "application/json")
        .body(json.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);

    let metric = |name: &'static str, labels: &'static str| spanline_testkit::metric(running.admin_addr, name, labels);
    let calls = "traces_span_metrics_calls_total";
    assert_eq!(metric(calls, r#"service_name="svc""#).await.expect("metrics"), 39.0, "40 spans, one invalid");
    assert_eq!(
        metric(
            calls,
            r#"service_name="svc",span_name="operation-0",span_kind="SPAN_KIND_SERVER",status_code="STATUS_CODE_ERROR""#
        )
        .await
        .expect("metrics"),
        1.0
    );
    assert_eq!(metric(calls, r#"status_code="STATUS_CODE_ERROR""#).await.expect("metrics"), 2.0);
    assert_eq!(
        metric(calls, r#"service_name="json-svc",span_name="get",span_kind="SPAN_KIND_CLIENT""#)
            .await
            .expect("metrics"),
        2.0
    );
    let count = "traces_span_metrics_duration_milliseconds_count";
    assert_eq!(metric(count, r#"service_name="svc""#).await.expect("metrics"), 39.0);
    // 7 ms and 0.5 ms: one in the 8 ms bucket's range, both under 10 ms.
    let bucket = "traces_span_metrics_duration_milliseconds_bucket";
    assert_eq!(metric(bucket, r#"le="2.0",service_name="json-svc",span_name="get",span_kind="SPAN_KIND_CLIENT",status_code="STATUS_CODE_UNSET""#).await.expect("metrics"), 1.0);
    assert_eq!(metric(bucket, r#"le="8.0",service_name="json-svc",span_name="get",span_kind="SPAN_KIND_CLIENT",status_code="STATUS_CODE_UNSET""#).await.expect("metrics"), 2.0);
    // Sampling kept about half of the traces in the topic; the metrics counted all of them.
    let records = read_topic(&broker.bootstrap(), "otlp_spans").await.expect("read");
    let in_topic: usize = records.iter().map(|r| spans_in(&r.payload).len()).sum();
    assert!(in_topic < 41, "sampling left spans out of the topic: {in_topic}");
    let sampled_out = metric("spanline_collector_spans_total", r#"outcome="sampled_out""#).await.expect("metrics");
    let rejected = metric("spanline_collector_spans_total", r#"outcome="rejected""#).await.expect("metrics");
    assert!(sampled_out > 0.0);
    assert_eq!(in_topic as f64 + sampled_out + rejected, 42.0, "every span in the topic, sampled out or rejected");
}
