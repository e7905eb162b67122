//! The kinds tabby reads, one typed object enum over them, and decoding of a document
//! (`apiVersion`, `kind`, `metadata`, `spec`) into it.

use crate::calico;
use crate::validate::{self, FieldError};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy as K8sNetworkPolicy;
use serde::de::DeserializeOwned;
use std::fmt;

/// A kind of resource tabby reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Kind {
    /// `v1 Node`.
    Node,
    /// `v1 Namespace`.
    Namespace,
    /// `v1 Pod`.
    Pod,
    /// `v1 Secret` (BGP passwords).
    Secret,
    /// `networking.k8s.io/v1 NetworkPolicy`.
    K8sNetworkPolicy,
    /// Calico `BGPConfiguration`.
    BGPConfiguration,
    /// Calico `BGPPeer`.
    BGPPeer,
    /// Calico `IPPool`.
    IPPool,
    /// Calico `IPAMBlock`.
    IPAMBlock,
    /// Calico `NetworkPolicy`.
    NetworkPolicy,
    /// Calico `GlobalNetworkPolicy`.
    GlobalNetworkPolicy,
    /// Calico `FelixConfiguration`.
    FelixConfiguration,
    /// Calico `HostEndpoint`.
    HostEndpoint,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 13] = [
        Kind::Node,
        Kind::Namespace,
        Kind::Pod,
        Kind::Secret,
        Kind::K8sNetworkPolicy,
        Kind::BGPConfiguration,
        Kind::BGPPeer,
        Kind::IPPool,
        Kind::IPAMBlock,
        Kind::NetworkPolicy,
        Kind::GlobalNetworkPolicy,
        Kind::FelixConfiguration,
        Kind::HostEndpoint,
    ];

    /// The `kind` field's value.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
            Kind::K8sNetworkPolicy | Kind::NetworkPolicy => "NetworkPolicy",
            Kind::BGPConfiguration => "BGPConfiguration",
            Kind::BGPPeer => "BGPPeer",
            Kind::IPPool => "IPPool",
            Kind::IPAMBlock => "IPAMBlock",
            Kind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            Kind::FelixConfiguration => "FelixConfiguration",
            Kind::HostEndpoint => "HostEndpoint",
        }
    }

    /// The `apiVersion` tabby's Kubernetes backend reads this kind with.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Node | Kind::Namespace | Kind::Pod | Kind::Secret => "v1",
            Kind::K8sNetworkPolicy => "networking.k8s.io/v1",
            _ => "crd.projectcalico.org/v1",
        }
    }

    /// True for kinds whose objects live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(
            self,
            Kind::Pod | Kind::Secret | Kind::K8sNetworkPolicy | Kind::NetworkPolicy
        )
    }

    /// The kind of a document's `apiVersion` and `kind`.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let calico = matches!(
            api_version,
            "crd.projectcalico.org/v1" | "projectcalico.org/v3"
        );
        Some(match (group, kind) {
            ("", "Node") if api_version == "v1" => Kind::Node,
            ("", "Namespace") if api_version == "v1" => Kind::Namespace,
            ("", "Pod") if api_version == "v1" => Kind::Pod,
            ("", "Secret") if api_version == "v1" => Kind::Secret,
            ("networking.k8s.io", "NetworkPolicy") if api_version == "networking.k8s.io/v1" => {
                Kind::K8sNetworkPolicy
            }
            (_, "NetworkPolicy") if calico => Kind::NetworkPolicy,
            (_, "BGPConfiguration") if calico => Kind::BGPConfiguration,
            (_, "BGPPeer") if calico => Kind::BGPPeer,
            (_, "IPPool") if calico => Kind::IPPool,
            (_, "IPAMBlock") if calico => Kind::IPAMBlock,
            (_, "GlobalNetworkPolicy") if calico => Kind::GlobalNetworkPolicy,
            (_, "FelixConfiguration") if calico => Kind::FelixConfiguration,
            (_, "HostEndpoint") if calico => Kind::HostEndpoint,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::K8sNetworkPolicy => f.write_str("NetworkPolicy.networking.k8s.io"),
            Kind::NetworkPolicy => f.write_str("NetworkPolicy.crd.projectcalico.org"),
            other => f.write_str(other.name()),
        }
    }
}

