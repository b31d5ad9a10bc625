//! `edgeinfer-host`: the host companion's command line. Thin: clap → library.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use clap::{Parser, Subcommand};
use edgeinfer::host::data::{DataSpec, Task};
use edgeinfer::host::listen::{batch_lines, decode_batch, listen, ListenOptions};
use edgeinfer::host::net::{Activation, Arch, Init};
use edgeinfer::host::record::{record, RecordOptions};
use edgeinfer::host::train::{FitOptions, Loss, OptimizerKind};
use edgeinfer::host::{self, HostError, TrainOptions};

#[derive(Parser)]
#[command(
    name = "edgeinfer-host",
    version,
    about = "Train models for edgeinfer devices, export and verify them, record data, read results."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// CSV file with a header line.
    #[arg(long)]
    data: PathBuf,
    /// Target column (several, comma-separated, for multi-output regression).
    #[arg(long, value_delimiter = ',', required = true)]
    target: Vec<String>,
    /// classify or regress.
    #[arg(long, value_enum)]
    task: Task,
    /// Feature columns (default: every other column).
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// Cut rows into windows of this many samples (time series).
    #[arg(long)]
    window: Option<usize>,
    /// Samples between window starts (default: the window size).
    #[arg(long, requires = "window")]
    hop: Option<usize>,
    /// Channel columns of a windowed series (same as --features).
    #[arg(long, value_delimiter = ',', requires = "window")]
    channels: Vec<String>,
    /// Fill missing feature values with the column mean instead of dropping the row.
    #[arg(long)]
    impute: bool,
    /// Class names in class-id order (default: sorted).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// mlp:H1,H2,... or cnn1d:C1,C2,...
    #[arg(long)]
    arch: String,
    /// Convolution width for cnn1d (odd).
    #[arg(long, default_value_t = 3)]
    kernel: usize,
    /// Hidden activation: relu, tanh or none.
    #[arg(long, default_value = "relu")]
    activation: String,
    /// normal:STD, xavier or he.
    #[arg(long, default_value = "he")]
    init: String,
    /// adam or sgd.
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimizerKind,
    /// Learning rate.
    #[arg(long, default_value_t = 0.001)]
    lr: f64,
    /// Passes over the training split.
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// Examples per update.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Seed for splits, weights and batch order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Validation fraction.
    #[arg(long, default_value_t = 0.2)]
    val_split: f64,
    /// Test fraction.
    #[arg(long, default_value_t = 0.1)]
    test_split: f64,
    /// Also report K-fold cross-validation (mean ± std).
    #[arg(long)]
    kfold: Option<usize>,
    /// mse or cross-entropy (default: cross-entropy to classify, mse to regress).
    #[arg(long, value_enum)]
    loss: Option<Loss>,
    /// Stop after this many epochs without a better validation loss.
    #[arg(long)]
    patience: Option<usize>,
    /// Output directory (models/NAME/).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model on a CSV file and export it, verified, for the device.
    Train(Box<TrainArgs>),
    /// Check an exported model against the trainer's network on a CSV file.
    Verify {
        /// The exported model (its weights.safetensors must be beside it).
        #[arg(long)]
        model: PathBuf,
        /// CSV file with the model's feature and target columns.
        #[arg(long)]
        data: PathBuf,
    },
    /// Record samples from a device source into a CSV file for training.
    Record {
        /// Device config whose [source] to read.
        #[arg(long)]
        config: PathBuf,
        /// CSV file (appended to when it exists with the same columns).
        #[arg(long)]
        out: PathBuf,
        /// Value of a `label` column on every row.
        #[arg(long)]
        label: Option<String>,
        /// Stop after this span of sample time.
        #[arg(long)]
        seconds: Option<f64>,
        /// Stop after this many samples.
        #[arg(long)]
        samples: Option<u64>,
    },
    /// Subscribe and print what devices publish as JSON lines.
    Listen {
        /// mqtt://HOST[:PORT]
        #[arg(long, env = "EDGEINFER_BROKER")]
        broker: String,
        /// Topic filter (repeatable).
        #[arg(long, default_values_t = vec!["edgeinfer/+/result".to_string()])]
        topic: Vec<String>,
        /// Exit 0 after this many distinct records.
        #[arg(long)]
        count: Option<usize>,
        /// Seconds to wait: exit 1 when --count records (without --count: any) have not arrived by then.
        #[arg(long)]
        timeout: Option<f64>,
        /// MQTT client id (needed to resume a persistent session).
        #[arg(long)]
        client_id: Option<String>,
        /// Persistent session at QoS 1: keep what is published while away.
        #[arg(long, requires = "client_id")]
        persistent: bool,
    },
    /// Decode one result payload (postcard or JSON) from a file or stdin.
    Decode {
        /// The payload file (default: stdin).
        file: Option<PathBuf>,
        /// Class labels, comma-separated.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
    },
}

struct Failure(u8, anyhow::Error);

