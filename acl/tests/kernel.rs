//! Policy in a real kernel: a node namespace with pods wired as Calico's CNI wires them,
//! policy applied with nftables or iptables, and real traffic (TCP connects, pings) checked.
//! Every namespace is a guard that deletes itself, also when a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tabby_acl::exec::Exec;
use tabby_acl::iptables::IptablesApplier;
use tabby_acl::nft::{NftApplier, Repairer};
use tabby_acl::{Compiler, Dataplane, Endpoint, EndpointKind, Policy, Settings};
use tabby_tests::pod::Pod;
use tabby_tests::wait::wait_until;
use tabby_tests::Netns;

/// Generous bounds for waits; never performance assertions.
const WAIT: Duration = Duration::from_secs(10);
const PORT_A: u16 = 80;
const PORT_B: u16 = 81;
const PROBE_ENV: &str = "TABBY_ACL_PROBE";

/// Not a test of its own: the test binary runs itself inside a pod's namespace (through
/// `ip netns exec`) as a TCP server or client, selected by `TABBY_ACL_PROBE`. Without that
/// variable it does nothing.
#[test]
fn probe_helper() {
    let Ok(mode) = std::env::var(PROBE_ENV) else {
        return;
    };
    if let Some(ports) = mode.strip_prefix("serve:") {
        let mut threads = Vec::new();
        for p in ports.split(',') {
            // `[::]` takes IPv4 too (bindv6only is 0 in a fresh namespace).
            let l = TcpListener::bind(("::", p.parse::<u16>().unwrap())).unwrap();
            threads.push(std::thread::spawn(move || {
                for s in l.incoming() {
                    drop(s);
                }
            }));
        }
        for t in threads {
            let _ = t.join();
        }
    } else if let Some(addr) = mode.strip_prefix("connect:") {
        let addr: SocketAddr = addr.parse().unwrap();
        let ok = TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).is_ok();
        std::process::exit(if ok { 0 } else { 1 });
    }
}

