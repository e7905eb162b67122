//! Running commands and turning their failures into errors that say what ran.

use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Runs `cmd` to completion; returns its stdout, or an error naming the command, its exit
/// status and its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` to completion and returns its output whatever its exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))
}

/// Runs a program given as a list of words (see [`run`]).
pub fn sh(words: &[&str]) -> Result<String> {
    let (program, args) = words.split_first().context("empty command")?;
    run(Command::new(program).args(args))
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Sends `signal` (e.g. `"TERM"`) to process `pid` with kill(1): the workspace forbids
/// `unsafe`, so no libc here.
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    run(Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string()))
    .map(drop)
}
