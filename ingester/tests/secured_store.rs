//! The ingester against a secured store (issue 14, the OpenSearch hop), with a real broker (Tansu)
//! and the dev store serving TLS with the generated test PKI and requiring basic auth like
//! OpenSearch's security plugin: with the right CA and password every span is indexed exactly once;
//! a wrong password, a rotated one or a server certificate from another CA holds every offset and
//! turns readiness false (`stalled{cause="store_refusing"}`, a refusal counted and logged with
//! what to check) until the file is fixed, without a restart; a client certificate passes mTLS, and
//! an API key file is accepted.
//! Every test's log output is captured and searched for the passwords: they never appear.
//!
//! The dev store's open listener (plain HTTP, no authentication) is where the tests count and read
//! documents; the ingester only ever talks to the secured one.

mod common;

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use spanline_common::tls::ServerTls;
use spanline_devstore::{AuthSettings, Settings};
use spanline_testkit::{
    Broker, certs::Pki, committed_sum, devstore_with, exactly_once, fixtures, metric, produce, wait_for,
};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 3;
const USER: &str = "spanline-writer";
const RIGHT: &str = "right-Pa55word-4e1f";
const WRONG: &str = "wrong-Pa55word-9c2b";
const ROTATED: &str = "rotated-Pa55word-77aa";

/// Every log line of this test binary, at debug level.
fn logs() {
    spanline_testkit::logs::capture(tracing::Level::DEBUG);
}

fn captured() -> String {
    spanline_testkit::logs::text()
}

/// No password, nor a basic-auth header made of one, was ever logged.
fn assert_no_secret_logged() {
    use base64::Engine as _;
    let text = captured();
    for password in [RIGHT, WRONG, ROTATED] {
        let header = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
        assert!(!text.contains(password), "the password {password} was logged");
        assert!(!text.contains(&header), "a basic-auth header was logged");
    }
}

fn write(path: &Path, text: &str) {
    let mut file = std::fs::File::create(path).expect("create");
    writeln!(file, "{text}").expect("write");
}

async fn ready(admin: SocketAddr) -> bool {
    reqwest::get(format!("http://{admin}/health/ready")).await.is_ok_and(|r| r.status().is_success())
}

async fn broker() -> Broker {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", PARTITIONS).await.expect("topic");
    broker.create_topic("otlp_spans_dlq", PARTITIONS).await.expect("dlq topic");
    broker
}

/// A dev store serving `cert`/`key` over TLS (client certificates required when `client_ca`),
/// with basic auth for [`USER`] and the password in `password_file` when given, plus an open
/// listener for the test's own reads.
async fn secured_store(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    password_file: Option<&Path>,
) -> spanline_devstore::Running {
    let shown = |p: &Path| p.display().to_string();
    devstore_with(Settings {
        refresh_interval: Duration::from_millis(100),
        tls: ServerTls {
            cert_file: shown(cert),
            key_file: shown(key),
            client_ca_file: client_ca.map(shown).unwrap_or_default(),
            ..ServerTls::default()
        },
        auth: AuthSettings {
            basic_user: password_file.map(|_| USER.to_owned()),
            basic_password_file: password_file.map(Path::to_path_buf),
            api_key_file: None,
        },
        open_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..Settings::default()
    })
    .await
    .expect("secured store starts")
}

/// The test configuration for the secured store at `url`, trusting `ca`, with basic auth from
/// `password_file` when given, credentials read again every second.
fn config(broker: &Broker, url: &str, ca: &Path, password_file: Option<&PathBuf>) -> spanline_ingester::Config {
    let mut c = common::config(broker, url);
    c.opensearch.ca_file = ca.display().to_string();
    if let Some(file) = password_file {
        c.opensearch.username = USER.into();
        c.opensearch.password_file = file.display().to_string();
    }
    c.opensearch.credentials_reload_interval = Duration::from_secs(1);
    c.batch.max_docs = 50;
    c.batch.flush_interval = Duration::from_millis(200);
    spanline_common::config::Validate::validate(&c).expect("secured configuration is valid");
    c
}

