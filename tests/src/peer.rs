//! What the interop tests need from any BGP peer daemon, whatever its CLI.

use std::net::IpAddr;

use anyhow::{Context, Result};

use crate::wait::Diagnose;

/// An address family (AFI/SAFI unicast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 unicast.
    V4,
    /// IPv6 unicast (MP-BGP).
    V6,
}

impl Family {
    /// The family of a prefix such as `10.1.0.0/24` or `fd01::/64`.
    pub fn of(prefix: &str) -> Family {
        if prefix.contains(':') {
            Family::V6
        } else {
            Family::V4
        }
    }
}

/// A BGP neighbor as a peer daemon is configured to see it.
#[derive(Debug, Clone)]
pub struct Neighbor {
    /// The neighbor's address (the session's remote address).
    pub address: IpAddr,
    /// The neighbor's AS, as configured on this side (a test may make it wrong on purpose).
    pub asn: u32,
    /// The local address of the session.
    pub local: IpAddr,
    /// The address families negotiated on the session.
    pub families: Vec<Family>,
    /// Only accept connections, never connect.
    pub passive: bool,
}

/// `addr/len` in canonical form (`fd01:0::/64` becomes `fd01::/64`), so prefixes printed by
/// different daemons compare equal.
pub fn canonical_prefix(prefix: &str) -> Result<String> {
    let (addr, len) = prefix
        .split_once('/')
        .with_context(|| format!("{prefix:?} is not a prefix"))?;
    let addr: IpAddr = addr
        .parse()
        .with_context(|| format!("{prefix:?} is not a prefix"))?;
    let len: u8 = len
        .parse()
        .with_context(|| format!("{prefix:?} is not a prefix"))?;
    Ok(format!("{addr}/{len}"))
}

/// A real BGP daemon (BIRD, GoBGP) run by a test, seen through its CLI.
pub trait PeerDaemon: Diagnose {
    /// A short name for messages ("BIRD", "GoBGP").
    fn kind(&self) -> &'static str;

    /// The RFC 4271 name of the session state with `neighbor` (`Established`, `Idle`, ...).
    fn session_state(&self, neighbor: IpAddr) -> Result<String>;

    /// The prefixes (canonical) this daemon has received from `neighbor` and kept.
    fn routes_from(&self, neighbor: IpAddr) -> Result<Vec<String>>;

    /// Stops originating `prefix` (the route must have been originated by this daemon).
    fn withdraw(&mut self, prefix: &str) -> Result<()>;

    /// Kills the daemon (SIGKILL: no NOTIFICATION) and starts it again with the same
    /// configuration and originated routes.
    fn kill_and_restart(&mut self) -> Result<()>;

    /// What the daemon reports about the last error of the session with `neighbor`, or
    /// what it logged about it; for "Bad Peer AS" checks.
    fn session_errors(&self, neighbor: IpAddr) -> Result<String>;

    /// Whether the session with `neighbor` is `Established`.
    fn is_established(&self, neighbor: IpAddr) -> Result<bool> {
        Ok(self.session_state(neighbor)? == "Established")
    }

    /// Whether this daemon has `prefix` from `neighbor`.
    fn has_route_from(&self, neighbor: IpAddr, prefix: &str) -> Result<bool> {
        let want = canonical_prefix(prefix)?;
        Ok(self.routes_from(neighbor)?.contains(&want))
    }
}
