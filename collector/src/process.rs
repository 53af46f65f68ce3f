//! `process`: the optional processors between `receive` and `encode`, in order: consistent
//! probabilistic sampling, then attribute redaction. Both work on the decoded request in place.
//!
//! Called by [`crate::pipeline::Exporter`] for every export. Guarantees: the sampling decision is a
//! pure function of the trace id (the W3C random bits, its rightmost 56 bits), so every collector
//! instance with the same ratio keeps exactly the same traces; redaction runs before anything
//! reaches Kafka, on resource, span, event and link attributes.

use hmac::{Hmac, Mac};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value},
};
use regex::RegexSet;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use spanline_common::{
    ids::to_hex,
    secret::{self, Secret},
};

/// The `[processors]` config section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorsConfig {
    /// Share of traces kept, 0.0 to 1.0. Default 1.0 (keep everything).
    pub sampling_ratio: f64,
    /// Secret for `hash` redaction rules (HMAC-SHA256). Required when a rule hashes (this or
    /// `redaction_hash_key_file`). Never printed. Default empty.
    pub redaction_hash_key: Secret,
    /// A file holding the key instead (one trailing newline ignored), as a Kubernetes Secret mounts
    /// it. Read once at start. Default empty.
    pub redaction_hash_key_file: String,
    /// Redaction rules, applied in order; the first matching rule decides. Default none.
    pub redaction: Vec<RedactionRule>,
}

impl Default for ProcessorsConfig {
    fn default() -> Self {
        Self {
            sampling_ratio: 1.0,
            redaction_hash_key: Secret::default(),
            redaction_hash_key_file: String::new(),
            redaction: Vec::new(),
        }
    }
}

/// One redaction rule: which attribute keys, and what to do with their values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionRule {
    /// An exact attribute key.
    #[serde(default)]
    pub key: Option<String>,
    /// A regular expression matched against attribute keys (anchor it with `^…$` for whole keys).
    #[serde(default)]
    pub key_pattern: Option<String>,
    pub action: RedactAction,
}

/// What a redaction rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedactAction {
    /// Remove the attribute.
    Drop,
    /// Replace the value with `****`.
    Mask,
    /// Replace the value with `hmac-sha256:` and the hex HMAC of its text under the configured key,
    /// so equal values stay joinable without being readable.
    Hash,
}

/// The text a mask leaves.
pub const MASK: &str = "****";

/// The processors, compiled from config once.
#[derive(Debug, Clone)]
pub struct Processors {
    /// Spans are kept when their trace's 56 random bits are below this; `None` keeps everything.
    threshold: Option<u64>,
    exact: Vec<(String, usize)>,
    patterns: RegexSet,
    pattern_rules: Vec<usize>,
    actions: Vec<RedactAction>,
    hash_key: Secret,
}

/// What processing did to a request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Processed {
    pub sampled_out: usize,
    pub redacted: usize,
}

