//! `zipkin`: a Zipkin v2 body (a JSON array of spans, or a protobuf `ListOfSpans`) → an OTLP
//! `ExportTraceServiceRequest`, plus the spans refused one by one and why.
//!
//! Not wired to a listener yet: a Zipkin receiver will call [`from_json`] or [`from_proto`] with the
//! (decompressed) body and hand the request to the OTLP path. Pure: no I/O, no metrics, no logs.
//!
//! Guarantees:
//! - a body that cannot be read at all (not JSON, not a JSON array, protobuf whose framing is
//!   broken at the `ListOfSpans` level) or that holds more than [`Limits::max_spans`] spans is an
//!   error ([`ZipkinError`], → HTTP 400), and nothing of it is translated;
//! - otherwise every span is either translated or listed in [`Translated::refused`] with its index
//!   and the reason (bad id, no timestamp, wrong type, a string, tag or annotation count over a
//!   limit, broken protobuf inside that span): a bad span never costs the other spans of the body;
//! - the mapping is the table of docs/inputs.md ("Zipkin v2"), which follows the OpenTelemetry
//!   Collector's Zipkin receiver except where that table says otherwise;
//! - bounded work: the protobuf reader is hand-written over the wire format; every declared length
//!   is checked against the bytes left, groups are refused, and nesting is bounded by the schema
//!   (`ListOfSpans` → `Span` → `Endpoint` / `Annotation` / tag entry: unknown fields are hopped over
//!   by their length, never descended into). The JSON reader walks the array one span at a time and
//!   borrows strings from the body. What either holds at once is a small multiple of the body's
//!   size (collector/tests/zipkin.rs measures it).

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{
        ResourceSpans, ScopeSpans, Span, Status,
        span::{Event, SpanKind},
        status::StatusCode,
    },
};
use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor},
};
use serde_json::value::RawValue;

/// Bounds on one body. A body over `max_spans` is an error; a span over any other bound is refused
/// alone (see [`Translated::refused`]).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most spans in one body. Default 200 000 (as `limits.max_spans_per_request`).
    pub max_spans: usize,
    /// Most tags on one span. Default 1024 (as `limits.max_attributes_per_span`).
    pub max_tags_per_span: usize,
    /// Most annotations on one span. Default 1024.
    pub max_annotations_per_span: usize,
    /// Longest string, in bytes: name, service names, tag keys and values, annotation values.
    /// Default 256 KiB (as `limits.max_attribute_value_bytes`).
    pub max_string_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_spans: 200_000,
            max_tags_per_span: 1024,
            max_annotations_per_span: 1024,
            max_string_bytes: 256 * 1024,
        }
    }
}

pub use crate::translate::{Refused, Translated, Why};

/// A body refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZipkinError {
    /// Not JSON, or not a JSON array.
    #[error("invalid Zipkin v2 JSON: {0}")]
    Json(String),
    /// The `ListOfSpans` framing is broken (a length past the end, a bad varint, a group...).
    #[error("invalid Zipkin v2 protobuf: {0}")]
    Proto(&'static str),
    /// More spans than [`Limits::max_spans`].
    #[error("more than {limit} spans in one Zipkin request: send smaller batches")]
    TooManySpans { limit: usize },
}

/// A refused span's reason is clipped to this many bytes: serde quotes the offending value in its
/// errors, and a reason must not echo the body.
const MAX_REASON_BYTES: usize = 256;

// ---------------------------------------------------------------------------------------------
// The format-neutral span both readers produce, and its translation.

/// Zipkin's span kinds (the protobuf enum's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    #[default]
    Unspecified,
    Client,
    Server,
    Producer,
    Consumer,
}

#[derive(Debug, Default)]
struct Endpoint<'a> {
    service: Cow<'a, str>,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    /// 0 when absent.
    port: u16,
}

impl Endpoint<'_> {
    /// The address as the OTel translator keeps it: IPv6 wins when both are set.
    fn ip(&self) -> Option<IpAddr> {
        self.ipv6.map(IpAddr::V6).or(self.ipv4.map(IpAddr::V4))
    }
}

