//! Configuration: TOML in, a checked [`Config`] out.
//!
//! Each top-level section is deserialized on its own (serde stops at the first
//! error of a value), so a file with mistakes in three sections reports all
//! three. Every error names the file, the field path and what was expected.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigProblem {
    /// The config file (or `embedded demo`).
    pub file: String,
    /// Dotted path of the field, e.g. `window.size`.
    pub field: String,
    /// What was expected and what was found.
    pub message: String,
}

/// Every problem found in one config file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

/// A whole device config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Device id: names the device in results and MQTT topics.
    #[serde(default = "default_device_id")]
    pub device_id: String,
    /// The ONNX model to run.
    pub model: ModelConfig,
    /// Where samples come from.
    pub source: SourceConfig,
    /// How samples become the model's input tensor.
    #[serde(default)]
    pub window: WindowConfig,
    /// Steps applied to every sample, in order, before windowing.
    #[serde(default)]
    pub preprocess: Vec<PreprocessStep>,
    /// How model outputs become results; default from the model's
    /// `edgeinfer.task` metadata, else `regress`.
    #[serde(default)]
    pub postprocess: Option<PostprocessConfig>,
    /// Which results are emitted.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Where results go; default one `stdout` sink.
    #[serde(default = "default_sinks")]
    pub sink: Vec<SinkConfig>,
    /// Queues between the pipeline's threads.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The MQTT broker connection, used by `mqtt` sources and sinks.
    #[serde(default)]
    pub mqtt: Option<crate::mqtt::MqttConfig>,
    /// Store-and-forward of result messages awaiting the broker's PUBACK.
    #[serde(default)]
    pub outbox: crate::outbox::OutboxConfig,
    /// A broker inside this process, for boards with no broker on the network.
    #[serde(default)]
    pub broker: BrokerConfig,
    /// Directory relative paths resolve against (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where this config came from, for messages.
    #[serde(skip)]
    pub origin: String,
}

fn default_device_id() -> String {
    "edgeinfer".into()
}

fn default_sinks() -> Vec<SinkConfig> {
    vec![SinkConfig::Stdout {}]
}

/// `[model]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Path of the .onnx file, relative to the config file.
    pub path: PathBuf,
    /// Threads for tract's matrix products. 1 (the default) runs the model
    /// on the pipeline thread; more only pays off for models of millions of
    /// multiply-accumulates per inference (see BENCHMARKS.md). Values above 1
    /// need a build with the `threads` feature.
    #[serde(default = "default_threads")]
    pub threads: usize,
}

fn default_threads() -> usize {
    1
}

/// `[source]`: one input kind, selected by `kind`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A seeded generator of a multi-channel vibration signal.
    Simulated {
        /// Samples per second.
        #[serde(default = "default_rate")]
        rate_hz: f64,
        /// Number of channels (axes).
        #[serde(default = "default_channels")]
        channels: usize,
        /// `normal`, `fault`, or `alternate` (switching every `switch_every_s`).
        #[serde(default)]
        mode: SimMode,
        /// Seconds of simulated time per mode when `mode = "alternate"`.
        #[serde(default = "default_switch")]
        switch_every_s: f64,
        /// Seed: the same seed gives the same stream on every machine.
        #[serde(default = "default_seed")]
        seed: u64,
        /// Pace samples in real time; `false` generates as fast as possible.
        #[serde(default = "default_true")]
        realtime: bool,
    },
    /// Lines from standard input.
    Stdin {
        /// `csv` (numbers separated by commas) or `json` (array, number or object).
        #[serde(default)]
        format: LineFormat,
        /// For JSON objects: the field names that become channels, in order.
        #[serde(default)]
        fields: Vec<String>,
    },
    /// A recorded CSV file with a header line.
    Replay {
        /// The CSV file, relative to the config file.
        path: PathBuf,
        /// Column holding milliseconds since the epoch; absent means
        /// timestamps are counted from 0 at `rate_hz`.
        #[serde(default)]
        timestamp_column: Option<String>,
        /// Columns that become channels, in order; default all but the timestamp.
        #[serde(default)]
        columns: Vec<String>,
        /// Pace samples by their timestamps instead of as fast as possible.
        #[serde(default)]
        realtime: bool,
        /// Sample rate used when there is no timestamp column.
        #[serde(default = "default_rate")]
        rate_hz: f64,
    },
    /// Numeric text files read at a fixed rate (sysfs thermal, hwmon, IIO, 1-wire).
    FilePoll {
        /// One channel per file.
        files: Vec<PolledFile>,
        /// Reads per second.
        #[serde(default = "default_poll_rate")]
        rate_hz: f64,
    },
    /// Messages on MQTT topics (the connection is `[mqtt]`).
    Mqtt {
        /// Topic filters and their payload formats.
        topics: Vec<crate::mqtt::Subscription>,
        /// Channels per sample, when the payloads do not make it obvious.
        #[serde(default)]
        channels: Option<usize>,
    },
    /// A child process whose stdout lines are samples.
    Command {
        /// Program to run (looked up on PATH).
        program: String,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
        /// `csv` or `json`, as for `stdin`.
        #[serde(default)]
        format: LineFormat,
        /// For JSON objects: the field names that become channels, in order.
        #[serde(default)]
        fields: Vec<String>,
    },
}

