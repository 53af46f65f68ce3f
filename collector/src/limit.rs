//! `limit`: the attribute limits users of OpenTelemetry SDKs and collectors know, applied to a decoded
//! request before the processors: attributes per span (and per event and link), attributes per
//! resource (and per scope), and the length of attribute keys and string or bytes values (also
//! inside arrays and maps).
//!
//! Called by [`crate::pipeline::Exporter`] for every export. Guarantees: with `truncate`, every span
//! is kept, extra attributes are dropped and added to `dropped_attributes_count`, and long values
//! are cut at a character boundary; with `reject`, a span over a limit (or every span of a resource
//! or scope over one) is removed and counted, and the rest of the request is kept.

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value},
};

use crate::config::{LimitAction, Limits};

/// The limits, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct AttributeLimits {
    per_span: usize,
    per_resource: usize,
    value_bytes: usize,
    action: LimitAction,
}

/// What the limits did to one request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Attributes dropped past a count limit (truncate).
    pub dropped: usize,
    /// Keys or values cut to the length limit (truncate).
    pub truncated: usize,
    /// Spans removed for being over a limit (reject).
    pub rejected_spans: usize,
}

impl AttributeLimits {
    pub fn new(limits: &Limits) -> Self {
        Self {
            per_span: limits.max_attributes_per_span,
            per_resource: limits.max_attributes_per_resource,
            value_bytes: limits.max_attribute_value_bytes.as_usize(),
            action: limits.attribute_limit_action,
        }
    }

    /// Most attributes on a span, an event or a link.
    pub(crate) fn per_span(&self) -> usize {
        self.per_span
    }

    /// Most attributes on a resource or a scope.
    pub(crate) fn per_resource(&self) -> usize {
        self.per_resource
    }

    /// Longest attribute key, string or bytes value (at any depth), in bytes.
    pub(crate) fn value_bytes(&self) -> usize {
        self.value_bytes
    }

    /// Applies the limits to `request` in place.
    pub fn apply(&self, request: &mut ExportTraceServiceRequest) -> Limited {
        let mut done = Limited::default();
        for rs in &mut request.resource_spans {
            let resource_ok = rs.resource.as_mut().is_none_or(|r| {
                self.fit(&mut r.attributes, &mut r.dropped_attributes_count, self.per_resource, &mut done)
            });
            for ss in &mut rs.scope_spans {
                let scope_ok = ss.scope.as_mut().is_none_or(|s| {
                    self.fit(&mut s.attributes, &mut s.dropped_attributes_count, self.per_resource, &mut done)
                });
                if !(resource_ok && scope_ok) {
                    done.rejected_spans += ss.spans.len();
                    ss.spans.clear();
                    continue;
                }
                ss.spans.retain_mut(|span| {
                    let mut ok =
                        self.fit(&mut span.attributes, &mut span.dropped_attributes_count, self.per_span, &mut done);
                    for event in &mut span.events {
                        ok &= self.fit(
                            &mut event.attributes,
                            &mut event.dropped_attributes_count,
                            self.per_span,
                            &mut done,
                        );
                    }
                    for link in &mut span.links {
                        ok &= self.fit(
                            &mut link.attributes,
                            &mut link.dropped_attributes_count,
                            self.per_span,
                            &mut done,
                        );
                    }
                    if !ok {
                        done.rejected_spans += 1;
                    }
                    ok
                });
            }
        }
        done
    }

    /// Brings one attribute list within `max` attributes and the length limit. With `reject`, changes
    /// nothing and says whether the list is within the limits.
    fn fit(&self, attributes: &mut Vec<KeyValue>, dropped: &mut u32, max: usize, done: &mut Limited) -> bool {
        match self.action {
            LimitAction::Reject => {
                attributes.len() <= max
                    && attributes.iter().all(|kv| {
                        kv.key.len() <= self.value_bytes && kv.value.as_ref().is_none_or(|v| self.value_fits(v))
                    })
            }
            LimitAction::Truncate => {
                if attributes.len() > max {
                    let extra = attributes.len() - max;
                    attributes.truncate(max);
                    *dropped = dropped.saturating_add(u32::try_from(extra).unwrap_or(u32::MAX));
                    done.dropped += extra;
                }
                for kv in attributes {
                    done.truncated += self.cut_key_value(kv);
                }
                true
            }
        }
    }

