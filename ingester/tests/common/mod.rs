//! What the in-process ingester tests share.

use std::time::Duration;

use spanline_testkit::Broker;

/// An ingester configuration for `broker` and the store at `store`, with test-sized timings: short
/// backoffs, and sessions short enough that a restarted member is not kept waiting by the previous
/// one's (drain and shutdown shorter still, as validation requires).
pub fn config(broker: &Broker, store: &str) -> spanline_ingester::Config {
    let mut c = spanline_ingester::Config::default();
    c.admin.listen = "127.0.0.1:0".parse().expect("addr");
    c.kafka.brokers = broker.bootstrap();
    c.opensearch.url = store.to_owned();
    c.opensearch.min_backoff = Duration::from_millis(20);
    c.opensearch.max_backoff = Duration::from_millis(200);
    c.kafka.session_timeout = Duration::from_secs(6);
    c.kafka.drain_deadline = Duration::from_secs(3);
    c.shutdown_grace = Duration::from_secs(3);
    spanline_common::config::Validate::validate(&c).expect("test configuration is valid");
    c
}
