//! Zipkin v2 → OTLP (`collector/src/zipkin.rs`): one fixture per mapping rule of docs/inputs.md
//! ("Zipkin v2"), each written both as JSON and as protobuf (by the small encoder below, from the
//! wire format: no `.proto` file) and required to translate the same; refusals one span at a time;
//! broken bodies as errors; and a fuzz property (no panic, an error naming the decoder, at most a
//! small multiple of the body held at once: `PROPTEST_CASES` sets the cases).

#![allow(clippy::unwrap_used)]

use opentelemetry_proto::tonic::{
    common::v1::{KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use proptest::prelude::*;
use serde_json::{Value as Json, json};
use spanline_collector::zipkin::{self, Limits, Translated, ZipkinError};
use spanline_testkit::fuzz::{self, Bound, Outcome, Target};

// ---------------------------------------------------------------------------------------------
// A test-only Zipkin protobuf encoder, from the wire format (field numbers of zipkin.proto's
// documentation: Span 1 trace_id … 13 shared; Endpoint 1–4; Annotation 1–2; tags a map<string,string>).

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn len_field(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(number << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn varint_field(number: u64, v: u64, out: &mut Vec<u8>) {
    varint(number << 3, out);
    varint(v, out);
}

fn fixed64_field(number: u64, v: u64, out: &mut Vec<u8>) {
    varint(number << 3 | 1, out);
    out.extend_from_slice(&v.to_le_bytes());
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn proto_endpoint(e: &Json) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(s) = e["serviceName"].as_str() {
        len_field(1, s.as_bytes(), &mut out);
    }
    if let Some(ip) = e["ipv4"].as_str() {
        len_field(2, &ip.parse::<std::net::Ipv4Addr>().unwrap().octets(), &mut out);
    }
    if let Some(ip) = e["ipv6"].as_str() {
        len_field(3, &ip.parse::<std::net::Ipv6Addr>().unwrap().octets(), &mut out);
    }
    if let Some(p) = e["port"].as_i64() {
        varint_field(4, p as u64, &mut out);
    }
    out
}

/// The protobuf `Span` for a JSON span object (valid fields only).
fn proto_span(s: &Json) -> Vec<u8> {
    let mut out = Vec::new();
    let kinds = ["", "CLIENT", "SERVER", "PRODUCER", "CONSUMER"];
    if let Some(t) = s["traceId"].as_str() {
        len_field(1, &unhex(t), &mut out);
    }
    if let Some(p) = s["parentId"].as_str() {
        len_field(2, &unhex(p), &mut out);
    }
    if let Some(i) = s["id"].as_str() {
        len_field(3, &unhex(i), &mut out);
    }
    if let Some(k) = s["kind"].as_str() {
        varint_field(4, kinds.iter().position(|x| *x == k).unwrap() as u64, &mut out);
    }
    if let Some(n) = s["name"].as_str() {
        len_field(5, n.as_bytes(), &mut out);
    }
    if let Some(t) = s["timestamp"].as_u64() {
        fixed64_field(6, t, &mut out);
    }
    if let Some(d) = s["duration"].as_u64() {
        varint_field(7, d, &mut out);
    }
    if s["localEndpoint"].is_object() {
        len_field(8, &proto_endpoint(&s["localEndpoint"]), &mut out);
    }
    if s["remoteEndpoint"].is_object() {
        len_field(9, &proto_endpoint(&s["remoteEndpoint"]), &mut out);
    }
    for a in s["annotations"].as_array().into_iter().flatten() {
        let mut m = Vec::new();
        fixed64_field(1, a["timestamp"].as_u64().unwrap(), &mut m);
        len_field(2, a["value"].as_str().unwrap().as_bytes(), &mut m);
        len_field(10, &m, &mut out);
    }
    for (k, v) in s["tags"].as_object().into_iter().flatten() {
        let mut m = Vec::new();
        len_field(1, k.as_bytes(), &mut m);
        len_field(2, v.as_str().unwrap().as_bytes(), &mut m);
        len_field(11, &m, &mut out);
    }
    if s["debug"] == json!(true) {
        varint_field(12, 1, &mut out);
    }
    if s["shared"] == json!(true) {
        varint_field(13, 1, &mut out);
    }
    out
}

fn proto_body(spans: &[Json]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in spans {
        len_field(1, &proto_span(s), &mut out);
    }
    out
}

// ---------------------------------------------------------------------------------------------

/// Translates `spans` both ways, checks both agree, and returns the translation.
fn both(spans: &[Json]) -> Translated {
    let limits = Limits::default();
    let from_json = zipkin::from_json(&serde_json::to_vec(spans).unwrap(), &limits).unwrap();
    let from_proto = zipkin::from_proto(&proto_body(spans), &limits).unwrap();
    assert_eq!(from_json, from_proto, "JSON and protobuf translate alike");
    from_json
}

fn spans(t: &Translated) -> Vec<&Span> {
    t.request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect()
}

fn only(t: &Translated) -> &Span {
    let spans = spans(t);
    assert_eq!(spans.len(), 1, "one span: {t:#?}");
    spans[0]
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

const TRACE: &str = "0123456789abcdef0011223344556677";
const ID: &str = "00000000000000a1";

fn span() -> Json {
    json!({"traceId": TRACE, "id": ID, "timestamp": 1_502_787_600_000_000u64, "duration": 150_000})
}

fn with(mut base: Json, extra: Json) -> Json {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

#[test]
fn ids_times_and_name() {
    let t = both(&[with(span(), json!({"parentId": "00000000000000b2", "name": "get /users"}))]);
    let span = only(&t);
    assert_eq!(span.trace_id, unhex(TRACE));
    assert_eq!(span.span_id, unhex(ID));
    assert_eq!(span.parent_span_id, unhex("00000000000000b2"));
    assert_eq!(span.name, "get /users");
    assert_eq!(span.start_time_unix_nano, 1_502_787_600_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_502_787_600_150_000_000);
    assert_eq!(span.kind, SpanKind::Unspecified as i32);
    assert!(t.refused.is_empty());
}

#[test]
fn a_64_bit_trace_id_is_widened_with_zero_high_bits() {
    let t = both(&[with(span(), json!({"traceId": "463ac35c9f6413ad"}))]);
    assert_eq!(only(&t).trace_id, unhex("0000000000000000463ac35c9f6413ad"));
}

#[test]
fn uppercase_hex_is_read() {
    let t = zipkin::from_json(
        serde_json::to_vec(&[with(span(), json!({"traceId": "463AC35C9F6413AD"}))]).unwrap().as_slice(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(only(&t).trace_id, unhex("0000000000000000463ac35c9f6413ad"));
}

#[test]
fn no_parent_when_absent_zero_or_self() {
    for parent in [json!({}), json!({"parentId": "0000000000000000"}), json!({"parentId": ID})] {
        let t = both(&[with(span(), parent.clone())]);
        assert!(only(&t).parent_span_id.is_empty(), "{parent}");
    }
}

#[test]
fn empty_name_and_no_duration_are_allowed() {
    let t = both(&[json!({"traceId": TRACE, "id": ID, "timestamp": 7})]);
    let span = only(&t);
    assert_eq!((span.name.as_str(), span.start_time_unix_nano, span.end_time_unix_nano), ("", 7000, 7000));
}

#[test]
fn kinds() {
    for (zipkin, otlp) in [
        ("CLIENT", SpanKind::Client),
        ("SERVER", SpanKind::Server),
        ("PRODUCER", SpanKind::Producer),
        ("CONSUMER", SpanKind::Consumer),
    ] {
        let t = both(&[with(span(), json!({"kind": zipkin}))]);
        assert_eq!(only(&t).kind, otlp as i32, "{zipkin}");
    }
    // Absent: unspecified, unless OTel's own `span.kind=internal` tag says so (the tag is consumed).
    let t = both(&[with(span(), json!({"tags": {"span.kind": "internal"}}))]);
    assert_eq!(only(&t).kind, SpanKind::Internal as i32);
    assert!(only(&t).attributes.is_empty());
    // With a kind, the tag is an ordinary attribute.
    let t = both(&[with(span(), json!({"kind": "CLIENT", "tags": {"span.kind": "internal"}}))]);
    assert_eq!(attr(&only(&t).attributes, "span.kind"), Some(&s("internal")));
}

#[test]
fn local_endpoint_is_the_resource_and_host_attributes() {
    let t = both(&[
        with(span(), json!({"localEndpoint": {"serviceName": "frontend", "ipv4": "10.1.2.3", "port": 8080}})),
        with(span(), json!({"id": "00000000000000a2", "localEndpoint": {"serviceName": "backend"}})),
        with(
            span(),
            json!({"id": "00000000000000a3", "localEndpoint": {"serviceName": "frontend", "ipv6": "2001:db8::1"}}),
        ),
        with(span(), json!({"id": "00000000000000a4"})),
    ]);
    let rs = &t.request.resource_spans;
    assert_eq!(rs.len(), 3, "one ResourceSpans per local service, in order of first appearance");
    let service = |i: usize| attr(&rs[i].resource.as_ref().unwrap().attributes, "service.name").cloned();
    assert_eq!(service(0), Some(s("frontend")));
    assert_eq!(service(1), Some(s("backend")));
    assert_eq!(service(2), None, "no local service: no service.name");
    let frontend = &rs[0].scope_spans[0].spans;
    assert_eq!(frontend.len(), 2);
    assert_eq!(attr(&frontend[0].attributes, "net.host.ip"), Some(&s("10.1.2.3")));
    assert_eq!(attr(&frontend[0].attributes, "net.host.port"), Some(&Value::IntValue(8080)));
    assert_eq!(attr(&frontend[1].attributes, "net.host.ip"), Some(&s("2001:db8::1")));
}

#[test]
fn remote_endpoint_is_peer_attributes() {
    let t = both(&[with(
        span(),
        json!({"remoteEndpoint": {"serviceName": "db", "ipv4": "192.168.0.9", "ipv6": "::1", "port": 5432}}),
    )]);
    let a = &only(&t).attributes;
    assert_eq!(attr(a, "peer.service"), Some(&s("db")));
    assert_eq!(attr(a, "net.peer.ip"), Some(&s("::1")), "IPv6 wins when both are set, as in the OTel translator");
    assert_eq!(attr(a, "net.peer.port"), Some(&Value::IntValue(5432)));
}

#[test]
fn tags_are_string_attributes_and_endpoints_override_them() {
    let t = both(&[with(
        span(),
        json!({"tags": {"http.method": "GET", "count": "3", "peer.service": "tagged"}, "remoteEndpoint": {"serviceName": "api"}}),
    )]);
    let a = &only(&t).attributes;
    assert_eq!(attr(a, "http.method"), Some(&s("GET")));
    assert_eq!(attr(a, "count"), Some(&s("3")), "tags stay strings");
    assert_eq!(attr(a, "peer.service"), Some(&s("api")));
    assert_eq!(a.iter().filter(|kv| kv.key == "peer.service").count(), 1);
}

#[test]
fn a_repeated_tag_key_keeps_its_last_value() {
    let body = format!(r#"[{{"traceId":"{TRACE}","id":"{ID}","timestamp":1,"tags":{{"a":"1","b":"2","a":"3"}}}}]"#);
    let t = zipkin::from_json(body.as_bytes(), &Limits::default()).unwrap();
    let a = &only(&t).attributes;
    assert_eq!(a.len(), 2);
    assert_eq!(attr(a, "a"), Some(&s("3")));
}

#[test]
fn the_error_tag_sets_status_error() {
    // "true" carries no message: status ERROR, tag consumed (as the OTel translator does).
    let t = both(&[with(span(), json!({"tags": {"error": "true"}}))]);
    let status = only(&t).status.clone().unwrap();
    assert_eq!((status.code, status.message.as_str()), (StatusCode::Error as i32, ""));
    assert!(only(&t).attributes.is_empty());
    // Any other value: status ERROR with the value as message, and the tag kept (OTel keeps it).
    let t = both(&[with(span(), json!({"tags": {"error": "connection refused"}}))]);
    let status = only(&t).status.clone().unwrap();
    assert_eq!((status.code, status.message.as_str()), (StatusCode::Error as i32, "connection refused"));
    assert_eq!(attr(&only(&t).attributes, "error"), Some(&s("connection refused")));
    // Empty: ERROR, no message.
    let t = both(&[with(span(), json!({"tags": {"error": ""}}))]);
    assert_eq!(only(&t).status.clone().unwrap().code, StatusCode::Error as i32);
    // No error tag: no status.
    assert_eq!(only(&both(&[span()])).status, None);
}

#[test]
fn otel_status_and_tracestate_tags_are_read_back() {
    let t = both(&[with(
        span(),
        json!({"tags": {"otel.status_code": "ERROR", "otel.status_description": "timeout", "w3c.tracestate": "a=1", "x": "y"}}),
    )]);
    let got = only(&t);
    let status = got.status.clone().unwrap();
    assert_eq!((status.code, status.message.as_str()), (StatusCode::Error as i32, "timeout"));
    assert_eq!(got.trace_state, "a=1");
    assert_eq!(got.attributes.len(), 1, "only x is left: {:?}", got.attributes);
    // An unknown status code stays an attribute.
    let t = both(&[with(span(), json!({"tags": {"otel.status_code": "MAYBE"}}))]);
    assert_eq!(only(&t).status, None);
    assert_eq!(attr(&only(&t).attributes, "otel.status_code"), Some(&s("MAYBE")));
}

#[test]
fn scope_tags_name_the_instrumentation_scope() {
    let tagged = |id: &str, service: &str, tags: Json| {
        with(span(), json!({"id": id, "localEndpoint": {"serviceName": service}, "tags": tags}))
    };
    let t = both(&[
        tagged("00000000000000a1", "frontend", json!({"otel.library.name": "lib-a", "otel.library.version": "1.0"})),
        // Both spellings, as exporters following the specification write them: all four consumed.
        tagged(
            "00000000000000a2",
            "frontend",
            json!({"otel.scope.name": "lib-b", "otel.scope.version": "2.0", "otel.library.name": "lib-b", "otel.library.version": "2.0"}),
        ),
        tagged("00000000000000a3", "frontend", json!({"x": "y"})),
        tagged("00000000000000a4", "backend", json!({"otel.library.name": "lib-a"})),
        tagged("00000000000000a5", "frontend", json!({"otel.library.name": "lib-a", "otel.library.version": "1.0"})),
        // `otel.scope.name` wins; a different `otel.library.name` is not lost.
        tagged("00000000000000a6", "frontend", json!({"otel.scope.name": "lib-c", "otel.library.name": "other"})),
        // A version without a name names no scope: it stays an attribute.
        tagged("00000000000000a7", "frontend", json!({"otel.library.version": "9"})),
        // An empty name names no scope either.
        tagged("00000000000000a8", "frontend", json!({"otel.scope.name": ""})),
    ]);
    let rs = &t.request.resource_spans;
    assert_eq!(rs.len(), 2, "one ResourceSpans per service");
    // (scope name, version) or none, and the last id byte of each span, per ScopeSpans.
    type Group = (Option<(String, String)>, Vec<u8>);
    let groups = |i: usize| -> Vec<Group> {
        rs[i]
            .scope_spans
            .iter()
            .map(|ss| {
                let scope = ss.scope.as_ref().map(|s| (s.name.clone(), s.version.clone()));
                (scope, ss.spans.iter().map(|s| s.span_id[7]).collect())
            })
            .collect()
    };
    let scope = |name: &str, version: &str| Some((name.to_owned(), version.to_owned()));
    assert_eq!(
        groups(0),
        [
            (scope("lib-a", "1.0"), vec![0xa1, 0xa5]),
            (scope("lib-b", "2.0"), vec![0xa2]),
            (None, vec![0xa3, 0xa7, 0xa8]),
            (scope("lib-c", ""), vec![0xa6]),
        ],
        "one ScopeSpans per (resource, scope), in order of first appearance"
    );
    assert_eq!(groups(1), [(scope("lib-a", ""), vec![0xa4])]);
    let attributes = |id: u8| {
        let span = spans(&t).into_iter().find(|s| s.span_id[7] == id).unwrap();
        span.attributes.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>()
    };
    assert_eq!(attributes(0xa1), Vec::<&str>::new(), "the scope tags are consumed");
    assert_eq!(attributes(0xa2), Vec::<&str>::new());
    assert_eq!(attributes(0xa6), ["otel.library.name"]);
    assert_eq!(attributes(0xa7), ["otel.library.version"]);
    assert_eq!(attributes(0xa8), ["otel.scope.name"]);
}

#[test]
fn annotations_are_events() {
    let t = both(&[with(
        span(),
        json!({"annotations": [{"timestamp": 1_502_787_600_010_000u64, "value": "ws"}, {"timestamp": 1_502_787_600_020_000u64, "value": "wr"}]}),
    )]);
    let events = &only(&t).events;
    assert_eq!(events.len(), 2);
    assert_eq!((events[0].name.as_str(), events[0].time_unix_nano), ("ws", 1_502_787_600_010_000_000));
    assert_eq!((events[1].name.as_str(), events[1].time_unix_nano), ("wr", 1_502_787_600_020_000_000));
}

#[test]
fn debug_and_shared_are_dropped_as_the_otel_translator_does() {
    let t = both(&[with(span(), json!({"debug": true, "shared": true, "kind": "SERVER"}))]);
    assert!(only(&t).attributes.is_empty());
    assert_eq!(only(&t).flags, 0);
}

#[test]
fn bad_spans_are_refused_alone_and_good_ones_kept() {
    let bad = [
        (json!({"traceId": TRACE, "id": ID}), "no timestamp"),
        (json!({"traceId": TRACE, "id": ID, "timestamp": 0}), "no timestamp"),
        (json!({"traceId": "0123", "id": ID, "timestamp": 1}), "traceId is 4 hex characters, not 16 or 32"),
        (json!({"traceId": "0123456789abcdeg", "id": ID, "timestamp": 1}), "traceId is not hex"),
        (json!({"traceId": "0000000000000000", "id": ID, "timestamp": 1}), "traceId is all zeros"),
        (json!({"traceId": TRACE, "id": "01", "timestamp": 1}), "id is 2 hex characters, not 16"),
        (json!({"traceId": TRACE, "id": "0000000000000000", "timestamp": 1}), "id is all zeros"),
        (
            json!({"traceId": TRACE, "id": ID, "parentId": "xyz", "timestamp": 1}),
            "parentId is 3 hex characters, not 16",
        ),
        (json!({"id": ID, "timestamp": 1}), "no traceId"),
        (json!({"traceId": TRACE, "timestamp": 1}), "no id"),
        (
            json!({"traceId": TRACE, "id": ID, "timestamp": u64::MAX}),
            "timestamp 18446744073709551615 µs is past the year 2554",
        ),
        (
            json!({"traceId": TRACE, "id": ID, "timestamp": 1, "kind": "LOCAL"}),
            "kind is not CLIENT, SERVER, PRODUCER or CONSUMER",
        ),
        (
            json!({"traceId": TRACE, "id": ID, "timestamp": 1, "annotations": [{"value": "x"}]}),
            "an annotation without timestamp",
        ),
        (
            json!({"traceId": TRACE, "id": ID, "timestamp": 1, "localEndpoint": {"ipv4": "999.1.1.1"}}),
            "localEndpoint.ipv4 is not an IPv4 address",
        ),
        (
            json!({"traceId": TRACE, "id": ID, "timestamp": 1, "remoteEndpoint": {"port": 70000}}),
            "remoteEndpoint.port 70000 is not a port",
        ),
    ];
    for (span, reason) in &bad {
        let body =
            serde_json::to_vec(&[self::span(), span.clone(), with(self::span(), json!({"id": "00000000000000a2"}))])
                .unwrap();
        let t = zipkin::from_json(&body, &Limits::default()).unwrap();
        assert_eq!(spans(&t).len(), 2, "the good spans are kept: {span}");
        assert_eq!(t.refused.len(), 1, "{span}");
        assert_eq!((t.refused[0].index, t.refused[0].reason.as_ref()), (1, *reason), "{span}");
    }
}

#[test]
fn json_elements_of_the_wrong_shape_are_refused_alone() {
    let body = format!(
        r#"[1, "x", null, {{"traceId": 5}}, {{"traceId":"{TRACE}","id":"{ID}","timestamp":1,"tags":{{"n":1}}}}, {{"traceId":"{TRACE}","id":"{ID}","timestamp":1}}]"#
    );
    let t = zipkin::from_json(body.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(spans(&t).len(), 1);
    assert_eq!(t.refused.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(t.refused[0].reason, "not a JSON object");
    assert!(t.refused[4].reason.starts_with("invalid type: integer `1`, expected a string"), "{:?}", t.refused[4]);
}

#[test]
fn a_refused_reason_does_not_echo_a_long_value() {
    let body = format!(r#"[{{"traceId":"{TRACE}","id":"{ID}","timestamp":1,"name":{}}}]"#, "1".repeat(10_000));
    let t = zipkin::from_json(body.as_bytes(), &Limits::default()).unwrap();
    assert!(t.refused[0].reason.len() < 300, "{}", t.refused[0].reason.len());
}

#[test]
fn bodies_that_cannot_be_read_are_errors() {
    let limits = Limits::default();
    for body in [&b""[..], b"{", b"[", b"[{}", br#"{"traceId":"1"}"#, b"[] []", b"\xff", b"null"] {
        let error = zipkin::from_json(body, &limits).unwrap_err();
        assert!(matches!(error, ZipkinError::Json(_)), "{body:?}: {error}");
        assert!(error.to_string().starts_with("invalid Zipkin v2 JSON: "));
    }
    assert_eq!(zipkin::from_json(b"[]", &limits).unwrap(), Translated::default());
    assert_eq!(zipkin::from_proto(b"", &limits).unwrap(), Translated::default());
}

#[test]
fn truncated_and_overlong_protobuf_lengths_are_errors() {
    let limits = Limits::default();
    let good = proto_body(&[span()]);
    for cut in 1..good.len() {
        let result = zipkin::from_proto(&good[..cut], &limits);
        assert!(matches!(result, Err(ZipkinError::Proto(_))), "cut at {cut}: {result:?}");
    }
    for body in [
        vec![0x0a, 0x05, 1, 2],                                                 // length past the end
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // 2^64 - 1
        vec![0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], // 11-byte varint
        vec![0x0b],                                                             // a group
        vec![0x08, 0x01],                                                       // spans as a varint
        vec![0x00, 0x00],                                                       // field 0
    ] {
        let result = zipkin::from_proto(&body, &limits);
        assert!(matches!(result, Err(ZipkinError::Proto(_))), "{body:?}: {result:?}");
    }
}

#[test]
fn protobuf_broken_inside_one_span_refuses_that_span_alone() {
    let good = proto_span(&span());
    let mut body = Vec::new();
    len_field(1, &good, &mut body);
    let broken: [Vec<u8>; 6] = [
        good[..good.len() - 3].to_vec(),                       // truncated inside the span
        [&good[..], &[0x2a, 0x09, b'x']].concat(),             // name length past the span's end
        [&good[..], &[0x2a, 0x01, 0xff]].concat(),             // name not UTF-8
        [&good[..], &[0x28, 0x01]].concat(),                   // name as a varint
        [&good[..], &[0x42, 0x03, 0x12, 0x01, 0x01]].concat(), // a 1-byte ipv4
        [&good[..], &[0x20, 0x09]].concat(),                   // kind 9
    ];
    for b in &broken {
        len_field(1, b, &mut body);
    }
    len_field(1, &good, &mut body);
    // Unknown fields of any wire type are skipped, at the list and span levels.
    body.extend_from_slice(&[0x10, 0x01, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0x25, 0, 0, 0, 0]);
    let t = zipkin::from_proto(&body, &Limits::default()).unwrap();
    assert_eq!(spans(&t).len(), 2);
    assert_eq!(t.refused.iter().map(|r| r.index).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6], "{:?}", t.refused);
    assert_eq!(t.refused[1].reason, "a length past the end of its message");
    assert_eq!(t.refused[5].reason, "kind 9 is not a Zipkin span kind");
}

#[test]
fn a_negative_protobuf_port_is_refused() {
    let mut endpoint = Vec::new();
    varint_field(4, -1i64 as u64, &mut endpoint);
    let mut s = proto_span(&span());
    len_field(8, &endpoint, &mut s);
    let mut body = Vec::new();
    len_field(1, &s, &mut body);
    let t = zipkin::from_proto(&body, &Limits::default()).unwrap();
    assert_eq!(t.refused[0].reason, "local_endpoint.port -1 is not a port");
}

#[test]
fn limits() {
    let limits = Limits { max_spans: 2, max_tags_per_span: 1, max_annotations_per_span: 1, max_string_bytes: 8 };
    let three = [span(), span(), span()];
    assert_eq!(
        zipkin::from_json(&serde_json::to_vec(&three).unwrap(), &limits),
        Err(ZipkinError::TooManySpans { limit: 2 })
    );
    assert_eq!(zipkin::from_proto(&proto_body(&three), &limits), Err(ZipkinError::TooManySpans { limit: 2 }));
    let over = [
        (with(span(), json!({"tags": {"a": "1", "b": "2"}})), "tags"),
        (
            with(span(), json!({"annotations": [{"timestamp": 1, "value": "a"}, {"timestamp": 2, "value": "b"}]})),
            "annotations",
        ),
        (with(span(), json!({"name": "a long name"})), "11-byte string"),
        (with(span(), json!({"tags": {"a": "a long value"}})), "12-byte string"),
    ];
    for (span, what) in over {
        for t in [
            zipkin::from_json(&serde_json::to_vec(std::slice::from_ref(&span)).unwrap(), &limits).unwrap(),
            zipkin::from_proto(&proto_body(std::slice::from_ref(&span)), &limits).unwrap(),
        ] {
            assert!(spans(&t).is_empty());
            assert!(t.refused[0].reason.contains(what), "{what}: {:?}", t.refused);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzzing.

fn peak(f: &mut dyn FnMut()) -> u64 {
    allocation_counter::measure(f).bytes_max
}

/// What the translation holds per byte of body, worst case: a two-byte refused span (`0a 00`, or
/// `1,` in JSON) becomes a `Refused` (32 bytes, twice while its vector grows; its reason is fixed
/// text); a minimal valid span (about 30 bytes) a `Span` with its ids, twice while growing; a span
/// with its own service, a `ResourceSpans` too. Measured at 21 to 45 × len.
const ZIPKIN: Target = Target {
    name: "zipkin body",
    bound: Bound { per_byte: 64, fixed: 64 * 1024 },
    errors: &["invalid Zipkin v2 JSON: ", "invalid Zipkin v2 protobuf: ", "more than "],
};

fn run(bytes: &[u8], json: bool) -> fuzz::Run {
    let limits = Limits::default();
    fuzz::measured(peak, bytes.len(), || {
        if json { zipkin::from_json(bytes, &limits) } else { zipkin::from_proto(bytes, &limits) }
            .map_err(|e| e.to_string())
    })
}

fn hex(n: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), n).prop_map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Valid Zipkin spans of varied shapes.
fn zipkin_span() -> impl Strategy<Value = Json> {
    (
        prop_oneof![hex(8), hex(16)],
        hex(8),
        proptest::option::of(hex(8)),
        1u64..3_000_000_000_000_000,
        0u64..1_000_000,
        proptest::sample::select(vec!["", "a", "frontend", "backend"]),
        proptest::collection::vec(("[a-z.]{0,8}", "[ -~]{0,12}"), 0..6),
        proptest::collection::vec((1u64..1 << 50, "[a-z]{0,6}"), 0..4),
        proptest::sample::select(vec![None, Some("CLIENT"), Some("SERVER"), Some("PRODUCER"), Some("CONSUMER")]),
    )
        .prop_map(|(trace, id, parent, ts, dur, service, tags, annotations, kind)| {
            let mut s = json!({"traceId": trace, "id": id, "timestamp": ts, "duration": dur, "name": "op",
                "localEndpoint": {"serviceName": service, "ipv4": "10.0.0.1", "port": 80},
                "remoteEndpoint": {"serviceName": "peer", "ipv6": "::1"},
                "tags": tags.into_iter().map(|(k, v)| (k, Json::String(v))).collect::<serde_json::Map<_, _>>(),
                "annotations": annotations.into_iter().map(|(t, v)| json!({"timestamp": t, "value": v})).collect::<Vec<_>>()});
            if let Some(p) = parent {
                s["parentId"] = json!(p);
            }
            if let Some(k) = kind {
                s["kind"] = json!(k);
            }
            s
        })
}

fn zipkin_spans() -> impl Strategy<Value = Vec<Json>> {
    proptest::collection::vec(zipkin_span(), 0..40)
}

const JSON_TOKENS: &[&[u8]] = &[
    b"{}",
    b"[",
    b"]",
    b",",
    b"\"",
    b"null",
    b"\"traceId\":\"0000000000000001\"",
    b"\"timestamp\":1",
    b"\"tags\":{\"error\":\"true\"}",
    b"\"localEndpoint\":{\"serviceName\":\"x\"}",
    b"\\u0000",
    b"1e999",
    b"-1",
];

const PROTO_TOKENS: &[&[u8]] = &[
    &[0x0a, 0x00],
    &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0x0a, 0x08],
    &[0x42, 0x00],
    &[0x5a, 0x02, 0x0a, 0x00],
    &[0x52, 0x00],
    &[0x0b],
    &[0x80],
    &[0x31, 0, 0, 0, 0, 0, 0, 0, 1],
];

#[test]
fn json_bodies_survive_arbitrary_and_mutated_bytes() {
    let inputs = prop_oneof![
        1 => fuzz::raw_bytes(512),
        3 => fuzz::mutated(zipkin_spans().prop_map(|s| serde_json::to_vec(&s).unwrap()), JSON_TOKENS),
    ];
    fuzz::check(file!(), ZIPKIN, inputs, |b| run(b, true));
}

#[test]
fn protobuf_bodies_survive_arbitrary_and_mutated_bytes() {
    let inputs = prop_oneof![
        1 => fuzz::raw_bytes(512),
        3 => fuzz::mutated(zipkin_spans().prop_map(|s| proto_body(&s)), PROTO_TOKENS),
    ];
    fuzz::check(file!(), ZIPKIN, inputs, |b| run(b, false));
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Both encodings of the same spans translate alike, and every valid span is taken.
    #[test]
    fn json_and_protobuf_agree(spans in zipkin_spans()) {
        let t = both(&spans);
        prop_assert!(t.refused.is_empty(), "{:?}", t.refused);
        prop_assert_eq!(self::spans(&t).len(), spans.len());
    }
}

/// The shapes that cost the most per byte stay within the bound.
#[test]
fn the_costliest_shapes_stay_within_the_bound() {
    let n = 100_000;
    let refused_proto = [0x0a, 0x00].repeat(n);
    let refused_json = format!("[{}]", vec!["{}"; n].join(","));
    let refused_ints = format!("[{}]", vec!["1"; n].join(","));
    let mut minimal = Vec::new();
    let mut services = Vec::new();
    for i in 0..n as u64 {
        let mut s = Vec::new();
        len_field(1, &(i + 1).to_be_bytes(), &mut s);
        len_field(3, &(i + 1).to_be_bytes(), &mut s);
        fixed64_field(6, 1, &mut s);
        len_field(1, &s, &mut minimal);
        let mut e = Vec::new();
        len_field(1, format!("{i}").as_bytes(), &mut e);
        len_field(8, &e, &mut s);
        len_field(1, &s, &mut services);
    }
    for (body, json) in [
        (&refused_proto, false),
        (refused_json.as_bytes().to_vec().as_ref(), true),
        (refused_ints.as_bytes().to_vec().as_ref(), true),
        (&minimal, false),
        (&services, false),
    ] {
        let run = run(body, json);
        assert_eq!(run.outcome, Outcome::Ok);
        assert!(
            ZIPKIN.violation(&run).is_none(),
            "{:?} for {} bytes: {} held",
            ZIPKIN.violation(&run),
            run.len,
            run.peak
        );
        eprintln!("{} bytes held {} ({:.1} × len)", run.len, run.peak, run.peak as f64 / run.len as f64);
    }
}

/// Deep nesting never overflows the stack: serde_json skips a raw element, and an unknown key's
/// value, without recursing; an element that is not an object is refused alone.
#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let n = 100_000;
    let deep = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let t = zipkin::from_json(deep.as_bytes(), &Limits::default()).unwrap();
    assert_eq!((spans(&t).len(), t.refused.len()), (0, 1));
    let body = format!(r#"[{{"traceId":"{TRACE}","id":"{ID}","timestamp":1,"x":{deep}}},{}]"#, span());
    let t = zipkin::from_json(body.as_bytes(), &Limits::default()).unwrap();
    assert_eq!((spans(&t).len(), t.refused.len()), (2, 0), "an unknown key is skipped, however deep");
    let unclosed = "[".repeat(n);
    assert!(matches!(zipkin::from_json(unclosed.as_bytes(), &Limits::default()), Err(ZipkinError::Json(_))));
}
