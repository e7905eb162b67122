//! The conformance suite: the categories of the upstream Kubernetes e2e network policy suite
//! (`test/e2e/network/netpol`), plus Calico order, Pass and Deny, checked with real traffic
//! on both backends.
//!
//! The topology is upstream's: namespaces x, y and z, pods a, b and c in each (nine pods,
//! labels `pod: <name>`, namespaces labelled `ns: <name>` and
//! `kubernetes.io/metadata.name: <name>`), every pod serving TCP, UDP and SCTP on ports 80
//! and 81 with named container ports `serve-80-tcp`, `serve-81-udp`, ... in its Pod object.
//! Pods are network namespaces wired to one node namespace as Calico's CNI wires them; the
//! compiler gets the Pod objects through [`Endpoint::from_pod`].
//!
//! Each case applies policies, then measures full 9×9 reachability tables with real probes
//! and compares them with the expected ones. The probes:
//! - TCP: a connect;
//! - UDP: a datagram the server echoes back;
//! - SCTP: the kernel has no SCTP module, but netfilter and conntrack see SCTP packets sent
//!   on raw sockets; the client sends an INIT, a raw-socket responder in the server pod
//!   answers with an INIT-ACK carrying the INIT's tag, and the probe succeeds when that
//!   INIT-ACK comes back. Checksums are real CRC32c, as conntrack checks them.
//!
//! Probes run concurrently (one process per source pod, one thread per probe); a probe that
//! gets no answer within 400 ms counts as dropped, and any probe that disagrees with the
//! expectation is measured once more with a 1.5 s timeout before it is reported. A pod
//! reaching itself never leaves its namespace, so the diagonal is always expected open.
//!
//! One test per backend builds the topology once and runs every case in order, removing
//! policies and restoring labels between cases; failures are collected and reported together
//! at the end, each with the expected and the measured table. Set
//! `TABBY_CONFORMANCE_CASES=<substring>` to run only the cases whose name contains it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod as K8sPod;
use serde_json::{json, Value};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tabby_acl::exec::Exec;
use tabby_acl::iptables::IptablesApplier;
use tabby_acl::nft::NftApplier;
use tabby_acl::{Compiler, Dataplane, Endpoint, Policy, Settings};
use tabby_tests::pod::Pod;
use tabby_tests::wait::wait_until;
use tabby_tests::Netns;

const PROBE_ENV: &str = "TABBY_CONFORMANCE_PROBE";
const CASES_ENV: &str = "TABBY_CONFORMANCE_CASES";
/// A probe without an answer after this long counts as dropped.
const DROP_TIMEOUT_MS: u64 = 400;
/// The timeout of the second measurement of a probe that disagreed.
const RETRY_TIMEOUT_MS: u64 = 1500;
const MARKER: &str = "TABBY-PROBE-RESULT:";
const SCTP: i32 = 132;
const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const PORTS: [u16; 2] = [80, 81];

// ---------------------------------------------------------------------------------------
// The probe helper: the test binary re-run inside a pod's namespace.
// ---------------------------------------------------------------------------------------

/// Not a test of its own: the test binary runs itself inside a pod's namespace (through
/// `ip netns exec`) as the pod's server or as a client, selected by
/// `TABBY_CONFORMANCE_PROBE`. Without that variable it does nothing.
#[test]
fn probe_helper() {
    let Ok(mode) = std::env::var(PROBE_ENV) else {
        return;
    };
    if mode == "serve" {
        serve();
    } else if let Some(spec) = mode.strip_prefix("probe:") {
        let (timeout, items) = spec.split_once(':').unwrap();
        let timeout = Duration::from_millis(timeout.parse().unwrap());
        let threads: Vec<_> = items
            .split(',')
            .map(|item| {
                let item = item.to_owned();
                std::thread::spawn(move || probe(&item, timeout))
            })
            .collect();
        let result: String = threads
            .into_iter()
            .map(|t| if t.join().unwrap_or(false) { '1' } else { '0' })
            .collect();
        println!("{MARKER}{result}");
    }
}

