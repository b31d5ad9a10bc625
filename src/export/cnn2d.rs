//! The 2-D CNN benchmark set: real image and audio architectures at their
//! real sizes, written with [`GraphBuilder`] and random weights (timing and
//! equality checks do not need trained ones). Batch norm is folded into the
//! convolutions, as an exporter does for inference.
//!
//! `benches/compare_onnxruntime.py` times them against ONNX Runtime;
//! `cargo run --release --example make_models -- --zoo DIR` writes them.

use super::zoo::he;
use super::{ElemType, ExportError, GraphBuilder};
use crate::rng::Rng;
use tract_onnx::pb::ModelProto;

/// A convolution with He-initialized weights, square stride and symmetric
/// padding; `groups == cin` makes it depthwise.
#[allow(clippy::too_many_arguments)]
fn conv(
    g: &mut GraphBuilder,
    rng: &mut Rng,
    x: &str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
) -> Result<String, ExportError> {
    let fan_in = cin / groups * k * k;
    let w = he(rng, cout * fan_in, fan_in);
    let b = rng.normal_vec(cout, 0.01);
    g.conv(x, cin, cout, &[k, k], stride, k / 2, groups, w, b)
}

fn image_input(g: &mut GraphBuilder, size: usize) -> String {
    g.input(
        "image",
        ElemType::F32,
        &[1.into(), 3.into(), size.into(), size.into()],
    )
}

/// Global average pooling, a `classes`-way Gemm and softmax.
fn classifier_head(
    g: &mut GraphBuilder,
    rng: &mut Rng,
    x: &str,
    ch: usize,
    classes: usize,
) -> Result<(), ExportError> {
    let p = g.global_avg_pool(x);
    let f = g.flatten(&p, 1);
    // Unit-variance weights (not He's): logits on the features' scale.
    let w = rng.normal_vec(classes * ch, (1.0 / ch as f64).sqrt());
    let logits = g.gemm(&f, ch, classes, w, vec![0.0; classes])?;
    let y = g.softmax(&logits, 1);
    g.output(&y, "probs", ElemType::F32, &[1.into(), classes.into()]);
    Ok(())
}

/// MobileNetV2 (Sandler et al. 2018, width 1.0) over [1, 3, `size`,
/// `size`]: a 3×3 stride-2 stem, the paper's 17 inverted-residual blocks
/// (1×1 expansion ×6, ReLU6, depthwise 3×3, ReLU6, linear 1×1 projection,
/// identity skip where the shape allows), a 1×1 conv to 1280 and a
/// 1000-way head. About 300 M MACs at 224.
pub fn mobilenet_v2(seed: u64, size: usize) -> Result<ModelProto, ExportError> {
    let mut rng = Rng::new(seed);
    let mut g = GraphBuilder::new("mobilenet_v2");
    let x = image_input(&mut g, size);
    let h = conv(&mut g, &mut rng, &x, 3, 32, 3, 2, 1)?;
    let mut h = g.clip(&h, 0.0, 6.0);
    let mut ch = 32;
    // (expansion t, output channels c, repeats n, first stride s)
    for (t, c, n, s) in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ] {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let hidden = ch * t;
            let mut y = h.clone();
            if t != 1 {
                y = conv(&mut g, &mut rng, &y, ch, hidden, 1, 1, 1)?;
                y = g.clip(&y, 0.0, 6.0);
            }
            y = conv(&mut g, &mut rng, &y, hidden, hidden, 3, stride, hidden)?;
            y = g.clip(&y, 0.0, 6.0);
            // The projection is linear: unit-variance weights, not He's.
            let w = rng.normal_vec(c * hidden, (1.0 / hidden as f64).sqrt());
            y = g.conv(&y, hidden, c, &[1, 1], 1, 0, 1, w, vec![0.0; c])?;
            h = if stride == 1 && ch == c {
                g.add(&h, &y)
            } else {
                y
            };
            ch = c;
        }
    }
    let h = conv(&mut g, &mut rng, &h, ch, 1280, 1, 1, 1)?;
    let h = g.clip(&h, 0.0, 6.0);
    classifier_head(&mut g, &mut rng, &h, 1280, 1000)?;
    Ok(g.finish())
}

