//! End to end: the official OpenTelemetry SDK exports spans over OTLP gRPC and HTTP to a real
//! collector, which produces them to a real broker (Tansu, SQLite storage), from which a real
//! ingester indexes them into the dev store. Every span is counted and checked field by field.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use rdkafka::{
    ClientConfig, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use serde_json::Value;
use spanline_testkit::{Broker, devstore, documents, settled_count, span_conflicts, wait_for};
use tokio_util::sync::CancellationToken;

struct Stack {
    broker: Broker,
    store: spanline_devstore::Running,
    collector: spanline_collector::Running,
    ingester: spanline_ingester::Running,
    shutdown: CancellationToken,
}

async fn stack() -> Stack {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", 6).await.expect("topic created");
    let store = devstore().await.expect("dev store starts");
    let shutdown = CancellationToken::new();

    let mut collector = spanline_collector::Config::default();
    collector.receivers.grpc_listen = "127.0.0.1:0".parse().expect("addr");
    collector.receivers.http_listen = "127.0.0.1:0".parse().expect("addr");
    collector.admin.listen = "127.0.0.1:0".parse().expect("addr");
    collector.kafka.brokers = broker.bootstrap();
    let collector = spanline_collector::start(collector, shutdown.child_token()).await.expect("collector starts");

    let mut ingester = spanline_ingester::Config::default();
    ingester.admin.listen = "127.0.0.1:0".parse().expect("addr");
    ingester.kafka.brokers = broker.bootstrap();
    ingester.opensearch.url = store.url();
    ingester.batch.flush_interval = Duration::from_millis(200);
    let ingester = spanline_ingester::start(ingester, shutdown.child_token()).await.expect("ingester starts");
    Stack { broker, store, collector, ingester, shutdown }
}

/// A span the test made and expects to find, with its exact timing.
struct Sent {
    trace_id: String,
    span_id: String,
    name: String,
    start: SystemTime,
    end: SystemTime,
}

fn micros(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).expect("after epoch").as_micros()).expect("fits")
}

/// Records `n` spans with the given provider: one root per trace and children under it.
fn record_spans(provider: &SdkTracerProvider, n: usize, tag: &str) -> Vec<Sent> {
    let tracer = provider.tracer("spanline-e2e");
    let base = SystemTime::now() - Duration::from_secs(5);
    let mut sent = Vec::new();
    let mut parent_cx = opentelemetry::Context::new();
    for i in 0..n {
        let start = base + Duration::from_micros(1_000 * i as u64 + 17);
        let end = start + Duration::from_micros(2_345 + i as u64);
        let name = format!("{tag}-op-{}", i % 4);
        let builder = tracer.span_builder(name.clone()).with_kind(SpanKind::Server).with_start_time(start);
        let mut span = if i % 5 == 0 { tracer.build(builder) } else { tracer.build_with_context(builder, &parent_cx) };
        span.set_attribute(opentelemetry::KeyValue::new("e2e.index", i as i64));
        let ctx = span.span_context().clone();
        sent.push(Sent { trace_id: ctx.trace_id().to_string(), span_id: ctx.span_id().to_string(), name, start, end });
        span.end_with_timestamp(end);
        if i % 5 == 0 {
            parent_cx = opentelemetry::Context::new().with_remote_span_context(ctx);
        }
    }
    sent
}

fn check_documents(sent: &[Sent], docs: &[(String, Value)], service: &str) {
    assert_eq!(docs.len(), sent.len(), "every span indexed exactly once");
    for s in sent {
        let matching: Vec<&Value> = docs.iter().map(|(_, d)| d).filter(|d| d["spanID"] == s.span_id.as_str()).collect();
        assert_eq!(matching.len(), 1, "span {} indexed once", s.span_id);
        let d = matching[0];
        assert_eq!(d["traceID"], s.trace_id.as_str());
        assert_eq!(d["operationName"], s.name.as_str());
        assert_eq!(d["startTime"], micros(s.start), "startTime in microseconds");
        assert_eq!(d["startTimeMillis"], micros(s.start) / 1_000);
        assert_eq!(d["duration"], micros(s.end) - micros(s.start), "duration in microseconds");
        assert_eq!(d["process"]["serviceName"], service);
        let kind = d["tags"].as_array().expect("tags").iter().find(|t| t["key"] == "span.kind").cloned();
        assert_eq!(kind.map(|t| t["value"].clone()), Some(Value::from("server")));
    }
}

