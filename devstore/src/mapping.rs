//! Field types read from the searched indices' mappings, so that sorting and aggregations answer
//! with OpenSearch's value shapes (numbers for `long` and `date`, text for `keyword`) and refuse
//! what would need nested documents.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::ApiError;

/// OpenSearch's 400 for sorting or aggregating on a `text` field (`TextFieldMapper`, fielddata
/// disabled by default).
pub fn fielddata_disabled(field: &str) -> ApiError {
    ApiError::new(
        400,
        "illegal_argument_exception",
        format!(
            "Text fields are not optimised for operations that require per-document field data like aggregations and sorting, so these operations are disabled by default. Please use a keyword field instead. Alternatively, set fielddata=true on [{field}] in order to load field data by uninverting the inverted index. Note that this can use significant memory."
        ),
    )
}

/// What a mapped field is, as far as sort values and bucket keys care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Keyword,
    Text,
    Numeric,
    /// `epoch_millis`: the field's format prints dates as milliseconds.
    Date {
        epoch_millis: bool,
    },
    Other,
}

impl FieldType {
    /// Numbers in sort values and keys.
    pub fn is_numeric(self) -> bool {
        matches!(self, FieldType::Numeric | FieldType::Date { .. })
    }
}

/// The mapped fields of a set of indices, by dotted path. The first index that maps a path wins.
#[derive(Debug, Default)]
pub struct Fields {
    types: HashMap<String, FieldType>,
    /// The mapping's own type name (`long`, `date`, ...), for OpenSearch's error messages.
    kinds: HashMap<String, String>,
    /// Keyword fields' `ignore_above`: longer values (in UTF-16 code units, Java's
    /// `String.length()`) are not indexed.
    ignore_above: HashMap<String, usize>,
    nested: Vec<String>,
}

