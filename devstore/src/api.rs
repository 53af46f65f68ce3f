//! The REST routes: OpenSearch's subset (cluster info, indices, mappings, index templates, `_bulk`,
//! `_refresh`, `_count`, `_doc`, `_search`, `_msearch`, `_cat/indices`) and the dev store's own admin routes under
//! `/_devstore` (faults, refusing connections, stats, reset).

use std::{
    borrow::Cow,
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query as UrlQuery, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::{
    error::{ApiError, for_status},
    faults::Faults,
    search::{self, SearchParams, SearchRequest, flag},
    store::{Store, WriteOp, Written},
};

/// Counters shown by `GET /_devstore/stats`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub bulk_requests: u64,
    pub bulk_rejected_requests: u64,
    pub bulk_items: u64,
    /// Bulk item outcomes by HTTP status.
    pub items_by_status: BTreeMap<u16, u64>,
    /// Items answered 409 (the id already exists), by index: a document written twice.
    pub conflicts_by_index: BTreeMap<String, u64>,
    /// Items stored (answered 200 or 201).
    pub docs_written: u64,
}

/// The CPU time (user + system) this process has used, in seconds, from `/proc/self/stat`
/// (`None` where there is no such file). Clock ticks are taken as 100 a second, Linux's
/// `USER_HZ` on every architecture it runs on.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis,
    // where field 3 (the state) is the first; utime and stime are fields 14 and 15.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    #[allow(clippy::cast_precision_loss)] // ticks of a process lifetime fit f64 exactly
    Some((utime + stime) as f64 / 100.0)
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub store: Mutex<Store>,
    pub faults: Mutex<Faults>,
    pub stats: Mutex<Stats>,
    /// The process's CPU seconds when the stats were last reset (at start, or `_devstore/reset`).
    cpu_at_reset: Mutex<f64>,
    rng: Mutex<StdRng>,
    /// Wakes the accept loop to drop its listener; the duration is in `refuse_for`.
    pub refuse: Notify,
    pub refuse_for: Mutex<Duration>,
    pub max_content_length: usize,
}

impl AppState {
    pub fn new(memory_limit: u64, faults: Faults, max_content_length: usize, seed: Option<u64>) -> Self {
        let rng = seed.map_or_else(|| StdRng::from_rng(&mut rand::rng()), StdRng::seed_from_u64);
        Self {
            store: Mutex::new(Store::new(memory_limit)),
            faults: Mutex::new(faults),
            stats: Mutex::new(Stats::default()),
            cpu_at_reset: Mutex::new(process_cpu_seconds().unwrap_or(0.0)),
            rng: Mutex::new(rng),
            refuse: Notify::new(),
            refuse_for: Mutex::new(Duration::ZERO),
            max_content_length,
        }
    }
}

type Shared = State<Arc<AppState>>;

/// All routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_content_length;
    Router::new()
        .route("/", get(info).head(|| async { StatusCode::OK }))
        .route("/_cluster/health", get(cluster_health))
        .route("/_cat/indices", get(cat_indices_all))
        .route("/_cat/indices/{index}", get(cat_indices))
        .route(
            "/_index_template/{name}",
            put(put_template).post(put_template).get(get_template).delete(delete_template).head(head_template),
        )
        .route(
            "/_template/{name}",
            put(put_legacy_template)
                .post(put_legacy_template)
                .get(get_legacy_template)
                .delete(delete_legacy_template)
                .head(head_legacy_template),
        )
        .route("/_bulk", post(bulk_all).put(bulk_all).get(bulk_wrong_method).delete(bulk_wrong_method))
        .route("/_refresh", post(refresh_all).get(refresh_all))
        .route("/_count", get(count_all).post(count_all))
        .route("/_search", get(search_all).post(search_all))
        .route("/_msearch", get(msearch_all).post(msearch_all))
        .route("/{index}/_bulk", post(bulk).put(bulk).get(bulk_wrong_method).delete(bulk_wrong_method))
        .route("/{index}/_refresh", post(refresh).get(refresh))
        .route("/{index}/_count", get(count).post(count))
        .route("/{index}/_search", get(search).post(search))
        .route("/{index}/_msearch", get(msearch).post(msearch))
        .route("/{index}/_doc/{id}", get(get_doc).head(head_doc))
        .route("/{index}/_mapping", get(get_mapping))
        .route("/{index}", get(get_index).put(create_index).delete(delete_index).head(head_index))
        .route("/_devstore/faults", get(get_faults).put(put_faults))
        .route("/_devstore/refuse_connections", post(refuse_connections))
        .route("/_devstore/stats", get(stats))
        .route("/_devstore/reset", post(reset))
        .layer(middleware::from_fn_with_state(state.clone(), inject_latency))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Adds the configured latency to every request outside `/_devstore`.
async fn inject_latency(State(state): Shared, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/_devstore") {
        let latency = state.faults.lock().latency;
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        }
    }
    next.run(request).await
}

async fn info() -> Json<Value> {
    Json(json!({
        "name": "spanline-devstore",
        "cluster_name": "spanline-devstore",
        "cluster_uuid": "c3BhbmxpbmUtZGV2c3RvcmU",
        "version": {
            "distribution": "opensearch",
            "number": "2.19.0",
            "build_type": "tar",
            "build_hash": "spanline-devstore",
            "build_date": "2026-01-01T00:00:00.000000Z",
            "build_snapshot": false,
            "lucene_version": "9.12.1",
            "minimum_wire_compatibility_version": "7.10.0",
            "minimum_index_compatibility_version": "7.0.0"
        },
        "tagline": "The OpenSearch Project: https://opensearch.org/"
    }))
}

