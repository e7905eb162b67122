//! Path attributes (RFC 4271 §4.3, §5) and how each malformation is handled (RFC 7606 §7).

use super::open::AS_TRANS;
use super::update::{ErrorAction, UpdateError, UpdateErrorKind};
use super::{Context, Reader};
use bytes::{BufMut, BytesMut};
use std::net::Ipv4Addr;

/// Attribute flag: optional.
pub(crate) const OPTIONAL: u8 = 0x80;
/// Attribute flag: transitive.
pub(crate) const TRANSITIVE: u8 = 0x40;
/// Attribute flag: partial.
pub(crate) const PARTIAL: u8 = 0x20;
/// Attribute flag: the length field has two octets.
pub(crate) const EXTENDED_LENGTH: u8 = 0x10;

/// Attribute type codes.
pub(crate) mod ty {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITY: u8 = 32;
}

/// ORIGIN (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Origin {
    /// Learned by an interior protocol.
    Igp = 0,
    /// Learned by EGP.
    Egp = 1,
    /// Learned some other way.
    Incomplete = 2,
}

/// Kind of an AS_PATH segment (RFC 4271 §4.3, RFC 5065 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum SegmentKind {
    /// AS_SET.
    Set = 1,
    /// AS_SEQUENCE.
    Sequence = 2,
    /// AS_CONFED_SEQUENCE.
    ConfedSequence = 3,
    /// AS_CONFED_SET.
    ConfedSet = 4,
}

/// One AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct AsSegment {
    /// Segment kind.
    pub kind: SegmentKind,
    /// The AS numbers, 1 to 255 of them.
    pub asns: Vec<u32>,
}

