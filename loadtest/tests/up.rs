//! `make up`'s script (`scripts/up.sh`), run as a user runs it, several times in a row over the same
//! run directory (so the broker keeps its topics, offsets and group): each run gets spans from the
//! load generator, indexes exactly that run's spans into its fresh dev store (a record the previous
//! run did not commit would be indexed again and counted), and stops within its grace when the
//! terminal's Ctrl-C reaches the script's whole process group — or after its ingester is SIGKILLed.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, Consumer},
};
use spanline_testkit::{committed_sum, free_port, metric, settled_count, wait_for};

const PARTITIONS: i32 = 3;
/// The grace the script gives each component; the whole stack must stop within it (plus the
/// script's own margin).
const GRACE_SECS: u64 = 10;
/// What a stop of healthy components may take.
const STOP_SECS: u64 = 8;

/// The directory holding the workspace's debug binaries, built if one is missing.
fn bin_dir() -> PathBuf {
    let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_spanline-loadtest"));
    let dir = loadtest.parent().expect("bin dir").to_path_buf();
    let names = ["spanline-collector", "spanline-ingester", "spanline-devstore"];
    if names.iter().any(|n| !dir.join(n).is_file()) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--locked"]).current_dir(workspace());
        for n in names {
            build.args(["--bin", n]);
        }
        assert!(build.status().expect("cargo build runs").success(), "binaries build");
    }
    dir
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

/// Two adjacent free ports (the script puts the first ingester's admin port next to the first
/// collector's).
fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

struct Ports {
    broker: u16,
    store: u16,
    grpc: u16,
    http: u16,
    admin: u16,
}

/// `scripts/up.sh` in its own process group, as a terminal starts a foreground job.
struct Up {
    child: Child,
    run_dir: PathBuf,
}

impl Up {
    /// With `piped_stderr`, the script's stderr is a pipe the test can close, as when `make up | tee`
    /// dies or the terminal goes away.
    fn start(run_dir: &Path, ports: &Ports, bin: &Path, piped_stderr: bool) -> Self {
        // A process started in the background of a non-interactive shell (as CI may start `make
        // test`) inherits SIGINT ignored, one started under `nohup` SIGHUP, and bash cannot trap a
        // signal ignored on entry: reset the signals this test sends to their defaults, as a
        // terminal's foreground job has them.
        let child = Command::new("env")
            .arg("--default-signal=INT,HUP,TERM")
            .arg(workspace().join("scripts/up.sh"))
            .env("RUN_DIR", run_dir)
            .env("SPANLINE_BIN", bin)
            .env("PARTITIONS", PARTITIONS.to_string())
            .env("BROKER_PORT", ports.broker.to_string())
            .env("STORE_PORT", ports.store.to_string())
            .env("GRPC_PORT", ports.grpc.to_string())
            .env("HTTP_PORT", ports.http.to_string())
            .env("ADMIN_PORT", ports.admin.to_string())
            .env("SHUTDOWN_GRACE", GRACE_SECS.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if piped_stderr { Stdio::piped() } else { Stdio::inherit() })
            .process_group(0)
            .spawn()
            .expect("up.sh starts");
        Self { child, run_dir: run_dir.to_path_buf() }
    }

    /// The pids the script recorded, by name.
    fn pids(&self) -> Vec<(String, u32)> {
        let text = std::fs::read_to_string(self.run_dir.join("pids")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (name, pid) = l.split_once(' ')?;
                Some((name.to_owned(), pid.trim().parse().ok()?))
            })
            .collect()
    }

    fn broker_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.run_dir.join("broker/tansu.pid")).ok()?.trim().parse().ok()
    }

    /// Signals the script's whole process group, as a terminal's Ctrl-C does.
    fn signal_group(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), "--".into(), format!("-{}", self.child.id())])
            .status()
            .expect("kill runs");
        assert!(status.success(), "process group signalled");
    }

    /// Waits up to `limit` for the script to exit; its exit time.
    fn wait_exit(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.child.try_wait().expect("wait").is_some() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("make up did not stop within {limit:?}");
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal_group("TERM");
            let _ = self.child.wait();
        }
        // A failed test must not leave the broker or a component behind.
        for (_, pid) in self.pids() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        if let Some(pid) = self.broker_pid() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(false)
}

/// Sends `traces` traces through the first collector; returns the spans acknowledged.
fn send(bin: &Path, grpc: u16, traces: u64) -> u64 {
    let output = Command::new(bin.join("spanline-loadtest"))
        .args(["--endpoint", &format!("http://127.0.0.1:{grpc}"), "--traces", &traces.to_string(), "--json"])
        .output()
        .expect("loadtest runs");
    assert!(output.status.success(), "loadtest: {}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("loadtest json");
    assert_eq!(report["failed_requests"].as_u64(), Some(0), "{report}");
    report["acknowledged_spans"].as_u64().expect("acknowledged_spans")
}

/// Sum of the high watermarks of the span topic.
fn high_watermarks(bootstrap: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "up-test-probe")
        .create()
        .expect("probe");
    (0..PARTITIONS)
        .map(|p| consumer.fetch_watermarks("otlp_spans", p, Duration::from_secs(5)).expect("watermarks").1)
        .sum()
}

