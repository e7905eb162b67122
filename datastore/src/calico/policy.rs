//! NetworkPolicy and GlobalNetworkPolicy (tier `default`), and their rules.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Action {
    /// Accept the packet.
    Allow,
    /// Drop the packet.
    Deny,
    /// Log the packet and go on.
    Log,
    /// Skip the rest of the tier.
    Pass,
}

/// Direction a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PolicyType {
    /// Traffic into the endpoint.
    Ingress,
    /// Traffic out of the endpoint.
    Egress,
}

/// A port, a range, or a named port (Calico's `numorstring.Port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Port {
    /// One port.
    Number(u16),
    /// An inclusive range `first:last`.
    Range(u16, u16),
    /// A named port of the destination (or source) endpoint.
    Named(String),
}

/// A protocol by name or number (Calico's `numorstring.Protocol`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A name: TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite (any case).
    Name(String),
    /// An IP protocol number, 1 to 255.
    Number(u8),
}

impl Protocol {
    /// The IP protocol number, if known.
    pub fn number(&self) -> Option<u8> {
        match self {
            Protocol::Number(n) => Some(*n),
            Protocol::Name(name) => match name.to_ascii_uppercase().as_str() {
                "TCP" => Some(6),
                "UDP" => Some(17),
                "ICMP" => Some(1),
                "ICMPV6" => Some(58),
                "SCTP" => Some(132),
                "UDPLITE" => Some(136),
                _ => None,
            },
        }
    }
}

fn int_or_string_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-int-or-string": true })
}

impl JsonSchema for Port {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Port".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        int_or_string_schema(g)
    }
}

impl JsonSchema for Protocol {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Protocol".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        int_or_string_schema(g)
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Number(n) => write!(f, "{n}"),
            Port::Range(a, b) => write!(f, "{a}:{b}"),
            Port::Named(n) => f.write_str(n),
        }
    }
}

impl std::str::FromStr for Port {
    type Err = String;

    fn from_str(s: &str) -> Result<Port, String> {
        let bad = |why: &str| format!("{s:?} is not a port: {why}");
        if let Some((a, b)) = s.split_once(':') {
            let a: u16 = a
                .trim()
                .parse()
                .map_err(|_| bad("range start is not 0-65535"))?;
            let b: u16 = b
                .trim()
                .parse()
                .map_err(|_| bad("range end is not 0-65535"))?;
            if a > b {
                return Err(bad("range start is after its end"));
            }
            return Ok(Port::Range(a, b));
        }
        if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
            return s.parse().map(Port::Number).map_err(|_| bad("not 0-65535"));
        }
        // Kubernetes IANA_SVC_NAME: 1-15 lower-case alphanumerics or '-', with a letter.
        let valid_name = !s.is_empty()
            && s.len() <= 15
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && s.chars().any(|c| c.is_ascii_lowercase())
            && !s.starts_with('-')
            && !s.ends_with('-');
        if valid_name {
            Ok(Port::Named(s.to_string()))
        } else {
            Err(bad("a name has 1 to 15 lower-case letters, digits or '-'"))
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Number(n) => s.serialize_u16(*n),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Port, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .map(Port::Number)
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a port (0-65535)"))),
            serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("{other} is not a port"))),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Number(n) => s.serialize_u8(*n),
            Protocol::Name(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        let bad = |what: String| {
            serde::de::Error::custom(format!(
                "{what} is not a protocol (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255)"
            ))
        };
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .filter(|n| *n > 0)
                .map(Protocol::Number)
                .ok_or_else(|| bad(n.to_string())),
            serde_json::Value::String(s) => {
                if let Ok(n) = s.parse::<u8>() {
                    if n > 0 {
                        return Ok(Protocol::Number(n));
                    }
                }
                let p = Protocol::Name(s.clone());
                p.number().map(|_| p).ok_or_else(|| bad(format!("{s:?}")))
            }
            other => Err(bad(other.to_string())),
        }
    }
}

