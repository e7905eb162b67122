//! `tabby bench reflector`: how fast a route reflector with N clients converges, and how much
//! memory it needs, tabby's (`tabby route-reflector`) against BIRD 2's, in the same run
//! (docs/benchmarks.md).
//!
//! ```text
//!   tabby bench reflector (outer, root), per run, per contender:
//!     netns R (reflector)                      netns C (clients)
//!       lo: 10.0.0.1, fd00::1                    lo: 10.1.0.1.., fd00:1::1.. (one of each per client)
//!       rr0 10.255.0.1/30 ---- veth ---- cl0 10.255.0.2/30
//!       tabby route-reflector --datastore        tabby bench reflector --inner clients:
//!         file:DIR (N client Nodes, a BGPPeer     N tabby_bgp Speakers, each with an IPv4 and
//!         nodeSelector all(), peerSelector        an IPv6 session to the reflector, each
//!         route-reflector == 'true')              originating one /26 and one /122;
//!       or bird -c DIR/bird.conf                  JSON result on stdout
//!     outer: the reflector's VmHWM and CPU from /proc/<pid>; namespaces, processes and
//!     files deleted at the end, on errors and on SIGINT/SIGTERM
//! ```
//!
//! Sessions are per family, as Calico configures them (felix/src/calc/bgp.rs rule 1; BIRD's
//! `bird.cfg` and `bird6.cfg`): every client has an IPv4 session carrying its /26 and an IPv6
//! session carrying its /122, so a run has 2N sessions and 2N prefixes, and each client must
//! end up holding all 2N (its own two and the 2N-2 reflected to it).
//!
//! Convergence is measured in the clients' process: the time from the last of the 2N
//! sessions reaching Established (as the clients see it) to the moment the last client
//! holds all 2N prefixes; also from the start of the clients. Every client's completion is
//! taken from its own table change stream, not by polling.

use crate::bench_cmd::{check, machine, run_cmd, Netns};
use crate::bench_proc::{
    cpu_ticks, finish, proc_file, seconds_between, status_kib, Guarded, Scratch, TICKS_PER_SECOND,
};
use anyhow::{bail, Context as _};
use clap::{Args as ClapArgs, ValueEnum};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tabby_bgp::speaker::{PeerConfig, Speaker, SpeakerConfig, BGP_PORT};
use tabby_bgp::wire::NextHop;
use tabby_bgp::{Family, Prefix};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// `tabby bench reflector` flags.
#[derive(Debug, ClapArgs)]
pub struct ReflectorArgs {
    /// Route reflector clients, each with an IPv4 and an IPv6 session.
    #[arg(long, default_value_t = 1000)]
    clients: u32,
    /// The reflectors to measure, in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Contender::Tabby, Contender::Bird])]
    contenders: Vec<Contender>,
    /// Repetitions (each contender once per run).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Give up on a contender this many seconds after its clients started.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The BIRD 2 binary.
    #[arg(long, default_value = "bird")]
    bird: PathBuf,
    /// Copy each reflector's log (`RUST_LOG` sets tabby's level, default warn) to
    /// DIR/<contender>-<run>.log, BIRD's to DIR/bird-<run>-bird.log, and the clients' log
    /// (`RUST_LOG`, default error) to DIR/<contender>-<run>-clients.log.
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<PathBuf>,
    /// Print only JSON lines (one per run and contender, then a summary).
    #[arg(long)]
    json: bool,
    /// Light clients: minimal sessions that count the blocks they receive instead of full
    /// speakers holding the table (whose memory grows with the square of the clients); for
    /// thousands of clients.
    #[arg(long)]
    light: bool,
    /// Internal: the clients, run inside their namespace by the outer process.
    #[arg(long, hide = true, value_enum)]
    inner: Option<InnerPart>,
}

/// A route reflector under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Contender {
    /// `tabby route-reflector` with a file datastore.
    Tabby,
    /// BIRD 2 with `rr client` sessions.
    Bird,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Tabby => "tabby",
            Contender::Bird => "bird",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InnerPart {
    /// Run the clients until they converge and print the result.
    Clients,
}

