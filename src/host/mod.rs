//! The host companion (`edgeinfer-host`, feature `host`): train small
//! models on CSV data or image folders, export them to ONNX for the device, verify the export
//! against the trainer, record training data with the device's own sources,
//! and decode what devices publish.

mod args;
pub mod collect;
pub mod data;
pub mod fleet;
pub mod images;
pub mod listen;
pub mod net;
pub mod quantize;
pub mod record;
pub mod report;
pub mod split;
pub mod train;

use std::path::{Path, PathBuf};

pub use args::{LearningRate, TrainArgs};

use serde::Serialize;
use tract_onnx::prelude::*;

use crate::model::meta;
use data::{DataSpec, Dataset, Targets, Task};
use images::ImageSpec;
use net::{Activation, Arch, Net};
use train::{fit, kfold, plan_splits, Epoch, FitOptions, Metrics};

/// Errors of the host commands.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A bad input file or value (exit code 2).
    #[error("{file}: {message}")]
    Input {
        /// The file or flag at fault.
        file: String,
        /// What was expected.
        message: String,
    },
    /// Flags that do not fit together (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The model file could not be used (exit code 2).
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// Training failed (exit code 1).
    #[error("training: {0}")]
    Train(String),
    /// An output could not be written (exit code 1).
    #[error("{file}: cannot write: {message}")]
    Output {
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
    /// The exported model disagrees with the trainer (exit code 1).
    #[error("verify: {0}")]
    Mismatch(String),
    /// Broker trouble or records that did not arrive (exit code 1).
    #[error("{0}")]
    Mqtt(String),
    /// The config's source could not start (exit code 2).
    #[error(transparent)]
    Build(#[from] crate::pipeline::BuildError),
    /// The source failed while reading (exit code 1).
    #[error("source stopped: {0}")]
    Source(crate::source::SourceError),
    /// The database could not be opened or used (exit code 2 for a
    /// schema this build must not touch, else 1).
    #[error("{db}: {error}")]
    Store {
        /// The `--db` argument (a password in it is hidden).
        db: String,
        /// What went wrong.
        error: collect::store::StoreError,
    },
}

impl HostError {
    /// 2 for bad input, 1 for failures while working.
    pub fn exit_code(&self) -> u8 {
        match self {
            HostError::Input { .. }
            | HostError::Usage(_)
            | HostError::Model(_)
            | HostError::Build(_) => 2,
            HostError::Store { error, .. } if !error.is_transient() => 2,
            _ => 1,
        }
    }
}

/// Largest difference allowed between the trainer and the exported model.
pub const VERIFY_TOLERANCE: f32 = 1e-4;

/// `edgeinfer-host train`.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The CSV file, or with `images` the image folder.
    pub data: PathBuf,
    /// `data` is an image folder (one subfolder per class), read this way.
    pub images: Option<ImageSpec>,
    /// Columns, task, windows, cleaning.
    pub spec: DataSpec,
    /// Network and optimization.
    pub fit: FitOptions,
    /// Validation fraction.
    pub val_split: f64,
    /// Test fraction.
    pub test_split: f64,
    /// Also estimate the metric by k-fold cross-validation.
    pub kfold: Option<usize>,
    /// Output directory.
    pub out: PathBuf,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
    /// Also write the int8 model (`model-int8.onnx`).
    pub quantize: bool,
    /// Its weight scales.
    pub weight_scales: crate::export::quantize::WeightScales,
}

