//! UPDATE (RFC 4271 §4.3), multiprotocol reachability (RFC 4760), ADD-PATH NLRI (RFC 7911)
//! and the revised error handling of RFC 7606.

use super::attr::{self, PathAttributes};
use super::notification::{self as n, Notification};
use super::{Context, Reader, HEADER_LEN};
use crate::prefix::{Family, Prefix};
use bytes::{BufMut, BytesMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One NLRI entry: a prefix and, on ADD-PATH sessions, its path identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nlri {
    /// The prefix.
    pub prefix: Prefix,
    /// Path identifier (RFC 7911 §3), when ADD-PATH is in use for the family.
    pub path_id: Option<u32>,
}

impl From<Prefix> for Nlri {
    fn from(prefix: Prefix) -> Nlri {
        Nlri {
            prefix,
            path_id: None,
        }
    }
}

/// The next hop of reachable NLRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NextHop {
    /// An IPv4 next hop.
    V4(Ipv4Addr),
    /// An IPv6 next hop, global and optionally link-local (RFC 2545 §3).
    V6 {
        /// Global address.
        global: Ipv6Addr,
        /// Link-local address.
        link_local: Option<Ipv6Addr>,
    },
}

impl NextHop {
    /// The address to forward to (the global one for IPv6).
    pub fn addr(&self) -> IpAddr {
        match self {
            NextHop::V4(a) => IpAddr::V4(*a),
            NextHop::V6 { global, .. } => IpAddr::V6(*global),
        }
    }

    fn encode(&self, family: Family, out: &mut Vec<u8>) {
        match (self, family) {
            (NextHop::V4(a), Family::Ipv4Unicast) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            // RFC 4798 §2: an IPv4 next hop for IPv6 NLRI travels IPv4-mapped.
            (NextHop::V4(a), Family::Ipv6Unicast) => {
                out.push(16);
                out.extend_from_slice(&a.to_ipv6_mapped().octets());
            }
            (NextHop::V6 { global, link_local }, _) => match link_local {
                Some(ll) => {
                    out.push(32);
                    out.extend_from_slice(&global.octets());
                    out.extend_from_slice(&ll.octets());
                }
                None => {
                    out.push(16);
                    out.extend_from_slice(&global.octets());
                }
            },
        }
    }
}

/// MP_REACH_NLRI (RFC 4760 §3).
///
/// ```text
/// +---------------------------------------------------------+
/// | Address Family Identifier (2 octets)                    |
/// +---------------------------------------------------------+
/// | Subsequent Address Family Identifier (1 octet)          |
/// +---------------------------------------------------------+
/// | Length of Next Hop Network Address (1 octet)            |
/// +---------------------------------------------------------+
/// | Network Address of Next Hop (variable)                  |
/// +---------------------------------------------------------+
/// | Reserved (1 octet)                                      |
/// +---------------------------------------------------------+
/// | Network Layer Reachability Information (variable)       |
/// +---------------------------------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    /// Family of the NLRI.
    pub family: Family,
    /// Next hop.
    pub next_hop: NextHop,
    /// Reachable NLRI.
    pub nlri: Vec<Nlri>,
}

/// MP_UNREACH_NLRI (RFC 4760 §4): AFI, SAFI, withdrawn routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    /// Family of the NLRI.
    pub family: Family,
    /// Withdrawn NLRI.
    pub withdrawn: Vec<Nlri>,
}

/// What RFC 7606 makes of a malformation that does not reset the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// The UPDATE's reachable NLRI are handled as withdrawn (RFC 7606 §2).
    TreatAsWithdraw,
    /// The attribute is dropped and the UPDATE otherwise used (RFC 7606 §2).
    AttributeDiscard,
    /// The session stops using the family and drops the peer's routes in it (RFC 4760 §7).
    AfiSafiDisable(Family),
}

