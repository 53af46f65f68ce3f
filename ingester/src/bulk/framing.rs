//! `bulk::framing`: documents → NDJSON `create` items → one `_bulk` request body.
//!
//! The document mapping writes each item in place with the action line's parts below
//! ([`ACTION_HEAD`], [`ACTION_ID`], [`ACTION_TAIL`]); the worker takes it ([`encode_item`], once per
//! document, when it builds a batch's items) and the retry policy joins them ([`body`], once per
//! attempt). Guarantees: every item is a `create` action with our deterministic `_id` (so a retry or
//! a replay of a durable item is answered 409, never a second copy), followed by its document, each
//! on one line, the body ending with a newline as `_bulk` requires (REFERENCE.md §5).

use bytes::{Bytes, BytesMut};

use crate::{batch::Item, document::Document};

// An item is `ACTION_HEAD`, the index name, `ACTION_ID`, the id, `ACTION_TAIL`, the document and a
// newline. Index names (a prefix checked by `Config::validate`, a fixed word and a date) and ids
// (hex and `_`) never need JSON escaping, so they are written as they are.

/// An action line up to its index name.
pub(crate) const ACTION_HEAD: &[u8] = b"{\"create\":{\"_index\":\"";
/// Between the index name and the `_id`.
pub(crate) const ACTION_ID: &[u8] = b"\",\"_id\":\"";
/// After the `_id`, ending the action line.
pub(crate) const ACTION_TAIL: &[u8] = b"\"}}\n";

/// The NDJSON of one `create` item: written with the document (a shared reference, no copy).
pub fn encode_item(doc: &Document) -> Bytes {
    doc.ndjson.clone()
}

/// The `_index` of an item's action line (empty if `item` is not one of ours).
pub(crate) fn index_of(item: &[u8]) -> &str {
    let Some(rest) = item.strip_prefix(ACTION_HEAD) else { return "" };
    let end = rest.windows(ACTION_ID.len()).position(|w| w == ACTION_ID).unwrap_or(0);
    std::str::from_utf8(&rest[..end]).unwrap_or_default()
}

/// The `_bulk` body of `items`, in their order (the answer's items come back in this order).
#[cfg(test)]
pub(crate) fn body(items: &[Item]) -> Bytes {
    Bodies::default().body(items)
}

/// How many body buffers are kept for the next requests.
const KEPT_BODIES: usize = 4;

/// The largest body buffer kept for the next requests (a batch's body is `batch.max_bytes`, 5 MiB
/// by default; one larger than this is freed after its request).
const KEPT_BODY_BYTES: usize = 8 << 20;

/// Request bodies' buffers, kept between requests: a batch's body is as large as the batch (several
/// MiB), and a fresh one costs a page fault per 4 KiB as it is written, more than the copy itself.
/// At most [`KEPT_BODIES`] of at most [`KEPT_BODY_BYTES`] each are kept (32 MiB); a body is written
/// into the smallest kept buffer that holds it without growing, else into a new one with a quarter
/// of room to spare (bodies of one configuration differ by a few documents: an exact-size buffer
/// would be too small for the next, and growing one doubles it past what is kept).
#[derive(Debug, Default)]
pub(crate) struct Bodies {
    free: std::sync::Mutex<Vec<BytesMut>>,
}

impl Bodies {
    /// The `_bulk` body of `items`, in their order, in a kept buffer when one is free.
    pub(crate) fn body(&self, items: &[Item]) -> Bytes {
        let len: usize = items.iter().map(|i| i.ndjson.len()).sum();
        let kept = {
            let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let fits = (0..free.len()).filter(|&at| free[at].capacity() >= len).min_by_key(|&at| free[at].capacity());
            fits.map(|at| free.swap_remove(at))
        };
        // The room to spare stops at what is kept: a buffer grown past it would be freed.
        let room = len.saturating_add(len / 4).min(KEPT_BODY_BYTES).max(len);
        let mut body = kept.unwrap_or_else(|| BytesMut::with_capacity(room));
        body.clear();
        body.reserve(len);
        items.iter().for_each(|i| body.extend_from_slice(&i.ndjson));
        body.freeze()
    }

