//! encode ∘ decode is the identity for every message kind (property tests).

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tabby_bgp::wire::{
    AddPath, AddPathMode, Aggregator, AsPath, AsSegment, Capability, Context, ExtendedNextHop,
    GracefulRestart, LargeCommunity, Message, MpReach, MpUnreach, NextHop, Nlri, Notification,
    Open, Origin, PathAttributes, RawAttribute, RouteRefresh, SegmentKind, Update,
};
use tabby_bgp::{Family, Prefix};

fn v4_prefix() -> impl Strategy<Value = Prefix> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| {
        Prefix::new(IpAddr::V4(Ipv4Addr::from(a)), l).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn v6_prefix() -> impl Strategy<Value = Prefix> {
    (any::<u128>(), 0u8..=128).prop_map(|(a, l)| {
        Prefix::new(IpAddr::V6(Ipv6Addr::from(a)), l).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn nlri(prefix: impl Strategy<Value = Prefix>) -> impl Strategy<Value = Nlri> {
    prefix.prop_map(Nlri::from)
}

fn host_v4() -> impl Strategy<Value = Ipv4Addr> {
    (1u32..0x00ff_fffe).prop_map(|a| Ipv4Addr::from(0x0a00_0000 | a))
}

fn global_v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(|a| Ipv6Addr::from((0xfd00u128 << 112) | (a >> 16)))
}

fn as_path() -> impl Strategy<Value = AsPath> {
    let kind = prop_oneof![
        Just(SegmentKind::Sequence),
        Just(SegmentKind::Set),
        Just(SegmentKind::ConfedSequence),
        Just(SegmentKind::ConfedSet),
    ];
    vec((kind, vec(any::<u32>(), 1..8)), 0..4).prop_map(|segs| AsPath {
        segments: segs
            .into_iter()
            .map(|(kind, asns)| AsSegment { kind, asns })
            .collect(),
    })
}

fn attrs(announce: bool) -> impl Strategy<Value = PathAttributes> {
    let origin = prop_oneof![
        Just(Origin::Igp),
        Just(Origin::Egp),
        Just(Origin::Incomplete)
    ];
    let known = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 32];
    let unknown = vec((100u8..=250, vec(any::<u8>(), 0..20)), 0..3).prop_map(move |list| {
        let mut seen = Vec::new();
        list.into_iter()
            .filter(|(code, _)| {
                !known.contains(code) && !seen.contains(code) && {
                    seen.push(*code);
                    true
                }
            })
            .map(|(code, value)| RawAttribute {
                flags: 0xe0,
                code,
                value,
            })
            .collect::<Vec<_>>()
    });
    (
        (
            if announce {
                origin.prop_map(Some).boxed()
            } else {
                option::of(origin).boxed()
            },
            if announce {
                as_path().prop_map(Some).boxed()
            } else {
                option::of(as_path()).boxed()
            },
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            any::<bool>(),
            option::of(
                (any::<u32>(), any::<u32>()).prop_map(|(asn, a)| Aggregator {
                    asn,
                    address: Ipv4Addr::from(a),
                }),
            ),
        ),
        (
            vec(any::<u32>(), 0..5),
            option::of(any::<u32>().prop_map(Ipv4Addr::from)),
            vec(any::<u32>().prop_map(Ipv4Addr::from), 0..4),
            vec(any::<[u8; 8]>(), 0..4),
            vec(
                (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(global, local1, local2)| {
                    LargeCommunity {
                        global,
                        local1,
                        local2,
                    }
                }),
                0..4,
            ),
            unknown,
        ),
    )
        .prop_map(
            |(
                (origin, as_path, med, local_pref, atomic_aggregate, aggregator),
                (communities, originator_id, cluster_list, extended_communities, large, unknown),
            )| PathAttributes {
                origin,
                as_path,
                next_hop: None,
                med,
                local_pref,
                atomic_aggregate,
                aggregator,
                communities,
                originator_id,
                cluster_list,
                extended_communities,
                large_communities: large,
                unknown,
            },
        )
}

fn update() -> impl Strategy<Value = Update> {
    (
        vec(nlri(v4_prefix()), 0..10),
        vec(nlri(v4_prefix()), 0..10),
        host_v4(),
        option::of((
            global_v6(),
            option::of(global_v6()),
            vec(nlri(v6_prefix()), 0..10),
        )),
        option::of(vec(nlri(v6_prefix()), 0..10)),
        any::<bool>(),
    )
        .prop_flat_map(|(withdrawn, nlri, nh, reach, unreach, with_attrs)| {
            let announce = !nlri.is_empty() || reach.as_ref().is_some_and(|r| !r.2.is_empty());
            let attrs = if announce || with_attrs {
                attrs(announce).boxed()
            } else {
                Just(PathAttributes::default()).boxed()
            };
            attrs.prop_map(move |mut attrs| {
                if !nlri.is_empty() {
                    attrs.next_hop = Some(nh);
                }
                Update {
                    withdrawn: withdrawn.clone(),
                    attrs,
                    mp_reach: reach.clone().map(|(global, link_local, nlri)| MpReach {
                        family: Family::Ipv6Unicast,
                        next_hop: NextHop::V6 { global, link_local },
                        nlri,
                    }),
                    mp_unreach: unreach.clone().map(|withdrawn| MpUnreach {
                        family: Family::Ipv6Unicast,
                        withdrawn,
                    }),
                    nlri: nlri.clone(),
                    errors: Vec::new(),
                }
            })
        })
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        (any::<u16>(), any::<u8>()).prop_map(|(afi, safi)| Capability::Multiprotocol { afi, safi }),
        Just(Capability::RouteRefresh),
        Just(Capability::EnhancedRouteRefresh),
        Just(Capability::ExtendedMessage),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..0x1000,
            vec((any::<u16>(), any::<u8>(), any::<bool>()), 0..3)
        )
            .prop_map(|(restarting, notification, restart_time, families)| {
                Capability::GracefulRestart(GracefulRestart {
                    restarting,
                    notification,
                    restart_time,
                    families,
                })
            }),
        vec(
            (
                any::<u16>(),
                any::<u8>(),
                prop_oneof![
                    Just(AddPathMode::Receive),
                    Just(AddPathMode::Send),
                    Just(AddPathMode::Both)
                ]
            ),
            1..3
        )
        .prop_map(|e| Capability::AddPath(
            e.into_iter()
                .map(|(afi, safi, mode)| AddPath { afi, safi, mode })
                .collect()
        )),
        vec((any::<u16>(), any::<u16>(), any::<u16>()), 1..3).prop_map(|e| {
            Capability::ExtendedNextHop(
                e.into_iter()
                    .map(|(nlri_afi, nlri_safi, nexthop_afi)| ExtendedNextHop {
                        nlri_afi,
                        nlri_safi,
                        nexthop_afi,
                    })
                    .collect(),
            )
        }),
        (100u8..=200, vec(any::<u8>(), 0..10))
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            vec(capability(), 0..6)
        )
            .prop_map(|(my_as, hold_time, id, capabilities)| Message::Open(Open {
                version: 4,
                my_as,
                hold_time,
                bgp_id: Ipv4Addr::from(id),
                capabilities,
            })),
        update().prop_map(Message::Update),
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..40)).prop_map(|(code, subcode, data)| {
            Message::Notification(Notification::new(code, subcode, data))
        }),
        Just(Message::Keepalive),
        (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(afi, subtype, safi)| {
            Message::RouteRefresh(RouteRefresh { afi, subtype, safi })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_message_decodes_to_what_was_encoded(msg in message()) {
        let ctx = Context { extended_message: true, ..Context::modern() };
        let bytes = msg.to_bytes(&ctx);
        prop_assert_eq!(Message::decode(&bytes, &ctx), Ok(msg));
    }

    #[test]
    fn updates_round_trip_on_two_octet_sessions_for_two_octet_paths(mut u in update()) {
        // A 2-octet session loses nothing when every AS fits in two octets (and is not
        // AS_TRANS, which stands for "look in AS4_PATH").
        let small = |a: &mut u32| *a = (*a % 65535).max(1) + u32::from(*a % 65535 == 23456);
        if let Some(p) = u.attrs.as_path.as_mut() {
            p.segments.iter_mut().for_each(|s| s.asns.iter_mut().for_each(small));
        }
        if let Some(a) = u.attrs.aggregator.as_mut() {
            small(&mut a.asn);
        }
        let ctx = Context { extended_message: true, ..Context::default() };
        let msg = Message::Update(u);
        prop_assert_eq!(Message::decode(&msg.to_bytes(&ctx), &ctx), Ok(msg));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..300), sel in any::<u8>()) {
        let ctx = Context { four_octet_as: sel & 1 != 0, ebgp: sel & 2 != 0, ..Context::default() };
        let _ = Update::decode(&bytes, &ctx);
        let _ = Open::decode(&bytes);
        let mut framed = vec![0xff; 16];
        framed.extend_from_slice(&((bytes.len() + 19) as u16).to_be_bytes());
        framed.push(sel % 6);
        framed.extend_from_slice(&bytes);
        let _ = Message::decode(&framed, &ctx);
    }
}
