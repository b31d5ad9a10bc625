//! `edgeinfer profile`: what a model needs on this device (compute, memory,
//! storage, network, availability), measured here.
//!
//! Every figure is measured or computed exactly, except those named
//! `*_estimate`: message rates under data-dependent policies, and outage
//! capacity, which assumes every result is published.

use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::export::{ElemType, GraphBuilder};
use crate::model::{Model, ModelError, ModelFile};
use crate::pipeline::prepare;
use crate::rng::Rng;
use crate::schema::{Prediction, ResultBatch, ResultRecord, SCHEMA_VERSION};

/// Errors of `profile`.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The config does not fit the model.
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Config(Vec<crate::problem::ConfigProblem>),
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
}

/// The report; JSON keys name their units.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The model file.
    pub model: String,
    /// Input shape profiled.
    pub input_shape: Vec<usize>,
    /// Weights stored in the file.
    pub params: u64,
    /// Multiply-accumulates per inference (tract's cost model).
    pub macs: u64,
    /// Floating-point operations per inference.
    pub flops: u64,
    /// Size of the ONNX file.
    pub file_bytes: u64,
    /// Bytes of the weights as stored (initializer element sizes).
    pub weights_bytes: u64,
    /// `int8` for a quantized model (`edgeinfer-host quantize`), else `f32`.
    pub precision: &'static str,
    /// Resident memory before loading the model.
    pub rss_before_load_bytes: u64,
    /// Peak resident memory of the process after loading and optimizing.
    pub peak_rss_after_load_bytes: u64,
    /// Peak resident memory of the process after the timed runs.
    pub peak_rss_after_runs_bytes: u64,
    /// Peak after the runs minus resident memory before loading.
    pub rss_increase_bytes: u64,
    /// Reading, decoding, typing, optimizing the model.
    pub load_us: u64,
    /// The layout the plan runs 2-D convolutions in.
    pub conv_layout: crate::model::ConvLayout,
    /// The first forward pass (allocations, caches).
    pub first_inference_us: u64,
    /// Timed forward passes.
    pub runs: usize,
    /// Threads the model's matrix products ran on.
    pub threads: usize,
    /// Fastest run.
    pub latency_min_us: f64,
    /// Median run.
    pub latency_p50_us: f64,
    /// 90th percentile.
    pub latency_p90_us: f64,
    /// 99th percentile.
    pub latency_p99_us: f64,
    /// Slowest run.
    pub latency_max_us: f64,
    /// 1 / mean latency, one thread.
    pub inferences_per_s: f64,
    /// The model's FLOPs per second at that rate.
    pub model_flops_per_s: f64,
    /// A large f32 matrix product's FLOPs per second on one core, measured now.
    pub core_peak_flops_per_s: f64,
    /// model_flops_per_s / core_peak_flops_per_s.
    pub fraction_of_peak: f64,
    /// Sensor samples per second assumed (`--rate`, else the config's source rate).
    pub sample_rate_hz: f64,
    /// Results per second at that rate (sample rate / hop).
    pub results_per_s: f64,
    /// Channels per sample.
    pub channels: usize,
    /// One result as a one-record postcard message: payload bytes.
    pub result_postcard_bytes: u64,
    /// The same as JSON.
    pub result_json_bytes: u64,
    /// MQTT PUBLISH packet bytes for the postcard payload on the result topic.
    pub mqtt_packet_postcard_bytes: u64,
    /// The same for JSON.
    pub mqtt_packet_json_bytes: u64,
    /// Records per message (the `mqtt` sink's `batch_max_records`).
    pub records_per_message: u64,
    /// Messages per hour at that rate, every result published.
    pub messages_per_hour: f64,
    /// Bytes per hour on the wire (postcard packets).
    pub bytes_per_hour: f64,
    /// Bytes per hour streaming every raw sample (f32 per channel; an image
    /// at the model's size, a byte per pixel and channel) as its own MQTT
    /// message.
    pub raw_stream_bytes_per_hour: f64,
    /// raw_stream_bytes_per_hour / bytes_per_hour.
    pub saving_factor: f64,
    /// Messages per hour with the config's policy (on_change, deadband...)
    /// applied: an upper bound, since those depend on the data.
    pub messages_per_hour_estimate: f64,
    /// Outbox capacity in results (`[outbox] max_bytes` / bytes per result).
    pub outbox_capacity_results: u64,
    /// Hours of broker outage the outbox covers at that rate.
    pub outbox_capacity_hours_estimate: f64,
    /// With `--ops`: time per operator kind, most first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<OpTime>,
    /// With `--ops`: the nodes that take the most time, most first (at
    /// most `--nodes`, [`SLOWEST_NODES`] unless given).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slowest_nodes: Vec<SlowNode>,
}

