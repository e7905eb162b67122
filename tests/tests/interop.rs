//! tabby against BIRD 2 and GoBGP: over iBGP and eBGP, over IPv4 and IPv6 sessions (and IPv6
//! routes over an IPv4 session), sessions come up, routes cross both ways, withdraws are
//! seen, a killed peer comes back; a peer with the wrong AS is refused with Bad Peer AS and
//! an unconfigured address gets no session.
//!
//! Test paths read as sentences: `<peer>_<session>_over_<transport>::<behaviour>`.
//! Every test builds its own namespaces (tabby on 10.0.0.1 / fd00::1, the peer on
//! 10.0.0.2 / fd00::2) and tears them down on drop. Needs root and the `tabby` binary
//! (`cargo build -p tabby`; see `tabby_tests::tabby`).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{ensure, Result};
use tabby_tests::wait::never_during;
use tabby_tests::{
    skip, wait_until, Bird, BirdConfig, BirdRoute, Capture, Diagnose, Family, Gobgp, GobgpConfig,
    GobgpRoute, Lan, Neighbor, Node, PeerDaemon, Tabby, TabbyConfig, TabbyPeer, TestDir, CONVERGE,
};

const TABBY_AS: u32 = 65001;
const EBGP_PEER_AS: u32 = 65002;
/// An AS nobody has, for the Bad Peer AS tests.
const WRONG_AS: u32 = 65009;

