//! The shared test harness. Tests start their own broker (Tansu with SQLite storage, on a free
//! loopback port, in a temporary directory) and their own dev store, so they run in parallel and can
//! kill and restart either. Never Tansu's `memory://` engine: it skips records after a seek or a
//! rebalance (REFERENCE.md §7).

#![allow(clippy::unwrap_used)]

pub mod certs;

pub mod fixtures;

pub mod fuzz;

pub mod jaeger;

pub mod logs;

pub mod mock;

pub use mock::MockKafka;

pub mod process;

pub mod secure;

pub mod thrift;

pub use secure::SecureBroker;

use std::{
    collections::BTreeSet,
    future::Future,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
};

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// `N` free TCP ports on 127.0.0.1, all different: each is held until all are chosen, so two calls
/// of [`free_port`] in a row cannot hand the same port to a child process's two listeners.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").expect("free port")).collect();
    std::array::from_fn(|i| held[i].local_addr().expect("local addr").port())
}

/// The `tansu` binary: `$TANSU_BIN`, else on `PATH`, else in `$CARGO_HOME/bin` (`~/.cargo/bin`).
pub fn tansu_bin() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("TANSU_BIN") {
        return Ok(PathBuf::from(path));
    }
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("tansu")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin/tansu")))
        .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu")));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "tansu not found: run scripts/broker.sh install (cargo install tansu --locked --version 0.6.0 --features dynostore,libsql)"
    )
}

/// A Tansu broker owned by one test, with SQLite storage in its own temporary directory.
#[derive(Debug)]
pub struct Broker {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Users, authentication and a TLS terminator ([`Broker::start_secured`]); `None` for plaintext.
    secure: Option<secure::Secured>,
}

impl Broker {
    /// Starts a broker on a free port and waits until it answers metadata requests.
    pub async fn start() -> anyhow::Result<Self> {
        let mut broker = Self { port: free_port(), dir: tempfile::tempdir()?, child: None, secure: None };
        broker.spawn().await?;
        Ok(broker)
    }

    /// Starts a broker with `settings`: its users created (on a first run without authentication),
    /// then restarted with `--authentication` when there are users, behind a TLS terminator when
    /// `settings.tls` is set. [`Broker::client_config`] gives the settings that reach it.
    pub async fn start_secured(settings: SecureBroker) -> anyhow::Result<Self> {
        let port = free_port();
        let proxy = match &settings.tls {
            Some(files) => Some(secure::TlsProxy::start(files, std::net::SocketAddr::from(([127, 0, 0, 1], port)))?),
            None => None,
        };
        let users = settings.users.clone();
        let secured = secure::Secured { settings, authentication: false, proxy };
        let mut broker = Self { port, dir: tempfile::tempdir()?, child: None, secure: Some(secured) };
        if !users.is_empty() {
            broker.spawn().await?;
            let plain = broker.bootstrap();
            tokio::task::spawn_blocking(move || secure::create_users(&plain, &users)).await??;
            broker.kill();
            if let Some(s) = broker.secure.as_mut() {
                s.authentication = true;
            }
        }
        broker.spawn().await?;
        Ok(broker)
    }

    /// The client settings that reach this broker: its address, and for a secured one TLS (trusting
    /// the configured CA) and the first user's SASL credentials.
    pub fn client_config(&self) -> spanline_common::kafka::KafkaClientConfig {
        match &self.secure {
            Some(secured) => secured.client(&self.bootstrap()),
            None => spanline_common::kafka::KafkaClientConfig { brokers: self.bootstrap(), ..Default::default() },
        }
    }

