//! `receive`: OTLP over gRPC (`TraceService/Export`) and HTTP (`POST /v1/traces`, protobuf or JSON,
//! optionally gzip or zstd) → [`Exporter::export`]: protobuf bodies as their (decompressed) bytes,
//! which the exporter splits or decodes, JSON bodies decoded here ([`crate::decode`]). Turns each
//! outcome into the
//! protocol's answer: success with `partial_success` when spans were rejected, and [`Error`]'s
//! gRPC/HTTP status otherwise (with `Retry-After` when the client should retry).
//!
//! Guarantees, whatever clients send:
//! - request bodies are charged to the memory budget as their bytes arrive ([`ChargedBody`]), so
//!   bodies being read hold at most `limits.max_inflight_bytes` together, and each is cut at
//!   `limits.max_request_bytes`;
//! - a request must arrive whole within `limits.read_timeout` of its headers (HTTP/1 headers too),
//!   so a client that trickles bytes loses its request and holds no export slot: the
//!   `limits.max_concurrent_requests` slot is taken only once the body is in;
//! - decompression, decoding and splitting are charged before they allocate (see [`crate::decode`]
//!   and [`crate::split`]); a body is not copied on its way to the exporter (gRPC: split off tonic's
//!   buffer; HTTP: the one chunk as received, or the chunks joined once, or the inflated buffer).

use std::{
    convert::Infallible,
    future::Future as _,
    io::Read,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::Body as AxumBody,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame, SizeHint};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::{
    codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings},
    server::{Grpc, NamedService, UnaryService},
};

use crate::{
    budget::{Budget, Charge},
    decode,
    error::{Error, RETRY_AFTER},
    metrics::{Metrics, ProtocolLabels, RequestLabels, SpanLabels},
    pipeline::{Exporter, Request as ExportRequest},
    split::Fallback,
};

/// The gRPC path of OTLP trace export.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A request body charged to the memory budget as its bytes arrive, cut at a byte limit, and failed
/// when it has not arrived whole by a deadline. The charge is released when the body is dropped.
pub struct ChargedBody<B> {
    inner: B,
    charge: Charge,
    limit: usize,
    received: usize,
    /// Bytes allowed past `limit` (gRPC's five-byte message prefix).
    slack: usize,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<B> ChargedBody<B> {
    pub fn new(inner: B, budget: &Budget, limit: usize, slack: usize, timeout: Duration) -> Self {
        Self {
            inner,
            charge: budget.start(),
            limit,
            received: 0,
            slack,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<B> HttpBody for ChargedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<tower::BoxError>,
{
    type Data = Bytes;
    type Error = tower::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(Error::ReadTimeout(this.timeout).grpc_status()))));
                }
                return Poll::Pending;
            }
        };
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            this.received += data.map_or(0, Buf::remaining);
            if this.received > this.limit + this.slack {
                return Poll::Ready(Some(Err(Box::new(Error::TooLarge { limit: this.limit }.grpc_status()))));
            }
            // The charge covers what arrived.
            let more = this.received.saturating_sub(this.charge.bytes());
            if more > 0
                && let Err(error) = this.charge.grow(more, "the request body")
            {
                return Poll::Ready(Some(Err(Box::new(status(&error)))));
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The five-byte gRPC message prefix, allowed on top of the message limit.
const GRPC_PREFIX: usize = 5;

/// The gRPC status for `error`, with `retry-after` when the client should retry.
fn status(error: &Error) -> tonic::Status {
    let status = error.grpc_status();
    if error.is_retryable() { with_retry_after(status) } else { status }
}

/// Adds the `retry-after` hint for clients that read it; OTLP clients back off on UNAVAILABLE anyway.
pub fn with_retry_after(mut status: tonic::Status) -> tonic::Status {
    if let Ok(v) = RETRY_AFTER.as_secs().to_string().parse() {
        status.metadata_mut().insert("retry-after", v);
    }
    status
}

/// A request body with its charge on the memory budget.
pub struct Admitted {
    request: ExportRequest,
    charge: Charge,
}

/// TraceService/Export's codec: responses are encoded by prost; a request is taken as its bytes,
/// after tonic has decompressed it, and charged; [`Exporter::export`] splits or decodes it.
#[derive(Clone)]
struct ExportCodec {
    exporter: Exporter,
}

struct ExportDecoder {
    exporter: Exporter,
}

impl Codec for ExportCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Admitted;
    type Encoder = tonic_prost::ProstEncoder<ExportTraceServiceResponse>;
    type Decoder = ExportDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(tonic::codec::BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ExportDecoder { exporter: self.exporter.clone() }
    }
}

