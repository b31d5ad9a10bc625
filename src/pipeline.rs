//! Wiring: resolve a config against its model, then run source → window →
//! preprocess → model → postprocess → policy → sinks on their threads.
//!
//! Threads: the source reads on its own thread (it may block on a sensor or
//! a pipe); the calling thread runs inference, policy and sinks. Sinks that
//! talk to the network hand their messages to their own threads. Shutdown (stop flag, `--count`, end of input) drains what was
//! already queued before returning.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigProblem, Layout, PipelineConfig, PostprocessConfig};
use crate::model::{meta, meta_list, shape_fits, InputPin, Model, ModelFile};
use crate::policy::Policy;
use crate::postprocess::Postprocess;
use crate::preprocess::Preprocess;
use crate::queue::BoundedQueue;
use crate::schema::ResultRecord;
use crate::sink::{Sink, SinkError};
use crate::source::{Sample, Source, SourceError};
use crate::window::{shape_for, Window};
use tract_onnx::prelude::{Datum, DatumType};

/// Samples handed from the source thread to the inference thread at once
/// when the source is not paced: one queue operation per sample would cost
/// more than a small model's forward pass.
const CHUNK: usize = 64;

/// Samples moved from the source thread to the inference thread in one
/// hand-off, stored flat so the consumer touches no per-sample allocation.
#[derive(Debug, Default)]
struct Batch {
    ts_ms: Vec<u64>,
    /// Sample `i` is `values[ends[i - 1]..ends[i]]` (from 0 for the first).
    ends: Vec<usize>,
    values: Vec<f32>,
    /// Records the source could not parse, for the error reports.
    errors: Vec<String>,
}

impl Batch {
    fn with_capacity(samples: usize, channels: usize) -> Self {
        Batch {
            ts_ms: Vec::with_capacity(samples),
            ends: Vec::with_capacity(samples),
            values: Vec::with_capacity(samples * channels),
            errors: Vec::new(),
        }
    }

    fn push(&mut self, s: &Sample) {
        self.ts_ms.push(s.ts_ms);
        self.values.extend_from_slice(&s.values);
        self.ends.push(self.values.len());
    }

    fn len(&self) -> usize {
        self.ts_ms.len()
    }
}

/// Everything a config resolves to, checked against the model and ready to run.
#[derive(Debug)]
pub struct Prepared {
    /// The optimized model, input pinned to the window's shape.
    pub model: Model,
    /// The window stage.
    pub window: Window,
    /// The preprocess stage.
    pub preprocess: Preprocess,
    /// The postprocess stage.
    pub postprocess: Postprocess,
    /// The policy stage.
    pub policy: Policy,
    /// Class names, empty when unknown.
    pub labels: Vec<String>,
    /// Queue settings.
    pub queues: PipelineConfig,
    /// Sequence number of the first result (continues an earlier run's).
    pub first_seq: u64,
}

/// Errors while running.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source failed and could not go on.
    #[error("source stopped: {0}")]
    Source(#[from] SourceError),
    /// A sink failed.
    #[error("sink failed: {0}")]
    Sink(#[from] SinkError),
    /// A pipeline thread died.
    #[error("pipeline thread failed: {0}")]
    Thread(String),
}

/// Counters of one run, for the exit summary (and later the metrics topic).
#[derive(Debug, Default, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Samples read from the source.
    pub samples: u64,
    /// Records the source could not parse (skipped).
    pub bad_records: u64,
    /// Samples with the wrong channel count (skipped).
    pub bad_samples: u64,
    /// Samples rejected by preprocessing (NaN policy).
    pub rejected_samples: u64,
    /// Batches of samples dropped by a full queue.
    pub dropped_batches: u64,
    /// Forward passes run.
    pub inferences: u64,
    /// Forward passes that failed.
    pub inference_errors: u64,
    /// Results filtered by postprocess (`min_score`) or held back by the policy.
    pub suppressed: u64,
    /// Results written to the sinks.
    pub emitted: u64,
    /// Total time spent in forward passes, in microseconds.
    pub inference_us: u64,
}

