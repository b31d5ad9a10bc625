//! What a model takes, gives and costs: for `check`, `profile` and the
//! `info` topic.

use std::collections::BTreeMap;

use tract_onnx::prelude::DatumType;

/// Name, shape and element type of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TensorSpec {
    /// Name in the graph.
    pub name: String,
    /// Concrete shape after pinning.
    pub shape: Vec<usize>,
    /// Element type, e.g. `F32`.
    pub dtype: String,
}

/// What `edgeinfer check` and the `info` topic report about a model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// Where the model came from (a path, or `embedded:NAME`).
    pub origin: String,
    /// Size of the ONNX file in bytes.
    pub file_size: u64,
    /// sha256 of the ONNX file, hex.
    pub sha256: String,
    /// Inputs with their pinned shapes.
    pub inputs: Vec<TensorSpec>,
    /// Outputs with their shapes.
    pub outputs: Vec<TensorSpec>,
    /// Number of weights stored in the file's initializers.
    pub params: u64,
    /// Multiply-accumulates per inference, from tract's cost model.
    pub macs: u64,
    /// Floating-point operations per inference (2 × MACs + divisions).
    pub flops: u64,
    /// The file's `metadata_props`.
    pub metadata: BTreeMap<String, String>,
    /// The layout the plan runs 2-D convolutions in.
    pub conv_layout: super::ConvLayout,
}

impl std::fmt::Display for ModelInfo {
    /// What `edgeinfer check --model` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model: {}", self.origin)?;
        writeln!(f, "  file size: {} bytes", self.file_size)?;
        writeln!(f, "  sha256: {}", self.sha256)?;
        // Every value stored in the initializers: a trainer's count of
        // trainable weights leaves out baked-in constants (normalization).
        writeln!(
            f,
            "  params: {} (values stored in the file, constants included)",
            self.params
        )?;
        writeln!(f, "  MACs per inference: {}", self.macs)?;
        writeln!(f, "  2-D convolutions run: {}", self.conv_layout)?;
        writeln!(f, "  FLOPs per inference: {}", self.flops)?;
        for (title, tensors) in [("inputs", &self.inputs), ("outputs", &self.outputs)] {
            writeln!(f, "  {title}:")?;
            for t in tensors {
                writeln!(f, "    {} {} {:?}", t.name, t.dtype, t.shape)?;
            }
        }
        if !self.metadata.is_empty() {
            writeln!(f, "  metadata:")?;
            for (k, v) in &self.metadata {
                writeln!(f, "    {k} = {v}")?;
            }
        }
        Ok(())
    }
}

/// A model input as the ONNX file declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredInput {
    /// Name in the graph.
    pub name: String,
    /// Element type.
    pub dtype: DatumType,
    /// Dimensions; `None` for a symbolic one (e.g. batch `N`).
    pub dims: Vec<Option<usize>>,
}

impl std::fmt::Display for DeclaredInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self
            .dims
            .iter()
            .map(|d| d.map(|n| n.to_string()).unwrap_or_else(|| "?".into()))
            .collect();
        write!(f, "'{}' {:?} [{}]", self.name, self.dtype, dims.join(", "))
    }
}
