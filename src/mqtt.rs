//! The MQTT link: one rumqttc connection per pipeline, driven by its own
//! thread, shared by the `mqtt` source and the `mqtt` sink.
//!
//! The network thread is the only one that talks to rumqttc. It publishes
//! from the [`Outbox`] (oldest first, a bounded number in flight), deletes
//! a message only when its PUBACK arrives, and after every (re)connect
//! starts again from the oldest unacknowledged message: rumqttc forgets
//! unacknowledged publishes when it reconnects without the session, so the
//! outbox, not rumqttc, guarantees delivery. Reconnects back off
//! exponentially with jitter.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde::Deserialize;

use crate::outbox::{Outbox, OutboxError};
use crate::rng::Rng;
use crate::source::lines::parse_line;
use crate::source::Sample;

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
    /// Largest MQTT packet sent or accepted, in bytes.
    #[serde(default = "default_max_packet")]
    pub max_packet_bytes: usize,
    /// Result messages published and not yet acknowledged, at most.
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
pub enum MqttError {
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
}

fn bad(field: &str, message: impl Into<String>) -> MqttError {
    MqttError::Config {
        field: field.into(),
        message: message.into(),
    }
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
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "expected mqtt://HOST:PORT or mqtts://HOST:PORT, found {url:?}"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("expected a port number after ':', found {p:?}"))?,
            ),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(format!("expected a host name in {url:?}"));
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
        }
    }
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

/// Decodes one sensor payload into samples.
pub fn decode_payload(
    sub: &Subscription,
    payload: &[u8],
    now_ms: u64,
) -> Result<Vec<Sample>, String> {
    let one = |values: Vec<f32>| {
        vec![Sample {
            ts_ms: now_ms,
            values,
        }]
    };
    match sub.format {
        PayloadFormat::Json | PayloadFormat::Csv => {
            let text =
                std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8".to_string())?;
            let format = if sub.format == PayloadFormat::Json {
                crate::config::LineFormat::Json
            } else {
                crate::config::LineFormat::Csv
            };
            Ok(one(parse_line(format, &sub.fields, text.trim())?))
        }
        PayloadFormat::F32le => {
            if payload.is_empty() || !payload.len().is_multiple_of(4) {
                return Err(format!(
                    "expected a multiple of 4 bytes of little-endian f32, found {} bytes",
                    payload.len()
                ));
            }
            Ok(one(payload
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()))
        }
        PayloadFormat::Postcard => {
            let frame =
                crate::schema::SensorFrame::from_postcard(payload).map_err(|e| e.to_string())?;
            Ok(frame
                .samples
                .into_iter()
                .map(|(ts_ms, values)| Sample { ts_ms, values })
                .collect())
        }
    }
}

/// Link counters, for the metrics topic.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Result messages acknowledged by the broker.
    pub acked: AtomicU64,
    /// Result messages published (including republished ones).
    pub published: AtomicU64,
    /// Bytes of result payloads published.
    pub bytes_published: AtomicU64,
    /// Sensor payload bytes received.
    pub bytes_in: AtomicU64,
    /// Sensor payloads that did not decode.
    pub bad_payloads: AtomicU64,
    /// Successful connections.
    pub connects: AtomicU64,
    /// Publish-to-PUBACK latencies in microseconds, recent ones.
    pub ack_latency_us: Mutex<VecDeque<u64>>,
}

/// State shared between the network thread and its users.
#[derive(Debug)]
pub struct Shared {
    /// Messages awaiting acknowledgement.
    pub outbox: Mutex<Outbox>,
    /// True while connected.
    pub connected: AtomicBool,
    /// Raised to shut the link down.
    pub closing: AtomicBool,
    /// Counters.
    pub counters: LinkCounters,
    /// Extra fields for the metrics message, set by the pipeline.
    pub metrics: Mutex<serde_json::Map<String, serde_json::Value>>,
    /// Error reports to publish on `<prefix>/error`.
    pub errors: Mutex<VecDeque<String>>,
}

