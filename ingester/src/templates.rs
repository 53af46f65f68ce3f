//! The index templates for span and service indices (REFERENCE.md §4), installed at start when
//! missing, so every daily index gets Jaeger's mapping.
//!
//! They are composable templates (`_index_template`) with `opensearch.template_priority`. OpenSearch
//! refuses a composable template whose patterns overlap another one's at the same priority (it
//! could not choose between them when creating an index); that is a configuration problem, so it
//! stops the ingester at start with [`Error::TemplateConflict`], which names the other template and
//! the setting. Jaeger's own templates on OpenSearch are legacy `_template`s: installing ours over
//! them is allowed (a composable template overrides a legacy one; OpenSearch only warns), but the
//! reverse is not — once ours exists, OpenSearch 2.x refuses (400) a new legacy template, or one
//! whose patterns change, that overlaps its patterns, so Jaeger's own template creation fails
//! unless its legacy templates were installed first (or it runs with template creation off).

use opensearch::http::{Method, StatusCode, headers::HeaderMap};
use serde_json::{Value, json};

use crate::{document::IndexNames, error::Error};

fn keyword() -> Value {
    json!({"type": "keyword", "ignore_above": 256})
}

fn key_values() -> Value {
    json!({"type": "nested", "dynamic": false, "properties": {"key": keyword(), "value": keyword(), "type": keyword()}})
}

/// The default of `opensearch.template_priority`.
pub const DEFAULT_PRIORITY: u32 = 100;

/// The composable template for span indices matching `pattern`.
pub fn span_template(pattern: &str, priority: u32) -> Value {
    json!({
        "index_patterns": [pattern],
        "priority": priority,
        "template": {
            "settings": {
                "index.number_of_shards": 5,
                "index.number_of_replicas": 1,
                "index.mapping.nested_fields.limit": 50,
                "index.requests.cache.enable": true
            },
            "mappings": {
                "dynamic_templates": [
                    {"span_tags_map": {"path_match": "tag.*", "mapping": keyword()}},
                    {"process_tags_map": {"path_match": "process.tag.*", "mapping": keyword()}}
                ],
                "properties": {
                    "traceID": keyword(),
                    "spanID": keyword(),
                    "parentSpanID": keyword(),
                    "operationName": keyword(),
                    "flags": {"type": "integer"},
                    "startTime": {"type": "long"},
                    "startTimeMillis": {"type": "date", "format": "epoch_millis"},
                    "duration": {"type": "long"},
                    "references": {"type": "nested", "dynamic": false, "properties": {
                        "refType": keyword(), "traceID": keyword(), "spanID": keyword()
                    }},
                    "tags": key_values(),
                    "tag": {"type": "object"},
                    "logs": {"type": "nested", "dynamic": false, "properties": {
                        "timestamp": {"type": "long"},
                        "fields": key_values()
                    }},
                    "process": {"properties": {
                        "serviceName": keyword(),
                        "tags": key_values(),
                        "tag": {"type": "object"}
                    }}
                }
            }
        }
    })
}

/// The composable template for service indices matching `pattern`.
pub fn service_template(pattern: &str, priority: u32) -> Value {
    json!({
        "index_patterns": [pattern],
        "priority": priority,
        "template": {
            "settings": {"index.number_of_shards": 5, "index.number_of_replicas": 1},
            "mappings": {"properties": {"serviceName": keyword(), "operationName": keyword()}}
        }
    })
}

/// Installs both templates with `priority` unless a template of the same name exists (an existing
/// template is left as it is, whatever its priority). A refusal because another template matches
/// the same indices at this priority is [`Error::TemplateConflict`] (see
/// [`Error::is_fatal_at_start`]).
pub async fn install(
    client: &crate::store::Node,
    names: &IndexNames,
    prefix: &str,
    priority: u32,
) -> Result<(), Error> {
    let (span_pattern, service_pattern) = names.patterns();
    let p = if prefix.is_empty() { String::new() } else { format!("{prefix}-") };
    for (name, body) in [
        (format!("{p}jaeger-span"), span_template(&span_pattern, priority)),
        (format!("{p}jaeger-service"), service_template(&service_pattern, priority)),
    ] {
        let path = format!("/_index_template/{name}");
        let exists = client
            .send(Method::Head, &path, HeaderMap::new(), None::<Vec<u8>>, None)
            .await
            .map_err(|e| Error::OpenSearch(format!("cannot check index template {name}: {e}")))?;
        if exists.status_code() == StatusCode::OK {
            tracing::info!(template = %name, "index template present");
            continue;
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            opensearch::http::headers::CONTENT_TYPE,
            opensearch::http::headers::HeaderValue::from_static("application/json"),
        );
        let response = client
            .send(Method::Put, &path, headers, Some(body.to_string()), None)
            .await
            .map_err(|e| Error::OpenSearch(format!("cannot install index template {name}: {e}")))?;
        if !response.status_code().is_success() {
            let status = response.status_code().as_u16();
            let text = if response.content_length().is_some_and(|n| n > crate::bulk::SMALL_ANSWER) {
                String::from("(answer too large to read)")
            } else {
                response.text().await.unwrap_or_default()
            };
            return Err(refusal(&name, priority, status, &text));
        }
        tracing::info!(template = %name, priority, "index template installed");
    }
    Ok(())
}

