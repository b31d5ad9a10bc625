//! The MQTT link: one rumqttc connection per pipeline, driven by its own
//! thread, shared by the `mqtt` source and the `mqtt` sink. It only moves
//! bytes: result messages from the outbox out, sensor messages (topic,
//! payload) in to the source, which decodes them.
//!
//! - this file: `[mqtt]` (settings, defaults, validation), broker URLs, topics;
//! - `options.rs`: rumqttc options from `[mqtt]` (credentials, TLS);
//! - `link.rs`: the network thread, the outbox publishing;
//! - `shared.rs`: what it shares with the pipeline and the fleet controller.

mod link;
mod options;
mod shared;

use std::path::PathBuf;

use serde::Deserialize;

pub use link::{Delivery, Link, Message};
pub use options::options;
pub use shared::{LinkCounters, Shared};

use crate::outbox::OutboxError;
use crate::problem::{Origin, Problems};

/// `[mqtt]`: the broker connection.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://HOST:PORT` or `mqtts://HOST:PORT` (TLS). Overridden by
    /// `--broker` and the `EDGEINFER_BROKER` environment variable.
    #[serde(default = "default_broker")]
    pub broker: String,
    /// Client id; default `edgeinfer-<device_id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Topic prefix; default `edgeinfer/<device_id>`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Keep-alive in seconds: 0 (off) or at least 1.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: f64,
    /// QoS of result messages: 0, 1 or 2.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Largest MQTT packet sent or accepted, in bytes (at least 128).
    #[serde(default = "default_max_packet")]
    pub max_packet_bytes: usize,
    /// Result messages published and not yet acknowledged, at most (at least 1).
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// First reconnect delay in milliseconds; doubles per failure.
    #[serde(default = "default_backoff_min")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay in milliseconds.
    #[serde(default = "default_backoff_max")]
    pub reconnect_max_ms: u64,
    /// Seconds between `<prefix>/metrics` messages; 0 turns them off.
    #[serde(default = "default_metrics")]
    pub metrics_interval_s: f64,
    /// Seconds to wait at exit for the outbox to drain.
    #[serde(default = "default_grace")]
    pub grace_s: f64,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (first line), relative to the config file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// CA certificate (PEM) to trust for `mqtts://`; relative to the config file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

fn default_broker() -> String {
    "mqtt://localhost:1883".into()
}
fn default_keep_alive() -> f64 {
    30.0
}
fn default_qos() -> u8 {
    1
}
fn default_max_packet() -> usize {
    1 << 20
}
fn default_inflight() -> u16 {
    32
}
fn default_backoff_min() -> u64 {
    250
}
fn default_backoff_max() -> u64 {
    30_000
}
fn default_metrics() -> f64 {
    60.0
}
fn default_grace() -> f64 {
    10.0
}

/// Errors setting up the link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A setting is wrong.
    #[error("{field}: {message}")]
    Config {
        /// Dotted field name.
        field: String,
        /// What was expected.
        message: String,
    },
    /// The outbox could not open.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The network thread could not start.
    #[error("mqtt: cannot start the network thread: {0}")]
    Thread(std::io::Error),
}

/// What the link needs to know beyond `[mqtt]`.
#[derive(Debug, Clone)]
pub struct LinkSetup {
    /// The connection settings.
    pub config: MqttConfig,
    /// Device id.
    pub device_id: String,
    /// Directory relative paths resolve against.
    pub base_dir: PathBuf,
    /// Outbox settings (dir already resolved).
    pub outbox: crate::outbox::OutboxConfig,
    /// Topic filters to subscribe to (the `mqtt` source), if any.
    pub subscriptions: Vec<String>,
    /// Topics (exact names, no wildcards) whose messages go to the fleet
    /// controller instead of the source.
    pub control: Vec<String>,
    /// Retained JSON for `<prefix>/info`.
    pub info: String,
}

