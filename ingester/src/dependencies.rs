//! `dependencies`: a partition's spans → calls per (parent service, child service) per time window,
//! the links Jaeger's System Architecture tab draws, derived per trace the way Jaeger's own
//! dependency job (spark-dependencies) derives them, without a Spark job.
//!
//! Fed by the partition's worker, record by record in offset order ([`Tracker::record`], then
//! [`Tracker::span`] for each of the record's spans); hands back each window's counts once no later
//! record can change them ([`Tracker::take_final`]), and for a partition with nothing to read, the
//! counts its windows will have once the wall clock passes them ([`Tracker::preview`]). Pure: no
//! I/O, no wall clock; its state is a function of the records alone.
//!
//! # How a trace is put together
//!
//! Every trace is on one partition, so its spans meet here. The spans of a trace that arrive close
//! together form one *trace instance*; when the instance closes, its links are derived from its spans
//! alone, as the Spark job derives them from a trace:
//! - every reference (the parent, and links into the same trace) to a span of the instance gives
//!   `parent's service → span's service`, same-service calls included; a span id shared by a client
//!   and a server span (Zipkin) gives `client → server` once, and a reference to such a shared id
//!   takes the server side; a shared span that is not the client side adds nothing of its own;
//! - a referencing span that nothing references (a leaf) with `peer.service` gives
//!   `service → peer.service`: the uninstrumented database or queue it called.
//!
//! # Time, and why the counts never change on a re-read
//!
//! All time here is the *clock*: the largest Kafka record timestamp seen (the collector's produce
//! time), so a backlog or a replay runs on the same time as the live stream did. An instance opens at
//! its trace's first span and closes `idle` after its last span, and at the latest `idle` after the
//! end of the `max_trace_duration` slot it opened in (slots are aligned to the epoch). It counts in
//! the `window` it opened in. A window is final once the clock is `idle` past its end: every instance
//! opened in it has closed.
//!
//! The slot cap is what makes a re-read exact. Because every instance ends at most `idle` into the
//! next slot, a trace that never pauses is cut at the same slot boundaries whatever point reading
//! started from, and an instance open at any time `T` opened no earlier than two slots before `T`.
//! So the tracker started [`Rewind::prime_from_ms`] before a window ([`Rewind::from_committed`]) holds,
//! by that window's start, exactly the instances a tracker that had read the partition from its
//! beginning holds, and every window from there on comes out the same, count for count. The worker
//! uses this after any restart, rebalance or replay: it re-reads from the rewind point (spans already
//! indexed are not indexed again), recounts every window that was not final, and overwrites their
//! documents, whose ids are the partition and the window. Nothing is ever added to a stored count, so
//! a crash between writing a window and committing its records, a rebalance, or a replay of the same
//! records cannot count a call twice, and a call counted by a lost process is counted again by the
//! next one.
//!
//! What the guarantee assumes, each counted when it does not hold: record timestamps on a partition
//! are out of order by at most `lateness` (one collector fleet with synchronised clocks: milliseconds);
//! the `max_spans` bound is not reached (an instance closed early to stay under it loses the links to
//! its later spans); a window has at most `max_edges` distinct links.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap, HashSet, hash_map::Entry},
    sync::Arc,
    time::Duration,
};

/// OTLP span kinds the derivation looks at.
pub mod kind {
    pub const SERVER: i32 = 2;
    pub const CLIENT: i32 = 3;
    pub const PRODUCER: i32 = 4;
    pub const CONSUMER: i32 = 5;
}

/// Longest service name kept, in bytes (cut at a character boundary): a client's service name sizes
/// the window document.
pub const MAX_SERVICE_BYTES: usize = 256;

/// What the tracker is told about one span.
#[derive(Debug, Clone, Copy)]
pub struct SpanFact<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The parent span id, if any.
    pub parent: Option<[u8; 8]>,
    /// Span ids of links into the same trace (Jaeger references); links to other traces are left out.
    pub links: &'a [[u8; 8]],
    /// OTLP span kind.
    pub kind: i32,
    pub service: &'a str,
    /// The `peer.service` attribute, if set.
    pub peer_service: Option<&'a str>,
}