/// A span as read from either format, ids already checked for length.
#[derive(Debug, Default)]
struct Zspan<'a> {
    trace_id: [u8; 16],
    id: [u8; 8],
    /// All zeros when absent.
    parent_id: [u8; 8],
    kind: Kind,
    name: Cow<'a, str>,
    /// Epoch microseconds; 0 means absent (both formats' convention).
    timestamp: u64,
    /// Microseconds.
    duration: u64,
    local: Endpoint<'a>,
    remote: Endpoint<'a>,
    /// (epoch microseconds, value)
    annotations: Vec<(u64, Cow<'a, str>)>,
    tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// A 64- or 128-bit trace id, widened to 128 bits with zero high bits.
fn trace_id(bytes: &[u8]) -> Result<[u8; 16], Why> {
    let mut id = [0u8; 16];
    match bytes.len() {
        8 => id[8..].copy_from_slice(bytes),
        16 => id.copy_from_slice(bytes),
        n => return Err(format!("traceId is {n} bytes, not 8 or 16").into()),
    }
    if id == [0; 16] {
        return Err("traceId is all zeros".into());
    }
    Ok(id)
}

fn span_id(field: &str, bytes: &[u8]) -> Result<[u8; 8], Why> {
    <[u8; 8]>::try_from(bytes).map_err(|_| format!("{field} is {} bytes, not 8", bytes.len()).into())
}

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

/// Sets `key` (the OTel translator upserts endpoint attributes over tags of the same key).
fn upsert(attributes: &mut Vec<KeyValue>, key: &str, value: Value) {
    let value = Some(AnyValue { value: Some(value) });
    match attributes.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = value,
        None => attributes.push(KeyValue { key: key.to_owned(), value, ..Default::default() }),
    }
}

/// A span's instrumentation scope, (name, version), when its tags name one.
type Scope<'a> = Option<(Cow<'a, str>, Cow<'a, str>)>;

fn micros_to_nanos(what: &str, micros: u64) -> Result<u64, Why> {
    micros.checked_mul(1000).ok_or_else(|| Why::from(format!("{what} {micros} µs is past the year 2554")))
}

impl<'a> Zspan<'a> {
    /// Checks the limits, then maps the span (docs/inputs.md, "Zipkin v2"). Returns the local
    /// service name (the resource) and the instrumentation scope beside the span.
    fn translate(self, limits: &Limits) -> Result<(Cow<'a, str>, Scope<'a>, Span), Why> {
        let Zspan { trace_id, id, parent_id, kind, name, timestamp, duration, local, remote, annotations, tags } = self;
        if tags.len() > limits.max_tags_per_span {
            return Err(format!("{} tags, over the limit of {}", tags.len(), limits.max_tags_per_span).into());
        }
        if annotations.len() > limits.max_annotations_per_span {
            return Err(format!(
                "{} annotations, over the limit of {}",
                annotations.len(),
                limits.max_annotations_per_span
            )
            .into());
        }
        let strings = [&name, &local.service, &remote.service]
            .into_iter()
            .chain(annotations.iter().map(|(_, v)| v))
            .chain(tags.iter().flat_map(|(k, v)| [k, v]));
        if let Some(long) = strings.map(|s| s.len()).find(|&n| n > limits.max_string_bytes) {
            return Err(format!("a {long}-byte string, over the limit of {} bytes", limits.max_string_bytes).into());
        }
        if id == [0; 8] {
            return Err("id is all zeros".into());
        }
        if timestamp == 0 {
            return Err("no timestamp".into());
        }
        let start = micros_to_nanos("timestamp", timestamp)?;
        let end = start
            .checked_add(micros_to_nanos("duration", duration)?)
            .ok_or(Why::Borrowed("timestamp + duration is past the year 2554"))?;
        let mut events = Vec::with_capacity(annotations.len());
        for (time, value) in annotations {
            if time == 0 {
                return Err("an annotation without timestamp".into());
            }
            let time_unix_nano = micros_to_nanos("annotation timestamp", time)?;
            events.push(Event { time_unix_nano, name: value.into_owned(), ..Default::default() });
        }

        // Tags: the last of a repeated key wins (a JSON object or protobuf map would keep it).
        let mut seen = HashSet::with_capacity(tags.len());
        let mut keep: Vec<bool> = tags.iter().rev().map(|(k, _)| seen.insert(k.as_ref())).collect();
        keep.reverse();
        let tags: Vec<_> = tags.iter().zip(keep).filter(|(_, keep)| *keep).map(|(tag, _)| tag).collect();
        let tag = |key: &str| tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref());

