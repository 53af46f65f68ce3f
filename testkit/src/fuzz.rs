//! Inputs and the property runner for the decoders' fuzz tests (`common/tests/fuzz.rs`,
//! `ingester/tests/fuzz.rs`; docs/development.md, "Fuzzing").
//!
//! Random bytes rarely get past a message's first field, so most inputs are structure-aware: OTLP
//! requests with the shapes that cost the most per input byte (deep `AnyValue` nesting, thousands of
//! empty attributes or spans, one large resource shared by many spans, odd id lengths, extreme
//! times), encoded by the caller (prost or serde_json) and then mutated (truncated, bytes flipped,
//! lengths inflated, tokens inserted, ranges deleted or repeated).
//!
//! The runner checks one property per case: no panic, `Ok` or an error that names the decoder, and
//! at most [`Bound`] bytes held at once. The peak is measured by the test binary (it owns the counting
//! allocator, which this crate must not install for every test that links it).

use std::{
    cell::RefCell,
    fmt,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value},
    resource::v1::Resource,
    trace::v1::{
        ResourceSpans, ScopeSpans, Span, Status,
        span::{Event, Link},
    },
};
use proptest::{
    collection::vec,
    prelude::*,
    sample::Index,
    test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner},
};

/// How many bytes a decoder may hold at once for one input of `len` bytes: `per_byte × len + fixed`.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub per_byte: u64,
    pub fixed: u64,
}

impl Bound {
    pub fn of(self, len: usize) -> u64 {
        self.per_byte.saturating_mul(len as u64).saturating_add(self.fixed)
    }

    /// The same bound with its per-byte factor divided by `by` (to show that the bound bites).
    pub fn lowered(self, by: u64) -> Self {
        Self { per_byte: self.per_byte / by, fixed: self.fixed }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} × len + {} KiB", self.per_byte, self.fixed / 1024)
    }
}

/// How one decode ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Err(String),
    Panic(String),
}

/// What decoding one input did.
#[derive(Debug, Clone)]
pub struct Run {
    /// The input's length in bytes: what the bound is a function of.
    pub len: usize,
    /// The most bytes held at once while decoding (the decoded value included).
    pub peak: u64,
    pub outcome: Outcome,
}

/// An error longer than this is not a clear error: it would be echoing the input into logs and dead
/// letters. (prost names every enclosing message and field of a failure, about 2 KiB at its
/// recursion limit of 100 nested messages, whatever the input's size.)
pub const MAX_ERROR_LEN: usize = 4096;

/// One decoder under test: its name, its allocation bound and the prefixes its errors start with.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub bound: Bound,
    pub errors: &'static [&'static str],
}

impl Target {
    /// Why `run` breaks the property, if it does.
    pub fn violation(&self, run: &Run) -> Option<String> {
        let Run { len, peak, outcome } = run;
        let limit = self.bound.of(*len);
        if *peak > limit {
            return Some(format!(
                "{}: held {peak} bytes for a {len}-byte input, over {} = {limit}",
                self.name, self.bound
            ));
        }
        match outcome {
            Outcome::Ok => None,
            Outcome::Panic(message) => Some(format!("{}: panicked: {message}", self.name)),
            Outcome::Err(error) if !self.errors.iter().any(|p| error.starts_with(p)) => {
                Some(format!("{}: error names no decoder (expected one of {:?}): {error}", self.name, self.errors))
            }
            Outcome::Err(error) if error.len() > MAX_ERROR_LEN => {
                Some(format!("{}: {}-byte error: {}…", self.name, error.len(), truncated(error, 200)))
            }
            Outcome::Err(_) => None,
        }
    }
}

