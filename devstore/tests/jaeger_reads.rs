//! The searches Jaeger Query's Elasticsearch/OpenSearch span reader sends (sorting, `search_after`,
//! `terms` / `max` aggregations, `_msearch`, `ignore_unavailable`, `rest_total_hits_as_int`,
//! `regexp` in nested tag queries, dependency look-ups by RFC 3339 time), answered in OpenSearch's
//! shapes; and the clear 400s for what the dev store does not implement.

mod common;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use common::{index_docs, ndjson, send, store};

fn span(trace: &str, span: &str, service: &str, op: &str, start_us: i64, duration: i64, tags: Value) -> Value {
    json!({"traceID": trace, "spanID": span, "operationName": op, "startTime": start_us,
           "startTimeMillis": start_us / 1000, "duration": duration, "tags": tags,
           "process": {"serviceName": service, "tags": [{"key": "host", "type": "string", "value": "h1"}]},
           "references": [], "logs": []})
}

const T0: i64 = 1_796_000_000_000_000; // 2026-11-30, in µs

/// Jaeger-like span and service templates, then spans of three traces over two daily indices.
async fn jaeger_data(c: &Client, u: &str) {
    let kw = json!({"type": "keyword", "ignore_above": 256});
    let kv = json!({"type": "nested", "dynamic": false, "properties": {"key": kw, "value": kw, "type": kw}});
    let span_t = json!({"index_patterns": ["jaeger-span-*"], "priority": 100, "template": {"mappings": {"properties": {
        "traceID": kw, "spanID": kw, "operationName": kw, "startTime": {"type": "long"},
        "startTimeMillis": {"type": "date", "format": "epoch_millis"}, "duration": {"type": "long"},
        "tags": kv, "process": {"properties": {"serviceName": kw, "tags": kv}}}}}});
    let service_t = json!({"index_patterns": ["jaeger-service-*"], "priority": 100,
        "template": {"mappings": {"properties": {"serviceName": kw, "operationName": kw}}}});
    for (name, t) in [("jaeger-span", span_t), ("jaeger-service", service_t)] {
        let (status, resp) = send(c, Method::PUT, format!("{u}/_index_template/{name}"), Some(t)).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
    }
    let http = |code: &str| json!([{"key": "http.status_code", "type": "int64", "value": code}]);
    index_docs(
        c,
        u,
        "jaeger-span-2026-11-29",
        &[
            ("a1", span("aaaa", "a1", "frontend", "GET /", T0 - 86_400_000_000, 5_000, http("200"))),
            ("a2", span("aaaa", "a2", "backend", "query", T0 - 86_400_000_000 + 10, 3_000, http("200"))),
        ],
    )
    .await;
    index_docs(
        c,
        u,
        "jaeger-span-2026-11-30",
        &[
            ("b1", span("bbbb", "b1", "frontend", "GET /", T0, 90_000, http("500"))),
            (
                "b2",
                span(
                    "bbbb",
                    "b2",
                    "backend",
                    "query",
                    T0 + 5,
                    80_000,
                    json!([{"key": "error", "type": "bool", "value": "true"}]),
                ),
            ),
            ("b3", span("bbbb", "b3", "backend", "query", T0 + 5, 1_000, json!([]))),
            ("c1", span("cccc", "c1", "frontend", "POST /buy", T0 + 1_000, 7_000, http("201"))),
        ],
    )
    .await;
    index_docs(
        c,
        u,
        "jaeger-service-2026-11-30",
        &[
            ("s1", json!({"serviceName": "frontend", "operationName": "GET /"})),
            ("s2", json!({"serviceName": "frontend", "operationName": "POST /buy"})),
            ("s3", json!({"serviceName": "backend", "operationName": "query"})),
        ],
    )
    .await;
}

fn ids(resp: &Value) -> Vec<String> {
    resp["hits"]["hits"].as_array().expect("hits").iter().map(|h| h["_id"].as_str().expect("id").to_owned()).collect()
}

async fn search(c: &Client, url: String, body: Value) -> (StatusCode, Value) {
    send(c, Method::POST, url, Some(body)).await
}

