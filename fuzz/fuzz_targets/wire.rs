//! The wire types a subscriber decodes: postcard and JSON result batches,
//! postcard sensor frames, and the file sink's postcard records.
#![no_main]

use edgeinfer::schema::{ResultBatch, ResultRecord, SensorFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = ResultBatch::from_postcard(data) {
        // What decodes re-encodes to something that decodes the same.
        let again = ResultBatch::from_postcard(&b.to_postcard()).expect("round trip");
        assert_eq!(again.records.len(), b.records.len());
    }
    let _ = serde_json::from_slice::<ResultBatch>(data);
    let _ = SensorFrame::from_postcard(data);
    let _ = postcard_record(data);
});

fn postcard_record(data: &[u8]) -> Option<ResultRecord> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("r.bin");
    std::fs::write(&path, data).ok()?;
    edgeinfer::sink::read_postcard_records(&path).ok()?.pop()
}
