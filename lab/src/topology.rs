//! The topology file: what a lab is made of, as the user writes it ([`Topology`]), and the
//! same with every default filled in and every address assigned ([`Lab`]), which is what the
//! builder builds and what `lab status` and `lab down` read back from the lab's state.
//!
//! [`Topology::resolve`] checks everything it can before anything is created, and reports
//! every problem at once, each naming the entry and the field.

use crate::net::Net;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// The AS of the cluster's nodes when the topology names none (Calico's default).
pub const DEFAULT_AS: u32 = 64512;

/// The cluster ID of reflectors that name none (Calico's documentation uses it).
pub const DEFAULT_CLUSTER_ID: Ipv4Addr = Ipv4Addr::new(244, 0, 0, 1);

/// The longest lab name: it starts every netns name and the state directory's.
pub const MAX_LAB_NAME: usize = 20;

/// The built-in topology: 2 racks of 2 nodes, a BIRD top-of-rack router per rack (eBGP with
/// its nodes, and with the other rack's router over the core segment), one standalone route
/// reflector for the nodes' iBGP, 2 pods per node, IPv4 and IPv6.
pub const DEFAULT_TOPOLOGY: &str = include_str!("default.yaml");

/// A topology file (see docs/lab.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topology {
    /// The AS of the nodes (`BGPConfiguration default` `spec.asNumber`); 64512 if unset.
    #[serde(default)]
    pub as_number: Option<u32>,
    /// IP pools pod blocks are taken from; an IPv4 and an IPv6 pool if empty.
    #[serde(default)]
    pub ip_pools: Vec<PoolSpec>,
    /// L2 segments: a bridge each, with a subnet.
    pub segments: Vec<SegmentSpec>,
    /// Nodes, each running `tabby node`.
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    /// Pods, wired by the lab as Calico's CNI plugin would.
    #[serde(default)]
    pub pods: Vec<PodSpec>,
    /// Standalone route reflectors, each running `tabby route-reflector`.
    #[serde(default)]
    pub reflectors: Vec<ReflectorSpec>,
    /// External BGP routers run from real daemons (top-of-rack routers).
    #[serde(default)]
    pub peers: Vec<PeerSpec>,
    /// More resource files (policies, BGPPeers, IPPools...) copied into the datastore;
    /// relative paths are relative to the topology file.
    #[serde(default)]
    pub resources: Vec<PathBuf>,
}

/// An IP pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolSpec {
    /// The pool's CIDR.
    pub cidr: Net,
    /// Length of the blocks given to nodes; 24 (IPv4) or 64 (IPv6) if unset.
    #[serde(default)]
    pub block_size: Option<u8>,
}

/// An L2 segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SegmentSpec {
    /// Name, unique among segments.
    pub name: String,
    /// IPv4 subnet.
    #[serde(default)]
    pub subnet: Option<Net>,
    /// IPv6 subnet.
    #[serde(default)]
    pub subnet6: Option<Net>,
}

/// A node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Name of the node (and of its Node object).
    pub name: String,
    /// The segment it sits on.
    pub segment: String,
    /// IPv4 address on the segment; assigned from .11 up if unset.
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    /// IPv6 address on the segment; assigned from ::11 up if unset.
    #[serde(default)]
    pub address6: Option<Ipv6Addr>,
    /// Its own AS (`projectcalico.org/ASNumber`); the cluster's if unset.
    #[serde(default)]
    pub as_number: Option<u32>,
    /// Labels of the Node object.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Makes the node a route reflector of this cluster
    /// (`projectcalico.org/RouteReflectorClusterID`).
    #[serde(default, rename = "routeReflectorClusterID")]
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
    /// Its pod blocks (`spec.podCIDRs`); one block of each pool if unset.
    #[serde(default, rename = "podCIDRs")]
    pub pod_cidrs: Vec<Net>,
}

/// A pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    /// Kubernetes namespace; `default` if unset.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Container ports (named ports for policies).
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// IPv4 address; taken from the node's IPv4 block if unset and the node has one.
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address; taken from the node's IPv6 block if unset and the node has one.
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
}

fn default_namespace() -> String {
    "default".to_string()
}

/// A container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSpec {
    /// Port name.
    #[serde(default)]
    pub name: Option<String>,
    /// Port number.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`; `TCP` if unset.
    #[serde(default = "default_protocol")]
    pub protocol: String,
}

fn default_protocol() -> String {
    "TCP".to_string()
}

