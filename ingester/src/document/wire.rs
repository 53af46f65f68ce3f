//! `document::wire`: a record's protobuf `ExportTraceServiceRequest` read in place. Spans, their
//! attributes, events and links are slices of the record's bytes, read as the documents are
//! written: nothing is copied into owned messages (prost's decode allocated every string and every
//! attribute of a span, about a fifth of the ingester's CPU).
//!
//! Called by the document mapping only. The reader is strict: it reads exactly what prost decodes
//! field by field to the same values, and calls anything else [`Unusual`] — a known field with
//! another wire type, a singular message field written twice (prost merges the two), a value
//! oneof set twice, a group, invalid UTF-8 in any string field prost knows (a span's and an
//! event's attribute keys and string values are checked as they are written, by the writer that
//! escapes them: see [`Utf8`]), a truncated field or
//! an over-long varint, nesting past prost's recursion limit. For an unusual record the mapping
//! falls back to prost, which either fails as it always did or decodes a message whose own
//! encoding this reader then takes (`document.rs` proptests that both ways give the same
//! documents, and the same decision, on arbitrary and on corrupted records).
//!
//! Field numbers are opentelemetry-proto's (REFERENCE.md §1); unknown fields are skipped, as prost
//! skips them.

use std::str;

/// The bytes are not in a form this reader takes: decode them with prost instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unusual;

pub(super) type Read<T> = Result<T, Unusual>;

/// prost's recursion limit: a message nested deeper than this (the request is level 0) fails to
/// decode.
const MAX_LEVEL: u32 = 100;

/// One field's value, by wire type (groups are [`Unusual`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum Value<'a> {
    Varint(u64),
    I64(u64),
    I32(u32),
    Len(&'a [u8]),
}

impl<'a> Value<'a> {
    fn len(self) -> Read<&'a [u8]> {
        match self {
            Value::Len(bytes) => Ok(bytes),
            _ => Err(Unusual),
        }
    }

    fn string(self) -> Read<&'a str> {
        str::from_utf8(self.len()?).map_err(|_| Unusual)
    }

    /// A `string` field's bytes, checked for UTF-8 unless `utf8` leaves that to the writer.
    #[inline]
    fn text(self, utf8: Utf8) -> Read<&'a [u8]> {
        let bytes = self.len()?;
        if utf8 == Utf8::Check && str::from_utf8(bytes).is_err() {
            return Err(Unusual);
        }
        Ok(bytes)
    }

    fn varint(self) -> Read<u64> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(Unusual),
        }
    }

    fn fixed64(self) -> Read<u64> {
        match self {
            Value::I64(v) => Ok(v),
            _ => Err(Unusual),
        }
    }

    fn fixed32(self) -> Read<u32> {
        match self {
            Value::I32(v) => Ok(v),
            _ => Err(Unusual),
        }
    }
}

/// A message's fields in wire order: (number, value).
#[derive(Debug, Clone)]
pub(super) struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    #[inline]
    fn field(&mut self) -> Read<(u32, Value<'a>)> {
        let key = varint(&mut self.buf)?;
        // prost: a key past 32 bits, field number 0 and wire types 3, 4, 6 and 7 (groups, which
        // prost only skips, and invalid ones) fail or are left to prost.
        let number = u32::try_from(key >> 3).map_err(|_| Unusual)?;
        if key > u64::from(u32::MAX) || number == 0 {
            return Err(Unusual);
        }
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut self.buf)?),
            1 => {
                let (bytes, rest) = self.buf.split_first_chunk::<8>().ok_or(Unusual)?;
                self.buf = rest;
                Value::I64(u64::from_le_bytes(*bytes))
            }
            2 => {
                let len = usize::try_from(varint(&mut self.buf)?).map_err(|_| Unusual)?;
                let (bytes, rest) = self.buf.split_at_checked(len).ok_or(Unusual)?;
                self.buf = rest;
                Value::Len(bytes)
            }
            5 => {
                let (bytes, rest) = self.buf.split_first_chunk::<4>().ok_or(Unusual)?;
                self.buf = rest;
                Value::I32(u32::from_le_bytes(*bytes))
            }
            _ => return Err(Unusual),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Read<(u32, Value<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.buf = &[];
        }
        Some(field)
    }
}