/// The bounds, all in the clock's time (record timestamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Length of a counting window: one document per partition and window.
    pub window: Duration,
    /// A trace instance ends at most `idle` after the end of the slot of this length it opened in.
    pub max_trace_duration: Duration,
    /// An instance closes this long after its last span.
    pub idle: Duration,
    /// How far out of order record timestamps may be.
    pub lateness: Duration,
    /// Spans held in open instances, at most.
    pub max_spans: usize,
    /// Distinct links in one window, at most.
    pub max_edges: usize,
}

impl Bounds {
    fn ms(d: Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
    }
}

/// Where to start reading so that every window that may not be final is counted again exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewind {
    /// Read records with timestamps from here (instances are rebuilt, nothing counted before
    /// `count_from_ms`).
    pub prime_from_ms: i64,
    /// The first window counted: windows before it were final before the committed record.
    pub count_from_ms: i64,
}

impl Rewind {
    /// For a partition whose last committed record (the one before the committed offset) has
    /// timestamp `last_ms`.
    pub fn from_committed(bounds: &Bounds, last_ms: i64) -> Self {
        let window = Bounds::ms(bounds.window);
        let idle = Bounds::ms(bounds.idle);
        let slot = Bounds::ms(bounds.max_trace_duration);
        let lateness = Bounds::ms(bounds.lateness);
        // The clock after the last committed record was at least its timestamp; a window whose end
        // is more than `idle` before that was final then, and its document went into a batch before
        // that record's, so it was durable before the commit.
        let count_from_ms = floor(last_ms.saturating_sub(idle), window);
        // Instances open at `count_from_ms` opened at most two slots before (the slot cap), and a
        // record of theirs may be `lateness` earlier than the clock at the time.
        let prime_from_ms = floor(count_from_ms.saturating_sub(2 * slot + idle), slot).saturating_sub(lateness);
        Self { prime_from_ms, count_from_ms }
    }
}

impl Rewind {
    /// The first window that can be counted whole when nothing before `first_ms` can be read (a
    /// partition whose older records are gone, or a re-read that failed): primed as
    /// [`Rewind::from_committed`] requires.
    pub fn whole_after(bounds: &Bounds, first_ms: i64) -> i64 {
        let window = Bounds::ms(bounds.window);
        let margin = 3 * Bounds::ms(bounds.max_trace_duration) + Bounds::ms(bounds.idle) + Bounds::ms(bounds.lateness);
        floor(first_ms.saturating_add(margin), window).saturating_add(window)
    }
}

/// Calls per (parent, child) link.
type Counts = HashMap<(Arc<str>, Arc<str>), u64>;

fn floor(ms: i64, step: i64) -> i64 {
    ms.div_euclid(step) * step
}

/// One window's counts, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCounts {
    /// Start of the window, milliseconds since the epoch.
    pub start_ms: i64,
    /// `(parent, child, calls)`, sorted.
    pub links: Vec<(Arc<str>, Arc<str>, u64)>,
}

/// What the tracker counted, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Instances closed because `max_spans` was reached.
    pub evicted_for_memory: u64,
    /// Links left out of a window over `max_edges`.
    pub edges_dropped: u64,
    /// Records whose timestamp was more than `lateness` behind the clock.
    pub late_records: u64,
    /// Instances closed.
    pub instances_closed: u64,
}

#[derive(Debug)]
struct SpanRec {
    span_id: u64,
    parent: u64,
    links: Option<Box<[u64]>>,
    kind: i32,
    service: Arc<str>,
    peer: Option<Arc<str>>,
}

#[derive(Debug)]
struct Instance {
    /// Its share of `max_spans`: a span and each of its links count one.
    held: usize,
    opened_ms: i64,
    /// When it closes unless touched again; the key of its live heap entry.
    deadline_ms: i64,
    spans: Vec<SpanRec>,
}

