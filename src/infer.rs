//! One-shot inference on .npy files: `edgeinfer infer`.
//!
//! Any ONNX model with any number of f32 / i64 / u8 inputs: the inputs'
//! shapes are pinned from the files, so one model runs on whatever batch
//! size the files hold.

use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;

use crate::model::{InputPin, ModelError, ModelFile, TensorSpec};

/// Errors of `infer`.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// An input file could not be read as .npy of a supported type.
    #[error("{path}: expected a .npy file of numbers: {reason}")]
    Input {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The model refused the inputs or failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The output could not be written.
    #[error("{path}: cannot write output: {reason}")]
    Output {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An output file was asked for, but the model has no outputs.
    #[error("{model}: the model has no outputs")]
    NoOutput {
        /// The model file.
        model: String,
    },
}

impl InferError {
    /// True for bad input (files, model); false when writing failed.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, InferError::Output { .. })
    }
}

/// Reads a .npy file of any numeric type into a tensor.
pub fn read_tensor(path: &Path) -> Result<Tensor, InferError> {
    crate::npy::read(path).map_err(|e| InferError::Input {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Writes a tensor as .npy of its own type.
pub fn write_tensor(path: &Path, t: &Tensor) -> Result<(), InferError> {
    crate::npy::write(path, t).map_err(|e| InferError::Output {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// All outputs of one forward pass, with their specs.
#[derive(Debug)]
pub struct InferOutput {
    /// Output specs, in graph order.
    pub specs: Vec<TensorSpec>,
    /// Output tensors, in graph order.
    pub tensors: Vec<Tensor>,
}

impl InferOutput {
    /// `{"outputs":[{"name","dtype","shape","data"}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let outputs: Vec<serde_json::Value> = self
            .specs
            .iter()
            .zip(&self.tensors)
            .map(|(spec, t)| {
                let data: Vec<f64> = t
                    .cast_to::<f64>()
                    .ok()
                    .and_then(|f| {
                        f.to_plain_array_view::<f64>()
                            .ok()
                            .map(|v| v.iter().copied().collect())
                    })
                    .unwrap_or_default();
                serde_json::json!({
                    "name": spec.name,
                    "dtype": format!("{:?}", t.datum_type()),
                    "shape": t.shape(),
                    "data": data,
                })
            })
            .collect();
        serde_json::json!({ "outputs": outputs })
    }
}

/// Runs `model` once on the .npy `inputs`, pinned to the files' shapes.
pub fn infer_files(model: &Path, inputs: &[PathBuf]) -> Result<InferOutput, InferError> {
    let file = ModelFile::read(model)?;
    let mut tensors = inputs
        .iter()
        .map(|p| read_tensor(p))
        .collect::<Result<Vec<_>, _>>()?;
    // numpy writes float64 unless told otherwise: a float file for a float
    // input of another width is converted; any other mismatch is refused.
    for (t, declared) in tensors.iter_mut().zip(file.inputs()) {
        let (have, want) = (t.datum_type(), declared.dtype);
        if have != want && have.is_float() && want.is_float() {
            log::info!("input '{}': {have:?} converted to {want:?}", declared.name);
            *t = t
                .cast_to_dt(want)
                .map_err(|e| InferError::Input {
                    path: model.display().to_string(),
                    reason: e.to_string(),
                })?
                .into_owned();
        }
    }
    let pins: Vec<InputPin> = tensors
        .iter()
        .map(|t| InputPin {
            dtype: t.datum_type(),
            shape: t.shape().to_vec(),
        })
        .collect();
    let mut model = file.load(Some(&pins))?;
    let out = model.run(tensors.into_iter().map(|t| t.into_tvalue()).collect())?;
    Ok(InferOutput {
        specs: model.info().outputs.clone(),
        tensors: out.into_iter().map(|v| v.into_tensor()).collect(),
    })
}

/// `edgeinfer infer`: runs `model` on the .npy `inputs`, writes the first
/// output to `output` when given, and returns every output.
pub fn infer_command(
    model: &Path,
    inputs: &[PathBuf],
    output: Option<&Path>,
) -> Result<InferOutput, InferError> {
    let out = infer_files(model, inputs)?;
    if let Some(path) = output {
        let first = out.tensors.first().ok_or_else(|| InferError::NoOutput {
            model: model.display().to_string(),
        })?;
        write_tensor(path, first)?;
    }
    Ok(out)
}
