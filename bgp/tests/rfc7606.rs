//! RFC 7606 "Revised Error Handling for BGP UPDATE Messages": one test per rule, named after
//! it, citing the section. Each builds the exact bytes of the malformation.

mod common;

use common::*;
use tabby_bgp::wire::{code, update_error, ErrorAction, Origin, Update, UpdateErrorKind};
use tabby_bgp::Family;

fn action_for(u: &Update, attribute: u8) -> Option<ErrorAction> {
    u.errors
        .iter()
        .find(|e| e.attribute == attribute)
        .map(|e| e.action)
}

fn assert_withdrawn_10_1(u: &Update) {
    assert!(u.nlri.is_empty(), "no route may stay announced: {u:?}");
    assert_eq!(
        u.withdrawn.len(),
        1,
        "the announced route becomes a withdrawal: {u:?}"
    );
    assert_eq!(u.withdrawn[0].prefix, p("10.1.0.0/16"));
    assert!(u.treated_as_withdraw());
}

// §4: the lengths of the three fields must fit the message, or no NLRI can be found.

#[test]
fn s4_withdrawn_routes_length_beyond_the_message_resets_the_session() {
    let body = [0, 50, 0, 0];
    let n = Update::decode(&body, &ibgp()).expect_err("must reset");
    assert_eq!(
        (n.code, n.subcode),
        (code::UPDATE_MESSAGE, update_error::MALFORMED_ATTRIBUTE_LIST)
    );
}

#[test]
fn s4_total_attribute_length_beyond_the_message_resets_the_session() {
    let body = [0, 0, 0, 40, 0x40, 1, 1, 0];
    let n = Update::decode(&body, &ibgp()).expect_err("must reset");
    assert_eq!(
        (n.code, n.subcode),
        (code::UPDATE_MESSAGE, update_error::MALFORMED_ATTRIBUTE_LIST)
    );
}

#[test]
fn s4_attribute_overrunning_the_attribute_list_is_treat_as_withdraw() {
    // LOCAL_PREF claims 200 octets inside a 7-octet list; the NLRI field is still found.
    let mut attrs = mandatory();
    attrs.push(vec![0x40, 5, 200, 0, 0, 0, 100]);
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ibgp());
    assert_withdrawn_10_1(&u);
    assert!(u
        .errors
        .iter()
        .any(|e| e.kind == UpdateErrorKind::AttributeListOverrun));
}

#[test]
fn s4_fewer_than_three_octets_for_an_attribute_header_is_treat_as_withdraw() {
    let mut attrs = mandatory();
    attrs.push(vec![0x40, 5]);
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ibgp());
    assert_withdrawn_10_1(&u);
}

// §3 c: flags that conflict with the type code.

#[test]
fn s3c_well_known_attribute_flagged_optional_is_treat_as_withdraw() {
    let attrs = vec![
        attr(O | T, 1, &[0]),
        as_path4(&[65001]),
        next_hop([10, 0, 0, 1]),
    ];
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ibgp());
    assert_withdrawn_10_1(&u);
    assert!(matches!(u.errors[0].kind, UpdateErrorKind::Flags(_)));
}

// §3 d: missing well-known mandatory attributes.

#[test]
fn s3d_missing_origin_is_treat_as_withdraw() {
    let attrs = vec![as_path4(&[65001]), next_hop([10, 0, 0, 1])];
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ibgp());
    assert_withdrawn_10_1(&u);
    assert_eq!(u.errors[0].kind, UpdateErrorKind::Missing);
}

