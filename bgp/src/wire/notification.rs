//! NOTIFICATION (RFC 4271 §4.5), its error codes and subcodes, and the CEASE subcodes of
//! RFC 4486 / RFC 8203.

use bytes::{BufMut, BytesMut};
use std::fmt;

/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Error code    | Error subcode |   Data (variable)             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode (0 when unspecific).
    pub subcode: u8,
    /// Diagnostic data, as the error's RFC prescribes.
    pub data: Vec<u8>,
}

/// Error codes (RFC 4271 §4.5) and the subcodes tabby sends.
pub mod code {
    /// Message Header Error.
    pub const MESSAGE_HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN_MESSAGE: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE_MESSAGE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// ROUTE-REFRESH Message Error (RFC 7313).
    pub const ROUTE_REFRESH: u8 = 7;
}

/// Message Header Error subcodes (RFC 4271 §6.1).
pub mod header {
    /// Connection Not Synchronized (bad marker).
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    /// Bad Message Length.
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    /// Bad Message Type.
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// OPEN Message Error subcodes (RFC 4271 §6.2, RFC 5492).
pub mod open {
    /// Unsupported Version Number.
    pub const UNSUPPORTED_VERSION: u8 = 1;
    /// Bad Peer AS.
    pub const BAD_PEER_AS: u8 = 2;
    /// Bad BGP Identifier.
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    /// Unsupported Optional Parameter.
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    /// Unacceptable Hold Time.
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    /// Unsupported Capability (RFC 5492).
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
}

/// UPDATE Message Error subcodes (RFC 4271 §6.3).
pub mod update {
    /// Malformed Attribute List.
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    /// Unrecognized Well-known Attribute.
    pub const UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    /// Missing Well-known Attribute.
    pub const MISSING_WELL_KNOWN: u8 = 3;
    /// Attribute Flags Error.
    pub const ATTRIBUTE_FLAGS: u8 = 4;
    /// Attribute Length Error.
    pub const ATTRIBUTE_LENGTH: u8 = 5;
    /// Invalid ORIGIN Attribute.
    pub const INVALID_ORIGIN: u8 = 6;
    /// Invalid NEXT_HOP Attribute.
    pub const INVALID_NEXT_HOP: u8 = 8;
    /// Optional Attribute Error.
    pub const OPTIONAL_ATTRIBUTE: u8 = 9;
    /// Invalid Network Field.
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    /// Malformed AS_PATH.
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// FSM Error subcodes (RFC 6608).
pub mod fsm {
    /// Unspecified.
    pub const UNSPECIFIED: u8 = 0;
    /// Receive Unexpected Message in OpenSent State.
    pub const UNEXPECTED_IN_OPENSENT: u8 = 1;
    /// Receive Unexpected Message in OpenConfirm State.
    pub const UNEXPECTED_IN_OPENCONFIRM: u8 = 2;
    /// Receive Unexpected Message in Established State.
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
}

/// Cease subcodes (RFC 4486, RFC 8203).
pub mod cease {
    /// Maximum Number of Prefixes Reached.
    pub const MAX_PREFIXES: u8 = 1;
    /// Administrative Shutdown.
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    /// Peer De-configured.
    pub const PEER_DECONFIGURED: u8 = 3;
    /// Administrative Reset.
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    /// Connection Rejected.
    pub const CONNECTION_REJECTED: u8 = 5;
    /// Other Configuration Change.
    pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
    /// Connection Collision Resolution.
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
    /// Out of Resources.
    pub const OUT_OF_RESOURCES: u8 = 8;
    /// Hard Reset (RFC 8538 §3): the data is the NOTIFICATION that caused it; no graceful
    /// restart follows.
    pub const HARD_RESET: u8 = 9;
}

impl Notification {
    /// A NOTIFICATION with the given code, subcode and data.
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Notification {
        Notification {
            code,
            subcode,
            data: data.into(),
        }
    }

    /// A Hard Reset (RFC 8538 §3) wrapping `inner`: ends the session without graceful
    /// restart when the Graceful Notification bit was exchanged.
    pub fn hard_reset(inner: &Notification) -> Notification {
        let mut data = Vec::with_capacity(2 + inner.data.len());
        data.push(inner.code);
        data.push(inner.subcode);
        data.extend_from_slice(&inner.data);
        Notification::new(code::CEASE, cease::HARD_RESET, data)
    }

    /// True for a Hard Reset (RFC 8538 §3).
    pub fn is_hard_reset(&self) -> bool {
        self.code == code::CEASE && self.subcode == cease::HARD_RESET
    }

    /// A CEASE with `subcode` and no data.
    pub fn cease(subcode: u8) -> Notification {
        Notification::new(code::CEASE, subcode, Vec::new())
    }

    /// An administrative shutdown or reset carrying an RFC 8203 shutdown communication
    /// (at most 255 octets of UTF-8; a longer text is cut at a character boundary).
    pub fn cease_with_message(subcode: u8, text: &str) -> Notification {
        let mut end = text.len().min(255);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut data = Vec::with_capacity(end + 1);
        data.push(end as u8);
        data.extend_from_slice(&text.as_bytes()[..end]);
        Notification::new(code::CEASE, subcode, data)
    }

