//! The networks the project ships and tests with, written with
//! [`GraphBuilder`]. Every function is deterministic: the same arguments
//! give the same bytes, so shipped models can be rebuilt and compared.

use super::{Dim, ElemType, ExportError, GraphBuilder};
use crate::model::meta;
use crate::rng::Rng;
use crate::source::SimMode;
use crate::source::{SimulatedSource, Source};
use crate::window::Layout;
use crate::window::Window;
use tract_onnx::pb::ModelProto;

fn batch() -> Dim {
    Dim::Symbol("N".into())
}

/// The seed network: a 10→20→10 MLP (Gemm, ReLU, Gemm), weights drawn from
/// normal(0, 0.1) with `seed`, biases zero. Input `x` [N, 10].
pub fn seed_mlp(seed: u64) -> Result<ModelProto, ExportError> {
    let mut rng = Rng::new(seed);
    let mut g = GraphBuilder::new("seed_mlp");
    let x = g.input("x", ElemType::F32, &[batch(), 10.into()]);
    let h = g.gemm(&x, 10, 20, rng.normal_vec(200, 0.1), vec![0.0; 20])?;
    let h = g.relu(&h);
    let y = g.gemm(&h, 20, 10, rng.normal_vec(200, 0.1), vec![0.0; 10])?;
    g.output(&y, "y", ElemType::F32, &[batch(), 10.into()]);
    g.metadata(meta::TASK, "regress");
    Ok(g.finish())
}

/// The demo model's window (models/demo): samples per window.
pub const DEMO_WINDOW: usize = 64;
/// Demo hop.
pub const DEMO_HOP: usize = 32;
/// Demo channels.
pub const DEMO_CHANNELS: usize = 3;

/// `n` consecutive NCW windows from the simulated sensor in `mode`.
pub fn simulated_windows(mode: SimMode, seed: u64, n: usize) -> Vec<Vec<f32>> {
    let mut src = SimulatedSource::new(100.0, DEMO_CHANNELS, mode, 5.0, seed, false);
    let mut w = Window::new(DEMO_WINDOW, DEMO_HOP, DEMO_CHANNELS, Layout::Ncw);
    let mut out = Vec::new();
    while out.len() < n {
        let Ok(Some(s)) = src.next_sample() else {
            break;
        };
        if w.push(&s.values) {
            let mut buf = Vec::new();
            w.fill(&mut buf);
            out.push(buf);
        }
    }
    out
}

pub(super) fn he(rng: &mut Rng, n: usize, fan_in: usize) -> Vec<f32> {
    rng.normal_vec(n, (2.0 / fan_in as f64).sqrt())
}

/// A MobileNet-style CNN over [1, 3, 32, 32] images: a strided 3×3 stem,
/// two depthwise-separable blocks (depthwise 3×3 with groups, pointwise
/// 1×1, ReLU6 as Clip), global average pooling and a 10-way softmax head.
pub fn mobilenet_style(seed: u64) -> Result<ModelProto, ExportError> {
    let mut rng = Rng::new(seed);
    let mut g = GraphBuilder::new("mobilenet_style");
    let x = g.input(
        "image",
        ElemType::F32,
        &[1.into(), 3.into(), 32.into(), 32.into()],
    );
    let h = g.conv(
        &x,
        3,
        16,
        &[3, 3],
        2,
        1,
        1,
        he(&mut rng, 16 * 27, 27),
        rng.normal_vec(16, 0.01),
    )?;
    let mut h = g.clip(&h, 0.0, 6.0);
    let mut ch = 16;
    for (out, stride) in [(32, 1), (64, 2)] {
        h = separable(&mut g, &mut rng, &h, ch, out, &[3, 3], stride)?;
        ch = out;
    }
    let p = g.global_avg_pool(&h);
    let f = g.flatten(&p, 1);
    let logits = g.gemm(&f, ch, 10, he(&mut rng, 10 * ch, ch), vec![0.0; 10])?;
    let y = g.softmax(&logits, 1);
    g.output(&y, "probs", ElemType::F32, &[1.into(), 10.into()]);
    Ok(g.finish())
}

/// MobileNet v1 over [1, 3, `size`, `size`] images with its channels
/// multiplied by `width` (0.25, 0.5, 1.0 in the paper): a strided 3x3 stem,
/// the paper's 13 depthwise-separable blocks, global average pooling and a
/// 1000-way softmax head. Random weights: for timing image pipelines.
pub fn mobilenet_v1(seed: u64, width: f32, size: usize) -> Result<ModelProto, ExportError> {
    let mut rng = Rng::new(seed);
    let mut g = GraphBuilder::new("mobilenet_v1");
    let x = g.input(
        "image",
        ElemType::F32,
        &[1.into(), 3.into(), size.into(), size.into()],
    );
    let c = |n: usize| ((n as f32 * width).round() as usize).max(8);
    let stem = c(32);
    let h = g.conv(
        &x,
        3,
        stem,
        &[3, 3],
        2,
        1,
        1,
        he(&mut rng, stem * 27, 27),
        vec![0.0; stem],
    )?;
    let mut h = g.clip(&h, 0.0, 6.0);
    let mut ch = stem;
    let blocks = [
        (64, 1),
        (128, 2),
        (128, 1),
        (256, 2),
        (256, 1),
        (512, 2),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (1024, 2),
        (1024, 1),
    ];
    for (out, stride) in blocks {
        h = separable(&mut g, &mut rng, &h, ch, c(out), &[3, 3], stride)?;
        ch = c(out);
    }
    let p = g.global_avg_pool(&h);
    let f = g.flatten(&p, 1);
    let logits = g.gemm(&f, ch, 1000, he(&mut rng, 1000 * ch, ch), vec![0.0; 1000])?;
    let y = g.softmax(&logits, 1);
    g.output(&y, "probs", ElemType::F32, &[1.into(), 1000.into()]);
    Ok(g.finish())
}