/// AS_PATH, always held with 4-octet AS numbers (RFC 6793 §4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct AsPath {
    /// Segments in order, nearest AS first.
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path of one AS_SEQUENCE.
    pub fn sequence(asns: impl IntoIterator<Item = u32>) -> AsPath {
        let asns: Vec<u32> = asns.into_iter().collect();
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment {
                kind: SegmentKind::Sequence,
                asns,
            }],
        }
    }

    /// Path length for best-path selection (RFC 4271 §9.1.2.2: a set counts as one,
    /// confederation segments do not count, RFC 5065 §5.3).
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentKind::Sequence => s.asns.len(),
                SegmentKind::Set => 1,
                SegmentKind::ConfedSequence | SegmentKind::ConfedSet => 0,
            })
            .sum()
    }

    /// The first AS of the path (the neighbouring AS), if the path starts with a sequence.
    pub fn first_as(&self) -> Option<u32> {
        match self.segments.first() {
            Some(AsSegment {
                kind: SegmentKind::Sequence,
                asns,
            }) => asns.first().copied(),
            _ => None,
        }
    }

    /// True when `asn` appears anywhere in the path (loop detection, RFC 4271 §9.1.2).
    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// The path with `asn` prepended, as a speaker does when advertising to an external peer.
    pub fn prepend(&self, asn: u32) -> AsPath {
        let mut segments = self.segments.clone();
        match segments.first_mut() {
            Some(first) if first.kind == SegmentKind::Sequence && first.asns.len() < 255 => {
                first.asns.insert(0, asn);
            }
            _ => segments.insert(
                0,
                AsSegment {
                    kind: SegmentKind::Sequence,
                    asns: vec![asn],
                },
            ),
        }
        AsPath { segments }
    }

    fn needs_four_octets(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|a| *a > u32::from(u16::MAX)))
    }

    fn encode(&self, four_octet: bool, out: &mut Vec<u8>) {
        for s in &self.segments {
            for chunk in s.asns.chunks(255) {
                out.push(s.kind as u8);
                out.push(chunk.len() as u8);
                for asn in chunk {
                    if four_octet {
                        out.extend_from_slice(&asn.to_be_bytes());
                    } else {
                        out.extend_from_slice(&two_octet(*asn).to_be_bytes());
                    }
                }
            }
        }
    }

    /// Parses segments of `width`-octet AS numbers. `None` when malformed (RFC 7606 §7.2:
    /// unknown segment type, zero-length segment, or a segment overrunning the attribute).
    fn decode(value: &[u8], width: usize) -> Option<AsPath> {
        let mut r = Reader::new(value);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let kind = match r.u8()? {
                1 => SegmentKind::Set,
                2 => SegmentKind::Sequence,
                3 => SegmentKind::ConfedSequence,
                4 => SegmentKind::ConfedSet,
                _ => return None,
            };
            let count = usize::from(r.u8()?);
            if count == 0 {
                return None;
            }
            let raw = r.take(count * width)?;
            let asns = raw
                .chunks_exact(width)
                .map(|c| match c {
                    [a, b] => u32::from(u16::from_be_bytes([*a, *b])),
                    [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
                    _ => 0,
                })
                .collect();
            segments.push(AsSegment { kind, asns });
        }
        Some(AsPath { segments })
    }

    /// Rebuilds the real path from a 2-octet AS_PATH and an AS4_PATH (RFC 6793 §4.2.3):
    /// the leading ASes of AS_PATH that AS4_PATH does not cover, then AS4_PATH.
    fn merge_as4(&self, as4: &AsPath) -> AsPath {
        let (have, want) = (self.path_len(), as4.path_len());
        if have < want {
            return self.clone();
        }
        let mut keep = have - want;
        let mut segments = Vec::new();
        for s in &self.segments {
            if keep == 0 {
                break;
            }
            match s.kind {
                SegmentKind::ConfedSequence | SegmentKind::ConfedSet => segments.push(s.clone()),
                SegmentKind::Set => {
                    segments.push(s.clone());
                    keep -= 1;
                }
                SegmentKind::Sequence => {
                    let n = keep.min(s.asns.len());
                    segments.push(AsSegment {
                        kind: s.kind,
                        asns: s.asns[..n].to_vec(),
                    });
                    keep -= n;
                }
            }
        }
        for s in &as4.segments {
            // The cut sequence and AS4_PATH's first sequence are one sequence on the wire of a
            // 4-octet speaker; keep them one here so paths compare equal.
            match segments.last_mut() {
                Some(last)
                    if last.kind == SegmentKind::Sequence
                        && s.kind == SegmentKind::Sequence
                        && last.asns.len() + s.asns.len() <= 255 =>
                {
                    last.asns.extend_from_slice(&s.asns)
                }
                _ => segments.push(s.clone()),
            }
        }
        AsPath { segments }
    }
}

fn two_octet(asn: u32) -> u16 {
    u16::try_from(asn).unwrap_or(AS_TRANS)
}

/// AGGREGATOR (RFC 4271 §5.1.7), with a 4-octet AS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Aggregator {
    /// AS of the aggregating speaker.
    pub asn: u32,
    /// BGP Identifier of the aggregating speaker.
    pub address: Ipv4Addr,
}

/// A large community (RFC 8092): global administrator and two local data parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct LargeCommunity {
    /// Global administrator (an AS number).
    pub global: u32,
    /// Local data part 1.
    pub local1: u32,
    /// Local data part 2.
    pub local2: u32,
}

/// An attribute tabby does not interpret, passed on as received (optional transitive only).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    /// Flags as the attribute is passed on: Optional, Transitive and Partial (RFC 4271 §5).
    pub flags: u8,
    /// Type code.
    pub code: u8,
    /// Value.
    pub value: Vec<u8>,
}

