#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::wire::{AsPath, ErrorAction, MpUnreach, UpdateError, UpdateErrorKind};

const LOCAL_AS: u32 = 65000;

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn rib() -> Rib {
    Rib::new(RibConfig {
        router_id: v4("10.0.0.1"),
        local_as: LOCAL_AS,
        cluster_id: None,
        next_hop_v4: None,
        next_hop_v6: None,
        restarting: false,
    })
}

fn reflector() -> Rib {
    Rib::new(RibConfig {
        cluster_id: Some(v4("1.1.1.1")),
        ..rib().config.clone()
    })
}

/// A session with the peer at 10.0.0.N (router id 10.0.0.N), over IPv4 from 10.0.0.1.
fn session(n: u8, kind: PeerKind) -> PeerSession {
    PeerSession {
        address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
        router_id: Ipv4Addr::new(10, 0, 0, n),
        remote_as: if kind == PeerKind::External {
            65000 + u32::from(n)
        } else {
            LOCAL_AS
        },
        kind,
        next_hop_mode: NextHopMode::Auto,
        local_addr: ip("10.0.0.1"),
        families: Family::ALL.to_vec(),
        restart: None,
    }
}

fn with_restart(mut s: PeerSession, restarting: bool, forwarding: bool) -> PeerSession {
    s.restart = Some(PeerRestart {
        restart_time: 120,
        restarting,
        notification: true,
        families: Family::ALL.iter().map(|f| (*f, forwarding)).collect(),
    });
    s
}

fn addr(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

fn attrs(path: &[u32]) -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence(path.iter().copied())),
        ..PathAttributes::default()
    }
}

fn announce(prefixes: &[&str], next_hop: &str, attrs: PathAttributes) -> Update {
    let nh = v4(next_hop);
    Update {
        attrs: PathAttributes {
            next_hop: Some(nh),
            ..attrs
        },
        nlri: prefixes.iter().map(|s| Nlri::from(p(s))).collect(),
        ..Update::default()
    }
}

fn withdraw(prefixes: &[&str]) -> Update {
    Update {
        withdrawn: prefixes.iter().map(|s| Nlri::from(p(s))).collect(),
        ..Update::default()
    }
}

fn best_peer(rib: &Rib, prefix: &str) -> Option<IpAddr> {
    rib.paths(&p(prefix))
        .first()
        .and_then(|b| b.from.as_ref().map(|f| f.address))
}

/// Everything the peer's session has to send, in as many batches as it takes.
fn sent(rib: &mut Rib, n: u8) -> Outbox {
    let mut all: Vec<(Prefix, Option<Export>)> = Vec::new();
    let mut end_of_rib = Vec::new();
    loop {
        let batch = rib.take_outbox(addr(n), usize::MAX);
        for (prefix, export) in batch.routes() {
            all.retain(|(p, _)| *p != prefix);
            all.push((prefix, export));
        }
        end_of_rib.extend(batch.end_of_rib);
        if !batch.more {
            break;
        }
    }
    let mut out = Outbox::default();
    for (prefix, export) in all {
        match export {
            Some(e) => out.announce(prefix, e.next_hop, &e.attrs),
            None => out.withdraw(prefix),
        }
    }
    out.end_of_rib = end_of_rib;
    out
}

fn announced(outbox: &Outbox, prefix: &str) -> Option<Export> {
    outbox.get(&p(prefix)).flatten()
}

// ---- decision process ----------------------------------------------------------------------

#[test]
fn higher_local_pref_wins() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::Internal));
    rib.peer_up(session(3, PeerKind::Internal));
    let lp = |v| PathAttributes {
        local_pref: Some(v),
        ..attrs(&[])
    };
    rib.update(addr(2), &announce(&["10.9.0.0/24"], "10.0.0.2", lp(100)));
    rib.update(addr(3), &announce(&["10.9.0.0/24"], "10.0.0.3", lp(200)));
    assert_eq!(best_peer(&rib, "10.9.0.0/24"), Some(addr(3)));
}

#[test]
fn shorter_as_path_wins() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.peer_up(session(3, PeerKind::External));
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    rib.update(
        addr(3),
        &announce(&["10.9.0.0/24"], "10.0.0.3", attrs(&[65003, 65100])),
    );
    assert_eq!(best_peer(&rib, "10.9.0.0/24"), Some(addr(2)));
}

#[test]
fn lower_origin_wins() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::Internal));
    rib.peer_up(session(3, PeerKind::Internal));
    let incomplete = PathAttributes {
        origin: Some(Origin::Incomplete),
        ..attrs(&[])
    };
    rib.update(addr(2), &announce(&["10.9.0.0/24"], "10.0.0.2", incomplete));
    rib.update(addr(3), &announce(&["10.9.0.0/24"], "10.0.0.3", attrs(&[])));
    assert_eq!(best_peer(&rib, "10.9.0.0/24"), Some(addr(3)));
}

