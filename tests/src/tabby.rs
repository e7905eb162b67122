//! The `tabby` binary as a standalone BGP speaker (`tabby speaker`) inside a namespace,
//! queried with `tabby status --json` and `tabby routes`.
//!
//! Which binary: `$TABBY_BIN` if set; else `tabby` next to the directory holding this test
//! executable (`<target>/<profile>/deps/tabby_tests-*` -> `<target>/<profile>/tabby`), which
//! follows `CARGO_TARGET_DIR` and the profile without configuration; else
//! `<workspace>/target/debug/tabby`. Cargo cannot build a binary of another package for an
//! integration test (artifact dependencies are unstable), so run `cargo build -p tabby`
//! first: `tests/run.sh` does both.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cmd::run;
use crate::daemon::Daemon;
use crate::netns::{command_in, Netns};
use crate::peer::canonical_prefix;
use crate::wait::Diagnose;

/// Where the status endpoint listens, inside the speaker's own namespace (each test has its
/// own namespaces, so one fixed port never clashes).
pub const HTTP: &str = "127.0.0.1:9099";

/// The `tabby` binary to test (see the module docs).
pub fn tabby_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TABBY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join("tabby"));
        }
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/tabby"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no tabby binary at {candidates:?}: run `cargo build -p tabby` first \
                 (tests/run.sh does), or set TABBY_BIN"
            )
        })
}

/// A peer of the speaker: `--peer ADDR:AS[:OPTION...]`.
#[derive(Debug, Clone)]
pub struct TabbyPeer {
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's AS as tabby is told (a test may make it wrong on purpose).
    pub asn: u32,
    /// Only accept the peer's connections.
    pub passive: bool,
    /// Further options, as `tabby speaker --help` spells them (`rr-client`,
    /// `password=SECRET`, `max-prefixes=N/SECONDS`, ...); see the builder methods.
    pub options: Vec<String>,
}

impl TabbyPeer {
    /// An active peer.
    pub fn new(address: IpAddr, asn: u32) -> TabbyPeer {
        TabbyPeer {
            address,
            asn,
            passive: false,
            options: Vec::new(),
        }
    }

    /// The peer is a route reflection client (`rr-client`; needs a cluster ID).
    pub fn rr_client(mut self) -> TabbyPeer {
        self.options.push("rr-client".to_owned());
        self
    }

    /// TCP-MD5 with this password (`password=SECRET`).
    pub fn password(mut self, password: &str) -> TabbyPeer {
        self.options.push(format!("password={password}"));
        self
    }

    /// A prefix limit: a warning above `max` (`max-prefixes=N`), or with `restart_after`
    /// a CEASE and a new session after that many seconds (`max-prefixes=N/SECONDS`).
    pub fn max_prefixes(mut self, max: u32, restart_after: Option<u32>) -> TabbyPeer {
        self.options.push(match restart_after {
            Some(secs) => format!("max-prefixes={max}/{secs}"),
            None => format!("max-prefixes={max}"),
        });
        self
    }

    /// The `--peer` argument. An IPv6 address is written bare too (`fd00::2:65002`): the
    /// AS is the last `:`-separated field, after the options are taken off.
    pub fn arg(&self) -> String {
        let mut s = format!("{}:{}", self.address, self.asn);
        if self.passive {
            s.push_str(":passive");
        }
        for o in &self.options {
            s.push(':');
            s.push_str(o);
        }
        s
    }
}

/// The flags of `tabby speaker`.
#[derive(Debug, Clone)]
pub struct TabbyConfig {
    /// `--router-id`.
    pub router_id: Ipv4Addr,
    /// `--asn`.
    pub asn: u32,
    /// `--peer`, one per peer.
    pub peers: Vec<TabbyPeer>,
    /// `--originate`, one per prefix.
    pub originate: Vec<String>,
    /// `--next-hop-v6`: the next hop of IPv6 routes sent over IPv4 sessions.
    pub next_hop_v6: Option<Ipv6Addr>,
    /// `--local-address`.
    pub local_address: Option<IpAddr>,
    /// `--hold-time`.
    pub hold_time: u16,
    /// `--cluster-id`: be a route reflector.
    pub cluster_id: Option<Ipv4Addr>,
    /// `--graceful-restart-time` (tabby's default, 120 s, when `None`; 0 disables).
    pub graceful_restart_time: Option<u16>,
    /// `--restarting`: start as a restarting speaker (RFC 4724 §4.1).
    pub restarting: bool,
}