fn self_in(ns: &str, mode: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .arg(std::env::current_exe().unwrap())
        .args(["probe_helper", "--exact", "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, mode)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// A node namespace with routed pods and a policy compiler.
struct Node {
    pods: BTreeMap<String, Pod>,
    servers: Vec<std::process::Child>,
    compiler: Compiler,
    node: Netns,
}

impl Drop for Node {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

impl Node {
    fn new() -> Node {
        let node = Netns::new("node").unwrap();
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            .unwrap();
        // Proxy ARP answers need a route to the target; the node's default route goes
        // into a veth pair that stays inside the node namespace, so no packet ever leaves
        // the namespaces the test created.
        node.ip(&[
            "link", "add", "ext0", "type", "veth", "peer", "name", "ext1",
        ])
        .unwrap();
        node.ip(&["link", "set", "ext0", "up"]).unwrap();
        node.ip(&["link", "set", "ext1", "up"]).unwrap();
        // The node's own address, the source of its probes.
        node.ip(&["addr", "add", "10.66.0.1/32", "dev", "ext0"])
            .unwrap();
        node.ip(&["route", "add", "default", "dev", "ext0"])
            .unwrap();
        Node {
            pods: BTreeMap::new(),
            servers: Vec::new(),
            compiler: Compiler::new(Settings::default()),
            node,
        }
    }

    /// Wires pod `ns/name` with `addrs` (an IPv4 address, and an IPv6 one after a comma),
    /// runs a TCP server on ports 80 and 81 in it, and tells the compiler (with `labels`)
    /// unless `known` is false.
    fn pod(&mut self, ns: &str, name: &str, addrs: &str, labels: &[(&str, &str)], known: bool) {
        let ips: Vec<IpAddr> = addrs.split(',').map(ip).collect();
        let addr = addrs.split(',').next().unwrap();
        let p = Pod::wire(&self.node, ns, name, &ips).unwrap();
        let iface = p.host_if.clone();
        for v6 in ips.iter().filter(|a| a.is_ipv6()) {
            self.node
                .exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
                .unwrap();
            self.node
                .ip(&["-6", "route", "add", &format!("{v6}/128"), "dev", &iface])
                .unwrap();
        }
        for sysctl in [
            format!("net.ipv4.conf.{iface}.proxy_arp=1"),
            format!("net.ipv4.neigh.{iface}.proxy_delay=0"),
            format!("net.ipv4.conf.{iface}.forwarding=1"),
        ] {
            self.node.exec(&["sysctl", "-qw", &sysctl]).unwrap();
        }
        self.node
            .ip(&[
                "route",
                "add",
                &format!("{addr}/32"),
                "dev",
                &iface,
                "scope",
                "link",
            ])
            .unwrap();
        self.servers.push(
            self_in(p.netns.name(), &format!("serve:{PORT_A},{PORT_B}"))
                .spawn()
                .unwrap(),
        );
        let node = self.node.name().to_owned();
        wait_until(WAIT, &format!("{name}'s server listens"), &[], || {
            Ok(self_in(&node, &format!("connect:{addr}:{PORT_A}"))
                .status()?
                .success())
        })
        .unwrap();
        if known {
            self.compiler.upsert_namespace(ns, BTreeMap::new());
            let mut ep = endpoint(ns, name, &iface, addr, labels);
            ep.addrs = ips;
            self.compiler.upsert_endpoint(ep);
        }
        self.pods.insert(name.to_owned(), p);
    }

    fn tcp(&self, from: &str, to: &str, port: u16) -> bool {
        self.tcp_to(from, self.pods[to].ips[0], port)
    }

    /// TCP to the pod's IPv6 address.
    fn tcp6(&self, from: &str, to: &str, port: u16) -> bool {
        self.tcp_to(from, self.pods[to].ips[1], port)
    }

    fn tcp_to(&self, from: &str, to: IpAddr, port: u16) -> bool {
        let to = SocketAddr::new(to, port);
        self_in(self.pods[from].netns.name(), &format!("connect:{to}"))
            .status()
            .unwrap()
            .success()
    }

    fn ping(&self, from: &str, to: &str) -> bool {
        self.pods[from].ping(self.pods[to].ips[0])
    }

    fn ping6(&self, from: &str, to: &str) -> bool {
        self.pods[from].ping(self.pods[to].ips[1])
    }

    fn exec(&self) -> Exec {
        Exec::in_netns(self.node.name())
    }
}

fn endpoint(ns: &str, name: &str, iface: &str, addr: &str, labels: &[(&str, &str)]) -> Endpoint {
    Endpoint {
        kind: EndpointKind::Workload,
        namespace: Some(ns.into()),
        name: name.into(),
        iface: Some(iface.into()),
        addrs: vec![ip(addr)],
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ports: vec![],
    }
}

/// Ingress to app=a only from app=b, on TCP 80.
fn a_from_b_on_80() -> Policy {
    let np = serde_json::from_value(json!({
        "metadata": {"name": "a-from-b", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}],
                              "ports": [{"port": 80}]}]}}))
    .unwrap();
    Policy::from_k8s(&np).unwrap()
}

/// Three pods in namespace x: a, b, c (10.65.0.1-3).
fn three_pods() -> Node {
    let mut n = Node::new();
    n.pod("x", "a", "10.65.0.1", &[("app", "a")], true);
    n.pod("x", "b", "10.65.0.2", &[("app", "b")], true);
    n.pod("x", "c", "10.65.0.3", &[("app", "c")], true);
    n
}

