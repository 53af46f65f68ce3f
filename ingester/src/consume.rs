//! `consume`: group membership — the consumer, its rebalance protocol, and one
//! [`Worker`] per assigned partition.
//!
//! # The partition state machine
//!
//! Every partition of the topic is, in this member, in one of these states:
//!
//! ```text
//!                 Assign (pre_rebalance)
//!  Unassigned ───────────────────────────────▶ Owned ◀──────────────┐
//!      ▲        split its queue, spawn worker    │   all bulk slots  │ a slot
//!      │        (before librdkafka fetches it)   │   busy and the    │ frees:
//!      │                                         │   next batch full │ resume
//!      │                                         ▼                   │
//!      │                                       Paused ───────────────┘
//!      │                          Revoke        │ Owned/Paused
//!      │                       (not lost)       ▼
//!      │                                    Draining: stop reading, flush (reason `revoke`),
//!      │                                    finish the in-flight bulks, store + commit
//!      │                                    the watermark synchronously
//!      │                                        │ drained, or `drain_deadline` passed
//!      │   incremental_unassign                 ▼
//!      └──────────────────────────────────── Fenced: fence closed (no store or commit
//!                                             can run any more), worker aborted
//!
//!  Owned/Paused/Draining ── Revoke with the assignment lost (session expired) ──▶ Fenced at once:
//!  another member may already own the partition, so nothing is flushed or committed.
//! ```
//!
//! The rebalance callback runs on the dedicated thread that polls the group queue and blocks there
//! while workers drain: librdkafka finishes the rebalance only after the callback returns, so a
//! partition's new owner starts from offsets committed by this member, and records in flight at the
//! deadline are re-read by the new owner (deterministic document ids make that harmless). Shutdown
//! drains every worker the same way (reason `shutdown`, bounded by `shutdown_grace`), commits, and
//! then closes the consumer, which leaves the group unless the member is static.
//!
//! Records never arrive on the group queue: each partition's queue is split off before the
//! partition is assigned, and librdkafka keeps an application-set forwarding across reassignments.
//! A record there anyway would be out of order with its worker's, so it stops the ingester.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, PoisonError, Weak, atomic::Ordering},
    time::{Duration, Instant},
};

use rdkafka::{
    ClientContext, Message, TopicPartitionList,
    config::RDKafkaLogLevel,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    statistics::Statistics,
};
use spanline_common::{kafka, repeats::Repeats};
use tokio_util::sync::CancellationToken;

use crate::{
    error::Error,
    metrics::{EventLabels, Metrics, PartitionLabels},
    worker::{Control, Shared, Worker},
};

/// The consumer type the ingester uses.
pub type IngestConsumer = StreamConsumer<IngestContext>;

/// A running worker, as the membership sees it.
struct Handle {
    control: Arc<Control>,
    /// Disconnects when the worker ends.
    done: std::sync::mpsc::Receiver<()>,
}

/// librdkafka callbacks: the rebalance protocol and per-partition lag from the statistics.
pub struct IngestContext {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    drain_deadline: Duration,
    /// The consumer, to split partition queues from the callbacks; set right after creation.
    consumer: OnceLock<Weak<IngestConsumer>>,
    workers: Mutex<HashMap<i32, Handle>>,
    /// librdkafka repeats the same complaint on every reconnect while a broker is down.
    repeats: Repeats,
}

impl IngestContext {
    pub fn new(shared: Arc<Shared>, runtime: tokio::runtime::Handle, drain_deadline: Duration) -> Self {
        Self {
            shared,
            runtime,
            drain_deadline,
            consumer: OnceLock::new(),
            workers: Mutex::new(HashMap::new()),
            repeats: Repeats::default(),
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    fn event(&self, event: &'static str, n: usize) {
        self.metrics().rebalances.get_or_create(&EventLabels { event }).inc_by(n as u64);
    }

    /// Spawns a worker for each partition of `tpl` this member does not run yet.
    fn assign(&self, tpl: &TopicPartitionList) {
        self.start_workers(tpl, |_| None);
    }

    /// Spawns a worker for each partition of `tpl` this member does not run yet, each ending at
    /// `end(partition)` (exclusive) when that is given (replay).
    pub fn start_workers(&self, tpl: &TopicPartitionList, end: impl Fn(i32) -> Option<i64>) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            tracing::error!("assignment before the consumer is registered; partitions not started");
            return;
        };
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut started = Vec::new();
        for element in tpl.elements_for_topic(&self.shared.topic) {
            let partition = element.partition();
            if workers.contains_key(&partition) {
                continue;
            }
            let Some(queue) = consumer.split_partition_queue(&self.shared.topic, partition) else {
                tracing::error!(partition, "cannot split the partition's queue; not started");
                continue;
            };
            let control = Arc::new(Control::new(&self.shared.topic, partition, end(partition)));
            let (done_tx, done) = std::sync::mpsc::channel::<()>();
            let worker =
                Worker { shared: self.shared.clone(), consumer: consumer.clone(), queue, control: control.clone() };
            self.runtime.spawn(async move {
                worker.run().await;
                drop(done_tx);
            });
            workers.insert(partition, Handle { control, done });
            started.push(partition);
        }
        self.event("assigned", started.len());
        if !started.is_empty() {
            tracing::info!(partitions = ?started, "partitions assigned, one worker each");
        }
    }