/// What `train` did, for people and for tests.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Examples after cleaning.
    pub examples: usize,
    /// Rows dropped for missing or non-finite values.
    pub dropped_rows: usize,
    /// Values imputed.
    pub imputed_values: usize,
    /// Windows skipped for mixed labels.
    pub mixed_windows: usize,
    /// Files of an image folder skipped: `class/file: why`.
    pub skipped_images: Vec<String>,
    /// Train / validation / test sizes.
    pub splits: [usize; 3],
    /// Trainable parameters of the network (`check --model` also counts
    /// the normalization constants baked into the file).
    pub params: usize,
    /// The learning rate trained with.
    pub lr: f64,
    /// True when the range test chose it (`--lr auto`).
    pub lr_auto: bool,
    /// Examples per update.
    pub batch: usize,
    /// Epochs without improvement that end the run (0: never).
    pub patience: usize,
    /// Epochs run.
    pub epochs_run: usize,
    /// The epoch whose weights were kept.
    pub best_epoch: usize,
    /// False when the model was still improving when the run ended.
    pub converged: bool,
    /// What to look at: no convergence, a small test split.
    pub warnings: Vec<String>,
    /// Training-split metrics, of the weights kept.
    pub train: Metrics,
    /// Validation-split metrics (none without a validation split).
    pub val: Option<Metrics>,
    /// Test-split metrics (validation when there is no test split).
    pub test: Metrics,
    /// k-fold mean and standard deviation of the headline metric.
    pub kfold: Option<(f64, f64)>,
    /// Largest trainer-vs-export difference over every example.
    pub verify_max_abs_diff: f32,
    /// Class names.
    pub labels: Vec<String>,
    /// Per-epoch figures.
    pub history: Vec<Epoch>,
    /// The files written into the output directory.
    pub files: Vec<String>,
    /// With `--quantize`: the int8 model against the f32 one on the test
    /// split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantized: Option<quantize::QuantizeSummary>,
}

/// Test splits smaller than this give a rough estimate: say so.
pub const SMALL_TEST_SPLIT: usize = 30;

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), HostError> {
    std::fs::write(path, bytes).map_err(|e| HostError::Output {
        file: path.display().to_string(),
        message: e.to_string(),
    })
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_default()
}

