//! The collector against a secured broker (Tansu with SASL SCRAM users, behind the test kit's TLS
//! terminator): with the right `[kafka.tls]`/`[kafka.sasl]` every acknowledged span is in the
//! topic; with a wrong password, a CA that did not sign the broker's certificate or no TLS at all,
//! nothing is acknowledged, nothing reaches the topic, and no password shows in a log line or an
//! error. What Tansu 0.6.0 supports is written down in docs/security.md ("Kafka").

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, trace_service_client::TraceServiceClient,
};
use prost::Message;
use spanline_common::{
    kafka::{KafkaClientConfig, SaslMechanism},
    secret::Secret,
};
use spanline_testkit::{
    Broker, SecureBroker,
    certs::Pki,
    fixtures, read_topic_with,
    secure::{TlsFiles, User},
};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "right-pw-7f3a9c";
const WRONG: &str = "wrong-pw-c41d0e";

/// Every log line of this test binary, librdkafka's too.
fn logs() {
    spanline_testkit::logs::capture(tracing::Level::DEBUG);
}

fn log_text() -> String {
    spanline_testkit::logs::text()
}

/// A broker with one SCRAM user (`mechanism`, password [`PASSWORD`]), behind TLS when `tls`, and the
/// span topic; the PKI's directory lives as long as the broker.
async fn secured(mechanism: SaslMechanism, tls: bool) -> (Broker, Pki, tempfile::TempDir) {
    logs();
    let dir = tempfile::tempdir().expect("temp");
    let pki = Pki::write(dir.path());
    let settings = SecureBroker {
        tls: tls.then(|| TlsFiles { cert: pki.server.cert.clone(), key: pki.server.key.clone(), ca: pki.ca.clone() }),
        users: vec![User { mechanism, name: "collector".into(), password: PASSWORD.into() }],
    };
    let broker = Broker::start_secured(settings).await.expect("secured broker starts");
    broker.create_topic("otlp_spans", 2).await.expect("topic");
    (broker, pki, dir)
}

/// A collector configuration reaching Kafka with `kafka`'s brokers, TLS and SASL settings.
fn config(kafka: &KafkaClientConfig) -> spanline_collector::Config {
    let mut c = spanline_collector::Config::default();
    c.receivers.grpc_listen = "127.0.0.1:0".parse().expect("addr");
    c.receivers.http_listen = "127.0.0.1:0".parse().expect("addr");
    c.admin.listen = "127.0.0.1:0".parse().expect("addr");
    c.kafka.brokers.clone_from(&kafka.brokers);
    c.kafka.tls = kafka.tls.clone();
    c.kafka.sasl = kafka.sasl.clone();
    c.kafka.delivery_timeout = Duration::from_secs(4);
    c.limits.request_timeout = Duration::from_secs(8);
    spanline_common::config::Validate::validate(&c).expect("test configuration is valid");
    c
}

fn spans_in(records: &[spanline_testkit::ReadRecord]) -> usize {
    records
        .iter()
        .map(|r| {
            let request = ExportTraceServiceRequest::decode(r.payload.as_slice()).expect("OTLP protobuf");
            request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum::<usize>()
        })
        .sum()
}

