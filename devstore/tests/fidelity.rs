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

/// `from + size` is checked, never wrapped: sizes up to `u64::MAX` from the body or the URL are
/// the result window 400, with the true sum.
#[tokio::test]
async fn huge_from_and_size_are_the_result_window_400() {
    let (s, c) = store().await;
    let u = s.url();
    send(&c, Method::PUT, format!("{u}/i"), None).await;
    let max = u64::MAX;
    let window_error = |sum: &str| {
        format!(
            "Result window is too large, from + size must be less than or equal to: [10000] but was [{sum}]. See the scroll api for a more efficient way to request large data sets. This limit can be set by changing the [index.max_result_window] index level setting."
        )
    };
    for (url, body, sum) in [
        (format!("{u}/i/_search"), json!({"from": 1, "size": max}), "18446744073709551616"),
        (format!("{u}/i/_search"), json!({"from": max, "size": max}), "36893488147419103230"),
        (format!("{u}/i/_search?size={max}&from=1"), json!({}), "18446744073709551616"),
        (format!("{u}/i/_search?from={max}"), json!({}), "18446744073709551625"),
        (format!("{u}/i/_search"), json!({"from": 1, "size": 10_000}), "10001"),
    ] {
        let (status, resp) = send(&c, Method::POST, url.clone(), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {resp}");
        assert_eq!(resp["error"]["type"], "illegal_argument_exception");
        assert_eq!(resp["error"]["reason"], window_error(sum), "{url}");
        assert_eq!(resp["error"]["root_cause"][0]["reason"], window_error(sum));
        assert_eq!(resp["status"], 400);
    }
}

/// `search.max_buckets`: more buckets than 65 535 in one search is OpenSearch's
/// `too_many_buckets_exception`, a 503; a large `size` over few keys is fine.
#[tokio::test]
async fn too_many_buckets_is_opensearchs_503() {
    let (s, c) = store().await;
    let u = s.url();
    let values: Vec<u64> = (0..=65_535).collect();
    common::index_docs(&c, &u, "b", &[("1", json!({"v": values}))]).await;
    let terms = |size: u64| json!({"size": 0, "aggs": {"v": {"terms": {"field": "v", "size": size}}}});
    let (status, resp) = send(&c, Method::POST, format!("{u}/b/_search"), Some(terms(1_000_000))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{resp}");
    let reason = "Trying to create too many buckets. Must be less than or equal to: [65535] but was [65536]. This limit can be set by changing the [search.max_buckets] cluster level setting.";
    assert_eq!(resp["error"]["type"], "too_many_buckets_exception");
    assert_eq!(resp["error"]["reason"], reason);
    assert_eq!(resp["error"]["max_buckets"], 65_535);
    assert_eq!(resp["error"]["root_cause"][0]["type"], "too_many_buckets_exception");
    assert_eq!(resp["status"], 503);
    let (status, resp) = send(&c, Method::POST, format!("{u}/b/_search"), Some(terms(65_535))).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["aggregations"]["v"]["buckets"].as_array().map(Vec::len), Some(65_535));
    assert_eq!(resp["aggregations"]["v"]["sum_other_doc_count"], 1);
}

/// `index.max_regex_length`: a `regexp` longer than 1 000 characters is OpenSearch's 400.
#[tokio::test]
async fn regexp_longer_than_max_regex_length_is_a_400() {
    let (s, c) = store().await;
    let u = s.url();
    send(&c, Method::PUT, format!("{u}/i"), None).await;
    let query = |p: String| json!({"query": {"regexp": {"f": {"value": p}}}});
    let (status, resp) = send(&c, Method::POST, format!("{u}/i/_search"), Some(query("a".repeat(1001)))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert_eq!(resp["error"]["type"], "illegal_argument_exception");
    assert_eq!(
        resp["error"]["reason"],
        "The length of regex [1001] used in the Regexp Query request has exceeded the allowed maximum of [1000]. This maximum can be set by changing the [index.max_regex_length] index level setting."
    );
    let (status, resp) = send(&c, Method::POST, format!("{u}/i/_search"), Some(query("a".repeat(1000)))).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

/// Template PUTs (composable and legacy) validate the name and index patterns as OpenSearch's
/// `MetadataIndexTemplateService.validate` does, every problem in one
/// `invalid_index_template_exception`; patterns are at most 255 bytes (the dev store's bound).
#[tokio::test]
async fn template_patterns_are_validated() {
    let (s, c) = store().await;
    let u = s.url();
    for path in ["_index_template", "_template"] {
        let put = |name: &str, patterns: Value| {
            send(&c, Method::PUT, format!("{u}/{path}/{name}"), Some(json!({"index_patterns": patterns})))
        };
        let (status, resp) = put("t", json!(["a b", "x,y", "_z", "q:1#"])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {resp}");
        assert_eq!(resp["error"]["type"], "invalid_index_template_exception");
        assert_eq!(
            resp["error"]["reason"],
            "index_template [t] invalid, cause [Validation Failed: 1: index_patterns [a b] must not contain a space;2: index_pattern [a b] must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?];3: index_pattern [x,y] must not contain a ',';4: index_pattern [x,y] must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?];5: index_pattern [_z] must not start with '_';6: index_pattern [q:1#] must not contain a '#';7: index_pattern [q:1#] must not contain a ':';]",
            "{path}"
        );
        assert_eq!(resp["status"], 400);
        let (status, resp) = put("t", json!(["a/b*"])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {resp}");
        let (status, resp) = put("Upper", json!(["ok-*"])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {resp}");
        assert_eq!(
            resp["error"]["reason"],
            "index_template [Upper] invalid, cause [Validation Failed: 1: name must be lower cased;]"
        );
        let long = format!("{}*", "x".repeat(255));
        let (status, resp) = put("t", json!([long])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {resp}");
        assert_eq!(resp["error"]["type"], "invalid_index_template_exception");
        assert!(resp["error"]["reason"].as_str().is_some_and(|r| r.contains("longer than 255 bytes")), "{resp}");
        let (status, resp) =
            put(&format!("ok-{path}"), json!([format!("{}-{}*", path.trim_start_matches('_'), "x".repeat(200))])).await;
        assert_eq!(status, StatusCode::OK, "{path}: {resp}");
    }
}

/// OpenSearch 2.x refuses a legacy template whose patterns overlap a composable template's
/// (whatever its priority), unless it has the match-all pattern `*` or updates an existing legacy
/// template without changing its patterns (then it only warns).
#[tokio::test]
async fn legacy_template_overlapping_a_composable_one_is_refused() {
    let (s, c) = store().await;
    let u = s.url();
    let legacy = |name: &str, patterns: Value| {
        send(&c, Method::PUT, format!("{u}/_template/{name}"), Some(json!({"index_patterns": patterns})))
    };
    assert_eq!(legacy("jaeger-span", json!(["jaeger-span-*"])).await.0, StatusCode::OK);
    let composable = json!({"index_patterns": ["jaeger-span-*", "other"], "priority": 100});
    let (status, _) = send(&c, Method::PUT, format!("{u}/_index_template/ours"), Some(composable)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        &c,
        Method::PUT,
        format!("{u}/_index_template/more"),
        Some(json!({"index_patterns": ["*-span-2026*"], "priority": 7})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, resp) = legacy("new", json!(["jaeger-*", "x"])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert_eq!(resp["error"]["type"], "illegal_argument_exception");
    assert_eq!(
        resp["error"]["reason"],
        "legacy template [new] has index patterns [jaeger-*, x] matching patterns from existing composable templates [more,ours] with patterns (more => [*-span-2026*],ours => [jaeger-span-*, other]), use composable templates (/_index_template) instead"
    );
    assert_eq!(resp["status"], 400);
    let (status, _) = send(&c, Method::HEAD, format!("{u}/_template/new"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");

    // Updating an existing legacy template with the same patterns, or a match-all one: allowed.
    assert_eq!(legacy("jaeger-span", json!(["jaeger-span-*"])).await.0, StatusCode::OK);
    assert_eq!(legacy("global", json!(["*"])).await.0, StatusCode::OK);
    // Changing the patterns of an existing one is checked like a new one.
    assert_eq!(legacy("jaeger-span", json!(["jaeger-span-2026*"])).await.0, StatusCode::BAD_REQUEST);
    // No overlap: fine.
    assert_eq!(legacy("svc", json!(["jaeger-service"])).await.0, StatusCode::OK);
}

/// `_msearch` holds at most 1 000 searches in the dev store (OpenSearch has no such cap).
#[tokio::test]
async fn msearch_with_too_many_searches_is_a_400() {
    let (s, c) = store().await;
    let u = s.url();
    send(&c, Method::PUT, format!("{u}/i"), None).await;
    let (status, resp) = ndjson(&c, format!("{u}/i/_msearch"), &"{}\n{\"size\":0}\n".repeat(1000)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["responses"].as_array().map(Vec::len), Some(1000));
    let (status, resp) = ndjson(&c, format!("{u}/i/_msearch"), &"{}\n{\"size\":0}\n".repeat(1001)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert_eq!(resp["error"]["type"], "illegal_argument_exception");
    assert!(resp["error"]["reason"].as_str().is_some_and(|r| r.contains("[1000]") && r.contains("spanline-devstore")));
    assert_eq!(resp["status"], 400);
}

/// Searches index `i` with `body`; the answer, asserting a 200.
async fn search_ok(c: &reqwest::Client, u: &str, body: Value) -> Value {
    let (status, resp) = send(c, Method::POST, format!("{u}/i/_search"), Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}: {resp}");
    resp
}

fn hit_ids(resp: &Value) -> Vec<String> {
    resp["hits"]["hits"].as_array().expect("hits").iter().map(|h| h["_id"].as_str().expect("id").to_owned()).collect()
}

/// `ignore_above`: a keyword value longer than the limit is not indexed, so no query,
/// aggregation or sort sees it (`exists` is false where it was the only value), while `_source`
/// still holds it.
#[tokio::test]
async fn keyword_values_over_ignore_above_are_not_indexed() {
    let (s, c) = store().await;
    let u = s.url();
    let kw = json!({"type": "keyword", "ignore_above": 5});
    let mappings = json!({"mappings": {"properties": {
        "k": kw, "tags": {"type": "nested", "properties": {"key": kw, "value": kw}}}}});
    let (status, resp) = send(&c, Method::PUT, format!("{u}/i"), Some(mappings)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    common::index_docs(
        &c,
        &u,
        "i",
        &[
            ("short", json!({"k": "abc", "tags": [{"key": "t", "value": "v"}]})),
            ("long", json!({"k": "abcdefgh", "tags": [{"key": "t", "value": "toolong"}]})),
            ("both", json!({"k": ["zz", "zzzzzzzz"]})),
        ],
    )
    .await;
    let ids = |resp: &Value| {
        let mut ids = hit_ids(resp);
        ids.sort();
        ids
    };
    let r = search_ok(&c, &u, json!({"query": {"term": {"k": "abcdefgh"}}})).await;
    assert!(ids(&r).is_empty(), "{r}");
    let r = search_ok(&c, &u, json!({"query": {"match": {"k": "zzzzzzzz"}}})).await;
    assert!(ids(&r).is_empty(), "{r}");
    let r = search_ok(&c, &u, json!({"query": {"terms": {"k": ["abcdefgh", "abc"]}}})).await;
    assert_eq!(ids(&r), ["short"]);
    let r = search_ok(&c, &u, json!({"query": {"regexp": {"k": "abc.*"}}})).await;
    assert_eq!(ids(&r), ["short"]);
    let r = search_ok(&c, &u, json!({"query": {"exists": {"field": "k"}}})).await;
    assert_eq!(ids(&r), ["both", "short"], "only-ignored values do not exist");
    let nested = json!({"query": {"nested": {"path": "tags", "query": {"term": {"tags.value": "toolong"}}}}});
    assert!(ids(&search_ok(&c, &u, nested).await).is_empty());
    let nested = json!({"query": {"nested": {"path": "tags", "query": {"exists": {"field": "tags.value"}}}}});
    assert_eq!(ids(&search_ok(&c, &u, nested).await), ["short"]);
    let r = search_ok(&c, &u, json!({"size": 0, "aggs": {"k": {"terms": {"field": "k"}}}})).await;
    assert_eq!(
        r["aggregations"]["k"]["buckets"],
        json!([{"key": "abc", "doc_count": 1}, {"key": "zz", "doc_count": 1}])
    );
    // Sorting: the long-only document has no value and sorts last either way.
    let r = search_ok(&c, &u, json!({"sort": [{"k": "desc"}]})).await;
    assert_eq!(hit_ids(&r), ["both", "short", "long"]);
    assert_eq!(r["hits"]["hits"][0]["sort"], json!(["zz"]));
    assert_eq!(r["hits"]["hits"][2]["sort"], json!([null]));
    // `_source` is untouched.
    let r = search_ok(&c, &u, json!({"query": {"ids": {"values": ["long"]}}})).await;
    assert_eq!(r["hits"]["hits"][0]["_source"]["k"], "abcdefgh");
    let (_, count) =
        send(&c, Method::POST, format!("{u}/i/_count"), Some(json!({"query": {"term": {"k": "abcdefgh"}}}))).await;
    assert_eq!(count["count"], 0);
}

/// Sorting on, or `terms`/`max`/`min` over, a `text` field is OpenSearch's fielddata 400;
/// `regexp` on a numeric or date field is its `query_shard_exception`.
#[tokio::test]
async fn text_fielddata_and_regexp_on_numbers_are_opensearchs_400s() {
    let (s, c) = store().await;
    let u = s.url();
    let mappings = json!({"mappings": {"properties": {
        "body": {"type": "text"}, "k": {"type": "keyword"}, "n": {"type": "long"},
        "at": {"type": "date"}, "i": {"type": "integer"}}}});
    let (status, resp) = send(&c, Method::PUT, format!("{u}/i"), Some(mappings)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    common::index_docs(
        &c,
        &u,
        "i",
        &[("1", json!({"body": "some words", "k": "a", "n": 12, "at": 1_700_000_000_000_i64, "i": 3}))],
    )
    .await;
    let fielddata = "Text fields are not optimised for operations that require per-document field data like aggregations and sorting, so these operations are disabled by default. Please use a keyword field instead. Alternatively, set fielddata=true on [body] in order to load field data by uninverting the inverted index. Note that this can use significant memory.";
    for body in [
        json!({"sort": [{"body": "asc"}]}),
        json!({"sort": "body"}),
        json!({"size": 0, "aggs": {"a": {"terms": {"field": "body"}}}}),
        json!({"size": 0, "aggs": {"a": {"max": {"field": "body"}}}}),
        json!({"size": 0, "aggs": {"a": {"min": {"field": "body"}}}}),
        json!({"size": 0, "aggs": {"a": {"terms": {"field": "k"}, "aggs": {"b": {"terms": {"field": "body"}}}}}}),
        // Refused whatever matched, as OpenSearch checks the mapping before collecting.
        json!({"query": {"term": {"k": "none"}}, "size": 0, "aggs": {"a": {"terms": {"field": "k"}, "aggs": {"b": {"max": {"field": "body"}}}}}}),
    ] {
        let (status, resp) = send(&c, Method::POST, format!("{u}/i/_search"), Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {resp}");
        assert_eq!(resp["error"]["root_cause"][0]["type"], "illegal_argument_exception", "{body}");
        assert_eq!(resp["error"]["root_cause"][0]["reason"], fielddata, "{body}");
        assert_eq!(resp["status"], 400);
    }
    for (field, kind) in [("n", "long"), ("at", "date"), ("i", "integer")] {
        let body = json!({"query": {"bool": {"filter": [{"regexp": {field: "1.*"}}]}}});
        let reason = format!(
            "Can only use regexp queries on keyword and text fields - not on [{field}] which is of type [{kind}]"
        );
        for url in [format!("{u}/i/_search"), format!("{u}/i/_count")] {
            let (status, resp) = send(&c, Method::POST, url.clone(), Some(body.clone())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{url} {body}: {resp}");
            assert_eq!(resp["error"]["root_cause"][0]["type"], "query_shard_exception");
            assert_eq!(resp["error"]["root_cause"][0]["reason"], reason);
        }
    }
    // Keyword and text fields, and unmapped ones, still take regexp.
    for field in ["k", "body", "unmapped"] {
        let (status, resp) =
            send(&c, Method::POST, format!("{u}/i/_search"), Some(json!({"query": {"regexp": {field: ".*"}}}))).await;
        assert_eq!(status, StatusCode::OK, "{field}: {resp}");
    }
}

/// Blank lines in `_bulk`, as OpenSearch's `BulkRequestParser` reads them: skipped where an action
/// is expected (still counted in line numbers), the (empty) source where a source is expected, and
/// an action on the last line without a source is dropped.
#[tokio::test]
async fn bulk_blank_lines_are_read_as_opensearch_reads_them() {
    let (s, c) = store().await;
    let u = s.url();
    // Blank action lines are skipped.
    let body = "\n{\"index\":{\"_index\":\"i\",\"_id\":\"1\"}}\n{\"a\":1}\n\n \n{\"index\":{\"_index\":\"i\",\"_id\":\"2\"}}\n{\"a\":2}\n";
    let (status, resp) = ndjson(&c, format!("{u}/_bulk?refresh=true"), body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["items"].as_array().map(Vec::len), Some(2), "{resp}");
    assert_eq!(resp["errors"], false);
    // ... but counted in line numbers.
    let (status, resp) = ndjson(&c, format!("{u}/_bulk"), "\n\n{\"explode\":{}}\n{}\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        resp["error"]["reason"],
        "Malformed action/metadata line [3], expected one of [create, delete, index, update] but found [explode]"
    );
    // A blank line where a source is expected is that item's (empty) source.
    let body =
        "{\"index\":{\"_index\":\"i\",\"_id\":\"3\"}}\n\n{\"index\":{\"_index\":\"i\",\"_id\":\"4\"}}\n{\"a\":4}\n";
    let (status, resp) = ndjson(&c, format!("{u}/_bulk?refresh=true"), body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["errors"], true);
    let failed = &resp["items"][0]["index"];
    assert_eq!(failed["_id"], "3");
    assert_eq!(failed["status"], 400, "{resp}");
    assert_eq!(failed["error"]["type"], "mapper_parsing_exception");
    assert_eq!(failed["error"]["reason"], "failed to parse, document is empty");
    assert_eq!(resp["items"][1]["index"]["_id"], "4");
    assert_eq!(resp["items"][1]["index"]["status"], 201);
    // An action on the last line, without a source, is dropped; the rest is written.
    let body =
        "{\"index\":{\"_index\":\"i\",\"_id\":\"5\"}}\n{\"a\":5}\n{\"index\":{\"_index\":\"i\",\"_id\":\"6\"}}\n";
    let (status, resp) = ndjson(&c, format!("{u}/_bulk?refresh=true"), body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["items"].as_array().map(Vec::len), Some(1), "{resp}");
    assert_eq!(resp["items"][0]["index"]["_id"], "5");
    let (_, count) = send(&c, Method::GET, format!("{u}/i/_count"), None).await;
    assert_eq!(count["count"], 4, "1, 2, 4 and 5");
    // Nothing left to do is OpenSearch's validation error.
    let (status, resp) = ndjson(&c, format!("{u}/_bulk"), "{\"index\":{\"_index\":\"i\"}}\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(resp["error"]["type"], "action_request_validation_exception");
    assert_eq!(resp["error"]["reason"], "Validation Failed: 1: no requests added;");
}

/// Blank lines in `_msearch`, as OpenSearch's `MultiSearchRequest` reads them: an empty first line
/// is skipped, any other blank header is `{}`, a blank body is a whole-request 400, and a header on
/// the last line without a body is dropped.
#[tokio::test]
async fn msearch_blank_lines_are_read_as_opensearch_reads_them() {
    let (s, c) = store().await;
    let u = s.url();
    common::index_docs(&c, &u, "i", &[("1", json!({"a": 1}))]).await;
    let url = format!("{u}/i/_msearch");
    let (status, resp) = ndjson(&c, url.clone(), "\n{}\n{\"size\":0}\n").await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["responses"].as_array().map(Vec::len), Some(1), "{resp}");
    // A blank header (not the first line) is `{}`, followed by its body.
    let (status, resp) = ndjson(&c, url.clone(), "{}\n{}\n\n{\"size\":0}\n").await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let responses = resp["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 2, "{resp}");
    assert_eq!(responses[0]["hits"]["hits"].as_array().map(Vec::len), Some(1));
    assert_eq!(responses[1]["status"], 200);
    assert_eq!(responses[1]["hits"]["total"]["value"], 1);
    assert_eq!(responses[1]["hits"]["hits"].as_array().map(Vec::len), Some(0), "size 0 was the body");
    // A header on the last line without a body is dropped.
    let (status, resp) = ndjson(&c, url.clone(), "{}\n{}\n{\"index\":\"nope\"}\n").await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["responses"].as_array().map(Vec::len), Some(1), "{resp}");
    let (status, resp) = ndjson(&c, url.clone(), "{}\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(resp["error"]["reason"], "Validation Failed: 1: no requests added;");
    // A blank body cannot be parsed: the whole request fails.
    let (status, resp) = ndjson(&c, url, "{}\n{}\n{}\n\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert_eq!(resp["error"]["type"], "parsing_exception");
    assert_eq!(resp["error"]["reason"], "Expected [START_OBJECT] but found [null]");
}
