//! OPEN (RFC 4271 §4.2) and capabilities advertisement (RFC 5492).

use super::notification::{self as n, Notification};
use super::Reader;
use crate::prefix::Family;
use bytes::{BufMut, BytesMut};
use std::net::Ipv4Addr;

/// The AS number a 2-octet field carries for an AS that does not fit (RFC 6793 §9).
pub const AS_TRANS: u16 = 23456;

/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+
/// |    Version    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     My Autonomous System      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           Hold Time           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         BGP Identifier                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Opt Parm Len  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |             Optional Parameters (variable)                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// BGP version; 4 is the only one spoken.
    pub version: u8,
    /// The 2-octet AS field (AS_TRANS when the real AS needs 4 octets).
    pub my_as: u16,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP Identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities, in the order received.
    pub capabilities: Vec<Capability>,
}

/// Graceful restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// Restart State bit: the sender has restarted.
    pub restarting: bool,
    /// Graceful Notification bit (RFC 8538).
    pub notification: bool,
    /// Restart Time in seconds (12 bits).
    pub restart_time: u16,
    /// Per AFI/SAFI: (afi, safi, forwarding state preserved).
    pub families: Vec<(u16, u8, bool)>,
}

/// Direction of an ADD-PATH entry (RFC 7911 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddPathMode {
    /// Able to receive multiple paths.
    Receive,
    /// Able to send multiple paths.
    Send,
    /// Both.
    Both,
}

/// One ADD-PATH capability entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddPath {
    /// AFI.
    pub afi: u16,
    /// SAFI.
    pub safi: u8,
    /// Send/Receive.
    pub mode: AddPathMode,
}

/// One extended next hop entry (RFC 8950 §3): NLRI of `nlri_afi`/`nlri_safi` may carry a next
/// hop of `nexthop_afi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedNextHop {
    /// NLRI AFI.
    pub nlri_afi: u16,
    /// NLRI SAFI (two octets on the wire).
    pub nlri_safi: u16,
    /// Next hop AFI.
    pub nexthop_afi: u16,
}

/// Capability codes (IANA).
pub mod cap {
    /// Multiprotocol Extensions (RFC 4760).
    pub const MULTIPROTOCOL: u8 = 1;
    /// Route Refresh (RFC 2918).
    pub const ROUTE_REFRESH: u8 = 2;
    /// Extended Next Hop Encoding (RFC 8950).
    pub const EXTENDED_NEXT_HOP: u8 = 5;
    /// Extended Message (RFC 8654).
    pub const EXTENDED_MESSAGE: u8 = 6;
    /// Graceful Restart (RFC 4724).
    pub const GRACEFUL_RESTART: u8 = 64;
    /// 4-octet AS number (RFC 6793).
    pub const FOUR_OCTET_AS: u8 = 65;
    /// ADD-PATH (RFC 7911).
    pub const ADD_PATH: u8 = 69;
    /// Enhanced Route Refresh (RFC 7313).
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
}

/// A capability (RFC 5492 §4). Unknown ones are kept as they came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions for one AFI/SAFI.
    Multiprotocol {
        /// AFI.
        afi: u16,
        /// SAFI.
        safi: u8,
    },
    /// Route refresh.
    RouteRefresh,
    /// Enhanced route refresh.
    EnhancedRouteRefresh,
    /// Extended messages up to 65535 octets.
    ExtendedMessage,
    /// 4-octet AS support, with the speaker's AS.
    FourOctetAs(u32),
    /// Graceful restart.
    GracefulRestart(GracefulRestart),
    /// ADD-PATH.
    AddPath(Vec<AddPath>),
    /// Extended next hop encoding.
    ExtendedNextHop(Vec<ExtendedNextHop>),
    /// A capability tabby does not interpret.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value.
        value: Vec<u8>,
    },
}

impl Capability {
    /// Multiprotocol capability for a family.
    pub fn multiprotocol(family: Family) -> Capability {
        let (afi, safi) = family.afi_safi();
        Capability::Multiprotocol { afi, safi }
    }

    fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol { .. } => cap::MULTIPROTOCOL,
            Capability::RouteRefresh => cap::ROUTE_REFRESH,
            Capability::EnhancedRouteRefresh => cap::ENHANCED_ROUTE_REFRESH,
            Capability::ExtendedMessage => cap::EXTENDED_MESSAGE,
            Capability::FourOctetAs(_) => cap::FOUR_OCTET_AS,
            Capability::GracefulRestart(_) => cap::GRACEFUL_RESTART,
            Capability::AddPath(_) => cap::ADD_PATH,
            Capability::ExtendedNextHop(_) => cap::EXTENDED_NEXT_HOP,
            Capability::Unknown { code, .. } => *code,
        }
    }

    fn encode_value(&self, out: &mut Vec<u8>) {
        match self {
            Capability::Multiprotocol { afi, safi } => {
                out.extend_from_slice(&afi.to_be_bytes());
                out.push(0);
                out.push(*safi);
            }
            Capability::RouteRefresh
            | Capability::EnhancedRouteRefresh
            | Capability::ExtendedMessage => {}
            Capability::FourOctetAs(asn) => out.extend_from_slice(&asn.to_be_bytes()),
            Capability::GracefulRestart(gr) => {
                let mut word = gr.restart_time & 0x0fff;
                if gr.restarting {
                    word |= 0x8000;
                }
                if gr.notification {
                    word |= 0x4000;
                }
                out.extend_from_slice(&word.to_be_bytes());
                for (afi, safi, fwd) in &gr.families {
                    out.extend_from_slice(&afi.to_be_bytes());
                    out.push(*safi);
                    out.push(if *fwd { 0x80 } else { 0 });
                }
            }
            Capability::AddPath(entries) => {
                for e in entries {
                    out.extend_from_slice(&e.afi.to_be_bytes());
                    out.push(e.safi);
                    out.push(match e.mode {
                        AddPathMode::Receive => 1,
                        AddPathMode::Send => 2,
                        AddPathMode::Both => 3,
                    });
                }
            }
            Capability::ExtendedNextHop(entries) => {
                for e in entries {
                    out.extend_from_slice(&e.nlri_afi.to_be_bytes());
                    out.extend_from_slice(&e.nlri_safi.to_be_bytes());
                    out.extend_from_slice(&e.nexthop_afi.to_be_bytes());
                }
            }
            Capability::Unknown { value, .. } => out.extend_from_slice(value),
        }
    }

    fn decode(code: u8, value: &[u8]) -> Result<Capability, Notification> {
        // RFC 5492 leaves the reaction to a malformed capability open; an OPEN error without
        // subcode, carrying the capability, tells the peer exactly what we could not read.
        let bad = || {
            let mut data = vec![code, value.len() as u8];
            data.extend_from_slice(value);
            Notification::new(n::code::OPEN_MESSAGE, 0, data)
        };
        let mut r = Reader::new(value);
        let capability = match code {
            cap::MULTIPROTOCOL => {
                if value.len() != 4 {
                    return Err(bad());
                }
                let afi = r.u16().ok_or_else(bad)?;
                let _reserved = r.u8();
                let safi = r.u8().ok_or_else(bad)?;
                Capability::Multiprotocol { afi, safi }
            }
            cap::ROUTE_REFRESH | cap::ENHANCED_ROUTE_REFRESH | cap::EXTENDED_MESSAGE => {
                if !value.is_empty() {
                    return Err(bad());
                }
                match code {
                    cap::ROUTE_REFRESH => Capability::RouteRefresh,
                    cap::ENHANCED_ROUTE_REFRESH => Capability::EnhancedRouteRefresh,
                    _ => Capability::ExtendedMessage,
                }
            }
            cap::FOUR_OCTET_AS => {
                if value.len() != 4 {
                    return Err(bad());
                }
                Capability::FourOctetAs(r.u32().ok_or_else(bad)?)
            }
            cap::GRACEFUL_RESTART => {
                if value.len() < 2 || !(value.len() - 2).is_multiple_of(4) {
                    return Err(bad());
                }
                let word = r.u16().ok_or_else(bad)?;
                let mut families = Vec::new();
                while !r.is_empty() {
                    let afi = r.u16().ok_or_else(bad)?;
                    let safi = r.u8().ok_or_else(bad)?;
                    let flags = r.u8().ok_or_else(bad)?;
                    families.push((afi, safi, flags & 0x80 != 0));
                }
                Capability::GracefulRestart(GracefulRestart {
                    restarting: word & 0x8000 != 0,
                    notification: word & 0x4000 != 0,
                    restart_time: word & 0x0fff,
                    families,
                })
            }
            cap::ADD_PATH => {
                if value.is_empty() || !value.len().is_multiple_of(4) {
                    return Err(bad());
                }
                let mut entries = Vec::new();
                while !r.is_empty() {
                    let afi = r.u16().ok_or_else(bad)?;
                    let safi = r.u8().ok_or_else(bad)?;
                    let mode = match r.u8().ok_or_else(bad)? {
                        1 => AddPathMode::Receive,
                        2 => AddPathMode::Send,
                        3 => AddPathMode::Both,
                        _ => return Err(bad()),
                    };
                    entries.push(AddPath { afi, safi, mode });
                }
                Capability::AddPath(entries)
            }
            cap::EXTENDED_NEXT_HOP => {
                if value.is_empty() || !value.len().is_multiple_of(6) {
                    return Err(bad());
                }
                let mut entries = Vec::new();
                while !r.is_empty() {
                    entries.push(ExtendedNextHop {
                        nlri_afi: r.u16().ok_or_else(bad)?,
                        nlri_safi: r.u16().ok_or_else(bad)?,
                        nexthop_afi: r.u16().ok_or_else(bad)?,
                    });
                }
                Capability::ExtendedNextHop(entries)
            }
            _ => Capability::Unknown {
                code,
                value: value.to_vec(),
            },
        };
        Ok(capability)
    }
}

