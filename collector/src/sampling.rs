//! `sampling`: Jaeger remote sampling, served centrally. A strategies file in Jaeger's format
//! (`[sampling] strategies_file`) → one answer per service, built and encoded once per version of the
//! file ([`Strategies::parse`]) → served to SDKs over HTTP (`GET /sampling?service=` on
//! `receivers.sampling_http_listen`, `GET /api/sampling?service=` on `receivers.jaeger_http_listen`:
//! [`router`]) and gRPC (`jaeger.api_v2.SamplingManager/GetSamplingStrategy` on
//! `receivers.sampling_grpc_listen`: [`grpc_router`]). [`crate::pipeline`] builds a [`Sampling`]
//! when sampling is configured (a strategies file, or a sampling listener) and a listener serves it;
//! otherwise `/api/sampling` is not served (404).
//!
//! Not on the span path: nothing here touches Kafka or the memory budget. A request costs a map
//! lookup and a copy of bytes encoded in advance; the gRPC request is cut at
//! [`MAX_GRPC_REQUEST_BYTES`]. The file is read again every `sampling.reload_interval` and on
//! SIGHUP ([`spanline_common::reload::Watched`]); a changed file that does not parse, or breaks a
//! rule below, keeps the last good strategies, with a warning and
//! `spanline_collector_reloads_total{what="sampling_strategies",outcome="failed"}`.
//!
//! The rules are Jaeger's file strategy provider's (docs/sampling.md):
//! - no file, or no `default_strategy`: every service gets probabilistic `default_probability`
//!   (0.001);
//! - a service not in `service_strategies` gets the default strategy;
//! - a strategy without `type` is probabilistic `default_probability`;
//! - `operation_strategies` are probabilistic only: a rate-limiting one is skipped (warned), and
//!   operations not named are sampled at the service's probability (its `param` when it is
//!   probabilistic, else `default_probability`);
//! - a service without `operation_strategies` inherits the default strategy's, sampled by default
//!   at its own probability when it is probabilistic; a service with its own gets the default's
//!   added for the operations it does not name.
//!
//! Stricter than Jaeger, which falls back silently where these are mistakes: an unknown `type` or
//! key, a probability outside 0..=1, a negative rate, a service or an operation named twice, or a
//! `param` missing beside a `type` make the file invalid. So do a name longer than
//! [`MAX_NAME_BYTES`] and answers that would take more than [`MAX_BUILT_BYTES`], counted from the
//! parsed file (with every inherited operation) before any answer is built.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    path::PathBuf,
    sync::Arc,
};

use axum::{
    Router,
    extract::{Query, State, rejection::QueryRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::{BufMut, Bytes};
use futures::future::BoxFuture;
use prometheus_client::metrics::{counter::Counter, family::Family};
use serde::Deserialize;
use serde_json::json;
use spanline_common::reload::{ReloadMetrics, Watched};
use tokio_util::sync::CancellationToken;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    server::{Grpc, UnaryService},
};

use crate::{config::SamplingConfig, error::Error, metrics::SamplingLabels};

/// Jaeger's sampling probability when nothing else says (`--sampling.default-sampling-probability`).
pub const DEFAULT_PROBABILITY: f64 = 0.001;

/// Largest strategies file read. Thousands of services with dozens of operations each fit.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Most bytes the answers built from one file may take (JSON and protobuf, every service), counted
/// from the file before any answer is built: a small file whose default names many operations,
/// inherited by many services, is refused here instead of being expanded.
pub const MAX_BUILT_BYTES: usize = 64 * 1024 * 1024;

/// Longest service or operation name in the file, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// How much of a name an error message quotes.
const SHOWN_NAME_CHARS: usize = 64;

/// What an answer costs besides its names: an operation's JSON and protobuf framing, a service's
/// fixed fields and map entry. Generous, so that the count is an upper bound.
const OPERATION_OVERHEAD_BYTES: usize = 160;
const SERVICE_OVERHEAD_BYTES: usize = 512;

/// Most connections open at once over the sampling listeners (`receivers.sampling_http_listen` and
/// `sampling_grpc_listen` together), apart from `limits.max_connections`, which bounds span
/// intake: SDKs polling for strategies cannot take intake's slots, nor intake theirs.
pub const MAX_CONNECTIONS: usize = 1024;

/// Largest gRPC `SamplingStrategyParameters` taken (a service name).
pub const MAX_GRPC_REQUEST_BYTES: usize = 4096;

/// The gRPC method's path.
const GRPC_PATH: &str = "/jaeger.api_v2.SamplingManager/GetSamplingStrategy";

/// The messages of Jaeger's `jaeger.api_v2` sampling API (package `jaeger.api_v2`), written from its
/// documented wire format: field numbers and types as clients send and expect them.
pub mod wire {
    /// `SamplingStrategyType`: which strategy field is set (per-operation answers say
    /// `PROBABILISTIC`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum StrategyType {
        Probabilistic = 0,
        RateLimiting = 1,
    }

    /// `ProbabilisticSamplingStrategy`: sample this share of traces (0 to 1).
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Probabilistic {
        #[prost(double, tag = "1")]
        pub sampling_rate: f64,
    }

    /// `RateLimitingSamplingStrategy`: sample at most this many traces per second.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct RateLimiting {
        #[prost(int32, tag = "1")]
        pub max_traces_per_second: i32,
    }

    /// `OperationSamplingStrategy`: one operation's probability.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Operation {
        #[prost(string, tag = "1")]
        pub operation: String,
        #[prost(message, optional, tag = "2")]
        pub probabilistic_sampling: Option<Probabilistic>,
    }

    /// `PerOperationSamplingStrategies`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PerOperation {
        #[prost(double, tag = "1")]
        pub default_sampling_probability: f64,
        #[prost(double, tag = "2")]
        pub default_lower_bound_traces_per_second: f64,
        #[prost(message, repeated, tag = "3")]
        pub per_operation_strategies: Vec<Operation>,
        #[prost(double, tag = "4")]
        pub default_upper_bound_traces_per_second: f64,
    }

    /// `SamplingStrategyResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(enumeration = "StrategyType", tag = "1")]
        pub strategy_type: i32,
        #[prost(message, optional, tag = "2")]
        pub probabilistic_sampling: Option<Probabilistic>,
        #[prost(message, optional, tag = "3")]
        pub rate_limiting_sampling: Option<RateLimiting>,
        #[prost(message, optional, tag = "4")]
        pub operation_sampling: Option<PerOperation>,
    }

    /// `SamplingStrategyParameters`: the gRPC request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Parameters {
        #[prost(string, tag = "1")]
        pub service_name: String,
    }
}

