//! Home Assistant MQTT discovery: retained configs under
//! `<discovery_prefix>/<component>/<node_id>/<object_id>/config` that make
//! the device's results, its connectivity and a few metrics appear as
//! entities of one Home Assistant device; and the `<prefix>/state` topic
//! they read, plain JSON (Home Assistant cannot decode postcard).
//!
//! Availability is the device's existing `<prefix>/status` (`online`, and
//! `offline` as its Last Will). Configs are published at every connect and
//! again when Home Assistant announces itself on
//! `<discovery_prefix>/status`; turning the feature off publishes empty
//! retained configs, which removes the entities.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::mqtt::{Shared, Topics};
use crate::postprocess::Postprocess;
use crate::problem::Problems;
use crate::schema::{ModelTag, ResultRecord};
use crate::sink::{Sink, SinkError};

/// `[homeassistant]`: entities in Home Assistant through MQTT discovery.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    /// Publish discovery configs and the JSON state topic.
    #[serde(default)]
    pub enabled: bool,
    /// Home Assistant's discovery prefix.
    #[serde(default = "default_prefix")]
    pub discovery_prefix: String,
    /// The device's name in Home Assistant; default its device id.
    #[serde(default)]
    pub name: Option<String>,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        HomeAssistantConfig {
            enabled: false,
            discovery_prefix: default_prefix(),
            name: None,
        }
    }
}

fn default_prefix() -> String {
    "homeassistant".into()
}

impl HomeAssistantConfig {
    /// Checks `[homeassistant]`.
    pub fn validate(&self, p: &mut Problems) {
        if let Err(why) = crate::mqtt::topic_name(&self.discovery_prefix) {
            p.push("homeassistant.discovery_prefix", why);
        }
    }

    /// The topic Home Assistant announces itself on.
    pub fn birth_topic(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }
}

/// `node_id` and `object_id` allow `[a-zA-Z0-9_-]` only.
fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What the discovery configs describe.
#[derive(Debug, Clone)]
pub struct Entities<'a> {
    /// Device id.
    pub device_id: &'a str,
    /// The device's topics.
    pub topics: &'a Topics,
    /// How outputs become results (picks the entities).
    pub postprocess: &'a Postprocess,
    /// Values per result, for `regress`.
    pub outputs: usize,
    /// The running model's version.
    pub model_version: &'a str,
}

