//! Sinks: where emitted results go. One file per kind.

mod file;
mod mqtt;
mod stdout;

pub use file::{read_postcard_records, FileSink};
pub use mqtt::{saved_seq, MqttSink};
pub use stdout::StdoutSink;

use crate::config::{Config, SinkConfig};
use crate::schema::ResultRecord;

/// Errors from sinks.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("{target}: {source}")]
    Io {
        /// The file or stream.
        target: String,
        /// The underlying error.
        source: std::io::Error,
    },
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
}

/// Opens the sinks a config lists; `labels` name classes in JSON output.
/// `mqtt` sinks need the running link (`None` when the config has none).
pub fn open(
    config: &Config,
    labels: &[String],
    link: Option<&crate::mqtt::Link>,
    seq_file: Option<std::path::PathBuf>,
) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    config
        .sink
        .iter()
        .map(|s| -> Result<Box<dyn Sink>, SinkError> {
            Ok(match s {
                SinkConfig::Stdout {} => Box::new(StdoutSink::new(labels.to_vec())),
                SinkConfig::Mqtt { encoding } => {
                    let link = link.ok_or_else(|| SinkError::Io {
                        target: "mqtt".into(),
                        source: std::io::Error::other("no MQTT link"),
                    })?;
                    Box::new(MqttSink::new(
                        link.shared.clone(),
                        &config.device_id,
                        *encoding,
                        config.policy.batch_max_records,
                        config.policy.batch_max_ms,
                        seq_file.clone(),
                    ))
                }
                SinkConfig::File { path, format } => Box::new(FileSink::open(
                    &config.resolve(path),
                    *format,
                    labels.to_vec(),
                )?),
            })
        })
        .collect()
}
