//! `bulk::classify`: the store's answer to one `_bulk` request (HTTP status and body) → what to do
//! with the request and with each item, as a pure function.
//!
//! Called by the retry policy ([`super::retry`]) on every answer; it does no I/O, so the table
//! tests below feed it captured answers in OpenSearch's shapes. What it guarantees:
//!
//! - only an item-level *document* error (400 `mapper_parsing_exception` and the like: the
//!   document's own mapping or parsing) is [`ItemClass::Terminal`], the one class that is
//!   dead-lettered and lets the offset move;
//! - what configuration, permissions or the cluster's state refuses (a whole-request
//!   400/401/403/404/405/3xx, item-level 401/403/404, a read-only index, auto-create disabled, an
//!   answer it cannot read) is *blocked*: retried with backoff, offsets held, and alerted, because the
//!   span is not at fault and dead-lettering it would hide an outage in the dead-letter topic;
//! - the store being busy or away (429, 5xx, 408, no answer) is *transient*: retried quietly;
//! - an answer it does not know is blocked, never terminal (see [`classify_item`]).

use serde::Deserialize;
use spanline_common::clip::clip;

use crate::error::AnswerError;

/// What to do with a whole `_bulk` request after its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// HTTP 200 without item errors: every item is durable.
    Durable,
    /// HTTP 200 with item errors: each item's outcome, in request order.
    Items(Vec<ItemAnswer>),
    /// The store is busy or away (429, 5xx, 408, no answer): send the whole request again.
    Transient(Refusal),
    /// The store refuses the request for a reason only an operator can fix: send it again with
    /// backoff, offsets held, and alert.
    Blocked(Refusal),
    /// 413: the body is over the store's `http.max_content_length`; split it.
    TooLarge,
}

/// Why a whole request (or an item) was refused, as the store said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The HTTP status; 0 when no answer came (a transport failure).
    pub status: u16,
    /// OpenSearch's `error.type` (`security_exception`, ...), or our own word when the answer has
    /// none (`transport`, `unreadable_answer`); at most [`MAX_TYPE`] bytes.
    pub error_type: String,
    /// The reason, clipped to at most [`MAX_REASON`] bytes (a proxy's HTML page is reduced to its
    /// title).
    pub reason: String,
}

/// One item's status, class and error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemAnswer {
    pub status: u16,
    pub class: ItemClass,
    pub error: Option<ItemError>,
}

/// What to do with one bulk item's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemClass {
    /// Written now.
    Created,
    /// 409 on our own id under `create`: written before (a retry or a replay).
    Exists,
    /// The store is busy: retry the item (429, 5xx, 408).
    Transient,
    /// Refused for a reason only an operator can fix (a block, a permission, a missing index with
    /// auto-create off, an unknown status): retry the item, offsets held, alert.
    Blocked,
    /// The document itself will never be accepted (its mapping or parsing): dead-letter it.
    Terminal,
}

impl ItemClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemClass::Created => "created",
            ItemClass::Exists => "exists",
            ItemClass::Transient => "transient",
            ItemClass::Blocked => "blocked",
            ItemClass::Terminal => "terminal",
        }
    }
}

/// An item's `error` object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ItemError {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub reason: String,
}

/// The longest error type kept from an answer, in bytes.
pub(crate) const MAX_TYPE: usize = 64;
/// The longest reason kept from a whole-request refusal, in bytes: enough for OpenSearch's
/// messages, short enough for one log line.
pub(crate) const MAX_REASON: usize = 512;

/// Item-level error types that are the document's own fault: its mapping or parsing, or a limit it
/// passes (`illegal_argument_exception`: total fields, an immense term, an empty id). Any other
/// 400 type (an invalid index name, the cluster's shard limit when a daily index is created, a
/// closed index) is the cluster's or our configuration's, and is held instead.
const DOCUMENT_ERRORS: [&str; 8] = [
    "mapper_parsing_exception",
    "document_parsing_exception",
    "strict_dynamic_mapping_exception",
    "mapper_exception",
    "illegal_argument_exception",
    "parse_exception",
    "x_content_parse_exception",
    "json_parse_exception",
];

