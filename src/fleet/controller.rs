//! The fleet controller: one thread that carries out orders from
//! `<prefix>/cmd`, receives updates from `<prefix>/update`, watches the
//! model file, answers on `<prefix>/reply`, and hands prepared stages to
//! the pipeline thread through [`Control`].
//!
//! Loading, checking and self-testing a model happen here, never on the
//! pipeline thread; the pipeline only swaps (see `pipeline::swap`). What
//! runs is recorded in the store when the pipeline says it swapped, so a
//! restart at any moment runs the model that was running, or the one
//! before it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::VerifyingKey;

use super::homeassistant::{self, Entities, HomeAssistantConfig};
use super::store::{sha256_hex, Current, Entry, Journal, Phase, Store};
use super::update::Receiving;
use super::wire::{Action, Chunk, Order, Reply, SelfTest, Signed};
use super::RemoteConfig;
use crate::clock::now_ms;
use crate::config::{Config, SinkConfig};
use crate::model::ModelFile;
use crate::mqtt::{Link, Message, Shared, Topics};
use crate::pipeline::swap::{Change, Control, Event, Stages};
use crate::schema::ModelTag;

/// Relative tolerance of a self-test.
const SELFTEST_TOLERANCE: f32 = 1e-4;

/// Everything the controller starts from, gathered by `pipeline::build`.
pub struct FleetSetup {
    /// The running config (saved settings applied).
    pub config: Config,
    /// `[remote]`, when updates and commands are taken.
    pub remote: Option<RemoteConfig>,
    /// The key orders must be signed with.
    pub key: Option<VerifyingKey>,
    /// The state directory.
    pub store: Option<Store>,
    /// The hand-off to the pipeline.
    pub control: Arc<Control>,
    /// The pipeline's answers.
    pub events: Receiver<Event>,
    /// The running model.
    pub running: Entry,
    /// The model before it.
    pub previous: Option<Entry>,
    /// An update on probation since the start.
    pub probation: Option<String>,
    /// Replies due from the start (interrupted updates).
    pub replies: Vec<Reply>,
    /// The window's tensor shape: a new model must take exactly this.
    pub window_shape: Vec<usize>,
    /// The source's channel count, as `prepare` takes it.
    pub channels: Option<usize>,
    /// The info document's current text.
    pub info: String,
    /// Home Assistant discovery for the running model.
    pub discovery: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for FleetSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSetup")
            .field("running", &self.running)
            .finish()
    }
}

/// The running controller thread.
#[derive(Debug)]
pub struct Controller {
    thread: Option<JoinHandle<()>>,
    done: Arc<AtomicBool>,
    restart: Arc<AtomicBool>,
}