fn default_rate() -> f64 {
    100.0
}
fn default_poll_rate() -> f64 {
    1.0
}
fn default_channels() -> usize {
    3
}
fn default_switch() -> f64 {
    5.0
}
fn default_seed() -> u64 {
    42
}
fn default_true() -> bool {
    true
}

/// Which signal the simulated sensor produces.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SimMode {
    /// A healthy machine: a low-frequency hum with a little noise.
    Normal,
    /// A failing bearing: the hum plus high-frequency rattle and impacts.
    Fault,
    /// Normal and fault in turn.
    #[default]
    Alternate,
}

/// Text line formats for `stdin` and `command` sources.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// Comma-separated numbers.
    #[default]
    Csv,
    /// A JSON number, array of numbers, or object (see `fields`).
    Json,
}

/// One file of a `file_poll` source.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolledFile {
    /// The file, e.g. `/sys/class/thermal/thermal_zone0/temp`.
    pub path: PathBuf,
    /// Multiplier applied to the number read (0.001 turns millidegrees into °C).
    #[serde(default = "one")]
    pub scale: f32,
    /// Added after scaling.
    #[serde(default)]
    pub offset: f32,
}

fn one() -> f32 {
    1.0
}

/// `[window]`: missing values come from the model's metadata, then its input shape.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Samples per window.
    pub size: Option<usize>,
    /// Samples between the starts of consecutive windows; default `size`.
    pub hop: Option<usize>,
    /// How the window is laid out in the model's input tensor.
    pub layout: Option<Layout>,
}

/// Layout of a window in the input tensor.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `[1, channels, size]`, what 1-D convolutions take.
    Ncw,
    /// `[1, size, channels]`.
    Nwc,
    /// `[1, size × channels]`, time-major: what an MLP over features takes.
    Flat,
}

/// One `[[preprocess]]` step, selected by `op`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PreprocessStep {
    /// `x * factor + offset`.
    Scale {
        /// Multiplier: one number, or one per channel.
        #[serde(default = "per_channel_one")]
        factor: PerChannel,
        /// Added after multiplying: one number, or one per channel.
        #[serde(default = "per_channel_zero")]
        offset: PerChannel,
    },
    /// `(x - mean) / std`; without values, the model's `edgeinfer.mean` and
    /// `edgeinfer.std` metadata.
    Standardize {
        /// Means: one number, or one per channel.
        mean: Option<PerChannel>,
        /// Standard deviations: one number, or one per channel.
        std: Option<PerChannel>,
    },
    /// `(x - min) / (max - min)`, mapping [min, max] to [0, 1].
    MinMax {
        /// Lower bounds: one number, or one per channel.
        min: PerChannel,
        /// Upper bounds: one number, or one per channel.
        max: PerChannel,
    },
    /// Limits every value to `[min, max]`.
    Clamp {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// What to do with NaN or infinite values.
    Missing {
        /// `reject` (drop the sample, counted), `zero`, or `hold_last`.
        policy: MissingPolicy,
    },
}

