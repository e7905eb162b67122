//! The nftables renderer and applier: everything in table `inet tabby`.
//!
//! ```text
//! chain fwd-egress   hook forward prio 0:  ct established accept, invalid drop
//!                                          iifname "cali*" jump from-wl
//! chain fwd-ingress  hook forward prio 1:  oifname "cali*" jump to-wl
//! chain input        hook input:           workload->host, failsafe in, iifname vmap @hep-in
//! chain output       hook output:          host->workload accept, failsafe out, oifname vmap @hep-out
//! chain from-wl:  iifname vmap @wl-from (goto fw-<iface>); drop   <- unknown cali* interface
//! chain to-wl:    oifname vmap @wl-to   (goto tw-<iface>); drop
//! chain fw-<iface>: jump pe-<policy>...; drop (end of tier) | accept (no policy: profile)
//! chain pe-<digest>: the policy's rules: accept / drop / log; Pass resolved per endpoint kind
//! ```
//!
//! Egress and ingress of forwarded traffic are two base chains on the forward hook: an
//! `accept` in the first only ends that chain, so the second still runs, and no packet mark
//! is needed. The dispatch rules and the final `drop` of `from-wl` stay in the kernel when
//! tabby stops, so an unknown workload interface is dropped while the agent is down.
//!
//! [`NftApplier::apply`] renders a [`Ruleset`] to an [`NftState`], diffs it against the last
//! state applied (or, the first time, against what `nft -j list table inet tabby` reads
//! back) and writes only the difference, in one `nft -f -` transaction. Every rule carries a
//! comment with a digest of its text, so a read-back chain compares by comments.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cidr::Family;
use crate::endpoint::EndpointKind;
use crate::exec::{Exec, ExecError};
use crate::ir::{
    digest, AddrMatch, IrRule, IrSide, Member, PolicyChain, Ruleset, SetDef, ICMPV6_TO_HOST,
};
use crate::model::{proto, Action, Direction, Icmp};
use crate::{ApplyStats, Dataplane};

/// The table: family and name.
pub const TABLE: &str = "inet tabby";

/// The most elements written per `add element` line.
const ELEMENTS_PER_LINE: usize = 500;

/// One rule: its text and the comment (a digest of the text) it is recognised by.
#[derive(Debug, Clone, Eq)]
pub struct RuleText {
    /// The comment.
    pub comment: String,
    /// The rule without its comment; empty when read back.
    pub text: String,
}

impl PartialEq for RuleText {
    fn eq(&self, other: &Self) -> bool {
        self.comment == other.comment
    }
}

impl RuleText {
    fn new(text: String) -> RuleText {
        RuleText {
            comment: digest(&text),
            text,
        }
    }
}

/// A chain: its base-chain declaration, if a base chain, and its rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainState {
    /// `type filter hook forward priority 0; policy accept;` for a base chain.
    pub decl: Option<String>,
    /// The rules, in order.
    pub rules: Vec<RuleText>,
}

/// What table `inet tabby` holds, in the shape the diff works on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NftState {
    /// Sets: declaration (`type ipv4_addr; flags interval;`) and elements as nft prints them.
    pub sets: BTreeMap<String, (String, BTreeSet<String>)>,
    /// Verdict maps: key to verdict (`goto tw-cali123`).
    pub maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Chains.
    pub chains: BTreeMap<String, ChainState>,
}

impl NftState {
    /// Number of set elements.
    pub fn members(&self) -> usize {
        self.sets.values().map(|(_, e)| e.len()).sum()
    }
}

fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::SCTP => "sctp".into(),
        n => n.to_string(),
    }
}

/// A set member as `nft` prints it.
pub fn element(m: &Member) -> String {
    match m {
        Member::Addr(a) => a.to_string(),
        Member::Net(n) => n.to_string(),
        Member::AddrPort(a, p, port) => format!("{a} . {} . {port}", proto_name(*p)),
    }
}

