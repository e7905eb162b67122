//! The calculation: datastore events in, the node's desired state out. Pure: no I/O, no clock.
//!
//! [`Calc::apply`] does cheap bookkeeping per [`Event`]: it keeps only the facts the node
//! needs, extracted from each object (a Node's addresses and labels, a local Pod's addresses,
//! an IPAMBlock's CIDR and affinity, ...), and compares them with what it had, so an update
//! that changes nothing this node cares about (a pod on another node, a Node heartbeat, an
//! IPAMBlock allocation) invalidates nothing. The accessors compute the desired state from
//! those facts lazily and cache it until an input it depends on changes:
//!
//! | accessor | depends on |
//! |---|---|
//! | [`node_info`](Calc::node_info) | this Node, `BGPConfiguration default` |
//! | [`endpoints`](Calc::endpoints) | this node's Pods, FelixConfiguration `interfacePrefix` |
//! | [`blocks`](Calc::blocks), [`originated`](Calc::originated) | this Node's `podCIDRs`, IPAMBlocks affine to it, IPPools |
//! | [`bgp`](Calc::bgp) | every Node, BGPPeers, BGPConfigurations, the password Secrets |
//! | [`routes`](Calc::routes) | endpoints, blocks, IPPools, routes learned over BGP |
//!
//! Semantics are Calico's (confd's `bird*.cfg` templates and its BGPPeer processing); where
//! tabby differs, the item's documentation says so.

mod bgp;
mod net;

pub use bgp::{BgpConfig, NextHopMode, Peer, PeerKind, PeerSource};

use crate::routes::{Dst, NextHop, Route, Target};
use k8s_openapi::api::core::v1::{Node, NodeSpec, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use tabby_datastore::calico::{
    BGPConfiguration, BGPPeer, EncapMode, FelixConfiguration, IPAMBlock, IPAMBlockSpec, IPPool,
    SecretKeyRef,
};
use tabby_datastore::{facts, AsNumber, Event, Key, Kind, Resource};
use tabby_selector::Selector;

/// The namespace BGP password Secrets are read from unless told otherwise.
pub const DEFAULT_SECRET_NAMESPACE: &str = "kube-system";
/// The BGP port when `listenPort` is not set.
pub const DEFAULT_BGP_PORT: u16 = 179;
/// The name of the cluster-wide BGPConfiguration and FelixConfiguration.
pub const GLOBAL_CONFIG: &str = "default";

/// Who this node is, as BGP sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node name.
    pub name: String,
    /// BGP IPv4 address and the prefix length of its subnet (annotation
    /// `projectcalico.org/IPv4Address`, else the first IPv4 `InternalIP` as a /32).
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// BGP IPv6 address and prefix length, likewise.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// BGP router ID: the IPv4 BGP address, as Calico's `bird.cfg` sets it. `None` on a node
    /// without one (an IPv6-only node needs an explicit router ID; not implemented yet).
    pub router_id: Option<Ipv4Addr>,
    /// The node's AS: annotation `projectcalico.org/ASNumber`, else `BGPConfiguration default`
    /// `asNumber`, else 64512.
    pub asn: AsNumber,
    /// The route reflector cluster ID when the node is a reflector
    /// (annotation `projectcalico.org/RouteReflectorClusterID`).
    pub rr_cluster_id: Option<Ipv4Addr>,
}

/// A pod on this node: a workload whose host-side interface tabby routes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEndpoint {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// Host-side interface, named as Calico's CNI plugin names it.
    pub iface: String,
    /// IPv4 addresses from `status.podIPs`.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses from `status.podIPs`.
    pub ipv6: Vec<Ipv6Addr>,
    /// The pod's own labels.
    pub labels: BTreeMap<String, String>,
}

/// The parts of an IPPool that decide how its addresses are routed and advertised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    /// The IPPool's name.
    pub name: String,
    /// Its CIDR.
    pub cidr: Dst,
    /// `ipipMode` (default Never).
    pub ipip: EncapMode,
    /// `disableBGPExport`: blocks of this pool are not advertised.
    pub disable_bgp_export: bool,
}

/// One of this node's pod blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnBlock {
    /// The block's CIDR.
    pub cidr: Dst,
    /// The IPPool containing it (the most specific one, then by name), if any.
    pub pool: Option<PoolInfo>,
}