fn allowed_and_denied(dp: &mut dyn Dataplane, n: &mut Node) {
    dp.apply(&n.compiler.ruleset()).unwrap();
    assert!(n.tcp("b", "a", PORT_A), "no policy: b -> a:80 is open");
    assert!(n.tcp("c", "a", PORT_A), "no policy: c -> a:80 is open");
    assert!(n.ping("c", "a"), "no policy: c pings a");

    n.compiler.upsert_policy(a_from_b_on_80());
    dp.apply(&n.compiler.ruleset()).unwrap();
    assert!(n.tcp("b", "a", PORT_A), "b -> a:80 is allowed");
    assert!(!n.tcp("b", "a", PORT_B), "b -> a:81 is denied");
    assert!(!n.tcp("c", "a", PORT_A), "c -> a:80 is denied");
    assert!(!n.ping("b", "a"), "ICMP to a is denied");
    assert!(
        n.ping("a", "c"),
        "a's egress is not isolated, and the reply comes back"
    );
    assert!(n.tcp("a", "b", PORT_B), "b has no policy");

    // A label change: c becomes a client of a. Only set members change.
    n.compiler.upsert_endpoint(endpoint(
        "x",
        "c",
        &n.pods["c"].host_if,
        "10.65.0.3",
        &[("app", "b")],
    ));
    let stats = dp.apply(&n.compiler.ruleset()).unwrap();
    assert!(
        stats.lines <= 3,
        "a label change is a small transaction: {stats:?}"
    );
    assert!(
        n.tcp("c", "a", PORT_A),
        "c -> a:80 is allowed after the label change"
    );

    // Deleting the policy opens everything again.
    n.compiler.remove_policy("knp.default.x/a-from-b");
    dp.apply(&n.compiler.ruleset()).unwrap();
    assert!(n.tcp("b", "a", PORT_B), "b -> a:81 is open again");
    assert!(n.ping("b", "a"), "b pings a again");
}

#[test]
fn nftables_allows_what_policy_allows_and_drops_the_rest() {
    let mut n = three_pods();
    let mut dp = NftApplier::new(n.exec());
    allowed_and_denied(&mut dp, &mut n);
}

#[test]
fn iptables_allows_what_policy_allows_and_drops_the_rest() {
    let mut n = three_pods();
    let mut dp = IptablesApplier::new(n.exec());
    allowed_and_denied(&mut dp, &mut n);
}

fn unknown_interface_is_dropped(make: impl Fn(Exec) -> Box<dyn Dataplane>) {
    let mut n = Node::new();
    n.pod("x", "a", "10.65.0.1", &[("app", "a")], true);
    n.pod("x", "b", "10.65.0.2", &[("app", "b")], true);
    n.pod("x", "u", "10.65.0.9", &[], false);
    {
        let mut dp = make(n.exec());
        dp.apply(&n.compiler.ruleset()).unwrap();
        assert!(n.tcp("b", "a", PORT_A), "known pods talk");
        assert!(
            !n.tcp("u", "a", PORT_A),
            "traffic from an unknown cali interface is dropped"
        );
        assert!(
            !n.tcp("a", "u", PORT_A),
            "traffic to an unknown cali interface is dropped"
        );
    }
    // The applier is gone, as when tabby stops: the rules stay.
    assert!(
        !n.tcp("u", "a", PORT_A),
        "still dropped with the agent stopped"
    );
    assert!(
        n.tcp("b", "a", PORT_A),
        "known pods still talk with the agent stopped"
    );
}

#[test]
fn nftables_drops_an_unknown_workload_interface_also_while_the_agent_is_stopped() {
    unknown_interface_is_dropped(|e| Box::new(NftApplier::new(e)));
}

#[test]
fn iptables_drops_an_unknown_workload_interface_also_while_the_agent_is_stopped() {
    unknown_interface_is_dropped(|e| Box::new(IptablesApplier::new(e)));
}

#[test]
fn a_second_applier_after_a_restart_writes_nothing_when_nothing_changed() {
    let mut n = three_pods();
    n.compiler.upsert_policy(a_from_b_on_80());
    let rs = n.compiler.ruleset();
    NftApplier::new(n.exec()).apply(&rs).unwrap();
    let stats = NftApplier::new(n.exec()).apply(&rs).unwrap();
    assert!(!stats.wrote, "{stats:?}");
    IptablesApplier::new(n.exec()).apply(&rs).unwrap();
    let stats = IptablesApplier::new(n.exec()).apply(&rs).unwrap();
    assert!(!stats.wrote, "{stats:?}");
}

/// Waits until the repairer's `nft monitor` runs: a foreign chain added to our table is
/// removed. Without this handshake a change made before the monitor started would be missed.
fn monitor_is_live(node: &Netns) {
    wait_until(WAIT, "a foreign chain in our table is removed", &[], || {
        let _ = node.exec(&["nft", "add", "chain", "inet", "tabby", "foreign"]);
        std::thread::sleep(Duration::from_millis(200));
        let table = node.exec(&["nft", "list", "table", "inet", "tabby"])?;
        Ok(!table.contains("chain foreign"))
    })
    .unwrap();
}

