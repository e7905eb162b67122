//! tabby-felix: the node agent.
//!
//! It will hold the calculation graph (datastore resources in, the node's desired state out) and
//! the dataplane managers that reconcile that state into the kernel: routes, workload interface
//! sysctls and policy (through `tabby-acl`), plus the health, metrics and status endpoints.
//! Built by the node-agent issue.
