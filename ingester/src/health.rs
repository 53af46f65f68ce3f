//! `health`: what keeps the ingester from moving that waiting alone will not fix, made visible.
//!
//! A stage that holds offsets because of something only an operator can fix (the store refuses our
//! requests as a whole, the dead-letter topic cannot be written, the consumer failed for good, this
//! member owns nothing while the group stands still) holds a [`Stalled`] guard for as long as it
//! waits. While any guard is held `/health/ready` is false and `spanline_ingester_stalled{cause}`
//! counts the holders; dropping the guard (the condition cleared, or the task was cancelled) lowers
//! both, so a cancelled future can never leave the ingester marked unready.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use spanline_common::admin::Readiness;

/// Why a stage cannot move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// OpenSearch refuses our requests in a way that only configuration or permissions can fix
    /// (a whole-request 400/401/403/404/405/3xx, or item-level 403/404).
    StoreRefusing,
    /// The dead-letter topic does not accept envelopes (missing topic, ACLs, size limits).
    DeadLetterFailing,
    /// The consumer reported an error librdkafka will not recover from.
    ConsumerFailing,
    /// This member owns no partition while partitions of the topic stand still ([`crate::idle`]).
    Idle,
}

const CAUSES: [Cause; 4] = [Cause::StoreRefusing, Cause::DeadLetterFailing, Cause::ConsumerFailing, Cause::Idle];

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::StoreRefusing => "store_refusing",
            Cause::DeadLetterFailing => "dead_letter_failing",
            Cause::ConsumerFailing => "consumer_failing",
            Cause::Idle => "idle",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

/// The ingester's readiness: `ready` while started and nothing is stalled.
#[derive(Debug, Clone)]
pub struct Health(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    readiness: Readiness,
    /// Set once the consumer is subscribed (or assigned), cleared on shutdown.
    started: AtomicBool,
    held: [AtomicUsize; CAUSES.len()],
    gauge: Family<CauseLabels, Gauge>,
    /// Serialises recomputing the readiness flag, so the last writer saw the last change.
    update: Mutex<()>,
}

impl Health {
    /// A health registered as `spanline_ingester_stalled` in `registry` (a throw-away registry for
    /// replays and tests).
    pub fn register(registry: &mut Registry) -> Self {
        let gauge = Family::<CauseLabels, Gauge>::default();
        registry.sub_registry_with_prefix("spanline_ingester").register(
            "stalled",
            "Stages waiting on a condition only an operator can fix, by cause (store_refusing, dead_letter_failing, consumer_failing, idle); /health/ready is false while any is above 0",
            gauge.clone(),
        );
        for cause in CAUSES {
            gauge.get_or_create(&CauseLabels { cause: cause.as_str() }).set(0);
        }
        Self(Arc::new(Inner {
            readiness: Readiness::default(),
            started: AtomicBool::new(false),
            held: Default::default(),
            gauge,
            update: Mutex::new(()),
        }))
    }

    /// The flag `/health/ready` serves.
    pub fn readiness(&self) -> Readiness {
        self.0.readiness.clone()
    }

    /// Marks the ingester started (subscribed) or stopping.
    pub fn set_started(&self, started: bool) {
        self.0.started.store(started, Ordering::Relaxed);
        self.refresh();
    }

    /// Holds `cause` until the guard is dropped.
    #[must_use = "the stall lasts as long as the guard"]
    pub fn stall(&self, cause: Cause) -> Stalled {
        self.0.held[cause.index()].fetch_add(1, Ordering::Relaxed);
        self.0.gauge.get_or_create(&CauseLabels { cause: cause.as_str() }).inc();
        self.refresh();
        Stalled { health: self.clone(), cause }
    }

    /// The first cause held, if any.
    pub fn stalled(&self) -> Option<Cause> {
        CAUSES.into_iter().find(|c| self.0.held[c.index()].load(Ordering::Relaxed) > 0)
    }

    /// How many guards hold `cause`.
    pub fn held(&self, cause: Cause) -> usize {
        self.0.held[cause.index()].load(Ordering::Relaxed)
    }

    fn refresh(&self) {
        let _serial = self.0.update.lock().unwrap_or_else(PoisonError::into_inner);
        let ready = self.0.started.load(Ordering::Relaxed) && self.stalled().is_none();
        self.0.readiness.set(ready);
    }
}

/// Keeps its cause held; dropping it releases it.
#[derive(Debug)]
pub struct Stalled {
    health: Health,
    cause: Cause,
}

impl Drop for Stalled {
    fn drop(&mut self) {
        let inner = &self.health.0;
        inner.held[self.cause.index()].fetch_sub(1, Ordering::Relaxed);
        inner.gauge.get_or_create(&CauseLabels { cause: self.cause.as_str() }).dec();
        self.health.refresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_start_and_every_held_stall() {
        let health = Health::register(&mut Registry::default());
        let ready = health.readiness();
        assert!(!ready.get(), "not ready before it starts");
        health.set_started(true);
        assert!(ready.get());
        let store = health.stall(Cause::StoreRefusing);
        let store_again = health.stall(Cause::StoreRefusing);
        let letters = health.stall(Cause::DeadLetterFailing);
        assert!(!ready.get());
        assert_eq!(health.held(Cause::StoreRefusing), 2);
        assert_eq!(health.stalled(), Some(Cause::StoreRefusing));
        drop(store);
        drop(store_again);
        assert_eq!(health.stalled(), Some(Cause::DeadLetterFailing));
        assert!(!ready.get(), "still one cause held");
        drop(letters);
        assert!(ready.get());
        health.set_started(false);
        assert!(!ready.get());
    }

    #[tokio::test]
    async fn a_cancelled_holder_releases_its_stall() {
        let health = Health::register(&mut Registry::default());
        health.set_started(true);
        let h = health.clone();
        let task = tokio::spawn(async move {
            let _stalled = h.stall(Cause::DeadLetterFailing);
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        while health.held(Cause::DeadLetterFailing) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!health.readiness().get());
        task.abort();
        let _ = task.await;
        assert_eq!(health.held(Cause::DeadLetterFailing), 0);
        assert!(health.readiness().get());
    }
}
