//! Where the dev store must answer exactly like OpenSearch 2.x: bulk metadata errors, composable
//! template conflicts, and the normalised shapes of indices, mappings and templates.

mod common;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use common::{ndjson, send, store};

#[tokio::test]
async fn bulk_item_with_empty_id_fails_alone() {
    let (s, c) = store().await;
    let u = s.url();
    let body = "{\"create\":{\"_index\":\"i\",\"_id\":\"\"}}\n{\"a\":1}\n{\"create\":{\"_index\":\"i\",\"_id\":\"2\"}}\n{\"a\":2}\n";
    let (status, resp) = ndjson(&c, format!("{u}/_bulk?refresh=true"), body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp["errors"], true);
    let failed = &resp["items"][0]["create"];
    assert_eq!(failed["status"], 400, "{resp}");
    assert_eq!(failed["error"]["type"], "illegal_argument_exception");
    assert_eq!(failed["error"]["reason"], "if _id is specified it must not be empty");
    assert_eq!(resp["items"][1]["create"]["status"], 201);
    let (_, count) = send(&c, Method::GET, format!("{u}/i/_count"), None).await;
    assert_eq!(count["count"], 1, "only the item with an id was written");
}

#[tokio::test]
async fn bulk_malformed_action_lines_use_opensearch_messages() {
    let (s, c) = store().await;
    let u = s.url();
    for (body, reason) in [
        ("{}\n{}\n", "Malformed action/metadata line [1], expected FIELD_NAME but found [END_OBJECT]"),
        (
            "{\"index\":{\"_index\":\"i\"}}\n{}\n{}\n{}\n",
            "Malformed action/metadata line [3], expected FIELD_NAME but found [END_OBJECT]",
        ),
        (
            "{\"explode\":{\"_index\":\"i\"}}\n{}\n",
            "Malformed action/metadata line [1], expected one of [create, delete, index, update] but found [explode]",
        ),
        (
            "{\"index\":{\"_index\":\"i\"}}\n{}\n{\"upsert\":{}}\n{}\n",
            "Malformed action/metadata line [3], expected one of [create, delete, index, update] but found [upsert]",
        ),
        // The first key is the one reported, in the order written (not sorted).
        (
            "{\"zap\":{},\"index\":{}}\n{}\n",
            "Malformed action/metadata line [1], expected one of [create, delete, index, update] but found [zap]",
        ),
        ("[1]\n{}\n", "Malformed action/metadata line [1], expected START_OBJECT but found [START_ARRAY]"),
        (
            "{\"index\":{\"_index\":\"i\",\"_id\":[\"x\"]}}\n{}\n",
            "Malformed action/metadata line [1], expected a simple value for field [_id] but found [START_ARRAY]",
        ),
        (
            "{\"index\":{\"_index\":\"i\",\"_type\":\"_doc\"}}\n{}\n",
            "Action/metadata line [1] contains an unknown parameter [_type]",
        ),
    ] {
        let (status, resp) = ndjson(&c, format!("{u}/_bulk"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}: {resp}");
        assert_eq!(resp["error"]["type"], "illegal_argument_exception", "{body:?}");
        assert_eq!(resp["error"]["reason"], reason, "{body:?}");
        assert_eq!(resp["error"]["root_cause"][0]["reason"], reason);
        assert_eq!(resp["status"], 400);
    }
    let (_, stats) = send(&c, Method::GET, format!("{u}/_devstore/stats"), None).await;
    assert_eq!(stats["docs"], 0, "a malformed request writes nothing");
}

fn template(patterns: &[&str], priority: Option<u64>) -> Value {
    let mut t = json!({"index_patterns": patterns, "template": {"settings": {"index.number_of_shards": 5}}});
    if let Some(p) = priority {
        t["priority"] = json!(p);
    }
    t
}

#[tokio::test]
async fn same_priority_overlapping_templates_are_refused() {
    let (s, c) = store().await;
    let u = s.url();
    let put = |name: &str, body: Value| send(&c, Method::PUT, format!("{u}/_index_template/{name}"), Some(body));
    assert_eq!(put("theirs", template(&["jaeger-span-*"], Some(100))).await.0, StatusCode::OK);
    let (status, resp) = put("ours", template(&["jaeger-*", "other"], Some(100))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert_eq!(resp["error"]["type"], "illegal_argument_exception");
    assert_eq!(
        resp["error"]["reason"],
        "index template [ours] has index patterns [jaeger-*, other] matching patterns from existing templates [theirs] with patterns (theirs => [jaeger-span-*]) that have the same priority [100], multiple index templates may not match during index creation, please use a different priority"
    );
    let (status, _) = send(&c, Method::HEAD, format!("{u}/_index_template/ours"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");

    // Two conflicting templates are both named, and no priority means 0.
    assert_eq!(put("a", template(&["x-*"], None)).await.0, StatusCode::OK);
    assert_eq!(put("b", template(&["y-1"], None)).await.0, StatusCode::OK);
    let (status, resp) = put("c", template(&["x-1", "y-1"], Some(0))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        resp["error"]["reason"],
        "index template [c] has index patterns [x-1, y-1] matching patterns from existing templates [a,b] with patterns (a => [x-*],b => [y-1]) that have the same priority [0], multiple index templates may not match during index creation, please use a different priority"
    );

    // A different priority, patterns that cannot meet, or replacing the same name are fine.
    assert_eq!(put("ours", template(&["jaeger-*"], Some(101))).await.0, StatusCode::OK);
    assert_eq!(put("service", template(&["jaeger-service-*"], Some(100))).await.0, StatusCode::OK);
    assert_eq!(put("theirs", template(&["jaeger-span-*", "more-*"], Some(100))).await.0, StatusCode::OK);
}

#[tokio::test]
async fn templates_come_back_normalised() {
    let (s, c) = store().await;
    let u = s.url();
    let body = json!({"index_patterns": ["jaeger-span-*"], "priority": 100,
        "template": {
            "settings": {"index.number_of_shards": 5, "index.number_of_replicas": 1,
                         "index.mapping.nested_fields.limit": 50, "requests": {"cache": {"enable": true}}},
            "mappings": {"properties": {"traceID": {"type": "keyword", "ignore_above": 256}}}}});
    let (status, _) = send(&c, Method::PUT, format!("{u}/_index_template/jaeger-span"), Some(body)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, got) = send(&c, Method::GET, format!("{u}/_index_template/jaeger-span"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        got,
        json!({"index_templates": [{"name": "jaeger-span", "index_template": {
            "index_patterns": ["jaeger-span-*"],
            "template": {
                "settings": {"index": {"number_of_shards": "5", "number_of_replicas": "1",
                    "mapping": {"nested_fields": {"limit": "50"}}, "requests": {"cache": {"enable": "true"}}}},
                "mappings": {"properties": {"traceID": {"type": "keyword", "ignore_above": 256}}}
            },
            "composed_of": [],
            "priority": 100
        }}]})
    );
}

#[tokio::test]
async fn get_index_and_mapping_have_opensearch_shapes() {
    let (s, c) = store().await;
    let u = s.url();
    let mappings = json!({"properties": {"traceID": {"type": "keyword"}, "startTime": {"type": "long"}}});
    let t = json!({"index_patterns": ["idx*"], "priority": 1,
        "template": {"settings": {"index.number_of_shards": 5, "index.mapping.nested_fields.limit": 50}, "mappings": mappings}});
    send(&c, Method::PUT, format!("{u}/_index_template/t"), Some(t)).await;
    let (status, _) =
        send(&c, Method::PUT, format!("{u}/idx"), Some(json!({"settings": {"number_of_replicas": 2}}))).await;
    assert_eq!(status, StatusCode::OK);

    let (status, got) = send(&c, Method::GET, format!("{u}/idx"), None).await;
    assert_eq!(status, StatusCode::OK);
    let index = &got["idx"]["settings"]["index"];
    let uuid = index["uuid"].as_str().expect("uuid").to_owned();
    let created = index["creation_date"].as_str().expect("creation_date as a string");
    assert!(created.parse::<u64>().is_ok_and(|ms| ms > 1_700_000_000_000), "{created}");
    assert_eq!(
        got,
        json!({"idx": {"aliases": {}, "mappings": mappings, "settings": {"index": {
            "number_of_shards": "5", "number_of_replicas": "2",
            "mapping": {"nested_fields": {"limit": "50"}},
            "replication": {"type": "DOCUMENT"},
            "provided_name": "idx", "creation_date": created, "uuid": uuid,
            "version": {"created": "136407827"}
        }}}})
    );

    let (status, got) = send(&c, Method::GET, format!("{u}/idx/_mapping"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, json!({"idx": {"mappings": mappings}}));
    let (status, got) = send(&c, Method::GET, format!("{u}/nope/_mapping"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(got["error"]["type"], "index_not_found_exception");
}

#[tokio::test]
async fn legacy_templates_as_jaeger_installs_them_on_opensearch() {
    let (s, c) = store().await;
    let u = s.url();
    // Jaeger's legacy span template body on OpenSearch: settings, mappings, index_patterns.
    let body = json!({"index_patterns": "jaeger-span-*",
        "settings": {"index.number_of_shards": 5, "index.mapping.nested_fields.limit": 50},
        "mappings": {"properties": {"traceID": {"type": "keyword"}}}});
    let (status, resp) = send(&c, Method::PUT, format!("{u}/_template/jaeger-span"), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (status, _) = send(&c, Method::HEAD, format!("{u}/_template/jaeger-span"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, got) = send(&c, Method::GET, format!("{u}/_template/jaeger-span"), None).await;
    assert_eq!(
        got,
        json!({"jaeger-span": {"order": 0, "index_patterns": ["jaeger-span-*"],
            "settings": {"index": {"number_of_shards": "5", "mapping": {"nested_fields": {"limit": "50"}}}},
            "mappings": {"properties": {"traceID": {"type": "keyword"}}}, "aliases": {}}})
    );
    // Applied when no composable template matches; a composable one takes precedence.
    send(&c, Method::PUT, format!("{u}/jaeger-span-1"), None).await;
    let (_, got) = send(&c, Method::GET, format!("{u}/jaeger-span-1"), None).await;
    assert_eq!(got["jaeger-span-1"]["settings"]["index"]["number_of_shards"], "5");
    let composable = json!({"index_patterns": ["jaeger-span-*"], "template": {"settings": {"number_of_shards": 2}}});
    send(&c, Method::PUT, format!("{u}/_index_template/ours"), Some(composable)).await;
    send(&c, Method::PUT, format!("{u}/jaeger-span-2"), None).await;
    let (_, got) = send(&c, Method::GET, format!("{u}/jaeger-span-2"), None).await;
    assert_eq!(got["jaeger-span-2"]["settings"]["index"]["number_of_shards"], "2");
    assert_eq!(got["jaeger-span-2"]["mappings"], json!({}));

    let (status, _) = send(&c, Method::DELETE, format!("{u}/_template/jaeger-span"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, got) = send(&c, Method::GET, format!("{u}/_template/jaeger-span"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(got["error"]["type"], "index_template_missing_exception");
}