/// A varint as prost reads it: at most 10 bytes, the tenth at most 1.
#[inline]
fn varint(buf: &mut &[u8]) -> Read<u64> {
    // Keys and most lengths are one byte.
    if let Some((&byte, rest)) = buf.split_first()
        && byte < 0x80
    {
        *buf = rest;
        return Ok(u64::from(byte));
    }
    varint_long(buf)
}

fn varint_long(buf: &mut &[u8]) -> Read<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first().ok_or(Unusual)?;
        *buf = rest;
        if i == 9 && byte > 1 {
            return Err(Unusual);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(Unusual)
}

/// Entering a message at `level`.
fn enter(level: u32) -> Read<()> {
    if level > MAX_LEVEL { Err(Unusual) } else { Ok(()) }
}

/// Sets a singular message field: a second occurrence is [`Unusual`] (prost merges them).
fn once<'a>(slot: &mut Option<&'a [u8]>, value: Value<'a>) -> Read<()> {
    if slot.replace(value.len()?).is_some() { Err(Unusual) } else { Ok(()) }
}

/// The elements of repeated message field `number` of `message`, each checked to be
/// length-delimited (the message itself was read through before: other fields are valid).
pub(super) fn each<'a>(message: &'a [u8], number: u32) -> impl Iterator<Item = Read<&'a [u8]>> + 'a {
    Fields::new(message).filter_map(move |field| match field {
        Ok((n, value)) if n == number => Some(value.len()),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    })
}

/// A request's `resource_spans` (field 1), every other field skipped.
pub(super) fn request(bytes: &[u8]) -> impl Iterator<Item = Read<&[u8]>> + '_ {
    each(bytes, 1)
}

/// A `ResourceSpans` read through: its resource (checked whole), its `scope_spans` left in place.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResourceSpans<'a> {
    pub bytes: &'a [u8],
    /// The `Resource` message, if present.
    pub resource: Option<&'a [u8]>,
    /// Its `service.name`: the first attribute of that key, when its value is a non-empty string;
    /// else `unknown_service`, as OpenTelemetry defines.
    pub service: &'a str,
}

impl<'a> ResourceSpans<'a> {
    /// Level 1, with `resource_read` reading the `Resource` message through and finding its service name
    /// ([`read_resource`], or a cache of resources it read before).
    pub(super) fn read_with(
        bytes: &'a [u8],
        resource_read: impl FnOnce(&'a [u8]) -> Read<Option<&'a str>>,
    ) -> Read<Self> {
        let mut resource = None;
        for field in Fields::new(bytes) {
            match field? {
                (1, v) => once(&mut resource, v)?,
                (2, v) => drop(v.len()?),
                (3, v) => drop(v.string()?),
                _ => {}
            }
        }
        let service = resource.map(resource_read).transpose()?.flatten().unwrap_or("unknown_service");
        Ok(Self { bytes, resource, service })
    }

    /// The `scope_spans` elements, each to be read with [`ScopeSpans::read`].
    pub(super) fn scope_spans(&self) -> impl Iterator<Item = Read<&'a [u8]>> + 'a {
        each(self.bytes, 2)
    }

    /// The resource's attributes (read through by [`ResourceSpans::read_with`]).
    pub(super) fn attributes(&self) -> impl Iterator<Item = KeyValue<'a>> + 'a {
        each(self.resource.unwrap_or_default(), 1).map_while(|kv| KeyValue::read(kv.ok()?, 3, Utf8::Check).ok())
    }
}

/// A `Resource` at level 2 (attributes, dropped count, entity refs) read through in one pass; its
/// service name, if its first `service.name` attribute holds a non-empty string.
pub(super) fn read_resource(bytes: &[u8]) -> Read<Option<&str>> {
    // The first `service.name` attribute decides, whatever its value.
    let mut service: Option<Option<&str>> = None;
    for field in Fields::new(bytes) {
        match field? {
            (1, v) => {
                let kv = KeyValue::read(v.len()?, 3, Utf8::Check)?;
                if service.is_none() && kv.key == b"service.name" {
                    service = Some(match kv.value {
                        // Checked as read.
                        Some(AnyValue::String(s)) if !s.is_empty() => str::from_utf8(s).ok(),
                        _ => None,
                    });
                }
            }
            (2, v) => drop(v.varint()?),
            (3, v) => read_entity_ref(v.len()?)?,
            _ => {}
        }
    }
    Ok(service.flatten())
}

/// An `EntityRef` at level 3: four string fields, two of them repeated.
fn read_entity_ref(bytes: &[u8]) -> Read<()> {
    for field in Fields::new(bytes) {
        if let (1..=4, v) = field? {
            v.string()?;
        }
    }
    Ok(())
}

/// A `ScopeSpans` read through: its scope (checked whole), its spans left in place.
#[derive(Debug, Clone, Copy)]
pub(super) struct ScopeSpans<'a> {
    pub bytes: &'a [u8],
    pub scope: Option<Scope<'a>>,
}

