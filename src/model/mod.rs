//! The model stage: load an ONNX file with tract, pin concrete input shapes,
//! optimize once, then run many times on one reused state.
//!
//! Shapes are pinned *before* `into_optimized` because tract only picks its
//! fastest kernels (and only computes exact costs) for concrete shapes.

use std::path::Path;

use prost::Message;
use sha2::{Digest, Sha256};
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Cost;
use tract_onnx::tract_core::tract_linalg::multithread::Executor;

mod direct;
#[cfg(test)]
mod fixtures;
#[cfg(target_arch = "x86_64")]
mod gemm_conv;
mod info;
mod kernel;
pub mod meta;
#[cfg(target_arch = "x86_64")]
mod narrow;
#[cfg(target_arch = "x86_64")]
mod packed;
mod rewrite;
#[cfg(target_arch = "x86_64")]
mod windows;

pub use info::{DeclaredInput, ModelInfo, TensorSpec};
pub use meta::meta_list;

/// `[model]`: the ONNX model to run.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Path of the .onnx file, relative to the config file.
    pub path: std::path::PathBuf,
    /// Threads for tract's matrix products. 1 (the default) runs the model
    /// on the pipeline thread; more only pays off for models of millions of
    /// multiply-accumulates per inference (see BENCHMARKS.md). Values above 1
    /// need a build with the `threads` feature.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Memory layout tract runs 2-D convolutions in (the model's input
    /// keeps its own): `nchw` (the default) or `nhwc`. Which is faster
    /// depends on the network, by up to about 10 % either way on the
    /// benchmark set (BENCHMARKS.md); `edgeinfer profile --conv-layout`
    /// times both. Both give the same results.
    #[serde(default)]
    pub conv_layout: ConvLayout,
}

fn default_threads() -> usize {
    1
}

/// `[model] conv_layout`: how tract lays out 2-D convolutions.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConvLayout {
    /// Channels first, as ONNX stores them.
    #[default]
    Nchw,
    /// Channels last: tract moves the channels to the innermost axis
    /// around the convolutions, which vectorizes depthwise ones over
    /// channels at any stride.
    Nhwc,
}

impl ModelConfig {
    /// A config for the model at `path`, with default settings.
    pub fn new(path: &Path) -> Self {
        ModelConfig {
            path: path.to_path_buf(),
            threads: default_threads(),
            conv_layout: ConvLayout::default(),
        }
    }

    /// Checks `[model]`.
    pub fn validate(&self, p: &mut crate::problem::Problems) {
        if self.threads == 0 {
            p.push("model.threads", "expected at least 1, found 0");
        } else if self.threads > 1 && !cfg!(feature = "threads") {
            p.push(
                "model.threads",
                format!(
                    "expected 1 in a build without the `threads` feature, found {}",
                    self.threads
                ),
            );
        }
    }
}

impl std::fmt::Display for ConvLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvLayout::Nchw => "nchw",
            ConvLayout::Nhwc => "nhwc",
        })
    }
}

impl std::str::FromStr for ConvLayout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nchw" => Ok(ConvLayout::Nchw),
            "nhwc" => Ok(ConvLayout::Nhwc),
            _ => Err(format!("expected nchw or nhwc, found {s:?}")),
        }
    }
}

/// Errors raised while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read.
    #[error("{path}: cannot read model file: {error}")]
    Read {
        /// The model file.
        path: String,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The bytes are not an ONNX model.
    #[error("{path}: not an ONNX model: expected an ONNX protobuf with a graph ({reason})")]
    NotOnnx {
        /// The model file.
        path: String,
        /// Why decoding failed.
        reason: String,
    },
    /// tract could not turn the graph into a runnable plan.
    #[error("{path}: tract cannot load the model: {reason}")]
    Load {
        /// The model file.
        path: String,
        /// tract's error chain, on one line.
        reason: String,
    },
    /// A given input does not fit the model's declared input.
    #[error("{path}: input {index} ('{name}'): expected {expected}, got {got}")]
    Input {
        /// The model file.
        path: String,
        /// Input position.
        index: usize,
        /// Input name in the graph.
        name: String,
        /// What the model declares.
        expected: String,
        /// What was given.
        got: String,
    },
    /// The forward pass failed.
    #[error("inference failed: {0}")]
    Run(String),
}

