//! Dense 2-D convolution as a matrix product on the `gemm` crate, swapped
//! in for tract's on x86_64 between declutter and optimize.
//!
//! Why: `benches/compare_onnxruntime.py --layers` put tract's products for
//! the convolutions of real image networks at 2–8× ONNX Runtime's time
//! (the stems' k = 27 im2col products 4.7–8.4×, MobileNetV2's k = 16
//! expansion 3.7×, ResNet-18's large-k layers 2–2.6×), and tract's kernel
//! choice, knobs and layouts could not move them (BENCHMARKS.md, "Levers
//! tried"). The `gemm` crate's AVX2/AVX-512 products ran the same shapes at
//! 0.6–1.4× ORT's whole-layer time. Per block of output positions the
//! input windows are laid out as columns (none for a 1×1, stride-1
//! convolution, whose input already is that matrix), the product writes
//! the output block in place, and bias and a folded Relu/Clip are applied
//! while the block is still in cache.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::einsum::EinSum;

use super::kernel::{conv_constants, eval_f32, Geometry, UNCLAMPED};
use super::narrow;
use super::packed::{self, Columns, Isa};
use super::windows::Windows;

/// Floats of the column block one product reads: enough columns to keep
/// the product's tiles busy, few enough to stay in L2, at half its size.
/// On a Xeon with 2 MiB of L2 per core, a quarter of it left ResNet-18's
/// 3×3 layers with blocks of 113 positions, and the model 3–4 % slower. On
/// a Zen 3 with 512 KiB, blocks of 1 MiB spill to the L3 that other cores
/// share: with 256 KiB ones the three image networks' p50 was lower in 35
/// of 48 alternated runs (BENCHMARKS.md, "16-wide panels on AVX2").
fn column_floats() -> usize {
    static FLOATS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *FLOATS.get_or_init(|| l2_bytes().unwrap_or(2 << 20) / 2 / size_of::<f32>())
}

/// The fewest positions of a packed block: each block streams all the
/// weights past its columns again, and ResNet-18's 256 × 2304 products on
/// 64-position blocks took 1.08–1.18× the time of 112-position ones.
const MIN_BLOCK: usize = 96;

/// The size of this CPU's level 2 cache, as Linux reports it.
fn l2_bytes() -> Option<usize> {
    (0..8).find_map(|i| {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let level = std::fs::read_to_string(format!("{dir}/level")).ok()?;
        if level.trim() != "2" {
            return None;
        }
        let size = std::fs::read_to_string(format!("{dir}/size")).ok()?;
        let size = size.trim();
        let digits = size
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(size.len());
        let unit = match &size[digits..] {
            "" => 1,
            "K" => 1 << 10,
            "M" => 1 << 20,
            _ => return None,
        };
        Some(size[..digits].parse::<usize>().ok()? * unit)
    })
}

/// A constant-weight f32 2-D convolution of one group, on NCHW (or CHW)
/// data of a concrete shape; or a product of data by a constant matrix
/// along one axis (a 1×1 convolution or a fully connected layer once
/// tract has decluttered it), seen as a 1×1 convolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct GemmConv {
    /// `[Cout, Cin * kh * kw]`, the weights as the left matrix.
    weights: Arc<Tensor>,
    /// `[Cout]`.
    bias: Arc<Tensor>,
    /// `[Cout, Cin_i]` for each further input `i`, whose products are added
    /// to the first: a 1×1 convolution of a concatenation, which tract's
    /// declutter splits into one product per concatenated input.
    more: Vec<Arc<Tensor>>,
    geo: Geometry,
    /// The output's shape.
    shape: TVec<usize>,
    /// The output's channel axis.
    channel_axis: usize,
    /// Bounds (f32 bits) the outputs are clamped to: the Relu or Clip that
    /// followed, folded in to save a pass over the output.
    pub(crate) clamp: [u32; 2],
    /// The weights of all products packed for [`packed::product`], when
    /// this CPU has AVX-512 or AVX2 with FMA ([`Isa::of_this_cpu`]) and
    /// there are [`PACKED_POSITIONS`] or more; otherwise the gemm crate
    /// runs them.
    packed: Option<Arc<Tensor>>,
}

/// The fewest output positions [`packed::product`] runs: 7×7 outputs (49
/// positions: three vectors, and a fourth for one position) go to
/// [`narrow::product`].
const PACKED_POSITIONS: usize = 64;

/// The fewest output positions [`narrow::product`] runs: its tiles of
/// fewer positions hide less of the multiply-add's latency, and a product
/// of one or two positions is mostly reading the weights.
const NARROW_POSITIONS: usize = 4;

/// Which product [`GemmConv::run`] runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kernel {
    /// [`packed::product`] on gathered columns ([`GemmConv::run_packed`]).
    Panels(Isa),
    /// [`packed::product`] reading the input's (phase) planes in place
    /// ([`GemmConv::run_planes`]).
    Planes,
    /// [`narrow::product`] ([`GemmConv::run_narrow`]).
    Narrow,
    /// The gemm crate.
    Crate,
}

/// The narrowest output rows [`GemmConv::run_planes`] takes, per column
/// computed and dropped at the end of each padded row.
const PLANES_WIDTH: usize = 4;

/// Output rows at most this wide are gathered from [`Windows::Padded`]:
/// a run of the image per output row costs more in its bounds and padding
/// than in the values it moves once rows are this short (KWS's stem has
/// 5-wide output rows).
const TABLE_WIDTH: usize = 16;

