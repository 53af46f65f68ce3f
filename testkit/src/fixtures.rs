//! OTLP fixtures shared by every test: deterministic traces with ids derived from small numbers.

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, span, status},
};

/// A 16-byte trace id built from `n` (never all zero).
pub fn trace_id(n: u64) -> Vec<u8> {
    let mut id = vec![0xa0u8; 8];
    id.extend_from_slice(&n.to_be_bytes());
    id
}

/// An 8-byte span id built from `n` (never all zero).
pub fn span_id(n: u64) -> Vec<u8> {
    (n | 1 << 63).to_be_bytes().to_vec()
}

/// A string attribute.
pub fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// A span of trace `trace`, number `n` within it; span 0 is the root, the others its children.
/// Starts at `start_unix_nano` plus `n` milliseconds and lasts 1.5 ms.
pub fn span(trace: u64, n: u64, start_unix_nano: u64) -> Span {
    let start = start_unix_nano + n * 1_000_000;
    Span {
        trace_id: trace_id(trace),
        span_id: span_id(trace * 1_000_000 + n),
        parent_span_id: if n == 0 { Vec::new() } else { span_id(trace * 1_000_000) },
        name: format!("operation-{}", n % 3),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_500_000,
        attributes: vec![attr("http.method", "GET"), attr("fixture.span", &n.to_string())],
        status: Some(opentelemetry_proto::tonic::trace::v1::Status {
            code: status::StatusCode::Ok as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A request from service `service` with `traces` traces (numbered from `first_trace`) of
/// `spans_per_trace` spans each.
pub fn request(
    service: &str,
    first_trace: u64,
    traces: u64,
    spans_per_trace: u64,
    start_unix_nano: u64,
) -> ExportTraceServiceRequest {
    let spans = (first_trace..first_trace + traces)
        .flat_map(|t| (0..spans_per_trace).map(move |n| span(t, n, start_unix_nano)))
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attr("service.name", service), attr("host.name", "test-host")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "spanline-fixtures".into(),
                    version: "1.0.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_unix_nano() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Kafka records as the collector writes them: one per trace, key = trace id hex, value = OTLP
/// protobuf with that trace's spans.
pub fn trace_records(
    service: &str,
    first_trace: u64,
    traces: u64,
    spans_per_trace: u64,
    start_unix_nano: u64,
) -> Vec<(String, Vec<u8>)> {
    use prost::Message;
    (first_trace..first_trace + traces)
        .map(|t| {
            let request = request(service, t, 1, spans_per_trace, start_unix_nano);
            let key: String = trace_id(t).iter().map(|b| format!("{b:02x}")).collect();
            (key, request.encode_to_vec())
        })
        .collect()
}

/// Hostile shapes (issue 12), shared by the collector's hostile tests and `spanline-bench`.
pub mod hostile {
    use super::{ExportTraceServiceRequest, KeyValue, attr, now_unix_nano, request};

    /// One resource with a `resource_bytes` attribute in front of `traces` one-span traces (no span
    /// attributes): every trace's record would carry a copy of the resource.
    pub fn resource_amplifier(first_trace: u64, traces: u64, resource_bytes: usize) -> ExportTraceServiceRequest {
        let mut r = request("hostile", first_trace, traces, 1, now_unix_nano());
        for span in &mut r.resource_spans[0].scope_spans[0].spans {
            span.attributes.clear();
        }
        if let Some(resource) = r.resource_spans[0].resource.as_mut() {
            resource.attributes.push(attr("blob", &"r".repeat(resource_bytes)));
        }
        r
    }

    /// One span with `n` empty attributes: two bytes each on the wire, a whole `KeyValue` decoded.
    pub fn empty_attributes(trace: u64, n: usize) -> ExportTraceServiceRequest {
        let mut r = request("hostile", trace, 1, 1, now_unix_nano());
        r.resource_spans[0].scope_spans[0].spans[0].attributes = vec![KeyValue::default(); n];
        r
    }

    /// The first bytes of an OTLP/HTTP request whose body never comes: `body` true sends whole
    /// headers announcing a 16 MiB body (the default `limits.max_request_bytes`), false stops in the
    /// middle of the headers.
    pub fn slow_http_head(body: bool) -> &'static str {
        if body {
            "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: 16777216\r\n\r\n"
        } else {
            "POST /v1/traces HTTP/1.1\r\nhost: x\r\n"
        }
    }
}

/// `traceID:spanID` (lowercase hex) of span `n` of trace `trace`, as [`span`] builds it and as a
/// Jaeger span document names it.
pub fn span_key(trace: u64, n: u64) -> String {
    let hex = |bytes: Vec<u8>| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!("{}:{}", hex(trace_id(trace)), hex(span_id(trace * 1_000_000 + n)))
}

/// The [`span_key`]s of every span [`trace_records`] writes for the same arguments.
pub fn span_keys(first_trace: u64, traces: u64, spans_per_trace: u64) -> std::collections::BTreeSet<String> {
    (first_trace..first_trace + traces).flat_map(|t| (0..spans_per_trace).map(move |n| span_key(t, n))).collect()
}