async fn committed_reaches(broker: &Broker, produced: usize) {
    let produced = i64::try_from(produced).expect("count");
    wait_for(Duration::from_secs(30), || {
        let bootstrap = broker.bootstrap();
        async move {
            (committed_sum(&bootstrap, "spanline-ingester", "otlp_spans", PARTITIONS).ok()? == produced).then_some(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("committed offsets reach the {produced} records produced: {e}"));
}

/// While the store is refused: nothing indexed or committed, not ready, stalled on the store, and
/// the refusal counted under `labels`.
async fn assert_held(broker: &Broker, open_url: &str, admin: SocketAddr, labels: &str) {
    wait_for(Duration::from_secs(30), || async move {
        (metric(admin, "spanline_ingester_bulk_refusals_total", labels).await.ok()? > 0.0).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("the refusal is counted under {labels}: {e}"));
    assert!(
        metric(admin, "spanline_ingester_stalled", "cause=\"store_refusing\"").await.expect("metrics") > 0.0,
        "stalled on the store"
    );
    assert!(!ready(admin).await, "not ready while the store refuses");
    assert_eq!(
        committed_sum(&broker.bootstrap(), "spanline-ingester", "otlp_spans", PARTITIONS).expect("committed"),
        0,
        "no offset passes what is durable"
    );
    assert_eq!(spanline_testkit::count(open_url, "jaeger-span-*").await.expect("count"), 0, "nothing stored");
}

async fn ready_again(admin: SocketAddr) {
    wait_for(Duration::from_secs(10), || async move { ready(admin).await.then_some(()) })
        .await
        .expect("ready again once the store accepts");
    assert_eq!(metric(admin, "spanline_ingester_stalled", "cause=\"store_refusing\"").await.expect("metrics"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_basic_auth_index_every_span_once() {
    logs();
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::write(dir.path());
    let store_password = dir.path().join("store-password");
    write(&store_password, RIGHT);
    let ingester_password = dir.path().join("ingester-password");
    write(&ingester_password, RIGHT);
    let broker = broker().await;
    let store = secured_store(&pki.server.cert, &pki.server.key, None, Some(&store_password)).await;
    let open = store.open_url().expect("open listener");
    // The secured listener refuses what carries no credentials, as the security plugin does.
    let anonymous = spanline_ingester::config::OpenSearch {
        url: store.url(),
        ca_file: pki.ca.display().to_string(),
        ..Default::default()
    };
    let node = spanline_ingester::bulk::clients(&anonymous).expect("client").remove(0);
    let anonymous = node
        .send(opensearch::http::Method::Get, "/", opensearch::http::headers::HeaderMap::new(), None::<Vec<u8>>, None)
        .await
        .expect("answered");
    assert_eq!(anonymous.status_code().as_u16(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Basic realm=\"OpenSearch Security\"");
    assert_eq!(anonymous.text().await.expect("body"), "Unauthorized");

    let records = fixtures::trace_records("svc", 1, 40, 5, fixtures::now_unix_nano());
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");
    let shutdown = CancellationToken::new();
    let c = config(&broker, &store.url(), &pki.ca, Some(&ingester_password));
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    let conflicts = exactly_once(&open, &fixtures::span_keys(1, 40, 5), Duration::from_secs(60)).await.expect("once");
    assert_eq!(conflicts, 0, "no span written twice");
    committed_reaches(&broker, records.len()).await;
    ready_again(ingester.admin_addr).await;
    assert!(captured().contains("opensearch_auth=\"basic\""), "the start-up line says how it authenticates");
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
    assert_no_secret_logged();
}

/// A wrong password in the file: held at start (nothing consumed, committed or stored, not ready,
/// stalled, the 401 counted and logged with what to check); fixing the file resumes the ingester
/// without a restart. Then the store's password is rotated under the running ingester: its bulk
/// requests are refused (held the same way) until its file follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_rotated_password_holds_until_the_file_is_fixed() {
    logs();
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::write(dir.path());
    let store_password = dir.path().join("store-password");
    write(&store_password, RIGHT);
    let ingester_password = dir.path().join("ingester-password");
    write(&ingester_password, WRONG);
    let broker = broker().await;
    let store = secured_store(&pki.server.cert, &pki.server.key, None, Some(&store_password)).await;
    let open = store.open_url().expect("open listener");
    let records = fixtures::trace_records("svc", 1, 40, 5, fixtures::now_unix_nano());
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");

    let shutdown = CancellationToken::new();
    let c = config(&broker, &store.url(), &pki.ca, Some(&ingester_password));
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    let admin = ingester.admin_addr;
    assert_held(&broker, &open, admin, "status=\"401\"").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(spanline_testkit::count(&open, "jaeger-span-*").await.expect("count"), 0, "still nothing stored");
    let text = captured();
    assert!(
        text.contains("search store refuses the ingester")
            && text.contains("status=401")
            && text.contains("password_file"),
        "a refusal line naming what to check"
    );

    write(&ingester_password, RIGHT);
    let conflicts = exactly_once(&open, &fixtures::span_keys(1, 40, 5), Duration::from_secs(60)).await.expect("once");
    assert_eq!(conflicts, 0, "no span written twice");
    committed_reaches(&broker, records.len()).await;
    ready_again(admin).await;

    // Rotation under a running ingester: the store changes first, so bulk requests are refused.
    write(&store_password, ROTATED);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let more = fixtures::trace_records("svc", 100, 20, 5, fixtures::now_unix_nano());
    produce(&broker.bootstrap(), "otlp_spans", &more).await.expect("produced");
    wait_for(Duration::from_secs(30), || async move {
        (metric(admin, "spanline_ingester_bulk_refusals_total", "level=\"request\",status=\"401\"").await.ok()? > 0.0)
            .then_some(())
    })
    .await
    .expect("the bulk 401 is counted");
    assert!(!ready(admin).await, "not ready while bulk writes are refused");
    assert_eq!(
        committed_sum(&broker.bootstrap(), "spanline-ingester", "otlp_spans", PARTITIONS).expect("committed"),
        i64::try_from(records.len()).expect("count"),
        "the refused records' offsets are held"
    );
    write(&ingester_password, ROTATED);
    let mut want = fixtures::span_keys(1, 40, 5);
    want.extend(fixtures::span_keys(100, 20, 5));
    let conflicts = exactly_once(&open, &want, Duration::from_secs(60)).await.expect("once");
    assert_eq!(conflicts, 0, "no span written twice");
    committed_reaches(&broker, records.len() + more.len()).await;
    ready_again(admin).await;
    assert!(
        metric(admin, "spanline_ingester_reloads_total", "what=\"opensearch_credentials\",outcome=\"ok\"")
            .await
            .expect("metrics")
            >= 2.0,
        "both fixes were reloads"
    );
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
    assert_no_secret_logged();
}

/// The store's certificate is signed by a CA the ingester does not trust: held, not ready, the
/// handshake failure counted under `status="tls"` and logged with what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_holds_everything() {
    logs();
    let rogue = spanline_testkit::certs::Ca::new("rogue server ca").server(spanline_testkit::certs::Validity::Now);
    held_by_the_server_certificate(|_| rogue).await;
}

/// Serves the certificate `served` picks (given the test PKI, whose CA the ingester trusts) and
/// checks the ingester holds everything: nothing stored, nothing committed, not ready, the
/// handshake failure counted under `status="tls"` and logged with what to check, no secret logged.
async fn held_by_the_server_certificate(served: impl FnOnce(&Pki) -> spanline_testkit::certs::Pem) {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::write(dir.path());
    let pem = served(&pki);
    let (cert, key) = (dir.path().join("served.pem"), dir.path().join("served.key"));
    std::fs::write(&cert, &pem.cert).expect("write");
    std::fs::write(&key, &pem.key).expect("write");
    let store_password = dir.path().join("store-password");
    write(&store_password, RIGHT);
    let ingester_password = dir.path().join("ingester-password");
    write(&ingester_password, RIGHT);
    let broker = broker().await;
    let store = secured_store(&cert, &key, None, Some(&store_password)).await;
    let open = store.open_url().expect("open listener");
    let records = fixtures::trace_records("svc", 1, 10, 5, fixtures::now_unix_nano());
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");

    let shutdown = CancellationToken::new();
    let c = config(&broker, &store.url(), &pki.ca, Some(&ingester_password));
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    assert_held(&broker, &open, ingester.admin_addr, "status=\"tls\"").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(spanline_testkit::count(&open, "jaeger-span-*").await.expect("count"), 0, "still nothing stored");
    assert!(captured().contains("opensearch.ca_file"), "the refusal line says to check the CA");
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
    assert_no_secret_logged();
}

/// mTLS: the store requires a client certificate signed by the test CA; the ingester presents one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_passes_mtls() {
    logs();
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::write(dir.path());
    let broker = broker().await;
    let store = secured_store(&pki.server.cert, &pki.server.key, Some(&pki.ca), None).await;
    let open = store.open_url().expect("open listener");
    let records = fixtures::trace_records("svc", 1, 20, 5, fixtures::now_unix_nano());
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");

    let shutdown = CancellationToken::new();
    let mut c = config(&broker, &store.url(), &pki.ca, None);
    c.opensearch.cert_file = pki.client.cert.display().to_string();
    c.opensearch.key_file = pki.client.key.display().to_string();
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    let conflicts = exactly_once(&open, &fixtures::span_keys(1, 20, 5), Duration::from_secs(60)).await.expect("once");
    assert_eq!(conflicts, 0, "no span written twice");
    committed_reaches(&broker, records.len()).await;
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}

/// An API key from a file, sent as `Authorization: ApiKey <key>`, over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_file_is_accepted() {
    logs();
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::write(dir.path());
    let key_file = dir.path().join("api-key");
    write(&key_file, "c3BhbmxpbmU6a2V5LTEyMzQ=");
    let broker = broker().await;
    let store = devstore_with(Settings {
        refresh_interval: Duration::from_millis(100),
        tls: ServerTls {
            cert_file: pki.server.cert.display().to_string(),
            key_file: pki.server.key.display().to_string(),
            ..ServerTls::default()
        },
        auth: AuthSettings { api_key_file: Some(key_file.clone()), ..AuthSettings::default() },
        open_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..Settings::default()
    })
    .await
    .expect("store");
    let open = store.open_url().expect("open listener");
    let records = fixtures::trace_records("svc", 1, 10, 5, fixtures::now_unix_nano());
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");

    let shutdown = CancellationToken::new();
    let mut c = config(&broker, &store.url(), &pki.ca, None);
    c.opensearch.api_key_file = key_file.display().to_string();
    spanline_common::config::Validate::validate(&c).expect("valid");
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    let conflicts = exactly_once(&open, &fixtures::span_keys(1, 10, 5), Duration::from_secs(60)).await.expect("once");
    assert_eq!(conflicts, 0, "no span written twice");
    committed_reaches(&broker, records.len()).await;
    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
    assert!(!captured().contains("c3BhbmxpbmU6a2V5LTEyMzQ"), "the key was logged");
}

/// A server certificate from the trusted CA that names another host: host-name checking refuses it
/// (with checking off it would pass), and everything is held as for an untrusted CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_for_another_host_holds_everything() {
    logs();
    held_by_the_server_certificate(|pki| pki.authority.server_named("other.example")).await;
}
