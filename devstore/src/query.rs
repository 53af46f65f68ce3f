//! The query DSL subset: `match_all`, `term`, `match` (exact, as on a keyword field), `terms`,
//! `range` (numbers, strings, and RFC 3339 dates), `regexp` (Lucene syntax without its `@ & ~ < #`
//! operators), `bool`, `ids`, `exists`, `nested`, evaluated on dotted field paths. Unknown queries
//! and unsupported options are a 400 `parsing_exception`, as in OpenSearch: never a guess.

use std::cmp::Ordering;

use serde_json::Value;

use crate::{
    error::ApiError,
    mapping::{FieldType, Fields},
};

/// A parsed query.
#[derive(Debug, Clone)]
pub enum Query {
    MatchAll,
    Term { field: String, value: Value },
    Terms { field: String, values: Vec<Value> },
    Range { field: String, bounds: Vec<(Bound, Value)> },
    Regexp { field: String, regex: regex::Regex },
    Ids(Vec<String>),
    Exists(String),
    Nested { path: String, query: Box<Query> },
    Bool { must: Vec<Query>, should: Vec<Query>, must_not: Vec<Query>, minimum_should_match: usize },
}

/// One side of a `range`.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    Gt,
    Gte,
    Lt,
    Lte,
}

fn parsing(reason: impl Into<String>) -> ApiError {
    ApiError::new(400, "parsing_exception", reason)
}

/// The only key of a single-key object, as OpenSearch expects for `term`, `range`, ...
fn single_field<'a>(kind: &str, v: &'a Value) -> Result<(&'a String, &'a Value), ApiError> {
    let obj =
        v.as_object().ok_or_else(|| parsing(format!("[{kind}] query malformed, no start_object after query name")))?;
    let mut it = obj.iter();
    match (it.next(), it.next()) {
        (Some(pair), None) => Ok(pair),
        _ => Err(parsing(format!("[{kind}] query doesn't support multiple fields, found none or more than one"))),
    }
}

fn clauses(v: &Value) -> Result<Vec<Query>, ApiError> {
    match v {
        Value::Array(items) => items.iter().map(Query::parse_clause).collect(),
        other => Ok(vec![Query::parse_clause(other)?]),
    }
}

/// OpenSearch's default `indices.query.bool.max_clause_count` (Lucene's `IndexSearcher` max clause
/// count): the most clauses one `bool` may have, and the most leaf queries in the whole query.
pub const MAX_CLAUSE_COUNT: usize = 1024;

/// OpenSearch's default `index.max_terms_count`: the most values one `terms` query may have.
pub const MAX_TERMS_COUNT: usize = 65_536;

impl Query {
    /// Parses the value of a `query` key, then bounds its size as Lucene does before running it:
    /// a `bool` with more than [`MAX_CLAUSE_COUNT`] clauses is `too_many_clauses`, a query with more
    /// leaf queries than that in all is `too_many_nested_clauses` (OpenSearch before 3.x answers
    /// these as a 500 `search_phase_execution_exception` around them; here, as in later versions, a
    /// 400). Nesting depth is bounded by serde_json's recursion limit (128) when the body is read.
    pub fn parse(v: &Value) -> Result<Self, ApiError> {
        let query = Self::parse_clause(v)?;
        query.leaf_count()?;
        Ok(query)
    }

    /// The number of leaf queries, as Lucene's clause-count visitor counts them, refusing a `bool`
    /// with too many clauses on the way.
    fn leaf_count(&self) -> Result<usize, ApiError> {
        let leaves = match self {
            Query::Bool { must, should, must_not, .. } => {
                if must.len() + should.len() + must_not.len() > MAX_CLAUSE_COUNT {
                    return Err(ApiError::new(
                        400,
                        "too_many_clauses",
                        format!("maxClauseCount is set to {MAX_CLAUSE_COUNT}"),
                    ));
                }
                let mut sum = 0;
                for q in must.iter().chain(should).chain(must_not) {
                    sum += q.leaf_count()?;
                }
                sum
            }
            Query::Nested { query, .. } => query.leaf_count()?,
            _ => 1,
        };
        if leaves > MAX_CLAUSE_COUNT {
            return Err(ApiError::new(
                400,
                "too_many_nested_clauses",
                format!("Query contains too many nested clauses; maxClauseCount is set to {MAX_CLAUSE_COUNT}"),
            ));
        }
        Ok(leaves)
    }

