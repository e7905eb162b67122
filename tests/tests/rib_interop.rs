//! tabby's RIB features against BIRD 2 and GoBGP: route reflection (RFC 4456) with tabby as
//! reflector, as client, and as one of two reflectors of a cluster; graceful restart (RFC
//! 4724, RFC 8538) with tabby as helper and as restarting speaker; TCP-MD5 (RFC 2385);
//! prefix limits (RFC 4486); ROUTE-REFRESH (RFC 2918).
//!
//! Every session is iBGP in AS 65001 unless a test says otherwise. Nodes sit on one LAN,
//! node `i` at 10.0.0.`i+1` / fd00::`i+1`; each test builds its own namespaces and tears
//! them down on drop. Needs root and the `tabby` binary (`cargo build -p tabby`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tabby_tests::wait::never_during;
use tabby_tests::{
    canonical_prefix, skip, wait_until, Bird, BirdConfig, BirdRoute, Capture, Diagnose, Family,
    Gobgp, GobgpConfig, GobgpRoute, Lan, Neighbor, Node, PeerDaemon, Tabby, TabbyConfig, TabbyPeer,
    TestDir, CONVERGE,
};

const AS: u32 = 65001;
/// The cluster ID of tabby as a reflector.
const TABBY_CLUSTER: Ipv4Addr = Ipv4Addr::new(1, 1, 1, 1);
/// The cluster ID of BIRD as a reflector.
const BIRD_CLUSTER: Ipv4Addr = Ipv4Addr::new(2, 2, 2, 2);

fn v4(node: &Node) -> IpAddr {
    IpAddr::V4(node.v4)
}

/// A neighbor of BIRD or GoBGP on `local`, towards `remote`, with both unicast families
/// over an IPv4 session.
fn neighbor(local: &Node, remote: &Node, families: &[Family]) -> Neighbor {
    Neighbor {
        address: v4(remote),
        asn: AS,
        local: v4(local),
        families: families.to_vec(),
        passive: false,
    }
}

/// BIRD on `node`, peering with `peers`, originating `routes`; `tune` adjusts the config.
fn bird(
    node: &Node,
    dir: &TestDir,
    peers: &[&Node],
    families: &[Family],
    routes: &[&str],
    tune: impl FnOnce(&mut BirdConfig),
) -> Result<Bird> {
    let mut c = BirdConfig::new(node.v4, AS);
    c.neighbors = peers.iter().map(|p| neighbor(node, p, families)).collect();
    c.routes = routes.iter().map(|r| BirdRoute::new(r)).collect();
    tune(&mut c);
    Bird::start(&node.ns, dir.path(), c)
}

/// GoBGP on `node`, peering with `peers`, originating `routes` (IPv6 ones with the node's
/// IPv6 address as next hop); `tune` adjusts the config.
fn gobgp(
    node: &Node,
    dir: &TestDir,
    peers: &[&Node],
    families: &[Family],
    routes: &[&str],
    tune: impl FnOnce(&mut GobgpConfig),
) -> Result<Gobgp> {
    let mut c = GobgpConfig::new(node.v4, AS);
    c.neighbors = peers.iter().map(|p| neighbor(node, p, families)).collect();
    c.routes = routes
        .iter()
        .map(|r| {
            let nh = (Family::of(r) == Family::V6).then_some(IpAddr::V6(node.v6));
            GobgpRoute::new(r, nh)
        })
        .collect();
    tune(&mut c);
    Gobgp::start(&node.ns, dir.path(), c)
}

/// tabby's config on `node`, with an IPv6 next hop for IPv6 routes over IPv4 sessions.
fn tabby_config(node: &Node, peers: Vec<TabbyPeer>, originate: &[&str]) -> TabbyConfig {
    let mut c = TabbyConfig::new(node.v4, AS);
    c.peers = peers;
    c.originate = originate.iter().map(|p| p.to_string()).collect();
    c.next_hop_v6 = Some(node.v6);
    c
}

fn same_set(have: &[String], want: &[&str]) -> bool {
    let mut have: Vec<String> = have.to_vec();
    let mut want: Vec<String> = want
        .iter()
        .filter_map(|p| canonical_prefix(p).ok())
        .collect();
    have.sort_unstable();
    want.sort_unstable();
    have == want
}

/// GoBGP's path for `prefix` learned from `from`, as `gobgp global rib -j` shows it.
fn gobgp_path(g: &Gobgp, prefix: &str, from: IpAddr) -> Result<Option<Value>> {
    let want = canonical_prefix(prefix)?;
    let rib = g.rib(Family::of(prefix))?;
    for (p, paths) in rib.as_object().into_iter().flatten() {
        if canonical_prefix(p)? != want {
            continue;
        }
        return Ok(paths
            .as_array()
            .into_iter()
            .flatten()
            .find(|path| {
                path["neighbor-ip"]
                    .as_str()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    == Some(from)
            })
            .cloned());
    }
    Ok(None)
}

/// The path attribute of type `kind` of a GoBGP path.
fn gobgp_attr(path: &Value, kind: u64) -> Option<&Value> {
    path["attrs"]
        .as_array()?
        .iter()
        .find(|a| a["type"].as_u64() == Some(kind))
}

/// What a reflected route must carry, wherever it is seen.
#[derive(Debug, Clone, Copy)]
struct Reflected {
    originator: Ipv4Addr,
    cluster: Ipv4Addr,
    next_hop: IpAddr,
}

impl Reflected {
    /// Checks GoBGP's path: ORIGINATOR_ID (type 9), CLUSTER_LIST (type 10), next hop in
    /// NEXT_HOP (type 3) or MP_REACH_NLRI (type 14).
    fn check_gobgp(&self, path: &Value) -> Result<()> {
        let originator = gobgp_attr(path, 9).map(|a| a["value"].clone());
        ensure!(
            originator == Some(Value::from(self.originator.to_string())),
            "ORIGINATOR_ID is {originator:?}, not {} in GoBGP's path {path}",
            self.originator
        );
        let clusters = gobgp_attr(path, 10).map(|a| a["value"].clone());
        ensure!(
            clusters == Some(Value::from(vec![self.cluster.to_string()])),
            "CLUSTER_LIST is {clusters:?}, not [{}] in GoBGP's path {path}",
            self.cluster
        );
        let next_hop = gobgp_attr(path, 3)
            .or_else(|| gobgp_attr(path, 14))
            .and_then(|a| a["nexthop"].as_str())
            .and_then(|a| a.parse::<IpAddr>().ok());
        ensure!(
            next_hop == Some(self.next_hop),
            "next hop is {next_hop:?}, not {} in GoBGP's path {path}",
            self.next_hop
        );
        Ok(())
    }

    /// Checks BIRD's `show route all` of the route.
    fn check_bird(&self, shown: &str) -> Result<()> {
        for want in [
            format!("BGP.originator_id: {}", self.originator),
            format!("BGP.cluster_list: {}", self.cluster),
            format!("BGP.next_hop: {}", self.next_hop),
        ] {
            ensure!(
                shown.lines().any(|l| l.trim().starts_with(&want)),
                "BIRD's route lacks `{want}`:\n{shown}"
            );
        }
        Ok(())
    }

