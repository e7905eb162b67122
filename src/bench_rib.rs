//! `tabby bench rib`: the RIB at scale behind a route reflector, tabby (`tabby speaker` with
//! `--cluster-id` and `rr-client` peers) against BIRD 2 and GoBGP as the reflector, in the
//! same run (docs/benchmarks.md, "RIB at scale"; issue 5).
//!
//! ```text
//!   tabby bench rib (outer, root), per DUT:
//!     netns D (reflector, the DUT)                 netns C (clients)
//!       lo: 10.0.0.1                                 lo: 10.1.0.1.. (clients), 10.1.255.1 (feeder)
//!       d0 10.255.0.1/30 ------- veth ------- c0 10.255.0.2/30
//!       tabby speaker --cluster-id ...               tabby bench rib --inner:
//!       | bird -f -c bird.conf                         N light clients (IPv4 sessions to
//!       | gobgpd -f gobgpd.toml                        10.0.0.1), full-table: one light
//!       every peer an rr client, passive;            feeder; reads the DUT's /proc/<pid>
//!       nothing written to any kernel                before the feed and at convergence;
//!                                                    JSON result on stdout
//!     namespaces, processes and files deleted at the end, on errors and on SIGINT/SIGTERM
//! ```
//!
//! The clients and the feeder are light (src/bench_light.rs): one task per session that
//! speaks just enough BGP and counts the distinct prefixes it receives in a bitset indexed by
//! the prefix's place in the scenario, instead of full `tabby_bgp::speaker::Speaker`s that
//! each keep a table; on this 2-core machine full clients used more CPU than the DUT, so the
//! benchmark partly measured them. Every announcement a client receives is checked for its
//! next hop (the announcer's address, kept by the reflector).
//!
//! Scenarios:
//! - `full-table`: N clients (default 10) come up first; then one more client, the feeder,
//!   connects with P /24s (default 1,000,000, from 16.0.0.0/4) already encoded as maximally
//!   packed UPDATEs, and writes them, then an End-of-RIB, as fast as the socket takes them
//!   once its session is Established. Measured: from the feeder's session reaching
//!   Established to every client holding all P prefixes.
//! - `many-clients`: N clients (default 200) each originating K /26s (default 64, in packed
//!   UPDATEs right behind their OPEN) start at once. Measured: from the clients' start (and
//!   from the last session Established) to every client holding all N*K prefixes (its own K
//!   and the others' reflected to it).
//!
//! Completion: each client session records when it first held every prefix; the clients
//! are polled every 20 ms to read the DUT's peak RSS when the last one has. Memory per path
//! is the DUT's peak RSS (`VmHWM`) minus its RSS just before the routes start to flow,
//! divided by the paths it received (P, or N*K).

use crate::bench_cmd::{check, machine, run_cmd, Netns};
use crate::bench_light::{Expect, LightClients, LightSession};
use crate::bench_proc::{
    cpu_ticks, finish, proc_file, seconds_between, status_kib, Guarded, Scratch, TICKS_PER_SECOND,
};
use anyhow::{bail, Context as _};
use clap::{Args as ClapArgs, ValueEnum};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tabby_bgp::wire::NextHop;
use tabby_bgp::{Family, Prefix};

/// `tabby bench rib` flags.
#[derive(Debug, ClapArgs)]
pub struct RibArgs {
    /// What to measure.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Route reflector clients (default: full-table 10, many-clients 200).
    #[arg(long)]
    clients: Option<u32>,
    /// full-table: prefixes the feeder sends (default 1,000,000); many-clients: prefixes per
    /// client (default 64).
    #[arg(long)]
    prefixes: Option<u32>,
    /// The reflectors to measure, in this order.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [Dut::Tabby, Dut::Bird, Dut::Gobgp])]
    duts: Vec<Dut>,
    /// Give up on a DUT this many seconds after its clients started.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// The BIRD 2 binary.
    #[arg(long, default_value = "bird")]
    bird: PathBuf,
    /// The GoBGP daemon binary.
    #[arg(long, default_value = "gobgpd")]
    gobgpd: PathBuf,
    /// Copy each DUT's log (and configuration) to DIR/<dut>.*.
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<PathBuf>,
    /// Print only JSON lines (one per DUT, then a summary).
    #[arg(long)]
    json: bool,
    /// Internal: run the clients (inside their namespace) against the DUT with this pid.
    #[arg(long, hide = true, value_name = "PID")]
    inner_dut_pid: Option<u32>,
}

