//! The network thread: the only code that talks to rumqttc.
//!
//! It publishes from the [`Outbox`] (oldest first, a bounded number in
//! flight), deletes a message only when its PUBACK arrives, and after every
//! (re)connect starts again from the oldest unacknowledged message: rumqttc
//! forgets unacknowledged publishes when it reconnects without the session,
//! so the outbox, not rumqttc, guarantees delivery. Reconnects back off
//! exponentially with jitter. Sensor messages go to the `mqtt` source
//! through a bounded channel without waiting: a full channel is a counted
//! drop, never a stalled event loop (PUBACKs and pings keep flowing).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event, Outgoing, Packet, QoS};

use super::shared::{LinkCounters, Shared};
use super::{options, LinkError, LinkSetup, Topics};
use crate::clock::{now_ms, ReportEvery};
use crate::outbox::Outbox;
use crate::rng::Rng;

/// A sensor message as received: topic and payload, undecoded.
pub type Message = rumqttc::Publish;

/// How often a broker that stays unreachable is reported.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(30);

/// Sensor messages waiting for the source, at most. Beyond this the link
/// drops (and counts) rather than wait.
const INPUT_QUEUE: usize = 1024;

/// Control messages (commands, update chunks) waiting for the fleet
/// controller, at most; beyond this they are dropped and reported (an
/// update then misses a chunk and is refused, never applied half).
const CONTROL_QUEUE: usize = 1024;

/// A running link.
pub struct Link {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The device's topics.
    pub topics: Topics,
    thread: Option<JoinHandle<()>>,
    messages: Option<Receiver<Message>>,
    control: Option<Receiver<Message>>,
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

impl Link {
    /// Opens the outbox, connects (in the background) and starts the
    /// network thread.
    pub fn start(setup: LinkSetup) -> Result<Link, LinkError> {
        let topics = Topics::new(&setup.config.prefix_for(&setup.device_id));
        let opts = options(&setup, &topics)?;
        let dir = setup
            .outbox
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("outbox"));
        let outbox = Outbox::open(&dir, setup.outbox.clone())?;
        if !outbox.is_empty() {
            // Shared by every run with this state directory: say so, or old
            // results seem to come from nowhere.
            log::warn!(
                "mqtt: {} result messages from earlier runs wait in the outbox {}; they are published first",
                outbox.len(),
                dir.display()
            );
        }
        let shared = Arc::new(Shared {
            outbox: Mutex::new(outbox),
            connected: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            counters: LinkCounters::default(),
            metrics: Mutex::default(),
            errors: Mutex::default(),
            outgoing: Mutex::default(),
            info: Mutex::new(setup.info.clone()),
            announce: Mutex::default(),
            extra_metrics: Mutex::default(),
        });
        let (client, mut connection) = Client::new(opts, 64);
        // Small result messages must not wait for Nagle's algorithm and the
        // broker's delayed ACK (about 40 ms a message otherwise).
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        connection.eventloop.set_network_options(net);
        let (tx, rx) = std::sync::mpsc::sync_channel(INPUT_QUEUE);
        let messages = (!setup.subscriptions.is_empty()).then_some(rx);
        let (control_tx, control_rx) = std::sync::mpsc::sync_channel(CONTROL_QUEUE);
        let control = (!setup.control.is_empty()).then_some(control_rx);
        let grace = Duration::from_secs_f64(setup.config.grace_s.max(0.0));
        let worker = Worker {
            client,
            shared: shared.clone(),
            topics: topics.clone(),
            setup,
            messages: tx,
            control: control_tx,
            drops: ReportEvery::new(Duration::from_secs(1)),
        };
        let thread = std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || worker.run(connection))
            .map_err(LinkError::Thread)?;
        Ok(Link {
            shared,
            topics,
            thread: Some(thread),
            messages,
            control,
            grace,
        })
    }

    /// The received sensor messages, for the `mqtt` source (once).
    pub fn take_messages(&mut self) -> Option<Receiver<Message>> {
        self.messages.take()
    }

    /// The received messages on the `control` topics, for the fleet
    /// controller (once).
    pub fn take_control(&mut self) -> Option<Receiver<Message>> {
        self.control.take()
    }

    /// Waits up to the grace period for the outbox to drain (while
    /// connected; an unreachable broker is given one second), publishes
    /// `offline`, disconnects and stops the thread. What is still
    /// unacknowledged stays on disk for the next start.
    pub fn close(&mut self) -> Delivery {
        let start = Instant::now();
        while start.elapsed() < self.grace && !self.shared.outbox().is_empty() {
            let connected = self.shared.connected.load(Ordering::Relaxed);
            if !connected && start.elapsed() >= Duration::from_secs(1) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.shared.closing.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let ob = self.shared.outbox();
        if !ob.is_empty() {
            log::warn!(
                "mqtt: {} result messages still unacknowledged; kept in the outbox {} for the next start",
                ob.len(),
                ob.dir().display()
            );
        }
        Delivery {
            acked: self.shared.counters.acked.load(Ordering::Relaxed),
            dropped: ob.dropped(),
            left: ob.len() as u64,
            outbox: ob.dir().to_path_buf(),
        }
    }
}