impl Decoder for ExportDecoder {
    type Item = Admitted;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Admitted>, tonic::Status> {
        let len = src.remaining();
        // The message is split off tonic's buffer, not copied (a `DecodeBuf` over a `BytesMut`).
        let body = src.copy_to_bytes(len);
        self.exporter.metrics().received_bytes.get_or_create(&ProtocolLabels { protocol: "grpc" }).inc_by(len as u64);
        // Charged here and held by the export; tonic drops the compressed body, and its own charge,
        // before the export runs.
        let mut charge = self.exporter.budget().start();
        match charge.grow(len, "the decompressed request") {
            Ok(()) => Ok(Some(Admitted { request: ExportRequest::Protobuf(body), charge })),
            Err(error) => {
                refused(self.exporter.metrics(), "grpc", &error);
                Err(status(&error))
            }
        }
    }
}

/// The OTLP gRPC trace service.
#[derive(Clone)]
pub struct GrpcService {
    exporter: Exporter,
    max_request_bytes: usize,
}

impl GrpcService {
    pub fn new(exporter: Exporter) -> Self {
        let max_request_bytes = exporter.max_request_bytes();
        Self { exporter, max_request_bytes }
    }
}

impl NamedService for GrpcService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> tower::Service<axum::http::Request<B>> for GrpcService
where
    B: HttpBody + Send + 'static,
    B::Error: Into<tower::BoxError> + Send,
{
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let exporter = self.exporter.clone();
        let limit = self.max_request_bytes;
        Box::pin(async move {
            // Before anything else, the body above all: an unauthenticated client costs no reading.
            if let Err(error) = exporter.authenticate(request.headers()) {
                refused(exporter.metrics(), "grpc", &error);
                return Ok(status(&error).into_http());
            }
            if request.uri().path() != EXPORT_PATH {
                return Ok(tonic::Status::unimplemented("only TraceService/Export is served").into_http());
            }
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            accept.enable(CompressionEncoding::Zstd);
            let mut send = EnabledCompressionEncodings::default();
            send.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(ExportCodec { exporter: exporter.clone() })
                .apply_compression_config(accept, send)
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(ExportMethod { exporter }, request).await)
        })
    }
}

/// One gRPC export, once its body is in.
struct ExportMethod {
    exporter: Exporter,
}

impl UnaryService<Admitted> for ExportMethod {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<'static, Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Admitted>) -> Self::Future {
        let exporter = self.exporter.clone();
        Box::pin(async move {
            let Admitted { request, charge } = request.into_inner();
            let result = match exporter.admit() {
                Ok(_slot) => exporter.export(request, charge).await,
                Err(error) => Err(error),
            };
            record_outcome(exporter.metrics(), "grpc", &result);
            result.map(tonic::Response::new).map_err(|error| status(&error))
        })
    }
}

/// tonic refuses a message whose frame announces more than the size limit with OUT_OF_RANGE, which
/// OTLP clients retry; like every other over-size request it is RESOURCE_EXHAUSTED, not retryable.
/// The status is in the headers (trailers-only answer) or in the trailers.
pub fn oversized_is_resource_exhausted(
    mut response: axum::http::Response<tonic::body::Body>,
) -> axum::http::Response<tonic::body::Body> {
    rewrite_oversized(response.headers_mut());
    response.map(|body| tonic::body::Body::new(OversizedTrailers(body)))
}

