//! `idle`: notices partitions of the topic that nobody consumes — the silent failure of a group
//! whose coordinator keeps a dead member's partitions (Tansu 0.6.0 never hands them to a new member;
//! a real broker keeps a static member's until its session times out).
//!
//! Every few seconds each member reads the group's committed offset and the high watermark of every
//! partition. Lag alone is not a fault: a busy group always lags a little. The fault is a partition
//! this member does not own whose committed offset lags and stands still. After
//! `kafka.stalled_group_timeout` of that, the member counts it in
//! `spanline_ingester_stalled_partitions` and logs it; a member that owns no partition at all also
//! turns `/health/ready` false, until it owns one or the partition moves again. A live owner blocked
//! by a store outage looks the same from outside; the owner's own metrics (bulk retries, paused
//! partitions) tell the two apart.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{Consumer, ConsumerContext},
};
use tokio_util::sync::CancellationToken;

use crate::{health::Cause, metrics::Metrics};

/// How long each metadata, committed-offset or list-offsets query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One partition's position, as the group sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    /// High watermark minus the committed offset (the low watermark where nothing is committed).
    pub lag: i64,
    /// The committed offset (-1 where none): when it changes, someone consumes the partition.
    pub committed: i64,
}

/// What one observation concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Lag summed over the partitions this member does not own.
    pub unowned_lag: i64,
    /// Partitions this member does not own whose lag has not moved for the timeout.
    pub stalled: usize,
    /// This member owns nothing while some partition is stalled.
    pub not_ready: bool,
}

/// The pure part: since when has each partition this member does not own lagged without moving.
#[derive(Debug)]
pub struct IdleWatch {
    timeout: Duration,
    /// Partition → (committed offset last seen, since when it has lagged at that offset).
    since: HashMap<i32, (i64, Instant)>,
    last: Verdict,
}

impl IdleWatch {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, since: HashMap::new(), last: Verdict::default() }
    }

    /// One observation at `now`: the partitions this member owns, and every partition's position
    /// (`None` when it could not be read: the previous verdict stands).
    pub fn observe(&mut self, owned: &[i32], positions: Option<&[Position]>, now: Instant) -> Verdict {
        let Some(positions) = positions else { return self.last };
        let mut verdict = Verdict::default();
        let mut seen = HashMap::with_capacity(positions.len());
        for p in positions.iter().filter(|p| !owned.contains(&p.partition)) {
            verdict.unowned_lag += p.lag.max(0);
            if p.lag <= 0 {
                continue;
            }
            // Unchanged committed offset: keep counting; first sight or moved: start again.
            let since = match self.since.get(&p.partition) {
                Some(&(committed, since)) if committed == p.committed => since,
                _ => now,
            };
            if now.saturating_duration_since(since) >= self.timeout {
                verdict.stalled += 1;
            }
            seen.insert(p.partition, (p.committed, since));
        }
        self.since = seen;
        verdict.not_ready = owned.is_empty() && verdict.stalled > 0;
        self.last = verdict;
        verdict
    }
}

/// The partitions of `topic` this member owns, and every partition's position. Blocking: one
/// metadata request, one committed-offsets request and one or two list-offsets requests.
pub fn positions<C: Consumer<X>, X: ConsumerContext>(consumer: &C, topic: &str) -> Option<(Vec<i32>, Vec<Position>)> {
    let owned = consumer.assignment().ok()?.elements_for_topic(topic).iter().map(|e| e.partition()).collect();
    let metadata = consumer.fetch_metadata(Some(topic), QUERY_TIMEOUT).ok()?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if partitions.is_empty() {
        return None;
    }
    let list = |offset: Offset, of: &[i32]| -> Option<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for &p in of {
            tpl.add_partition_offset(topic, p, offset).ok()?;
        }
        consumer.offsets_for_times(tpl, QUERY_TIMEOUT).ok()
    };
    let offset_of = |tpl: &TopicPartitionList, p: i32| match tpl.find_partition(topic, p).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    };
    let mut wanted = TopicPartitionList::new();
    for &p in &partitions {
        wanted.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(wanted, QUERY_TIMEOUT).ok()?;
    let highs = list(Offset::End, &partitions)?;
    let uncommitted: Vec<i32> = partitions.iter().copied().filter(|&p| offset_of(&committed, p).is_none()).collect();
    let lows = if uncommitted.is_empty() { None } else { list(Offset::Beginning, &uncommitted) };
    let positions = partitions
        .iter()
        .map(|&p| {
            let high = offset_of(&highs, p).unwrap_or(0);
            let (from, committed) = match offset_of(&committed, p) {
                Some(c) => (c, c),
                None => (lows.as_ref().and_then(|l| offset_of(l, p)).unwrap_or(0), -1),
            };
            Position { partition: p, lag: (high - from).max(0), committed }
        })
        .collect();
    Some((owned, positions))
}

/// How often the watch looks, for `timeout`: a few looks per timeout, at most every 5 s.
fn interval(timeout: Duration) -> Duration {
    (timeout / 3).clamp(Duration::from_millis(200), Duration::from_secs(5))
}

