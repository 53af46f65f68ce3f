//! The release collector with TLS, mTLS and bearer tokens on its OTLP receivers, with the real
//! broker: every party that must be refused is (a plaintext client, a client that does not trust
//! the server, no client certificate, one from another CA, an expired one, one not yet valid, a
//! missing or wrong token, over gRPC and HTTP), nothing it sent reaches the topic, and the spans of
//! the accepted requests are there exactly once. No token appears in the collector's log. A rotated
//! certificate is served to new connections while an open one keeps exporting.

use std::{
    collections::HashMap,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, trace_service_client::TraceServiceClient,
};
use prost::Message;
use spanline_testkit::{
    Broker,
    certs::{Files, Pki, Validity},
    fixtures, free_ports, metric,
    process::{Killed, refused_at_start, release_bin},
    read_topic, wait_for,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const GOOD_TOKEN: &str = "tok-0123456789-good";
const OLD_TOKEN: &str = "tok-0123456789-old";
const WRONG_TOKEN: &str = "tok-0123456789-wrong";

struct Collector {
    _child: Killed,
    pid: u32,
    grpc: u16,
    http: u16,
    admin: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Collector {
    /// The release collector with TLS (mTLS when `mutual`), certificates read again every
    /// `tls_reload`, and tokens from `tokens`.
    async fn start(broker: &Broker, pki: &Pki, tokens: &Path, mutual: bool, tls_reload: &str) -> Self {
        let [grpc, http, admin] = free_ports::<3>();
        let log = pki.dir.join("collector.log");
        let mut command = Command::new(release_bin("spanline-collector"));
        let env = [
            ("KAFKA__BROKERS", broker.bootstrap()),
            ("RECEIVERS__GRPC_LISTEN", format!("127.0.0.1:{grpc}")),
            ("RECEIVERS__HTTP_LISTEN", format!("127.0.0.1:{http}")),
            ("ADMIN__LISTEN", format!("127.0.0.1:{admin}")),
            ("RECEIVERS__TLS__CERT_FILE", pki.server.cert.display().to_string()),
            ("RECEIVERS__TLS__KEY_FILE", pki.server.key.display().to_string()),
            ("RECEIVERS__TLS__CLIENT_CA_FILE", if mutual { pki.ca.display().to_string() } else { String::new() }),
            ("RECEIVERS__TLS__RELOAD_INTERVAL", tls_reload.to_owned()),
            ("RECEIVERS__AUTH__BEARER_TOKENS_FILE", tokens.display().to_string()),
            ("RECEIVERS__AUTH__RELOAD_INTERVAL", "1s".to_owned()),
        ];
        for (key, value) in env {
            command.env(format!("SPANLINE_COLLECTOR__{key}"), value);
        }
        command
            // Everything at debug, the TLS and HTTP libraries' own lines included: a secret must
            // not appear even in what a verbose run writes.
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let child = Killed(command.spawn().expect("collector starts"));
        let pid = child.id();
        let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
        wait_for(Duration::from_secs(30), || async move {
            reqwest::get(format!("http://{admin}/health/ready")).await.ok().filter(|r| r.status().is_success())
        })
        .await
        .expect("collector ready");
        Self { _child: child, pid, grpc, http, admin, log }
    }

    /// A gRPC channel over TLS trusting `ca`, presenting `client` when given.
    async fn tls_channel(&self, ca: &Path, client: Option<&Files>) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca))).domain_name("localhost");
        if let Some(files) = client {
            tls = tls.identity(Identity::from_pem(read(&files.cert), read(&files.key)));
        }
        Channel::from_shared(format!("https://127.0.0.1:{}", self.grpc))
            .expect("uri")
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
    }

    /// An HTTPS client trusting `ca` only, presenting `client` when given.
    fn https(ca: &Path, client: Option<&Files>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&read(ca)).expect("ca"))
            .timeout(Duration::from_secs(10));
        if let Some(files) = client {
            let mut pem = read(&files.cert);
            pem.extend(read(&files.key));
            builder = builder.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
        }
        builder.build().expect("client")
    }

    async fn post(
        &self,
        client: &reqwest::Client,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut request = client
            .post(format!("https://localhost:{}/v1/traces", self.http))
            .header("content-type", "application/x-protobuf")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read pem")
}

