//! OTLP encodings shared by the collector (HTTP bodies) and the ingester (topic records).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// Decodes OTLP/JSON: camelCase keys, hex trace and span ids.
pub fn decode_json(raw: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    let request: ExportTraceServiceRequest =
        serde_json::from_slice(raw).map_err(|e| format!("invalid OTLP JSON: {e}"))?;
    // Unknown keys are ignored by the decoder, so snake_case `resource_spans` silently decodes to an
    // empty request; say so instead of accepting nothing.
    if request.resource_spans.is_empty() && raw.windows(16).any(|w| w == b"\"resource_spans\"") {
        return Err("OTLP JSON uses camelCase keys: found \"resource_spans\", expected \"resourceSpans\"".into());
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_with_hex_ids_decodes() {
        let json = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
            "scopeSpans":[{"scope":{"name":"lib"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "name":"op","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000"}]}]}]}"#;
        let request = decode_json(json).expect("decodes");
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id[0], 0x5b);
        assert_eq!(span.span_id.len(), 8);
        assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 1_000_000_000);
    }

    #[test]
    fn snake_case_json_is_rejected() {
        let err = decode_json(br#"{"resource_spans":[{"scope_spans":[]}]}"#).expect_err("rejected");
        assert!(err.contains("camelCase"));
        assert!(decode_json(b"{not json").is_err());
    }
}
