//! `replay`: re-indexes a window of a topic — the span topic, or the dead-letter topic after a fix —
//! with the live ingester's workers, then stops.
//!
//! Called by `spanline-ingester replay`. Steps: [`plan`] resolves each partition's `--from` / `--to`
//! bounds to offsets (timestamps through Kafka's offsets-for-times, checked against the record
//! found, since the test broker answers 0 for a timestamp after the newest record) and resumes from
//! the replay group's committed offset when one lies inside the window (the default group is
//! derived from the topic and the window, [`default_group`], so only a replay of the same window
//! resumes another's progress); then the partitions are
//! *assigned* (no group membership, so the live group is untouched) to one worker each, which ends
//! by itself at its end bound. Documents get the index of the span's own day and the same
//! deterministic ids as live ingestion, so overlapping a window already indexed creates nothing
//! new. Progress is committed to the replay group as the live ingester commits (only durable
//! offsets), so an interrupted replay started again with the same arguments resumes.

use std::{
    collections::BTreeMap,
    fmt,
    io::IsTerminal as _,
    str::FromStr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use prometheus_client::registry::Registry;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, Encoding},
    consume,
    error::Error,
    metrics::Metrics,
    pipeline::{self, Parts},
    worker::{self, RateLimiter, partition::Progress},
};

/// Where a window starts or ends in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Earliest,
    Latest,
    Offset(i64),
    /// Milliseconds since the epoch: the first record at or after it.
    Time(i64),
}

impl FromStr for Bound {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(Bound::Earliest),
            "latest" => Ok(Bound::Latest),
            _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().map(Bound::Offset).map_err(|e| format!("offset {s:?}: {e}"))
            }
            _ => DateTime::parse_from_rfc3339(s).map(|t| Bound::Time(t.timestamp_millis())).map_err(|_| {
                format!("{s:?} is not earliest, latest, an offset or an RFC 3339 time (2026-11-25T10:00:00Z)")
            }),
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Earliest => f.write_str("earliest"),
            Bound::Latest => f.write_str("latest"),
            Bound::Offset(o) => write!(f, "offset {o}"),
            Bound::Time(ms) => match DateTime::<Utc>::from_timestamp_millis(*ms) {
                Some(t) => write!(f, "{}", t.to_rfc3339()),
                None => write!(f, "{ms} ms"),
            },
        }
    }
}

/// `spanline-ingester replay` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Topic to replay. Default: `kafka.topic`, or `kafka.dead_letter_topic` with `--dead-letters`.
    #[arg(long)]
    pub topic: Option<String>,
    /// Re-drive the dead-letter topic: envelopes are unwrapped and their spans indexed.
    #[arg(long)]
    pub dead_letters: bool,
    /// Start of the window: `earliest`, `latest`, an offset, or an RFC 3339 time.
    #[arg(long, default_value = "earliest")]
    pub from: Bound,
    /// End of the window (exclusive): `earliest`, `latest` (the end when the replay starts), an
    /// offset, or an RFC 3339 time.
    #[arg(long, default_value = "latest")]
    pub to: Bound,
    /// Only these partitions (comma-separated). Default: all.
    #[arg(long, value_delimiter = ',')]
    pub partitions: Vec<i32>,
    /// At most this many spans per second, over all partitions.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Write to these OpenSearch nodes instead of `opensearch.url`.
    #[arg(long)]
    pub opensearch_url: Option<String>,
    /// Write under this index prefix instead of `opensearch.index_prefix`.
    #[arg(long)]
    pub index_prefix: Option<String>,
    /// Consumer group the replay commits its progress to (never the live group). Default
    /// `spanline-replay-<topic>-<16 hex digits>`, a hash of the topic, `--from`, `--to` and
    /// `--partitions`: the same arguments resume an interrupted run, a different window starts
    /// afresh. A group given here is shared by whatever window uses it: a replay resumes from its
    /// committed offset whenever that lies inside the new window.
    #[arg(long)]
    pub group: Option<String>,
    /// Ignore the replay group's committed progress and start at `--from`.
    #[arg(long)]
    pub restart: bool,
    /// Only count the records and spans the window holds, per partition.
    #[arg(long)]
    pub dry_run: bool,
    /// Rebuild the window's dependency links (docs/dependencies.md) without indexing its spans
    /// again: every window that is complete inside the replayed range is counted from scratch and
    /// its documents replaced, as Jaeger's Spark job rebuilds a day.
    #[arg(long)]
    pub dependencies_only: bool,
}

