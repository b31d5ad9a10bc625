//! `mqtt` source: sensor payloads on subscribed topics, decoded here, or
//! images (`format = "image"`: each message one encoded frame, handed on
//! undecoded with its topic as its origin).
//!
//! The MQTT link only moves bytes: its network thread hands each message
//! (topic, payload) to this source through a bounded channel and never
//! waits on it (a full channel is a counted drop). Decoding, and every
//! error it finds, happens on the source thread.

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use serde::Deserialize;

use super::lines::{parse_line, LineError, LineFormat};
use super::{now_ms, Sample, Source, SourceError};
use crate::mqtt::{Message, Shared};
use crate::problem::Problems;

/// `[source] kind = "mqtt"`: messages on MQTT topics (the connection is `[mqtt]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// Topic filters and their payload formats.
    pub topics: Vec<Subscription>,
    /// Channels per sample, when the payloads do not make it obvious (not
    /// for image topics).
    #[serde(default)]
    pub channels: Option<usize>,
    /// Larger payloads are refused before decoding (counted and reported).
    /// Defaults to 64 KiB for sensor topics and 1 MiB (`[mqtt]
    /// max_packet_bytes`' default) for image topics.
    #[serde(default)]
    pub max_payload_bytes: Option<usize>,
}

/// Largest sensor payload by default.
const DEFAULT_MAX_PAYLOAD: usize = 64 << 10;
/// Largest image payload by default: the MQTT link's default packet limit.
const DEFAULT_MAX_IMAGE_PAYLOAD: usize = 1 << 20;

/// Payload formats of subscribed sensor topics.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// A JSON number, array, or object (channels named by `fields`).
    #[default]
    Json,
    /// One CSV line of numbers.
    Csv,
    /// Raw little-endian f32 values, one per channel.
    F32le,
    /// A postcard [`crate::schema::SensorFrame`] (from other edgeinfer devices).
    Postcard,
    /// An encoded image (JPEG or PNG): each message is one frame, its
    /// topic the frame's origin. Image topics take no `fields`, and a
    /// source's topics are either all images or all sensor payloads.
    Image,
}

/// One subscription of the `mqtt` source.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Topic filter, wildcards allowed (`sensors/+/vibration`).
    pub filter: String,
    /// How payloads on it are encoded.
    #[serde(default)]
    pub format: PayloadFormat,
    /// For JSON objects: the members that become channels, in order (not
    /// for image topics).
    #[serde(default)]
    pub fields: Vec<String>,
}

impl MqttSourceConfig {
    /// Checks `[source]` of this kind.
    pub fn validate(&self, p: &mut Problems) {
        p.check(!self.topics.is_empty(), "source.topics", || {
            "expected at least one topic filter".into()
        });
        for (i, t) in self.topics.iter().enumerate() {
            p.check(
                !t.filter.is_empty() && rumqttc::valid_filter(&t.filter),
                &format!("source.topics[{i}].filter"),
                || format!("expected an MQTT topic filter, found {:?}", t.filter),
            );
        }
        let image = |t: &&Subscription| t.format == PayloadFormat::Image;
        let images: Vec<&str> = self
            .topics
            .iter()
            .filter(image)
            .map(|t| t.filter.as_str())
            .collect();
        if !images.is_empty() && images.len() < self.topics.len() {
            let sensors: Vec<&str> = self
                .topics
                .iter()
                .filter(|t| t.format != PayloadFormat::Image)
                .map(|t| t.filter.as_str())
                .collect();
            p.push(
                "source.topics",
                format!(
                    "expected only image topics or only sensor topics in one source, found image topics {images:?} and sensor topics {sensors:?}"
                ),
            );
        }
        for (i, t) in self.topics.iter().enumerate() {
            p.check(
                t.format != PayloadFormat::Image || t.fields.is_empty(),
                &format!("source.topics[{i}].fields"),
                || "expected no fields on an image topic (each message is one frame)".into(),
            );
        }
        if self.channels == Some(0) {
            p.push("source.channels", "expected at least 1 channel, found 0");
        } else if self.channels.is_some() && self.images() {
            p.push(
                "source.channels",
                "expected no channels for image topics (each message is one frame)",
            );
        }
        if let Some(max) = self.max_payload_bytes {
            p.at_least_one(max as u64, "source.max_payload_bytes");
        }
    }