fn per_channel_one() -> PerChannel {
    PerChannel::One(1.0)
}
fn per_channel_zero() -> PerChannel {
    PerChannel::One(0.0)
}

/// A number for every channel, or one per channel.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerChannel {
    /// The same value for every channel.
    One(f32),
    /// One value per channel, in channel order.
    Each(Vec<f32>),
}

/// NaN / missing-value policy.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MissingPolicy {
    /// Drop the whole sample and count it.
    Reject,
    /// Replace with 0.
    Zero,
    /// Replace with the channel's last good value (0 before there is one).
    HoldLast,
}

/// `[postprocess]`, selected by `kind`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PostprocessConfig {
    /// Scores per class → best class.
    Classify {
        /// Apply softmax to the output first (for models that end in logits).
        #[serde(default)]
        softmax: bool,
        /// How many best classes to report.
        #[serde(default = "default_top_k")]
        top_k: usize,
        /// Class names; default the model's `edgeinfer.labels` metadata.
        #[serde(default)]
        labels: Vec<String>,
        /// Results whose best score is below this are not emitted.
        #[serde(default)]
        min_score: Option<f32>,
    },
    /// The output values as they are.
    Regress {},
    /// An anomaly score compared with a threshold.
    Anomaly {
        /// `output` (the model outputs the score) or `reconstruction` (mean
        /// squared difference between the model's input and output).
        #[serde(default)]
        score: AnomalyScore,
        /// Scores above this are anomalous.
        threshold: f32,
    },
}

fn default_top_k() -> usize {
    1
}

/// How the anomaly score is computed.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyScore {
    /// The model's first output value.
    #[default]
    Output,
    /// Mean squared error between the model input and its output (autoencoders).
    Reconstruction,
}

/// `[policy]`: which results are emitted (rules combine; see `policy.rs`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Emit only when the class (or the anomaly verdict) changes.
    #[serde(default)]
    pub on_change: bool,
    /// Emit only when a value moved by more than this since the last emitted result.
    #[serde(default)]
    pub deadband: Option<f32>,
    /// Emit only when a value moved by more than this fraction of its last emitted value.
    #[serde(default)]
    pub deadband_relative: Option<f32>,
    /// Emit at most one result per this many milliseconds of sample time.
    #[serde(default)]
    pub min_interval_ms: Option<u64>,
    /// Emit the latest result at least this often (ms) even when unchanged.
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
    /// Fold results into one summary record per this many milliseconds.
    #[serde(default)]
    pub summary_ms: Option<u64>,
    /// MQTT: most records in one result message.
    #[serde(default = "default_batch_records")]
    pub batch_max_records: usize,
    /// MQTT: longest a record waits for its message to fill, in milliseconds.
    #[serde(default)]
    pub batch_max_ms: u64,
}

fn default_batch_records() -> usize {
    1
}

impl Default for PolicyConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// One `[[sink]]`, selected by `kind`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON lines on standard output.
    Stdout {},
    /// Result messages on `<prefix>/result` through the outbox (the
    /// connection is `[mqtt]`; batching is `[policy] batch_*`).
    Mqtt {
        /// `postcard` (compact, versioned) or `json` (the same types, for debugging).
        #[serde(default)]
        encoding: Encoding,
    },
    /// Appended to a file.
    File {
        /// The file, relative to the config file; created when missing.
        path: PathBuf,
        /// `jsonl`, or `postcard` (each record as a length-delimited postcard frame).
        #[serde(default)]
        format: FileFormat,
    },
}

