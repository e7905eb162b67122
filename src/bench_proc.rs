//! What the `tabby bench` scenarios share: child processes and scratch directories that are
//! ended and deleted on drop, and on SIGINT or SIGTERM together with the benchmark's network
//! namespaces.

use crate::bench_cmd::cleanup_all;
use anyhow::{bail, Context as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