    fn value_fits(&self, value: &AnyValue) -> bool {
        match &value.value {
            Some(any_value::Value::StringValue(s)) => s.len() <= self.value_bytes,
            Some(any_value::Value::BytesValue(b)) => b.len() <= self.value_bytes,
            Some(any_value::Value::ArrayValue(a)) => a.values.iter().all(|v| self.value_fits(v)),
            Some(any_value::Value::KvlistValue(l)) => l
                .values
                .iter()
                .all(|kv| kv.key.len() <= self.value_bytes && kv.value.as_ref().is_none_or(|v| self.value_fits(v))),
            _ => true,
        }
    }

    /// Cuts a key and its value (recursively); returns how many strings were cut.
    fn cut_key_value(&self, kv: &mut KeyValue) -> usize {
        usize::from(cut_string(&mut kv.key, self.value_bytes)) + kv.value.as_mut().map_or(0, |v| self.cut_value(v))
    }

    fn cut_value(&self, value: &mut AnyValue) -> usize {
        match &mut value.value {
            Some(any_value::Value::StringValue(s)) => usize::from(cut_string(s, self.value_bytes)),
            Some(any_value::Value::BytesValue(b)) if b.len() > self.value_bytes => {
                b.truncate(self.value_bytes);
                1
            }
            Some(any_value::Value::ArrayValue(a)) => a.values.iter_mut().map(|v| self.cut_value(v)).sum(),
            Some(any_value::Value::KvlistValue(l)) => l.values.iter_mut().map(|kv| self.cut_key_value(kv)).sum(),
            _ => 0,
        }
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary; whether it was cut.
fn cut_string(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::{ArrayValue, InstrumentationScope},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event},
    };

    use spanline_common::ByteSize;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            ..Default::default()
        }
    }

    fn limits(action: LimitAction) -> AttributeLimits {
        AttributeLimits::new(&Limits {
            max_attributes_per_span: 3,
            max_attributes_per_resource: 2,
            max_attribute_value_bytes: ByteSize(8),
            attribute_limit_action: action,
            ..Limits::default()
        })
    }

    fn request() -> ExportTraceServiceRequest {
        let span = |n: u8, attributes: Vec<KeyValue>| Span {
            trace_id: vec![n; 16],
            span_id: vec![n; 8],
            attributes,
            ..Default::default()
        };
        let nested = KeyValue {
            key: "list".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue { value: Some(any_value::Value::StringValue("ééééééé".into())) }],
                })),
            }),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource { attributes: vec![kv("svc", "a")], ..Default::default() }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope::default()),
                        spans: vec![
                            span(1, vec![kv("a", "1")]),
                            span(2, (0..5).map(|i| kv(&format!("k{i}"), "v")).collect()),
                            span(3, vec![nested]),
                            Span {
                                events: vec![Event { attributes: vec![kv("e", "0123456789")], ..Default::default() }],
                                ..span(4, vec![])
                            },
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("a", "1"), kv("b", "2"), kv("c", "3")],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(5, vec![]), span(6, vec![])],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn truncate_keeps_every_span_within_the_limits() {
        let mut r = request();
        let done = limits(LimitAction::Truncate).apply(&mut r);
        assert_eq!(done, Limited { dropped: 2 + 1, truncated: 2, rejected_spans: 0 });
        let spans = &r.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 4);
        assert_eq!(spans[1].attributes.len(), 3);
        assert_eq!(spans[1].dropped_attributes_count, 2);
        let any_value::Value::ArrayValue(a) = r.resource_spans[0].scope_spans[0].spans[2].attributes[0]
            .value
            .as_ref()
            .and_then(|v| v.value.as_ref())
            .expect("value")
        else {
            panic!("array kept")
        };
        assert_eq!(a.values[0].value, Some(any_value::Value::StringValue("éééé".into())), "cut at a char boundary");
        assert_eq!(r.resource_spans[1].resource.as_ref().map(|r| r.dropped_attributes_count), Some(1));
    }

    #[test]
    fn reject_removes_only_the_spans_over_a_limit() {
        let mut r = request();
        let done = limits(LimitAction::Reject).apply(&mut r);
        // span 2 (5 attributes), 3 (long nested value), 4 (long event value), 5 and 6 (resource).
        assert_eq!(done, Limited { dropped: 0, truncated: 0, rejected_spans: 5 });
        let kept: Vec<u8> = r
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| s.trace_id[0])
            .collect();
        assert_eq!(kept, vec![1]);
    }
}
