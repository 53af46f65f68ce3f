//! `_search` (and each `_msearch` item): the request body → matching documents → total, sorted and
//! paged hits (with `search_after`), and aggregations, in OpenSearch's answer shape. Called by the
//! `_search`, `_count` and `_msearch` handlers in `api`; pure over a locked [`Store`].

use std::{cmp::Ordering, ops::ControlFlow};

use serde_json::{Map, Value, json};

use crate::{
    aggs::{self, Named},
    error::ApiError,
    mapping::{FieldType, Fields, fielddata_disabled},
    query::{Query, date_millis, resolve, value_text},
    store::Store,
};

/// OpenSearch's default `index.max_result_window`.
pub const MAX_RESULT_WINDOW: usize = 10_000;
/// OpenSearch's default `track_total_hits` bound.
const TRACK_TOTAL_HITS: usize = 10_000;

/// How far the total is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackTotal {
    UpTo(usize),
    Exact,
    Off,
}

/// One sort key.
#[derive(Debug, Clone)]
pub struct SortKey {
    /// `None` is `_doc` (index order).
    pub field: Option<String>,
    pub desc: bool,
}

/// A parsed search body plus the URL parameters that shape the answer.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: Query,
    pub size: usize,
    pub from: usize,
    pub sort: Vec<SortKey>,
    pub search_after: Option<Vec<Value>>,
    pub aggs: Vec<Named>,
    pub track_total: TrackTotal,
    pub terminate_after: Option<usize>,
    /// `rest_total_hits_as_int=true`: `hits.total` is a plain number.
    pub total_as_int: bool,
    /// `_source`: `None` for the whole document, `Some([])` for none, else the included paths.
    pub source: Option<Vec<String>>,
}

/// URL parameters of `_search` / `_count` / `_msearch`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct SearchParams {
    pub size: Option<usize>,
    pub from: Option<usize>,
    pub ignore_unavailable: Option<String>,
    pub allow_no_indices: Option<String>,
    pub rest_total_hits_as_int: Option<String>,
    pub track_total_hits: Option<String>,
    pub max_concurrent_searches: Option<String>,
    pub typed_keys: Option<String>,
}

/// OpenSearch's boolean URL parameter: present without a value or `true` is true.
pub fn flag(v: Option<&str>) -> bool {
    matches!(v, Some("" | "true"))
}

fn parsing(reason: impl Into<String>) -> ApiError {
    ApiError::new(400, "parsing_exception", reason)
}

fn illegal(reason: impl Into<String>) -> ApiError {
    ApiError::new(400, "illegal_argument_exception", reason)
}

fn not_implemented(key: &str) -> ApiError {
    parsing(format!("Unknown key for a START_OBJECT in [{key}] (not implemented by spanline-devstore)"))
}

