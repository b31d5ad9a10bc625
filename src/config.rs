//! Configuration: TOML in, a checked [`Config`] out.
//!
//! This module only reads TOML and hands each section to the module that
//! owns it (its type, defaults, docs and validator live with its code). Each
//! section is deserialized on its own (serde stops at the first error of a
//! value), so a file with mistakes in three sections reports all three, and
//! then every owner's validator runs; `check --config` and `run` go through
//! the same [`Config::parse`]. Every problem names the file, the field path
//! and what was expected.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use crate::broker::BrokerConfig;
pub use crate::model::ModelConfig;
pub use crate::mqtt::MqttConfig;
pub use crate::outbox::OutboxConfig;
pub use crate::policy::PolicyConfig;
pub use crate::postprocess::{AnomalyScore, PostprocessConfig};
pub use crate::preprocess::{MissingPolicy, PerChannel, PreprocessStep};
pub use crate::problem::{ConfigErrors, ConfigProblem, Origin, Problems};
pub use crate::queue::{OnFull, QueueConfig};
pub use crate::sink::{Encoding, FileFormat, MqttSinkConfig, SinkConfig};
pub use crate::source::{LineFormat, SimMode, SourceConfig};
pub use crate::window::{Layout, WindowConfig};

/// A whole device config: one field per section, each section's type owned
/// by its stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Device id: names the device in results and MQTT topics.
    pub device_id: String,
    /// `[model]`: the ONNX model to run.
    pub model: ModelConfig,
    /// `[source]`: where samples come from.
    pub source: SourceConfig,
    /// `[window]`: how samples become the model's input tensor.
    pub window: WindowConfig,
    /// `[[preprocess]]`: steps applied to every sample, in order, before windowing.
    pub preprocess: Vec<PreprocessStep>,
    /// `[image]`: how images from an image source become the model's input;
    /// unset fields come from the model's `edgeinfer.image` metadata.
    pub image: crate::image::ImageConfig,
    /// `[postprocess]`: how model outputs become results; default from the
    /// model's `edgeinfer.task` metadata, else `regress`.
    pub postprocess: Option<PostprocessConfig>,
    /// `[policy]`: which results are emitted.
    pub policy: PolicyConfig,
    /// `[[sink]]`: where results go; default one `stdout` sink.
    pub sink: Vec<SinkConfig>,
    /// `[pipeline]`: the sample queue between the source and the pipeline.
    pub pipeline: QueueConfig,
    /// `[mqtt]`: the broker connection, used by `mqtt` sources and sinks.
    pub mqtt: Option<MqttConfig>,
    /// `[outbox]`: store-and-forward of result messages awaiting the broker's PUBACK.
    pub outbox: OutboxConfig,
    /// `[broker]`: a broker inside this process, for boards with no broker
    /// on the network.
    pub broker: BrokerConfig,
    /// `[remote]`: signed model updates and commands over MQTT.
    pub remote: Option<crate::fleet::remote::RemoteConfig>,
    /// `[homeassistant]`: Home Assistant MQTT discovery.
    pub homeassistant: crate::fleet::homeassistant::HomeAssistantConfig,
    /// Where this config came from: names it in messages, anchors relative paths.
    pub origin: Origin,
    /// The TOML as read, for run-time changes that must pass the same checks.
    pub raw: toml::Table,
}

fn default_device_id() -> String {
    "edgeinfer".into()
}

/// Deserializes top-level sections one by one, noting every problem and
/// every key it was asked for (the others are unknown).
struct Sections<'a> {
    table: toml::Table,
    known: BTreeSet<&'static str>,
    problems: Problems<'a>,
}

impl<'a> Sections<'a> {
    /// Section `key`, `None` when absent or broken (and the problem noted).
    fn optional<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        self.known.insert(key);
        let value = self.table.get(key)?.clone();
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let path = e.path().to_string();
                let field = match path.as_str() {
                    "." => key.to_string(),
                    p if p.starts_with('[') => format!("{key}{p}"),
                    p => format!("{key}.{p}"),
                };
                self.problems.push(&field, e.inner().message().to_string());
                None
            }
        }
    }

    /// Section `key`, which must be present.
    fn required<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        if !self.table.contains_key(key) {
            self.known.insert(key);
            self.problems
                .push(key, format!("missing section: expected [{key}]"));
            return None;
        }
        self.optional(key)
    }

    /// Notes the keys nobody asked for.
    fn unknown_keys(&mut self) {
        let expected: Vec<&str> = self.known.iter().copied().collect();
        let unknown: Vec<String> = self
            .table
            .keys()
            .filter(|k| !self.known.contains(k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            self.problems.push(
                &key,
                format!("unknown key, expected one of: {}", expected.join(", ")),
            );
        }
    }
}

