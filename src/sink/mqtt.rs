//! `mqtt` sink: records batched into `ResultBatch` messages, encoded
//! (postcard or JSON) and stored in the outbox; the link's network thread
//! publishes them and deletes each when its PUBACK arrives.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Sink, SinkError};
use crate::config::Encoding;
use crate::mqtt::Shared;
use crate::schema::{ResultBatch, ResultRecord, SCHEMA_VERSION};

/// Batches records into messages for the outbox.
#[derive(Debug)]
pub struct MqttSink {
    shared: Arc<Shared>,
    device: String,
    encoding: Encoding,
    max_records: usize,
    max_wait: Duration,
    pending: Vec<ResultRecord>,
    first_at: Option<Instant>,
    seq_file: Option<PathBuf>,
}

impl MqttSink {
    /// A sink feeding `shared`'s outbox. `seq_file` remembers the next
    /// sequence number across restarts, so subscribers see no reset.
    pub fn new(
        shared: Arc<Shared>,
        device: &str,
        encoding: Encoding,
        max_records: usize,
        max_wait_ms: u64,
        seq_file: Option<PathBuf>,
    ) -> Self {
        MqttSink {
            shared,
            device: device.into(),
            encoding,
            max_records: max_records.max(1),
            max_wait: Duration::from_millis(max_wait_ms),
            pending: Vec::new(),
            first_at: None,
            seq_file,
        }
    }

    fn send(&mut self) -> Result<(), SinkError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let next_seq = self.pending.last().map(|r| r.seq + 1).unwrap_or(0);
        let batch = ResultBatch {
            version: SCHEMA_VERSION,
            device: self.device.clone(),
            records: std::mem::take(&mut self.pending),
        };
        self.first_at = None;
        let bytes = match self.encoding {
            Encoding::Postcard => batch.to_postcard(),
            Encoding::Json => serde_json::to_vec(&batch).unwrap_or_default(),
        };
        let pushed = self.shared.outbox().push(&bytes);
        match pushed {
            Ok(Some(_)) => {}
            Ok(None) => log::warn!("outbox full: dropped the newest message"),
            Err(e) => {
                return Err(SinkError::Io {
                    target: "outbox".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            }
        }
        if let Some(f) = &self.seq_file {
            // Not fsynced: after a power cut a few numbers may repeat,
            // which subscribers see as duplicates, never as gaps.
            let _ = std::fs::write(f, next_seq.to_string());
        }
        Ok(())
    }
}

/// Reads the next sequence number saved by an earlier run.
pub fn saved_seq(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Sink for MqttSink {
    fn write(&mut self, record: &ResultRecord) -> Result<(), SinkError> {
        self.pending.push(record.clone());
        self.first_at.get_or_insert_with(Instant::now);
        if self.pending.len() >= self.max_records {
            self.send()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.first_at.is_some_and(|t| t.elapsed() >= self.max_wait) {
            self.send()?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.send()
    }

    fn report(&mut self, reason: &str) {
        self.shared.report_error(reason);
    }

    fn metrics(&mut self, metrics: &serde_json::Value) {
        if let Some(m) = metrics.as_object() {
            *self
                .shared
                .metrics
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = m.clone();
        }
    }
}
