//! Topologies: nodes (namespaces) on one L2 segment, numbered from 10.0.0.1 and fd00::1.
//!
//! Every test has its own namespaces, so every test may use the same addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;

use crate::netns::Netns;

/// One node of a [`Lan`]: a namespace with `eth0` addressed `10.0.0.<n>/24` and
/// `fd00::<n>/64` (no DAD, so the address is usable at once).
#[derive(Debug)]
pub struct Node {
    /// The node's namespace.
    pub ns: Netns,
    /// The node's IPv4 address on the segment.
    pub v4: Ipv4Addr,
    /// The node's IPv6 address on the segment.
    pub v6: Ipv6Addr,
    /// The node's interface on the segment (`eth0`).
    pub ifname: String,
}

impl Node {
    /// The node's address of the same family as `ipv6` says.
    pub fn addr(&self, ipv6: bool) -> IpAddr {
        if ipv6 {
            IpAddr::V6(self.v6)
        } else {
            IpAddr::V4(self.v4)
        }
    }

    fn address(&self, ifname: &str) -> Result<()> {
        self.ns
            .ip(&["addr", "add", &format!("{}/24", self.v4), "dev", ifname])?;
        self.ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", self.v6),
            "dev",
            ifname,
            "nodad",
        ])?;
        self.ns.ip(&["link", "set", ifname, "up"])?;
        Ok(())
    }
}

/// Nodes on one L2 segment: two nodes are joined by a veth pair; more are joined by a bridge
/// in a namespace of its own (the switch). Dropping the `Lan` deletes all of it.
#[derive(Debug)]
pub struct Lan {
    /// The nodes; node `i` has addresses `10.0.0.<i+1>` and `fd00::<i+1>`.
    pub nodes: Vec<Node>,
    // Declared after the nodes so it is dropped after them.
    _switch: Option<Netns>,
}

impl Lan {
    /// `n` nodes named after `tag`.
    pub fn new(tag: &str, n: usize) -> Result<Lan> {
        let nodes = (0..n)
            .map(|i| {
                let host = u8::try_from(i + 1)?;
                Ok(Node {
                    ns: Netns::new(tag)?,
                    v4: Ipv4Addr::new(10, 0, 0, host),
                    v6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(host)),
                    ifname: "eth0".to_owned(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let switch = if n == 2 {
            let (a, b) = (&nodes[0], &nodes[1]);
            let (ia, ib) = (a.ns.next_ifname(), b.ns.next_ifname());
            debug_assert!(ia == a.ifname && ib == b.ifname);
            a.ns.ip(&[
                "link",
                "add",
                &ia,
                "type",
                "veth",
                "peer",
                "name",
                &ib,
                "netns",
                b.ns.name(),
            ])?;
            a.address(&ia)?;
            b.address(&ib)?;
            None
        } else {
            let sw = Netns::new(&format!("{tag}sw"))?;
            sw.ip(&["link", "add", "br0", "type", "bridge"])?;
            sw.ip(&["link", "set", "br0", "up"])?;
            for (i, node) in nodes.iter().enumerate() {
                let port = format!("p{i}");
                let ifname = node.ns.next_ifname();
                debug_assert!(ifname == node.ifname);
                sw.ip(&[
                    "link",
                    "add",
                    &port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &ifname,
                    "netns",
                    node.ns.name(),
                ])?;
                sw.ip(&["link", "set", &port, "master", "br0", "up"])?;
                node.address(&ifname)?;
            }
            Some(sw)
        };
        Ok(Lan {
            nodes,
            _switch: switch,
        })
    }

    /// Two nodes joined by a veth pair.
    pub fn pair(tag: &str) -> Result<Lan> {
        Lan::new(tag, 2)
    }
}
