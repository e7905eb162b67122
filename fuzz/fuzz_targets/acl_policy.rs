//! A policy object from the datastore, as JSON: the first octet picks the kind (Kubernetes
//! NetworkPolicy, Calico NetworkPolicy, GlobalNetworkPolicy), the rest is decoded with serde
//! and translated into the policy model. Any input must give a policy or an error, never a
//! panic; a policy that translates must compile against a few pods and render for both
//! backends, and its verdicts must be computable.
#![no_main]

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1 as k8s;
use libfuzzer_sys::fuzz_target;
use tabby_acl::model::proto;
use tabby_acl::{
    iptables, nft, Compiler, Direction, Endpoint, EndpointKind, NamedPort, Packet, Policy,
    Settings,
};
use tabby_datastore::calico;

fn pod(ns: &str, name: &str, addr: &str, local: bool) -> Endpoint {
    Endpoint {
        kind: EndpointKind::Workload,
        namespace: Some(ns.into()),
        name: name.into(),
        iface: local.then(|| format!("cali{name}")),
        addrs: addr.split(',').filter_map(|a| a.parse().ok()).collect(),
        labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
        ports: vec![NamedPort {
            name: "http".into(),
            protocol: proto::TCP,
            port: 80,
        }],
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, json)) = data.split_first() else {
        return;
    };
    let policy = match kind % 3 {
        0 => serde_json::from_slice::<k8s::NetworkPolicy>(json)
            .ok()
            .map(|p| Policy::from_k8s(&p)),
        1 => serde_json::from_slice::<calico::NetworkPolicy>(json)
            .ok()
            .map(|p| Policy::from_calico(&p)),
        _ => serde_json::from_slice::<calico::GlobalNetworkPolicy>(json)
            .ok()
            .map(|p| Policy::from_calico_global(&p)),
    };
    let Some(Ok(policy)) = policy else {
        return;
    };
    let mut c = Compiler::new(Settings::default());
    c.upsert_namespace("default", BTreeMap::from([("team".into(), "a".into())]));
    c.upsert_namespace("x", BTreeMap::new());
    c.upsert_endpoint(pod("default", "a", "10.0.0.1,fd00::1", true));
    c.upsert_endpoint(pod("x", "b", "10.0.0.2", true));
    c.upsert_endpoint(pod("x", "c", "10.0.1.3", false));
    c.upsert_policy(policy.clone());
    let rs = c.ruleset();
    let _ = nft::diff(&nft::NftState::default(), &nft::render(&rs));
    let _ = iptables::render(&rs);
    let a = IpAddr::from([10, 0, 0, 1]);
    let b = IpAddr::from([10, 0, 0, 2]);
    for pkt in [Packet::tcp(b, a, 80), Packet::udp(a, b, 53), Packet::ping(a, b)] {
        for dir in [Direction::Ingress, Direction::Egress] {
            let _ = rs.verdict("calia", dir, &pkt);
            let _ = rs.verdict("calib", dir, &pkt);
        }
    }
    // Removing the policy leaves the compiler as it was without it.
    c.remove_policy(&policy.name);
    assert!(c.ruleset().policy_chains.is_empty(), "{policy:?}");
});
