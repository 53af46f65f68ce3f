//! `bulk`: a batch's items → `_bulk` requests, until every item is durable or terminally rejected.
//!
//! Called by the consume loop once per flushed batch. Guarantees (REFERENCE.md §5): items come back
//! in request order and are classified one by one — created, or already there (409 on our own
//! deterministic id under `create`), is durable; 429 and 5xx are retried alone with exponential
//! backoff and jitter, without giving up; anything else is terminal and returned with its reason.
//! A whole-request 413 splits the request; 429, 5xx, 401/403, timeouts and connection failures retry
//! the whole request. Only `abort` (shutdown's deadline) stops the retrying, and then nothing is
//! reported durable.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::{Bytes, BytesMut};
use opensearch::{
    OpenSearch,
    cert::{Certificate, CertificateValidation},
    http::{
        Method, StatusCode,
        headers::{CONTENT_TYPE, HeaderMap, HeaderValue},
        transport::{SingleNodeConnectionPool, TransportBuilder},
    },
};
use serde::Deserialize;
use spanline_common::{clip::clip, repeats::Repeats};
use tokio_util::sync::CancellationToken;

use crate::{
    batch::Item,
    config,
    document::Document,
    error::Error,
    metrics::{ClassLabels, KindLabels, Metrics},
};

/// The NDJSON of one `create` item.
pub fn encode_item(doc: &Document) -> Bytes {
    let mut out = BytesMut::with_capacity(doc.source.len() + doc.index.len() + doc.id.len() + 40);
    // Index names (a prefix checked by `Config::validate`, a fixed word and a date) and ids (hex and
    // `_`) never need JSON escaping, so they are written as they are.
    out.extend_from_slice(b"{\"create\":{\"_index\":\"");
    out.extend_from_slice(doc.index.as_bytes());
    out.extend_from_slice(b"\",\"_id\":\"");
    out.extend_from_slice(doc.id.as_bytes());
    out.extend_from_slice(b"\"}}\n");
    out.extend_from_slice(&doc.source);
    out.extend_from_slice(b"\n");
    out.freeze()
}

/// What to do with one bulk item's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemClass {
    /// Written now.
    Created,
    /// 409 on our own id under `create`: written before (a retry or a replay).
    Exists,
    /// Retry later (429, 5xx).
    Transient,
    /// Will never succeed as is (mapping errors, 400, 404, ...).
    Terminal,
}

impl ItemClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemClass::Created => "created",
            ItemClass::Exists => "exists",
            ItemClass::Transient => "transient",
            ItemClass::Terminal => "terminal",
        }
    }
}

/// Classifies one item by its status.
pub fn classify(status: u16) -> ItemClass {
    match status {
        200 | 201 => ItemClass::Created,
        409 => ItemClass::Exists,
        429 | 500..=599 => ItemClass::Transient,
        _ => ItemClass::Terminal,
    }
}