impl Processors {
    /// Compiles and checks `config`; the error names the field.
    pub fn new(config: &ProcessorsConfig) -> Result<Self, String> {
        let hash_key = secret::resolve(
            "processors.redaction_hash_key",
            &config.redaction_hash_key,
            &config.redaction_hash_key_file,
        )?;
        let ratio = config.sampling_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!("processors.sampling_ratio must be within 0..=1, got {ratio}"));
        }
        const SPACE: f64 = (1u64 << 56) as f64;
        let threshold = (ratio < 1.0).then_some((ratio * SPACE) as u64);
        let mut exact = Vec::new();
        let mut patterns = Vec::new();
        let mut pattern_rules = Vec::new();
        for (i, rule) in config.redaction.iter().enumerate() {
            match (&rule.key, &rule.key_pattern) {
                (Some(key), None) => exact.push((key.clone(), i)),
                (None, Some(pattern)) => {
                    regex::Regex::new(pattern).map_err(|e| format!("processors.redaction[{i}].key_pattern: {e}"))?;
                    patterns.push(pattern.clone());
                    pattern_rules.push(i);
                }
                _ => return Err(format!("processors.redaction[{i}] needs exactly one of key and key_pattern")),
            }
            if rule.action == RedactAction::Hash && hash_key.is_none() {
                return Err(format!(
                    "processors.redaction[{i}] hashes, so processors.redaction_hash_key or redaction_hash_key_file must be set"
                ));
            }
        }
        Ok(Self {
            threshold,
            exact,
            patterns: RegexSet::new(&patterns).map_err(|e| e.to_string())?,
            pattern_rules,
            actions: config.redaction.iter().map(|r| r.action).collect(),
            hash_key: hash_key.unwrap_or_default(),
        })
    }

    /// Whether any redaction rule is configured (redaction needs the decoded request).
    pub fn redacts(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Whether a trace is kept. Ids that are not 16 bytes are kept for validation to reject.
    pub fn keeps_trace(&self, trace_id: &[u8]) -> bool {
        match (self.threshold, <[u8; 16]>::try_from(trace_id)) {
            (Some(threshold), Ok(id)) => {
                let mut random = [0u8; 8];
                random[1..].copy_from_slice(&id[9..]);
                u64::from_be_bytes(random) < threshold
            }
            _ => true,
        }
    }

    /// Samples and redacts `request` in place.
    pub fn apply(&self, request: &mut ExportTraceServiceRequest) -> Processed {
        let mut done = Processed::default();
        let redacting = !self.actions.is_empty();
        for rs in &mut request.resource_spans {
            if redacting && let Some(resource) = rs.resource.as_mut() {
                done.redacted += self.redact(&mut resource.attributes);
            }
            for ss in &mut rs.scope_spans {
                if self.threshold.is_some() {
                    let before = ss.spans.len();
                    ss.spans.retain(|s| self.keeps_trace(&s.trace_id));
                    done.sampled_out += before - ss.spans.len();
                }
                if redacting {
                    for span in &mut ss.spans {
                        done.redacted += self.redact(&mut span.attributes);
                        for event in &mut span.events {
                            done.redacted += self.redact(&mut event.attributes);
                        }
                        for link in &mut span.links {
                            done.redacted += self.redact(&mut link.attributes);
                        }
                    }
                }
            }
        }
        done
    }

    fn action_for(&self, key: &str) -> Option<RedactAction> {
        let exact = self.exact.iter().find(|(k, _)| k == key).map(|(_, i)| *i);
        let pattern = self.patterns.matches(key).iter().next().map(|m| self.pattern_rules[m]);
        // The first rule in config order wins.
        match (exact, pattern) {
            (Some(a), Some(b)) => Some(self.actions[a.min(b)]),
            (Some(i), None) | (None, Some(i)) => Some(self.actions[i]),
            (None, None) => None,
        }
    }

    fn redact(&self, attributes: &mut Vec<KeyValue>) -> usize {
        let mut n = 0;
        attributes.retain_mut(|kv| match self.action_for(&kv.key) {
            None => true,
            Some(RedactAction::Drop) => {
                n += 1;
                false
            }
            Some(RedactAction::Mask) => {
                n += 1;
                kv.value = Some(string_value(MASK.to_owned()));
                true
            }
            Some(RedactAction::Hash) => {
                n += 1;
                let text = value_text(kv.value.as_ref());
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.hash_key.expose().as_bytes())
                    .expect("HMAC takes keys of any length");
                mac.update(text.as_bytes());
                kv.value = Some(string_value(format!("hmac-sha256:{}", to_hex(&mac.finalize().into_bytes()))));
                true
            }
        });
        n
    }
}

fn string_value(s: String) -> AnyValue {
    AnyValue { value: Some(any_value::Value::StringValue(s)) }
}

