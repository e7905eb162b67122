//! The compiler's incremental bookkeeping gives what compiling the final state from scratch
//! gives, whatever the order of pod, namespace and policy changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;
use tabby_acl::{Compiler, Endpoint, EndpointKind, Policy, Settings};

const NAMESPACES: [&str; 2] = ["x", "y"];
const VALUES: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    /// Pod `n` in namespace `ns` with `app` and maybe `role`, local or not.
    Pod(u8, usize, usize, Option<usize>, bool),
    RemovePod(u8),
    Namespace(usize, usize),
    Policy(usize),
    RemovePolicy(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u8..6,
            0..2usize,
            0..3usize,
            proptest::option::of(0..3usize),
            any::<bool>()
        )
            .prop_map(|(n, ns, app, role, local)| Op::Pod(n, ns, app, role, local)),
        (0u8..6).prop_map(Op::RemovePod),
        (0..2usize, 0..3usize).prop_map(|(ns, v)| Op::Namespace(ns, v)),
        (0..4usize).prop_map(Op::Policy),
        (0..4usize).prop_map(Op::RemovePolicy),
    ]
}

fn pod(n: u8, ns: usize, app: usize, role: Option<usize>, local: bool) -> Endpoint {
    let mut labels = BTreeMap::from([("app".to_owned(), VALUES[app].to_owned())]);
    if let Some(r) = role {
        labels.insert("role".into(), VALUES[r].into());
    }
    Endpoint {
        kind: EndpointKind::Workload,
        namespace: Some(NAMESPACES[ns].into()),
        name: format!("p{n}"),
        iface: local.then(|| format!("cali{n}")),
        addrs: vec![format!("10.0.0.{n}").parse().unwrap()],
        labels,
        ports: vec![tabby_acl::NamedPort {
            name: "http".into(),
            protocol: 6,
            port: 8000 + u16::from(n),
        }],
    }
}

/// A small pool of policies using every kind of set: selectors, namespace selectors,
/// named ports and nets.
fn policy(i: usize) -> Policy {
    let v = match i {
        0 => json!({"metadata": {"name": "p0", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "b"}}}]}]}}),
        1 => json!({"metadata": {"name": "p1", "namespace": "y"},
            "spec": {"podSelector": {}, "ingress": [{"from": [
                {"namespaceSelector": {"matchLabels": {"env": "c"}}}],
                "ports": [{"port": "http"}]}]}}),
        2 => json!({"metadata": {"name": "p2", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"role": "a"}}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "c"}}},
                                        {"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.3/32"]}}]}]}}),
        _ => json!({"metadata": {"name": "p3", "namespace": "y"},
            "spec": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]},
                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "a"}}}]}]}}),
    };
    Policy::from_k8s(&serde_json::from_value(v).unwrap()).unwrap()
}

proptest! {
    #[test]
    fn incremental_compilation_equals_compiling_the_final_state(ops in proptest::collection::vec(op(), 1..40)) {
        let mut c = Compiler::new(Settings::default());
        let mut pods: BTreeMap<u8, Endpoint> = BTreeMap::new();
        let mut namespaces: BTreeMap<usize, usize> = BTreeMap::new();
        let mut policies: BTreeMap<usize, Policy> = BTreeMap::new();
        let ns_labels = |v: usize| BTreeMap::from([("env".to_owned(), VALUES[v].to_owned())]);
        for op in ops {
            match op {
                Op::Pod(n, ns, app, role, local) => {
                    let p = pod(n, ns, app, role, local);
                    // A pod keeps its namespace; a "move" is a delete and an add.
                    if let Some(old) = pods.get(&n) {
                        c.remove_endpoint(&old.key());
                    }
                    c.upsert_endpoint(p.clone());
                    pods.insert(n, p);
                }
                Op::RemovePod(n) => {
                    if let Some(old) = pods.remove(&n) {
                        c.remove_endpoint(&old.key());
                    }
                }
                Op::Namespace(ns, v) => {
                    c.upsert_namespace(NAMESPACES[ns], ns_labels(v));
                    namespaces.insert(ns, v);
                }
                Op::Policy(i) => {
                    c.upsert_policy(policy(i));
                    policies.insert(i, policy(i));
                }
                Op::RemovePolicy(i) => {
                    c.remove_policy(&policy(i).name);
                    policies.remove(&i);
                }
            }
            // Interleave reads, as an agent applies between batches.
            let _ = c.ruleset();
        }
        let mut fresh = Compiler::new(Settings::default());
        for (i, p) in &policies {
            let _ = i;
            fresh.upsert_policy(p.clone());
        }
        for (ns, v) in &namespaces {
            fresh.upsert_namespace(NAMESPACES[*ns], ns_labels(*v));
        }
        for p in pods.values() {
            fresh.upsert_endpoint(p.clone());
        }
        prop_assert_eq!(c.ruleset(), fresh.ruleset());
    }
}
