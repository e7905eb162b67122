//! The calc: datastore events in, the node's desired state out. One behaviour per test, then
//! property tests of order independence (as Felix's calc graph tests do).

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use tabby_datastore::calico::EncapMode;
use tabby_datastore::{facts, AsNumber, Event, Key, Resource};
use tabby_felix::calc::{Calc, NextHopMode, PeerKind, PeerSource};
use tabby_felix::routes::{Dst, NextHop, Route, Target};

const ME: &str = "node-a";

// ---------- building resources ----------

/// A decoded, validated object from a Kubernetes-shaped document.
fn object(doc: Value) -> (Key, Arc<Resource>) {
    match Resource::from_document(doc.clone(), "default") {
        Ok((k, r)) => (k, Arc::new(r)),
        Err(e) => panic!("bad test document {doc}: {e}"),
    }
}

fn set(calc: &mut Calc, doc: Value) {
    let (key, object) = object(doc);
    calc.apply(&Event::Update {
        key,
        object: Some(object),
    });
}

fn delete(calc: &mut Calc, doc: Value) {
    let (key, _) = object(doc);
    calc.apply(&Event::Update { key, object: None });
}

fn calc_with(docs: impl IntoIterator<Item = Value>) -> Calc {
    let mut calc = Calc::new(ME);
    for d in docs {
        set(&mut calc, d);
    }
    calc.apply(&Event::InSync);
    calc
}

/// A Node with an IPv4 BGP address annotation and labels.
fn node(name: &str, ipv4: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {}, "annotations": {facts::ANNOTATION_IPV4: ipv4}},
    })
}

fn with_label(mut doc: Value, k: &str, v: &str) -> Value {
    doc["metadata"]["labels"][k] = json!(v);
    doc
}

fn with_annotation(mut doc: Value, k: &str, v: &str) -> Value {
    doc["metadata"]["annotations"][k] = json!(v);
    doc
}

fn with_pod_cidrs(mut doc: Value, cidrs: &[&str]) -> Value {
    doc["spec"]["podCIDRs"] = json!(cidrs);
    doc
}

fn pod(ns: &str, name: &str, node: &str, ips: &[&str]) -> Value {
    let ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c"}]},
        "status": {"podIPs": ips},
    })
}

fn pool(name: &str, cidr: &str, ipip: &str, export: bool) -> Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, "ipipMode": ipip, "disableBGPExport": !export},
    })
}

fn block(name: &str, cidr: &str, node: &str) -> Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, "affinity": format!("host:{node}")},
    })
}

fn bgp_config(spec: Value) -> Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "BGPConfiguration",
        "metadata": {"name": "default"}, "spec": spec,
    })
}

fn bgp_peer(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "BGPPeer",
        "metadata": {"name": name}, "spec": spec,
    })
}

fn felix_config(name: &str, prefix: &str) -> Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "FelixConfiguration",
        "metadata": {"name": name}, "spec": {"interfacePrefix": prefix},
    })
}

fn secret(ns: &str, name: &str, data: Value, string_data: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"namespace": ns, "name": name},
        "data": data, "stringData": string_data,
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

fn dst(s: &str) -> Dst {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    Dst {
        addr: ip(a),
        len: l.parse().unwrap_or(32),
    }
}

fn peer_ips(calc: &Calc) -> Vec<IpAddr> {
    calc.bgp().peers.keys().copied().collect()
}

fn kind_of(calc: &Calc, addr: &str) -> Option<PeerKind> {
    calc.bgp().peers.get(&ip(addr)).map(|p| p.kind)
}

/// Three nodes on 10.0.0.0/24 and the RR labels used below.
fn three_nodes() -> Vec<Value> {
    vec![
        node(ME, "10.0.0.1/24"),
        node("node-b", "10.0.0.2/24"),
        node("node-c", "10.0.0.3/24"),
    ]
}

// ---------- node info ----------

#[test]
fn node_info_takes_addresses_router_id_and_as_from_the_node() {
    let calc = calc_with([with_annotation(
        with_annotation(
            node(ME, "10.0.0.1/24"),
            facts::ANNOTATION_IPV6,
            "fd00::1/64",
        ),
        facts::ANNOTATION_AS,
        "65001",
    )]);
    let info = calc.node_info();
    assert_eq!(info.ipv4, Some(([10, 0, 0, 1].into(), 24)));
    assert_eq!(
        info.ipv6.map(|(a, l)| (IpAddr::V6(a), l)),
        Some((ip("fd00::1"), 64))
    );
    assert_eq!(info.router_id, Some([10, 0, 0, 1].into()));
    assert_eq!(info.asn, AsNumber(65001));
}