/// ResNet-18 (He et al. 2016) over [1, 3, `size`, `size`]: a 7×7 stride-2
/// stem, 2×2 max pooling (the paper's is 3×3 with padding; the shapes that
/// follow are the same), four stages of two basic blocks (3×3, ReLU, 3×3,
/// identity or strided 1×1 skip, ReLU) at 64/128/256/512 channels, and a
/// 1000-way head. About 1.8 G MACs at 224.
pub fn resnet18(seed: u64, size: usize) -> Result<ModelProto, ExportError> {
    let mut rng = Rng::new(seed);
    let mut g = GraphBuilder::new("resnet18");
    let x = image_input(&mut g, size);
    let h = conv(&mut g, &mut rng, &x, 3, 64, 7, 2, 1)?;
    let h = g.relu(&h);
    let mut h = g.max_pool(&h, &[2, 2], 2);
    let mut ch = 64;
    for (stage, c) in [64, 128, 256, 512].into_iter().enumerate() {
        for block in 0..2 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let y = conv(&mut g, &mut rng, &h, ch, c, 3, stride, 1)?;
            let y = g.relu(&y);
            // The branch's last convolution at half He's scale: without
            // batch norm, eight full-scale residual sums would grow the
            // activations 16-fold and saturate the softmax.
            let w = he(&mut rng, c * c * 9, c * 9)
                .iter()
                .map(|v| v * 0.5)
                .collect();
            let y = g.conv(&y, c, c, &[3, 3], 1, 1, 1, w, rng.normal_vec(c, 0.01))?;
            let skip = if stride != 1 || ch != c {
                conv(&mut g, &mut rng, &h, ch, c, 1, stride, 1)?
            } else {
                h.clone()
            };
            let sum = g.add(&skip, &y);
            h = g.relu(&sum);
            ch = c;
        }
    }
    classifier_head(&mut g, &mut rng, &h, ch, 1000)?;
    Ok(g.finish())
}

/// SqueezeNet 1.1 (Iandola et al. 2016) over [1, 3, `size`, `size`]: a 3×3
/// stride-2 stem, eight fire modules (1×1 squeeze, then 1×1 and 3×3
/// expands concatenated) between 3×3 stride-2 max pools, a 1×1 conv to the
/// 1000 classes, global average pooling and softmax. About 350 M MACs at
/// 224.
pub fn squeezenet1_1(seed: u64, size: usize) -> Result<ModelProto, ExportError> {
    let mut rng = Rng::new(seed);
    let mut g = GraphBuilder::new("squeezenet1_1");
    let x = image_input(&mut g, size);
    let h = conv(&mut g, &mut rng, &x, 3, 64, 3, 2, 1)?;
    let h = g.relu(&h);
    let mut h = g.max_pool(&h, &[3, 3], 2);
    let mut ch = 64;
    // (squeeze, expand) per fire module; `true`: max pool after it.
    for (squeeze, expand, pool) in [
        (16, 64, false),
        (16, 64, true),
        (32, 128, false),
        (32, 128, true),
        (48, 192, false),
        (48, 192, false),
        (64, 256, false),
        (64, 256, false),
    ] {
        let s = conv(&mut g, &mut rng, &h, ch, squeeze, 1, 1, 1)?;
        let s = g.relu(&s);
        let e1 = conv(&mut g, &mut rng, &s, squeeze, expand, 1, 1, 1)?;
        let e1 = g.relu(&e1);
        let e3 = conv(&mut g, &mut rng, &s, squeeze, expand, 3, 1, 1)?;
        let e3 = g.relu(&e3);
        h = g.concat(&[&e1, &e3], 1);
        ch = 2 * expand;
        if pool {
            h = g.max_pool(&h, &[3, 3], 2);
        }
    }
    let h = conv(&mut g, &mut rng, &h, ch, 1000, 1, 1, 1)?;
    let h = g.relu(&h);
    let p = g.global_avg_pool(&h);
    let f = g.flatten(&p, 1);
    let y = g.softmax(&f, 1);
    g.output(&y, "probs", ElemType::F32, &[1.into(), 1000.into()]);
    Ok(g.finish())
}

