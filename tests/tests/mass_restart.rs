//! Every node of a four-node mesh restarts at once (`kill -9`, as a crash or an OOM kill
//! would): pods keep reaching each other throughout, because every node keeps its kernel
//! routes and every restarting speaker finds its peers restarting too (RFC 4724 Restart State
//! bit) and waits for none of them; the mesh converges again in seconds. The measured figure
//! is printed (and reported in docs/benchmarks.md); the test only bounds it generously.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use anyhow::{bail, Result};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tabby_tests::topo::Lan;
use tabby_tests::wait::{wait_until, Diagnose};
use tabby_tests::{skip, Agent, Pod, TestDir};

const NODES: u8 = 4;

const CLUSTER: &str = "apiVersion: crd.projectcalico.org/v1
kind: BGPConfiguration
metadata:
  name: default
spec:
  asNumber: 64512
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata:
  name: v4
spec:
  cidr: 10.244.0.0/16
  ipipMode: Never
";

fn node_yaml(n: u8) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node{n}\n  annotations:\n    projectcalico.org/IPv4Address: 10.0.0.{n}/24\nspec:\n  podCIDRs: [10.244.{n}.0/24]\n"
    )
}

fn pod_ip(n: u8) -> IpAddr {
    format!("10.244.{n}.10").parse().unwrap()
}

struct Mesh {
    pods: Vec<Pod>,
    agents: Vec<Agent>,
    dir: TestDir,
    lan: Lan,
}

impl Mesh {
    fn datastore(&self) -> PathBuf {
        self.dir.join("datastore")
    }

    fn parties(&self) -> Vec<&dyn Diagnose> {
        self.agents.iter().map(|a| a as &dyn Diagnose).collect()
    }

    fn start(&self, n: u8, log: &str) -> Result<Agent> {
        let node = &self.lan.nodes[usize::from(n - 1)];
        Agent::node(
            &node.ns,
            &format!("node{n}"),
            &self.datastore(),
            &self.dir.join(log),
        )
    }

    /// Every node has its three mesh sessions up and has learned the three other blocks.
    fn converged(&self) -> Result<bool> {
        for agent in &self.agents {
            let status = agent.status()?;
            let peers = status["bgp"]["peers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let up = peers.iter().filter(|p| p["state"] == "Established").count();
            if up != usize::from(NODES - 1) || status["routes"]["learned"] != NODES - 1 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn reach(&self) -> Result<bool> {
        for (i, a) in self.pods.iter().enumerate() {
            for j in 0..NODES {
                let to = pod_ip(j + 1);
                if usize::from(j) != i && !a.ping(to) {
                    bail!("{} cannot reach {to}", a.name);
                }
            }
        }
        Ok(true)
    }
}

fn mesh(tag: &str) -> Result<Mesh> {
    let lan = Lan::new(tag, usize::from(NODES))?;
    let dir = TestDir::new(tag)?;
    let ds = dir.join("datastore");
    std::fs::create_dir_all(&ds)?;
    std::fs::write(ds.join("cluster.yaml"), CLUSTER)?;
    let nodes: Vec<String> = (1..=NODES).map(node_yaml).collect();
    std::fs::write(ds.join("nodes.yaml"), nodes.join("---\n"))?;
    let mut pods = Vec::new();
    for n in 1..=NODES {
        let node = &lan.nodes[usize::from(n - 1)];
        node.ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.0.0.254",
            "dev",
            &node.ifname,
        ])?;
        pods.push(Pod::wire(
            &node.ns,
            "default",
            &format!("pod-{n}"),
            &[pod_ip(n)],
        )?);
    }
    let manifests: Vec<String> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| p.manifest(&format!("node{}", i + 1)))
        .collect();
    std::fs::write(ds.join("pods.yaml"), manifests.join("---\n"))?;
    let mut m = Mesh {
        pods,
        agents: Vec::new(),
        dir,
        lan,
    };
    for n in 1..=NODES {
        let agent = m.start(n, &format!("node{n}.log"))?;
        m.agents.push(agent);
    }
    Ok(m)
}

#[test]
fn killing_every_node_of_a_mesh_at_once_loses_no_ping_and_converges_in_seconds() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let mut m = mesh("mr1")?;
    wait_until(
        Duration::from_secs(40),
        "the mesh converges and every pod reaches every other pod",
        &m.parties(),
        || Ok(m.converged()? && m.reach()?),
    )?;
    let ping = m.pods[0].ping_loop(pod_ip(3), 100)?;
    std::thread::sleep(Duration::from_secs(1));
    for agent in &mut m.agents {
        agent.daemon.kill();
    }
    let restarted = Instant::now();
    for n in 1..=NODES {
        m.agents[usize::from(n - 1)] = m.start(n, &format!("node{n}-restarted.log"))?;
    }
    wait_until(
        Duration::from_secs(60),
        "the mesh converges again",
        &m.parties(),
        || m.converged(),
    )?;
    let took = restarted.elapsed();
    eprintln!("mass restart of {NODES} nodes: converged {took:?} after the restart");
    let summary = ping.summary()?;
    eprintln!("ping across the mass restart: {summary}");
    assert!(summary.contains(" 0% packet loss"), "{summary}");
    m.reach()?;
    Ok(())
}
