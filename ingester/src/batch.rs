//! `batch`: documents and the offsets they came from → batches, flushed on bytes, documents, time,
//! or shutdown. Pure: no I/O and no clock of its own (callers pass `now`).
//!
//! One batcher per partition worker, called for every record. Guarantees: a batch carries the last
//! offset it covers (records with no documents included), so storing it once the batch is durable
//! never skips a record; consecutive batches cover consecutive offset ranges (a batch holding only
//! the middle of a large record covers no new offset); no batch is larger than `max_bytes` or
//! `max_docs` plus one item, however large a record; every batch says why it was flushed.

use std::{
    fmt,
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::document::DocKind;

/// Why a batch was flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlushReason {
    /// The NDJSON body reached `batch.max_bytes`.
    Bytes,
    /// The batch reached `batch.max_docs`.
    Docs,
    /// `batch.flush_interval` passed since the first record entered the batch.
    Timeout,
    /// The partition is being revoked (rebalance).
    Revoke,
    /// A replay reached the partition's end bound.
    End,
    /// The ingester is shutting down.
    Shutdown,
}

impl FlushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Bytes => "bytes",
            FlushReason::Docs => "docs",
            FlushReason::Timeout => "timeout",
            FlushReason::Revoke => "revoke",
            FlushReason::End => "end",
            FlushReason::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for FlushReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One bulk item: its action line and source line, newline-terminated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub ndjson: Bytes,
    pub kind: DocKind,
    /// For span documents, the span's end (µs since the epoch), for the freshness histogram.
    pub end_micros: i64,
    /// Where a span document came from, to dead-letter the span if the store rejects it for good.
    pub origin: Option<Origin>,
    /// For service documents, their key in the service cache: marked written once the batch holding
    /// it is durable, never before.
    pub service: Option<u64>,
}

/// The Kafka record a span document came from, and the span's place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Bytes>,
    /// The record's value (shared by every item of the record).
    pub record: Bytes,
    /// (resource, scope, span) indices in the record's request.
    pub position: [usize; 3],
    /// Set when the record is a re-driven dead letter: the spans' original coordinates.
    pub redrive: Option<std::sync::Arc<crate::deadletter::Redrive>>,
}

/// A flushed batch.
#[derive(Debug)]
pub struct Batch {
    pub items: Vec<Item>,
    /// NDJSON bytes of all items.
    pub bytes: usize,
    /// The last offset of the partition this batch covers.
    pub last_offset: i64,
    pub reason: FlushReason,
    /// When the first record entered the batch.
    pub opened: Instant,
}

/// Flush thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_docs: usize,
    pub flush_interval: Duration,
}

/// Accumulates items until a threshold is reached.
#[derive(Debug)]
pub struct Batcher {
    limits: Limits,
    items: Vec<Item>,
    bytes: usize,
    last_offset: i64,
    opened: Option<Instant>,
}

impl Batcher {
    pub fn new(limits: Limits) -> Self {
        Self { limits, items: Vec::new(), bytes: 0, last_offset: -1, opened: None }
    }

    /// Adds the items of the record at `offset`; returns the batches that became full, oldest first.
    ///
    /// A record never makes a batch larger than `max_bytes` (or `max_docs`) plus one item: its items
    /// are spread over as many batches as they need. A batch that ends inside the record covers only
    /// the records before it (`offset - 1`); the batch holding the record's last item covers `offset`,
    /// so a watermark over the batches never passes a record that is not wholly durable.
    pub fn push(&mut self, offset: i64, items: impl IntoIterator<Item = Item>, now: Instant) -> Vec<Batch> {
        let mut full = Vec::new();
        self.opened.get_or_insert(now);
        let mut items = items.into_iter().peekable();
        while let Some(item) = items.next() {
            self.bytes += item.ndjson.len();
            self.items.push(item);
            if items.peek().is_some()
                && let Some(reason) = self.full()
            {
                // The record goes on in a new batch, opened now.
                full.extend(self.cut(reason, self.last_offset.max(offset - 1)));
                self.opened = Some(now);
            }
        }
        self.last_offset = self.last_offset.max(offset);
        if let Some(reason) = self.full() {
            full.extend(self.take(reason));
        }
        full
    }

