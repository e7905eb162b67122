//! The one policy model every source is translated into: Calico's tier `default`.
//!
//! Kubernetes `NetworkPolicy`, Calico `NetworkPolicy` and `GlobalNetworkPolicy` all become a
//! [`Policy`]: an order, a selector over endpoint labels, and ingress and egress rule lists.
//! The translation follows Calico's (libcalico-go `converters/networkpolicy.go` and
//! `updateprocessors/rules.go`):
//!
//! - a Kubernetes policy has order 1000 and applies to the pods of its namespace selected by
//!   `podSelector`; `policyTypes` defaults to `Ingress`, plus `Egress` when egress rules exist;
//! - each peer of a Kubernetes rule, crossed with each port, is one Allow rule; a port without
//!   protocol is TCP; `endPort` makes a range; `ipBlock.except` becomes `notNets`;
//! - a rule `selector` in a namespaced policy selects in the policy's namespace unless a
//!   `namespaceSelector` is given; a `namespaceSelector` is rewritten over the `pcns.` labels
//!   every pod carries (see [`tabby_selector::Labels`]).
//!
//! Selectors here are evaluated against endpoint labels as Calico presents them; see
//! [`crate::Endpoint::labels_view`].

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tabby_datastore::calico;
use tabby_selector::{Expr, Selector, NAMESPACE_LABEL};

use crate::cidr::{Cidr, Family};

/// The order Calico gives every Kubernetes NetworkPolicy.
pub const K8S_POLICY_ORDER: f64 = 1000.0;
/// IP protocol numbers.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// A policy that cannot be translated; the policy is skipped (and reported) as a whole,
/// because dropping one rule could open what a later rule denies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A selector does not parse or cannot be expressed.
    #[error("{policy}: {field}: invalid selector: {reason}")]
    Selector {
        /// The policy.
        policy: String,
        /// The field, e.g. `spec.ingress[0].source.selector`.
        field: String,
        /// Why.
        reason: String,
    },
    /// A CIDR does not parse.
    #[error("{policy}: {field}: {source}")]
    Cidr {
        /// The policy.
        policy: String,
        /// The field.
        field: String,
        /// The parse error.
        source: crate::cidr::CidrError,
    },
    /// Some other value is out of range or unknown.
    #[error("{policy}: {field}: {reason}")]
    Invalid {
        /// The policy.
        policy: String,
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The policy uses something tabby does not implement in a way that would change its
    /// meaning if ignored.
    #[error("{policy}: {field}: not supported: {reason}")]
    Unsupported {
        /// The policy.
        policy: String,
        /// The field.
        field: String,
        /// What.
        reason: String,
    },
}

/// A direction, from the point of view of the endpoint the policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Traffic to the endpoint.
    Ingress,
    /// Traffic from the endpoint.
    Egress,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Accept.
    Allow,
    /// Drop.
    Deny,
    /// Skip the rest of the tier: go to the endpoint's profiles (for a pod, its namespace's
    /// profile, which allows; for a host endpoint, none, which drops).
    Pass,
    /// Log and go on with the next rule.
    Log,
}

/// A port match: an inclusive range (a single port is `n..=n`), or a named port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortMatch {
    /// `first..=last`.
    Range(u16, u16),
    /// A named port of the endpoints the side selects.
    Named(String),
}

/// An ICMP type and optional code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Icmp {
    /// Type.
    pub icmp_type: u8,
    /// Code.
    pub code: Option<u8>,
}

/// One side (source or destination) of a rule. Empty fields do not constrain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Entity {
    /// The address is in one of these.
    pub nets: Vec<Cidr>,
    /// The address is in none of these.
    pub not_nets: Vec<Cidr>,
    /// The address belongs to an endpoint matching this (namespace already folded in).
    pub selector: Option<Selector>,
    /// The address belongs to no endpoint matching this.
    pub not_selector: Option<Selector>,
    /// The port is one of these.
    pub ports: Vec<PortMatch>,
    /// The port is none of these.
    pub not_ports: Vec<PortMatch>,
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// What a match does.
    pub action: Action,
    /// Only this family.
    pub ip_version: Option<Family>,
    /// IP protocol number.
    pub protocol: Option<u8>,
    /// Not this IP protocol.
    pub not_protocol: Option<u8>,
    /// ICMP type/code (with protocol ICMP or ICMPv6).
    pub icmp: Option<Icmp>,
    /// Not this ICMP type/code.
    pub not_icmp: Option<Icmp>,
    /// Source.
    pub source: Entity,
    /// Destination.
    pub destination: Entity,
}