        let mut consumed: Vec<&str> = Vec::new();
        // The instrumentation scope: named by `otel.scope.name`, else by the older
        // `otel.library.name` (exporters write both, or either), the first not empty; versioned
        // likewise, only when named. Each of these tags that says what was taken is consumed.
        let find = |keys: [&'static str; 2]| {
            let value = keys.iter().filter_map(|&key| tags.iter().find(|(k, _)| k == key)).map(|(_, v)| v);
            let value = value.clone().find(|v| !v.is_empty())?;
            Some((value, keys.into_iter().filter(|&key| tag(key) == Some(value.as_ref()))))
        };
        let mut scope = None;
        if let Some((name, named_by)) = find(["otel.scope.name", "otel.library.name"]) {
            consumed.extend(named_by);
            let version = find(["otel.scope.version", "otel.library.version"]).map(|(version, versioned_by)| {
                consumed.extend(versioned_by);
                version.clone()
            });
            scope = Some((name.clone(), version.unwrap_or_default()));
        }
        let mut status = Status::default();
        if let Some(code) = tag("otel.status_code").and_then(status_code) {
            status.code = code as i32;
            consumed.push("otel.status_code");
            if let Some(message) = tag("otel.status_description") {
                status.message = message.to_owned();
                consumed.push("otel.status_description");
            }
        }
        if let Some(error) = tag("error") {
            status.code = StatusCode::Error as i32;
            if error == "true" {
                consumed.push("error");
            } else if status.message.is_empty() {
                status.message = error.to_owned();
            }
        }
        let kind = match kind {
            Kind::Client => SpanKind::Client,
            Kind::Server => SpanKind::Server,
            Kind::Producer => SpanKind::Producer,
            Kind::Consumer => SpanKind::Consumer,
            Kind::Unspecified => {
                let internal = tag("span.kind") == Some("internal");
                if tag("span.kind").is_some() {
                    consumed.push("span.kind");
                }
                if internal { SpanKind::Internal } else { SpanKind::Unspecified }
            }
        };
        let trace_state = tag("w3c.tracestate").map(str::to_owned).unwrap_or_default();
        if !trace_state.is_empty() {
            consumed.push("w3c.tracestate");
        }

        let mut attributes = Vec::with_capacity(tags.len() + 5);
        for (key, value) in tags.iter().filter(|(k, _)| !consumed.contains(&k.as_ref())) {
            attributes.push(attribute(key, Value::StringValue(value.clone().into_owned())));
        }
        if let Some(ip) = local.ip() {
            upsert(&mut attributes, "net.host.ip", Value::StringValue(ip.to_string()));
        }
        if local.port > 0 {
            upsert(&mut attributes, "net.host.port", Value::IntValue(i64::from(local.port)));
        }
        let remote_ip = remote.ip();
        if !remote.service.is_empty() {
            upsert(&mut attributes, "peer.service", Value::StringValue(remote.service.into_owned()));
        }
        if let Some(ip) = remote_ip {
            upsert(&mut attributes, "net.peer.ip", Value::StringValue(ip.to_string()));
        }
        if remote.port > 0 {
            upsert(&mut attributes, "net.peer.port", Value::IntValue(i64::from(remote.port)));
        }

        let parent_span_id = if parent_id == [0; 8] || parent_id == id { Vec::new() } else { parent_id.to_vec() };
        let span = Span {
            trace_id: trace_id.to_vec(),
            span_id: id.to_vec(),
            trace_state,
            parent_span_id,
            name: name.into_owned(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            events,
            status: (status != Status::default()).then_some(status),
            ..Default::default()
        };
        Ok((local.service, scope, span))
    }
}

