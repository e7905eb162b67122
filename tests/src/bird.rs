//! BIRD 2 as a BGP peer: a config file written from [`BirdConfig`], `bird -f` run inside a
//! namespace, queried with `birdc` over its control socket.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cmd::run;
use crate::daemon::Daemon;
use crate::netns::{command_in, Netns};
use crate::peer::{canonical_prefix, Family, Neighbor, PeerDaemon};
use crate::wait::{wait_until, Diagnose};

/// A route BIRD originates from a static protocol (a blackhole route, exported over BGP with
/// BIRD itself as next hop).
#[derive(Debug, Clone)]
pub struct BirdRoute {
    /// The prefix, e.g. `10.2.0.0/24` or `fd02::/64`.
    pub prefix: String,
    /// Standard communities (RFC 1997) to attach.
    pub communities: Vec<(u16, u16)>,
    /// Large communities (RFC 8092) to attach.
    pub large_communities: Vec<(u32, u32, u32)>,
}

impl BirdRoute {
    /// A route without attributes.
    pub fn new(prefix: &str) -> BirdRoute {
        BirdRoute {
            prefix: prefix.to_owned(),
            communities: Vec::new(),
            large_communities: Vec::new(),
        }
    }
}

/// What BIRD is configured with.
#[derive(Debug, Clone)]
pub struct BirdConfig {
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Local AS.
    pub asn: u32,
    /// One `protocol bgp` per neighbor, named by [`Bird::protocol_name`].
    pub neighbors: Vec<Neighbor>,
    /// Routes to originate.
    pub routes: Vec<BirdRoute>,
    /// Hold time offered (keepalive is a third of it).
    pub hold_time: u16,
    /// Neighbors that are route reflection clients of this BIRD (`rr client`).
    pub rr_clients: Vec<IpAddr>,
    /// `rr cluster id` of every session with a client (BIRD's default is its router ID).
    pub rr_cluster_id: Option<Ipv4Addr>,
    /// TCP-MD5 passwords by neighbor (`password "..."`).
    pub passwords: Vec<(IpAddr, String)>,
    /// `graceful restart on` with this restart time on every session; `None`: BIRD's
    /// default, `graceful restart aware`.
    pub graceful_restart: Option<u16>,
    /// Export the routes learned over BGP too (a reflector must), not only the static ones.
    pub export_bgp: bool,
}

impl BirdConfig {
    /// A config with no neighbors and no routes, hold time 9 s.
    pub fn new(router_id: Ipv4Addr, asn: u32) -> BirdConfig {
        BirdConfig {
            router_id,
            asn,
            neighbors: Vec::new(),
            routes: Vec::new(),
            hold_time: 9,
            rr_clients: Vec::new(),
            rr_cluster_id: None,
            passwords: Vec::new(),
            graceful_restart: None,
            export_bgp: false,
        }
    }

    /// The bird.conf text.
    pub fn render(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "router id {};", self.router_id);
        c.push_str("log stderr all;\ndebug protocols { states, events };\n");
        c.push_str("protocol device { scan time 1; }\n");
        for (name, family, channel) in [
            ("static4", Family::V4, "ipv4"),
            ("static6", Family::V6, "ipv6"),
        ] {
            let _ = writeln!(c, "protocol static {name} {{\n  {channel};");
            for r in self
                .routes
                .iter()
                .filter(|r| Family::of(&r.prefix) == family)
            {
                let _ = write!(c, "  route {} blackhole", r.prefix);
                if r.communities.is_empty() && r.large_communities.is_empty() {
                    c.push_str(";\n");
                } else {
                    c.push_str(" {");
                    for (a, b) in &r.communities {
                        let _ = write!(c, " bgp_community.add(({a},{b}));");
                    }
                    for (a, b, d) in &r.large_communities {
                        let _ = write!(c, " bgp_large_community.add(({a},{b},{d}));");
                    }
                    c.push_str(" };\n");
                }
            }
            c.push_str("}\n");
        }
        let keepalive = (self.hold_time / 3).max(1);
        for n in &self.neighbors {
            let _ = writeln!(c, "protocol bgp {} {{", Bird::protocol_name(n.address));
            let _ = writeln!(c, "  local {} as {};", n.local, self.asn);
            let _ = writeln!(c, "  neighbor {} as {};", n.address, n.asn);
            if n.passive {
                c.push_str("  passive on;\n");
            }
            let _ = writeln!(
                c,
                "  hold time {}; keepalive time {keepalive}; startup hold time {};",
                self.hold_time, self.hold_time
            );
            c.push_str("  connect delay time 1; connect retry time 1; error wait time 1,3;\n");
            if self.rr_clients.contains(&n.address) {
                c.push_str("  rr client;\n");
                if let Some(id) = self.rr_cluster_id {
                    let _ = writeln!(c, "  rr cluster id {id};");
                }
            }
            if let Some((_, password)) = self.passwords.iter().find(|(a, _)| *a == n.address) {
                let _ = writeln!(c, "  password \"{password}\";");
            }
            if let Some(time) = self.graceful_restart {
                let _ = writeln!(c, "  graceful restart on; graceful restart time {time};");
            }
            let export = if self.export_bgp {
                "source = RTS_STATIC || source = RTS_BGP"
            } else {
                "source = RTS_STATIC"
            };
            for f in &n.families {
                let ch = match f {
                    Family::V4 => "ipv4",
                    Family::V6 => "ipv6",
                };
                let _ = writeln!(c, "  {ch} {{ import all; export where {export}; }};");
            }
            c.push_str("}\n");
        }
        c
    }
}

