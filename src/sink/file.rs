//! `file` sink: results appended to a file as JSON lines or length-delimited
//! postcard frames.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use serde::Deserialize;

use super::{Sink, SinkError};
use crate::schema::{ModelTag, ResultRecord};

/// Encodings of the file sink.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// One JSON object per line.
    #[default]
    Jsonl,
    /// postcard `ResultRecord`s, each prefixed by its length as a u32 LE.
    Postcard,
}

/// Appends to one file.
#[derive(Debug)]
pub struct FileSink {
    target: String,
    format: FileFormat,
    labels: Vec<String>,
    out: BufWriter<File>,
}

impl FileSink {
    /// Opens `path` for appending, creating it when missing.
    pub fn open(path: &Path, format: FileFormat, labels: Vec<String>) -> Result<Self, SinkError> {
        let target = path.display().to_string();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| SinkError::Io {
                target: target.clone(),
                error,
            })?;
        Ok(FileSink {
            target,
            format,
            labels,
            out: BufWriter::new(file),
        })
    }

    fn io(&self, error: std::io::Error) -> SinkError {
        SinkError::Io {
            target: self.target.clone(),
            error,
        }
    }
}

impl Sink for FileSink {
    fn model_changed(&mut self, _tag: &ModelTag, labels: &[String]) -> Result<(), SinkError> {
        self.labels = labels.to_vec();
        Ok(())
    }

    fn write(&mut self, record: &ResultRecord) -> Result<(), SinkError> {
        let r = match self.format {
            FileFormat::Jsonl => {
                serde_json::to_writer(&mut self.out, &record.to_json(&self.labels))
                    .map_err(std::io::Error::from)
                    .and_then(|_| self.out.write_all(b"\n"))
            }
            FileFormat::Postcard => {
                let bytes = postcard::to_stdvec(record).unwrap_or_default();
                self.out
                    .write_all(&(bytes.len() as u32).to_le_bytes())
                    .and_then(|_| self.out.write_all(&bytes))
            }
        };
        r.map_err(|e| self.io(e))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.io(e))
    }
}

/// Reads every record of a postcard file written by [`FileSink`].
pub fn read_postcard_records(path: &Path) -> std::io::Result<Vec<ResultRecord>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let frame = rest.get(4..4 + n).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated frame")
        })?;
        records.push(
            postcard::from_bytes(frame)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
        );
        rest = &rest[4 + n..];
    }
    Ok(records)
}
