//! The ingester's errors.

/// Everything the ingester can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("opensearch: {0}")]
    OpenSearch(String),
    /// Shutdown's grace period ended before the batch was durable; its offsets were not stored.
    #[error("aborted before the batch was durable")]
    Aborted,
    #[error("{0}")]
    Setup(String),
}