    /// Checks tabby's `/routes` entry of the route.
    fn check_tabby(&self, route: &Value) -> Result<()> {
        ensure!(
            route["originator_id"].as_str() == Some(&*self.originator.to_string()),
            "originator_id is not {} in tabby's route {route}",
            self.originator
        );
        ensure!(
            route["cluster_list"] == Value::from(vec![self.cluster.to_string()]),
            "cluster_list is not [{}] in tabby's route {route}",
            self.cluster
        );
        ensure!(
            route["next_hop"]
                .as_str()
                .and_then(|a| a.parse::<IpAddr>().ok())
                == Some(self.next_hop),
            "next_hop is not {} in tabby's route {route}",
            self.next_hop
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// tabby as route reflector, BIRD and GoBGP its clients.

/// tabby (10.0.0.1, cluster 1.1.1.1) reflects between BIRD (10.0.0.2) and GoBGP
/// (10.0.0.3); every session carries IPv4 and IPv6 over IPv4.
struct ReflectorSetup {
    tabby: Tabby,
    bird: Bird,
    gobgp: Gobgp,
    _lan: Lan,
    _dir: TestDir,
}

const BIRD_V4: &str = "10.2.0.0/24";
const BIRD_V6: &str = "fd02::/64";
const GOBGP_V4: &str = "10.3.0.0/24";
const GOBGP_V6: &str = "fd03::/64";

impl ReflectorSetup {
    fn start(tag: &str) -> Result<ReflectorSetup> {
        let dir = TestDir::new(tag)?;
        let lan = Lan::new(tag, 3)?;
        let (t, b, g) = (&lan.nodes[0], &lan.nodes[1], &lan.nodes[2]);
        let both = [Family::V4, Family::V6];
        let bird = bird(b, &dir, &[t], &both, &[BIRD_V4, BIRD_V6], |_| {})?;
        let gobgp = gobgp(g, &dir, &[t], &both, &[GOBGP_V4, GOBGP_V6], |_| {})?;
        let mut config = tabby_config(
            t,
            vec![
                TabbyPeer::new(v4(b), AS).rr_client(),
                TabbyPeer::new(v4(g), AS).rr_client(),
            ],
            &[],
        );
        config.cluster_id = Some(TABBY_CLUSTER);
        let tabby = Tabby::start(&t.ns, dir.path(), config)?;
        Ok(ReflectorSetup {
            tabby,
            bird,
            gobgp,
            _lan: lan,
            _dir: dir,
        })
    }

    fn node(&self, i: usize) -> &Node {
        &self._lan.nodes[i]
    }

    fn parties(&self) -> [&dyn Diagnose; 3] {
        [&self.tabby, &self.bird, &self.gobgp]
    }
}

fn tabby_reflects_a_bird_clients_route_to_a_gobgp_client(prefix: &str, tag: &str) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let s = ReflectorSetup::start(tag)?;
    let (t, b) = (s.node(0), s.node(1));
    let want = Reflected {
        originator: b.v4,
        cluster: TABBY_CLUSTER,
        next_hop: b.addr(Family::of(prefix) == Family::V6),
    };
    let what = format!("GoBGP has {prefix} from tabby, reflected from BIRD");
    wait_until(CONVERGE, &what, &s.parties(), || {
        Ok(gobgp_path(&s.gobgp, prefix, v4(t))?.is_some())
    })?;
    let path = gobgp_path(&s.gobgp, prefix, v4(t))?.context("the path went away")?;
    want.check_gobgp(&path)
}

fn tabby_reflects_a_gobgp_clients_route_to_a_bird_client(prefix: &str, tag: &str) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let s = ReflectorSetup::start(tag)?;
    let (t, g) = (s.node(0), s.node(2));
    let want = Reflected {
        originator: g.v4,
        cluster: TABBY_CLUSTER,
        next_hop: g.addr(Family::of(prefix) == Family::V6),
    };
    let what = format!("BIRD has {prefix} from tabby, reflected from GoBGP");
    wait_until(CONVERGE, &what, &s.parties(), || {
        Ok(!s.bird.route_all(v4(t), prefix)?.is_empty())
    })?;
    want.check_bird(&s.bird.route_all(v4(t), prefix)?)
}

mod tabby_as_reflector {
    use super::*;

    #[test]
    fn reflects_an_ipv4_route_from_a_bird_client_to_a_gobgp_client_with_originator_and_cluster_list(
    ) -> Result<()> {
        tabby_reflects_a_bird_clients_route_to_a_gobgp_client(BIRD_V4, "rfb4")
    }

    #[test]
    fn reflects_an_ipv6_route_from_a_bird_client_to_a_gobgp_client_with_originator_and_cluster_list(
    ) -> Result<()> {
        tabby_reflects_a_bird_clients_route_to_a_gobgp_client(BIRD_V6, "rfb6")
    }

    #[test]
    fn reflects_an_ipv4_route_from_a_gobgp_client_to_a_bird_client_with_originator_and_cluster_list(
    ) -> Result<()> {
        tabby_reflects_a_gobgp_clients_route_to_a_bird_client(GOBGP_V4, "rfg4")
    }

    #[test]
    fn reflects_an_ipv6_route_from_a_gobgp_client_to_a_bird_client_with_originator_and_cluster_list(
    ) -> Result<()> {
        tabby_reflects_a_gobgp_clients_route_to_a_bird_client(GOBGP_V6, "rfg6")
    }
}

/// tabby (10.0.0.1, cluster 1.1.1.1) with two iBGP non-clients, BIRD A (10.0.0.2,
/// originating 10.2.0.0/24) and BIRD B (10.0.0.3), and one client, GoBGP (10.0.0.4,
/// originating 10.4.0.0/24).
struct NonClientSetup {
    tabby: Tabby,
    bird_a: Bird,
    bird_b: Bird,
    gobgp: Gobgp,
    _lan: Lan,
    _dir: TestDir,
}

const CLIENT_V4: &str = "10.4.0.0/24";

impl NonClientSetup {
    fn start(tag: &str) -> Result<NonClientSetup> {
        let dir = TestDir::new(tag)?;
        let lan = Lan::new(tag, 4)?;
        let (t, a, b, g) = (&lan.nodes[0], &lan.nodes[1], &lan.nodes[2], &lan.nodes[3]);
        let only_v4 = [Family::V4];
        let bird_a = bird(a, &dir, &[t], &only_v4, &[BIRD_V4], |_| {})?;
        let bird_b = bird(b, &dir, &[t], &only_v4, &[], |_| {})?;
        let gobgp = gobgp(g, &dir, &[t], &only_v4, &[CLIENT_V4], |_| {})?;
        let mut config = tabby_config(
            t,
            vec![
                TabbyPeer::new(v4(a), AS),
                TabbyPeer::new(v4(b), AS),
                TabbyPeer::new(v4(g), AS).rr_client(),
            ],
            &[],
        );
        config.cluster_id = Some(TABBY_CLUSTER);
        let tabby = Tabby::start(&t.ns, dir.path(), config)?;
        Ok(NonClientSetup {
            tabby,
            bird_a,
            bird_b,
            gobgp,
            _lan: lan,
            _dir: dir,
        })
    }

    fn node(&self, i: usize) -> &Node {
        &self._lan.nodes[i]
    }

    fn parties(&self) -> [&dyn Diagnose; 4] {
        [&self.tabby, &self.bird_a, &self.bird_b, &self.gobgp]
    }
}

mod tabby_as_reflector_with_non_clients {
    use super::*;