/// Identity of an object: kind, namespace (for namespaced kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Key {
    /// Kind.
    pub kind: Kind,
    /// Namespace; `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl Key {
    /// A key.
    pub fn new(kind: Kind, namespace: Option<&str>, name: &str) -> Key {
        Key {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A typed, validated object.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// `v1 Node`.
    Node(Node),
    /// `v1 Namespace`.
    Namespace(Namespace),
    /// `v1 Pod`.
    Pod(Pod),
    /// `v1 Secret`.
    Secret(Secret),
    /// `networking.k8s.io/v1 NetworkPolicy`.
    K8sNetworkPolicy(K8sNetworkPolicy),
    /// Calico `BGPConfiguration`.
    BGPConfiguration(calico::BGPConfiguration),
    /// Calico `BGPPeer`.
    BGPPeer(calico::BGPPeer),
    /// Calico `IPPool`.
    IPPool(calico::IPPool),
    /// Calico `IPAMBlock`.
    IPAMBlock(calico::IPAMBlock),
    /// Calico `NetworkPolicy`.
    NetworkPolicy(calico::NetworkPolicy),
    /// Calico `GlobalNetworkPolicy`.
    GlobalNetworkPolicy(calico::GlobalNetworkPolicy),
    /// Calico `FelixConfiguration`.
    FelixConfiguration(calico::FelixConfiguration),
    /// Calico `HostEndpoint`.
    HostEndpoint(calico::HostEndpoint),
}

/// Why a document could not become a [`Resource`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `apiVersion` or `kind` is missing.
    #[error("the document has no apiVersion and kind")]
    NoType,
    /// A kind tabby does not read.
    #[error("unknown kind {kind:?} of apiVersion {api_version:?}")]
    UnknownKind {
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
    },
    /// `metadata.name` is missing or empty.
    #[error("{kind} without metadata.name")]
    NoName {
        /// The kind.
        kind: Kind,
    },
    /// The object does not fit its type or a field is invalid.
    #[error("{key}: {error}")]
    Invalid {
        /// The object.
        key: Key,
        /// The field and what is wrong with it.
        error: FieldError,
    },
}

