//! BIRD 2 as an external router (a top-of-rack router): its configuration, rendered from the
//! lab, and the reading of its sessions from `birdc show protocols`.
//!
//! The router peers over eBGP with every node on its segments (taking from each node the
//! routes of its own pod blocks, giving none: the nodes reach the world through their default
//! route) and with every other external peer it shares a segment with (giving it everything
//! it learned over BGP plus its connected subnets, so that routers know every rack). It
//! installs what it learns in its kernel, so it forwards between racks.
//!
//! Why only a node's own blocks: a node exports to its eBGP peers every route of an IP pool
//! it has, the ones learned from other nodes too (with itself as next hop), as Calico's BIRD
//! does (`calico_export_to_bgp_peers`). A block of the other rack would then reach the
//! router from its own nodes with a shorter AS path than from the other router, and the
//! router would send that traffic back to the nodes, which send it to the router: a loop.
//! A per-peer prefix list is what a fabric's operator writes for the same reason.

use crate::net::Net;
use crate::topology::{Host, Lab, PeerKind, Role};
use std::fmt::Write as _;
use std::net::IpAddr;

/// Hold time of every lab session, in seconds: short, so a dead peer is noticed in a lab's
/// time scale; the nodes are started with the same.
pub const HOLD_TIME: u16 = 9;

fn proto_name(prefix: &str, name: &str, family: &str) -> String {
    format!("{prefix}_{}_{family}", name.replace('-', "_"))
}

/// One BGP session of a router: protocol name, local and remote address, remote AS, and
/// whether it exports (to other routers) or not (to nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// BIRD protocol name.
    pub protocol: String,
    /// Local address.
    pub local: IpAddr,
    /// Neighbor address.
    pub neighbor: IpAddr,
    /// Neighbor's AS.
    pub neighbor_as: u32,
    /// The neighbor is a router: export what was learned and the connected subnets.
    pub router: bool,
    /// For a node: the pod blocks of the session's family it may announce (its own).
    pub blocks: Vec<Net>,
}

/// The sessions `router` has in `lab`.
pub fn sessions(lab: &Lab, router: &Host) -> Vec<Session> {
    let mut out = Vec::new();
    for iface in &router.ifaces {
        for other in &lab.hosts {
            if other.name == router.name {
                continue;
            }
            let (neighbor_as, is_router) = match &other.role {
                Role::Node { as_number, .. } => (as_number.unwrap_or(lab.as_number), false),
                Role::Peer { as_number, .. } => (*as_number, true),
                Role::Reflector { .. } => continue,
            };
            for o in other.ifaces.iter().filter(|o| o.segment == iface.segment) {
                let seg = lab
                    .segments
                    .get(iface.segment)
                    .map_or("seg", |s| s.name.as_str());
                let prefix = if is_router { "r" } else { "n" };
                let name = if is_router {
                    format!("{}_{seg}", other.name)
                } else {
                    other.name.clone()
                };
                let pairs = [
                    (iface.v4.map(IpAddr::V4), o.v4.map(IpAddr::V4), "v4"),
                    (iface.v6.map(IpAddr::V6), o.v6.map(IpAddr::V6), "v6"),
                ];
                for (local, neighbor, family) in pairs {
                    if let (Some(local), Some(neighbor)) = (local, neighbor) {
                        let blocks = match &other.role {
                            Role::Node { blocks, .. } => blocks
                                .iter()
                                .filter(|b| b.is_ipv6() == neighbor.is_ipv6())
                                .copied()
                                .collect(),
                            _ => Vec::new(),
                        };
                        out.push(Session {
                            protocol: proto_name(prefix, &name, family),
                            local,
                            neighbor,
                            neighbor_as,
                            router: is_router,
                            blocks,
                        });
                    }
                }
            }
        }
    }
    out
}

