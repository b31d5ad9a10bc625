//! Text-line sources (`stdin`, and `command` through it): CSV or JSON lines.

use std::io::BufRead;

use serde::Deserialize;

use super::{next_line, now_ms, Sample, Source, SourceError};

/// Text line formats for `stdin` and `command` sources.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// Comma-separated numbers.
    #[default]
    Csv,
    /// A JSON number, array of numbers, or object (see `fields`).
    Json,
}

/// `[source] kind = "stdin"`: lines from standard input.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// `csv` (numbers separated by commas) or `json` (array, number or object).
    #[serde(default)]
    pub format: LineFormat,
    /// For JSON objects: the field names that become channels, in order.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// Why a line did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    /// A CSV field that is not a number.
    #[error("expected a number, found {found:?} (field {field})")]
    CsvField {
        /// 1-based field position.
        field: usize,
        /// What it held.
        found: String,
    },
    /// A JSON value that is not a number.
    #[error("{what}: expected a number, found {found}")]
    NotANumber {
        /// Which value (`element 0`, a member name, `value`).
        what: String,
        /// What it held.
        found: String,
    },
    /// Not JSON at all.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A JSON object with no `fields` to name its channels.
    #[error("a JSON object needs source.fields to name its channels")]
    ObjectWithoutFields,
}

/// Parses one text line into channel values. Empty CSV fields and JSON
/// `null`s become NaN, so the `missing` preprocess policy decides about them.
pub fn parse_line(
    format: LineFormat,
    fields: &[String],
    line: &str,
) -> Result<Vec<f32>, LineError> {
    match format {
        LineFormat::Csv => line
            .split(',')
            .enumerate()
            .map(|(i, f)| {
                let f = f.trim();
                if f.is_empty() {
                    Ok(f32::NAN)
                } else {
                    f.parse::<f32>().map_err(|_| LineError::CsvField {
                        field: i + 1,
                        found: f.into(),
                    })
                }
            })
            .collect(),
        LineFormat::Json => {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| LineError::Json(e.to_string()))?;
            let num = |v: &serde_json::Value, what: &str| -> Result<f32, LineError> {
                match v {
                    serde_json::Value::Null => Ok(f32::NAN),
                    serde_json::Value::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN) as f32),
                    other => Err(LineError::NotANumber {
                        what: what.into(),
                        found: other.to_string(),
                    }),
                }
            };
            match &v {
                serde_json::Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| num(x, &format!("element {i}")))
                    .collect(),
                serde_json::Value::Object(map) => {
                    if fields.is_empty() {
                        return Err(LineError::ObjectWithoutFields);
                    }
                    fields
                        .iter()
                        .map(|f| match map.get(f) {
                            Some(x) => num(x, f),
                            None => Ok(f32::NAN),
                        })
                        .collect()
                }
                other => Ok(vec![num(other, "value")?]),
            }
        }
    }
}

/// Samples from any buffered reader of text lines, stamped on arrival.
#[derive(Debug)]
pub struct LineSource<R> {
    origin: String,
    reader: R,
    format: LineFormat,
    fields: Vec<String>,
    line_no: u64,
    buf: String,
}

impl<R: BufRead + Send> LineSource<R> {
    /// Reads lines of `format` from `reader`; `origin` names it in errors.
    pub fn new(origin: &str, reader: R, format: LineFormat, fields: Vec<String>) -> Self {
        LineSource {
            origin: origin.into(),
            reader,
            format,
            fields,
            line_no: 0,
            buf: String::new(),
        }
    }
}

impl<R: BufRead + Send> Source for LineSource<R> {
    fn next_sample(&mut self) -> Result<Option<Sample>, SourceError> {
        let Some(line) = next_line(
            &mut self.reader,
            &mut self.buf,
            &mut self.line_no,
            &self.origin,
            true,
        )?
        else {
            return Ok(None);
        };
        match parse_line(self.format, &self.fields, &line) {
            Ok(values) => Ok(Some(Sample::new(now_ms(), values))),
            Err(e) => Err(SourceError::BadRecord {
                origin: self.origin.clone(),
                record: self.line_no,
                reason: e.to_string(),
            }),
        }
    }

    fn channels(&self) -> Option<usize> {
        (!self.fields.is_empty()).then_some(self.fields.len())
    }

    fn paced(&self) -> bool {
        // Lines arrive when their writer writes them; batching would hold
        // back a live sensor's samples.
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_forms() {
        assert_eq!(
            parse_line(LineFormat::Csv, &[], "1, 2.5,-3").unwrap(),
            vec![1.0, 2.5, -3.0]
        );
        assert!(parse_line(LineFormat::Csv, &[], "1,,3").unwrap()[1].is_nan());
        assert_eq!(
            parse_line(LineFormat::Csv, &[], "1,x"),
            Err(LineError::CsvField {
                field: 2,
                found: "x".into()
            })
        );
        assert_eq!(
            parse_line(LineFormat::Json, &[], "[1, 2]").unwrap(),
            vec![1.0, 2.0]
        );
        assert_eq!(parse_line(LineFormat::Json, &[], "4").unwrap(), vec![4.0]);
        let fields = vec!["b".to_string(), "a".to_string()];
        assert_eq!(
            parse_line(LineFormat::Json, &fields, r#"{"a": 1, "b": 2}"#).unwrap(),
            vec![2.0, 1.0]
        );
        assert_eq!(
            parse_line(LineFormat::Json, &[], r#"{"a": 1}"#),
            Err(LineError::ObjectWithoutFields)
        );
        assert!(parse_line(LineFormat::Json, &[], r#"["x"]"#).is_err());
        assert!(parse_line(LineFormat::Json, &[], "{").is_err());
    }

    #[test]
    fn bad_lines_are_recoverable_and_numbered() {
        let input = "1,2\n\nnope\n3,4\n";
        let mut s = LineSource::new("t", input.as_bytes(), LineFormat::Csv, vec![]);
        assert_eq!(s.next_sample().unwrap().unwrap().values, vec![1.0, 2.0]);
        let err = s.next_sample().unwrap_err();
        assert!(err.is_recoverable());
        assert!(err.to_string().contains("record 3"), "{err}");
        assert_eq!(s.next_sample().unwrap().unwrap().values, vec![3.0, 4.0]);
        assert!(s.next_sample().unwrap().is_none());
    }
}