    fn parse_clause(v: &Value) -> Result<Self, ApiError> {
        let (kind, body) =
            single_field("query", v).map_err(|_| parsing("query malformed, expected a single query type"))?;
        match kind.as_str() {
            "match_all" => Ok(Query::MatchAll),
            "term" | "match" | "match_phrase" => {
                let (field, spec) = single_field(kind, body)?;
                let value =
                    match spec {
                        Value::Object(o) => o.get("value").or_else(|| o.get("query")).cloned().ok_or_else(|| {
                            parsing(format!("[{kind}] query does not support an object without [value]"))
                        })?,
                        other => other.clone(),
                    };
                Ok(Query::Term { field: field.clone(), value })
            }
            "terms" => {
                let (field, spec) = single_field(kind, body)?;
                let values =
                    spec.as_array().ok_or_else(|| parsing("[terms] query does not support a non-array value"))?;
                if values.len() > MAX_TERMS_COUNT {
                    return Err(ApiError::new(
                        400,
                        "illegal_argument_exception",
                        format!(
                            "The number of terms [{}] used in the Terms Query request has exceeded the allowed maximum of [{MAX_TERMS_COUNT}]. This maximum can be set by changing the [index.max_terms_count] index level setting.",
                            values.len()
                        ),
                    ));
                }
                let values = values.clone();
                Ok(Query::Terms { field: field.clone(), values })
            }
            "range" => {
                let (field, spec) = single_field(kind, body)?;
                let spec = spec.as_object().ok_or_else(|| parsing("[range] query malformed"))?;
                let mut bounds = Vec::new();
                for (k, value) in spec {
                    let bound = match k.as_str() {
                        "gt" => Bound::Gt,
                        "gte" | "from" => Bound::Gte,
                        "lt" => Bound::Lt,
                        "lte" | "to" => Bound::Lte,
                        "format" | "boost" | "_name" => continue,
                        other => return Err(parsing(format!("[range] query does not support [{other}]"))),
                    };
                    // Date math is evaluated by OpenSearch; comparing it as text would be a wrong answer.
                    if let Some(text) = value.as_str()
                        && (text.starts_with("now") || text.contains("||"))
                    {
                        return Err(parsing(format!(
                            "[range] date math [{text}] is not implemented by spanline-devstore; send absolute times"
                        )));
                    }
                    if !value.is_null() {
                        bounds.push((bound, value.clone()));
                    }
                }
                Ok(Query::Range { field: field.clone(), bounds })
            }
            "regexp" => {
                let (field, spec) = single_field(kind, body)?;
                let (pattern, operators, case_insensitive) = match spec {
                    Value::String(p) => (p.clone(), true, false),
                    Value::Object(o) => {
                        let mut pattern = None;
                        let (mut operators, mut case_insensitive) = (true, false);
                        for (k, v) in o {
                            match (k.as_str(), v) {
                                ("value", Value::String(p)) => pattern = Some(p.clone()),
                                ("flags", Value::String(f)) if f == "ALL" || f.is_empty() => {}
                                ("flags", Value::String(f)) if f == "NONE" => operators = false,
                                ("case_insensitive", Value::Bool(b)) => case_insensitive = *b,
                                ("boost" | "_name" | "max_determinized_states", _) => {}
                                (other, _) => {
                                    return Err(parsing(format!(
                                        "[regexp] option [{other}] with value [{v}] is not implemented by spanline-devstore"
                                    )));
                                }
                            }
                        }
                        let pattern = pattern.ok_or_else(|| parsing("[regexp] query needs a string [value]"))?;
                        (pattern, operators, case_insensitive)
                    }
                    _ => return Err(parsing("[regexp] query malformed, expected a string or an object")),
                };
                let regex = lucene_regex(&pattern, operators, case_insensitive)?;
                Ok(Query::Regexp { field: field.clone(), regex })
            }
            "ids" => {
                let values = body
                    .get("values")
                    .and_then(Value::as_array)
                    .ok_or_else(|| parsing("[ids] query needs [values]"))?;
                Ok(Query::Ids(values.iter().map(value_text).collect()))
            }
            "exists" => {
                let field =
                    body.get("field").and_then(Value::as_str).ok_or_else(|| parsing("[exists] query needs [field]"))?;
                Ok(Query::Exists(field.to_owned()))
            }
            "nested" => {
                let path = body
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| parsing("[nested] requires 'path' field"))?;
                let inner = body.get("query").ok_or_else(|| parsing("[nested] requires 'query' field"))?;
                Ok(Query::Nested { path: path.to_owned(), query: Box::new(Query::parse_clause(inner)?) })
            }
            "bool" => {
                let obj = body.as_object().ok_or_else(|| parsing("[bool] query malformed"))?;
                let (mut must, mut should, mut must_not) = (Vec::new(), Vec::new(), Vec::new());
                let mut minimum = None;
                for (k, v) in obj {
                    match k.as_str() {
                        // `filter` differs from `must` only in scoring, which the dev store does not do.
                        "must" | "filter" => must.extend(clauses(v)?),
                        "should" => should.extend(clauses(v)?),
                        "must_not" => must_not.extend(clauses(v)?),
                        "minimum_should_match" => {
                            minimum = Some(
                                v.as_u64()
                                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                                    .ok_or_else(|| parsing("[bool] minimum_should_match must be an integer"))?,
                            );
                        }
                        "boost" | "_name" => {}
                        other => return Err(parsing(format!("[bool] query does not support [{other}]"))),
                    }
                }
                // OpenSearch: with no must/filter clause, at least one should clause must match.
                let default_minimum = usize::from(must.is_empty() && !should.is_empty());
                let minimum_should_match =
                    minimum.map_or(default_minimum, |m| usize::try_from(m).unwrap_or(usize::MAX));
                Ok(Query::Bool { must, should, must_not, minimum_should_match })
            }
            other => Err(parsing(format!("unknown query [{other}]"))),
        }
    }

    /// Refuses what OpenSearch refuses once it knows the searched indices' mappings: `regexp` on a
    /// field that is not a string field (numbers, dates, booleans, IPs) is its
    /// `query_shard_exception`.
    pub fn validate(&self, fields: &Fields) -> Result<(), ApiError> {
        match self {
            Query::Regexp { field, .. } => {
                let not_a_string = matches!(fields.get(field), Some(FieldType::Numeric | FieldType::Date { .. }))
                    || matches!(fields.kind(field), Some("boolean" | "ip"));
                match fields.kind(field) {
                    Some(kind) if not_a_string => Err(ApiError::new(
                        400,
                        "query_shard_exception",
                        format!(
                            "Can only use regexp queries on keyword and text fields - not on [{field}] which is of type [{kind}]"
                        ),
                    )),
                    _ => Ok(()),
                }
            }
            Query::Nested { query, .. } => query.validate(fields),
            Query::Bool { must, should, must_not, .. } => {
                must.iter().chain(should).chain(must_not).try_for_each(|q| q.validate(fields))
            }
            _ => Ok(()),
        }
    }

    /// Whether the document `source` with id `id` matches.
    pub fn matches(&self, id: &str, source: &Value) -> bool {
        match self {
            Query::MatchAll => true,
            Query::Term { field, value } => resolve(source, field).iter().any(|v| loose_eq(v, value)),
            Query::Terms { field, values } => {
                resolve(source, field).iter().any(|v| values.iter().any(|want| loose_eq(v, want)))
            }
            Query::Range { field, bounds } => resolve(source, field).iter().any(|v| {
                bounds.iter().all(|(bound, limit)| match loose_cmp(v, limit) {
                    Some(ord) => match bound {
                        Bound::Gt => ord == Ordering::Greater,
                        Bound::Gte => ord != Ordering::Less,
                        Bound::Lt => ord == Ordering::Less,
                        Bound::Lte => ord != Ordering::Greater,
                    },
                    None => false,
                })
            }),
            Query::Regexp { field, regex } => {
                resolve(source, field).iter().filter(|v| !v.is_null()).any(|v| regex.is_match(&value_text(v)))
            }
            Query::Ids(ids) => ids.iter().any(|want| want == id),
            Query::Exists(field) => resolve(source, field).iter().any(|v| !v.is_null()),
            Query::Nested { path, query } => resolve(source, path).iter().any(|element| {
                // Evaluate the inner query (whose fields are full paths) on a document holding only
                // this one element at `path`, so all its conditions hold for the same element.
                let scoped = path.rsplit('.').fold((*element).clone(), |acc, key| {
                    let mut map = serde_json::Map::new();
                    map.insert(key.to_owned(), acc);
                    Value::Object(map)
                });
                query.matches(id, &scoped)
            }),
            Query::Bool { must, should, must_not, minimum_should_match } => {
                must.iter().all(|q| q.matches(id, source))
                    && !must_not.iter().any(|q| q.matches(id, source))
                    && should.iter().filter(|q| q.matches(id, source)).count() >= *minimum_should_match
            }
        }
    }
}