#[derive(Debug, Default)]
struct Counters {
    samples: AtomicU64,
    bad_records: AtomicU64,
    bad_samples: AtomicU64,
    rejected: AtomicU64,
    inferences: AtomicU64,
    inference_errors: AtomicU64,
    suppressed: AtomicU64,
    inference_ns: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// How a run ends.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this many emitted results.
    pub count: Option<u64>,
    /// Raised by a signal handler (or the caller) to stop and drain.
    pub stop: Arc<AtomicBool>,
}

fn parse_layout(s: &str) -> Option<Layout> {
    match s.trim().to_ascii_lowercase().as_str() {
        "ncw" => Some(Layout::Ncw),
        "nwc" => Some(Layout::Nwc),
        "flat" => Some(Layout::Flat),
        _ => None,
    }
}

fn meta_usize(file: &ModelFile, key: &str) -> Option<usize> {
    file.metadata(key).and_then(|v| v.trim().parse().ok())
}

/// Resolves `config` against `file`: window, preprocess and postprocess
/// settings (config first, then the model's metadata, then its input shape),
/// pins the model's input to the window and checks that everything fits.
/// `source_channels` is what the source knows of its channel count.
/// Every problem found is returned, not just the first.
pub fn prepare(
    config: &Config,
    file: &ModelFile,
    source_channels: Option<usize>,
) -> Result<Prepared, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let model_problem = |message: String| ConfigProblem {
        file: file.origin().into(),
        field: "model".into(),
        message,
    };
    let input = match file.inputs() {
        [one] if one.dtype == f32::datum_type() => one.clone(),
        inputs => {
            let list: Vec<String> = inputs.iter().map(|i| i.to_string()).collect();
            return Err(vec![model_problem(format!(
                "expected one f32 input for the pipeline (use `edgeinfer infer` for others), found {}",
                if list.is_empty() { "none".into() } else { list.join(", ") }
            ))]);
        }
    };
    let dims = &input.dims;
    let layout = config
        .window
        .layout
        .or_else(|| file.metadata(meta::LAYOUT).and_then(parse_layout))
        .or(match dims.len() {
            3 => Some(Layout::Ncw),
            2 => Some(Layout::Flat),
            _ => None,
        });
    let Some(layout) = layout else {
        return Err(vec![config.problem(
            "window.layout",
            format!("expected ncw, nwc or flat; the model input {input} has no obvious layout"),
        )]);
    };
    let (chan_dim, size_dim) = match layout {
        Layout::Ncw => (
            dims.get(1).copied().flatten(),
            dims.get(2).copied().flatten(),
        ),
        Layout::Nwc => (
            dims.get(2).copied().flatten(),
            dims.get(1).copied().flatten(),
        ),
        Layout::Flat => (None, None),
    };
    let channels = source_channels
        .or_else(|| file.metadata(meta::CHANNELS).map(|v| meta_list(v).len()))
        .or(chan_dim)
        .or(
            match (layout, dims.get(1).copied().flatten(), config.window.size) {
                (Layout::Flat, Some(n), Some(size)) if size > 0 && n % size == 0 => Some(n / size),
                _ => None,
            },
        )
        .unwrap_or(1);
    let flat_size = match (layout, dims.get(1).copied().flatten()) {
        (Layout::Flat, Some(n)) if n % channels == 0 => Some(n / channels),
        _ => None,
    };
    let size = config
        .window
        .size
        .or_else(|| meta_usize(file, meta::WINDOW))
        .or(size_dim)
        .or(flat_size);
    let Some(size) = size else {
        return Err(vec![config.problem(
            "window.size",
            format!(
                "expected a value: the model input {input} has no fixed length and no {} metadata",
                meta::WINDOW
            ),
        )]);
    };
    let hop = config
        .window
        .hop
        .or_else(|| meta_usize(file, meta::HOP))
        .unwrap_or(size);
    let shape = shape_for(layout, size, channels);
    if !shape_fits(dims, &shape) {
        problems.push(config.problem(
            "window",
            format!(
                "a window of {size} samples x {channels} channels ({layout:?}) makes a tensor {shape:?}, \
                 but the model takes {input}"
            ),
        ));
        return Err(problems);
    }
    let pin = InputPin {
        dtype: DatumType::F32,
        shape: shape.clone(),
    };
    let model = match file.load_threaded(Some(&[pin]), config.model.threads) {
        Ok(m) => m,
        Err(e) => return Err(vec![model_problem(e.to_string())]),
    };
    let info = model.info().clone();
    let preprocess = Preprocess::build(config, channels, &info).map_err(|p| problems.extend(p));
    let outputs: usize = info
        .outputs
        .first()
        .map(|o| o.shape.iter().product())
        .unwrap_or(0);
    let task = file.metadata(meta::TASK).unwrap_or("regress");
    let post_config = config.postprocess.clone().unwrap_or(match task {
        "classify" => PostprocessConfig::Classify {
            softmax: false,
            top_k: 1,
            labels: vec![],
            min_score: None,
        },
        _ => PostprocessConfig::Regress {},
    });
    let mut labels = file
        .metadata(meta::LABELS)
        .map(meta_list)
        .unwrap_or_default();
    let postprocess = match post_config {
        PostprocessConfig::Classify {
            softmax,
            top_k,
            labels: configured,
            min_score,
        } => {
            if !configured.is_empty() {
                labels = configured;
            }
            if !labels.is_empty() && labels.len() != outputs {
                problems.push(config.problem(
                    "postprocess.labels",
                    format!(
                        "expected {outputs} labels (one per model output), found {}",
                        labels.len()
                    ),
                ));
            }
            if top_k > outputs {
                problems.push(config.problem(
                    "postprocess.top_k",
                    format!("expected at most {outputs} (the model's outputs), found {top_k}"),
                ));
            }
            Postprocess::Classify {
                softmax,
                top_k,
                min_score,
            }
        }
        PostprocessConfig::Regress {} => Postprocess::Regress,
        PostprocessConfig::Anomaly { score, threshold } => {
            if score == crate::config::AnomalyScore::Reconstruction && outputs != size * channels {
                problems.push(config.problem(
                    "postprocess.score",
                    format!(
                        "reconstruction needs an output as large as the input ({} values), found {outputs}",
                        size * channels
                    ),
                ));
            }
            Postprocess::Anomaly { score, threshold }
        }
    };
    match preprocess {
        Ok(preprocess) if problems.is_empty() => Ok(Prepared {
            model,
            window: Window::new(size, hop, channels, layout),
            preprocess,
            postprocess,
            policy: Policy::new(&config.policy),
            labels,
            queues: config.pipeline.clone(),
            first_seq: 0,
        }),
        _ => Err(problems),
    }
}

