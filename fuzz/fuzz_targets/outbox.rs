//! Outbox segment files left on disk (torn, corrupt, hostile): opening,
//! reading every waiting message and acknowledging them must never panic.
#![no_main]

use edgeinfer::outbox::{Outbox, OutboxConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    // The segment, and its acknowledgement file from the tail of the input.
    let split = data.len() - data.len() / 4;
    let _ = std::fs::write(dir.path().join("seg-0000000000.log"), &data[..split]);
    let _ = std::fs::write(dir.path().join("seg-0000000000.ack"), &data[split..]);
    let Ok(mut ob) = Outbox::open(dir.path(), OutboxConfig::default()) else {
        return;
    };
    let ids: Vec<u64> = ob.ids().collect();
    for id in ids {
        let _ = ob.read(id);
        let _ = ob.ack(id);
    }
    let _ = ob.push(b"after");
});
