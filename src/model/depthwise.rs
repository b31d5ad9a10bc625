//! A direct depthwise 2-D convolution that the loader swaps in for tract's
//! on x86_64, between declutter and optimize.
//!
//! Why: `profile --ops` next to ONNX Runtime's profiler
//! (`benches/compare_onnxruntime.py --layers`) put tract's `DepthWiseConv`
//! at 2.7–5.7× ORT on MobileNetV2's layers and 7× on the keyword-spotting
//! CNN's 25×5 planes: tract walks each plane in zones and its stride-2 path
//! is scalar. Here each channel plane is copied once into a zero-padded
//! buffer split into `stride` column phases, after which every kernel tap is
//! one multiply-add over a contiguous run of the buffer: a stride-1 tap runs
//! over many output rows at once, a stride-2 tap over one output row. Those
//! loops are plain Rust that the compiler vectorises (AVX2 when the CPU has
//! it). Only x86_64 gets it, because that is where it was measured faster;
//! ARM keeps tract's NEON kernels.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Output elements one stride-1 pass accumulates: enough rows to keep the
/// vector loops long, few enough to stay in L1 with the taps it reads.
const GROUP_ELEMENTS: usize = 2048;

/// A depthwise convolution (one input and one output channel per group) of
/// f32 NCHW data with constant weights, on a concrete input shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DirectDepthwise {
    /// `[C, kh * kw]`, one row of taps per channel.
    kernel: Arc<Tensor>,
    /// `[C]`.
    bias: Arc<Tensor>,
    /// `[N, C, H, W]`; N is 1 when the data has no batch axis.
    input: [usize; 4],
    /// Whether the data has an N axis (NCHW) or not (CHW, as tract's
    /// declutter leaves a batch of one).
    batch_axis: bool,
    /// `[OH, OW]`.
    output: [usize; 2],
    kernel_hw: [usize; 2],
    strides: [usize; 2],
    pad_before: [usize; 2],
    pad_after: [usize; 2],
}

impl Op for DirectDepthwise {
    fn name(&self) -> StaticName {
        "DirectDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "input: {:?} kernel: {:?} strides: {:?} pad: {:?}/{:?}",
            self.input, self.kernel_hw, self.strides, self.pad_before, self.pad_after
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DirectDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let x = x.to_plain_array_view::<f32>()?;
        let x = x
            .as_slice()
            .context("DirectDepthwise input is not contiguous")?;
        let mut out = Tensor::zero::<f32>(&self.output_shape())?;
        self.run(x, out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?)?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for DirectDepthwise {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(self.output_shape())))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let [n, c, _, _] = self.input;
        let macs = n * c * self.output.iter().product::<usize>() * self.kernel.len() / c;
        Ok(tvec!((Cost::FMA(f32::datum_type()), macs.into())))
    }

    as_op!();
}

impl DirectDepthwise {
    fn output_shape(&self) -> TVec<usize> {
        let [n, c, _, _] = self.input;
        let [oh, ow] = self.output;
        if self.batch_axis {
            tvec!(n, c, oh, ow)
        } else {
            tvec!(c, oh, ow)
        }
    }

