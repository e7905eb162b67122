//! The per-peer tables of the speaker, without I/O: what a peer announced (Adj-RIB-In) and
//! what we announced to it (Adj-RIB-Out), and the UPDATEs that move the latter.

use crate::prefix::{Family, Prefix};
use crate::wire::{AsPath, Context, NextHop, Nlri, Origin, PathAttributes, Update};
use bytes::BytesMut;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// A route a peer announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRoute {
    /// The prefix and, on ADD-PATH sessions, its path identifier.
    pub nlri: Nlri,
    /// The next hop the peer gave.
    pub next_hop: Option<NextHop>,
    /// The path attributes (shared by every route of one UPDATE).
    pub attrs: Arc<PathAttributes>,
}

/// One change of a peer's Adj-RIB-In.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// A route was announced (new, or replacing the previous one for the same NLRI).
    Announced(ReceivedRoute),
    /// A route was withdrawn (by the peer, by RFC 7606 treat-as-withdraw, or because its
    /// family was disabled).
    Withdrawn(Nlri),
    /// The peer finished sending its initial table of a family (RFC 4724 End-of-RIB).
    EndOfRib(Family),
    /// The session went down: every route of the peer is gone.
    Cleared,
}

/// What a peer announced to us, by NLRI (RFC 4271 §3.2).
#[derive(Debug, Clone, Default)]
pub(crate) struct AdjRibIn {
    routes: BTreeMap<Nlri, ReceivedRoute>,
    disabled: BTreeSet<Family>,
}

impl AdjRibIn {
    /// Number of routes held.
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }

    /// Every route, in prefix order.
    pub(crate) fn routes(&self) -> impl Iterator<Item = &ReceivedRoute> {
        self.routes.values()
    }

    /// Forgets everything (session down).
    pub(crate) fn clear(&mut self) {
        self.routes.clear();
        self.disabled.clear();
    }

    /// Applies a decoded UPDATE of a session that negotiated `families`. The UPDATE is
    /// already corrected by RFC 7606 (treat-as-withdraw moved its NLRI to the withdrawals);
    /// a family it disables loses all its routes and ignores further UPDATEs until the
    /// session restarts.
    pub(crate) fn apply(&mut self, update: &Update, families: &[Family]) -> Vec<RouteChange> {
        let mut changes = Vec::new();
        for family in update.disabled_families() {
            if self.disabled.insert(family) {
                let gone: Vec<Nlri> = self
                    .routes
                    .keys()
                    .filter(|n| n.prefix.family() == family)
                    .copied()
                    .collect();
                for nlri in gone {
                    self.routes.remove(&nlri);
                    changes.push(RouteChange::Withdrawn(nlri));
                }
            }
        }
        if let Some(family) = update.is_end_of_rib() {
            changes.push(RouteChange::EndOfRib(family));
            return changes;
        }
        for (_, nlri) in update.withdrawals() {
            if self.routes.remove(nlri).is_some() {
                changes.push(RouteChange::Withdrawn(*nlri));
            }
        }
        let attrs = Arc::new(update.attrs.clone());
        for (family, next_hop, nlri) in update.announced() {
            if !families.contains(&family) || self.disabled.contains(&family) {
                continue;
            }
            let route = ReceivedRoute {
                nlri: *nlri,
                next_hop,
                attrs: Arc::clone(&attrs),
            };
            self.routes.insert(*nlri, route.clone());
            changes.push(RouteChange::Announced(route));
        }
        changes
    }
}

/// What the session towards one peer looks like, for building what we send it.
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    /// Our AS.
    pub(crate) local_as: u32,
    /// The codec context of the session.
    pub(crate) context: Context,
    /// Families negotiated.
    pub(crate) families: Vec<Family>,
    /// Our address on the session's TCP connection.
    pub(crate) local_addr: IpAddr,
    /// IPv4 next hop for IPv4 prefixes when the session runs over IPv6.
    pub(crate) next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 next hop for IPv6 prefixes when the session runs over IPv4.
    pub(crate) next_hop_v6: Option<Ipv6Addr>,
}

impl Outbound {
    /// The next hop to announce `prefix` with, if the session can carry one.
    pub(crate) fn next_hop(&self, prefix: &Prefix, given: Option<IpAddr>) -> Option<NextHop> {
        let v6 = |global: Ipv6Addr| NextHop::V6 {
            global,
            link_local: None,
        };
        match (prefix.family(), given) {
            (Family::Ipv4Unicast, Some(IpAddr::V4(a))) => Some(NextHop::V4(a)),
            // An IPv6 next hop for IPv4 NLRI needs RFC 8950, which is not negotiated yet.
            (Family::Ipv4Unicast, Some(IpAddr::V6(_))) => None,
            (Family::Ipv4Unicast, None) => match self.local_addr {
                IpAddr::V4(a) => Some(NextHop::V4(a)),
                IpAddr::V6(_) => self.next_hop_v4.map(NextHop::V4),
            },
            (Family::Ipv6Unicast, Some(IpAddr::V6(a))) => Some(v6(a)),
            // RFC 4798: an IPv4 next hop travels IPv4-mapped.
            (Family::Ipv6Unicast, Some(IpAddr::V4(a))) => Some(NextHop::V4(a)),
            (Family::Ipv6Unicast, None) => match (self.next_hop_v6, self.local_addr) {
                (Some(a), _) => Some(v6(a)),
                (None, IpAddr::V6(a)) if !is_link_local(a) => Some(v6(a)),
                _ => None,
            },
        }
    }