/// `otel.status_code` as OTel exporters write it (`OK`, `ERROR`, `UNSET`, any case, with or without
/// the `STATUS_CODE_` prefix). An unknown value stays a plain attribute.
fn status_code(value: &str) -> Option<StatusCode> {
    let upper = value.to_ascii_uppercase();
    match upper.strip_prefix("STATUS_CODE_").unwrap_or(&upper) {
        "UNSET" => Some(StatusCode::Unset),
        "OK" => Some(StatusCode::Ok),
        "ERROR" => Some(StatusCode::Error),
        _ => None,
    }
}

/// Collects translated spans into one `ResourceSpans` per local service, and in it one
/// `ScopeSpans` per instrumentation scope, each in order of first appearance.
struct Collector<'a, 'l> {
    limits: &'l Limits,
    resources: Vec<ResourceSpans>,
    by_service: HashMap<Cow<'a, str>, usize>,
    /// (resource index, scope) → the index of its `ScopeSpans` in that resource.
    by_scope: HashMap<(usize, Scope<'a>), usize>,
    refused: Vec<Refused>,
    spans: usize,
}

impl<'a, 'l> Collector<'a, 'l> {
    fn new(limits: &'l Limits) -> Self {
        Self {
            limits,
            resources: Vec::new(),
            by_service: HashMap::new(),
            by_scope: HashMap::new(),
            refused: Vec::new(),
            spans: 0,
        }
    }

    /// Takes the next span of the body, read or not; `Err` once over [`Limits::max_spans`].
    fn push(&mut self, span: Result<Zspan<'a>, Why>) -> Result<(), ZipkinError> {
        let index = self.spans;
        if index >= self.limits.max_spans {
            return Err(ZipkinError::TooManySpans { limit: self.limits.max_spans });
        }
        self.spans += 1;
        match span.and_then(|s| s.translate(self.limits)) {
            Ok((service, scope, span)) => {
                let next = self.resources.len();
                let at = *self.by_service.entry(service.clone()).or_insert(next);
                if at == next {
                    let attributes = if service.is_empty() {
                        Vec::new()
                    } else {
                        vec![attribute("service.name", Value::StringValue(service.into_owned()))]
                    };
                    self.resources.push(ResourceSpans {
                        resource: Some(Resource { attributes, ..Default::default() }),
                        ..Default::default()
                    });
                }
                let Some(resource) = self.resources.get_mut(at) else { return Ok(()) };
                let next = resource.scope_spans.len();
                let within = *self.by_scope.entry((at, scope.clone())).or_insert(next);
                if within == next {
                    let scope = scope.map(|(name, version)| InstrumentationScope {
                        name: name.into_owned(),
                        version: version.into_owned(),
                        ..Default::default()
                    });
                    resource.scope_spans.push(ScopeSpans { scope, ..Default::default() });
                }
                if let Some(scope_spans) = resource.scope_spans.get_mut(within) {
                    scope_spans.spans.push(span);
                }
            }
            Err(mut reason) => {
                if let Cow::Owned(owned) = &mut reason {
                    clip(owned);
                }
                self.refused.push(Refused { index, reason });
            }
        }
        Ok(())
    }

    fn finish(self) -> Translated {
        Translated { request: ExportTraceServiceRequest { resource_spans: self.resources }, refused: self.refused }
    }
}

fn clip(reason: &mut String) {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
}

// ---------------------------------------------------------------------------------------------
// JSON.

/// Translates a Zipkin v2 JSON body (`application/json`: an array of span objects).
///
/// Each element is first read as raw JSON (so the whole body must be valid JSON), then as a span:
/// an element that is not a valid span (wrong type, bad id, ...) is refused alone.
pub fn from_json(body: &[u8], limits: &Limits) -> Result<Translated, ZipkinError> {
    let mut collector = Collector::new(limits);
    let mut stopped = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let read =
        JsonList { collector: &mut collector, stopped: &mut stopped }.deserialize(&mut de).and_then(|()| de.end());
    if let Some(error) = stopped {
        return Err(error);
    }
    read.map_err(|e| {
        let mut message = e.to_string();
        clip(&mut message);
        ZipkinError::Json(message)
    })?;
    Ok(collector.finish())
}

/// Walks the top-level array one element at a time.
struct JsonList<'c, 'a, 'l> {
    collector: &'c mut Collector<'a, 'l>,
    /// Why the walk stopped early, when the collector refused the body.
    stopped: &'c mut Option<ZipkinError>,
}

