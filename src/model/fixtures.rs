//! What the model module's unit tests share: input values and a run of a
//! graph through tract.

use tract_onnx::prelude::*;

/// `len` values in [-2, 2), a different sequence for each `seed`.
pub(super) fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i + seed) * 7919 % 101) as f32 - 50.0) / 25.0)
        .collect()
}

/// `model`'s one output for `x`, optimized by tract.
pub(super) fn run(model: TypedModel, x: &Tensor) -> Vec<f32> {
    let plan = model.into_optimized().unwrap().into_runnable().unwrap();
    let y = plan.run(tvec!(x.clone().into_tvalue())).unwrap().remove(0);
    y.to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}
