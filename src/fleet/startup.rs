//! The model a device starts with: the store's, unless the config's file
//! was replaced since; an update a restart cut short is ended and answered.

use super::store::{Current, Entry, Phase, Store};
use super::wire;
use crate::config::Config;
use crate::model::ModelFile;
use crate::pipeline::prepare::model_version;

/// The model a device starts with, and what the start has to report.
#[derive(Debug)]
pub struct Startup {
    /// The model to run.
    pub file: ModelFile,
    /// Its store entry (version from the store or its metadata).
    pub entry: Entry,
    /// The model before it, for a rollback.
    pub previous: Option<Entry>,
    /// An update on probation: its id (the pipeline goes back to
    /// `previous` if it fails).
    pub probation: Option<String>,
    /// Replies to send once connected: updates a restart interrupted.
    pub replies: Vec<wire::Reply>,
}

/// Chooses the start model: the store's (checked by its sha256), unless
/// the config's file was replaced since; an update cut short by a restart
/// is ended here, and reported.
/// `factory` is the config's model file.
pub fn startup(config: &Config, store: &Store, factory: ModelFile) -> Startup {
    let factory_sha = factory.sha256();
    let factory_entry = Entry {
        version: model_version(&factory, &factory_sha),
        sha256: factory_sha.clone(),
    };
    let mut replies = Vec::new();
    let mut probation = None;
    let current = store.current();
    let journal = store.journal();
    let reply = |id: &str, outcome: &str, detail: String, running: &Entry| wire::Reply {
        id: id.into(),
        device: config.device_id.clone(),
        outcome: outcome.into(),
        detail,
        model_sha256: running.sha256.clone(),
        model_version: running.version.clone(),
        data: None,
    };
    let current = match current {
        Some(c) if c.factory_sha256 == factory_sha => Some(c),
        Some(_) => {
            log::warn!(
                "{}: replaced since the last start: it runs instead of the stored model",
                factory.origin()
            );
            let _ = store.set_journal(None);
            None
        }
        None => None,
    };
    let Some(current) = current else {
        if let Some(j) = journal {
            replies.push(reply(
                &j.id,
                "interrupted",
                format!(
                    "the device restarted while {} the update; it runs its previous model",
                    phase_name(j.phase)
                ),
                &factory_entry,
            ));
            store.clear_incoming();
            let _ = store.set_journal(None);
        }
        return Startup {
            file: factory,
            entry: factory_entry,
            previous: None,
            probation: None,
            replies,
        };
    };
    if let Some(j) = &journal {
        match j.phase {
            // Swapped in (current.json names it) and not yet confirmed.
            Phase::Probation => probation = Some(j.id.clone()),
            Phase::Applying if j.sha256 == current.running.sha256 => probation = Some(j.id.clone()),
            phase => {
                replies.push(reply(
                    &j.id,
                    "interrupted",
                    format!(
                        "the device restarted while {} the update; it runs its previous model",
                        phase_name(phase)
                    ),
                    &current.running,
                ));
                store.clear_incoming();
                let _ = store.set_journal(None);
            }
        }
    }
    match store.read_model(&current.running) {
        Ok(file) => Startup {
            file,
            entry: current.running,
            previous: current.previous,
            probation,
            replies,
        },
        Err(why) => {
            // Only a damaged disk gets here: the store syncs a model before
            // naming it.
            log::error!("stored model unusable ({why}); starting with the previous one");
            let fallback = current
                .previous
                .as_ref()
                .and_then(|p| store.read_model(p).ok().map(|f| (f, p.clone())));
            let (file, entry) = fallback.unwrap_or((factory, factory_entry));
            if let Some(j) = &journal {
                replies.push(reply(
                    &j.id,
                    "rolled_back",
                    format!("the new model could not be read at start: {why}"),
                    &entry,
                ));
            }
            let _ = store.set_journal(None);
            let _ = store.set_current(&Current {
                running: entry.clone(),
                previous: None,
                factory_sha256: factory_sha,
            });
            Startup {
                file,
                entry,
                previous: None,
                probation: None,
                replies,
            }
        }
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Receiving => "receiving",
        Phase::Applying => "applying",
        Phase::Probation => "testing",
    }
}
