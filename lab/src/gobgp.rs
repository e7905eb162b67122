//! GoBGP as an external router (a top-of-rack router, `kind: gobgp`): its `gobgpd` TOML
//! configuration, rendered from the lab, the kernel routes the lab writes for it, and the
//! reading of its sessions and RIB through its gRPC API.
//!
//! The router has the same sessions as a BIRD one ([`crate::bird::sessions`]): eBGP with
//! every node on its segments and with every other external peer it shares a segment with,
//! one session per address family, each carrying its own family's unicast routes. Its
//! policy is BIRD's too, written the GoBGP way: GoBGP applies import and export policies to
//! its global RIB, not per neighbor, so each node gets a neighbor set and a prefix set per
//! family of its own pod blocks (and anything more specific), and the global import policy
//! accepts from a node only a route matching both, and rejects everything else from the
//! nodes; the global export policy gives the nodes nothing. From other routers it takes
//! everything, and to them it gives everything it holds: its best paths and its connected
//! subnets, which the lab originates with `gobgp global rib add` once the daemon answers.
//! See [`crate::bird`] for why a node may only announce its own blocks.
//!
//! GoBGP does not write the kernel's FIB itself: it does that only through zebra (FRR),
//! which is not part of the lab. So the lab writes, when it builds the router, the routes
//! the router would install if it could: `proto static` routes for every node block and
//! every segment it is not on, via the node that owns the block, or via the first external
//! peer on the way to the segment ([`static_routes`]). They do not follow BGP: a session
//! that goes down does not take its routes along. What keeps them honest is the status
//! probe: the router is converged only when GoBGP's RIB holds every prefix the lab routed
//! statically ([`crate::probe`]).

use crate::bird::{sessions, HOLD_TIME};
use crate::net::Net;
use crate::sys::command_in;
use crate::topology::{Host, Lab, Role};
use serde_json::Value;
use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Command;

/// The TCP port of gobgpd's gRPC API, on 127.0.0.1 inside the router's netns (each netns
/// has a loopback of its own, so every router uses the same port).
pub const API_PORT: u16 = 50051;

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

/// A kernel route the lab writes on a GoBGP router: `prefix via gateway dev dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    /// The destination.
    pub prefix: Net,
    /// The next hop, on the subnet of `dev`.
    pub gateway: IpAddr,
    /// The router's interface towards it.
    pub dev: String,
}

fn set_name(kind: &str, name: &str, family: &str) -> String {
    format!("{kind}-{name}-{family}")
}

/// `gobgp <args>` run inside netns `ns`, talking to the gobgpd there on its API port.
pub fn cli(ns: &str, args: &[&str]) -> Command {
    let mut c = command_in(ns, "gobgp");
    c.args(["-u", "127.0.0.1", "-p", &API_PORT.to_string()])
        .args(args);
    c
}

