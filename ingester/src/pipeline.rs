//! Builds the ingester: metrics → OpenSearch clients and templates → consumer with its group
//! membership ([`consume`]) → one worker per assigned partition, and the admin server, under one
//! cancellation token. On shutdown every worker stops taking records, writes its last batches,
//! stores and commits, within `shutdown_grace`; past it the rest is abandoned uncommitted (it will
//! be read again); then the consumer closes and, as a dynamic member, leaves the group (a static member
//! keeps its partitions for its restart until the session times out). All of it within
//! `shutdown_grace`: past it the process stops anyway.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use opensearch::http::{Method, headers::HeaderMap};
use prometheus_client::registry::Registry;
use rdkafka::{ClientConfig, consumer::Consumer};
use spanline_common::{admin, kafka::without_value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    batch::Limits,
    bulk::{BulkClient, classify},
    commit,
    config::Config,
    config::{Encoding, OutOfRange},
    consume::{self, IngestConsumer, IngestContext},
    deadletter::{DeadLetters, RecordLimits},
    document::{IndexNames, Routing},
    error::Error,
    health::Cause,
    idle,
    metrics::{Metrics, RefusalLabels},
    store::{self, Node},
    templates,
    worker::{RateLimiter, ServiceCache, Shared},
};

/// A running ingester.
#[derive(Debug)]
pub struct Running {
    pub admin_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<Result<(), Error>>,
}

/// librdkafka settings for the ingester's consumer (secret files read now; the error names the
/// setting, never the secret).
pub fn consumer_config(config: &Config) -> Result<ClientConfig, Error> {
    let kafka = &config.kafka;
    let client = kafka.client();
    let mut cfg = client.base("spanline-ingester").map_err(Error::Setup)?;
    cfg.set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored by `commit::store` only once their documents are durable.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", &kafka.assignment_strategy)
        .set("session.timeout.ms", kafka.session_timeout.as_millis().to_string())
        .set("max.poll.interval.ms", kafka.max_poll_interval.as_millis().to_string())
        .set("statistics.interval.ms", "5000")
        .set("queued.max.messages.kbytes", (kafka.max_prefetch_bytes.bytes() / 1024).max(1).to_string());
    if !kafka.group_instance_id.is_empty() {
        cfg.set("group.instance.id", &kafka.group_instance_id);
    }
    client.apply_overrides(&mut cfg);
    Ok(cfg)
}