/// The tally of one property's run, printed as one line (`--nocapture` shows it).
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Inputs decoded: the cases, plus the shrinking steps after a failure.
    pub inputs: u64,
    pub ok: u64,
    pub errors: u64,
    /// The largest input seen, and the most bytes held for one input.
    pub max_len: usize,
    pub max_peak: u64,
    /// The per-byte factor the worst input needed with the target's fixed part, and that input's
    /// length and peak.
    pub needed: f64,
    pub needed_len: usize,
    pub needed_peak: u64,
    pub elapsed: Duration,
}

impl Summary {
    fn add(&mut self, run: &Run, fixed: u64) {
        self.inputs += 1;
        match run.outcome {
            Outcome::Ok => self.ok += 1,
            _ => self.errors += 1,
        }
        self.max_len = self.max_len.max(run.len);
        self.max_peak = self.max_peak.max(run.peak);
        // Bytes and lengths are far below 2^52: the ratio is exact enough.
        #[allow(clippy::cast_precision_loss)]
        let needed = run.peak.saturating_sub(fixed) as f64 / run.len.max(1) as f64;
        if needed > self.needed {
            (self.needed, self.needed_len, self.needed_peak) = (needed, run.len, run.peak);
        }
    }
}

/// Runs `decode` over `PROPTEST_CASES` (default 256) inputs from `inputs` and fails with the smallest
/// input proptest shrinks a violation to. Failing seeds are kept in a `.proptest-regressions` file
/// beside `source_file` and replayed first by later runs.
pub fn check<S>(source_file: &'static str, target: Target, inputs: S, decode: impl Fn(&S::Value) -> Run) -> Summary
where
    S: Strategy,
    S::Value: fmt::Debug,
{
    match run(Some(source_file), target, inputs, decode) {
        Ok(summary) => summary,
        Err(failure) => panic!("{failure}"),
    }
}

/// [`check`] without persisting failures, returning the failure instead of panicking.
pub fn run<S>(
    source_file: Option<&'static str>,
    target: Target,
    inputs: S,
    decode: impl Fn(&S::Value) -> Run,
) -> Result<Summary, String>
where
    S: Strategy,
    S::Value: fmt::Debug,
{
    let config = Config {
        source_file,
        // `tests/fuzz.rs` → `tests/fuzz.proptest-regressions`.
        failure_persistence: source_file.map(|_| {
            Box::new(FileFailurePersistence::WithSource("proptest-regressions"))
                as Box<dyn proptest::test_runner::FailurePersistence>
        }),
        // Inputs are large: shrinking a few hundred steps finds a readable case without running long.
        max_shrink_iters: 512,
        ..Config::default()
    };
    let summary = RefCell::new(Summary::default());
    let started = Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&inputs, |input| {
        let run = decode(&input);
        summary.borrow_mut().add(&run, target.bound.fixed);
        match target.violation(&run) {
            Some(why) => Err(TestCaseError::fail(why)),
            None => Ok(()),
        }
    });
    let mut summary = summary.into_inner();
    summary.elapsed = started.elapsed();
    eprintln!(
        "fuzz {}: {} inputs ({} ok, {} errors; largest {} B, most held {} B) in {:.1} s; bound {}; worst input needed {:.1} × len ({} B held for {} B)",
        target.name,
        summary.inputs,
        summary.ok,
        summary.errors,
        summary.max_len,
        summary.max_peak,
        summary.elapsed.as_secs_f64(),
        target.bound,
        summary.needed,
        summary.needed_peak,
        summary.needed_len,
    );
    match result {
        Ok(()) => Ok(summary),
        Err(TestError::Abort(why)) => Err(format!("{}: aborted: {why}", target.name)),
        Err(TestError::Fail(why, input)) => {
            let input = format!("{input:?}");
            Err(format!("{why}\nminimal input ({} chars of Debug): {}", input.len(), truncated(&input, 4096)))
        }
    }
}

fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Decodes one `len`-byte input under `peak` (the test binary's counting allocator: it runs the
/// closure and returns the most bytes the thread held at once meanwhile), catching a panic.
pub fn measured<T>(peak: fn(&mut dyn FnMut()) -> u64, len: usize, decode: impl FnOnce() -> Result<T, String>) -> Run {
    let mut decode = Some(decode);
    let mut outcome = Outcome::Ok;
    let peak = peak(&mut || {
        if let Some(decode) = decode.take() {
            outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)) {
                // The decoded value is dropped here, inside the measurement: it counts.
                Ok(Ok(_decoded)) => Outcome::Ok,
                Ok(Err(error)) => Outcome::Err(error),
                Err(payload) => Outcome::Panic(panic_message(&*payload)),
            };
        }
    });
    Run { len, peak, outcome }
}

/// A panic's message.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

// ---------------------------------------------------------------------------------------------
// Byte mutations.

/// One change to an encoded input.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Cut the input at a position.
    Truncate(Index),
    /// XOR one byte with a non-zero mask.
    Flip(Index, u8),
    /// Overwrite from a position with a huge varint (a length or count of about 2^32 or 2^63).
    Inflate(Index, bool),
    /// Insert a token at a position (a caller-chosen list: structural bytes of the encoding).
    Insert(Index, &'static [u8]),
    /// Remove a range.
    Delete(Index, Index),
    /// Repeat a range (up to 64 bytes) `n` times in place.
    Repeat(Index, Index, u8),
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        let at = |i: &Index| if len == 0 { 0 } else { i.index(len + 1) };
        match self {
            Mutation::Truncate(i) => bytes.truncate(at(i)),
            Mutation::Flip(i, mask) if len > 0 => bytes[i.index(len)] ^= *mask,
            Mutation::Flip(..) => {}
            Mutation::Inflate(i, long) => {
                let varint: &[u8] = if *long {
                    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]
                } else {
                    &[0xff, 0xff, 0xff, 0xff, 0x0f]
                };
                let start = at(i);
                let end = (start + varint.len()).min(len);
                bytes.splice(start..end, varint.iter().copied());
            }
            Mutation::Insert(i, token) => {
                let start = at(i);
                bytes.splice(start..start, token.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let start = at(i);
                let end = (start + n.index(65)).min(len);
                bytes.drain(start..end);
            }
            Mutation::Repeat(i, n, times) => {
                let start = at(i);
                let end = (start + 1 + n.index(64)).min(len);
                let chunk = bytes[start..end].to_vec();
                let repeated: Vec<u8> = chunk.iter().copied().cycle().take(chunk.len() * usize::from(*times)).collect();
                bytes.splice(end..end, repeated);
            }
        }
    }
}

/// Protobuf tokens worth inserting: field headers of every wire type (groups included, which
/// proto3 no longer has), a length-delimited field declaring 4 GiB, a 10-byte varint, an empty
/// sub-message.
pub const PROTO_TOKENS: &[&[u8]] = &[
    &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0x12, 0x00],
    &[0x0a, 0x00],
    &[0x0b],
    &[0x0c],
    &[0x13, 0x14],
    &[0x09, 0, 0, 0, 0, 0, 0, 0, 0],
    &[0x0d, 0, 0, 0, 0],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
    &[0x0a, 0x02, 0x0a, 0x00],
    &[0xf8, 0xff, 0xff, 0xff, 0x0f],
];

/// JSON tokens worth inserting: nesting openers, `AnyValue` nesting, bad escapes and surrogates,
/// huge numbers, odd hex ids, snake_case keys.
pub const JSON_TOKENS: &[&[u8]] = &[
    b"[",
    b"{",
    b"]}",
    b"\"",
    b",",
    b"{\"arrayValue\":{\"values\":[",
    b"{\"kvlistValue\":{\"values\":[{\"key\":\"k\",\"value\":",
    b"\"\\ud800\"",
    b"\"\\u0000\"",
    b"1e999999",
    b"-0",
    b"18446744073709551616",
    b"\"traceId\":\"zz\",",
    b"\"spanId\":\"abc\",",
    b"\"resource_spans\":[],",
    b"{},{},{},{},{},{},{},{}",
    b"null",
];