async fn cluster_health(State(state): Shared) -> Json<Value> {
    let indices = state.store.lock().indices().len();
    Json(json!({
        "cluster_name": "spanline-devstore", "status": "green", "timed_out": false,
        "number_of_nodes": 1, "number_of_data_nodes": 1, "active_primary_shards": indices,
        "active_shards": indices, "relocating_shards": 0, "initializing_shards": 0,
        "unassigned_shards": 0, "delayed_unassigned_shards": 0, "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0, "task_max_waiting_in_queue_millis": 0,
        "active_shards_percent_as_number": 100.0
    }))
}

async fn cat_indices_all(state: Shared) -> Result<Json<Value>, ApiError> {
    cat_indices(state, Path("*".into())).await
}

async fn cat_indices(State(state): Shared, Path(expr): Path<String>) -> Result<Json<Value>, ApiError> {
    // Only `format=json` is spoken; OpenSearch's text table is not.
    let store = state.store.lock();
    let rows: Vec<Value> = store
        .resolve(&expr)?
        .iter()
        .filter_map(|name| store.index(name).map(|i| (name, i)))
        .map(|(name, index)| {
            json!({
                "health": "green", "status": "open", "index": name, "uuid": index.uuid,
                "pri": "1", "rep": "0", "docs.count": index.visible_count().to_string(),
                "docs.deleted": "0", "store.size": format!("{}b", index.bytes()),
                "pri.store.size": format!("{}b", index.bytes())
            })
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "json_parse_exception", format!("failed to parse request body: {e}")))
}

async fn put_template(State(state): Shared, Path(name): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let body = json_body(&body)?;
    state.store.lock().put_template(&name, body)?;
    Ok(Json(json!({"acknowledged": true})))
}

fn template_not_found(name: &str) -> ApiError {
    ApiError::new(404, "resource_not_found_exception", format!("index template matching [{name}] not found"))
}

async fn get_template(State(state): Shared, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let store = state.store.lock();
    let template = store.template(&name).ok_or_else(|| template_not_found(&name))?;
    Ok(Json(json!({"index_templates": [{"name": name, "index_template": template}]})))
}

async fn head_template(State(state): Shared, Path(name): Path<String>) -> StatusCode {
    if state.store.lock().template(&name).is_some() { StatusCode::OK } else { StatusCode::NOT_FOUND }
}

async fn delete_template(State(state): Shared, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    if state.store.lock().delete_template(&name) {
        Ok(Json(json!({"acknowledged": true})))
    } else {
        Err(template_not_found(&name))
    }
}

async fn put_legacy_template(
    State(state): Shared,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(&body)?;
    state.store.lock().put_legacy_template(&name, &body)?;
    Ok(Json(json!({"acknowledged": true})))
}

fn legacy_template_not_found(name: &str) -> ApiError {
    ApiError::new(404, "index_template_missing_exception", format!("index_template [{name}] missing"))
}

async fn get_legacy_template(State(state): Shared, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let store = state.store.lock();
    let template = store.legacy_template(&name).ok_or_else(|| legacy_template_not_found(&name))?;
    let mut out = serde_json::Map::new();
    out.insert(name, template.clone());
    Ok(Json(Value::Object(out)))
}

async fn head_legacy_template(State(state): Shared, Path(name): Path<String>) -> StatusCode {
    if state.store.lock().legacy_template(&name).is_some() { StatusCode::OK } else { StatusCode::NOT_FOUND }
}

async fn delete_legacy_template(State(state): Shared, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    if state.store.lock().delete_legacy_template(&name) {
        Ok(Json(json!({"acknowledged": true})))
    } else {
        Err(legacy_template_not_found(&name))
    }
}

async fn create_index(State(state): Shared, Path(name): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let body = json_body(&body)?;
    state.store.lock().create_index(&name, &body)?;
    Ok(Json(json!({"acknowledged": true, "shards_acknowledged": true, "index": name})))
}

async fn get_index(State(state): Shared, Path(expr): Path<String>) -> Result<Json<Value>, ApiError> {
    let store = state.store.lock();
    let mut out = serde_json::Map::new();
    for name in store.resolve(&expr)? {
        if let Some(index) = store.index(&name) {
            // Settings were normalised (nested, strings, with uuid and creation date) at creation.
            out.insert(name.clone(), json!({"aliases": {}, "mappings": index.mappings, "settings": index.settings}));
        }
    }
    Ok(Json(Value::Object(out)))
}

async fn get_mapping(State(state): Shared, Path(expr): Path<String>) -> Result<Json<Value>, ApiError> {
    let store = state.store.lock();
    let mut out = serde_json::Map::new();
    for name in store.resolve(&expr)? {
        if let Some(index) = store.index(&name) {
            out.insert(name.clone(), json!({"mappings": index.mappings}));
        }
    }
    Ok(Json(Value::Object(out)))
}

async fn head_index(State(state): Shared, Path(expr): Path<String>) -> StatusCode {
    match state.store.lock().resolve(&expr) {
        Ok(names) if !names.is_empty() => StatusCode::OK,
        _ => StatusCode::NOT_FOUND,
    }
}

