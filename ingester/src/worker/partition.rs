//! The partition loop: a partition's mapped records → batches → up to `max_inflight_bulks` bulk
//! requests in flight → the contiguous durable watermark, stored.
//!
//! [`Partition`] is the loop's state and nothing else: every event (a record mapped, the flush
//! timer, a bulk finished, a drain asked for) is one method, and everything it does outside
//! itself goes through [`Io`] (start a bulk, store an offset, report being blocked). The Kafka worker
//! ([`super::Worker`]) drives it with [`run`]; the tests below drive it with fake bulk futures under
//! tokio's paused clock.
//!
//! ```text
//!              a batch full while every bulk slot is busy
//!   Reading ───────────────────────────────────────────────▶ Blocked (reading paused)
//!      ▲   ◀──────────────────────────────────────────────────  │
//!      │            the waiting batches are all in flight        │
//!      │ drain (revoke, shutdown, a replay's end)                │ drain
//!      ▼                                                         ▼
//!   Draining(reason): nothing more is read; the open batch is flushed with `reason` once no full
//!   batch waits before it; ends when every bulk is durable and stored.
//!   Abort (from any state): ends at once, stores nothing more.
//! ```

use std::{collections::VecDeque, time::Instant};

use futures::{FutureExt as _, StreamExt as _, future::BoxFuture, stream::FuturesUnordered};
use tokio_util::sync::CancellationToken;

use crate::{
    batch::{Batch, Batcher, FlushReason, Item, Limits},
    commit::{Covered, Watermark},
    error::Error,
};

/// One record, taken: its offset, Kafka timestamp and bulk items.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub offset: i64,
    /// Milliseconds since the epoch; `None` when the record has none.
    pub timestamp_ms: Option<i64>,
    pub items: Vec<Item>,
    /// Spans the record held.
    pub spans: u64,
    /// Envelopes written to the dead-letter topic for it (the record whole, or spans alone).
    pub dead_lettered: u64,
}

/// What one batch's bulk requests ended with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// Span documents durable (created, or already there).
    pub indexed: u64,
    /// Spans the store rejected for good, now in the dead-letter topic.
    pub dead_lettered: u64,
}

/// A partition's progress, published after every change (replay's progress bars and summary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// The last offset whose record is durable and stored (`None`: none yet).
    pub durable: Option<i64>,
    /// Spans read from records.
    pub spans: u64,
    /// Span documents durable.
    pub indexed: u64,
    /// Envelopes written to the dead-letter topic.
    pub dead_lettered: u64,
    /// The loop drained to its end (never set when it was aborted or failed: that is reported as a
    /// failure, and a replay must not read it as done).
    pub ended: bool,
}

/// What the partition loop does outside itself.
pub(crate) trait Io {
    /// Starts writing `batch`; resolves once every item is durable or dead-lettered.
    fn launch(&self, batch: Batch) -> BoxFuture<'static, Result<Written, Error>>;
    /// Stores `covered.offset` as the last durable offset; `false` once the partition is not ours.
    fn store(&self, covered: Covered) -> bool;
    /// The loop stops or starts reading the partition (blocked on busy bulk slots).
    fn pause(&self, paused: bool);
}

/// Where the loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Reading,
    /// A full batch waits for a bulk slot: nothing is read (librdkafka stops fetching once its prefetch is full).
    Blocked,
    Draining(FlushReason),
}

type InFlight = BoxFuture<'static, (u64, Result<Written, Error>)>;

/// One partition's loop state.
pub(crate) struct Partition {
    max_inflight: usize,
    batcher: Batcher,
    watermark: Watermark,
    /// Flushed batches waiting for a bulk slot, oldest first; while any waits, nothing is read.
    /// Bounded by one record: its items fill at most (max_record_document_bytes +
    /// max_document_bytes) / max_bytes + 1 batches, each at most max_bytes plus one item.
    waiting: VecDeque<Batch>,
    in_flight: FuturesUnordered<InFlight>,
    draining: Option<FlushReason>,
    paused: bool,
    /// The newest Kafka timestamp seen, for the lag of the stored offset.
    last_timestamp_ms: i64,
    progress: Progress,
}

