//! Looking at a running lab: each process's sessions (tabby's `/status` read from inside its
//! netns, BIRD's `birdc show protocols`, GoBGP's `gobgp neighbor -j` on its API inside its
//! netns), routes, and a pod-to-pod reachability matrix
//! measured with real pings.

use crate::build::{running_pid, RunOptions};
use crate::state::Layout;
use crate::sys::{command_in, ip_in, run};
use crate::topology::{Host, Lab, PeerKind, Role};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One BGP session as a process reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The peer (address, or BIRD protocol name and address).
    pub peer: String,
    /// `mesh`, `peer`, `rr-client`, `reflector` (tabby) or `bgp` (BIRD, GoBGP).
    pub kind: String,
    /// RFC 4271 state name.
    pub state: String,
}

/// What a process of the lab reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    /// Host name.
    pub name: String,
    /// `node`, `reflector`, `bird` or `gobgp`.
    pub role: &'static str,
    /// The process runs.
    pub running: bool,
    /// `/readyz`'s view (tabby processes only).
    pub ready: Option<bool>,
    /// Its sessions.
    pub sessions: Vec<Session>,
    /// How many sessions the topology gives it.
    pub expected: usize,
    /// The same, by kind.
    pub expected_kinds: BTreeMap<&'static str, usize>,
    /// Routes it installed in its kernel.
    pub routes: Option<u64>,
    /// Why its status could not be read.
    pub error: Option<String>,
    /// GoBGP: prefixes the lab routes statically on the router that its RIB does not hold
    /// (BGP has not, or not yet, given it what the kernel routes say).
    pub missing_routes: Vec<String>,
}

impl HostStatus {
    /// Established sessions.
    pub fn established(&self) -> usize {
        self.sessions
            .iter()
            .filter(|s| s.state == "Established")
            .count()
    }

    /// What keeps it from being converged, if anything.
    pub fn problem(&self) -> Option<String> {
        if !self.running {
            return Some(format!("{}: the process is not running", self.name));
        }
        if let Some(e) = &self.error {
            return Some(format!("{}: {e}", self.name));
        }
        if self.ready == Some(false) {
            return Some(format!("{}: not ready", self.name));
        }
        let down: Vec<String> = self
            .sessions
            .iter()
            .filter(|s| s.state != "Established")
            .map(|s| format!("{} {}", s.peer, s.state))
            .collect();
        if !down.is_empty() {
            return Some(format!(
                "{}: sessions not established: {}",
                self.name,
                down.join(", ")
            ));
        }
        if self.sessions.len() != self.expected {
            return Some(format!(
                "{}: {} sessions, the topology gives {}",
                self.name,
                self.sessions.len(),
                self.expected
            ));
        }
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &self.sessions {
            *kinds.entry(s.kind.as_str()).or_default() += 1;
        }
        let want: BTreeMap<&str, usize> =
            self.expected_kinds.iter().map(|(k, n)| (*k, *n)).collect();
        if !self.missing_routes.is_empty() {
            return Some(format!(
                "{}: not in GoBGP's RIB: {}",
                self.name,
                self.missing_routes.join(", ")
            ));
        }
        if kinds != want {
            let show = |m: &BTreeMap<&str, usize>| {
                m.iter()
                    .map(|(k, n)| format!("{n} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Some(format!(
                "{}: sessions of kinds {}, the topology gives {}",
                self.name,
                show(&kinds),
                show(&want)
            ));
        }
        None
    }
}

fn families(a: &Host, b: &Host) -> usize {
    usize::from(a.v4().is_some() && b.v4().is_some())
        + usize::from(a.v6().is_some() && b.v6().is_some())
}

/// The reflector cluster of a node or standalone reflector, if it is a reflector.
fn cluster(h: &Host) -> Option<Ipv4Addr> {
    match &h.role {
        Role::Reflector { cluster_id } => Some(*cluster_id),
        Role::Node { cluster_id, .. } => *cluster_id,
        Role::Peer { .. } => None,
    }
}

/// The AS of a node or standalone reflector (its own, else the cluster's).
fn host_as(lab: &Lab, h: &Host) -> u32 {
    match &h.role {
        Role::Node {
            as_number: Some(a), ..
        } => *a,
        _ => lab.as_number,
    }
}

/// The sessions the topology gives a host, by kind (`/status` kinds for tabby, `bgp` for
/// BIRD), as Calico configures them: the full mesh (`mesh`), or every node and reflector
/// with every reflector (`reflector` on a client, `rr-client` on the reflector, `peer`
/// between reflectors of one cluster or across ASes); plus, for nodes, a session per family
/// with each external peer on their segment (`peer`).
pub fn expected_kinds(lab: &Lab, h: &Host) -> BTreeMap<&'static str, usize> {
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut add = |kind: &'static str, n: usize| {
        if n > 0 {
            *kinds.entry(kind).or_default() += n;
        }
    };
    if h.is_peer() {
        add("bgp", crate::bird::sessions(lab, h).len());
        return kinds;
    }
    let reflectors = lab.uses_reflectors();
    for o in lab
        .hosts
        .iter()
        .filter(|o| !o.is_peer() && o.name != h.name)
    {
        let n = families(h, o);
        if !reflectors {
            if o.is_node() {
                add("mesh", n);
            }
            continue;
        }
        let same_as = host_as(lab, h) == host_as(lab, o);
        match (cluster(h), cluster(o)) {
            (None, None) => {}
            (Some(a), Some(b)) if a == b => add("peer", n),
            (Some(_), _) if same_as => add("rr-client", n),
            (None, Some(_)) if same_as => add("reflector", n),
            _ => add("peer", n),
        }
    }
    if h.is_node() {
        let seg = h.ifaces.first().map(|i| i.segment);
        let mine = h.ifaces.first();
        let external = lab
            .hosts
            .iter()
            .filter(|o| o.is_peer())
            .flat_map(|o| o.ifaces.iter().filter(|i| Some(i.segment) == seg))
            .map(|i| {
                usize::from(i.v4.is_some() && mine.and_then(|m| m.v4).is_some())
                    + usize::from(i.v6.is_some() && mine.and_then(|m| m.v6).is_some())
            })
            .sum();
        add("peer", external);
    }
    kinds
}

