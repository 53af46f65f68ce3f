//! Values built from files and rebuilt when the files change: TLS certificates, bearer-token lists,
//! credential files. Kubernetes rotates a mounted Secret by swapping a symlink, so the files are
//! read again every `interval` (and at once on SIGHUP) and the value is rebuilt only when their bytes
//! changed. A rebuild that fails (a half-written key, a missing file) keeps the previous value and is
//! logged and counted: a bad rotation never takes a working listener or client down.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio_util::sync::CancellationToken;

use crate::secret::{MAX_SECRET_FILE_BYTES, read_at_most};

/// How often watched files are read when a setting does not say. Kubernetes takes up to a minute
/// to update a mounted Secret, so this adds little to a rotation.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// What was reloaded (a fixed name such as `receiver_tls`).
    pub what: &'static str,
    /// `ok` or `failed`.
    pub outcome: &'static str,
}

/// `<prefix>_reloads_total{what,outcome}`: rebuilds after a file changed.
#[derive(Clone, Debug, Default)]
pub struct ReloadMetrics(Family<ReloadLabels, Counter>);

impl ReloadMetrics {
    pub fn register(registry: &mut Registry, prefix: &str) -> Self {
        let family = Family::<ReloadLabels, Counter>::default();
        registry.sub_registry_with_prefix(prefix).register(
            "reloads",
            "Rebuilds of a value read from files (certificates, tokens, credentials) after they changed, by outcome",
            family.clone(),
        );
        Self(family)
    }

    fn count(&self, what: &'static str, ok: bool) {
        self.0.get_or_create(&ReloadLabels { what, outcome: if ok { "ok" } else { "failed" } }).inc();
    }
}

type Build<T> = dyn Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync;

struct Inner<T> {
    current: RwLock<Arc<T>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

/// A value built from the contents of some files, kept current while anyone holds it.
pub struct Watched<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Watched<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Reads `paths` and builds the first value (an error here is a start-up error), then watches
    /// them until `token` is cancelled or the last clone is dropped. `build` gets the files' bytes in
    /// the order of `paths`; its error must name files, never quote their content.
    pub fn start(
        what: &'static str,
        paths: Vec<PathBuf>,
        interval: Duration,
        build: impl Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync + 'static,
        metrics: ReloadMetrics,
        token: CancellationToken,
    ) -> Result<Self, String> {
        Self::start_bounded(what, paths, MAX_SECRET_FILE_BYTES, interval, build, metrics, token)
    }

