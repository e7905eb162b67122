//! The rule IR: what the compiler produces and both renderers consume. An evaluator over it
//! ([`Ruleset::verdict`]) answers "what happens to this packet" from the same structure the
//! kernel runs, for tests and for `tabby policy explain`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

use sha1::{Digest, Sha1};

use crate::cidr::{Cidr, Family};
use crate::endpoint::EndpointKind;
use crate::model::{proto, Action, Direction, Failsafe, Icmp};

/// What an IP set holds, and so its name: equal definitions share one set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetDef {
    /// Addresses of the endpoints a selector (canonical text) matches.
    Selector {
        /// Canonical selector text.
        selector: String,
        /// Family.
        family: Family,
    },
    /// `(address, protocol, port)` of the named ports `names` (protocol `protocol`) of the
    /// endpoints a selector matches.
    NamedPort {
        /// Canonical selector text.
        selector: String,
        /// IP protocol.
        protocol: u8,
        /// Port names.
        names: Vec<String>,
        /// Family.
        family: Family,
    },
    /// Fixed networks, disjoint.
    Nets {
        /// The networks, one family.
        nets: Vec<Cidr>,
        /// Family.
        family: Family,
    },
}

impl SetDef {
    /// The family of its members.
    pub fn family(&self) -> Family {
        match self {
            SetDef::Selector { family, .. }
            | SetDef::NamedPort { family, .. }
            | SetDef::Nets { family, .. } => *family,
        }
    }

    /// The set's name: a kind letter, the family and a digest of the definition, short enough
    /// for an ipset name (31 characters) with the `tabby-` prefix.
    pub fn id(&self) -> SetId {
        let (kind, text) = match self {
            SetDef::Selector { selector, .. } => ('s', selector.clone()),
            SetDef::NamedPort {
                selector,
                protocol,
                names,
                ..
            } => ('p', format!("{selector}|{protocol}|{}", names.join(","))),
            SetDef::Nets { nets, .. } => {
                let mut t = String::new();
                for n in nets {
                    let _ = write!(t, "{n},");
                }
                ('n', t)
            }
        };
        SetId(format!(
            "{kind}{}-{}",
            self.family().number(),
            digest(&text)
        ))
    }
}

/// The first 12 hex digits of SHA-1: stable names for sets and chains.
pub(crate) fn digest(text: &str) -> String {
    let d = Sha1::digest(text.as_bytes());
    d.iter().take(6).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A set's name, e.g. `s4-0123456789ab`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetId(pub String);

impl std::fmt::Display for SetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A member of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Member {
    /// One address.
    Addr(IpAddr),
    /// A network.
    Net(Cidr),
    /// Address, protocol, port.
    AddrPort(IpAddr, u8, u16),
}

/// An address match against a set; `negate` for `notNets`/`notSelector`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrMatch {
    /// The set.
    pub set: SetId,
    /// Match when the address is not in it.
    pub negate: bool,
}

/// One side of an IR rule: every listed condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IrSide {
    /// Address conditions.
    pub addrs: Vec<AddrMatch>,
    /// The port is in one of these ranges (empty: any).
    pub ports: Vec<(u16, u16)>,
    /// The port is in none of these ranges.
    pub not_ports: Vec<(u16, u16)>,
    /// `(address, protocol, port)` is in this named-port set (or, negated, not in it).
    pub named: Vec<AddrMatch>,
}

/// One IR rule. Rules are family-specific when they match addresses or ICMP types.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IrRule {
    /// `None`: both families.
    pub family: Option<Family>,
    /// IP protocol.
    pub protocol: Option<u8>,
    /// Not this protocol.
    pub not_protocol: Option<u8>,
    /// ICMP type/code (ICMPv6 when the family is V6).
    pub icmp: Option<Icmp>,
    /// Not this ICMP type/code.
    pub not_icmp: Option<Icmp>,
    /// Source.
    pub src: IrSide,
    /// Destination.
    pub dst: IrSide,
    /// Action.
    pub action: Action,
}

