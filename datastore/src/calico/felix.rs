//! FelixConfiguration and HostEndpoint.

use super::policy::Port;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A protocol and port, as Felix's failsafe lists write them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProtoPort {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// Port number.
    pub port: u16,
    /// Restrict to this network (CIDR).
    pub net: Option<String>,
}

/// FelixConfiguration: node agent settings (name `default`, or `node.<node>` per node).
/// Only the fields tabby uses are typed; the rest are kept and reported as unsupported.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(derive = "PartialEq")]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "FelixConfiguration"
)]
#[kube(plural = "felixconfigurations")]
#[serde(rename_all = "camelCase")]
pub struct FelixConfigurationSpec {
    /// Prefix of workload interface names; default `cali`.
    pub interface_prefix: Option<String>,
    /// Ports always open towards a host endpoint.
    pub failsafe_inbound_host_ports: Option<Vec<ProtoPort>>,
    /// Ports always open from a host endpoint.
    pub failsafe_outbound_host_ports: Option<Vec<ProtoPort>>,
    /// `Drop`, `Accept` or `Return` for workload-to-host traffic.
    pub default_endpoint_to_host_action: Option<String>,
    /// Route protocol number of the routes Felix writes (tabby default 44).
    pub device_route_protocol: Option<u8>,
    /// IP-in-IP device MTU.
    #[serde(rename = "ipipMTU")]
    pub ipip_mtu: Option<u32>,
    /// Log level (tabby logs through `RUST_LOG`).
    pub log_severity_screen: Option<String>,
    /// Every other Felix setting, kept as written.
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

/// HostEndpoint: a node's own interface, for host policy.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(derive = "PartialEq")]
#[kube(group = "crd.projectcalico.org", version = "v1", kind = "HostEndpoint")]
#[kube(plural = "hostendpoints")]
#[serde(rename_all = "camelCase")]
pub struct HostEndpointSpec {
    /// The node.
    pub node: Option<String>,
    /// The interface, or `*` for all.
    pub interface_name: Option<String>,
    /// Addresses the endpoint has.
    #[serde(rename = "expectedIPs")]
    pub expected_ips: Option<Vec<String>>,
    /// Profiles applied.
    pub profiles: Option<Vec<String>>,
    /// Named ports.
    pub ports: Option<Vec<NamedPort>>,
}

/// A named port of a host endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NamedPort {
    /// Name.
    pub name: String,
    /// Protocol.
    pub protocol: Option<String>,
    /// Port.
    pub port: Port,
}
