//! The whole pipeline with every hop secured at once, as the release binaries run it from their
//! configuration files: a sender reaches the collector over mTLS with a bearer token; the collector
//! and the ingester reach the broker (Tansu with a SCRAM-SHA-512 user, behind the test kit's TLS
//! terminator: Tansu 0.6.0 serves no TLS itself, docs/security.md) over TLS with SASL; the ingester
//! reaches the dev store over TLS with basic auth. Every secret comes from a file. Every span the
//! collector acknowledged is indexed exactly once, a refused sender's spans nowhere; then both
//! processes stop on SIGTERM and every line they logged at debug level (librdkafka's own security,
//! broker and configuration debugging included), and their metrics, are searched for every secret
//! used: none appears.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, trace_service_client::TraceServiceClient,
};
use spanline_common::{kafka::SaslMechanism, tls::ServerTls};
use spanline_devstore::{AuthSettings, Settings};
use spanline_testkit::{
    Broker, SecureBroker,
    certs::Pki,
    devstore_with, exactly_once, fixtures, free_ports,
    process::{Killed, refused_at_start, release_bin},
    secure::{TlsFiles, User},
    wait_for,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const KAFKA_PASSWORD: &str = "kafka-Pa55-31f0c2d9e4";
const STORE_PASSWORD: &str = "store-Pa55-8a7e61b0c3";
const TOKEN: &str = "otlp-token-5d2c9e41a7b8";
const WRONG_TOKEN: &str = "otlp-token-wrong-77aa01";
const HASH_KEY: &str = "hmac-key-0f9b3c77d1e2";
const STORE_USER: &str = "spanline-writer";

const TRACES_PER_REQUEST: u64 = 5;
const SPANS_PER_TRACE: u64 = 4;
const REQUESTS: u64 = 20;

fn put(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).expect("write");
    path
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// A release binary run with `--config file`, its log (at debug level) in `log`.
fn spawn(binary: &str, config: &Path, log: &Path) -> Killed {
    Killed(
        Command::new(release_bin(binary))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("starts"),
    )
}

/// Waits until `child` says it is ready on `admin`, and checks it is `child` that answered: a
/// process that stopped at start (its log shows why) is a failure, not someone else's answer.
async fn ready(admin: SocketAddr, child: &mut Killed, log: &Path) {
    let answered = wait_for(Duration::from_secs(60), || async move {
        reqwest::get(format!("http://{admin}/health/ready")).await.ok().filter(|r| r.status().is_success())
    })
    .await;
    let exited = child.try_wait().expect("try_wait");
    if answered.is_err() || exited.is_some() {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!("{admin} not ready ({answered:?}), exit {exited:?}; log:\n{log}");
    }
}

/// SIGTERM, and the exit status once stopped.
async fn stop(mut child: Killed) -> std::process::ExitStatus {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    tokio::task::spawn_blocking(move || child.0.wait().expect("wait")).await.expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hop_secured_at_once_indexes_every_acknowledged_span_and_no_secret_is_ever_written() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let pki = Pki::write(d);
    let kafka_password = put(d, "kafka-password", KAFKA_PASSWORD);
    let store_password = put(d, "store-password", STORE_PASSWORD);
    let tokens = put(d, "tokens", TOKEN);
    let hash_key = put(d, "hash-key", HASH_KEY);

    let broker = Broker::start_secured(SecureBroker {
        tls: Some(TlsFiles { cert: pki.server.cert.clone(), key: pki.server.key.clone(), ca: pki.ca.clone() }),
        users: vec![User {
            mechanism: SaslMechanism::ScramSha512,
            name: "spanline".into(),
            password: KAFKA_PASSWORD.into(),
        }],
    })
    .await
    .expect("secured broker");
    broker.create_topic("otlp_spans", 3).await.expect("topic");
    broker.create_topic("otlp_spans_dlq", 3).await.expect("dead-letter topic");
    let kafka = broker.client_config();
    assert_eq!(kafka.security_protocol(), "SASL_SSL");

    let store = devstore_with(Settings {
        refresh_interval: Duration::from_millis(100),
        tls: ServerTls { cert_file: shown(&pki.server.cert), key_file: shown(&pki.server.key), ..ServerTls::default() },
        auth: AuthSettings {
            basic_user: Some(STORE_USER.into()),
            basic_password_file: Some(store_password.clone()),
            api_key_file: None,
        },
        open_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..Settings::default()
    })
    .await
    .expect("secured store");
    let open = store.open_url().expect("open listener");

    let kafka_section = format!(
        "brokers = \"{brokers}\"\n[kafka.tls]\nenabled = true\nca_file = \"{ca}\"\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"spanline\"\npassword_file = \"{password}\"\n[kafka.librdkafka]\ndebug = \"security,broker,conf\"\n",
        brokers = kafka.brokers,
        ca = shown(&pki.ca),
        password = shown(&kafka_password),
    );
    let [grpc, http, collector_admin, ingester_admin] = free_ports::<4>();
    let collector_config = put(
        d,
        "collector.toml",
        &format!(
            r#"[receivers]
grpc_listen = "127.0.0.1:{grpc}"
http_listen = "127.0.0.1:{http}"
[receivers.tls]
cert_file = "{cert}"
key_file = "{key}"
client_ca_file = "{ca}"
[receivers.auth]
bearer_tokens_file = "{tokens}"
[kafka]
{kafka_section}
[processors]
redaction_hash_key_file = "{hash_key}"
[[processors.redaction]]
key = "host.name"
action = "hash"
[admin]
listen = "127.0.0.1:{collector_admin}"
"#,
            cert = shown(&pki.server.cert),
            key = shown(&pki.server.key),
            ca = shown(&pki.ca),
            tokens = shown(&tokens),
            hash_key = shown(&hash_key),
        ),
    );
    let ingester_config = put(
        d,
        "ingester.toml",
        &format!(
            r#"shutdown_grace = "5s"
[kafka]
session_timeout = "6s"
drain_deadline = "3s"
{kafka_section}
[opensearch]
url = "{url}"
ca_file = "{ca}"
username = "{STORE_USER}"
password_file = "{password}"
[batch]
max_docs = 200
flush_interval = "200ms"
[admin]
listen = "127.0.0.1:{ingester_admin}"
"#,
            url = store.url(),
            ca = shown(&pki.ca),
            password = shown(&store_password),
        ),
    );
    assert!(store.url().starts_with("https://"), "the ingester talks to the TLS listener");

    let collector_log = d.join("collector.log");
    let ingester_log = d.join("ingester.log");
    let mut collector = spawn("spanline-collector", &collector_config, &collector_log);
    let mut ingester = spawn("spanline-ingester", &ingester_config, &ingester_log);
    let collector_admin = SocketAddr::from(([127, 0, 0, 1], collector_admin));
    let ingester_admin = SocketAddr::from(([127, 0, 0, 1], ingester_admin));
    ready(collector_admin, &mut collector, &collector_log).await;
    ready(ingester_admin, &mut ingester, &ingester_log).await;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).expect("ca")))
        .identity(Identity::from_pem(
            std::fs::read(&pki.client.cert).expect("cert"),
            std::fs::read(&pki.client.key).expect("key"),
        ))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{grpc}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(&collector_log).unwrap_or_default();
            panic!("mTLS connects: {e}; collector log:\n{log}")
        });
    let mut client = TraceServiceClient::new(channel);
    let export = |request: ExportTraceServiceRequest, token: &str| {
        let mut request = tonic::Request::new(request);
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("metadata"));
        request
    };
    let now = fixtures::now_unix_nano();
    for r in 0..REQUESTS {
        let request = fixtures::request("secure", 1 + r * TRACES_PER_REQUEST, TRACES_PER_REQUEST, SPANS_PER_TRACE, now);
        let response = client.export(export(request, TOKEN)).await.expect("acknowledged").into_inner();
        assert!(response.partial_success.is_none_or(|p| p.rejected_spans == 0));
    }
    // A sender with the wrong token: refused, and none of its spans may turn up.
    let refused = fixtures::request("secure", 10_000, TRACES_PER_REQUEST, SPANS_PER_TRACE, now);
    let status = client.export(export(refused, WRONG_TOKEN)).await.expect_err("wrong token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let expected = fixtures::span_keys(1, REQUESTS * TRACES_PER_REQUEST, SPANS_PER_TRACE);
    assert_eq!(expected.len(), 400);
    let conflicts =
        exactly_once(&open, &expected, Duration::from_secs(60)).await.expect("every acknowledged span, once");
    assert_eq!(conflicts, 0, "no span written twice");
    // The redaction key came from its file: the host name is an HMAC, not the name.
    let documents = spanline_testkit::documents(&open, "jaeger-span-*").await.expect("documents");
    let text = serde_json::to_string(&documents).expect("json");
    assert!(text.contains("hmac-sha256:") && !text.contains("test-host"), "host.name hashed with the file's key");

    let mut metrics = String::new();
    for admin in [collector_admin, ingester_admin] {
        metrics += &reqwest::get(format!("http://{admin}/metrics")).await.expect("metrics").text().await.expect("text");
    }
    assert!(stop(collector).await.success(), "the collector stops cleanly");
    assert!(stop(ingester).await.success(), "the ingester stops cleanly");

    let logs = [&collector_log, &ingester_log].map(|p| std::fs::read_to_string(p).expect("log"));
    for (log, what) in logs.iter().zip(["collector", "ingester"]) {
        assert!(log.lines().count() > 20, "the {what} logged at debug level");
        assert!(log.contains("SASL_SSL") || log.contains("sasl_ssl"), "the {what} says how it reaches kafka");
        assert!(
            log.lines().any(|l| l.contains("librdkafka") && l.contains("facility=\"SASLMECHS\"")),
            "the {what}'s log holds librdkafka's own security debugging"
        );
    }
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{STORE_USER}:{STORE_PASSWORD}"));
    for secret in [KAFKA_PASSWORD, STORE_PASSWORD, TOKEN, WRONG_TOKEN, HASH_KEY, basic.as_str()] {
        for (text, what) in logs.iter().map(|l| (l.as_str(), "a log")).chain([(metrics.as_str(), "the metrics")]) {
            assert!(!text.contains(secret), "a secret is in {what}");
        }
    }
}

