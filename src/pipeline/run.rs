//! The run loop: the source on its own thread, then window, preprocess,
//! model, postprocess, policy and sinks on the calling thread, one hand-off
//! per batch of samples. Shutdown (stop flag, `--count`, end of input)
//! drains what was already queued before returning.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::metrics::{bump, metrics_json, Counters, Latencies};
use super::swap::{Change, Control, Event, Stages};
use super::Prepared;
use crate::model::Output;
use crate::queue::BoundedQueue;
use crate::schema::{Prediction, ResultRecord};
use crate::sink::{Sink, SinkError};
use crate::source::{Frame, Sample, Source, SourceError};

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
    /// Per sample: its encoded image, from an image source.
    frames: Vec<Option<Frame>>,
    /// Records the source could not parse, for the error reports.
    errors: Vec<String>,
}

impl Batch {
    fn with_capacity(samples: usize, channels: usize) -> Self {
        Batch {
            ts_ms: Vec::with_capacity(samples),
            ends: Vec::with_capacity(samples),
            values: Vec::with_capacity(samples * channels),
            frames: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn push(&mut self, s: Sample) {
        self.ts_ms.push(s.ts_ms);
        self.values.extend_from_slice(&s.values);
        self.ends.push(self.values.len());
        if s.frame.is_some() || !self.frames.is_empty() {
            // Only image sources pay for the per-sample slot.
            self.frames.resize(self.ts_ms.len() - 1, None);
            self.frames.push(s.frame);
        }
    }

    fn len(&self) -> usize {
        self.ts_ms.len()
    }
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
    /// Times the source's program was started again.
    pub source_restarts: u64,
    /// Samples with the wrong channel count (skipped).
    pub bad_samples: u64,
    /// Samples rejected by preprocessing (NaN policy).
    pub rejected_samples: u64,
    /// Batches of samples dropped by a full queue.
    pub dropped_batches: u64,
    /// Images that could not be decoded or fitted (skipped).
    pub bad_images: u64,
    /// Frames a live camera source skipped, and frames replaced in the
    /// queue by newer ones while inference was busy.
    pub frames_skipped: u64,
    /// Sensor messages the MQTT link received that never reached the
    /// pipeline: dropped at the source's full queue, or still queued at exit.
    pub input_dropped: u64,
    /// Result messages delivered and left over, when results went to MQTT.
    pub mqtt: Option<crate::mqtt::Delivery>,
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
    /// A remote `restart` order ended the run: start again.
    pub restart: bool,
    /// Per image, median microseconds of decoding, of fitting (region,
    /// resize, colour, scaling) and of the forward pass; `None` when no
    /// image ran.
    pub image_p50_us: Option<[u64; 3]>,
}

impl std::fmt::Display for Summary {
    /// The exit summary line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} samples, {} inferences, {} results, {} skipped, {} dropped, {} inference errors",
            self.samples,
            self.inferences,
            self.emitted,
            self.bad_records + self.bad_samples + self.rejected_samples + self.bad_images,
            self.dropped_batches + self.input_dropped,
            self.inference_errors
        )?;
        if let Some([decode, fit, model]) = self.image_p50_us {
            write!(
                f,
                "; per image (p50): decode {:.1} ms, resize {:.1} ms, inference {:.1} ms",
                decode as f64 / 1e3,
                fit as f64 / 1e3,
                model as f64 / 1e3
            )?;
        }
        if self.frames_skipped > 0 {
            write!(f, ", {} camera frames skipped", self.frames_skipped)?;
        }
        if self.source_restarts > 0 {
            write!(f, ", {} source restarts", self.source_restarts)?;
        }
        if let Some(d) = &self.mqtt {
            write!(f, "; {} result messages delivered", d.acked)?;
            if d.dropped > 0 {
                write!(f, ", {} dropped by the full outbox", d.dropped)?;
            }
            write!(f, ", {} left in the outbox {}", d.left, d.outbox.display())?;
        }
        Ok(())
    }
}

/// How a run ends.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this many emitted results.
    pub count: Option<u64>,
    /// Raised by a signal handler (or the caller) to stop and drain.
    pub stop: Arc<AtomicBool>,
    /// Changes to the running pipeline (model swaps, settings), from the
    /// fleet controller.
    pub control: Option<Arc<Control>>,
}