/// An `InstrumentationScope`'s name and version (its attributes are checked, not written).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Scope<'a> {
    pub bytes: &'a [u8],
    pub name: &'a str,
    pub version: &'a str,
}

impl<'a> ScopeSpans<'a> {
    /// Level 2.
    pub(super) fn read(bytes: &'a [u8]) -> Read<Self> {
        let mut scope = None;
        for field in Fields::new(bytes) {
            match field? {
                (1, v) => once(&mut scope, v)?,
                (2, v) => drop(v.len()?),
                (3, v) => drop(v.string()?),
                _ => {}
            }
        }
        let scope = scope.map(Scope::read).transpose()?;
        Ok(Self { bytes, scope })
    }

    /// The `spans` elements, each to be read with [`Span::read`].
    pub(super) fn spans(&self) -> impl Iterator<Item = Read<&'a [u8]>> + 'a {
        each(self.bytes, 2)
    }
}

impl<'a> Scope<'a> {
    /// Level 3.
    fn read(bytes: &'a [u8]) -> Read<Self> {
        let mut scope = Scope { bytes, ..Scope::default() };
        for field in Fields::new(bytes) {
            match field? {
                (1, v) => scope.name = v.string()?,
                (2, v) => scope.version = v.string()?,
                (3, v) => drop(KeyValue::read(v.len()?, 4, Utf8::Check)?),
                (4, v) => drop(v.varint()?),
                _ => {}
            }
        }
        Ok(scope)
    }
}

/// A span's own fields; its attributes, events and links are read in place when written.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Span<'a> {
    pub bytes: &'a [u8],
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub parent_span_id: &'a [u8],
    pub flags: u32,
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status: Option<Status<'a>>,
    /// The part of `bytes` from the first attribute (9) to the end of the last; the same for
    /// events (11) and links (13). Each starts at a field and ends after one, so it reads as a
    /// message of its own: the later passes over a repeated field read only its part.
    attributes: &'a [u8],
    events: &'a [u8],
    links: &'a [u8],
}

/// Widens `part` (a range of `message`, empty before its first field) to end with `field`, a
/// field of `message` starting at `start` and ending at `end` (offsets).
fn cover<'a>(message: &'a [u8], part: &mut &'a [u8], start: usize, end: usize) {
    let from = if part.is_empty() { start } else { part.as_ptr() as usize - message.as_ptr() as usize };
    *part = message.get(from..end).unwrap_or_default();
}

/// A span's status.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Status<'a> {
    pub message: &'a str,
    pub code: i32,
}

/// An int32 or enum field as prost keeps it: the varint's low 32 bits.
#[allow(clippy::cast_possible_truncation)]
fn int32(v: Value<'_>) -> Read<i32> {
    v.varint().map(|v| v as i32)
}

