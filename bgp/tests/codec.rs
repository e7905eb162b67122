//! Framing, OPEN, NOTIFICATION and AS4 handling, byte for byte (RFC 4271, RFC 5492,
//! RFC 6793, RFC 8654).

mod common;

use bytes::BytesMut;
use common::*;
use std::net::Ipv4Addr;
use tabby_bgp::wire::{
    cease, code, frame, header, open_error, AsPath, Capability, Context, GracefulRestart, Message,
    Notification, Open, PathAttributes, Update, AS_TRANS,
};
use tabby_bgp::Family;

fn keepalive() -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&[0, 19, 4]);
    v
}

#[test]
fn frame_waits_for_a_whole_message() {
    let k = keepalive();
    assert_eq!(frame(&k[..10], &Context::default()), Ok(None));
    assert_eq!(frame(&k[..18], &Context::default()), Ok(None));
    assert_eq!(frame(&k, &Context::default()), Ok(Some(19)));
}

#[test]
fn bad_marker_is_connection_not_synchronized() {
    let mut k = keepalive();
    k[3] = 0;
    let n = frame(&k, &Context::default()).expect_err("bad marker");
    assert_eq!(
        (n.code, n.subcode),
        (code::MESSAGE_HEADER, header::CONNECTION_NOT_SYNCHRONIZED)
    );
}

#[test]
fn keepalive_longer_than_the_header_is_bad_message_length_with_the_length_as_data() {
    let mut k = keepalive();
    k[17] = 20;
    k.push(0);
    let n = frame(&k, &Context::default()).expect_err("bad length");
    assert_eq!(
        (n.code, n.subcode, n.data.clone()),
        (
            code::MESSAGE_HEADER,
            header::BAD_MESSAGE_LENGTH,
            vec![0, 20]
        )
    );
}

#[test]
fn unknown_message_type_is_bad_message_type_with_the_type_as_data() {
    let mut k = keepalive();
    k[18] = 9;
    let n = frame(&k, &Context::default()).expect_err("bad type");
    assert_eq!(
        (n.subcode, n.data.clone()),
        (header::BAD_MESSAGE_TYPE, vec![9])
    );
}

#[test]
fn update_longer_than_4096_needs_the_extended_message_capability() {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&5000u16.to_be_bytes());
    m.push(2);
    assert!(frame(&m, &Context::default()).is_err());
    let ext = Context {
        extended_message: true,
        ..Context::default()
    };
    assert_eq!(frame(&m, &ext), Ok(None));
}

#[test]
fn open_stays_limited_to_4096_with_extended_messages() {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&5000u16.to_be_bytes());
    m.push(1);
    let ext = Context {
        extended_message: true,
        ..Context::default()
    };
    assert!(frame(&m, &ext).is_err());
}

fn sample_open() -> Open {
    Open {
        version: 4,
        my_as: AS_TRANS,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: vec![
            Capability::multiprotocol(Family::Ipv4Unicast),
            Capability::multiprotocol(Family::Ipv6Unicast),
            Capability::RouteRefresh,
            Capability::FourOctetAs(4_200_000_001),
            Capability::GracefulRestart(GracefulRestart {
                restarting: true,
                notification: false,
                restart_time: 120,
                families: vec![(1, 1, true), (2, 1, false)],
            }),
            Capability::ExtendedMessage,
            Capability::Unknown {
                code: 73,
                value: b"node1".to_vec(),
            },
        ],
    }
}

#[test]
fn open_round_trips_with_every_capability() {
    let msg = Message::Open(sample_open());
    let bytes = msg.to_bytes(&Context::default());
    assert_eq!(Message::decode(&bytes, &Context::default()), Ok(msg));
}

#[test]
fn open_asn_comes_from_the_four_octet_capability() {
    assert_eq!(sample_open().asn(), 4_200_000_001);
}

#[test]
fn open_with_version_3_is_unsupported_version_naming_version_4() {
    let mut body = BytesMut::new();
    sample_open().encode(&mut body);
    body[0] = 3;
    let n = Open::decode(&body).expect_err("version 3");
    assert_eq!(
        (n.code, n.subcode, n.data),
        (
            code::OPEN_MESSAGE,
            open_error::UNSUPPORTED_VERSION,
            vec![0, 4]
        )
    );
}

