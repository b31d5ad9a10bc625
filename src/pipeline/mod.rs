//! Wiring: from a config to running stages.
//!
//! - `prepare.rs`: resolve a config against its model (every stage's
//!   settings, checked together);
//! - `run.rs`: the run loop (source thread → pipeline thread → sinks);
//! - `metrics.rs`: counters, stage latencies, the `info` document;
//! - this file: [`check`] and [`build`] (model file, embedded broker, MQTT
//!   link, source, sinks), the replay setup, signals.

pub mod metrics;
pub mod prepare;
mod run;
pub mod swap;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use metrics::info_json;
pub use prepare::{model_version, prepare, Prepared};
pub use run::{PipelineError, RunOptions, Summary};

use crate::config::{Config, ConfigProblem, FileFormat, SinkConfig, SourceConfig};
use crate::fleet::controller::{Controller, FleetSetup};
use crate::model::{meta, meta_list, ModelFile};
use crate::mqtt::{Link, LinkError, LinkSetup};
use crate::sink::{Sink, SinkContext, SinkError};
use crate::source::{ReplayConfig, Source, SourceError, REPLAY_RATE_HZ};

/// A second SIGINT/SIGTERM this soon after the first is the same request
/// (GNU `timeout` and a terminal's Ctrl-C signal the process and its group,
/// so one request can arrive twice).
const SAME_REQUEST: std::time::Duration = std::time::Duration::from_secs(1);

/// Raises the returned flag on SIGINT or SIGTERM, so the pipeline drains
/// and exits; a second, separate signal (more than a second later) exits at
/// once with code 130.
pub fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use std::sync::atomic::Ordering;
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut first: Option<std::time::Instant> = None;
            for _ in signals.forever() {
                match first {
                    None => {
                        first = Some(std::time::Instant::now());
                        flag.store(true, Ordering::Relaxed);
                    }
                    Some(t) if t.elapsed() < SAME_REQUEST => {}
                    Some(_) => {
                        eprintln!("edgeinfer: second signal: exiting without draining");
                        std::process::exit(130);
                    }
                }
            }
        })?;
    Ok(stop)
}

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Config values that do not fit the model (every one found).
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigProblem>),
    /// The model file.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// The source could not start.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A sink could not open.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The MQTT link could not start.
    #[error(transparent)]
    Mqtt(#[from] LinkError),
    /// The embedded broker could not start.
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
}

/// The model a config names (or `embedded` bytes instead of its path).
pub fn model_file(
    config: &Config,
    embedded: Option<(&[u8], &str)>,
) -> Result<ModelFile, BuildError> {
    match embedded {
        Some((bytes, name)) => Ok(ModelFile::from_bytes(bytes.to_vec(), name)?),
        None => {
            let path = config.resolve(&config.model.path);
            ModelFile::read(&path).map_err(|e| match e {
                // Name the config and the field that led to the file.
                crate::model::ModelError::Read { error, .. } => BuildError::Config(vec![config
                    .problem(
                        "model.path",
                        format!("cannot read model file {}: {error}", path.display()),
                    )]),
                other => other.into(),
            })
        }
    }
}

/// Everything `check --config` proves: the model loads and every stage
/// resolves against it. [`build`] starts from the same.
pub fn check(config: &Config, embedded: Option<(&[u8], &str)>) -> Result<Prepared, BuildError> {
    let file = model_file(config, embedded)?;
    let channels = config.source.channels(&config.origin)?;
    prepare(config, &file, channels).map_err(BuildError::Config)
}

/// A pipeline ready to run: its stages, source, sinks, MQTT link and
/// embedded broker.
pub struct Built {
    /// The resolved stages.
    pub prepared: Prepared,
    /// The opened source.
    pub source: Box<dyn Source>,
    /// The opened sinks.
    pub sinks: Vec<Box<dyn Sink>>,
    /// The broker connection, when a source or sink uses MQTT.
    pub link: Option<Link>,
    /// The embedded broker's thread (`[broker] embedded = true`); it serves
    /// until the process ends.
    pub broker: Option<std::thread::JoinHandle<()>>,
    /// True when results are published (an `mqtt` sink).
    pub publishes: bool,
    /// The fleet controller's start (runs with a config file).
    pub fleet: Option<FleetSetup>,
}