fn set_decl(def: &SetDef) -> String {
    let addr = match def.family() {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    };
    match def {
        SetDef::Selector { .. } => format!("type {addr};"),
        SetDef::Nets { .. } => format!("type {addr}; flags interval;"),
        SetDef::NamedPort { .. } => format!("type {addr} . inet_proto . inet_service;"),
    }
}

/// One port range as an nft value: `80` or `80-90`.
///
/// Port lists are never written as anonymous sets (`{ 80, 443 }`): every anonymous set is a
/// kernel set, and with thousands of them each later `nft` command spends seconds dumping
/// sets to fill its cache (measured with nft 1.0.6: 5,000 rules with anonymous sets made one
/// `add element` take 1.4 s, against 50 ms without). A list becomes one rule per range.
fn range(&(a, b): &(u16, u16)) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// The matches of one side: the conditions every variant shares, and one alternative per
/// positive port range (a single empty alternative when there are none).
fn render_side(side: &IrSide, fam: Option<Family>, dir: &str) -> (Vec<String>, Vec<String>) {
    let ip = match fam {
        Some(Family::V6) => "ip6",
        _ => "ip",
    };
    let (addr, port) = if dir == "src" {
        ("saddr", "sport")
    } else {
        ("daddr", "dport")
    };
    let mut out = Vec::new();
    for AddrMatch { set, negate } in &side.addrs {
        let op = if *negate { "!= " } else { "" };
        out.push(format!("{ip} {addr} {op}@{set}"));
    }
    for r in &side.not_ports {
        out.push(format!("th {port} != {}", range(r)));
    }
    for AddrMatch { set, negate } in &side.named {
        let op = if *negate { "!= " } else { "" };
        out.push(format!("{ip} {addr} . meta l4proto . th {port} {op}@{set}"));
    }
    let alternatives = if side.ports.is_empty() {
        vec![String::new()]
    } else {
        side.ports
            .iter()
            .map(|r| format!("th {port} {}", range(r)))
            .collect()
    };
    (out, alternatives)
}

fn icmp_match(fam: Option<Family>, i: &Icmp, negate: bool) -> String {
    let kw = if fam == Some(Family::V6) {
        "icmpv6"
    } else {
        "icmp"
    };
    let op = if negate { "!= " } else { "" };
    match i.code {
        None => format!("{kw} type {op}{}", i.icmp_type),
        Some(c) if negate => format!("{kw} type . {kw} code != {{ {} . {c} }}", i.icmp_type),
        Some(c) => format!("{kw} type {} {kw} code {c}", i.icmp_type),
    }
}

/// The rule texts of one IR rule in a policy chain of `kind`: one per alternative of its
/// positive port ranges (see [`range`]).
pub fn render_rule(r: &IrRule, policy: &str, kind: EndpointKind) -> Vec<String> {
    let mut m = Vec::new();
    match r.family {
        Some(Family::V4) => m.push("meta nfproto ipv4".to_owned()),
        Some(Family::V6) => m.push("meta nfproto ipv6".to_owned()),
        None => {}
    }
    if let Some(p) = r.protocol {
        m.push(format!("meta l4proto {p}"));
    }
    if let Some(p) = r.not_protocol {
        m.push(format!("meta l4proto != {p}"));
    }
    if let Some(i) = &r.icmp {
        m.push(icmp_match(r.family, i, false));
    }
    if let Some(i) = &r.not_icmp {
        m.push(icmp_match(r.family, i, true));
    }
    let (src, src_alts) = render_side(&r.src, r.family, "src");
    let (dst, dst_alts) = render_side(&r.dst, r.family, "dst");
    m.extend(src);
    m.extend(dst);
    let verdict = match (r.action, kind) {
        (Action::Allow, _) | (Action::Pass, EndpointKind::Workload) => "accept".to_owned(),
        (Action::Deny, _) | (Action::Pass, EndpointKind::Host) => "drop".to_owned(),
        (Action::Log, _) => {
            let p: String = policy
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "./-_".contains(*c))
                .take(100)
                .collect();
            format!("log prefix \"tabby {p}: \"")
        }
    };
    let common = m.join(" ");
    let mut out = Vec::new();
    for s in &src_alts {
        for d in &dst_alts {
            let parts: Vec<&str> = [common.as_str(), s, d, verdict.as_str()]
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect();
            out.push(parts.join(" "));
        }
    }
    out
}

