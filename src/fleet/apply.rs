//! Changing the running model: an update's chunks, verification and
//! staging, rollback, and reloading the model file; the staged stages go
//! to the pipeline through `pipeline::swap`.

use std::time::Duration;

use super::controller::{discovery_messages, file_stamp, Kind, Pending, Worker};
use super::store::{sha256_hex, Entry, Journal, Phase, Store};
use super::update::Receiving;
use super::wire::{Chunk, SelfTest};
use crate::clock::now_ms;
use crate::model::ModelFile;
use crate::pipeline::swap::{Change, Stages};
use crate::schema::ModelTag;

/// A model ready to swap in: its stages, its info document and its
/// discovery configs.
type Staged = (Stages, String, Vec<(String, Vec<u8>)>);

/// Relative tolerance of a self-test.
const SELFTEST_TOLERANCE: f32 = 1e-4;

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

/// The reference input and output beside a model file (`input.npy`,
/// `output.npy`, as `models/` ships them), for a self-test.
pub fn reference_pair(model: &std::path::Path) -> Option<SelfTest> {
    let dir = model.parent()?;
    SelfTest::read(&dir.join("input.npy"), &dir.join("output.npy")).ok()
}

impl Worker {
    /// Resolves `file` against the running config, checks it takes the
    /// running window and passes `selftest`: the stages, info and
    /// discovery that come with it.
    pub(super) fn stage(
        &self,
        file: &ModelFile,
        entry: &Entry,
        selftest: Option<&SelfTest>,
    ) -> Result<Staged, String> {
        let config = &self.setup.config;
        let prepared = crate::pipeline::prepare::prepare(config, file, self.setup.channels)
            .map_err(|ps| {
                ps.iter()
                    .map(|p| format!("{}: {}", p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
        let shape = prepared.input_shape();
        // An image model may take any size: the image stage fits each
        // image to it. A window cannot change its shape under a running
        // source.
        if prepared.image.is_none() && shape != self.setup.window_shape {
            return Err(format!(
                "the model takes input {shape:?}, the running pipeline gives {:?}",
                self.setup.window_shape
            ));
        }
        let mut prepared = prepared;
        if let Some(t) = selftest {
            selftest_run(&mut prepared.model, t)?;
        }
        let info = crate::pipeline::metrics::info_json(config, &prepared, &entry.version);
        let discovery = self.discovery_for(&prepared, &entry.version);
        let tag = ModelTag::new(&entry.sha256, &entry.version);
        let stages = Stages {
            model: prepared.model,
            image: prepared.image,
            preprocess: prepared.preprocess,
            postprocess: prepared.postprocess,
            labels: prepared.labels,
            tag,
        };
        Ok((stages, info, discovery))
    }

    fn discovery_for(
        &self,
        prepared: &crate::pipeline::prepare::Prepared,
        version: &str,
    ) -> Vec<(String, Vec<u8>)> {
        let (Some(topics), true) = (&self.topics, self.ha().enabled) else {
            return Vec::new();
        };
        discovery_messages(&self.setup.config, topics, prepared, version)
    }

    pub(super) fn swap(&mut self, id: &str, kind: Kind, entry: Entry, staged: Staged) {
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

    pub(super) fn start_update(&mut self, id: &str, manifest: super::wire::Manifest) {
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
            sha256: String::new(),
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

    pub(super) fn on_chunk(&mut self, payload: &[u8]) {
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

    pub(super) fn check_chunk_timeout(&mut self) {
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
        if duplicates > 0 {
            log::info!("update {id}: {duplicates} chunks arrived twice (ignored)");
        }
        let entry = Entry {
            sha256: sha256_hex(&bundle.model),
            version: version.into(),
        };
        // With the model's sha256: a restart after `current.json` named it
        // and before this journal said "probation" resumes the probation.
        let journal = Journal {
            id: id.into(),
            phase: Phase::Applying,
            sha256: entry.sha256.clone(),
        };
        let _ = store.set_journal(Some(&journal));
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

    pub(super) fn watch(&mut self) {
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

    pub(super) fn reload(&mut self) {
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
            version: crate::pipeline::prepare::model_version(&file, &sha),
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

    pub(super) fn report_reload(&self, why: &str) {
        log::error!("{why}");
        if let Some(s) = &self.shared {
            s.report_error(why);
        }
    }
}