impl<'a> Span<'a> {
    /// Level 3: the span's own fields. Its attributes (9), events (11) and links (13) are only
    /// checked to be length-delimited here; [`Span::attributes`], [`Span::events`] and
    /// [`Span::links`] read them.
    pub(super) fn read(bytes: &'a [u8]) -> Read<Self> {
        let mut span = Span { bytes, ..Span::default() };
        let mut status = None;
        let mut fields = Fields::new(bytes);
        loop {
            let start = bytes.len() - fields.buf.len();
            let Some(field) = fields.next() else { break };
            let end = bytes.len() - fields.buf.len();
            match field? {
                (9, v) => {
                    v.len()?;
                    cover(bytes, &mut span.attributes, start, end);
                }
                (11, v) => {
                    v.len()?;
                    cover(bytes, &mut span.events, start, end);
                }
                (13, v) => {
                    v.len()?;
                    cover(bytes, &mut span.links, start, end);
                }
                (1, v) => span.trace_id = v.len()?,
                (2, v) => span.span_id = v.len()?,
                (3, v) => span.trace_state = v.string()?,
                (4, v) => span.parent_span_id = v.len()?,
                (5, v) => span.name = v.string()?,
                (6, v) => span.kind = int32(v)?,
                (7, v) => span.start_time_unix_nano = v.fixed64()?,
                (8, v) => span.end_time_unix_nano = v.fixed64()?,
                (10 | 12 | 14, v) => drop(v.varint()?),
                (15, v) => once(&mut status, v)?,
                (16, v) => span.flags = v.fixed32()?,
                _ => {}
            }
        }
        if let Some(bytes) = status {
            let mut status = Status::default();
            for field in Fields::new(bytes) {
                match field? {
                    (2, v) => status.message = v.string()?,
                    (3, v) => status.code = int32(v)?,
                    _ => {}
                }
            }
            span.status = Some(status);
        }
        Ok(span)
    }

    /// The span's attributes, level 4.
    ///
    /// Their keys and string values are not checked for UTF-8 ([`Utf8::AsWritten`]): the caller
    /// writes every one of them whole with [`super::json::Writer::text`], which checks them.
    pub(super) fn attributes(&self) -> impl Iterator<Item = Read<KeyValue<'a>>> + 'a {
        each(self.attributes, 9).map(|kv| KeyValue::read(kv?, 4, Utf8::AsWritten))
    }

    /// The span's events, level 4.
    pub(super) fn events(&self) -> impl Iterator<Item = Read<Event<'a>>> + 'a {
        each(self.events, 11).map(|event| Event::read(event?))
    }

    /// The span's links, level 4.
    pub(super) fn links(&self) -> impl Iterator<Item = Read<Link<'a>>> + 'a {
        each(self.links, 13).map(|link| Link::read(link?))
    }
}

/// An event's time and name; its attributes are read in place when written.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Event<'a> {
    pub bytes: &'a [u8],
    pub time_unix_nano: u64,
    pub name: &'a str,
}

impl<'a> Event<'a> {
    fn read(bytes: &'a [u8]) -> Read<Self> {
        let mut event = Event { bytes, ..Event::default() };
        for field in Fields::new(bytes) {
            match field? {
                (1, v) => event.time_unix_nano = v.fixed64()?,
                (2, v) => event.name = v.string()?,
                (3, v) => drop(v.len()?),
                (4, v) => drop(v.varint()?),
                _ => {}
            }
        }
        Ok(event)
    }

    /// The event's attributes, level 5.
    ///
    /// Not checked for UTF-8, as [`Span::attributes`].
    pub(super) fn attributes(&self) -> impl Iterator<Item = Read<KeyValue<'a>>> + 'a {
        each(self.bytes, 3).map(|kv| KeyValue::read(kv?, 5, Utf8::AsWritten))
    }
}

/// A link's ids, and whether it came from an OpenTracing CHILD_OF reference (an attribute
/// `opentracing.ref_type` = `child_of`, as the OpenTelemetry translators of Jaeger and OpenTracing
/// spans set it); its trace state, other attributes and flags are checked, not written.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Link<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub child_of: bool,
}