impl<'a> DeserializeSeed<'a> for JsonList<'_, 'a, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'a> Visitor<'a> for JsonList<'_, 'a, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of Zipkin v2 spans")
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'a RawValue>()? {
            let span = if raw.get().starts_with('{') {
                serde_json::from_str::<JsonSpan<'a>>(raw.get())
                    .map_err(|e| Why::from(e.to_string()))
                    .and_then(JsonSpan::into_zspan)
            } else {
                Err(Why::Borrowed("not a JSON object"))
            };
            if let Err(error) = self.collector.push(span) {
                let message = error.to_string();
                *self.stopped = Some(error);
                return Err(de::Error::custom(message));
            }
        }
        Ok(())
    }
}

/// A string borrowed from the body when it has no escapes.
#[derive(Debug, Default)]
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(StrVisitor(std::marker::PhantomData))
    }
}

/// `tags`: a JSON object of strings, kept in order (repeated keys resolved in `translate`).
#[derive(Debug, Default)]
struct Tags<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Tags<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TagsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TagsVisitor<'a> {
            type Value = Tags<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string tags")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Tags<'a>, M::Error> {
                let mut tags = Vec::new();
                while let Some((Str(k), Str(v))) = map.next_entry::<Str<'a>, Str<'a>>()? {
                    tags.push((k, v));
                }
                Ok(Tags(tags))
            }
        }
        deserializer.deserialize_map(TagsVisitor(std::marker::PhantomData))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan<'a> {
    #[serde(borrow)]
    trace_id: Option<Str<'a>>,
    #[serde(borrow)]
    parent_id: Option<Str<'a>>,
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    timestamp: Option<u64>,
    duration: Option<u64>,
    #[serde(borrow)]
    local_endpoint: Option<JsonEndpoint<'a>>,
    #[serde(borrow)]
    remote_endpoint: Option<JsonEndpoint<'a>>,
    #[serde(borrow)]
    annotations: Option<Vec<JsonAnnotation<'a>>>,
    #[serde(borrow)]
    tags: Option<Tags<'a>>,
    /// Read for its type, then dropped, as the OTel translator does.
    #[allow(dead_code)]
    debug: Option<bool>,
    /// Likewise.
    #[allow(dead_code)]
    shared: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonEndpoint<'a> {
    #[serde(borrow)]
    service_name: Option<Str<'a>>,
    #[serde(borrow)]
    ipv4: Option<Str<'a>>,
    #[serde(borrow)]
    ipv6: Option<Str<'a>>,
    port: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct JsonAnnotation<'a> {
    timestamp: Option<u64>,
    #[serde(borrow)]
    value: Option<Str<'a>>,
}

/// Lowercase or uppercase hex into `out`, which must be exactly half its length.
fn hex(field: &str, text: &str, out: &mut [u8]) -> Result<(), Why> {
    if text.len() != out.len() * 2 {
        return Err(format!("{field} is {} hex characters, not {}", text.len(), out.len() * 2).into());
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => *byte = (hi << 4) | lo,
            _ => return Err(format!("{field} is not hex").into()),
        }
    }
    Ok(())
}

