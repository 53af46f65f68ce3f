//! OpenSearch's error shape: `{"error": {"root_cause": [..], "type", "reason", ..}, "status"}`.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
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
    /// A body that is not OpenSearch's error object: its text error (`{"error": "...", "status"}`),
    /// or a proxy's HTML page. Answered instead of [`ApiError::body`]. Boxed: rare, and errors
    /// are returned by value everywhere.
    pub raw: Option<Box<Raw>>,
}

/// A body answered as it is.
#[derive(Debug, Clone)]
pub struct Raw {
    pub content_type: &'static str,
    pub body: String,
    /// A redirect's `Location` header.
    pub location: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, kind: &str, reason: impl Into<String>) -> Self {
        Self { status, kind: kind.to_owned(), reason: reason.into(), extra: Map::new(), raw: None }
    }

    /// OpenSearch's text error, as its REST layer answers a request no handler takes.
    pub fn text(status: u16, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let body = json!({"error": &reason, "status": status}).to_string();
        Self {
            raw: Some(Box::new(Raw { content_type: "application/json; charset=UTF-8", body, location: None })),
            ..Self::new(status, "", reason)
        }
    }

    /// The HTML page nginx (an ingress, a load balancer) answers for `status`, with `location` for a
    /// redirect.
    pub fn proxy_page(status: u16, location: Option<String>) -> Self {
        let title = format!(
            "{status} {}",
            StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error")
        );
        let body = format!(
            "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        );
        Self { raw: Some(Box::new(Raw { content_type: "text/html", body, location })), ..Self::new(status, "", title) }
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
        match self.raw {
            Some(raw) => {
                let mut response = (status, [(header::CONTENT_TYPE, raw.content_type)], raw.body).into_response();
                if let Some(location) = raw.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                response
            }
            None => (status, Json(self.body())).into_response(),
        }
    }
}

/// The whole-request answer for an injected status on a `_bulk` at `path` (`/_bulk`,
/// `/{index}/_bulk`): OpenSearch's own, or for a 3xx and a 404 the page of the proxy in front of it.
pub fn for_status(status: u16, path: &str) -> ApiError {
    match status {
        // A proxy redirecting (http to https, another host): back to the same path on this store,
        // so a client that follows a 301/302/303 comes back with GET, which OpenSearch answers 405.
        300..=399 => ApiError::proxy_page(status, Some(path.to_owned())),
        // What OpenSearch answers when the path names no handler (a path prefix in the URL).
        400 => ApiError::text(400, format!("no handler found for uri [{path}] and method [POST]")),
        // An ingress or proxy with no route for the path.
        404 => ApiError::proxy_page(404, None),
        405 => ApiError::text(405, format!("Incorrect HTTP method for uri [{path}] and method [POST], allowed: [GET]")),
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
        assert!(ApiError::index_not_found("nope").raw.is_none());
        assert_eq!(body["status"], 404);
        assert_eq!(body["error"]["type"], "index_not_found_exception");
        assert_eq!(body["error"]["root_cause"][0]["reason"], "no such index [nope]");
        assert_eq!(body["error"]["index"], "nope");
    }
}
