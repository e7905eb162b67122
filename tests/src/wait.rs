//! Waiting for convergence, with a failure message that says what was awaited and why it
//! did not come.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// The deadline for a BGP session or a route to converge. Generous: it bounds a wait, it is
/// not a performance assertion (sessions use 1 s connect retry, 3 s keepalive, 9 s hold).
pub const CONVERGE: Duration = Duration::from_secs(30);

/// Something that can describe its state when a wait fails: a peer's view of its sessions,
/// the tail of its log.
pub trait Diagnose {
    /// A multi-line description for a failure message.
    fn diagnose(&self) -> String;
}

/// Polls `cond` every 200 ms until it returns `Ok(true)`, or fails after `timeout` with an
/// error naming `what`, the last error `cond` returned, and the diagnostics of `parties`.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    parties: &[&dyn Diagnose],
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_err;
    loop {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => last_err = None,
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut msg = format!("timed out after {timeout:?} waiting until {what}");
    if let Some(e) = last_err {
        msg.push_str(&format!("\nlast check failed: {e:#}"));
    }
    for p in parties {
        msg.push_str("\n\n");
        msg.push_str(&p.diagnose());
    }
    bail!(msg)
}

/// Polls `bad` for `period` and fails (naming `what`, with diagnostics) if it ever returns
/// `Ok(true)`. For "never happens" checks, run after a positive wait proved the setup works.
pub fn never_during(
    period: Duration,
    what: &str,
    parties: &[&dyn Diagnose],
    mut bad: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        if bad()? {
            let mut msg = format!("{what}, which must never happen");
            for p in parties {
                msg.push_str("\n\n");
                msg.push_str(&p.diagnose());
            }
            bail!(msg);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
