//! `spanline-bench` (`make bench`): each stage alone, then the whole pipeline, on this machine,
//! against the real broker (Tansu) and the dev store, with the release binaries as child processes.
//!
//! For every stage: spans/s, CPU-seconds per million spans per process (from `/proc`, the kernel's
//! accounting), peak RSS, latency percentiles. The floor — raw rdkafka produce and consume of the
//! very records the collector wrote — is measured in the same run, so each stage is also given as a
//! ratio to it. Results: a table on stdout and `bench/results.json`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord, Producer},
};
use serde_json::{Value, json};
use spanline_loadtest::{
    model::Model,
    send::{self, Plan, Protocol},
    verify::{self, Store},
};
use spanline_testkit::{
    ReadRecord, create_topic,
    process::{clock_ticks, cpu_seconds, peak_rss},
    read_topic,
};

#[derive(Debug, Parser)]
#[command(name = "spanline-bench")]
struct Args {
    /// Where the release binaries are.
    #[arg(long, default_value = "target/release")]
    bin: PathBuf,
    /// Working directory for the broker's data and the logs.
    #[arg(long, default_value = ".run/bench")]
    dir: PathBuf,
    /// Results file.
    #[arg(long, default_value = "bench/results.json")]
    out: PathBuf,
    /// Traces sent in the collector stage (about 8 spans each).
    #[arg(long, default_value_t = 40_000)]
    traces: u64,
    /// Seconds of the end-to-end and latency stages.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// The Rotel agent (`rotel-agent` from the `rotel` PyPI wheel, which scripts/bench.sh installs):
    /// run side by side with the collector on the same load and broker. Without it the peer stage
    /// is skipped and the ratio goal reported as not measured.
    #[arg(long)]
    rotel: Option<PathBuf>,
}

const BROKER_PORT: u16 = 19092;
const STORE_PORT: u16 = 19200;

/// A child process killed when dropped.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops with SIGTERM (graceful drain) and waits.
    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn spawn(bin: &Path, name: &str, args: &[&str], env: &[(&str, String)], logs: &Path) -> anyhow::Result<Proc> {
    let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
    let child = Command::new(bin.join(args[0]))
        .args(&args[1..])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", args[0]))?;
    Ok(Proc { child })
}

/// CPU seconds of a process between two moments.
struct CpuMeter {
    pid: u32,
    start: f64,
    ticks: f64,
}

/// A process is idle when it used at most this much CPU in [`SETTLE_STEP`] (2 % of a core).
const IDLE_CPU: f64 = 0.005;
const SETTLE_STEP: Duration = Duration::from_millis(250);

impl CpuMeter {
    fn new(pid: u32, ticks: f64) -> Self {
        Self { pid, start: cpu_seconds(pid, ticks).unwrap_or(0.0), ticks }
    }
    fn used(&self) -> f64 {
        cpu_seconds(self.pid, self.ticks).unwrap_or(self.start) - self.start
    }
    /// The CPU used since the start, once the process is idle again: work a process does after
    /// its clients got their answers (a peer that acknowledges before Kafka has the data, batches
    /// still compressing) is its cost too. At most `limit` of waiting.
    async fn settled(&self, limit: Duration) -> f64 {
        let until = Instant::now() + limit;
        let mut last = self.used();
        let mut quiet = 0;
        while quiet < 2 && Instant::now() < until {
            tokio::time::sleep(SETTLE_STEP).await;
            let now = self.used();
            quiet = if now - last <= IDLE_CPU { quiet + 1 } else { 0 };
            last = now;
        }
        last
    }
}

/// The dev store's and the broker's CPU over a stage, so a reader can tell which process set its
/// pace.
///
/// Also the whole machine's busy and stolen CPU (`/proc/stat`): CPU-seconds measured while other
/// work shares the two cores are inflated (caches, the hypervisor), so a figure taken on a busy
/// machine says so.
struct Others {
    store: CpuMeter,
    broker: Option<CpuMeter>,
    machine: Option<(f64, f64)>,
    started: Instant,
    ticks: f64,
}

/// Busy and stolen CPU-seconds of the whole machine so far (`/proc/stat`, all cores).
fn machine_cpu(ticks: f64) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat.lines().next()?.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0.0)).collect();
    // user nice system idle iowait irq softirq steal
    let busy = fields.first()? + fields.get(1)? + fields.get(2)? + fields.get(5)? + fields.get(6)?;
    Some((busy / ticks, fields.get(7).copied().unwrap_or(0.0) / ticks))
}

