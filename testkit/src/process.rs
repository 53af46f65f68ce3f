//! Process accounting from the kernel (`/proc`): CPU seconds and peak resident memory of a child,
//! as the operating system counts them. Used by the memory tests and by `spanline-bench`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing running.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Killed {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Killed {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// The ingester `binary` with the tests' timings (6 s sessions, 3 s drains, 400-document batches
/// flushed every 200 ms) against `bootstrap` and `store`, its admin server on `admin`, then `extra`
/// (`SPANLINE_INGESTER__...`, value); its log in the temporary directory, named by the admin port.
pub fn ingester(binary: &Path, bootstrap: &str, store: &str, admin: u16, extra: &[(&str, &str)]) -> Killed {
    let log = std::fs::File::create(std::env::temp_dir().join(format!("spanline-ingester-{admin}.log")));
    Killed(
        Command::new(binary)
            .env("SPANLINE_INGESTER__KAFKA__BROKERS", bootstrap)
            .env("SPANLINE_INGESTER__KAFKA__SESSION_TIMEOUT", "6s")
            .env("SPANLINE_INGESTER__SHUTDOWN_GRACE", "3s")
            .env("SPANLINE_INGESTER__KAFKA__DRAIN_DEADLINE", "3s")
            .env("SPANLINE_INGESTER__OPENSEARCH__URL", store)
            .env("SPANLINE_INGESTER__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
            .env("SPANLINE_INGESTER__BATCH__MAX_DOCS", "400")
            .env("SPANLINE_INGESTER__BATCH__FLUSH_INTERVAL", "200ms")
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(log.map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
            .spawn()
            .expect("ingester binary starts"),
    )
}

/// Runs the release binary `name` with `env` (its admin listener on a free port) and returns what it
/// printed, after checking it stopped at start with a failure status, as a bad setting must.
pub fn refused_at_start<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(name: &str, env: &[(K, V)]) -> String {
    let prefix = if name.ends_with("collector") { "SPANLINE_COLLECTOR" } else { "SPANLINE_INGESTER" };
    let output = Command::new(release_bin(name))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(format!("{prefix}__ADMIN__LISTEN"), "127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{name} stops at start: {text}");
    text
}

/// A release binary of this workspace (`target/release/NAME`, or under `$CARGO_TARGET_DIR`): the
/// memory tests measure what users run. `scripts/test.sh` (`make test`) builds them first.
pub fn release_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from);
    let path = target.join("release").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --release --locked --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Peak resident memory of a live child in bytes; panics when the kernel does not say, so a memory
/// bound can never pass on a zero.
pub fn peak_rss_of(pid: u32) -> u64 {
    match peak_rss(pid) {
        Some(bytes) if bytes > 0 => bytes,
        other => panic!("cannot read VmHWM of process {pid} from /proc: {other:?}"),
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux when it cannot be asked).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds used so far by `pid` (its threads included).
pub fn cpu_seconds(pid: u32, ticks: f64) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the state field.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

/// Peak resident set size of `pid` in bytes (`VmHWM`).
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Current resident set size of `pid` in bytes (`VmRSS`).
pub fn rss(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let ticks = clock_ticks();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds(pid, ticks).is_some_and(|s| s > 0.0));
        assert!(peak_rss(pid).is_some_and(|b| b > 1 << 20));
        assert!(rss(pid).is_some_and(|b| b > 1 << 20));
    }
}