    /// The op for `conv` on an input of `shape`, or `None` when it is not a
    /// constant-weight f32 NCHW depthwise 2-D convolution without dilation.
    fn for_conv(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Self>> {
        let spec = &conv.pool_spec;
        let x = model.outlet_fact(node.inputs[0])?;
        let Some(shape) = x.shape.as_concrete() else {
            return Ok(None);
        };
        let (Some(kernel), Some(bias)) = (
            model.outlet_fact(node.inputs[1])?.konst.clone(),
            model.outlet_fact(node.inputs[2])?.konst.clone(),
        ) else {
            return Ok(None);
        };
        let channels = spec.input_channels;
        if conv.q_params.is_some()
            || x.datum_type != f32::datum_type()
            || kernel.datum_type() != f32::datum_type()
            || bias.datum_type() != f32::datum_type()
            || !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
            || conv.kernel_fmt != KernelFormat::OIHW
            || spec.rank() != 2
            || shape.len() != if spec.data_format.has_n() { 4 } else { 3 }
            || conv.group != channels
            || spec.output_channels != channels
            || spec
                .dilations
                .as_ref()
                .is_some_and(|d| d.iter().any(|&d| d != 1))
            || kernel.shape() != [channels, 1, spec.kernel_shape[0], spec.kernel_shape[1]]
            || !(bias.len() == channels || bias.len() == 1)
        {
            return Ok(None);
        }
        let shape_dims: TVec<TDim> = shape.iter().map(|&d| d.into()).collect();
        let geo = spec.compute_geo(&shape_dims)?;
        let geo = geo.to_concrete(shape)?;
        let patch = &geo.patch;
        let two = |v: &[usize]| [v[0], v[1]];
        let taps = spec.kernel_shape[0] * spec.kernel_shape[1];
        let bias = if bias.len() == channels {
            (*bias).clone().into_shape(&[channels])?
        } else {
            let b = bias.cast_to_scalar::<f32>()?;
            tensor1(&vec![b; channels])
        };
        Ok(Some(DirectDepthwise {
            kernel: (*kernel)
                .clone()
                .into_shape(&[channels, taps])?
                .into_arc_tensor(),
            bias: bias.into_arc_tensor(),
            input: match shape {
                &[n, c, h, w] => [n, c, h, w],
                &[c, h, w] => [1, c, h, w],
                _ => return Ok(None),
            },
            batch_axis: shape.len() == 4,
            output: two(&patch.output_shape),
            kernel_hw: two(&spec.kernel_shape),
            strides: two(&patch.spec.strides),
            pad_before: two(&patch.pad_before),
            pad_after: two(&patch.pad_after),
        }))
    }

    fn run(&self, x: &[f32], out: &mut [f32]) -> TractResult<()> {
        let [_, c, h, w] = self.input;
        let [oh, ow] = self.output;
        let [kh, kw] = self.kernel_hw;
        let [sh, sw] = self.strides;
        let [pt, pl] = self.pad_before;
        // The zero-padded plane, split into sh × sw phase planes: padded
        // (y, j) lives in phase (y % sh, j % sw) at row y / sh, column j / sw.
        // Every tap of a run of output rows then reads one contiguous run
        // of a phase plane, whatever the stride.
        let (phase_h, phase_w) = (
            (h + pt + self.pad_after[0]).div_ceil(sh),
            (w + pl + self.pad_after[1]).div_ceil(sw),
        );
        let phase_len = phase_h * phase_w;
        let mut buf = vec![0f32; sh * sw * phase_len];
        let mut padded_row = vec![0f32; phase_w * sw];
        let group_rows = (GROUP_ELEMENTS / phase_w).clamp(1, oh);
        let mut acc = vec![0f32; (group_rows - 1) * phase_w + ow];
        let kernel = self.kernel.try_as_plain_ram()?;
        let kernel = kernel.as_slice::<f32>()?;
        let bias = self.bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let taps = kh * kw;
        let mut offsets = vec![0usize; taps];
        let planes = x.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow));
        for (plane, (input, out)) in planes.enumerate() {
            let ch = plane % c;
            // Only the interior is written, so the zero border of the
            // first plane serves every later one.
            for (y, row) in input.chunks_exact(w).enumerate() {
                let (py, qy) = ((y + pt) % sh, (y + pt) / sh);
                let phase_row = |px: usize| (py * sw + px) * phase_len + qy * phase_w;
                if sw == 1 {
                    buf[phase_row(0) + pl..][..w].copy_from_slice(row);
                    continue;
                }
                padded_row[pl..pl + w].copy_from_slice(row);
                if sw == 2 {
                    // Stride 2 is most of them: a split into pairs vectorises.
                    let (even, odd) = buf[phase_row(0)..].split_at_mut(phase_len);
                    let phases = even[..phase_w].iter_mut().zip(&mut odd[..phase_w]);
                    for ((e, o), pair) in phases.zip(padded_row.chunks_exact(2)) {
                        (*e, *o) = (pair[0], pair[1]);
                    }
                    continue;
                }
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
                let acc = &mut acc[..len];
                accumulate_taps(acc, &buf, &offsets, weights, bias[ch]);
                for r in 0..rows {
                    out[(oy + r) * ow..][..ow].copy_from_slice(&acc[r * phase_w..][..ow]);
                }
                oy += rows;
            }
        }
        Ok(())
    }
}