impl SearchRequest {
    /// Parses a `_search` body (`allow_paging`) or a `_count` body (only `query`).
    pub fn parse(body: &Value, params: &SearchParams, allow_paging: bool) -> Result<Self, ApiError> {
        let obj = body.as_object().ok_or_else(|| parsing("request body must be an object"))?;
        if flag(params.typed_keys.as_deref()) {
            return Err(illegal("[typed_keys] is not implemented by spanline-devstore"));
        }
        let total_as_int = flag(params.rest_total_hits_as_int.as_deref());
        let mut request = SearchRequest {
            query: Query::MatchAll,
            size: params.size.unwrap_or(10),
            from: params.from.unwrap_or(0),
            sort: Vec::new(),
            search_after: None,
            aggs: Vec::new(),
            track_total: match params.track_total_hits.as_deref() {
                None => TrackTotal::UpTo(TRACK_TOTAL_HITS),
                Some(v) => parse_track_total(&json!(v))?,
            },
            terminate_after: None,
            total_as_int,
            source: None,
        };
        let mut track_total_set = params.track_total_hits.is_some();
        for (key, value) in obj {
            let as_usize = || {
                value.as_u64().and_then(|v| usize::try_from(v).ok()).ok_or_else(|| {
                    ApiError::new(400, "parsing_exception", format!("[{key}] must be a non-negative integer"))
                })
            };
            match key.as_str() {
                "query" => request.query = Query::parse(value)?,
                "size" if allow_paging => request.size = as_usize()?,
                "from" if allow_paging => request.from = as_usize()?,
                "sort" if allow_paging => {
                    request.sort = parse_sort(value)?;
                    if request.sort.len() > MAX_SORT_KEYS {
                        return Err(illegal(format!(
                            "[sort] has {} keys, more than [{MAX_SORT_KEYS}], spanline-devstore's limit (OpenSearch has none)",
                            request.sort.len()
                        )));
                    }
                }
                "search_after" if allow_paging => {
                    request.search_after =
                        Some(value.as_array().cloned().ok_or_else(|| parsing("[search_after] must be an array"))?);
                }
                "aggs" | "aggregations" if allow_paging => request.aggs = aggs::parse(value)?,
                "track_total_hits" if allow_paging => {
                    request.track_total = parse_track_total(value)?;
                    track_total_set = true;
                }
                "terminate_after" => request.terminate_after = Some(as_usize()?).filter(|n| *n > 0),
                // `timeout` bounds work the dev store finishes at once; `_source: true` is the default.
                "timeout" if allow_paging => {}
                "_source" if allow_paging => request.source = parse_source(value)?,
                other => return Err(not_implemented(other)),
            }
        }
        if total_as_int {
            // As in OpenSearch's RestSearchAction: the integer form implies an exact count.
            match request.track_total {
                TrackTotal::Exact => {}
                _ if !track_total_set => request.track_total = TrackTotal::Exact,
                TrackTotal::UpTo(n) => {
                    return Err(illegal(format!(
                        "[rest_total_hits_as_int] cannot be used if the tracking of total hits is not accurate, got {n}"
                    )));
                }
                TrackTotal::Off => {
                    return Err(illegal(
                        "[rest_total_hits_as_int] cannot be used if the tracking of total hits is not accurate, got false",
                    ));
                }
            }
        }
        // `from` and `size` may each be up to `usize::MAX`: their sum is checked, never wrapped.
        if request.from.checked_add(request.size).is_none_or(|window| window > MAX_RESULT_WINDOW) {
            #[allow(clippy::cast_lossless)] // usize → u128 is lossless on every target
            let window = request.from as u128 + request.size as u128;
            return Err(illegal(format!(
                "Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}] but was [{window}]. See the scroll api for a more efficient way to request large data sets. This limit can be set by changing the [index.max_result_window] index level setting."
            )));
        }
        if let Some(after) = &request.search_after {
            if request.sort.is_empty() {
                return Err(illegal(
                    "[search_after] requires a [sort] in spanline-devstore (sorting by _score is not implemented)",
                ));
            }
            if after.len() != request.sort.len() {
                return Err(illegal(format!(
                    "search_after has {} value(s) but sort has {}.",
                    after.len(),
                    request.sort.len()
                )));
            }
            if request.from > 0 {
                return Err(illegal("[from] parameter must be set to 0 when [search_after] is used."));
            }
        }
        Ok(request)
    }
}

/// `_source`: `true`, `false`, a path, a list of paths, or `{"includes": [...]}`; exact dotted
/// paths only (wildcards and `excludes` are refused).
fn parse_source(v: &Value) -> Result<Option<Vec<String>>, ApiError> {
    let paths = |v: &Value| -> Result<Vec<String>, ApiError> {
        let list: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        list.into_iter()
            .map(|p| match p.as_str() {
                Some(p) if !p.contains('*') => Ok(p.to_owned()),
                _ => Err(parsing(format!(
                    "[_source] path [{p}] is not implemented by spanline-devstore (exact paths only)"
                ))),
            })
            .collect()
    };
    match v {
        Value::Bool(true) => Ok(None),
        Value::Bool(false) => Ok(Some(Vec::new())),
        Value::Object(o) => {
            if let Some(other) = o.keys().find(|k| !matches!(k.as_str(), "includes" | "include")) {
                return Err(parsing(format!("[_source] [{other}] is not implemented by spanline-devstore")));
            }
            o.get("includes").or_else(|| o.get("include")).map_or(Ok(None), |p| paths(p).map(Some))
        }
        other => paths(other).map(Some),
    }
}

