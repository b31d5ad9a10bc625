//! `[remote]`: whether and how a device takes updates and commands.

use std::path::PathBuf;

use serde::Deserialize;

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
                if let Err(e) = super::wire::read_public_key(&p.origin().resolve(k)) {
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