impl Others {
    fn start(store: u32, broker: Option<u32>, ticks: f64) -> Self {
        Self {
            store: CpuMeter::new(store, ticks),
            broker: broker.map(|pid| CpuMeter::new(pid, ticks)),
            machine: machine_cpu(ticks),
            started: Instant::now(),
            ticks,
        }
    }
    /// Adds the store's CPU per document, the broker's per span and how busy the machine was to
    /// `stage`.
    fn report(&self, stage: &mut Value, spans: u64) {
        let Some(stage) = stage.as_object_mut() else { return };
        stage.insert("store_cpu_us_per_document".into(), json!(self.store.used() / spans.max(1) as f64 * 1e6));
        if let Some(broker) = &self.broker {
            stage.insert("broker_cpu_s_per_million_spans".into(), json!(per_million(broker.used(), spans)));
        }
        if let (Some((busy0, steal0)), Some((busy1, steal1))) = (self.machine, machine_cpu(self.ticks)) {
            let wall = self.started.elapsed().as_secs_f64().max(1e-9);
            stage.insert("machine_busy_cores".into(), json!((busy1 - busy0) / wall));
            stage.insert("machine_stolen_cores".into(), json!((steal1 - steal0) / wall));
        }
    }
}

fn mib(bytes: Option<u64>) -> f64 {
    bytes.unwrap_or(0) as f64 / (1 << 20) as f64
}

fn per_million(cpu: f64, spans: u64) -> f64 {
    cpu / (spans.max(1) as f64 / 1e6)
}

async fn wait_http(url: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} never answered")
}

fn bootstrap() -> String {
    format!("127.0.0.1:{BROKER_PORT}")
}

/// The floor: raw rdkafka produce of `records` to `topic`, then raw consume of them; this
/// process's CPU is the cost.
async fn floor(records: &[ReadRecord], spans: u64, topic: &str, ticks: f64) -> anyhow::Result<Value> {
    let me = std::process::id();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", shipped_linger_ms()?)
        .set("compression.type", shipped_compression()?)
        .create()?;
    let cpu = CpuMeter::new(me, ticks);
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(records.len());
    for record in records {
        let key = record.key.as_deref().unwrap_or_default();
        loop {
            match producer.send_result(FutureRecord::to(topic).key(key).payload(&record.payload)) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    _,
                )) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => bail!("produce: {e}"),
            }
        }
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
    }
    producer.flush(Duration::from_secs(30))?;
    let produce_s = started.elapsed().as_secs_f64();
    let produce_cpu = cpu.used();

    let cpu = CpuMeter::new(me, ticks);
    let started = Instant::now();
    let n = records.len();
    let consumed = read_topic(&bootstrap(), topic).await?.len();
    let consume_s = started.elapsed().as_secs_f64();
    let consume_cpu = cpu.used();
    if consumed != n {
        bail!("floor consumed {consumed} of {n} records");
    }
    Ok(json!({
        "records": n, "spans": spans,
        "produce": { "spans_per_s": spans as f64 / produce_s, "cpu_s_per_million_spans": per_million(produce_cpu, spans) },
        "consume": { "spans_per_s": spans as f64 / consume_s, "cpu_s_per_million_spans": per_million(consume_cpu, spans) },
    }))
}

fn plan(endpoint: &str, traces: u64, rate: Option<f64>, duration: Option<Duration>, connections: usize) -> Plan {
    Plan {
        endpoint: endpoint.into(),
        protocol: Protocol::Grpc,
        connections,
        traces_per_request: 64,
        traces,
        duration,
        rate,
        gzip: false,
        model: Model::default(),
        security: send::Security::default(),
    }
}

const ROTEL_GRPC: &str = "127.0.0.1:24417";