#[test]
fn nftables_table_deleted_by_another_tool_comes_back() {
    let mut n = three_pods();
    n.compiler.upsert_policy(a_from_b_on_80());
    let applier = Arc::new(Mutex::new(NftApplier::new(n.exec())));
    applier
        .lock()
        .unwrap()
        .apply(&n.compiler.ruleset())
        .unwrap();
    let repairer = Repairer::spawn(&n.exec(), applier.clone()).unwrap();
    monitor_is_live(&n.node);
    let deleted = std::time::Instant::now();
    n.node
        .exec(&["nft", "delete", "table", "inet", "tabby"])
        .unwrap();
    wait_until(WAIT, "the table is restored", &[], || {
        Ok(n.node
            .exec(&["nft", "list", "table", "inet", "tabby"])
            .is_ok())
    })
    .unwrap();
    // Information only: the bound above is generous on purpose.
    eprintln!("table restored after at most {:?}", deleted.elapsed());
    assert!(
        !n.tcp("c", "a", PORT_A),
        "policy holds again after the repair"
    );
    assert!(n.tcp("b", "a", PORT_A));
    assert!(repairer.repairs() >= 1);
}

#[test]
fn nftables_chain_flushed_by_another_tool_is_restored() {
    let mut n = three_pods();
    n.compiler.upsert_policy(a_from_b_on_80());
    let applier = Arc::new(Mutex::new(NftApplier::new(n.exec())));
    applier
        .lock()
        .unwrap()
        .apply(&n.compiler.ruleset())
        .unwrap();
    let _repairer = Repairer::spawn(&n.exec(), applier.clone()).unwrap();
    monitor_is_live(&n.node);
    n.node
        .exec(&["nft", "flush", "chain", "inet", "tabby", "to-wl"])
        .unwrap();
    wait_until(WAIT, "the chain is restored", &[], || {
        let chain = n
            .node
            .exec(&["nft", "list", "chain", "inet", "tabby", "to-wl"])?;
        Ok(chain.contains("vmap @wl-to"))
    })
    .unwrap();
    assert!(
        !n.tcp("c", "a", PORT_A),
        "policy holds again after the repair"
    );
}

#[test]
fn iptables_chain_flushed_by_another_tool_is_restored_by_repair() {
    let mut n = three_pods();
    n.compiler.upsert_policy(a_from_b_on_80());
    let mut dp = IptablesApplier::new(n.exec());
    dp.apply(&n.compiler.ruleset()).unwrap();
    n.node.exec(&["iptables", "-F", "tabby-to-wl"]).unwrap();
    assert!(n.tcp("c", "a", PORT_A), "the flush opened the policy");
    assert!(dp.repair().unwrap());
    assert!(
        !n.tcp("c", "a", PORT_A),
        "policy holds again after the repair"
    );
    assert!(!dp.repair().unwrap(), "nothing left to repair");
}

