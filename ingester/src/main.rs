//! `spanline-ingester`: parses flags, loads config, starts logging and runs the ingester.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Kafka → OpenSearch span ingester.
#[derive(Debug, Parser)]
#[command(name = "spanline-ingester", version)]
struct Args {
    /// Configuration file (TOML); `SPANLINE_INGESTER__SECTION__KEY` variables override it.
    #[arg(long, short, env = "SPANLINE_INGESTER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    spanline_common::telemetry::init("info,librdkafka=warn,rdkafka=warn");
    let args = Args::parse();
    let config =
        spanline_ingester::Config::load(args.config.as_deref()).context("cannot load ingester configuration")?;
    let shutdown = spanline_common::shutdown::token_on_signal();
    spanline_ingester::run(config, shutdown).await
}
