//! `idle`: notices a member that is subscribed but owns no partition while the topic has lag that
//! nobody consumes — the silent failure of a group whose coordinator keeps a dead member's
//! partitions (Tansu 0.6.0 never hands them to a new member; a real broker can do it for a static
//! member until its session times out).
//!
//! While this member owns nothing, it reads the group's committed offsets and the high watermarks of
//! every partition every few seconds. Lag alone is not a fault: with more members than partitions
//! an idle member is normal, and a busy group always lags a little. The fault is lag whose committed
//! offsets stop moving. After `kafka.stalled_group_timeout` of that, the member says so in a log
//! line, in `spanline_ingester_stalled_group` and by turning `/health/ready` false, until it owns a
//! partition or the group moves again.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{Consumer, ConsumerContext},
};
use spanline_common::admin::Readiness;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How long each metadata, committed-offset or watermark query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a query of the group's position on the topic found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPosition {
    /// High watermark minus committed offset (the low watermark where nothing is committed), summed
    /// over all partitions.
    pub lag: i64,
    /// Committed offsets summed over all partitions: when it changes, the group is moving.
    pub committed: i64,
}

/// What one observation concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The lag to show (0 while this member owns partitions).
    pub lag: i64,
    /// Owning nothing while the lag has not moved for the timeout.
    pub stalled: bool,
}

/// The pure part: when did the group's lag stop moving while this member owned nothing.
#[derive(Debug)]
pub struct IdleWatch {
    timeout: Duration,
    /// Since when this member has owned nothing while the group lagged without moving.
    since: Option<Instant>,
    last_committed: Option<i64>,
    last: Verdict,
}

impl IdleWatch {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, since: None, last_committed: None, last: Verdict { lag: 0, stalled: false } }
    }

    /// One observation at `now`: whether this member owns partitions, and the group's position
    /// (`None` when it could not be read: the previous verdict stands).
    pub fn observe(&mut self, owns_partitions: bool, position: Option<GroupPosition>, now: Instant) -> Verdict {
        if owns_partitions {
            self.since = None;
            self.last_committed = None;
            self.last = Verdict { lag: 0, stalled: false };
            return self.last;
        }
        let Some(position) = position else { return self.last };
        if position.lag <= 0 {
            self.since = None;
        } else if self.last_committed != Some(position.committed) || self.since.is_none() {
            // First sight of lag, or the group moved since the last look: start counting again.
            self.since = Some(now);
        }
        self.last_committed = Some(position.committed);
        let stalled = self.since.is_some_and(|since| now.saturating_duration_since(since) >= self.timeout);
        self.last = Verdict { lag: position.lag.max(0), stalled };
        self.last
    }
}

/// Reads the group's committed offsets and the high watermarks of every partition of `topic`.
/// Blocking.
pub fn group_position<C: Consumer<X>, X: ConsumerContext>(consumer: &C, topic: &str) -> Option<GroupPosition> {
    let metadata = consumer.fetch_metadata(Some(topic), QUERY_TIMEOUT).ok()?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if partitions.is_empty() {
        return None;
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, QUERY_TIMEOUT).ok()?;
    let (mut lag, mut committed_sum) = (0_i64, 0_i64);
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, QUERY_TIMEOUT).ok()?;
        let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => low,
        };
        lag += (high - at).max(0);
        committed_sum += at;
    }
    Some(GroupPosition { lag, committed: committed_sum })
}

/// How often the watch looks, for `timeout`: a few looks per timeout, at most every 5 s.
fn interval(timeout: Duration) -> Duration {
    (timeout / 3).clamp(Duration::from_millis(200), Duration::from_secs(5))
}

/// Watches this member until `stop`; `timeout` zero disables the watch.
pub async fn watch<C, X>(
    consumer: Arc<C>,
    topic: String,
    timeout: Duration,
    metrics: Metrics,
    ready: Readiness,
    stop: CancellationToken,
) where
    C: Consumer<X> + Send + Sync + 'static,
    X: ConsumerContext + 'static,
{
    if timeout.is_zero() {
        return;
    }
    let mut watch = IdleWatch::new(timeout);
    let mut ticker = tokio::time::interval(interval(timeout));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_stalled = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let owns = metrics.assigned_partitions.get() > 0;
        let position = if owns {
            None
        } else {
            let (consumer, topic) = (consumer.clone(), topic.clone());
            tokio::task::spawn_blocking(move || group_position(consumer.as_ref(), &topic)).await.ok().flatten()
        };
        let verdict = watch.observe(owns, position, Instant::now());
        metrics.unowned_lag.set(verdict.lag);
        metrics.stalled_group.set(i64::from(verdict.stalled));
        if verdict.stalled && !was_stalled {
            tracing::warn!(
                lag = verdict.lag, ?timeout, topic = %topic,
                "this member owns no partition while the group's offsets lag and have not moved; \
                 another member may hold the partitions (a dead member the coordinator keeps: restart it \
                 under its group_instance_id, see docs/development.md); not ready"
            );
            ready.set(false);
        } else if !verdict.stalled && was_stalled {
            tracing::info!(owns_partitions = owns, "the group moves again; ready");
            ready.set(true);
        }
        was_stalled = verdict.stalled;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lag: i64, committed: i64) -> Option<GroupPosition> {
        Some(GroupPosition { lag, committed })
    }

    #[test]
    fn stalled_only_after_the_timeout_without_movement() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut w = IdleWatch::new(Duration::from_secs(60));
        assert_eq!(w.observe(false, at(100, 0), s(0)), Verdict { lag: 100, stalled: false });
        assert!(!w.observe(false, at(150, 0), s(59)).stalled);
        assert_eq!(w.observe(false, at(200, 0), s(60)), Verdict { lag: 200, stalled: true });
        // A failed query keeps the verdict.
        assert!(w.observe(false, None, s(61)).stalled);
    }

    #[test]
    fn a_moving_group_is_not_stalled_however_long_it_lags() {
        let t0 = Instant::now();
        let mut w = IdleWatch::new(Duration::from_secs(60));
        for i in 0..100_u64 {
            let committed = i64::try_from(i * 10).expect("small");
            let v = w.observe(false, at(500, committed), t0 + Duration::from_secs(i * 5));
            assert!(!v.stalled, "committed offsets move every look: other members are consuming");
        }
    }

    #[test]
    fn no_lag_or_owning_partitions_clears_it() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut w = IdleWatch::new(Duration::from_secs(10));
        w.observe(false, at(5, 0), s(0));
        assert!(w.observe(false, at(5, 0), s(10)).stalled);
        assert_eq!(w.observe(false, at(0, 5), s(11)), Verdict { lag: 0, stalled: false });
        w.observe(false, at(5, 5), s(12));
        assert!(w.observe(false, at(5, 5), s(22)).stalled);
        assert_eq!(w.observe(true, None, s(23)), Verdict { lag: 0, stalled: false });
        // Losing the partitions again starts a new count.
        assert!(!w.observe(false, at(5, 5), s(24)).stalled);
        assert!(w.observe(false, at(5, 5), s(34)).stalled);
    }
}