/// A model on probation: the stages to go back to, and its failures so far.
struct Probation {
    id: String,
    fallback: Box<Stages>,
    failures: u32,
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
            model,
            mut window,
            image,
            preprocess,
            postprocess,
            mut policy,
            mut queues,
            first_seq,
            labels,
            tag,
        } = self;
        let newest_only = source.newest_only();
        if newest_only {
            // A live camera: while inference is busy only the newest frame
            // waits; older ones are dropped (and counted) at the queue.
            queues.capacity = 1;
            queues.on_full = crate::queue::OnFull::DropOldest;
        }
        let mut cur = Stages {
            model,
            image,
            preprocess,
            postprocess,
            labels,
            tag,
        };
        let control = opts.control.clone();
        let mut probation: Option<Probation> = control.as_ref().and_then(|c| {
            let (id, fallback) = c
                .initial_probation
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()?;
            Some(Probation {
                id,
                fallback,
                failures: 0,
            })
        });
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
                let m = metrics_now(&counters, &stage, channels, emitted, &queue, newest_only);
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
            if let Some(c) = &control {
                for change in c.take() {
                    if let Err(e) =
                        apply_change(change, c, &mut cur, &mut probation, &mut policy, &mut sinks)
                    {
                        outcome = Err(e.into());
                        break 'outer;
                    }
                }
            }
            for reason in &batch.errors {
                sinks.iter_mut().for_each(|k| k.report(reason));
            }
            counters
                .samples
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for i in 0..batch.len() {
                let start = if i == 0 { 0 } else { batch.ends[i - 1] };
                let ts_ms = batch.ts_ms[i];
                let frame = batch.frames.get_mut(i).and_then(Option::take);
                let origin = frame.as_ref().map(|f| f.origin.clone());
                let geometry = if let Some(frame) = frame {
                    let fitted = match &cur.image {
                        Some(image) => {
                            let t = Instant::now();
                            image.decode(&frame.bytes).and_then(|img| {
                                let t1 = Instant::now();
                                stage.decode.record((t1 - t).as_micros() as u64);
                                let g = image.tensor(&img, &mut input)?;
                                stage.fit.record(t1.elapsed().as_micros() as u64);
                                Ok(g)
                            })
                        }
                        .map_err(|e| e.to_string()),
                        None => Err("an image, but the model has no image stage".into()),
                    };
                    match fitted {
                        Ok(g) => Some(g),
                        Err(e) => {
                            bump(&counters.bad_images);
                            let reason = format!("image {}: {e}", frame.origin);
                            log::warn!("skipped {reason}");
                            sinks.iter_mut().for_each(|k| k.report(&reason));
                            continue;
                        }
                    }
                } else {
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
                    if let Err(reason) = cur.preprocess.apply(values) {
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
                    None
                };
                let t0 = Instant::now();
                let output = if cur.postprocess.needs_all_outputs() {
                    cur.model.run_f32_all(&input)
                } else {
                    cur.model.run_f32(&input).map(|values| {
                        vec![Output {
                            shape: Vec::new(),
                            values,
                        }]
                    })
                };
                let model_ns = t0.elapsed().as_nanos() as u64;
                counters.inference_ns.fetch_add(model_ns, Ordering::Relaxed);
                stage.model.record(model_ns / 1000);
                if let Some(p) = probation.take() {
                    let failure = match &output {
                        Ok(o) if o.iter().all(|o| o.values.iter().all(|v| v.is_finite())) => None,
                        Ok(_) => Some("the output has non-finite values".to_string()),
                        Err(e) => Some(e.to_string()),
                    };
                    let failed = failure.is_some();
                    let c = control.as_ref().expect("probation comes from a control");
                    match on_probation(p, failure, c, &mut cur, &mut sinks) {
                        Ok(next) => probation = next,
                        Err(e) => {
                            outcome = Err(e.into());
                            break 'outer;
                        }
                    }
                    if failed {
                        // No result from a model that is failing its trial.
                        bump(&counters.inference_errors);
                        continue;
                    }
                }
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
                let offered = cur
                    .postprocess
                    .apply_all(&input, &output, geometry.as_ref())
                    .and_then(|p| policy.offer(ts_ms, p));
                let Some((ts_ms, result)) = offered else {
                    bump(&counters.suppressed);
                    continue;
                };
                // A summary folds many images: none of them is its source.
                let origin = origin.filter(|_| !matches!(result, Prediction::Summary(_)));
                if let Err(e) = emit(&mut sinks, &mut seq, ts_ms, result, origin) {
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
                outcome = emit(&mut sinks, &mut seq, ts_ms, result, None).map_err(Into::into);
                emitted += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        // Unblocks a source waiting on a full queue.
        queue.close();
        let m = metrics_now(&counters, &stage, channels, emitted, &queue, newest_only);
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
            source_restarts: get(&c.source_restarts),
            bad_samples: get(&c.bad_samples),
            rejected_samples: get(&c.rejected),
            dropped_batches: queue_drops(&queue, newest_only).0,
            bad_images: get(&c.bad_images),
            frames_skipped: get(&c.frames_skipped) + queue_drops(&queue, newest_only).1,
            input_dropped: 0,
            mqtt: None,
            inferences: get(&c.inferences),
            inference_errors: get(&c.inference_errors),
            suppressed: get(&c.suppressed),
            emitted,
            inference_us: get(&c.inference_ns) / 1000,
            restart: false,
            image_p50_us: (!stage.fit.is_empty())
                .then(|| [&stage.decode, &stage.fit, &stage.model].map(|r| r.percentile(0.5))),
        })
    }
}