/// How many sessions the topology gives a host ([`expected_kinds`], summed).
pub fn expected_sessions(lab: &Lab, h: &Host) -> usize {
    expected_kinds(lab, h).values().sum()
}

/// The status of one host's process.
pub fn host_status(lab: &Lab, layout: &Layout, run_opts: &RunOptions, h: &Host) -> HostStatus {
    let ns = layout.host_netns(&h.name);
    let mut s = HostStatus {
        name: h.name.clone(),
        role: match h.role {
            Role::Node { .. } => "node",
            Role::Reflector { .. } => "reflector",
            Role::Peer {
                daemon: PeerKind::Bird,
                ..
            } => "bird",
            Role::Peer {
                daemon: PeerKind::Gobgp,
                ..
            } => "gobgp",
        },
        running: running_pid(layout, &h.name).is_some(),
        ready: None,
        sessions: Vec::new(),
        expected: expected_sessions(lab, h),
        expected_kinds: expected_kinds(lab, h),
        routes: None,
        error: None,
        missing_routes: Vec::new(),
    };
    if !s.running {
        return s;
    }
    if matches!(
        h.role,
        Role::Peer {
            daemon: PeerKind::Gobgp,
            ..
        }
    ) {
        gobgp_status(lab, &ns, h, &mut s);
        return s;
    }
    if h.is_peer() {
        let mut c = Command::new("birdc");
        c.arg("-s")
            .arg(layout.bird_ctl(&h.name))
            .args(["show", "protocols"]);
        match run(&mut c) {
            Ok(out) => {
                s.sessions = crate::bird::protocol_states(&out)
                    .into_iter()
                    .map(|(peer, state)| Session {
                        peer,
                        kind: "bgp".to_string(),
                        state,
                    })
                    .collect();
            }
            Err(e) => s.error = Some(e.to_string()),
        }
        s.routes = Some(count_routes(&ns, "bird"));
        return s;
    }
    let mut c = command_in(&ns, &run_opts.tabby.to_string_lossy());
    c.args(["status", "--json"]);
    let doc = run(&mut c).map_err(|e| e.to_string()).and_then(|out| {
        serde_json::from_str::<Value>(&out).map_err(|e| format!("/status is not JSON: {e}"))
    });
    match doc {
        Ok(doc) => {
            s.ready = doc["ready"].as_bool();
            s.routes = doc["routes"]["installed"].as_u64();
            let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
            s.sessions = doc["bgp"]["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| Session {
                    peer: text(&p["peer"]),
                    kind: text(&p["kind"]),
                    state: text(&p["state"]),
                })
                .collect();
        }
        Err(e) => s.error = Some(e),
    }
    s
}

