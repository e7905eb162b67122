//! `tabby bench reflector` end to end, small: 20 clients against tabby's reflector and
//! BIRD's, every client ends up with every block announced, with the right next hops, and the
//! figures are reported. Timings and ratios are never asserted (shared, noisy machines);
//! docs/benchmarks.md has figures.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::process::{Command, Stdio};
use tabby_tests::skip;
use tabby_tests::tabby::tabby_bin;

const CLIENTS: u64 = 20;

/// Runs `tabby bench reflector --json` with `extra` flags: its pid and JSON lines.
fn bench(extra: &[&str]) -> Result<(u32, Vec<Value>)> {
    let child = Command::new(tabby_bin()?)
        .args([
            "bench",
            "reflector",
            "--clients",
            &CLIENTS.to_string(),
            "--timeout",
            "120",
            "--json",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "tabby bench reflector failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("a line that is not JSON")?;
    Ok((pid, lines))
}

/// Every client holds every block, with the right next hops, and the figures are there.
fn assert_converged(r: &Value) {
    let name = r["contender"].as_str().unwrap();
    assert_eq!(r["converged"], true, "{name}: {r:#}");
    assert_eq!(r["clients_converged"].as_u64(), Some(CLIENTS), "{name}");
    assert_eq!(
        r["sessions_established"].as_u64(),
        Some(2 * CLIENTS),
        "{name}"
    );
    // Each client holds its two blocks and the two of every other client.
    assert_eq!(r["min_prefixes_held"].as_u64(), Some(2 * CLIENTS), "{name}");
    // Every checked route came from its owner, with the owner's address as next hop.
    assert!(r["routes_checked"].as_u64().unwrap() > 0, "{name}");
    assert_eq!(r["routes_wrong"].as_u64(), Some(0), "{name}: {r:#}");
    assert!(r["converge_s"].as_f64().unwrap() >= 0.0, "{name}: {r:#}");
    assert!(r["reflector_peak_rss_kib"].as_u64().unwrap() > 0, "{name}");
    assert!(r["reflector_cpu_s"].as_f64().is_some(), "{name}");
}

#[test]
fn light_clients_converge_through_tabbys_reflector() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let (_, lines) = bench(&["--light", "--contenders", "tabby"])?;
    let (_, runs) = lines.split_last().context("no output")?;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["light_clients"], true);
    assert_converged(&runs[0]);
    Ok(())
}

#[test]
fn small_reflector_bench_converges_with_both_reflectors_and_reports_figures() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let (pid, lines) = bench(&[])?;
    let (summary, runs) = lines.split_last().context("no output")?;
    let contenders: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["contender"].as_str())
        .collect();
    assert_eq!(contenders, ["tabby", "bird"]);

    for r in runs {
        assert_converged(r);
    }
    assert_eq!(summary["summary"], true);
    let ratios = &summary["ratio_tabby_to_bird"];
    assert!(
        ratios["reflector_peak_rss_kib"].as_f64().is_some(),
        "{summary:#}"
    );
    assert!(ratios["converged_at_s"].as_f64().is_some(), "{summary:#}");

    // Its namespaces (named after its pid) and scratch directories are gone.
    let list = Command::new("ip").args(["netns", "list"]).output()?;
    let prefix = format!("tabby-bench-{pid}-");
    let listed = String::from_utf8_lossy(&list.stdout);
    let left: Vec<&str> = listed.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let scratch = format!("tabby-bench-reflector-{pid}-");
    let dirs: Vec<String> = std::fs::read_dir(std::env::temp_dir())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&scratch))
        .collect();
    assert!(dirs.is_empty(), "scratch directories left behind: {dirs:?}");
    Ok(())
}