/// The parts of `source` at the `include` paths (inside arrays too), as OpenSearch's source
/// filtering keeps them.
fn filter_source(source: &Value, prefix: &str, include: &[String]) -> Option<Value> {
    match source {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                if include.contains(&path) {
                    out.insert(key.clone(), value.clone());
                } else if include.iter().any(|p| p.strip_prefix(path.as_str()).is_some_and(|r| r.starts_with('.')))
                    && let Some(inner) = filter_source(value, &path, include)
                {
                    out.insert(key.clone(), inner);
                }
            }
            (!out.is_empty() || prefix.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let kept: Vec<Value> = items.iter().filter_map(|i| filter_source(i, prefix, include)).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        _ => None,
    }
}

fn parse_track_total(v: &Value) -> Result<TrackTotal, ApiError> {
    match v {
        Value::Bool(true) => Ok(TrackTotal::Exact),
        Value::Bool(false) => Ok(TrackTotal::Off),
        Value::String(s) if s == "true" => Ok(TrackTotal::Exact),
        Value::String(s) if s == "false" => Ok(TrackTotal::Off),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(TrackTotal::UpTo)
            .ok_or_else(|| illegal("[track_total_hits] must be positive, true or false")),
        Value::String(s) => s
            .parse::<usize>()
            .map(TrackTotal::UpTo)
            .map_err(|_| illegal(format!("[track_total_hits] must be positive, true or false, got [{s}]"))),
        _ => Err(illegal("[track_total_hits] must be positive, true or false")),
    }
}

/// `"f"`, `{"f": "desc"}`, `{"f": {"order": "desc"}}`, or a list of these.
fn parse_sort(v: &Value) -> Result<Vec<SortKey>, ApiError> {
    let items: Vec<&Value> = match v {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::String(field) => out.push(sort_key(field, None)?),
            Value::Object(map) => {
                for (field, spec) in map {
                    let order = match spec {
                        Value::String(order) => Some(order.as_str()),
                        Value::Object(options) => {
                            if let Some(other) = options.keys().find(|k| k.as_str() != "order") {
                                return Err(parsing(format!(
                                    "[{field}] sort option [{other}] is not implemented by spanline-devstore"
                                )));
                            }
                            match options.get("order") {
                                None => None,
                                Some(Value::String(o)) => Some(o.as_str()),
                                Some(other) => {
                                    return Err(parsing(format!("[order] must be asc or desc, got [{other}]")));
                                }
                            }
                        }
                        other => return Err(parsing(format!("malformed sort for [{field}]: [{other}]"))),
                    };
                    out.push(sort_key(field, order)?);
                }
            }
            other => return Err(parsing(format!("malformed sort: [{other}]"))),
        }
    }
    Ok(out)
}

fn sort_key(field: &str, order: Option<&str>) -> Result<SortKey, ApiError> {
    let desc = match order.map(str::to_ascii_lowercase).as_deref() {
        None => false,
        Some("asc") => false,
        Some("desc") => true,
        Some(other) => return Err(illegal(format!("Unknown SortOrder [{other}]"))),
    };
    match field {
        "_doc" => Ok(SortKey { field: None, desc }),
        "_score" | "_id" | "_seq_no" | "_shard_doc" => {
            Err(parsing(format!("sorting on [{field}] is not implemented by spanline-devstore")))
        }
        f => Ok(SortKey { field: Some(f.to_owned()), desc }),
    }
}

/// A sort value, comparable across documents.
#[derive(Debug, Clone)]
enum SortVal {
    Num(f64, Value),
    Text(String),
    Missing,
}

impl SortVal {
    fn json(&self) -> Value {
        match self {
            SortVal::Num(_, v) => v.clone(),
            SortVal::Text(t) => json!(t),
            SortVal::Missing => Value::Null,
        }
    }

    /// The key a document without a value sorts by on a numeric (long/date) field: as in
    /// OpenSearch, the type's extreme itself (`i64::MAX` ascending, `i64::MIN` descending), so it
    /// sorts last, shows as that number, and a `search_after` holding that number pages past it.
    /// A missing keyword stays `Missing` (shown as null, sorted last).
    fn or_numeric_extreme(self, numeric: bool, desc: bool) -> SortVal {
        match self {
            SortVal::Missing if numeric => {
                let extreme = if desc { i64::MIN } else { i64::MAX };
                #[allow(clippy::cast_precision_loss)] // ±2^63 is exact in f64
                SortVal::Num(extreme as f64, json!(extreme))
            }
            other => other,
        }
    }

