//! Jaeger v1 Kafka records for tests: a `model.Span` in the JSON form Jaeger's `jsonpb.Marshaler{}`
//! writes (`jaeger_json`), and generated spans for the fuzz targets.

use base64::Engine as _;
use proptest::{collection::vec, prelude::*};
use serde_json::{Value, json};
use spanline_common::jaeger::model::{self, KeyValue, Log, Process, SpanRef, Timestamp};

/// jsonpb's RFC 3339 form: UTC, the nanoseconds trimmed to 0, 3, 6 or 9 digits.
pub fn rfc3339(t: &Timestamp) -> String {
    let time = chrono::DateTime::from_timestamp(t.seconds, 0).unwrap();
    let mut fraction = format!("{:09}", t.nanos);
    while !fraction.is_empty() && fraction.ends_with("000") {
        fraction.truncate(fraction.len() - 3);
    }
    let dot = if fraction.is_empty() { String::new() } else { format!(".{fraction}") };
    format!("{}{dot}Z", time.format("%Y-%m-%dT%H:%M:%S"))
}

/// jsonpb's duration: seconds with the nanoseconds trimmed as for times, then `s` (`"0.001500s"`).
pub fn duration(d: &model::Duration) -> String {
    let text = format!("{}.{:09}", d.seconds, d.nanos);
    let text = text.strip_suffix("000").unwrap_or(&text);
    let text = text.strip_suffix("000").unwrap_or(text);
    let text = text.strip_suffix(".000").unwrap_or(text);
    format!("{text}s")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A tag as jsonpb writes it: zero values (STRING, "", false, 0) left out, int64 as a string,
/// enum names.
pub fn key_value(t: &KeyValue) -> Value {
    let mut o = json!({ "key": t.key });
    let names = ["STRING", "BOOL", "INT64", "FLOAT64", "BINARY"];
    match usize::try_from(t.v_type).ok().and_then(|i| names.get(i)) {
        Some(&"STRING") => {}
        Some(name) => o["vType"] = json!(name),
        None => o["vType"] = json!(t.v_type),
    }
    if !t.v_str.is_empty() {
        o["vStr"] = json!(t.v_str);
    }
    if t.v_bool {
        o["vBool"] = json!(true);
    }
    if t.v_int64 != 0 {
        o["vInt64"] = json!(t.v_int64.to_string());
    }
    if t.v_float64 != 0.0 {
        o["vFloat64"] = if t.v_float64.is_finite() { json!(t.v_float64) } else { json!(format!("{}", t.v_float64)) };
    }
    if !t.v_binary.is_empty() {
        o["vBinary"] = json!(b64(&t.v_binary));
    }
    o
}

/// A span as Jaeger's `jsonpb.Marshaler{}` writes it: camelCase keys, zero values left out
/// (`refType` CHILD_OF, `vType` STRING), base64 ids, RFC 3339 times, the duration in seconds.
pub fn jsonpb(s: &model::Span) -> Vec<u8> {
    let tags = |tags: &[KeyValue]| tags.iter().map(key_value).collect::<Vec<_>>();
    let mut o = json!({ "traceId": b64(&s.trace_id), "spanId": b64(&s.span_id) });
    if !s.operation_name.is_empty() {
        o["operationName"] = json!(s.operation_name);
    }
    if !s.references.is_empty() {
        o["references"] = s
            .references
            .iter()
            .map(|r| {
                let mut o = json!({"traceId": b64(&r.trace_id), "spanId": b64(&r.span_id)});
                if r.ref_type == 1 {
                    o["refType"] = json!("FOLLOWS_FROM");
                }
                o
            })
            .collect();
    }
    if s.flags != 0 {
        o["flags"] = json!(s.flags);
    }
    o["startTime"] = json!(rfc3339(&s.start_time.unwrap_or_default()));
    o["duration"] = json!(duration(&s.duration.unwrap_or_default()));
    if !s.tags.is_empty() {
        o["tags"] = json!(tags(&s.tags));
    }
    if !s.logs.is_empty() {
        o["logs"] = s
            .logs
            .iter()
            .map(|l| json!({"timestamp": rfc3339(&l.timestamp.unwrap_or_default()), "fields": tags(&l.fields)}))
            .collect();
    }
    if let Some(p) = &s.process {
        o["process"] = json!({"serviceName": p.service_name, "tags": tags(&p.tags)});
    }
    if !s.process_id.is_empty() {
        o["processId"] = json!(s.process_id);
    }
    if !s.warnings.is_empty() {
        o["warnings"] = json!(s.warnings);
    }
    serde_json::to_vec(&o).unwrap()
}

fn tag() -> impl Strategy<Value = KeyValue> {
    (0i32..6, "[a-z.]{0,8}", "[ -~]{0,12}", any::<bool>(), any::<i64>(), -1e6f64..1e6, vec(any::<u8>(), 0..6)).prop_map(
        |(v_type, key, v_str, v_bool, v_int64, v_float64, v_binary)| KeyValue {
            key,
            v_type,
            v_str,
            v_bool,
            v_int64,
            v_float64,
            v_binary,
        },
    )
}

fn time() -> impl Strategy<Value = Timestamp> {
    (1_600_000_000i64..1_900_000_000, 0i32..1_000_000_000).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos })
}

/// Spans of every shape a Jaeger v1 collector stores (random ids, counts, tag types and times).
pub fn span() -> impl Strategy<Value = model::Span> {
    let reference = (vec(any::<u8>(), 16), vec(any::<u8>(), 8), 0i32..2)
        .prop_map(|(trace_id, span_id, ref_type)| SpanRef { trace_id, span_id, ref_type });
    let log = (time(), vec(tag(), 0..4)).prop_map(|(t, fields)| Log { timestamp: Some(t), fields });
    let process = ("[a-z-]{0,10}", vec(tag(), 0..4)).prop_map(|(service_name, tags)| Process { service_name, tags });
    (
        (vec(any::<u8>(), 16), vec(any::<u8>(), 8), "[ -~]{0,16}", vec(reference, 0..4), any::<u32>()),
        (time(), 0i64..100, 0i32..1_000_000_000, vec(tag(), 0..12), vec(log, 0..4)),
        (proptest::option::of(process), vec("[a-z]{0,4}", 0..3)),
    )
        .prop_map(
            |(
                (trace_id, span_id, operation_name, references, flags),
                (start, d, n, tags, logs),
                (process, warnings),
            )| {
                model::Span {
                    trace_id,
                    span_id,
                    operation_name,
                    references,
                    flags,
                    start_time: Some(start),
                    duration: Some(model::Duration { seconds: d, nanos: n }),
                    tags,
                    logs,
                    process,
                    process_id: String::new(),
                    warnings,
                }
            },
        )
}