#[tokio::test]
async fn sort_in_every_form_with_sort_values_and_null_scores() {
    let (s, c) = store().await;
    let u = s.url();
    jaeger_data(&c, &u).await;
    let url = format!("{u}/jaeger-span-*/_search");
    for (sort, want) in [
        (json!("startTime"), vec!["a1", "a2", "b1", "b2", "b3", "c1"]),
        (json!({"startTime": "desc"}), vec!["c1", "b2", "b3", "b1", "a2", "a1"]),
        (json!({"startTime": {"order": "desc"}}), vec!["c1", "b2", "b3", "b1", "a2", "a1"]),
        (
            json!([{"startTime": {"order": "desc"}}, {"spanID": {"order": "desc"}}]),
            vec!["c1", "b3", "b2", "b1", "a2", "a1"],
        ),
        (json!([{"duration": "desc"}]), vec!["b1", "b2", "c1", "a1", "a2", "b3"]),
        (json!({"spanID": {"order": "desc"}}), vec!["c1", "b3", "b2", "b1", "a2", "a1"]),
        (json!(["operationName", "spanID"]), vec!["a1", "b1", "c1", "a2", "b2", "b3"]),
    ] {
        let (status, resp) = search(&c, url.clone(), json!({"sort": sort, "size": 10})).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        assert_eq!(ids(&resp), want, "sort {sort}");
        assert_eq!(resp["hits"]["max_score"], Value::Null);
        assert_eq!(resp["hits"]["hits"][0]["_score"], Value::Null);
    }
    let (_, resp) =
        search(&c, url.clone(), json!({"sort": [{"startTime": "asc"}, {"spanID": "asc"}], "size": 1})).await;
    assert_eq!(
        resp["hits"]["hits"][0]["sort"],
        json!([T0 - 86_400_000_000, "a1"]),
        "numbers stay numbers, keywords text"
    );
    let (_, resp) = search(&c, url.clone(), json!({"sort": [{"startTimeMillis": "desc"}], "size": 1})).await;
    assert_eq!(resp["hits"]["hits"][0]["sort"], json!([(T0 + 1_000) / 1000]), "dates sort as epoch millis");
    // Without a sort, hits are scored.
    let (_, resp) = search(&c, url.clone(), json!({"size": 1})).await;
    assert_eq!(resp["hits"]["hits"][0]["_score"], 1.0);
    assert!(resp["hits"]["hits"][0].get("sort").is_none());
}

