//! The device's fleet state on disk, under `[remote] state_dir`:
//!
//! ```text
//! models/<sha256>.onnx   the running model and the one before it
//! current.json           which of them runs, and which came before
//! journal.json           an update in progress: receiving, applying, on probation
//! incoming/<id>.part     the chunks of the update being received
//! settings.json          `set` commands, applied again at every start
//! nonces.json            orders already carried out (replay window)
//! ```
//!
//! Every file is replaced by writing a temporary file, syncing it,
//! renaming it over the old one and syncing the directory: power lost at
//! any moment leaves the old version or the new one. A model file is
//! complete and synced before `current.json` can name it, and its sha256
//! is checked again when it is loaded, so a start never runs a broken
//! model.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{hex, ModelFile};

/// A model in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// sha256 of the file, 64 hex digits: also its name in `models/`.
    pub sha256: String,
    /// Its version.
    pub version: String,
}

/// `current.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    /// The model to run.
    pub running: Entry,
    /// The one it replaced, kept for a rollback.
    pub previous: Option<Entry>,
    /// sha256 of the config's model file when this was written: a file
    /// replaced while the device was stopped is newer than the store.
    pub factory_sha256: String,
}

/// Where an update stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Chunks are arriving.
    Receiving,
    /// Verified; being loaded, self-tested and swapped in.
    Applying,
    /// Running, until its first good inference.
    Probation,
}

/// `journal.json`: the update in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The update's order id.
    pub id: String,
    /// Its phase.
    pub phase: Phase,
    /// sha256 of its model, once known (applying, probation).
    #[serde(default)]
    pub sha256: String,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

impl Store {
    /// Opens (creating) the state directory.
    pub fn open(dir: &Path) -> std::io::Result<Store> {
        std::fs::create_dir_all(dir.join("models"))?;
        std::fs::create_dir_all(dir.join("incoming"))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_json<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let bytes = std::fs::read(self.dir.join(name)).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                log::warn!("{}: ignored: {e}", self.dir.join(name).display());
                None
            }
        }
    }

    fn write_json<T: Serialize>(&self, name: &str, value: Option<&T>) -> std::io::Result<()> {
        let path = self.dir.join(name);
        match value {
            Some(v) => write_atomic(&path, &serde_json::to_vec_pretty(v).unwrap_or_default()),
            None => match std::fs::remove_file(&path) {
                Ok(()) => sync_dir(&self.dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    /// `current.json`, when an update or a reload has happened.
    pub fn current(&self) -> Option<Current> {
        self.read_json("current.json")
    }

    /// Replaces `current.json` (and deletes models it no longer names).
    pub fn set_current(&self, current: &Current) -> std::io::Result<()> {
        self.write_json("current.json", Some(current))?;
        let keep: Vec<&str> = std::iter::once(&current.running)
            .chain(&current.previous)
            .map(|e| e.sha256.as_str())
            .collect();
        if let Ok(dir) = std::fs::read_dir(self.dir.join("models")) {
            for f in dir.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let sha = name.trim_end_matches(".onnx");
                if !keep.contains(&sha) {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        Ok(())
    }

    /// The update in progress.
    pub fn journal(&self) -> Option<Journal> {
        self.read_json("journal.json")
    }

    /// Records (or, with `None`, ends) the update in progress.
    pub fn set_journal(&self, journal: Option<&Journal>) -> std::io::Result<()> {
        self.write_json("journal.json", journal)
    }

    /// Stores model bytes under their sha256 (synced); returns the sha256.
    pub fn put_model(&self, bytes: &[u8]) -> std::io::Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.model_path(&sha);
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        Ok(sha)
    }

    /// Where the model `sha256` is kept.
    pub fn model_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("models").join(format!("{sha256}.onnx"))
    }

    /// Reads a stored model, checking its sha256.
    pub fn read_model(&self, entry: &Entry) -> Result<ModelFile, String> {
        let path = self.model_path(&entry.sha256);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let sha = sha256_hex(&bytes);
        if sha != entry.sha256 {
            return Err(format!(
                "{}: sha256 {sha}, expected {}",
                path.display(),
                entry.sha256
            ));
        }
        ModelFile::from_bytes(bytes, &format!("{} ({})", path.display(), entry.version))
            .map_err(|e| e.to_string())
    }

    /// The partial file of update `id`.
    pub fn incoming(&self, id: &str) -> PathBuf {
        let safe: String = id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(64)
            .collect();
        self.dir.join("incoming").join(format!("{safe}.part"))
    }

    /// Deletes every partial update.
    pub fn clear_incoming(&self) {
        if let Ok(dir) = std::fs::read_dir(self.dir.join("incoming")) {
            for f in dir.flatten() {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }

    /// Settings changed by `set`: name → TOML value.
    pub fn settings(&self) -> BTreeMap<String, String> {
        self.read_json("settings.json").unwrap_or_default()
    }

    /// Replaces the saved settings.
    pub fn set_settings(&self, settings: &BTreeMap<String, String>) -> std::io::Result<()> {
        self.write_json("settings.json", Some(settings))
    }

    /// Orders carried out recently: (ts_ms, nonce).
    pub fn nonces(&self) -> Vec<(u64, u64)> {
        self.read_json("nonces.json").unwrap_or_default()
    }

    /// Replaces the recent orders.
    pub fn set_nonces(&self, nonces: &[(u64, u64)]) -> std::io::Result<()> {
        self.write_json("nonces.json", Some(&nonces))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_keeps_only_the_models_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.put_model(b"a").unwrap();
        let b = s.put_model(b"b").unwrap();
        let c = s.put_model(b"c").unwrap();
        let entry = |sha: &str| Entry {
            sha256: sha.into(),
            version: "v".into(),
        };
        let cur = Current {
            running: entry(&c),
            previous: Some(entry(&b)),
            factory_sha256: a.clone(),
        };
        s.set_current(&cur).unwrap();
        assert_eq!(s.current(), Some(cur));
        assert!(!s.model_path(&a).exists());
        assert!(s.model_path(&b).exists() && s.model_path(&c).exists());
        // A stored file that changed on disk is refused.
        std::fs::write(s.model_path(&c), b"x").unwrap();
        assert!(s.read_model(&entry(&c)).unwrap_err().contains("expected"));
        s.set_journal(Some(&Journal {
            id: "u".into(),
            phase: Phase::Probation,
            sha256: String::new(),
        }))
        .unwrap();
        assert_eq!(s.journal().unwrap().phase, Phase::Probation);
        s.set_journal(None).unwrap();
        assert_eq!(s.journal(), None);
    }
}