    /// RFC 4456 §6: a route from a non-client goes to the clients only.
    #[test]
    fn reflects_a_non_clients_route_to_a_client_but_not_to_another_non_client() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let s = NonClientSetup::start("rnc")?;
        let (t, a) = (v4(s.node(0)), s.node(1));
        wait_until(
            CONVERGE,
            "GoBGP (client) has BIRD A's route from tabby",
            &s.parties(),
            || Ok(gobgp_path(&s.gobgp, BIRD_V4, t)?.is_some()),
        )?;
        let path = gobgp_path(&s.gobgp, BIRD_V4, t)?.context("the path went away")?;
        Reflected {
            originator: a.v4,
            cluster: TABBY_CLUSTER,
            next_hop: v4(a),
        }
        .check_gobgp(&path)?;
        wait_until(
            CONVERGE,
            "BIRD B (non-client) has the client's route, so its session carries routes",
            &s.parties(),
            || s.bird_b.has_route_from(t, CLIENT_V4),
        )?;
        never_during(
            Duration::from_secs(3),
            "BIRD B (non-client) got BIRD A's (non-client) route",
            &s.parties(),
            || s.bird_b.has_route_from(t, BIRD_V4),
        )
    }

    /// RFC 4456 §6: a route from a client goes to every peer, non-clients included.
    #[test]
    fn reflects_a_clients_route_to_non_clients_with_originator_and_cluster_list() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let s = NonClientSetup::start("rcn")?;
        let (t, g) = (v4(s.node(0)), s.node(3));
        wait_until(
            CONVERGE,
            "both non-clients have the client's route",
            &s.parties(),
            || Ok(s.bird_a.has_route_from(t, CLIENT_V4)? && s.bird_b.has_route_from(t, CLIENT_V4)?),
        )?;
        let want = Reflected {
            originator: g.v4,
            cluster: TABBY_CLUSTER,
            next_hop: v4(g),
        };
        want.check_bird(&s.bird_a.route_all(t, CLIENT_V4)?)?;
        want.check_bird(&s.bird_b.route_all(t, CLIENT_V4)?)
    }
}

// ---------------------------------------------------------------------------------------
// tabby as a client of a BIRD reflector.

/// BIRD (10.0.0.2, cluster 2.2.2.2) reflects between tabby (10.0.0.1) and GoBGP (10.0.0.3).
struct ClientSetup {
    tabby: Tabby,
    bird: Bird,
    gobgp: Gobgp,
    _lan: Lan,
    _dir: TestDir,
}

const TABBY_V4: &str = "10.1.0.0/24";

impl ClientSetup {
    fn start(tag: &str) -> Result<ClientSetup> {
        let dir = TestDir::new(tag)?;
        let lan = Lan::new(tag, 3)?;
        let (t, b, g) = (&lan.nodes[0], &lan.nodes[1], &lan.nodes[2]);
        let only_v4 = [Family::V4];
        let bird = bird(b, &dir, &[t, g], &only_v4, &[], |c| {
            c.rr_clients = vec![v4(t), v4(g)];
            c.rr_cluster_id = Some(BIRD_CLUSTER);
            c.export_bgp = true;
        })?;
        let gobgp = gobgp(g, &dir, &[b], &only_v4, &[GOBGP_V4], |_| {})?;
        let tabby = Tabby::start(
            &t.ns,
            dir.path(),
            tabby_config(t, vec![TabbyPeer::new(v4(b), AS)], &[TABBY_V4]),
        )?;
        Ok(ClientSetup {
            tabby,
            bird,
            gobgp,
            _lan: lan,
            _dir: dir,
        })
    }

    fn node(&self, i: usize) -> &Node {
        &self._lan.nodes[i]
    }

    fn parties(&self) -> [&dyn Diagnose; 3] {
        [&self.tabby, &self.bird, &self.gobgp]
    }
}

mod tabby_as_client_of_a_bird_reflector {
    use super::*;

    #[test]
    fn tabbys_route_reaches_another_client_with_originator_and_cluster_list() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let s = ClientSetup::start("clt")?;
        let (t, b) = (s.node(0), s.node(1));
        wait_until(
            CONVERGE,
            "GoBGP has tabby's route from the BIRD reflector",
            &s.parties(),
            || Ok(gobgp_path(&s.gobgp, TABBY_V4, v4(b))?.is_some()),
        )?;
        let path = gobgp_path(&s.gobgp, TABBY_V4, v4(b))?.context("the path went away")?;
        Reflected {
            originator: t.v4,
            cluster: BIRD_CLUSTER,
            next_hop: v4(t),
        }
        .check_gobgp(&path)
    }

    #[test]
    fn tabby_learns_another_clients_route_with_originator_and_cluster_list() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let s = ClientSetup::start("clb")?;
        let (b, g) = (s.node(1), s.node(2));
        wait_until(
            CONVERGE,
            "tabby has GoBGP's route from the BIRD reflector",
            &s.parties(),
            || s.tabby.has_route_from(v4(b), GOBGP_V4),
        )?;
        let route = s
            .tabby
            .route_from(v4(b), GOBGP_V4)?
            .context("the route went away")?;
        Reflected {
            originator: g.v4,
            cluster: BIRD_CLUSTER,
            next_hop: v4(g),
        }
        .check_tabby(&route)
    }
}

// ---------------------------------------------------------------------------------------
// Two tabby reflectors of one cluster.

/// Reflectors tabby R1 (10.0.0.1) and R2 (10.0.0.2), both cluster 1.1.1.1 and iBGP
/// non-clients of each other; clients BIRD (10.0.0.3) and GoBGP (10.0.0.4) peer with both.
struct ClusterSetup {
    r1: Tabby,
    r2: Tabby,
    bird: Bird,
    gobgp: Gobgp,
    _lan: Lan,
    _dir: TestDir,
}

impl ClusterSetup {
    fn start(tag: &str) -> Result<ClusterSetup> {
        let dir = TestDir::new(tag)?;
        let lan = Lan::new(tag, 4)?;
        let (n1, n2, b, g) = (&lan.nodes[0], &lan.nodes[1], &lan.nodes[2], &lan.nodes[3]);
        let only_v4 = [Family::V4];
        let bird = bird(b, &dir, &[n1, n2], &only_v4, &[BIRD_V4], |_| {})?;
        let gobgp = gobgp(g, &dir, &[n1, n2], &only_v4, &[GOBGP_V4], |_| {})?;
        let reflector = |me: &Node, other: &Node| {
            let mut c = tabby_config(
                me,
                vec![
                    TabbyPeer::new(v4(other), AS),
                    TabbyPeer::new(v4(b), AS).rr_client(),
                    TabbyPeer::new(v4(g), AS).rr_client(),
                ],
                &[],
            );
            c.cluster_id = Some(TABBY_CLUSTER);
            Tabby::start(&me.ns, dir.path(), c)
        };
        let r1 = reflector(n1, n2)?;
        let r2 = reflector(n2, n1)?;
        Ok(ClusterSetup {
            r1,
            r2,
            bird,
            gobgp,
            _lan: lan,
            _dir: dir,
        })
    }

    fn node(&self, i: usize) -> &Node {
        &self._lan.nodes[i]
    }

    fn parties(&self) -> [&dyn Diagnose; 4] {
        [&self.r1, &self.r2, &self.bird, &self.gobgp]
    }

