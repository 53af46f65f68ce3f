//! `exactly_once`, which the ingester's tests lean on, fails on each way a store can differ from
//! "every expected span in one document, none written twice".

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use spanline_testkit::{devstore, exactly_once, fixtures};

/// Creates a span document for each key (`traceID:spanID`), by id, as the ingester does.
async fn create(url: &str, keys: &[String]) {
    let mut body = String::new();
    for key in keys {
        let (trace, span) = key.split_once(':').unwrap();
        body.push_str(&format!(
            "{{\"create\":{{\"_index\":\"jaeger-span-2026-11-30\",\"_id\":\"{trace}_{span}\"}}}}\n"
        ));
        body.push_str(&format!("{{\"traceID\":\"{trace}\",\"spanID\":\"{span}\"}}\n"));
    }
    reqwest::Client::new()
        .post(format!("{url}/_bulk"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
}

#[tokio::test]
async fn exactly_once_counts_conflicts_and_fails_on_a_missing_or_a_stranger_span() {
    let timeout = Duration::from_millis(500);
    let want = fixtures::span_keys(1, 3, 2);
    let keys: Vec<String> = want.iter().cloned().collect();

    let store = devstore().await.unwrap();
    create(&store.url(), &keys).await;
    assert_eq!(exactly_once(&store.url(), &want, timeout).await.unwrap(), 0);
    create(&store.url(), &keys[..1]).await;
    assert_eq!(exactly_once(&store.url(), &want, timeout).await.unwrap(), 1, "a span written twice is a conflict");

    let store = devstore().await.unwrap();
    create(&store.url(), &keys[1..]).await;
    let missing = exactly_once(&store.url(), &want, timeout).await.unwrap_err().to_string();
    assert!(missing.contains("5 span documents, expected 6"), "{missing}");

    let store = devstore().await.unwrap();
    let mut stranger = keys[1..].to_vec();
    stranger.push(fixtures::span_key(1, 7));
    create(&store.url(), &stranger).await;
    let differ = exactly_once(&store.url(), &want, timeout).await.unwrap_err().to_string();
    assert!(differ.contains("missing") && differ.contains(&keys[0]), "{differ}");

    // The same span under a second id (a document that is not byte-identical): two documents.
    let store = devstore().await.unwrap();
    create(&store.url(), &keys[1..]).await;
    let (trace, span) = keys[1].split_once(':').unwrap();
    let body = format!(
        "{{\"create\":{{\"_index\":\"jaeger-span-2026-11-30\",\"_id\":\"other\"}}}}\n{{\"traceID\":\"{trace}\",\"spanID\":\"{span}\"}}\n"
    );
    reqwest::Client::new()
        .post(format!("{}/_bulk", store.url()))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let twice = exactly_once(&store.url(), &want, timeout).await.unwrap_err().to_string();
    assert!(twice.contains("more than one document"), "{twice}");
}