/// Outputs one block of the accumulator holds in vector registers while
/// every tap is added to it: loads and stores of the accumulator happen once
/// per block instead of once per tap.
const BLOCK: usize = 16;

/// `acc[i] = bias + Σ weights[t] * buf[offsets[t] + i]`, with the widest
/// vectors this CPU has.
fn accumulate_taps(acc: &mut [f32], buf: &[f32], offsets: &[usize], weights: &[f32], bias: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU was just checked for AVX2.
        unsafe { accumulate_taps_avx2(acc, buf, offsets, weights, bias) };
        return;
    }
    accumulate_taps_portable(acc, buf, offsets, weights, bias);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn accumulate_taps_avx2(
    acc: &mut [f32],
    buf: &[f32],
    offsets: &[usize],
    weights: &[f32],
    bias: f32,
) {
    accumulate_taps_portable(acc, buf, offsets, weights, bias);
}

/// Separate multiply and add, not `mul_add`: the same rounding with and
/// without FMA hardware, and taps summed in kernel order after the bias.
#[inline(always)]
fn accumulate_taps_portable(
    acc: &mut [f32],
    buf: &[f32],
    offsets: &[usize],
    weights: &[f32],
    bias: f32,
) {
    let done = acc.len() / BLOCK * BLOCK;
    for (b, out) in acc.chunks_exact_mut(BLOCK).enumerate() {
        let mut sums = [bias; BLOCK];
        for (&offset, &weight) in offsets.iter().zip(weights) {
            let start = offset + b * BLOCK;
            let src: &[f32; BLOCK] = buf[start..start + BLOCK].try_into().expect("BLOCK long");
            for (sum, &v) in sums.iter_mut().zip(src) {
                *sum += weight * v;
            }
        }
        out.copy_from_slice(&sums);
    }
    for (i, out) in acc.iter_mut().enumerate().skip(done) {
        let mut sum = bias;
        for (&offset, &weight) in offsets.iter().zip(weights) {
            sum += weight * buf[offset + i];
        }
        *out = sum;
    }
}

/// Swaps every depthwise convolution [`DirectDepthwise`] runs into it, and
/// returns how many.
pub(crate) fn direct_depthwise(model: &mut TypedModel) -> TractResult<usize> {
    if !cfg!(target_arch = "x86_64") {
        return Ok(0);
    }
    let mut swapped = 0;
    for id in model.eval_order()? {
        let node = &model.nodes()[id];
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let Some(op) = DirectDepthwise::for_conv(model, node, conv)? else {
            continue;
        };
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, node.inputs[0])?;
        let y = patch.wire_node(&node.name, op, &[x])?;
        patch.shunt_outside(model, id.into(), y[0])?;
        patch.apply(model)?;
        swapped += 1;
    }
    if swapped > 0 {
        *model = std::mem::take(model).into_compact()?;
    }
    Ok(swapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i + seed) * 7919 % 101) as f32 - 50.0) / 25.0)
            .collect()
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
            pool_spec: PoolSpec {
                data_format: if shape.len() == 4 {
                    DataFormat::NCHW
                } else {
                    DataFormat::CHW
                },
                kernel_shape: tvec!(kernel[0], kernel[1]),
                padding,
                dilations: None,
                strides: Some(tvec!(strides[0], strides[1])),
                input_channels: c,
                output_channels: c,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: c,
            q_params: None,
        };
        let y = model.wire_node("conv", conv, &[x, k, b]).unwrap();
        model.select_output_outlets(&y).unwrap();
        model
    }

    fn run(model: TypedModel, x: &Tensor) -> Vec<f32> {
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let y = plan.run(tvec!(x.clone().into_tvalue())).unwrap().remove(0);
        y.to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
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
                        assert_eq!(direct_depthwise(&mut direct).unwrap(), 1);
                        assert!(direct.nodes().iter().any(|n| n.op_is::<DirectDepthwise>()));
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
    }

    /// A grouped convolution that is not depthwise, or an ordinary one, is
    /// left to tract.
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
        assert_eq!(direct_depthwise(&mut model).unwrap(), 0);
    }
}
