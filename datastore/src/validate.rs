//! Validation of every field tabby uses, with errors naming the field.

use crate::calico::{EntityRule, Rule};
use crate::resource::Resource;
use std::fmt;
use std::net::IpAddr;

/// A field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.cidr` or `spec.ingress[0].destination.ports[1]`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() || self.field == "." {
            f.write_str(&self.message)
        } else {
            write!(f, "field {}: {}", self.field, self.message)
        }
    }
}

type Check = Result<(), FieldError>;

/// A CIDR: an address and a prefix length that fits it. Host bits may be set (Calico
/// accepts `10.0.0.1/24` as the network `10.0.0.0/24`).
pub fn cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a CIDR (ADDRESS/LENGTH)"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not a CIDR: bad address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| format!("{s:?} is not a CIDR: the length must be 0 to {max}"))?;
    Ok((addr, len))
}

/// A Go duration as Calico writes them (`120s`, `1m30s`, `2h`, `500ms`).
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 120s, 1m30s)");
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

fn check_cidr(field: &str, s: &str) -> Check {
    cidr(s).map(|_| ()).map_err(|m| FieldError::new(field, m))
}

fn check_selector(field: &str, s: &str) -> Check {
    tabby_selector::Selector::parse(s)
        .map(|_| ())
        .map_err(|e| FieldError::new(field, format!("invalid selector: {e}")))
}

fn check_duration(field: &str, s: &str) -> Check {
    duration(s)
        .map(|_| ())
        .map_err(|m| FieldError::new(field, m))
}

fn check_one_of(field: &str, value: &str, allowed: &[&str]) -> Check {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{value:?} is not one of {}", allowed.join(", ")),
        ))
    }
}

fn check_secret(field: &str, s: &crate::calico::SecretSource) -> Check {
    match &s.secret_key_ref {
        Some(r) if !r.name.is_empty() && !r.key.is_empty() => Ok(()),
        Some(_) => Err(FieldError::new(
            format!("{field}.secretKeyRef"),
            "name and key must both be set",
        )),
        None => Err(FieldError::new(field, "only secretKeyRef is supported")),
    }
}

/// `peerIP`: an address, or an address and port (`10.0.0.1:1179`, `[fd00::1]:1179`).
pub fn peer_ip(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    let bad = || format!("{s:?} is not an IP address or ADDRESS:PORT");
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    let sa: std::net::SocketAddr = s.parse().map_err(|_| bad())?;
    Ok((sa.ip(), Some(sa.port())))
}

fn check_community(field: &str, value: &str) -> Check {
    let parts: Vec<&str> = value.split(':').collect();
    let ok = match parts.as_slice() {
        [a, b] => a.parse::<u16>().is_ok() && b.parse::<u16>().is_ok(),
        [a, b, c] => {
            parts.iter().all(|p| p.parse::<u32>().is_ok())
                && !a.is_empty()
                && !b.is_empty()
                && !c.is_empty()
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{value:?} is not a community (aa:nn or aa:nn:mm)"),
        ))
    }
}

fn check_entity(field: &str, e: &EntityRule) -> Check {
    for (name, list) in [("nets", &e.nets), ("notNets", &e.not_nets)] {
        for (i, n) in list.iter().flatten().enumerate() {
            check_cidr(&format!("{field}.{name}[{i}]"), n)?;
        }
    }
    for (name, sel) in [
        ("selector", &e.selector),
        ("notSelector", &e.not_selector),
        ("namespaceSelector", &e.namespace_selector),
    ] {
        if let Some(s) = sel {
            check_selector(&format!("{field}.{name}"), s)?;
        }
    }
    Ok(())
}

fn check_rules(field: &str, rules: &Option<Vec<Rule>>) -> Check {
    for (i, r) in rules.iter().flatten().enumerate() {
        let f = format!("{field}[{i}]");
        if let Some(v) = r.ip_version {
            if v != 4 && v != 6 {
                return Err(FieldError::new(
                    format!("{f}.ipVersion"),
                    format!("{v} is not 4 or 6"),
                ));
            }
        }
        for (name, icmp) in [("icmp", &r.icmp), ("notICMP", &r.not_icmp)] {
            if let Some(icmp) = icmp {
                if icmp.code.is_some() && icmp.icmp_type.is_none() {
                    return Err(FieldError::new(
                        format!("{f}.{name}.code"),
                        "a code needs a type",
                    ));
                }
                if icmp.icmp_type == Some(255) {
                    return Err(FieldError::new(
                        format!("{f}.{name}.type"),
                        "255 is not an ICMP type",
                    ));
                }
            }
        }
        let has_ports = |e: &EntityRule| e.ports.is_some() || e.not_ports.is_some();
        if has_ports(&r.source) || has_ports(&r.destination) {
            let ports_ok = r
                .protocol
                .as_ref()
                .and_then(|p| p.number())
                .is_some_and(|n| matches!(n, 6 | 17 | 132 | 136));
            if !ports_ok {
                return Err(FieldError::new(
                    format!("{f}.protocol"),
                    "ports need protocol TCP, UDP, SCTP or UDPLite",
                ));
            }
        }
        check_entity(&format!("{f}.source"), &r.source)?;
        check_entity(&format!("{f}.destination"), &r.destination)?;
    }
    Ok(())
}

