//! `edgeinfer`: the device runtime's command line. Thin: clap → library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use edgeinfer::config::Config;
use edgeinfer::model::ModelFile;
use edgeinfer::pipeline::{self, RunOptions};

#[derive(Parser)]
#[command(
    name = "edgeinfer",
    version,
    about = "Run ONNX models on the device and publish compact results.\n\
             With no command, runs the built-in demo (simulated vibration sensor → 1-D CNN → stdout)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a pipeline (the built-in demo without --config) until Ctrl-C or --count.
    Run {
        /// Pipeline config (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Stop after this many results.
        #[arg(long)]
        count: Option<u64>,
        /// Publish results to this broker (mqtt://HOST:PORT, mqtts:// for TLS),
        /// overriding [mqtt] broker.
        #[arg(long, env = "EDGEINFER_BROKER")]
        broker: Option<String>,
    },
    /// Run an MQTT broker in this process (no TLS), until Ctrl-C.
    #[cfg(feature = "broker")]
    Broker {
        /// Port to listen on.
        #[arg(long, default_value_t = 1883)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
    },
    /// One forward pass on .npy inputs; writes the first output as .npy or prints JSON.
    Infer {
        /// The ONNX model.
        #[arg(long)]
        model: PathBuf,
        /// Input .npy files (f32, i64 or u8), one per model input, in order.
        #[arg(long = "input", required = true)]
        inputs: Vec<PathBuf>,
        /// Where to write the first output (.npy).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Print every output as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Describe a model, or validate a config end to end.
    Check {
        /// The ONNX model to describe.
        #[arg(long, conflicts_with = "config", required_unless_present = "config")]
        model: Option<PathBuf>,
        /// The config to validate.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// What a model needs on this device: compute, memory, storage, time, network, outage capacity.
    Profile {
        /// The ONNX model (profiled with default settings).
        #[arg(long, conflicts_with = "config", required_unless_present = "config")]
        model: Option<PathBuf>,
        /// A pipeline config (its window, policy, MQTT and outbox settings count).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Sensor samples per second (default: the config's source rate, else 10).
        #[arg(long)]
        rate: Option<f64>,
        /// Timed forward passes.
        #[arg(long, default_value_t = 1000)]
        runs: usize,
        /// Threads for the model's matrix products (default: the config's `threads`, else 1).
        #[arg(long)]
        threads: Option<usize>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Predict over a recorded CSV file, offline, as fast as possible.
    Replay {
        /// Pipeline config (model, window, preprocess, postprocess).
        #[arg(long)]
        config: PathBuf,
        /// The recording: CSV with a header line.
        #[arg(long)]
        input: PathBuf,
        /// Results file (JSON lines; postcard frames when it ends in .bin); default stdout.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Replay at the recording's pace instead of as fast as possible.
        #[arg(long)]
        realtime: bool,
        /// Stop after this many results.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// A failure and its exit code: 2 for bad input (config, model, files),
/// 1 for failures while running.
struct Failure(u8, anyhow::Error);

fn bad_input<E: Into<anyhow::Error>>(e: E) -> Failure {
    Failure(2, e.into())
}

fn failed<E: Into<anyhow::Error>>(e: E) -> Failure {
    Failure(1, e.into())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match Cli::parse().command {
        None => run(None, None, std::env::var("EDGEINFER_BROKER").ok()),
        Some(Cmd::Run {
            config,
            count,
            broker,
        }) => run(config.as_deref(), count, broker),
        #[cfg(feature = "broker")]
        Some(Cmd::Broker { port, bind }) => broker(&bind, port),
        Some(Cmd::Infer {
            model,
            inputs,
            output,
            json,
        }) => infer(&model, &inputs, output.as_deref(), json),
        Some(Cmd::Check { model, config }) => match (model, config) {
            (Some(m), _) => check_model(&m),
            (_, Some(c)) => check_config(&c),
            _ => Err(bad_input(anyhow!("check needs --model or --config"))),
        },
        Some(Cmd::Profile {
            model,
            config,
            rate,
            runs,
            threads,
            json,
        }) => profile(
            model.as_deref(),
            config.as_deref(),
            rate,
            runs,
            threads,
            json,
        ),
        Some(Cmd::Replay {
            config,
            input,
            output,
            realtime,
            count,
        }) => load_config(&config).and_then(|c| {
            let c =
                pipeline::for_replay(&c, &input, output.as_deref(), realtime).map_err(bad_input)?;
            run_pipeline(&c, None, count)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, e)) => {
            for line in format!("{e:#}").lines() {
                eprintln!("edgeinfer: error: {line}");
            }
            ExitCode::from(code)
        }
    }
}

fn load_config(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(bad_input)
}

fn run(config: Option<&Path>, count: Option<u64>, broker: Option<String>) -> Result<(), Failure> {
    let (mut config, embedded) = match config {
        Some(p) => (load_config(p)?, None),
        None => (
            edgeinfer::demo::config(),
            Some((edgeinfer::demo::MODEL, edgeinfer::demo::MODEL_NAME)),
        ),
    };
    if let Some(url) = broker.filter(|u| !u.is_empty()) {
        config.use_broker(&url).map_err(bad_input)?;
    }
    run_pipeline(&config, embedded, count)
}

#[cfg(feature = "broker")]
fn broker(bind: &str, port: u16) -> Result<(), Failure> {
    let addr = edgeinfer::broker::parse_listen(&format!("{bind}:{port}")).map_err(bad_input)?;
    eprintln!("edgeinfer: broker listening on {addr}");
    edgeinfer::broker::run(addr).map_err(failed)
}

fn run_pipeline(
    config: &Config,
    embedded: Option<(&[u8], &str)>,
    count: Option<u64>,
) -> Result<(), Failure> {
    let built = pipeline::build(config, embedded).map_err(bad_input)?;
    let stop = pipeline::stop_on_signals()
        .context("installing signal handlers")
        .map_err(failed)?;
    let s = built.run(&RunOptions { count, stop }).map_err(failed)?;
    log::info!("{}", serde_json::to_string(&s).unwrap_or_default());
    eprintln!("edgeinfer: {s}");
    Ok(())
}

fn infer(
    model: &Path,
    inputs: &[PathBuf],
    output: Option<&Path>,
    json: bool,
) -> Result<(), Failure> {
    let out = edgeinfer::infer::infer_files(model, inputs).map_err(bad_input)?;
    if let Some(path) = output {
        let first = out
            .tensors
            .first()
            .ok_or_else(|| bad_input(anyhow!("{}: the model has no outputs", model.display())))?;
        edgeinfer::infer::write_tensor(path, first).map_err(failed)?;
    }
    if json || output.is_none() {
        println!("{}", out.to_json());
    }
    Ok(())
}

fn check_model(path: &Path) -> Result<(), Failure> {
    let model = ModelFile::read(path)
        .and_then(|f| f.load(None))
        .map_err(bad_input)?;
    print!("{}", model.info());
    Ok(())
}

fn check_config(path: &Path) -> Result<(), Failure> {
    let config = load_config(path)?;
    let prepared = pipeline::check(&config, None).map_err(bad_input)?;
    print!("{}", prepared.model.info());
    println!("config: {}", path.display());
    print!("{}", prepared.describe());
    println!("  sinks: {}", config.sink.len());
    println!("ok: the config would run");
    Ok(())
}

fn profile(
    model: Option<&Path>,
    config: Option<&Path>,
    rate: Option<f64>,
    runs: usize,
    threads: Option<usize>,
    json: bool,
) -> Result<(), Failure> {
    let config = match (model, config) {
        (_, Some(c)) => load_config(c)?,
        (Some(m), None) => Config::for_model(m),
        (None, None) => return Err(bad_input(anyhow!("profile needs --model or --config"))),
    };
    let file = ModelFile::read(&config.resolve(&config.model.path)).map_err(bad_input)?;
    let options = edgeinfer::profile::Options {
        rate_hz: rate,
        runs,
        model_only: model.is_some(),
        threads,
    };
    let report = edgeinfer::profile::profile(&config, &file, &options).map_err(bad_input)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
