//! The embedded broker (rumqttd): `edgeinfer broker`, and `[broker]
//! embedded = true` beside a pipeline, so a board with no infrastructure
//! can serve its own subscribers. Plain MQTT 3.1.1, no TLS.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::problem::Problems;

/// `[broker]`: the embedded MQTT broker.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Start a broker in this process beside the pipeline.
    #[serde(default)]
    pub embedded: bool,
    /// Address it listens on; default `0.0.0.0:1883`.
    #[serde(default)]
    pub listen: Option<String>,
}

/// Where the embedded broker listens unless `listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:1883";

impl BrokerConfig {
    /// Checks `[broker]`.
    pub fn validate(&self, p: &mut Problems) {
        if self.embedded && !cfg!(feature = "broker") {
            p.push(
                "broker.embedded",
                "this build has no embedded broker (feature `broker`)",
            );
        }
        if let Some(l) = &self.listen {
            if let Err(e) = parse_listen(l) {
                p.push("broker.listen", e.to_string());
            }
        }
    }

    /// Starts the broker in a background thread when `embedded` is set.
    pub fn start(&self) -> Result<Option<std::thread::JoinHandle<()>>, BrokerError> {
        if !self.embedded {
            return Ok(None);
        }
        let addr = parse_listen(self.listen.as_deref().unwrap_or(DEFAULT_LISTEN))?;
        spawn(addr).map(Some)
    }
}

/// Errors of the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is not `HOST:PORT`.
    #[error("expected an address like 0.0.0.0:1883, found {0:?}")]
    Listen(String),
    /// rumqttd failed.
    #[error("embedded broker: {0}")]
    Broker(String),
}

#[cfg(feature = "broker")]
fn config(listen: SocketAddr) -> Result<rumqttd::Config, BrokerError> {
    let text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 10485760
max_segment_count = 10

[v4.1]
name = "edgeinfer"
listen = "{listen}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 1048576
    max_inflight_count = 100
    dynamic_filters = true
"#
    );
    toml::from_str(&text).map_err(|e| BrokerError::Broker(e.to_string()))
}

/// Parses a listen address.
pub fn parse_listen(listen: &str) -> Result<SocketAddr, BrokerError> {
    listen
        .parse()
        .map_err(|_| BrokerError::Listen(listen.to_string()))
}

/// rumqttd's tracing events as `log` records. Without a subscriber,
/// tracing would log every span rumqttd opens — one per routed packet, at
/// ERROR level — so spans are dropped here, and the events that report a
/// client leaving (normal operation) are demoted to info. Real errors keep
/// their level.
#[cfg(feature = "broker")]
mod tracing_to_log {
    use std::fmt::Write as _;

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    /// Events of a client leaving (or a port probe that connects and
    /// closes): routine, whatever level rumqttd gives them.
    const ROUTINE: &[&str] = &[
        "disconnected",
        "connection-stop",
        "router-drop",
        "no-connection id",
    ];
    /// Errors that only say a peer went away.
    const PEER_GONE: &[&str] = &[
        "ConnectionAborted",
        "ConnectionReset",
        "connection closed by peer",
    ];

    fn routine(t: &Text) -> bool {
        ROUTINE.iter().any(|r| t.message.starts_with(r))
            || PEER_GONE.iter().any(|p| t.fields.contains(p))
    }

    pub(super) struct Forward;

    #[derive(Default)]
    struct Text {
        message: String,
        fields: String,
    }

    impl Visit for Text {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.message, "{value:?}");
            } else {
                let _ = write!(self.fields, " {}={value:?}", field.name());
            }
        }
    }

    fn level(l: &Level) -> log::Level {
        match *l {
            Level::ERROR => log::Level::Error,
            Level::WARN => log::Level::Warn,
            Level::INFO => log::Level::Info,
            Level::DEBUG => log::Level::Debug,
            Level::TRACE => log::Level::Trace,
        }
    }

    impl Subscriber for Forward {
        fn enabled(&self, m: &Metadata<'_>) -> bool {
            // Demoted events are filtered again by the logger itself.
            m.is_event() && log::log_enabled!(target: "rumqttd", level(m.level()))
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let m = event.metadata();
            let mut text = Text::default();
            event.record(&mut text);
            let mut lvl = level(m.level());
            if routine(&text) {
                lvl = lvl.max(log::Level::Info);
            }
            log::logger().log(
                &log::Record::builder()
                    .target(m.target())
                    .level(lvl)
                    .args(format_args!("{}{}", text.message, text.fields))
                    .build(),
            );
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    /// Installs the forwarder (once per process; later calls do nothing).
    pub(super) fn install() {
        let _ = tracing::subscriber::set_global_default(Forward);
    }
}

/// Runs a broker on `listen` until the process ends.
#[cfg(feature = "broker")]
pub fn run(listen: SocketAddr) -> Result<(), BrokerError> {
    tracing_to_log::install();
    rumqttd::Broker::new(config(listen)?)
        .start()
        .map_err(|e| BrokerError::Broker(e.to_string()))
}

/// Starts a broker on `listen` in a background thread.
#[cfg(feature = "broker")]
pub fn spawn(listen: SocketAddr) -> Result<std::thread::JoinHandle<()>, BrokerError> {
    let config = config(listen)?;
    tracing_to_log::install();
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            if let Err(e) = rumqttd::Broker::new(config).start() {
                log::error!("embedded broker stopped: {e}");
            }
        })
        .map_err(|e| BrokerError::Broker(e.to_string()))
}

#[cfg(not(feature = "broker"))]
fn spawn(_: SocketAddr) -> Result<std::thread::JoinHandle<()>, BrokerError> {
    Err(BrokerError::Broker(
        "this build has no embedded broker (feature `broker`)".into(),
    ))
}