/// `bytes` with up to four mutations, the inserted tokens drawn from `tokens`.
pub fn mutated(
    bytes: impl Strategy<Value = Vec<u8>>,
    tokens: &'static [&'static [u8]],
) -> impl Strategy<Value = Vec<u8>> {
    let mutation = prop_oneof![
        2 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), 1..=u8::MAX).prop_map(|(i, m)| Mutation::Flip(i, m)),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(i, l)| Mutation::Inflate(i, l)),
        2 => (any::<Index>(), proptest::sample::select(tokens)).prop_map(|(i, t)| Mutation::Insert(i, t)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1..=64u8).prop_map(|(i, n, t)| Mutation::Repeat(i, n, t)),
    ];
    (bytes, vec(mutation, 0..=4)).prop_map(|(mut bytes, mutations)| {
        for m in &mutations {
            m.apply(&mut bytes);
        }
        bytes
    })
}

/// `request` as OTLP/JSON without its default fields, as exporters write it: serde writes every
/// field, which makes an empty span 200 bytes instead of `{}` (the shape that costs the most per
/// byte). Only object members are dropped, never array elements.
pub fn compact_json(request: &ExportTraceServiceRequest) -> serde_json::Value {
    fn prune(value: &mut serde_json::Value) -> bool {
        use serde_json::Value as Json;
        match value {
            Json::Object(map) => {
                map.retain(|_, member| !prune(member));
                map.is_empty()
            }
            Json::Array(items) => {
                items.iter_mut().for_each(|item| {
                    prune(item);
                });
                items.is_empty()
            }
            Json::Null => true,
            Json::Bool(b) => !*b,
            Json::Number(n) => n.as_f64() == Some(0.0),
            Json::String(s) => s.is_empty() || s == "0",
        }
    }
    let mut value = serde_json::to_value(request).unwrap();
    prune(&mut value);
    value
}

/// OTLP/JSON of `request`: serde's (every field) or [`compact_json`].
pub fn otlp_json(
    request: impl Strategy<Value = ExportTraceServiceRequest>,
) -> impl Strategy<Value = serde_json::Value> {
    (request, any::<bool>()).prop_map(|(request, compact)| {
        if compact { compact_json(&request) } else { serde_json::to_value(&request).unwrap() }
    })
}

/// Values that replace a JSON node of another type. serde quotes a wrongly typed string whole in its
/// error, which the decoders clip (`decode_json_errors_do_not_echo_the_input`, common/tests/fuzz.rs).
fn replacement() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value as Json, json};
    prop_oneof![
        Just(json!("")),
        (0usize..2048).prop_map(|n| json!("x".repeat(n))),
        Just(json!("zz")),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1e308)),
        Just(json!(u64::MAX)),
        Just(json!(true)),
        Just(Json::Null),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{}, {}, {}])),
        Just(json!({"arrayValue": {"values": [{}]}})),
    ]
}

/// Every node of `value` as a JSON pointer.
fn pointers(value: &serde_json::Value, path: String, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{path}/{i}"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                pointers(item, format!("{path}/{}", key.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        _ => {}
    }
    out.push(path);
}

/// `json` with one node (any depth, the root included) replaced by a value of another type: a
/// string where a number or an object is expected, an array for a string, `null`, ...; valid JSON
/// that gets past the first field.
pub fn json_confused(json: impl Strategy<Value = serde_json::Value>) -> impl Strategy<Value = Vec<u8>> {
    (json, any::<Index>(), replacement()).prop_map(|(mut value, at, with)| {
        let mut all = Vec::new();
        pointers(&value, String::new(), &mut all);
        let pointer = &all[at.index(all.len())];
        if let Some(node) = value.pointer_mut(pointer) {
            *node = with;
        }
        serde_json::to_vec(&value).unwrap()
    })
}

