//! `agent`: the Jaeger agent's UDP ports — Thrift compact `emitBatch` on 6831, Thrift binary on
//! 6832 — for clients that still send to a local agent.
//!
//! Started by [`crate::pipeline`] when `receivers.jaeger_compact_listen` or
//! `receivers.jaeger_binary_listen` is set. UDP cannot be acknowledged: this is Spanline's one
//! at-most-once input. A datagram is taken into a bounded queue (charged to
//! `limits.max_inflight_bytes` as it arrives) and exported from there like any request, at most
//! [`CONCURRENT`] at a time; a datagram that finds the queue full, the budget spent, or that
//! cannot be translated or exported is dropped and counted by reason
//! (`spanline_collector_agent_datagrams_total{port,outcome}`), never silently. Clients that need
//! their spans acknowledged use OTLP, Zipkin or Jaeger's HTTP endpoint.

use std::sync::Arc;

use bytes::Bytes;
use tokio::{net::UdpSocket, sync::Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{
    budget::Charge,
    error::Error,
    metrics::DatagramLabels,
    pipeline::Exporter,
    receive::{export_translated, jaeger_limits},
};

/// Datagrams waiting for an export.
pub const QUEUE: usize = 256;

/// Exports from one port at once (each waits for Kafka's acknowledgement).
pub const CONCURRENT: usize = 32;

/// The largest datagram read (a UDP payload is at most 65 507 bytes).
const MAX_DATAGRAM: usize = 65_536;

/// Which Thrift protocol a port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Compact,
    Binary,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Compact => "jaeger_compact",
            Protocol::Binary => "jaeger_binary",
        }
    }
}

/// Reads datagrams from `socket` until `token` is cancelled, then exports those already queued.
pub async fn serve(
    socket: UdpSocket,
    protocol: Protocol,
    exporter: Exporter,
    token: CancellationToken,
) -> Result<(), Error> {
    let (queue, mut queued) = tokio::sync::mpsc::channel::<(Bytes, Charge)>(QUEUE);
    let count = {
        let exporter = exporter.clone();
        move |outcome: &'static str| {
            exporter.metrics().datagrams.get_or_create(&DatagramLabels { port: protocol.label(), outcome }).inc();
        }
    };
    // Aborted with this task (shutdown's deadline), its exports with it.
    let worker = {
        let (exporter, count) = (exporter.clone(), count.clone());
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(CONCURRENT));
            let mut exports = tokio::task::JoinSet::new();
            while let Some((datagram, charge)) = queued.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let (exporter, count) = (exporter.clone(), count.clone());
                exports.spawn(async move {
                    let outcome = match export(&exporter, protocol, datagram, charge).await {
                        Ok(()) => "exported",
                        Err(error @ (Error::Malformed(_) | Error::OverLimit(_))) => {
                            tracing::debug!(port = protocol.label(), %error, "jaeger agent datagram dropped");
                            "malformed"
                        }
                        Err(error) => {
                            tracing::debug!(port = protocol.label(), %error, "jaeger agent datagram not exported");
                            "failed"
                        }
                    };
                    count(outcome);
                    drop(slot);
                });
                while exports.try_join_next().is_some() {}
            }
            while exports.join_next().await.is_some() {}
        }))
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // What the kernel dropped before this loop read it (the socket's receive buffer full in a
    // burst), from /proc/net/udp: counted too, so a datagram is never lost without a count.
    let mut kernel = KernelDrops::of(&socket);
    let mut tick = tokio::time::interval(KERNEL_DROPS_INTERVAL);
    loop {
        let received = tokio::select! {
            () = token.cancelled() => break,
            _ = tick.tick() => {
                let dropped = kernel.since_last();
                if dropped > 0 {
                    exporter.metrics().datagrams.get_or_create(&DatagramLabels { port: protocol.label(), outcome: "kernel_dropped" }).inc_by(dropped);
                }
                continue;
            }
            received = socket.recv_from(&mut buf) => received,
        };
        let len = match received {
            Ok((len, _from)) => len,
            Err(error) => {
                // Not a datagram's fault (the socket itself): said, and not spun on.
                tracing::warn!(port = protocol.label(), %error, "cannot read the jaeger agent socket");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(charge) = exporter.budget().charge(len, "a jaeger agent datagram") else {
            count("over_budget");
            continue;
        };
        if queue.try_send((Bytes::copy_from_slice(&buf[..len]), charge)).is_err() {
            count("queue_full");
        }
    }
    drop(queue);
    let _ = worker.await;
    Ok(())
}

/// How often the kernel's drop count is read.
const KERNEL_DROPS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The kernel's count of datagrams dropped on one socket (the `drops` column of `/proc/net/udp` and
/// `udp6`, found by the socket's inode). Counts nothing where /proc cannot say (not Linux).
struct KernelDrops {
    inode: Option<String>,
    last: u64,
}

impl KernelDrops {
    fn of(socket: &UdpSocket) -> Self {
        use std::os::fd::AsRawFd as _;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok();
        // `socket:[12345]`
        let inode = link.and_then(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned));
        let mut drops = Self { inode, last: 0 };
        drops.last = drops.total().unwrap_or(0);
        drops
    }

    /// The socket's drops so far.
    fn total(&self) -> Option<u64> {
        let inode = self.inode.as_deref()?;
        ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
                (fields.get(9) == Some(&inode)).then(|| fields.get(12)?.parse().ok()).flatten()
            })
        })
    }

    /// Drops since the last call.
    fn since_last(&mut self) -> u64 {
        let Some(total) = self.total() else { return 0 };
        let new = total.saturating_sub(self.last);
        self.last = total;
        new
    }
}

/// Translates and exports one datagram.
async fn export(exporter: &Exporter, protocol: Protocol, datagram: Bytes, charge: Charge) -> Result<(), Error> {
    let _slot = exporter.admit()?;
    export_translated(exporter, datagram, charge, "invalid_jaeger_span", false, |raw| {
        let limits = jaeger_limits(exporter);
        let translated = match protocol {
            Protocol::Compact => crate::jaeger::emit_batch_from_compact(raw, &limits),
            Protocol::Binary => crate::jaeger::emit_batch_from_binary(raw, &limits),
        };
        translated.map_err(Into::into)
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams the kernel drops on a socket nobody reads (its receive buffer full) are read from
    /// /proc, once each.
    #[tokio::test]
    async fn the_kernels_drops_on_the_socket_are_counted() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let mut drops = KernelDrops::of(&socket);
        assert!(drops.inode.is_some(), "the socket's inode is found");
        assert_eq!(drops.since_last(), 0);
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = socket.local_addr().expect("addr");
        let datagram = [7u8; 1024];
        // Far past the default receive buffer (about 208 KiB).
        for _ in 0..4_000 {
            let _ = sender.send_to(&datagram, to);
        }
        let dropped = drops.since_last();
        assert!(dropped > 0, "the kernel dropped some: {dropped}");
        assert_eq!(drops.since_last(), 0, "counted once");
    }
}
