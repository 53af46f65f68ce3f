//! Secrets in configuration: a password, a token or a key, given inline (`password = "…"`, or its
//! environment variable) or read from a file (`password_file`, how Kubernetes mounts a Secret).
//!
//! A [`Secret`] never shows itself: `Debug` and `Serialize` print `"<redacted>"`, so a configuration
//! dump, an error built with `{:?}` or a log field cannot carry the value. Only [`Secret::expose`]
//! gives it out, at the one place it is used (a header, a librdkafka property, an HMAC key).

use std::{fmt, path::Path};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string. Empty means "not set".
#[derive(Clone, Default)]
pub struct Secret(String);

/// Equality in constant time ([`constant_time_eq`]), so comparing secrets never leaks where they differ.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for Secret {}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: call it only where the secret is handed to what needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"<redacted>\"" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

/// The largest secret file read: a token list or a key, never more. A path pointing at something
/// else (a log, a device) is refused instead of read whole.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Reads a secret file: its content with one trailing newline (`\n` or `\r\n`) removed, as
/// `echo secret > file` and Kubernetes Secrets made from literals leave it. The error names the
/// setting and the path, never the content.
pub fn read_file(what: &str, path: &Path) -> Result<Secret, String> {
    from_file_bytes(what, path, read_bounded(what, path)?)
}

/// A secret file's content already read (a [`crate::reload::Watched`] build gets bytes): the same
/// checks and trailing-newline removal as [`read_file`]; errors name `path`, never the content.
pub fn from_file_bytes(what: &str, path: &Path, bytes: Vec<u8>) -> Result<Secret, String> {
    let mut text = String::from_utf8(bytes).map_err(|_| format!("{what} {}: not UTF-8 text", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(format!("{what} {}: the file is empty", path.display()));
    }
    Ok(Secret(text))
}

/// Reads a small file (a secret, a certificate, a key) of at most [`MAX_SECRET_FILE_BYTES`].
pub fn read_bounded(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    read_at_most(what, path, MAX_SECRET_FILE_BYTES)
}

/// Reads a file of at most `max` bytes; a larger one is an error, found without reading past `max`.
pub fn read_at_most(what: &str, path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!("{what} {}: larger than {max} bytes", path.display()));
    }
    Ok(bytes)
}

/// The secret a pair of settings gives: `inline` (named `what`) or the file `file` names (`what_file`),
/// never both. `Ok(None)` when neither is set.
pub fn resolve(what: &str, inline: &Secret, file: &str) -> Result<Option<Secret>, String> {
    match (inline.is_empty(), file.is_empty()) {
        (true, true) => Ok(None),
        (false, true) => Ok(Some(inline.clone())),
        (true, false) => read_file(&format!("{what}_file"), Path::new(file)).map(Some),
        (false, false) => Err(format!("{what} and {what}_file exclude each other: set one")),
    }
}

/// Compares two secrets in time that depends only on their lengths, never on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn debug_and_serialize_never_show_the_value() {
        let s = Secret::new("hunter2-0123");
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"<redacted>\"");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        assert_eq!(s.expose(), "hunter2-0123");
    }

    #[test]
    fn files_lose_one_trailing_newline_and_errors_name_the_path_only() {
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        f.write_all(b"0123456\r\n").expect("write");
        let s = resolve("password", &Secret::default(), &f.path().display().to_string()).expect("reads");
        assert_eq!(s.expect("set").expose(), "0123456");
        let both = resolve("password", &Secret::new("x"), "/nowhere").expect_err("both");
        assert!(both.contains("password and password_file"), "{both}");
        let missing = resolve("password", &Secret::default(), "/nowhere/at/all").expect_err("missing");
        assert!(missing.contains("password_file /nowhere/at/all"), "{missing}");
        assert_eq!(resolve("password", &Secret::default(), "").expect("unset"), None);
    }

    #[test]
    fn oversized_and_empty_files_are_refused() {
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        f.write_all(&vec![b'a'; MAX_SECRET_FILE_BYTES as usize + 1]).expect("write");
        assert!(read_file("token_file", f.path()).expect_err("big").contains("larger than"));
        let empty = tempfile::NamedTempFile::new().expect("temp");
        assert!(read_file("token_file", empty.path()).expect_err("empty").contains("empty"));
    }

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