    /// Both clients have the other's route from both reflectors.
    fn wait_reflected_by_both(&self) -> Result<()> {
        let (n1, n2) = (v4(self.node(0)), v4(self.node(1)));
        wait_until(
            CONVERGE,
            "each client has the other's route from both reflectors",
            &self.parties(),
            || {
                Ok(self.bird.has_route_from(n1, GOBGP_V4)?
                    && self.bird.has_route_from(n2, GOBGP_V4)?
                    && gobgp_path(&self.gobgp, BIRD_V4, n1)?.is_some()
                    && gobgp_path(&self.gobgp, BIRD_V4, n2)?.is_some())
            },
        )
    }
}

mod two_tabby_reflectors_of_one_cluster {
    use super::*;

    #[test]
    fn both_reflect_a_clients_route_to_the_other_client() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let s = ClusterSetup::start("cl2")?;
        s.wait_reflected_by_both()?;
        for from in [s.node(0), s.node(1)] {
            let path = gobgp_path(&s.gobgp, BIRD_V4, v4(from))?.context("the path went away")?;
            Reflected {
                originator: s.node(2).v4,
                cluster: TABBY_CLUSTER,
                next_hop: v4(s.node(2)),
            }
            .check_gobgp(&path)?;
        }
        Ok(())
    }

    /// Each reflector reflects the clients' routes to the other (a non-client); those carry
    /// the shared cluster ID in their CLUSTER_LIST and must be refused (RFC 4456 §8): counted
    /// as received, not accepted, not in `/routes`, and no UPDATE churn follows.
    #[test]
    fn a_route_reflected_by_the_other_reflector_is_refused_by_the_cluster_list_check() -> Result<()>
    {
        if skip()? {
            return Ok(());
        }
        let s = ClusterSetup::start("clr")?;
        let (n1, n2) = (v4(s.node(0)), v4(s.node(1)));
        s.wait_reflected_by_both()?;
        wait_until(
            CONVERGE,
            "each reflector received both client routes from the other and accepted none",
            &s.parties(),
            || {
                Ok(s.r1.peer_counter(n2, "received")? == 2
                    && s.r1.peer_counter(n2, "accepted")? == 0
                    && s.r2.peer_counter(n1, "received")? == 2
                    && s.r2.peer_counter(n1, "accepted")? == 0)
            },
        )?;
        ensure!(
            s.r1.routes_from(n2)?.is_empty() && s.r2.routes_from(n1)?.is_empty(),
            "a reflector shows routes from the other in /routes\n{}\n{}",
            s.r1.diagnose(),
            s.r2.diagnose()
        );
        let counters = || -> Result<Vec<u64>> {
            Ok(vec![
                s.r1.peer_counter(n2, "updates_received")?,
                s.r1.peer_counter(n2, "updates_sent")?,
                s.r2.peer_counter(n1, "updates_received")?,
                s.r2.peer_counter(n1, "updates_sent")?,
            ])
        };
        let before = counters()?;
        never_during(
            Duration::from_secs(4),
            "UPDATEs keep flowing between the reflectors (a loop)",
            &s.parties(),
            || Ok(counters()? != before),
        )
    }

    #[test]
    fn a_route_withdrawn_by_its_client_leaves_both_reflectors_and_the_other_client() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let mut s = ClusterSetup::start("clw")?;
        let (n1, n2, b) = (v4(s.node(0)), v4(s.node(1)), v4(s.node(2)));
        s.wait_reflected_by_both()?;
        s.bird.withdraw(BIRD_V4)?;
        wait_until(
            CONVERGE,
            "BIRD's withdrawn route is gone from both reflectors and from GoBGP",
            &s.parties(),
            || {
                Ok(!s.r1.has_route_from(b, BIRD_V4)?
                    && !s.r2.has_route_from(b, BIRD_V4)?
                    && s.r1.peer_counter(n2, "received")? == 1
                    && s.r2.peer_counter(n1, "received")? == 1
                    && gobgp_path(&s.gobgp, BIRD_V4, n1)?.is_none()
                    && gobgp_path(&s.gobgp, BIRD_V4, n2)?.is_none())
            },
        )?;
        ensure!(
            s.bird.has_route_from(n1, GOBGP_V4)? && s.bird.has_route_from(n2, GOBGP_V4)?,
            "GoBGP's route left BIRD too\n{}",
            s.bird.diagnose()
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Graceful restart, tabby as helper.

const BIRD_ROUTES: [&str; 2] = ["10.2.0.0/24", "10.2.1.0/24"];

/// tabby (10.0.0.1) and BIRD (10.0.0.2) with `graceful restart on` and `restart_time`.
struct HelperSetup {
    tabby: Tabby,
    bird: Bird,
    bird_addr: IpAddr,
    _lan: Lan,
    _dir: TestDir,
}

impl HelperSetup {
    fn start(tag: &str, restart_time: u16) -> Result<HelperSetup> {
        Self::start_with(tag, restart_time, None)
    }

    /// `tabby_restart_time`: tabby's `--graceful-restart-time` (0: no graceful restart).
    fn start_with(
        tag: &str,
        restart_time: u16,
        tabby_restart_time: Option<u16>,
    ) -> Result<HelperSetup> {
        let dir = TestDir::new(tag)?;
        let lan = Lan::pair(tag)?;
        let (t, b) = (&lan.nodes[0], &lan.nodes[1]);
        let bird = bird(b, &dir, &[t], &[Family::V4], &BIRD_ROUTES, |c| {
            c.graceful_restart = Some(restart_time);
        })?;
        let mut config = tabby_config(t, vec![TabbyPeer::new(v4(b), AS)], &[]);
        config.graceful_restart_time = tabby_restart_time;
        let tabby = Tabby::start(&t.ns, dir.path(), config)?;
        Ok(HelperSetup {
            tabby,
            bird,
            bird_addr: v4(b),
            _lan: lan,
            _dir: dir,
        })
    }

    fn parties(&self) -> [&dyn Diagnose; 2] {
        [&self.tabby, &self.bird]
    }

    /// BIRD's routes in tabby, with their `stale` flags.
    fn stale_flags(&self) -> Result<Vec<(String, bool)>> {
        let routes = self.tabby.routes()?;
        Ok(routes["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["peer"].as_str().and_then(|a| a.parse::<IpAddr>().ok()) == Some(self.bird_addr)
            })
            .flat_map(|p| p["routes"].as_array().into_iter().flatten())
            .map(|r| {
                (
                    r["prefix"].as_str().unwrap_or("?").to_owned(),
                    r["stale"].as_bool().unwrap_or(false),
                )
            })
            .collect())
    }

    fn wait_routes(&self, want: &[&str], stale: bool) -> Result<()> {
        let what = format!("tabby has exactly BIRD's routes {want:?}, all with stale={stale}");
        wait_until(CONVERGE, &what, &self.parties(), || {
            let flags = self.stale_flags()?;
            let prefixes: Vec<String> = flags
                .iter()
                .map(|(p, _)| canonical_prefix(p))
                .collect::<Result<_>>()?;
            Ok(same_set(&prefixes, want)
                && flags.iter().all(|(_, s)| *s == stale)
                && self.tabby.peer_counter(self.bird_addr, "stale")?
                    == if stale { want.len() as u64 } else { 0 })
        })
    }

    /// Kills BIRD and waits until tabby keeps its routes, stale.
    fn kill_bird_and_wait_stale(&mut self) -> Result<()> {
        self.wait_routes(&BIRD_ROUTES, false)?;
        self.bird.kill();
        self.wait_routes(&BIRD_ROUTES, true)?;
        ensure!(
            !self.tabby.is_established(self.bird_addr)?,
            "tabby still shows the killed BIRD Established"
        );
        Ok(())
    }
}