async fn wait_for_count(url: &str, index: &str, want: u64) -> u64 {
    settled_count(url, index, want, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn otlp_sdk_spans_reach_the_store_once_each_over_grpc_and_http() {
    let s = stack().await;

    // gRPC, as OpenTelemetry SDKs send by default (gzip-compressed).
    let grpc = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", s.collector.grpc_addr))
        .with_compression(opentelemetry_otlp::Compression::Gzip)
        .build()
        .expect("grpc exporter");
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(grpc)
        .with_resource(Resource::builder().with_service_name("e2e-grpc").build())
        .build();
    let sent_grpc = record_spans(&provider, 60, "grpc");
    tokio::task::spawn_blocking(move || provider.shutdown()).await.expect("join").expect("grpc export flushed");

    // HTTP with protobuf bodies.
    let http = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("http://{}/v1/traces", s.collector.http_addr))
        .with_headers(Default::default())
        .build()
        .expect("http exporter");
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(http)
        .with_resource(Resource::builder().with_service_name("e2e-http").build())
        .build();
    let sent_http = tokio::task::spawn_blocking(move || {
        let sent = record_spans(&provider, 25, "http");
        provider.shutdown().expect("http export flushed");
        sent
    })
    .await
    .expect("join");

    let url = s.store.url();
    let total = (sent_grpc.len() + sent_http.len()) as u64;
    assert_eq!(wait_for_count(&url, "jaeger-span-*", total).await, total, "span documents");
    // Deterministic ids make a span indexed twice land on its own document: only the store's
    // conflicts show it.
    assert_eq!(span_conflicts(&url).await.expect("store stats"), 0, "a span was written twice");
    let docs = documents(&url, "jaeger-span-*").await.expect("search");
    let (grpc_docs, http_docs): (Vec<_>, Vec<_>) =
        docs.into_iter().partition(|(_, d)| d["process"]["serviceName"] == "e2e-grpc");
    check_documents(&sent_grpc, &grpc_docs, "e2e-grpc");
    check_documents(&sent_http, &http_docs, "e2e-http");

    // Jaeger UI lists services from the service documents: one per (service, operation).
    let services = documents(&url, "jaeger-service-*").await.expect("search");
    let mut pairs: Vec<(String, String)> = services
        .iter()
        .map(|(_, d)| {
            (
                d["serviceName"].as_str().unwrap_or_default().to_owned(),
                d["operationName"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    pairs.sort();
    let mut want: Vec<(String, String)> = sent_grpc
        .iter()
        .map(|x| ("e2e-grpc".to_owned(), x.name.clone()))
        .chain(sent_http.iter().map(|x| ("e2e-http".to_owned(), x.name.clone())))
        .collect();
    want.sort();
    want.dedup();
    assert_eq!(pairs, want);

    // Offsets: the committed offset of every partition reaches its high watermark (the offset
    // after the last record), never the last record's own offset.
    let bootstrap = s.broker.bootstrap();
    let committed =
        wait_for(Duration::from_secs(20), || {
            let bootstrap = bootstrap.clone();
            async move {
                tokio::task::spawn_blocking(move || committed_equals_high_watermarks(&bootstrap)).await.ok().flatten()
            }
        })
        .await;
    assert!(committed.is_ok(), "committed offsets never reached the high watermarks");

    s.shutdown.cancel();
    s.collector.task.await.expect("join").expect("collector stops cleanly");
    s.ingester.task.await.expect("join").expect("ingester stops cleanly");
}

/// `Some(())` when every partition's committed offset for `spanline-ingester` equals its high watermark.
fn committed_equals_high_watermarks(bootstrap: &str) -> Option<()> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", "spanline-ingester").create().ok()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition("otlp_spans", p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
    let mut any = false;
    for element in committed.elements() {
        let (_, high) = consumer.fetch_watermarks("otlp_spans", element.partition(), Duration::from_secs(5)).ok()?;
        let offset = element.offset().to_raw().unwrap_or(-1001);
        if high == 0 {
            continue;
        }
        any = true;
        if offset != high {
            return None;
        }
    }
    any.then_some(())
}

/// Derived data end to end: the loadtest's model knows its own call graph. A run through the real
/// collector, broker and ingester leaves dependency documents whose summed call counts are exactly
/// the model's calls over every trace sent, and collector RED metrics whose calls per service are
/// exactly the spans sent per service.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dependency_links_and_red_metrics_equal_the_models_call_graph() {
    use spanline_loadtest::{model::Model, send};
    use std::collections::BTreeMap;

    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic("otlp_spans", 6).await.expect("topic created");
    let store = devstore().await.expect("dev store starts");
    let shutdown = CancellationToken::new();
    let mut c = spanline_collector::Config::default();
    c.receivers.grpc_listen = "127.0.0.1:0".parse().expect("addr");
    c.receivers.http_listen = "127.0.0.1:0".parse().expect("addr");
    c.admin.listen = "127.0.0.1:0".parse().expect("addr");
    c.kafka.brokers = broker.bootstrap();
    c.span_metrics.enabled = true;
    let collector = spanline_collector::start(c, shutdown.child_token()).await.expect("collector starts");
    let mut i = spanline_ingester::Config::default();
    i.admin.listen = "127.0.0.1:0".parse().expect("addr");
    i.kafka.brokers = broker.bootstrap();
    i.opensearch.url = store.url();
    i.batch.flush_interval = Duration::from_millis(200);
    // Short windows, so the test does not wait out fifteen minutes for the last one to end.
    i.dependencies.enabled = true;
    i.dependencies.window = Duration::from_secs(20);
    i.dependencies.max_trace_duration = Duration::from_secs(5);
    i.dependencies.idle = Duration::from_secs(2);
    i.dependencies.lateness = Duration::from_secs(1);
    let ingester = spanline_ingester::start(i, shutdown.child_token()).await.expect("ingester starts");

    let model = Model { seed: 17, ..Model::default() };
    let traces = 400;
    let plan = send::Plan {
        endpoint: format!("http://{}", collector.grpc_addr),
        protocol: send::Protocol::Grpc,
        connections: 2,
        traces_per_request: 10,
        traces,
        duration: None,
        rate: None,
        gzip: false,
        model: model.clone(),
        security: send::Security::default(),
    };
    let report = send::run(plan, None, false).await.expect("load sent");
    assert_eq!(report.failed_requests, 0);
    assert_eq!(report.rejected_spans, 0);

    let mut calls: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut spans_per_service: BTreeMap<&str, u64> = BTreeMap::new();
    for n in 0..traces {
        let trace = model.trace(n, 0);
        for (parent, child) in model.calls(&trace) {
            *calls.entry((parent.to_owned(), child.to_owned())).or_default() += 1;
        }
        for (service, _) in &trace.spans {
            *spans_per_service.entry(model.service_name(*service)).or_default() += 1;
        }
    }
    let sent: u64 = spans_per_service.values().sum();
    assert_eq!(sent, report.acknowledged_spans);

    // Collector: calls per service are the spans sent per service.
    for (service, want) in &spans_per_service {
        let labels = format!("service_name=\"{service}\"");
        let got = spanline_testkit::metric(collector.admin_addr, "traces_span_metrics_calls_total", &labels)
            .await
            .expect("metrics");
        assert_eq!(got as u64, *want, "calls of {service}");
    }

    // Ingester: the dependency documents add up to the model's calls once every window is over.
    let url = store.url();
    let stored = || async { spanline_testkit::dependency_links(&url).await.ok().map(|(links, _)| links) };
    let matched = wait_for(Duration::from_secs(90), || async { (stored().await? == calls).then_some(()) }).await;
    assert!(matched.is_ok(), "dependency links {:?} never equalled the model's calls {calls:?}", stored().await);

    shutdown.cancel();
    collector.task.await.expect("join").expect("collector stops cleanly");
    ingester.task.await.expect("join").expect("ingester stops cleanly");
}
