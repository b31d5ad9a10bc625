//! Direct sliding-window ops the loader swaps in for tract's on x86_64,
//! between declutter and optimize: depthwise 2-D convolution and 2-D max
//! pooling.
//!
//! Why: `profile --ops` next to ONNX Runtime's profiler
//! (`benches/compare_onnxruntime.py --layers`) put tract's `DepthWiseConv`
//! at 2.7–5.7× ORT on MobileNetV2's layers and 7× on the keyword-spotting
//! CNN's 25×5 planes (tract walks each plane in zones and its stride-2 path
//! is scalar), and its max pools at 8–13× on SqueezeNet's (one scalar
//! compare per tap). Here each channel plane is copied once into a padded
//! buffer split into stride phases, after which every kernel tap reads one
//! contiguous run of the buffer for a whole block of output rows, and a
//! block of outputs stays in vector registers while all taps fold into it.
//! Those loops are plain Rust that the compiler vectorises (AVX-512 or AVX2
//! with FMA when the CPU has them). Only x86_64 gets them, as that is where they were
//! measured faster; ARM keeps tract's NEON kernels.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, MaxPool, PoolSpec};

use super::kernel::{conv_constants, eval_f32, Geometry, UNCLAMPED};

/// Output elements one stride-1 pass accumulates: enough rows to keep the
/// vector loops long, few enough to stay in L1 with the taps it reads.
const GROUP_ELEMENTS: usize = 2048;

/// The widest input rows [`DirectWindow::run_flat`] takes.
const FLAT_WIDTH: usize = 16;

/// How a window's taps fold into one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fold {
    /// Depthwise convolution (one input and one output channel per group):
    /// bias plus the weighted sum of the taps.
    Depthwise,
    /// Max pooling: the largest tap, starting like tract from `f32::MIN`
    /// (the bias) with every weight 1; padding is `f32::MIN` too, so it is
    /// never chosen over data.
    Max,
}

/// A 2-D window op on f32 NCHW (or CHW) data of a concrete shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DirectWindow {
    fold: Fold,
    /// `[C, kh * kw]`, one row of taps per channel.
    kernel: Arc<Tensor>,
    /// `[C]`: where each channel's fold starts.
    bias: Arc<Tensor>,
    geo: Geometry,
    /// Bounds (f32 bits) the outputs are clamped to: the Relu or Clip that
    /// followed a depthwise convolution, folded in to save a pass over its
    /// output.
    clamp: [u32; 2],
}

impl Op for DirectWindow {
    fn name(&self) -> StaticName {
        match self.fold {
            Fold::Depthwise => "DirectDepthwise".into(),
            Fold::Max => "DirectMaxPool".into(),
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} clamp: {:?}",
            self.geo,
            self.clamp.map(f32::from_bits)
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DirectWindow {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let shape = self.geo.output_shape(self.geo.input[1]);
        eval_f32(inputs, &shape, |xs, out| self.run(xs[0], out))
    }
}

impl TypedOp for DirectWindow {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(self.geo.output_shape(self.geo.input[1]))))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        if self.fold == Fold::Max {
            return Ok(tvec!());
        }
        let [n, c, _, _] = self.geo.input;
        let taps = n * c * self.geo.outputs() * self.geo.taps();
        Ok(tvec!((Cost::FMA(f32::datum_type()), taps.into())))
    }

    as_op!();
}

impl DirectWindow {
    /// The op for `conv`, or `None` when it is not a constant-weight f32
    /// depthwise 2-D convolution without dilation.
    pub(super) fn for_conv(
        model: &TypedModel,
        node: &TypedNode,
        conv: &Conv,
    ) -> TractResult<Option<Self>> {
        let spec = &conv.pool_spec;
        let channels = spec.input_channels;
        if conv.group != channels || spec.output_channels != channels {
            return Ok(None);
        }
        let Some((kernel, bias)) = conv_constants(model, node, conv)? else {
            return Ok(None);
        };
        let x = model.outlet_fact(node.inputs[0])?;
        Self::with_geometry(Fold::Depthwise, kernel, bias, spec, x)
    }

