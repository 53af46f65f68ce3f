//! Logging setup, to stderr (colour only on a terminal). `RUST_LOG` selects what is logged (default `info`); `SPANLINE_LOG_FORMAT=json`
//! switches to one JSON object per line. librdkafka's own logs reach the same output through the
//! `log` bridge.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. Call once, from `main`.
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("SPANLINE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry.with(fmt::layer().json().with_current_span(false).with_writer(std::io::stderr)).try_init()
    } else {
        let ansi = std::io::stderr().is_terminal();
        registry.with(fmt::layer().with_target(true).with_ansi(ansi).with_writer(std::io::stderr)).try_init()
    };
    if let Err(error) = result {
        eprintln!("logging already initialised: {error}");
    }
}
