//! Calico's resources, group `crd.projectcalico.org/v1` (the file backend also reads
//! `projectcalico.org/v3`), with Calico's field names and defaults (Calico API reference).
//!
//! Fields tabby does not implement yet are still typed, so that the objects users already
//! have deserialize; [`unsupported_fields`](crate::Resource::unsupported_fields) names the ones
//! set, and the agent logs them once.

mod bgp;
mod felix;
mod ipam;
mod policy;

pub use bgp::{
    BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, Community, PrefixAdvertisement,
    SecretKeyRef, SecretSource, ServiceCidr,
};
pub use felix::{
    FelixConfiguration, FelixConfigurationSpec, HostEndpoint, HostEndpointSpec, NamedPort,
    ProtoPort,
};
pub use ipam::{EncapMode, IPAMBlock, IPAMBlockSpec, IPPool, IPPoolSpec};
pub use policy::{
    Action, EntityRule, GlobalNetworkPolicy, GlobalNetworkPolicySpec, IcmpFields, NetworkPolicy,
    NetworkPolicySpec, PolicyType, Port, Protocol, Rule,
};

/// The CRD group Calico's Kubernetes datastore uses.
pub const GROUP: &str = "crd.projectcalico.org";
/// The projectcalico.org API group of `calicoctl` YAML, accepted by the file backend.
pub const GROUP_V3: &str = "projectcalico.org";
