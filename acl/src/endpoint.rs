//! Endpoints: the pods (workloads) and host interfaces policy applies to and selects.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use tabby_datastore::calico;
use tabby_datastore::facts;
use tabby_selector::{Labels, Scope, NAMESPACE_LABEL, NAMESPACE_LABEL_PREFIX, NAME_LABEL};

use crate::model::proto;

/// The label Calico puts on every Kubernetes workload endpoint.
pub const ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";

/// What an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointKind {
    /// A pod: namespaced; without policy its namespace profile allows everything.
    Workload,
    /// A host interface (Calico `HostEndpoint`): global; without policy everything but the
    /// failsafe ports is dropped.
    Host,
}

/// A named port of an endpoint (a pod's container port with a name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPort {
    /// The name.
    pub name: String,
    /// IP protocol number (TCP, UDP or SCTP).
    pub protocol: u8,
    /// The port.
    pub port: u16,
}

/// An endpoint, local to this node or not: every endpoint of the cluster feeds the IP sets
/// that selectors become; only local ones (with an interface) get rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Workload or host.
    pub kind: EndpointKind,
    /// The pod's namespace (workloads only).
    pub namespace: Option<String>,
    /// The pod's or HostEndpoint's name.
    pub name: String,
    /// The interface on this node when the endpoint is local: the pod's host-side
    /// interface, or the host endpoint's `interfaceName`.
    pub iface: Option<String>,
    /// Its addresses.
    pub addrs: Vec<IpAddr>,
    /// Its own labels.
    pub labels: BTreeMap<String, String>,
    /// Its named ports.
    pub ports: Vec<NamedPort>,
}

impl Endpoint {
    /// The key the compiler knows it by: `<namespace>/<name>` for a pod, `hep/<name>` for a
    /// host endpoint.
    pub fn key(&self) -> String {
        match (&self.kind, &self.namespace) {
            (EndpointKind::Workload, Some(ns)) => format!("{ns}/{}", self.name),
            (EndpointKind::Workload, None) => format!("default/{}", self.name),
            (EndpointKind::Host, _) => format!("hep/{}", self.name),
        }
    }

    /// The endpoint of a pod, or `None` for host-network pods. `local_prefix` is the
    /// workload interface prefix when the pod runs on this node (its interface is then named
    /// by Calico's SHA-1 rule), `None` for pods elsewhere.
    pub fn from_pod(pod: &Pod, local_prefix: Option<&str>) -> Option<Endpoint> {
        let spec = pod.spec.as_ref()?;
        if spec.host_network == Some(true) {
            return None;
        }
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone()?;
        let mut ports = Vec::new();
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                let Some(pname) = p.name.clone() else {
                    continue;
                };
                let protocol = match p.protocol.as_deref() {
                    None | Some("TCP") => proto::TCP,
                    Some("UDP") => proto::UDP,
                    Some("SCTP") => proto::SCTP,
                    Some(_) => continue,
                };
                let Ok(port) = u16::try_from(p.container_port) else {
                    continue;
                };
                ports.push(NamedPort {
                    name: pname,
                    protocol,
                    port,
                });
            }
        }
        Some(Endpoint {
            kind: EndpointKind::Workload,
            iface: local_prefix.map(|p| facts::workload_interface(p, &namespace, &name)),
            namespace: Some(namespace),
            name,
            addrs: facts::pod_ips(pod),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ports,
        })
    }

    /// The endpoint of a HostEndpoint; `local` when its `node` is this node. Addresses are its
    /// `expectedIPs` (invalid ones skipped). An `interfaceName` of `*` (all interfaces) is not
    /// supported: the endpoint then only feeds selectors.
    pub fn from_host_endpoint(hep: &calico::HostEndpoint, local: bool) -> Endpoint {
        let s = &hep.spec;
        let iface = s
            .interface_name
            .clone()
            .filter(|i| local && !i.is_empty() && i != "*");
        let ports = s
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let protocol = match p
                    .protocol
                    .as_deref()
                    .map(str::to_ascii_uppercase)
                    .as_deref()
                {
                    None | Some("TCP") => proto::TCP,
                    Some("UDP") => proto::UDP,
                    Some("SCTP") => proto::SCTP,
                    Some(_) => return None,
                };
                match p.port {
                    calico::Port::Number(n) => Some(NamedPort {
                        name: p.name.clone(),
                        protocol,
                        port: n,
                    }),
                    _ => None,
                }
            })
            .collect();
        Endpoint {
            kind: EndpointKind::Host,
            namespace: None,
            name: hep.metadata.name.clone().unwrap_or_default(),
            iface,
            addrs: s
                .expected_ips
                .iter()
                .flatten()
                .filter_map(|a| a.parse().ok())
                .collect(),
            labels: hep.metadata.labels.clone().unwrap_or_default(),
            ports,
        }
    }

    /// The scope `global()` is evaluated in.
    pub fn scope(&self) -> Scope {
        match self.kind {
            EndpointKind::Workload => Scope::Namespaced,
            EndpointKind::Host => Scope::Global,
        }
    }

    /// The labels selectors see, as Felix presents them: the endpoint's own, then
    /// `projectcalico.org/namespace` and `projectcalico.org/orchestrator: k8s`, then its
    /// namespace's labels under `pcns.` (with `pcns.projectcalico.org/name`).
    pub fn labels_view<'a>(
        &'a self,
        namespace_labels: Option<&'a BTreeMap<String, String>>,
    ) -> EndpointLabels<'a> {
        EndpointLabels {
            ep: self,
            ns: namespace_labels,
        }
    }
}

/// The label view of [`Endpoint::labels_view`].
#[derive(Debug, Clone, Copy)]
pub struct EndpointLabels<'a> {
    ep: &'a Endpoint,
    ns: Option<&'a BTreeMap<String, String>>,
}

impl Labels for EndpointLabels<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if let Some(v) = self.ep.labels.get(key) {
            return Some(v);
        }
        let ns = self
            .ep
            .namespace
            .as_deref()
            .filter(|_| self.ep.kind == EndpointKind::Workload)?;
        if key == NAMESPACE_LABEL {
            return Some(ns);
        }
        if key == ORCHESTRATOR_LABEL {
            return Some("k8s");
        }
        let k = key.strip_prefix(NAMESPACE_LABEL_PREFIX)?;
        if k == NAME_LABEL {
            return Some(ns);
        }
        self.ns?.get(k).map(String::as_str)
    }
}