/// Raises the returned flag on SIGINT or SIGTERM; a second signal exits at once.
pub fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag before the second handler sets it.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

impl Prepared {
    /// Runs until the source ends, `opts.count` results were emitted, or
    /// `opts.stop` is raised; then drains and flushes.
    pub fn run(
        self,
        source: Box<dyn Source>,
        mut sinks: Vec<Box<dyn Sink>>,
        opts: &RunOptions,
    ) -> Result<Summary, PipelineError> {
        let Prepared {
            mut model,
            mut window,
            mut preprocess,
            postprocess,
            mut policy,
            queues,
            first_seq,
            ..
        } = self;
        let stop = opts.stop.clone();
        let counters = Arc::new(Counters::default());
        let queue: Arc<BoundedQueue<Batch>> =
            Arc::new(BoundedQueue::new(queues.capacity, queues.on_full));
        let source_error: Arc<Mutex<Option<SourceError>>> = Arc::default();

        // The source thread is not joined: it may be blocked reading a pipe
        // that never closes, and must not hold up a shutdown.
        {
            let (queue, stop, counters, source_error) = (
                queue.clone(),
                stop.clone(),
                counters.clone(),
                source_error.clone(),
            );
            std::thread::Builder::new()
                .name("source".into())
                .spawn(move || read_source(source, &queue, &stop, &counters, &source_error))
                .map_err(|e| PipelineError::Thread(e.to_string()))?;
        }

        // Inference, policy and sinks run on the calling thread: one hand-off
        // per batch of samples, none per result.
        let mut input = Vec::new();
        let mut seq = first_seq;
        let mut emitted = 0u64;
        let channels = window.channels();
        let mut outcome: Result<(), PipelineError> = Ok(());
        let mut stage = Latencies::default();
        let mut next_metrics = Instant::now();
        'outer: loop {
            if next_metrics <= Instant::now() {
                next_metrics = Instant::now() + Duration::from_millis(250);
                let m = metrics_json(&counters, &stage, channels, emitted, queue.dropped());
                sinks.iter_mut().for_each(|k| k.metrics(&m));
            }
            let mut batch = match queue.pop_timeout(&stop, Duration::from_millis(50)) {
                Ok(b) => b,
                Err(true) => break,
                Err(false) => {
                    // Nothing came: time-based batching still has to send.
                    if let Err(e) = sinks.iter_mut().try_for_each(|k| k.flush()) {
                        outcome = Err(e.into());
                        break;
                    }
                    continue;
                }
            };
            for reason in &batch.errors {
                sinks.iter_mut().for_each(|k| k.report(reason));
            }
            counters
                .samples
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for i in 0..batch.len() {
                let start = if i == 0 { 0 } else { batch.ends[i - 1] };
                let ts_ms = batch.ts_ms[i];
                let values = &mut batch.values[start..batch.ends[i]];
                if values.len() != channels {
                    bump(&counters.bad_samples);
                    let reason = format!(
                        "sample at {ts_ms} ms: expected {channels} channels, found {}",
                        values.len()
                    );
                    log::warn!("skipped {reason}");
                    sinks.iter_mut().for_each(|k| k.report(&reason));
                    continue;
                }
                if let Err(reason) = preprocess.apply(values) {
                    bump(&counters.rejected);
                    let reason = format!("sample at {ts_ms} ms: {reason}");
                    log::warn!("rejected {reason}");
                    sinks.iter_mut().for_each(|k| k.report(&reason));
                    continue;
                }
                if !window.push(values) {
                    continue;
                }
                window.fill(&mut input);
                let t0 = Instant::now();
                let output = model.run_f32(&input);
                let model_ns = t0.elapsed().as_nanos() as u64;
                counters.inference_ns.fetch_add(model_ns, Ordering::Relaxed);
                stage.model.record(model_ns / 1000);
                let output = match output {
                    Ok(o) => o,
                    Err(e) => {
                        bump(&counters.inference_errors);
                        log::error!("{e}");
                        continue;
                    }
                };
                bump(&counters.inferences);
                // Sampled: reading the clock costs more than some outputs.
                let t1 = emitted.is_multiple_of(16).then(Instant::now);
                let offered = postprocess
                    .apply(&input, &output)
                    .and_then(|p| policy.offer(ts_ms, p));
                let Some((ts_ms, result)) = offered else {
                    bump(&counters.suppressed);
                    continue;
                };
                if let Err(e) = emit(&mut sinks, &mut seq, ts_ms, result) {
                    outcome = Err(e.into());
                    break 'outer;
                }
                if let Some(t1) = t1 {
                    stage.output.record(t1.elapsed().as_micros() as u64);
                }
                emitted += 1;
                if opts.count.is_some_and(|n| emitted >= n) {
                    break 'outer;
                }
            }
            if queue.is_empty() {
                // Idle: a good moment to push buffered output out.
                if let Err(e) = sinks.iter_mut().try_for_each(|k| k.flush()) {
                    outcome = Err(e.into());
                    break;
                }
            }
        }
        if outcome.is_ok() && opts.count.is_none_or(|n| emitted < n) {
            if let Some((ts_ms, result)) = policy.finish() {
                outcome = emit(&mut sinks, &mut seq, ts_ms, result).map_err(Into::into);
                emitted += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        // Unblocks a source waiting on a full queue.
        queue.close();
        let m = metrics_json(&counters, &stage, channels, emitted, queue.dropped());
        sinks.iter_mut().for_each(|k| k.metrics(&m));
        let closed = sinks.iter_mut().try_for_each(|k| k.close());
        outcome?;
        closed?;
        if let Some(e) = source_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return Err(e.into());
        }
        let c = &counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Ok(Summary {
            samples: get(&c.samples),
            bad_records: get(&c.bad_records),
            bad_samples: get(&c.bad_samples),
            rejected_samples: get(&c.rejected),
            dropped_batches: queue.dropped(),
            inferences: get(&c.inferences),
            inference_errors: get(&c.inference_errors),
            suppressed: get(&c.suppressed),
            emitted,
            inference_us: get(&c.inference_ns) / 1000,
        })
    }
}