/// A depthwise-separable block: depthwise convolution (`kernel`, one group
/// per channel, padding 1), ReLU6, pointwise 1×1 to `out` channels, ReLU6.
fn separable(
    g: &mut GraphBuilder,
    rng: &mut Rng,
    x: &str,
    ch: usize,
    out: usize,
    kernel: &[usize],
    stride: usize,
) -> Result<String, ExportError> {
    let taps: usize = kernel.iter().product();
    let dw = g.conv(
        x,
        ch,
        ch,
        kernel,
        stride,
        1,
        ch,
        he(rng, ch * taps, taps),
        vec![0.0; ch],
    )?;
    let dw = g.clip(&dw, 0.0, 6.0);
    let ones = vec![1; kernel.len()];
    let pw = g.conv(
        &dw,
        ch,
        out,
        &ones,
        1,
        0,
        1,
        he(rng, out * ch, ch),
        vec![0.0; out],
    )?;
    Ok(g.clip(&pw, 0.0, 6.0))
}

/// Window length of [`mobilenet_1d`].
pub const MOBILENET_1D_WINDOW: usize = 256;

/// A MobileNet-style 1-D CNN over [1, 3, 256] sensor windows, shaped for
/// the pipeline: a strided stem, three depthwise-separable blocks, global
/// average pooling and a 4-way softmax head (about 0.2 M MACs).
pub fn mobilenet_1d(seed: u64) -> Result<ModelProto, ExportError> {
    let mut rng = Rng::new(seed);
    let mut g = GraphBuilder::new("mobilenet_1d");
    let x = g.input(
        "vibration",
        ElemType::F32,
        &[batch(), 3.into(), MOBILENET_1D_WINDOW.into()],
    );
    let h = g.conv(
        &x,
        3,
        16,
        &[5],
        2,
        2,
        1,
        he(&mut rng, 16 * 15, 15),
        rng.normal_vec(16, 0.01),
    )?;
    let mut h = g.clip(&h, 0.0, 6.0);
    let mut ch = 16;
    for (out, stride) in [(32, 2), (64, 2), (64, 1)] {
        h = separable(&mut g, &mut rng, &h, ch, out, &[3], stride)?;
        ch = out;
    }
    let p = g.global_avg_pool(&h);
    let f = g.flatten(&p, 1);
    let logits = g.gemm(&f, ch, 4, he(&mut rng, 4 * ch, ch), vec![0.0; 4])?;
    let y = g.softmax(&logits, 1);
    g.output(&y, "probs", ElemType::F32, &[batch(), 4.into()]);
    g.metadata(meta::TASK, "classify");
    g.metadata(meta::WINDOW, &MOBILENET_1D_WINDOW.to_string());
    g.metadata(meta::HOP, &(MOBILENET_1D_WINDOW / 2).to_string());
    g.metadata(meta::LAYOUT, "ncw");
    Ok(g.finish())
}

/// A ResNet-style CNN over [1, 3, 16, 16]: a 3×3 stem, one residual block
/// (two 3×3 convolutions and an identity skip through Add), 2×2 max pooling,
/// global average pooling and a 5-way Gemm head.
pub fn resnet_style(seed: u64) -> Result<ModelProto, ExportError> {
    let mut rng = Rng::new(seed);
    let mut g = GraphBuilder::new("resnet_style");
    let x = g.input(
        "image",
        ElemType::F32,
        &[1.into(), 3.into(), 16.into(), 16.into()],
    );
    let h = g.conv(
        &x,
        3,
        8,
        &[3, 3],
        1,
        1,
        1,
        he(&mut rng, 8 * 27, 27),
        rng.normal_vec(8, 0.01),
    )?;
    let h = g.relu(&h);
    let r = g.conv(
        &h,
        8,
        8,
        &[3, 3],
        1,
        1,
        1,
        he(&mut rng, 8 * 72, 72),
        vec![0.0; 8],
    )?;
    let r = g.relu(&r);
    let r = g.conv(
        &r,
        8,
        8,
        &[3, 3],
        1,
        1,
        1,
        he(&mut rng, 8 * 72, 72),
        vec![0.0; 8],
    )?;
    let sum = g.add(&h, &r);
    let h = g.relu(&sum);
    let h = g.max_pool(&h, &[2, 2], 2);
    let p = g.global_avg_pool(&h);
    let f = g.flatten(&p, 1);
    let y = g.gemm(&f, 8, 5, he(&mut rng, 40, 8), vec![0.0; 5])?;
    g.output(&y, "logits", ElemType::F32, &[1.into(), 5.into()]);
    Ok(g.finish())
}