impl From<HostError> for Failure {
    fn from(e: HostError) -> Self {
        Failure(e.exit_code(), e.into())
    }
}

fn usage(e: String) -> Failure {
    Failure(2, anyhow!(e))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match Cli::parse().command {
        Cmd::Train(args) => train(*args),
        Cmd::Verify { model, data } => verify(&model, &data),
        Cmd::Record {
            config,
            out,
            label,
            seconds,
            samples,
        } => run_record(config, out, label, seconds, samples),
        Cmd::Listen {
            broker,
            topic,
            count,
            timeout,
            client_id,
            persistent,
        } => run_listen(ListenOptions {
            broker,
            topics: topic,
            count,
            timeout: timeout.map(Duration::from_secs_f64),
            client_id,
            persistent,
        }),
        Cmd::Decode { file, labels } => decode(file, &labels),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, e)) => {
            for line in format!("{e:#}").lines() {
                eprintln!("edgeinfer-host: error: {line}");
            }
            ExitCode::from(code)
        }
    }
}

fn train(args: TrainArgs) -> Result<(), Failure> {
    let TrainArgs {
        data,
        target,
        task,
        features,
        window,
        hop,
        channels,
        impute,
        labels,
        arch,
        kernel,
        activation,
        init,
        optimizer,
        lr,
        epochs,
        batch,
        seed,
        val_split,
        test_split,
        kfold,
        loss,
        patience,
        out,
    } = args;
    let opts = TrainOptions {
        data,
        spec: DataSpec {
            task,
            target,
            features: if channels.is_empty() {
                features
            } else {
                channels
            },
            window: window.map(|w| (w, hop.unwrap_or(w))),
            impute,
            labels,
        },
        fit: FitOptions {
            arch: arch.parse::<Arch>().map_err(usage)?,
            kernel,
            init: init.parse::<Init>().map_err(usage)?,
            activation: activation.parse::<Activation>().map_err(usage)?,
            optimizer,
            lr,
            epochs,
            batch,
            loss: Loss::for_task(loss, task)?,
            patience,
            seed,
        },
        val_split,
        test_split,
        kfold,
        out,
        progress: true,
    };
    let bar = indicatif::ProgressBar::new(opts.fit.epochs as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} epoch {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let summary = host::train_command(&opts, &mut |e| {
        bar.set_position(e.epoch as u64);
        bar.set_message(format!(
            "loss {:.4} val loss {:.4} val {} {:.4}",
            e.train_loss,
            e.val_loss,
            if opts.spec.task == Task::Classify {
                "acc"
            } else {
                "R²"
            },
            e.val_metric
        ));
    });
    bar.finish_and_clear();
    let summary = summary?;
    let mut s = serde_json::to_value(&summary).unwrap_or_default();
    if let Some(obj) = s.as_object_mut() {
        obj.remove("history");
    }
    println!("{s}");
    eprintln!(
        "wrote {}: model.onnx, edgeinfer.toml, input.npy, output.npy, report.md",
        opts.out.display()
    );
    Ok(())
}

fn verify(model: &std::path::Path, data: &std::path::Path) -> Result<(), Failure> {
    let report = host::verify_command(model, data)?;
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    Ok(())
}

fn run_record(
    config: PathBuf,
    out: PathBuf,
    label: Option<String>,
    seconds: Option<f64>,
    samples: Option<u64>,
) -> Result<(), Failure> {
    let config = edgeinfer::Config::load(&config).map_err(|e| Failure(2, e.into()))?;
    let stop = edgeinfer::pipeline::stop_on_signals().map_err(|e| Failure(1, e.into()))?;
    let summary = record(
        &config,
        &RecordOptions {
            out,
            label,
            seconds,
            samples,
        },
        &stop,
    )?;
    eprintln!("{}", serde_json::to_string(&summary).unwrap_or_default());
    Ok(())
}

fn run_listen(opts: ListenOptions) -> Result<(), Failure> {
    let stop = edgeinfer::pipeline::stop_on_signals().map_err(|e| Failure(1, e.into()))?;
    let mut stdout = std::io::stdout().lock();
    let report = listen(&opts, &mut stdout, &stop)?;
    eprintln!("{report}");
    Ok(())
}

fn decode(file: Option<PathBuf>, labels: &[String]) -> Result<(), Failure> {
    let mut bytes = Vec::new();
    let origin = match &file {
        Some(f) => {
            bytes = std::fs::read(f)
                .map_err(|e| Failure(2, anyhow!("{}: cannot read: {e}", f.display())))?;
            f.display().to_string()
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| Failure(2, anyhow!("stdin: cannot read: {e}")))?;
            "stdin".into()
        }
    };
    let batch = decode_batch(&bytes).map_err(|e| Failure(2, anyhow!("{origin}: {e}")))?;
    for line in batch_lines(&batch, labels) {
        println!("{line}");
    }
    Ok(())
}
