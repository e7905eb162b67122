//! Builders of raw UPDATE bytes, so tests state exactly what goes on the wire.
#![allow(dead_code)]

use tabby_bgp::wire::{Context, Update};

/// Optional.
pub const O: u8 = 0x80;
/// Transitive.
pub const T: u8 = 0x40;
/// Well-known (transitive, not optional).
pub const WK: u8 = 0x40;

/// One attribute: flags, type code, value (extended length chosen when the value needs it).
pub fn attr(flags: u8, code: u8, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    if value.len() > 255 {
        v.extend_from_slice(&[flags | 0x10, code]);
        v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        v.extend_from_slice(&[flags, code, value.len() as u8]);
    }
    v.extend_from_slice(value);
    v
}

pub fn origin_igp() -> Vec<u8> {
    attr(WK, 1, &[0])
}

/// AS_PATH of one AS_SEQUENCE of 4-octet ASes.
pub fn as_path4(asns: &[u32]) -> Vec<u8> {
    let mut v = vec![2, asns.len() as u8];
    asns.iter()
        .for_each(|a| v.extend_from_slice(&a.to_be_bytes()));
    attr(WK, 2, &v)
}

pub fn next_hop(a: [u8; 4]) -> Vec<u8> {
    attr(WK, 3, &a)
}

/// The three mandatory attributes of an IPv4 announcement from AS 65001 via 10.0.0.1.
pub fn mandatory() -> Vec<Vec<u8>> {
    vec![origin_igp(), as_path4(&[65001]), next_hop([10, 0, 0, 1])]
}

/// An UPDATE body from its three fields.
pub fn body(withdrawn: &[u8], attrs: &[Vec<u8>], nlri: &[u8]) -> Vec<u8> {
    let attrs: Vec<u8> = attrs.concat();
    let mut v = Vec::new();
    v.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    v.extend_from_slice(withdrawn);
    v.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    v.extend_from_slice(&attrs);
    v.extend_from_slice(nlri);
    v
}

/// NLRI 10.1.0.0/16.
pub const NLRI_10_1: [u8; 3] = [16, 10, 1];

/// An iBGP session with 4-octet AS.
pub fn ibgp() -> Context {
    Context::modern()
}

/// An eBGP session with 4-octet AS.
pub fn ebgp() -> Context {
    Context {
        ebgp: true,
        ..Context::modern()
    }
}

pub fn decode(body: &[u8], ctx: &Context) -> Update {
    match Update::decode(body, ctx) {
        Ok(u) => u,
        Err(n) => panic!("expected an UPDATE, got a session reset: {n:?}"),
    }
}

pub fn p(s: &str) -> tabby_bgp::Prefix {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// MP_REACH_NLRI value for IPv6 unicast with a 16-octet next hop.
pub fn mp_reach_v6(next_hop: [u8; 16], nlri: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 2, 1, 16];
    v.extend_from_slice(&next_hop);
    v.push(0);
    v.extend_from_slice(nlri);
    attr(O, 14, &v)
}

/// fd00:1::/32 as NLRI.
pub const NLRI_FD00_1: [u8; 5] = [32, 0xfd, 0x00, 0x00, 0x01];

pub fn fd00_nh() -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = 1;
    a
}