/// What was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateErrorKind {
    /// Attribute flags conflicting with the type (the flags received).
    Flags(u8),
    /// Attribute length wrong for the type (the length received).
    Length(usize),
    /// A value the attribute does not define.
    Value(u32),
    /// The value does not parse.
    Malformed,
    /// The attribute appeared more than once.
    Repeated,
    /// The attribute may not come from an external peer.
    FromExternalPeer,
    /// The attribute is not expected on this session (AS4_* from a 4-octet speaker).
    Unexpected,
    /// A well-known attribute tabby does not know.
    UnrecognizedWellKnown,
    /// A mandatory well-known attribute is missing.
    Missing,
    /// The attribute list overruns its length field.
    AttributeListOverrun,
    /// The next hop field of MP_REACH_NLRI has an impossible length.
    NextHopLength(usize),
    /// The NLRI of an MP attribute do not parse.
    Nlri,
    /// An MP attribute for a family the session did not negotiate or tabby does not know.
    UnknownFamily(u16, u8),
}

/// One malformation found in an UPDATE and the action taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateError {
    /// Attribute type code (0 when not about one attribute).
    pub attribute: u8,
    /// What was wrong.
    pub kind: UpdateErrorKind,
    /// What was done.
    pub action: ErrorAction,
}

/// ```text
/// +-----------------------------------------------------+
/// |   Withdrawn Routes Length (2 octets)                |
/// +-----------------------------------------------------+
/// |   Withdrawn Routes (variable)                       |
/// +-----------------------------------------------------+
/// |   Total Path Attribute Length (2 octets)            |
/// +-----------------------------------------------------+
/// |   Path Attributes (variable)                        |
/// +-----------------------------------------------------+
/// |   Network Layer Reachability Information (variable) |
/// +-----------------------------------------------------+
/// ```
///
/// A decoded UPDATE is already corrected by RFC 7606: when treat-as-withdraw applies, its
/// reachable NLRI have been moved to the withdrawn ones and its attributes cleared; discarded
/// attributes are gone; a disabled family's NLRI are dropped. `errors` says what happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// Withdrawn IPv4 routes of the Withdrawn Routes field.
    pub withdrawn: Vec<Nlri>,
    /// Path attributes.
    pub attrs: PathAttributes,
    /// MP_REACH_NLRI.
    pub mp_reach: Option<MpReach>,
    /// MP_UNREACH_NLRI.
    pub mp_unreach: Option<MpUnreach>,
    /// Reachable IPv4 routes of the NLRI field (next hop in `attrs.next_hop`).
    pub nlri: Vec<Nlri>,
    /// Malformations found while decoding (empty for a clean or locally built UPDATE).
    pub errors: Vec<UpdateError>,
}

fn invalid_network() -> Notification {
    Notification::new(
        n::code::UPDATE_MESSAGE,
        n::update::INVALID_NETWORK_FIELD,
        Vec::new(),
    )
}

fn malformed_list() -> Notification {
    Notification::new(
        n::code::UPDATE_MESSAGE,
        n::update::MALFORMED_ATTRIBUTE_LIST,
        Vec::new(),
    )
}

/// Parses a run of NLRI of one family (RFC 4271 §4.3, RFC 7911 §3). `None` when a length
/// exceeds the family's maximum or overruns the field.
fn parse_nlri(field: &[u8], family: Family, path_id: bool) -> Option<Vec<Nlri>> {
    let mut r = Reader::new(field);
    let mut out = Vec::with_capacity(field.len() / 4);
    while !r.is_empty() {
        let id = if path_id { Some(r.u32()?) } else { None };
        let len = r.u8()?;
        if len > family.max_len() {
            return None;
        }
        let bytes = r.take(usize::from(len).div_ceil(8))?;
        let addr = match family {
            Family::Ipv4Unicast => {
                let mut o = [0u8; 4];
                o[..bytes.len()].copy_from_slice(bytes);
                IpAddr::V4(Ipv4Addr::from(o))
            }
            Family::Ipv6Unicast => {
                let mut o = [0u8; 16];
                o[..bytes.len()].copy_from_slice(bytes);
                IpAddr::V6(Ipv6Addr::from(o))
            }
        };
        let prefix = Prefix::new(addr, len).ok()?;
        out.push(Nlri {
            prefix,
            path_id: id,
        });
    }
    Some(out)
}

fn encode_nlri(nlri: &Nlri, path_id: bool, out: &mut BytesMut) {
    if path_id {
        out.put_u32(nlri.path_id.unwrap_or(0));
    }
    nlri.prefix.encode_nlri(out);
}