    /// [`Watched::start`] for files of up to `max_bytes` each (not secrets: a configuration file);
    /// a larger file is refused like an unreadable one.
    pub fn start_bounded(
        what: &'static str,
        paths: Vec<PathBuf>,
        max_bytes: u64,
        interval: Duration,
        build: impl Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync + 'static,
        metrics: ReloadMetrics,
        token: CancellationToken,
    ) -> Result<Self, String> {
        let files = Files { what, paths, max_bytes };
        let contents = files.read()?;
        let first = build(&contents)?;
        let inner = Arc::new(Inner { current: RwLock::new(Arc::new(first)), task: std::sync::Mutex::new(None) });
        let weak = Arc::downgrade(&inner);
        let task = tokio::spawn(watch(files, contents, interval, Arc::new(build), metrics, weak, token));
        if let Ok(mut slot) = inner.task.lock() {
            *slot = Some(task);
        }
        Ok(Self { inner })
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        match self.inner.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The files a value is built from, and how large each may be.
#[derive(Clone)]
struct Files {
    what: &'static str,
    paths: Vec<PathBuf>,
    max_bytes: u64,
}

impl Files {
    fn read(&self) -> Result<Vec<Vec<u8>>, String> {
        self.paths.iter().map(|path| read_at_most(self.what, path, self.max_bytes)).collect()
    }
}

async fn watch<T: Send + Sync + 'static>(
    files: Files,
    mut last: Vec<Vec<u8>>,
    interval: Duration,
    build: Arc<Build<T>>,
    metrics: ReloadMetrics,
    target: Weak<Inner<T>>,
    token: CancellationToken,
) {
    let what = files.what;
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(what, %error, "cannot listen for sighup: files are read again on the interval only");
            None
        }
    };
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
            () = signalled => {}
        }
        // Off the runtime's threads: a path on a slow mount (or a FIFO) blocks only this read.
        let read = {
            let files = files.clone();
            tokio::task::spawn_blocking(move || files.read())
        };
        let contents = match read.await.unwrap_or_else(|e| Err(format!("reading failed: {e}"))) {
            Ok(contents) => contents,
            Err(reason) => {
                tracing::warn!(what, %reason, "cannot read files again, keeping the current ones");
                metrics.count(what, false);
                continue;
            }
        };
        if contents == last {
            continue;
        }
        if target.strong_count() == 0 {
            return;
        }
        // Off the runtime's threads too: parsing a large file (strategies, a certificate bundle)
        // must not stall the tasks serving requests.
        let built = {
            let build = build.clone();
            tokio::task::spawn_blocking(move || {
                let value = build(&contents);
                (contents, value)
            })
        };
        let (contents, value) = match built.await {
            Ok(built) => built,
            Err(error) => {
                tracing::warn!(what, %error, "rebuilding failed, keeping the current value");
                metrics.count(what, false);
                continue;
            }
        };
        let Some(inner) = target.upgrade() else { return };
        match value {
            Ok(value) => {
                match inner.current.write() {
                    Ok(mut current) => *current = Arc::new(value),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(value),
                }
                tracing::info!(what, "files changed, reloaded");
                metrics.count(what, true);
            }
            Err(reason) => {
                tracing::warn!(what, %reason, "files changed but cannot be used, keeping the current ones");
                metrics.count(what, false);
            }
        }
        last = contents;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_changed_file_is_rebuilt_and_a_bad_one_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("n");
        std::fs::write(&path, "1").expect("write");
        let parse = |files: &[Vec<u8>]| {
            std::str::from_utf8(&files[0])
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| "not a number".to_owned())
        };
        let metrics = ReloadMetrics::default();
        let token = CancellationToken::new();
        let watched =
            Watched::start("n", vec![path.clone()], Duration::from_millis(20), parse, metrics.clone(), token.clone())
                .expect("starts");
        assert_eq!(*watched.get(), 1);
        std::fs::write(&path, "2").expect("write");
        wait_for(|| *watched.get() == 2).await;
        std::fs::write(&path, "two").expect("write");
        let failed = || metrics.0.get_or_create(&ReloadLabels { what: "n", outcome: "failed" }).get();
        wait_for(|| failed() >= 1).await;
        assert_eq!(*watched.get(), 2, "a bad file keeps the last good value");
        std::fs::write(&path, "3").expect("write");
        wait_for(|| *watched.get() == 3).await;
        token.cancel();
    }

    /// A rebuild runs off the runtime's threads: on a one-thread runtime, a build that blocks
    /// until this test's task releases it can only finish if that task still runs meanwhile.
    #[tokio::test(flavor = "current_thread")]
    async fn a_rebuild_does_not_block_the_runtime() {
        use std::sync::{Mutex, atomic::AtomicBool, atomic::Ordering, mpsc};
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("n");
        std::fs::write(&path, "1").expect("write");
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let started = Arc::new(AtomicBool::new(false));
        let building = started.clone();
        let parse = move |files: &[Vec<u8>]| {
            if files[0] == b"2" {
                building.store(true, Ordering::SeqCst);
                let released = released.lock().map_err(|_| "poisoned".to_owned())?;
                // Bounded so that a build on the runtime's thread fails the test instead of hanging it.
                released.recv_timeout(Duration::from_secs(10)).map_err(|_| "never released".to_owned())?;
            }
            std::str::from_utf8(&files[0]).ok().and_then(|s| s.parse::<u32>().ok()).ok_or_else(|| "nan".to_owned())
        };
        let metrics = ReloadMetrics::default();
        let token = CancellationToken::new();
        let watched =
            Watched::start("n", vec![path.clone()], Duration::from_millis(20), parse, metrics.clone(), token.clone())
                .expect("starts");
        std::fs::write(&path, "2").expect("write");
        wait_for(|| started.load(Ordering::SeqCst)).await;
        release.send(()).expect("release");
        wait_for(|| *watched.get() == 2).await;
        let failed = metrics.0.get_or_create(&ReloadLabels { what: "n", outcome: "failed" }).get();
        assert_eq!(failed, 0, "the build was released by this task, not timed out");
        token.cancel();
    }

    #[test]
    fn a_bad_first_read_is_a_start_up_error() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let _guard = runtime.enter();
        let err = Watched::start(
            "n",
            vec![PathBuf::from("/nowhere/n")],
            DEFAULT_INTERVAL,
            |_: &[Vec<u8>]| Ok(()),
            ReloadMetrics::default(),
            CancellationToken::new(),
        )
        .expect_err("missing file");
        assert!(err.contains("/nowhere/n"), "{err}");
    }

    async fn wait_for(mut done: impl FnMut() -> bool) {
        for _ in 0..250 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("condition not met within 5s");
    }
}
