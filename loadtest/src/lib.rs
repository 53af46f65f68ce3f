//! The Spanline loadtest: a seeded trace [`model`], OTLP senders ([`send`]), verification and
//! freshness in the store ([`verify`]), and the process accounting the benchmark harness uses
//! ([`process`]).

pub mod model;
pub mod process;
pub mod send;
pub mod verify;
