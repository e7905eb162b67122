//! The BGP speaker as the calc wants it: started with the node's router ID, AS, port and
//! reflector cluster ID (restarted when one of those changes), its peers added, changed or
//! removed one by one (other sessions untouched), and the node's blocks originated.
//! Shared by the node agent and the standalone route reflector.

use crate::calc::{Calc, NextHopMode as CalcNextHopMode, PeerKind};
use crate::routes::Dst;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tabby_bgp::speaker::{
    NextHopMode, Origination, PeerConfig, PeerStatus, Selected, Speaker, SpeakerConfig,
    SpeakerError,
};
use tabby_bgp::wire::LargeCommunity;
use tabby_bgp::{Family, Prefix};
use tokio::sync::broadcast;

/// How the speaker is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BgpOptions {
    /// Hold time proposed to peers without a `keepaliveTime`.
    pub hold_time: u16,
    /// Originate the node's blocks (a standalone reflector does not).
    pub originate: bool,
}

/// The running speaker and what it was started with.
#[derive(Debug)]
pub struct Bgp {
    /// The speaker.
    pub speaker: Speaker,
    router_id: Ipv4Addr,
    asn: u32,
    port: u16,
    cluster_id: Option<Ipv4Addr>,
    /// Configured peers.
    pub peers: BTreeMap<IpAddr, PeerConfig>,
    /// What each peer is for.
    pub kinds: BTreeMap<IpAddr, PeerKind>,
    /// Originated prefixes, with the communities they carry.
    pub originated: BTreeMap<Prefix, Origination>,
}

impl Bgp {
    /// Peers with their kind's `/status` name, by address.
    pub fn peer_views(&self) -> Vec<(PeerStatus, &'static str)> {
        self.speaker
            .peers()
            .into_iter()
            .map(|status| {
                let kind = self
                    .kinds
                    .get(&status.address)
                    .map_or("peer", |k| k.as_str());
                (status, kind)
            })
            .collect()
    }
}

/// Warnings already given, so a condition that persists is logged once (shared/DESIGN.md §3:
/// unsupported fields are "logged once"), not on every update or reconcile.
#[derive(Debug, Default)]
pub struct Said(BTreeSet<String>);

impl Said {
    /// True the first time `what` is said.
    pub fn first(&mut self, what: String) -> bool {
        self.0.insert(what)
    }
}

/// Our route's attributes from Calico community values (`aa:nn` standard, RFC 1997;
/// `aa:nn:mm` large, RFC 8092). Values validation let through but that do not fit are
/// dropped.
fn origination(values: &[String]) -> Origination {
    let mut o = Origination::default();
    for v in values {
        let parts: Vec<Option<u32>> = v.split(':').map(|p| p.trim().parse().ok()).collect();
        match parts[..] {
            [Some(a), Some(n)] if a <= 0xffff && n <= 0xffff => o.communities.push(a << 16 | n),
            [Some(global), Some(local1), Some(local2)] => {
                o.large_communities.push(LargeCommunity {
                    global,
                    local1,
                    local2,
                })
            }
            _ => tracing::debug!(value = %v, "not a community; ignored"),
        }
    }
    o
}

fn prefix_of(dst: &Dst) -> Option<Prefix> {
    Prefix::new(dst.addr, dst.len).ok()
}