/// Tabby originates these, per family; the first of each is the one withdrawn.
const TABBY_V4: [&str; 2] = ["10.1.0.0/24", "10.1.1.0/24"];
const TABBY_V6: [&str; 2] = ["fd01::/64", "fd01:1::/64"];
/// The peer originates these.
const PEER_V4: [&str; 2] = ["10.2.0.0/24", "10.2.1.0/24"];
const PEER_V6: [&str; 2] = ["fd02::/64", "fd02:1::/64"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerKind {
    Bird,
    Gobgp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    Ibgp,
    Ebgp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// An IPv4 session carrying IPv4 routes.
    V4,
    /// An IPv6 session carrying IPv6 routes (MP-BGP).
    V6,
    /// An IPv4 session carrying IPv4 and IPv6 routes (MP-BGP, IPv6 next hop given).
    Dual,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    peer: PeerKind,
    session: Session,
    transport: Transport,
}

impl Case {
    fn peer_as(self) -> u32 {
        match self.session {
            Session::Ibgp => TABBY_AS,
            Session::Ebgp => EBGP_PEER_AS,
        }
    }

    fn families(self) -> Vec<Family> {
        match self.transport {
            Transport::V4 => vec![Family::V4],
            Transport::V6 => vec![Family::V6],
            Transport::Dual => vec![Family::V4, Family::V6],
        }
    }

    fn ipv6_session(self) -> bool {
        self.transport == Transport::V6
    }

    fn tag(self) -> String {
        let p = match self.peer {
            PeerKind::Bird => "b",
            PeerKind::Gobgp => "g",
        };
        let s = match self.session {
            Session::Ibgp => "i",
            Session::Ebgp => "e",
        };
        let t = match self.transport {
            Transport::V4 => "4",
            Transport::V6 => "6",
            Transport::Dual => "d",
        };
        format!("{p}{s}{t}")
    }

    fn prefixes(self, v4: [&'static str; 2], v6: [&'static str; 2]) -> Vec<&'static str> {
        self.families()
            .iter()
            .flat_map(|f| match f {
                Family::V4 => v4,
                Family::V6 => v6,
            })
            .collect()
    }

    fn tabby_prefixes(self) -> Vec<&'static str> {
        self.prefixes(TABBY_V4, TABBY_V6)
    }

    fn peer_prefixes(self) -> Vec<&'static str> {
        self.prefixes(PEER_V4, PEER_V6)
    }

    /// The routes withdrawn in withdraw tests: the first of each family.
    fn withdrawn(prefixes: &[&'static str]) -> Vec<&'static str> {
        prefixes.iter().step_by(2).copied().collect()
    }
}

/// Starts BIRD or GoBGP on `node`, peering with `tabby_addr` (which it believes has AS
/// `tabby_as`) and originating `routes`.
fn start_peer(
    kind: PeerKind,
    node: &Node,
    dir: &TestDir,
    asn: u32,
    neighbor: Neighbor,
    routes: &[&str],
) -> Result<Box<dyn PeerDaemon>> {
    Ok(match kind {
        PeerKind::Bird => {
            let mut c = BirdConfig::new(node.v4, asn);
            c.neighbors.push(neighbor);
            c.routes = routes
                .iter()
                .map(|p| {
                    let mut r = BirdRoute::new(p);
                    r.communities.push((65000, 100));
                    r.large_communities.push((4_200_000_000, 1, 2));
                    r
                })
                .collect();
            Box::new(Bird::start(&node.ns, dir.path(), c)?)
        }
        PeerKind::Gobgp => {
            let mut c = GobgpConfig::new(node.v4, asn);
            c.neighbors.push(neighbor);
            c.routes = routes
                .iter()
                .map(|p| {
                    let nh = (Family::of(p) == Family::V6).then_some(IpAddr::V6(node.v6));
                    let mut r = GobgpRoute::new(p, nh);
                    r.communities.push("65000:100".into());
                    r.large_communities.push("4200000000:1:2".into());
                    r
                })
                .collect();
            Box::new(Gobgp::start(&node.ns, dir.path(), c)?)
        }
    })
}

/// tabby on node 1 and its peer on node 2, both configured right, both originating.
/// Fields drop in order: daemons, then namespaces, then the directory.
struct Setup {
    tabby: Tabby,
    peer: Box<dyn PeerDaemon>,
    tabby_addr: IpAddr,
    peer_addr: IpAddr,
    _lan: Lan,
    _dir: TestDir,
}

impl Setup {
    fn start(case: Case) -> Result<Setup> {
        Self::start_with(case, case.peer_as(), TABBY_AS)
    }

    /// `tabby_thinks_peer_as`: the AS tabby is told the peer has; `peer_thinks_tabby_as`:
    /// the AS the peer is told tabby has. Either may be wrong on purpose.
    fn start_with(
        case: Case,
        tabby_thinks_peer_as: u32,
        peer_thinks_tabby_as: u32,
    ) -> Result<Setup> {
        let tag = case.tag();
        let dir = TestDir::new(&tag)?;
        let lan = Lan::pair(&tag)?;
        let (t, p) = (&lan.nodes[0], &lan.nodes[1]);
        let v6 = case.ipv6_session();
        let (tabby_addr, peer_addr) = (t.addr(v6), p.addr(v6));
        let peer = start_peer(
            case.peer,
            p,
            &dir,
            case.peer_as(),
            Neighbor {
                address: tabby_addr,
                asn: peer_thinks_tabby_as,
                local: peer_addr,
                families: case.families(),
                passive: false,
            },
            &case.peer_prefixes(),
        )?;
        let tabby = Tabby::start(
            &t.ns,
            dir.path(),
            tabby_config(case, t, peer_addr, tabby_thinks_peer_as),
        )?;
        Ok(Setup {
            tabby,
            peer,
            tabby_addr,
            peer_addr,
            _lan: lan,
            _dir: dir,
        })
    }

    fn parties(&self) -> [&dyn Diagnose; 2] {
        [&self.tabby, self.peer.as_ref()]
    }

    fn wait_established(&self) -> Result<()> {
        wait_until(
            CONVERGE,
            "tabby and the peer are both Established",
            &self.parties(),
            || {
                Ok(self.tabby.is_established(self.peer_addr)?
                    && self.peer.is_established(self.tabby_addr)?)
            },
        )
    }

    fn wait_peer_routes_in_tabby(&self, want: &[&str]) -> Result<()> {
        let what = format!("tabby has exactly the peer's routes {want:?}");
        wait_until(CONVERGE, &what, &self.parties(), || {
            Ok(same_set(&self.tabby.routes_from(self.peer_addr)?, want))
        })
    }

    fn wait_tabby_routes_in_peer(&self, want: &[&str]) -> Result<()> {
        let what = format!("the peer has exactly tabby's routes {want:?}");
        wait_until(CONVERGE, &what, &self.parties(), || {
            Ok(same_set(&self.peer.routes_from(self.tabby_addr)?, want))
        })
    }
}

fn tabby_config(case: Case, node: &Node, peer_addr: IpAddr, peer_as: u32) -> TabbyConfig {
    let mut c = TabbyConfig::new(node.v4, TABBY_AS);
    c.peers.push(TabbyPeer::new(peer_addr, peer_as));
    c.originate = case
        .tabby_prefixes()
        .iter()
        .map(|p| p.to_string())
        .collect();
    if case.transport == Transport::Dual {
        c.next_hop_v6 = Some(node.v6);
    }
    c
}

fn same_set(have: &[String], want: &[&str]) -> bool {
    let mut have: Vec<&str> = have.iter().map(String::as_str).collect();
    let mut want = want.to_vec();
    have.sort_unstable();
    want.sort_unstable();
    have == want
}

fn the_session_reaches_established(case: Case) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    Setup::start(case)?.wait_established()
}