// ---- The strategies file (Jaeger's format) ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStrategies {
    #[serde(default)]
    default_strategy: Option<FileStrategy>,
    #[serde(default)]
    service_strategies: Option<Vec<FileStrategy>>,
}

/// A service's strategy, or the default one (which has no `service`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStrategy {
    #[serde(default)]
    service: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<Kind>,
    #[serde(default)]
    param: Option<f64>,
    #[serde(default)]
    operation_strategies: Option<Vec<FileOperation>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOperation {
    operation: String,
    #[serde(rename = "type", default)]
    kind: Option<Kind>,
    #[serde(default)]
    param: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Probabilistic,
    Ratelimiting,
}

/// One answer, encoded once: the protobuf gRPC sends and the JSON HTTP sends.
#[derive(Debug)]
pub struct Answer {
    pub protobuf: Bytes,
    pub json: Bytes,
}

impl Answer {
    /// The answer as a message, decoded again (for tests and tools; serving sends the bytes).
    pub fn message(&self) -> Result<wire::Response, prost::DecodeError> {
        prost::Message::decode(self.protobuf.clone())
    }
}

/// Whether an answer is a service's own or the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Service,
    Default,
}

impl Found {
    fn as_str(self) -> &'static str {
        match self {
            Found::Service => "service",
            Found::Default => "default",
        }
    }
}

/// Every service's answer, from one version of the strategies file.
#[derive(Debug)]
pub struct Strategies {
    default: Arc<Answer>,
    services: HashMap<String, Arc<Answer>>,
}

impl Strategies {
    /// What every service gets when there is no file: probabilistic `default_probability`.
    pub fn fallback(default_probability: f64) -> Self {
        Self { default: Arc::new(answer(&probabilistic(default_probability))), services: HashMap::new() }
    }

    /// Reads a strategies file's bytes under the rules of this module's documentation. The error
    /// names what is wrong and where, never more of the file than a service or operation name.
    pub fn parse(bytes: &[u8], default_probability: f64) -> Result<Self, String> {
        let file: Option<FileStrategies> =
            serde_json::from_slice(bytes).map_err(|e| format!("not a Jaeger strategies file: {e}"))?;
        // `null`: no strategies, as Jaeger reads it.
        let Some(file) = file else { return Ok(Self::fallback(default_probability)) };
        let rules = Rules { default_probability };
        let default = match &file.default_strategy {
            Some(strategy) => rules.service(strategy, "default_strategy")?,
            None => probabilistic(default_probability),
        };
        let listed = file.service_strategies.unwrap_or_default();
        // First the services' own strategies (no larger than the file) and what the answers will
        // take once every service has inherited the default's operations; only then the answers.
        let inherited = operation_bytes(&default);
        let mut built = answer_bytes(&default);
        let mut own = Vec::with_capacity(listed.len());
        let mut names = HashSet::with_capacity(listed.len());
        for strategy in &listed {
            let name = match strategy.service.as_deref() {
                Some(name) if !name.is_empty() => name,
                _ => return Err("service_strategies: an entry has no \"service\"".into()),
            };
            let where_ = format!("service {}", shown(name));
            if name.len() > MAX_NAME_BYTES {
                return Err(format!("{where_}: the name is longer than {MAX_NAME_BYTES} bytes"));
            }
            if !names.insert(name) {
                return Err(format!("{where_} is listed twice in service_strategies"));
            }
            let response = rules.service(strategy, &where_)?;
            built = built.saturating_add(name.len()).saturating_add(answer_bytes(&response)).saturating_add(inherited);
            if built > MAX_BUILT_BYTES {
                return Err(format!(
                    "the answers would take more than {MAX_BUILT_BYTES} bytes, counting the per-operation strategies every listed service inherits from default_strategy"
                ));
            }
            own.push((name, response));
        }
        let mut services = HashMap::with_capacity(own.len());
        for (name, mut response) in own {
            inherit(&mut response, &default);
            services.insert(name.to_owned(), Arc::new(answer(&response)));
        }
        Ok(Self { default: Arc::new(answer(&default)), services })
    }

