//! Sensor payloads on subscribed topics, in every format: the first byte
//! picks the format, the rest is the payload.
#![no_main]

use edgeinfer::source::{mqtt::decode_payload, PayloadFormat, Subscription};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let format = match pick % 5 {
        0 => PayloadFormat::Json,
        1 => PayloadFormat::Csv,
        2 => PayloadFormat::F32le,
        3 => PayloadFormat::Image,
        _ => PayloadFormat::Postcard,
    };
    let fields = if pick & 4 == 0 {
        vec![]
    } else {
        vec!["x".to_string(), "y".to_string()]
    };
    let sub = Subscription {
        filter: "#".into(),
        format,
        fields,
    };
    let _ = decode_payload(&sub, "t", payload, 0);
});
