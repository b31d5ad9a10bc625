//! `file_poll` source: numeric text files (sysfs thermal, hwmon, IIO, 1-wire)
//! read at a fixed rate, one file per channel.

use std::path::PathBuf;

use super::{now_ms, Pacer, Sample, Source, SourceError};

/// Reads every file once per tick.
#[derive(Debug)]
pub struct FilePollSource {
    files: Vec<(PathBuf, f32, f32)>,
    pacer: Pacer,
    tick: u64,
}

impl FilePollSource {
    /// Polls `(path, scale, offset)` files at `rate_hz`.
    pub fn new(files: Vec<(PathBuf, f32, f32)>, rate_hz: f64) -> Self {
        FilePollSource {
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
            .map(|(path, scale, offset)| match read_number(path) {
                Ok(v) => v * scale + offset,
                Err(e) => {
                    // A sensor that hiccups once should not stop the board:
                    // NaN lets the `missing` policy decide.
                    log::warn!("{}: {e}", path.display());
                    f32::NAN
                }
            })
            .collect();
        Ok(Some(Sample {
            ts_ms: now_ms(),
            values,
        }))
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