/// All values at the dotted `path` in `doc`, flattening arrays at every level. A key that itself
/// contains dots is found too.
pub fn resolve<'a>(doc: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    collect(doc, path, &mut out);
    out
}

fn collect<'a>(doc: &'a Value, path: &str, out: &mut Vec<&'a Value>) {
    match doc {
        Value::Array(items) => items.iter().for_each(|item| collect(item, path, out)),
        Value::Object(map) => {
            if let Some(v) = map.get(path) {
                push_flat(v, out);
            }
            for (i, _) in path.match_indices('.') {
                if let Some(v) = map.get(&path[..i]) {
                    collect(v, &path[i + 1..], out);
                }
            }
        }
        _ => {}
    }
}

fn push_flat<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|item| push_flat(item, out)),
        other => out.push(other),
    }
}

/// The text OpenSearch would index for a keyword: strings as they are, everything else as JSON.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => value_text(a) == value_text(b),
    }
}

fn loose_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    let num = |v: &Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse::<f64>().ok()));
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y),
        // A date (Jaeger's dependency `timestamp`, RFC 3339 with any number of fraction digits)
        // against a date or epoch milliseconds: compared as instants, not as text, since
        // "…:00Z" sorts after "…:00.5Z".
        _ => match (date_millis(a), date_millis(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => match (a, b) {
                (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
                _ => None,
            },
        },
    }
}