/// The path attributes of an UPDATE, except the MP_REACH/MP_UNREACH NLRI carriers, which
/// [`super::Update`] holds. Absent attributes are `None` or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PathAttributes {
    /// ORIGIN.
    pub origin: Option<Origin>,
    /// AS_PATH (merged with AS4_PATH on 2-octet sessions).
    pub as_path: Option<AsPath>,
    /// NEXT_HOP of IPv4 NLRI carried outside MP_REACH_NLRI.
    pub next_hop: Option<Ipv4Addr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE.
    pub atomic_aggregate: bool,
    /// AGGREGATOR (merged with AS4_AGGREGATOR on 2-octet sessions).
    pub aggregator: Option<Aggregator>,
    /// COMMUNITIES (RFC 1997).
    pub communities: Vec<u32>,
    /// ORIGINATOR_ID (RFC 4456).
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST (RFC 4456).
    pub cluster_list: Vec<Ipv4Addr>,
    /// EXTENDED COMMUNITIES (RFC 4360), 8 octets each.
    pub extended_communities: Vec<[u8; 8]>,
    /// LARGE_COMMUNITY (RFC 8092).
    pub large_communities: Vec<LargeCommunity>,
    /// Unrecognised optional transitive attributes.
    pub unknown: Vec<RawAttribute>,
}

/// Expected Optional/Transitive flags of each recognised attribute (RFC 4271 §5 and each
/// attribute's RFC).
fn expected_flags(code: u8) -> Option<u8> {
    Some(match code {
        ty::ORIGIN | ty::AS_PATH | ty::NEXT_HOP | ty::LOCAL_PREF | ty::ATOMIC_AGGREGATE => {
            TRANSITIVE
        }
        ty::MED
        | ty::ORIGINATOR_ID
        | ty::CLUSTER_LIST
        | ty::MP_REACH_NLRI
        | ty::MP_UNREACH_NLRI => OPTIONAL,
        ty::AGGREGATOR
        | ty::COMMUNITIES
        | ty::EXTENDED_COMMUNITIES
        | ty::AS4_PATH
        | ty::AS4_AGGREGATOR
        | ty::LARGE_COMMUNITY => OPTIONAL | TRANSITIVE,
        _ => return None,
    })
}

/// How a malformation of each attribute is handled (RFC 7606 §7, RFC 6793 §6).
fn malformed_action(code: u8) -> ErrorAction {
    match code {
        // RFC 7606 §7.6, §7.7; RFC 6793 §6.
        ty::ATOMIC_AGGREGATE | ty::AGGREGATOR | ty::AS4_PATH | ty::AS4_AGGREGATOR => {
            ErrorAction::AttributeDiscard
        }
        _ => ErrorAction::TreatAsWithdraw,
    }
}

/// Attributes as parsed from the wire, before AS4 merging and the mandatory checks.
#[derive(Default)]
pub(crate) struct Parsed<'a> {
    pub attrs: PathAttributes,
    pub as4_path: Option<AsPath>,
    pub as4_aggregator: Option<Aggregator>,
    pub mp_reach: Option<&'a [u8]>,
    pub mp_unreach: Option<&'a [u8]>,
    pub errors: Vec<UpdateError>,
}

impl Parsed<'_> {
    fn error(&mut self, code: u8, kind: UpdateErrorKind, action: ErrorAction) {
        self.errors.push(UpdateError {
            attribute: code,
            kind,
            action,
        });
    }
}