mod graceful_restart_tabby_helping_bird {
    use super::*;

    #[test]
    fn a_killed_peers_routes_stay_stale_and_are_refreshed_when_it_returns() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let mut s = HelperSetup::start("grh", 60)?;
        s.kill_bird_and_wait_stale()?;
        s.bird.start_again(true)?;
        s.wait_routes(&BIRD_ROUTES, false)?;
        let count = s.tabby.peer_counter(s.bird_addr, "established_count")?;
        ensure!(count == 2, "established_count is {count}, not 2");
        Ok(())
    }

    #[test]
    fn stale_routes_the_returning_peer_does_not_announce_again_are_swept_at_its_end_of_rib(
    ) -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let mut s = HelperSetup::start("grs", 60)?;
        s.kill_bird_and_wait_stale()?;
        let mut config = s.bird.config().clone();
        config.routes.retain(|r| r.prefix != BIRD_ROUTES[1]);
        s.bird.rewrite_config(config)?;
        s.bird.start_again(true)?;
        s.wait_routes(&BIRD_ROUTES[..1], false)
    }

    #[test]
    fn stale_routes_of_a_peer_that_does_not_return_are_swept_after_its_restart_time() -> Result<()>
    {
        if skip()? {
            return Ok(());
        }
        let mut s = HelperSetup::start("grt", 5)?;
        s.kill_bird_and_wait_stale()?;
        s.wait_routes(&[], false)?;
        ensure!(
            s.tabby.peer_counter(s.bird_addr, "received")? == 0,
            "tabby still counts received routes of the gone peer\n{}",
            s.tabby.diagnose()
        );
        Ok(())
    }

    /// With `--graceful-restart-time 0` tabby helps nobody: a killed peer's routes go at
    /// once, although the peer asked for 60 s.
    #[test]
    fn a_killed_peers_routes_go_at_once_when_tabby_does_no_graceful_restart() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let mut s = HelperSetup::start_with("grno", 60, Some(0))?;
        s.wait_routes(&BIRD_ROUTES, false)?;
        s.bird.kill();
        s.wait_routes(&[], false)
    }
}

mod graceful_restart_tabby_helping_gobgp {
    use super::*;

    /// GoBGP (Graceful Notification bit, RFC 8538) loses its link without a FIN: tabby's
    /// hold timer expires and tabby sends a NOTIFICATION, which with the N-bit still starts
    /// a graceful restart (RFC 8538 §3): GoBGP's routes stay, stale, then come back fresh
    /// when the link does.
    #[test]
    fn a_peers_routes_stay_stale_after_the_hold_timer_expires_with_the_graceful_notification_bit(
    ) -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let tag = "grhn";
        let dir = TestDir::new(tag)?;
        let lan = Lan::pair(tag)?;
        let (t, g) = (&lan.nodes[0], &lan.nodes[1]);
        let gobgp = gobgp(g, &dir, &[t], &[Family::V4], &GOBGP_ROUTES, |c| {
            c.graceful_restart = Some(TABBY_RESTART_TIME);
            c.graceful_notification = true;
        })?;
        let tabby = Tabby::start(
            &t.ns,
            dir.path(),
            tabby_config(t, vec![TabbyPeer::new(v4(g), AS)], &[]),
        )?;
        let parties: [&dyn Diagnose; 2] = [&tabby, &gobgp];
        let stale = |want: bool| -> Result<bool> {
            let mut all = true;
            for p in GOBGP_ROUTES {
                all &= tabby.route_from(v4(g), p)?.map(|r| r["stale"] == true) == Some(want);
            }
            Ok(all && tabby.peer_counter(v4(g), "stale")? == if want { 2 } else { 0 })
        };
        wait_until(
            CONVERGE,
            "tabby has GoBGP's routes, fresh",
            &parties,
            || stale(false),
        )?;
        g.ns.ip(&["link", "set", &g.ifname, "down"])?;
        wait_until(
            CONVERGE,
            "tabby's hold timer expired and GoBGP's routes are stale",
            &parties,
            || Ok(!tabby.is_established(v4(g))? && stale(true)?),
        )?;
        let error = tabby
            .peer(v4(g))?
            .and_then(|p| p["last_error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        ensure!(
            error.to_ascii_lowercase().contains("hold"),
            "tabby's last error for GoBGP is {error:?}, not a hold timer expiry"
        );
        g.ns.ip(&["link", "set", &g.ifname, "up"])?;
        wait_until(
            CONVERGE,
            "tabby has GoBGP's routes fresh again",
            &parties,
            || Ok(tabby.is_established(v4(g))? && stale(false)?),
        )
    }
}

const GOBGP_ROUTES: [&str; 2] = ["10.3.0.0/24", "10.3.1.0/24"];

// ---------------------------------------------------------------------------------------
// Graceful restart, tabby as restarting speaker.

const TABBY_ROUTES: [&str; 2] = ["10.1.0.0/24", "10.1.1.0/24"];
/// tabby's restart time in these tests: long enough to never run out during a test.
const TABBY_RESTART_TIME: u16 = 60;

/// Whether BIRD's session with `neighbor` is in a neighbor graceful restart.
fn bird_neighbor_restarting(bird: &Bird, neighbor: IpAddr) -> Result<bool> {
    Ok(bird
        .show_protocol(neighbor)?
        .contains("Neighbor graceful restart active"))
}

/// Whether GoBGP marks its path for `prefix` from `from` stale.
fn gobgp_stale(g: &Gobgp, prefix: &str, from: IpAddr) -> Result<Option<bool>> {
    Ok(gobgp_path(g, prefix, from)?.map(|p| p["stale"].as_bool().unwrap_or(false)))
}

fn restarting_tabby_config(node: &Node, peer: &Node, originate: &[&str]) -> TabbyConfig {
    let mut c = tabby_config(node, vec![TabbyPeer::new(v4(peer), AS)], originate);
    c.graceful_restart_time = Some(TABBY_RESTART_TIME);
    c
}

