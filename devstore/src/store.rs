//! The in-memory indices, index templates and documents, with OpenSearch's visibility rule: a write is
//! readable at once by id (`GET _doc` is real-time) but searchable and countable only after a refresh.

use std::{collections::BTreeMap, sync::Arc};

use indexmap::IndexMap;
use serde_json::{Value, json};

use crate::{
    error::ApiError,
    postings::{IndexedPaths, Postings, Recorded},
    query::value_text,
};

/// Rough per-document overhead added to the source length when accounting memory.
const DOC_OVERHEAD_BYTES: u64 = 96;

/// One stored document.
#[derive(Debug, Clone)]
pub struct Doc {
    pub source: Arc<str>,
    pub version: u64,
    pub seq_no: u64,
    /// The source as of the last refresh; `None` until the first refresh after creation.
    pub visible: Option<Arc<str>>,
    /// The indexed values of `source`, recorded when `_bulk` validated it, until the refresh that
    /// lists them (which otherwise walks the source).
    pub pending: Option<Recorded>,
}

/// One index.
#[derive(Debug)]
pub struct Index {
    pub uuid: String,
    pub settings: Value,
    pub mappings: Value,
    /// By id, in insertion order (a document's position is its place in the postings). Hashed
    /// with FxHash: ids are long and hashed once per write.
    pub docs: IndexMap<String, Doc, std::hash::BuildHasherDefault<crate::postings::FxHasher>>,
    /// Positions in `docs` written since the last refresh.
    dirty: Vec<usize>,
    visible_count: usize,
    next_seq_no: u64,
    /// Documents and postings, as accounted against the memory limit.
    bytes: u64,
    /// The searchable documents' values by field, kept in step with `visible`.
    postings: Postings,
}

impl Index {
    pub fn visible_count(&self) -> usize {
        self.visible_count
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn postings(&self) -> &Postings {
        &self.postings
    }
    /// Makes the pending writes searchable: their sources become visible and enter the postings
    /// (an overwritten document's old values leave them first). The memory the postings grew by,
    /// and the memory of the recorded values let go.
    fn refresh(&mut self) -> (u64, u64) {
        let (mut added, mut freed) = (0, 0);
        for pos in self.dirty.drain(..) {
            let Some((_, doc)) = self.docs.get_index_mut(pos) else { continue };
            // Written twice since the last refresh: the first visit made it visible already.
            if doc.visible.as_ref().is_some_and(|v| Arc::ptr_eq(v, &doc.source)) {
                continue;
            }
            match &doc.visible {
                Some(old) => freed += self.postings.remove(pos, old),
                None => self.visible_count += 1,
            }
            added += match doc.pending.take() {
                Some(recorded) => {
                    freed += recorded.bytes();
                    self.postings.add_recorded(pos, &doc.source, &recorded)
                }
                None => self.postings.add(pos, &doc.source),
            };
            doc.visible = Some(doc.source.clone());
        }
        self.bytes = (self.bytes + added).saturating_sub(freed);
        (added, freed)
    }
}

/// What a write did, for its bulk item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub version: u64,
    pub seq_no: u64,
    /// A new document (201 `created`), else an overwrite (200 `updated`).
    pub created: bool,
}

impl Written {
    pub fn result(self) -> &'static str {
        if self.created { "created" } else { "updated" }
    }
    pub fn status(self) -> u16 {
        if self.created { 201 } else { 200 }
    }
}

/// How a bulk item writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    /// `index`: create or overwrite.
    Index,
    /// `create`: fail with 409 when the id exists.
    Create,
}

impl WriteOp {
    pub fn name(self) -> &'static str {
        match self {
            WriteOp::Index => "index",
            WriteOp::Create => "create",
        }
    }
}

/// All indices and templates.
#[derive(Debug)]
pub struct Store {
    indices: BTreeMap<String, Index>,
    templates: BTreeMap<String, Value>,
    /// Legacy `_template`s (Jaeger installs these on OpenSearch), stored normalised.
    legacy_templates: BTreeMap<String, Value>,
    bytes_used: u64,
    memory_limit: u64,
    uuid_counter: u64,
}