/// The gobgpd TOML config of `router` (an external peer of kind GoBGP).
pub fn config(lab: &Lab, router: &Host) -> String {
    let asn = match router.role {
        Role::Peer { as_number, .. } => as_number,
        _ => 0,
    };
    let router_id = router
        .ifaces
        .iter()
        .find_map(|i| i.v4)
        .map_or_else(|| "10.255.255.254".to_string(), |a| a.to_string());
    let sessions = sessions(lab, router);
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Written by `tabby lab up` for {} (AS {asn}).",
        router.name
    );
    let _ = writeln!(
        c,
        "[global.config]\n  as = {asn}\n  router-id = \"{router_id}\"\n  port = 179"
    );
    c.push_str(
        "[global.apply-policy.config]\n  import-policy-list = [\"from-nodes\"]\n  \
         default-import-policy = \"accept-route\"\n  export-policy-list = [\"to-nodes\"]\n  \
         default-export-policy = \"accept-route\"\n",
    );

    // Per node: a neighbor set of its addresses and a prefix set per family of its blocks.
    let nodes: Vec<(&str, Vec<IpAddr>)> = lab
        .nodes()
        .map(|n| {
            let own: Vec<IpAddr> = n
                .ifaces
                .iter()
                .flat_map(|i| [i.v4.map(IpAddr::V4), i.v6.map(IpAddr::V6)])
                .flatten()
                .collect();
            let addrs = sessions
                .iter()
                .filter(|s| !s.router && own.contains(&s.neighbor))
                .map(|s| s.neighbor)
                .collect();
            (n.name.as_str(), addrs)
        })
        .filter(|(_, addrs): &(&str, Vec<IpAddr>)| !addrs.is_empty())
        .collect();
    let node_addrs: Vec<IpAddr> = nodes.iter().flat_map(|(_, a)| a.clone()).collect();
    let quoted = |addrs: &[IpAddr]| {
        addrs
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut statements = String::new();
    for (name, addrs) in &nodes {
        let _ = writeln!(
            c,
            "[[defined-sets.neighbor-sets]]\n  neighbor-set-name = \"{}\"\n  \
             neighbor-info-list = [{}]",
            set_name("node", name, "all"),
            quoted(addrs)
        );
        for s in sessions
            .iter()
            .filter(|s| !s.router && addrs.contains(&s.neighbor) && !s.blocks.is_empty())
        {
            let family = if s.neighbor.is_ipv6() { "v6" } else { "v4" };
            let max = if s.neighbor.is_ipv6() { 128 } else { 32 };
            let set = set_name("blocks", name, family);
            let _ = writeln!(
                c,
                "[[defined-sets.prefix-sets]]\n  prefix-set-name = \"{set}\""
            );
            for b in &s.blocks {
                let _ = writeln!(
                    c,
                    "  [[defined-sets.prefix-sets.prefix-list]]\n    ip-prefix = \"{b}\"\n    \
                     masklength-range = \"{}..{max}\"",
                    b.prefix_len()
                );
            }
            let _ = writeln!(
                statements,
                "  [[policy-definitions.statements]]\n    name = \"{}\"\n    \
                 [policy-definitions.statements.conditions.match-prefix-set]\n      \
                 prefix-set = \"{set}\"\n      match-set-options = \"any\"\n    \
                 [policy-definitions.statements.conditions.match-neighbor-set]\n      \
                 neighbor-set = \"{}\"\n      match-set-options = \"any\"\n    \
                 [policy-definitions.statements.actions]\n      \
                 route-disposition = \"accept-route\"",
                set_name("own-blocks", name, family),
                set_name("node", name, "all")
            );
        }
    }
    if !node_addrs.is_empty() {
        let _ = writeln!(
            c,
            "[[defined-sets.neighbor-sets]]\n  neighbor-set-name = \"nodes\"\n  \
             neighbor-info-list = [{}]",
            quoted(&node_addrs)
        );
        let reject_nodes =
            "    [policy-definitions.statements.conditions.match-neighbor-set]\n      \
             neighbor-set = \"nodes\"\n      match-set-options = \"any\"\n    \
             [policy-definitions.statements.actions]\n      route-disposition = \"reject-route\"\n";
        // Import: a node's own blocks, then nothing else from any node.
        let _ = writeln!(
            c,
            "[[policy-definitions]]\n  name = \"from-nodes\"\n{statements}  \
             [[policy-definitions.statements]]\n    name = \"nothing-else-from-nodes\"\n{reject_nodes}"
        );
        // Export: nothing to the nodes (they use their default route).
        let _ = writeln!(
            c,
            "[[policy-definitions]]\n  name = \"to-nodes\"\n  \
             [[policy-definitions.statements]]\n    name = \"nothing-to-nodes\"\n{reject_nodes}"
        );
    } else {
        // The policy names the global config lists must exist, even without nodes.
        c.push_str(
            "[[policy-definitions]]\n  name = \"from-nodes\"\n\
             [[policy-definitions]]\n  name = \"to-nodes\"\n",
        );
    }

    let keepalive = (HOLD_TIME / 3).max(1);
    for s in &sessions {
        let family = if s.neighbor.is_ipv6() {
            "ipv6-unicast"
        } else {
            "ipv4-unicast"
        };
        let _ = writeln!(
            c,
            "# {}\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    \
             peer-as = {}\n  [neighbors.transport.config]\n    local-address = \"{}\"\n  \
             [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = {HOLD_TIME}\n    \
             keepalive-interval = {keepalive}\n    idle-hold-time-after-reset = 1\n  \
             [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      \
             afi-safi-name = \"{family}\"",
            s.protocol, s.neighbor, s.neighbor_as, s.local
        );
    }
    c
}

