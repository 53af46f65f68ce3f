//! Test-only: the span and service documents as the release before the hand-written writer made
//! them, with serde_json (the same structs, field order and conversions). The writer's proptest
//! compares against it byte for byte; nothing outside the tests uses it.

use std::{borrow::Cow, fmt, io};

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    trace::v1::{Span, span::Event, status::StatusCode},
};
use serde::{Serialize, Serializer, ser::SerializeSeq};
use spanline_common::ids::to_hex;

use super::span_kind;

enum Text<'a> {
    Str(&'a str),
    Owned(String),
    Hex(&'a [u8]),
    Json(&'a AnyValue),
}

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Text::Str(v) => s.serialize_str(v),
            Text::Owned(v) => s.serialize_str(v),
            Text::Hex(v) => s.collect_str(&Hex(v)),
            Text::Json(v) => s.collect_str(&Json(v)),
        }
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(self.0))
    }
}

struct Json<'a>(&'a AnyValue);

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Utf8<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl io::Write for Utf8<'_, '_> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let text = std::str::from_utf8(buf).map_err(io::Error::other)?;
                self.0.write_str(text).map_err(io::Error::other)?;
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let _ = serde_json::to_writer(Utf8(f), self.0);
        Ok(())
    }
}

#[derive(Serialize)]
struct Tag<'a> {
    key: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    value: Text<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Reference {
    ref_type: &'static str,
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Process<'a> {
    service_name: &'a str,
    tags: ProcessTags<'a>,
}

struct ProcessTags<'a>(&'a [KeyValue]);

impl Serialize for ProcessTags<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for kv in self.0.iter().filter(|kv| kv.key != "service.name") {
            seq.serialize_element(&tag(kv))?;
        }
        seq.end()
    }
}

struct SpanTags<'a> {
    span: &'a Span,
    scope: Option<&'a InstrumentationScope>,
}

impl Serialize for SpanTags<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Self { span, scope } = self;
        let mut seq = s.serialize_seq(None)?;
        for kv in &span.attributes {
            seq.serialize_element(&tag(kv))?;
        }
        if let Some(scope) = scope {
            if !scope.name.is_empty() {
                seq.serialize_element(&str_tag("otel.scope.name", &scope.name))?;
            }
            if !scope.version.is_empty() {
                seq.serialize_element(&str_tag("otel.scope.version", &scope.version))?;
            }
        }
        if let Some(kind) = span_kind(span.kind) {
            seq.serialize_element(&str_tag("span.kind", kind))?;
        }
        if let Some(status) = &span.status {
            match StatusCode::try_from(status.code) {
                Ok(StatusCode::Ok) => seq.serialize_element(&str_tag("otel.status_code", "OK"))?,
                Ok(StatusCode::Error) => {
                    seq.serialize_element(&str_tag("otel.status_code", "ERROR"))?;
                    seq.serialize_element(&Tag {
                        key: Cow::Borrowed("error"),
                        kind: "bool",
                        value: Text::Str("true"),
                    })?;
                }
                _ => {}
            }
            if !status.message.is_empty() {
                seq.serialize_element(&str_tag("otel.status_description", &status.message))?;
            }
        }
        if !span.trace_state.is_empty() {
            seq.serialize_element(&str_tag("w3c.tracestate", &span.trace_state))?;
        }
        seq.end()
    }
}

struct Logs<'a>(&'a [Event]);

impl Serialize for Logs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Log<'a> {
            timestamp: u64,
            fields: Fields<'a>,
        }
        struct Fields<'a>(&'a Event);
        impl Serialize for Fields<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(None)?;
                if !self.0.name.is_empty() {
                    seq.serialize_element(&str_tag("event", &self.0.name))?;
                }
                for kv in &self.0.attributes {
                    seq.serialize_element(&tag(kv))?;
                }
                seq.end()
            }
        }
        let mut seq = s.serialize_seq(None)?;
        for event in self.0 {
            seq.serialize_element(&Log { timestamp: event.time_unix_nano / 1_000, fields: Fields(event) })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JaegerSpan<'a> {
    #[serde(rename = "traceID")]
    trace_id: &'a str,
    #[serde(rename = "spanID")]
    span_id: &'a str,
    #[serde(rename = "parentSpanID", skip_serializing_if = "str::is_empty")]
    parent_span_id: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    flags: u32,
    operation_name: &'a str,
    references: Vec<Reference>,
    start_time: u64,
    start_time_millis: u64,
    duration: u64,
    tags: SpanTags<'a>,
    logs: Logs<'a>,
    process: Process<'a>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceDoc<'a> {
    service_name: &'a str,
    operation_name: &'a str,
}

fn tag(kv: &KeyValue) -> Tag<'_> {
    let (kind, value) = any_value_text(kv.value.as_ref());
    Tag { key: Cow::Borrowed(&kv.key), kind, value }
}

