//! `commit`: durable batches → stored and committed offsets. The only module that stores or commits
//! offsets.
//!
//! A partition's worker keeps up to `max_inflight_bulks` batches in flight; they may finish in any
//! order. [`Watermark`] turns completions into the highest offset below which *every* record is
//! durable (indexed or dead-lettered), and only that offset is stored. The consumer runs with
//! `enable.auto.offset.store=false` and `enable.auto.commit=true`: librdkafka commits, in the
//! background, exactly the offsets stored here; a draining worker also commits synchronously
//! ([`Fence::commit`]) before its partition is given up.
//!
//! A worker never stores or commits for a partition it no longer owns: every store and commit goes
//! through the partition's [`Fence`], which the rebalance callback closes (under the same lock)
//! before librdkafka unassigns the partition. Offset arithmetic: `store_offset` takes the *last
//! processed* offset and stores offset + 1 (the next to read); a commit names offset + 1 itself.

use std::{collections::VecDeque, sync::Mutex};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, ConsumerContext},
    error::{KafkaError, RDKafkaErrorCode},
};

/// Tracks the batches of one partition in flight and finds the contiguous durable watermark.
///
/// Batches are opened in offset order (each covers the records after the previous one), so the
/// watermark is the last offset of the longest prefix of finished batches.
#[derive(Debug, Clone, Copy)]
struct Open {
    seq: u64,
    last: Covered,
    finished: bool,
}

/// The last record a batch covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covered {
    pub offset: i64,
    /// The record's Kafka timestamp, in milliseconds since the epoch (for lag in seconds).
    pub timestamp_ms: i64,
}

#[derive(Debug, Default)]
pub struct Watermark {
    /// Batches oldest first, each with its sequence number.
    open: VecDeque<Open>,
    next_seq: u64,
}

impl Watermark {
    /// Registers a batch covering records up to `last`; returns its sequence number.
    pub fn open(&mut self, last: Covered) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.open.push_back(Open { seq, last, finished: false });
        seq
    }

    /// Marks batch `seq` durable; returns the new watermark (the last record now safe to store) when
    /// it moved.
    pub fn finish(&mut self, seq: u64) -> Option<Covered> {
        if let Some(entry) = self.open.iter_mut().find(|e| e.seq == seq) {
            entry.finished = true;
        }
        let mut moved = None;
        while let Some(&Open { last, finished: true, .. }) = self.open.front() {
            moved = Some(last);
            self.open.pop_front();
        }
        moved
    }

    /// Batches not yet durable.
    pub fn in_flight(&self) -> usize {
        self.open.len()
    }
}

/// The right to store and commit offsets for one partition; closed by the rebalance callback.
#[derive(Debug)]
pub struct Fence {
    topic: String,
    partition: i32,
    owned: Mutex<bool>,
}

impl Fence {
    pub fn new(topic: &str, partition: i32) -> Self {
        Self { topic: topic.to_owned(), partition, owned: Mutex::new(true) }
    }

    /// After this returns, no store runs or will run for the partition. A commit that checked the
    /// fence just before may still reach the broker ([`Fence::commit`] says why that is harmless).
    pub fn close(&self) {
        *self.owned.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = false;
    }

    pub fn is_open(&self) -> bool {
        *self.owned.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores `last` (the last durable offset) for background commit, if the partition is still owned.
    pub fn store<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C, last: i64) -> bool {
        let owned = self.owned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*owned {
            tracing::debug!(partition = self.partition, last, "partition given up, offset not stored");
            return false;
        }
        match consumer.store_offset(&self.topic, self.partition, last) {
            Ok(()) => true,
            Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {
                tracing::debug!(partition = self.partition, last, "partition no longer assigned, offset not stored");
                false
            }
            Err(error) => {
                tracing::warn!(partition = self.partition, last, %error, "cannot store offset");
                false
            }
        }
    }