/// How many nodes `--ops` lists one by one unless `--nodes` says.
pub const SLOWEST_NODES: usize = 12;

/// One node of the optimized plan and its time per inference.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlowNode {
    /// Its name in the optimized graph (the ONNX node it came from).
    pub name: String,
    /// tract's operator.
    pub op: String,
    /// What tract says of it (kernel, geometry) and its output shape.
    pub detail: String,
    /// Mean wall time per inference.
    pub us_per_inference: f64,
    /// Its share of the time of all nodes.
    pub share: f64,
}

/// Resident set size now and its peak, from /proc/self/status, in bytes.
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

use crate::stats::percentile;

/// FLOPs per second of a 256×256 × 256×256 f32 product in tract on one core.
pub fn core_peak_flops() -> f64 {
    let n = 256;
    let mut rng = Rng::new(5);
    let mut g = GraphBuilder::new("peak");
    let x = g.input("x", ElemType::F32, &[n.into(), n.into()]);
    let w = g.constant("w", &[n, n], rng.normal_vec(n * n, 1.0));
    let y = g.node("MatMul", &[&x, &w], &[]);
    g.output(&y, "y", ElemType::F32, &[n.into(), n.into()]);
    let bytes = crate::export::to_bytes(&g.finish());
    let Ok(mut m) = ModelFile::from_bytes(bytes, "peak").and_then(|f| f.load(None)) else {
        return 0.0;
    };
    let input = rng.normal_vec(n * n, 1.0);
    let _ = m.run_f32(&input);
    let t0 = Instant::now();
    let mut runs = 0;
    while t0.elapsed().as_secs_f64() < 0.3 {
        let _ = m.run_f32(&input);
        runs += 1;
    }
    (2 * n * n * n) as f64 * runs as f64 / t0.elapsed().as_secs_f64()
}

/// Size of an MQTT 3.1.1 PUBLISH packet carrying `payload` bytes on `topic`.
pub fn mqtt_publish_bytes(topic: &str, payload: usize, qos: u8) -> u64 {
    let remaining = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload;
    let mut varint = 1;
    let mut r = remaining >> 7;
    while r > 0 {
        varint += 1;
        r >>= 7;
    }
    (1 + varint + remaining) as u64
}

/// What to profile.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sensor samples per second; default the config's source rate, else 10.
    pub rate_hz: Option<f64>,
    /// Timed runs.
    pub runs: usize,
    /// Profiling a bare model (no config): a model the pipeline cannot
    /// window is timed as a whole instead of rejected.
    pub model_only: bool,
    /// Threads for the model's matrix products, instead of the config's.
    pub threads: Option<usize>,
    /// Also time each operator over `runs` more passes.
    pub ops: bool,
    /// With `ops`: how many of the slowest nodes to list (`usize::MAX`
    /// for all of them).
    pub nodes: usize,
    /// Layout for 2-D convolutions, instead of the config's.
    pub conv_layout: Option<crate::model::ConvLayout>,
}

/// Where one kind of operator spends the time of an inference.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpTime {
    /// tract's name of the optimized operator (`OptMatMul`, `DepthWise`, ...).
    pub op: String,
    /// Nodes of that kind in the optimized graph.
    pub nodes: u64,
    /// Mean wall time per inference spent in them.
    pub us_per_inference: f64,
    /// Their share of the time of all nodes (timing each node adds a
    /// little of its own, so the sum is a bit over the plain latency).
    pub share: f64,
}