/// Waits until OpenSearch answers `GET /` and the templates are in place, retrying every few
/// seconds; gives up only on shutdown. While the store refuses the ingester's credentials (401,
/// 403) or the TLS handshake fails, the ingester is marked stalled (`store_refusing`), each refusal
/// is counted (`bulk_refusals{level="start"}`) and logged with what to check.
pub async fn prepare_store(
    nodes: &[Node],
    config: &Config,
    names: &IndexNames,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let mut delay = Duration::from_millis(200);
    // Held while the store refuses us; dropped (released) on return.
    let mut stalled = None;
    // Each attempt uses one node, the next attempt the next one.
    for os in nodes.iter().cycle() {
        let attempt = async {
            let response = match os.send(Method::Get, "/", HeaderMap::new(), None::<Vec<u8>>, None).await {
                Ok(response) => response,
                Err(e) => {
                    return Err(match store::tls_failure(&e) {
                        Some(reason) => Error::StoreRefused {
                            status: 0,
                            error_type: classify::TLS.into(),
                            reason: classify::clip_to(reason, classify::MAX_REASON),
                        },
                        None => Error::OpenSearch(format!("{} unreachable: {e}", config.opensearch.url)),
                    });
                }
            };
            if let Some(len) = response.content_length().filter(|&n| n > crate::bulk::SMALL_ANSWER) {
                return Err(Error::OpenSearch(format!("{} answered GET / with {len} bytes", config.opensearch.url)));
            }
            let status = response.status_code().as_u16();
            if matches!(status, 401 | 403) {
                let body = response.bytes().await.unwrap_or_default();
                let said = classify::refusal(status, &body);
                return Err(Error::StoreRefused { status, error_type: said.error_type, reason: said.reason });
            }
            let info: serde_json::Value = response.json().await.map_err(|e| Error::OpenSearch(e.to_string()))?;
            tracing::info!(
                url = %config.opensearch.url,
                distribution = %info["version"]["distribution"].as_str().unwrap_or("elasticsearch"),
                version = %info["version"]["number"].as_str().unwrap_or("?"),
                "connected to the search store"
            );
            if config.opensearch.create_templates {
                templates::install(os, names, &config.opensearch.index_prefix, config.opensearch.template_priority)
                    .await?;
            }
            Ok::<(), Error>(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            // Only configuration can fix these: waiting would hide the cause behind retries.
            Err(error) if error.is_fatal_at_start() => return Err(error),
            Err(Error::StoreRefused { status, error_type, reason }) => {
                stalled.get_or_insert_with(|| metrics.health.stall(Cause::StoreRefusing));
                metrics
                    .bulk_refusals
                    .get_or_create(&RefusalLabels {
                        level: classify::Level::Start.as_str(),
                        status: classify::status_label(status),
                    })
                    .inc();
                tracing::error!(
                    url = %config.opensearch.url,
                    status,
                    %error_type,
                    %reason,
                    check = classify::what_to_check(classify::Level::Start, status, &error_type),
                    retry_in = ?delay,
                    "search store refuses the ingester; nothing is consumed until it accepts"
                );
            }
            Err(error) => tracing::warn!(%error, retry_in = ?delay, "search store not ready"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Err(Error::Aborted),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    Err(Error::Setup("no opensearch node configured".into()))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// What [`build`] makes.
pub struct Parts {
    pub consumer: Arc<IngestConsumer>,
    /// Failures reported by workers that must stop the ingester.
    pub failed: tokio::sync::mpsc::UnboundedReceiver<Error>,
    pub nodes: Vec<Node>,
    pub names: IndexNames,
}

/// The store clients, the state every worker shares and the consumer (not yet subscribed or
/// assigned), from `config` and the consumer's librdkafka settings `client`.
pub fn build(
    config: &Config,
    metrics: Metrics,
    client: ClientConfig,
    rate: Option<RateLimiter>,
) -> Result<Parts, Error> {
    let nodes = store::nodes(&config.opensearch, metrics.reloads.clone())?;
    let names = IndexNames::new(&config.opensearch.index_prefix);
    let (failures, failed) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        topic: config.kafka.topic.clone(),
        encoding: config.kafka.encoding,
        routing: Routing {
            names: names.clone(),
            max_age_micros: micros(config.opensearch.max_span_age),
            max_skew_micros: micros(config.opensearch.max_clock_skew),
            clamp: config.opensearch.out_of_range == OutOfRange::Clamp,
            trace_ids: config.opensearch.trace_ids,
        },
        limits: Limits {
            max_bytes: config.batch.max_bytes.as_usize(),
            max_docs: config.batch.max_docs,
            flush_interval: config.batch.flush_interval,
        },
        record_limits: RecordLimits::from_config(config),
        max_inflight_bulks: config.batch.max_inflight_bulks,
        bulk: BulkClient::new(nodes.clone(), &config.opensearch, metrics.clone()),
        dead_letters: DeadLetters::new(config, metrics.clone())?,
        services: std::sync::Mutex::new(ServiceCache::default()),
        metrics,
        failures,
        rate,
        // Re-driven dead letters hold spans whose calls were counted when first read.
        dependencies: (config.dependencies.enabled && config.kafka.encoding != Encoding::DeadLetter)
            .then(|| config.dependencies.clone()),
    });
    let context = IngestContext::new(shared, tokio::runtime::Handle::current(), config.kafka.drain_deadline);
    let consumer: IngestConsumer = client.create_with_context(context).map_err(without_value).map_err(Error::Kafka)?;
    let consumer = Arc::new(consumer);
    consume::register(&consumer);
    Ok(Parts { consumer, failed, nodes, names })
}

/// The part of the shutdown grace kept for the final commit and leaving the group: draining gets
/// the rest.
fn close_reserve(grace: Duration) -> Duration {
    (grace / 4).min(Duration::from_secs(5))
}

/// Drains every worker, commits, stops the polling thread and closes the consumer (leaving the
/// group when it has one), all within `grace`. librdkafka blocks for all of it, so it runs off the
/// runtime; with the broker gone its commit and close can block far longer, so past `grace` this
/// returns anyway and the caller exits without waiting for it (records after the last commit are
/// read again by the partition's next owner: deterministic ids make that harmless).
pub async fn close(
    consumer: Arc<IngestConsumer>,
    poller: Option<(std::thread::JoinHandle<()>, CancellationToken)>,
    grace: Duration,
) {
    let drain = grace.saturating_sub(close_reserve(grace));
    let closing = tokio::task::spawn_blocking(move || {
        consumer.context().drain_all(drain);
        commit::commit_now(consumer.as_ref());
        if let Some((thread, stop)) = poller {
            stop.cancel();
            let _ = thread.join();
        }
        drop(consumer);
    });
    if tokio::time::timeout(grace, closing).await.is_err() {
        tracing::warn!(
            ?grace,
            "shutdown grace passed before the consumer closed (broker unreachable?); stopping without the final commit"
        );
    }
}

/// Binds the admin port and starts the ingester in the background.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let listener = TcpListener::bind(config.admin.listen)
        .await
        .map_err(|e| Error::Setup(format!("cannot listen for admin on {}: {e}", config.admin.listen)))?;
    let admin_addr = listener.local_addr().map_err(|e| Error::Setup(e.to_string()))?;
    let admin_token = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        listener,
        admin::router(Arc::new(registry), metrics.health.readiness()),
        admin_token.clone(),
    ));
    tracing::info!(
        admin = %admin_addr, brokers = %config.kafka.brokers, kafka_security = config.kafka.client().security_protocol(),
        topic = %config.kafka.topic,
        group = %config.kafka.group_id, dead_letter_topic = %config.kafka.dead_letter.topic,
        // The URLs carry no credentials (refused by validation); the secrets are never logged.
        opensearch = %config.opensearch.url, opensearch_auth = store::auth_mode(&config.opensearch),
        opensearch_client_cert = !config.opensearch.cert_file.is_empty(),
        max_bytes = %config.batch.max_bytes, max_docs = config.batch.max_docs, flush_interval = ?config.batch.flush_interval,
        "spanline-ingester starting"
    );
    for weakened in config.kafka.client().weakened_verification() {
        tracing::warn!(setting = %weakened, "kafka tls verification weakened by kafka.librdkafka");
    }
    if config.opensearch.tls_insecure && store::auth_mode(&config.opensearch) != "none" {
        tracing::warn!("opensearch.tls_insecure: credentials are sent to a store whose certificate is not checked");
    }

    let Parts { consumer, mut failed, nodes, names } =
        build(&config, metrics.clone(), consumer_config(&config)?, None)?;
    let grace = config.shutdown_grace;

    let task = tokio::spawn(async move {
        let stop_polling = CancellationToken::new();
        let stop_watching = CancellationToken::new();
        let mut poller = None;
        let mut idle_task = None;
        let result = async {
            prepare_store(&nodes, &config, &names, &metrics, &shutdown).await?;
            poller = Some(consume::spawn_poller(consumer.clone(), stop_polling.clone())?);
            consumer.subscribe(&[&config.kafka.topic]).map_err(Error::Kafka)?;
            tracing::info!(
                topic = %config.kafka.topic, group = %config.kafka.group_id,
                max_inflight_bulks = config.batch.max_inflight_bulks, "subscribed, ready"
            );
            metrics.health.set_started(true);
            idle_task = Some(tokio::spawn(idle::watch(
                consumer.clone(),
                config.kafka.topic.clone(),
                config.kafka.stalled_group_timeout,
                metrics.clone(),
                stop_watching.clone(),
            )));
            tokio::select! {
                () = shutdown.cancelled() => Ok(()),
                Some(error) = failed.recv() => Err(error),
            }
        }
        .await;
        stop_watching.cancel();
        if let Some(task) = idle_task {
            let _ = task.await;
        }
        metrics.health.set_started(false);
        if let Err(error) = &result
            && !matches!(error, Error::Aborted)
        {
            tracing::error!(%error, "ingester stopping after a failure");
        }
        tracing::info!(?grace, "draining: flushing every partition, finishing bulk requests, committing");
        close(consumer, poller.map(|p| (p, stop_polling)), grace).await;
        admin_token.cancel();
        let _ = admin_task.await;
        tracing::info!("ingester stopped");
        match result {
            Err(Error::Aborted) => Ok(()),
            other => other,
        }
    });
    Ok(Running { admin_addr, task })
}

/// Runs the ingester until `shutdown` is cancelled and drained.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, shutdown).await?;
    running.task.await??;
    Ok(())
}
