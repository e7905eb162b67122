//! Every field tabby uses is validated, and the error names the object and the field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tabby_datastore::{DecodeError, Resource};

fn decode(yaml: &str) -> Result<Resource, DecodeError> {
    let v = tabby_datastore::resource::parse_yaml(yaml).unwrap();
    Resource::from_document(v, "default").map(|(_, r)| r)
}

/// The error's text, which must name `object` and `field`.
fn error_of(yaml: &str, object: &str, field: &str) -> String {
    let err = decode(yaml).expect_err("must be refused").to_string();
    assert!(err.contains(object), "{err:?} does not name {object:?}");
    assert!(err.contains(field), "{err:?} does not name {field:?}");
    err
}

fn peer(spec: &str) -> String {
    format!(
        "apiVersion: crd.projectcalico.org/v1\nkind: BGPPeer\nmetadata:\n  name: p\nspec:\n{spec}"
    )
}

fn gnp(spec: &str) -> String {
    format!("apiVersion: crd.projectcalico.org/v1\nkind: GlobalNetworkPolicy\nmetadata:\n  name: g\nspec:\n{spec}")
}

#[test]
fn bgp_peer_with_a_bad_peer_ip_names_spec_peer_ip() {
    error_of(
        &peer("  peerIP: 10.0.0.300\n  asNumber: 65001\n"),
        "BGPPeer p",
        "spec.peerIP",
    );
}

#[test]
fn bgp_peer_accepts_an_address_with_a_port() {
    assert!(decode(&peer("  peerIP: '[fd00::1]:1179'\n  asNumber: 65001\n")).is_ok());
    assert!(decode(&peer("  peerIP: 10.0.0.1:1179\n  asNumber: 65001\n")).is_ok());
}

#[test]
fn bgp_peer_with_peer_ip_needs_an_as_number() {
    error_of(&peer("  peerIP: 10.0.0.1\n"), "BGPPeer p", "spec.asNumber");
}

#[test]
fn bgp_peer_cannot_have_both_node_and_node_selector() {
    error_of(
        &peer("  node: n1\n  nodeSelector: all()\n  peerIP: 10.0.0.1\n  asNumber: 1\n"),
        "BGPPeer p",
        "spec.nodeSelector",
    );
}

#[test]
fn bgp_peer_with_an_invalid_selector_names_the_selector_field() {
    error_of(
        &peer("  peerSelector: \"role == 'rr\"\n"),
        "BGPPeer p",
        "spec.peerSelector",
    );
}

#[test]
fn bgp_peer_with_a_dotted_as_number_is_read() {
    let Ok(Resource::BGPPeer(p)) = decode(&peer("  peerIP: 10.0.0.1\n  asNumber: '1.10'\n")) else {
        panic!()
    };
    assert_eq!(p.spec.as_number.map(|a| a.0), Some(65546));
}

#[test]
fn bgp_peer_with_an_out_of_range_as_number_names_spec_as_number() {
    error_of(
        &peer("  peerIP: 10.0.0.1\n  asNumber: 4294967296\n"),
        "BGPPeer p",
        "spec.asNumber",
    );
}

#[test]
fn bgp_peer_with_an_unknown_next_hop_mode_is_refused() {
    error_of(
        &peer("  peerIP: 10.0.0.1\n  asNumber: 1\n  nextHopMode: Sometimes\n"),
        "BGPPeer p",
        "spec.nextHopMode",
    );
}

#[test]
fn ip_pool_block_size_must_fit_the_family() {
    let pool = "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\n  blockSize: 12\n";
    error_of(pool, "IPPool p", "spec.blockSize");
}

#[test]
fn ip_pool_with_an_unknown_ipip_mode_names_spec_ipip_mode() {
    let pool = "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\n  ipipMode: Sometimes\n";
    error_of(pool, "IPPool p", "spec.ipipMode");
}