impl Store {
    pub fn new(memory_limit: u64) -> Self {
        Self {
            indices: BTreeMap::new(),
            templates: BTreeMap::new(),
            legacy_templates: BTreeMap::new(),
            bytes_used: 0,
            memory_limit,
            uuid_counter: 0,
        }
    }

    pub fn bytes_used(&self) -> u64 {
        self.bytes_used
    }
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
    }
    pub fn indices(&self) -> &BTreeMap<String, Index> {
        &self.indices
    }
    pub fn index(&self, name: &str) -> Option<&Index> {
        self.indices.get(name)
    }

    /// Drops every index and template.
    pub fn clear(&mut self) {
        self.indices.clear();
        self.templates.clear();
        self.legacy_templates.clear();
        self.bytes_used = 0;
    }

    /// The error when the memory cap is reached, shaped like OpenSearch's parent circuit breaker.
    pub fn memory_error(&self, wanted: u64) -> ApiError {
        ApiError::new(
            429,
            "circuit_breaking_exception",
            format!(
                "[parent] Data too large, data for [<http_request>] would be [{}/{}b], which is larger than the limit of [{}/{}b]: spanline-devstore memory cap reached (raise --memory-limit or delete indices)",
                self.bytes_used + wanted,
                self.bytes_used + wanted,
                self.memory_limit,
                self.memory_limit
            ),
        )
        .with("bytes_wanted", self.bytes_used + wanted)
        .with("bytes_limit", self.memory_limit)
        .with("durability", "TRANSIENT")
    }

    /// Expands an index expression (`a,b`, `jaeger-span-*`, `_all`) into existing index names.
    /// A concrete name that does not exist is an `index_not_found_exception`; a wildcard that
    /// matches nothing is simply empty.
    pub fn resolve(&self, expr: &str) -> Result<Vec<String>, ApiError> {
        self.resolve_with(expr, false)
    }

    /// [`Store::resolve`], with `ignore_unavailable=true` leaving out concrete names that do not
    /// exist (Jaeger Query names every daily index of its look-back window, existing or not).
    pub fn resolve_with(&self, expr: &str, ignore_unavailable: bool) -> Result<Vec<String>, ApiError> {
        let mut out: Vec<String> = Vec::new();
        for part in expr.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "_all" || part.contains('*') {
                let pattern = if part == "_all" { "*" } else { part };
                out.extend(self.indices.keys().filter(|name| glob(pattern, name)).cloned());
            } else if self.indices.contains_key(part) {
                out.push(part.to_owned());
            } else if ignore_unavailable {
                continue;
            } else {
                return Err(ApiError::index_not_found(part));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Creates `name` from the matching index template (highest priority wins) merged with `body`.
    pub fn create_index(&mut self, name: &str, body: &Value) -> Result<(), ApiError> {
        validate_index_name(name)?;
        if let Some(existing) = self.indices.get(name) {
            return Err(ApiError::new(
                400,
                "resource_already_exists_exception",
                format!("index [{name}/{}] already exists", existing.uuid),
            )
            .with("index", name)
            .with("index_uuid", existing.uuid.clone()));
        }
        let template = self
            .templates
            .values()
            .filter(|t| patterns_of(t).any(|p| glob(p, name)))
            .max_by_key(|t| t.get("priority").and_then(Value::as_i64).unwrap_or(0));
        // Templates are stored normalised already; the request's own settings win over them.
        let mut settings =
            json!({"index": {"number_of_shards": "1", "number_of_replicas": "1", "replication": {"type": "DOCUMENT"}}});
        let mut mappings = json!({});
        if let Some(template) = template {
            if let Some(s) = template.pointer("/template/settings") {
                merge(&mut settings, s);
            }
            if let Some(m) = template.pointer("/template/mappings") {
                merge(&mut mappings, m);
            }
        } else {
            // As in OpenSearch: legacy templates apply only when no composable one matches, all
            // that match, merged by ascending `order`.
            let mut legacy: Vec<&Value> =
                self.legacy_templates.values().filter(|t| patterns_of(t).any(|p| glob(p, name))).collect();
            legacy.sort_by_key(|t| t.get("order").and_then(Value::as_i64).unwrap_or(0));
            for t in legacy {
                if let Some(s) = t.get("settings") {
                    merge(&mut settings, s);
                }
                if let Some(m) = t.get("mappings") {
                    merge(&mut mappings, m);
                }
            }
        }
        if let Some(s) = body.get("settings") {
            merge(&mut settings, &normalize_settings(s)?);
        }
        if let Some(m) = body.get("mappings") {
            merge(&mut mappings, m);
        }
        self.uuid_counter += 1;
        let uuid = format!("devstore{:014x}", self.uuid_counter);
        let created_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        merge(
            &mut settings,
            &json!({"index": {
                "provided_name": name, "creation_date": created_ms.to_string(), "uuid": uuid,
                "version": {"created": OPENSEARCH_VERSION_ID}
            }}),
        );
        let postings = Postings::new(IndexedPaths::from_mappings(&mappings));
        self.indices.insert(
            name.to_owned(),
            Index {
                uuid,
                settings,
                mappings,
                docs: IndexMap::default(),
                dirty: Vec::new(),
                visible_count: 0,
                next_seq_no: 0,
                bytes: 0,
                postings,
            },
        );
        tracing::debug!(index = name, "index created");
        Ok(())
    }

    pub fn delete_index(&mut self, name: &str) -> Result<(), ApiError> {
        let names = self.resolve(name)?;
        for n in names {
            if let Some(index) = self.indices.remove(&n) {
                self.bytes_used = self.bytes_used.saturating_sub(index.bytes);
            }
        }
        Ok(())
    }

    /// Stores a composable template in the form OpenSearch answers it with (settings normalised,
    /// `composed_of` present), after OpenSearch's checks: patterns present, a known shape, and no
    /// other template with the same priority whose patterns can match the same index name.
    pub fn put_template(&mut self, name: &str, body: Value) -> Result<(), ApiError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::new(400, "parse_exception", "request body is required and must be an object"))?;
        for key in obj.keys() {
            if !["index_patterns", "template", "composed_of", "priority", "version", "_meta"].contains(&key.as_str()) {
                return Err(ApiError::new(
                    400,
                    "x_content_parse_exception",
                    format!("[1:2] [index_template] unknown field [{key}] (or not implemented by spanline-devstore)"),
                ));
            }
        }
        let patterns: Vec<String> = match obj.get("index_patterns") {
            Some(Value::Array(ps)) if !ps.is_empty() && ps.iter().all(Value::is_string) => {
                ps.iter().filter_map(Value::as_str).map(str::to_owned).collect()
            }
            Some(Value::String(p)) => vec![p.clone()],
            _ => {
                return Err(ApiError::new(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: index patterns are missing;",
                ));
            }
        };
        let priority = match obj.get("priority") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(p) if p >= 0 => Some(p),
                Some(_) => {
                    return Err(ApiError::new(
                        400,
                        "action_request_validation_exception",
                        "Validation Failed: 1: index template priority must be >= 0;",
                    ));
                }
                None => {
                    return Err(ApiError::new(
                        400,
                        "x_content_parse_exception",
                        "[index_template] failed to parse field [priority]",
                    ));
                }
            },
        };
        let composed_of = obj.get("composed_of").cloned().unwrap_or_else(|| json!([]));
        if composed_of.as_array().is_none_or(|c| !c.is_empty()) {
            return Err(ApiError::new(
                400,
                "illegal_argument_exception",
                format!(
                    "index template [{name}] uses [composed_of]: component templates are not implemented by spanline-devstore"
                ),
            ));
        }
        // OpenSearch validates after its conflict check; here first, as the check's work grows
        // with the patterns' lengths, which validation bounds.
        validate_template(name, &patterns)?;
        let conflicts = self.conflicting_templates(name, &patterns, priority.unwrap_or(0));
        if !conflicts.is_empty() {
            let names: Vec<&str> = conflicts.iter().map(|(n, _)| n.as_str()).collect();
            let with_patterns: Vec<String> =
                conflicts.iter().map(|(n, ps)| format!("{n} => {}", java_list(ps))).collect();
            return Err(ApiError::new(
                400,
                "illegal_argument_exception",
                format!(
                    "index template [{name}] has index patterns {} matching patterns from existing templates [{}] with patterns ({}) that have the same priority [{}], multiple index templates may not match during index creation, please use a different priority",
                    java_list(&patterns),
                    names.join(","),
                    with_patterns.join(","),
                    priority.unwrap_or(0)
                ),
            ));
        }
        let mut stored = serde_json::Map::new();
        stored.insert("index_patterns".into(), json!(patterns));
        if let Some(template) = obj.get("template") {
            let template = template.as_object().ok_or_else(|| {
                ApiError::new(400, "x_content_parse_exception", "[index_template] failed to parse field [template]")
            })?;
            let mut out = serde_json::Map::new();
            for (key, value) in template {
                match key.as_str() {
                    "settings" => {
                        out.insert(key.clone(), normalize_settings(value)?);
                    }
                    "mappings" | "aliases" => {
                        out.insert(key.clone(), value.clone());
                    }
                    other => {
                        return Err(ApiError::new(
                            400,
                            "x_content_parse_exception",
                            format!("[template] unknown field [{other}]"),
                        ));
                    }
                }
            }
            stored.insert("template".into(), Value::Object(out));
        }
        stored.insert("composed_of".into(), composed_of);
        for key in ["priority", "version", "_meta"] {
            if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
                stored.insert(key.into(), v.clone());
            }
        }
        self.templates.insert(name.to_owned(), Value::Object(stored));
        Ok(())
    }

    /// Templates other than `name` with `priority` whose patterns overlap `patterns`, with their
    /// patterns, by name (OpenSearch's `findConflictingV2Templates`).
    fn conflicting_templates(&self, name: &str, patterns: &[String], priority: i64) -> Vec<(String, Vec<String>)> {
        let priority_of = |other: &str| {
            self.templates.get(other).and_then(|t| t.get("priority")).and_then(Value::as_i64).unwrap_or(0)
        };
        self.overlapping_composable(patterns)
            .into_iter()
            .filter(|(other, _)| other.as_str() != name && priority_of(other) == priority)
            .collect()
    }

    /// Stores a legacy `_template` in the form OpenSearch answers it with.
    pub fn put_legacy_template(&mut self, name: &str, body: &Value) -> Result<(), ApiError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::new(400, "parse_exception", "request body is required and must be an object"))?;
        let mut stored = serde_json::Map::new();
        stored.insert("order".into(), json!(0));
        stored.insert("index_patterns".into(), json!([]));
        stored.insert("settings".into(), json!({}));
        stored.insert("mappings".into(), json!({}));
        stored.insert("aliases".into(), json!({}));
        for (key, value) in obj {
            match key.as_str() {
                "index_patterns" => {
                    let patterns: Vec<Value> = match value {
                        Value::String(p) => vec![json!(p)],
                        Value::Array(ps) if ps.iter().all(Value::is_string) => ps.clone(),
                        _ => return Err(illegal("Malformed [index_patterns] value, should be a list of strings")),
                    };
                    stored.insert(key.clone(), Value::Array(patterns));
                }
                "order" | "version" => {
                    stored.insert(key.clone(), value.clone());
                }
                "settings" => {
                    stored.insert(key.clone(), normalize_settings(value)?);
                }
                "mappings" | "aliases" => {
                    stored.insert(key.clone(), value.clone());
                }
                other => {
                    return Err(illegal(format!(
                        "unknown key [{other}] in the template (or not implemented by spanline-devstore)"
                    )));
                }
            }
        }
        let stored = Value::Object(stored);
        let patterns: Vec<String> = patterns_of(&stored).map(str::to_owned).collect();
        if patterns.is_empty() {
            return Err(ApiError::new(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: index patterns are missing;",
            ));
        }
        validate_template(name, &patterns)?;
        // OpenSearch 2.x's `innerPutTemplate`: a legacy template whose patterns overlap a
        // composable template's (any priority) is refused, unless it only updates an existing
        // legacy template without changing its patterns or has the match-all pattern `*` (then
        // OpenSearch only warns, in a `Warning` header this dev store does not send).
        let unchanged_update =
            self.legacy_templates.get(name).is_some_and(|t| patterns_of(t).eq(patterns.iter().map(String::as_str)));
        if !unchanged_update && !patterns.iter().any(|p| p == "*") {
            let overlaps = self.overlapping_composable(&patterns);
            if !overlaps.is_empty() {
                let names: Vec<&str> = overlaps.iter().map(|(n, _)| n.as_str()).collect();
                let with_patterns: Vec<String> =
                    overlaps.iter().map(|(n, ps)| format!("{n} => {}", java_list(ps))).collect();
                return Err(illegal(format!(
                    "legacy template [{name}] has index patterns {} matching patterns from existing composable templates [{}] with patterns ({}), use composable templates (/_index_template) instead",
                    java_list(&patterns),
                    names.join(","),
                    with_patterns.join(",")
                )));
            }
        }
        self.legacy_templates.insert(name.to_owned(), stored);
        Ok(())
    }

    /// Composable templates, of any priority, whose patterns overlap `patterns`, with their
    /// patterns, by name (OpenSearch's two-argument `findConflictingV2Templates`).
    fn overlapping_composable(&self, patterns: &[String]) -> Vec<(String, Vec<String>)> {
        self.templates
            .iter()
            .filter_map(|(other, t)| {
                let theirs: Vec<String> = patterns_of(t).map(str::to_owned).collect();
                let overlap = patterns.iter().any(|p| theirs.iter().any(|q| globs_overlap(p, q)));
                overlap.then(|| (other.clone(), theirs))
            })
            .collect()
    }

    pub fn legacy_template(&self, name: &str) -> Option<&Value> {
        self.legacy_templates.get(name)
    }

    pub fn delete_legacy_template(&mut self, name: &str) -> bool {
        self.legacy_templates.remove(name).is_some()
    }

    pub fn template(&self, name: &str) -> Option<&Value> {
        self.templates.get(name)
    }

    pub fn delete_template(&mut self, name: &str) -> bool {
        self.templates.remove(name).is_some()
    }

    /// Writes one document (its source already validated), creating the index if needed.
    /// `recorded` are its values at the index's indexed paths (see [`crate::postings::record`]),
    /// when they were taken during validation.
    pub fn write(
        &mut self,
        op: WriteOp,
        index_name: &str,
        id: &str,
        source: Arc<str>,
        recorded: Option<Recorded>,
    ) -> Result<Written, ApiError> {
        let pending_bytes = recorded.as_ref().map_or(0, Recorded::bytes);
        let cost = source.len() as u64 + id.len() as u64 + DOC_OVERHEAD_BYTES + pending_bytes;
        if self.bytes_used + cost > self.memory_limit {
            return Err(self.memory_error(cost));
        }
        if !self.indices.contains_key(index_name) {
            self.create_index(index_name, &json!({}))?;
        }
        let Some(index) = self.indices.get_mut(index_name) else {
            return Err(ApiError::index_not_found(index_name));
        };
        let seq_no = index.next_seq_no;
        let (pos, version, created, freed) = match index.docs.get_full_mut(id) {
            Some((pos, _, existing)) => {
                if op == WriteOp::Create {
                    return Err(ApiError::new(
                        409,
                        "version_conflict_engine_exception",
                        format!(
                            "[{id}]: version conflict, document already exists (current version [{}])",
                            existing.version
                        ),
                    )
                    .with("index", index_name)
                    .with("shard", "0")
                    .with("index_uuid", index.uuid.clone()));
                }
                let freed = existing.source.len() as u64
                    + id.len() as u64
                    + DOC_OVERHEAD_BYTES
                    + existing.pending.as_ref().map_or(0, Recorded::bytes);
                existing.version += 1;
                existing.seq_no = seq_no;
                existing.source = source;
                existing.pending = recorded;
                (pos, existing.version, false, freed)
            }
            None => {
                let (pos, _) = index
                    .docs
                    .insert_full(id.to_owned(), Doc { source, version: 1, seq_no, visible: None, pending: recorded });
                (pos, 1, true, 0)
            }
        };
        index.next_seq_no += 1;
        index.dirty.push(pos);
        index.bytes = index.bytes + cost - freed;
        self.bytes_used = self.bytes_used + cost - freed;
        Ok(Written { version, seq_no, created })
    }

    /// Makes every write so far searchable in the named indices.
    pub fn refresh(&mut self, names: &[String]) {
        for name in names {
            if let Some(index) = self.indices.get_mut(name) {
                let (added, freed) = index.refresh();
                self.bytes_used = (self.bytes_used + added).saturating_sub(freed);
            }
        }
    }

    /// Refreshes every index with pending writes (the periodic `refresh_interval`).
    pub fn refresh_all(&mut self) {
        for index in self.indices.values_mut().filter(|i| !i.dirty.is_empty()) {
            let (added, freed) = index.refresh();
            self.bytes_used = (self.bytes_used + added).saturating_sub(freed);
        }
    }
}