impl Shared {
    /// Locks the outbox (a poisoned lock still holds consistent data).
    pub fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a JSON error report for `<prefix>/error`.
    pub fn report_error(&self, reason: &str) {
        let mut q = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() < 1000 {
            q.push_back(
                serde_json::json!({ "ts_ms": crate::source::now_ms(), "reason": reason })
                    .to_string(),
            );
        }
    }
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
    /// Sensor subscriptions (the `mqtt` source), if any.
    pub subscriptions: Vec<Subscription>,
    /// Retained JSON for `<prefix>/info`.
    pub info: String,
}

/// A running link.
pub struct Link {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The device's topics.
    pub topics: Topics,
    thread: Option<JoinHandle<()>>,
    samples: Option<Receiver<Result<Sample, String>>>,
    grace: Duration,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("topics", &self.topics)
            .finish()
    }
}

fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

fn read_file(base: &Path, p: &Path, field: &str) -> Result<Vec<u8>, MqttError> {
    let path = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    std::fs::read(&path).map_err(|e| bad(field, format!("cannot read {}: {e}", path.display())))
}

/// Checks `[mqtt]` values and builds rumqttc options.
pub fn options(setup: &LinkSetup, topics: &Topics) -> Result<MqttOptions, MqttError> {
    let c = &setup.config;
    let url = BrokerUrl::parse(&c.broker).map_err(|m| bad("mqtt.broker", m))?;
    if !(c.keep_alive_s == 0.0 || (c.keep_alive_s >= 1.0 && c.keep_alive_s.is_finite())) {
        return Err(bad(
            "mqtt.keep_alive_s",
            format!(
                "expected 0 (off) or at least 1 second, found {}",
                c.keep_alive_s
            ),
        ));
    }
    if c.qos > 2 {
        return Err(bad(
            "mqtt.qos",
            format!("expected 0, 1 or 2, found {}", c.qos),
        ));
    }
    if c.inflight == 0 {
        return Err(bad("mqtt.inflight", "expected at least 1, found 0"));
    }
    if c.max_packet_bytes < 128 {
        return Err(bad(
            "mqtt.max_packet_bytes",
            format!("expected at least 128, found {}", c.max_packet_bytes),
        ));
    }
    if c.reconnect_min_ms == 0 || c.reconnect_max_ms < c.reconnect_min_ms {
        return Err(bad(
            "mqtt.reconnect_min_ms",
            "expected 0 < reconnect_min_ms <= reconnect_max_ms",
        ));
    }
    let client_id = c
        .client_id
        .clone()
        .unwrap_or_else(|| format!("edgeinfer-{}", setup.device_id));
    let mut o = MqttOptions::new(client_id, url.host.clone(), url.port);
    o.set_keep_alive(Duration::from_secs_f64(c.keep_alive_s));
    o.set_max_packet_size(c.max_packet_bytes, c.max_packet_bytes);
    o.set_clean_session(true);
    o.set_inflight(c.inflight.saturating_add(8));
    o.set_last_will(LastWill::new(
        &topics.status,
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &c.username {
        let password = match (&c.password_file, &c.password_env) {
            (Some(f), _) => {
                let bytes = read_file(&setup.base_dir, f, "mqtt.password_file")?;
                String::from_utf8_lossy(&bytes)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            }
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                bad(
                    "mqtt.password_env",
                    format!("environment variable {var} is not set"),
                )
            })?,
            (None, None) => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    if url.tls {
        tls(setup, &mut o)?;
    }
    Ok(o)
}

#[cfg(feature = "tls")]
fn tls(setup: &LinkSetup, o: &mut MqttOptions) -> Result<(), MqttError> {
    let c = &setup.config;
    let ca = match &c.ca_file {
        Some(p) => read_file(&setup.base_dir, p, "mqtt.ca_file")?,
        None => {
            return Err(bad(
                "mqtt.ca_file",
                "expected a CA certificate file for mqtts://",
            ))
        }
    };
    let client_auth = match (&c.client_cert, &c.client_key) {
        (Some(cert), Some(key)) => Some((
            read_file(&setup.base_dir, cert, "mqtt.client_cert")?,
            read_file(&setup.base_dir, key, "mqtt.client_key")?,
        )),
        (None, None) => None,
        _ => {
            return Err(bad(
                "mqtt.client_cert",
                "expected both client_cert and client_key, or neither",
            ))
        }
    };
    // rustls needs its crypto provider chosen once per process: ring,
    // which cross-compiles to ARM without the aws-lc toolchain.
    let _ = rustls::crypto::ring::default_provider().install_default();
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        },
    ));
    Ok(())
}

