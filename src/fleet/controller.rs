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

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::VerifyingKey;

use super::homeassistant::{self, Entities, HomeAssistantConfig};
use super::remote::RemoteConfig;
use super::store::{sha256_hex, Current, Entry, Journal, Phase, Store};
use super::update::Receiving;
use super::wire::Reply;
use crate::config::Config;
use crate::model::ModelFile;
use crate::mqtt::{Link, Message, Shared, Topics};
use crate::pipeline::swap::{Control, Event};

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

/// A swap asked of the pipeline, awaiting its `Swapped`.
pub(super) struct Pending {
    pub(super) id: String,
    pub(super) kind: Kind,
    pub(super) entry: Entry,
    pub(super) info: String,
    pub(super) discovery: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Update,
    Rollback,
    Reload,
}

pub(super) struct Worker {
    pub(super) setup: FleetSetup,
    pub(super) remote: RemoteConfig,
    pub(super) shared: Option<Arc<Shared>>,
    pub(super) topics: Option<Topics>,
    pub(super) receiving: Option<Receiving>,
    /// An update whose further chunks are dropped without an answer: one
    /// already refused or complete (QoS 1 may deliver a chunk twice), or
    /// an unknown one already answered.
    pub(super) ignore_chunks_of: Option<String>,
    pub(super) pending: Option<Pending>,
    /// The order on probation, and the model it replaced.
    pub(super) probation: Option<(String, Kind, Entry)>,
    pub(super) nonces: Vec<(u64, u64)>,
    pub(super) model_path: PathBuf,
    /// The model file's (mtime, size) when last looked at.
    pub(super) watched: Option<Option<(SystemTime, u64)>>,
    pub(super) hup: Arc<AtomicBool>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) restart: Arc<AtomicBool>,
    pub(super) done: Arc<AtomicBool>,
}

impl Worker {
    pub(super) fn device(&self) -> &str {
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

    pub(super) fn ha(&self) -> HomeAssistantConfig {
        self.setup.config.homeassistant.clone()
    }

    pub(super) fn reply(&self, id: &str, outcome: &str, detail: String) -> Reply {
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

    pub(super) fn send_reply(&self, r: Reply) {
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

    pub(super) fn refuse(&mut self, id: &str, why: impl Into<String>) {
        // Chunks that follow a refused order belong to nothing: they are
        // dropped without a second answer.
        self.ignore_chunks_of = Some(id.to_string());
        self.send_reply(self.reply(id, "refused", why.into()));
    }

    pub(super) fn metrics_fields(&self) {
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
    pub(super) fn announce_discovery(&self) {
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
                                sha256: p.entry.sha256.clone(),
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
    pub(super) fn restore_info(&mut self) {
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
    pub(super) fn record_current(&self, kind: Kind) {
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

/// The discovery configs of a prepared pipeline.
pub fn discovery_messages(
    config: &Config,
    topics: &Topics,
    prepared: &crate::pipeline::prepare::Prepared,
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

/// The model file's (modified time, size), to notice a replacement.
pub(super) fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}
