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
    /// A partition's worker panicked: the ingester stops rather than leave the partition assigned
    /// and unread.
    #[error("the worker of partition {partition} panicked: {message}")]
    WorkerPanicked { partition: i32, message: String },
    /// librdkafka reported a fatal consumer error; the consumer cannot go on.
    #[error("fatal kafka consumer error: {0}")]
    ConsumerFatal(String),
    /// OpenSearch refused to install our index template because another composable template
    /// matches the same indices at the same priority; retrying cannot help, only configuration.
    #[error(
        "index template {template} (priority {priority}) was refused: existing template(s) [{conflicting}] match the same indices with the same priority, so OpenSearch cannot choose; set opensearch.template_priority to a priority none of them uses (higher to win over them) or change [{conflicting}] (opensearch said: {reason})"
    )]
    TemplateConflict { template: String, priority: u32, conflicting: String, reason: String },
}

impl Error {
    /// Whether waiting and trying again could help; `false` for what only configuration can fix.
    pub fn is_fatal_at_start(&self) -> bool {
        matches!(self, Error::TemplateConflict { .. })
    }
}
