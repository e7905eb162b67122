//! `tabby lab`: multi-node topologies in network namespaces (docs/lab.md).

use anyhow::{bail, Context as _};
use clap::{Args as ClapArgs, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tabby_lab::topology::{PeerKind, Role};
use tabby_lab::{build, topology, LabError, Layout, RunOptions, Topology};

/// `tabby lab` flags.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: LabCommand,
}

/// The lab's name (`--name`).
#[derive(Debug, ClapArgs)]
struct NameArg {
    /// The lab's name: it prefixes every netns (`tlab.<name>.*`) and names its state
    /// directory (/run/tabby-lab/<name>/), so labs of different names run side by side.
    #[arg(long, default_value = "default")]
    name: String,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Build a topology (the built-in default if no file is given), start it, wait for BGP
    /// to converge and print sessions, routes and the pod-to-pod reachability matrix. The lab
    /// keeps running after it returns.
    Up {
        /// Topology file (YAML, docs/lab.md).
        topology: Option<PathBuf>,
        #[command(flatten)]
        name: NameArg,
        /// Seconds to wait for every session and every ping.
        #[arg(long, default_value_t = 90)]
        timeout: u64,
        /// RUST_LOG of the tabby processes.
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Print the sessions of every process and a fresh reachability matrix.
    Status {
        #[command(flatten)]
        name: NameArg,
    },
    /// Run a command inside a node, reflector or peer (by name), or a pod (namespace/name).
    Exec {
        #[command(flatten)]
        name: NameArg,
        /// `node1`, `tor1`, `default/web-1`, ...
        target: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Stop a host's process (tabby node, tabby route-reflector, BIRD or GoBGP) and start it
    /// again.
    Restart {
        #[command(flatten)]
        name: NameArg,
        /// The node, reflector or peer.
        host: String,
        /// RUST_LOG of the restarted tabby process.
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Remove the lab: processes, namespaces (with their links) and files. Also after a crash
    /// or a kill -9 of `lab up`.
    Down {
        #[command(flatten)]
        name: NameArg,
    },
    /// Print the built-in default topology (a starting point for your own).
    Default,
}

/// Runs `tabby lab`.
pub fn run(args: Args) -> ExitCode {
    match dispatch(args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tabby lab: {e:#}");
            // Exit code 2 for what the user gave (DESIGN §5), 1 for what happened at run time.
            let bad_input = e.downcast_ref::<topology::TopologyError>().is_some()
                || e.downcast_ref::<LabError>().is_some_and(|l| {
                    matches!(
                        l,
                        LabError::Topology(_) | LabError::Resource(_) | LabError::NoSuchTarget(_)
                    )
                });
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

fn say(msg: &str) {
    println!("==> {msg}");
}

fn run_options(log_level: &str) -> anyhow::Result<RunOptions> {
    Ok(RunOptions {
        tabby: std::env::current_exe().context("cannot find the tabby binary")?,
        log_level: log_level.to_string(),
    })
}

/// The lab needs root (namespaces) and a few programs; say which is missing, and how to
/// get it, before anything is built.
fn preflight(daemons: &[PeerKind]) -> anyhow::Result<()> {
    let needs = |kind: PeerKind| daemons.contains(&kind);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        bail!("tabby lab needs root (it creates network namespaces); run it with sudo");
    }
    let mut programs = vec![
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
        ("sysctl", "procps"),
    ];
    if needs(PeerKind::Bird) {
        programs.extend([("bird", "bird2"), ("birdc", "bird2")]);
    }
    if needs(PeerKind::Gobgp) {
        programs.extend([("gobgpd", "gobgpd"), ("gobgp", "gobgpd")]);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<String> = programs
        .iter()
        .filter(|(p, _)| !std::env::split_paths(&path).any(|d| d.join(p).is_file()))
        .map(|(p, pkg)| format!("{p} (Debian package {pkg})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing programs: {} (scripts/install-deps.sh installs them)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn dispatch(command: LabCommand) -> anyhow::Result<ExitCode> {
    match command {
        LabCommand::Up {
            topology,
            name,
            timeout,
            log_level,
        } => up(topology.as_deref(), &name.name, timeout, &log_level),
        LabCommand::Status { name } => {
            let run = run_options("info")?;
            let (lab, report) = tabby_lab::status(&name.name, &run)?;
            println!(
                "lab {:?}: state in {}",
                lab.name,
                Layout::new(&lab.name).dir().display()
            );
            print!("{}", report.render());
            Ok(if report.problems().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        LabCommand::Exec {
            name,
            target,
            command,
        } => {
            let layout = Layout::new(&name.name);
            let lab = layout
                .read_lab()
                .map_err(|_| LabError::NotFound(name.name.clone()))?;
            let ns = tabby_lab::target_netns(&lab, &layout, &target)?;
            let status = std::process::Command::new("ip")
                .args(["netns", "exec", &ns])
                .args(&command)
                .status()
                .context("cannot run ip netns exec")?;
            Ok(ExitCode::from(
                status
                    .code()
                    .and_then(|c| u8::try_from(c).ok())
                    .unwrap_or(1),
            ))
        }
        LabCommand::Restart {
            name,
            host,
            log_level,
        } => {
            let layout = Layout::new(&name.name);
            let lab = layout
                .read_lab()
                .map_err(|_| LabError::NotFound(name.name.clone()))?;
            let pid = build::restart(&lab, &layout, &host, &run_options(&log_level)?)?;
            say(&format!("restarted {host} (pid {pid})"));
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Down { name } => {
            preflight(&[])?;
            let layout = Layout::new(&name.name);
            if !build::exists(&layout) {
                say(&format!("no lab named {:?}: nothing to remove", name.name));
                return Ok(ExitCode::SUCCESS);
            }
            let removed = tabby_lab::down(&layout)?;
            say(&format!(
                "lab {:?} removed: {} processes stopped, {} namespaces deleted{}",
                name.name,
                removed.processes,
                removed.netns,
                if removed.state {
                    format!(", {} removed", layout.dir().display())
                } else {
                    String::new()
                }
            ));
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Default => {
            print!("{}", topology::DEFAULT_TOPOLOGY);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn up(file: Option<&Path>, name: &str, timeout: u64, log_level: &str) -> anyhow::Result<ExitCode> {
    let (topology, source, base) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let source = path.display().to_string();
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let base = std::fs::canonicalize(&base).unwrap_or(base);
            (Topology::parse(&text, &source)?, source, base)
        }
        None => (
            Topology::default_topology(),
            "the built-in default topology".to_string(),
            PathBuf::from("."),
        ),
    };
    let lab = topology.resolve(name, &source, &base)?;
    let daemons: Vec<PeerKind> = lab
        .hosts
        .iter()
        .filter_map(|h| match h.role {
            Role::Peer { daemon, .. } => Some(daemon),
            _ => None,
        })
        .collect();
    preflight(&daemons)?;
    let run = run_options(log_level)?;
    say(&format!("building lab {name:?} from {source}"));
    let layout = tabby_lab::up(&lab, &run, &say)?;
    say("waiting for BGP to converge");
    let timeout = Duration::from_secs(timeout);
    let report = tabby_lab::converge(&lab, &layout, &run, timeout, &say)?;
    println!();
    print!("{}", report.render());
    println!();
    let logs = layout.dir().join("logs");
    match report.check(timeout) {
        Ok(()) => {
            say(&format!(
                "lab {name:?} is up: every session established and every pod reaches every pod ({:.1} s)",
                report.elapsed.as_secs_f64()
            ));
            let node = lab.nodes().next().map_or("NODE", |n| n.name.as_str());
            say(&format!(
                "logs in {}; `tabby lab exec --name {name} {node} -- ip route` looks inside; `tabby lab down --name {name}` removes it",
                logs.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("tabby lab: {e}");
            eprintln!(
                "tabby lab: the lab keeps running for inspection (logs in {}); `tabby lab down --name {name}` removes it",
                logs.display()
            );
            Ok(ExitCode::from(1))
        }
    }
}