fn endpoint_chain(chains: &[String], kind: EndpointKind) -> Vec<RuleText> {
    let mut rules: Vec<RuleText> = chains
        .iter()
        .map(|c| RuleText::new(format!("jump {c}")))
        .collect();
    let last = if !chains.is_empty() {
        // End of tier: a policy applied and nothing in it allowed the packet.
        "drop"
    } else if kind == EndpointKind::Workload {
        // No policy: the namespace profile allows.
        "accept"
    } else {
        "drop"
    };
    rules.push(RuleText::new(last.to_owned()));
    rules
}

fn endpoint_chain_name(kind: EndpointKind, dir: Direction, iface: &str) -> String {
    match (kind, dir) {
        (EndpointKind::Workload, Direction::Ingress) => format!("tw-{iface}"),
        (EndpointKind::Workload, Direction::Egress) => format!("fw-{iface}"),
        (EndpointKind::Host, Direction::Ingress) => format!("th-{iface}"),
        (EndpointKind::Host, Direction::Egress) => format!("fh-{iface}"),
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace(['"', '\\'], ""))
}

fn failsafe_rules(list: &[(u8, u16)], dir: &str) -> Vec<RuleText> {
    // One rule per port: no anonymous sets (see [`range`]).
    list.iter()
        .map(|(p, port)| RuleText::new(format!("meta l4proto {p} th {dir} {port} accept")))
        .collect()
}

/// Rendered policy chains kept between applies: a policy chain is rendered (and its rules
/// digested) again only when its IR changed.
pub type RenderCache = std::collections::HashMap<String, (PolicyChain, Vec<RuleText>)>;

/// Renders a ruleset as the contents of table `inet tabby`.
pub fn render(rs: &Ruleset) -> NftState {
    render_cached(rs, &mut RenderCache::new())
}

