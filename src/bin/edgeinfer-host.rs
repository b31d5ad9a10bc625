//! `edgeinfer-host`: the host companion's command line. Thin: clap → library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use edgeinfer::host::listen::{decode_command, listen, ListenOptions};
use edgeinfer::host::record::{record, RecordOptions};
use edgeinfer::host::report::Progress;
use edgeinfer::host::{self, HostError, TrainArgs};

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

#[derive(Subcommand)]
enum Cmd {
    /// Train a model on a CSV file and export it, verified, for the device.
    Train(Box<TrainArgs>),
    /// Check an exported model against the trainer's network on a CSV file.
    Verify(VerifyArgs),
    /// Record samples from a device source into a CSV file for training.
    Record(RecordArgs),
    /// Subscribe and print what devices publish as JSON lines.
    Listen(ListenArgs),
    /// Decode one result payload (postcard or JSON) from a file or stdin.
    Decode(DecodeArgs),
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The exported model (its weights.safetensors must be beside it).
    #[arg(long)]
    model: PathBuf,
    /// CSV file with the model's feature and target columns.
    #[arg(long)]
    data: PathBuf,
}

#[derive(clap::Args)]
struct RecordArgs {
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
}

#[derive(clap::Args)]
struct ListenArgs {
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
}

#[derive(clap::Args)]
struct DecodeArgs {
    /// The payload file (default: stdin).
    file: Option<PathBuf>,
    /// Class labels, comma-separated.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
}

/// A failure and its exit code (2: bad input, 1: failed while working).
struct Failure(u8, anyhow::Error);

impl From<HostError> for Failure {
    fn from(e: HostError) -> Self {
        Failure(e.exit_code(), e.into())
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match Cli::parse().command {
        Cmd::Train(a) => train(*a),
        Cmd::Verify(a) => host::verify_command(&a.model, &a.data)
            .map(|r| println!("{}", serde_json::to_string(&r).unwrap_or_default()))
            .map_err(Failure::from),
        Cmd::Record(a) => run_record(a),
        Cmd::Listen(a) => run_listen(a),
        Cmd::Decode(a) => decode_command(a.file.as_deref(), &a.labels)
            .map(|lines| lines.iter().for_each(|l| println!("{l}")))
            .map_err(Failure::from),
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

fn train(a: TrainArgs) -> Result<(), Failure> {
    let opts = a.into_options()?;
    let summary = {
        let bar = Progress::new(opts.fit.epochs, opts.spec.task);
        host::train_command(&opts, &mut |e| bar.epoch(e))?
    };
    let mut s = serde_json::to_value(&summary).unwrap_or_default();
    if let Some(obj) = s.as_object_mut() {
        obj.remove("history");
    }
    println!("{s}");
    if summary.lr_auto {
        eprintln!(
            "learning rate {:.2e} (range test; --lr sets it)",
            summary.lr
        );
    }
    for w in &summary.warnings {
        eprintln!("edgeinfer-host: warning: {w}");
    }
    eprintln!("wrote {}: {}", opts.out.display(), summary.files.join(", "));
    Ok(())
}

fn run_record(a: RecordArgs) -> Result<(), Failure> {
    let config = edgeinfer::Config::load(&a.config).map_err(|e| Failure(2, e.into()))?;
    let stop = edgeinfer::pipeline::stop_on_signals().map_err(|e| Failure(1, e.into()))?;
    let options = RecordOptions {
        out: a.out,
        label: a.label,
        seconds: a.seconds,
        samples: a.samples,
    };
    let summary = record(&config, &options, &stop)?;
    eprintln!("{}", serde_json::to_string(&summary).unwrap_or_default());
    Ok(())
}

fn run_listen(a: ListenArgs) -> Result<(), Failure> {
    let stop = edgeinfer::pipeline::stop_on_signals().map_err(|e| Failure(1, e.into()))?;
    let options = ListenOptions {
        broker: a.broker,
        topics: a.topic,
        count: a.count,
        timeout: a.timeout.map(Duration::from_secs_f64),
        client_id: a.client_id,
        persistent: a.persistent,
    };
    let report = listen(&options, &mut std::io::stdout().lock(), &stop)?;
    eprintln!("{report}");
    Ok(())
}
