//! Sources: where samples come from. One file per input kind; all yield
//! timestamped multi-channel [`Sample`]s through the [`Source`] trait.

mod command;
mod file_poll;
pub mod lines;
mod mqtt;
mod replay;
mod simulated;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use command::CommandSource;
pub use file_poll::FilePollSource;
pub use lines::{parse_line, LineSource};
pub use mqtt::MqttSource;
pub use replay::ReplaySource;
pub use simulated::SimulatedSource;

use crate::config::{Config, SourceConfig};

/// One reading of every channel at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch (or since the start of a recording
    /// that has no timestamps).
    pub ts_ms: u64,
    /// One value per channel; NaN marks a missing value.
    pub values: Vec<f32>,
}

/// Errors from sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// One record could not be parsed; the source goes on after it.
    #[error("{origin}: record {record}: {reason}")]
    BadRecord {
        /// Which source (file name, `stdin`, program).
        origin: String,
        /// 1-based record (line) number.
        record: u64,
        /// What was wrong.
        reason: String,
    },
    /// The source cannot go on or cannot start.
    #[error("{origin}: {reason}")]
    Fatal {
        /// Which source.
        origin: String,
        /// What went wrong.
        reason: String,
    },
}

impl SourceError {
    /// True when the source can go on after this error.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, SourceError::BadRecord { .. })
    }
}

/// A stream of samples.
pub trait Source: Send {
    /// The next sample; `Ok(None)` at the end of the stream. A
    /// [`SourceError::BadRecord`] is counted and skipped by the caller.
    fn next_sample(&mut self) -> Result<Option<Sample>, SourceError>;

    /// Channels per sample, when the source knows it before reading.
    fn channels(&self) -> Option<usize>;

    /// True when samples arrive at the pace of the world (sensors, realtime
    /// replays): the pipeline then hands them on one by one instead of in
    /// batches, so latency stays low.
    fn paced(&self) -> bool;
}

/// Opens the source a config describes; an `mqtt` source reads from `link`.
pub fn open(
    config: &Config,
    link: Option<&mut crate::mqtt::Link>,
) -> Result<Box<dyn Source>, SourceError> {
    Ok(match &config.source {
        SourceConfig::Mqtt { topics, channels } => {
            let rx = link
                .and_then(|l| l.take_samples())
                .ok_or_else(|| SourceError::Fatal {
                    origin: "mqtt".into(),
                    reason: "no MQTT link to read from".into(),
                })?;
            Box::new(MqttSource::new(
                rx,
                channels.or_else(|| mqtt_channels(topics)),
            ))
        }
        SourceConfig::Simulated {
            rate_hz,
            channels,
            mode,
            switch_every_s,
            seed,
            realtime,
        } => Box::new(SimulatedSource::new(
            *rate_hz,
            *channels,
            *mode,
            *switch_every_s,
            *seed,
            *realtime,
        )),
        SourceConfig::Stdin { format, fields } => Box::new(LineSource::new(
            "stdin",
            std::io::BufReader::new(std::io::stdin()),
            *format,
            fields.clone(),
        )),
        SourceConfig::Replay {
            path,
            timestamp_column,
            columns,
            realtime,
            rate_hz,
        } => Box::new(ReplaySource::open(
            &config.resolve(path),
            timestamp_column.as_deref(),
            columns,
            *realtime,
            *rate_hz,
        )?),
        SourceConfig::FilePoll { files, rate_hz } => {
            let files = files
                .iter()
                .map(|f| (config.resolve(&f.path), f.scale, f.offset))
                .collect();
            Box::new(FilePollSource::new(files, *rate_hz))
        }
        SourceConfig::Command {
            program,
            args,
            format,
            fields,
        } => Box::new(CommandSource::spawn(
            program,
            args,
            *format,
            fields.clone(),
        )?),
    })
}

/// Reads the next non-blank line of `reader` into `buf` (trimmed, counted
/// in `line_no`); `None` at the end. Lines starting with `#` are skipped
/// when `comments` is set.
pub(crate) fn next_line<R: std::io::BufRead>(
    reader: &mut R,
    buf: &mut String,
    line_no: &mut u64,
    origin: &str,
    comments: bool,
) -> Result<Option<String>, SourceError> {
    loop {
        buf.clear();
        let n = reader.read_line(buf).map_err(|e| SourceError::Fatal {
            origin: origin.to_string(),
            reason: format!("read failed: {e}"),
        })?;
        if n == 0 {
            return Ok(None);
        }
        *line_no += 1;
        let line = buf.trim();
        if line.is_empty() || (comments && line.starts_with('#')) {
            continue;
        }
        return Ok(Some(line.to_string()));
    }
}