impl Built {
    /// Runs it (see [`Prepared::run`]), then gives the outbox its grace
    /// period to drain and closes the link.
    pub fn run(self, opts: &RunOptions) -> Result<Summary, PipelineError> {
        let Built {
            prepared,
            source,
            sinks,
            mut link,
            publishes,
            fleet,
            ..
        } = self;
        let mut opts = opts.clone();
        let controller = match fleet {
            Some(setup) => {
                opts.control = Some(setup.control.clone());
                Some(
                    Controller::start(setup, link.as_mut(), opts.stop.clone())
                        .map_err(|e| PipelineError::Thread(e.to_string()))?,
                )
            }
            None => None,
        };
        let mut result = prepared.run(source, sinks, &opts);
        let restart = controller.is_some_and(Controller::finish);
        if let Ok(s) = result.as_mut() {
            s.restart = restart;
        }
        if let Some(l) = link.as_mut() {
            let delivery = l.close();
            if let Ok(s) = result.as_mut() {
                s.input_dropped = l.shared.counters.input_lost();
                s.mqtt = publishes.then_some(delivery);
            }
        }
        result
    }
}

/// Starts the MQTT link a config needs (an `mqtt` sink or source), with
/// `info` as its retained info document; `None` when nothing uses MQTT.
pub fn start_link(config: &Config, info: String) -> Result<Option<Link>, BuildError> {
    let mqtt_sink = config.sink.iter().any(|s| matches!(s, SinkConfig::Mqtt(_)));
    let subscriptions = match &config.source {
        SourceConfig::Mqtt(m) => m.filters(),
        _ => vec![],
    };
    let topics = crate::mqtt::Topics::new(
        &config
            .mqtt
            .clone()
            .unwrap_or_default()
            .prefix_for(&config.device_id),
    );
    let mut control = Vec::new();
    if config.remote.is_some() {
        control.extend([topics.cmd.clone(), topics.update.clone()]);
    }
    if config.homeassistant.enabled {
        control.push(config.homeassistant.birth_topic());
    }
    let ha_marker = config.fleet_dir().join("homeassistant.json").exists();
    if !mqtt_sink && subscriptions.is_empty() && control.is_empty() && !ha_marker {
        return Ok(None);
    }
    let mut outbox = config.outbox.clone();
    outbox.dir = Some(config.outbox_dir());
    let link = Link::start(LinkSetup {
        config: config.mqtt.clone().unwrap_or_default(),
        device_id: config.device_id.clone(),
        base_dir: config.origin.base_dir.clone(),
        outbox,
        subscriptions,
        control,
        info,
    })
    .map_err(|e| match e {
        LinkError::Config { field, message } => {
            BuildError::Config(vec![config.problem(&field, message)])
        }
        other => BuildError::Mqtt(other),
    })?;
    Ok(Some(link))
}

/// The config's source alone, with the MQTT link it reads from when it is
/// an `mqtt` source (for `edgeinfer-host record`).
pub fn open_source(config: &Config) -> Result<(Box<dyn Source>, Option<Link>), BuildError> {
    let mut link = match config.source {
        SourceConfig::Mqtt(_) => {
            let mut only_source = config.clone();
            only_source.sink = vec![];
            start_link(&only_source, "{}".into())?
        }
        _ => None,
    };
    let source = config.source.open(&config.origin, link.as_mut())?;
    Ok((source, link))
}

