//! The trainer's command-line arguments: what `edgeinfer-host train` takes,
//! with their defaults, turned into checked [`TrainOptions`].

use std::path::PathBuf;

use super::data::{DataSpec, Task};
use super::images::{parse_size, ImageSpec};
use super::net::{Activation, Arch, Init};
use super::train::{FitOptions, Loss, OptimizerKind};
use super::{HostError, TrainOptions};
use crate::export::quantize::WeightScales;

/// `edgeinfer-host train`'s arguments, as the command line gives them.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// CSV file with a header line.
    #[arg(long, required_unless_present = "images", conflicts_with = "images")]
    pub data: Option<PathBuf>,
    /// Image folder: one subfolder of .jpg/.jpeg/.png files per class
    /// (class names: the subfolder names, sorted).
    #[arg(long, conflicts_with_all = ["target", "features", "window", "channels", "impute"])]
    pub images: Option<PathBuf>,
    /// Size every image is stretched to, WIDTHxHEIGHT (--images).
    #[arg(long, value_parser = parse_size, default_value = "32x32", requires = "images")]
    pub size: [u32; 2],
    /// One gray channel instead of RGB (--images).
    #[arg(long, requires = "images")]
    pub grayscale: bool,
    /// Flip and shift training images at random (--images; validation and
    /// test images are left as they are).
    #[arg(long, requires = "images")]
    pub augment: bool,
    /// Target column (several, comma-separated, for multi-output regression).
    #[arg(long, value_delimiter = ',', required_unless_present = "images")]
    pub target: Vec<String>,
    /// classify or regress (--images: classify).
    #[arg(long, value_enum, required_unless_present = "images")]
    pub task: Option<Task>,
    /// Feature columns (default: every other column).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Cut rows into windows of this many samples (time series).
    #[arg(long)]
    pub window: Option<usize>,
    /// Samples between window starts (default: the window size).
    #[arg(long, requires = "window")]
    pub hop: Option<usize>,
    /// Channel columns of a windowed series (same as --features).
    #[arg(long, value_delimiter = ',', requires = "window")]
    pub channels: Vec<String>,
    /// Fill missing feature values with the column mean instead of dropping the row.
    #[arg(long)]
    pub impute: bool,
    /// Class names in class-id order (default: sorted).
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// mlp:H1,H2,..., cnn1d:C1,C2,... or (--images) cnn2d:C1,C2,...
    /// [--images default: cnn2d:16,32]
    #[arg(long, required_unless_present = "images")]
    pub arch: Option<Arch>,
    /// Convolution width for cnn1d (odd).
    #[arg(long, default_value_t = 3)]
    pub kernel: usize,
    /// Hidden activation: relu, tanh or none.
    #[arg(long, default_value = "relu")]
    pub activation: Activation,
    /// normal:STD, xavier or he.
    #[arg(long, default_value = "he")]
    pub init: Init,
    /// adam or sgd.
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: OptimizerKind,
    /// Learning rate, or `auto`: a short range test on the training split
    /// picks it (the value is printed).
    #[arg(long, default_value = "auto")]
    pub lr: LearningRate,
    /// Most passes over the training split; early stopping usually ends the
    /// run sooner.
    #[arg(long, default_value_t = 1000)]
    pub epochs: usize,
    /// Examples per update (default: the largest power of two up to a tenth
    /// of the training split, within 8 to 32).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Seed for splits, weights and batch order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Validation fraction.
    #[arg(long, default_value_t = 0.2)]
    pub val_split: f64,
    /// Test fraction.
    #[arg(long, default_value_t = 0.1)]
    pub test_split: f64,
    /// Also report K-fold cross-validation (mean ± std).
    #[arg(long)]
    pub kfold: Option<usize>,
    /// mse or cross-entropy (default: cross-entropy to classify, mse to regress).
    #[arg(long, value_enum)]
    pub loss: Option<Loss>,
    /// Stop after this many epochs without a better validation loss
    /// (default: a twentieth of --epochs, at least 20; 0: never stop early).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Output directory (models/NAME/).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write model-int8.onnx: the exported model quantized to int8,
    /// calibrated on the training split and scored on the test split.
    #[arg(long)]
    pub quantize: bool,
    /// With --quantize: per-tensor (one scale per layer, rescaled inside
    /// tract's integer kernel) or per-channel weight scales.
    #[arg(long, default_value = "per-tensor", requires = "quantize")]
    pub weight_scales: WeightScales,
}

impl TrainArgs {
    /// The options these arguments mean, checked.
    pub fn into_options(self) -> Result<TrainOptions, HostError> {
        let a = self;
        let images = a.images.as_ref().map(|_| ImageSpec {
            size: a.size,
            grayscale: a.grayscale,
        });
        let task = match (a.task, &images) {
            (Some(Task::Regress), Some(_)) => {
                return Err(HostError::Usage(
                    "--images trains a classifier: drop --task regress".into(),
                ))
            }
            (Some(t), _) => t,
            (None, _) => Task::Classify,
        };
        let arch = match (a.arch, &images) {
            (Some(arch), _) => arch,
            (None, Some(_)) => Arch::Cnn2d(vec![16, 32]),
            (None, None) => return Err(HostError::Usage("--arch: expected a network".into())),
        };
        if images.is_none() && matches!(arch, Arch::Cnn2d(_)) {
            return Err(HostError::Usage(
                "--arch cnn2d needs images: give --images DIR".into(),
            ));
        }
        let data = match (a.data, a.images) {
            (Some(d), None) | (None, Some(d)) => d,
            _ => {
                return Err(HostError::Usage(
                    "give the data: --data FILE.csv or --images DIR".into(),
                ))
            }
        };
        let target = if images.is_some() {
            vec!["class".into()]
        } else {
            a.target
        };
        let opts = TrainOptions {
            data,
            images,
            spec: DataSpec {
                task,
                target,
                features: if a.channels.is_empty() {
                    a.features
                } else {
                    a.channels
                },
                window: a.window.map(|w| (w, a.hop.unwrap_or(w))),
                impute: a.impute,
                labels: a.labels,
            },
            fit: FitOptions {
                arch,
                kernel: a.kernel,
                init: a.init,
                activation: a.activation,
                optimizer: a.optimizer,
                lr: match a.lr {
                    LearningRate::Auto => None,
                    LearningRate::Fixed(lr) => Some(lr),
                },
                epochs: a.epochs,
                batch: a.batch,
                loss: Loss::for_task(a.loss, task)?,
                patience: a.patience,
                seed: a.seed,
                augment: a.augment,
            },
            val_split: a.val_split,
            test_split: a.test_split,
            kfold: a.kfold,
            out: a.out,
            quantize: a.quantize,
            weight_scales: a.weight_scales,
            progress: true,
        };
        opts.fit.check(opts.spec.task)?;
        Ok(opts)
    }
}

/// `--lr`: `auto` or a positive number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LearningRate {
    /// Found by a range test on the training split.
    Auto,
    /// As given.
    Fixed(f64),
}

impl std::str::FromStr for LearningRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(LearningRate::Auto);
        }
        match s.parse::<f64>() {
            Ok(lr) if lr > 0.0 && lr.is_finite() => Ok(LearningRate::Fixed(lr)),
            _ => Err(format!("expected a positive number or auto, found {s:?}")),
        }
    }
}