#[test]
fn policy_port_names_ranges_and_numbers_are_read() {
    let ok = gnp("  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      ports: [80, '8000:8080', http-alt]\n");
    let Ok(Resource::GlobalNetworkPolicy(p)) = decode(&ok) else {
        panic!()
    };
    let ports = p.spec.ingress.unwrap()[0]
        .destination
        .ports
        .clone()
        .unwrap();
    assert_eq!(
        ports.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["80", "8000:8080", "http-alt"]
    );
}

#[test]
fn policy_port_range_backwards_names_the_port() {
    let bad = gnp("  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      ports: ['90:80']\n");
    error_of(
        &bad,
        "GlobalNetworkPolicy g",
        "spec.ingress[0].destination.ports[0]",
    );
}

#[test]
fn policy_ports_need_a_port_protocol() {
    let bad = gnp(
        "  ingress:\n  - action: Allow\n    protocol: ICMP\n    destination:\n      ports: [80]\n",
    );
    error_of(&bad, "GlobalNetworkPolicy g", "spec.ingress[0].protocol");
}

#[test]
fn policy_with_an_unknown_action_names_the_rule() {
    let bad = gnp("  egress:\n  - action: Maybe\n");
    error_of(&bad, "GlobalNetworkPolicy g", "spec.egress[0].action");
}

#[test]
fn policy_icmp_code_needs_a_type() {
    let bad = gnp("  ingress:\n  - action: Allow\n    protocol: ICMP\n    icmp: {code: 0}\n");
    error_of(&bad, "GlobalNetworkPolicy g", "spec.ingress[0].icmp.code");
}

#[test]
fn policy_with_a_bad_net_names_it() {
    let bad =
        gnp("  ingress:\n  - action: Allow\n    source:\n      nets: [10.0.0.0/8, 300.0.0.0/8]\n");
    error_of(
        &bad,
        "GlobalNetworkPolicy g",
        "spec.ingress[0].source.nets[1]",
    );
}

#[test]
fn kubernetes_network_policy_end_port_below_port_is_refused() {
    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: n\n  namespace: web\nspec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: TCP, port: 90, endPort: 80}\n";
    error_of(np, "web/n", "spec.ingress[0].ports[0].endPort");
}

#[test]
fn kubernetes_network_policy_ip_block_must_be_a_cidr() {
    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: n\nspec:\n  podSelector: {}\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0]}\n";
    error_of(np, "default/n", "ipBlock.except[0]");
}

#[test]
fn node_with_a_bad_address_annotation_names_the_annotation() {
    let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  annotations:\n    projectcalico.org/IPv4Address: 10.0.0.1\n";
    error_of(node, "Node n1", "projectcalico.org/IPv4Address");
}

#[test]
fn bgp_configuration_with_a_bad_community_names_it() {
    let c = "apiVersion: crd.projectcalico.org/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  communities:\n  - {name: c1, value: '65000:100:x'}\n";
    error_of(c, "BGPConfiguration default", "spec.communities[0].value");
}

#[test]
fn a_document_without_a_name_is_refused() {
    let err =
        decode("apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nspec:\n  cidr: 10.0.0.0/8\n")
            .expect_err("no name");
    assert!(err.to_string().contains("metadata.name"));
}

#[test]
fn unsupported_fields_that_are_set_are_listed() {
    let c = "apiVersion: crd.projectcalico.org/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  serviceClusterIPs:\n  - cidr: 10.96.0.0/12\n";
    assert_eq!(
        decode(c).unwrap().unsupported_fields(),
        ["spec.serviceClusterIPs"]
    );
}

#[test]
fn yaml_1_1_boolean_words_stay_strings_as_kubernetes_reads_them() {
    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: n\n  namespace: 'on'\nspec:\n  podSelector:\n    matchLabels: {env: no}\n";
    let Ok(Resource::K8sNetworkPolicy(np)) = decode(np) else {
        panic!("must decode")
    };
    assert_eq!(np.metadata.name.as_deref(), Some("n"));
    let labels = np.spec.unwrap().pod_selector.unwrap().match_labels.unwrap();
    assert_eq!(labels.get("env").map(String::as_str), Some("no"));
}
