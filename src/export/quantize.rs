//! Post-training static int8 quantization of an ONNX model, in the form
//! tract runs with integer kernels.
//!
//! Every `Conv` and `Gemm` with constant weights becomes a `QLinearConv`
//! (a `Gemm` as a 1×1 one between two Reshapes, which keeps its bias in
//! the integer kernel; tract has no `QGemm`): int8 activations with a zero
//! point, symmetric int8 weights with one scale per layer (or per output
//! channel), int32 bias. A `Relu` right after one is folded into its
//! output range. Three kinds of layer stay f32: the one that makes the
//! logits (a quantization step there moves every probability), depthwise
//! ones and those of fewer than [`MIN_DEPTH`] products per output (few
//! weights, and tract's integer kernels are slower than its float ones
//! there).
//!
//! Tensors stay int8 from one quantized layer to the next; everything else
//! (pooling, softmax, residual adds, normalization) runs in f32 on a
//! `DequantizeLinear` of its input, because tract has no quantized forms
//! of those and computes integer average pooling wrongly. The QDQ format
//! (`DequantizeLinear → Conv → QuantizeLinear`) is not used: tract runs
//! it in float.
//!
//! Activation ranges come from running the f32 model over calibration
//! examples (min and max of every tensor).

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;
use tract_onnx::prelude::*;

use super::{attribute, to_bytes, value_info, Attr, ElemType};
use crate::model::{InputPin, ModelError, ModelFile};

/// Why a model could not be quantized.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// Loading or running the f32 model for calibration failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The model is not one this quantizer handles.
    #[error("{0}")]
    Unsupported(String),
}

/// What [`quantize`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QuantizeReport {
    /// Layers turned into `QLinearConv`.
    pub quantized_layers: usize,
    /// `Relu`s folded into a quantized layer's output range.
    pub folded_relus: usize,
    /// `QuantizeLinear` nodes added (f32 to int8).
    pub quantize_nodes: usize,
    /// `DequantizeLinear` nodes added (int8 to f32).
    pub dequantize_nodes: usize,
}

/// How weights are scaled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightScales {
    /// One scale per layer: tract folds the rescaling into its integer
    /// matrix kernel.
    #[default]
    PerTensor,
    /// One scale per output channel: closer to f32 where channels differ
    /// in range, but tract rescales in separate f32 passes.
    PerChannel,
}

impl std::str::FromStr for WeightScales {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "per-tensor" => Ok(WeightScales::PerTensor),
            "per-channel" => Ok(WeightScales::PerChannel),
            _ => Err(format!("expected per-tensor or per-channel, found {s:?}")),
        }
    }
}

/// The int8 model of `model`, calibrated on `calibration`: a batch of
/// examples, `[n, ...]` in the shape of the model's single input.
pub fn quantize(
    model: &pb::ModelProto,
    calibration: &Tensor,
    scales: WeightScales,
) -> Result<(pb::ModelProto, QuantizeReport), QuantizeError> {
    let ranges = calibrate(model, calibration)?;
    rewrite(model, &ranges, scales)
}

/// Min and max of every node output (and the graph input) over the
/// calibration batch.
fn calibrate(
    model: &pb::ModelProto,
    batch: &Tensor,
) -> Result<HashMap<String, (f32, f32)>, QuantizeError> {
    let mut probe = model.clone();
    let graph = probe
        .graph
        .as_mut()
        .ok_or_else(|| unsupported("no graph"))?;
    let input = match graph.input.as_slice() {
        [i] => i.name.clone(),
        _ => return Err(unsupported("expected a model with one input")),
    };
    let mut names: Vec<String> = vec![input];
    let declared: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    for node in &graph.node {
        for out in &node.output {
            if !declared.contains(out) && !names.contains(out) {
                names.push(out.clone());
            }
        }
    }
    // The input itself is a graph input, not an output: an Identity makes
    // it one.
    let input_copy = format!("{}__calibration", names[0]);
    graph.node.insert(
        0,
        pb::NodeProto {
            input: vec![names[0].clone()],
            output: vec![input_copy.clone()],
            name: input_copy.clone(),
            op_type: "Identity".into(),
            ..Default::default()
        },
    );
    let first_declared = graph.output.len();
    names[0] = input_copy;
    for n in &names {
        graph.output.push(value_info(n, ElemType::F32, &[]));
    }
    // Shapes left blank: tract infers them.
    for o in &mut graph.output[first_declared..] {
        if let Some(pb::type_proto::Value::TensorType(t)) =
            o.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape = None;
        }
    }
    let file = ModelFile::from_bytes(to_bytes(&probe), "calibration")?;
    let pin = InputPin {
        dtype: batch.datum_type(),
        shape: batch.shape().to_vec(),
    };
    let mut m = file.load(Some(&[pin]))?;
    let outs = m.run(tvec!(batch.clone().into_tvalue()))?;
    let originals: Vec<String> = graph_outputs(model);
    let mut ranges = HashMap::new();
    for (i, name) in originals.iter().chain(&names).enumerate() {
        let Some(t) = outs.get(i) else {
            continue;
        };
        let Ok(v) = t.to_plain_array_view::<f32>() else {
            continue;
        };
        let (lo, hi) = v
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        let key = if i == first_declared {
            model
                .graph
                .as_ref()
                .map_or(String::new(), |g| g.input[0].name.clone())
        } else {
            name.clone()
        };
        ranges.insert(key, (lo, hi));
    }
    Ok(ranges)
}