async fn delete_index(State(state): Shared, Path(expr): Path<String>) -> Result<Json<Value>, ApiError> {
    state.store.lock().delete_index(&expr)?;
    Ok(Json(json!({"acknowledged": true})))
}

#[derive(Debug, Deserialize, Default)]
struct BulkParams {
    refresh: Option<String>,
}

async fn bulk_all(state: Shared, params: UrlQuery<BulkParams>, body: Bytes) -> Response {
    run_bulk(state, None, params, body)
}

async fn bulk(state: Shared, Path(index): Path<String>, params: UrlQuery<BulkParams>, body: Bytes) -> Response {
    run_bulk(state, Some(index), params, body)
}

/// One parsed action line; the index and id borrowed from the line (or the URL) when they are
/// written plainly, which is nearly always.
struct Action<'a> {
    op: WriteOp,
    index: Cow<'a, str>,
    id: Option<Cow<'a, str>>,
}

fn illegal(reason: impl Into<String>) -> ApiError {
    ApiError::new(400, "illegal_argument_exception", reason)
}

/// The entries of a JSON object in the order they were written (serde_json's map sorts its keys,
/// and OpenSearch's parser reports the first key it meets).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// The name Jackson gives the token that starts `value`, as OpenSearch's messages quote it.
fn token_name(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "START_OBJECT",
        Value::Array(_) => "START_ARRAY",
        Value::String(_) => "VALUE_STRING",
        Value::Number(_) => "VALUE_NUMBER",
        Value::Bool(_) => "VALUE_BOOLEAN",
        Value::Null => "VALUE_NULL",
    }
}

/// Metadata keys OpenSearch 2.x accepts on an action line; the dev store ignores all but `_index`
/// and `_id`, which does not change what Spanline's writers see.
const KNOWN_METADATA: &[&str] = &[
    "_index",
    "_id",
    "routing",
    "op_type",
    "version",
    "version_type",
    "if_seq_no",
    "if_primary_term",
    "pipeline",
    "require_alias",
    "retry_on_conflict",
    "_source",
];

/// The common action line, `{"create":{"_index":"…","_id":"…"}}` (or `index`, either key left
/// out or in the other order), written without spaces or escapes, read without a parser. `None`
/// for anything else, including an empty `_id` or no index at all: [`parse_action`] then reads it
/// in full, so what is accepted and every error stay its own.
fn parse_plain_action<'a>(line: &'a [u8], default_index: Option<&'a str>) -> Option<Action<'a>> {
    let (op, mut rest) = if let Some(rest) = line.strip_prefix(b"{\"create\":{") {
        (WriteOp::Create, rest)
    } else {
        (WriteOp::Index, line.strip_prefix(b"{\"index\":{")?)
    };
    let (mut index, mut id): (Option<&'a str>, Option<&'a str>) = (None, None);
    if rest != b"}}" {
        loop {
            let slot = if let Some(after) = rest.strip_prefix(b"\"_index\":\"") {
                rest = after;
                &mut index
            } else if let Some(after) = rest.strip_prefix(b"\"_id\":\"") {
                rest = after;
                &mut id
            } else {
                return None;
            };
            // A plain string: no escape, no control character (which a JSON string refuses).
            let len = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
            if rest[len] != b'"' || slot.is_some() {
                return None;
            }
            *slot = Some(std::str::from_utf8(&rest[..len]).ok()?);
            rest = &rest[len + 1..];
            match rest {
                b"}}" => break,
                [b',', after @ ..] => rest = after,
                _ => return None,
            }
        }
    }
    let index = index.or(default_index)?;
    let id = match id {
        Some("") => return None,
        id => id.map(Cow::Borrowed),
    };
    Some(Action { op, index: Cow::Borrowed(index), id })
}

/// Parses one action line the way OpenSearch's `BulkRequestParser` does, with its messages.
/// `Ok((action, None))` is a valid line; `Some(error)` is a line that is well-formed but whose item
/// fails on its own (an empty `_id`), which OpenSearch answers inside the 200, not for the request.
fn parse_action<'a>(
    line: &'a [u8],
    line_no: usize,
    default_index: Option<&'a str>,
) -> Result<(Action<'a>, Option<ApiError>), ApiError> {
    match parse_plain_action(line, default_index) {
        Some(action) => Ok((action, None)),
        None => parse_any_action(line, line_no, default_index),
    }
}