    /// The answer for `service`: its own, else the default.
    pub fn get(&self, service: &str) -> (Arc<Answer>, Found) {
        match self.services.get(service) {
            Some(answer) => (answer.clone(), Found::Service),
            None => (self.default.clone(), Found::Default),
        }
    }

    /// How many services have their own strategy.
    pub fn services(&self) -> usize {
        self.services.len()
    }
}

/// How the file's strategies become answers.
struct Rules {
    default_probability: f64,
}

impl Rules {
    /// A strategy without its operations: what `type` and `param` say.
    fn strategy(&self, kind: Option<Kind>, param: Option<f64>, where_: &str) -> Result<wire::Response, String> {
        let Some(kind) = kind else {
            tracing::warn!(
                strategy = where_,
                probability = self.default_probability,
                "sampling strategy without a type, using the default probability"
            );
            return Ok(probabilistic(self.default_probability));
        };
        let Some(param) = param else { return Err(format!("{where_}: \"param\" is missing")) };
        match kind {
            Kind::Probabilistic => {
                if !(0.0..=1.0).contains(&param) {
                    return Err(format!("{where_}: a probabilistic param must be between 0 and 1, got {param}"));
                }
                Ok(probabilistic(param))
            }
            Kind::Ratelimiting => {
                if !(0.0..=f64::from(i32::MAX)).contains(&param) {
                    return Err(format!(
                        "{where_}: a ratelimiting param (traces per second) must be between 0 and {}, got {param}",
                        i32::MAX
                    ));
                }
                // Whole traces per second, cut toward zero as Jaeger does; the range is checked above.
                #[allow(clippy::cast_possible_truncation)]
                let max_traces_per_second = param as i32;
                Ok(wire::Response {
                    strategy_type: wire::StrategyType::RateLimiting as i32,
                    probabilistic_sampling: None,
                    rate_limiting_sampling: Some(wire::RateLimiting { max_traces_per_second }),
                    operation_sampling: None,
                })
            }
        }
    }

    /// A service's (or the default) strategy with its own per-operation strategies.
    fn service(&self, strategy: &FileStrategy, where_: &str) -> Result<wire::Response, String> {
        let mut response = self.strategy(strategy.kind, strategy.param, where_)?;
        let operations = strategy.operation_strategies.as_deref().unwrap_or_default();
        if operations.is_empty() {
            return Ok(response);
        }
        let mut seen = HashSet::with_capacity(operations.len());
        let mut per_operation = Vec::with_capacity(operations.len());
        for operation in operations {
            let name = operation.operation.as_str();
            let where_op = format!("{where_}, operation {}", shown(name));
            if name.len() > MAX_NAME_BYTES {
                return Err(format!("{where_op}: the name is longer than {MAX_NAME_BYTES} bytes"));
            }
            if !seen.insert(name) {
                return Err(format!("{where_}: operation {} is listed twice", shown(name)));
            }
            let parsed = self.strategy(operation.kind, operation.param, &where_op)?;
            let Some(probability) = parsed.probabilistic_sampling else {
                tracing::warn!(
                    strategy = %where_op,
                    "per-operation strategies are probabilistic only, skipping a rate-limiting one"
                );
                continue;
            };
            per_operation
                .push(wire::Operation { operation: name.to_owned(), probabilistic_sampling: Some(probability) });
        }
        response.operation_sampling = Some(wire::PerOperation {
            default_sampling_probability: response
                .probabilistic_sampling
                .map_or(self.default_probability, |p| p.sampling_rate),
            default_lower_bound_traces_per_second: 0.0,
            per_operation_strategies: per_operation,
            default_upper_bound_traces_per_second: 0.0,
        });
        Ok(response)
    }
}

/// What a listed service takes from the default strategy's per-operation strategies: all of them,
/// at its own probability, when it has none; those for operations it does not name otherwise.
fn inherit(service: &mut wire::Response, default: &wire::Response) {
    let Some(defaults) = &default.operation_sampling else { return };
    match &mut service.operation_sampling {
        None => {
            let mut copied = defaults.clone();
            if let Some(own) = service.probabilistic_sampling {
                copied.default_sampling_probability = own.sampling_rate;
            }
            service.operation_sampling = Some(copied);
        }
        Some(own) => {
            let named: HashSet<String> = own.per_operation_strategies.iter().map(|o| o.operation.clone()).collect();
            own.per_operation_strategies
                .extend(defaults.per_operation_strategies.iter().filter(|o| !named.contains(&o.operation)).cloned());
        }
    }
}

fn probabilistic(sampling_rate: f64) -> wire::Response {
    wire::Response {
        strategy_type: wire::StrategyType::Probabilistic as i32,
        probabilistic_sampling: Some(wire::Probabilistic { sampling_rate }),
        rate_limiting_sampling: None,
        operation_sampling: None,
    }
}

fn answer(message: &wire::Response) -> Answer {
    let json = Bytes::from(to_json(message).to_string());
    Answer { protobuf: Bytes::from(prost::Message::encode_to_vec(message)), json }
}

/// An upper bound on the bytes `message`'s per-operation strategies take in an answer (JSON with
/// its escapes, and protobuf).
fn operation_bytes(message: &wire::Response) -> usize {
    let Some(operations) = &message.operation_sampling else { return 0 };
    operations.per_operation_strategies.iter().fold(0usize, |sum, o| {
        sum.saturating_add(json_escaped_len(&o.operation))
            .saturating_add(o.operation.len())
            .saturating_add(OPERATION_OVERHEAD_BYTES)
    })
}