impl<'a> JsonSpan<'a> {
    fn into_zspan(self) -> Result<Zspan<'a>, Why> {
        let trace_hex = self.trace_id.ok_or("no traceId")?.0;
        let mut wide = [0u8; 16];
        match trace_hex.len() {
            16 => hex("traceId", &trace_hex, &mut wide[8..])?,
            32 => hex("traceId", &trace_hex, &mut wide)?,
            n => return Err(format!("traceId is {n} hex characters, not 16 or 32").into()),
        }
        let mut id = [0u8; 8];
        hex("id", &self.id.ok_or("no id")?.0, &mut id)?;
        let mut parent_id = [0u8; 8];
        if let Some(Str(parent)) = self.parent_id.filter(|p| !p.0.is_empty()) {
            hex("parentId", &parent, &mut parent_id)?;
        }
        let kind = match self.kind.as_ref().map(|k| k.0.as_ref()) {
            None => Kind::Unspecified,
            Some("CLIENT") => Kind::Client,
            Some("SERVER") => Kind::Server,
            Some("PRODUCER") => Kind::Producer,
            Some("CONSUMER") => Kind::Consumer,
            Some(_) => return Err("kind is not CLIENT, SERVER, PRODUCER or CONSUMER".into()),
        };
        let annotations = self
            .annotations
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.timestamp.unwrap_or(0), a.value.unwrap_or_default().0))
            .collect();
        Ok(Zspan {
            trace_id: trace_id(&wide)?,
            id,
            parent_id,
            kind,
            name: self.name.unwrap_or_default().0,
            timestamp: self.timestamp.unwrap_or(0),
            duration: self.duration.unwrap_or(0),
            local: json_endpoint("localEndpoint", self.local_endpoint)?,
            remote: json_endpoint("remoteEndpoint", self.remote_endpoint)?,
            annotations,
            tags: self.tags.unwrap_or_default().0,
        })
    }
}

fn json_endpoint<'a>(field: &str, endpoint: Option<JsonEndpoint<'a>>) -> Result<Endpoint<'a>, Why> {
    let Some(e) = endpoint else { return Ok(Endpoint::default()) };
    let ipv4 = match e.ipv4.filter(|ip| !ip.0.is_empty()) {
        Some(ip) => Some(ip.0.parse().map_err(|_| Why::from(format!("{field}.ipv4 is not an IPv4 address")))?),
        None => None,
    };
    let ipv6 = match e.ipv6.filter(|ip| !ip.0.is_empty()) {
        Some(ip) => Some(ip.0.parse().map_err(|_| Why::from(format!("{field}.ipv6 is not an IPv6 address")))?),
        None => None,
    };
    let port = match e.port {
        None => 0,
        Some(port) => u16::try_from(port).map_err(|_| Why::from(format!("{field}.port {port} is not a port")))?,
    };
    Ok(Endpoint { service: e.service_name.unwrap_or_default().0, ipv4, ipv6, port })
}

// ---------------------------------------------------------------------------------------------
// Protobuf.

/// Translates a Zipkin v2 protobuf body (`application/x-protobuf`: a `ListOfSpans`).
///
/// A first walk checks the `ListOfSpans` framing and counts the spans (nothing allocated); a
/// span whose own bytes are malformed is refused alone.
pub fn from_proto(body: &[u8], limits: &Limits) -> Result<Translated, ZipkinError> {
    let mut count = 0usize;
    let mut list = Fields(body);
    while let Some((number, value)) = list.next().map_err(ZipkinError::Proto)? {
        match (number, value) {
            (1, Wire::Len(_)) => count += 1,
            (1, _) => return Err(ZipkinError::Proto("ListOfSpans.spans is not length-delimited")),
            _ => {}
        }
    }
    if count > limits.max_spans {
        return Err(ZipkinError::TooManySpans { limit: limits.max_spans });
    }
    let mut collector = Collector::new(limits);
    let mut list = Fields(body);
    while let Some((number, value)) = list.next().map_err(ZipkinError::Proto)? {
        if let (1, Wire::Len(span)) = (number, value) {
            collector.push(proto_span(span, limits))?;
        }
    }
    Ok(collector.finish())
}

/// One field's value, by wire type.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32,
}

/// The fields of one message, in order. Every length is checked against the bytes left.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in 0..10 {
            let Some((&byte, rest)) = self.0.split_first() else { return Err("truncated varint") };
            self.0 = rest;
            if shift == 9 && byte > 1 {
                return Err("varint over 64 bits");
            }
            value |= u64::from(byte & 0x7f) << (7 * shift);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint over 10 bytes")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err("a length past the end of its message");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, &'static str> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > 0x1fff_ffff {
            return Err("field number out of range");
        }
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(self.take(8)?);
                Wire::Fixed64(u64::from_le_bytes(bytes))
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| "a length past the end of its message")?;
                Wire::Len(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            _ => return Err("a group or an unknown wire type"),
        };
        Ok(Some((number, value)))
    }
}