fn routes_originated_by_the_peer_reach_tabby(case: Case) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let s = Setup::start(case)?;
    s.wait_peer_routes_in_tabby(&case.peer_prefixes())
}

fn routes_originated_by_tabby_reach_the_peer(case: Case) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let s = Setup::start(case)?;
    s.wait_tabby_routes_in_peer(&case.tabby_prefixes())
}

fn a_route_the_peer_withdraws_leaves_tabby(case: Case) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let mut s = Setup::start(case)?;
    let all = case.peer_prefixes();
    s.wait_peer_routes_in_tabby(&all)?;
    let gone = Case::withdrawn(&all);
    for p in &gone {
        s.peer.withdraw(p)?;
    }
    let kept: Vec<&str> = all.iter().filter(|p| !gone.contains(p)).copied().collect();
    s.wait_peer_routes_in_tabby(&kept)?;
    ensure!(
        s.tabby.is_established(s.peer_addr)?,
        "the session went down on a withdraw\n{}",
        s.tabby.diagnose()
    );
    Ok(())
}

fn a_route_tabby_stops_originating_leaves_the_peer_after_tabby_restarts(case: Case) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let mut s = Setup::start(case)?;
    let all = case.tabby_prefixes();
    s.wait_tabby_routes_in_peer(&all)?;
    let gone = Case::withdrawn(&all);
    let mut config = s.tabby.config().clone();
    config.originate.retain(|p| !gone.contains(&p.as_str()));
    let kept: Vec<&str> = config.originate.iter().map(String::as_str).collect();
    let kept: Vec<&'static str> = all.iter().filter(|p| kept.contains(p)).copied().collect();
    s.tabby.restart(config)?;
    s.wait_tabby_routes_in_peer(&kept)
}

fn the_session_comes_back_after_the_peer_is_killed_and_restarted(case: Case) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let mut s = Setup::start(case)?;
    s.wait_peer_routes_in_tabby(&case.peer_prefixes())?;
    let before = s
        .tabby
        .peer(s.peer_addr)?
        .map(|p| p["established_count"].clone());
    s.peer.kill_and_restart()?;
    // The restarted daemon is a new process: Established on its side is a new session.
    s.wait_established()?;
    s.wait_peer_routes_in_tabby(&case.peer_prefixes())?;
    let after = s
        .tabby
        .peer(s.peer_addr)?
        .map(|p| p["established_count"].clone());
    if let (Some(b), Some(a)) = (
        before.and_then(|v| v.as_u64()),
        after.and_then(|v| v.as_u64()),
    ) {
        ensure!(a > b, "tabby's established_count did not grow ({b} -> {a})");
    }
    Ok(())
}

/// tabby is told the peer's AS wrong: it must refuse the peer's OPEN with NOTIFICATION
/// OPEN Message Error / Bad Peer AS (RFC 4271 §6.2), seen on the wire and by the peer.
fn tabby_refuses_a_peer_with_an_unexpected_as_with_bad_peer_as(kind: PeerKind) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let case = Case {
        peer: kind,
        session: Session::Ebgp,
        transport: Transport::V4,
    };
    let tag = format!("{}x", case.tag());
    let dir = TestDir::new(&tag)?;
    let lan = Lan::pair(&tag)?;
    let (t, p) = (&lan.nodes[0], &lan.nodes[1]);
    let capture = Capture::start(&t.ns, &t.ifname, dir.path(), "bgp")?;
    let peer = start_peer(
        kind,
        p,
        &dir,
        EBGP_PEER_AS,
        Neighbor {
            address: IpAddr::V4(t.v4),
            asn: TABBY_AS,
            local: IpAddr::V4(p.v4),
            families: vec![Family::V4],
            passive: false,
        },
        &PEER_V4,
    )?;
    let tabby = Tabby::start(
        &t.ns,
        dir.path(),
        tabby_config(case, t, IpAddr::V4(p.v4), WRONG_AS),
    )?;
    let parties: [&dyn Diagnose; 2] = [&tabby, peer.as_ref()];
    wait_until(
        CONVERGE,
        "tabby sends NOTIFICATION 2/2 (Bad Peer AS)",
        &parties,
        || {
            Ok(capture
                .messages()?
                .iter()
                .any(|m| m.src.ip() == IpAddr::V4(t.v4) && m.notification() == Some((2, 2))))
        },
    )?;
    if kind == PeerKind::Bird {
        wait_until(
            CONVERGE,
            "BIRD reports it received Bad peer AS",
            &parties,
            || {
                Ok(peer
                    .session_errors(IpAddr::V4(t.v4))?
                    .contains("Received: Bad peer AS"))
            },
        )?;
    }
    ensure!(
        !peer.is_established(IpAddr::V4(t.v4))? && !tabby.is_established(IpAddr::V4(p.v4))?,
        "a session with the wrong AS is Established"
    );
    Ok(())
}