#[test]
fn med_is_compared_only_between_paths_from_the_same_neighbouring_as() {
    let mut rib = rib();
    for n in [2, 3, 4] {
        rib.peer_up(session(n, PeerKind::Internal));
    }
    let med = |asn, m| PathAttributes {
        med: Some(m),
        ..attrs(&[asn])
    };
    // 10.0.0.2 and .3 come through AS 65100: the lower MED (.3) beats .2. 10.0.0.4 comes
    // through AS 65200 with a higher MED, which is not compared with the others; it loses
    // to .3 only on router ID.
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", med(65100, 50)),
    );
    rib.update(
        addr(4),
        &announce(&["10.9.0.0/24"], "10.0.0.4", med(65200, 90)),
    );
    rib.update(
        addr(3),
        &announce(&["10.9.0.0/24"], "10.0.0.3", med(65100, 10)),
    );
    assert_eq!(best_peer(&rib, "10.9.0.0/24"), Some(addr(3)));
}

#[test]
fn the_result_does_not_depend_on_arrival_order() {
    let med = |asn, m| PathAttributes {
        med: Some(m),
        ..attrs(&[asn])
    };
    let announcements = [
        (2, med(65100, 50)),
        (3, med(65200, 0)),
        (4, med(65100, 10)),
        (5, med(65200, 70)),
    ];
    let mut winners = BTreeSet::new();
    for rotation in 0..announcements.len() {
        let mut rib = rib();
        for n in 2..=5 {
            rib.peer_up(session(n, PeerKind::Internal));
        }
        let mut order = announcements.to_vec();
        order.rotate_left(rotation);
        for (n, a) in order {
            let nh = format!("10.0.0.{n}");
            rib.update(addr(n), &announce(&["10.9.0.0/24"], &nh, a));
        }
        winners.insert(best_peer(&rib, "10.9.0.0/24"));
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
}

#[test]
fn external_beats_internal() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::Internal));
    rib.peer_up(session(3, PeerKind::External));
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[65003])),
    );
    rib.update(
        addr(3),
        &announce(&["10.9.0.0/24"], "10.0.0.3", attrs(&[65003])),
    );
    assert_eq!(best_peer(&rib, "10.9.0.0/24"), Some(addr(3)));
}

#[test]
fn lowest_originator_id_or_router_id_breaks_ties() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::Internal));
    rib.peer_up(session(3, PeerKind::Internal));
    let reflected = PathAttributes {
        originator_id: Some(v4("10.0.0.9")),
        ..attrs(&[])
    };
    // .2's path was reflected from 10.0.0.9, which is higher than .3's router id.
    rib.update(addr(2), &announce(&["10.9.0.0/24"], "10.0.0.9", reflected));
    rib.update(addr(3), &announce(&["10.9.0.0/24"], "10.0.0.3", attrs(&[])));
    assert_eq!(best_peer(&rib, "10.9.0.0/24"), Some(addr(3)));
}

#[test]
fn shorter_cluster_list_breaks_ties() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::Internal));
    rib.peer_up(session(3, PeerKind::Internal));
    let via = |list: &[&str]| PathAttributes {
        originator_id: Some(v4("10.0.0.9")),
        cluster_list: list.iter().map(|c| v4(c)).collect(),
        ..attrs(&[])
    };
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.9", via(&["1.1.1.1", "2.2.2.2"])),
    );
    rib.update(
        addr(3),
        &announce(&["10.9.0.0/24"], "10.0.0.9", via(&["3.3.3.3"])),
    );
    assert_eq!(best_peer(&rib, "10.9.0.0/24"), Some(addr(3)));
}

#[test]
fn lowest_peer_address_breaks_the_last_tie() {
    let mut rib = rib();
    let mut a = session(3, PeerKind::Internal);
    let mut b = session(2, PeerKind::Internal);
    a.router_id = v4("9.9.9.9");
    b.router_id = v4("9.9.9.9");
    rib.peer_up(a);
    rib.peer_up(b);
    rib.update(addr(3), &announce(&["10.9.0.0/24"], "10.0.0.3", attrs(&[])));
    rib.update(addr(2), &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[])));
    assert_eq!(best_peer(&rib, "10.9.0.0/24"), Some(addr(2)));
}

#[test]
fn equally_good_paths_form_the_multipath_set() {
    let mut rib = rib();
    for n in [2, 3, 4] {
        rib.peer_up(session(n, PeerKind::Internal));
    }
    rib.update(addr(2), &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[])));
    rib.update(addr(3), &announce(&["10.9.0.0/24"], "10.0.0.3", attrs(&[])));
    rib.update(
        addr(4),
        &announce(&["10.9.0.0/24"], "10.0.0.4", attrs(&[65100])),
    );
    let selected = rib.selected();
    let hops: Vec<IpAddr> = selected[0].hops.iter().map(|h| h.peer).collect();
    assert_eq!(hops, vec![addr(2), addr(3)]);
}

#[test]
fn multipath_changes_are_reported_once_each() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::Internal));
    rib.peer_up(session(3, PeerKind::Internal));
    rib.update(addr(2), &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[])));
    rib.update(addr(3), &announce(&["10.9.0.0/24"], "10.0.0.3", attrs(&[])));
    rib.update(addr(2), &withdraw(&["10.9.0.0/24"]));
    rib.update(addr(3), &withdraw(&["10.9.0.0/24"]));
    let counts: Vec<usize> = rib.take_changes().iter().map(|s| s.hops.len()).collect();
    assert_eq!(counts, vec![1, 2, 1, 0]);
}

#[test]
fn our_own_route_is_preferred_and_forwards_by_nothing_learned() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    rib.originate(p("10.9.0.0/24"), &Origination::default());
    assert!(rib.paths(&p("10.9.0.0/24"))[0].from.is_none());
    assert!(rib.selected().is_empty());
}