impl Controller {
    /// Starts the thread: orders come from `link`'s control topics, and a
    /// `restart` order raises `stop`.
    pub fn start(
        setup: FleetSetup,
        link: Option<&mut Link>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Controller> {
        let done = Arc::new(AtomicBool::new(false));
        let restart = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
        let (shared, topics, messages) = match link {
            Some(l) => (
                Some(l.shared.clone()),
                Some(l.topics.clone()),
                l.take_control(),
            ),
            None => (None, None, None),
        };
        let model_path = setup.config.resolve(&setup.config.model.path);
        let watch = setup.remote.as_ref().is_none_or(|r| r.watch_model);
        let mut worker = Worker {
            remote: setup.remote.clone().unwrap_or_default(),
            nonces: setup.store.as_ref().map(Store::nonces).unwrap_or_default(),
            setup,
            shared,
            topics,
            receiving: None,
            ignore_chunks_of: None,
            pending: None,
            probation: None,
            watched: watch.then(|| file_stamp(&model_path)),
            model_path,
            hup,
            stop,
            restart: restart.clone(),
            done: done.clone(),
        };
        worker.begin();
        let thread = std::thread::Builder::new()
            .name("fleet".into())
            .spawn(move || worker.run(messages))?;
        Ok(Controller {
            thread: Some(thread),
            done,
            restart,
        })
    }

    /// Stops the thread; true when a `restart` order ended the run.
    pub fn finish(mut self) -> bool {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.restart.load(Ordering::Relaxed)
    }
}

/// A model ready to swap in: its stages, its info document and its
/// discovery configs.
type Staged = (Stages, String, Vec<(String, Vec<u8>)>);

/// A swap asked of the pipeline, awaiting its `Swapped`.
struct Pending {
    id: String,
    kind: Kind,
    entry: Entry,
    info: String,
    discovery: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Update,
    Rollback,
    Reload,
}

struct Worker {
    setup: FleetSetup,
    remote: RemoteConfig,
    shared: Option<Arc<Shared>>,
    topics: Option<Topics>,
    receiving: Option<Receiving>,
    /// An update whose further chunks are dropped without an answer: one
    /// already refused or complete (QoS 1 may deliver a chunk twice), or
    /// an unknown one already answered.
    ignore_chunks_of: Option<String>,
    pending: Option<Pending>,
    /// The order on probation, and the model it replaced.
    probation: Option<(String, Kind, Entry)>,
    nonces: Vec<(u64, u64)>,
    model_path: PathBuf,
    /// The model file's (mtime, size) when last looked at.
    watched: Option<Option<(SystemTime, u64)>>,
    hup: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    restart: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The reference input and output beside a model file (`input.npy`,
/// `output.npy`, as `models/` ships them), for a self-test.
pub fn reference_pair(model: &std::path::Path) -> Option<SelfTest> {
    let dir = model.parent()?;
    SelfTest::read(&dir.join("input.npy"), &dir.join("output.npy")).ok()
}

impl Worker {
    fn device(&self) -> &str {
        &self.setup.config.device_id
    }

    /// At start: the replies a restart owes, the probation it resumes, the
    /// discovery configs (or their removal).
    fn begin(&mut self) {
        for r in std::mem::take(&mut self.setup.replies) {
            self.send_reply(r);
        }
        if let Some(id) = self.setup.probation.take() {
            if let Some(prev) = self.setup.previous.clone() {
                self.probation = Some((id, Kind::Update, prev));
            }
        }
        if self.remote.allow_unsigned && self.setup.remote.is_some() {
            log::warn!(
                "[remote] allow_unsigned = true: anyone who can publish on this device's topics can replace its model"
            );
        }
        self.metrics_fields();
        // Published now as well: the link may have connected (and
        // published what it had) before this list existed.
        self.announce_discovery();
    }

    fn run(mut self, messages: Option<Receiver<Message>>) {
        let mut next_watch = Instant::now();
        while !self.done.load(Ordering::Relaxed) {
            match &messages {
                Some(rx) => match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(m) => self.on_message(&m),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                },
                None => std::thread::sleep(Duration::from_millis(100)),
            }
            while let Ok(e) = self.setup.events.try_recv() {
                self.on_event(e);
            }
            self.check_chunk_timeout();
            if self.hup.swap(false, Ordering::Relaxed) {
                log::info!("SIGHUP: reloading {}", self.model_path.display());
                self.reload();
            } else if next_watch <= Instant::now() {
                next_watch = Instant::now() + Duration::from_secs(1);
                self.watch();
            }
        }
    }

    fn on_message(&mut self, m: &Message) {
        let topic = m.topic.clone();
        let Some(topics) = self.topics.clone() else {
            return;
        };
        if topic == topics.cmd {
            self.on_order(&m.payload);
        } else if topic == topics.update {
            self.on_chunk(&m.payload);
        } else if topic == self.ha().birth_topic() && &m.payload[..] == b"online" {
            log::info!("Home Assistant is online: discovery published again");
            self.announce_discovery();
        }
    }

    fn ha(&self) -> HomeAssistantConfig {
        self.setup.config.homeassistant.clone()
    }

    // ----- replies and reports -----

    fn reply(&self, id: &str, outcome: &str, detail: String) -> Reply {
        Reply {
            id: id.into(),
            device: self.device().into(),
            outcome: outcome.into(),
            detail,
            model_sha256: self.setup.running.sha256.clone(),
            model_version: self.setup.running.version.clone(),
            data: None,
        }
    }

    fn send_reply(&self, r: Reply) {
        let text = serde_json::to_string(&r).unwrap_or_default();
        if r.outcome == "refused" || r.outcome == "rolled_back" || r.outcome == "interrupted" {
            log::warn!("order {}: {}: {}", r.id, r.outcome, r.detail);
            if let Some(s) = &self.shared {
                s.report_error(&format!("order {}: {}: {}", r.id, r.outcome, r.detail));
            }
        } else {
            log::info!("order {}: {}: {}", r.id, r.outcome, r.detail);
        }
        if let (Some(s), Some(t)) = (&self.shared, &self.topics) {
            s.publish(&t.reply, text.into_bytes(), false);
        }
    }

    fn refuse(&mut self, id: &str, why: impl Into<String>) {
        // Chunks that follow a refused order belong to nothing: they are
        // dropped without a second answer.
        self.ignore_chunks_of = Some(id.to_string());
        self.send_reply(self.reply(id, "refused", why.into()));
    }

    fn metrics_fields(&self) {
        if let Some(s) = &self.shared {
            let mut m = s.extra_metrics.lock().unwrap_or_else(|e| e.into_inner());
            m.insert(
                "model_sha256".into(),
                self.setup.running.sha256.clone().into(),
            );
            m.insert(
                "model_version".into(),
                self.setup.running.version.clone().into(),
            );
        }
    }

    /// Publishes the discovery configs (or, when turned off, removes the
    /// ones an earlier run published).
    fn announce_discovery(&self) {
        let (Some(shared), Some(store)) = (&self.shared, &self.setup.store) else {
            return;
        };
        let ha = self.ha();
        let marker = store.dir().join("homeassistant.json");
        if !ha.enabled {
            if let Ok(bytes) = std::fs::read(&marker) {
                let topics: Vec<String> = serde_json::from_slice(&bytes).unwrap_or_default();
                for t in &topics {
                    shared.publish(t, Vec::new(), true);
                }
                log::info!(
                    "Home Assistant discovery removed ({} entities)",
                    topics.len()
                );
                let _ = std::fs::remove_file(&marker);
            }
            return;
        }
        let list = self.setup.discovery.clone();
        let topics: Vec<&String> = list.iter().map(|(t, _)| t).collect();
        let _ =
            super::store::write_atomic(&marker, &serde_json::to_vec(&topics).unwrap_or_default());
        for (t, p) in &list {
            shared.publish(t, p.clone(), true);
        }
        *shared.announce.lock().unwrap_or_else(|e| e.into_inner()) = list;
    }

    // ----- orders -----

    fn on_order(&mut self, payload: &[u8]) {
        if self.setup.remote.is_none() {
            return;
        }
        let order =
            match Order::verify(payload, self.setup.key.as_ref(), self.remote.allow_unsigned) {
                Ok(o) => o,
                Err(e) => {
                    // The id, read without trusting it, lets the sender match
                    // the refusal to what it sent.
                    let id = postcard::from_bytes::<Signed>(payload)
                        .ok()
                        .and_then(|s| postcard::from_bytes::<Order>(&s.body).ok())
                        .map(|o| o.id)
                        .unwrap_or_default();
                    self.refuse(&id, e.to_string());
                    return;
                }
            };
        if order.device != self.device() {
            self.refuse(
                &order.id,
                format!(
                    "signed for device {:?}, this is {:?}",
                    order.device,
                    self.device()
                ),
            );
            return;
        }
        if let Err(why) = self.check_replay(&order) {
            self.refuse(&order.id, why);
            return;
        }
        let id = order.id.clone();
        match order.action {
            Action::Ping => self.send_reply(self.reply(&id, "ok", "pong".into())),
            Action::Info => {
                let mut r = self.reply(&id, "ok", "info".into());
                r.data = self.shared.as_ref().and_then(|s| {
                    serde_json::from_str(&s.info.lock().unwrap_or_else(|e| e.into_inner())).ok()
                });
                self.send_reply(r);
            }
            Action::Set { key, value } => self.set(&id, &key, &value),
            Action::Rollback => self.rollback(&id),
            Action::Restart => {
                self.send_reply(self.reply(&id, "ok", "restarting".into()));
                self.restart.store(true, Ordering::Relaxed);
                self.stop.store(true, Ordering::Relaxed);
            }
            Action::Update(manifest) => self.start_update(&id, manifest),
        }
    }

    /// Refuses orders signed too long ago (or ahead), and any order whose
    /// nonce was already seen within the window.
    fn check_replay(&mut self, order: &Order) -> Result<(), String> {
        let now = now_ms();
        let window_ms = self.remote.order_window_s * 1000;
        let age = now as i64 - order.ts_ms as i64;
        if age.unsigned_abs() > window_ms {
            return Err(format!(
                "expired: signed {:.0} s {} the device's clock, the window is {} s",
                age.unsigned_abs() as f64 / 1000.0,
                if age >= 0 { "before" } else { "ahead of" },
                self.remote.order_window_s
            ));
        }
        self.nonces
            .retain(|(ts, _)| now.saturating_sub(*ts) <= window_ms && *ts <= now + window_ms);
        if self.nonces.iter().any(|(_, n)| *n == order.nonce) {
            return Err("replayed: this order was already carried out".into());
        }
        self.nonces.push((order.ts_ms, order.nonce));
        if let Some(store) = &self.setup.store {
            // Saved before acting: a restart must not make an order new again.
            if let Err(e) = store.set_nonces(&self.nonces) {
                return Err(format!("cannot record the order's nonce: {e}"));
            }
        }
        Ok(())
    }

    fn set(&mut self, id: &str, key: &str, value: &str) {
        if key == "log_level" {
            let Ok(level) = value.trim_matches('"').parse::<log::LevelFilter>() else {
                self.refuse(
                    id,
                    format!(
                        "log_level: expected off, error, warn, info, debug or trace, found {value}"
                    ),
                );
                return;
            };
            log::set_max_level(level);
        } else {
            let config = match self.setup.config.with_setting(key, value) {
                Ok(c) => c,
                Err(why) => {
                    self.refuse(id, why);
                    return;
                }
            };
            let batching = config.sink.iter().find_map(|s| match s {
                SinkConfig::Mqtt(m) => Some(m.clone()),
                _ => None,
            });
            self.setup.control.send(Change::Settings {
                policy: config.policy.clone(),
                batching,
            });
            self.setup.config = config;
        }
        if let Some(store) = &self.setup.store {
            let mut settings = store.settings();
            settings.insert(key.into(), value.into());
            if let Err(e) = store.set_settings(&settings) {
                self.refuse(
                    id,
                    format!("applied, but not saved for the next start: {e}"),
                );
                return;
            }
        }
        self.send_reply(self.reply(id, "ok", format!("{key} = {value}")));
    }

    // ----- models -----

    /// Resolves `file` against the running config, checks it takes the
    /// running window and passes `selftest`: the stages, info and
    /// discovery that come with it.
    fn stage(
        &self,
        file: &ModelFile,
        entry: &Entry,
        selftest: Option<&SelfTest>,
    ) -> Result<Staged, String> {
        let config = &self.setup.config;
        let prepared =
            crate::pipeline::prepare(config, file, self.setup.channels).map_err(|ps| {
                ps.iter()
                    .map(|p| format!("{}: {}", p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
        let shape = prepared.window.shape();
        if shape != self.setup.window_shape {
            return Err(format!(
                "the model takes input {shape:?}, the running pipeline gives {:?}",
                self.setup.window_shape
            ));
        }
        let mut prepared = prepared;
        if let Some(t) = selftest {
            selftest_run(&mut prepared.model, t)?;
        }
        let info = crate::pipeline::info_json(config, &prepared, &entry.version);
        let discovery = self.discovery_for(&prepared, &entry.version);
        let tag = ModelTag::new(&entry.sha256, &entry.version);
        let stages = Stages {
            model: prepared.model,
            preprocess: prepared.preprocess,
            postprocess: prepared.postprocess,
            labels: prepared.labels,
            tag,
        };
        Ok((stages, info, discovery))
    }

    fn discovery_for(
        &self,
        prepared: &crate::pipeline::Prepared,
        version: &str,
    ) -> Vec<(String, Vec<u8>)> {
        let (Some(topics), true) = (&self.topics, self.ha().enabled) else {
            return Vec::new();
        };
        discovery_messages(&self.setup.config, topics, prepared, version)
    }

    fn swap(&mut self, id: &str, kind: Kind, entry: Entry, staged: Staged) {
        let (stages, info, discovery) = staged;
        self.setup.control.send(Change::Swap {
            id: id.into(),
            stages: Box::new(stages),
            probation: kind != Kind::Rollback,
        });
        self.pending = Some(Pending {
            id: id.into(),
            kind,
            entry,
            info,
            discovery,
        });
    }

    fn start_update(&mut self, id: &str, manifest: super::wire::Manifest) {
        let Some(store) = self.setup.store.clone() else {
            return;
        };
        if manifest.size > self.remote.max_update_bytes {
            self.refuse(
                id,
                format!(
                    "the update has {} bytes, more than max_update_bytes = {}",
                    manifest.size, self.remote.max_update_bytes
                ),
            );
            return;
        }
        if self.pending.is_some() || self.probation.is_some() {
            self.refuse(
                id,
                "another update is being applied; send it again when it is done",
            );
            return;
        }
        if let Some(old) = self.receiving.take() {
            self.refuse(
                &old.id,
                format!("superseded by update {id} before it was complete"),
            );
            old.discard();
        }
        let journal = Journal {
            id: id.into(),
            phase: Phase::Receiving,
        };
        if let Err(e) = store.set_journal(Some(&journal)) {
            self.refuse(id, format!("cannot record the update: {e}"));
            return;
        }
        match Receiving::start(id, manifest, store.incoming(id)) {
            Ok(r) => {
                log::info!(
                    "update {id}: receiving {} bytes in {} chunks",
                    r.manifest.size,
                    r.manifest.chunks()
                );
                self.receiving = Some(r);
            }
            Err(why) => {
                let _ = store.set_journal(None);
                self.refuse(id, why);
            }
        }
    }

    fn on_chunk(&mut self, payload: &[u8]) {
        let chunk: Chunk = match postcard::from_bytes(payload) {
            Ok(c) => c,
            Err(e) => {
                if let Some(s) = &self.shared {
                    s.report_error(&format!("update: undecodable chunk: {e}"));
                }
                return;
            }
        };
        let ours = self.receiving.as_ref().is_some_and(|r| r.id == chunk.id);
        if !ours {
            if self.ignore_chunks_of.as_deref() != Some(chunk.id.as_str()) {
                self.ignore_chunks_of = Some(chunk.id.clone());
                self.refuse(
                    &chunk.id,
                    "chunk for an unknown update (no signed manifest came first)",
                );
            }
            return;
        }
        let r = self.receiving.as_mut().expect("checked above");
        match r.add(&chunk) {
            Ok(false) => {}
            Ok(true) => {
                let r = self.receiving.take().expect("checked above");
                self.ignore_chunks_of = Some(r.id.clone());
                let result = r.finish();
                let (id, version) = (r.id.clone(), r.manifest.version.clone());
                let duplicates = r.duplicates;
                r.discard();
                match result {
                    Ok(bundle) => self.apply_update(&id, &version, bundle, duplicates),
                    Err(why) => self.abandon(&id, why),
                }
            }
            Err(why) => {
                let r = self.receiving.take().expect("checked above");
                let id = r.id.clone();
                r.discard();
                self.abandon(&id, why);
            }
        }
    }

    fn abandon(&mut self, id: &str, why: String) {
        if let Some(store) = &self.setup.store {
            let _ = store.set_journal(None);
        }
        self.refuse(id, why);
    }

    fn check_chunk_timeout(&mut self) {
        let limit = Duration::from_secs_f64(self.remote.chunk_timeout_s);
        if self
            .receiving
            .as_ref()
            .is_some_and(|r| r.last_chunk.elapsed() > limit)
        {
            let r = self.receiving.take().expect("checked above");
            let why = format!("no chunk for {:.0} s: {}", limit.as_secs_f64(), r.missing());
            let id = r.id.clone();
            r.discard();
            self.abandon(&id, why);
        }
    }

    fn apply_update(
        &mut self,
        id: &str,
        version: &str,
        bundle: super::wire::Bundle,
        duplicates: u64,
    ) {
        let Some(store) = self.setup.store.clone() else {
            return;
        };
        let journal = Journal {
            id: id.into(),
            phase: Phase::Applying,
        };
        let _ = store.set_journal(Some(&journal));
        if duplicates > 0 {
            log::info!("update {id}: {duplicates} chunks arrived twice (ignored)");
        }
        let entry = Entry {
            sha256: sha256_hex(&bundle.model),
            version: version.into(),
        };
        let staged = ModelFile::from_bytes(bundle.model, &format!("update {id} ({version})"))
            .map_err(|e| e.to_string())
            .and_then(|file| {
                self.stage(&file, &entry, bundle.selftest.as_ref())
                    .map(|s| (file, s))
            });
        let (file, staged) = match staged {
            Ok(s) => s,
            Err(why) => return self.abandon(id, why),
        };
        // Both models on disk before the pipeline runs the new one: a
        // restart must find whichever `current.json` names.
        let stored = store
            .put_model(file.bytes())
            .and_then(|_| self.keep_running(&store));
        if let Err(e) = stored {
            return self.abandon(id, format!("cannot store the model: {e}"));
        }
        self.swap(id, Kind::Update, entry, staged);
    }

    /// Copies the running model into the store if it is not there (the
    /// config's file), so it can be rolled back to.
    fn keep_running(&self, store: &Store) -> std::io::Result<()> {
        if store.model_path(&self.setup.running.sha256).exists() {
            return Ok(());
        }
        let bytes = std::fs::read(&self.model_path)?;
        if sha256_hex(&bytes) == self.setup.running.sha256 {
            store.put_model(&bytes)?;
        }
        Ok(())
    }

    fn rollback(&mut self, id: &str) {
        let (Some(store), Some(prev)) = (self.setup.store.clone(), self.setup.previous.clone())
        else {
            self.refuse(id, "no previous model to go back to");
            return;
        };
        if self.pending.is_some() || self.probation.is_some() {
            self.refuse(id, "an update is being applied; try again when it is done");
            return;
        }
        let staged = store
            .read_model(&prev)
            .and_then(|file| self.stage(&file, &prev, None));
        match staged {
            Ok(s) => self.swap(id, Kind::Rollback, prev, s),
            Err(why) => self.refuse(id, format!("the previous model cannot run: {why}")),
        }
    }

    fn watch(&mut self) {
        let Some(seen) = self.watched else { return };
        let now = file_stamp(&self.model_path);
        if now == seen || now.is_none() {
            return;
        }
        // A file still being written changes between two looks a second
        // apart; it is read once it holds still. Replacing it by a rename
        // (as `cp` to a temporary name and `mv` do) is seen at once.
        std::thread::sleep(Duration::from_millis(200));
        if file_stamp(&self.model_path) != now {
            return;
        }
        self.watched = Some(now);
        log::info!("{} changed: reloading", self.model_path.display());
        self.reload();
    }

    fn reload(&mut self) {
        let id = format!("reload-{}", now_ms());
        if self.pending.is_some() || self.probation.is_some() {
            log::warn!("reload postponed: an update is being applied");
            self.watched = Some(None);
            return;
        }
        let file = match ModelFile::read(&self.model_path) {
            Ok(f) => f,
            Err(e) => {
                self.report_reload(&format!("reload refused: {e}"));
                return;
            }
        };
        let sha = file.sha256();
        if sha == self.setup.running.sha256 {
            return;
        }
        let entry = Entry {
            version: crate::pipeline::model_version(&file, &sha),
            sha256: sha,
        };
        let selftest = reference_pair(&self.model_path);
        match self.stage(&file, &entry, selftest.as_ref()) {
            Ok(staged) => {
                if let Some(store) = &self.setup.store {
                    if let Err(e) = store
                        .put_model(file.bytes())
                        .and_then(|_| self.keep_running(store))
                    {
                        self.report_reload(&format!("reload refused: cannot store the model: {e}"));
                        return;
                    }
                }
                self.swap(&id, Kind::Reload, entry, staged);
            }
            Err(why) => self.report_reload(&format!(
                "reload of {} refused: {why}",
                self.model_path.display()
            )),
        }
    }

    fn report_reload(&self, why: &str) {
        log::error!("{why}");
        if let Some(s) = &self.shared {
            s.report_error(why);
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Swapped(id) => {
                let Some(p) = self.pending.take().filter(|p| p.id == id) else {
                    return;
                };
                let old = std::mem::replace(&mut self.setup.running, p.entry.clone());
                self.setup.previous = Some(old.clone());
                self.setup.info = p.info.clone();
                self.setup.discovery = p.discovery.clone();
                if let (Some(s), Some(t)) = (&self.shared, &self.topics) {
                    s.set_info(p.info.clone(), &t.info);
                }
                self.metrics_fields();
                self.announce_discovery();
                self.record_current(p.kind);
                match p.kind {
                    Kind::Rollback => self.send_reply(self.reply(
                        &id,
                        "ok",
                        format!("rolled back to {} from {}", p.entry.version, old.version),
                    )),
                    Kind::Update | Kind::Reload => {
                        if let (Some(store), Kind::Update) = (&self.setup.store, p.kind) {
                            let _ = store.set_journal(Some(&Journal {
                                id: id.clone(),
                                phase: Phase::Probation,
                            }));
                        }
                        self.probation = Some((id, p.kind, old));
                    }
                }
            }
            Event::Confirmed(id) => {
                let Some((_, kind, old)) = self.probation.take().filter(|p| p.0 == id) else {
                    return;
                };
                if let Some(store) = &self.setup.store {
                    let _ = store.set_journal(None);
                }
                match kind {
                    Kind::Reload => log::info!(
                        "reloaded {}: {} runs",
                        self.model_path.display(),
                        self.setup.running.version
                    ),
                    _ => self.send_reply(self.reply(
                        &id,
                        "applied",
                        format!(
                            "{} runs, replacing {}",
                            self.setup.running.version, old.version
                        ),
                    )),
                }
            }
            Event::RolledBack { id, reason } => {
                let Some((_, kind, old)) = self.probation.take().filter(|p| p.0 == id) else {
                    return;
                };
                self.setup.running = old;
                self.setup.previous = None;
                self.restore_info();
                self.record_current(kind);
                if let Some(store) = &self.setup.store {
                    let _ = store.set_journal(None);
                }
                match kind {
                    Kind::Reload => self.report_reload(&format!("reload rolled back: {reason}")),
                    _ => self.send_reply(self.reply(&id, "rolled_back", reason)),
                }
            }
        }
    }

    /// Info and discovery of the running model again after a rollback.
    fn restore_info(&mut self) {
        let entry = self.setup.running.clone();
        let Some(store) = &self.setup.store else {
            return;
        };
        let file = store
            .read_model(&entry)
            .or_else(|_| ModelFile::read(&self.model_path).map_err(|e| e.to_string()));
        if let Ok(staged) = file.and_then(|f| self.stage(&f, &entry, None)) {
            let (_, info, discovery) = staged;
            if let (Some(s), Some(t)) = (&self.shared, &self.topics) {
                s.set_info(info.clone(), &t.info);
            }
            self.setup.info = info;
            self.setup.discovery = discovery;
            self.metrics_fields();
            self.announce_discovery();
        }
    }

    /// `current.json` after a swap or a rollback.
    fn record_current(&self, kind: Kind) {
        let Some(store) = &self.setup.store else {
            return;
        };
        let factory_sha256 = match (kind, store.current()) {
            (Kind::Reload, _) | (_, None) => std::fs::read(&self.model_path)
                .map(|b| sha256_hex(&b))
                .unwrap_or_default(),
            (_, Some(c)) => c.factory_sha256,
        };
        let current = Current {
            running: self.setup.running.clone(),
            previous: self.setup.previous.clone(),
            factory_sha256,
        };
        if let Err(e) = store.set_current(&current) {
            self.report_reload(&format!(
                "cannot record the running model in {}: {e}",
                store.dir().display()
            ));
        }
    }
}

/// Runs a self-test: the reference may hold one input or a batch of
/// them (as `models/*/input.npy` do), run one by one through the pinned
/// model and compared with the reference outputs in order.
fn selftest_run(model: &mut crate::model::Model, t: &SelfTest) -> Result<(), String> {
    let per_input: usize = model.info().inputs[0].shape.iter().product();
    let n = t.input.len() / per_input.max(1);
    if n == 0 || n * per_input != t.input.len() || !t.output.len().is_multiple_of(n) {
        return Err(format!(
            "self-test: {} input and {} output values do not make whole samples of {per_input} inputs",
            t.input.len(),
            t.output.len()
        ));
    }
    let per_output = t.output.len() / n;
    for (k, (input, expected)) in t
        .input
        .chunks(per_input)
        .zip(t.output.chunks(per_output))
        .enumerate()
    {
        let out = model
            .run_f32(input)
            .map_err(|e| format!("self-test: {e}"))?;
        if out.len() != expected.len() {
            return Err(format!(
                "self-test: {} outputs, the reference has {}",
                out.len(),
                expected.len()
            ));
        }
        if let Some((i, (a, b))) = out.iter().zip(expected).enumerate().find(|(_, (a, b))| {
            (*a - *b).abs() > SELFTEST_TOLERANCE * b.abs().max(1.0) || !a.is_finite()
        }) {
            let at = if n > 1 {
                format!("sample {k}, ")
            } else {
                String::new()
            };
            return Err(format!(
                "self-test: {at}output {i} is {a}, the reference says {b}"
            ));
        }
    }
    Ok(())
}

/// The discovery configs of a prepared pipeline.
pub fn discovery_messages(
    config: &Config,
    topics: &Topics,
    prepared: &crate::pipeline::Prepared,
    version: &str,
) -> Vec<(String, Vec<u8>)> {
    let outputs = prepared
        .model
        .info()
        .outputs
        .first()
        .map(|o| o.shape.iter().product())
        .unwrap_or(1);
    homeassistant::discovery(
        &config.homeassistant,
        &Entities {
            device_id: &config.device_id,
            topics,
            postprocess: &prepared.postprocess,
            outputs,
            model_version: version,
        },
    )
}

/// Applies saved `set` settings to a config at start.
pub fn apply_settings(config: &Config, settings: &BTreeMap<String, String>) -> Config {
    let mut out = config.clone();
    for (k, v) in settings {
        if k == "log_level" {
            if let Ok(level) = v.trim_matches('"').parse::<log::LevelFilter>() {
                log::set_max_level(level);
            }
            continue;
        }
        match out.with_setting(k, v) {
            Ok(c) => out = c,
            Err(why) => log::warn!("saved setting {k} = {v} ignored: {why}"),
        }
    }
    out
}