/// The retained discovery messages: (config topic, JSON payload).
pub fn discovery(config: &HomeAssistantConfig, e: &Entities) -> Vec<(String, Vec<u8>)> {
    let node = format!("edgeinfer_{}", id_part(e.device_id));
    let device = json!({
        "identifiers": [node],
        "name": config.name.clone().unwrap_or_else(|| e.device_id.to_string()),
        "manufacturer": "edgeinfer",
        "model": format!("edgeinfer model {}", e.model_version),
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let origin = json!({
        "name": "edgeinfer",
        "sw": env!("CARGO_PKG_VERSION"),
        "url": "https://github.com/edgeinfer/edgeinfer",
    });
    // (component, object id, name, state topic, extra fields)
    let mut list: Vec<(&str, String, String, &str, Value)> = Vec::new();
    let state = e.topics.state.as_str();
    let metrics = e.topics.metrics.as_str();
    match e.postprocess {
        Postprocess::Classify { .. } => {
            list.push((
                "sensor",
                "label".into(),
                "Label".into(),
                state,
                json!({ "value_template": "{{ value_json.label | default(value_json.class) }}", "icon": "mdi:tag" }),
            ));
            list.push((
                "sensor",
                "score".into(),
                "Score".into(),
                state,
                json!({ "value_template": "{{ value_json.score }}", "state_class": "measurement" }),
            ));
        }
        Postprocess::Regress => {
            for i in 0..e.outputs.max(1) {
                list.push((
                    "sensor",
                    format!("value_{i}"),
                    format!("Value {i}"),
                    state,
                    json!({ "value_template": format!("{{{{ value_json['values'][{i}] }}}}"), "state_class": "measurement" }),
                ));
            }
        }
        Postprocess::Anomaly { .. } => {
            list.push((
                "binary_sensor",
                "anomaly".into(),
                "Anomaly".into(),
                state,
                json!({ "value_template": "{{ 'ON' if value_json.anomalous else 'OFF' }}", "device_class": "problem" }),
            ));
            list.push((
                "sensor",
                "anomaly_score".into(),
                "Anomaly score".into(),
                state,
                json!({ "value_template": "{{ value_json.score }}", "state_class": "measurement" }),
            ));
        }
        Postprocess::Detect(_) => {
            list.push((
                "sensor",
                "objects".into(),
                "Objects".into(),
                state,
                json!({ "value_template": "{{ value_json.detections | length }}", "state_class": "measurement" }),
            ));
            list.push((
                "sensor",
                "top_object".into(),
                "Top object".into(),
                state,
                json!({ "value_template": "{{ (value_json.detections | first | default({})).label | default('none') }}", "icon": "mdi:shape" }),
            ));
        }
    }
    for (key, name, field, extra) in [
        (
            "inferences",
            "Inferences",
            "inferences",
            json!({ "state_class": "total_increasing" }),
        ),
        (
            "latency",
            "Model latency p50",
            "latency_model_p50_us",
            json!({ "unit_of_measurement": "µs", "state_class": "measurement" }),
        ),
        (
            "outbox",
            "Outbox depth",
            "outbox_depth",
            json!({ "state_class": "measurement" }),
        ),
    ] {
        let mut extra = extra;
        extra["value_template"] = json!(format!("{{{{ value_json.{field} }}}}"));
        extra["entity_category"] = json!("diagnostic");
        list.push(("sensor", key.into(), name.into(), metrics, extra));
    }
    let mut out: Vec<(String, Vec<u8>)> = list
        .into_iter()
        .map(|(component, object, name, topic, extra)| {
            let mut c = json!({
                "name": name,
                "unique_id": format!("{node}_{object}"),
                "state_topic": topic,
                "availability_topic": e.topics.status,
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": device,
                "origin": origin,
            });
            if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
                c.extend(extra);
            }
            (
                format!(
                    "{}/{component}/{node}/{object}/config",
                    config.discovery_prefix
                ),
                c.to_string().into_bytes(),
            )
        })
        .collect();
    // Connectivity reads the status topic itself, so it needs no availability.
    out.push((
        format!(
            "{}/binary_sensor/{node}/connectivity/config",
            config.discovery_prefix
        ),
        json!({
            "name": "Connectivity",
            "unique_id": format!("{node}_connectivity"),
            "state_topic": e.topics.status,
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "device": device,
            "origin": origin,
        })
        .to_string()
        .into_bytes(),
    ));
    out
}

/// The `homeassistant` state sink: the latest result as JSON on
/// `<prefix>/state`, retained, so Home Assistant shows it after a restart.
#[derive(Debug)]
pub struct StateSink {
    shared: Arc<Shared>,
    topic: String,
    labels: Vec<String>,
}

impl StateSink {
    /// A sink publishing on `topic` through `shared`.
    pub fn new(shared: Arc<Shared>, topic: &str, labels: Vec<String>) -> Self {
        StateSink {
            shared,
            topic: topic.into(),
            labels,
        }
    }
}

impl Sink for StateSink {
    fn write(&mut self, record: &ResultRecord) -> Result<(), SinkError> {
        let state = record.to_json(&self.labels).to_string();
        self.shared.publish(&self.topic, state.into_bytes(), true);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn model_changed(&mut self, _tag: &ModelTag, labels: &[String]) -> Result<(), SinkError> {
        self.labels = labels.to_vec();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_to_the_allowed_characters() {
        assert_eq!(id_part("pi/kitchen 2"), "pi_kitchen_2");
        let topics = Topics::new("edgeinfer/pi 1");
        let msgs = discovery(
            &HomeAssistantConfig::default(),
            &Entities {
                device_id: "pi 1",
                topics: &topics,
                postprocess: &Postprocess::Regress,
                outputs: 2,
                model_version: "v1",
            },
        );
        assert!(msgs
            .iter()
            .any(|(t, _)| t == "homeassistant/sensor/edgeinfer_pi_1/value_1/config"));
    }
}
