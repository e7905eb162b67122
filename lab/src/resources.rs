//! The lab's file datastore: the resources a real cluster would hold for the topology
//! (Calico's and Kubernetes' kinds, shared/DESIGN.md §3), rendered as YAML files.
//!
//! - `cluster.yaml`: `BGPConfiguration default` (the mesh is off when reflectors are used)
//!   and the IP pools.
//! - `nodes.yaml`: a Node per node and per standalone reflector, with Calico's annotations
//!   (BGP addresses, AS, reflector cluster ID) and `spec.podCIDRs`.
//! - `peers.yaml`: a BGPPeer per node and external peer address on the node's segment, and,
//!   with reflectors, Calico's "peer with route reflectors" BGPPeer.
//! - `pods.yaml`: the Pods, with `status.podIPs`, as the CNI plugin and kubelet leave them.
//! - `extra-*`: the topology's own resource files, copied unchanged.

use crate::topology::{Host, Lab, Role};
use serde_json::{json, Value};
use std::path::Path;

/// Label that makes a node (or standalone reflector) a peer of every node, as in Calico's
/// route reflector guide.
pub const REFLECTOR_LABEL: &str = "route-reflector";

/// A file of the datastore: its name and YAML text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// File name inside the datastore directory.
    pub name: String,
    /// Contents.
    pub text: String,
}

/// Why a resource file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// An extra resource file cannot be read.
    #[error("cannot read resource file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// An extra resource file is not YAML.
    #[error("resource file {path}, line {line}: {message}")]
    Yaml {
        /// The file.
        path: String,
        /// Line of the error.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// An object of an extra resource file is invalid.
    #[error("resource file {path}, document at line {line}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Line the document starts on.
        line: usize,
        /// The datastore's message, naming the object and field.
        message: String,
    },
    /// Rendering YAML failed (a bug).
    #[error("cannot render {0} as YAML: {1}")]
    Render(String, String),
}

fn yaml_stream(name: &str, docs: &[Value]) -> Result<File, ResourceError> {
    let mut text = format!("# Written by `tabby lab up`; {name}.\n");
    for d in docs {
        text.push_str("---\n");
        let y = serde_saphyr::to_string(d)
            .map_err(|e| ResourceError::Render(name.to_string(), e.to_string()))?;
        text.push_str(&y);
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    Ok(File {
        name: name.to_string(),
        text,
    })
}

/// The Node object of a node or standalone reflector.
fn node_object(lab: &Lab, h: &Host) -> Value {
    let iface = h.ifaces.first();
    let seg = iface.and_then(|i| lab.segments.get(i.segment));
    let mut annotations = serde_json::Map::new();
    if let (Some(a), Some(n)) = (iface.and_then(|i| i.v4), seg.and_then(|s| s.v4)) {
        annotations.insert(
            "projectcalico.org/IPv4Address".into(),
            json!(format!("{a}/{}", n.prefix_len())),
        );
    }
    if let (Some(a), Some(n)) = (iface.and_then(|i| i.v6), seg.and_then(|s| s.v6)) {
        annotations.insert(
            "projectcalico.org/IPv6Address".into(),
            json!(format!("{a}/{}", n.prefix_len())),
        );
    }
    let mut labels = serde_json::Map::new();
    let mut spec = json!({});
    match &h.role {
        Role::Node {
            as_number,
            labels: own,
            cluster_id,
            blocks,
        } => {
            for (k, v) in own {
                labels.insert(k.clone(), json!(v));
            }
            if let Some(asn) = as_number {
                annotations.insert("projectcalico.org/ASNumber".into(), json!(asn.to_string()));
            }
            if let Some(id) = cluster_id {
                annotations.insert(
                    "projectcalico.org/RouteReflectorClusterID".into(),
                    json!(id.to_string()),
                );
                labels.insert(REFLECTOR_LABEL.into(), json!("true"));
            }
            let cidrs: Vec<String> = blocks.iter().map(ToString::to_string).collect();
            spec = json!({ "podCIDRs": cidrs });
        }
        Role::Reflector { cluster_id } => {
            annotations.insert(
                "projectcalico.org/RouteReflectorClusterID".into(),
                json!(cluster_id.to_string()),
            );
            labels.insert(REFLECTOR_LABEL.into(), json!("true"));
        }
        Role::Peer { .. } => {}
    }
    labels.insert("kubernetes.io/hostname".into(), json!(h.name));
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": h.name, "labels": labels, "annotations": annotations },
        "spec": spec,
    })
}

