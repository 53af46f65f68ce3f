//! The aggregations Jaeger Query's span reader sends: `terms` (with `size`, `order` by `_count`,
//! `_key` or a single-value sub-aggregation, `min_doc_count` ≥ 1) holding sub-aggregations, and the
//! `max` / `min` metrics, answered in OpenSearch's shape. Any other type or option is a 400 that
//! names it, never a silently different answer.

use std::{
    cmp::Ordering,
    collections::{HashMap, HashSet},
};

use serde_json::{Map, Value, json};

use crate::{
    error::ApiError,
    mapping::{FieldType, Fields, fielddata_disabled},
    query::{date_millis, resolve, value_text},
};

/// One named aggregation of a request.
#[derive(Debug, Clone)]
pub struct Named {
    pub name: String,
    pub agg: Agg,
}

/// A parsed aggregation.
#[derive(Debug, Clone)]
pub enum Agg {
    Terms { field: String, size: usize, order: Vec<(OrderKey, bool)>, subs: Vec<Named> },
    Max { field: String },
    Min { field: String },
}

/// What `terms` buckets are ordered by; the bool is "descending".
#[derive(Debug, Clone)]
pub enum OrderKey {
    Count,
    Key,
    /// A single-value metric sub-aggregation, by name.
    Sub(String),
}

fn parsing(reason: impl Into<String>) -> ApiError {
    ApiError::new(400, "parsing_exception", reason)
}

fn x_content(reason: impl Into<String>) -> ApiError {
    ApiError::new(400, "x_content_parse_exception", reason)
}

/// Parses the value of `aggs` / `aggregations`.
pub fn parse(v: &Value) -> Result<Vec<Named>, ApiError> {
    let obj = v.as_object().ok_or_else(|| parsing("Expected [START_OBJECT] under [aggregations]"))?;
    obj.iter().map(|(name, spec)| Ok(Named { name: name.clone(), agg: parse_one(name, spec)? })).collect()
}

fn parse_one(name: &str, spec: &Value) -> Result<Agg, ApiError> {
    let obj = spec
        .as_object()
        .ok_or_else(|| parsing(format!("Expected [START_OBJECT] under [{name}], but got a different token")))?;
    let mut kind = None;
    let mut subs = Vec::new();
    for (key, value) in obj {
        match key.as_str() {
            "aggs" | "aggregations" => subs = parse(value)?,
            "meta" => {}
            other if kind.is_none() => kind = Some((other, value)),
            other => {
                return Err(parsing(format!(
                    "Found two aggregation type definitions in [{name}]: [{}] and [{other}]",
                    kind.map_or("", |(k, _)| k)
                )));
            }
        }
    }
    let (kind, body) = kind.ok_or_else(|| parsing(format!("Missing definition for aggregation [{name}]")))?;
    let body = body.as_object().ok_or_else(|| parsing(format!("[{kind}] aggregation [{name}] must be an object")))?;
    let field = || {
        body.get("field").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
            x_content(format!(
                "[{kind}] aggregation [{name}] needs a [field] (scripts are not implemented by spanline-devstore)"
            ))
        })
    };
    match kind {
        "terms" => {
            let mut size = 10usize;
            let mut order = Vec::new();
            for (key, value) in body {
                match key.as_str() {
                    "field" | "shard_size" | "execution_hint" | "collect_mode" => {}
                    "size" => {
                        size = value
                            .as_u64()
                            .and_then(|s| usize::try_from(s).ok())
                            .ok_or_else(|| x_content(format!("[terms] failed to parse field [size] in [{name}]")))?;
                        if size == 0 {
                            return Err(illegal(format!("[size] must be greater than 0. Found [0] in [{name}]")));
                        }
                    }
                    // Every bucket holds at least one document here, so 1 is the only value
                    // that changes nothing; 0 (empty buckets) and above 1 are not implemented.
                    "min_doc_count" if value.as_u64() == Some(1) => {}
                    "min_doc_count" => {
                        return Err(illegal(format!(
                            "[terms] min_doc_count [{value}] in [{name}] is not implemented by spanline-devstore (only 1)"
                        )));
                    }
                    "order" => order = parse_order(name, value)?,
                    other => {
                        return Err(x_content(format!(
                            "[terms] unknown field [{other}] (or not implemented by spanline-devstore) in [{name}]"
                        )));
                    }
                }
            }
            for (key, _) in &order {
                if let OrderKey::Sub(sub) = key {
                    let single_value =
                        subs.iter().any(|s| &s.name == sub && matches!(s.agg, Agg::Max { .. } | Agg::Min { .. }));
                    if !single_value {
                        return Err(ApiError::new(
                            400,
                            "aggregation_execution_exception",
                            format!(
                                "Invalid aggregation order path [{sub}]. Unknown aggregation [{sub}] (spanline-devstore orders by max/min sub-aggregations only)"
                            ),
                        ));
                    }
                }
            }
            Ok(Agg::Terms { field: field()?, size, order, subs })
        }
        "max" | "min" => {
            if let Some(other) = body.keys().find(|k| k.as_str() != "field") {
                return Err(x_content(format!(
                    "[{kind}] unknown field [{other}] (or not implemented by spanline-devstore) in [{name}]"
                )));
            }
            if !subs.is_empty() {
                return Err(ApiError::new(
                    400,
                    "aggregation_initialization_exception",
                    format!("Aggregator [{name}] of type [{kind}] cannot accept sub-aggregations"),
                ));
            }
            let field = field()?;
            Ok(if kind == "max" { Agg::Max { field } } else { Agg::Min { field } })
        }
        other => Err(parsing(format!(
            "Unknown aggregation type [{other}] (spanline-devstore implements terms, max and min)"
        ))),
    }
}

