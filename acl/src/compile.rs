//! The compiler: endpoints, namespaces and policies in, a [`Ruleset`] out. Pure: no I/O.
//!
//! It is incremental where it matters. A policy is compiled to IR rules once, when it
//! changes; its rules name IP sets by a digest of what they hold (a selector, named ports of
//! a selector, fixed networks), never by their members. Set membership is kept up to date as
//! endpoints and namespaces change, touching only the endpoint that changed (or the pods of
//! the namespace that changed). So a pod coming, going or changing labels changes set
//! members, not rules; a renderer's diff then writes only those members.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use tabby_selector::Selector;

use crate::cidr::{Cidr, Family};
use crate::endpoint::{Endpoint, EndpointKind};
use crate::ir::{
    digest, AddrMatch, IrRule, IrSide, LocalEndpoint, Member, PolicyChain, Ruleset, SetDef, SetId,
    Settings,
};
use crate::model::{proto, Direction, Entity, Policy, PortMatch, Rule};

#[derive(Debug)]
struct CompiledPolicy {
    policy: Policy,
    ingress: Option<Vec<IrRule>>,
    egress: Option<Vec<IrRule>>,
    sets: BTreeSet<SetId>,
}

#[derive(Debug)]
struct SetState {
    def: SetDef,
    /// Parsed selector of `Selector` and `NamedPort` sets.
    selector: Option<Selector>,
    /// How many compiled policies use it.
    refs: usize,
    /// Members, with how many endpoints contribute each (two pods may share an address
    /// for a moment while one goes and the other comes).
    members: BTreeMap<Member, usize>,
}

/// The incremental policy compiler; see the module documentation.
#[derive(Debug, Default)]
pub struct Compiler {
    settings: Settings,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    endpoints: BTreeMap<String, Endpoint>,
    policies: BTreeMap<String, CompiledPolicy>,
    sets: BTreeMap<SetId, SetState>,
    /// For each endpoint, the sets it contributes members to.
    endpoint_sets: BTreeMap<String, BTreeSet<SetId>>,
    /// For each local endpoint, the names of the policies that apply to it (ingress,
    /// egress), in order. Filled by [`Compiler::ruleset`]; an endpoint's entry is dropped when
    /// it changes and all of them when a policy changes, so a remote pod's change costs no
    /// selector evaluation here.
    applicable_cache: RefCell<BTreeMap<String, [Vec<String>; 2]>>,
}

impl Compiler {
    /// A compiler with these node-wide settings.
    pub fn new(settings: Settings) -> Compiler {
        Compiler {
            settings,
            ..Compiler::default()
        }
    }

    /// Replaces the node-wide settings.
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Adds or replaces an endpoint (keyed by [`Endpoint::key`]).
    pub fn upsert_endpoint(&mut self, ep: Endpoint) {
        let key = ep.key();
        self.remove_endpoint(&key);
        self.add_memberships(&key, &ep);
        self.endpoints.insert(key, ep);
    }

    /// Removes an endpoint.
    pub fn remove_endpoint(&mut self, key: &str) {
        self.applicable_cache.get_mut().remove(key);
        let Some(old) = self.endpoints.remove(key) else {
            return;
        };
        for id in self.endpoint_sets.remove(key).unwrap_or_default() {
            if let Some(set) = self.sets.get_mut(&id) {
                for m in members_of(&set.def, &old) {
                    if let Some(n) = set.members.get_mut(&m) {
                        *n -= 1;
                        if *n == 0 {
                            set.members.remove(&m);
                        }
                    }
                }
            }
        }
    }

    /// Sets a namespace's labels (what `namespaceSelector`s see).
    pub fn upsert_namespace(&mut self, name: &str, labels: BTreeMap<String, String>) {
        if self.namespaces.get(name) == Some(&labels) {
            return;
        }
        self.namespaces.insert(name.to_owned(), labels);
        self.reevaluate_namespace(name);
    }

    /// Forgets a namespace.
    pub fn remove_namespace(&mut self, name: &str) {
        if self.namespaces.remove(name).is_some() {
            self.reevaluate_namespace(name);
        }
    }

    fn reevaluate_namespace(&mut self, name: &str) {
        let pods: Vec<Endpoint> = self
            .endpoints
            .values()
            .filter(|e| e.namespace.as_deref() == Some(name))
            .cloned()
            .collect();
        for ep in pods {
            self.upsert_endpoint(ep);
        }
    }

