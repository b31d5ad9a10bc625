//! `edgeinfer-host`: the host companion's command line. Thin: clap → library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edgeinfer::host::collect::{self, ingest, query::Format, sim};
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
    /// Train a model on a CSV file or an image folder and export it, verified, for the device.
    Train(Box<TrainArgs>),
    /// Check an exported model against the trainer's network on a CSV file.
    Verify(VerifyArgs),
    /// Quantize a trained model to int8 (calibrated on its training data) and compare it with the f32 one.
    Quantize(QuantizeArgs),
    /// Record samples from a device source into a CSV file (or images into a class folder) for training.
    Record(RecordArgs),
    /// Subscribe and print what devices publish as JSON lines.
    Listen(ListenArgs),
    /// Decode one result payload (postcard or JSON) from a file or stdin.
    Decode(DecodeArgs),
    /// Store what every device publishes in SQLite or PostgreSQL.
    Collect(CollectArgs),
    /// Print collected results as JSON lines or CSV.
    Query(QueryArgs),
    /// Write per-device charts and a markdown summary of collected data.
    Report(ReportArgs),
    /// Serve a live page of the fleet from collected data.
    Dashboard(DashboardArgs),
    /// Simulate devices publishing results, for load tests of collection.
    FleetSim(FleetSimArgs),
    /// Make an Ed25519 key pair for signing model updates and commands.
    Keygen(KeygenArgs),
    /// Send a model to devices over MQTT, signed; wait for each one's answer.
    Deploy(DeployArgs),
    /// Send one signed command to a device and print its reply.
    #[command(name = "cmd")]
    Command(CmdArgs),
}

#[derive(clap::Args)]
struct KeygenArgs {
    /// Directory for edgeinfer.key (secret) and edgeinfer.pub (for devices).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct FleetArgs {
    /// mqtt://HOST[:PORT]
    #[arg(long, env = "EDGEINFER_BROKER")]
    broker: String,
    /// Key directory from keygen (signs the orders).
    #[arg(long, required_unless_present = "unsigned")]
    key: Option<PathBuf>,
    /// Send unsigned orders (devices take them only with allow_unsigned = true).
    #[arg(long)]
    unsigned: bool,
    /// First topic level of the devices' prefixes.
    #[arg(long, default_value = "edgeinfer")]
    root: String,
    /// Seconds to wait for answers.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
}

#[derive(clap::Args)]
struct DeployArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// One device id.
    #[arg(long, conflicts_with_all = ["devices", "all"])]
    device: Option<String>,
    /// Device ids, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "all")]
    devices: Vec<String>,
    /// Every device that announced [remote] in its info.
    #[arg(long)]
    all: bool,
    /// The model to send.
    #[arg(long)]
    model: PathBuf,
    /// Its version, as devices will report it (default: its metadata, else its sha256).
    #[arg(long)]
    version: Option<String>,
    /// Reference input for the device's self-test (.npy; default input.npy beside the model).
    #[arg(long, requires = "reference_output")]
    reference_input: Option<PathBuf>,
    /// Reference output for the self-test (.npy; default output.npy beside the model).
    #[arg(long)]
    reference_output: Option<PathBuf>,
    /// Send no self-test even when reference files are beside the model.
    #[arg(long)]
    no_selftest: bool,
}

#[derive(clap::Args)]
struct CmdArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// The device id.
    #[arg(long)]
    device: String,
    /// ping | info | rollback | restart | set KEY=VALUE
    #[arg(required = true, num_args = 1..=2)]
    action: Vec<String>,
}

#[derive(clap::Args)]
struct CollectArgs {
    /// mqtt://HOST[:PORT]
    #[arg(long, env = "EDGEINFER_BROKER")]
    broker: String,
    /// An SQLite file (created if missing) or postgres://USER@HOST:PORT/DB.
    #[arg(long, env = "EDGEINFER_DB")]
    db: String,
    /// Share the fleet's messages with other collectors of this group ($share/NAME/...).
    #[arg(long)]
    group: Option<String>,
    /// Filter of the result topics; status, info, metrics and error beside them are collected too.
    #[arg(long, default_value = "edgeinfer/+/result")]
    topic: String,
    /// MQTT client id: names the persistent session, keep it across restarts (default from host and group).
    #[arg(long)]
    client_id: Option<String>,
    /// Most messages per transaction.
    #[arg(long, default_value_t = 500)]
    max_batch: usize,
    /// Exit after storing this many new results.
    #[arg(long)]
    count: Option<u64>,
}

