//! The BGP-4 wire format: framing, the five message types, capabilities and path attributes.
//!
//! Decoding takes the session's negotiated [`Context`] explicitly; encoding never fails.
//! A malformed message yields the NOTIFICATION the RFCs prescribe, or, for UPDATE, the
//! RFC 7606 outcome beside the parts of the message that were well formed.

mod attr;
mod notification;
mod open;
mod update;

pub use attr::{
    Aggregator, AsPath, AsSegment, LargeCommunity, Origin, PathAttributes, RawAttribute,
    SegmentKind,
};
pub use notification::Notification;
pub use notification::{cease, code, fsm, header, open as open_error, update as update_error};
pub use open::{
    cap, AddPath, AddPathMode, Capability, ExtendedNextHop, GracefulRestart, Open, AS_TRANS,
};
pub use update::{
    ErrorAction, MpReach, MpUnreach, NextHop, Nlri, Update, UpdateError, UpdateErrorKind,
};

use crate::prefix::Family;
use bytes::{BufMut, BytesMut};

/// Length of the message header.
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended message capability (RFC 4271 §4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Largest message with the extended message capability (RFC 8654).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

/// Message type codes.
pub mod kind {
    /// OPEN.
    pub const OPEN: u8 = 1;
    /// UPDATE.
    pub const UPDATE: u8 = 2;
    /// NOTIFICATION.
    pub const NOTIFICATION: u8 = 3;
    /// KEEPALIVE.
    pub const KEEPALIVE: u8 = 4;
    /// ROUTE-REFRESH.
    pub const ROUTE_REFRESH: u8 = 5;
}

/// What a session negotiated, which changes how UPDATEs are read and written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// Both sides advertised the 4-octet AS capability (RFC 6793).
    pub four_octet_as: bool,
    /// Both sides advertised extended messages (RFC 8654).
    pub extended_message: bool,
    /// Families in which we receive path identifiers (RFC 7911).
    pub add_path_receive: Vec<Family>,
    /// Families in which we send path identifiers.
    pub add_path_send: Vec<Family>,
    /// IPv4 unicast NLRI may carry an IPv6 next hop (RFC 8950).
    pub extended_next_hop: bool,
    /// The peer is in another AS: LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST from it are
    /// discarded (RFC 7606 §7.5, §7.9, §7.10).
    pub ebgp: bool,
}

impl Context {
    /// The context of a session that negotiated everything tabby can do, for tests and tools.
    pub fn modern() -> Context {
        Context {
            four_octet_as: true,
            ..Context::default()
        }
    }

    /// The largest message that may be sent or received (OPEN is always limited to 4096).
    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }

    pub(crate) fn receives_path_id(&self, family: Family) -> bool {
        self.add_path_receive.contains(&family)
    }

    pub(crate) fn sends_path_id(&self, family: Family) -> bool {
        self.add_path_send.contains(&family)
    }
}

/// ROUTE-REFRESH (RFC 2918 §3, RFC 7313 §3.2).
///
/// ```text
///  0       7      15      23      31
/// +-------+-------+-------+-------+
/// |      AFI      |Subtype| SAFI  |
/// +-------+-------+-------+-------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    /// AFI.
    pub afi: u16,
    /// Message subtype (RFC 7313): 0 request, 1 BoRR, 2 EoRR.
    pub subtype: u8,
    /// SAFI.
    pub safi: u8,
}