/// What a link delivered in its run, and what it leaves for the next.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// Result messages the broker acknowledged.
    pub acked: u64,
    /// Result messages the outbox dropped (full, or a failing disk).
    pub dropped: u64,
    /// Result messages still unacknowledged, kept on disk.
    pub left: u64,
    /// Where they are kept.
    pub outbox: PathBuf,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Publishes what `queue` holds, oldest first, with `send`, until it is
/// empty or `send` fails (rumqttc's request queue is full): what is left
/// waits for the next turn.
fn drain<T>(session: &mut Session, queue: &Mutex<VecDeque<T>>, mut send: impl FnMut(&T) -> bool) {
    let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
    while let Some(item) = q.front() {
        if !send(item) {
            break;
        }
        q.pop_front();
        session.awaiting.push_back(None);
    }
}

struct Worker {
    client: Client,
    shared: Arc<Shared>,
    topics: Topics,
    setup: LinkSetup,
    messages: SyncSender<Message>,
    control: SyncSender<Message>,
    /// Dropped input, reported at most once a second.
    drops: ReportEvery,
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
        let mut rng = Rng::new(now_ms());
        let min = Duration::from_millis(self.setup.config.reconnect_min_ms);
        let max = Duration::from_millis(self.setup.config.reconnect_max_ms);
        let mut backoff = min;
        // Silence longer than this from a connected broker is a lost link.
        let keep_alive = Duration::from_secs_f64(self.setup.config.keep_alive_s);
        let watchdog = (!keep_alive.is_zero()).then(|| keep_alive.mul_f64(1.25));
        let mut last_incoming = Instant::now();
        // Connection failures in a row, and when one was last logged.
        let mut failures = 0u64;
        let mut last_failure_log: Option<Instant> = None;
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
            if connected && watchdog.is_some_and(|w| last_incoming.elapsed() > w) {
                // The broker pings back every keep-alive; this long without
                // a word means the connection is gone though TCP has not
                // noticed (a partition, a stopped broker). rumqttc would
                // only notice at the next ping, up to a keep-alive later.
                log::warn!(
                    "mqtt: no answer from {} for {:.1} s (keep-alive {} s): connection presumed lost; {} result messages wait in the outbox",
                    self.setup.config.broker,
                    last_incoming.elapsed().as_secs_f64(),
                    self.setup.config.keep_alive_s,
                    self.shared.outbox().len()
                );
                connection.eventloop.clean();
                connected = false;
                self.shared.connected.store(false, Ordering::Relaxed);
                self.shared
                    .counters
                    .link_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                session = Session::default();
            }
            if connected {
                self.publish_more(&mut session, qos_results);
                self.publish_errors(&mut session);
                self.publish_outgoing(&mut session);
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
                    if let Event::Incoming(_) = event {
                        last_incoming = Instant::now();
                    }
                    if let Event::Incoming(Packet::ConnAck(_)) = event {
                        connected = true;
                        failures = 0;
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
                    // Full jitter: spreads many devices' reconnects after a broker restart.
                    let wait = backoff.mul_f64(0.5 + 0.5 * rng.uniform());
                    let waiting = self.shared.outbox().len();
                    let broker = &self.setup.config.broker;
                    if connected {
                        log::warn!(
                            "mqtt: connection lost ({broker}): {e}; reconnecting in {:.1} s; \
                             {waiting} result messages wait in the outbox",
                            wait.as_secs_f64()
                        );
                        failures = 0;
                    } else if failures == 0
                        || last_failure_log.is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY)
                    {
                        let again = if failures > 0 {
                            format!(" ({} attempts failed so far)", failures + 1)
                        } else {
                            String::new()
                        };
                        log::warn!(
                            "mqtt: cannot connect to {broker}: {e}{again}; next attempt in {:.1} s; \
                             {waiting} result messages wait in the outbox",
                            wait.as_secs_f64()
                        );
                        last_failure_log = Some(Instant::now());
                    }
                    failures += 1;
                    connected = false;
                    self.shared.connected.store(false, Ordering::Relaxed);
                    session = Session::default();
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
        for filter in self.setup.subscriptions.iter().chain(&self.setup.control) {
            if let Err(e) = self.client.try_subscribe(filter, QoS::AtLeastOnce) {
                log::error!("mqtt: subscribe {filter}: {e}");
            }
        }
        // Only requests rumqttc accepted will be reported as sent: keep the
        // `awaiting` queue in step with them.
        let info = self
            .shared
            .info
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let announce = self
            .shared
            .announce
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let topics = [
            (self.topics.status.clone(), b"online".to_vec()),
            (self.topics.info.clone(), info.into_bytes()),
        ]
        .into_iter()
        .chain(announce);
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
        let (client, topic) = (&self.client, &self.topics.error);
        drain(session, &self.shared.errors, |msg| {
            client
                .try_publish(topic, QoS::AtMostOnce, false, msg.clone())
                .is_ok()
        });
    }