/// Encodings of MQTT result messages.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// A postcard `ResultBatch`.
    #[default]
    Postcard,
    /// The same `ResultBatch` as JSON.
    Json,
}

/// `[broker]`: the embedded MQTT broker.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Start a broker in this process beside the pipeline.
    #[serde(default)]
    pub embedded: bool,
    /// Address it listens on; default `0.0.0.0:1883`.
    #[serde(default)]
    pub listen: Option<String>,
}

/// Encodings of the file sink.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// One JSON object per line.
    #[default]
    Jsonl,
    /// postcard `ResultRecord`s, each prefixed by its length as a u32 LE.
    Postcard,
}

/// `[pipeline]`: the queues between threads.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Capacity of the sample queue (source → inference thread), in batches of samples.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// What happens when the queue is full.
    #[serde(default)]
    pub on_full: OnFull,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            capacity: default_capacity(),
            on_full: OnFull::default(),
        }
    }
}

fn default_capacity() -> usize {
    64
}

/// Policy of a full bounded queue.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// The producer waits (a paced sensor then falls behind, nothing is dropped).
    #[default]
    Block,
    /// The oldest queued item is dropped and counted.
    DropOldest,
    /// The new item is dropped and counted.
    DropNewest,
}

const SECTIONS: &[&str] = &[
    "device_id",
    "model",
    "source",
    "window",
    "preprocess",
    "postprocess",
    "policy",
    "sink",
    "pipeline",
    "mqtt",
    "outbox",
    "broker",
];

