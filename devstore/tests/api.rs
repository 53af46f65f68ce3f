//! The dev store's REST API and every fault, over HTTP, against a store started on port 0.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use spanline_devstore::{Faults, RejectRule, Running, Settings, start};
use tokio_util::sync::CancellationToken;

mod common;

use common::{send, store};

async fn store_with(settings: Settings) -> (Running, Client) {
    let running = start(settings, CancellationToken::new()).await.expect("dev store starts");
    (running, Client::new())
}

async fn bulk(client: &Client, url: &str, body: &str) -> (StatusCode, Value) {
    common::ndjson(client, format!("{url}/_bulk"), body).await
}

fn ndjson(op: &str, index: &str, docs: &[(&str, Value)]) -> String {
    let mut out = String::new();
    for (id, doc) in docs {
        out.push_str(&json!({op: {"_index": index, "_id": id}}).to_string());
        out.push('\n');
        out.push_str(&doc.to_string());
        out.push('\n');
    }
    out
}

use reqwest::Method;

#[tokio::test]
async fn cluster_info_says_opensearch() {
    let (s, c) = store().await;
    let (status, body) = send(&c, Method::GET, s.url(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"]["distribution"], "opensearch");
    assert!(body["version"]["number"].as_str().is_some_and(|v| v.starts_with('2')));
    let (status, body) = send(&c, Method::GET, format!("{}/_cluster/health", s.url()), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "green");
}

#[tokio::test]
async fn index_lifecycle_and_templates() {
    let (s, c) = store().await;
    let u = s.url();
    let template = json!({"index_patterns": ["jaeger-span-*"], "priority": 10,
        "template": {"settings": {"index": {"number_of_shards": 1}}, "mappings": {"properties": {"traceID": {"type": "keyword"}}}}});
    let (status, body) = send(&c, Method::PUT, format!("{u}/_index_template/spans"), Some(template.clone())).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"acknowledged": true})));
    let (status, body) = send(&c, Method::GET, format!("{u}/_index_template/spans"), None).await;
    assert_eq!(status, StatusCode::OK);
    // OpenSearch answers with the settings normalised (nested under `index`, values as strings).
    let mut normalised = template.clone();
    normalised["template"]["settings"] = json!({"index": {"number_of_shards": "1"}});
    normalised["composed_of"] = json!([]);
    assert_eq!(body["index_templates"][0]["index_template"], normalised);
    let (status, body) = send(&c, Method::GET, format!("{u}/_index_template/missing"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["type"], "resource_not_found_exception");

    let (status, _) = send(&c, Method::HEAD, format!("{u}/jaeger-span-2026-11-25"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = send(&c, Method::PUT, format!("{u}/jaeger-span-2026-11-25"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["index"], "jaeger-span-2026-11-25");
    let (status, _) = send(&c, Method::HEAD, format!("{u}/jaeger-span-2026-11-25"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(&c, Method::GET, format!("{u}/jaeger-span-2026-11-25"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["jaeger-span-2026-11-25"]["mappings"]["properties"]["traceID"]["type"], "keyword",
        "template applied"
    );
    let (status, body) = send(&c, Method::PUT, format!("{u}/jaeger-span-2026-11-25"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["type"], "resource_already_exists_exception");
    let (status, body) = send(&c, Method::PUT, format!("{u}/Bad"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["type"], "invalid_index_name_exception");

    let (status, body) = send(&c, Method::GET, format!("{u}/_cat/indices?format=json"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["index"], "jaeger-span-2026-11-25");
    assert_eq!(body[0]["docs.count"], "0");

    let (status, _) = send(&c, Method::DELETE, format!("{u}/jaeger-span-2026-11-25"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(&c, Method::DELETE, format!("{u}/jaeger-span-2026-11-25"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["type"], "index_not_found_exception");
    assert_eq!(body["status"], 404);
    let (status, _) = send(&c, Method::DELETE, format!("{u}/_index_template/spans"), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bulk_create_index_conflicts_and_order() {
    let (s, c) = store().await;
    let u = s.url();
    let body = ndjson("create", "i", &[("a", json!({"n": 1})), ("b", json!({"n": 2}))]);
    let (status, resp) = bulk(&c, &u, &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp["errors"], false);
    assert_eq!(resp["items"][0]["create"]["_id"], "a");
    assert_eq!(resp["items"][0]["create"]["status"], 201);
    assert_eq!(resp["items"][0]["create"]["result"], "created");
    assert_eq!(resp["items"][1]["create"]["_id"], "b");
    // In OpenSearch's key order, `took` and `errors` before the items (clients read the head).
    let body = ndjson("create", "i", &[("z", json!({"n": 0}))]);
    let raw = c
        .post(format!("{u}/_bulk"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("bulk")
        .text()
        .await
        .expect("answer");
    let head = raw.split_once(",\"items\":").map(|(head, _)| head).unwrap_or_default();
    assert!(head.starts_with("{\"took\":") && head.ends_with(",\"errors\":false"), "{raw}");

    // Same ids again with create: 409 per item, inside an HTTP 200.
    let body = ndjson("create", "i", &[("a", json!({"n": 1})), ("c", json!({"n": 3}))]);
    let (status, resp) = bulk(&c, &u, &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp["errors"], true);
    assert_eq!(resp["items"][0]["create"]["status"], 409);
    assert_eq!(resp["items"][0]["create"]["error"]["type"], "version_conflict_engine_exception");
    assert_eq!(resp["items"][1]["create"]["status"], 201);

    // index overwrites.
    let body = ndjson("index", "i", &[("a", json!({"n": 10}))]);
    let (_, resp) = bulk(&c, &u, &body).await;
    assert_eq!(resp["items"][0]["index"]["status"], 200);
    assert_eq!(resp["items"][0]["index"]["result"], "updated");
    assert_eq!(resp["items"][0]["index"]["_version"], 2);

    // Path index, no _id: an id is generated.
    let resp = c
        .post(format!("{u}/other/_bulk"))
        .body("{\"index\":{}}\n{\"x\":1}\n")
        .send()
        .await
        .expect("sent")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(resp["items"][0]["index"]["_index"], "other");
    assert_eq!(resp["items"][0]["index"]["_id"].as_str().map(str::len), Some(20));

    let (status, doc) = send(&c, Method::GET, format!("{u}/i/_doc/a"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["found"], true);
    assert_eq!(doc["_source"], json!({"n": 10}));
    let (status, doc) = send(&c, Method::GET, format!("{u}/i/_doc/zzz"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(doc["found"], false);
    let (status, doc) = send(&c, Method::GET, format!("{u}/nope/_doc/a"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(doc["error"]["type"], "index_not_found_exception");
}

#[tokio::test]
async fn malformed_bulk_is_a_400_with_opensearch_body() {
    let (s, c) = store().await;
    let u = s.url();
    for (body, kind) in [
        ("{\"index\":{\"_index\":\"i\"}}\n{\"a\":1}", "illegal_argument_exception"),
        ("not json\n{}\n", "illegal_argument_exception"),
        ("{\"index\":{}}\n{}\n", "action_request_validation_exception"),
        ("{\"explode\":{\"_index\":\"i\"}}\n{}\n", "illegal_argument_exception"),
        ("\n", "parse_exception"),
    ] {
        let (status, resp) = bulk(&c, &u, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(resp["error"]["type"], kind, "{body:?}: {resp}");
        assert_eq!(resp["error"]["root_cause"][0]["type"], kind);
        assert_eq!(resp["status"], 400);
    }
    // A document that is not JSON fails alone.
    let (status, resp) = bulk(
        &c,
        &u,
        "{\"index\":{\"_index\":\"i\",\"_id\":\"1\"}}\n{oops\n{\"index\":{\"_index\":\"i\",\"_id\":\"2\"}}\n{}\n",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp["items"][0]["index"]["status"], 400);
    assert_eq!(resp["items"][0]["index"]["error"]["type"], "mapper_parsing_exception");
    assert_eq!(resp["items"][1]["index"]["status"], 201);
}

#[tokio::test]
async fn refresh_count_and_search() {
    let (s, c) = store().await;
    let u = s.url();
    let docs: Vec<(String, Value)> = (0..30)
        .map(|n| (format!("d{n}"), json!({"n": n, "svc": {"name": if n % 3 == 0 { "a" } else { "b" }}, "tags": [{"key": "k", "value": n.to_string()}]})))
        .collect();
    let refs: Vec<(&str, Value)> = docs.iter().map(|(id, d)| (id.as_str(), d.clone())).collect();
    bulk(&c, &u, &ndjson("create", "jaeger-span-2026-11-24", &refs[..10])).await;
    bulk(&c, &u, &ndjson("create", "jaeger-span-2026-11-25", &refs[10..])).await;

    // Not searchable before a refresh; readable by id at once.
    let (_, count) = send(&c, Method::GET, format!("{u}/jaeger-span-*/_count"), None).await;
    assert_eq!(count["count"], 0);
    let (status, _) = send(&c, Method::GET, format!("{u}/jaeger-span-2026-11-24/_doc/d1"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&c, Method::POST, format!("{u}/jaeger-span-*/_refresh"), None).await;
    assert_eq!(status, StatusCode::OK);

    let (_, count) = send(&c, Method::GET, format!("{u}/jaeger-span-*/_count"), None).await;
    assert_eq!(count["count"], 30);
    let (_, count) =
        send(&c, Method::GET, format!("{u}/jaeger-span-2026-11-24,jaeger-span-2026-11-25/_count"), None).await;
    assert_eq!(count["count"], 30);
    let (_, count) = send(
        &c,
        Method::POST,
        format!("{u}/jaeger-span-*/_count"),
        Some(json!({"query": {"term": {"svc.name": "a"}}})),
    )
    .await;
    assert_eq!(count["count"], 10);
    let (status, body) = send(&c, Method::GET, format!("{u}/missing/_count"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["type"], "index_not_found_exception");
    let (_, count) = send(&c, Method::GET, format!("{u}/nomatch-*/_count"), None).await;
    assert_eq!(count["count"], 0);

    let query = json!({"query": {"bool": {
        "filter": [{"range": {"n": {"gte": 5, "lt": 20}}}],
        "must_not": [{"terms": {"svc.name": ["a"]}}],
        "should": [{"nested": {"path": "tags", "query": {"term": {"tags.value": "7"}}}}, {"ids": {"values": ["d8"]}}],
        "minimum_should_match": 1
    }}, "size": 10});
    let (status, body) = send(&c, Method::POST, format!("{u}/jaeger-span-*/_search"), Some(query)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["hits"]["total"], json!({"value": 2, "relation": "eq"}));
    let ids: Vec<&str> =
        body["hits"]["hits"].as_array().expect("hits").iter().filter_map(|h| h["_id"].as_str()).collect();
    assert_eq!(ids, vec!["d7", "d8"]);
    assert_eq!(body["hits"]["hits"][0]["_source"]["n"], 7);

    let (_, body) = send(&c, Method::GET, format!("{u}/jaeger-span-*/_search?size=5&from=25"), None).await;
    assert_eq!(body["hits"]["total"]["value"], 30);
    assert_eq!(body["hits"]["hits"].as_array().map(Vec::len), Some(5));
    let (_, body) = send(
        &c,
        Method::POST,
        format!("{u}/jaeger-span-*/_search"),
        Some(json!({"query": {"match_all": {}}, "size": 3, "from": 1})),
    )
    .await;
    assert_eq!(body["hits"]["hits"][0]["_id"], "d1");

    let (status, body) =
        send(&c, Method::POST, format!("{u}/jaeger-span-*/_search"), Some(json!({"query": {"wildcard": {"a": "b*"}}})))
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["type"], "parsing_exception");
    let (status, body) =
        send(&c, Method::POST, format!("{u}/jaeger-span-*/_search"), Some(json!({"size": 10001}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["reason"].as_str().is_some_and(|r| r.contains("Result window is too large")));

    // ?refresh=true makes a bulk searchable at once.
    c.post(format!("{u}/_bulk?refresh=true"))
        .body(ndjson("create", "jaeger-span-2026-11-25", &[("late", json!({}))]))
        .send()
        .await
        .expect("sent");
    let (_, count) = send(&c, Method::GET, format!("{u}/jaeger-span-2026-11-25/_count"), None).await;
    assert_eq!(count["count"], 21);
}

#[tokio::test]
async fn periodic_refresh() {
    let (s, c) = store_with(Settings { refresh_interval: Duration::from_millis(100), ..Settings::default() }).await;
    let u = s.url();
    bulk(&c, &u, &ndjson("create", "i", &[("1", json!({}))])).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, count) = send(&c, Method::GET, format!("{u}/i/_count"), None).await;
    assert_eq!(count["count"], 1);
}

#[tokio::test]
async fn fault_whole_request_status_and_times() {
    let (s, c) = store().await;
    let u = s.url();
    for status in [429u16, 503] {
        let faults = json!({"bulk_status": status, "bulk_status_times": 2});
        let (st, _) = send(&c, Method::PUT, format!("{u}/_devstore/faults"), Some(faults)).await;
        assert_eq!(st, StatusCode::OK);
        let body = ndjson("create", "i", &[(&format!("x{status}"), json!({}))]);
        for _ in 0..2 {
            let (st, resp) = bulk(&c, &u, &body).await;
            assert_eq!(st.as_u16(), status);
            assert_eq!(resp["status"], status);
            assert!(resp["error"]["type"].is_string());
        }
        let (st, resp) = bulk(&c, &u, &body).await;
        assert_eq!(st, StatusCode::OK, "fault cleared after 2 requests");
        assert_eq!(resp["items"][0]["create"]["status"], 201);
    }
    let (_, resp) = send(&c, Method::GET, format!("{u}/_devstore/stats"), None).await;
    assert_eq!(resp["bulk"]["bulk_rejected_requests"], 4);
    assert_eq!(resp["docs"], 2);
    // The store's own cost, for a benchmark's CPU per document.
    assert_eq!(resp["bulk"]["docs_written"], 2);
    assert!(resp["cpu"]["process_seconds"].as_f64().is_some_and(|s| s >= 0.0), "{resp}");
    assert!(resp["cpu"]["since_reset_seconds"].as_f64().is_some(), "{resp}");
    assert!(resp["cpu"]["micros_per_doc_written"].as_f64().is_some(), "{resp}");
    send(&c, Method::POST, format!("{u}/_devstore/reset"), None).await;
    let (_, resp) = send(&c, Method::GET, format!("{u}/_devstore/stats"), None).await;
    assert_eq!(resp["bulk"]["docs_written"], 0);
    assert_eq!(resp["cpu"]["micros_per_doc_written"], Value::Null, "nothing written since the reset");
}

/// The whole-request statuses a misconfigured path or proxy gives, in the shapes OpenSearch (or the
/// proxy in front of it) answers them; a redirect points back at the same path, and a client that
/// follows a 301 with GET gets OpenSearch's 405.
#[tokio::test]
async fn fault_whole_request_refusals_have_opensearchs_shapes() {
    let (s, _) = store().await;
    let u = s.url();
    // No redirects followed, to see the 3xx itself.
    let c = Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let body = ndjson("create", "i", &[("1", json!({}))]);
    let answer = |status: u16| {
        let (c, u, body) = (c.clone(), u.clone(), body.clone());
        async move {
            let faults = json!({"bulk_status": status, "bulk_status_times": 1});
            let (st, _) = send(&c, Method::PUT, format!("{u}/_devstore/faults"), Some(faults)).await;
            assert_eq!(st, StatusCode::OK);
            let resp = c.post(format!("{u}/_bulk")).body(body).send().await.expect("sent");
            let location = resp.headers().get("location").map(|l| l.to_str().expect("ascii").to_owned());
            (resp.status().as_u16(), location, resp.text().await.expect("text"))
        }
    };
    let (st, _, text) = answer(400).await;
    assert_eq!(
        (st, text.as_str()),
        (400, r#"{"error":"no handler found for uri [/_bulk] and method [POST]","status":400}"#)
    );
    let (st, _, text) = answer(405).await;
    assert_eq!(st, 405);
    assert!(text.starts_with(r#"{"error":"Incorrect HTTP method for uri [/_bulk] and method [POST]"#), "{text}");
    let (st, _, text) = answer(404).await;
    assert_eq!(st, 404);
    assert!(text.contains("<title>404 Not Found</title>"), "{text}");
    for status in [301u16, 302, 307] {
        let (st, location, text) = answer(status).await;
        assert_eq!((st, location.as_deref()), (status, Some("/_bulk")));
        assert!(text.contains(&format!("<title>{status} ")), "{text}");
    }
    let resp = c.get(format!("{u}/_bulk")).send().await.expect("sent");
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(
        resp.text().await.expect("text"),
        r#"{"error":"Incorrect HTTP method for uri [/_bulk] and method [GET], allowed: [PUT, POST]","status":405}"#
    );
    // Each fault was for one request: the next is written.
    let (st, resp) = bulk(&c, &u, &body).await;
    assert_eq!((st, &resp["items"][0]["create"]["status"]), (StatusCode::OK, &json!(201)));
}

/// Item-level 403 (write block) and 404 (no index, auto-create off) inside a 200, for N requests.
#[tokio::test]
async fn fault_item_status_403_and_404_for_n_requests() {
    let (s, c) = store().await;
    let u = s.url();
    for (status, kind, reason) in [
        (403u16, "cluster_block_exception", "index [i] blocked by: [FORBIDDEN/8/index write (api)];"),
        (404, "index_not_found_exception", "no such index [i] and [action.auto_create_index] is [false]"),
    ] {
        let faults = json!({"item_status": status, "item_status_times": 2});
        let (st, _) = send(&c, Method::PUT, format!("{u}/_devstore/faults"), Some(faults)).await;
        assert_eq!(st, StatusCode::OK);
        let body = ndjson("create", "i", &[(&format!("a{status}"), json!({})), (&format!("b{status}"), json!({}))]);
        for _ in 0..2 {
            let (st, resp) = bulk(&c, &u, &body).await;
            assert_eq!(st, StatusCode::OK, "item-level faults still answer 200");
            assert_eq!(resp["errors"], true);
            for item in resp["items"].as_array().expect("items") {
                assert_eq!(item["create"]["status"], status);
                assert_eq!(item["create"]["error"]["type"], kind);
                assert_eq!(item["create"]["error"]["reason"], reason);
            }
            if status == 404 {
                assert_eq!(resp["items"][0]["create"]["error"]["index_uuid"], "_na_");
            }
        }
        let (_, resp) = bulk(&c, &u, &body).await;
        assert_eq!(resp["errors"], false, "fault cleared after 2 requests: {resp}");
    }
    let (st, _) = send(&c, Method::PUT, format!("{u}/_devstore/faults"), Some(json!({"item_status": 500}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn fault_413_above_byte_limit() {
    let (s, c) = store_with(Settings {
        refresh_interval: Duration::ZERO,
        faults: Faults { max_bulk_bytes: Some(200), ..Faults::default() },
        ..Settings::default()
    })
    .await;
    let u = s.url();
    let small = ndjson("create", "i", &[("1", json!({"a": 1}))]);
    assert_eq!(bulk(&c, &u, &small).await.0, StatusCode::OK);
    let big = ndjson("create", "i", &[("2", json!({"a": "x".repeat(300)}))]);
    let (status, resp) = bulk(&c, &u, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp["status"], 413);
}

#[tokio::test]
async fn fault_item_429_rate() {
    let (s, c) = store_with(Settings {
        refresh_interval: Duration::ZERO,
        faults: Faults { item_429_rate: 0.3, ..Faults::default() },
        seed: Some(7),
        ..Settings::default()
    })
    .await;
    let u = s.url();
    let docs: Vec<(String, Value)> = (0..1000).map(|n| (n.to_string(), json!({"n": n}))).collect();
    let refs: Vec<(&str, Value)> = docs.iter().map(|(id, d)| (id.as_str(), d.clone())).collect();
    let (status, resp) = bulk(&c, &u, &ndjson("create", "i", &refs)).await;
    assert_eq!(status, StatusCode::OK, "item-level faults still answer 200");
    assert_eq!(resp["errors"], true);
    let items = resp["items"].as_array().expect("items");
    let rejected: Vec<&Value> = items.iter().filter(|i| i["create"]["status"] == 429).collect();
    assert!((220..380).contains(&rejected.len()), "about 30% rejected, got {}", rejected.len());
    assert_eq!(rejected[0]["create"]["error"]["type"], "es_rejected_execution_exception");
    let created = items.iter().filter(|i| i["create"]["status"] == 201).count();
    assert_eq!(created + rejected.len(), 1000);
    // Rejected items were not stored; the accepted ones were.
    s.state.store.lock().refresh_all();
    let (_, count) = send(&c, Method::GET, format!("{u}/i/_count"), None).await;
    assert_eq!(count["count"], created);
}

#[tokio::test]
async fn fault_reject_rule_is_item_level_mapper_parsing() {
    let (s, c) = store().await;
    let u = s.url();
    let faults = Faults {
        reject: Some(RejectRule { field: "operationName".into(), contains: "poison".into() }),
        ..Faults::default()
    };
    let (st, _) =
        send(&c, Method::PUT, format!("{u}/_devstore/faults"), Some(serde_json::to_value(&faults).expect("json")))
            .await;
    assert_eq!(st, StatusCode::OK);
    let (_, resp) = bulk(
        &c,
        &u,
        &ndjson(
            "create",
            "i",
            &[("1", json!({"operationName": "ok"})), ("2", json!({"operationName": "a poison op"}))],
        ),
    )
    .await;
    assert_eq!(resp["items"][0]["create"]["status"], 201);
    assert_eq!(resp["items"][1]["create"]["status"], 400);
    assert_eq!(resp["items"][1]["create"]["error"]["type"], "mapper_parsing_exception");
    let (_, got) = send(&c, Method::GET, format!("{u}/_devstore/faults"), None).await;
    assert_eq!(got["reject"]["contains"], "poison");
    let (st, body) = send(&c, Method::PUT, format!("{u}/_devstore/faults"), Some(json!({"item_429_rate": 2.0}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body["error"]["reason"].as_str().is_some_and(|r| r.contains("item_429_rate")));
}

#[tokio::test]
async fn fault_latency() {
    let (s, c) = store_with(Settings {
        refresh_interval: Duration::ZERO,
        faults: Faults { latency: Some(Duration::from_millis(300)), ..Faults::default() },
        ..Settings::default()
    })
    .await;
    let started = std::time::Instant::now();
    let (status, _) = send(&c, Method::GET, s.url(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Admin routes are not delayed.
    let started = std::time::Instant::now();
    send(&c, Method::GET, format!("{}/_devstore/faults", s.url()), None).await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn fault_refuse_connections_for_a_while() {
    let (s, c) = store().await;
    let u = s.url();
    let (status, _) =
        send(&c, Method::POST, format!("{u}/_devstore/refuse_connections"), Some(json!({"for": "800ms"}))).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = Client::new();
    let err = fresh.get(&u).send().await.expect_err("connection refused while refusing");
    assert!(err.is_connect(), "{err}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _) = send(&Client::new(), Method::GET, u.clone(), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn refuse_at_start() {
    let (s, _) = store_with(Settings { refuse_for: Some(Duration::from_millis(500)), ..Settings::default() }).await;
    assert!(Client::new().get(s.url()).send().await.expect_err("refused").is_connect());
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(Client::new().get(s.url()).send().await.expect("accepts").status(), StatusCode::OK);
}

#[tokio::test]
async fn memory_cap_gives_a_clear_error() {
    let limit = 2_000u64;
    let (s, c) = store_with(Settings {
        refresh_interval: Duration::ZERO,
        memory_limit: spanline_common::ByteSize(limit),
        ..Settings::default()
    })
    .await;
    let u = s.url();
    let mut rejected = None;
    for round in 0..20 {
        let docs: Vec<(String, Value)> =
            (0..3).map(|n| (format!("{round}-{n}"), json!({"pad": "x".repeat(50)}))).collect();
        let refs: Vec<(&str, Value)> = docs.iter().map(|(id, d)| (id.as_str(), d.clone())).collect();
        let (status, resp) = bulk(&c, &u, &ndjson("create", "i", &refs)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            rejected = Some(resp);
            break;
        }
        assert_eq!(status, StatusCode::OK);
    }
    let resp = rejected.expect("the cap is reached within 20 rounds");
    assert_eq!(resp["error"]["type"], "circuit_breaking_exception");
    assert!(resp["error"]["reason"].as_str().is_some_and(|r| r.contains("memory cap reached")), "{resp}");
    let (_, stats) = send(&c, Method::GET, format!("{u}/_devstore/stats"), None).await;
    assert!(stats["bytes_used"].as_u64().is_some_and(|b| b > 0 && b <= limit), "{stats}");
    // Deleting data frees memory.
    send(&c, Method::DELETE, format!("{u}/i"), None).await;
    assert_eq!(bulk(&c, &u, &ndjson("create", "i", &[("again", json!({}))])).await.0, StatusCode::OK);
}

#[tokio::test]
async fn reset_clears_everything() {
    let (s, c) = store().await;
    let u = s.url();
    bulk(&c, &u, &ndjson("create", "i", &[("1", json!({}))])).await;
    let (st, _) = send(&c, Method::POST, format!("{u}/_devstore/reset"), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = send(&c, Method::HEAD, format!("{u}/i"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.stop().await.expect("stops cleanly");
}