/// Milliseconds since the epoch of an RFC 3339 string or a number (taken as epoch milliseconds).
pub fn date_millis(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| {
            #[allow(clippy::cast_precision_loss)] // instants of this era fit f64's 53 bits in µs
            let micros = t.timestamp_micros() as f64;
            micros / 1000.0
        }),
        _ => None,
    }
}

/// Translates a Lucene regular expression (OpenSearch's `regexp` query) to an anchored Rust regex:
/// Lucene matches the whole term, `.` matches any character, `"…"` is a literal string and `^`/`$`
/// are ordinary characters. Lucene's extra operators (`@` any string, `&` intersection,
/// `~` complement, `<n-m>` intervals, `#` empty language) are on by default (`flags: ALL`) and
/// are refused rather than misread; with `flags: NONE` they are literal characters.
pub fn lucene_regex(pattern: &str, operators: bool, case_insensitive: bool) -> Result<regex::Regex, ApiError> {
    // OpenSearch counts Java `String.length()`, UTF-16 code units.
    let length = pattern.encode_utf16().count();
    if length > MAX_REGEX_LENGTH {
        return Err(ApiError::new(
            400,
            "illegal_argument_exception",
            format!(
                "The length of regex [{length}] used in the Regexp Query request has exceeded the allowed maximum of [{MAX_REGEX_LENGTH}]. This maximum can be set by changing the [index.max_regex_length] index level setting."
            ),
        ));
    }
    let mut out = String::from(if case_insensitive { "(?si)^(?:" } else { "(?s)^(?:" });
    let mut chars = pattern.chars().peekable();
    let literal = |c: char, out: &mut String| out.push_str(&format!("\\x{{{:x}}}", u32::from(c)));
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(other) => match shorthand_class(other, pattern)? {
                    // Lucene's classes are ASCII-only, and keep their meaning under `case_insensitive`.
                    Some((ranges, negated)) => {
                        out.push_str(if negated { "(?-i:[^" } else { "(?-i:[" });
                        out.push_str(ranges);
                        out.push_str("])");
                    }
                    None => literal(other, &mut out),
                },
                None => return Err(parsing(format!("[regexp] invalid pattern [{pattern}]: trailing backslash"))),
            },
            '"' if operators => {
                let mut closed = false;
                for q in chars.by_ref() {
                    if q == '"' {
                        closed = true;
                        break;
                    }
                    literal(q, &mut out);
                }
                if !closed {
                    return Err(parsing(format!("[regexp] invalid pattern [{pattern}]: expected '\"'")));
                }
            }
            '@' | '&' | '~' | '<' | '#' if operators => {
                return Err(parsing(format!(
                    "[regexp] operator [{c}] in [{pattern}] is not implemented by spanline-devstore (use flags NONE for a literal)"
                )));
            }
            '[' => {
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('^');
                }
                let mut closed = false;
                while let Some(k) = chars.next() {
                    match k {
                        ']' => {
                            closed = true;
                            break;
                        }
                        '-' => out.push('-'),
                        '\\' => match chars.next() {
                            Some(e) => match shorthand_class(e, pattern)? {
                                Some((ranges, negated)) => {
                                    if negated {
                                        out.push_str("[^");
                                        out.push_str(ranges);
                                        out.push(']');
                                    } else {
                                        out.push_str(ranges);
                                    }
                                    // Lucene reads a `-` right after a class shorthand as a literal.
                                    if chars.peek() == Some(&'-') {
                                        chars.next();
                                        literal('-', &mut out);
                                    }
                                }
                                None => literal(e, &mut out),
                            },
                            None => break,
                        },
                        other => literal(other, &mut out),
                    }
                }
                if !closed {
                    return Err(parsing(format!("[regexp] invalid pattern [{pattern}]: expected ']'")));
                }
                out.push(']');
            }
            '.' | '?' | '+' | '*' | '|' | '(' | ')' | '{' | '}' | ',' => out.push(c),
            '0'..='9' => out.push(c),
            other => literal(other, &mut out),
        }
    }
    out.push_str(")$");
    regex::RegexBuilder::new(&out).size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| match e {
        regex::Error::CompiledTooBig(limit) => ApiError::new(
            400,
            "illegal_argument_exception",
            format!(
                "[regexp] pattern [{pattern}] is too complex: it compiles to more than {limit} bytes, spanline-devstore's bound (OpenSearch bounds it with [max_determinized_states])"
            ),
        ),
        e => parsing(format!("[regexp] invalid pattern [{pattern}]: {e}")),
    })
}

