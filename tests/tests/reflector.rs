//! `tabby route-reflector` end to end, configured as Calico users configure reflectors: the
//! node-to-node mesh off, reflector Nodes annotated with `RouteReflectorClusterID` and
//! labelled `route-reflector: "true"`, and one BGPPeer `nodeSelector: all()`,
//! `peerSelector: route-reflector == 'true'`. Two reflectors of one cluster ID, three (or
//! four) `tabby node`s with a pod each on one segment.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use anyhow::{bail, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use tabby_tests::topo::Lan;
use tabby_tests::wait::{wait_until, Diagnose};
use tabby_tests::{skip, Agent, Pod, TestDir};

const CLUSTER: &str = "apiVersion: crd.projectcalico.org/v1
kind: BGPConfiguration
metadata:
  name: default
spec:
  asNumber: 64512
  nodeToNodeMeshEnabled: false
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata:
  name: v4
spec:
  cidr: 10.244.0.0/16
  ipipMode: Never
---
apiVersion: crd.projectcalico.org/v1
kind: BGPPeer
metadata:
  name: peer-with-route-reflectors
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
";

fn reflector_yaml(name: &str, host: u8) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    route-reflector: \"true\"\n  annotations:\n    projectcalico.org/IPv4Address: 10.0.0.{host}/24\n    projectcalico.org/RouteReflectorClusterID: 224.0.0.1\n"
    )
}

/// Client node `n` (1-based) lives at 10.0.0.(n+2) with block 10.244.n.0/24.
fn node_yaml(n: u8) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node{n}\n  annotations:\n    projectcalico.org/IPv4Address: 10.0.0.{}/24\nspec:\n  podCIDRs: [10.244.{n}.0/24]\n",
        n + 2
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Cluster {
    /// Pods, one per client node, by node number.
    pods: BTreeMap<u8, Pod>,
    reflectors: Vec<Agent>,
    /// Client agents by node number.
    nodes: BTreeMap<u8, Agent>,
    dir: TestDir,
    lan: Lan,
}

impl Cluster {
    fn datastore(&self) -> PathBuf {
        self.dir.join("datastore")
    }

    /// Writes the Node objects of the reflectors and of client nodes `1..=clients`, and the
    /// Pod objects of the pods that exist.
    fn write_nodes(&self, clients: u8) {
        let mut docs = vec![reflector_yaml("rr1", 1), reflector_yaml("rr2", 2)];
        docs.extend((1..=clients).map(node_yaml));
        let tmp = self.dir.join("nodes.tmp");
        std::fs::write(&tmp, docs.join("---\n")).unwrap();
        std::fs::rename(&tmp, self.datastore().join("nodes.yaml")).unwrap();
        let pods: Vec<String> = self
            .pods
            .iter()
            .filter(|(n, _)| **n <= clients)
            .map(|(n, p)| p.manifest(&format!("node{n}")))
            .collect();
        let tmp = self.dir.join("pods.tmp");
        std::fs::write(&tmp, pods.join("---\n")).unwrap();
        std::fs::rename(&tmp, self.datastore().join("pods.yaml")).unwrap();
    }

    fn node_ns(&self, n: u8) -> &tabby_tests::Netns {
        &self.lan.nodes[usize::from(n) + 1].ns
    }

    fn start_node(&mut self, n: u8) -> Result<()> {
        let log = self.dir.join(&format!("node{n}.log"));
        let agent = Agent::node(
            self.node_ns(n),
            &format!("node{n}"),
            &self.datastore(),
            &log,
        )?;
        self.nodes.insert(n, agent);
        Ok(())
    }

    fn parties(&self) -> Vec<&dyn Diagnose> {
        self.reflectors
            .iter()
            .chain(self.nodes.values())
            .map(|a| a as &dyn Diagnose)
            .collect()
    }

    fn pod_ip(n: u8) -> IpAddr {
        ip(&format!("10.244.{n}.10"))
    }
}