    /// The op for `pool`, or `None` when it is not an f32 2-D max pool
    /// without dilation or index output.
    pub(super) fn for_max_pool(
        model: &TypedModel,
        node: &TypedNode,
        pool: &MaxPool,
    ) -> TractResult<Option<Self>> {
        let spec = &pool.pool_spec;
        if pool.with_index_outputs.is_some() {
            return Ok(None);
        }
        let (channels, taps) = (spec.input_channels, spec.kernel_shape.iter().product());
        let kernel = tensor1(&vec![1f32; channels * taps]).into_shape(&[channels, taps])?;
        let bias = tensor1(&vec![f32::MIN; channels]);
        let x = model.outlet_fact(node.inputs[0])?;
        Self::with_geometry(Fold::Max, kernel, bias, spec, x)
    }

    /// `fold` with `kernel` and `bias` over the windows `spec` lays on data
    /// of fact `x`, or `None` where [`Geometry::of`] has none.
    fn with_geometry(
        fold: Fold,
        kernel: Tensor,
        bias: Tensor,
        spec: &PoolSpec,
        x: &TypedFact,
    ) -> TractResult<Option<Self>> {
        Ok(Geometry::of(spec, x)?.map(|geo| DirectWindow {
            fold,
            kernel: kernel.into_arc_tensor(),
            bias: bias.into_arc_tensor(),
            geo,
            clamp: UNCLAMPED,
        }))
    }

    /// The clamp a following Relu or Clip folds into: a depthwise
    /// convolution's; a max pool takes none.
    pub(super) fn clamp(&mut self) -> Option<&mut [u32; 2]> {
        (self.fold == Fold::Depthwise).then_some(&mut self.clamp)
    }