/// A scenario of issue 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// One peer sends a full table to the reflector, which has N clients.
    FullTable,
    /// N clients each announce K prefixes.
    ManyClients,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::FullTable => "full-table",
            Scenario::ManyClients => "many-clients",
        }
    }
}

/// A route reflector under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dut {
    /// `tabby speaker --cluster-id ... --peer ADDR:AS:rr-client:passive ...`.
    Tabby,
    /// BIRD 2 with `rr client` sessions.
    Bird,
    /// gobgpd with `route-reflector-client` neighbors.
    Gobgp,
}

impl Dut {
    fn name(self) -> &'static str {
        match self {
            Dut::Tabby => "tabby",
            Dut::Bird => "bird",
            Dut::Gobgp => "gobgp",
        }
    }
}

const AS: u32 = 64512;
const HOLD_TIME: u16 = 90;
const DUT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CLUSTER_ID: Ipv4Addr = Ipv4Addr::new(244, 0, 0, 1);
const FEEDER: Ipv4Addr = Ipv4Addr::new(10, 1, 255, 1);
const CLIENT_BASE: u32 = u32::from_be_bytes([10, 1, 0, 0]);
/// Most clients: their addresses are 10.1.0.1 up to below the feeder's.
const MAX_CLIENTS: u32 = 60_000;
/// The feeder's /24s start at 16.0.0.0 (16.0.0.0/4 holds 2^20 of them).
const FULL_TABLE_BASE: u32 = u32::from_be_bytes([16, 0, 0, 0]);
const MAX_FULL_TABLE: u32 = 1 << 20;
/// The clients' /26s come from 10.128.0.0/10 (2^16 of them).
const BLOCK_BASE: u32 = u32::from_be_bytes([10, 128, 0, 0]);
const MAX_BLOCKS: u32 = 1 << 16;
const POLL: Duration = Duration::from_millis(20);

/// Runs `tabby bench rib`.
pub fn run(args: RibArgs) -> ExitCode {
    finish(args.validate(), move || match args.inner_dut_pid {
        Some(pid) => inner(&args, pid),
        None => crate::bench_proc::with_signals(args, outer),
    })
}

impl RibArgs {
    fn clients(&self) -> u32 {
        self.clients.unwrap_or(match self.scenario {
            Scenario::FullTable => 10,
            Scenario::ManyClients => 200,
        })
    }

    fn prefixes(&self) -> u32 {
        self.prefixes.unwrap_or(match self.scenario {
            Scenario::FullTable => 1_000_000,
            Scenario::ManyClients => 64,
        })
    }

    /// Paths the reflector receives, and each client must end up holding.
    fn paths(&self) -> u64 {
        match self.scenario {
            Scenario::FullTable => u64::from(self.prefixes()),
            Scenario::ManyClients => u64::from(self.clients()) * u64::from(self.prefixes()),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let (n, p) = (self.clients(), self.prefixes());
        if !(1..=MAX_CLIENTS).contains(&n) {
            return Err(format!("--clients must be between 1 and {MAX_CLIENTS}"));
        }
        match self.scenario {
            Scenario::FullTable if !(1..=MAX_FULL_TABLE).contains(&p) => {
                return Err(format!("--prefixes must be between 1 and {MAX_FULL_TABLE}"));
            }
            Scenario::ManyClients if p == 0 || u64::from(n) * u64::from(p) > MAX_BLOCKS.into() => {
                return Err(format!(
                    "--clients times --prefixes must be between 1 and {MAX_BLOCKS}"
                ));
            }
            _ => {}
        }
        if self.duts.is_empty() {
            return Err("--duts names none".into());
        }
        Ok(())
    }
}

fn client_addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(CLIENT_BASE + i + 1)
}