    /// Why TLS handshakes on the terminator failed so far (empty without TLS).
    pub fn tls_refusals(&self) -> Vec<String> {
        self.secure
            .as_ref()
            .and_then(|s| s.proxy.as_ref())
            .map(|p| p.refused.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = self.secure.as_ref().map_or_else(|| url.clone(), |s| s.advertised(&url));
        // Appended: a restart's log follows the first run's (a secured broker starts twice).
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("tansu.log"))?;
        let mut command = Command::new(tansu_bin()?);
        command.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
            "--storage-engine",
            "sqlite://tansu.db",
        ]);
        if self.secure.as_ref().is_some_and(|s| s.authentication) {
            command.arg("--authentication");
        }
        let child = command
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start tansu")?;
        self.child = Some(child);
        let probe = self.client_config();
        wait_for(Duration::from_secs(30), || {
            let probe = probe.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    // Whether the broker answers, not whether its certificate names this host (a
                    // test may serve one that does not, to see the client under test refuse it).
                    let consumer: BaseConsumer = probe
                        .base("spanline-testkit-probe")
                        .ok()?
                        .set("ssl.endpoint.identification.algorithm", "none")
                        .create()
                        .ok()?;
                    consumer.fetch_metadata(None, Duration::from_secs(2)).ok().map(|_| ())
                })
                .await
                .ok()
                .flatten()
            }
        })
        .await
        .with_context(|| format!("tansu did not answer on {url}; log in {}", self.dir.path().display()))
    }

    /// Creates `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        create_topic_with(&self.client_config(), topic, partitions).await
    }

    /// SIGKILLs the broker (its data stays on disk).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port with the same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    /// The broker's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        // The log goes with the temporary directory; `SPANLINE_KEEP_BROKER_LOG=DIR` keeps a copy
        // (with `RUST_LOG=tansu_broker::coordinator=debug`, every group request's outcome).
        if let Some(dir) = std::env::var_os("SPANLINE_KEEP_BROKER_LOG") {
            let kept = std::path::Path::new(&dir).join(format!("tansu-{}.log", self.port));
            let _ = std::fs::copy(self.dir.path().join("tansu.log"), kept);
        }
    }
}

/// Creates `topic` with `partitions` partitions on the cluster at `bootstrap`.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let kafka = spanline_common::kafka::KafkaClientConfig { brokers: bootstrap.to_owned(), ..Default::default() };
    create_topic_with(&kafka, topic, partitions).await
}

/// The test kit's own client settings for `kafka`: its security settings, then its overrides.
fn client(kafka: &spanline_common::kafka::KafkaClientConfig, id: &str) -> anyhow::Result<rdkafka::ClientConfig> {
    let mut cfg = kafka.base(id).map_err(anyhow::Error::msg)?;
    kafka.apply_overrides(&mut cfg);
    Ok(cfg)
}

/// Creates `topic` with `partitions` partitions on the cluster `kafka` reaches (TLS, SASL).
pub async fn create_topic_with(
    kafka: &spanline_common::kafka::KafkaClientConfig,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client(kafka, "spanline-testkit-admin")?.create()?;
    let results = admin
        .create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("cannot create topic {name}: {code}");
        }
    }
    Ok(())
}

/// Replaces the dev store's faults at `url` (`{}` clears them all).
pub async fn set_faults(url: &str, faults: serde_json::Value) -> anyhow::Result<()> {
    reqwest::Client::new().put(format!("{url}/_devstore/faults")).json(&faults).send().await?.error_for_status()?;
    Ok(())
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Reads every record of every partition of `topic`, from the start to the high watermark as of the
/// call, without a consumer group.
pub async fn read_topic(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<ReadRecord>> {
    let kafka = spanline_common::kafka::KafkaClientConfig { brokers: bootstrap.to_owned(), ..Default::default() };
    read_topic_with(&kafka, topic).await
}

/// [`read_topic`] through the client settings `kafka` (TLS, SASL).
pub async fn read_topic_with(
    kafka: &spanline_common::kafka::KafkaClientConfig,
    topic: &str,
) -> anyhow::Result<Vec<ReadRecord>> {
    let mut cfg = client(kafka, "spanline-testkit-reader")?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            cfg.set("group.id", "spanline-testkit-reader").set("enable.auto.commit", "false").create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let partitions: Vec<i32> =
            metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        let mut ends = Vec::new();
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            let (_, high) = consumer.fetch_watermarks(&topic, *p, Duration::from_secs(10))?;
            ends.push((*p, high));
            if high > 0 {
                tpl.add_partition_offset(&topic, *p, Offset::Beginning)?;
            }
        }
        let mut out = Vec::new();
        if tpl.count() == 0 {
            return Ok(out);
        }
        consumer.assign(&tpl)?;
        let want: i64 = ends.iter().map(|(_, h)| h).sum();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (out.len() as i64) < want {
            if Instant::now() > deadline {
                bail!("read {} of {want} records from {topic} before the deadline", out.len());
            }
            if let Some(message) = consumer.poll(Duration::from_millis(500)) {
                let message = message?;
                out.push(ReadRecord {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                });
            }
        }
        Ok(out)
    })
    .await?
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A dev store on a free port, refreshing every 100 ms.
pub async fn devstore() -> anyhow::Result<spanline_devstore::Running> {
    devstore_with(spanline_devstore::Settings {
        refresh_interval: Duration::from_millis(100),
        ..spanline_devstore::Settings::default()
    })
    .await
}