/// An ONNX file read and decoded, not yet turned into a plan: enough to read
/// its metadata and declared inputs before choosing the shapes to pin.
#[derive(Debug, Clone)]
pub struct ModelFile {
    origin: String,
    bytes: Vec<u8>,
    proto: pb::ModelProto,
    declared: Vec<DeclaredInput>,
}

impl ModelFile {
    /// Reads and decodes `path`.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|error| ModelError::Read {
            path: origin.clone(),
            error,
        })?;
        Self::from_bytes(bytes, &origin)
    }

    /// Decodes ONNX `bytes`; `origin` names them in errors.
    pub fn from_bytes(bytes: Vec<u8>, origin: &str) -> Result<Self, ModelError> {
        let not_onnx = |reason: String| ModelError::NotOnnx {
            path: origin.into(),
            reason,
        };
        let proto = pb::ModelProto::decode(&bytes[..]).map_err(|e| not_onnx(e.to_string()))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| not_onnx("no graph in the file".into()))?;
        if graph.node.is_empty() || graph.output.is_empty() {
            return Err(not_onnx("the graph has no nodes or no outputs".into()));
        }
        check_names(graph).map_err(not_onnx)?;
        let declared = declared_inputs(graph);
        Ok(ModelFile {
            origin: origin.into(),
            bytes,
            proto,
            declared,
        })
    }

    /// Where the bytes came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// sha256 of the file, 64 hex digits.
    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.bytes))
    }

    /// The graph inputs (initializers excluded).
    pub fn inputs(&self) -> &[DeclaredInput] {
        &self.declared
    }

    /// The decoded ONNX model.
    pub fn proto(&self) -> &pb::ModelProto {
        &self.proto
    }

    /// One `metadata_props` value.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.proto
            .metadata_props
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    }

    /// `int8` for a model with quantized layers (QLinearConv,
    /// QLinearMatMul, ConvInteger, MatMulInteger), else `f32`.
    pub fn precision(&self) -> &'static str {
        let quantized = self.proto.graph.as_ref().is_some_and(|g| {
            g.node.iter().any(|n| {
                matches!(
                    n.op_type.as_str(),
                    "QLinearConv" | "QLinearMatMul" | "ConvInteger" | "MatMulInteger"
                )
            })
        });
        if quantized {
            "int8"
        } else {
            "f32"
        }
    }

    /// Bytes of the stored weights: element count × element size of every
    /// initializer.
    pub fn initializer_bytes(&self) -> u64 {
        use pb::tensor_proto::DataType as D;
        let Some(graph) = self.proto.graph.as_ref() else {
            return 0;
        };
        graph
            .initializer
            .iter()
            .map(|t| {
                // Saturating: the dims are the file's word, not a promise.
                let n = t
                    .dims
                    .iter()
                    .fold(1u64, |n, d| n.saturating_mul((*d).max(0) as u64));
                let size = match D::try_from(t.data_type) {
                    Ok(D::Double | D::Int64 | D::Uint64) => 8,
                    Ok(D::Float16 | D::Bfloat16 | D::Int16 | D::Uint16) => 2,
                    Ok(D::Int8 | D::Uint8 | D::Bool) => 1,
                    _ => 4,
                };
                n * size
            })
            .sum()
    }

    /// Builds the optimized plan. `pins` gives the concrete type and shape of
    /// each input; `None` takes the declared shapes with symbolic dimensions
    /// (batch) set to 1.
    pub fn load(&self, pins: Option<&[InputPin]>) -> Result<Model, ModelError> {
        self.load_with(pins, 1, ConvLayout::default())
    }

    /// [`ModelFile::load`] with `threads` worker threads for tract's matrix
    /// products (1: everything on the calling thread; more needs the
    /// `threads` feature) and 2-D convolutions in `layout`.
    pub fn load_with(
        &self,
        pins: Option<&[InputPin]>,
        threads: usize,
        layout: ConvLayout,
    ) -> Result<Model, ModelError> {
        let origin = self.origin.as_str();
        let pins: Vec<InputPin> = match pins {
            Some(p) => {
                check_pins(origin, &self.declared, p)?;
                p.to_vec()
            }
            None => self
                .declared
                .iter()
                .map(|d| InputPin {
                    dtype: d.dtype,
                    shape: d.dims.iter().map(|n| n.unwrap_or(1)).collect(),
                })
                .collect(),
        };
        let load_err = |e: TractError| ModelError::Load {
            path: origin.into(),
            reason: format!("{e:#}"),
        };
        let mut inference = tract_onnx::onnx()
            .model_for_proto_model(&self.proto)
            .map_err(load_err)?;
        for (i, pin) in pins.iter().enumerate() {
            inference = inference
                .with_input_fact(i, InferenceFact::dt_shape(pin.dtype, pin.shape.clone()))
                .map_err(load_err)?;
        }
        let mut typed = inference
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(load_err)?;
        let (macs, divs) = cost(&typed).map_err(load_err)?;
        let graph = self.proto.graph.as_ref().expect("checked in from_bytes");
        let outputs = typed
            .output_outlets()
            .map_err(load_err)?
            .iter()
            .zip(graph.output.iter())
            .map(|(o, vi)| {
                let fact = typed.outlet_fact(*o)?;
                Ok(TensorSpec {
                    name: vi.name.clone(),
                    shape: fact
                        .shape
                        .as_concrete()
                        .map(|s| s.to_vec())
                        .unwrap_or_default(),
                    dtype: format!("{:?}", fact.datum_type),
                })
            })
            .collect::<TractResult<Vec<_>>>()
            .map_err(load_err)?;
        let inputs = self
            .declared
            .iter()
            .zip(&pins)
            .map(|(d, pin)| TensorSpec {
                name: d.name.clone(),
                shape: pin.shape.clone(),
                dtype: format!("{:?}", pin.dtype),
            })
            .collect();
        let options = tract_onnx::tract_core::runtime::RunOptions {
            executor: executor(origin, threads)?,
            ..Default::default()
        };
        let plan = match layout {
            ConvLayout::Nchw => rewrite::direct_kernels(&mut typed, threads).map(|_| typed),
            ConvLayout::Nhwc => to_nhwc(typed),
        }
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable_with_options(&options))
        .map_err(load_err)?;
        let state = plan.spawn().map_err(load_err)?;
        let info = ModelInfo {
            origin: origin.into(),
            file_size: self.bytes.len() as u64,
            sha256: self.sha256(),
            inputs,
            outputs,
            params: graph
                .initializer
                .iter()
                .map(|t| t.dims.iter().product::<i64>().max(0) as u64)
                .sum(),
            macs,
            flops: 2 * macs + divs,
            conv_layout: layout,
            metadata: self
                .proto
                .metadata_props
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect(),
        };
        Ok(Model {
            info,
            state,
            input_dt: pins.iter().map(|p| p.dtype).collect(),
        })
    }
}

