//! The ingester's hot path per Kafka record: decode → Jaeger documents → NDJSON bulk items, and
//! parsing `_bulk` answers. The same 512 spans of about 470 bytes as the collector's benchmark
//! (64 traces of 8 spans), as one record per trace, as the collector writes them.
//!
//! - `ingester/in_place_ndjson`: the live path (`map_record`): each record read in place, mapped
//!   and its bulk items taken, record after record, the items dropped at once (so the document
//!   buffer is reused in place);
//! - `ingester/decode_map_ndjson`: the same through prost's decode and `map_request`, the path of a
//!   record with a span to dead-letter or an encoding the live path leaves to prost;
//! - `ingester/map_ndjson_held`: the mapping alone on decoded requests, the items held until the
//!   end as a batch holds them;
//! - `ids/fnv64a_records`: FNV-64a over the records' bytes: about what the span `_id` digests cost
//!   (each span's bytes are hashed once), a floor the id scheme sets (one multiply per byte, each
//!   waiting for the one before);
//! - `ids/span_digests_*`: the span digests themselves, one span at a time and four interleaved
//!   ([`spanline_common::spans::Digests`], what the mapping uses).
//!
//! cargo bench -p spanline-ingester --bench document -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use spanline_ingester::{
    bulk::{encode_item, parse_response},
    config::Encoding,
    deadletter::RecordLimits,
    document::{IndexNames, Mapped, RecordTime, Routing, TraceIds, map_record, map_request},
    worker::decode,
};
use spanline_testkit::fixtures;

fn records() -> Vec<Bytes> {
    let now = fixtures::now_unix_nano();
    (1..=64)
        .map(|t| {
            let mut request = fixtures::request("bench-service", t, 1, 8, now);
            for span in &mut request.resource_spans[0].scope_spans[0].spans {
                span.attributes.push(fixtures::attr("bench.pad", &"x".repeat(330)));
            }
            Bytes::from(request.encode_to_vec())
        })
        .collect()
}

fn bulk_answer(items: usize, errors: bool) -> Vec<u8> {
    let item = |i: usize| {
        if errors && i.is_multiple_of(10) {
            format!(
                r#"{{"create":{{"_index":"jaeger-span-2026-11-26","_id":"t_{i}","status":409,"error":{{"type":"version_conflict_engine_exception","reason":"[t_{i}]: version conflict, document already exists","index":"jaeger-span-2026-11-26"}}}}}}"#
            )
        } else {
            format!(
                r#"{{"create":{{"_index":"jaeger-span-2026-11-26","_id":"t_{i}","_version":1,"result":"created","_shards":{{"total":2,"successful":1,"failed":0}},"_seq_no":{i},"_primary_term":1,"status":201}}}}"#
            )
        }
    };
    let items: Vec<String> = (0..items).map(item).collect();
    format!(r#"{{"took":30,"errors":{errors},"items":[{}]}}"#, items.join(",")).into_bytes()
}

fn bench(c: &mut Criterion) {
    let records = records();
    let bytes: usize = records.iter().map(Bytes::len).sum();
    let spans = 512usize;
    let routing = Routing {
        names: IndexNames::new(""),
        max_age_micros: 72 * 3600 * 1_000_000,
        max_skew_micros: 3600 * 1_000_000,
        clamp: false,
        trace_ids: TraceIds::Jaeger,
    };
    let now_micros = i64::try_from(fixtures::now_unix_nano() / 1_000).expect("fits");
    // The default bounds, counted as live ingestion counts them.
    let limits = RecordLimits::from_config(&spanline_ingester::Config::default()).documents;
    let mut group = c.benchmark_group("ingester");
    group.throughput(Throughput::Elements(spans as u64));
    group.bench_function("in_place_ndjson", |b| {
        let mut mapped = Mapped::default();
        b.iter(|| {
            let mut out = 0;
            for record in &records {
                assert!(map_record(record, &routing, limits, RecordTime::Timestamp(now_micros), &mut mapped));
                for doc in mapped.docs.drain(..) {
                    out += encode_item(&doc).len();
                }
            }
            black_box(out)
        })
    });
    group.bench_function("decode_map_ndjson", |b| {
        let mut mapped = Mapped::default();
        b.iter(|| {
            let mut out = 0;
            for record in &records {
                mapped.clear();
                let (request, proto) = decode(Encoding::OtlpProto, record).expect("decodes");
                map_request(&request, &proto, &routing, limits, RecordTime::Timestamp(now_micros), &mut mapped);
                for doc in mapped.docs.drain(..) {
                    out += encode_item(&doc).len();
                }
            }
            black_box(out)
        })
    });
    // The mapping alone, on requests decoded beforehand; the items are held until the end of the
    // iteration, as a batch holds them (so the document buffer cannot be reused in place).
    let decoded: Vec<_> = records.iter().map(|r| decode(Encoding::OtlpProto, r).expect("decodes")).collect();
    group.bench_function("map_ndjson_held", |b| {
        let mut mapped = Mapped::default();
        let mut held = Vec::with_capacity(2 * spans);
        b.iter(|| {
            for (request, proto) in &decoded {
                map_request(request, proto, &routing, limits, RecordTime::Timestamp(now_micros), &mut mapped);
                held.extend(mapped.docs.drain(..).map(|doc| encode_item(&doc)));
            }
            let out = held.iter().map(Bytes::len).sum::<usize>();
            held.clear();
            black_box(out)
        })
    });
    let created = bulk_answer(spans, false);
    let mixed = bulk_answer(spans, true);
    group.bench_function("parse_bulk_all_created", |b| {
        b.iter(|| parse_response(black_box(&created), spans).expect("parses"))
    });
    group.bench_function("parse_bulk_10pct_conflicts", |b| {
        b.iter(|| parse_response(black_box(&mixed), spans).expect("parses"))
    });
    group.finish();
    // The span `_id` digest alone: FNV-64a over every record's bytes (about a span's share of the
    // mapping above is its bytes hashed once).
    let mut ids = c.benchmark_group("ids");
    ids.throughput(Throughput::Bytes(bytes as u64));
    ids.bench_function("fnv64a_records", |b| {
        b.iter(|| records.iter().map(|r| spanline_common::ids::fnv64a(&[black_box(&r[..])])).fold(0, u64::wrapping_add))
    });
    // The same digests the mapping takes, one span at a time and four at a time.
    ids.bench_function("span_digests_one_by_one", |b| {
        b.iter(|| {
            records
                .iter()
                .flat_map(|r| spanline_common::spans::SpanSources::new(black_box(r)))
                .map(|s| s.expect("walks").digest())
                .fold(0, u64::wrapping_add)
        })
    });
    ids.bench_function("span_digests_four_at_a_time", |b| {
        b.iter(|| {
            records.iter().flat_map(|r| spanline_common::spans::Digests::new(black_box(r))).fold(0, u64::wrapping_add)
        })
    });
    ids.finish();
    eprintln!("records: 64, {bytes} bytes, {spans} spans; bulk answers {} and {} bytes", created.len(), mixed.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);
