//! `tabby lab` end to end: the default topology (nodes peering through the route reflector
//! rr1) converges with every pod reaching every pod; restarting a node agent, or stopping the
//! reflector, loses no ping between racks (graceful restart); `lab down` leaves nothing
//! behind, also after a kill -9 of `lab up`; two labs run side by side; a bad topology is
//! refused before anything is built; a default-deny and an allow policy written into the
//! lab's datastore change the reachability matrix exactly; a topology with a GoBGP
//! top-of-rack router converges with every pod reaching every pod, and leaves nothing behind.
//!
//! Each test runs the `tabby` binary (`tabby lab up ...`) as a user would, under a lab name
//! of its own, and reads the running lab through the `tabby-lab` library. A guard runs
//! `tabby lab down` when the test ends, also when it fails.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use anyhow::{bail, Context as _, Result};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tabby_lab::{probe, Lab, Layout};
use tabby_tests::netns::unique_name;
use tabby_tests::skip;
use tabby_tests::tabby::tabby_bin;

/// A lab that is removed (`tabby lab down`) when the guard drops.
struct LabGuard {
    name: String,
}

impl LabGuard {
    fn new(tag: &str) -> LabGuard {
        LabGuard {
            name: unique_name(tag),
        }
    }

    fn layout(&self) -> Layout {
        Layout::new(&self.name)
    }

    fn lab(&self) -> Lab {
        self.layout().read_lab().expect("the lab's state")
    }