    /// With the widest vectors and fused multiply-adds this CPU has: the
    /// whole op, copies and clamps too, not only the folds, so that one
    /// check of the CPU serves every plane.
    fn run(&self, x: &[f32], out: &mut [f32]) -> TractResult<()> {
        match Vectors::of_this_cpu() {
            // SAFETY: `of_this_cpu` checked the CPU for AVX-512F and FMA.
            #[cfg(target_arch = "x86_64")]
            Vectors::Avx512 => unsafe { self.run_avx512(x, out) },
            // SAFETY: `of_this_cpu` checked the CPU for AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Vectors::Avx2 => unsafe { self.run_avx2(x, out) },
            Vectors::Portable => self.run_with::<false, BLOCK>(x, out),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    fn run_avx512(&self, x: &[f32], out: &mut [f32]) -> TractResult<()> {
        self.run_with::<true, BLOCK_AVX512>(x, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(&self, x: &[f32], out: &mut [f32]) -> TractResult<()> {
        self.run_with::<true, BLOCK>(x, out)
    }

    /// `FUSED`: sums use fused multiply-adds, which the caller's CPU must
    /// have in hardware (in software they are a library call per tap).
    /// Results then differ from the unfused sum in the last bits, as the
    /// gemm crate's do from tract's.
    #[inline(always)]
    fn run_with<const FUSED: bool, const B: usize>(
        &self,
        x: &[f32],
        out: &mut [f32],
    ) -> TractResult<()> {
        let [_, c, h, w] = self.geo.input;
        let [oh, ow] = self.geo.output;
        // Narrow planes only: on KWS's 5-wide planes the flat fold took 40 %
        // less time than the padded one, on MobileNetV2's 7- to 112-wide
        // planes the two were within the machine's noise (BENCHMARKS.md).
        if self.fold == Fold::Depthwise && self.geo.strides == [1, 1] && ow == w && w <= FLAT_WIDTH
        {
            return self.run_flat::<FUSED, B>(x, out);
        }
        let [kh, kw] = self.geo.kernel_hw;
        let [sh, sw] = self.geo.strides;
        let [pt, pl] = self.geo.pad_before;
        // The padded plane, split into sh × sw phase planes: padded
        // (y, j) lives in phase (y % sh, j % sw) at row y / sh, column j / sw.
        // Every tap of a run of output rows then reads one contiguous run
        // of a phase plane, whatever the stride.
        let (phase_h, phase_w) = (
            (h + pt + self.geo.pad_after[0]).div_ceil(sh),
            (w + pl + self.geo.pad_after[1]).div_ceil(sw),
        );
        let phase_len = phase_h * phase_w;
        let (padding, max) = match self.fold {
            Fold::Depthwise => (0.0, false),
            Fold::Max => (f32::MIN, true),
        };
        // The fold runs whole blocks, reading up to a block past the
        // last phase plane: the outputs it computes past a row are never
        // copied out.
        let mut buf = vec![padding; sh * sw * phase_len + B];
        let mut padded_row = vec![padding; phase_w * sw];
        let group_rows = (GROUP_ELEMENTS / phase_w).clamp(1, oh);
        let mut acc = vec![0f32; ((group_rows - 1) * phase_w + ow).next_multiple_of(B)];
        let [low, high] = self.clamp.map(f32::from_bits);
        let clamped = low > f32::NEG_INFINITY || high < f32::INFINITY;
        let taps = kh * kw;
        let kernel = self.kernel.try_as_plain_ram()?;
        let kernel = kernel.as_slice::<f32>()?;
        let bias = self.bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let mut offsets = vec![0usize; taps];
        let planes = x.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow));
        for (plane, (input, out)) in planes.enumerate() {
            let ch = plane % c;
            // Only the interior is written, so the padding border of the
            // first plane serves every later one.
            for (y, row) in input.chunks_exact(w).enumerate() {
                let (py, qy) = ((y + pt) % sh, (y + pt) / sh);
                let phase_row = |px: usize| (py * sw + px) * phase_len + qy * phase_w;
                if sw == 1 {
                    buf[phase_row(0) + pl..][..w].copy_from_slice(row);
                    continue;
                }
                if sw == 2 {
                    // Stride 2 is most of them: a split into pairs
                    // vectorises. Input column x is padded column pl + x,
                    // in phase (pl + x) % 2 at (pl + x) / 2; split straight
                    // from the input row, as a copy into a padded row first
                    // took half of MobileNetV2's stride-2 layers' time.
                    let (even, odd) = buf[phase_row(0)..].split_at_mut(phase_len);
                    let (first, second) = if pl % 2 == 0 {
                        (even, odd)
                    } else {
                        (odd, even)
                    };
                    let first = &mut first[pl / 2..phase_w];
                    let second = &mut second[pl.div_ceil(2)..phase_w];
                    let phases = first.iter_mut().zip(second.iter_mut());
                    for ((a, b), pair) in phases.zip(row.chunks_exact(2)) {
                        (*a, *b) = (pair[0], pair[1]);
                    }
                    if w % 2 == 1 {
                        first[w / 2] = row[w - 1];
                    }
                    continue;
                }
                padded_row[pl..pl + w].copy_from_slice(row);
                for (q, columns) in padded_row.chunks_exact(sw).enumerate() {
                    for (px, &v) in columns.iter().enumerate() {
                        buf[phase_row(px) + q] = v;
                    }
                }
            }
            let weights = &kernel[ch * taps..][..taps];
            let mut oy = 0;
            while oy < oh {
                let rows = group_rows.min(oh - oy);
                let len = (rows - 1) * phase_w + ow;
                for (t, offset) in offsets.iter_mut().enumerate() {
                    let (ky, kx) = (t / kw, t % kw);
                    *offset =
                        ((ky % sh) * sw + kx % sw) * phase_len + (oy + ky / sh) * phase_w + kx / sw;
                }
                // Whole blocks: on 7×7 outputs (a run of 55) a scalar fold
                // of the part past the last block took most of the time.
                let acc = &mut acc[..len.next_multiple_of(B)];
                fold_taps::<FUSED, B>(acc, &buf, &offsets, weights, bias[ch], max);
                if clamped {
                    // Two selects, not an if-else chain: they vectorise,
                    // where branches on the sign of each output mispredict.
                    for a in acc.iter_mut() {
                        let v = if *a < low { low } else { *a };
                        *a = if v > high { high } else { v };
                    }
                }
                for r in 0..rows {
                    out[(oy + r) * ow..][..ow].copy_from_slice(&acc[r * phase_w..][..ow]);
                }
                oy += rows;
            }
        }
        Ok(())
    }
}

impl DirectWindow {
    /// A stride-1 depthwise convolution whose output rows are as wide as
    /// its input rows ("same" padding across). Each plane is copied whole
    /// into a buffer with the padding rows above and below it, after which
    /// every tap reads one contiguous run of the buffer for the whole plane
    /// and the fold writes the output plane in place. A tap that falls off
    /// the left or right edge reads the neighbouring row instead, and is
    /// masked out per column. Unlike the padded-plane path, nothing is
    /// copied row by row: on a spectrogram's 5-wide planes those copies
    /// took longer than the arithmetic.
    #[inline(always)]
    fn run_flat<const FUSED: bool, const B: usize>(
        &self,
        x: &[f32],
        out: &mut [f32],
    ) -> TractResult<()> {
        let [_, c, h, w] = self.geo.input;
        let [oh, ow] = self.geo.output;
        let [kh, kw] = self.geo.kernel_hw;
        let [pt, pl] = self.geo.pad_before;
        let len = oh * ow;
        // Output i, tap (ky, kx) reads buf[i + ky * w + kx]: the plane
        // starts pt rows and pl floats in. Both buf and the masks run past
        // the plane to the end of its last block.
        let blocks_len = len.div_ceil(B) * B;
        let mut buf = vec![0f32; pl + (oh + kh - 1) * w + kw + B];
        let offsets: Vec<usize> = (0..kh * kw).map(|t| t / kw * w + t % kw).collect();
        // masks[kx * blocks_len + i]: whether tap column kx of output i is
        // inside the input row.
        // Column by column, not `i % w` per output: a division per value
        // cost KWS's layers about 1 µs each.
        let mut masks = vec![false; kw * blocks_len];
        for (kx, masks) in masks.chunks_exact_mut(blocks_len).enumerate() {
            for row in masks.chunks_mut(w) {
                for (column, m) in row.iter_mut().enumerate() {
                    *m = (column + kx).wrapping_sub(pl) < w;
                }
            }
        }
        let kernel = self.kernel.try_as_plain_ram()?;
        let kernel = kernel.as_slice::<f32>()?;
        let bias = self.bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let taps = kh * kw;
        let planes = x.chunks_exact(h * w).zip(out.chunks_exact_mut(len));
        for (plane, (input, out)) in planes.enumerate() {
            let ch = plane % c;
            buf[pl + pt * w..][..h * w].copy_from_slice(input);
            let weights = &kernel[ch * taps..][..taps];
            let fold = Masked {
                buf: &buf,
                offsets: &offsets,
                weights,
                masks: &masks,
                kw,
                init: bias[ch],
                clamp: self.clamp.map(f32::from_bits),
            };
            fold.run::<FUSED, B>(out);
        }
        Ok(())
    }
}

/// One plane of [`DirectWindow::run_flat`]'s fold: `out[i] = clamp(init +
/// Σ_kx [masks[kx * n + i]] Σ_ky weights[t] * buf[offsets[t] + i])` with
/// `t = ky * kw + kx`, kernel column by column, where `n` is `out.len()`
/// rounded up to a whole block.
struct Masked<'a> {
    buf: &'a [f32],
    offsets: &'a [usize],
    weights: &'a [f32],
    masks: &'a [bool],
    /// Kernel columns: `masks` holds one run per column.
    kw: usize,
    init: f32,
    clamp: [f32; 2],
}

impl Masked<'_> {
    /// `FUSED` as in [`DirectWindow::run_with`].
    #[inline(always)]
    fn run<const FUSED: bool, const B: usize>(&self, out: &mut [f32]) {
        let full = out.len() / B;
        let mut blocks = out.chunks_exact_mut(B);
        for (b, out) in (&mut blocks).enumerate() {
            out.copy_from_slice(&self.block::<FUSED, B>(b));
        }
        // The last, partial block is folded whole (buffer and masks run a
        // block past the plane) and only its part inside the plane kept:
        // cheaper than a scalar fold of the rest on small planes.
        let rest = blocks.into_remainder();
        if !rest.is_empty() {
            let len = rest.len();
            rest.copy_from_slice(&self.block::<FUSED, B>(full)[..len]);
        }
    }

