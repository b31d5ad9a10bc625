//! `edgeinfer-host record`: training data captured with the device's own
//! source code, so the trainer sees exactly what the device will.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::HostError;
use crate::config::Config;

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The CSV file; appended to when it exists with the same header.
    pub out: PathBuf,
    /// A `label` column with this value on every row.
    pub label: Option<String>,
    /// Stop after this span of sample time (seconds).
    pub seconds: Option<f64>,
    /// Stop after this many samples.
    pub samples: Option<u64>,
}

/// What was recorded.
#[derive(Debug, Clone, Serialize)]
pub struct RecordSummary {
    /// Rows written.
    pub samples: u64,
    /// Malformed records the source skipped.
    pub bad_records: u64,
    /// True when rows were added to an existing file.
    pub appended: bool,
}

/// Reads `config`'s source until the span, the count, its end or `stop`,
/// writing `ts_ms,<channels>[,label]` rows to `opts.out`.
pub fn record(
    config: &Config,
    opts: &RecordOptions,
    stop: &AtomicBool,
) -> Result<RecordSummary, HostError> {
    let (mut source, mut link) = crate::pipeline::open_source(config)?;
    let out_err = |e: std::io::Error| HostError::Output {
        file: opts.out.display().to_string(),
        message: e.to_string(),
    };
    let (mut written, mut bad) = (0u64, 0u64);
    let mut writer: Option<(std::io::BufWriter<std::fs::File>, usize)> = None;
    let mut appended = false;
    let mut first_ts = None;
    while !stop.load(Ordering::Relaxed) && opts.samples.is_none_or(|n| written < n) {
        let sample = match source.next_sample() {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) if e.is_recoverable() => {
                log::warn!("{e}");
                bad += 1;
                continue;
            }
            Err(e) => return Err(HostError::Source(e)),
        };
        let first = *first_ts.get_or_insert(sample.ts_ms);
        if let Some(s) = opts.seconds {
            if (sample.ts_ms.saturating_sub(first)) as f64 >= s * 1000.0 {
                break;
            }
        }
        if writer.is_none() {
            let names = config.source.channel_names(sample.values.len());
            let (w, a) = open_csv(&opts.out, &names, opts.label.is_some())?;
            appended = a;
            writer = Some((w, sample.values.len()));
        }
        let Some((w, channels)) = writer.as_mut() else {
            continue;
        };
        if sample.values.len() != *channels {
            log::warn!(
                "sample at {} ms: expected {} channels, found {}: skipped",
                sample.ts_ms,
                channels,
                sample.values.len()
            );
            bad += 1;
            continue;
        }
        let mut line = sample.ts_ms.to_string();
        for v in &sample.values {
            line.push(',');
            line.push_str(&v.to_string());
        }
        if let Some(l) = &opts.label {
            line.push(',');
            line.push_str(l);
        }
        writeln!(w, "{line}").map_err(out_err)?;
        written += 1;
    }
    if let Some((mut w, _)) = writer {
        w.flush().map_err(out_err)?;
    }
    if let Some(l) = link.as_mut() {
        l.close();
    }
    Ok(RecordSummary {
        samples: written,
        bad_records: bad,
        appended,
    })
}

/// Opens `path` for appending rows under `ts_ms,<names>[,label]`; an
/// existing file must have that header.
fn open_csv(
    path: &Path,
    names: &[String],
    label: bool,
) -> Result<(std::io::BufWriter<std::fs::File>, bool), HostError> {
    let mut header = format!("ts_ms,{}", names.join(","));
    if label {
        header.push_str(",label");
    }
    let err = |message: String| HostError::Output {
        file: path.display().to_string(),
        message,
    };
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let appended = !existing.trim().is_empty();
    if appended {
        let found = existing.lines().next().unwrap_or_default().trim();
        if found != header {
            return Err(HostError::Input {
                file: path.display().to_string(),
                message: format!("expected header {header:?} to append to, found {found:?}"),
            });
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| err(e.to_string()))?;
    if !appended {
        writeln!(file, "{header}").map_err(|e| err(e.to_string()))?;
    } else if !existing.ends_with('\n') {
        writeln!(file).map_err(|e| err(e.to_string()))?;
    }
    Ok((std::io::BufWriter::new(file), appended))
}
