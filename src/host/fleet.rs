//! `edgeinfer-host keygen`, `deploy` and `cmd`: steering devices through
//! the broker. Orders are signed with the key from `keygen`; each device
//! answers on `<root>/<device>/reply` with the order's id.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rumqttc::{Client, Event, Packet, QoS};

use super::listen::{mqtt_options, topic_parts};
use super::HostError;
use crate::fleet::update::split;
use crate::fleet::wire::{self, Action, Bundle, Order, Reply, SelfTest};
use crate::model::ModelFile;

/// Largest chunk sent, whatever the device accepts: smaller messages keep
/// the broker's and the device's queues short.
const MAX_CHUNK: usize = 256 * 1024;

/// Room in a packet for the topic, the chunk's header and MQTT's own.
const PACKET_OVERHEAD: usize = 1024;

/// How to reach the devices.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// `mqtt://HOST[:PORT]`.
    pub broker: String,
    /// The first topic level of the devices' prefixes (`edgeinfer`).
    pub root: String,
    /// The key directory from `keygen`; `None` sends unsigned orders.
    pub key: Option<PathBuf>,
    /// How long to wait for answers.
    pub timeout: Duration,
}

/// Which devices to deploy to.
#[derive(Debug, Clone)]
pub enum Targets {
    /// These device ids.
    Devices(Vec<String>),
    /// Every device with a retained `info`.
    All,
}

/// One device's answer to a deploy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// The device.
    pub device: String,
    /// `applied`, `refused`, `rolled_back`, `interrupted` or `no answer`.
    pub outcome: String,
    /// Why, or what runs now.
    pub detail: String,
    /// Seconds from the first chunk sent to the answer.
    pub seconds: f64,
}

/// The self-test an update carries: the `reference` pair given, else the
/// `input.npy`/`output.npy` beside the model, or none with `skip`.
pub fn selftest_for(
    model: &Path,
    reference: Option<(&Path, &Path)>,
    skip: bool,
) -> Result<Option<SelfTest>, HostError> {
    match (reference, skip) {
        (_, true) => Ok(None),
        (Some((input, output)), _) => {
            SelfTest::read(input, output)
                .map(Some)
                .map_err(|e| HostError::Input {
                    file: "--reference-input/--reference-output".into(),
                    message: e,
                })
        }
        (None, _) => Ok(crate::fleet::reference_pair(model)),
    }
}

/// Writes a key pair into `dir` (`edgeinfer.key`, owner-only, and
/// `edgeinfer.pub` for the devices' `[remote] public_key`).
pub fn keygen(dir: &Path) -> Result<String, HostError> {
    let public = wire::keygen(dir).map_err(|e| HostError::Usage(e.to_string()))?;
    Ok(crate::model::hex(public.as_bytes()))
}

fn signing_key(opts: &FleetOptions) -> Result<Option<SigningKey>, HostError> {
    opts.key
        .as_deref()
        .map(wire::read_secret_key)
        .transpose()
        .map_err(|e| HostError::Input {
            file: "--key".into(),
            message: e.to_string(),
        })
}