fn v4_prefix(addr: u32, len: u8) -> Prefix {
    Prefix::new(IpAddr::V4(Ipv4Addr::from(addr)), len).unwrap_or_else(|_| unreachable!("<= 32"))
}

/// The feeder's j-th /24.
fn full_table_prefix(j: u32) -> Prefix {
    v4_prefix(FULL_TABLE_BASE + (j << 8), 24)
}

/// Client i's j-th /26 of `k` (many-clients).
fn block(i: u32, j: u32, k: u32) -> Prefix {
    v4_prefix(BLOCK_BASE + (i * k + j) * 64, 26)
}

// ---------------------------------------------------------------------------------------
// /proc of the DUT.

// ---------------------------------------------------------------------------------------
// The inner part: the clients (and the feeder) in the clients' namespace.

fn inner(args: &RibArgs, dut: u32) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(run_clients(args, dut))?;
    println!("{result}");
    // Dropping a million-route table and a few hundred sessions takes longer than exiting.
    std::process::exit(0)
}

/// Client i's session (it announces `announce`).
fn light_session(addr: Ipv4Addr, index: u32, announce: Vec<Prefix>) -> LightSession {
    LightSession {
        index,
        local: IpAddr::V4(addr),
        router_id: addr,
        reflector: IpAddr::V4(DUT_ADDR),
        family: Family::Ipv4Unicast,
        hold_time: HOLD_TIME,
        announce,
        announce_when_established: false,
    }
}

/// The scenario's prefixes by index, each with the next hop it must be reflected with (its
/// announcer's address, RFC 4456 §10): full-table, the feeder's j-th /24; many-clients,
/// block i*k+j, client i's.
fn expect(args: &RibArgs) -> Expect {
    let (n, p) = (args.clients(), args.prefixes());
    let slots = u32::try_from(args.paths()).unwrap_or(u32::MAX);
    let owner: crate::bench_light::Owner = match args.scenario {
        Scenario::FullTable => Arc::new(move |prefix: &Prefix| {
            let IpAddr::V4(a) = prefix.addr() else {
                return None;
            };
            let off = u32::from(a).checked_sub(FULL_TABLE_BASE)?;
            let j = off >> 8;
            (prefix.len() == 24 && off & 0xff == 0 && j < p).then_some((j, NextHop::V4(FEEDER)))
        }),
        Scenario::ManyClients => Arc::new(move |prefix: &Prefix| {
            let IpAddr::V4(a) = prefix.addr() else {
                return None;
            };
            let off = u32::from(a).checked_sub(BLOCK_BASE)?;
            let b = off / 64;
            (prefix.len() == 26 && off % 64 == 0 && b < n * p)
                .then(|| (b, NextHop::V4(client_addr(b / p))))
        }),
    };
    Expect {
        slots,
        per_session: slots,
        owner,
    }
}

