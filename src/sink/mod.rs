//! Sinks: where emitted results go. One file per kind.

mod file;
mod stdout;

pub use file::{read_postcard_records, FileSink};
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
    /// Pushes buffered records out; called when the pipeline is idle and at exit.
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// Opens the sinks a config lists; `labels` name classes in JSON output.
pub fn open(config: &Config, labels: &[String]) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    config
        .sink
        .iter()
        .map(|s| -> Result<Box<dyn Sink>, SinkError> {
            Ok(match s {
                SinkConfig::Stdout {} => Box::new(StdoutSink::new(labels.to_vec())),
                SinkConfig::File { path, format } => Box::new(FileSink::open(
                    &config.resolve(path),
                    *format,
                    labels.to_vec(),
                )?),
            })
        })
        .collect()
}