/// [`parse_action`] for any line, with serde_json's parser.
fn parse_any_action<'a>(
    line: &[u8],
    line_no: usize,
    default_index: Option<&str>,
) -> Result<(Action<'a>, Option<ApiError>), ApiError> {
    let malformed = |what: String| illegal(format!("Malformed action/metadata line [{line_no}], {what}"));
    // One parse per line: only a line that is not an object is read again, for its error.
    let Entries(entries) = serde_json::from_slice(line).map_err(|_| match serde_json::from_slice::<Value>(line) {
        Ok(value) => malformed(format!("expected START_OBJECT but found [{}]", token_name(&value))),
        Err(e) => malformed(format!("expected START_OBJECT but found invalid JSON: {e}")),
    })?;
    let mut entries = entries.into_iter();
    let Some((name, meta)) = entries.next() else {
        return Err(malformed("expected FIELD_NAME but found [END_OBJECT]".into()));
    };
    let op = match name.as_str() {
        "index" => WriteOp::Index,
        "create" => WriteOp::Create,
        "update" | "delete" => {
            return Err(illegal(format!(
                "spanline-devstore does not implement bulk action [{name}] (line [{line_no}])"
            )));
        }
        other => {
            return Err(malformed(format!("expected one of [create, delete, index, update] but found [{other}]")));
        }
    };
    let Value::Object(meta) = meta else {
        return Err(malformed(format!("expected START_OBJECT but found [{}]", token_name(&meta))));
    };
    if entries.next().is_some() {
        return Err(malformed("expected END_OBJECT but found [FIELD_NAME]".into()));
    }
    for (key, value) in &meta {
        if !KNOWN_METADATA.contains(&key.as_str()) {
            return Err(illegal(format!("Action/metadata line [{line_no}] contains an unknown parameter [{key}]")));
        }
        if key != "_source" && matches!(value, Value::Object(_) | Value::Array(_)) {
            return Err(malformed(format!(
                "expected a simple value for field [{key}] but found [{}]",
                token_name(value)
            )));
        }
    }
    let index = match meta.get("_index").map(crate::query::value_text).as_deref().or(default_index) {
        Some(index) => index.to_owned(),
        None => {
            return Err(ApiError::new(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: index is missing;",
            ));
        }
    };
    let id = match meta.get("_id") {
        None | Some(Value::Null) => None,
        Some(other) => Some(crate::query::value_text(other)),
    };
    // OpenSearch refuses this one item (an empty id is not "no id") and writes the others.
    let item_error =
        id.as_deref().is_some_and(str::is_empty).then(|| illegal("if _id is specified it must not be empty"));
    Ok((Action { op, index: Cow::Owned(index), id: id.map(Cow::Owned) }, item_error))
}

fn random_id(rng: &mut StdRng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..20).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

fn run_bulk(
    State(state): Shared,
    default_index: Option<String>,
    UrlQuery(params): UrlQuery<BulkParams>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    state.stats.lock().bulk_requests += 1;
    match bulk_items(&state, default_index.as_deref(), &body) {
        Ok(mut answer) => {
            if matches!(params.refresh.as_deref(), Some("" | "true" | "wait_for")) {
                let mut touched = std::mem::take(&mut answer.touched);
                touched.sort();
                touched.dedup();
                state.store.lock().refresh(&touched);
            }
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            answer.into_response(took)
        }
        Err(error) => {
            state.stats.lock().bulk_rejected_requests += 1;
            error.into_response()
        }
    }
}

/// Rough bytes of one written item in the answer, to size its buffer once.
const ITEM_ANSWER_BYTES: usize = 200;

/// The `_bulk` answer, written straight to bytes item by item as they are applied: the same JSON
/// (keys in serde_json's sorted order) that building a `Value` per item gave, without the tree,
/// and without keeping each item's index and id until the end.
struct BulkAnswer {
    /// The items so far, comma-separated, without the brackets.
    items: Vec<u8>,
    /// Whether some item failed.
    errors: bool,
    /// The indices written to, in order, a run of items to the same index listed once.
    touched: Vec<String>,
}

impl BulkAnswer {
    fn with_capacity(items: usize) -> Self {
        Self { items: Vec::with_capacity(items * ITEM_ANSWER_BYTES), errors: false, touched: Vec::new() }
    }

    /// Adds one item's outcome.
    fn push(&mut self, op: WriteOp, index: &str, id: &str, outcome: &Result<Written, ApiError>) {
        if self.touched.last().map(String::as_str) != Some(index) {
            self.touched.push(index.to_owned());
        }
        let out = &mut self.items;
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(op.name().as_bytes());
        out.extend_from_slice(b"\":");
        match outcome {
            Ok(written) => {
                out.extend_from_slice(b"{\"_id\":");
                write_json_str(out, id);
                out.extend_from_slice(b",\"_index\":");
                write_json_str(out, index);
                out.extend_from_slice(b",\"_primary_term\":1,\"_seq_no\":");
                write_number(out, written.seq_no);
                out.extend_from_slice(b",\"_shards\":{\"failed\":0,\"successful\":1,\"total\":2},\"_version\":");
                write_number(out, written.version);
                out.extend_from_slice(b",\"result\":\"");
                out.extend_from_slice(written.result().as_bytes());
                out.extend_from_slice(b"\",\"status\":");
                write_number(out, u64::from(written.status()));
                out.push(b'}');
            }
            Err(error) => {
                self.errors = true;
                let body = json!({"_index": index, "_id": id, "status": error.status, "error": error.cause()});
                out.extend_from_slice(body.to_string().as_bytes());
            }
        }
        out.push(b'}');
    }

    fn into_response(self, took: u64) -> Response {
        // OpenSearch's order: `took`, `errors`, then the items.
        let mut out: Vec<u8> = Vec::with_capacity(self.items.len() + 64);
        out.extend_from_slice(b"{\"took\":");
        write_number(&mut out, took);
        out.extend_from_slice(if self.errors {
            b",\"errors\":true,\"items\":["
        } else {
            b",\"errors\":false,\"items\":["
        });
        out.extend_from_slice(&self.items);
        out.extend_from_slice(b"]}");
        ([(axum::http::header::CONTENT_TYPE, "application/json")], out).into_response()
    }
}

/// `n` in decimal, without an intermediate `String`.
fn write_number(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        // `n % 10` is below 10: the cast keeps it whole.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (n % 10) as u8;
        digits[at] = b'0' + digit;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `text` as a JSON string, escaped as serde_json escapes it.
fn write_json_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(Value::from(text).to_string().as_bytes());
    }
}