    /// Why the open batch must be flushed now, if it must.
    fn full(&self) -> Option<FlushReason> {
        if self.bytes >= self.limits.max_bytes {
            Some(FlushReason::Bytes)
        } else if self.items.len() >= self.limits.max_docs {
            Some(FlushReason::Docs)
        } else {
            None
        }
    }

    /// Whether no record is open.
    pub fn is_empty(&self) -> bool {
        self.opened.is_none()
    }

    /// NDJSON bytes in the open batch.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the open batch must be flushed by time; `None` when empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.limits.flush_interval)
    }

    /// Flushes whatever is open; `None` when empty.
    pub fn take(&mut self, reason: FlushReason) -> Option<Batch> {
        self.cut(reason, self.last_offset)
    }

    /// The open batch, covering records up to `covered`; `None` when empty.
    fn cut(&mut self, reason: FlushReason, covered: i64) -> Option<Batch> {
        let opened = self.opened.take()?;
        let bytes = std::mem::take(&mut self.bytes);
        // The next batch gets room for as many items as this one held (at most `max_docs` plus
        // one): it is filled the same way, without growing a few thousand items by doubling.
        let room = Vec::with_capacity(self.items.len());
        Some(Batch { items: std::mem::replace(&mut self.items, room), bytes, last_offset: covered, reason, opened })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: usize) -> Item {
        Item { ndjson: Bytes::from(vec![b'x'; n]), kind: DocKind::Span, end_micros: 0, origin: None, service: None }
    }

    fn limits() -> Limits {
        Limits { max_bytes: 100, max_docs: 5, flush_interval: Duration::from_secs(1) }
    }

    #[test]
    fn flushes_on_bytes_with_the_last_offset() {
        let mut b = Batcher::new(limits());
        let now = Instant::now();
        assert!(b.push(10, [item(40)], now).is_empty());
        assert!(b.push(11, [item(40)], now).is_empty());
        let [batch] = <[Batch; 1]>::try_from(b.push(12, [item(40)], now)).expect("one batch over 100 bytes");
        assert_eq!(batch.reason, FlushReason::Bytes);
        assert_eq!(batch.bytes, 120);
        assert_eq!(batch.last_offset, 12);
        assert!(b.deadline().is_none(), "empty after flush");
    }

    #[test]
    fn flushes_on_docs() {
        let mut b = Batcher::new(limits());
        let now = Instant::now();
        let [batch] = <[Batch; 1]>::try_from(b.push(1, (0..5).map(|_| item(1)), now)).expect("5 docs");
        assert_eq!(batch.reason, FlushReason::Docs);
        assert_eq!(batch.items.len(), 5);
    }

    #[test]
    fn deadline_is_armed_by_the_first_record_even_without_documents() {
        let mut b = Batcher::new(limits());
        let now = Instant::now();
        assert!(b.deadline().is_none());
        assert!(b.push(7, [], now).is_empty());
        assert_eq!(b.deadline(), Some(now + Duration::from_secs(1)));
        b.push(8, [item(1)], now + Duration::from_millis(500));
        assert_eq!(b.deadline(), Some(now + Duration::from_secs(1)), "not re-armed by later records");
        let batch = b.take(FlushReason::Timeout).expect("open batch");
        assert_eq!(batch.reason, FlushReason::Timeout);
        assert_eq!(batch.last_offset, 8);
        assert_eq!(batch.items.len(), 1);
        assert!(b.take(FlushReason::Shutdown).is_none());
    }

    /// An item of `n` bytes, all `tag`, to follow items through batches.
    fn tagged(n: usize, tag: u8) -> Item {
        Item { ndjson: Bytes::from(vec![tag; n]), kind: DocKind::Span, end_micros: 0, origin: None, service: None }
    }

    #[test]
    fn a_large_record_is_spread_over_batches_of_at_most_max_bytes_plus_one_item() {
        let mut b = Batcher::new(Limits { max_bytes: 100, max_docs: 1_000, flush_interval: Duration::from_secs(1) });
        let now = Instant::now();
        assert!(b.push(10, [tagged(40, 0)], now).is_empty());
        // Record 11: ten items of 30 bytes, 300 bytes in all.
        let batches = b.push(11, (1..=10).map(|t| tagged(30, t)), now);
        let shape: Vec<(usize, usize, i64, FlushReason)> =
            batches.iter().map(|b| (b.items.len(), b.bytes, b.last_offset, b.reason)).collect();
        assert_eq!(
            shape,
            vec![(3, 100, 10, FlushReason::Bytes), (4, 120, 10, FlushReason::Bytes), (4, 120, 11, FlushReason::Bytes)],
            "only the batch with the record's last item covers it"
        );
        assert!(batches.iter().all(|b| b.bytes <= 100 + 30), "at most max_bytes plus one item");
        let order: Vec<u8> = batches.iter().flat_map(|b| &b.items).map(|i| i.ndjson[0]).collect();
        assert_eq!(order, (0..=10).collect::<Vec<u8>>(), "items keep their order");
        assert!(b.is_empty(), "the record's last item closed the last batch");

        // A record ending inside a batch leaves it open, covering the record once flushed.
        let batches = b.push(12, (0..5).map(|t| tagged(30, t)), now);
        assert_eq!(batches.iter().map(|b| (b.items.len(), b.last_offset)).collect::<Vec<_>>(), vec![(4, 11)]);
        let rest = b.take(FlushReason::Timeout).expect("open");
        assert_eq!((rest.items.len(), rest.bytes, rest.last_offset), (1, 30, 12));
    }

    #[test]
    fn a_record_is_spread_by_max_docs_and_a_first_record_split_covers_nothing() {
        let mut b = Batcher::new(Limits { max_bytes: 1 << 20, max_docs: 3, flush_interval: Duration::from_secs(1) });
        let now = Instant::now();
        let batches = b.push(0, (0..7).map(|t| tagged(1, t)), now);
        let shape: Vec<(usize, i64, FlushReason)> =
            batches.iter().map(|b| (b.items.len(), b.last_offset, b.reason)).collect();
        // Nothing before offset 0: the batches cut inside it cover no record (-1).
        assert_eq!(shape, vec![(3, -1, FlushReason::Docs), (3, -1, FlushReason::Docs)]);
        let rest = b.take(FlushReason::Shutdown).expect("open");
        assert_eq!((rest.items.len(), rest.last_offset), (1, 0));
    }

    #[test]
    fn the_watermark_passes_a_spread_record_only_when_its_last_batch_is_durable() {
        use crate::commit::{Covered, Watermark};
        let mut b = Batcher::new(Limits { max_bytes: 100, max_docs: 1_000, flush_interval: Duration::from_secs(1) });
        let now = Instant::now();
        let mut batches = b.push(4, [tagged(50, 0)], now);
        batches.extend(b.push(5, (0..10).map(|t| tagged(50, t)), now));
        batches.extend(b.push(6, [tagged(10, 0)], now));
        batches.extend(b.take(FlushReason::Timeout));
        let mut watermark = Watermark::default();
        let seqs: Vec<(u64, i64)> = batches
            .iter()
            .map(|batch| (watermark.open(Covered { offset: batch.last_offset, timestamp_ms: 0 }), batch.last_offset))
            .collect();
        assert_eq!(seqs.iter().map(|(_, o)| *o).collect::<Vec<_>>(), vec![4, 4, 4, 4, 4, 6]);
        // Every batch but record 5's last one is durable: the watermark stays at 4.
        let mut last = None;
        for (seq, _) in seqs.iter().filter(|(seq, _)| *seq != 5) {
            last = watermark.finish(*seq).map(|c| c.offset).or(last);
        }
        assert_eq!(last, Some(4));
        assert_eq!(watermark.finish(5).map(|c| c.offset), Some(6), "then it passes records 5 and 6 at once");
    }
}