/// Splits `nlri` into runs whose encoding fits in `room` octets (at least one entry each).
fn fitting(nlri: &[Nlri], path_id: bool, room: usize) -> impl Iterator<Item = &[Nlri]> {
    let mut rest = nlri;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut used = 0;
        let mut end = 0;
        while end < rest.len() && (end == 0 || used + nlri_len(&rest[end], path_id) <= room) {
            used += nlri_len(&rest[end], path_id);
            end += 1;
        }
        let (head, tail) = rest.split_at(end);
        rest = tail;
        Some(head)
    })
}

fn nlri_len(nlri: &Nlri, path_id: bool) -> usize {
    1 + usize::from(nlri.prefix.len()).div_ceil(8) + if path_id { 4 } else { 0 }
}

/// Outcome of reading an MP attribute.
enum Mp<T> {
    Ok(T),
    /// Not for a family we use; ignored.
    Skip(UpdateError),
    /// The family must be disabled.
    Disable(Family, UpdateErrorKind),
}

fn family_of(afi: u16, safi: u8) -> Result<Family, UpdateError> {
    Family::from_afi_safi(afi, safi).ok_or(UpdateError {
        attribute: attr::ty::MP_REACH_NLRI,
        kind: UpdateErrorKind::UnknownFamily(afi, safi),
        action: ErrorAction::AttributeDiscard,
    })
}

fn parse_mp_reach(value: &[u8], ctx: &Context) -> Result<Mp<MpReach>, Notification> {
    let mut r = Reader::new(value);
    // RFC 7606 §7.11: too short to even name its family: session reset.
    let (Some(afi), Some(safi), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
        return Err(malformed_list());
    };
    let family = match family_of(afi, safi) {
        Ok(f) => f,
        Err(e) => return Ok(Mp::Skip(e)),
    };
    let Some(nh) = r.take(usize::from(nh_len)) else {
        return Ok(Mp::Disable(
            family,
            UpdateErrorKind::NextHopLength(usize::from(nh_len)),
        ));
    };
    let v6 = |o: &[u8]| <[u8; 16]>::try_from(o).ok().map(Ipv6Addr::from);
    let next_hop = match (family, nh.len()) {
        (Family::Ipv4Unicast, 4) => <[u8; 4]>::try_from(nh).ok().map(|o| NextHop::V4(o.into())),
        (Family::Ipv4Unicast, 16 | 32) if !ctx.extended_next_hop => None,
        (_, 16) => v6(nh).map(|global| match global.to_ipv4_mapped() {
            Some(v4) if family == Family::Ipv6Unicast => NextHop::V4(v4),
            _ => NextHop::V6 {
                global,
                link_local: None,
            },
        }),
        (_, 32) => match (v6(&nh[..16]), v6(&nh[16..])) {
            (Some(global), Some(ll)) => Some(NextHop::V6 {
                global,
                link_local: Some(ll),
            }),
            _ => None,
        },
        _ => None,
    };
    let Some(next_hop) = next_hop else {
        return Ok(Mp::Disable(
            family,
            UpdateErrorKind::NextHopLength(nh.len()),
        ));
    };
    // Reserved octet (RFC 4760 §3: ignored on receipt).
    if r.u8().is_none() {
        return Ok(Mp::Disable(family, UpdateErrorKind::Malformed));
    }
    match parse_nlri(r.rest(), family, ctx.receives_path_id(family)) {
        Some(nlri) => Ok(Mp::Ok(MpReach {
            family,
            next_hop,
            nlri,
        })),
        // RFC 7606 §5.3: NLRI that cannot be parsed inside an MP attribute.
        None => Ok(Mp::Disable(family, UpdateErrorKind::Nlri)),
    }
}

fn parse_mp_unreach(value: &[u8], ctx: &Context) -> Result<Mp<MpUnreach>, Notification> {
    let mut r = Reader::new(value);
    let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
        return Err(malformed_list());
    };
    let family = match family_of(afi, safi) {
        Ok(f) => f,
        Err(mut e) => {
            e.attribute = attr::ty::MP_UNREACH_NLRI;
            return Ok(Mp::Skip(e));
        }
    };
    match parse_nlri(r.rest(), family, ctx.receives_path_id(family)) {
        Some(withdrawn) => Ok(Mp::Ok(MpUnreach { family, withdrawn })),
        None => Ok(Mp::Disable(family, UpdateErrorKind::Nlri)),
    }
}