/// A setting the link cannot use: `(field, what was expected)`.
pub type Misfit = (&'static str, String);

/// Credentials and TLS material read from the files and environment the
/// config names.
#[derive(Debug, Clone, Default)]
pub(crate) struct Secrets {
    /// The password (empty when none is configured).
    pub password: Option<String>,
    /// CA certificate PEM, for `mqtts://`.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key PEM, for mutual TLS.
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

impl MqttConfig {
    /// Checks `[mqtt]`, reading the files and environment variables it
    /// names, exactly as the link will when it starts.
    pub fn validate(&self, p: &mut Problems) {
        if let Err(e) = BrokerUrl::parse(&self.broker) {
            p.push("mqtt.broker", e.to_string());
        }
        for (field, message) in self.settings_misfits() {
            p.push(field, message);
        }
        if let Err((field, message)) = self.secrets(p.origin()) {
            p.push(field, message);
        }
        if let Some(prefix) = &self.prefix {
            if let Err(why) = topic_name(prefix) {
                p.push("mqtt.prefix", why);
            }
        }
        if self.client_id.as_deref().is_some_and(str::is_empty) {
            p.push("mqtt.client_id", "expected a non-empty client id");
        }
    }

    /// Checks of the numbers, every misfit found.
    fn settings_misfits(&self) -> Vec<Misfit> {
        let mut out = Vec::new();
        let mut check = |ok: bool, field: &'static str, message: String| {
            if !ok {
                out.push((field, message));
            }
        };
        let k = self.keep_alive_s;
        check(
            k == 0.0 || (k.is_finite() && k >= 1.0),
            "mqtt.keep_alive_s",
            format!("expected 0 (off) or at least 1 second, found {k}"),
        );
        check(
            self.qos <= 2,
            "mqtt.qos",
            format!("expected 0, 1 or 2, found {}", self.qos),
        );
        check(
            self.inflight >= 1,
            "mqtt.inflight",
            format!("expected at least 1, found {}", self.inflight),
        );
        check(
            self.max_packet_bytes >= 128,
            "mqtt.max_packet_bytes",
            format!("expected at least 128, found {}", self.max_packet_bytes),
        );
        check(
            self.reconnect_min_ms > 0 && self.reconnect_max_ms >= self.reconnect_min_ms,
            "mqtt.reconnect_min_ms",
            format!(
                "expected 0 < reconnect_min_ms <= reconnect_max_ms, found {} and {}",
                self.reconnect_min_ms, self.reconnect_max_ms
            ),
        );
        for (v, field) in [
            (self.metrics_interval_s, "mqtt.metrics_interval_s"),
            (self.grace_s, "mqtt.grace_s"),
        ] {
            check(
                v.is_finite() && v >= 0.0,
                field,
                format!("expected a number of seconds >= 0, found {v}"),
            );
        }
        out
    }

    /// Reads the password and TLS material the config names; the first
    /// thing that cannot be read (or is missing) as an error.
    pub(crate) fn secrets(&self, origin: &Origin) -> Result<Secrets, Misfit> {
        let read = |p: &PathBuf, field: &'static str| {
            let path = origin.resolve(p);
            std::fs::read(&path)
                .map_err(|e| (field, format!("cannot read {}: {e}", path.display())))
        };
        let mut s = Secrets::default();
        if self.username.is_some() {
            s.password = Some(match (&self.password_file, &self.password_env) {
                (Some(f), _) => String::from_utf8_lossy(&read(f, "mqtt.password_file")?)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
                (None, Some(var)) => std::env::var(var).map_err(|_| {
                    (
                        "mqtt.password_env",
                        format!("environment variable {var} is not set"),
                    )
                })?,
                (None, None) => String::new(),
            });
        }
        let tls = BrokerUrl::parse(&self.broker).is_ok_and(|u| u.tls);
        if !tls {
            return Ok(s);
        }
        if !cfg!(feature = "tls") {
            return Err((
                "mqtt.broker",
                "mqtts:// needs a build with the `tls` feature".into(),
            ));
        }
        s.ca = Some(match &self.ca_file {
            Some(p) => read(p, "mqtt.ca_file")?,
            None => {
                return Err((
                    "mqtt.ca_file",
                    "expected a CA certificate file for mqtts://".into(),
                ))
            }
        });
        s.client_auth = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some((
                read(cert, "mqtt.client_cert")?,
                read(key, "mqtt.client_key")?,
            )),
            (None, None) => None,
            _ => {
                return Err((
                    "mqtt.client_cert",
                    "expected both client_cert and client_key, or neither".into(),
                ))
            }
        };
        Ok(s)
    }

    /// The topic prefix: `prefix`, else `edgeinfer/<device_id>`.
    pub fn prefix_for(&self, device_id: &str) -> String {
        self.prefix
            .clone()
            .unwrap_or_else(|| format!("edgeinfer/{device_id}"))
    }
}