    fn from_after(v: &Value, numeric: bool) -> Result<SortVal, ApiError> {
        match v {
            Value::Null => Ok(SortVal::Missing),
            Value::Number(n) => Ok(SortVal::Num(n.as_f64().unwrap_or(0.0), v.clone())),
            Value::String(s) if numeric => s
                .parse::<f64>()
                .map(|x| SortVal::Num(x, v.clone()))
                .map_err(|_| illegal(format!("Failed to parse search_after value [{s}] as a number"))),
            Value::String(s) => Ok(SortVal::Text(s.clone())),
            other => Err(illegal(format!("search_after value [{other}] is not a number, string or null"))),
        }
    }
}

/// Ascending comparison, missing last whatever the order (OpenSearch's `missing: _last`).
fn cmp_vals(a: &SortVal, b: &SortVal, desc: bool) -> Ordering {
    let ord = match (a, b) {
        (SortVal::Missing, SortVal::Missing) => return Ordering::Equal,
        (SortVal::Missing, _) => return Ordering::Greater,
        (_, SortVal::Missing) => return Ordering::Less,
        (SortVal::Num(x, _), SortVal::Num(y, _)) => x.total_cmp(y),
        (SortVal::Text(x), SortVal::Text(y)) => x.cmp(y),
        (SortVal::Num(..), SortVal::Text(_)) => Ordering::Less,
        (SortVal::Text(_), SortVal::Num(..)) => Ordering::Greater,
    };
    if desc { ord.reverse() } else { ord }
}

/// The value a document sorts by on `field`: with several values, the smallest for ascending and
/// the largest for descending (OpenSearch's default `mode`).
fn doc_sort_val(source: &Value, field: &str, ty: Option<FieldType>, desc: bool) -> SortVal {
    let mut best: Option<SortVal> = None;
    for v in resolve(source, field) {
        let candidate = match (ty, v) {
            (Some(FieldType::Date { .. }), v) => match date_millis(v) {
                #[allow(clippy::cast_possible_truncation)]
                Some(ms) => SortVal::Num(ms, json!(ms as i64)),
                None => continue,
            },
            (Some(FieldType::Numeric), Value::String(s)) => match s.parse::<f64>() {
                Ok(x) => SortVal::Num(x, v.clone()),
                Err(_) => continue,
            },
            (Some(FieldType::Keyword | FieldType::Text), v) => SortVal::Text(value_text(v)),
            (_, Value::Number(n)) => SortVal::Num(n.as_f64().unwrap_or(0.0), v.clone()),
            (_, Value::Null) => continue,
            (_, v) => SortVal::Text(value_text(v)),
        };
        best = Some(match best {
            Some(b) if cmp_vals(&b, &candidate, desc) != Ordering::Greater => b,
            _ => candidate,
        });
    }
    best.unwrap_or(SortVal::Missing)
}

/// One matching document. Only its text is kept: the parsed document is dropped once the query,
/// sort values and aggregations have seen it, and parsed again only for the hits shown.
struct Hit<'a> {
    index: &'a str,
    id: &'a str,
    visible: &'a str,
    sort: Vec<SortVal>,
}

/// The most sort keys one search may have: a dev-store bound (OpenSearch has none), since every
/// key costs a value per matching document and a comparison per pair compared.
pub const MAX_SORT_KEYS: usize = 64;

/// Compares two documents' sort values key by key (the first unequal key decides).
fn cmp_sort(a: &[SortVal], b: &[SortVal], keys: &[SortKey]) -> Ordering {
    keys.iter()
        .zip(a.iter().zip(b))
        .map(|(k, (x, y))| cmp_vals(x, y, k.desc))
        .find(|o| *o != Ordering::Equal)
        .unwrap_or(Ordering::Equal)
}

/// How [`for_each_match`] finds the matching documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Each index's postings give the candidates, each checked with the query.
    Postings,
    /// Every document is checked: what the postings must always agree with (the equivalence
    /// tests run both).
    #[cfg_attr(not(test), allow(dead_code))]
    Scan,
}