    /// Commits `last` + 1 for the partition and waits for the broker, if the partition is still
    /// owned. Blocking: call from a blocking thread.
    ///
    /// The fence is checked, not held, while the broker answers: a synchronous commit can block for
    /// as long as the group coordinator moves, and [`Fence::close`] (the rebalance callback, under
    /// its drain deadline) must never wait for it. A commit already under way when the fence closes
    /// may still land after: it names only durable offsets, so the partition's next owner re-reads
    /// at worst records already indexed, and never skips one.
    pub fn commit<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C, last: i64) -> bool {
        if !self.is_open() {
            return false;
        }
        let mut tpl = TopicPartitionList::new();
        if tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(last + 1)).is_err() {
            return false;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                tracing::debug!(partition = self.partition, next = last + 1, "offset committed");
                true
            }
            Err(error) => {
                tracing::warn!(partition = self.partition, next = last + 1, %error, "offset commit failed");
                false
            }
        }
    }
}

/// Commits every stored offset now and waits for the broker's answer (on shutdown).
pub fn commit_now<C: Consumer<X>, X: ConsumerContext>(consumer: &C) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!("offsets committed"),
        // Nothing stored since the last commit.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => tracing::warn!(%error, "final offset commit failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64) -> Covered {
        Covered { offset, timestamp_ms: offset * 1000 }
    }

    #[test]
    fn watermark_moves_only_over_a_contiguous_prefix() {
        let mut w = Watermark::default();
        let a = w.open(at(9));
        let b = w.open(at(19));
        let c = w.open(at(29));
        assert_eq!(w.finish(b), None, "batch b is done but a is not: nothing may be stored");
        assert_eq!(w.finish(c), None);
        assert_eq!(w.in_flight(), 3);
        assert_eq!(w.finish(a), Some(at(29)), "a finishing releases a, b and c at once");
        assert_eq!(w.in_flight(), 0);
        let d = w.open(at(30));
        assert_eq!(w.finish(d), Some(at(30)));
    }

    #[test]
    fn watermark_in_order_completions_move_one_by_one() {
        let mut w = Watermark::default();
        let seqs: Vec<u64> = (0..5).map(|i| w.open(at(i * 10 + 9))).collect();
        for (i, seq) in (0_i64..).zip(seqs) {
            assert_eq!(w.finish(seq), Some(at(i * 10 + 9)));
        }
        assert_eq!(w.finish(99), None, "an unknown sequence changes nothing");
    }

    #[test]
    fn a_closed_fence_refuses_to_store() {
        let consumer: rdkafka::consumer::BaseConsumer =
            rdkafka::ClientConfig::new().set("group.id", "t").create().expect("consumer");
        let fence = Fence::new("t", 0);
        fence.close();
        assert!(!fence.is_open());
        assert!(!fence.store(&consumer, 5));
        assert!(!fence.commit(&consumer, 5));
    }

    /// A coordinator that answers slowly (here: a 3 s round trip on the mock cluster) holds a
    /// synchronous commit, and must not hold the rebalance callback closing the fence with it.
    #[test]
    fn closing_the_fence_never_waits_for_a_commit_under_way() {
        use std::time::{Duration, Instant};
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 1, 1).expect("topic");
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "t")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Beginning).expect("tpl");
        consumer.assign(&tpl).expect("assign");
        cluster.broker_round_trip_time(1, Duration::from_secs(3)).expect("slow broker");
        let (consumer, fence) = (std::sync::Arc::new(consumer), std::sync::Arc::new(Fence::new("t", 0)));
        let committing = {
            let (consumer, fence) = (consumer.clone(), fence.clone());
            std::thread::spawn(move || fence.commit(consumer.as_ref(), 4))
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(!committing.is_finished(), "the commit waits for the slow coordinator");
        let started = Instant::now();
        fence.close();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(200), "closing the fence took {took:?}");
        assert!(!committing.is_finished(), "the commit was still under way when the fence closed");
        let _ = committing.join();
        assert!(!fence.commit(consumer.as_ref(), 5), "no commit starts after the fence closed");
    }
}