#[test]
fn node_as_falls_back_to_the_bgp_configuration_then_64512() {
    let mut calc = calc_with([node(ME, "10.0.0.1/24")]);
    assert_eq!(calc.node_info().asn, AsNumber(64512));
    set(&mut calc, bgp_config(json!({"asNumber": 65100})));
    assert_eq!(calc.node_info().asn, AsNumber(65100));
}

// ---------- endpoints ----------

#[test]
fn pods_on_this_node_are_local_endpoints_named_by_the_cni_rule() {
    let calc = calc_with([pod("ns", "web", ME, &["10.65.0.5", "fd00:65::5"])]);
    let iface = facts::workload_interface("cali", "ns", "web");
    let ep = &calc.endpoints()[&iface];
    assert_eq!((ep.namespace.as_str(), ep.name.as_str()), ("ns", "web"));
    assert_eq!(ep.ipv4, vec![std::net::Ipv4Addr::new(10, 65, 0, 5)]);
    assert_eq!(ep.ipv6.len(), 1);
    assert_eq!(ep.labels.get("app").map(String::as_str), Some("web"));
}

#[test]
fn pods_on_other_nodes_are_not_local_endpoints() {
    let calc = calc_with([pod("ns", "web", "node-b", &["10.65.1.5"])]);
    assert!(calc.endpoints().is_empty());
}

#[test]
fn host_network_pods_are_not_endpoints() {
    let mut p = pod("ns", "web", ME, &["10.0.0.1"]);
    p["spec"]["hostNetwork"] = json!(true);
    assert!(calc_with([p]).endpoints().is_empty());
}

#[test]
fn pods_without_addresses_are_not_endpoints_yet() {
    assert!(calc_with([pod("ns", "web", ME, &[])])
        .endpoints()
        .is_empty());
}

#[test]
fn finished_pods_are_not_endpoints() {
    let mut p = pod("ns", "job", ME, &["10.65.0.9"]);
    p["status"]["phase"] = json!("Succeeded");
    assert!(calc_with([p]).endpoints().is_empty());
}

#[test]
fn deleting_a_pod_removes_its_endpoint() {
    let mut calc = calc_with([pod("ns", "web", ME, &["10.65.0.5"])]);
    delete(&mut calc, pod("ns", "web", ME, &[]));
    assert!(calc.endpoints().is_empty());
}

#[test]
fn interface_prefix_comes_from_felix_configuration() {
    let mut calc = calc_with([
        pod("ns", "web", ME, &["10.65.0.5"]),
        felix_config("default", "tap,cali"),
    ]);
    let tap = facts::workload_interface("tap", "ns", "web");
    assert!(calc.endpoints().contains_key(&tap));
    set(&mut calc, felix_config(&format!("node.{ME}"), "veth"));
    let veth = facts::workload_interface("veth", "ns", "web");
    assert_eq!(calc.endpoints().keys().collect::<Vec<_>>(), vec![&veth]);
}

#[test]
fn an_unrelated_pod_update_keeps_the_cached_endpoints() {
    let mut calc = calc_with([pod("ns", "web", ME, &["10.65.0.5"])]);
    let before: *const _ = calc.endpoints();
    set(&mut calc, pod("ns", "other", "node-b", &["10.65.1.5"]));
    assert!(std::ptr::eq(before, calc.endpoints()));
}

// ---------- blocks and origination ----------

#[test]
fn own_blocks_are_pod_cidrs_and_affine_ipam_blocks_with_their_pool() {
    let calc = calc_with([
        with_pod_cidrs(node(ME, "10.0.0.1/24"), &["10.244.0.0/24"]),
        block("b1", "10.65.0.0/26", ME),
        block("b2", "10.65.0.64/26", "node-b"),
        pool("p", "10.65.0.0/16", "Never", true),
    ]);
    let blocks: Vec<_> = calc
        .blocks()
        .iter()
        .map(|b| (b.cidr, b.pool.as_ref().map(|p| p.name.clone())))
        .collect();
    assert_eq!(
        blocks,
        vec![
            (dst("10.65.0.0/26"), Some("p".to_string())),
            (dst("10.244.0.0/24"), None)
        ]
    );
}