/// Times each node over `runs` passes; sums by operator name, most time
/// first, and lists the slowest nodes.
fn op_times(
    model: &mut Model,
    input: &[f32],
    runs: usize,
    listed: usize,
) -> Result<(Vec<OpTime>, Vec<SlowNode>), ProfileError> {
    let mut per_node = std::collections::BTreeMap::new();
    for _ in 0..runs {
        model.run_f32_per_node(input, &mut per_node)?;
    }
    let total: f64 = per_node.values().map(|n| n.secs).sum();
    let share = |secs: f64| if total > 0.0 { secs / total } else { 0.0 };
    let us = |secs: f64| secs * 1e6 / runs as f64;
    let mut per_op = std::collections::BTreeMap::<&str, (f64, u64)>::new();
    for n in per_node.values() {
        let e = per_op.entry(&n.op).or_default();
        e.0 += n.secs;
        e.1 += 1;
    }
    let mut ops: Vec<OpTime> = per_op
        .into_iter()
        .map(|(op, (secs, nodes))| OpTime {
            op: op.to_string(),
            nodes,
            us_per_inference: us(secs),
            share: share(secs),
        })
        .collect();
    ops.sort_by(|a, b| b.us_per_inference.total_cmp(&a.us_per_inference));
    let mut nodes: Vec<SlowNode> = per_node
        .values()
        .map(|n| SlowNode {
            name: n.name.clone(),
            op: n.op.clone(),
            detail: n.detail.clone(),
            us_per_inference: us(n.secs),
            share: share(n.secs),
        })
        .collect();
    nodes.sort_by(|a, b| b.us_per_inference.total_cmp(&a.us_per_inference));
    nodes.truncate(listed);
    Ok((ops, nodes))
}

/// `edgeinfer profile`: the model at `model` with default settings, or the
/// config at `config` (which wins when both are given).
pub fn profile_command(
    model: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
    opts: &Options,
) -> Result<Report, ProfileError> {
    let config = match (model, config) {
        (_, Some(c)) => Config::load(c).map_err(|e| ProfileError::Config(e.0))?,
        (Some(m), None) => Config::for_model(m),
        (None, None) => {
            return Err(ProfileError::Usage(
                "profile needs --model or --config".into(),
            ))
        }
    };
    let file = ModelFile::read(&config.resolve(&config.model.path))?;
    profile(&config, &file, opts)
}

