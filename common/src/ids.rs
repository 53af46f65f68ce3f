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
pub struct Fnv64a(u64);

impl Default for Fnv64a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

/// FNV-1a's 64-bit prime.
const PRIME: u64 = 0x0000_0100_0000_01b3;

impl Fnv64a {
    /// Feeds `bytes`, one at a time as FNV-1a defines (xor, then multiply). Each step depends on
    /// the one before, so the speed is the multiply's latency; the loop takes 8 bytes per iteration
    /// (one load, no per-byte bounds check or loop branch) for the same result.
    pub fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut le = [0u8; 8];
            le.copy_from_slice(word);
            let w = u64::from_le_bytes(le);
            h = (h ^ (w & 0xff)).wrapping_mul(PRIME);
            h = (h ^ ((w >> 8) & 0xff)).wrapping_mul(PRIME);
            h = (h ^ ((w >> 16) & 0xff)).wrapping_mul(PRIME);
            h = (h ^ ((w >> 24) & 0xff)).wrapping_mul(PRIME);
            h = (h ^ ((w >> 32) & 0xff)).wrapping_mul(PRIME);
            h = (h ^ ((w >> 40) & 0xff)).wrapping_mul(PRIME);
            h = (h ^ ((w >> 48) & 0xff)).wrapping_mul(PRIME);
            h = (h ^ (w >> 56)).wrapping_mul(PRIME);
        }
        for &b in words.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
        self.0 = h;
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

    /// The byte-at-a-time definition, against which the 8-byte loop is checked.
    fn fnv64a_bytewise(parts: &[&[u8]]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in parts.iter().flat_map(|p| p.iter()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    #[test]
    fn the_8_byte_loop_is_fnv1a_byte_by_byte() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in (0..40).chain([63, 64, 65, 999, 1000]) {
            for split in [0, 1, 3, 8, len / 2] {
                let (a, b) = bytes[..len].split_at(split.min(len));
                assert_eq!(fnv64a(&[a, b]), fnv64a_bytewise(&[a, b]), "len {len}, split {split}");
            }
        }
    }

    #[test]
    fn fnv64a_matches_published_vectors() {
        // Test vectors from the FNV reference (draft-eastlake-fnv): "" and "a" and "foobar".
        assert_eq!(fnv64a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv64a(&[b"foo", b"bar"]), 0x85944171f73967e8);
    }
}
