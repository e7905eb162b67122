//! Building a lab in the kernel, starting its processes, and removing all of it.
//!
//! The wiring:
//! - a segment is a bridge `br0` in a netns of its own (the switch); every host on it gets a
//!   veth pair, `p<N>` on the bridge, `eth<K>` in the host;
//! - a node's (and a reflector's) default routes go to the first external peer on its
//!   segment (its top-of-rack router), which forwards between segments. A route a node
//!   learns over iBGP from a node of another rack, `via <that node>`, is written by
//!   `tabby node` via the gateway of its route to that node (a recursive next hop, as
//!   Calico's BIRD does with `gateway recursive`): here, the top-of-rack router;
//! - a pod is wired as Calico's CNI plugin wires it (shared/DESIGN.md §4).

use crate::state::Layout;
use crate::sys::{self, command_in, ip, ip_in, spawn_detached, sysctl_in};
use crate::topology::{Host, Lab, PeerKind, Pod, Role};
use crate::LabError;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a lab's processes are run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `tabby` binary run in each node and reflector netns.
    pub tabby: PathBuf,
    /// `RUST_LOG` of the tabby processes.
    pub log_level: String,
}

fn io_error(path: &Path, source: std::io::Error) -> LabError {
    LabError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    std::fs::write(path, text).map_err(|e| io_error(path, e))
}

/// Whether anything of the lab exists: its state directory or any of its netns.
pub fn exists(layout: &Layout) -> bool {
    layout.dir().exists()
        || sys::netns_list()
            .unwrap_or_default()
            .iter()
            .any(|n| n.starts_with(&layout.netns_prefix()))
}

fn add_netns(name: &str) -> Result<(), LabError> {
    ip(&["netns", "add", name])?;
    ip_in(name, &["link", "set", "lo", "up"])?;
    if std::path::Path::new("/proc/sys/net/ipv6").exists() {
        // Addresses are added `nodad`, but an interface's link-local address still runs DAD,
        // and until it ends the first IPv6 neighbour lookup over the link waits: 2 s before
        // the first IPv6 packet (and BGP session) crosses. The lab's links are new veths.
        sysctl_in(
            name,
            &[
                ("net.ipv6.conf.all.accept_dad".to_string(), "0"),
                ("net.ipv6.conf.default.accept_dad".to_string(), "0"),
            ],
        )?;
    }
    Ok(())
}