/// One partition's trace instances and uncommitted window counts.
#[derive(Debug)]
pub struct Tracker {
    bounds: Bounds,
    window_ms: i64,
    slot_ms: i64,
    idle_ms: i64,
    lateness_ms: i64,
    clock: Option<i64>,
    /// Windows before this are not counted (a re-read primes the instances from before it).
    count_from_ms: i64,
    instances: HashMap<[u8; 16], Instance>,
    /// (deadline, trace): entries whose deadline no longer matches their instance's are stale.
    deadlines: BinaryHeap<Reverse<(i64, [u8; 16])>>,
    spans_held: usize,
    windows: BTreeMap<i64, Counts>,
    names: HashSet<Arc<str>>,
    names_pruned_at: usize,
    /// Windows [`Tracker::preview`] already handed out.
    previewed: std::collections::BTreeSet<i64>,
    stats: Stats,
}

impl Tracker {
    pub fn new(bounds: Bounds, count_from_ms: i64) -> Self {
        Self {
            window_ms: Bounds::ms(bounds.window),
            slot_ms: Bounds::ms(bounds.max_trace_duration),
            idle_ms: Bounds::ms(bounds.idle),
            lateness_ms: Bounds::ms(bounds.lateness),
            bounds,
            clock: None,
            count_from_ms,
            instances: HashMap::new(),
            deadlines: BinaryHeap::new(),
            spans_held: 0,
            windows: BTreeMap::new(),
            names: HashSet::new(),
            names_pruned_at: 1024,
            previewed: std::collections::BTreeSet::new(),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Counts no window before `ms` (a re-read found records missing before its first).
    pub fn count_from_at_least(&mut self, ms: i64) {
        self.count_from_ms = self.count_from_ms.max(ms);
    }

    /// Spans (and their links) held in open instances.
    pub fn spans_held(&self) -> usize {
        self.spans_held
    }

    /// The clock, if a record was seen.
    pub fn clock(&self) -> Option<i64> {
        self.clock
    }

    /// A record with Kafka timestamp `ts_ms` comes next: the clock moves and the instances it
    /// passed close, before the record's spans are added.
    pub fn record(&mut self, ts_ms: i64) {
        if let Some(clock) = self.clock
            && ts_ms < clock.saturating_sub(self.lateness_ms)
        {
            self.stats.late_records += 1;
        }
        self.advance(ts_ms);
    }

    /// Moves the clock to `ms` if that is later, closing the instances it passes.
    pub fn advance(&mut self, ms: i64) {
        let clock = self.clock.map_or(ms, |c| c.max(ms));
        self.clock = Some(clock);
        while let Some(&Reverse((deadline, trace))) = self.deadlines.peek() {
            if deadline > clock {
                break;
            }
            self.deadlines.pop();
            if self.instances.get(&trace).is_some_and(|i| i.deadline_ms == deadline) {
                self.close(&trace);
            }
        }
    }

    /// Adds one span of the current record.
    pub fn span(&mut self, span: &SpanFact<'_>) {
        let Some(clock) = self.clock else { return };
        if self.spans_held >= self.bounds.max_spans {
            self.evict_one();
        }
        let rec = SpanRec {
            span_id: u64::from_be_bytes(span.span_id),
            parent: span.parent.map_or(0, u64::from_be_bytes),
            links: (!span.links.is_empty()).then(|| span.links.iter().map(|l| u64::from_be_bytes(*l)).collect()),
            kind: span.kind,
            service: self.name(span.service),
            peer: span.peer_service.map(|p| self.name(p)),
        };
        let idle_deadline = clock.saturating_add(self.idle_ms);
        let instance = match self.instances.entry(span.trace_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                e.insert(Instance { held: 0, opened_ms: clock, deadline_ms: i64::MIN, spans: Vec::new() })
            }
        };
        // A span sent twice (a retried export) is kept once when the instance closes ([`unique`]).
        let held = 1 + rec.links.as_ref().map_or(0, |l| l.len());
        instance.spans.push(rec);
        instance.held += held;
        self.spans_held += held;
        let cap = floor(instance.opened_ms, self.slot_ms).saturating_add(self.slot_ms).saturating_add(self.idle_ms);
        let deadline = idle_deadline.min(cap);
        if deadline != instance.deadline_ms {
            instance.deadline_ms = deadline;
            self.deadlines.push(Reverse((deadline, span.trace_id)));
            // Entries of deadlines that moved are stale: rebuilt from the instances when they are
            // most of the heap, so it stays within twice the instances held.
            if self.deadlines.len() > 2 * self.instances.len() + 1024 {
                self.deadlines = self.instances.iter().map(|(t, i)| Reverse((i.deadline_ms, *t))).collect();
            }
        }
    }

    /// The windows no later record can change, oldest first, with their counts; they are forgotten.
    pub fn take_final(&mut self) -> Vec<WindowCounts> {
        let Some(clock) = self.clock else { return Vec::new() };
        let mut out = Vec::new();
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            if start.saturating_add(self.window_ms).saturating_add(self.idle_ms) > clock {
                break;
            }
            out.push(sorted(start, entry.remove()));
        }
        self.prune_names();
        out
    }

