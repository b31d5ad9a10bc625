//! `replay` source: a recorded CSV file (header line, optional timestamp
//! column), as fast as possible or paced by its timestamps.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{next_line, Pacer, Sample, Source, SourceError};

/// `[source] kind = "replay"`: a recorded CSV file with a header line.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// The CSV file, relative to the config file.
    pub path: std::path::PathBuf,
    /// Column holding milliseconds since the epoch; absent means
    /// timestamps are counted from 0 at `rate_hz`.
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// Columns that become channels, in order; default all but the timestamp.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Pace samples by their timestamps instead of as fast as possible.
    #[serde(default)]
    pub realtime: bool,
    /// Sample rate used when there is no timestamp column.
    #[serde(default = "default_rate")]
    pub rate_hz: f64,
}

/// The rate a recording without timestamps is read at, unless configured.
pub const DEFAULT_RATE_HZ: f64 = 100.0;

fn default_rate() -> f64 {
    DEFAULT_RATE_HZ
}

impl ReplayConfig {
    /// Checks `[source]` of this kind.
    pub fn validate(&self, p: &mut crate::problem::Problems) {
        p.positive(self.rate_hz, "source.rate_hz", "samples per second");
    }

    /// Opens the recording (`path` resolved against `origin`).
    pub fn open(&self, origin: &crate::problem::Origin) -> Result<ReplaySource, SourceError> {
        ReplaySource::open(
            &origin.resolve(&self.path),
            self.timestamp_column.as_deref(),
            &self.columns,
            self.realtime,
            self.rate_hz,
        )
    }
}

/// Rows of a CSV recording.
#[derive(Debug)]
pub struct ReplaySource {
    origin: String,
    reader: BufReader<File>,
    width: usize,
    ts_col: Option<usize>,
    cols: Vec<usize>,
    rate_hz: f64,
    pacer: Option<Pacer>,
    first_ts: Option<u64>,
    line_no: u64,
    row: u64,
    buf: String,
}

impl ReplaySource {
    /// Opens `path` and reads its header. `columns` picks the channel
    /// columns (default: all but the timestamp).
    pub fn open(
        path: &Path,
        timestamp_column: Option<&str>,
        columns: &[String],
        realtime: bool,
        rate_hz: f64,
    ) -> Result<Self, SourceError> {
        let origin = path.display().to_string();
        let fatal = |reason: String| SourceError::Fatal {
            origin: origin.clone(),
            reason,
        };
        let file = File::open(path).map_err(|e| fatal(format!("cannot open: {e}")))?;
        let mut reader = BufReader::new(file);
        let mut header = String::new();
        reader
            .read_line(&mut header)
            .map_err(|e| fatal(format!("cannot read header: {e}")))?;
        let names: Vec<&str> = header.trim().split(',').map(str::trim).collect();
        if header.trim().is_empty() {
            return Err(fatal(
                "expected a header line naming the columns, found an empty file".into(),
            ));
        }
        let find = |name: &str| {
            names.iter().position(|n| *n == name).ok_or_else(|| {
                fatal(format!(
                    "no column {name:?}; the header has: {}",
                    names.join(", ")
                ))
            })
        };
        let ts_col = timestamp_column.map(find).transpose()?;
        let cols = if columns.is_empty() {
            (0..names.len()).filter(|i| Some(*i) != ts_col).collect()
        } else {
            columns
                .iter()
                .map(|c| find(c))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(ReplaySource {
            origin,
            reader,
            width: names.len(),
            ts_col,
            cols,
            rate_hz,
            pacer: realtime.then(|| Pacer::new(rate_hz)),
            first_ts: None,
            line_no: 1,
            row: 0,
            buf: String::new(),
        })
    }

    fn parse_row(&self, line: &str) -> Result<Sample, String> {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != self.width {
            return Err(format!(
                "expected {} fields, found {}",
                self.width,
                fields.len()
            ));
        }
        let num = |i: usize| -> Result<f32, String> {
            let f = fields[i];
            if f.is_empty() {
                Ok(f32::NAN)
            } else {
                f.parse::<f32>()
                    .map_err(|_| format!("column {}: expected a number, found {f:?}", i + 1))
            }
        };
        let ts_ms = match self.ts_col {
            Some(i) => fields[i]
                .parse::<f64>()
                .map_err(|_| format!("timestamp: expected milliseconds, found {:?}", fields[i]))?
                as u64,
            None => (self.row as f64 * 1000.0 / self.rate_hz) as u64,
        };
        let values = self
            .cols
            .iter()
            .map(|&i| num(i))
            .collect::<Result<_, _>>()?;
        Ok(Sample::new(ts_ms, values))
    }
}

impl Source for ReplaySource {
    fn next_sample(&mut self) -> Result<Option<Sample>, SourceError> {
        let Some(line) = next_line(
            &mut self.reader,
            &mut self.buf,
            &mut self.line_no,
            &self.origin,
            false,
        )?
        else {
            return Ok(None);
        };
        let sample = self
            .parse_row(&line)
            .map_err(|reason| SourceError::BadRecord {
                origin: self.origin.clone(),
                record: self.line_no,
                reason,
            })?;
        if let Some(p) = &self.pacer {
            match self.ts_col {
                Some(_) => {
                    let first = *self.first_ts.get_or_insert(sample.ts_ms);
                    p.wait_until(Duration::from_millis(sample.ts_ms.saturating_sub(first)));
                }
                None => p.wait_for(self.row),
            }
        }
        self.row += 1;
        Ok(Some(sample))
    }

    fn channels(&self) -> Option<usize> {
        Some(self.cols.len())
    }

    fn paced(&self) -> bool {
        self.pacer.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_timestamps_and_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "ts,x,y\n10,1,2\n20,oops,3\n30,4\n40,5,\n").unwrap();
        let mut s = ReplaySource::open(&p, Some("ts"), &[], false, 1.0).unwrap();
        assert_eq!(s.channels(), Some(2));
        let a = s.next_sample().unwrap().unwrap();
        assert_eq!((a.ts_ms, a.values.clone()), (10, vec![1.0, 2.0]));
        let e = s.next_sample().unwrap_err();
        assert!(e.to_string().contains("record 3"), "{e}");
        assert!(s.next_sample().unwrap_err().is_recoverable());
        let d = s.next_sample().unwrap().unwrap();
        assert_eq!(d.ts_ms, 40);
        assert!(d.values[1].is_nan());
        assert!(s.next_sample().unwrap().is_none());
    }

    #[test]
    fn unknown_column_is_fatal_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "a,b\n1,2\n").unwrap();
        let e = ReplaySource::open(&p, Some("ts"), &[], false, 1.0).unwrap_err();
        assert!(!e.is_recoverable());
        assert!(e.to_string().contains("\"ts\""), "{e}");
        let mut s = ReplaySource::open(&p, None, &["b".into()], false, 10.0).unwrap();
        let a = s.next_sample().unwrap().unwrap();
        assert_eq!((a.ts_ms, a.values), (0, vec![2.0]));
    }
}