// ---- advertisement rules -------------------------------------------------------------------

#[test]
fn a_new_peer_gets_the_whole_table_then_end_of_rib() {
    let mut rib = rib();
    rib.originate(p("10.244.0.0/26"), &Origination::default());
    rib.originate(p("fd00:244::/122"), &Origination::default());
    let mut s = session(2, PeerKind::Internal);
    s.local_addr = ip("fd00::1");
    rib.peer_up(s);
    s = session(3, PeerKind::Internal);
    rib.peer_up(s);
    let out = sent(&mut rib, 2);
    assert_eq!(out.len(), 1, "no IPv4 next hop on an IPv6 session");
    assert_eq!(out.end_of_rib, Family::ALL.to_vec());
    let out = sent(&mut rib, 3);
    assert_eq!(
        announced(&out, "10.244.0.0/26").unwrap().next_hop,
        NextHop::V4(v4("10.0.0.1"))
    );
    assert_eq!(rib.counts(addr(3)).advertised, 1);
}

#[test]
fn internal_routes_are_not_sent_to_internal_peers() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::Internal));
    rib.peer_up(session(3, PeerKind::Internal));
    sent(&mut rib, 3);
    rib.update(addr(2), &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[])));
    assert!(sent(&mut rib, 3).is_empty());
}

#[test]
fn routes_are_never_sent_back_to_their_peer() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    sent(&mut rib, 2);
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    assert!(sent(&mut rib, 2).is_empty());
}

#[test]
fn external_routes_go_to_internal_peers_with_their_next_hop_and_local_pref() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.peer_up(session(3, PeerKind::Internal));
    sent(&mut rib, 3);
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    let e = announced(&sent(&mut rib, 3), "10.9.0.0/24").unwrap();
    assert_eq!(e.next_hop, NextHop::V4(v4("10.0.0.2")));
    assert_eq!(e.attrs.local_pref, Some(100));
    assert_eq!(e.attrs.as_path, Some(AsPath::sequence([65002])));
}

#[test]
fn routes_to_external_peers_carry_our_as_and_our_next_hop_and_lose_internal_attributes() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::Internal));
    rib.peer_up(session(3, PeerKind::External));
    sent(&mut rib, 3);
    let internal = PathAttributes {
        local_pref: Some(300),
        med: Some(7),
        originator_id: Some(v4("10.0.0.9")),
        cluster_list: vec![v4("1.1.1.1")],
        ..attrs(&[])
    };
    rib.update(addr(2), &announce(&["10.9.0.0/24"], "10.0.0.9", internal));
    let e = announced(&sent(&mut rib, 3), "10.9.0.0/24").unwrap();
    assert_eq!(e.next_hop, NextHop::V4(v4("10.0.0.1")));
    assert_eq!(e.attrs.as_path, Some(AsPath::sequence([LOCAL_AS])));
    assert_eq!(
        (
            e.attrs.local_pref,
            e.attrs.med,
            e.attrs.originator_id,
            e.attrs.cluster_list.len()
        ),
        (None, None, None, 0)
    );
}

#[test]
fn keep_mode_sends_the_original_next_hop_to_external_peers() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::Internal));
    let mut ext = session(3, PeerKind::External);
    ext.next_hop_mode = NextHopMode::Keep;
    rib.peer_up(ext);
    sent(&mut rib, 3);
    rib.update(addr(2), &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[])));
    let e = announced(&sent(&mut rib, 3), "10.9.0.0/24").unwrap();
    assert_eq!(e.next_hop, NextHop::V4(v4("10.0.0.2")));
}

#[test]
fn self_mode_sends_our_next_hop_to_internal_peers() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    let mut int = session(3, PeerKind::Internal);
    int.next_hop_mode = NextHopMode::Self_;
    rib.peer_up(int);
    sent(&mut rib, 3);
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    let e = announced(&sent(&mut rib, 3), "10.9.0.0/24").unwrap();
    assert_eq!(e.next_hop, NextHop::V4(v4("10.0.0.1")));
}

#[test]
fn originated_routes_carry_their_communities() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    let large = LargeCommunity {
        global: 65000,
        local1: 1,
        local2: 2,
    };
    rib.originate(
        p("10.244.0.0/26"),
        &Origination {
            next_hop: None,
            communities: vec![0xfde8_0064],
            large_communities: vec![large],
        },
    );
    let e = announced(&sent(&mut rib, 2), "10.244.0.0/26").unwrap();
    assert_eq!(e.attrs.communities, vec![0xfde8_0064]);
    assert_eq!(e.attrs.large_communities, vec![large]);
}

#[test]
fn a_withdrawn_best_path_is_withdrawn_from_peers_and_a_replacement_announced() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.peer_up(session(3, PeerKind::External));
    rib.peer_up(session(4, PeerKind::Internal));
    sent(&mut rib, 4);
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    rib.update(
        addr(3),
        &announce(&["10.9.0.0/24"], "10.0.0.3", attrs(&[65003, 65100])),
    );
    sent(&mut rib, 4);
    rib.update(addr(2), &withdraw(&["10.9.0.0/24"]));
    let e = announced(&sent(&mut rib, 4), "10.9.0.0/24").unwrap();
    assert_eq!(e.next_hop, NextHop::V4(v4("10.0.0.3")));
    rib.update(addr(3), &withdraw(&["10.9.0.0/24"]));
    let out = sent(&mut rib, 4);
    assert_eq!(out.get(&p("10.9.0.0/24")), Some(None));
    assert_eq!(rib.counts(addr(4)).advertised, 0);
}

