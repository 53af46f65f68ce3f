//! `document::json`: the JSON primitives span, service and bulk-action documents are written with,
//! by hand, into a buffer the caller reuses.
//!
//! Called by the document mapping only. Guarantees: the bytes are exactly what serde_json writes
//! for the same values (strings escaped as its `format_escaped_str` does: `"`, `\` and the control
//! characters below U+0020, with `\b \f \n \r \t` short forms and `\u00xx` in lowercase hex for the
//! others; everything else, U+2028 and non-BMP characters included, as it is; unsigned and signed
//! integers in decimal), which `document.rs`'s golden file and proptest check. A [`Writer`] keeps
//! its output only up to a limit and counts past it, so a document's length is known without
//! holding more than the limit of it.

use std::io;

use bytes::BytesMut;

use super::wire::Unusual;

/// A buffer a [`Writer`] appends to.
pub(super) trait Sink {
    fn len(&self) -> usize;
    fn put(&mut self, bytes: &[u8]);
    /// Drops everything from `len` on.
    fn cut(&mut self, len: usize);
}

impl Sink for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn cut(&mut self, len: usize) {
        self.truncate(len);
    }
}

impl Sink for BytesMut {
    fn len(&self) -> usize {
        BytesMut::len(self)
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if self.capacity() - BytesMut::len(self) < bytes.len() {
            // A buffer whose earlier documents were split off grows by exactly what is asked:
            // double the document being written instead, so a large one is not copied per write.
            self.reserve(bytes.len().max(BytesMut::len(self)));
        }
        self.extend_from_slice(bytes);
    }

    fn cut(&mut self, len: usize) {
        self.truncate(len);
    }
}

/// JSON appended to a [`Sink`], kept up to `limit` bytes and only counted past it (the bytes
/// written before are then cut off again).
pub(super) struct Writer<'a, S: Sink> {
    out: &'a mut S,
    /// Where this writer's output starts in `out`.
    start: usize,
    /// Bytes written, kept or only counted.
    len: usize,
    limit: usize,
}

/// What needs escaping in a JSON string, as serde_json escapes it: 0 for nothing, `u` for
/// `\u00xx`, else the letter after the backslash.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the 8 bytes of `w` needs escaping: below 0x20, a quote or a backslash. Exact
/// for "any" (a borrow only travels up from a byte that matched).
#[inline]
fn any_to_escape(w: u64) -> bool {
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let b = w ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b;
    (control | quote | backslash) & HIGHS != 0
}

impl<'a, S: Sink> Writer<'a, S> {
    /// A writer appending to `out`, keeping at most `limit` bytes.
    pub(super) fn new(out: &'a mut S, limit: usize) -> Self {
        let start = out.len();
        Self { out, start, len: 0, limit }
    }

    /// Bytes written (or counted) so far.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether everything written was kept.
    pub(super) fn fits(&self) -> bool {
        self.len <= self.limit
    }

    /// Bytes that are JSON already (punctuation, field names, digits, hex).
    #[inline]
    pub(super) fn raw(&mut self, bytes: &[u8]) {
        self.len = self.len.saturating_add(bytes.len());
        if self.len <= self.limit {
            self.out.put(bytes);
        } else if self.out.len() > self.start {
            self.out.cut(self.start);
        }
    }

    /// `text` as a JSON string: clean runs copied whole, 8 bytes checked at a time.
    pub(super) fn str(&mut self, text: &[u8]) {
        self.raw(b"\"");
        self.escaped(text);
        self.raw(b"\"");
    }

