//! IPPool and IPAMBlock.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An encapsulation mode (`ipipMode`, `vxlanMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EncapMode {
    /// No encapsulation.
    #[default]
    Never,
    /// Always encapsulate.
    Always,
    /// Encapsulate only towards nodes on another subnet.
    CrossSubnet,
}

/// IPPool: a range pod addresses come from, and how traffic to it travels.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(derive = "PartialEq")]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPPool",
    plural = "ippools"
)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolSpec {
    /// The pool's CIDR.
    pub cidr: String,
    /// IP-in-IP mode; default Never.
    pub ipip_mode: Option<EncapMode>,
    /// VXLAN mode; default Never (VXLAN is not implemented yet).
    pub vxlan_mode: Option<EncapMode>,
    /// Masquerade traffic leaving the pool (not implemented yet).
    pub nat_outgoing: Option<bool>,
    /// No new addresses from this pool.
    pub disabled: Option<bool>,
    /// Do not advertise the pool's blocks over BGP.
    #[serde(rename = "disableBGPExport")]
    pub disable_bgp_export: Option<bool>,
    /// Block size: default 26 (IPv4) or 122 (IPv6).
    pub block_size: Option<u8>,
    /// Nodes that may take blocks from this pool.
    pub node_selector: Option<String>,
    /// `Workload`, `Tunnel`, `LoadBalancer`.
    pub allowed_uses: Option<Vec<String>>,
    /// `Automatic` or `Manual`.
    pub assignment_mode: Option<String>,
    /// Deprecated form of ipipMode.
    pub ipip: Option<serde_json::Value>,
}

/// IPAMBlock: a block of a pool, usually affine to one node (`affinity: host:<node>`).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(derive = "PartialEq")]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPAMBlock",
    plural = "ipamblocks"
)]
#[serde(rename_all = "camelCase")]
pub struct IPAMBlockSpec {
    /// The block's CIDR.
    pub cidr: String,
    /// `host:<node>` for a node's block.
    pub affinity: Option<String>,
    /// Claim time of the affinity (not used).
    pub affinity_claim_time: Option<String>,
    /// Per address: index of its attribute, or null when free.
    #[serde(default)]
    pub allocations: Vec<Option<i64>>,
    /// Free ordinals.
    #[serde(default)]
    pub unallocated: Vec<i64>,
    /// Allocation attributes (handles and secondary data).
    #[serde(default)]
    pub attributes: Vec<serde_json::Value>,
    /// Strict affinity (not used).
    pub strict_affinity: Option<bool>,
    /// Marked for deletion.
    pub deleted: Option<bool>,
    /// Sequence number (not used).
    pub sequence_number: Option<u64>,
    /// Sequence numbers per allocation (not used).
    pub sequence_number_for_allocation: Option<serde_json::Value>,
}