fn illegal(reason: impl Into<String>) -> ApiError {
    ApiError::new(400, "illegal_argument_exception", reason)
}

/// OpenSearch 2.19.0's version id as it shows in `index.version.created`.
const OPENSEARCH_VERSION_ID: &str = "136407827";

/// Java's `List.toString()`: `[a, b]`.
fn java_list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// Index settings the way OpenSearch stores and answers them: flat dotted keys or nested objects
/// alike end up nested, under `index` (which may be left out in the request), with every value a
/// string (`5` → `"5"`, `true` → `"true"`; lists become lists of strings).
pub fn normalize_settings(settings: &Value) -> Result<Value, ApiError> {
    fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    flatten(&key, v, out);
                }
            }
            Value::Array(items) => {
                out.push((prefix.to_owned(), Value::Array(items.iter().map(|v| json!(value_text(v))).collect())));
            }
            // A null setting means "reset to the default", which is the same as leaving it out here.
            Value::Null => {}
            scalar => out.push((prefix.to_owned(), json!(value_text(scalar)))),
        }
    }
    fn insert(map: &mut serde_json::Map<String, Value>, parts: &[&str], value: Value) {
        match parts {
            [] => {}
            [last] => {
                map.insert((*last).to_owned(), value);
            }
            [first, rest @ ..] => {
                let child = map.entry((*first).to_owned()).or_insert_with(|| json!({}));
                if !child.is_object() {
                    *child = json!({});
                }
                if let Value::Object(child) = child {
                    insert(child, rest, value);
                }
            }
        }
    }
    if !settings.is_object() {
        return Err(ApiError::new(400, "settings_exception", "Failed to load settings: settings must be an object"));
    }
    let mut flat = Vec::new();
    flatten("", settings, &mut flat);
    let mut out = serde_json::Map::new();
    for (key, value) in flat {
        let key = if key.starts_with("index.") { key } else { format!("index.{key}") };
        let parts: Vec<&str> = key.split('.').collect();
        insert(&mut out, &parts, value);
    }
    Ok(Value::Object(out))
}