/// A standalone route reflector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReflectorSpec {
    /// Name (of its Node object, too).
    pub name: String,
    /// The segment it sits on.
    pub segment: String,
    /// IPv4 address; assigned like a node's if unset.
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    /// IPv6 address; assigned like a node's if unset.
    #[serde(default)]
    pub address6: Option<Ipv6Addr>,
    /// Route reflector cluster ID; 244.0.0.1 if unset.
    #[serde(default, rename = "clusterID")]
    pub cluster_id: Option<Ipv4Addr>,
}

/// The daemon an external peer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    /// BIRD 2.
    Bird,
    /// GoBGP (`gobgpd`); the lab writes its kernel routes (see [`crate::gobgp`]).
    Gobgp,
}

impl PeerKind {
    /// The daemon's name, for people.
    pub fn label(self) -> &'static str {
        match self {
            PeerKind::Bird => "BIRD",
            PeerKind::Gobgp => "GoBGP",
        }
    }
}

/// An external BGP router (a top-of-rack router): eBGP with every node on its segments and
/// with every other external peer it shares a segment with; it routes between its segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerSpec {
    /// Name.
    pub name: String,
    /// The daemon, `bird` or `gobgp`; `bird` if unset.
    #[serde(default = "default_peer_kind")]
    pub kind: PeerKind,
    /// Its AS.
    pub as_number: u32,
    /// The segments it has an interface on (`eth0`, `eth1`, ... in this order); it takes
    /// the highest free address of each (.254, ::fe, then down).
    pub segments: Vec<String>,
}

fn default_peer_kind() -> PeerKind {
    PeerKind::Bird
}

/// A problem in a topology: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The entry and field, e.g. `nodes[2] (node3).segment`.
    pub at: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Why a topology cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file is not YAML, or does not have the topology's shape.
    #[error("{origin}: {message}")]
    Parse {
        /// The file (or `built-in default`).
        origin: String,
        /// The parser's message, with the field path or line.
        message: String,
    },
    /// The topology has the right shape but does not make sense; every problem is listed.
    #[error("{} has {} problem(s):\n{}", origin, problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file (or `built-in default`).
        origin: String,
        /// The problems.
        problems: Vec<Problem>,
    },
}

/// What a host of the lab is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Role {
    /// A node running `tabby node`.
    Node {
        /// Its own AS, if it has one.
        as_number: Option<u32>,
        /// Labels of its Node object.
        labels: BTreeMap<String, String>,
        /// Reflector cluster ID, when the node is a reflector.
        cluster_id: Option<Ipv4Addr>,
        /// Its pod blocks.
        blocks: Vec<Net>,
    },
    /// A standalone route reflector running `tabby route-reflector`.
    Reflector {
        /// Its cluster ID.
        cluster_id: Ipv4Addr,
    },
    /// An external router.
    Peer {
        /// Its daemon.
        daemon: PeerKind,
        /// Its AS.
        as_number: u32,
    },
}

/// An interface of a host on a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iface {
    /// Interface name inside the host's netns.
    pub name: String,
    /// Index of the segment in [`Lab::segments`].
    pub segment: usize,
    /// IPv4 address, when the segment has an IPv4 subnet.
    pub v4: Option<Ipv4Addr>,
    /// IPv6 address, when the segment has an IPv6 subnet.
    pub v6: Option<Ipv6Addr>,
}

/// A host: a node, a reflector or an external peer, each in a netns of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Name, unique among hosts.
    pub name: String,
    /// What it is.
    pub role: Role,
    /// Its interfaces (one for nodes and reflectors).
    pub ifaces: Vec<Iface>,
    /// Its IPv4 default gateway (an external peer on its segment).
    pub gateway4: Option<Ipv4Addr>,
    /// Its IPv6 default gateway.
    pub gateway6: Option<Ipv6Addr>,
}

impl Host {
    /// Whether the host is a node.
    pub fn is_node(&self) -> bool {
        matches!(self.role, Role::Node { .. })
    }

    /// Whether the host is an external peer.
    pub fn is_peer(&self) -> bool {
        matches!(self.role, Role::Peer { .. })
    }

    /// The address of its first interface (its BGP address, for nodes and reflectors).
    pub fn v4(&self) -> Option<Ipv4Addr> {
        self.ifaces.first().and_then(|i| i.v4)
    }

    /// The IPv6 address of its first interface.
    pub fn v6(&self) -> Option<Ipv6Addr> {
        self.ifaces.first().and_then(|i| i.v6)
    }
}

/// A segment with its subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Name.
    pub name: String,
    /// IPv4 subnet.
    pub v4: Option<Net>,
    /// IPv6 subnet.
    pub v6: Option<Net>,
}

/// A pod, addressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its node's name.
    pub node: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Ports.
    pub ports: Vec<PortSpec>,
    /// IPv4 address.
    pub v4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub v6: Option<Ipv6Addr>,
    /// Host-side interface in the node's netns (Calico's SHA-1 rule).
    pub host_if: String,
}