impl ReplayArgs {
    /// A replay of the window [`from`, `to`) of the span topic with every other option at its
    /// default (all partitions, no rate limit, the configured store, the window's own group).
    pub fn window(from: Bound, to: Bound) -> Self {
        Self {
            topic: None,
            dead_letters: false,
            from,
            to,
            partitions: vec![],
            rate: None,
            opensearch_url: None,
            index_prefix: None,
            group: None,
            restart: false,
            dry_run: false,
            dependencies_only: false,
        }
    }
}

/// One partition's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub partition: i32,
    /// First offset to index.
    pub start: i64,
    /// First offset not to index.
    pub end: i64,
    /// `start` comes from the replay group's committed progress.
    pub resumed: bool,
}

impl Window {
    pub fn records(&self) -> u64 {
        u64::try_from(self.end - self.start).unwrap_or(0)
    }
}

/// What a replay did (or, with `--dry-run`, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Per partition: (records, spans).
    pub partitions: BTreeMap<i32, (u64, u64)>,
    pub records: u64,
    pub spans: u64,
    /// Span documents durable (created, or already there).
    pub indexed: u64,
    pub dead_lettered: u64,
    pub elapsed: Duration,
    /// Stopped by a signal before the end: run again to resume.
    pub interrupted: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (partition, (records, spans)) in &self.partitions {
            writeln!(f, "partition {partition:>4}: {records:>10} records {spans:>12} spans")?;
        }
        write!(
            f,
            "total: {} records, {} spans, {} indexed, {} dead-lettered in {:.1?}{}",
            self.records,
            self.spans,
            self.indexed,
            self.dead_lettered,
            self.elapsed,
            if self.interrupted { " (interrupted: run again to resume)" } else { "" }
        )
    }
}

/// The configuration the replay runs with: the live one, pointed at the replayed topic, the replay
/// group and the chosen target.
pub fn replay_config(config: &Config, args: &ReplayArgs) -> Config {
    let mut c = config.clone();
    if args.dead_letters {
        c.kafka.topic = args.topic.clone().unwrap_or_else(|| config.kafka.dead_letter.topic.clone());
        c.kafka.encoding = Encoding::DeadLetter;
    } else if let Some(topic) = &args.topic {
        c.kafka.topic.clone_from(topic);
    }
    c.kafka.group_id = args.group.clone().unwrap_or_else(|| default_group(&c.kafka.topic, args));
    if let Some(url) = &args.opensearch_url {
        c.opensearch.url.clone_from(url);
    }
    if let Some(prefix) = &args.index_prefix {
        c.opensearch.index_prefix.clone_from(prefix);
    }
    if args.dependencies_only {
        c.dependencies.enabled = true;
        c.dependencies.only = true;
    }
    c
}

/// The replay group of a window when `--group` is not given: `spanline-replay-<topic>-<hash>`, the
/// hash (64-bit FNV-1a, hex) over the topic, the bounds as given and the sorted partitions. Keying
/// progress to the window means a replay never starts part way into a window because another
/// window's replay committed there, while running the same command again resumes it. `--to latest`
/// is part of the key as written, so an interrupted "everything up to now" resumes and then reads
/// what arrived since.
pub fn default_group(topic: &str, args: &ReplayArgs) -> String {
    let mut partitions = args.partitions.clone();
    partitions.sort_unstable();
    partitions.dedup();
    let partitions: Vec<String> = partitions.iter().map(i32::to_string).collect();
    let (from, to) = (key(args.from), key(args.to));
    let hash = spanline_common::ids::fnv64a(&[
        topic.as_bytes(),
        b"\n",
        from.as_bytes(),
        b"\n",
        to.as_bytes(),
        b"\n",
        partitions.join(",").as_bytes(),
        if args.dependencies_only { &b"\ndependencies"[..] } else { b"" },
    ]);
    format!("spanline-replay-{topic}-{hash:016x}")
}