/// Checks whole-request faults and limits, then applies each item, in order.
fn bulk_items(state: &AppState, default_index: Option<&str>, body: &[u8]) -> Result<BulkAnswer, ApiError> {
    let faults = {
        let mut faults = state.faults.lock();
        let snapshot = faults.clone();
        if let (Some(_), Some(times)) = (faults.bulk_status, faults.bulk_status_times) {
            if times <= 1 {
                faults.bulk_status = None;
                faults.bulk_status_times = None;
            } else {
                faults.bulk_status_times = Some(times - 1);
            }
        } else if let (Some(_), Some(times)) = (faults.item_status, faults.item_status_times) {
            // Counted only for requests that reach the items (no whole-request fault before them).
            if times <= 1 {
                faults.item_status = None;
                faults.item_status_times = None;
            } else {
                faults.item_status_times = Some(times - 1);
            }
        }
        snapshot
    };
    if let Some(limit) = faults.max_bulk_bytes
        && body.len() as u64 > limit
    {
        return Err(ApiError::new(
            413,
            "content_too_long_exception",
            format!(
                "request body of {} bytes exceeds the limit of {limit} bytes (http.max_content_length)",
                body.len()
            ),
        ));
    }
    if let Some(status) = faults.bulk_status {
        let path = default_index.map_or_else(|| "/_bulk".to_owned(), |index| format!("/{index}/_bulk"));
        return Err(for_status(status, &path));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(400, "parse_exception", "request body is required"));
    }
    if body.last() != Some(&b'\n') {
        return Err(illegal("The bulk request must be terminated by a newline [\\n]"));
    }
    {
        let store = state.store.lock();
        if store.bytes_used() + body.len() as u64 > store.memory_limit() {
            tracing::warn!(
                used = store.bytes_used(),
                limit = store.memory_limit(),
                "memory cap reached, rejecting bulk"
            );
            return Err(store.memory_error(body.len() as u64));
        }
    }

    // Parse every action first: a malformed action line fails the whole request, as in OpenSearch.
    // As OpenSearch's `BulkRequestParser`: a blank line where an action is expected is skipped (but
    // counted in line numbers); the line after an action is its source whatever it holds, a blank
    // one included (that item then fails: "failed to parse, document is empty"); an action on the
    // last line, without a source line, is dropped.
    let mut pairs: Vec<(Action, Option<ApiError>, &[u8])> = Vec::new();
    let lines = lines_of(&body[..body.len() - 1]);
    let mut next = 0;
    while let Some(line) = lines.get(next) {
        let line_no = next + 1;
        next += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (action, item_error) = parse_action(line, line_no, default_index)?;
        let Some(source) = lines.get(next) else { break };
        next += 1;
        pairs.push((action, item_error, source));
    }
    if pairs.is_empty() {
        return Err(ApiError::new(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: no requests added;",
        ));
    }

    let mut answer = BulkAnswer::with_capacity(pairs.len());
    let items = pairs.len() as u64;
    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    let mut conflicts: BTreeMap<String, u64> = BTreeMap::new();
    let mut store = state.store.lock();
    let mut rng = state.rng.lock();
    let mut scratch = Vec::new();
    for (action, item_error, source) in pairs {
        let Action { op, index, id } = action;
        let id = id.unwrap_or_else(|| Cow::Owned(random_id(&mut rng)));
        let outcome = match item_error {
            Some(error) => Err(error),
            None => write_item(&mut store, &mut rng, &faults, op, &index, &id, source, &mut scratch),
        };
        let status = match &outcome {
            Ok(written) => written.status(),
            Err(error) => error.status,
        };
        *by_status.entry(status).or_default() += 1;
        if status == 409 {
            *conflicts.entry(index.clone().into_owned()).or_default() += 1;
        }
        answer.push(op, &index, &id, &outcome);
    }
    drop(store);
    let mut stats = state.stats.lock();
    stats.bulk_items += items;
    for (index, n) in conflicts {
        *stats.conflicts_by_index.entry(index).or_default() += n;
    }
    for (status, n) in by_status {
        if matches!(status, 200 | 201) {
            stats.docs_written += n;
        }
        *stats.items_by_status.entry(status).or_default() += n;
    }
    Ok(answer)
}

