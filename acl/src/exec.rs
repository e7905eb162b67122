//! Running the kernel tools (`nft`, `iptables-restore`, `ipset`), optionally inside a
//! network namespace (`ip netns exec`), with their input on stdin.

use std::io::Write;
use std::process::{Command, Stdio};

/// A tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program could not be started or waited for.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The program exited with an error.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        program: String,
        /// Its exit status.
        status: String,
        /// Its stderr.
        stderr: String,
    },
    /// Its output could not be understood.
    #[error("cannot parse the output of {program}: {reason}")]
    Parse {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
}

/// How to run the tools: directly, or inside a named network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exec {
    netns: Option<String>,
}

impl Exec {
    /// Runs tools in the current network namespace.
    pub fn host() -> Exec {
        Exec::default()
    }

    /// Runs tools inside the namespace `ip netns` knows as `name`.
    pub fn in_netns(name: impl Into<String>) -> Exec {
        Exec {
            netns: Some(name.into()),
        }
    }

    /// The command for `program` with `args`.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]).args(args);
                c
            }
            None => {
                let mut c = Command::new(program);
                c.args(args);
                c
            }
        }
    }

    /// Runs `program args` with `input` on stdin; returns stdout.
    pub fn run(&self, program: &str, args: &[&str], input: &str) -> Result<String, ExecError> {
        let what = || format!("{program} {}", args.join(" "));
        let mut child = self
            .command(program, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ExecError::Spawn {
                program: what(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A tool that fails early closes stdin; its exit status tells why.
            let _ = stdin.write_all(input.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| ExecError::Spawn {
                program: what(),
                source,
            })?;
        if !out.status.success() {
            return Err(ExecError::Failed {
                program: what(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