/// A bound as it enters the group's key: its kind and value, independent of how it was written.
fn key(bound: Bound) -> String {
    match bound {
        Bound::Earliest => "earliest".into(),
        Bound::Latest => "latest".into(),
        Bound::Offset(o) => format!("offset:{o}"),
        Bound::Time(ms) => format!("time:{ms}"),
    }
}

/// A consumer with no group duties (manual assignment), for planning and counting.
fn scratch(config: &Config, group: &str) -> Result<BaseConsumer, Error> {
    scratch_config(config, group)?.create().map_err(spanline_common::kafka::without_value).map_err(Error::Kafka)
}

/// The settings of [`scratch`]: the shared connection (TLS, SASL, overrides), and never a commit.
fn scratch_config(config: &Config, group: &str) -> Result<ClientConfig, Error> {
    let client = config.kafka.client();
    let mut cfg = client.base("spanline-replay").map_err(Error::Setup)?;
    cfg.set("group.id", group).set("enable.auto.commit", "false").set("enable.partition.eof", "true");
    client.apply_overrides(&mut cfg);
    // This consumer only reads positions and counts records: it must never commit, whatever the
    // shared override map says (it would move the replay group's progress).
    cfg.set("enable.auto.commit", "false");
    Ok(cfg)
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves every partition's window. Blocking (Kafka admin calls).
/// `config` is the replay's ([`replay_config`]): its group is the one progress is read from.
pub fn plan(config: &Config, args: &ReplayArgs) -> Result<Vec<Window>, Error> {
    let topic = &config.kafka.topic;
    let consumer = scratch(config, &config.kafka.group_id)?;
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let mut partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions.sort_unstable();
    if partitions.is_empty() {
        return Err(Error::Setup(format!("topic {topic:?} has no partitions (does it exist?)")));
    }
    if !args.partitions.is_empty() {
        if let Some(missing) = args.partitions.iter().find(|p| !partitions.contains(p)) {
            return Err(Error::Setup(format!("topic {topic:?} has no partition {missing}")));
        }
        partitions.retain(|p| args.partitions.contains(p));
    }
    let mut committed = TopicPartitionList::new();
    for &p in &partitions {
        committed.add_partition(topic, p);
    }
    let committed = if args.restart { None } else { consumer.committed_offsets(committed, TIMEOUT).ok() };
    let mut windows = Vec::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
        let start = resolve(&consumer, topic, partition, args.from, low, high)?;
        let end = resolve(&consumer, topic, partition, args.to, low, high)?.max(start);
        let done = committed
            .as_ref()
            .and_then(|c| c.find_partition(topic, partition))
            .and_then(|e| e.offset().to_raw())
            .filter(|&c| c > start && c <= end);
        windows.push(Window { partition, start: done.unwrap_or(start), end, resumed: done.is_some() });
    }
    Ok(windows)
}

fn resolve(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    bound: Bound,
    low: i64,
    high: i64,
) -> Result<i64, Error> {
    Ok(match bound {
        Bound::Earliest => low,
        Bound::Latest => high,
        Bound::Offset(o) => o.clamp(low, high),
        Bound::Time(ms) => {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(ms))?;
            let found = consumer.offsets_for_times(tpl, TIMEOUT)?;
            let offset = found.find_partition(topic, partition).and_then(|e| e.offset().to_raw()).unwrap_or(-1);
            if offset < 0 || offset >= high {
                high
            } else if timestamp_at(consumer, topic, partition, offset)?.is_some_and(|t| t >= ms) {
                offset.max(low)
            } else {
                // A broker answering with a record older than the time (the test broker answers 0
                // for a time after the newest record): the window starts at the partition's end.
                high
            }
        }
    })
}

