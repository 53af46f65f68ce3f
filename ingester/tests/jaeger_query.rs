//! What Jaeger Query reads back from what the ingester wrote: traces go through the real broker
//! (Tansu, SQLite) and the real ingester into the dev store, then this test sends the request
//! bodies Jaeger's Elasticsearch/OpenSearch span reader builds (services, operations, trace ids by
//! service, tag, duration and time, every span of a trace through `_msearch`, dependencies) and
//! checks the answers exactly. Also: the ingester's template priority against a store that already
//! holds a template for the same indices.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::{collector::trace::v1::ExportTraceServiceRequest, common::v1::KeyValue};
use prost::Message;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use spanline_devstore::Settings;
use spanline_ingester::{document::IndexNames, error::Error, templates};
use spanline_testkit::{Broker, devstore_with, fixtures, produce, settled_count};
use tokio_util::sync::CancellationToken;

use common::config;

// ---- Jaeger's request bodies, built the way its span reader builds them ----

/// Jaeger's defaults: `es.max-doc-count`, the UI's default search limit, `max_span_age`.
const MAX_DOC_COUNT: usize = 10_000;
const SEARCH_DEPTH: usize = 20;
const MAX_SPAN_AGE: Duration = Duration::from_secs(72 * 3600);

/// The daily indices Jaeger names for [start, end], newest first (its `timeRangeIndices`); they
/// need not exist, which is why every read says `ignore_unavailable`.
fn read_targets(prefix: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<String> {
    let name = |t: DateTime<Utc>| format!("{prefix}{}", t.format("%Y-%m-%d"));
    let first = name(start);
    let mut out = Vec::new();
    let mut t = end;
    while name(t) != first && t > start {
        if out.last() != Some(&name(t)) {
            out.push(name(t));
        }
        t -= chrono::Duration::days(1);
    }
    out.push(first);
    out
}

fn search_url(store: &str, indices: &[String]) -> String {
    format!("{store}/{}/_search?ignore_unavailable=true&rest_total_hits_as_int=true", indices.join(","))
}

fn services_body() -> Value {
    json!({"size": 0, "aggregations": {"distinct_services": {"terms": {"field": "serviceName", "size": MAX_DOC_COUNT}}}})
}

fn operations_body(service: &str) -> Value {
    json!({"size": 0, "query": {"term": {"serviceName": service}},
        "aggregations": {"distinct_operations": {"terms": {"field": "operationName", "size": MAX_DOC_COUNT}}}})
}

/// Jaeger's `TraceQueryParameters`, the part this test uses.
#[derive(Default)]
struct TraceQuery<'a> {
    service: &'a str,
    operation: Option<&'a str>,
    tags: Vec<(&'a str, &'a str)>,
    start_min: Option<DateTime<Utc>>,
    start_max: Option<DateTime<Utc>>,
    duration_min: Option<Duration>,
    duration_max: Option<Duration>,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).expect("fits")
}

/// A tag filter: object fields (`tag.K`, `process.tag.K`) by regexp, and the nested `tags`,
/// `process.tags` and `logs.fields` by key match + value regexp, any of them.
fn tag_query(key: &str, value: &str) -> Value {
    let object = |field: &str| json!({"bool": {"must": {"regexp": {format!("{field}.{}", key.replace('.', "@")): {"value": value}}}}});
    let nested = |path: &str| {
        json!({"nested": {"path": path, "query": {"bool": {"must": [
            {"match": {format!("{path}.key"): {"query": key}}},
            {"regexp": {format!("{path}.value"): {"value": value}}}]}}}})
    };
    json!({"bool": {"should": [object("tag"), object("process.tag"), nested("tags"), nested("process.tags"), nested("logs.fields")]}})
}

fn find_trace_ids_body(q: &TraceQuery<'_>) -> Value {
    let mut must = Vec::new();
    if q.duration_min.is_some() || q.duration_max.is_some() {
        let max = q.duration_max.map_or(24 * 3600 * 1_000_000, micros);
        must.push(json!({"range": {"duration": {"gte": q.duration_min.map_or(0, micros), "lte": max}}}));
    }
    let (start, end) = (q.start_min.expect("start"), q.start_max.expect("end"));
    must.push(json!({"range": {"startTimeMillis": {"gte": start.timestamp_millis(), "lte": end.timestamp_millis()}}}));
    must.push(json!({"match": {"process.serviceName": {"query": q.service}}}));
    if let Some(op) = q.operation {
        must.push(json!({"match": {"operationName": {"query": op}}}));
    }
    for (k, v) in &q.tags {
        must.push(tag_query(k, v));
    }
    json!({"size": 0, "query": {"bool": {"must": must}}, "aggregations": {"traceIDs": {
        "terms": {"field": "traceID", "size": SEARCH_DEPTH, "order": [{"startTime": "desc"}]},
        "aggregations": {"startTime": {"max": {"field": "startTime"}}}}}})
}

