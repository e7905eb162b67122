//! Routes learned over BGP, gathered from every peer into one candidate set per prefix.
//!
//! Until the RIB with best-path selection exists (bgp-rib), every received route is a
//! candidate, and a prefix received from several peers gets all their next hops (ECMP), as a
//! full mesh of equal nodes would. Pure: fed with the speaker's route events.

use crate::routes::Dst;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use tabby_bgp::speaker::{ReceivedRoute, RouteChange, RouteEvent};

/// The learned routes of all peers.
#[derive(Debug, Default, Clone)]
pub struct Learned {
    /// Per peer: prefix to next hop.
    by_peer: HashMap<IpAddr, BTreeMap<Dst, IpAddr>>,
    /// Per prefix: the peers announcing it, with their next hop.
    by_prefix: BTreeMap<Dst, BTreeMap<IpAddr, IpAddr>>,
}

fn dst_of(route: &ReceivedRoute) -> Dst {
    Dst {
        addr: route.nlri.prefix.addr(),
        len: route.nlri.prefix.len(),
    }
}

impl Learned {
    /// Nothing learned.
    pub fn new() -> Learned {
        Learned::default()
    }

    fn insert(&mut self, peer: IpAddr, dst: Dst, next_hop: IpAddr) {
        self.by_peer.entry(peer).or_default().insert(dst, next_hop);
        self.by_prefix
            .entry(dst)
            .or_default()
            .insert(peer, next_hop);
    }

    fn remove(&mut self, peer: IpAddr, dst: Dst) {
        if let Some(routes) = self.by_peer.get_mut(&peer) {
            routes.remove(&dst);
        }
        if let Some(peers) = self.by_prefix.get_mut(&dst) {
            peers.remove(&peer);
            if peers.is_empty() {
                self.by_prefix.remove(&dst);
            }
        }
    }

    fn clear_peer(&mut self, peer: IpAddr) {
        for dst in self.by_peer.remove(&peer).unwrap_or_default().into_keys() {
            if let Some(peers) = self.by_prefix.get_mut(&dst) {
                peers.remove(&peer);
                if peers.is_empty() {
                    self.by_prefix.remove(&dst);
                }
            }
        }
    }

    /// Applies one event of the speaker's route stream. Returns true when the candidate set
    /// may have changed.
    pub fn apply(&mut self, event: &RouteEvent) -> bool {
        match &event.change {
            RouteChange::Announced(route) => {
                let dst = dst_of(route);
                match route.next_hop {
                    Some(nh) => self.insert(event.peer, dst, nh.addr()),
                    // No usable next hop: it cannot be forwarded to; drop any older one.
                    None => self.remove(event.peer, dst),
                }
                true
            }
            RouteChange::Withdrawn(nlri) => {
                self.remove(
                    event.peer,
                    Dst {
                        addr: nlri.prefix.addr(),
                        len: nlri.prefix.len(),
                    },
                );
                true
            }
            RouteChange::Cleared => {
                self.clear_peer(event.peer);
                true
            }
            RouteChange::EndOfRib(_) => false,
        }
    }

    /// Replaces everything known from `peer` with `routes` (after the event stream lagged).
    pub fn replace_peer(&mut self, peer: IpAddr, routes: &[ReceivedRoute]) {
        self.clear_peer(peer);
        for r in routes {
            if let Some(nh) = r.next_hop {
                self.insert(peer, dst_of(r), nh.addr());
            }
        }
    }

    /// Forgets a peer that is no longer configured.
    pub fn forget_peer(&mut self, peer: IpAddr) {
        self.clear_peer(peer);
    }

    /// Every learned prefix with its next hops (deduplicated, sorted).
    pub fn routes(&self) -> Vec<(Dst, Vec<IpAddr>)> {
        self.by_prefix
            .iter()
            .map(|(dst, peers)| {
                let hops: BTreeSet<IpAddr> = peers.values().copied().collect();
                (*dst, hops.into_iter().collect())
            })
            .collect()
    }

    /// Number of learned prefixes.
    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    /// True when nothing is learned.
    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tabby_bgp::wire::{NextHop, Nlri, PathAttributes};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn announce(peer: &str, prefix: &str, nh: &str) -> RouteEvent {
        let prefix: tabby_bgp::Prefix = prefix.parse().unwrap_or_else(|_| panic!("{prefix}"));
        let next_hop = match ip(nh) {
            IpAddr::V4(a) => NextHop::V4(a),
            IpAddr::V6(a) => NextHop::V6 {
                global: a,
                link_local: None,
            },
        };
        RouteEvent {
            peer: ip(peer),
            change: RouteChange::Announced(ReceivedRoute {
                nlri: Nlri::from(prefix),
                next_hop: Some(next_hop),
                attrs: Arc::new(PathAttributes::default()),
            }),
        }
    }

    fn withdraw(peer: &str, prefix: &str) -> RouteEvent {
        let prefix: tabby_bgp::Prefix = prefix.parse().unwrap_or_else(|_| panic!("{prefix}"));
        RouteEvent {
            peer: ip(peer),
            change: RouteChange::Withdrawn(Nlri::from(prefix)),
        }
    }

    fn dst(s: &str) -> Dst {
        let (a, l) = s.split_once('/').unwrap_or(("0.0.0.0", "0"));
        Dst {
            addr: ip(a),
            len: l.parse().unwrap_or(0),
        }
    }

    #[test]
    fn a_prefix_from_two_peers_has_both_next_hops() {
        let mut l = Learned::new();
        l.apply(&announce("10.0.0.2", "10.244.2.0/26", "10.0.0.2"));
        l.apply(&announce("10.0.0.3", "10.244.2.0/26", "10.0.0.3"));
        assert_eq!(
            l.routes(),
            vec![(dst("10.244.2.0/26"), vec![ip("10.0.0.2"), ip("10.0.0.3")])]
        );
    }

    #[test]
    fn a_withdraw_removes_only_that_peers_next_hop() {
        let mut l = Learned::new();
        l.apply(&announce("10.0.0.2", "10.244.2.0/26", "10.0.0.2"));
        l.apply(&announce("10.0.0.3", "10.244.2.0/26", "10.0.0.3"));
        l.apply(&withdraw("10.0.0.2", "10.244.2.0/26"));
        assert_eq!(
            l.routes(),
            vec![(dst("10.244.2.0/26"), vec![ip("10.0.0.3")])]
        );
        l.apply(&withdraw("10.0.0.3", "10.244.2.0/26"));
        assert!(l.is_empty());
    }

    #[test]
    fn a_session_going_down_clears_its_routes() {
        let mut l = Learned::new();
        l.apply(&announce("10.0.0.2", "10.244.2.0/26", "10.0.0.2"));
        l.apply(&announce("10.0.0.2", "fd00:2::/122", "fd00::2"));
        l.apply(&RouteEvent {
            peer: ip("10.0.0.2"),
            change: RouteChange::Cleared,
        });
        assert!(l.is_empty());
    }

    #[test]
    fn a_reannouncement_moves_the_next_hop() {
        let mut l = Learned::new();
        l.apply(&announce("10.0.0.9", "10.244.2.0/26", "10.0.0.2"));
        l.apply(&announce("10.0.0.9", "10.244.2.0/26", "10.0.0.3"));
        assert_eq!(
            l.routes(),
            vec![(dst("10.244.2.0/26"), vec![ip("10.0.0.3")])]
        );
    }
}
