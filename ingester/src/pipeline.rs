//! Builds the ingester: metrics → OpenSearch client and templates → consumer → the consume loop,
//! and the admin server, under one cancellation token. On shutdown the loop stops taking records,
//! writes and stores its last batch and commits, within `shutdown_grace`; past it the batch is
//! abandoned uncommitted (it will be read again).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use opensearch::http::{Method, headers::HeaderMap};
use prometheus_client::registry::Registry;
use rdkafka::{ClientConfig, consumer::Consumer};
use spanline_common::admin::{self, Readiness};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    batch::{Batcher, Limits},
    bulk::{BulkClient, clients},
    config::Config,
    config::OutOfRange,
    consume::{Consume, IngestConsumer, IngestContext, ServiceCache},
    deadletter::DeadLetters,
    document::{IndexNames, Routing},
    error::Error,
    metrics::Metrics,
    templates,
};

/// A running ingester.
#[derive(Debug)]
pub struct Running {
    pub admin_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<Result<(), Error>>,
}

/// librdkafka settings for the ingester's consumer.
pub fn consumer_config(config: &Config) -> ClientConfig {
    let kafka = &config.kafka;
    let client = kafka.client();
    let mut cfg = client.base("spanline-ingester");
    cfg.set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored by `commit::store` only once their documents are durable.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", &kafka.assignment_strategy)
        .set("session.timeout.ms", kafka.session_timeout.as_millis().to_string())
        .set("max.poll.interval.ms", kafka.max_poll_interval.as_millis().to_string())
        .set("statistics.interval.ms", "5000");
    client.apply_overrides(&mut cfg);
    cfg
}

/// Waits until OpenSearch answers `GET /` and the templates are in place, retrying every few
/// seconds; gives up only on shutdown.
async fn prepare_store(
    nodes: &[opensearch::OpenSearch],
    config: &Config,
    names: &IndexNames,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let mut delay = Duration::from_millis(200);
    // Each attempt uses one node, the next attempt the next one.
    for os in nodes.iter().cycle() {
        let attempt = async {
            let response = os
                .send(Method::Get, "/", HeaderMap::new(), None::<&()>, None::<Vec<u8>>, None)
                .await
                .map_err(|e| Error::OpenSearch(format!("{} unreachable: {e}", config.opensearch.url)))?;
            let info: serde_json::Value = response.json().await.map_err(|e| Error::OpenSearch(e.to_string()))?;
            tracing::info!(
                url = %config.opensearch.url,
                distribution = %info["version"]["distribution"].as_str().unwrap_or("elasticsearch"),
                version = %info["version"]["number"].as_str().unwrap_or("?"),
                "connected to the search store"
            );
            if config.opensearch.create_templates {
                templates::install(os, names, &config.opensearch.index_prefix).await?;
            }
            Ok::<(), Error>(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
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

/// Binds the admin port and starts the ingester in the background.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ready = Readiness::default();
    let listener = TcpListener::bind(config.admin.listen)
        .await
        .map_err(|e| Error::Setup(format!("cannot listen for admin on {}: {e}", config.admin.listen)))?;
    let admin_addr = listener.local_addr().map_err(|e| Error::Setup(e.to_string()))?;
    let admin_token = CancellationToken::new();
    let admin_task =
        tokio::spawn(admin::serve(listener, admin::router(Arc::new(registry), ready.clone()), admin_token.clone()));
    tracing::info!(
        admin = %admin_addr, brokers = %config.kafka.brokers, topic = %config.kafka.topic,
        group = %config.kafka.group_id, dead_letter_topic = %config.kafka.dead_letter_topic, opensearch = %config.opensearch.url,
        max_bytes = %config.batch.max_bytes, max_docs = config.batch.max_docs, flush_interval = ?config.batch.flush_interval,
        "spanline-ingester starting"
    );

    let nodes = clients(&config.opensearch)?;
    let names = IndexNames::new(&config.opensearch.index_prefix);
    let consumer: IngestConsumer = consumer_config(&config)
        .create_with_context(IngestContext { metrics: metrics.clone(), topic: config.kafka.topic.clone() })
        .map_err(Error::Kafka)?;
    let consumer = Arc::new(consumer);
    let bulk = BulkClient::new(nodes.clone(), &config.opensearch, metrics.clone());
    let dead_letters = DeadLetters::new(&config, metrics.clone())?;
    let limits = Limits {
        max_bytes: config.batch.max_bytes.as_usize(),
        max_docs: config.batch.max_docs,
        flush_interval: config.batch.flush_interval,
    };
    let grace = config.shutdown_grace;

    let task = tokio::spawn(async move {
        let result = async {
            prepare_store(&nodes, &config, &names, &shutdown).await?;
            consumer.subscribe(&[&config.kafka.topic]).map_err(Error::Kafka)?;
            tracing::info!(topic = %config.kafka.topic, group = %config.kafka.group_id, "subscribed, ready");
            ready.set(true);
            let abort = CancellationToken::new();
            let watchdog = {
                let (shutdown, abort) = (shutdown.clone(), abort.clone());
                tokio::spawn(async move {
                    shutdown.cancelled().await;
                    tracing::info!(?grace, "draining: writing the open batch and committing");
                    tokio::time::sleep(grace).await;
                    abort.cancel();
                })
            };
            let consume = Consume {
                consumer: consumer.clone(),
                topic: config.kafka.topic.clone(),
                encoding: config.kafka.encoding,
                routing: Routing {
                    names,
                    max_age_micros: micros(config.opensearch.max_span_age),
                    max_skew_micros: micros(config.opensearch.max_clock_skew),
                    clamp: config.opensearch.out_of_range == OutOfRange::Clamp,
                },
                batcher: Batcher::new(limits),
                bulk,
                dead_letters,
                services: ServiceCache::default(),
                metrics,
            };
            let result = consume.run(shutdown.clone(), abort).await;
            watchdog.abort();
            result
        }
        .await;
        ready.set(false);
        match &result {
            Ok(()) | Err(Error::Aborted) if shutdown.is_cancelled() => {}
            Ok(()) => {}
            Err(error) => tracing::error!(%error, "ingester stopped"),
        }
        if matches!(result, Err(Error::Aborted)) {
            tracing::warn!(
                "shutdown deadline passed before the last batch was durable; its records will be read again"
            );
        }
        // Dropping the consumer closes it, which leaves the group.
        drop(consumer);
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