    /// A JSON string's contents, written by `write` through [`io::Write`] in pieces (serde_json
    /// writes whole UTF-8 fragments), each escaped as it comes: nothing is held apart, so the
    /// writer's limit bounds what is kept whatever `write` produces.
    pub(super) fn str_of(&mut self, write: impl FnOnce(&mut dyn io::Write)) {
        struct Escaping<'w, 'a, S: Sink>(&'w mut Writer<'a, S>);
        impl<S: Sink> io::Write for Escaping<'_, '_, S> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.escaped(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        self.raw(b"\"");
        write(&mut Escaping(self));
        self.raw(b"\"");
    }

    /// The bytes of a protobuf `string` field not yet checked for UTF-8, escaped without quotes
    /// (as [`Self::escaped`]) and checked: [`Unusual`] if they are not UTF-8 (what was written is
    /// then to be thrown away with the record's mapping). ASCII text, the usual case, is known
    /// valid from the escaping's own scan, without a second pass.
    pub(super) fn text(&mut self, text: &[u8]) -> Result<(), Unusual> {
        if self.escaped(text) && std::str::from_utf8(text).is_err() {
            return Err(Unusual);
        }
        Ok(())
    }

    /// `text` escaped, without quotes. Escapes are decided byte by byte (bytes from 0x80 up are
    /// never escaped), so text escaped in pieces is the text escaped whole. Whether `text` has a
    /// byte from 0x80 up (is not ASCII).
    pub(super) fn escaped(&mut self, text: &[u8]) -> bool {
        if let Some(seen) = clean(text) {
            self.raw(text);
            return seen & HIGHS != 0;
        }
        let mut clean = 0;
        let mut at = 0;
        // Every byte read, or-ed: its top bit says whether one was not ASCII.
        let mut seen = 0u64;
        while at < text.len() {
            if let Some(chunk) = text.get(at..at + 16) {
                let (a, b) = chunk.split_at(8);
                let (a, b) = (word(a), word(b));
                if !any_to_escape(a) && !any_to_escape(b) {
                    seen |= a | b;
                    at += 16;
                    continue;
                }
            }
            if let Some(chunk) = text.get(at..at + 8)
                && !any_to_escape(word(chunk))
            {
                seen |= word(chunk);
                at += 8;
                continue;
            }
            let end = (at + 8).min(text.len());
            for (i, &b) in text[at..end].iter().enumerate() {
                seen |= u64::from(b);
                let escape = ESCAPE[usize::from(b)];
                if escape != 0 {
                    let i = at + i;
                    if clean < i {
                        self.raw(&text[clean..i]);
                    }
                    if escape == b'u' {
                        self.raw(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
                    } else {
                        self.raw(&[b'\\', escape]);
                    }
                    clean = i + 1;
                }
            }
            at = end;
        }
        if clean < text.len() {
            self.raw(&text[clean..]);
        }
        seen & HIGHS != 0
    }

    /// `v` in decimal, as serde_json (and `Display`) write it.
    pub(super) fn u64(&mut self, v: u64) {
        let mut digits = [0u8; 20];
        self.raw(decimal(v, &mut digits));
    }

    /// `v` in decimal with a leading `-` when negative.
    pub(super) fn i64(&mut self, v: i64) {
        if v < 0 {
            self.raw(b"-");
        }
        self.u64(v.unsigned_abs());
    }

    /// The lowercase hex of `bytes`, unquoted.
    pub(super) fn hex(&mut self, bytes: &[u8]) {
        let mut chunk = [0u8; 128];
        for part in bytes.chunks(chunk.len() / 2) {
            let used = push_hex(part, &mut chunk);
            self.raw(&chunk[..used]);
        }
    }

    /// The lowercase hex of `bytes` as a JSON string.
    pub(super) fn hex_str(&mut self, bytes: &[u8]) {
        // Ids (16 and 8 bytes) in one write.
        if bytes.len() <= 16 {
            let mut quoted = [b'"'; 34];
            let used = push_hex(bytes, &mut quoted[1..]);
            self.raw(&quoted[..used + 2]);
            return;
        }
        self.raw(b"\"");
        self.hex(bytes);
        self.raw(b"\"");
    }
}

/// When no byte of `text` needs escaping, every byte of it or-ed into a word (its top bits say
/// whether one was not ASCII); `None` otherwise. Words of 8 bytes, the last one overlapping the one
/// before; a shorter text read as a word of its bytes repeated, so a short key or value is one
/// check instead of a loop over its bytes.
#[inline]
fn clean(text: &[u8]) -> Option<u64> {
    let len = text.len();
    let w = match len {
        0 => return Some(0),
        1..=3 => {
            u64::from_le_bytes([text[0], text[len / 2], text[len - 1], text[0], text[0], text[0], text[0], text[0]])
        }
        4..=7 => u64::from(half(&text[..4])) | u64::from(half(&text[len - 4..])) << 32,
        _ => {
            let mut seen = 0;
            let mut words = text.chunks_exact(8);
            for chunk in &mut words {
                let w = word(chunk);
                if any_to_escape(w) {
                    return None;
                }
                seen |= w;
            }
            if !words.remainder().is_empty() {
                let w = word(&text[len - 8..]);
                if any_to_escape(w) {
                    return None;
                }
                seen |= w;
            }
            return Some(seen);
        }
    };
    (!any_to_escape(w)).then_some(w)
}

/// The 4 bytes of `chunk` (4 long) as a little-endian word.
#[inline]
fn half(chunk: &[u8]) -> u32 {
    let mut le = [0u8; 4];
    le.copy_from_slice(chunk);
    u32::from_le_bytes(le)
}

/// The 8 bytes of `chunk` (8 long) as a little-endian word.
#[inline]
fn word(chunk: &[u8]) -> u64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(chunk);
    u64::from_le_bytes(le)
}

/// Each byte's two lowercase hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    let mut table = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = [HEX[b >> 4], HEX[b & 0xf]];
        b += 1;
    }
    table
};