/// A 1-D CNN over [N, 2, 32] with normalization baked in as Sub/Div,
/// convolution, Tanh, max and average pooling, a MatMul+Add layer and a
/// Sigmoid: the rest of the writer's op set.
pub fn cnn1d_mixed(seed: u64) -> Result<ModelProto, ExportError> {
    let mut rng = Rng::new(seed);
    let mut g = GraphBuilder::new("cnn1d_mixed");
    let x = g.input("signal", ElemType::F32, &[batch(), 2.into(), 32.into()]);
    let n = g.normalize(&x, &[1, 2, 1], vec![0.5, -1.0], vec![2.0, 0.5]);
    let h = g.conv(
        &n,
        2,
        4,
        &[3],
        1,
        1,
        1,
        he(&mut rng, 24, 6),
        rng.normal_vec(4, 0.1),
    )?;
    let h = g.tanh(&h);
    let h = g.max_pool(&h, &[2], 2);
    let h = g.avg_pool(&h, &[2], 2);
    let f = g.flatten(&h, 1);
    let y = g.matmul_add(&f, 32, 3, he(&mut rng, 96, 32), rng.normal_vec(3, 0.1))?;
    let y = g.sigmoid(&y);
    g.output(&y, "scores", ElemType::F32, &[batch(), 3.into()]);
    Ok(g.finish())
}

/// Samples per window of [`thermal_trend`].
pub const TREND_WINDOW: usize = 10;

/// A temperature-trend regressor over [N, 10] windows of one channel: one
/// Gemm whose rows compute the window's mean and its least-squares slope
/// (units per sample). Exact, not trained: the weights are the closed-form
/// regression coefficients.
pub fn thermal_trend() -> Result<ModelProto, ExportError> {
    let n = TREND_WINDOW;
    let t_mean = (n - 1) as f32 / 2.0;
    let ss: f32 = (0..n).map(|t| (t as f32 - t_mean).powi(2)).sum();
    let mut w = vec![1.0 / n as f32; n];
    w.extend((0..n).map(|t| (t as f32 - t_mean) / ss));
    let mut g = GraphBuilder::new("thermal_trend");
    let x = g.input("temperature", ElemType::F32, &[batch(), n.into()]);
    let y = g.gemm(&x, n, 2, w, vec![0.0, 0.0])?;
    g.output(&y, "mean_slope", ElemType::F32, &[batch(), 2.into()]);
    g.metadata(meta::TASK, "regress");
    g.metadata(meta::WINDOW, &n.to_string());
    g.metadata(meta::HOP, "1");
    g.metadata(meta::LAYOUT, "flat");
    g.metadata(meta::CHANNELS, "temp_c");
    Ok(g.finish())
}

/// A model made to be slow, for overload tests and benchmarks: the outer
/// product of its 256 inputs `x` [1, 256], squared `rounds` times (16.7 M
/// multiply-accumulates each) with tanh between, averaged over rows.
pub fn slow_square(rounds: usize) -> Result<ModelProto, ExportError> {
    use super::Attr;
    let mut g = GraphBuilder::new("slow");
    let x = g.input("x", ElemType::F32, &[1.into(), 256.into()]);
    let col = g.constant_i64("col", &[2], vec![256, 1]);
    let a = g.node("Reshape", &[&x, &col], &[]);
    let mut y = g.node("MatMul", &[&a, &x], &[]);
    for _ in 0..rounds {
        let sq = g.node("MatMul", &[&y, &y], &[]);
        y = g.tanh(&sq);
    }
    let mean = g.node(
        "ReduceMean",
        &[&y],
        &[("axes", Attr::Ints(vec![0])), ("keepdims", Attr::Int(1))],
    );
    g.output(&mean, "y", ElemType::F32, &[1.into(), 256.into()]);
    g.metadata(meta::TASK, "regress");
    Ok(g.finish())
}

/// `rows` samples of the simulated sensor in `alternate` mode (5 s normal,
/// 5 s fault, ...) at 100 Hz from `seed`, as CSV with a `ts_ms` column
/// counted from 0 and one column per axis.
pub fn simulated_csv(seed: u64, rows: usize) -> String {
    let mut src = SimulatedSource::new(100.0, DEMO_CHANNELS, SimMode::Alternate, 5.0, seed, false);
    let mut out = String::from("ts_ms,x,y,z\n");
    for i in 0..rows {
        let Ok(Some(s)) = src.next_sample() else {
            break;
        };
        let v: Vec<String> = s.values.iter().map(|x| format!("{x:.5}")).collect();
        out.push_str(&format!("{},{}\n", i * 10, v.join(",")));
    }
    out
}