fn rewrite_oversized(headers: &mut HeaderMap) {
    let oversized = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers.get("grpc-message").is_some_and(|m| {
            let m = m.as_bytes();
            [&b"decoded%20message%20length%20too%20large"[..], b"decoded message length too large"]
                .iter()
                .any(|needle| m.windows(needle.len()).any(|w| w == *needle))
        });
    if oversized {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
    }
}

/// A gRPC answer body whose trailers go through [`rewrite_oversized`].
struct OversizedTrailers(tonic::body::Body);

impl HttpBody for OversizedTrailers {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx).map(|frame| {
            frame.map(|f| {
                f.map(|frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        rewrite_oversized(&mut trailers);
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// Wraps every gRPC request body in a [`ChargedBody`] (tonic reads it before decoding).
pub fn charge_grpc_body(
    exporter: &Exporter,
    request: axum::http::Request<tonic::body::Body>,
) -> axum::http::Request<tonic::body::Body> {
    let budget = exporter.budget().clone();
    let (limit, timeout) = (exporter.max_request_bytes(), exporter.read_timeout());
    request.map(|body| tonic::body::Body::new(ChargedBody::new(body, &budget, limit, GRPC_PREFIX, timeout)))
}

fn refused(metrics: &Metrics, protocol: &'static str, error: &Error) {
    tracing::debug!(protocol, %error, "export refused");
    metrics.requests.get_or_create(&RequestLabels { protocol, outcome: error.outcome() }).inc();
}

fn record_outcome(metrics: &Metrics, protocol: &'static str, result: &Result<ExportTraceServiceResponse, Error>) {
    let outcome = match result {
        Ok(response) if response.partial_success.as_ref().is_some_and(|p| p.rejected_spans > 0) => "partial_success",
        Ok(_) => "success",
        Err(error) => {
            tracing::debug!(protocol, %error, "export failed");
            error.outcome()
        }
    };
    metrics.requests.get_or_create(&RequestLabels { protocol, outcome }).inc();
}

/// The OTLP HTTP routes.
pub fn http_router(exporter: Exporter) -> Router {
    Router::new().route("/v1/traces", post(http_traces)).with_state(exporter)
}

/// The Zipkin v2 routes (`POST /api/v2/spans`, JSON or protobuf), on `receivers.zipkin_listen`.
pub fn zipkin_router(exporter: Exporter) -> Router {
    Router::new().route("/api/v2/spans", post(zipkin_spans)).with_state(exporter)
}

/// The Jaeger collector's HTTP routes (`POST /api/traces`, a Thrift binary `Batch`), on
/// `receivers.jaeger_http_listen`.
pub fn jaeger_router(exporter: Exporter) -> Router {
    Router::new().route("/api/traces", post(jaeger_traces)).with_state(exporter)
}

/// What translating a Zipkin or Jaeger body may hold, per byte of the (decompressed) body: the
/// most `collector/tests/zipkin.rs` and `collector/tests/jaeger_thrift.rs` let their fuzzing find
/// (64 × the body, plus 64 KiB).
pub const TRANSLATE_COST_PER_BYTE: usize = 64;

/// Charges what translating `raw` may hold, translates it, and exports what it took. Spans
/// refused alone are counted (`reason`) and, when `log` is set, logged with the first reason (UDP
/// datagrams are only counted: a spoofed flood must not become a log flood); a body with spans all
/// refused is malformed.
///
/// The charge is the worst case the fuzzing found, whatever the body holds: a body over about
/// `limits.max_inflight_bytes` / 65 is refused for good (413, the reason says so), and one that
/// does not fit what the budget has free now is refused as busy (503, retry).
pub async fn export_translated(
    exporter: &Exporter,
    raw: Bytes,
    mut charge: Charge,
    reason: &'static str,
    log: bool,
    translate: impl FnOnce(&[u8]) -> Result<crate::translate::Translated, Error>,
) -> Result<ExportTraceServiceResponse, Error> {
    let cost = raw.len().saturating_mul(TRANSLATE_COST_PER_BYTE).saturating_add(64 * 1024);
    charge.fits_with(cost, "the translated request (64 times the body: send smaller batches, or OTLP)")?;
    charge.grow(cost, "the translated request (64 times the body: send smaller batches, or OTLP)")?;
    let translated = translate(&raw)?;
    drop(raw);
    let kept =
        translated.request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum::<usize>();
    if let Some(first) = translated.refused.first() {
        let first = format!("span {}: {}", first.index, first.reason);
        let refused = translated.refused.len();
        exporter.metrics().spans.get_or_create(&SpanLabels { outcome: "rejected", reason }).inc_by(refused as u64);
        if log {
            tracing::warn!(refused, kept, first = %first, reason, "spans refused, the others kept");
        } else {
            tracing::debug!(refused, kept, first = %first, reason, "spans refused, the others kept");
        }
        if kept == 0 {
            return Err(Error::Malformed(format!("no span could be taken ({refused} refused; {first})")));
        }
    }
    exporter.export(ExportRequest::Decoded(translated.request), charge).await
}

/// Jaeger's answers, as its collector gives them: 202 once Kafka holds the spans; else the error's
/// status with its message as plain text (`Retry-After` when a retry can succeed).
async fn jaeger_traces(State(exporter): State<Exporter>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(error) = exporter.authenticate(&parts.headers) {
        return plain_error(&exporter, "jaeger_http", &error);
    }
    match parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("") {
        ct if ct.starts_with("application/x-thrift") || ct.starts_with("application/vnd.apache.thrift.binary") => {}
        other => return plain_error(&exporter, "jaeger_http", &Error::UnsupportedMediaType(other.to_owned())),
    }
    let result = async {
        let (raw, charge, _slot) = read_inflated(&exporter, &parts.headers, body, "jaeger_http").await?;
        export_translated(&exporter, raw, charge, "invalid_jaeger_span", true, |raw| {
            crate::jaeger::batch_from_binary(raw, &jaeger_limits(&exporter)).map_err(Into::into)
        })
        .await
    }
    .await;
    record_outcome(exporter.metrics(), "jaeger_http", &result);
    match result {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(error) => plain_error_response(&error),
    }
}

/// The Jaeger translation's limits, from `[limits]` (spans per request, bytes of one value, tags
/// of one span), so that the OTLP attribute limits decide past those as for any request.
pub fn jaeger_limits(exporter: &Exporter) -> crate::jaeger::Limits {
    let (max_spans, max_string_bytes, max_tags) = exporter.translate_limits();
    let defaults = crate::jaeger::Limits::default();
    crate::jaeger::Limits {
        max_spans,
        max_string_bytes: max_string_bytes.max(defaults.max_string_bytes),
        max_tags: max_tags.max(defaults.max_tags),
        ..defaults
    }
}

/// The Zipkin translation's limits, from `[limits]` as [`jaeger_limits`].
fn zipkin_limits(exporter: &Exporter) -> crate::zipkin::Limits {
    let (max_spans, max_string_bytes, max_tags) = exporter.translate_limits();
    let defaults = crate::zipkin::Limits::default();
    crate::zipkin::Limits {
        max_spans,
        max_string_bytes: max_string_bytes.max(defaults.max_string_bytes),
        max_tags_per_span: max_tags.max(defaults.max_tags_per_span),
        ..defaults
    }
}

/// Zipkin's answers: 202 once Kafka holds the spans; else the status of the error, its message as
/// plain text, `Retry-After` when a retry can succeed. Spans the translation refuses (no timestamp,
/// a bad id) are logged and counted (`spanline_collector_spans_total{reason="invalid_zipkin_span"}`),
/// the body's other spans kept: Zipkin has no partial-success answer.
async fn zipkin_spans(State(exporter): State<Exporter>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(error) = exporter.authenticate(&parts.headers) {
        return plain_error(&exporter, "zipkin", &error);
    }
    let protobuf = match parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("") {
        ct if ct.starts_with("application/x-protobuf") || ct.starts_with("application/protobuf") => true,
        ct if ct.is_empty() || ct.starts_with("application/json") => false,
        other => return plain_error(&exporter, "zipkin", &Error::UnsupportedMediaType(other.to_owned())),
    };
    let result = zipkin_export(&exporter, &parts.headers, body, protobuf).await;
    record_outcome(exporter.metrics(), "zipkin", &result);
    match result {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(error) => plain_error_response(&error),
    }
}

/// Reads, admits, translates and exports one Zipkin body.
async fn zipkin_export(
    exporter: &Exporter,
    headers: &HeaderMap,
    body: AxumBody,
    protobuf: bool,
) -> Result<ExportTraceServiceResponse, Error> {
    let (raw, charge, _slot) = read_inflated(exporter, headers, body, "zipkin").await?;
    export_translated(exporter, raw, charge, "invalid_zipkin_span", true, |raw| {
        let limits = zipkin_limits(exporter);
        if protobuf { crate::zipkin::from_proto(raw, &limits) } else { crate::zipkin::from_json(raw, &limits) }.map_err(
            |e| match e {
                crate::zipkin::ZipkinError::TooManySpans { .. } => Error::OverLimit(e.to_string()),
                other => Error::Malformed(other.to_string()),
            },
        )
    })
    .await
}

/// Reads a body (charged as it arrives), takes an export slot, and decompresses the body per its
/// `Content-Encoding`: the body, its charge and the slot.
async fn read_inflated(
    exporter: &Exporter,
    headers: &HeaderMap,
    body: AxumBody,
    protocol: &'static str,
) -> Result<(Bytes, Charge, tokio::sync::OwnedSemaphorePermit), Error> {
    let limit = exporter.max_request_bytes();
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::TooLarge { limit });
    }
    let (body, mut charge) = read_body(exporter, body).await?;
    // The slot is taken only now: a client still sending its body holds none.
    let slot = exporter.admit()?;
    let read = charge.bytes();
    let raw = match inflate_body(headers, &body, limit, &mut charge)? {
        Some(inflated) => {
            drop(body);
            charge.shrink_to(charge.bytes() - read);
            Bytes::from(inflated)
        }
        None => body,
    };
    exporter.metrics().received_bytes.get_or_create(&ProtocolLabels { protocol }).inc_by(raw.len() as u64);
    Ok((raw, charge, slot))
}

/// A refusal before the body is read, as plain text.
fn plain_error(exporter: &Exporter, protocol: &'static str, error: &Error) -> Response {
    refused(exporter.metrics(), protocol, error);
    plain_error_response(error)
}

/// An error as the Zipkin and Jaeger HTTP APIs answer it: the status, the message as plain text.
fn plain_error_response(error: &Error) -> Response {
    let response = (error.http_status(), [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], error.to_string());
    with_error_headers(response.into_response(), error)
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

async fn http_traces(State(exporter): State<Exporter>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let format = match parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("") {
        ct if ct.starts_with("application/x-protobuf") || ct.starts_with("application/protobuf") => {
            Ok(Format::Protobuf)
        }
        ct if ct.starts_with("application/json") => Ok(Format::Json),
        other => Err(Error::UnsupportedMediaType(other.to_owned())),
    };
    // Before the body is read: an unauthenticated client costs no reading.
    if let Err(error) = exporter.authenticate(&parts.headers) {
        return http_error(&exporter, *format.as_ref().unwrap_or(&Format::Json), &error);
    }
    let format = match format {
        Ok(format) => format,
        Err(error) => return http_error(&exporter, Format::Json, &error),
    };
    match http_export(&exporter, &parts.headers, body, format).await {
        Ok(response) => {
            let body = match format {
                Format::Protobuf => response.encode_to_vec(),
                Format::Json => serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec()),
            };
            (StatusCode::OK, [(header::CONTENT_TYPE, format.content_type())], body).into_response()
        }
        Err(error) => http_error(&exporter, format, &error),
    }
}

/// Reads, admits, decodes and exports one OTLP HTTP request.
async fn http_export(
    exporter: &Exporter,
    headers: &HeaderMap,
    body: AxumBody,
    format: Format,
) -> Result<ExportTraceServiceResponse, Error> {
    let (raw, mut charge, _slot) = read_inflated(exporter, headers, body, "http").await?;
    let request = match format {
        Format::Protobuf => ExportRequest::Protobuf(raw),
        Format::Json => {
            exporter.fell_back(Fallback::Json);
            let held = charge.bytes();
            let request = decode::json(&raw, exporter.max_spans(), &mut charge)?;
            drop(raw);
            // Only the decoded request stays charged.
            charge.shrink_to(charge.bytes() - held);
            ExportRequest::Decoded(request)
        }
    };
    let result = exporter.export(request, charge).await;
    record_outcome(exporter.metrics(), "http", &result);
    result
}

/// Reads a whole body, charged as it arrives, within `limits.read_timeout`. Nothing is reserved
/// for a declared length (a client announcing 16 MiB and sending nothing holds nothing): the chunks
/// are kept as they come and joined once at the end (unless there is one), that copy charged too.
async fn read_body(exporter: &Exporter, body: AxumBody) -> Result<(Bytes, Charge), Error> {
    use http_body_util::BodyExt as _;
    let limit = exporter.max_request_bytes();
    let mut body = ChargedBody::new(body, exporter.budget(), limit, 0, exporter.read_timeout());
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match e.downcast::<tonic::Status>() {
            Ok(status) => error_of(&status, exporter),
            Err(other) => Error::Malformed(format!("cannot read the request body: {other}")),
        })?;
        if let Ok(data) = frame.into_data() {
            chunks.push(data);
        }
    }
    let mut charge = std::mem::replace(&mut body.charge, exporter.budget().start());
    let total: usize = chunks.iter().map(Bytes::len).sum();
    if chunks.len() == 1
        && let Some(only) = chunks.pop()
    {
        return Ok((only, charge));
    }
    charge.grow(total, "the request body")?;
    let mut out = Vec::with_capacity(total);
    for chunk in chunks {
        out.extend_from_slice(&chunk);
    }
    charge.shrink_to(total);
    Ok((Bytes::from(out), charge))
}

/// The [`Error`] a [`ChargedBody`] failed with (it speaks gRPC statuses).
fn error_of(status: &tonic::Status, exporter: &Exporter) -> Error {
    match status.code() {
        tonic::Code::DeadlineExceeded => Error::ReadTimeout(exporter.read_timeout()),
        tonic::Code::ResourceExhausted if status.message().contains("max_inflight_bytes") => Error::OverBudget {
            what: "the request body",
            need: exporter.max_request_bytes(),
            limit: exporter.budget().capacity(),
        },
        tonic::Code::ResourceExhausted => Error::TooLarge { limit: exporter.max_request_bytes() },
        tonic::Code::Unavailable => Error::Overloaded(status.message().to_owned()),
        _ => Error::Malformed(status.message().to_owned()),
    }
}

fn http_error(exporter: &Exporter, format: Format, error: &Error) -> Response {
    refused(exporter.metrics(), "http", error);
    error_response(format, error)
}

fn error_response(format: Format, error: &Error) -> Response {
    let status = RpcStatus { code: error.grpc_status().code() as i32, message: error.to_string() };
    let body = match format {
        Format::Protobuf => status.encode_to_vec(),
        Format::Json => serde_json::json!({"code": status.code, "message": status.message}).to_string().into_bytes(),
    };
    let response = (error.http_status(), [(header::CONTENT_TYPE, format.content_type())], body).into_response();
    with_error_headers(response, error)
}

/// `Retry-After` on a retryable error, `WWW-Authenticate` on a missing or wrong token, `Connection:
/// close` after a read timeout.
fn with_error_headers(mut response: Response, error: &Error) -> Response {
    if error.is_retryable() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER.as_secs()));
    }
    if matches!(error, Error::Unauthenticated(_)) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if matches!(error, Error::ReadTimeout(_)) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Decompresses the body per `Content-Encoding` (never past `limit`, charging what it inflates);
