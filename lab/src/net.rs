//! IP networks as the lab needs them: parse, contain, and count hosts and blocks in them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A network: an address and a prefix length, stored with the host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Net {
    addr: IpAddr,
    len: u8,
}

fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn width(v6: bool) -> u8 {
    if v6 {
        128
    } else {
        32
    }
}

fn from_bits(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        // The value came from a v4 network, so it fits; the fallback is unreachable.
        IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
    }
}

/// The mask of the host part of a `len`-long prefix in a `width`-bit address.
fn host_mask(width: u8, len: u8) -> u128 {
    let host = u32::from(width.saturating_sub(len));
    if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    }
}

impl Net {
    /// The network of `addr`/`len` (host bits cleared); `None` when `len` is too long.
    pub fn new(addr: IpAddr, len: u8) -> Option<Net> {
        let w = width(addr.is_ipv6());
        if len > w {
            return None;
        }
        let n = bits(addr) & !host_mask(w, len);
        Some(Net {
            addr: from_bits(addr.is_ipv6(), n),
            len,
        })
    }

    /// An IPv4 network (a length over 32 is taken as 32).
    pub fn v4(addr: Ipv4Addr, len: u8) -> Net {
        let len = len.min(32);
        let n = u32::from(addr) & !(u32::try_from(host_mask(32, len)).unwrap_or(u32::MAX));
        Net {
            addr: IpAddr::V4(Ipv4Addr::from(n)),
            len,
        }
    }

    /// An IPv6 network (a length over 128 is taken as 128).
    pub fn v6(addr: Ipv6Addr, len: u8) -> Net {
        let len = len.min(128);
        Net {
            addr: IpAddr::V6(Ipv6Addr::from(u128::from(addr) & !host_mask(128, len))),
            len,
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this is an IPv6 network.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.is_ipv6()
            && bits(ip) & !host_mask(width(self.is_ipv6()), self.len) == bits(self.addr)
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Net) -> bool {
        self.is_ipv6() == other.is_ipv6()
            && (self.contains(other.addr) || other.contains(self.addr))
    }

    /// The `n`th address of the network (0 is the network address itself); `None` past
    /// its end.
    pub fn host(&self, n: u128) -> Option<IpAddr> {
        (n <= host_mask(width(self.is_ipv6()), self.len))
            .then(|| from_bits(self.is_ipv6(), bits(self.addr) | n))
    }

    /// The number of the last address of the network (the IPv4 broadcast address).
    pub fn last(&self) -> u128 {
        host_mask(width(self.is_ipv6()), self.len)
    }

    /// The `n`th `len`-long subnet of the network; `None` when there is no such subnet.
    pub fn subnet(&self, len: u8, n: u128) -> Option<Net> {
        let w = width(self.is_ipv6());
        if len < self.len || len > w {
            return None;
        }
        let count_bits = u32::from(len - self.len);
        if count_bits < 128 && n >> count_bits != 0 {
            return None;
        }
        let shift = u32::from(w - len);
        let offset = if shift >= 128 { 0 } else { n << shift };
        Net::new(from_bits(self.is_ipv6(), bits(self.addr) | offset), len)
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Net, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (ADDRESS/LENGTH)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR: {addr:?} is not an IP address"))?;
        let max = width(addr.is_ipv6());
        len.parse::<u8>()
            .ok()
            .and_then(|len| Net::new(addr, len))
            .ok_or_else(|| format!("{s:?} is not a CIDR: the length must be 0 to {max}"))
    }
}

impl TryFrom<String> for Net {
    type Error = String;

    fn try_from(s: String) -> Result<Net, String> {
        s.parse()
    }
}

impl From<Net> for String {
    fn from(n: Net) -> String {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn parsing_clears_host_bits() {
        let n: Net = "10.0.1.7/24".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.1.0/24");
    }

    #[test]
    fn hosts_are_counted_from_the_network_address() {
        let n: Net = "fd00:1::/64".parse().unwrap();
        assert_eq!(n.host(0xfe).unwrap().to_string(), "fd00:1::fe");
        let n: Net = "10.0.1.0/24".parse().unwrap();
        assert_eq!(n.host(254).unwrap().to_string(), "10.0.1.254");
        assert_eq!(n.host(256), None);
    }

    #[test]
    fn subnets_are_numbered_in_order() {
        let pool: Net = "10.244.0.0/16".parse().unwrap();
        assert_eq!(pool.subnet(24, 3).unwrap().to_string(), "10.244.3.0/24");
        assert_eq!(pool.subnet(24, 256), None);
        let pool: Net = "fd10::/48".parse().unwrap();
        assert_eq!(pool.subnet(64, 2).unwrap().to_string(), "fd10:0:0:2::/64");
    }

    #[test]
    fn overlap_needs_the_same_family() {
        let a: Net = "10.0.0.0/16".parse().unwrap();
        let b: Net = "10.0.5.0/24".parse().unwrap();
        let c: Net = "::/0".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }

    #[test]
    fn bad_cidrs_are_rejected_with_the_reason() {
        assert!("10.0.0.0/33"
            .parse::<Net>()
            .unwrap_err()
            .contains("0 to 32"));
        assert!("10.0.0.0"
            .parse::<Net>()
            .unwrap_err()
            .contains("ADDRESS/LENGTH"));
    }
}
