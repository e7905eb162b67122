//! Path attribute lists: the input is the Path Attributes field of an otherwise empty UPDATE
//! with one IPv4 NLRI, so every attribute decoder and the RFC 7606 rules run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tabby_bgp::wire::Update;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((selector, attrs)) = data.split_first() else { return };
    let Ok(len) = u16::try_from(attrs.len()) else { return };
    let mut body = vec![0, 0];
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(&[24, 10, 1, 2]);
    let _ = Update::decode(&body, &common::context(*selector));
});
