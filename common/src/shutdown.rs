//! The root of each process's cancellation tree: SIGINT or SIGTERM cancels the token every task
//! watches. Components stop intake first, drain, and are aborted after their grace period.

use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
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
        () = ctrl_c => tracing::info!("received sigint, shutting down"),
        () = term => tracing::info!("received sigterm, shutting down"),
    }
}

/// A token cancelled on the first signal: the root of the process's cancellation tree. A second
/// signal during the drain exits at once (status 130), as a user pressing Ctrl-C twice expects:
/// what was not committed is read again by the next owner.
pub fn token_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        signal().await;
        child.cancel();
        signal().await;
        tracing::warn!("second signal: exiting without finishing the drain");
        std::process::exit(130);
    });
    token
}