/// A loaded, optimized model with its run state.
pub struct Model {
    info: ModelInfo,
    state: TypedSimpleState,
    input_dt: Vec<DatumType>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish()
    }
}

/// One output of a forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, flat, row-major.
    pub values: Vec<f32>,
}

/// Wall time one node of the optimized plan took, summed over passes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeTime {
    /// Its name in tract's optimized graph: the ONNX node it came from,
    /// with a suffix for each rewrite.
    pub name: String,
    /// tract's name of the optimized operator (`OptMatMul`, `DepthWise`, ...).
    pub op: String,
    /// What tract says about the node (the kernel a matrix product runs,
    /// its geometry) and the shape it outputs.
    pub detail: String,
    /// Seconds spent in it.
    pub secs: f64,
    /// Times it ran.
    pub evals: u64,
}

fn node_detail(node: &tract_onnx::tract_core::model::TypedNode) -> String {
    let mut parts = node.op.info().unwrap_or_default();
    if let Some(o) = node.outputs.first() {
        parts.push(format!("out {:?}", o.fact.shape));
    }
    parts.join("; ")
}

/// A concrete input to pin: element type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPin {
    /// Element type.
    pub dtype: DatumType,
    /// Concrete shape.
    pub shape: Vec<usize>,
}

impl Model {
    /// Reads `path` and builds its plan (see [`ModelFile::load`]).
    pub fn load(path: &Path, pins: Option<&[InputPin]>) -> Result<Model, ModelError> {
        ModelFile::read(path)?.load(pins)
    }

