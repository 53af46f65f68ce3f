//! The root of each process's cancellation tree: SIGINT or SIGTERM cancels the token every task
//! watches. Components stop intake first, drain, and are aborted after their grace period.

use tokio_util::sync::CancellationToken;

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    /// The exit status a shell gives a process ended by this signal (128 + its number).
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Interrupt => 130,
            Self::Terminate => 143,
        }
    }
}

/// Resolves on the next SIGINT (Ctrl-C) or SIGTERM, saying which.
pub async fn signal() -> Signal {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => Signal::Interrupt,
        () = term => Signal::Terminate,
    }
}

/// A token cancelled on the first signal: the root of the process's cancellation tree. A second
/// signal during the drain exits at once (status 130 or 143), as a user pressing Ctrl-C twice
/// expects: what was not committed is read again by the next owner.
pub fn token_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    // SIGHUP means "read your files again" ([`crate::reload`]), whatever is configured: without a
    // handler it would kill the process. Each watcher listens for it on its own.
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangup) => {
            let watch = token.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = watch.cancelled() => break,
                        received = hangup.recv() => match received {
                            Some(()) => tracing::info!("received sighup, reading certificate and credential files again"),
                            None => break,
                        },
                    }
                }
            });
        }
        Err(error) => tracing::warn!(%error, "cannot listen for sighup: it will stop the process"),
    }
    tokio::spawn(async move {
        match signal().await {
            Signal::Interrupt => tracing::info!("received sigint, shutting down"),
            Signal::Terminate => tracing::info!("received sigterm, shutting down"),
        }
        child.cancel();
        let second = signal().await;
        tracing::warn!(signal = ?second, "second signal: exiting without finishing the drain");
        std::process::exit(second.exit_code());
    });
    token
}
