//! Every log line of a test binary, kept in memory so a test can search what the code under test
//! logged: the reason it gives for a refusal, or a secret that must never be there. A process has
//! one global subscriber, so the first [`capture`] decides the level for the whole binary; every
//! test of a binary should ask for the same one.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// Installs the capturing subscriber at `level` (once per process; later calls keep the first
/// level). Call it before starting what logs.
pub fn capture(level: tracing::Level) {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(level)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buffer
    });
}

/// Everything captured so far (empty before [`capture`]).
pub fn text() -> String {
    LOGS.get()
        .map(|logs| String::from_utf8_lossy(&logs.lock().unwrap_or_else(PoisonError::into_inner)).into_owned())
        .unwrap_or_default()
}

/// The captured lines containing every one of `containing`.
pub fn lines(containing: &[&str]) -> Vec<String> {
    text().lines().filter(|l| containing.iter().all(|c| l.contains(c))).map(str::to_owned).collect()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
