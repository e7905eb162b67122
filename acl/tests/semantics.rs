//! Policy semantics, checked on the IR with its evaluator: no kernel, no root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::json;
use tabby_acl::model::proto;
use tabby_acl::{
    iptables, nft, Compiler, Direction, Endpoint, EndpointKind, NamedPort, Packet, Policy,
    Settings, Verdict,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A pod; local (with interface `cali-<name>`) when `local`.
fn pod(ns: &str, name: &str, addr: &str, l: &[(&str, &str)], local: bool) -> Endpoint {
    Endpoint {
        kind: EndpointKind::Workload,
        namespace: Some(ns.into()),
        name: name.into(),
        iface: local.then(|| format!("cali{name}")),
        addrs: vec![ip(addr)],
        labels: labels(l),
        ports: vec![NamedPort {
            name: "http".into(),
            protocol: proto::TCP,
            port: 8080,
        }],
    }
}

fn knp(v: serde_json::Value) -> Policy {
    let np: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(v).unwrap();
    Policy::from_k8s(&np).unwrap()
}

fn cnp(v: serde_json::Value) -> Policy {
    let np: tabby_datastore::calico::NetworkPolicy = serde_json::from_value(v).unwrap();
    Policy::from_calico(&np).unwrap()
}

fn gnp(v: serde_json::Value) -> Policy {
    let np: tabby_datastore::calico::GlobalNetworkPolicy = serde_json::from_value(v).unwrap();
    Policy::from_calico_global(&np).unwrap()
}

/// Namespaces x (team=x) and y (team=y); local pods x/a (app=a), x/b (app=b), y/c (app=c);
/// a remote pod y/d (app=d).
fn cluster() -> Compiler {
    let mut c = Compiler::new(Settings::default());
    c.upsert_namespace("x", labels(&[("team", "x")]));
    c.upsert_namespace("y", labels(&[("team", "y")]));
    c.upsert_endpoint(pod("x", "a", "10.0.0.1", &[("app", "a")], true));
    c.upsert_endpoint(pod("x", "b", "10.0.0.2", &[("app", "b")], true));
    c.upsert_endpoint(pod("y", "c", "10.0.0.3", &[("app", "c")], true));
    c.upsert_endpoint(pod("y", "d", "10.0.1.4", &[("app", "d")], false));
    c
}

/// Ingress verdict at pod `to` (`calito`) for a packet.
fn ingress(c: &Compiler, to: &str, pkt: Packet) -> Verdict {
    c.ruleset()
        .verdict(&format!("cali{to}"), Direction::Ingress, &pkt)
        .unwrap()
}

fn egress(c: &Compiler, from: &str, pkt: Packet) -> Verdict {
    c.ruleset()
        .verdict(&format!("cali{from}"), Direction::Egress, &pkt)
        .unwrap()
}

fn tcp(src: &str, dst: &str, port: u16) -> Packet {
    Packet::tcp(ip(src), ip(dst), port)
}

fn deny_all_ingress(ns: &str) -> Policy {
    knp(json!({"metadata": {"name": "deny", "namespace": ns}, "spec": {"podSelector": {}}}))
}

#[test]
fn without_policy_everything_is_allowed() {
    let c = cluster();
    assert!(ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)).is_allow());
    assert!(egress(&c, "a", tcp("10.0.0.1", "10.0.0.3", 80)).is_allow());
}

#[test]
fn a_policy_selecting_a_pod_for_ingress_isolates_its_ingress() {
    let mut c = cluster();
    c.upsert_policy(deny_all_ingress("x"));
    assert_eq!(
        ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)),
        Verdict::Deny(None)
    );
}

#[test]
fn an_ingress_policy_leaves_egress_open() {
    let mut c = cluster();
    c.upsert_policy(deny_all_ingress("x"));
    assert!(egress(&c, "a", tcp("10.0.0.1", "10.0.0.3", 80)).is_allow());
}

#[test]
fn a_policy_in_another_namespace_does_not_isolate() {
    let mut c = cluster();
    c.upsert_policy(deny_all_ingress("y"));
    assert!(ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)).is_allow());
}

#[test]
fn policy_types_default_to_egress_too_when_egress_rules_exist() {
    let p = knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]}}));
    assert!(p.ingress.is_some() && p.egress.is_some());
    let mut c = cluster();
    c.upsert_policy(p);
    assert!(egress(&c, "a", tcp("10.0.0.1", "10.0.0.2", 80)).is_allow());
    assert!(!egress(&c, "a", tcp("10.0.0.1", "10.0.0.3", 80)).is_allow());
}

#[test]
fn kubernetes_policies_have_order_1000() {
    let p = deny_all_ingress("x");
    assert_eq!(p.order, Some(1000.0));
    assert_eq!(p.name, "knp.default.x/deny");
}

#[test]
fn a_pod_selector_peer_selects_in_the_policy_namespace_only() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                 "ingress": [{"from": [{"podSelector": {}}]}]}})));
    assert!(ingress(&c, "a", tcp("10.0.0.2", "10.0.0.1", 80)).is_allow());
    assert!(!ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)).is_allow());
}

