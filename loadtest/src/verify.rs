//! Checks a run in OpenSearch (or the dev store): the total span count, exact counts per sampled
//! trace, and end-to-end freshness (span end → searchable) of sampled traces.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::send::Sample;

/// A search store endpoint.
#[derive(Debug, Clone)]
pub struct Store {
    url: String,
    http: reqwest::Client,
    index: String,
}

impl Store {
    pub fn new(url: &str, index_prefix: &str) -> Self {
        let p = if index_prefix.is_empty() { String::new() } else { format!("{index_prefix}-") };
        Self { url: url.trim_end_matches('/').into(), http: reqwest::Client::new(), index: format!("{p}jaeger-span-*") }
    }

    /// Span documents matching `query` (all when `None`).
    pub async fn count(&self, query: Option<Value>) -> anyhow::Result<u64> {
        let body = query.map_or_else(|| json!({}), |q| json!({ "query": q }));
        let answer: Value = self
            .http
            .post(format!("{}/{}/_count", self.url, self.index))
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        answer["count"].as_u64().ok_or_else(|| anyhow::anyhow!("no count in {answer}"))
    }

    pub async fn trace_count(&self, trace_id: &str) -> anyhow::Result<u64> {
        self.count(Some(json!({ "term": { "traceID": trace_id } }))).await
    }

    /// Span documents per trace id, for many traces in one search (one scan of the store instead
    /// of one per trace). At most 10 000 documents: callers ask for bounded sets.
    pub async fn trace_counts(&self, trace_ids: &[&str]) -> anyhow::Result<HashMap<String, u64>> {
        let mut counts = HashMap::new();
        if trace_ids.is_empty() {
            return Ok(counts);
        }
        let answer: Value = self
            .http
            .post(format!("{}/{}/_search", self.url, self.index))
            .json(&json!({
                "size": 10_000,
                "_source": ["traceID"],
                "query": { "terms": { "traceID": trace_ids } },
            }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for hit in answer["hits"]["hits"].as_array().into_iter().flatten() {
            if let Some(id) = hit["_source"]["traceID"].as_str() {
                *counts.entry(id.to_owned()).or_default() += 1;
            }
        }
        Ok(counts)
    }
}

/// Watches sampled traces until each is searchable with all its spans; returns the freshness
/// histogram (milliseconds from the trace's last span end) and every sample, when `samples` closes
/// and the pending ones arrived (or `patience` passed).
pub async fn watch_freshness(
    store: Store,
    mut samples: mpsc::Receiver<Sample>,
    patience: Duration,
) -> (Histogram<u64>, Vec<Sample>, u64) {
    let mut freshness = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("constant bounds are valid");
    let mut pending: Vec<Sample> = Vec::new();
    let mut all = Vec::new();
    let mut closed = false;
    let mut closed_at = None;
    let unseen = loop {
        while let Ok(sample) = samples.try_recv() {
            all.push(sample.clone());
            pending.push(sample);
        }
        if !closed && samples.is_closed() && samples.is_empty() {
            closed = true;
            closed_at = Some(Instant::now());
        }
        // One search for every pending trace; a trace counts as searchable at the time the search
        // was sent, so a slow store does not inflate the figure.
        let asked = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let ids: Vec<&str> = pending.iter().take(500).map(|s| s.trace_id.as_str()).collect();
        if let Ok(counts) = store.trace_counts(&ids).await {
            pending.retain(|sample| {
                let arrived = counts.get(&sample.trace_id).is_some_and(|&n| n >= sample.spans);
                if arrived {
                    let _ = freshness.record(asked.saturating_sub(sample.end_unix_nano / 1_000_000).max(1));
                }
                !arrived
            });
        }
        if closed && (pending.is_empty() || closed_at.is_some_and(|t| t.elapsed() > patience)) {
            break pending.len() as u64;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (freshness, all, unseen)
}

/// The outcome of [`check`].
#[derive(Debug, Default)]
pub struct Verdict {
    pub expected: u64,
    pub found: u64,
    pub samples: u64,
    pub samples_exact: u64,
    pub samples_missing: u64,
    pub samples_duplicated: u64,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.found == self.expected && self.samples_exact == self.samples
    }
}

/// Waits until the store holds `baseline + acknowledged` span documents (or `timeout`), then checks
/// the count is exact and each sampled trace has exactly its spans.
pub async fn check(
    store: &Store,
    baseline: u64,
    acknowledged: u64,
    samples: &[Sample],
    timeout: Duration,
) -> anyhow::Result<Verdict> {
    let expected = baseline + acknowledged;
    let until = Instant::now() + timeout;
    let mut found = store.count(None).await?;
    while found < expected && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        found = store.count(None).await?;
    }
    // A duplicate would be a straggler: look once more after a refresh interval.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    found = store.count(None).await?;
    let mut verdict = Verdict { expected: acknowledged, found: found.saturating_sub(baseline), ..Verdict::default() };
    for chunk in samples.chunks(500) {
        let ids: Vec<&str> = chunk.iter().map(|s| s.trace_id.as_str()).collect();
        let counts = store.trace_counts(&ids).await?;
        for sample in chunk {
            verdict.samples += 1;
            match counts.get(&sample.trace_id).copied().unwrap_or(0).cmp(&sample.spans) {
                std::cmp::Ordering::Equal => verdict.samples_exact += 1,
                std::cmp::Ordering::Less => verdict.samples_missing += 1,
                std::cmp::Ordering::Greater => verdict.samples_duplicated += 1,
            }
        }
    }
    Ok(verdict)
}
