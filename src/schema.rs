//! The wire types: what a device publishes and a subscriber decodes.
//!
//! Encoded with postcard (compact, not self-describing), so field order *is*
//! the format: append new variants and fields at the end and bump
//! [`SCHEMA_VERSION`]. No tract and no I/O here, so a subscriber can embed
//! this module alone.

use serde::{Deserialize, Serialize};

/// Version of the types below; the first field of every [`ResultBatch`].
pub const SCHEMA_VERSION: u16 = 1;

/// One message on `<prefix>/result`: many records from one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultBatch {
    /// [`SCHEMA_VERSION`] of the encoder.
    pub version: u16,
    /// The publishing device's id.
    pub device: String,
    /// Records in sequence order.
    pub records: Vec<ResultRecord>,
    /// The model that produced the records. On the wire it trails the
    /// records, outside the version-1 layout, so decoders that predate it
    /// read the batch and ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelTag>,
}

/// Which model produced a batch: enough to tell two models of one device
/// apart and to match the full sha256 and version in `<prefix>/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelTag {
    /// The first 8 bytes of the model file's sha256.
    pub sha256_prefix: [u8; 8],
    /// The model's version (from its update, or its metadata); empty when
    /// it has none but its sha256, which the prefix already gives.
    pub version: String,
}

impl ModelTag {
    /// The tag of a model whose sha256 is `sha256_hex` (64 hex digits).
    pub fn new(sha256_hex: &str, version: &str) -> Self {
        let mut prefix = [0u8; 8];
        for (i, b) in prefix.iter_mut().enumerate() {
            *b = sha256_hex
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
        }
        // A version that is only the start of the sha256 (a model that
        // declares none) would repeat the prefix: 13 bytes a message.
        let derived = !version.is_empty() && sha256_hex.starts_with(version);
        ModelTag {
            sha256_prefix: prefix,
            version: if derived {
                String::new()
            } else {
                version.into()
            },
        }
    }

    /// The prefix as 16 hex digits, as it starts the sha256 in `info`.
    pub fn prefix_hex(&self) -> String {
        self.sha256_prefix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// One result of one inference (or one summary of many).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// Per-device sequence number, +1 per record: gaps and duplicates show.
    pub seq: u64,
    /// Milliseconds since the Unix epoch of the newest sample in the window.
    pub ts_ms: u64,
    /// What the model said.
    pub result: Prediction,
    /// Where the input came from when a source names it (an image's file
    /// name, `frame N` of a camera stream, its topic). On the wire it trails
    /// the batch (see [`ResultBatch::to_postcard`]).
    #[serde(skip)]
    pub source: Option<String>,
}

/// A postprocessed model output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// A classification.
    Class(ClassResult),
    /// Raw regression values.
    Values(Vec<f32>),
    /// An anomaly score against a threshold.
    Anomaly(AnomalyResult),
    /// Many results folded into one (the `summary` policy).
    Summary(SummaryResult),
    /// Objects found in an image (the `detect` postprocess), best first.
    Detections(Vec<Detection>),
}

/// One object found in an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Its class index.
    pub class: u32,
    /// Its score (class score, times objectness where the model has one).
    pub score: f32,
    /// Its box `[x0, y0, x1, y1]` in the source image's pixels (after EXIF
    /// orientation), clipped to the image.
    pub bbox: [u16; 4],
}

/// What a `summary` record says about the results of one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryResult {
    /// Results folded in.
    pub count: u32,
    /// Timestamp of the first folded result.
    pub from_ts_ms: u64,
    /// Per class: (class index, results of that class), by class index.
    pub class_counts: Vec<(u32, u32)>,
    /// Per value (class score, regression value or anomaly score): mean.
    pub mean: Vec<f32>,
    /// Per value: minimum.
    pub min: Vec<f32>,
    /// Per value: maximum.
    pub max: Vec<f32>,
}

/// Samples sent over MQTT by one edgeinfer device to another (the `postcard`
/// payload format of the `mqtt` source).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorFrame {
    /// [`SCHEMA_VERSION`] of the encoder.
    pub version: u16,
    /// (milliseconds since the epoch, one value per channel), oldest first.
    pub samples: Vec<(u64, Vec<f32>)>,
}

