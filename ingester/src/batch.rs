//! `batch`: documents and the offsets they came from → batches, flushed on bytes, documents, time,
//! or shutdown. Pure: no I/O and no clock of its own (callers pass `now`).
//!
//! One batcher per partition worker, called for every record. Guarantees: a batch carries the last
//! offset it covers (records with no documents included), so storing it once the batch is durable
//! never skips a record; consecutive batches cover consecutive offset ranges; every batch says why
//! it was flushed.

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
    pub index: String,
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

    /// Adds the items of the record at `offset`; returns a batch when a size threshold is reached.
    pub fn push(&mut self, offset: i64, items: impl IntoIterator<Item = Item>, now: Instant) -> Option<Batch> {
        self.opened.get_or_insert(now);
        self.last_offset = self.last_offset.max(offset);
        for item in items {
            self.bytes += item.ndjson.len();
            self.items.push(item);
        }
        if self.bytes >= self.limits.max_bytes {
            self.take(FlushReason::Bytes)
        } else if self.items.len() >= self.limits.max_docs {
            self.take(FlushReason::Docs)
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
        let opened = self.opened.take()?;
        let bytes = std::mem::take(&mut self.bytes);
        Some(Batch { items: std::mem::take(&mut self.items), bytes, last_offset: self.last_offset, reason, opened })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: usize) -> Item {
        Item { ndjson: Bytes::from(vec![b'x'; n]), kind: DocKind::Span, end_micros: 0, origin: None }
    }

    fn limits() -> Limits {
        Limits { max_bytes: 100, max_docs: 5, flush_interval: Duration::from_secs(1) }
    }

    #[test]
    fn flushes_on_bytes_with_the_last_offset() {
        let mut b = Batcher::new(limits());
        let now = Instant::now();
        assert!(b.push(10, [item(40)], now).is_none());
        assert!(b.push(11, [item(40)], now).is_none());
        let batch = b.push(12, [item(40)], now).expect("over 100 bytes");
        assert_eq!(batch.reason, FlushReason::Bytes);
        assert_eq!(batch.bytes, 120);
        assert_eq!(batch.last_offset, 12);
        assert!(b.deadline().is_none(), "empty after flush");
    }

    #[test]
    fn flushes_on_docs() {
        let mut b = Batcher::new(limits());
        let now = Instant::now();
        let batch = b.push(1, (0..5).map(|_| item(1)), now).expect("5 docs");
        assert_eq!(batch.reason, FlushReason::Docs);
        assert_eq!(batch.items.len(), 5);
    }

    #[test]
    fn deadline_is_armed_by_the_first_record_even_without_documents() {
        let mut b = Batcher::new(limits());
        let now = Instant::now();
        assert!(b.deadline().is_none());
        assert!(b.push(7, [], now).is_none());
        assert_eq!(b.deadline(), Some(now + Duration::from_secs(1)));
        b.push(8, [item(1)], now + Duration::from_millis(500));
        assert_eq!(b.deadline(), Some(now + Duration::from_secs(1)), "not re-armed by later records");
        let batch = b.take(FlushReason::Timeout).expect("open batch");
        assert_eq!(batch.reason, FlushReason::Timeout);
        assert_eq!(batch.last_offset, 8);
        assert_eq!(batch.items.len(), 1);
        assert!(b.take(FlushReason::Shutdown).is_none());
    }
}