/// [`render`], reusing and updating `cache`.
pub fn render_cached(rs: &Ruleset, cache: &mut RenderCache) -> NftState {
    let mut st = NftState::default();
    let wl = format!("{}*", rs.settings.interface_prefix);
    let wlq = quote(&wl);
    let base = |hook: &str, prio: i32| {
        Some(format!(
            "type filter hook {hook} priority {prio}; policy accept;"
        ))
    };
    let r = |t: &str| RuleText::new(t.to_owned());

    st.chains.insert(
        "fwd-egress".into(),
        ChainState {
            decl: base("forward", 0),
            rules: vec![
                r("ct state established,related accept"),
                r(&format!("iifname {wlq} ct state invalid drop")),
                r(&format!("oifname {wlq} ct state invalid drop")),
                r(&format!("iifname {wlq} jump from-wl")),
            ],
        },
    );
    st.chains.insert(
        "fwd-ingress".into(),
        ChainState {
            decl: base("forward", 1),
            rules: vec![
                r("ct state established,related accept"),
                r(&format!("oifname {wlq} jump to-wl")),
            ],
        },
    );
    let mut input = vec![
        r("ct state established,related accept"),
        r(&format!("iifname {wlq} ct state invalid drop")),
    ];
    for t in ICMPV6_TO_HOST {
        input.push(r(&format!("iifname {wlq} icmpv6 type {t} accept")));
    }
    if rs.settings.endpoint_to_host_accept {
        input.push(r(&format!("iifname {wlq} jump from-wl")));
    } else {
        input.push(r(&format!("iifname {wlq} drop")));
    }
    input.extend(failsafe_rules(&rs.settings.failsafe.inbound, "dport"));
    input.push(r("iifname vmap @hep-in"));
    st.chains.insert(
        "input".into(),
        ChainState {
            decl: base("input", 0),
            rules: input,
        },
    );
    let mut output = vec![
        r("ct state established,related accept"),
        // The host may always reach its own workloads (kubelet probes), as in Calico.
        r(&format!("oifname {wlq} accept")),
    ];
    output.extend(failsafe_rules(&rs.settings.failsafe.outbound, "dport"));
    output.push(r("oifname vmap @hep-out"));
    st.chains.insert(
        "output".into(),
        ChainState {
            decl: base("output", 0),
            rules: output,
        },
    );
    st.chains.insert(
        "from-wl".into(),
        ChainState {
            decl: None,
            rules: vec![r("iifname vmap @wl-from"), r("drop")],
        },
    );
    st.chains.insert(
        "to-wl".into(),
        ChainState {
            decl: None,
            rules: vec![r("oifname vmap @wl-to"), r("drop")],
        },
    );
    for m in ["wl-from", "wl-to", "hep-in", "hep-out"] {
        st.maps.insert(m.into(), BTreeMap::new());
    }
    for (iface, ep) in &rs.endpoints {
        for dir in [Direction::Ingress, Direction::Egress] {
            let name = endpoint_chain_name(ep.kind, dir, iface);
            let map = match (ep.kind, dir) {
                (EndpointKind::Workload, Direction::Ingress) => "wl-to",
                (EndpointKind::Workload, Direction::Egress) => "wl-from",
                (EndpointKind::Host, Direction::Ingress) => "hep-in",
                (EndpointKind::Host, Direction::Egress) => "hep-out",
            };
            if let Some(m) = st.maps.get_mut(map) {
                m.insert(iface.clone(), format!("goto {name}"));
            }
            st.chains.insert(
                name,
                ChainState {
                    decl: None,
                    rules: endpoint_chain(ep.chains(dir), ep.kind),
                },
            );
        }
    }
    cache.retain(|name, _| rs.policy_chains.contains_key(name));
    for (name, chain) in &rs.policy_chains {
        let rules = match cache.get(name) {
            Some((ir, rules)) if ir == chain => rules.clone(),
            _ => {
                let rules: Vec<RuleText> = chain
                    .rules
                    .iter()
                    .flat_map(|ir| render_rule(ir, &chain.policy, chain.kind))
                    .map(RuleText::new)
                    .collect();
                cache.insert(name.clone(), (chain.clone(), rules.clone()));
                rules
            }
        };
        st.chains
            .insert(name.clone(), ChainState { decl: None, rules });
    }
    for (id, (def, members)) in &rs.sets {
        st.sets.insert(
            id.0.clone(),
            (set_decl(def), members.iter().map(element).collect()),
        );
    }
    st
}

fn push_elements(out: &mut Vec<String>, verb: &str, set: &str, elems: &[&String]) {
    for chunk in elems.chunks(ELEMENTS_PER_LINE) {
        let list: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
        out.push(format!(
            "{verb} element {TABLE} {set} {{ {} }}",
            list.join(", ")
        ));
    }
}

