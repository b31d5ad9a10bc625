//! `stdout` sink: one JSON object per line.

use std::io::Write;

use super::{Sink, SinkError};
use crate::schema::{ModelTag, ResultRecord};

/// JSON lines on standard output.
#[derive(Debug)]
pub struct StdoutSink {
    labels: Vec<String>,
    out: std::io::BufWriter<std::io::Stdout>,
}

impl StdoutSink {
    /// A sink that names classes with `labels`.
    pub fn new(labels: Vec<String>) -> Self {
        StdoutSink {
            labels,
            out: std::io::BufWriter::new(std::io::stdout()),
        }
    }
}

fn io(e: std::io::Error) -> SinkError {
    SinkError::Io {
        target: "stdout".into(),
        error: e,
    }
}

impl Sink for StdoutSink {
    fn model_changed(&mut self, _tag: &ModelTag, labels: &[String]) -> Result<(), SinkError> {
        self.labels = labels.to_vec();
        Ok(())
    }

    fn write(&mut self, record: &ResultRecord) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.out, &record.to_json(&self.labels))
            .map_err(|e| io(e.into()))?;
        self.out.write_all(b"\n").map_err(io)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(io)
    }
}