    /// The windows that will be final once the clock reaches `at_ms`, with the counts they will
    /// have if no record arrives before (each handed out once): what a partition with nothing to
    /// read writes, its clock following the wall clock. Nothing changes: the instances and the
    /// counts stay a function of the records alone, so a re-read comes out the same whatever the
    /// wall clock did, and the final windows ([`Tracker::take_final`]) are written again when
    /// records move the clock past them.
    pub fn preview(&mut self, at_ms: i64) -> Vec<WindowCounts> {
        let final_at = |start: i64| start.saturating_add(self.window_ms).saturating_add(self.idle_ms) <= at_ms;
        let mut due: BTreeMap<i64, Counts> = BTreeMap::new();
        for (&start, counts) in &self.windows {
            if final_at(start) && !self.previewed.contains(&start) {
                due.insert(start, counts.clone());
            }
        }
        for instance in self.instances.values_mut() {
            let start = floor(instance.opened_ms, self.window_ms);
            if start < self.count_from_ms || !final_at(start) || self.previewed.contains(&start) {
                continue;
            }
            let before = instance.held;
            unique(&mut instance.spans);
            instance.held = instance.spans.iter().map(|s| 1 + s.links.as_ref().map_or(0, |l| l.len())).sum();
            self.spans_held -= before - instance.held;
            let counts = due.entry(start).or_default();
            let max_edges = self.bounds.max_edges;
            derive(&instance.spans, |parent, child| {
                let key = (parent.clone(), child.clone());
                if let Some(n) = counts.get_mut(&key) {
                    *n += 1;
                } else if counts.len() < max_edges {
                    counts.insert(key, 1);
                }
            });
        }
        self.previewed.extend(due.keys().copied());
        // Windows long final are forgotten (kept while their final hand-out may still come).
        let oldest = self.windows.keys().next().copied().unwrap_or(i64::MAX);
        let open = self.instances.values().map(|i| floor(i.opened_ms, self.window_ms)).min().unwrap_or(i64::MAX);
        let keep_from = oldest.min(open);
        self.previewed.retain(|&w| w >= keep_from);
        due.into_iter().map(|(start, counts)| sorted(start, counts)).collect()
    }

    /// Closes every open instance and hands back every window: the end of a bounded replay.
    pub fn finish(&mut self) -> Vec<WindowCounts> {
        let traces: Vec<[u8; 16]> = self.instances.keys().copied().collect();
        for trace in traces {
            self.close(&trace);
        }
        self.deadlines.clear();
        std::mem::take(&mut self.windows).into_iter().map(|(start, counts)| sorted(start, counts)).collect()
    }

    fn name(&mut self, name: &str) -> Arc<str> {
        let name = clip(name);
        if let Some(known) = self.names.get(name) {
            return known.clone();
        }
        let new: Arc<str> = Arc::from(name);
        self.names.insert(new.clone());
        new
    }

    /// Forgets names no instance or window holds any more, once the table has doubled.
    fn prune_names(&mut self) {
        if self.names.len() >= 2 * self.names_pruned_at {
            self.names.retain(|n| Arc::strong_count(n) > 1);
            self.names_pruned_at = self.names.len().max(1024);
        }
    }

    fn evict_one(&mut self) {
        while let Some(Reverse((deadline, trace))) = self.deadlines.pop() {
            if self.instances.get(&trace).is_some_and(|i| i.deadline_ms == deadline) {
                self.stats.evicted_for_memory += 1;
                self.close(&trace);
                return;
            }
        }
    }