/// A dev store with the given settings.
pub async fn devstore_with(settings: spanline_devstore::Settings) -> anyhow::Result<spanline_devstore::Running> {
    spanline_devstore::start(settings, tokio_util::sync::CancellationToken::new()).await
}

/// `GET {url}/{index}/_count` after a refresh; 0 when no index matches.
pub async fn count(url: &str, index: &str) -> anyhow::Result<u64> {
    let client = reqwest::Client::new();
    client.post(format!("{url}/{index}/_refresh")).send().await?;
    let response: serde_json::Value = client.get(format!("{url}/{index}/_count")).send().await?.json().await?;
    response["count"].as_u64().with_context(|| format!("unexpected _count answer: {response}"))
}

/// Sum over `partitions` of `group`'s committed offsets on `topic` (0 where none). Blocking.
pub fn committed_sum(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> anyhow::Result<i64> {
    use rdkafka::{
        ClientConfig, TopicPartitionList,
        consumer::{BaseConsumer, Consumer},
    };
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(5))?;
    Ok(committed.elements().iter().filter_map(|e| e.offset().to_raw()).filter(|o| *o >= 0).sum())
}

/// How many bulk items the dev store at `url` answered 409 (the id exists: a document written
/// twice) in span indices (`jaeger-span-*`, no prefix).
pub async fn span_conflicts(url: &str) -> anyhow::Result<u64> {
    let stats: serde_json::Value = reqwest::get(format!("{url}/_devstore/stats")).await?.json().await?;
    Ok(stats["bulk"]["conflicts_by_index"]
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.starts_with("jaeger-span-")).filter_map(|(_, v)| v.as_u64()).sum())
        .unwrap_or(0))
}

/// Every document (`_id`, `_source`) in `index` (at most 10 000), after a refresh.
pub async fn documents(url: &str, index: &str) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    let client = reqwest::Client::new();
    client.post(format!("{url}/{index}/_refresh")).send().await?;
    let response: serde_json::Value = client
        .post(format!("{url}/{index}/_search"))
        .json(&serde_json::json!({"query": {"match_all": {}}, "size": 10_000}))
        .send()
        .await?
        .json()
        .await?;
    let hits = response["hits"]["hits"].as_array().with_context(|| format!("unexpected _search answer: {response}"))?;
    Ok(hits.iter().map(|h| (h["_id"].as_str().unwrap_or_default().to_owned(), h["_source"].clone())).collect())
}

/// Checks that the span indices at `url` hold exactly the spans `expected` names (`traceID:spanID`,
/// see [`fixtures::span_keys`]), each in one document: the count once it reaches `expected` (or
/// after `timeout`), then every document of the expected traces, fetched a few hundred traces at a
/// time so that no answer reaches the 10 000-hit search window. Returns the store's span conflicts:
/// spans written again onto their existing document (deterministic ids), which no count can see,
/// so a test that claims no record was read twice asserts they are 0.
pub async fn exactly_once(url: &str, expected: &BTreeSet<String>, timeout: Duration) -> anyhow::Result<u64> {
    /// Traces per search: with the fixtures' few spans per trace, far below the search window.
    const TRACES_PER_SEARCH: usize = 500;
    let want = expected.len() as u64;
    let indexed = settled_count(url, "jaeger-span-*", want, timeout).await;
    if indexed != want {
        bail!("{indexed} span documents, expected {want}");
    }
    let traces: BTreeSet<&str> = expected.iter().filter_map(|k| k.split_once(':').map(|(t, _)| t)).collect();
    let traces: Vec<&str> = traces.into_iter().collect();
    let client = reqwest::Client::new();
    let (mut found, mut twice) = (BTreeSet::new(), Vec::new());
    for chunk in traces.chunks(TRACES_PER_SEARCH) {
        let response: serde_json::Value = client
            .post(format!("{url}/jaeger-span-*/_search"))
            .json(&serde_json::json!({"query": {"terms": {"traceID": chunk}}, "size": 10_000}))
            .send()
            .await?
            .json()
            .await?;
        let hits =
            response["hits"]["hits"].as_array().with_context(|| format!("unexpected _search answer: {response}"))?;
        if hits.len() >= 10_000 {
            bail!("{} traces hold 10 000 spans or more: too many per search", chunk.len());
        }
        for hit in hits {
            let field = |name: &str| hit["_source"][name].as_str().unwrap_or("?").to_owned();
            let key = format!("{}:{}", field("traceID"), field("spanID"));
            if !found.insert(key.clone()) {
                twice.push(key);
            }
        }
    }
    if !twice.is_empty() {
        bail!("{} spans have more than one document, e.g. {:?}", twice.len(), &twice[..twice.len().min(5)]);
    }
    let missing: Vec<&String> = expected.difference(&found).take(5).collect();
    let strangers: Vec<&String> = found.difference(expected).take(5).collect();
    if !missing.is_empty() || !strangers.is_empty() {
        bail!("indexed spans differ from the expected ones: missing {missing:?}, not expected {strangers:?}");
    }
    span_conflicts(url).await
}

