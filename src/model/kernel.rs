//! What the loader's own kernels (`direct.rs`, `gemm_conv.rs`) share: where
//! a 2-D window lies on the data, a convolution's constants, and running
//! on contiguous f32 data.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Where a 2-D window lies on f32 NCHW (or CHW) data of a concrete shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Geometry {
    /// `[N, C, H, W]`; N is 1 when the data has no batch axis.
    pub(crate) input: [usize; 4],
    /// Whether the data has an N axis (NCHW) or not (CHW, as tract's
    /// declutter leaves a batch of one).
    pub(crate) batch_axis: bool,
    /// `[OH, OW]`.
    pub(crate) output: [usize; 2],
    pub(crate) kernel_hw: [usize; 2],
    pub(crate) strides: [usize; 2],
    pub(crate) pad_before: [usize; 2],
    /// At least tract's padding after, and more where ceil mode lets the
    /// last window hang past it.
    pub(crate) pad_after: [usize; 2],
}

/// Bounds that clamp nothing.
pub(crate) const UNCLAMPED: [u32; 2] = [f32::NEG_INFINITY.to_bits(), f32::INFINITY.to_bits()];

impl std::fmt::Display for Geometry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "input: {:?} kernel: {:?} strides: {:?} pad: {:?}/{:?}",
            self.input, self.kernel_hw, self.strides, self.pad_before, self.pad_after
        )
    }
}

impl Geometry {
    /// The windows `spec` lays on data of fact `x`, or `None` when the data
    /// is not f32 NCHW/CHW of a concrete shape, the window not 2-D, or
    /// dilated.
    pub(crate) fn of(spec: &PoolSpec, x: &TypedFact) -> TractResult<Option<Self>> {
        let Some(shape) = x.shape.as_concrete() else {
            return Ok(None);
        };
        if x.datum_type != f32::datum_type()
            || !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
            || spec.rank() != 2
            || shape.len() != if spec.data_format.has_n() { 4 } else { 3 }
            || spec
                .dilations
                .as_ref()
                .is_some_and(|d| d.iter().any(|&d| d != 1))
        {
            return Ok(None);
        }
        let shape_dims: TVec<TDim> = shape.iter().map(|&d| d.into()).collect();
        let geo = spec.compute_geo(&shape_dims)?;
        let geo = geo.to_concrete(shape)?;
        let patch = &geo.patch;
        let two = |v: &[usize]| [v[0], v[1]];
        Ok(Some(Geometry {
            input: match *shape {
                [n, c, h, w] => [n, c, h, w],
                [c, h, w] => [1, c, h, w],
                _ => return Ok(None),
            },
            batch_axis: shape.len() == 4,
            output: two(&patch.output_shape),
            kernel_hw: two(&spec.kernel_shape),
            strides: two(&patch.spec.strides),
            pad_before: two(&patch.pad_before),
            // Ceil mode lets the last window hang past the padding tract
            // reports; the buffer is padded to hold it.
            pad_after: std::array::from_fn(|i| {
                let reach =
                    (patch.output_shape[i] - 1) * patch.spec.strides[i] + spec.kernel_shape[i];
                let have = shape[shape.len() - 2 + i] + patch.pad_before[i];
                patch.pad_after[i].max(reach.saturating_sub(have))
            }),
        }))
    }

    /// The output's shape with `channels` channels.
    pub(crate) fn output_shape(&self, channels: usize) -> TVec<usize> {
        let [n, _, _, _] = self.input;
        let [oh, ow] = self.output;
        if self.batch_axis {
            tvec!(n, channels, oh, ow)
        } else {
            tvec!(channels, oh, ow)
        }
    }

    /// Output positions in one channel plane.
    pub(crate) fn outputs(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// Taps in one window.
    pub(crate) fn taps(&self) -> usize {
        self.kernel_hw[0] * self.kernel_hw[1]
    }
}

/// `conv`'s weights as `[Cout, Cin / group * kh * kw]` and its bias as
/// `[Cout]`, or `None` when it is not a 2-D f32 OIHW convolution with
/// constant weights and a constant bias of one value or one per channel.
pub(crate) fn conv_constants(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
) -> TractResult<Option<(Tensor, Tensor)>> {
    let spec = &conv.pool_spec;
    let (Some(kernel), Some(bias)) = (
        model.outlet_fact(node.inputs[1])?.konst.clone(),
        model.outlet_fact(node.inputs[2])?.konst.clone(),
    ) else {
        return Ok(None);
    };
    let (cin, cout, group) = (spec.input_channels, spec.output_channels, conv.group);
    // 1-D convolutions are tract's: the 1-D models run at or under ONNX
    // Runtime's time there (BENCHMARKS.md), and a 1-D depthwise layer once
    // failed tract's kernel shape check here.
    if spec.rank() != 2
        || cin == 0
        || cout == 0
        || group == 0
        || cin % group != 0
        || conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || kernel.datum_type() != f32::datum_type()
        || bias.datum_type() != f32::datum_type()
        || kernel.shape()
            != [
                cout,
                cin / group,
                spec.kernel_shape[0],
                spec.kernel_shape[1],
            ]
        || !(bias.len() == cout || bias.len() == 1)
    {
        return Ok(None);
    }
    let bias = if bias.len() == cout {
        (*bias).clone().into_shape(&[cout])?
    } else {
        tensor1(&vec![bias.cast_to_scalar::<f32>()?; cout])
    };
    let taps = spec.kernel_shape[0] * spec.kernel_shape[1];
    let kernel = (*kernel).clone().into_shape(&[cout, cin / group * taps])?;
    Ok(Some((kernel, bias)))
}

/// An op's evaluation: `run` from its inputs, f32 and contiguous, into a
/// new output of `shape`, which `run` must write whole.
pub(crate) fn eval_f32(
    inputs: TVec<TValue>,
    shape: &[usize],
    run: impl FnOnce(&[&[f32]], &mut [f32]) -> TractResult<()>,
) -> TractResult<TVec<TValue>> {
    let views = (inputs.iter())
        .map(|x| x.to_plain_array_view::<f32>())
        .collect::<TractResult<Vec<_>>>()?;
    let xs = (views.iter())
        .map(|x| x.as_slice().context("input is not contiguous"))
        .collect::<TractResult<Vec<_>>>()?;
    // Not zeroed: zeroing every output was 7 % of a MobileNetV2 run under
    // perf, and both ops write each output element before anything reads
    // it, as tract's own ops do with their outputs.
    // SAFETY: f32 has no invalid bit patterns, and `run` writes the whole
    // output (its tests compare every element with tract's).
    let mut out = unsafe { Tensor::uninitialized::<f32>(shape)? };
    run(&xs, out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?)?;
    Ok(tvec!(out.into_tvalue()))
}