fn illegal(reason: impl Into<String>) -> ApiError {
    ApiError::new(400, "illegal_argument_exception", reason)
}

/// `{"_count": "desc"}` or a list of such objects.
fn parse_order(name: &str, v: &Value) -> Result<Vec<(OrderKey, bool)>, ApiError> {
    let items: Vec<&Value> = match v {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for item in items {
        let obj = item.as_object().ok_or_else(|| x_content(format!("[terms] invalid [order] in [{name}]")))?;
        for (key, dir) in obj {
            let desc = match dir.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("desc") => true,
                Some("asc") => false,
                _ => {
                    return Err(parsing(format!(
                        "Unknown terms order direction [{dir}] in terms aggregation [{name}]"
                    )));
                }
            };
            let key = match key.as_str() {
                "_count" => OrderKey::Count,
                "_key" | "_term" => OrderKey::Key,
                sub => OrderKey::Sub(sub.strip_suffix(".value").unwrap_or(sub).to_owned()),
            };
            out.push((key, desc));
        }
    }
    Ok(out)
}

/// A computed single value (max/min), `None` when no document had the field.
fn metric(field: &str, docs: &[&Value], fields: &Fields, want_max: bool) -> Option<f64> {
    let ty = fields.get(field);
    let mut best: Option<f64> = None;
    for doc in docs {
        for v in resolve(doc, field) {
            let x = match ty {
                Some(FieldType::Date { .. }) => date_millis(v),
                _ => v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())),
            };
            if let Some(x) = x {
                best = Some(match best {
                    Some(b) if (want_max && b >= x) || (!want_max && b <= x) => b,
                    _ => x,
                });
            }
        }
    }
    best
}

fn metric_json(value: Option<f64>, field: &str, fields: &Fields) -> Value {
    let mut out = Map::new();
    out.insert("value".into(), value.map_or(Value::Null, |v| json!(v)));
    if let (Some(v), Some(FieldType::Date { epoch_millis })) = (value, fields.get(field)) {
        out.insert("value_as_string".into(), json!(date_text(v, epoch_millis)));
    }
    Value::Object(out)
}

/// How OpenSearch prints a date for `value_as_string` / `key_as_string`: the field's format if it
/// is `epoch_millis`, ISO 8601 in UTC otherwise.
fn date_text(millis: f64, epoch_millis: bool) -> String {
    #[allow(clippy::cast_possible_truncation)] // a date's millis fit i64
    let ms = millis as i64;
    if epoch_millis {
        return ms.to_string();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// OpenSearch's default `search.max_buckets`: the most buckets one search may create.
pub const MAX_BUCKETS: usize = 65_535;

/// Counts the buckets a search creates, as OpenSearch's `MultiBucketConsumer` does: one per
/// bucket built, across every aggregation and level of the request; past [`MAX_BUCKETS`] the
/// search fails with `too_many_buckets_exception` (503, OpenSearch's status for it).
#[derive(Debug, Default)]
struct BucketCount(usize);

impl BucketCount {
    fn add_one(&mut self) -> Result<(), ApiError> {
        self.0 += 1;
        if self.0 > MAX_BUCKETS {
            return Err(ApiError::new(
                503,
                "too_many_buckets_exception",
                format!(
                    "Trying to create too many buckets. Must be less than or equal to: [{MAX_BUCKETS}] but was [{}]. This limit can be set by changing the [search.max_buckets] cluster level setting.",
                    self.0
                ),
            )
            .with("max_buckets", MAX_BUCKETS));
        }
        Ok(())
    }
}

/// Refuses what OpenSearch refuses before collecting, whatever the documents: `terms`, `max` and
/// `min` on a `text` field (fielddata is disabled), at any level.
pub fn validate(aggs: &[Named], fields: &Fields) -> Result<(), ApiError> {
    for Named { agg, .. } in aggs {
        let (Agg::Terms { field, .. } | Agg::Max { field } | Agg::Min { field }) = agg;
        if fields.get(field) == Some(FieldType::Text) {
            return Err(fielddata_disabled(field));
        }
        if let Agg::Terms { subs, .. } = agg {
            validate(subs, fields)?;
        }
    }
    Ok(())
}

/// Runs `aggs` over `docs` (the sources matching the query) and returns the `aggregations` object.
pub fn run(aggs: &[Named], docs: &[&Value], fields: &Fields) -> Result<Value, ApiError> {
    run_counted(aggs, docs, fields, &mut BucketCount::default())
}

fn run_counted(aggs: &[Named], docs: &[&Value], fields: &Fields, count: &mut BucketCount) -> Result<Value, ApiError> {
    let mut out = Map::new();
    for Named { name, agg } in aggs {
        out.insert(name.clone(), run_one(agg, docs, fields, count)?);
    }
    Ok(Value::Object(out))
}

/// A bucket key: numbers for numeric fields, text otherwise.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Num(f64),
    Text(String),
}

/// `Key` made hashable (floats by their bits), for grouping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HashKey {
    Num(u64),
    Text(String),
}

