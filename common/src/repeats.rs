//! Logging a failure that repeats on every retry (a broker or a store that is down) without one
//! line per retry: the first occurrence of a kind is logged, then at most one line per interval
//! saying how often it repeated meanwhile (a burst that ends within the interval is summed into the
//! next line about that kind, whenever it comes). Kinds are our own words (an error code, a librdkafka
//! facility), never client-controlled text, and their number is capped.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How many distinct kinds are remembered; past it every new kind is logged (and not remembered).
const MAX_KINDS: usize = 64;

/// The default quiet interval between two lines about the same kind.
pub const EVERY: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Seen {
    logged_at: Instant,
    suppressed: u64,
}

/// Remembers, per kind, when it was last logged and how often it was suppressed since.
#[derive(Debug)]
pub struct Repeats {
    every: Duration,
    seen: Mutex<HashMap<String, Seen>>,
}

impl Default for Repeats {
    fn default() -> Self {
        Self::new(EVERY)
    }
}

impl Repeats {
    pub fn new(every: Duration) -> Self {
        Self { every, seen: Mutex::new(HashMap::new()) }
    }

    /// Whether an occurrence of `kind` now should be logged: `Some(n)` with the number of
    /// occurrences suppressed since the last line about it, `None` to stay quiet.
    pub fn check(&self, kind: &str) -> Option<u64> {
        self.check_at(kind, Instant::now())
    }

    fn check_at(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = seen.get_mut(kind) {
            if now.saturating_duration_since(s.logged_at) < self.every {
                s.suppressed += 1;
                return None;
            }
            let suppressed = std::mem::take(&mut s.suppressed);
            s.logged_at = now;
            return Some(suppressed);
        }
        if seen.len() < MAX_KINDS {
            seen.insert(kind.to_owned(), Seen { logged_at: now, suppressed: 0 });
        }
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_then_once_per_interval_with_the_count() {
        let r = Repeats::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(r.check_at("AllBrokersDown", t0), Some(0));
        for i in 1..60 {
            assert_eq!(r.check_at("AllBrokersDown", t0 + Duration::from_millis(100 * i)), None);
        }
        // Another kind is independent.
        assert_eq!(r.check_at("Transport", t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(r.check_at("AllBrokersDown", t0 + Duration::from_secs(31)), Some(59));
        assert_eq!(r.check_at("AllBrokersDown", t0 + Duration::from_secs(32)), None);
        assert_eq!(r.check_at("AllBrokersDown", t0 + Duration::from_secs(62)), Some(1));
    }

    #[test]
    fn kinds_are_capped() {
        let r = Repeats::new(Duration::from_secs(30));
        let t0 = Instant::now();
        for i in 0..MAX_KINDS + 10 {
            assert_eq!(r.check_at(&format!("k{i}"), t0), Some(0));
        }
        assert_eq!(r.seen.lock().expect("lock").len(), MAX_KINDS);
        // A kind past the cap is never suppressed: logged every time rather than lost.
        assert_eq!(r.check_at(&format!("k{}", MAX_KINDS + 1), t0), Some(0));
    }
}