/// What a Node contributes, extracted once per update so unchanged updates cost a compare.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct NodeFacts {
    labels: BTreeMap<String, String>,
    ipv4: Option<(Ipv4Addr, u8)>,
    ipv6: Option<(Ipv6Addr, u8)>,
    /// The AS annotation, if valid; the effective AS also depends on BGPConfiguration.
    asn: Option<AsNumber>,
    rr_cluster_id: Option<Ipv4Addr>,
    pod_cidrs: Vec<String>,
}

impl NodeFacts {
    fn of(node: &Node) -> NodeFacts {
        let ipv4 = match facts::node_address(node, false) {
            Some((IpAddr::V4(a), len)) => Some((a, len)),
            _ => None,
        };
        let ipv6 = match facts::node_address(node, true) {
            Some((IpAddr::V6(a), len)) => Some((a, len)),
            _ => None,
        };
        let asn = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(facts::ANNOTATION_AS))
            .and_then(|v| v.parse().ok());
        NodeFacts {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            ipv4,
            ipv6,
            asn,
            rr_cluster_id: facts::node_rr_cluster_id(node),
            pod_cidrs: node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidrs.clone())
                .unwrap_or_default(),
        }
    }

    fn address(&self, ipv6: bool) -> Option<IpAddr> {
        if ipv6 {
            self.ipv6.map(|(a, _)| IpAddr::V6(a))
        } else {
            self.ipv4.map(|(a, _)| IpAddr::V4(a))
        }
    }
}

/// A local pod's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LocalPod {
    ips: Vec<IpAddr>,
    labels: BTreeMap<String, String>,
}

/// The BGPConfiguration fields tabby uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct BgpSettings {
    asn: Option<AsNumber>,
    mesh_enabled: Option<bool>,
    listen_port: Option<u16>,
    mesh_password: Option<SecretKeyRef>,
    mesh_restart_time: Option<Duration>,
    /// `prefixAdvertisements` with community names resolved to values.
    advertisements: Vec<(Dst, Vec<String>)>,
}

impl BgpSettings {
    fn of(c: &BGPConfiguration) -> BgpSettings {
        let s = &c.spec;
        BgpSettings {
            asn: s.as_number,
            mesh_enabled: s.node_to_node_mesh_enabled,
            // Calico reads 0 as unset.
            listen_port: s.listen_port.filter(|p| *p != 0),
            mesh_password: s
                .node_mesh_password
                .as_ref()
                .and_then(|p| p.secret_key_ref.clone()),
            mesh_restart_time: s
                .node_mesh_max_restart_time
                .as_deref()
                .and_then(|d| tabby_datastore::validate::duration(d).ok()),
            advertisements: advertisements(s),
        }
    }
}

/// The prefix advertisements of a BGPConfiguration, community names resolved (a name that
/// names nothing is dropped; validation reports it).
fn advertisements(s: &tabby_datastore::calico::BGPConfigurationSpec) -> Vec<(Dst, Vec<String>)> {
    let named: BTreeMap<&str, &str> = s
        .communities
        .iter()
        .flatten()
        .filter_map(|c| Some((c.name.as_deref()?, c.value.as_deref()?)))
        .collect();
    s.prefix_advertisements
        .iter()
        .flatten()
        .filter_map(|a| {
            let cidr = net::parse_cidr(a.cidr.as_deref()?)?;
            let values = a
                .communities
                .iter()
                .filter_map(|c| {
                    if c.contains(':') {
                        Some(c.clone())
                    } else {
                        named.get(c.as_str()).map(|v| (*v).to_string())
                    }
                })
                .collect();
            Some((cidr, values))
        })
        .collect()
}

/// To which nodes a BGPPeer applies.
#[derive(Debug, Clone, PartialEq)]
enum Applies {
    /// Neither `node` nor `nodeSelector`: every node (a global peer).
    All,
    /// `spec.node`.
    Node(String),
    /// `spec.nodeSelector`.
    Selector(Selector),
}

/// The remote side of a BGPPeer.
#[derive(Debug, Clone, PartialEq)]
enum Remote {
    /// `peerIP` (+ port) and `asNumber`.
    Ip {
        ip: IpAddr,
        port: Option<u16>,
        asn: Option<AsNumber>,
    },
    /// `peerSelector`: the selected nodes.
    Nodes(Selector),
}

