//! `commit`: durable batches → stored offsets. The only module that stores or commits offsets.
//!
//! Called by the consume loop after a batch is durable. The consumer runs with
//! `enable.auto.offset.store=false` and `enable.auto.commit=true`: librdkafka commits, in the
//! background and on revocation and close, exactly the offsets stored here, so a record's offset is
//! committed only after every document of it (and of every record before it in its partition) is
//! durable. Offset arithmetic: `store_offset` takes the *last processed* offset and stores offset + 1
//! (the next to read); storing for a partition this member no longer owns fails with `ERR__STATE`,
//! which is expected after a revocation and ignored — the new owner re-reads those records, and
//! deterministic document ids make that harmless.

use rdkafka::{
    consumer::{CommitMode, Consumer},
    error::{KafkaError, RDKafkaErrorCode},
};

/// Stores `offsets` — (partition, last processed offset) — for `topic`.
pub fn store<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(consumer: &C, topic: &str, offsets: &[(i32, i64)]) {
    for &(partition, offset) in offsets {
        match consumer.store_offset(topic, partition, offset) {
            Ok(()) => {}
            Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {
                tracing::debug!(partition, offset, "partition no longer assigned, offset not stored");
            }
            Err(error) => tracing::warn!(partition, offset, %error, "cannot store offset"),
        }
    }
}

/// Commits every stored offset now and waits for the broker's answer (on shutdown).
pub fn commit_now<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(consumer: &C) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!("offsets committed"),
        // Nothing stored since the last commit.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => tracing::warn!(%error, "final offset commit failed"),
    }
}
