//! Image bytes as the image stage decodes and fits them (files from a
//! watched directory, camera frames, MQTT payloads): refused with an error,
//! never a panic, never an allocation past the pixel limit.
#![no_main]

use std::sync::OnceLock;

use edgeinfer::image::{ImageConfig, ImagePrep, Resize};
use edgeinfer::problem::{Origin, Problems};
use libfuzzer_sys::fuzz_target;

fn stages() -> &'static [ImagePrep] {
    static STAGES: OnceLock<Vec<ImagePrep>> = OnceLock::new();
    STAGES.get_or_init(|| {
        let origin = Origin::default();
        [Resize::Stretch, Resize::Crop, Resize::Pad]
            .into_iter()
            .map(|resize| {
                let config = ImageConfig {
                    size: Some([8, 6]),
                    resize: Some(resize),
                    max_pixels: Some(1 << 20),
                    ..Default::default()
                };
                let mut p = Problems::new(&origin);
                config
                    .resolve(&[Some(1), Some(3), Some(6), Some(8)], &mut p)
                    .expect("a valid image stage")
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    for stage in stages() {
        let _ = stage.run(data, &mut out);
    }
});
