//! `spanline-ingester`: parses flags, loads config, starts logging and runs the ingester, or a
//! replay (`spanline-ingester replay --help`).

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use spanline_ingester::replay::{self, ReplayArgs};

/// Kafka → OpenSearch span ingester.
#[derive(Debug, Parser)]
#[command(name = "spanline-ingester", version)]
struct Args {
    /// Configuration file (TOML); `SPANLINE_INGESTER__SECTION__KEY` variables override it.
    #[arg(long, short, env = "SPANLINE_INGESTER_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Re-index a window of a topic (or re-drive the dead-letter topic) into OpenSearch, then stop.
    /// Uses its own consumer group; the live ingesters are untouched. Interrupted, it resumes when
    /// run again with the same arguments.
    Replay(ReplayArgs),
}

/// How long the runtime waits, after the ingester returned, for blocking work still running: a
/// consumer close that a vanished broker holds up must not keep the process past its grace.
const EXIT_WAIT: Duration = Duration::from_millis(500);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let result = runtime.block_on(run(args));
    runtime.shutdown_timeout(EXIT_WAIT);
    result
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = spanline_common::shutdown::token_on_signal();
    match args.command {
        None => {
            spanline_common::telemetry::init("info,librdkafka=warn,rdkafka=warn");
            let config = spanline_ingester::Config::load(args.config.as_deref())
                .context("cannot load ingester configuration")?;
            spanline_ingester::run(config, shutdown).await
        }
        Some(Command::Replay(replay_args)) => {
            spanline_common::telemetry::init("warn,spanline_ingester::replay=info");
            let config = spanline_ingester::Config::load(args.config.as_deref())
                .context("cannot load ingester configuration")?;
            let summary = replay::run(config, replay_args, shutdown).await?;
            // The summary is the command's output.
            use std::io::Write as _;
            writeln!(std::io::stdout().lock(), "{summary}")?;
            Ok(())
        }
    }
}
