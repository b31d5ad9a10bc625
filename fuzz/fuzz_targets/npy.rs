//! .npy files as `edgeinfer infer` reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edgeinfer::npy::parse(data);
});
