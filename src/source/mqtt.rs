//! `mqtt` source: sensor payloads on subscribed topics, decoded here.
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
    /// Channels per sample, when the payloads do not make it obvious.
    #[serde(default)]
    pub channels: Option<usize>,
    /// Larger payloads are refused before decoding (counted and reported).
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
}

fn default_max_payload() -> usize {
    64 << 10
}

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
    /// For JSON objects: the members that become channels, in order.
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
        if self.channels == Some(0) {
            p.push("source.channels", "expected at least 1 channel, found 0");
        }
        p.at_least_one(self.max_payload_bytes as u64, "source.max_payload_bytes");
    }

    /// Channels per sample: configured, else implied by the topics' JSON
    /// `fields` when they agree.
    pub fn channels(&self) -> Option<usize> {
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
    /// A payload over `max_payload_bytes`, refused undecoded.
    #[error("payload of {bytes} bytes is over max_payload_bytes ({max})")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// Decodes one sensor payload into samples; text formats are stamped `now_ms`.
pub fn decode_payload(
    sub: &Subscription,
    payload: &[u8],
    now_ms: u64,
) -> Result<Vec<Sample>, PayloadError> {
    let one = |values: Vec<f32>| vec![Sample::new(now_ms, values)];
    match sub.format {
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
            max_payload: config.max_payload_bytes,
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
                decode_payload(sub, &message.payload, now_ms())
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
            v(decode_payload(&sub(PayloadFormat::Json, &[]), b"[1,2]", 5)),
            vec![1.0, 2.0]
        );
        assert_eq!(
            v(decode_payload(
                &sub(PayloadFormat::Json, &["b", "a"]),
                br#"{"a":1,"b":2}"#,
                5
            )),
            vec![2.0, 1.0]
        );
        assert_eq!(
            v(decode_payload(&sub(PayloadFormat::Csv, &[]), b"3,4\n", 5)),
            vec![3.0, 4.0]
        );
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        assert_eq!(
            v(decode_payload(&sub(PayloadFormat::F32le, &[]), &raw, 5)),
            vec![1.5, -2.0]
        );
        assert_eq!(
            decode_payload(&sub(PayloadFormat::F32le, &[]), &raw[..5], 5),
            Err(PayloadError::F32Length(5))
        );
        assert_eq!(
            decode_payload(&sub(PayloadFormat::Json, &[]), b"\xff", 5),
            Err(PayloadError::NotUtf8)
        );
        assert!(matches!(
            decode_payload(&sub(PayloadFormat::Csv, &[]), b"1,x", 5),
            Err(PayloadError::Line(LineError::CsvField { field: 2, .. }))
        ));
        assert!(matches!(
            decode_payload(&sub(PayloadFormat::Postcard, &[]), b"\xff\xff", 5),
            Err(PayloadError::Postcard(_))
        ));
        let frame = crate::schema::SensorFrame::new(vec![(7, vec![1.0]), (8, vec![2.0])]);
        let s =
            decode_payload(&sub(PayloadFormat::Postcard, &[]), &frame.to_postcard(), 5).unwrap();
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
}
