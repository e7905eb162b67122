//! A stream of UPDATE bodies from several peers, with sessions going down and up between
//! them, applied to one RIB, whose sessions take what they are sent in batches of varying
//! size: nothing panics, and the table stays consistent (`Rib::audit`: what each peer holds
//! matches the counts, the index holds exactly the slots in use; a peer that is removed
//! leaves no path behind).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use tabby_bgp::rib::{PeerKind, PeerSession, Rib, RibConfig};
use tabby_bgp::speaker::NextHopMode;
use tabby_bgp::wire::Update;
use tabby_bgp::Family;

#[path = "common.rs"]
mod common;

fn session(n: u8) -> PeerSession {
    let kind = match n % 3 {
        0 => PeerKind::External,
        1 => PeerKind::Internal,
        _ => PeerKind::Client,
    };
    PeerSession {
        address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
        router_id: Ipv4Addr::new(10, 0, 0, n),
        remote_as: if kind == PeerKind::External { 65100 } else { 65000 },
        kind,
        next_hop_mode: NextHopMode::Auto,
        local_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        families: Family::ALL.to_vec(),
        restart: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rib = Rib::new(RibConfig {
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        local_as: 65000,
        cluster_id: Some(Ipv4Addr::new(1, 1, 1, 1)),
        next_hop_v4: None,
        next_hop_v6: None,
        restarting: data.first().is_some_and(|b| b & 1 == 1),
    });
    for n in 2..=5 {
        rib.peer_up(session(n));
    }
    // Records: [op, peer, context, len, body...].
    let mut rest = data;
    while let [op, peer, ctx, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let n = 2 + peer % 4;
        let addr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, n));
        match op % 8 {
            0 => rib.peer_down(addr, &Family::ALL),
            1 => rib.peer_down(addr, &[]),
            2 => rib.peer_up(session(n)),
            3 => rib.sweep_stale(addr, None),
            4 => rib.end_deferral(),
            _ => {
                if let Ok(update) = Update::decode(body, &common::context(*ctx)) {
                    rib.update(addr, &update);
                }
            }
        }
        let _ = rib.take_outbox(addr, 1 + usize::from(*ctx));
        if let Err(e) = rib.audit() {
            panic!("inconsistent table: {e}");
        }
    }
    for n in 2..=5 {
        while rib.take_outbox(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)), 64).more {}
    }
    if let Err(e) = rib.audit() {
        panic!("inconsistent table after draining: {e}");
    }
    for change in rib.take_changes() {
        let _ = change;
    }
    for n in 2..=5 {
        rib.remove_peer(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)));
    }
    assert!(rib.is_empty(), "paths left after every peer was removed");
    if let Err(e) = rib.audit() {
        panic!("inconsistent table after removing every peer: {e}");
    }
});