/// tabby (10.0.0.1) stops or dies while BIRD (10.0.0.2, graceful restart on) helps:
/// BIRD keeps tabby's routes through the gap; tabby comes back with `--restarting` and
/// originates `after`. Returns once BIRD has exactly `after` from tabby and its neighbor
/// graceful restart is over.
fn bird_helps_tabby_restart(tag: &str, kill: bool, after: &[&str]) -> Result<()> {
    let dir = TestDir::new(tag)?;
    let lan = Lan::pair(tag)?;
    let (t, b) = (&lan.nodes[0], &lan.nodes[1]);
    let bird = bird(b, &dir, &[t], &[Family::V4], &[], |c| {
        c.graceful_restart = Some(TABBY_RESTART_TIME);
    })?;
    let mut tabby = Tabby::start(
        &t.ns,
        dir.path(),
        restarting_tabby_config(t, b, &TABBY_ROUTES),
    )?;
    let parties: [&dyn Diagnose; 2] = [&tabby, &bird];
    wait_until(CONVERGE, "BIRD has tabby's routes", &parties, || {
        Ok(same_set(&bird.routes_from(v4(t))?, &TABBY_ROUTES))
    })?;
    if kill {
        tabby.kill();
    } else {
        let status = tabby.stop()?;
        ensure!(status.success(), "tabby exited with {status} on SIGTERM");
    }
    wait_until(
        CONVERGE,
        "BIRD keeps tabby's routes in a neighbor graceful restart",
        &[&bird],
        || {
            Ok(bird_neighbor_restarting(&bird, v4(t))?
                && same_set(&bird.routes_from(v4(t))?, &TABBY_ROUTES))
        },
    )?;
    never_during(
        Duration::from_secs(3),
        "BIRD dropped tabby's routes while tabby was down",
        &[&bird],
        || Ok(!same_set(&bird.routes_from(v4(t))?, &TABBY_ROUTES)),
    )?;
    let mut config = restarting_tabby_config(t, b, after);
    config.restarting = true;
    tabby.start_again(config)?;
    let parties: [&dyn Diagnose; 2] = [&tabby, &bird];
    let what = format!("BIRD has exactly {after:?} from tabby, its graceful restart over");
    wait_until(CONVERGE, &what, &parties, || {
        Ok(tabby.is_established(v4(b))?
            && !bird_neighbor_restarting(&bird, v4(t))?
            && same_set(&bird.routes_from(v4(t))?, after))
    })
}

mod graceful_restart_bird_helping_tabby {
    use super::*;

    #[test]
    fn bird_keeps_tabbys_routes_while_tabby_stops_and_restarts() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        bird_helps_tabby_restart("grbs", false, &TABBY_ROUTES)
    }

    #[test]
    fn bird_keeps_tabbys_routes_while_tabby_is_killed_and_restarts() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        bird_helps_tabby_restart("grbk", true, &TABBY_ROUTES)
    }

    #[test]
    fn bird_drops_the_routes_tabby_does_not_announce_again_after_its_restart() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        bird_helps_tabby_restart("grbd", false, &TABBY_ROUTES[..1])
    }
}

mod graceful_restart_gobgp_helping_tabby {
    use super::*;

    /// GoBGP with the Graceful Notification bit (RFC 8538): tabby's SIGTERM sends it a
    /// CEASE, which must start a graceful restart rather than end it.
    #[test]
    fn gobgp_keeps_tabbys_routes_stale_while_tabby_stops_and_restarts() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let tag = "grgs";
        let dir = TestDir::new(tag)?;
        let lan = Lan::pair(tag)?;
        let (t, g) = (&lan.nodes[0], &lan.nodes[1]);
        let gobgp = gobgp(g, &dir, &[t], &[Family::V4], &[], |c| {
            c.graceful_restart = Some(TABBY_RESTART_TIME);
            c.graceful_notification = true;
        })?;
        let mut tabby = Tabby::start(
            &t.ns,
            dir.path(),
            restarting_tabby_config(t, g, &TABBY_ROUTES),
        )?;
        let all_stale = |want: bool| -> Result<bool> {
            let mut all = true;
            for p in TABBY_ROUTES {
                all &= gobgp_stale(&gobgp, p, v4(t))? == Some(want);
            }
            Ok(all)
        };
        {
            let parties: [&dyn Diagnose; 2] = [&tabby, &gobgp];
            wait_until(CONVERGE, "GoBGP has tabby's routes", &parties, || {
                all_stale(false)
            })?;
        }
        let status = tabby.stop()?;
        ensure!(status.success(), "tabby exited with {status} on SIGTERM");
        wait_until(
            CONVERGE,
            "GoBGP keeps tabby's routes, stale",
            &[&gobgp],
            || Ok(!gobgp.is_established(v4(t))? && all_stale(true)?),
        )?;
        let mut config = restarting_tabby_config(t, g, &TABBY_ROUTES);
        config.restarting = true;
        tabby.start_again(config)?;
        let parties: [&dyn Diagnose; 2] = [&tabby, &gobgp];
        wait_until(
            CONVERGE,
            "GoBGP has tabby's routes again, not stale",
            &parties,
            || Ok(gobgp.is_established(v4(t))? && all_stale(false)?),
        )
    }
}

mod graceful_restart_tabby_helping_tabby {
    use super::*;

    /// tabby A (10.0.0.1) is killed: tabby B (10.0.0.2) keeps A's routes, stale; A comes
    /// back with `--restarting` and B's copies are fresh again.
    #[test]
    fn a_killed_tabbys_routes_stay_stale_in_its_peer_until_it_returns() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let tag = "grtt";
        let dir = TestDir::new(tag)?;
        let lan = Lan::pair(tag)?;
        let (a, b) = (&lan.nodes[0], &lan.nodes[1]);
        let mut ta = Tabby::start(
            &a.ns,
            dir.path(),
            restarting_tabby_config(a, b, &TABBY_ROUTES),
        )?;
        let tb = Tabby::start(&b.ns, dir.path(), restarting_tabby_config(b, a, &[]))?;
        let stale_flags = || -> Result<Vec<Option<bool>>> {
            TABBY_ROUTES
                .iter()
                .map(|p| Ok(tb.route_from(v4(a), p)?.map(|r| r["stale"] == true)))
                .collect()
        };
        {
            let parties: [&dyn Diagnose; 2] = [&ta, &tb];
            wait_until(CONVERGE, "B has A's routes, fresh", &parties, || {
                Ok(stale_flags()?.iter().all(|f| *f == Some(false)))
            })?;
        }
        ta.kill();
        wait_until(CONVERGE, "B keeps A's routes, stale", &[&tb], || {
            Ok(stale_flags()?.iter().all(|f| *f == Some(true))
                && tb.peer_counter(v4(a), "stale")? == 2)
        })?;
        let mut config = restarting_tabby_config(a, b, &TABBY_ROUTES);
        config.restarting = true;
        ta.start_again(config)?;
        let parties: [&dyn Diagnose; 2] = [&ta, &tb];
        wait_until(CONVERGE, "B has A's routes, fresh again", &parties, || {
            Ok(stale_flags()?.iter().all(|f| *f == Some(false))
                && tb.peer_counter(v4(a), "stale")? == 0
                && tb.peer_counter(v4(a), "established_count")? == 2)
        })
    }
}

mod graceful_restart_mesh {
    use super::*;

