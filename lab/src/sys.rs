//! The thin shell around the system: `ip`, `sysctl`, `kill`, and detached processes.
//!
//! The lab shells out to `ip` rather than speaking netlink: every step it takes is then a
//! command a person can read in an error and repeat by hand, and the crate needs no
//! `unsafe` (`setns`) of its own.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

/// A command that failed.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// The program could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its standard error (or status when silent).
        stderr: String,
    },
}

/// The command line of `c`, for messages.
pub fn show(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `c` to completion; its stdout when it succeeds.
pub fn run(c: &mut Command) -> Result<String, SysError> {
    let command = show(c);
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SysError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(SysError::Failed {
            command,
            stderr: if stderr.is_empty() {
                out.status.to_string()
            } else {
                stderr
            },
        })
    }
}

/// Runs `ip <args>`.
pub fn ip(args: &[&str]) -> Result<String, SysError> {
    run(Command::new("ip").args(args))
}

/// Runs `ip -n <ns> <args>`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String, SysError> {
    run(Command::new("ip").args(["-n", ns]).args(args))
}

/// A command running `program` inside netns `ns` (`ip netns exec` execs it, so the child's
/// pid is the program's).
pub fn command_in(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Sets sysctls inside `ns` (`sysctl -w key=value ...`).
pub fn sysctl_in(ns: &str, settings: &[(String, &str)]) -> Result<(), SysError> {
    let mut c = command_in(ns, "sysctl");
    c.arg("-q").arg("-w");
    for (k, v) in settings {
        c.arg(format!("{k}={v}"));
    }
    run(&mut c).map(|_| ())
}

/// The names of all network namespaces `ip netns` knows.
pub fn netns_list() -> Result<Vec<String>, SysError> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The pids of the processes inside `ns`.
pub fn netns_pids(ns: &str) -> Vec<u32> {
    ip(&["netns", "pids", ns])
        .map(|o| {
            o.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts `c` detached from the caller: its own process group (so the terminal's Ctrl-C
/// that stops `lab up` does not stop the lab), stdin from /dev/null, stdout and stderr
/// appended to `log`. Returns its pid; the child outlives the caller.
pub fn spawn_detached(mut c: Command, log: &Path) -> Result<u32, SysError> {
    use std::os::unix::process::CommandExt as _;
    let command = show(&c);
    let open = || {
        File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| SysError::Spawn {
                command: command.clone(),
                source,
            })
    };
    let (out, err) = (open()?, open()?);
    let child = c
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| SysError::Spawn {
            command: command.clone(),
            source,
        })?;
    Ok(child.id())
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
}

/// Sends `signal` (`TERM`, `KILL`) to `pid`; a process already gone is not an error.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