/// Creates the lab's namespaces, links, addresses, routes, pods and datastore, and starts
/// its processes. The resolved topology is written first, so [`down`] can undo a partial
/// build.
pub fn create(
    lab: &Lab,
    layout: &Layout,
    run: &RunOptions,
    say: &dyn Fn(&str),
) -> Result<(), LabError> {
    if exists(layout) {
        return Err(LabError::Exists(layout.name().to_string()));
    }
    // Resources first: a mistake in them is reported before anything is created.
    let files = crate::resources::render(lab)?;
    let extras = lab
        .resources
        .iter()
        .map(|p| Ok((p, crate::resources::check_extra(p)?)))
        .collect::<Result<Vec<_>, LabError>>()?;
    let json = serde_json::to_string_pretty(lab).map_err(|e| LabError::Internal(e.to_string()))?;
    write(&layout.lab_file(), &json)?;
    for dir in [
        layout.datastore(),
        layout.pids_dir(),
        layout.dir().join("logs"),
        layout.dir().join("bird"),
        layout.dir().join("gobgp"),
    ] {
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    }

    for s in &lab.segments {
        let nets: Vec<String> = [s.v4, s.v6]
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        say(&format!("segment {} ({})", s.name, nets.join(", ")));
        let ns = layout.switch_netns(&s.name);
        add_netns(&ns)?;
        ip_in(&ns, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(&ns, &["link", "set", "br0", "up"])?;
    }

    let mut ports = vec![0usize; lab.segments.len()];
    for h in &lab.hosts {
        let ns = layout.host_netns(&h.name);
        add_netns(&ns)?;
        for i in &h.ifaces {
            let seg = &lab.segments[i.segment];
            let sw = layout.switch_netns(&seg.name);
            let port = format!("p{}", ports[i.segment]);
            ports[i.segment] += 1;
            ip_in(
                &sw,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", &i.name, "netns", &ns,
                ],
            )?;
            // The alias says which host a switch port leads to (`ip -n <switch> link`).
            ip_in(
                &sw,
                &[
                    "link",
                    "set",
                    &port,
                    "alias",
                    &format!("{}:{}", h.name, i.name),
                ],
            )?;
            ip_in(&sw, &["link", "set", &port, "master", "br0", "up"])?;
            if let (Some(a), Some(n)) = (i.v4, seg.v4) {
                ip_in(
                    &ns,
                    &[
                        "addr",
                        "add",
                        &format!("{a}/{}", n.prefix_len()),
                        "dev",
                        &i.name,
                    ],
                )?;
            }
            if let (Some(a), Some(n)) = (i.v6, seg.v6) {
                // No DAD: the address is usable at once, and the lab assigns it uniquely.
                ip_in(
                    &ns,
                    &[
                        "-6",
                        "addr",
                        "add",
                        &format!("{a}/{}", n.prefix_len()),
                        "dev",
                        &i.name,
                        "nodad",
                    ],
                )?;
            }
            ip_in(&ns, &["link", "set", &i.name, "up"])?;
        }
        let addrs: Vec<String> = h
            .ifaces
            .iter()
            .flat_map(|i| [i.v4.map(|a| a.to_string()), i.v6.map(|a| a.to_string())])
            .flatten()
            .collect();
        let what = match &h.role {
            Role::Node { .. } => "node".to_string(),
            Role::Reflector { .. } => "route reflector".to_string(),
            Role::Peer {
                as_number, daemon, ..
            } => format!("external peer ({}, AS {as_number})", daemon.label()),
        };
        say(&format!("{what} {} ({})", h.name, addrs.join(", ")));
        match h.role {
            Role::Peer { daemon, .. } => wire_router(lab, layout, h, daemon)?,
            _ => wire_host_routes(layout, h)?,
        }
    }

    for p in &lab.pods {
        wire_pod(layout, p)?;
        let ips: Vec<String> = p.ips().iter().map(ToString::to_string).collect();
        say(&format!(
            "pod {} on {}: {} (host side {})",
            p.id(),
            p.node,
            ips.join(", "),
            p.host_if
        ));
    }

    for f in &files {
        write(&layout.datastore().join(&f.name), &f.text)?;
    }
    for (k, (path, text)) in extras.iter().enumerate() {
        let name = path.file_name().map_or_else(
            || "resources.yaml".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        write(&layout.datastore().join(format!("extra-{k}-{name}")), text)?;
    }
    say(&format!(
        "datastore {} ({} files)",
        layout.datastore().display(),
        files.len() + lab.resources.len()
    ));

    for h in lab.hosts.iter().filter(|h| h.is_peer()) {
        let pid = start(lab, layout, h, run)?;
        let daemon = match h.role {
            Role::Peer { daemon, .. } => daemon.label(),
            _ => "?",
        };
        say(&format!(
            "started {daemon} on {} (pid {pid}, log {})",
            h.name,
            layout.log(&h.name).display()
        ));
    }
    for h in lab.hosts.iter().filter(|h| !h.is_peer()) {
        let pid = start(lab, layout, h, run)?;
        let what = if h.is_node() {
            "tabby node"
        } else {
            "tabby route-reflector"
        };
        say(&format!(
            "started {what} on {} (pid {pid}, log {})",
            h.name,
            layout.log(&h.name).display()
        ));
    }
    Ok(())
}

/// Default routes of a node or reflector.
fn wire_host_routes(layout: &Layout, h: &Host) -> Result<(), LabError> {
    let ns = layout.host_netns(&h.name);
    let Some(iface) = h.ifaces.first() else {
        return Ok(());
    };
    let dev = iface.name.as_str();
    // Every node needs a default route: proxy ARP for 169.254.1.1 only answers when the node
    // has a route to it. Without a router on the segment, the default route is on-link; what
    // it carries stays on the lab's segment.
    match h.gateway4 {
        Some(g) => ip_in(
            &ns,
            &["route", "add", "default", "via", &g.to_string(), "dev", dev],
        )?,
        None if iface.v4.is_some() => ip_in(&ns, &["route", "add", "default", "dev", dev])?,
        None => String::new(),
    };
    match h.gateway6 {
        Some(g) => ip_in(
            &ns,
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &g.to_string(),
                "dev",
                dev,
            ],
        )?,
        None if iface.v6.is_some() => ip_in(&ns, &["-6", "route", "add", "default", "dev", dev])?,
        None => String::new(),
    };
    Ok(())
}