    /// What the model takes, gives and costs.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// One forward pass over tensors of the pinned shapes; all outputs.
    pub fn run(&mut self, inputs: TVec<TValue>) -> Result<TVec<TValue>, ModelError> {
        self.state
            .run(inputs)
            .map_err(|e| ModelError::Run(format!("{e:#}")))
    }

    /// One forward pass like [`run_f32`](Self::run_f32), timing each
    /// node of the optimized plan: adds its wall time into `per_node`,
    /// keyed by node id.
    pub fn run_f32_per_node(
        &mut self,
        input: &[f32],
        per_node: &mut std::collections::BTreeMap<usize, NodeTime>,
    ) -> Result<(), ModelError> {
        let tensor = self.f32_input(input)?;
        self.state
            .run_plan_with_eval(tvec!(tensor.into()), |ctx, state, node, inputs| {
                let t = std::time::Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, state, node, inputs);
                let e = per_node.entry(node.id).or_insert_with(|| NodeTime {
                    name: node.name.clone(),
                    op: node.op.name().to_string(),
                    detail: node_detail(node),
                    ..Default::default()
                });
                e.secs += t.elapsed().as_secs_f64();
                e.evals += 1;
                out
            })
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        Ok(())
    }

    /// The single input tensor of `input`'s values, in the pinned shape:
    /// f32, or u8 for image models that take bytes (the values are then
    /// whole numbers 0-255).
    fn f32_input(&self, input: &[f32]) -> Result<Tensor, ModelError> {
        let ([spec], [dt]) = (self.info.inputs.as_slice(), self.input_dt.as_slice()) else {
            return Err(ModelError::Run(
                "run_f32 needs a model with exactly one f32 or u8 input".into(),
            ));
        };
        let shaped = |t: Result<Tensor, _>| {
            t.map_err(|e: TractError| {
                ModelError::Run(format!("input of {} values: {e:#}", input.len()))
            })
        };
        if *dt == f32::datum_type() {
            shaped(Tensor::from_shape(&spec.shape, input))
        } else if *dt == u8::datum_type() {
            let bytes: Vec<u8> = input.iter().map(|v| v.clamp(0.0, 255.0) as u8).collect();
            shaped(Tensor::from_shape(&spec.shape, &bytes))
        } else {
            Err(ModelError::Run(
                "run_f32 needs a model with exactly one f32 or u8 input".into(),
            ))
        }
    }

    /// One forward pass like [`run_f32`](Self::run_f32), returning every
    /// output as (shape, values): what detectors with several outputs need.
    pub fn run_f32_all(&mut self, input: &[f32]) -> Result<Vec<Output>, ModelError> {
        let tensor = self.f32_input(input)?;
        let out = self.run(tvec!(tensor.into()))?;
        out.iter()
            .enumerate()
            .map(|(i, t)| {
                let t = t
                    .cast_to::<f32>()
                    .map_err(|e| ModelError::Run(format!("output {i}: {e:#}")))?;
                let view = t
                    .to_plain_array_view::<f32>()
                    .map_err(|e| ModelError::Run(format!("output {i}: {e:#}")))?;
                Ok(Output {
                    shape: view.shape().to_vec(),
                    values: flat(&view),
                })
            })
            .collect()
    }

    /// One forward pass of a single-input f32 model: `input` is the flat
    /// tensor in the pinned shape; returns the first output, flattened.
    pub fn run_f32(&mut self, input: &[f32]) -> Result<Vec<f32>, ModelError> {
        let tensor = self.f32_input(input)?;
        let out = self.run(tvec!(tensor.into()))?;
        let first = out
            .first()
            .ok_or_else(|| ModelError::Run("the model has no outputs".into()))?;
        let view = first
            .to_plain_array_view::<f32>()
            .map_err(|e| ModelError::Run(format!("first output: {e:#}")))?;
        Ok(flat(&view))
    }
}