/// A ruleset that uses every rendering path: IPv4 and IPv6 sets and nets, named ports,
/// ICMP type/code and its negation, Log, Pass, Deny, source ports, notPorts, a host
/// endpoint, and workload-to-host accept.
fn every_feature() -> Compiler {
    let mut c = Compiler::new(Settings {
        endpoint_to_host_accept: true,
        ..Settings::default()
    });
    c.upsert_namespace("x", BTreeMap::from([("team".to_owned(), "x".to_owned())]));
    let mut a = endpoint("x", "a", "cali0000000000a", "10.65.0.1", &[("app", "a")]);
    a.addrs.push(ip("fd00::1"));
    a.ports.push(tabby_acl::NamedPort {
        name: "http".into(),
        protocol: tabby_acl::model::proto::TCP,
        port: 8080,
    });
    c.upsert_endpoint(a);
    c.upsert_endpoint(Endpoint {
        kind: EndpointKind::Host,
        namespace: None,
        name: "node-eth0".into(),
        iface: Some("eth0".into()),
        addrs: vec![ip("192.168.1.1")],
        labels: BTreeMap::from([("role".to_owned(), "node".to_owned())]),
        ports: vec![],
    });
    let g: tabby_datastore::calico::GlobalNetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "everything"},
        "spec": {"order": 10, "selector": "all()", "namespaceSelector": "global() || all()",
          "ingress": [
            {"action": "Log", "protocol": "TCP", "source": {"ports": [1024, "2000:3000"]}},
            {"action": "Deny", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}},
            {"action": "Allow", "protocol": "ICMPv6", "notICMP": {"type": 128, "code": 1}},
            {"action": "Allow", "protocol": "TCP",
             "source": {"nets": ["10.0.0.0/8", "fd00::/8", "10.1.0.0/16"], "notNets": ["10.9.0.0/16"]},
             "destination": {"ports": ["http", 443], "notPorts": [444]}},
            {"action": "Allow", "protocol": "UDP", "ipVersion": 6,
             "source": {"selector": "app == 'a'", "namespaceSelector": "team == 'x'"}},
            {"action": "Pass", "notProtocol": "UDP", "source": {"notSelector": "has(x)"}},
            {"action": "Deny"}
          ],
          "egress": [{"action": "Allow", "destination": {"selector": "role == 'node'"}}]}
    }))
    .unwrap();
    c.upsert_policy(Policy::from_calico_global(&g).unwrap());
    c
}

fn loads(dp: &mut dyn Dataplane) {
    let c = every_feature();
    let rs = c.ruleset();
    let stats = dp.apply(&rs).unwrap();
    assert!(stats.wrote);
    // Read back equals what was written: nothing to repair, nothing to write again.
    assert!(
        !dp.repair().unwrap(),
        "the read-back state equals the applied one"
    );
}

#[test]
fn nftables_loads_every_feature_and_reads_it_back() {
    let node = Netns::new("feat").unwrap();
    let mut dp = NftApplier::new(Exec::in_netns(node.name()));
    loads(&mut dp);
    let again = NftApplier::new(Exec::in_netns(node.name()))
        .apply(&every_feature().ruleset())
        .unwrap();
    assert!(!again.wrote, "a fresh applier finds everything in place");
}

#[test]
fn iptables_loads_every_feature_and_reads_it_back() {
    let node = Netns::new("feat").unwrap();
    let mut dp = IptablesApplier::new(Exec::in_netns(node.name()));
    loads(&mut dp);
    let again = IptablesApplier::new(Exec::in_netns(node.name()))
        .apply(&every_feature().ruleset())
        .unwrap();
    assert!(!again.wrote, "a fresh applier finds everything in place");
}

/// A node with a host endpoint on `hep0` (10.67.0.1) facing a client namespace
/// (10.67.0.2), and TCP servers on the node's ports 22 (failsafe) and 80.
fn host_endpoint_setup(
    dp: &mut dyn Dataplane,
    node: &Netns,
    client: &Netns,
) -> std::process::Child {
    node.ip(&[
        "link",
        "add",
        "hep0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        client.name(),
    ])
    .unwrap();
    node.ip(&["addr", "add", "10.67.0.1/24", "dev", "hep0"])
        .unwrap();
    node.ip(&["link", "set", "hep0", "up"]).unwrap();
    client
        .ip(&["addr", "add", "10.67.0.2/24", "dev", "eth0"])
        .unwrap();
    client.ip(&["link", "set", "eth0", "up"]).unwrap();
    let server = self_in(node.name(), "serve:22,80").spawn().unwrap();
    wait_until(WAIT, "the node's server listens", &[], || {
        Ok(self_in(client.name(), "connect:10.67.0.1:80")
            .status()?
            .success())
    })
    .unwrap();
    let mut c = Compiler::new(Settings::default());
    c.upsert_endpoint(Endpoint {
        kind: EndpointKind::Host,
        namespace: None,
        name: "node-hep0".into(),
        iface: Some("hep0".into()),
        addrs: vec![ip("10.67.0.1")],
        labels: BTreeMap::new(),
        ports: vec![],
    });
    dp.apply(&c.ruleset()).unwrap();
    server
}

