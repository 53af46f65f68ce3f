//! Trace and span ids as Kafka keys and document fields, and the FNV-64a hash Jaeger uses for ids.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends the lowercase hex form of `bytes` to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
}

/// The lowercase hex form of `bytes`: the Kafka record key for a trace id (REFERENCE.md §1) and the
/// `traceID` / `spanID` document fields (§4).
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// A 16-byte, not all-zero trace id.
pub fn is_valid_trace_id(id: &[u8]) -> bool {
    id.len() == 16 && id.iter().any(|&b| b != 0)
}

/// An 8-byte, not all-zero span id.
pub fn is_valid_span_id(id: &[u8]) -> bool {
    id.len() == 8 && id.iter().any(|&b| b != 0)
}

/// FNV-1a, 64 bit, fed incrementally.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64a(pub(crate) u64);

impl Default for Fnv64a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64a {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// FNV-64a of the concatenation of `parts`.
pub fn fnv64a(parts: &[&[u8]]) -> u64 {
    let mut h = Fnv64a::default();
    for p in parts {
        h.write(p);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(to_hex(&[0x00, 0x0a, 0xff]), "000aff");
        assert_eq!(to_hex(&[0xab; 16]).len(), 32);
    }

    #[test]
    fn id_validity() {
        assert!(is_valid_trace_id(&[1; 16]));
        assert!(!is_valid_trace_id(&[0; 16]));
        assert!(!is_valid_trace_id(&[1; 8]));
        assert!(is_valid_span_id(&[1; 8]));
        assert!(!is_valid_span_id(&[0; 8]));
        assert!(!is_valid_span_id(&[]));
    }

    #[test]
    fn fnv64a_matches_published_vectors() {
        // Test vectors from the FNV reference (draft-eastlake-fnv): "" and "a" and "foobar".
        assert_eq!(fnv64a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv64a(&[b"foo", b"bar"]), 0x85944171f73967e8);
    }
}