/// The rules of one policy for one direction and endpoint kind: its own chain, shared by
/// every local endpoint the policy applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyChain {
    /// The policy's name.
    pub policy: String,
    /// Direction.
    pub direction: Direction,
    /// `Pass` leads to the profile of this kind (accept for workloads, drop for hosts).
    pub kind: EndpointKind,
    /// The rules, in order.
    pub rules: Vec<IrRule>,
}

/// A local endpoint and the policy chains it runs, in order, per direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// The endpoint's key (`ns/name` or `hep/name`).
    pub key: String,
    /// Workload or host.
    pub kind: EndpointKind,
    /// Ingress policy chains (empty: no policy applies: the profile decides).
    pub ingress: Vec<String>,
    /// Egress policy chains.
    pub egress: Vec<String>,
}

impl LocalEndpoint {
    /// The chains for a direction.
    pub fn chains(&self, dir: Direction) -> &[String] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// ICMPv6 types a workload may always send to its host, as Felix allows them before
/// `DefaultEndpointToHostAction`: MLD query, report and done (130-132), router solicitation
/// (133), neighbour solicitation and advertisement (135, 136). Without them a pod cannot
/// resolve its IPv6 gateway.
pub const ICMPV6_TO_HOST: [u8; 6] = [130, 131, 132, 133, 135, 136];

/// Node-wide settings both renderers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Workload interface prefix (`cali`): traffic from such an interface that no endpoint
    /// owns is dropped.
    pub interface_prefix: String,
    /// Host endpoint failsafe ports.
    pub failsafe: Failsafe,
    /// Whether workload-to-host traffic that egress policy allows is accepted (Felix's
    /// `DefaultEndpointToHostAction` `Accept`/`Return`) rather than dropped (`Drop`, Felix's
    /// default).
    pub endpoint_to_host_accept: bool,
}

impl Settings {
    /// The settings a FelixConfiguration asks for (`interfacePrefix`, the failsafe port
    /// lists, `defaultEndpointToHostAction`); unset fields take Felix's defaults. A prefix
    /// list such as `cali,tap` uses its first entry.
    pub fn from_felix_configuration(
        spec: &tabby_datastore::calico::FelixConfigurationSpec,
    ) -> Settings {
        let d = Settings::default();
        Settings {
            interface_prefix: spec
                .interface_prefix
                .as_deref()
                .and_then(|p| p.split(',').map(str::trim).find(|p| !p.is_empty()))
                .map_or(d.interface_prefix, str::to_owned),
            failsafe: Failsafe::from_felix_configuration(spec),
            endpoint_to_host_accept: matches!(
                spec.default_endpoint_to_host_action
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some("accept" | "return")
            ),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interface_prefix: "cali".into(),
            failsafe: Failsafe::default(),
            endpoint_to_host_accept: false,
        }
    }
}

/// Everything the dataplane should hold: the compiler's output, the renderers' input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// Node-wide settings.
    pub settings: Settings,
    /// The sets the chains use, with their members.
    pub sets: BTreeMap<SetId, (SetDef, BTreeSet<Member>)>,
    /// Policy chains by name.
    pub policy_chains: BTreeMap<String, PolicyChain>,
    /// Local endpoints by interface.
    pub endpoints: BTreeMap<String, LocalEndpoint>,
}

/// A packet, for [`Ruleset::verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol.
    pub protocol: u8,
    /// Source port (TCP, UDP, SCTP).
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
}

impl Packet {
    /// A TCP packet to `dst:port` (source port 40000).
    pub fn tcp(src: IpAddr, dst: IpAddr, port: u16) -> Packet {
        Packet::l4(proto::TCP, src, dst, port)
    }

    /// A UDP packet.
    pub fn udp(src: IpAddr, dst: IpAddr, port: u16) -> Packet {
        Packet::l4(proto::UDP, src, dst, port)
    }

    /// A packet of `protocol` to `dst:port`.
    pub fn l4(protocol: u8, src: IpAddr, dst: IpAddr, port: u16) -> Packet {
        Packet {
            src,
            dst,
            protocol,
            src_port: 40000,
            dst_port: port,
            icmp: None,
        }
    }