/// Whether some index name matches both `*`-patterns (the intersection of the two languages is
/// not empty). Walks both patterns together; a `*` on either side may swallow what the other side
/// produces, so the search is over pairs of positions, each visited once.
pub fn globs_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut seen = vec![false; (a.len() + 1) * (b.len() + 1)];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, j)) = stack.pop() {
        let slot = i * (b.len() + 1) + j;
        if seen[slot] {
            continue;
        }
        seen[slot] = true;
        if i == a.len() && j == b.len() {
            return true;
        }
        let (x, y) = (a.get(i).copied(), b.get(j).copied());
        if x == Some(b'*') {
            stack.push((i + 1, j));
            if y.is_some() {
                stack.push((i, j + 1));
            }
        }
        if y == Some(b'*') {
            stack.push((i, j + 1));
            if x.is_some() {
                stack.push((i + 1, j));
            }
        }
        if let (Some(x), Some(y)) = (x, y)
            && x != b'*'
            && y != b'*'
            && x == y
        {
            stack.push((i + 1, j + 1));
        }
    }
    false
}

/// The index patterns of a stored template (composable or legacy, both stored with a list).
fn patterns_of(template: &Value) -> impl Iterator<Item = &str> {
    template.get("index_patterns").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
}

/// Merges `from` into `into`, objects key by key, anything else replaced.
fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let pieces: Vec<&str> = parts.collect();
    let Some((last, middle)) = pieces.split_last() else { return rest.is_empty() };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The longest index pattern a template may have: OpenSearch's index-name limit of 255 bytes