fn check_order(order: Option<f64>) -> Check {
    match order {
        Some(o) if !o.is_finite() => Err(FieldError::new("spec.order", "must be a finite number")),
        _ => Ok(()),
    }
}

/// Validates the fields tabby uses.
pub fn resource(r: &Resource) -> Check {
    match r {
        Resource::Node(n) => {
            let annotations = n.metadata.annotations.clone().unwrap_or_default();
            for key in [
                "projectcalico.org/IPv4Address",
                "projectcalico.org/IPv6Address",
            ] {
                if let Some(v) = annotations.get(key) {
                    check_cidr(&format!("metadata.annotations[{key}]"), v)?;
                }
            }
            if let Some(v) = annotations.get("projectcalico.org/ASNumber") {
                v.parse::<crate::AsNumber>().map_err(|e| {
                    FieldError::new(
                        "metadata.annotations[projectcalico.org/ASNumber]",
                        e.to_string(),
                    )
                })?;
            }
            if let Some(v) = annotations.get("projectcalico.org/RouteReflectorClusterID") {
                v.parse::<std::net::Ipv4Addr>().map_err(|_| {
                    FieldError::new(
                        "metadata.annotations[projectcalico.org/RouteReflectorClusterID]",
                        format!("{v:?} is not a cluster ID (an IPv4 address such as 224.0.0.1)"),
                    )
                })?;
            }
            let spec = n.spec.as_ref();
            for (i, c) in spec
                .and_then(|s| s.pod_cidrs.as_ref())
                .into_iter()
                .flatten()
                .enumerate()
            {
                check_cidr(&format!("spec.podCIDRs[{i}]"), c)?;
            }
            Ok(())
        }
        Resource::Pod(p) => {
            let status = p.status.as_ref();
            for (i, ip) in status
                .and_then(|s| s.pod_ips.as_ref())
                .into_iter()
                .flatten()
                .enumerate()
            {
                if ip.ip.parse::<IpAddr>().is_err() {
                    return Err(FieldError::new(
                        format!("status.podIPs[{i}].ip"),
                        format!("{:?} is not an IP address", ip.ip),
                    ));
                }
            }
            Ok(())
        }
        Resource::Namespace(_) | Resource::Secret(_) => Ok(()),
        Resource::K8sNetworkPolicy(np) => {
            let Some(spec) = &np.spec else { return Ok(()) };
            let rules = spec
                .ingress
                .iter()
                .flatten()
                .map(|r| ("ingress", r.from.as_ref(), r.ports.as_ref()))
                .chain(
                    spec.egress
                        .iter()
                        .flatten()
                        .map(|r| ("egress", r.to.as_ref(), r.ports.as_ref())),
                );
            for (i, (dir, peers, ports)) in rules.enumerate() {
                let f = format!("spec.{dir}[{i}]");
                for (j, peer) in peers.into_iter().flatten().enumerate() {
                    if let Some(block) = &peer.ip_block {
                        check_cidr(&format!("{f}.peers[{j}].ipBlock.cidr"), &block.cidr)?;
                        for (k, e) in block.except.iter().flatten().enumerate() {
                            check_cidr(&format!("{f}.peers[{j}].ipBlock.except[{k}]"), e)?;
                        }
                    }
                }
                for (j, port) in ports.into_iter().flatten().enumerate() {
                    if let Some(p) = &port.protocol {
                        check_one_of(
                            &format!("{f}.ports[{j}].protocol"),
                            p,
                            &["TCP", "UDP", "SCTP"],
                        )?;
                    }
                    if let (
                        Some(end),
                        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(start)),
                    ) = (port.end_port, &port.port)
                    {
                        if end < *start {
                            return Err(FieldError::new(
                                format!("{f}.ports[{j}].endPort"),
                                format!("{end} is below port {start}"),
                            ));
                        }
                    }
                }
            }
            Ok(())
        }
        Resource::BGPConfiguration(c) => {
            let s = &c.spec;
            for (i, comm) in s.communities.iter().flatten().enumerate() {
                if let Some(v) = &comm.value {
                    check_community(&format!("spec.communities[{i}].value"), v)?;
                }
            }
            for (i, p) in s.prefix_advertisements.iter().flatten().enumerate() {
                if let Some(c) = &p.cidr {
                    check_cidr(&format!("spec.prefixAdvertisements[{i}].cidr"), c)?;
                }
                for (j, comm) in p.communities.iter().enumerate() {
                    let named = s
                        .communities
                        .iter()
                        .flatten()
                        .any(|c| c.name.as_deref() == Some(comm));
                    if !named {
                        check_community(
                            &format!("spec.prefixAdvertisements[{i}].communities[{j}]"),
                            comm,
                        )?;
                    }
                }
            }
            if let Some(pw) = &s.node_mesh_password {
                check_secret("spec.nodeMeshPassword", pw)?;
            }
            if let Some(d) = &s.node_mesh_max_restart_time {
                check_duration("spec.nodeMeshMaxRestartTime", d)?;
            }
            if s.listen_port == Some(0) {
                return Err(FieldError::new("spec.listenPort", "0 is not a port"));
            }
            Ok(())
        }
        Resource::BGPPeer(p) => {
            let s = &p.spec;
            if s.node.is_some() && s.node_selector.is_some() {
                return Err(FieldError::new(
                    "spec.nodeSelector",
                    "node and nodeSelector cannot both be set",
                ));
            }
            if let Some(sel) = &s.node_selector {
                check_selector("spec.nodeSelector", sel)?;
            }
            match (&s.peer_ip, &s.peer_selector) {
                (Some(_), Some(_)) => {
                    return Err(FieldError::new(
                        "spec.peerSelector",
                        "peerIP and peerSelector cannot both be set",
                    ))
                }
                (None, None) => {
                    return Err(FieldError::new(
                        "spec.peerIP",
                        "one of peerIP or peerSelector is required",
                    ))
                }
                (Some(ip), None) => {
                    peer_ip(ip).map_err(|m| FieldError::new("spec.peerIP", m))?;
                    if s.as_number.is_none() {
                        return Err(FieldError::new("spec.asNumber", "required with peerIP"));
                    }
                }
                (None, Some(sel)) => check_selector("spec.peerSelector", sel)?,
            }
            if let Some(pw) = &s.password {
                check_secret("spec.password", pw)?;
            }
            if let Some(m) = &s.next_hop_mode {
                check_one_of("spec.nextHopMode", m, &["Auto", "Self", "Keep"])?;
            }
            if let Some(m) = &s.source_address {
                check_one_of("spec.sourceAddress", m, &["UseNodeIP", "None"])?;
            }
            for (name, d) in [
                ("maxRestartTime", &s.max_restart_time),
                ("keepaliveTime", &s.keepalive_time),
            ] {
                if let Some(d) = d {
                    check_duration(&format!("spec.{name}"), d)?;
                }
            }
            Ok(())
        }
        Resource::IPPool(p) => {
            let (addr, len) = cidr(&p.spec.cidr).map_err(|m| FieldError::new("spec.cidr", m))?;
            if let Some(b) = p.spec.block_size {
                let (lo, hi) = if addr.is_ipv4() { (20, 32) } else { (116, 128) };
                if b < lo || b > hi || b < len {
                    return Err(FieldError::new(
                        "spec.blockSize",
                        format!("{b} is not {lo} to {hi} and at least the pool's length {len}"),
                    ));
                }
            }
            if let Some(sel) = &p.spec.node_selector {
                check_selector("spec.nodeSelector", sel)?;
            }
            Ok(())
        }
        Resource::IPAMBlock(b) => {
            check_cidr("spec.cidr", &b.spec.cidr)?;
            if let Some(a) = &b.spec.affinity {
                let ok = a
                    .split_once(':')
                    .is_some_and(|(kind, name)| !kind.is_empty() && !name.is_empty());
                if !ok {
                    return Err(FieldError::new(
                        "spec.affinity",
                        format!("{a:?} is not of the form host:<node>"),
                    ));
                }
            }
            Ok(())
        }
        Resource::NetworkPolicy(np) => {
            check_order(np.spec.order)?;
            if let Some(sel) = &np.spec.selector {
                check_selector("spec.selector", sel)?;
            }
            check_rules("spec.ingress", &np.spec.ingress)?;
            check_rules("spec.egress", &np.spec.egress)
        }
        Resource::GlobalNetworkPolicy(np) => {
            check_order(np.spec.order)?;
            for (name, sel) in [
                ("selector", &np.spec.selector),
                ("namespaceSelector", &np.spec.namespace_selector),
            ] {
                if let Some(sel) = sel {
                    check_selector(&format!("spec.{name}"), sel)?;
                }
            }
            check_rules("spec.ingress", &np.spec.ingress)?;
            check_rules("spec.egress", &np.spec.egress)
        }
        Resource::FelixConfiguration(f) => {
            if let Some(p) = &f.spec.interface_prefix {
                let ok = p.split(',').all(|p| {
                    !p.is_empty() && p.len() <= 4 && p.chars().all(|c| c.is_ascii_alphanumeric())
                });
                if !ok {
                    return Err(FieldError::new(
                        "spec.interfacePrefix",
                        format!("{p:?} is not a list of short alphanumeric prefixes"),
                    ));
                }
            }
            Ok(())
        }
        Resource::HostEndpoint(h) => {
            if h.spec.node.as_deref().unwrap_or_default().is_empty() {
                return Err(FieldError::new("spec.node", "required"));
            }
            for (i, ip) in h.spec.expected_ips.iter().flatten().enumerate() {
                if ip.parse::<IpAddr>().is_err() {
                    return Err(FieldError::new(
                        format!("spec.expectedIPs[{i}]"),
                        format!("{ip:?} is not an IP address"),
                    ));
                }
            }
            Ok(())
        }
    }
}

