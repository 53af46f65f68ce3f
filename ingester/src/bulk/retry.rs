//! `bulk::retry`: the policy — a batch's items → `_bulk` attempts until each item is durable or
//! terminally rejected.
//!
//! Called through [`BulkClient::write_all`] by the worker, once per flushed batch. Each answer is
//! classified by [`super::classify`]; this loop only acts on the class:
//!
//! - durable items are counted; terminal ones (document errors) are returned to be dead-lettered;
//! - transient answers and items are sent again after an exponential backoff with jitter, never
//!   giving up (holding the offsets is the backpressure);
//! - a 413 splits the request in halves (a single document too large is rejected);
//! - blocked answers and items are sent again with the same backoff, and while the store keeps
//!   refusing the ingester is marked stalled ([`Cause::StoreRefusing`]: `/health/ready` false),
//!   each such answer is counted in `spanline_ingester_bulk_refusals_total{level,status}` and an
//!   error naming what to check is logged once per interval per kind of refusal. The stall is
//!   released as soon as an answer carries no refusal, or when `write_all` returns or is dropped.

use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tokio_util::sync::CancellationToken;

use super::{
    BulkClient, Rejected,
    classify::{Answer, ItemClass, Level, MAX_REASON, MAX_TYPE, Refusal, clip_to, status_label, what_to_check},
};
use crate::{
    batch::Item,
    error::Error,
    health::{Cause, Stalled},
    metrics::{ClassLabels, KindLabels, RefusalLabels},
};

/// While the store refuses this batch: the stall that keeps the ingester unready, since when, and
/// how many answers refused it.
#[derive(Debug, Default)]
struct Held {
    stalled: Option<Stalled>,
    since: Option<Instant>,
    answers: u64,
}

impl Held {
    /// Records one refusing answer: counted always, logged once per interval per kind.
    fn hold(&mut self, client: &BulkClient, level: Level, refusal: &Refusal, items: usize) {
        let status = refusal.status;
        client
            .metrics
            .bulk_refusals
            .get_or_create(&RefusalLabels { level: level.as_str(), status: status_label(status) })
            .inc();
        if self.stalled.is_none() {
            self.stalled = Some(client.metrics.health.stall(Cause::StoreRefusing));
            self.since = Some(Instant::now());
        }
        self.answers += 1;
        // Every partition's worker meets the same refusal: one line per interval for all of them.
        // The error type is the store's word, clipped, and `Repeats` caps the kinds it remembers.
        let kind = format!("refused {} {status} {}", level.as_str(), refusal.error_type);
        if let Some(repeated) = client.repeats.check(&kind) {
            tracing::error!(
                level = level.as_str(),
                status,
                error_type = %refusal.error_type,
                reason = %refusal.reason,
                items,
                repeated,
                check = what_to_check(level, status, &refusal.error_type),
                "store refuses bulk writes; offsets held, retrying"
            );
        }
    }

    /// The store answered without refusing: release the stall.
    fn clear(&mut self) {
        if let Some(stalled) = self.stalled.take() {
            let held_for = self.since.take().map(|s| s.elapsed()).unwrap_or_default();
            tracing::warn!(?held_for, refused = self.answers, "store accepts bulk writes again");
            self.answers = 0;
            drop(stalled);
        }
    }
}