/// Recent latencies of one stage, in microseconds.
#[derive(Debug, Default)]
struct Ring {
    values: Vec<u64>,
    next: usize,
}

impl Ring {
    const CAP: usize = 1024;

    fn record(&mut self, v: u64) {
        if self.values.len() < Self::CAP {
            self.values.push(v);
        } else {
            self.values[self.next] = v;
            self.next = (self.next + 1) % Self::CAP;
        }
    }
}

#[derive(Debug, Default)]
struct Latencies {
    /// The forward pass.
    model: Ring,
    /// Postprocess, policy and sinks.
    output: Ring,
}

fn metrics_json(
    c: &Counters,
    l: &Latencies,
    channels: usize,
    emitted: u64,
    dropped: u64,
) -> serde_json::Value {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let pct = |r: &Ring, p: f64| crate::mqtt::percentile(&r.values, p);
    serde_json::json!({
        "samples": get(&c.samples),
        "inferences": get(&c.inferences),
        "results": emitted,
        "errors": get(&c.bad_records) + get(&c.bad_samples) + get(&c.rejected) + get(&c.inference_errors),
        "bad_records": get(&c.bad_records),
        "bad_samples": get(&c.bad_samples),
        "rejected_samples": get(&c.rejected),
        "inference_errors": get(&c.inference_errors),
        "suppressed": get(&c.suppressed),
        "dropped_batches": dropped,
        // What streaming the raw samples would have cost, as f32 values.
        "bytes_in_sensor": get(&c.samples) * channels as u64 * 4,
        "latency_model_p50_us": pct(&l.model, 0.5),
        "latency_model_p99_us": pct(&l.model, 0.99),
        "latency_output_p50_us": pct(&l.output, 0.5),
        "latency_output_p99_us": pct(&l.output, 0.99),
    })
}