#[test]
fn changes_before_the_session_writes_are_coalesced() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    sent(&mut rib, 2);
    rib.originate(p("10.244.0.0/26"), &Origination::default());
    rib.withdraw(p("10.244.0.0/26"));
    rib.originate(p("10.244.0.0/26"), &Origination::default());
    let out = sent(&mut rib, 2);
    assert_eq!(out.len(), 1);
    assert!(announced(&out, "10.244.0.0/26").is_some());
}

#[test]
fn equal_attributes_are_one_allocation_across_prefixes_and_peers() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.peer_up(session(3, PeerKind::Internal));
    rib.peer_up(session(4, PeerKind::Internal));
    sent(&mut rib, 3);
    sent(&mut rib, 4);
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24", "10.9.1.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    let a = sent(&mut rib, 3);
    let b = sent(&mut rib, 4);
    let x = announced(&a, "10.9.0.0/24").unwrap().attrs;
    let y = announced(&a, "10.9.1.0/24").unwrap().attrs;
    let z = announced(&b, "10.9.1.0/24").unwrap().attrs;
    assert!(Arc::ptr_eq(&x, &y) && Arc::ptr_eq(&y, &z));
    let stored = rib.paths(&p("10.9.0.0/24"))[0].attrs.clone();
    assert!(Arc::ptr_eq(&stored, &rib.paths(&p("10.9.1.0/24"))[0].attrs));
}

// ---- route reflection ----------------------------------------------------------------------

#[test]
fn a_reflector_sends_client_routes_to_clients_and_non_clients_with_originator_and_cluster() {
    let mut rib = reflector();
    rib.peer_up(session(2, PeerKind::Client));
    rib.peer_up(session(3, PeerKind::Client));
    rib.peer_up(session(4, PeerKind::Internal));
    sent(&mut rib, 3);
    sent(&mut rib, 4);
    rib.update(addr(2), &announce(&["10.9.0.0/26"], "10.0.0.2", attrs(&[])));
    for n in [3, 4] {
        let e = announced(&sent(&mut rib, n), "10.9.0.0/26").unwrap();
        assert_eq!(
            e.next_hop,
            NextHop::V4(v4("10.0.0.2")),
            "next hop unchanged"
        );
        assert_eq!(e.attrs.originator_id, Some(v4("10.0.0.2")));
        assert_eq!(e.attrs.cluster_list, vec![v4("1.1.1.1")]);
    }
}

#[test]
fn a_reflector_sends_non_client_routes_to_clients_only() {
    let mut rib = reflector();
    rib.peer_up(session(2, PeerKind::Internal));
    rib.peer_up(session(3, PeerKind::Internal));
    rib.peer_up(session(4, PeerKind::Client));
    sent(&mut rib, 3);
    sent(&mut rib, 4);
    rib.update(addr(2), &announce(&["10.9.0.0/26"], "10.0.0.2", attrs(&[])));
    assert!(sent(&mut rib, 3).is_empty());
    assert!(announced(&sent(&mut rib, 4), "10.9.0.0/26").is_some());
}

#[test]
fn a_reflected_route_keeps_its_first_originator_and_grows_its_cluster_list() {
    let mut rib = reflector();
    rib.peer_up(session(2, PeerKind::Internal));
    rib.peer_up(session(3, PeerKind::Client));
    sent(&mut rib, 3);
    let reflected = PathAttributes {
        originator_id: Some(v4("10.0.0.9")),
        cluster_list: vec![v4("2.2.2.2")],
        ..attrs(&[])
    };
    rib.update(addr(2), &announce(&["10.9.0.0/26"], "10.0.0.9", reflected));
    let e = announced(&sent(&mut rib, 3), "10.9.0.0/26").unwrap();
    assert_eq!(e.attrs.originator_id, Some(v4("10.0.0.9")));
    assert_eq!(e.attrs.cluster_list, vec![v4("1.1.1.1"), v4("2.2.2.2")]);
}

#[test]
fn a_route_with_our_cluster_id_in_its_cluster_list_is_refused() {
    let mut rib = reflector();
    rib.peer_up(session(2, PeerKind::Internal));
    let looped = PathAttributes {
        originator_id: Some(v4("10.0.0.9")),
        cluster_list: vec![v4("2.2.2.2"), v4("1.1.1.1")],
        ..attrs(&[])
    };
    rib.update(addr(2), &announce(&["10.9.0.0/26"], "10.0.0.9", looped));
    assert!(rib.is_empty());
    let c = rib.counts(addr(2));
    assert_eq!((c.received, c.accepted), (1, 0));
}

#[test]
fn a_route_with_our_router_id_as_originator_is_refused() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::Internal));
    let ours = PathAttributes {
        originator_id: Some(v4("10.0.0.1")),
        ..attrs(&[])
    };
    rib.update(addr(2), &announce(&["10.9.0.0/26"], "10.0.0.1", ours));
    assert!(rib.is_empty());
}