impl BulkClient {
    /// Writes `items` until each is durable or terminally rejected; returns the rejected ones.
    /// Returns [`Error::Aborted`] when `abort` fires first.
    pub async fn write_all(&self, items: Vec<Item>, abort: &CancellationToken) -> Result<Vec<Rejected>, Error> {
        let started = Instant::now();
        let mut rejected = Vec::new();
        // Requests still to send; a 413 replaces one by its two halves.
        let mut queue: Vec<Vec<Item>> = vec![items];
        let mut delays = self.backoff.build();
        // Dropped on every return, an abort included, so a cancelled batch never leaves the
        // ingester marked stalled.
        let mut held = Held::default();
        while let Some(pending) = queue.pop() {
            if pending.is_empty() {
                continue;
            }
            let body = self.bodies.body(&pending);
            let answer = tokio::select! {
                () = abort.cancelled() => return Err(Error::Aborted),
                answer = self.send(body.clone(), pending.len()) => answer,
            };
            self.bodies.recycle(body);
            let retry_items = match answer {
                Answer::Durable => {
                    held.clear();
                    self.record_durable(&pending, ItemClass::Created);
                    delays = self.backoff.build();
                    continue;
                }
                Answer::Items(results) => {
                    let mut retry = Vec::new();
                    let mut refused: Option<Refusal> = None;
                    let mut refused_items = 0;
                    for (item, answer) in pending.into_iter().zip(results) {
                        self.metrics.items.get_or_create(&ClassLabels { class: answer.class.as_str() }).inc();
                        match answer.class {
                            ItemClass::Created | ItemClass::Exists => {
                                self.metrics
                                    .documents_indexed
                                    .get_or_create(&KindLabels { kind: item.kind.as_str() })
                                    .inc();
                            }
                            ItemClass::Transient => retry.push(item),
                            ItemClass::Blocked => {
                                refused_items += 1;
                                refused.get_or_insert_with(|| {
                                    let (error_type, reason) =
                                        answer.error.map(|e| (e.kind, e.reason)).unwrap_or_default();
                                    Refusal {
                                        status: answer.status,
                                        error_type: clip_to(error_type, MAX_TYPE),
                                        reason: clip_to(reason, MAX_REASON),
                                    }
                                });
                                retry.push(item);
                            }
                            ItemClass::Terminal => {
                                let (error_type, reason) = answer.error.map(|e| (e.kind, e.reason)).unwrap_or_default();
                                rejected.push(Rejected { item, status: answer.status, error_type, reason });
                            }
                        }
                    }
                    match &refused {
                        Some(refusal) => held.hold(self, Level::Item, refusal, refused_items),
                        None => held.clear(),
                    }
                    if retry.is_empty() {
                        delays = self.backoff.build();
                        continue;
                    }
                    tracing::debug!(items = retry.len(), refused_items, "retrying bulk items");
                    retry
                }
                Answer::TooLarge if pending.len() > 1 => {
                    let half = pending.len() / 2;
                    let mut first = pending;
                    let second = first.split_off(half);
                    tracing::warn!(items = first.len() + second.len(), "bulk request too large (413), splitting");
                    queue.push(second);
                    queue.push(first);
                    continue;
                }
                Answer::TooLarge => {
                    let item = pending.into_iter().next().ok_or(Error::Aborted)?;
                    rejected.push(Rejected {
                        item,
                        status: 413,
                        error_type: "content_too_long".into(),
                        reason: "a single document is larger than the store's http.max_content_length".into(),
                    });
                    continue;
                }
                Answer::Blocked(refusal) => {
                    held.hold(self, Level::Request, &refusal, pending.len());
                    pending
                }
                // A busy or absent store neither refuses nor accepts: a stall already held stays.
                Answer::Transient(refusal) => {
                    // One line per interval per kind of failure (the status, or ours).
                    let kind = format!("transient {} {}", refusal.status, refusal.error_type);
                    if let Some(repeated) = self.repeats.check(&kind) {
                        tracing::warn!(
                            status = refusal.status,
                            error_type = %refusal.error_type,
                            reason = %refusal.reason,
                            items = pending.len(),
                            repeated,
                            "bulk request failed, retrying; offsets held"
                        );
                    }
                    pending
                }
            };
            self.metrics.retries.inc();
            let delay = delays.next().unwrap_or(Duration::from_secs(1));
            queue.push(retry_items);
            tokio::select! {
                () = abort.cancelled() => return Err(Error::Aborted),
                () = tokio::time::sleep(delay) => {}
            }
        }
        held.clear();
        self.metrics.bulk_latency.observe(started.elapsed().as_secs_f64());
        Ok(rejected)
    }