/// (a dev-store bound: OpenSearch itself does not limit pattern length). It also bounds the
/// work of [`globs_overlap`], which is quadratic in the two patterns' lengths.
pub const MAX_PATTERN_BYTES: usize = 255;

/// OpenSearch's `MetadataIndexTemplateService.validate` for a template PUT (composable or
/// legacy): the name and every index pattern, all problems listed in one
/// `invalid_index_template_exception`; plus the dev store's pattern length bound.
pub fn validate_template(name: &str, patterns: &[String]) -> Result<(), ApiError> {
    let mut errors: Vec<String> = Vec::new();
    for (bad, what) in
        [(" ", "contain a space"), (",", "contain a ','"), ("#", "contain a '#'"), ("*", "contain a '*'")]
    {
        if name.contains(bad) {
            errors.push(format!("name must not {what}"));
        }
    }
    if name.starts_with('_') {
        errors.push("name must not start with '_'".into());
    }
    if name.to_lowercase() != name {
        errors.push("name must be lower cased".into());
    }
    for p in patterns {
        if p.contains(' ') {
            errors.push(format!("index_patterns [{p}] must not contain a space"));
        }
        for bad in [',', '#', ':'] {
            if p.contains(bad) {
                errors.push(format!("index_pattern [{p}] must not contain a '{bad}'"));
            }
        }
        if p.starts_with('_') {
            errors.push(format!("index_pattern [{p}] must not start with '_'"));
        }
        // `Strings.validFileNameExcludingAstrix`: OpenSearch's invalid file name characters
        // but `*`, printed as OpenSearch prints the whole set.
        if p.contains(['\\', '/', '?', '"', '<', '>', '|', ' ', ',']) {
            errors.push(format!(
                "index_pattern [{p}] must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?]"
            ));
        }
        if p.len() > MAX_PATTERN_BYTES {
            errors.push(format!(
                "index_pattern [{p}] must not be longer than {MAX_PATTERN_BYTES} bytes (a spanline-devstore limit, OpenSearch's index name limit)"
            ));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let listed: String = errors.iter().enumerate().map(|(i, e)| format!("{}: {e};", i + 1)).collect();
    Err(ApiError::new(
        400,
        "invalid_index_template_exception",
        format!("index_template [{name}] invalid, cause [Validation Failed: {listed}]"),
    ))
}

/// OpenSearch's index name rules.
pub fn validate_index_name(name: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| {
        Err(ApiError::new(400, "invalid_index_name_exception", format!("Invalid index name [{name}], {why}"))
            .with("index", name)
            .with("index_uuid", "_na_"))
    };
    if name.is_empty() {
        return invalid("must not be empty");
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return invalid("must be lowercase");
    }
    if name.starts_with(['_', '-', '+']) {
        return invalid("must not start with '_', '-', or '+'");
    }
    if name.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']) {
        return invalid("must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?, #, :]");
    }
    if name == "." || name == ".." || name.len() > 255 {
        return invalid("must not be '.', '..' or longer than 255 bytes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns() {
        assert!(glob("jaeger-span-*", "jaeger-span-2026-11-25"));
        assert!(!glob("jaeger-span-*", "jaeger-service-2026-11-25"));
        assert!(glob("*", "anything"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abcdf"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(glob("ab*b", "abb"));
        assert!(!glob("ab*b", "ab"));
    }

    #[test]
    fn create_conflicts_and_index_overwrites() {
        let mut s = Store::new(u64::MAX);
        let doc: Arc<str> = Arc::from(r#"{"a":1}"#);
        let first = s.write(WriteOp::Create, "i", "1", doc.clone(), None).expect("created");
        assert_eq!(first.status(), 201);
        let conflict = s.write(WriteOp::Create, "i", "1", doc.clone(), None).expect_err("conflict");
        assert_eq!(conflict.status, 409);
        assert_eq!(conflict.kind, "version_conflict_engine_exception");
        let updated = s.write(WriteOp::Index, "i", "1", Arc::from(r#"{"a":2}"#), None).expect("updated");
        assert_eq!(updated.status(), 200);
        assert_eq!(updated.version, 2);
        assert_eq!(s.index("i").map(|i| i.docs.len()), Some(1));
    }

    #[test]
    fn writes_are_searchable_only_after_refresh() {
        let mut s = Store::new(u64::MAX);
        s.write(WriteOp::Create, "i", "1", Arc::from("{}"), None).expect("created");
        assert_eq!(s.index("i").map(Index::visible_count), Some(0));
        s.refresh_all();
        assert_eq!(s.index("i").map(Index::visible_count), Some(1));
    }

    #[test]
    fn templates_apply_by_priority() {
        let mut s = Store::new(u64::MAX);
        s.put_template(
            "low",
            json!({"index_patterns": ["jaeger-*"], "priority": 1, "template": {"settings": {"n": 1}}}),
        )
        .expect("put");
        s.put_template(
            "high",
            json!({"index_patterns": ["jaeger-span-*"], "priority": 5, "template": {"settings": {"n": 5}}}),
        )
        .expect("put");
        s.create_index("jaeger-span-2026-11-25", &json!({})).expect("create");
        assert_eq!(s.index("jaeger-span-2026-11-25").map(|i| i.settings["index"]["n"].clone()), Some(json!("5")));
        assert!(s.put_template("bad", json!({"template": {}})).is_err());
    }

    #[test]
    fn overlapping_patterns() {
        assert!(globs_overlap("jaeger-span-*", "jaeger-*"));
        assert!(globs_overlap("jaeger-span-*", "*-span-*"));
        assert!(globs_overlap("a*", "*b"));
        assert!(globs_overlap("abc", "a*c"));
        assert!(globs_overlap("egg*", "eg*"));
        assert!(!globs_overlap("jaeger-span-*", "jaeger-service-*"));
        assert!(!globs_overlap("abc", "abd"));
        assert!(!globs_overlap("a*x", "b*"));
        assert!(globs_overlap("*", ""));
        assert!(!globs_overlap("a", ""));
    }

    #[test]
    fn settings_are_nested_strings_under_index() {
        let got = normalize_settings(&json!({"index.number_of_shards": 5, "number_of_replicas": 1,
            "index": {"mapping.nested_fields.limit": 50, "requests": {"cache": {"enable": true}}}}))
        .expect("normalises");
        assert_eq!(
            got,
            json!({"index": {"number_of_shards": "5", "number_of_replicas": "1",
                "mapping": {"nested_fields": {"limit": "50"}}, "requests": {"cache": {"enable": "true"}}}})
        );
    }

    #[test]
    fn memory_cap_is_a_circuit_breaker() {
        let mut s = Store::new(200);
        s.write(WriteOp::Create, "i", "1", Arc::from("{}"), None).expect("fits");
        let err = s.write(WriteOp::Create, "i", "2", Arc::from("x".repeat(200)), None).expect_err("over cap");
        assert_eq!(err.status, 429);
        assert_eq!(err.kind, "circuit_breaking_exception");
        assert!(err.reason.contains("memory cap"));
    }

    /// An overwritten document's old values leave the postings, and their memory the account: a
    /// document overwritten with new values again and again costs the same after every refresh.
    #[test]
    fn overwrites_release_their_postings() {
        let mut s = Store::new(u64::MAX);
        let mappings =
            json!({ "mappings": { "properties": { "traceID": { "type": "keyword" }, "n": { "type": "long" } } } });
        s.create_index("i", &mappings).expect("create");
        let mut used = Vec::new();
        for v in 0..20 {
            let source = format!(r#"{{"traceID":"t{v:031}","n":{}}}"#, 1000 + v);
            s.write(WriteOp::Index, "i", "1", Arc::from(source.as_str()), None).expect("write");
            s.refresh_all();
            used.push(s.bytes_used());
        }
        assert!(used.windows(2).all(|w| w[0] == w[1]), "memory grows with overwrites: {used:?}");
    }

    #[test]
    fn resolve_and_names() {
        let mut s = Store::new(u64::MAX);
        s.create_index("a-1", &json!({})).expect("create");
        s.create_index("a-2", &json!({})).expect("create");
        assert_eq!(s.resolve("a-*").expect("resolves"), vec!["a-1", "a-2"]);
        assert_eq!(s.resolve("a-2,a-1").expect("resolves"), vec!["a-1", "a-2"]);
        assert!(s.resolve("b-*").expect("resolves").is_empty());
        assert_eq!(s.resolve("b").expect_err("missing").status, 404);
        assert_eq!(s.create_index("Upper", &json!({})).expect_err("invalid").kind, "invalid_index_name_exception");
        assert_eq!(s.create_index("a-1", &json!({})).expect_err("exists").kind, "resource_already_exists_exception");
    }
}