/// Checks that `name` can be the start of topics this device publishes on:
/// not empty, no wildcards (`+`, `#`), no NUL, no empty level.
pub fn topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("expected a topic, found an empty string".into());
    }
    if let Some(c) = name.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
        return Err(format!(
            "expected a topic to publish on, without wildcards, found {c:?} in {name:?}"
        ));
    }
    if name.split('/').any(str::is_empty) {
        return Err(format!(
            "expected a topic without empty levels, found {name:?}"
        ));
    }
    Ok(())
}

/// Why a broker URL is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Neither `mqtt://` nor `mqtts://`.
    #[error("expected mqtt://HOST:PORT or mqtts://HOST:PORT, found {0:?}")]
    Scheme(String),
    /// What follows the last `:` is not a port number.
    #[error("expected a port number after ':', found {0:?}")]
    Port(String),
    /// No host.
    #[error("expected a host name in {0:?}")]
    Host(String),
}

/// A parsed broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// TLS (`mqtts://`).
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port (default 1883, 8883 with TLS).
    pub port: u16,
}

impl BrokerUrl {
    /// Parses `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]`.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(UrlError::Scheme(url.into()));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| UrlError::Port(p.into()))?),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(UrlError::Host(url.into()));
        }
        Ok(BrokerUrl {
            tls,
            host: host.into(),
            port,
        })
    }
}

/// The topics of one device.
#[derive(Debug, Clone)]
pub struct Topics {
    /// `<prefix>/result`
    pub result: String,
    /// `<prefix>/status`
    pub status: String,
    /// `<prefix>/info`
    pub info: String,
    /// `<prefix>/metrics`
    pub metrics: String,
    /// `<prefix>/error`
    pub error: String,
    /// `<prefix>/cmd`: signed commands and update manifests.
    pub cmd: String,
    /// `<prefix>/update`: model update chunks.
    pub update: String,
    /// `<prefix>/reply`: answers to commands and updates.
    pub reply: String,
    /// `<prefix>/state`: the latest result as compact JSON (Home Assistant).
    pub state: String,
}

impl Topics {
    /// Topics under `prefix`.
    pub fn new(prefix: &str) -> Self {
        let t = |s: &str| format!("{prefix}/{s}");
        Topics {
            result: t("result"),
            status: t("status"),
            info: t("info"),
            metrics: t("metrics"),
            error: t("error"),
            cmd: t("cmd"),
            update: t("update"),
            reply: t("reply"),
            state: t("state"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            BrokerUrl::parse("mqtt://localhost:1884").unwrap(),
            BrokerUrl {
                tls: false,
                host: "localhost".into(),
                port: 1884
            }
        );
        assert_eq!(BrokerUrl::parse("mqtts://b.example").unwrap().port, 8883);
        assert_eq!(
            BrokerUrl::parse("http://x"),
            Err(UrlError::Scheme("http://x".into()))
        );
        assert_eq!(
            BrokerUrl::parse("mqtt://x:port"),
            Err(UrlError::Port("port".into()))
        );
        assert_eq!(
            BrokerUrl::parse("mqtt://:1"),
            Err(UrlError::Host("mqtt://:1".into()))
        );
    }

    fn misfits(text: &str) -> Vec<String> {
        let config: MqttConfig = toml::from_str(text).unwrap();
        let origin = Origin::new("t.toml", std::path::Path::new("/nonexistent"));
        let mut p = Problems::new(&origin);
        config.validate(&mut p);
        p.into_vec().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn every_setting_the_link_refuses_is_a_config_problem() {
        assert!(misfits("").is_empty());
        assert_eq!(misfits("keep_alive_s = 0.5"), vec!["mqtt.keep_alive_s"]);
        assert_eq!(misfits("inflight = 0"), vec!["mqtt.inflight"]);
        assert_eq!(
            misfits("max_packet_bytes = 100"),
            vec!["mqtt.max_packet_bytes"]
        );
        assert_eq!(
            misfits("reconnect_min_ms = 500\nreconnect_max_ms = 100"),
            vec!["mqtt.reconnect_min_ms"]
        );
        if cfg!(feature = "tls") {
            assert_eq!(misfits("broker = \"mqtts://b:8883\""), vec!["mqtt.ca_file"]);
            assert_eq!(
                misfits("broker = \"mqtts://b:8883\"\nca_file = \"ca.pem\""),
                vec!["mqtt.ca_file"]
            );
        }
        assert_eq!(
            misfits("username = \"u\"\npassword_env = \"EDGEINFER_TEST_SURELY_UNSET_VAR\""),
            vec!["mqtt.password_env"]
        );
        assert_eq!(misfits("broker = \"tcp://x\""), vec!["mqtt.broker"]);
    }
}