/// Bad security settings stop the release ingester at start with a message naming the setting, and
/// never the secret: credentials for an `http://` store, and a librdkafka override that would
/// commit spans never indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_ingester_refuses_unsafe_settings_naming_the_key_never_the_secret() {
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[
                ("SPANLINE_INGESTER__OPENSEARCH__URL", "http://127.0.0.1:9"),
                ("SPANLINE_INGESTER__OPENSEARCH__USERNAME", STORE_USER),
                ("SPANLINE_INGESTER__OPENSEARCH__PASSWORD", STORE_PASSWORD),
            ],
            "allow_credentials_over_http",
        ),
        (&[("SPANLINE_INGESTER__KAFKA__LIBRDKAFKA__ENABLE_AUTO_OFFSET_STORE", "true")], "enable.auto.offset.store"),
        (
            &[
                ("SPANLINE_INGESTER__KAFKA__SASL__MECHANISM", "SCRAM-SHA-512"),
                ("SPANLINE_INGESTER__KAFKA__SASL__USERNAME", "spanline"),
                ("SPANLINE_INGESTER__KAFKA__SASL__PASSWORD", KAFKA_PASSWORD),
                ("SPANLINE_INGESTER__KAFKA__LIBRDKAFKA__SASL_PASSWORD", KAFKA_PASSWORD),
            ],
            "sasl.password",
        ),
    ];
    for (env, named) in cases {
        let text = refused_at_start("spanline-ingester", env);
        assert!(text.contains(named), "{named} named: {text}");
        for secret in [STORE_PASSWORD, KAFKA_PASSWORD] {
            assert!(!text.contains(secret), "{named}: a secret printed: {text}");
        }
    }
}