#[tokio::test]
async fn search_after_pages_through_a_trace_like_jaeger() {
    let (s, c) = store().await;
    let u = s.url();
    jaeger_data(&c, &u).await;
    // Jaeger's per-trace read: (startTime, spanID) ascending, two at a time, resuming after the
    // last hit's sort values; b2 and b3 share a start time, so the tie-breaker matters.
    let query = json!({"bool": {"must": [{"term": {"traceID": "bbbb"}},
        {"range": {"startTimeMillis": {"gte": T0 / 1000 - 1000, "lte": T0 / 1000 + 1000}}}]}});
    let mut after: Option<Value> = None;
    let mut seen = Vec::new();
    loop {
        let mut body = json!({"query": query, "size": 2, "track_total_hits": true,
            "sort": [{"startTime": {"order": "asc"}}, {"spanID": {"order": "asc"}}]});
        if let Some(after) = &after {
            body["search_after"] = after.clone();
        }
        let (status, resp) = search(&c, format!("{u}/jaeger-span-*/_search"), body).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        assert_eq!(resp["hits"]["total"], json!({"value": 3, "relation": "eq"}));
        let page = ids(&resp);
        if page.is_empty() {
            break;
        }
        after = Some(resp["hits"]["hits"].as_array().and_then(|h| h.last()).expect("last")["sort"].clone());
        seen.extend(page);
    }
    assert_eq!(seen, vec!["b1", "b2", "b3"]);

    for (body, reason) in [
        (json!({"search_after": [1], "sort": ["startTime", "spanID"]}), "search_after has 1 value(s) but sort has 2."),
        (
            json!({"search_after": [1], "sort": ["startTime"], "from": 1}),
            "[from] parameter must be set to 0 when [search_after] is used.",
        ),
    ] {
        let (status, resp) = search(&c, format!("{u}/jaeger-span-*/_search"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(resp["error"]["reason"], reason);
    }
}

/// A document without the numeric sort field sorts last with the long's extreme as its sort
/// value (OpenSearch's `missing: _last`); paging on past it with `search_after` must not return it
/// again, in either order: every document exactly once.
#[tokio::test]
async fn search_after_pages_past_documents_missing_the_numeric_sort_field() {
    let (s, c) = store().await;
    let u = s.url();
    let (status, _) = send(
        &c,
        Method::PUT,
        format!("{u}/m"),
        Some(json!({"mappings": {"properties": {"n": {"type": "long"}, "k": {"type": "keyword"}}}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let docs: Vec<(String, Value)> = (0..7)
        .map(|i| {
            let id = format!("d{i}");
            // d0, d3 and d6 have no `n`.
            let doc = if i % 3 == 0 { json!({"k": id}) } else { json!({"k": id, "n": i * 10}) };
            (id, doc)
        })
        .collect();
    let refs: Vec<(&str, Value)> = docs.iter().map(|(id, d)| (id.as_str(), d.clone())).collect();
    index_docs(&c, &u, "m", &refs).await;
    for (order, want_last_sort) in [("asc", i64::MAX), ("desc", i64::MIN)] {
        let mut after: Option<Value> = None;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let mut body = json!({"size": 2, "sort": [{"n": {"order": order}}, {"k": {"order": "asc"}}]});
            if let Some(after) = &after {
                body["search_after"] = after.clone();
            }
            let (status, resp) = search(&c, format!("{u}/m/_search"), body).await;
            assert_eq!(status, StatusCode::OK, "{resp}");
            let page = ids(&resp);
            if page.is_empty() {
                break;
            }
            after = Some(resp["hits"]["hits"].as_array().and_then(|h| h.last()).expect("last")["sort"].clone());
            seen.extend(page);
        }
        let mut want: Vec<String> = vec!["d1", "d2", "d4", "d5"].into_iter().map(str::to_owned).collect();
        if order == "desc" {
            want.reverse();
        }
        want.extend(["d0", "d3", "d6"].map(str::to_owned));
        assert_eq!(seen, want, "{order}: every document exactly once, those without `n` last");
        assert_eq!(after, Some(json!([want_last_sort, "d6"])), "{order}: shown as the long's extreme");
    }
}

#[tokio::test]
async fn unsupported_sorts_are_clear_400s() {
    let (s, c) = store().await;
    let u = s.url();
    jaeger_data(&c, &u).await;
    for (sort, kind, contains) in [
        (
            json!({"startTime": {"order": "desc", "mode": "avg"}}),
            "parsing_exception",
            "sort option [mode] is not implemented",
        ),
        (json!("_score"), "parsing_exception", "sorting on [_score] is not implemented"),
        (json!({"startTime": "sideways"}), "illegal_argument_exception", "Unknown SortOrder [sideways]"),
        (json!("nowhere"), "query_shard_exception", "No mapping found for [nowhere] in order to sort on"),
        (json!("tags.key"), "parsing_exception", "inside nested [tags]"),
    ] {
        let (status, resp) = search(&c, format!("{u}/jaeger-span-*/_search"), json!({"sort": sort})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sort}: {resp}");
        assert_eq!(resp["error"]["type"], kind, "{sort}");
        assert!(resp["error"]["reason"].as_str().is_some_and(|r| r.contains(contains)), "{sort}: {resp}");
    }
}

#[tokio::test]
async fn services_and_operations_as_jaeger_asks() {
    let (s, c) = store().await;
    let u = s.url();
    jaeger_data(&c, &u).await;
    // getServices: a terms aggregation over the service indices of the look-back window, some of
    // which do not exist.
    let url = format!(
        "{u}/jaeger-service-2026-11-30,jaeger-service-2026-11-29,jaeger-service-2026-11-28/_search?ignore_unavailable=true&rest_total_hits_as_int=true"
    );
    let (status, resp) = search(
        &c,
        url.clone(),
        json!({"size": 0,
        "aggregations": {"distinct_services": {"terms": {"field": "serviceName", "size": 10000}}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["hits"], json!({"total": 3, "max_score": null, "hits": []}));
    assert_eq!(
        resp["aggregations"],
        json!({"distinct_services": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": [
            {"key": "frontend", "doc_count": 2}, {"key": "backend", "doc_count": 1}]}})
    );
    let (status, resp) = search(
        &c,
        url,
        json!({"size": 0, "query": {"term": {"serviceName": "frontend"}},
        "aggregations": {"distinct_operations": {"terms": {"field": "operationName", "size": 10000}}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        resp["aggregations"]["distinct_operations"]["buckets"],
        json!([{"key": "GET /", "doc_count": 1}, {"key": "POST /buy", "doc_count": 1}])
    );
    // Without ignore_unavailable a missing concrete index is a 404, as in OpenSearch.
    let (status, resp) = search(&c, format!("{u}/jaeger-service-2026-11-28/_search"), json!({"size": 0})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(resp["error"]["type"], "index_not_found_exception");
}

/// Jaeger's FindTraceIDs body: a bool of ranges, matches and tag clauses, and the `traceIDs`
/// terms aggregation ordered by each trace's latest start time.
fn find_trace_ids_body(service: &str, tag: Option<(&str, &str)>, min_duration: Option<i64>, depth: usize) -> Value {
    let mut must = vec![
        json!({"range": {"startTimeMillis": {"gte": T0 / 1000 - 2 * 86_400_000, "lte": T0 / 1000 + 60_000}}}),
        json!({"match": {"process.serviceName": {"query": service}}}),
    ];
    if let Some(min) = min_duration {
        must.insert(0, json!({"range": {"duration": {"gte": min, "lte": 86_400_000_000_i64}}}));
    }
    if let Some((k, v)) = tag {
        let nested = |path: &str| {
            json!({"nested": {"path": path, "query": {"bool": {"must": [
            {"match": {format!("{path}.key"): {"query": k}}}, {"regexp": {format!("{path}.value"): {"value": v}}}]}}}})
        };
        must.push(json!({"bool": {"should": [
            {"bool": {"must": {"regexp": {format!("tag.{k}"): {"value": v}}}}},
            {"bool": {"must": {"regexp": {format!("process.tag.{k}"): {"value": v}}}}},
            nested("tags"), nested("process.tags"), nested("logs.fields")]}}));
    }
    json!({"size": 0, "query": {"bool": {"must": must}},
        "aggregations": {"traceIDs": {"terms": {"field": "traceID", "size": depth, "order": [{"startTime": "desc"}]},
            "aggregations": {"startTime": {"max": {"field": "startTime"}}}}}})
}

fn buckets(resp: &Value) -> Vec<(String, u64)> {
    resp["aggregations"]["traceIDs"]["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| (b["key"].as_str().expect("key").to_owned(), b["doc_count"].as_u64().expect("count")))
        .collect()
}

#[tokio::test]
async fn trace_ids_by_service_tag_and_duration() {
    let (s, c) = store().await;
    let u = s.url();
    jaeger_data(&c, &u).await;
    let url = format!(
        "{u}/jaeger-span-2026-11-30,jaeger-span-2026-11-29,jaeger-span-2026-11-28/_search?ignore_unavailable=true&rest_total_hits_as_int=true"
    );
    let (status, resp) = search(&c, url.clone(), find_trace_ids_body("frontend", None, None, 20)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(buckets(&resp), vec![("cccc".into(), 1), ("bbbb".into(), 1), ("aaaa".into(), 1)], "latest first");
    assert_eq!(resp["aggregations"]["traceIDs"]["buckets"][0]["startTime"], json!({"value": (T0 + 1_000) as f64}));
    assert_eq!(resp["hits"]["total"], 3);

    let (_, resp) = search(&c, url.clone(), find_trace_ids_body("frontend", None, None, 2)).await;
    assert_eq!(buckets(&resp), vec![("cccc".into(), 1), ("bbbb".into(), 1)]);
    assert_eq!(resp["aggregations"]["traceIDs"]["sum_other_doc_count"], 1);

    let (_, resp) = search(&c, url.clone(), find_trace_ids_body("backend", None, None, 20)).await;
    assert_eq!(buckets(&resp), vec![("bbbb".into(), 2), ("aaaa".into(), 1)]);

    // Tag values are regular expressions, whole-value, searched in span tags, process tags and logs.
    let (_, resp) =
        search(&c, url.clone(), find_trace_ids_body("frontend", Some(("http.status_code", "5.*")), None, 20)).await;
    assert_eq!(buckets(&resp), vec![("bbbb".into(), 1)]);
    let (_, resp) =
        search(&c, url.clone(), find_trace_ids_body("frontend", Some(("http.status_code", "20[01]")), None, 20)).await;
    assert_eq!(buckets(&resp), vec![("cccc".into(), 1), ("aaaa".into(), 1)]);
    let (_, resp) = search(&c, url.clone(), find_trace_ids_body("backend", Some(("host", "h1")), None, 20)).await;
    assert_eq!(buckets(&resp), vec![("bbbb".into(), 2), ("aaaa".into(), 1)], "process tags");
    let (_, resp) = search(&c, url.clone(), find_trace_ids_body("backend", Some(("error", "true")), None, 20)).await;
    assert_eq!(buckets(&resp), vec![("bbbb".into(), 1)]);

    let (_, resp) = search(&c, url.clone(), find_trace_ids_body("frontend", None, Some(6_000), 20)).await;
    assert_eq!(buckets(&resp), vec![("cccc".into(), 1), ("bbbb".into(), 1)], "duration ≥ 6 ms");
}

#[tokio::test]
async fn terms_orders_and_metrics() {
    let (s, c) = store().await;
    let u = s.url();
    jaeger_data(&c, &u).await;
    let url = format!("{u}/jaeger-span-*/_search");
    let agg = |terms: Value| {
        json!({"size": 0, "aggs": {"ops": {"terms": terms,
        "aggs": {"first": {"min": {"field": "startTime"}}, "last": {"max": {"field": "startTimeMillis"}}}}}})
    };
    let keys = |resp: &Value| -> Vec<Value> {
        resp["aggregations"]["ops"]["buckets"].as_array().expect("buckets").iter().map(|b| b["key"].clone()).collect()
    };
    let (status, resp) = search(&c, url.clone(), agg(json!({"field": "operationName"}))).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(keys(&resp), vec![json!("query"), json!("GET /"), json!("POST /buy")], "count desc, then key asc");
    let first = &resp["aggregations"]["ops"]["buckets"][0];
    assert_eq!(first["doc_count"], 3);
    assert_eq!(first["first"], json!({"value": (T0 - 86_400_000_000 + 10) as f64}));
    assert_eq!(
        first["last"],
        json!({"value": ((T0 + 5) / 1000) as f64, "value_as_string": ((T0 + 5) / 1000).to_string()}),
        "a date metric also has its string form, here in the epoch_millis format"
    );
    let (_, resp) = search(&c, url.clone(), agg(json!({"field": "operationName", "order": {"_key": "desc"}}))).await;
    assert_eq!(keys(&resp), vec![json!("query"), json!("POST /buy"), json!("GET /")]);
    let (_, resp) = search(&c, url.clone(), agg(json!({"field": "operationName", "order": {"first": "asc"}}))).await;
    assert_eq!(keys(&resp), vec![json!("GET /"), json!("query"), json!("POST /buy")]);
    let (_, resp) =
        search(&c, url.clone(), agg(json!({"field": "duration", "size": 2, "order": {"_key": "asc"}}))).await;
    assert_eq!(keys(&resp), vec![json!(1_000), json!(3_000)], "numeric keys stay numbers");
    assert_eq!(resp["aggregations"]["ops"]["sum_other_doc_count"], 4);
    // A max over nothing is null.
    let (_, resp) = search(
        &c,
        url,
        json!({"size": 0, "query": {"term": {"traceID": "none"}},
        "aggs": {"m": {"max": {"field": "startTime"}}}}),
    )
    .await;
    assert_eq!(resp["aggregations"]["m"], json!({"value": null}));
}

#[tokio::test]
async fn unimplemented_aggregations_are_clear_400s() {
    let (s, c) = store().await;
    let u = s.url();
    jaeger_data(&c, &u).await;
    for (aggs, kind, contains) in [
        (json!({"x": {"top_hits": {"size": 1}}}), "parsing_exception", "Unknown aggregation type [top_hits]"),
        (json!({"x": {"filter": {"term": {"a": "b"}}}}), "parsing_exception", "Unknown aggregation type [filter]"),
        (
            json!({"x": {"terms": {"field": "traceID", "missing": "n/a"}}}),
            "x_content_parse_exception",
            "[terms] unknown field [missing]",
        ),
        (
            json!({"x": {"terms": {"field": "traceID", "order": {"nope": "desc"}}}}),
            "aggregation_execution_exception",
            "Invalid aggregation order path [nope]",
        ),
        (
            json!({"x": {"max": {"script": {"source": "1"}}}}),
            "x_content_parse_exception",
            "[max] unknown field [script]",
        ),
        (json!({"x": {"terms": {"field": "tags.key"}}}), "illegal_argument_exception", "needs a nested aggregation"),
        (
            json!({"x": {"terms": {"field": "traceID", "min_doc_count": 0}}}),
            "illegal_argument_exception",
            "min_doc_count [0]",
        ),
        (
            json!({"x": {"max": {"field": "startTime"}, "aggs": {"y": {"max": {"field": "duration"}}}}}),
            "aggregation_initialization_exception",
            "cannot accept sub-aggregations",
        ),
    ] {
        let (status, resp) = search(&c, format!("{u}/jaeger-span-*/_search"), json!({"size": 0, "aggs": aggs})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{aggs}: {resp}");
        assert_eq!(resp["error"]["type"], kind, "{aggs}: {resp}");
        assert!(resp["error"]["reason"].as_str().is_some_and(|r| r.contains(contains)), "{aggs}: {resp}");
    }
    let (status, resp) = search(
        &c,
        format!("{u}/jaeger-span-*/_search"),
        json!({"query": {"regexp": {"operationName": {"value": "GET.*&x"}}}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(resp["error"]["reason"].as_str().is_some_and(|r| r.contains("operator [&]")), "{resp}");
}

#[tokio::test]
async fn msearch_answers_each_search_in_its_slot() {
    let (s, c) = store().await;
    let u = s.url();
    jaeger_data(&c, &u).await;
    let read = |trace: &str| {
        json!({"size": 10000, "track_total_hits": true,
        "query": {"bool": {"must": [{"term": {"traceID": trace}},
            {"range": {"startTimeMillis": {"gte": T0 / 1000 - 2 * 86_400_000, "lte": T0 / 1000 + 60_000}}}]}},
        "sort": [{"startTime": {"order": "asc"}}, {"spanID": {"order": "asc"}}]})
    };
    let body = [
        json!({"ignore_unavailable": true, "index": ["jaeger-span-2026-11-30", "jaeger-span-2026-11-29", "jaeger-span-2026-11-28"]}),
        read("bbbb"),
        json!({"ignore_unavailable": true, "index": "jaeger-span-2026-11-29"}),
        read("aaaa"),
        json!({"index": "jaeger-span-2026-11-28"}),
        read("aaaa"),
        json!({"index": "jaeger-span-*"}),
        json!({"query": {"fuzzy": {"a": "b"}}}),
        json!({}),
        read("none"),
    ]
    .iter()
    .map(|l| format!("{l}\n"))
    .collect::<String>();
    let (status, resp) = ndjson(&c, format!("{u}/_msearch?rest_total_hits_as_int=true"), &body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let r = resp["responses"].as_array().expect("responses");
    assert_eq!(r.len(), 5);
    assert_eq!(ids(&r[0]), vec!["b1", "b2", "b3"]);
    assert_eq!(r[0]["hits"]["total"], 3);
    assert_eq!(r[0]["status"], 200);
    assert_eq!(r[0]["hits"]["hits"][0]["_source"]["spanID"], "b1");
    assert_eq!(ids(&r[1]), vec!["a1", "a2"]);
    assert_eq!(r[2]["status"], 404);
    assert_eq!(r[2]["error"]["type"], "index_not_found_exception");
    assert_eq!(r[3]["status"], 400);
    assert_eq!(r[3]["error"]["type"], "parsing_exception");
    assert!(resp["took"].is_u64());
    assert_eq!(r[4]["hits"]["total"], 0, "no index named: all of them");

    for (body, reason) in [
        ("{\"index\":\"a\",\"size\":1}\n{}\n", "key [size] is not supported in the metadata section"),
        ("{}\n{}", "The msearch request must be terminated by a newline [\\n]"),
    ] {
        let (status, resp) = ndjson(&c, format!("{u}/_msearch"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(resp["error"]["reason"], reason);
    }
}

#[tokio::test]
async fn dependencies_by_rfc3339_time_range() {
    let (s, c) = store().await;
    let u = s.url();
    index_docs(&c, &u, "jaeger-dependencies-2026-11-30", &[
        ("d1", json!({"timestamp": "2026-11-30T00:00:00Z", "dependencies": [{"parent": "frontend", "child": "backend", "callCount": 7}]})),
        ("d2", json!({"timestamp": "2026-11-30T06:00:00.5Z", "dependencies": [{"parent": "backend", "child": "db", "callCount": 2}]})),
    ])
    .await;
    // Jaeger sends Go's RFC 3339 with nanoseconds; "…:00Z" must count as earlier than "…:00.5Z".
    let body = json!({"size": 10000, "query": {"range": {"timestamp": {
        "gte": "2026-11-29T06:00:00.000000001Z", "lte": "2026-11-30T06:00:00.4Z"}}}});
    let (status, resp) = search(&c, format!("{u}/jaeger-dependencies-2026-11-30,jaeger-dependencies-2026-11-29/_search?ignore_unavailable=true&rest_total_hits_as_int=true"), body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(ids(&resp), vec!["d1"]);
    let (status, resp) = search(
        &c,
        format!("{u}/jaeger-dependencies-*/_search"),
        json!({"query": {"range": {"timestamp": {"gte": "now-1d"}}}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(resp["error"]["reason"].as_str().is_some_and(|r| r.contains("date math")), "{resp}");
}

#[tokio::test]
async fn totals_and_source_filtering() {
    let (s, c) = store().await;
    let u = s.url();
    jaeger_data(&c, &u).await;
    let url = format!("{u}/jaeger-span-*/_search");
    let (_, resp) = search(&c, url.clone(), json!({"track_total_hits": false, "size": 0})).await;
    assert!(resp["hits"].get("total").is_none(), "{resp}");
    let (_, resp) = search(&c, url.clone(), json!({"track_total_hits": 2, "size": 0})).await;
    assert_eq!(resp["hits"]["total"], json!({"value": 2, "relation": "gte"}));
    let (status, resp) = search(&c, format!("{url}?rest_total_hits_as_int=true"), json!({"track_total_hits": 2})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        resp["error"]["reason"],
        "[rest_total_hits_as_int] cannot be used if the tracking of total hits is not accurate, got 2"
    );
    let (_, resp) =
        search(&c, url.clone(), json!({"size": 1, "sort": ["spanID"], "_source": ["traceID", "process.serviceName"]}))
            .await;
    assert_eq!(resp["hits"]["hits"][0]["_source"], json!({"traceID": "aaaa", "process": {"serviceName": "frontend"}}));
    let (_, resp) = search(&c, url, json!({"size": 1, "_source": false})).await;
    assert!(resp["hits"]["hits"][0].get("_source").is_none());
}

#[tokio::test]
async fn msearch_with_indices_in_the_url_like_jaeger_v1() {
    let (s, c) = store().await;
    let u = s.url();
    jaeger_data(&c, &u).await;
    // Jaeger 1.x (olivere): the indices go in the URL, each header only says ignore_unavailable,
    // and the first page already sends search_after [0] on a single startTime sort.
    let body = |trace: &str| {
        format!(
            "{}\n{}\n",
            json!({"ignore_unavailable": true}),
            json!({"query": {"bool": {"must": {"term": {"traceID": trace}}}}, "search_after": [0],
                "size": 10000, "sort": [{"startTime": {"order": "asc"}}]})
        )
    };
    let (status, resp) = ndjson(
        &c,
        format!("{u}/jaeger-span-2026-11-30,jaeger-span-2026-11-29,jaeger-span-2026-11-28/_msearch"),
        &(body("aaaa") + &body("cccc")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(ids(&resp["responses"][0]), vec!["a1", "a2"]);
    assert_eq!(ids(&resp["responses"][1]), vec!["c1"]);
    assert_eq!(resp["responses"][0]["hits"]["total"], json!({"value": 2, "relation": "eq"}));
    assert_eq!(resp["responses"][1]["hits"]["hits"][0]["sort"], json!([T0 + 1_000]));
}