/// `None` keeps tract's default, which runs on the calling thread.
fn executor(origin: &str, threads: usize) -> Result<Option<Executor>, ModelError> {
    match threads {
        0 => Err(ModelError::Load {
            path: origin.into(),
            reason: "threads must be at least 1".into(),
        }),
        1 => Ok(None),
        #[cfg(feature = "threads")]
        n => Ok(Some(Executor::multithread_with_name(n, "edgeinfer-model"))),
        #[cfg(not(feature = "threads"))]
        n => Err(ModelError::Load {
            path: origin.into(),
            reason: format!("threads = {n} needs a build with the `threads` feature"),
        }),
    }
}

/// Checks what tract's ONNX parser takes on trust (it panics otherwise,
/// found by fuzzing): every graph output names a tensor that a node, a
/// graph input or an initializer provides.
fn check_names(graph: &pb::GraphProto) -> Result<(), String> {
    let known: std::collections::HashSet<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
        .chain(
            graph
                .node
                .iter()
                .flat_map(|n| n.output.iter().map(String::as_str)),
        )
        .filter(|n| !n.is_empty())
        .collect();
    match graph
        .output
        .iter()
        .find(|o| !known.contains(o.name.as_str()))
    {
        Some(o) => Err(format!(
            "graph output {:?} is not produced by any node, input or initializer",
            o.name
        )),
        None => Ok(()),
    }
}

