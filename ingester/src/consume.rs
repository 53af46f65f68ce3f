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
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, OnceLock, PoisonError, Weak},
    time::{Duration, Instant},
};

use futures::FutureExt as _;
use rdkafka::{
    ClientContext, Message, TopicPartitionList,
    config::RDKafkaLogLevel,
    consumer::{
        BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer, stream_consumer::StreamPartitionQueue,
    },
    error::KafkaError,
    statistics::Statistics,
};
use spanline_common::{kafka, repeats::Repeats};
use tokio_util::sync::CancellationToken;

use crate::{
    error::Error,
    health::{Cause, Stalled},
    metrics::{EventLabels, Metrics, PartitionLabels},
    worker::{Control, Shared, Worker, partition::Progress},
};

/// The consumer type the ingester uses.
pub type IngestConsumer = StreamConsumer<IngestContext>;

/// How a worker task ended, as its supervisor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Drained: its last batches are durable and its watermark stored; `committed` when the
    /// broker also took the final commit (it may refuse one while a rebalance is under way).
    Drained { committed: bool },
    /// Aborted: it stored nothing more.
    Aborted,
    /// It failed or panicked; the failure was reported and stops the ingester.
    Failed,
}

/// A running worker, as the membership sees it: the task's handle is kept, and its supervisor says
/// how it ended, so a panic is never read as a drain.
struct Handle {
    control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
    ended: std::sync::mpsc::Receiver<Ended>,
}

/// librdkafka callbacks: the rebalance protocol and per-partition lag from the statistics.
pub struct IngestContext {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    drain_deadline: Duration,
    /// The consumer, to split partition queues from the callbacks; set right after creation.
    consumer: OnceLock<Weak<IngestConsumer>>,
    workers: Mutex<HashMap<i32, Handle>>,
    /// Each partition's queue, split once and kept for the consumer's life: dropping a split queue
    /// clears the wake-up callback of the partition's one native queue, so a second split of the
    /// same partition while an older one is still alive (a fenced worker not yet gone) would leave
    /// the new worker never woken. Bounded by the topic's partition count.
    queues: Mutex<HashMap<i32, Arc<StreamPartitionQueue<IngestContext>>>>,
    /// Every partition's progress, kept after its worker ends (replay's summary).
    progress: Mutex<HashMap<i32, tokio::sync::watch::Receiver<Progress>>>,
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
            queues: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
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