impl Config {
    /// Reads and checks `path`; relative paths inside resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigProblem {
                file: origin.clone(),
                field: "(file)".into(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, &origin, &base)
    }

    /// Parses TOML `text`; `origin` names it in errors, `base_dir` anchors relative paths.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        let problem = |field: &str, message: String| ConfigProblem {
            file: origin.into(),
            field: field.into(),
            message,
        };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            ConfigErrors(vec![problem(
                &line.map(|l| format!("line {l}")).unwrap_or_default(),
                format!(
                    "invalid TOML: {}",
                    e.message()
                        .split('\n')
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )])
        })?;
        let mut problems = Vec::new();
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                problems.push(problem(
                    key,
                    format!("unknown key, expected one of: {}", SECTIONS.join(", ")),
                ));
            }
        }
        // Each section alone, so one mistake does not hide the next.
        for key in SECTIONS {
            let value = table
                .get(*key)
                .cloned()
                .unwrap_or_else(|| toml::Value::Table(Default::default()));
            let mut single = toml::Table::new();
            if table.contains_key(*key) {
                single.insert(key.to_string(), value);
            }
            if let Err(e) = section_check(single, key) {
                problems.push(problem(&e.0, e.1));
            }
        }
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                ConfigErrors(vec![problem(
                    &e.path().to_string(),
                    e.inner().message().to_string(),
                )])
            })?;
        config.base_dir = base_dir.to_path_buf();
        config.origin = origin.into();
        let problems = config.check();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Points the config at `url` (from `--broker` or `EDGEINFER_BROKER`):
    /// sets `[mqtt] broker` and adds an `mqtt` sink when there is none, so
    /// results are published as well as written where the config says.
    pub fn use_broker(&mut self, url: &str) {
        self.mqtt.get_or_insert_with(Default::default).broker = url.to_string();
        if !self
            .sink
            .iter()
            .any(|s| matches!(s, SinkConfig::Mqtt { .. }))
        {
            self.sink.push(SinkConfig::Mqtt {
                encoding: Encoding::default(),
            });
        }
    }

    /// Resolves a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A problem in this config, for callers that validate further.
    pub fn problem(&self, field: &str, message: impl Into<String>) -> ConfigProblem {
        ConfigProblem {
            file: self.origin.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// Checks of values that serde's types cannot express.
    fn check(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let positive_rate = |r: f64| r.is_finite() && r > 0.0;
        match &self.source {
            SourceConfig::Simulated {
                rate_hz,
                channels,
                switch_every_s,
                ..
            } => {
                if !positive_rate(*rate_hz) {
                    p.push(self.problem(
                        "source.rate_hz",
                        format!(
                            "expected a positive number of samples per second, found {rate_hz}"
                        ),
                    ));
                }
                if *channels == 0 {
                    p.push(self.problem("source.channels", "expected at least 1 channel, found 0"));
                }
                if !positive_rate(*switch_every_s) {
                    p.push(self.problem(
                        "source.switch_every_s",
                        format!("expected a positive number of seconds, found {switch_every_s}"),
                    ));
                }
            }
            SourceConfig::Replay { rate_hz, .. } | SourceConfig::FilePoll { rate_hz, .. }
                if !positive_rate(*rate_hz) =>
            {
                p.push(self.problem(
                    "source.rate_hz",
                    format!("expected a positive number of samples per second, found {rate_hz}"),
                ));
            }
            _ => {}
        }
        if let SourceConfig::FilePoll { files, .. } = &self.source {
            if files.is_empty() {
                p.push(self.problem("source.files", "expected at least one file"));
            }
        }
        if self.window.size == Some(0) {
            p.push(self.problem(
                "window.size",
                "expected a positive number of samples, found 0",
            ));
        }
        if self.window.hop == Some(0) {
            p.push(self.problem(
                "window.hop",
                "expected a positive number of samples, found 0",
            ));
        }
        for (i, step) in self.preprocess.iter().enumerate() {
            if let PreprocessStep::Clamp { min, max } = step {
                if min > max {
                    p.push(self.problem(
                        &format!("preprocess[{i}].min"),
                        format!("expected min <= max, found {min} > {max}"),
                    ));
                }
            }
        }
        if let Some(PostprocessConfig::Classify { top_k: 0, .. }) = self.postprocess {
            p.push(self.problem("postprocess.top_k", "expected at least 1, found 0"));
        }
        if self.policy.batch_max_records == 0 {
            p.push(self.problem("policy.batch_max_records", "expected at least 1, found 0"));
        }
        if let SourceConfig::Mqtt { topics, .. } = &self.source {
            if topics.is_empty() {
                p.push(self.problem("source.topics", "expected at least one topic filter"));
            }
        }
        if let Some(m) = &self.mqtt {
            if let Err(e) = crate::mqtt::BrokerUrl::parse(&m.broker) {
                p.push(self.problem("mqtt.broker", e));
            }
            if !(m.keep_alive_s == 0.0 || (m.keep_alive_s.is_finite() && m.keep_alive_s >= 1.0)) {
                p.push(self.problem(
                    "mqtt.keep_alive_s",
                    format!(
                        "expected 0 (off) or at least 1 second, found {}",
                        m.keep_alive_s
                    ),
                ));
            }
            if m.qos > 2 {
                p.push(self.problem("mqtt.qos", format!("expected 0, 1 or 2, found {}", m.qos)));
            }
        }
        if self.model.threads == 0 {
            p.push(self.problem("model.threads", "expected at least 1, found 0"));
        } else if self.model.threads > 1 && !cfg!(feature = "threads") {
            p.push(self.problem(
                "model.threads",
                format!(
                    "expected 1 in a build without the `threads` feature, found {}",
                    self.model.threads
                ),
            ));
        }
        if self.sink.is_empty() {
            p.push(self.problem("sink", "expected at least one [[sink]]"));
        }
        if self.pipeline.capacity == 0 {
            p.push(self.problem("pipeline.capacity", "expected at least 1, found 0"));
        }
        p
    }
}

/// Deserializes one section through a throwaway struct holding only it, so
/// the error path names exactly the field at fault.
fn section_check(single: toml::Table, key: &str) -> Result<(), (String, String)> {
    fn run<T: serde::de::DeserializeOwned>(single: toml::Table) -> Result<(), (String, String)> {
        serde_path_to_error::deserialize::<_, T>(toml::Value::Table(single))
            .map(|_| ())
            .map_err(|e| (e.path().to_string(), e.inner().message().to_string()))
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct DeviceId {
        device_id: Option<String>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Model {
        model: ModelConfig,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Source {
        source: SourceConfig,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Window {
        window: Option<WindowConfig>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Preprocess {
        preprocess: Option<Vec<PreprocessStep>>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Postprocess {
        postprocess: Option<PostprocessConfig>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Policy {
        policy: Option<PolicyConfig>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Sink {
        sink: Option<Vec<SinkConfig>>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Pipeline {
        pipeline: Option<PipelineConfig>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Mqtt {
        mqtt: Option<crate::mqtt::MqttConfig>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct OutboxSection {
        outbox: Option<crate::outbox::OutboxConfig>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Broker {
        broker: Option<BrokerConfig>,
    }
    match key {
        "device_id" => run::<DeviceId>(single),
        "model" => run::<Model>(single),
        "source" => run::<Source>(single),
        "window" => run::<Window>(single),
        "preprocess" => run::<Preprocess>(single),
        "postprocess" => run::<Postprocess>(single),
        "policy" => run::<Policy>(single),
        "sink" => run::<Sink>(single),
        "pipeline" => run::<Pipeline>(single),
        "mqtt" => run::<Mqtt>(single),
        "outbox" => run::<OutboxSection>(single),
        "broker" => run::<Broker>(single),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, "t.toml", Path::new("/cfg"))
    }

    const MINIMAL: &str = "[model]\npath = \"m.onnx\"\n[source]\nkind = \"stdin\"\n";

    #[test]
    fn minimal_config_takes_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.device_id, "edgeinfer");
        assert_eq!(c.sink, vec![SinkConfig::Stdout {}]);
        assert_eq!(c.resolve(&c.model.path), PathBuf::from("/cfg/m.onnx"));
        assert_eq!(c.pipeline.capacity, 64);
    }

    #[test]
    fn every_broken_section_is_reported_with_its_field() {
        let text = "bogus = 1\n[model]\npath = 3\n[source]\nkind = \"stdin\"\n\
                    [window]\nsize = \"ten\"\n[pipeline]\ncapacity = 0\n";
        let errs = parse(text).unwrap_err().0;
        let fields: Vec<&str> = errs.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"bogus"), "{errs:?}");
        assert!(fields.contains(&"model.path"), "{errs:?}");
        assert!(fields.contains(&"window.size"), "{errs:?}");
        assert!(errs.iter().all(|p| p.file == "t.toml"));
        let line = errs.iter().find(|p| p.field == "window.size").unwrap();
        assert!(line.message.contains("expected"), "{line}");
    }

    #[test]
    fn unknown_field_inside_a_section_is_named() {
        let text = format!("{MINIMAL}[window]\nsize = 4\nhopp = 2\n");
        let errs = parse(&text).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("hopp"), "{}", errs[0]);
    }

    #[test]
    fn semantic_checks_collect_together() {
        let text = "[model]\npath = \"m\"\n[source]\nkind = \"simulated\"\nrate_hz = -1.0\n\
                    channels = 0\n[window]\nsize = 0\n";
        let errs = parse(text).unwrap_err().0;
        let fields: Vec<&str> = errs.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["source.rate_hz", "source.channels", "window.size"]
        );
    }

    #[test]
    fn invalid_toml_names_the_line() {
        let errs = parse("[model]\npath = \n").unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert!(errs[0].field.starts_with("line "), "{}", errs[0]);
    }

    #[test]
    fn preprocess_steps_parse_in_order() {
        let text = format!(
            "{MINIMAL}[[preprocess]]\nop = \"missing\"\npolicy = \"hold_last\"\n\
             [[preprocess]]\nop = \"scale\"\nfactor = [1.0, 2.0]\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.preprocess.len(), 2);
        assert_eq!(
            c.preprocess[1],
            PreprocessStep::Scale {
                factor: PerChannel::Each(vec![1.0, 2.0]),
                offset: PerChannel::One(0.0)
            }
        );
    }
}