/// Parses the Path Attributes field. `Err` only for the errors RFC 7606 still answers with a
/// session reset (a repeated MP_REACH_NLRI or MP_UNREACH_NLRI, §3 g).
pub(crate) fn parse<'a>(field: &'a [u8], ctx: &Context) -> Result<Parsed<'a>, super::Notification> {
    let mut p = Parsed::default();
    let mut seen = [false; 256];
    let mut r = Reader::new(field);
    while !r.is_empty() {
        // RFC 7606 §4: an attribute header or value overrunning the field makes the whole
        // attribute list unusable; the NLRI are still located by the lengths and withdrawn.
        let Some((flags, code, value)) = read_attribute(&mut r) else {
            p.error(
                0,
                UpdateErrorKind::AttributeListOverrun,
                ErrorAction::TreatAsWithdraw,
            );
            break;
        };
        if seen[usize::from(code)] {
            if code == ty::MP_REACH_NLRI || code == ty::MP_UNREACH_NLRI {
                return Err(super::Notification::new(
                    super::code::UPDATE_MESSAGE,
                    super::update_error::MALFORMED_ATTRIBUTE_LIST,
                    Vec::new(),
                ));
            }
            // RFC 7606 §3 g: all but the first occurrence are discarded.
            p.error(
                code,
                UpdateErrorKind::Repeated,
                ErrorAction::AttributeDiscard,
            );
            continue;
        }
        seen[usize::from(code)] = true;
        match expected_flags(code) {
            Some(expected) if flags & (OPTIONAL | TRANSITIVE) != expected => {
                // RFC 7606 §3 c.
                let action = malformed_action(code);
                p.error(code, UpdateErrorKind::Flags(flags), action);
                continue;
            }
            Some(_) => {}
            None => {
                if flags & OPTIONAL == 0 {
                    // RFC 4271 §6.3: an unrecognised well-known attribute. RFC 7606 gives it
                    // no special treatment; it cannot be passed on, so the route is unusable.
                    p.error(
                        code,
                        UpdateErrorKind::UnrecognizedWellKnown,
                        ErrorAction::TreatAsWithdraw,
                    );
                } else if flags & TRANSITIVE != 0 {
                    // Kept as it will be passed on: the unused low bits cleared (RFC 4271
                    // §4.3) and Partial set (§5).
                    p.attrs.unknown.push(RawAttribute {
                        flags: (flags & (OPTIONAL | TRANSITIVE)) | PARTIAL,
                        code,
                        value: value.to_vec(),
                    });
                }
                // Unknown optional non-transitive attributes are quietly ignored (§5).
                continue;
            }
        }
        decode_known(&mut p, code, value, ctx);
    }
    Ok(p)
}

fn read_attribute<'a>(r: &mut Reader<'a>) -> Option<(u8, u8, &'a [u8])> {
    let flags = r.u8()?;
    let code = r.u8()?;
    let len = if flags & EXTENDED_LENGTH != 0 {
        r.u16()?
    } else {
        u16::from(r.u8()?)
    };
    let value = r.take(usize::from(len))?;
    Some((flags, code, value))
}

fn u32_list(value: &[u8]) -> impl Iterator<Item = u32> + '_ {
    value
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