    /// Adds or replaces a policy (keyed by its name).
    pub fn upsert_policy(&mut self, policy: Policy) {
        let name = policy.name.clone();
        if self.policies.get(&name).is_some_and(|c| c.policy == policy) {
            return;
        }
        self.remove_policy(&name);
        self.applicable_cache.get_mut().clear();
        let mut sets = BTreeMap::new();
        let ingress = policy
            .ingress
            .as_ref()
            .map(|rules| compile_rules(rules, &mut sets));
        let egress = policy
            .egress
            .as_ref()
            .map(|rules| compile_rules(rules, &mut sets));
        for (id, (def, selector)) in &sets {
            self.reference_set(id, def, selector.as_ref());
        }
        self.policies.insert(
            name,
            CompiledPolicy {
                policy,
                ingress,
                egress,
                sets: sets.into_keys().collect(),
            },
        );
    }

    /// Removes a policy.
    pub fn remove_policy(&mut self, name: &str) {
        let Some(old) = self.policies.remove(name) else {
            return;
        };
        self.applicable_cache.get_mut().clear();
        for id in old.sets {
            let drop = match self.sets.get_mut(&id) {
                Some(s) => {
                    s.refs -= 1;
                    s.refs == 0
                }
                None => false,
            };
            if drop {
                self.sets.remove(&id);
                for sets in self.endpoint_sets.values_mut() {
                    sets.remove(&id);
                }
            }
        }
    }

    /// The policies, by name.
    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }

    /// How many endpoints (local or not) the compiler knows.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    fn reference_set(&mut self, id: &SetId, def: &SetDef, selector: Option<&Selector>) {
        if let Some(s) = self.sets.get_mut(id) {
            s.refs += 1;
            return;
        }
        let mut state = SetState {
            def: def.clone(),
            selector: selector.cloned(),
            refs: 1,
            members: BTreeMap::new(),
        };
        if let SetDef::Nets { nets, .. } = def {
            state.members = nets.iter().map(|n| (Member::Net(*n), 1)).collect();
        } else {
            for (key, ep) in &self.endpoints {
                let ns = ep.namespace.as_ref().and_then(|n| self.namespaces.get(n));
                if set_selects(&state, ep, ns) {
                    for m in members_of(&state.def, ep) {
                        *state.members.entry(m).or_default() += 1;
                    }
                    self.endpoint_sets
                        .entry(key.clone())
                        .or_default()
                        .insert(id.clone());
                }
            }
        }
        self.sets.insert(id.clone(), state);
    }

    fn add_memberships(&mut self, key: &str, ep: &Endpoint) {
        let ns = ep.namespace.as_ref().and_then(|n| self.namespaces.get(n));
        let mut mine = BTreeSet::new();
        for (id, set) in &mut self.sets {
            if set.selector.is_some() && set_selects(set, ep, ns) {
                for m in members_of(&set.def, ep) {
                    *set.members.entry(m).or_default() += 1;
                }
                mine.insert(id.clone());
            }
        }
        if !mine.is_empty() {
            self.endpoint_sets.insert(key.to_owned(), mine);
        }
    }

    /// The policies that apply to a local endpoint in a direction, in Calico's order.
    fn applicable(&self, ep: &Endpoint, dir: Direction) -> Vec<&CompiledPolicy> {
        let ns = ep.namespace.as_ref().and_then(|n| self.namespaces.get(n));
        let labels = ep.labels_view(ns);
        let mut out: Vec<&CompiledPolicy> = self
            .policies
            .values()
            .filter(|c| match dir {
                Direction::Ingress => c.ingress.is_some(),
                Direction::Egress => c.egress.is_some(),
            })
            .filter(|c| c.policy.selector.matches_in(&labels, ep.scope()))
            .collect();
        out.sort_by(|a, b| a.policy.cmp_order(&b.policy));
        out
    }

    /// The ruleset for this node's endpoints: only the policy chains some local endpoint
    /// runs, and only the sets those chains use.
    pub fn ruleset(&self) -> Ruleset {
        let mut rs = Ruleset {
            settings: self.settings.clone(),
            ..Ruleset::default()
        };
        for (key, ep) in &self.endpoints {
            let Some(iface) = &ep.iface else { continue };
            let mut local = LocalEndpoint {
                key: key.clone(),
                kind: ep.kind,
                ingress: Vec::new(),
                egress: Vec::new(),
            };
            let names = self
                .applicable_cache
                .borrow_mut()
                .entry(key.clone())
                .or_insert_with(|| {
                    [Direction::Ingress, Direction::Egress].map(|dir| {
                        self.applicable(ep, dir)
                            .iter()
                            .map(|c| c.policy.name.clone())
                            .collect()
                    })
                })
                .clone();
            for (dir, names) in [Direction::Ingress, Direction::Egress]
                .into_iter()
                .zip(names)
            {
                for pname in names {
                    let Some(c) = self.policies.get(&pname) else {
                        continue;
                    };
                    let name = chain_name(&c.policy.name, dir, ep.kind);
                    if !rs.policy_chains.contains_key(&name) {
                        let rules = match dir {
                            Direction::Ingress => c.ingress.clone(),
                            Direction::Egress => c.egress.clone(),
                        }
                        .unwrap_or_default();
                        for r in &rules {
                            for m in rule_sets(r) {
                                if let Some(s) = self.sets.get(&m.set) {
                                    rs.sets.entry(m.set.clone()).or_insert_with(|| {
                                        (s.def.clone(), s.members.keys().copied().collect())
                                    });
                                }
                            }
                        }
                        rs.policy_chains.insert(
                            name.clone(),
                            PolicyChain {
                                policy: c.policy.name.clone(),
                                direction: dir,
                                kind: ep.kind,
                                rules,
                            },
                        );
                    }
                    match dir {
                        Direction::Ingress => local.ingress.push(name),
                        Direction::Egress => local.egress.push(name),
                    }
                }
            }
            rs.endpoints.insert(iface.clone(), local);
        }
        rs
    }
}