#[test]
fn open_with_an_unknown_optional_parameter_is_refused() {
    let body = [4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 3, 1, 1, 0];
    let n = Open::decode(&body).expect_err("parameter type 1");
    assert_eq!(n.subcode, open_error::UNSUPPORTED_OPTIONAL_PARAMETER);
}

#[test]
fn open_with_a_truncated_capability_is_an_open_error() {
    // Capability 65 (4-octet AS) with two octets instead of four.
    let body = [4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 6, 2, 4, 65, 2, 0, 1];
    let n = Open::decode(&body).expect_err("short capability");
    assert_eq!(n.code, code::OPEN_MESSAGE);
}

#[test]
fn open_with_rfc9072_extended_parameters_is_read() {
    // Extended form: 255, 255, 2-octet length, then 2-octet parameter lengths.
    let body = [
        4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 255, 255, 0, 5, 2, 0, 2, 2, 0,
    ];
    let open = Open::decode(&body).expect("extended parameters");
    assert_eq!(open.capabilities, vec![Capability::RouteRefresh]);
}

#[test]
fn notification_round_trips_with_data() {
    let n = Notification::new(
        code::OPEN_MESSAGE,
        open_error::BAD_PEER_AS,
        65002u16.to_be_bytes(),
    );
    let msg = Message::Notification(n.clone());
    assert_eq!(
        Message::decode(&msg.to_bytes(&Context::default()), &Context::default()),
        Ok(msg)
    );
    assert_eq!(n.describe(), "OPEN Message Error: Bad Peer AS");
}

#[test]
fn shutdown_communication_is_carried_and_read_back() {
    let n = Notification::cease_with_message(cease::ADMINISTRATIVE_SHUTDOWN, "maintenance");
    assert_eq!(n.shutdown_message().as_deref(), Some("maintenance"));
    assert_eq!(
        n.describe(),
        "Cease: Administrative Shutdown \"maintenance\""
    );
}

#[test]
fn route_refresh_of_the_wrong_length_is_a_route_refresh_error() {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&[0, 24, 5, 0, 1, 0, 1, 9]);
    let n = Message::decode(&m, &Context::default()).expect_err("length 24");
    assert_eq!(n.code, code::ROUTE_REFRESH);
}

#[test]
fn as_path_towards_a_two_octet_peer_uses_as_trans_and_as4_path() {
    let ctx = Context::default();
    let attrs = PathAttributes {
        origin: Some(tabby_bgp::wire::Origin::Igp),
        as_path: Some(AsPath::sequence([4_200_000_001, 65001])),
        ..PathAttributes::default()
    };
    let mut out = BytesMut::new();
    Update::encode_announce(
        &ctx,
        Family::Ipv4Unicast,
        &attrs,
        tabby_bgp::wire::NextHop::V4(Ipv4Addr::new(10, 0, 0, 1)),
        &[p("10.1.0.0/16").into()],
        &mut out,
    );
    // AS_PATH with AS_TRANS (23456 = 0x5ba0), then AS 65001.
    assert!(
        out.windows(6).any(|w| w == [2, 2, 0x5b, 0xa0, 0xfd, 0xe9]),
        "{out:02x?}"
    );
    // And the real path in AS4_PATH (type 17).
    assert!(out.windows(2).any(|w| w == [0xc0, 17]));
    let Message::Update(back) = Message::decode(&out, &ctx).expect("decodes") else {
        panic!("not an update")
    };
    assert_eq!(
        back.attrs.as_path, attrs.as_path,
        "AS4_PATH merges back into the real path"
    );
}

#[test]
fn as4_path_shorter_than_as_path_keeps_the_leading_two_octet_ases() {
    // RFC 6793 §4.2.3: AS_PATH [65010, AS_TRANS], AS4_PATH [4200000001].
    let ctx = Context::default();
    let attrs = vec![
        origin_igp(),
        attr(WK, 2, &[2, 2, 0xfd, 0xf2, 0x5b, 0xa0]),
        next_hop([10, 0, 0, 1]),
        attr(O | T, 17, &[2, 1, 0xfa, 0x56, 0xea, 0x01]),
    ];
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ctx);
    assert_eq!(
        u.attrs.as_path,
        Some(AsPath::sequence([65010, 4_200_000_001]))
    );
}