/// The `nft -f` script that turns `old` into `new`, touching only what differs: sets and
/// their elements first, then chains (new ones created empty before any rule can jump to
/// them), then verdict-map elements, then removals in reverse.
pub fn diff(old: &NftState, new: &NftState) -> Vec<String> {
    let mut out = vec![format!("add table {TABLE}")];
    for (name, (decl, elems)) in &new.sets {
        let before = old.sets.get(name).filter(|(d, _)| d == decl);
        if before.is_none() {
            out.push(format!("add set {TABLE} {name} {{ {decl} }}"));
        }
        let empty = BTreeSet::new();
        let old_elems = before.map(|(_, e)| e).unwrap_or(&empty);
        let gone: Vec<&String> = old_elems.difference(elems).collect();
        let added: Vec<&String> = elems.difference(old_elems).collect();
        push_elements(&mut out, "delete", name, &gone);
        push_elements(&mut out, "add", name, &added);
    }
    for name in new.maps.keys() {
        if !old.maps.contains_key(name) {
            out.push(format!(
                "add map {TABLE} {name} {{ type ifname : verdict; }}"
            ));
        }
    }
    for (name, c) in &new.chains {
        match (old.chains.get(name), &c.decl) {
            (Some(o), _) if o.decl == c.decl => {}
            (_, Some(decl)) => out.push(format!("add chain {TABLE} {name} {{ {decl} }}")),
            (_, None) => out.push(format!("add chain {TABLE} {name}")),
        }
    }
    for (name, c) in &new.chains {
        match old.chains.get(name) {
            Some(o) if o.rules == c.rules && o.decl == c.decl => continue,
            Some(_) => out.push(format!("flush chain {TABLE} {name}")),
            None => {}
        }
        for rule in &c.rules {
            out.push(format!(
                "add rule {TABLE} {name} {} comment \"{}\"",
                rule.text, rule.comment
            ));
        }
    }
    for (name, elems) in &new.maps {
        let empty = BTreeMap::new();
        let before = old.maps.get(name).unwrap_or(&empty);
        for (k, v) in before {
            if elems.get(k) != Some(v) {
                out.push(format!("delete element {TABLE} {name} {{ {} }}", quote(k)));
            }
        }
        for (k, v) in elems {
            if before.get(k) != Some(v) {
                out.push(format!(
                    "add element {TABLE} {name} {{ {} : {v} }}",
                    quote(k)
                ));
            }
        }
    }
    let gone: Vec<&String> = old
        .chains
        .keys()
        .filter(|n| !new.chains.contains_key(*n))
        .collect();
    for name in &gone {
        out.push(format!("flush chain {TABLE} {name}"));
    }
    for name in &gone {
        out.push(format!("delete chain {TABLE} {name}"));
    }
    for name in old.maps.keys().filter(|n| !new.maps.contains_key(*n)) {
        out.push(format!("delete map {TABLE} {name}"));
    }
    for (name, (decl, _)) in &old.sets {
        if new.sets.get(name).is_none_or(|(d, _)| d != decl) {
            out.push(format!("delete set {TABLE} {name}"));
        }
    }
    // Only `add table` when nothing changed.
    if out.len() == 1 {
        out.clear();
    }
    out
}

fn json_elem(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr = p.get("addr").map(json_elem).unwrap_or_default();
                let len = p.get("len").map(json_elem).unwrap_or_default();
                format!("{addr}/{len}")
            } else if let Some(Value::Array(parts)) = o.get("concat") {
                parts.iter().map(json_elem).collect::<Vec<_>>().join(" . ")
            } else if let Some(Value::Object(e)) = o.get("elem") {
                e.get("val").map(json_elem).unwrap_or_default()
            } else if let Some(Value::Array(r)) = o.get("range") {
                r.iter().map(json_elem).collect::<Vec<_>>().join("-")
            } else if let Some((verdict, target)) = o.iter().next() {
                match target.get("target") {
                    Some(t) => format!("{verdict} {}", json_elem(t)),
                    None => verdict.clone(),
                }
            } else {
                String::new()
            }
        }
        other => other.to_string(),
    }
}

fn json_decl(set: &serde_json::Value) -> String {
    use serde_json::Value;
    let ty = match set.get("type") {
        Some(Value::Array(parts)) => parts.iter().map(json_elem).collect::<Vec<_>>().join(" . "),
        Some(v) => json_elem(v),
        None => String::new(),
    };
    let interval = set
        .get("flags")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x == "interval"));
    if interval {
        format!("type {ty}; flags interval;")
    } else {
        format!("type {ty};")
    }
}

