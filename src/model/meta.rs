//! ONNX `metadata_props` keys: the one place every `edgeinfer.*` key is
//! named. The runtime reads the first group as defaults for its stages; the
//! host trainer writes all of them.

/// Class labels, comma-separated or a JSON array of strings.
pub const LABELS: &str = "edgeinfer.labels";
/// Window length in samples.
pub const WINDOW: &str = "edgeinfer.window";
/// Window hop in samples.
pub const HOP: &str = "edgeinfer.hop";
/// Channel names, comma-separated or a JSON array of strings.
pub const CHANNELS: &str = "edgeinfer.channels";
/// The model's version, as a device reports it (`deploy --version` sets
/// it in the update instead).
pub const VERSION: &str = "edgeinfer.version";
/// Input layout: `ncw`, `nwc` or `flat`.
pub const LAYOUT: &str = "edgeinfer.layout";
/// What the output means: `classify`, `regress` or `anomaly`.
pub const TASK: &str = "edgeinfer.task";
/// Per-channel means for a `standardize` step without its own values (JSON array).
pub const MEAN: &str = "edgeinfer.mean";
/// Per-channel standard deviations to go with [`MEAN`] (JSON array).
pub const STD: &str = "edgeinfer.std";
/// Feature (or channel) column names the trainer used, a JSON array.
pub const FEATURES: &str = "edgeinfer.features";
/// Target column names the trainer used, a JSON array.
pub const TARGET: &str = "edgeinfer.target";
/// The trainer's `--arch`.
pub const ARCH: &str = "edgeinfer.train.arch";
/// The trainer's hidden nonlinearity.
pub const ACTIVATION: &str = "edgeinfer.train.activation";
/// The trainer's convolution width.
pub const KERNEL: &str = "edgeinfer.train.kernel";
/// Test (and k-fold) metrics from the trainer, JSON.
pub const METRICS: &str = "edgeinfer.train.metrics";
/// sha256 of the training examples.
pub const DATA_SHA256: &str = "edgeinfer.train.data_sha256";

/// Splits a metadata list value: a JSON array of strings, or comma-separated.
pub fn meta_list(value: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(value).unwrap_or_else(|_| {
        value
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}