/// The prefixes the router originates: the subnets of its segments (BIRD's `protocol
/// direct`), announced to the other routers so every rack is reachable.
pub fn originated(lab: &Lab, router: &Host) -> Vec<Net> {
    router
        .ifaces
        .iter()
        .filter_map(|i| lab.segments.get(i.segment))
        .flat_map(|s| [s.v4, s.v6])
        .flatten()
        .collect()
}

/// The kernel routes the lab writes on `router`, standing in for the FIB GoBGP cannot
/// program: the blocks of each node on its segments via that node, and the subnets of
/// the segments it is not on, with the blocks of their nodes, via the first external peer
/// on a shortest path of routers (breadth first over shared segments) to the segment.
pub fn static_routes(lab: &Lab, router: &Host) -> Vec<StaticRoute> {
    let mut out = Vec::new();
    let mine: BTreeSet<usize> = router.ifaces.iter().map(|i| i.segment).collect();
    let node_blocks = |seg: usize| {
        lab.hosts.iter().filter_map(move |h| match &h.role {
            Role::Node { blocks, .. } if h.ifaces.iter().any(|i| i.segment == seg) => {
                Some((h, blocks))
            }
            _ => None,
        })
    };
    // Directly connected nodes: their blocks via themselves.
    for iface in &router.ifaces {
        for (node, blocks) in node_blocks(iface.segment) {
            let Some(o) = node.ifaces.iter().find(|o| o.segment == iface.segment) else {
                continue;
            };
            for b in blocks {
                let gateway = if b.is_ipv6() {
                    o.v6.map(IpAddr::V6)
                } else {
                    o.v4.map(IpAddr::V4)
                };
                let local = if b.is_ipv6() {
                    iface.v6.is_some()
                } else {
                    iface.v4.is_some()
                };
                if let (Some(gateway), true) = (gateway, local) {
                    out.push(StaticRoute {
                        prefix: *b,
                        gateway,
                        dev: iface.name.clone(),
                    });
                }
            }
        }
    }
    // Other segments: breadth first over the routers, remembering the first hop.
    struct Hop<'a> {
        router: &'a Host,
        // The first router on the way, and the shared segment with us.
        first: &'a Host,
        via_segment: usize,
    }
    let mut seen: BTreeSet<&str> = BTreeSet::from([router.name.as_str()]);
    let mut queue: VecDeque<Hop> = VecDeque::new();
    for iface in &router.ifaces {
        for p in lab.hosts.iter().filter(|h| h.is_peer()) {
            if p.ifaces.iter().any(|o| o.segment == iface.segment) && seen.insert(&p.name) {
                queue.push_back(Hop {
                    router: p,
                    first: p,
                    via_segment: iface.segment,
                });
            }
        }
    }
    let mut reached = mine.clone();
    while let Some(hop) = queue.pop_front() {
        let Some(local) = router.ifaces.iter().find(|i| i.segment == hop.via_segment) else {
            continue;
        };
        let Some(next) = hop
            .first
            .ifaces
            .iter()
            .find(|i| i.segment == hop.via_segment)
        else {
            continue;
        };
        for seg in hop.router.ifaces.iter().map(|i| i.segment) {
            if !reached.insert(seg) {
                continue;
            }
            let subnets = lab
                .segments
                .get(seg)
                .map(|s| [s.v4, s.v6])
                .unwrap_or_default();
            let blocks = node_blocks(seg).flat_map(|(_, b)| b.iter().copied());
            for prefix in subnets.into_iter().flatten().chain(blocks) {
                let gateway = if prefix.is_ipv6() {
                    next.v6.filter(|_| local.v6.is_some()).map(IpAddr::V6)
                } else {
                    next.v4.filter(|_| local.v4.is_some()).map(IpAddr::V4)
                };
                if let Some(gateway) = gateway {
                    out.push(StaticRoute {
                        prefix,
                        gateway,
                        dev: local.name.clone(),
                    });
                }
            }
            for p in lab.hosts.iter().filter(|h| h.is_peer()) {
                if p.ifaces.iter().any(|o| o.segment == seg) && seen.insert(&p.name) {
                    queue.push_back(Hop {
                        router: p,
                        first: hop.first,
                        via_segment: hop.via_segment,
                    });
                }
            }
        }
    }
    out
}