/// The queue's drops as (dropped batches, skipped frames): a live
/// camera's queue drops are frames skipped, not lost data.
fn queue_drops(queue: &BoundedQueue<Batch>, newest_only: bool) -> (u64, u64) {
    if newest_only {
        (0, queue.dropped())
    } else {
        (queue.dropped(), 0)
    }
}

/// The metrics document as of now.
fn metrics_now(
    c: &Counters,
    l: &Latencies,
    channels: usize,
    emitted: u64,
    queue: &BoundedQueue<Batch>,
    newest_only: bool,
) -> serde_json::Value {
    let (dropped, skipped) = queue_drops(queue, newest_only);
    metrics_json(c, l, channels, emitted, dropped, skipped)
}

/// Applies one change from the controller.
fn apply_change(
    change: Change,
    control: &Control,
    cur: &mut Stages,
    probation: &mut Option<Probation>,
    policy: &mut crate::policy::Policy,
    sinks: &mut [Box<dyn Sink>],
) -> Result<(), SinkError> {
    match change {
        Change::Swap {
            id,
            stages,
            probation: on_probation,
        } => {
            for k in sinks.iter_mut() {
                k.model_changed(&stages.tag, &stages.labels)?;
            }
            let old = std::mem::replace(cur, *stages);
            log::info!(
                "model {} ({}) runs now, replacing {} ({})",
                cur.tag.version,
                cur.tag.prefix_hex(),
                old.tag.version,
                old.tag.prefix_hex()
            );
            // A model still on probation when the next arrives was never
            // confirmed: the one before it stays the fallback.
            let fallback = match probation.take() {
                Some(p) => p.fallback,
                None => Box::new(old),
            };
            *probation = on_probation.then(|| Probation {
                id: id.clone(),
                fallback,
                failures: 0,
            });
            control.event(Event::Swapped(id));
        }
        Change::Settings {
            policy: p,
            batching,
        } => {
            *policy = crate::policy::Policy::new(&p);
            if let Some(b) = &batching {
                sinks.iter_mut().for_each(|k| k.set_batching(b));
            }
        }
    }
    Ok(())
}

/// One inference of a model on probation: confirmed by a good output,
/// rolled back after `rollback_after` failures in a row.
fn on_probation(
    mut p: Probation,
    failure: Option<String>,
    control: &Control,
    cur: &mut Stages,
    sinks: &mut [Box<dyn Sink>],
) -> Result<Option<Probation>, SinkError> {
    let Some(reason) = failure else {
        log::info!("model {} confirmed by a good inference", cur.tag.version);
        control.event(Event::Confirmed(p.id));
        return Ok(None);
    };
    p.failures += 1;
    if p.failures < control.rollback_after {
        return Ok(Some(p));
    }
    for k in sinks.iter_mut() {
        k.model_changed(&p.fallback.tag, &p.fallback.labels)?;
    }
    let failed = std::mem::replace(cur, *p.fallback);
    log::error!(
        "model {} failed {} inferences in a row ({reason}): back to {}",
        failed.tag.version,
        p.failures,
        cur.tag.version
    );
    control.event(Event::RolledBack {
        id: p.id,
        reason: format!(
            "model {} failed {} inferences in a row after the swap: {reason}",
            failed.tag.version, p.failures
        ),
    });
    Ok(None)
}

fn emit(
    sinks: &mut [Box<dyn Sink>],
    seq: &mut u64,
    ts_ms: u64,
    result: Prediction,
    source: Option<String>,
) -> Result<(), SinkError> {
    let record = ResultRecord {
        source,
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
        let next = source.next_sample();
        counters
            .frames_skipped
            .store(source.skipped(), Ordering::Relaxed);
        match next {
            Ok(Some(sample)) => {
                batch.push(sample);
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
                if matches!(e, SourceError::Restarted { .. }) {
                    // The source logged it; it is counted and reported here.
                    bump(&counters.source_restarts);
                } else if matches!(e, SourceError::Unavailable { .. }) {
                    // Not a record: the input is missing for now, and the
                    // source says so once per outage.
                    log::warn!("{e}");
                } else {
                    bump(&counters.bad_records);
                    log::warn!("skipped: {e}");
                }
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