/// Renders the datastore files for `lab` (without the extra resource files).
pub fn render(lab: &Lab) -> Result<Vec<File>, ResourceError> {
    let mut cluster = vec![json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "BGPConfiguration",
        "metadata": { "name": "default" },
        "spec": { "asNumber": lab.as_number, "nodeToNodeMeshEnabled": !lab.uses_reflectors() },
    })];
    for p in &lab.pools {
        let family = if p.cidr.is_ipv6() { "ipv6" } else { "ipv4" };
        let mut spec = json!({ "cidr": p.cidr.to_string(), "natOutgoing": false });
        // The lab's blocks are nodes' podCIDRs, often longer than Calico allows an IPAM
        // block to be (IPv4 20-32, IPv6 116-128); the pool then keeps Calico's default.
        let calico_range = if p.cidr.is_ipv6() { 116..=128 } else { 20..=32 };
        if calico_range.contains(&p.block_size) {
            spec["blockSize"] = json!(p.block_size);
        }
        if !p.cidr.is_ipv6() {
            spec["ipipMode"] = json!("Never");
            spec["vxlanMode"] = json!("Never");
        }
        cluster.push(json!({
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "IPPool",
            "metadata": { "name": format!("lab-{family}-{}", p.cidr.to_string().replace(['.', ':', '/'], "-").trim_matches('-')) },
            "spec": spec,
        }));
    }

    let nodes: Vec<Value> = lab
        .hosts
        .iter()
        .filter(|h| !h.is_peer())
        .map(|h| node_object(lab, h))
        .collect();

    let mut peers = Vec::new();
    for node in lab.nodes() {
        let Some(seg) = node.ifaces.first().map(|i| i.segment) else {
            continue;
        };
        for router in lab.hosts.iter() {
            let Role::Peer { as_number, .. } = router.role else {
                continue;
            };
            for i in router.ifaces.iter().filter(|i| i.segment == seg) {
                let addrs = [
                    (node.v4().and(i.v4).map(|a| a.to_string()), "v4"),
                    (node.v6().and(i.v6).map(|a| a.to_string()), "v6"),
                ];
                for (addr, family) in addrs {
                    let Some(addr) = addr else { continue };
                    peers.push(json!({
                        "apiVersion": "crd.projectcalico.org/v1",
                        "kind": "BGPPeer",
                        "metadata": { "name": format!("lab-{}-{}-{family}", node.name, router.name) },
                        "spec": { "node": node.name, "peerIP": addr, "asNumber": as_number },
                    }));
                }
            }
        }
    }
    if lab.uses_reflectors() {
        peers.push(json!({
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "BGPPeer",
            "metadata": { "name": "lab-peer-with-route-reflectors" },
            "spec": { "nodeSelector": "all()", "peerSelector": format!("{REFLECTOR_LABEL} == 'true'") },
        }));
    }

    let pods: Vec<Value> = lab
        .pods
        .iter()
        .map(|p| {
            let ips: Vec<Value> = p
                .ips()
                .iter()
                .map(|ip| json!({ "ip": ip.to_string() }))
                .collect();
            let ports: Vec<Value> = p
                .ports
                .iter()
                .map(|port| {
                    let mut v = json!({ "containerPort": port.port, "protocol": port.protocol });
                    if let Some(n) = &port.name {
                        v["name"] = json!(n);
                    }
                    v
                })
                .collect();
            let mut container = json!({ "name": "main", "image": "none" });
            if !ports.is_empty() {
                container["ports"] = json!(ports);
            }
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "name": p.name, "namespace": p.namespace, "labels": p.labels },
                "spec": { "nodeName": p.node, "containers": [container] },
                "status": {
                    "phase": "Running",
                    "podIP": p.ips().first().map(ToString::to_string),
                    "podIPs": ips,
                },
            })
        })
        .collect();

    let mut namespaces: Vec<&str> = lab.pods.iter().map(|p| p.namespace.as_str()).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let mut pod_docs: Vec<Value> = namespaces
        .iter()
        .map(|ns| {
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": { "name": ns, "labels": { "kubernetes.io/metadata.name": ns } },
            })
        })
        .collect();
    pod_docs.extend(pods);

    Ok(vec![
        yaml_stream("cluster.yaml", &cluster)?,
        yaml_stream("nodes.yaml", &nodes)?,
        yaml_stream("peers.yaml", &peers)?,
        yaml_stream("pods.yaml", &pod_docs)?,
    ])
}

/// Reads an extra resource file and checks every object in it as `tabby node` would, so a
/// mistake is reported before the lab is built rather than in a node's log.
pub fn check_extra(path: &Path) -> Result<String, ResourceError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ResourceError::Read {
        path: shown.clone(),
        source,
    })?;
    let docs = tabby_datastore::file::parse_file(&text, "default").map_err(|(line, message)| {
        ResourceError::Yaml {
            path: shown.clone(),
            line,
            message,
        }
    })?;
    for (line, doc) in docs {
        if let Err(e) = doc {
            return Err(ResourceError::Invalid {
                path: shown,
                line,
                message: e.to_string(),
            });
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::topology::Topology;

    fn default_lab() -> Lab {
        Topology::default_topology()
            .resolve("t", "built-in", Path::new("/"))
            .unwrap()
    }

    /// Every rendered document decodes and validates as the datastore would read it.
    #[test]
    fn rendered_resources_are_valid_datastore_objects() {
        for f in render(&default_lab()).unwrap() {
            let docs = tabby_datastore::file::parse_file(&f.text, "default")
                .unwrap_or_else(|e| panic!("{}: {e:?}\n{}", f.name, f.text));
            assert!(!docs.is_empty(), "{}", f.name);
            for (line, d) in docs {
                if let Err(e) = d {
                    panic!("{} line {line}: {e}\n{}", f.name, f.text);
                }
            }
        }
    }

    #[test]
    fn nodes_carry_calicos_address_annotations_and_pod_cidrs() {
        let files = render(&default_lab()).unwrap();
        let nodes = &files.iter().find(|f| f.name == "nodes.yaml").unwrap().text;
        assert!(
            nodes.contains("projectcalico.org/IPv4Address: 10.0.1.11/24"),
            "{nodes}"
        );
        assert!(nodes.contains("10.244.1.0/24"), "{nodes}");
    }

    #[test]
    fn each_node_peers_with_the_routers_of_its_segment_only() {
        let files = render(&default_lab()).unwrap();
        let peers = &files.iter().find(|f| f.name == "peers.yaml").unwrap().text;
        assert!(peers.contains("lab-node1-tor1-v4"), "{peers}");
        assert!(!peers.contains("lab-node1-tor2"), "{peers}");
    }

    #[test]
    fn an_invalid_extra_resource_is_refused_naming_the_field() {
        let dir = std::env::temp_dir().join(format!("tabby-lab-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.yaml");
        std::fs::write(
            &path,
            "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: nonsense}\n",
        )
        .unwrap();
        let e = check_extra(&path).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("bad.yaml") && e.contains("cidr"), "{e}");
    }
}
