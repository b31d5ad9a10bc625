//! Sources: where samples come from. One file per input kind, each owning
//! its `[source]` settings; all yield timestamped [`Sample`]s (channel
//! values, or an encoded image for the image sources) through the
//! [`Source`] trait.

mod command;
mod file_poll;
mod image_dir;
pub mod jpeg_split;
pub mod lines;
pub mod mjpeg;
pub mod mqtt;
mod process;
mod replay;
mod simulated;

use std::time::{Duration, Instant};

use serde::Deserialize;

pub use command::{CommandConfig, CommandSource, Restart};
pub use file_poll::{FilePollConfig, FilePollSource, PolledFile};
pub use image_dir::{After, ImageDirConfig, ImageDirSource};
pub use lines::{parse_line, LineError, LineFormat, LineSource, StdinConfig};
pub use mjpeg::{MjpegConfig, MjpegSource};
pub use mqtt::{MqttSource, MqttSourceConfig, PayloadFormat, Subscription};
pub use replay::{ReplayConfig, ReplaySource, DEFAULT_RATE_HZ as REPLAY_RATE_HZ};
pub use simulated::{SimMode, SimulatedConfig, SimulatedSource};

use crate::problem::{Origin, Problems};

/// `[source]`: one input kind, selected by `kind`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A seeded generator of a multi-channel vibration signal.
    Simulated(SimulatedConfig),
    /// Lines from standard input.
    Stdin(StdinConfig),
    /// A recorded CSV file with a header line.
    Replay(ReplayConfig),
    /// Numeric text files read at a fixed rate (sysfs thermal, hwmon, IIO, 1-wire).
    FilePoll(FilePollConfig),
    /// Messages on MQTT topics (the connection is `[mqtt]`).
    Mqtt(MqttSourceConfig),
    /// A child process whose stdout lines are samples.
    Command(CommandConfig),
    /// Image files dropped into a watched directory, one frame per file.
    ImageDir(ImageDirConfig),
    /// A Motion-JPEG stream from a program (a camera) or a file or FIFO.
    Mjpeg(MjpegConfig),
}

impl SourceConfig {
    /// Checks `[source]`.
    pub fn validate(&self, p: &mut Problems) {
        match self {
            SourceConfig::Simulated(c) => c.validate(p),
            SourceConfig::Stdin(_) => {}
            SourceConfig::Replay(c) => c.validate(p),
            SourceConfig::FilePoll(c) => c.validate(p),
            SourceConfig::Mqtt(c) => c.validate(p),
            SourceConfig::Command(c) => c.validate(p),
            SourceConfig::ImageDir(c) => c.validate(p),
            SourceConfig::Mjpeg(c) => c.validate(p),
        }
    }

    /// True when the source yields images (frames) instead of channel
    /// values.
    pub fn images(&self) -> bool {
        match self {
            SourceConfig::ImageDir(_) | SourceConfig::Mjpeg(_) => true,
            SourceConfig::Mqtt(c) => c.images(),
            _ => false,
        }
    }

    /// The channel count this source will have, found without starting it
    /// (no process is spawned, stdin is not read). Replays open their file
    /// to read the header, so a missing recording is reported here too.
    /// `None` for image sources (see [`SourceConfig::images`]).
    pub fn channels(&self, origin: &Origin) -> Result<Option<usize>, SourceError> {
        Ok(match self {
            SourceConfig::Simulated(c) => Some(c.channels),
            SourceConfig::FilePoll(c) => Some(c.files.len()),
            SourceConfig::Stdin(StdinConfig { fields, .. })
            | SourceConfig::Command(CommandConfig { fields, .. }) => {
                (!fields.is_empty()).then_some(fields.len())
            }
            SourceConfig::Mqtt(c) => c.channels(),
            SourceConfig::Replay(c) => c.open(origin)?.channels(),
            SourceConfig::ImageDir(_) | SourceConfig::Mjpeg(_) => None,
        })
    }

    /// Samples per second when the source has a set rate.
    pub fn rate_hz(&self) -> Option<f64> {
        match self {
            SourceConfig::Simulated(c) => Some(c.rate_hz),
            SourceConfig::Replay(c) => Some(c.rate_hz),
            SourceConfig::FilePoll(c) => Some(c.rate_hz),
            _ => None,
        }
    }