async fn run_clients(args: &RibArgs, dut: u32) -> anyhow::Result<Value> {
    let (n, p, paths) = (args.clients(), args.prefixes(), args.paths());
    let started = SystemTime::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let mut out = json!({ "scenario": args.scenario.name(), "clients": n, "paths": paths });
    let expect = expect(args);

    let own = std::process::id();
    let (mut rss_before, mut cpu_before, mut own_cpu_before) = (None, 0, 0);
    if args.scenario == Scenario::ManyClients {
        rss_before = status_kib(&proc_file(Some(dut), "status"), "VmRSS:");
        cpu_before = cpu_ticks(&proc_file(Some(dut), "stat"))?;
        own_cpu_before = cpu_ticks(&proc_file(Some(own), "stat"))?;
    }
    let sessions = (0..n)
        .map(|i| {
            let announce = (0..p)
                .filter(|_| args.scenario == Scenario::ManyClients)
                .map(|j| block(i, j, p))
                .collect();
            light_session(client_addr(i), i, announce)
        })
        .collect();
    let clients = LightClients::start(sessions, &expect);
    let mut feeder: Option<LightClients> = None;
    let mut t0 = started;
    if args.scenario == Scenario::FullTable {
        while !clients.all_established() {
            if tokio::time::Instant::now() > deadline {
                bail!("the clients' sessions did not all come up");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The reflector has its sessions; its memory now is its memory without routes.
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_before = status_kib(&proc_file(Some(dut), "status"), "VmRSS:");
        cpu_before = cpu_ticks(&proc_file(Some(dut), "stat"))?;
        // The feeder's UPDATEs are encoded before it connects; it writes them all once its
        // session is Established, where the clock starts.
        let t = Instant::now();
        let f = LightSession {
            announce_when_established: true,
            ..light_session(FEEDER, n, (0..p).map(full_table_prefix).collect())
        };
        let f = LightClients::start(vec![f], &expect);
        out["feeder_originate_s"] = json!(t.elapsed().as_secs_f64());
        own_cpu_before = cpu_ticks(&proc_file(Some(own), "stat"))?;
        let up = loop {
            if let Some(at) = f.snapshot().first().and_then(|s| s.established_first) {
                break at;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the feeder's session did not come up");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        out["feeder_established_s"] = json!(seconds_between(started, up));
        t0 = up;
        feeder = Some(f);
    }

    // Every session records when it held all; polled for the DUT's peak memory then.
    let mut peak_rss_at_done = None;
    loop {
        if clients.all_converged() {
            peak_rss_at_done = status_kib(&proc_file(Some(dut), "status"), "VmHWM:");
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let cpu_s = cpu_ticks(&proc_file(Some(dut), "stat"))?.saturating_sub(cpu_before) as f64
        / TICKS_PER_SECOND;
    // The clients share the machine with the DUT: their CPU says how much of it they took.
    let clients_cpu_s = cpu_ticks(&proc_file(Some(own), "stat"))?.saturating_sub(own_cpu_before)
        as f64
        / TICKS_PER_SECOND;
    let (hwm, rss) = (
        status_kib(&proc_file(Some(dut), "status"), "VmHWM:"),
        status_kib(&proc_file(Some(dut), "status"), "VmRSS:"),
    );

    let seen = clients.snapshot();
    let done: Vec<Option<SystemTime>> = seen.iter().map(|s| s.converged).collect();
    let converged = done.iter().filter(|d| d.is_some()).count();
    let last_done = done.iter().flatten().max().copied();
    let last_up = seen.iter().filter_map(|s| s.established_first).max();
    let min_held = seen.iter().map(|s| s.count).min().unwrap_or(0);
    // Sessions and routes over the clients and the feeder: every announcement a client
    // received is checked for its next hop.
    let mut all = seen;
    all.extend(feeder.iter().flat_map(LightClients::snapshot));
    let totals = crate::bench_light::totals(&all);
    let since = |t: Option<SystemTime>| t.map(|t| seconds_between(started, t));
    let extra = json!({
        "converged": converged == n as usize,
        "clients_converged": converged,
        "min_prefixes_held": min_held,
        "converge_s": last_done.map(|t| seconds_between(t0, t)),
        "converged_at_s": since(last_done),
        "last_established_s": since(last_up),
        "converge_after_last_established_s": last_done.zip(last_up).map(|(d, u)| seconds_between(u, d)),
        "dut_rss_before_kib": rss_before,
        "dut_peak_rss_kib": peak_rss_at_done.or(hwm),
        "dut_rss_end_kib": rss,
        "dut_cpu_s": cpu_s,
        "clients_cpu_s": clients_cpu_s,
        "clients_peak_rss_kib": status_kib(&proc_file(Some(own), "status"), "VmHWM:"),
    });
    for part in [totals, extra] {
        if let (Value::Object(o), Value::Object(e)) = (&mut out, part) {
            o.extend(e);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The outer part: namespaces, the DUT, the clients, the report.

fn outer(args: &RibArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the tabby binary")?;
    let mut results: Vec<Value> = Vec::new();
    for dut in &args.duts {
        if !args.json {
            eprintln!(
                "{}: {} as the reflector of {} clients, {} paths",
                args.scenario.name(),
                dut.name(),
                args.clients(),
                args.paths()
            );
        }
        let r = run_one(&exe, args, *dut).with_context(|| dut.name().to_string())?;
        println!("{r}");
        results.push(r);
    }
    let summary = summary(args, &results);
    if args.json {
        println!("{summary}");
    } else {
        print!("{}", table(&summary));
    }
    Ok(())
}

/// The two namespaces of a DUT's run.
struct Topology {
    dut: Netns,
    clients: Netns,
}

impl Topology {
    fn create(n: u32) -> anyhow::Result<Topology> {
        let dut = Netns::create()?;
        let clients = Netns::create()?;
        // The clients' addresses are on C's loopback, routed through one veth.
        let d = format!(
            "link set lo up\n\
             link add d0 type veth peer name c0 netns {c}\n\
             addr add 10.255.0.1/30 dev d0\n\
             link set d0 up\n\
             addr add {DUT_ADDR}/32 dev lo\n\
             route add 10.1.0.0/16 via 10.255.0.2\n",
            c = clients.name
        );
        let mut c = format!(
            "link set lo up\n\
             addr add 10.255.0.2/30 dev c0\n\
             link set c0 up\n\
             route add {DUT_ADDR}/32 via 10.255.0.1\n\
             addr add {FEEDER}/32 dev lo\n"
        );
        for i in 0..n {
            let _ = writeln!(c, "addr add {}/32 dev lo", client_addr(i));
        }
        dut.batch(&d)?;
        clients.batch(&c)?;
        Ok(Topology { dut, clients })
    }
}

/// `ip netns exec NS prlimit --nofile=F:F --`: one socket per session and then some.
fn in_netns(ns: &Netns, n: u32) -> Command {
    let files = 16 * u64::from(n) + 4096;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "prlimit"])
        .arg(format!("--nofile={files}:{files}"))
        .arg("--");
    cmd
}

/// The addresses of every peer of the DUT: the clients and (full-table) the feeder.
fn peers(args: &RibArgs) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = (0..args.clients()).map(client_addr).collect();
    if args.scenario == Scenario::FullTable {
        v.push(FEEDER);
    }
    v
}

fn run_one(exe: &Path, args: &RibArgs, dut: Dut) -> anyhow::Result<Value> {
    let n = args.clients() + 1;
    let topo = Topology::create(args.clients())?;
    let scratch = Scratch::create("rib")?;
    let log = scratch.path.join("dut.log");
    let log_file = std::fs::File::create(&log)?;
    let mut cmd = in_netns(&topo.dut, n);
    let conf = match dut {
        Dut::Tabby => {
            cmd.arg(exe)
                .args(["speaker", "--router-id", &DUT_ADDR.to_string()])
                .args(["--asn", &AS.to_string()])
                .args(["--listen", &DUT_ADDR.to_string()])
                .args(["--local-address", &DUT_ADDR.to_string()])
                .args(["--cluster-id", &CLUSTER_ID.to_string()])
                .args(["--hold-time", &HOLD_TIME.to_string()])
                .args(["--http-listen", "127.0.0.1:9099"]);
            for p in peers(args) {
                cmd.arg(format!("--peer={p}:{AS}:rr-client:passive"));
            }
            cmd.env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            );
            None
        }
        Dut::Bird => {
            let conf = scratch.path.join("bird.conf");
            std::fs::write(&conf, bird_conf(args, &scratch.path.join("bird.log")))?;
            cmd.arg(&args.bird)
                .arg("-f")
                .arg("-c")
                .arg(&conf)
                .arg("-s")
                .arg(scratch.path.join("bird.ctl"));
            Some(conf)
        }
        Dut::Gobgp => {
            let conf = scratch.path.join("gobgpd.toml");
            std::fs::write(&conf, gobgp_conf(args))?;
            cmd.arg(&args.gobgpd)
                .arg("-f")
                .arg(&conf)
                .args(["-t", "toml", "-l", "warn", "-p", "--pprof-disable"])
                .args(["--api-hosts", "127.0.0.1:50051"]);
            Some(conf)
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let mut process =
        Guarded::spawn(&mut cmd).with_context(|| format!("cannot start {}", dut.name()))?;
    let tail = |log: &Path| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    wait_listening(&topo.dut, &mut process, Duration::from_secs(60))
        .with_context(|| format!("the DUT's log ends with:\n{}", tail(&log)))?;
    std::thread::sleep(Duration::from_millis(500));

    let out = in_netns(&topo.clients, n)
        .arg(exe)
        .args(["bench", "rib", "--scenario", args.scenario.name()])
        .args(["--clients", &args.clients().to_string()])
        .args(["--prefixes", &args.prefixes().to_string()])
        .args(["--timeout", &args.timeout.to_string()])
        .args(["--inner-dut-pid", &process.pid().to_string()])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdin(Stdio::null())
        .output()?;
    let alive = !process.exited();
    process.stop(Duration::from_secs(5));
    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir)?;
        let name = format!("{}-{}", args.scenario.name(), dut.name());
        std::fs::copy(&log, dir.join(format!("{name}.log")))?;
        let bird_log = scratch.path.join("bird.log");
        if bird_log.exists() {
            std::fs::copy(&bird_log, dir.join(format!("{name}-bird.log")))?;
        }
        if let Some(conf) = &conf {
            let ext = conf.extension().and_then(|e| e.to_str()).unwrap_or("conf");
            std::fs::copy(conf, dir.join(format!("{name}.{ext}")))?;
        }
    }
    check(&out, "the clients (tabby bench rib --inner-dut-pid)")?;
    if !alive {
        bail!("the DUT exited; its log ends with:\n{}", tail(&log));
    }
    let mut v: Value = serde_json::from_slice(&out.stdout).context("inner result is not JSON")?;
    v["dut"] = json!(dut.name());
    // The machine may be shared: its load when the DUT's run ended.
    v["loadavg"] = json!(std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim());
    let per_path = |v: &Value| {
        let peak = v["dut_peak_rss_kib"].as_f64()?;
        let before = v["dut_rss_before_kib"].as_f64()?;
        let paths = v["paths"].as_f64()?;
        Some((peak - before) * 1024.0 / paths)
    };
    v["dut_bytes_per_path"] = json!(per_path(&v));
    drop(topo);
    Ok(v)
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
            bail!("the DUT exited before listening");
        }
        if t0.elapsed() > limit {
            bail!("the DUT is not listening on port 179 after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// BIRD 2 as the reflector: one passive `protocol bgp` per peer, `rr client` with the same
/// cluster ID, `import all; export all;`. iBGP next hops are resolved recursively (BIRD's
/// default) through an IGP table holding one static route to the clients' range; no kernel
/// protocol, so nothing is written to the kernel.
fn bird_conf(args: &RibArgs, log: &Path) -> String {
    let mut s = format!(
        "# tabby bench rib {}\n\
         log \"{log}\" {{ warning, error, fatal }};\n\
         router id {DUT_ADDR};\n\
         ipv4 table igp4;\n\
         protocol device {{ }}\n\
         protocol static static4 {{ ipv4 {{ table igp4; }}; route 10.1.0.0/16 via 10.255.0.2; }}\n\
         template bgp client4 {{\n  local {DUT_ADDR} as {AS};\n  passive on;\n  rr client;\n  \
         rr cluster id {CLUSTER_ID};\n  hold time {HOLD_TIME};\n  \
         ipv4 {{ import all; export all; igp table igp4; }};\n}}\n",
        args.scenario.name(),
        log = log.display()
    );
    for (i, p) in peers(args).into_iter().enumerate() {
        let _ = writeln!(
            s,
            "protocol bgp p{i} from client4 {{ neighbor {p} as {AS}; }}"
        );
    }
    s
}

/// gobgpd as the reflector: one passive neighbor per peer, `route-reflector-client` with the
/// same cluster ID, IPv4 unicast; no zebra, so nothing is written to the kernel.
fn gobgp_conf(args: &RibArgs) -> String {
    let mut s = format!(
        "[global.config]\n  as = {AS}\n  router-id = \"{DUT_ADDR}\"\n  \
         local-address-list = [\"{DUT_ADDR}\"]\n"
    );
    for p in peers(args) {
        let _ = write!(
            s,
            "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{p}\"\n    \
             peer-as = {AS}\n  [neighbors.timers.config]\n    hold-time = {HOLD_TIME}\n  \
             [neighbors.transport.config]\n    passive-mode = true\n    \
             local-address = \"{DUT_ADDR}\"\n  [neighbors.route-reflector.config]\n    \
             route-reflector-client = true\n    route-reflector-cluster-id = \"{CLUSTER_ID}\"\n  \
             [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      \
             afi-safi-name = \"ipv4-unicast\"\n"
        );
    }
    s
}

// ---------------------------------------------------------------------------------------
// The report.

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

const FIGURES: [&str; 8] = [
    "converge_s",
    "converged_at_s",
    "converge_after_last_established_s",
    "dut_peak_rss_kib",
    "dut_rss_before_kib",
    "dut_bytes_per_path",
    "dut_cpu_s",
    "clients_cpu_s",
];

/// Per DUT its figures, and the ratios tabby/BIRD and tabby/GoBGP.
fn summary(args: &RibArgs, results: &[Value]) -> Value {
    let mut per = serde_json::Map::new();
    for r in results {
        let mut entry = serde_json::Map::new();
        entry.insert("converged".into(), r["converged"].clone());
        for f in FIGURES {
            entry.insert(f.into(), r.get(f).cloned().unwrap_or(Value::Null));
        }
        per.insert(
            r["dut"].as_str().unwrap_or("?").into(),
            Value::Object(entry),
        );
    }
    let ratios = |other: &str| {
        let mut m = serde_json::Map::new();
        for f in FIGURES {
            let t = per.get("tabby").and_then(|v| num(v, f));
            let o = per.get(other).and_then(|v| num(v, f));
            let r = t.zip(o).and_then(|(t, o)| (o > 0.0).then(|| t / o));
            m.insert(f.into(), json!(r));
        }
        Value::Object(m)
    };
    json!({
        "summary": true,
        "scenario": args.scenario.name(),
        "clients": args.clients(),
        "prefixes": args.prefixes(),
        "paths": args.paths(),
        "machine": machine(),
        "duts": per,
        "ratio_tabby_to_bird": ratios("bird"),
        "ratio_tabby_to_gobgp": ratios("gobgp"),
    })
}

fn table(doc: &Value) -> String {
    let m = &doc["machine"];
    let mut s = format!(
        "\ntabby bench rib --scenario {}: {} clients, {} paths to the reflector; {} CPU(s) {}; \
         kernel {}\n\n",
        doc["scenario"].as_str().unwrap_or("?"),
        doc["clients"],
        doc["paths"],
        m["cpus"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        s,
        "{:<8} {:>9} {:>11} {:>13} {:>13} {:>14} {:>14} {:>10} {:>8} {:>13}",
        "DUT",
        "converged",
        "converge s",
        "from start s",
        "after up s",
        "RSS before MiB",
        "peak RSS MiB",
        "B/path",
        "CPU s",
        "clients CPU s",
    );
    let f = |v: &Value, k: &str, scale: f64, w: usize, p: usize| match num(v, k) {
        Some(x) => format!("{:>w$.p$}", x / scale),
        None => format!("{:>w$}", "-"),
    };
    if let Some(per) = doc["duts"].as_object() {
        for (name, v) in per {
            let _ = writeln!(
                s,
                "{:<8} {:>9} {} {} {} {} {} {} {} {}",
                name,
                v["converged"].to_string(),
                f(v, "converge_s", 1.0, 11, 3),
                f(v, "converged_at_s", 1.0, 13, 3),
                f(v, "converge_after_last_established_s", 1.0, 13, 3),
                f(v, "dut_rss_before_kib", 1024.0, 14, 1),
                f(v, "dut_peak_rss_kib", 1024.0, 14, 1),
                f(v, "dut_bytes_per_path", 1.0, 10, 0),
                f(v, "dut_cpu_s", 1.0, 8, 2),
                f(v, "clients_cpu_s", 1.0, 13, 2),
            );
        }
    }
    for other in ["bird", "gobgp"] {
        let r = &doc[format!("ratio_tabby_to_{other}").as_str()];
        let x = |k: &str| num(r, k).map_or("-".to_string(), |v| format!("{v:.2}"));
        let _ = writeln!(
            s,
            "tabby/{other}: converge {}, from start {}, peak RSS {}, bytes per path {}, CPU {}",
            x("converge_s"),
            x("converged_at_s"),
            x("dut_peak_rss_kib"),
            x("dut_bytes_per_path"),
            x("dut_cpu_s"),
        );
    }
    s.push_str(
        "\nconverge s = full-table: feeder's session Established -> every client holds every \
         prefix; many-clients: the clients' start -> the same; after up = from the last client \
         session Established; B/path = (peak RSS - RSS before the routes) / paths; CPU = the \
         DUT's utime+stime from before the routes to the end; clients CPU = the same for the \
         clients' process (it shares the 2 cores).\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(scenario: Scenario, clients: u32, prefixes: u32) -> RibArgs {
        RibArgs {
            scenario,
            clients: Some(clients),
            prefixes: Some(prefixes),
            duts: vec![Dut::Tabby],
            timeout: 1,
            bird: "bird".into(),
            gobgpd: "gobgpd".into(),
            keep_logs: None,
            json: true,
            inner_dut_pid: None,
        }
    }

    #[test]
    fn full_table_slots_are_the_feeders_prefixes_by_index_with_its_next_hop() {
        let e = expect(&args(Scenario::FullTable, 10, 1000));
        assert_eq!((e.slots, e.per_session), (1000, 1000));
        for j in [0, 1, 999] {
            assert_eq!(
                (e.owner)(&full_table_prefix(j)),
                Some((j, NextHop::V4(FEEDER)))
            );
        }
        assert_eq!((e.owner)(&full_table_prefix(1000)), None);
        assert_eq!((e.owner)(&v4_prefix(FULL_TABLE_BASE, 23)), None);
        assert_eq!((e.owner)(&block(0, 0, 64)), None);
    }

    #[test]
    fn many_clients_slots_are_the_blocks_by_index_with_their_owners_next_hop() {
        let (n, k) = (200, 64);
        let e = expect(&args(Scenario::ManyClients, n, k));
        assert_eq!((e.slots, e.per_session), (n * k, n * k));
        for (i, j) in [(0, 0), (3, 5), (n - 1, k - 1)] {
            assert_eq!(
                (e.owner)(&block(i, j, k)),
                Some((i * k + j, NextHop::V4(client_addr(i))))
            );
        }
        assert_eq!((e.owner)(&block(n, 0, k)), None);
        assert_eq!((e.owner)(&full_table_prefix(0)), None);
    }
}
