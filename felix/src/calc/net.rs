//! Prefix arithmetic on [`Dst`]: parsing CIDRs, masking host bits, containment.

use crate::routes::Dst;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The prefix `addr/len` with its host bits cleared.
pub(crate) fn prefix(addr: IpAddr, len: u8) -> Dst {
    let addr = match addr {
        IpAddr::V4(a) => {
            let len = len.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let len = len.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    };
    Dst { addr, len }
}

/// A CIDR as Calico writes it (`10.65.0.0/26`), host bits cleared; `None` when invalid.
pub(crate) fn parse_cidr(s: &str) -> Option<Dst> {
    tabby_datastore::validate::cidr(s.trim())
        .ok()
        .map(|(addr, len)| prefix(addr, len))
}

/// The host route of an address: `/32` or `/128`.
pub(crate) fn host(addr: IpAddr) -> Dst {
    Dst {
        addr,
        len: host_len(addr),
    }
}

/// The host prefix length of an address's family.
pub(crate) fn host_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// Whether `net` contains `addr` (same family, within the prefix).
pub(crate) fn contains(net: Dst, addr: IpAddr) -> bool {
    net.addr.is_ipv4() == addr.is_ipv4() && prefix(addr, net.len) == net
}

/// Whether `net` contains every address of `inner`.
pub(crate) fn covers(net: Dst, inner: Dst) -> bool {
    inner.len >= net.len && contains(net, inner.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_clears_host_bits() {
        let d = prefix(
            "10.65.1.77"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            24,
        );
        assert_eq!(d.addr, IpAddr::V4(Ipv4Addr::new(10, 65, 1, 0)));
        let z = prefix(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)), 0);
        assert_eq!(z.addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn covers_needs_the_same_family_and_a_longer_prefix() {
        let pool = parse_cidr("10.65.0.0/16");
        let block = parse_cidr("10.65.3.64/26");
        let v6 = parse_cidr("fd00::/64");
        assert!(matches!((pool, block), (Some(p), Some(b)) if covers(p, b) && !covers(b, p)));
        assert!(matches!((pool, v6), (Some(p), Some(v)) if !covers(p, v)));
    }
}