/// A running BIRD; killed on drop.
#[derive(Debug)]
pub struct Bird {
    ns: String,
    config: BirdConfig,
    conf_path: PathBuf,
    ctl: PathBuf,
    log: PathBuf,
    daemon: Daemon,
}

impl Bird {
    /// Writes the config into `dir` and starts BIRD in `ns`; returns once `birdc` answers.
    pub fn start(ns: &Netns, dir: &std::path::Path, config: BirdConfig) -> Result<Bird> {
        let tag = config.router_id.to_string().replace('.', "_");
        let conf_path = dir.join(format!("bird-{tag}.conf"));
        let ctl = dir.join(format!("bird-{tag}.ctl"));
        let log = dir.join(format!("bird-{tag}.log"));
        std::fs::write(&conf_path, config.render())?;
        let daemon = Self::spawn(ns.name(), &conf_path, &ctl, &log)?;
        let bird = Bird {
            ns: ns.name().to_owned(),
            config,
            conf_path,
            ctl,
            log,
            daemon,
        };
        bird.wait_ready()?;
        Ok(bird)
    }

    fn spawn(
        ns: &str,
        conf: &std::path::Path,
        ctl: &std::path::Path,
        log: &std::path::Path,
    ) -> Result<Daemon> {
        let mut cmd = command_in(ns, "bird");
        cmd.arg("-f").arg("-c").arg(conf).arg("-s").arg(ctl);
        Daemon::spawn("bird", cmd, log)
    }

    fn wait_ready(&self) -> Result<()> {
        wait_until(
            Duration::from_secs(10),
            "BIRD answers on its control socket",
            &[self],
            || Ok(self.birdc(&["show", "status"]).is_ok()),
        )
    }

    /// The name of the `protocol bgp` for `neighbor`: `p` + the address with `.`/`:` as `_`.
    pub fn protocol_name(neighbor: IpAddr) -> String {
        format!("p_{}", neighbor.to_string().replace(['.', ':'], "_"))
    }

