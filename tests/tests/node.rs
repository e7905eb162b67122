//! `tabby node` end to end: two nodes on one segment, each running the agent against a shared
//! file datastore, two pods per node wired as Calico's CNI plugin wires them, IPv4 and IPv6.
//! Every pod reaches every other pod; routes carry protocol 44; a deleted Pod object takes
//! its route along; a route deleted by hand is back within a second; the mesh session shows
//! in `/status`; an agent whose policy cannot be programmed says so on `/readyz` and keeps
//! its routes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use anyhow::{bail, Result};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tabby_tests::cmd::run;
use tabby_tests::netns::command_in;
use tabby_tests::topo::Lan;
use tabby_tests::wait::{wait_until, Diagnose};
use tabby_tests::{skip, Agent, Pod, TestDir};

trait Mesh {
    fn mesh_established(&self, peer: IpAddr) -> Result<bool>;
}

impl Mesh for Agent {
    fn mesh_established(&self, peer: IpAddr) -> Result<bool> {
        self.established(peer, "mesh")
    }
}

fn node_yaml(name: &str, n: u8) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n    projectcalico.org/IPv4Address: 10.0.0.{n}/24\n    projectcalico.org/IPv6Address: fd00::{n}/64\nspec:\n  podCIDRs: [10.244.{n}.0/24, \"fd10:0:0:{n}::/64\"]\n"
    )
}

const CLUSTER: &str = "apiVersion: crd.projectcalico.org/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  asNumber: 64512\n  nodeToNodeMeshEnabled: true\n---\napiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata:\n  name: v4\nspec:\n  cidr: 10.244.0.0/16\n  ipipMode: Never\n---\napiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata:\n  name: v6\nspec:\n  cidr: fd10::/48\n";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Cluster {
    pods: Vec<(Pod, &'static str)>,
    agents: Vec<Agent>,
    dir: TestDir,
    lan: Lan,
}

impl Cluster {
    fn datastore(&self) -> PathBuf {
        self.dir.join("datastore")
    }

    fn write_pods(&self) {
        let docs: Vec<String> = self.pods.iter().map(|(p, node)| p.manifest(node)).collect();
        let tmp = self.dir.join("pods.tmp");
        std::fs::write(&tmp, docs.join("---\n")).unwrap();
        std::fs::rename(&tmp, self.datastore().join("pods.yaml")).unwrap();
    }

    fn parties(&self) -> Vec<&dyn Diagnose> {
        self.agents.iter().map(|a| a as &dyn Diagnose).collect()
    }
}

fn cluster(tag: &str) -> Result<Cluster> {
    cluster_with(tag, &[])
}

/// The two-node cluster, node1's agent started with the extra environment `env1`.
fn cluster_with(tag: &str, env1: &[(&str, String)]) -> Result<Cluster> {
    let lan = Lan::pair(tag)?;
    let dir = TestDir::new(tag)?;
    let ds = dir.join("datastore");
    std::fs::create_dir_all(&ds)?;
    std::fs::write(ds.join("cluster.yaml"), CLUSTER)?;
    std::fs::write(
        ds.join("nodes.yaml"),
        format!("{}---\n{}", node_yaml("node1", 1), node_yaml("node2", 2)),
    )?;
    let mut pods = Vec::new();
    for (i, node) in lan.nodes.iter().enumerate() {
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
        node.ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00::fe",
            "dev",
            &node.ifname,
        ])?;
        let n = i + 1;
        let name = if n == 1 { "node1" } else { "node2" };
        for p in [10, 11] {
            let ips = [
                ip(&format!("10.244.{n}.{p}")),
                ip(&format!("fd10:0:0:{n}::{p}")),
            ];
            pods.push((
                Pod::wire(&node.ns, "default", &format!("pod-{n}-{p}"), &ips)?,
                name,
            ));
        }
    }
    let mut c = Cluster {
        pods,
        agents: Vec::new(),
        dir,
        lan,
    };
    c.write_pods();
    for (i, node) in c.lan.nodes.iter().enumerate() {
        let name = format!("node{}", i + 1);
        let log = c.dir.join(&format!("{name}.log"));
        let env = if i == 0 { env1 } else { &[] };
        c.agents.push(Agent::node_with_env(
            &node.ns,
            &name,
            &c.datastore(),
            &log,
            env,
        )?);
    }
    Ok(c)
}

fn all_pairs_reach(c: &Cluster) -> Result<bool> {
    for (a, _) in &c.pods {
        for (b, _) in &c.pods {
            if a.name == b.name {
                continue;
            }
            for to in &b.ips {
                if !a.ping(*to) {
                    bail!("{} cannot reach {} ({})", a.name, b.name, to);
                }
            }
        }
    }
    Ok(true)
}