/// Counts the routes of protocol `proto` in `ns` (IPv4 and IPv6; multipath continuation
/// lines are not routes).
fn count_routes(ns: &str, proto: &str) -> u64 {
    ["-4", "-6"]
        .iter()
        .map(|family| {
            ip_in(ns, &[family, "route", "show", "proto", proto])
                .map(|o| {
                    o.lines()
                        .filter(|l| !l.starts_with(char::is_whitespace))
                        .count() as u64
                })
                .unwrap_or(0)
        })
        .sum()
}

/// GoBGP's sessions (named as BIRD's would be), the routes the lab wrote for it, and the
/// statically routed prefixes its RIB does not hold.
fn gobgp_status(lab: &Lab, ns: &str, h: &Host, s: &mut HostStatus) {
    let names: BTreeMap<IpAddr, String> = crate::bird::sessions(lab, h)
        .into_iter()
        .map(|x| (x.neighbor, x.protocol))
        .collect();
    let read = run(&mut crate::gobgp::cli(ns, &["neighbor", "-j"]))
        .map_err(|e| e.to_string())
        .and_then(|out| crate::gobgp::neighbor_states(&out));
    match read {
        Ok(states) => {
            s.sessions = states
                .into_iter()
                .map(|(addr, state)| Session {
                    peer: names
                        .get(&addr)
                        .cloned()
                        .unwrap_or_else(|| addr.to_string()),
                    kind: "bgp".to_string(),
                    state,
                })
                .collect();
        }
        Err(e) => {
            s.error = Some(e);
            return;
        }
    }
    s.routes = Some(count_routes(ns, "static"));
    let mut rib = Vec::new();
    for family in ["ipv4", "ipv6"] {
        match run(&mut crate::gobgp::cli(
            ns,
            &["global", "rib", "-a", family, "-j"],
        ))
        .map_err(|e| e.to_string())
        .and_then(|out| crate::gobgp::rib_prefixes(&out))
        {
            Ok(p) => rib.extend(p),
            Err(e) => {
                s.error = Some(e);
                return;
            }
        }
    }
    s.missing_routes = crate::gobgp::static_routes(lab, h)
        .iter()
        .filter(|r| !rib.contains(&r.prefix))
        .map(|r| r.prefix.to_string())
        .collect();
}

/// The status of every process of the lab.
pub fn statuses(lab: &Lab, layout: &Layout, run_opts: &RunOptions) -> Vec<HostStatus> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = lab
            .hosts
            .iter()
            .map(|h| scope.spawn(move || host_status(lab, layout, run_opts, h)))
            .collect();
        handles
            .into_iter()
            .zip(&lab.hosts)
            .map(|(t, h)| {
                t.join().unwrap_or_else(|_| HostStatus {
                    name: h.name.clone(),
                    role: "?",
                    running: false,
                    ready: None,
                    sessions: Vec::new(),
                    expected: 0,
                    expected_kinds: BTreeMap::new(),
                    routes: None,
                    error: Some("status probe panicked".to_string()),
                    missing_routes: Vec::new(),
                })
            })
            .collect()
    })
}

/// Renders the sessions of every process.
pub fn render_statuses(statuses: &[HostStatus]) -> String {
    let mut out = String::new();
    for s in statuses {
        let mut head = vec![s.role.to_string()];
        if !s.running {
            head.push("NOT RUNNING".to_string());
        }
        match s.ready {
            Some(true) => head.push("ready".to_string()),
            Some(false) => head.push("NOT READY".to_string()),
            None => {}
        }
        head.push(format!(
            "{}/{} sessions Established",
            s.established(),
            s.expected
        ));
        if let Some(r) = s.routes {
            head.push(format!("{r} routes installed"));
        }
        let _ = writeln!(out, "{} ({})", s.name, head.join(", "));
        if let Some(e) = &s.error {
            let _ = writeln!(out, "  error: {e}");
        }
        if !s.missing_routes.is_empty() {
            let _ = writeln!(out, "  not in GoBGP's RIB: {}", s.missing_routes.join(", "));
        }
        let width = s.sessions.iter().map(|x| x.peer.len()).max().unwrap_or(0);
        for x in &s.sessions {
            let _ = writeln!(out, "  {:<width$}  {:<9}  {}", x.peer, x.kind, x.state);
        }
    }
    out
}