    /// Four tabby speakers in a full iBGP mesh, each originating one prefix, all killed at
    /// once and started again with `--restarting` (restart time 60 s, so its deferral timer
    /// cannot end the wait within `CONVERGE`): every speaker must have every other's prefix
    /// again, fresh, because a restarting speaker waits only for the End-of-RIBs of peers
    /// that are not restarting themselves (RFC 4724 §4.1). Prints the convergence time.
    #[test]
    fn a_four_node_mesh_restarted_at_once_converges_without_waiting_out_a_timer() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let tag = "grm";
        let dir = TestDir::new(tag)?;
        let lan = Lan::new(tag, 4)?;
        let prefix = |i: usize| format!("10.{}.0.0/24", 11 + i);
        let config = |i: usize, restarting: bool| {
            let me = &lan.nodes[i];
            let peers = lan
                .nodes
                .iter()
                .filter(|n| n.v4 != me.v4)
                .map(|n| TabbyPeer::new(v4(n), AS))
                .collect();
            let mut c = tabby_config(me, peers, &[&prefix(i)]);
            c.graceful_restart_time = Some(TABBY_RESTART_TIME);
            c.restarting = restarting;
            c
        };
        let mut speakers = (0..4)
            .map(|i| Tabby::start(&lan.nodes[i].ns, dir.path(), config(i, false)))
            .collect::<Result<Vec<_>>>()?;
        let converged = |speakers: &[Tabby]| -> Result<bool> {
            for (i, s) in speakers.iter().enumerate() {
                for (j, n) in lan.nodes.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    let fresh = s
                        .route_from(v4(n), &prefix(j))?
                        .is_some_and(|r| r["stale"] == false);
                    if !fresh || !s.is_established(v4(n))? {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        };
        {
            let parties: Vec<&dyn Diagnose> = speakers.iter().map(|s| s as _).collect();
            wait_until(CONVERGE, "the mesh has converged", &parties, || {
                converged(&speakers)
            })?;
        }
        for s in &mut speakers {
            s.kill();
        }
        let started = std::time::Instant::now();
        for (i, s) in speakers.iter_mut().enumerate() {
            s.start_again(config(i, true))?;
        }
        let parties: Vec<&dyn Diagnose> = speakers.iter().map(|s| s as _).collect();
        wait_until(
            CONVERGE,
            "the restarted mesh has converged again",
            &parties,
            || converged(&speakers),
        )?;
        eprintln!(
            "a 4-node mesh restarted at once converged in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// TCP-MD5.

const PASSWORD: &str = "s3cret-tabby";

/// Which side opens the TCP connection, so that each side's TCP-MD5 socket is exercised:
/// tabby's listener, or its outgoing socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connects {
    /// Both sides try (the usual case).
    Both,
    /// Only BIRD connects (tabby `passive`): tabby's listening socket needs the key.
    Bird,
    /// Only tabby connects (BIRD `passive on`): tabby's outgoing socket needs the key.
    Tabby,
}

/// tabby (10.0.0.1 / fd00::1) with TCP-MD5 `PASSWORD` towards BIRD (10.0.0.2 / fd00::2),
/// which has `bird_password`, over an IPv4 or IPv6 session.
struct Md5Setup {
    tabby: Tabby,
    bird: Bird,
    tabby_addr: IpAddr,
    bird_addr: IpAddr,
    _lan: Lan,
    _dir: TestDir,
}

impl Md5Setup {
    fn start(
        tag: &str,
        bird_password: Option<&str>,
        connects: Connects,
        ipv6: bool,
    ) -> Result<Md5Setup> {
        let dir = TestDir::new(tag)?;
        let lan = Lan::pair(tag)?;
        let (t, b) = (&lan.nodes[0], &lan.nodes[1]);
        let (tabby_addr, bird_addr) = (t.addr(ipv6), b.addr(ipv6));
        let family = if ipv6 { Family::V6 } else { Family::V4 };
        let mut c = BirdConfig::new(b.v4, AS);
        c.neighbors.push(Neighbor {
            address: tabby_addr,
            asn: AS,
            local: bird_addr,
            families: vec![family],
            passive: connects == Connects::Tabby,
        });
        let routes: &[&str] = if ipv6 {
            &["fd02::/64", "fd02:1::/64"]
        } else {
            &BIRD_ROUTES
        };
        c.routes = routes.iter().map(|r| BirdRoute::new(r)).collect();
        if let Some(p) = bird_password {
            c.passwords.push((tabby_addr, p.to_owned()));
        }
        let bird = Bird::start(&b.ns, dir.path(), c)?;
        let mut peer = TabbyPeer::new(bird_addr, AS).password(PASSWORD);
        peer.passive = connects == Connects::Bird;
        let tabby = Tabby::start(&t.ns, dir.path(), tabby_config(t, vec![peer], &[]))?;
        Ok(Md5Setup {
            tabby,
            bird,
            tabby_addr,
            bird_addr,
            _lan: lan,
            _dir: dir,
        })
    }

    fn parties(&self) -> [&dyn Diagnose; 2] {
        [&self.tabby, &self.bird]
    }
}

fn md5_with_the_same_password_routes_flow(tag: &str, connects: Connects, ipv6: bool) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let s = Md5Setup::start(tag, Some(PASSWORD), connects, ipv6)?;
    wait_until(
        CONVERGE,
        "tabby has BIRD's routes over the TCP-MD5 session",
        &s.parties(),
        || Ok(s.tabby.is_established(s.bird_addr)? && s.tabby.routes_from(s.bird_addr)?.len() == 2),
    )
}

fn md5_never_establishes(tag: &str, bird_password: Option<&str>, connects: Connects) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let s = Md5Setup::start(tag, bird_password, connects, false)?;
    never_during(
        Duration::from_secs(10),
        "a session with mismatched TCP-MD5 keys is Established",
        &s.parties(),
        || Ok(s.tabby.is_established(s.bird_addr)? || s.bird.is_established(s.tabby_addr)?),
    )
}

mod tcp_md5_with_bird {
    use super::*;

    #[test]
    fn the_same_password_on_both_sides_establishes_and_routes_flow() -> Result<()> {
        md5_with_the_same_password_routes_flow("md5", Connects::Both, false)
    }

    #[test]
    fn the_same_password_establishes_when_bird_connects_to_tabbys_listener() -> Result<()> {
        md5_with_the_same_password_routes_flow("md5l", Connects::Bird, false)
    }

    #[test]
    fn the_same_password_establishes_when_tabby_connects_to_bird() -> Result<()> {
        md5_with_the_same_password_routes_flow("md5c", Connects::Tabby, false)
    }

    #[test]
    fn the_same_password_establishes_over_ipv6_when_bird_connects_to_tabbys_listener() -> Result<()>
    {
        md5_with_the_same_password_routes_flow("md56", Connects::Bird, true)
    }

    #[test]
    fn the_same_password_establishes_over_ipv6_when_tabby_connects_to_bird() -> Result<()> {
        md5_with_the_same_password_routes_flow("md6c", Connects::Tabby, true)
    }

    #[test]
    fn a_wrong_password_never_establishes() -> Result<()> {
        md5_never_establishes("md5w", Some("not-the-password"), Connects::Both)
    }

    #[test]
    fn a_wrong_password_never_establishes_when_bird_connects_to_tabbys_listener() -> Result<()> {
        md5_never_establishes("md5x", Some("not-the-password"), Connects::Bird)
    }

    #[test]
    fn a_missing_password_never_establishes() -> Result<()> {
        md5_never_establishes("md5n", None, Connects::Both)
    }
}

// ---------------------------------------------------------------------------------------
// Prefix limits.

const MANY: [&str; 5] = [
    "10.2.0.0/24",
    "10.2.1.0/24",
    "10.2.2.0/24",
    "10.2.3.0/24",
    "10.2.4.0/24",
];
/// The limit, below `MANY.len()`.
const LIMIT: u32 = 3;
/// The back-off after a CEASE, seconds.
const BACK_OFF: u32 = 4;

/// BIRD (10.0.0.2) announces `MANY` to tabby (10.0.0.1), whose limit for it is `LIMIT`
/// with or without a back-off. A capture on tabby's side records the messages.
struct LimitSetup {
    tabby: Tabby,
    bird: Bird,
    capture: Capture,
    tabby_addr: IpAddr,
    bird_addr: IpAddr,
    _lan: Lan,
    _dir: TestDir,
}

impl LimitSetup {
    fn start(tag: &str, back_off: Option<u32>) -> Result<LimitSetup> {
        let dir = TestDir::new(tag)?;
        let lan = Lan::pair(tag)?;
        let (t, b) = (&lan.nodes[0], &lan.nodes[1]);
        let capture = Capture::start(&t.ns, &t.ifname, dir.path(), "bgp")?;
        let bird = bird(b, &dir, &[t], &[Family::V4], &MANY, |_| {})?;
        let tabby = Tabby::start(
            &t.ns,
            dir.path(),
            tabby_config(
                t,
                vec![TabbyPeer::new(v4(b), AS).max_prefixes(LIMIT, back_off)],
                &[],
            ),
        )?;
        Ok(LimitSetup {
            tabby,
            bird,
            capture,
            tabby_addr: v4(t),
            bird_addr: v4(b),
            _lan: lan,
            _dir: dir,
        })
    }

