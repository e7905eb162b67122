//! The iptables renderer and applier: chains `tabby-*` in table `filter`, jumped to from
//! `FORWARD`, `INPUT` and `OUTPUT`, IP sets in ipsets `tabby-*`, written with
//! `ipset restore` and `iptables-restore --noflush` (and `ip6tables-restore`): one process
//! per tool per apply, never one per rule.
//!
//! The semantics are those of [`crate::nft`]; what differs is forced by iptables. Egress and
//! ingress of forwarded traffic share the one `FORWARD` chain, so a policy chain cannot end
//! evaluation with `ACCEPT`: as Felix does, an allowing rule sets mark bit [`ACCEPT_MARK`]
//! and returns, and the endpoint chain returns on that mark; `tabby-FORWARD` accepts once
//! both directions have returned. Every rule carries `-m comment --comment h:<digest>` so a
//! read-back chain (`iptables-save`) compares by comments.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::cidr::Family;
use crate::endpoint::EndpointKind;
use crate::exec::{Exec, ExecError};
use crate::ir::{digest, IrRule, IrSide, Member, Ruleset, SetDef, ICMPV6_TO_HOST};
use crate::model::{proto, Action, Direction, Icmp};
use crate::{ApplyStats, Dataplane};

/// Prefix of every chain and ipset tabby owns.
pub const PREFIX: &str = "tabby-";
/// The mark bit a policy chain sets when it allows (Felix's accept bit).
pub const ACCEPT_MARK: u32 = 0x10000;

/// One family's chains: name to rule argument strings (without `-A <chain>`).
pub type Chains = BTreeMap<String, Vec<String>>;

/// What tabby holds in ipsets and the filter tables.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IptState {
    /// ipsets: `create` arguments (type and family) and members as `ipset save` prints them.
    pub sets: BTreeMap<String, (String, BTreeSet<String>)>,
    /// IPv4 chains, compared by their rules' comments.
    pub v4: Chains,
    /// IPv6 chains.
    pub v6: Chains,
    /// Built-in chains that jump to ours, per family (`FORWARD` -> `tabby-FORWARD`).
    pub hooks4: BTreeSet<String>,
    /// Likewise for IPv6.
    pub hooks6: BTreeSet<String>,
}

/// The built-in chains and the chain of ours each jumps to first.
const HOOKS: [&str; 3] = ["FORWARD", "INPUT", "OUTPUT"];

fn comment_of(rule: &str) -> &str {
    rule.split("--comment ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("")
        .trim_matches('"')
}

fn same_chains(a: &Chains, b: &Chains) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((na, ra), (nb, rb))| {
            na == nb
                && ra.len() == rb.len()
                && ra
                    .iter()
                    .zip(rb)
                    .all(|(x, y)| comment_of(x) == comment_of(y))
        })
}

impl IptState {
    /// Equal as far as the kernel shows: sets by members, chains by rule comments.
    pub fn same(&self, other: &IptState) -> bool {
        self.sets == other.sets
            && self.hooks4 == other.hooks4
            && self.hooks6 == other.hooks6
            && same_chains(&self.v4, &other.v4)
            && same_chains(&self.v6, &other.v6)
    }
}

fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::SCTP => "sctp".into(),
        proto::ICMP => "icmp".into(),
        proto::ICMPV6 => "ipv6-icmp".into(),
        n => n.to_string(),
    }
}

fn member(m: &Member) -> String {
    match m {
        Member::Addr(a) => a.to_string(),
        Member::Net(n) => n.to_string(),
        Member::AddrPort(a, p, port) => format!("{a},{}:{port}", proto_name(*p)),
    }
}

fn set_type(def: &SetDef) -> String {
    let fam = match def.family() {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    };
    let ty = match def {
        SetDef::Selector { .. } => "hash:ip",
        SetDef::Nets { .. } => "hash:net",
        SetDef::NamedPort { .. } => "hash:ip,port",
    };
    format!("{ty} family {fam}")
}