/// An upper bound on the bytes of `message`'s answer, before inheriting anything.
fn answer_bytes(message: &wire::Response) -> usize {
    operation_bytes(message).saturating_add(SERVICE_OVERHEAD_BYTES)
}

/// How long `s` is inside a JSON string: quotes, backslashes and control characters escaped.
fn json_escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// A name as an error message quotes it: its start only, when it is long.
fn shown(name: &str) -> String {
    match name.char_indices().nth(SHOWN_NAME_CHARS) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &name[..cut], name.len()),
        None => format!("{name:?}"),
    }
}

/// The JSON Jaeger's sampling endpoints answer (protobuf's JSON mapping with its defaults written,
/// absent strategies left out): `strategyType` as the enum's name, and every field of
/// `operationSampling`, which SDKs (the OpenTelemetry Rust one among them) require.
pub fn to_json(message: &wire::Response) -> serde_json::Value {
    let kind = match wire::StrategyType::try_from(message.strategy_type) {
        Ok(wire::StrategyType::RateLimiting) => "RATE_LIMITING",
        _ => "PROBABILISTIC",
    };
    let mut out = serde_json::Map::new();
    out.insert("strategyType".into(), json!(kind));
    if let Some(p) = message.probabilistic_sampling {
        out.insert("probabilisticSampling".into(), json!({ "samplingRate": p.sampling_rate }));
    }
    if let Some(r) = message.rate_limiting_sampling {
        out.insert("rateLimitingSampling".into(), json!({ "maxTracesPerSecond": r.max_traces_per_second }));
    }
    if let Some(o) = &message.operation_sampling {
        let operations: Vec<_> = o
            .per_operation_strategies
            .iter()
            .map(|op| {
                json!({
                    "operation": op.operation,
                    "probabilisticSampling": {
                        "samplingRate": op.probabilistic_sampling.map_or(0.0, |p| p.sampling_rate)
                    },
                })
            })
            .collect();
        out.insert(
            "operationSampling".into(),
            json!({
                "defaultSamplingProbability": o.default_sampling_probability,
                "defaultLowerBoundTracesPerSecond": o.default_lower_bound_traces_per_second,
                "perOperationStrategies": operations,
                "defaultUpperBoundTracesPerSecond": o.default_upper_bound_traces_per_second,
            }),
        );
    }
    serde_json::Value::Object(out)
}

// ---- Serving ----

/// The strategies in force, shared by every sampling endpoint.
#[derive(Clone, Debug)]
pub struct Sampling {
    source: Source,
    requests: Family<SamplingLabels, Counter>,
}

#[derive(Clone, Debug)]
enum Source {
    /// No file: the fall-back for every service.
    Fixed(Arc<Strategies>),
    /// The file, kept current.
    File(Watched<Strategies>),
}

impl Sampling {
    /// Reads `config.strategies_file` (an error stops start-up) and keeps it current until `token`
    /// is cancelled; without a file, every service gets the fall-back.
    pub fn start(
        config: &SamplingConfig,
        requests: Family<SamplingLabels, Counter>,
        reloads: ReloadMetrics,
        token: CancellationToken,
    ) -> Result<Self, Error> {
        let default_probability = config.default_probability;
        let source = if config.strategies_file.is_empty() {
            Source::Fixed(Arc::new(Strategies::fallback(default_probability)))
        } else {
            let path = PathBuf::from(&config.strategies_file);
            let shown = config.strategies_file.clone();
            let build = move |files: &[Vec<u8>]| {
                let bytes = files.first().map_or(&[][..], Vec::as_slice);
                Strategies::parse(bytes, default_probability).map_err(|e| format!("{shown}: {e}"))
            };
            let watched = Watched::start_bounded(
                "sampling_strategies",
                vec![path],
                MAX_FILE_BYTES,
                config.reload_interval,
                build,
                reloads,
                token,
            )
            .map_err(|e| Error::Setup(format!("sampling.strategies_file: {e}")))?;
            Source::File(watched)
        };
        Ok(Self { source, requests })
    }

    /// The strategies in force now.
    pub fn current(&self) -> Arc<Strategies> {
        match &self.source {
            Source::Fixed(strategies) => strategies.clone(),
            Source::File(watched) => watched.get(),
        }
    }

    /// The answer for a client's `service`, counted; an error is the client's mistake.
    fn lookup(&self, endpoint: &'static str, service: Result<&str, &'static str>) -> Result<Arc<Answer>, &'static str> {
        let result = service.and_then(|s| if s.is_empty() { Err("'service' must not be empty") } else { Ok(s) });
        let (outcome, result) = match result {
            Ok(service) => {
                let (answer, found) = self.current().get(service);
                (found.as_str(), Ok(answer))
            }
            Err(reason) => ("bad_request", Err(reason)),
        };
        self.requests.get_or_create(&SamplingLabels { endpoint, outcome }).inc();
        result
    }
}

/// `GET <path>?service=NAME` → the service's strategy as JSON (`path` is `/sampling` or
/// `/api/sampling`); 400 with the reason when `service` is missing, repeated or empty.
pub fn router(path: &'static str, endpoint: &'static str, sampling: Sampling) -> Router {
    Router::new().route(path, get(serve_http)).with_state((sampling, endpoint))
}