// The bulk loop's locked state and one item's parts, passed through once per item; a struct for
// them would only be built and taken apart here.
#[allow(clippy::too_many_arguments)]
fn write_item(
    store: &mut Store,
    rng: &mut StdRng,
    faults: &Faults,
    op: WriteOp,
    index: &str,
    id: &str,
    source: &[u8],
    scratch: &mut Vec<crate::postings::Rec>,
) -> Result<Written, ApiError> {
    // OpenSearch trims one `\r` before the newline; nothing left is its empty document.
    if source.strip_suffix(b"\r").unwrap_or(source).is_empty() {
        return Err(ApiError::new(400, "mapper_parsing_exception", "failed to parse, document is empty"));
    }
    let text = std::str::from_utf8(source)
        .map_err(|_| ApiError::new(400, "mapper_parsing_exception", "failed to parse: invalid UTF-8"))?;
    // Validated as `serde_json::from_str::<Value>` would, without building the tree; the values
    // the index's postings need are taken on the way, so refresh lists them without parsing again
    // (a new index's first document is walked again at refresh: its paths are not known yet).
    let parsed = match store.index(index) {
        Some(existing) => crate::postings::record(text, existing.postings().paths(), scratch)
            .map(|(is_object, recorded)| (is_object, Some(recorded))),
        None => crate::postings::validate(text).map(|is_object| (is_object, None)),
    };
    let (is_object, recorded) =
        parsed.map_err(|e| ApiError::new(400, "mapper_parsing_exception", format!("failed to parse: {e}")))?;
    if !is_object {
        return Err(ApiError::new(
            400,
            "mapper_parsing_exception",
            "failed to parse, document is empty or not an object",
        ));
    }
    if let Some(status) = faults.item_status {
        return Err(item_fault(status, index));
    }
    if faults.item_429_rate > 0.0 && rng.random_bool(faults.item_429_rate) {
        return Err(ApiError::new(
            429,
            "es_rejected_execution_exception",
            "rejected execution of primary operation [shard_detail=[jaeger][0][P], shard_coordinating_and_primary_bytes=0, shard_operation_bytes=0, shard_max_coordinating_and_primary_bytes=0] (injected by spanline-devstore)",
        ));
    }
    if let Some(rule) = &faults.reject
        && rule.matches(&serde_json::from_str(text).unwrap_or(Value::Null))
    {
        return Err(ApiError::new(
            400,
            "mapper_parsing_exception",
            format!("failed to parse field [{}] in document with id '{id}'. Preview of field's value: rejected by devstore rule (contains {:?})", rule.field, rule.contains),
        )
        .with("caused_by", json!({"type": "illegal_argument_exception", "reason": "rejected by spanline-devstore reject rule"})));
    }
    // An existing index's name was checked when it was created: only a new one is checked here.
    if store.index(index).is_none() {
        crate::store::validate_index_name(index)?;
    }
    store.write(op, index, id, Arc::from(text), recorded)
}

/// OpenSearch's item-level error for an injected item status on `index` (see `Faults::item_status`).
fn item_fault(status: u16, index: &str) -> ApiError {
    match status {
        404 => ApiError::new(
            404,
            "index_not_found_exception",
            format!("no such index [{index}] and [action.auto_create_index] is [false]"),
        )
        .with("index", index)
        .with("resource.type", "index_expression")
        .with("resource.id", index)
        .with("index_uuid", "_na_"),
        // 403 (validated: the only other one): a write block set through the API.
        _ => ApiError::new(
            403,
            "cluster_block_exception",
            format!("index [{index}] blocked by: [FORBIDDEN/8/index write (api)];"),
        ),
    }
}

/// A `_bulk` with a method it does not take, answered as OpenSearch does (a client that followed a
/// 301/302/303 redirect of a POST comes back with GET).
async fn bulk_wrong_method(request: Request) -> ApiError {
    ApiError::text(
        405,
        format!(
            "Incorrect HTTP method for uri [{}] and method [{}], allowed: [PUT, POST]",
            request.uri().path(),
            request.method()
        ),
    )
}

async fn refresh_all(state: Shared) -> Result<Json<Value>, ApiError> {
    refresh(state, Path("_all".into())).await
}

async fn refresh(State(state): Shared, Path(expr): Path<String>) -> Result<Json<Value>, ApiError> {
    let mut store = state.store.lock();
    let names = store.resolve(&expr)?;
    store.refresh(&names);
    let n = names.len();
    Ok(Json(json!({"_shards": {"total": n * 2, "successful": n, "failed": 0}})))
}

fn search_request(body: &Bytes, params: &SearchParams, allow_paging: bool) -> Result<SearchRequest, ApiError> {
    SearchRequest::parse(&json_body(body)?, params, allow_paging)
}

async fn count_all(state: Shared, params: UrlQuery<SearchParams>, body: Bytes) -> Result<Json<Value>, ApiError> {
    count(state, Path("_all".into()), params, body).await
}

async fn count(
    State(state): Shared,
    Path(expr): Path<String>,
    UrlQuery(params): UrlQuery<SearchParams>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request = search_request(&body, &params, false)?;
    let store = state.store.lock();
    let names = store.resolve_with(&expr, flag(params.ignore_unavailable.as_deref()))?;
    let total = search::count(&store, &names, &request.query)?;
    let n = names.len();
    Ok(Json(json!({"count": total, "_shards": {"total": n, "successful": n, "skipped": 0, "failed": 0}})))
}

async fn search_all(state: Shared, params: UrlQuery<SearchParams>, body: Bytes) -> Result<Json<Value>, ApiError> {
    search(state, Path("_all".into()), params, body).await
}

async fn search(
    State(state): Shared,
    Path(expr): Path<String>,
    UrlQuery(params): UrlQuery<SearchParams>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let request = search_request(&body, &params, true)?;
    let store = state.store.lock();
    let names = store.resolve_with(&expr, flag(params.ignore_unavailable.as_deref()))?;
    let answer = search::run(&store, &names, &request)?;
    Ok(Json(with_took(answer, started)))
}

fn with_took(answer: serde_json::Map<String, Value>, started: Instant) -> Value {
    let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut out = serde_json::Map::new();
    out.insert("took".into(), json!(took));
    out.extend(answer);
    Value::Object(out)
}

async fn msearch_all(state: Shared, params: UrlQuery<SearchParams>, body: Bytes) -> Response {
    run_msearch(state, None, params, body)
}