/// `None` when it is not compressed.
fn inflate_body(headers: &HeaderMap, body: &[u8], limit: usize, charge: &mut Charge) -> Result<Option<Vec<u8>>, Error> {
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    match encoding.trim() {
        "" | "identity" => Ok(None),
        "gzip" => inflate(flate2::read::GzDecoder::new(body), limit, "gzip", charge).map(Some),
        "zstd" => {
            let decoder = zstd::stream::read::Decoder::new(body)
                .map_err(|e| Error::Malformed(format!("invalid zstd body: {e}")))?;
            inflate(decoder, limit, "zstd", charge).map(Some)
        }
        other => Err(Error::UnsupportedEncoding(other.to_owned())),
    }
}

/// Step in which inflated bytes are charged.
const INFLATE_STEP: usize = 256 * 1024;

/// Inflates at most `limit` bytes, charging them step by step, so a decompression bomb costs at most
/// the limit (and never more than the budget has free).
fn inflate(mut decoder: impl Read, limit: usize, what: &str, charge: &mut Charge) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    loop {
        let room = (limit + 1).saturating_sub(out.len()).min(INFLATE_STEP);
        if room == 0 {
            return Err(Error::TooLarge { limit });
        }
        charge.grow(room, "the decompressed body")?;
        let start = out.len();
        out.resize(start + room, 0);
        let n = read_full(&mut decoder, &mut out[start..])
            .map_err(|e| Error::Malformed(format!("invalid {what} body: {e}")))?;
        out.truncate(start + n);
        charge.shrink_to(charge.bytes() - (room - n));
        if n < room {
            return Ok(out);
        }
    }
}