/// The peer is told tabby's AS wrong: the peer refuses tabby's OPEN with Bad Peer AS, and
/// tabby records the error and never reaches Established.
fn a_peer_expecting_another_as_refuses_tabby_with_bad_peer_as(kind: PeerKind) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let case = Case {
        peer: kind,
        session: Session::Ebgp,
        transport: Transport::V4,
    };
    let s = Setup::start_with(case, EBGP_PEER_AS, WRONG_AS)?;
    wait_until(
        CONVERGE,
        "tabby records the peer's refusal as its last error",
        &s.parties(),
        || {
            let p = s.tabby.peer(s.peer_addr)?;
            Ok(p.and_then(|p| p["last_error"].as_str().map(str::to_owned))
                .is_some_and(|e| e.to_ascii_lowercase().contains("bad peer as")))
        },
    )?;
    if kind == PeerKind::Bird {
        ensure!(
            s.peer.session_errors(s.tabby_addr)?.contains("Bad peer AS"),
            "BIRD does not report Bad peer AS\n{}",
            s.peer.diagnose()
        );
    }
    ensure!(
        !s.tabby.is_established(s.peer_addr)?,
        "tabby is Established"
    );
    Ok(())
}

/// A third node that tabby has no `--peer` for, configured to peer with tabby: tabby never
/// shows it and it never reaches Established, while tabby's configured peer does.
fn a_connection_from_an_unconfigured_address_gets_no_session(kind: PeerKind) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let case = Case {
        peer: kind,
        session: Session::Ebgp,
        transport: Transport::V4,
    };
    let tag = format!("{}u", case.tag());
    let dir = TestDir::new(&tag)?;
    let lan = Lan::new(&tag, 3)?;
    let (t, p, rogue_node) = (&lan.nodes[0], &lan.nodes[1], &lan.nodes[2]);
    let capture = Capture::start(&t.ns, &t.ifname, dir.path(), "bgp")?;
    let neighbor = |local: &Node| Neighbor {
        address: IpAddr::V4(t.v4),
        asn: TABBY_AS,
        local: IpAddr::V4(local.v4),
        families: vec![Family::V4],
        passive: false,
    };
    let peer = start_peer(kind, p, &dir, EBGP_PEER_AS, neighbor(p), &PEER_V4)?;
    let rogue = start_peer(
        kind,
        rogue_node,
        &dir,
        EBGP_PEER_AS,
        neighbor(rogue_node),
        &["10.3.0.0/24"],
    )?;
    let (peer_addr, rogue_addr) = (IpAddr::V4(p.v4), IpAddr::V4(rogue_node.v4));
    let tabby = Tabby::start(
        &t.ns,
        dir.path(),
        tabby_config(case, t, peer_addr, EBGP_PEER_AS),
    )?;
    let parties: [&dyn Diagnose; 3] = [&tabby, peer.as_ref(), rogue.as_ref()];
    wait_until(
        CONVERGE,
        "the configured peer is Established",
        &parties,
        || Ok(tabby.is_established(peer_addr)? && peer.is_established(IpAddr::V4(t.v4))?),
    )?;
    // Proof the rogue tried: its TCP connections to tabby's port 179 on the wire.
    wait_until(
        CONVERGE,
        "the unconfigured node has tried to connect twice",
        &parties,
        || {
            let pcap = std::fs::read(capture.file())?;
            let tries = tabby_tests::pcap::tcp_streams(&pcap)?
                .iter()
                .filter(|s| s.src.ip() == rogue_addr && s.dst.port() == 179)
                .count();
            Ok(tries >= 2)
        },
    )?;
    never_during(
        Duration::from_secs(3),
        "the unconfigured node got a session",
        &parties,
        || {
            Ok(rogue.is_established(IpAddr::V4(t.v4))?
                || tabby.peer_addresses()?.contains(&rogue_addr))
        },
    )?;
    ensure!(
        !tabby.peer_addresses()?.contains(&rogue_addr),
        "tabby shows the unconfigured peer\n{}",
        tabby.diagnose()
    );
    let opens_to_rogue = capture
        .messages()?
        .iter()
        .filter(|m| m.dst.ip() == rogue_addr && m.kind() == 1)
        .count();
    ensure!(
        opens_to_rogue == 0,
        "tabby sent {opens_to_rogue} OPEN(s) to the unconfigured node"
    );
    Ok(())
}

