//! The node's BGP configuration: listen port, the node-to-node mesh, BGPPeers, reflector roles.
//!
//! The rules are those of Calico's confd (`confd/pkg/backends/calico/client.go`,
//! `updatePeersV1`, and the `bird.cfg`/`bird6.cfg` templates):
//!
//! 1. **Sessions per family.** IPv4 sessions go to IPv4 addresses and need an IPv4 BGP address
//!    on this node; IPv6 likewise (confd writes no IPv4 peers when the node has no IPv4
//!    address, "IPv4 disabled on this node"). A peer is never this node's own address.
//! 2. **Mesh.** With `nodeToNodeMeshEnabled` (default true), every other Node with an address
//!    of the family, at its listen port, with its AS. Except: a node that is a route reflector
//!    (has a cluster ID) takes part in no mesh at all, and nodes that are route reflectors are
//!    skipped by everyone's mesh ("Skipping ... as it is a route reflector").
//! 3. **BGPPeers**, in three passes, the first source of a peer address winning:
//!    global BGPPeers (neither `node` nor `nodeSelector`), then those for this node (`node`
//!    or a matching `nodeSelector`), then *reverse* peerings: a BGPPeer whose remote side
//!    selects this node (`peerSelector` matching its labels, or `peerIP` equal to one of its
//!    addresses with `asNumber` equal to its AS and, if a port is given, its listen port)
//!    makes this node peer back with the nodes it applies to. That is how a route reflector
//!    node learns its clients from `nodeSelector: all()`, `peerSelector: rr == 'true'`.
//!    Within a pass, BGPPeers go by name (confd iterates a Go map; tabby is deterministic).
//!    `peerSelector` peers are each selected Node at each of its addresses, with its AS and
//!    listen port; `peerIP` peers use `asNumber` (else the default AS), the port given, else
//!    the listen port of the tabby node at that address, else 179.
//! 4. **Precedence:** explicit BGPPeers over the mesh: the mesh only adds addresses no BGPPeer
//!    named.
//! 5. **Kinds** (shared/DESIGN.md §5): `mesh` for mesh sessions; otherwise `rr-client` when
//!    this node is a reflector, the peer has our AS and is not a reflector of our cluster
//!    (confd's `rr client; rr cluster id` condition); `reflector` when the peer has our AS
//!    and is a reflector of another cluster than ours while we are none; else `peer`.
//!    A peer's cluster ID is that of its Node. For `peerIP` peers confd knows none; tabby
//!    looks up the Node with that address, so two reflectors of one cluster peered by IP are
//!    plain iBGP peers rather than clients of each other (a deliberate difference).
//! 6. **Per-peer settings.** `password` from the Secret key (a missing Secret or key leaves the
//!    session without a password, as confd does, and the peer's `password_missing` says so);
//!    `maxRestartTime`, `keepaliveTime`. `keepOriginalNextHop`/`nextHopMode` describe this
//!    node's side of a forward peering only, not reverse ones. The mesh uses
//!    `nodeMeshPassword` and `nodeMeshMaxRestartTime`.

use super::{Applies, Calc, NodeFacts, PeerSpec, Remote, DEFAULT_BGP_PORT};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tabby_datastore::AsNumber;

/// What a session is for (the `kind` of `/status`, shared/DESIGN.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerKind {
    /// Node-to-node mesh.
    Mesh,
    /// A configured peer (eBGP, or iBGP without reflection).
    Peer,
    /// We are a route reflector and the peer is our client.
    RrClient,
    /// The peer is a route reflector and we are its client.
    Reflector,
}

impl PeerKind {
    /// The name `/status` uses: `mesh`, `peer`, `rr-client`, `reflector`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::Mesh => "mesh",
            PeerKind::Peer => "peer",
            PeerKind::RrClient => "rr-client",
            PeerKind::Reflector => "reflector",
        }
    }
}

/// Which resource made a peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerSource {
    /// The node-to-node mesh.
    Mesh,
    /// This BGPPeer, applied to this node.
    BgpPeer(String),
    /// This BGPPeer selects this node as its remote side; this is the reverse peering.
    ReverseBgpPeer(String),
}

/// What to do with the next hop of routes sent to a peer (`BGPPeer.spec.nextHopMode`, or
/// `keepOriginalNextHop: true` = `Keep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum NextHopMode {
    /// BGP's default: unchanged to iBGP peers, ourselves to eBGP peers.
    #[default]
    Auto,
    /// Always ourselves (`Self`).
    SetSelf,
    /// Always unchanged (`Keep`).
    Keep,
}