async fn serve_http(
    State((sampling, endpoint)): State<(Sampling, &'static str)>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let service = match &query {
        Ok(Query(pairs)) => {
            let mut services = pairs.iter().filter(|(k, _)| k == "service");
            match (services.next(), services.next()) {
                (Some((_, service)), None) => Ok(service.as_str()),
                _ => Err("'service' parameter must be provided once"),
            }
        }
        Err(_) => Err("malformed query string"),
    };
    match sampling.lookup(endpoint, service) {
        Ok(answer) => ([(header::CONTENT_TYPE, "application/json")], answer.json.clone()).into_response(),
        Err(reason) => {
            (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], reason).into_response()
        }
    }
}

/// `jaeger.api_v2.SamplingManager`: its one method, `GetSamplingStrategy`, as a router for
/// [`crate::pipeline`]'s HTTP/2 server (gRPC needs nothing more than HTTP/2 and this codec).
pub fn grpc_router(sampling: Sampling) -> Router {
    let service = tower::service_fn(move |request: axum::http::Request<axum::body::Body>| {
        let sampling = sampling.clone();
        async move {
            if request.uri().path() != GRPC_PATH {
                return Ok::<_, Infallible>(
                    tonic::Status::unimplemented("only SamplingManager/GetSamplingStrategy is served").into_http(),
                );
            }
            let mut grpc = Grpc::new(EncodedCodec).apply_max_message_size_config(Some(MAX_GRPC_REQUEST_BYTES), None);
            Ok(grpc.unary(GetSamplingStrategy { sampling }, request).await)
        }
    });
    Router::new().fallback_service(service)
}

/// Decodes the request; sends an answer's protobuf as it was encoded when the file was read.
#[derive(Clone, Copy, Default)]
struct EncodedCodec;

impl Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = wire::Parameters;
    type Encoder = EncodedCodec;
    type Decoder = EncodedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for EncodedCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for EncodedCodec {
    type Item = wire::Parameters;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<wire::Parameters>, tonic::Status> {
        prost::Message::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::invalid_argument(format!("not a SamplingStrategyParameters: {e}")))
    }
}

struct GetSamplingStrategy {
    sampling: Sampling,
}

