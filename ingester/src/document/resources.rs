//! Resources already read through, kept from record to record by a partition's mapping.
//!
//! Each record holds one trace, so a resource (a service's process: its name, host, SDK) comes
//! again in record after record with the same bytes, for a span or two each time. Reading it through
//! (every attribute's UTF-8 and nesting), finding its service name and writing its process part cost
//! more than its spans' own tags; with identical bytes, each gives the same answer. So the live path
//! ([`super::map_record`]) keeps, per resource, its bytes, where its service name is in them and its
//! process part, and on the next record with the same bytes takes them from here.
//!
//! Bounded: [`SLOTS`] entries, direct-mapped (a resource displaces the one in its slot), each kept
//! only for a resource of at most [`MAX_RESOURCE`] bytes and a process part of at most
//! [`MAX_PROCESS`]: at most 64 × 10 KiB (640 KiB) per partition. A slot's buffers keep the capacity
//! of the largest resource that held it, never more than these bounds. A hit is decided by
//! comparing the bytes whole, never by the hash alone, so a collision costs only a miss.

use super::wire::{self, Read};

/// How many resources are kept (two in tests, so that resources displace each other often).
const SLOTS: usize = if cfg!(test) { 2 } else { 64 };

/// The largest resource (its protobuf bytes) kept.
const MAX_RESOURCE: usize = 2 * 1024;

/// The largest process part (its JSON) kept.
const MAX_PROCESS: usize = 8 * 1024;

/// One resource read through before.
#[derive(Debug, Default)]
struct Known {
    /// The `Resource` message's bytes.
    bytes: Vec<u8>,
    /// Where its service name is in `bytes` (start, length), if it has one.
    service: Option<(usize, usize)>,
    /// Its process part, once written.
    process: Option<Process>,
}

/// A process part as [`super::write_process`] wrote it under a document bound of `max` bytes.
#[derive(Debug, Default)]
struct Process {
    json: Vec<u8>,
    len: usize,
    fits: bool,
    max: usize,
}

/// The resources kept, in [`SLOTS`] slots.
#[derive(Debug, Default)]
pub(super) struct Resources {
    slots: Vec<Known>,
}

/// The slot of a resource of these bytes: a multiply-xor hash of all of them, eight at a time
/// (resources differ anywhere: their names come first, a host or pod name last, and names of one
/// length share every other byte). Called only for resources of at most [`MAX_RESOURCE`] bytes;
/// a collision only costs a miss.
fn slot(bytes: &[u8]) -> usize {
    (hash(bytes) >> 58) as usize % SLOTS
}

/// The hash [`slot`] takes its top six bits of.
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        h = (h.rotate_left(5) ^ word).wrapping_mul(K);
    }
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    (h.rotate_left(5) ^ u64::from_le_bytes(last)).wrapping_mul(K)
}

impl Resources {
    fn known(&self, bytes: &[u8]) -> Option<&Known> {
        if bytes.len() > MAX_RESOURCE {
            return None;
        }
        self.slots.get(slot(bytes)).filter(|k| k.bytes == bytes)
    }

    /// The service name of the `Resource` in `bytes`, as [`wire::read_resource`] finds it, having
    /// read it through (an error if it cannot be read); from the slot when these bytes were read
    /// before.
    pub(super) fn service<'a>(&mut self, bytes: &'a [u8]) -> Read<Option<&'a str>> {
        if let Some(known) = self.known(bytes) {
            return Ok(known.service.and_then(|(at, len)| std::str::from_utf8(bytes.get(at..at + len)?).ok()));
        }
        let service = wire::read_resource(bytes)?;
        if bytes.len() <= MAX_RESOURCE {
            if self.slots.is_empty() {
                self.slots.resize_with(SLOTS, Known::default);
            }
            let known = &mut self.slots[slot(bytes)];
            known.bytes.clear();
            known.bytes.reserve_exact(bytes.len());
            known.bytes.extend_from_slice(bytes);
            known.service = service.map(|s| (s.as_ptr() as usize - bytes.as_ptr() as usize, s.len()));
            known.process = None;
        }
        Ok(service)
    }

    /// The process part written for the `Resource` in `bytes` under a document bound of `max`:
    /// (its JSON as kept, its length, whether it fits), if kept.
    pub(super) fn process(&self, bytes: &[u8], max: usize) -> Option<(&[u8], usize, bool)> {
        let process = self.known(bytes)?.process.as_ref().filter(|p| p.max == max)?;
        Some((&process.json, process.len, process.fits))
    }

    /// Keeps the process part just written for the `Resource` in `bytes`, if that resource is kept
    /// and the part is small enough.
    pub(super) fn keep_process(&mut self, bytes: &[u8], json: &[u8], len: usize, fits: bool, max: usize) {
        if json.len() > MAX_PROCESS || bytes.len() > MAX_RESOURCE {
            return;
        }
        let at = slot(bytes);
        let Some(known) = self.slots.get_mut(at).filter(|k| k.bytes == bytes) else { return };
        let mut process = known.process.take().unwrap_or_default();
        process.json.clear();
        process.json.reserve_exact(json.len());
        process.json.extend_from_slice(json);
        (process.len, process.fits, process.max) = (len, fits, max);
        known.process = Some(process);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_spread_resources_that_differ_anywhere() {
        for shape in
            ["service.name=svc-{i:02} host.name=node-1 sdk=rust", "service.name=checkout sdk=rust host=node-{i:02}"]
        {
            let slots: std::collections::HashSet<usize> = (0..32)
                .map(|i| (hash(shape.replace("{i:02}", &format!("{i:02}")).as_bytes()) >> 58) as usize)
                .collect();
            assert!(slots.len() > 16, "{shape}: {} distinct slots of 32", slots.len());
        }
    }

    #[test]
    fn a_hit_needs_the_same_bytes_not_only_the_same_slot() {
        let mut resources = Resources::default();
        let a = b"\x0a\x05\x0a\x01k\x12\x00";
        resources.slots.resize_with(SLOTS, Known::default);
        resources.slots[slot(a)] = Known { bytes: a.to_vec(), service: None, process: None };
        let mut b = a.to_vec();
        b[3] = b'x';
        assert!(resources.known(a).is_some());
        assert!(resources.known(&b).is_none());
    }
}
