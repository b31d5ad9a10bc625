//! Sinks: where emitted results go. One file per kind, each owning its
//! `[[sink]]` settings.

mod file;
mod mqtt;
mod stdout;

use std::path::PathBuf;

use serde::Deserialize;

pub use file::{read_postcard_records, FileFormat, FileSink};
pub use mqtt::{next_seq, saved_seq, Encoding, MqttSink, MqttSinkConfig};
pub use stdout::StdoutSink;

use crate::problem::{Origin, Problems};
use crate::schema::{ModelTag, ResultRecord};

/// One `[[sink]]`, selected by `kind`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON lines on standard output.
    Stdout {},
    /// Result messages on `<prefix>/result` through the outbox (the
    /// connection is `[mqtt]`).
    Mqtt(MqttSinkConfig),
    /// Appended to a file.
    File {
        /// The file, relative to the config file; created when missing.
        path: PathBuf,
        /// `jsonl`, or `postcard` (each record as a length-delimited postcard frame).
        #[serde(default)]
        format: FileFormat,
    },
}

/// Checks the `[[sink]]` list.
pub fn validate(sinks: &[SinkConfig], p: &mut Problems) {
    p.check(!sinks.is_empty(), "sink", || {
        "expected at least one [[sink]]".into()
    });
    for (i, s) in sinks.iter().enumerate() {
        if let SinkConfig::Mqtt(m) = s {
            m.validate(&format!("sink[{i}]"), p);
        }
    }
}

/// Errors from sinks.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("{target}: {error}")]
    Io {
        /// The file or stream.
        target: String,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The outbox refused the message.
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
    /// A record could not be encoded.
    #[error("{target}: cannot encode a record: {reason}")]
    Encode {
        /// The sink.
        target: String,
        /// Why.
        reason: String,
    },
    /// An `mqtt` sink without a running MQTT link.
    #[error("mqtt sink: no MQTT link")]
    NoLink,
}

/// A destination for results.
pub trait Sink: Send {
    /// Takes one emitted record.
    fn write(&mut self, record: &ResultRecord) -> Result<(), SinkError>;
    /// Pushes buffered records out; called when the pipeline is idle and
    /// at least every 50 ms.
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Last call: write everything still held.
    fn close(&mut self) -> Result<(), SinkError> {
        self.flush()
    }
    /// A sample or payload was skipped at run time, for sinks that report
    /// it (MQTT publishes it on `<prefix>/error`).
    fn report(&mut self, _reason: &str) {}
    /// The pipeline's counters and stage latencies, four times a second,
    /// for sinks that publish them.
    fn metrics(&mut self, _metrics: &serde_json::Value) {}
    /// From the next record on, results come from another model (an
    /// update, a rollback, a reload): its tag and class names. Records
    /// written before are sent first, so one message never mixes models.
    fn model_changed(&mut self, _tag: &ModelTag, _labels: &[String]) -> Result<(), SinkError> {
        Ok(())
    }
    /// New batching settings (a remote `set`), for sinks that batch.
    fn set_batching(&mut self, _config: &MqttSinkConfig) {}
}

/// What sinks need beyond their own settings.
#[derive(Debug, Clone, Copy)]
pub struct SinkContext<'a> {
    /// Anchors relative paths.
    pub origin: &'a Origin,
    /// Device id, in result messages.
    pub device_id: &'a str,
    /// Class names for JSON output.
    pub labels: &'a [String],
    /// The running MQTT link, for `mqtt` sinks.
    pub link: Option<&'a crate::mqtt::Link>,
    /// Where an `mqtt` sink keeps the next sequence number across restarts.
    pub seq_file: Option<&'a std::path::Path>,
    /// The running model, for the header of result messages.
    pub model: Option<&'a ModelTag>,
}

/// Opens the sinks `sinks` lists.
pub fn open(sinks: &[SinkConfig], ctx: &SinkContext) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    sinks
        .iter()
        .map(|s| -> Result<Box<dyn Sink>, SinkError> {
            Ok(match s {
                SinkConfig::Stdout {} => Box::new(StdoutSink::new(ctx.labels.to_vec())),
                SinkConfig::Mqtt(m) => {
                    let link = ctx.link.ok_or(SinkError::NoLink)?;
                    Box::new(MqttSink::new(
                        link.shared.clone(),
                        ctx.device_id,
                        m,
                        ctx.seq_file.map(|p| p.to_path_buf()),
                        ctx.model.cloned(),
                    ))
                }
                SinkConfig::File { path, format } => Box::new(FileSink::open(
                    &ctx.origin.resolve(path),
                    *format,
                    ctx.labels.to_vec(),
                )?),
            })
        })
        .collect()
}