#[derive(clap::Args)]
struct QueryArgs {
    /// An SQLite file or postgres://... URL.
    #[arg(long, env = "EDGEINFER_DB")]
    db: String,
    /// Only this device.
    #[arg(long)]
    device: Option<String>,
    /// Only results from the last span (device time): 90s, 15m, 1h, 2d.
    #[arg(long)]
    since: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// An SQLite file or postgres://... URL.
    #[arg(long, env = "EDGEINFER_DB")]
    db: String,
    /// Directory for summary.md and the charts.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct DashboardArgs {
    /// An SQLite file or postgres://... URL.
    #[arg(long, env = "EDGEINFER_DB")]
    db: String,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Seconds between reads of the database.
    #[arg(long, default_value_t = 1.0)]
    refresh: f64,
}

#[derive(clap::Args)]
struct FleetSimArgs {
    /// mqtt://HOST[:PORT]
    #[arg(long, env = "EDGEINFER_BROKER")]
    broker: String,
    /// Number of simulated devices.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Result messages per second per device.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Records per result message.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Topic prefix before the device id.
    #[arg(long, default_value = "edgeinfer")]
    prefix: String,
    /// Seconds between metrics messages.
    #[arg(long, default_value_t = 5.0)]
    metrics_every: f64,
    /// Number of the first device (sim-NNN), so simulators can share a broker.
    #[arg(long, default_value_t = 1)]
    first: usize,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The exported model (its weights.safetensors must be beside it).
    #[arg(long)]
    model: PathBuf,
    /// CSV file with the model's feature and target columns, or for an
    /// image model the image folder (one subfolder per class).
    #[arg(long)]
    data: PathBuf,
}

#[derive(clap::Args)]
struct QuantizeArgs {
    /// The f32 model, made by `train`.
    #[arg(long)]
    model: PathBuf,
    /// The data it was trained on: the CSV file, or the image folder.
    #[arg(long)]
    calibration: PathBuf,
    /// Where to write the int8 model.
    #[arg(long)]
    out: PathBuf,
    /// per-tensor (one scale per layer, rescaled inside tract's integer
    /// kernel) or per-channel weight scales.
    #[arg(long, default_value = "per-tensor")]
    weight_scales: edgeinfer::export::quantize::WeightScales,
}