/// A connected client whose event loop runs on its own thread; incoming
/// publishes arrive on `messages`.
struct Session {
    client: Client,
    messages: Receiver<rumqttc::Publish>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Session {
    /// Connects, subscribes to `filters` and waits for the subscriptions.
    fn open(broker: &str, filters: &[String], timeout: Duration) -> Result<Session, HostError> {
        let mo = mqtt_options(
            broker,
            format!("edgeinfer-host-fleet-{}", std::process::id()),
        )?;
        let (client, mut conn) = Client::new(mo, 64);
        let (tx, messages) = std::sync::mpsc::channel();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let subscriber = client.clone();
        let filters = filters.to_vec();
        let thread = std::thread::spawn(move || {
            let mut acks = 0;
            let mut ready_tx = Some(ready_tx);
            for event in conn.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            let _ = subscriber.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acks += 1;
                        if acks == filters.len() {
                            if let Some(r) = ready_tx.take() {
                                let _ = r.send(Ok(()));
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(Err(e.to_string()));
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        });
        match ready.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(Session {
                client,
                messages,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(HostError::Mqtt(format!("{broker}: {e}"))),
            Err(_) => Err(HostError::Mqtt(format!(
                "{broker}: no connection in {:.0} s",
                timeout.as_secs_f64()
            ))),
        }
    }

    fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), HostError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| HostError::Mqtt(e.to_string()))
    }

    fn close(mut self) {
        let _ = self.client.disconnect();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The retained `info` of devices (all, or those named), waiting briefly
/// for them to arrive.
fn infos(session: &Session, wanted: Option<&[String]>) -> HashMap<String, serde_json::Value> {
    let mut out = HashMap::new();
    let until = Instant::now() + Duration::from_millis(1000);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if wanted.is_some_and(|w| w.iter().all(|d| out.contains_key(d))) {
            break;
        }
        match session.messages.recv_timeout(left) {
            Ok(p) => {
                let (device, kind) = topic_parts(&p.topic);
                if kind == "info" {
                    if let Ok(v) = serde_json::from_slice(&p.payload) {
                        out.insert(device, v);
                    }
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// Waits for each device's reply to order `id`.
fn replies(
    session: &Session,
    id: &str,
    devices: &[String],
    timeout: Duration,
) -> BTreeMap<String, (Reply, f64)> {
    let start = Instant::now();
    let mut out = BTreeMap::new();
    while out.len() < devices.len() {
        let Some(left) = timeout.checked_sub(start.elapsed()) else {
            break;
        };
        match session.messages.recv_timeout(left) {
            Ok(p) => {
                let (device, kind) = topic_parts(&p.topic);
                if kind != "reply" || !devices.contains(&device) {
                    continue;
                }
                if let Ok(r) = serde_json::from_slice::<Reply>(&p.payload) {
                    if r.id == id {
                        out.insert(device, (r, start.elapsed().as_secs_f64()));
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    out
}

/// A fresh order id.
fn order_id(kind: &str) -> String {
    let r = u32::from_le_bytes(wire::random_bytes::<4>().unwrap_or_default());
    format!("{kind}-{}-{r:08x}", crate::clock::now_ms())
}

/// Sends `model` to the targets and waits for each one's answer.
pub fn deploy(
    opts: &FleetOptions,
    targets: &Targets,
    model: &Path,
    version: Option<&str>,
    selftest: Option<SelfTest>,
) -> Result<Vec<Outcome>, HostError> {
    let key = signing_key(opts)?;
    let file = ModelFile::read(model)?;
    let loaded = file.load(None)?;
    let version = version.map(str::to_string).unwrap_or_else(|| {
        let sha = file.sha256();
        crate::pipeline::model_version(&file, &sha)
    });
    let root = &opts.root;
    let filters = vec![format!("{root}/+/info"), format!("{root}/+/reply")];
    let session = Session::open(&opts.broker, &filters, opts.timeout)?;
    let devices: Vec<String> = match targets {
        Targets::Devices(d) => d.clone(),
        Targets::All => {
            let mut d: Vec<String> = infos(&session, None)
                .into_iter()
                .filter(|(_, v)| v["remote"].as_bool().unwrap_or(false))
                .map(|(k, _)| k)
                .collect();
            d.sort();
            d
        }
    };
    if devices.is_empty() {
        session.close();
        return Err(HostError::Usage(
            "no devices: none named, and none has announced [remote] in its info".into(),
        ));
    }
    let info = infos(&session, Some(&devices));
    let bundle = Bundle {
        model: file.bytes().to_vec(),
        selftest,
    };
    let id = order_id("deploy");
    let spec = |v: &[crate::model::TensorSpec]| {
        v.iter()
            .map(|t| format!("{}: {} {:?}", t.name, t.dtype, t.shape))
            .collect::<Vec<_>>()
    };
    let (inputs, outputs) = (spec(&loaded.info().inputs), spec(&loaded.info().outputs));
    for device in &devices {
        let packet = info
            .get(device)
            .and_then(|v| v["max_packet_bytes"].as_u64())
            .unwrap_or(1 << 20) as usize;
        let chunk = packet
            .saturating_sub(PACKET_OVERHEAD)
            .clamp(1024, MAX_CHUNK) as u32;
        let (manifest, chunks) = split(
            &bundle,
            &id,
            &version,
            chunk,
            inputs.clone(),
            outputs.clone(),
        );
        let order = Order::new(device, &id, Action::Update(manifest));
        session.publish(&format!("{root}/{device}/cmd"), order.sign(key.as_ref()))?;
        for c in chunks {
            session.publish(
                &format!("{root}/{device}/update"),
                postcard::to_stdvec(&c).unwrap_or_default(),
            )?;
        }
    }
    let answers = replies(&session, &id, &devices, opts.timeout);
    session.close();
    Ok(devices
        .iter()
        .map(|d| match answers.get(d) {
            Some((r, s)) => Outcome {
                device: d.clone(),
                outcome: r.outcome.clone(),
                detail: r.detail.clone(),
                seconds: *s,
            },
            None => Outcome {
                device: d.clone(),
                outcome: "no answer".into(),
                detail: format!("nothing within {:.0} s", opts.timeout.as_secs_f64()),
                seconds: opts.timeout.as_secs_f64(),
            },
        })
        .collect())
}

/// Parses a command line's words: `ping`, `info`, `rollback`, `restart`,
/// `set KEY=VALUE`.
pub fn parse_action(words: &[String]) -> Result<Action, HostError> {
    let usage =
        || HostError::Usage("expected one of: ping, info, rollback, restart, set KEY=VALUE".into());
    match words {
        [w] if w == "ping" => Ok(Action::Ping),
        [w] if w == "info" => Ok(Action::Info),
        [w] if w == "rollback" => Ok(Action::Rollback),
        [w] if w == "restart" => Ok(Action::Restart),
        [w, kv] if w == "set" => {
            let (k, v) = kv.split_once('=').ok_or_else(usage)?;
            Ok(Action::Set {
                key: k.trim().into(),
                value: v.trim().into(),
            })
        }
        _ => Err(usage()),
    }
}

/// Sends one command to `device` and returns its reply.
pub fn command(opts: &FleetOptions, device: &str, action: Action) -> Result<Reply, HostError> {
    let key = signing_key(opts)?;
    let root = &opts.root;
    let session = Session::open(
        &opts.broker,
        &[format!("{root}/{device}/reply")],
        opts.timeout,
    )?;
    let id = order_id("cmd");
    let order = Order::new(device, &id, action);
    session.publish(&format!("{root}/{device}/cmd"), order.sign(key.as_ref()))?;
    let answer = replies(&session, &id, &[device.to_string()], opts.timeout);
    session.close();
    answer.into_values().next().map(|(r, _)| r).ok_or_else(|| {
        HostError::Mqtt(format!(
            "{device}: no answer within {:.0} s",
            opts.timeout.as_secs_f64()
        ))
    })
}