/// Serves TCP (accept and close), UDP (echo) and SCTP (INIT answered by INIT-ACK) on ports
/// 80 and 81. Every socket is bound before the TCP listeners, so a TCP connect succeeding
/// means the others are ready too.
fn serve() {
    let mut threads = Vec::new();
    for port in PORTS {
        let udp = UdpSocket::bind(("0.0.0.0", port)).unwrap();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        }));
    }
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(SCTP))).unwrap();
    threads.push(std::thread::spawn(move || sctp_responder(&raw)));
    for port in PORTS {
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
        threads.push(std::thread::spawn(move || {
            for s in l.incoming() {
                drop(s);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

/// One probe, `proto/addr/port/source-port`: true when it was answered.
fn probe(item: &str, timeout: Duration) -> bool {
    let w: Vec<&str> = item.split('/').collect();
    let addr: Ipv4Addr = w[1].parse().unwrap();
    let port: u16 = w[2].parse().unwrap();
    let sport: u16 = w[3].parse().unwrap();
    match w[0] {
        "tcp" => TcpStream::connect_timeout(&SocketAddr::from((addr, port)), timeout).is_ok(),
        "udp" => {
            let Ok(s) = UdpSocket::bind(("0.0.0.0", sport)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(timeout));
            if s.connect((addr, port)).is_err() || s.send(b"tabby-probe").is_err() {
                return false;
            }
            let mut buf = [0u8; 64];
            matches!(s.recv(&mut buf), Ok(n) if &buf[..n] == b"tabby-probe")
        }
        "sctp" => sctp_probe(addr, port, sport, timeout),
        other => panic!("unknown protocol {other}"),
    }
}

/// CRC32c (Castagnoli), as SCTP's checksum (RFC 9260 §6.8, Appendix A).
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The check value of CRC-32C (the catalogue's, for "123456789"), so the probes' INITs carry
/// checksums conntrack accepts.
#[test]
fn sctp_probe_checksum_is_crc32c() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}

/// An SCTP packet (RFC 9260 §3.1: source port, destination port, verification tag,
/// checksum) carrying one chunk, with its checksum filled in.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-------------------------------+-------------------------------+
/// |      Source Port Number       |    Destination Port Number    |
/// +-------------------------------+-------------------------------+
/// |                       Verification Tag                        |
/// +---------------------------------------------------------------+
/// |                           Checksum                            |
/// +---------------------------------------------------------------+
/// ```
fn sctp_packet(sport: u16, dport: u16, vtag: u32, chunk: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + chunk.len());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&vtag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(chunk);
    // The CRC is stored least significant octet first (RFC 9260 Appendix A).
    let crc = crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

/// An INIT (type 1) or INIT-ACK (type 2) chunk (RFC 9260 §3.3.2, §3.3.3): initiate tag,
/// a_rwnd, one stream each way, initial TSN; an INIT-ACK carries a State Cookie.
fn init_chunk(kind: u8, tag: u32) -> Vec<u8> {
    let len: u16 = if kind == 2 { 28 } else { 20 };
    let mut c = vec![kind, 0];
    c.extend_from_slice(&len.to_be_bytes());
    c.extend_from_slice(&tag.to_be_bytes());
    c.extend_from_slice(&65535u32.to_be_bytes());
    c.extend_from_slice(&1u16.to_be_bytes());
    c.extend_from_slice(&1u16.to_be_bytes());
    c.extend_from_slice(&tag.wrapping_add(1).to_be_bytes());
    if kind == 2 {
        // State Cookie parameter (type 7), four octets of cookie.
        c.extend_from_slice(&7u16.to_be_bytes());
        c.extend_from_slice(&8u16.to_be_bytes());
        c.extend_from_slice(b"tbby");
    }
    c
}

/// An SCTP packet received on an IPv4 raw socket (which hands over the IP header).
struct SctpIn {
    src: Ipv4Addr,
    sport: u16,
    dport: u16,
    vtag: u32,
    chunk: u8,
    /// The initiate tag of an INIT or INIT-ACK.
    init_tag: u32,
}

fn parse_sctp(b: &[u8]) -> Option<SctpIn> {
    let ihl = usize::from(*b.first()? & 0x0f) * 4;
    if b.len() < ihl + 20 || b[9] != 132 {
        return None;
    }
    let s = &b[ihl..];
    let u16_at = |i: usize| u16::from_be_bytes([s[i], s[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    Some(SctpIn {
        src: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
        sport: u16_at(0),
        dport: u16_at(2),
        vtag: u32_at(4),
        chunk: s[12],
        init_tag: u32_at(16),
    })
}

fn sctp_responder(raw: &Socket) {
    let mut buf = [0u8; 2048];
    let mut r = raw;
    while let Ok(n) = r.read(&mut buf) {
        let Some(p) = parse_sctp(&buf[..n]) else {
            continue;
        };
        if p.chunk != 1 || p.vtag != 0 || !PORTS.contains(&p.dport) {
            continue;
        }
        let my_tag = p.init_tag ^ 0x5a5a_5a5a;
        let ack = sctp_packet(p.dport, p.sport, p.init_tag, &init_chunk(2, my_tag));
        let _ = raw.send_to(&ack, &SockAddr::from(SocketAddrV4::new(p.src, 0)));
    }
}

fn sctp_probe(addr: Ipv4Addr, port: u16, sport: u16, timeout: Duration) -> bool {
    let Ok(sock) = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(SCTP))) else {
        return false;
    };
    let tag = 0x7ab0_0000 | u32::from(sport);
    let init = sctp_packet(sport, port, 0, &init_chunk(1, tag));
    let to = SockAddr::from(SocketAddrV4::new(addr, 0));
    if sock.send_to(&init, &to).is_err() {
        return false;
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(1) || sock.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        let Ok(n) = (&sock).read(&mut buf) else {
            return false;
        };
        if let Some(p) = parse_sctp(&buf[..n]) {
            if p.src == addr && p.sport == port && p.dport == sport && p.vtag == tag && p.chunk == 2
            {
                return true;
            }
        }
    }
}

fn self_in(ns: &str, mode: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .arg(std::env::current_exe().unwrap())
        .args(["probe_helper", "--exact", "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, mode)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    c
}

// ---------------------------------------------------------------------------------------
// The topology.
// ---------------------------------------------------------------------------------------

/// A pod of the topology, by index: namespace `i / 3`, pod `i % 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Id(usize);

impl Id {
    fn ns(self) -> &'static str {
        NAMESPACES[self.0 / 3]
    }
    fn pod(self) -> &'static str {
        PODS[self.0 % 3]
    }
    /// `"x/a"`.
    fn is(self, name: &str) -> bool {
        name.split_once('/') == Some((self.ns(), self.pod()))
    }
    fn name(self) -> String {
        format!("{}/{}", self.ns(), self.pod())
    }
    fn all() -> impl Iterator<Item = Id> {
        (0..9).map(Id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// A kind of probe: protocol and destination port.
type Probe = (Proto, u16);

const TCP80: Probe = (Proto::Tcp, 80);
const TCP81: Probe = (Proto::Tcp, 81);
const UDP80: Probe = (Proto::Udp, 80);
const UDP81: Probe = (Proto::Udp, 81);
const SCTP80: Probe = (Proto::Sctp, 80);
const SCTP81: Probe = (Proto::Sctp, 81);

/// A 9×9 table, `[from][to]`.
type Table = [[bool; 9]; 9];

/// The expected table: `allowed(from, to)`, with the diagonal always open (a pod reaching
/// itself never leaves its namespace).
fn expect(allowed: impl Fn(Id, Id) -> bool) -> Table {
    let mut t = [[false; 9]; 9];
    for f in Id::all() {
        for to in Id::all() {
            t[f.0][to.0] = f == to || allowed(f, to);
        }
    }
    t
}

fn everything(_: Id, _: Id) -> bool {
    true
}

/// Upstream's layout: `.` reachable, `X` not; `!` marks a cell that differs.
fn show(t: &Table, other: &Table) -> String {
    let mut s = String::from("     ");
    for to in Id::all() {
        let _ = write!(s, "{} ", to.name());
    }
    s.push('\n');
    for f in Id::all() {
        let _ = write!(s, "{}  ", f.name());
        for to in Id::all() {
            let c = if t[f.0][to.0] { '.' } else { 'X' };
            let d = if t[f.0][to.0] == other[f.0][to.0] {
                ' '
            } else {
                '!'
            };
            let _ = write!(s, " {c}{d} ");
        }
        s.push('\n');
    }
    s
}

struct PodState {
    id: Id,
    ip: Ipv4Addr,
    object: Value,
    pod: Pod,
}

/// The shared topology of one backend, and the results of the cases run on it.
struct Topo {
    backend: &'static str,
    servers: Vec<Child>,
    dp: Box<dyn Dataplane>,
    compiler: Compiler,
    pods: Vec<PodState>,
    node: Netns,
    /// The next UDP/SCTP source port: every probe gets a fresh one, so no conntrack entry of
    /// an earlier (allowed) probe can answer for a later one.
    next_port: u16,
    case: String,
    failures: Vec<String>,
    tables: usize,
    probes: usize,
}

impl Drop for Topo {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn namespace_labels(ns: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("ns".to_owned(), ns.to_owned()),
        ("kubernetes.io/metadata.name".to_owned(), ns.to_owned()),
    ])
}

fn pod_object(id: Id, ip: Ipv4Addr) -> Value {
    let mut ports = Vec::new();
    for port in PORTS {
        for proto in ["TCP", "UDP", "SCTP"] {
            ports.push(json!({
                "name": format!("serve-{port}-{}", proto.to_lowercase()),
                "containerPort": port,
                "protocol": proto,
            }));
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": id.pod(), "namespace": id.ns(), "labels": {"pod": id.pod()}},
        "spec": {"nodeName": "node", "containers": [{"name": "cont", "image": "agnhost", "ports": ports}]},
        "status": {"podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]},
    })
}

impl Topo {
    fn new(backend: &'static str) -> Topo {
        let node = Netns::new("node").unwrap();
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            .unwrap();
        // Proxy ARP answers need a route to the target; the node's default route goes into
        // a veth pair that stays inside the node namespace, so no packet ever leaves the
        // namespaces the test created.
        node.ip(&[
            "link", "add", "ext0", "type", "veth", "peer", "name", "ext1",
        ])
        .unwrap();
        node.ip(&["link", "set", "ext0", "up"]).unwrap();
        node.ip(&["link", "set", "ext1", "up"]).unwrap();
        node.ip(&["addr", "add", "10.66.0.1/32", "dev", "ext0"])
            .unwrap();
        node.ip(&["route", "add", "default", "dev", "ext0"])
            .unwrap();
        let exec = Exec::in_netns(node.name());
        let dp: Box<dyn Dataplane> = match backend {
            "nftables" => Box::new(NftApplier::new(exec)),
            _ => Box::new(IptablesApplier::new(exec)),
        };
        let mut t = Topo {
            backend,
            servers: Vec::new(),
            dp,
            compiler: Compiler::new(Settings::default()),
            pods: Vec::new(),
            node,
            next_port: 10_000,
            case: "setup".into(),
            failures: Vec::new(),
            tables: 0,
            probes: 0,
        };
        for id in Id::all() {
            t.wire(id);
        }
        for id in Id::all() {
            let ip = t.pods[id.0].ip;
            let node = t.node.name().to_owned();
            wait_until(
                Duration::from_secs(10),
                &format!("{}'s server listens", id.name()),
                &[],
                || {
                    let out = self_in(&node, &format!("probe:1000:tcp/{ip}/80/0")).output()?;
                    Ok(String::from_utf8_lossy(&out.stdout).contains(&format!("{MARKER}1")))
                },
            )
            .unwrap();
        }
        t.reset();
        t
    }

    /// Wires pod `id` (address 10.65.<ns+1>.<pod+1>) and starts its server.
    fn wire(&mut self, id: Id) {
        let ip = Ipv4Addr::new(10, 65, (id.0 / 3 + 1) as u8, (id.0 % 3 + 1) as u8);
        let pod = Pod::wire(&self.node, id.ns(), id.pod(), &[IpAddr::V4(ip)]).unwrap();
        let iface = pod.host_if.clone();
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
                &format!("{ip}/32"),
                "dev",
                &iface,
                "scope",
                "link",
            ])
            .unwrap();
        self.servers.push(
            self_in(pod.netns.name(), "serve")
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        self.pods.push(PodState {
            id,
            ip,
            object: pod_object(id, ip),
            pod,
        });
    }

    /// Back to the starting point: no policy, baseline labels, applied.
    fn reset(&mut self) {
        let names: Vec<String> = self.compiler.policy_names().map(str::to_owned).collect();
        for n in names {
            self.compiler.remove_policy(&n);
        }
        for ns in NAMESPACES {
            self.compiler.upsert_namespace(ns, namespace_labels(ns));
        }
        for id in Id::all() {
            let ip = self.pods[id.0].ip;
            self.pods[id.0].object = pod_object(id, ip);
            self.push_pod(id);
        }
        self.apply();
    }

    /// Hands pod `id`'s object to the compiler, as the node agent would.
    fn push_pod(&mut self, id: Id) {
        let p = &self.pods[id.0];
        let object: K8sPod = serde_json::from_value(p.object.clone()).unwrap();
        let ep = Endpoint::from_pod(&object, Some("cali")).unwrap();
        assert_eq!(ep.iface.as_deref(), Some(p.pod.host_if.as_str()));
        assert_eq!(p.id, id);
        self.compiler.upsert_endpoint(ep);
    }

    fn apply(&mut self) {
        if let Err(e) = self.dp.apply(&self.compiler.ruleset()) {
            self.fail(format!("apply failed: {e}"));
        }
    }

    fn fail(&mut self, what: String) {
        eprintln!("[{}] {}: FAIL: {what}", self.backend, self.case);
        self.failures
            .push(format!("[{}] {}: {what}", self.backend, self.case));
    }

    // Changes, each applied at once.

    fn k8s(&mut self, v: Value) {
        let np = serde_json::from_value(v).unwrap();
        self.compiler.upsert_policy(Policy::from_k8s(&np).unwrap());
        self.apply();
    }

    fn calico(&mut self, v: Value) {
        let np = serde_json::from_value(v).unwrap();
        self.compiler
            .upsert_policy(Policy::from_calico(&np).unwrap());
        self.apply();
    }

    fn global(&mut self, v: Value) {
        let np = serde_json::from_value(v).unwrap();
        self.compiler
            .upsert_policy(Policy::from_calico_global(&np).unwrap());
        self.apply();
    }

    fn delete_k8s(&mut self, ns: &str, name: &str) {
        self.compiler.remove_policy(&Policy::k8s_name(ns, name));
        self.apply();
    }

    fn label_namespace(&mut self, ns: &str, extra: &[(&str, &str)]) {
        let mut l = namespace_labels(ns);
        l.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        self.compiler.upsert_namespace(ns, l);
        self.apply();
    }

    fn label_pod(&mut self, name: &str, labels: Value) {
        let id = Id::all().find(|i| i.is(name)).unwrap();
        self.pods[id.0].object["metadata"]["labels"] = labels;
        self.push_pod(id);
        self.apply();
    }

    // Measuring.

    /// Runs probes `(from, probe, to)` concurrently: one process per source pod, a thread
    /// per probe inside it.
    fn run(&mut self, items: &[(Id, Probe, Id)], timeout_ms: u64) -> Vec<bool> {
        let mut by_source: BTreeMap<usize, Vec<(usize, String)>> = BTreeMap::new();
        for (k, (from, (proto, port), to)) in items.iter().enumerate() {
            let sport = match proto {
                Proto::Tcp => 0,
                _ => {
                    self.next_port = if self.next_port >= 65_000 {
                        10_000
                    } else {
                        self.next_port + 1
                    };
                    self.next_port
                }
            };
            let ip = self.pods[to.0].ip;
            by_source
                .entry(from.0)
                .or_default()
                .push((k, format!("{}/{ip}/{port}/{sport}", proto.name())));
        }
        self.probes += items.len();
        let children: Vec<(Vec<usize>, Child)> = by_source
            .into_iter()
            .map(|(from, list)| {
                let spec: Vec<&str> = list.iter().map(|(_, s)| s.as_str()).collect();
                let child = self_in(
                    self.pods[from].pod.netns.name(),
                    &format!("probe:{timeout_ms}:{}", spec.join(",")),
                )
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
                (list.into_iter().map(|(k, _)| k).collect(), child)
            })
            .collect();
        let mut out = vec![false; items.len()];
        for (ks, child) in children {
            let o = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&o.stdout);
            let bits = text
                .split(MARKER)
                .nth(1)
                .map(|r| {
                    r.chars()
                        .take_while(|c| *c == '0' || *c == '1')
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            assert_eq!(bits.len(), ks.len(), "probe helper output: {text}");
            for (k, b) in ks.into_iter().zip(bits) {
                out[k] = b == '1';
            }
        }
        out
    }

    /// Measures the full table of every probe kind in `checks` (all at once) and compares
    /// each with its expectation; a disagreeing cell is measured again with a longer
    /// timeout before it counts.
    fn check(&mut self, what: &str, checks: &[(Probe, Table)]) {
        let mut items = Vec::new();
        for (probe, _) in checks {
            for f in Id::all() {
                for to in Id::all() {
                    items.push((f, *probe, to));
                }
            }
        }
        let mut got = self.run(&items, DROP_TIMEOUT_MS);
        let expected: Vec<bool> = checks
            .iter()
            .flat_map(|(_, t)| t.iter().flat_map(|row| row.iter().copied()))
            .collect();
        let differ: Vec<usize> = (0..items.len())
            .filter(|&k| got[k] != expected[k])
            .collect();
        if !differ.is_empty() {
            let again: Vec<_> = differ.iter().map(|&k| items[k]).collect();
            for (k, v) in differ.iter().zip(self.run(&again, RETRY_TIMEOUT_MS)) {
                got[*k] = v;
            }
        }
        for (n, (probe, want)) in checks.iter().enumerate() {
            self.tables += 1;
            let mut seen = [[false; 9]; 9];
            for (k, cell) in seen.iter_mut().flatten().enumerate() {
                *cell = got[n * 81 + k];
            }
            if seen != *want {
                let msg = format!(
                    "{what}: {}/{} reachability differs (rows: client, columns: server; \
                     `.` reachable, `X` not, `!` differs)\nexpected:\n{}measured:\n{}",
                    probe.0.name(),
                    probe.1,
                    show(want, &seen),
                    show(&seen, want)
                );
                self.fail(msg);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The cases.
// ---------------------------------------------------------------------------------------

fn knp(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn pods(name: &str) -> Value {
    json!({"matchLabels": {"pod": name}})
}

fn nss(name: &str) -> Value {
    json!({"matchLabels": {"ns": name}})
}

/// The policy selector of pod x/a.
fn xa() -> Value {
    pods("a")
}

type Case = (&'static str, fn(&mut Topo));

fn case(name: &'static str, run: fn(&mut Topo)) -> Case {
    (name, run)
}

fn cases() -> Vec<Case> {
    vec![
        case("no policy: everything is open", |t| {
            let all = expect(everything);
            t.check(
                "no policy",
                &[
                    (TCP80, all),
                    (TCP81, all),
                    (UDP80, all),
                    (UDP81, all),
                    (SCTP80, all),
                    (SCTP81, all),
                ],
            );
        }),
        case("default deny ingress", |t| {
            t.k8s(knp(
                "x",
                "deny-ingress",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            ));
            let e = expect(|_, to| to.ns() != "x");
            t.check(
                "x denies all ingress",
                &[(TCP80, e), (UDP81, e), (SCTP80, e)],
            );
        }),
        case("default deny egress", |t| {
            t.k8s(knp(
                "x",
                "deny-egress",
                json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            ));
            let e = expect(|f, _| f.ns() != "x");
            t.check(
                "x denies all egress",
                &[(TCP80, e), (UDP80, e), (SCTP81, e)],
            );
        }),
        case("default deny all (ingress and egress)", |t| {
            t.k8s(knp(
                "x",
                "deny-all",
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            ));
            let e = expect(|f, to| f.ns() != "x" && to.ns() != "x");
            t.check("x denies everything", &[(TCP80, e), (UDP80, e)]);
        }),
        case("pod selector: x/a from x/b only", |t| {
            t.k8s(knp(
                "x",
                "a-from-b",
                json!({"podSelector": xa(),
                "ingress": [{"from": [{"podSelector": pods("b")}]}]}),
            ));
            let e = expect(|f, to| !to.is("x/a") || f.is("x/b"));
            t.check("x/a from pod=b of its namespace", &[(TCP80, e), (UDP81, e)]);
        }),
        case("pod selector {}: x/a from every pod of x", |t| {
            t.k8s(knp(
                "x",
                "a-from-x",
                json!({"podSelector": xa(),
                "ingress": [{"from": [{"podSelector": {}}]}]}),
            ));
            let e = expect(|f, to| !to.is("x/a") || f.ns() == "x");
            t.check("x/a from its namespace", &[(TCP80, e)]);
        }),
        case("namespace selector: x/a from namespace y", |t| {
            t.k8s(knp(
                "x",
                "a-from-y",
                json!({"podSelector": xa(),
                "ingress": [{"from": [{"namespaceSelector": nss("y")}]}]}),
            ));
            let e = expect(|f, to| !to.is("x/a") || f.ns() == "y");
            t.check("x/a from ns=y", &[(TCP80, e)]);
        }),
        case("namespace selector {}: x/a from every namespace", |t| {
            t.k8s(knp(
                "x",
                "deny",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            ));
            t.k8s(knp(
                "x",
                "a-from-all",
                json!({"podSelector": xa(),
                "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
            ));
            let e = expect(|_, to| to.ns() != "x" || to.is("x/a"));
            t.check(
                "x/a from every namespace, the rest of x denied",
                &[(TCP80, e)],
            );
        }),
        case("pod and namespace selector in one peer", |t| {
            t.k8s(knp("x", "a-from-yb", json!({"podSelector": xa(),
                "ingress": [{"from": [{"namespaceSelector": nss("y"), "podSelector": pods("b")}]}]})));
            let e = expect(|f, to| !to.is("x/a") || f.is("y/b"));
            t.check("x/a from pod=b in ns=y", &[(TCP80, e)]);
        }),
        case("pod and namespace selector as two peers", |t| {
            t.k8s(knp("x", "a-from-y-or-b", json!({"podSelector": xa(),
                "ingress": [{"from": [{"namespaceSelector": nss("y")}, {"podSelector": pods("b")}]}]})));
            let e = expect(|f, to| !to.is("x/a") || f.ns() == "y" || f.is("x/b"));
            t.check("x/a from ns=y or from x/b", &[(TCP80, e)]);
        }),
        case("match expressions: In and NotIn", |t| {
            t.k8s(knp("x", "a-exprs", json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a"]}]},
                "ingress": [{"from": [{
                    "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["y"]}]},
                    "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}}]}]})));
            let e = expect(|f, to| !to.is("x/a") || (f.ns() != "y" && f.pod() != "a"));
            t.check("x/a from pod in (b,c) of ns not in (y)", &[(TCP80, e)]);
        }),
        case("match expressions: Exists and DoesNotExist", |t| {
            t.label_namespace("z", &[("team", "blue")]);
            t.label_pod("y/c", json!({"pod": "c", "role": "client"}));
            t.k8s(knp("x", "a-exists", json!({"podSelector": xa(),
                "ingress": [
                    {"from": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}}]},
                    {"from": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]},
                               "podSelector": {"matchExpressions": [{"key": "role", "operator": "Exists"}]}}]}]})));
            let e = expect(|f, to| !to.is("x/a") || f.ns() == "z" || f.is("y/c"));
            t.check(
                "x/a from ns with team, or pods with role elsewhere",
                &[(TCP80, e)],
            );
        }),
        case("numeric port", |t| {
            t.k8s(knp(
                "x",
                "a-on-81",
                json!({"podSelector": xa(),
                "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 81}]}]}),
            ));
            let open = expect(everything);
            let shut = expect(|_, to| !to.is("x/a"));
            t.check(
                "x/a only on TCP 81",
                &[(TCP80, shut), (TCP81, open), (UDP81, shut)],
            );
        }),
        case("named port (TCP)", |t| {
            t.k8s(knp(
                "x",
                "a-on-named",
                json!({"podSelector": xa(),
                "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
            ));
            let open = expect(everything);
            let shut = expect(|_, to| !to.is("x/a"));
            t.check(
                "x/a only on serve-81-tcp",
                &[(TCP80, shut), (TCP81, open), (UDP81, shut)],
            );
        }),
        case("named port (UDP) from a namespace", |t| {
            t.k8s(knp(
                "x",
                "a-on-named-udp",
                json!({"podSelector": xa(),
                "ingress": [{"from": [{"namespaceSelector": nss("y")}],
                             "ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}]}),
            ));
            let shut = expect(|_, to| !to.is("x/a"));
            let from_y = expect(|f, to| !to.is("x/a") || f.ns() == "y");
            t.check(
                "x/a on serve-80-udp from ns=y",
                &[(UDP80, from_y), (UDP81, shut), (TCP80, shut)],
            );
        }),
        case("endPort ranges", |t| {
            t.k8s(knp("x", "a-range", json!({"podSelector": xa(),
                "ingress": [{"ports": [{"port": 81, "endPort": 90}, {"port": 79, "endPort": 81, "protocol": "UDP"}]}]})));
            let open = expect(everything);
            let shut = expect(|_, to| !to.is("x/a"));
            t.check(
                "x/a on TCP 81-90 and UDP 79-81",
                &[
                    (TCP80, shut),
                    (TCP81, open),
                    (UDP80, open),
                    (UDP81, open),
                    (SCTP80, shut),
                ],
            );
        }),
        case("TCP rule opens neither UDP nor SCTP", |t| {
            t.k8s(knp(
                "x",
                "a-tcp",
                json!({"podSelector": xa(),
                "ingress": [{"ports": [{"port": 80, "protocol": "TCP"}]}]}),
            ));
            let open = expect(everything);
            let shut = expect(|_, to| !to.is("x/a"));
            t.check(
                "x/a on TCP 80",
                &[(TCP80, open), (UDP80, shut), (SCTP80, shut), (TCP81, shut)],
            );
        }),
        case("UDP rule opens neither TCP nor SCTP", |t| {
            t.k8s(knp(
                "x",
                "a-udp",
                json!({"podSelector": xa(),
                "ingress": [{"ports": [{"port": 80, "protocol": "UDP"}]}]}),
            ));
            let open = expect(everything);
            let shut = expect(|_, to| !to.is("x/a"));
            t.check(
                "x/a on UDP 80",
                &[(UDP80, open), (TCP80, shut), (SCTP80, shut), (UDP81, shut)],
            );
        }),
        case("SCTP rule opens neither TCP nor UDP", |t| {
            t.k8s(knp(
                "x",
                "a-sctp",
                json!({"podSelector": xa(),
                "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}]}),
            ));
            let open = expect(everything);
            let shut = expect(|_, to| !to.is("x/a"));
            t.check(
                "x/a on SCTP 80",
                &[(SCTP80, open), (TCP80, shut), (UDP80, shut), (SCTP81, shut)],
            );
        }),
        case("any port of one protocol", |t| {
            t.k8s(knp(
                "x",
                "a-any-udp",
                json!({"podSelector": xa(),
                "ingress": [{"ports": [{"protocol": "UDP"}]}]}),
            ));
            let open = expect(everything);
            let shut = expect(|_, to| !to.is("x/a"));
            t.check(
                "x/a on every UDP port",
                &[(UDP80, open), (UDP81, open), (TCP80, shut), (SCTP81, shut)],
            );
        }),
        case("ipBlock with except (ingress)", |t| {
            t.k8s(knp("x", "a-cidr", json!({"podSelector": xa(),
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.65.0.0/16", "except": ["10.65.2.0/24", "10.65.3.3/32"]}}]}]})));
            let e = expect(|f, to| !to.is("x/a") || (f.ns() != "y" && !f.is("z/c")));
            t.check("x/a from 10.65/16 except y and z/c", &[(TCP80, e)]);
        }),
        case("ipBlock with except (egress)", |t| {
            t.k8s(knp("x", "a-cidr-out", json!({"podSelector": xa(), "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.65.2.0/24", "except": ["10.65.2.2/32"]}}]}]})));
            let e = expect(|f, to| !f.is("x/a") || to.is("y/a") || to.is("y/c"));
            t.check("x/a to y except y/b", &[(TCP80, e), (UDP80, e)]);
        }),
        case("egress to pod and namespace selector on a port", |t| {
            t.k8s(knp("x", "a-to-ya", json!({"podSelector": xa(), "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": nss("y"), "podSelector": pods("a")}], "ports": [{"port": 80}]}]})));
            let on80 = expect(|f, to| !f.is("x/a") || to.is("y/a"));
            let on81 = expect(|f, _| !f.is("x/a"));
            t.check("x/a to y/a on TCP 80 only", &[(TCP80, on80), (TCP81, on81)]);
        }),
        case("egress to a named port", |t| {
            t.k8s(knp(
                "x",
                "a-to-named",
                json!({"podSelector": xa(), "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]}),
            ));
            let open = expect(everything);
            let shut = expect(|f, _| !f.is("x/a"));
            t.check(
                "x/a out on serve-81-udp only",
                &[(UDP81, open), (UDP80, shut), (TCP81, shut)],
            );
        }),
        case("ingress and egress controlled independently", |t| {
            t.k8s(knp(
                "x",
                "a-no-egress",
                json!({"podSelector": xa(), "policyTypes": ["Egress"]}),
            ));
            t.k8s(knp(
                "x",
                "b-no-ingress",
                json!({"podSelector": pods("b"), "policyTypes": ["Ingress"]}),
            ));
            let e = expect(|f, to| !f.is("x/a") && !to.is("x/b"));
            t.check("x/a sends nothing, x/b receives nothing", &[(TCP80, e)]);
        }),
        case("client egress deny wins over a server allowing", |t| {
            t.k8s(knp(
                "x",
                "a-no-egress",
                json!({"podSelector": xa(), "policyTypes": ["Egress"]}),
            ));
            t.k8s(knp(
                "y",
                "allow-all",
                json!({"podSelector": {}, "ingress": [{}]}),
            ));
            let e = expect(|f, _| !f.is("x/a"));
            t.check("x/a cannot reach y though y allows all", &[(TCP80, e)]);
        }),
        case("several policies add up", |t| {
            t.k8s(knp(
                "x",
                "a-from-b",
                json!({"podSelector": xa(),
                "ingress": [{"from": [{"podSelector": pods("b")}]}]}),
            ));
            t.k8s(knp(
                "x",
                "a-from-z",
                json!({"podSelector": xa(),
                "ingress": [{"from": [{"namespaceSelector": nss("z")}]}]}),
            ));
            let e = expect(|f, to| !to.is("x/a") || f.is("x/b") || f.ns() == "z");
            t.check("x/a from x/b or ns=z", &[(TCP80, e)]);
        }),
        case("allow-all ingress beside a default deny", |t| {
            t.k8s(knp(
                "x",
                "deny",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            ));
            t.k8s(knp(
                "x",
                "a-allow-all",
                json!({"podSelector": xa(), "ingress": [{}]}),
            ));
            let e = expect(|_, to| to.ns() != "x" || to.is("x/a"));
            t.check("x/a open, x/b and x/c shut", &[(TCP80, e), (UDP80, e)]);
            t.k8s(knp(
                "x",
                "deny-egress",
                json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            ));
            t.k8s(knp(
                "x",
                "a-out-all",
                json!({"podSelector": xa(), "policyTypes": ["Egress"], "egress": [{}]}),
            ));
            let e =
                expect(|f, to| (f.ns() != "x" || f.is("x/a")) && (to.ns() != "x" || to.is("x/a")));
            t.check("and x/a may send while x/b and x/c may not", &[(TCP80, e)]);
        }),
        case("policy update and delete", |t| {
            t.k8s(knp(
                "x",
                "a-from",
                json!({"podSelector": xa(),
                "ingress": [{"from": [{"podSelector": pods("b")}]}]}),
            ));
            let e = expect(|f, to| !to.is("x/a") || f.is("x/b"));
            t.check("before the update: from x/b", &[(TCP80, e)]);
            t.k8s(knp(
                "x",
                "a-from",
                json!({"podSelector": xa(),
                "ingress": [{"from": [{"podSelector": pods("c")}], "ports": [{"port": 81}]}]}),
            ));
            let on80 = expect(|_, to| !to.is("x/a"));
            let on81 = expect(|f, to| !to.is("x/a") || f.is("x/c"));
            t.check(
                "after the update: from x/c on 81",
                &[(TCP80, on80), (TCP81, on81)],
            );
            t.delete_k8s("x", "a-from");
            let all = expect(everything);
            t.check("after the delete: open", &[(TCP80, all), (TCP81, all)]);
        }),
        case("namespace label change", |t| {
            t.k8s(knp(
                "x",
                "a-from-blue",
                json!({"podSelector": xa(),
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}),
            ));
            let e = expect(|_, to| !to.is("x/a"));
            t.check("no namespace is blue", &[(TCP80, e)]);
            t.label_namespace("y", &[("team", "blue")]);
            let e = expect(|f, to| !to.is("x/a") || f.ns() == "y");
            t.check("y turned blue", &[(TCP80, e)]);
            t.label_namespace("y", &[]);
            t.label_namespace("z", &[("team", "blue")]);
            let e = expect(|f, to| !to.is("x/a") || f.ns() == "z");
            t.check("y lost it, z turned blue", &[(TCP80, e)]);
        }),
        case("pod label change (peer)", |t| {
            t.k8s(knp("x", "a-from-clients", json!({"podSelector": xa(),
                "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}]}]})));
            let e = expect(|_, to| !to.is("x/a"));
            t.check("no client", &[(TCP80, e)]);
            t.label_pod("z/c", json!({"pod": "c", "role": "client"}));
            let e = expect(|f, to| !to.is("x/a") || f.is("z/c"));
            t.check("z/c became a client", &[(TCP80, e)]);
            t.label_pod("z/c", json!({"pod": "c"}));
            let e = expect(|_, to| !to.is("x/a"));
            t.check("z/c is no client any more", &[(TCP80, e)]);
        }),
        case("pod label change (policy target)", |t| {
            t.k8s(knp(
                "x",
                "isolate",
                json!({"podSelector": {"matchLabels": {"isolated": "yes"}},
                "policyTypes": ["Ingress"]}),
            ));
            t.check("nothing isolated yet", &[(TCP80, expect(everything))]);
            t.label_pod("x/b", json!({"pod": "b", "isolated": "yes"}));
            let e = expect(|_, to| !to.is("x/b"));
            t.check("x/b isolated", &[(TCP80, e)]);
            t.label_pod("x/b", json!({"pod": "b"}));
            t.check("x/b open again", &[(TCP80, expect(everything))]);
        }),
        case(
            "Calico order: a Deny before a Kubernetes allow decides",
            |t| {
                t.k8s(knp(
                    "x",
                    "a-allow-all",
                    json!({"podSelector": xa(), "ingress": [{}]}),
                ));
                let gnp = |order: f64| {
                    json!({
                "apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
                "metadata": {"name": "deny-y-to-xa"},
                "spec": {"order": order,
                         "selector": "projectcalico.org/namespace == 'x' && pod == 'a'",
                         "ingress": [{"action": "Deny", "source": {"namespaceSelector": "ns == 'y'"}}]}})
                };
                t.global(gnp(10.0));
                let e = expect(|f, to| !to.is("x/a") || f.ns() != "y");
                t.check(
                    "order 10 Deny before order 1000 allow",
                    &[(TCP80, e), (UDP80, e)],
                );
                t.global(gnp(2000.0));
                t.check(
                    "order 2000 Deny after order 1000 allow",
                    &[(TCP80, expect(everything))],
                );
            },
        ),
        case("Calico Pass skips the rest of the tier", |t| {
            t.global(json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
                "metadata": {"name": "pass-z"},
                "spec": {"order": 10, "selector": "projectcalico.org/namespace == 'x'",
                         "ingress": [{"action": "Pass", "source": {"namespaceSelector": "ns == 'z'"}}]}}));
            // Only a Pass: the others reach the end of the tier, which drops.
            let e = expect(|f, to| to.ns() != "x" || f.ns() == "z");
            t.check("Pass from z, end of tier for the rest", &[(TCP80, e)]);
            t.calico(json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "deny-z", "namespace": "x"},
                "spec": {"order": 20, "selector": "all()",
                         "ingress": [{"action": "Deny", "source": {"namespaceSelector": "ns == 'z'"}},
                                     {"action": "Allow"}]}}));
            // z passed over the Deny: its profile allows.
            t.check(
                "the Deny after the Pass does not see z",
                &[(TCP80, expect(everything))],
            );
        }),
        case("Calico Deny and namespaced selectors", |t| {
            t.calico(json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "no-c", "namespace": "x"},
                "spec": {"order": 100, "selector": "all()", "types": ["Egress"],
                         "egress": [{"action": "Deny", "protocol": "TCP", "destination": {"selector": "pod == 'c'"}},
                                    {"action": "Allow"}]}}));
            let tcp = expect(|f, to| f.ns() != "x" || !to.is("x/c"));
            t.check(
                "x may not send TCP to x/c (the selector is namespaced)",
                &[(TCP80, tcp), (UDP80, expect(everything))],
            );
        }),
        case("Calico notNets, notSelector and ports", |t| {
            t.global(json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
                "metadata": {"name": "to-b"},
                "spec": {"order": 100, "selector": "pod == 'b'",
                         "ingress": [{"action": "Allow", "protocol": "TCP",
                                      "source": {"notNets": ["10.65.3.0/24"], "notSelector": "pod == 'c'"},
                                      "destination": {"ports": ["80:80"]}}]}}));
            let on80 = expect(|f, to| to.pod() != "b" || (f.ns() != "z" && f.pod() != "c"));
            let on81 = expect(|_, to| to.pod() != "b");
            t.check(
                "b pods on TCP 80 from outside z and not from c pods",
                &[(TCP80, on80), (TCP81, on81)],
            );
        }),
    ]
}

fn conformance(backend: &'static str) {
    if tabby_tests::skip().unwrap() {
        return;
    }
    let filter = std::env::var(CASES_ENV).unwrap_or_default();
    let started = Instant::now();
    let mut t = Topo::new(backend);
    eprintln!("[{backend}] topology up in {:?}", started.elapsed());
    let mut ran = 0;
    for (name, case) in cases() {
        if !name.contains(filter.as_str()) {
            continue;
        }
        let t0 = Instant::now();
        t.case = name.to_owned();
        case(&mut t);
        t.case = format!("{name} (reset)");
        t.reset();
        ran += 1;
        eprintln!("[{backend}] {name}: {:?}", t0.elapsed());
    }
    eprintln!(
        "[{backend}] {ran} cases, {} tables, {} probes in {:?}; {} failures",
        t.tables,
        t.probes,
        started.elapsed(),
        t.failures.len()
    );
    assert!(
        t.failures.is_empty(),
        "{} failures:\n\n{}",
        t.failures.len(),
        t.failures.join("\n")
    );
}

#[test]
fn upstream_netpol_categories_and_calico_hold_with_real_traffic_on_nftables() {
    conformance("nftables");
}

#[test]
fn upstream_netpol_categories_and_calico_hold_with_real_traffic_on_iptables() {
    conformance("iptables");
}
