//! The harness itself, proven with BIRD <-> GoBGP: if these fail, the tabby tests cannot be
//! trusted. Each test builds its own namespaces and peers and removes them on drop.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{ensure, Result};
use tabby_tests::{
    skip, wait_until, Bird, BirdConfig, BirdRoute, Capture, Family, Gobgp, GobgpConfig, GobgpRoute,
    Lan, Neighbor, Netns, PeerDaemon, TestDir, CONVERGE,
};

const BIRD_AS: u32 = 4_200_000_001;
const GOBGP_AS: u32 = 4_200_000_002;

/// BIRD on node 1 and GoBGP on node 2 of a fresh pair, peering over IPv4 or IPv6 with both
/// families (MP-BGP) and each originating one IPv4 and one IPv6 route... or two, to see one
/// withdrawn while the other stays.
struct BirdGobgp {
    capture: Capture,
    gobgp: Gobgp,
    bird: Bird,
    bird_addr: IpAddr,
    gobgp_addr: IpAddr,
    _lan: Lan,
    _dir: TestDir,
}

impl BirdGobgp {
    fn start(tag: &str, ipv6: bool, bird_remote_as: u32) -> Result<BirdGobgp> {
        let dir = TestDir::new(tag)?;
        let lan = Lan::pair(tag)?;
        let (b, g) = (&lan.nodes[0], &lan.nodes[1]);
        let (bird_addr, gobgp_addr) = (b.addr(ipv6), g.addr(ipv6));
        let families = if ipv6 {
            vec![Family::V6]
        } else {
            vec![Family::V4, Family::V6]
        };
        let mut bc = BirdConfig::new(b.v4, BIRD_AS);
        bc.neighbors.push(Neighbor {
            address: gobgp_addr,
            asn: bird_remote_as,
            local: bird_addr,
            families: families.clone(),
            passive: false,
        });
        bc.routes = vec![
            BirdRoute::new("10.1.0.0/24"),
            BirdRoute::new("10.1.1.0/24"),
            BirdRoute::new("fd01::/64"),
            BirdRoute::new("fd01:1::/64"),
        ];
        let mut gc = GobgpConfig::new(g.v4, GOBGP_AS);
        gc.neighbors.push(Neighbor {
            address: bird_addr,
            asn: BIRD_AS,
            local: gobgp_addr,
            families,
            passive: false,
        });
        let nh6 = Some(IpAddr::V6(g.v6));
        gc.routes = vec![
            GobgpRoute::new("10.2.0.0/24", None),
            GobgpRoute::new("10.2.1.0/24", None),
            GobgpRoute::new("fd02::/64", nh6),
            GobgpRoute::new("fd02:1::/64", nh6),
        ];
        let capture = Capture::start(&b.ns, &b.ifname, dir.path(), "bgp")?;
        let bird = Bird::start(&b.ns, dir.path(), bc)?;
        let gobgp = Gobgp::start(&g.ns, dir.path(), gc)?;
        Ok(BirdGobgp {
            capture,
            gobgp,
            bird,
            bird_addr,
            gobgp_addr,
            _lan: lan,
            _dir: dir,
        })
    }

    fn established(&self) -> Result<bool> {
        Ok(self.bird.is_established(self.gobgp_addr)?
            && self.gobgp.is_established(self.bird_addr)?)
    }
}

#[test]
fn bird_and_gobgp_reach_established_in_the_harness() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let s = BirdGobgp::start("hest", false, GOBGP_AS)?;
    wait_until(
        CONVERGE,
        "BIRD and GoBGP are Established",
        &[&s.bird, &s.gobgp],
        || s.established(),
    )
}

#[test]
fn bird_and_gobgp_reach_established_over_ipv6_in_the_harness() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let s = BirdGobgp::start("he6", true, GOBGP_AS)?;
    wait_until(
        CONVERGE,
        "BIRD and GoBGP are Established over IPv6",
        &[&s.bird, &s.gobgp],
        || s.established(),
    )
}

#[test]
fn routes_originated_by_bird_reach_gobgp_in_the_harness() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let s = BirdGobgp::start("hrbg", false, GOBGP_AS)?;
    wait_until(
        CONVERGE,
        "GoBGP has BIRD's IPv4 and IPv6 routes",
        &[&s.bird, &s.gobgp],
        || {
            Ok(s.gobgp.has_route_from(s.bird_addr, "10.1.0.0/24")?
                && s.gobgp.has_route_from(s.bird_addr, "fd01::/64")?)
        },
    )
}

#[test]
fn routes_originated_by_gobgp_reach_bird_in_the_harness() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let s = BirdGobgp::start("hrgb", false, GOBGP_AS)?;
    wait_until(
        CONVERGE,
        "BIRD has GoBGP's IPv4 and IPv6 routes",
        &[&s.bird, &s.gobgp],
        || {
            Ok(s.bird.has_route_from(s.gobgp_addr, "10.2.0.0/24")?
                && s.bird.has_route_from(s.gobgp_addr, "fd02::/64")?)
        },
    )
}