/// Trains, exports and verifies; writes `model.onnx`, `weights.safetensors`,
/// `edgeinfer.toml`, `input.npy`, `output.npy`, `report.md` and plots into
/// `opts.out`.
pub fn train_command(
    opts: &TrainOptions,
    progress: &mut dyn FnMut(&Epoch),
) -> Result<TrainSummary, HostError> {
    opts.fit.check(opts.spec.task)?;
    let data = match &opts.images {
        Some(spec) => images::load_folder(&opts.data, spec, &spec.prep()?)?,
        None => Dataset::load(&opts.data, &opts.spec)?,
    };
    let splits = plan_splits(&data, opts.val_split, opts.test_split, opts.fit.seed)?;
    // Check the network shape before any time is spent on k folds.
    Net::new(
        &opts.fit.arch,
        &data.shape,
        data.outputs(),
        opts.fit.kernel,
        opts.fit.init,
        opts.fit.activation,
        &mut crate::rng::Rng::new(0),
    )?;
    let fit_opts = opts.fit.resolved(&data, &splits.train)?;
    let kfold = match opts.kfold {
        Some(k) => {
            let pool: Vec<usize> = splits.train.iter().chain(&splits.val).copied().collect();
            let (m, s, _) = kfold(&data, &pool, k, &fit_opts)?;
            Some((m, s))
        }
        None => None,
    };
    let fitted = fit(&data, &splits.train, &splits.val, &fit_opts, progress)?;
    let held_out = if splits.test.is_empty() {
        &splits.val
    } else {
        &splits.test
    };
    let metrics = |idx: &[usize]| -> Result<Metrics, HostError> {
        let (x, y) = data.select(idx);
        Ok(Metrics::of(
            &fitted.outputs(&x, &data.shape)?,
            &y,
            data.outputs(),
        ))
    };
    let test = metrics(held_out)?;
    let train_metrics = metrics(&splits.train)?;
    let val_metrics = if splits.val.is_empty() {
        None
    } else {
        Some(metrics(&splits.val)?)
    };
    let (converged, not_converged) = fitted.convergence();
    let mut warnings: Vec<String> = not_converged.into_iter().collect();
    if held_out.len() < SMALL_TEST_SPLIT {
        warnings.push(format!(
            "the test split has only {} examples, so its metrics are rough: \
             use a larger --test-split or add --kfold 5",
            held_out.len()
        ));
    }

    let classify = matches!(data.y, Targets::Class(_));
    let windowed = data.shape.len() == 2;
    let mut metadata: Vec<(String, String)> = vec![
        (
            meta::TASK.into(),
            if classify { "classify" } else { "regress" }.into(),
        ),
        (meta::FEATURES.into(), json_list(&data.features)),
        (meta::TARGET.into(), json_list(&data.targets)),
        (meta::ARCH.into(), opts.fit.arch.to_string()),
        (meta::ACTIVATION.into(), opts.fit.activation.name().into()),
        (meta::KERNEL.into(), opts.fit.kernel.to_string()),
        (meta::DATA_SHA256.into(), data.sha256.clone()),
        (
            meta::METRICS.into(),
            serde_json::json!({ "test": test, "kfold": kfold }).to_string(),
        ),
    ];
    if classify {
        metadata.push((meta::LABELS.into(), json_list(&data.labels)));
    }
    // Channels name a sensor source's columns; an image source has none.
    if opts.images.is_none() {
        metadata.push((meta::CHANNELS.into(), json_list(&data.features)));
    }
    match (windowed, opts.spec.window) {
        // The image stage makes the input: its settings replace the
        // window and layout keys.
        _ if opts.images.is_some() => {
            if let Some(spec) = &opts.images {
                metadata.push((crate::image::IMAGE_META.into(), spec.config().to_metadata()));
            }
        }
        (true, Some((size, hop))) => {
            metadata.push((meta::WINDOW.into(), size.to_string()));
            metadata.push((meta::HOP.into(), hop.to_string()));
            metadata.push((meta::LAYOUT.into(), "ncw".into()));
        }
        _ => {
            metadata.push((meta::WINDOW.into(), "1".into()));
            metadata.push((meta::LAYOUT.into(), "flat".into()));
        }
    }
    let proto = fitted
        .net
        .to_onnx(&fitted.mean, &fitted.std, classify, &metadata)?;

    std::fs::create_dir_all(&opts.out).map_err(|e| HostError::Output {
        file: opts.out.display().to_string(),
        message: e.to_string(),
    })?;
    let model_path = opts.out.join("model.onnx");
    crate::export::write_model(&proto, &model_path).map_err(|e| HostError::Output {
        file: model_path.display().to_string(),
        message: e.to_string(),
    })?;
    fitted.net.save(
        &opts.out.join("weights.safetensors"),
        &fitted.mean,
        &fitted.std,
    )?;

    // The exported file against the trainer on every example, through the
    // device's own model runner: a mismatch fails the command.
    let check = verify_against(&model_path, &opts.out.join("weights.safetensors"), &data)?;

    let reference = reference_examples(held_out, &data.y);
    let (xr, _) = data.select(&reference);
    let yr = fitted
        .net
        .outputs(&xr, &data.shape, &fitted.mean, &fitted.std, classify)?;
    write_npy(&opts.out.join("input.npy"), &xr, &data.shape)?;
    write_npy(&opts.out.join("output.npy"), &yr, &[data.outputs()])?;

    let name = opts
        .out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    write_file(
        &opts.out.join("edgeinfer.toml"),
        if opts.images.is_some() {
            image_device_config(&name, &data)
        } else {
            device_config(&name, &data)
        }
        .as_bytes(),
    )?;
    let quantized = if opts.quantize {
        Some(quantize::quantize_model(
            &model_path,
            &opts.out.join(quantize::INT8_FILE),
            &data,
            &splits.train,
            held_out,
            opts.weight_scales,
        )?)
    } else {
        None
    };
    let summary = TrainSummary {
        examples: data.x.len(),
        dropped_rows: data.dropped_rows,
        imputed_values: data.imputed_values,
        mixed_windows: data.mixed_windows,
        skipped_images: data.skipped.clone(),
        splits: [splits.train.len(), splits.val.len(), splits.test.len()],
        params: fitted.net.params(),
        lr: fit_opts.lr.unwrap_or_default(),
        lr_auto: opts.fit.lr.is_none(),
        batch: fit_opts.batch.unwrap_or_default(),
        patience: fit_opts.patience.unwrap_or_default(),
        epochs_run: fitted.history.len(),
        best_epoch: fitted.best_epoch,
        converged,
        warnings,
        train: train_metrics,
        val: val_metrics,
        test,
        kfold,
        verify_max_abs_diff: check.max_abs_diff,
        labels: data.labels.clone(),
        history: fitted.history.clone(),
        files: vec![],
        quantized,
    };
    let mut summary = summary;
    summary.files = report::write(&opts.out, opts, &summary)?;
    Ok(summary)
}

/// Up to 4 held-out examples for `input.npy`: one of each class first, so
/// the reference shows every class the model knows (as far as 4 go).
fn reference_examples(held_out: &[usize], y: &Targets) -> Vec<usize> {
    let mut picked: Vec<usize> = Vec::new();
    if let Targets::Class(c) = y {
        let mut seen = std::collections::BTreeSet::new();
        for &i in held_out {
            if picked.len() < 4 && seen.insert(c[i]) {
                picked.push(i);
            }
        }
    }
    for &i in held_out {
        if picked.len() < 4 && !picked.contains(&i) {
            picked.push(i);
        }
    }
    if picked.is_empty() {
        picked.push(0);
    }
    picked
}