/// Brings `bgp` to what `calc` wants. Returns the change stream of a speaker it started (the
/// caller resubscribes). `restarting`: a new speaker restarts gracefully (RFC 4724).
pub async fn sync(
    bgp: &mut Option<Bgp>,
    calc: &Calc,
    options: BgpOptions,
    restarting: bool,
    said: &mut Said,
) -> Option<broadcast::Receiver<Selected>> {
    let node = calc.node_info();
    let desired = calc.bgp();
    let mut started = None;
    if let Some(router_id) = node.router_id {
        let asn = node.asn.0;
        let port = desired.listen_port;
        let cluster_id = node.rr_cluster_id;
        let restart = bgp.as_ref().is_some_and(|b| {
            b.router_id != router_id || b.asn != asn || b.port != port || b.cluster_id != cluster_id
        });
        if restart {
            tracing::info!("router ID, AS, port or cluster ID changed: restarting the BGP speaker");
            if let Some(b) = bgp.take() {
                b.speaker.shutdown().await;
            }
        }
        if bgp.is_none() {
            let mut config = SpeakerConfig::new(router_id, asn);
            config.listen = Some(SocketAddr::new(IpAddr::from([0u16; 8]), port));
            config.next_hop_v4 = node.ipv4.map(|(a, _)| a);
            config.next_hop_v6 = node.ipv6.map(|(a, _)| a);
            config.cluster_id = cluster_id;
            config.restarting = restarting;
            let speaker = match Speaker::start(config.clone()).await {
                // A node without IPv6 cannot listen on `::`; listen on IPv4 only.
                Err(SpeakerError::Listen { .. }) => {
                    config.listen = Some(SocketAddr::new(IpAddr::from([0u8; 4]), port));
                    Speaker::start(config).await
                }
                other => other,
            };
            match speaker {
                Ok(speaker) => {
                    started = Some(speaker.subscribe());
                    *bgp = Some(Bgp {
                        speaker,
                        router_id,
                        asn,
                        port,
                        cluster_id,
                        peers: BTreeMap::new(),
                        kinds: BTreeMap::new(),
                        originated: BTreeMap::new(),
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the BGP speaker; retrying on the next change")
                }
            }
        }
    }
    let Some(b) = bgp.as_mut() else {
        return started;
    };
    // Originated blocks first, so that a peer's first table (and End-of-RIB) has them.
    let want: BTreeMap<Prefix, Origination> = if options.originate {
        calc.originated()
            .iter()
            .filter_map(|dst| Some((prefix_of(dst)?, origination(&calc.communities(dst)))))
            .collect()
    } else {
        BTreeMap::new()
    };
    for p in b.originated.keys().filter(|p| !want.contains_key(p)) {
        b.speaker.withdraw(*p);
    }
    for (p, o) in &want {
        if b.originated.get(p) != Some(o) {
            b.speaker.originate_with(*p, o.clone());
        }
    }
    b.originated = want;
    // Peers: add, change or remove only what differs; other sessions are untouched.
    let mut want: BTreeMap<IpAddr, PeerConfig> = BTreeMap::new();
    for (ip, peer) in &desired.peers {
        if peer.password_missing && said.first(format!("password {ip}")) {
            tracing::warn!(peer = %ip, "the BGP password's Secret or key does not exist; peering without a password until it does");
        }
        let mut config = PeerConfig::new(*ip, peer.asn.0);
        config.port = peer.port;
        config.hold_time = peer.keepalive_time.map_or(options.hold_time, |k| {
            u16::try_from(k.as_secs() * 3).unwrap_or(u16::MAX).max(3)
        });
        config.local_address = match ip {
            IpAddr::V4(_) => node.ipv4.map(|(a, _)| IpAddr::V4(a)),
            IpAddr::V6(_) => node.ipv6.map(|(a, _)| IpAddr::V6(a)),
        };
        // As Calico's BIRD configuration: IPv4 sessions carry IPv4, IPv6 sessions IPv6.
        config.families = vec![if ip.is_ipv4() {
            Family::Ipv4Unicast
        } else {
            Family::Ipv6Unicast
        }];
        config.rr_client = peer.kind == PeerKind::RrClient;
        config.next_hop_mode = match peer.next_hop {
            CalcNextHopMode::Auto => NextHopMode::Auto,
            CalcNextHopMode::SetSelf => NextHopMode::Self_,
            CalcNextHopMode::Keep => NextHopMode::Keep,
        };
        config.restart_time = peer
            .max_restart_time
            .map(|t| u16::try_from(t.as_secs()).unwrap_or(u16::MAX).min(4095));
        config.password = peer.password.clone();
        want.insert(*ip, config);
        b.kinds.insert(*ip, peer.kind);
    }
    let gone: Vec<IpAddr> = b
        .peers
        .keys()
        .filter(|ip| !want.contains_key(ip))
        .copied()
        .collect();
    for ip in gone {
        let _ = b.speaker.remove_peer(ip).await;
        b.peers.remove(&ip);
        b.kinds.remove(&ip);
    }
    for (ip, config) in want {
        match b.peers.get(&ip) {
            Some(old) if *old == config => {}
            Some(_) => match b.speaker.update_peer(config.clone()).await {
                Ok(()) => {
                    b.peers.insert(ip, config);
                }
                Err(e) => tracing::warn!(peer = %ip, error = %e, "cannot update peer"),
            },
            None => match b.speaker.add_peer(config.clone()) {
                Ok(()) => {
                    b.peers.insert(ip, config);
                }
                Err(e) => tracing::warn!(peer = %ip, error = %e, "cannot add peer"),
            },
        }
    }
    started
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calico_community_values_become_standard_and_large_communities() {
        let o = origination(&["65000:100".into(), "65000:1:2".into(), "70000:1".into()]);
        assert_eq!(o.communities, vec![65000 << 16 | 100]);
        assert_eq!(
            o.large_communities,
            vec![LargeCommunity {
                global: 65000,
                local1: 1,
                local2: 2
            }]
        );
    }

    #[test]
    fn a_warning_is_given_once_per_subject() {
        let mut said = Said::default();
        assert!(said.first("password 10.0.0.2".into()));
        assert!(!said.first("password 10.0.0.2".into()));
        assert!(said.first("password 10.0.0.3".into()));
    }
}
