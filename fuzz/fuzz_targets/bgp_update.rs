//! UPDATE bodies: decoding must never panic, whatever the negotiated context.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tabby_bgp::wire::Update;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else { return };
    let _ = Update::decode(body, &common::context(*selector));
});