fn graph_outputs(model: &pb::ModelProto) -> Vec<String> {
    model
        .graph
        .iter()
        .flat_map(|g| g.output.iter().map(|o| o.name.clone()))
        .collect()
}

fn unsupported(what: &str) -> QuantizeError {
    QuantizeError::Unsupported(what.to_string())
}

/// Scale and zero point mapping `[lo, hi]` (widened to hold 0) onto int8.
fn qparams(lo: f32, hi: f32) -> (f32, i8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zp = (-128.0 - lo / scale).round().clamp(-128.0, 127.0);
    (scale, zp as i8)
}

/// The values of an f32 initializer.
fn floats(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != pb::tensor_proto::DataType::Float as i32 {
        return None;
    }
    if !t.float_data.is_empty() {
        return Some(t.float_data.clone());
    }
    Some(
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

fn int_attr(node: &pb::NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn float_attr(node: &pb::NodeProto, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

/// The new graph, built node by node.
struct Rewriter<'a> {
    ranges: &'a HashMap<String, (f32, f32)>,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    /// Float tensor name → (its int8 tensor, scale, zero point).
    int8: HashMap<String, (String, f32, i8)>,
    /// Float tensors that exist in the new graph.
    float: HashSet<String>,
    report: QuantizeReport,
}

impl Rewriter<'_> {
    fn tensor(&mut self, name: &str, dims: &[usize], dt: pb::tensor_proto::DataType) -> usize {
        self.initializers.push(pb::TensorProto {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: dt as i32,
            ..Default::default()
        });
        self.initializers.len() - 1
    }

    fn f32s(&mut self, name: &str, dims: &[usize], v: Vec<f32>) {
        let i = self.tensor(name, dims, pb::tensor_proto::DataType::Float);
        self.initializers[i].float_data = v;
    }

    fn i8s(&mut self, name: &str, dims: &[usize], v: &[i8]) {
        let i = self.tensor(name, dims, pb::tensor_proto::DataType::Int8);
        self.initializers[i].raw_data = v.iter().map(|&b| b as u8).collect();
    }

    fn i32s(&mut self, name: &str, dims: &[usize], v: &[i32]) {
        let i = self.tensor(name, dims, pb::tensor_proto::DataType::Int32);
        // Raw bytes: protobuf stores a negative int32 as a 10-byte varint.
        self.initializers[i].raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    }

    fn i64s(&mut self, name: &str, v: &[i64]) {
        let i = self.tensor(name, &[v.len()], pb::tensor_proto::DataType::Int64);
        self.initializers[i].int64_data = v.to_vec();
    }

    fn node(&mut self, op: &str, inputs: &[&str], output: &str, attrs: Vec<pb::AttributeProto>) {
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: output.to_string(),
            op_type: op.to_string(),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// Scale and zero point initializers for an int8 tensor, by name.
    fn qparam_consts(&mut self, name: &str, scale: f32, zp: i8) -> (String, String) {
        let (s, z) = (format!("{name}_scale"), format!("{name}_zero_point"));
        if !self.initializers.iter().any(|t| t.name == s) {
            self.f32s(&s, &[], vec![scale]);
            self.i8s(&z, &[], &[zp]);
        }
        (s, z)
    }

    /// The int8 form of float tensor `x`, quantizing it here if no
    /// quantized layer produced it.
    fn int8_of(&mut self, x: &str) -> Result<(String, f32, i8), QuantizeError> {
        if let Some(q) = self.int8.get(x) {
            return Ok(q.clone());
        }
        let &(lo, hi) = self
            .ranges
            .get(x)
            .ok_or_else(|| QuantizeError::Unsupported(format!("no calibration range for {x}")))?;
        let (scale, zp) = qparams(lo, hi);
        let q = format!("{x}_q");
        let (s, z) = self.qparam_consts(&q, scale, zp);
        self.node("QuantizeLinear", &[x, &s, &z], &q, vec![]);
        self.report.quantize_nodes += 1;
        self.int8.insert(x.to_string(), (q.clone(), scale, zp));
        Ok((q, scale, zp))
    }

    /// Makes float tensor `x` exist, dequantizing its int8 form if only
    /// that was made.
    fn float_of(&mut self, x: &str) {
        if x.is_empty() || self.float.contains(x) {
            return;
        }
        if let Some((q, scale, zp)) = self.int8.get(x).cloned() {
            let (s, z) = self.qparam_consts(&q, scale, zp);
            self.node("DequantizeLinear", &[&q, &s, &z], x, vec![]);
            self.report.dequantize_nodes += 1;
            self.float.insert(x.to_string());
        }
    }
}

/// Fewest products per output a quantized layer sums.
pub const MIN_DEPTH: usize = 16;

/// A Conv or Gemm with constant weights, as the quantizer sees it.
struct Layer {
    /// Output channels.
    outputs: usize,
    /// Weights `[outputs, inputs, kernel...]` (a Gemm's as 1×1).
    weights: Vec<f32>,
    dims: Vec<usize>,
    bias: Vec<f32>,
    /// For a Gemm: its input width.
    gemm_inputs: Option<usize>,
}

fn layer(node: &pb::NodeProto, init: &HashMap<&str, &pb::TensorProto>) -> Option<Layer> {
    let w = init.get(node.input.get(1)?.as_str())?;
    let weights = floats(w)?;
    let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
    let outputs = *dims.first()?;
    let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => floats(init.get(b.as_str())?)?,
        None => vec![0.0; outputs],
    };
    match node.op_type.as_str() {
        "Conv" => Some(Layer {
            outputs,
            weights,
            dims,
            bias,
            gemm_inputs: None,
        }),
        // Only `x · Wᵀ + b` (the exporter's form) maps onto a 1×1 conv.
        "Gemm"
            if int_attr(node, "transB") == Some(1)
                && int_attr(node, "transA").unwrap_or(0) == 0
                && float_attr(node, "alpha").unwrap_or(1.0) == 1.0
                && float_attr(node, "beta").unwrap_or(1.0) == 1.0
                && dims.len() == 2
                && bias.len() == outputs =>
        {
            Some(Layer {
                outputs,
                weights,
                dims: vec![outputs, dims[1], 1, 1],
                bias,
                gemm_inputs: Some(dims[1]),
            })
        }
        _ => None,
    }
}

fn rewrite(
    model: &pb::ModelProto,
    ranges: &HashMap<String, (f32, f32)>,
    scales: WeightScales,
) -> Result<(pb::ModelProto, QuantizeReport), QuantizeError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| unsupported("no graph"))?;
    let init: HashMap<&str, &pb::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut consumers: HashMap<&str, usize> = HashMap::new();
    for n in &graph.node {
        for i in &n.input {
            *consumers.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &graph.output {
        *consumers.entry(o.name.as_str()).or_default() += 1;
    }
    let mut r = Rewriter {
        ranges,
        nodes: vec![],
        initializers: vec![],
        int8: HashMap::new(),
        float: graph
            .input
            .iter()
            .map(|i| i.name.clone())
            .chain(graph.initializer.iter().map(|t| t.name.clone()))
            .collect(),
        report: QuantizeReport::default(),
    };
    // Weights the quantized layers replace: not copied over.
    let mut replaced: HashSet<&str> = HashSet::new();
    let mut skip: HashSet<usize> = HashSet::new();
    for (ix, node) in graph.node.iter().enumerate() {
        if skip.contains(&ix) {
            continue;
        }
        // What stays f32 and why: the module's doc. A first convolution
        // over 1-3 channels is the short one (x86 runs it on an AMX tile
        // for 9 products).
        // The layer making the logits stays f32 too: a quantization step
        // there moves every probability the softmax computes from them.
        let is_output = |name: &str| graph.output.iter().any(|o| o.name == name);
        let logits = is_output(&node.output[0])
            || graph.node.iter().any(|n| {
                n.input.first() == node.output.first()
                    && (n.op_type == "Softmax"
                        || (n.op_type == "Identity" && is_output(&n.output[0])))
            });
        let Some(l) = layer(node, &init).filter(|l| {
            !logits
                && l.weights.len() / l.outputs >= MIN_DEPTH
                && int_attr(node, "group").unwrap_or(1) == 1
        }) else {
            for i in &node.input {
                r.float_of(i);
            }
            r.nodes.push(node.clone());
            r.float.extend(node.output.iter().cloned());
            continue;
        };
        let out = &node.output[0];
        // A Relu that alone consumes the output is folded into its range.
        let relu = graph.node.iter().enumerate().find(|(_, n)| {
            n.op_type == "Relu"
                && n.input.first() == Some(out)
                && consumers.get(out.as_str()) == Some(&1)
        });
        let y = match relu {
            Some((j, n)) => {
                skip.insert(j);
                r.report.folded_relus += 1;
                n.output[0].clone()
            }
            None => out.clone(),
        };
        let &(lo, hi) = ranges
            .get(&y)
            .ok_or_else(|| QuantizeError::Unsupported(format!("no calibration range for {y}")))?;
        let (lo, hi) = if relu.is_some() { (0.0, hi) } else { (lo, hi) };
        let (y_scale, y_zp) = qparams(lo, hi);
        let (xq, x_scale, x_zp) = r.int8_of(&node.input[0])?;

        // Symmetric int8 weights.
        let per = l.weights.len() / l.outputs;
        let absmax = |w: &[f32]| w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale_of = |m: f32| if m > 0.0 { m / 127.0 } else { 1.0 };
        let w_scales: Vec<f32> = match scales {
            WeightScales::PerTensor => vec![scale_of(absmax(&l.weights)); l.outputs],
            WeightScales::PerChannel => {
                l.weights.chunks(per).map(|r| scale_of(absmax(r))).collect()
            }
        };
        let wq: Vec<i8> = l
            .weights
            .chunks(per)
            .zip(&w_scales)
            .flat_map(|(row, s)| {
                row.iter()
                    .map(move |v| (v / s).round().clamp(-127.0, 127.0) as i8)
            })
            .collect();
        let bq: Vec<i32> = l
            .bias
            .iter()
            .zip(&w_scales)
            .map(|(b, ws)| (b / (x_scale * ws)).round() as i32)
            .collect();
        let name = format!("{y}_q");
        let (wn, wsn, wzn, bn) = (
            format!("{name}_w"),
            format!("{name}_w_scale"),
            format!("{name}_w_zero_point"),
            format!("{name}_bias"),
        );
        r.i8s(&wn, &l.dims, &wq);
        match scales {
            WeightScales::PerTensor => {
                r.f32s(&wsn, &[], vec![w_scales[0]]);
                r.i8s(&wzn, &[], &[0]);
            }
            WeightScales::PerChannel => {
                r.f32s(&wsn, &[l.outputs], w_scales);
                r.i8s(&wzn, &[l.outputs], &vec![0; l.outputs]);
            }
        }
        r.i32s(&bn, &[l.outputs], &bq);
        replaced.extend(node.input[1..].iter().map(String::as_str));
        let (xs, xz) = r.qparam_consts(&xq, x_scale, x_zp);
        let (ys, yz) = r.qparam_consts(&name, y_scale, y_zp);
        let x_in = match l.gemm_inputs {
            Some(k) => {
                let shape = format!("{name}_as_conv_shape");
                r.i64s(&shape, &[-1, k as i64, 1, 1]);
                let x4 = format!("{name}_as_conv_in");
                r.node("Reshape", &[&xq, &shape], &x4, vec![]);
                x4
            }
            None => xq.clone(),
        };
        let conv_out = match l.gemm_inputs {
            Some(_) => format!("{name}_as_conv_out"),
            None => name.clone(),
        };
        let attrs = match l.gemm_inputs {
            Some(_) => vec![attribute("kernel_shape", &Attr::Ints(vec![1, 1]))],
            None => node.attribute.clone(),
        };
        r.node(
            "QLinearConv",
            &[&x_in, &xs, &xz, &wn, &wsn, &wzn, &ys, &yz, &bn],
            &conv_out,
            attrs,
        );
        if l.gemm_inputs.is_some() {
            let shape = format!("{name}_from_conv_shape");
            r.i64s(&shape, &[-1, l.outputs as i64]);
            r.node("Reshape", &[&conv_out, &shape], &name, vec![]);
        }
        r.int8.insert(y.clone(), (name, y_scale, y_zp));
        r.report.quantized_layers += 1;
    }
    for o in &graph.output {
        r.float_of(&o.name);
    }
    let mut graph = graph.clone();
    let mut initializers: Vec<pb::TensorProto> = graph
        .initializer
        .iter()
        .filter(|t| {
            !replaced.contains(t.name.as_str()) || r.nodes.iter().any(|n| n.input.contains(&t.name))
        })
        .cloned()
        .collect();
    initializers.append(&mut r.initializers);
    graph.initializer = initializers;
    graph.node = r.nodes;
    let mut model = model.clone();
    model.graph = Some(graph);
    Ok((model, r.report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qparams_cover_the_range_and_keep_zero_exact() {
        let (s, z) = qparams(0.0, 6.0);
        assert_eq!(z, -128);
        assert!((s - 6.0 / 255.0).abs() < 1e-7);
        let (s, z) = qparams(-1.0, 3.0);
        // Both ends of the range within a step of the int8 ends.
        assert!(((-128 - z as i32) as f32 * s + 1.0).abs() < s);
        assert!(((127 - z as i32) as f32 * s - 3.0).abs() < s);
        // A constant tensor still gets a usable scale.
        assert_eq!(qparams(0.0, 0.0), (1.0, -128));
    }
}
