//! A test-only Thrift writer (BINARY and COMPACT protocols, from thrift's protocol specifications)
//! and Jaeger fixtures built with it: the bytes Jaeger clients send, for the collector's Jaeger
//! translation tests (`collector/src/jaeger.rs`, `collector/tests/jaeger_thrift.rs`).
//!
//! Values are written as given, so a test can also write what no client would: unknown fields of
//! every type, fields of the wrong type, deep nesting, sizes that lie.

/// The wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Binary,
    Compact,
}

/// A Thrift type, for the element types of collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    I8,
    I16,
    I32,
    I64,
    Double,
    Binary,
    Struct,
    Map,
    Set,
    List,
    Uuid,
}

impl Kind {
    fn binary(self) -> u8 {
        match self {
            Kind::Bool => 2,
            Kind::I8 => 3,
            Kind::Double => 4,
            Kind::I16 => 6,
            Kind::I32 => 8,
            Kind::I64 => 10,
            Kind::Binary => 11,
            Kind::Struct => 12,
            Kind::Map => 13,
            Kind::Set => 14,
            Kind::List => 15,
            Kind::Uuid => 16,
        }
    }

    fn compact(self) -> u8 {
        match self {
            Kind::Bool => 2,
            Kind::I8 => 3,
            Kind::I16 => 4,
            Kind::I32 => 5,
            Kind::I64 => 6,
            Kind::Double => 7,
            Kind::Binary => 8,
            Kind::List => 9,
            Kind::Set => 10,
            Kind::Map => 11,
            Kind::Struct => 12,
            Kind::Uuid => 13,
        }
    }
}