impl SensorFrame {
    /// A frame of the current version.
    pub fn new(samples: Vec<(u64, Vec<f32>)>) -> Self {
        SensorFrame {
            version: SCHEMA_VERSION,
            samples,
        }
    }

    /// Postcard bytes of the frame.
    pub fn to_postcard(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes postcard bytes, checking the schema version.
    pub fn from_postcard(bytes: &[u8]) -> Result<Self, SchemaError> {
        let frame: SensorFrame = postcard::from_bytes(bytes)?;
        if frame.version != SCHEMA_VERSION {
            return Err(SchemaError::Version(frame.version));
        }
        Ok(frame)
    }
}

/// The winning class and the runners-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassResult {
    /// Index of the best class.
    pub class: u32,
    /// Its score (a probability when softmax applies).
    pub score: f32,
    /// The best `top_k` classes, best first, as (index, score).
    pub top: Vec<(u32, f32)>,
}

/// An anomaly score and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyResult {
    /// The score (model output, or reconstruction error).
    pub score: f32,
    /// The configured threshold.
    pub threshold: f32,
    /// `score > threshold`.
    pub anomalous: bool,
}

/// Errors from decoding wire bytes.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The bytes are not a valid encoding.
    #[error("undecodable payload: {0}")]
    Decode(#[from] postcard::Error),
    /// Encoded by a newer or unknown schema.
    #[error("unsupported schema version {0} (this build reads {SCHEMA_VERSION})")]
    Version(u16),
}

impl ResultBatch {
    /// Postcard bytes of the batch: the version-1 fields, then the model
    /// tag, then, when any record names its source, one source per record
    /// (empty when none). Each trailer is outside the layout its decoders
    /// read, so older decoders keep working. A batch with sources but no
    /// model carries a tag of zeros, to keep the order.
    pub fn to_postcard(&self) -> Vec<u8> {
        // Serializing these plain types into a Vec cannot fail.
        let mut bytes =
            postcard::to_stdvec(&(self.version, &self.device, &self.records)).unwrap_or_default();
        let sourced = self.records.iter().any(|r| r.source.is_some());
        let zeros = ModelTag {
            sha256_prefix: [0; 8],
            version: String::new(),
        };
        if let Some(m) = self.model.as_ref().or(sourced.then_some(&zeros)) {
            bytes.extend(postcard::to_stdvec(m).unwrap_or_default());
        }
        if sourced {
            let sources: Vec<&str> = self
                .records
                .iter()
                .map(|r| r.source.as_deref().unwrap_or(""))
                .collect();
            bytes.extend(postcard::to_stdvec(&sources).unwrap_or_default());
        }
        bytes
    }

    /// Decodes postcard bytes, checking the schema version; the model tag
    /// is read when the bytes carry one.
    pub fn from_postcard(bytes: &[u8]) -> Result<Self, SchemaError> {
        let ((version, device, records), rest): ((u16, String, Vec<ResultRecord>), &[u8]) =
            postcard::take_from_bytes(bytes)?;
        if version != SCHEMA_VERSION {
            return Err(SchemaError::Version(version));
        }
        let (model, rest) = if rest.is_empty() {
            (None, rest)
        } else {
            let (m, rest) = postcard::take_from_bytes::<ModelTag>(rest)?;
            (Some(m), rest)
        };
        let mut records = records;
        if !rest.is_empty() {
            let sources: Vec<String> = postcard::from_bytes(rest)?;
            for (r, s) in records.iter_mut().zip(sources) {
                r.source = (!s.is_empty()).then_some(s);
            }
        }
        Ok(ResultBatch {
            version,
            device,
            records,
            model,
        })
    }
}

