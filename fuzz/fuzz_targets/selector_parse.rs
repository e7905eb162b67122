//! Selector text: any UTF-8 must parse or fail without panicking, and whatever parses must
//! print canonical text that parses back to the same selector.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tabby_selector::Selector;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(selector) = Selector::parse(text) else {
        return;
    };
    let canonical = selector.to_string();
    match Selector::parse(&canonical) {
        Ok(again) => assert_eq!(again, selector, "{text:?} printed as {canonical:?}"),
        Err(e) => panic!("{text:?} printed as {canonical:?}, which does not parse:\n{e}"),
    }
});
