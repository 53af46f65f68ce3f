//! OpenSearch's error shape: `{"error": {"root_cause": [..], "type", "reason", ..}, "status"}`.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

/// An error answered with OpenSearch's body for it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub kind: String,
    pub reason: String,
    /// Extra fields OpenSearch puts beside `type` and `reason` (e.g. `index`, `index_uuid`).
    pub extra: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: u16, kind: &str, reason: impl Into<String>) -> Self {
        Self { status, kind: kind.to_owned(), reason: reason.into(), extra: Map::new() }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn index_not_found(index: &str) -> Self {
        Self::new(404, "index_not_found_exception", format!("no such index [{index}]"))
            .with("index", index)
            .with("resource.type", "index_or_alias")
            .with("resource.id", index)
            .with("index_uuid", "_na_")
    }

    /// The object under `error` (also used for bulk item errors).
    pub fn cause(&self) -> Value {
        let mut cause = Map::new();
        cause.insert("type".into(), Value::String(self.kind.clone()));
        cause.insert("reason".into(), Value::String(self.reason.clone()));
        cause.extend(self.extra.clone());
        Value::Object(cause)
    }

    pub fn body(&self) -> Value {
        let mut error = self.cause();
        if let Value::Object(map) = &mut error {
            map.insert("root_cause".into(), json!([self.cause()]));
        }
        json!({ "error": error, "status": self.status })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

/// The whole-request error OpenSearch answers for an injected status.
pub fn for_status(status: u16) -> ApiError {
    match status {
        429 => ApiError::new(
            429,
            "es_rejected_execution_exception",
            "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=0, max_coordinating_and_primary_bytes=0] (injected by spanline-devstore)",
        ),
        503 => ApiError::new(
            503,
            "cluster_block_exception",
            "blocked by: [SERVICE_UNAVAILABLE/2/no cluster-manager] (injected by spanline-devstore)",
        ),
        401 => ApiError::new(
            401,
            "security_exception",
            "missing authentication credentials for REST request [/_bulk] (injected by spanline-devstore)",
        ),
        403 => ApiError::new(
            403,
            "security_exception",
            "no permissions for [indices:data/write/bulk] (injected by spanline-devstore)",
        ),
        413 => ApiError::new(
            413,
            "content_too_long_exception",
            "request body is too large (injected by spanline-devstore)",
        ),
        other => ApiError::new(other, "exception", format!("injected failure with status {other} (spanline-devstore)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_root_cause_and_status() {
        let body = ApiError::index_not_found("nope").body();
        assert_eq!(body["status"], 404);
        assert_eq!(body["error"]["type"], "index_not_found_exception");
        assert_eq!(body["error"]["root_cause"][0]["reason"], "no such index [nope]");
        assert_eq!(body["error"]["index"], "nope");
    }
}