/// The bird.conf of `router` (an external peer of kind BIRD).
pub fn config(lab: &Lab, router: &Host) -> String {
    let asn = match router.role {
        Role::Peer {
            as_number,
            daemon: PeerKind::Bird,
        } => as_number,
        _ => 0,
    };
    let router_id = router
        .ifaces
        .iter()
        .find_map(|i| i.v4)
        .map_or_else(|| "10.255.255.254".to_string(), |a| a.to_string());
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Written by `tabby lab up` for {} (AS {asn}).",
        router.name
    );
    let _ = writeln!(c, "router id {router_id};");
    c.push_str("log stderr all;\n");
    c.push_str("protocol device { scan time 1; }\n");
    // Connected subnets, given to the other routers so every rack is reachable.
    c.push_str("protocol direct { ipv4; ipv6; }\n");
    c.push_str("protocol kernel { ipv4 { export where source = RTS_BGP; }; merge paths on; }\n");
    c.push_str("protocol kernel { ipv6 { export where source = RTS_BGP; }; merge paths on; }\n");
    let keepalive = (HOLD_TIME / 3).max(1);
    for s in sessions(lab, router) {
        let channel = if s.neighbor.is_ipv6() { "ipv6" } else { "ipv4" };
        let (import, export) = if s.router {
            (
                "import all;".to_string(),
                "export where source ~ [ RTS_BGP, RTS_DEVICE ]; next hop self;",
            )
        } else if s.blocks.is_empty() {
            ("import none;".to_string(), "export none;")
        } else {
            // The node's own blocks, and anything more specific inside them.
            let list: Vec<String> = s.blocks.iter().map(|b| format!("{b}+")).collect();
            (
                format!("import where net ~ [ {} ];", list.join(", ")),
                "export none;",
            )
        };
        let _ = writeln!(
            c,
            "protocol bgp {} {{\n  local {} as {asn};\n  neighbor {} as {};\n  \
             hold time {HOLD_TIME}; keepalive time {keepalive};\n  \
             connect delay time 1; connect retry time 1; error wait time 1, 5;\n  \
             {channel} {{ {import} {export} }};\n}}",
            s.protocol, s.local, s.neighbor, s.neighbor_as
        );
    }
    c
}

/// The state of each BGP protocol in `birdc show protocols` output, by protocol name, in
/// RFC 4271 names where BIRD's differ (`Down`/`Close` are `Idle`; `Up` is `Established`).
pub fn protocol_states(show_protocols: &str) -> Vec<(String, String)> {
    show_protocols
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(1) != Some(&"BGP") {
                return None;
            }
            let name = f.first()?.to_string();
            // Name Proto Table State Since... Info: the Info column's first word is the BGP
            // state when the protocol is not up.
            let state = if f.get(3) == Some(&"up") {
                "Established".to_string()
            } else {
                match f.iter().skip(4).find(|w| {
                    [
                        "Idle",
                        "Connect",
                        "Active",
                        "OpenSent",
                        "OpenConfirm",
                        "Established",
                    ]
                    .contains(w)
                }) {
                    Some(s) => (*s).to_string(),
                    None => "Idle".to_string(),
                }
            };
            Some((name, state))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::topology::Topology;
    use std::path::Path;

    fn default_lab() -> Lab {
        Topology::default_topology()
            .resolve("t", "built-in", Path::new("/"))
            .unwrap()
    }

    #[test]
    fn a_top_of_rack_router_peers_with_its_nodes_and_the_other_router() {
        let lab = default_lab();
        let tor1 = lab.host("tor1").unwrap();
        let names: Vec<String> = sessions(&lab, tor1)
            .into_iter()
            .map(|s| s.protocol)
            .collect();
        assert_eq!(
            names,
            [
                "n_node1_v4",
                "n_node1_v6",
                "n_node2_v4",
                "n_node2_v6",
                "r_tor2_core_v4",
                "r_tor2_core_v6"
            ]
        );
        let conf = config(&lab, tor1);
        assert!(conf.contains("neighbor 10.0.1.11 as 64512;"), "{conf}");
        assert!(conf.contains("neighbor fd00::fd as 65002;"), "{conf}");
    }

    #[test]
    fn a_top_of_rack_router_takes_only_its_own_blocks_from_each_node() {
        let lab = default_lab();
        let conf = config(&lab, lab.host("tor1").unwrap());
        assert!(
            conf.contains("ipv4 { import where net ~ [ 10.244.1.0/24+ ]; export none; };"),
            "{conf}"
        );
        assert!(
            conf.contains("ipv6 { import where net ~ [ fd10:0:0:2::/64+ ]; export none; };"),
            "{conf}"
        );
        assert!(
            conf.contains("ipv4 { import all; export where source"),
            "{conf}"
        );
    }

    #[test]
    fn bird_protocol_lines_give_rfc_state_names() {
        let out = "BIRD 2.0.12 ready.\n\
Name       Proto      Table      State  Since         Info\n\
device1    Device     ---        up     10:00:00.000  \n\
n_node1_v4 BGP        ---        up     10:00:01.000  Established   \n\
n_node2_v4 BGP        ---        start  10:00:01.000  Active        Socket: Connection refused\n";
        assert_eq!(
            protocol_states(out),
            [
                ("n_node1_v4".to_string(), "Established".to_string()),
                ("n_node2_v4".to_string(), "Active".to_string())
            ]
        );
    }
}
