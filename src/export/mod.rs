//! The project's own ONNX writer.
//!
//! Models are written as plain ONNX protobuf (opset 13) through
//! `tract_onnx::pb` and prost, so exported files load in tract and in any other
//! ONNX runtime. The shipped models, the tests' CNNs and the host trainer all go
//! through [`GraphBuilder`].

pub mod cnn2d;
pub mod quantize;
pub mod reference;
pub mod zoo;

use std::path::Path;

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};

/// The opset every exported model declares.
pub const OPSET: i64 = 13;
/// ONNX IR version matching [`OPSET`].
pub const IR_VERSION: i64 = 7;

/// Errors raised while writing a model.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The file could not be written.
    #[error("{path}: cannot write model: {error}")]
    Io {
        /// The file being written.
        path: String,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A layer was given weights of the wrong size.
    #[error("{layer}: expected {expected} weights, got {got}")]
    Shape {
        /// Which layer.
        layer: String,
        /// Element count the layer needs.
        expected: usize,
        /// Element count given.
        got: usize,
    },
}

/// One dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named symbolic size (e.g. a batch dimension `N`), pinned at load time.
    Symbol(String),
}

impl From<usize> for Dim {
    fn from(n: usize) -> Self {
        Dim::Fixed(n)
    }
}

/// Element types the writer declares for graph inputs and outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    /// 32-bit float.
    F32,
    /// 64-bit signed integer.
    I64,
    /// 8-bit unsigned integer.
    U8,
}

impl ElemType {
    fn onnx_code(self) -> i32 {
        use pb::tensor_proto::DataType;
        match self {
            ElemType::F32 => DataType::Float as i32,
            ElemType::I64 => DataType::Int64 as i32,
            ElemType::U8 => DataType::Uint8 as i32,
        }
    }
}

/// An ONNX node attribute.
#[derive(Debug, Clone)]
pub enum Attr {
    /// A single integer.
    Int(i64),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A single float.
    Float(f32),
}

pub(crate) fn attribute(name: &str, value: &Attr) -> pb::AttributeProto {
    use pb::attribute_proto::AttributeType;
    let mut a = pb::AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            a.r#type = AttributeType::Int as i32;
            a.i = *i;
        }
        Attr::Ints(v) => {
            a.r#type = AttributeType::Ints as i32;
            a.ints = v.clone();
        }
        Attr::Float(f) => {
            a.r#type = AttributeType::Float as i32;
            a.f = *f;
        }
    }
    a
}

pub(crate) fn value_info(name: &str, elem: ElemType, shape: &[Dim]) -> pb::ValueInfoProto {
    let dim = shape
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
                Dim::Symbol(s) => dimension::Value::DimParam(s.clone()),
            }),
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem.onnx_code(),
                shape: Some(pb::TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

/// Builds an ONNX graph node by node.
///
/// Every helper returns the name of the value it produced, so layers chain:
/// `let h = g.relu(&g.gemm(&x, ...)?)`.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    name: String,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
    metadata: Vec<(String, String)>,
    counter: usize,
}

impl GraphBuilder {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Self {
        GraphBuilder {
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Declares a graph input and returns its name.
    pub fn input(&mut self, name: &str, elem: ElemType, shape: &[Dim]) -> String {
        self.inputs.push(value_info(name, elem, shape));
        name.to_string()
    }

    /// Declares `value` as a graph output, renaming it to `name` through an
    /// Identity node when the names differ.
    pub fn output(&mut self, value: &str, name: &str, elem: ElemType, shape: &[Dim]) {
        if value != name {
            self.nodes.push(pb::NodeProto {
                input: vec![value.to_string()],
                output: vec![name.to_string()],
                name: name.to_string(),
                op_type: "Identity".into(),
                ..Default::default()
            });
        }
        self.outputs.push(value_info(name, elem, shape));
    }

    /// Adds a key/value pair to the model's `metadata_props`.
    pub fn metadata(&mut self, key: &str, value: &str) {
        self.metadata.push((key.to_string(), value.to_string()));
    }

    /// Adds an f32 initializer of shape `dims` and returns its name.
    pub fn constant(&mut self, hint: &str, dims: &[usize], data: Vec<f32>) -> String {
        let name = self.fresh(hint);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: data,
            ..Default::default()
        });
        name
    }

