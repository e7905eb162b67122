//! tabby-datastore: the resources tabby reads.
//!
//! It will hold the typed Kubernetes and Calico resources, their validation, and the file and
//! Kubernetes backends, which both produce one stream of typed updates with an in-sync marker.
//! Built by the datastore issue.
