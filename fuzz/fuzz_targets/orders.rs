//! What a device reads from `<prefix>/cmd` and `<prefix>/update`: signed
//! orders (checked against a key, and unsigned ones allowed) and update
//! chunks fed to a receiver; and the replies `edgeinfer-host` reads.
#![no_main]

use edgeinfer::fleet::update::Receiving;
use edgeinfer::fleet::wire::{Action, Chunk, Manifest, Order, Reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    let _ = Order::verify(data, Some(&key), false);
    if let Ok(order) = Order::verify(data, None, true) {
        if let Action::Update(m) = order.action {
            let _ = m.chunks();
        }
    }
    if let Ok(chunk) = postcard::from_bytes::<Chunk>(data) {
        let manifest = Manifest {
            sha256: String::new(),
            size: 4096,
            chunk_bytes: 1000,
            version: String::new(),
            inputs: vec![],
            outputs: vec![],
        };
        let dir = tempfile::tempdir().expect("temp dir");
        if let Ok(mut r) = Receiving::start("u", manifest, dir.path().join("u.part")) {
            let _ = r.add(&chunk);
            let _ = r.missing();
            let _ = r.finish();
        }
    }
    let _ = serde_json::from_slice::<Reply>(data);
});