#[test]
fn an_external_route_with_our_as_in_its_path_is_refused_and_replaces_the_previous_one() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[65002, LOCAL_AS])),
    );
    assert!(rib.is_empty());
}

#[test]
fn a_client_is_not_sent_its_own_route_back() {
    let mut rib = reflector();
    rib.peer_up(session(2, PeerKind::Client));
    rib.peer_up(session(3, PeerKind::Client));
    sent(&mut rib, 2);
    // .3 reflects .2's route back to us (another reflector of the cluster would not, but a
    // client may); it must not reach .2 again.
    let back = PathAttributes {
        originator_id: Some(v4("10.0.0.2")),
        ..attrs(&[])
    };
    rib.update(addr(3), &announce(&["10.9.0.0/26"], "10.0.0.2", back));
    assert!(sent(&mut rib, 2).is_empty());
}

// ---- graceful restart ----------------------------------------------------------------------

#[test]
fn a_restarting_peers_routes_stay_stale_until_its_end_of_rib() {
    let mut rib = rib();
    rib.peer_up(with_restart(session(2, PeerKind::Internal), false, true));
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/26", "10.9.1.0/26"], "10.0.0.2", attrs(&[])),
    );
    rib.peer_down(addr(2), &Family::ALL);
    assert_eq!(rib.selected().len(), 2, "kept while the peer restarts");
    assert!(rib.paths(&p("10.9.0.0/26"))[0].stale);
    rib.peer_up(with_restart(session(2, PeerKind::Internal), true, true));
    rib.update(addr(2), &announce(&["10.9.0.0/26"], "10.0.0.2", attrs(&[])));
    assert!(!rib.paths(&p("10.9.0.0/26"))[0].stale);
    assert_eq!(rib.selected().len(), 2, "stale until End-of-RIB");
    rib.update(addr(2), &Update::end_of_rib(Family::Ipv4Unicast));
    let left: Vec<Prefix> = rib.selected().iter().map(|s| s.prefix).collect();
    assert_eq!(left, vec![p("10.9.0.0/26")]);
}

#[test]
fn stale_routes_go_at_once_when_the_peer_returns_without_forwarding_state() {
    let mut rib = rib();
    rib.peer_up(with_restart(session(2, PeerKind::Internal), false, true));
    rib.update(addr(2), &announce(&["10.9.0.0/26"], "10.0.0.2", attrs(&[])));
    rib.peer_down(addr(2), &Family::ALL);
    rib.peer_up(with_restart(session(2, PeerKind::Internal), true, false));
    assert!(rib.selected().is_empty());
}

#[test]
fn stale_routes_go_when_the_restart_time_runs_out() {
    let mut rib = rib();
    rib.peer_up(with_restart(session(2, PeerKind::Internal), false, true));
    rib.update(addr(2), &announce(&["10.9.0.0/26"], "10.0.0.2", attrs(&[])));
    rib.peer_down(addr(2), &Family::ALL);
    rib.sweep_stale(addr(2), None);
    assert!(rib.selected().is_empty());
    assert!(rib.stale_families(addr(2)).is_empty());
}

#[test]
fn a_session_lost_without_graceful_restart_loses_its_routes() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::Internal));
    rib.update(addr(2), &announce(&["10.9.0.0/26"], "10.0.0.2", attrs(&[])));
    rib.peer_down(addr(2), &[]);
    assert!(rib.selected().is_empty());
    assert_eq!(rib.take_changes().last().map(|s| s.hops.len()), Some(0));
}

#[test]
fn stale_routes_are_still_advertised_to_other_peers() {
    let mut rib = rib();
    rib.peer_up(with_restart(session(2, PeerKind::External), false, true));
    rib.peer_up(session(3, PeerKind::Internal));
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    sent(&mut rib, 3);
    rib.peer_down(addr(2), &Family::ALL);
    assert!(sent(&mut rib, 3).is_empty(), "no withdrawal");
}

fn restarting_rib() -> Rib {
    Rib::new(RibConfig {
        restarting: true,
        ..rib().config.clone()
    })
}

#[test]
fn a_restarting_speaker_holds_its_table_until_the_peers_that_are_up_sent_end_of_rib() {
    let mut rib = restarting_rib();
    rib.originate(p("10.244.0.0/26"), &Origination::default());
    rib.peer_up(with_restart(session(2, PeerKind::Internal), false, true));
    rib.peer_up(with_restart(session(3, PeerKind::Internal), false, true));
    assert!(sent(&mut rib, 2).is_empty());
    rib.update(addr(2), &Update::end_of_rib(Family::Ipv4Unicast));
    rib.update(addr(2), &Update::end_of_rib(Family::Ipv6Unicast));
    assert!(rib.deferring(), ".3 has not finished");
    rib.update(addr(3), &Update::end_of_rib(Family::Ipv4Unicast));
    rib.update(addr(3), &Update::end_of_rib(Family::Ipv6Unicast));
    assert!(!rib.deferring());
    let out = sent(&mut rib, 2);
    assert!(announced(&out, "10.244.0.0/26").is_some());
    assert_eq!(out.end_of_rib, Family::ALL.to_vec());
}

#[test]
fn a_restarting_speaker_does_not_wait_for_peers_that_restart_too() {
    let mut rib = restarting_rib();
    rib.peer_up(with_restart(session(2, PeerKind::Internal), true, true));
    assert!(!rib.deferring());
}

