//! `tabby bench routes`: route programming and idle cost of tabby's route manager against
//! `ip -batch` of the same routes, measured in the same run (docs/benchmarks.md).
//!
//! ```text
//!   tabby bench routes (outer, root)
//!     per run, per scenario:
//!       netns A: links (ip -n A -batch) -> ip netns exec A tabby bench routes --inner ...
//!                                           (RouteManager; JSON result on stdout)
//!       netns B: links (ip -n B -batch) -> ip -n B -batch -   (`route add ... proto 44`)
//!       both: count `ip route show proto 44`; namespaces deleted (guards, also on signals)
//! ```
//!
//! The namespaces get the artifacts of shared/DESIGN.md §4: workload routes
//! `10.128.x.y/32 dev cali<11 hex> scope link` on veth pairs (`--addrs-per-iface` pod
//! addresses per interface), and learned `/26` blocks of 10.0.0.0/9 via gateways on an
//! on-link underlay (`under0`, a veth with 10.255.0.1/16; the
//! kernels we run on have no dummy driver); every tenth learned block is an
//! ECMP route over two gateways.

use anyhow::{bail, Context as _};
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tabby_felix::routes::{Dst, NextHop, Route, RouteManager, RouteManagerConfig, Target};

/// `tabby bench` flags.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Route programming and idle CPU of the route manager against `ip -batch` (needs root;
    /// creates and deletes its own network namespaces).
    Routes(RoutesArgs),
    /// Route reflector convergence and memory with N clients, tabby against BIRD 2 (needs
    /// root; creates and deletes its own network namespaces).
    Reflector(crate::bench_reflector::ReflectorArgs),
    /// The RIB at scale behind a route reflector (a full table to 10 clients, 200 clients of
    /// 64 prefixes), tabby against BIRD 2 and GoBGP (needs root; creates and deletes its own
    /// network namespaces).
    Rib(crate::bench_rib::RibArgs),
}

