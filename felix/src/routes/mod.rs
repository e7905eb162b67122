//! The route manager: desired routes in, kernel routes (protocol 44) out.
//!
//! - [`reconcile`]: the sans-IO core. [`RouteTable`] (the desired set), [`KernelTable`] (a
//!   mirror of the kernel's main table), and [`reconcile()`](reconcile::reconcile), which
//!   turns their difference into an ordered [`Plan`] of deletions and replacements.
//! - [`netlink`]: the thin driver: kernel messages to and from those types; dumps; batched
//!   writes.
//! - [`manager`]: [`RouteManager`], the async handle and its task: event-driven drift repair
//!   from netlink notifications, deferred routes for interfaces that do not exist yet,
//!   counters, and a wait for the kernel to match.
//!
//! The kernel artifacts are those of shared/DESIGN.md §4:
//! - workload: `<ip>/32|/128 dev <iface> scope link proto 44`;
//! - own block: `blackhole <block> proto 44`;
//! - learned: `<block> via <gw> proto 44`, `nexthop via <a> nexthop via <b>` when several, and
//!   `via <gw> dev tunl0 onlink` over IP-in-IP (IPv4 only). A gateway that is not on a
//!   connected subnet is replaced by the gateways of the node's route to it (recursive next
//!   hop, [`reconcile::GatewayRoutes`]).
//!
//! Types shared with the calc live here.

use std::net::IpAddr;

pub mod manager;
pub mod netlink;
pub mod reconcile;

pub use manager::{RouteError, RouteManager, RouteManagerConfig, RouteStats, SyncState};
pub use reconcile::{Change, KernelRoute, KernelTable, Link, Links, Ownership, Plan, RouteTable};

/// The route protocol number every route tabby writes carries (shared/DESIGN.md §4).
pub const TABBY_PROTOCOL: u8 = 44;

/// A destination: an address and a prefix length (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dst {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

/// One next hop of a route learned over BGP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHop {
    /// The gateway (the peer node's address).
    pub gateway: IpAddr,
    /// Through the IP-in-IP device (`dev tunl0 onlink`) rather than the underlay.
    pub ipip: bool,
}

/// What a route does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A local workload: `dev <iface> scope link`.
    Workload {
        /// Host-side interface of the pod.
        iface: String,
    },
    /// One of the node's own blocks: `blackhole`, so addresses of the block not in use are
    /// not routed elsewhere.
    Blackhole,
    /// Learned over BGP: via one or more gateways (ECMP when several).
    Via(Vec<NextHop>),
}

/// A route tabby wants in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    /// Destination.
    pub dst: Dst,
    /// What it does.
    pub target: Target,
}