/// One module per case; one test per behaviour.
macro_rules! case {
    ($module:ident, $peer:ident, $session:ident, $transport:ident, [$($behaviour:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            const CASE: Case = Case {
                peer: PeerKind::$peer,
                session: Session::$session,
                transport: Transport::$transport,
            };
            $(
                #[test]
                fn $behaviour() -> Result<()> {
                    super::$behaviour(CASE)
                }
            )*
        }
    };
    ($module:ident, $peer:ident, $session:ident, $transport:ident) => {
        case!($module, $peer, $session, $transport, [
            the_session_reaches_established,
            routes_originated_by_the_peer_reach_tabby,
            routes_originated_by_tabby_reach_the_peer,
            a_route_the_peer_withdraws_leaves_tabby,
            a_route_tabby_stops_originating_leaves_the_peer_after_tabby_restarts,
            the_session_comes_back_after_the_peer_is_killed_and_restarted,
        ]);
    };
}

case!(bird_ebgp_over_ipv4, Bird, Ebgp, V4);
case!(bird_ibgp_over_ipv4, Bird, Ibgp, V4);
case!(bird_ebgp_over_ipv6, Bird, Ebgp, V6);
case!(bird_ibgp_over_ipv6, Bird, Ibgp, V6);
case!(gobgp_ebgp_over_ipv4, Gobgp, Ebgp, V4);
case!(gobgp_ibgp_over_ipv4, Gobgp, Ibgp, V4);
case!(gobgp_ebgp_over_ipv6, Gobgp, Ebgp, V6);
case!(gobgp_ibgp_over_ipv6, Gobgp, Ibgp, V6);
// Both families over one IPv4 session: the route exchange is what differs.
case!(
    bird_ebgp_over_ipv4_with_ipv6_routes,
    Bird,
    Ebgp,
    Dual,
    [
        routes_originated_by_the_peer_reach_tabby,
        routes_originated_by_tabby_reach_the_peer,
    ]
);
case!(
    bird_ibgp_over_ipv4_with_ipv6_routes,
    Bird,
    Ibgp,
    Dual,
    [
        routes_originated_by_the_peer_reach_tabby,
        routes_originated_by_tabby_reach_the_peer,
    ]
);
case!(
    gobgp_ebgp_over_ipv4_with_ipv6_routes,
    Gobgp,
    Ebgp,
    Dual,
    [
        routes_originated_by_the_peer_reach_tabby,
        routes_originated_by_tabby_reach_the_peer,
    ]
);
case!(
    gobgp_ibgp_over_ipv4_with_ipv6_routes,
    Gobgp,
    Ibgp,
    Dual,
    [
        routes_originated_by_the_peer_reach_tabby,
        routes_originated_by_tabby_reach_the_peer,
    ]
);

/// The refusals, once per peer daemon (eBGP over IPv4).
macro_rules! refusals {
    ($module:ident, $peer:ident) => {
        mod $module {
            use super::*;
            #[test]
            fn tabby_refuses_a_peer_with_an_unexpected_as_with_bad_peer_as() -> Result<()> {
                super::tabby_refuses_a_peer_with_an_unexpected_as_with_bad_peer_as(PeerKind::$peer)
            }
            #[test]
            fn a_peer_expecting_another_as_refuses_tabby_with_bad_peer_as() -> Result<()> {
                super::a_peer_expecting_another_as_refuses_tabby_with_bad_peer_as(PeerKind::$peer)
            }
            #[test]
            fn a_connection_from_an_unconfigured_address_gets_no_session() -> Result<()> {
                super::a_connection_from_an_unconfigured_address_gets_no_session(PeerKind::$peer)
            }
        }
    };
}

refusals!(bird_refusals, Bird);
refusals!(gobgp_refusals, Gobgp);