/// Fields set that tabby does not implement yet.
pub fn unsupported(r: &Resource) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut flag = |set: bool, name: &'static str| {
        if set {
            out.push(name);
        }
    };
    match r {
        Resource::BGPConfiguration(c) => {
            let s = &c.spec;
            flag(s.service_cluster_ips.is_some(), "spec.serviceClusterIPs");
            flag(s.service_external_ips.is_some(), "spec.serviceExternalIPs");
            flag(
                s.service_load_balancer_ips.is_some(),
                "spec.serviceLoadBalancerIPs",
            );
            flag(
                s.bind_mode.as_deref().is_some_and(|m| m != "None"),
                "spec.bindMode",
            );
            flag(s.ignored_interfaces.is_some(), "spec.ignoredInterfaces");
        }
        Resource::BGPPeer(p) => {
            let s = &p.spec;
            flag(
                s.num_allowed_local_as_numbers.is_some(),
                "spec.numAllowedLocalASNumbers",
            );
            flag(s.ttl_security.is_some(), "spec.ttlSecurity");
            flag(s.filters.is_some(), "spec.filters");
            flag(s.reachable_by.is_some(), "spec.reachableBy");
            flag(
                s.local_workload_selector.is_some(),
                "spec.localWorkloadSelector",
            );
        }
        Resource::IPPool(p) => {
            flag(
                p.spec
                    .vxlan_mode
                    .is_some_and(|m| m != crate::calico::EncapMode::Never),
                "spec.vxlanMode",
            );
            flag(p.spec.nat_outgoing == Some(true), "spec.natOutgoing");
        }
        Resource::NetworkPolicy(np) => {
            flag(
                np.spec.tier.as_deref().is_some_and(|t| t != "default"),
                "spec.tier",
            );
            flag(
                np.spec.service_account_selector.is_some(),
                "spec.serviceAccountSelector",
            );
        }
        Resource::GlobalNetworkPolicy(np) => {
            flag(
                np.spec.tier.as_deref().is_some_and(|t| t != "default"),
                "spec.tier",
            );
            flag(
                np.spec.service_account_selector.is_some(),
                "spec.serviceAccountSelector",
            );
            flag(np.spec.do_not_track == Some(true), "spec.doNotTrack");
            flag(np.spec.pre_dnat == Some(true), "spec.preDNAT");
            flag(
                np.spec.apply_on_forward == Some(true),
                "spec.applyOnForward",
            );
        }
        Resource::FelixConfiguration(f) => flag(
            !f.spec.other.is_empty(),
            "spec (settings other than interfacePrefix, failsafe ports, deviceRouteProtocol)",
        ),
        _ => {}
    }
    out
}