fn emit(
    sinks: &mut [Box<dyn Sink>],
    seq: &mut u64,
    ts_ms: u64,
    result: crate::schema::Prediction,
) -> Result<(), SinkError> {
    let record = ResultRecord {
        seq: *seq,
        ts_ms,
        result,
    };
    *seq += 1;
    sinks.iter_mut().try_for_each(|k| k.write(&record))
}

fn read_source(
    mut source: Box<dyn Source>,
    queue: &BoundedQueue<Batch>,
    stop: &AtomicBool,
    counters: &Counters,
    error: &Mutex<Option<SourceError>>,
) {
    let chunk = if source.paced() { 1 } else { CHUNK };
    let channels = source.channels().unwrap_or(1);
    let mut batch = Batch::with_capacity(chunk, channels);
    while !stop.load(Ordering::Relaxed) {
        match source.next_sample() {
            Ok(Some(sample)) => {
                batch.push(&sample);
                if batch.len() >= chunk
                    && !queue.push(
                        std::mem::replace(&mut batch, Batch::with_capacity(chunk, channels)),
                        stop,
                    )
                {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) if e.is_recoverable() => {
                bump(&counters.bad_records);
                log::warn!("skipped: {e}");
                batch.errors.push(e.to_string());
                if chunk == 1
                    && !queue.push(
                        std::mem::replace(&mut batch, Batch::with_capacity(chunk, channels)),
                        stop,
                    )
                {
                    break;
                }
            }
            Err(e) => {
                log::error!("{e}");
                *error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                break;
            }
        }
    }
    if batch.len() > 0 || !batch.errors.is_empty() {
        queue.push(batch, stop);
    }
    queue.close();
}

/// A pipeline ready to run: its stages, source, sinks and MQTT link.
pub struct Built {
    /// The resolved stages.
    pub prepared: Prepared,
    /// The opened source.
    pub source: Box<dyn Source>,
    /// The opened sinks.
    pub sinks: Vec<Box<dyn Sink>>,
    /// The broker connection, when a source or sink uses MQTT.
    pub link: Option<crate::mqtt::Link>,
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
        } = self;
        let result = prepared.run(source, sinks, opts);
        if let Some(l) = link.as_mut() {
            l.close();
        }
        result
    }
}