/// Lucene's predefined classes after a `\\` (`RegExp.expandPreDefined`, inside and outside `[...]`):
/// `\\d` `[0-9]`, `\\s` `[\\t\\n\\r ]`, `\\w` `[0-9A-Z_a-z]` (ASCII only, unlike Rust's Unicode
/// `\\d \\s \\w`), the capitals their complements, as (Rust class ranges, negated). Any other ASCII
/// letter after a backslash is an error in Lucene ("invalid character class"); anything else is
/// the character itself (`None`).
fn shorthand_class(c: char, pattern: &str) -> Result<Option<(&'static str, bool)>, ApiError> {
    let ranges = match c.to_ascii_lowercase() {
        'd' => "0-9",
        's' => "\\x{9}\\x{a}\\x{d}\\x{20}",
        'w' => "0-9A-Z_a-z",
        _ if c.is_ascii_alphabetic() => {
            return Err(parsing(format!("[regexp] invalid pattern [{pattern}]: invalid character class \\{c}")));
        }
        _ => return Ok(None),
    };
    Ok(Some((ranges, c.is_ascii_uppercase())))
}

/// OpenSearch's default `index.max_regex_length`, in UTF-16 code units.
pub const MAX_REGEX_LENGTH: usize = 1000;

/// The most memory one compiled `regexp` may take (the `regex` crate's `size_limit`).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "traceID": "abc", "duration": 120, "startTimeMillis": 1700000000000_i64,
            "process": {"serviceName": "checkout", "tags": [{"key": "host", "value": "a"}]},
            "tags": [{"key": "http.status", "value": "200"}, {"key": "error", "value": "true"}],
            "tag": {"http.method": "GET"}
        })
    }

    fn q(v: Value) -> Query {
        Query::parse(&v).expect("parses")
    }

    #[test]
    fn term_terms_and_dotted_paths() {
        let d = doc();
        assert!(q(json!({"term": {"process.serviceName": "checkout"}})).matches("1", &d));
        assert!(q(json!({"term": {"process.serviceName": {"value": "checkout"}}})).matches("1", &d));
        assert!(!q(json!({"term": {"process.serviceName": "cart"}})).matches("1", &d));
        assert!(q(json!({"terms": {"traceID": ["x", "abc"]}})).matches("1", &d));
        assert!(q(json!({"term": {"tags.value": "200"}})).matches("1", &d));
        assert!(q(json!({"term": {"tags.value": 200}})).matches("1", &d));
        assert!(q(json!({"term": {"tag.http.method": "GET"}})).matches("1", &d));
    }

    #[test]
    fn range_bool_ids_exists() {
        let d = doc();
        assert!(q(json!({"range": {"duration": {"gte": 100, "lt": 121}}})).matches("1", &d));
        assert!(!q(json!({"range": {"duration": {"gt": 120}}})).matches("1", &d));
        assert!(q(json!({"ids": {"values": ["1", "2"]}})).matches("1", &d));
        assert!(!q(json!({"ids": {"values": ["2"]}})).matches("1", &d));
        assert!(q(json!({"exists": {"field": "tags.key"}})).matches("1", &d));
        assert!(!q(json!({"exists": {"field": "logs"}})).matches("1", &d));
        let b = q(json!({"bool": {
            "filter": [{"term": {"traceID": "abc"}}],
            "must_not": {"term": {"process.serviceName": "cart"}},
            "should": [{"term": {"duration": 1}}, {"term": {"duration": 120}}],
            "minimum_should_match": 1
        }}));
        assert!(b.matches("1", &d));
        let only_should = q(json!({"bool": {"should": [{"term": {"duration": 1}}]}}));
        assert!(!only_should.matches("1", &d));
    }

    #[test]
    fn nested_keeps_conditions_on_one_element() {
        let d = doc();
        let same = q(json!({"nested": {"path": "tags", "query": {"bool": {"must": [
            {"term": {"tags.key": "http.status"}}, {"term": {"tags.value": "200"}}]}}}}));
        assert!(same.matches("1", &d));
        let crossed = q(json!({"nested": {"path": "tags", "query": {"bool": {"must": [
            {"term": {"tags.key": "http.status"}}, {"term": {"tags.value": "true"}}]}}}}));
        assert!(!crossed.matches("1", &d));
    }

    #[test]
    fn clause_and_terms_counts_are_bounded() {
        let term = json!({"term": {"a": 1}});
        let bool_of = |n: usize| json!({"bool": {"should": vec![term.clone(); n]}});
        assert!(Query::parse(&bool_of(MAX_CLAUSE_COUNT)).is_ok());
        let err = Query::parse(&bool_of(MAX_CLAUSE_COUNT + 1)).expect_err("too many clauses");
        assert_eq!((err.status, err.kind.as_str()), (400, "too_many_clauses"));
        assert_eq!(err.reason, "maxClauseCount is set to 1024");
        // Each bool within the limit, the whole query over it.
        let half = bool_of(MAX_CLAUSE_COUNT / 2 + 1);
        let err = Query::parse(&json!({"bool": {"must": [half.clone(), half]}})).expect_err("too many leaves");
        assert_eq!((err.status, err.kind.as_str()), (400, "too_many_nested_clauses"));
        assert_eq!(err.reason, "Query contains too many nested clauses; maxClauseCount is set to 1024");

        let terms = |n: usize| json!({"terms": {"a": vec![1; n]}});
        assert!(Query::parse(&terms(MAX_TERMS_COUNT)).is_ok());
        let err = Query::parse(&terms(MAX_TERMS_COUNT + 1)).expect_err("too many terms");
        assert_eq!((err.status, err.kind.as_str()), (400, "illegal_argument_exception"));
        assert!(err.reason.starts_with("The number of terms [65537] used in the Terms Query request has exceeded the allowed maximum of [65536]."), "{}", err.reason);
    }

    #[test]
    fn lucene_regexp() {
        let m = |p: &str, v: &str| lucene_regex(p, true, false).expect("compiles").is_match(v);
        assert!(m("GET", "GET"));
        assert!(!m("GET", "GETS"), "anchored at both ends");
        assert!(m("ab.d", "abcd"));
        assert!(m("a[b-d]+", "abcd"));
        assert!(!m("a[^b]", "ab"));
        assert!(m("x{2,3}", "xxx"));
        assert!(m("(foo|bar)baz", "barbaz"));
        assert!(m("a^b$c", "a^b$c"), "^ and $ are ordinary characters in Lucene");
        assert!(m("\"a.b\"", "a.b") && !m("\"a.b\"", "axb"));
        assert!(m("1\\.2", "1.2") && !m("1\\.2", "1x2"));
        assert!(lucene_regex("a@", true, false).is_err());
        assert!(lucene_regex("a@", false, false).expect("literal").is_match("a@"));
        assert!(lucene_regex("(", true, false).is_err());
        assert!(lucene_regex("get", true, true).expect("compiles").is_match("GET"));
    }

    #[test]
    fn lucene_shorthand_classes_are_ascii_only() {
        let m = |p: &str, v: &str| lucene_regex(p, true, false).expect("compiles").is_match(v);
        assert!(m("\\d+", "0123456789"));
        assert!(!m("\\d", "\u{663}"), "Arabic-Indic digit three is not Lucene's \\d");
        assert!(m("\\D", "\u{663}"));
        assert!(m("\\w+", "aZ_9"));
        assert!(!m("\\w", "é") && m("\\W", "é"));
        assert!(m("a\\sb", "a\tb") && m("a\\sb", "a b") && m("a\\sb", "a\nb") && m("a\\sb", "a\rb"));
        assert!(!m("a\\sb", "a\u{a0}b"), "no-break space is not Lucene's \\s");
        assert!(!m("a\\sb", "a\u{c}b"), "form feed is not Lucene's \\s");
        assert!(m("a\\Sb", "a\u{a0}b"));
        // Inside brackets too, with a `-` after a shorthand taken literally.
        assert!(m("[\\d]+", "42") && !m("[\\d]", "\u{663}"));
        assert!(m("[x\\D]", "\u{663}") && !m("[x\\D]", "5") && m("[x\\D]", "x"));
        assert!(m("[\\d-]+", "4-2"));
        // Under case_insensitive the classes keep their ASCII meaning (no Kelvin sign for `\\w`).
        let ci = |p: &str, v: &str| lucene_regex(p, true, true).expect("compiles").is_match(v);
        assert!(ci("\\w", "k") && !ci("\\w", "\u{212a}"));
        // Other letters after a backslash are Lucene errors; other characters are themselves.
        let err = lucene_regex("a\\qb", true, false).expect_err("invalid class");
        assert_eq!(err.status, 400);
        assert!(err.reason.contains("invalid character class \\q"), "{}", err.reason);
        assert!(lucene_regex("[\\A]", true, false).is_err());
        assert!(m("a\\.b", "a.b") && m("a\\\\b", "a\\b"));
    }

    #[test]
    fn regexp_length_and_compiled_size_are_bounded() {
        assert!(lucene_regex(&"a".repeat(MAX_REGEX_LENGTH), true, false).is_ok());
        let err = lucene_regex(&"a".repeat(MAX_REGEX_LENGTH + 1), true, false).expect_err("too long");
        assert_eq!(err.status, 400);
        assert_eq!(err.kind, "illegal_argument_exception");
        assert_eq!(
            err.reason,
            "The length of regex [1001] used in the Regexp Query request has exceeded the allowed maximum of [1000]. This maximum can be set by changing the [index.max_regex_length] index level setting."
        );
        // Java counts UTF-16 code units: 500 astral characters are 1000 units, 501 are 1002.
        assert!(lucene_regex(&"\u{1F600}".repeat(500), true, false).is_ok());
        assert!(lucene_regex(&"\u{1F600}".repeat(501), true, false).is_err());
        // Short but huge once compiled: refused, not built.
        let err = lucene_regex("(((a{100}){100}){100})", true, false).expect_err("too big compiled");
        assert_eq!(err.status, 400);
        assert!(err.reason.contains("too complex"), "{}", err.reason);
        let q = q(json!({"regexp": {"tags.value": {"value": "2.."}}}));
        assert!(q.matches("1", &doc()));
    }

    #[test]
    fn dates_compare_as_instants() {
        let d = json!({"timestamp": "2026-11-30T00:00:00Z"});
        assert!(q(json!({"range": {"timestamp": {"gte": "2026-11-29T23:59:59.5Z", "lte": "2026-11-30T00:00:00.000000001Z"}}})).matches("1", &d));
        assert!(!q(json!({"range": {"timestamp": {"gt": "2026-11-30T00:00:00.000Z"}}})).matches("1", &d));
        assert!(q(json!({"range": {"timestamp": {"gte": 1_795_996_800_000_i64}}})).matches("1", &d));
        assert!(Query::parse(&json!({"range": {"timestamp": {"gte": "now-1d"}}})).is_err());
    }

    #[test]
    fn unknown_queries_are_parsing_errors() {
        let err = Query::parse(&json!({"fuzzy": {"a": "b"}})).expect_err("rejects");
        assert_eq!(err.status, 400);
        assert!(err.reason.contains("unknown query [fuzzy]"));
    }
}