#[test]
fn a_namespace_selector_peer_selects_every_pod_of_matching_namespaces() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"team": "y"}}}]}]}})));
    assert!(ingress(&c, "a", tcp("10.0.1.4", "10.0.0.1", 80)).is_allow());
    assert!(!ingress(&c, "a", tcp("10.0.0.2", "10.0.0.1", 80)).is_allow());
}

#[test]
fn namespace_and_pod_selector_in_one_peer_must_both_match() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"team": "y"}},
             "podSelector": {"matchLabels": {"app": "c"}}}]}]}})));
    assert!(ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)).is_allow());
    assert!(!ingress(&c, "a", tcp("10.0.1.4", "10.0.0.1", 80)).is_allow());
}

#[test]
fn match_expressions_select_like_match_labels() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["b", "z"]}]}}]}]}})));
    assert!(ingress(&c, "a", tcp("10.0.0.2", "10.0.0.1", 80)).is_allow());
    assert!(!ingress(&c, "b", tcp("10.0.0.1", "10.0.0.2", 80)).is_allow());
}

#[test]
fn an_ip_block_allows_its_cidr_but_not_its_except() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}}]}]}})));
    assert!(ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)).is_allow());
    assert!(!ingress(&c, "a", tcp("10.0.1.4", "10.0.0.1", 80)).is_allow());
}

#[test]
fn a_numeric_port_allows_that_port_only() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}})));
    assert!(ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)).is_allow());
    assert!(!ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 81)).is_allow());
}

#[test]
fn a_port_without_protocol_is_tcp_and_does_not_open_udp() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}})));
    assert!(!ingress(&c, "a", Packet::udp(ip("10.0.0.3"), ip("10.0.0.1"), 80)).is_allow());
}

#[test]
fn an_sctp_port_opens_sctp_only() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}]}})));
    let sctp = Packet::l4(proto::SCTP, ip("10.0.0.3"), ip("10.0.0.1"), 80);
    assert!(ingress(&c, "a", sctp).is_allow());
    assert!(!ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)).is_allow());
}

#[test]
fn end_port_allows_the_whole_range() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 90}]}]}})));
    assert!(ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 85)).is_allow());
    assert!(ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 90)).is_allow());
    assert!(!ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 91)).is_allow());
}

#[test]
fn a_named_port_resolves_to_the_destination_pods_container_port() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}})));
    assert!(ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 8080)).is_allow());
    assert!(!ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)).is_allow());
}

#[test]
fn a_calico_deny_with_a_lower_order_beats_a_kubernetes_allow() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "allow", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{}]}})));
    c.upsert_policy(cnp(json!({"metadata": {"name": "deny-c", "namespace": "x"},
        "spec": {"order": 10, "selector": "all()", "ingress": [
            {"action": "Deny", "source": {"selector": "app == 'c'", "namespaceSelector": "all()"}}]}})));
    assert_eq!(
        ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)),
        Verdict::Deny(Some("default.x/deny-c".into()))
    );
    assert!(ingress(&c, "a", tcp("10.0.0.2", "10.0.0.1", 80)).is_allow());
}

#[test]
fn pass_skips_the_remaining_policies_and_the_namespace_profile_allows() {
    let mut c = cluster();
    c.upsert_policy(gnp(json!({"metadata": {"name": "pass"},
        "spec": {"order": 1, "selector": "all()", "ingress": [{"action": "Pass"}]}})));
    c.upsert_policy(deny_all_ingress("x"));
    assert_eq!(
        ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)),
        Verdict::Allow(None)
    );
}

#[test]
fn a_policy_that_matches_nothing_ends_in_the_end_of_tier_drop() {
    let mut c = cluster();
    c.upsert_policy(cnp(
        json!({"metadata": {"name": "only-b", "namespace": "x"},
        "spec": {"selector": "app == 'a'", "ingress": [
            {"action": "Allow", "source": {"selector": "app == 'b'"}}]}}),
    ));
    assert_eq!(
        ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)),
        Verdict::Deny(None)
    );
}

#[test]
fn not_nets_and_not_selector_exclude_sources() {
    let mut c = cluster();
    c.upsert_policy(gnp(json!({"metadata": {"name": "g"},
        "spec": {"selector": "app == 'a'", "ingress": [
            {"action": "Allow", "source": {"notNets": ["10.0.1.0/24"], "notSelector": "app == 'b'"}}]}})));
    assert!(ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)).is_allow());
    assert!(!ingress(&c, "a", tcp("10.0.0.2", "10.0.0.1", 80)).is_allow());
    assert!(!ingress(&c, "a", tcp("10.0.1.4", "10.0.0.1", 80)).is_allow());
}

