//! What the Zipkin and Jaeger translations ([`crate::zipkin`], [`crate::jaeger`]) give the
//! receivers: an OTLP request of the spans taken, and the spans refused alone with why.

use std::borrow::Cow;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// A translated body: the spans taken, and those refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translated {
    pub request: ExportTraceServiceRequest,
    /// Spans refused alone, in body order.
    pub refused: Vec<Refused>,
}

/// A span refused alone: its position in the body (0-based) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub index: usize,
    /// Fixed text when it can be (a refused two-byte span must not cost a heap string).
    pub reason: Why,
}

/// Why a span was refused.
pub type Why = Cow<'static, str>;