impl<'a> Link<'a> {
    fn read(bytes: &'a [u8]) -> Read<Self> {
        let mut link = Link::default();
        for field in Fields::new(bytes) {
            match field? {
                (1, v) => link.trace_id = v.len()?,
                (2, v) => link.span_id = v.len()?,
                (3, v) => drop(v.string()?),
                (4, v) => {
                    let kv = KeyValue::read(v.len()?, 5, Utf8::Check)?;
                    if let (b"opentracing.ref_type", Some(AnyValue::String(b"child_of"))) = (kv.key, kv.value) {
                        link.child_of = true;
                    }
                }
                (5, v) => drop(v.varint()?),
                (6, v) => drop(v.fixed32()?),
                _ => {}
            }
        }
        Ok(link)
    }
}

/// An attribute: its key and value (`None` when the value field is absent). The key and a string
/// value are the bytes of protobuf `string` fields, valid UTF-8 unless read with
/// [`Utf8::AsWritten`].
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyValue<'a> {
    pub key: &'a [u8],
    pub value: Option<AnyValue<'a>>,
}

/// Whether [`KeyValue::read`] checks the UTF-8 of a key and of a string value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Utf8 {
    /// Checked as read: invalid UTF-8 is [`Unusual`].
    Check,
    /// Left to the writer, which checks while it escapes ([`super::json::Writer::text`]) and so
    /// skips the check for ASCII text, the usual case. Only for attributes every one of which is
    /// then written whole: the reader stays as strict as prost (a string nested in an array or a
    /// list is checked as read either way).
    AsWritten,
}