#[test]
fn s3d_missing_as_path_is_treat_as_withdraw() {
    let attrs = vec![origin_igp(), next_hop([10, 0, 0, 1])];
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

#[test]
fn s3d_missing_next_hop_for_the_nlri_field_is_treat_as_withdraw() {
    let attrs = vec![origin_igp(), as_path4(&[65001])];
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

#[test]
fn s3d_next_hop_is_not_required_for_mp_reach_nlri() {
    let attrs = vec![
        origin_igp(),
        as_path4(&[65001]),
        mp_reach_v6(fd00_nh(), &NLRI_FD00_1),
    ];
    let u = decode(&body(&[], &attrs, &[]), &ibgp());
    assert!(u.errors.is_empty(), "{u:?}");
    assert_eq!(u.mp_reach.map(|r| r.nlri.len()), Some(1));
}

#[test]
fn s3d_a_pure_withdrawal_needs_no_attributes() {
    let u = decode(&body(&NLRI_10_1, &[], &[]), &ibgp());
    assert!(u.errors.is_empty());
    assert_eq!(u.withdrawn[0].prefix, p("10.1.0.0/16"));
}

// §3 g: repeated attributes.

#[test]
fn s3g_repeated_attribute_keeps_only_the_first() {
    let mut attrs = mandatory();
    attrs.push(attr(O, 4, &7u32.to_be_bytes()));
    attrs.push(attr(O, 4, &9u32.to_be_bytes()));
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ibgp());
    assert_eq!(u.attrs.med, Some(7));
    assert_eq!(u.nlri.len(), 1, "the route stays announced");
    assert_eq!(action_for(&u, 4), Some(ErrorAction::AttributeDiscard));
}

#[test]
fn s3g_repeated_mp_reach_nlri_resets_the_session() {
    let attrs = vec![
        origin_igp(),
        as_path4(&[65001]),
        mp_reach_v6(fd00_nh(), &NLRI_FD00_1),
        mp_reach_v6(fd00_nh(), &NLRI_FD00_1),
    ];
    let n = Update::decode(&body(&[], &attrs, &[]), &ibgp()).expect_err("must reset");
    assert_eq!(
        (n.code, n.subcode),
        (code::UPDATE_MESSAGE, update_error::MALFORMED_ATTRIBUTE_LIST)
    );
}

#[test]
fn s3g_repeated_mp_unreach_nlri_resets_the_session() {
    let unreach = attr(O, 15, &[0, 2, 1]);
    let n = Update::decode(&body(&[], &[unreach.clone(), unreach], &[]), &ibgp())
        .expect_err("must reset");
    assert_eq!(n.code, code::UPDATE_MESSAGE);
}

// §5.3: NLRI fields that cannot be parsed.

#[test]
fn s5_3_unparseable_nlri_field_resets_the_session_with_invalid_network_field() {
    let n = Update::decode(&body(&[], &mandatory(), &[33, 10, 1, 2, 3, 4]), &ibgp())
        .expect_err("must reset");
    assert_eq!(
        (n.code, n.subcode),
        (code::UPDATE_MESSAGE, update_error::INVALID_NETWORK_FIELD)
    );
}

#[test]
fn s5_3_unparseable_withdrawn_routes_reset_the_session() {
    let n = Update::decode(&body(&[24, 10, 1], &[], &[]), &ibgp()).expect_err("must reset");
    assert_eq!(n.subcode, update_error::INVALID_NETWORK_FIELD);
}

#[test]
fn s5_3_unparseable_nlri_in_mp_reach_disables_the_family() {
    let attrs = vec![
        origin_igp(),
        as_path4(&[65001]),
        mp_reach_v6(fd00_nh(), &[129, 0xfd]),
    ];
    let u = decode(&body(&[], &attrs, &[]), &ibgp());
    assert_eq!(
        u.disabled_families().collect::<Vec<_>>(),
        vec![Family::Ipv6Unicast]
    );
    assert!(u.mp_reach.is_none());
}

// §7.1 ORIGIN.

#[test]
fn s7_1_origin_with_an_undefined_value_is_treat_as_withdraw() {
    let attrs = vec![
        attr(WK, 1, &[3]),
        as_path4(&[65001]),
        next_hop([10, 0, 0, 1]),
    ];
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ibgp());
    assert_withdrawn_10_1(&u);
    assert_eq!(u.errors[0].kind, UpdateErrorKind::Value(3));
}