#[test]
fn a_restarting_speaker_waits_for_a_peer_in_open_confirm() {
    let mut rib = restarting_rib();
    let peer3 = with_restart(session(3, PeerKind::Internal), false, true);
    rib.peer_opening(addr(3), peer3.restart.as_ref());
    rib.peer_up(with_restart(session(2, PeerKind::Internal), true, true));
    assert!(rib.deferring(), ".3 is about to come up");
    rib.peer_not_opening(addr(3));
    assert!(!rib.deferring());
}

#[test]
fn a_restarting_speaker_does_not_wait_for_peers_without_graceful_restart() {
    let mut rib = restarting_rib();
    rib.peer_up(session(2, PeerKind::Internal));
    assert!(!rib.deferring());
}

// ---- bookkeeping ---------------------------------------------------------------------------

#[test]
fn a_disabled_family_loses_its_routes_and_ignores_more() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::Internal));
    rib.update(addr(2), &announce(&["10.9.0.0/26"], "10.0.0.2", attrs(&[])));
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
    rib.update(addr(2), &disable);
    assert!(rib.is_empty());
    rib.update(addr(2), &announce(&["10.9.1.0/26"], "10.0.0.2", attrs(&[])));
    assert!(rib.is_empty());
}

#[test]
fn received_routes_show_which_is_best() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::Internal));
    rib.peer_up(session(3, PeerKind::External));
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/26"], "10.0.0.2", attrs(&[65003])),
    );
    rib.update(
        addr(3),
        &announce(&["10.9.0.0/26"], "10.0.0.3", attrs(&[65003])),
    );
    let r = rib.received(addr(2));
    assert_eq!((r.len(), r[0].best), (1, false));
    assert!(rib.received(addr(3))[0].best);
}

#[test]
fn a_removed_peer_takes_its_routes() {
    let mut rib = rib();
    rib.peer_up(with_restart(session(2, PeerKind::Internal), false, true));
    rib.update(addr(2), &announce(&["10.9.0.0/26"], "10.0.0.2", attrs(&[])));
    rib.remove_peer(addr(2));
    assert!(rib.is_empty());
}

#[test]
fn a_route_refresh_queues_the_table_again_without_end_of_rib() {
    let mut rib = rib();
    rib.originate(p("10.244.0.0/26"), &Origination::default());
    rib.peer_up(session(2, PeerKind::External));
    sent(&mut rib, 2);
    rib.refresh(addr(2));
    let out = sent(&mut rib, 2);
    assert_eq!((out.len(), out.end_of_rib.len()), (1, 0));
}

// ---- feeds: the log, the walks and the per-peer bits ------------------------------------

fn one_batch(rib: &mut Rib, n: u8, limit: usize) -> Outbox {
    rib.take_outbox(addr(n), limit)
}

fn prefixes(out: &Outbox) -> Vec<Prefix> {
    let mut v: Vec<Prefix> = out.routes().iter().map(|(p, _)| *p).collect();
    v.sort();
    v
}

#[test]
fn a_destination_and_its_only_path_take_56_bytes() {
    assert_eq!(std::mem::size_of::<Paths>(), 24);
    assert!(
        std::mem::size_of::<Dest>() <= 56,
        "{}",
        std::mem::size_of::<Dest>()
    );
}

#[test]
fn a_table_larger_than_a_batch_arrives_in_batches_once_each_then_end_of_rib() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    let many: Vec<String> = (0..250).map(|i| format!("10.{i}.0.0/16")).collect();
    let names: Vec<&str> = many.iter().map(String::as_str).collect();
    rib.update(addr(2), &announce(&names, "10.0.0.2", attrs(&[65002])));
    rib.peer_up(session(3, PeerKind::Internal));
    let mut seen = Vec::new();
    let mut batches = 0;
    loop {
        let out = one_batch(&mut rib, 3, 100);
        batches += 1;
        assert!(out.len() <= 100);
        assert_eq!(
            out.end_of_rib.is_empty(),
            out.more,
            "End-of-RIB only after the last"
        );
        seen.extend(prefixes(&out));
        if !out.more {
            break;
        }
    }
    seen.sort();
    let mut want: Vec<Prefix> = names.iter().map(|s| p(s)).collect();
    want.sort();
    assert_eq!((seen, batches), (want, 3));
}

