//! OPEN bodies and their capabilities.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tabby_bgp::wire::Open;

fuzz_target!(|data: &[u8]| {
    if let Ok(open) = Open::decode(data) {
        let mut out = bytes::BytesMut::new();
        open.encode(&mut out);
        let _ = Open::decode(&out);
    }
});
