//! Policy programming cost (issue 6's shape): a cluster of 10,000 pods in 100 namespaces and
//! 1,000 Kubernetes NetworkPolicies, 200 of the pods local to this node (see `common/`).
//!
//! - `compile/*`: the pure work: the compiler's ruleset, nft rendering and the diff, for a
//!   first apply, one pod label change and one policy edit.
//! - `nft/*` and `iptables/*` (root only, in a network namespace the bench creates and
//!   deletes): a first full apply into an empty table, one incremental apply after a pod
//!   label change and after a policy edit, and, for the ratio, regenerating and loading the
//!   whole ruleset after that same change, in the same run.
//!
//! `cargo bench -p tabby-acl --bench apply -- --warm-up-time 1 --measurement-time 5`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cluster, edit, toggle};
use criterion::{criterion_group, criterion_main, Criterion};
use tabby_acl::iptables::{self, IptState, IptablesApplier};
use tabby_acl::nft::{self, NftApplier};
use tabby_acl::{Compiler, Dataplane, Exec, Ruleset};

fn compile(cr: &mut Criterion) {
    let mut c = cluster();
    let mut g = cr.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("first apply: ruleset + render + diff", |b| {
        b.iter(|| nft::diff(&nft::NftState::default(), &nft::render(&c.ruleset())).len())
    });
    let mut cache = nft::RenderCache::new();
    let mut before = nft::render_cached(&c.ruleset(), &mut cache);
    for (what, change) in [
        ("label change", toggle as fn(&mut Compiler, bool)),
        ("policy edit", edit),
    ] {
        let mut on = false;
        g.bench_function(format!("{what}: update + ruleset + render + diff"), |b| {
            b.iter(|| {
                on = !on;
                change(&mut c, on);
                let after = nft::render_cached(&c.ruleset(), &mut cache);
                let n = nft::diff(&before, &after).len();
                before = after;
                n
            })
        });
        // Back to the starting point for the next change.
        change(&mut c, false);
        before = nft::render_cached(&c.ruleset(), &mut cache);
    }
    g.finish();
}

/// A network namespace for the kernel benches, deleted on drop.
struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The baseline of nftables: regenerate everything and load it as one transaction that
/// replaces the table.
fn nft_full_reload(exec: &Exec, rs: &Ruleset) {
    let script = nft::diff(&nft::NftState::default(), &nft::render(rs));
    let mut text = String::from("add table inet tabby\ndelete table inet tabby\n");
    for l in script {
        text.push_str(&l);
        text.push('\n');
    }
    exec.run("nft", &["-f", "-"], &text).unwrap();
}

/// The baseline of iptables: regenerate everything and load it: every set created (or
/// kept) and filled, every chain of both families declared (so flushed) and refilled.
fn iptables_full_reload(exec: &Exec, rs: &Ruleset) {
    let new = iptables::render(rs);
    let (sets, _) = iptables::ipset_scripts(&IptState::default(), &new);
    exec.run("ipset", &["restore"], &sets).unwrap();
    let hooks: BTreeSet<String> = ["FORWARD", "INPUT", "OUTPUT"].map(String::from).into();
    for (tool, chains) in [
        ("iptables-restore", &new.v4),
        ("ip6tables-restore", &new.v6),
    ] {
        let script = iptables::restore_script(&Default::default(), chains, &hooks);
        exec.run(tool, &["--noflush"], &script).unwrap();
    }
}

type Change = fn(&mut Compiler, bool);
const CHANGES: [(&str, Change); 2] = [("a label change", toggle), ("a policy edit", edit)];

fn kernel(cr: &mut Criterion) {
    let name = format!("tb-bench-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("nft benches skipped: cannot create a network namespace (needs root)");
        return;
    }
    let _ns = Ns(name.clone());
    let exec = Exec::in_netns(&name);
    let mut c = cluster();
    let mut g = cr.benchmark_group("nft");
    g.sample_size(10);
    let rs = c.ruleset();
    let mut applier = NftApplier::new(exec.clone());
    g.bench_function("first full apply", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                applier.remove().unwrap();
                let t = Instant::now();
                applier.apply(&rs).unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    let stats = applier.apply(&rs).unwrap();
    eprintln!(
        "ruleset: {} chains, {} sets, {} set members",
        stats.chains, stats.sets, stats.members
    );
    for (what, change) in CHANGES {
        change(&mut c, true);
        let stats = applier.apply(&c.ruleset()).unwrap();
        eprintln!("{what}: a transaction of {} lines", stats.lines);
        change(&mut c, false);
        applier.apply(&c.ruleset()).unwrap();
        let mut on = false;
        g.bench_function(format!("incremental apply after {what}"), |b| {
            b.iter(|| {
                on = !on;
                change(&mut c, on);
                applier.apply(&c.ruleset()).unwrap()
            })
        });
        g.bench_function(format!("full reload after {what} (baseline)"), |b| {
            b.iter(|| {
                on = !on;
                change(&mut c, on);
                nft_full_reload(&exec, &c.ruleset())
            })
        });
        change(&mut c, false);
        // The baseline replaced the table behind the applier's back: start it afresh.
        applier = NftApplier::new(exec.clone());
        applier.apply(&c.ruleset()).unwrap();
    }
    g.finish();
    applier.remove().unwrap();

    let mut g = cr.benchmark_group("iptables");
    g.sample_size(10);
    let rs = c.ruleset();
    let mut applier = IptablesApplier::new(exec.clone());
    g.bench_function("first full apply", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                applier.remove().unwrap();
                let t = Instant::now();
                applier.apply(&rs).unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    applier.apply(&rs).unwrap();
    for (what, change) in CHANGES {
        change(&mut c, true);
        let stats = applier.apply(&c.ruleset()).unwrap();
        eprintln!("{what}: a transaction of {} lines", stats.lines);
        change(&mut c, false);
        applier.apply(&c.ruleset()).unwrap();
        let mut on = false;
        g.bench_function(format!("incremental apply after {what}"), |b| {
            b.iter(|| {
                on = !on;
                change(&mut c, on);
                applier.apply(&c.ruleset()).unwrap()
            })
        });
        g.bench_function(format!("full reload after {what} (baseline)"), |b| {
            b.iter(|| {
                on = !on;
                change(&mut c, on);
                iptables_full_reload(&exec, &c.ruleset())
            })
        });
        change(&mut c, false);
        applier = IptablesApplier::new(exec.clone());
        applier.apply(&c.ruleset()).unwrap();
    }
    g.finish();
}

criterion_group!(benches, compile, kernel);
criterion_main!(benches);