/// A Thrift value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    Double(f64),
    Binary(Vec<u8>),
    /// Fields (id, value), written in the order given.
    Struct(Vec<(i16, Value)>),
    Map(Kind, Kind, Vec<(Value, Value)>),
    Set(Kind, Vec<Value>),
    List(Kind, Vec<Value>),
    Uuid([u8; 16]),
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Binary(s.as_bytes().to_vec())
    }

    pub fn kind(&self) -> Kind {
        match self {
            Value::Bool(_) => Kind::Bool,
            Value::I8(_) => Kind::I8,
            Value::I16(_) => Kind::I16,
            Value::I32(_) => Kind::I32,
            Value::I64(_) => Kind::I64,
            Value::Double(_) => Kind::Double,
            Value::Binary(_) => Kind::Binary,
            Value::Struct(_) => Kind::Struct,
            Value::Map(..) => Kind::Map,
            Value::Set(..) => Kind::Set,
            Value::List(..) => Kind::List,
            Value::Uuid(_) => Kind::Uuid,
        }
    }

    /// This value alone (a struct: its fields and stop byte), in `protocol`.
    pub fn encode(&self, protocol: Protocol) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, protocol, self);
        out
    }
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn write(out: &mut Vec<u8>, protocol: Protocol, value: &Value) {
    match (protocol, value) {
        (_, Value::Bool(b)) => out.push(u8::from(*b)),
        (_, Value::I8(n)) => out.push(*n as u8),
        (_, Value::Uuid(u)) => out.extend_from_slice(u),
        (Protocol::Binary, Value::I16(n)) => out.extend_from_slice(&n.to_be_bytes()),
        (Protocol::Binary, Value::I32(n)) => out.extend_from_slice(&n.to_be_bytes()),
        (Protocol::Binary, Value::I64(n)) => out.extend_from_slice(&n.to_be_bytes()),
        (Protocol::Binary, Value::Double(d)) => out.extend_from_slice(&d.to_be_bytes()),
        (Protocol::Binary, Value::Binary(b)) => {
            out.extend_from_slice(&(b.len() as i32).to_be_bytes());
            out.extend_from_slice(b);
        }
        (Protocol::Compact, Value::I16(n)) => varint(out, zigzag(i64::from(*n))),
        (Protocol::Compact, Value::I32(n)) => varint(out, zigzag(i64::from(*n))),
        (Protocol::Compact, Value::I64(n)) => varint(out, zigzag(*n)),
        (Protocol::Compact, Value::Double(d)) => out.extend_from_slice(&d.to_le_bytes()),
        (Protocol::Compact, Value::Binary(b)) => {
            varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        (_, Value::Struct(fields)) => {
            let mut last = 0i16;
            for (id, field) in fields {
                field_header(out, protocol, *id, field, &mut last);
                let is_compact_bool = protocol == Protocol::Compact && matches!(field, Value::Bool(_));
                if !is_compact_bool {
                    write(out, protocol, field);
                }
            }
            out.push(0);
        }
        (_, Value::List(kind, items) | Value::Set(kind, items)) => {
            list_header(out, protocol, *kind, items.len());
            for item in items {
                write(out, protocol, item);
            }
        }
        (Protocol::Binary, Value::Map(k, v, entries)) => {
            out.extend([k.binary(), v.binary()]);
            out.extend_from_slice(&(entries.len() as i32).to_be_bytes());
            for (key, value) in entries {
                write(out, protocol, key);
                write(out, protocol, value);
            }
        }
        (Protocol::Compact, Value::Map(k, v, entries)) => {
            varint(out, entries.len() as u64);
            if !entries.is_empty() {
                out.push(k.compact() << 4 | v.compact());
            }
            for (key, value) in entries {
                write(out, protocol, key);
                write(out, protocol, value);
            }
        }
    }
}

fn field_header(out: &mut Vec<u8>, protocol: Protocol, id: i16, value: &Value, last: &mut i16) {
    match protocol {
        Protocol::Binary => {
            out.push(value.kind().binary());
            out.extend_from_slice(&id.to_be_bytes());
        }
        Protocol::Compact => {
            let code = match value {
                Value::Bool(true) => 1,
                Value::Bool(false) => 2,
                other => other.kind().compact(),
            };
            let delta = i32::from(id) - i32::from(*last);
            if (1..=15).contains(&delta) {
                out.push((delta as u8) << 4 | code);
            } else {
                out.push(code);
                varint(out, zigzag(i64::from(id)));
            }
            *last = id;
        }
    }
}

/// A list header declaring `size` elements of `kind` (whatever follows).
pub fn list_header(out: &mut Vec<u8>, protocol: Protocol, kind: Kind, size: usize) {
    match protocol {
        Protocol::Binary => {
            out.push(kind.binary());
            out.extend_from_slice(&(size as i32).to_be_bytes());
        }
        Protocol::Compact if size < 15 => out.push((size as u8) << 4 | kind.compact()),
        Protocol::Compact => {
            out.push(0xf0 | kind.compact());
            varint(out, size as u64);
        }
    }
}

/// A message: header (`name`, type `kind`: 1 CALL, 4 ONEWAY; strict binary encoding) and the
/// arguments struct.
pub fn message(protocol: Protocol, name: &str, kind: u8, seq: i32, args: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match protocol {
        Protocol::Binary => {
            out.extend_from_slice(&(0x8001_0000u32 | u32::from(kind)).to_be_bytes());
            write(&mut out, protocol, &Value::str(name));
            out.extend_from_slice(&seq.to_be_bytes());
        }
        Protocol::Compact => {
            out.extend([0x82, kind << 5 | 1]);
            varint(&mut out, zigzag(i64::from(seq)) & 0xffff_ffff);
            write(&mut out, protocol, &Value::str(name));
        }
    }
    write(&mut out, protocol, args);
    out
}

/// `Agent.emitBatch(batch)` as a ONEWAY message, as Jaeger clients send it over UDP.
pub fn emit_batch(protocol: Protocol, batch: &Batch) -> Vec<u8> {
    message(protocol, "emitBatch", 4, 1, &Value::Struct(vec![(1, batch.value())]))
}

// ---------------------------------------------------------------------------------------------
// Jaeger structs (field ids from jaeger-idl's `jaeger.thrift`).

/// A `Tag`'s typed value (`vType` and the field that holds it).
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    Str(String),
    Double(f64),
    Bool(bool),
    Long(i64),
    Binary(Vec<u8>),
}

/// `Tag { 1: key, 2: vType, 3: vStr, 4: vDouble, 5: vBool, 6: vLong, 7: vBinary }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub key: String,
    pub value: TagValue,
}

impl Tag {
    pub fn str(key: &str, value: &str) -> Tag {
        Tag { key: key.into(), value: TagValue::Str(value.into()) }
    }

    pub fn new(key: &str, value: TagValue) -> Tag {
        Tag { key: key.into(), value }
    }

    pub fn value(&self) -> Value {
        let (v_type, id, v) = match &self.value {
            TagValue::Str(s) => (0, 3, Value::str(s)),
            TagValue::Double(d) => (1, 4, Value::Double(*d)),
            TagValue::Bool(b) => (2, 5, Value::Bool(*b)),
            TagValue::Long(n) => (3, 6, Value::I64(*n)),
            TagValue::Binary(b) => (4, 7, Value::Binary(b.clone())),
        };
        Value::Struct(vec![(1, Value::str(&self.key)), (2, Value::I32(v_type)), (id, v)])
    }
}

fn tags(tags: &[Tag]) -> Value {
    Value::List(Kind::Struct, tags.iter().map(Tag::value).collect())
}

