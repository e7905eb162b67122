//! Routes learned over BGP, as the kernel should have them: per prefix, the next hops of the
//! speaker's multipath set (its best path and the paths as good as it, RFC 4271 §9.1).
//!
//! After a restart it also holds the routes the previous run left in the kernel (graceful
//! restart, RFC 4724 §4.1: the forwarding state is kept while BGP comes back). They stay
//! wanted, for prefixes the speaker has not learned again, until the speaker has what it
//! needs to replace them: its deferral is over and the peers they point at sent End-of-RIB.
//! Pure: fed with the speaker's multipath changes.

use crate::routes::Dst;
use std::collections::BTreeMap;
use std::net::IpAddr;
use tabby_bgp::speaker::Selected;

/// The learned routes.
#[derive(Debug, Default, Clone)]
pub struct Learned {
    by_prefix: BTreeMap<Dst, Vec<IpAddr>>,
    preserved: BTreeMap<Dst, Vec<IpAddr>>,
}

fn dst_of(s: &Selected) -> Dst {
    Dst {
        addr: s.prefix.addr(),
        len: s.prefix.len(),
    }
}

fn gateways(s: &Selected) -> Vec<IpAddr> {
    let mut g: Vec<IpAddr> = s.hops.iter().map(|h| h.next_hop.addr()).collect();
    g.sort();
    g.dedup();
    g
}

impl Learned {
    /// Nothing learned, nothing preserved.
    pub fn new() -> Learned {
        Learned::default()
    }

    /// Nothing learned yet; `preserved` (routes left in the kernel by the previous run)
    /// kept until [`Learned::release_preserved`] lets them go.
    pub fn with_preserved(preserved: &[(Dst, Vec<IpAddr>)]) -> Learned {
        Learned {
            by_prefix: BTreeMap::new(),
            preserved: preserved.iter().cloned().collect(),
        }
    }

    /// Applies one change of a prefix's multipath set. Returns true when the routes may
    /// have changed.
    pub fn apply(&mut self, s: &Selected) -> bool {
        let dst = dst_of(s);
        if s.hops.is_empty() {
            self.by_prefix.remove(&dst).is_some()
        } else {
            self.by_prefix
                .insert(dst, gateways(s))
                .is_none_or(|old| old != gateways(s))
        }
    }

    /// Replaces everything learned with the speaker's current sets (after the change stream
    /// lagged, or when a new speaker starts).
    pub fn replace_all(&mut self, all: &[Selected]) {
        self.by_prefix = all
            .iter()
            .filter(|s| !s.hops.is_empty())
            .map(|s| (dst_of(s), gateways(s)))
            .collect();
    }

    /// Drops the preserved routes except those `still_awaited` keeps (a route is kept when
    /// one of its gateways is still awaited). Returns true when something was dropped.
    pub fn release_preserved(&mut self, still_awaited: impl Fn(&IpAddr) -> bool) -> bool {
        let before = self.preserved.len();
        self.preserved
            .retain(|_, gateways| gateways.iter().any(&still_awaited));
        self.preserved.len() != before
    }

    /// Number of preserved routes still held.
    pub fn preserved(&self) -> usize {
        self.preserved.len()
    }

    /// Every learned prefix with its next hops (sorted), and the preserved routes of
    /// prefixes not learned again.
    pub fn routes(&self) -> Vec<(Dst, Vec<IpAddr>)> {
        let mut all = self.by_prefix.clone();
        for (dst, gateways) in &self.preserved {
            all.entry(*dst).or_insert_with(|| gateways.clone());
        }
        all.into_iter().collect()
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
    use tabby_bgp::speaker::Hop;
    use tabby_bgp::wire::NextHop;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn selected(prefix: &str, hops: &[&str]) -> Selected {
        let prefix: tabby_bgp::Prefix = prefix.parse().unwrap_or_else(|_| panic!("{prefix}"));
        let hops = hops
            .iter()
            .map(|nh| Hop {
                peer: ip(nh),
                next_hop: match ip(nh) {
                    IpAddr::V4(a) => NextHop::V4(a),
                    IpAddr::V6(a) => NextHop::V6 {
                        global: a,
                        link_local: None,
                    },
                },
            })
            .collect();
        Selected { prefix, hops }
    }

    fn dst(s: &str) -> Dst {
        let (a, l) = s.split_once('/').unwrap_or(("0.0.0.0", "0"));
        Dst {
            addr: ip(a),
            len: l.parse().unwrap_or(0),
        }
    }

    #[test]
    fn a_multipath_set_becomes_a_route_with_every_next_hop() {
        let mut l = Learned::new();
        assert!(l.apply(&selected("10.244.2.0/26", &["10.0.0.3", "10.0.0.2"])));
        assert_eq!(
            l.routes(),
            vec![(dst("10.244.2.0/26"), vec![ip("10.0.0.2"), ip("10.0.0.3")])]
        );
    }

    #[test]
    fn an_empty_set_removes_the_route() {
        let mut l = Learned::new();
        l.apply(&selected("10.244.2.0/26", &["10.0.0.2"]));
        assert!(l.apply(&selected("10.244.2.0/26", &[])));
        assert!(l.is_empty());
    }

    #[test]
    fn the_same_set_again_changes_nothing() {
        let mut l = Learned::new();
        l.apply(&selected("10.244.2.0/26", &["10.0.0.2"]));
        assert!(!l.apply(&selected("10.244.2.0/26", &["10.0.0.2"])));
    }

    #[test]
    fn preserved_routes_stand_in_until_learned_again() {
        let mut l = Learned::with_preserved(&[
            (dst("10.244.2.0/26"), vec![ip("10.0.0.2")]),
            (dst("10.244.3.0/26"), vec![ip("10.0.0.3")]),
        ]);
        l.apply(&selected("10.244.2.0/26", &["10.0.0.9"]));
        assert_eq!(
            l.routes(),
            vec![
                (dst("10.244.2.0/26"), vec![ip("10.0.0.9")]),
                (dst("10.244.3.0/26"), vec![ip("10.0.0.3")]),
            ]
        );
    }

    #[test]
    fn preserved_routes_go_once_their_peers_are_no_longer_awaited() {
        let mut l = Learned::with_preserved(&[
            (dst("10.244.2.0/26"), vec![ip("10.0.0.2")]),
            (dst("10.244.3.0/26"), vec![ip("10.0.0.3")]),
        ]);
        assert!(l.release_preserved(|gw| *gw == ip("10.0.0.3")));
        assert_eq!(
            l.routes(),
            vec![(dst("10.244.3.0/26"), vec![ip("10.0.0.3")])]
        );
        assert!(l.release_preserved(|_| false));
        assert!(l.routes().is_empty());
    }

    #[test]
    fn a_replacement_after_lag_takes_the_speakers_sets() {
        let mut l = Learned::new();
        l.apply(&selected("10.244.2.0/26", &["10.0.0.2"]));
        l.replace_all(&[selected("10.244.9.0/26", &["10.0.0.9"])]);
        assert_eq!(
            l.routes(),
            vec![(dst("10.244.9.0/26"), vec![ip("10.0.0.9")])]
        );
    }
}
