//! Batches of what a peer must be sent, and their packing into UPDATE messages (RFC 4271
//! §9.2: as few as fit).

use super::Export;
use crate::prefix::{Family, Prefix};
use crate::wire::{Context, Message, NextHop, Nlri, PathAttributes, Update};
use bytes::BytesMut;
use foldhash::HashMap;
use std::sync::Arc;

/// A batch of what a session has to send: prefixes to withdraw, prefixes to announce
/// grouped by what they are sent with (each prefix at most once in a batch), and the
/// families whose End-of-RIB follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    /// Prefixes to withdraw.
    pub withdrawn: Vec<Prefix>,
    /// Prefixes to announce, by family, next hop and attribute set: one UPDATE per group,
    /// or as many as its prefixes need.
    pub announced: Vec<Announced>,
    /// End-of-RIB markers to send after the routes (RFC 4724 §2).
    pub end_of_rib: Vec<Family>,
    /// More is waiting: take the next batch once this one is written.
    pub more: bool,
    /// Where each group of `announced` is.
    groups: HashMap<(Family, NextHop, usize), usize>,
}

/// Prefixes sent with one next hop and attribute set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// The family of the prefixes.
    pub family: Family,
    /// The next hop.
    pub next_hop: NextHop,
    /// The attributes (interned: equal sets are pointer-equal).
    pub attrs: Arc<PathAttributes>,
    /// The prefixes.
    pub prefixes: Vec<Prefix>,
}

impl Outbox {
    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.withdrawn.is_empty() && self.announced.is_empty() && self.end_of_rib.is_empty()
    }

    /// Number of prefixes in the batch.
    pub fn len(&self) -> usize {
        self.withdrawn.len()
            + self
                .announced
                .iter()
                .map(|a| a.prefixes.len())
                .sum::<usize>()
    }

    /// Adds a prefix to announce. The attributes are cloned only for a new group: a batch
    /// costs a prefix per entry, not a reference count update.
    pub fn announce(&mut self, prefix: Prefix, next_hop: NextHop, attrs: &Arc<PathAttributes>) {
        let key = (prefix.family(), next_hop, Arc::as_ptr(attrs) as usize);
        let i = match self.announced.last() {
            Some(last)
                if last.family == key.0
                    && last.next_hop == next_hop
                    && Arc::ptr_eq(&last.attrs, attrs) =>
            {
                self.announced.len() - 1
            }
            _ => match self.groups.get(&key) {
                Some(&i) => i,
                None => {
                    self.announced.push(Announced {
                        family: key.0,
                        next_hop,
                        attrs: Arc::clone(attrs),
                        prefixes: Vec::new(),
                    });
                    self.groups.insert(key, self.announced.len() - 1);
                    self.announced.len() - 1
                }
            },
        };
        self.announced[i].prefixes.push(prefix);
    }

    /// Adds a prefix to withdraw.
    pub fn withdraw(&mut self, prefix: Prefix) {
        self.withdrawn.push(prefix);
    }

    /// Every prefix of the batch with what it is sent (`None`: withdrawn).
    pub fn routes(&self) -> Vec<(Prefix, Option<Export>)> {
        let withdrawn = self.withdrawn.iter().map(|p| (*p, None));
        let announced = self.announced.iter().flat_map(|a| {
            a.prefixes.iter().map(|p| {
                let export = Export {
                    next_hop: a.next_hop,
                    attrs: Arc::clone(&a.attrs),
                };
                (*p, Some(export))
            })
        });
        withdrawn.chain(announced).collect()
    }

    /// The change for `prefix` in this batch, if any (`Some(None)`: a withdrawal).
    pub fn get(&self, prefix: &Prefix) -> Option<Option<Export>> {
        self.routes()
            .into_iter()
            .find(|(p, _)| p == prefix)
            .map(|(_, e)| e)
    }

    /// Appends the UPDATEs of the outbox to `buf` for a session of context `ctx`: see
    /// [`encode`]. Returns the number of messages.
    pub fn encode(&self, ctx: &crate::wire::Context, buf: &mut bytes::BytesMut) -> usize {
        encode(ctx, self, buf)
    }
}

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
