//! The embedded broker (rumqttd): `edgeinfer broker`, and `[broker]
//! embedded = true` beside a pipeline, so a board with no infrastructure
//! can serve its own subscribers. Plain MQTT 3.1.1, no TLS.

use std::net::SocketAddr;

/// Errors of the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is not `HOST:PORT`.
    #[error("broker.listen: expected an address like 0.0.0.0:1883, found {0:?}")]
    Listen(String),
    /// rumqttd failed.
    #[error("embedded broker: {0}")]
    Broker(String),
}

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

/// Runs a broker on `listen` until the process ends.
pub fn run(listen: SocketAddr) -> Result<(), BrokerError> {
    rumqttd::Broker::new(config(listen)?)
        .start()
        .map_err(|e| BrokerError::Broker(e.to_string()))
}

/// Starts a broker on `listen` in a background thread.
pub fn spawn(listen: SocketAddr) -> Result<std::thread::JoinHandle<()>, BrokerError> {
    let config = config(listen)?;
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            if let Err(e) = rumqttd::Broker::new(config).start() {
                log::error!("embedded broker stopped: {e}");
            }
        })
        .map_err(|e| BrokerError::Broker(e.to_string()))
}