    /// Decodes the body (everything after the 19-octet header). Any body of at least two
    /// octets is a valid NOTIFICATION.
    pub fn decode(body: &[u8]) -> Result<Notification, Notification> {
        match body {
            [code, subcode, data @ ..] => Ok(Notification::new(*code, *subcode, data.to_vec())),
            _ => Err(Notification::new(
                code::MESSAGE_HEADER,
                header::BAD_MESSAGE_LENGTH,
                ((body.len() + super::HEADER_LEN) as u16).to_be_bytes(),
            )),
        }
    }

    /// Appends the body.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.code);
        out.put_u8(self.subcode);
        out.extend_from_slice(&self.data);
    }

    /// The RFC 8203 shutdown communication, when the notification carries one.
    pub fn shutdown_message(&self) -> Option<String> {
        let is_shutdown = self.code == code::CEASE
            && matches!(
                self.subcode,
                cease::ADMINISTRATIVE_SHUTDOWN | cease::ADMINISTRATIVE_RESET
            );
        let (len, text) = self.data.split_first()?;
        if !is_shutdown || usize::from(*len) != text.len() || text.is_empty() {
            return None;
        }
        std::str::from_utf8(text).ok().map(str::to_string)
    }

    /// The human name of the code and subcode, for logs and status.
    pub fn describe(&self) -> String {
        let sub = |names: &[&'static str]| -> Option<&'static str> {
            names
                .get(usize::from(self.subcode))
                .copied()
                .filter(|s| !s.is_empty())
        };
        let (name, subname) = match self.code {
            code::MESSAGE_HEADER => (
                "Message Header Error",
                sub(&[
                    "",
                    "Connection Not Synchronized",
                    "Bad Message Length",
                    "Bad Message Type",
                ]),
            ),
            code::OPEN_MESSAGE => (
                "OPEN Message Error",
                sub(&[
                    "",
                    "Unsupported Version Number",
                    "Bad Peer AS",
                    "Bad BGP Identifier",
                    "Unsupported Optional Parameter",
                    "",
                    "Unacceptable Hold Time",
                    "Unsupported Capability",
                    "",
                    "",
                    "",
                    "Role Mismatch",
                ]),
            ),
            code::UPDATE_MESSAGE => (
                "UPDATE Message Error",
                sub(&[
                    "",
                    "Malformed Attribute List",
                    "Unrecognized Well-known Attribute",
                    "Missing Well-known Attribute",
                    "Attribute Flags Error",
                    "Attribute Length Error",
                    "Invalid ORIGIN Attribute",
                    "",
                    "Invalid NEXT_HOP Attribute",
                    "Optional Attribute Error",
                    "Invalid Network Field",
                    "Malformed AS_PATH",
                ]),
            ),
            code::HOLD_TIMER_EXPIRED => ("Hold Timer Expired", None),
            code::FSM => (
                "Finite State Machine Error",
                sub(&[
                    "",
                    "Unexpected Message in OpenSent",
                    "Unexpected Message in OpenConfirm",
                    "Unexpected Message in Established",
                ]),
            ),
            code::CEASE => (
                "Cease",
                sub(&[
                    "",
                    "Maximum Number of Prefixes Reached",
                    "Administrative Shutdown",
                    "Peer De-configured",
                    "Administrative Reset",
                    "Connection Rejected",
                    "Other Configuration Change",
                    "Connection Collision Resolution",
                    "Out of Resources",
                    "Hard Reset",
                    "BFD Down",
                ]),
            ),
            code::ROUTE_REFRESH => (
                "ROUTE-REFRESH Message Error",
                sub(&["", "Invalid Message Length"]),
            ),
            _ => ("Unknown error", None),
        };
        let mut s = match subname {
            Some(subname) => format!("{name}: {subname}"),
            None if self.subcode == 0 => name.to_string(),
            None => format!("{name} (subcode {})", self.subcode),
        };
        if let Some(msg) = self.shutdown_message() {
            s.push_str(&format!(" \"{msg}\""));
        }
        if let (true, [code, subcode, data @ ..]) = (self.is_hard_reset(), &self.data[..]) {
            // RFC 8538 §3: the data is the NOTIFICATION the Hard Reset stands for.
            let inner = Notification::new(*code, *subcode, data.to_vec());
            // A Hard Reset inside a Hard Reset is not described further: a peer's data must
            // not make this recurse thousands of levels deep.
            let inner = if inner.is_hard_reset() {
                Notification::new(*code, *subcode, Vec::new())
            } else {
                inner
            };
            s.push_str(&format!(" ({})", inner.describe()));
        }
        s
    }
}

impl fmt::Debug for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Notification({}/{} {}",
            self.code,
            self.subcode,
            self.describe()
        )?;
        if !self.data.is_empty() {
            write!(f, ", data {:02x?}", self.data)?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}