/// One `_msearch` pair of Jaeger's multiRead: the trace's spans by (startTime, spanID), `size` at a
/// time (Jaeger: `MAX_DOC_COUNT`), paged with `search_after`.
fn trace_read(
    indices: &[String],
    trace: &str,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    size: usize,
    after: Option<&Value>,
) -> String {
    let mut body = json!({"size": size, "track_total_hits": true,
        "query": {"bool": {"must": [{"term": {"traceID": trace}},
            {"range": {"startTimeMillis": {"gte": start.timestamp_millis(), "lte": end.timestamp_millis()}}}]}},
        "sort": [{"startTime": {"order": "asc"}}, {"spanID": {"order": "asc"}}]});
    if let Some(after) = after {
        body["search_after"] = after.clone();
    }
    format!("{}\n{body}\n", json!({"ignore_unavailable": true, "index": indices}))
}

async fn post(client: &Client, url: String, body: &Value) -> Value {
    let resp = client.post(url).json(body).send().await.expect("sent");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.expect("json")
}

fn keys(answer: &Value, agg: &str) -> Vec<String> {
    answer["aggregations"][agg]["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("no {agg} buckets in {answer}"))
        .iter()
        .map(|b| b["key"].as_str().expect("key").to_owned())
        .collect()
}

// ---- the traces written ----

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn trace_hex(t: u64) -> String {
    hex(&fixtures::trace_id(t))
}

/// A record of service `service` holding trace `t` (`spans` spans, starting `t` seconds after
/// `base`), changed by `edit`.
fn record(
    service: &str,
    t: u64,
    spans: u64,
    base: u64,
    edit: impl Fn(&mut ExportTraceServiceRequest),
) -> (String, Vec<u8>) {
    let mut request = fixtures::request(service, t, 1, spans, base + t * 1_000_000_000);
    edit(&mut request);
    (trace_hex(t), request.encode_to_vec())
}

fn spans_of(
    request: &mut ExportTraceServiceRequest,
) -> impl Iterator<Item = &mut opentelemetry_proto::tonic::trace::v1::Span> {
    request.resource_spans.iter_mut().flat_map(|r| r.scope_spans.iter_mut()).flat_map(|s| s.spans.iter_mut())
}

fn set_attr(span: &mut opentelemetry_proto::tonic::trace::v1::Span, kv: KeyValue) {
    span.attributes.retain(|a| a.key != kv.key);
    span.attributes.push(kv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_query_finds_and_reads_what_the_ingester_wrote() {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", 3).await.expect("topic");
    let store = devstore_with(Settings { refresh_interval: Duration::from_millis(100), ..Settings::default() })
        .await
        .expect("store");
    let u = store.url();

    // frontend: traces 1–3 of three spans (operation-0/1/2), trace 1 slow with status 500, trace 3
    // with status 200; backend: trace 4 of two "db-query" spans. Ten minutes ago, a second apart.
    let base = fixtures::now_unix_nano() - 600 * 1_000_000_000;
    let records = vec![
        record("frontend", 1, 3, base, |r| {
            let root = spans_of(r).next().expect("root");
            root.end_time_unix_nano = root.start_time_unix_nano + 250_000_000;
            set_attr(root, fixtures::attr("http.status_code", "500"));
        }),
        record("frontend", 2, 3, base, |_| {}),
        record("frontend", 3, 3, base, |r| {
            spans_of(r).for_each(|s| set_attr(s, fixtures::attr("http.status_code", "200")));
        }),
        record("backend", 4, 2, base, |r| spans_of(r).for_each(|s| s.name = "db-query".into())),
    ];
    produce(&broker.bootstrap(), "otlp_spans", &records).await.expect("produced");
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(config(&broker, &u), shutdown.clone()).await.expect("starts");
    assert_eq!(settled_count(&u, "jaeger-span-*", 11, Duration::from_secs(60)).await, 11);
    assert_eq!(spanline_testkit::span_conflicts(&u).await.expect("stats"), 0, "each span written once");
    assert_eq!(settled_count(&u, "jaeger-service-*", 4, Duration::from_secs(30)).await, 4);

    let c = Client::new();
    let now = Utc::now();
    let services = read_targets("jaeger-service-", now - MAX_SPAN_AGE, now);
    assert_eq!(services.len(), 4, "72 h span four days: {services:?}");

    // Services, by how many operations each has; then a service's operations.
    let answer = post(&c, search_url(&u, &services), &services_body()).await;
    assert_eq!(keys(&answer, "distinct_services"), vec!["frontend", "backend"]);
    let answer = post(&c, search_url(&u, &services), &operations_body("frontend")).await;
    assert_eq!(keys(&answer, "distinct_operations"), vec!["operation-0", "operation-1", "operation-2"]);
    let answer = post(&c, search_url(&u, &services), &operations_body("backend")).await;
    assert_eq!(keys(&answer, "distinct_operations"), vec!["db-query"]);

    // Trace ids, latest first, for the search form's filters.
    let (start_min, start_max) = (now - chrono::Duration::hours(1), now);
    let spans = read_targets("jaeger-span-", start_min, start_max);
    let find = |q: TraceQuery<'static>| {
        let (c, url) = (c.clone(), search_url(&u, &spans));
        async move { keys(&post(&c, url, &find_trace_ids_body(&q)).await, "traceIDs") }
    };
    let window = |q: TraceQuery<'static>| TraceQuery { start_min: Some(start_min), start_max: Some(start_max), ..q };
    assert_eq!(
        find(window(TraceQuery { service: "frontend", ..TraceQuery::default() })).await,
        vec![trace_hex(3), trace_hex(2), trace_hex(1)]
    );
    assert_eq!(
        find(window(TraceQuery {
            service: "frontend",
            tags: vec![("http.status_code", "500")],
            ..TraceQuery::default()
        }))
        .await,
        vec![trace_hex(1)]
    );
    assert_eq!(
        find(window(TraceQuery {
            service: "frontend",
            tags: vec![("http.status_code", "[25]00")],
            ..TraceQuery::default()
        }))
        .await,
        vec![trace_hex(3), trace_hex(1)],
        "tag values are regular expressions"
    );
    assert_eq!(
        find(window(TraceQuery {
            service: "frontend",
            tags: vec![("host.name", "test-host"), ("span.kind", "server")],
            ..TraceQuery::default()
        }))
        .await,
        vec![trace_hex(3), trace_hex(2), trace_hex(1)],
        "process tags and synthesized tags"
    );
    assert_eq!(
        find(window(TraceQuery {
            service: "frontend",
            duration_min: Some(Duration::from_millis(100)),
            ..TraceQuery::default()
        }))
        .await,
        vec![trace_hex(1)]
    );
    assert_eq!(
        find(window(TraceQuery {
            service: "frontend",
            operation: Some("operation-1"),
            duration_max: Some(Duration::from_millis(2)),
            ..TraceQuery::default()
        }))
        .await,
        vec![trace_hex(3), trace_hex(2), trace_hex(1)]
    );
    assert_eq!(
        find(window(TraceQuery { service: "backend", operation: Some("db-query"), ..TraceQuery::default() })).await,
        vec![trace_hex(4)]
    );
    let later = now - chrono::Duration::seconds(1);
    let before =
        TraceQuery { service: "frontend", start_min: Some(later), start_max: Some(now), ..TraceQuery::default() };
    assert!(find(before).await.is_empty(), "nothing started in the last second");

    // Every span of each found trace, through _msearch, two at a time to exercise search_after.
    let trace_ids = [trace_hex(1), trace_hex(4)];
    let mut fetched: Vec<Vec<String>> = vec![Vec::new(); trace_ids.len()];
    let mut after: Vec<Option<Value>> = vec![None; trace_ids.len()];
    for _round in 0..4 {
        let body: String = trace_ids
            .iter()
            .zip(&after)
            .map(|(t, a)| trace_read(&spans, t, (start_min, start_max), 2, a.as_ref()))
            .collect();
        let resp = c
            .post(format!("{u}/_msearch"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("msearch");
        assert_eq!(resp.status(), StatusCode::OK);
        let answer: Value = resp.json().await.expect("json");
        let responses = answer["responses"].as_array().expect("responses");
        assert_eq!(responses.len(), trace_ids.len());
        for (i, r) in responses.iter().enumerate() {
            assert_eq!(r["status"], 200, "{r}");
            let hits = r["hits"]["hits"].as_array().expect("hits");
            for hit in hits {
                assert_eq!(hit["_source"]["traceID"], trace_ids[i].as_str());
                fetched[i].push(hit["_source"]["spanID"].as_str().expect("span id").to_owned());
            }
            if let Some(last) = hits.last() {
                after[i] = Some(last["sort"].clone());
            }
        }
    }
    let span_hex = |t: u64, n: u64| hex(&fixtures::span_id(t * 1_000_000 + n));
    assert_eq!(fetched[0], vec![span_hex(1, 0), span_hex(1, 1), span_hex(1, 2)], "in start-time order, each once");
    assert_eq!(fetched[1], vec![span_hex(4, 0), span_hex(4, 1)]);

    // Dependencies: none computed yet; the daily indices do not exist, so the answer is empty.
    let deps = read_targets("jaeger-dependencies-", now - chrono::Duration::hours(24), now);
    let answer = post(
        &c,
        search_url(&u, &deps),
        &json!({"size": MAX_DOC_COUNT, "query": {"range": {"timestamp": {
        "gte": (now - chrono::Duration::hours(24)).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "lte": now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)}}}}),
    )
    .await;
    assert_eq!(answer["hits"]["total"], 0);

    shutdown.cancel();
    ingester.task.await.expect("join").expect("clean stop");
}

// ---- index template priority ----

async fn put_template(url: &str, name: &str, body: &Value) {
    let resp =
        Client::new().put(format!("{url}/_index_template/{name}")).json(body).send().await.expect("template put");
    assert_eq!(resp.status(), StatusCode::OK);
}

async fn template_priority(url: &str, name: &str) -> Option<u64> {
    let resp = Client::new().get(format!("{url}/_index_template/{name}")).send().await.expect("template get");
    if resp.status() != StatusCode::OK {
        return None;
    }
    let body: Value = resp.json().await.expect("json");
    body["index_templates"][0]["index_template"]["priority"].as_u64()
}

/// Someone else's composable template for the span indices, at the default priority.
fn theirs() -> Value {
    json!({"index_patterns": ["jaeger-span-*"], "priority": 100, "template": {"settings": {"index.number_of_shards": 1}}})
}

#[tokio::test]
async fn template_install_names_a_same_priority_template() {
    let store = devstore_with(Settings::default()).await.expect("store");
    let u = store.url();
    put_template(&u, "legacy-spans", &theirs()).await;
    let store_config = spanline_ingester::config::OpenSearch { url: u.clone(), ..Default::default() };
    let client = spanline_ingester::bulk::clients(&store_config).expect("client").remove(0);
    let names = IndexNames::new("");

    let error = templates::install(&client, &names, "", templates::DEFAULT_PRIORITY).await.expect_err("refused");
    assert!(error.is_fatal_at_start(), "{error}");
    let Error::TemplateConflict { ref template, ref conflicting, priority, .. } = error else { panic!("{error}") };
    assert_eq!((template.as_str(), conflicting.as_str(), priority), ("jaeger-span", "legacy-spans", 100));
    let text = error.to_string();
    assert!(text.contains("[legacy-spans]") && text.contains("opensearch.template_priority"), "{text}");
    assert_eq!(template_priority(&u, "jaeger-span").await, None, "nothing installed");

    templates::install(&client, &names, "", 101).await.expect("a different priority installs");
    assert_eq!(template_priority(&u, "jaeger-span").await, Some(101));
    assert_eq!(template_priority(&u, "jaeger-service").await, Some(101));
}

/// An ingester configuration for the store at `url` and a broker that is never contacted: the
/// store is prepared before the consumer subscribes.
fn store_only_config(url: &str) -> spanline_ingester::Config {
    let mut c = spanline_ingester::Config::default();
    c.admin.listen = "127.0.0.1:0".parse().expect("addr");
    c.kafka.brokers = "127.0.0.1:9".into();
    c.opensearch.url = url.to_owned();
    c.shutdown_grace = Duration::from_secs(2);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingester_start_fails_on_a_same_priority_template_and_starts_with_another_priority() {
    let store = devstore_with(Settings::default()).await.expect("store");
    let u = store.url();
    put_template(&u, "legacy-spans", &theirs()).await;

    let ingester = spanline_ingester::start(store_only_config(&u), CancellationToken::new()).await.expect("starts");
    let result = tokio::time::timeout(Duration::from_secs(20), ingester.task).await.expect("stops by itself");
    let error = result.expect("join").expect_err("fails");
    assert!(matches!(error, Error::TemplateConflict { .. }), "{error}");
    let text = error.to_string();
    assert!(text.contains("[legacy-spans]") && text.contains("opensearch.template_priority"), "{text}");

    let mut c = store_only_config(&u);
    c.opensearch.template_priority = 200;
    let shutdown = CancellationToken::new();
    let ingester = spanline_ingester::start(c, shutdown.clone()).await.expect("starts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while template_priority(&u, "jaeger-span").await != Some(200) {
        assert!(tokio::time::Instant::now() < deadline, "the span template was not installed at priority 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!ingester.task.is_finished(), "still running");
    shutdown.cancel();
    // No broker answers here: the stop must still come within the grace (2 s) and be clean.
    tokio::time::timeout(Duration::from_secs(5), ingester.task)
        .await
        .expect("stops within its grace with no broker")
        .expect("join")
        .expect("clean stop");
}