/// Classifies one item by its status and error type.
///
/// An item status this does not know (a 3xx, 402, 410, ...) is [`ItemClass::Blocked`], not
/// terminal: dead-lettering moves the offset past the span for good and needs a replay to undo,
/// while holding costs only lag, shows in readiness and in the refusal metric, and ends by itself
/// once the store answers something known. A new kind of answer should stop the line and be looked
/// at, not be taken for the span's fault.
pub(crate) fn classify_item(status: u16, error: Option<&ItemError>) -> ItemClass {
    let kind = error.map_or("", |e| e.kind.as_str());
    match status {
        200 | 201 => ItemClass::Created,
        // Under `create` with our deterministic id, a conflict means the document is there.
        409 => ItemClass::Exists,
        // The flood-stage disk watermark puts a read-only-allow-delete block on the index,
        // answered 429 (TOO_MANY_REQUESTS/12): it lifts only once an operator frees disk.
        429 if kind == "cluster_block_exception" => ItemClass::Blocked,
        408 | 429 | 500..=599 => ItemClass::Transient,
        400 if DOCUMENT_ERRORS.contains(&kind) => ItemClass::Terminal,
        _ => ItemClass::Blocked,
    }
}

/// The whole `_bulk` answer: HTTP `status` and its `body`, for a request of `sent` items.
pub(crate) fn classify(status: u16, body: &[u8], sent: usize) -> Answer {
    match status {
        200 => match parse_response(body, sent) {
            Ok(None) => Answer::Durable,
            Ok(Some(items)) => Answer::Items(
                items
                    .into_iter()
                    .map(|(status, error)| ItemAnswer { status, class: classify_item(status, error.as_ref()), error })
                    .collect(),
            ),
            // A 200 we cannot read is not a busy store: a proxy's page, or an answer whose items
            // cannot be matched to ours. Held (never guessed), so an operator looks.
            Err(error) => Answer::Blocked(Refusal {
                status,
                error_type: "unreadable_answer".into(),
                reason: clip_to(error.to_string(), MAX_REASON),
            }),
        },
        413 => Answer::TooLarge,
        408 | 429 | 500..=599 => Answer::Transient(refusal(status, body)),
        // 400/401/403/404/405, a 3xx the client did not follow, and any status not named above:
        // the request did not reach a `_bulk` that accepts it, and sending the same request again
        // only helps once configuration changes. Holding loses nothing (see `classify_item`).
        _ => Answer::Blocked(refusal(status, body)),
    }
}

