//! The Motion-JPEG splitter on any bytes, fed in pieces whose sizes the
//! first byte picks: it never panics, and every frame it gives is a whole
//! JPEG within the size limit.
#![no_main]

use edgeinfer::source::jpeg_split::{Split, Splitter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(pick % 16) + 1;
    let max = 4096;
    let mut splitter = Splitter::new(max);
    let mut out = Vec::new();
    for chunk in stream.chunks(piece) {
        splitter.feed(chunk, &mut out);
    }
    let _ = splitter.finish();
    for split in out {
        if let Split::Frame(f) = split {
            assert!(f.starts_with(&[0xFF, 0xD8]) && f.ends_with(&[0xFF, 0xD9]));
            assert!(f.len() <= max);
        }
    }
});