impl Fields {
    pub fn from_mappings<'a>(mappings: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut fields = Fields::default();
        for mapping in mappings {
            if let Some(properties) = mapping.get("properties") {
                fields.walk("", properties);
            }
        }
        fields
    }

    fn walk(&mut self, prefix: &str, properties: &Value) {
        let Some(properties) = properties.as_object() else { return };
        for (name, spec) in properties {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            if let Some(kind) = spec.get("type").and_then(Value::as_str) {
                let ty = match kind {
                    "keyword" | "constant_keyword" | "wildcard" => FieldType::Keyword,
                    "text" | "match_only_text" => FieldType::Text,
                    "long" | "integer" | "short" | "byte" | "double" | "float" | "half_float" | "scaled_float"
                    | "unsigned_long" => FieldType::Numeric,
                    "date" | "date_nanos" => FieldType::Date {
                        epoch_millis: spec
                            .get("format")
                            .and_then(Value::as_str)
                            .is_some_and(|f| f.starts_with("epoch_millis")),
                    },
                    "nested" => {
                        if !self.nested.contains(&path) {
                            self.nested.push(path.clone());
                        }
                        FieldType::Other
                    }
                    _ => FieldType::Other,
                };
                self.types.entry(path.clone()).or_insert(ty);
                self.kinds.entry(path.clone()).or_insert_with(|| kind.to_owned());
                if ty == FieldType::Keyword
                    && let Some(limit) = spec.get("ignore_above").and_then(Value::as_u64)
                {
                    self.ignore_above.entry(path.clone()).or_insert(usize::try_from(limit).unwrap_or(usize::MAX));
                }
            }
            if let Some(inner) = spec.get("properties") {
                self.walk(&path, inner);
            }
        }
    }

    pub fn get(&self, path: &str) -> Option<FieldType> {
        self.types.get(path).copied()
    }

    /// Every mapped path with its type.
    pub fn paths(&self) -> impl Iterator<Item = (&str, FieldType)> {
        self.types.iter().map(|(path, ty)| (path.as_str(), *ty))
    }

    /// [`Fields::indexed_view`] in place: `source` becomes the document as OpenSearch indexed it.
    pub fn strip_ignored_in_place(&self, source: &mut Value) {
        if !self.ignore_above.is_empty() {
            self.strip_ignored("", source);
        }
    }

    /// The mapping type name of `path` (`long`, `keyword`, ...).
    pub fn kind(&self, path: &str) -> Option<&str> {
        self.kinds.get(path).map(String::as_str)
    }

    /// The document as OpenSearch indexed it, when that differs from its `_source`: keyword
    /// values longer than their field's `ignore_above` are left out (not indexed, so no query,
    /// aggregation or sort sees them, and `exists` is false where they were the only values).
    /// `None` when nothing was left out.
    pub fn indexed_view(&self, source: &Value) -> Option<Value> {
        if self.ignore_above.is_empty() {
            return None;
        }
        let mut view = source.clone();
        self.strip_ignored("", &mut view).then_some(view)
    }

    /// Removes ignored values under `prefix` in `v`; whether anything was removed.
    fn strip_ignored(&self, prefix: &str, v: &mut Value) -> bool {
        let mut path = String::with_capacity(64);
        path.push_str(prefix);
        self.strip_at(&mut path, v)
    }

    /// [`Fields::strip_ignored`] with the dotted path of `v` in a reused buffer.
    fn strip_at(&self, path: &mut String, v: &mut Value) -> bool {
        match v {
            Value::Array(items) => items.iter_mut().fold(false, |acc, item| self.strip_at(path, item) | acc),
            Value::Object(map) => {
                let mut changed = false;
                let mut emptied = Vec::new();
                let base = path.len();
                for (key, value) in map.iter_mut() {
                    if base > 0 {
                        path.push('.');
                    }
                    path.push_str(key);
                    if let Some(&limit) = self.ignore_above.get(path.as_str()) {
                        let too_long = |x: &Value| match x {
                            // UTF-16 units never outnumber UTF-8 bytes: most strings need no count.
                            Value::String(s) => s.len() > limit && s.encode_utf16().count() > limit,
                            Value::Array(_) | Value::Object(_) | Value::Null => false,
                            other => other.to_string().encode_utf16().count() > limit,
                        };
                        match value {
                            Value::Array(items) => {
                                let before = items.len();
                                items.retain(|x| !too_long(x));
                                if items.len() != before {
                                    changed = true;
                                    if items.is_empty() {
                                        emptied.push(key.clone());
                                    }
                                }
                            }
                            x if too_long(x) => {
                                changed = true;
                                emptied.push(key.clone());
                            }
                            _ => {}
                        }
                    } else {
                        changed |= self.strip_at(path, value);
                    }
                    path.truncate(base);
                }
                for key in emptied {
                    map.remove(&key);
                }
                changed
            }
            _ => false,
        }
    }

    /// The nested object path `path` lies inside, if any.
    pub fn nested_parent(&self, path: &str) -> Option<&str> {
        self.nested
            .iter()
            .find(|n| path.strip_prefix(n.as_str()).is_some_and(|rest| rest.starts_with('.')))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_and_nested_paths() {
        let m = json!({"properties": {
            "traceID": {"type": "keyword"}, "startTime": {"type": "long"},
            "startTimeMillis": {"type": "date", "format": "epoch_millis"},
            "tags": {"type": "nested", "properties": {"key": {"type": "keyword"}}},
            "process": {"properties": {"serviceName": {"type": "keyword"}}}
        }});
        let f = Fields::from_mappings([&m]);
        assert_eq!(f.get("traceID"), Some(FieldType::Keyword));
        assert_eq!(f.get("startTime"), Some(FieldType::Numeric));
        assert_eq!(f.get("startTimeMillis"), Some(FieldType::Date { epoch_millis: true }));
        assert_eq!(f.get("process.serviceName"), Some(FieldType::Keyword));
        assert_eq!(f.nested_parent("tags.key"), Some("tags"));
        assert_eq!(f.nested_parent("tagsx.key"), None);
        assert_eq!(f.get("missing"), None);
    }

    #[test]
    fn ignore_above_leaves_long_keyword_values_out_of_the_indexed_view() {
        let m = json!({"properties": {
            "traceID": {"type": "keyword", "ignore_above": 3},
            "body": {"type": "text"},
            "tags": {"type": "nested", "properties": {"value": {"type": "keyword", "ignore_above": 3}}}
        }});
        let f = Fields::from_mappings([&m]);
        let short = json!({"traceID": "abc", "tags": [{"value": "ok"}]});
        assert_eq!(f.indexed_view(&short), None, "nothing ignored");
        let doc = json!({"traceID": "abcd", "body": "long text is not keyword",
            "tags": [{"value": "ok"}, {"value": ["x", "toolong"]}, {"value": 1234}]});
        assert_eq!(
            f.indexed_view(&doc),
            Some(json!({"body": "long text is not keyword", "tags": [{"value": "ok"}, {"value": ["x"]}, {}]}))
        );
        // Java counts UTF-16 code units: one astral character is two.
        let astral = json!({"traceID": "a\u{1F600}"});
        assert_eq!(f.indexed_view(&astral), None);
        let astral = json!({"traceID": "ab\u{1F600}"});
        assert_eq!(f.indexed_view(&astral), Some(json!({})));
        assert_eq!(f.kind("traceID"), Some("keyword"));
    }
}