    /// Takes the handles of `partitions` out of the registry.
    fn remove(&self, partitions: impl IntoIterator<Item = i32>) -> Vec<Handle> {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        partitions.into_iter().filter_map(|p| workers.remove(&p)).collect()
    }

    /// Drains every worker of `handles` within `deadline`, then fences and aborts them all.
    /// Blocking: runs on the polling thread or a blocking task.
    fn drain(&self, handles: Vec<Handle>, deadline: Duration, shutting_down: bool) {
        let until = Instant::now() + deadline;
        for h in &handles {
            h.control.shutting_down.store(shutting_down, Ordering::Relaxed);
            h.control.drain.cancel();
        }
        let (mut drained, mut late) = (Vec::new(), Vec::new());
        for h in &handles {
            let left = until.saturating_duration_since(Instant::now());
            match h.done.recv_timeout(left) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => late.push(h.control.partition),
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => drained.push(h.control.partition),
            }
        }
        self.fence(&handles);
        self.event("drained", drained.len());
        self.event("drain_timeout", late.len());
        if late.is_empty() {
            tracing::info!(partitions = ?drained, "partitions drained and committed");
        } else {
            tracing::warn!(
                drained = ?drained, late = ?late, ?deadline,
                "drain deadline passed; the late partitions' uncommitted records will be read again by their next owner"
            );
        }
    }

    /// Closes the fences of `handles` (no store or commit can follow) and aborts the workers.
    fn fence(&self, handles: &[Handle]) {
        for h in handles {
            h.control.fence.close();
            h.control.abort.cancel();
        }
    }

    /// Each worker's progress, by partition; `None` once it ended.
    pub fn workers(&self) -> Vec<(Arc<Control>, bool)> {
        let workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        workers
            .values()
            .map(|h| {
                let running = matches!(h.done.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty));
                (h.control.clone(), running)
            })
            .collect()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Drains every worker (shutdown).
    pub fn drain_all(&self, deadline: Duration) {
        let all: Vec<i32> = self.workers.lock().unwrap_or_else(PoisonError::into_inner).keys().copied().collect();
        let handles = self.remove(all);
        if !handles.is_empty() {
            self.drain(handles, deadline, true);
        }
    }
}

impl ClientContext for IngestContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        kafka::log_librdkafka(&self.repeats, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        kafka::log_client_error(&self.repeats, &error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(&self.shared.topic) {
            for (&partition, p) in &topic.partitions {
                if partition >= 0 && p.consumer_lag_stored >= 0 {
                    self.metrics().lag.get_or_create(&PartitionLabels { partition }).set(p.consumer_lag_stored);
                }
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            // Split before librdkafka starts fetching, so no record reaches the group queue.
            Rebalance::Assign(tpl) => self.assign(tpl),
            Rebalance::Revoke(tpl) => {
                let partitions: Vec<i32> =
                    tpl.elements_for_topic(&self.shared.topic).iter().map(|e| e.partition()).collect();
                let handles = self.remove(partitions.iter().copied());
                if handles.is_empty() {
                    return;
                }
                if consumer.assignment_lost() {
                    tracing::warn!(partitions = ?partitions, "assignment lost (session expired?): workers stopped without committing");
                    self.event("lost", handles.len());
                    self.fence(&handles);
                } else {
                    tracing::info!(partitions = ?partitions, deadline = ?self.drain_deadline, "partitions revoked, draining");
                    self.event("revoked", handles.len());
                    self.drain(handles, self.drain_deadline, false);
                }
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
        if let Ok(assignment) = consumer.assignment() {
            self.metrics().assigned_partitions.set(i64::try_from(assignment.count()).unwrap_or(i64::MAX));
        }
    }
}

/// Registers `consumer` with its context, so callbacks can split partition queues.
pub fn register(consumer: &Arc<IngestConsumer>) {
    let _ = consumer.context().consumer.set(Arc::downgrade(consumer));
}

/// Serves the group queue (rebalances, errors, statistics) on a dedicated thread until `stop`:
/// the rebalance callback blocks while workers drain, which must not stall the async runtime.
pub fn spawn_poller(
    consumer: Arc<IngestConsumer>,
    stop: CancellationToken,
) -> Result<std::thread::JoinHandle<()>, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Setup(format!("cannot build the polling runtime: {e}")))?;
    std::thread::Builder::new()
        .name("kafka-group".into())
        .spawn(move || {
            runtime.block_on(async {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        received = consumer.recv() => match received {
                            Ok(message) => {
                                let error = Error::Setup(format!(
                                    "record partition {} offset {} arrived on the group queue instead of its partition's",
                                    message.partition(), message.offset()
                                ));
                                let _ = consumer.context().shared.failures.send(error);
                                break;
                            }
                            Err(error) => {
                                kafka::log_client_error(&consumer.context().repeats, &error, "consumer poll");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        },
                    }
                }
            });
        })
        .map_err(|e| Error::Setup(format!("cannot start the polling thread: {e}")))
}