    /// True when the topics carry images (all of them, as validated).
    pub fn images(&self) -> bool {
        !self.topics.is_empty() && self.topics.iter().all(|t| t.format == PayloadFormat::Image)
    }

    /// Largest payload accepted: configured, else the default for the kind
    /// of topics.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes.unwrap_or(if self.images() {
            DEFAULT_MAX_IMAGE_PAYLOAD
        } else {
            DEFAULT_MAX_PAYLOAD
        })
    }

    /// Channels per sample: configured, else implied by the topics' JSON
    /// `fields` when they agree; `None` for image topics.
    pub fn channels(&self) -> Option<usize> {
        if self.images() {
            return None;
        }
        self.channels.or_else(|| {
            let first = self.topics.first()?.fields.len();
            (first > 0 && self.topics.iter().all(|t| t.fields.len() == first)).then_some(first)
        })
    }

    /// The topic filters to subscribe to.
    pub fn filters(&self) -> Vec<String> {
        self.topics.iter().map(|t| t.filter.clone()).collect()
    }
}

/// Why a payload did not decode.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    /// A text format whose bytes are not UTF-8.
    #[error("payload is not UTF-8")]
    NotUtf8,
    /// A JSON or CSV payload that does not parse.
    #[error(transparent)]
    Line(#[from] LineError),
    /// An `f32le` payload whose length is not a positive multiple of 4.
    #[error("expected a multiple of 4 bytes of little-endian f32, found {0} bytes")]
    F32Length(usize),
    /// A `postcard` payload that is not a `SensorFrame`.
    #[error("{0}")]
    Postcard(String),
    /// An `image` payload of no bytes (such as a message clearing a
    /// retained topic).
    #[error("empty image payload")]
    EmptyImage,
    /// A payload over `max_payload_bytes`, refused undecoded.
    #[error("payload of {bytes} bytes is over max_payload_bytes ({max})")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// Decodes one payload received on `topic` into samples; text formats and
/// images are stamped `now_ms`. An image is handed on undecoded, its topic
/// as its origin.
pub fn decode_payload(
    sub: &Subscription,
    topic: &str,
    payload: &[u8],
    now_ms: u64,
) -> Result<Vec<Sample>, PayloadError> {
    let one = |values: Vec<f32>| vec![Sample::new(now_ms, values)];
    match sub.format {
        PayloadFormat::Image => {
            if payload.is_empty() {
                return Err(PayloadError::EmptyImage);
            }
            Ok(vec![Sample::image(now_ms, payload.to_vec(), topic.into())])
        }
        PayloadFormat::Json | PayloadFormat::Csv => {
            let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
            let format = if sub.format == PayloadFormat::Json {
                LineFormat::Json
            } else {
                LineFormat::Csv
            };
            Ok(one(parse_line(format, &sub.fields, text.trim())?))
        }
        PayloadFormat::F32le => {
            if payload.is_empty() || !payload.len().is_multiple_of(4) {
                return Err(PayloadError::F32Length(payload.len()));
            }
            Ok(one(payload
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()))
        }
        PayloadFormat::Postcard => {
            let frame = crate::schema::SensorFrame::from_postcard(payload)
                .map_err(|e| PayloadError::Postcard(e.to_string()))?;
            Ok(frame
                .samples
                .into_iter()
                .map(|(ts_ms, values)| Sample::new(ts_ms, values))
                .collect())
        }
    }
}

/// Samples decoded from the messages the link receives.
#[derive(Debug)]
pub struct MqttSource {
    rx: Receiver<Message>,
    subscriptions: Vec<Subscription>,
    shared: Arc<Shared>,
    channels: Option<usize>,
    max_payload: usize,
    /// Samples of a message that carried several (a postcard frame).
    pending: VecDeque<Sample>,
    received: u64,
}

impl MqttSource {
    /// Reads `rx` (the link's messages) and decodes them per `config`;
    /// undecodable payloads are counted in `shared`'s counters.
    pub fn new(rx: Receiver<Message>, config: &MqttSourceConfig, shared: Arc<Shared>) -> Self {
        MqttSource {
            rx,
            subscriptions: config.topics.clone(),
            shared,
            channels: config.channels(),
            max_payload: config.max_payload_bytes(),
            pending: VecDeque::new(),
            received: 0,
        }
    }
}

impl Source for MqttSource {
    fn next_sample(&mut self) -> Result<Option<Sample>, SourceError> {
        loop {
            if let Some(s) = self.pending.pop_front() {
                return Ok(Some(s));
            }
            let Ok(message) = self.rx.recv() else {
                return Ok(None);
            };
            self.shared.counters.bump_taken();
            self.received += 1;
            // The first matching filter decides the format, as subscriptions
            // are listed in config order.
            let Some(sub) = self
                .subscriptions
                .iter()
                .find(|s| rumqttc::matches(&message.topic, &s.filter))
            else {
                continue;
            };
            let decoded = if message.payload.len() > self.max_payload {
                Err(PayloadError::TooLarge {
                    bytes: message.payload.len(),
                    max: self.max_payload,
                })
            } else {
                decode_payload(sub, &message.topic, &message.payload, now_ms())
            };
            match decoded {
                Ok(samples) => self.pending.extend(samples),
                Err(e) => {
                    self.shared.counters.bump_bad_payloads();
                    return Err(SourceError::BadRecord {
                        origin: "mqtt".into(),
                        record: self.received,
                        reason: format!("{}: {e}", message.topic),
                    });
                }
            }
        }
    }

    fn channels(&self) -> Option<usize> {
        self.channels
    }

    fn paced(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_formats() {
        let sub = |format, fields: &[&str]| Subscription {
            filter: "#".into(),
            format,
            fields: fields.iter().map(|s| s.to_string()).collect(),
        };
        let v = |r: Result<Vec<Sample>, PayloadError>| r.unwrap().remove(0).values;
        assert_eq!(
            v(decode_payload(
                &sub(PayloadFormat::Json, &[]),
                "t",
                b"[1,2]",
                5
            )),
            vec![1.0, 2.0]
        );
        assert_eq!(
            v(decode_payload(
                &sub(PayloadFormat::Json, &["b", "a"]),
                "t",
                br#"{"a":1,"b":2}"#,
                5
            )),
            vec![2.0, 1.0]
        );
        assert_eq!(
            v(decode_payload(
                &sub(PayloadFormat::Csv, &[]),
                "t",
                b"3,4\n",
                5
            )),
            vec![3.0, 4.0]
        );
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        assert_eq!(
            v(decode_payload(
                &sub(PayloadFormat::F32le, &[]),
                "t",
                &raw,
                5
            )),
            vec![1.5, -2.0]
        );
        assert_eq!(
            decode_payload(&sub(PayloadFormat::F32le, &[]), "t", &raw[..5], 5),
            Err(PayloadError::F32Length(5))
        );
        assert_eq!(
            decode_payload(&sub(PayloadFormat::Json, &[]), "t", b"\xff", 5),
            Err(PayloadError::NotUtf8)
        );
        assert!(matches!(
            decode_payload(&sub(PayloadFormat::Csv, &[]), "t", b"1,x", 5),
            Err(PayloadError::Line(LineError::CsvField { field: 2, .. }))
        ));
        assert!(matches!(
            decode_payload(&sub(PayloadFormat::Postcard, &[]), "t", b"\xff\xff", 5),
            Err(PayloadError::Postcard(_))
        ));
        let frame = crate::schema::SensorFrame::new(vec![(7, vec![1.0]), (8, vec![2.0])]);
        let s = decode_payload(
            &sub(PayloadFormat::Postcard, &[]),
            "t",
            &frame.to_postcard(),
            5,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[1].ts_ms, s[1].values.clone()), (8, vec![2.0]));
    }

    #[test]
    fn channels_from_fields_and_filters_checked() {
        let config: MqttSourceConfig = toml::from_str(
            "topics = [{ filter = \"a/+\", fields = [\"x\", \"y\"] }, { filter = \"b\", fields = [\"u\", \"v\"] }]",
        )
        .unwrap();
        assert_eq!(config.channels(), Some(2));
        assert_eq!(config.filters(), vec!["a/+", "b"]);
        let origin = crate::problem::Origin::default();
        let mut p = Problems::new(&origin);
        let bad: MqttSourceConfig =
            toml::from_str("topics = [{ filter = \"a/#/b\" }]\nchannels = 0").unwrap();
        bad.validate(&mut p);
        let fields: Vec<String> = p.into_vec().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["source.topics[0].filter", "source.channels"]);
    }

    #[test]
    fn image_payloads_are_frames_of_their_topic() {
        let sub = Subscription {
            filter: "cams/+/jpeg".into(),
            format: PayloadFormat::Image,
            fields: vec![],
        };
        let bytes = b"\xFF\xD8 any bytes, decoded later \xFF\xD9";
        let mut s = decode_payload(&sub, "cams/door/jpeg", bytes, 42).unwrap();
        assert_eq!(s.len(), 1);
        let s = s.remove(0);
        assert_eq!(s.ts_ms, 42);
        assert!(s.values.is_empty());
        let frame = s.frame.unwrap();
        assert_eq!(frame.origin, "cams/door/jpeg");
        assert_eq!(frame.bytes, bytes);
        assert_eq!(
            decode_payload(&sub, "cams/door/jpeg", b"", 42),
            Err(PayloadError::EmptyImage)
        );
    }

    #[test]
    fn image_topics_config() {
        let origin = crate::problem::Origin::default();
        let problems = |toml: &str| {
            let c: MqttSourceConfig = toml::from_str(toml).unwrap();
            let mut p = Problems::new(&origin);
            c.validate(&mut p);
            p.into_vec()
        };
        let ok: MqttSourceConfig = toml::from_str(
            "topics = [{ filter = \"cams/+/jpeg\", format = \"image\" }, { filter = \"door\", format = \"image\" }]",
        )
        .unwrap();
        assert!(ok.images());
        assert_eq!(ok.channels(), None);
        assert_eq!(ok.max_payload_bytes(), 1 << 20);
        assert!(problems(
            "topics = [{ filter = \"cams/+/jpeg\", format = \"image\" }]\nmax_payload_bytes = 4000000"
        )
        .is_empty());

        let mixed = problems(
            "topics = [{ filter = \"cam\", format = \"image\" }, { filter = \"temp\", format = \"csv\" }]",
        );
        assert_eq!(mixed.len(), 1, "{mixed:?}");
        assert_eq!(mixed[0].field, "source.topics");
        assert!(
            mixed[0].message.contains("[\"cam\"]") && mixed[0].message.contains("[\"temp\"]"),
            "{}",
            mixed[0].message
        );

        let fields: Vec<String> = problems(
            "topics = [{ filter = \"cam\", format = \"image\", fields = [\"x\"] }]\nchannels = 3",
        )
        .into_iter()
        .map(|p| p.field)
        .collect();
        assert_eq!(fields, vec!["source.topics[0].fields", "source.channels"]);

        let sensors: MqttSourceConfig =
            toml::from_str("topics = [{ filter = \"t\", format = \"csv\" }]").unwrap();
        assert!(!sensors.images());
        assert_eq!(sensors.max_payload_bytes(), 64 << 10);
    }
}