#[test]
fn icmp_type_matches_only_that_type() {
    let mut c = cluster();
    c.upsert_policy(gnp(json!({"metadata": {"name": "g"},
        "spec": {"selector": "app == 'a'", "ingress": [
            {"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8}}]}})));
    let mut ping = Packet::ping(ip("10.0.0.3"), ip("10.0.0.1"));
    assert!(ingress(&c, "a", ping).is_allow());
    ping.icmp = Some((13, 0));
    assert!(!ingress(&c, "a", ping).is_allow());
}

#[test]
fn a_pod_label_change_changes_set_members_not_rules() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}})));
    let before = c.ruleset();
    c.upsert_endpoint(pod(
        "x",
        "b",
        "10.0.0.2",
        &[("app", "b"), ("role", "client")],
        true,
    ));
    let after = c.ruleset();
    assert_eq!(before.policy_chains, after.policy_chains);
    assert_eq!(before.endpoints, after.endpoints);
    assert_ne!(before.sets, after.sets);
    assert!(ingress(&c, "a", tcp("10.0.0.2", "10.0.0.1", 80)).is_allow());
}

#[test]
fn a_pod_coming_and_going_changes_set_members_not_rules() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                 "ingress": [{"from": [{"namespaceSelector": {}}]}]}})));
    let before = c.ruleset();
    c.upsert_endpoint(pod("y", "e", "10.0.2.5", &[], false));
    let with = c.ruleset();
    assert_eq!(before.policy_chains, with.policy_chains);
    assert!(ingress(&c, "a", tcp("10.0.2.5", "10.0.0.1", 80)).is_allow());
    c.remove_endpoint("y/e");
    assert_eq!(c.ruleset(), before);
}

#[test]
fn a_namespace_label_change_moves_its_pods_in_and_out_of_namespace_selector_sets() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"trusted": "yes"}}}]}]}})));
    assert!(!ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)).is_allow());
    c.upsert_namespace("y", labels(&[("team", "y"), ("trusted", "yes")]));
    assert!(ingress(&c, "a", tcp("10.0.0.3", "10.0.0.1", 80)).is_allow());
}

#[test]
fn deleting_a_policy_removes_its_chains_and_sets() {
    let mut c = cluster();
    let before = c.ruleset();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]}})));
    c.remove_policy("knp.default.x/p");
    assert_eq!(c.ruleset(), before);
}

#[test]
fn a_host_endpoint_without_policy_drops() {
    let mut c = cluster();
    c.upsert_endpoint(Endpoint {
        kind: EndpointKind::Host,
        namespace: None,
        name: "eth0".into(),
        iface: Some("eth0".into()),
        addrs: vec![ip("192.168.0.1")],
        labels: BTreeMap::new(),
        ports: vec![],
    });
    let v = c.ruleset().verdict(
        "eth0",
        Direction::Ingress,
        &tcp("192.168.0.2", "192.168.0.1", 80),
    );
    assert_eq!(v, Some(Verdict::Deny(None)));
}

#[test]
fn failsafe_defaults_are_felixs() {
    let f = tabby_acl::Failsafe::default();
    assert!(f.inbound.contains(&(proto::TCP, 22)) && f.inbound.contains(&(proto::UDP, 68)));
    assert!(f.outbound.contains(&(proto::UDP, 53)) && f.outbound.contains(&(proto::TCP, 6443)));
    assert_eq!((f.inbound.len(), f.outbound.len()), (9, 9));
}

#[test]
fn an_invalid_cidr_is_an_error_naming_the_field() {
    let np: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0/8"}}]}]}}))
    .unwrap();
    let e = Policy::from_k8s(&np).unwrap_err().to_string();
    assert!(e.contains("spec.ingress[0].from[0].ipBlock.cidr"), "{e}");
}

#[test]
fn an_nft_diff_for_a_label_change_only_touches_set_elements() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}})));
    let before = nft::render(&c.ruleset());
    c.upsert_endpoint(pod(
        "x",
        "b",
        "10.0.0.2",
        &[("app", "b"), ("role", "client")],
        true,
    ));
    let script = nft::diff(&before, &nft::render(&c.ruleset()));
    assert_eq!(script.len(), 2, "{script:#?}");
    assert!(
        script[1].starts_with("add element inet tabby s4-"),
        "{script:#?}"
    );
    assert!(script[1].ends_with("{ 10.0.0.2 }"), "{script:#?}");
}

#[test]
fn an_iptables_diff_for_a_label_change_only_touches_ipset_members() {
    let mut c = cluster();
    c.upsert_policy(knp(json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}})));
    let before = iptables::render(&c.ruleset());
    c.upsert_endpoint(pod(
        "x",
        "b",
        "10.0.0.2",
        &[("app", "b"), ("role", "client")],
        true,
    ));
    let after = iptables::render(&c.ruleset());
    let hooks = before.hooks4.clone();
    assert_eq!(iptables::restore_script(&before.v4, &after.v4, &hooks), "");
    let (ipsets, destroy) = iptables::ipset_scripts(&before, &after);
    assert!(
        ipsets.starts_with("add tabby-s4-") && ipsets.lines().count() == 1,
        "{ipsets}"
    );
    assert_eq!(destroy, "");
}
