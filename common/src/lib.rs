//! What the collector and the ingester share. Nothing here knows about a pipeline stage; each module
//! is a building block a stage uses.

pub mod admin;
pub mod bytesize;
pub mod clip;
pub mod config;
pub mod ids;
pub mod jaeger;
pub mod kafka;
pub mod otlp;
pub mod reload;
pub mod repeats;
pub mod secret;
pub mod shutdown;
pub mod spans;
pub mod telemetry;
pub mod tls;

pub use bytesize::ByteSize;