#[derive(Debug, Deserialize)]
struct BulkResponse {
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

/// Each item's status and error, in request order.
pub type ItemResults = Vec<(u16, Option<ItemError>)>;

/// The per-item statuses of a `_bulk` answer, in request order; `None` when every item succeeded.
pub fn parse_response(body: &[u8], expected: usize) -> Result<Option<ItemResults>, AnswerError> {
    let unreadable = |e: serde_json::Error| AnswerError::Unreadable(clip(e.to_string()));
    // A head saying `errors: false` is trusted when the answer also ends as an object does: one
    // cut short (a closed connection) is parsed whole, and refused as unreadable.
    let ends = body.trim_ascii_end().ends_with(b"}");
    let errors = match errors_first(body) {
        Some(errors) if ends => errors,
        _ => serde_json::from_slice::<BulkHead>(body).map_err(unreadable)?.errors,
    };
    if !errors {
        return Ok(None);
    }
    let full: BulkResponse = serde_json::from_slice(body).map_err(unreadable)?;
    if full.items.len() != expected {
        return Err(AnswerError::ItemCount { answered: full.items.len(), sent: expected });
    }
    Ok(Some(
        full.items
            .into_iter()
            // An item without an action key cannot be classified: 500 holds it as transient.
            .map(|mut item| item.drain().next().map_or((500, None), |(_, i)| (i.status, i.error)))
            .collect(),
    ))
}

/// The top-level `errors` of a `_bulk` answer, read without reading the items when it comes first.
///
/// OpenSearch writes `{"took":N,"errors":…,"items":[…]}`: a clean answer of thousands of items is
/// then known from its first bytes, where parsing it whole costs as much as a tenth of indexing it.
/// Only keys before `errors` whose values are plain numbers or literals are skipped; anything else
/// (an escaped key, a string, object or array value before it, no `errors` at all) answers `None`,
/// and the caller parses the whole answer. What follows is not read: an answer that repeats
/// `errors` with another value, which OpenSearch never writes, is taken by its first.
fn errors_first(body: &[u8]) -> Option<bool> {
    let mut at = 0;
    let skip_space = |at: &mut usize| {
        while body.get(*at).is_some_and(u8::is_ascii_whitespace) {
            *at += 1;
        }
    };
    skip_space(&mut at);
    (body.get(at) == Some(&b'{')).then_some(())?;
    at += 1;
    loop {
        skip_space(&mut at);
        (body.get(at) == Some(&b'"')).then_some(())?;
        let key_start = at + 1;
        let key_len = body.get(key_start..)?.iter().position(|&b| b == b'"' || b == b'\\')?;
        let key = &body[key_start..key_start + key_len];
        (body.get(key_start + key_len) == Some(&b'"')).then_some(())?;
        at = key_start + key_len + 1;
        skip_space(&mut at);
        (body.get(at) == Some(&b':')).then_some(())?;
        at += 1;
        skip_space(&mut at);
        let value_len = body.get(at..)?.iter().position(|b| !(b.is_ascii_alphanumeric() || b"+-.".contains(b)))?;
        let value = &body[at..at + value_len];
        if key == b"errors" {
            return match value {
                b"true" => Some(true),
                b"false" => Some(false),
                _ => None,
            };
        }
        // A number or a literal; a string, object or array starts with a byte outside the set.
        (value_len > 0).then_some(())?;
        at += value_len;
        skip_space(&mut at);
        (body.get(at) == Some(&b',')).then_some(())?;
        at += 1;
    }
}

/// A whole-request error as OpenSearch shapes it: `{"error": {"type", "reason", ...}, "status"}`,
/// or `{"error": "text", "status"}` (no handler, wrong method).
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: ErrorField,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Object {
        #[serde(rename = "type", default)]
        kind: String,
        #[serde(default)]
        reason: String,
    },
    Text(String),
}

/// A managed service's or gateway's JSON error (`{"message": ...}`, `{"Message": ...}`).
#[derive(Debug, Deserialize)]
struct MessageAnswer {
    #[serde(alias = "Message")]
    message: String,
}

/// What a whole-request refusal says: OpenSearch's error type and reason, a gateway's message, or
/// a page's title; clipped.
pub(crate) fn refusal(status: u16, body: &[u8]) -> Refusal {
    let (error_type, reason) = if let Ok(answer) = serde_json::from_slice::<ErrorAnswer>(body) {
        match answer.error {
            ErrorField::Object { kind, reason } => (kind, reason),
            ErrorField::Text(text) => (String::new(), text),
        }
    } else if let Ok(answer) = serde_json::from_slice::<MessageAnswer>(body) {
        (String::new(), answer.message)
    } else {
        (String::new(), text_of(body))
    };
    Refusal { status, error_type: clip_to(error_type, MAX_TYPE), reason: clip_to(reason, MAX_REASON) }
}