impl Pod {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Its addresses, IPv4 first.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(IpAddr::V6))
            .collect()
    }
}

/// A pool with its block size decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// CIDR.
    pub cidr: Net,
    /// Block length.
    pub block_size: u8,
}

/// A topology resolved: defaults filled in, addresses assigned, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lab {
    /// The lab's name.
    pub name: String,
    /// The cluster AS.
    pub as_number: u32,
    /// IP pools.
    pub pools: Vec<Pool>,
    /// Segments.
    pub segments: Vec<Segment>,
    /// Nodes, reflectors and peers, in that order.
    pub hosts: Vec<Host>,
    /// Pods.
    pub pods: Vec<Pod>,
    /// Extra resource files, as absolute paths.
    pub resources: Vec<PathBuf>,
}

impl Lab {
    /// The hosts that are nodes.
    pub fn nodes(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.is_node())
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Whether the nodes peer through reflectors rather than the full mesh.
    pub fn uses_reflectors(&self) -> bool {
        self.hosts.iter().any(|h| match &h.role {
            Role::Reflector { .. } => true,
            Role::Node { cluster_id, .. } => cluster_id.is_some(),
            Role::Peer { .. } => false,
        })
    }
}

/// Whether `s` can name a lab: lowercase letters, digits and `-`, starting with a letter or
/// digit, at most [`MAX_LAB_NAME`] long (no `.`, which separates the parts of netns names).
pub fn check_lab_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_LAB_NAME
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "lab name {s:?} must be 1 to {MAX_LAB_NAME} lowercase letters, digits or '-', starting with a letter or digit"
        ))
    }
}

/// A DNS label as Kubernetes names nodes, namespaces and (here) pods: lowercase
/// alphanumerics and `-`, at most 63.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Topology {
    /// Parses a topology from YAML; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Topology, TopologyError> {
        let value: serde_json::Value =
            tabby_datastore::resource::parse_yaml(text).map_err(|e| TopologyError::Parse {
                origin: source.to_string(),
                message: e.to_string(),
            })?;
        if value.is_null() {
            return Err(TopologyError::Parse {
                origin: source.to_string(),
                message: "the file is empty".to_string(),
            });
        }
        serde_path_to_error::deserialize(value).map_err(|e| TopologyError::Parse {
            origin: source.to_string(),
            message: format!("field {}: {}", e.path(), e.inner()),
        })
    }

    /// The built-in default topology ([`DEFAULT_TOPOLOGY`]).
    pub fn default_topology() -> Topology {
        // The text is part of the binary and a unit test parses it; an error here is a bug
        // that the test catches, so falling back to an empty topology is never reached.
        Topology::parse(DEFAULT_TOPOLOGY, "built-in default").unwrap_or_default()
    }

    /// Fills in defaults, assigns addresses and checks everything; `base` is the directory
    /// relative resource paths start from.
    pub fn resolve(&self, name: &str, source: &str, base: &Path) -> Result<Lab, TopologyError> {
        let mut r = Resolver::default();
        if let Err(m) = check_lab_name(name) {
            r.problem("name", m);
        }
        let lab = r.resolve(self, name, base);
        if r.problems.is_empty() {
            Ok(lab)
        } else {
            Err(TopologyError::Invalid {
                origin: source.to_string(),
                problems: r.problems,
            })
        }
    }
}

#[derive(Default)]
struct Resolver {
    problems: Vec<Problem>,
}

/// Addresses taken on a segment, by family.
#[derive(Default)]
struct Taken {
    v4: BTreeSet<Ipv4Addr>,
    v6: BTreeSet<Ipv6Addr>,
}