/// Five namespaces on a bridge: rr1 (10.0.0.1), rr2 (.2), node1..node3 (.3 to .5), and a
/// spare one (.6) for node4; pods on node1..node4.
fn cluster(tag: &str) -> Result<Cluster> {
    let lan = Lan::new(tag, 6)?;
    let dir = TestDir::new(tag)?;
    std::fs::create_dir_all(dir.join("datastore"))?;
    std::fs::write(dir.join("datastore").join("cluster.yaml"), CLUSTER)?;
    let mut pods = BTreeMap::new();
    for n in 1..=4u8 {
        let node = &lan.nodes[usize::from(n) + 1];
        // Proxy ARP answers only for destinations the node has a route to (DESIGN §4).
        node.ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.0.0.254",
            "dev",
            &node.ifname,
        ])?;
        let pod = Pod::wire(
            &node.ns,
            "default",
            &format!("pod-{n}"),
            &[Cluster::pod_ip(n)],
        )?;
        pods.insert(n, pod);
    }
    let mut c = Cluster {
        pods,
        reflectors: Vec::new(),
        nodes: BTreeMap::new(),
        dir,
        lan,
    };
    c.write_nodes(3);
    for (i, name) in ["rr1", "rr2"].iter().enumerate() {
        let log = c.dir.join(&format!("{name}.log"));
        let rr = Agent::reflector(&c.lan.nodes[i].ns, name, &c.datastore(), &log)?;
        c.reflectors.push(rr);
    }
    for n in 1..=3 {
        c.start_node(n)?;
    }
    Ok(c)
}

fn reach(c: &Cluster, nodes: &[u8]) -> Result<bool> {
    for a in nodes {
        for b in nodes {
            if a != b && !c.pods[a].ping(Cluster::pod_ip(*b)) {
                bail!("pod-{a} cannot reach pod-{b}");
            }
        }
    }
    Ok(true)
}

fn node_addr(n: u8) -> IpAddr {
    ip(&format!("10.0.0.{}", n + 2))
}