/// `tabby bench routes` flags.
#[derive(Debug, ClapArgs)]
struct RoutesArgs {
    /// Pod routes to program (`/32 dev cali* scope link`); 0 skips the scenario.
    #[arg(long, default_value_t = 10_000)]
    pods: u32,
    /// Learned routes to program (`/26 via <gateway>`, one in ten ECMP); 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    learned: u32,
    /// Routes installed for the idle measurement (one in ten a pod route); 0 skips it.
    #[arg(long, default_value_t = 25_000)]
    idle_routes: u32,
    /// Length of the idle window, seconds.
    #[arg(long, default_value_t = 10.0)]
    idle_seconds: f64,
    /// Repetitions; the median of each figure is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Pod addresses per workload interface.
    #[arg(long, default_value_t = 100)]
    addrs_per_iface: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: the measuring part, run inside a namespace by the outer process.
    #[arg(long, hide = true, value_enum)]
    inner: Option<Inner>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Inner {
    /// Program `--pods` + `--learned` routes and report the time.
    Program,
    /// Program, settle, then measure CPU over `--idle-seconds`.
    Idle,
}

/// Runs `tabby bench`.
pub fn run(args: Args) -> ExitCode {
    let args = match args.what {
        What::Routes(args) => args,
        What::Reflector(args) => return crate::bench_reflector::run(args),
        What::Rib(args) => return crate::bench_rib::run(args),
    };
    crate::bench_proc::finish(args.validate(), move || match args.inner {
        Some(kind) => inner(&args, kind),
        None => crate::bench_proc::with_signals(args, outer),
    })
}

impl RoutesArgs {
    fn validate(&self) -> Result<(), String> {
        if self.runs == 0 {
            return Err("--runs must be at least 1".into());
        }
        if self.addrs_per_iface == 0 {
            return Err("--addrs-per-iface must be at least 1".into());
        }
        if !(self.idle_seconds.is_finite() && self.idle_seconds >= 0.0) {
            return Err("--idle-seconds must be a non-negative number".into());
        }
        for (flag, n) in [
            ("--pods", self.pods),
            ("--learned", self.learned),
            ("--idle-routes", self.idle_routes),
        ] {
            let mix = Mix::split(flag, n, self.addrs_per_iface);
            if mix.pods > MAX_PODS || mix.learned > MAX_LEARNED {
                return Err(format!(
                    "{flag} {n} is too many: at most {MAX_PODS} pod and {MAX_LEARNED} learned routes"
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The routes: one generator for both contenders.

/// Pod addresses come from 10.128.0.0/10.
const MAX_PODS: u32 = 1 << 22;
/// Learned /26 blocks come from 10.0.0.0/9.
const MAX_LEARNED: u32 = 1 << 17;
const POD_BASE: u32 = u32::from_be_bytes([10, 128, 0, 0]);
const LEARNED_BASE: u32 = u32::from_be_bytes([10, 0, 0, 0]);
/// Gateways (the "other nodes"): 10.255.1.1-100 and, for ECMP, 10.255.2.1-100, on-link
/// through the underlay's 10.255.0.0/16.
const GATEWAYS: u32 = 100;
const UNDERLAY: &str = "under0";

/// A set of routes: `pods` workload routes and `learned` BGP routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mix {
    pods: u32,
    learned: u32,
    per_iface: u32,
}

impl Mix {
    /// The mix of a scenario flag: pods only, learned only, or one in ten pod routes (idle).
    fn split(flag: &str, n: u32, per_iface: u32) -> Mix {
        let (pods, learned) = match flag {
            "--pods" => (n, 0),
            "--learned" => (0, n),
            _ => (n / 10, n - n / 10),
        };
        Mix {
            pods,
            learned,
            per_iface,
        }
    }

    fn total(&self) -> u32 {
        self.pods + self.learned
    }

    fn ifaces(&self) -> u32 {
        self.pods.div_ceil(self.per_iface)
    }

    fn iface(k: u32) -> String {
        format!("cali{k:011x}")
    }

    fn pod(&self, i: u32) -> (Ipv4Addr, String) {
        (Ipv4Addr::from(POD_BASE + i), Mix::iface(i / self.per_iface))
    }

    /// Block `i` and its gateways (two for every tenth block).
    fn learned(i: u32) -> (Ipv4Addr, Vec<Ipv4Addr>) {
        let block = Ipv4Addr::from(LEARNED_BASE + i * 64);
        let n = (i % GATEWAYS + 1) as u8;
        let mut gws = vec![Ipv4Addr::new(10, 255, 1, n)];
        if i % 10 == 9 {
            gws.push(Ipv4Addr::new(10, 255, 2, n));
        }
        (block, gws)
    }

    /// What tabby is asked for.
    fn routes(&self) -> Vec<Route> {
        let mut out = Vec::with_capacity(self.total() as usize);
        for i in 0..self.pods {
            let (addr, iface) = self.pod(i);
            out.push(Route {
                dst: Dst {
                    addr: IpAddr::V4(addr),
                    len: 32,
                },
                target: Target::Workload { iface },
            });
        }
        for i in 0..self.learned {
            let (block, gws) = Mix::learned(i);
            out.push(Route {
                dst: Dst {
                    addr: IpAddr::V4(block),
                    len: 26,
                },
                target: Target::Via(
                    gws.into_iter()
                        .map(|g| NextHop {
                            gateway: IpAddr::V4(g),
                            ipip: false,
                        })
                        .collect(),
                ),
            });
        }
        out
    }

    /// The same routes as an `ip -batch` script.
    fn ip_script(&self) -> String {
        let mut s = String::with_capacity(self.total() as usize * 64);
        for i in 0..self.pods {
            let (addr, iface) = self.pod(i);
            let _ = writeln!(s, "route add {addr}/32 dev {iface} scope link proto 44");
        }
        for i in 0..self.learned {
            let (block, gws) = Mix::learned(i);
            if let [gw] = gws.as_slice() {
                let _ = writeln!(s, "route add {block}/26 via {gw} proto 44");
            } else {
                let _ = write!(s, "route add {block}/26 proto 44");
                for gw in gws {
                    let _ = write!(s, " nexthop via {gw}");
                }
                s.push('\n');
            }
        }
        s
    }

    /// The links both contenders start from (not timed): the underlay and the workload
    /// veths (both ends up in the same namespace, so the `cali` end has carrier; no IPv6
    /// link-local addresses, so the kernel adds no routes of its own on them).
    fn setup_script(&self) -> String {
        let mut s = format!(
            "link set lo up\nlink add {UNDERLAY} type veth peer name {UNDERLAY}p\n\
             addr add 10.255.0.1/16 dev {UNDERLAY}\nlink set {UNDERLAY} up\nlink set {UNDERLAY}p up\n"
        );
        for k in 0..self.ifaces() {
            let cali = Mix::iface(k);
            let peer = format!("tbp{k:011x}");
            let _ = writeln!(s, "link add {cali} type veth peer name {peer}");
            let _ = writeln!(s, "link set {cali} addrgenmode none");
            let _ = writeln!(s, "link set {peer} addrgenmode none");
            let _ = writeln!(s, "link set {cali} up");
            let _ = writeln!(s, "link set {peer} up");
        }
        s
    }
}

// ---------------------------------------------------------------------------------------
// CPU accounting from /proc (no libc, no unsafe).

/// A CPU clock read from /proc/self/stat, 10 ms resolution.
#[derive(Debug, Clone, Copy)]
struct Ticks(u64);

impl Ticks {
    /// CPU time of this process (all threads, dead ones included).
    fn own() -> anyhow::Result<Ticks> {
        let [u, s, _, _] =
            crate::bench_proc::stat_ticks(&crate::bench_proc::proc_file(None, "stat"))?;
        Ok(Ticks(u + s))
    }

    /// CPU time of the waited-for children of this process.
    fn children() -> anyhow::Result<Ticks> {
        let [_, _, cu, cs] =
            crate::bench_proc::stat_ticks(&crate::bench_proc::proc_file(None, "stat"))?;
        Ok(Ticks(cu + cs))
    }

    /// Seconds from `earlier` to `self`.
    fn since(self, earlier: Ticks) -> f64 {
        self.0.saturating_sub(earlier.0) as f64 / crate::bench_proc::TICKS_PER_SECOND
    }
}

/// On-CPU time of the live threads of this process, nanosecond resolution
/// (/proc/self/task/*/schedstat, first field).
fn threads_cpu_ns() -> anyhow::Result<u64> {
    let mut sum = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path().join("schedstat");
        // A thread may exit between the listing and the read.
        if let Ok(s) = std::fs::read_to_string(path) {
            sum += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(sum)
}

// ---------------------------------------------------------------------------------------
// The inner part: tabby's route manager inside the namespace it was started in.

fn inner(args: &RoutesArgs, kind: Inner) -> anyhow::Result<()> {
    let started = Instant::now();
    let mix = Mix {
        pods: args.pods,
        learned: args.learned,
        per_iface: args.addrs_per_iface,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let mut result = runtime.block_on(measure(mix, kind, args.idle_seconds))?;
    result.insert("process_s".into(), json!(started.elapsed().as_secs_f64()));
    println!("{}", Value::Object(result));
    Ok(())
}

async fn measure(mix: Mix, kind: Inner, idle_seconds: f64) -> anyhow::Result<Map<String, Value>> {
    let routes = mix.routes();
    let t0 = Instant::now();
    let manager = RouteManager::start(RouteManagerConfig::default()).await?;
    let start_s = t0.elapsed().as_secs_f64();

    let (t1, cpu1) = (Instant::now(), Ticks::own()?);
    manager.set_desired(routes).await?;
    manager.wait_in_sync().await?;
    let (program_s, program_cpu_s) = (t1.elapsed().as_secs_f64(), Ticks::own()?.since(cpu1));
    let programmed = manager.stats().routes_programmed;

    // The echoes of our own writes come back as notifications and are reconciled (to
    // nothing): part of the cost of programming. Settled = a 200 ms window under 1 ms CPU.
    let (t2, cpu2) = (Instant::now(), Ticks::own()?);
    loop {
        let before = threads_cpu_ns()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if threads_cpu_ns()? - before < 1_000_000 || t2.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    let (settle_s, settle_cpu_s) = (t2.elapsed().as_secs_f64(), Ticks::own()?.since(cpu2));

    let mut out = Map::new();
    out.insert("routes".into(), json!(mix.total()));
    out.insert("programmed".into(), json!(programmed));
    out.insert("start_s".into(), json!(start_s));
    out.insert("program_s".into(), json!(program_s));
    out.insert("program_cpu_s".into(), json!(program_cpu_s));
    out.insert("settle_s".into(), json!(settle_s));
    out.insert("settle_cpu_s".into(), json!(settle_cpu_s));
    if kind == Inner::Idle {
        let (ns0, ticks0, t3) = (threads_cpu_ns()?, Ticks::own()?, Instant::now());
        tokio::time::sleep(Duration::from_secs_f64(idle_seconds)).await;
        let (ns1, ticks1) = (threads_cpu_ns()?, Ticks::own()?);
        out.insert("idle_s".into(), json!(t3.elapsed().as_secs_f64()));
        out.insert("idle_cpu_s".into(), json!((ns1 - ns0) as f64 / 1e9));
        out.insert("idle_cpu_ticks_s".into(), json!(ticks1.since(ticks0)));
    }
    let stats = manager.stats();
    out.insert("changes_applied".into(), json!(stats.changes_applied));
    out.insert("change_failures".into(), json!(stats.change_failures));
    out.insert("resyncs".into(), json!(stats.resyncs));
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Namespaces, deleted on drop and on SIGINT/SIGTERM.

/// Live namespaces of this process; `None` once a signal has cleaned up (no more may be made).
static NAMESPACES: Mutex<Option<BTreeSet<String>>> = Mutex::new(Some(BTreeSet::new()));
static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// A network namespace created by the benchmark, deleted when dropped.
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn create() -> anyhow::Result<Netns> {
        let name = format!(
            "tabby-bench-{}-{}",
            std::process::id(),
            NEXT_NS.fetch_add(1, Ordering::Relaxed)
        );
        // Created under the lock: a signal's clean-up sees it, or it is never created.
        let mut live = NAMESPACES.lock().unwrap_or_else(|e| e.into_inner());
        let Some(set) = live.as_mut() else {
            bail!("interrupted");
        };
        run_cmd(Command::new("ip").args(["netns", "add", &name]))?;
        set.insert(name.clone());
        if std::path::Path::new("/proc/sys/net/ipv6").exists() {
            // A new veth's link-local address runs DAD, and the first IPv6 neighbour lookup
            // over it waits for that: 2 s before the first IPv6 session could come up.
            run_cmd(Command::new("ip").args([
                "netns",
                "exec",
                &name,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ]))?;
        }
        Ok(Netns { name })
    }

    /// Runs an `ip -batch` script in the namespace (setup; not timed).
    pub(crate) fn batch(&self, script: &str) -> anyhow::Result<()> {
        let out = feed(
            Command::new("ip").args(["-n", &self.name, "-batch", "-"]),
            script.to_string(),
        )?;
        check(&out, "ip -batch (setup)")
    }

    /// Top-level routes of protocol 44 in the main table.
    fn count_routes(&self) -> anyhow::Result<u64> {
        let out = run_cmd(Command::new("ip").args([
            "-n", &self.name, "-4", "route", "show", "table", "main", "proto", "44",
        ]))?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(char::is_whitespace))
            .count() as u64)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let mut live = NAMESPACES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = live.as_mut() {
            set.remove(&self.name);
            delete_netns(&self.name);
        }
    }
}

fn delete_netns(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

pub(crate) fn cleanup_all() {
    let mut live = NAMESPACES.lock().unwrap_or_else(|e| e.into_inner());
    for name in live.take().unwrap_or_default() {
        delete_netns(&name);
    }
}

// ---------------------------------------------------------------------------------------
// The outer part: namespaces, both contenders, the report.

fn outer(args: &RoutesArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the tabby binary")?;
    let scenarios: Vec<(&str, &str, u32)> = [
        ("pods", "--pods", args.pods),
        ("learned", "--learned", args.learned),
        ("idle", "--idle-routes", args.idle_routes),
    ]
    .into_iter()
    .filter(|s| s.2 > 0)
    .collect();
    // samples[scenario] = (tabby results, ip results), one per run
    let mut samples: Vec<(Vec<Value>, Vec<Value>)> = vec![Default::default(); scenarios.len()];
    for run_no in 0..args.runs {
        for (i, (name, flag, n)) in scenarios.iter().enumerate() {
            let mix = Mix::split(flag, *n, args.addrs_per_iface);
            let idle = *name == "idle";
            if !args.json {
                eprintln!("run {}/{}: {name} ({n} routes)", run_no + 1, args.runs);
            }
            let t = run_tabby(&exe, mix, idle, args.idle_seconds)
                .with_context(|| format!("{name}: tabby"))?;
            let ip = run_ip(mix, idle).with_context(|| format!("{name}: ip -batch"))?;
            samples[i].0.push(t);
            samples[i].1.push(ip);
        }
    }
    let mut report = Vec::new();
    for ((name, _, n), (t, ip)) in scenarios.iter().zip(&samples) {
        let (t, ip) = (median_fields(t), median_fields(ip));
        let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let mut entry = json!({ "scenario": name, "routes": n, "tabby": t, "ip": ip });
        if *name == "idle" {
            entry["ratio_idle_cpu_to_one_dump"] =
                json!(num(&t, "idle_cpu_s") / num(&ip, "dump_cpu_s"));
        } else {
            entry["ratio_wall"] = json!(num(&t, "program_s") / num(&ip, "wall_s"));
            entry["ratio_cpu"] =
                json!((num(&t, "program_cpu_s") + num(&t, "settle_cpu_s")) / num(&ip, "cpu_s"));
        }
        report.push(entry);
    }
    let doc = json!({
        "machine": machine(),
        "runs": args.runs,
        "addrs_per_iface": args.addrs_per_iface,
        "idle_seconds": args.idle_seconds,
        "scenarios": report,
    });
    if args.json {
        println!("{doc:#}");
    } else {
        print!("{}", table(&doc));
    }
    Ok(())
}

/// tabby in a fresh namespace: the inner part, re-executed there with `ip netns exec`.
fn run_tabby(
    exe: &std::path::Path,
    mix: Mix,
    idle: bool,
    idle_seconds: f64,
) -> anyhow::Result<Value> {
    let ns = Netns::create()?;
    ns.batch(&mix.setup_script())?;
    let cpu0 = Ticks::children()?;
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(exe)
        .args([
            "bench",
            "routes",
            "--inner",
            if idle { "idle" } else { "program" },
        ])
        .args(["--pods", &mix.pods.to_string()])
        .args(["--learned", &mix.learned.to_string()])
        .args(["--addrs-per-iface", &mix.per_iface.to_string()])
        .args(["--idle-seconds", &idle_seconds.to_string()])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .output()?;
    let process_cpu_s = Ticks::children()?.since(cpu0);
    check(&out, "tabby bench routes --inner")?;
    let mut v: Value = serde_json::from_slice(&out.stdout).context("inner result is not JSON")?;
    v["process_cpu_s"] = json!(process_cpu_s);
    v["kernel_routes"] = json!(ns.count_routes()?);
    Ok(v)
}

/// `ip -batch` of the same routes in a fresh namespace; for idle, also the cost of one
/// full `ip route show` dump (what an agent that scans the table pays per scan).
fn run_ip(mix: Mix, idle: bool) -> anyhow::Result<Value> {
    let ns = Netns::create()?;
    ns.batch(&mix.setup_script())?;
    let script = mix.ip_script();
    let (cpu0, t0) = (Ticks::children()?, Instant::now());
    let out = feed(
        Command::new("ip").args(["-n", &ns.name, "-batch", "-"]),
        script,
    )?;
    let (wall_s, cpu_s) = (t0.elapsed().as_secs_f64(), Ticks::children()?.since(cpu0));
    check(&out, "ip -batch")?;
    let mut v = json!({
        "routes": mix.total(),
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "kernel_routes": ns.count_routes()?,
    });
    if idle {
        // Several dumps, for the 10 ms resolution of the children's CPU time.
        const DUMPS: u32 = 5;
        let (cpu0, t0) = (Ticks::children()?, Instant::now());
        for _ in 0..DUMPS {
            let status = Command::new("ip")
                .args(["-n", &ns.name, "route", "show", "table", "main"])
                .stdout(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("ip route show: {status}");
            }
        }
        v["dump_wall_s"] = json!(t0.elapsed().as_secs_f64() / f64::from(DUMPS));
        v["dump_cpu_s"] = json!((Ticks::children()?.since(cpu0)) / f64::from(DUMPS));
    }
    Ok(v)
}

/// Runs a command, its stdin fed from a thread.
fn feed(cmd: &mut Command, input: String) -> anyhow::Result<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ip")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    // A write error (broken pipe) only means ip stopped early: its status says why.
    let _ = writer.join();
    Ok(out)
}

pub(crate) fn run_cmd(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().context("cannot run ip")?;
    check(&out, "ip")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn check(out: &std::process::Output, what: &str) -> anyhow::Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The median of every numeric field over the runs (other fields from the first run).
fn median_fields(runs: &[Value]) -> Value {
    let Some(Value::Object(first)) = runs.first() else {
        return Value::Null;
    };
    let mut out = Map::new();
    for (k, v) in first {
        let mut xs: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.get(k).and_then(Value::as_f64))
            .collect();
        if !v.is_number() || xs.len() != runs.len() {
            out.insert(k.clone(), v.clone());
            continue;
        }
        xs.sort_by(f64::total_cmp);
        let m = if xs.len() % 2 == 1 {
            xs[xs.len() / 2]
        } else {
            (xs[xs.len() / 2 - 1] + xs[xs.len() / 2]) / 2.0
        };
        out.insert(
            k.clone(),
            if v.is_f64() {
                json!(m)
            } else {
                json!(m as u64)
            },
        );
    }
    Value::Object(out)
}

pub(crate) fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "kernel": kernel.trim(),
        "ip": ip,
    })
}

fn table(doc: &Value) -> String {
    let f = |v: &Value, path: &[&str]| -> f64 {
        path.iter()
            .try_fold(v, |v, k| v.get(k))
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    let m = &doc["machine"];
    let mut s = format!(
        "tabby bench routes: median of {} run(s); {} CPU(s) {}; kernel {}; {}\n\n",
        doc["runs"],
        m["cpus"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["ip"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        s,
        "{:<10} {:>8} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8}  in kernel (tabby/ip)",
        "scenario", "routes", "tabby s", "ip s", "wall x", "tabby CPU", "ip CPU", "CPU x",
    );
    let mut idle = None;
    for e in doc["scenarios"].as_array().into_iter().flatten() {
        let name = e["scenario"].as_str().unwrap_or("?");
        if name == "idle" {
            idle = Some(e);
            continue;
        }
        let _ = writeln!(
            s,
            "{:<10} {:>8} {:>10.3} {:>10.3} {:>8.2} {:>10.3} {:>10.3} {:>8.2}  {}/{}",
            name,
            e["routes"].as_u64().unwrap_or(0),
            f(e, &["tabby", "program_s"]),
            f(e, &["ip", "wall_s"]),
            f(e, &["ratio_wall"]),
            f(e, &["tabby", "program_cpu_s"]) + f(e, &["tabby", "settle_cpu_s"]),
            f(e, &["ip", "cpu_s"]),
            f(e, &["ratio_cpu"]),
            e["tabby"]["kernel_routes"],
            e["ip"]["kernel_routes"],
        );
    }
    if let Some(e) = idle {
        let _ = write!(
            s,
            "\nidle, {} routes installed ({}/{} in kernel):\n  \
             tabby: {:.4} s CPU in {:.1} s idle (after programming in {:.3} s and settling)\n  \
             ip route show (one full dump, what a scanning agent pays per scan): \
             {:.4} s CPU, {:.4} s wall\n  \
             ratio tabby idle window / one dump: {:.3}\n",
            e["routes"],
            e["tabby"]["kernel_routes"],
            e["ip"]["kernel_routes"],
            f(e, &["tabby", "idle_cpu_s"]),
            f(e, &["tabby", "idle_s"]),
            f(e, &["tabby", "program_s"]),
            f(e, &["ip", "dump_cpu_s"]),
            f(e, &["ip", "dump_wall_s"]),
            f(e, &["ratio_idle_cpu_to_one_dump"]),
        );
    }
    s.push_str(
        "\ntabby s = set_desired to in-sync; ip s = the whole `ip -batch` process; tabby CPU \
         includes reconciling the echoes of its own writes; x = tabby/ip.\n",
    );
    s
}