impl TabbyConfig {
    /// No peers, nothing originated, hold time 9 s.
    pub fn new(router_id: Ipv4Addr, asn: u32) -> TabbyConfig {
        TabbyConfig {
            router_id,
            asn,
            peers: Vec::new(),
            originate: Vec::new(),
            next_hop_v6: None,
            local_address: None,
            hold_time: 9,
            cluster_id: None,
            graceful_restart_time: None,
            restarting: false,
        }
    }

    /// The command-line arguments after `tabby`.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "speaker".to_owned(),
            "--router-id".to_owned(),
            self.router_id.to_string(),
            "--asn".to_owned(),
            self.asn.to_string(),
            "--hold-time".to_owned(),
            self.hold_time.to_string(),
            "--http-listen".to_owned(),
            HTTP.to_owned(),
        ];
        for p in &self.peers {
            a.extend(["--peer".to_owned(), p.arg()]);
        }
        for o in &self.originate {
            a.extend(["--originate".to_owned(), o.clone()]);
        }
        if let Some(nh) = self.next_hop_v6 {
            a.extend(["--next-hop-v6".to_owned(), nh.to_string()]);
        }
        if let Some(l) = self.local_address {
            a.extend(["--local-address".to_owned(), l.to_string()]);
        }
        if let Some(id) = self.cluster_id {
            a.extend(["--cluster-id".to_owned(), id.to_string()]);
        }
        if let Some(t) = self.graceful_restart_time {
            a.extend(["--graceful-restart-time".to_owned(), t.to_string()]);
        }
        if self.restarting {
            a.push("--restarting".to_owned());
        }
        a
    }
}

/// A running `tabby speaker`; killed on drop (its log tail printed if the test panics).
#[derive(Debug)]
pub struct Tabby {
    ns: String,
    bin: PathBuf,
    config: TabbyConfig,
    log: PathBuf,
    daemon: Daemon,
}

impl Tabby {
    /// Starts `tabby speaker` in `ns` with `config`, logging to `dir/tabby.log`; returns once
    /// `tabby status` answers.
    pub fn start(ns: &Netns, dir: &Path, config: TabbyConfig) -> Result<Tabby> {
        let bin = tabby_bin()?;
        let log = dir.join(format!("tabby-{}.log", config.router_id));
        let daemon = Self::spawn(ns.name(), &bin, &config, &log)?;
        let mut t = Tabby {
            ns: ns.name().to_owned(),
            bin,
            config,
            log,
            daemon,
        };
        t.wait_ready()?;
        Ok(t)
    }