/// One BGP session this node should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's address.
    pub ip: IpAddr,
    /// The peer's BGP port.
    pub port: u16,
    /// The peer's AS.
    pub asn: AsNumber,
    /// What the session is for.
    pub kind: PeerKind,
    /// The resource it comes from.
    pub source: PeerSource,
    /// The tabby Node at that address, when the peer is one.
    pub node: Option<String>,
    /// The peer's route reflector cluster ID, when it is a reflector.
    pub peer_cluster_id: Option<Ipv4Addr>,
    /// TCP-MD5 password.
    pub password: Option<String>,
    /// A password is configured but its Secret or key does not exist (yet).
    pub password_missing: bool,
    /// Next hop handling towards this peer.
    pub next_hop: NextHopMode,
    /// Graceful restart time.
    pub max_restart_time: Option<Duration>,
    /// Keepalive time.
    pub keepalive_time: Option<Duration>,
}

/// The BGP configuration of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    /// Port this node listens on: `BGPConfiguration node.<node>`, else `default`
    /// `listenPort`, else 179.
    pub listen_port: u16,
    /// `nodeToNodeMeshEnabled` of `BGPConfiguration default` (default true). A route
    /// reflector node has no mesh sessions even when this is true.
    pub mesh_enabled: bool,
    /// The sessions, by peer address.
    pub peers: BTreeMap<IpAddr, Peer>,
}

/// A peer before its kind is known.
struct Candidate {
    ip: IpAddr,
    port: u16,
    asn: AsNumber,
    source: PeerSource,
    node: Option<String>,
    cluster: Option<Ipv4Addr>,
    password: Option<Option<String>>,
    next_hop: NextHopMode,
    max_restart_time: Option<Duration>,
    keepalive_time: Option<Duration>,
}

impl Calc {
    pub(super) fn compute_bgp(&self) -> BgpConfig {
        let default = self.default_bgp();
        let mesh_enabled = default.and_then(|c| c.mesh_enabled).unwrap_or(true);
        let empty = NodeFacts::default();
        let me = self.nodes.get(&self.node_name).unwrap_or(&empty);
        let my_as = self.as_of(me);
        let mut out: BTreeMap<IpAddr, Candidate> = BTreeMap::new();
        let mut offer = |c: Candidate| {
            let ours = me.address(c.ip.is_ipv6());
            // No session of a family we have no address in, nor to ourselves.
            if ours.is_some() && ours != Some(c.ip) {
                out.entry(c.ip).or_insert(c);
            }
        };

        // Global BGPPeers first, then those for this node (confd's two passes).
        let global = |p: &PeerSpec| p.applies == Applies::All;
        let global_first = self.bgp_peers.iter().filter(|(_, p)| global(p)).chain(
            self.bgp_peers
                .iter()
                .filter(|(_, p)| !global(p) && self.applies_to_me(p, me)),
        );
        for (name, spec) in global_first {
            for c in self.forward_peers(name, spec) {
                offer(c);
            }
        }
        for (name, spec) in &self.bgp_peers {
            for c in self.reverse_peers(name, spec, me, my_as) {
                offer(c);
            }
        }
        if mesh_enabled && me.rr_cluster_id.is_none() {
            let password = default
                .and_then(|c| c.mesh_password.as_ref())
                .map(|r| self.secret(r));
            let restart = default.and_then(|c| c.mesh_restart_time);
            for (name, other) in &self.nodes {
                if *name == self.node_name || other.rr_cluster_id.is_some() {
                    continue;
                }
                for ipv6 in [false, true] {
                    if let Some(ip) = other.address(ipv6) {
                        offer(Candidate {
                            ip,
                            port: self.listen_port_of(name),
                            asn: self.as_of(other),
                            source: PeerSource::Mesh,
                            node: Some(name.clone()),
                            cluster: None,
                            password: password.clone(),
                            next_hop: NextHopMode::Auto,
                            max_restart_time: restart,
                            keepalive_time: None,
                        });
                    }
                }
            }
        }

        let peers = out
            .into_iter()
            .map(|(ip, c)| {
                let kind = if c.source == PeerSource::Mesh {
                    PeerKind::Mesh
                } else if c.asn != my_as {
                    PeerKind::Peer
                } else if me.rr_cluster_id.is_some() && c.cluster != me.rr_cluster_id {
                    PeerKind::RrClient
                } else if me.rr_cluster_id.is_none() && c.cluster.is_some() {
                    PeerKind::Reflector
                } else {
                    PeerKind::Peer
                };
                let peer = Peer {
                    ip,
                    port: c.port,
                    asn: c.asn,
                    kind,
                    source: c.source,
                    node: c.node,
                    peer_cluster_id: c.cluster,
                    password_missing: matches!(c.password, Some(None)),
                    password: c.password.flatten(),
                    next_hop: c.next_hop,
                    max_restart_time: c.max_restart_time,
                    keepalive_time: c.keepalive_time,
                };
                (ip, peer)
            })
            .collect();
        BgpConfig {
            listen_port: self.listen_port_of(&self.node_name),
            mesh_enabled,
            peers,
        }
    }

    fn applies_to_me(&self, spec: &PeerSpec, me: &NodeFacts) -> bool {
        match &spec.applies {
            Applies::All => true,
            Applies::Node(n) => *n == self.node_name,
            Applies::Selector(s) => s.matches(&me.labels),
        }
    }

