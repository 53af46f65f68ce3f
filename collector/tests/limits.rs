//! Decompression bombs against the real binary: refused with 413 / RESOURCE_EXHAUSTED, and the
//! collector process's peak memory stays far below what the bomb inflates to.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use spanline_testkit::{
    Broker, fixtures, free_port,
    process::{Killed, peak_rss_of},
    wait_for,
};
use tonic::codec::CompressionEncoding;

/// What a bomb inflates to.
const INFLATED: usize = 256 << 20;
/// The collector's decompressed-body limit in this test.
const LIMIT: usize = 4 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused_without_inflating() {
    let broker = Broker::start().await.expect("broker");
    broker.create_topic("otlp_spans", 1).await.expect("topic");
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_spanline-collector"))
        .env("SPANLINE_COLLECTOR__KAFKA__BROKERS", broker.bootstrap())
        .env("SPANLINE_COLLECTOR__RECEIVERS__GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("SPANLINE_COLLECTOR__RECEIVERS__HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("SPANLINE_COLLECTOR__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .env("SPANLINE_COLLECTOR__LIMITS__MAX_REQUEST_BYTES", LIMIT.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("collector binary starts");
    let collector = Killed(child);
    wait_for(Duration::from_secs(30), || async move {
        reqwest::get(format!("http://127.0.0.1:{admin}/health/ready")).await.ok().filter(|r| r.status().is_success())
    })
    .await
    .expect("collector ready");
    let baseline = peak_rss_of(collector.id());

    // OTLP HTTP: a gzip body that inflates to 256 MiB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; INFLATED]).expect("gzip");
    let bomb = gz.finish().expect("gzip");
    assert!(bomb.len() < LIMIT, "the compressed bomb itself is under the limit");
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 413);

    // OTLP gRPC: one gzip-compressed message that inflates to 256 MiB.
    let mut request = fixtures::request("svc", 1, 1, 1, fixtures::now_unix_nano());
    request.resource_spans[0].scope_spans[0].spans[0].attributes.push(fixtures::attr("pad", &"a".repeat(INFLATED)));
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("connects")
        .send_compressed(CompressionEncoding::Gzip)
        .max_encoding_message_size(usize::MAX);
    let status = client.export(request).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    let peak = peak_rss_of(collector.id());
    eprintln!("collector peak rss: baseline {} MiB, after bombs {} MiB", baseline >> 20, peak >> 20);
    assert!(
        peak < baseline + 3 * LIMIT as u64 + (16 << 20),
        "collector peak RSS grew from {} MiB to {} MiB for a {} MiB bomb",
        baseline >> 20,
        peak >> 20,
        INFLATED >> 20
    );
    // Still serving.
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await.expect("connects");
    client
        .export(fixtures::request("svc", 2, 1, 1, fixtures::now_unix_nano()))
        .await
        .expect("normal export after the bombs");
}
