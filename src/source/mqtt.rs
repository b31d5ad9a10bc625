//! `mqtt` source: samples decoded by the link's network thread from the
//! subscribed topics (see `mqtt.rs` for the payload formats).

use std::sync::mpsc::Receiver;

use super::{Sample, Source, SourceError};

/// Samples arriving on MQTT topics.
#[derive(Debug)]
pub struct MqttSource {
    rx: Receiver<Result<Sample, String>>,
    channels: Option<usize>,
    received: u64,
}

impl MqttSource {
    /// Reads what the link decodes; `channels` when configured.
    pub fn new(rx: Receiver<Result<Sample, String>>, channels: Option<usize>) -> Self {
        MqttSource {
            rx,
            channels,
            received: 0,
        }
    }
}

impl Source for MqttSource {
    fn next_sample(&mut self) -> Result<Option<Sample>, SourceError> {
        self.received += 1;
        match self.rx.recv() {
            Ok(Ok(s)) => Ok(Some(s)),
            Ok(Err(reason)) => Err(SourceError::BadRecord {
                origin: "mqtt".into(),
                record: self.received,
                reason,
            }),
            Err(_) => Ok(None),
        }
    }

    fn channels(&self) -> Option<usize> {
        self.channels
    }

    fn paced(&self) -> bool {
        true
    }
}