/// Frames × coefficients of [`kws_dscnn`]'s input: 1 s of audio in 40 ms
/// frames every 20 ms, 10 MFCCs each.
pub const KWS_INPUT: [usize; 2] = [49, 10];

/// The keyword-spotting DS-CNN-S of "Hello Edge" (Zhang et al. 2017) over
/// a [1, 1, 49, 10] MFCC spectrogram: a 10×4 stride-2 "same" stem to 64
/// channels, four depthwise-separable blocks (3×3 depthwise, ReLU, 1×1,
/// ReLU), global average pooling and a 12-way head (10 words, silence,
/// unknown). About 2.7 M MACs.
pub fn kws_dscnn(seed: u64) -> Result<ModelProto, ExportError> {
    let mut rng = Rng::new(seed);
    let mut g = GraphBuilder::new("kws_dscnn");
    let [frames, coeffs] = KWS_INPUT;
    let x = g.input(
        "mfcc",
        ElemType::F32,
        &[1.into(), 1.into(), frames.into(), coeffs.into()],
    );
    // TensorFlow's "same" for a 10×4 kernel at stride 2 on 49×10 pads
    // 4 above, 5 below, 1 left, 1 right: output 25×5.
    let h = g.conv_with(
        &x,
        (1, 64, 1),
        &[10, 4],
        &[2, 2],
        &[4, 1, 5, 1],
        he(&mut rng, 64 * 40, 40),
        rng.normal_vec(64, 0.01),
    )?;
    let mut h = g.relu(&h);
    for _ in 0..4 {
        let d = conv(&mut g, &mut rng, &h, 64, 64, 3, 1, 64)?;
        let d = g.relu(&d);
        let p = conv(&mut g, &mut rng, &d, 64, 64, 1, 1, 1)?;
        h = g.relu(&p);
    }
    classifier_head(&mut g, &mut rng, &h, 64, 12)?;
    Ok(g.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelFile;

    fn load(proto: &ModelProto) -> crate::model::Model {
        ModelFile::from_bytes(crate::export::to_bytes(proto), "cnn2d")
            .and_then(|f| f.load(None))
            .unwrap()
    }

    #[test]
    fn the_benchmark_set_has_the_papers_shapes_and_costs() {
        let kws = load(&kws_dscnn(1).unwrap());
        assert_eq!(kws.info().outputs[0].shape, vec![1, 12]);
        // 25×5 positions × (64×40 stem + 4 × (64×9 + 64×64)) + 64×12.
        let macs = 125 * (64 * 40 + 4 * (64 * 9 + 64 * 64)) + 64 * 12;
        let got = kws.info().macs as f64;
        assert!(
            (got / macs as f64 - 1.0).abs() < 0.02,
            "{got} vs {macs} MACs"
        );
        for (proto, lo, hi) in [
            (mobilenet_v2(1, 224).unwrap(), 290e6, 320e6),
            (resnet18(1, 224).unwrap(), 1.7e9, 1.9e9),
            (squeezenet1_1(1, 224).unwrap(), 0.3e9, 0.4e9),
        ] {
            let m = load(&proto);
            assert_eq!(m.info().outputs[0].shape, vec![1, 1000]);
            let macs = m.info().macs as f64;
            assert!(
                (lo..hi).contains(&macs),
                "{}: {macs} MACs",
                proto.graph.as_ref().unwrap().name
            );
        }
    }
}