/// Calls `f(index, id, visible text, indexed document)` for every searchable document of `names`
/// matching `query`, in index name order and then insertion order, until `f` breaks. The document
/// passed is what OpenSearch indexed (see [`Fields::indexed_view`]); `_source` is the text. Only
/// the postings' candidates are read (a superset of the matches: see [`crate::postings`]), and
/// under `match_all` with `need_doc` false nothing is parsed (`f` gets `Value::Null`).
fn for_each_match<'a>(
    store: &'a Store,
    names: &'a [String],
    fields: &Fields,
    query: &Query,
    plan: Plan,
    need_doc: bool,
    mut f: impl FnMut(&'a str, &'a str, &'a str, Value) -> ControlFlow<()>,
) {
    let match_all = matches!(query, Query::MatchAll);
    let mut visit = |name: &'a str, id: &'a str, doc: &'a crate::store::Doc| -> ControlFlow<()> {
        let Some(visible) = &doc.visible else { return ControlFlow::Continue(()) };
        if match_all && !need_doc {
            return f(name, id, visible, Value::Null);
        }
        let Ok(mut source) = serde_json::from_str::<Value>(visible) else { return ControlFlow::Continue(()) };
        fields.strip_ignored_in_place(&mut source);
        if query.matches(id, &source) {
            return f(name, id, visible, source);
        }
        ControlFlow::Continue(())
    };
    for name in names {
        let Some(index) = store.index(name) else { continue };
        let candidates = match plan {
            Plan::Postings if !match_all => index.postings().candidates(query),
            _ => None,
        };
        match candidates {
            Some(positions) => {
                for pos in positions {
                    let Some((id, doc)) = index.docs.get_index(pos as usize) else { continue };
                    if visit(name, id, doc).is_break() {
                        return;
                    }
                }
            }
            None => {
                for (id, doc) in &index.docs {
                    if visit(name, id, doc).is_break() {
                        return;
                    }
                }
            }
        }
    }
}

/// Runs `request` over the indices `names` of `store`; returns the `_search` answer without `took`.
pub fn run(store: &Store, names: &[String], request: &SearchRequest) -> Result<Map<String, Value>, ApiError> {
    run_with(store, names, request, Plan::Postings)
}

