//! Field types read from the searched indices' mappings, so that sorting and aggregations answer
//! with OpenSearch's value shapes (numbers for `long` and `date`, text for `keyword`) and refuse
//! what would need nested documents.

use std::collections::HashMap;

use serde_json::Value;

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
            }
            if let Some(inner) = spec.get("properties") {
                self.walk(&path, inner);
            }
        }
    }

    pub fn get(&self, path: &str) -> Option<FieldType> {
        self.types.get(path).copied()
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
}
