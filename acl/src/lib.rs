//! tabby-acl: network policy for the node agent.
//!
//! It will hold Calico's selector language, the policy model (Kubernetes and Calico policies),
//! the compiler to a rule IR with shared IP sets, and the nftables and iptables renderers and
//! appliers. Built by the acl issue.
