//! librdkafka's mock cluster as a separate process (`src/bin/mock-kafka.rs`), for group failures
//! Tansu 0.6.0 does not model: it expires a member that stops heartbeating after the session timeout
//! and hands its partitions to the others, whatever the assignment strategy. It is not a full
//! broker; docs/development.md lists what it leaves out.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, bail};

use crate::process::Killed;

/// A mock cluster owned by one test, killed when dropped (its records go with it: it keeps them in
/// memory only).
#[derive(Debug)]
pub struct MockKafka {
    bootstrap: String,
    log: PathBuf,
    _child: Killed,
}

impl MockKafka {
    /// Starts `mock-kafka` with `topics` (name, partitions) and waits for its bootstrap servers.
    pub fn start(topics: &[(&str, i32)]) -> anyhow::Result<Self> {
        let log = std::env::temp_dir().join(format!("spanline-mock-kafka-{}.log", crate::free_port()));
        let mut command = Command::new(mock_kafka_bin()?);
        for (name, partitions) in topics {
            command.arg("--topic").arg(format!("{name}:{partitions}"));
        }
        let mut child = Killed(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(std::fs::File::create(&log)?))
                .spawn()
                .context("cannot start mock-kafka")?,
        );
        let stdout = child.stdout.take().context("mock-kafka stdout")?;
        // The first line is the bootstrap list; read it on a thread so that a mock that never
        // prints fails the test instead of hanging it.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .with_context(|| format!("mock-kafka printed no bootstrap servers; log in {}", log.display()))??;
        let bootstrap = line.trim().to_owned();
        if bootstrap.is_empty() {
            bail!("mock-kafka exited without bootstrap servers; log in {}", log.display());
        }
        Ok(Self { bootstrap, log, _child: child })
    }

    /// The cluster's `bootstrap.servers` (loopback listeners, one per mock broker).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Where the mock's stderr goes.
    pub fn log(&self) -> &std::path::Path {
        &self.log
    }
}

/// The `mock-kafka` binary: `$MOCK_KAFKA_BIN`, else beside the running test's directory
/// (`target/debug/deps/..`), else under `$CARGO_TARGET_DIR/debug`. Cargo builds another package's
/// binaries only when asked: `cargo build -p spanline-testkit --bin mock-kafka` (scripts/test.sh does).
pub fn mock_kafka_bin() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("MOCK_KAFKA_BIN") {
        return Ok(PathBuf::from(path));
    }
    let beside_tests = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(|deps| deps.parent()).map(|dir| dir.join("mock-kafka")));
    let in_target = std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("debug/mock-kafka"));
    for candidate in beside_tests.into_iter().chain(in_target) {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "mock-kafka is missing: build it with `cargo build -p spanline-testkit --bin mock-kafka` (scripts/test.sh does)"
    )
}
