//! `bulk`: a batch's items → `_bulk` requests, until every item is durable or terminally rejected.
//!
//! Called by the worker once per flushed batch ([`BulkClient::write_all`]). Three parts:
//!
//! - [`framing`]: documents → NDJSON `create` items → a request body;
//! - [`classify`]: the store's answer → what to do with the request and each item, a pure function
//!   table-tested on captured OpenSearch answers;
//! - [`retry`]: the policy — send, classify, retry what is not durable with backoff and jitter,
//!   split on 413, hold (and mark the ingester stalled) while the store refuses.
//!
//! Guarantees (REFERENCE.md §5): an item is reported durable only when the store said created or
//! already there (409 on our own id under `create`); only an item-level document error (its mapping
//! or parsing) is returned as rejected, to be dead-lettered; anything else is retried without giving
//! up, so the batch's offsets are held. Only `abort` (shutdown's deadline) stops the retrying, and
//! then nothing is reported durable.

pub(crate) mod classify;
pub(crate) mod framing;
mod retry;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use backon::ExponentialBuilder;
use bytes::Bytes;
use opensearch::http::{
    Method,
    headers::{CONTENT_TYPE, HeaderMap, HeaderValue},
};
use spanline_common::repeats::Repeats;

use crate::{batch::Item, config, error::Error, metrics::Metrics, store::Node};

pub use classify::{ItemClass, ItemError, ItemResults, parse_response};
pub use framing::encode_item;

use classify::{Answer, Refusal};

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
    nodes: Arc<[Node]>,
    next: Arc<AtomicUsize>,
    metrics: Metrics,
    backoff: ExponentialBuilder,
    timeout: Duration,
    /// Whole-request failures repeat on every retry while the store is down: logged once per
    /// interval with a count, not once per retry and partition.
    repeats: Arc<Repeats>,
    /// Request bodies' buffers, kept between requests.
    bodies: Arc<framing::Bodies>,
}

impl std::fmt::Debug for BulkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkClient").finish_non_exhaustive()
    }
}

/// One client per configured node: see [`crate::store::nodes`].
pub fn clients(config: &config::OpenSearch) -> Result<Vec<Node>, Error> {
    crate::store::nodes(config, spanline_common::reload::ReloadMetrics::default())
}

impl BulkClient {
    pub fn new(nodes: Vec<Node>, config: &config::OpenSearch, metrics: Metrics) -> Self {
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
            bodies: Arc::new(framing::Bodies::default()),
        }
    }

    /// Sends one request of `count` items and classifies the answer; a request that got no answer
    /// (or one too large to read) is [`Answer::Transient`].
    async fn send(&self, body: Bytes, count: usize) -> Answer {
        let transient =
            |reason: String| Answer::Transient(Refusal { status: 0, error_type: "transport".into(), reason });
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        let node = &self.nodes[self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len()];
        let response = match node.send(Method::Post, "/_bulk", headers, Some(body), Some(self.timeout)).await {
            Ok(r) => r,
            // A failed handshake is configuration (an untrusted certificate, a refused client
            // certificate), not a store that is away: held and alerted like a refusal.
            Err(e) => {
                return match crate::store::tls_failure(&e) {
                    Some(reason) => Answer::Blocked(Refusal {
                        status: 0,
                        error_type: classify::TLS.into(),
                        reason: classify::clip_to(reason, classify::MAX_REASON),
                    }),
                    None => transient(format!("request failed: {e}")),
                };
            }
        };
        let status = response.status_code();
        // The store's answer is hostile input too: one bigger than any answer for `count` items
        // could be is not read (the client exposes no stream, so only a declared length is checked).
        let cap = answer_cap(count);
        if let Some(len) = response.content_length().filter(|&len| len > cap) {
            return transient(format!("{status}: answer of {len} bytes, over the {cap} bytes {count} items can need"));
        }
        match response.bytes().await {
            Ok(text) => classify::classify(status.as_u16(), &text, count),
            Err(e) => transient(format!("reading the answer failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose certificate the ingester does not trust, or that refuses the ingester's
    /// missing client certificate, is held as blocked (`tls_handshake`), naming the TLS failure; a
    /// store that is just away stays transient.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_handshake_is_blocked_and_a_refused_connection_is_transient() {
        use spanline_common::tls::ServerTls;
        use spanline_testkit::certs::{Ca, Pki, Validity};
        let dir = std::env::temp_dir().join(format!("spanline-bulk-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let pki = Pki::write(&dir);
        let rogue = Ca::new("rogue").server(Validity::Now);
        let (cert, key) = (dir.join("rogue-server.pem"), dir.join("rogue-server.key"));
        std::fs::write(&cert, &rogue.cert).expect("write");
        std::fs::write(&key, &rogue.key).expect("write");
        let shown = |p: &std::path::Path| p.display().to_string();
        let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
        let answer = |url: String| {
            let config = config::OpenSearch { url, ca_file: shown(&pki.ca), ..config::OpenSearch::default() };
            let client = BulkClient::new(clients(&config).expect("client"), &config, metrics.clone());
            async move { client.send(Bytes::from_static(b"{}\n"), 1).await }
        };
        let untrusted = spanline_devstore::start(
            spanline_devstore::Settings {
                tls: ServerTls { cert_file: shown(&cert), key_file: shown(&key), ..ServerTls::default() },
                ..spanline_devstore::Settings::default()
            },
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect("store");
        match answer(untrusted.url()).await {
            Answer::Blocked(refusal) => {
                assert_eq!((refusal.status, refusal.error_type.as_str()), (0, classify::TLS));
                assert!(refusal.reason.contains("certificate"), "{refusal:?}");
            }
            other => panic!("an untrusted certificate is held: {other:?}"),
        }
        let mtls = spanline_devstore::start(
            spanline_devstore::Settings {
                tls: ServerTls {
                    cert_file: shown(&pki.server.cert),
                    key_file: shown(&pki.server.key),
                    client_ca_file: shown(&pki.ca),
                    ..ServerTls::default()
                },
                ..spanline_devstore::Settings::default()
            },
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect("store");
        match answer(mtls.url()).await {
            Answer::Blocked(refusal) => assert_eq!(refusal.error_type, classify::TLS, "{refusal:?}"),
            other => panic!("a refused client certificate is held: {other:?}"),
        }
        let away = format!("http://127.0.0.1:{}", spanline_testkit::free_port());
        assert!(matches!(answer(away).await, Answer::Transient(_)), "a store away is transient");
        let _ = std::fs::remove_dir_all(dir);
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
            Some(Answer::Transient(why)) => assert!(why.reason.contains("over the"), "{why:?}"),
            _ => panic!("an oversized answer is a retry"),
        }
        assert!(held < 8 << 20, "held {held} bytes for a 256 MiB answer");
    }
}
