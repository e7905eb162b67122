//! IP networks (CIDRs) as policy rules name them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `4` or `6`.
    pub fn number(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }
}

/// A network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

/// Text that is not `ADDR` or `ADDR/LEN`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a CIDR (expected ADDR or ADDR/LEN)")]
pub struct CidrError {
    /// The text given.
    pub text: String,
}

impl Cidr {
    /// The network of `addr` with `len` prefix bits; host bits are cleared, as Calico
    /// normalises `10.0.0.1/8` to `10.0.0.0/8`. `None` when `len` is too long.
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        let addr = match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => return None,
        };
        Some(Cidr { addr, len })
    }

    /// A single address (/32 or /128).
    pub fn host(addr: IpAddr) -> Cidr {
        let len = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        Cidr { addr, len }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The family.
    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// Whether this is one address.
    pub fn is_host(&self) -> bool {
        self.len == self.max_len()
    }

    fn max_len(&self) -> u8 {
        match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    /// Whether `other` lies inside this network.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.len >= self.len
            && self.family() == other.family()
            && Cidr::new(other.addr, self.len).is_some_and(|n| n.addr == self.addr)
    }

    /// Whether `addr` lies inside this network.
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        self.contains(&Cidr::host(addr))
    }

    /// The networks sorted with every network inside another one removed, so that no two
    /// overlap: nftables refuses overlapping elements in an interval set.
    pub fn disjoint(mut nets: Vec<Cidr>) -> Vec<Cidr> {
        nets.sort_by_key(|n| (n.family(), n.len));
        let mut out: Vec<Cidr> = Vec::new();
        for n in nets {
            if !out.iter().any(|o| o.contains(&n)) {
                out.push(n);
            }
        }
        out.sort();
        out
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError { text: s.to_owned() };
        let t = s.trim();
        match t.split_once('/') {
            None => t.parse().map(Cidr::host).map_err(|_| bad()),
            Some((a, l)) => {
                let addr: IpAddr = a.parse().map_err(|_| bad())?;
                let len: u8 = l.parse().map_err(|_| bad())?;
                Cidr::new(addr, len).ok_or_else(bad)
            }
        }
    }
}

impl fmt::Display for Cidr {
    /// `ADDR/LEN`, or the bare address for a host (as `nft` prints interval elements).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_cleared() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn disjoint_drops_networks_inside_others() {
        let nets = ["10.0.0.0/8", "10.1.0.0/16", "192.168.0.1", "fd00::/8"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let out: Vec<String> = Cidr::disjoint(nets).iter().map(|c| c.to_string()).collect();
        assert_eq!(out, ["10.0.0.0/8", "192.168.0.1", "fd00::/8"]);
    }
}
