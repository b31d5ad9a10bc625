//! `edgeinfer-host record`: training data captured with the device's own
//! source code, so the trainer sees exactly what the device will. Channel
//! samples become CSV rows; the frames of an image source become files in
//! a class folder of the layout `train --images` reads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::HostError;
use crate::config::Config;
use crate::source::Source;

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The CSV file, appended to when it exists with the same header; for
    /// a source of images, the class folder (`DIR/CLASS`) the frames are
    /// saved into, created when missing.
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
    /// Rows (or image files) written.
    pub samples: u64,
    /// Malformed records the source skipped.
    pub bad_records: u64,
    /// True when rows were added to an existing file (or images to a
    /// folder that already held files).
    pub appended: bool,
}

/// The file extension of an encoded frame, from its first bytes.
pub fn frame_extension(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpg")
    } else {
        None
    }
}

/// Saves one frame as `<ts_ms>-<n>.<jpg|png>` in `dir`; `n` counts this
/// run's frames, and goes up further when a file of that name exists, so
/// nothing recorded before is overwritten.
fn save_frame(
    dir: &Path,
    ts_ms: u64,
    n: &mut u64,
    bytes: &[u8],
    ext: &str,
) -> Result<(), HostError> {
    loop {
        *n += 1;
        let path = dir.join(format!("{ts_ms}-{n}.{ext}"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        match file {
            Ok(mut f) => {
                return f.write_all(bytes).map_err(|e| HostError::Output {
                    file: path.display().to_string(),
                    message: e.to_string(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(HostError::Output {
                    file: path.display().to_string(),
                    message: e.to_string(),
                })
            }
        }
    }
}

/// Creates the class folder; true when it already held files.
fn open_folder(dir: &Path) -> Result<bool, HostError> {
    std::fs::create_dir_all(dir).map_err(|e| HostError::Output {
        file: dir.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()))
}

/// Reads `config`'s source until the span, the count, its end or `stop`,
/// writing `ts_ms,<channels>[,label]` rows to `opts.out`, or each image
/// frame as a file into the folder `opts.out`.
pub fn record(
    config: &Config,
    opts: &RecordOptions,
    stop: &AtomicBool,
) -> Result<RecordSummary, HostError> {
    if config.source.images() && opts.out.is_file() {
        return Err(HostError::Input {
            file: opts.out.display().to_string(),
            message: "the source gives images: expected a class folder (DIR/CLASS), found a file"
                .into(),
        });
    }
    let (mut source, mut link) = crate::pipeline::open_source(config)?;
    let summary = record_from(
        source.as_mut(),
        &|n| config.source.channel_names(n),
        opts,
        stop,
    );
    if let Some(l) = link.as_mut() {
        l.close();
    }
    summary
}

/// [`record`]'s loop over an open `source`; `names` gives the CSV column
/// names for a number of channels.
pub fn record_from(
    source: &mut dyn Source,
    names: &dyn Fn(usize) -> Vec<String>,
    opts: &RecordOptions,
    stop: &AtomicBool,
) -> Result<RecordSummary, HostError> {
    let out_err = |e: std::io::Error| HostError::Output {
        file: opts.out.display().to_string(),
        message: e.to_string(),
    };
    let (mut written, mut bad) = (0u64, 0u64);
    let mut writer: Option<(std::io::BufWriter<std::fs::File>, usize)> = None;
    let mut appended = false;
    let mut first_ts = None;
    // Image frames: whether the class folder is ready, and the file counter.
    let mut folder: Option<u64> = None;
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
        if let Some(frame) = &sample.frame {
            let Some(ext) = frame_extension(&frame.bytes) else {
                log::warn!("{}: neither a JPEG nor a PNG: skipped", frame.origin);
                bad += 1;
                continue;
            };
            let n = match folder.as_mut() {
                Some(n) => n,
                None => {
                    if opts.label.is_some() {
                        log::warn!(
                            "--label is for CSV rows: images take their class from the folder {}",
                            opts.out.display()
                        );
                    }
                    appended = open_folder(&opts.out)?;
                    folder.insert(0)
                }
            };
            save_frame(&opts.out, sample.ts_ms, n, &frame.bytes, ext)?;
            written += 1;
            continue;
        }
        if writer.is_none() {
            let names = names(sample.values.len());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Sample, SourceError};

    /// Hands out the samples it was given, then ends.
    struct Frames(std::vec::IntoIter<Sample>);

    impl Source for Frames {
        fn next_sample(&mut self) -> Result<Option<Sample>, SourceError> {
            Ok(self.0.next())
        }
        fn channels(&self) -> Option<usize> {
            None
        }
        fn paced(&self) -> bool {
            false
        }
    }

    #[test]
    fn frames_become_files_named_by_time_and_kind_in_the_class_folder() {
        let dir = tempfile::tempdir().unwrap();
        let class = dir.path().join("images").join("cat");
        let png = b"\x89PNG\r\n\x1a\nrest".to_vec();
        let jpg = vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2];
        let frames = |list: Vec<Vec<u8>>| {
            Frames(
                list.into_iter()
                    .enumerate()
                    .map(|(i, b)| Sample::image(1000 + i as u64, b, format!("frame {i}")))
                    .collect::<Vec<_>>()
                    .into_iter(),
            )
        };
        let opts = RecordOptions {
            out: class.clone(),
            label: None,
            seconds: None,
            samples: Some(3),
        };
        let stop = AtomicBool::new(false);
        let s = record_from(
            &mut frames(vec![
                jpg.clone(),
                b"GIF89a".to_vec(),
                png.clone(),
                jpg.clone(),
                jpg.clone(),
            ]),
            &|_| vec![],
            &opts,
            &stop,
        )
        .unwrap();
        assert_eq!((s.samples, s.bad_records, s.appended), (3, 1, false));
        let mut names: Vec<String> = std::fs::read_dir(&class)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(names, vec!["1000-1.jpg", "1002-2.png", "1003-3.jpg"]);
        assert_eq!(std::fs::read(class.join("1002-2.png")).unwrap(), png);

        // A second run with the same times keeps the first run's files.
        let s = record_from(&mut frames(vec![jpg.clone()]), &|_| vec![], &opts, &stop).unwrap();
        assert_eq!((s.samples, s.appended), (1, true));
        assert_eq!(std::fs::read_dir(&class).unwrap().count(), 4);
    }
}