fn with_token(request: &ExportTraceServiceRequest, token: Option<&str>) -> tonic::Request<ExportTraceServiceRequest> {
    let mut request = tonic::Request::new(request.clone());
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("metadata"));
    }
    request
}

fn span_ids(request: &ExportTraceServiceRequest) -> Vec<Vec<u8>> {
    request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.span_id.clone())
        .collect()
}

async fn spans_in_topic(broker: &Broker) -> HashMap<Vec<u8>, usize> {
    let mut seen = HashMap::new();
    for record in read_topic(&broker.bootstrap(), "otlp_spans").await.expect("read topic") {
        let request = ExportTraceServiceRequest::decode(record.payload.as_slice()).expect("OTLP record");
        for id in span_ids(&request) {
            *seen.entry(id).or_default() += 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_unauthenticated_or_unverified_party_is_refused_and_only_the_authenticated_spans_are_published() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::write(dir.path());
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("# rotation: old and new\n{OLD_TOKEN}\n{GOOD_TOKEN}\n")).expect("tokens");
    let broker = Broker::start().await.expect("broker");
    broker.create_topic("otlp_spans", 2).await.expect("topic");
    let collector = Collector::start(&broker, &pki, &tokens, true, "1s").await;

    let mut refused_ids = Vec::new();
    let mut accepted_ids = Vec::new();
    let mut trace = 0u64;
    let mut next = || {
        trace += 10;
        fixtures::request("sec", trace, 2, 3, fixtures::now_unix_nano())
    };

    // gRPC. A plaintext client to the TLS listener: no HTTP/2 is ever answered.
    let request = next();
    refused_ids.extend(span_ids(&request));
    let plaintext = async {
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", collector.grpc)).await?;
        client.export(with_token(&request, Some(GOOD_TOKEN))).await.map_err(Into::into)
    };
    let outcome: Result<_, Box<dyn std::error::Error>> =
        tokio::time::timeout(Duration::from_secs(10), plaintext).await.expect("plaintext client answered or cut");
    assert!(outcome.is_err(), "a plaintext client is refused");

    // Clients whose TLS must fail: not trusting the server, no certificate, the wrong CA's, an
    // expired one, one not yet valid.
    let cases: [(&str, &Path, Option<&Files>); 5] = [
        ("client trusts another ca", &pki.rogue_ca, Some(&pki.client)),
        ("no client certificate", &pki.ca, None),
        ("client certificate from another ca", &pki.ca, Some(&pki.rogue_client)),
        ("expired client certificate", &pki.ca, Some(&pki.expired_client)),
        ("client certificate not yet valid", &pki.ca, Some(&pki.future_client)),
    ];
    let admin = collector.admin;
    let failed_handshakes = move || async move {
        metric(admin, "spanline_collector_tls_handshakes_total", "outcome=\"failed\"").await.unwrap_or(0.0)
    };
    // The collector learns of a handshake the client gave up on when the client's alert arrives,
    // which may be after the client has returned: wait for the count to move.
    let counted_above = move |floor: f64| async move {
        wait_for(Duration::from_secs(5), || async move {
            let now = failed_handshakes().await;
            (now > floor).then_some(now)
        })
        .await
        .ok()
    };
    for (case, ca, client) in cases {
        let request = next();
        refused_ids.extend(span_ids(&request));
        let before = failed_handshakes().await;
        // The handshake fails at connect, or (TLS 1.3 checks the client's certificate after the
        // client thinks it is done) the first request fails.
        if let Ok(channel) = collector.tls_channel(ca, client).await {
            let status =
                TraceServiceClient::new(channel).export(with_token(&request, Some(GOOD_TOKEN))).await.expect_err(case);
            assert_ne!(status.code(), tonic::Code::Unauthenticated, "{case}: refused by TLS, not by the token");
        }
        let grpc_failed =
            counted_above(before).await.unwrap_or_else(|| panic!("{case}: the collector refused the grpc handshake"));
        let https = Collector::https(ca, client);
        match collector.post(&https, Some(GOOD_TOKEN), request.encode_to_vec()).await {
            // Refused by TLS: at connect, or (TLS 1.3 judges the client's certificate after the
            // client is done) on the first request, as the server's alert or a connection closed
            // before it was ready, depending on timing. Never a timeout, never an HTTP answer; the
            // collector's own count below says the handshake was refused.
            Err(error) => assert!(!error.is_timeout(), "{case}: {error:?}"),
            Ok(response) => panic!("{case}: https answered {}", response.status()),
        }
        assert!(counted_above(grpc_failed).await.is_some(), "{case}: the collector refused the https handshake");
    }
    // Plaintext HTTP to the TLS port.
    let request = next();
    refused_ids.extend(span_ids(&request));
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/traces", collector.http))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(GOOD_TOKEN)
        .body(request.encode_to_vec())
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.as_ref().is_err_and(|e| !e.is_timeout()), "plaintext http refused: {plain:?}");

    // A good TLS client: the token decides.
    let channel = collector.tls_channel(&pki.ca, Some(&pki.client)).await.expect("mTLS connects");
    let mut client = TraceServiceClient::new(channel);
    for token in [None, Some(WRONG_TOKEN), Some("tok-0123456789-goo"), Some("")] {
        let request = next();
        refused_ids.extend(span_ids(&request));
        let status = client.export(with_token(&request, token)).await.expect_err("no valid token");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{token:?}: {status:?}");
    }
    let https = Collector::https(&pki.ca, Some(&pki.client));
    for token in [None, Some(WRONG_TOKEN)] {
        let request = next();
        refused_ids.extend(span_ids(&request));
        let response = collector.post(&https, token, request.encode_to_vec()).await.expect("answered");
        assert_eq!(response.status(), 401, "{token:?}");
        assert_eq!(response.headers().get("www-authenticate").map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
    }
    for token in [GOOD_TOKEN, OLD_TOKEN] {
        let request = next();
        accepted_ids.extend(span_ids(&request));
        client.export(with_token(&request, Some(token))).await.expect("authenticated grpc export");
        let request = next();
        accepted_ids.extend(span_ids(&request));
        let response = collector.post(&https, Some(token), request.encode_to_vec()).await.expect("answered");
        assert_eq!(response.status(), 200);
    }

    // Rotation: the old token is removed from the file; it is refused once the file is read again.
    std::fs::write(&tokens, format!("{GOOD_TOKEN}\n")).expect("rotate tokens");
    let old_refused = wait_for(Duration::from_secs(10), || {
        let mut client = client.clone();
        let request = next_probe();
        async move {
            match client.export(with_token(&request, Some(OLD_TOKEN))).await {
                Err(status) if status.code() == tonic::Code::Unauthenticated => Some(request),
                _ => None,
            }
        }
    })
    .await;
    assert!(old_refused.is_ok(), "a token removed from the file is refused within the reload interval");

    let seen = spans_in_topic(&broker).await;
    for id in &accepted_ids {
        assert_eq!(seen.get(id), Some(&1), "an accepted span is in the topic exactly once");
    }
    for id in &refused_ids {
        assert!(!seen.contains_key(id), "nothing a refused party sent was published");
    }
    assert_eq!(accepted_ids.len(), 24);

    let failed =
        metric(collector.admin, "spanline_collector_tls_handshakes_total", "outcome=\"failed\"").await.expect("metric");
    assert!(failed >= 12.0, "failed handshakes counted: {failed}");
    let unauthenticated = metric(collector.admin, "spanline_collector_requests_total", "outcome=\"unauthenticated\"")
        .await
        .expect("metric");
    assert!(unauthenticated >= 7.0, "unauthenticated requests counted: {unauthenticated}");

    let log = std::fs::read_to_string(&collector.log).expect("log");
    assert!(log.contains("tls=\"mutual\"") || log.contains("tls=mutual"), "start-up log says mTLS is on");
    // The refusals were logged (at debug), so the search below reads what a verbose run writes.
    assert!(log.contains("tls handshake refused") && log.contains("unauthenticated"), "refusals logged");
    for secret in [GOOD_TOKEN, OLD_TOKEN, WRONG_TOKEN, "0123456789"] {
        assert!(!log.contains(secret), "a token is in the collector's log");
    }
}

/// Spans for a probe request (rotation checks); their ids are far from the numbered requests.
fn next_probe() -> ExportTraceServiceRequest {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(900_000);
    fixtures::request("probe", NEXT.fetch_add(10, Ordering::Relaxed), 1, 2, fixtures::now_unix_nano())
}

/// Certificate rotation: new files and a SIGHUP (the reload interval is an hour) make new
/// connections get the new certificate, while a connection opened before keeps exporting; a
/// half-written rotation is refused and the old pair kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections_without_dropping_open_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::write(dir.path());
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{GOOD_TOKEN}\n")).expect("tokens");
    let broker = Broker::start().await.expect("broker");
    broker.create_topic("otlp_spans", 2).await.expect("topic");
    // Certificates are read again only on SIGHUP here: the interval is an hour.
    let collector = Collector::start(&broker, &pki, &tokens, true, "1h").await;
    let hup = || {
        let status = Command::new("kill").args(["-HUP", &collector.pid.to_string()]).status().expect("kill -HUP");
        assert!(status.success());
    };
    let admin = collector.admin;
    let reloads = move |outcome: &'static str| async move {
        metric(admin, "spanline_collector_reloads_total", &format!("outcome=\"{outcome}\"")).await.unwrap_or(0.0)
    };

    let before = served_certificate(collector.grpc, &pki).await;
    assert_eq!(before, der_of(&pki.server.cert), "serves the configured certificate");
    let channel = collector.tls_channel(&pki.ca, Some(&pki.client)).await.expect("connects");
    let mut open = TraceServiceClient::new(channel);
    let first = fixtures::request("rot", 1, 1, 2, fixtures::now_unix_nano());
    open.export(with_token(&first, Some(GOOD_TOKEN))).await.expect("export before rotation");

    // Rotate: write the new key first and the certificate second, as a careless operator would;
    // the half-rotated state (new key, old certificate) is refused and the old pair kept.
    let rotated = pki.authority.server(Validity::Now);
    std::fs::write(&pki.server.key, &rotated.key).expect("key");
    hup();
    let refused =
        wait_for(Duration::from_secs(10), || async move { (reloads("failed").await >= 2.0).then_some(()) }).await;
    assert!(refused.is_ok(), "the mismatched pair is refused by both listeners on SIGHUP");
    assert_eq!(served_certificate(collector.grpc, &pki).await, before, "a mismatched pair is not served");
    std::fs::write(&pki.server.cert, &rotated.cert).expect("cert");
    hup();
    let want = der_of(&pki.server.cert);
    let grpc = collector.grpc;
    let pki = Arc::new(pki);
    let served = wait_for(Duration::from_secs(10), || {
        let (pki, want) = (pki.clone(), want.clone());
        async move { (served_certificate(grpc, &pki).await == want).then_some(()) }
    })
    .await;
    assert!(served.is_ok(), "after SIGHUP new connections get the rotated certificate");
    assert!(reloads("ok").await >= 1.0, "reload counted");

    let second = fixtures::request("rot", 11, 1, 2, fixtures::now_unix_nano());
    open.export(with_token(&second, Some(GOOD_TOKEN))).await.expect("the open connection keeps exporting");
    let seen = spans_in_topic(&broker).await;
    for id in span_ids(&first).iter().chain(&span_ids(&second)) {
        assert_eq!(seen.get(id), Some(&1));
    }
}