/// Most clients: their addresses come from 10.1.0.0/16 and their IPv4 blocks from
/// 10.128.0.0/10.
const MAX_CLIENTS: u32 = 60_000;
const AS: u32 = 64512;
const HOLD_TIME: u16 = 90;
const RR_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const RR_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const CLUSTER_ID: Ipv4Addr = Ipv4Addr::new(244, 0, 0, 1);
const CLIENT_V4_BASE: u32 = u32::from_be_bytes([10, 1, 0, 0]);
const CLIENT_V6_BASE: u128 = 0xfd00_0001_u128 << 96;
const BLOCK_V4_BASE: u32 = u32::from_be_bytes([10, 128, 0, 0]);
const BLOCK_V6_BASE: u128 = 0xfd10_u128 << 112;
/// The label the BGPPeer's peerSelector picks the reflector by.
const REFLECTOR_LABEL: &str = "route-reflector";

/// Runs `tabby bench reflector`.
pub fn run(args: ReflectorArgs) -> ExitCode {
    finish(args.validate(), move || match args.inner {
        Some(InnerPart::Clients) => inner(&args),
        None => crate::bench_proc::with_signals(args, outer),
    })
}

impl ReflectorArgs {
    fn validate(&self) -> Result<(), String> {
        if !(2..=MAX_CLIENTS).contains(&self.clients) {
            return Err(format!("--clients must be between 2 and {MAX_CLIENTS}"));
        }
        if self.runs == 0 {
            return Err("--runs must be at least 1".into());
        }
        if self.contenders.is_empty() {
            return Err("--contenders names none".into());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The clients' addresses and blocks: client i (from 0).

fn client_v4(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(CLIENT_V4_BASE + i + 1)
}

fn client_v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(CLIENT_V6_BASE + u128::from(i) + 1)
}

/// Client i's IPv4 block: a /26 of 10.128.0.0/10 (Calico's default IPv4 block size).
fn block_v4(i: u32) -> Prefix {
    let addr = Ipv4Addr::from(BLOCK_V4_BASE + i * 64);
    Prefix::new(IpAddr::V4(addr), 26).unwrap_or_else(|_| unreachable!("26 <= 32"))
}

/// Client i's IPv6 block: a /122 of fd10::/16 (Calico's default IPv6 block size).
fn block_v6(i: u32) -> Prefix {
    let addr = Ipv6Addr::from(BLOCK_V6_BASE + u128::from(i) * 64);
    Prefix::new(IpAddr::V6(addr), 122).unwrap_or_else(|_| unreachable!("122 <= 128"))
}

/// The client that owns a block, and the next hop it must be reflected with.
fn owner(prefix: &Prefix) -> Option<(u32, NextHop)> {
    match prefix.addr() {
        IpAddr::V4(a) => {
            let i = (u32::from(a).checked_sub(BLOCK_V4_BASE)?) / 64;
            Some((i, NextHop::V4(client_v4(i))))
        }
        IpAddr::V6(a) => {
            let i = u32::try_from((u128::from(a).checked_sub(BLOCK_V6_BASE)?) / 64).ok()?;
            Some((
                i,
                NextHop::V6 {
                    global: client_v6(i),
                    link_local: None,
                },
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------
// The inner part: N client speakers in the clients' namespace.

fn inner(args: &ReflectorArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let timeout = Duration::from_secs(args.timeout);
    let result = if args.light {
        runtime.block_on(run_light_clients(args.clients, timeout))?
    } else {
        runtime.block_on(run_clients(args.clients, timeout))?
    };
    println!("{result}");
    // Dropping a few thousand sessions one by one takes longer than the process exit does.
    std::process::exit(0)
}

async fn run_light_clients(n: u32, timeout: Duration) -> anyhow::Result<Value> {
    use crate::bench_light::{Expect, LightClients, LightSession};
    let started = SystemTime::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let cpu0 = cpu_ticks(&proc_file(None, "stat"))?;
    let mut sessions = Vec::with_capacity(2 * n as usize);
    for i in 0..n {
        for (local, reflector, block, family) in [
            (
                IpAddr::V4(client_v4(i)),
                IpAddr::V4(RR_V4),
                block_v4(i),
                Family::Ipv4Unicast,
            ),
            (
                IpAddr::V6(client_v6(i)),
                IpAddr::V6(RR_V6),
                block_v6(i),
                Family::Ipv6Unicast,
            ),
        ] {
            sessions.push(LightSession {
                index: i,
                local,
                router_id: client_v4(i),
                reflector,
                family,
                hold_time: HOLD_TIME,
                announce: vec![block],
                announce_when_established: false,
            });
        }
    }
    // A session's slots are the clients' indexes: it holds its own block and the n - 1
    // others of its family.
    let expect = Expect {
        slots: n,
        per_session: n,
        owner: Arc::new(owner),
    };
    let clients = LightClients::start(sessions, &expect);
    clients.wait_converged(deadline).await;
    let seen = clients.snapshot();
    let cpu_s = cpu_ticks(&proc_file(None, "stat"))?.saturating_sub(cpu0) as f64 / TICKS_PER_SECOND;

    // A client has converged when both its sessions have (the later of the two).
    let mut done: Vec<Option<SystemTime>> = vec![None; n as usize];
    let mut halves = vec![0u8; n as usize];
    for s in &seen {
        let i = s.index as usize;
        halves[i] += 1;
        done[i] = match (done[i], s.converged) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (_, b) if halves[i] == 1 => b,
            _ => None,
        };
    }
    let converged = done.iter().filter(|d| d.is_some()).count();
    let firsts: Vec<Option<SystemTime>> = seen.iter().map(|s| s.established_first).collect();
    let first_up = firsts.iter().flatten().min().copied();
    let last_up = firsts.iter().flatten().max().copied();
    let last_done = done.iter().flatten().max().copied();
    let all_up = firsts.iter().all(Option::is_some);
    let since = |t: Option<SystemTime>| t.map(|t| seconds_between(started, t));
    let mut out = crate::bench_light::totals(&seen);
    let extra = json!({
        "clients": n,
        "prefixes": 2 * n,
        "converged": converged == n as usize,
        "clients_converged": converged,
        // Each client's two sessions hold the blocks of their family, its own included.
        "min_prefixes_held": seen.chunks(2).map(|p| p.iter().map(|s| s.count).sum::<u32>()).min().unwrap_or(0),
        "first_established_s": since(first_up),
        "last_established_s": since(last_up),
        "converged_at_s": since(last_done),
        "converge_s": match (last_up, last_done) {
            (Some(up), Some(done)) if converged == n as usize && all_up => Some(seconds_between(up, done)),
            _ => None,
        },
        "clients_cpu_s": cpu_s,
        "clients_peak_rss_kib": status_kib(&proc_file(None, "status"), "VmHWM:"),
    });
    if let (Value::Object(o), Value::Object(e)) = (&mut out, extra) {
        o.extend(e);
    }
    Ok(out)
}

async fn run_clients(n: u32, timeout: Duration) -> anyhow::Result<Value> {
    let per_family = n as usize;
    let started = SystemTime::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let cpu0 = cpu_ticks(&proc_file(None, "stat"))?;
    // Per client two speakers, one per family, as a Calico node runs `bird` and `bird6`:
    // each listens on its own address (so the reflector's connections succeed, as they do
    // to a real node) and connects to the reflector.
    let mut speakers: Vec<[Arc<Speaker>; 2]> = Vec::with_capacity(n as usize);
    let mut watchers = tokio::task::JoinSet::new();
    for i in 0..n {
        let (v4, v6) = (client_v4(i), client_v6(i));
        let mut pair = Vec::with_capacity(2);
        for (local, rr, block, family) in [
            (
                IpAddr::V4(v4),
                IpAddr::V4(RR_V4),
                block_v4(i),
                Family::Ipv4Unicast,
            ),
            (
                IpAddr::V6(v6),
                IpAddr::V6(RR_V6),
                block_v6(i),
                Family::Ipv6Unicast,
            ),
        ] {
            let config = SpeakerConfig {
                listen: Some(std::net::SocketAddr::new(local, BGP_PORT)),
                ..SpeakerConfig::new(v4, AS)
            };
            let speaker = Arc::new(Speaker::start(config).await?);
            // Subscribed before anything can arrive; the count is checked first anyway.
            let mut changes = speaker.subscribe();
            speaker.originate(block, None);
            speaker.add_peer(PeerConfig {
                local_address: Some(local),
                families: vec![family],
                hold_time: HOLD_TIME,
                ..PeerConfig::new(rr, AS)
            })?;
            let watched = Arc::clone(&speaker);
            watchers.spawn(async move {
                loop {
                    if watched.prefixes() >= per_family {
                        return (i, SystemTime::now());
                    }
                    match changes.recv().await {
                        // A burst is looked at once: drain it, then count.
                        Ok(_) | Err(RecvError::Lagged(_)) => {
                            while let Ok(_) | Err(TryRecvError::Lagged(_)) = changes.try_recv() {}
                        }
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            });
            pair.push(speaker);
        }
        let [a, b]: [Arc<Speaker>; 2] = pair
            .try_into()
            .unwrap_or_else(|_| unreachable!("two families"));
        speakers.push([a, b]);
    }
    // When each session first reached Established: its status's `since`, looked at every
    // 10 ms until every session has been up once (a later flap does not move it).
    let all: Vec<Arc<Speaker>> = speakers.iter().flatten().cloned().collect();
    let first_established = tokio::spawn(async move {
        let mut first: Vec<Option<SystemTime>> = vec![None; all.len()];
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while first.iter().any(Option::is_none) {
            tick.tick().await;
            for (slot, s) in first.iter_mut().zip(&all).filter(|(f, _)| f.is_none()) {
                *slot = s
                    .peers()
                    .into_iter()
                    .find(|p| p.state == tabby_bgp::fsm::State::Established)
                    .map(|p| p.since);
            }
        }
        first
    });
    // A client has converged when both its speakers have (the later of the two).
    let mut halves = vec![0u8; n as usize];
    let mut latest: Vec<Option<SystemTime>> = vec![None; n as usize];
    let mut done: Vec<Option<SystemTime>> = vec![None; n as usize];
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, watchers.join_next()).await {
        let (i, at) = joined?;
        let i = i as usize;
        halves[i] += 1;
        latest[i] = latest[i].max(Some(at));
        if halves[i] == 2 {
            done[i] = latest[i];
        }
    }
    watchers.abort_all();
    let cpu_s = cpu_ticks(&proc_file(None, "stat"))?.saturating_sub(cpu0) as f64 / TICKS_PER_SECOND;

    // Sessions as the clients saw them.
    let firsts = match tokio::time::timeout_at(deadline, first_established).await {
        Ok(joined) => joined?,
        Err(_) => Vec::new(),
    };
    let first_up = firsts.iter().flatten().min().copied();
    let last_up = firsts.iter().flatten().max().copied();
    let (mut up, mut flaps) = (0u64, 0u64);
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    for s in speakers.iter().flatten() {
        for p in s.peers() {
            flaps += p.established_count.saturating_sub(1);
            if let Some(e) = p.last_error {
                *errors.entry(e).or_default() += 1;
            }
            if p.state == tabby_bgp::fsm::State::Established {
                up += 1;
            }
        }
    }
    let converged = done.iter().filter(|d| d.is_some()).count();
    let last_done = done.iter().flatten().max().copied();
    let min_prefixes = speakers
        .iter()
        .map(|[a, b]| a.prefixes() + b.prefixes())
        .min()
        .unwrap_or(0);

    // What the clients hold is what was announced: every other client's blocks with that
    // client's own address as the next hop (the reflector keeps next hops, RFC 4456 §10).
    // Checked on up to 50 clients spread over the range.
    let step = (n / 50).max(1);
    let (mut checked, mut wrong) = (0u64, 0u64);
    for i in (0..n).step_by(step as usize) {
        let [a, b] = &speakers[i as usize];
        for sel in a.selected().into_iter().chain(b.selected()) {
            checked += 1;
            let ok = owner(&sel.prefix).is_some_and(|(j, nh)| {
                j != i && sel.hops.first().is_some_and(|h| h.next_hop == nh)
            });
            if !ok {
                wrong += 1;
            }
        }
    }
    let since_start = |t: Option<SystemTime>| t.map(|t| seconds_between(started, t));
    Ok(json!({
        "clients": n,
        "sessions": 2 * n,
        "sessions_established": up,
        "session_flaps": flaps,
        "session_errors": errors,
        "prefixes": 2 * n,
        "converged": converged == n as usize,
        "clients_converged": converged,
        "min_prefixes_held": min_prefixes,
        "first_established_s": since_start(first_up),
        "last_established_s": since_start(last_up),
        "converged_at_s": since_start(last_done),
        "converge_s": match (last_up, last_done) {
            (Some(up), Some(done)) if converged == n as usize && firsts.iter().all(Option::is_some) => {
                Some(seconds_between(up, done))
            }
            _ => None,
        },
        "routes_checked": checked,
        "routes_wrong": wrong,
        "clients_cpu_s": cpu_s,
        "clients_peak_rss_kib": status_kib(&proc_file(None, "status"), "VmHWM:"),
    }))
}

// ---------------------------------------------------------------------------------------
// The outer part: namespaces, the reflector, the clients, the report.

fn outer(args: &ReflectorArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the tabby binary")?;
    let mut results: Vec<Value> = Vec::new();
    for run_no in 0..args.runs {
        for contender in &args.contenders {
            if !args.json {
                eprintln!(
                    "run {}/{}: {} as the reflector of {} clients",
                    run_no + 1,
                    args.runs,
                    contender.name(),
                    args.clients
                );
            }
            let mut r = run_one(&exe, args, *contender, run_no + 1)
                .with_context(|| format!("{}: run {}", contender.name(), run_no + 1))?;
            r["run"] = json!(run_no + 1);
            println!("{r}");
            results.push(r);
        }
    }
    let summary = summary(args, &results);
    if args.json {
        println!("{summary}");
    } else {
        print!("{}", table(&summary));
    }
    Ok(())
}

/// The two namespaces of a run: the reflector's and the clients'.
struct Topology {
    reflector: Netns,
    clients: Netns,
}

impl Topology {
    fn create(n: u32) -> anyhow::Result<Topology> {
        let reflector = Netns::create()?;
        let clients = Netns::create()?;
        // The clients' addresses are on C's loopback, routed through one veth: one
        // neighbour entry on each side however many clients (the default neighbour table
        // holds 1024).
        let mut r = format!(
            "link set lo up\n\
             link add rr0 type veth peer name cl0 netns {c}\n\
             addr add 10.255.0.1/30 dev rr0\n\
             addr add fd00:ff::1/126 dev rr0 nodad\n\
             link set rr0 up\n\
             addr add {RR_V4}/32 dev lo\n\
             addr add {RR_V6}/128 dev lo nodad\n",
            c = clients.name
        );
        r.push_str("route add 10.1.0.0/16 via 10.255.0.2\nroute add fd00:1::/64 via fd00:ff::2\n");
        let mut c = String::from(
            "link set lo up\n\
             addr add 10.255.0.2/30 dev cl0\n\
             addr add fd00:ff::2/126 dev cl0 nodad\n\
             link set cl0 up\n",
        );
        let _ = writeln!(c, "route add {RR_V4}/32 via 10.255.0.1");
        let _ = writeln!(c, "route add {RR_V6}/128 via fd00:ff::1");
        for i in 0..n {
            let _ = writeln!(c, "addr add {}/32 dev lo", client_v4(i));
            let _ = writeln!(c, "addr add {}/128 dev lo nodad", client_v6(i));
        }
        // The veth's peer must exist before C's script configures it.
        reflector.batch(&r)?;
        clients.batch(&c)?;
        Ok(Topology { reflector, clients })
    }
}

/// `ip netns exec NS prlimit --nofile=F:F`, the start of every command run in a namespace:
/// each session is a socket, and the default limit (1024) is too low for a thousand. The
/// clients' process needs the most: per client two speakers, each with a listener (two
/// descriptors) and up to two connections while a collision is resolved.
fn in_netns(ns: &Netns, n: u32) -> Command {
    // Never above our own hard limit: raising it needs CAP_SYS_RESOURCE, which a container's
    // root may lack.
    let files = (16 * u64::from(n) + 4096).min(hard_nofile().unwrap_or(u64::MAX));
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "prlimit"])
        .arg(format!("--nofile={files}:{files}"))
        .arg("--");
    cmd
}

/// The hard limit of open files of this process (`Max open files` of /proc/self/limits).
fn hard_nofile() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

fn run_one(
    exe: &Path,
    args: &ReflectorArgs,
    contender: Contender,
    run_no: usize,
) -> anyhow::Result<Value> {
    let n = args.clients;
    let topo = Topology::create(n)?;
    let scratch = Scratch::create("reflector")?;
    let log = scratch.path.join("reflector.log");
    let log_file = std::fs::File::create(&log)?;
    let mut cmd = in_netns(&topo.reflector, n);
    match contender {
        Contender::Tabby => {
            let dir = scratch.path.join("datastore");
            std::fs::create_dir_all(&dir)?;
            write_datastore(&dir, n)?;
            cmd.arg(exe)
                .args(["route-reflector", "--node-name", "rr"])
                .arg(format!("--datastore=file:{}", dir.display()))
                .args(["--http-listen", "127.0.0.1:9099"])
                .args(["--hold-time", &HOLD_TIME.to_string()])
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                );
        }
        Contender::Bird => {
            let conf = scratch.path.join("bird.conf");
            std::fs::write(&conf, bird_conf(n, &scratch.path.join("bird.log")))?;
            cmd.arg(&args.bird)
                .arg("-f")
                .arg("-c")
                .arg(&conf)
                .arg("-s")
                .arg(scratch.path.join("bird.ctl"));
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let t0 = Instant::now();
    let mut reflector = Guarded::spawn(&mut cmd)
        .with_context(|| format!("cannot start the {} reflector", contender.name()))?;
    let tail = |log: &Path| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    wait_listening(&topo.reflector, &mut reflector, Duration::from_secs(60))
        .with_context(|| format!("the reflector's log ends with:\n{}", tail(&log)))?;
    // The peers are configured right after the listener opens; a client that came before
    // its peer would be refused and retry only 5 s later.
    std::thread::sleep(Duration::from_millis(500));
    let startup_s = t0.elapsed().as_secs_f64();
    let stat = PathBuf::from(format!("/proc/{}/stat", reflector.pid()));
    let status = PathBuf::from(format!("/proc/{}/status", reflector.pid()));
    let cpu0 = cpu_ticks(&stat)?;
    let rss_before_kib = status_kib(&status, "VmRSS:");

    let out = in_netns(&topo.clients, n)
        .arg(exe)
        .args(["bench", "reflector", "--inner", "clients"])
        .args(["--clients", &n.to_string()])
        .args(["--timeout", &args.timeout.to_string()])
        .args(args.light.then_some("--light"))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdin(Stdio::null())
        .output()?;
    let (cpu1, hwm, rss) = (
        cpu_ticks(&stat),
        status_kib(&status, "VmHWM:"),
        status_kib(&status, "VmRSS:"),
    );
    let overflows = listen_overflows(&topo.reflector);
    let alive = !reflector.exited();
    reflector.stop(Duration::from_secs(5));
    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir)?;
        let name = format!("{}-{run_no}", contender.name());
        std::fs::copy(&log, dir.join(format!("{name}.log")))?;
        let bird_log = scratch.path.join("bird.log");
        if bird_log.exists() {
            std::fs::copy(&bird_log, dir.join(format!("{name}-bird.log")))?;
        }
        std::fs::write(dir.join(format!("{name}-clients.log")), &out.stderr)?;
    }
    check(&out, "the clients (tabby bench reflector --inner clients)")?;
    if !alive {
        bail!("the reflector exited; its log ends with:\n{}", tail(&log));
    }
    let mut v: Value = serde_json::from_slice(&out.stdout).context("inner result is not JSON")?;
    v["contender"] = json!(contender.name());
    v["reflector_startup_s"] = json!(startup_s);
    v["reflector_cpu_s"] = json!(cpu1?.saturating_sub(cpu0) as f64 / TICKS_PER_SECOND);
    v["reflector_peak_rss_kib"] = json!(hwm);
    v["reflector_rss_kib"] = json!(rss);
    v["reflector_rss_before_clients_kib"] = json!(rss_before_kib);
    // Connections the kernel dropped because the reflector's accept queue was full.
    v["reflector_listen_overflows"] = json!(overflows);
    drop(topo);
    Ok(v)
}

/// `TcpExt: ListenOverflows` of the namespace (/proc/net/netstat is per namespace).
fn listen_overflows(ns: &Netns) -> Option<u64> {
    let text =
        run_cmd(Command::new("ip").args(["netns", "exec", &ns.name, "cat", "/proc/net/netstat"]))
            .ok()?;
    let mut tcp_ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next()?, tcp_ext.next()?);
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Waits until something listens on port 179 in the namespace.
fn wait_listening(ns: &Netns, child: &mut Guarded, limit: Duration) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let out = run_cmd(Command::new("ip").args([
            "netns", "exec", &ns.name, "ss", "-Hltn", "sport", "=", ":179",
        ]))?;
        if !out.trim().is_empty() {
            return Ok(());
        }
        if child.exited() {
            bail!("the reflector exited before listening");
        }
        if t0.elapsed() > limit {
            bail!("the reflector is not listening on port 179 after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The datastore of a Calico cluster whose nodes are the clients of one reflector node,
/// configured as Calico's documentation configures reflectors: no node-to-node mesh, the
/// reflector node annotated with its cluster ID and labelled, and one BGPPeer from every
/// node to the nodes with that label.
fn write_datastore(dir: &Path, n: u32) -> anyhow::Result<()> {
    let cluster = [
        json!({
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "BGPConfiguration",
            "metadata": { "name": "default" },
            "spec": { "asNumber": AS, "nodeToNodeMeshEnabled": false },
        }),
        json!({
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "BGPPeer",
            "metadata": { "name": "peer-with-route-reflectors" },
            "spec": {
                "nodeSelector": "all()",
                "peerSelector": format!("{REFLECTOR_LABEL} == 'true'"),
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "rr",
                "labels": { REFLECTOR_LABEL: "true", "kubernetes.io/hostname": "rr" },
                "annotations": {
                    "projectcalico.org/IPv4Address": format!("{RR_V4}/32"),
                    "projectcalico.org/IPv6Address": format!("{RR_V6}/128"),
                    "projectcalico.org/RouteReflectorClusterID": CLUSTER_ID.to_string(),
                },
            },
        }),
    ];
    write_docs(&dir.join("cluster.yaml"), cluster.iter())?;
    let nodes = (0..n).map(|i| {
        let name = format!("node-{i}");
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": { "kubernetes.io/hostname": name },
                "annotations": {
                    "projectcalico.org/IPv4Address": format!("{}/32", client_v4(i)),
                    "projectcalico.org/IPv6Address": format!("{}/128", client_v6(i)),
                },
            },
            "spec": { "podCIDRs": [block_v4(i).to_string(), block_v6(i).to_string()] },
        })
    });
    let nodes: Vec<Value> = nodes.collect();
    write_docs(&dir.join("nodes.yaml"), nodes.iter())
}

/// Writes YAML documents (JSON is YAML), `---` separated.
fn write_docs<'a>(path: &Path, docs: impl Iterator<Item = &'a Value>) -> anyhow::Result<()> {
    let mut text = String::new();
    for d in docs {
        text.push_str("---\n");
        text.push_str(&d.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The same reflector in BIRD 2: one `protocol bgp` per session (per client and family),
/// `rr client` with the same cluster ID, `import all; export all;`. Next hops of iBGP
/// routes are resolved recursively (BIRD's default); the clients' networks are in an IGP
/// table of static routes, so nothing is written to the kernel.
fn bird_conf(n: u32, log: &Path) -> String {
    let mut s = format!(
        "# tabby bench reflector: {n} clients\n\
         log \"{log}\" {{ warning, error, fatal }};\n\
         router id {RR_V4};\n\
         ipv4 table igp4;\n\
         ipv6 table igp6;\n\
         protocol device {{ }}\n\
         protocol static static4 {{ ipv4 {{ table igp4; }}; route 10.1.0.0/16 via 10.255.0.2; }}\n\
         protocol static static6 {{ ipv6 {{ table igp6; }}; route fd00:1::/64 via fd00:ff::2; }}\n\
         template bgp client4 {{\n  local {RR_V4} as {AS};\n  rr client;\n  rr cluster id {CLUSTER_ID};\n  \
         hold time {HOLD_TIME};\n  ipv4 {{ import all; export all; igp table igp4; }};\n}}\n\
         template bgp client6 {{\n  local {RR_V6} as {AS};\n  rr client;\n  rr cluster id {CLUSTER_ID};\n  \
         hold time {HOLD_TIME};\n  ipv6 {{ import all; export all; igp table igp6; }};\n}}\n",
        log = log.display()
    );
    for i in 0..n {
        let _ = writeln!(
            s,
            "protocol bgp c{i}_4 from client4 {{ neighbor {} as {AS}; }}",
            client_v4(i)
        );
        let _ = writeln!(
            s,
            "protocol bgp c{i}_6 from client6 {{ neighbor {} as {AS}; }}",
            client_v6(i)
        );
    }
    s
}

// ---------------------------------------------------------------------------------------
// The report.

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    Some(if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    })
}

/// Per contender the median of each figure over the runs, and the ratios tabby/BIRD.
fn summary(args: &ReflectorArgs, results: &[Value]) -> Value {
    const FIGURES: [&str; 6] = [
        "converge_s",
        "converged_at_s",
        "last_established_s",
        "reflector_peak_rss_kib",
        "reflector_cpu_s",
        "clients_cpu_s",
    ];
    let mut per = serde_json::Map::new();
    for c in &args.contenders {
        let runs: Vec<&Value> = results
            .iter()
            .filter(|r| r["contender"] == c.name())
            .collect();
        let mut entry = serde_json::Map::new();
        entry.insert(
            "converged_runs".into(),
            json!(runs.iter().filter(|r| r["converged"] == true).count()),
        );
        entry.insert("runs".into(), json!(runs.len()));
        for f in FIGURES {
            let xs: Vec<f64> = runs.iter().filter_map(|r| num(r, f)).collect();
            entry.insert(
                f.into(),
                json!(if xs.len() == runs.len() {
                    median(xs)
                } else {
                    None
                }),
            );
        }
        per.insert(c.name().into(), Value::Object(entry));
    }
    let ratio = |f: &str| {
        let t = per.get("tabby").and_then(|v| num(v, f))?;
        let b = per.get("bird").and_then(|v| num(v, f))?;
        (b > 0.0).then(|| t / b)
    };
    let ratios = json!({
        "converge_s": ratio("converge_s"),
        "converged_at_s": ratio("converged_at_s"),
        "reflector_peak_rss_kib": ratio("reflector_peak_rss_kib"),
        "reflector_cpu_s": ratio("reflector_cpu_s"),
    });
    json!({
        "summary": true,
        "clients": args.clients,
        "sessions": 2 * args.clients,
        "prefixes": 2 * args.clients,
        "runs": args.runs,
        "machine": machine(),
        "contenders": per,
        "ratio_tabby_to_bird": ratios,
    })
}

fn table(doc: &Value) -> String {
    let m = &doc["machine"];
    let mut s = format!(
        "\ntabby bench reflector: {} clients, {} sessions (IPv4 and IPv6 per client), {} \
         prefixes; median of {} run(s); {} CPU(s) {}; kernel {}\n\n",
        doc["clients"],
        doc["sessions"],
        doc["prefixes"],
        doc["runs"],
        m["cpus"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        s,
        "{:<10} {:>10} {:>12} {:>14} {:>14} {:>14} {:>10}",
        "reflector",
        "converged",
        "converge s",
        "from start s",
        "last up at s",
        "peak RSS MiB",
        "CPU s",
    );
    let f = |v: &Value, k: &str, scale: f64, w: usize, p: usize| match num(v, k) {
        Some(x) => format!("{:>w$.p$}", x / scale),
        None => format!("{:>w$}", "-"),
    };
    if let Some(per) = doc["contenders"].as_object() {
        for (name, v) in per {
            let _ = writeln!(
                s,
                "{:<10} {:>10} {} {} {} {} {}",
                name,
                format!("{}/{}", v["converged_runs"], v["runs"]),
                f(v, "converge_s", 1.0, 12, 3),
                f(v, "converged_at_s", 1.0, 14, 3),
                f(v, "last_established_s", 1.0, 14, 3),
                f(v, "reflector_peak_rss_kib", 1024.0, 14, 1),
                f(v, "reflector_cpu_s", 1.0, 10, 2),
            );
        }
    }
    let r = &doc["ratio_tabby_to_bird"];
    let x = |k: &str| num(r, k).map_or("-".to_string(), |v| format!("{v:.2}"));
    let _ = writeln!(
        s,
        "\ntabby/bird: converge {}, from start {}, peak RSS {}, CPU {}",
        x("converge_s"),
        x("converged_at_s"),
        x("reflector_peak_rss_kib"),
        x("reflector_cpu_s"),
    );
    s.push_str(
        "\nconverge s = last session Established -> every client holds all prefixes; from \
         start = from the clients' start; peak RSS = the reflector's VmHWM; CPU = the \
         reflector's utime+stime while the clients ran.\n",
    );
    s
}
