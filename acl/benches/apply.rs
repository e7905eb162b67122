//! Policy programming cost (issue 6's shape): a cluster of 10,000 pods in 100 namespaces and
//! 1,000 Kubernetes NetworkPolicies, 200 of the pods local to this node.
//!
//! - `compile/*`: the pure work: the compiler's ruleset, nft rendering and the diff, for a
//!   first apply and for one pod label change.
//! - `nft/*` (root only, in a network namespace the bench creates and deletes): a first full
//!   apply into an empty table, one incremental apply after a label change, and, for the
//!   ratio, regenerating and loading the whole ruleset after that same change.
//!
//! `cargo bench -p tabby-acl --bench apply -- --warm-up-time 1 --measurement-time 5`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use tabby_acl::iptables::IptablesApplier;
use tabby_acl::nft::{self, NftApplier};
use tabby_acl::{Compiler, Dataplane, Endpoint, EndpointKind, Exec, Policy, Settings};

const PODS: u32 = 10_000;
const NAMESPACES: u32 = 100;
const POLICIES: u32 = 1_000;
const LOCAL: u32 = 200;

fn pod(i: u32, extra: Option<(&str, &str)>) -> Endpoint {
    let mut labels = BTreeMap::from([
        ("app".to_owned(), format!("app-{}", i % 50)),
        ("tier".to_owned(), format!("tier-{}", i % 7)),
    ]);
    if let Some((k, v)) = extra {
        labels.insert(k.into(), v.into());
    }
    Endpoint {
        kind: EndpointKind::Workload,
        namespace: Some(format!("ns-{}", i % NAMESPACES)),
        name: format!("pod-{i}"),
        // The first 200 pods are local: two per namespace, every policy applies to some.
        iface: (i < LOCAL).then(|| format!("cali{i:011x}")),
        addrs: vec![IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))],
        labels,
        ports: vec![],
    }
}

fn policy(i: u32) -> Policy {
    let np = serde_json::from_value(json!({
        "metadata": {"name": format!("p-{i}"), "namespace": format!("ns-{}", i % NAMESPACES)},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("app-{}", i % 50)}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"tier": format!("tier-{}", i % 7)}}},
                          {"namespaceSelector": {"matchLabels": {"team": format!("t-{}", i % 10)}}}],
                 "ports": [{"port": 80}, {"port": 8000 + (i % 100) as i32, "endPort": 8100}]},
                {"from": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": [format!("192.168.{}.0/24", i % 256)]}}]}
            ]
        }
    }))
    .unwrap();
    Policy::from_k8s(&np).unwrap()
}

fn cluster() -> Compiler {
    let mut c = Compiler::new(Settings::default());
    for n in 0..NAMESPACES {
        c.upsert_namespace(
            &format!("ns-{n}"),
            BTreeMap::from([("team".to_owned(), format!("t-{}", n % 10))]),
        );
    }
    for i in 0..PODS {
        c.upsert_endpoint(pod(i, None));
    }
    for i in 0..POLICIES {
        c.upsert_policy(policy(i));
    }
    c
}

/// A remote pod's label change that moves it into one more selector set.
fn toggle(c: &mut Compiler, on: bool) {
    c.upsert_endpoint(pod(5007, on.then_some(("tier", "tier-3"))));
}

fn compile(cr: &mut Criterion) {
    let mut c = cluster();
    let mut g = cr.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("first apply: ruleset + render + diff", |b| {
        b.iter(|| nft::diff(&nft::NftState::default(), &nft::render(&c.ruleset())).len())
    });
    let mut on = false;
    let mut cache = nft::RenderCache::new();
    let mut before = nft::render_cached(&c.ruleset(), &mut cache);
    g.bench_function("label change: update + ruleset + render + diff", |b| {
        b.iter(|| {
            on = !on;
            toggle(&mut c, on);
            let after = nft::render_cached(&c.ruleset(), &mut cache);
            let n = nft::diff(&before, &after).len();
            before = after;
            n
        })
    });
    g.finish();
}

/// A network namespace for the kernel benches, deleted on drop.
struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

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
    let mut on = false;
    g.bench_function("incremental apply after a label change", |b| {
        b.iter(|| {
            on = !on;
            toggle(&mut c, on);
            applier.apply(&c.ruleset()).unwrap()
        })
    });
    g.bench_function("full reload after a label change (baseline)", |b| {
        b.iter(|| {
            on = !on;
            toggle(&mut c, on);
            // Regenerate everything and load it as one transaction that replaces the table.
            let script = nft::diff(&nft::NftState::default(), &nft::render(&c.ruleset()));
            let mut text = String::from("add table inet tabby\ndelete table inet tabby\n");
            for l in script {
                text.push_str(&l);
                text.push('\n');
            }
            exec.run("nft", &["-f", "-"], &text).unwrap()
        })
    });
    g.finish();

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
    g.bench_function("incremental apply after a label change", |b| {
        b.iter(|| {
            on = !on;
            toggle(&mut c, on);
            applier.apply(&c.ruleset()).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, compile, kernel);
criterion_main!(benches);
