//! ONNX files through decoding, checking and tract up to a runnable plan,
//! then one forward pass on zeros: every failure must be an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = edgeinfer::ModelFile::from_bytes(data.to_vec(), "fuzz.onnx") else {
        return;
    };
    let Ok(mut model) = file.load(None) else {
        return;
    };
    let inputs = model.info().inputs.clone();
    if let [one] = inputs.as_slice() {
        let n: usize = one.shape.iter().product();
        if one.dtype == "F32" && n <= 1 << 16 {
            let _ = model.run_f32(&vec![0.0; n]);
        }
    }
});