pub(crate) fn run_with(
    store: &Store,
    names: &[String],
    request: &SearchRequest,
    plan: Plan,
) -> Result<Map<String, Value>, ApiError> {
    let fields = Fields::from_mappings(names.iter().filter_map(|n| store.index(n)).map(|i| &i.mappings));
    request.query.validate(&fields)?;
    aggs::validate(&request.aggs, &fields)?;
    let mut unmapped: Vec<&str> = Vec::new();
    for field in request.sort.iter().filter_map(|k| k.field.as_deref()) {
        match fields.get(field) {
            Some(FieldType::Text) => return Err(fielddata_disabled(field)),
            None => unmapped.push(field),
            Some(_) => {}
        }
        if let Some(path) = fields.nested_parent(field) {
            return Err(parsing(format!(
                "sorting on a field inside nested [{path}] is not implemented by spanline-devstore"
            )));
        }
    }
    if let Some(field) = field_no_document_has(store, names, unmapped) {
        return Err(ApiError::new(
            400,
            "query_shard_exception",
            format!("No mapping found for [{field}] in order to sort on"),
        ));
    }

    // Sorting and aggregations need every match; otherwise only the requested page is kept.
    let keep_all = !request.sort.is_empty() || !request.aggs.is_empty();
    let mut hits: Vec<Hit<'_>> = Vec::new();
    // Aggregations see every match's indexed document; kept only when there are aggregations.
    let mut agg_docs: Vec<Value> = Vec::new();
    let mut total = 0usize;
    let mut terminated_early = false;
    for_each_match(store, names, &fields, &request.query, plan, keep_all, |index, id, visible, doc| {
        if request.terminate_after.is_some_and(|n| total >= n) {
            terminated_early = true;
            return ControlFlow::Break(());
        }
        total += 1;
        if !keep_all && (total <= request.from || hits.len() >= request.size) {
            return ControlFlow::Continue(());
        }
        let sort = request
            .sort
            .iter()
            .map(|k| match &k.field {
                Some(f) => doc_sort_val(&doc, f, fields.get(f), k.desc)
                    .or_numeric_extreme(fields.get(f).is_some_and(FieldType::is_numeric), k.desc),
                #[allow(clippy::cast_precision_loss)]
                None => SortVal::Num(hits.len() as f64, json!(hits.len())),
            })
            .collect();
        hits.push(Hit { index, id, visible, sort });
        if !request.aggs.is_empty() {
            agg_docs.push(doc);
        }
        ControlFlow::Continue(())
    });
    let aggregations = if request.aggs.is_empty() {
        None
    } else {
        Some(aggs::run(&request.aggs, &agg_docs.iter().collect::<Vec<_>>(), &fields)?)
    };

    let sorted = !request.sort.is_empty();
    if sorted {
        // Stable, so ties keep index order, as one shard's doc ids would.
        hits.sort_by(|a, b| cmp_sort(&a.sort, &b.sort, &request.sort));
    }
    if let Some(after) = &request.search_after {
        let after: Vec<SortVal> = after
            .iter()
            .zip(&request.sort)
            .map(|(v, k)| {
                let numeric = k.field.as_deref().and_then(|f| fields.get(f)).is_some_and(FieldType::is_numeric);
                SortVal::from_after(v, numeric || k.field.is_none())
            })
            .collect::<Result<_, _>>()?;
        hits.retain(|h| cmp_sort(&h.sort, &after, &request.sort) == Ordering::Greater);
    }

    let shown: Vec<Value> = hits
        .iter()
        .skip(if keep_all { request.from } else { 0 })
        .take(request.size)
        .map(|h| {
            // The text parsed when the document matched, so it parses again.
            let source: Value = serde_json::from_str(h.visible).unwrap_or_default();
            let mut hit = Map::new();
            hit.insert("_index".into(), json!(h.index));
            hit.insert("_id".into(), json!(h.id));
            // OpenSearch does not score when sorting on fields: `_score` is null.
            hit.insert("_score".into(), if sorted { Value::Null } else { json!(1.0) });
            match &request.source {
                None => {
                    hit.insert("_source".into(), source);
                }
                Some(paths) if paths.is_empty() => {}
                Some(paths) => {
                    hit.insert("_source".into(), filter_source(&source, "", paths).unwrap_or_else(|| json!({})));
                }
            }
            if sorted {
                hit.insert("sort".into(), h.sort.iter().map(SortVal::json).collect());
            }
            Value::Object(hit)
        })
        .collect();

    let max_score = if sorted || shown.is_empty() { Value::Null } else { json!(1.0) };
    let mut hits_obj = Map::new();
    match (request.track_total, request.total_as_int) {
        (_, true) => {
            hits_obj.insert("total".into(), json!(total));
        }
        (TrackTotal::Off, false) => {}
        (TrackTotal::Exact, false) => {
            hits_obj.insert("total".into(), json!({"value": total, "relation": "eq"}));
        }
        (TrackTotal::UpTo(limit), false) => {
            let (value, relation) = if total > limit { (limit, "gte") } else { (total, "eq") };
            hits_obj.insert("total".into(), json!({"value": value, "relation": relation}));
        }
    }
    hits_obj.insert("max_score".into(), max_score);
    hits_obj.insert("hits".into(), Value::Array(shown));

    let n = names.len();
    let mut out = Map::new();
    out.insert("timed_out".into(), json!(false));
    if request.terminate_after.is_some() {
        out.insert("terminated_early".into(), json!(terminated_early));
    }
    out.insert("_shards".into(), json!({"total": n, "successful": n, "skipped": 0, "failed": 0}));
    out.insert("hits".into(), Value::Object(hits_obj));
    if let Some(aggregations) = aggregations {
        out.insert("aggregations".into(), aggregations);
    }
    Ok(out)
}

/// The first of `fields` that no document of `names` has (a dynamically mapped field exists once a
/// document carried it, mapped or not). One pass over the documents, whatever the number of fields.
fn field_no_document_has<'f>(store: &Store, names: &[String], mut fields: Vec<&'f str>) -> Option<&'f str> {
    if fields.is_empty() {
        return None;
    }
    for doc in names.iter().filter_map(|n| store.index(n)).flat_map(|index| index.docs.values()) {
        let Ok(source) = serde_json::from_str::<Value>(&doc.source) else { continue };
        fields.retain(|field| !resolve(&source, field).iter().any(|v| !v.is_null()));
        if fields.is_empty() {
            return None;
        }
    }
    fields.first().copied()
}

/// Counts the documents of `names` matching `query` (`_count`).
pub fn count(store: &Store, names: &[String], query: &Query) -> Result<usize, ApiError> {
    count_with(store, names, query, Plan::Postings)
}