/// The timestamp of the record at `offset`, read with a temporary assignment.
fn timestamp_at(consumer: &BaseConsumer, topic: &str, partition: i32, offset: i64) -> Result<Option<i64>, Error> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + TIMEOUT;
    let mut found = None;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.partition() == partition && m.offset() >= offset => {
                found = m.timestamp().to_millis();
                break;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    consumer.unassign()?;
    Ok(found)
}

/// Reads each window and counts its records and spans (`--dry-run`). Blocking.
pub fn count(config: &Config, windows: &[Window]) -> Result<Summary, Error> {
    let started = Instant::now();
    let consumer = scratch(config, &config.kafka.group_id)?;
    let mut summary = Summary::default();
    for w in windows {
        let mut spans = 0;
        let mut records = 0;
        if w.start < w.end {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&config.kafka.topic, w.partition, Offset::Offset(w.start))?;
            consumer.assign(&tpl)?;
            let mut idle = Instant::now();
            while idle.elapsed() < TIMEOUT {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) if m.offset() < w.end => {
                        idle = Instant::now();
                        records += 1;
                        let value = Bytes::copy_from_slice(m.payload().unwrap_or_default());
                        if let Ok((request, _)) = worker::decode(config.kafka.encoding, &value) {
                            spans += request
                                .resource_spans
                                .iter()
                                .flat_map(|r| &r.scope_spans)
                                .map(|s| s.spans.len() as u64)
                                .sum::<u64>();
                        }
                        if m.offset() + 1 >= w.end {
                            break;
                        }
                    }
                    Some(Ok(_) | Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                    _ => {}
                }
            }
        }
        summary.partitions.insert(w.partition, (records, spans));
        summary.records += records;
        summary.spans += spans;
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Runs a replay until every window is indexed, or `shutdown` (then the progress is committed and a
/// second run resumes).
pub async fn run(config: Config, args: ReplayArgs, shutdown: CancellationToken) -> Result<Summary, Error> {
    let live = config.clone();
    let config = replay_config(&config, &args);
    if config.kafka.group_id == live.kafka.group_id {
        return Err(Error::Setup(format!(
            "--group {:?} is the live ingesters' group; a replay needs its own",
            config.kafka.group_id
        )));
    }
    tracing::info!(group = %config.kafka.group_id, "replay progress is committed to this group");
    // The overrides (target URL, index prefix) obey the same rules as the configuration file.
    let mut check = config.clone();
    check.kafka.topic.clone_from(&live.kafka.topic);
    check.kafka.group_id.clone_from(&live.kafka.group_id);
    spanline_common::config::Validate::validate(&check)
        .map_err(|e| Error::Setup(format!("invalid replay option: {e}")))?;
    let windows = {
        let (config, args) = (config.clone(), args.clone());
        tokio::task::spawn_blocking(move || plan(&config, &args))
            .await
            .map_err(|e| Error::Setup(format!("planning task failed: {e}")))??
    };
    for w in &windows {
        tracing::info!(
            topic = %config.kafka.topic, partition = w.partition, start = w.start, end = w.end,
            records = w.records(), resumed = w.resumed, "replay window"
        );
    }
    if args.dry_run {
        return tokio::task::spawn_blocking(move || count(&config, &windows))
            .await
            .map_err(|e| Error::Setup(format!("counting task failed: {e}")))?;
    }
    let started = Instant::now();
    let metrics = Metrics::register(&mut Registry::default());
    let mut client = pipeline::consumer_config(&config)?;
    client.set("enable.partition.eof", "true");
    let Parts { consumer, mut failed, nodes, names } =
        pipeline::build(&config, metrics.clone(), client, args.rate.map(RateLimiter::new))?;
    pipeline::prepare_store(&nodes, &config, &names, &metrics, &shutdown).await?;
    let stop = CancellationToken::new();
    let poller = consume::spawn_poller(consumer.clone(), stop.clone())?;

    let mut tpl = TopicPartitionList::new();
    for w in windows.iter().filter(|w| w.start < w.end) {
        tpl.add_partition_offset(&config.kafka.topic, w.partition, Offset::Offset(w.start))?;
    }
    let ends: BTreeMap<i32, i64> = windows.iter().map(|w| (w.partition, w.end)).collect();
    consumer.context().start_workers(&tpl, |p| ends.get(&p).copied());
    consumer.assign(&tpl)?;

    let bars = Bars::new(&windows);
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let mut last_log = Instant::now();
    let outcome = loop {
        tokio::select! {
            biased;
            Some(error) = failed.recv() => break Err(error),
            () = shutdown.cancelled() => break Ok(true),
            _ = ticker.tick() => {
                let progress: BTreeMap<i32, Progress> = consumer.context().progress().into_iter().collect();
                bars.update(&progress, &windows);
                if !bars.visible && last_log.elapsed() >= Duration::from_secs(5) {
                    last_log = Instant::now();
                    let (done, total) = bars.totals(&progress, &windows);
                    tracing::info!(records_done = done, records = total, "replay progress");
                }
                // Only a drained worker says it ended; a failed one is reported on `failed`.
                if progress.values().all(|p| p.ended) {
                    break Ok(false);
                }
            }
        }
    };
    pipeline::close(consumer.clone(), Some((poller, stop)), config.shutdown_grace).await;
    let progress: BTreeMap<i32, Progress> = consumer.context().progress().into_iter().collect();
    drop(consumer);
    bars.finish();
    let interrupted = outcome?;

    let mut summary = Summary { interrupted, elapsed: started.elapsed(), ..Summary::default() };
    for w in &windows {
        let p = progress.get(&w.partition).copied().unwrap_or_default();
        let records = done(&progress, w);
        summary.partitions.insert(w.partition, (records, p.spans));
        summary.records += records;
        summary.spans += p.spans;
        summary.indexed += p.indexed;
        summary.dead_lettered += p.dead_lettered;
    }
    Ok(summary)
}

/// A progress bar per partition and one overall, on a terminal.
struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    partitions: BTreeMap<i32, ProgressBar>,
    visible: bool,
}

