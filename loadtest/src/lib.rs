//! The Spanline loadtest: a seeded trace [`model`], OTLP senders ([`send`]), verification and
//! freshness in the store ([`verify`]). The benchmark harness (`spanline-bench`) adds the test kit's
//! broker, topic and process-accounting helpers.

pub mod model;
pub mod send;
pub mod verify;