/// Reads until `buf` is full or the reader ends; the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;
    use std::io::Write;

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let budget = Budget::new(64 << 20, Gauge::default());
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 8 << 20]).expect("compress");
        let bomb = encoder.finish().expect("finish");
        assert!(bomb.len() < 64 * 1024);
        let mut charge = budget.start();
        let err =
            inflate(flate2::read::GzDecoder::new(&bomb[..]), 1 << 20, "gzip", &mut charge).expect_err("over the limit");
        assert!(matches!(err, Error::TooLarge { limit } if limit == 1 << 20));
        let mut charge = budget.start();
        let out = inflate(flate2::read::GzDecoder::new(&bomb[..]), 16 << 20, "gzip", &mut charge).expect("fits");
        assert_eq!(out.len(), 8 << 20);
        assert_eq!(charge.bytes(), 8 << 20, "exactly the inflated bytes stay charged");
        let zbomb = zstd::encode_all(&vec![0u8; 8 << 20][..], 3).expect("zstd");
        let decoder = zstd::stream::read::Decoder::new(&zbomb[..]).expect("decoder");
        assert!(matches!(inflate(decoder, 1 << 20, "zstd", &mut budget.start()), Err(Error::TooLarge { .. })));
        // Inflating past what the budget has free is refused as it happens, not after.
        let small = Budget::new(2 << 20, Gauge::default());
        let err =
            inflate(flate2::read::GzDecoder::new(&bomb[..]), 16 << 20, "gzip", &mut small.start()).expect_err("budget");
        assert!(matches!(err, Error::OverBudget { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_trickled_body_times_out_and_releases_its_charge() {
        use http_body_util::BodyExt as _;
        let budget = Budget::new(1 << 20, Gauge::default());
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        let stream = http_body_util::StreamBody::new(rx);
        let mut body = ChargedBody::new(stream, &budget, 1 << 20, 0, Duration::from_millis(200));
        tx.try_send(Ok(Frame::data(Bytes::from(vec![1u8; 4096])))).expect("room");
        body.frame().await.expect("a frame").expect("data");
        assert_eq!(budget.capacity() - budget_free(&budget), 4096);
        let err = body.frame().await.expect("the deadline").expect_err("times out");
        let status = err.downcast::<tonic::Status>().expect("a status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        drop(body);
        assert_eq!(budget_free(&budget), budget.capacity());
        drop(tx);
    }

    fn budget_free(budget: &Budget) -> usize {
        // The whole budget can be charged only if nothing else holds any.
        (0..=budget.capacity() / 1024)
            .rev()
            .find(|kib| budget.charge(kib * 1024, "probe").is_ok())
            .map_or(0, |kib| kib * 1024)
    }
}
