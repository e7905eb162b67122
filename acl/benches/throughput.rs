//! TCP throughput between two pods (iperf3) with no policy and with issue 6's 1,000
//! policies installed (the cluster of `common/`: 10,000 pods, 200 local), on both backends.
//!
//! A node namespace with two pods wired as Calico's CNI wires them (veths to the node,
//! routed, proxy ARP); the two pods take the place of cluster pods 1 (server, ns-1) and 101
//! (client, ns-1), so with the 1,000 policies ten of them apply to the server and the
//! client is allowed by their namespace peer. Per backend the two rulesets alternate,
//! `TABBY_IPERF_RUNS` times (default 3) each, `TABBY_IPERF_SECONDS` (default 5) per run; the
//! medians and their ratio are printed. Needs root and iperf3.
//!
//! `cargo bench -p tabby-acl --bench throughput`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tabby_acl::iptables::IptablesApplier;
use tabby_acl::nft::NftApplier;
use tabby_acl::{Compiler, Dataplane, Direction, Endpoint, Exec, Settings};
use tabby_tests::pod::Pod;
use tabby_tests::Netns;

const SERVER: u32 = 1;
const CLIENT: u32 = 101;
const PORT: &str = "80";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + i)
}

/// Cluster pod `i`, living on the real interface `iface`.
fn local(i: u32, iface: &str) -> Endpoint {
    let mut ep = common::pod(i, None);
    ep.iface = Some(iface.to_owned());
    ep
}

fn wire(node: &Netns, i: u32) -> Pod {
    let ep = common::pod(i, None);
    let ns = ep.namespace.clone().unwrap();
    let p = Pod::wire(node, &ns, &ep.name, &[IpAddr::V4(addr(i))]).unwrap();
    let iface = &p.host_if;
    for sysctl in [
        format!("net.ipv4.conf.{iface}.proxy_arp=1"),
        format!("net.ipv4.neigh.{iface}.proxy_delay=0"),
        format!("net.ipv4.conf.{iface}.forwarding=1"),
    ] {
        node.exec(&["sysctl", "-qw", &sysctl]).unwrap();
    }
    node.ip(&[
        "route",
        "add",
        &format!("{}/32", addr(i)),
        "dev",
        iface,
        "scope",
        "link",
    ])
    .unwrap();
    p
}

/// One iperf3 run from the client pod; bits per second received.
fn iperf(client: &Pod, seconds: u64) -> f64 {
    let out = client
        .netns
        .command("iperf3")
        .args(["-c", &addr(SERVER).to_string(), "-p", PORT, "-J", "-t"])
        .arg(seconds.to_string())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 output ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 failed: {v}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(backend: &str, runs: u64, seconds: u64) {
    let node = Netns::new("tput").unwrap();
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    // Proxy ARP needs a route to the target: a default route into a veth pair that stays
    // inside the node namespace.
    node.ip(&[
        "link", "add", "ext0", "type", "veth", "peer", "name", "ext1",
    ])
    .unwrap();
    node.ip(&["link", "set", "ext0", "up"]).unwrap();
    node.ip(&["link", "set", "ext1", "up"]).unwrap();
    node.ip(&["route", "add", "default", "dev", "ext0"])
        .unwrap();
    let server = wire(&node, SERVER);
    let client = wire(&node, CLIENT);
    let mut daemon = server
        .netns
        .command("iperf3")
        .args(["-s", "-p", PORT])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let endpoints = [
        local(SERVER, &server.host_if),
        local(CLIENT, &client.host_if),
    ];
    let mut bare = Compiler::new(Settings::default());
    bare.upsert_namespace(
        "ns-1",
        BTreeMap::from([("team".to_owned(), "t-1".to_owned())]),
    );
    let mut full = common::cluster_without(|i| i == SERVER || i == CLIENT);
    for ep in endpoints {
        bare.upsert_endpoint(ep.clone());
        full.upsert_endpoint(ep);
    }
    let t = Instant::now();
    let (bare, full) = (bare.ruleset(), full.ruleset());
    let policies_on_server = full.endpoints[&server.host_if]
        .chains(Direction::Ingress)
        .len();
    eprintln!(
        "[{backend}] rulesets compiled in {:?}: {} policy chains, {} sets; {policies_on_server} policies apply to the server",
        t.elapsed(),
        full.policy_chains.len(),
        full.sets.len()
    );
    let exec = Exec::in_netns(node.name());
    let mut dp: Box<dyn Dataplane> = match backend {
        "nftables" => Box::new(NftApplier::new(exec)),
        _ => Box::new(IptablesApplier::new(exec)),
    };
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        dp.apply(&bare).unwrap();
        without.push(iperf(&client, seconds));
        dp.apply(&full).unwrap();
        with.push(iperf(&client, seconds));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let gbit = |v: &[f64]| {
        v.iter()
            .map(|b| format!("{:.2}", b / 1e9))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (w0, w1) = (median(without.clone()), median(with.clone()));
    println!(
        "{backend:9} | 0 policies: {:6.2} Gbit/s ({}) | 1,000 policies: {:6.2} Gbit/s ({}) | ratio {:.3}",
        w0 / 1e9,
        gbit(&without),
        w1 / 1e9,
        gbit(&with),
        w1 / w0
    );
}

fn main() {
    let root = Command::new("ip")
        .args(["netns", "add", "tb-tput-probe"])
        .status()
        .is_ok_and(|s| s.success());
    if !root {
        eprintln!("throughput bench skipped: needs root (network namespaces)");
        return;
    }
    let _ = Command::new("ip")
        .args(["netns", "del", "tb-tput-probe"])
        .status();
    if Command::new("iperf3").arg("--version").output().is_err() {
        eprintln!("throughput bench skipped: iperf3 is not installed (scripts/install-deps.sh)");
        return;
    }
    let runs = env("TABBY_IPERF_RUNS", 3);
    let seconds = env("TABBY_IPERF_SECONDS", 5);
    for backend in ["nftables", "iptables"] {
        run(backend, runs, seconds);
    }
}
