//! One-shot inference on .npy files or images: `edgeinfer infer`.
//!
//! Any ONNX model with any number of f32 / i64 / u8 inputs: the inputs'
//! shapes are pinned from the files, so one model runs on whatever batch
//! size the files hold.

use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;

use crate::config::Config;
use crate::model::{ConvLayout, InputPin, ModelError, ModelFile, Output, TensorSpec};
use crate::postprocess::{Postprocess, PostprocessConfig};
use crate::schema::{Prediction, ResultRecord};

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
    /// The model and its image settings do not fit.
    #[error("{0}")]
    Config(String),
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
pub fn infer_files(
    model: &Path,
    inputs: &[PathBuf],
    layout: ConvLayout,
) -> Result<InferOutput, InferError> {
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
    let mut model = file.load_with(Some(&pins), 1, layout)?;
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
    layout: ConvLayout,
) -> Result<InferOutput, InferError> {
    let out = infer_files(model, inputs, layout)?;
    if let Some(path) = output {
        let first = out.tensors.first().ok_or_else(|| InferError::NoOutput {
            model: model.display().to_string(),
        })?;
        write_tensor(path, first)?;
    }
    Ok(out)
}

/// One image's outcome in `infer --image`.
#[derive(Debug)]
pub struct ImageResult {
    /// The image file.
    pub file: PathBuf,
    /// The postprocessed result (`None` when `min_score` filtered it) and
    /// every output, or why the image could not be run.
    pub outcome: Result<(Option<Prediction>, Vec<Output>), String>,
}

impl ImageResult {
    /// The JSON line of `infer --image --json`: the file name and the
    /// postprocessed result (class, label, score, top; or detections), or
    /// the error.
    pub fn to_json(&self, labels: &[String]) -> serde_json::Value {
        let file = self.file.display().to_string();
        match &self.outcome {
            Ok((Some(p), _)) => {
                let mut v = ResultRecord {
                    seq: 0,
                    ts_ms: 0,
                    result: p.clone(),
                    source: None,
                }
                .to_json(labels);
                if let Some(m) = v.as_object_mut() {
                    m.remove("seq");
                    m.remove("ts_ms");
                    m.insert("file".into(), serde_json::json!(file));
                }
                v
            }
            Ok((None, _)) => serde_json::json!({ "file": file, "filtered": true }),
            Err(e) => serde_json::json!({ "file": file, "error": e }),
        }
    }
}

/// What `infer --image` produced.
#[derive(Debug)]
pub struct ImageRun {
    /// Class names, empty when unknown.
    pub labels: Vec<String>,
    /// One per image, in order.
    pub results: Vec<ImageResult>,
}

/// `edgeinfer infer --image`: one forward pass per image, with the image
/// stage and postprocessing `config` resolves for its model (its `[image]`
/// over the model's metadata; classification with the `top_k` best when
/// neither the config nor the model names a task). A bad image is an error
/// in its own result; the others still run. With `output`, the first
/// outputs of the images that ran are written stacked along the first axis.
pub fn infer_images(
    config: &Config,
    images: &[PathBuf],
    top_k: usize,
    output: Option<&Path>,
) -> Result<ImageRun, InferError> {
    let file = ModelFile::read(&config.resolve(&config.model.path))?;
    let mut config = config.clone();
    let classify_default =
        config.postprocess.is_none() && file.metadata(crate::model::meta::TASK).is_none();
    if classify_default {
        config.postprocess = Some(PostprocessConfig::Classify {
            softmax: false,
            top_k: 1,
            labels: vec![],
            labels_file: None,
            min_score: None,
        });
    }
    let mut prepared =
        crate::pipeline::prepare::prepare_for(&config, &file, None, true).map_err(|ps| {
            InferError::Config(
                ps.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
    let outputs: usize = prepared
        .model
        .info()
        .outputs
        .first()
        .map(|o| o.shape.iter().product())
        .unwrap_or(0);
    if classify_default {
        prepared.postprocess = Postprocess::Classify {
            softmax: false,
            top_k: top_k.clamp(1, outputs.max(1)),
            min_score: None,
        };
    }
    let image = prepared
        .image
        .clone()
        .ok_or_else(|| InferError::Config("the model has no image stage".into()))?;
    let mut input = Vec::new();
    let mut results = Vec::with_capacity(images.len());
    for path in images {
        let outcome = std::fs::read(path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|bytes| image.run(&bytes, &mut input).map_err(|e| e.to_string()))
            .and_then(|geometry| {
                let outs = prepared
                    .model
                    .run_f32_all(&input)
                    .map_err(|e| e.to_string())?;
                let p = prepared
                    .postprocess
                    .apply_all(&input, &outs, Some(&geometry));
                Ok((p, outs))
            });
        results.push(ImageResult {
            file: path.clone(),
            outcome,
        });
    }
    if let Some(path) = output {
        let firsts: Vec<&Output> = results
            .iter()
            .filter_map(|r| r.outcome.as_ref().ok().and_then(|(_, o)| o.first()))
            .collect();
        let Some(first) = firsts.first() else {
            return Err(InferError::NoOutput {
                model: file.origin().into(),
            });
        };
        let mut shape = first.shape.clone();
        if shape.first() == Some(&1) {
            shape[0] = firsts.len();
        } else {
            shape.insert(0, firsts.len());
        }
        let values: Vec<f32> = firsts.iter().flat_map(|o| o.values.clone()).collect();
        let t = Tensor::from_shape(&shape, &values).map_err(|e| InferError::Output {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        write_tensor(path, &t)?;
    }
    Ok(ImageRun {
        labels: prepared.labels,
        results,
    })
}