fn declared_inputs(graph: &pb::GraphProto) -> Vec<DeclaredInput> {
    use pb::tensor_shape_proto::dimension::Value;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph
        .input
        .iter()
        .filter(|vi| !initializers.contains(vi.name.as_str()))
        .map(|vi| {
            let (dtype, dims) = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(pb::type_proto::Value::TensorType(t)) => {
                    let dims = t
                        .shape
                        .as_ref()
                        .map(|s| {
                            s.dim
                                .iter()
                                .map(|d| match d.value {
                                    Some(Value::DimValue(n)) if n > 0 => Some(n as usize),
                                    _ => None,
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    (onnx_datum_type(t.elem_type), dims)
                }
                None => (f32::datum_type(), vec![]),
            };
            DeclaredInput {
                name: vi.name.clone(),
                dtype,
                dims,
            }
        })
        .collect()
}

fn onnx_datum_type(code: i32) -> DatumType {
    use pb::tensor_proto::DataType as D;
    match D::try_from(code) {
        Ok(D::Int64) => i64::datum_type(),
        Ok(D::Int32) => i32::datum_type(),
        Ok(D::Int16) => i16::datum_type(),
        Ok(D::Int8) => i8::datum_type(),
        Ok(D::Uint64) => u64::datum_type(),
        Ok(D::Uint32) => u32::datum_type(),
        Ok(D::Uint16) => u16::datum_type(),
        Ok(D::Uint8) => u8::datum_type(),
        Ok(D::Double) => f64::datum_type(),
        Ok(D::Float16) => f16::datum_type(),
        Ok(D::Bool) => bool::datum_type(),
        _ => f32::datum_type(),
    }
}

/// True when a concrete `shape` fits `dims` (symbolic dimensions take anything).
pub fn shape_fits(dims: &[Option<usize>], shape: &[usize]) -> bool {
    dims.is_empty()
        || (dims.len() == shape.len()
            && dims
                .iter()
                .zip(shape)
                .all(|(d, &n)| d.is_none_or(|m| m == n)))
}

fn check_pins(
    origin: &str,
    declared: &[DeclaredInput],
    pins: &[InputPin],
) -> Result<(), ModelError> {
    if pins.len() != declared.len() {
        return Err(ModelError::Input {
            path: origin.into(),
            index: pins.len().min(declared.len()),
            name: declared
                .get(pins.len())
                .map(|d| d.name.clone())
                .unwrap_or_default(),
            expected: format!("{} inputs", declared.len()),
            got: format!("{} inputs", pins.len()),
        });
    }
    for (i, (d, pin)) in declared.iter().zip(pins).enumerate() {
        if d.dtype != pin.dtype || !shape_fits(&d.dims, &pin.shape) {
            return Err(ModelError::Input {
                path: origin.into(),
                index: i,
                name: d.name.clone(),
                expected: d.to_string(),
                got: format!("{:?} {:?}", pin.dtype, pin.shape),
            });
        }
    }
    Ok(())
}

/// Sums tract's per-node cost model: (multiply-accumulates, divisions).
fn cost(model: &TypedModel) -> TractResult<(u64, u64)> {
    let (mut macs, mut divs) = (0u64, 0u64);
    for node in model.nodes() {
        let inputs = model.node_input_facts(node.id)?;
        for (kind, count) in node.op.cost(&inputs)? {
            let n = count.to_i64().unwrap_or(0).max(0) as u64;
            match kind {
                Cost::FMA(_) => macs += n,
                Cost::Div(_) => divs += n,
                _ => {}
            }
        }
    }
    Ok((macs, divs))
}

/// The values of `view`, row-major: a copy of the buffer when it is
/// contiguous (an element walk takes milliseconds for a feature map of a
/// million values).
fn flat(view: &tract_ndarray::ArrayViewD<f32>) -> Vec<f32> {
    match view.as_slice() {
        Some(values) => values.to_vec(),
        None => view.iter().copied().collect(),
    }
}

/// `model` with its convolutions channels-last (tract's `conv_nhwc`
/// rewrite), decluttered again so the axis moves between consecutive
/// convolutions cancel out.
fn to_nhwc(mut model: TypedModel) -> TractResult<TypedModel> {
    let nhwc = tract_onnx::tract_core::transform::get_transform("conv_nhwc")?
        .ok_or_else(|| TractError::msg("tract has no conv_nhwc transform"))?;
    nhwc.transform(&mut model)?;
    model.into_decluttered()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{ElemType, GraphBuilder};

    #[test]
    fn run_f32_on_a_model_without_inputs_is_an_error_not_a_panic() {
        let mut g = GraphBuilder::new("constant");
        let c = g.constant("c", &[1, 2], vec![1.0, 2.0]);
        let y = g.relu(&c);
        g.output(&y, "y", ElemType::F32, &[1.into(), 2.into()]);
        let file = ModelFile::from_bytes(crate::export::to_bytes(&g.finish()), "c.onnx").unwrap();
        assert!(file.inputs().is_empty());
        let mut model = file.load(None).unwrap();
        let err = model.run_f32(&[1.0]).unwrap_err();
        assert!(
            err.to_string().contains("exactly one f32 or u8 input"),
            "{err}"
        );
    }
}
