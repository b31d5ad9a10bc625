//! `edgeinfer`: the device runtime's command line. Thin: clap → library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use edgeinfer::config::Config;
use edgeinfer::model::{ConvLayout, ModelFile};
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
    Run(RunArgs),
    /// Run an MQTT broker in this process (no TLS), until Ctrl-C.
    #[cfg(feature = "broker")]
    Broker(BrokerArgs),
    /// One forward pass on .npy inputs; writes the first output as .npy or prints JSON.
    Infer(InferArgs),
    /// Describe a model, or validate a config end to end.
    Check(CheckArgs),
    /// What a model needs on this device: compute, memory, storage, time, network, outage capacity.
    Profile(ProfileArgs),
    /// Predict over a recorded CSV file, offline, as fast as possible.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
struct RunArgs {
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
}

#[cfg(feature = "broker")]
#[derive(clap::Args)]
struct BrokerArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: String,
}

#[derive(clap::Args)]
struct InferArgs {
    /// The ONNX model.
    #[arg(long)]
    model: PathBuf,
    /// Input .npy files (any numeric type), one per model input, in order.
    #[arg(
        long = "input",
        required_unless_present = "images",
        conflicts_with = "images"
    )]
    inputs: Vec<PathBuf>,
    /// Images (JPEG, PNG): one forward pass each, with the model's image
    /// settings (its metadata, `--preset`, or `--config`'s [image]).
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// Image settings of a well-known recipe (`imagenet`: RGB, 0..1,
    /// ImageNet mean and std, NCHW f32) where the model has none.
    #[arg(long, requires = "images")]
    preset: Option<String>,
    /// A config whose [image] and [postprocess] apply to `--image`.
    #[arg(long, requires = "images")]
    config: Option<PathBuf>,
    /// Classes reported per image when the model names no task.
    #[arg(long, default_value_t = 5, requires = "images")]
    top_k: usize,
    /// Where to write the first output (.npy; stacked over the images).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Print every output as JSON (with --image: one line per image).
    #[arg(long)]
    json: bool,
    /// Layout tract runs 2-D convolutions in: nchw or nhwc.
    #[arg(long, default_value = "nchw")]
    conv_layout: ConvLayout,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The ONNX model to describe.
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    model: Option<PathBuf>,
    /// The config to validate.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ProfileArgs {
    /// The ONNX model (profiled with default settings).
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    model: Option<PathBuf>,
    /// A pipeline config (its window, policy, MQTT and outbox settings count).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Sensor samples per second (default: the config's source rate, else 10).
    // A negative rate reaches the check that explains it, not clap's
    // "unexpected argument".
    #[arg(long, allow_negative_numbers = true)]
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
    /// Also time each operator (tract's optimized ops) over the runs, and
    /// list the slowest nodes with the kernel each runs.
    #[arg(long)]
    ops: bool,
    /// With --ops: how many of the slowest nodes to list, or `all`.
    #[arg(long, value_name = "N|all", default_value_t = edgeinfer::profile::SLOWEST_NODES,
        value_parser = parse_nodes, requires = "ops")]
    nodes: usize,
    /// Layout tract runs 2-D convolutions in: nchw or nhwc (default: the
    /// config's `conv_layout`, else nchw).
    #[arg(long)]
    conv_layout: Option<ConvLayout>,
}