fn decode_known<'a>(p: &mut Parsed<'a>, code: u8, value: &'a [u8], ctx: &Context) {
    let bad_length = |p: &mut Parsed<'a>| {
        p.error(
            code,
            UpdateErrorKind::Length(value.len()),
            malformed_action(code),
        );
    };
    match code {
        // RFC 7606 §7.1: wrong length or undefined value: treat-as-withdraw.
        ty::ORIGIN => match value {
            [0] => p.attrs.origin = Some(Origin::Igp),
            [1] => p.attrs.origin = Some(Origin::Egp),
            [2] => p.attrs.origin = Some(Origin::Incomplete),
            [v] => p.error(
                code,
                UpdateErrorKind::Value(u32::from(*v)),
                ErrorAction::TreatAsWithdraw,
            ),
            _ => bad_length(p),
        },
        // RFC 7606 §7.2: a malformed AS_PATH: treat-as-withdraw.
        ty::AS_PATH => {
            let width = if ctx.four_octet_as { 4 } else { 2 };
            match AsPath::decode(value, width) {
                Some(path) => p.attrs.as_path = Some(path),
                None => p.error(
                    code,
                    UpdateErrorKind::Malformed,
                    ErrorAction::TreatAsWithdraw,
                ),
            }
        }
        // RFC 7606 §7.3: length other than 4: treat-as-withdraw; a next hop that cannot be a
        // host address is semantically wrong and handled the same way.
        ty::NEXT_HOP => match <[u8; 4]>::try_from(value) {
            Ok(octets) => {
                let nh = Ipv4Addr::from(octets);
                if nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast() {
                    p.error(
                        code,
                        UpdateErrorKind::Malformed,
                        ErrorAction::TreatAsWithdraw,
                    );
                } else {
                    p.attrs.next_hop = Some(nh);
                }
            }
            Err(_) => bad_length(p),
        },
        // RFC 7606 §7.4.
        ty::MED => match <[u8; 4]>::try_from(value) {
            Ok(v) => p.attrs.med = Some(u32::from_be_bytes(v)),
            Err(_) => bad_length(p),
        },
        // RFC 7606 §7.5: from an external peer, discarded; else length 4 or treat-as-withdraw.
        ty::LOCAL_PREF => {
            if ctx.ebgp {
                p.error(
                    code,
                    UpdateErrorKind::FromExternalPeer,
                    ErrorAction::AttributeDiscard,
                );
            } else {
                match <[u8; 4]>::try_from(value) {
                    Ok(v) => p.attrs.local_pref = Some(u32::from_be_bytes(v)),
                    Err(_) => bad_length(p),
                }
            }
        }
        // RFC 7606 §7.6: length other than 0: attribute discard.
        ty::ATOMIC_AGGREGATE => {
            if value.is_empty() {
                p.attrs.atomic_aggregate = true;
            } else {
                bad_length(p);
            }
        }
        // RFC 7606 §7.7: length other than 6 (2-octet session) or 8: attribute discard.
        ty::AGGREGATOR => {
            let width = if ctx.four_octet_as { 4 } else { 2 };
            match decode_aggregator(value, width) {
                Some(a) => p.attrs.aggregator = Some(a),
                None => bad_length(p),
            }
        }
        // RFC 7606 §7.8: length not a non-zero multiple of 4: treat-as-withdraw.
        ty::COMMUNITIES => {
            if value.is_empty() || !value.len().is_multiple_of(4) {
                bad_length(p);
            } else {
                p.attrs.communities = u32_list(value).collect();
            }
        }
        // RFC 7606 §7.9: from an external peer, discarded; length other than 4:
        // treat-as-withdraw.
        ty::ORIGINATOR_ID => {
            if ctx.ebgp {
                p.error(
                    code,
                    UpdateErrorKind::FromExternalPeer,
                    ErrorAction::AttributeDiscard,
                );
            } else {
                match <[u8; 4]>::try_from(value) {
                    Ok(v) => p.attrs.originator_id = Some(Ipv4Addr::from(v)),
                    Err(_) => bad_length(p),
                }
            }
        }
        // RFC 7606 §7.10: likewise, with a non-zero multiple of 4.
        ty::CLUSTER_LIST => {
            if ctx.ebgp {
                p.error(
                    code,
                    UpdateErrorKind::FromExternalPeer,
                    ErrorAction::AttributeDiscard,
                );
            } else if value.is_empty() || !value.len().is_multiple_of(4) {
                bad_length(p);
            } else {
                p.attrs.cluster_list = u32_list(value).map(Ipv4Addr::from).collect();
            }
        }
        ty::MP_REACH_NLRI => p.mp_reach = Some(value),
        ty::MP_UNREACH_NLRI => p.mp_unreach = Some(value),
        // RFC 7606 §7.14: length not a non-zero multiple of 8: treat-as-withdraw.
        ty::EXTENDED_COMMUNITIES => {
            if value.is_empty() || !value.len().is_multiple_of(8) {
                bad_length(p);
            } else {
                p.attrs.extended_communities = value
                    .chunks_exact(8)
                    .filter_map(|c| <[u8; 8]>::try_from(c).ok())
                    .collect();
            }
        }
        // RFC 6793 §6: AS4_PATH from a 4-octet speaker is discarded; a malformed one too.
        ty::AS4_PATH => {
            if ctx.four_octet_as {
                p.error(
                    code,
                    UpdateErrorKind::Unexpected,
                    ErrorAction::AttributeDiscard,
                );
            } else {
                match AsPath::decode(value, 4) {
                    Some(path)
                        if path.segments.iter().all(|s| {
                            matches!(s.kind, SegmentKind::Sequence | SegmentKind::Set)
                        }) =>
                    {
                        p.as4_path = Some(path)
                    }
                    _ => p.error(
                        code,
                        UpdateErrorKind::Malformed,
                        ErrorAction::AttributeDiscard,
                    ),
                }
            }
        }
        // RFC 6793 §6, as AS4_PATH.
        ty::AS4_AGGREGATOR => {
            if ctx.four_octet_as {
                p.error(
                    code,
                    UpdateErrorKind::Unexpected,
                    ErrorAction::AttributeDiscard,
                );
            } else {
                match decode_aggregator(value, 4) {
                    Some(a) => p.as4_aggregator = Some(a),
                    None => bad_length(p),
                }
            }
        }
        // RFC 8092 §6: length not a non-zero multiple of 12: treat-as-withdraw.
        ty::LARGE_COMMUNITY => {
            if value.is_empty() || !value.len().is_multiple_of(12) {
                bad_length(p);
            } else {
                let mut words = u32_list(value);
                let mut list = Vec::with_capacity(value.len() / 12);
                while let (Some(global), Some(local1), Some(local2)) =
                    (words.next(), words.next(), words.next())
                {
                    list.push(LargeCommunity {
                        global,
                        local1,
                        local2,
                    });
                }
                p.attrs.large_communities = list;
            }
        }
        _ => {}
    }
}