/// Arbitrary bytes, up to `max` long.
pub fn raw_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

// ---------------------------------------------------------------------------------------------
// Structure-aware OTLP requests.

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        4 => "[a-z.]{1,12}",
        2 => any::<String>(),
        1 => (0usize..2048).prop_map(|n| "x".repeat(n)),
    ]
}

/// Ids: mostly the right length, sometimes any length (OTLP says invalid, decoders must cope).
fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => vec(any::<u8>(), len), 1 => vec(any::<u8>(), 0..=40), 1 => Just(Vec::new())]
}

/// Nanoseconds since the epoch: around now, or anything (0 and `u64::MAX` included).
fn time() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 1_700_000_000_000_000_000u64..1_900_000_000_000_000_000,
        1 => any::<u64>(),
        1 => Just(0u64),
        1 => Just(u64::MAX),
    ]
}

fn leaf_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        4 => text().prop_map(|s| Some(Value::StringValue(s))),
        1 => any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        1 => any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
        1 => prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)]
            .prop_map(|d| Some(Value::DoubleValue(d))),
        1 => vec(any::<u8>(), 0..64).prop_map(|b| Some(Value::BytesValue(b))),
        1 => any::<i32>().prop_map(|i| Some(Value::StringValueStrindex(i))),
    ]
}

/// An attribute value, arrays and key-value lists nested a few levels.
fn any_value() -> impl Strategy<Value = Option<Value>> {
    leaf_value().prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(|values| Some(Value::ArrayValue(ArrayValue {
                values: values.into_iter().map(|value| AnyValue { value }).collect(),
            }))),
            vec((text(), inner), 0..8).prop_map(|pairs| Some(Value::KvlistValue(KeyValueList {
                values: pairs
                    .into_iter()
                    .map(|(key, value)| KeyValue { key, value: Some(AnyValue { value }), ..Default::default() })
                    .collect(),
            }))),
        ]
    })
}

/// A value nested `depth` levels deep, alternating arrays and key-value lists: past the decoders'
/// recursion limits (prost: 100 messages, serde_json: 128 containers) when deep enough.
pub fn nested(depth: usize) -> AnyValue {
    let mut value = AnyValue { value: Some(Value::StringValue("leaf".into())) };
    for level in 0..depth {
        value = AnyValue {
            value: Some(if level % 2 == 0 {
                Value::ArrayValue(ArrayValue { values: vec![value] })
            } else {
                Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue { key: "k".into(), value: Some(value), ..Default::default() }],
                })
            }),
        };
    }
    value
}

fn key_value() -> impl Strategy<Value = KeyValue> {
    (text(), any_value(), prop_oneof![9 => Just(0), 1 => any::<i32>()]).prop_map(|(key, value, key_strindex)| {
        KeyValue { key, value: value.map(|value| AnyValue { value: Some(value) }), key_strindex }
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    prop_oneof![
        8 => vec(key_value(), 0..6),
        // Many empty attributes: two bytes each in protobuf, a whole tag in a document.
        1 => (0usize..3000).prop_map(|n| vec![KeyValue::default(); n]),
        1 => (0usize..160).prop_map(|depth| vec![KeyValue { key: "deep".into(), value: Some(nested(depth)), ..Default::default() }]),
    ]
}

fn span() -> impl Strategy<Value = Span> {
    let ids = (id(16), id(8), prop_oneof![Just(Vec::new()), id(8)], text());
    let times = (time(), time(), prop_oneof![4 => 0..=5i32, 1 => any::<i32>()], any::<u32>());
    let events = vec(
        (time(), text(), attributes()).prop_map(|(time_unix_nano, name, attributes)| Event {
            time_unix_nano,
            name,
            attributes,
            ..Default::default()
        }),
        0..4,
    );
    let links = vec(
        (id(16), id(8), text(), attributes()).prop_map(|(trace_id, span_id, trace_state, attributes)| Link {
            trace_id,
            span_id,
            trace_state,
            attributes,
            ..Default::default()
        }),
        0..4,
    );
    let status = proptest::option::of(
        (text(), prop_oneof![0..=2i32, any::<i32>()]).prop_map(|(message, code)| Status { message, code }),
    );
    (ids, times, attributes(), events, links, status).prop_map(
        |((trace_id, span_id, parent_span_id, name), (start, end, kind, flags), attributes, events, links, status)| {
            Span {
                trace_id,
                span_id,
                parent_span_id,
                name,
                kind,
                flags,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                events,
                links,
                status,
                ..Default::default()
            }
        },
    )
}

fn resource() -> impl Strategy<Value = Option<Resource>> {
    proptest::option::of((attributes(), text()).prop_map(|(mut attributes, service)| {
        attributes.push(KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue { value: Some(Value::StringValue(service)) }),
            ..Default::default()
        });
        Resource { attributes, ..Default::default() }
    }))
}

