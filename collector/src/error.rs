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
    /// The request needs more memory than the whole `limits.max_inflight_bytes` budget.
    #[error(
        "{what} needs {need} bytes of memory, more than limits.max_inflight_bytes ({limit} bytes): send fewer or smaller spans per request"
    )]
    OverBudget { what: &'static str, need: usize, limit: usize },
    /// The request is over a count limit checked before decoding (e.g. `limits.max_spans_per_request`).
    #[error("{0}")]
    OverLimit(String),
    /// The client did not send the request within `limits.read_timeout`.
    #[error("request not received within limits.read_timeout ({0:?})")]
    ReadTimeout(Duration),
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
    /// The request carries no valid credentials (`receivers.auth`). The reason is fixed text: the
    /// presented token never appears in it.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
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
            Error::TooLarge { .. } | Error::OverBudget { .. } | Error::OverLimit(_) => {
                tonic::Status::resource_exhausted(message)
            }
            Error::ReadTimeout(_) => tonic::Status::deadline_exceeded(message),
            Error::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            Error::Overloaded(_) | Error::Delivery(_) | Error::Timeout(_) => tonic::Status::unavailable(message),
            Error::Setup(_) => tonic::Status::internal(message),
        }
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::Malformed(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge { .. } | Error::OverBudget { .. } | Error::OverLimit(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::ReadTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::UnsupportedMediaType(_) | Error::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Overloaded(_) | Error::Delivery(_) | Error::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Setup(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Label value for the requests metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            Error::Malformed(_) | Error::UnsupportedMediaType(_) | Error::UnsupportedEncoding(_) => "malformed",
            Error::TooLarge { .. } | Error::OverBudget { .. } | Error::OverLimit(_) => "too_large",
            Error::ReadTimeout(_) => "read_timeout",
            Error::Unauthenticated(_) => "unauthenticated",
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
            (
                Error::OverBudget { what: "request", need: 2, limit: 1 },
                false,
                tonic::Code::ResourceExhausted,
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (Error::OverLimit("spans".into()), false, tonic::Code::ResourceExhausted, StatusCode::PAYLOAD_TOO_LARGE),
            (Error::ReadTimeout(RETRY_AFTER), false, tonic::Code::DeadlineExceeded, StatusCode::REQUEST_TIMEOUT),
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
            (Error::Unauthenticated("missing"), false, tonic::Code::Unauthenticated, StatusCode::UNAUTHORIZED),
        ];
        for (error, retryable, code, http) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error}");
            assert_eq!(error.grpc_status().code(), code, "{error}");
            assert_eq!(error.http_status(), http, "{error}");
        }
        assert_eq!(Error::from(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)).outcome(), "overloaded");
    }
}