    /// The tabby nodes (name, facts) at `ip`.
    fn nodes_at(&self, ip: IpAddr) -> impl Iterator<Item = (&String, &NodeFacts)> {
        self.nodes
            .iter()
            .filter(move |(_, f)| f.address(ip.is_ipv6()) == Some(ip))
    }

    fn default_as(&self) -> AsNumber {
        self.default_bgp()
            .and_then(|c| c.asn)
            .unwrap_or(tabby_datastore::facts::DEFAULT_AS)
    }

    /// A candidate with the settings of BGPPeer `name` that hold on both sides.
    fn candidate(&self, name: &str, spec: &PeerSpec, ip: IpAddr, reverse: bool) -> Candidate {
        let next_hop = match spec.next_hop_mode.as_deref() {
            _ if reverse => NextHopMode::Auto,
            Some("Self") => NextHopMode::SetSelf,
            Some("Keep") => NextHopMode::Keep,
            _ if spec.keep_original_next_hop => NextHopMode::Keep,
            _ => NextHopMode::Auto,
        };
        Candidate {
            ip,
            port: DEFAULT_BGP_PORT,
            asn: self.default_as(),
            source: if reverse {
                PeerSource::ReverseBgpPeer(name.to_string())
            } else {
                PeerSource::BgpPeer(name.to_string())
            },
            node: None,
            cluster: None,
            password: spec.password.as_ref().map(|r| self.secret(r)),
            next_hop,
            max_restart_time: spec.max_restart_time,
            keepalive_time: spec.keepalive_time,
        }
    }

    /// A candidate for tabby node `name` at `ip`.
    fn node_candidate(
        &self,
        peer: &str,
        spec: &PeerSpec,
        name: &str,
        facts: &NodeFacts,
        ip: IpAddr,
        reverse: bool,
    ) -> Candidate {
        Candidate {
            port: self.listen_port_of(name),
            asn: self.as_of(facts),
            node: Some(name.to_string()),
            cluster: facts.rr_cluster_id,
            ..self.candidate(peer, spec, ip, reverse)
        }
    }

    /// The peers BGPPeer `name` gives a node it applies to.
    fn forward_peers(&self, name: &str, spec: &PeerSpec) -> Vec<Candidate> {
        match &spec.remote {
            Remote::Nodes(sel) => self
                .nodes
                .iter()
                .filter(|(_, f)| sel.matches(&f.labels))
                .flat_map(|(n, f)| {
                    [false, true].into_iter().filter_map(move |v6| {
                        let ip = f.address(v6)?;
                        Some(self.node_candidate(name, spec, n, f, ip, false))
                    })
                })
                .collect(),
            Remote::Ip { ip, port, asn } => {
                let asn = asn.unwrap_or_else(|| self.default_as());
                // The tabby node at that address with that AS, if any (confd's
                // nodesWithIPPortAndAS), gives the port and the cluster ID.
                let node = self
                    .nodes_at(*ip)
                    .find(|(_, f)| self.as_of(f) == asn)
                    .map(|(n, f)| (n.clone(), f.rr_cluster_id));
                let port = port
                    .or_else(|| node.as_ref().map(|(n, _)| self.listen_port_of(n)))
                    .unwrap_or(DEFAULT_BGP_PORT);
                vec![Candidate {
                    port,
                    asn,
                    cluster: node.as_ref().and_then(|(_, c)| *c),
                    node: node.map(|(n, _)| n),
                    ..self.candidate(name, spec, *ip, false)
                }]
            }
        }
    }

    /// The reverse peerings of BGPPeer `name` when its remote side is this node.
    fn reverse_peers(
        &self,
        name: &str,
        spec: &PeerSpec,
        me: &NodeFacts,
        my_as: AsNumber,
    ) -> Vec<Candidate> {
        let families: &[bool] = match &spec.remote {
            Remote::Nodes(sel) if self.nodes.contains_key(&self.node_name) => {
                if !sel.matches(&me.labels) {
                    return Vec::new();
                }
                &[false, true]
            }
            Remote::Nodes(_) => return Vec::new(),
            Remote::Ip { ip, port, asn } => {
                let selects_me = me.address(ip.is_ipv6()) == Some(*ip)
                    && asn.unwrap_or_else(|| self.default_as()) == my_as
                    && port.is_none_or(|p| p == self.listen_port_of(&self.node_name));
                if !selects_me {
                    return Vec::new();
                }
                if ip.is_ipv6() {
                    &[true]
                } else {
                    &[false]
                }
            }
        };
        self.nodes
            .iter()
            .filter(|(n, f)| match &spec.applies {
                Applies::All => true,
                Applies::Node(node) => node == *n,
                Applies::Selector(s) => s.matches(&f.labels),
            })
            .flat_map(|(n, f)| {
                families.iter().filter_map(move |&v6| {
                    let ip = f.address(v6)?;
                    Some(self.node_candidate(name, spec, n, f, ip, true))
                })
            })
            .collect()
    }
}