fn any_value_text(v: Option<&AnyValue>) -> (&'static str, Text<'_>) {
    match v.map(|any| (any, any.value.as_ref())) {
        Some((_, Some(any_value::Value::StringValue(s)))) => ("string", Text::Str(s)),
        Some((_, Some(any_value::Value::BoolValue(b)))) => ("bool", Text::Str(if *b { "true" } else { "false" })),
        Some((_, Some(any_value::Value::IntValue(i)))) => ("int64", Text::Owned(i.to_string())),
        Some((_, Some(any_value::Value::DoubleValue(d)))) => ("float64", Text::Owned(d.to_string())),
        Some((_, Some(any_value::Value::BytesValue(b)))) => ("binary", Text::Hex(b)),
        Some((any, Some(any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_)))) => {
            ("string", Text::Json(any))
        }
        Some((_, Some(other))) => ("string", Text::Owned(format!("{other:?}"))),
        Some((_, None)) | None => ("string", Text::Str("")),
    }
}

fn str_tag<'a>(key: &'static str, value: &'a str) -> Tag<'a> {
    Tag { key: Cow::Borrowed(key), kind: "string", value: Text::Str(value) }
}

/// The span document's JSON source, as serde_json wrote it (`process` last).
pub(super) fn span_source(
    span: &Span,
    scope: Option<&InstrumentationScope>,
    resource_attributes: &[KeyValue],
    service: &str,
) -> Vec<u8> {
    // Jaeger v1's form: 16 digits when the high 64 bits are zero (`TraceIds::Jaeger`).
    let jaeger = |id: &[u8]| match id.split_at_checked(8) {
        Some((high, low)) if low.len() == 8 && high == [0; 8] => to_hex(low),
        _ => to_hex(id),
    };
    let trace_id = jaeger(&span.trace_id);
    let span_id = to_hex(&span.span_id);
    let parent_span_id = to_hex(&span.parent_span_id);
    let mut references = Vec::new();
    if !span.parent_span_id.is_empty() {
        references.push(Reference {
            ref_type: "CHILD_OF",
            trace_id: trace_id.clone(),
            span_id: parent_span_id.clone(),
        });
    }
    for link in &span.links {
        let child_of = link.attributes.iter().any(|kv| {
            kv.key == "opentracing.ref_type"
                && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(any_value::Value::StringValue(t)) if t == "child_of")
        });
        references.push(Reference {
            ref_type: if child_of { "CHILD_OF" } else { "FOLLOWS_FROM" },
            trace_id: jaeger(&link.trace_id),
            span_id: to_hex(&link.span_id),
        });
    }
    let start_time = span.start_time_unix_nano / 1_000;
    let doc = JaegerSpan {
        trace_id: &trace_id,
        span_id: &span_id,
        parent_span_id: &parent_span_id,
        flags: span.flags & 0xff,
        operation_name: &span.name,
        references,
        start_time,
        start_time_millis: start_time / 1_000,
        duration: span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) / 1_000,
        tags: SpanTags { span, scope },
        logs: Logs(&span.events),
        process: Process { service_name: service, tags: ProcessTags(resource_attributes) },
    };
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// The service document's JSON source, as serde_json wrote it.
pub(super) fn service_source(service: &str, operation: &str) -> Vec<u8> {
    serde_json::to_vec(&ServiceDoc { service_name: service, operation_name: operation }).unwrap_or_default()
}
