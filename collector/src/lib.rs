//! The Spanline collector: `receive → split → produce`, or for requests the byte path does not take,
//! `receive → decode → limit → process → encode → produce`.
//!
//! - [`receive`]: OTLP gRPC `TraceService/Export` and OTLP HTTP `POST /v1/traces`.
//! - [`decode`]: bounds what decoding a request costs (span count, memory) before decoding it.
//! - [`limit`]: attribute count and length limits.
//! - [`process`]: optional consistent sampling by trace id and attribute redaction.
//! - [`split`]: the byte path: protobuf bytes → records by copying resources, scopes and spans, without
//!   decoding; a request it does not take goes through `decode → limit → process → encode`.
//! - [`encode`]: validates spans and groups them into one Kafka record per trace (split when too big).
//! - [`produce`]: publishes the records with an idempotent producer and waits for every delivery report.
//! - [`zipkin`]: Zipkin v2 JSON and protobuf spans → an OTLP request (`receivers.zipkin_listen`).
//! - [`jaeger`]: Jaeger Thrift batches (HTTP body or agent `emitBatch` datagram) → an OTLP request
//!   (`receivers.jaeger_http_listen`; the agent's UDP ports in [`agent`]). Both give a
//!   [`translate::Translated`]: the spans taken, and those refused alone with why.
//!
//! - [`sampling`]: Jaeger remote sampling strategies from a file, served to SDKs over HTTP and gRPC
//!   (not on the span path).
//!
//! [`budget`] is the memory bound every stage draws on. [`pipeline`] wires them; [`run`] is what the binary calls.

pub mod agent;
pub mod auth;
pub mod budget;
pub mod config;
pub mod decode;
pub mod encode;
pub mod error;
pub mod jaeger;
pub mod limit;
pub mod metrics;
pub mod pipeline;
pub mod process;
pub mod produce;
pub mod receive;
pub mod sampling;
pub mod span_metrics;
pub mod split;
pub mod translate;
pub mod zipkin;

pub use config::Config;
pub use pipeline::{Running, run, start};