#[test]
fn s7_1_origin_of_the_wrong_length_is_treat_as_withdraw() {
    let attrs = vec![
        attr(WK, 1, &[0, 0]),
        as_path4(&[65001]),
        next_hop([10, 0, 0, 1]),
    ];
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

// §7.2 AS_PATH.

#[test]
fn s7_2_as_path_with_an_unknown_segment_type_is_treat_as_withdraw() {
    let attrs = vec![
        origin_igp(),
        attr(WK, 2, &[9, 1, 0, 0, 0xfd, 0xe9]),
        next_hop([10, 0, 0, 1]),
    ];
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

#[test]
fn s7_2_as_path_segment_overrunning_the_attribute_is_treat_as_withdraw() {
    let attrs = vec![
        origin_igp(),
        attr(WK, 2, &[2, 3, 0, 0, 0xfd, 0xe9]),
        next_hop([10, 0, 0, 1]),
    ];
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

#[test]
fn s7_2_as_path_with_a_zero_length_segment_is_treat_as_withdraw() {
    let attrs = vec![origin_igp(), attr(WK, 2, &[2, 0]), next_hop([10, 0, 0, 1])];
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

// §7.3 NEXT_HOP.

#[test]
fn s7_3_next_hop_of_the_wrong_length_is_treat_as_withdraw() {
    let attrs = vec![origin_igp(), as_path4(&[65001]), attr(WK, 3, &[10, 0, 0])];
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

#[test]
fn s7_3_next_hop_that_is_not_a_host_address_is_treat_as_withdraw() {
    for nh in [[0, 0, 0, 0], [224, 0, 0, 1], [255, 255, 255, 255]] {
        let attrs = vec![origin_igp(), as_path4(&[65001]), next_hop(nh)];
        assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
    }
}

// §7.4 MULTI_EXIT_DISC.

#[test]
fn s7_4_med_of_the_wrong_length_is_treat_as_withdraw() {
    let mut attrs = mandatory();
    attrs.push(attr(O, 4, &[0, 1]));
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

// §7.5 LOCAL_PREF.

#[test]
fn s7_5_local_pref_from_an_external_peer_is_discarded() {
    let mut attrs = mandatory();
    attrs.push(attr(WK, 5, &200u32.to_be_bytes()));
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ebgp());
    assert_eq!(u.attrs.local_pref, None);
    assert_eq!(u.nlri.len(), 1);
    assert_eq!(action_for(&u, 5), Some(ErrorAction::AttributeDiscard));
}

#[test]
fn s7_5_local_pref_of_the_wrong_length_from_an_internal_peer_is_treat_as_withdraw() {
    let mut attrs = mandatory();
    attrs.push(attr(WK, 5, &[0, 100]));
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

// §7.6 ATOMIC_AGGREGATE.

#[test]
fn s7_6_atomic_aggregate_with_a_value_is_discarded() {
    let mut attrs = mandatory();
    attrs.push(attr(WK, 6, &[1]));
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ibgp());
    assert!(!u.attrs.atomic_aggregate);
    assert_eq!(u.nlri.len(), 1);
    assert_eq!(action_for(&u, 6), Some(ErrorAction::AttributeDiscard));
}

// §7.7 AGGREGATOR.

#[test]
fn s7_7_aggregator_of_the_wrong_length_is_discarded() {
    let mut attrs = mandatory();
    // Six octets is the 2-octet form; this session negotiated 4-octet AS.
    attrs.push(attr(O | T, 7, &[0xfd, 0xe9, 10, 0, 0, 1]));
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ibgp());
    assert_eq!(u.attrs.aggregator, None);
    assert_eq!(u.nlri.len(), 1);
    assert_eq!(action_for(&u, 7), Some(ErrorAction::AttributeDiscard));
}

// §7.8 COMMUNITIES.

#[test]
fn s7_8_communities_not_a_multiple_of_four_is_treat_as_withdraw() {
    let mut attrs = mandatory();
    attrs.push(attr(O | T, 8, &[0, 1, 0]));
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

#[test]
fn s7_8_empty_communities_is_treat_as_withdraw() {
    let mut attrs = mandatory();
    attrs.push(attr(O | T, 8, &[]));
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

// §7.9 ORIGINATOR_ID.

#[test]
fn s7_9_originator_id_of_the_wrong_length_is_treat_as_withdraw() {
    let mut attrs = mandatory();
    attrs.push(attr(O, 9, &[10, 0, 0]));
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

#[test]
fn s7_9_originator_id_from_an_external_peer_is_discarded() {
    let mut attrs = mandatory();
    attrs.push(attr(O, 9, &[10, 0, 0, 9]));
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ebgp());
    assert_eq!(u.attrs.originator_id, None);
    assert_eq!(u.nlri.len(), 1);
}

// §7.10 CLUSTER_LIST.

#[test]
fn s7_10_cluster_list_not_a_multiple_of_four_is_treat_as_withdraw() {
    let mut attrs = mandatory();
    attrs.push(attr(O, 10, &[1, 1, 1, 1, 2]));
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

#[test]
fn s7_10_cluster_list_from_an_external_peer_is_discarded() {
    let mut attrs = mandatory();
    attrs.push(attr(O, 10, &[1, 1, 1, 1]));
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ebgp());
    assert!(u.attrs.cluster_list.is_empty());
    assert_eq!(u.nlri.len(), 1);
}

// §7.11 MP_REACH_NLRI.

#[test]
fn s7_11_mp_reach_too_short_to_name_its_family_resets_the_session() {
    let attrs = vec![origin_igp(), as_path4(&[65001]), attr(O, 14, &[0, 2])];
    let n = Update::decode(&body(&[], &attrs, &[]), &ibgp()).expect_err("must reset");
    assert_eq!(n.code, code::UPDATE_MESSAGE);
}

#[test]
fn s7_11_mp_reach_with_an_inconsistent_next_hop_length_disables_the_family() {
    let mut v = vec![0, 2, 1, 7];
    v.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 1, 0]);
    v.extend_from_slice(&NLRI_FD00_1);
    let attrs = vec![origin_igp(), as_path4(&[65001]), attr(O, 14, &v)];
    let u = decode(&body(&[], &attrs, &[]), &ibgp());
    assert_eq!(
        u.disabled_families().collect::<Vec<_>>(),
        vec![Family::Ipv6Unicast]
    );
}

#[test]
fn s7_11_treat_as_withdraw_also_withdraws_the_mp_reach_nlri() {
    let attrs = vec![
        attr(WK, 1, &[7]),
        as_path4(&[65001]),
        mp_reach_v6(fd00_nh(), &NLRI_FD00_1),
    ];
    let u = decode(&body(&[], &attrs, &[]), &ibgp());
    assert!(u.mp_reach.is_none());
    let withdrawn: Vec<_> = u.withdrawals().map(|(f, n)| (f, n.prefix)).collect();
    assert_eq!(withdrawn, vec![(Family::Ipv6Unicast, p("fd00:1::/32"))]);
}

// §7.12 MP_UNREACH_NLRI.

#[test]
fn s7_12_mp_unreach_with_unparseable_nlri_disables_the_family() {
    let attrs = vec![attr(O, 15, &[0, 2, 1, 200, 1])];
    let u = decode(&body(&[], &attrs, &[]), &ibgp());
    assert_eq!(
        u.disabled_families().collect::<Vec<_>>(),
        vec![Family::Ipv6Unicast]
    );
}

// §7.14 EXTENDED COMMUNITIES.

#[test]
fn s7_14_extended_communities_not_a_multiple_of_eight_is_treat_as_withdraw() {
    let mut attrs = mandatory();
    attrs.push(attr(O | T, 16, &[0; 12]));
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

// RFC 8092 §6 LARGE_COMMUNITY.

#[test]
fn rfc8092_large_communities_not_a_multiple_of_twelve_is_treat_as_withdraw() {
    let mut attrs = mandatory();
    attrs.push(attr(O | T, 32, &[0; 16]));
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

// RFC 6793 §6 AS4_PATH and AS4_AGGREGATOR.

#[test]
fn rfc6793_malformed_as4_path_is_discarded_and_as_path_used() {
    let ctx = tabby_bgp::wire::Context::default();
    let attrs = vec![
        origin_igp(),
        attr(WK, 2, &[2, 1, 0x5b, 0xa0]),
        next_hop([10, 0, 0, 1]),
        attr(O | T, 17, &[2, 2, 0, 0, 0]),
    ];
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ctx);
    assert_eq!(u.nlri.len(), 1);
    assert_eq!(
        u.attrs.as_path.as_ref().and_then(|a| a.first_as()),
        Some(23456)
    );
    assert_eq!(action_for(&u, 17), Some(ErrorAction::AttributeDiscard));
}

#[test]
fn rfc6793_as4_path_from_a_four_octet_speaker_is_discarded() {
    let mut attrs = mandatory();
    attrs.push(attr(O | T, 17, &[2, 1, 0, 1, 0, 0]));
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ibgp());
    assert_eq!(
        u.attrs.as_path.as_ref().and_then(|a| a.first_as()),
        Some(65001)
    );
    assert_eq!(action_for(&u, 17), Some(ErrorAction::AttributeDiscard));
}

// RFC 4271 §5 / §6.3: unrecognised attributes.

#[test]
fn unrecognized_well_known_attribute_is_treat_as_withdraw() {
    let mut attrs = mandatory();
    attrs.push(attr(WK, 99, &[1]));
    assert_withdrawn_10_1(&decode(&body(&[], &attrs, &NLRI_10_1), &ibgp()));
}

#[test]
fn unknown_optional_transitive_attribute_is_kept_and_passed_on_partial() {
    let mut attrs = mandatory();
    attrs.push(attr(O | T, 99, &[1, 2, 3]));
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ibgp());
    assert_eq!(u.attrs.unknown.len(), 1);
    let again = tabby_bgp::wire::Message::Update(u.clone()).to_bytes(&ibgp());
    // Flags, code and length of the passed-on attribute: Optional|Transitive|Partial.
    let needle = [0xe0, 99, 3, 1, 2, 3];
    assert!(again.windows(6).any(|w| w == needle), "{again:02x?}");
}

#[test]
fn unknown_attribute_flags_are_passed_on_without_the_unused_low_bits() {
    // 0xdd: Optional, Transitive, Extended Length and three of the unused low bits set.
    let mut attrs = mandatory();
    attrs.push(vec![0xdd, 99, 0, 2, 7, 7]);
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ibgp());
    assert_eq!(u.attrs.unknown[0].flags, 0xe0);
    let again = tabby_bgp::wire::Message::Update(u.clone()).to_bytes(&ibgp());
    assert!(
        again.windows(5).any(|w| w == [0xe0, 99, 2, 7, 7]),
        "{again:02x?}"
    );
}

#[test]
fn unknown_optional_non_transitive_attribute_is_dropped_quietly() {
    let mut attrs = mandatory();
    attrs.push(attr(O, 99, &[1, 2, 3]));
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ibgp());
    assert!(u.attrs.unknown.is_empty());
    assert!(u.errors.is_empty());
    assert_eq!(u.nlri.len(), 1);
}

#[test]
fn well_formed_attributes_survive_a_discarded_one() {
    let mut attrs = mandatory();
    attrs.push(attr(O | T, 8, &[0xfd, 0xe9, 0, 1]));
    attrs.push(attr(WK, 6, &[1, 2]));
    let u = decode(&body(&[], &attrs, &NLRI_10_1), &ibgp());
    assert_eq!(u.attrs.communities, vec![0xfde9_0001]);
    assert_eq!(u.attrs.origin, Some(Origin::Igp));
    assert_eq!(u.nlri.len(), 1);
}