    /// Adds an i64 initializer of shape `dims` and returns its name.
    pub fn constant_i64(&mut self, hint: &str, dims: &[usize], data: Vec<i64>) -> String {
        let name = self.fresh(hint);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: data,
            ..Default::default()
        });
        name
    }

    /// Adds a node with one output and returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.to_string(),
            attribute: attrs.iter().map(|(n, v)| attribute(n, v)).collect(),
            ..Default::default()
        });
        out
    }

    /// Fully connected layer `x · Wᵀ + b` as one Gemm node.
    /// `weights` is row-major `[outputs, inputs]` (PyTorch's layout).
    pub fn gemm(
        &mut self,
        x: &str,
        inputs: usize,
        outputs: usize,
        weights: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<String, ExportError> {
        check_len("Gemm weights", inputs * outputs, weights.len())?;
        check_len("Gemm bias", outputs, bias.len())?;
        let w = self.constant("W", &[outputs, inputs], weights);
        let b = self.constant("B", &[outputs], bias);
        Ok(self.node("Gemm", &[x, &w, &b], &[("transB", Attr::Int(1))]))
    }

    /// Fully connected layer as MatMul followed by Add.
    /// `weights` is row-major `[inputs, outputs]`, as MatMul multiplies.
    pub fn matmul_add(
        &mut self,
        x: &str,
        inputs: usize,
        outputs: usize,
        weights: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<String, ExportError> {
        check_len("MatMul weights", inputs * outputs, weights.len())?;
        check_len("Add bias", outputs, bias.len())?;
        let w = self.constant("W", &[inputs, outputs], weights);
        let b = self.constant("B", &[outputs], bias);
        let m = self.node("MatMul", &[x, &w], &[]);
        Ok(self.node("Add", &[&m, &b], &[]))
    }

    /// Convolution over 1-D (`kernel.len() == 1`) or 2-D inputs, with
    /// symmetric padding, stride and groups. `weights` is
    /// `[out_channels, in_channels / groups, kernel...]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: &[usize],
        stride: usize,
        pad: usize,
        groups: usize,
        weights: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<String, ExportError> {
        let rank = kernel.len();
        self.conv_with(
            x,
            (in_channels, out_channels, groups),
            kernel,
            &vec![stride; rank],
            &vec![pad; 2 * rank],
            weights,
            bias,
        )
    }

    /// [`conv`](Self::conv) with a stride per axis and ONNX `pads`
    /// (`[begin..., end...]`), for layers such as keyword spotting's
    /// 10×4 stride-2 "same" stem. `channels` is (in, out, groups).
    #[allow(clippy::too_many_arguments)]
    pub fn conv_with(
        &mut self,
        x: &str,
        channels: (usize, usize, usize),
        kernel: &[usize],
        strides: &[usize],
        pads: &[usize],
        weights: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<String, ExportError> {
        let (in_channels, out_channels, groups) = channels;
        let per_filter = in_channels / groups * kernel.iter().product::<usize>();
        check_len("Conv weights", out_channels * per_filter, weights.len())?;
        check_len("Conv bias", out_channels, bias.len())?;
        let mut dims = vec![out_channels, in_channels / groups];
        dims.extend_from_slice(kernel);
        let w = self.constant("W", &dims, weights);
        let b = self.constant("B", &[out_channels], bias);
        let ints = |v: &[usize]| Attr::Ints(v.iter().map(|&k| k as i64).collect());
        Ok(self.node(
            "Conv",
            &[x, &w, &b],
            &[
                ("kernel_shape", ints(kernel)),
                ("strides", ints(strides)),
                ("pads", ints(pads)),
                ("group", Attr::Int(groups as i64)),
            ],
        ))
    }

    /// Concatenation along `axis` (SqueezeNet's fire modules).
    pub fn concat(&mut self, parts: &[&str], axis: i64) -> String {
        self.node("Concat", parts, &[("axis", Attr::Int(axis))])
    }

    /// ReLU.
    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], &[])
    }

    /// Sigmoid.
    pub fn sigmoid(&mut self, x: &str) -> String {
        self.node("Sigmoid", &[x], &[])
    }

    /// Tanh.
    pub fn tanh(&mut self, x: &str) -> String {
        self.node("Tanh", &[x], &[])
    }

    /// Clip to `[min, max]` (ReLU6 is `clip(x, 0, 6)`).
    pub fn clip(&mut self, x: &str, min: f32, max: f32) -> String {
        let lo = self.constant("min", &[], vec![min]);
        let hi = self.constant("max", &[], vec![max]);
        self.node("Clip", &[x, &lo, &hi], &[])
    }

    /// Softmax over `axis`.
    pub fn softmax(&mut self, x: &str, axis: i64) -> String {
        self.node("Softmax", &[x], &[("axis", Attr::Int(axis))])
    }

    /// Flatten to 2-D at `axis`.
    pub fn flatten(&mut self, x: &str, axis: i64) -> String {
        self.node("Flatten", &[x], &[("axis", Attr::Int(axis))])
    }

    /// Max pooling with window `kernel` and stride `stride` (1-D or 2-D).
    pub fn max_pool(&mut self, x: &str, kernel: &[usize], stride: usize) -> String {
        self.pool("MaxPool", x, kernel, stride)
    }

    /// Average pooling with window `kernel` and stride `stride` (1-D or 2-D).
    pub fn avg_pool(&mut self, x: &str, kernel: &[usize], stride: usize) -> String {
        self.pool("AveragePool", x, kernel, stride)
    }

    fn pool(&mut self, op: &str, x: &str, kernel: &[usize], stride: usize) -> String {
        self.node(
            op,
            &[x],
            &[
                (
                    "kernel_shape",
                    Attr::Ints(kernel.iter().map(|&k| k as i64).collect()),
                ),
                ("strides", Attr::Ints(vec![stride as i64; kernel.len()])),
            ],
        )
    }

    /// Global average pooling over every spatial axis.
    pub fn global_avg_pool(&mut self, x: &str) -> String {
        self.node("GlobalAveragePool", &[x], &[])
    }

    /// Element-wise sum (residual connections).
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], &[])
    }

    /// `(x - mean) / std` with constants broadcast against `x`:
    /// normalization baked into the graph as its first nodes.
    pub fn normalize(&mut self, x: &str, dims: &[usize], mean: Vec<f32>, std: Vec<f32>) -> String {
        let m = self.constant("mean", dims, mean);
        let s = self.constant("std", dims, std);
        let centered = self.node("Sub", &[x, &m], &[]);
        self.node("Div", &[&centered, &s], &[])
    }

    /// The finished model.
    pub fn finish(self) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "edgeinfer".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(pb::GraphProto {
                name: self.name,
                node: self.nodes,
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            metadata_props: self
                .metadata
                .into_iter()
                .map(|(key, value)| pb::StringStringEntryProto { key, value })
                .collect(),
            ..Default::default()
        }
    }
}

fn check_len(layer: &str, expected: usize, got: usize) -> Result<(), ExportError> {
    if expected == got {
        Ok(())
    } else {
        Err(ExportError::Shape {
            layer: layer.into(),
            expected,
            got,
        })
    }
}

/// The model's protobuf bytes.
pub fn to_bytes(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Writes `model` to `path`.
pub fn write_model(model: &pb::ModelProto, path: &Path) -> Result<(), ExportError> {
    std::fs::write(path, to_bytes(model)).map_err(|error| ExportError::Io {
        path: path.display().to_string(),
        error,
    })
}