/// Parses `nft -j list table inet tabby` output.
pub fn parse_json(text: &str) -> Result<NftState, String> {
    use serde_json::Value;
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("no \"nftables\" array")?;
    let mut st = NftState::default();
    let name_of = |o: &Value| o.get("name").and_then(Value::as_str).map(str::to_owned);
    for item in items {
        if let Some(s) = item.get("set") {
            let name = name_of(s).ok_or("set without name")?;
            let elems = s
                .get("elem")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(json_elem).collect())
                .unwrap_or_default();
            st.sets.insert(name, (json_decl(s), elems));
        } else if let Some(m) = item.get("map") {
            let name = name_of(m).ok_or("map without name")?;
            let mut elems = BTreeMap::new();
            for e in m
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some([k, val]) = e.as_array().map(Vec::as_slice) {
                    elems.insert(json_elem(k), json_elem(val));
                }
            }
            st.maps.insert(name, elems);
        } else if let Some(c) = item.get("chain") {
            let name = name_of(c).ok_or("chain without name")?;
            let decl = c.get("hook").and_then(Value::as_str).map(|hook| {
                format!(
                    "type {} hook {hook} priority {}; policy {};",
                    c.get("type").and_then(Value::as_str).unwrap_or("filter"),
                    c.get("prio").map(json_elem).unwrap_or_default(),
                    c.get("policy").and_then(Value::as_str).unwrap_or("accept"),
                )
            });
            st.chains.entry(name).or_default().decl = decl;
        } else if let Some(r) = item.get("rule") {
            let chain = r
                .get("chain")
                .and_then(Value::as_str)
                .ok_or("rule without chain")?;
            let comment = r
                .get("comment")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            st.chains
                .entry(chain.to_owned())
                .or_default()
                .rules
                .push(RuleText {
                    comment,
                    text: String::new(),
                });
        }
    }
    Ok(st)
}

/// Applies rulesets to table `inet tabby` through `nft`.
#[derive(Debug)]
pub struct NftApplier {
    exec: Exec,
    /// What the table holds, as far as we know: `None` until read back or after a failure.
    last: Option<NftState>,
    /// What we want it to hold.
    desired: Option<NftState>,
    cache: RenderCache,
}

impl NftApplier {
    /// An applier that runs `nft` through `exec`.
    pub fn new(exec: Exec) -> NftApplier {
        NftApplier {
            exec,
            last: None,
            desired: None,
            cache: RenderCache::new(),
        }
    }

    /// Reads back table `inet tabby` (only our table); an absent table is an empty state.
    pub fn read_back(&self) -> Result<NftState, ExecError> {
        match self
            .exec
            .run("nft", &["-j", "list", "table", "inet", "tabby"], "")
        {
            Ok(text) => parse_json(&text).map_err(|reason| ExecError::Parse {
                program: "nft -j list table inet tabby".into(),
                reason,
            }),
            Err(ExecError::Failed { stderr, .. }) if stderr.contains("No such file") => {
                Ok(NftState::default())
            }
            Err(e) => Err(e),
        }
    }

    fn write(&mut self, from: &NftState, to: NftState) -> Result<usize, ExecError> {
        let script = diff(from, &to);
        let lines = script.len();
        if lines > 0 {
            let mut text = String::with_capacity(lines * 64);
            for l in &script {
                let _ = writeln!(text, "{l}");
            }
            if let Err(e) = self.exec.run("nft", &["-f", "-"], &text) {
                // We no longer know what the kernel holds: read it back next time.
                self.last = None;
                return Err(e);
            }
        }
        self.last = Some(to);
        Ok(lines)
    }

    /// The script [`apply`](Dataplane::apply) would write for `rs` now, for tests and
    /// benchmarks (reads back the table if nothing was applied yet).
    pub fn plan(&self, rs: &Ruleset) -> Result<Vec<String>, ExecError> {
        let old = match &self.last {
            Some(l) => l.clone(),
            None => self.read_back()?,
        };
        Ok(diff(&old, &render(rs)))
    }

    /// Removes table `inet tabby` (on uninstall; never on a normal stop, where the
    /// fail-closed rules must stay).
    pub fn remove(&mut self) -> Result<(), ExecError> {
        self.last = None;
        self.desired = None;
        self.exec.run(
            "nft",
            &["-f", "-"],
            "add table inet tabby\ndelete table inet tabby\n",
        )?;
        Ok(())
    }
}