/// Optional parameter type of capabilities (RFC 5492).
const PARAM_CAPABILITIES: u8 = 2;
/// Marker of the extended optional parameters length (RFC 9072).
const PARAM_EXTENDED_LENGTH: u8 = 255;

impl Open {
    /// The speaker's AS: the 4-octet AS capability when present, else the 2-octet field.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// Decodes the body (everything after the header).
    pub fn decode(body: &[u8]) -> Result<Open, Notification> {
        let short = || {
            Notification::new(
                n::code::MESSAGE_HEADER,
                n::header::BAD_MESSAGE_LENGTH,
                ((body.len() + super::HEADER_LEN) as u16).to_be_bytes(),
            )
        };
        let mut r = Reader::new(body);
        let version = r.u8().ok_or_else(short)?;
        if version != 4 {
            // RFC 4271 §6.2: the data is the largest locally supported version.
            return Err(Notification::new(
                n::code::OPEN_MESSAGE,
                n::open::UNSUPPORTED_VERSION,
                4u16.to_be_bytes(),
            ));
        }
        let my_as = r.u16().ok_or_else(short)?;
        let hold_time = r.u16().ok_or_else(short)?;
        let bgp_id = Ipv4Addr::from(r.u32().ok_or_else(short)?);
        let mut params_len = usize::from(r.u8().ok_or_else(short)?);
        let mut extended = false;
        if params_len == usize::from(PARAM_EXTENDED_LENGTH)
            && r.peek_u8() == Some(PARAM_EXTENDED_LENGTH)
        {
            // RFC 9072 §2: a non-extended parameter never has type 255.
            let _ = r.u8();
            params_len = usize::from(r.u16().ok_or_else(short)?);
            extended = true;
        }
        if r.remaining() != params_len {
            return Err(Notification::new(n::code::OPEN_MESSAGE, 0, Vec::new()));
        }
        let mut capabilities = Vec::new();
        while !r.is_empty() {
            let bad_params = || Notification::new(n::code::OPEN_MESSAGE, 0, Vec::new());
            let kind = r.u8().ok_or_else(bad_params)?;
            let len = if extended {
                r.u16()
            } else {
                r.u8().map(u16::from)
            }
            .ok_or_else(bad_params)?;
            let value = r.take(usize::from(len)).ok_or_else(bad_params)?;
            if kind != PARAM_CAPABILITIES {
                return Err(Notification::new(
                    n::code::OPEN_MESSAGE,
                    n::open::UNSUPPORTED_OPTIONAL_PARAMETER,
                    Vec::new(),
                ));
            }
            let mut caps = Reader::new(value);
            while !caps.is_empty() {
                let code = caps.u8().ok_or_else(bad_params)?;
                let len = caps.u8().ok_or_else(bad_params)?;
                let value = caps.take(usize::from(len)).ok_or_else(bad_params)?;
                capabilities.push(Capability::decode(code, value)?);
            }
        }
        Ok(Open {
            version,
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        })
    }

    /// Appends the body. Capabilities go in one optional parameter while they fit in 255
    /// octets, and spill into further parameters after that.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.version);
        out.put_u16(self.my_as);
        out.put_u16(self.hold_time);
        out.put_u32(u32::from(self.bgp_id));
        let mut params: Vec<Vec<u8>> = vec![Vec::new()];
        for c in &self.capabilities {
            let mut value = Vec::new();
            c.encode_value(&mut value);
            let mut tlv = vec![c.code(), value.len().min(255) as u8];
            tlv.extend_from_slice(&value[..value.len().min(255)]);
            if params.last().is_some_and(|p| p.len() + tlv.len() > 255) {
                params.push(Vec::new());
            }
            if let Some(p) = params.last_mut() {
                p.extend_from_slice(&tlv);
            }
        }
        params.retain(|p| !p.is_empty());
        let total: usize = params.iter().map(|p| p.len() + 2).sum();
        out.put_u8(total.min(255) as u8);
        for p in params {
            out.put_u8(PARAM_CAPABILITIES);
            out.put_u8(p.len() as u8);
            out.extend_from_slice(&p);
        }
    }
}
