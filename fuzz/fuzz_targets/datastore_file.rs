//! A YAML file of the file datastore: split into documents, parsed, decoded into typed
//! resources and validated. Any input must give objects or errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(docs) = tabby_datastore::file::parse_file(text, "default") {
        for (_, doc) in docs {
            if let Ok((_, resource)) = doc {
                let _ = resource.to_json();
                let _ = resource.unsupported_fields();
            }
        }
    }
});