#[test]
fn end_of_rib_markers_are_recognised_for_both_families() {
    for family in Family::ALL {
        let bytes = Message::Update(Update::end_of_rib(family)).to_bytes(&ibgp());
        let Ok(Message::Update(u)) = Message::decode(&bytes, &ibgp()) else {
            panic!("decode")
        };
        assert_eq!(u.is_end_of_rib(), Some(family));
    }
}

#[test]
fn many_prefixes_are_split_into_messages_within_the_maximum_length() {
    let ctx = ibgp();
    let nlri: Vec<_> = (0..3000u32)
        .map(|i| {
            tabby_bgp::Prefix::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)).into(), 24)
                .expect("prefix")
                .into()
        })
        .collect();
    let attrs = PathAttributes {
        origin: Some(tabby_bgp::wire::Origin::Igp),
        as_path: Some(AsPath::default()),
        local_pref: Some(100),
        ..PathAttributes::default()
    };
    let mut out = BytesMut::new();
    let n = Update::encode_announce(
        &ctx,
        Family::Ipv4Unicast,
        &attrs,
        tabby_bgp::wire::NextHop::V4(Ipv4Addr::new(10, 0, 0, 1)),
        &nlri,
        &mut out,
    );
    assert!(n > 1);
    let mut rest = &out[..];
    let mut seen = 0;
    while let Ok(Some(len)) = frame(rest, &ctx) {
        assert!(len <= 4096);
        let Ok(Message::Update(u)) = Message::decode(&rest[..len], &ctx) else {
            panic!("decode")
        };
        seen += u.nlri.len();
        rest = &rest[len..];
    }
    assert!(rest.is_empty());
    assert_eq!(seen, 3000);
}

#[test]
fn add_path_identifiers_are_read_when_negotiated() {
    let ctx = Context {
        add_path_receive: vec![Family::Ipv4Unicast],
        ..Context::modern()
    };
    let nlri = [0, 0, 0, 7, 16, 10, 1];
    let u = decode(&body(&[], &mandatory(), &nlri), &ctx);
    assert_eq!(u.nlri[0].path_id, Some(7));
    assert_eq!(u.nlri[0].prefix, p("10.1.0.0/16"));
}

#[test]
fn ipv4_nlri_with_an_ipv6_next_hop_is_accepted_with_extended_next_hop() {
    let ctx = Context {
        extended_next_hop: true,
        ..Context::modern()
    };
    let mut v = vec![0, 1, 1, 16];
    v.extend_from_slice(&fd00_nh());
    v.push(0);
    v.extend_from_slice(&NLRI_10_1);
    let attrs = vec![origin_igp(), as_path4(&[65001]), attr(O, 14, &v)];
    let u = decode(&body(&[], &attrs, &[]), &ctx);
    let reach = u.mp_reach.expect("reach");
    assert_eq!(reach.family, Family::Ipv4Unicast);
    assert!(matches!(
        reach.next_hop,
        tabby_bgp::wire::NextHop::V6 { .. }
    ));
    // Without the capability the family is disabled.
    let u = decode(
        &body(
            &[],
            &[origin_igp(), as_path4(&[65001]), attr(O, 14, &v)],
            &[],
        ),
        &ibgp(),
    );
    assert_eq!(
        u.disabled_families().collect::<Vec<_>>(),
        vec![Family::Ipv4Unicast]
    );
}

#[test]
fn a_hard_reset_is_recognised_and_described_with_the_notification_it_stands_for() {
    let inner = Notification::cease(cease::PEER_DECONFIGURED);
    let n = Notification::hard_reset(&inner);
    assert!(n.is_hard_reset() && !inner.is_hard_reset());
    assert_eq!(n.data[..2], [6, 3]);
    assert_eq!(
        n.describe(),
        "Cease: Hard Reset (Cease: Peer De-configured)"
    );
}

#[test]
fn a_hard_reset_too_short_to_hold_a_notification_is_described_without_one() {
    let n = Notification::new(6, cease::HARD_RESET, vec![6]);
    assert_eq!(n.describe(), "Cease: Hard Reset");
}

#[test]
fn nested_hard_resets_are_described_one_level_deep() {
    let n = Notification::new(6, cease::HARD_RESET, [6u8, 9].repeat(2000));
    assert_eq!(n.describe(), "Cease: Hard Reset (Cease: Hard Reset)");
}