    /// An echo request.
    pub fn ping(src: IpAddr, dst: IpAddr) -> Packet {
        let (protocol, t) = match src {
            IpAddr::V4(_) => (proto::ICMP, 8),
            IpAddr::V6(_) => (proto::ICMPV6, 128),
        };
        Packet {
            src,
            dst,
            protocol,
            src_port: 0,
            dst_port: 0,
            icmp: Some((t, 0)),
        }
    }

    fn family(&self) -> Family {
        Family::of(&self.src)
    }
}

/// What the ruleset does with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted; by which policy (`None`: by the profile, no policy applied).
    Allow(Option<String>),
    /// Dropped; by which policy (`None`: end of tier, or no profile).
    Deny(Option<String>),
}

impl Verdict {
    /// Whether the packet passes.
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow(_))
    }
}

impl Ruleset {
    /// The verdict of the endpoint on `iface` for `pkt` in direction `dir`, or `None` when no
    /// local endpoint has that interface.
    pub fn verdict(&self, iface: &str, dir: Direction, pkt: &Packet) -> Option<Verdict> {
        let ep = self.endpoints.get(iface)?;
        let chains = ep.chains(dir);
        for name in chains {
            let Some(chain) = self.policy_chains.get(name) else {
                continue;
            };
            for rule in &chain.rules {
                if !self.rule_matches(rule, pkt) {
                    continue;
                }
                let who = Some(chain.policy.clone());
                match rule.action {
                    Action::Allow => return Some(Verdict::Allow(who)),
                    Action::Deny => return Some(Verdict::Deny(who)),
                    Action::Pass => {
                        return Some(match ep.kind {
                            EndpointKind::Workload => Verdict::Allow(None),
                            EndpointKind::Host => Verdict::Deny(None),
                        })
                    }
                    Action::Log => {}
                }
            }
        }
        Some(match (chains.is_empty(), ep.kind) {
            (true, EndpointKind::Workload) => Verdict::Allow(None),
            _ => Verdict::Deny(None),
        })
    }

    fn in_set(&self, m: &AddrMatch, member: impl Fn(&Member) -> bool) -> bool {
        let found = self
            .sets
            .get(&m.set)
            .is_some_and(|(_, members)| members.iter().any(member));
        found != m.negate
    }

    fn side_matches(&self, side: &IrSide, addr: IpAddr, port: u16, pkt: &Packet) -> bool {
        let has_ports = matches!(pkt.protocol, proto::TCP | proto::UDP | proto::SCTP);
        let in_ranges = |r: &[(u16, u16)]| r.iter().any(|(a, b)| (*a..=*b).contains(&port));
        side.addrs.iter().all(|m| {
            self.in_set(m, |x| match x {
                Member::Addr(a) => *a == addr,
                Member::Net(n) => n.contains_addr(addr),
                Member::AddrPort(..) => false,
            })
        }) && (side.ports.is_empty() || (has_ports && in_ranges(&side.ports)))
            && (side.not_ports.is_empty() || (has_ports && !in_ranges(&side.not_ports)))
            && side.named.iter().all(|m| {
                has_ports && self.in_set(m, |x| *x == Member::AddrPort(addr, pkt.protocol, port))
            })
    }

    fn rule_matches(&self, r: &IrRule, pkt: &Packet) -> bool {
        let icmp_ok = |i: &Icmp| {
            pkt.icmp
                .is_some_and(|(t, c)| t == i.icmp_type && i.code.is_none_or(|code| code == c))
        };
        r.family.is_none_or(|f| f == pkt.family())
            && r.protocol.is_none_or(|p| p == pkt.protocol)
            && r.not_protocol.is_none_or(|p| p != pkt.protocol)
            && r.icmp.as_ref().is_none_or(icmp_ok)
            && r.not_icmp.as_ref().is_none_or(|i| !icmp_ok(i))
            && self.side_matches(&r.src, pkt.src, pkt.src_port, pkt)
            && self.side_matches(&r.dst, pkt.dst, pkt.dst_port, pkt)
    }
}