    /// Outputs `b * B..(b + 1) * B`: a block of `B` (see [`BLOCK`]).
    #[inline(always)]
    fn block<const FUSED: bool, const B: usize>(&self, b: usize) -> [f32; B] {
        let [low, high] = self.clamp;
        let stride = self.masks.len() / self.kw;
        let kh = self.offsets.len() / self.kw;
        let mut sums = [self.init; B];
        // Column by column of the kernel: the taps of one column share
        // their mask, so it is applied once to their partial sum rather
        // than to every value (a division and a mask load per tap took
        // most of this function's time under `perf`). A select, not a
        // product with 0: an infinite neighbour's partial sum then reads
        // as the zero padding it stands for.
        for kx in 0..self.kw {
            let mut part = [0f32; B];
            for ky in 0..kh {
                let t = ky * self.kw + kx;
                let start = self.offsets[t] + b * B;
                let src: &[f32; B] = self.buf[start..start + B].try_into().expect("a block long");
                let weight = self.weights[t];
                for (p, &v) in part.iter_mut().zip(src) {
                    *p = if FUSED {
                        fold::<FMA>(*p, weight, v)
                    } else {
                        fold::<MUL_ADD>(*p, weight, v)
                    };
                }
            }
            let mask: &[bool; B] = self.masks[kx * stride + b * B..][..B]
                .try_into()
                .expect("a block long");
            for ((sum, &p), &m) in sums.iter_mut().zip(&part).zip(mask) {
                *sum += if m { p } else { 0.0 };
            }
        }
        for s in &mut sums {
            let v = if *s < low { low } else { *s };
            *s = if v > high { high } else { v };
        }
        sums
    }
}