    /// Runs `birdc -s <ctl> <args>` and returns its output.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        run(Command::new("birdc").arg("-s").arg(&self.ctl).args(args))
    }

    /// The configuration BIRD runs with.
    pub fn config(&self) -> &BirdConfig {
        &self.config
    }

    /// Writes `config` and applies it with `birdc configure` (static routes change in place;
    /// a changed `protocol bgp` restarts its session).
    pub fn reconfigure(&mut self, config: BirdConfig) -> Result<()> {
        std::fs::write(&self.conf_path, config.render())?;
        let out = self.birdc(&["configure"])?;
        if !out.contains("Reconfigur") {
            bail!("birdc configure did not reconfigure:\n{out}");
        }
        self.config = config;
        Ok(())
    }

    /// `show protocols all <protocol of neighbor>`.
    pub fn show_protocol(&self, neighbor: IpAddr) -> Result<String> {
        self.birdc(&["show", "protocols", "all", &Self::protocol_name(neighbor)])
    }

    /// The text of the Info column of the session's protocol line (e.g.
    /// `Active        Socket: Connection refused`, `Established`).
    pub fn protocol_info(&self, neighbor: IpAddr) -> Result<String> {
        let name = Self::protocol_name(neighbor);
        let out = self.birdc(&["show", "protocols", &name])?;
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .with_context(|| format!("no protocol {name} in:\n{out}"))?;
        // Name Proto Table State Since(date? time) Info
        let fields: Vec<&str> = line.split_whitespace().collect();
        Ok(fields.get(5..).map(|f| f.join(" ")).unwrap_or_default())
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// `show route all for <prefix>` restricted to the routes from `neighbor`'s protocol:
    /// the route with its attributes (`BGP.originator_id: ...`, `BGP.cluster_list: ...`,
    /// `BGP.next_hop: ...`), or empty when BIRD has no such route.
    pub fn route_all(&self, neighbor: IpAddr, prefix: &str) -> Result<String> {
        let out = self.birdc(&[
            "show",
            "route",
            "all",
            prefix,
            "protocol",
            &Self::protocol_name(neighbor),
        ])?;
        let want = canonical_prefix(prefix)?;
        let found = out
            .lines()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .filter_map(|l| l.split_whitespace().next())
            .any(|w| canonical_prefix(w).ok().as_ref() == Some(&want));
        Ok(if found { out } else { String::new() })
    }

    /// Writes `config` for the next [`Bird::start_again`] without applying it now (BIRD may
    /// not be running).
    pub fn rewrite_config(&mut self, config: BirdConfig) -> Result<()> {
        std::fs::write(&self.conf_path, config.render())?;
        self.config = config;
        Ok(())
    }

    /// Kills BIRD (SIGKILL: its sessions end without NOTIFICATION, as in a crash).
    pub fn kill(&mut self) {
        self.daemon.kill();
    }

    /// Starts BIRD again after [`Bird::kill`], with the same configuration; with
    /// `graceful_recovery`, as a restarting speaker (`bird -R`: Restart State and Forwarding
    /// State bits set, End-of-RIB awaited before its first advertisement).
    pub fn start_again(&mut self, graceful_recovery: bool) -> Result<()> {
        self.daemon.kill();
        let _ = std::fs::remove_file(&self.ctl);
        let mut cmd = command_in(&self.ns, "bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(&self.conf_path)
            .arg("-s")
            .arg(&self.ctl);
        if graceful_recovery {
            cmd.arg("-R");
        }
        self.daemon = Daemon::spawn("bird", cmd, &self.log)?;
        self.wait_ready()
    }
}

impl PeerDaemon for Bird {
    fn kind(&self) -> &'static str {
        "BIRD"
    }

    fn session_state(&self, neighbor: IpAddr) -> Result<String> {
        let out = self.show_protocol(neighbor)?;
        let state = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("BGP state:"))
            .map(str::trim)
            .with_context(|| format!("no BGP state in:\n{out}"))?;
        Ok(match state {
            "Down" | "Close" => "Idle".to_owned(),
            s => s.to_owned(),
        })
    }

    fn routes_from(&self, neighbor: IpAddr) -> Result<Vec<String>> {
        let out = self.birdc(&["show", "route", "protocol", &Self::protocol_name(neighbor)])?;
        out.lines()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.contains('/'))
            .map(canonical_prefix)
            .collect()
    }

    fn withdraw(&mut self, prefix: &str) -> Result<()> {
        let want = canonical_prefix(prefix)?;
        let mut config = self.config.clone();
        let before = config.routes.len();
        config
            .routes
            .retain(|r| canonical_prefix(&r.prefix).ok().as_ref() != Some(&want));
        if config.routes.len() == before {
            bail!("BIRD does not originate {prefix}");
        }
        self.reconfigure(config)
    }

    fn kill_and_restart(&mut self) -> Result<()> {
        self.daemon.kill();
        let _ = std::fs::remove_file(&self.ctl);
        self.daemon = Self::spawn(&self.ns, &self.conf_path, &self.ctl, &self.log)?;
        self.wait_ready()
    }

    fn session_errors(&self, neighbor: IpAddr) -> Result<String> {
        let name = Self::protocol_name(neighbor);
        let mut out = self.show_protocol(neighbor)?;
        for l in self
            .log()
            .lines()
            .filter(|l| l.contains(&format!("{name}:")))
        {
            if l.contains("Error") || l.contains("Received") {
                out.push_str(l);
                out.push('\n');
            }
        }
        Ok(out)
    }
}

impl Diagnose for Bird {
    fn diagnose(&self) -> String {
        let protocols = self
            .birdc(&["show", "protocols", "all"])
            .unwrap_or_else(|e| format!("birdc failed: {e:#}"));
        let routes = self
            .birdc(&["show", "route"])
            .unwrap_or_else(|e| format!("birdc failed: {e:#}"));
        format!(
            "=== BIRD in {} ===\n{protocols}\n{routes}\n--- log tail ({}) ---\n{}",
            self.ns,
            self.log.display(),
            self.daemon.log_tail(25)
        )
    }
}