    /// The partition's queue: split on its first assignment, the same one after.
    fn queue(&self, consumer: &Arc<IngestConsumer>, partition: i32) -> Option<Arc<StreamPartitionQueue<Self>>> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = queues.get(&partition) {
            return Some(queue.clone());
        }
        let queue = Arc::new(consumer.split_partition_queue(&self.shared.topic, partition)?);
        queues.insert(partition, queue.clone());
        Some(queue)
    }

    /// Spawns a worker for each partition of `tpl` this member does not run yet, each ending at
    /// `end(partition)` (exclusive) when that is given (replay).
    pub fn start_workers(&self, tpl: &TopicPartitionList, end: impl Fn(i32) -> Option<i64>) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            // An assigned partition nobody reads must stop the ingester, never look healthy.
            let _ = self.shared.failures.send(Error::Setup("assignment before the consumer is registered".into()));
            return;
        };
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut started = Vec::new();
        for element in tpl.elements_for_topic(&self.shared.topic) {
            let partition = element.partition();
            if workers.contains_key(&partition) {
                continue;
            }
            let Some(queue) = self.queue(&consumer, partition) else {
                let error = Error::Setup(format!("cannot split the queue of assigned partition {partition}"));
                let _ = self.shared.failures.send(error);
                continue;
            };
            let control = Arc::new(Control::new(&self.shared.topic, partition));
            let (progress_tx, progress) = tokio::sync::watch::channel(Progress::default());
            let worker = Worker {
                shared: self.shared.clone(),
                consumer: consumer.clone(),
                queue,
                control: control.clone(),
                end: end(partition),
                progress: progress_tx,
            };
            let (ended_tx, ended) = std::sync::mpsc::sync_channel(1);
            let task = self.runtime.spawn(supervise(partition, worker.run(), self.shared.failures.clone(), ended_tx));
            self.progress.lock().unwrap_or_else(PoisonError::into_inner).insert(partition, progress);
            workers.insert(partition, Handle { control, task, ended });
            started.push(partition);
        }
        self.event("assigned", started.len());
        if !started.is_empty() {
            tracing::info!(partitions = ?started, "partitions assigned, one worker each");
        }
    }

    /// Takes the handles of `partitions` out of the registry; their lag gauges go with them.
    fn remove(&self, partitions: impl IntoIterator<Item = i32>) -> Vec<Handle> {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let handles: Vec<Handle> = partitions.into_iter().filter_map(|p| workers.remove(&p)).collect();
        for h in &handles {
            let labels = PartitionLabels { partition: h.control.partition };
            self.metrics().lag.remove(&labels);
            self.metrics().lag_seconds.remove(&labels);
        }
        handles
    }

    /// Drains every worker of `handles` within `deadline`, then fences and aborts them all. The
    /// deadline holds whatever the broker does: a worker's final commit never holds the fence.
    /// Blocking: runs on the polling thread or a blocking task.
    fn drain(&self, handles: Vec<Handle>, deadline: Duration, shutting_down: bool) {
        let until = Instant::now() + deadline;
        for h in &handles {
            h.control.drain(shutting_down);
        }
        let (mut drained, mut uncommitted, mut late, mut failed) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for h in &handles {
            let left = until.saturating_duration_since(Instant::now());
            let partition = h.control.partition;
            match h.ended.recv_timeout(left) {
                Ok(Ended::Drained { committed: true }) => drained.push(partition),
                Ok(Ended::Drained { committed: false }) => uncommitted.push(partition),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => late.push(partition),
                // Aborted before the drain asked (never by us before the fence), failed, panicked,
                // or its supervisor dropped with the runtime: not drained, nothing more is committed.
                Ok(Ended::Aborted | Ended::Failed) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    failed.push(partition);
                }
            }
        }
        self.fence(&handles);
        self.event("drained", drained.len());
        self.event("drain_uncommitted", uncommitted.len());
        self.event("drain_timeout", late.len());
        self.event("drain_failed", failed.len());
        if uncommitted.is_empty() && late.is_empty() && failed.is_empty() {
            tracing::info!(partitions = ?drained, "partitions drained and committed");
        } else {
            tracing::warn!(
                drained = ?drained, uncommitted = ?uncommitted, late = ?late, failed = ?failed, ?deadline,
                "not every partition drained and committed; records after their last commit will be read again by their next owner (indexed once: ids are deterministic)"
            );
        }
    }

    /// Closes the fences of `handles` (no store or commit can start after this) and aborts the
    /// worker tasks: an abort drops a task at its next await, whatever it waits on.
    fn fence(&self, handles: &[Handle]) {
        for h in handles {
            h.control.fence();
            h.task.abort();
        }
    }

    /// Each partition's last progress, whether its worker still runs or ended.
    pub fn progress(&self) -> Vec<(i32, Progress)> {
        let progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        progress.iter().map(|(&p, rx)| (p, *rx.borrow())).collect()
    }

    /// Drains every worker (shutdown), then lets go of the partition queues: each holds the
    /// consumer, which must be dropped to close and leave the group.
    pub fn drain_all(&self, deadline: Duration) {
        let all: Vec<i32> = self.workers.lock().unwrap_or_else(PoisonError::into_inner).keys().copied().collect();
        let handles = self.remove(all);
        if !handles.is_empty() {
            self.drain(handles, deadline, true);
        }
        self.queues.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// A fatal error librdkafka reports (`fatal`: its code and reason) is a failure that stops the
    /// ingester; the returned guard keeps readiness down until the process ends.
    fn fatal(&self, fatal: Option<(rdkafka::types::RDKafkaErrorCode, String)>) -> Option<Stalled> {
        let (code, reason) = fatal?;
        let stalled = self.metrics().health.stall(Cause::ConsumerFailing);
        tracing::error!(?code, %reason, "the kafka consumer failed for good; stopping");
        let _ = self.shared.failures.send(Error::ConsumerFatal(format!("{code:?}: {reason}")));
        Some(stalled)
    }

    /// Whether `partition` has a worker in this member.
    fn owns(&self, partition: i32) -> bool {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&partition)
    }
}

