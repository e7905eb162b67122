//! The cluster of issue 6's benchmarks, shared by the benches: 10,000 pods in 100 namespaces
//! and 1,000 Kubernetes NetworkPolicies (two peers, two port groups and an ipBlock with
//! except each), 200 of the pods local to this node; every policy applies to some local pod.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;
use tabby_acl::{Compiler, Endpoint, EndpointKind, Policy, Settings};

pub const PODS: u32 = 10_000;
pub const NAMESPACES: u32 = 100;
pub const POLICIES: u32 = 1_000;
pub const LOCAL: u32 = 200;

/// Pod `i`: namespace `ns-<i % 100>`, labels `app-<i % 50>` and `tier-<i % 7>`, address
/// 10.0.0.0 + i; the first 200 are local.
pub fn pod(i: u32, extra: Option<(&str, &str)>) -> Endpoint {
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

/// Policy `i`, whose first port is `port` (80; a policy edit changes it).
pub fn policy_with_port(i: u32, port: u16) -> Policy {
    let np = serde_json::from_value(json!({
        "metadata": {"name": format!("p-{i}"), "namespace": format!("ns-{}", i % NAMESPACES)},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("app-{}", i % 50)}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"tier": format!("tier-{}", i % 7)}}},
                          {"namespaceSelector": {"matchLabels": {"team": format!("t-{}", i % 10)}}}],
                 "ports": [{"port": port}, {"port": 8000 + (i % 100) as i32, "endPort": 8100}]},
                {"from": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": [format!("192.168.{}.0/24", i % 256)]}}]}
            ]
        }
    }))
    .unwrap();
    Policy::from_k8s(&np).unwrap()
}

pub fn policy(i: u32) -> Policy {
    policy_with_port(i, 80)
}

/// The namespaces, the pods (minus those `skip` says to leave out) and the policies.
pub fn cluster_without(skip: impl Fn(u32) -> bool) -> Compiler {
    let mut c = Compiler::new(Settings::default());
    for n in 0..NAMESPACES {
        c.upsert_namespace(
            &format!("ns-{n}"),
            BTreeMap::from([("team".to_owned(), format!("t-{}", n % 10))]),
        );
    }
    for i in (0..PODS).filter(|i| !skip(*i)) {
        c.upsert_endpoint(pod(i, None));
    }
    for i in 0..POLICIES {
        c.upsert_policy(policy(i));
    }
    c
}

pub fn cluster() -> Compiler {
    cluster_without(|_| false)
}

/// A remote pod's label change that moves it into one more selector set.
pub fn toggle(c: &mut Compiler, on: bool) {
    c.upsert_endpoint(pod(5007, on.then_some(("tier", "tier-3"))));
}

/// A policy edit: policy 17's first port goes from 80 to 8080 and back.
pub fn edit(c: &mut Compiler, on: bool) {
    c.upsert_policy(policy_with_port(17, if on { 8080 } else { 80 }));
}
