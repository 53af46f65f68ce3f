//! A hand-written JSON scanner for the common `_bulk` source: the same walk as
//! [`crate::postings::walk`] (the same values at the same indexed paths, in the same order), at a
//! fraction of serde_json's cost, for documents it can vouch for.
//!
//! It only ever *accepts* a document serde_json accepts too: whatever it is not sure of (a `\u`
//! escape, a number with a fraction or an exponent or more than 18 digits, an escaped key, deep
//! nesting, anything malformed) makes it give up with `None`, and the caller walks the document
//! with serde_json instead, which then accepts it or answers its own error. So acceptance, errors
//! and the values recorded stay serde_json's; this is only a shortcut.

use crate::postings::{IndexedPaths, Leaf};

/// Nesting the scanner follows; deeper documents are left to serde_json (whose limit is 128).
const MAX_DEPTH: usize = 64;

/// Scans `text` as [`crate::postings::walk`] would, calling `emit(path id, leaf)` for every value
/// at a path of `paths`. `Some(whether the top level is an object)` when the document is valid and
/// was scanned whole; `None` when it is left to serde_json, in which case `emit` may have been
/// called for part of the document and what it gathered must be dropped.
pub fn scan<F: FnMut(usize, Leaf<'_>)>(text: &str, paths: Option<&IndexedPaths>, emit: F) -> Option<bool> {
    let at = paths.filter(|p| !p.is_empty()).map(|_| 0);
    let mut scanner = Scanner { text, bytes: text.as_bytes(), pos: 0, paths, emit, unescaped: String::new() };
    scanner.whitespace();
    let object = scanner.peek() == Some(b'{');
    scanner.value(at, 0)?;
    scanner.whitespace();
    (scanner.pos == scanner.bytes.len()).then_some(object)
}

struct Scanner<'t, 'p, F> {
    text: &'t str,
    bytes: &'t [u8],
    pos: usize,
    paths: Option<&'p IndexedPaths>,
    emit: F,
    /// The last escaped string, unescaped.
    unescaped: String,
}