#[derive(clap::Args)]
struct ReplayArgs {
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
        None => run(RunArgs {
            config: None,
            count: None,
            broker: std::env::var("EDGEINFER_BROKER").ok(),
        }),
        Some(Cmd::Run(a)) => run(a),
        #[cfg(feature = "broker")]
        Some(Cmd::Broker(a)) => broker(a),
        Some(Cmd::Infer(a)) => infer(a),
        Some(Cmd::Check(a)) => check(a),
        Some(Cmd::Profile(a)) => profile(a),
        Some(Cmd::Replay(a)) => replay(a),
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

fn run(a: RunArgs) -> Result<(), Failure> {
    let (mut config, embedded) = match &a.config {
        Some(p) => (load_config(p)?, None),
        None => (
            edgeinfer::demo::config(),
            Some((edgeinfer::demo::MODEL, edgeinfer::demo::MODEL_NAME)),
        ),
    };
    if let Some(url) = a.broker.filter(|u| !u.is_empty()) {
        config.use_broker(&url).map_err(bad_input)?;
    }
    run_pipeline(&config, embedded, a.count)
}

fn replay(a: ReplayArgs) -> Result<(), Failure> {
    let config = load_config(&a.config)?;
    let config = pipeline::for_replay(&config, &a.input, a.output.as_deref(), a.realtime)
        .map_err(bad_input)?;
    run_pipeline(&config, None, a.count)
}

#[cfg(feature = "broker")]
fn broker(a: BrokerArgs) -> Result<(), Failure> {
    let addr =
        edgeinfer::broker::parse_listen(&format!("{}:{}", a.bind, a.port)).map_err(bad_input)?;
    eprintln!("edgeinfer: broker listening on {addr}");
    edgeinfer::broker::run(addr).map_err(failed)
}

fn run_pipeline(
    config: &Config,
    embedded: Option<(&[u8], &str)>,
    count: Option<u64>,
) -> Result<(), Failure> {
    // Before anything starts: a Ctrl-C during start-up then stops cleanly.
    let stop = pipeline::stop_on_signals()
        .context("installing signal handlers")
        .map_err(failed)?;
    let built = pipeline::build(config, embedded).map_err(bad_input)?;
    let s = built
        .run(&RunOptions {
            count,
            stop,
            control: None,
        })
        .map_err(failed)?;
    log::info!("{}", serde_json::to_string(&s).unwrap_or_default());
    eprintln!("edgeinfer: {s}");
    if s.restart {
        // A remote `restart`: the same program with the same arguments, in
        // this process (systemd sees no exit, the pid stays).
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()
            .context("finding this program to restart it")
            .map_err(failed)?;
        eprintln!("edgeinfer: restarting");
        let e = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .exec();
        return Err(failed(anyhow!("restart failed: {e}")));
    }
    Ok(())
}

fn infer(a: InferArgs) -> Result<(), Failure> {
    if !a.images.is_empty() {
        return infer_images(a);
    }
    let out =
        edgeinfer::infer::infer_command(&a.model, &a.inputs, a.output.as_deref(), a.conv_layout)
            .map_err(|e| Failure(if e.is_bad_input() { 2 } else { 1 }, e.into()))?;
    if a.json || a.output.is_none() {
        println!("{}", out.to_json());
    }
    Ok(())
}

fn infer_images(a: InferArgs) -> Result<(), Failure> {
    let mut config = match &a.config {
        Some(path) => {
            let mut c = load_config(path)?;
            c.model.path = std::fs::canonicalize(&a.model).unwrap_or(a.model.clone());
            c
        }
        None => edgeinfer::config::Config::for_model(&a.model),
    };
    if let Some(p) = &a.preset {
        config.image.preset = Some(
            serde_json::from_value(serde_json::json!(p))
                .map_err(|_| bad_input(anyhow!("--preset: expected imagenet, found {p:?}")))?,
        );
    }
    let run = edgeinfer::infer::infer_images(&config, &a.images, a.top_k, a.output.as_deref())
        .map_err(|e| Failure(if e.is_bad_input() { 2 } else { 1 }, e.into()))?;
    let mut failed = 0;
    for r in &run.results {
        if r.outcome.is_err() {
            failed += 1;
        }
        if a.json || a.output.is_none() {
            println!("{}", r.to_json(&run.labels));
        }
    }
    if failed > 0 {
        return Err(bad_input(anyhow!(
            "{failed} of {} images could not be run",
            run.results.len()
        )));
    }
    Ok(())
}

fn check(a: CheckArgs) -> Result<(), Failure> {
    if let Some(path) = &a.model {
        let model = ModelFile::read(path)
            .and_then(|f| f.load(None))
            .map_err(bad_input)?;
        print!("{}", model.info());
        return Ok(());
    }
    let path = a
        .config
        .ok_or_else(|| bad_input(anyhow!("check needs --model or --config")))?;
    let config = load_config(&path)?;
    let prepared = pipeline::check(&config, None).map_err(bad_input)?;
    print!("{}", prepared.model.info());
    println!("config: {}", path.display());
    print!("{}", prepared.describe());
    println!("  sinks: {}", config.sink.len());
    println!("ok: the config would run");
    Ok(())
}

/// `--nodes`: a count, or `all` for every node.
fn parse_nodes(s: &str) -> Result<usize, String> {
    if s == "all" {
        return Ok(usize::MAX);
    }
    s.parse()
        .map_err(|_| format!("expected a number of nodes or `all`, got `{s}`"))
}

fn profile(a: ProfileArgs) -> Result<(), Failure> {
    let options = edgeinfer::profile::Options {
        rate_hz: a.rate,
        runs: a.runs,
        model_only: a.model.is_some(),
        threads: a.threads,
        ops: a.ops,
        nodes: a.nodes,
        conv_layout: a.conv_layout,
    };
    let report =
        edgeinfer::profile::profile_command(a.model.as_deref(), a.config.as_deref(), &options)
            .map_err(bad_input)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