/// One cell of the reachability matrix: the IPv4 and IPv6 outcome (None: a pod lacks the
/// family).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cell {
    /// IPv4 ping answered.
    pub v4: Option<bool>,
    /// IPv6 ping answered.
    pub v6: Option<bool>,
}

/// Pod-to-pod reachability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    /// Pod labels (`name`, or `namespace/name` when namespaces differ), rows and columns.
    pub pods: Vec<String>,
    /// `cells[from][to]`.
    pub cells: Vec<Vec<Cell>>,
    /// The failing probes, as `from -> to (ip)`.
    pub failures: Vec<String>,
}

impl Matrix {
    /// Whether every probe answered.
    pub fn full(&self) -> bool {
        self.failures.is_empty()
    }

    /// Whether `from` reaches `to` over `family` (by pod label); None if not probed.
    pub fn reaches(&self, from: &str, to: &str, v6: bool) -> Option<bool> {
        let f = self.pods.iter().position(|p| p == from)?;
        let t = self.pods.iter().position(|p| p == to)?;
        let c = self.cells[f][t];
        if v6 {
            c.v6
        } else {
            c.v4
        }
    }

    /// The matrix as a table of `v4/v6` outcomes (`ok`, `--` for no answer).
    pub fn render(&self) -> String {
        const CORNER: &str = "from \\ to";
        let w = self
            .pods
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(CORNER.len())
            + 2;
        let mut out = format!("{CORNER:w$}");
        for p in &self.pods {
            let _ = write!(out, "{p:w$}");
        }
        out = out.trim_end().to_string();
        out.push('\n');
        for (i, p) in self.pods.iter().enumerate() {
            let mut line = format!("{p:w$}");
            for c in &self.cells[i] {
                let show = |r: Option<bool>| match r {
                    Some(true) => "ok",
                    Some(false) => "--",
                    None => " .",
                };
                let _ = write!(line, "{:w$}", format!("{}/{}", show(c.v4), show(c.v6)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Pings `ip` once from inside netns `ns`; true when it answered within a second.
pub fn ping(ns: &str, ip: IpAddr) -> bool {
    let family = if ip.is_ipv6() { "-6" } else { "-4" };
    command_in(ns, "ping")
        .args([family, "-n", "-q", "-c", "1", "-W", "1", &ip.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The pod labels used in the matrix.
pub fn pod_labels(lab: &Lab) -> Vec<String> {
    let one_namespace = lab
        .pods
        .windows(2)
        .all(|w| w[0].namespace == w[1].namespace);
    lab.pods
        .iter()
        .map(|p| {
            if one_namespace {
                p.name.clone()
            } else {
                p.id()
            }
        })
        .collect()
}

/// Measures the matrix: every pod pings every pod over each family both have. Probes that
/// fail are retried until `deadline` (routes may still be arriving); one pass at least.
pub fn matrix(lab: &Lab, layout: &Layout, deadline: Instant) -> Matrix {
    let n = lab.pods.len();
    let mut cells = vec![vec![Cell::default(); n]; n];
    for (f, from) in lab.pods.iter().enumerate() {
        for (t, to) in lab.pods.iter().enumerate() {
            cells[f][t].v4 = (from.v4.is_some() && to.v4.is_some()).then_some(false);
            cells[f][t].v6 = (from.v6.is_some() && to.v6.is_some()).then_some(false);
        }
    }
    loop {
        // One thread per source pod: a failing ping costs its full second.
        let rows: Vec<Vec<Cell>> = std::thread::scope(|scope| {
            let handles: Vec<_> = lab
                .pods
                .iter()
                .zip(cells.iter())
                .map(|(from, row)| {
                    let ns = layout.pod_netns(from);
                    scope.spawn(move || {
                        row.iter()
                            .zip(&lab.pods)
                            .map(|(cell, to)| {
                                let mut c = *cell;
                                if c.v4 == Some(false) {
                                    c.v4 = Some(to.v4.is_some_and(|a| ping(&ns, IpAddr::V4(a))));
                                }
                                if c.v6 == Some(false) {
                                    c.v6 = Some(to.v6.is_some_and(|a| ping(&ns, IpAddr::V6(a))));
                                }
                                c
                            })
                            .collect::<Vec<Cell>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .zip(cells.iter())
                .map(|(h, old)| h.join().unwrap_or_else(|_| old.clone()))
                .collect()
        });
        cells = rows;
        let all = cells
            .iter()
            .flatten()
            .all(|c| c.v4 != Some(false) && c.v6 != Some(false));
        if all || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let pods = pod_labels(lab);
    let mut failures = Vec::new();
    for (f, row) in cells.iter().enumerate() {
        for (t, c) in row.iter().enumerate() {
            let to = &lab.pods[t];
            if c.v4 == Some(false) {
                failures.push(format!(
                    "{} -> {} ({})",
                    pods[f],
                    pods[t],
                    to.v4.map_or_else(String::new, |a| a.to_string())
                ));
            }
            if c.v6 == Some(false) {
                failures.push(format!(
                    "{} -> {} ({})",
                    pods[f],
                    pods[t],
                    to.v6.map_or_else(String::new, |a| a.to_string())
                ));
            }
        }
    }
    Matrix {
        pods,
        cells,
        failures,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::topology::Topology;
    use std::path::Path;

    #[test]
    fn expected_sessions_follow_the_mesh_or_the_reflectors() {
        let mesh = Topology::parse(
            "segments: [{name: s, subnet: 10.0.0.0/24, subnet6: 'fd00::/64'}]\n\
             nodes: [{name: a, segment: s}, {name: b, segment: s}, {name: c, segment: s}]\n\
             peers: [{name: tor, asNumber: 65001, segments: [s]}]\n",
            "t",
        )
        .unwrap()
        .resolve("t", "t", Path::new("/"))
        .unwrap();
        // 2 other nodes x 2 families + the router x 2 families.
        assert_eq!(expected_sessions(&mesh, mesh.host("a").unwrap()), 6);
        // The router: 3 nodes x 2 families.
        assert_eq!(expected_sessions(&mesh, mesh.host("tor").unwrap()), 6);

        let rr = Topology::parse(
            "segments: [{name: s, subnet: 10.0.0.0/24}]\n\
             nodes: [{name: a, segment: s}, {name: b, segment: s}, {name: r, segment: s, routeReflectorClusterID: 244.0.0.1}]\n",
            "t",
        )
        .unwrap()
        .resolve("t", "t", Path::new("/"))
        .unwrap();
        assert_eq!(expected_sessions(&rr, rr.host("a").unwrap()), 1);
        assert_eq!(expected_sessions(&rr, rr.host("r").unwrap()), 2);
    }

    #[test]
    fn on_the_default_topology_nodes_see_the_reflector_and_it_sees_clients() {
        let lab = Topology::default_topology()
            .resolve("t", "built-in", Path::new("/"))
            .unwrap();
        let kinds = |name: &str| expected_kinds(&lab, lab.host(name).unwrap());
        // rr1 over IPv4 and IPv6, tor1 over IPv4 and IPv6.
        assert_eq!(
            kinds("node1"),
            BTreeMap::from([("peer", 2), ("reflector", 2)])
        );
        // Four nodes, two families each.
        assert_eq!(kinds("rr1"), BTreeMap::from([("rr-client", 8)]));
        // Two nodes and the other router, two families each.
        assert_eq!(kinds("tor1"), BTreeMap::from([("bgp", 6)]));
    }

    #[test]
    fn the_matrix_renders_v4_and_v6_outcomes() {
        let m = Matrix {
            pods: vec!["a".into(), "b".into()],
            cells: vec![
                vec![
                    Cell {
                        v4: Some(true),
                        v6: Some(true),
                    },
                    Cell {
                        v4: Some(false),
                        v6: None,
                    },
                ],
                vec![
                    Cell {
                        v4: Some(true),
                        v6: None,
                    },
                    Cell {
                        v4: Some(true),
                        v6: None,
                    },
                ],
            ],
            failures: vec!["a -> b (10.0.0.2)".into()],
        };
        let r = m.render();
        assert!(r.contains("ok/ok"), "{r}");
        assert!(r.contains("--/ ."), "{r}");
        assert_eq!(m.reaches("a", "b", false), Some(false));
        assert!(!m.full());
    }
}