    /// The attributes of an originated route (RFC 4271 §5.1): ORIGIN IGP; AS_PATH empty
    /// towards internal peers and our AS towards external ones; LOCAL_PREF 100 internally.
    pub(crate) fn attributes(&self) -> PathAttributes {
        let ebgp = self.context.ebgp;
        PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(if ebgp {
                AsPath::sequence([self.local_as])
            } else {
                AsPath::default()
            }),
            local_pref: (!ebgp).then_some(100),
            ..PathAttributes::default()
        }
    }
}

fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// What we announced to a peer: prefix -> next hop.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdjRibOut {
    routes: BTreeMap<Prefix, NextHop>,
}

impl AdjRibOut {
    /// Number of prefixes announced.
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }

    /// Appends the UPDATEs that bring the peer from what it has to `originated`
    /// (prefix -> requested next hop), and records the new state. Returns the number of
    /// messages appended.
    pub(crate) fn sync(
        &mut self,
        out: &Outbound,
        originated: &BTreeMap<Prefix, Option<IpAddr>>,
        buf: &mut BytesMut,
    ) -> usize {
        let desired: BTreeMap<Prefix, NextHop> = originated
            .iter()
            .filter(|(p, _)| out.families.contains(&p.family()))
            .filter_map(|(p, nh)| out.next_hop(p, *nh).map(|nh| (*p, nh)))
            .collect();
        let mut messages = 0;
        for family in Family::ALL {
            let gone: Vec<Nlri> = self
                .routes
                .keys()
                .filter(|p| p.family() == family && !desired.contains_key(p))
                .map(|p| Nlri::from(*p))
                .collect();
            if !gone.is_empty() {
                messages += Update::encode_withdraw(&out.context, family, &gone, buf);
            }
        }
        // Group new and changed announcements by (family, next hop): one run of UPDATEs each.
        let mut groups: BTreeMap<(Family, String), (NextHop, Vec<Nlri>)> = BTreeMap::new();
        for (prefix, nh) in &desired {
            if self.routes.get(prefix) != Some(nh) {
                groups
                    .entry((prefix.family(), format!("{nh:?}")))
                    .or_insert_with(|| (*nh, Vec::new()))
                    .1
                    .push(Nlri::from(*prefix));
            }
        }
        let attrs = out.attributes();
        for ((family, _), (nh, nlri)) in groups {
            messages += Update::encode_announce(&out.context, family, &attrs, nh, &nlri, buf);
        }
        self.routes = desired;
        messages
    }

    /// Forgets what was announced (session down, or a ROUTE-REFRESH asks for everything).
    pub(crate) fn clear(&mut self) {
        self.routes.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::wire::{ErrorAction, Message, MpUnreach, UpdateError, UpdateErrorKind};

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn outbound(local: &str, ebgp: bool) -> Outbound {
        Outbound {
            local_as: 65000,
            context: Context {
                ebgp,
                ..Context::modern()
            },
            families: Family::ALL.to_vec(),
            local_addr: local.parse().unwrap(),
            next_hop_v4: None,
            next_hop_v6: None,
        }
    }

    fn decode_all(buf: &[u8], ctx: &Context) -> Vec<Update> {
        let mut rest = buf;
        let mut out = Vec::new();
        while let Some(n) = crate::wire::frame(rest, ctx).unwrap() {
            match Message::decode(&rest[..n], ctx).unwrap() {
                Message::Update(u) => out.push(u),
                other => panic!("unexpected {other:?}"),
            }
            rest = &rest[n..];
        }
        out
    }

    #[test]
    fn originated_ipv4_route_to_ibgp_peer_has_empty_path_local_pref_and_session_next_hop() {
        let out = outbound("10.0.0.1", false);
        let mut rib = AdjRibOut::default();
        let mut buf = BytesMut::new();
        let originated = BTreeMap::from([(p("10.1.0.0/24"), None)]);
        assert_eq!(rib.sync(&out, &originated, &mut buf), 1);
        let updates = decode_all(&buf, &out.context);
        let (family, nh, nlri) = updates[0].announced().next().unwrap();
        assert_eq!(
            (family, nlri.prefix),
            (Family::Ipv4Unicast, p("10.1.0.0/24"))
        );
        assert_eq!(nh, Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 1))));
        assert_eq!(updates[0].attrs.as_path, Some(AsPath::default()));
        assert_eq!(updates[0].attrs.local_pref, Some(100));
        assert_eq!(updates[0].attrs.origin, Some(Origin::Igp));
    }

    #[test]
    fn originated_route_to_ebgp_peer_carries_our_as_and_no_local_pref() {
        let out = outbound("10.0.0.1", true);
        let attrs = out.attributes();
        assert_eq!(attrs.as_path, Some(AsPath::sequence([65000])));
        assert_eq!(attrs.local_pref, None);
    }

    #[test]
    fn ipv6_prefix_over_ipv4_session_uses_the_configured_ipv6_next_hop_or_is_skipped() {
        let mut out = outbound("10.0.0.1", false);
        assert_eq!(out.next_hop(&p("fd00::/64"), None), None);
        out.next_hop_v6 = Some("fd00::1".parse().unwrap());
        assert_eq!(
            out.next_hop(&p("fd00::/64"), None),
            Some(NextHop::V6 {
                global: "fd00::1".parse().unwrap(),
                link_local: None
            })
        );
    }

    #[test]
    fn sync_withdraws_what_is_no_longer_originated() {
        let out = outbound("10.0.0.1", false);
        let mut rib = AdjRibOut::default();
        let mut buf = BytesMut::new();
        rib.sync(
            &out,
            &BTreeMap::from([(p("10.1.0.0/24"), None), (p("fd01::/64"), None)]),
            &mut buf,
        );
        buf.clear();
        rib.sync(&out, &BTreeMap::new(), &mut buf);
        let withdrawn: Vec<Prefix> = decode_all(&buf, &out.context)
            .iter()
            .flat_map(|u| u.withdrawals().map(|(_, n)| n.prefix).collect::<Vec<_>>())
            .collect();
        // The IPv6 prefix was never announced: the session has no IPv6 next hop.
        assert_eq!(withdrawn, vec![p("10.1.0.0/24")]);
        assert_eq!(rib.len(), 0);
    }

    #[test]
    fn sync_sends_nothing_when_nothing_changed() {
        let out = outbound("10.0.0.1", false);
        let mut rib = AdjRibOut::default();
        let mut buf = BytesMut::new();
        let originated = BTreeMap::from([(p("10.1.0.0/24"), None)]);
        rib.sync(&out, &originated, &mut buf);
        buf.clear();
        assert_eq!(rib.sync(&out, &originated, &mut buf), 0);
        assert!(buf.is_empty());
    }

    fn announce(prefix: &str) -> Update {
        let mut buf = BytesMut::new();
        let out = outbound("10.0.0.1", false);
        let mut rib = AdjRibOut::default();
        rib.sync(&out, &BTreeMap::from([(p(prefix), None)]), &mut buf);
        decode_all(&buf, &out.context).remove(0)
    }

    #[test]
    fn adj_rib_in_keeps_announcements_and_applies_withdrawals() {
        let mut rib = AdjRibIn::default();
        let changes = rib.apply(&announce("10.1.0.0/24"), &Family::ALL);
        assert!(
            matches!(&changes[..], [RouteChange::Announced(r)] if r.nlri.prefix == p("10.1.0.0/24"))
        );
        let withdraw = Update {
            withdrawn: vec![Nlri::from(p("10.1.0.0/24"))],
            ..Update::default()
        };
        assert_eq!(
            rib.apply(&withdraw, &Family::ALL),
            vec![RouteChange::Withdrawn(Nlri::from(p("10.1.0.0/24")))]
        );
        assert_eq!(rib.len(), 0);
    }

    #[test]
    fn adj_rib_in_ignores_families_not_negotiated() {
        let mut rib = AdjRibIn::default();
        assert!(rib
            .apply(&announce("10.1.0.0/24"), &[Family::Ipv6Unicast])
            .is_empty());
        assert_eq!(rib.len(), 0);
    }

    #[test]
    fn adj_rib_in_drops_a_disabled_family() {
        let mut rib = AdjRibIn::default();
        rib.apply(&announce("10.1.0.0/24"), &Family::ALL);
        let disable = Update {
            mp_unreach: Some(MpUnreach {
                family: Family::Ipv6Unicast,
                withdrawn: Vec::new(),
            }),
            errors: vec![UpdateError {
                attribute: 14,
                kind: UpdateErrorKind::Nlri,
                action: ErrorAction::AfiSafiDisable(Family::Ipv4Unicast),
            }],
            ..Update::default()
        };
        let changes = rib.apply(&disable, &Family::ALL);
        assert!(changes.contains(&RouteChange::Withdrawn(Nlri::from(p("10.1.0.0/24")))));
        assert!(rib.apply(&announce("10.2.0.0/24"), &Family::ALL).is_empty());
    }

    #[test]
    fn adj_rib_in_reports_end_of_rib() {
        let mut rib = AdjRibIn::default();
        let eor = Update::end_of_rib(Family::Ipv6Unicast);
        assert_eq!(
            rib.apply(&eor, &Family::ALL),
            vec![RouteChange::EndOfRib(Family::Ipv6Unicast)]
        );
    }
}