    fn close(&mut self, trace: &[u8; 16]) {
        let Some(mut instance) = self.instances.remove(trace) else { return };
        self.spans_held -= instance.held;
        self.stats.instances_closed += 1;
        let window = floor(instance.opened_ms, self.window_ms);
        if window < self.count_from_ms {
            return;
        }
        unique(&mut instance.spans);
        let counts = self.windows.entry(window).or_default();
        let max_edges = self.bounds.max_edges;
        let mut dropped = 0;
        derive(&instance.spans, |parent, child| {
            let key = (parent.clone(), child.clone());
            if let Some(n) = counts.get_mut(&key) {
                *n += 1;
            } else if counts.len() < max_edges {
                counts.insert(key, 1);
            } else {
                dropped += 1;
            }
        });
        self.stats.edges_dropped += dropped;
    }
}

/// Keeps one of each span sent more than once (same id, parent, kind and service), as Spark keeps
/// a trace's unique spans: a retried export counts once. Sorting, so a trace of many spans costs
/// `n log n`, not a scan per span.
fn unique(spans: &mut Vec<SpanRec>) {
    fn key(s: &SpanRec) -> (u64, u64, i32, &str) {
        (s.span_id, s.parent, s.kind, &s.service)
    }
    spans.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
    spans.dedup_by(|a, b| key(a) == key(b));
}

fn sorted(start_ms: i64, counts: Counts) -> WindowCounts {
    let mut links: Vec<_> = counts.into_iter().map(|((p, c), n)| (p, c, n)).collect();
    links.sort_unstable();
    WindowCounts { start_ms, links }
}