fn multiport(ports: &[(u16, u16)]) -> Vec<String> {
    // multiport takes at most 15 ports, a range counting two.
    ports
        .chunks(7)
        .map(|c| {
            c.iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}:{b}")
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

fn icmp_args(fam: Family, i: &Icmp, negate: bool) -> String {
    let (m, opt) = match fam {
        Family::V4 => ("icmp", "--icmp-type"),
        Family::V6 => ("icmp6", "--icmpv6-type"),
    };
    let not = if negate { "! " } else { "" };
    let value = match i.code {
        Some(c) => format!("{}/{c}", i.icmp_type),
        None => i.icmp_type.to_string(),
    };
    format!("-m {m} {not}{opt} {value}")
}

/// The argument lists of one IR rule for a family (one per alternative of its positive
/// port list, when that list is longer than one multiport match takes).
fn render_rule(r: &IrRule, fam: Family, policy: &str, kind: EndpointKind) -> Vec<String> {
    let mut m: Vec<String> = Vec::new();
    if let Some(p) = r.protocol {
        m.push(format!("-p {}", proto_name(p)));
    }
    if let Some(p) = r.not_protocol {
        m.push(format!("! -p {}", proto_name(p)));
    }
    if let Some(i) = &r.icmp {
        m.push(icmp_args(fam, i, false));
    }
    if let Some(i) = &r.not_icmp {
        m.push(icmp_args(fam, i, true));
    }
    let mut alternatives = vec![m];
    for (side, dir) in [(&r.src, "src"), (&r.dst, "dst")] {
        alternatives = side_args(alternatives, side, dir);
    }
    let allow = |m: &str| {
        vec![
            format!("{m} -j MARK --set-xmark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x}"),
            format!("-m mark --mark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x} -j RETURN"),
        ]
    };
    let mut out = Vec::new();
    for alt in alternatives {
        let m = alt.join(" ");
        match (r.action, kind) {
            (Action::Allow, _) | (Action::Pass, EndpointKind::Workload) => out.extend(allow(&m)),
            (Action::Deny, _) | (Action::Pass, EndpointKind::Host) => {
                out.push(format!("{m} -j DROP"))
            }
            (Action::Log, _) => {
                let p: String = policy
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "./-_".contains(*c))
                    .take(20)
                    .collect();
                out.push(format!("{m} -j LOG --log-prefix \"tabby {p}: \""));
            }
        }
    }
    out.iter().map(|s| s.trim().to_owned()).collect()
}

fn side_args(alts: Vec<Vec<String>>, side: &IrSide, dir: &str) -> Vec<Vec<String>> {
    let (flag, pflag) = if dir == "src" {
        ("src", "--sports")
    } else {
        ("dst", "--dports")
    };
    let mut common = Vec::new();
    for a in &side.addrs {
        let not = if a.negate { "! " } else { "" };
        common.push(format!("-m set {not}--match-set {PREFIX}{} {flag}", a.set));
    }
    for chunk in multiport(&side.not_ports) {
        common.push(format!("-m multiport ! {pflag} {chunk}"));
    }
    for a in &side.named {
        let not = if a.negate { "! " } else { "" };
        common.push(format!(
            "-m set {not}--match-set {PREFIX}{} {flag},{flag}",
            a.set
        ));
    }
    let pos = multiport(&side.ports);
    let mut out = Vec::new();
    for alt in alts {
        if pos.is_empty() {
            let mut a = alt.clone();
            a.extend(common.iter().cloned());
            out.push(a);
        }
        for chunk in &pos {
            let mut a = alt.clone();
            a.extend(common.iter().cloned());
            a.push(format!("-m multiport {pflag} {chunk}"));
            out.push(a);
        }
    }
    out
}

/// The rule with its comment before the target (`-j`/`-g`), where iptables wants matches.
fn with_comment(rule: &str) -> String {
    let c = format!("-m comment --comment h:{}", digest(rule));
    let at = [" -j ", " -g "].iter().filter_map(|t| rule.find(t)).min();
    match at {
        Some(i) => format!("{} {c}{}", &rule[..i], &rule[i..]),
        None => format!("{c} {rule}"),
    }
}

fn chain(rules: Vec<String>) -> Vec<String> {
    rules.iter().map(|r| with_comment(r)).collect()
}

fn endpoint_chain_name(kind: EndpointKind, dir: Direction, iface: &str) -> String {
    let k = match (kind, dir) {
        (EndpointKind::Workload, Direction::Ingress) => "tw",
        (EndpointKind::Workload, Direction::Egress) => "fw",
        (EndpointKind::Host, Direction::Ingress) => "th",
        (EndpointKind::Host, Direction::Egress) => "fh",
    };
    format!("{PREFIX}{k}-{iface}")
}

fn render_family(rs: &Ruleset, fam: Family) -> Chains {
    let mut c = Chains::new();
    let wl = format!("{}+", rs.settings.interface_prefix);
    let clear = format!("-j MARK --set-xmark 0x0/{ACCEPT_MARK:#x}");
    let est = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_owned();
    c.insert(
        format!("{PREFIX}FORWARD"),
        chain(vec![
            est.clone(),
            format!("-i {wl} -m conntrack --ctstate INVALID -j DROP"),
            format!("-o {wl} -m conntrack --ctstate INVALID -j DROP"),
            clear.clone(),
            format!("-i {wl} -j {PREFIX}from-wl"),
            clear.clone(),
            format!("-o {wl} -j {PREFIX}to-wl"),
            // Both directions returned: allowed.
            format!("-i {wl} -j ACCEPT"),
            format!("-o {wl} -j ACCEPT"),
        ]),
    );
    let mut input = vec![
        est.clone(),
        format!("-i {wl} -m conntrack --ctstate INVALID -j DROP"),
    ];
    if fam == Family::V6 {
        for t in ICMPV6_TO_HOST {
            input.push(format!(
                "-i {wl} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT"
            ));
        }
    }
    if rs.settings.endpoint_to_host_accept {
        input.push(clear.clone());
        input.push(format!("-i {wl} -j {PREFIX}from-wl"));
        input.push(format!("-i {wl} -j ACCEPT"));
    } else {
        input.push(format!("-i {wl} -j DROP"));
    }
    let failsafe = |list: &[(u8, u16)]| -> Vec<String> {
        let mut by: BTreeMap<u8, Vec<(u16, u16)>> = BTreeMap::new();
        for (p, port) in list {
            by.entry(*p).or_default().push((*port, *port));
        }
        by.into_iter()
            .flat_map(|(p, ports)| {
                multiport(&ports)
                    .into_iter()
                    .map(move |chunk| {
                        format!(
                            "-p {} -m multiport --dports {chunk} -j ACCEPT",
                            proto_name(p)
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    input.extend(failsafe(&rs.settings.failsafe.inbound));
    input.push(clear.clone());
    input.push(format!("-j {PREFIX}to-host"));
    c.insert(format!("{PREFIX}INPUT"), chain(input));
    let mut output = vec![est, format!("-o {wl} -j ACCEPT")];
    output.extend(failsafe(&rs.settings.failsafe.outbound));
    output.push(clear);
    output.push(format!("-j {PREFIX}from-host"));
    c.insert(format!("{PREFIX}OUTPUT"), chain(output));

    let mut from_wl = Vec::new();
    let mut to_wl = Vec::new();
    let mut to_host = Vec::new();
    let mut from_host = Vec::new();
    for (iface, ep) in &rs.endpoints {
        for dir in [Direction::Ingress, Direction::Egress] {
            let name = endpoint_chain_name(ep.kind, dir, iface);
            let (list, flag) = match (ep.kind, dir) {
                (EndpointKind::Workload, Direction::Ingress) => (&mut to_wl, "-o"),
                (EndpointKind::Workload, Direction::Egress) => (&mut from_wl, "-i"),
                (EndpointKind::Host, Direction::Ingress) => (&mut to_host, "-i"),
                (EndpointKind::Host, Direction::Egress) => (&mut from_host, "-o"),
            };
            list.push(format!("{flag} {iface} -g {name}"));
            // Workload chains return when allowed (the other direction may follow); host
            // chains run alone in INPUT or OUTPUT and accept.
            let allowed = match ep.kind {
                EndpointKind::Workload => "-j RETURN",
                EndpointKind::Host => "-j ACCEPT",
            };
            let mut rules = Vec::new();
            for p in ep.chains(dir) {
                rules.push(format!("-j {PREFIX}{p}"));
                rules.push(format!(
                    "-m mark --mark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x} {allowed}"
                ));
            }
            rules.push(
                if !ep.chains(dir).is_empty() || ep.kind == EndpointKind::Host {
                    "-j DROP".to_owned()
                } else {
                    allowed.to_owned()
                },
            );
            c.insert(name, chain(rules));
        }
    }
    // An unknown workload interface is dropped (fail closed).
    from_wl.push(format!("-i {wl} -j DROP"));
    to_wl.push(format!("-o {wl} -j DROP"));
    c.insert(format!("{PREFIX}from-wl"), chain(from_wl));
    c.insert(format!("{PREFIX}to-wl"), chain(to_wl));
    c.insert(format!("{PREFIX}to-host"), chain(to_host));
    c.insert(format!("{PREFIX}from-host"), chain(from_host));

    for (name, pc) in &rs.policy_chains {
        let rules: Vec<String> = pc
            .rules
            .iter()
            .filter(|r| r.family.is_none_or(|f| f == fam))
            .flat_map(|r| render_rule(r, fam, &pc.policy, pc.kind))
            .collect();
        c.insert(format!("{PREFIX}{name}"), chain(rules));
    }
    c
}

/// Renders a ruleset for iptables and ipset.
pub fn render(rs: &Ruleset) -> IptState {
    let hooks: BTreeSet<String> = HOOKS.iter().map(|h| (*h).to_owned()).collect();
    IptState {
        sets: rs
            .sets
            .iter()
            .map(|(id, (def, members))| {
                (
                    format!("{PREFIX}{id}"),
                    (set_type(def), members.iter().map(member).collect()),
                )
            })
            .collect(),
        v4: render_family(rs, Family::V4),
        v6: render_family(rs, Family::V6),
        hooks4: hooks.clone(),
        hooks6: hooks,
    }
}

/// The `iptables-restore --noflush` input turning `old` into `new` for one family.
pub fn restore_script(old: &Chains, new: &Chains, old_hooks: &BTreeSet<String>) -> String {
    let mut s = String::from("*filter\n");
    let changed: Vec<&String> = new
        .iter()
        .filter(|(n, rules)| {
            old.get(*n).is_none_or(|o| {
                o.len() != rules.len()
                    || o.iter()
                        .zip(rules.iter())
                        .any(|(a, b)| comment_of(a) != comment_of(b))
            })
        })
        .map(|(n, _)| n)
        .collect();
    let gone: Vec<&String> = old.keys().filter(|n| !new.contains_key(*n)).collect();
    // Declaring a chain with --noflush creates it, or flushes it if it exists.
    for n in changed.iter().chain(&gone) {
        let _ = writeln!(s, ":{n} - [0:0]");
    }
    for n in &changed {
        for r in &new[*n] {
            let _ = writeln!(s, "-A {n} {r}");
        }
    }
    for h in HOOKS {
        if !old_hooks.contains(h) {
            let _ = writeln!(s, "-I {h} 1 -j {PREFIX}{h}");
        }
    }
    for n in &gone {
        let _ = writeln!(s, "-X {n}");
    }
    s.push_str("COMMIT\n");
    if changed.is_empty() && gone.is_empty() && HOOKS.iter().all(|h| old_hooks.contains(*h)) {
        return String::new();
    }
    s
}

/// `ipset restore` input: creations and member changes, and the destructions to run after
/// the rules that used the sets are gone.
pub fn ipset_scripts(old: &IptState, new: &IptState) -> (String, String) {
    let mut before = String::new();
    let mut after = String::new();
    for (name, (ty, members)) in &new.sets {
        let prev = old.sets.get(name).filter(|(t, _)| t == ty);
        if prev.is_none() {
            let _ = writeln!(before, "create {name} {ty} -exist");
        }
        let empty = BTreeSet::new();
        let old_m = prev.map(|(_, m)| m).unwrap_or(&empty);
        for m in old_m.difference(members) {
            let _ = writeln!(before, "del {name} {m} -exist");
        }
        for m in members.difference(old_m) {
            let _ = writeln!(before, "add {name} {m} -exist");
        }
    }
    for (name, (ty, _)) in &old.sets {
        if new.sets.get(name).is_none_or(|(t, _)| t != ty) {
            let _ = writeln!(after, "destroy {name}");
        }
    }
    (before, after)
}

/// Parses `iptables-save -t filter` output: our chains and which built-ins jump to them.
pub fn parse_save(text: &str) -> (Chains, BTreeSet<String>) {
    let mut chains = Chains::new();
    let mut hooks = BTreeSet::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix(':') {
            if let Some(n) = name
                .split_whitespace()
                .next()
                .filter(|n| n.starts_with(PREFIX))
            {
                chains.entry(n.to_owned()).or_default();
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let Some((chain, rule)) = rest.split_once(' ') else {
                continue;
            };
            if chain.starts_with(PREFIX) {
                chains
                    .entry(chain.to_owned())
                    .or_default()
                    .push(rule.to_owned());
            } else if HOOKS.contains(&chain) && rule.trim() == format!("-j {PREFIX}{chain}") {
                hooks.insert(chain.to_owned());
            }
        }
    }
    (chains, hooks)
}

/// Parses `ipset save` output: our sets.
pub fn parse_ipset_save(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut sets: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("create"), Some(name)) if name.starts_with(PREFIX) => {
                let ty = w.next().unwrap_or_default();
                let mut family = "inet";
                while let Some(x) = w.next() {
                    if x == "family" {
                        family = w.next().unwrap_or("inet");
                    }
                }
                sets.insert(
                    name.to_owned(),
                    (format!("{ty} family {family}"), BTreeSet::new()),
                );
            }
            (Some("add"), Some(name)) if name.starts_with(PREFIX) => {
                if let (Some(m), Some(s)) = (w.next(), sets.get_mut(name)) {
                    s.1.insert(m.to_owned());
                }
            }
            _ => {}
        }
    }
    sets
}

/// Applies rulesets with `ipset restore` and `iptables-restore --noflush` /
/// `ip6tables-restore --noflush`.
#[derive(Debug)]
pub struct IptablesApplier {
    exec: Exec,
    last: Option<IptState>,
    desired: Option<IptState>,
}

impl IptablesApplier {
    /// An applier that runs the tools through `exec`.
    pub fn new(exec: Exec) -> IptablesApplier {
        IptablesApplier {
            exec,
            last: None,
            desired: None,
        }
    }

    /// Reads back our chains and ipsets (only ours).
    pub fn read_back(&self) -> Result<IptState, ExecError> {
        let (v4, hooks4) = parse_save(&self.exec.run("iptables-save", &["-t", "filter"], "")?);
        let (v6, hooks6) = parse_save(&self.exec.run("ip6tables-save", &["-t", "filter"], "")?);
        let sets = parse_ipset_save(&self.exec.run("ipset", &["save"], "")?);
        Ok(IptState {
            sets,
            v4,
            v6,
            hooks4,
            hooks6,
        })
    }

    /// Removes every `tabby-*` chain, the jumps to them and every `tabby-*` ipset (on
    /// uninstall; never on a normal stop, where the fail-closed rules must stay).
    pub fn remove(&mut self) -> Result<(), ExecError> {
        self.last = None;
        self.desired = None;
        let old = self.read_back()?;
        for (tool, chains, hooks) in [
            ("iptables-restore", &old.v4, &old.hooks4),
            ("ip6tables-restore", &old.v6, &old.hooks6),
        ] {
            let mut s = String::from("*filter\n");
            for h in hooks {
                let _ = writeln!(s, "-D {h} -j {PREFIX}{h}");
            }
            for n in chains.keys() {
                let _ = writeln!(s, ":{n} - [0:0]");
            }
            for n in chains.keys() {
                let _ = writeln!(s, "-X {n}");
            }
            s.push_str("COMMIT\n");
            self.exec.run(tool, &["--noflush"], &s)?;
        }
        let mut destroy = String::new();
        for name in old.sets.keys() {
            let _ = writeln!(destroy, "destroy {name}");
        }
        if !destroy.is_empty() {
            self.exec.run("ipset", &["restore"], &destroy)?;
        }
        Ok(())
    }

    fn write(&mut self, old: &IptState, new: IptState) -> Result<usize, ExecError> {
        let result = self.write_inner(old, &new);
        match result {
            Ok(n) => {
                self.last = Some(new);
                Ok(n)
            }
            Err(e) => {
                self.last = None;
                Err(e)
            }
        }
    }

    fn write_inner(&self, old: &IptState, new: &IptState) -> Result<usize, ExecError> {
        let (before, after) = ipset_scripts(old, new);
        let mut lines = 0;
        if !before.is_empty() {
            lines += before.lines().count();
            self.exec.run("ipset", &["restore"], &before)?;
        }
        for (tool, o, n, h) in [
            ("iptables-restore", &old.v4, &new.v4, &old.hooks4),
            ("ip6tables-restore", &old.v6, &new.v6, &old.hooks6),
        ] {
            let script = restore_script(o, n, h);
            if !script.is_empty() {
                lines += script.lines().count();
                self.exec.run(tool, &["--noflush"], &script)?;
            }
        }
        if !after.is_empty() {
            lines += after.lines().count();
            self.exec.run("ipset", &["restore"], &after)?;
        }
        Ok(lines)
    }
}

impl Dataplane for IptablesApplier {
    fn apply(&mut self, rs: &Ruleset) -> Result<ApplyStats, ExecError> {
        let new = render(rs);
        let old = match self.last.take() {
            Some(l) => l,
            None => self.read_back()?,
        };
        let stats = ApplyStats {
            wrote: false,
            lines: 0,
            chains: new.v4.len() + new.v6.len(),
            sets: new.sets.len(),
            members: new.sets.values().map(|(_, m)| m.len()).sum(),
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
        if actual.same(&desired) {
            self.last = Some(actual);
            return Ok(false);
        }
        tracing::warn!("tabby's iptables chains or ipsets were changed by another tool; restoring");
        self.write(&actual, desired)?;
        Ok(true)
    }
}
