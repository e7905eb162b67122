//! Facts about nodes and pods derived from resources, as Calico derives them
//! (shared/DESIGN.md §3). Pure functions.

use crate::asn::AsNumber;
use crate::calico::{BGPConfiguration, IPAMBlock};
use crate::validate::cidr;
use k8s_openapi::api::core::v1::{Node, Pod};
use sha1::{Digest, Sha1};
use std::net::{IpAddr, Ipv4Addr};

/// The AS of nodes when nothing says otherwise (Calico's default).
pub const DEFAULT_AS: AsNumber = AsNumber(64512);
/// The prefix of workload interface names when FelixConfiguration sets none.
pub const DEFAULT_INTERFACE_PREFIX: &str = "cali";

/// Annotation of a node's BGP IPv4 address (CIDR form).
pub const ANNOTATION_IPV4: &str = "projectcalico.org/IPv4Address";
/// Annotation of a node's BGP IPv6 address (CIDR form).
pub const ANNOTATION_IPV6: &str = "projectcalico.org/IPv6Address";
/// Annotation of a node's AS.
pub const ANNOTATION_AS: &str = "projectcalico.org/ASNumber";
/// Annotation making a node a route reflector of a cluster.
pub const ANNOTATION_RR_CLUSTER_ID: &str = "projectcalico.org/RouteReflectorClusterID";

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// A node's BGP address and prefix length for one family: the annotation (CIDR form), else
/// the node's first `InternalIP` of that family (with the family's host length).
pub fn node_address(node: &Node, ipv6: bool) -> Option<(IpAddr, u8)> {
    let key = if ipv6 {
        ANNOTATION_IPV6
    } else {
        ANNOTATION_IPV4
    };
    if let Some((addr, len)) = annotation(node, key).and_then(|v| cidr(v).ok()) {
        if addr.is_ipv6() == ipv6 {
            return Some((addr, len));
        }
    }
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    addresses
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse::<IpAddr>().ok())
        .find(|a| a.is_ipv6() == ipv6)
        .map(|a| (a, if ipv6 { 128 } else { 32 }))
}

/// A node's AS: its annotation, else `BGPConfiguration default`'s `asNumber`, else 64512.
pub fn node_as(node: &Node, default_config: Option<&BGPConfiguration>) -> AsNumber {
    annotation(node, ANNOTATION_AS)
        .and_then(|v| v.parse().ok())
        .or_else(|| default_config.and_then(|c| c.spec.as_number))
        .unwrap_or(DEFAULT_AS)
}

/// The route reflector cluster ID of a node that is a reflector.
pub fn node_rr_cluster_id(node: &Node) -> Option<Ipv4Addr> {
    annotation(node, ANNOTATION_RR_CLUSTER_ID).and_then(|v| v.trim().parse().ok())
}

/// A node's pod blocks: its `spec.podCIDRs` and the CIDR of every IPAMBlock affine to it
/// (`affinity: host:<node>`), deduplicated, in that order.
pub fn node_blocks<'a>(
    node: &Node,
    blocks: impl IntoIterator<Item = &'a IPAMBlock>,
) -> Vec<String> {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let mut out: Vec<String> = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidrs.clone())
        .unwrap_or_default();
    let affinity = format!("host:{name}");
    for b in blocks {
        if b.spec.affinity.as_deref() == Some(affinity.as_str())
            && b.spec.deleted != Some(true)
            && !out.contains(&b.spec.cidr)
        {
            out.push(b.spec.cidr.clone());
        }
    }
    out
}

/// The host-side interface name of a pod, as Calico's CNI plugin names it: the prefix and
/// the first 11 hex digits of SHA-1 of `"<namespace>.<name>"`.
pub fn workload_interface(prefix: &str, namespace: &str, pod: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}.{pod}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{}", &hex[..11])
}

/// True when the pod is a workload of `node`: scheduled there and not on the host network.
pub fn pod_is_workload_of(pod: &Pod, node: &str) -> bool {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref()) == Some(node)
        && spec.and_then(|s| s.host_network) != Some(true)
}

/// A pod's addresses from `status.podIPs` (falling back to `status.podIP`).
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|p| p.parse::<IpAddr>().ok()),
        );
    }
    ips
}