impl ResultRecord {
    /// The flat JSON object printed by the stdout and file sinks:
    /// `{"seq":..,"ts_ms":..,"class":..,"label":..,"score":..,"top":[..]}`.
    /// `labels` names classes for people; the wire carries only indices.
    pub fn to_json(&self, labels: &[String]) -> serde_json::Value {
        use serde_json::json;
        let mut obj = json!({ "seq": self.seq, "ts_ms": self.ts_ms });
        let map = obj
            .as_object_mut()
            .expect("json! of an object is an object");
        if let Some(s) = &self.source {
            map.insert("source".into(), json!(s));
        }
        let label = |i: u32| labels.get(i as usize).cloned();
        match &self.result {
            Prediction::Class(c) => {
                map.insert("class".into(), json!(c.class));
                if let Some(l) = label(c.class) {
                    map.insert("label".into(), json!(l));
                }
                map.insert("score".into(), json!(c.score));
                map.insert("top".into(), json!(c.top));
            }
            Prediction::Values(v) => {
                map.insert("values".into(), json!(v));
            }
            Prediction::Anomaly(a) => {
                map.insert("score".into(), json!(a.score));
                map.insert("threshold".into(), json!(a.threshold));
                map.insert("anomalous".into(), json!(a.anomalous));
            }
            Prediction::Summary(s) => {
                map.insert("summary".into(), json!(s.count));
                map.insert("from_ts_ms".into(), json!(s.from_ts_ms));
                let counts: serde_json::Map<String, serde_json::Value> = s
                    .class_counts
                    .iter()
                    .map(|(c, n)| (label(*c).unwrap_or_else(|| c.to_string()), json!(n)))
                    .collect();
                map.insert("class_counts".into(), serde_json::Value::Object(counts));
                map.insert("mean".into(), json!(s.mean));
                map.insert("min".into(), json!(s.min));
                map.insert("max".into(), json!(s.max));
            }
            Prediction::Detections(d) => {
                let boxes: Vec<serde_json::Value> = d
                    .iter()
                    .map(|d| {
                        let mut b = json!({ "class": d.class, "score": d.score, "box": d.bbox });
                        if let Some(l) = label(d.class) {
                            b["label"] = json!(l);
                        }
                        b
                    })
                    .collect();
                map.insert("detections".into(), json!(boxes));
            }
        }
        obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_batch() -> ResultBatch {
        ResultBatch {
            version: SCHEMA_VERSION,
            device: "pi".into(),
            records: vec![
                ResultRecord {
                    source: None,
                    seq: 1,
                    ts_ms: 1000,
                    result: Prediction::Class(ClassResult {
                        class: 1,
                        score: 0.5,
                        top: vec![(1, 0.5)],
                    }),
                },
                ResultRecord {
                    source: None,
                    seq: 2,
                    ts_ms: 1001,
                    result: Prediction::Values(vec![1.0]),
                },
                ResultRecord {
                    source: None,
                    seq: 3,
                    ts_ms: 1002,
                    result: Prediction::Anomaly(AnomalyResult {
                        score: 2.0,
                        threshold: 1.0,
                        anomalous: true,
                    }),
                },
            ],
            model: None,
        }
    }

    /// Frozen bytes: if this fails, the wire format changed. Update
    /// docs/wire-format.md and SCHEMA_VERSION with it, deliberately.
    #[test]
    fn encoding_is_frozen() {
        let bytes = sample_batch().to_postcard();
        let expected: Vec<u8> = vec![
            0x01, // version 1 (varint)
            0x02, b'p', b'i', // device: len 2, "pi"
            0x03, // 3 records
            0x01, 0xe8, 0x07, // seq 1, ts_ms 1000 (varint)
            0x00, 0x01, 0x00, 0x00, 0x00, 0x3f, // Class, class 1, score 0.5 f32 LE
            0x01, 0x01, 0x00, 0x00, 0x00, 0x3f, // top: 1 entry (1, 0.5)
            0x02, 0xe9, 0x07, // seq 2, ts_ms 1001
            0x01, 0x01, 0x00, 0x00, 0x80, 0x3f, // Values, 1 value: 1.0
            0x03, 0xea, 0x07, // seq 3, ts_ms 1002
            0x02, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x80, 0x3f,
            0x01, // Anomaly 2.0 1.0 true
        ];
        assert_eq!(bytes, expected);
        assert_eq!(ResultBatch::from_postcard(&bytes).unwrap(), sample_batch());
    }

    #[test]
    fn the_model_tag_trails_the_version_1_layout() {
        let mut b = sample_batch();
        let plain = b.to_postcard();
        b.model = Some(ModelTag::new(&"ab".repeat(32), "v2"));
        let tagged = b.to_postcard();
        assert_eq!(&tagged[..plain.len()], &plain[..]);
        assert_eq!(
            &tagged[plain.len()..],
            &[0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 2, b'v', b'2']
        );
        assert_eq!(ResultBatch::from_postcard(&tagged).unwrap(), b);
        // A decoder that predates the tag: the three version-1 fields.
        #[derive(Deserialize)]
        struct V1 {
            version: u16,
            device: String,
            records: Vec<ResultRecord>,
        }
        let old: V1 = postcard::from_bytes(&tagged).unwrap();
        assert_eq!(
            (old.version, old.device, old.records),
            (b.version, b.device.clone(), b.records.clone())
        );
        assert_eq!(b.model.unwrap().prefix_hex(), "abababababababab");
        // A version that is only the sha256's start is not sent twice.
        assert_eq!(ModelTag::new(&"ab".repeat(32), "ababab").version, "");
    }

    #[test]
    fn sources_trail_the_model_tag_and_older_decoders_ignore_them() {
        let mut b = sample_batch();
        b.records[0].source = Some("a.jpg".into());
        b.records[2].source = Some("frame 7".into());
        let bytes = b.to_postcard();
        let plain = sample_batch().to_postcard();
        assert_eq!(&bytes[..plain.len()], &plain[..]);
        // A tag of zeros keeps the trailers' order, then 3 sources.
        let mut tail = vec![0u8; 8];
        tail.extend([0, 3, 5, b'a', b'.', b'j', b'p', b'g', 0, 7]);
        tail.extend(b"frame 7");
        assert_eq!(&bytes[plain.len()..], &tail[..]);
        let back = ResultBatch::from_postcard(&bytes).unwrap();
        assert_eq!(back.records, b.records);
        assert_eq!(back.records[1].source, None);
        // With a real tag, and read by a decoder that knows only the tag.
        b.model = Some(ModelTag::new(&"cd".repeat(32), "v3"));
        let bytes = b.to_postcard();
        let back = ResultBatch::from_postcard(&bytes).unwrap();
        assert_eq!(back, b);
        let (_, rest): ((u16, String, Vec<ResultRecord>), &[u8]) =
            postcard::take_from_bytes(&bytes).unwrap();
        let tag: ModelTag = postcard::from_bytes(rest).unwrap();
        assert_eq!(tag.version, "v3");
    }

    #[test]
    fn detections_encode_as_documented() {
        let b = ResultBatch {
            version: SCHEMA_VERSION,
            device: "c".into(),
            records: vec![ResultRecord {
                seq: 0,
                ts_ms: 1,
                result: Prediction::Detections(vec![Detection {
                    class: 2,
                    score: 0.5,
                    bbox: [1, 2, 300, 4],
                }]),
                source: None,
            }],
            model: None,
        };
        let bytes = b.to_postcard();
        let expected: Vec<u8> = vec![
            0x01, 0x01, b'c', 0x01, // version, device "c", 1 record
            0x00, 0x01, // seq 0, ts_ms 1
            0x04, 0x01, // Detections, 1 box
            0x02, 0x00, 0x00, 0x00, 0x3f, // class 2, score 0.5
            0x01, 0x02, 0xac, 0x02, 0x04, // bbox 1, 2, 300 (varint), 4
        ];
        assert_eq!(bytes, expected);
        assert_eq!(ResultBatch::from_postcard(&bytes).unwrap(), b);
        let json = b.records[0].to_json(&["a".into(), "b".into(), "cat".into()]);
        assert_eq!(json["detections"][0]["label"], "cat");
        assert_eq!(
            json["detections"][0]["box"],
            serde_json::json!([1, 2, 300, 4])
        );
    }

    #[test]
    fn garbage_and_future_versions_are_errors() {
        assert!(ResultBatch::from_postcard(&[0xff, 0xff, 0xff]).is_err());
        let mut b = sample_batch();
        b.version = 99;
        let bytes = postcard::to_stdvec(&b).unwrap();
        assert!(matches!(
            ResultBatch::from_postcard(&bytes),
            Err(SchemaError::Version(99))
        ));
    }

    #[test]
    fn json_view_names_the_class() {
        let rec = &sample_batch().records[0];
        let v = rec.to_json(&["normal".into(), "fault".into()]);
        assert_eq!(v["label"], "fault");
        assert_eq!(v["class"], 1);
        assert_eq!(v["seq"], 1);
    }
}