async fn msearch(state: Shared, Path(index): Path<String>, params: UrlQuery<SearchParams>, body: Bytes) -> Response {
    run_msearch(state, Some(index), params, body)
}

/// `_msearch`: NDJSON header and body pairs. A malformed header fails the whole request, as in
/// OpenSearch; anything wrong with one search (a missing index, an unknown query) is answered in
/// its own slot with its error and status, beside the others' results.
fn run_msearch(
    State(state): Shared,
    default_index: Option<String>,
    UrlQuery(params): UrlQuery<SearchParams>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    match msearch_items(&state, default_index.as_deref(), &params, &body) {
        Ok(responses) => {
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            Json(json!({"took": took, "responses": responses})).into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// The most searches one `_msearch` request may hold in the dev store (OpenSearch has no such
/// cap, only `max_concurrent_searches`, how many of them run at once).
pub const MAX_MSEARCH_ITEMS: usize = 1_000;

/// One `_msearch` header line.
struct MsearchHeader {
    index: Option<String>,
    ignore_unavailable: bool,
}

fn parse_msearch_header(line: &[u8], line_no: usize) -> Result<MsearchHeader, ApiError> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        ApiError::new(400, "json_parse_exception", format!("failed to parse msearch header line [{line_no}]: {e}"))
    })?;
    let Value::Object(map) = value else {
        return Err(illegal(format!("msearch header line [{line_no}] must be an object")));
    };
    let mut header = MsearchHeader { index: None, ignore_unavailable: false };
    for (key, value) in map {
        match key.as_str() {
            "index" | "indices" => {
                header.index = Some(match value {
                    Value::String(s) => s,
                    Value::Array(items) => items.iter().map(crate::query::value_text).collect::<Vec<_>>().join(","),
                    other => return Err(illegal(format!("key [{key}] has an invalid value [{other}]"))),
                });
            }
            "ignore_unavailable" => {
                header.ignore_unavailable = matches!(&value, Value::Bool(true)) || value.as_str() == Some("true");
            }
            // Accepted as OpenSearch does; none of them changes a single-node in-memory answer.
            "allow_no_indices"
            | "expand_wildcards"
            | "search_type"
            | "preference"
            | "routing"
            | "request_cache"
            | "allow_partial_search_results"
            | "ccs_minimize_roundtrips" => {}
            other => return Err(illegal(format!("key [{other}] is not supported in the metadata section"))),
        }
    }
    Ok(header)
}

fn msearch_items(
    state: &AppState,
    default_index: Option<&str>,
    params: &SearchParams,
    body: &[u8],
) -> Result<Vec<Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(400, "parse_exception", "request body is required"));
    }
    if body.last() != Some(&b'\n') {
        return Err(illegal("The msearch request must be terminated by a newline [\\n]"));
    }
    // As OpenSearch's `MultiSearchRequest.readMultiLineFormat`: an empty first line is skipped; any
    // other blank header line is the header `{}`; the line after a header is its body whatever it
    // holds (a blank one is a whole-request 400, as OpenSearch cannot parse it); a header on the
    // last line, without a body line, is dropped.
    let mut pairs = Vec::new();
    let lines = lines_of(&body[..body.len() - 1]);
    let mut next = usize::from(lines.first().is_some_and(|l| l.is_empty()));
    while let Some(line) = lines.get(next) {
        let line_no = next + 1;
        next += 1;
        let header = if line.iter().all(u8::is_ascii_whitespace) {
            MsearchHeader { index: None, ignore_unavailable: false }
        } else {
            parse_msearch_header(line, line_no)?
        };
        let Some(search_body) = lines.get(next) else { break };
        next += 1;
        if search_body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(400, "parsing_exception", "Expected [START_OBJECT] but found [null]"));
        }
        pairs.push((header, *search_body));
        if pairs.len() > MAX_MSEARCH_ITEMS {
            return Err(illegal(format!(
                "the msearch request has more than [{MAX_MSEARCH_ITEMS}] searches, spanline-devstore's limit per request (OpenSearch has none; it bounds only how many run at once, [max_concurrent_searches]); split the request"
            )));
        }
    }
    if pairs.is_empty() {
        return Err(ApiError::new(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: no requests added;",
        ));
    }
    let mut responses = Vec::with_capacity(pairs.len());
    for (header, search_body) in pairs {
        // Per item, as OpenSearch runs each search on its own: writes and other searches go on
        // between the items of a long request.
        let store = state.store.lock();
        let started = Instant::now();
        let expr = header.index.as_deref().or(default_index).unwrap_or("_all");
        let answer = serde_json::from_slice::<Value>(search_body)
            .map_err(|e| ApiError::new(400, "json_parse_exception", format!("failed to parse search body: {e}")))
            .and_then(|body| SearchRequest::parse(&body, params, true))
            .and_then(|request| {
                let names = store.resolve_with(expr, header.ignore_unavailable)?;
                search::run(&store, &names, &request)
            });
        responses.push(match answer {
            Ok(answer) => {
                let mut item = with_took(answer, started);
                if let Value::Object(map) = &mut item {
                    map.insert("status".into(), json!(200));
                }
                item
            }
            Err(error) => error.body(),
        });
    }
    Ok(responses)
}