impl Update {
    /// The End-of-RIB marker of a family (RFC 4724 §2).
    pub fn end_of_rib(family: Family) -> Update {
        match family {
            Family::Ipv4Unicast => Update::default(),
            Family::Ipv6Unicast => Update {
                mp_unreach: Some(MpUnreach {
                    family,
                    withdrawn: Vec::new(),
                }),
                ..Update::default()
            },
        }
    }

    /// The family whose End-of-RIB this UPDATE is, if it is one.
    pub fn is_end_of_rib(&self) -> Option<Family> {
        let no_attrs = self.attrs == PathAttributes::default() && self.mp_reach.is_none();
        if !no_attrs || !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match &self.mp_unreach {
            None if self.errors.is_empty() => Some(Family::Ipv4Unicast),
            Some(u) if u.withdrawn.is_empty() => Some(u.family),
            _ => None,
        }
    }

    /// Every reachable NLRI with its family and next hop.
    pub fn announced(&self) -> impl Iterator<Item = (Family, Option<NextHop>, &Nlri)> {
        let legacy_nh = self.attrs.next_hop.map(NextHop::V4);
        let legacy = self
            .nlri
            .iter()
            .map(move |n| (Family::Ipv4Unicast, legacy_nh, n));
        let mp = self
            .mp_reach
            .iter()
            .flat_map(|r| r.nlri.iter().map(move |n| (r.family, Some(r.next_hop), n)));
        legacy.chain(mp)
    }

    /// Every withdrawn NLRI with its family.
    pub fn withdrawals(&self) -> impl Iterator<Item = (Family, &Nlri)> {
        let legacy = self.withdrawn.iter().map(|n| (n.prefix.family(), n));
        let mp = self
            .mp_unreach
            .iter()
            .flat_map(|u| u.withdrawn.iter().map(move |n| (u.family, n)));
        legacy.chain(mp)
    }