fn der_of(pem: &Path) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_file(pem).expect("pem").to_vec()
}

/// The leaf certificate the gRPC listener presents to a new connection (with a client certificate,
/// since mTLS is on).
async fn served_certificate(port: u16, pki: &Pki) -> Vec<u8> {
    match tls_connect(port, pki, b"h2").await {
        Ok(tls) => tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// A raw mTLS connection to `port` as the good client, offering the one protocol `alpn`.
async fn tls_connect(
    port: u16,
    pki: &Pki,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&pki.ca).expect("ca")).expect("root");
    let chain = vec![CertificateDer::from_pem_file(&pki.client.cert).expect("client cert")];
    let key = PrivateKeyDer::from_pem_file(&pki.client.key).expect("client key");
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client auth");
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    connector.connect(ServerName::try_from("localhost").expect("name"), tcp).await
}

/// TLS without mTLS: a client without a certificate exports with its token. The token is checked
/// on the headers alone: a request announcing a 15 MiB body without a valid token is answered 401
/// while its body has not been sent at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_checked_before_any_body_byte_is_read() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::write(dir.path());
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{GOOD_TOKEN}\n")).expect("tokens");
    let broker = Broker::start().await.expect("broker");
    broker.create_topic("otlp_spans", 1).await.expect("topic");
    // TLS without client certificates, as the shipped secure configuration runs.
    let collector = Collector::start(&broker, &pki, &tokens, false, "1s").await;
    let request = fixtures::request("one-way", 1, 2, 2, fixtures::now_unix_nano());
    let channel = collector.tls_channel(&pki.ca, None).await.expect("TLS without a client certificate");
    TraceServiceClient::new(channel).export(with_token(&request, Some(GOOD_TOKEN))).await.expect("exported");
    let seen = spans_in_topic(&broker).await;
    assert_eq!(seen.len(), 4);
    assert!(span_ids(&request).iter().all(|id| seen.get(id) == Some(&1)));
    for token in ["", WRONG_TOKEN] {
        let mut tls = tls_connect(collector.http, &pki, b"http/1.1").await.expect("mTLS connects");
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-protobuf\r\ncontent-length: 15728640\r\nauthorization: Bearer {token}\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await.expect("headers sent");
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut answer))
            .await
            .expect("answered before the body was sent")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    let unauthenticated = metric(collector.admin, "spanline_collector_requests_total", "outcome=\"unauthenticated\"")
        .await
        .expect("metric");
    assert_eq!(unauthenticated, 2.0);
}