fn utf8<'a>(field: &str, bytes: &'a [u8]) -> Result<Cow<'a, str>, Why> {
    std::str::from_utf8(bytes).map(Cow::Borrowed).map_err(|_| format!("{field} is not UTF-8").into())
}

fn wrong_type(field: &str) -> Why {
    format!("{field} has the wrong wire type").into()
}

/// Reads one `Span` message; any error refuses this span alone.
fn proto_span<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Zspan<'a>, Why> {
    let mut span = Zspan::default();
    let mut has = (false, false);
    let mut fields = Fields(bytes);
    while let Some((number, value)) = fields.next().map_err(Why::Borrowed)? {
        match (number, value) {
            (1, Wire::Len(b)) => {
                span.trace_id = trace_id(b)?;
                has.0 = true;
            }
            (2, Wire::Len(b)) => span.parent_id = if b.is_empty() { [0; 8] } else { span_id("parentId", b)? },
            (3, Wire::Len(b)) => {
                span.id = span_id("id", b)?;
                has.1 = true;
            }
            (4, Wire::Varint(k)) => {
                span.kind = match k {
                    0 => Kind::Unspecified,
                    1 => Kind::Client,
                    2 => Kind::Server,
                    3 => Kind::Producer,
                    4 => Kind::Consumer,
                    _ => return Err(format!("kind {k} is not a Zipkin span kind").into()),
                }
            }
            (5, Wire::Len(b)) => span.name = utf8("name", b)?,
            (6, Wire::Fixed64(t)) => span.timestamp = t,
            (7, Wire::Varint(d)) => span.duration = d,
            (8, Wire::Len(b)) => span.local = proto_endpoint("local_endpoint", b)?,
            (9, Wire::Len(b)) => span.remote = proto_endpoint("remote_endpoint", b)?,
            (10, Wire::Len(b)) => {
                if span.annotations.len() == limits.max_annotations_per_span {
                    return Err(format!("annotations over the limit of {}", limits.max_annotations_per_span).into());
                }
                span.annotations.push(proto_annotation(b)?);
            }
            (11, Wire::Len(b)) => {
                if span.tags.len() == limits.max_tags_per_span {
                    return Err(format!("tags over the limit of {}", limits.max_tags_per_span).into());
                }
                span.tags.push(proto_tag(b)?);
            }
            // debug and shared: read for their type, then dropped, as the OTel translator does.
            (12 | 13, Wire::Varint(_)) => {}
            (1..=13, _) => return Err(wrong_type(SPAN_FIELDS.get(number as usize).copied().unwrap_or("a field"))),
            _ => {}
        }
    }
    match has {
        (false, _) => Err("no trace_id".into()),
        (_, false) => Err("no id".into()),
        _ => Ok(span),
    }
}

/// `Span`'s field names by number, for errors.
const SPAN_FIELDS: [&str; 14] = [
    "",
    "trace_id",
    "parent_id",
    "id",
    "kind",
    "name",
    "timestamp",
    "duration",
    "local_endpoint",
    "remote_endpoint",
    "annotations",
    "tags",
    "debug",
    "shared",
];

fn proto_endpoint<'a>(field: &str, bytes: &'a [u8]) -> Result<Endpoint<'a>, Why> {
    let mut endpoint = Endpoint::default();
    let mut fields = Fields(bytes);
    while let Some((number, value)) = fields.next().map_err(|e| Why::from(format!("{field}: {e}")))? {
        match (number, value) {
            (1, Wire::Len(b)) => endpoint.service = utf8("service_name", b)?,
            (2, Wire::Len(b)) => {
                endpoint.ipv4 = match <[u8; 4]>::try_from(b) {
                    Ok(ip) => Some(Ipv4Addr::from(ip)),
                    Err(_) if b.is_empty() => None,
                    Err(_) => return Err(format!("{field}.ipv4 is {} bytes, not 4", b.len()).into()),
                }
            }
            (3, Wire::Len(b)) => {
                endpoint.ipv6 = match <[u8; 16]>::try_from(b) {
                    Ok(ip) => Some(Ipv6Addr::from(ip)),
                    Err(_) if b.is_empty() => None,
                    Err(_) => return Err(format!("{field}.ipv6 is {} bytes, not 16", b.len()).into()),
                }
            }
            (4, Wire::Varint(p)) => {
                // int32 on the wire: a negative port is sign-extended to ten bytes.
                endpoint.port =
                    u16::try_from(p).map_err(|_| Why::from(format!("{field}.port {} is not a port", p as i64)))?;
            }
            (1..=4, _) => return Err(wrong_type(field)),
            _ => {}
        }
    }
    Ok(endpoint)
}