/// Each number below 100 as two decimal digits.
static DECIMAL_PAIRS: [[u8; 2]; 100] = {
    let mut table = [[0u8; 2]; 100];
    let mut n = 0;
    while n < 100 {
        // Below 10 each.
        table[n] = [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
        n += 1;
    }
    table
};

/// Writes the lowercase hex of `bytes` (at most half of `out`'s length) into `out`; the length used.
#[inline]
fn push_hex(bytes: &[u8], out: &mut [u8]) -> usize {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
    2 * bytes.len()
}

/// The decimal digits of `v`, written at the end of `digits`, two at a time.
#[inline]
fn decimal(mut v: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    while v >= 100 {
        at -= 2;
        // Below 100.
        digits[at..at + 2].copy_from_slice(&DECIMAL_PAIRS[(v % 100) as usize]);
        v /= 100;
    }
    if v >= 10 {
        at -= 2;
        digits[at..at + 2].copy_from_slice(&DECIMAL_PAIRS[v as usize]);
    } else {
        at -= 1;
        // Below 10.
        digits[at] = b'0' + v as u8;
    }
    &digits[at..]
}

/// Appends `v` as unpadded lowercase hex (`format!("{v:x}")`) to `out`.
pub(super) fn push_hex_u64(out: &mut impl Sink, v: u64) {
    // All sixteen digits a byte at a time, then the leading zeros cut (one digit for 0).
    let mut digits = [0u8; 16];
    push_hex(&v.to_be_bytes(), &mut digits);
    let significant = ((64 - v.leading_zeros() as usize).div_ceil(4)).max(1);
    out.put(&digits[16 - significant..]);
}

/// Appends the lowercase hex of `bytes` to `out`.
pub(super) fn push_hex_bytes(out: &mut impl Sink, bytes: &[u8]) {
    let mut chunk = [0u8; 128];
    for part in bytes.chunks(chunk.len() / 2) {
        let used = push_hex(part, &mut chunk);
        out.put(&chunk[..used]);
    }
}

/// Appends `v` in decimal, zero-padded to `width` digits (at most 20).
pub(super) fn push_padded(out: &mut impl Sink, v: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let used = decimal(v, &mut digits).len();
    let width = width.clamp(used, digits.len());
    out.put(&digits[digits.len() - width..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(write: impl FnOnce(&mut Writer<'_, Vec<u8>>)) -> String {
        let mut out = Vec::new();
        write(&mut Writer::new(&mut out, usize::MAX));
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u32..0x80).filter_map(char::from_u32).map(String::from).collect();
        cases.extend(
            [
                "",
                "plain",
                "exactly8",
                "sixteen bytes!!!",
                "a\"b\\c",
                "\u{2028}\u{2029}😀𝄞\u{7f}é",
                "long clean run before an escape at the end of it\n",
                "\u{1}\u{1f}\u{0}\u{8}\u{c}",
            ]
            .map(String::from),
        );
        cases.push((0u8..0x20).map(char::from).cycle().take(100).collect());
        for case in cases {
            let want = serde_json::to_string(&case).expect("json");
            assert_eq!(json(|w| w.str(case.as_bytes())), want, "{case:?}");
        }
    }

    /// Every length from 0 to 40 with one byte to escape at each place, or none; and the answer
    /// of `escaped` and `text` about non-ASCII and invalid bytes, at each place.
    #[test]
    fn each_length_and_place_is_escaped_and_checked_as_serde_json_and_from_utf8_see_it() {
        for len in 0..40 {
            for at in 0..=len {
                for special in ['"', '\\', '\n', '\u{1f}', 'é', 'x'] {
                    let mut text: String = "a".repeat(len);
                    if at < len {
                        text.replace_range(at..at + 1, &special.to_string());
                    }
                    let want = serde_json::to_string(&text).expect("json");
                    let mut out = Vec::new();
                    let mut w = Writer::new(&mut out, usize::MAX);
                    w.raw(b"\"");
                    let non_ascii = w.escaped(text.as_bytes());
                    w.raw(b"\"");
                    assert_eq!(String::from_utf8(out).expect("utf-8"), want, "{text:?}");
                    assert_eq!(non_ascii, !text.is_ascii(), "{text:?}");
                }
                // Invalid UTF-8 at `at`: `text` refuses it, and takes the same bytes made valid.
                let mut bytes = vec![b'a'; len.max(1)];
                let at = at.min(bytes.len() - 1);
                bytes[at] = 0xff;
                let mut out = Vec::new();
                assert!(Writer::new(&mut out, usize::MAX).text(&bytes).is_err(), "{bytes:?}");
                bytes[at] = b'b';
                let mut out = Vec::new();
                assert!(Writer::new(&mut out, usize::MAX).text(&bytes).is_ok(), "{bytes:?}");
                assert_eq!(out, bytes);
            }
        }
    }

    #[test]
    fn numbers_and_hex_are_written_as_serde_json_and_format_write_them() {
        for v in [0, 1, 9, 10, 15, 16, 99, 100, 255, 256, 12345, 1 << 60, (1 << 60) - 1, u64::from(u32::MAX), u64::MAX]
        {
            assert_eq!(json(|w| w.u64(v)), v.to_string());
            let mut hex = Vec::new();
            push_hex_u64(&mut hex, v);
            assert_eq!(String::from_utf8(hex).expect("ascii"), format!("{v:x}"));
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX, -1234] {
            assert_eq!(json(|w| w.i64(v)), v.to_string());
        }
        let bytes: Vec<u8> = (0..=255).cycle().take(300).collect();
        assert_eq!(json(|w| w.hex_str(&bytes)), format!("\"{}\"", spanline_common::ids::to_hex(&bytes)));
        let mut padded = Vec::new();
        push_padded(&mut padded, 7, 4);
        push_padded(&mut padded, 12345, 4);
        assert_eq!(padded, b"000712345");
    }

    #[test]
    fn past_its_limit_a_writer_counts_and_keeps_nothing() {
        let mut out = b"kept:".to_vec();
        let mut w = Writer::new(&mut out, 6);
        w.str(b"abcd");
        assert!(w.fits());
        w.raw(b"x");
        assert_eq!((w.len(), w.fits()), (7, false));
        w.str(b"more");
        assert_eq!(w.len(), 13);
        assert_eq!(out, b"kept:");
    }
}