/// Forwarding on an external router; for GoBGP, which cannot write the kernel's FIB, the
/// routes it would install ([`crate::gobgp::static_routes`]).
fn wire_router(lab: &Lab, layout: &Layout, h: &Host, daemon: PeerKind) -> Result<(), LabError> {
    let ns = layout.host_netns(&h.name);
    sysctl_in(
        &ns,
        &[
            ("net.ipv4.ip_forward".to_string(), "1"),
            ("net.ipv6.conf.all.forwarding".to_string(), "1"),
        ],
    )?;
    if daemon == PeerKind::Gobgp {
        for r in crate::gobgp::static_routes(lab, h) {
            let family = if r.prefix.is_ipv6() { "-6" } else { "-4" };
            ip_in(
                &ns,
                &[
                    family,
                    "route",
                    "add",
                    &r.prefix.to_string(),
                    "via",
                    &r.gateway.to_string(),
                    "dev",
                    &r.dev,
                    "proto",
                    "static",
                ],
            )?;
        }
    }
    Ok(())
}

/// Wires a pod as Calico's CNI plugin does: a netns with `eth0` holding its addresses as
/// /32 and /128, default routes via 169.254.1.1 and fe80::ecee:eeff:feee:eeee, and the host
/// side in the node's netns, named by the SHA-1 rule, with MAC ee:ee:ee:ee:ee:ee.
fn wire_pod(layout: &Layout, p: &Pod) -> Result<(), LabError> {
    let ns = layout.pod_netns(p);
    let node_ns = layout.host_netns(&p.node);
    add_netns(&ns)?;
    ip_in(
        &node_ns,
        &[
            "link", "add", &p.host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ],
    )?;
    ip_in(
        &node_ns,
        &[
            "link",
            "set",
            &p.host_if,
            "address",
            "ee:ee:ee:ee:ee:ee",
            "up",
        ],
    )?;
    ip_in(&ns, &["link", "set", "eth0", "up"])?;
    if let Some(a) = p.v4 {
        ip_in(&ns, &["addr", "add", &format!("{a}/32"), "dev", "eth0"])?;
        ip_in(
            &ns,
            &[
                "route",
                "add",
                "169.254.1.1",
                "dev",
                "eth0",
                "scope",
                "link",
            ],
        )?;
        ip_in(
            &ns,
            &[
                "route",
                "add",
                "default",
                "via",
                "169.254.1.1",
                "dev",
                "eth0",
            ],
        )?;
    }
    if let Some(a) = p.v6 {
        ip_in(
            &ns,
            &[
                "-6",
                "addr",
                "add",
                &format!("{a}/128"),
                "dev",
                "eth0",
                "nodad",
            ],
        )?;
        ip_in(
            &ns,
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fe80::ecee:eeff:feee:eeee",
                "dev",
                "eth0",
            ],
        )?;
    }
    Ok(())
}

/// Starts the process of a host (BIRD, GoBGP, `tabby node` or `tabby route-reflector`)
/// detached, logging to its own file; records its pid. For GoBGP, also waits for its API
/// and originates the router's connected subnets ([`crate::gobgp::originated`]).
pub fn start(lab: &Lab, layout: &Layout, h: &Host, run: &RunOptions) -> Result<u32, LabError> {
    let ns = layout.host_netns(&h.name);
    let datastore = format!("file:{}", layout.datastore().display());
    let cmd = match &h.role {
        Role::Peer {
            daemon: PeerKind::Bird,
            ..
        } => {
            let conf = layout.bird_conf(&h.name);
            write(&conf, &crate::bird::config(lab, h))?;
            let ctl = layout.bird_ctl(&h.name);
            // A control socket left by a killed BIRD would make the new one refuse to start.
            let _ = std::fs::remove_file(&ctl);
            let mut c = command_in(&ns, "bird");
            c.arg("-f").arg("-c").arg(&conf).arg("-s").arg(&ctl);
            c
        }
        Role::Peer {
            daemon: PeerKind::Gobgp,
            ..
        } => {
            let conf = layout.gobgp_conf(&h.name);
            write(&conf, &crate::gobgp::config(lab, h))?;
            let mut c = command_in(&ns, "gobgpd");
            c.arg("-f").arg(&conf).args([
                "-t",
                "toml",
                "-p",
                "-l",
                "info",
                "--pprof-disable",
                &format!("--api-hosts=127.0.0.1:{}", crate::gobgp::API_PORT),
            ]);
            c
        }
        Role::Node { .. } | Role::Reflector { .. } => {
            let mut c = command_in(&ns, &run.tabby.to_string_lossy());
            c.arg(if h.is_node() {
                "node"
            } else {
                "route-reflector"
            });
            c.args(["--hold-time", &crate::bird::HOLD_TIME.to_string()]);
            c.args(["--datastore", &datastore, "--node-name", &h.name]);
            c.env("RUST_LOG", &run.log_level);
            // The log is a file: no terminal colours in it.
            c.env("NO_COLOR", "1");
            c
        }
    };
    let pid = spawn_detached(cmd, &layout.log(&h.name))?;
    write(&layout.pid_file(&h.name), &format!("{pid}\n"))?;
    if let Role::Peer {
        daemon: PeerKind::Gobgp,
        ..
    } = h.role
    {
        originate(lab, layout, h, pid)?;
    }
    Ok(pid)
}