    fn record_durable(&self, items: &[Item], class: ItemClass) {
        self.metrics.items.get_or_create(&ClassLabels { class: class.as_str() }).inc_by(items.len() as u64);
        for item in items {
            self.metrics.documents_indexed.get_or_create(&KindLabels { kind: item.kind.as_str() }).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader, Read as _, Write as _},
        net::TcpListener,
        sync::mpsc,
    };

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::{
        bulk::{clients, encode_item},
        config,
        document::{DocKind, Document},
        metrics::Metrics,
    };

    /// A store on another thread that answers the n-th `_bulk` with `answers[n]` (status, body),
    /// each after `go` lets it, on a connection it then closes.
    fn fake_store(answers: Vec<(u16, &'static str)>, go: mpsc::Receiver<()>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for (status, body) in answers {
                let Ok((stream, _)) = listener.accept() else { return };
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut request = vec![0; length];
                let _ = reader.read_exact(&mut request);
                if go.recv().is_err() {
                    return;
                }
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        format!("http://{addr}")
    }

    fn item() -> Item {
        let doc = Document::new(DocKind::Span, "jaeger-span-2026-11-30", "a_b_c", b"{}", None, 0);
        Item { ndjson: encode_item(&doc), kind: DocKind::Span, end_micros: 0, origin: None, service: None }
    }

    /// A refusal stalls the ingester while the batch waits for the store, is counted by level and
    /// status, and is released as soon as the store accepts; nothing is rejected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusal_stalls_until_the_store_accepts_and_rejects_nothing() {
        let (go, wait) = mpsc::channel();
        let url = fake_store(
            vec![
                (403, r#"{"error":{"type":"security_exception","reason":"no permissions"},"status":403}"#),
                (
                    200,
                    r#"{"took":1,"errors":true,"items":[{"create":{"_index":"i","_id":"a_b_c","status":403,"error":{"type":"cluster_block_exception","reason":"index [i] blocked by: [FORBIDDEN/8/index write (api)];"}}}]}"#,
                ),
                (200, r#"{"took":1,"errors":false,"items":[{"create":{"_index":"i","_id":"a_b_c","status":201}}]}"#),
            ],
            wait,
        );
        let config = config::OpenSearch {
            url,
            min_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..config::OpenSearch::default()
        };
        let metrics = Metrics::register(&mut Registry::default());
        let health = metrics.health.clone();
        let client = BulkClient::new(clients(&config).expect("client"), &config, metrics.clone());
        let abort = CancellationToken::new();
        let task = tokio::spawn(async move { client.write_all(vec![item()], &abort).await });
        let refusals = |level: &'static str, status: &'static str| {
            metrics.bulk_refusals.get_or_create(&RefusalLabels { level, status }).get()
        };
        go.send(()).expect("first answer");
        while refusals("request", "403") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(health.held(Cause::StoreRefusing), 1, "stalled while the whole request is refused");
        go.send(()).expect("second answer");
        while refusals("item", "403") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(health.held(Cause::StoreRefusing), 1, "still stalled while items are refused");
        go.send(()).expect("third answer");
        let rejected = task.await.expect("join").expect("written");
        assert!(rejected.is_empty(), "a refusal is never the span's fault");
        assert_eq!(health.held(Cause::StoreRefusing), 0, "released once the store accepts");
        assert_eq!((refusals("request", "403"), refusals("item", "403")), (1, 1));
    }

    /// `clear` releases what `hold` took (the stall is not left to the end of `write_all`).
    #[test]
    fn held_releases_the_stall_when_cleared() {
        let config = config::OpenSearch::default();
        let metrics = Metrics::register(&mut Registry::default());
        let client = BulkClient::new(clients(&config).expect("client"), &config, metrics.clone());
        let mut held = Held::default();
        let refusal = Refusal { status: 404, error_type: String::new(), reason: "404 Not Found".into() };
        held.hold(&client, Level::Request, &refusal, 3);
        held.hold(&client, Level::Request, &refusal, 3);
        assert_eq!(metrics.health.held(Cause::StoreRefusing), 1, "one stall per held batch, however many answers");
        held.clear();
        assert_eq!(metrics.health.held(Cause::StoreRefusing), 0);
        assert_eq!(metrics.bulk_refusals.get_or_create(&RefusalLabels { level: "request", status: "404" }).get(), 2);
    }
}