/// A BGP message.
// An UPDATE is moved once, from the decoder to its handler; boxing it would cost an
// allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                                                               |
/// +                           Marker                              +
/// |                    (16 octets of all ones)                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |          Length               |      Type     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// Looks at the front of a receive buffer. `Ok(None)`: not a whole message yet;
/// `Ok(Some(n))`: the first `n` octets are one message; `Err`: the header is bad and the
/// session must be reset with this NOTIFICATION (RFC 4271 §6.1).
pub fn frame(buf: &[u8], ctx: &Context) -> Result<Option<usize>, Notification> {
    if buf.len() < HEADER_LEN {
        // Reject a bad marker as soon as it is visible rather than waiting for 19 octets.
        if buf.iter().any(|b| *b != 0xff) && buf.len() <= 16 {
            return Err(Notification::new(
                code::MESSAGE_HEADER,
                header::CONNECTION_NOT_SYNCHRONIZED,
                Vec::new(),
            ));
        }
        return Ok(None);
    }
    if buf[..16].iter().any(|b| *b != 0xff) {
        return Err(Notification::new(
            code::MESSAGE_HEADER,
            header::CONNECTION_NOT_SYNCHRONIZED,
            Vec::new(),
        ));
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    let kind = buf[18];
    let bad_length = || {
        Notification::new(
            code::MESSAGE_HEADER,
            header::BAD_MESSAGE_LENGTH,
            [buf[16], buf[17]],
        )
    };
    let max = match kind {
        // RFC 8654 §3: OPEN and KEEPALIVE stay within 4096.
        kind::OPEN | kind::KEEPALIVE => MAX_MESSAGE_LEN,
        _ => ctx.max_message_len(),
    };
    let min = match kind {
        kind::OPEN => HEADER_LEN + 10,
        kind::UPDATE => HEADER_LEN + 4,
        kind::NOTIFICATION => HEADER_LEN + 2,
        kind::KEEPALIVE => HEADER_LEN,
        kind::ROUTE_REFRESH => HEADER_LEN + 4,
        _ => {
            return Err(Notification::new(
                code::MESSAGE_HEADER,
                header::BAD_MESSAGE_TYPE,
                [kind],
            ))
        }
    };
    if len < min || len > max || (kind == kind::KEEPALIVE && len != HEADER_LEN) {
        return Err(bad_length());
    }
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(len))
}

impl Message {
    /// Decodes one whole message (header included, as [`frame`] delimited it).
    pub fn decode(msg: &[u8], ctx: &Context) -> Result<Message, Notification> {
        let Some(len) = frame(msg, ctx)? else {
            return Err(Notification::new(
                code::MESSAGE_HEADER,
                header::BAD_MESSAGE_LENGTH,
                (msg.len() as u16).to_be_bytes(),
            ));
        };
        let body = &msg[HEADER_LEN..len];
        match msg[18] {
            kind::OPEN => Open::decode(body).map(Message::Open),
            kind::UPDATE => Update::decode(body, ctx).map(Message::Update),
            kind::NOTIFICATION => Notification::decode(body).map(Message::Notification),
            kind::KEEPALIVE => Ok(Message::Keepalive),
            _ => {
                if body.len() != 4 {
                    // RFC 7313 §5: a ROUTE-REFRESH of the wrong length.
                    let mut data = Vec::from(&msg[16..18]);
                    data.extend_from_slice(body);
                    return Err(Notification::new(code::ROUTE_REFRESH, 1, data));
                }
                Ok(Message::RouteRefresh(RouteRefresh {
                    afi: u16::from_be_bytes([body[0], body[1]]),
                    subtype: body[2],
                    safi: body[3],
                }))
            }
        }
    }

    /// The message type code.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Open(_) => kind::OPEN,
            Message::Update(_) => kind::UPDATE,
            Message::Notification(_) => kind::NOTIFICATION,
            Message::Keepalive => kind::KEEPALIVE,
            Message::RouteRefresh(_) => kind::ROUTE_REFRESH,
        }
    }

    /// Appends the whole message, header included. An UPDATE must fit the context's maximum
    /// length; [`Update::encode_split`] builds UPDATEs that do.
    pub fn encode(&self, ctx: &Context, out: &mut BytesMut) {
        let start = out.len();
        out.put_slice(&[0xff; 16]);
        out.put_u16(0);
        out.put_u8(self.kind());
        match self {
            Message::Open(open) => open.encode(out),
            Message::Update(update) => update.encode(ctx, out),
            Message::Notification(n) => n.encode(out),
            Message::Keepalive => {}
            Message::RouteRefresh(rr) => {
                out.put_u16(rr.afi);
                out.put_u8(rr.subtype);
                out.put_u8(rr.safi);
            }
        }
        let len = (out.len() - start).min(usize::from(u16::MAX)) as u16;
        out[start + 16..start + 18].copy_from_slice(&len.to_be_bytes());
    }

    /// The whole message as a vector, for tests and tools.
    pub fn to_bytes(&self, ctx: &Context) -> Vec<u8> {
        let mut out = BytesMut::new();
        self.encode(ctx, &mut out);
        out.to_vec()
    }
}

/// A bounds-checked cursor over received octets: every read returns `None` past the end
/// instead of panicking.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn peek_u8(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}