impl Bars {
    fn new(windows: &[Window]) -> Self {
        let visible = std::io::stderr().is_terminal();
        let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let multi = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} records  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let total: u64 = windows.iter().map(Window::records).sum();
        let overall = multi.add(ProgressBar::new(total).with_style(style.clone()).with_prefix("all partitions"));
        let partitions = windows
            .iter()
            .map(|w| {
                let bar = multi.add(
                    ProgressBar::new(w.records())
                        .with_style(style.clone())
                        .with_prefix(format!("partition {}", w.partition)),
                );
                (w.partition, bar)
            })
            .collect();
        Self { multi, overall, partitions, visible }
    }

    /// (records durable, records in all windows).
    fn totals(&self, progress: &BTreeMap<i32, Progress>, windows: &[Window]) -> (u64, u64) {
        let done = windows.iter().map(|w| done(progress, w)).sum();
        (done, windows.iter().map(Window::records).sum())
    }

    fn update(&self, progress: &BTreeMap<i32, Progress>, windows: &[Window]) {
        for w in windows {
            if let Some(bar) = self.partitions.get(&w.partition) {
                bar.set_position(done(progress, w));
            }
        }
        self.overall.set_position(self.totals(progress, windows).0);
    }

    fn finish(&self) {
        for bar in self.partitions.values() {
            bar.abandon();
        }
        self.overall.abandon();
        let _ = self.multi.clear();
    }
}