    /// Names of the `channels` channels: the names the config gives, else
    /// `x, y, z` for the 3-axis simulated sensor, else `ch0, ch1, ...`.
    pub fn channel_names(&self, channels: usize) -> Vec<String> {
        let named: Vec<String> = match self {
            SourceConfig::Replay(c) => c.columns.clone(),
            SourceConfig::Stdin(StdinConfig { fields, .. })
            | SourceConfig::Command(CommandConfig { fields, .. }) => fields.clone(),
            SourceConfig::Mqtt(c) => c.topics.iter().flat_map(|t| t.fields.clone()).collect(),
            SourceConfig::Simulated(_) if channels == 3 => {
                vec!["x".into(), "y".into(), "z".into()]
            }
            _ => vec![],
        };
        if named.len() == channels {
            named
        } else {
            (0..channels).map(|i| format!("ch{i}")).collect()
        }
    }

    /// Opens the source (relative paths resolved against `origin`). An
    /// `mqtt` source reads what `link` receives.
    pub fn open(
        &self,
        origin: &Origin,
        link: Option<&mut crate::mqtt::Link>,
    ) -> Result<Box<dyn Source>, SourceError> {
        Ok(match self {
            SourceConfig::Mqtt(c) => {
                let link = link.ok_or_else(|| SourceError::Fatal {
                    origin: "mqtt".into(),
                    reason: "no MQTT link to read from".into(),
                })?;
                let shared = link.shared.clone();
                let rx = link.take_messages().ok_or_else(|| SourceError::Fatal {
                    origin: "mqtt".into(),
                    reason: "the MQTT link's messages are already taken".into(),
                })?;
                Box::new(MqttSource::new(rx, c, shared))
            }
            SourceConfig::Simulated(c) => Box::new(c.open()),
            SourceConfig::Stdin(c) => Box::new(LineSource::new(
                "stdin",
                std::io::BufReader::new(std::io::stdin()),
                c.format,
                c.fields.clone(),
            )),
            SourceConfig::Replay(c) => Box::new(c.open(origin)?),
            SourceConfig::FilePoll(c) => Box::new(c.open(origin)),
            SourceConfig::Command(c) => Box::new(c.open()?),
            SourceConfig::ImageDir(c) => Box::new(c.open(origin)),
            SourceConfig::Mjpeg(c) => Box::new(c.open(origin)?),
        })
    }
}

/// One reading of every channel at one instant, or one encoded image.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch (or since the start of a recording
    /// that has no timestamps).
    pub ts_ms: u64,
    /// One value per channel; NaN marks a missing value. Empty for images.
    pub values: Vec<f32>,
    /// An encoded image (JPEG or PNG) from an image source; the image stage
    /// decodes it on the inference thread, so a frame that is never run is
    /// never decoded.
    pub frame: Option<Frame>,
}

impl Sample {
    /// A sample of channel values.
    pub fn new(ts_ms: u64, values: Vec<f32>) -> Self {
        Sample {
            ts_ms,
            values,
            frame: None,
        }
    }

    /// An encoded image from `origin` (file name, `frame N`, topic).
    pub fn image(ts_ms: u64, bytes: Vec<u8>, origin: String) -> Self {
        Sample {
            ts_ms,
            values: Vec::new(),
            frame: Some(Frame { bytes, origin }),
        }
    }
}

/// An encoded image and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The file's or message's bytes, JPEG or PNG.
    pub bytes: Vec<u8>,
    /// Where it came from: the file name, `frame N` of a stream, the topic.
    /// Every result of this image carries it.
    pub origin: String,
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
    /// The source's program stopped and was started again; the source goes
    /// on.
    #[error("{origin}: {reason}")]
    Restarted {
        /// Which source (the program).
        origin: String,
        /// What happened.
        reason: String,
    },
    /// The source's input is missing or unreadable for now (a watched
    /// directory, a FIFO); the source keeps trying, and says so again only
    /// after it was back in between.
    #[error("{origin}: {reason}")]
    Unavailable {
        /// Which source (the directory or FIFO).
        origin: String,
        /// What is wrong.
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
        matches!(
            self,
            SourceError::BadRecord { .. }
                | SourceError::Restarted { .. }
                | SourceError::Unavailable { .. }
        )
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

    /// True for a live camera: when inference is busy only the newest frame
    /// waits, and older ones are skipped (the source counts them).
    fn newest_only(&self) -> bool {
        false
    }

    /// Frames a live source skipped so far (busy inference, `max_fps`,
    /// `every_nth`).
    fn skipped(&self) -> u64 {
        0
    }
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

pub use crate::clock::now_ms;

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
