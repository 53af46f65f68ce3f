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
    /// OpenSearch refused to install (or look up) our index template for want of a permission
    /// (401/403). Retried at start, since a grant takes effect without restarting anything, but
    /// the message says what is missing instead of a bare status.
    #[error(
        "index template {template}: opensearch answered {status} ({error_type}: {reason}); the ingester's user needs the cluster permission to put index templates (indices:admin/index_template/put and /get, in OpenSearch security's cluster_manage_index_templates action group): grant it, or set opensearch.create_templates = false and install the templates yourself; retrying"
    )]
    TemplatePermission { template: String, status: u16, error_type: String, reason: String },
    /// The store refused the ingester's credentials (401/403) or the TLS handshake with it failed
    /// (status 0). Retried, with the ingester marked stalled: only configuration fixes it. The
    /// reason is the store's or the TLS library's words, clipped; never a credential.
    #[error("opensearch refused the ingester (status {status}, {error_type}): {reason}")]
    StoreRefused { status: u16, error_type: String, reason: String },
}

/// A `_bulk` answer with HTTP 200 that cannot be read as one; its text is clipped, since the answer
/// is the store's (hostile) input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// Not JSON, or not shaped as a `_bulk` answer.
    #[error("unreadable _bulk answer: {0}")]
    Unreadable(String),
    /// Item outcomes cannot be matched to the items sent: never guessed.
    #[error("_bulk answered {answered} items for {sent} sent")]
    ItemCount { answered: usize, sent: usize },
}

impl Error {
    /// Whether waiting and trying again could help; `false` for what only configuration can fix.
    pub fn is_fatal_at_start(&self) -> bool {
        matches!(self, Error::TemplateConflict { .. })
    }
}
