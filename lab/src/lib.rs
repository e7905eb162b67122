//! tabby-lab: multi-node topologies built from network namespaces.
//!
//! It will build segments, nodes, pods, route reflectors and real external peers (BIRD, GoBGP)
//! on one machine, run a `tabby node` per node and report convergence and reachability.
//! Built by the lab issue.
