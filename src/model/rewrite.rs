//! The pass that swaps our ops in for tract's where they run faster, on
//! the decluttered graph before tract optimizes it: [`DirectWindow`] for
//! depthwise convolutions and max pools, [`GemmConv`] for dense
//! convolutions and constant matrix products, each with the bias, Relu or
//! Clip and (for a product) the further products that follow it folded in.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, MaxPool};
use tract_onnx::tract_core::ops::einsum::EinSum;

use super::direct::DirectWindow;
#[cfg(target_arch = "x86_64")]
use super::gemm_conv::GemmConv;

/// Set to anything, the loader keeps tract's own depthwise convolutions and
/// max pools: the other side of the comparison in BENCHMARKS.md.
pub(crate) const TRACT_WINDOWS_ENV: &str = "EDGEINFER_TRACT_WINDOWS";

/// Set to anything, the loader keeps tract's own dense convolutions instead
/// of [`GemmConv`]: the other side of the comparison in BENCHMARKS.md.
pub(crate) const TRACT_CONV_ENV: &str = "EDGEINFER_TRACT_CONV";

/// An op of ours that replaces one of tract's.
enum Direct {
    Window(DirectWindow),
    #[cfg(target_arch = "x86_64")]
    Conv(GemmConv),
}

impl Direct {
    /// The clamp a following Relu or Clip folds into, if the op takes one.
    fn clamp(&mut self) -> Option<&mut [u32; 2]> {
        match self {
            Direct::Window(w) => w.clamp(),
            #[cfg(target_arch = "x86_64")]
            Direct::Conv(c) => Some(&mut c.clamp),
        }
    }
}

/// Swaps in our ops where they run faster than tract's, and returns how
/// many: [`DirectWindow`] for depthwise convolutions and max pools, and,
/// when tract runs on one thread (`threads` is 1), [`GemmConv`] for dense
/// convolutions. With more threads those stay tract's, whose products
/// share the work out.
// Off x86 the products this merges are never built, so nothing adds to
// `merged` or `inputs`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
pub(crate) fn direct_kernels(model: &mut TypedModel, threads: usize) -> TractResult<usize> {
    if !cfg!(target_arch = "x86_64") {
        return Ok(0);
    }
    let windows = std::env::var_os(TRACT_WINDOWS_ENV).is_none();
    let convs = threads == 1 && std::env::var_os(TRACT_CONV_ENV).is_none();
    let mut swapped = 0;
    // Products merged into the op of another: nothing reads them any more.
    let mut merged = vec![];
    for id in model.eval_order()? {
        if merged.contains(&id) {
            continue;
        }
        let node = &model.nodes()[id];
        let mut op = None;
        if let Some(conv) = node.op_as::<Conv>() {
            if windows {
                op = DirectWindow::for_conv(model, node, conv)?.map(Direct::Window);
            }
            if convs && op.is_none() {
                op = gemm_conv(model, node, conv)?;
            }
        } else if let Some(einsum) = node.op_as::<EinSum>().filter(|_| convs) {
            op = gemm_einsum(model, node, einsum)?;
        } else if let Some(pool) = node.op_as::<MaxPool>().filter(|_| windows) {
            op = DirectWindow::for_max_pool(model, node, pool)?.map(Direct::Window);
        }
        let Some(mut op) = op else { continue };
        // Our ops take the data and hold everything else: the data is the
        // one input without a constant value (it comes second in a product
        // written weights first).
        let mut data = node.inputs.iter().filter(|i| {
            model
                .outlet_fact(**i)
                .is_ok_and(|fact| fact.konst.is_none())
        });
        let (Some(&data), None) = (data.next(), data.next()) else {
            continue;
        };
        let mut last = id;
        let mut inputs = vec![data];
        #[cfg(target_arch = "x86_64")]
        if let Direct::Conv(conv) = &mut op {
            while let Some((next, other, other_data)) = product_added(model, last, conv)? {
                inputs.push(other_data);
                merged.push(other);
                last = next;
            }
            if let Some((next, bias)) = bias_after(model, last, conv.output())? {
                conv.add_bias(&bias)?;
                last = next;
            }
        }
        if let Some(clamp) = op.clamp() {
            for (bound, name) in [(0, "Max"), (1, "Min")] {
                let Some((next, value)) = bound_after(model, last, name)? else {
                    break;
                };
                clamp[bound] = value.to_bits();
                last = next;
            }
        }
        let mut patch = TypedModelPatch::default();
        let xs = (inputs.iter())
            .map(|&x| patch.tap_model(model, x))
            .collect::<TractResult<Vec<_>>>()?;
        let y = match op {
            Direct::Window(op) => patch.wire_node(&node.name, op, &xs)?,
            #[cfg(target_arch = "x86_64")]
            Direct::Conv(op) => patch.wire_node(&node.name, op, &xs)?,
        };
        patch.shunt_outside(model, last.into(), y[0])?;
        patch.apply(model)?;
        swapped += 1;
    }
    if swapped > 0 {
        *model = std::mem::take(model).into_compact()?;
    }
    Ok(swapped)
}

