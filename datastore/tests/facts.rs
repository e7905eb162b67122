//! Node and pod facts, derived as Calico derives them (shared/DESIGN.md §3).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::{Node, Pod};
use tabby_datastore::calico::IPAMBlock;
use tabby_datastore::facts::*;
use tabby_datastore::{AsNumber, Resource};

fn node(yaml: &str) -> Node {
    let v = tabby_datastore::resource::parse_yaml(yaml).unwrap();
    match Resource::from_document(v, "default").unwrap().1 {
        Resource::Node(n) => n,
        other => panic!("{other:?}"),
    }
}

fn block(cidr: &str, affinity: &str) -> IPAMBlock {
    IPAMBlock::new(
        &cidr.replace(['.', '/'], "-"),
        tabby_datastore::calico::IPAMBlockSpec {
            cidr: cidr.into(),
            affinity: Some(affinity.into()),
            ..Default::default()
        },
    )
}

const ANNOTATED: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: node1
  annotations:
    projectcalico.org/IPv4Address: 10.0.0.11/24
    projectcalico.org/IPv6Address: fd00::11/64
    projectcalico.org/ASNumber: "65011"
    projectcalico.org/RouteReflectorClusterID: 224.0.0.1
spec:
  podCIDRs: [10.244.1.0/24]
status:
  addresses:
  - {type: InternalIP, address: 192.168.0.11}
  - {type: InternalIP, address: "fd01::11"}
"#;

const PLAIN: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node2}
status:
  addresses:
  - {type: Hostname, address: node2}
  - {type: InternalIP, address: 192.168.0.12}
  - {type: InternalIP, address: "fd01::12"}
"#;

#[test]
fn bgp_address_comes_from_the_annotation_first() {
    let n = node(ANNOTATED);
    assert_eq!(
        node_address(&n, false),
        Some(("10.0.0.11".parse().unwrap(), 24))
    );
    assert_eq!(
        node_address(&n, true),
        Some(("fd00::11".parse().unwrap(), 64))
    );
}

#[test]
fn bgp_address_falls_back_to_the_first_internal_ip_of_the_family() {
    let n = node(PLAIN);
    assert_eq!(
        node_address(&n, false),
        Some(("192.168.0.12".parse().unwrap(), 32))
    );
    assert_eq!(
        node_address(&n, true),
        Some(("fd01::12".parse().unwrap(), 128))
    );
}

#[test]
fn as_number_comes_from_the_annotation_then_bgp_configuration_then_64512() {
    let config: tabby_datastore::calico::BGPConfiguration =
        tabby_datastore::calico::BGPConfiguration::new(
            "default",
            tabby_datastore::calico::BGPConfigurationSpec {
                as_number: Some(AsNumber(65100)),
                ..Default::default()
            },
        );
    assert_eq!(node_as(&node(ANNOTATED), Some(&config)), AsNumber(65011));
    assert_eq!(node_as(&node(PLAIN), Some(&config)), AsNumber(65100));
    assert_eq!(node_as(&node(PLAIN), None), AsNumber(64512));
}

#[test]
fn route_reflector_cluster_id_comes_from_the_annotation() {
    assert_eq!(
        node_rr_cluster_id(&node(ANNOTATED)),
        Some("224.0.0.1".parse().unwrap())
    );
    assert_eq!(node_rr_cluster_id(&node(PLAIN)), None);
}

#[test]
fn pod_blocks_are_pod_cidrs_and_affine_ipam_blocks() {
    let blocks = [
        block("10.244.1.0/24", "host:node1"),
        block("10.9.0.0/26", "host:node1"),
        block("10.9.0.64/26", "host:node2"),
        block("fd10::/122", "host:node1"),
    ];
    assert_eq!(
        node_blocks(&node(ANNOTATED), &blocks),
        vec!["10.244.1.0/24", "10.9.0.0/26", "fd10::/122"]
    );
    assert_eq!(node_blocks(&node(PLAIN), &blocks), vec!["10.9.0.64/26"]);
}

/// Expected names computed independently: `printf %s default.nginx | sha1sum | cut -c1-11`.
#[test]
fn workload_interface_is_prefix_and_eleven_hex_digits_of_sha1() {
    assert_eq!(
        workload_interface("cali", "default", "nginx"),
        "calic440f455693"
    );
    assert_eq!(
        workload_interface("cali", "kube-system", "coredns-5d78c9869d-abcde"),
        "cali4d5f75c480c"
    );
    assert_eq!(workload_interface("tap", "ns1", "pod-a"), "tap0b3c1e06ce5");
}

#[test]
fn host_network_pods_are_not_workloads() {
    let pod = |host_network: bool| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "node1", "hostNetwork": host_network, "containers": []},
        }))
        .unwrap()
    };
    assert!(pod_is_workload_of(&pod(false), "node1"));
    assert!(!pod_is_workload_of(&pod(true), "node1"));
    assert!(!pod_is_workload_of(&pod(false), "node2"));
}
