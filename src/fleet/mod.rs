//! Running a fleet: signed model updates with rollback, remote commands,
//! hot reload and Home Assistant discovery, all through the broker the
//! device already talks to.
//!
//! - `wire.rs`: orders, chunks, replies; Ed25519 keys and signatures;
//! - `store.rs`: the state directory (models, which one runs, the update
//!   journal, settings, seen nonces), written so power loss is harmless;
//! - `update.rs`: receiving and verifying an update's chunks;
//! - `controller.rs`: the thread that carries orders out and hands new
//!   stages to the pipeline (`pipeline::swap`);
//! - `homeassistant.rs`: discovery configs and the JSON state topic;
//! - this file: `[remote]`, and choosing the model a device starts with.

mod controller;
pub mod homeassistant;
pub mod store;
pub mod update;
pub mod wire;

use std::path::PathBuf;

use serde::Deserialize;

pub use controller::{
    apply_settings as controller_settings, discovery_messages, reference_pair, Controller,
    FleetSetup,
};
pub use homeassistant::HomeAssistantConfig;
pub use store::{Current, Entry, Journal, Phase, Store};

use crate::config::Config;
use crate::model::ModelFile;
use crate::problem::Problems;

/// `[remote]`: model updates and commands over MQTT.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// The public key (`edgeinfer-host keygen`) that must sign updates and
    /// commands; relative to the config file.
    #[serde(default)]
    pub public_key: Option<PathBuf>,
    /// Also take unsigned updates and commands (a warning at every start).
    #[serde(default)]
    pub allow_unsigned: bool,
    /// Where models, the update journal and settings are kept; default
    /// `fleet` beside the outbox directory.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The largest update accepted, in bytes.
    #[serde(default = "default_max_update")]
    pub max_update_bytes: u64,
    /// Failed inferences in a row, right after a swap, that roll it back.
    #[serde(default = "default_rollback_after")]
    pub rollback_after: u32,
    /// Orders signed more than this many seconds away from the device's
    /// clock are refused (with their nonces, against replays).
    #[serde(default = "default_order_window")]
    pub order_window_s: u64,
    /// An update with no chunk for this many seconds is abandoned.
    #[serde(default = "default_chunk_timeout")]
    pub chunk_timeout_s: f64,
    /// Reload the model when its file (`[model] path`) is replaced.
    #[serde(default = "default_true")]
    pub watch_model: bool,
}

fn default_max_update() -> u64 {
    64 << 20
}
fn default_rollback_after() -> u32 {
    3
}
fn default_order_window() -> u64 {
    300
}
fn default_chunk_timeout() -> f64 {
    30.0
}
fn default_true() -> bool {
    true
}

impl Default for RemoteConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl RemoteConfig {
    /// Checks `[remote]`, reading the key file as the device will.
    pub fn validate(&self, p: &mut Problems) {
        match &self.public_key {
            Some(k) => {
                if let Err(e) = wire::read_public_key(&p.origin().resolve(k)) {
                    p.push("remote.public_key", e.to_string());
                }
            }
            None if !self.allow_unsigned => p.push(
                "remote.public_key",
                "expected the public key file from `edgeinfer-host keygen` (or allow_unsigned = true)",
            ),
            None => {}
        }
        p.at_least_one(u64::from(self.rollback_after), "remote.rollback_after");
        p.at_least_one(self.max_update_bytes, "remote.max_update_bytes");
        p.check(
            self.chunk_timeout_s.is_finite() && self.chunk_timeout_s > 0.0,
            "remote.chunk_timeout_s",
            || format!("expected seconds above 0, found {}", self.chunk_timeout_s),
        );
    }
}

impl Config {
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
}

/// The model a device starts with, and what the start has to report.
#[derive(Debug)]
pub struct Startup {
    /// The model to run.
    pub file: ModelFile,
    /// Its store entry (version from the store or its metadata).
    pub entry: Entry,
    /// The model before it, for a rollback.
    pub previous: Option<Entry>,
    /// An update on probation: its id (the pipeline goes back to
    /// `previous` if it fails).
    pub probation: Option<String>,
    /// Replies to send once connected: updates a restart interrupted.
    pub replies: Vec<wire::Reply>,
}

/// Chooses the start model: the store's (checked by its sha256), unless
/// the config's file was replaced since; an update cut short by a restart
/// is ended here, and reported.
pub fn startup(config: &Config, store: &Store) -> Result<Startup, crate::pipeline::BuildError> {
    let factory = crate::pipeline::model_file(config, None)?;
    let factory_sha = factory.sha256();
    let factory_entry = Entry {
        version: crate::pipeline::model_version(&factory, &factory_sha),
        sha256: factory_sha.clone(),
    };
    let mut replies = Vec::new();
    let mut probation = None;
    let current = store.current();
    let journal = store.journal();
    let reply = |id: &str, outcome: &str, detail: String, running: &Entry| wire::Reply {
        id: id.into(),
        device: config.device_id.clone(),
        outcome: outcome.into(),
        detail,
        model_sha256: running.sha256.clone(),
        model_version: running.version.clone(),
        data: None,
    };
    let current = match current {
        Some(c) if c.factory_sha256 == factory_sha => Some(c),
        Some(_) => {
            log::warn!(
                "{}: replaced since the last start: it runs instead of the stored model",
                factory.origin()
            );
            let _ = store.set_journal(None);
            None
        }
        None => None,
    };
    let Some(current) = current else {
        if let Some(j) = journal {
            replies.push(reply(
                &j.id,
                "interrupted",
                format!(
                    "the device restarted while {} the update; it runs its previous model",
                    phase_name(j.phase)
                ),
                &factory_entry,
            ));
            store.clear_incoming();
            let _ = store.set_journal(None);
        }
        return Ok(Startup {
            file: factory,
            entry: factory_entry,
            previous: None,
            probation: None,
            replies,
        });
    };
    if let Some(j) = &journal {
        match j.phase {
            Phase::Probation => probation = Some(j.id.clone()),
            phase => {
                replies.push(reply(
                    &j.id,
                    "interrupted",
                    format!(
                        "the device restarted while {} the update; it runs its previous model",
                        phase_name(phase)
                    ),
                    &current.running,
                ));
                store.clear_incoming();
                let _ = store.set_journal(None);
            }
        }
    }
    match store.read_model(&current.running) {
        Ok(file) => Ok(Startup {
            file,
            entry: current.running,
            previous: current.previous,
            probation,
            replies,
        }),
        Err(why) => {
            // Only a damaged disk gets here: the store syncs a model before
            // naming it.
            log::error!("stored model unusable ({why}); starting with the previous one");
            let fallback = current
                .previous
                .as_ref()
                .and_then(|p| store.read_model(p).ok().map(|f| (f, p.clone())));
            let (file, entry) = fallback.unwrap_or((factory, factory_entry));
            if let Some(j) = &journal {
                replies.push(reply(
                    &j.id,
                    "rolled_back",
                    format!("the new model could not be read at start: {why}"),
                    &entry,
                ));
            }
            let _ = store.set_journal(None);
            let _ = store.set_current(&Current {
                running: entry.clone(),
                previous: None,
                factory_sha256: factory_sha,
            });
            Ok(Startup {
                file,
                entry,
                previous: None,
                probation: None,
                replies,
            })
        }
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Receiving => "receiving",
        Phase::Applying => "applying",
        Phase::Probation => "testing",
    }
}