fn host_endpoint_keeps_failsafe(make: impl Fn(Exec) -> Box<dyn Dataplane>) {
    let node = Netns::new("hep").unwrap();
    let client = Netns::new("cli").unwrap();
    let mut dp = make(Exec::in_netns(node.name()));
    let mut server = host_endpoint_setup(dp.as_mut(), &node, &client);
    let ssh = self_in(client.name(), "connect:10.67.0.1:22")
        .status()
        .unwrap()
        .success();
    let http = self_in(client.name(), "connect:10.67.0.1:80")
        .status()
        .unwrap()
        .success();
    let _ = server.kill();
    let _ = server.wait();
    assert!(ssh, "the failsafe port 22 stays open");
    assert!(!http, "a host endpoint without policy drops the rest");
}

#[test]
fn nftables_host_endpoint_without_policy_drops_all_but_the_failsafe_ports() {
    host_endpoint_keeps_failsafe(|e| Box::new(NftApplier::new(e)));
}

#[test]
fn iptables_host_endpoint_without_policy_drops_all_but_the_failsafe_ports() {
    host_endpoint_keeps_failsafe(|e| Box::new(IptablesApplier::new(e)));
}

fn ipv6_policy(dp: &mut dyn Dataplane, n: &mut Node) {
    dp.apply(&n.compiler.ruleset()).unwrap();
    // The first IPv6 packets wait for neighbour discovery: wait until the path works.
    wait_until(WAIT, "c reaches a over IPv6 without policy", &[], || {
        Ok(n.tcp6("c", "a", PORT_A))
    })
    .unwrap();
    n.compiler.upsert_policy(a_from_b_on_80());
    dp.apply(&n.compiler.ruleset()).unwrap();
    // The first IPv6 packets wait for neighbour discovery; the allowed probe is retried.
    wait_until(WAIT, "b reaches a over IPv6 on port 80", &[], || {
        Ok(n.tcp6("b", "a", PORT_A))
    })
    .unwrap();
    assert!(!n.tcp6("c", "a", PORT_A), "c -> a:80 over IPv6 is denied");
    assert!(!n.tcp6("b", "a", PORT_B), "b -> a:81 over IPv6 is denied");
    assert!(!n.ping6("b", "a"), "ICMPv6 echo to a is denied");
    assert!(n.ping6("a", "c"), "a's egress is open over IPv6");
}

fn dual_stack_pods() -> Node {
    let mut n = Node::new();
    n.pod("x", "a", "10.65.0.1,fd00:65::1", &[("app", "a")], true);
    n.pod("x", "b", "10.65.0.2,fd00:65::2", &[("app", "b")], true);
    n.pod("x", "c", "10.65.0.3,fd00:65::3", &[("app", "c")], true);
    n
}

#[test]
fn nftables_enforces_policy_over_ipv6() {
    let mut n = dual_stack_pods();
    let mut dp = NftApplier::new(n.exec());
    ipv6_policy(&mut dp, &mut n);
}

#[test]
fn iptables_enforces_policy_over_ipv6() {
    let mut n = dual_stack_pods();
    let mut dp = IptablesApplier::new(n.exec());
    ipv6_policy(&mut dp, &mut n);
}

#[test]
fn removing_leaves_nothing_of_ours_in_either_backend() {
    let node = Netns::new("rm").unwrap();
    let exec = Exec::in_netns(node.name());
    let rs = every_feature().ruleset();
    let mut nft = NftApplier::new(exec.clone());
    nft.apply(&rs).unwrap();
    nft.remove().unwrap();
    assert!(node
        .exec(&["nft", "list", "table", "inet", "tabby"])
        .is_err());
    let mut ipt = IptablesApplier::new(exec);
    ipt.apply(&rs).unwrap();
    ipt.remove().unwrap();
    for tool in ["iptables-save", "ip6tables-save"] {
        let saved = node.exec(&[tool, "-t", "filter"]).unwrap();
        assert!(!saved.contains("tabby"), "{tool}: {saved}");
    }
    assert!(!node
        .exec(&["ipset", "list", "-n"])
        .unwrap()
        .contains("tabby"));
}