/// Reads the config's model (or `embedded` bytes instead of its path),
/// resolves everything, starts the embedded broker and the MQTT link when
/// configured, and opens the source and sinks: one call from a config to a
/// pipeline ready to run.
pub fn build(config: &Config, embedded: Option<(&[u8], &str)>) -> Result<Built, BuildError> {
    let fleet_dir = config.fleet_dir();
    let store = if embedded.is_none()
        && (config.remote.is_some()
            || config.homeassistant.enabled
            || fleet_dir.join("homeassistant.json").exists())
    {
        Some(crate::fleet::store::Store::open(&fleet_dir).map_err(|e| {
            BuildError::Config(vec![config.problem(
                "remote.state_dir",
                format!("cannot create {}: {e}", fleet_dir.display()),
            )])
        })?)
    } else {
        None
    };
    let config = &match &store {
        Some(s) => crate::fleet::orders::apply_settings(config, &s.settings()),
        None => config.clone(),
    };
    let mut startup = match (&store, &config.remote) {
        (Some(s), Some(_)) => Some(crate::fleet::startup::startup(
            config,
            s,
            model_file(config, None)?,
        )),
        _ => None,
    };
    let file = match &startup {
        Some(s) => s.file.clone(),
        None => model_file(config, embedded)?,
    };
    let channels = config.source.channels(&config.origin)?;
    let mut prepared = match (prepare(config, &file, channels), &mut startup) {
        (Ok(p), _) => p,
        // A stored model the config changed under: the config's own model
        // runs, rather than a device that cannot start.
        (Err(problems), Some(s)) if s.file.origin() != file_origin(config) => {
            let factory = model_file(config, None)?;
            log::warn!(
                "the stored model {} does not fit the config ({}); running {}",
                s.entry.version,
                problems
                    .iter()
                    .map(|p| p.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
                factory.origin()
            );
            let sha = factory.sha256();
            s.entry = crate::fleet::store::Entry {
                version: model_version(&factory, &sha),
                sha256: sha,
            };
            s.previous = None;
            s.probation = None;
            s.file = factory;
            prepare(config, &s.file, channels).map_err(BuildError::Config)?
        }
        (Err(problems), _) => return Err(BuildError::Config(problems)),
    };
    let running = match &startup {
        Some(s) => s.entry.clone(),
        None => crate::fleet::store::Entry {
            sha256: prepared.model.info().sha256.clone(),
            version: prepared.tag.version.clone(),
        },
    };
    prepared.tag = crate::schema::ModelTag::new(&running.sha256, &running.version);
    let info = info_json(config, &prepared, &running.version);
    // Before the link, which connects to it.
    let broker = config.broker.start()?;
    let link = start_link(config, info.clone())?;
    let publishes = config.sink.iter().any(|s| matches!(s, SinkConfig::Mqtt(_)));
    let seq_file = publishes.then(|| config.outbox_dir().join("next_seq"));
    if let (Some(f), Some(l)) = (&seq_file, &link) {
        prepared.first_seq = crate::sink::next_seq(f, &l.shared.outbox());
    }
    let mut link = link;
    let source = config.source.open(&config.origin, link.as_mut())?;
    let mut sinks = crate::sink::open(
        &config.sink,
        &SinkContext {
            origin: &config.origin,
            device_id: &config.device_id,
            labels: &prepared.labels,
            link: link.as_ref(),
            seq_file: seq_file.as_deref(),
            model: Some(&prepared.tag),
        },
    )?;
    let fleet = match embedded {
        Some(_) => None,
        None => {
            let mut discovery = Vec::new();
            if let (Some(l), true) = (&link, config.homeassistant.enabled) {
                discovery = crate::fleet::controller::discovery_messages(
                    config,
                    &l.topics,
                    &prepared,
                    &running.version,
                );
                sinks.push(Box::new(crate::fleet::homeassistant::StateSink::new(
                    l.shared.clone(),
                    &l.topics.state,
                    prepared.labels.clone(),
                )));
            }
            Some(fleet_setup(
                config, store, startup, running, &prepared, channels, info, discovery,
            )?)
        }
    };
    Ok(Built {
        prepared,
        source,
        sinks,
        link,
        broker,
        publishes,
        fleet,
    })
}

/// How the config's own model file is named in messages.
fn file_origin(config: &Config) -> String {
    config.resolve(&config.model.path).display().to_string()
}

/// The controller's start: the key, the hand-off and, for an update on
/// probation since the last run, the stages to go back to.
#[allow(clippy::too_many_arguments)]
fn fleet_setup(
    config: &Config,
    store: Option<crate::fleet::store::Store>,
    startup: Option<crate::fleet::startup::Startup>,
    running: crate::fleet::store::Entry,
    prepared: &Prepared,
    channels: Option<usize>,
    info: String,
    discovery: Vec<(String, Vec<u8>)>,
) -> Result<FleetSetup, BuildError> {
    let remote = config.remote.clone();
    let key = match remote.as_ref().and_then(|r| r.public_key.as_ref()) {
        Some(k) => Some(
            crate::fleet::wire::read_public_key(&config.resolve(k)).map_err(|e| {
                BuildError::Config(vec![config.problem("remote.public_key", e.to_string())])
            })?,
        ),
        None => None,
    };
    let (tx, events) = std::sync::mpsc::channel();
    let control = std::sync::Arc::new(swap::Control::new(
        remote.as_ref().map(|r| r.rollback_after).unwrap_or(3),
        tx,
    ));
    let (previous, mut probation, replies) = match startup {
        Some(s) => (s.previous, s.probation, s.replies),
        None => (None, None, Vec::new()),
    };
    if let (Some(id), Some(prev), Some(store)) = (&probation, &previous, &store) {
        // The update was swapped in and not yet confirmed when the device
        // stopped: it goes on probation again, with the model before it
        // ready to take over.
        let fallback = store
            .read_model(prev)
            .and_then(|f| prepare(config, &f, channels).map_err(|ps| format!("{ps:?}")));
        match fallback {
            Ok(p) => {
                *control
                    .initial_probation
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some((
                    id.clone(),
                    Box::new(swap::Stages {
                        tag: crate::schema::ModelTag::new(&prev.sha256, &prev.version),
                        model: p.model,
                        image: p.image,
                        preprocess: p.preprocess,
                        postprocess: p.postprocess,
                        labels: p.labels,
                    }),
                ));
            }
            Err(why) => {
                log::warn!(
                    "the previous model cannot run ({why}): update {id} is kept without probation"
                );
                probation = None;
            }
        }
    }
    if let (Some(id), None, Some(store)) = (&probation, &previous, &store) {
        log::warn!("update {id}: no previous model to go back to; it runs without probation");
        let _ = store.set_journal(None);
        probation = None;
    }
    if probation.is_none() {
        if let Some(store) = &store {
            if store
                .journal()
                .is_some_and(|j| j.phase != crate::fleet::store::Phase::Receiving)
            {
                let _ = store.set_journal(None);
            }
        }
    }
    Ok(FleetSetup {
        config: config.clone(),
        remote,
        key,
        store,
        control,
        events,
        running,
        previous,
        probation,
        replies,
        window_shape: prepared.input_shape(),
        channels,
        info,
        discovery,
    })
}

/// `config` set up for `edgeinfer replay`: its source replaced by the CSV
/// recording `input`, its sinks by `output` (JSON lines; postcard frames
/// when it ends in `.bin`; stdout when `None`). The config's replay
/// settings are kept when it has them; otherwise a `ts_ms` or `timestamp`
/// column, when the header has one, gives the times, and the model's
/// channel names, when the header has them all, pick the columns, so a
/// recording with extra columns (a label) replays as it is.
pub fn for_replay(
    config: &Config,
    input: &Path,
    output: Option<&Path>,
    realtime: bool,
) -> Result<Config, BuildError> {
    let cwd = std::env::current_dir().map_err(|e| SourceError::Fatal {
        origin: input.display().to_string(),
        reason: format!("no current directory: {e}"),
    })?;
    let input = &cwd.join(input);
    let output = output.map(|p| cwd.join(p));
    let mut replay = match &config.source {
        SourceConfig::Replay(r) => r.clone(),
        other => ReplayConfig {
            path: input.to_path_buf(),
            timestamp_column: None,
            columns: vec![],
            realtime,
            rate_hz: other.rate_hz().unwrap_or(REPLAY_RATE_HZ),
        },
    };
    replay.path = input.to_path_buf();
    replay.realtime = realtime;
    if replay.timestamp_column.is_none() || replay.columns.is_empty() {
        let header = csv_header(input)?;
        if replay.timestamp_column.is_none() {
            replay.timestamp_column = header
                .iter()
                .find(|c| *c == "ts_ms" || *c == "timestamp")
                .cloned();
        }
        // A model that cannot be read is reported when the pipeline loads it.
        let model_channels = ModelFile::read(&config.resolve(&config.model.path))
            .ok()
            .and_then(|f| f.metadata(meta::CHANNELS).map(meta_list))
            .unwrap_or_default();
        if replay.columns.is_empty()
            && !model_channels.is_empty()
            && model_channels.iter().all(|c| header.contains(c))
        {
            replay.columns = model_channels;
        }
    }
    let mut out = config.clone();
    out.source = SourceConfig::Replay(replay);
    out.sink = vec![match output {
        None => SinkConfig::Stdout {},
        Some(p) => SinkConfig::File {
            path: p.clone(),
            format: if p.extension().is_some_and(|e| e == "bin") {
                FileFormat::Postcard
            } else {
                FileFormat::Jsonl
            },
        },
    }];
    Ok(out)
}

/// The column names of a CSV file's header line.
fn csv_header(input: &Path) -> Result<Vec<String>, SourceError> {
    let fatal = |reason: String| SourceError::Fatal {
        origin: input.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(input).map_err(|e| fatal(format!("cannot open: {e}")))?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(file), &mut line)
        .map_err(|e| fatal(format!("cannot read header: {e}")))?;
    Ok(line
        .trim()
        .split(',')
        .map(|c| c.trim().to_string())
        .collect())
}
