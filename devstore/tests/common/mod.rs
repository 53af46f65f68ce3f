//! What the dev store's HTTP tests share: a store on port 0 and small request helpers.

#![allow(dead_code)] // each test file uses its own share of these

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use spanline_devstore::{Running, Settings, start};
use tokio_util::sync::CancellationToken;

/// A store that refreshes only when asked, and a client.
pub async fn store() -> (Running, Client) {
    let settings = Settings { refresh_interval: Duration::ZERO, ..Settings::default() };
    let running = start(settings, CancellationToken::new()).await.expect("dev store starts");
    (running, Client::new())
}

/// Sends `body` as JSON (none when `None`); the status and the JSON answer (`Null` when empty).
pub async fn send(client: &Client, method: Method, url: String, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = client.request(method, url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("json body") })
}

/// POSTs an NDJSON body to `url` (`…/_bulk`, `…/_msearch`).
pub async fn ndjson(client: &Client, url: String, body: &str) -> (StatusCode, Value) {
    let resp = client
        .post(url)
        .header("content-type", "application/x-ndjson")
        .body(body.to_owned())
        .send()
        .await
        .expect("sent");
    let status = resp.status();
    (status, resp.json().await.expect("json"))
}

/// Indexes `docs` (id, source) into `index` with `?refresh=true`, asserting every item succeeded.
pub async fn index_docs(client: &Client, url: &str, index: &str, docs: &[(&str, Value)]) {
    let mut body = String::new();
    for (id, doc) in docs {
        body.push_str(&serde_json::json!({"index": {"_index": index, "_id": id}}).to_string());
        body.push('\n');
        body.push_str(&doc.to_string());
        body.push('\n');
    }
    let (status, resp) = ndjson(client, format!("{url}/_bulk?refresh=true"), &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp["errors"], false, "{resp}");
}
