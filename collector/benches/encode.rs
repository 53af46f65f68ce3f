//! The collector's hot path per request: decode → process → validate + group → encode (the decode
//! path), and bytes → records (the byte path, `split`, with the default limits and processors).
//! 512 spans of about 500 bytes per request (64 traces of 8 spans), as the loadtest sends.
//!
//! cargo bench -p spanline-collector --bench encode

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use spanline_collector::{
    config::Limits,
    encode::encode,
    limit::AttributeLimits,
    process::{Processors, ProcessorsConfig},
    split,
};
use spanline_testkit::fixtures;

fn request_bytes() -> Vec<u8> {
    let mut request = fixtures::request("bench-service", 1, 64, 8, fixtures::now_unix_nano());
    for span in &mut request.resource_spans[0].scope_spans[0].spans {
        span.attributes.push(fixtures::attr("bench.pad", &"x".repeat(330)));
    }
    request.encode_to_vec()
}

fn bench(c: &mut Criterion) {
    let bytes = request_bytes();
    let spans = 512u64;
    let processors = Processors::new(&ProcessorsConfig::default()).expect("defaults");
    let mut group = c.benchmark_group("collector");
    group.throughput(Throughput::Elements(spans));
    group
        .bench_function("decode", |b| b.iter(|| ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes")));
    group.bench_function("decode_process_encode", |b| {
        b.iter(|| {
            let mut request = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
            processors.apply(&mut request);
            encode(&request, 900 * 1024)
        })
    });
    let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
    group.bench_function("group_encode", |b| b.iter(|| encode(&decoded, 900 * 1024)));
    let limits = AttributeLimits::new(&Limits::default());
    let (split, _) = split::split(&bytes, &limits, &processors, 900 * 1024).expect("the byte path takes it");
    assert_eq!(split.records, encode(&decoded, 900 * 1024).records, "both paths write the same records");
    group.bench_function("split", |b| {
        b.iter(|| split::split(&bytes, &limits, &processors, 900 * 1024).expect("the byte path takes it"))
    });
    group.bench_function("split_plan", |b| {
        b.iter(|| {
            let counts = split::Counts::of(&bytes).expect("well formed");
            split::plan(&bytes, &counts, &limits, &processors, 900 * 1024, false).expect("the byte path takes it")
        })
    });
    // The same with the RED metrics tallied (`[span_metrics]`): their cost per request.
    group.bench_function("split_plan_span_metrics", |b| {
        b.iter(|| {
            let counts = split::Counts::of(&bytes).expect("well formed");
            let mut plan =
                split::plan(&bytes, &counts, &limits, &processors, 900 * 1024, true).expect("the byte path takes it");
            plan.take_counted()
        })
    });
    group.finish();
    eprintln!("request: {} bytes, {} spans, {} bytes/span", bytes.len(), spans, bytes.len() as u64 / spans);
}

criterion_group!(benches, bench);
criterion_main!(benches);