/// Records of `w` durable, from its partition's progress.
fn done(progress: &BTreeMap<i32, Progress>, w: &Window) -> u64 {
    progress
        .get(&w.partition)
        .and_then(|p| p.durable)
        .map_or(0, |durable| u64::try_from(durable + 1 - w.start).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_consumers_connect_like_the_ingester_and_the_counting_one_never_commits() {
        let mut config = Config::default();
        config.kafka.tls.enabled = true;
        config.kafka.librdkafka.insert("enable.auto.commit".into(), "true".into());
        let scratch = scratch_config(&config, "g").expect("config");
        assert_eq!(scratch.get("security.protocol"), Some("SSL"));
        assert_eq!(scratch.get("enable.auto.commit"), Some("false"), "whatever the map says");
        let live = pipeline::consumer_config(&config).expect("config");
        assert_eq!(live.get("security.protocol"), Some("SSL"));
    }

    #[test]
    fn bounds_parse() {
        assert_eq!("earliest".parse::<Bound>(), Ok(Bound::Earliest));
        assert_eq!("latest".parse::<Bound>(), Ok(Bound::Latest));
        assert_eq!("1234".parse::<Bound>(), Ok(Bound::Offset(1234)));
        assert_eq!("1970-01-01T00:00:01Z".parse::<Bound>(), Ok(Bound::Time(1000)));
        assert!("yesterday".parse::<Bound>().expect_err("rejected").contains("RFC 3339"));
    }

    #[test]
    fn the_dead_letter_replay_reads_envelopes_and_commits_to_its_own_group() {
        let config = Config::default();
        let args = ReplayArgs {
            dead_letters: true,
            opensearch_url: Some("http://other:9200".into()),
            index_prefix: Some("backfill".into()),
            group: Some("spanline-replay".into()),
            ..ReplayArgs::window(Bound::Earliest, Bound::Latest)
        };
        let c = replay_config(&config, &args);
        assert_eq!(c.kafka.topic, "otlp_spans_dlq");
        assert_eq!(c.kafka.encoding, Encoding::DeadLetter);
        assert_eq!(c.kafka.group_id, "spanline-replay");
        assert_eq!(c.opensearch.url, "http://other:9200");
        assert_eq!(c.opensearch.index_prefix, "backfill");
    }

    #[test]
    fn the_default_group_is_keyed_by_the_topic_and_the_window() {
        let args = |from: &str, to: &str, partitions: Vec<i32>| ReplayArgs {
            partitions,
            ..ReplayArgs::window(from.parse().expect("bound"), to.parse().expect("bound"))
        };
        let group = |a: &ReplayArgs| replay_config(&Config::default(), a).kafka.group_id;
        let base = group(&args("earliest", "latest", vec![]));
        assert!(
            base.starts_with("spanline-replay-otlp_spans-") && base.len() == "spanline-replay-otlp_spans-".len() + 16
        );
        assert_eq!(base, group(&args("earliest", "latest", vec![])), "the same arguments resume");
        assert_eq!(
            group(&args("2026-11-25T10:00:00Z", "latest", vec![2, 0])),
            group(&args("2026-11-25T11:00:00+01:00", "latest", vec![0, 2, 2])),
            "the same window written differently"
        );
        let others = [
            group(&args("2026-11-25T10:00:00Z", "latest", vec![])),
            group(&args("earliest", "2026-11-25T10:00:00Z", vec![])),
            group(&args("earliest", "latest", vec![1])),
            group(&args("0", "latest", vec![])),
        ];
        for other in &others {
            assert_ne!(&base, other, "another window, another group");
        }
        let mut dead = args("earliest", "latest", vec![]);
        dead.dead_letters = true;
        assert!(group(&dead).starts_with("spanline-replay-otlp_spans_dlq-"));
        let mut named = args("earliest", "latest", vec![]);
        named.group = Some("mine".into());
        assert_eq!(group(&named), "mine");
    }
}