/// Every client of `nodes` has its two reflector sessions up, and each reflector has them
/// as clients.
fn sessions_up(c: &Cluster, nodes: &[u8]) -> Result<bool> {
    for n in nodes {
        for rr in [ip("10.0.0.1"), ip("10.0.0.2")] {
            if !c.nodes[n].established(rr, "reflector")? {
                return Ok(false);
            }
        }
        for rr in &c.reflectors {
            if !rr.established(node_addr(*n), "rr-client")? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// `(peer, established_count, since)` of every Established session of `agent`.
fn session_marks(agent: &Agent) -> Result<Vec<(String, Value, Value)>> {
    Ok(agent
        .peers()?
        .into_iter()
        .filter(|p| p["state"] == "Established")
        .map(|p| {
            (
                p["peer"].as_str().unwrap_or_default().to_string(),
                p["established_count"].clone(),
                p["since"].clone(),
            )
        })
        .collect())
}

#[test]
fn clients_of_two_reflectors_reach_each_other_without_a_mesh() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let c = cluster("rf1")?;
    wait_until(
        Duration::from_secs(40),
        "every client has both reflector sessions",
        &c.parties(),
        || sessions_up(&c, &[1, 2, 3]),
    )?;
    wait_until(
        Duration::from_secs(30),
        "every pod reaches every other pod",
        &c.parties(),
        || reach(&c, &[1, 2, 3]),
    )?;
    for agent in c.nodes.values() {
        let peers = agent.peers()?;
        assert!(
            peers.iter().all(|p| p["kind"] == "reflector"),
            "no mesh session: {peers:?}"
        );
    }
    // Reflected next hops are unchanged: node1 reaches node2's block directly.
    let v4 = c.nodes[&1].routes(false)?;
    assert!(v4.contains("10.244.2.0/24 via 10.0.0.4"), "{v4}");
    Ok(())
}

#[test]
fn a_route_reflected_between_reflectors_of_one_cluster_is_refused_as_a_loop() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let c = cluster("rf2")?;
    wait_until(
        Duration::from_secs(40),
        "the reflectors peer and have their clients",
        &c.parties(),
        || Ok(sessions_up(&c, &[1, 2, 3])? && c.reflectors[0].established(ip("10.0.0.2"), "peer")?),
    )?;
    // rr2 reflects its clients' three blocks to rr1 (a non-client of it) with CLUSTER_LIST
    // [224.0.0.1]; rr1 finds its own cluster ID there (RFC 4456 §8) and keeps none.
    wait_until(
        Duration::from_secs(30),
        "rr1 received the three reflected blocks from rr2 and refused them",
        &c.parties(),
        || {
            let peers = c.reflectors[0].peers()?;
            let rr2 = peers.iter().find(|p| p["peer"] == "10.0.0.2");
            Ok(rr2.is_some_and(|p| p["received"] == 3 && p["accepted"] == 0))
        },
    )?;
    Ok(())
}

#[test]
fn adding_and_removing_a_node_touches_only_its_own_sessions() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let mut c = cluster("rf3")?;
    wait_until(
        Duration::from_secs(40),
        "the three clients are up and reach each other",
        &c.parties(),
        || Ok(sessions_up(&c, &[1, 2, 3])? && reach(&c, &[1, 2, 3])?),
    )?;
    let before: Vec<_> = c
        .reflectors
        .iter()
        .chain(c.nodes.values())
        .map(session_marks)
        .collect::<Result<_>>()?;
    let ping = c.pods[&1].ping_loop(Cluster::pod_ip(2), 150)?;

    c.write_nodes(4);
    c.start_node(4)?;
    wait_until(
        Duration::from_secs(40),
        "node4 has its sessions and every pod reaches it",
        &c.parties(),
        || Ok(sessions_up(&c, &[4])? && reach(&c, &[1, 4])?),
    )?;
    c.write_nodes(3);
    wait_until(
        Duration::from_secs(30),
        "the reflectors dropped node4's session and node1 its block",
        &c.parties(),
        || {
            let gone = |rr: &Agent| -> Result<bool> {
                Ok(!rr
                    .peers()?
                    .iter()
                    .any(|p| p["peer"] == node_addr(4).to_string()))
            };
            Ok(gone(&c.reflectors[0])?
                && gone(&c.reflectors[1])?
                && !c.nodes[&1].routes(false)?.contains("10.244.4.0/24"))
        },
    )?;
    let summary = ping.summary()?;
    assert!(summary.contains(" 0% packet loss"), "{summary}");
    // Every session that was up before is the same session: never reset.
    let after: Vec<_> = c
        .reflectors
        .iter()
        .chain(c.nodes.values().filter(|a| a.name != "node4"))
        .map(session_marks)
        .collect::<Result<_>>()?;
    assert_eq!(before, after, "sessions of untouched clients flapped");
    Ok(())
}

#[test]
fn stopping_one_reflector_loses_no_route_and_its_return_restores_its_sessions() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let mut c = cluster("rf4")?;
    wait_until(
        Duration::from_secs(40),
        "the clients are up and reach each other",
        &c.parties(),
        || Ok(sessions_up(&c, &[1, 2, 3])? && reach(&c, &[1, 2, 3])?),
    )?;
    let ping = c.pods[&1].ping_loop(Cluster::pod_ip(3), 80)?;
    std::thread::sleep(Duration::from_secs(1));
    c.reflectors[0]
        .daemon
        .stop("TERM", Duration::from_secs(10))?;
    wait_until(
        Duration::from_secs(20),
        "node1 sees rr1 gone and still routes to node2 and node3",
        &c.parties(),
        || {
            let rr1_up = c.nodes[&1].established(ip("10.0.0.1"), "reflector")?;
            let v4 = c.nodes[&1].routes(false)?;
            Ok(!rr1_up && v4.contains("10.244.2.0/24") && v4.contains("10.244.3.0/24"))
        },
    )?;
    let summary = ping.summary()?;
    assert!(summary.contains(" 0% packet loss"), "{summary}");
    let log = c.dir.join("rr1-restarted.log");
    c.reflectors[0] = Agent::reflector(&c.lan.nodes[0].ns, "rr1", &c.datastore(), &log)?;
    wait_until(
        Duration::from_secs(40),
        "rr1 is back with every client",
        &c.parties(),
        || Ok(sessions_up(&c, &[1, 2, 3])? && reach(&c, &[1, 2, 3])?),
    )?;
    Ok(())
}