fn decode_aggregator(value: &[u8], width: usize) -> Option<Aggregator> {
    if value.len() != width + 4 {
        return None;
    }
    let mut r = Reader::new(value);
    let asn = if width == 4 {
        r.u32()?
    } else {
        u32::from(r.u16()?)
    };
    Some(Aggregator {
        asn,
        address: Ipv4Addr::from(r.u32()?),
    })
}

impl Parsed<'_> {
    /// Applies RFC 6793 §4.2.3: on a 2-octet session the real AS path and aggregator are
    /// rebuilt from AS4_PATH and AS4_AGGREGATOR.
    pub(crate) fn merge_as4(&mut self) {
        let (Some(as4_path), as4_agg) = (self.as4_path.take(), self.as4_aggregator.take()) else {
            if let (Some(agg), Some(as4)) = (self.attrs.aggregator.as_mut(), self.as4_aggregator) {
                if agg.asn == u32::from(AS_TRANS) {
                    *agg = as4;
                }
            }
            return;
        };
        if let Some(agg) = self.attrs.aggregator.as_mut() {
            if agg.asn != u32::from(AS_TRANS) {
                // The aggregator is a 2-octet speaker that dropped the AS4 attributes' meaning:
                // AS4_PATH and AS4_AGGREGATOR are ignored.
                return;
            }
            if let Some(as4) = as4_agg {
                *agg = as4;
            }
        }
        if let Some(path) = self.attrs.as_path.as_ref() {
            self.attrs.as_path = Some(path.merge_as4(&as4_path));
        }
    }
}

