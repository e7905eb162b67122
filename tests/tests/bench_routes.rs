//! `tabby bench routes` end to end, small: every scenario runs for both contenders, the
//! routes asked for are the routes found in the kernel, and every time is positive. Timings
//! and ratios are never asserted (shared, noisy machines); docs/benchmarks.md has figures.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::process::{Command, Stdio};
use tabby_tests::skip;
use tabby_tests::tabby::tabby_bin;

fn num(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {path:?} in {v:#}"))
}

#[test]
fn small_bench_programs_every_route_for_both_contenders_and_reports_times() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let child = Command::new(tabby_bin()?)
        .args([
            "bench",
            "routes",
            "--pods",
            "200",
            "--learned",
            "1000",
            "--idle-routes",
            "500",
            "--idle-seconds",
            "1",
            "--runs",
            "1",
            "--addrs-per-iface",
            "50",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "tabby bench routes failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).context("not JSON")?;
    let scenarios = doc["scenarios"].as_array().context("no scenarios")?;
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["scenario"].as_str())
        .collect();
    assert_eq!(names, ["pods", "learned", "idle"]);

    for (s, want) in scenarios.iter().zip([200.0, 1000.0, 500.0]) {
        let name = s["scenario"].as_str().unwrap();
        assert_eq!(num(s, &["routes"]), want, "{name}");
        // What tabby says it programmed, and what the kernel holds, for both contenders.
        assert_eq!(num(s, &["tabby", "programmed"]), want, "{name}: {s:#}");
        assert_eq!(num(s, &["tabby", "kernel_routes"]), want, "{name}: {s:#}");
        assert_eq!(num(s, &["ip", "kernel_routes"]), want, "{name}: {s:#}");
        assert_eq!(num(s, &["tabby", "change_failures"]), 0.0, "{name}: {s:#}");
        assert!(num(s, &["tabby", "program_s"]) > 0.0, "{name}: {s:#}");
        assert!(num(s, &["tabby", "process_s"]) > 0.0, "{name}: {s:#}");
        assert!(num(s, &["ip", "wall_s"]) > 0.0, "{name}: {s:#}");
    }
    let idle = &scenarios[2];
    assert!(num(idle, &["tabby", "idle_s"]) >= 1.0, "{idle:#}");
    assert!(num(idle, &["tabby", "idle_cpu_s"]) >= 0.0, "{idle:#}");
    assert!(num(idle, &["ip", "dump_wall_s"]) > 0.0, "{idle:#}");

    // Its namespaces (named after its pid) are gone.
    let list = Command::new("ip").args(["netns", "list"]).output()?;
    let prefix = format!("tabby-bench-{pid}-");
    let listed = String::from_utf8_lossy(&list.stdout);
    let left: Vec<&str> = listed.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    Ok(())
}