/// The session states in `gobgp neighbor -j` output, by neighbor address, in RFC 4271
/// names.
pub fn neighbor_states(json: &str) -> Result<Vec<(IpAddr, String)>, String> {
    let doc: Value =
        serde_json::from_str(json).map_err(|e| format!("gobgp neighbor -j is not JSON: {e}"))?;
    if let Some(e) = doc.get("error") {
        return Err(format!("gobgp: {}", e.as_str().unwrap_or("error")));
    }
    Ok(doc
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            let addr = n["state"]["neighbor_address"]
                .as_str()
                .or_else(|| n["conf"]["neighbor_address"].as_str())?
                .parse()
                .ok()?;
            let state = n["state"]["session_state"]
                .as_u64()
                .and_then(|s| STATES.get(usize::try_from(s).ok()?))
                .copied()
                .unwrap_or("Idle");
            Some((addr, state.to_string()))
        })
        .collect())
}

/// The prefixes in `gobgp global rib -a <family> -j` output (an object keyed by prefix;
/// empty output is an empty RIB).
pub fn rib_prefixes(json: &str) -> Result<Vec<Net>, String> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc: Value =
        serde_json::from_str(json).map_err(|e| format!("gobgp global rib -j is not JSON: {e}"))?;
    if let Some(e) = doc.get("error") {
        return Err(format!("gobgp: {}", e.as_str().unwrap_or("error")));
    }
    Ok(doc
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .filter_map(|k| k.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::topology::Topology;
    use std::path::Path;

    /// The default topology with tor1 run by GoBGP.
    fn lab() -> Lab {
        let text = crate::topology::DEFAULT_TOPOLOGY
            .replace("{name: tor1, kind: bird,", "{name: tor1, kind: gobgp,");
        Topology::parse(&text, "t")
            .unwrap()
            .resolve("t", "t", Path::new("/"))
            .unwrap()
    }

    #[test]
    fn a_gobgp_router_peers_with_its_nodes_and_the_other_router_per_family() {
        let lab = lab();
        let conf = config(&lab, lab.host("tor1").unwrap());
        assert!(
            conf.contains("as = 65001\n  router-id = \"10.0.1.254\""),
            "{conf}"
        );
        for (addr, asn, family) in [
            ("10.0.1.11", 64512, "ipv4-unicast"),
            ("fd00:1::12", 64512, "ipv6-unicast"),
            ("10.0.0.253", 65002, "ipv4-unicast"),
            ("fd00::fd", 65002, "ipv6-unicast"),
        ] {
            let at = conf
                .find(&format!(
                    "neighbor-address = \"{addr}\"\n    peer-as = {asn}"
                ))
                .unwrap_or_else(|| panic!("no neighbor {addr}: {conf}"));
            let rest = &conf[at..];
            let end = rest[1..]
                .find("[[neighbors]]")
                .map_or(rest.len(), |e| e + 1);
            assert!(rest[..end].contains(family), "{addr}: {}", &rest[..end]);
        }
        assert_eq!(conf.matches("[[neighbors]]").count(), 6, "{conf}");
    }

    #[test]
    fn a_gobgp_router_takes_only_its_own_blocks_from_each_node() {
        let lab = lab();
        let conf = config(&lab, lab.host("tor1").unwrap());
        assert!(
            conf.contains(
                "prefix-set-name = \"blocks-node1-v4\"\n  [[defined-sets.prefix-sets.prefix-list]]\n    \
                 ip-prefix = \"10.244.1.0/24\"\n    masklength-range = \"24..32\""
            ),
            "{conf}"
        );
        assert!(
            conf.contains("ip-prefix = \"fd10:0:0:2::/64\"\n    masklength-range = \"64..128\""),
            "{conf}"
        );
        assert!(
            conf.contains("neighbor-set-name = \"node-node2-all\"\n  neighbor-info-list = [\"10.0.1.12\", \"fd00:1::12\"]"),
            "{conf}"
        );
        // A node's own blocks are accepted before everything else from the nodes is refused.
        let accept = conf.find("name = \"own-blocks-node1-v4\"").unwrap();
        let reject = conf.find("name = \"nothing-else-from-nodes\"").unwrap();
        assert!(accept < reject, "{conf}");
        assert!(conf.contains("name = \"nothing-to-nodes\""), "{conf}");
    }

    #[test]
    fn the_lab_routes_a_gobgp_routers_nodes_directly_and_other_racks_via_the_other_router() {
        let lab = lab();
        let routes: Vec<String> = static_routes(&lab, lab.host("tor1").unwrap())
            .iter()
            .map(|r| format!("{} via {} dev {}", r.prefix, r.gateway, r.dev))
            .collect();
        for want in [
            "10.244.1.0/24 via 10.0.1.11 dev eth0",
            "fd10:0:0:2::/64 via fd00:1::12 dev eth0",
            "10.0.2.0/24 via 10.0.0.253 dev eth1",
            "10.244.3.0/24 via 10.0.0.253 dev eth1",
            "fd10:0:0:4::/64 via fd00::fd dev eth1",
        ] {
            assert!(routes.iter().any(|r| r == want), "{want}: {routes:#?}");
        }
        // Two own nodes and two of the other rack, two families each, and rack2's subnets.
        assert_eq!(routes.len(), 10, "{routes:#?}");
    }

    #[test]
    fn gobgp_neighbor_json_gives_rfc_state_names() {
        let json = r#"[{"conf":{"neighbor_address":"10.0.1.11"},"state":{"neighbor_address":"10.0.1.11","session_state":6}},
                       {"conf":{"neighbor_address":"fd00::fd"},"state":{"session_state":3}}]"#;
        assert_eq!(
            neighbor_states(json).unwrap(),
            [
                ("10.0.1.11".parse().unwrap(), "Established".to_string()),
                ("fd00::fd".parse().unwrap(), "Active".to_string())
            ]
        );
        assert!(neighbor_states(r#"{"error":"context deadline exceeded"}"#).is_err());
    }

    #[test]
    fn gobgp_rib_json_gives_its_prefixes() {
        let json = r#"{"fd00:1::/64":[{"nlri":{"prefix":"fd00:1::/64"}}],"10.244.1.0/24":[]}"#;
        let got: Vec<String> = rib_prefixes(json)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(got.contains(&"fd00:1::/64".to_string()), "{got:?}");
        assert!(got.contains(&"10.244.1.0/24".to_string()), "{got:?}");
        assert!(rib_prefixes("").unwrap().is_empty());
    }
}
