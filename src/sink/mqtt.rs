//! `mqtt` sink: records batched into `ResultBatch` messages, encoded
//! (postcard or JSON) and stored in the outbox; the link's network thread
//! publishes them and deletes each when its PUBACK arrives.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Sink, SinkError};
use crate::clock::ReportEvery;
use crate::mqtt::Shared;
use crate::problem::Problems;
use crate::schema::{ModelTag, ResultBatch, ResultRecord, SCHEMA_VERSION};

/// `[[sink]] kind = "mqtt"`: how results become messages.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    /// `postcard` (compact, versioned) or `json` (the same types, for debugging).
    #[serde(default)]
    pub encoding: Encoding,
    /// Most records in one result message; default 1 (or the older
    /// `[policy] batch_max_records`).
    #[serde(default)]
    pub batch_max_records: Option<usize>,
    /// Longest a record waits for its message to fill, in milliseconds;
    /// default 0 (or the older `[policy] batch_max_ms`).
    #[serde(default)]
    pub batch_max_ms: Option<u64>,
}

impl MqttSinkConfig {
    /// Checks this sink's settings; `at` names it (`sink[1]`).
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if let Some(n) = self.batch_max_records {
            p.at_least_one(n as u64, &format!("{at}.batch_max_records"));
        }
    }

    /// Records per message.
    pub fn max_records(&self) -> usize {
        self.batch_max_records.unwrap_or(1).max(1)
    }

    /// Longest wait for a message to fill.
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.batch_max_ms.unwrap_or(0))
    }
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

impl Encoding {
    /// The lower-case name, as in config and the `info` topic.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Postcard => "postcard",
            Encoding::Json => "json",
        }
    }
}

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
    /// The model behind the pending records.
    model: Option<ModelTag>,
    /// Messages the outbox could not store, reported every 10 s at most.
    write_errors: ReportEvery,
}

impl MqttSink {
    /// A sink feeding `shared`'s outbox. `seq_file` remembers the next
    /// sequence number across restarts, so subscribers see no reset.
    pub fn new(
        shared: Arc<Shared>,
        device: &str,
        config: &MqttSinkConfig,
        seq_file: Option<PathBuf>,
        model: Option<ModelTag>,
    ) -> Self {
        MqttSink {
            shared,
            device: device.into(),
            encoding: config.encoding,
            max_records: config.max_records(),
            max_wait: config.max_wait(),
            pending: Vec::new(),
            first_at: None,
            seq_file,
            model,
            write_errors: ReportEvery::new(Duration::from_secs(10)),
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
            model: self.model.clone(),
        };
        self.first_at = None;
        let bytes = match self.encoding {
            Encoding::Postcard => batch.to_postcard(),
            Encoding::Json => serde_json::to_vec(&batch).map_err(|e| SinkError::Encode {
                target: "mqtt".into(),
                reason: e.to_string(),
            })?,
        };
        let pushed = self.shared.outbox().push(&bytes);
        match pushed {
            Ok(Some(_)) => {}
            Ok(None) => log::warn!("outbox full: dropped the newest message"),
            // A full or failing disk must not stop inference: the message is
            // dropped, counted (`outbox_dropped`) and reported, and the next
            // one tries again, so the outbox recovers when space returns.
            Err(e) => {
                self.shared.outbox().count_dropped();
                if let Some(n) = self.write_errors.count() {
                    let reason = format!("{e}: dropped {n} result messages (disk full or failing)");
                    log::error!("{reason}");
                    self.shared.report_error(&reason);
                }
            }
        }
        if let Some(f) = &self.seq_file {
            // Overwritten in place at a fixed width: a process killed at
            // any moment leaves the old number or the new one, never an
            // empty file. Not fsynced: what a crash loses here, the outbox
            // still has, and `next_seq` reads it back from there.
            let text = format!("{next_seq:020}\n");
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(f)
                .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()));
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

/// The sequence number to continue with: after the one saved in
/// `seq_file`, and after every record still waiting in `outbox` (a crash
/// between storing a message and saving its number must not let the next
/// run reuse the number for another result, which a subscriber would drop
/// as a duplicate). Numbers rise with outbox ids, so the newest message
/// that decodes holds the highest; older ones are not read.
pub fn next_seq(seq_file: &std::path::Path, outbox: &crate::outbox::Outbox) -> u64 {
    let newest = outbox.ids().rev().find_map(|id| {
        let bytes = outbox.read(id).ok()??;
        let batch = ResultBatch::from_postcard(&bytes)
            .ok()
            .or_else(|| serde_json::from_slice::<ResultBatch>(&bytes).ok())?;
        batch.records.last().map(|r| r.seq + 1)
    });
    saved_seq(seq_file).max(newest.unwrap_or(0))
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

    fn model_changed(&mut self, tag: &ModelTag, _labels: &[String]) -> Result<(), SinkError> {
        self.send()?;
        self.model = Some(tag.clone());
        Ok(())
    }

    fn set_batching(&mut self, config: &MqttSinkConfig) {
        self.max_records = config.max_records();
        self.max_wait = config.max_wait();
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