/// Bad settings stop the release collector at start, naming what is wrong and never a secret: an
/// override that lets the broker acknowledge less, a misspelt librdkafka property holding a
/// password (librdkafka's own error quotes the value), and a token file with a token too short.
#[test]
fn the_release_collector_refuses_bad_settings_naming_the_key_never_the_secret() {
    let dir = tempfile::tempdir().expect("dir");
    let short = dir.path().join("tokens");
    std::fs::write(&short, "s3cr3t-short\n").expect("tokens");
    let short = short.display().to_string();
    /// Settings (below `SPANLINE_COLLECTOR__`), what the message names, the secret it must not print.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 3] = [
        (&[("KAFKA__LIBRDKAFKA__ACKS", "1")], "acks", ""),
        (&[("KAFKA__LIBRDKAFKA__SASL_PASSWROD", "hunter2-0123456789")], "sasl.passwrod", "hunter2-0123456789"),
        (&[("RECEIVERS__AUTH__BEARER_TOKENS_FILE", short.as_str())], "line 1", "s3cr3t-short"),
    ];
    for (env, named, secret) in cases {
        let mut env: Vec<(String, String)> =
            env.iter().map(|(k, v)| (format!("SPANLINE_COLLECTOR__{k}"), (*v).to_owned())).collect();
        for listener in ["GRPC_LISTEN", "HTTP_LISTEN"] {
            env.push((format!("SPANLINE_COLLECTOR__RECEIVERS__{listener}"), "127.0.0.1:0".to_owned()));
        }
        let text = refused_at_start("spanline-collector", &env);
        assert!(text.contains(named), "{named} named: {text}");
        assert!(secret.is_empty() || !text.contains(secret), "{named}: the secret printed: {text}");
    }
}