fn value_text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => to_hex(b),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event},
    };

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue { key: key.into(), value: Some(string_value(value.into())), ..Default::default() }
    }

    fn config(rules: Vec<RedactionRule>) -> ProcessorsConfig {
        ProcessorsConfig { redaction_hash_key: Secret::new("secret"), redaction: rules, ..ProcessorsConfig::default() }
    }

    fn rule(key: Option<&str>, pattern: Option<&str>, action: RedactAction) -> RedactionRule {
        RedactionRule { key: key.map(Into::into), key_pattern: pattern.map(Into::into), action }
    }

    #[test]
    fn sampling_is_a_function_of_the_trace_id() {
        let p =
            Processors::new(&ProcessorsConfig { sampling_ratio: 0.25, ..ProcessorsConfig::default() }).expect("valid");
        let q =
            Processors::new(&ProcessorsConfig { sampling_ratio: 0.25, ..ProcessorsConfig::default() }).expect("valid");
        let mut kept = 0;
        for n in 0u64..4_000 {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
            assert_eq!(p.keeps_trace(&id), q.keeps_trace(&id));
            kept += usize::from(p.keeps_trace(&id));
        }
        assert!((800..1_200).contains(&kept), "about a quarter kept: {kept}");
        let all = Processors::new(&ProcessorsConfig::default()).expect("valid");
        assert!(all.keeps_trace(&[0xff; 16]));
        assert!(Processors::new(&ProcessorsConfig { sampling_ratio: 1.5, ..ProcessorsConfig::default() }).is_err());
    }

    #[test]
    fn redaction_on_resource_span_and_event_attributes() {
        let p = Processors::new(&config(vec![
            rule(Some("user.email"), None, RedactAction::Mask),
            rule(None, Some("^http\\.request\\.header\\."), RedactAction::Drop),
            rule(Some("user.id"), None, RedactAction::Hash),
        ]))
        .expect("valid");
        let mut request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("user.email", "a@b.c"), kv("host", "h")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        attributes: vec![
                            kv("http.request.header.authorization", "Bearer x"),
                            kv("user.id", "42"),
                            kv("ok", "1"),
                        ],
                        events: vec![Event { attributes: vec![kv("user.email", "x@y.z")], ..Default::default() }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let done = p.apply(&mut request);
        assert_eq!(done.redacted, 4);
        let rs = &request.resource_spans[0];
        let resource = &rs.resource.as_ref().expect("resource").attributes;
        assert_eq!(value_text(resource[0].value.as_ref()), MASK);
        let span = &rs.scope_spans[0].spans[0];
        let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, vec!["user.id", "ok"]);
        let hashed = value_text(span.attributes[0].value.as_ref());
        assert!(hashed.starts_with("hmac-sha256:") && !hashed.contains("42"));
        assert_eq!(value_text(span.events[0].attributes[0].value.as_ref()), MASK);
    }

    #[test]
    fn the_hash_key_comes_from_a_file_as_from_the_setting_and_is_never_printed() {
        let rules = vec![rule(Some("user.id"), None, RedactAction::Hash)];
        let inline = Processors::new(&config(rules.clone())).expect("inline key");
        let mut file = tempfile::NamedTempFile::new().expect("temp");
        std::io::Write::write_all(&mut file, b"secret\n").expect("write");
        let from_file = ProcessorsConfig {
            redaction_hash_key_file: file.path().display().to_string(),
            redaction: rules,
            ..ProcessorsConfig::default()
        };
        let printed = format!("{from_file:?} {:?}", Processors::new(&from_file).expect("file key"));
        let from_file = Processors::new(&from_file).expect("file key");
        let hashed = |p: &Processors| {
            let mut attributes = vec![kv("user.id", "42")];
            p.redact(&mut attributes);
            value_text(attributes[0].value.as_ref())
        };
        assert_eq!(hashed(&inline), hashed(&from_file), "the file's key, its newline dropped");
        assert!(!format!("{printed} {inline:?} {:?}", config(vec![])).contains("secret"), "a key in Debug");
        let both = ProcessorsConfig { redaction_hash_key_file: "/x".into(), ..config(vec![]) };
        assert!(Processors::new(&both).expect_err("both").contains("exclude each other"));
    }

    #[test]
    fn bad_rules_are_named() {
        assert!(
            Processors::new(&config(vec![rule(None, Some("("), RedactAction::Drop)]))
                .expect_err("bad regex")
                .contains("key_pattern")
        );
        assert!(Processors::new(&config(vec![rule(Some("a"), Some("b"), RedactAction::Drop)])).is_err());
        let no_key = ProcessorsConfig {
            redaction: vec![rule(Some("a"), None, RedactAction::Hash)],
            ..ProcessorsConfig::default()
        };
        assert!(Processors::new(&no_key).expect_err("no key").contains("redaction_hash_key"));
    }
}