    /// Runs `tabby lab <args> --name <name>`.
    fn tabby(&self, args: &[&str]) -> Output {
        Command::new(tabby_bin().unwrap())
            .arg("lab")
            .args(args)
            .args(["--name", &self.name])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `tabby lab up [topology]`; fails with its output unless it exits 0.
    fn up(&self, topology: Option<&Path>) -> Result<String> {
        let mut args = vec!["up", "--timeout", "90"];
        let path;
        if let Some(p) = topology {
            path = p.display().to_string();
            args.push(&path);
        }
        let out = self.tabby(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!(
                "tabby lab up exited with {}:\n{text}{}",
                out.status,
                self.logs()
            );
        }
        Ok(text)
    }

    /// The tail of every process log, for failure messages.
    fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(dir) = std::fs::read_dir(self.layout().dir().join("logs")) {
            for e in dir.filter_map(Result::ok) {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                s.push_str(&format!("\n--- {} ---\n{tail}\n", e.path().display()));
            }
        }
        s
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let out = self.tabby(&["down"]);
        if !out.status.success() {
            eprintln!(
                "tabby lab down --name {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A small topology without external peers: two nodes on one segment, a pod on each.
const SMALL: &str = "\
segments: [{name: lan, subnet: 10.0.0.0/24, subnet6: 'fd00::/64'}]
nodes: [{name: a, segment: lan}, {name: b, segment: lan}]
pods: [{name: p, node: a, labels: {app: p}}, {name: q, node: b, labels: {app: q}}]
";

fn write_topology(dir: &Path, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("topology.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Everything of a lab that could be left behind: its netns, processes whose command line
/// names its directory, links in this (the host's) netns named like its interfaces, and
/// its state directory.
fn leftovers(lab: &Lab, layout: &Layout) -> Vec<String> {
    let mut left = Vec::new();
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for l in String::from_utf8_lossy(&netns.stdout).lines() {
        if l.starts_with(&layout.netns_prefix()) {
            left.push(format!("netns {l}"));
        }
    }
    let dir = layout.dir().display().to_string();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if tabby_lab::sys::alive(pid)
            && tabby_lab::sys::cmdline(pid).is_some_and(|c| c.contains(&dir))
        {
            left.push(format!(
                "process {pid}: {}",
                tabby_lab::sys::cmdline(pid).unwrap_or_default()
            ));
        }
    }
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    for p in &lab.pods {
        if links.contains(&format!(": {}", p.host_if)) {
            left.push(format!("link {} in the host netns", p.host_if));
        }
    }
    if layout.dir().exists() {
        left.push(format!("directory {dir}"));
    }
    left
}

#[test]
fn lab_up_on_the_default_topology_gives_a_full_reachability_matrix() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let lab = LabGuard::new("def");
    let out = lab.up(None)?;
    assert!(out.contains("every pod reaches every pod"), "{out}");
    // Measured again, by the test, from the lab's own description of itself.
    let l = lab.lab();
    assert_eq!(l.nodes().count(), 4);
    assert_eq!(l.pods.len(), 8);
    let m = probe::matrix(&l, &lab.layout(), Instant::now() + Duration::from_secs(10));
    assert!(m.full(), "unreachable: {:?}\n{}", m.failures, m.render());
    let probes = m.cells.iter().flatten().filter(|c| c.v4.is_some()).count()
        + m.cells.iter().flatten().filter(|c| c.v6.is_some()).count();
    assert_eq!(probes, 8 * 8 * 2, "every pair, IPv4 and IPv6");
    Ok(())
}

#[test]
fn lab_down_leaves_no_netns_links_processes_or_files() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let lab = LabGuard::new("down");
    let dir = std::env::temp_dir().join(&lab.name);
    let topo = write_topology(&dir, SMALL);
    lab.up(Some(&topo))?;
    let (l, layout) = (lab.lab(), lab.layout());
    assert!(
        !leftovers(&l, &layout).is_empty(),
        "the lab should exist before down"
    );
    let out = lab.tabby(&["down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = leftovers(&l, &layout);
    std::fs::remove_dir_all(&dir)?;
    assert!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}

#[test]
fn lab_down_cleans_up_after_lab_up_is_killed() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let lab = LabGuard::new("kill");
    let mut up = Command::new(tabby_bin()?)
        .args(["lab", "up", "--name", &lab.name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Kill it once its processes are running, in the middle of waiting for convergence.
    let layout = lab.layout();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tabby_lab::build::running_pid(&layout, "node4").is_none() {
        if Instant::now() > deadline {
            let _ = up.kill();
            bail!("lab up never started node4");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    up.kill()?;
    up.wait()?;
    let l = lab.lab();
    let out = lab.tabby(&["down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = leftovers(&l, &layout);
    assert!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}

#[test]
fn two_labs_with_different_names_run_side_by_side() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let (one, two) = (LabGuard::new("one"), LabGuard::new("two"));
    let dir = std::env::temp_dir().join(&one.name);
    let topo = write_topology(&dir, SMALL);
    // The same topology, so the same addresses and interface names, twice.
    let result = one.up(Some(&topo)).and_then(|_| two.up(Some(&topo)));
    std::fs::remove_dir_all(&dir)?;
    result?;
    for lab in [&one, &two] {
        let m = probe::matrix(
            &lab.lab(),
            &lab.layout(),
            Instant::now() + Duration::from_secs(10),
        );
        assert!(m.full(), "{}: {:?}", lab.name, m.failures);
    }
    Ok(())
}

#[test]
fn lab_exec_runs_the_command_inside_the_pod() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let lab = LabGuard::new("exec");
    let dir = std::env::temp_dir().join(&lab.name);
    let topo = write_topology(&dir, SMALL);
    let result = lab.up(Some(&topo));
    std::fs::remove_dir_all(&dir)?;
    result?;
    let pod = lab.lab().pods[0].clone();
    let out = Command::new(tabby_bin()?)
        .args([
            "lab",
            "exec",
            "--name",
            &lab.name,
            "default/p",
            "--",
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{}/32", pod.v4.unwrap())), "{text}");
    Ok(())
}

#[test]
fn an_invalid_topology_is_refused_before_anything_is_created() -> Result<()> {
    let lab = LabGuard::new("bad");
    let dir = std::env::temp_dir().join(&lab.name);
    let topo = write_topology(
        &dir,
        "segments: [{name: lan, subnet: 10.0.0.0/24}]\nnodes: [{name: a, segment: nowhere}]\n",
    );
    let out = lab.tabby(&["up", &topo.display().to_string()]);
    std::fs::remove_dir_all(&dir)?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("nodes[0] (a).segment") && err.contains("\"nowhere\""),
        "{err}"
    );
    assert!(!lab.layout().dir().exists());
    Ok(())
}

/// The pods of the default topology by name.
fn pod<'a>(lab: &'a Lab, name: &str) -> &'a tabby_lab::topology::Pod {
    lab.pods.iter().find(|p| p.name == name).unwrap()
}

#[test]
fn a_default_deny_and_an_allow_policy_change_the_matrix_exactly() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let lab = LabGuard::new("pol");
    lab.up(None)?;
    let (l, layout) = (lab.lab(), lab.layout());
    // Default deny for every pod, then web pods accept traffic from client pods only.
    std::fs::write(
        layout.datastore().join("policy.yaml"),
        "apiVersion: crd.projectcalico.org/v1
kind: GlobalNetworkPolicy
metadata: {name: default-deny}
spec: {selector: all(), types: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-clients, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]
",
    )?;
    let want = |from: &str, to: &str| from.starts_with("client") && to.starts_with("web");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = probe::matrix(&l, &layout, Instant::now());
        let wrong: Vec<String> = l
            .pods
            .iter()
            .flat_map(|f| l.pods.iter().map(move |t| (f, t)))
            .filter(|(f, t)| f.name != t.name)
            .filter(|(f, t)| m.reaches(&f.name, &t.name, false) != Some(want(&f.name, &t.name)))
            .map(|(f, t)| format!("{} -> {}", f.name, t.name))
            .collect();
        if wrong.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the matrix is not the policy's: wrong pairs {wrong:?}\n{}",
                m.render()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Pings `to` from the pod every 50 ms while `during` runs, then a second more; the
/// number of probes sent and lost.
fn pings_lost_during(
    layout: &Layout,
    from: &tabby_lab::topology::Pod,
    to: IpAddr,
    during: impl FnOnce() -> Result<()>,
) -> Result<(u32, u32)> {
    let mut ping = tabby_lab::sys::command_in(&layout.pod_netns(from), "ping");
    ping.args(["-n", "-q", "-i", "0.05", "-W", "1", &to.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let child = ping.spawn()?;
    let pid = child.id();
    let result = during();
    std::thread::sleep(Duration::from_secs(1));
    tabby_lab::sys::signal(pid, "INT");
    let out = child.wait_with_output()?;
    result?;
    // "N packets transmitted, M received"
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("transmitted"))
        .context("no ping summary")?;
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (sent, received) = (nums[0], nums[1]);
    Ok((sent, sent - received))
}

#[test]
fn restarting_one_node_agent_loses_no_pings_between_racks() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let lab = LabGuard::new("rst");
    lab.up(None)?;
    let (l, layout) = (lab.lab(), lab.layout());
    let (from, to) = (pod(&l, "web-1"), pod(&l, "web-3"));
    let (sent, lost) = pings_lost_during(&layout, from, IpAddr::V4(to.v4.unwrap()), || {
        let out = lab.tabby(&["restart", "node3"]);
        if !out.status.success() {
            bail!("restart failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // Until the restarted agent has its sessions again.
        let run = tabby_lab::RunOptions {
            tabby: tabby_bin()?,
            log_level: "info".into(),
        };
        let report = tabby_lab::converge(&l, &layout, &run, Duration::from_secs(60), &|_| {})?;
        report.check(Duration::from_secs(60)).map_err(Into::into)
    })?;
    assert!(sent > 20, "only {sent} pings sent");
    assert_eq!(lost, 0, "{lost} of {sent} pings lost across the restart");
    Ok(())
}

#[test]
fn stopping_the_route_reflector_keeps_routes_and_its_return_restores_everything() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let lab = LabGuard::new("rr");
    lab.up(None)?;
    let (l, layout) = (lab.lab(), lab.layout());
    assert!(l.uses_reflectors(), "the default topology has a reflector");
    let (from, to) = (pod(&l, "web-1"), pod(&l, "web-4"));
    let (sent, lost) = pings_lost_during(&layout, from, IpAddr::V4(to.v4.unwrap()), || {
        assert!(tabby_lab::build::stop(&layout, "rr1"), "rr1 was running");
        // Longer than the hold time: the sessions to the reflector are down by then.
        std::thread::sleep(Duration::from_secs(
            u64::from(tabby_lab::bird::HOLD_TIME) * 2,
        ));
        Ok(())
    })?;
    assert_eq!(
        lost, 0,
        "{lost} of {sent} pings lost while the reflector was away"
    );
    let run = tabby_lab::RunOptions {
        tabby: tabby_bin()?,
        log_level: "info".into(),
    };
    tabby_lab::build::start(&l, &layout, l.host("rr1").unwrap(), &run)?;
    let report = tabby_lab::converge(&l, &layout, &run, Duration::from_secs(60), &|_| {})?;
    report.check(Duration::from_secs(60))?;
    Ok(())
}

/// Two racks, rack1 behind a GoBGP top-of-rack router and rack2 behind a BIRD one, and a
/// standalone reflector on core (the example of docs/lab.md).
const GOBGP: &str = "\
segments:
  - {name: core, subnet: 10.0.0.0/24, subnet6: 'fd00::/64'}
  - {name: rack1, subnet: 10.0.1.0/24, subnet6: 'fd00:1::/64'}
  - {name: rack2, subnet: 10.0.2.0/24, subnet6: 'fd00:2::/64'}
nodes:
  - {name: node1, segment: rack1}
  - {name: node2, segment: rack1}
  - {name: node3, segment: rack2}
  - {name: node4, segment: rack2}
reflectors:
  - {name: rr1, segment: core}
peers:
  - {name: tor1, kind: gobgp, asNumber: 65001, segments: [rack1, core]}
  - {name: tor2, kind: bird, asNumber: 65002, segments: [rack2, core]}
pods:
  - {name: web-1, node: node1}
  - {name: web-2, node: node2}
  - {name: web-3, node: node3}
  - {name: web-4, node: node4}
";

/// `tabby lab up` of the GoBGP topology, from a file of its own.
fn up_gobgp(lab: &LabGuard) -> Result<String> {
    let dir = std::env::temp_dir().join(&lab.name);
    let topo = write_topology(&dir, GOBGP);
    let result = lab.up(Some(&topo));
    std::fs::remove_dir_all(&dir)?;
    result
}

#[test]
fn a_gobgp_top_of_rack_router_converges_with_full_reachability() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let lab = LabGuard::new("gobgp");
    let out = up_gobgp(&lab)?;
    assert!(
        out.contains("external peer (GoBGP, AS 65001) tor1"),
        "{out}"
    );
    assert!(out.contains("every pod reaches every pod"), "{out}");
    let (l, layout) = (lab.lab(), lab.layout());
    let run = tabby_lab::RunOptions {
        tabby: tabby_bin()?,
        log_level: "info".into(),
    };
    let tor1 = probe::host_status(&l, &layout, &run, l.host("tor1").unwrap());
    assert_eq!(tor1.role, "gobgp");
    // Its two nodes and tor2, over IPv4 and IPv6; GoBGP's RIB holds every prefix the lab
    // routes for it (the node blocks of both racks and rack2's subnets).
    assert_eq!(tor1.established(), 6, "{tor1:?}");
    assert!(tor1.problem().is_none(), "{tor1:?}");
    assert_eq!(tor1.routes, Some(10), "{tor1:?}");
    let m = probe::matrix(&l, &layout, Instant::now() + Duration::from_secs(10));
    assert!(m.full(), "unreachable: {:?}\n{}", m.failures, m.render());
    let probes = m.cells.iter().flatten().filter(|c| c.v4.is_some()).count()
        + m.cells.iter().flatten().filter(|c| c.v6.is_some()).count();
    assert_eq!(probes, 4 * 4 * 2, "every pair, IPv4 and IPv6");
    Ok(())
}

#[test]
fn lab_down_leaves_nothing_of_a_gobgp_top_of_rack_router() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let lab = LabGuard::new("gbdn");
    up_gobgp(&lab)?;
    let (l, layout) = (lab.lab(), lab.layout());
    assert!(
        tabby_lab::build::running_pid(&layout, "tor1").is_some(),
        "gobgpd runs before down"
    );
    let out = lab.tabby(&["down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = leftovers(&l, &layout);
    assert!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}
