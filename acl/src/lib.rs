//! tabby-acl: network policy for the node agent.
//!
//! ```text
//!  Kubernetes NetworkPolicy ─┐
//!  Calico (Global)NetworkPolicy ─> model::Policy ─┐
//!  Pods, HostEndpoints ─> Endpoint ──────────────┼─> Compiler ─> Ruleset (IR + IP sets)
//!  Namespaces ─> labels ─────────────────────────┘                  │
//!                                  ┌────────────────────────────────┤
//!                         nft::NftApplier                 iptables::IptablesApplier
//!                 (table inet tabby, nft -f -)   (tabby-* chains, ipset + iptables-restore)
//! ```
//!
//! - [`model`]: one policy model (Calico's tier `default`), and the translations into it.
//! - [`Endpoint`]: pods and host endpoints, local or not.
//! - [`Compiler`]: pure and incremental; IP sets are named by what they hold, so membership
//!   changes never change rules.
//! - [`Ruleset`]: the IR both renderers consume, with an evaluator ([`Ruleset::verdict`]).
//! - [`nft`] and [`iptables`]: render, diff against what was applied, apply only the
//!   difference in one transaction; [`nft::Monitor`] notices when another tool touches our
//!   table so the agent can repair it.
//!
//! See `docs/policy.md` for what is supported and how it maps to the kernel.

#![warn(missing_docs)]

pub mod cidr;
mod compile;
mod endpoint;
pub mod exec;
pub mod iptables;
mod ir;
pub mod model;
pub mod nft;

pub use cidr::{Cidr, Family};
pub use compile::{chain_name, Compiler};
pub use endpoint::{Endpoint, EndpointKind, EndpointLabels, NamedPort, ORCHESTRATOR_LABEL};
pub use exec::{Exec, ExecError};
pub use ir::{
    AddrMatch, IrRule, IrSide, LocalEndpoint, Member, Packet, PolicyChain, Ruleset, SetDef, SetId,
    Settings, Verdict,
};
pub use model::{Action, Direction, Failsafe, ModelError, Policy};

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Whether anything was written.
    pub wrote: bool,
    /// Lines of the transaction(s) written.
    pub lines: usize,
    /// Chains in the applied ruleset.
    pub chains: usize,
    /// Sets in the applied ruleset.
    pub sets: usize,
    /// Set members in the applied ruleset.
    pub members: usize,
}

/// A dataplane backend: nftables or iptables.
pub trait Dataplane {
    /// Makes the kernel hold `rs`, writing only what differs from what it holds.
    fn apply(&mut self, rs: &Ruleset) -> Result<ApplyStats, ExecError>;
    /// Reads back what the kernel holds of ours and, if it differs from what was last
    /// applied (another tool edited it), rewrites the difference. True when it repaired.
    fn repair(&mut self) -> Result<bool, ExecError>;
}