    /// The families this UPDATE asks to disable (RFC 7606 AFI/SAFI disable).
    pub fn disabled_families(&self) -> impl Iterator<Item = Family> + '_ {
        self.errors.iter().filter_map(|e| match e.action {
            ErrorAction::AfiSafiDisable(f) => Some(f),
            _ => None,
        })
    }

    /// True when RFC 7606 treat-as-withdraw was applied while decoding.
    pub fn treated_as_withdraw(&self) -> bool {
        self.errors
            .iter()
            .any(|e| e.action == ErrorAction::TreatAsWithdraw)
    }

    /// Decodes the body (after the header). `Err` carries the NOTIFICATION of a session reset;
    /// every other malformation is corrected in the result and listed in `errors`.
    pub fn decode(body: &[u8], ctx: &Context) -> Result<Update, Notification> {
        let mut r = Reader::new(body);
        // RFC 7606 §4: the lengths must fit the message, or the NLRI cannot be located at all.
        let withdrawn_len = usize::from(r.u16().ok_or_else(malformed_list)?);
        let withdrawn_field = r.take(withdrawn_len).ok_or_else(malformed_list)?;
        let attrs_len = usize::from(r.u16().ok_or_else(malformed_list)?);
        let attrs_field = r.take(attrs_len).ok_or_else(malformed_list)?;
        let nlri_field = r.rest();

        let v4_ids = ctx.receives_path_id(Family::Ipv4Unicast);
        // RFC 7606 §5.3: an unparseable Withdrawn Routes or NLRI field resets the session.
        let withdrawn =
            parse_nlri(withdrawn_field, Family::Ipv4Unicast, v4_ids).ok_or_else(invalid_network)?;
        let nlri =
            parse_nlri(nlri_field, Family::Ipv4Unicast, v4_ids).ok_or_else(invalid_network)?;

        let mut parsed = attr::parse(attrs_field, ctx)?;
        if !ctx.four_octet_as {
            parsed.merge_as4();
        }
        let mut update = Update {
            withdrawn,
            attrs: std::mem::take(&mut parsed.attrs),
            nlri,
            errors: std::mem::take(&mut parsed.errors),
            ..Update::default()
        };
        if let Some(value) = parsed.mp_unreach {
            match parse_mp_unreach(value, ctx)? {
                Mp::Ok(u) => update.mp_unreach = Some(u),
                Mp::Skip(e) => update.errors.push(e),
                Mp::Disable(family, kind) => update.errors.push(UpdateError {
                    attribute: attr::ty::MP_UNREACH_NLRI,
                    kind,
                    action: ErrorAction::AfiSafiDisable(family),
                }),
            }
        }
        if let Some(value) = parsed.mp_reach {
            match parse_mp_reach(value, ctx)? {
                Mp::Ok(r) => update.mp_reach = Some(r),
                Mp::Skip(e) => update.errors.push(e),
                Mp::Disable(family, kind) => update.errors.push(UpdateError {
                    attribute: attr::ty::MP_REACH_NLRI,
                    kind,
                    action: ErrorAction::AfiSafiDisable(family),
                }),
            }
        }
        update.check_mandatory();
        if update.treated_as_withdraw() {
            update.withdraw_all();
        }
        Ok(update)
    }

    /// RFC 7606 §3 d: a missing well-known mandatory attribute in an UPDATE that announces
    /// routes means treat-as-withdraw. NEXT_HOP is mandatory only for the NLRI field
    /// (RFC 4760 §3 makes it optional for MP_REACH_NLRI).
    fn check_mandatory(&mut self) {
        let announces_mp = self.mp_reach.as_ref().is_some_and(|r| !r.nlri.is_empty());
        if self.nlri.is_empty() && !announces_mp {
            return;
        }
        let a = &self.attrs;
        let missing = [
            (attr::ty::ORIGIN, a.origin.is_none()),
            (attr::ty::AS_PATH, a.as_path.is_none()),
            (
                attr::ty::NEXT_HOP,
                !self.nlri.is_empty() && a.next_hop.is_none(),
            ),
        ];
        for (code, is_missing) in missing {
            // An attribute that was present but malformed is already reported.
            let reported = self.errors.iter().any(|e| e.attribute == code);
            if is_missing && !reported {
                self.errors.push(UpdateError {
                    attribute: code,
                    kind: UpdateErrorKind::Missing,
                    action: ErrorAction::TreatAsWithdraw,
                });
            }
        }
    }

    /// Moves every reachable NLRI to the withdrawn ones and clears the attributes.
    fn withdraw_all(&mut self) {
        self.withdrawn.append(&mut self.nlri);
        if let Some(reach) = self.mp_reach.take() {
            match reach.family {
                Family::Ipv4Unicast => self.withdrawn.extend(reach.nlri),
                Family::Ipv6Unicast => {
                    let unreach = self.mp_unreach.get_or_insert(MpUnreach {
                        family: Family::Ipv6Unicast,
                        withdrawn: Vec::new(),
                    });
                    if unreach.family != Family::Ipv6Unicast {
                        self.withdrawn.append(&mut unreach.withdrawn);
                        unreach.family = Family::Ipv6Unicast;
                    }
                    unreach.withdrawn.extend(reach.nlri);
                }
            }
        }
        self.attrs = PathAttributes::default();
    }

    /// Appends the body. The caller keeps it within the context's maximum length; the
    /// `encode_*_messages` functions split long lists for it.
    pub fn encode(&self, ctx: &Context, out: &mut BytesMut) {
        let v4_ids = ctx.sends_path_id(Family::Ipv4Unicast);
        let len_at = out.len();
        out.put_u16(0);
        for w in &self.withdrawn {
            encode_nlri(w, v4_ids, out);
        }
        let withdrawn_len = out.len() - len_at - 2;
        out[len_at..len_at + 2].copy_from_slice(&(withdrawn_len as u16).to_be_bytes());

        let mp_reach = self.mp_reach.as_ref().map(|r| {
            let mut v = Vec::new();
            let (afi, safi) = r.family.afi_safi();
            v.extend_from_slice(&afi.to_be_bytes());
            v.push(safi);
            r.next_hop.encode(r.family, &mut v);
            v.push(0);
            let mut nlri = BytesMut::new();
            r.nlri
                .iter()
                .for_each(|n| encode_nlri(n, ctx.sends_path_id(r.family), &mut nlri));
            v.extend_from_slice(&nlri);
            v
        });
        let mp_unreach = self.mp_unreach.as_ref().map(|u| {
            let mut v = Vec::new();
            let (afi, safi) = u.family.afi_safi();
            v.extend_from_slice(&afi.to_be_bytes());
            v.push(safi);
            let mut nlri = BytesMut::new();
            u.withdrawn
                .iter()
                .for_each(|n| encode_nlri(n, ctx.sends_path_id(u.family), &mut nlri));
            v.extend_from_slice(&nlri);
            v
        });
        let attrs_at = out.len();
        out.put_u16(0);
        self.attrs.encode(
            ctx,
            !self.nlri.is_empty(),
            mp_reach.as_deref(),
            mp_unreach.as_deref(),
            out,
        );
        let attrs_len = out.len() - attrs_at - 2;
        out[attrs_at..attrs_at + 2].copy_from_slice(&(attrs_len as u16).to_be_bytes());
        for n in &self.nlri {
            encode_nlri(n, v4_ids, out);
        }
    }

    /// Appends as many whole UPDATE messages (headers included) as it takes to announce
    /// `nlri` of `family` with `attrs` and `next_hop`, each within the context's maximum
    /// length. IPv4 NLRI with an IPv4 next hop use the NLRI field; everything else
    /// MP_REACH_NLRI. Returns the number of messages.
    pub fn encode_announce(
        ctx: &Context,
        family: Family,
        attrs: &PathAttributes,
        next_hop: NextHop,
        nlri: &[Nlri],
        out: &mut BytesMut,
    ) -> usize {
        let legacy = family == Family::Ipv4Unicast && matches!(next_hop, NextHop::V4(_));
        let mut attrs = attrs.clone();
        if legacy {
            if let NextHop::V4(nh) = next_hop {
                attrs.next_hop = Some(nh);
            }
        }
        // Measure the fixed part once, with an empty NLRI list, to know the room left.
        let template = if legacy {
            Update {
                attrs: attrs.clone(),
                nlri: Vec::new(),
                ..Update::default()
            }
        } else {
            Update {
                attrs: attrs.clone(),
                mp_reach: Some(MpReach {
                    family,
                    next_hop,
                    nlri: Vec::new(),
                }),
                ..Update::default()
            }
        };
        let mut probe = BytesMut::new();
        template.encode(ctx, &mut probe);
        // The legacy template lacks NEXT_HOP (no NLRI yet): 7 octets; an MP_REACH_NLRI may
        // need the extended length form: 1 more octet.
        let fixed = HEADER_LEN + probe.len() + 8;
        let room = ctx.max_message_len().saturating_sub(fixed).max(64);
        let mut count = 0;
        for chunk in fitting(nlri, ctx.sends_path_id(family), room) {
            let chunk = chunk.to_vec();
            let update = if legacy {
                Update {
                    attrs: attrs.clone(),
                    nlri: chunk,
                    ..Update::default()
                }
            } else {
                Update {
                    attrs: attrs.clone(),
                    mp_reach: Some(MpReach {
                        family,
                        next_hop,
                        nlri: chunk,
                    }),
                    ..Update::default()
                }
            };
            super::Message::Update(update).encode(ctx, out);
            count += 1;
        }
        count
    }

    /// Appends as many whole UPDATE messages as it takes to withdraw `nlri` of `family`.
    /// Returns the number of messages.
    pub fn encode_withdraw(
        ctx: &Context,
        family: Family,
        nlri: &[Nlri],
        out: &mut BytesMut,
    ) -> usize {
        // Header, two length fields, and for MP_UNREACH_NLRI its attribute header and AFI/SAFI.
        let room = ctx.max_message_len() - HEADER_LEN - 4 - 8;
        let mut count = 0;
        for chunk in fitting(nlri, ctx.sends_path_id(family), room) {
            let chunk = chunk.to_vec();
            let update = match family {
                Family::Ipv4Unicast => Update {
                    withdrawn: chunk,
                    ..Update::default()
                },
                Family::Ipv6Unicast => Update {
                    mp_unreach: Some(MpUnreach {
                        family,
                        withdrawn: chunk,
                    }),
                    ..Update::default()
                },
            };
            super::Message::Update(update).encode(ctx, out);
            count += 1;
        }
        count
    }
}