#[test]
fn a_change_during_a_walk_is_sent_once_as_it_ends_up() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.update(
        addr(2),
        &announce(&["10.1.0.0/24", "10.2.0.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    rib.peer_up(session(3, PeerKind::Internal));
    let first = one_batch(&mut rib, 3, 1);
    assert_eq!(first.len(), 1);
    // Both change before the walk gets to the second: the first is sent again, the second
    // once, with what it is now.
    rib.update(
        addr(2),
        &announce(
            &["10.1.0.0/24", "10.2.0.0/24"],
            "10.0.0.2",
            attrs(&[65002, 65009]),
        ),
    );
    let rest = one_batch(&mut rib, 3, usize::MAX);
    assert!(!rest.more);
    assert_eq!(
        prefixes(&rest),
        vec![p("10.1.0.0/24"), p("10.2.0.0/24")],
        "each once"
    );
    for (_, e) in &rest.routes() {
        let path = e.as_ref().unwrap().attrs.as_path.clone().unwrap();
        assert_eq!(path, AsPath::sequence([65002, 65009]));
    }
}

#[test]
fn a_slow_peer_gets_only_the_last_of_changes_a_fast_peer_saw_one_by_one() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.peer_up(session(3, PeerKind::Internal));
    rib.peer_up(session(4, PeerKind::Internal));
    sent(&mut rib, 3);
    sent(&mut rib, 4);
    for hop in 1..=3u32 {
        let path: Vec<u32> = (0..hop).map(|i| 65002 + i).collect();
        rib.update(
            addr(2),
            &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&path)),
        );
        let fast = sent(&mut rib, 3);
        assert_eq!(fast.len(), 1);
    }
    let slow = one_batch(&mut rib, 4, usize::MAX);
    assert_eq!(slow.len(), 1);
    let e = announced(&slow, "10.9.0.0/24").unwrap();
    assert_eq!(
        e.attrs.as_path.clone().unwrap(),
        AsPath::sequence([65002, 65003, 65004])
    );
}

#[test]
fn a_peer_that_comes_up_behind_a_pending_change_still_gets_the_next_one() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.peer_up(session(3, PeerKind::Internal));
    sent(&mut rib, 3);
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    // Peer 4 comes up while peer 3 has not read the change yet, and walks the table.
    rib.peer_up(session(4, PeerKind::Internal));
    assert!(announced(&sent(&mut rib, 4), "10.9.0.0/24").is_some());
    rib.update(addr(2), &withdraw(&["10.9.0.0/24"]));
    assert_eq!(sent(&mut rib, 4).get(&p("10.9.0.0/24")), Some(None));
    assert_eq!(
        sent(&mut rib, 3).routes(),
        vec![],
        "never sent, never withdrawn"
    );
}

#[test]
fn a_withdrawn_destination_keeps_its_slot_until_every_peer_that_had_it_was_told() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.peer_up(session(3, PeerKind::Internal));
    rib.peer_up(session(4, PeerKind::Internal));
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    sent(&mut rib, 3);
    sent(&mut rib, 4);
    rib.update(addr(2), &withdraw(&["10.9.0.0/24"]));
    assert_eq!(sent(&mut rib, 3).get(&p("10.9.0.0/24")), Some(None));
    // A new prefix must not take the slot peer 4 still holds as 10.9.0.0/24.
    rib.update(
        addr(2),
        &announce(&["10.8.0.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    let out = sent(&mut rib, 4);
    assert_eq!(out.get(&p("10.9.0.0/24")), Some(None));
    assert!(announced(&out, "10.8.0.0/24").is_some());
    assert_eq!(rib.counts(addr(4)).advertised, 1);
}

#[test]
fn churn_reuses_slots_and_the_log_stays_short() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.peer_up(session(3, PeerKind::Internal));
    for round in 0..20_000u32 {
        let prefix = format!("10.{}.{}.0/24", round % 200, round / 200);
        rib.update(addr(2), &announce(&[&prefix], "10.0.0.2", attrs(&[65002])));
        rib.update(addr(2), &withdraw(&[&prefix]));
        sent(&mut rib, 2);
        sent(&mut rib, 3);
    }
    rib.audit().unwrap();
    // Withdrawn destinations wait for a sweep, which comes once they are SWEEP_MIN.
    assert!(
        rib.dests.len() <= SWEEP_MIN + 1,
        "{} slots",
        rib.dests.len()
    );
    assert!(rib.log.len() <= 4096 + 2, "{} log entries", rib.log.len());
    assert!(rib.is_empty());
}

#[test]
fn a_peer_that_does_not_read_holds_the_log_until_its_session_goes() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.peer_up(session(3, PeerKind::Internal));
    rib.peer_up(session(4, PeerKind::Internal));
    sent(&mut rib, 2);
    for round in 0..(2 * LOG_MIN as u32) {
        let prefix = format!("10.{}.{}.0/24", round % 200, round / 200);
        rib.update(addr(2), &announce(&[&prefix], "10.0.0.2", attrs(&[65002])));
        sent(&mut rib, 2);
        sent(&mut rib, 3);
    }
    assert!(rib.log.len() >= 2 * LOG_MIN, "peer 4 has read nothing");
    rib.peer_down(addr(4), &[]);
    sent(&mut rib, 2);
    assert_eq!(rib.log.len(), 0, "everyone left has read it all");
    rib.audit().unwrap();
}

#[test]
fn a_peer_going_down_lets_go_of_the_slots_it_held() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.peer_up(session(3, PeerKind::Internal));
    rib.update(
        addr(2),
        &announce(&["10.9.0.0/24"], "10.0.0.2", attrs(&[65002])),
    );
    sent(&mut rib, 3);
    rib.update(addr(2), &withdraw(&["10.9.0.0/24"]));
    rib.sweep();
    assert_eq!(rib.free.len(), 0, "peer 3 still holds it");
    rib.peer_down(addr(3), &[]);
    rib.sweep();
    assert_eq!(rib.free.len(), 1);
    rib.audit().unwrap();
}

