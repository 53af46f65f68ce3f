//! `bulk::framing`: documents → NDJSON `create` items → one `_bulk` request body.
//!
//! Called by the worker ([`encode_item`], once per document, when it builds a batch's items) and by
//! the retry policy ([`body`], once per attempt). Guarantees: every item is a `create` action with
//! our deterministic `_id` (so a retry or a replay of a durable item is answered 409, never a second
//! copy), followed by its document, each on one line, the body ending with a newline as `_bulk`
//! requires (REFERENCE.md §5).

use bytes::{Bytes, BytesMut};

use crate::{batch::Item, document::Document};

/// The NDJSON of one `create` item.
pub fn encode_item(doc: &Document) -> Bytes {
    let mut out = BytesMut::with_capacity(doc.source.len() + doc.index.len() + doc.id.len() + 40);
    // Index names (a prefix checked by `Config::validate`, a fixed word and a date) and ids (hex and
    // `_`) never need JSON escaping, so they are written as they are.
    out.extend_from_slice(b"{\"create\":{\"_index\":\"");
    out.extend_from_slice(doc.index.as_bytes());
    out.extend_from_slice(b"\",\"_id\":\"");
    out.extend_from_slice(doc.id.as_bytes());
    out.extend_from_slice(b"\"}}\n");
    out.extend_from_slice(&doc.source);
    out.extend_from_slice(b"\n");
    out.freeze()
}

/// The `_bulk` body of `items`, in their order (the answer's items come back in this order).
pub(crate) fn body(items: &[Item]) -> Bytes {
    let mut body = BytesMut::with_capacity(items.iter().map(|i| i.ndjson.len()).sum());
    items.iter().for_each(|i| body.extend_from_slice(&i.ndjson));
    body.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::DocKind;

    fn doc(id: &str, source: &[u8]) -> Document {
        Document {
            index: "jaeger-span-2026-11-25".into(),
            id: id.into(),
            source: source.to_vec(),
            kind: DocKind::Span,
            position: None,
            end_micros: 0,
        }
    }

    #[test]
    fn encodes_a_create_item() {
        assert_eq!(
            &encode_item(&doc("a_b_c", br#"{"x":1}"#))[..],
            b"{\"create\":{\"_index\":\"jaeger-span-2026-11-25\",\"_id\":\"a_b_c\"}}\n{\"x\":1}\n"
        );
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