fn clip(name: &str) -> &str {
    if name.len() <= MAX_SERVICE_BYTES {
        return name;
    }
    let mut end = MAX_SERVICE_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// The links of one instance, as spark-dependencies' `SpansToDependencyLinks` derives them from a
/// trace (see the module documentation). `spans` are sorted by span id ([`unique`]), so a span id's
/// spans are found by binary search and everything is emitted in the same order every time (which
/// links a window over `max_links` keeps does not depend on the run). `n log n` whatever the
/// shape: a span id shared by many spans is looked at once, not once per span referring to it.
fn derive(spans: &[SpanRec], mut emit: impl FnMut(&Arc<str>, &Arc<str>)) {
    let group = |id: u64| {
        let start = spans.partition_point(|s| s.span_id < id);
        let end = start + spans[start..].partition_point(|s| s.span_id == id);
        &spans[start..end]
    };
    let mut referenced: Vec<u64> = spans.iter().flat_map(refs).collect();
    referenced.sort_unstable();
    referenced.dedup();
    // Span ids shared by several spans, with their server side (Zipkin): (id, server's index).
    let mut shared: Vec<(u64, Option<&Arc<str>>)> = Vec::new();
    let mut start = 0;
    while start < spans.len() {
        let id = spans[start].span_id;
        let run = group(id);
        if run.len() > 1 {
            // A client (or producer) and a server (or consumer) sharing the id: one call.
            let side = |kinds: [i32; 2]| run.iter().find(|s| kinds.contains(&s.kind));
            if let (Some(client), Some(server)) =
                (side([kind::CLIENT, kind::PRODUCER]), side([kind::SERVER, kind::CONSUMER]))
            {
                emit(&client.service, &server.service);
            }
            shared.push((id, run.iter().find(|p| p.kind == kind::SERVER).map(|p| &p.service)));
        }
        start += run.len();
    }
    let shared_server = |id: u64| shared.binary_search_by_key(&id, |(i, _)| *i).ok().map(|k| shared[k].1);
    for s in spans {
        if s.parent == 0 && s.links.is_none() {
            continue;
        }
        if shared_server(s.span_id).is_some() && s.kind != kind::CLIENT {
            continue;
        }
        for r in refs(s) {
            match shared_server(r) {
                Some(Some(server)) => emit(server, &s.service),
                Some(None) => {}
                None => {
                    if let Some(parent) = group(r).first() {
                        emit(&parent.service, &s.service);
                    }
                }
            }
        }
        if let Some(peer) = &s.peer
            && referenced.binary_search(&s.span_id).is_err()
        {
            emit(&s.service, peer);
        }
    }
}

fn refs(s: &SpanRec) -> impl Iterator<Item = u64> + '_ {
    (s.parent != 0).then_some(s.parent).into_iter().chain(s.links.iter().flat_map(|l| l.iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn bounds() -> Bounds {
        Bounds {
            window: 60 * S,
            max_trace_duration: 20 * S,
            idle: 5 * S,
            lateness: 2 * S,
            max_spans: 1_000_000,
            max_edges: 10_000,
        }
    }

    fn id8(n: u64) -> [u8; 8] {
        n.to_be_bytes()
    }

    fn trace(n: u64) -> [u8; 16] {
        let mut t = [0; 16];
        t[8..].copy_from_slice(&n.to_be_bytes());
        t
    }

    #[derive(Clone, Debug)]
    struct Sp {
        trace: u64,
        id: u64,
        parent: u64,
        links: Vec<u64>,
        kind: i32,
        service: String,
        peer: Option<String>,
    }

    fn sp(trace: u64, id: u64, parent: u64, kind: i32, service: &str) -> Sp {
        Sp { trace, id, parent, links: vec![], kind, service: service.into(), peer: None }
    }

    fn feed(t: &mut Tracker, ts: i64, spans: &[Sp]) {
        t.record(ts);
        for s in spans {
            let links: Vec<[u8; 8]> = s.links.iter().map(|&l| id8(l)).collect();
            t.span(&SpanFact {
                trace_id: trace(s.trace),
                span_id: id8(s.id),
                parent: (s.parent != 0).then(|| id8(s.parent)),
                links: &links,
                kind: s.kind,
                service: &s.service,
                peer_service: s.peer.as_deref(),
            });
        }
    }

    fn links(w: &WindowCounts) -> Vec<(String, String, u64)> {
        w.links.iter().map(|(p, c, n)| (p.to_string(), c.to_string(), *n)).collect()
    }

    fn l(p: &str, c: &str, n: u64) -> (String, String, u64) {
        (p.into(), c.into(), n)
    }

    #[test]
    fn a_call_graph_split_over_records_and_out_of_order_gives_each_link_once() {
        let mut t = Tracker::new(bounds(), 0);
        // Trace 1: frontend → (client) → api (server) → db leaf with peer.service; the child
        // arrives before its parent, in another record.
        let mut leaf = sp(1, 4, 3, kind::CLIENT, "api");
        leaf.peer = Some("postgres".into());
        feed(&mut t, 1_000, &[sp(1, 3, 2, kind::SERVER, "api"), leaf]);
        feed(&mut t, 1_500, &[sp(1, 1, 0, kind::SERVER, "frontend"), sp(1, 2, 1, kind::CLIENT, "frontend")]);
        // Trace 2: a missing parent adds nothing; an internal span adds a same-service link.
        feed(&mut t, 2_000, &[sp(2, 7, 99, kind::SERVER, "api"), sp(2, 8, 7, 1, "api")]);
        assert!(t.take_final().is_empty(), "the window is not over");
        t.advance(66_000);
        let w = t.take_final();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].start_ms, 0);
        assert_eq!(
            links(&w[0]),
            vec![l("api", "api", 2), l("api", "postgres", 1), l("frontend", "api", 1), l("frontend", "frontend", 1)]
        );
    }

    #[test]
    fn zipkin_shared_spans_count_the_client_server_pair_once() {
        let mut t = Tracker::new(bounds(), 0);
        // Client and server halves share span id 2; the server's child refers to the shared id.
        feed(
            &mut t,
            1_000,
            &[
                sp(1, 1, 0, kind::SERVER, "web"),
                sp(1, 2, 1, kind::CLIENT, "web"),
                sp(1, 2, 1, kind::SERVER, "orders"),
                sp(1, 3, 2, kind::CLIENT, "orders"),
            ],
        );
        let w = t.finish();
        // web→web (client under its server), web→orders (shared pair), orders→orders (child of
        // the shared id takes the server side); the shared server half adds nothing of its own.
        assert_eq!(links(&w[0]), vec![l("orders", "orders", 1), l("web", "orders", 1), l("web", "web", 1)]);
    }

    #[test]
    fn links_into_the_trace_count_and_a_retried_span_counts_once() {
        let mut t = Tracker::new(bounds(), 0);
        let mut consumer = sp(1, 5, 0, kind::CONSUMER, "worker");
        consumer.links = vec![2];
        feed(&mut t, 1_000, &[sp(1, 2, 0, kind::PRODUCER, "shop"), consumer.clone()]);
        feed(&mut t, 1_100, &[consumer]);
        assert_eq!(links(&t.finish()[0]), vec![l("shop", "worker", 1)]);
    }

    #[test]
    fn a_preview_gives_the_final_counts_without_moving_the_clock() {
        let mut t = Tracker::new(bounds(), 0);
        feed(&mut t, 1_000, &[sp(1, 1, 0, kind::SERVER, "a"), sp(1, 2, 1, kind::SERVER, "b")]);
        feed(&mut t, 2_000, &[sp(2, 1, 0, kind::SERVER, "a")]);
        assert!(t.preview(60_000).is_empty(), "not final before the window's end plus idle");
        let preview = t.preview(66_000);
        assert_eq!(preview.len(), 1);
        assert_eq!(links(&preview[0]), vec![l("a", "b", 1)]);
        assert!(t.preview(70_000).is_empty(), "handed out once");
        // The state did not move: trace 2 still joins a span arriving now.
        assert_eq!(t.clock(), Some(2_000));
        feed(&mut t, 3_000, &[sp(2, 2, 1, kind::SERVER, "c")]);
        t.advance(66_000);
        let final_windows = t.take_final();
        assert_eq!(links(&final_windows[0]), vec![l("a", "b", 1), l("a", "c", 1)]);
    }

    #[test]
    fn spans_further_apart_than_idle_are_two_instances() {
        let mut t = Tracker::new(bounds(), 0);
        feed(&mut t, 1_000, &[sp(1, 1, 0, kind::SERVER, "a")]);
        feed(&mut t, 7_000, &[sp(1, 2, 1, kind::SERVER, "b")]);
        assert!(t.finish().iter().all(|w| w.links.is_empty()));
        assert_eq!(t.stats().instances_closed, 2);
    }

    #[test]
    fn the_memory_bound_closes_the_oldest_instance_and_counts_it() {
        let mut t = Tracker::new(Bounds { max_spans: 2, ..bounds() }, 0);
        feed(&mut t, 1_000, &[sp(1, 1, 0, kind::SERVER, "a"), sp(2, 1, 0, kind::SERVER, "a")]);
        feed(&mut t, 1_001, &[sp(1, 2, 1, kind::SERVER, "b")]);
        assert_eq!(t.stats().evicted_for_memory, 1);
        assert_eq!(t.spans_held(), 2);
    }

    #[test]
    fn a_window_over_max_edges_drops_the_rest_and_counts_them() {
        let mut t = Tracker::new(Bounds { max_edges: 2, ..bounds() }, 0);
        let spans: Vec<Sp> = (0..4).map(|i| sp(1, 10 + i, 1, kind::SERVER, &format!("s{i}"))).collect();
        let mut all = vec![sp(1, 1, 0, kind::SERVER, "root")];
        all.extend(spans);
        feed(&mut t, 1_000, &all);
        let w = t.finish();
        assert_eq!(w[0].links.len(), 2);
        assert_eq!(t.stats().edges_dropped, 2);
    }

    #[test]
    fn long_service_names_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_SERVICE_BYTES);
        assert_eq!(clip(&long).len(), MAX_SERVICE_BYTES);
        let odd = format!("a{long}");
        assert_eq!(clip(&odd).len(), MAX_SERVICE_BYTES - 1);
    }

    /// A partition's records: (timestamp, spans), timestamps out of order by up to `lateness`.
    fn stream(seed: u64, records: usize, b: &Bounds) -> Vec<(i64, Vec<Sp>)> {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let services = ["a", "b", "c", "d", "e"];
        let lateness = Bounds::ms(b.lateness);
        let mut now = 1_700_000_000_000i64;
        let mut out = Vec::with_capacity(records);
        // Live traces: (trace, next span id, spans so far).
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut next_trace = 1;
        let mut hot_next = [1u64; 3];
        for _ in 0..records {
            now += rng.random_range(0..400);
            let ts = now - rng.random_range(0..lateness);
            let mut spans: Vec<Sp> = Vec::new();
            // Three traces that never pause (a span in most records): they outlive every slot, so
            // where reading starts decides how they are cut unless the rewind reaches back far
            // enough.
            for hot in 0..3u64 {
                if rng.random_bool(0.7) {
                    let (tr, next) = (1_000_000 + hot, hot_next[hot as usize]);
                    let parent = if next == 1 { 0 } else { rng.random_range(1..next) };
                    spans.push(sp(tr, next, parent, rng.random_range(0..6), services[rng.random_range(0..5)]));
                    hot_next[hot as usize] += 1;
                }
            }
            for _ in 0..rng.random_range(1..6) {
                if live.is_empty() || rng.random_bool(0.3) {
                    live.push((next_trace, 1));
                    next_trace += 1;
                }
                let k = rng.random_range(0..live.len());
                let (tr, next) = live[k];
                let parent = if next == 1 { 0 } else { rng.random_range(1..next + 3) };
                let mut s = sp(tr, next, parent, rng.random_range(0..6), services[rng.random_range(0..5)]);
                if rng.random_bool(0.1) {
                    s.peer = Some("db".into());
                }
                if rng.random_bool(0.05) && next > 1 {
                    s.links = vec![rng.random_range(1..next)];
                }
                if rng.random_bool(0.05) && next > 1 {
                    s.id = rng.random_range(1..next); // shared id
                }
                spans.push(s);
                live[k].1 += 1;
                // Some traces never pause (longer than a slot); most end soon.
                if rng.random_bool(0.08) && tr % 7 != 0 {
                    live.swap_remove(k);
                }
            }
            out.push((ts, spans));
        }
        out
    }

    fn run(records: &[(i64, Vec<Sp>)], b: Bounds, count_from: i64) -> BTreeMap<i64, Vec<(String, String, u64)>> {
        let mut t = Tracker::new(b, count_from);
        let mut out = BTreeMap::new();
        for (ts, spans) in records {
            feed(&mut t, *ts, spans);
            for w in t.take_final() {
                out.insert(w.start_ms, links(&w));
            }
        }
        let last = t.clock().unwrap_or(0);
        t.advance(last + Bounds::ms(b.window) * 3);
        for w in t.take_final() {
            out.insert(w.start_ms, links(&w));
        }
        out
    }

    /// The exactness argument in the module documentation, checked: re-reading from the rewind
    /// point of any committed record gives every window from its first counted one exactly as
    /// reading the partition from the start does.
    #[test]
    fn re_reading_from_the_rewind_point_recounts_every_window_exactly() {
        let b = Bounds {
            window: 30 * S,
            max_trace_duration: 10 * S,
            idle: 3 * S,
            lateness: 1 * S,
            max_spans: usize::MAX,
            max_edges: usize::MAX,
        };
        for seed in 0..12 {
            let records = stream(seed, 3_000, &b);
            let whole = run(&records, b, i64::MIN);
            assert!(whole.len() > 10, "the stream spans many windows");
            for cut in [300, 1_111, 2_000, 2_777] {
                let rewind = Rewind::from_committed(&b, records[cut - 1].0);
                let start = records.iter().position(|(ts, _)| *ts >= rewind.prime_from_ms).unwrap();
                assert!(start <= cut);
                let again = run(&records[start..], b, rewind.count_from_ms);
                let expected: BTreeMap<_, _> =
                    whole.iter().filter(|(w, _)| **w >= rewind.count_from_ms).map(|(k, v)| (*k, v.clone())).collect();
                assert_eq!(again, expected, "seed {seed}, committed record {cut}");
                // Every window that was not final at the committed record is among those recounted.
                let clock_at_cut = records[..cut].iter().map(|(ts, _)| *ts).max().unwrap();
                let window = Bounds::ms(b.window);
                for w in whole.keys() {
                    if w + window + Bounds::ms(b.idle) > clock_at_cut {
                        assert!(*w >= rewind.count_from_ms, "window {w} not final at the cut is recounted");
                    }
                }
            }
        }
    }
}