/// The Rotel agent on the collector's load: acks=all, the collector's compression and linger, and 1 500-span
/// batches (its default 8 192 makes records over the broker's message size, which it drops after
/// answering the client). Its CPU is counted until it is idle again, since it answers before Kafka
/// has the data; the topic is then read back and its spans counted, so what Rotel lost shows.
async fn rotel_stage(bin: &Path, traces: u64, p: i32, dir: &Path, logs: &Path, ticks: f64) -> anyhow::Result<Value> {
    create_topic(&bootstrap(), "bench_rotel", p).await?;
    let log = std::fs::File::create(logs.join("rotel.log"))?;
    let child = Command::new(bin)
        .args(["start", "--otlp-grpc-endpoint", ROTEL_GRPC, "--otlp-http-endpoint", "127.0.0.1:24418"])
        .args(["--exporter", "kafka", "--kafka-exporter-brokers", &bootstrap()])
        .args(["--kafka-exporter-traces-topic", "bench_rotel", "--kafka-exporter-format", "protobuf"])
        .args(["--kafka-exporter-acks", "all", "--kafka-exporter-compression", &shipped_compression()?])
        .args(["--traces-batch-max-size", "1500", "--kafka-exporter-linger-ms", &shipped_linger_ms()?])
        .arg("--pid-file")
        .arg(dir.join("rotel.pid"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let rotel = Proc { child };
    for attempt in 0.. {
        if tokio::net::TcpStream::connect(ROTEL_GRPC).await.is_ok() {
            break;
        }
        if attempt > 100 {
            bail!("the Rotel agent never listened on {ROTEL_GRPC}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = CpuMeter::new(rotel.pid(), ticks);
    let report = send::run(plan(&format!("http://{ROTEL_GRPC}"), traces, None, None, 8), None, true).await?;
    let used = cpu.settled(Duration::from_secs(60)).await;
    let rss = mib(peak_rss(rotel.pid()));
    rotel.stop();
    let in_topic: usize = read_topic(&bootstrap(), "bench_rotel")
        .await?
        .iter()
        .map(|r| {
            ExportTraceServiceRequest::decode(r.payload.as_slice())
                .map(|req| req.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum())
                .unwrap_or(0)
        })
        .sum();
    let spans = report.acknowledged_spans;
    Ok(json!({
        "spans": spans, "spans_in_topic": in_topic, "failed_requests": report.failed_requests,
        "spans_per_s": report.spans_per_second(), "cpu_s_per_million_spans": per_million(used, spans),
        "spans_per_cpu_s": spans as f64 / used.max(1e-9),
        "cores_used": used / report.elapsed.as_secs_f64().max(1e-9),
        "peak_rss_mib": rss, "export_latency_ms": latency_ms(&report),
        "settings": format!("acks=all, {}, linger {} ms, 1500-span batches, protobuf", shipped_compression()?, shipped_linger_ms()?),
    }))
}

/// `kafka.<key>` of the shipped collector configuration (`compression`, `linger`), which the floor
/// and the peer use too, so all three batch and compress alike.
fn shipped_kafka(key: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(COLLECTOR_ARGS[2]).context("cannot read the collector's configuration")?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .find_map(|v| v.split('#').next().map(|v| v.trim().trim_matches('"').to_owned()))
        .ok_or_else(|| anyhow::anyhow!("no kafka.{key} in {}", COLLECTOR_ARGS[2]))
}

fn shipped_compression() -> anyhow::Result<String> {
    shipped_kafka("compression")
}

/// The collector's `kafka.linger` in milliseconds, as librdkafka takes it.
fn shipped_linger_ms() -> anyhow::Result<String> {
    let linger = shipped_kafka("linger")?;
    let d = humantime::parse_duration(&linger).with_context(|| format!("kafka.linger {linger:?}"))?;
    Ok(d.as_millis().to_string())
}

fn latency_ms(report: &send::Report) -> Value {
    let l = &report.latency;
    let ms = |q: f64| l.value_at_quantile(q) as f64 / 1000.0;
    json!({ "p50": ms(0.5), "p99": ms(0.99), "max": l.max() as f64 / 1000.0 })
}

fn collector_env(topic: &str, max_inflight: Option<&str>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("SPANLINE_COLLECTOR__KAFKA__BROKERS", bootstrap()),
        ("SPANLINE_COLLECTOR__KAFKA__TOPIC", topic.to_owned()),
        ("SPANLINE_COLLECTOR__RECEIVERS__GRPC_LISTEN", "127.0.0.1:24317".into()),
        ("SPANLINE_COLLECTOR__RECEIVERS__HTTP_LISTEN", "127.0.0.1:24318".into()),
        ("SPANLINE_COLLECTOR__ADMIN__LISTEN", "127.0.0.1:24369".into()),
        // deploy/collector.toml's other listeners use fixed ports a running `make up` holds: any
        // free port here, so the bench cannot collide with it (only OTLP gRPC is measured).
        ("SPANLINE_COLLECTOR__RECEIVERS__ZIPKIN_LISTEN", "127.0.0.1:0".into()),
        ("SPANLINE_COLLECTOR__RECEIVERS__JAEGER_HTTP_LISTEN", "127.0.0.1:0".into()),
        ("SPANLINE_COLLECTOR__RECEIVERS__JAEGER_COMPACT_LISTEN", "127.0.0.1:0".into()),
        ("SPANLINE_COLLECTOR__RECEIVERS__JAEGER_BINARY_LISTEN", "127.0.0.1:0".into()),
        ("SPANLINE_COLLECTOR__RECEIVERS__SAMPLING_HTTP_LISTEN", "127.0.0.1:0".into()),
        ("SPANLINE_COLLECTOR__RECEIVERS__SAMPLING_GRPC_LISTEN", "127.0.0.1:0".into()),
        // Named relative to the repository in deploy/collector.toml: found wherever the bench runs.
        ("SPANLINE_COLLECTOR__SAMPLING__STRATEGIES_FILE", STRATEGIES_FILE.into()),
    ];
    if let Some(bound) = max_inflight {
        env.push(("SPANLINE_COLLECTOR__LIMITS__MAX_INFLIGHT_BYTES", bound.to_owned()));
    }
    env
}

fn ingester_env(topic: &str, group: &str, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SPANLINE_INGESTER__OPENSEARCH__INDEX_PREFIX", prefix.to_owned()),
        ("SPANLINE_INGESTER__KAFKA__BROKERS", bootstrap()),
        ("SPANLINE_INGESTER__KAFKA__TOPIC", topic.to_owned()),
        ("SPANLINE_INGESTER__KAFKA__GROUP_ID", group.to_owned()),
        ("SPANLINE_INGESTER__OPENSEARCH__URL", format!("http://127.0.0.1:{STORE_PORT}")),
        ("SPANLINE_INGESTER__ADMIN__LISTEN", "127.0.0.1:24370".into()),
    ]
}

const COLLECTOR_ARGS: [&str; 3] = ["spanline-collector", "--config", "deploy/collector.toml"];
const INGESTER_ARGS: [&str; 3] = ["spanline-ingester", "--config", "deploy/ingester.toml"];
const GRPC: &str = "http://127.0.0.1:24317";
const STRATEGIES_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/sampling-strategies.json");

/// Waits until `store` holds `want` documents under `prefix`; the time of the last change.
async fn wait_indexed(store: &Store, want: u64, timeout: Duration) -> anyhow::Result<(u64, Instant)> {
    let until = Instant::now() + timeout;
    let (mut last, mut changed) = (0, Instant::now());
    loop {
        let n = store.count(None).await.unwrap_or(last);
        if n != last {
            last = n;
            changed = Instant::now();
        }
        if n >= want || Instant::now() > until {
            return Ok((n, changed));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// The results table is this tool's output.
#[allow(clippy::print_stdout)]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // End-of-partition events are how the floor's reader knows it is done, not errors.
    spanline_common::telemetry::init("warn,rdkafka::client=off");
    let args = Args::parse();
    let ticks = clock_ticks();
    let logs = args.dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let broker_dir = args.dir.join("broker");
    let _ = Command::new("scripts/broker.sh").args(["stop", &broker_dir.to_string_lossy()]).status();
    let _ = std::fs::remove_dir_all(&broker_dir);
    std::fs::create_dir_all(&broker_dir)?;
    let status = Command::new("scripts/broker.sh")
        .args(["start", &broker_dir.to_string_lossy(), &BROKER_PORT.to_string()])
        .status()?;
    if !status.success() {
        bail!("broker did not start");
    }
    let broker_pid: Option<u32> =
        std::fs::read_to_string(broker_dir.join("tansu.pid")).ok().and_then(|s| s.trim().parse().ok());
    let store_proc = spawn(
        &args.bin,
        "devstore",
        &["spanline-devstore"],
        &[("DEVSTORE_LISTEN", format!("127.0.0.1:{STORE_PORT}")), ("DEVSTORE_MEMORY_LIMIT", "12GiB".into())],
        &logs,
    )?;
    let store_url = format!("http://127.0.0.1:{STORE_PORT}");
    wait_http(&store_url).await?;
    let mut results = BTreeMap::<&str, Value>::new();
    let save = |results: &BTreeMap<&str, Value>| -> anyhow::Result<()> {
        if let Some(dir) = args.out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&args.out, serde_json::to_string_pretty(&json!({ "stages": results }))? + "\n")?;
        Ok(())
    };
    let machine = json!({
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "kernel": String::from_utf8_lossy(&Command::new("uname").arg("-sr").output()?.stdout).trim().to_owned(),
        "date": chrono_date(),
    });
    let p = args.partitions;

    // 1. Collector alone: as fast as possible into topic bench_a.
    eprintln!("[1/6] collector alone, as fast as possible ({} traces)", args.traces);
    create_topic(&bootstrap(), "bench_a", p).await?;
    let collector = spawn(&args.bin, "collector-a", &COLLECTOR_ARGS, &collector_env("bench_a", None), &logs)?;
    wait_http("http://127.0.0.1:24369/health/ready").await?;
    let others = Others::start(store_proc.pid(), broker_pid, ticks);
    let cpu = CpuMeter::new(collector.pid(), ticks);
    let report = send::run(plan(GRPC, args.traces, None, None, 8), None, true).await?;
    let collector_cpu = cpu.settled(Duration::from_secs(30)).await;
    let peak = report.spans_per_second();
    let spans_a = report.acknowledged_spans;
    let mut stage = json!({
        "spans": spans_a, "failed_requests": report.failed_requests,
        "spans_per_s": peak, "cpu_s_per_million_spans": per_million(collector_cpu, spans_a),
        "spans_per_cpu_s": spans_a as f64 / collector_cpu.max(1e-9),
        "cores_used": collector_cpu / report.elapsed.as_secs_f64().max(1e-9),
        "peak_rss_mib": mib(peak_rss(collector.pid())), "export_latency_ms": latency_ms(&report),
    });
    others.report(&mut stage, spans_a);
    results.insert("collector", stage);
    save(&results)?;

    // 1b. The peer: the Rotel agent on the same load, into its own topic of the same broker.
    if let Some(rotel) = &args.rotel {
        eprintln!("[1b] Rotel agent alone, the same load ({} traces)", args.traces);
        let others = Others::start(store_proc.pid(), broker_pid, ticks);
        let mut stage = rotel_stage(rotel, args.traces, p, &args.dir, &logs, ticks).await?;
        let spans = stage["spans"].as_u64().unwrap_or(0);
        others.report(&mut stage, spans);
        results.insert("rotel", stage);
        save(&results)?;
    }

    // 2. Collector latency at half its peak rate.
    eprintln!("[2/6] collector at half its peak rate ({:.0} spans/s) for {} s", peak / 2.0, args.seconds);
    let report =
        send::run(plan(GRPC, u64::MAX / 2, Some(peak / 2.0), Some(Duration::from_secs(args.seconds)), 8), None, true)
            .await?;
    let spans_half = report.acknowledged_spans;
    results.insert(
        "collector_half_rate",
        json!({ "offered_spans_per_s": peak / 2.0, "spans_per_s": report.spans_per_second(), "export_latency_ms": latency_ms(&report) }),
    );
    save(&results)?;
    collector.stop();
    let total_a = spans_a + spans_half;

    // 3. Floor: the same records, raw rdkafka.
    eprintln!("[3/6] floor: raw rdkafka produce and consume of the collector's records");
    let records = read_topic(&bootstrap(), "bench_a").await?;
    create_topic(&bootstrap(), "bench_floor", p).await?;
    results.insert("floor", floor(&records, total_a, "bench_floor", ticks).await?);
    save(&results)?;
    drop(records);

    // 4. Ingester alone: the whole backlog of bench_a into the store.
    eprintln!("[4/6] ingester alone: {total_a} spans of backlog into the dev store");
    let store = Store::new(&store_url, "");
    let ingester =
        spawn(&args.bin, "ingester-a", &INGESTER_ARGS, &ingester_env("bench_a", "bench-ingester", ""), &logs)?;
    let others = Others::start(store_proc.pid(), broker_pid, ticks);
    let cpu = CpuMeter::new(ingester.pid(), ticks);
    wait_http("http://127.0.0.1:24370/health/ready").await?;
    let started = Instant::now();
    let (indexed, last) = wait_indexed(&store, total_a, Duration::from_secs(600)).await?;
    let ingest_s = last.duration_since(started).as_secs_f64();
    let ingester_cpu = cpu.settled(Duration::from_secs(30)).await;
    let catch_up = indexed as f64 / ingest_s.max(1e-9);
    let mut stage = json!({
        "spans": indexed, "expected": total_a, "spans_per_s": catch_up,
        "cpu_s_per_million_spans": per_million(ingester_cpu, indexed),
        "spans_per_cpu_s": indexed as f64 / ingester_cpu.max(1e-9),
        "cores_used": ingester_cpu / ingest_s.max(1e-9),
        "peak_rss_mib": mib(peak_rss(ingester.pid())),
        "store_peak_rss_mib": mib(peak_rss(store_proc.pid())),
    });
    others.report(&mut stage, indexed);
    results.insert("ingester", stage);
    save(&results)?;
    ingester.stop();

    // 5. Replay of the same window into another prefix.
    eprintln!("[5/6] replay of bench_a into prefix `replay`");
    let replay = spawn(
        &args.bin,
        "replay",
        &[
            "spanline-ingester",
            "--config",
            "deploy/ingester.toml",
            "replay",
            "--topic",
            "bench_a",
            "--index-prefix",
            "replay",
            "--group",
            "bench-replay",
        ],
        &[
            ("SPANLINE_INGESTER__KAFKA__BROKERS", bootstrap()),
            ("SPANLINE_INGESTER__OPENSEARCH__URL", store_url.clone()),
        ],
        &logs,
    )?;
    let others = Others::start(store_proc.pid(), broker_pid, ticks);
    let cpu = CpuMeter::new(replay.pid(), ticks);
    // Replay exits once its window is indexed, and the kernel forgets an exited process's peak
    // RSS: sampled while it runs.
    let pid = replay.pid();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        while let Some(now) = peak_rss(pid) {
            peak = peak.max(now);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peak
    });
    let started = Instant::now();
    let replay_store = Store::new(&store_url, "replay");
    let (replayed, last) = wait_indexed(&replay_store, total_a, Duration::from_secs(600)).await?;
    let replay_s = last.duration_since(started).as_secs_f64();
    let replay_cpu = cpu.used();
    let mut replay_others = json!({});
    others.report(&mut replay_others, replayed);
    let mut replay = replay;
    let _ = replay.child.wait();
    let replay_rss = mib(Some(sampler.await.unwrap_or(0)));
    drop(replay);

    // 6. The whole pipeline at a steady rate, with verification and freshness.
    // A quarter of the collector's peak: the headroom a production deployment keeps. Replay is
    // compared with this rate.
    let steady = peak / 4.0;
    eprintln!("[6/6] whole pipeline at {steady:.0} spans/s for {} s, verified in the store", args.seconds);
    // An empty store, so the stage measures the pipeline rather than the dev store's size.
    reqwest::Client::new().post(format!("{store_url}/_devstore/reset")).send().await?.error_for_status()?;
    create_topic(&bootstrap(), "bench_b", p).await?;
    let collector = spawn(&args.bin, "collector-b", &COLLECTOR_ARGS, &collector_env("bench_b", None), &logs)?;
    let ingester =
        spawn(&args.bin, "ingester-b", &INGESTER_ARGS, &ingester_env("bench_b", "bench-pipeline", "pipeline"), &logs)?;
    wait_http("http://127.0.0.1:24369/health/ready").await?;
    wait_http("http://127.0.0.1:24370/health/ready").await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (c_cpu, i_cpu) = (CpuMeter::new(collector.pid(), ticks), CpuMeter::new(ingester.pid(), ticks));
    // Its own index prefix, so the store's scans for verification see only this stage's spans.
    let store = Store::new(&store_url, "pipeline");
    let baseline = store.count(None).await.unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    let watcher = tokio::spawn(verify::watch_freshness(store.clone(), rx, Duration::from_secs(60)));
    let report = send::run(
        plan(GRPC, u64::MAX / 2, Some(steady), Some(Duration::from_secs(args.seconds)), 4),
        Some((tx, Duration::from_millis(100))),
        true,
    )
    .await?;
    let (freshness, samples, unseen) = watcher.await?;
    let verdict =
        verify::check(&store, baseline, report.acknowledged_spans, &samples, Duration::from_secs(120)).await?;
    let spans_b = report.acknowledged_spans;
    results.insert(
        "pipeline",
        json!({
            "offered_spans_per_s": steady, "spans_per_s": report.spans_per_second(), "spans": spans_b,
            "export_latency_ms": latency_ms(&report),
            "freshness_ms": { "samples": freshness.len(), "unseen": unseen, "p50": freshness.value_at_quantile(0.5), "p99": freshness.value_at_quantile(0.99), "max": freshness.max() },
            "verify": { "expected": verdict.expected, "found": verdict.found, "sampled_traces": verdict.samples, "exact": verdict.samples_exact, "ok": verdict.ok() },
            "collector_cpu_s_per_million_spans": per_million(c_cpu.used(), spans_b),
            "ingester_cpu_s_per_million_spans": per_million(i_cpu.used(), spans_b),
            "collector_peak_rss_mib": mib(peak_rss(collector.pid())),
            "ingester_peak_rss_mib": mib(peak_rss(ingester.pid())),
        }),
    );
    save(&results)?;
    let mut stage = json!({
        "spans": replayed, "spans_per_s": replayed as f64 / replay_s.max(1e-9),
        "cpu_s_per_million_spans": per_million(replay_cpu, replayed), "peak_rss_mib": replay_rss,
        "spans_per_cpu_s": replayed as f64 / replay_cpu.max(1e-9),
        "cores_used": replay_cpu / replay_s.max(1e-9),
        "vs_pipeline_steady_rate": (replayed as f64 / replay_s.max(1e-9)) / report.spans_per_second().max(1e-9),
        "vs_ingester_catch_up": (replayed as f64 / replay_s.max(1e-9)) / catch_up.max(1e-9),
    });
    if let (Some(stage), Value::Object(others)) = (stage.as_object_mut(), replay_others) {
        stage.extend(others);
    }
    results.insert("replay", stage);
    collector.stop();
    ingester.stop();

    // Overload: 3x the collector's capacity offered to a collector with a 64 MiB in-flight bound,
    // with hostile requests and slow clients mixed in (issue 12).
    eprintln!(
        "[+] overload: 3x capacity ({:.0} spans/s) plus hostile requests and 100 slow clients against max_inflight_bytes = 64MiB, max_concurrent_requests = 64, for {} s",
        peak * 3.0,
        args.seconds
    );
    create_topic(&bootstrap(), "bench_c", p).await?;
    let mut env = collector_env("bench_c", Some("64MiB"));
    env.push(("SPANLINE_COLLECTOR__LIMITS__MAX_CONCURRENT_REQUESTS", "64".into()));
    let collector = spawn(&args.bin, "collector-c", &COLLECTOR_ARGS, &env, &logs)?;
    wait_http("http://127.0.0.1:24369/health/ready").await?;
    let hostile = tokio::spawn(hostile_mix(Instant::now() + Duration::from_secs(args.seconds)));
    let report =
        // Enough connections that 3x the rate is really offered while exports wait (64 MiB of
        // in-flight bytes is about 250 requests).
        send::run(plan(GRPC, u64::MAX / 2, Some(peak * 3.0), Some(Duration::from_secs(args.seconds)), 400), None, true)
            .await?;
    let hostile = hostile.await??;
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    results.insert(
        "overload",
        json!({
            "offered_spans_per_s": peak * 3.0, "acknowledged_spans_per_s": report.spans_per_second(),
            "refused_requests": report.failed_requests, "requests": report.requests,
            "collector_peak_rss_mib": mib(peak_rss(collector.pid())), "max_inflight_mib": 64, "max_concurrent_requests": 64,
            // docs/collector.md: 1.25 x max_inflight_bytes + workers x max_request_bytes
            // + 16 KiB x max_connections (4096) + 40 MiB.
            "memory_formula_mib": 1.25 * 64.0 + workers as f64 * 16.0 + 64.0 + 40.0,
            "export_latency_ms": latency_ms(&report),
            "hostile": hostile,
        }),
    );
    save(&results)?;
    collector.stop();
    let broker_rss = broker_pid.and_then(peak_rss);
    drop(store_proc);
    let _ = Command::new("scripts/broker.sh").args(["stop", &broker_dir.to_string_lossy()]).status();

    let goals = goals(&results);
    let all = json!({ "machine": machine, "broker_peak_rss_mib": mib(broker_rss), "stages": results, "goals": goals });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&all)? + "\n")?;
    println!("{}", table(&all));
    println!("results written to {}", args.out.display());
    Ok(())
}

/// The goals, each met or missed (or not measured), from the stages' figures.
fn goals(stages: &BTreeMap<&str, Value>) -> Value {
    let get = |stage: &str, path: &str| stages.get(stage).and_then(|v| v.pointer(path)).and_then(Value::as_f64);
    let collector = get("collector", "/spans_per_cpu_s");
    let rotel = get("rotel", "/spans_per_cpu_s");
    let ratio = collector.zip(rotel).map(|(c, r)| c / r.max(1e-9));
    let overload = get("overload", "/collector_peak_rss_mib").zip(get("overload", "/memory_formula_mib"));
    let rows = [
        ("collector >= 300 000 spans per CPU-second", collector, collector.map(|v| v >= 300_000.0)),
        ("collector >= 1.5 x the Rotel agent per CPU-second", ratio, ratio.map(|v| v >= 1.5)),
        (
            "ingester >= 250 000 spans per CPU-second",
            get("ingester", "/spans_per_cpu_s"),
            get("ingester", "/spans_per_cpu_s").map(|v| v >= 250_000.0),
        ),
        (
            "end-to-end p99 freshness <= 2 s (ms)",
            get("pipeline", "/freshness_ms/p99"),
            get("pipeline", "/freshness_ms/p99").map(|v| v <= 2_000.0),
        ),
        (
            "replay >= 3 x the live pipeline's steady rate",
            get("replay", "/vs_pipeline_steady_rate"),
            get("replay", "/vs_pipeline_steady_rate").map(|v| v >= 3.0),
        ),
        (
            "collector peak RSS at 3 x overload within its formula (MiB)",
            overload.map(|(rss, _)| rss),
            overload.map(|(rss, bound)| rss <= bound),
        ),
        (
            "every acknowledged span indexed exactly once (pipeline stage)",
            get("pipeline", "/verify/found"),
            stages.get("pipeline").and_then(|v| v.pointer("/verify/ok")).and_then(Value::as_bool),
        ),
    ];
    Value::Array(
        rows.iter()
            .map(|(goal, value, met)| {
                json!({ "goal": goal, "value": value, "status": met.map_or("not measured", |m| if m { "met" } else { "missed" }) })
            })
            .collect(),
    )
}

/// One table of every stage: Spanline, the Rotel peer and the raw rdkafka floor side by side, CPU
/// per span from the kernel, peak RSS, and the goals.
fn table(all: &Value) -> String {
    use std::fmt::Write as _;
    let num = |v: &Value, path: &str| v.pointer(path).and_then(Value::as_f64);
    let fmt = |v: Option<f64>, digits: usize| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"));
    let stages = &all["stages"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<44} {:>10} {:>14} {:>12} {:>10} {:>7}  notes",
        "stage", "spans/s", "spans/CPU-s", "CPU us/span", "RSS MiB", "cores"
    );
    let mut row = |name: &str, stage: &str, notes: String| {
        let v = &stages[stage];
        if v.is_null() {
            return;
        }
        let _ = writeln!(
            out,
            "{:<44} {:>10} {:>14} {:>12} {:>10} {:>7}  {notes}",
            name,
            fmt(num(v, "/spans_per_s"), 0),
            fmt(num(v, "/spans_per_cpu_s"), 0),
            fmt(num(v, "/cpu_s_per_million_spans"), 2),
            fmt(num(v, "/peak_rss_mib"), 1),
            fmt(num(v, "/cores_used"), 2),
        );
    };
    let floor = &stages["floor"];
    row("collector (Spanline), as fast as possible", "collector", {
        let c = &stages["collector"];
        format!(
            "export p99 {} ms; broker {} CPU-s/M spans; machine busy {} cores",
            fmt(num(c, "/export_latency_ms/p99"), 0),
            fmt(num(c, "/broker_cpu_s_per_million_spans"), 1),
            fmt(num(c, "/machine_busy_cores"), 2)
        )
    });
    row("Rotel agent, the same load", "rotel", {
        let r = &stages["rotel"];
        format!(
            "export p99 {} ms; {} of {} acknowledged spans in the topic; broker {} CPU-s/M spans",
            fmt(num(r, "/export_latency_ms/p99"), 0),
            fmt(num(r, "/spans_in_topic"), 0),
            fmt(num(r, "/spans"), 0),
            fmt(num(r, "/broker_cpu_s_per_million_spans"), 1)
        )
    });
    row("ingester, backlog -> dev store", "ingester", {
        let i = &stages["ingester"];
        format!(
            "dev store {} us CPU/doc, broker {} CPU-s/M spans; machine busy {} cores",
            fmt(num(i, "/store_cpu_us_per_document"), 2),
            fmt(num(i, "/broker_cpu_s_per_million_spans"), 1),
            fmt(num(i, "/machine_busy_cores"), 2)
        )
    });
    row("replay of the same window", "replay", {
        let r = &stages["replay"];
        format!(
            "{} x the pipeline's steady rate; dev store {} us CPU/doc",
            fmt(num(r, "/vs_pipeline_steady_rate"), 2),
            fmt(num(r, "/store_cpu_us_per_document"), 2)
        )
    });
    for (what, notes) in [
        ("produce", "raw rdkafka produce of the collector's records"),
        ("consume", "raw rdkafka consume of the same records"),
    ] {
        let cpu = num(floor, &format!("/{what}/cpu_s_per_million_spans"));
        let _ = writeln!(
            out,
            "{:<44} {:>10} {:>14} {:>12} {:>10} {:>7}  {notes}",
            format!("floor: {what}"),
            fmt(num(floor, &format!("/{what}/spans_per_s")), 0),
            fmt(cpu.map(|s| 1e6 / s.max(1e-9)), 0),
            fmt(cpu, 2),
            "-",
            "-"
        );
    }
    let pipeline = &stages["pipeline"];
    let _ = writeln!(
        out,
        "{:<44} {:>10} {:>14} {:>12} {:>10} {:>7}  freshness p50 {} ms p99 {} ms; verified {} of {}; collector {} / ingester {} CPU-s/M spans",
        "whole pipeline, steady rate",
        fmt(num(pipeline, "/spans_per_s"), 0),
        "-",
        "-",
        "-",
        "-",
        fmt(num(pipeline, "/freshness_ms/p50"), 0),
        fmt(num(pipeline, "/freshness_ms/p99"), 0),
        fmt(num(pipeline, "/verify/found"), 0),
        fmt(num(pipeline, "/verify/expected"), 0),
        fmt(num(pipeline, "/collector_cpu_s_per_million_spans"), 2),
        fmt(num(pipeline, "/ingester_cpu_s_per_million_spans"), 2),
    );
    let overload = &stages["overload"];
    let _ = writeln!(
        out,
        "{:<44} {:>10} {:>14} {:>12} {:>10} {:>7}  {} of {} requests refused; RSS bound {} MiB",
        "overload: 3 x capacity + hostile mix",
        fmt(num(overload, "/acknowledged_spans_per_s"), 0),
        "-",
        "-",
        fmt(num(overload, "/collector_peak_rss_mib"), 1),
        "-",
        fmt(num(overload, "/refused_requests"), 0),
        fmt(num(overload, "/requests"), 0),
        fmt(num(overload, "/memory_formula_mib"), 0),
    );
    let _ = writeln!(out, "\ngoals:");
    for goal in all["goals"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<14} {:<62} {}",
            goal["status"].as_str().unwrap_or("?"),
            goal["goal"].as_str().unwrap_or("?"),
            fmt(goal["value"].as_f64(), 2)
        );
    }
    out
}