    fn spawn(ns: &str, bin: &Path, config: &TabbyConfig, log: &Path) -> Result<Daemon> {
        let mut cmd = command_in(ns, &bin.to_string_lossy());
        cmd.args(config.args());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        let mut f = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)?;
        writeln!(f, "### tabby {}", config.args().join(" "))?;
        Daemon::spawn("tabby", cmd, log)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.daemon.check_running()?;
            match self.status() {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    bail!(
                        "tabby does not answer `tabby status`: {e:#}\n\n{}",
                        self.diagnose()
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The configuration tabby runs with.
    pub fn config(&self) -> &TabbyConfig {
        &self.config
    }

    /// Runs `tabby <args>` inside the speaker's namespace.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        run(command_in(&self.ns, &self.bin.to_string_lossy()).args(args))
    }

    /// `tabby status --http ... --json`.
    pub fn status(&self) -> Result<Value> {
        let out = self.cli(&["status", "--http", HTTP, "--json"])?;
        serde_json::from_str(&out).with_context(|| format!("bad JSON from tabby status: {out}"))
    }

    /// The `bgp.peers[]` entry of `peer`, if tabby shows one.
    pub fn peer(&self, peer: IpAddr) -> Result<Option<Value>> {
        let status = self.status()?;
        Ok(status["bgp"]["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["peer"].as_str().and_then(|a| a.parse::<IpAddr>().ok()) == Some(peer))
            .cloned())
    }

    /// Every peer address tabby's status shows.
    pub fn peer_addresses(&self) -> Result<Vec<IpAddr>> {
        let status = self.status()?;
        status["bgp"]["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                p["peer"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .with_context(|| format!("peer without an address in {p}"))
            })
            .collect()
    }

    /// The state tabby shows for `peer` (RFC 4271 name).
    pub fn session_state(&self, peer: IpAddr) -> Result<String> {
        let p = self
            .peer(peer)?
            .with_context(|| format!("tabby's status shows no peer {peer}"))?;
        Ok(p["state"].as_str().unwrap_or("?").to_owned())
    }

    /// Whether tabby shows the session with `peer` Established.
    pub fn is_established(&self, peer: IpAddr) -> Result<bool> {
        Ok(self.session_state(peer)? == "Established")
    }

    /// `tabby routes --http ...`.
    pub fn routes(&self) -> Result<Value> {
        let out = self.cli(&["routes", "--http", HTTP])?;
        serde_json::from_str(&out).with_context(|| format!("bad JSON from tabby routes: {out}"))
    }

    /// The prefixes (canonical) tabby has received from `peer`.
    pub fn routes_from(&self, peer: IpAddr) -> Result<Vec<String>> {
        let routes = self.routes()?;
        routes["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["peer"].as_str().and_then(|a| a.parse::<IpAddr>().ok()) == Some(peer))
            .flat_map(|p| p["routes"].as_array().into_iter().flatten())
            .map(|r| {
                r["prefix"]
                    .as_str()
                    .with_context(|| format!("route without a prefix: {r}"))
                    .and_then(canonical_prefix)
            })
            .collect()
    }

    /// Whether tabby has `prefix` from `peer`.
    pub fn has_route_from(&self, peer: IpAddr, prefix: &str) -> Result<bool> {
        Ok(self.routes_from(peer)?.contains(&canonical_prefix(prefix)?))
    }

    /// The `/routes` entry of `prefix` received from `peer` (with `next_hop`,
    /// `originator_id`, `cluster_list`, `stale`, `best`, ...), if tabby has it.
    pub fn route_from(&self, peer: IpAddr, prefix: &str) -> Result<Option<Value>> {
        let want = canonical_prefix(prefix)?;
        let routes = self.routes()?;
        Ok(routes["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["peer"].as_str().and_then(|a| a.parse::<IpAddr>().ok()) == Some(peer))
            .flat_map(|p| p["routes"].as_array().into_iter().flatten())
            .find(|r| {
                r["prefix"]
                    .as_str()
                    .and_then(|p| canonical_prefix(p).ok())
                    .as_ref()
                    == Some(&want)
            })
            .cloned())
    }

    /// A counter of `peer` in `/status` (`received`, `accepted`, `stale`, `updates_sent`,
    /// `established_count`, ...); an error if tabby does not show the peer or the counter.
    pub fn peer_counter(&self, peer: IpAddr, name: &str) -> Result<u64> {
        let p = self
            .peer(peer)?
            .with_context(|| format!("tabby's status shows no peer {peer}"))?;
        p[name]
            .as_u64()
            .with_context(|| format!("no counter {name:?} in {p}"))
    }

    /// Kills tabby (SIGKILL: no NOTIFICATION, as in a crash).
    pub fn kill(&mut self) {
        self.daemon.kill();
    }

    /// Starts tabby again with `config` after [`Tabby::kill`] or [`Tabby::stop`].
    pub fn start_again(&mut self, config: TabbyConfig) -> Result<()> {
        self.daemon.kill();
        self.config = config;
        self.daemon = Self::spawn(&self.ns, &self.bin, &self.config, &self.log)?;
        self.wait_ready()
    }

    /// Sends SIGTERM and waits for tabby to exit; returns its exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.daemon.stop("TERM", Duration::from_secs(10))
    }

    /// Stops tabby (SIGTERM) and starts it again with `config`.
    pub fn restart(&mut self, config: TabbyConfig) -> Result<()> {
        let status = self.stop()?;
        if !status.success() {
            bail!("tabby exited with {status} on SIGTERM\n{}", self.diagnose());
        }
        self.config = config;
        self.daemon = Self::spawn(&self.ns, &self.bin, &self.config, &self.log)?;
        self.wait_ready()
    }
}

impl Diagnose for Tabby {
    fn diagnose(&self) -> String {
        let status = self
            .status()
            .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default())
            .unwrap_or_else(|e| format!("tabby status failed: {e:#}"));
        let routes = self
            .routes()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| format!("tabby routes failed: {e:#}"));
        format!(
            "=== tabby in {} ===\n{status}\n{routes}\n--- log tail ({}) ---\n{}",
            self.ns,
            self.log.display(),
            self.daemon.log_tail(40)
        )
    }
}