#[cfg(target_arch = "x86_64")]
fn gemm_conv(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Direct>> {
    Ok(GemmConv::for_conv(model, node, conv)?.map(Direct::Conv))
}

#[cfg(target_arch = "x86_64")]
fn gemm_einsum(
    model: &TypedModel,
    node: &TypedNode,
    einsum: &EinSum,
) -> TractResult<Option<Direct>> {
    Ok(GemmConv::for_einsum(model, node, einsum)?.map(Direct::Conv))
}

/// When the node that alone consumes `node`'s output adds to it the output
/// of a product that [`GemmConv`] runs and that nothing else reads: `conv`
/// with that product added, the adding node, the product's node and its
/// data input. That is how tract's declutter leaves a 1×1 convolution of a
/// concatenation: one product per concatenated input, summed.
#[cfg(target_arch = "x86_64")]
fn product_added(
    model: &TypedModel,
    node: usize,
    conv: &mut GemmConv,
) -> TractResult<Option<(usize, usize, OutletId)>> {
    let outlet = OutletId::new(node, 0);
    let successors = &model.nodes()[node].outputs[0].successors;
    if successors.len() != 1 || model.output_outlets()?.contains(&outlet) {
        return Ok(None);
    }
    let add = &model.nodes()[successors[0].node];
    let other = add.inputs.get(1 - successors[0].slot.min(1));
    let (Some(bin), Some(&other)) = (add.op_as::<TypedBinOp>(), other) else {
        return Ok(None);
    };
    let product = &model.nodes()[other.node];
    let Some(einsum) = product.op_as::<EinSum>() else {
        return Ok(None);
    };
    let same_shape = model.outlet_fact(outlet)?.shape == model.outlet_fact(other)?.shape
        && model.outlet_fact(outlet)?.shape == model.outlet_fact(add.id.into())?.shape;
    if bin.0.name() != "Add"
        || bin.1.is_some()
        || add.inputs.len() != 2
        || product.outputs[0].successors.len() != 1
        || model.output_outlets()?.contains(&other)
        || !same_shape
    {
        return Ok(None);
    }
    let Some(op) = GemmConv::for_einsum(model, product, einsum)? else {
        return Ok(None);
    };
    let mut data =
        (product.inputs.iter()).filter(|i| model.outlet_fact(**i).is_ok_and(|f| f.konst.is_none()));
    let (Some(&data), None) = (data.next(), data.next()) else {
        return Ok(None);
    };
    Ok(conv.add_product(&op)?.then_some((add.id, product.id, data)))
}

/// The `gemm` crate is an x86_64 dependency only: ARM keeps tract's NEON
/// products.
#[cfg(not(target_arch = "x86_64"))]
fn gemm_conv(_: &TypedModel, _: &TypedNode, _: &Conv) -> TractResult<Option<Direct>> {
    Ok(None)
}

#[cfg(not(target_arch = "x86_64"))]
fn gemm_einsum(_: &TypedModel, _: &TypedNode, _: &EinSum) -> TractResult<Option<Direct>> {
    Ok(None)
}

/// The node that alone consumes `node`'s output, and the constant it bounds
/// that output with, when it is the binary `op` ("Max" for a lower bound,
/// "Min" for an upper one: how tract declutters Relu and Clip).
fn bound_after(model: &TypedModel, node: usize, op: &str) -> TractResult<Option<(usize, f32)>> {
    match constant_after(model, node, op)? {
        Some((next, bound)) if bound.is_uniform() => {
            Ok(Some((next, bound.cast_to_scalar::<f32>()?)))
        }
        _ => Ok(None),
    }
}

/// The node that alone consumes `node`'s output, and the values it adds to
/// it, when it adds a constant of one value or one per channel of
/// `channel_axis` in an output of `shape`: a bias tract's declutter left
/// as its own node.
#[cfg(target_arch = "x86_64")]
fn bias_after(
    model: &TypedModel,
    node: usize,
    (shape, channel_axis): (&[usize], usize),
) -> TractResult<Option<(usize, Vec<f32>)>> {
    let Some((next, bias)) = constant_after(model, node, "Add")? else {
        return Ok(None);
    };
    // Broadcasting aligns the bias's axes with the output's last ones.
    let Some(skipped) = shape.len().checked_sub(bias.rank()) else {
        return Ok(None);
    };
    let per_channel = bias
        .shape()
        .iter()
        .enumerate()
        .all(|(a, &d)| d == 1 || (a + skipped == channel_axis && d == shape[channel_axis]));
    if !per_channel {
        return Ok(None);
    }
    let values = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    Ok(Some((next, values)))
}

/// The node that alone consumes `node`'s output and applies the binary
/// `op` to it and an f32 constant, giving an output of the same shape, and
/// that constant.
fn constant_after(
    model: &TypedModel,
    node: usize,
    op: &str,
) -> TractResult<Option<(usize, Arc<Tensor>)>> {
    let outlet = OutletId::new(node, 0);
    let successors = &model.nodes()[node].outputs[0].successors;
    if successors.len() != 1 || model.output_outlets()?.contains(&outlet) {
        return Ok(None);
    }
    let next = &model.nodes()[successors[0].node];
    let Some(bin) = next.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    if bin.0.name() != op || bin.1.is_some() || next.inputs.len() != 2 {
        return Ok(None);
    }
    let other = next.inputs[1 - successors[0].slot];
    let Some(value) = model.outlet_fact(other)?.konst.clone() else {
        return Ok(None);
    };
    if value.datum_type() != f32::datum_type()
        || model.outlet_fact(OutletId::new(next.id, 0))?.shape != model.outlet_fact(outlet)?.shape
    {
        return Ok(None);
    }
    Ok(Some((next.id, value)))
}
