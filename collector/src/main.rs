//! `spanline-collector`: parses flags, loads config, starts logging and runs the collector.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// OTLP receiver that publishes spans to Kafka, keyed by trace id.
#[derive(Debug, Parser)]
#[command(name = "spanline-collector", version)]
struct Args {
    /// Configuration file (TOML); `SPANLINE_COLLECTOR__SECTION__KEY` variables override it.
    #[arg(long, short, env = "SPANLINE_COLLECTOR_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    spanline_common::telemetry::init("info,librdkafka=warn,rdkafka=warn");
    let args = Args::parse();
    let config =
        spanline_collector::Config::load(args.config.as_deref()).context("cannot load collector configuration")?;
    let shutdown = spanline_common::shutdown::token_on_signal();
    spanline_collector::run(config, shutdown).await
}