/// Produces `records` (key, value) to `topic` and waits for every delivery report.
pub async fn produce(bootstrap: &str, topic: &str, records: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    let kafka = spanline_common::kafka::KafkaClientConfig { brokers: bootstrap.to_owned(), ..Default::default() };
    produce_with(&kafka, topic, records).await
}

/// [`produce`] through the client settings `kafka` (TLS, SASL).
pub async fn produce_with(
    kafka: &spanline_common::kafka::KafkaClientConfig,
    topic: &str,
    records: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer =
        client(kafka, "spanline-testkit-producer")?.set("enable.idempotence", "true").set("linger.ms", "5").create()?;
    let mut deliveries = Vec::with_capacity(records.len());
    for (key, value) in records {
        let delivery = producer
            .send_result(FutureRecord::to(topic).key(key.as_str()).payload(value.as_slice()))
            .map_err(|(e, _)| anyhow::anyhow!("cannot enqueue: {e}"))?;
        deliveries.push(delivery);
    }
    for delivery in deliveries {
        delivery.await?.map_err(|(e, _)| anyhow::anyhow!("not delivered: {e}"))?;
    }
    Ok(())
}

/// The value of a Prometheus sample `name{labels}` (labels as written, e.g. `reason="timeout"`),
/// summed over matching lines, from `http://{admin}/metrics`.
pub async fn metric(admin: std::net::SocketAddr, name: &str, labels: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("http://{admin}/metrics")).await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum())
}

/// The document count of `index` once it reaches `want` (or after `timeout`), read again after a
/// short pause so that a straggler — a duplicate would be one — is counted before an exact check.
pub async fn settled_count(url: &str, index: &str, want: u64, timeout: Duration) -> u64 {
    let _ = wait_for(timeout, || async move { (count(url, index).await.ok()? >= want).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    count(url, index).await.unwrap_or(0)
}

/// A dev store refreshing every 100 ms with `faults` in force.
pub async fn devstore_with_faults(faults: spanline_devstore::Faults) -> anyhow::Result<spanline_devstore::Running> {
    devstore_with(spanline_devstore::Settings {
        refresh_interval: Duration::from_millis(100),
        faults,
        ..spanline_devstore::Settings::default()
    })
    .await
}

/// The records of `topic` once it holds at least `n` (fails after 30 s).
pub async fn read_at_least(bootstrap: &str, topic: &str, n: usize) -> anyhow::Result<Vec<ReadRecord>> {
    wait_for(
        Duration::from_secs(30),
        || async move { read_topic(bootstrap, topic).await.ok().filter(|r| r.len() >= n) },
    )
    .await
}

/// The dependency links the store at `url` holds over the last day, read as Jaeger Query's
/// dependency reader reads them (the daily `jaeger-dependencies-*` indices of the lookback, a
/// `range` on `timestamp` in Go's RFC 3339, at most 10 000 documents) and summed over the documents
/// as its HTTP API sums them; and how many documents hold them.
pub async fn dependency_links(url: &str) -> anyhow::Result<(std::collections::BTreeMap<(String, String), u64>, usize)> {
    let now = chrono::Utc::now();
    let start = now - chrono::Duration::hours(24);
    let indices = [start, now].map(|t| format!("jaeger-dependencies-{}", t.format("%Y-%m-%d")));
    let body = serde_json::json!({"size": 10000, "query": {"range": {"timestamp": {
        "gte": start.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "lte": now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)}}}});
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/{}/_search?ignore_unavailable=true&rest_total_hits_as_int=true", indices.join(",")))
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    let hits = answer["hits"]["hits"].as_array().cloned().unwrap_or_default();
    let mut links = std::collections::BTreeMap::new();
    for hit in &hits {
        let listed =
            hit["_source"]["dependencies"].as_array().ok_or_else(|| anyhow::anyhow!("no dependencies in {hit}"))?;
        for link in listed {
            let name = |k: &str| link[k].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no {k} in {link}"));
            let calls = link["callCount"].as_u64().ok_or_else(|| anyhow::anyhow!("no callCount in {link}"))?;
            *links.entry((name("parent")?, name("child")?)).or_default() += calls;
        }
    }
    Ok((links, hits.len()))
}