/// Where the outbox lives: `[outbox] dir` (relative to the config file),
/// else systemd's `$STATE_DIRECTORY`, else
/// `~/.local/state/edgeinfer/<device_id>`, each with `outbox/` below.
pub fn outbox_dir(config: &Config) -> std::path::PathBuf {
    if let Some(d) = &config.outbox.dir {
        return config.resolve(d);
    }
    if let Some(d) = std::env::var_os("STATE_DIRECTORY") {
        return std::path::PathBuf::from(d).join("outbox");
    }
    match std::env::var_os("HOME") {
        Some(h) => std::path::PathBuf::from(h)
            .join(".local/state/edgeinfer")
            .join(&config.device_id)
            .join("outbox"),
        None => config.resolve(std::path::Path::new("edgeinfer-outbox")),
    }
}

/// The retained JSON of `<prefix>/info`.
pub fn info_json(config: &Config, prepared: &Prepared) -> String {
    let info = prepared.model.info();
    let encoding = config.sink.iter().find_map(|s| match s {
        crate::config::SinkConfig::Mqtt { encoding } => {
            Some(format!("{encoding:?}").to_lowercase())
        }
        _ => None,
    });
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "device": config.device_id,
        "schema_version": crate::schema::SCHEMA_VERSION,
        "encoding": encoding,
        "model": info.origin,
        "model_sha256": info.sha256,
        "inputs": info.inputs,
        "outputs": info.outputs,
        "labels": prepared.labels,
        "window": {
            "size": prepared.window.size(),
            "hop": prepared.window.hop(),
            "channels": prepared.window.channels(),
            "layout": format!("{:?}", prepared.window.layout()).to_lowercase(),
        },
    })
    .to_string()
}

/// Reads the config's model (or `embedded` bytes instead of its path),
/// resolves everything, starts the MQTT link when needed and opens the
/// source and sinks: one call from a config to a pipeline ready to run.
pub fn build(config: &Config, embedded: Option<(&[u8], &str)>) -> Result<Built, BuildError> {
    use crate::config::{SinkConfig, SourceConfig};
    let file = match embedded {
        Some((bytes, name)) => ModelFile::from_bytes(bytes.to_vec(), name)?,
        None => ModelFile::read(&config.resolve(&config.model.path))?,
    };
    let channels = crate::source::static_channels(config)?;
    let mut prepared = prepare(config, &file, channels).map_err(BuildError::Config)?;
    let mqtt_sink = config
        .sink
        .iter()
        .any(|s| matches!(s, SinkConfig::Mqtt { .. }));
    let subscriptions = match &config.source {
        SourceConfig::Mqtt { topics, .. } => topics.clone(),
        _ => vec![],
    };
    let mut link = None;
    let mut seq_file = None;
    if mqtt_sink || !subscriptions.is_empty() {
        let dir = outbox_dir(config);
        let mut outbox = config.outbox.clone();
        outbox.dir = Some(dir.clone());
        if mqtt_sink {
            let f = dir.join("next_seq");
            prepared.first_seq = crate::sink::saved_seq(&f);
            seq_file = Some(f);
        }
        link = Some(
            crate::mqtt::Link::start(crate::mqtt::LinkSetup {
                config: config.mqtt.clone().unwrap_or_default(),
                device_id: config.device_id.clone(),
                base_dir: config.base_dir.clone(),
                outbox,
                subscriptions,
                info: info_json(config, &prepared),
            })
            .map_err(|e| match e {
                crate::mqtt::MqttError::Config { field, message } => {
                    BuildError::Config(vec![config.problem(&field, message)])
                }
                other => BuildError::Mqtt(other),
            })?,
        );
    }
    let source = crate::source::open(config, link.as_mut())?;
    let sinks = crate::sink::open(config, &prepared.labels, link.as_ref(), seq_file)?;
    Ok(Built {
        prepared,
        source,
        sinks,
        link,
    })
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
    Mqtt(#[from] crate::mqtt::MqttError),
}
