//! What the `tabby bench` scenarios share: child processes and scratch directories that are
//! ended and deleted on drop, and on SIGINT or SIGTERM together with the benchmark's network
//! namespaces; the exit code of a command; CPU and memory figures from /proc.

use crate::bench_cmd::cleanup_all;
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Pids of live children; `None` once a signal has cleaned up.
static CHILDREN: Mutex<Option<Vec<u32>>> = Mutex::new(Some(Vec::new()));
/// Scratch directories of this process.
static SCRATCH: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static NEXT_SCRATCH: AtomicU32 = AtomicU32::new(0);

/// A child process, killed (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Guarded {
    child: Child,
}

impl Guarded {
    pub(crate) fn spawn(cmd: &mut Command) -> anyhow::Result<Guarded> {
        let mut live = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pids) = live.as_mut() else {
            bail!("interrupted");
        };
        let child = cmd.spawn()?;
        pids.push(child.id());
        Ok(Guarded { child })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub(crate) fn stop(&mut self, grace: Duration) {
        if !self.exited() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .stderr(Stdio::null())
                .status();
            let t0 = Instant::now();
            while !self.exited() && t0.elapsed() < grace {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut live = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pids) = live.as_mut() {
            pids.retain(|p| *p != self.child.id());
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// A directory for a DUT's configuration and logs, deleted when dropped.
pub(crate) struct Scratch {
    pub(crate) path: PathBuf,
}

impl Scratch {
    pub(crate) fn create(what: &str) -> anyhow::Result<Scratch> {
        let path = std::env::temp_dir().join(format!(
            "tabby-bench-{what}-{}-{}",
            std::process::id(),
            NEXT_SCRATCH.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        SCRATCH
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.clone());
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        SCRATCH
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != self.path);
    }
}

pub(crate) fn cleanup_everything() {
    let pids = CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    for pid in pids {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    cleanup_all();
    for dir in SCRATCH.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Runs `outer(args)` on a blocking thread, the main thread waiting for it or for a signal
/// (SIGINT, SIGTERM), which ends every child, namespace and scratch directory first.
pub(crate) fn with_signals<A: Send + 'static>(
    args: A,
    outer: fn(&A) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let work = tokio::task::spawn_blocking(move || outer(&args));
        let code = tokio::select! {
            r = work => return r?,
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        cleanup_everything();
        eprintln!("tabby: interrupted; benchmark processes, namespaces and files deleted");
        std::process::exit(code)
    })
}

/// The exit of a `tabby bench` command: 2 when its arguments are invalid (`valid`), else
/// `run`'s result (1 with the error printed, 0).
pub(crate) fn finish(
    valid: Result<(), String>,
    run: impl FnOnce() -> anyhow::Result<()>,
) -> ExitCode {
    if let Err(e) = valid {
        eprintln!("tabby: {e}");
        return ExitCode::from(2);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tabby: {e:#}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Figures from /proc (no libc, no unsafe).

/// USER_HZ: the unit of the times in /proc/<pid>/stat (100 on every Linux ABI).
pub(crate) const TICKS_PER_SECOND: f64 = 100.0;

/// A file of a process in /proc (`pid` `None`: this process).
pub(crate) fn proc_file(pid: Option<u32>, file: &str) -> PathBuf {
    match pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}/{file}")),
        None => PathBuf::from(format!("/proc/self/{file}")),
    }
}

/// Fields 14-17 of a /proc/<pid>/stat: utime, stime, cutime, cstime, in ticks.
pub(crate) fn stat_ticks(stat: &Path) -> anyhow::Result<[u64; 4]> {
    let text = std::fs::read_to_string(stat)?;
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/<pid>/stat")?;
    // After "pid (comm)" the first field is field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let mut out = [0; 4];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = fields
            .get(11 + i)
            .context("short /proc/<pid>/stat")?
            .parse()?;
    }
    Ok(out)
}

/// utime + stime of a process (all its threads), in ticks.
pub(crate) fn cpu_ticks(stat: &Path) -> anyhow::Result<u64> {
    let [u, s, _, _] = stat_ticks(stat)?;
    Ok(u + s)
}

/// A `kB` line of /proc/<pid>/status (`VmHWM:`, `VmRSS:`).
pub(crate) fn status_kib(status: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(status)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Seconds from `from` to `to`, negative when `to` is earlier.
pub(crate) fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn this_process_has_cpu_ticks_and_a_resident_size() {
        assert!(cpu_ticks(&proc_file(None, "stat")).is_ok());
        assert!(status_kib(&proc_file(None, "status"), "VmRSS:").unwrap() > 0);
        assert_eq!(status_kib(&proc_file(None, "status"), "NoSuchKey:"), None);
    }

    #[test]
    fn a_truncated_stat_file_is_an_error() {
        let dir = Scratch::create("proc-test").unwrap();
        let stat = dir.path.join("stat");
        std::fs::write(&stat, "1 (tabby) S 0 1").unwrap();
        assert!(cpu_ticks(&stat).is_err());
        std::fs::write(&stat, "no parenthesis").unwrap();
        assert!(cpu_ticks(&stat).is_err());
    }

    #[test]
    fn seconds_between_are_negative_backwards() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let later = t + Duration::from_millis(1500);
        assert_eq!(seconds_between(t, later), 1.5);
        assert_eq!(seconds_between(later, t), -1.5);
    }
}