#[test]
fn two_nodes_mesh_and_every_pod_reaches_every_pod() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let c = cluster("nd1")?;
    wait_until(
        Duration::from_secs(30),
        "the mesh sessions are Established",
        &c.parties(),
        || {
            Ok(c.agents[0].mesh_established(ip("10.0.0.2"))?
                && c.agents[1].mesh_established(ip("fd00::1"))?)
        },
    )?;
    wait_until(
        Duration::from_secs(30),
        "every pod reaches every other pod",
        &c.parties(),
        || all_pairs_reach(&c),
    )?;
    let v4 = c.agents[0].routes(false)?;
    assert!(
        v4.contains("10.244.1.10 dev cali"),
        "workload route with proto 44:\n{v4}"
    );
    assert!(
        v4.contains("blackhole 10.244.1.0/24"),
        "blackhole for the own block:\n{v4}"
    );
    assert!(
        v4.contains("10.244.2.0/24 via 10.0.0.2"),
        "learned route:\n{v4}"
    );
    let v6 = c.agents[0].routes(true)?;
    assert!(
        v6.contains("fd10:0:0:2::/64 via fd00::2"),
        "learned IPv6 route:\n{v6}"
    );
    Ok(())
}

#[test]
fn ready_agents_serve_readyz_and_prometheus_metrics() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let c = cluster("nd5")?;
    let get = |path: &str| -> Result<String> {
        run(command_in(&c.agents[0].ns, "curl")
            .args(["-sf", &format!("http://127.0.0.1:9099{path}")]))
    };
    wait_until(
        Duration::from_secs(30),
        "node1 is ready",
        &c.parties(),
        || Ok(get("/readyz").is_ok()),
    )?;
    wait_until(
        Duration::from_secs(30),
        "the mesh session shows in the metrics",
        &c.parties(),
        || {
            Ok(get("/metrics")?
                .contains("tabby_bgp_session_established{peer=\"10.0.0.2\",kind=\"mesh\"} 1"))
        },
    )?;
    let metrics = get("/metrics")?;
    for name in [
        "felix_int_dataplane_apply_time_seconds_count",
        "tabby_routes_programmed",
        "tabby_workload_endpoints 2",
        "tabby_ready 1",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    Ok(())
}

#[test]
fn deleting_a_pod_object_removes_its_route() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let mut c = cluster("nd2")?;
    wait_until(
        Duration::from_secs(30),
        "the pod route exists",
        &c.parties(),
        || Ok(c.agents[0].routes(false)?.contains("10.244.1.11 dev")),
    )?;
    c.pods.retain(|(p, _)| p.name != "pod-1-11");
    c.write_pods();
    wait_until(
        Duration::from_secs(10),
        "the deleted pod's route is gone",
        &c.parties(),
        || Ok(!c.agents[0].routes(false)?.contains("10.244.1.11 dev")),
    )?;
    assert!(
        c.agents[0].routes(false)?.contains("10.244.1.10 dev"),
        "the other pod's route stays"
    );
    Ok(())
}

#[test]
fn a_route_deleted_by_hand_is_back_within_a_second() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let c = cluster("nd3")?;
    wait_until(
        Duration::from_secs(30),
        "the learned route exists",
        &c.parties(),
        || {
            Ok(c.agents[0]
                .routes(false)?
                .contains("10.244.2.0/24 via 10.0.0.2"))
        },
    )?;
    let ns = &c.lan.nodes[0].ns;
    ns.ip(&["route", "del", "10.244.2.0/24"])?;
    let deleted = Instant::now();
    wait_until(
        Duration::from_secs(1),
        "the route is repaired",
        &c.parties(),
        || {
            Ok(c.agents[0]
                .routes(false)?
                .contains("10.244.2.0/24 via 10.0.0.2"))
        },
    )?;
    eprintln!("repaired after {:?}", deleted.elapsed());
    Ok(())
}

/// Restarting `tabby node` on one node while pods on the two nodes ping each other 10 times a
/// second. The routes stay in the kernel of the restarting node; the other node keeps its
/// routes to the restarting node's block only if it treats the restart gracefully.
#[test]

