//! What a peer is sent: the advertisement rules of RFC 4271 §9.1.3 and RFC 4456 §6, and the
//! attributes and next hop a route leaves with.

use super::paths::Stored as Path;
use super::{PeerKind, PeerSession, RibConfig};
use crate::prefix::{Family, Prefix};
use crate::wire::{NextHop, PathAttributes};
use std::net::{IpAddr, Ipv6Addr};

/// Which next hop routes leave with towards a peer (Calico's `BGPPeer.nextHopMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub enum NextHopMode {
    /// RFC 4271: our address towards external peers and for our own routes; learned routes
    /// keep theirs towards internal peers (reflected routes too, RFC 4456 §10).
    #[default]
    Auto,
    /// Always our address (`next hop self`).
    Self_,
    /// Always the route's own next hop, also towards external peers
    /// (`keepOriginalNextHop`); our own routes still use ours.
    Keep,
}

/// The attribute variants one best path leaves with: they depend on the kind of peer, not
/// on the peer, so one change computes each once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Class {
    External,
    Internal,
    Reflected,
}

/// The decision to send a path to a peer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Decision {
    pub(super) class: Class,
    pub(super) next_hop: NextHop,
}

/// Whether `best` goes to the peer of `to`, and how. `None`: not sent.
pub(super) fn decide(
    config: &RibConfig,
    to: &PeerSession,
    prefix: &Prefix,
    best: &Path,
) -> Option<Decision> {
    if !to.families.contains(&prefix.family()) {
        return None;
    }
    let reflector = config.cluster_id.is_some();
    let class = match (&best.from, to.kind) {
        // Never back to where it came from.
        (Some(from), _) if from.address == to.address => return None,
        (None, PeerKind::External) => Class::External,
        (None, _) => Class::Internal,
        (Some(_), PeerKind::External) => Class::External,
        (Some(from), _) if from.ebgp => Class::Internal,
        // RFC 4456 §6: from a client to everyone; from a non-client to clients only.
        (Some(from), PeerKind::Internal) if from.kind == PeerKind::Client && reflector => {
            Class::Reflected
        }
        (Some(_), PeerKind::Client) if reflector => Class::Reflected,
        // RFC 4271 §9.2: internal routes are not sent to internal peers.
        (Some(_), _) => return None,
    };
    if class == Class::External && best.from.is_some() {
        // The peer would drop it as a loop (RFC 4271 §9.1.2): save both sides the work.
        let path = best.attrs().as_path.as_ref();
        if path.is_some_and(|p| p.contains(to.remote_as)) {
            return None;
        }
    }
    if class == Class::Reflected && best.attrs().originator_id == Some(to.router_id) {
        // The originator would drop it (RFC 4456 §8).
        return None;
    }
    let own = self_next_hop(config, to, prefix.family());
    let keep = match to.next_hop_mode {
        NextHopMode::Self_ => false,
        NextHopMode::Keep => true,
        NextHopMode::Auto => to.kind != PeerKind::External,
    };
    let next_hop = match (&best.from, best.next_hop()) {
        (None, Some(given)) => Some(given),
        (None, None) => own,
        (Some(_), Some(theirs)) if keep => Some(theirs),
        (Some(_), _) => own,
    }?;
    // An IPv6 next hop for IPv4 NLRI needs RFC 8950, which tabby does not negotiate.
    if prefix.family() == Family::Ipv4Unicast && !matches!(next_hop, NextHop::V4(_)) {
        return None;
    }
    Some(Decision { class, next_hop })
}

/// Our next hop for `family` on a session: the session's own address when it is of the
/// family, else the configured one (RFC 4798 allows an IPv4-mapped next hop for IPv6, which
/// is what a session over IPv4 without a configured IPv6 next hop gets: nothing, since no
/// kernel forwards by it).
fn self_next_hop(config: &RibConfig, to: &PeerSession, family: Family) -> Option<NextHop> {
    match (family, to.local_addr) {
        (Family::Ipv4Unicast, IpAddr::V4(a)) => Some(NextHop::V4(a)),
        (Family::Ipv4Unicast, IpAddr::V6(_)) => config.next_hop_v4.map(NextHop::V4),
        (Family::Ipv6Unicast, local) => match (config.next_hop_v6, local) {
            (Some(a), _) => Some(v6(a)),
            (None, IpAddr::V6(a)) if !is_link_local(a) => Some(v6(a)),
            _ => None,
        },
    }
}

/// The next hop of an originated route with an explicit next hop.
pub(super) fn next_hop_for(family: Family, given: IpAddr) -> Option<NextHop> {
    match (family, given) {
        (Family::Ipv4Unicast, IpAddr::V4(a)) => Some(NextHop::V4(a)),
        (Family::Ipv4Unicast, IpAddr::V6(_)) => None,
        (Family::Ipv6Unicast, IpAddr::V6(a)) => Some(v6(a)),
        // RFC 4798: an IPv4 next hop travels IPv4-mapped.
        (Family::Ipv6Unicast, IpAddr::V4(a)) => Some(NextHop::V4(a)),
    }
}

fn v6(global: Ipv6Addr) -> NextHop {
    NextHop::V6 {
        global,
        link_local: None,
    }
}

fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// The attributes `best` leaves with towards peers of `class`.
pub(super) fn attributes(config: &RibConfig, class: Class, best: &Path) -> PathAttributes {
    let mut a = (**best.attrs()).clone();
    a.next_hop = None;
    let path = a.as_path.take().unwrap_or_default();
    match class {
        Class::External => {
            // RFC 4271 §5.1.2, §5.1.4, §5.1.5; RFC 4456 §8: ORIGINATOR_ID and CLUSTER_LIST
            // do not leave the AS.
            a.as_path = Some(path.prepend(config.local_as));
            a.local_pref = None;
            if best.from.is_some() {
                a.med = None;
            }
            a.originator_id = None;
            a.cluster_list.clear();
        }
        Class::Internal | Class::Reflected => {
            a.as_path = Some(path);
            let external = best.from.as_ref().is_some_and(|f| f.ebgp);
            if external || a.local_pref.is_none() {
                a.local_pref = Some(100);
            }
            if class == Class::Reflected {
                if let Some(from) = &best.from {
                    a.originator_id.get_or_insert(from.router_id);
                }
                let cluster = config.cluster_id.unwrap_or(config.router_id);
                a.cluster_list.insert(0, cluster);
            }
        }
    }
    a
}
