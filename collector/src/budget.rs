//! `budget`: the collector's memory bound, `limits.max_inflight_bytes`, drawn on by every stage of
//! an export from its first body byte to Kafka's last acknowledgement.
//!
//! `receive` charges request bodies as their bytes arrive and the decoded request (estimated from
//! its wire shape by [`crate::decode`] before anything is allocated); `encode` charges the records
//! it plans before building them; `produce` holds the records' charge until every delivery report.
//! Guarantees: the bytes charged never exceed the budget; a charge is released when its [`Charge`]
//! is dropped (so a cancelled export cannot leak budget); a request that needs more than the whole
//! budget is refused for good ([`Error::OverBudget`], RESOURCE_EXHAUSTED / 413), one that needs
//! more than is free right now is refused as retryable ([`Error::Overloaded`], UNAVAILABLE / 503).

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

/// Permits are KiB, so a `u32` permit count covers 4 TiB.
const PERMIT_BYTES: usize = 1024;

/// The shared memory budget.
#[derive(Debug, Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    capacity: usize,
    /// Bytes charged now, for `spanline_collector_inflight_bytes`.
    used: Gauge,
}

impl Budget {
    pub fn new(bytes: usize, used: Gauge) -> Self {
        let capacity = (bytes / PERMIT_BYTES).min(Semaphore::MAX_PERMITS);
        Self { permits: Arc::new(Semaphore::new(capacity)), capacity: capacity * PERMIT_BYTES, used }
    }

    /// The whole budget in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// An empty charge to grow as bytes arrive.
    pub fn start(&self) -> Charge {
        Charge { budget: self.clone(), permit: None, bytes: 0 }
    }

    /// A charge of `bytes` for `what` (named in the refusal).
    pub fn charge(&self, bytes: usize, what: &'static str) -> Result<Charge, Error> {
        let mut charge = self.start();
        charge.grow(bytes, what)?;
        Ok(charge)
    }

    fn permits_for(bytes: usize) -> usize {
        bytes.div_ceil(PERMIT_BYTES)
    }

    fn gauge_add(&self, permits: usize, sign: i64) {
        let bytes = i64::try_from(permits * PERMIT_BYTES).unwrap_or(i64::MAX);
        self.used.inc_by(sign * bytes);
    }
}

/// Budget held by one export; released on drop.
#[derive(Debug)]
pub struct Charge {
    budget: Budget,
    permit: Option<OwnedSemaphorePermit>,
    /// Bytes asked for so far (the permits cover them rounded up to KiB).
    bytes: usize,
}

impl Charge {
    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn held(&self) -> usize {
        self.permit.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Refuses for good when `more` bytes beside this charge could never fit the whole budget.
    pub fn fits_with(&self, more: usize, what: &'static str) -> Result<(), Error> {
        let need = self.bytes.saturating_add(more);
        if need > self.budget.capacity {
            return Err(Error::OverBudget { what, need, limit: self.budget.capacity });
        }
        Ok(())
    }

    /// Adds `more` bytes for `what`: refused for good when the total would exceed the whole
    /// budget, as retryable when the budget is busy. Nothing is charged on refusal.
    pub fn grow(&mut self, more: usize, what: &'static str) -> Result<(), Error> {
        let want = self.bytes.saturating_add(more);
        if want > self.budget.capacity {
            return Err(Error::OverBudget { what, need: want, limit: self.budget.capacity });
        }
        let missing = Budget::permits_for(want).saturating_sub(self.held());
        if missing > 0 {
            let n = u32::try_from(missing).unwrap_or(u32::MAX);
            let extra = self.budget.permits.clone().try_acquire_many_owned(n).map_err(|_| {
                Error::Overloaded(format!(
                    "limits.max_inflight_bytes ({} bytes) busy with other exports; {what} needs {want} bytes",
                    self.budget.capacity
                ))
            })?;
            self.budget.gauge_add(missing, 1);
            match &mut self.permit {
                Some(permit) => permit.merge(extra),
                None => self.permit = Some(extra),
            }
        }
        self.bytes = want;
        Ok(())
    }

    /// Releases what is held beyond `bytes` (e.g. the decoded request once its records are built).
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes >= self.bytes {
            return;
        }
        self.bytes = bytes;
        let surplus = self.held().saturating_sub(Budget::permits_for(bytes));
        if surplus > 0
            && let Some(permit) = &mut self.permit
            && let Some(released) = permit.split(surplus)
        {
            drop(released);
            self.budget.gauge_add(surplus, -1);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let held = self.held();
        if held > 0 {
            self.budget.gauge_add(held, -1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: usize) -> Budget {
        Budget::new(bytes, Gauge::default())
    }

    #[test]
    fn over_the_whole_budget_is_final_over_the_free_part_is_retryable() {
        let b = budget(64 * 1024);
        let err = b.charge(64 * 1024 + 1, "request").expect_err("over");
        assert!(matches!(err, Error::OverBudget { need, limit, .. } if need == 64 * 1024 + 1 && limit == 64 * 1024));
        assert!(!err.is_retryable());
        let held = b.charge(40 * 1024, "request").expect("fits");
        let err = b.charge(30 * 1024, "request").expect_err("busy");
        assert!(err.is_retryable(), "{err}");
        drop(held);
        b.charge(64 * 1024, "request").expect("free again");
        assert_eq!(b.used.get(), 0, "dropped charges release the gauge too");
    }

    #[test]
    fn grow_and_shrink_account_in_kib() {
        let b = budget(8 * 1024);
        let mut c = b.start();
        for _ in 0..10 {
            c.grow(100, "body").expect("small steps");
        }
        assert_eq!(c.bytes(), 1000);
        assert_eq!(c.held(), 1);
        c.grow(5000, "decoded").expect("fits");
        assert_eq!(c.held(), 6);
        assert!(c.grow(3000, "records").is_err(), "6 + 3 KiB > 8 KiB");
        assert_eq!(c.bytes(), 6000, "a refused grow charges nothing");
        c.shrink_to(1500);
        assert_eq!(c.held(), 2);
        assert_eq!(b.used.get(), 2048);
        b.charge(6 * 1024, "other").expect("released part is free");
    }
}