impl Dataplane for NftApplier {
    fn apply(&mut self, rs: &Ruleset) -> Result<ApplyStats, ExecError> {
        let new = render_cached(rs, &mut self.cache);
        let old = match self.last.take() {
            Some(l) => l,
            None => self.read_back()?,
        };
        let stats = ApplyStats {
            wrote: false,
            lines: 0,
            chains: new.chains.len(),
            sets: new.sets.len(),
            members: new.members(),
        };
        self.desired = Some(new.clone());
        let lines = self.write(&old, new)?;
        Ok(ApplyStats {
            wrote: lines > 0,
            lines,
            ..stats
        })
    }

    fn repair(&mut self) -> Result<bool, ExecError> {
        let Some(desired) = self.desired.clone() else {
            return Ok(false);
        };
        let actual = self.read_back()?;
        if actual == desired {
            self.last = Some(actual);
            return Ok(false);
        }
        tracing::warn!("table inet tabby was changed by another tool; restoring it");
        self.write(&actual, desired)?;
        Ok(true)
    }
}

/// Runs `nft monitor` and calls back whenever a change to table `inet tabby` is seen
/// (ours too: the callback should read back and compare, as [`Dataplane::repair`] does).
/// Dropping it stops the monitor.
#[derive(Debug)]
pub struct Monitor {
    child: Child,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts `nft monitor` through `exec`; `on_change` runs on the monitor's thread.
    pub fn spawn(exec: &Exec, on_change: impl Fn() + Send + 'static) -> Result<Monitor, ExecError> {
        let mut child = exec
            .command("nft", &["monitor", "ruleset"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| ExecError::Spawn {
                program: "nft monitor".into(),
                source,
            })?;
        let stdout = child.stdout.take().ok_or_else(|| ExecError::Parse {
            program: "nft monitor".into(),
            reason: "no stdout".into(),
        })?;
        let thread = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains(" inet tabby") {
                    on_change();
                }
            }
        });
        Ok(Monitor {
            child,
            thread: Some(thread),
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keeps table `inet tabby` as the shared applier last applied it: an [`Monitor`] wakes a
/// thread that waits for the burst of events to settle, then calls
/// [`repair`](Dataplane::repair). Dropping it stops both.
#[derive(Debug)]
pub struct Repairer {
    monitor: Option<Monitor>,
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
    repairs: Arc<std::sync::atomic::AtomicU64>,
}

/// How long the repairer waits for a burst of monitor events to end before reading back.
const SETTLE: Duration = Duration::from_millis(50);

impl Repairer {
    /// Watches through `exec` and repairs with `applier`.
    pub fn spawn(exec: &Exec, applier: Arc<Mutex<NftApplier>>) -> Result<Repairer, ExecError> {
        let (tx, rx) = std::sync::mpsc::channel::<bool>();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let poke = Mutex::new(tx.clone());
        let monitor = Monitor::spawn(exec, move || {
            if let Ok(tx) = poke.lock() {
                let _ = tx.send(true);
            }
        })?;
        let repairs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = repairs.clone();
        let thread = std::thread::spawn(move || loop {
            if stop_rx.try_recv().is_ok() {
                return;
            }
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(_) => {
                    while rx.recv_timeout(SETTLE).is_ok() {}
                    let Ok(mut a) = applier.lock() else { return };
                    match a.repair() {
                        Ok(true) => {
                            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(false) => {}
                        Err(e) => tracing::error!("cannot repair table inet tabby: {e}"),
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        });
        drop(tx);
        Ok(Repairer {
            monitor: Some(monitor),
            stop,
            thread: Some(thread),
            repairs,
        })
    }

    /// How many times the table was found changed and restored.
    pub fn repairs(&self) -> u64 {
        self.repairs.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Repairer {
    fn drop(&mut self) {
        self.monitor.take();
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