async fn get_doc(State(state): Shared, Path((index_name, id)): Path<(String, String)>) -> Result<Response, ApiError> {
    let store = state.store.lock();
    let index = store.index(&index_name).ok_or_else(|| ApiError::index_not_found(&index_name))?;
    Ok(match index.docs.get(&id) {
        Some(doc) => {
            let source: Value = serde_json::from_str(&doc.source).unwrap_or(Value::Null);
            Json(json!({
                "_index": index_name, "_id": id, "_version": doc.version, "_seq_no": doc.seq_no,
                "_primary_term": 1, "found": true, "_source": source
            }))
            .into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"_index": index_name, "_id": id, "found": false}))).into_response(),
    })
}

async fn head_doc(State(state): Shared, Path((index_name, id)): Path<(String, String)>) -> StatusCode {
    let store = state.store.lock();
    match store.index(&index_name) {
        Some(index) if index.docs.contains_key(&id) => StatusCode::OK,
        _ => StatusCode::NOT_FOUND,
    }
}

async fn get_faults(State(state): Shared) -> Json<Faults> {
    Json(state.faults.lock().clone())
}

async fn put_faults(State(state): Shared, body: Bytes) -> Result<Json<Faults>, ApiError> {
    let faults: Faults = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(400, "illegal_argument_exception", format!("invalid faults: {e}")))?;
    faults.validate().map_err(|e| ApiError::new(400, "illegal_argument_exception", e))?;
    tracing::info!(?faults, "faults changed");
    *state.faults.lock() = faults.clone();
    Ok(Json(faults))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefuseRequest {
    #[serde(rename = "for", with = "humantime_serde")]
    duration: Duration,
}

async fn refuse_connections(State(state): Shared, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: RefuseRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(400, "illegal_argument_exception", format!("expected {{\"for\": \"5s\"}}: {e}")))?;
    *state.refuse_for.lock() = request.duration;
    state.refuse.notify_one();
    Ok(Json(
        json!({"acknowledged": true, "refusing_for": humantime_serde::re::humantime::format_duration(request.duration).to_string()}),
    ))
}

async fn stats(State(state): Shared) -> Json<Value> {
    let stats = state.stats.lock().clone();
    let cpu = process_cpu_seconds();
    let since_reset = cpu.map(|c| (c - *state.cpu_at_reset.lock()).max(0.0));
    #[allow(clippy::cast_precision_loss)] // a document count fits f64's 53 bits
    let per_doc = since_reset.filter(|_| stats.docs_written > 0).map(|s| s * 1e6 / stats.docs_written as f64);
    let store = state.store.lock();
    let docs: usize = store.indices().values().map(|i| i.docs.len()).sum();
    Json(json!({
        "indices": store.indices().len(), "docs": docs, "bytes_used": store.bytes_used(),
        "memory_limit": store.memory_limit(), "bulk": stats,
        "cpu": {"process_seconds": cpu, "since_reset_seconds": since_reset, "micros_per_doc_written": per_doc}
    }))
}

async fn reset(State(state): Shared) -> Json<Value> {
    state.store.lock().clear();
    *state.stats.lock() = Stats::default();
    *state.cpu_at_reset.lock() = process_cpu_seconds().unwrap_or(0.0);
    *state.faults.lock() = Faults::default();
    Json(json!({"acknowledged": true}))
}

/// The lines of `content` (`content.split(|&b| b == b'\n')`, with memchr's word-at-a-time search).
fn lines_of(content: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', content) {
        lines.push(&content[start..end]);
        start = end + 1;
    }
    lines.push(&content[start..]);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_action_lines_read_as_the_parser_reads_them() {
        let lines: &[&[u8]] = &[
            br#"{"create":{"_index":"jaeger-span-2026-11-30","_id":"abc_def"}}"#,
            br#"{"index":{"_id":"1","_index":"i"}}"#,
            br#"{"create":{"_index":"i"}}"#,
            br#"{"create":{"_id":"x"}}"#,
            br#"{"index":{}}"#,
            br#"{"create":{"_index":"","_id":"x"}}"#,
            "{\"create\":{\"_index\":\"i\",\"_id\":\"\u{e9}t\u{e9}\"}}".as_bytes(),
        ];
        for default in [None, Some("d")] {
            for line in lines {
                let Ok((general, None)) = parse_any_action(line, 1, default) else { continue };
                let plain = parse_plain_action(line, default).expect("plain shape");
                assert_eq!(
                    (plain.op, plain.index, plain.id),
                    (general.op, general.index, general.id),
                    "{}",
                    String::from_utf8_lossy(line)
                );
            }
        }
        // Anything else goes to the parser, for its answer and its errors.
        let others: &[&[u8]] = &[
            br#"{"create":{"_index":"i","_id":""}}"#,
            br#"{"create":{"_index":"i","_id":"a","_id":"b"}}"#,
            br#"{"create":{"_index":"i","_id":"a"b"}}"#,
            br#"{"create":{"_index":"i","_id":"a"}} "#,
            b"{\"create\":{\"_index\":\"i\",\"_id\":\"a\"}}\r",
            br#"{"create": {"_index":"i"}}"#,
            br#"{"create":{"_index":"i","routing":"r"}}"#,
            br#"{"create":{"_index":"i","_id":1}}"#,
            br#"{"create":{"_index":"i"},"x":1}"#,
            br#"{"update":{"_index":"i"}}"#,
            br#"{"create":{}}"#,
            b"{\"create\":{\"_index\":\"\xff\"}}",
        ];
        for line in others {
            assert!(parse_plain_action(line, None).is_none(), "{}", String::from_utf8_lossy(line));
        }
    }
}