#[derive(Debug, Deserialize)]
struct BulkResponse {
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

/// Only the fields needed to classify: a response without errors is not parsed further.
#[derive(Debug, Deserialize)]
struct BulkHead {
    errors: bool,
}

#[derive(Debug, Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Debug, Deserialize)]
pub struct ItemError {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub reason: String,
}

/// Each item's status and error, in request order.
pub type ItemResults = Vec<(u16, Option<ItemError>)>;

/// The per-item statuses of a `_bulk` answer, in request order; `None` when every item succeeded.
pub fn parse_response(body: &[u8], expected: usize) -> Result<Option<ItemResults>, String> {
    let head: BulkHead = serde_json::from_slice(body).map_err(|e| clip(format!("unreadable _bulk answer: {e}")))?;
    if !head.errors {
        return Ok(None);
    }
    let full: BulkResponse = serde_json::from_slice(body).map_err(|e| clip(format!("unreadable _bulk answer: {e}")))?;
    debug_assert!(full.errors);
    if full.items.len() != expected {
        return Err(format!("_bulk answered {} items for {expected} sent", full.items.len()));
    }
    Ok(Some(
        full.items
            .into_iter()
            .map(|mut item| item.drain().next().map_or((500, None), |(_, i)| (i.status, i.error)))
            .collect(),
    ))
}

/// The largest answer read for a request other than `_bulk` (cluster info, a template refusal).
pub const SMALL_ANSWER: u64 = 1 << 20;

/// The largest `_bulk` answer read for `count` items: each item's result with a long error reason,
/// and room for a whole-request error.
pub fn answer_cap(count: usize) -> u64 {
    (1 << 20) + 16 * 1024 * count as u64
}

/// An item that will never be indexed, with why.
#[derive(Debug)]
pub struct Rejected {
    pub item: Item,
    pub status: u16,
    pub error_type: String,
    pub reason: String,
}

/// Writes batches to OpenSearch.
#[derive(Clone)]
pub struct BulkClient {
    nodes: Arc<[OpenSearch]>,
    next: Arc<AtomicUsize>,
    metrics: Metrics,
    backoff: ExponentialBuilder,
    timeout: Duration,
    /// Whole-request failures repeat on every retry while the store is down: logged once per
    /// interval with a count, not once per retry and partition.
    repeats: Arc<Repeats>,
}

impl std::fmt::Debug for BulkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkClient").finish_non_exhaustive()
    }
}

/// One client per configured node. Callers take them in turn ([`BulkClient`] per request, start-up
/// per attempt), so a request that fails on one node is retried on the next.
pub fn clients(config: &config::OpenSearch) -> Result<Vec<OpenSearch>, Error> {
    let clients: Vec<OpenSearch> = config.urls().map(|url| client(config, url)).collect::<Result<_, _>>()?;
    if clients.is_empty() {
        return Err(Error::Setup("opensearch.url names no node".into()));
    }
    Ok(clients)
}

fn client(config: &config::OpenSearch, url: &str) -> Result<OpenSearch, Error> {
    let url = url.parse().map_err(|e| Error::Setup(format!("opensearch.url {url:?}: {e}")))?;
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url)).timeout(config.request_timeout);
    if config.tls_insecure {
        builder = builder.cert_validation(CertificateValidation::None);
    } else if !config.ca_file.is_empty() {
        let pem = std::fs::read(&config.ca_file)
            .map_err(|e| Error::Setup(format!("opensearch.ca_file {:?}: {e}", config.ca_file)))?;
        let ca = Certificate::from_pem(&pem)
            .map_err(|e| Error::Setup(format!("opensearch.ca_file {:?}: {e}", config.ca_file)))?;
        builder = builder.cert_validation(CertificateValidation::Full(ca));
    }
    if !config.username.is_empty() {
        builder = builder.auth(opensearch::auth::Credentials::Basic(config.username.clone(), config.password.clone()));
    }
    let transport = builder.build().map_err(|e| Error::Setup(format!("cannot build opensearch client: {e}")))?;
    Ok(OpenSearch::new(transport))
}

/// What one send attempt found.
enum Attempt {
    /// Per-item results (HTTP 200).
    Items(Option<ItemResults>),
    /// The whole request failed in a way worth retrying.
    Retry(String),
    /// 413: the body is too large for the server.
    TooLarge,
    /// The whole request was refused for good (a 400 on our own NDJSON is a bug, not a state).
    Refused(u16, String),
}