/// Waits (10 s at most) for a just started gobgpd to answer on its API, then has it
/// originate the router's connected subnets. gobgpd keeps them until it stops; a restart
/// goes through [`start`] again.
fn originate(lab: &Lab, layout: &Layout, h: &Host, pid: u32) -> Result<(), LabError> {
    let ns = layout.host_netns(&h.name);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sys::run(&mut crate::gobgp::cli(&ns, &["global"])) {
            Ok(_) => break,
            Err(e) if !sys::alive(pid) || Instant::now() >= deadline => {
                return Err(LabError::Sys(sys::SysError::Failed {
                    command: format!("gobgpd on {}", h.name),
                    stderr: format!(
                        "it does not answer on its API (its log: {}): {e}",
                        layout.log(&h.name).display()
                    ),
                }));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    for net in crate::gobgp::originated(lab, h) {
        let family = if net.is_ipv6() { "ipv6" } else { "ipv4" };
        sys::run(&mut crate::gobgp::cli(
            &ns,
            &["global", "rib", "add", "-a", family, &net.to_string()],
        ))?;
    }
    Ok(())
}

/// The pid of a host's process, if it runs and is the lab's (its command line names the
/// lab's directory, so a reused pid is never mistaken for it).
pub fn running_pid(layout: &Layout, host: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(layout.pid_file(host))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let dir = layout.dir().display().to_string();
    (sys::alive(pid) && sys::cmdline(pid).is_some_and(|c| c.contains(&dir))).then_some(pid)
}

/// Stops processes: SIGTERM, then SIGKILL for those still running after `grace`.
fn stop_pids(pids: &[u32], grace: Duration) {
    for &p in pids {
        sys::signal(p, "TERM");
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| sys::alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &p in pids.iter().filter(|&&p| sys::alive(p)) {
        sys::signal(p, "KILL");
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|&p| sys::alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a host's process (SIGTERM, SIGKILL after 5 s); true if it was running.
pub fn stop(layout: &Layout, host: &str) -> bool {
    match running_pid(layout, host) {
        Some(pid) => {
            stop_pids(&[pid], Duration::from_secs(5));
            true
        }
        None => false,
    }
}

/// Stops a host's process and starts it again (a restart of the agent: the kernel state
/// it left stays, as on a real node).
pub fn restart(lab: &Lab, layout: &Layout, host: &str, run: &RunOptions) -> Result<u32, LabError> {
    let h = lab
        .host(host)
        .ok_or_else(|| LabError::NoSuchTarget(host.to_string()))?;
    stop(layout, host);
    start(lab, layout, h, run)
}

/// What [`down`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Processes stopped.
    pub processes: usize,
    /// Namespaces deleted (with every link inside).
    pub netns: usize,
    /// Whether the state directory was removed.
    pub state: bool,
}

/// Removes everything of the lab: its processes (from the pid files, and any other process
/// inside its namespaces), its namespaces (which takes every link along), and its state
/// directory. Works from the name alone, whatever state `lab up` left.
pub fn down(layout: &Layout) -> Result<Removed, LabError> {
    let mut removed = Removed::default();
    let prefix = layout.netns_prefix();
    let namespaces: Vec<String> = sys::netns_list()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    let mut pids: Vec<u32> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(layout.pids_dir()) {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(host) = name.strip_suffix(".pid") {
                pids.extend(running_pid(layout, host));
            }
        }
    }
    for ns in &namespaces {
        pids.extend(sys::netns_pids(ns));
    }
    pids.sort_unstable();
    pids.dedup();
    removed.processes = pids.iter().filter(|&&p| sys::alive(p)).count();
    stop_pids(&pids, Duration::from_secs(5));
    for ns in &namespaces {
        ip(&["netns", "del", ns])?;
        removed.netns += 1;
    }
    if layout.dir().exists() {
        std::fs::remove_dir_all(layout.dir()).map_err(|e| io_error(layout.dir(), e))?;
        removed.state = true;
    }
    Ok(removed)
}
