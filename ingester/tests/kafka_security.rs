//! The ingester consuming from a secured broker (Tansu with a SCRAM-SHA-512 user, behind the test
//! kit's TLS terminator) through `[kafka.tls]` and `[kafka.sasl]`: every span is indexed once.

mod common;

use std::time::Duration;

use spanline_common::kafka::SaslMechanism;
use spanline_testkit::{
    Broker, SecureBroker,
    certs::Pki,
    devstore, exactly_once, fixtures, produce_with,
    secure::{TlsFiles, User},
};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingester_with_tls_and_scram_indexes_every_span() {
    let dir = tempfile::tempdir().expect("temp");
    let pki = Pki::write(dir.path());
    let broker = Broker::start_secured(SecureBroker {
        tls: Some(TlsFiles { cert: pki.server.cert.clone(), key: pki.server.key.clone(), ca: pki.ca.clone() }),
        users: vec![User {
            mechanism: SaslMechanism::ScramSha512,
            name: "ingester".into(),
            password: "pw-5e1b".into(),
        }],
    })
    .await
    .expect("secured broker starts");
    broker.create_topic("otlp_spans", 3).await.expect("topic");
    broker.create_topic("otlp_spans_dlq", 3).await.expect("dead-letter topic");
    let kafka = broker.client_config();
    assert_eq!(kafka.security_protocol(), "SASL_SSL");
    produce_with(&kafka, "otlp_spans", &fixtures::trace_records("svc", 1, 100, 5, fixtures::now_unix_nano()))
        .await
        .expect("produced");

    let store = devstore().await.expect("store");
    let mut c = common::config(&broker, &store.url());
    c.kafka.brokers.clone_from(&kafka.brokers);
    c.kafka.tls = kafka.tls.clone();
    c.kafka.sasl = kafka.sasl.clone();
    spanline_common::config::Validate::validate(&c).expect("valid");
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    let conflicts =
        exactly_once(&store.url(), &fixtures::span_keys(1, 100, 5), Duration::from_secs(60)).await.expect("every span");
    assert_eq!(conflicts, 0, "no span written twice");
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}