#[test]
fn without_peers_to_send_to_nothing_is_logged() {
    let mut rib = rib();
    rib.peer_up(session(2, PeerKind::External));
    rib.peer_down(addr(2), &Family::ALL);
    rib.peer_up(with_restart(session(2, PeerKind::External), false, true));
    rib.peer_down(addr(2), &[]);
    rib.originate(p("10.244.0.0/26"), &Origination::default());
    assert_eq!(rib.log.len(), 0);
}

mod feeds_agree_with_the_table {
    //! Whatever the order of changes, session restarts and batch sizes, what a peer ends up
    //! holding (every batch it took, applied in order) is what the table exports to it now.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Announce { peer: u8, prefix: u8, path: u8 },
        Withdraw { peer: u8, prefix: u8 },
        Down { peer: u8, keep: bool },
        Up { peer: u8 },
        EndOfRib { peer: u8 },
        Take { peer: u8, limit: u8 },
        Refresh { peer: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3u8, 0..24u8, 0..3u8)
                .prop_map(|(peer, prefix, path)| Op::Announce { peer, prefix, path }),
            3 => (0..3u8, 0..24u8).prop_map(|(peer, prefix)| Op::Withdraw { peer, prefix }),
            1 => (0..3u8, any::<bool>()).prop_map(|(peer, keep)| Op::Down { peer, keep }),
            1 => (0..3u8).prop_map(|peer| Op::Up { peer }),
            1 => (0..3u8).prop_map(|peer| Op::EndOfRib { peer }),
            4 => (0..3u8, 1..6u8).prop_map(|(peer, limit)| Op::Take { peer, limit }),
            1 => (0..3u8).prop_map(|peer| Op::Refresh { peer }),
        ]
    }

    fn kind(peer: u8) -> PeerKind {
        [PeerKind::Client, PeerKind::Internal, PeerKind::External][usize::from(peer)]
    }

    fn prefix(i: u8) -> String {
        format!("10.{i}.0.0/24")
    }

    type Held = BTreeMap<Prefix, Export>;

    fn apply(held: &mut Held, out: Outbox) {
        for (p, e) in out.routes() {
            match e {
                Some(e) => held.insert(p, e),
                None => held.remove(&p),
            };
        }
    }

    proptest! {
        #[test]
        fn what_a_peer_holds_is_what_the_table_exports(ops in proptest::collection::vec(op(), 1..120)) {
            let mut rib = reflector();
            let mut held: Vec<Held> = vec![Held::new(); 3];
            let mut up = [true; 3];
            for peer in 0..3u8 {
                rib.peer_up(with_restart(session(2 + peer, kind(peer)), false, true));
            }
            for op in ops {
                match op {
                    Op::Announce { peer, prefix: i, path } if up[usize::from(peer)] => {
                        let hops: Vec<u32> = (0..=u32::from(path)).map(|h| 65100 + h).collect();
                        let nh = format!("10.0.0.{}", 2 + peer);
                        rib.update(addr(2 + peer), &announce(&[&prefix(i)], &nh, attrs(&hops)));
                    }
                    Op::Withdraw { peer, prefix: i } if up[usize::from(peer)] => {
                        rib.update(addr(2 + peer), &withdraw(&[&prefix(i)]));
                    }
                    Op::Down { peer, keep } => {
                        let keep: &[Family] = if keep { &Family::ALL } else { &[] };
                        rib.peer_down(addr(2 + peer), keep);
                        up[usize::from(peer)] = false;
                        held[usize::from(peer)].clear();
                    }
                    Op::Up { peer } if !up[usize::from(peer)] => {
                        rib.peer_up(with_restart(session(2 + peer, kind(peer)), false, true));
                        up[usize::from(peer)] = true;
                    }
                    Op::EndOfRib { peer } if up[usize::from(peer)] => {
                        rib.update(addr(2 + peer), &Update::end_of_rib(Family::Ipv4Unicast));
                    }
                    Op::Take { peer, limit } => {
                        let out = rib.take_outbox(addr(2 + peer), usize::from(limit));
                        let mut seen: Vec<Prefix> = out.routes().iter().map(|(p, _)| *p).collect();
                        seen.sort();
                        seen.dedup();
                        prop_assert_eq!(seen.len(), out.len(), "a prefix twice in a batch");
                        apply(&mut held[usize::from(peer)], out);
                    }
                    Op::Refresh { peer } => rib.refresh(addr(2 + peer)),
                    _ => {}
                }
                if let Err(e) = rib.audit() {
                    prop_assert!(false, "{}", e);
                }
            }
            for peer in 0..3u8 {
                if !up[usize::from(peer)] {
                    continue;
                }
                loop {
                    let out = rib.take_outbox(addr(2 + peer), 7);
                    let more = out.more;
                    apply(&mut held[usize::from(peer)], out);
                    if !more {
                        break;
                    }
                }
                // A refresh sends everything the peer should hold, and withdraws nothing.
                rib.refresh(addr(2 + peer));
                let mut fresh = Held::new();
                loop {
                    let out = rib.take_outbox(addr(2 + peer), usize::MAX);
                    prop_assert!(out.routes().iter().all(|(_, e)| e.is_some()));
                    let more = out.more;
                    apply(&mut fresh, out);
                    if !more {
                        break;
                    }
                }
                prop_assert_eq!(&held[usize::from(peer)], &fresh);
                prop_assert_eq!(rib.counts(addr(2 + peer)).advertised, fresh.len() as u64);
            }
        }
    }
}
