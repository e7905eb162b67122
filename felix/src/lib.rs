//! tabby-felix: the node agent.
//!
//! Data flows one way (shared/DESIGN.md §2): datastore events go into the [`calc`], which
//! keeps the node's desired state; managers turn that state into kernel state in batched,
//! ordered `apply()` calls: [`routes`] (pod routes, blackholes for own blocks, routes learned
//! over BGP; protocol 44) and [`interfaces`] (workload interface sysctls, `tunl0`). BGP best
//! paths flow back into the route manager; nothing else flows backwards.

pub mod agent;
pub mod bgp_sync;
pub mod calc;
pub mod interfaces;
pub mod learned;
pub mod metrics;
pub mod policy;
pub mod routes;
mod tasks;