/// Outputs one block of the accumulator holds in vector registers while
/// every tap is added to it (the const parameter `B` of the folds):
/// loads and stores of the accumulator happen once per block instead of
/// once per tap, and each register is an independent chain of adds. Four
/// AVX2 registers, and the portable build.
const BLOCK: usize = 32;

/// [`BLOCK`] on AVX-512: eight registers, the chains it takes to keep both
/// FMA units busy through a multiply-add's four cycles of latency. With
/// two (32 outputs) the folds waited on their own adds; KWS went from
/// 75–76 to 72–74 µs. Large planes did not move: reading their input
/// bounds them (BENCHMARKS.md).
#[cfg(target_arch = "x86_64")]
const BLOCK_AVX512: usize = 128;

/// The widest vectors, with fused multiply-adds, that this CPU has: which
/// build of [`DirectWindow::run_with`] runs.
enum Vectors {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Vectors {
    fn of_this_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("fma") {
                return Vectors::Avx512;
            }
            if has!("avx2") && has!("fma") {
                return Vectors::Avx2;
            }
        }
        Vectors::Portable
    }
}

/// `acc[i] = init ⊕ weights[t] * buf[offsets[t] + i]` over the taps `t`
/// in kernel order, where ⊕ is max (`max`) or +; `FUSED` as in
/// [`DirectWindow::run_with`].
#[inline(always)]
fn fold_taps<const FUSED: bool, const B: usize>(
    acc: &mut [f32],
    buf: &[f32],
    offsets: &[usize],
    weights: &[f32],
    init: f32,
    max: bool,
) {
    match (max, FUSED) {
        (true, _) => fold_blocks::<MAX, B>(acc, buf, offsets, weights, init),
        (false, true) => fold_blocks::<FMA, B>(acc, buf, offsets, weights, init),
        (false, false) => fold_blocks::<MUL_ADD, B>(acc, buf, offsets, weights, init),
    }
}

/// [`fold`]'s folds: the larger value (tract's own comparison, so NaNs and
/// ties pick the same values), a fused multiply-add (which the caller's CPU
/// must have in hardware: in software it is a library call per tap), and a
/// multiply then an add.
const MAX: u8 = 0;
const FMA: u8 = 1;
const MUL_ADD: u8 = 2;