#[cfg(not(feature = "tls"))]
fn tls(_: &LinkSetup, _: &mut MqttOptions) -> Result<(), MqttError> {
    Err(bad(
        "mqtt.broker",
        "mqtts:// needs a build with the `tls` feature",
    ))
}

impl Link {
    /// Opens the outbox, connects (in the background) and starts the
    /// network thread.
    pub fn start(setup: LinkSetup) -> Result<Link, MqttError> {
        let prefix = setup
            .config
            .prefix
            .clone()
            .unwrap_or_else(|| format!("edgeinfer/{}", setup.device_id));
        let topics = Topics::new(&prefix);
        let opts = options(&setup, &topics)?;
        let dir = setup
            .outbox
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("outbox"));
        let outbox = Outbox::open(&dir, setup.outbox.clone())?;
        let shared = Arc::new(Shared {
            outbox: Mutex::new(outbox),
            connected: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            counters: LinkCounters::default(),
            metrics: Mutex::default(),
            errors: Mutex::default(),
        });
        let (client, mut connection) = Client::new(opts, 64);
        // Small result messages must not wait for Nagle's algorithm and the
        // broker's delayed ACK (about 40 ms a message otherwise).
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        connection.eventloop.set_network_options(net);
        let (tx, rx) = std::sync::mpsc::sync_channel(1024);
        let samples = (!setup.subscriptions.is_empty()).then_some(rx);
        let grace = Duration::from_secs_f64(setup.config.grace_s.max(0.0));
        let worker = Worker {
            client,
            shared: shared.clone(),
            topics: topics.clone(),
            setup,
            samples: tx,
        };
        let thread = std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || worker.run(connection))
            .map_err(|e| bad("mqtt", format!("cannot start the network thread: {e}")))?;
        Ok(Link {
            shared,
            topics,
            thread: Some(thread),
            samples,
            grace,
        })
    }

    /// The receiving end for the `mqtt` source (once).
    pub fn take_samples(&mut self) -> Option<Receiver<Result<Sample, String>>> {
        self.samples.take()
    }

    /// Waits up to the grace period for the outbox to drain, publishes
    /// `offline`, disconnects and stops the thread. What is still
    /// unacknowledged stays on disk for the next start.
    pub fn close(&mut self) {
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline && !self.shared.outbox().is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.shared.outbox().len();
        if left > 0 {
            log::warn!("mqtt: {left} result messages still unacknowledged; kept in the outbox for the next start");
        }
        self.shared.closing.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    client: Client,
    shared: Arc<Shared>,
    topics: Topics,
    setup: LinkSetup,
    samples: SyncSender<Result<Sample, String>>,
}

/// Tracks what was handed to rumqttc in this connection.
#[derive(Default)]
struct Session {
    /// Requests in the order rumqttc will report them as sent; `Some(id)`
    /// for outbox messages.
    awaiting: VecDeque<Option<(u64, Instant)>>,
    /// Packet id → outbox id, for messages sent and not yet acknowledged.
    inflight: HashMap<u16, (u64, Instant)>,
    /// Highest outbox id handed over in this connection.
    sent_upto: Option<u64>,
}