#[test]
fn blocks_in_pools_with_bgp_export_disabled_are_not_originated() {
    let calc = calc_with([
        block("b1", "10.65.0.0/26", ME),
        block("b2", "10.66.0.0/26", ME),
        pool("exported", "10.65.0.0/16", "Never", true),
        pool("hidden", "10.66.0.0/16", "Never", false),
    ]);
    assert_eq!(calc.originated(), vec![dst("10.65.0.0/26")]);
}

#[test]
fn blocks_in_no_pool_are_originated() {
    let calc = calc_with([with_pod_cidrs(node(ME, "10.0.0.1/24"), &["10.244.0.0/24"])]);
    assert_eq!(calc.originated(), vec![dst("10.244.0.0/24")]);
}

// ---------- BGP ----------

#[test]
fn mesh_peers_are_every_other_node_with_an_address() {
    let mut nodes = three_nodes();
    nodes.push(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bare"}}));
    let calc = calc_with(nodes);
    assert_eq!(peer_ips(&calc), vec![ip("10.0.0.2"), ip("10.0.0.3")]);
    let p = &calc.bgp().peers[&ip("10.0.0.2")];
    assert_eq!(
        (p.kind, p.asn, p.port),
        (PeerKind::Mesh, AsNumber(64512), 179)
    );
    assert_eq!(p.node.as_deref(), Some("node-b"));
}

#[test]
fn mesh_sessions_are_per_address_family() {
    let calc = calc_with([
        node(ME, "10.0.0.1/24"),
        with_annotation(
            node("node-b", "10.0.0.2/24"),
            facts::ANNOTATION_IPV6,
            "fd00::2/64",
        ),
    ]);
    // We have no IPv6 address: no IPv6 session.
    assert_eq!(peer_ips(&calc), vec![ip("10.0.0.2")]);
}

#[test]
fn mesh_disabled_leaves_only_bgp_peers() {
    let mut docs = three_nodes();
    docs.push(bgp_config(json!({"nodeToNodeMeshEnabled": false})));
    docs.push(bgp_peer(
        "tor",
        json!({"peerIP": "10.0.0.254", "asNumber": 65000}),
    ));
    let calc = calc_with(docs);
    assert!(!calc.bgp().mesh_enabled);
    assert_eq!(peer_ips(&calc), vec![ip("10.0.0.254")]);
    assert_eq!(kind_of(&calc, "10.0.0.254"), Some(PeerKind::Peer));
}

#[test]
fn listen_port_comes_from_the_bgp_configuration() {
    let mut docs = three_nodes();
    docs.push(bgp_config(json!({"listenPort": 1179})));
    let calc = calc_with(docs);
    assert_eq!(calc.bgp().listen_port, 1179);
    assert_eq!(calc.bgp().peers[&ip("10.0.0.2")].port, 1179);
}

#[test]
fn bgp_peer_with_node_selector_applies_only_to_matching_nodes() {
    let spec = json!({"nodeSelector": "rack == 'r1'", "peerIP": "10.0.0.254", "asNumber": 65000});
    let on_rack = calc_with([
        with_label(node(ME, "10.0.0.1/24"), "rack", "r1"),
        bgp_peer("tor", spec.clone()),
    ]);
    let elsewhere = calc_with([
        with_label(node(ME, "10.0.0.1/24"), "rack", "r2"),
        bgp_peer("tor", spec),
    ]);
    assert_eq!(peer_ips(&on_rack), vec![ip("10.0.0.254")]);
    assert!(peer_ips(&elsewhere).is_empty());
}

#[test]
fn bgp_peer_with_node_applies_only_to_that_node() {
    let mine = calc_with([
        node(ME, "10.0.0.1/24"),
        bgp_peer(
            "p",
            json!({"node": ME, "peerIP": "10.0.0.254", "asNumber": 65000}),
        ),
    ]);
    let theirs = calc_with([
        node(ME, "10.0.0.1/24"),
        bgp_peer(
            "p",
            json!({"node": "node-b", "peerIP": "10.0.0.254", "asNumber": 65000}),
        ),
    ]);
    assert_eq!(peer_ips(&mine), vec![ip("10.0.0.254")]);
    assert!(peer_ips(&theirs).is_empty());
}

#[test]
fn peer_ip_with_a_port_uses_that_port() {
    let calc = calc_with([
        node(ME, "10.0.0.1/24"),
        bgp_peer("p", json!({"peerIP": "10.0.0.254:1179", "asNumber": 65000})),
    ]);
    assert_eq!(calc.bgp().peers[&ip("10.0.0.254")].port, 1179);
}

#[test]
fn peer_selector_peers_with_the_selected_nodes() {
    let mut docs = three_nodes();
    docs[2] = with_annotation(
        with_label(docs[2].clone(), "edge", "true"),
        facts::ANNOTATION_AS,
        "65009",
    );
    docs.push(bgp_config(json!({"nodeToNodeMeshEnabled": false})));
    docs.push(bgp_peer("edge", json!({"peerSelector": "has(edge)"})));
    let calc = calc_with(docs);
    assert_eq!(peer_ips(&calc), vec![ip("10.0.0.3")]);
    let p = &calc.bgp().peers[&ip("10.0.0.3")];
    assert_eq!(
        (p.asn, p.node.as_deref()),
        (AsNumber(65009), Some("node-c"))
    );
}

#[test]
fn a_peer_never_points_at_this_nodes_own_address() {
    let calc = calc_with([
        node(ME, "10.0.0.1/24"),
        bgp_peer("self", json!({"peerIP": "10.0.0.1", "asNumber": 64512})),
        bgp_peer("all", json!({"peerSelector": "all()"})),
    ]);
    assert!(peer_ips(&calc).is_empty());
}

#[test]
fn a_bgp_peer_overrides_the_mesh_for_the_same_address() {
    let mut docs = three_nodes();
    docs.push(bgp_peer(
        "b",
        json!({"peerIP": "10.0.0.2", "asNumber": 64512}),
    ));
    let calc = calc_with(docs);
    let p = &calc.bgp().peers[&ip("10.0.0.2")];
    assert_eq!(p.source, PeerSource::BgpPeer("b".into()));
    assert_eq!(kind_of(&calc, "10.0.0.3"), Some(PeerKind::Mesh));
}

#[test]
fn global_bgp_peers_take_precedence_over_node_specific_ones() {
    let calc = calc_with([
        node(ME, "10.0.0.1/24"),
        bgp_peer(
            "a-node",
            json!({"node": ME, "peerIP": "10.0.0.254", "asNumber": 65001}),
        ),
        bgp_peer(
            "z-global",
            json!({"peerIP": "10.0.0.254", "asNumber": 65002}),
        ),
    ]);
    assert_eq!(calc.bgp().peers[&ip("10.0.0.254")].asn, AsNumber(65002));
}

/// The usual Calico reflector setup: the mesh off, one BGPPeer from every node to the nodes
/// labelled as reflectors.
fn rr_setup(me_is_rr: bool) -> Vec<Value> {
    let rr = |doc: Value| {
        with_annotation(
            with_label(doc, "route-reflector", "true"),
            facts::ANNOTATION_RR_CLUSTER_ID,
            "244.0.0.1",
        )
    };
    let mut me = node(ME, "10.0.0.1/24");
    if me_is_rr {
        me = rr(me);
    }
    vec![
        me,
        rr(node("node-rr", "10.0.0.9/24")),
        node("node-b", "10.0.0.2/24"),
        bgp_config(json!({"nodeToNodeMeshEnabled": false})),
        bgp_peer(
            "to-rr",
            json!({"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}),
        ),
    ]
}

#[test]
fn route_reflector_clients_peer_with_the_reflectors() {
    let calc = calc_with(rr_setup(false));
    assert_eq!(peer_ips(&calc), vec![ip("10.0.0.9")]);
    assert_eq!(kind_of(&calc, "10.0.0.9"), Some(PeerKind::Reflector));
}

#[test]
fn route_reflector_treats_non_reflector_ibgp_peers_as_clients() {
    let calc = calc_with(rr_setup(true));
    // node-b reaches us through the reverse of `to-rr`; node-rr is a reflector of our
    // cluster, so a plain iBGP peer.
    assert_eq!(kind_of(&calc, "10.0.0.2"), Some(PeerKind::RrClient));
    assert_eq!(kind_of(&calc, "10.0.0.9"), Some(PeerKind::Peer));
    assert_eq!(calc.node_info().rr_cluster_id, Some([244, 0, 0, 1].into()));
}

#[test]
fn route_reflectors_take_no_part_in_the_mesh() {
    let mut docs = three_nodes();
    docs[0] = with_annotation(
        docs[0].clone(),
        facts::ANNOTATION_RR_CLUSTER_ID,
        "244.0.0.1",
    );
    let rr = calc_with(docs.clone());
    assert!(peer_ips(&rr).is_empty());
    // And node-b's mesh skips the reflector.
    let mut from_b = Calc::new("node-b");
    for d in docs {
        set(&mut from_b, d);
    }
    assert_eq!(peer_ips(&from_b), vec![ip("10.0.0.3")]);
}

#[test]
fn ebgp_peers_of_a_reflector_are_not_clients() {
    let mut docs = rr_setup(true);
    docs.push(bgp_peer(
        "tor",
        json!({"peerIP": "10.0.0.254", "asNumber": 65000}),
    ));
    assert_eq!(
        kind_of(&calc_with(docs), "10.0.0.254"),
        Some(PeerKind::Peer)
    );
}

#[test]
fn bgp_password_is_read_from_the_secret() {
    let spec = json!({"peerIP": "10.0.0.254", "asNumber": 65000,
        "password": {"secretKeyRef": {"name": "bgp", "key": "tor"}}});
    let mut calc = calc_with([node(ME, "10.0.0.1/24"), bgp_peer("tor", spec)]);
    let p = &calc.bgp().peers[&ip("10.0.0.254")];
    assert_eq!((p.password.as_deref(), p.password_missing), (None, true));
    // "c2VjcmV0" is base64 of "secret".
    set(
        &mut calc,
        secret("kube-system", "bgp", json!({"tor": "c2VjcmV0"}), json!({})),
    );
    let p = &calc.bgp().peers[&ip("10.0.0.254")];
    assert_eq!(
        (p.password.as_deref(), p.password_missing),
        (Some("secret"), false)
    );
}

#[test]
fn secrets_in_other_namespaces_are_not_read() {
    let spec = json!({"peerIP": "10.0.0.254", "asNumber": 65000,
        "password": {"secretKeyRef": {"name": "bgp", "key": "tor"}}});
    let calc = calc_with([
        node(ME, "10.0.0.1/24"),
        bgp_peer("tor", spec),
        secret("default", "bgp", json!({}), json!({"tor": "secret"})),
    ]);
    assert_eq!(calc.bgp().peers[&ip("10.0.0.254")].password, None);
}

#[test]
fn mesh_password_comes_from_node_mesh_password() {
    let mut docs = three_nodes();
    docs.push(bgp_config(
        json!({"nodeMeshPassword": {"secretKeyRef": {"name": "bgp", "key": "mesh"}}}),
    ));
    docs.push(secret(
        "kube-system",
        "bgp",
        json!({}),
        json!({"mesh": "m3sh"}),
    ));
    let calc = calc_with(docs);
    assert_eq!(
        calc.bgp().peers[&ip("10.0.0.2")].password.as_deref(),
        Some("m3sh")
    );
}

#[test]
fn keep_original_next_hop_keeps_the_next_hop() {
    let calc = calc_with([
        node(ME, "10.0.0.1/24"),
        bgp_peer(
            "tor",
            json!({"peerIP": "10.0.0.254", "asNumber": 65000, "keepOriginalNextHop": true}),
        ),
    ]);
    assert_eq!(
        calc.bgp().peers[&ip("10.0.0.254")].next_hop,
        NextHopMode::Keep
    );
}

// ---------- routes ----------

#[test]
fn routes_are_workloads_blackholes_and_learned_prefixes() {
    let calc = calc_with([
        node(ME, "10.0.0.1/24"),
        pod("ns", "web", ME, &["10.65.0.5"]),
        block("b1", "10.65.0.0/26", ME),
        pool("p", "10.65.0.0/16", "Never", true),
    ]);
    let iface = facts::workload_interface("cali", "ns", "web");
    let routes = calc.routes(&[(dst("10.65.0.64/26"), vec![ip("10.0.0.2")])]);
    assert_eq!(
        routes,
        vec![
            Route {
                dst: dst("10.65.0.0/26"),
                target: Target::Blackhole
            },
            Route {
                dst: dst("10.65.0.5/32"),
                target: Target::Workload { iface }
            },
            Route {
                dst: dst("10.65.0.64/26"),
                target: Target::Via(vec![NextHop {
                    gateway: ip("10.0.0.2"),
                    ipip: false
                }])
            },
        ]
    );
}

#[test]
fn learned_routes_for_our_own_blocks_are_not_installed() {
    let calc = calc_with([node(ME, "10.0.0.1/24"), block("b1", "10.65.0.0/26", ME)]);
    let routes = calc.routes(&[(dst("10.65.0.0/26"), vec![ip("10.0.0.2")])]);
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].target, Target::Blackhole);
}

#[test]
fn ipip_always_uses_the_tunnel() {
    let calc = calc_with([
        node(ME, "10.0.0.1/24"),
        pool("p", "10.65.0.0/16", "Always", true),
    ]);
    let routes = calc.routes(&[(dst("10.65.0.64/26"), vec![ip("10.0.0.2")])]);
    assert_eq!(
        routes[0].target,
        Target::Via(vec![NextHop {
            gateway: ip("10.0.0.2"),
            ipip: true
        }])
    );
}

#[test]
fn cross_subnet_ipip_uses_the_tunnel_only_across_subnets() {
    let calc = calc_with([
        node(ME, "10.0.0.1/24"),
        pool("p", "10.65.0.0/16", "CrossSubnet", true),
    ]);
    let routes = calc.routes(&[
        (dst("10.65.1.0/26"), vec![ip("10.0.0.2")]),
        (dst("10.65.2.0/26"), vec![ip("10.0.1.2")]),
    ]);
    let ipip: Vec<bool> = routes
        .iter()
        .flat_map(|r| match &r.target {
            Target::Via(hops) => hops.iter().map(|h| h.ipip).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(ipip, vec![false, true]);
}

#[test]
fn learned_routes_with_several_gateways_are_ecmp_sorted() {
    let calc = calc_with([node(ME, "10.0.0.1/24")]);
    let routes = calc.routes(&[(
        dst("10.65.1.0/26"),
        vec![ip("10.0.0.3"), ip("10.0.0.2"), ip("10.0.0.3")],
    )]);
    let gws: Vec<IpAddr> = match &routes[0].target {
        Target::Via(h) => h.iter().map(|h| h.gateway).collect(),
        _ => Vec::new(),
    };
    assert_eq!(gws, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
}

#[test]
fn pool_ipip_mode_is_reported_with_the_block() {
    let calc = calc_with([
        block("b1", "10.65.0.0/26", ME),
        pool("p", "10.65.0.0/16", "Always", true),
    ]);
    assert_eq!(
        calc.blocks()[0].pool.as_ref().map(|p| p.ipip),
        Some(EncapMode::Always)
    );
}

// ---------- order independence (property tests) ----------

mod properties {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::select;

    const NODES: [&str; 4] = [ME, "node-b", "node-c", "node-d"];

    /// One version of some object of a small universe, so keys collide often.
    fn any_object() -> impl Strategy<Value = Value> {
        let node_doc = (0..4usize, 1..4u8, any::<bool>(), any::<bool>(), 0..3u8).prop_map(
            |(i, host, rr, v6, rack)| {
                let mut d = node(NODES[i], &format!("10.0.{}.{}/24", host % 2, i + 1));
                d = with_label(d, "rack", &format!("r{rack}"));
                d = with_pod_cidrs(d, &[&format!("10.244.{i}.0/24")]);
                if rr {
                    d = with_label(d, "rr", "true");
                    d = with_annotation(d, facts::ANNOTATION_RR_CLUSTER_ID, "244.0.0.1");
                }
                if v6 {
                    d = with_annotation(d, facts::ANNOTATION_IPV6, &format!("fd00::{}/64", i + 1));
                }
                d
            },
        );
        let pod_doc = (0..6usize, 0..4usize, 0..250u8, any::<bool>(), any::<bool>()).prop_map(
            |(p, n, host, v6, hostnet)| {
                let mut ips = vec![format!("10.65.{n}.{host}")];
                if v6 {
                    ips.push(format!("fd00:65::{n}:{host}"));
                }
                let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
                let mut d = pod(["ns1", "ns2"][p % 2], &format!("pod-{p}"), NODES[n], &ips);
                d["spec"]["hostNetwork"] = json!(hostnet && p == 0);
                d
            },
        );
        let pool_doc = (
            0..2usize,
            select(vec!["Never", "Always", "CrossSubnet"]),
            any::<bool>(),
        )
            .prop_map(|(i, mode, export)| {
                pool(
                    &format!("pool-{i}"),
                    ["10.65.0.0/16", "10.65.0.0/20"][i],
                    mode,
                    export,
                )
            });
        let block_doc = (0..4usize, 0..4usize)
            .prop_map(|(b, n)| block(&format!("block-{b}"), &format!("10.65.{b}.0/26"), NODES[n]));
        let config_doc = (
            any::<bool>(),
            select(vec![179u16, 1179]),
            select(vec![64512u32, 65001]),
        )
            .prop_map(|(mesh, port, asn)| {
                bgp_config(json!({"nodeToNodeMeshEnabled": mesh, "listenPort": port,
                    "asNumber": asn,
                    "nodeMeshPassword": {"secretKeyRef": {"name": "bgp", "key": "mesh"}}}))
            });
        let peer_doc = (0..3usize, 0..4u8, 0..3u8).prop_map(|(i, local, remote)| {
            let mut spec = match remote {
                0 => json!({"peerIP": "10.0.0.254", "asNumber": 65000}),
                1 => json!({"peerIP": "10.0.0.2", "asNumber": 64512}),
                _ => json!({"peerSelector": "rr == 'true'"}),
            };
            match local {
                0 => {}
                1 => spec["node"] = json!(ME),
                2 => spec["nodeSelector"] = json!("rack == 'r1'"),
                _ => spec["nodeSelector"] = json!("all()"),
            }
            spec["password"] = json!({"secretKeyRef": {"name": "bgp", "key": format!("p{i}")}});
            bgp_peer(&format!("peer-{i}"), spec)
        });
        let felix_doc = (any::<bool>(), select(vec!["cali", "tap", "veth,cali"])).prop_map(
            |(global, prefix)| {
                let name = if global {
                    "default".to_string()
                } else {
                    format!("node.{ME}")
                };
                felix_config(&name, prefix)
            },
        );
        let secret_doc = (any::<bool>(), 0..3u8).prop_map(|(ns, v)| {
            let ns = if ns { "kube-system" } else { "default" };
            secret(
                ns,
                "bgp",
                json!({}),
                json!({"mesh": format!("m{v}"), "p0": "x", "p1": "y"}),
            )
        });
        prop_oneof![
            3 => node_doc,
            4 => pod_doc,
            1 => pool_doc,
            2 => block_doc,
            1 => config_doc,
            2 => peer_doc,
            1 => felix_doc,
            1 => secret_doc,
        ]
    }

    /// Everything the calc outputs, in one comparable value.
    fn state(calc: &Calc) -> String {
        let learned = [
            (dst("10.65.1.0/26"), vec![ip("10.0.0.2"), ip("10.0.1.3")]),
            (dst("10.65.2.0/26"), vec![ip("10.0.1.3")]),
            (dst("10.65.0.0/26"), vec![ip("10.0.0.2")]),
        ];
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            calc.node_info(),
            calc.endpoints(),
            calc.blocks(),
            calc.originated(),
            calc.bgp(),
            calc.routes(&learned)
        )
    }

    /// One step of a sequence.
    #[derive(Debug, Clone)]
    enum Step {
        Set(Value),
        Delete(Value),
    }

    fn run(steps: &[Step]) -> String {
        let mut calc = Calc::new(ME);
        for s in steps {
            match s {
                Step::Set(d) => set(&mut calc, d.clone()),
                Step::Delete(d) => delete(&mut calc, d.clone()),
            }
            // Read mid-stream too, so stale caches would show in the final state.
            let _ = state(&calc);
        }
        state(&calc)
    }

    fn key(doc: &Value) -> Key {
        object(doc.clone()).0
    }

    /// The final set (last version per key), intermediate versions of some of those keys,
    /// padding objects with other keys, and a shuffle seed.
    fn scenario() -> impl Strategy<Value = (Vec<Value>, Vec<Value>, Vec<Value>, Vec<u32>)> {
        (
            prop::collection::vec(any_object(), 0..24),
            prop::collection::vec(any_object(), 0..12),
            prop::collection::vec(any_object(), 0..8),
            prop::collection::vec(any::<u32>(), 64),
        )
    }

    /// Interleaves per-key step lists randomly, keeping each key's steps in order.
    fn interleave(mut lanes: Vec<Vec<Step>>, seed: &[u32]) -> Vec<Step> {
        let mut out = Vec::new();
        let mut i = 0usize;
        for lane in &mut lanes {
            lane.reverse();
        }
        while lanes.iter().any(|l| !l.is_empty()) {
            let live: Vec<usize> = (0..lanes.len()).filter(|&l| !lanes[l].is_empty()).collect();
            let pick = live[seed[i % seed.len()] as usize % live.len()];
            i += 1;
            if let Some(s) = lanes[pick].pop() {
                out.push(s);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

        #[test]
        fn reordered_split_squashed_and_padded_updates_give_the_same_state(
            (objects, versions, padding, seed) in scenario()
        ) {
            // The final set: the last object per key.
            let mut finals: BTreeMap<Key, Value> = BTreeMap::new();
            for o in objects {
                finals.insert(key(&o), o);
            }
            // Squashed, in key order: the reference.
            let squashed: Vec<Step> = finals.values().cloned().map(Step::Set).collect();
            let expected = run(&squashed);

            // Reordered.
            let lanes: Vec<Vec<Step>> = finals.values().map(|o| vec![Step::Set(o.clone())]).collect();
            prop_assert_eq!(&run(&interleave(lanes, &seed)), &expected, "reordered");

            // Split: earlier versions of final keys first (and deletes between), then the
            // final version; padded: objects of other keys added, changed and deleted.
            let mut lanes: BTreeMap<Key, Vec<Step>> = BTreeMap::new();
            for (n, v) in versions.into_iter().enumerate() {
                let k = key(&v);
                let lane = lanes.entry(k).or_default();
                lane.push(Step::Set(v.clone()));
                if n % 3 == 0 {
                    lane.push(Step::Delete(v));
                }
            }
            for p in padding {
                let k = key(&p);
                if !finals.contains_key(&k) {
                    let lane = lanes.entry(k).or_default();
                    lane.push(Step::Set(p.clone()));
                    lane.push(Step::Delete(p));
                }
            }
            let mut all: Vec<Vec<Step>> = Vec::new();
            for (k, f) in &finals {
                if !lanes.contains_key(k) {
                    all.push(vec![Step::Set(f.clone())]);
                }
            }
            for (k, mut lane) in lanes {
                match finals.get(&k) {
                    Some(f) => lane.push(Step::Set(f.clone())),
                    // A key only in `versions`: it must end deleted.
                    None => {
                        if let Some(Step::Set(v)) = lane.last().cloned() {
                            lane.push(Step::Delete(v));
                        }
                    }
                }
                all.push(lane);
            }
            prop_assert_eq!(&run(&interleave(all, &seed)), &expected, "split and padded");
        }

        #[test]
        fn repeating_an_update_changes_nothing(objects in prop::collection::vec(any_object(), 0..16)) {
            let once: Vec<Step> = objects.iter().cloned().map(Step::Set).collect();
            let twice: Vec<Step> = once.iter().cloned().chain(once.iter().cloned()).collect();
            prop_assert_eq!(run(&once), run(&twice));
        }
    }
}

#[test]
fn prefix_advertisements_give_contained_blocks_their_communities_by_name_or_value() {
    let calc = calc_with([
        node(ME, "10.0.0.1/24"),
        bgp_config(json!({
            "communities": [{"name": "rack-1", "value": "65000:1"}],
            "prefixAdvertisements": [
                {"cidr": "10.244.0.0/16", "communities": ["rack-1", "65000:7:9"]},
                {"cidr": "10.244.1.0/24", "communities": ["65000:1", "65000:2"]},
                {"cidr": "10.99.0.0/16", "communities": ["65000:3"]},
            ],
        })),
    ]);
    assert_eq!(
        calc.communities(&dst("10.244.1.0/26")),
        vec!["65000:1", "65000:7:9", "65000:2"]
    );
    assert!(
        calc.communities(&dst("10.0.0.0/8")).is_empty(),
        "a wider prefix is not contained"
    );
}