impl Key {
    fn hash_key(&self) -> HashKey {
        match self {
            Key::Num(x) => HashKey::Num(x.to_bits()),
            Key::Text(t) => HashKey::Text(t.clone()),
        }
    }

    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Num(a), Key::Num(b)) => a.total_cmp(b),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            (Key::Num(_), Key::Text(_)) => Ordering::Less,
            (Key::Text(_), Key::Num(_)) => Ordering::Greater,
        }
    }
}

fn run_one(agg: &Agg, docs: &[&Value], fields: &Fields, count: &mut BucketCount) -> Result<Value, ApiError> {
    match agg {
        Agg::Max { field } => Ok(metric_json(metric(field, docs, fields, true), field, fields)),
        Agg::Min { field } => Ok(metric_json(metric(field, docs, fields, false), field, fields)),
        Agg::Terms { field, size, order, subs } => {
            if let Some(path) = fields.nested_parent(field) {
                return Err(illegal(format!(
                    "[terms] on [{field}] inside nested [{path}] needs a nested aggregation, which spanline-devstore does not implement"
                )));
            }
            let ty = fields.get(field);
            // Each document counts once per distinct value, as in OpenSearch.
            let mut buckets: Vec<(Key, Vec<&Value>)> = Vec::new();
            let mut positions: HashMap<HashKey, usize> = HashMap::new();
            for doc in docs {
                let mut seen: HashSet<HashKey> = HashSet::new();
                for v in resolve(doc, field) {
                    let key = match (ty, v) {
                        (Some(FieldType::Keyword | FieldType::Text), _) | (None, Value::String(_) | Value::Bool(_)) => {
                            Key::Text(value_text(v))
                        }
                        (Some(FieldType::Date { .. }), v) => match date_millis(v) {
                            Some(ms) => Key::Num(ms),
                            None => continue,
                        },
                        (_, Value::Number(n)) => match n.as_f64() {
                            Some(x) => Key::Num(x),
                            None => continue,
                        },
                        (_, Value::String(s)) => match s.parse::<f64>() {
                            Ok(x) => Key::Num(x),
                            Err(_) => continue,
                        },
                        _ => continue,
                    };
                    let hash_key = key.hash_key();
                    if !seen.insert(hash_key.clone()) {
                        continue;
                    }
                    match positions.get(&hash_key) {
                        Some(&at) => buckets[at].1.push(doc),
                        None => {
                            positions.insert(hash_key, buckets.len());
                            buckets.push((key, vec![doc]));
                        }
                    }
                }
            }
            let mut order = if order.is_empty() { vec![(OrderKey::Count, true)] } else { order.clone() };
            // OpenSearch breaks ties by key, ascending, unless the key already orders.
            if !order.iter().any(|(k, _)| matches!(k, OrderKey::Key)) {
                order.push((OrderKey::Key, false));
            }
            // Each bucket's sort values, computed once: its count or its sub-aggregation's value
            // (a bucket without one sorts as -inf for max and +inf for min, OpenSearch's empty
            // values); unused for `_key`.
            let ranks: Vec<Vec<f64>> = buckets
                .iter()
                .map(|(_, members)| {
                    order
                        .iter()
                        .map(|(key, _)| match key {
                            #[allow(clippy::cast_precision_loss)]
                            OrderKey::Count => members.len() as f64,
                            OrderKey::Key => 0.0,
                            OrderKey::Sub(sub) => match subs.iter().find(|s| &s.name == sub).map(|s| &s.agg) {
                                Some(Agg::Max { field }) => {
                                    metric(field, members, fields, true).unwrap_or(f64::NEG_INFINITY)
                                }
                                Some(Agg::Min { field }) => {
                                    metric(field, members, fields, false).unwrap_or(f64::INFINITY)
                                }
                                _ => 0.0,
                            },
                        })
                        .collect()
                })
                .collect();
            let mut sorted: Vec<usize> = (0..buckets.len()).collect();
            sorted.sort_by(|&a, &b| {
                for (i, (key, desc)) in order.iter().enumerate() {
                    let ord = match key {
                        OrderKey::Key => buckets[a].0.cmp(&buckets[b].0),
                        _ => ranks[a][i].total_cmp(&ranks[b][i]),
                    };
                    let ord = if *desc { ord.reverse() } else { ord };
                    if ord != Ordering::Equal {
                        return ord;
                    }
                }
                Ordering::Equal
            });
            let buckets: Vec<&(Key, Vec<&Value>)> = sorted.iter().map(|&i| &buckets[i]).collect();
            let other: usize = buckets.iter().skip(*size).map(|(_, m)| m.len()).sum();
            // Only the top `size` buckets are built (and counted), as on one OpenSearch shard.
            let mut shown = Vec::new();
            for (key, members) in buckets.iter().take(*size).copied() {
                count.add_one()?;
                let mut bucket = Map::new();
                match key {
                    Key::Text(t) => {
                        bucket.insert("key".into(), json!(t));
                    }
                    Key::Num(x) => {
                        // Whole numbers print as integers, as OpenSearch does for long/date keys.
                        #[allow(clippy::cast_possible_truncation)]
                        let whole = x.fract() == 0.0 && x.abs() < 9.0e15;
                        bucket.insert("key".into(), if whole { json!(*x as i64) } else { json!(x) });
                        if let Some(FieldType::Date { epoch_millis }) = ty {
                            bucket.insert("key_as_string".into(), json!(date_text(*x, epoch_millis)));
                        }
                    }
                }
                bucket.insert("doc_count".into(), json!(members.len()));
                if let Value::Object(sub_results) = run_counted(subs, members, fields, count)? {
                    bucket.extend(sub_results);
                }
                shown.push(Value::Object(bucket));
            }
            Ok(json!({"doc_count_error_upper_bound": 0, "sum_other_doc_count": other, "buckets": shown}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(field: &str, size: usize, subs: Vec<Named>) -> Named {
        Named { name: field.to_owned(), agg: Agg::Terms { field: field.to_owned(), size, order: Vec::new(), subs } }
    }

    #[test]
    fn buckets_created_are_counted_against_max_buckets() {
        let fields = Fields::default();
        // One document with MAX_BUCKETS distinct values: exactly at the limit is fine.
        let doc = json!({"v": (0..MAX_BUCKETS).collect::<Vec<_>>()});
        let out = run(&[terms("v", usize::MAX, Vec::new())], &[&doc], &fields).expect("at the limit");
        assert_eq!(out["v"]["buckets"].as_array().map(Vec::len), Some(MAX_BUCKETS));
        // A huge size over few keys creates few buckets.
        let few = json!({"v": [1, 2, 3]});
        assert!(run(&[terms("v", usize::MAX, Vec::new())], &[&few], &fields).is_ok());

        let over = json!({"v": (0..=MAX_BUCKETS).collect::<Vec<_>>()});
        let err = run(&[terms("v", usize::MAX, Vec::new())], &[&over], &fields).expect_err("over the limit");
        assert_eq!(err.status, 503);
        assert_eq!(err.kind, "too_many_buckets_exception");
        assert_eq!(
            err.reason,
            "Trying to create too many buckets. Must be less than or equal to: [65535] but was [65536]. This limit can be set by changing the [search.max_buckets] cluster level setting."
        );
        assert_eq!(err.extra.get("max_buckets"), Some(&json!(65_535)));
        // Only the buckets built count: the same keys under a small size are fine.
        assert!(run(&[terms("v", 10, Vec::new())], &[&over], &fields).is_ok());

        // Sub-aggregation buckets count too: 300 outer × 300 inner.
        let wide = json!({"a": (0..300).collect::<Vec<_>>(), "b": (0..300).collect::<Vec<_>>()});
        let nested = terms("a", 1000, vec![terms("b", 1000, Vec::new())]);
        let err = run(&[nested], &[&wide], &fields).expect_err("nested over the limit");
        assert_eq!(err.kind, "too_many_buckets_exception");
    }
}