    /// Takes `body` back once its request is answered, if nothing else holds it. With every slot
    /// taken, it replaces the smallest kept buffer if it is larger.
    pub(crate) fn recycle(&self, body: Bytes) {
        let Ok(mut body) = body.try_into_mut() else { return };
        if body.capacity() > KEPT_BODY_BYTES {
            return;
        }
        body.clear();
        let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if free.len() < KEPT_BODIES {
            free.push(body);
        } else if let Some(smallest) = free.iter_mut().min_by_key(|b| b.capacity())
            && smallest.capacity() < body.capacity()
        {
            *smallest = body;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::DocKind;

    fn doc(id: &str, source: &[u8]) -> Document {
        Document::new(DocKind::Span, "jaeger-span-2026-11-25", id, source, None, 0)
    }

    #[test]
    fn a_kept_body_buffer_is_reused_once_its_request_is_done() {
        let item = |source: &[u8]| Item {
            kind: DocKind::Span,
            end_micros: 0,
            service: None,
            origin: None,
            ndjson: encode_item(&doc("a_b_c", source)),
        };
        let bodies = Bodies::default();
        let first = bodies.body(&[item(b"{\"x\":1}"), item(b"{\"y\":2}")]);
        assert_eq!(first, body(&[item(b"{\"x\":1}"), item(b"{\"y\":2}")]));
        let at = first.as_ptr();
        let held = first.clone();
        bodies.recycle(first);
        assert!(bodies.free.lock().expect("lock").is_empty(), "a body still held elsewhere is not reused");
        bodies.recycle(held);
        let second = bodies.body(&[item(b"{}")]);
        assert_eq!(second.as_ptr(), at, "the same buffer");
        assert_eq!(&second[..], &body(&[item(b"{}")])[..], "holding only the new items");
    }

    #[test]
    fn a_body_goes_into_the_smallest_kept_buffer_that_holds_it_without_growing() {
        let item = |len: usize| Item {
            kind: DocKind::Span,
            end_micros: 0,
            service: None,
            origin: None,
            ndjson: Bytes::from(vec![b'x'; len]),
        };
        let bodies = Bodies::default();
        let (small, large) = (bodies.body(&[item(1_000)]), bodies.body(&[item(100_000)]));
        let (small_at, small_cap) = (small.as_ptr(), small.len() + small.len() / 4);
        let large_at = large.as_ptr();
        bodies.recycle(large);
        bodies.recycle(small);
        // Larger than the small buffer's room: the large one, not the small one grown.
        let body = bodies.body(&[item(small_cap + 1)]);
        assert_eq!(body.as_ptr(), large_at);
        assert_eq!(body.len(), small_cap + 1);
        // Fits both: the smaller.
        let again = bodies.body(&[item(10)]);
        assert_eq!(again.as_ptr(), small_at);
        // Fits none kept: a new buffer, the kept ones untouched.
        bodies.recycle(again);
        let fresh = bodies.body(&[item(200_000)]);
        assert!(fresh.as_ptr() != small_at && fresh.as_ptr() != large_at);
        assert_eq!(bodies.free.lock().expect("lock")[0].as_ptr(), small_at, "the small buffer stays kept");
        // Near the kept size, the room to spare stops at it, so the buffer is kept after.
        let near = bodies.body(&[item(KEPT_BODY_BYTES - 10)]);
        let near_at = near.as_ptr();
        bodies.recycle(near);
        assert!(bodies.free.lock().expect("lock").iter().any(|b| b.as_ptr() == near_at));
    }

    #[test]
    fn encodes_a_create_item() {
        assert_eq!(
            &encode_item(&doc("a_b_c", br#"{"x":1}"#))[..],
            b"{\"create\":{\"_index\":\"jaeger-span-2026-11-25\",\"_id\":\"a_b_c\"}}\n{\"x\":1}\n"
        );
    }

    #[test]
    fn the_index_is_read_back_from_the_action_line() {
        assert_eq!(index_of(&encode_item(&doc("a_b_c", br#"{"_id":"x"}"#))), "jaeger-span-2026-11-25");
        assert_eq!(index_of(b"{\"index\":{}}\n{}\n"), "");
    }

    #[test]
    fn a_body_is_its_items_in_order_ending_with_a_newline() {
        let items: Vec<Item> = [("1", br#"{"a":1}"#), ("2", br#"{"b":2}"#)]
            .into_iter()
            .map(|(id, source)| Item {
                ndjson: encode_item(&doc(id, source)),
                kind: DocKind::Span,
                end_micros: 0,
                origin: None,
                service: None,
            })
            .collect();
        let body = body(&items);
        let text = std::str::from_utf8(&body).expect("utf-8");
        assert_eq!(text.lines().count(), 4);
        assert!(text.ends_with('\n'));
        assert!(text.find("\"_id\":\"1\"") < text.find("\"_id\":\"2\""), "{text}");
    }
}