impl Rule {
    /// A rule matching everything.
    pub fn any(action: Action) -> Rule {
        Rule {
            action,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: Entity::default(),
            destination: Entity::default(),
        }
    }
}

/// A policy in tier `default`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// A unique name, Calico style: `knp.default.<ns>/<name>` for Kubernetes policies,
    /// `default.<ns>/<name>` for Calico NetworkPolicy, `default.<name>` for
    /// GlobalNetworkPolicy. Names order policies of equal order.
    pub name: String,
    /// Lower first; `None` is after every ordered policy.
    pub order: Option<f64>,
    /// The endpoints it applies to (namespace already folded in).
    pub selector: Selector,
    /// Ingress rules, when the policy applies to ingress (`Some(vec![])` denies all).
    pub ingress: Option<Vec<Rule>>,
    /// Egress rules, when the policy applies to egress.
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    /// The name [`from_k8s`](Self::from_k8s) gives Kubernetes policy `ns/name` (the key to
    /// remove it by).
    pub fn k8s_name(namespace: &str, name: &str) -> String {
        format!("knp.default.{namespace}/{name}")
    }

    /// The name [`from_calico`](Self::from_calico) gives Calico NetworkPolicy `ns/name`.
    pub fn calico_name(namespace: &str, name: &str) -> String {
        format!("default.{namespace}/{name}")
    }

    /// The name [`from_calico_global`](Self::from_calico_global) gives GlobalNetworkPolicy
    /// `name`.
    pub fn global_name(name: &str) -> String {
        format!("default.{name}")
    }

    /// The rules for one direction, if the policy applies to it.
    pub fn rules(&self, dir: Direction) -> Option<&[Rule]> {
        match dir {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Calico's policy order: by order (unset last), then by name.
    pub fn cmp_order(&self, other: &Policy) -> std::cmp::Ordering {
        let key = |p: &Policy| p.order.unwrap_or(f64::INFINITY);
        key(self)
            .total_cmp(&key(other))
            .then_with(|| self.name.cmp(&other.name))
    }

    /// Translates a Kubernetes NetworkPolicy.
    pub fn from_k8s(np: &k8s::NetworkPolicy) -> Result<Policy, ModelError> {
        let ns = np.metadata.namespace.as_deref().unwrap_or("default");
        let name = Policy::k8s_name(ns, np.metadata.name.as_deref().unwrap_or_default());
        let cx = Cx {
            policy: &name,
            namespace: Some(ns),
        };
        let empty = k8s::NetworkPolicySpec::default();
        let spec = np.spec.as_ref().unwrap_or(&empty);
        let pod_sel = cx.label_selector(spec.pod_selector.as_ref(), "spec.podSelector")?;
        // Calico adds `projectcalico.org/orchestrator == 'k8s'`; every endpoint tabby knows in
        // a namespace is a pod, so the namespace is enough.
        let selector = cx.in_namespace(pod_sel, "spec.podSelector")?;
        let types: Vec<&str> = match &spec.policy_types {
            Some(t) if !t.is_empty() => t.iter().map(String::as_str).collect(),
            // Kubernetes defaulting: Ingress always; Egress when there are egress rules.
            _ if spec.egress.is_some() => vec!["Ingress", "Egress"],
            _ => vec!["Ingress"],
        };
        let mut policy = Policy {
            name: name.clone(),
            order: Some(K8S_POLICY_ORDER),
            selector,
            ingress: None,
            egress: None,
        };
        for t in types {
            match t {
                "Ingress" => {
                    let mut rules = Vec::new();
                    for (i, r) in spec.ingress.iter().flatten().enumerate() {
                        let field = format!("spec.ingress[{i}]");
                        rules.extend(cx.k8s_rule(
                            Direction::Ingress,
                            r.from.as_deref(),
                            r.ports.as_deref(),
                            &field,
                        )?);
                    }
                    policy.ingress = Some(rules);
                }
                "Egress" => {
                    let mut rules = Vec::new();
                    for (i, r) in spec.egress.iter().flatten().enumerate() {
                        let field = format!("spec.egress[{i}]");
                        rules.extend(cx.k8s_rule(
                            Direction::Egress,
                            r.to.as_deref(),
                            r.ports.as_deref(),
                            &field,
                        )?);
                    }
                    policy.egress = Some(rules);
                }
                other => return Err(cx.invalid("spec.policyTypes", format!("{other:?}"))),
            }
        }
        Ok(policy)
    }

    /// Translates a Calico NetworkPolicy (namespaced).
    pub fn from_calico(np: &calico::NetworkPolicy) -> Result<Policy, ModelError> {
        let ns = np.metadata.namespace.as_deref().unwrap_or("default");
        let name = Policy::calico_name(ns, np.metadata.name.as_deref().unwrap_or_default());
        let cx = Cx {
            policy: &name,
            namespace: Some(ns),
        };
        let s = &np.spec;
        cx.check_tier(s.tier.as_deref())?;
        if s.service_account_selector
            .as_deref()
            .is_some_and(|x| !x.trim().is_empty())
        {
            return Err(cx.unsupported("spec.serviceAccountSelector", "service accounts"));
        }
        let sel = cx.parse(s.selector.as_deref(), "spec.selector")?;
        let selector = cx.in_namespace(sel, "spec.selector")?;
        cx.calico_policy(
            name.clone(),
            s.order,
            selector,
            s.types.as_deref(),
            s.ingress.as_deref(),
            s.egress.as_deref(),
        )
    }

    /// Translates a Calico GlobalNetworkPolicy.
    pub fn from_calico_global(gnp: &calico::GlobalNetworkPolicy) -> Result<Policy, ModelError> {
        let name = Policy::global_name(gnp.metadata.name.as_deref().unwrap_or_default());
        let cx = Cx {
            policy: &name,
            namespace: None,
        };
        let s = &gnp.spec;
        cx.check_tier(s.tier.as_deref())?;
        if s.service_account_selector
            .as_deref()
            .is_some_and(|x| !x.trim().is_empty())
        {
            return Err(cx.unsupported("spec.serviceAccountSelector", "service accounts"));
        }
        for (flag, field) in [
            (s.do_not_track, "spec.doNotTrack"),
            (s.pre_dnat, "spec.preDNAT"),
            (s.apply_on_forward, "spec.applyOnForward"),
        ] {
            if flag == Some(true) {
                return Err(cx.unsupported(field, "only normal (tracked, post-DNAT) policy"));
            }
        }
        let mut selector = cx.parse(s.selector.as_deref(), "spec.selector")?;
        if let Some(text) = s
            .namespace_selector
            .as_deref()
            .filter(|t| !t.trim().is_empty())
        {
            let nss = cx.parse(Some(text), "spec.namespaceSelector")?;
            selector = cx.and(
                vec![nss.namespace_selector_for_endpoints(), selector],
                "spec.namespaceSelector",
            )?;
        }
        cx.calico_policy(
            name.clone(),
            s.order,
            selector,
            s.types.as_deref(),
            s.ingress.as_deref(),
            s.egress.as_deref(),
        )
    }
}

/// Translation context: the policy's name (for errors) and namespace (for selectors).
struct Cx<'a> {
    policy: &'a str,
    namespace: Option<&'a str>,
}

