//! `nft -j list table inet tabby` output as the applier reads it back: any text must parse or
//! fail without panicking, and a parsed table must diff against an empty one and against a
//! rendered ruleset without panicking (the read-back feeds the diff of every first apply and
//! every drift repair).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tabby_acl::nft::{self, NftState};
use tabby_acl::Ruleset;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(state) = nft::parse_json(text) else {
        return;
    };
    let _ = state.members();
    let _ = nft::diff(&state, &NftState::default());
    let _ = nft::diff(&NftState::default(), &state);
    let _ = nft::diff(&state, &nft::render(&Ruleset::default()));
});