/// Watches the group until `stop`; `timeout` zero disables the watch. Never waits for a query at
/// `stop`: a broker that is gone must not hold up the shutdown.
pub async fn watch<C, X>(consumer: Arc<C>, topic: String, timeout: Duration, metrics: Metrics, stop: CancellationToken)
where
    C: Consumer<X> + Send + Sync + 'static,
    X: ConsumerContext + 'static,
{
    if timeout.is_zero() {
        return;
    }
    let mut watch = IdleWatch::new(timeout);
    let mut ticker = tokio::time::interval(interval(timeout));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_stalled = 0;
    // Held while this member owns nothing and the group stands still: readiness is false.
    let mut unready = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (consumer, query_topic) = (consumer.clone(), topic.clone());
        let query = tokio::task::spawn_blocking(move || positions(consumer.as_ref(), &query_topic));
        let found = tokio::select! {
            () = stop.cancelled() => return,
            found = query => found.ok().flatten(),
        };
        let (owned, positions) = match &found {
            Some((owned, positions)) => (owned.as_slice(), Some(positions.as_slice())),
            None => (&[][..], None),
        };
        let verdict = watch.observe(owned, positions, Instant::now());
        metrics.unowned_lag.set(verdict.unowned_lag);
        metrics.stalled_partitions.set(i64::try_from(verdict.stalled).unwrap_or(i64::MAX));
        if verdict.stalled > was_stalled {
            tracing::warn!(
                stalled = verdict.stalled, owned = owned.len(), lag = verdict.unowned_lag, ?timeout, topic = %topic,
                "partitions this member does not own lag without moving: a member holds them without consuming \
                 (a dead member the coordinator keeps: restart it under its group_instance_id, see docs/development.md), \
                 or their owner cannot write"
            );
        }
        if verdict.not_ready != unready.is_some() {
            if verdict.not_ready {
                tracing::warn!("this member owns no partition while the group is stalled; not ready");
                unready = Some(metrics.health.stall(Cause::Idle));
            } else {
                tracing::info!(owned = owned.len(), "the group moves again; ready");
                unready = None;
            }
        }
        was_stalled = verdict.stalled;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, lag: i64, committed: i64) -> Position {
        Position { partition, lag, committed }
    }

    #[test]
    fn stalled_only_after_the_timeout_without_movement() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut w = IdleWatch::new(Duration::from_secs(60));
        let v = w.observe(&[], Some(&[at(0, 100, 0)]), s(0));
        assert_eq!(v, Verdict { unowned_lag: 100, stalled: 0, not_ready: false });
        assert_eq!(w.observe(&[], Some(&[at(0, 150, 0)]), s(59)).stalled, 0);
        assert_eq!(
            w.observe(&[], Some(&[at(0, 200, 0)]), s(60)),
            Verdict { unowned_lag: 200, stalled: 1, not_ready: true }
        );
        // A failed query keeps the verdict.
        assert!(w.observe(&[], None, s(61)).not_ready);
    }

    #[test]
    fn a_moving_partition_is_not_stalled_however_long_it_lags() {
        let t0 = Instant::now();
        let mut w = IdleWatch::new(Duration::from_secs(60));
        for i in 0..100_u64 {
            let committed = i64::try_from(i * 10).expect("small");
            let v = w.observe(&[], Some(&[at(0, 500, committed)]), t0 + Duration::from_secs(i * 5));
            assert_eq!(v.stalled, 0, "the committed offset moves every look: someone consumes it");
        }
    }

    #[test]
    fn one_stuck_partition_is_found_while_others_move_and_this_member_owns_some() {
        let t0 = Instant::now();
        let mut w = IdleWatch::new(Duration::from_secs(10));
        let mut v = Verdict::default();
        for i in 0..5_i64 {
            // Partition 0 is ours; 1 moves; 2 is held by nobody who consumes it.
            let look = [at(0, 5, 0), at(1, 50, i * 7), at(2, 30, 3)];
            v = w.observe(&[0], Some(&look), t0 + Duration::from_secs(u64::try_from(i).expect("small") * 5));
        }
        assert_eq!(v, Verdict { unowned_lag: 80, stalled: 1, not_ready: false }, "owning partitions: still ready");
    }

    #[test]
    fn no_lag_or_owning_the_partition_clears_it() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut w = IdleWatch::new(Duration::from_secs(10));
        w.observe(&[], Some(&[at(0, 5, 0)]), s(0));
        assert!(w.observe(&[], Some(&[at(0, 5, 0)]), s(10)).not_ready);
        assert_eq!(w.observe(&[], Some(&[at(0, 0, 5)]), s(11)), Verdict::default());
        w.observe(&[], Some(&[at(0, 5, 5)]), s(12));
        assert!(w.observe(&[], Some(&[at(0, 5, 5)]), s(22)).not_ready);
        assert_eq!(w.observe(&[0], Some(&[at(0, 5, 5)]), s(23)), Verdict::default());
        // Losing the partition again starts a new count.
        assert_eq!(w.observe(&[], Some(&[at(0, 5, 5)]), s(24)).stalled, 0);
        assert!(w.observe(&[], Some(&[at(0, 5, 5)]), s(34)).not_ready);
    }
}