impl DecodeError {
    /// The object the error is about, when known.
    pub fn key(&self) -> Option<&Key> {
        match self {
            DecodeError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Removes unset (null) fields, so a dump shows what was written.
fn drop_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Parses one YAML document the way Kubernetes reads YAML: YAML 1.2 core booleans only, so
/// `name: n` or `value: on` stay strings (YAML 1.1 would make them booleans).
pub fn parse_yaml(text: &str) -> Result<serde_json::Value, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, serde_saphyr::options! { strict_booleans: true })
}

fn typed<T: DeserializeOwned>(key: &Key, doc: serde_json::Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(doc).map_err(|e| DecodeError::Invalid {
        key: key.clone(),
        error: FieldError::new(e.path().to_string(), e.inner().to_string()),
    })
}

impl Resource {
    /// Decodes and validates a document. `default_namespace` is used for namespaced kinds
    /// whose metadata names none (as `kubectl apply` does).
    pub fn from_document(
        doc: serde_json::Value,
        default_namespace: &str,
    ) -> Result<(Key, Resource), DecodeError> {
        let api_version = doc
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let kind_name = doc.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
        if api_version.is_empty() || kind_name.is_empty() {
            return Err(DecodeError::NoType);
        }
        let kind =
            Kind::from_type(api_version, kind_name).ok_or_else(|| DecodeError::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind_name.to_string(),
            })?;
        let meta = doc.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if name.is_empty() {
            return Err(DecodeError::NoName { kind });
        }
        let namespace = kind.namespaced().then(|| {
            meta.and_then(|m| m.get("namespace"))
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(default_namespace)
        });
        let key = Key::new(kind, namespace, name);
        let mut doc = doc;
        // Typed objects carry the version tabby reads them with, whichever group the file used.
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("apiVersion".into(), kind.api_version().into());
            if let (Some(ns), Some(meta)) = (&key.namespace, obj.get_mut("metadata")) {
                if let Some(meta) = meta.as_object_mut() {
                    meta.insert("namespace".into(), ns.clone().into());
                }
            }
        }
        let resource = match kind {
            Kind::Node => Resource::Node(typed(&key, doc)?),
            Kind::Namespace => Resource::Namespace(typed(&key, doc)?),
            Kind::Pod => Resource::Pod(typed(&key, doc)?),
            Kind::Secret => Resource::Secret(typed(&key, doc)?),
            Kind::K8sNetworkPolicy => Resource::K8sNetworkPolicy(typed(&key, doc)?),
            Kind::BGPConfiguration => Resource::BGPConfiguration(typed(&key, doc)?),
            Kind::BGPPeer => Resource::BGPPeer(typed(&key, doc)?),
            Kind::IPPool => Resource::IPPool(typed(&key, doc)?),
            Kind::IPAMBlock => Resource::IPAMBlock(typed(&key, doc)?),
            Kind::NetworkPolicy => Resource::NetworkPolicy(typed(&key, doc)?),
            Kind::GlobalNetworkPolicy => Resource::GlobalNetworkPolicy(typed(&key, doc)?),
            Kind::FelixConfiguration => Resource::FelixConfiguration(typed(&key, doc)?),
            Kind::HostEndpoint => Resource::HostEndpoint(typed(&key, doc)?),
        };
        validate::resource(&resource).map_err(|error| DecodeError::Invalid {
            key: key.clone(),
            error,
        })?;
        Ok((key, resource))
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Node(_) => Kind::Node,
            Resource::Namespace(_) => Kind::Namespace,
            Resource::Pod(_) => Kind::Pod,
            Resource::Secret(_) => Kind::Secret,
            Resource::K8sNetworkPolicy(_) => Kind::K8sNetworkPolicy,
            Resource::BGPConfiguration(_) => Kind::BGPConfiguration,
            Resource::BGPPeer(_) => Kind::BGPPeer,
            Resource::IPPool(_) => Kind::IPPool,
            Resource::IPAMBlock(_) => Kind::IPAMBlock,
            Resource::NetworkPolicy(_) => Kind::NetworkPolicy,
            Resource::GlobalNetworkPolicy(_) => Kind::GlobalNetworkPolicy,
            Resource::FelixConfiguration(_) => Kind::FelixConfiguration,
            Resource::HostEndpoint(_) => Kind::HostEndpoint,
        }
    }

    /// The object as a JSON document (for `tabby datastore dump`).
    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Resource::Node(o) => serde_json::to_value(o),
            Resource::Namespace(o) => serde_json::to_value(o),
            Resource::Pod(o) => serde_json::to_value(o),
            Resource::Secret(o) => {
                // Never print secret values.
                let mut redacted = o.clone();
                if let Some(data) = redacted.data.as_mut() {
                    data.values_mut().for_each(|v| v.0 = b"<redacted>".to_vec());
                }
                if let Some(data) = redacted.string_data.as_mut() {
                    data.values_mut().for_each(|v| *v = "<redacted>".into());
                }
                serde_json::to_value(redacted)
            }
            Resource::K8sNetworkPolicy(o) => serde_json::to_value(o),
            Resource::BGPConfiguration(o) => serde_json::to_value(o),
            Resource::BGPPeer(o) => serde_json::to_value(o),
            Resource::IPPool(o) => serde_json::to_value(o),
            Resource::IPAMBlock(o) => serde_json::to_value(o),
            Resource::NetworkPolicy(o) => serde_json::to_value(o),
            Resource::GlobalNetworkPolicy(o) => serde_json::to_value(o),
            Resource::FelixConfiguration(o) => serde_json::to_value(o),
            Resource::HostEndpoint(o) => serde_json::to_value(o),
        };
        let mut v = v.unwrap_or(serde_json::Value::Null);
        drop_nulls(&mut v);
        v
    }

    /// Fields set on the object that tabby does not implement yet (logged once by the agent).
    pub fn unsupported_fields(&self) -> Vec<&'static str> {
        validate::unsupported(self)
    }
}
