//! Receiving an update: chunks written at their offset in one partial file
//! (so order does not matter and a duplicate rewrites the same bytes), then
//! size and sha256 checked against the signed manifest before anything is
//! decoded.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::wire::{Bundle, Chunk, Manifest};
use crate::model::hex;

/// An update being received.
#[derive(Debug)]
pub struct Receiving {
    /// The update's order id.
    pub id: String,
    /// What was signed.
    pub manifest: Manifest,
    path: PathBuf,
    file: File,
    have: Vec<bool>,
    missing: u64,
    /// Chunks that arrived twice (QoS 1 redeliveries), ignored.
    pub duplicates: u64,
    /// When the last chunk arrived.
    pub last_chunk: Instant,
}

impl Receiving {
    /// Starts receiving `manifest`'s chunks into `path`.
    pub fn start(id: &str, manifest: Manifest, path: PathBuf) -> Result<Receiving, String> {
        if manifest.chunk_bytes == 0 {
            return Err("manifest: chunk_bytes is 0".into());
        }
        let file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let chunks = manifest.chunks();
        Ok(Receiving {
            id: id.into(),
            path,
            file,
            have: vec![false; chunks as usize],
            missing: chunks,
            duplicates: 0,
            last_chunk: Instant::now(),
            manifest,
        })
    }

    /// Stores one chunk; `Ok(true)` once every chunk is in.
    pub fn add(&mut self, chunk: &Chunk) -> Result<bool, String> {
        self.last_chunk = Instant::now();
        let n = self.have.len();
        let i = chunk.index as usize;
        if i >= n {
            return Err(format!("chunk {i} of an update of {n} chunks"));
        }
        let size = self.manifest.size;
        let step = u64::from(self.manifest.chunk_bytes);
        let offset = i as u64 * step;
        let expected = step.min(size - offset);
        if chunk.data.len() as u64 != expected {
            return Err(format!(
                "chunk {i} has {} bytes, expected {expected}",
                chunk.data.len()
            ));
        }
        if self.have[i] {
            self.duplicates += 1;
            return Ok(self.missing == 0);
        }
        self.file
            .write_all_at(&chunk.data, offset)
            .map_err(|e| format!("cannot store chunk {i} in {}: {e}", self.path.display()))?;
        self.have[i] = true;
        self.missing -= 1;
        Ok(self.missing == 0)
    }

    /// The chunks not received yet (the first few).
    pub fn missing(&self) -> String {
        let list: Vec<String> = self
            .have
            .iter()
            .enumerate()
            .filter(|(_, h)| !**h)
            .map(|(i, _)| i.to_string())
            .take(10)
            .collect();
        format!(
            "{} of {} chunks missing ({}{})",
            self.missing,
            self.have.len(),
            list.join(", "),
            if self.missing > 10 { ", ..." } else { "" }
        )
    }

    /// Syncs the file and checks it against the manifest; the bundle when
    /// it matches.
    pub fn finish(&self) -> Result<Bundle, String> {
        self.file
            .sync_all()
            .map_err(|e| format!("cannot sync {}: {e}", self.path.display()))?;
        let bytes = std::fs::read(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        if bytes.len() as u64 != self.manifest.size {
            return Err(format!(
                "{} bytes received, the manifest says {}",
                bytes.len(),
                self.manifest.size
            ));
        }
        let sha = hex(&Sha256::digest(&bytes));
        if sha != self.manifest.sha256 {
            return Err(format!(
                "sha256 mismatch: received {sha}, signed {}",
                self.manifest.sha256
            ));
        }
        postcard::from_bytes(&bytes).map_err(|e| format!("not an update bundle: {e}"))
    }

    /// Deletes the partial file.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Splits a bundle into the manifest and chunks that carry it.
pub fn split(
    bundle: &Bundle,
    id: &str,
    version: &str,
    chunk_bytes: u32,
    inputs: Vec<String>,
    outputs: Vec<String>,
) -> (Manifest, Vec<Chunk>) {
    let bytes = postcard::to_stdvec(bundle).unwrap_or_default();
    let manifest = Manifest {
        sha256: hex(&Sha256::digest(&bytes)),
        size: bytes.len() as u64,
        chunk_bytes: chunk_bytes.max(1),
        version: version.into(),
        inputs,
        outputs,
    };
    let chunks = bytes
        .chunks(chunk_bytes.max(1) as usize)
        .enumerate()
        .map(|(i, c)| Chunk {
            id: id.into(),
            index: i as u32,
            data: c.to_vec(),
        })
        .collect();
    (manifest, chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_in_any_order_with_duplicates_assemble() {
        let bundle = Bundle {
            model: (0..1000u32).map(|i| (i * 7) as u8).collect(),
            selftest: None,
        };
        let (m, mut chunks) = split(&bundle, "u1", "v2", 64, vec![], vec![]);
        assert_eq!(chunks.len() as u64, m.chunks());
        chunks.reverse();
        chunks.push(chunks[3].clone());
        let dir = tempfile::tempdir().unwrap();
        let mut r = Receiving::start("u1", m, dir.path().join("u1.part")).unwrap();
        let mut done = false;
        for c in &chunks {
            done = r.add(c).unwrap();
        }
        assert!(done);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.finish().unwrap(), bundle);
    }

    #[test]
    fn wrong_sizes_missing_chunks_and_other_bytes_are_refused() {
        let bundle = Bundle {
            model: vec![1; 300],
            selftest: None,
        };
        let (m, chunks) = split(&bundle, "u", "v", 100, vec![], vec![]);
        let dir = tempfile::tempdir().unwrap();
        let mut r = Receiving::start("u", m.clone(), dir.path().join("a")).unwrap();
        let mut short = chunks[0].clone();
        short.data.pop();
        assert!(r.add(&short).unwrap_err().contains("expected 100"));
        let mut beyond = chunks[0].clone();
        beyond.index = 99;
        assert!(r.add(&beyond).is_err());
        assert!(!r.add(&chunks[0]).unwrap());
        assert!(r
            .missing()
            .starts_with(&format!("{} of {}", chunks.len() - 1, chunks.len())));
        // Every chunk, one of them with other bytes: the sha256 catches it.
        let mut r = Receiving::start("u", m, dir.path().join("b")).unwrap();
        for c in &chunks {
            let mut c = c.clone();
            if c.index == 1 {
                c.data[5] ^= 0xff;
            }
            r.add(&c).unwrap();
        }
        assert!(r.finish().unwrap_err().contains("sha256 mismatch"));
    }
}