impl UnaryService<wire::Parameters> for GetSamplingStrategy {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<tonic::Response<Bytes>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<wire::Parameters>) -> Self::Future {
        let sampling = self.sampling.clone();
        Box::pin(async move {
            let service = request.into_inner().service_name;
            match sampling.lookup("grpc", Ok(&service)) {
                Ok(answer) => Ok(tonic::Response::new(answer.protobuf.clone())),
                Err(reason) => Err(tonic::Status::invalid_argument(format!("serviceName: {reason}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Strategies {
        Strategies::parse(json.as_bytes(), DEFAULT_PROBABILITY).expect("parses")
    }

    fn rate(s: &Strategies, service: &str) -> Option<f64> {
        s.get(service).0.message().expect("decodes").probabilistic_sampling.map(|p| p.sampling_rate)
    }

    fn operations(s: &Strategies, service: &str) -> Vec<(String, f64)> {
        let answer = s.get(service).0;
        let ops =
            answer.message().expect("decodes").operation_sampling.as_ref().map(|o| o.per_operation_strategies.clone());
        ops.unwrap_or_default()
            .into_iter()
            .map(|o| (o.operation, o.probabilistic_sampling.map_or(-1.0, |p| p.sampling_rate)))
            .collect()
    }

    fn op_default(s: &Strategies, service: &str) -> Option<f64> {
        s.get(service).0.message().expect("decodes").operation_sampling.as_ref().map(|o| o.default_sampling_probability)
    }

    #[test]
    fn no_file_and_no_default_fall_back_to_probabilistic_0_001() {
        for s in [
            Strategies::fallback(DEFAULT_PROBABILITY),
            parse("{}"),
            parse("null"),
            parse(r#"{"service_strategies": null}"#),
        ] {
            let (answer, found) = s.get("anything");
            assert_eq!(found, Found::Default);
            assert_eq!(rate(&s, "anything"), Some(0.001));
            assert_eq!(
                answer.json,
                Bytes::from_static(
                    br#"{"probabilisticSampling":{"samplingRate":0.001},"strategyType":"PROBABILISTIC"}"#
                )
            );
        }
        let s = parse(r#"{"service_strategies": [{"service": "a", "type": "ratelimiting", "param": 5}]}"#);
        assert_eq!(rate(&s, "b"), Some(0.001), "no default_strategy: the fall-back");
        let s = Strategies::parse(b"{}", 0.25).expect("parses");
        assert_eq!(rate(&s, "b"), Some(0.25), "sampling.default_probability");
    }

    #[test]
    fn services_get_their_own_strategy_others_the_default() {
        let s = parse(
            r#"{"default_strategy": {"type": "probabilistic", "param": 0.5},
                "service_strategies": [
                  {"service": "foo", "type": "probabilistic", "param": 0.8},
                  {"service": "bar", "type": "ratelimiting", "param": 5.9}]}"#,
        );
        assert_eq!(s.services(), 2);
        assert_eq!((rate(&s, "foo"), s.get("foo").1), (Some(0.8), Found::Service));
        assert_eq!((rate(&s, "baz"), s.get("baz").1), (Some(0.5), Found::Default));
        let bar = s.get("bar").0;
        assert_eq!(bar.message().expect("decodes").strategy_type, wire::StrategyType::RateLimiting as i32);
        assert_eq!(
            bar.message().expect("decodes").rate_limiting_sampling,
            Some(wire::RateLimiting { max_traces_per_second: 5 })
        );
        assert_eq!(
            bar.json,
            Bytes::from_static(br#"{"rateLimitingSampling":{"maxTracesPerSecond":5},"strategyType":"RATE_LIMITING"}"#)
        );
    }

    #[test]
    fn a_strategy_without_type_is_the_default_probability() {
        let s = parse(
            r#"{"default_strategy": {"type": "probabilistic", "param": 0.5},
                "service_strategies": [{"service": "foo", "operation_strategies": [
                  {"operation": "op1", "type": "probabilistic", "param": 0.2}, {"operation": "op2"}]}]}"#,
        );
        assert_eq!(rate(&s, "foo"), Some(0.001));
        assert_eq!(op_default(&s, "foo"), Some(0.001));
        assert_eq!(operations(&s, "foo"), vec![("op1".into(), 0.2), ("op2".into(), 0.001)]);
    }

    #[test]
    fn per_operation_strategies_skip_rate_limiting_and_merge_with_the_default() {
        let s = parse(
            r#"{"default_strategy": {"type": "probabilistic", "param": 0.5, "operation_strategies": [
                   {"operation": "op0", "type": "probabilistic", "param": 0.2},
                   {"operation": "op6", "type": "probabilistic", "param": 0},
                   {"operation": "spam", "type": "ratelimiting", "param": 1},
                   {"operation": "op7", "type": "probabilistic", "param": 1}]},
                "service_strategies": [
                  {"service": "foo", "type": "probabilistic", "param": 0.8, "operation_strategies": [
                     {"operation": "op6", "type": "probabilistic", "param": 0.5},
                     {"operation": "op1", "type": "probabilistic", "param": 0.2},
                     {"operation": "op2", "type": "ratelimiting", "param": 10}]},
                  {"service": "bar", "type": "ratelimiting", "param": 5, "operation_strategies": [
                     {"operation": "op3", "type": "probabilistic", "param": 0.3},
                     {"operation": "op4", "type": "ratelimiting", "param": 100},
                     {"operation": "op5", "type": "probabilistic", "param": 0.4}]}]}"#,
        );
        // The default: its own operations, rate-limiting ones skipped.
        assert_eq!(op_default(&s, "other"), Some(0.5));
        assert_eq!(operations(&s, "other"), vec![("op0".into(), 0.2), ("op6".into(), 0.0), ("op7".into(), 1.0)]);
        // A service's own operations win; the default's others are added after them.
        assert_eq!(op_default(&s, "foo"), Some(0.8));
        assert_eq!(
            operations(&s, "foo"),
            vec![("op6".into(), 0.5), ("op1".into(), 0.2), ("op0".into(), 0.2), ("op7".into(), 1.0)]
        );
        // A rate-limiting service's unnamed operations: the default probability.
        assert_eq!(op_default(&s, "bar"), Some(0.001));
        assert_eq!(
            operations(&s, "bar"),
            vec![
                ("op3".into(), 0.3),
                ("op5".into(), 0.4),
                ("op0".into(), 0.2),
                ("op6".into(), 0.0),
                ("op7".into(), 1.0)
            ]
        );
        let bar = to_json(&s.get("bar").0.message().expect("decodes"));
        assert_eq!(bar["strategyType"], "RATE_LIMITING");
        assert_eq!(bar["rateLimitingSampling"]["maxTracesPerSecond"], 5);
        assert_eq!(bar["operationSampling"]["defaultLowerBoundTracesPerSecond"], 0.0);
        assert_eq!(bar["operationSampling"]["defaultUpperBoundTracesPerSecond"], 0.0);
        assert_eq!(bar["operationSampling"]["perOperationStrategies"][0]["operation"], "op3");
        assert_eq!(bar["operationSampling"]["perOperationStrategies"][0]["probabilisticSampling"]["samplingRate"], 0.3);
    }

    #[test]
    fn a_service_without_operations_inherits_the_defaults_at_its_own_probability() {
        let s = parse(
            r#"{"service_strategies": [
                  {"service": "ServiceA", "type": "probabilistic", "param": 1.0},
                  {"service": "ServiceB", "type": "ratelimiting", "param": 3}],
                "default_strategy": {"type": "probabilistic", "param": 0.2, "operation_strategies": [
                  {"operation": "/health", "type": "probabilistic", "param": 0.1}]}}"#,
        );
        assert_eq!(op_default(&s, "ServiceA"), Some(1.0));
        assert_eq!(operations(&s, "ServiceA"), vec![("/health".into(), 0.1)]);
        assert_eq!(rate(&s, "ServiceA"), Some(1.0));
        // A rate-limiting service keeps the default's probability for unnamed operations.
        assert_eq!(op_default(&s, "ServiceB"), Some(0.2));
        assert_eq!(operations(&s, "ServiceB"), vec![("/health".into(), 0.1)]);
        let b = s.get("ServiceB").0;
        assert_eq!(
            b.message().expect("decodes").rate_limiting_sampling,
            Some(wire::RateLimiting { max_traces_per_second: 3 })
        );
    }

    #[test]
    fn mistakes_make_the_file_invalid_with_a_reason() {
        for (file, needle) in [
            ("{", "not a Jaeger strategies file"),
            (r#"{"default_strategy": {"type": "probablistic", "param": 0.5}}"#, "unknown variant"),
            (r#"{"default_strategies": {}}"#, "unknown field"),
            (r#"{"default_strategy": {"type": "probabilistic", "param": 1.5}}"#, "between 0 and 1"),
            (r#"{"default_strategy": {"type": "probabilistic"}}"#, "\"param\" is missing"),
            (r#"{"default_strategy": {"type": "ratelimiting", "param": -1}}"#, "ratelimiting param"),
            (r#"{"service_strategies": [{"type": "probabilistic", "param": 1}]}"#, "no \"service\""),
            (
                r#"{"service_strategies": [{"service": "a", "type": "probabilistic", "param": 1},
                                          {"service": "a", "type": "probabilistic", "param": 0}]}"#,
                "listed twice",
            ),
            (
                r#"{"service_strategies": [{"service": "a", "type": "probabilistic", "param": 1, "operation_strategies": [
                     {"operation": "x", "type": "probabilistic", "param": 1}, {"operation": "x", "type": "probabilistic", "param": 0}]}]}"#,
                "operation \"x\" is listed twice",
            ),
        ] {
            let e = Strategies::parse(file.as_bytes(), DEFAULT_PROBABILITY).expect_err(file);
            assert!(e.contains(needle), "{file}: {e}");
        }
    }

    /// A file whose default has `operations` operations named `prefix` and a number, inherited by
    /// `services` listed services (`s0`, `s1`, …).
    fn inheriting_file(prefix: &str, operations: usize, services: usize) -> String {
        let ops: Vec<String> = (0..operations)
            .map(|i| format!(r#"{{"operation": "{prefix}{i:06}", "type": "probabilistic", "param": 0.5}}"#))
            .collect();
        let listed: Vec<String> = (0..services).map(|i| format!(r#"{{"service": "s{i}"}}"#)).collect();
        let file = format!(
            r#"{{"default_strategy": {{"type": "probabilistic", "param": 0.5, "operation_strategies": [{}]}},
                "service_strategies": [{}]}}"#,
            ops.join(","),
            listed.join(",")
        );
        assert!(file.len() < MAX_FILE_BYTES as usize);
        file
    }

    #[test]
    fn inherited_operations_are_bounded_before_they_are_copied() {
        let file = inheriting_file("o", 2000, 600);
        let e = Strategies::parse(file.as_bytes(), DEFAULT_PROBABILITY).expect_err("too many");
        assert!(e.contains("would take more than"), "{e}");
    }

    /// Bytes, not entries: 1,500 operations with 1 KiB names (1.5 MB), inherited by 50 services,
    /// would be some 150 MB of answers; the file is refused from its counts, before any is built.
    #[test]
    fn long_inherited_names_are_bounded_in_bytes() {
        let long = "n".repeat(MAX_NAME_BYTES - 6);
        let file = inheriting_file(&long, 1500, 50);
        // 1,500 x 51 entries: under the 1,000,000 an entry count allowed, so bytes must refuse it.
        let e = Strategies::parse(file.as_bytes(), DEFAULT_PROBABILITY).expect_err("too large");
        assert!(e.contains(&format!("more than {MAX_BUILT_BYTES} bytes")), "{e}");
        // Fewer services fit, and every one answers with all the default's operations.
        let s = parse(&inheriting_file(&long, 1500, 10));
        assert_eq!(s.services(), 10);
        assert_eq!(operations(&s, "s3").len(), 1500);
    }

    #[test]
    fn names_longer_than_the_bound_are_refused_and_quoted_short() {
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        for file in [
            format!(r#"{{"service_strategies": [{{"service": "{long}", "type": "probabilistic", "param": 1}}]}}"#),
            format!(
                r#"{{"default_strategy": {{"type": "probabilistic", "param": 1, "operation_strategies": [
                     {{"operation": "{long}", "type": "probabilistic", "param": 1}}]}}}}"#
            ),
        ] {
            let e = Strategies::parse(file.as_bytes(), DEFAULT_PROBABILITY).expect_err("too long");
            assert!(e.contains(&format!("longer than {MAX_NAME_BYTES} bytes")), "{e}");
            assert!(e.len() < 300, "the name is not quoted in full: {e}");
        }
        let ok = "y".repeat(MAX_NAME_BYTES);
        let s = parse(&format!(
            r#"{{"service_strategies": [{{"service": "{ok}", "type": "probabilistic", "param": 1}}]}}"#
        ));
        assert_eq!(rate(&s, &ok), Some(1.0));
    }

    /// The bytes gRPC sends are the answer's message, encoded when the file was read, and the
    /// JSON says the same.
    #[test]
    fn answers_are_encoded_once_as_protobuf_and_json() {
        let s = parse(
            r#"{"default_strategy": {"type": "probabilistic", "param": 0.5, "operation_strategies": [
                   {"operation": "op", "type": "probabilistic", "param": 0.2}]},
                "service_strategies": [{"service": "a", "type": "ratelimiting", "param": 4}]}"#,
        );
        let answer = s.get("a").0;
        let message = answer.message().expect("decodes");
        assert_eq!(answer.protobuf, Bytes::from(prost::Message::encode_to_vec(&message)));
        assert_eq!(message.rate_limiting_sampling, Some(wire::RateLimiting { max_traces_per_second: 4 }));
        let json: serde_json::Value = serde_json::from_slice(&answer.json).expect("json");
        assert_eq!(json, to_json(&message));
    }

    /// deploy/sampling-strategies.json (which deploy/collector.toml names) answers what
    /// docs/sampling.md says it does.
    #[test]
    fn the_example_file_answers_as_documented() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let config = crate::Config::load(Some(&root.join("deploy/collector.toml"))).expect("loads");
        assert_eq!(config.sampling.strategies_file, "deploy/sampling-strategies.json");
        let bytes = std::fs::read(root.join(&config.sampling.strategies_file)).expect("example file");
        let s = Strategies::parse(&bytes, config.sampling.default_probability).expect("parses");
        assert_eq!((rate(&s, "checkout"), op_default(&s, "checkout")), (Some(1.0), Some(1.0)));
        assert_eq!(
            operations(&s, "checkout"),
            vec![("GET /cart".into(), 0.25), ("/health".into(), 0.0), ("/metrics".into(), 0.0)]
        );
        let search = s.get("search").0.message().expect("decodes");
        assert_eq!(search.rate_limiting_sampling, Some(wire::RateLimiting { max_traces_per_second: 20 }));
        assert_eq!(search.operation_sampling, None, "no per-operation strategies, which SDKs would check first");
        assert_eq!((rate(&s, "other"), s.get("other").1), (Some(0.1), Found::Default));
        assert_eq!(operations(&s, "other"), vec![]);
    }

    #[tokio::test]
    async fn a_changed_file_is_served_and_a_bad_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("strategies.json");
        std::fs::write(&path, r#"{"default_strategy": {"type": "probabilistic", "param": 0.5}}"#).expect("write");
        let mut registry = prometheus_client::registry::Registry::default();
        let reloads = ReloadMetrics::register(&mut registry, "t");
        let token = CancellationToken::new();
        let config = SamplingConfig {
            strategies_file: path.display().to_string(),
            reload_interval: std::time::Duration::from_millis(20),
            default_probability: DEFAULT_PROBABILITY,
        };
        let sampling = Sampling::start(&config, Family::default(), reloads, token.clone()).expect("starts");
        assert_eq!(rate(&sampling.current(), "x"), Some(0.5));
        std::fs::write(&path, r#"{"default_strategy": {"type": "probabilistic", "param": 0.25}}"#).expect("write");
        wait_for(|| rate(&sampling.current(), "x") == Some(0.25)).await;
        std::fs::write(&path, r#"{"default_strategy": {"type": "probabilistic", "param": 7}}"#).expect("write");
        let failed = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
            text.contains(r#"what="sampling_strategies",outcome="failed""#)
        };
        wait_for(failed).await;
        assert_eq!(rate(&sampling.current(), "x"), Some(0.25), "a bad file keeps the last good strategies");
        std::fs::write(&path, r#"{"default_strategy": {"type": "probabilistic", "param": 1}}"#).expect("write");
        wait_for(|| rate(&sampling.current(), "x") == Some(1.0)).await;
        token.cancel();
    }

    #[test]
    fn a_missing_or_bad_file_is_a_start_up_error() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let _guard = runtime.enter();
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.json");
        std::fs::write(&path, "{\"default_strategy\": 3}").expect("write");
        for file in [path.display().to_string(), "/nowhere/s.json".to_owned()] {
            let config = SamplingConfig { strategies_file: file.clone(), ..SamplingConfig::default() };
            let e = Sampling::start(&config, Family::default(), ReloadMetrics::default(), CancellationToken::new())
                .expect_err("refused");
            assert!(e.to_string().contains(&file), "{e}");
        }
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_FILE_BYTES as usize + 1]).expect("write");
        let config = SamplingConfig { strategies_file: big.display().to_string(), ..SamplingConfig::default() };
        let e = Sampling::start(&config, Family::default(), ReloadMetrics::default(), CancellationToken::new())
            .expect_err("too big");
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn the_grpc_messages_have_jaegers_field_numbers() {
        use prost::Message as _;
        let message = wire::Response {
            strategy_type: wire::StrategyType::RateLimiting as i32,
            probabilistic_sampling: None,
            rate_limiting_sampling: Some(wire::RateLimiting { max_traces_per_second: 5 }),
            operation_sampling: Some(wire::PerOperation {
                default_sampling_probability: 0.5,
                default_lower_bound_traces_per_second: 0.0,
                per_operation_strategies: vec![wire::Operation {
                    operation: "a".into(),
                    probabilistic_sampling: Some(wire::Probabilistic { sampling_rate: 1.0 }),
                }],
                default_upper_bound_traces_per_second: 0.0,
            }),
        };
        let one = 1.0f64.to_le_bytes();
        let half = 0.5f64.to_le_bytes();
        // Field 1 (varint 1); 3 (message: field 1 = 5); 4 (message: field 1 double, field 3 message:
        // field 1 "a", field 2 message: field 1 double). Fields at their default are not written.
        let mut expected = vec![0x08, 0x01, 0x1a, 0x02, 0x08, 0x05, 0x22, 0x19, 0x09];
        expected.extend_from_slice(&half);
        expected.extend_from_slice(&[0x1a, 0x0e, 0x0a, 0x01, b'a', 0x12, 0x09, 0x09]);
        expected.extend_from_slice(&one);
        assert_eq!(message.encode_to_vec(), expected);
        let params = wire::Parameters::decode(&[0x0a, 0x03, b'f', b'o', b'o'][..]).expect("decodes");
        assert_eq!(params.service_name, "foo");
    }

    async fn wait_for(mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("condition not met within 10s");
    }
}