#[test]
fn a_route_withdrawn_by_bird_leaves_gobgp_in_the_harness() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let mut s = BirdGobgp::start("hwb", false, GOBGP_AS)?;
    wait_until(
        CONVERGE,
        "GoBGP has BIRD's routes",
        &[&s.bird, &s.gobgp],
        || {
            Ok(s.gobgp.has_route_from(s.bird_addr, "10.1.0.0/24")?
                && s.gobgp.has_route_from(s.bird_addr, "fd01::/64")?)
        },
    )?;
    s.bird.withdraw("10.1.0.0/24")?;
    s.bird.withdraw("fd01::/64")?;
    wait_until(
        CONVERGE,
        "GoBGP lost only the withdrawn routes",
        &[&s.bird, &s.gobgp],
        || {
            let r = s.gobgp.routes_from(s.bird_addr)?;
            Ok(r == ["10.1.1.0/24", "fd01:1::/64"])
        },
    )
}

#[test]
fn a_route_withdrawn_by_gobgp_leaves_bird_in_the_harness() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let mut s = BirdGobgp::start("hwg", true, GOBGP_AS)?;
    wait_until(
        CONVERGE,
        "BIRD has GoBGP's route",
        &[&s.bird, &s.gobgp],
        || s.bird.has_route_from(s.gobgp_addr, "fd02::/64"),
    )?;
    s.gobgp.withdraw("fd02::/64")?;
    wait_until(
        CONVERGE,
        "BIRD lost only the withdrawn route",
        &[&s.bird, &s.gobgp],
        || Ok(s.bird.routes_from(s.gobgp_addr)? == ["fd02:1::/64"]),
    )
}

#[test]
fn a_killed_and_restarted_peer_peers_again_in_the_harness() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let mut s = BirdGobgp::start("hkill", false, GOBGP_AS)?;
    wait_until(
        CONVERGE,
        "GoBGP has BIRD's route",
        &[&s.bird, &s.gobgp],
        || s.bird.has_route_from(s.gobgp_addr, "10.2.0.0/24"),
    )?;
    s.gobgp.kill_and_restart()?;
    wait_until(
        CONVERGE,
        "the restarted GoBGP's routes are back in BIRD",
        &[&s.bird, &s.gobgp],
        || {
            Ok(s.gobgp.is_established(s.bird_addr)?
                && s.bird.has_route_from(s.gobgp_addr, "10.2.0.0/24")?)
        },
    )
}

#[test]
fn bird_refuses_a_peer_with_an_unexpected_as_with_bad_peer_as_in_the_harness() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let s = BirdGobgp::start("hbad", false, 65009)?;
    wait_until(
        CONVERGE,
        "BIRD reports Bad peer AS",
        &[&s.bird, &s.gobgp],
        || Ok(s.bird.session_errors(s.gobgp_addr)?.contains("Bad peer AS")),
    )?;
    wait_until(
        CONVERGE,
        "the wire carries BIRD's NOTIFICATION 2/2 to GoBGP",
        &[&s.bird, &s.gobgp],
        || {
            Ok(s.capture
                .messages()?
                .iter()
                .any(|m| m.src.ip() == s.bird_addr && m.notification() == Some((2, 2))))
        },
    )?;
    ensure!(
        !s.gobgp.is_established(s.bird_addr)?,
        "GoBGP is Established"
    );
    Ok(())
}

#[test]
fn three_nodes_on_a_bridge_reach_each_other() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let lan = Lan::new("hlan", 3)?;
    for from in &lan.nodes {
        for to in &lan.nodes {
            from.ns.exec(&["ping", "-c1", "-W5", &to.v4.to_string()])?;
            from.ns
                .exec(&["ping", "-6", "-c1", "-W5", &to.v6.to_string()])?;
        }
    }
    Ok(())
}

#[test]
fn a_namespace_and_its_processes_are_gone_after_its_guard_drops() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let ns = Netns::new("hdrop")?;
    let name = ns.name().to_owned();
    let mut child = ns.command("sleep").arg("600").spawn()?;
    wait_until(
        Duration::from_secs(5),
        "sleep runs in the namespace",
        &[],
        || Ok(!ns.pids().is_empty()),
    )?;
    drop(ns);
    let status = child.wait()?;
    ensure!(!status.success(), "sleep was not killed: {status}");
    let list = tabby_tests::cmd::sh(&["ip", "netns", "list"])?;
    ensure!(
        !list.split_whitespace().any(|n| n == name),
        "{name} still exists:\n{list}"
    );
    Ok(())
}
