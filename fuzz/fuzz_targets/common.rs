//! Shared by the BGP targets: the negotiated context is chosen by the input's first octet, so
//! every codec path (2- and 4-octet AS, ADD-PATH, extended messages, eBGP) is reached.

use tabby_bgp::wire::Context;
use tabby_bgp::Family;

pub fn context(selector: u8) -> Context {
    let mut families = Vec::new();
    if selector & 0x04 != 0 {
        families.push(Family::Ipv4Unicast);
    }
    if selector & 0x08 != 0 {
        families.push(Family::Ipv6Unicast);
    }
    Context {
        four_octet_as: selector & 0x01 != 0,
        extended_message: selector & 0x02 != 0,
        add_path_receive: families.clone(),
        add_path_send: families,
        extended_next_hop: selector & 0x10 != 0,
        ebgp: selector & 0x20 != 0,
    }
}
