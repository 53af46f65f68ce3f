//! `spanline-devstore`: the OpenSearch-compatible in-memory store for tests, benchmarks and `make up`.

use anyhow::Context;
use clap::Parser;
use spanline_devstore::{Args, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    spanline_common::telemetry::init("info");
    let args = Args::parse();
    let settings = args.settings().context("invalid arguments")?;
    let shutdown = spanline_common::shutdown::token_on_signal();
    run(settings, shutdown).await
}