pub(crate) fn count_with(store: &Store, names: &[String], query: &Query, plan: Plan) -> Result<usize, ApiError> {
    if matches!(query, Query::MatchAll) {
        return Ok(names.iter().filter_map(|name| store.index(name)).map(|index| index.visible_count()).sum());
    }
    let fields = Fields::from_mappings(names.iter().filter_map(|n| store.index(n)).map(|i| &i.mappings));
    query.validate(&fields)?;
    let mut total = 0usize;
    for_each_match(store, names, &fields, query, plan, false, |_, _, _, _| {
        total += 1;
        ControlFlow::Continue(())
    });
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_are_bounded() {
        let sort = |n: usize| json!({"sort": (0..n).map(|i| format!("f{i}")).collect::<Vec<_>>()});
        let params = SearchParams::default();
        let request = SearchRequest::parse(&sort(MAX_SORT_KEYS), &params, true).expect("at the limit");
        assert_eq!(request.sort.len(), MAX_SORT_KEYS);
        let err = SearchRequest::parse(&sort(MAX_SORT_KEYS + 1), &params, true).expect_err("over the limit");
        assert_eq!((err.status, err.kind.as_str()), (400, "illegal_argument_exception"));
        assert_eq!(err.reason, "[sort] has 65 keys, more than [64], spanline-devstore's limit (OpenSearch has none)");
    }

    #[test]
    fn sort_values_compare_key_by_key() {
        let keys = [SortKey { field: None, desc: false }, SortKey { field: None, desc: true }];
        let v = |a: f64, b: f64| [SortVal::Num(a, json!(a)), SortVal::Num(b, json!(b))];
        assert_eq!(cmp_sort(&v(1.0, 5.0), &v(2.0, 0.0), &keys), Ordering::Less);
        assert_eq!(cmp_sort(&v(1.0, 5.0), &v(1.0, 0.0), &keys), Ordering::Less, "second key descending");
        assert_eq!(cmp_sort(&v(1.0, 5.0), &v(1.0, 5.0), &keys), Ordering::Equal);
    }
}

