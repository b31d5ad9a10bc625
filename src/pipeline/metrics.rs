//! Counters and stage latencies of a run (the metrics topic and the exit
//! summary), and the retained `info` document.

use std::sync::atomic::{AtomicU64, Ordering};

use super::prepare::Prepared;
use crate::config::{Config, SinkConfig};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) samples: AtomicU64,
    pub(crate) bad_records: AtomicU64,
    pub(crate) source_restarts: AtomicU64,
    pub(crate) bad_samples: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) inferences: AtomicU64,
    pub(crate) inference_errors: AtomicU64,
    pub(crate) suppressed: AtomicU64,
    pub(crate) inference_ns: AtomicU64,
    /// Images that could not be decoded or fitted (skipped).
    pub(crate) bad_images: AtomicU64,
    /// Frames a live camera source skipped (busy inference, rate limits).
    pub(crate) frames_skipped: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Recent latencies of one stage, in microseconds.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    values: Vec<u64>,
    next: usize,
}

impl Ring {
    const CAP: usize = 1024;

    pub(crate) fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub(crate) fn percentile(&self, p: f64) -> u64 {
        crate::stats::percentile(&self.values, p)
    }

    pub(crate) fn record(&mut self, v: u64) {
        if self.values.len() < Self::CAP {
            self.values.push(v);
        } else {
            self.values[self.next] = v;
            self.next = (self.next + 1) % Self::CAP;
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Latencies {
    /// The forward pass.
    pub(crate) model: Ring,
    /// Decoding an image.
    pub(crate) decode: Ring,
    /// Fitting a decoded image to the input: region, resize, colour, scaling.
    pub(crate) fit: Ring,
    /// Postprocess, policy and sinks.
    pub(crate) output: Ring,
}

pub(crate) fn metrics_json(
    c: &Counters,
    l: &Latencies,
    channels: usize,
    emitted: u64,
    dropped: u64,
    queue_skipped: u64,
) -> serde_json::Value {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let pct = |r: &Ring, p: f64| crate::stats::percentile(&r.values, p);
    serde_json::json!({
        "samples": get(&c.samples),
        "inferences": get(&c.inferences),
        "results": emitted,
        "errors": get(&c.bad_records) + get(&c.bad_samples) + get(&c.rejected) + get(&c.inference_errors) + get(&c.bad_images),
        "bad_records": get(&c.bad_records),
        "source_restarts": get(&c.source_restarts),
        "bad_samples": get(&c.bad_samples),
        "rejected_samples": get(&c.rejected),
        "inference_errors": get(&c.inference_errors),
        "suppressed": get(&c.suppressed),
        "dropped_batches": dropped,
        // What streaming the raw samples would have cost, as f32 values.
        "bytes_in_sensor": get(&c.samples) * channels as u64 * 4,
        "bad_images": get(&c.bad_images),
        "frames_skipped": get(&c.frames_skipped) + queue_skipped,
        "latency_decode_p50_us": pct(&l.decode, 0.5),
        "latency_resize_p50_us": pct(&l.fit, 0.5),
        "latency_model_p50_us": pct(&l.model, 0.5),
        "latency_model_p99_us": pct(&l.model, 0.99),
        "latency_output_p50_us": pct(&l.output, 0.5),
        "latency_output_p99_us": pct(&l.output, 0.99),
    })
}

/// The retained JSON of `<prefix>/info`.
pub fn info_json(config: &Config, prepared: &Prepared, model_version: &str) -> String {
    let info = prepared.model.info();
    let encoding = config.sink.iter().find_map(|s| match s {
        SinkConfig::Mqtt(m) => Some(m.encoding.name()),
        _ => None,
    });
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "device": config.device_id,
        "schema_version": crate::schema::SCHEMA_VERSION,
        "encoding": encoding,
        "model": info.origin,
        "model_sha256": info.sha256,
        "model_version": model_version,
        "max_packet_bytes": config.mqtt.as_ref().map(|m| m.max_packet_bytes),
        "remote": config.remote.is_some(),
        "inputs": info.inputs,
        "outputs": info.outputs,
        "labels": prepared.labels,
        "window": {
            "size": prepared.window.size(),
            "hop": prepared.window.hop(),
            "channels": prepared.window.channels(),
            "layout": prepared.window.layout().name(),
        },
    })
    .to_string()
}