/// A BGPPeer, parsed.
#[derive(Debug, Clone, PartialEq)]
struct PeerSpec {
    applies: Applies,
    remote: Remote,
    keep_original_next_hop: bool,
    next_hop_mode: Option<String>,
    password: Option<SecretKeyRef>,
    max_restart_time: Option<Duration>,
    keepalive_time: Option<Duration>,
}

impl PeerSpec {
    /// `None` when the object cannot be used (the datastore validates, so this is defensive).
    fn of(p: &BGPPeer) -> Option<PeerSpec> {
        let s = &p.spec;
        fn nonempty(o: &Option<String>) -> Option<&str> {
            o.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let applies = match (nonempty(&s.node), nonempty(&s.node_selector)) {
            (_, Some(sel)) => Applies::Selector(Selector::parse(sel).ok()?),
            (Some(node), None) => Applies::Node(node.to_string()),
            (None, None) => Applies::All,
        };
        let remote = match (nonempty(&s.peer_selector), nonempty(&s.peer_ip)) {
            (Some(sel), _) => Remote::Nodes(Selector::parse(sel).ok()?),
            (None, Some(ip)) => {
                let (ip, port) = tabby_datastore::validate::peer_ip(ip).ok()?;
                Remote::Ip {
                    ip,
                    port,
                    asn: s.as_number,
                }
            }
            (None, None) => return None,
        };
        let duration = |d: &Option<String>| {
            d.as_deref()
                .and_then(|d| tabby_datastore::validate::duration(d).ok())
        };
        Some(PeerSpec {
            applies,
            remote,
            keep_original_next_hop: s.keep_original_next_hop == Some(true),
            next_hop_mode: s.next_hop_mode.clone(),
            password: s.password.as_ref().and_then(|p| p.secret_key_ref.clone()),
            max_restart_time: duration(&s.max_restart_time),
            keepalive_time: duration(&s.keepalive_time),
        })
    }
}

/// The IPPool fields tabby uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PoolFacts {
    cidr: Dst,
    ipip: EncapMode,
    disable_bgp_export: bool,
}

/// The node's desired state, computed from the datastore stream.
///
/// Feed it every [`Event`] with [`apply`](Calc::apply); read the desired state with the
/// accessors. Pure and deterministic: the state depends only on the set of objects the
/// events lead to, never on their order (the crate's property tests check this).
#[derive(Debug)]
pub struct Calc {
    node_name: String,
    secret_namespace: String,
    in_sync: bool,

    nodes: BTreeMap<String, NodeFacts>,
    local_pods: BTreeMap<(String, String), LocalPod>,
    /// IPAMBlocks affine to this node, by object name: CIDR, affinity, deleted flag only.
    own_ipam_blocks: BTreeMap<String, IPAMBlock>,
    pools: BTreeMap<String, PoolFacts>,
    bgp_configs: BTreeMap<String, BgpSettings>,
    /// `interfacePrefix` of FelixConfigurations `default` and `node.<this node>`.
    felix_prefixes: BTreeMap<String, Option<String>>,
    bgp_peers: BTreeMap<String, PeerSpec>,
    /// Secrets of the secret namespace: name -> key -> value.
    secrets: BTreeMap<String, BTreeMap<String, String>>,

    endpoints: OnceCell<BTreeMap<String, WorkloadEndpoint>>,
    blocks: OnceCell<Vec<OwnBlock>>,
    bgp: OnceCell<BgpConfig>,
}

impl Calc {
    /// A calc for node `node_name`, reading BGP password Secrets from `kube-system`.
    pub fn new(node_name: &str) -> Calc {
        Calc::with_secret_namespace(node_name, DEFAULT_SECRET_NAMESPACE)
    }

