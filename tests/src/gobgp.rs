//! GoBGP as a BGP peer: `gobgpd` with a TOML config run inside a namespace, its gRPC API on a
//! unix socket in the test's directory (so the `gobgp` CLI needs no `ip netns exec` and no
//! port can clash), routes originated with `gobgp global rib add`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cmd::run;
use crate::daemon::Daemon;
use crate::netns::{command_in, Netns};
use crate::peer::{canonical_prefix, Family, Neighbor, PeerDaemon};
use crate::wait::{wait_until, Diagnose};

/// A route GoBGP originates (`gobgp global rib add`).
#[derive(Debug, Clone)]
pub struct GobgpRoute {
    /// The prefix, e.g. `10.3.0.0/24` or `fd03::/64`.
    pub prefix: String,
    /// Next hop; without one GoBGP uses the session's local address, which is only valid
    /// for the session's own family, so IPv6 routes should name one.
    pub next_hop: Option<IpAddr>,
    /// Standard communities, `"65000:100"`.
    pub communities: Vec<String>,
    /// Large communities, `"4200000000:1:2"`.
    pub large_communities: Vec<String>,
}

impl GobgpRoute {
    /// A route without attributes.
    pub fn new(prefix: &str, next_hop: Option<IpAddr>) -> GobgpRoute {
        GobgpRoute {
            prefix: prefix.to_owned(),
            next_hop,
            communities: Vec::new(),
            large_communities: Vec::new(),
        }
    }
}

/// What gobgpd is configured with.
#[derive(Debug, Clone)]
pub struct GobgpConfig {
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Local AS.
    pub asn: u32,
    /// Neighbors.
    pub neighbors: Vec<Neighbor>,
    /// Routes to originate once the daemon runs.
    pub routes: Vec<GobgpRoute>,
    /// Hold time offered (keepalive is a third of it).
    pub hold_time: u16,
    /// Graceful restart (RFC 4724) on every session with this restart time, for every
    /// family; `None`: off.
    pub graceful_restart: Option<u16>,
    /// With graceful restart, also the Graceful Notification bit (RFC 8538).
    pub graceful_notification: bool,
}

impl GobgpConfig {
    /// A config with no neighbors and no routes, hold time 9 s.
    pub fn new(router_id: Ipv4Addr, asn: u32) -> GobgpConfig {
        GobgpConfig {
            router_id,
            asn,
            neighbors: Vec::new(),
            routes: Vec::new(),
            hold_time: 9,
            graceful_restart: None,
            graceful_notification: false,
        }
    }

    /// The gobgpd TOML text.
    pub fn render(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(
            c,
            "[global.config]\n  as = {}\n  router-id = \"{}\"\n  port = 179",
            self.asn, self.router_id
        );
        let keepalive = (self.hold_time / 3).max(1);
        for n in &self.neighbors {
            let _ = writeln!(
                c,
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}",
                n.address, n.asn
            );
            let _ = writeln!(
                c,
                "  [neighbors.transport.config]\n    local-address = \"{}\"\n    passive-mode = {}",
                n.local, n.passive
            );
            let _ = writeln!(
                c,
                "  [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = {}\n    \
                 keepalive-interval = {keepalive}\n    idle-hold-time-after-reset = 1",
                self.hold_time
            );
            if let Some(time) = self.graceful_restart {
                let _ = writeln!(
                    c,
                    "  [neighbors.graceful-restart.config]\n    enabled = true\n    \
                     restart-time = {time}\n    notification-enabled = {}",
                    self.graceful_notification
                );
            }
            for f in &n.families {
                let name = match f {
                    Family::V4 => "ipv4-unicast",
                    Family::V6 => "ipv6-unicast",
                };
                let _ = writeln!(
                    c,
                    "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      \
                     afi-safi-name = \"{name}\""
                );
                if self.graceful_restart.is_some() {
                    c.push_str(
                        "    [neighbors.afi-safis.mp-graceful-restart.config]\n      \
                         enabled = true\n",
                    );
                }
            }
        }
        c
    }
}

/// A running gobgpd; killed on drop.
#[derive(Debug)]
pub struct Gobgp {
    ns: String,
    config: GobgpConfig,
    conf_path: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    daemon: Daemon,
}

/// RFC 4271 state names by GoBGP API `session_state` number.
const STATES: [&str; 7] = [
    "Unknown",
    "Idle",
    "Connect",
    "Active",
    "OpenSent",
    "OpenConfirm",
    "Established",
];

impl Gobgp {
    /// Writes the config into `dir`, starts gobgpd in `ns`, waits for its API and adds the
    /// configured routes.
    pub fn start(ns: &Netns, dir: &Path, config: GobgpConfig) -> Result<Gobgp> {
        let tag = config.router_id.to_string().replace('.', "_");
        let conf_path = dir.join(format!("gobgpd-{tag}.toml"));
        let sock = dir.join(format!("gobgpd-{tag}.sock"));
        let log = dir.join(format!("gobgpd-{tag}.log"));
        std::fs::write(&conf_path, config.render())?;
        let daemon = Self::spawn(ns.name(), &conf_path, &sock, &log)?;
        let mut g = Gobgp {
            ns: ns.name().to_owned(),
            config,
            conf_path,
            sock,
            log,
            daemon,
        };
        g.wait_ready()?;
        g.add_configured_routes()?;
        Ok(g)
    }