#[derive(clap::Args)]
struct RecordArgs {
    /// Device config whose [source] to read.
    #[arg(long)]
    config: PathBuf,
    /// CSV file (appended to when it exists with the same columns), or for an
    /// image source the class folder (DIR/CLASS) frames are saved into.
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
        Cmd::Quantize(a) => {
            host::quantize::quantize_command(&a.model, &a.calibration, &a.out, a.weight_scales)
                .map(|r| println!("{}", serde_json::to_string(&r).unwrap_or_default()))
                .map_err(Failure::from)
        }
        Cmd::Record(a) => run_record(a),
        Cmd::Listen(a) => run_listen(a),
        Cmd::Decode(a) => decode_command(a.file.as_deref(), &a.labels)
            .map(|lines| lines.iter().for_each(|l| println!("{l}")))
            .map_err(Failure::from),
        Cmd::Collect(a) => run_collect(a),
        Cmd::Query(a) => run_query(a),
        Cmd::Report(a) => run_report(a),
        Cmd::Dashboard(a) => run_dashboard(a),
        Cmd::FleetSim(a) => run_fleet_sim(a),
        Cmd::Keygen(a) => host::fleet::keygen(&a.out)
            .map(|public| {
                println!("public key {public}");
                println!(
                    "wrote {} (keep it secret) and {} (copy it to the devices)",
                    a.out.join(edgeinfer::fleet::wire::SECRET_FILE).display(),
                    a.out.join(edgeinfer::fleet::wire::PUBLIC_FILE).display()
                );
            })
            .map_err(Failure::from),
        Cmd::Deploy(a) => run_deploy(a),
        Cmd::Command(a) => run_cmd(a),
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
    if !summary.skipped_images.is_empty() {
        eprintln!(
            "edgeinfer-host: warning: skipped {} files that are not readable images:",
            summary.skipped_images.len()
        );
        for f in &summary.skipped_images {
            eprintln!("  {f}");
        }
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

fn run_collect(a: CollectArgs) -> Result<(), Failure> {
    let stop = edgeinfer::pipeline::stop_on_signals().map_err(|e| Failure(1, e.into()))?;
    let options = ingest::CollectOptions {
        broker: a.broker,
        db: a.db,
        group: a.group,
        topic: a.topic,
        client_id: a.client_id,
        max_batch: a.max_batch.max(1),
        count: a.count,
    };
    let stats = ingest::collect(&options, &stop)?;
    println!("{}", serde_json::to_string(&stats).unwrap_or_default());
    Ok(())
}

fn run_query(a: QueryArgs) -> Result<(), Failure> {
    let since = a
        .since
        .as_deref()
        .map(collect::query::parse_since)
        .transpose()
        .map_err(|e| Failure(2, anyhow::anyhow!(e)))?;
    let mut store = collect::open_existing(&a.db)?;
    let since_ms = since.map(|d| edgeinfer::clock::now_ms() as i64 - d.as_millis() as i64);
    let rows = collect::query::results(&mut store, a.device.as_deref(), since_ms)
        .map_err(|e| collect::store_error(&a.db, e))?;
    collect::query::write_rows(&rows, a.format, &mut std::io::stdout().lock())
        .context("stdout")
        .map_err(|e| Failure(1, e))
}

fn run_report(a: ReportArgs) -> Result<(), Failure> {
    let mut store = collect::open_existing(&a.db)?;
    let histories =
        collect::query::histories(&mut store).map_err(|e| collect::store_error(&a.db, e))?;
    let now = edgeinfer::clock::now_ms() as i64;
    let summaries = collect::report::write_report(&histories, now, &a.out)?;
    println!("{}", serde_json::to_string(&summaries).unwrap_or_default());
    eprintln!("wrote {}", a.out.join("summary.md").display());
    Ok(())
}

fn run_dashboard(a: DashboardArgs) -> Result<(), Failure> {
    let stop = edgeinfer::pipeline::stop_on_signals().map_err(|e| Failure(1, e.into()))?;
    let snapshot = collect::fleet_snapshots(&a.db)?;
    let refresh = Duration::from_secs_f64(a.refresh.clamp(0.1, 3600.0));
    collect::dashboard::serve(&a.listen, snapshot, refresh, stop)?;
    Ok(())
}

fn run_fleet_sim(a: FleetSimArgs) -> Result<(), Failure> {
    let stop = edgeinfer::pipeline::stop_on_signals().map_err(|e| Failure(1, e.into()))?;
    let options = sim::SimOptions {
        broker: a.broker,
        devices: a.devices,
        rate: a.rate,
        batch: a.batch,
        seconds: a.seconds,
        prefix: a.prefix,
        metrics_every: a.metrics_every.max(0.1),
        first: a.first,
    };
    let summary = sim::fleet_sim(&options, &stop)?;
    println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    if !summary.incomplete.is_empty() {
        return Err(Failure(
            1,
            anyhow::anyhow!(
                "the broker did not acknowledge every message of {}",
                summary.incomplete.join(", ")
            ),
        ));
    }
    Ok(())
}

fn fleet_options(a: &FleetArgs) -> Result<host::fleet::FleetOptions, Failure> {
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        return Err(Failure(
            2,
            anyhow::anyhow!("--timeout: expected seconds above 0, found {}", a.timeout),
        ));
    }
    Ok(host::fleet::FleetOptions {
        broker: a.broker.clone(),
        root: a.root.clone(),
        key: if a.unsigned { None } else { a.key.clone() },
        timeout: Duration::from_secs_f64(a.timeout),
    })
}

fn run_deploy(a: DeployArgs) -> Result<(), Failure> {
    let opts = fleet_options(&a.fleet)?;
    let targets = match (a.device, a.all) {
        (Some(d), _) => host::fleet::Targets::Devices(vec![d]),
        (None, true) => host::fleet::Targets::All,
        (None, false) if !a.devices.is_empty() => host::fleet::Targets::Devices(a.devices),
        _ => {
            return Err(Failure(
                2,
                anyhow::anyhow!("name the targets: --device ID, --devices A,B or --all"),
            ))
        }
    };
    let reference = a
        .reference_input
        .as_deref()
        .zip(a.reference_output.as_deref());
    let selftest = host::fleet::selftest_for(&a.model, reference, a.no_selftest)?;
    let outcomes = host::fleet::deploy(&opts, &targets, &a.model, a.version.as_deref(), selftest)?;
    let mut all_applied = true;
    for o in &outcomes {
        println!(
            "{}: {} ({}) in {:.2} s",
            o.device, o.outcome, o.detail, o.seconds
        );
        all_applied &= o.outcome == "applied";
    }
    if all_applied {
        Ok(())
    } else {
        Err(Failure(
            1,
            anyhow::anyhow!(
                "{} of {} devices did not apply the update",
                outcomes.iter().filter(|o| o.outcome != "applied").count(),
                outcomes.len()
            ),
        ))
    }
}

fn run_cmd(a: CmdArgs) -> Result<(), Failure> {
    let opts = fleet_options(&a.fleet)?;
    let action = host::fleet::parse_action(&a.action)?;
    let reply = host::fleet::command(&opts, &a.device, action)?;
    println!("{}", serde_json::to_string(&reply).unwrap_or_default());
    if reply.outcome == "ok" {
        Ok(())
    } else {
        Err(Failure(
            1,
            anyhow::anyhow!("{}: {}", reply.outcome, reply.detail),
        ))
    }
}