    fn publish_outgoing(&mut self, session: &mut Session) {
        let client = &self.client;
        drain(
            session,
            &self.shared.outgoing,
            |(topic, payload, retain)| {
                client
                    .try_publish(topic, QoS::AtLeastOnce, *retain, payload.clone())
                    .is_ok()
            },
        );
    }

    fn publish_metrics(&mut self, session: &mut Session) {
        let c = &self.shared.counters;
        let mut m = self
            .shared
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        m.extend(
            self.shared
                .extra_metrics
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        );
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
        let pct = |p: f64| crate::stats::percentile(&lat, p);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (k, v) in [
            ("ts_ms", serde_json::json!(now_ms())),
            ("outbox_depth", depth.into()),
            ("outbox_dropped", dropped.into()),
            ("published", get(&c.published).into()),
            ("acked", get(&c.acked).into()),
            ("bytes_published", get(&c.bytes_published).into()),
            ("bytes_in_mqtt", get(&c.bytes_in).into()),
            ("bad_payloads", get(&c.bad_payloads).into()),
            ("mqtt_in_dropped", get(&c.input_dropped).into()),
            ("connects", get(&c.connects).into()),
            ("link_timeouts", get(&c.link_timeouts).into()),
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
            Event::Incoming(Packet::Publish(p)) => {
                let topic = &p.topic;
                if self.setup.control.iter().any(|t| t == topic) {
                    self.on_control_message(p);
                } else {
                    self.on_sensor_message(p);
                }
            }
            _ => {}
        }
    }

    /// Hands a control message to the fleet controller without waiting.
    fn on_control_message(&mut self, message: Message) {
        if let Err(TrySendError::Full(m)) = self.control.try_send(message) {
            let reason = format!("control queue full: dropped a message on {}", m.topic);
            log::warn!("mqtt: {reason}");
            self.shared.report_error(&reason);
        }
    }

    /// Hands a sensor message to the source without waiting: when its queue
    /// is full (inference is behind), the message is dropped, counted, and
    /// reported at most once a second, so the event loop keeps answering
    /// the broker.
    fn on_sensor_message(&mut self, message: Message) {
        let c = &self.shared.counters;
        c.bytes_in
            .fetch_add(message.payload.len() as u64, Ordering::Relaxed);
        match self.messages.try_send(message) {
            Ok(()) => {
                c.input_queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                c.input_dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = self.drops.count() {
                    let reason = format!(
                        "input queue full (inference is behind): dropped {n} sensor messages"
                    );
                    log::warn!("mqtt: {reason}");
                    self.shared.report_error(&reason);
                }
            }
        }
    }
}
