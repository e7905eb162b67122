//! The route and interface managers against a real kernel, each test in a network namespace
//! of its own. Needs root and `ip` (iproute2).
//!
//! How a test gets into its namespace without `unsafe` (no `setns` here): the test creates a
//! namespace (`ip netns add`, removed by a drop guard even when the test fails), then runs
//! this same test binary again inside it, `ip netns exec <ns> <this binary> <test name>
//! --exact`, with `TABBY_NETNS_TEST=<ns>` set. The re-executed test sees the variable, checks
//! that it really is inside that namespace (same inode as `/run/netns/<ns>`), and runs the
//! body. Every socket and `ip` command of the body is then confined to the namespace.

use std::future::Future;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tabby_felix::interfaces::{InterfaceConfig, InterfaceError, InterfaceManager, TunnelConfig};
use tabby_felix::routes::{Dst, NextHop, Route, RouteManager, RouteManagerConfig, Target};

const CHILD_ENV: &str = "TABBY_NETNS_TEST";

/// A namespace that is deleted when dropped.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tabby-rt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        match out {
            Ok(o) if o.status.success() => Netns(name),
            Ok(o) => panic!(
                "ip netns add {name} failed (these tests need root): {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("cannot run ip (iproute2 is needed): {e}"),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `body` inside a fresh network namespace (see the module docs).
fn in_netns<F, Fut>(test: &str, body: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    if let Ok(ns) = std::env::var(CHILD_ENV) {
        let inode = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
        let here = inode("/proc/self/ns/net");
        let there = inode(&format!("/run/netns/{ns}"));
        assert!(
            here.is_ok() && here.ok() == there.ok(),
            "refusing to run {test} outside its namespace {ns}"
        );
        sh("ip link set lo up");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        rt.block_on(body());
        return;
    }
    let ns = Netns::new();
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &ns.0)
        .output()
        .unwrap_or_else(|e| panic!("ip netns exec: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("--- {test} in {} ---\n{stdout}", ns.0);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{test} failed inside {}", ns.0);
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run inside {}",
        ns.0
    );
}