/// A non-JSON body as one line: an HTML page's `<title>`, else its first bytes with whitespace
/// collapsed.
fn text_of(body: &[u8]) -> String {
    let head = String::from_utf8_lossy(&body[..body.len().min(4 * MAX_REASON)]);
    let lower = head.to_ascii_lowercase();
    let title = lower
        .find("<title>")
        .map(|start| start + "<title>".len())
        .and_then(|start| lower[start..].find("</title>").map(|len| &head[start..start + len]));
    title.unwrap_or(&head).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` cut at a character boundary to at most `max` bytes.
pub(crate) fn clip_to(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Where an answer is held, for the refusal metric: the whole request or items of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Request,
    Item,
    /// The start-up requests (cluster info, templates), before any bulk request.
    Start,
}

impl Level {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Level::Request => "request",
            Level::Item => "item",
            Level::Start => "start",
        }
    }
}

/// A bounded label for a refusal's status: the statuses named in the docs as they are, the rest by
/// class, so a store answering odd statuses cannot grow the metric.
pub(crate) fn status_label(status: u16) -> &'static str {
    const NAMED: [(u16, &str); 12] = [
        (200, "200"),
        (301, "301"),
        (302, "302"),
        (303, "303"),
        (307, "307"),
        (308, "308"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (429, "429"),
    ];
    if status == 0 {
        // No HTTP answer: the only status-less answer held is a failed TLS handshake.
        return "tls";
    }
    if let Some((_, label)) = NAMED.iter().find(|(s, _)| *s == status) {
        return label;
    }
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// The error type of a request whose TLS handshake failed (status 0: no answer).
pub(crate) const TLS: &str = "tls_handshake";

/// What an operator should check for a held answer, in one phrase for the log line.
pub(crate) fn what_to_check(level: Level, status: u16, error_type: &str) -> &'static str {
    match (level, status, error_type) {
        (_, 0, TLS) => {
            "TLS: the store's certificate must chain to opensearch.ca_file (the system's roots when unset), be valid now and name the host of opensearch.url; with opensearch.cert_file, the store must trust the client certificate's CA"
        }
        (_, _, "cluster_block_exception") => {
            "index blocks: an index or the cluster is read-only (index.blocks.write, read_only_allow_delete after the disk flood-stage watermark); free disk and clear the block"
        }
        (_, _, "index_not_found_exception") => {
            "index creation: action.auto_create_index does not allow the span and service indices; allow them or create the indices, and check opensearch.url and opensearch.index_prefix"
        }
        (_, 401, _) => {
            "credentials: opensearch.username with opensearch.password or password_file, or opensearch.api_key or api_key_file (files are read again every opensearch.credentials_reload_interval and on SIGHUP)"
        }
        (Level::Start, 403, _) => {
            "permissions: the user needs cluster:monitor/main (GET /) and, with opensearch.create_templates, the index template permissions; then indices:data/write/bulk* and indices:admin/create on the span and service indices"
        }
        (_, 403, _) => {
            "permissions: the user needs indices:data/write/bulk* and indices:admin/create on the span and service indices"
        }
        (Level::Item, 400, _) => {
            "the cluster refuses to create or write the index (shard limit, closed index, index name); see the reason"
        }
        (_, 200, _) => {
            "opensearch.url: what answers there is not OpenSearch's _bulk (a proxy's page, or items that do not match the request)"
        }
        (_, 300..=399, _) => {
            "opensearch.url: a proxy or ingress redirects; use the URL it redirects to (https, host, no path)"
        }
        (_, 400 | 404 | 405, _) => {
            "opensearch.url and any proxy or ingress in front of the store: the URL must name a node (no path), and the proxy must pass POST /_bulk unchanged"
        }
        _ => "opensearch.url and what answers there: the store answered a status the ingester does not know",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Whole-request answers as OpenSearch, its security plugin, a managed service's gateway or a
    /// proxy in front of it send them, and what each must be.
    #[test]
    fn whole_request_answers_are_classified_from_captured_shapes() {
        type Check = Box<dyn Fn(&Answer) -> bool>;
        fn blocked(error_type: &'static str) -> Check {
            Box::new(move |a| matches!(a, Answer::Blocked(r) if r.error_type == error_type))
        }
        fn transient() -> Check {
            Box::new(|a| matches!(a, Answer::Transient(_)))
        }
        let os_error = |status: u16, kind: &str, reason: &str| {
            json!({"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}, "status": status})
                .to_string()
        };
        let nginx = |status: &str| {
            format!(
                "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n<center><h1>{status}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            )
        };
        let cases: Vec<(u16, String, Check, &str)> = vec![
            (200, json!({"took": 3, "errors": false, "items": [{"create": {"_index": "jaeger-span-2026-11-30", "_id": "a", "_version": 1, "result": "created", "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": 0, "_primary_term": 1, "status": 201}}]}).to_string(),
                Box::new(|a| *a == Answer::Durable), "200, no errors"),
            (200, "<html><head><title>Sign in</title></head><body>…</body></html>".into(), blocked("unreadable_answer"), "an SSO proxy's login page after a followed 302"),
            (200, json!({"took": 1, "errors": true, "items": []}).to_string(), blocked("unreadable_answer"), "200 whose items do not match the request"),
            (400, r#"{"error":"no handler found for uri [/spanline/x/_bulk] and method [POST]","status":400}"#.into(), blocked(""), "400 for a wrong path (OpenSearch's text error)"),
            (400, os_error(400, "illegal_argument_exception", "request [/_bulk] contains unrecognized parameter: [pipeline_x]"), blocked("illegal_argument_exception"), "400 from a proxy rewriting the query"),
            (400, nginx("400 The plain HTTP request was sent to HTTPS port"), blocked(""), "400 from an ingress: http to an https port"),
            (401, "Unauthorized".into(), blocked(""), "401 from the security plugin (plain text)"),
            (401, os_error(401, "security_exception", "missing authentication credentials for REST request [/_bulk]"), blocked("security_exception"), "401 security_exception"),
            (403, os_error(403, "security_exception", "no permissions for [indices:data/write/bulk] and User [name=spanline, backend_roles=[], requestedTenant=null]"), blocked("security_exception"), "403 security_exception"),
            (403, os_error(403, "cluster_block_exception", "blocked by: [FORBIDDEN/6/cluster read-only (api)];"), blocked("cluster_block_exception"), "403 cluster read-only block"),
            (403, json!({"Message": "User: anonymous is not authorized to perform: es:ESHttpPost"}).to_string(), blocked(""), "403 from a managed service's gateway"),
            (404, json!({"error": {"root_cause": [{"type": "index_not_found_exception", "reason": "no such index [spanline]", "index": "spanline", "resource.type": "index_or_alias", "resource.id": "spanline", "index_uuid": "_na_"}], "type": "index_not_found_exception", "reason": "no such index [spanline]", "index": "spanline", "resource.type": "index_or_alias", "resource.id": "spanline", "index_uuid": "_na_"}, "status": 404}).to_string(), blocked("index_not_found_exception"), "404 index_not_found_exception"),
            (404, nginx("404 Not Found"), blocked(""), "404 from an ingress with a wrong path"),
            (405, r#"{"error":"Incorrect HTTP method for uri [/_bulk] and method [GET], allowed: [PUT, POST]","status":405}"#.into(), blocked(""), "405: a followed 301 turned POST into GET"),
            (301, nginx("301 Moved Permanently"), blocked(""), "301 from a proxy"),
            (302, nginx("302 Found"), blocked(""), "302 from a proxy"),
            (307, String::new(), blocked(""), "307 without a body"),
            (408, nginx("408 Request Time-out"), transient(), "408 from a proxy"),
            (413, String::new(), Box::new(|a| *a == Answer::TooLarge), "413 (OpenSearch's empty body)"),
            (413, json!({"Message": "Request size exceeded 10485760 bytes"}).to_string(), Box::new(|a| *a == Answer::TooLarge), "413 from a managed service"),
            (429, os_error(429, "es_rejected_execution_exception", "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1024, max_coordinating_and_primary_bytes=0]"), transient(), "429 indexing pressure"),
            (429, os_error(429, "circuit_breaking_exception", "[parent] Data too large, data for [<http_request>] would be [1024/1kb], which is larger than the limit of [512/512b]"), transient(), "429 circuit breaker"),
            (500, os_error(500, "null_pointer_exception", "null"), transient(), "500"),
            (502, nginx("502 Bad Gateway"), transient(), "502 HTML from a load balancer"),
            (503, os_error(503, "cluster_block_exception", "blocked by: [SERVICE_UNAVAILABLE/2/no cluster-manager];"), transient(), "503 no cluster-manager"),
            (504, nginx("504 Gateway Time-out"), transient(), "504 from a load balancer"),
            (418, String::new(), blocked(""), "an unknown 4xx is held"),
            (204, String::new(), blocked(""), "an unknown 2xx is held"),
        ];
        for (status, body, check, what) in cases {
            let answer = classify(status, body.as_bytes(), 1);
            assert!(check(&answer), "{what}: {status} → {answer:?}");
        }
    }

    #[test]
    fn refusals_keep_the_type_and_a_clipped_reason() {
        let r = refusal(403, br#"{"error":{"root_cause":[],"type":"security_exception","reason":"no permissions for [indices:data/write/bulk]"},"status":403}"#);
        assert_eq!(
            (r.error_type.as_str(), r.reason.as_str()),
            ("security_exception", "no permissions for [indices:data/write/bulk]")
        );
        let r = refusal(405, br#"{"error":"Incorrect HTTP method for uri [/_bulk] and method [GET], allowed: [PUT, POST]","status":405}"#);
        assert_eq!(
            (r.error_type.as_str(), r.reason.as_str()),
            ("", "Incorrect HTTP method for uri [/_bulk] and method [GET], allowed: [PUT, POST]")
        );
        let r = refusal(502, b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body></body></html>");
        assert_eq!(r.reason, "502 Bad Gateway");
        let long = json!({"error": {"type": "x".repeat(1000), "reason": "é".repeat(5000)}}).to_string();
        let r = refusal(400, long.as_bytes());
        assert!(
            r.error_type.len() <= MAX_TYPE + '…'.len_utf8() && r.reason.len() <= MAX_REASON + '…'.len_utf8(),
            "{r:?}"
        );
        let r = refusal(400, &vec![b'a'; 1 << 20]);
        assert!(r.reason.len() <= MAX_REASON + '…'.len_utf8());
    }

    /// Item answers inside a 200 as OpenSearch sends them (REFERENCE.md §5), one per class.
    #[test]
    fn item_answers_are_classified_from_captured_shapes() {
        let index = "jaeger-span-2026-11-30";
        let item = |status: u16, error: Value| {
            let mut create = json!({"_index": index, "_id": "0123_abcd_ef", "status": status});
            if error.is_null() {
                create["_version"] = json!(1);
                create["result"] = json!(if status == 201 { "created" } else { "updated" });
            } else {
                create["error"] = error;
            }
            json!({"create": create})
        };
        let cases = [
            (item(201, Value::Null), ItemClass::Created),
            (item(200, Value::Null), ItemClass::Created),
            (
                item(
                    409,
                    json!({"type": "version_conflict_engine_exception", "reason": "[0123_abcd_ef]: version conflict, document already exists (current version [1])", "index": index, "shard": "0", "index_uuid": "aSdF"}),
                ),
                ItemClass::Exists,
            ),
            (
                item(
                    429,
                    json!({"type": "es_rejected_execution_exception", "reason": "rejected execution of primary operation [shard_detail=[jaeger-span-2026-11-30][0][P], shard_coordinating_and_primary_bytes=0, shard_operation_bytes=1024, shard_max_coordinating_and_primary_bytes=0]"}),
                ),
                ItemClass::Transient,
            ),
            (
                item(
                    429,
                    json!({"type": "circuit_breaking_exception", "reason": "[parent] Data too large", "bytes_wanted": 1024, "bytes_limit": 512, "durability": "TRANSIENT"}),
                ),
                ItemClass::Transient,
            ),
            (
                item(
                    429,
                    json!({"type": "cluster_block_exception", "reason": format!("index [{index}] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block];")}),
                ),
                ItemClass::Blocked,
            ),
            (
                item(
                    400,
                    json!({"type": "mapper_parsing_exception", "reason": "failed to parse field [startTime] of type [long] in document with id '0123_abcd_ef'. Preview of field's value: 'x'", "caused_by": {"type": "illegal_argument_exception", "reason": "For input string: \"x\""}}),
                ),
                ItemClass::Terminal,
            ),
            (
                item(
                    400,
                    json!({"type": "document_parsing_exception", "reason": "[1:42] failed to parse field [startTime] of type [long]"}),
                ),
                ItemClass::Terminal,
            ),
            (
                item(
                    400,
                    json!({"type": "illegal_argument_exception", "reason": "Limit of total fields [1000] has been exceeded"}),
                ),
                ItemClass::Terminal,
            ),
            (
                item(
                    400,
                    json!({"type": "validation_exception", "reason": "Validation Failed: 1: this action would add [10] total shards, but this cluster currently has [1000]/[1000] maximum shards open;"}),
                ),
                ItemClass::Blocked,
            ),
            (
                item(
                    400,
                    json!({"type": "invalid_index_name_exception", "reason": "Invalid index name [Jaeger], must be lowercase"}),
                ),
                ItemClass::Blocked,
            ),
            (
                item(401, json!({"type": "security_exception", "reason": "missing authentication credentials"})),
                ItemClass::Blocked,
            ),
            (
                item(
                    403,
                    json!({"type": "cluster_block_exception", "reason": format!("index [{index}] blocked by: [FORBIDDEN/8/index write (api)];")}),
                ),
                ItemClass::Blocked,
            ),
            (
                item(
                    403,
                    json!({"type": "security_exception", "reason": "no permissions for [indices:admin/create] and User [name=spanline, backend_roles=[], requestedTenant=null]"}),
                ),
                ItemClass::Blocked,
            ),
            (
                item(
                    404,
                    json!({"type": "index_not_found_exception", "reason": format!("no such index [{index}] and [action.auto_create_index] is [false]"), "index": index, "resource.type": "index_expression", "resource.id": index, "index_uuid": "_na_"}),
                ),
                ItemClass::Blocked,
            ),
            (
                item(500, json!({"type": "exception", "reason": "java.lang.IllegalStateException"})),
                ItemClass::Transient,
            ),
            (
                item(
                    503,
                    json!({"type": "unavailable_shards_exception", "reason": "[jaeger-span-2026-11-30][0] primary shard is not active Timeout: [1m]"}),
                ),
                ItemClass::Transient,
            ),
            (item(410, json!({"type": "x", "reason": "y"})), ItemClass::Blocked),
            (item(302, Value::Null), ItemClass::Blocked),
        ];
        let body =
            json!({"took": 5, "errors": true, "items": cases.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>()});
        let Answer::Items(items) = classify(200, body.to_string().as_bytes(), cases.len()) else {
            panic!("a 200 with item errors is classified item by item")
        };
        for ((sent, want), got) in cases.iter().zip(&items) {
            assert_eq!(got.class, *want, "{sent}");
        }
        assert_eq!(items[6].error.as_ref().map(|e| e.kind.as_str()), Some("mapper_parsing_exception"));
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
        assert!(parse_response(br#"{"errors":false,"took":1}"#, 3).expect("parses").is_none());
        assert_eq!(
            parse_response(body, 2),
            Err(AnswerError::ItemCount { answered: 3, sent: 2 }),
            "count mismatch is an error, never a guess"
        );
        assert!(matches!(parse_response(b"<html>", 1), Err(AnswerError::Unreadable(_))));
    }

    #[test]
    fn errors_is_read_from_the_head_when_it_comes_first() {
        assert_eq!(errors_first(br#"{"took":12,"errors":false,"items":[{"create":{}}]}"#), Some(false));
        assert_eq!(errors_first(b" {\n \"took\" : 1 ,\n \"ingest_took\":-1.5e3, \"errors\" : true }"), Some(true));
        assert_eq!(errors_first(br#"{"errors":false}"#), Some(false));
        // Anything else is left to the whole parse.
        for body in [
            &br#"{"items":[],"errors":false}"#[..],
            br#"{"took":"1","errors":false}"#,
            br#"{"t\"ook":1,"errors":false}"#,
            br#"{"took":1 "errors":false}"#,
            br#"{"errors":"false"}"#,
            br#"{"errors":fals"#,
            br#"{"took":1"#,
            b"",
            b"<html>",
        ] {
            assert_eq!(errors_first(body), None, "{}", String::from_utf8_lossy(body));
        }
        // And the whole parse still decides those.
        assert!(parse_response(br#"{"items":[],"errors":false}"#, 0).expect("parses").is_none());
        assert!(matches!(parse_response(br#"{"errors":"false"}"#, 0), Err(AnswerError::Unreadable(_))));
        // An answer cut short is not taken by its head.
        assert!(matches!(
            parse_response(br#"{"took":1,"errors":false,"items":[{"create":{"status":201"#, 1),
            Err(AnswerError::Unreadable(_))
        ));
    }

    #[test]
    fn status_labels_are_bounded() {
        let labels: std::collections::HashSet<&str> = (0..=u16::MAX).map(status_label).collect();
        assert!(labels.len() <= 20, "{labels:?}");
        assert_eq!(status_label(403), "403");
        assert_eq!(status_label(451), "4xx");
    }
}
