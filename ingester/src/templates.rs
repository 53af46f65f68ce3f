//! The index templates for span and service indices (REFERENCE.md §4), installed at start when
//! missing, so every daily index gets Jaeger's mapping.

use opensearch::http::{Method, StatusCode, headers::HeaderMap};
use serde_json::{Value, json};

use crate::{document::IndexNames, error::Error};

fn keyword() -> Value {
    json!({"type": "keyword", "ignore_above": 256})
}

fn key_values() -> Value {
    json!({"type": "nested", "dynamic": false, "properties": {"key": keyword(), "value": keyword(), "type": keyword()}})
}

/// The composable template for span indices matching `pattern`.
pub fn span_template(pattern: &str) -> Value {
    json!({
        "index_patterns": [pattern],
        "priority": 100,
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
pub fn service_template(pattern: &str) -> Value {
    json!({
        "index_patterns": [pattern],
        "priority": 100,
        "template": {
            "settings": {"index.number_of_shards": 5, "index.number_of_replicas": 1},
            "mappings": {"properties": {"serviceName": keyword(), "operationName": keyword()}}
        }
    })
}

/// Installs both templates unless a template of the same name exists.
pub async fn install(client: &opensearch::OpenSearch, names: &IndexNames, prefix: &str) -> Result<(), Error> {
    let (span_pattern, service_pattern) = names.patterns();
    let p = if prefix.is_empty() { String::new() } else { format!("{prefix}-") };
    for (name, body) in [
        (format!("{p}jaeger-span"), span_template(&span_pattern)),
        (format!("{p}jaeger-service"), service_template(&service_pattern)),
    ] {
        let path = format!("/_index_template/{name}");
        let exists = client
            .send(Method::Head, &path, HeaderMap::new(), None::<&()>, None::<Vec<u8>>, None)
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
            .send(Method::Put, &path, headers, None::<&()>, Some(body.to_string()), None)
            .await
            .map_err(|e| Error::OpenSearch(format!("cannot install index template {name}: {e}")))?;
        if !response.status_code().is_success() {
            let status = response.status_code();
            let text = response.text().await.unwrap_or_default();
            return Err(Error::OpenSearch(format!("installing index template {name} answered {status}: {text}")));
        }
        tracing::info!(template = %name, "index template installed");
    }
    Ok(())
}
