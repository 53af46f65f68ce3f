//! The Spanline ingester: `consume → worker → batch → bulk → commit`.
//!
//! - [`consume`]: the Kafka consumer in group `spanline-ingester` and the processing loop.
//! - [`document`]: an OTLP record → Jaeger span documents and service documents.
//! - [`batch`]: a pure batcher that flushes on bytes, documents, time, and shutdown.
//! - [`bulk`]: `_bulk` requests, per-item classification and retries until every item is durable.
//! - [`deadletter`]: undecodable records and terminally rejected spans → the dead-letter topic.
//! - [`commit`]: the only place offsets are stored, once everything at or below them is durable.
//!
//! [`pipeline`] wires them; [`run`] is what the binary calls.

pub mod batch;
pub mod bulk;
pub mod commit;
pub mod config;
pub mod consume;
pub mod deadletter;
pub mod document;
pub mod error;
pub mod metrics;
pub mod pipeline;
pub mod templates;

pub use config::Config;
pub use pipeline::{Running, run, start};
