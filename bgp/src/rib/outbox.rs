//! Packing what a peer must be sent into UPDATE messages (RFC 4271 §9.2: as few as fit).

use super::Outbox;
use crate::prefix::Family;
use crate::wire::{Context, Message, Nlri, Update};
use bytes::BytesMut;

/// Appends the UPDATEs of `outbox` to `buf`: withdrawals first, then each group of
/// announcements (packed as many per UPDATE as fit), then the End-of-RIB markers. Returns the
/// number of messages.
pub fn encode(ctx: &Context, outbox: &Outbox, buf: &mut BytesMut) -> usize {
    let mut messages = 0;
    for family in Family::ALL {
        let nlri: Vec<Nlri> = outbox
            .withdrawn
            .iter()
            .filter(|p| p.family() == family)
            .map(|p| Nlri::from(*p))
            .collect();
        if !nlri.is_empty() {
            messages += Update::encode_withdraw(ctx, family, &nlri, buf);
        }
    }
    for group in &outbox.announced {
        let nlri: Vec<Nlri> = group.prefixes.iter().map(|p| Nlri::from(*p)).collect();
        messages +=
            Update::encode_announce(ctx, group.family, &group.attrs, group.next_hop, &nlri, buf);
    }
    for family in &outbox.end_of_rib {
        Message::Update(Update::end_of_rib(*family)).encode(ctx, buf);
        messages += 1;
    }
    messages
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::prefix::Prefix;
    use crate::wire::{AsPath, NextHop, Origin, PathAttributes};
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
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

    fn attrs(path: &[u32]) -> Arc<PathAttributes> {
        Arc::new(PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(path.iter().copied())),
            ..PathAttributes::default()
        })
    }

    fn nh(s: &str) -> NextHop {
        NextHop::V4(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn prefixes_sharing_next_hop_and_attributes_travel_in_one_update() {
        let ctx = Context::modern();
        let shared = attrs(&[65001]);
        let mut outbox = Outbox::default();
        for i in 0..200 {
            let prefix = p(&format!("10.{}.{}.0/26", i / 4, (i % 4) * 64));
            outbox.announce(prefix, nh("10.0.0.1"), &shared);
        }
        let mut buf = BytesMut::new();
        assert_eq!(encode(&ctx, &outbox, &mut buf), 1);
        assert_eq!(decode_all(&buf, &ctx)[0].nlri.len(), 200);
    }

    #[test]
    fn different_attributes_or_next_hops_make_separate_updates() {
        let ctx = Context::modern();
        let mut outbox = Outbox::default();
        let a = attrs(&[65001]);
        let b = attrs(&[65002]);
        for (prefix, hop, at) in [
            ("10.1.0.0/24", "10.0.0.1", &a),
            ("10.2.0.0/24", "10.0.0.1", &b),
            ("10.3.0.0/24", "10.0.0.2", &a),
            ("10.4.0.0/24", "10.0.0.1", &a),
        ] {
            outbox.announce(p(prefix), nh(hop), at);
        }
        let mut buf = BytesMut::new();
        assert_eq!(encode(&ctx, &outbox, &mut buf), 3);
    }

    #[test]
    fn withdrawals_come_first_and_end_of_rib_last() {
        let ctx = Context::modern();
        let mut outbox = Outbox::default();
        outbox.announce(p("10.1.0.0/24"), nh("10.0.0.1"), &attrs(&[]));
        outbox.withdraw(p("10.2.0.0/24"));
        outbox.withdraw(p("fd00::/64"));
        outbox.end_of_rib = Family::ALL.to_vec();
        let mut buf = BytesMut::new();
        let n = encode(&ctx, &outbox, &mut buf);
        let updates = decode_all(&buf, &ctx);
        assert_eq!(n, updates.len());
        assert_eq!(updates.len(), 5);
        assert_eq!(updates[0].withdrawn, vec![Nlri::from(p("10.2.0.0/24"))]);
        assert!(updates[1].mp_unreach.is_some());
        assert_eq!(updates[2].nlri, vec![Nlri::from(p("10.1.0.0/24"))]);
        assert_eq!(updates[3].is_end_of_rib(), Some(Family::Ipv4Unicast));
        assert_eq!(updates[4].is_end_of_rib(), Some(Family::Ipv6Unicast));
    }
}