impl PathAttributes {
    /// Appends the encoded attributes, sorted by type code, with MP_REACH/MP_UNREACH values
    /// given by the caller (already encoded) and NEXT_HOP only when `with_next_hop`.
    pub(crate) fn encode(
        &self,
        ctx: &Context,
        with_next_hop: bool,
        mp_reach: Option<&[u8]>,
        mp_unreach: Option<&[u8]>,
        out: &mut BytesMut,
    ) {
        let four = ctx.four_octet_as;
        let mut scratch = Vec::new();
        if let Some(origin) = self.origin {
            put_attr(out, TRANSITIVE, ty::ORIGIN, &[origin as u8]);
        }
        if let Some(path) = &self.as_path {
            scratch.clear();
            path.encode(four, &mut scratch);
            put_attr(out, TRANSITIVE, ty::AS_PATH, &scratch);
        }
        if let (Some(nh), true) = (self.next_hop, with_next_hop) {
            put_attr(out, TRANSITIVE, ty::NEXT_HOP, &nh.octets());
        }
        if let Some(med) = self.med {
            put_attr(out, OPTIONAL, ty::MED, &med.to_be_bytes());
        }
        if let Some(lp) = self.local_pref {
            put_attr(out, TRANSITIVE, ty::LOCAL_PREF, &lp.to_be_bytes());
        }
        if self.atomic_aggregate {
            put_attr(out, TRANSITIVE, ty::ATOMIC_AGGREGATE, &[]);
        }
        if let Some(agg) = self.aggregator {
            scratch.clear();
            if four {
                scratch.extend_from_slice(&agg.asn.to_be_bytes());
            } else {
                scratch.extend_from_slice(&two_octet(agg.asn).to_be_bytes());
            }
            scratch.extend_from_slice(&agg.address.octets());
            put_attr(out, OPTIONAL | TRANSITIVE, ty::AGGREGATOR, &scratch);
        }
        if !self.communities.is_empty() {
            scratch.clear();
            self.communities
                .iter()
                .for_each(|c| scratch.extend_from_slice(&c.to_be_bytes()));
            put_attr(out, OPTIONAL | TRANSITIVE, ty::COMMUNITIES, &scratch);
        }
        if let Some(id) = self.originator_id {
            put_attr(out, OPTIONAL, ty::ORIGINATOR_ID, &id.octets());
        }
        if !self.cluster_list.is_empty() {
            scratch.clear();
            self.cluster_list
                .iter()
                .for_each(|c| scratch.extend_from_slice(&c.octets()));
            put_attr(out, OPTIONAL, ty::CLUSTER_LIST, &scratch);
        }
        if let Some(v) = mp_reach {
            put_attr(out, OPTIONAL, ty::MP_REACH_NLRI, v);
        }
        if let Some(v) = mp_unreach {
            put_attr(out, OPTIONAL, ty::MP_UNREACH_NLRI, v);
        }
        if !self.extended_communities.is_empty() {
            scratch.clear();
            self.extended_communities
                .iter()
                .for_each(|c| scratch.extend_from_slice(c));
            put_attr(
                out,
                OPTIONAL | TRANSITIVE,
                ty::EXTENDED_COMMUNITIES,
                &scratch,
            );
        }
        if !four {
            // RFC 6793 §4.2.2: towards a 2-octet speaker, the real path travels in AS4_PATH
            // (without confederation segments) when it holds an AS that does not fit.
            if let Some(path) = self.as_path.as_ref().filter(|p| p.needs_four_octets()) {
                let plain = AsPath {
                    segments: path
                        .segments
                        .iter()
                        .filter(|s| matches!(s.kind, SegmentKind::Sequence | SegmentKind::Set))
                        .cloned()
                        .collect(),
                };
                scratch.clear();
                plain.encode(true, &mut scratch);
                put_attr(out, OPTIONAL | TRANSITIVE, ty::AS4_PATH, &scratch);
            }
            if let Some(agg) = self.aggregator.filter(|a| a.asn > u32::from(u16::MAX)) {
                scratch.clear();
                scratch.extend_from_slice(&agg.asn.to_be_bytes());
                scratch.extend_from_slice(&agg.address.octets());
                put_attr(out, OPTIONAL | TRANSITIVE, ty::AS4_AGGREGATOR, &scratch);
            }
        }
        if !self.large_communities.is_empty() {
            scratch.clear();
            for c in &self.large_communities {
                scratch.extend_from_slice(&c.global.to_be_bytes());
                scratch.extend_from_slice(&c.local1.to_be_bytes());
                scratch.extend_from_slice(&c.local2.to_be_bytes());
            }
            put_attr(out, OPTIONAL | TRANSITIVE, ty::LARGE_COMMUNITY, &scratch);
        }
        for raw in &self.unknown {
            // RFC 4271 §5: an unrecognised optional transitive attribute passed on gets the
            // Partial bit.
            put_attr(
                out,
                (raw.flags | PARTIAL) & !EXTENDED_LENGTH,
                raw.code,
                &raw.value,
            );
        }
    }
}

/// Appends one attribute, choosing the extended length form only when needed.
pub(crate) fn put_attr(out: &mut BytesMut, flags: u8, code: u8, value: &[u8]) {
    if value.len() > 255 {
        out.put_u8(flags | EXTENDED_LENGTH);
        out.put_u8(code);
        out.put_u16(value.len().min(usize::from(u16::MAX)) as u16);
    } else {
        out.put_u8(flags);
        out.put_u8(code);
        out.put_u8(value.len() as u8);
    }
    out.extend_from_slice(value);
}
