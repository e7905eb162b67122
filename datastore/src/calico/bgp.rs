//! BGPConfiguration and BGPPeer.

use crate::asn::AsNumber;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A community Calico may attach to advertised prefixes: a name and a value, either
/// standard (`aa:nn`) or large (`aa:nn:mm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Community {
    /// Name referenced by prefix advertisements.
    pub name: Option<String>,
    /// `aa:nn` or `aa:nn:mm`.
    pub value: Option<String>,
}

/// Communities to attach to a CIDR when it is advertised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrefixAdvertisement {
    /// The CIDR.
    pub cidr: Option<String>,
    /// Community names or literal values.
    #[serde(default)]
    pub communities: Vec<String>,
}

/// A service CIDR to advertise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceCidr {
    /// The CIDR.
    pub cidr: Option<String>,
}

/// Reference to a key of a `v1 Secret` in tabby's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key inside the secret's data.
    pub key: String,
}

/// Where a BGP password comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSource {
    /// A key of a Secret.
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// BGPConfiguration: cluster-wide (name `default`) or per node (name `node.<node>`) BGP
/// settings.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(derive = "PartialEq")]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "BGPConfiguration"
)]
#[kube(plural = "bgpconfigurations")]
#[serde(rename_all = "camelCase")]
pub struct BGPConfigurationSpec {
    /// Log level of the BGP daemon (not used: tabby logs through `RUST_LOG`).
    pub log_severity_screen: Option<String>,
    /// Full iBGP mesh between all nodes; default true.
    #[serde(rename = "nodeToNodeMeshEnabled")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// Default AS of nodes; default 64512.
    pub as_number: Option<AsNumber>,
    /// BGP listen port; default 179.
    pub listen_port: Option<u16>,
    /// Service cluster IPs to advertise (not implemented yet).
    #[serde(rename = "serviceClusterIPs")]
    pub service_cluster_ips: Option<Vec<ServiceCidr>>,
    /// Service external IPs to advertise (not implemented yet).
    #[serde(rename = "serviceExternalIPs")]
    pub service_external_ips: Option<Vec<ServiceCidr>>,
    /// Service load balancer IPs to advertise (not implemented yet).
    #[serde(rename = "serviceLoadBalancerIPs")]
    pub service_load_balancer_ips: Option<Vec<ServiceCidr>>,
    /// Named communities.
    pub communities: Option<Vec<Community>>,
    /// Communities per advertised CIDR.
    pub prefix_advertisements: Option<Vec<PrefixAdvertisement>>,
    /// Password of the node-to-node mesh sessions.
    pub node_mesh_password: Option<SecretSource>,
    /// Graceful restart time of mesh sessions (Go duration, e.g. `120s`).
    pub node_mesh_max_restart_time: Option<String>,
    /// `None` or `NodeIP` (not implemented yet).
    pub bind_mode: Option<String>,
    /// Interfaces whose addresses are not exported (not implemented yet).
    pub ignored_interfaces: Option<Vec<String>>,
}

/// BGPPeer: a BGP peering for some or all nodes.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(derive = "PartialEq")]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "BGPPeer",
    plural = "bgppeers"
)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// The node this peering applies to; with `nodeSelector` unset and this unset, all nodes.
    pub node: Option<String>,
    /// Selector of the nodes this peering applies to.
    pub node_selector: Option<String>,
    /// The peer's address, optionally with a port (`10.0.0.1`, `10.0.0.1:1179`,
    /// `[fd00::1]:1179`).
    #[serde(rename = "peerIP")]
    pub peer_ip: Option<String>,
    /// Selector of tabby nodes to peer with (instead of `peerIP`).
    pub peer_selector: Option<String>,
    /// The peer's AS.
    pub as_number: Option<AsNumber>,
    /// Keep the next hop of routes advertised to this peer.
    pub keep_original_next_hop: Option<bool>,
    /// `Auto`, `Self` or `Keep`.
    pub next_hop_mode: Option<String>,
    /// TCP-MD5 password.
    pub password: Option<SecretSource>,
    /// `UseNodeIP` (default) or `None`.
    pub source_address: Option<String>,
    /// Graceful restart time (Go duration).
    pub max_restart_time: Option<String>,
    /// Keepalive time (Go duration).
    pub keepalive_time: Option<String>,
    /// Accept our own AS this many times in received paths (not implemented yet).
    #[serde(rename = "numAllowedLocalASNumbers")]
    pub num_allowed_local_as_numbers: Option<u32>,
    /// GTSM hop count (not implemented yet).
    pub ttl_security: Option<u8>,
    /// BGPFilter names (not implemented yet).
    pub filters: Option<Vec<String>>,
    /// Next hop address the peer is reachable by (not implemented yet).
    pub reachable_by: Option<String>,
    /// Workloads to peer with (not implemented yet).
    pub local_workload_selector: Option<String>,
}