/// `Log { 1: timestamp, 2: fields }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub timestamp: i64,
    pub fields: Vec<Tag>,
}

/// `SpanRef { 1: refType (0 CHILD_OF, 1 FOLLOWS_FROM), 2: traceIdLow, 3: traceIdHigh, 4: spanId }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRef {
    pub ref_type: i32,
    pub trace_id_low: i64,
    pub trace_id_high: i64,
    pub span_id: i64,
}

/// `Span`; `extra` fields are appended as given (unknown ids, wrong types).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Span {
    pub trace_id_low: i64,
    pub trace_id_high: i64,
    pub span_id: i64,
    pub parent_span_id: i64,
    pub operation_name: String,
    pub references: Option<Vec<SpanRef>>,
    pub flags: i32,
    pub start_time: i64,
    pub duration: i64,
    pub tags: Option<Vec<Tag>>,
    pub logs: Option<Vec<Log>>,
    pub extra: Vec<(i16, Value)>,
}

impl Span {
    /// A sampled span of a 64-bit trace `trace`, id `id`, starting 2024-01-01T00:00:00Z, lasting 1.5 ms.
    pub fn new(trace: i64, id: i64, name: &str) -> Span {
        Span {
            trace_id_low: trace,
            span_id: id,
            operation_name: name.into(),
            flags: 1,
            start_time: 1_704_067_200_000_000,
            duration: 1500,
            ..Span::default()
        }
    }

    pub fn value(&self) -> Value {
        let mut fields = vec![
            (1, Value::I64(self.trace_id_low)),
            (2, Value::I64(self.trace_id_high)),
            (3, Value::I64(self.span_id)),
            (4, Value::I64(self.parent_span_id)),
            (5, Value::str(&self.operation_name)),
        ];
        if let Some(refs) = &self.references {
            let refs = refs
                .iter()
                .map(|r| {
                    Value::Struct(vec![
                        (1, Value::I32(r.ref_type)),
                        (2, Value::I64(r.trace_id_low)),
                        (3, Value::I64(r.trace_id_high)),
                        (4, Value::I64(r.span_id)),
                    ])
                })
                .collect();
            fields.push((6, Value::List(Kind::Struct, refs)));
        }
        fields.extend([(7, Value::I32(self.flags)), (8, Value::I64(self.start_time)), (9, Value::I64(self.duration))]);
        if let Some(t) = &self.tags {
            fields.push((10, tags(t)));
        }
        if let Some(logs) = &self.logs {
            let logs =
                logs.iter().map(|l| Value::Struct(vec![(1, Value::I64(l.timestamp)), (2, tags(&l.fields))])).collect();
            fields.push((11, Value::List(Kind::Struct, logs)));
        }
        fields.extend(self.extra.iter().cloned());
        Value::Struct(fields)
    }
}

/// `Batch { 1: Process { 1: serviceName, 2: tags }, 2: list<Span> }`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub service_name: String,
    pub process_tags: Option<Vec<Tag>>,
    pub spans: Vec<Span>,
}

impl Batch {
    pub fn new(service: &str, spans: Vec<Span>) -> Batch {
        Batch { service_name: service.into(), process_tags: None, spans }
    }

    pub fn process(&self) -> Value {
        let mut fields = vec![(1, Value::str(&self.service_name))];
        if let Some(t) = &self.process_tags {
            fields.push((2, tags(t)));
        }
        Value::Struct(fields)
    }

    pub fn value(&self) -> Value {
        Value::Struct(vec![
            (1, self.process()),
            (2, Value::List(Kind::Struct, self.spans.iter().map(Span::value).collect())),
        ])
    }

    /// The batch alone, as the body of `POST /api/traces` (binary protocol).
    pub fn binary(&self) -> Vec<u8> {
        self.value().encode(Protocol::Binary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's examples: 50399 as a varint, and a compact field header's short and long forms.
    #[test]
    fn writes_as_the_specifications_say() {
        let mut out = Vec::new();
        varint(&mut out, 50399);
        assert_eq!(out, [0xdf, 0x89, 0x03]);
        let s = Value::Struct(vec![(1, Value::I32(-1)), (2, Value::Bool(true)), (40, Value::I8(7))]);
        assert_eq!(s.encode(Protocol::Compact), [0x15, 0x01, 0x11, 0x03, 0x50, 0x07, 0x00]);
        assert_eq!(s.encode(Protocol::Binary), [8, 0, 1, 0xff, 0xff, 0xff, 0xff, 2, 0, 2, 1, 3, 0, 40, 7, 0]);
    }
}
