//! Fault injection: what the store does wrong on purpose, set by flags at start and changed at run
//! time through `PUT /_devstore/faults` (see docs/devstore.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Faults in force. Every field is optional; the default injects nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Every `_bulk` request is answered with this whole-request status (3xx, 400, 401, 403, 404,
    /// 405, 429, 5xx, ...) and the body OpenSearch (or, for a 3xx or a 404, the proxy in front of it)
    /// sends with it; nothing is stored. See `error::for_status`.
    pub bulk_status: Option<u16>,
    /// With `bulk_status`: only the next N bulk requests fail, then the fault clears itself.
    /// `None` means until changed.
    pub bulk_status_times: Option<u64>,
    /// Every `_bulk` item (whose action line parses) is answered with this item-level status inside
    /// an HTTP 200 and OpenSearch's error for it: 403 `cluster_block_exception` (the index has a
    /// write block) or 404 `index_not_found_exception` (the index is missing and
    /// `action.auto_create_index` is false); nothing is stored.
    pub item_status: Option<u16>,
    /// With `item_status`: only the next N bulk requests get it, then the fault clears itself.
    /// `None` means until changed.
    pub item_status_times: Option<u64>,
    /// `_bulk` bodies larger than this many bytes get HTTP 413 (OpenSearch's
    /// `http.max_content_length`). Default: none beyond the server's own 100 MiB limit.
    pub max_bulk_bytes: Option<u64>,
    /// Share of bulk items (0.0 to 1.0) answered with an item-level 429
    /// `es_rejected_execution_exception` inside an HTTP 200, chosen at random.
    pub item_429_rate: f64,
    /// Items whose document matches this rule are answered with an item-level 400
    /// `mapper_parsing_exception`.
    pub reject: Option<RejectRule>,
    /// Latency added before answering every request except `/_devstore/*`.
    #[serde(with = "humantime_serde")]
    pub latency: Option<Duration>,
}

/// Matches a document whose value at the dotted `field` path (any array element) contains `contains`
/// in its string form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RejectRule {
    pub field: String,
    pub contains: String,
}

impl RejectRule {
    /// Parses `FIELD~TEXT`, the form the `--reject` flag takes.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (field, contains) =
            spec.split_once('~').ok_or_else(|| format!("reject rule {spec:?} must look like FIELD~TEXT"))?;
        if field.is_empty() || contains.is_empty() {
            return Err(format!("reject rule {spec:?} needs a field and a text"));
        }
        Ok(Self { field: field.to_owned(), contains: contains.to_owned() })
    }

    /// Whether `doc` matches this rule.
    pub fn matches(&self, doc: &Value) -> bool {
        crate::query::resolve(doc, &self.field).iter().any(|v| match v {
            Value::String(s) => s.contains(&self.contains),
            other => other.to_string().contains(&self.contains),
        })
    }
}

/// The item-level statuses `item_status` injects.
pub const ITEM_STATUSES: [u16; 2] = [403, 404];

impl Faults {
    /// Checks ranges; the admin endpoint answers 400 with this message.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.item_429_rate) {
            return Err(format!("item_429_rate must be within 0..=1, got {}", self.item_429_rate));
        }
        if let Some(status) = self.bulk_status
            && !(300..=599).contains(&status)
        {
            return Err(format!("bulk_status must be an HTTP redirect or error status (300 to 599), got {status}"));
        }
        if let Some(status) = self.item_status
            && !ITEM_STATUSES.contains(&status)
        {
            return Err(format!("item_status must be one of {ITEM_STATUSES:?}, got {status}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reject_rule_matches_nested_arrays() {
        let rule = RejectRule::parse("tags.value~poison").expect("parses");
        assert!(rule.matches(&json!({"tags": [{"value": "ok"}, {"value": "a poison pill"}]})));
        assert!(!rule.matches(&json!({"tags": [{"value": "ok"}]})));
        assert!(RejectRule::parse("nofield").is_err());
    }

    #[test]
    fn validate_ranges() {
        assert!(Faults { item_429_rate: 1.5, ..Default::default() }.validate().is_err());
        assert!(Faults { bulk_status: Some(200), ..Default::default() }.validate().is_err());
        assert!(Faults { bulk_status: Some(503), ..Default::default() }.validate().is_ok());
        assert!(Faults { bulk_status: Some(301), ..Default::default() }.validate().is_ok());
        assert!(Faults { item_status: Some(403), ..Default::default() }.validate().is_ok());
        assert!(Faults { item_status: Some(500), ..Default::default() }.validate().is_err());
    }
}