impl Resolver {
    fn problem(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            at: at.into(),
            message: message.into(),
        });
    }

    fn resolve(&mut self, t: &Topology, name: &str, base: &Path) -> Lab {
        let as_number = t.as_number.unwrap_or(DEFAULT_AS);
        if as_number == 0 {
            self.problem("asNumber", "AS 0 is reserved");
        }
        let pools = self.pools(t);
        let segments = self.segments(t, &pools);
        let seg_index: BTreeMap<&str, usize> = segments
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();

        // Host names are one namespace: they name netns and Node objects.
        let mut names = BTreeSet::new();
        let all_names = t
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("nodes[{i}]"), &n.name))
            .chain(
                t.reflectors
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (format!("reflectors[{i}]"), &n.name)),
            )
            .chain(
                t.peers
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (format!("peers[{i}]"), &n.name)),
            );
        for (at, n) in all_names {
            if !dns_label(n) {
                self.problem(
                    format!("{at}.name"),
                    format!("{n:?} must be lowercase letters, digits and '-' (at most 63)"),
                );
            } else if !names.insert(n.clone()) {
                self.problem(
                    format!("{at}.name"),
                    format!("{n:?} is used by another node, reflector or peer"),
                );
            }
        }

        let mut taken: Vec<Taken> = segments.iter().map(|_| Taken::default()).collect();
        // Explicit addresses are taken first, so automatic ones go around them.
        let explicit = t
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    format!("nodes[{i}] ({})", n.name),
                    &n.segment,
                    n.address,
                    n.address6,
                )
            })
            .chain(t.reflectors.iter().enumerate().map(|(i, n)| {
                (
                    format!("reflectors[{i}] ({})", n.name),
                    &n.segment,
                    n.address,
                    n.address6,
                )
            }))
            .collect::<Vec<_>>();
        for (at, seg, a4, a6) in &explicit {
            let Some(&s) = seg_index.get(seg.as_str()) else {
                self.problem(
                    format!("{at}.segment"),
                    format!("segment {seg:?} is not defined in segments"),
                );
                continue;
            };
            if let Some(a) = a4 {
                self.check_address(
                    at,
                    "address",
                    IpAddr::V4(*a),
                    segments[s].v4,
                    &segments[s].name,
                );
                if !taken[s].v4.insert(*a) {
                    self.problem(format!("{at}.address"), format!("{a} is used twice"));
                }
            }
            if let Some(a) = a6 {
                self.check_address(
                    at,
                    "address6",
                    IpAddr::V6(*a),
                    segments[s].v6,
                    &segments[s].name,
                );
                if !taken[s].v6.insert(*a) {
                    self.problem(format!("{at}.address6"), format!("{a} is used twice"));
                }
            }
        }

        // Peers first: nodes and reflectors need their gateways.
        let mut peers = Vec::new();
        for (i, p) in t.peers.iter().enumerate() {
            let at = format!("peers[{i}] ({})", p.name);
            if p.as_number == 0 {
                self.problem(format!("{at}.asNumber"), "AS 0 is reserved");
            }
            if p.segments.is_empty() {
                self.problem(
                    format!("{at}.segments"),
                    "a peer needs at least one segment",
                );
            }
            let mut seen = BTreeSet::new();
            let mut ifaces = Vec::new();
            for (k, seg) in p.segments.iter().enumerate() {
                let Some(&s) = seg_index.get(seg.as_str()) else {
                    self.problem(
                        format!("{at}.segments[{k}]"),
                        format!("segment {seg:?} is not defined in segments"),
                    );
                    continue;
                };
                if !seen.insert(s) {
                    self.problem(
                        format!("{at}.segments[{k}]"),
                        format!("segment {seg:?} is listed twice"),
                    );
                    continue;
                }
                let v4 = self.top_free4(&at, &segments[s], &mut taken[s]);
                let v6 = self.top_free6(&at, &segments[s], &mut taken[s]);
                ifaces.push(Iface {
                    name: format!("eth{}", ifaces.len()),
                    segment: s,
                    v4,
                    v6,
                });
            }
            peers.push(Host {
                name: p.name.clone(),
                role: Role::Peer {
                    daemon: p.kind,
                    as_number: p.as_number,
                },
                ifaces,
                gateway4: None,
                gateway6: None,
            });
        }
        // A node's gateway is the first peer on its segment.
        let gateway = |s: usize| -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
            peers
                .iter()
                .find_map(|p| p.ifaces.iter().find(|i| i.segment == s))
                .map_or((None, None), |i| (i.v4, i.v6))
        };

        let mut hosts = Vec::new();
        let mut block_counter: Vec<u128> = pools.iter().map(|_| 1).collect();
        for (i, n) in t.nodes.iter().enumerate() {
            let at = format!("nodes[{i}] ({})", n.name);
            let Some(&s) = seg_index.get(n.segment.as_str()) else {
                continue; // reported above
            };
            let v4 = n
                .address
                .or_else(|| self.low_free4(&at, &segments[s], &mut taken[s]));
            let v6 = n
                .address6
                .or_else(|| self.low_free6(&at, &segments[s], &mut taken[s]));
            if n.as_number == Some(0) {
                self.problem(format!("{at}.asNumber"), "AS 0 is reserved");
            }
            let blocks = if n.pod_cidrs.is_empty() {
                let mut blocks = Vec::new();
                for (k, pool) in pools.iter().enumerate() {
                    match pool.cidr.subnet(pool.block_size, block_counter[k]) {
                        Some(b) => blocks.push(b),
                        None => self.problem(
                            at.clone(),
                            format!("IP pool {} has no block left for this node", pool.cidr),
                        ),
                    }
                    block_counter[k] += 1;
                }
                blocks
            } else {
                n.pod_cidrs.clone()
            };
            let (gateway4, gateway6) = gateway(s);
            hosts.push(Host {
                name: n.name.clone(),
                role: Role::Node {
                    as_number: n.as_number,
                    labels: n.labels.clone(),
                    cluster_id: n.route_reflector_cluster_id,
                    blocks,
                },
                ifaces: vec![Iface {
                    name: "eth0".to_string(),
                    segment: s,
                    v4,
                    v6,
                }],
                gateway4,
                gateway6,
            });
        }
        for (i, r) in t.reflectors.iter().enumerate() {
            let at = format!("reflectors[{i}] ({})", r.name);
            let Some(&s) = seg_index.get(r.segment.as_str()) else {
                continue;
            };
            let v4 = r
                .address
                .or_else(|| self.low_free4(&at, &segments[s], &mut taken[s]));
            let v6 = r
                .address6
                .or_else(|| self.low_free6(&at, &segments[s], &mut taken[s]));
            let (gateway4, gateway6) = gateway(s);
            hosts.push(Host {
                name: r.name.clone(),
                role: Role::Reflector {
                    cluster_id: r.cluster_id.unwrap_or(DEFAULT_CLUSTER_ID),
                },
                ifaces: vec![Iface {
                    name: "eth0".to_string(),
                    segment: s,
                    v4,
                    v6,
                }],
                gateway4,
                gateway6,
            });
        }
        hosts.extend(peers);

        let pods = self.pods(t, &hosts);
        let resources = self.resources(t, base);
        Lab {
            name: name.to_string(),
            as_number,
            pools,
            segments,
            hosts,
            pods,
            resources,
        }
    }

    fn pools(&mut self, t: &Topology) -> Vec<Pool> {
        let specs = if t.ip_pools.is_empty() {
            vec![
                PoolSpec {
                    cidr: Net::v4(Ipv4Addr::new(10, 244, 0, 0), 16),
                    block_size: None,
                },
                PoolSpec {
                    cidr: Net::v6(Ipv6Addr::new(0xfd10, 0, 0, 0, 0, 0, 0, 0), 48),
                    block_size: None,
                },
            ]
        } else {
            t.ip_pools.clone()
        };
        let mut pools: Vec<Pool> = Vec::new();
        for (i, p) in specs.iter().enumerate() {
            let at = format!("ipPools[{i}] ({})", p.cidr);
            let max = if p.cidr.is_ipv6() { 128 } else { 32 };
            let block_size = p
                .block_size
                .unwrap_or(if p.cidr.is_ipv6() { 64 } else { 24 });
            if block_size < p.cidr.prefix_len() || block_size > max {
                self.problem(
                    format!("{at}.blockSize"),
                    format!(
                        "{block_size} must be between the pool's length {} and {max}",
                        p.cidr.prefix_len()
                    ),
                );
            }
            if let Some(other) = pools.iter().find(|o| o.cidr.overlaps(&p.cidr)) {
                self.problem(
                    format!("{at}.cidr"),
                    format!("overlaps pool {}", other.cidr),
                );
            }
            pools.push(Pool {
                cidr: p.cidr,
                block_size,
            });
        }
        pools
    }

    fn segments(&mut self, t: &Topology, pools: &[Pool]) -> Vec<Segment> {
        if t.segments.is_empty() {
            self.problem("segments", "a topology needs at least one segment");
        }
        let mut out: Vec<Segment> = Vec::new();
        for (i, s) in t.segments.iter().enumerate() {
            let at = format!("segments[{i}] ({})", s.name);
            if !dns_label(&s.name) {
                self.problem(
                    format!("segments[{i}].name"),
                    format!(
                        "{:?} must be lowercase letters, digits and '-' (at most 63)",
                        s.name
                    ),
                );
            }
            if out.iter().any(|o| o.name == s.name) {
                self.problem(
                    format!("segments[{i}].name"),
                    format!("{:?} is used twice", s.name),
                );
            }
            if s.subnet.is_none() && s.subnet6.is_none() {
                self.problem(at.clone(), "a segment needs a subnet, a subnet6, or both");
            }
            for (field, net, v6, max) in [
                ("subnet", s.subnet, false, 30),
                ("subnet6", s.subnet6, true, 120),
            ] {
                let Some(net) = net else { continue };
                if net.is_ipv6() != v6 {
                    self.problem(
                        format!("{at}.{field}"),
                        format!(
                            "{net} is not an {} network",
                            if v6 { "IPv6" } else { "IPv4" }
                        ),
                    );
                } else if net.prefix_len() > max {
                    self.problem(
                        format!("{at}.{field}"),
                        format!("{net} is too small (at most /{max})"),
                    );
                }
                let others = out.iter().flat_map(|o| [o.v4, o.v6]).flatten();
                let pool_nets = pools.iter().map(|p| p.cidr);
                if let Some(o) = others.chain(pool_nets).find(|o| o.overlaps(&net)) {
                    self.problem(format!("{at}.{field}"), format!("{net} overlaps {o}"));
                }
            }
            out.push(Segment {
                name: s.name.clone(),
                v4: s.subnet.filter(|n| !n.is_ipv6()),
                v6: s.subnet6.filter(Net::is_ipv6),
            });
        }
        out
    }

    fn check_address(&mut self, at: &str, field: &str, a: IpAddr, net: Option<Net>, seg: &str) {
        match net {
            None => self.problem(
                format!("{at}.{field}"),
                format!(
                    "segment {seg:?} has no {} subnet",
                    if a.is_ipv6() { "IPv6" } else { "IPv4" }
                ),
            ),
            Some(n)
                if !n.contains(a)
                    || n.host(0) == Some(a)
                    || (!a.is_ipv6() && n.host(n.last()) == Some(a)) =>
            {
                self.problem(
                    format!("{at}.{field}"),
                    format!("{a} is not a host address of segment {seg:?} ({n})"),
                );
            }
            Some(_) => {}
        }
    }

    /// The lowest free address from .11 (room below for people's own additions).
    fn low_free4(&mut self, at: &str, seg: &Segment, taken: &mut Taken) -> Option<Ipv4Addr> {
        let net = seg.v4?;
        let found = (11..net.last())
            .filter_map(|n| match net.host(n) {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            })
            .find(|a| !taken.v4.contains(a));
        self.claim4(at, seg, taken, found)
    }

    fn low_free6(&mut self, at: &str, seg: &Segment, taken: &mut Taken) -> Option<Ipv6Addr> {
        let net = seg.v6?;
        let found = (0x11..net.last())
            .filter_map(|n| match net.host(n) {
                Some(IpAddr::V6(a)) => Some(a),
                _ => None,
            })
            .find(|a| !taken.v6.contains(a));
        self.claim6(at, seg, taken, found)
    }

    /// The highest free address from .254 down (where routers usually are).
    fn top_free4(&mut self, at: &str, seg: &Segment, taken: &mut Taken) -> Option<Ipv4Addr> {
        let net = seg.v4?;
        let found = (1..net.last())
            .rev()
            .filter_map(|n| match net.host(n) {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            })
            .find(|a| !taken.v4.contains(a));
        self.claim4(at, seg, taken, found)
    }

    fn top_free6(&mut self, at: &str, seg: &Segment, taken: &mut Taken) -> Option<Ipv6Addr> {
        let net = seg.v6?;
        let found = (1..=0xfe_u128.min(net.last()))
            .rev()
            .filter_map(|n| match net.host(n) {
                Some(IpAddr::V6(a)) => Some(a),
                _ => None,
            })
            .find(|a| !taken.v6.contains(a));
        self.claim6(at, seg, taken, found)
    }

    fn claim4(
        &mut self,
        at: &str,
        seg: &Segment,
        taken: &mut Taken,
        a: Option<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        match a {
            Some(a) => {
                taken.v4.insert(a);
                Some(a)
            }
            None => {
                self.problem(
                    at,
                    format!("segment {:?} has no IPv4 address left", seg.name),
                );
                None
            }
        }
    }

    fn claim6(
        &mut self,
        at: &str,
        seg: &Segment,
        taken: &mut Taken,
        a: Option<Ipv6Addr>,
    ) -> Option<Ipv6Addr> {
        match a {
            Some(a) => {
                taken.v6.insert(a);
                Some(a)
            }
            None => {
                self.problem(
                    at,
                    format!("segment {:?} has no IPv6 address left", seg.name),
                );
                None
            }
        }
    }

    fn pods(&mut self, t: &Topology, hosts: &[Host]) -> Vec<Pod> {
        let mut out: Vec<Pod> = Vec::new();
        let mut used: BTreeSet<IpAddr> = BTreeSet::new();
        for p in &t.pods {
            used.extend(p.ipv4.map(IpAddr::V4));
            used.extend(p.ipv6.map(IpAddr::V6));
        }
        // Next automatic host number per block.
        let mut next: BTreeMap<Net, u128> = BTreeMap::new();
        for (i, p) in t.pods.iter().enumerate() {
            let at = format!("pods[{i}] ({}/{})", p.namespace, p.name);
            if !dns_label(&p.namespace) {
                self.problem(
                    format!("{at}.namespace"),
                    format!("{:?} is not a DNS label", p.namespace),
                );
            }
            if !dns_label(&p.name) {
                self.problem(
                    format!("{at}.name"),
                    format!(
                        "{:?} must be lowercase letters, digits and '-' (at most 63)",
                        p.name
                    ),
                );
            }
            if out
                .iter()
                .any(|o| o.namespace == p.namespace && o.name == p.name)
            {
                self.problem(at.clone(), "the same pod is listed twice");
            }
            for (k, port) in p.ports.iter().enumerate() {
                if !["TCP", "UDP", "SCTP"].contains(&port.protocol.as_str()) {
                    self.problem(
                        format!("{at}.ports[{k}].protocol"),
                        format!("{:?} is not TCP, UDP or SCTP", port.protocol),
                    );
                }
                if port.port == 0 {
                    self.problem(format!("{at}.ports[{k}].port"), "port 0 is not a port");
                }
            }
            let Some(host) = hosts.iter().find(|h| h.name == p.node) else {
                self.problem(
                    format!("{at}.node"),
                    format!("node {:?} is not defined in nodes", p.node),
                );
                continue;
            };
            let Role::Node { blocks, .. } = &host.role else {
                self.problem(format!("{at}.node"), format!("{:?} is not a node", p.node));
                continue;
            };
            let mut pick = |v6: bool,
                            explicit: Option<IpAddr>,
                            field: &str,
                            r: &mut Resolver|
             -> Option<IpAddr> {
                let family: Vec<&Net> = blocks.iter().filter(|b| b.is_ipv6() == v6).collect();
                if let Some(a) = explicit {
                    if !family.iter().any(|b| b.contains(a)) {
                        r.problem(
                            format!("{at}.{field}"),
                            format!("{a} is not in a pod block of node {:?}", p.node),
                        );
                    }
                    return Some(a);
                }
                let block = **family.first()?;
                // Pods from .10 (IPv4) and ::10 (IPv6), so their addresses read alike.
                let n = next.entry(block).or_insert(if v6 { 0x10 } else { 10 });
                while let Some(a) = block.host(*n) {
                    *n += 1;
                    if used.insert(a) {
                        return Some(a);
                    }
                }
                r.problem(
                    at.clone(),
                    format!("block {block} of node {:?} is full", p.node),
                );
                None
            };
            let v4 = pick(false, p.ipv4.map(IpAddr::V4), "ipv4", self);
            let v6 = pick(true, p.ipv6.map(IpAddr::V6), "ipv6", self);
            out.push(Pod {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                node: p.node.clone(),
                labels: p.labels.clone(),
                ports: p.ports.clone(),
                v4: match v4 {
                    Some(IpAddr::V4(a)) => Some(a),
                    _ => None,
                },
                v6: match v6 {
                    Some(IpAddr::V6(a)) => Some(a),
                    _ => None,
                },
                host_if: tabby_datastore::facts::workload_interface(
                    tabby_datastore::facts::DEFAULT_INTERFACE_PREFIX,
                    &p.namespace,
                    &p.name,
                ),
            });
        }
        let mut seen = BTreeMap::new();
        for pod in &out {
            for ip in pod.ips() {
                if let Some(other) = seen.insert(ip, pod.id()) {
                    self.problem(
                        format!("pods ({})", pod.id()),
                        format!("{ip} is also {other}'s"),
                    );
                }
            }
        }
        out
    }

    fn resources(&mut self, t: &Topology, base: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for (i, r) in t.resources.iter().enumerate() {
            let path = if r.is_absolute() {
                r.clone()
            } else {
                base.join(r)
            };
            if !path.is_file() {
                self.problem(
                    format!("resources[{i}]"),
                    format!("{} is not a file", path.display()),
                );
            }
            out.push(path);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn resolve(yaml: &str) -> Result<Lab, TopologyError> {
        Topology::parse(yaml, "test.yaml")?.resolve("t1", "test.yaml", Path::new("/"))
    }

    fn problems(yaml: &str) -> Vec<String> {
        match resolve(yaml) {
            Err(TopologyError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn the_default_topology_resolves() {
        let lab = Topology::default_topology()
            .resolve("default", "built-in", Path::new("/"))
            .unwrap();
        assert_eq!(lab.nodes().count(), 4);
        assert_eq!(lab.pods.len(), 8);
        assert!(lab.pods.iter().all(|p| p.v4.is_some() && p.v6.is_some()));
    }

    #[test]
    fn the_default_topology_peers_through_its_standalone_reflector() {
        let lab = Topology::default_topology()
            .resolve("default", "built-in", Path::new("/"))
            .unwrap();
        assert!(lab.uses_reflectors());
        let rr1 = lab.host("rr1").unwrap();
        assert!(
            matches!(rr1.role, Role::Reflector { cluster_id } if cluster_id == DEFAULT_CLUSTER_ID)
        );
        assert_eq!(rr1.v4().unwrap().to_string(), "10.0.0.11");
    }

    #[test]
    fn addresses_are_assigned_nodes_from_11_and_routers_from_254() {
        let lab = resolve(
            "segments: [{name: rack1, subnet: 10.0.1.0/24, subnet6: 'fd00:1::/64'}]\n\
             nodes: [{name: n1, segment: rack1}, {name: n2, segment: rack1, address: 10.0.1.11}]\n\
             peers: [{name: tor, asNumber: 65001, segments: [rack1]}]\n",
        )
        .unwrap();
        let n1 = lab.host("n1").unwrap();
        assert_eq!(n1.v4().unwrap().to_string(), "10.0.1.12");
        assert_eq!(n1.v6().unwrap().to_string(), "fd00:1::11");
        assert_eq!(n1.gateway4.unwrap().to_string(), "10.0.1.254");
        assert_eq!(n1.gateway6.unwrap().to_string(), "fd00:1::fe");
    }

    #[test]
    fn nodes_get_consecutive_blocks_and_pods_addresses_from_them() {
        let lab = resolve(
            "segments: [{name: s, subnet: 10.0.0.0/24}]\n\
             nodes: [{name: a, segment: s}, {name: b, segment: s}]\n\
             pods: [{name: p, node: b}, {name: q, node: b}]\n",
        )
        .unwrap();
        let Role::Node { blocks, .. } = &lab.host("b").unwrap().role else {
            panic!()
        };
        assert_eq!(blocks[0].to_string(), "10.244.2.0/24");
        assert_eq!(blocks[1].to_string(), "fd10:0:0:2::/64");
        assert_eq!(lab.pods[1].v4.unwrap().to_string(), "10.244.2.11");
        assert_eq!(lab.pods[0].v6.unwrap().to_string(), "fd10:0:0:2::10");
    }

    #[test]
    fn pod_host_interfaces_follow_calicos_sha1_rule() {
        let lab = resolve(
            "segments: [{name: s, subnet: 10.0.0.0/24}]\nnodes: [{name: a, segment: s}]\npods: [{name: nginx, node: a}]\n",
        )
        .unwrap();
        // printf %s default.nginx | sha1sum | cut -c1-11
        assert_eq!(lab.pods[0].host_if, "calic440f455693");
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let p = problems(
            "segments: [{name: s, subnet: 10.0.0.0/24}]\n\
             nodes: [{name: a, segment: nowhere}, {name: a, segment: s, address: 10.9.9.9}]\n\
             pods: [{name: p, node: ghost}]\n",
        );
        assert!(
            p.iter()
                .any(|m| m.contains("nodes[0] (a).segment")
                    && m.contains("\"nowhere\" is not defined")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.contains("nodes[1].name") && m.contains("used by another")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.contains("nodes[1] (a).address") && m.contains("not a host address")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.contains("pods[0] (default/p).node")),
            "{p:?}"
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let e = Topology::parse(
            "segments: [{name: s, subnet: 10.0.0.0/24, mtu: 9000}]",
            "t.yaml",
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("segments[0]") && m.contains("mtu"), "{m}");
    }

    #[test]
    fn a_bad_cidr_names_its_field() {
        let e =
            Topology::parse("segments: [{name: s, subnet: 10.0.0.0/40}]", "t.yaml").unwrap_err();
        assert!(e.to_string().contains("segments[0].subnet"), "{e}");
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let p =
            problems("segments: [{name: a, subnet: 10.0.0.0/16}, {name: b, subnet: 10.0.1.0/24}]");
        assert!(
            p.iter()
                .any(|m| m.contains("segments[1] (b).subnet") && m.contains("overlaps")),
            "{p:?}"
        );
    }

    #[test]
    fn lab_names_must_fit_netns_names() {
        assert!(check_lab_name("lab-1").is_ok());
        assert!(check_lab_name("a.b").is_err());
        assert!(check_lab_name("").is_err());
        assert!(check_lab_name(&"x".repeat(MAX_LAB_NAME + 1)).is_err());
    }

    #[test]
    fn a_topology_with_a_standalone_reflector_is_accepted() {
        let lab = resolve(
            "segments: [{name: s, subnet: 10.0.0.0/24}]\nreflectors: [{name: rr, segment: s}]\n",
        )
        .unwrap();
        assert!(lab.uses_reflectors());
    }
}