impl Cx<'_> {
    fn invalid(&self, field: &str, reason: impl Into<String>) -> ModelError {
        ModelError::Invalid {
            policy: self.policy.to_owned(),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    fn unsupported(&self, field: &str, reason: impl Into<String>) -> ModelError {
        ModelError::Unsupported {
            policy: self.policy.to_owned(),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    fn selector_error(&self, field: &str, reason: impl ToString) -> ModelError {
        ModelError::Selector {
            policy: self.policy.to_owned(),
            field: field.to_owned(),
            reason: reason.to_string(),
        }
    }

    fn check_tier(&self, tier: Option<&str>) -> Result<(), ModelError> {
        match tier {
            None | Some("") | Some("default") => Ok(()),
            Some(t) => Err(self.unsupported("spec.tier", format!("tier {t:?} (only default)"))),
        }
    }

    fn parse(&self, text: Option<&str>, field: &str) -> Result<Selector, ModelError> {
        Selector::parse(text.unwrap_or("")).map_err(|e| self.selector_error(field, e))
    }

    fn and(&self, parts: Vec<Selector>, field: &str) -> Result<Selector, ModelError> {
        let mut ops: Vec<Expr> = parts
            .into_iter()
            .filter(|s| !s.is_all())
            .map(Selector::into_expr)
            .collect();
        let expr = match ops.len() {
            0 => Expr::All,
            1 => ops.remove(0),
            _ => Expr::And(ops),
        };
        Selector::new(expr).map_err(|e| self.selector_error(field, e))
    }

    fn namespace_eq(&self, ns: &str, field: &str) -> Result<Selector, ModelError> {
        // Never fall back to `all()` here: that would widen the policy to every namespace.
        Selector::new(Expr::Eq {
            key: NAMESPACE_LABEL.to_owned(),
            value: ns.to_owned(),
        })
        .map_err(|e| self.selector_error(field, e))
    }

    /// `sel` restricted to the policy's namespace, if it has one.
    fn in_namespace(&self, sel: Selector, field: &str) -> Result<Selector, ModelError> {
        match self.namespace {
            Some(ns) => self.and(vec![self.namespace_eq(ns, field)?, sel], field),
            None => Ok(sel),
        }
    }

    /// A Kubernetes label selector as a Calico selector; `None` is `all()`.
    fn label_selector(
        &self,
        ls: Option<&LabelSelector>,
        field: &str,
    ) -> Result<Selector, ModelError> {
        let Some(ls) = ls else {
            return Ok(Selector::all());
        };
        let mut ops = Vec::new();
        for (k, v) in ls.match_labels.iter().flatten() {
            ops.push(Expr::Eq {
                key: k.clone(),
                value: v.clone(),
            });
        }
        for (i, e) in ls.match_expressions.iter().flatten().enumerate() {
            let values = || e.values.iter().flatten().cloned().collect();
            let key = e.key.clone();
            ops.push(match e.operator.as_str() {
                "In" => Expr::In {
                    key,
                    values: values(),
                },
                "NotIn" => Expr::NotIn {
                    key,
                    values: values(),
                },
                "Exists" => Expr::Has(key),
                "DoesNotExist" => Expr::Not(Box::new(Expr::Has(key))),
                other => {
                    return Err(self.invalid(
                        &format!("{field}.matchExpressions[{i}].operator"),
                        format!("{other:?} (expected In, NotIn, Exists or DoesNotExist)"),
                    ))
                }
            });
        }
        let parts = ops
            .into_iter()
            .map(|e| Selector::new(e).map_err(|err| self.selector_error(field, err)))
            .collect::<Result<Vec<_>, _>>()?;
        self.and(parts, field)
    }

    fn cidr(&self, text: &str, field: &str) -> Result<Cidr, ModelError> {
        text.parse().map_err(|source| ModelError::Cidr {
            policy: self.policy.to_owned(),
            field: field.to_owned(),
            source,
        })
    }

    /// The rules of one Kubernetes ingress or egress rule: peers × protocol groups of ports.
    fn k8s_rule(
        &self,
        dir: Direction,
        peers: Option<&[k8s::NetworkPolicyPeer]>,
        ports: Option<&[k8s::NetworkPolicyPort]>,
        field: &str,
    ) -> Result<Vec<Rule>, ModelError> {
        // An empty or absent `from`/`to` matches every peer.
        let mut peer_entities = Vec::new();
        match peers {
            None | Some([]) => peer_entities.push(Entity::default()),
            Some(list) => {
                for (i, p) in list.iter().enumerate() {
                    let f = format!(
                        "{field}.{}[{i}]",
                        if dir == Direction::Ingress {
                            "from"
                        } else {
                            "to"
                        }
                    );
                    peer_entities.push(self.k8s_peer(p, &f)?);
                }
            }
        }
        // Ports grouped by protocol, in first-seen order; `None`: every port of it.
        let mut groups: Vec<(u8, Option<Vec<PortMatch>>)> = Vec::new();
        for (i, p) in ports.unwrap_or_default().iter().enumerate() {
            let f = format!("{field}.ports[{i}]");
            let protocol = match p.protocol.as_deref() {
                None | Some("TCP") => proto::TCP,
                Some("UDP") => proto::UDP,
                Some("SCTP") => proto::SCTP,
                Some(other) => {
                    return Err(self.invalid(&format!("{f}.protocol"), format!("{other:?}")))
                }
            };
            let port = match (&p.port, p.end_port) {
                (None, _) => None,
                (Some(IntOrString::Int(n)), end) => {
                    let first = u16::try_from(*n)
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| self.invalid(&format!("{f}.port"), format!("{n}")))?;
                    let last = match end {
                        None => first,
                        Some(e) => {
                            u16::try_from(e)
                                .ok()
                                .filter(|e| *e >= first)
                                .ok_or_else(|| {
                                    self.invalid(
                                        &format!("{f}.endPort"),
                                        format!("{e} < port {first}"),
                                    )
                                })?
                        }
                    };
                    Some(PortMatch::Range(first, last))
                }
                (Some(IntOrString::String(s)), None) => match s.parse::<u16>() {
                    Ok(n) if n > 0 => Some(PortMatch::Range(n, n)),
                    _ => Some(PortMatch::Named(s.clone())),
                },
                (Some(IntOrString::String(_)), Some(_)) => {
                    return Err(
                        self.invalid(&format!("{f}.endPort"), "endPort needs a numeric port")
                    )
                }
            };
            match groups.iter_mut().find(|g| g.0 == protocol) {
                Some(g) => match (port, &mut g.1) {
                    (None, slot) => *slot = None,
                    (Some(p), Some(list)) => list.push(p),
                    (Some(_), None) => {}
                },
                None => groups.push((protocol, port.map(|p| vec![p]))),
            }
        }
        let mut rules = Vec::new();
        for peer in &peer_entities {
            let base = |protocol: Option<u8>, ports: Vec<PortMatch>| {
                let mut r = Rule::any(Action::Allow);
                r.protocol = protocol;
                match dir {
                    Direction::Ingress => r.source = peer.clone(),
                    Direction::Egress => r.destination = peer.clone(),
                }
                r.destination.ports = ports;
                r
            };
            if groups.is_empty() {
                rules.push(base(None, Vec::new()));
            }
            for (protocol, ports) in &groups {
                rules.push(base(Some(*protocol), ports.clone().unwrap_or_default()));
            }
        }
        Ok(rules)
    }

    fn k8s_peer(&self, p: &k8s::NetworkPolicyPeer, field: &str) -> Result<Entity, ModelError> {
        let mut e = Entity::default();
        if let Some(ip) = &p.ip_block {
            e.nets = vec![self.cidr(&ip.cidr, &format!("{field}.ipBlock.cidr"))?];
            for (i, x) in ip.except.iter().flatten().enumerate() {
                e.not_nets
                    .push(self.cidr(x, &format!("{field}.ipBlock.except[{i}]"))?);
            }
            return Ok(e);
        }
        let pods = self.label_selector(p.pod_selector.as_ref(), &format!("{field}.podSelector"))?;
        let sel = match &p.namespace_selector {
            Some(nss) => {
                let f = format!("{field}.namespaceSelector");
                let nss = self.label_selector(Some(nss), &f)?;
                self.and(vec![nss.namespace_selector_for_endpoints(), pods], &f)?
            }
            None => self.in_namespace(pods, &format!("{field}.podSelector"))?,
        };
        e.selector = Some(sel);
        Ok(e)
    }

    fn calico_policy(
        &self,
        name: String,
        order: Option<f64>,
        selector: Selector,
        types: Option<&[calico::PolicyType]>,
        ingress: Option<&[calico::Rule]>,
        egress: Option<&[calico::Rule]>,
    ) -> Result<Policy, ModelError> {
        let has_in = ingress.is_some_and(|r| !r.is_empty());
        let has_eg = egress.is_some_and(|r| !r.is_empty());
        // Calico's defaulting: Ingress when there are ingress rules or no rules at all;
        // Egress when there are egress rules.
        let (do_in, do_eg) = match types {
            Some(t) if !t.is_empty() => (
                t.contains(&calico::PolicyType::Ingress),
                t.contains(&calico::PolicyType::Egress),
            ),
            _ => (has_in || !has_eg, has_eg),
        };
        let convert = |rules: Option<&[calico::Rule]>, what: &str| {
            rules
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, r)| self.calico_rule(r, &format!("spec.{what}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Policy {
            name,
            order,
            selector,
            ingress: if do_in {
                Some(convert(ingress, "ingress")?)
            } else {
                None
            },
            egress: if do_eg {
                Some(convert(egress, "egress")?)
            } else {
                None
            },
        })
    }

    fn calico_rule(&self, r: &calico::Rule, field: &str) -> Result<Rule, ModelError> {
        let protocol = |p: &Option<calico::Protocol>, f: &str| {
            p.as_ref()
                .map(|p| {
                    p.number()
                        .ok_or_else(|| self.invalid(&format!("{field}.{f}"), format!("{p:?}")))
                })
                .transpose()
        };
        let icmp = |i: &Option<calico::IcmpFields>| {
            i.as_ref().and_then(|i| {
                i.icmp_type.map(|t| Icmp {
                    icmp_type: t,
                    code: i.code,
                })
            })
        };
        if r.http.is_some() {
            return Err(self.unsupported(&format!("{field}.http"), "HTTP match"));
        }
        let ip_version = match r.ip_version {
            None => None,
            Some(4) => Some(Family::V4),
            Some(6) => Some(Family::V6),
            Some(v) => return Err(self.invalid(&format!("{field}.ipVersion"), format!("{v}"))),
        };
        let rule = Rule {
            action: match r.action {
                calico::Action::Allow => Action::Allow,
                calico::Action::Deny => Action::Deny,
                calico::Action::Pass => Action::Pass,
                calico::Action::Log => Action::Log,
            },
            ip_version,
            protocol: protocol(&r.protocol, "protocol")?,
            not_protocol: protocol(&r.not_protocol, "notProtocol")?,
            icmp: icmp(&r.icmp),
            not_icmp: icmp(&r.not_icmp),
            source: self.calico_entity(&r.source, &format!("{field}.source"))?,
            destination: self.calico_entity(&r.destination, &format!("{field}.destination"))?,
        };
        let has_ports = |e: &Entity| !e.ports.is_empty() || !e.not_ports.is_empty();
        if (has_ports(&rule.source) || has_ports(&rule.destination))
            && !matches!(rule.protocol, Some(proto::TCP | proto::UDP | proto::SCTP))
        {
            return Err(self.invalid(
                &format!("{field}.protocol"),
                "ports need protocol TCP, UDP or SCTP",
            ));
        }
        Ok(rule)
    }

    fn calico_entity(&self, e: &calico::EntityRule, field: &str) -> Result<Entity, ModelError> {
        if e.service_accounts.is_some() || e.services.is_some() {
            return Err(self.unsupported(field, "serviceAccounts and services"));
        }
        let nets = |list: &Option<Vec<String>>, f: &str| {
            list.iter()
                .flatten()
                .enumerate()
                .map(|(i, n)| self.cidr(n, &format!("{field}.{f}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
        };
        let ports = |list: &Option<Vec<calico::Port>>| {
            list.iter()
                .flatten()
                .map(|p| match p {
                    calico::Port::Number(n) => PortMatch::Range(*n, *n),
                    calico::Port::Range(a, b) => PortMatch::Range(*a, *b),
                    calico::Port::Named(n) => PortMatch::Named(n.clone()),
                })
                .collect::<Vec<_>>()
        };
        let nonempty = |t: &Option<String>| {
            t.as_deref()
                .filter(|t| !t.trim().is_empty())
                .map(str::to_owned)
        };
        let sel = nonempty(&e.selector);
        let not_sel = nonempty(&e.not_selector);
        let nss = nonempty(&e.namespace_selector);
        let parsed = |t: &Option<String>, f: &str| {
            t.as_deref()
                .map(|t| self.parse(Some(t), &format!("{field}.{f}")))
                .transpose()
        };
        let sel_p = parsed(&sel, "selector")?;
        let selector = match (parsed(&nss, "namespaceSelector")?, sel_p) {
            (Some(n), s) => Some(self.and(
                vec![n.namespace_selector_for_endpoints(), s.unwrap_or_default()],
                &format!("{field}.namespaceSelector"),
            )?),
            // In a namespaced policy a selector (or notSelector) selects in its namespace.
            (None, s) if self.namespace.is_some() && (s.is_some() || not_sel.is_some()) => {
                Some(self.in_namespace(s.unwrap_or_default(), &format!("{field}.selector"))?)
            }
            (None, s) => s,
        };
        Ok(Entity {
            nets: nets(&e.nets, "nets")?,
            not_nets: nets(&e.not_nets, "notNets")?,
            selector,
            not_selector: parsed(&not_sel, "notSelector")?,
            ports: ports(&e.ports),
            not_ports: ports(&e.not_ports),
        })
    }
}

/// Ports always open to and from a host endpoint, whatever its policy (Felix's
/// `failsafeInboundHostPorts` / `failsafeOutboundHostPorts`), so that a bad policy never
/// locks the node out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failsafe {
    /// (protocol, destination port) accepted towards the host.
    pub inbound: Vec<(u8, u16)>,
    /// (protocol, destination port) accepted from the host.
    pub outbound: Vec<(u8, u16)>,
}

impl Default for Failsafe {
    /// Felix's defaults (`config_params.go`): inbound tcp:22, udp:68, tcp:179, tcp:2379,
    /// tcp:2380, tcp:5473, tcp:6443, tcp:6666, tcp:6667; outbound udp:53, udp:67, tcp:179,
    /// tcp:2379, tcp:2380, tcp:5473, tcp:6443, tcp:6666, tcp:6667.
    fn default() -> Self {
        use proto::{TCP, UDP};
        let common = [179, 2379, 2380, 5473, 6443, 6666, 6667].map(|p| (TCP, p));
        let mut inbound = vec![(TCP, 22), (UDP, 68)];
        inbound.extend(common);
        let mut outbound = vec![(UDP, 53), (UDP, 67)];
        outbound.extend(common);
        Failsafe { inbound, outbound }
    }
}

impl Failsafe {
    /// The lists of a FelixConfiguration, each defaulting to Felix's when unset; entries
    /// with a `net` or an unknown protocol are skipped (not implemented).
    pub fn from_felix_configuration(spec: &calico::FelixConfigurationSpec) -> Failsafe {
        let d = Failsafe::default();
        let conv = |l: &Option<Vec<calico::ProtoPort>>, dflt: Vec<(u8, u16)>| match l {
            None => dflt,
            Some(list) => list
                .iter()
                .filter(|p| p.net.is_none())
                .filter_map(|p| {
                    let n = match p.protocol.to_ascii_uppercase().as_str() {
                        "TCP" => proto::TCP,
                        "UDP" => proto::UDP,
                        "SCTP" => proto::SCTP,
                        _ => return None,
                    };
                    Some((n, p.port))
                })
                .collect(),
        };
        Failsafe {
            inbound: conv(&spec.failsafe_inbound_host_ports, d.inbound),
            outbound: conv(&spec.failsafe_outbound_host_ports, d.outbound),
        }
    }
}

/// Labels by namespace name, as the compiler wants them.
pub type NamespaceLabels = BTreeMap<String, String>;