impl Worker {
    fn run(mut self, mut connection: Connection) {
        let mut connected = false;
        let mut session = Session::default();
        let mut rng = Rng::new(crate::source::now_ms());
        let min = Duration::from_millis(self.setup.config.reconnect_min_ms);
        let max = Duration::from_millis(self.setup.config.reconnect_max_ms);
        let mut backoff = min;
        let metrics_every = (self.setup.config.metrics_interval_s > 0.0)
            .then(|| Duration::from_secs_f64(self.setup.config.metrics_interval_s));
        let mut next_metrics = Instant::now() + metrics_every.unwrap_or(Duration::ZERO);
        let qos_results = qos(self.setup.config.qos);
        loop {
            if self.shared.closing.load(Ordering::Relaxed) {
                if connected {
                    let _ = self.client.try_publish(
                        &self.topics.status,
                        QoS::AtLeastOnce,
                        true,
                        "offline",
                    );
                    let _ = self.client.try_disconnect();
                    // Let rumqttc write them out.
                    let until = Instant::now() + Duration::from_millis(500);
                    while Instant::now() < until {
                        match connection.recv_timeout(Duration::from_millis(50)) {
                            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => {
                                break
                            }
                            _ => {}
                        }
                    }
                }
                return;
            }
            if connected {
                self.publish_more(&mut session, qos_results);
                self.publish_errors(&mut session);
                if let Some(every) = metrics_every {
                    if Instant::now() >= next_metrics {
                        next_metrics = Instant::now() + every;
                        self.publish_metrics(&mut session);
                    }
                }
            }
            let timeout = if connected {
                Duration::from_millis(10)
            } else {
                // rumqttc's own connection timeout bounds a connect attempt;
                // cutting it short would never let a slow TLS handshake finish.
                Duration::from_secs(30)
            };
            match connection.recv_timeout(timeout) {
                Ok(Ok(event)) => {
                    if let Event::Incoming(Packet::ConnAck(_)) = event {
                        connected = true;
                        backoff = min;
                        session = Session::default();
                        self.shared.connected.store(true, Ordering::Relaxed);
                        self.shared
                            .counters
                            .connects
                            .fetch_add(1, Ordering::Relaxed);
                        log::info!("mqtt: connected to {}", self.setup.config.broker);
                        self.on_connect(&mut session);
                    } else {
                        self.handle(event, &mut session, qos_results);
                    }
                }
                Ok(Err(e)) => {
                    if connected {
                        log::warn!("mqtt: connection lost: {e}");
                    } else {
                        log::debug!("mqtt: cannot connect: {e}");
                    }
                    connected = false;
                    self.shared.connected.store(false, Ordering::Relaxed);
                    session = Session::default();
                    // Full jitter: spreads many devices' reconnects after a broker restart.
                    let wait = backoff.mul_f64(0.5 + 0.5 * rng.uniform());
                    let until = Instant::now() + wait;
                    while Instant::now() < until && !self.shared.closing.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
                    }
                    backoff = (backoff * 2).min(max);
                }
                Err(rumqttc::RecvTimeoutError::Timeout) => {}
                Err(rumqttc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn on_connect(&mut self, session: &mut Session) {
        // Subscribe first: the broker handles a connection's packets in
        // order, so whoever sees `online` knows the subscriptions are active.
        for sub in &self.setup.subscriptions {
            if let Err(e) = self.client.try_subscribe(&sub.filter, QoS::AtLeastOnce) {
                log::error!("mqtt: subscribe {}: {e}", sub.filter);
            }
        }
        // Only requests rumqttc accepted will be reported as sent: keep the
        // `awaiting` queue in step with them.
        let topics = [
            (&self.topics.status, "online".to_string()),
            (&self.topics.info, self.setup.info.clone()),
        ];
        for (topic, payload) in topics {
            if self
                .client
                .try_publish(topic, QoS::AtLeastOnce, true, payload)
                .is_ok()
            {
                session.awaiting.push_back(None);
            }
        }
    }

    fn publish_more(&mut self, session: &mut Session, q: QoS) {
        let window = self.setup.config.inflight as usize;
        while session.inflight.len() + session.awaiting.len() < window {
            let next = {
                let ob = self.shared.outbox();
                ob.next_after(session.sent_upto).map(|id| (id, ob.read(id)))
            };
            let Some((id, payload)) = next else { break };
            let payload = match payload {
                Ok(Some(p)) => p,
                Ok(None) => {
                    session.sent_upto = Some(id);
                    continue;
                }
                Err(e) => {
                    log::error!("mqtt: {e}");
                    break;
                }
            };
            let len = payload.len() as u64;
            match self
                .client
                .try_publish(&self.topics.result, q, false, payload)
            {
                Ok(()) => {
                    session.awaiting.push_back(Some((id, Instant::now())));
                    session.sent_upto = Some(id);
                    let c = &self.shared.counters;
                    c.published.fetch_add(1, Ordering::Relaxed);
                    c.bytes_published.fetch_add(len, Ordering::Relaxed);
                }
                Err(_) => break, // request queue full: the event loop will drain it
            }
        }
    }

    fn publish_errors(&mut self, session: &mut Session) {
        loop {
            let next = self
                .shared
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            let Some(msg) = next else { break };
            if self
                .client
                .try_publish(&self.topics.error, QoS::AtMostOnce, false, msg)
                .is_err()
            {
                break;
            }
            session.awaiting.push_back(None);
        }
    }

    fn publish_metrics(&mut self, session: &mut Session) {
        let c = &self.shared.counters;
        let mut m = self
            .shared
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (depth, dropped) = {
            let ob = self.shared.outbox();
            (ob.len(), ob.dropped())
        };
        let lat: Vec<u64> = c
            .ack_latency_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        let pct = |p: f64| percentile(&lat, p);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (k, v) in [
            ("ts_ms", serde_json::json!(crate::source::now_ms())),
            ("outbox_depth", depth.into()),
            ("outbox_dropped", dropped.into()),
            ("published", get(&c.published).into()),
            ("acked", get(&c.acked).into()),
            ("bytes_published", get(&c.bytes_published).into()),
            ("bytes_in_mqtt", get(&c.bytes_in).into()),
            ("bad_payloads", get(&c.bad_payloads).into()),
            ("connects", get(&c.connects).into()),
            ("puback_p50_us", pct(0.5).into()),
            ("puback_p99_us", pct(0.99).into()),
        ] {
            m.insert(k.into(), v);
        }
        if self
            .client
            .try_publish(
                &self.topics.metrics,
                QoS::AtMostOnce,
                false,
                serde_json::Value::Object(m).to_string(),
            )
            .is_ok()
        {
            session.awaiting.push_back(None);
        }
    }

    fn acked(&self, id: u64, sent: Instant) {
        if let Err(e) = self.shared.outbox().ack(id) {
            log::error!("mqtt: {e}");
        }
        let c = &self.shared.counters;
        c.acked.fetch_add(1, Ordering::Relaxed);
        let mut lat = c.ack_latency_us.lock().unwrap_or_else(|e| e.into_inner());
        if lat.len() >= 4096 {
            lat.pop_front();
        }
        lat.push_back(sent.elapsed().as_micros() as u64);
    }

    fn handle(&mut self, event: Event, session: &mut Session, q: QoS) {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(Some((id, sent))) = session.awaiting.pop_front() {
                    if q == QoS::AtMostOnce {
                        self.acked(id, sent);
                    } else {
                        session.inflight.insert(pkid, (id, sent));
                    }
                }
            }
            Event::Incoming(Packet::PubAck(ack)) if q == QoS::AtLeastOnce => {
                if let Some((id, sent)) = session.inflight.remove(&ack.pkid) {
                    self.acked(id, sent);
                }
            }
            Event::Incoming(Packet::PubComp(comp)) if q == QoS::ExactlyOnce => {
                if let Some((id, sent)) = session.inflight.remove(&comp.pkid) {
                    self.acked(id, sent);
                }
            }
            Event::Incoming(Packet::Publish(p)) => self.on_sensor_message(&p.topic, &p.payload),
            _ => {}
        }
    }

    /// Gives a decoded sample to the source. A full channel means inference
    /// is behind: wait (the broker holds the rest meanwhile), but never past
    /// a shutdown. False when the sample could not be handed over.
    fn hand_over(&self, item: Result<Sample, String>) -> bool {
        let mut item = item;
        loop {
            match self.samples.try_send(item) {
                Ok(()) => return true,
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return false,
                Err(std::sync::mpsc::TrySendError::Full(back)) => {
                    if self.shared.closing.load(Ordering::Relaxed) {
                        return false;
                    }
                    item = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    fn on_sensor_message(&mut self, topic: &str, payload: &[u8]) {
        let c = &self.shared.counters;
        c.bytes_in
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        let Some(sub) = self
            .setup
            .subscriptions
            .iter()
            .find(|s| rumqttc::matches(topic, &s.filter))
        else {
            return;
        };
        match decode_payload(sub, payload, crate::source::now_ms()) {
            Ok(samples) => {
                for s in samples {
                    if !self.hand_over(Ok(s)) {
                        return;
                    }
                }
            }
            Err(reason) => {
                c.bad_payloads.fetch_add(1, Ordering::Relaxed);
                let reason = format!("{topic}: {reason}");
                // Counted, logged and published on the error topic by the
                // pipeline, like any bad record.
                self.hand_over(Err(reason));
            }
        }
    }
}

/// The `p`-quantile (0..1) of `values`, 0 when empty.
pub fn percentile(values: &[u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
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
        assert!(BrokerUrl::parse("http://x").is_err());
        assert!(BrokerUrl::parse("mqtt://x:port").is_err());
        assert!(BrokerUrl::parse("mqtt://:1").is_err());
    }

    #[test]
    fn payload_formats() {
        let sub = |format, fields: &[&str]| Subscription {
            filter: "#".into(),
            format,
            fields: fields.iter().map(|s| s.to_string()).collect(),
        };
        let v = |r: Result<Vec<Sample>, String>| r.unwrap().remove(0).values;
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
        assert!(decode_payload(&sub(PayloadFormat::F32le, &[]), &raw[..5], 5).is_err());
        assert!(decode_payload(&sub(PayloadFormat::Json, &[]), b"\xff", 5).is_err());
        assert!(decode_payload(&sub(PayloadFormat::Postcard, &[]), b"\xff\xff", 5).is_err());
        let frame = crate::schema::SensorFrame::new(vec![(7, vec![1.0]), (8, vec![2.0])]);
        let s =
            decode_payload(&sub(PayloadFormat::Postcard, &[]), &frame.to_postcard(), 5).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[1].ts_ms, s[1].values.clone()), (8, vec![2.0]));
    }

    #[test]
    fn keep_alive_below_a_second_is_a_config_error_not_a_panic() {
        let config = MqttConfig {
            keep_alive_s: 0.5,
            ..Default::default()
        };
        let setup = LinkSetup {
            config,
            device_id: "d".into(),
            base_dir: PathBuf::from("."),
            outbox: Default::default(),
            subscriptions: vec![],
            info: String::new(),
        };
        let err = options(&setup, &Topics::new("p")).unwrap_err();
        assert!(err.to_string().starts_with("mqtt.keep_alive_s"), "{err}");
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[5, 1, 3], 0.5), 3);
        assert_eq!(percentile(&[5, 1, 3], 0.99), 5);
    }
}
