//! The collector's errors, classified once: whether a client may retry, and the gRPC and HTTP
//! answers for each (REFERENCE.md §3).

use std::time::Duration;

use axum::http::StatusCode;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// How long clients are told to wait before retrying an overloaded or unavailable collector.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Everything an export can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not a valid OTLP request.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The body, after decompression, is over `limits.max_request_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The HTTP content type is neither protobuf nor JSON.
    #[error("unsupported content type {0:?}: use application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    /// The HTTP content encoding is not supported.
    #[error("unsupported content encoding {0:?}: use gzip, zstd or none")]
    UnsupportedEncoding(String),
    /// In-flight bytes or the producer queue are at their bound: back off and retry.
    #[error("collector overloaded: {0}")]
    Overloaded(String),
    /// Kafka did not acknowledge a record.
    #[error("kafka did not acknowledge the spans: {0}")]
    Delivery(KafkaError),
    /// The export did not finish within `limits.request_timeout`.
    #[error("export timed out after {0:?} waiting for kafka")]
    Timeout(Duration),
    /// Configuration or start-up failure.
    #[error("{0}")]
    Setup(String),
}

impl Error {
    /// Whether the client should retry the same request.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Overloaded(_) | Error::Delivery(_) | Error::Timeout(_))
    }

    /// The gRPC status for this error.
    pub fn grpc_status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            Error::Malformed(_) | Error::UnsupportedMediaType(_) | Error::UnsupportedEncoding(_) => {
                tonic::Status::invalid_argument(message)
            }
            Error::TooLarge { .. } => tonic::Status::resource_exhausted(message),
            Error::Overloaded(_) | Error::Delivery(_) | Error::Timeout(_) => tonic::Status::unavailable(message),
            Error::Setup(_) => tonic::Status::internal(message),
        }
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::Malformed(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) | Error::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Overloaded(_) | Error::Delivery(_) | Error::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Setup(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Label value for the requests metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            Error::Malformed(_) | Error::UnsupportedMediaType(_) | Error::UnsupportedEncoding(_) => "malformed",
            Error::TooLarge { .. } => "too_large",
            Error::Overloaded(_) => "overloaded",
            Error::Delivery(_) | Error::Timeout(_) => "kafka_unavailable",
            Error::Setup(_) => "internal",
        }
    }
}

impl From<KafkaError> for Error {
    fn from(error: KafkaError) -> Self {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => Error::Overloaded("kafka producer queue full".into()),
            _ => Error::Delivery(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let cases: Vec<(Error, bool, tonic::Code, StatusCode)> = vec![
            (Error::Malformed("x".into()), false, tonic::Code::InvalidArgument, StatusCode::BAD_REQUEST),
            (Error::TooLarge { limit: 1 }, false, tonic::Code::ResourceExhausted, StatusCode::PAYLOAD_TOO_LARGE),
            (
                Error::UnsupportedMediaType("text/plain".into()),
                false,
                tonic::Code::InvalidArgument,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (Error::Overloaded("q".into()), true, tonic::Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (
                Error::from(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)),
                true,
                tonic::Code::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Error::from(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)),
                true,
                tonic::Code::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (Error::Timeout(RETRY_AFTER), true, tonic::Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
        ];
        for (error, retryable, code, http) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error}");
            assert_eq!(error.grpc_status().code(), code, "{error}");
            assert_eq!(error.http_status(), http, "{error}");
        }
        assert_eq!(Error::from(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)).outcome(), "overloaded");
    }
}