/// Runs `worker` and says how it ended: a failure or a panic is reported to `failures` (the
/// ingester stops: a partition left assigned but unread must never look healthy), and `ended`
/// carries the outcome to a drain waiting for it. An abort drops this future and `ended` with it.
async fn supervise(
    partition: i32,
    worker: impl Future<Output = Result<bool, Error>>,
    failures: tokio::sync::mpsc::UnboundedSender<Error>,
    ended: std::sync::mpsc::SyncSender<Ended>,
) {
    let outcome = match AssertUnwindSafe(worker).catch_unwind().await {
        Ok(Ok(committed)) => {
            tracing::debug!(partition, committed, "worker drained");
            Ended::Drained { committed }
        }
        Ok(Err(Error::Aborted)) => {
            tracing::debug!(partition, "worker aborted");
            Ended::Aborted
        }
        Ok(Err(error)) => {
            tracing::error!(partition, %error, "worker failed");
            let _ = failures.send(error);
            Ended::Failed
        }
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(partition, %message, "worker panicked");
            let _ = failures.send(Error::WorkerPanicked { partition, message });
            Ended::Failed
        }
    };
    let _ = ended.try_send(outcome);
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
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
                // Only partitions this member owns: a revoked one's gauge is removed with its worker.
                if partition >= 0 && p.consumer_lag_stored >= 0 && self.owns(partition) {
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
/// An error librdkafka calls fatal (a static member fenced by another with its id, for one) ends
/// the consumer for good: it is reported as a failure, which stops the ingester, and readiness
/// drops at once.
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
                // Held from a fatal error until the thread ends (the ingester is stopping).
                let mut _failing = None;
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
                                _failing = consumer.context().fatal(consumer.client().fatal_error());
                                if _failing.is_some() {
                                    stop.cancelled().await;
                                    break;
                                }
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

#[cfg(test)]
mod tests {
    use rdkafka::{
        Offset,
        mocking::MockCluster,
        producer::{FutureProducer, FutureRecord},
    };

    use super::*;
    use crate::{config::Config, health::Cause, metrics::Metrics, pipeline};

    /// A single-broker mock cluster with topic `t` of one partition, and an ingester's consumer
    /// on it (not subscribed).
    fn setup() -> (MockCluster<'static, rdkafka::producer::DefaultProducerContext>, pipeline::Parts, Config) {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 1, 1).expect("topic");
        let mut config = Config::default();
        config.kafka.brokers = cluster.bootstrap_servers();
        config.kafka.topic = "t".into();
        let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
        let parts = pipeline::build(&config, metrics, pipeline::consumer_config(&config).expect("config"), None)
            .expect("build");
        (cluster, parts, config)
    }

    async fn produce(bootstrap: &str, value: &[u8]) {
        let producer: FutureProducer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("producer");
        producer
            .send(FutureRecord::<(), [u8]>::to("t").payload(value), Duration::from_secs(10))
            .await
            .expect("produced");
    }

    /// The hazard behind [`IngestContext::queue`]: dropping a split queue clears the wake-up of the
    /// partition's one native queue, so a worker holding a second split of it is never woken. The
    /// membership hands every worker of a partition the same queue, so dropping an old worker's
    /// handle (a fenced worker that outlived its replacement) leaves the new one woken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_reassigned_while_its_old_worker_lingers_still_wakes_the_new_one() {
        let (cluster, parts, _config) = setup();
        let consumer = parts.consumer.clone();
        let context = consumer.context();
        let old = context.queue(&consumer, 0).expect("split");
        let new = context.queue(&consumer, 0).expect("split again");
        assert!(Arc::ptr_eq(&old, &new), "one queue per partition for the consumer's life");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Beginning).expect("tpl");
        consumer.assign(&tpl).expect("assign");
        drop(old);
        produce(&cluster.bootstrap_servers(), b"one record").await;
        // An unwoken task still finds the record when the timeout polls it once more at its end:
        // only the time it took tells a woken worker from an asleep one.
        let started = Instant::now();
        let received = tokio::time::timeout(Duration::from_secs(10), new.recv()).await;
        let message = received.expect("a record").expect("a record");
        assert!(started.elapsed() < Duration::from_secs(5), "the worker slept {:?}: never woken", started.elapsed());
        assert_eq!(message.payload(), Some(&b"one record"[..]));
    }

    /// A worker that panics is a failure the ingester stops for, and a drain waiting on it does not
    /// count it as drained.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_worker_is_reported_and_never_counted_as_drained() {
        let (_cluster, mut parts, _config) = setup();
        let context = parts.consumer.context();
        let control = Arc::new(Control::new("t", 0));
        let (ended_tx, ended) = std::sync::mpsc::sync_channel(1);
        let task = tokio::spawn(supervise(
            0,
            async {
                panic!("boom");
            }
            .map(|()| Ok(true)),
            context.shared.failures.clone(),
            ended_tx,
        ));
        let handle = Handle { control, task, ended };
        let failure = tokio::time::timeout(Duration::from_secs(5), parts.failed.recv()).await.expect("reported");
        assert!(matches!(failure, Some(Error::WorkerPanicked { partition: 0, ref message }) if message == "boom"));
        let consumer = parts.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.context().drain(vec![handle], Duration::from_secs(1), false))
            .await
            .expect("drain");
        let count = |event| context.metrics().rebalances.get_or_create(&EventLabels { event }).get();
        assert_eq!((count("drained"), count("drain_failed")), (0, 1));
    }

    /// A fatal consumer error stops the ingester and drops readiness instead of being logged
    /// forever. (librdkafka's mock cluster does not fence static members, and raising a fatal
    /// error by hand needs `unsafe`, which the workspace forbids: the reaction is tested here, the
    /// detection is librdkafka's `fatal_error()`.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fatal_consumer_error_is_a_failure_and_drops_readiness() {
        let (_cluster, mut parts, _config) = setup();
        let context = parts.consumer.context();
        let health = context.metrics().health.clone();
        health.set_started(true);
        assert!(context.fatal(None).is_none(), "a transient error changes nothing");
        assert!(health.readiness().get());
        let code = rdkafka::types::RDKafkaErrorCode::FencedInstanceId;
        let held = context.fatal(Some((code, "fenced by another member".into())));
        let failure = tokio::time::timeout(Duration::from_secs(5), parts.failed.recv()).await.expect("reported");
        assert!(matches!(failure, Some(Error::ConsumerFatal(ref why)) if why.contains("fenced by another member")));
        assert_eq!(health.held(Cause::ConsumerFailing), 1);
        assert!(!health.readiness().get());
        drop(held);
    }

    /// A revoked partition's lag gauges leave with it, and statistics do not bring them back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lag_gauges_leave_with_the_partition() {
        let (_cluster, parts, _config) = setup();
        let context = parts.consumer.context();
        let (ended_tx, ended) = std::sync::mpsc::sync_channel(1);
        let task = tokio::spawn(supervise(0, std::future::pending(), context.shared.failures.clone(), ended_tx));
        let handle = Handle { control: Arc::new(Control::new("t", 0)), task, ended };
        context.workers.lock().unwrap_or_else(PoisonError::into_inner).insert(0, handle);
        let labels = PartitionLabels { partition: 0 };
        assert!(context.owns(0));
        context.metrics().lag.get_or_create(&labels).set(42);
        context.metrics().lag_seconds.get_or_create(&labels).set(1.5);
        let handles = context.remove([0]);
        context.fence(&handles);
        assert!(!context.owns(0), "statistics for it are ignored from now on");
        assert!(!context.metrics().lag.remove(&labels), "the records gauge went with the partition");
        assert!(!context.metrics().lag_seconds.remove(&labels), "the seconds gauge went with the partition");
    }
}