impl Partition {
    pub fn new(limits: Limits, max_inflight: usize) -> Self {
        Self {
            max_inflight: max_inflight.max(1),
            batcher: Batcher::new(limits),
            watermark: Watermark::default(),
            waiting: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            draining: None,
            paused: false,
            last_timestamp_ms: 0,
            progress: Progress::default(),
        }
    }

    pub fn state(&self) -> State {
        match self.draining {
            Some(reason) => State::Draining(reason),
            None if self.waiting.is_empty() => State::Reading,
            None => State::Blocked,
        }
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// Bulk requests in flight.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// When the open batch must be flushed, while reading.
    pub fn deadline(&self) -> Option<Instant> {
        if self.state() == State::Reading { self.batcher.deadline() } else { None }
    }

    /// A record mapped: its items enter the open batch; full batches wait for a slot.
    pub fn push(&mut self, record: Incoming, now: Instant) {
        if let Some(ms) = record.timestamp_ms {
            self.last_timestamp_ms = self.last_timestamp_ms.max(ms);
        }
        self.progress.spans += record.spans;
        self.progress.dead_lettered += record.dead_lettered;
        self.waiting.extend(self.batcher.push(record.offset, record.items, now));
    }

    /// The flush timer fired.
    pub fn flush_due(&mut self) {
        self.waiting.extend(self.batcher.take(FlushReason::Timeout));
    }

    /// Stop reading; flush what is open with `reason` and finish.
    pub fn drain(&mut self, reason: FlushReason) {
        self.draining.get_or_insert(reason);
    }

    /// Starts the waiting batches that have a slot (the open one too, when draining and nothing waits
    /// before it: batches must enter the watermark in offset order), and pauses fetching while a
    /// full batch still waits.
    pub fn launch(&mut self, io: &impl Io) {
        if self.waiting.is_empty()
            && let Some(reason) = self.draining
        {
            self.waiting.extend(self.batcher.take(reason));
        }
        while self.in_flight.len() < self.max_inflight
            && let Some(batch) = self.waiting.pop_front()
        {
            let seq = self.watermark.open(Covered { offset: batch.last_offset, timestamp_ms: self.last_timestamp_ms });
            self.in_flight.push(io.launch(batch).map(move |outcome| (seq, outcome)).boxed());
        }
        self.set_paused(io, self.state() == State::Blocked);
    }

    fn set_paused(&mut self, io: &impl Io, paused: bool) {
        if paused != self.paused {
            io.pause(paused);
            self.paused = paused;
        }
    }

    /// The next bulk to finish; pending forever while none is in flight.
    pub async fn next_done(&mut self) -> (u64, Result<Written, Error>) {
        match self.in_flight.next().await {
            Some(done) => done,
            None => std::future::pending().await,
        }
    }

    /// Bulk `seq` finished: a failure ends the loop; a success moves the watermark over the
    /// contiguous prefix of durable batches and stores it. Returns the offset stored, if any.
    pub fn complete(&mut self, io: &impl Io, seq: u64, outcome: Result<Written, Error>) -> Result<Option<i64>, Error> {
        let written = outcome?;
        self.progress.indexed += written.indexed;
        self.progress.dead_lettered += written.dead_lettered;
        let Some(covered) = self.watermark.finish(seq) else { return Ok(None) };
        // A batch holding only the middle of a large record covers no new offset.
        if covered.offset < 0 || self.progress.durable.is_some_and(|last| covered.offset <= last) {
            return Ok(None);
        }
        if !io.store(covered) {
            return Ok(None);
        }
        self.progress.durable = Some(covered.offset);
        Ok(Some(covered.offset))
    }

    /// Drained: nothing open, waiting or in flight.
    pub fn finished(&self) -> bool {
        self.draining.is_some() && self.waiting.is_empty() && self.in_flight.is_empty() && self.batcher.is_empty()
    }

    /// The loop ended: fetching resumed if it was paused, bulks still in flight dropped (their
    /// offsets are never stored).
    pub fn close(&mut self, io: &impl Io) {
        self.in_flight = FuturesUnordered::new();
        self.set_paused(io, false);
    }
}

/// Where the loop's records come from.
pub(crate) trait Source {
    type Raw: Send;
    /// The next record, or `None` once the source has no more for this worker (a replay's end).
    /// Cancel-safe: it is raced against the other events.
    fn recv(&mut self) -> impl Future<Output = Option<Self::Raw>> + Send;
    /// Maps a received record. Not raced: once received, a record is always mapped.
    fn map(&mut self, raw: Self::Raw) -> impl Future<Output = Result<Incoming, Error>> + Send;
}

/// How the owner steers the loop.
#[derive(Debug, Default)]
pub(crate) struct Steering {
    /// Stop reading, flush, finish the bulks, store, end.
    pub drain: CancellationToken,
    /// End now; store nothing more.
    pub abort: CancellationToken,
}

/// Runs `partition` until drained (`Ok`) or aborted ([`Error::Aborted`]), reporting its progress
/// after every change through `progress`. `drain_reason` is read when the drain is asked for.
pub(crate) async fn run(
    partition: &mut Partition,
    io: &impl Io,
    source: &mut impl Source,
    steering: &Steering,
    drain_reason: impl Fn() -> FlushReason,
    progress: &tokio::sync::watch::Sender<Progress>,
) -> Result<(), Error> {
    let result = loop {
        partition.launch(io);
        if partition.finished() {
            break Ok(());
        }
        let reading = partition.state() == State::Reading;
        let draining = matches!(partition.state(), State::Draining(_));
        let deadline = partition.deadline();
        tokio::select! {
            biased;
            () = steering.abort.cancelled() => break Err(Error::Aborted),
            () = steering.drain.cancelled(), if !draining => partition.drain(drain_reason()),
            (seq, outcome) = partition.next_done() => {
                if let Err(error) = partition.complete(io, seq, outcome) {
                    break Err(error);
                }
            }
            () = sleep_until(deadline), if reading => partition.flush_due(),
            received = source.recv(), if reading => match received {
                None => partition.drain(FlushReason::End),
                Some(raw) => match source.map(raw).await {
                    Ok(mapped) => partition.push(mapped, Instant::now()),
                    Err(error) => break Err(error),
                },
            },
        }
        progress.send_if_modified(|p| std::mem::replace(p, partition.progress()) != partition.progress());
    };
    partition.close(io);
    let mut last = partition.progress();
    last.ended = result.is_ok();
    progress.send_replace(last);
    result
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use bytes::Bytes;
    use tokio::sync::oneshot;

    use super::*;
    use crate::document::DocKind;

    /// Launch order → the sender that finishes that bulk.
    type Finishers = Arc<Mutex<HashMap<usize, oneshot::Sender<Result<Written, Error>>>>>;

    /// Bulks that finish when the test says, stored offsets and pause calls recorded.
    #[derive(Default, Clone)]
    struct FakeIo {
        bulks: Finishers,
        launched: Arc<Mutex<Vec<(FlushReason, i64, usize)>>>,
        stored: Arc<Mutex<Vec<i64>>>,
        pauses: Arc<Mutex<Vec<bool>>>,
        /// `store` answers false (the partition was given up).
        fenced: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Io for FakeIo {
        fn launch(&self, batch: Batch) -> BoxFuture<'static, Result<Written, Error>> {
            let (tx, rx) = oneshot::channel();
            let mut launched = self.launched.lock().unwrap();
            self.bulks.lock().unwrap().insert(launched.len(), tx);
            launched.push((batch.reason, batch.last_offset, batch.items.len()));
            let spans = batch.items.len() as u64;
            async move {
                match rx.await {
                    Ok(outcome) => outcome.map(|w| Written { indexed: spans - w.dead_lettered, ..w }),
                    Err(_) => Err(Error::Aborted),
                }
            }
            .boxed()
        }
        fn store(&self, covered: Covered) -> bool {
            if self.fenced.load(std::sync::atomic::Ordering::Relaxed) {
                return false;
            }
            self.stored.lock().unwrap().push(covered.offset);
            true
        }
        fn pause(&self, paused: bool) {
            self.pauses.lock().unwrap().push(paused);
        }
    }

    impl FakeIo {
        fn finish(&self, n: usize) {
            let tx = self.bulks.lock().unwrap().remove(&n).expect("bulk launched");
            let _ = tx.send(Ok(Written::default()));
        }
        fn launched(&self) -> Vec<(FlushReason, i64, usize)> {
            self.launched.lock().unwrap().clone()
        }
        fn stored(&self) -> Vec<i64> {
            self.stored.lock().unwrap().clone()
        }
    }

    fn item() -> Item {
        Item {
            ndjson: Bytes::from_static(b"{\"create\":{}}\n{}\n"),
            kind: DocKind::Span,
            end_micros: 0,
            origin: None,
            service: None,
        }
    }

    fn record(offset: i64, items: usize) -> Incoming {
        Incoming {
            offset,
            timestamp_ms: Some(offset),
            items: vec![item(); items],
            spans: items as u64,
            dead_lettered: 0,
        }
    }

    /// Two items make a full batch; two bulks at once; a 100 ms flush interval.
    fn partition() -> Partition {
        Partition::new(Limits { max_bytes: 1 << 20, max_docs: 2, flush_interval: Duration::from_millis(100) }, 2)
    }

    /// Runs the loop's events that are ready now: every finished bulk is completed.
    async fn settle(p: &mut Partition, io: &FakeIo) {
        p.launch(io);
        loop {
            tokio::task::yield_now().await;
            let Some((seq, outcome)) = p.next_done().now_or_never() else { break };
            p.complete(io, seq, outcome).expect("bulk ok");
            p.launch(io);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_waits_for_a_slot_with_fetching_paused() {
        let (mut p, io) = (partition(), FakeIo::default());
        for offset in 0..3 {
            p.push(record(offset, 2), Instant::now());
            p.launch(&io);
        }
        assert_eq!(p.in_flight(), 2, "two slots");
        assert_eq!(p.state(), State::Blocked, "the third full batch waits");
        assert_eq!(*io.pauses.lock().unwrap(), vec![true]);
        assert_eq!(p.deadline(), None, "nothing is read or timed while blocked");
        io.finish(0);
        settle(&mut p, &io).await;
        assert_eq!(p.state(), State::Reading);
        assert_eq!(*io.pauses.lock().unwrap(), vec![true, false], "resumed once the batch is in flight");
        assert_eq!(io.launched().iter().map(|l| l.1).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(io.stored(), vec![0]);
    }

    #[tokio::test(start_paused = true)]
    async fn bulks_finishing_out_of_order_store_only_the_contiguous_prefix() {
        let (mut p, io) = (partition(), FakeIo::default());
        p.push(record(0, 2), Instant::now());
        p.push(record(1, 2), Instant::now());
        p.launch(&io);
        io.finish(1);
        settle(&mut p, &io).await;
        assert!(io.stored().is_empty(), "offset 1 is durable but 0 is not: nothing stored");
        assert_eq!(p.progress().durable, None);
        io.finish(0);
        settle(&mut p, &io).await;
        assert_eq!(io.stored(), vec![1], "0 finishing releases both at once");
        assert_eq!(p.progress().durable, Some(1));
        assert_eq!(p.progress().indexed, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_open_batch_is_flushed_by_time() {
        let (mut p, io) = (partition(), FakeIo::default());
        p.push(record(0, 1), Instant::now());
        p.launch(&io);
        assert!(io.launched().is_empty());
        let deadline = p.deadline().expect("an open batch has a deadline");
        tokio::time::sleep_until(deadline.into()).await;
        p.flush_due();
        p.launch(&io);
        assert_eq!(io.launched(), vec![(FlushReason::Timeout, 0, 1)]);
    }

    /// A source fed by the test.
    struct Fed(tokio::sync::mpsc::Receiver<Incoming>);

    impl Source for Fed {
        type Raw = Incoming;
        fn recv(&mut self) -> impl Future<Output = Option<Incoming>> + Send {
            self.0.recv()
        }
        fn map(&mut self, raw: Incoming) -> impl Future<Output = Result<Incoming, Error>> + Send {
            std::future::ready(Ok(raw))
        }
    }

    /// The loop running on a task, fed and steered by the test; drains are revocations.
    struct Running {
        io: FakeIo,
        tx: tokio::sync::mpsc::Sender<Incoming>,
        steering: Arc<Steering>,
        watch: tokio::sync::watch::Receiver<Progress>,
        task: tokio::task::JoinHandle<Result<(), Error>>,
    }

    impl Running {
        fn start() -> Self {
            let io = FakeIo::default();
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            let steering = Arc::new(Steering::default());
            let (progress, watch) = tokio::sync::watch::channel(Progress::default());
            let (io2, steer) = (io.clone(), steering.clone());
            let task = tokio::spawn(async move {
                let mut p = partition();
                run(&mut p, &io2, &mut Fed(rx), &steer, || FlushReason::Revoke, &progress).await
            });
            Self { io, tx, steering, watch, task }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_flushes_with_its_reason_waits_for_the_bulks_and_stores_the_end() {
        let Running { io, tx, steering, mut watch, task } = Running::start();
        tx.send(record(0, 2)).await.unwrap();
        tx.send(record(1, 1)).await.unwrap();
        watch.wait_for(|p| p.spans == 3).await.unwrap();
        assert_eq!(io.launched(), vec![(FlushReason::Docs, 0, 2)], "the second record's batch is open");
        steering.drain.cancel();
        while io.launched().len() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(io.launched()[1], (FlushReason::Revoke, 1, 1), "the open batch flushed with reason revoke");
        assert!(!task.is_finished(), "a drain waits for its bulks");
        io.finish(1);
        io.finish(0);
        task.await.unwrap().expect("drained");
        assert_eq!(io.stored(), vec![1]);
        let last = *watch.borrow();
        assert_eq!((last.durable, last.ended, last.indexed), (Some(1), true, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_ends_at_once_and_stores_nothing_more() {
        let Running { io, tx, steering, mut watch, task } = Running::start();
        tx.send(record(0, 2)).await.unwrap();
        tx.send(record(1, 2)).await.unwrap();
        watch.wait_for(|p| p.spans == 4).await.unwrap();
        steering.abort.cancel();
        assert!(matches!(task.await.unwrap(), Err(Error::Aborted)));
        // The bulks finishing after the abort store nothing: their futures were dropped.
        assert!(io.bulks.lock().unwrap().values().all(oneshot::Sender::is_closed));
        assert!(io.stored().is_empty());
        assert!(!watch.borrow().ended, "an abort is not an end a replay may count as done");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fenced_partition_stores_nothing_and_a_failed_bulk_ends_the_loop() {
        let (mut p, io) = (partition(), FakeIo::default());
        p.push(record(0, 2), Instant::now());
        p.push(record(1, 2), Instant::now());
        p.launch(&io);
        io.fenced.store(true, std::sync::atomic::Ordering::Relaxed);
        io.finish(0);
        settle(&mut p, &io).await;
        assert!(io.stored().is_empty());
        assert_eq!(p.progress().durable, None, "progress moves only with what is stored");
        let tx = io.bulks.lock().unwrap().remove(&1).unwrap();
        let _ = tx.send(Err(Error::Setup("store gone".into())));
        let (seq, outcome) = p.next_done().await;
        assert!(p.complete(&io, seq, outcome).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_a_source_drains_with_reason_end_even_while_blocked() {
        let io = FakeIo::default();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let steering = Steering::default();
        let (progress, _watch) = tokio::sync::watch::channel(Progress::default());
        // One slot: the second full batch waits, then the source ends.
        let mut p =
            Partition::new(Limits { max_bytes: 1 << 20, max_docs: 2, flush_interval: Duration::from_secs(5) }, 1);
        for offset in 0..2 {
            tx.send(record(offset, 2)).await.unwrap();
        }
        tx.send(record(2, 1)).await.unwrap();
        drop(tx);
        let io2 = io.clone();
        let finisher = tokio::spawn(async move {
            for n in 0..3 {
                while io2.bulks.lock().unwrap().get(&n).is_none() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                io2.finish(n);
            }
        });
        run(&mut p, &io, &mut Fed(rx), &steering, || FlushReason::Shutdown, &progress).await.expect("ends");
        finisher.await.unwrap();
        assert_eq!(io.launched(), vec![(FlushReason::Docs, 0, 2), (FlushReason::Docs, 1, 2), (FlushReason::End, 2, 1)]);
        assert_eq!(io.stored(), vec![0, 1, 2]);
    }
}