fn proto_annotation(bytes: &[u8]) -> Result<(u64, Cow<'_, str>), Why> {
    let (mut timestamp, mut value) = (0, Cow::Borrowed(""));
    let mut fields = Fields(bytes);
    while let Some((number, wire)) = fields.next().map_err(|e| Why::from(format!("annotations: {e}")))? {
        match (number, wire) {
            (1, Wire::Fixed64(t)) => timestamp = t,
            (2, Wire::Len(b)) => value = utf8("annotation value", b)?,
            (1 | 2, _) => return Err(wrong_type("annotations")),
            _ => {}
        }
    }
    Ok((timestamp, value))
}

/// One entry of the `tags` map (key = 1, value = 2, both strings).
fn proto_tag(bytes: &[u8]) -> Result<(Cow<'_, str>, Cow<'_, str>), Why> {
    let (mut key, mut value) = (Cow::Borrowed(""), Cow::Borrowed(""));
    let mut fields = Fields(bytes);
    while let Some((number, wire)) = fields.next().map_err(|e| Why::from(format!("tags: {e}")))? {
        match (number, wire) {
            (1, Wire::Len(b)) => key = utf8("tag key", b)?,
            (2, Wire::Len(b)) => value = utf8("tag value", b)?,
            (1 | 2, _) => return Err(wrong_type("tags")),
            _ => {}
        }
    }
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_read_to_64_bits_and_no_further() {
        let mut f = Fields(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(f.varint(), Ok(u64::MAX));
        assert_eq!(
            Fields(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).varint(),
            Err("varint over 64 bits")
        );
        assert_eq!(Fields(&[0x80; 11]).varint(), Err("varint over 64 bits"));
        assert_eq!(Fields(&[0x80, 0x80]).varint(), Err("truncated varint"));
    }

    #[test]
    fn a_length_is_checked_against_the_bytes_left() {
        assert_eq!(Fields(&[0x0a, 0x02, 0x00]).next().map(|_| ()), Err("a length past the end of its message"));
        assert_eq!(Fields(&[0x09, 0x00]).next().map(|_| ()), Err("a length past the end of its message"));
        assert!(matches!(Fields(&[0x0a, 0x01, 0x00]).next(), Ok(Some((1, Wire::Len([0]))))));
    }

    #[test]
    fn hex_ids() {
        let mut out = [0u8; 8];
        assert_eq!(hex("id", "00000000000000aF", &mut out), Ok(()));
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 0xaf]);
        assert_eq!(hex("id", "0000000000000+aF", &mut out), Err("id is not hex".into()));
        assert_eq!(hex("id", "é0000000000000a", &mut out), Err("id is not hex".into()));
        assert_eq!(trace_id(&[0, 0, 0, 0, 0, 0, 0, 1]).map(|id| id[15]), Ok(1));
    }

    #[test]
    fn reasons_are_clipped_at_a_character_boundary() {
        let mut reason = "é".repeat(200);
        clip(&mut reason);
        assert!(reason.len() <= MAX_REASON_BYTES + 3 && reason.ends_with('…'));
    }

    #[test]
    fn status_codes() {
        assert_eq!(status_code("STATUS_CODE_ERROR"), Some(StatusCode::Error));
        assert_eq!(status_code("Ok"), Some(StatusCode::Ok));
        assert_eq!(status_code("unset"), Some(StatusCode::Unset));
        assert_eq!(status_code("bad"), None);
    }
}
