//! The Spanline ingester: `consume → worker → batch → bulk → commit`.
//!
//! - [`consume`]: group membership — the consumer in group `spanline-ingester`, the rebalance
//!   state machine, one worker per assigned partition.
//! - [`idle`]: a member that owns no partition while the group's lag does not move says so.
//! - [`worker`]: a partition's records → documents → batches → bulk requests in flight → offsets.
//! - [`document`]: an OTLP record → Jaeger span documents and service documents.
//! - [`batch`]: a pure batcher that flushes on bytes, documents, time, and shutdown.
//! - [`bulk`]: `_bulk` requests, per-item classification and retries until every item is durable.
//! - [`store`]: the OpenSearch nodes every request goes through: TLS, and credentials read per
//!   request (reloaded from their files without a restart).
//! - [`deadletter`]: undecodable records, records and spans over the `[limits]` bounds, and terminally
//!   rejected spans → the dead-letter topic.
//! - [`health`]: what stalls the ingester that only an operator can fix → readiness and a metric.
//! - [`replay`]: re-indexes a window of a topic (or re-drives the dead-letter topic) and stops.
//! - [`commit`]: the contiguous durable watermark and the only place offsets are stored or committed.
//!
//! [`pipeline`] wires them; [`run`] is what the binary calls.

pub mod batch;
pub mod bulk;
pub mod commit;
pub mod config;
pub(crate) mod consume;
pub mod deadletter;
pub mod dependencies;
pub mod document;
pub mod error;
pub(crate) mod health;
pub(crate) mod idle;
pub mod metrics;
pub(crate) mod pipeline;
pub mod replay;
pub mod store;
pub mod templates;
pub mod worker;

pub use config::Config;
pub use pipeline::{Running, run, start};