/// Classifies OpenSearch's refusal of a template PUT: a same-priority conflict (a 400
/// `illegal_argument_exception` naming the existing templates), a missing permission (401/403:
/// [`Error::TemplatePermission`], which says which permission and the way around it; still retried,
/// since a grant needs no restart), or anything else.
pub fn refusal(template: &str, priority: u32, status: u16, body: &str) -> Error {
    if matches!(status, 401 | 403) {
        let said = crate::bulk::classify::refusal(status, body.as_bytes());
        return Error::TemplatePermission {
            template: template.to_owned(),
            status,
            error_type: if said.error_type.is_empty() { "no error type".into() } else { said.error_type },
            reason: said.reason,
        };
    }
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let reason = parsed.pointer("/error/reason").and_then(Value::as_str).unwrap_or_default();
    let conflicting = (status == 400
        && parsed.pointer("/error/type").and_then(Value::as_str) == Some("illegal_argument_exception"))
    .then(|| {
        // "... matching patterns from existing templates [a,b] with patterns (a => [...]) that have
        // the same priority [100], ..." (OpenSearch's MetadataIndexTemplateService)
        let rest = reason.split_once("from existing templates [")?.1;
        let (names, rest) = rest.split_once("] with patterns (")?;
        rest.contains("that have the same priority").then(|| names.to_owned())
    })
    .flatten();
    match conflicting {
        Some(conflicting) => {
            Error::TemplateConflict { template: template.to_owned(), priority, conflicting, reason: reason.to_owned() }
        }
        None => Error::OpenSearch(format!("installing index template {template} answered {status}: {body}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_same_priority_refusal_is_a_conflict_naming_the_other_template() {
        let body = json!({"error": {"type": "illegal_argument_exception", "reason": "index template [jaeger-span] has index patterns [jaeger-span-*] matching patterns from existing templates [legacy-spans,x] with patterns (legacy-spans => [jaeger-*],x => [*-span-*]) that have the same priority [100], multiple index templates may not match during index creation, please use a different priority"}, "status": 400}).to_string();
        let error = refusal("jaeger-span", 100, 400, &body);
        assert!(error.is_fatal_at_start());
        let Error::TemplateConflict { conflicting, .. } = &error else { panic!("{error}") };
        assert_eq!(conflicting, "legacy-spans,x");
        let text = error.to_string();
        assert!(text.contains("[legacy-spans,x]") && text.contains("opensearch.template_priority"), "{text}");

        for (status, body) in [
            (400, json!({"error": {"type": "illegal_argument_exception", "reason": "unknown setting [index.x]"}}).to_string()),
            (400, json!({"error": {"type": "x_content_parse_exception", "reason": "from existing templates [a] with patterns ( that have the same priority"}}).to_string()),
            (503, String::new()),
        ] {
            let error = refusal("jaeger-span", 100, status, &body);
            assert!(matches!(error, Error::OpenSearch(_)) && !error.is_fatal_at_start(), "{status} {body}: {error}");
        }
    }

    /// A template refused for want of a permission names the permission, the setting that avoids
    /// it, and the store's own words, and is retried (not fatal at start).
    #[test]
    fn a_permission_refusal_says_what_to_grant_or_set() {
        let security = json!({"error": {"root_cause": [{"type": "security_exception", "reason": "no permissions for [indices:admin/index_template/put] and User [name=spanline, backend_roles=[], requestedTenant=null]"}], "type": "security_exception", "reason": "no permissions for [indices:admin/index_template/put] and User [name=spanline, backend_roles=[], requestedTenant=null]"}, "status": 403}).to_string();
        for (status, body) in [(403, security.as_str()), (401, "Unauthorized"), (403, "")] {
            let error = refusal("jaeger-span", 100, status, body);
            assert!(matches!(error, Error::TemplatePermission { .. }) && !error.is_fatal_at_start(), "{error}");
            let text = error.to_string();
            for needle in
                ["indices:admin/index_template/put", "opensearch.create_templates = false", "grant", "retrying"]
            {
                assert!(text.contains(needle), "{needle} missing from: {text}");
            }
        }
        let text = refusal("jaeger-span", 100, 403, &security).to_string();
        assert!(text.contains("security_exception") && text.contains("User [name=spanline"), "{text}");
    }

    #[test]
    fn templates_carry_the_priority() {
        assert_eq!(span_template("jaeger-span-*", 7)["priority"], 7);
        assert_eq!(service_template("jaeger-service-*", 7)["priority"], 7);
    }
}