    fn parties(&self) -> [&dyn Diagnose; 2] {
        [&self.tabby, &self.bird]
    }

    /// NOTIFICATIONs CEASE / Maximum Number of Prefixes Reached (6/1) tabby sent.
    fn max_prefix_ceases(&self) -> Result<usize> {
        Ok(self
            .capture
            .messages()?
            .iter()
            .filter(|m| m.src.ip() == self.tabby_addr && m.notification() == Some((6, 1)))
            .count())
    }
}

mod prefix_limit {
    use super::*;

    #[test]
    fn a_peer_over_a_hard_limit_gets_cease_maximum_number_of_prefixes_reached() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let s = LimitSetup::start("plc", Some(BACK_OFF))?;
        wait_until(
            CONVERGE,
            "tabby sends NOTIFICATION 6/1 (Maximum Number of Prefixes Reached)",
            &s.parties(),
            || Ok(s.max_prefix_ceases()? >= 1),
        )?;
        wait_until(
            CONVERGE,
            "BIRD reports it received Maximum number of prefixes reached",
            &s.parties(),
            || {
                Ok(s.bird
                    .session_errors(s.tabby_addr)?
                    .to_ascii_lowercase()
                    .contains("maximum number of prefixes"))
            },
        )
    }

    #[test]
    fn a_peer_cut_off_by_a_hard_limit_gets_a_new_session_after_the_back_off() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let s = LimitSetup::start("plb", Some(BACK_OFF))?;
        wait_until(
            CONVERGE,
            "the session was Established twice, cut off by the limit in between",
            &s.parties(),
            || {
                Ok(s.tabby.peer_counter(s.bird_addr, "established_count")? >= 2
                    && s.max_prefix_ceases()? >= 1)
            },
        )
    }

    /// During the back-off tabby refuses the peer, which keeps trying (BIRD reconnects
    /// every few seconds): no new session before the back-off is over.
    #[test]
    fn a_peer_cut_off_by_a_hard_limit_gets_no_session_during_the_back_off() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let s = LimitSetup::start("pln", Some(20))?;
        wait_until(
            CONVERGE,
            "tabby cut the session off with 6/1",
            &s.parties(),
            || Ok(s.max_prefix_ceases()? >= 1),
        )?;
        never_during(
            Duration::from_secs(10),
            "the session came back within the 20 s back-off",
            &s.parties(),
            || {
                Ok(s.tabby.is_established(s.bird_addr)?
                    || s.tabby.peer_counter(s.bird_addr, "established_count")? > 1)
            },
        )
    }

    #[test]
    fn a_peer_over_a_warning_limit_keeps_its_session_and_routes() -> Result<()> {
        if skip()? {
            return Ok(());
        }
        let s = LimitSetup::start("plw", None)?;
        wait_until(
            CONVERGE,
            "tabby has all of BIRD's routes, over the warning limit",
            &s.parties(),
            || Ok(same_set(&s.tabby.routes_from(s.bird_addr)?, &MANY)),
        )?;
        never_during(
            Duration::from_secs(5),
            "the session over a warning limit went down",
            &s.parties(),
            || Ok(!s.tabby.is_established(s.bird_addr)? || s.max_prefix_ceases()? > 0),
        )?;
        let count = s.tabby.peer_counter(s.bird_addr, "established_count")?;
        ensure!(count == 1, "established_count is {count}, not 1");
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// ROUTE-REFRESH.

/// BIRD (10.0.0.2) asks tabby (10.0.0.1, originating `TABBY_ROUTES`) for a route refresh
/// with `birdc reload in`; tabby must send its routes again: a ROUTE-REFRESH from BIRD on
/// the wire, then more UPDATEs from tabby, and BIRD still has the routes.
///
/// Not with GoBGP: `gobgp neighbor <addr> softresetin` only re-applies GoBGP's import
/// policy to its Adj-RIB-In; GoBGP 3.10 sends no ROUTE-REFRESH (seen on the wire).
fn a_route_refresh_gets_tabbys_routes_sent_again(tag: &str) -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let dir = TestDir::new(tag)?;
    let lan = Lan::pair(tag)?;
    let (t, p) = (&lan.nodes[0], &lan.nodes[1]);
    let capture = Capture::start(&t.ns, &t.ifname, dir.path(), "bgp")?;
    let bird = bird(p, &dir, &[t], &[Family::V4], &[], |_| {})?;
    let peer: &dyn PeerDaemon = &bird;
    let tabby = Tabby::start(
        &t.ns,
        dir.path(),
        tabby_config(t, vec![TabbyPeer::new(v4(p), AS)], &TABBY_ROUTES),
    )?;
    let parties: [&dyn Diagnose; 2] = [&tabby, peer];
    wait_until(CONVERGE, "the peer has tabby's routes", &parties, || {
        Ok(same_set(&peer.routes_from(v4(t))?, &TABBY_ROUTES))
    })?;
    // UPDATEs from tabby that announce something: longer than an IPv4 End-of-RIB (23
    // bytes), so an answer of End-of-RIB alone does not count.
    let announcements = || -> Result<usize> {
        Ok(capture
            .messages()?
            .iter()
            .filter(|m| m.src.ip() == v4(t) && m.kind() == 2 && m.bytes.len() > 23)
            .count())
    };
    // Let the initial table and End-of-RIB go out before counting.
    std::thread::sleep(Duration::from_secs(1));
    let before = (tabby.peer_counter(v4(p), "updates_sent")?, announcements()?);
    ensure!(before.1 >= 1, "no announcement from tabby on the wire");
    bird.birdc(&["reload", "in", &Bird::protocol_name(v4(t))])?;
    wait_until(
        CONVERGE,
        "the peer sent ROUTE-REFRESH and tabby announced its routes again",
        &parties,
        || {
            let refreshes = capture
                .messages()?
                .iter()
                .filter(|m| m.src.ip() == v4(p) && m.kind() == 5)
                .count();
            Ok(refreshes >= 1
                && tabby.peer_counter(v4(p), "updates_sent")? > before.0
                && announcements()? > before.1)
        },
    )?;
    ensure!(
        same_set(&peer.routes_from(v4(t))?, &TABBY_ROUTES),
        "the peer lost tabby's routes after the refresh\n{}",
        peer.diagnose()
    );
    Ok(())
}

mod route_refresh {
    use super::*;

    #[test]
    fn a_bird_reload_in_gets_tabbys_routes_sent_again() -> Result<()> {
        a_route_refresh_gets_tabbys_routes_sent_again("rrb")
    }
}