/// ICMP type and code match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IcmpFields {
    /// ICMP type (0-254).
    #[serde(rename = "type")]
    pub icmp_type: Option<u8>,
    /// ICMP code (0-255); needs a type.
    pub code: Option<u8>,
}

/// The source or destination side of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntityRule {
    /// CIDRs the address is in.
    pub nets: Option<Vec<String>>,
    /// CIDRs the address is not in.
    pub not_nets: Option<Vec<String>>,
    /// Endpoints selected by labels.
    pub selector: Option<String>,
    /// Endpoints not selected.
    pub not_selector: Option<String>,
    /// Namespaces whose endpoints `selector` applies to.
    pub namespace_selector: Option<String>,
    /// Ports.
    pub ports: Option<Vec<Port>>,
    /// Ports excluded.
    pub not_ports: Option<Vec<Port>>,
    /// Service accounts (not implemented yet).
    pub service_accounts: Option<serde_json::Value>,
    /// Kubernetes services (not implemented yet).
    pub services: Option<serde_json::Value>,
}

/// A policy rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// What to do on a match.
    pub action: Action,
    /// 4 or 6: restrict to one IP version.
    pub ip_version: Option<u8>,
    /// Protocol.
    pub protocol: Option<Protocol>,
    /// Protocol excluded.
    pub not_protocol: Option<Protocol>,
    /// ICMP match.
    pub icmp: Option<IcmpFields>,
    /// ICMP excluded.
    #[serde(rename = "notICMP")]
    pub not_icmp: Option<IcmpFields>,
    /// Source.
    #[serde(default)]
    pub source: EntityRule,
    /// Destination.
    #[serde(default)]
    pub destination: EntityRule,
    /// HTTP match (not implemented).
    pub http: Option<serde_json::Value>,
    /// Annotations of the rule.
    pub metadata: Option<serde_json::Value>,
}

/// Calico NetworkPolicy (namespaced).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(derive = "PartialEq")]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "NetworkPolicy"
)]
#[kube(plural = "networkpolicies", namespaced)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Order; lower first. Unset means last.
    pub order: Option<f64>,
    /// Tier; only `default` is implemented.
    pub tier: Option<String>,
    /// Endpoints the policy applies to.
    pub selector: Option<String>,
    /// Service accounts the policy applies to (not implemented yet).
    pub service_account_selector: Option<String>,
    /// Directions; defaulted from the rules present.
    pub types: Option<Vec<PolicyType>>,
    /// Ingress rules.
    pub ingress: Option<Vec<Rule>>,
    /// Egress rules.
    pub egress: Option<Vec<Rule>>,
    /// Performance hints (ignored).
    pub performance_hints: Option<Vec<String>>,
}

/// Calico GlobalNetworkPolicy (cluster-wide).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(derive = "PartialEq")]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "GlobalNetworkPolicy"
)]
#[kube(plural = "globalnetworkpolicies")]
#[serde(rename_all = "camelCase")]
pub struct GlobalNetworkPolicySpec {
    /// Order; lower first. Unset means last.
    pub order: Option<f64>,
    /// Tier; only `default` is implemented.
    pub tier: Option<String>,
    /// Endpoints the policy applies to.
    pub selector: Option<String>,
    /// Namespaces whose endpoints it applies to.
    pub namespace_selector: Option<String>,
    /// Service accounts the policy applies to (not implemented yet).
    pub service_account_selector: Option<String>,
    /// Directions; defaulted from the rules present.
    pub types: Option<Vec<PolicyType>>,
    /// Ingress rules.
    pub ingress: Option<Vec<Rule>>,
    /// Egress rules.
    pub egress: Option<Vec<Rule>>,
    /// Untracked policy (not implemented yet).
    pub do_not_track: Option<bool>,
    /// Policy before DNAT (not implemented yet).
    #[serde(rename = "preDNAT")]
    pub pre_dnat: Option<bool>,
    /// Apply to forwarded traffic (not implemented yet).
    pub apply_on_forward: Option<bool>,
    /// Performance hints (ignored).
    pub performance_hints: Option<Vec<String>>,
}