/// The chain name of a policy for a direction and endpoint kind: `p` (workload) or `h`
/// (host), `i` or `e`, and a digest of the policy name (chain names are short in iptables).
pub fn chain_name(policy: &str, dir: Direction, kind: EndpointKind) -> String {
    let k = match kind {
        EndpointKind::Workload => 'p',
        EndpointKind::Host => 'h',
    };
    let d = match dir {
        Direction::Ingress => 'i',
        Direction::Egress => 'e',
    };
    format!("{k}{d}-{}", digest(policy))
}

fn rule_sets(r: &IrRule) -> impl Iterator<Item = &AddrMatch> {
    r.src
        .addrs
        .iter()
        .chain(&r.src.named)
        .chain(&r.dst.addrs)
        .chain(&r.dst.named)
}

fn set_selects(set: &SetState, ep: &Endpoint, ns: Option<&BTreeMap<String, String>>) -> bool {
    set.selector
        .as_ref()
        .is_some_and(|s| s.matches_in(&ep.labels_view(ns), ep.scope()))
}

/// What an endpoint selected by a set contributes to it.
fn members_of(def: &SetDef, ep: &Endpoint) -> Vec<Member> {
    let fam = def.family();
    let addrs = ep.addrs.iter().filter(|a| Family::of(a) == fam);
    match def {
        SetDef::Selector { .. } => addrs.map(|a| Member::Addr(*a)).collect(),
        SetDef::NamedPort {
            protocol, names, ..
        } => addrs
            .flat_map(|a| {
                ep.ports
                    .iter()
                    .filter(|p| p.protocol == *protocol && names.contains(&p.name))
                    .map(move |p| Member::AddrPort(*a, p.protocol, p.port))
            })
            .collect(),
        SetDef::Nets { .. } => Vec::new(),
    }
}

type SetsUsed = BTreeMap<SetId, (SetDef, Option<Selector>)>;

fn use_set(sets: &mut SetsUsed, def: SetDef, selector: Option<&Selector>) -> SetId {
    let id = def.id();
    sets.entry(id.clone())
        .or_insert_with(|| (def, selector.cloned()));
    id
}

/// Compiles one direction's rules of a policy.
fn compile_rules(rules: &[Rule], sets: &mut SetsUsed) -> Vec<IrRule> {
    let mut out = Vec::new();
    for r in rules {
        compile_rule(r, sets, &mut out);
    }
    out
}

/// The families a rule can match: its ipVersion, its ICMP protocol, and its nets.
fn families(r: &Rule) -> Vec<Family> {
    Family::BOTH
        .into_iter()
        .filter(|f| r.ip_version.is_none_or(|v| v == *f))
        .filter(|f| match r.protocol {
            Some(proto::ICMP) => *f == Family::V4,
            Some(proto::ICMPV6) => *f == Family::V6,
            _ => true,
        })
        .filter(|f| {
            [&r.source, &r.destination]
                .iter()
                .all(|e| e.nets.is_empty() || e.nets.iter().any(|n| n.family() == *f))
        })
        .collect()
}

/// Whether a rule's IR must name a family: it matches addresses, or ICMP types.
fn family_specific(r: &Rule) -> bool {
    let side = |e: &Entity| {
        !e.nets.is_empty()
            || !e.not_nets.is_empty()
            || e.selector.is_some()
            || e.not_selector.is_some()
            || e.ports
                .iter()
                .chain(&e.not_ports)
                .any(|p| matches!(p, PortMatch::Named(_)))
    };
    side(&r.source)
        || side(&r.destination)
        || r.ip_version.is_some()
        || r.icmp.is_some()
        || r.not_icmp.is_some()
        || matches!(r.protocol, Some(proto::ICMP | proto::ICMPV6))
}