/// Hostile traffic for the overload stage, until `end`: resource amplifiers (an 800 KiB resource in
/// front of 5 000 traces), decoded-size amplifiers (300 000 empty attributes) and 100 slow HTTP
/// clients (80 trickling a body, 20 their headers). What each got.
async fn hostile_mix(end: Instant) -> anyhow::Result<Value> {
    use spanline_testkit::fixtures::hostile;
    let amplifier = tokio::spawn(hostile_grpc(hostile::resource_amplifier(9_000_000, 5_000, 800 * 1024), end));
    let empty = tokio::spawn(hostile_grpc(hostile::empty_attributes(9_100_000, 300_000), end));
    let slow: Vec<_> = (0..100).map(|i| std::thread::spawn(move || slow_client(i % 5 != 0, end))).collect();
    let amplifier = amplifier.await??;
    let empty = empty.await??;
    let cut = slow.into_iter().map(|h| h.join().unwrap_or(false)).filter(|&cut| cut).count();
    Ok(
        json!({ "resource_amplifier": amplifier, "empty_attributes": empty, "slow_clients": 100, "slow_clients_cut": cut }),
    )
}

/// Sends `request` over gRPC (gzip) back to back until `end`; outcomes by status code.
async fn hostile_grpc(
    request: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
    end: Instant,
) -> anyhow::Result<BTreeMap<String, u64>> {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let mut client = TraceServiceClient::connect(GRPC)
        .await?
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_encoding_message_size(usize::MAX);
    let mut outcomes = BTreeMap::new();
    while Instant::now() < end {
        let outcome = match client.export(request.clone()).await {
            Ok(_) => "ok".to_owned(),
            Err(status) => format!("{:?}", status.code()),
        };
        *outcomes.entry(outcome).or_insert(0) += 1;
    }
    Ok(outcomes)
}

/// A client sending one byte a second of a request it never finishes; whether the collector cut it
/// (closed the connection) before `end`.
fn slow_client(body: bool, end: Instant) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect("127.0.0.1:24318") else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    if stream.write_all(spanline_testkit::fixtures::hostile::slow_http_head(body).as_bytes()).is_err() {
        return true;
    }
    while Instant::now() < end {
        if stream.write_all(b"x").is_err() {
            return true;
        }
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
        std::thread::sleep(Duration::from_millis(800));
    }
    false
}

fn chrono_date() -> String {
    String::from_utf8_lossy(
        &Command::new("date").arg("-u").arg("+%Y-%m-%dT%H:%M:%SZ").output().map(|o| o.stdout).unwrap_or_default(),
    )
    .trim()
    .to_owned()
}