impl Config {
    /// Reads and checks `path`; relative paths inside resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigProblem {
                file: origin.clone(),
                field: "(file)".into(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, &origin, &base)
    }

    /// Parses TOML `text`; `origin` names it in errors, `base_dir` anchors relative paths.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        let origin = Origin::new(origin, base_dir);
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            ConfigErrors(vec![origin.problem(
                &line.map(|l| format!("line {l}")).unwrap_or_default(),
                format!(
                    "invalid TOML: {}",
                    e.message()
                        .split('\n')
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )])
        })?;
        Self::from_table(table, origin)
    }

    /// Checks a parsed TOML document.
    fn from_table(table: toml::Table, origin: Origin) -> Result<Config, ConfigErrors> {
        let raw = table.clone();
        let mut s = Sections {
            table,
            known: BTreeSet::new(),
            problems: Problems::new(&origin),
        };
        // One line per section: its key and its owner's type.
        let device_id = s.optional("device_id");
        let model = s.required("model");
        let source = s.required("source");
        let window = s.optional("window");
        let preprocess = s.optional("preprocess");
        let image = s.optional("image");
        let postprocess = s.optional("postprocess");
        let policy = s.optional("policy");
        let sink = s.optional("sink");
        let pipeline = s.optional("pipeline");
        let mqtt = s.optional("mqtt");
        let outbox = s.optional("outbox");
        let broker = s.optional("broker");
        let remote = s.optional("remote");
        let homeassistant = s.optional("homeassistant");
        s.unknown_keys();
        let problems = s.problems.into_vec();
        let (Some(model), Some(source), true) = (model, source, problems.is_empty()) else {
            return Err(ConfigErrors(problems));
        };
        let mut config = Config {
            device_id: device_id.unwrap_or_else(default_device_id),
            model,
            source,
            window: window.unwrap_or_default(),
            preprocess: preprocess.unwrap_or_default(),
            image: image.unwrap_or_default(),
            postprocess,
            policy: policy.unwrap_or_default(),
            sink: sink.unwrap_or_else(|| vec![SinkConfig::Stdout {}]),
            pipeline: pipeline.unwrap_or_default(),
            mqtt,
            outbox: outbox.unwrap_or_default(),
            broker: broker.unwrap_or_default(),
            remote,
            homeassistant: homeassistant.unwrap_or_default(),
            origin: origin.clone(),
            raw,
        };
        config.apply_policy_batching();
        let mut problems = Problems::new(&origin);
        config.validate(&mut problems);
        problems.into_result(config)
    }

    /// A config that runs the model at `path` on `stdin` CSV lines with
    /// every default: what `profile --model` measures.
    pub fn for_model(path: &Path) -> Config {
        let origin = Origin::new("(defaults)", Path::new(""));
        Config {
            device_id: default_device_id(),
            model: ModelConfig::new(path),
            source: SourceConfig::Stdin(Default::default()),
            window: Default::default(),
            preprocess: vec![],
            image: Default::default(),
            postprocess: None,
            policy: Default::default(),
            sink: vec![SinkConfig::Stdout {}],
            pipeline: Default::default(),
            mqtt: None,
            outbox: Default::default(),
            broker: Default::default(),
            remote: None,
            homeassistant: Default::default(),
            origin,
            raw: Default::default(),
        }
    }

    /// This config with one run-time setting changed (a remote `set`):
    /// `policy.<field>`, or `batch_max_records` / `batch_max_ms` of the
    /// `mqtt` sinks. `value` is TOML. The changed section passes its
    /// validator, or nothing changes.
    pub fn with_setting(&self, key: &str, value: &str) -> Result<Config, String> {
        let parsed: toml::Table = format!("v = {value}").parse().map_err(|_| {
            format!("{key}: expected a TOML value (0.05, true, \"text\"), found {value}")
        })?;
        let v = parsed
            .get("v")
            .cloned()
            .unwrap_or(toml::Value::Boolean(false));
        let mut out = self.clone();
        let mut p = Problems::new(&self.origin);
        if let Some(field) = key.strip_prefix("policy.") {
            let mut table = self
                .raw
                .get("policy")
                .and_then(|t| t.as_table())
                .cloned()
                .unwrap_or_default();
            table.insert(field.into(), v);
            let policy: PolicyConfig =
                serde_path_to_error::deserialize(toml::Value::Table(table.clone()))
                    .map_err(|e| format!("{key}: {}", e.inner().message()))?;
            policy.validate(&mut p);
            out.policy = policy;
            out.raw.insert("policy".into(), toml::Value::Table(table));
        } else if key == "batch_max_records" || key == "batch_max_ms" {
            let n = v
                .as_integer()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("{key}: expected a whole number, found {value}"))?
                as u64;
            let mut any = false;
            for (i, s) in out.sink.iter_mut().enumerate() {
                if let SinkConfig::Mqtt(m) = s {
                    any = true;
                    if key == "batch_max_records" {
                        m.batch_max_records = Some(n as usize);
                    } else {
                        m.batch_max_ms = Some(n);
                    }
                    m.validate(&format!("sink[{i}]"), &mut p);
                }
            }
            if !any {
                return Err(format!("{key}: the config has no mqtt sink"));
            }
        } else {
            return Err(format!(
                "{key}: not settable at run time; expected policy.<field>, batch_max_records, batch_max_ms or log_level"
            ));
        }
        p.into_result(out).map_err(|e| {
            e.0.iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Runs every section's validator.
    pub fn validate(&self, p: &mut Problems) {
        // The device id names MQTT topics and the state directory: a
        // wildcard or a path separator there would publish elsewhere or
        // write outside it.
        let id = &self.device_id;
        p.check(
            !id.is_empty()
                && id != "."
                && id != ".."
                && id.chars().all(|c| !c.is_control() && !matches!(c, '/' | '\\' | '+' | '#')),
            "device_id",
            || {
                format!(
                    "expected a name without '/', '\\', '+', '#' or control characters, found {id:?}"
                )
            },
        );
        self.model.validate(p);
        self.source.validate(p);
        self.window.validate(p);
        crate::preprocess::validate(&self.preprocess, p);
        self.image.validate(p);
        if let Some(post) = &self.postprocess {
            post.validate(p);
        }
        self.policy.validate(p);
        crate::sink::validate(&self.sink, p);
        self.pipeline.validate(p);
        if let Some(m) = &self.mqtt {
            m.validate(p);
        }
        self.outbox.validate(p);
        self.broker.validate(p);
        if let Some(r) = &self.remote {
            r.validate(p);
        }
        self.homeassistant.validate(p);
    }

    /// `mqtt` sinks without their own batching take the older `[policy]
    /// batch_*` keys, so configs written before batching moved still run.
    fn apply_policy_batching(&mut self) {
        for s in &mut self.sink {
            if let SinkConfig::Mqtt(m) = s {
                m.batch_max_records = m.batch_max_records.or(self.policy.batch_max_records);
                m.batch_max_ms = m.batch_max_ms.or(self.policy.batch_max_ms);
            }
        }
    }

    /// Points the config at `url` (from `--broker` or `EDGEINFER_BROKER`):
    /// sets `[mqtt] broker` and adds an `mqtt` sink when there is none, so
    /// results are published as well as written where the config says. The
    /// changed `[mqtt]` goes through its validator again.
    pub fn use_broker(&mut self, url: &str) -> Result<(), ConfigErrors> {
        self.mqtt.get_or_insert_with(Default::default).broker = url.to_string();
        if !self.sink.iter().any(|s| matches!(s, SinkConfig::Mqtt(_))) {
            self.sink.push(SinkConfig::Mqtt(MqttSinkConfig::default()));
            self.apply_policy_batching();
        }
        let mut p = Problems::new(&self.origin);
        if let Some(m) = &self.mqtt {
            m.validate(&mut p);
        }
        p.into_result(())
    }

    /// Resolves a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        self.origin.resolve(p)
    }

    /// A problem in this config, for callers that validate further.
    pub fn problem(&self, field: &str, message: impl Into<String>) -> ConfigProblem {
        self.origin.problem(field, message)
    }

    /// The fleet state directory (`[remote] state_dir`, else `fleet` beside
    /// the outbox).
    pub fn fleet_dir(&self) -> PathBuf {
        match self.remote.as_ref().and_then(|r| r.state_dir.as_ref()) {
            Some(d) => self.origin.resolve(d),
            None => {
                let outbox = self.outbox_dir();
                outbox
                    .parent()
                    .map(|p| p.join("fleet"))
                    .unwrap_or_else(|| PathBuf::from("fleet"))
            }
        }
    }

    /// Where the outbox (and the saved sequence number) lives.
    pub fn outbox_dir(&self) -> PathBuf {
        self.outbox.resolved_dir(&self.origin, &self.device_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, "t.toml", Path::new("/cfg"))
    }

    const MINIMAL: &str = "[model]\npath = \"m.onnx\"\n[source]\nkind = \"stdin\"\n";

    #[test]
    fn minimal_config_takes_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.device_id, "edgeinfer");
        assert_eq!(c.sink, vec![SinkConfig::Stdout {}]);
        assert_eq!(c.resolve(&c.model.path), PathBuf::from("/cfg/m.onnx"));
        assert_eq!(c.pipeline.capacity, 64);
    }

    #[test]
    fn every_broken_section_is_reported_with_its_field() {
        let text = "bogus = 1\n[model]\npath = 3\n[source]\nkind = \"stdin\"\n\
                    [window]\nsize = \"ten\"\n[pipeline]\ncapacity = 0\n";
        let errs = parse(text).unwrap_err().0;
        let fields: Vec<&str> = errs.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"bogus"), "{errs:?}");
        assert!(fields.contains(&"model.path"), "{errs:?}");
        assert!(fields.contains(&"window.size"), "{errs:?}");
        assert!(errs.iter().all(|p| p.file == "t.toml"));
        let line = errs.iter().find(|p| p.field == "window.size").unwrap();
        assert!(line.message.contains("expected"), "{line}");
    }

    #[test]
    fn unknown_field_inside_a_section_is_named() {
        let text = format!("{MINIMAL}[window]\nsize = 4\nhopp = 2\n");
        let errs = parse(&text).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("hopp"), "{}", errs[0]);
    }

    #[test]
    fn semantic_checks_collect_together() {
        let text = "[model]\npath = \"m\"\n[source]\nkind = \"simulated\"\nrate_hz = -1.0\n\
                    channels = 0\n[window]\nsize = 0\n";
        let errs = parse(text).unwrap_err().0;
        let fields: Vec<&str> = errs.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["source.rate_hz", "source.channels", "window.size"]
        );
    }

    #[test]
    fn invalid_toml_names_the_line() {
        let errs = parse("[model]\npath = \n").unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert!(errs[0].field.starts_with("line "), "{}", errs[0]);
    }

    #[test]
    fn missing_sections_are_named() {
        let errs = parse("device_id = \"d\"\n").unwrap_err().0;
        let fields: Vec<&str> = errs.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, vec!["model", "source"]);
    }

    #[test]
    fn preprocess_steps_parse_in_order() {
        let text = format!(
            "{MINIMAL}[[preprocess]]\nop = \"missing\"\npolicy = \"hold_last\"\n\
             [[preprocess]]\nop = \"scale\"\nfactor = [1.0, 2.0]\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.preprocess.len(), 2);
        assert_eq!(
            c.preprocess[1],
            PreprocessStep::Scale {
                factor: PerChannel::Each(vec![1.0, 2.0]),
                offset: PerChannel::One(0.0)
            }
        );
    }

    #[test]
    fn batching_moved_to_the_mqtt_sink_and_the_old_keys_still_work() {
        let old = parse(&format!(
            "{MINIMAL}[policy]\nbatch_max_records = 4\nbatch_max_ms = 50\n[[sink]]\nkind = \"mqtt\"\n"
        ))
        .unwrap();
        let SinkConfig::Mqtt(m) = &old.sink[0] else {
            panic!("{:?}", old.sink)
        };
        assert_eq!((m.max_records(), m.max_wait().as_millis()), (4, 50));
        let new = parse(&format!(
            "{MINIMAL}[policy]\nbatch_max_records = 4\n[[sink]]\nkind = \"mqtt\"\nbatch_max_records = 8\n"
        ))
        .unwrap();
        let SinkConfig::Mqtt(m) = &new.sink[0] else {
            panic!()
        };
        assert_eq!(m.max_records(), 8);
        let errs = parse(&format!(
            "{MINIMAL}[[sink]]\nkind = \"stdout\"\n[[sink]]\nkind = \"mqtt\"\nbatch_max_records = 0\n"
        ))
        .unwrap_err();
        assert_eq!(errs.0[0].field, "sink[1].batch_max_records");
    }

    #[test]
    fn use_broker_adds_a_sink_and_checks_the_url() {
        let mut c = parse(MINIMAL).unwrap();
        c.use_broker("mqtt://b:1884").unwrap();
        assert!(matches!(c.sink[1], SinkConfig::Mqtt(_)));
        let err = c.use_broker("http://b").unwrap_err();
        assert_eq!(err.0[0].field, "mqtt.broker");
    }
}
