//! What the group-failure tests rely on, shown with plain librdkafka consumers: the mock cluster
//! (`mock-kafka`) hands a SIGKILLed member's partitions to a member that joins after it died, once
//! the dead member's session times out. Tansu 0.6.0 never does (REFERENCE.md §7), which is why
//! `ingester/tests/group.rs` runs against the mock.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, Consumer},
};
use spanline_testkit::{MockKafka, process::Killed};

const SESSION: Duration = Duration::from_secs(6);
const PARTITIONS: usize = 4;

fn member(bootstrap: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "plain")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", SESSION.as_millis().to_string())
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer");
    consumer.subscribe(&["t"]).expect("subscribed");
    consumer
}

fn owned(consumer: &BaseConsumer) -> usize {
    consumer.assignment().map(|a| a.count()).unwrap_or(0)
}

/// The member that gets SIGKILLed: this test binary started again on this one test, which prints
/// `assigned N` whenever its assignment changes. Does nothing unless started so.
#[test]
#[ignore = "run by mock_cluster_hands_a_sigkilled_members_partitions_to_a_member_that_joins_later"]
fn member_process() {
    let Ok(bootstrap) = std::env::var("MOCK_MEMBER_BOOTSTRAP") else { return };
    let consumer = member(&bootstrap);
    let mut last = usize::MAX;
    loop {
        let _ = consumer.poll(Duration::from_millis(100));
        let now = owned(&consumer);
        if now != last {
            println!("assigned {now}");
            last = now;
        }
    }
}

#[test]
fn mock_cluster_hands_a_sigkilled_members_partitions_to_a_member_that_joins_later() {
    let mock = MockKafka::start(&[("t", 4)]).expect("mock cluster");
    let mut first = Killed(
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["member_process", "--exact", "--ignored", "--nocapture"])
            .env("MOCK_MEMBER_BOOTSTRAP", mock.bootstrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("first member"),
    );
    let (tx, rx) = mpsc::channel();
    let stdout = first.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("first member assigned");
        if line == format!("assigned {PARTITIONS}") {
            break;
        }
    }

    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let killed = Instant::now();
    let second = member(mock.bootstrap());
    while owned(&second) < PARTITIONS {
        assert!(
            killed.elapsed() < SESSION * 4,
            "the new member owns {} of {PARTITIONS} partitions {:?} after the SIGKILL",
            owned(&second),
            killed.elapsed()
        );
        let _ = second.poll(Duration::from_millis(100));
    }
    let took = killed.elapsed();
    println!("a member joining after the SIGKILL owned every partition {took:?} after it ({SESSION:?} sessions)");
    assert!(took >= SESSION / 2, "handed over in {took:?}: before the dead member's session could expire?");
}