/// The postings only ever narrow: on random documents, overwrites, refreshes and queries, a search
/// planned with them answers exactly as a scan of every document (hits, order, totals, sort values,
/// aggregations, errors), and so does `_count`.
#[cfg(test)]
mod equivalence {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::store::WriteOp;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!("a")),
            Just(json!("b")),
            Just(json!("ab")),
            Just(json!("abcdef")),
            Just(json!("200")),
            Just(json!("2e2")),
            Just(json!(" 7")),
            Just(json!("NaN")),
            Just(json!("2026-11-30T00:00:00Z")),
            Just(json!(200)),
            Just(json!(200.0)),
            Just(json!(-0.0)),
            Just(json!(0)),
            Just(json!(7)),
            Just(json!(1.5)),
            Just(json!(true)),
            Just(Value::Null),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            6 => scalar(),
            1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::Array),
            1 => scalar().prop_map(|v| json!({"x": v})),
        ]
    }

    fn doc() -> impl Strategy<Value = Value> {
        let tag = (value(), value()).prop_map(|(k, v)| json!({"key": k, "value": v}));
        (
            prop::option::of(value()),
            prop::option::of(value()),
            prop::option::of(value()),
            prop::collection::vec(tag, 0..3),
            prop::option::of(value()),
            any::<bool>(),
            prop::option::of(value()),
        )
            .prop_map(|(trace, n, d, tags, service, dotted, unmapped)| {
                let mut doc = Map::new();
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        doc.insert(k.to_owned(), v);
                    }
                };
                put("traceID", trace);
                put("n", n);
                put("d", d);
                put("unmapped", unmapped);
                put("tags", Some(Value::Array(tags)));
                if dotted {
                    put("process.serviceName", service);
                } else {
                    put("process", service.map(|s| json!({"serviceName": s})));
                }
                Value::Object(doc)
            })
    }

    fn field() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["traceID", "n", "d", "tags.key", "tags.value", "process.serviceName", "unmapped"])
    }

    fn leaf() -> impl Strategy<Value = Value> {
        let bound = prop_oneof![scalar(), Just(json!(100)), Just(json!(250)), Just(json!("2026-01-01T00:00:00Z"))]
            .prop_filter("not null", |v| !v.is_null());
        prop_oneof![
            (field(), scalar()).prop_map(|(f, v)| json!({"term": {f: v}})),
            (field(), prop::collection::vec(scalar(), 0..3)).prop_map(|(f, v)| json!({"terms": {f: v}})),
            (field(), prop::sample::select(vec!["gt", "gte", "lt", "lte"]), bound.clone())
                .prop_map(|(f, b, v)| json!({"range": {f: {b: v}}})),
            (field(), bound.clone(), bound).prop_map(|(f, lo, hi)| json!({"range": {f: {"gte": lo, "lt": hi}}})),
            field().prop_map(|f| json!({"exists": {"field": f}})),
            field().prop_map(|f| json!({"regexp": {f: "a.*"}})),
            Just(json!({"ids": {"values": ["1", "3"]}})),
            Just(json!({"match_all": {}})),
        ]
    }

    fn query() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                (
                    prop::collection::vec(inner.clone(), 0..3),
                    prop::collection::vec(inner.clone(), 0..3),
                    prop::collection::vec(inner.clone(), 0..2),
                    prop::option::of(0usize..3)
                )
                    .prop_map(|(must, should, must_not, min)| {
                        let mut b = json!({"filter": must, "should": should, "must_not": must_not});
                        if let Some(min) = min {
                            b["minimum_should_match"] = json!(min);
                        }
                        json!({"bool": b})
                    }),
                inner.prop_map(|q| json!({"nested": {"path": "tags", "query": q}})),
            ]
        })
    }

    fn store(writes: &[(u8, bool, Value)], refresh_every: usize) -> Store {
        let mut store = Store::new(u64::MAX);
        let kw = json!({"type": "keyword", "ignore_above": 4});
        store
            .create_index(
                "i",
                &json!({"mappings": {"properties": {
                    "traceID": kw, "n": {"type": "long"}, "d": {"type": "date"},
                    "tags": {"type": "nested", "properties": {"key": kw, "value": kw}},
                    "process": {"properties": {"serviceName": {"type": "keyword"}}}
                }}}),
            )
            .expect("index");
        for (n, (id, overwrite, doc)) in writes.iter().enumerate() {
            let op = if *overwrite { WriteOp::Index } else { WriteOp::Create };
            // Every other write brings the values recorded while validating, as `_bulk` does;
            // the others are walked at refresh.
            let text = doc.to_string();
            let recorded = store
                .index("i")
                .filter(|_| n % 2 == 0)
                .and_then(|index| crate::postings::record(&text, index.postings().paths(), &mut Vec::new()).ok())
                .map(|(_, recorded)| recorded);
            let _ = store.write(op, "i", &id.to_string(), Arc::from(text), recorded);
            if n % refresh_every == refresh_every - 1 {
                store.refresh_all();
            }
        }
        store
    }

    type Answer = Result<Value, (u16, String, String)>;

    fn answer(r: Result<Map<String, Value>, ApiError>) -> Answer {
        r.map(Value::Object).map_err(|e| (e.status, e.kind, e.reason))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn postings_answer_as_a_scan(
            writes in prop::collection::vec((0u8..12, any::<bool>(), doc()), 1..25),
            refresh_every in 1usize..6,
            query in query(),
            shape in 0u8..3,
        ) {
            let store = store(&writes, refresh_every);
            let names = vec!["i".to_owned()];
            let body = match shape {
                0 => json!({"query": query, "size": 100, "track_total_hits": true}),
                1 => json!({"query": query, "size": 3, "from": 1, "sort": [{"n": "desc"}]}),
                _ => json!({"query": query, "size": 0, "aggs": {"t": {"terms": {"field": "traceID"},
                    "aggs": {"m": {"max": {"field": "n"}}}}}}),
            };
            let request = SearchRequest::parse(&body, &SearchParams::default(), true);
            prop_assume!(request.is_ok());
            let request = request.expect("parsed");
            let planned = answer(run_with(&store, &names, &request, Plan::Postings));
            let scanned = answer(run_with(&store, &names, &request, Plan::Scan));
            prop_assert_eq!(planned, scanned);
            let planned = count_with(&store, &names, &request.query, Plan::Postings).map_err(|e| e.reason);
            let scanned = count_with(&store, &names, &request.query, Plan::Scan).map_err(|e| e.reason);
            prop_assert_eq!(planned, scanned);
        }
    }
}