    /// A calc for node `node_name`, reading BGP password Secrets from `namespace`
    /// (`--namespace`).
    pub fn with_secret_namespace(node_name: &str, namespace: &str) -> Calc {
        Calc {
            node_name: node_name.to_string(),
            secret_namespace: namespace.to_string(),
            in_sync: false,
            nodes: BTreeMap::new(),
            local_pods: BTreeMap::new(),
            own_ipam_blocks: BTreeMap::new(),
            pools: BTreeMap::new(),
            bgp_configs: BTreeMap::new(),
            felix_prefixes: BTreeMap::new(),
            bgp_peers: BTreeMap::new(),
            secrets: BTreeMap::new(),
            endpoints: OnceCell::new(),
            blocks: OnceCell::new(),
            bgp: OnceCell::new(),
        }
    }

    /// The node this calc is for.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Whether the datastore has reported in-sync (nothing may be written to the kernel
    /// before; shared/DESIGN.md §2).
    pub fn in_sync(&self) -> bool {
        self.in_sync
    }

    /// Takes one event of the datastore stream into account. Errors and connection changes
    /// change nothing (the last good state is kept).
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Update { key, object } => self.update(key, object.as_deref()),
            Event::InSync => self.in_sync = true,
            Event::Error(_) | Event::Connected(_) => {}
        }
    }

    fn update(&mut self, key: &Key, object: Option<&Resource>) {
        match (key.kind, object) {
            (Kind::Node, Some(Resource::Node(n))) => self.set_node(&key.name, Some(n)),
            (Kind::Node, _) => self.set_node(&key.name, None),
            (Kind::Pod, o) => {
                let pod = match o {
                    Some(Resource::Pod(p)) => Some(p),
                    _ => None,
                };
                self.set_pod(key, pod);
            }
            (Kind::IPAMBlock, o) => {
                let block = match o {
                    Some(Resource::IPAMBlock(b)) => Some(b),
                    _ => None,
                };
                self.set_ipam_block(&key.name, block);
            }
            (Kind::IPPool, o) => {
                let pool = match o {
                    Some(Resource::IPPool(p)) => pool_facts(p),
                    _ => None,
                };
                if set(&mut self.pools, &key.name, pool) {
                    self.blocks.take();
                }
            }
            (Kind::BGPConfiguration, o) => {
                let conf = match o {
                    Some(Resource::BGPConfiguration(c)) => Some(BgpSettings::of(c)),
                    _ => None,
                };
                if set(&mut self.bgp_configs, &key.name, conf) {
                    self.bgp.take();
                }
            }
            (Kind::FelixConfiguration, o) => {
                if key.name != GLOBAL_CONFIG && key.name != format!("node.{}", self.node_name) {
                    return;
                }
                let prefix = match o {
                    Some(Resource::FelixConfiguration(c)) => Some(felix_prefix(c)),
                    _ => None,
                };
                let before = self.interface_prefix();
                set(&mut self.felix_prefixes, &key.name, prefix);
                if self.interface_prefix() != before {
                    self.endpoints.take();
                }
            }
            (Kind::BGPPeer, o) => {
                let spec = match o {
                    Some(Resource::BGPPeer(p)) => PeerSpec::of(p),
                    _ => None,
                };
                if set(&mut self.bgp_peers, &key.name, spec) {
                    self.bgp.take();
                }
            }
            (Kind::Secret, o) => {
                if key.namespace.as_deref() != Some(self.secret_namespace.as_str()) {
                    return;
                }
                let values = match o {
                    Some(Resource::Secret(s)) => Some(secret_values(s)),
                    _ => None,
                };
                if set(&mut self.secrets, &key.name, values) && self.secret_is_used(&key.name) {
                    self.bgp.take();
                }
            }
            _ => {}
        }
    }

    fn set_node(&mut self, name: &str, node: Option<&Node>) {
        let facts = node.map(NodeFacts::of);
        let old = self.nodes.get(name);
        if old == facts.as_ref() {
            return;
        }
        let own = name == self.node_name;
        if own && old.map(|f| &f.pod_cidrs) != facts.as_ref().map(|f| &f.pod_cidrs) {
            self.blocks.take();
        }
        set(&mut self.nodes, name, facts);
        self.bgp.take();
    }

    fn set_pod(&mut self, key: &Key, pod: Option<&Pod>) {
        let id = (key.namespace.clone().unwrap_or_default(), key.name.clone());
        let local = pod.and_then(|p| {
            if !facts::pod_is_workload_of(p, &self.node_name) || pod_finished(p) {
                return None;
            }
            let ips = facts::pod_ips(p);
            (!ips.is_empty()).then(|| LocalPod {
                ips,
                labels: p.metadata.labels.clone().unwrap_or_default(),
            })
        });
        // A pod that is not ours and was not ours costs one map lookup.
        if self.local_pods.get(&id) == local.as_ref() {
            return;
        }
        match local {
            Some(l) => self.local_pods.insert(id, l),
            None => self.local_pods.remove(&id),
        };
        self.endpoints.take();
    }

    fn set_ipam_block(&mut self, name: &str, block: Option<&IPAMBlock>) {
        let affinity = format!("host:{}", self.node_name);
        // Keep only what decides our blocks, so allocation changes compare equal.
        let own = block
            .filter(|b| b.spec.affinity.as_deref() == Some(affinity.as_str()))
            .map(|b| {
                IPAMBlock::new(
                    name,
                    IPAMBlockSpec {
                        cidr: b.spec.cidr.clone(),
                        affinity: b.spec.affinity.clone(),
                        deleted: b.spec.deleted,
                        ..IPAMBlockSpec::default()
                    },
                )
            });
        if set(&mut self.own_ipam_blocks, name, own) {
            self.blocks.take();
        }
    }

    fn secret_is_used(&self, name: &str) -> bool {
        let named = |r: &Option<SecretKeyRef>| r.as_ref().is_some_and(|r| r.name == name);
        self.bgp_peers.values().any(|p| named(&p.password))
            || self.bgp_configs.values().any(|c| named(&c.mesh_password))
    }

    /// The value of a Secret key in the secret namespace.
    fn secret(&self, r: &SecretKeyRef) -> Option<String> {
        self.secrets.get(&r.name)?.get(&r.key).cloned()
    }

    /// The communities Calico attaches to an advertised prefix: those of every
    /// `prefixAdvertisements` entry of `BGPConfiguration default` whose CIDR contains it
    /// (BIRD's `net ~ cidr`), names resolved through `communities`, as written (`aa:nn` or
    /// `aa:nn:mm`), without duplicates.
    pub fn communities(&self, dst: &Dst) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (cidr, values) in self.default_bgp().map_or(&[][..], |c| &c.advertisements) {
            if net::covers(*cidr, *dst) {
                for v in values {
                    if !out.contains(v) {
                        out.push(v.clone());
                    }
                }
            }
        }
        out
    }

    fn default_bgp(&self) -> Option<&BgpSettings> {
        self.bgp_configs.get(GLOBAL_CONFIG)
    }

    /// The effective AS of a node.
    fn as_of(&self, facts: &NodeFacts) -> AsNumber {
        facts
            .asn
            .or_else(|| self.default_bgp().and_then(|c| c.asn))
            .unwrap_or(facts::DEFAULT_AS)
    }

    /// The BGP port a node listens on: `BGPConfiguration node.<node>` `listenPort`, else
    /// `default`'s, else 179 (Calico's confd does the same for the ports of its peers).
    fn listen_port_of(&self, node: &str) -> u16 {
        self.bgp_configs
            .get(&format!("node.{node}"))
            .and_then(|c| c.listen_port)
            .or_else(|| self.default_bgp().and_then(|c| c.listen_port))
            .unwrap_or(DEFAULT_BGP_PORT)
    }

    /// The workload interface prefix: FelixConfiguration `node.<node>`, else `default`, else
    /// `cali`; the first of a comma-separated list (Felix accepts several, CNI uses the first).
    pub fn interface_prefix(&self) -> String {
        let node = format!("node.{}", self.node_name);
        [node.as_str(), GLOBAL_CONFIG]
            .iter()
            .find_map(|name| self.felix_prefixes.get(*name).cloned().flatten())
            .unwrap_or_else(|| facts::DEFAULT_INTERFACE_PREFIX.to_string())
    }

    /// This node's identity for BGP. Known (with defaults) even before its Node arrives.
    pub fn node_info(&self) -> NodeInfo {
        let empty = NodeFacts::default();
        let me = self.nodes.get(&self.node_name).unwrap_or(&empty);
        NodeInfo {
            name: self.node_name.clone(),
            ipv4: me.ipv4,
            ipv6: me.ipv6,
            router_id: me.ipv4.map(|(a, _)| a),
            asn: self.as_of(me),
            rr_cluster_id: me.rr_cluster_id,
        }
    }

    /// The workloads on this node, by host interface name: every Pod with `spec.nodeName`
    /// this node, not on the host network, not finished (phase `Succeeded` or `Failed`, whose
    /// addresses Kubernetes may already have reused, as Calico's pod conversion does), and
    /// with at least one address. Two pods can only share an interface name by a SHA-1 prefix
    /// collision; then the first by namespace and name wins.
    pub fn endpoints(&self) -> &BTreeMap<String, WorkloadEndpoint> {
        self.endpoints.get_or_init(|| {
            let prefix = self.interface_prefix();
            let mut out = BTreeMap::new();
            for ((ns, name), pod) in &self.local_pods {
                let iface = facts::workload_interface(&prefix, ns, name);
                out.entry(iface.clone())
                    .or_insert_with(|| WorkloadEndpoint {
                        namespace: ns.clone(),
                        name: name.clone(),
                        iface,
                        ipv4: pod
                            .ips
                            .iter()
                            .filter_map(|ip| match ip {
                                IpAddr::V4(a) => Some(*a),
                                IpAddr::V6(_) => None,
                            })
                            .collect(),
                        ipv6: pod
                            .ips
                            .iter()
                            .filter_map(|ip| match ip {
                                IpAddr::V6(a) => Some(*a),
                                IpAddr::V4(_) => None,
                            })
                            .collect(),
                        labels: pod.labels.clone(),
                    });
            }
            out
        })
    }

    /// This node's pod blocks ([`facts::node_blocks`]: its `podCIDRs`, then IPAMBlocks affine
    /// to it, not marked deleted), sorted, each with its IPPool.
    pub fn blocks(&self) -> &[OwnBlock] {
        self.blocks.get_or_init(|| {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(self.node_name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(NodeSpec {
                    pod_cidrs: self.nodes.get(&self.node_name).map(|f| f.pod_cidrs.clone()),
                    ..NodeSpec::default()
                }),
                status: None,
            };
            let cidrs: BTreeSet<Dst> = facts::node_blocks(&node, self.own_ipam_blocks.values())
                .iter()
                .filter_map(|c| net::parse_cidr(c))
                .collect();
            cidrs
                .into_iter()
                .map(|cidr| OwnBlock {
                    cidr,
                    pool: self.pool_covering(cidr),
                })
                .collect()
        })
    }

    /// The most specific IPPool containing `dst` (then the first by name).
    fn pool_covering(&self, dst: Dst) -> Option<PoolInfo> {
        self.pools
            .iter()
            .filter(|(_, p)| net::covers(p.cidr, dst))
            .min_by_key(|(name, p)| (std::cmp::Reverse(p.cidr.len), *name))
            .map(|(name, p)| PoolInfo {
                name: name.clone(),
                cidr: p.cidr,
                ipip: p.ipip,
                disable_bgp_export: p.disable_bgp_export,
            })
    }

    /// The prefixes this node advertises over BGP: its blocks, except those inside an IPPool
    /// with `disableBGPExport: true`. A block in no IPPool (a `podCIDR` of a cluster whose
    /// pools do not cover it) is advertised: Calico's export filter rejects only prefixes of
    /// export-disabled pools and then accepts every block of the node (`calico_aggr` in
    /// confd's `bird_aggr.cfg`, before the pool check in `bird_ipam.cfg`).
    pub fn originated(&self) -> Vec<Dst> {
        self.blocks()
            .iter()
            .filter(|b| {
                !self
                    .pools
                    .values()
                    .any(|p| p.disable_bgp_export && net::covers(p.cidr, b.cidr))
            })
            .map(|b| b.cidr)
            .collect()
    }

    /// The BGP configuration of this node: listen port, mesh, and the peers.
    /// See [`BgpConfig`] for the rules.
    pub fn bgp(&self) -> &BgpConfig {
        self.bgp.get_or_init(|| self.compute_bgp())
    }

    /// The routes this node wants, sorted by destination, one per destination:
    ///
    /// - a workload route (`dev <iface> scope link`) per local endpoint address (/32, /128);
    /// - a blackhole per own block, except host-length blocks (a /32 or /128 block's only
    ///   address is a pod's route; Calico's `bird_aggr.cfg` skips /32 blocks likewise);
    /// - for each `learned` prefix (as the BGP speaker chose them: prefix and gateways), a
    ///   route via the gateways (ECMP when several, sorted and deduplicated), through IP-in-IP
    ///   when the most specific IPPool containing the prefix has `ipipMode: Always`, or
    ///   `CrossSubnet` and the gateway is outside this node's IPv4 subnet (its address and
    ///   prefix length; a node whose length is unknown is a /32, so CrossSubnet tunnels).
    ///   IP-in-IP is IPv4 only. Never for one of our own blocks, a local workload address,
    ///   or via one of this node's own addresses.
    ///
    /// Earlier items win when destinations collide.
    pub fn routes(&self, learned: &[(Dst, Vec<IpAddr>)]) -> Vec<Route> {
        let mut out: BTreeMap<Dst, Target> = BTreeMap::new();
        for ep in self.endpoints().values() {
            let addrs = ep
                .ipv4
                .iter()
                .map(|a| IpAddr::V4(*a))
                .chain(ep.ipv6.iter().map(|a| IpAddr::V6(*a)));
            for addr in addrs {
                out.entry(net::host(addr))
                    .or_insert_with(|| Target::Workload {
                        iface: ep.iface.clone(),
                    });
            }
        }
        for b in self.blocks() {
            if b.cidr.len != net::host_len(b.cidr.addr) {
                out.entry(b.cidr).or_insert(Target::Blackhole);
            }
        }
        let own_blocks: BTreeSet<Dst> = self.blocks().iter().map(|b| b.cidr).collect();
        let me = self.node_info();
        let own_addrs: Vec<IpAddr> = me
            .ipv4
            .map(|(a, _)| IpAddr::V4(a))
            .into_iter()
            .chain(me.ipv6.map(|(a, _)| IpAddr::V6(a)))
            .collect();
        let subnet = me.ipv4.map(|(a, len)| net::prefix(IpAddr::V4(a), len));
        for (dst, gateways) in learned {
            let dst = net::prefix(dst.addr, dst.len);
            if own_blocks.contains(&dst) || out.contains_key(&dst) {
                continue;
            }
            let pool = self.pool_covering(dst);
            let hops: BTreeSet<NextHop> = gateways
                .iter()
                .filter(|g| !own_addrs.contains(g))
                .map(|&gateway| NextHop {
                    gateway,
                    ipip: gateway.is_ipv4()
                        && dst.addr.is_ipv4()
                        && match pool.as_ref().map(|p| p.ipip) {
                            Some(EncapMode::Always) => true,
                            Some(EncapMode::CrossSubnet) => {
                                !subnet.is_some_and(|s| net::contains(s, gateway))
                            }
                            _ => false,
                        },
                })
                .collect();
            if !hops.is_empty() {
                out.insert(dst, Target::Via(hops.into_iter().collect()));
            }
        }
        out.into_iter()
            .map(|(dst, target)| Route { dst, target })
            .collect()
    }
}

/// Sets or removes `map[name]`; true when that changed the map.
fn set<V: PartialEq>(map: &mut BTreeMap<String, V>, name: &str, value: Option<V>) -> bool {
    match value {
        Some(v) => {
            if map.get(name) == Some(&v) {
                return false;
            }
            map.insert(name.to_string(), v);
            true
        }
        None => map.remove(name).is_some(),
    }
}

fn pool_facts(p: &IPPool) -> Option<PoolFacts> {
    Some(PoolFacts {
        cidr: net::parse_cidr(&p.spec.cidr)?,
        ipip: p.spec.ipip_mode.unwrap_or_default(),
        disable_bgp_export: p.spec.disable_bgp_export == Some(true),
    })
}

fn felix_prefix(c: &FelixConfiguration) -> Option<String> {
    c.spec
        .interface_prefix
        .as_deref()
        .and_then(|p| p.split(',').map(str::trim).find(|p| !p.is_empty()))
        .map(str::to_string)
}

/// A Secret's values: `data` (already base64-decoded by k8s-openapi) as UTF-8, overridden by
/// `stringData` (as the API server merges them on write).
fn secret_values(s: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = s
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect();
    out.extend(s.string_data.clone().unwrap_or_default());
    out
}

fn pod_finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}
