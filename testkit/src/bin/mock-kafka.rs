//! `mock-kafka`: librdkafka's own mock cluster (`rdkafka::mocking::MockCluster`) as a process of its
//! own, for the group-failure tests (`ingester/tests/group.rs`) that Tansu 0.6.0 cannot serve: its
//! coordinator never hands a SIGKILLed member's partitions to another member, while the mock expires
//! a silent member after the session timeout and rebalances (REFERENCE.md §7).
//!
//! `mock-kafka --topic otlp_spans:4 --topic otlp_spans_dlq:1` creates the topics (the mock does not
//! serve the CreateTopics admin API), prints the bootstrap servers as one line on stdout, and serves
//! on loopback until it is killed. Started and killed by `spanline_testkit::MockKafka`.

use std::io::Write;

use anyhow::{Context, bail};
use clap::Parser;
use rdkafka::mocking::MockCluster;

#[derive(Debug, Parser)]
#[command(about = "librdkafka's mock Kafka cluster, serving until killed")]
struct Args {
    /// A topic to create, as NAME:PARTITIONS (repeatable).
    #[arg(long = "topic", env = "MOCK_KAFKA_TOPICS", value_delimiter = ',')]
    topics: Vec<String>,
    /// Brokers in the cluster (every partition is led by one of them).
    #[arg(long, env = "MOCK_KAFKA_BROKERS", default_value_t = 1)]
    brokers: i32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cluster = MockCluster::new(args.brokers).context("cannot start the mock cluster")?;
    for spec in &args.topics {
        let Some((name, partitions)) = spec.rsplit_once(':') else {
            bail!("--topic takes NAME:PARTITIONS, got {spec:?}");
        };
        let partitions: i32 = partitions.parse().with_context(|| format!("partitions of {spec:?}"))?;
        cluster.create_topic(name, partitions, 1).with_context(|| format!("cannot create topic {name}"))?;
    }
    // The one line the test kit waits for; flushed, as stdout is a pipe there.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", cluster.bootstrap_servers())?;
    stdout.flush()?;
    drop(stdout);
    // The cluster serves from librdkafka's own threads; this one only keeps it alive until killed.
    loop {
        std::thread::park();
    }
}