impl BulkClient {
    pub fn new(nodes: Vec<OpenSearch>, config: &config::OpenSearch, metrics: Metrics) -> Self {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.min_backoff)
            .with_max_delay(config.max_backoff)
            .with_jitter()
            .without_max_times();
        Self {
            nodes: nodes.into(),
            next: Arc::new(AtomicUsize::new(0)),
            metrics,
            backoff,
            timeout: config.request_timeout,
            repeats: Arc::new(Repeats::default()),
        }
    }

    async fn send(&self, body: Bytes, count: usize) -> Attempt {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        let node = &self.nodes[self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len()];
        let response =
            match node.send(Method::Post, "/_bulk", headers, None::<&()>, Some(body), Some(self.timeout)).await {
                Ok(r) => r,
                Err(e) => return Attempt::Retry(format!("request failed: {e}")),
            };
        let status = response.status_code();
        // The store's answer is hostile input too: one bigger than any answer for `count` items
        // could be is not read (the client exposes no stream, so only a declared length is checked).
        let cap = answer_cap(count);
        if let Some(len) = response.content_length().filter(|&len| len > cap) {
            return Attempt::Retry(format!(
                "{status}: answer of {len} bytes, over the {cap} bytes {count} items can need"
            ));
        }
        let text = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Attempt::Retry(format!("reading the answer failed: {e}")),
        };
        match status {
            StatusCode::OK => match parse_response(&text, count) {
                Ok(items) => Attempt::Items(items),
                Err(e) => Attempt::Retry(e),
            },
            StatusCode::PAYLOAD_TOO_LARGE => Attempt::TooLarge,
            s if s == StatusCode::TOO_MANY_REQUESTS
                || s.is_server_error()
                || s == StatusCode::UNAUTHORIZED
                || s == StatusCode::FORBIDDEN
                || s == StatusCode::REQUEST_TIMEOUT =>
            {
                Attempt::Retry(format!("{s}: {}", String::from_utf8_lossy(&text[..text.len().min(512)])))
            }
            s => Attempt::Refused(s.as_u16(), String::from_utf8_lossy(&text[..text.len().min(1024)]).into_owned()),
        }
    }

    /// Writes `items` until each is durable or terminally rejected; returns the rejected ones.
    /// Returns [`Error::Aborted`] when `abort` fires first.
    pub async fn write_all(&self, items: Vec<Item>, abort: &CancellationToken) -> Result<Vec<Rejected>, Error> {
        let started = Instant::now();
        let mut rejected = Vec::new();
        // Requests still to send; a 413 replaces one by its two halves.
        let mut queue: Vec<Vec<Item>> = vec![items];
        let mut delays = self.backoff.build();
        while let Some(pending) = queue.pop() {
            if pending.is_empty() {
                continue;
            }
            let mut body = BytesMut::with_capacity(pending.iter().map(|i| i.ndjson.len()).sum());
            pending.iter().for_each(|i| body.extend_from_slice(&i.ndjson));
            let attempt = tokio::select! {
                () = abort.cancelled() => return Err(Error::Aborted),
                attempt = self.send(body.freeze(), pending.len()) => attempt,
            };
            let retry_items = match attempt {
                Attempt::Items(None) => {
                    self.record_durable(&pending, ItemClass::Created);
                    delays = self.backoff.build();
                    continue;
                }
                Attempt::Items(Some(results)) => {
                    let mut retry = Vec::new();
                    for (item, (status, error)) in pending.into_iter().zip(results) {
                        let class = classify(status);
                        self.metrics.items.get_or_create(&ClassLabels { class: class.as_str() }).inc();
                        match class {
                            ItemClass::Created | ItemClass::Exists => {
                                self.metrics
                                    .documents_indexed
                                    .get_or_create(&KindLabels { kind: item.kind.as_str() })
                                    .inc();
                            }
                            ItemClass::Transient => retry.push(item),
                            ItemClass::Terminal => {
                                let (error_type, reason) = error.map(|e| (e.kind, e.reason)).unwrap_or_default();
                                rejected.push(Rejected { item, status, error_type, reason });
                            }
                        }
                    }
                    if retry.is_empty() {
                        delays = self.backoff.build();
                        continue;
                    }
                    tracing::debug!(items = retry.len(), "retrying transient bulk items");
                    retry
                }
                Attempt::TooLarge if pending.len() > 1 => {
                    let half = pending.len() / 2;
                    let mut first = pending;
                    let second = first.split_off(half);
                    tracing::warn!(items = first.len() + second.len(), "bulk request too large (413), splitting");
                    queue.push(second);
                    queue.push(first);
                    continue;
                }
                Attempt::TooLarge => {
                    let item = pending.into_iter().next().ok_or(Error::Aborted)?;
                    rejected.push(Rejected {
                        item,
                        status: 413,
                        error_type: "content_too_long".into(),
                        reason: "a single document is larger than the store's http.max_content_length".into(),
                    });
                    continue;
                }
                Attempt::Refused(status, text) => {
                    tracing::error!(status, body = %text, items = pending.len(), "bulk request refused as a whole");
                    for item in pending {
                        rejected.push(Rejected {
                            item,
                            status,
                            error_type: "bulk_request_refused".into(),
                            reason: text.clone(),
                        });
                    }
                    continue;
                }
                Attempt::Retry(reason) => {
                    // One line per interval per kind of failure (the status, or our own first word).
                    let kind = reason.split([' ', ':']).next().unwrap_or("other");
                    if let Some(repeated) = self.repeats.check(kind) {
                        tracing::warn!(%reason, items = pending.len(), repeated, "bulk request failed, retrying; offsets held");
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
    use super::*;
    use crate::document::DocKind;

    #[test]
    fn item_classes_follow_the_reference_table() {
        assert_eq!(classify(201), ItemClass::Created);
        assert_eq!(classify(200), ItemClass::Created);
        assert_eq!(classify(409), ItemClass::Exists);
        assert_eq!(classify(429), ItemClass::Transient);
        assert_eq!(classify(503), ItemClass::Transient);
        assert_eq!(classify(400), ItemClass::Terminal);
        assert_eq!(classify(404), ItemClass::Terminal);
    }

    /// A store (here a fake one on another thread) that answers a `_bulk` with 256 MiB is not read:
    /// what this thread allocates while sending stays small.
    #[test]
    fn an_oversized_answer_is_not_read() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().take(1) {
                let Ok(mut stream) = stream else { return };
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 268435456\r\n\r\n",
                );
                let chunk = vec![b' '; 1 << 20];
                for _ in 0..256 {
                    if stream.write_all(&chunk).is_err() {
                        return;
                    }
                }
            }
        });
        let config = config::OpenSearch { url: format!("http://{addr}"), ..config::OpenSearch::default() };
        let client = BulkClient::new(
            clients(&config).expect("client"),
            &config,
            Metrics::register(&mut prometheus_client::registry::Registry::default()),
        );
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let mut attempt = None;
        let held = allocation_counter::measure(|| {
            attempt = Some(runtime.block_on(client.send(Bytes::from_static(b"{}\n"), 1)));
        })
        .bytes_max;
        match attempt {
            Some(Attempt::Retry(why)) => assert!(why.contains("over the"), "{why}"),
            _ => panic!("an oversized answer is a retry"),
        }
        assert!(held < 8 << 20, "held {held} bytes for a 256 MiB answer");
    }

    #[test]
    fn encodes_a_create_item() {
        let doc = Document {
            index: "jaeger-span-2026-11-25".into(),
            id: "a_b_c".into(),
            source: br#"{"x":1}"#.to_vec(),
            kind: DocKind::Span,
            position: None,
            end_micros: 0,
        };
        assert_eq!(
            &encode_item(&doc)[..],
            b"{\"create\":{\"_index\":\"jaeger-span-2026-11-25\",\"_id\":\"a_b_c\"}}\n{\"x\":1}\n"
        );
    }

    #[test]
    fn parses_item_results_in_order() {
        let body = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"i","_id":"1","status":201}},
            {"create":{"_index":"i","_id":"2","status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
            {"create":{"_index":"i","_id":"3","status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}}]}"#;
        let items = parse_response(body, 3).expect("parses").expect("has errors");
        assert_eq!(items.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![201, 429, 400]);
        assert_eq!(items[2].1.as_ref().map(|e| e.kind.as_str()), Some("mapper_parsing_exception"));
        assert!(parse_response(br#"{"took":1,"errors":false,"items":[]}"#, 3).expect("parses").is_none());
        assert!(parse_response(body, 2).is_err(), "count mismatch is an error, never a guess");
    }
}
