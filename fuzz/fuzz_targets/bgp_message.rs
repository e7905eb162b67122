//! Whole messages, as they come off a socket: framing then decoding, and every decoded
//! message must encode and decode again to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tabby_bgp::wire::{frame, Message};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((selector, stream)) = data.split_first() else { return };
    let ctx = common::context(*selector);
    let mut rest = stream;
    while let Ok(Some(len)) = frame(rest, &ctx) {
        let (msg, tail) = rest.split_at(len);
        if let Ok(decoded) = Message::decode(msg, &ctx) {
            check_round_trip(&decoded, &ctx);
        }
        rest = tail;
    }
});

fn check_round_trip(decoded: &Message, ctx: &tabby_bgp::wire::Context) {
    // Only clean messages are expected to survive unchanged: RFC 7606 corrections change
    // what is re-encoded on purpose.
    if let Message::Update(u) = decoded {
        if !u.errors.is_empty() {
            return;
        }
    }
    let bytes = decoded.to_bytes(ctx);
    if bytes.len() > ctx.max_message_len() {
        return;
    }
    match Message::decode(&bytes, ctx) {
        Ok(again) => assert_eq!(&again, decoded, "re-encoded message decodes differently"),
        Err(e) => panic!("re-encoded message does not decode: {e:?}"),
    }
}