thread_local! {
    /// The padded planes and window offsets of [`Windows::Padded`], kept
    /// from call to call like [`COLUMNS`].
    static PADDED: std::cell::RefCell<(Vec<f32>, Vec<u32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    /// The columns of [`GemmConv::run_packed`] and [`GemmConv::run`]: kept
    /// from call to call, as allocating and zeroing a fresh megabyte each
    /// time cost 2–4 % of ResNet-18 in page faults and `memset`.
    static COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Op for GemmConv {
    fn name(&self) -> StaticName {
        "GemmConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} output channels: {} clamp: {:?}",
            self.geo,
            self.out_channels(),
            self.clamp.map(f32::from_bits)
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for GemmConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        eval_f32(inputs, &self.shape, |xs, out| self.run(xs, out))
    }
}

impl TypedOp for GemmConv {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&self.shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let weights: usize = self.more.iter().map(|w| w.len()).sum();
        let macs = self.geo.input[0] * (self.weights.len() + weights) * self.geo.outputs();
        Ok(tvec!((Cost::FMA(f32::datum_type()), macs.into())))
    }

    as_op!();
}

impl GemmConv {
    /// The op for `conv`, or `None` when it is not a constant-weight f32
    /// 2-D convolution of one group without dilation on NCHW/CHW data.
    pub(crate) fn for_conv(
        model: &TypedModel,
        node: &TypedNode,
        conv: &Conv,
    ) -> TractResult<Option<Self>> {
        let spec = &conv.pool_spec;
        if conv.group != 1 {
            return Ok(None);
        }
        let Some((weights, bias)) = conv_constants(model, node, conv)? else {
            return Ok(None);
        };
        let Some(geo) = Geometry::of(spec, model.outlet_fact(node.inputs[0])?)? else {
            return Ok(None);
        };
        let cout = spec.output_channels;
        GemmConv {
            weights: weights.into_arc_tensor(),
            bias: bias.into_arc_tensor(),
            more: vec![],
            shape: geo.output_shape(cout),
            channel_axis: geo.batch_axis as usize,
            geo,
            clamp: UNCLAMPED,
            packed: None,
        }
        .packed()
        .map(Some)
    }

    /// The op for `einsum`, or `None` when it is not f32 data `x` times a
    /// constant f32 matrix `W` along one axis, `y[.., o, ..] = Σ_i W[o, i]
    /// x[.., i, ..]`: how tract declutters 1×1 convolutions, `Gemm` and
    /// `MatMul` with constant weights.
    pub(crate) fn for_einsum(
        model: &TypedModel,
        node: &TypedNode,
        einsum: &EinSum,
    ) -> TractResult<Option<Self>> {
        if einsum.q_params.is_some()
            || einsum.operating_dt != f32::datum_type()
            || node.inputs.len() != 2
        {
            return Ok(None);
        }
        let facts = [
            model.outlet_fact(node.inputs[0])?,
            model.outlet_fact(node.inputs[1])?,
        ];
        let slot = match (&facts[0].konst, &facts[1].konst) {
            (None, Some(_)) => 1,
            (Some(_), None) => 0,
            _ => return Ok(None),
        };
        let (weights, x) = (facts[slot].konst.clone().expect("matched"), facts[1 - slot]);
        let (inputs, outputs) = einsum.axes.to_strs();
        let labels = |s: &str| s.chars().collect::<Vec<_>>();
        let (xs, ws, ys) = (
            labels(&inputs[1 - slot]),
            labels(&inputs[slot]),
            labels(&outputs[0]),
        );
        let (Some(x_shape), Some(y_shape)) = (
            x.shape.as_concrete(),
            model.outlet_fact(node.id.into())?.shape.as_concrete(),
        ) else {
            return Ok(None);
        };
        if x.datum_type != f32::datum_type()
            || weights.datum_type() != f32::datum_type()
            || ws.len() != 2
            || ws[0] == ws[1]
            || xs.len() != x_shape.len()
            || ys.len() != y_shape.len()
        {
            return Ok(None);
        }
        // An axis of size 1 in the data or the output alone carries nothing
        // (tract sums a batch of one away that way): set it aside.
        let lone = |label: &char, dim: usize, other: &[char]| {
            dim == 1 && !other.contains(label) && !ws.contains(label)
        };
        let (mut xs_kept, mut shape) = (vec![], vec![]);
        for (l, &d) in xs.iter().zip(x_shape) {
            if !lone(l, d, &ys) {
                xs_kept.push(*l);
                shape.push(d);
            }
        }
        let ys_kept: Vec<char> = (ys.iter().zip(y_shape))
            .filter(|(l, &d)| !lone(l, d, &xs))
            .map(|(l, _)| *l)
            .collect();
        let (xs, ys_all, ys) = (xs_kept, ys, ys_kept);
        // The summed axis is in x and W; in its place the output has W's
        // other axis; every other axis of x passes through unchanged.
        let Some(c) = xs.iter().position(|l| ws.contains(l)) else {
            return Ok(None);
        };
        if ys.len() != xs.len() {
            return Ok(None);
        }
        let (i, o) = (xs[c], ys[c]);
        let passes = |p: usize| p == c || (xs[p] == ys[p] && !ws.contains(&xs[p]));
        if ys.contains(&i)
            || xs.contains(&o)
            || !ws.contains(&o)
            || !(0..xs.len()).all(passes)
            || (1..xs.len()).any(|p| xs[..p].contains(&xs[p]))
        {
            return Ok(None);
        }
        let weights = if ws == [o, i] {
            (*weights).clone()
        } else {
            (*weights).clone().permute_axes(&[1, 0])?
        };
        let (cout, cin) = (weights.shape()[0], weights.shape()[1]);
        if cin != shape[c] || cin == 0 || cout == 0 {
            return Ok(None);
        }
        let (lead, trail) = (shape[..c].iter().product(), shape[c + 1..].iter().product());
        let channel_axis = ys_all.iter().position(|&l| l == o).expect("kept from ys");
        GemmConv {
            // A contiguous copy: the product reads rows of W.
            weights: tensor1(
                &weights
                    .to_plain_array_view::<f32>()?
                    .iter()
                    .copied()
                    .collect::<Vec<_>>(),
            )
            .into_shape(&[cout, cin])?
            .into_arc_tensor(),
            bias: tensor1(&vec![0f32; cout]).into_arc_tensor(),
            more: vec![],
            geo: Geometry {
                input: [lead, cin, trail, 1],
                batch_axis: true,
                output: [trail, 1],
                kernel_hw: [1, 1],
                strides: [1, 1],
                pad_before: [0, 0],
                pad_after: [0, 0],
            },
            shape: y_shape.into(),
            channel_axis,
            clamp: UNCLAMPED,
            packed: None,
        }
        .packed()
        .map(Some)
    }

    /// This op with its weights packed for [`packed::product`] when it
    /// will run there.
    fn packed(mut self) -> TractResult<Self> {
        self.packed = None;
        let rows = match self.kernel() {
            Kernel::Panels(isa) => isa.rows(),
            Kernel::Planes => Isa::Avx2.rows(),
            Kernel::Narrow => narrow::CHANNELS,
            Kernel::Crate => return Ok(self),
        };
        let blocks = (std::iter::once(&self.weights).chain(&self.more))
            .map(|w| w.try_as_plain_ram())
            .collect::<TractResult<Vec<_>>>()?;
        let blocks = (blocks.iter())
            .map(|w| w.as_slice::<f32>())
            .collect::<TractResult<Vec<_>>>()?;
        let packed = packed::pack_rows(rows, &blocks, self.out_channels());
        self.packed = Some(tensor1(&packed).into_arc_tensor());
        Ok(self)
    }

    /// Which product [`run`](Self::run) runs on this CPU.
    fn kernel(&self) -> Kernel {
        let Some(isa) = Isa::of_this_cpu() else {
            return Kernel::Crate;
        };
        let positions = self.geo.outputs();
        let avx2 = matches!(isa, Isa::Avx2) && self.more.is_empty();
        // A 1×1 window gathers no more than it reads: those stay on the
        // panels or, under 64 positions, the crate, which ran MobileNetV2's
        // 7×7 ones in 0.75–0.88× the time `narrow` did.
        let window = self.geo.kernel_hw != [1, 1];
        if positions < PACKED_POSITIONS {
            if avx2 && window && positions >= NARROW_POSITIONS && self.geo.phases().is_some() {
                return Kernel::Narrow;
            }
            return Kernel::Crate;
        }
        // Stride 1 only: on ResNet-18's stride-2 layers and stem, copying
        // the input into phase planes and reading those took 1.03–1.14× the
        // time gathering panels did.
        if avx2 && window && self.geo.phases() == Some(1) {
            let [_, ow] = self.geo.output;
            if ow >= PLANES_WIDTH * (self.geo.padded().1 - ow) {
                return Kernel::Planes;
            }
        }
        Kernel::Panels(isa)
    }

    /// The output's shape and channel axis.
    pub(crate) fn output(&self) -> (&[usize], usize) {
        (&self.shape, self.channel_axis)
    }

    /// Adds `bias`, one value or one per output channel, to the outputs.
    pub(crate) fn add_bias(&mut self, bias: &[f32]) -> TractResult<()> {
        let old = self.bias.try_as_plain_ram()?;
        let old = old.as_slice::<f32>()?;
        let sum: Vec<f32> = (0..old.len())
            .map(|c| old[c] + bias[if bias.len() == 1 { 0 } else { c }])
            .collect();
        self.bias = tensor1(&sum).into_arc_tensor();
        Ok(())
    }

    /// Adds `other`'s product, of a further input, to this one's: when
    /// tract's declutter split a 1×1 convolution of a concatenation into a
    /// sum of products, one op then runs them all into one output. Returns
    /// whether it did; it does not when either op's input is not its
    /// product's right matrix as it is, or their outputs differ.
    pub(crate) fn add_product(&mut self, other: &GemmConv) -> TractResult<bool> {
        let [lead, _, h, w] = self.geo.input;
        let [o_lead, _, o_h, o_w] = other.geo.input;
        if !self.reads_input()
            || !other.reads_input()
            || !other.more.is_empty()
            || (self.clamp, other.clamp) != (UNCLAMPED, UNCLAMPED)
            || (&self.shape, self.channel_axis) != (&other.shape, other.channel_axis)
            || (lead, h * w) != (o_lead, o_h * o_w)
        {
            return Ok(false);
        }
        self.add_bias(other.bias.try_as_plain_ram()?.as_slice::<f32>()?)?;
        self.more.push(other.weights.clone());
        *self = self.clone().packed()?;
        Ok(true)
    }

    /// The depth of all products together: every input's columns.
    fn depth(&self) -> usize {
        let more: usize = self.more.iter().map(|w| w.shape()[1]).sum();
        self.weights.shape()[1] + more
    }

    fn out_channels(&self) -> usize {
        self.bias.len()
    }

    /// Whether the input already is the product's right matrix, `[Cin, H *
    /// W]`: a 1×1, stride-1, unpadded convolution's.
    fn reads_input(&self) -> bool {
        let [_, cin, h, w] = self.geo.input;
        self.weights.shape()[1] == cin
            && self.geo.strides == [1, 1]
            && self.geo.pad_before == [0, 0]
            && self.geo.outputs() == h * w
    }

    fn run(&self, xs: &[&[f32]], out: &mut [f32]) -> TractResult<()> {
        let [_, cin, h, w] = self.geo.input;
        let cout = self.out_channels();
        let depth = self.weights.shape()[1];
        let positions = self.geo.outputs();
        if xs.len() != 1 + self.more.len() {
            bail!("{} inputs for {} products", xs.len(), 1 + self.more.len());
        }
        // One row is one matrix-vector product either way.
        if positions == 1 && self.geo.input[0] > 1 && self.reads_input() {
            return self.run_rows(xs, out);
        }
        if let Some(packed) = &self.packed {
            let packed = packed.try_as_plain_ram()?;
            let packed = packed.as_slice::<f32>()?;
            match self.kernel() {
                Kernel::Panels(isa) => return self.run_packed(isa, xs, out, packed),
                Kernel::Planes => return self.run_planes(xs[0], out, packed),
                Kernel::Narrow => return self.run_narrow(xs[0], out, packed),
                Kernel::Crate => {}
            }
        }
        let direct = self.reads_input();
        let block = (column_floats() / depth).clamp(64, 1024).min(positions);
        // Blocks of equal size: a last block of a few positions runs the
        // product's edge kernels for little work.
        let block = positions.div_ceil(positions.div_ceil(block));
        // Every value a block's product reads is gathered first, so what an
        // earlier call left in the columns is never read.
        let mut columns = Vec::new();
        if !direct {
            columns = COLUMNS.take();
            columns.resize(columns.len().max(depth * block), 0.0);
        }
        let weights = self.weights.try_as_plain_ram()?;
        let weights = weights.as_slice::<f32>()?;
        let bias = self.bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let [low, high] = self.clamp.map(f32::from_bits);
        let more = (self.more.iter())
            .map(|w| w.try_as_plain_ram())
            .collect::<TractResult<Vec<_>>>()?;
        let more = (more.iter())
            .map(|w| w.as_slice::<f32>())
            .collect::<TractResult<Vec<_>>>()?;
        let images = xs[0]
            .chunks_exact(cin * h * w)
            .zip(out.chunks_exact_mut(cout * positions));
        for (n, (image, out)) in images.enumerate() {
            self.with_windows(image, |windows| {
                let mut start = 0;
                while start < positions {
                    let len = block.min(positions - start);
                    let (rhs, rhs_row) = if direct {
                        (&image[start..], positions)
                    } else {
                        self.geo
                            .gather(windows, start, len, &mut columns[..depth * len]);
                        (&columns[..], len)
                    };
                    // The first product reads the columns (or the image), any
                    // further one its own input's image as it is.
                    let first = (weights, depth, rhs, Strides::row_major(rhs_row));
                    let further = more.iter().zip(&xs[1..]).map(|(&weights, x)| {
                        let cin = weights.len() / cout;
                        let image = &x[n * cin * positions..][..cin * positions];
                        (weights, cin, &image[start..], Strides::row_major(positions))
                    });
                    let products = std::iter::once(first).chain(further);
                    for (i, (lhs, k, rhs, rhs_at)) in products.enumerate() {
                        product(
                            [cout, len, k],
                            &mut out[start..],
                            Strides::row_major(positions),
                            lhs,
                            Strides::row_major(k),
                            rhs,
                            rhs_at,
                            i > 0,
                        );
                    }
                    for (row, &b) in out.chunks_exact_mut(positions).zip(bias) {
                        // Two selects, not an if-else chain: they vectorise.
                        for v in &mut row[start..start + len] {
                            let s = *v + b;
                            let s = if s < low { low } else { s };
                            *v = if s > high { high } else { s };
                        }
                    }
                    start += len;
                }
            });
        }
        if !direct {
            COLUMNS.set(columns);
        }
        Ok(())
    }

    /// [`run`](Self::run) for a stride-1 convolution on AVX2 with nothing
    /// gathered: with output positions running through the rows of the
    /// padded input, row `(ci, ky, kx)` of the columns is that input itself,
    /// from plane `ci`, `ky` rows and `kx` columns in. The `kw - 1`
    /// positions at the end of each padded row are computed and dropped.
    fn run_planes(&self, x: &[f32], out: &mut [f32], packed: &[f32]) -> TractResult<()> {
        let [_, cin, h, w] = self.geo.input;
        let [oh, ow] = self.geo.output;
        let cout = self.out_channels();
        let (_, pw) = self.geo.padded();
        let wide = (oh * pw).next_multiple_of(16);
        let at = self.geo.tap_starts(1);
        // The last tile reads `wide` positions on from the last tap.
        let len = at.iter().max().map_or(0, |a| a + wide);
        let block = (column_floats() / cin).max(MIN_BLOCK).next_multiple_of(16);
        let bias = self.bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let clamp = self.clamp.map(f32::from_bits);
        let images = x.chunks_exact(cin * h * w);
        PADDED.with_borrow_mut(|(planes, _)| {
            COLUMNS.with_borrow_mut(|sums| {
                sums.resize(sums.len().max(cout * wide), 0.0);
                for (image, out) in images.zip(out.chunks_exact_mut(cout * oh * ow)) {
                    self.geo.pad(image, planes, 1, len);
                    // Blocks of positions whose rows of every plane stay in
                    // L2 while all channels' tiles pass over them.
                    for start in (0..wide).step_by(block) {
                        let n = block.min(wide - start);
                        let planes = &planes[start..];
                        let columns = Columns::Planes { planes, at: &at };
                        let sums = &mut sums[start..];
                        packed::product(Isa::Avx2, packed, columns, n, sums, wide, bias, clamp);
                    }
                    let rows = sums.chunks_exact(wide).flat_map(|s| s.chunks(pw).take(oh));
                    for (out, row) in out.chunks_exact_mut(ow).zip(rows) {
                        out.copy_from_slice(&row[..ow]);
                    }
                }
            })
        });
        Ok(())
    }

    /// [`run`](Self::run) on [`narrow::product`], for few positions: the
    /// windows read from the input's (phase) planes in place.
    fn run_narrow(&self, x: &[f32], out: &mut [f32], packed: &[f32]) -> TractResult<()> {
        let [_, cin, h, w] = self.geo.input;
        let [oh, ow] = self.geo.output;
        let cout = self.out_channels();
        let bias = self.bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let clamp = self.clamp.map(f32::from_bits);
        let images = x
            .chunks_exact(cin * h * w)
            .zip(out.chunks_exact_mut(cout * oh * ow));
        let Some(s) = self.geo.phases() else {
            bail!("no planes for {}", self.geo);
        };
        let (_, pw) = self.geo.phase_plane(s);
        let at = self.geo.tap_starts(s);
        let positions: Vec<usize> = (0..oh)
            .flat_map(|y| (0..ow).map(move |x| y * pw + x))
            .collect();
        let last = positions.last().copied().unwrap_or(0);
        let len = at.iter().max().map_or(0, |a| a + last + 1);
        PADDED.with_borrow_mut(|(planes, _)| {
            COLUMNS.with_borrow_mut(|sums| {
                for (image, out) in images {
                    self.geo.pad(image, planes, s, len);
                    narrow::product(packed, planes, &at, &positions, out, bias, clamp, sums);
                }
            })
        });
        Ok(())
    }

    /// [`run`](Self::run) on [`packed::product`] for `isa`, which packed
    /// `packed`: each block of positions laid out in panels, all products'
    /// rows one after the other.
    fn run_packed(
        &self,
        isa: Isa,
        xs: &[&[f32]],
        out: &mut [f32],
        packed: &[f32],
    ) -> TractResult<()> {
        let [_, cin, h, w] = self.geo.input;
        let cout = self.out_channels();
        let positions = self.geo.outputs();
        let depth = self.depth();
        let first = self.weights.shape()[1];
        let direct = self.reads_input();
        // Whole panels, and no last block of a few positions: 7×7 outputs
        // are one block of 49, not blocks of 48 and 1.
        let lanes = isa.lanes();
        let block = (column_floats() / depth / lanes).max(MIN_BLOCK.div_ceil(lanes)) * lanes;
        let block = positions.div_ceil((positions / block).max(1));
        let block = block.next_multiple_of(lanes);
        let bias = self.bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let clamp = self.clamp.map(f32::from_bits);
        COLUMNS.with_borrow_mut(|columns| {
            let len = block.min(positions);
            let need = depth * len.next_multiple_of(lanes);
            // Whole cache lines for every vector the product loads: from
            // a line boundary, rows of whole vectors. A gathered row goes
            // after the panels.
            if columns.len() < need + len + 16 {
                columns.resize(need + len + 16, 0.0);
            }
            let line = columns.as_ptr().align_offset(64);
            let (columns, gathered) = columns[line..].split_at_mut(need);
            let images = xs[0]
                .chunks_exact(cin * h * w)
                .zip(out.chunks_exact_mut(cout * positions));
            for (n, (image, out)) in images.enumerate() {
                self.with_windows(image, |windows| {
                    for start in (0..positions).step_by(block) {
                        let len = block.min(positions - start);
                        // Row by row: one window row gathered, then dealt out
                        // to the panels (gathering each panel's part of a row
                        // by itself cost ResNet-18's 3×3 layers 10–20 %).
                        for r in 0..first {
                            let row = if direct {
                                &image[r * positions + start..][..len]
                            } else {
                                self.geo.gather_row(windows, r, start, &mut gathered[..len]);
                                &gathered[..len]
                            };
                            packed::put_row(isa, row, r, depth, columns);
                        }
                        let mut r = first;
                        for (weights, x) in self.more.iter().zip(&xs[1..]) {
                            let cin = weights.len() / cout;
                            let image = &x[n * cin * positions..][..cin * positions];
                            for row in image.chunks_exact(positions) {
                                let row = &row[start..start + len];
                                packed::put_row(isa, row, r, depth, columns);
                                r += 1;
                            }
                        }
                        let out = &mut out[start..];
                        let columns = Columns::Panels(columns);
                        packed::product(isa, packed, columns, len, out, positions, bias, clamp);
                    }
                });
            }
        });
        Ok(())
    }

    /// Data whose channels are its last axis, `[rows, Cin]` (a `MatMul` or
    /// `Gemm` of a batch or a sequence by constant weights): one product
    /// `[rows, Cin] · Wᵀ` for all rows, where the image-by-image path would
    /// run one matrix-vector product per row (the gemm crate's small
    /// kernels: a 256 × 256 `MatMul` ran at half the speed that way).
    fn run_rows(&self, xs: &[&[f32]], out: &mut [f32]) -> TractResult<()> {
        let rows = self.geo.input[0];
        let cout = self.out_channels();
        let out_at = Strides::row_major(cout);
        let products = std::iter::once(&self.weights).chain(&self.more);
        for (i, (weights, x)) in products.zip(xs).enumerate() {
            let weights = weights.try_as_plain_ram()?;
            let weights = weights.as_slice::<f32>()?;
            let cin = weights.len() / cout;
            // Wᵀ, `[Cin, Cout]`, read in place: W is `[Cout, Cin]`.
            let transposed = Strides { rows: 1, cols: cin };
            let x_at = Strides::row_major(cin);
            product(
                [rows, cout, cin],
                out,
                out_at,
                x,
                x_at,
                weights,
                transposed,
                i > 0,
            );
        }
        let bias = self.bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let [low, high] = self.clamp.map(f32::from_bits);
        for row in out.chunks_exact_mut(cout) {
            for (v, &b) in row.iter_mut().zip(bias) {
                let s = *v + b;
                let s = if s < low { low } else { s };
                *v = if s > high { high } else { s };
            }
        }
        Ok(())
    }

    /// Calls `f` with the [`Windows`] of `image`: the image itself, or for
    /// output rows up to [`TABLE_WIDTH`] wide its padded copy.
    fn with_windows<R>(&self, image: &[f32], f: impl FnOnce(&Windows) -> R) -> R {
        if self.reads_input() || self.geo.output[1] > TABLE_WIDTH {
            return f(&Windows::Image(image));
        }
        let [oh, ow] = self.geo.output;
        let [sh, sw] = self.geo.strides;
        PADDED.with_borrow_mut(|(planes, at)| {
            let (plane, pw) = self.geo.pad(image, planes, 1, 0);
            at.clear();
            for oy in 0..oh {
                let row = oy * sh * pw;
                at.extend((0..ow).map(|ox| (row + ox * sw) as u32));
            }
            f(&Windows::Padded {
                planes,
                at,
                plane,
                row: pw,
            })
        })
    }
}

/// Where a matrix's elements lie in its slice: element `(r, c)` at
/// `r * rows + c * cols`.
#[derive(Clone, Copy)]
struct Strides {
    rows: usize,
    cols: usize,
}

impl Strides {
    /// Row after row.
    fn row_major(row: usize) -> Self {
        Strides { rows: row, cols: 1 }
    }

    /// Whether an `r × c` matrix with these strides lies inside `len`
    /// elements.
    fn fits(self, r: usize, c: usize, len: usize) -> bool {
        r > 0 && c > 0 && (r - 1) * self.rows + (c - 1) * self.cols < len
    }
}

/// `out[m × n] (+)= lhs[m × k] · rhs[k × n]`, each matrix laid out in its
/// slice as its [`Strides`] say: the gemm crate's product, added to what
/// `out` holds when `accumulate`.
#[allow(clippy::too_many_arguments)]
fn product(
    [m, n, k]: [usize; 3],
    out: &mut [f32],
    out_at: Strides,
    lhs: &[f32],
    lhs_at: Strides,
    rhs: &[f32],
    rhs_at: Strides,
    accumulate: bool,
) {
    assert!(out_at.fits(m, n, out.len()));
    assert!(lhs_at.fits(m, k, lhs.len()));
    assert!(rhs_at.fits(k, n, rhs.len()));
    // SAFETY: the three matrices lie inside the slices, as just asserted,
    // and `out` is borrowed mutably, so nothing else reads or writes the
    // destination.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            out_at.cols as isize,
            out_at.rows as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_at.cols as isize,
            lhs_at.rows as isize,
            rhs.as_ptr(),
            rhs_at.cols as isize,
            rhs_at.rows as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{run, values};
    use crate::model::rewrite::direct_kernels;
    use tract_onnx::tract_core::ops::cnn::KernelFormat;
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::math::{max, min};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    /// A one-group convolution from `shape`'s channels to `cout`, with
    /// `bias`, as the only node between input and output.
    fn conv_model(
        shape: &[usize],
        cout: usize,
        kernel: [usize; 2],
        strides: [usize; 2],
        padding: PaddingSpec,
        bias: Tensor,
    ) -> TypedModel {
        let cin = shape[shape.len() - 3];
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(shape)).unwrap();
        let k = tensor1(&values(cout * cin * kernel[0] * kernel[1], 3))
            .into_shape(&[cout, cin, kernel[0], kernel[1]])
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
                input_channels: cin,
                output_channels: cout,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        let y = model.wire_node("conv", conv, &[x, k, b]).unwrap();
        model.select_output_outlets(&y).unwrap();
        model
    }

    /// Equal to 1e-4, relative above 1, the bound results keep against ONNX
    /// Runtime: a sum of 576 products in another order differed from
    /// tract's by 1.1e-5 at 0.5.
    fn assert_close(want: &[f32], got: &[f32], what: &str) {
        assert_eq!(want.len(), got.len(), "{what}");
        for (a, b) in want.iter().zip(got) {
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                "{a} vs {b}: {what}"
            );
        }
    }

    /// The L2 size that sizes the column blocks is read from Linux's sysfs,
    /// and is a size an L2 has.
    #[test]
    fn l2_size_is_read() {
        if std::path::Path::new("/sys/devices/system/cpu/cpu0/cache/index2").exists() {
            let l2 = l2_bytes().expect("an L2 cache in sysfs");
            assert!((64 << 10..=64 << 20).contains(&l2), "{l2} bytes");
            assert_eq!(column_floats(), l2 / 8);
        }
    }

    /// Every padding kind, stride and kernel shape, on inputs with and
    /// without a batch axis and with more output positions than one block
    /// holds, with per-channel and scalar bias, gives tract's own results on
    /// every kernel: windows gathered into panels or read from padded
    /// (phase) planes in place, few positions with channels in the vectors,
    /// and the gemm crate.
    #[test]
    fn gemm_conv_matches_tract() {
        let paddings = [
            PaddingSpec::Valid,
            PaddingSpec::SameUpper,
            PaddingSpec::SameLower,
            PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1)),
            PaddingSpec::Explicit(tvec!(0, 2), tvec!(1, 0)),
        ];
        let mut checked = 0;
        let mut kernels = std::collections::BTreeMap::new();
        for shape in [
            &[1, 3, 40, 41][..],
            &[2, 5, 9, 7],
            &[4, 25, 5],
            &[1, 2, 48, 48],
            &[1, 64, 30, 30],
            // Planes read in several blocks of positions on an L2 of up to
            // 1 MiB.
            &[1, 64, 40, 60],
        ] {
            for (kernel, strides) in [
                ([1, 1], [1, 1]),
                ([1, 1], [2, 2]),
                ([3, 3], [1, 1]),
                ([3, 3], [2, 2]),
                ([5, 5], [2, 2]),
                ([3, 1], [1, 1]),
                ([1, 3], [2, 1]),
                ([3, 3], [3, 3]),
            ] {
                for padding in &paddings {
                    for (cout, bias) in [(7, tensor1(&values(7, 5))), (1, tensor0(0.25f32))] {
                        let what = format!("{shape:?} {cout} {kernel:?} {strides:?} {padding:?}");
                        let len = shape.iter().product();
                        let x = tensor1(&values(len, 1)).into_shape(shape).unwrap();
                        let untouched =
                            conv_model(shape, cout, kernel, strides, padding.clone(), bias);
                        let mut direct = untouched.clone();
                        assert_eq!(direct_kernels(&mut direct, 1).unwrap(), 1, "{what}");
                        let want = run(untouched, &x);
                        assert_close(&want, &run(direct.clone(), &x), &what);
                        // The gemm crate's path, which CPUs without AVX2
                        // and the shapes no other kernel takes run.
                        let kernel = only(&mut direct).kernel();
                        *kernels.entry(format!("{kernel:?}")).or_insert(0) += 1;
                        assert_eq!(unpack(&mut direct), kernel != Kernel::Crate, "{what}");
                        assert_close(&want, &run(direct, &x), &what);
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 480);
        // Every kernel this CPU has ran some of them.
        if Isa::of_this_cpu() == Some(Isa::Avx2) {
            let ran = kernels.keys().map(String::as_str).collect::<Vec<_>>();
            assert_eq!(
                ran,
                ["Crate", "Narrow", "Panels(Avx2)", "Planes"],
                "{kernels:?}"
            );
        }
    }

    /// Drops the packed weights of `model`'s one [`GemmConv`], so that it
    /// runs on the gemm crate; returns whether it had them.
    fn unpack(model: &mut TypedModel) -> bool {
        only(model).packed.take().is_some()
    }

    /// `model`'s one [`GemmConv`].
    fn only(model: &mut TypedModel) -> &mut GemmConv {
        let mut ops = (model.nodes_mut().iter_mut()).filter_map(|n| n.op_as_mut::<GemmConv>());
        let op = ops.next().expect("a GemmConv");
        assert!(ops.next().is_none());
        op
    }

    /// A Relu or Clip after the convolution folds into it, giving tract's
    /// values; with more than one thread the convolution stays tract's.
    #[test]
    fn relu_and_clip_fold_and_threads_keep_tract() {
        for bounds in [&[0f32][..], &[0.0, 0.5], &[-0.25, 6.0]] {
            let shape = [1, 3, 20, 20];
            let padding = PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1));
            let mut model = conv_model(&shape, 8, [3, 3], [2, 2], padding, tensor0(0.1f32));
            let mut y = model.output_outlets().unwrap()[0];
            for (i, &b) in bounds.iter().enumerate() {
                let b = model
                    .add_const(format!("b{i}"), tensor4(&[[[[b]]]]))
                    .unwrap();
                let op = if i == 0 { max() } else { min() };
                y = model.wire_node(format!("clip{i}"), op, &[y, b]).unwrap()[0];
            }
            model.select_output_outlets(&[y]).unwrap();
            let x = tensor1(&values(shape.iter().product(), 1))
                .into_shape(&shape)
                .unwrap();
            let mut threaded = model.clone();
            assert_eq!(direct_kernels(&mut threaded, 2).unwrap(), 0);
            let mut direct = model.clone();
            assert_eq!(direct_kernels(&mut direct, 1).unwrap(), 1);
            assert_eq!(direct.nodes().len(), 2, "{bounds:?}: input and GemmConv");
            let (want, got) = (run(model, &x), run(direct, &x));
            assert!(want.iter().any(|&v| v == bounds[0]), "the bound is reached");
            assert_close(&want, &got, &format!("{bounds:?}"));
        }
    }

    /// `expr` (data first or weights first, as `weights_first` says) of
    /// data of `shape` and constant weights of `w_shape`, then a constant
    /// `bias` added.
    fn einsum_model(
        expr: &str,
        shape: &[usize],
        w_shape: [usize; 2],
        weights_first: bool,
        bias: Option<Tensor>,
    ) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(shape)).unwrap();
        let w = tensor1(&values(w_shape[0] * w_shape[1], 3))
            .into_shape(&w_shape)
            .unwrap();
        let w = model.add_const("w", w).unwrap();
        let op = EinSum::new(expr.parse().unwrap(), f32::datum_type());
        let inputs = if weights_first { [w, x] } else { [x, w] };
        let mut y = model.wire_node("einsum", op, &inputs).unwrap();
        if let Some(bias) = bias {
            let b = model.add_const("bias", bias).unwrap();
            y = model
                .wire_node("add", tract_onnx::tract_core::ops::math::add(), &[y[0], b])
                .unwrap();
        }
        model.select_output_outlets(&y).unwrap();
        model
    }

    /// Products with a constant matrix along one axis, as tract declutters
    /// 1×1 convolutions, `Gemm` and `MatMul`, run as [`GemmConv`] with
    /// their bias folded in and give tract's values; other products stay
    /// tract's.
    #[test]
    fn constant_matrix_products_match_tract() {
        // Expression, data shape, weights shape, weights first, bias.
        type Case<'a> = (&'a str, &'a [usize], [usize; 2], bool, Option<Tensor>);
        let cases: [Case; 10] = [
            // A fully connected layer, weights [out, in] and [in, out].
            (
                "ni,oi->no",
                &[1, 40],
                [9, 40],
                false,
                Some(tensor1(&values(9, 2)).into_shape(&[1, 9]).unwrap()),
            ),
            (
                "ni,io->no",
                &[3, 40],
                [40, 9],
                false,
                Some(tensor2(&[[0.5f32]])),
            ),
            // A 1×1 convolution, with and without a batch axis.
            ("nihw,oi->nohw", &[2, 6, 40, 30], [5, 6], false, None),
            (
                "oi,ihw->ohw",
                &[6, 7, 9],
                [5, 6],
                true,
                Some(tensor3(&[[[1f32]], [[2.0]], [[3.0]], [[4.0]], [[5.0]]])),
            ),
            // A batch of one summed away, as tract declutters some 1×1
            // convolutions, and an output axis of one added.
            ("nihw,oi->ohw", &[1, 6, 40, 30], [5, 6], false, None),
            ("ihw,oi->nohw", &[6, 4, 5], [5, 6], false, None),
            // Summed axis last, leading axes kept.
            ("abi,io->abo", &[2, 3, 16], [16, 4], false, None),
            // A bias along the wrong axis is not a channel bias.
            (
                "nihw,oi->nohw",
                &[1, 6, 4, 5],
                [5, 6],
                false,
                Some(tensor1(&values(5, 2)).into_shape(&[1, 1, 1, 5]).unwrap()),
            ),
            ("ni,oi->no", &[1, 12], [1, 12], false, None),
            // Many rows, channels last: one product for all of them.
            (
                "ni,oi->no",
                &[70, 48],
                [40, 48],
                false,
                Some(tensor1(&values(40, 2)).into_shape(&[1, 40]).unwrap()),
            ),
        ];
        for (expr, shape, w_shape, weights_first, bias) in cases {
            let what = format!("{expr} {shape:?} {w_shape:?}");
            let has_bias = bias.is_some();
            let model = einsum_model(expr, shape, w_shape, weights_first, bias);
            let x = tensor1(&values(shape.iter().product(), 1))
                .into_shape(shape)
                .unwrap();
            let mut direct = model.clone();
            assert_eq!(direct_kernels(&mut direct, 1).unwrap(), 1, "{what}");
            assert!(
                !direct.nodes().iter().any(|n| n.op_is::<EinSum>()),
                "{what}"
            );
            let folded = !direct
                .nodes()
                .iter()
                .any(|n| n.op_is::<tract_onnx::tract_core::ops::binary::TypedBinOp>());
            // The [5] bias of the sixth case broadcasts along W, not O.
            assert_eq!(folded, !has_bias || shape != [1, 6, 4, 5], "{what}");
            assert_close(&run(model, &x), &run(direct, &x), &what);
        }
        // Matrices multiplied along two axes, and two data inputs.
        let mut model = einsum_model("nij,ij->n", &[2, 3, 4], [3, 4], false, None);
        assert_eq!(direct_kernels(&mut model, 1).unwrap(), 0);
        let mut model = TypedModel::default();
        let a = model.add_source("a", f32::fact([4, 5])).unwrap();
        let b = model.add_source("b", f32::fact([5, 6])).unwrap();
        let op = EinSum::new("ik,kj->ij".parse().unwrap(), f32::datum_type());
        let y = model.wire_node("mm", op, &[a, b]).unwrap();
        model.select_output_outlets(&y).unwrap();
        assert_eq!(direct_kernels(&mut model, 1).unwrap(), 0);
    }

    /// A 1×1 convolution reaches the loader as tract's declutter leaves it
    /// (a product and a bias addition) and runs as one [`GemmConv`].
    #[test]
    fn decluttered_pointwise_convolution_is_one_gemm_conv() {
        let shape = [1, 16, 30, 30];
        let model = conv_model(
            &shape,
            24,
            [1, 1],
            [1, 1],
            PaddingSpec::Valid,
            tensor1(&values(24, 4)),
        );
        let decluttered = model.clone().into_decluttered().unwrap();
        assert!(decluttered.nodes().iter().any(|n| n.op_is::<EinSum>()));
        let mut direct = decluttered;
        assert_eq!(direct_kernels(&mut direct, 1).unwrap(), 1);
        assert_eq!(direct.nodes().len(), 2, "input and GemmConv: {direct}");
        let x = tensor1(&values(shape.iter().product(), 1))
            .into_shape(&shape)
            .unwrap();
        assert_close(&run(model, &x), &run(direct, &x), "1x1");
    }

    /// A 1×1 convolution of a concatenation, as SqueezeNet's classifier
    /// has: tract's declutter splits it into a product per concatenated
    /// input and sums them, and it runs as one [`GemmConv`] that reads both
    /// inputs, with the bias and Relu folded in, giving tract's values.
    #[test]
    fn products_of_a_concatenation_run_as_one_gemm_conv() {
        use crate::export::{to_bytes, ElemType, GraphBuilder};
        use tract_onnx::tract_core::ops::binary::TypedBinOp;
        // A 1×1 convolution of channels concatenated in NCHW, and a MatMul
        // of features concatenated along the last axis of a batch of rows.
        for conv in [true, false] {
            let (a_shape, b_shape, y_shape) = if conv {
                (vec![1, 6, 9, 7], vec![1, 5, 9, 7], vec![1, 8, 9, 7])
            } else {
                (vec![9, 6], vec![9, 5], vec![9, 8])
            };
            let dims = |s: &[usize]| s.iter().map(|&d| d.into()).collect::<Vec<_>>();
            let mut g = GraphBuilder::new("concat_product");
            let a = g.input("a", ElemType::F32, &dims(&a_shape));
            let b = g.input("b", ElemType::F32, &dims(&b_shape));
            let y = if conv {
                let ab = g.concat(&[&a, &b], 1);
                g.conv_with(
                    &ab,
                    (11, 8, 1),
                    &[1, 1],
                    &[1, 1],
                    &[0; 4],
                    values(88, 3),
                    values(8, 4),
                )
                .unwrap()
            } else {
                let ab = g.concat(&[&a, &b], 1);
                let w = g.constant("w", &[11, 8], values(88, 3));
                let bias = g.constant("bias", &[8], values(8, 4));
                let y = g.node("MatMul", &[&ab, &w], &[]);
                g.node("Add", &[&y, &bias], &[])
            };
            let y = g.relu(&y);
            g.output(&y, "y", ElemType::F32, &dims(&y_shape));
            let model = tract_onnx::onnx()
                .model_for_read(&mut &to_bytes(&g.finish())[..])
                .unwrap()
                .into_typed()
                .unwrap()
                .into_decluttered()
                .unwrap();
            let count = |m: &TypedModel, f: fn(&TypedNode) -> bool| {
                m.nodes().iter().filter(|n| f(n)).count()
            };
            assert_eq!(count(&model, |n| n.op_is::<EinSum>()), 2, "{model}");
            let mut direct = model.clone();
            assert_eq!(direct_kernels(&mut direct, 1).unwrap(), 1);
            assert_eq!(count(&direct, |n| n.op_is::<GemmConv>()), 1, "{direct}");
            assert_eq!(count(&direct, |n| n.op_is::<TypedBinOp>()), 0, "{direct}");
            let plan = |m: TypedModel| m.into_optimized().unwrap().into_runnable().unwrap();
            let (want, got) = (plan(model), plan(direct));
            let xa = tensor1(&values(a_shape.iter().product(), 1))
                .into_shape(&a_shape)
                .unwrap();
            let xb = tensor1(&values(b_shape.iter().product(), 2))
                .into_shape(&b_shape)
                .unwrap();
            let inputs = || tvec!(xa.clone().into_tvalue(), xb.clone().into_tvalue());
            let flat = |mut y: TVec<TValue>| {
                let y = y.remove(0);
                y.to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect::<Vec<_>>()
            };
            let want = flat(want.run(inputs()).unwrap());
            assert!(want.contains(&0.0) && want.iter().any(|&v| v > 0.0));
            let what = format!("concat, conv {conv}");
            assert_close(&want, &flat(got.run(inputs()).unwrap()), &what);
        }
    }
}
