//! `file_poll` source: numeric text files (sysfs thermal, hwmon, IIO, 1-wire)
//! read at a fixed rate, one file per channel.

use std::path::PathBuf;

use serde::Deserialize;

use super::{now_ms, Pacer, Sample, Source, SourceError};

/// `[source] kind = "file_poll"`: numeric text files read at a fixed rate
/// (sysfs thermal, hwmon, IIO, 1-wire).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilePollConfig {
    /// One channel per file.
    pub files: Vec<PolledFile>,
    /// Reads per second.
    #[serde(default = "default_poll_rate")]
    pub rate_hz: f64,
}

fn default_poll_rate() -> f64 {
    1.0
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

impl FilePollConfig {
    /// Checks `[source]` of this kind.
    pub fn validate(&self, p: &mut crate::problem::Problems) {
        p.positive(self.rate_hz, "source.rate_hz", "samples per second");
        p.check(!self.files.is_empty(), "source.files", || {
            "expected at least one file".into()
        });
    }

    /// The source this config describes (paths resolved against `origin`).
    pub fn open(&self, origin: &crate::problem::Origin) -> FilePollSource {
        let files = self
            .files
            .iter()
            .map(|f| (origin.resolve(&f.path), f.scale, f.offset))
            .collect();
        FilePollSource::new(files, self.rate_hz)
    }
}

/// Reads every file once per tick.
#[derive(Debug)]
pub struct FilePollSource {
    files: Vec<(PathBuf, f32, f32)>,
    /// Per file: true while reading it fails (reported once, not per read).
    failing: Vec<bool>,
    pacer: Pacer,
    tick: u64,
}

impl FilePollSource {
    /// Polls `(path, scale, offset)` files at `rate_hz`.
    pub fn new(files: Vec<(PathBuf, f32, f32)>, rate_hz: f64) -> Self {
        FilePollSource {
            failing: vec![false; files.len()],
            files,
            pacer: Pacer::new(rate_hz),
            tick: 0,
        }
    }
}

/// Reads a file holding one number (sysfs style, e.g. `48250\n`).
fn read_number(path: &std::path::Path) -> Result<f32, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let first = text.split_whitespace().next().unwrap_or("");
    first
        .parse::<f32>()
        .map_err(|_| format!("expected a number, found {first:?}"))
}

impl Source for FilePollSource {
    fn next_sample(&mut self) -> Result<Option<Sample>, SourceError> {
        self.pacer.wait_for(self.tick);
        self.tick += 1;
        let values = self
            .files
            .iter()
            .zip(self.failing.iter_mut())
            .map(|((path, scale, offset), failing)| match read_number(path) {
                Ok(v) => {
                    if std::mem::take(failing) {
                        log::warn!("{}: readable again", path.display());
                    }
                    v * scale + offset
                }
                Err(e) => {
                    // A sensor that hiccups (or a file that disappears for a
                    // while) should not stop the board: NaN lets the
                    // `missing` policy decide. Said once, not at every read.
                    if !std::mem::replace(failing, true) {
                        log::warn!(
                            "{}: {e}; its channel reads as missing until it comes back",
                            path.display()
                        );
                    }
                    f32::NAN
                }
            })
            .collect();
        Ok(Some(Sample::new(now_ms(), values)))
    }

    fn channels(&self) -> Option<usize> {
        Some(self.files.len())
    }

    fn paced(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_scales_and_marks_missing() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("temp");
        std::fs::write(&temp, "48250\n").unwrap();
        let mut s = FilePollSource::new(
            vec![
                (temp.clone(), 0.001, 0.0),
                (dir.path().join("absent"), 1.0, 0.0),
            ],
            1000.0,
        );
        let v = s.next_sample().unwrap().unwrap().values;
        assert!((v[0] - 48.25).abs() < 1e-4);
        assert!(v[1].is_nan());
        std::fs::write(&temp, "50000").unwrap();
        let v = s.next_sample().unwrap().unwrap().values;
        assert!((v[0] - 50.0).abs() < 1e-4);
    }
}