fn scope_spans() -> impl Strategy<Value = ScopeSpans> {
    let scope = proptest::option::of((text(), text(), attributes()).prop_map(|(name, version, attributes)| {
        InstrumentationScope { name, version, attributes, ..Default::default() }
    }));
    (scope, vec(span(), 0..4), text()).prop_map(|(scope, spans, schema_url)| ScopeSpans { scope, spans, schema_url })
}

fn one_scope(resource: Option<Resource>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource,
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// `n` spans with nothing set but their start time (so they map to documents), under one resource
/// whose non-name attributes are `resource_attributes` attributes of `value_len` bytes each: the shape
/// where one record costs the most documents per byte.
pub fn fan_out(resource_attributes: usize, value_len: usize, n: usize) -> ExportTraceServiceRequest {
    let mut attributes: Vec<KeyValue> = (0..resource_attributes)
        .map(|i| KeyValue {
            key: format!("r{i}"),
            value: Some(AnyValue { value: Some(Value::StringValue("v".repeat(value_len))) }),
            ..Default::default()
        })
        .collect();
    attributes.push(KeyValue {
        key: "service.name".into(),
        value: Some(AnyValue { value: Some(Value::StringValue("svc".into())) }),
        ..Default::default()
    });
    // Ids of OTLP's lengths, so each span is mapped to a document (the ingester refuses others).
    let spans = (0..n as u64)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: i.to_be_bytes().to_vec(),
            start_time_unix_nano: 1_800_000_000_000_000_000,
            ..Default::default()
        })
        .collect();
    one_scope(Some(Resource { attributes, ..Default::default() }), spans)
}

/// Requests of every shape the decoders and the mapping must survive: ordinary ones with odd
/// fields, and the pathological ones (thousands of empty spans, resources or attributes, values
/// nested past the recursion limits, one resource shared by many spans).
pub fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    prop_oneof![
        8 => vec((resource(), vec(scope_spans(), 0..3), text()), 0..3).prop_map(|rs| ExportTraceServiceRequest {
            resource_spans: rs
                .into_iter()
                .map(|(resource, scope_spans, schema_url)| ResourceSpans { resource, scope_spans, schema_url })
                .collect(),
        }),
        1 => (0usize..4000).prop_map(|n| one_scope(None, vec![Span::default(); n])),
        1 => (0usize..4000).prop_map(|n| ExportTraceServiceRequest { resource_spans: vec![ResourceSpans::default(); n] }),
        1 => (0usize..4000).prop_map(|n| ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans::default(); n], ..Default::default() }],
        }),
        1 => (0usize..160).prop_map(|depth| one_scope(None, vec![Span {
            attributes: vec![KeyValue { key: "deep".into(), value: Some(nested(depth)), ..Default::default() }],
            ..Default::default()
        }])),
        1 => (0usize..16, 0usize..4096, 0usize..2000).prop_map(|(a, l, n)| fan_out(a, l, n)),
    ]
}
