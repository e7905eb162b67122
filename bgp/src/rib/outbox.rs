//! Packing what a peer must be sent into UPDATE messages (RFC 4271 §9.2: as few as fit).

use super::{Export, Outbox};
use crate::prefix::{Family, Prefix};
use crate::wire::{Context, Message, NextHop, Nlri, PathAttributes, Update};
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Appends the UPDATEs of `outbox` to `buf`: withdrawals first, then announcements packed
/// by (family, next hop, attribute set), then the End-of-RIB markers. Returns the number of
/// messages.
pub fn encode(ctx: &Context, outbox: &Outbox, buf: &mut BytesMut) -> usize {
    let mut withdrawn: BTreeMap<Family, Vec<Nlri>> = BTreeMap::new();
    // The attribute sets are interned: equal sets are one allocation, so the pointer is
    // the grouping key (and keeps the order of the output independent of the contents).
    type Group = (Arc<PathAttributes>, Vec<Nlri>);
    let mut announced: BTreeMap<(Family, NextHop, usize), Group> = BTreeMap::new();
    for (prefix, export) in &outbox.routes {
        match export {
            None => withdrawn
                .entry(prefix.family())
                .or_default()
                .push(nlri(prefix)),
            Some(Export { next_hop, attrs }) => {
                let key = (prefix.family(), *next_hop, Arc::as_ptr(attrs) as usize);
                announced
                    .entry(key)
                    .or_insert_with(|| (Arc::clone(attrs), Vec::new()))
                    .1
                    .push(nlri(prefix));
            }
        }
    }
    let mut messages = 0;
    for (family, nlri) in withdrawn {
        messages += Update::encode_withdraw(ctx, family, &nlri, buf);
    }
    for ((family, next_hop, _), (attrs, nlri)) in announced {
        messages += Update::encode_announce(ctx, family, &attrs, next_hop, &nlri, buf);
    }
    for family in &outbox.end_of_rib {
        Message::Update(Update::end_of_rib(*family)).encode(ctx, buf);
        messages += 1;
    }
    messages
}

fn nlri(prefix: &Prefix) -> Nlri {
    Nlri::from(*prefix)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::wire::{AsPath, Origin};
    use std::net::Ipv4Addr;

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
            let e = Export {
                next_hop: nh("10.0.0.1"),
                attrs: Arc::clone(&shared),
            };
            outbox
                .routes
                .push((p(&format!("10.{}.{}.0/26", i / 4, (i % 4) * 64)), Some(e)));
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
            let e = Export {
                next_hop: nh(hop),
                attrs: Arc::clone(at),
            };
            outbox.routes.push((p(prefix), Some(e)));
        }
        let mut buf = BytesMut::new();
        assert_eq!(encode(&ctx, &outbox, &mut buf), 3);
    }

    #[test]
    fn withdrawals_come_first_and_end_of_rib_last() {
        let ctx = Context::modern();
        let mut outbox = Outbox::default();
        outbox.routes.push((
            p("10.1.0.0/24"),
            Some(Export {
                next_hop: nh("10.0.0.1"),
                attrs: attrs(&[]),
            }),
        ));
        outbox.routes.push((p("10.2.0.0/24"), None));
        outbox.routes.push((p("fd00::/64"), None));
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