fn compile_rule(r: &Rule, sets: &mut SetsUsed, out: &mut Vec<IrRule>) {
    let fams = families(r);
    let per_family: Vec<Option<Family>> = if family_specific(r) {
        fams.into_iter().map(Some).collect()
    } else if fams.len() == 2 {
        vec![None]
    } else {
        fams.into_iter().map(Some).collect()
    };
    for fam in per_family {
        let Some(srcs) = side_variants(&r.source, r.protocol, fam, sets) else {
            continue;
        };
        let Some(dsts) = side_variants(&r.destination, r.protocol, fam, sets) else {
            continue;
        };
        for s in &srcs {
            for d in &dsts {
                out.push(IrRule {
                    family: fam,
                    protocol: r.protocol,
                    not_protocol: r.not_protocol,
                    icmp: r.icmp,
                    not_icmp: r.not_icmp,
                    src: s.clone(),
                    dst: d.clone(),
                    action: r.action,
                });
            }
        }
    }
}

/// The IR sides of an entity for a family: one per alternative of its positive port match
/// (numeric ranges, named ports), since a rule matches when any alternative does. `None`
/// when the entity cannot match in this family.
fn side_variants(
    e: &Entity,
    protocol: Option<u8>,
    fam: Option<Family>,
    sets: &mut SetsUsed,
) -> Option<Vec<IrSide>> {
    let mut base = IrSide::default();
    if let Some(f) = fam {
        let nets: Vec<Cidr> = e.nets.iter().filter(|n| n.family() == f).copied().collect();
        if !e.nets.is_empty() {
            if nets.is_empty() {
                return None;
            }
            let nets = Cidr::disjoint(nets);
            base.addrs.push(AddrMatch {
                set: use_set(sets, SetDef::Nets { nets, family: f }, None),
                negate: false,
            });
        }
        let not_nets: Vec<Cidr> = e
            .not_nets
            .iter()
            .filter(|n| n.family() == f)
            .copied()
            .collect();
        if !not_nets.is_empty() {
            let nets = Cidr::disjoint(not_nets);
            base.addrs.push(AddrMatch {
                set: use_set(sets, SetDef::Nets { nets, family: f }, None),
                negate: true,
            });
        }
        for (sel, negate) in [(&e.selector, false), (&e.not_selector, true)] {
            if let Some(sel) = sel {
                let def = SetDef::Selector {
                    selector: sel.to_string(),
                    family: f,
                };
                base.addrs.push(AddrMatch {
                    set: use_set(sets, def, Some(sel)),
                    negate,
                });
            }
        }
    }
    let ranges = |ports: &[PortMatch]| -> Vec<(u16, u16)> {
        ports
            .iter()
            .filter_map(|p| match p {
                PortMatch::Range(a, b) => Some((*a, *b)),
                PortMatch::Named(_) => None,
            })
            .collect()
    };
    let names = |ports: &[PortMatch]| -> Vec<String> {
        let n: BTreeSet<String> = ports
            .iter()
            .filter_map(|p| match p {
                PortMatch::Named(n) => Some(n.clone()),
                PortMatch::Range(..) => None,
            })
            .collect();
        n.into_iter().collect()
    };
    let named_set = |names: Vec<String>, sets: &mut SetsUsed| -> Option<SetId> {
        let f = fam?;
        let sel = e.selector.clone().unwrap_or_default();
        let def = SetDef::NamedPort {
            selector: sel.to_string(),
            protocol: protocol.unwrap_or(proto::TCP),
            names,
            family: f,
        };
        Some(use_set(sets, def, Some(&sel)))
    };
    base.not_ports = ranges(&e.not_ports);
    let not_names = names(&e.not_ports);
    if !not_names.is_empty() {
        if let Some(id) = named_set(not_names, sets) {
            base.named.push(AddrMatch {
                set: id,
                negate: true,
            });
        }
    }
    let pos_ranges = ranges(&e.ports);
    let pos_names = names(&e.ports);
    if pos_ranges.is_empty() && pos_names.is_empty() {
        return Some(vec![base]);
    }
    let mut variants = Vec::new();
    if !pos_ranges.is_empty() {
        let mut v = base.clone();
        v.ports = pos_ranges;
        variants.push(v);
    }
    if !pos_names.is_empty() {
        if let Some(id) = named_set(pos_names, sets) {
            let mut v = base;
            v.named.push(AddrMatch {
                set: id,
                negate: false,
            });
            variants.push(v);
        }
    }
    Some(variants)
}