fn restarting_an_agent_during_a_ping_loses_nothing() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let mut c = cluster("nd4")?;
    wait_until(
        Duration::from_secs(30),
        "every pod reaches every other pod",
        &c.parties(),
        || all_pairs_reach(&c),
    )?;
    let (from, to) = (&c.pods[2].0, c.pods[0].0.ips[0]);
    let ping = from.ping_loop(to, 60)?;
    std::thread::sleep(Duration::from_secs(1));
    c.agents[0].daemon.stop("TERM", Duration::from_secs(10))?;
    let log = c.dir.join("node1-restarted.log");
    let restarted = Agent::node(&c.lan.nodes[0].ns, "node1", &c.datastore(), &log)?;
    c.agents[0] = restarted;
    let summary = ping.summary()?;
    eprintln!("ping during restart: {summary}");
    assert!(
        summary.contains(" 0% packet loss"),
        "{summary}\n{}",
        c.agents[0].diagnose()
    );
    Ok(())
}

/// Fail closed (shared/DESIGN.md §2): a workload interface that no Pod object owns (a pod the
/// CNI wired but the datastore does not know) gets nothing through, and stays so while the
/// agent is stopped; the known pods keep talking meanwhile.
#[test]
fn an_unknown_workload_interface_is_dropped_also_while_the_agent_is_stopped() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let mut c = cluster("nd6")?;
    wait_until(
        Duration::from_secs(30),
        "every pod reaches every other pod",
        &c.parties(),
        || all_pairs_reach(&c),
    )?;
    let ghost = Pod::wire(&c.lan.nodes[0].ns, "default", "ghost", &[ip("10.244.1.50")])?;
    // Let the agent see the interface (it is not an endpoint: no Pod object).
    std::thread::sleep(Duration::from_secs(2));
    // The replies could not come back anyway (the node has no route to the ghost), so what
    // counts is whether the requests reach the remote pod: its host-side interface's
    // transmit counter on node2.
    let (remote_pod, _) = &c.pods[2];
    let remote = remote_pod.ips[0];
    let delivered = || -> Result<u64> {
        let path = format!(
            "/sys/class/net/{}/statistics/tx_packets",
            remote_pod.host_if
        );
        Ok(run(command_in(c.lan.nodes[1].ns.name(), "cat").arg(&path))?
            .trim()
            .parse()?)
    };
    let before = delivered()?;
    for _ in 0..3 {
        ghost.ping(remote);
    }
    assert!(
        delivered()? < before + 3,
        "the unknown interface's packets got through"
    );
    c.agents[0].daemon.stop("TERM", Duration::from_secs(10))?;
    let before = delivered()?;
    for _ in 0..3 {
        ghost.ping(remote);
    }
    assert!(
        delivered()? < before + 3,
        "the unknown interface's packets got through while the agent is stopped"
    );
    let known = &c.pods[0].0;
    assert!(
        known.ping(remote),
        "a known pod lost its traffic while the agent is stopped"
    );
    Ok(())
}

/// An agent whose `nft` fails (an executable earlier in its PATH that exits 1) still programs
/// its routes and peers, answers `/readyz` with 503 and the reason, and becomes ready once
/// `nft` works again (the applier retries).
#[test]
fn an_agent_whose_policy_cannot_be_programmed_is_unready_and_keeps_routing() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let dir = TestDir::new("nd8-bin")?;
    let fake = dir.join("bin");
    std::fs::create_dir_all(&fake)?;
    let nft = fake.join("nft");
    std::fs::write(
        &nft,
        "#!/bin/sh\necho 'nft: refused by the test' >&2\nexit 1\n",
    )?;
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&nft)
        .status()?;
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
    );
    let c = cluster_with("nd8", &[("PATH", path)])?;
    let readyz = || -> Result<(String, String)> {
        let out = command_in(&c.agents[0].ns, "curl")
            .args(["-s", "-w", "%{http_code}", "http://127.0.0.1:9099/readyz"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.split_at(text.len().saturating_sub(3));
        Ok((code.to_string(), body.to_string()))
    };
    wait_until(
        Duration::from_secs(30),
        "node1 learned node2's block and installed it",
        &c.parties(),
        || Ok(c.agents[0].routes(false)?.contains("10.244.2.0/24 via")),
    )?;
    wait_until(
        Duration::from_secs(10),
        "node1 reports its policy as not programmed",
        &c.parties(),
        || Ok(readyz()?.1.contains("policy not programmed")),
    )?;
    let (code, body) = readyz()?;
    assert_eq!(code, "503", "{body}");
    assert!(
        c.agents[0].routes(false)?.contains("10.244.1.10 dev"),
        "pod routes stay programmed"
    );
    std::fs::remove_file(&nft)?;
    wait_until(
        Duration::from_secs(15),
        "node1 is ready once nft works",
        &c.parties(),
        || Ok(readyz()?.0 == "200"),
    )?;
    Ok(())
}