    fn spawn(ns: &str, conf: &Path, sock: &Path, log: &Path) -> Result<Daemon> {
        let _ = std::fs::remove_file(sock);
        let mut cmd = command_in(ns, "gobgpd");
        cmd.arg("-f")
            .arg(conf)
            .args(["-t", "toml", "--pprof-disable", "-p", "-l", "debug"])
            .arg(format!("--api-hosts=unix://{}", sock.display()));
        Daemon::spawn("gobgpd", cmd, log)
    }

    fn wait_ready(&mut self) -> Result<()> {
        wait_until(
            Duration::from_secs(10),
            "gobgpd answers on its API socket",
            &[&*self],
            || Ok(self.gobgp(&["neighbor"]).is_ok()),
        )
    }

    fn add_configured_routes(&mut self) -> Result<()> {
        for r in self.config.routes.clone() {
            self.add_route(&r)?;
        }
        Ok(())
    }

    /// Runs `gobgp --target unix://<sock> <args>` and returns its output.
    pub fn gobgp(&self, args: &[&str]) -> Result<String> {
        run(Command::new("gobgp")
            .arg("--target")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args))
    }

    /// The configuration gobgpd runs with.
    pub fn config(&self) -> &GobgpConfig {
        &self.config
    }

    /// Originates `route` now (it is not added to the config: see [`GobgpConfig::routes`]).
    pub fn add_route(&mut self, route: &GobgpRoute) -> Result<()> {
        let family = match Family::of(&route.prefix) {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        let mut args = vec!["global", "rib", "add", "-a", family, route.prefix.as_str()];
        let next_hop = route.next_hop.map(|n| n.to_string());
        if let Some(nh) = &next_hop {
            args.extend(["nexthop", nh.as_str()]);
        }
        let communities = route.communities.join(",");
        if !communities.is_empty() {
            args.extend(["community", communities.as_str()]);
        }
        let large = route.large_communities.join(",");
        if !large.is_empty() {
            args.extend(["large-community", large.as_str()]);
        }
        self.gobgp(&args).map(drop)
    }

    /// The `gobgp neighbor <addr> -j` JSON.
    pub fn neighbor(&self, neighbor: IpAddr) -> Result<Value> {
        let out = self.gobgp(&["neighbor", &neighbor.to_string(), "-j"])?;
        serde_json::from_str(&out).with_context(|| format!("bad JSON from gobgp: {out}"))
    }

    /// The `gobgp global rib -a <family> -j` JSON: prefix -> paths.
    pub fn rib(&self, family: Family) -> Result<Value> {
        let af = match family {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        let out = self.gobgp(&["global", "rib", "-a", af, "-j"])?;
        if out.trim().is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_str(&out).with_context(|| format!("bad JSON from gobgp: {out}"))
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

impl PeerDaemon for Gobgp {
    fn kind(&self) -> &'static str {
        "GoBGP"
    }

    fn session_state(&self, neighbor: IpAddr) -> Result<String> {
        let n = self.neighbor(neighbor)?;
        let state = n["state"]["session_state"].as_u64().unwrap_or(0);
        Ok(STATES
            .get(usize::try_from(state)?)
            .copied()
            .unwrap_or("Unknown")
            .to_owned())
    }

    fn routes_from(&self, neighbor: IpAddr) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            let rib = self.rib(family)?;
            let Some(map) = rib.as_object() else { continue };
            for (prefix, paths) in map {
                let from_neighbor = paths.as_array().into_iter().flatten().any(|p| {
                    p["neighbor-ip"]
                        .as_str()
                        .and_then(|a| a.parse::<IpAddr>().ok())
                        == Some(neighbor)
                });
                if from_neighbor {
                    out.push(canonical_prefix(prefix)?);
                }
            }
        }
        Ok(out)
    }

    fn withdraw(&mut self, prefix: &str) -> Result<()> {
        let want = canonical_prefix(prefix)?;
        let before = self.config.routes.len();
        self.config
            .routes
            .retain(|r| canonical_prefix(&r.prefix).ok().as_ref() != Some(&want));
        if self.config.routes.len() == before {
            bail!("GoBGP does not originate {prefix}");
        }
        let af = match Family::of(prefix) {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        self.gobgp(&["global", "rib", "del", "-a", af, prefix])
            .map(drop)
    }

    fn kill_and_restart(&mut self) -> Result<()> {
        self.daemon.kill();
        self.daemon = Self::spawn(&self.ns, &self.conf_path, &self.sock, &self.log)?;
        self.wait_ready()?;
        self.add_configured_routes()
    }

    fn session_errors(&self, neighbor: IpAddr) -> Result<String> {
        let key = format!("Key={neighbor}");
        Ok(self
            .log()
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == key))
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("notification") || l.contains("peer down") || l.contains("error")
            })
            .fold(String::new(), |mut acc, l| {
                acc.push_str(l);
                acc.push('\n');
                acc
            }))
    }
}

impl Diagnose for Gobgp {
    fn diagnose(&self) -> String {
        let neighbors = self
            .gobgp(&["neighbor"])
            .unwrap_or_else(|e| format!("gobgp failed: {e:#}"));
        let mut rib = String::new();
        for af in ["ipv4", "ipv6"] {
            rib.push_str(
                &self
                    .gobgp(&["global", "rib", "-a", af])
                    .unwrap_or_else(|e| format!("gobgp failed: {e:#}")),
            );
        }
        format!(
            "=== GoBGP in {} ===\n{neighbors}\n{rib}\n--- log tail ({}) ---\n{}",
            self.ns,
            self.log.display(),
            self.daemon.log_tail(25)
        )
    }
}