/// Samples held in memory, handed out as fast as they are asked for: for
/// embedding the pipeline behind your own reader, and for benchmarks.
#[derive(Debug)]
pub struct MemorySource {
    samples: std::vec::IntoIter<Sample>,
    channels: Option<usize>,
}

impl MemorySource {
    /// A source of `samples`, each of `channels` values when known.
    pub fn new(samples: Vec<Sample>, channels: Option<usize>) -> Self {
        MemorySource {
            samples: samples.into_iter(),
            channels,
        }
    }
}

impl Source for MemorySource {
    fn next_sample(&mut self) -> Result<Option<Sample>, SourceError> {
        Ok(self.samples.next())
    }

    fn channels(&self) -> Option<usize> {
        self.channels
    }

    fn paced(&self) -> bool {
        false
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sleeps so that event `i` happens `i * period` after the pacer started.
/// Schedules against the start rather than the previous event, so the rate
/// does not drift with per-sample work.
#[derive(Debug)]
pub(crate) struct Pacer {
    start: Instant,
    period: Duration,
}

impl Pacer {
    pub(crate) fn new(rate_hz: f64) -> Self {
        Pacer {
            start: Instant::now(),
            period: Duration::from_secs_f64(1.0 / rate_hz),
        }
    }

    pub(crate) fn wait_for(&self, i: u64) {
        self.wait_until(self.period.mul_f64(i as f64));
    }

    pub(crate) fn wait_until(&self, offset: Duration) {
        let due = self.start + offset;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

/// The source of `edgeinfer replay`: `input` (a CSV recording) replayed
/// with the config's replay settings when it has them; otherwise a
/// `ts_ms` or `timestamp` column, when the header has one, gives the times,
/// and `model_channels` (the model's channel names), when the header has
/// them all, pick the columns, so a recording with extra columns (a label)
/// replays as it is.
pub fn replay_config(
    config: &Config,
    input: &std::path::Path,
    realtime: bool,
    model_channels: &[String],
) -> Result<SourceConfig, SourceError> {
    let (timestamp_column, columns, rate_hz) = match &config.source {
        SourceConfig::Replay {
            timestamp_column,
            columns,
            rate_hz,
            ..
        } => (timestamp_column.clone(), columns.clone(), *rate_hz),
        SourceConfig::Simulated { rate_hz, .. } | SourceConfig::FilePoll { rate_hz, .. } => {
            (None, vec![], *rate_hz)
        }
        _ => (None, vec![], 100.0),
    };
    let header = if timestamp_column.is_none() || columns.is_empty() {
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(std::fs::File::open(input).map_err(|e| {
                SourceError::Fatal {
                    origin: input.display().to_string(),
                    reason: format!("cannot open: {e}"),
                }
            })?),
            &mut line,
        )
        .map_err(|e| SourceError::Fatal {
            origin: input.display().to_string(),
            reason: format!("cannot read header: {e}"),
        })?;
        line.trim()
            .split(',')
            .map(|c| c.trim().to_string())
            .collect()
    } else {
        vec![]
    };
    let timestamp_column = timestamp_column.or_else(|| {
        header
            .iter()
            .find(|c| *c == "ts_ms" || *c == "timestamp")
            .cloned()
    });
    let columns = if columns.is_empty()
        && !model_channels.is_empty()
        && model_channels.iter().all(|c| header.contains(c))
    {
        model_channels.to_vec()
    } else {
        columns
    };
    Ok(SourceConfig::Replay {
        path: input.to_path_buf(),
        timestamp_column,
        columns,
        realtime,
        rate_hz,
    })
}

/// The channel count a config's source will have, found without starting
/// it (no process is spawned, stdin is not read). Replays open their file
/// to read the header, so a missing recording is reported here too.
pub fn static_channels(config: &Config) -> Result<Option<usize>, SourceError> {
    Ok(match &config.source {
        SourceConfig::Simulated { channels, .. } => Some(*channels),
        SourceConfig::FilePoll { files, .. } => Some(files.len()),
        SourceConfig::Stdin { fields, .. } | SourceConfig::Command { fields, .. } => {
            (!fields.is_empty()).then_some(fields.len())
        }
        SourceConfig::Mqtt { topics, channels } => channels.or_else(|| mqtt_channels(topics)),
        SourceConfig::Replay { .. } => open(config, None)?.channels(),
    })
}

/// Channels implied by the topics' JSON `fields`, when they agree.
fn mqtt_channels(topics: &[crate::mqtt::Subscription]) -> Option<usize> {
    let first = topics.first()?.fields.len();
    (first > 0 && topics.iter().all(|t| t.fields.len() == first)).then_some(first)
}
