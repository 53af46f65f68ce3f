//! `receive`: OTLP over gRPC (`TraceService/Export`) and HTTP (`POST /v1/traces`, protobuf or JSON,
//! optionally gzip) → [`Exporter::export`]. Turns each outcome into the protocol's answer:
//! success with `partial_success` when spans were rejected, and [`Error`]'s gRPC/HTTP status
//! otherwise (with `Retry-After` when the client should retry).

use std::{io::Read, sync::Arc};

use tokio::sync::Semaphore;

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse, trace_service_server::TraceService,
};
use prost::Message;

use crate::{
    error::{Error, RETRY_AFTER},
    metrics::{Metrics, ProtocolLabels, RequestLabels},
    pipeline::Exporter,
};

/// The OTLP gRPC service.
#[derive(Debug, Clone)]
pub struct GrpcReceiver {
    exporter: Exporter,
}

impl GrpcReceiver {
    pub fn new(exporter: Exporter) -> Self {
        Self { exporter }
    }
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        let metrics = self.exporter.metrics();
        metrics.received_bytes.get_or_create(&ProtocolLabels { protocol: "grpc" }).inc_by(request.encoded_len() as u64);
        let result = self.exporter.export(request).await;
        record_outcome(&self.exporter, "grpc", &result);
        result.map(tonic::Response::new).map_err(|error| {
            let status = error.grpc_status();
            if error.is_retryable() { with_retry_after(status) } else { status }
        })
    }
}

/// tonic answers a request body that is not valid protobuf with INTERNAL (gRPC's own convention);
/// OTLP clients must see INVALID_ARGUMENT for a malformed request, so the status is rewritten on the
/// trailers-only response tonic sends for it. Other INTERNAL answers are left alone.
pub fn malformed_is_invalid_argument<B>(mut response: axum::http::Response<B>) -> axum::http::Response<B> {
    let headers = response.headers_mut();
    let decode_error = headers.get("grpc-status").is_some_and(|v| v == "13")
        && headers.get("grpc-message").is_some_and(|m| m.as_bytes().starts_with(b"failed%20to%20decode"));
    if decode_error {
        headers.insert("grpc-status", HeaderValue::from_static("3"));
    }
    response
}

/// The refusal of a request shed because every `limits.max_concurrent_requests` slot is busy.
fn shed() -> Error {
    Error::Overloaded("limits.max_concurrent_requests exports already in progress".into())
}

/// Adds the `retry-after` hint for clients that read it; OTLP clients back off on UNAVAILABLE anyway.
pub fn with_retry_after(mut status: tonic::Status) -> tonic::Status {
    if let Ok(v) = RETRY_AFTER.as_secs().to_string().parse() {
        status.metadata_mut().insert("retry-after", v);
    }
    status
}

/// A gRPC export refused by load shedding (every `limits.max_concurrent_requests` slot busy) is
/// answered UNAVAILABLE with `retry-after`, which OTLP clients retry, like every other overload, and
/// counted as an `overloaded` request.
pub fn overloaded_is_unavailable(
    metrics: &Metrics,
    result: Result<axum::http::Response<tonic::body::Body>, tower::BoxError>,
) -> Result<axum::http::Response<tonic::body::Body>, tower::BoxError> {
    match result {
        Err(error) if error.is::<tower::load_shed::error::Overloaded>() => {
            let error = shed();
            metrics.requests.get_or_create(&RequestLabels { protocol: "grpc", outcome: error.outcome() }).inc();
            Ok(with_retry_after(error.grpc_status()).into_http())
        }
        other => other,
    }
}

fn record_outcome(exporter: &Exporter, protocol: &'static str, result: &Result<ExportTraceServiceResponse, Error>) {
    let outcome = match result {
        Ok(response) if response.partial_success.as_ref().is_some_and(|p| p.rejected_spans > 0) => "partial_success",
        Ok(_) => "success",
        Err(error) => {
            tracing::debug!(protocol, %error, "export failed");
            error.outcome()
        }
    };
    exporter.metrics().requests.get_or_create(&RequestLabels { protocol, outcome }).inc();
}

/// The OTLP HTTP routes. At most `slots` requests are served at once; beyond them a request is
/// answered 503 with `Retry-After` before its body is read, so bodies in memory stay bounded by
/// `limits.max_concurrent_requests` × `limits.max_request_bytes` whatever the number of clients.
pub fn http_router(exporter: Exporter, max_request_bytes: usize, slots: Arc<Semaphore>) -> Router {
    let metrics = exporter.metrics().clone();
    let shed = tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(move |_: tower::BoxError| {
            let metrics = metrics.clone();
            async move {
                let error = shed();
                metrics.requests.get_or_create(&RequestLabels { protocol: "http", outcome: error.outcome() }).inc();
                error_response(Format::Protobuf, &error)
            }
        }))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(slots));
    Router::new()
        .route("/v1/traces", post(http_traces))
        // The compressed body is capped too; the decompressed size is checked in `decode_http`.
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .layer(shed)
        .with_state(exporter)
}