fn write_npy(path: &Path, rows: &[Vec<f32>], shape: &[usize]) -> Result<(), HostError> {
    let mut dims = vec![rows.len()];
    dims.extend_from_slice(shape);
    let t = Tensor::from_shape(&dims, &rows.concat()).map_err(|e| HostError::Output {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    crate::infer::write_tensor(path, &t).map_err(|e| HostError::Output {
        file: path.display().to_string(),
        message: e.to_string(),
    })
}

/// A device config that runs the model on CSV lines from stdin; window,
/// layout, labels and task come from the model's metadata.
fn device_config(name: &str, data: &Dataset) -> String {
    format!(
        "# Runs {name}/model.onnx on the device: `edgeinfer run --config edgeinfer.toml`.\n\
         # Input: CSV lines on stdin, one sample per line, columns {cols}.\n\
         # Replace [source] with the board's sensor (see docs/config.md).\n\
         device_id = {name:?}\n\n\
         [model]\npath = \"model.onnx\"\n\n\
         [source]\nkind = \"stdin\"\nformat = \"csv\"\n\n\
         [[sink]]\nkind = \"stdout\"\n",
        cols = data.features.join(", "),
    )
}

/// A device config that runs an image model on the files dropped into
/// `incoming/`; size, colour and scaling come from the model's
/// `edgeinfer.image` metadata, labels and task from the rest of it.
fn image_device_config(name: &str, data: &Dataset) -> String {
    format!(
        "# Runs {name}/model.onnx on the device: `edgeinfer run --config edgeinfer.toml`.\n\
         # Input: .jpg/.png files dropped into incoming/; each is moved to done/ once run.\n\
         # Classes: {labels}. The image settings are in the model (edgeinfer.image).\n\
         device_id = {name:?}\n\n\
         [model]\npath = \"model.onnx\"\n\n\
         [source]\nkind = \"image_dir\"\npath = \"incoming\"\nafter = \"move:done\"\n\n\
         [[sink]]\nkind = \"stdout\"\n",
        labels = data.labels.join(", "),
    )
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Examples compared.
    pub examples: usize,
    /// Largest |trainer − exported| over every output of every example.
    pub max_abs_diff: f32,
    /// Metrics of the exported model on the examples.
    pub metrics: Metrics,
}

/// Runs `model` (the device runner) and the trainer's network (from
/// `weights`) on every example of `data`; errors when they differ by more
/// than [`VERIFY_TOLERANCE`].
pub fn verify_against(
    model: &Path,
    weights: &Path,
    data: &Dataset,
) -> Result<VerifyReport, HostError> {
    let file = crate::ModelFile::read(model)?;
    let origin = model.display().to_string();
    let bad = |message: String| HostError::Input {
        file: origin.clone(),
        message,
    };
    let arch: Arch = file
        .metadata(meta::ARCH)
        .ok_or_else(|| {
            bad(format!(
                "expected metadata {} (a model made by train)",
                meta::ARCH
            ))
        })?
        .parse()
        .map_err(bad)?;
    let activation: Activation = file
        .metadata(meta::ACTIVATION)
        .unwrap_or("relu")
        .parse()
        .map_err(bad)?;
    let kernel = file
        .metadata(meta::KERNEL)
        .and_then(|k| k.parse().ok())
        .unwrap_or(3);
    let net = Net::new(
        &arch,
        &data.shape,
        data.outputs(),
        kernel,
        net::Init::He,
        activation,
        &mut crate::rng::Rng::new(0),
    )?;
    let (mean, std) = net.load(weights)?;
    let classify = matches!(data.y, Targets::Class(_));
    let rows = run_batch(&file, &data.x, &data.shape)?;
    let exported: Vec<f32> = rows.concat();
    let trainer = net.outputs(&data.x, &data.shape, &mean, &std, classify)?;
    if exported.len() != trainer.len() * data.outputs() {
        return Err(HostError::Mismatch(format!(
            "{origin}: {} outputs from the model, {} from the trainer",
            exported.len(),
            trainer.len() * data.outputs()
        )));
    }
    let max_abs_diff = exported
        .iter()
        .zip(trainer.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    if max_abs_diff.is_nan() || max_abs_diff > VERIFY_TOLERANCE {
        return Err(HostError::Mismatch(format!(
            "{origin}: the exported model differs from the trainer by {max_abs_diff:e} \
             (allowed {VERIFY_TOLERANCE:e})"
        )));
    }
    Ok(VerifyReport {
        examples: data.x.len(),
        max_abs_diff,
        metrics: Metrics::of(&rows, &data.y, data.outputs()),
    })
}

/// `edgeinfer-host verify`: the exported `model` (with its
/// `weights.safetensors` beside it) against the trainer on every example
/// of the CSV file `data`, or for an image model of the image folder `data`.
pub fn verify_command(model: &Path, data: &Path) -> Result<VerifyReport, HostError> {
    let file = crate::ModelFile::read(model)?;
    let dataset = dataset_for_model(&file, data)?;
    verify_against(
        model,
        &model.with_file_name("weights.safetensors"),
        &dataset,
    )
}

/// The examples of `data` (a CSV file, or an image folder for an image
/// model) read the way the trainer read them for `file`, from its
/// metadata: columns, windows, image settings, class order.
pub fn dataset_for_model(file: &crate::ModelFile, data: &Path) -> Result<Dataset, HostError> {
    let spec = spec_from_model(file)?;
    let mut dataset = match file.metadata(crate::image::IMAGE_META) {
        Some(json) => {
            let images = ImageSpec::from_metadata(json).map_err(|message| HostError::Input {
                file: file.origin().into(),
                message,
            })?;
            images::load_folder(data, &images, &images.prep()?)?
        }
        None => Dataset::load(data, &spec)?,
    };
    if spec.task == Task::Classify {
        let labels = file
            .metadata(meta::LABELS)
            .map(crate::model::meta_list)
            .unwrap_or_default();
        dataset
            .relabel(&labels)
            .map_err(|message| HostError::Input {
                file: data.display().to_string(),
                message,
            })?;
    }
    Ok(dataset)
}

/// The model's outputs for `rows` (examples of `shape`), run as one batch
/// through the device's model runner: one row of outputs per example.
pub fn run_batch(
    file: &crate::ModelFile,
    rows: &[Vec<f32>],
    shape: &[usize],
) -> Result<Vec<Vec<f32>>, HostError> {
    let bad = |message: String| HostError::Input {
        file: file.origin().into(),
        message,
    };
    let mut pin_shape = vec![rows.len()];
    pin_shape.extend_from_slice(shape);
    let mut model = file.load(Some(&[crate::model::InputPin {
        dtype: f32::datum_type(),
        shape: pin_shape.clone(),
    }]))?;
    let input = Tensor::from_shape(&pin_shape, &rows.concat()).map_err(|e| bad(e.to_string()))?;
    let out = model.run(tvec!(input.into()))?;
    let flat: Vec<f32> = out[0]
        .to_plain_array_view::<f32>()
        .map_err(|e| bad(e.to_string()))?
        .iter()
        .copied()
        .collect();
    let per = flat.len() / rows.len().max(1);
    Ok(flat.chunks(per.max(1)).map(|c| c.to_vec()).collect())
}

/// The data spec a trained model was made with, from its metadata, so
/// `verify` needs only the model and the data.
pub fn spec_from_model(file: &crate::ModelFile) -> Result<DataSpec, HostError> {
    let list = |k: &str| -> Vec<String> {
        file.metadata(k)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default()
    };
    let target = list(meta::TARGET);
    if target.is_empty() {
        return Err(HostError::Input {
            file: file.origin().into(),
            message: format!("expected metadata {} (a model made by train)", meta::TARGET),
        });
    }
    let window = match (file.metadata(meta::LAYOUT), file.metadata(meta::WINDOW)) {
        (Some("ncw"), Some(w)) => {
            let size: usize = w.parse().unwrap_or(1);
            let hop = file
                .metadata(meta::HOP)
                .and_then(|h| h.parse().ok())
                .unwrap_or(size);
            Some((size, hop))
        }
        _ => None,
    };
    Ok(DataSpec {
        task: match file.metadata(meta::TASK) {
            Some("classify") => Task::Classify,
            _ => Task::Regress,
        },
        target,
        features: list(meta::FEATURES),
        window,
        impute: false,
        labels: vec![],
    })
}
