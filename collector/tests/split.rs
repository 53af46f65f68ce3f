//! The byte path (`split`) against the decode path (prost decode, limits, processors, encode) on
//! arbitrary, generated and mutated bodies. Properties: the byte path never takes a body prost
//! refuses (so every refusal is the decode path's, with prost's error); whatever it takes, it turns
//! into exactly the decode path's records (key, spans and bytes, which also means the records
//! decode to the same messages), rejections and sampling counts. And on generated requests, as
//! prost encodes them and within the limits, it takes them (it does not fall back to look right).
//! `PROPTEST_CASES` sets the cases per property.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use proptest::prelude::*;
use prost::Message;
use spanline_collector::{
    config::{LimitAction, Limits},
    limit::{AttributeLimits, Limited},
    process::{Processors, ProcessorsConfig},
    split::{self, Fallback},
};
use spanline_common::ByteSize;
use spanline_testkit::fuzz::{self, PROTO_TOKENS};

/// The settings a case runs under.
#[derive(Debug, Clone)]
struct Settings {
    limits: Limits,
    sampling_ratio: f64,
    max_message_bytes: usize,
}

fn settings() -> impl Strategy<Value = Settings> {
    let limits = prop_oneof![
        3 => Just(Limits::default()),
        1 => (0usize..6, 0usize..4, 0usize..300, any::<bool>()).prop_map(|(span, resource, bytes, reject)| Limits {
            max_attributes_per_span: span,
            max_attributes_per_resource: resource,
            max_attribute_value_bytes: ByteSize(bytes as u64),
            attribute_limit_action: if reject { LimitAction::Reject } else { LimitAction::Truncate },
            ..Limits::default()
        }),
    ];
    let ratio = prop_oneof![3 => Just(1.0), 1 => 0.0f64..=1.0];
    let max = prop_oneof![3 => Just(900 * 1024usize), 1 => 64usize..4096];
    (limits, ratio, max).prop_map(|(limits, sampling_ratio, max_message_bytes)| Settings {
        limits,
        sampling_ratio,
        max_message_bytes,
    })
}

/// Runs both paths on `body`; the byte path's fallback reason when it did not take it.
fn agree(body: &[u8], settings: &Settings) -> Result<Option<Fallback>, TestCaseError> {
    let limits = AttributeLimits::new(&settings.limits);
    let processors =
        Processors::new(&ProcessorsConfig { sampling_ratio: settings.sampling_ratio, ..ProcessorsConfig::default() })
            .map_err(TestCaseError::fail)?;
    let max = settings.max_message_bytes;
    let decoded = split::decode_path(body, &limits, &processors, max);
    let (split, sampled_out) = match split::split(body, &limits, &processors, max) {
        Ok(split) => split,
        Err(reason) => return Ok(Some(reason)),
    };
    let (expected, expected_sampled_out) = match decoded {
        Ok(expected) => expected,
        Err(error) => return Err(TestCaseError::fail(format!("the byte path took a body prost refuses: {error}"))),
    };
    prop_assert_eq!(split.accepted_spans, expected.accepted_spans);
    prop_assert_eq!(&split.rejected, &expected.rejected);
    prop_assert_eq!(sampled_out, expected_sampled_out);
    prop_assert_eq!(split.records.len(), expected.records.len());
    for (a, b) in split.records.iter().zip(&expected.records) {
        prop_assert_eq!(a.key_str(), b.key_str());
        prop_assert_eq!(a.spans, b.spans);
        // The same bytes, so the same messages once decoded (compared as bytes: a NaN attribute is
        // not equal to itself decoded).
        prop_assert_eq!(&a.payload, &b.payload, "record bytes differ");
        prop_assert!(ExportTraceServiceRequest::decode(&a.payload[..]).is_ok());
    }
    Ok(None)
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_bodies_are_split_as_the_decode_path_would(
        body in fuzz::mutated(fuzz::request().prop_map(|r| r.encode_to_vec()), PROTO_TOKENS),
        settings in settings(),
    ) {
        agree(&body, &settings)?;
    }

    #[test]
    fn arbitrary_bytes_are_split_as_the_decode_path_would(body in fuzz::raw_bytes(512), settings in settings()) {
        agree(&body, &settings)?;
    }

    /// As prost encodes them and within the default limits, generated requests take the byte path
    /// unless prost could not decode them either (values nested past its limit).
    #[test]
    fn canonical_requests_take_the_byte_path(request in fuzz::request(), max in prop_oneof![Just(900 * 1024usize), 64usize..4096]) {
        let body = request.encode_to_vec();
        let settings = Settings { limits: Limits::default(), sampling_ratio: 1.0, max_message_bytes: max };
        let fallback = agree(&body, &settings)?;
        let deep = ExportTraceServiceRequest::decode(body.as_slice()).is_err() || nested_deep(&request);
        // Only a request the limits would change may leave the byte path for them.
        let mut limited = request.clone();
        let over = AttributeLimits::new(&Limits::default()).apply(&mut limited) != Limited::default();
        prop_assert!(fallback.is_none() || deep || (over && fallback == Some(Fallback::AttributeLimit)),
            "a canonical request fell back: {fallback:?}");
    }
}

/// Whether `request` nests values past what the byte path takes: the deepest message, counted from
/// the request (0) as the byte path counts (`ResourceSpans` 1, resource and `ScopeSpans` 2, scope
/// and span 3, event and link 4).
fn nested_deep(request: &ExportTraceServiceRequest) -> bool {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    fn value(v: &AnyValue, level: usize) -> usize {
        match &v.value {
            Some(Value::ArrayValue(a)) => a.values.iter().map(|v| value(v, level + 2)).fold(level + 1, usize::max),
            Some(Value::KvlistValue(l)) => {
                l.values.iter().map(|kv| key_value(kv, level + 2)).fold(level + 1, usize::max)
            }
            _ => level,
        }
    }
    fn key_value(kv: &KeyValue, level: usize) -> usize {
        kv.value.as_ref().map_or(level, |v| value(v, level + 1))
    }
    let deepest =
        |attributes: &[KeyValue], level: usize| attributes.iter().map(|kv| key_value(kv, level)).max().unwrap_or(0);
    let mut max = 0;
    for rs in &request.resource_spans {
        max = max.max(rs.resource.as_ref().map_or(0, |r| deepest(&r.attributes, 3)));
        for ss in &rs.scope_spans {
            max = max.max(ss.scope.as_ref().map_or(0, |s| deepest(&s.attributes, 4)));
            for span in &ss.spans {
                max = max.max(deepest(&span.attributes, 4));
                max = max.max(span.events.iter().map(|e| deepest(&e.attributes, 5)).max().unwrap_or(0));
                max = max.max(span.links.iter().map(|l| deepest(&l.attributes, 5)).max().unwrap_or(0));
            }
        }
    }
    max > split::MAX_DEPTH
}