/// Profiles `config`'s model (with its window, postprocess, policy and
/// outbox settings) on this machine. `file` is the model.
pub fn profile(config: &Config, file: &ModelFile, opts: &Options) -> Result<Report, ProfileError> {
    if opts.runs == 0 {
        return Err(ProfileError::Usage("--runs: expected at least 1".into()));
    }
    if let Some(r) = opts.rate_hz.filter(|r| !(r.is_finite() && *r > 0.0)) {
        return Err(ProfileError::Usage(format!(
            "--rate: expected a positive number of samples per second, found {r}"
        )));
    }
    let mut config = config.clone();
    if let Some(t) = opts.threads {
        if t == 0 {
            return Err(ProfileError::Usage(
                "--threads: expected at least 1, found 0".into(),
            ));
        }
        config.model.threads = t;
    }
    if let Some(l) = opts.conv_layout {
        config.model.conv_layout = l;
    }
    let config = &config;
    let (rss_before, _) = rss();
    let channels = config.source.channels(&config.origin).ok().flatten();
    let t0 = Instant::now();
    // A model the pipeline cannot window (an image CNN, several inputs) is
    // still profiled as a model: one inference per sample of its whole input.
    // What streaming the raw input would cost per sample: f32 channel
    // values, or for images the picture at the model's size, one byte per
    // pixel and channel (less than any camera sends).
    let mut raw_sample_bytes = None;
    let (mut model, hop, ch, postprocess) = match prepare(config, file, channels) {
        Ok(p) => {
            raw_sample_bytes = p
                .image
                .as_ref()
                .map(|i| i.shape().iter().product::<usize>());
            (
                p.model,
                p.window.hop(),
                p.window.channels(),
                Some(p.postprocess),
            )
        }
        Err(problems) if !opts.model_only => return Err(ProfileError::Config(problems)),
        Err(_) => {
            let m = file.load_with(None, config.model.threads, config.model.conv_layout)?;
            if m.info().inputs.len() != 1 || m.info().inputs[0].dtype != "F32" {
                return Err(ProfileError::Usage(format!(
                    "{}: profile times models with one f32 input",
                    file.origin()
                )));
            }
            let elements = m.info().inputs[0].shape.iter().product();
            (m, 1, elements, None)
        }
    };
    let load_us = t0.elapsed().as_micros() as u64;
    let (_, peak_load) = rss();
    let info = model.info().clone();
    let shape = info.inputs[0].shape.clone();
    let n: usize = shape.iter().product();
    let input = Rng::new(9).normal_vec(n, 1.0);
    let t1 = Instant::now();
    let first = model.run_f32(&input)?;
    let first_us = t1.elapsed().as_micros() as u64;
    let mut lat = Vec::with_capacity(opts.runs);
    for _ in 0..opts.runs {
        let t = Instant::now();
        std::hint::black_box(model.run_f32(&input)?);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (_, peak_runs) = rss();
    let (ops, slowest_nodes) = if opts.ops {
        op_times(&mut model, &input, opts.runs, opts.nodes)?
    } else {
        Default::default()
    };
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    lat.sort_by(f64::total_cmp);
    let per_s = 1e6 / mean;
    let peak = core_peak_flops();
    let model_flops = info.flops as f64 * per_s;

    let sample_rate = opts
        .rate_hz
        .unwrap_or_else(|| config.source.rate_hz().unwrap_or(10.0));
    let results_per_s = sample_rate / hop as f64;
    let prediction = postprocess
        .and_then(|p| p.apply(&input, &first))
        .unwrap_or(Prediction::Values(first.clone()));
    // Every message names the model that produced it, as the device's do.
    let tag = crate::schema::ModelTag::new(
        &info.sha256,
        &crate::pipeline::model_version(file, &info.sha256),
    );
    let batch = |records: u64| ResultBatch {
        version: SCHEMA_VERSION,
        device: config.device_id.clone(),
        model: Some(tag.clone()),
        records: (0..records)
            .map(|i| ResultRecord {
                source: None,
                seq: 1_000_000 + i,
                ts_ms: crate::clock::now_ms(),
                result: prediction.clone(),
            })
            .collect(),
    };
    let one = batch(1);
    let postcard = one.to_postcard().len();
    let json = serde_json::to_vec(&one).unwrap_or_default().len();
    let mqtt = config.mqtt.clone().unwrap_or_default();
    let prefix = mqtt.prefix_for(&config.device_id);
    let topic = format!("{prefix}/result");
    let per_msg = config
        .sink
        .iter()
        .find_map(|s| match s {
            crate::sink::SinkConfig::Mqtt(m) => Some(m.max_records()),
            _ => None,
        })
        .or(config.policy.batch_max_records)
        .unwrap_or(1)
        .max(1) as u64;
    let msg_bytes = mqtt_publish_bytes(&topic, batch(per_msg).to_postcard().len(), mqtt.qos);
    let messages_per_hour = results_per_s * 3600.0 / per_msg as f64;
    let bytes_per_hour = messages_per_hour * msg_bytes as f64;
    let raw = sample_rate
        * 3600.0
        * mqtt_publish_bytes(
            &format!("{prefix}/raw"),
            raw_sample_bytes.unwrap_or(4 * ch),
            mqtt.qos,
        ) as f64;
    let weights_bytes = file.initializer_bytes();
    let capacity =
        config.outbox.max_bytes / (batch(per_msg).to_postcard().len() as u64 / per_msg).max(1);
    let policy_factor = match (config.policy.min_interval_ms, config.policy.summary_ms) {
        (_, Some(s)) => (1000.0 / results_per_s / s as f64).min(1.0),
        (Some(m), _) => (1000.0 / results_per_s / m as f64).min(1.0),
        _ => 1.0,
    };
    Ok(Report {
        model: info.origin.clone(),
        input_shape: shape,
        params: info.params,
        macs: info.macs,
        flops: info.flops,
        file_bytes: info.file_size,
        weights_bytes,
        precision: file.precision(),
        rss_before_load_bytes: rss_before,
        peak_rss_after_load_bytes: peak_load,
        peak_rss_after_runs_bytes: peak_runs,
        rss_increase_bytes: peak_runs.saturating_sub(rss_before),
        load_us,
        conv_layout: info.conv_layout,
        first_inference_us: first_us,
        runs: opts.runs,
        threads: config.model.threads,
        latency_min_us: lat[0],
        latency_p50_us: percentile(&lat, 0.5),
        latency_p90_us: percentile(&lat, 0.9),
        latency_p99_us: percentile(&lat, 0.99),
        latency_max_us: lat[lat.len() - 1],
        inferences_per_s: per_s,
        model_flops_per_s: model_flops,
        core_peak_flops_per_s: peak,
        fraction_of_peak: if peak > 0.0 { model_flops / peak } else { 0.0 },
        sample_rate_hz: sample_rate,
        results_per_s,
        channels: ch,
        result_postcard_bytes: postcard as u64,
        result_json_bytes: json as u64,
        mqtt_packet_postcard_bytes: mqtt_publish_bytes(&topic, postcard, mqtt.qos),
        mqtt_packet_json_bytes: mqtt_publish_bytes(&topic, json, mqtt.qos),
        records_per_message: per_msg,
        messages_per_hour,
        bytes_per_hour,
        raw_stream_bytes_per_hour: raw,
        saving_factor: if bytes_per_hour > 0.0 {
            raw / bytes_per_hour
        } else {
            0.0
        },
        messages_per_hour_estimate: messages_per_hour * policy_factor,
        outbox_capacity_results: capacity,
        outbox_capacity_hours_estimate: if results_per_s > 0.0 {
            capacity as f64 / results_per_s / 3600.0
        } else {
            0.0
        },
        ops,
        slowest_nodes,
    })
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mib = |b: u64| format!("{:.2} MiB", b as f64 / (1024.0 * 1024.0));
        let rows: Vec<(&str, String)> = vec![
            ("model", self.model.clone()),
            ("input shape", format!("{:?}", self.input_shape)),
            ("compute", format!("{} MACs, {} FLOPs per inference; {} params", self.macs, self.flops, self.params)),
            ("storage", format!("file {} bytes; weights {} bytes; precision {}", self.file_bytes, self.weights_bytes, self.precision)),
            (
                "memory",
                format!(
                    "RSS before load {}; peak after load {}; peak after runs {}; increase {}",
                    mib(self.rss_before_load_bytes),
                    mib(self.peak_rss_after_load_bytes),
                    mib(self.peak_rss_after_runs_bytes),
                    mib(self.rss_increase_bytes)
                ),
            ),
            (
                "load + optimize",
                format!(
                    "{} µs; 2-D convolutions {}",
                    self.load_us, self.conv_layout
                ),
            ),
            ("first inference", format!("{} µs", self.first_inference_us)),
            (
                "latency",
                format!(
                    "min {:.1} / p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} µs over {} runs, {} thread(s)",
                    self.latency_min_us, self.latency_p50_us, self.latency_p90_us, self.latency_p99_us, self.latency_max_us, self.runs, self.threads
                ),
            ),
            (
                "throughput",
                format!(
                    "{:.0} inferences/s on one core; {:.3} GFLOP/s = {:.1}% of this core's measured peak ({:.2} GFLOP/s)",
                    self.inferences_per_s,
                    self.model_flops_per_s / 1e9,
                    self.fraction_of_peak * 100.0,
                    self.core_peak_flops_per_s / 1e9
                ),
            ),
            (
                "network",
                format!(
                    "{} B postcard / {} B JSON per result ({} / {} B as MQTT packets); at {} Hz × {} ch → {:.2} results/s, \
                     {:.0} msgs/h, {:.0} B/h vs {:.0} B/h raw: {:.1}× less; with the policy ≤ {:.0} msgs/h (estimate)",
                    self.result_postcard_bytes,
                    self.result_json_bytes,
                    self.mqtt_packet_postcard_bytes,
                    self.mqtt_packet_json_bytes,
                    self.sample_rate_hz,
                    self.channels,
                    self.results_per_s,
                    self.messages_per_hour,
                    self.bytes_per_hour,
                    self.raw_stream_bytes_per_hour,
                    self.saving_factor,
                    self.messages_per_hour_estimate
                ),
            ),
            (
                "availability",
                format!(
                    "outbox holds {} results = {:.1} h of outage at this rate (estimate)",
                    self.outbox_capacity_results, self.outbox_capacity_hours_estimate
                ),
            ),
        ];
        let mut out: String = rows.iter().map(|(k, v)| format!("{k:<16} {v}\n")).collect();
        for (i, o) in self.ops.iter().enumerate() {
            let key = if i == 0 { "operators" } else { "" };
            out += &format!(
                "{key:<16} {:<24} {:>10.1} µs {:>5.1}%  {} node(s)\n",
                o.op,
                o.us_per_inference,
                o.share * 100.0,
                o.nodes
            );
        }
        for (i, n) in self.slowest_nodes.iter().enumerate() {
            let key = if i == 0 { "slowest nodes" } else { "" };
            out += &format!(
                "{key:<16} {:>10.1} µs {:>5.1}%  {} {} ({})\n",
                n.us_per_inference,
                n.share * 100.0,
                n.op,
                n.name,
                n.detail
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_packet_sizes() {
        // 1 fixed header + 1 length + (2 + 5 topic) + 2 packet id + 10 payload.
        assert_eq!(mqtt_publish_bytes("a/b/c", 10, 1), 21);
        assert_eq!(mqtt_publish_bytes("a/b/c", 10, 0), 19);
        // Remaining length 2 + 1 + 2 + 200 = 205 needs two varint bytes.
        assert_eq!(mqtt_publish_bytes("t", 200, 1), 1 + 2 + 205);
    }

    #[test]
    fn rss_is_read() {
        let (now, peak) = rss();
        assert!(now > 0 && peak >= now);
    }
}