/// Runs a shell command (inside the test's namespace), panics when it fails, returns stdout.
fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dst(s: &str) -> Dst {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    Dst {
        addr: a.parse().unwrap_or_else(|e| panic!("{s}: {e}")),
        len: l.parse().unwrap_or_else(|e| panic!("{s}: {e}")),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn workload(d: &str, iface: &str) -> Route {
    Route {
        dst: dst(d),
        target: Target::Workload {
            iface: iface.to_string(),
        },
    }
}

fn via(d: &str, gateways: &[&str], ipip: bool) -> Route {
    Route {
        dst: dst(d),
        target: Target::Via(
            gateways
                .iter()
                .map(|g| NextHop {
                    gateway: ip(g),
                    ipip,
                })
                .collect(),
        ),
    }
}

fn blackhole(d: &str) -> Route {
    Route {
        dst: dst(d),
        target: Target::Blackhole,
    }
}

/// A veth pair whose host side (`name`) is up, as the CNI plugin leaves it.
fn veth(name: &str) {
    sh(&format!(
        "ip link add {name} type veth peer name p{}",
        &name[name.len().saturating_sub(12)..]
    ));
    sh(&format!("ip link set {name} up"));
}

/// An underlay: `ul0` (a veth pair, both ends up) with 10.0.0.1/24 and fd00::1/64, so
/// gateways in them resolve.
fn underlay() {
    sh("ip link add ul0 type veth peer name ul1");
    sh("ip addr add 10.0.0.1/24 dev ul0");
    sh("ip -6 addr add fd00::1/64 dev ul0 nodad");
    sh("ip link set ul1 up");
    sh("ip link set ul0 up");
}

async fn manager() -> RouteManager {
    RouteManager::start(RouteManagerConfig::default())
        .await
        .unwrap_or_else(|e| panic!("route manager: {e}"))
}

async fn set_and_wait(m: &RouteManager, routes: Vec<Route>) {
    m.set_desired(routes)
        .await
        .unwrap_or_else(|e| panic!("set_desired: {e}"));
    tokio::time::timeout(Duration::from_secs(5), m.wait_in_sync())
        .await
        .unwrap_or_else(|_| panic!("not in sync after 5 s: {:?}", m.stats()))
        .unwrap_or_else(|e| panic!("wait_in_sync: {e}"));
}

/// Once in sync, the manager stays quiet: its own writes' echoes reconcile to nothing.
async fn assert_settled(m: &RouteManager) {
    let before = m.stats().changes_applied;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = m.stats();
    assert_eq!(
        stats.changes_applied, before,
        "the manager kept writing: {stats:?}"
    );
}

/// Polls `cmd` until its output satisfies `ok`, for at most `within`; returns how long it took.
async fn eventually(cmd: &str, within: Duration, ok: impl Fn(&str) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let out = sh(cmd);
        if ok(&out) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "`{cmd}` still not as expected after {within:?}:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn proto44() -> String {
    sh("ip route show proto 44")
}

const PROTO44_V6: &str = "ip -6 route show proto 44";

fn proto44_v6() -> String {
    sh(PROTO44_V6)
}

#[test]
fn workload_route_is_written_with_protocol_44() {
    in_netns("workload_route_is_written_with_protocol_44", || async {
        veth("cali0123456789a");
        let m = manager().await;
        set_and_wait(&m, vec![workload("10.65.0.5/32", "cali0123456789a")]).await;
        assert_eq!(
            proto44().trim(),
            "10.65.0.5 dev cali0123456789a scope link linkdown"
        );
        assert_eq!(m.stats().routes_programmed, 1);
        assert_settled(&m).await;
    });
}

#[test]
fn route_of_another_protocol_on_a_workload_interface_is_replaced() {
    in_netns(
        "route_of_another_protocol_on_a_workload_interface_is_replaced",
        || async {
            veth("cali1");
            veth("cali2");
            // What a CNI plugin writes first, and a leftover of a deleted pod.
            sh("ip route add 10.65.0.5/32 dev cali1 proto static scope link");
            sh("ip route add 10.65.0.9/32 dev cali2 proto boot scope link");
            let m = manager().await;
            set_and_wait(&m, vec![workload("10.65.0.5/32", "cali1")]).await;
            let all = sh("ip route show 10.65.0.5/32");
            assert_eq!(
                all.trim(),
                "10.65.0.5 dev cali1 proto 44 scope link linkdown"
            );
            assert_eq!(sh("ip route show 10.65.0.9/32").trim(), "");
            assert_settled(&m).await;
        },
    );
}

#[test]
fn routes_of_other_protocols_elsewhere_are_never_touched() {
    in_netns(
        "routes_of_other_protocols_elsewhere_are_never_touched",
        || async {
            underlay();
            veth("cali1");
            sh("ip route add 10.9.0.0/24 via 10.0.0.254 proto static");
            sh("ip route add 10.8.0.0/24 via 10.0.0.253 proto bird");
            sh("ip route add blackhole 10.7.0.0/24 proto boot");
            sh("ip route add 10.6.0.0/24 via 10.0.0.252 proto static metric 50");
            sh("ip -6 route add fd00:9::/64 via fd00::fe proto static");
            let before = sh("ip route show; ip -6 route show");
            let m = manager().await;
            // One of the desired routes shares a destination with a foreign route under
            // another metric: both live side by side.
            set_and_wait(
                &m,
                vec![
                    workload("10.65.0.5/32", "cali1"),
                    via("10.6.0.0/24", &["10.0.0.12"], false),
                ],
            )
            .await;
            set_and_wait(&m, vec![]).await;
            let after = sh("ip route show; ip -6 route show");
            assert_eq!(before, after);
            assert_eq!(proto44().trim(), "");
        },
    );
}

#[test]
fn stale_protocol_44_routes_are_swept_on_start_and_wanted_ones_kept() {
    in_netns(
        "stale_protocol_44_routes_are_swept_on_start_and_wanted_ones_kept",
        || async {
            underlay();
            veth("cali1");
            // Left by the previous run of the agent.
            sh("ip route add blackhole 10.65.0.0/26 proto 44");
            sh("ip route add 10.65.0.5/32 dev cali1 proto 44 scope link");
            sh("ip route add 10.70.0.0/26 via 10.0.0.12 proto 44");
            sh("ip route add 10.71.0.0/26 via 10.0.0.13 proto 44");
            sh("ip -6 route add blackhole fd00:65::/122 proto 44");
            let m = manager().await;
            set_and_wait(
                &m,
                vec![
                    blackhole("10.65.0.0/26"),
                    workload("10.65.0.5/32", "cali1"),
                    via("10.70.0.0/26", &["10.0.0.12"], false),
                ],
            )
            .await;
            assert_eq!(
                proto44(),
                "blackhole 10.65.0.0/26 \n\
                 10.65.0.5 dev cali1 scope link linkdown \n\
                 10.70.0.0/26 via 10.0.0.12 dev ul0 \n"
            );
            assert_eq!(proto44_v6().trim(), "");
            // The wanted routes were adopted, not rewritten: the only writes are the two
            // deletions.
            let stats = m.stats();
            assert_eq!(stats.changes_applied, 2, "{stats:?}");
            assert_eq!(stats.routes_programmed, 3, "{stats:?}");
        },
    );
}

#[test]
fn a_route_deleted_by_hand_is_back_within_one_second() {
    in_netns(
        "a_route_deleted_by_hand_is_back_within_one_second",
        || async {
            underlay();
            veth("cali1");
            let m = manager().await;
            set_and_wait(
                &m,
                vec![
                    workload("10.65.0.5/32", "cali1"),
                    via("10.70.0.0/26", &["10.0.0.12"], false),
                ],
            )
            .await;
            sh("ip route del 10.65.0.5/32");
            let took = eventually("ip route show proto 44", Duration::from_secs(1), |o| {
                o.contains("10.65.0.5 dev cali1")
            })
            .await;
            println!("workload route back after {took:?}");
            // Changed by hand to another gateway: put back too.
            sh("ip route replace 10.70.0.0/26 via 10.0.0.99 proto 44");
            let took = eventually("ip route show proto 44", Duration::from_secs(1), |o| {
                o.contains("10.70.0.0/26 via 10.0.0.12")
            })
            .await;
            println!("learned route back after {took:?}");
            tokio::time::timeout(Duration::from_secs(1), m.wait_in_sync())
                .await
                .unwrap_or_else(|_| panic!("not in sync"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(m.stats().drift_repairs, 2, "{:?}", m.stats());
            assert_settled(&m).await;
        },
    );
}

#[test]
fn workload_route_waits_for_its_interface() {
    in_netns("workload_route_waits_for_its_interface", || async {
        let m = manager().await;
        set_and_wait(&m, vec![workload("10.65.0.5/32", "cali1")]).await;
        assert_eq!(proto44().trim(), "");
        assert_eq!(m.stats().routes_deferred, 1);
        // The pod's interface appears after its Pod object.
        veth("cali1");
        eventually("ip route show proto 44", Duration::from_secs(1), |o| {
            o.contains("10.65.0.5 dev cali1")
        })
        .await;
        // It vanishes (its route goes with it), and comes back.
        sh("ip link del cali1");
        eventually("ip route show proto 44", Duration::from_secs(1), |o| {
            o.trim().is_empty()
        })
        .await;
        veth("cali1");
        eventually("ip route show proto 44", Duration::from_secs(1), |o| {
            o.contains("10.65.0.5 dev cali1")
        })
        .await;
        // The IP moves to another pod's interface.
        veth("cali2");
        set_and_wait(&m, vec![workload("10.65.0.5/32", "cali2")]).await;
        assert_eq!(proto44().trim(), "10.65.0.5 dev cali2 scope link linkdown");
        assert_eq!(m.stats().routes_deferred, 0);
        assert_settled(&m).await;
    });
}

#[test]
fn ecmp_learned_route_has_both_next_hops() {
    in_netns("ecmp_learned_route_has_both_next_hops", || async {
        underlay();
        let m = manager().await;
        set_and_wait(
            &m,
            vec![
                via("10.70.0.0/26", &["10.0.0.13", "10.0.0.12"], false),
                via("fd00:70::/122", &["fd00::12", "fd00::13"], false),
            ],
        )
        .await;
        let v4 = proto44();
        assert!(v4.starts_with("10.70.0.0/26 \n"), "{v4}");
        assert!(
            v4.contains("nexthop via 10.0.0.12 dev ul0 weight 1"),
            "{v4}"
        );
        assert!(
            v4.contains("nexthop via 10.0.0.13 dev ul0 weight 1"),
            "{v4}"
        );
        let v6 = proto44_v6();
        assert!(v6.contains("nexthop via fd00::12 dev ul0 weight 1"), "{v6}");
        assert!(v6.contains("nexthop via fd00::13 dev ul0 weight 1"), "{v6}");
        assert_settled(&m).await;
        // One next hop goes away: a plain route remains.
        set_and_wait(&m, vec![via("10.70.0.0/26", &["10.0.0.13"], false)]).await;
        assert_eq!(proto44().trim(), "10.70.0.0/26 via 10.0.0.13 dev ul0");
        assert_eq!(proto44_v6().trim(), "");
        assert_settled(&m).await;
    });
}

#[test]
fn ipip_route_goes_via_tunl0_onlink() {
    in_netns("ipip_route_goes_via_tunl0_onlink", || async {
        underlay();
        let ifaces = InterfaceManager::start(InterfaceConfig::default())
            .await
            .unwrap_or_else(|e| panic!("interface manager: {e}"));
        match ifaces.ensure_tunnel(TunnelConfig::default()).await {
            Ok(_) => {
                let link = sh("ip -d link show tunl0");
                assert!(link.contains("ipip"), "{link}");
            }
            Err(InterfaceError::TunnelUnsupported(_)) => {
                // A kernel without CONFIG_NET_IPIP (this CI's): the route manager only needs
                // a device called tunl0, so a stand-in shows the route's shape, and
                // ensure_tunnel still has to bring an existing device to MTU 1480 and up.
                println!("no IP-in-IP in this kernel: tunl0 is a stand-in veth");
                sh("ip link add tunl0 type veth peer name tunl0p");
                sh("ip link set tunl0p up");
                ifaces
                    .ensure_tunnel(TunnelConfig::default())
                    .await
                    .unwrap_or_else(|e| panic!("tunl0: {e}"));
            }
            Err(e) => panic!("tunl0: {e}"),
        }
        let link = sh("ip link show tunl0");
        assert!(link.contains("mtu 1480"), "{link}");
        assert!(link.contains(",UP"), "{link}");
        let m = manager().await;
        set_and_wait(
            &m,
            vec![
                via("10.70.0.0/26", &["10.0.1.12"], true),
                via("10.71.0.0/26", &["10.0.1.12", "10.0.1.13"], true),
            ],
        )
        .await;
        let out = proto44();
        assert!(
            out.contains("10.70.0.0/26 via 10.0.1.12 dev tunl0 onlink"),
            "{out}"
        );
        assert!(
            out.contains("nexthop via 10.0.1.12 dev tunl0 weight 1 onlink"),
            "{out}"
        );
        assert!(
            out.contains("nexthop via 10.0.1.13 dev tunl0 weight 1 onlink"),
            "{out}"
        );
        assert_settled(&m).await;
    });
}

#[test]
fn blackhole_for_own_block() {
    in_netns("blackhole_for_own_block", || async {
        let m = manager().await;
        set_and_wait(
            &m,
            vec![blackhole("10.65.0.0/26"), blackhole("fd00:65::/122")],
        )
        .await;
        assert_eq!(proto44().trim(), "blackhole 10.65.0.0/26");
        assert_eq!(
            proto44_v6().trim(),
            "blackhole fd00:65::/122 dev lo metric 1024 pref medium"
        );
        assert_settled(&m).await;
    });
}

#[test]
fn ipv6_workload_route() {
    in_netns("ipv6_workload_route", || async {
        veth("cali1");
        let m = manager().await;
        set_and_wait(
            &m,
            vec![
                workload("fd00:65::5/128", "cali1"),
                workload("10.65.0.5/32", "cali1"),
            ],
        )
        .await;
        let v6 = proto44_v6();
        assert!(v6.starts_with("fd00:65::5 dev cali1 metric 1024"), "{v6}");
        assert_eq!(v6.lines().count(), 1, "{v6}");
        // The kernel's own fe80::/64 on the workload interface (there once the pod side is
        // up) is not ours: it stays through a reconcile.
        sh("ip link set pcali1 up");
        eventually("ip -6 route show table main", Duration::from_secs(2), |o| {
            o.contains("fe80::/64 dev cali1 proto kernel")
        })
        .await;
        sh("ip -6 route del fd00:65::5/128");
        eventually(PROTO44_V6, Duration::from_secs(1), |o| {
            o.contains("fd00:65::5 dev cali1")
        })
        .await;
        assert_settled(&m).await;
        let main = sh("ip -6 route show table main");
        assert!(main.contains("fe80::/64 dev cali1 proto kernel"), "{main}");
    });
}

#[test]
fn workload_interface_gets_its_sysctls() {
    in_netns("workload_interface_gets_its_sysctls", || async {
        veth("cali1");
        veth("eth1");
        let _ifaces = InterfaceManager::start(InterfaceConfig::default())
            .await
            .unwrap_or_else(|e| panic!("interface manager: {e}"));
        let want = |i: &str| {
            format!(
                "cat /proc/sys/net/ipv4/conf/{i}/proxy_arp /proc/sys/net/ipv4/neigh/{i}/proxy_delay \
                 /proc/sys/net/ipv4/conf/{i}/forwarding /proc/sys/net/ipv4/conf/{i}/route_localnet \
                 /proc/sys/net/ipv6/conf/{i}/accept_ra /proc/sys/net/ipv6/conf/{i}/proxy_ndp \
                 /proc/sys/net/ipv6/conf/{i}/forwarding"
            )
        };
        let expected = "1\n0\n1\n1\n0\n1\n1\n";
        // An interface there before the manager started.
        assert_eq!(sh(&want("cali1")), expected);
        // Interfaces appearing later, one with a dot in its name.
        veth("cali2");
        veth("cali.7");
        for i in ["cali2", "cali.7"] {
            eventually(&want(i), Duration::from_secs(1), |o| o == expected).await;
        }
        // Not a workload interface: left alone.
        assert_eq!(sh("cat /proc/sys/net/ipv4/conf/eth1/proxy_arp").trim(), "0");
        assert_eq!(sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");
        assert_eq!(sh("cat /proc/sys/net/ipv6/conf/all/forwarding").trim(), "1");
    });
}

#[test]
fn a_learned_route_to_a_gateway_off_link_goes_via_the_route_to_that_gateway() {
    in_netns(
        "a_learned_route_to_a_gateway_off_link_goes_via_the_route_to_that_gateway",
        || async {
            underlay();
            // Nodes of another rack (10.9.0.0/24, fd00:9::/64) are behind the router.
            sh("ip route add default via 10.0.0.254 proto static");
            sh("ip -6 route add default via fd00::fe proto static");
            let m = manager().await;
            let routes = vec![
                via("10.70.0.0/26", &["10.9.0.11"], false),
                via("fd00:70::/122", &["fd00:9::11"], false),
                via("10.71.0.0/26", &["10.0.0.12"], false),
            ];
            set_and_wait(&m, routes.clone()).await;
            assert_eq!(
                proto44(),
                "10.70.0.0/26 via 10.0.0.254 dev ul0 \n10.71.0.0/26 via 10.0.0.12 dev ul0 \n"
            );
            assert_eq!(
                proto44_v6().trim(),
                "fd00:70::/122 via fd00::fe dev ul0 metric 1024 pref medium"
            );
            assert_settled(&m).await;

            // A better route to the gateway appears: the learned route follows it.
            sh("ip route add 10.9.0.0/24 via 10.0.0.253 proto static");
            eventually("ip route show proto 44", Duration::from_secs(1), |o| {
                o.contains("10.70.0.0/26 via 10.0.0.253 dev ul0")
            })
            .await;
            assert_settled(&m).await;

            // No route to the gateway at all: the route is deferred (and removed), not
            // retried against the kernel's refusal.
            sh("ip route del 10.9.0.0/24");
            sh("ip route del default");
            eventually("ip route show proto 44", Duration::from_secs(1), |o| {
                !o.contains("10.70.0.0/26")
            })
            .await;
            tokio::time::timeout(Duration::from_secs(1), m.wait_in_sync())
                .await
                .unwrap_or_else(|_| panic!("not in sync"))
                .unwrap_or_else(|e| panic!("{e}"));
            let stats = m.stats();
            assert_eq!(stats.routes_deferred, 1, "{stats:?}");
            assert_eq!(stats.change_failures, 0, "{stats:?}");
            assert_settled(&m).await;

            // The default route is back: so is the learned route.
            sh("ip route add default via 10.0.0.254 proto static");
            eventually("ip route show proto 44", Duration::from_secs(1), |o| {
                o.contains("10.70.0.0/26 via 10.0.0.254 dev ul0")
            })
            .await;
            tokio::time::timeout(Duration::from_secs(1), m.wait_in_sync())
                .await
                .unwrap_or_else(|_| panic!("not in sync"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(m.stats().routes_deferred, 0, "{:?}", m.stats());
            assert_settled(&m).await;
        },
    );
}