impl<F: FnMut(usize, Leaf<'_>)> Scanner<'_, '_, F> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// JSON's whitespace, as serde_json skips it.
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Skips `byte` (after whitespace), or gives up.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.whitespace();
        (self.peek() == Some(byte)).then(|| self.pos += 1)
    }

    /// The indexed field at `node`, if any.
    fn field(&self, node: Option<usize>) -> Option<usize> {
        self.paths?.field(node?)
    }

    /// One value at `at` (its path's node, when the path may lead to an indexed one).
    fn value(&mut self, at: Option<usize>, depth: usize) -> Option<()> {
        self.whitespace();
        match self.peek()? {
            b'{' => self.object(at, depth + 1),
            b'[' => self.array(at, depth + 1),
            b'"' => {
                let (start, end, escaped) = self.string(true)?;
                if let Some(id) = self.field(at) {
                    if escaped {
                        (self.emit)(id, Leaf::Text(&self.unescaped));
                    } else {
                        (self.emit)(id, Leaf::Text(self.text.get(start..end)?));
                    }
                }
                Some(())
            }
            b't' => self.literal(at, "true"),
            b'f' => self.literal(at, "false"),
            b'n' => self.literal(at, "null"),
            b'-' | b'0'..=b'9' => {
                let n = self.integer()?;
                if let Some(id) = self.field(at) {
                    (self.emit)(id, Leaf::Num(n));
                }
                Some(())
            }
            _ => None,
        }
    }

    /// `true`, `false` or `null`, emitted as the text a keyword query compares them by.
    fn literal(&mut self, at: Option<usize>, word: &'static str) -> Option<()> {
        if !self.bytes[self.pos..].starts_with(word.as_bytes()) {
            return None;
        }
        self.pos += word.len();
        if let Some(id) = self.field(at) {
            (self.emit)(id, Leaf::Text(word));
        }
        Some(())
    }

    /// An integer of at most 18 digits (so exactly an `i64`), as serde_json hands it: a `u64`, or
    /// an `i64` when negative, then as `f64` (`Value::as_f64`). Anything else is left to serde_json.
    fn integer(&mut self) -> Option<f64> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let start = self.pos;
        let mut n: i64 = 0;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            if self.pos - start == 18 {
                return None;
            }
            n = n * 10 + i64::from(digit - b'0');
            self.pos += 1;
        }
        let digits = self.pos - start;
        // No digit, a leading zero (serde_json's "invalid number"), a fraction or an exponent.
        if digits == 0 || (digits > 1 && self.bytes[start] == b'0') || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        #[allow(clippy::cast_precision_loss)] // as serde_json's `Value::as_f64`
        Some(if negative { (-n) as f64 } else { n as f64 })
    }

    /// A string at `pos` (its opening quote): the byte range of its contents and whether it had
    /// escapes, then unescaped in `self.unescaped`. Only `\"`-style escapes are taken (not `\u`),
    /// and only where `escapes` allows them.
    fn string(&mut self, escapes: bool) -> Option<(usize, usize, bool)> {
        self.pos += 1;
        let start = self.pos;
        self.pos += plain_run(&self.bytes[start..]);
        loop {
            match *self.bytes.get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return Some((start, self.pos - 1, false));
                }
                b'\\' if escapes => break,
                // A control character (serde_json refuses it), or an escape where none is taken.
                b'\\' | 0..0x20 => return None,
                _ => self.pos += 1,
            }
        }
        // Escaped: the plain part so far, then byte runs between escapes.
        self.unescaped.clear();
        self.unescaped.push_str(self.text.get(start..self.pos)?);
        loop {
            let run = self.pos;
            self.pos += plain_run(&self.bytes[run..]);
            loop {
                match *self.bytes.get(self.pos)? {
                    b'"' | b'\\' => break,
                    0..0x20 => return None,
                    _ => self.pos += 1,
                }
            }
            self.unescaped.push_str(self.text.get(run..self.pos)?);
            if self.bytes[self.pos] == b'"' {
                self.pos += 1;
                return Some((start, self.pos - 1, true));
            }
            let escaped = match *self.bytes.get(self.pos + 1)? {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                // `\u` (surrogates to check) or an invalid escape: serde_json's to judge.
                _ => return None,
            };
            self.unescaped.push(escaped);
            self.pos += 2;
        }
    }

    fn object(&mut self, at: Option<usize>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        if let Some(id) = self.field(at) {
            (self.emit)(id, Leaf::Object);
        }
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.whitespace();
            if self.peek() != Some(b'"') {
                return None;
            }
            // Keys are matched as written: an escaped one is left to serde_json.
            let (start, end, _) = self.string(false)?;
            let child = match (self.paths, at) {
                (Some(paths), Some(node)) => paths.child(node, self.text.get(start..end)?),
                _ => None,
            };
            self.expect(b':')?;
            self.value(child, depth)?;
            self.whitespace();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, at: Option<usize>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        self.whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Some(());
        }
        loop {
            // Arrays are transparent: their elements are at the array's path.
            self.value(at, depth)?;
            self.whitespace();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// The length of the start of `bytes` that a string holds as is: up to the first `"`, `\\` or
/// control character. Eight bytes at a time, as serde_json's own `skip_to_escape` does: a byte
/// of a word is flagged when it is zero after the XOR, or below `0x20`; the lowest flag is exact.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let mut done = 0;
    for chunk in bytes.chunks_exact(8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else { break };
        let word = u64::from_le_bytes(chunk);
        let flags =
            below(word ^ (ONES * u64::from(b'"')), 1) | below(word ^ (ONES * u64::from(b'\\')), 1) | below(word, 0x20);
        if flags != 0 {
            return done + (flags.trailing_zeros() / 8) as usize;
        }
        done += 8;
    }
    done + bytes[done..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(bytes.len() - done)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::postings::walk;

    fn paths() -> IndexedPaths {
        IndexedPaths::from_mappings(&json!({"properties": {
            "traceID": {"type": "keyword"}, "n": {"type": "long"}, "a": {"type": "keyword"},
            "tags": {"type": "nested", "properties": {"key": {"type": "keyword"}, "value": {"type": "keyword"}}},
            "process": {"properties": {"serviceName": {"type": "keyword"}}}
        }}))
    }

    /// What the scanner makes of `text` (`None`: left to serde_json), with the leaves it emitted.
    fn scanned(text: &str, paths: &IndexedPaths) -> Option<(bool, Vec<String>)> {
        let mut leaves = Vec::new();
        let object = scan(text, Some(paths), |id, leaf| leaves.push(format!("{id} {leaf:?}")))?;
        Some((object, leaves))
    }

    /// serde_json's walk of `text`: what the scanner must agree with whenever it answers.
    fn walked(text: &str, paths: &IndexedPaths) -> Result<(bool, Vec<String>), String> {
        let mut leaves = Vec::new();
        let object =
            walk(text, Some(paths), |id, leaf| leaves.push(format!("{id} {leaf:?}"))).map_err(|e| e.to_string())?;
        Ok((object, leaves))
    }

    /// Whether serde_json reads `text` as an object.
    fn serde_object(text: &str) -> bool {
        serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object())
    }

    /// Whenever the scanner answers, serde_json accepts the document and walks the same leaves.
    fn agrees(text: &str) -> Result<(), TestCaseError> {
        let p = paths();
        if let Some(ours) = scanned(text, &p) {
            prop_assert_eq!(Ok(ours), walked(text, &p), "{}", text);
            // Without paths to record, the same answer.
            prop_assert_eq!(scan(text, None, |_, _| {}), Some(serde_object(text)));
        }
        Ok(())
    }

    #[test]
    fn common_documents_are_scanned_as_serde_json_walks_them() {
        let p = paths();
        let span = r#"{"traceID":"0af7651916cd43dd8448eb211c80319c","n":1764460800000000,"flags":1,"tags":[{"key":"http.method","type":"string","value":"GET"},{"key":"code","value":"200"},{"key":"x","value":true},{"key":"y","value":null}],"logs":[],"process":{"serviceName":"frontend","tags":[]},"process.serviceName":"s","a":"say \"hi\"\n\\ / \t","x":{"traceID":"no"},"n2":-0,"m":[-12,0,false]}"#;
        let cases = [
            span,
            " { \"a\" : [ 1 , [ 2 ] , { } ] , \"n\" : -7 }\n",
            "{}",
            "[]",
            "[1,\"a\"]",
            "5",
            "\"s\"",
            "null",
            r#"{"tags":{"key":"k","value":{"inner":1}}}"#,
            r#"{"n":999999999999999999}"#,
        ];
        for text in cases {
            let ours = scanned(text, &p).unwrap_or_else(|| panic!("left to serde_json: {text}"));
            assert_eq!(Ok(ours), walked(text, &p), "{text}");
        }
    }

    #[test]
    fn whatever_it_is_not_sure_of_is_left_to_serde_json() {
        let p = paths();
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let cases = [
            r#"{"a":1.5}"#,
            r#"{"a":1e3}"#,
            r#"{"a":1E3}"#,
            r#"{"a":01}"#,
            r#"{"a":-}"#,
            r#"{"a":1000000000000000000}"#,
            r#"{"a":"\u00e9"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\x"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a\"b":1}"#,
            r#"{"a":1,}"#,
            "[1,]",
            r#"{"a":1} x"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":1"#,
            r#"{"a":"x"#,
            "{",
            "",
            "   ",
            "\u{feff}{}",
            r#"{"a":+1}"#,
            r#"{'a':1}"#,
            &deep,
        ];
        for text in cases {
            assert_eq!(scanned(text, &p), None, "{text}");
        }
    }

    /// Text from JSON's own characters, mostly malformed.
    fn json_ish() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("{"),
                Just("}"),
                Just("["),
                Just("]"),
                Just(","),
                Just(":"),
                Just("\""),
                Just(" "),
                Just("\n"),
                Just("\\"),
                Just("\\\""),
                Just("\\n"),
                Just("\\u00e9"),
                Just("0"),
                Just("1"),
                Just("-"),
                Just("."),
                Just("e"),
                Just("true"),
                Just("false"),
                Just("null"),
                Just("\"a\""),
                Just("\"n\""),
                Just("\"tags\""),
                Just("\"key\""),
                Just("\"traceID\""),
                Just("\"x.y\""),
                Just("é"),
                Just("\u{1}"),
            ],
            0..40,
        )
        .prop_map(|parts| parts.concat())
    }

    /// JSON documents; `all` adds what the scanner leaves to serde_json (fractions, long numbers).
    fn json_value(all: bool) -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-99_999_999_999_999_999i64..=99_999_999_999_999_999).prop_map(Value::from),
            "[a-z0-9\"\\\\/\n\té.]{0,8}".prop_map(Value::from),
        ];
        let leaf = if all {
            prop_oneof![
                leaf,
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                (-1e6f64..1e6).prop_map(Value::from),
            ]
            .boxed()
        } else {
            leaf.boxed()
        };
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("a".to_owned()),
                            Just("n".to_owned()),
                            Just("tags".to_owned()),
                            Just("key".to_owned()),
                            Just("value".to_owned()),
                            Just("process".to_owned()),
                            Just("process.serviceName".to_owned()),
                            Just("traceID".to_owned()),
                            "[a-z.]{1,4}"
                        ],
                        inner
                    ),
                    0..5
                )
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn plain_runs_stop_where_a_byte_loop_stops(bytes in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x22, any::<u8>()], 0..40)) {
            let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(bytes.len());
            prop_assert_eq!(plain_run(&bytes), expected);
        }

        #[test]
        fn scanner_agrees_with_serde_json_on_json_ish_text(text in json_ish()) {
            agrees(&text)?;
        }

        #[test]
        fn scanner_agrees_with_serde_json_on_documents(value in json_value(true), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_string_pretty(&value) } else { serde_json::to_string(&value) };
            agrees(&text.expect("serialises"))?;
        }

        /// Documents of strings, simple escapes and integers are the scanner's own.
        #[test]
        fn scanner_takes_plain_documents(value in json_value(false), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_string_pretty(&value) } else { serde_json::to_string(&value) };
            let text = text.expect("serialises");
            prop_assert!(scanned(&text, &paths()).is_some(), "{}", text);
            agrees(&text)?;
        }
    }
}