/// One tap folded into `a`: `v` weighted by `w` for the sums. A function
/// with a constant `OP` rather than a closure, and inlined always, so that
/// it is compiled with the vector features of the kernel it lands in.
#[inline(always)]
fn fold<const OP: u8>(a: f32, w: f32, v: f32) -> f32 {
    match OP {
        MAX => {
            if a < v {
                v
            } else {
                a
            }
        }
        FMA => w.mul_add(v, a),
        _ => a + w * v,
    }
}

#[inline(always)]
fn fold_blocks<const OP: u8, const B: usize>(
    acc: &mut [f32],
    buf: &[f32],
    offsets: &[usize],
    weights: &[f32],
    init: f32,
) {
    let done = acc.len() / B * B;
    for (b, out) in acc.chunks_exact_mut(B).enumerate() {
        let mut sums = [init; B];
        for (&offset, &weight) in offsets.iter().zip(weights) {
            let start = offset + b * B;
            let src: &[f32; B] = buf[start..start + B].try_into().expect("a block long");
            for (sum, &v) in sums.iter_mut().zip(src) {
                *sum = fold::<OP>(*sum, weight, v);
            }
        }
        out.copy_from_slice(&sums);
    }
    for (i, out) in acc.iter_mut().enumerate().skip(done) {
        let mut sum = init;
        for (&offset, &weight) in offsets.iter().zip(weights) {
            sum = fold::<OP>(sum, weight, buf[offset + i]);
        }
        *out = sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{run, values};
    use crate::model::rewrite::direct_kernels;
    use tract_onnx::tract_core::ops::binary::TypedBinOp;
    use tract_onnx::tract_core::ops::cnn::{KernelFormat, PaddingSpec};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    /// A 2-D window over NCHW data (CHW when `shape` has three axes) that
    /// keeps the channel count.
    fn window_spec(
        shape: &[usize],
        kernel: [usize; 2],
        strides: [usize; 2],
        padding: PaddingSpec,
    ) -> PoolSpec {
        let channels = shape[shape.len() - 3];
        PoolSpec {
            data_format: if shape.len() == 4 {
                DataFormat::NCHW
            } else {
                DataFormat::CHW
            },
            kernel_shape: tvec!(kernel[0], kernel[1]),
            padding,
            dilations: None,
            strides: Some(tvec!(strides[0], strides[1])),
            input_channels: channels,
            output_channels: channels,
        }
    }

    fn pool_model(shape: &[usize], spec: PoolSpec) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(shape)).unwrap();
        let y = model
            .wire_node("pool", MaxPool::new(spec, None), &[x])
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        model
    }

    /// Max pools of every padding kind (ceil mode included), kernel and
    /// stride, with and without a batch axis, on inputs full of ties and
    /// negatives, give exactly tract's own values.
    #[test]
    fn direct_max_pool_matches_tract_bit_for_bit() {
        let paddings = [
            PaddingSpec::Valid,
            PaddingSpec::SameUpper,
            PaddingSpec::SameLower,
            PaddingSpec::Explicit(tvec!(1, 0), tvec!(1, 2)),
            PaddingSpec::ExplicitOnnxPool(tvec!(0, 0), tvec!(0, 0), true),
            PaddingSpec::ExplicitOnnxPool(tvec!(1, 1), tvec!(1, 1), false),
        ];
        let mut checked = 0;
        for shape in [&[2, 3, 13, 10][..], &[4, 25, 5], &[1, 2, 111, 111]] {
            for (kernel, strides) in [
                ([3, 3], [2, 2]),
                ([2, 2], [2, 2]),
                ([3, 2], [1, 2]),
                ([2, 3], [2, 1]),
                ([3, 3], [1, 1]),
            ] {
                for padding in &paddings {
                    let spec = window_spec(shape, kernel, strides, padding.clone());
                    let len = shape.iter().product();
                    let data: Vec<f32> = (0..len)
                        .map(|i| ((i * 7919 % 23) as f32 - 11.0) * 0.5)
                        .collect();
                    let x = tensor1(&data).into_shape(shape).unwrap();
                    let untouched = pool_model(shape, spec.clone());
                    let mut direct = untouched.clone();
                    assert_eq!(direct_kernels(&mut direct, 1).unwrap(), 1, "{spec:?}");
                    assert!(direct.nodes().iter().any(|n| n.op_is::<DirectWindow>()));
                    assert_eq!(run(untouched, &x), run(direct, &x), "{shape:?} {spec:?}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 90);
    }

    fn conv_model(
        shape: &[usize],
        kernel: [usize; 2],
        strides: [usize; 2],
        padding: PaddingSpec,
        bias: Tensor,
    ) -> TypedModel {
        let c = shape[shape.len() - 3];
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(shape)).unwrap();
        let k = tensor1(&values(c * kernel[0] * kernel[1], 3))
            .into_shape(&[c, 1, kernel[0], kernel[1]])
            .unwrap();
        let k = model.add_const("k", k).unwrap();
        let b = model.add_const("b", bias).unwrap();
        let conv = Conv {
            pool_spec: window_spec(shape, kernel, strides, padding),
            kernel_fmt: KernelFormat::OIHW,
            group: c,
            q_params: None,
        };
        let y = model.wire_node("conv", conv, &[x, k, b]).unwrap();
        model.select_output_outlets(&y).unwrap();
        model
    }

    /// Every padding kind, stride and kernel shape, on planes as wide as
    /// MobileNet's and as narrow as a spectrogram's, with and without a
    /// batch axis, with per-channel and scalar bias, gives tract's own
    /// depthwise results.
    #[test]
    fn direct_depthwise_matches_tract() {
        let paddings = [
            PaddingSpec::Valid,
            PaddingSpec::SameUpper,
            PaddingSpec::SameLower,
            PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1)),
            PaddingSpec::Explicit(tvec!(0, 2), tvec!(1, 0)),
        ];
        let mut checked = 0;
        for shape in [&[1, 4, 25, 5][..], &[2, 3, 13, 10], &[2, 70, 71]] {
            for (kernel, strides) in [
                ([3, 3], [1, 1]),
                ([3, 3], [2, 2]),
                ([5, 5], [2, 2]),
                ([3, 1], [1, 1]),
                ([1, 3], [2, 1]),
                ([3, 3], [1, 2]),
                ([3, 3], [3, 3]),
            ] {
                for padding in &paddings {
                    for bias in [
                        tensor1(&values(shape[shape.len() - 3], 5)),
                        tensor0(0.25f32),
                    ] {
                        let len = shape.iter().product();
                        let x = tensor1(&values(len, 1)).into_shape(shape).unwrap();
                        let untouched = conv_model(shape, kernel, strides, padding.clone(), bias);
                        let mut direct = untouched.clone();
                        assert_eq!(direct_kernels(&mut direct, 1).unwrap(), 1);
                        assert!(direct.nodes().iter().any(|n| n.op_is::<DirectWindow>()));
                        let (want, got) = (run(untouched, &x), run(direct, &x));
                        assert_eq!(
                            want.len(),
                            got.len(),
                            "{shape:?} {kernel:?} {strides:?} {padding:?}"
                        );
                        for (a, b) in want.iter().zip(&got) {
                            assert!(
                                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                                "{a} vs {b}: {shape:?} {kernel:?} {strides:?} {padding:?}"
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 210);
        // An infinite value at the end of a row stays out of the next
        // row's first outputs, whose left taps read it as padding.
        let shape = [1, 2, 4, 5];
        let mut x = values(40, 1);
        x[4] = f32::INFINITY;
        let x = tensor1(&x).into_shape(&shape).unwrap();
        let same = PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1));
        let untouched = conv_model(&shape, [3, 3], [1, 1], same, tensor0(0.25f32));
        let mut direct = untouched.clone();
        assert_eq!(direct_kernels(&mut direct, 1).unwrap(), 1);
        let (want, got) = (run(untouched, &x), run(direct, &x));
        assert_eq!(want.iter().filter(|v| v.is_finite()).count(), 36);
        for (a, b) in want.iter().zip(&got) {
            assert!(
                a == b || (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "{a} vs {b}"
            );
        }
    }

    /// A Relu or Clip after a depthwise convolution folds into it, giving
    /// tract's values; one whose input is also read elsewhere does not.
    #[test]
    fn relu_and_clip_fold_into_the_convolution() {
        use tract_onnx::tract_core::ops::math::{max, min};
        for strides in [[1, 1], [2, 2]] {
            for (bounds, also_output) in [
                (&[0f32][..], false),
                (&[0.0, 0.5], false),
                (&[-0.25, 6.0], true),
            ] {
                let shape = [1, 4, 25, 5];
                let padding = PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1));
                let mut model = conv_model(&shape, [3, 3], strides, padding, tensor0(0.1f32));
                let conv = model.output_outlets().unwrap()[0];
                let mut y = conv;
                for (i, &b) in bounds.iter().enumerate() {
                    let b = model
                        .add_const(format!("b{i}"), tensor4(&[[[[b]]]]))
                        .unwrap();
                    let op = if i == 0 { max() } else { min() };
                    y = model.wire_node(format!("clip{i}"), op, &[y, b]).unwrap()[0];
                }
                let outputs = if also_output { vec![y, conv] } else { vec![y] };
                model.select_output_outlets(&outputs).unwrap();
                let len = shape.iter().product();
                let x = tensor1(&values(len, 1)).into_shape(&shape).unwrap();
                let mut direct = model.clone();
                assert_eq!(direct_kernels(&mut direct, 1).unwrap(), 1);
                let bin_ops = direct
                    .nodes()
                    .iter()
                    .filter(|n| n.op_is::<TypedBinOp>())
                    .count();
                assert_eq!(
                    bin_ops,
                    if also_output { bounds.len() } else { 0 },
                    "{bounds:?}"
                );
                let (want, got) = (run(model, &x), run(direct, &x));
                assert!(want.iter().any(|&v| v == bounds[0]), "the bound is reached");
                for (a, b) in want.iter().zip(&got) {
                    assert!(
                        (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                        "{a} vs {b}: {bounds:?}"
                    );
                }
            }
        }
    }

    /// A grouped convolution that is not depthwise, a 1-D depthwise one, a
    /// dilated pool or one that reports the index of its maximum is left to
    /// tract.
    #[test]
    fn other_convolutions_are_left_to_tract() {
        let mut model = conv_model(
            &[1, 4, 9, 9],
            [3, 3],
            [1, 1],
            PaddingSpec::Valid,
            tensor0(0f32),
        );
        let node = model.nodes().iter().find(|n| n.op_is::<Conv>()).unwrap().id;
        let conv = model.node_mut(node).op_as_mut::<Conv>().unwrap();
        conv.pool_spec.output_channels = 8;
        conv.group = 2;
        assert_eq!(direct_kernels(&mut model, 1).unwrap(), 0);

        // A 1-D depthwise convolution, as the MobileNet-style 1-D CNN has.
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 4, 20])).unwrap();
        let k = model
            .add_const("k", Tensor::zero::<f32>(&[4, 1, 3]).unwrap())
            .unwrap();
        let b = model.add_const("b", tensor0(0f32)).unwrap();
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(3),
                padding: PaddingSpec::Valid,
                dilations: None,
                strides: None,
                input_channels: 4,
                output_channels: 4,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 4,
            q_params: None,
        };
        let y = model.wire_node("conv", conv, &[x, k, b]).unwrap();
        model.select_output_outlets(&y).unwrap();
        assert_eq!(direct_kernels(&mut model, 1).unwrap(), 0);

        let spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec!(3, 3),
            padding: PaddingSpec::Valid,
            dilations: Some(tvec!(2, 1)),
            strides: None,
            input_channels: 2,
            output_channels: 2,
        };
        let mut model = pool_model(&[1, 2, 9, 9], spec.clone());
        assert_eq!(direct_kernels(&mut model, 1).unwrap(), 0);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 2, 9, 9])).unwrap();
        let spec = PoolSpec {
            dilations: None,
            ..spec
        };
        let y = model
            .wire_node("pool", MaxPool::new(spec, Some(DatumType::I64)), &[x])
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        assert_eq!(direct_kernels(&mut model, 1).unwrap(), 0);
    }
}