/// Exports 3 requests of 10 traces × 5 spans through a collector configured with `kafka`, and
/// checks all 150 spans are in the topic (read with the broker's own client settings).
async fn delivers(broker: &Broker, kafka: &KafkaClientConfig) {
    let running = spanline_collector::start(config(kafka), CancellationToken::new()).await.expect("starts");
    let mut client = TraceServiceClient::connect(format!("http://{}", running.grpc_addr)).await.expect("connects");
    for first in [1, 11, 21] {
        client.export(fixtures::request("svc", first, 10, 5, fixtures::now_unix_nano())).await.expect("acknowledged");
    }
    let records = read_topic_with(&broker.client_config(), "otlp_spans").await.expect("read topic");
    assert_eq!(spans_in(&records), 150, "every acknowledged span is in the topic");
    let ready = reqwest::get(format!("http://{}/health/ready", running.admin_addr)).await.expect("admin answers");
    assert!(ready.status().is_success(), "ready once kafka answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_scram_sha_512_delivers_every_span() {
    let (broker, _pki, _dir) = secured(SaslMechanism::ScramSha512, true).await;
    let kafka = broker.client_config();
    assert_eq!(kafka.security_protocol(), "SASL_SSL");
    delivers(&broker, &kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256_over_plaintext_with_the_password_in_a_file_delivers_every_span() {
    let (broker, _pki, dir) = secured(SaslMechanism::ScramSha256, false).await;
    let mut kafka = broker.client_config();
    assert_eq!(kafka.security_protocol(), "SASL_PLAINTEXT");
    let file = dir.path().join("kafka-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).expect("write");
    kafka.sasl.password = Secret::default();
    kafka.sasl.password_file = file.display().to_string();
    delivers(&broker, &kafka).await;
}

/// A collector with `kafka` gets nothing acknowledged: the export fails with UNAVAILABLE, readiness
/// stays false, the topic stays empty (read with `reader`'s settings), and neither password appears
/// in the logs or the error.
async fn refused(kafka: &KafkaClientConfig, reader: &KafkaClientConfig) -> String {
    let running = spanline_collector::start(config(kafka), CancellationToken::new()).await.expect("starts");
    let mut client = TraceServiceClient::connect(format!("http://{}", running.grpc_addr)).await.expect("connects");
    let status = client
        .export(fixtures::request("svc", 1, 4, 5, fixtures::now_unix_nano()))
        .await
        .expect_err("never acknowledged");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let ready = reqwest::get(format!("http://{}/health/ready", running.admin_addr)).await.expect("admin answers");
    assert!(!ready.status().is_success(), "not ready while kafka refuses the client");
    let records = read_topic_with(reader, "otlp_spans").await.expect("read topic");
    assert_eq!(records.len(), 0, "nothing reached the topic");
    let logs = log_text();
    for secret in [PASSWORD, WRONG] {
        assert!(!status.message().contains(secret), "{status:?}");
        assert!(!logs.contains(secret), "a password is in the logs");
    }
    status.message().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_and_never_shown() {
    let (broker, _pki, _dir) = secured(SaslMechanism::ScramSha512, true).await;
    let mut kafka = broker.client_config();
    kafka.sasl.password = Secret::new(WRONG);
    refused(&kafka, &broker.client_config()).await;
    let logs = log_text();
    assert!(logs.contains("SASL") && logs.contains("authentication failed"), "librdkafka says why:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_another_ca_is_refused() {
    let (broker, pki, _dir) = secured(SaslMechanism::ScramSha512, true).await;
    let mut kafka = broker.client_config();
    kafka.tls.ca_file = pki.rogue_ca.display().to_string();
    refused(&kafka, &broker.client_config()).await;
    let logs = log_text();
    assert!(logs.contains("certificate verify failed"), "librdkafka says why:\n{logs}");
    assert!(!broker.tls_refusals().is_empty(), "the handshake failed at the terminator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_to_the_tls_listener_is_refused() {
    let (broker, _pki, _dir) = secured(SaslMechanism::ScramSha512, true).await;
    let mut kafka = broker.client_config();
    kafka.tls = Default::default();
    assert_eq!(kafka.security_protocol(), "SASL_PLAINTEXT");
    refused(&kafka, &broker.client_config()).await;
    assert!(!broker.tls_refusals().is_empty(), "the terminator saw no TLS handshake: {:?}", broker.tls_refusals());
}

/// Tansu 0.6.0 offers SCRAM only: a PLAIN client is disconnected at the SASL handshake
/// (`Auth(Sasl(NoSharedMechanism))` in its log), so `PLAIN` is mapped and unit-tested but cannot be
/// shown delivering here. What the test shows is that such a client is refused cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_is_not_offered_by_tansu_and_is_refused() {
    let (broker, _pki, _dir) = secured(SaslMechanism::ScramSha512, true).await;
    let mut kafka = broker.client_config();
    kafka.sasl.mechanism = SaslMechanism::Plain;
    refused(&kafka, &broker.client_config()).await;
    let logs = log_text();
    assert!(logs.contains("SASL PLAIN mechanism handshake failed"), "librdkafka says why:\n{logs}");
    assert!(broker.log().contains("NoSharedMechanism"), "tansu says why:\n{}", broker.log());
}

/// A broker certificate from the trusted CA naming another host: librdkafka's host-name check
/// (`ssl.endpoint.identification.algorithm = https`, its default) refuses it; with the check off the
/// same broker would be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_for_another_host_is_refused() {
    logs();
    let dir = tempfile::tempdir().expect("temp");
    let pki = Pki::write(dir.path());
    let elsewhere = pki.authority.server_named("other.example");
    let (cert, key) = (dir.path().join("elsewhere.pem"), dir.path().join("elsewhere.key"));
    std::fs::write(&cert, &elsewhere.cert).expect("write");
    std::fs::write(&key, &elsewhere.key).expect("write");
    let settings = SecureBroker {
        tls: Some(TlsFiles { cert, key, ca: pki.ca.clone() }),
        users: vec![User {
            mechanism: SaslMechanism::ScramSha512,
            name: "collector".into(),
            password: PASSWORD.into(),
        }],
    };
    let broker = Broker::start_secured(settings).await.expect("secured broker starts");
    // The test's own clients skip the host-name check, to reach the broker at all.
    let mut unchecked = broker.client_config();
    unchecked.librdkafka.insert("ssl.endpoint.identification.algorithm".into(), "none".into());
    spanline_testkit::create_topic_with(&unchecked, "otlp_spans", 2).await.expect("topic");

    refused(&broker.client_config(), &unchecked).await;
}
