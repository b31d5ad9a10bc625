//! Config files through parsing and every section's validation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = edgeinfer::Config::parse(&text, "fuzz.toml", std::path::Path::new("/nonexistent"));
});