async fn ready(admin: u16) -> bool {
    reqwest::get(format!("http://127.0.0.1:{admin}/health/ready")).await.is_ok_and(|r| r.status().is_success())
}

/// One run of the stack: start, wait until ready and owning every partition, send, check that
/// exactly this run's spans are indexed. Returns the running stack.
async fn one_run(run: usize, run_dir: &Path, ports: &Ports, bin: &Path) -> Up {
    let up = Up::start(run_dir, ports, bin, run == 5);
    let (collector_admin, ingester_admin) = (ports.admin, ports.admin + 1);
    wait_for(Duration::from_secs(90), || async move {
        (ready(collector_admin).await && ready(ingester_admin).await).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("run {run}: stack not ready: {e}"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], ingester_admin));
    wait_for(Duration::from_secs(60), || async move {
        (metric(addr, "spanline_ingester_assigned_partitions", "").await.ok()? >= f64::from(PARTITIONS)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("run {run}: the restarted ingester never got the partitions back: {e}"));

    let acknowledged = send(bin, ports.grpc, 150);
    assert!(acknowledged > 0);
    let store = format!("http://127.0.0.1:{}", ports.store);
    let indexed = settled_count(&store, "jaeger-span-*", acknowledged, Duration::from_secs(60)).await;
    assert_eq!(
        indexed, acknowledged,
        "run {run}: the fresh store must hold exactly this run's spans (more: an earlier run's records were not committed)"
    );
    // Ids are deterministic, so one of this run's records read twice would not change the count.
    let conflicts = spanline_testkit::span_conflicts(&store).await.expect("store stats");
    assert_eq!(conflicts, 0, "run {run}: a span of this run was written twice");
    up
}

#[tokio::test(flavor = "multi_thread")]
async fn make_up_stops_cleanly_on_ctrl_c_and_restarts_every_time() {
    let bin = bin_dir();
    let run_dir = tempfile::tempdir().expect("run dir");
    let ports = Ports {
        broker: free_port(),
        store: free_port(),
        grpc: free_port(),
        http: free_port(),
        admin: free_port_pair(),
    };
    let bootstrap = format!("127.0.0.1:{}", ports.broker);

    // Runs 0-2: Ctrl-C each time. Run 3: the ingester is SIGKILLed (the script notices and stops the
    // rest). Run 4: the stack comes back after that and still indexes. Run 5: the terminal goes away
    // (SIGHUP) with the script's stderr a closed pipe: the stop must not die on its first message.
    for run in 0..6 {
        let mut up = one_run(run, run_dir.path(), &ports, &bin).await;
        let pids = up.pids();
        let broker = up.broker_pid().expect("broker pid");
        assert_eq!(pids.len(), 3, "devstore, collector, ingester: {pids:?}");
        if run == 3 {
            // Offsets are committed within a second of being stored; SIGKILL once they are, so the
            // next run's exact count holds (what SIGKILL before the commit does is crash.rs's test).
            let bootstrap = bootstrap.clone();
            wait_for(Duration::from_secs(30), || {
                let bootstrap = bootstrap.clone();
                async move {
                    let b = bootstrap.clone();
                    tokio::task::spawn_blocking(move || {
                        committed_sum(&b, "spanline-ingester", "otlp_spans", PARTITIONS).ok()
                            == Some(high_watermarks(&b))
                    })
                    .await
                    .ok()?
                    .then_some(())
                }
            })
            .await
            .expect("offsets committed");
            let ingester = pids.iter().find(|(n, _)| n.starts_with("ingester")).expect("ingester pid").1;
            Command::new("kill").args(["-KILL", &ingester.to_string()]).status().expect("kill");
        } else if run == 5 {
            drop(up.child.stderr.take());
            up.signal_group("HUP");
        } else {
            up.signal_group("INT");
        }
        let took = up.wait_exit(Duration::from_secs(GRACE_SECS * 3 + 30));
        // Healthy components stop in a few seconds; waiting out a grace means one of them could not
        // finish (the broker or the store stopped before the ingester committed).
        assert!(
            took <= Duration::from_secs(STOP_SECS),
            "run {run}: the stack took {took:?} to stop (grace {GRACE_SECS}s, expected under {STOP_SECS}s)"
        );
        if run != 3 {
            let log = std::fs::read_to_string(run_dir.path().join("logs/ingester-0.log")).expect("ingester log");
            assert!(log.contains("ingester stopped"), "run {run}: the ingester stopped on its own:\n{log}");
            for bad in ["shutdown grace passed", "AllBrokersDown", "final offset commit failed"] {
                assert!(!log.contains(bad), "run {run}: the ingester's drain met `{bad}`:\n{log}");
            }
        }
        for (name, pid) in &pids {
            assert!(!alive(*pid), "run {run}: {name} (pid {pid}) still running after the script exited");
        }
        assert!(!alive(broker), "run {run}: the broker is still running after the script exited");
    }
}