/// The body format of an OTLP HTTP request, which is also the answer's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP HTTP error.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

async fn http_traces(State(exporter): State<Exporter>, headers: HeaderMap, body: Bytes) -> Response {
    let format = match headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("") {
        ct if ct.starts_with("application/x-protobuf") || ct.starts_with("application/protobuf") => Format::Protobuf,
        ct if ct.starts_with("application/json") => Format::Json,
        other => return http_error(&exporter, Format::Json, &Error::UnsupportedMediaType(other.to_owned())),
    };
    let request = match decode_http(&headers, &body, format, exporter.max_request_bytes()) {
        Ok(request) => request,
        Err(error) => return http_error(&exporter, format, &error),
    };
    let result = exporter.export(request).await;
    record_outcome(&exporter, "http", &result);
    match result {
        Ok(response) => {
            let body = match format {
                Format::Protobuf => response.encode_to_vec(),
                Format::Json => serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec()),
            };
            (StatusCode::OK, [(header::CONTENT_TYPE, format.content_type())], body).into_response()
        }
        Err(error) => error_response(format, &error),
    }
}

fn http_error(exporter: &Exporter, format: Format, error: &Error) -> Response {
    exporter.metrics().requests.get_or_create(&RequestLabels { protocol: "http", outcome: error.outcome() }).inc();
    tracing::debug!(%error, "otlp http request refused");
    error_response(format, error)
}

fn error_response(format: Format, error: &Error) -> Response {
    let status = RpcStatus { code: error.grpc_status().code() as i32, message: error.to_string() };
    let body = match format {
        Format::Protobuf => status.encode_to_vec(),
        Format::Json => serde_json::json!({"code": status.code, "message": status.message}).to_string().into_bytes(),
    };
    let mut response = (error.http_status(), [(header::CONTENT_TYPE, format.content_type())], body).into_response();
    if error.is_retryable() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER.as_secs()));
    }
    response
}

/// Decompresses (never past `limit`) and decodes an OTLP HTTP body.
fn decode_http(
    headers: &HeaderMap,
    body: &Bytes,
    format: Format,
    limit: usize,
) -> Result<ExportTraceServiceRequest, Error> {
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let inflated;
    let raw: &[u8] = match encoding.trim() {
        "" | "identity" => body,
        "gzip" => {
            inflated = inflate(flate2::read::GzDecoder::new(&body[..]), body.len(), limit, "gzip")?;
            &inflated
        }
        "zstd" => {
            let decoder = zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| Error::Malformed(format!("invalid zstd body: {e}")))?;
            inflated = inflate(decoder, body.len(), limit, "zstd")?;
            &inflated
        }
        other => return Err(Error::UnsupportedEncoding(other.to_owned())),
    };
    if raw.len() > limit {
        return Err(Error::TooLarge { limit });
    }
    match format {
        Format::Protobuf => {
            ExportTraceServiceRequest::decode(raw).map_err(|e| Error::Malformed(format!("invalid OTLP protobuf: {e}")))
        }
        Format::Json => decode_json(raw),
    }
}

/// Inflates at most `limit + 1` bytes, so a decompression bomb costs at most the limit in memory.
fn inflate(decoder: impl Read, compressed: usize, limit: usize, what: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(compressed.saturating_mul(4).min(limit));
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::Malformed(format!("invalid {what} body: {e}")))?;
    if out.len() > limit {
        return Err(Error::TooLarge { limit });
    }
    Ok(out)
}

/// OTLP/JSON: camelCase keys, hex trace and span ids.
pub fn decode_json(raw: &[u8]) -> Result<ExportTraceServiceRequest, Error> {
    spanline_common::otlp::decode_json(raw).map_err(Error::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 8 << 20]).expect("compress");
        let bomb = encoder.finish().expect("finish");
        assert!(bomb.len() < 64 * 1024);
        let err =
            inflate(flate2::read::GzDecoder::new(&bomb[..]), bomb.len(), 1 << 20, "gzip").expect_err("over the limit");
        assert!(matches!(err, Error::TooLarge { limit } if limit == 1 << 20));
        assert_eq!(
            inflate(flate2::read::GzDecoder::new(&bomb[..]), bomb.len(), 16 << 20, "gzip").expect("fits").len(),
            8 << 20
        );
        let zbomb = zstd::encode_all(&vec![0u8; 8 << 20][..], 3).expect("zstd");
        let decoder = zstd::stream::read::Decoder::new(&zbomb[..]).expect("decoder");
        assert!(matches!(inflate(decoder, zbomb.len(), 1 << 20, "zstd"), Err(Error::TooLarge { .. })));
    }
}
