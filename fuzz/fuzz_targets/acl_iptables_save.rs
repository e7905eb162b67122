//! `iptables-save -t filter` and `ipset save` output as the iptables applier reads them back:
//! any text must parse without panicking, and what it parses to must diff against an empty
//! and a rendered state (the restore scripts of a first apply or a repair) without panicking.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use tabby_acl::iptables::{self, Chains, IptState};
use tabby_acl::Ruleset;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (chains, hooks) = iptables::parse_save(text);
    let sets = iptables::parse_ipset_save(text);
    let _ = iptables::restore_script(&chains, &Chains::new(), &hooks);
    let _ = iptables::restore_script(&Chains::new(), &chains, &BTreeSet::new());
    let read = IptState {
        sets,
        v4: chains.clone(),
        v6: chains,
        hooks4: hooks.clone(),
        hooks6: hooks,
    };
    let rendered = iptables::render(&Ruleset::default());
    let _ = read.same(&rendered);
    let _ = iptables::ipset_scripts(&read, &rendered);
    let _ = iptables::ipset_scripts(&rendered, &read);
    let _ = iptables::restore_script(&read.v4, &rendered.v4, &read.hooks4);
});