/// An attribute's value. Arrays and key-value lists keep the `AnyValue`'s bytes (checked whole):
/// they are written as prost's message in its OTLP/JSON form.
#[derive(Debug, Clone, Copy)]
pub(super) enum AnyValue<'a> {
    /// An `AnyValue` with no value set.
    Empty,
    /// A `string` field's bytes (see [`KeyValue`] for when they are checked).
    String(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    /// An array or a key-value list: the whole `AnyValue` message.
    Nested(&'a [u8]),
    /// A reference into a string table (field 8).
    StringIndex(i32),
}

impl<'a> KeyValue<'a> {
    /// A `KeyValue` at `level`.
    pub(super) fn read(bytes: &'a [u8], level: u32, utf8: Utf8) -> Read<Self> {
        enter(level)?;
        if let Some(read) = Self::usual(bytes, level, utf8) {
            return read;
        }
        let (mut key, mut value) = (&b""[..], None);
        for field in Fields::new(bytes) {
            match field? {
                // A key written twice: prost checks the first too, the writer sees only the last.
                (1, v) => {
                    if utf8 == Utf8::AsWritten && str::from_utf8(key).is_err() {
                        return Err(Unusual);
                    }
                    key = v.text(utf8)?;
                }
                (2, v) => once(&mut value, v)?,
                (3, v) => drop(v.varint()?),
                _ => {}
            }
        }
        let value = value.map(|any| AnyValue::read(any, level + 1, utf8)).transpose()?;
        Ok(Self { key, value })
    }
}

impl<'a> KeyValue<'a> {
    /// The layout SDKs write, read without the field loop: the key (1), then the value (2), each
    /// with a one-byte length, and nothing else. `None` for any other layout, read by the loop
    /// (which reads this one to the same key and value).
    #[inline]
    fn usual(bytes: &'a [u8], level: u32, utf8: Utf8) -> Option<Read<Self>> {
        let [0x0a, key_len, rest @ ..] = bytes else { return None };
        let (key, rest) = rest.split_at_checked(usize::from(*key_len)).filter(|_| *key_len < 0x80)?;
        let [0x12, value_len, value @ ..] = rest else { return None };
        if *value_len >= 0x80 || usize::from(*value_len) != value.len() {
            return None;
        }
        if utf8 == Utf8::Check && str::from_utf8(key).is_err() {
            return Some(Err(Unusual));
        }
        Some(AnyValue::read(value, level + 1, utf8).map(|value| Self { key, value: Some(value) }))
    }
}

impl<'a> AnyValue<'a> {
    /// An `AnyValue` at `level`; arrays and lists are read through to their deepest value.
    #[allow(clippy::cast_possible_wrap)]
    fn read(bytes: &'a [u8], level: u32, utf8: Utf8) -> Read<Self> {
        enter(level)?;
        // The usual values, one field with a one-byte length or varint, without the field loop
        // (which reads them to the same values).
        match bytes {
            [0x0a, len, text @ ..] if *len < 0x80 && usize::from(*len) == text.len() => {
                return Value::Len(text).text(utf8).map(AnyValue::String);
            }
            [0x10, v] if *v < 0x80 => return Ok(AnyValue::Bool(*v != 0)),
            [0x18, v] if *v < 0x80 => return Ok(AnyValue::Int(i64::from(*v))),
            [0x21, rest @ ..] if rest.len() == 8 => {
                return Ok(AnyValue::Double(f64::from_bits(u64::from_le_bytes(rest.try_into().unwrap_or_default()))));
            }
            _ => {}
        }
        let mut value = None;
        for field in Fields::new(bytes) {
            let (number, v) = field?;
            let read = match number {
                1 => AnyValue::String(v.text(utf8)?),
                2 => AnyValue::Bool(v.varint()? != 0),
                3 => AnyValue::Int(v.varint()? as i64),
                4 => AnyValue::Double(f64::from_bits(v.fixed64()?)),
                5 => {
                    read_array(v.len()?, level + 1)?;
                    AnyValue::Nested(bytes)
                }
                6 => {
                    read_list(v.len()?, level + 1)?;
                    AnyValue::Nested(bytes)
                }
                7 => AnyValue::Bytes(v.len()?),
                8 => AnyValue::StringIndex(int32(v)?),
                _ => continue,
            };
            // prost keeps the last of several (merging two arrays or two lists): left to it.
            if value.replace(read).is_some() {
                return Err(Unusual);
            }
        }
        Ok(value.unwrap_or(AnyValue::Empty))
    }
}

/// An `ArrayValue` at `level`.
fn read_array(bytes: &[u8], level: u32) -> Read<()> {
    enter(level)?;
    for field in Fields::new(bytes) {
        if let (1, v) = field? {
            AnyValue::read(v.len()?, level + 1, Utf8::Check)?;
        }
    }
    Ok(())
}

/// A `KeyValueList` at `level`.
fn read_list(bytes: &[u8], level: u32) -> Read<()> {
    enter(level)?;
    for field in Fields::new(bytes) {
        if let (1, v) = field? {
            KeyValue::read(v.len()?, level + 1, Utf8::Check)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{self as otlp, any_value::Value as V};
    use proptest::prelude::*;

    /// What prost makes of a `KeyValue`'s bytes, in the reader's terms: `None` if it refuses them.
    fn prost_reads(bytes: &[u8]) -> Option<(String, String)> {
        let kv = <otlp::KeyValue as prost::Message>::decode(bytes).ok()?;
        let value = match kv.value.and_then(|v| v.value) {
            None => "empty".into(),
            Some(V::StringValue(s)) => format!("s:{s}"),
            Some(V::BoolValue(b)) => format!("b:{b}"),
            Some(V::IntValue(i)) => format!("i:{i}"),
            Some(V::DoubleValue(d)) => format!("d:{}", d.to_bits()),
            Some(other) => format!("{other:?}"),
        };
        Some((kv.key, value))
    }

    /// The reader's `KeyValue`, in the same terms; `None` if it leaves the bytes to prost.
    fn reads(bytes: &[u8]) -> Option<(String, String)> {
        let kv = KeyValue::read(bytes, 4, Utf8::Check).ok()?;
        let value = match kv.value {
            None | Some(AnyValue::Empty) => "empty".into(),
            Some(AnyValue::String(s)) => format!("s:{}", str::from_utf8(s).expect("checked")),
            Some(AnyValue::Bool(b)) => format!("b:{b}"),
            Some(AnyValue::Int(i)) => format!("i:{i}"),
            Some(AnyValue::Double(d)) => format!("d:{}", d.to_bits()),
            Some(other) => format!("{other:?}"),
        };
        Some((str::from_utf8(kv.key).expect("checked").to_owned(), value))
    }

    fn field(number: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2];
        let mut len = payload.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn usual_and_unusual_layouts_read_as_prost_reads_them() {
        let string = |s: &[u8]| field(1, s);
        let long = "k".repeat(200);
        let cases: Vec<Vec<u8>> = vec![
            // The usual layout, each value kind.
            [field(1, b"http.method"), field(2, &string(b"GET"))].concat(),
            [field(1, b"retry"), field(2, &[0x10, 0x01])].concat(),
            [field(1, b"retry"), field(2, &[0x10, 0x00])].concat(),
            [field(1, b"code"), field(2, &[0x18, 0x7f])].concat(),
            [field(1, b"x"), field(2, &[0x21, 1, 2, 3, 4, 5, 6, 7, 8])].concat(),
            [field(1, b""), field(2, &string(b""))].concat(),
            [field(1, b"empty"), field(2, b"")].concat(),
            // Everything else goes the long way, to the same answer.
            [field(2, &string(b"GET")), field(1, b"http.method")].concat(),
            [field(1, b"a"), field(1, b"b"), field(2, &string(b"v"))].concat(),
            [field(1, long.as_bytes()), field(2, &string(long.as_bytes()))].concat(),
            [field(1, b"k"), field(2, &field(1, long.as_bytes()))].concat(),
            [field(1, b"k"), field(2, &[0x10, 0x82, 0x01])].concat(),
            [field(1, b"k"), field(2, &[0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])].concat(),
            [field(1, b"k"), field(2, &[0x0a, 0x01, b'a', 0x0a, 0x01, b'b'])].concat(),
            [field(1, b"k"), field(2, &string(b"v")), vec![0x18, 0x05]].concat(),
            [field(1, b"k"), field(2, &[0x21, 1, 2, 3])].concat(),
            // Refused by both.
            [field(1, b"\xff"), field(2, &string(b"v"))].concat(),
            [field(1, b"k"), field(2, &string(b"\xc3"))].concat(),
            [field(1, b"k"), vec![0x12, 0x05, 0x0a]].concat(),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            // What the reader takes, it reads as prost does; what it leaves goes to prost.
            let read = reads(bytes);
            if read.is_some() {
                assert_eq!(read, prost_reads(bytes), "{bytes:02x?}");
            }
            // Two values in one AnyValue (prost keeps the last) is left to prost, and what prost
            // refuses (the last four) is refused.
            assert_eq!(read.is_some(), i <= 12 || i == 14, "{bytes:02x?}");
        }
    }

    proptest! {
        #[test]
        fn a_key_value_in_either_field_order_reads_as_prost_reads_it(
            key in any::<Vec<u8>>(),
            text in prop::collection::vec(any::<u8>(), 0..200),
            kind in 0u8..4,
            number in any::<i64>(),
            swap in any::<bool>(),
        ) {
            let value = match kind {
                0 => field(1, &text),
                1 => vec![0x10, (number & 0x7f) as u8],
                2 => {
                    let mut v = vec![0x18];
                    let mut n = number as u64;
                    while n >= 0x80 {
                        v.push((n as u8) | 0x80);
                        n >>= 7;
                    }
                    v.push(n as u8);
                    v
                }
                _ => [vec![0x21], number.to_le_bytes().to_vec()].concat(),
            };
            let (k, v) = (field(1, &key), field(2, &value));
            let bytes = if swap { [v, k].concat() } else { [k, v].concat() };
            match reads(&bytes) {
                Some(read) => prop_assert_eq!(Some(read), prost_reads(&bytes)),
                None => prop_assert!(prost_reads(&bytes).is_none()),
            }
        }
    }
}
