//! Disk-backed store-and-forward for messages awaiting the broker's
//! acknowledgement.
//!
//! Every result message is appended here before it is published and removed
//! only when its PUBACK arrives, so neither a broker outage, a reconnect
//! without the session, nor a restart of the process loses it.
//!
//! On disk: numbered segment files `seg-NNNNNNNNNN.log`, each a sequence of
//! records `[len u32 LE][crc32 u32 LE][id u64 LE][payload]` (the checksum
//! covers id and payload), and beside each an `.ack` file of acknowledged
//! ids (u64 LE). A segment whose records are all acknowledged is deleted. A
//! torn or corrupt record ends its segment: the records before it are kept
//! (copied into a fresh segment) and the damaged file is renamed
//! `*.corrupt` and logged, never a crash.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::queue::OnFull;

/// Bytes of a record's header: length, checksum, id.
const HEADER: u64 = 16;

/// `[outbox]` settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Directory of the segment files, relative to the config file; created
    /// when missing. Default: `$STATE_DIRECTORY/outbox` under systemd, else
    /// `~/.local/state/edgeinfer/<device_id>/outbox`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Most bytes of unacknowledged messages kept on disk.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// A new segment file starts past this size.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// `always`: fsync after every append and ack (survives power loss, wears
    /// SD cards); `never`: leave it to the OS (survives a killed process).
    #[serde(default)]
    pub fsync: Fsync,
    /// When full: `drop_oldest` (default) or `drop_newest`; `block` is
    /// refused: the sensor side must never wait on the network.
    #[serde(default = "default_on_full")]
    pub on_full: OnFull,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            dir: None,
            max_bytes: default_max_bytes(),
            segment_bytes: default_segment_bytes(),
            fsync: Fsync::default(),
            on_full: default_on_full(),
        }
    }
}

fn default_max_bytes() -> u64 {
    64 << 20
}
fn default_segment_bytes() -> u64 {
    1 << 20
}
fn default_on_full() -> OnFull {
    OnFull::DropOldest
}

impl OutboxConfig {
    /// Checks `[outbox]`.
    pub fn validate(&self, p: &mut crate::problem::Problems) {
        p.check(self.on_full != OnFull::Block, "outbox.on_full", || {
            "expected drop_oldest or drop_newest, found block (the pipeline must never wait on the network)".into()
        });
        p.at_least_one(self.max_bytes, "outbox.max_bytes");
        p.at_least_one(self.segment_bytes, "outbox.segment_bytes");
    }

    /// Where the outbox lives: `dir` (relative to the config file), else
    /// systemd's `$STATE_DIRECTORY`, else
    /// `~/.local/state/edgeinfer/<device_id>`, each with `outbox/` below.
    pub fn resolved_dir(&self, origin: &crate::problem::Origin, device_id: &str) -> PathBuf {
        if let Some(d) = &self.dir {
            return origin.resolve(d);
        }
        if let Some(d) = std::env::var_os("STATE_DIRECTORY") {
            return PathBuf::from(d).join("outbox");
        }
        match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h)
                .join(".local/state/edgeinfer")
                .join(device_id)
                .join("outbox"),
            None => origin.resolve(Path::new("edgeinfer-outbox")),
        }
    }
}

/// When the outbox calls fsync.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// After every append and every ack.
    Always,
    /// Never; the OS writes back.
    #[default]
    Never,
}

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// A file operation failed.
    #[error("outbox {path}: {error}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A message larger than the whole outbox.
    #[error("message of {0} bytes does not fit in the outbox")]
    TooLarge(usize),
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> OutboxError + '_ {
    move |error| OutboxError::Io {
        path: path.display().to_string(),
        error,
    }
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    seg: u64,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct Segment {
    log: PathBuf,
    ack: PathBuf,
    /// Unacknowledged records in this segment.
    live: usize,
    /// Bytes of the log file.
    size: u64,
}

/// The store. Not thread-safe by itself: callers share it behind a mutex.
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    pending: BTreeMap<u64, Loc>,
    pending_bytes: u64,
    next_id: u64,
    writer: Option<(u64, File)>,
    /// Number of the next new segment; never reuses one set aside.
    next_seg: u64,
    dropped: u64,
    set_aside: u64,
}

fn seg_paths(dir: &Path, n: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("seg-{n:010}.log")),
        dir.join(format!("seg-{n:010}.ack")),
    )
}

fn read_acks(path: &Path) -> HashSet<u64> {
    let Ok(bytes) = fs::read(path) else {
        return HashSet::new();
    };
    // A torn last id (crash mid-write) is ignored: that message is resent.
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")))
        .collect()
}

/// Creates `dir` and any missing parents readable by the owner only: the
/// outbox holds results that may be sensitive.
fn create_private_dir(dir: &Path) -> Result<(), OutboxError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(io_err(dir))
}

/// One record found in a segment: id, offset of its header, payload.
type Found<'a> = (u64, u64, &'a [u8]);

/// Parses a segment's records; returns them and whether the file was damaged.
fn scan(bytes: &[u8]) -> (Vec<Found<'_>>, bool) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        if bytes.len() - pos < HEADER as usize {
            return (out, true);
        }
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        // A corrupt length may be near u32::MAX: on 32-bit boards the sum
        // would wrap around and the slice below would panic.
        let body_end = match pos
            .checked_add(HEADER as usize)
            .and_then(|p| p.checked_add(len))
        {
            Some(end) if end <= bytes.len() => end,
            _ => return (out, true),
        };
        let covered = &bytes[pos + 8..body_end];
        if crc32fast::hash(covered) != crc {
            return (out, true);
        }
        let id = u64::from_le_bytes(covered[..8].try_into().expect("8 bytes"));
        out.push((id, pos as u64, &covered[8..]));
        pos = body_end;
    }
    (out, false)
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, loading what a previous run
    /// left unacknowledged.
    pub fn open(dir: &Path, config: OutboxConfig) -> Result<Self, OutboxError> {
        create_private_dir(dir)?;
        let mut numbers: Vec<u64> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut ob = Outbox {
            config,
            dir: dir.to_path_buf(),
            segments: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            next_id: 0,
            writer: None,
            next_seg: numbers.last().map(|n| n + 1).unwrap_or(0),
            dropped: 0,
            set_aside: 0,
        };
        let mut salvage: Vec<Vec<u8>> = Vec::new();
        for n in numbers {
            let (log, ack) = seg_paths(dir, n);
            let bytes = fs::read(&log).map_err(io_err(&log))?;
            let acked = read_acks(&ack);
            let (records, damaged) = scan(&bytes);
            for (id, _, _) in &records {
                ob.next_id = ob.next_id.max(id + 1);
            }
            if damaged {
                log::warn!(
                    "outbox: {} is damaged after {} good records; keeping those and setting the file aside",
                    log.display(),
                    records.len()
                );
                salvage.extend(
                    records
                        .iter()
                        .filter(|(id, _, _)| !acked.contains(id))
                        .map(|(_, _, p)| p.to_vec()),
                );
                let aside = log.with_extension("log.corrupt");
                fs::rename(&log, &aside).map_err(io_err(&log))?;
                let _ = fs::remove_file(&ack);
                ob.set_aside += 1;
                continue;
            }
            let mut live = 0;
            for (id, offset, payload) in records {
                if acked.contains(&id) {
                    continue;
                }
                live += 1;
                ob.pending_bytes += payload.len() as u64;
                ob.pending.insert(
                    id,
                    Loc {
                        seg: n,
                        offset,
                        len: payload.len() as u32,
                    },
                );
            }
            if live == 0 {
                let _ = fs::remove_file(&log);
                let _ = fs::remove_file(&ack);
                continue;
            }
            ob.segments.insert(
                n,
                Segment {
                    log,
                    ack,
                    live,
                    size: bytes.len() as u64,
                },
            );
        }
        for payload in salvage {
            ob.push(&payload)?;
        }
        Ok(ob)
    }

    /// Messages waiting for acknowledgement.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Payload bytes waiting.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Messages dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Damaged segment files set aside since opening.
    pub fn set_aside(&self) -> u64 {
        self.set_aside
    }

    /// Ids of the waiting messages, oldest first.
    pub fn ids(&self) -> impl DoubleEndedIterator<Item = u64> + '_ {
        self.pending.keys().copied()
    }

    /// The oldest waiting id greater than `after` (or the oldest of all).
    pub fn next_after(&self, after: Option<u64>) -> Option<u64> {
        match after {
            None => self.pending.keys().next().copied(),
            Some(a) => self.pending.range(a + 1..).next().map(|(k, _)| *k),
        }
    }

    fn new_segment(&mut self) -> Result<(), OutboxError> {
        let n = self.next_seg;
        self.next_seg += 1;
        let (log, ack) = seg_paths(&self.dir, n);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(&log))?;
        self.segments.insert(
            n,
            Segment {
                log,
                ack,
                live: 0,
                size: 0,
            },
        );
        self.writer = Some((n, file));
        Ok(())
    }

    /// Counts a message the caller could not store (a write that failed).
    pub fn count_dropped(&mut self) {
        self.dropped += 1;
    }

    /// The directory of the segment files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `payload`; returns its id. When full, the configured policy
    /// drops the oldest waiting messages or this one (`Ok(None)`).
    pub fn push(&mut self, payload: &[u8]) -> Result<Option<u64>, OutboxError> {
        let size = payload.len() as u64;
        if size > self.config.max_bytes {
            return Err(OutboxError::TooLarge(payload.len()));
        }
        while self.pending_bytes + size > self.config.max_bytes {
            match self.config.on_full {
                // `block` is refused by validation; a library caller who
                // sets it gets the policy that never waits.
                OnFull::DropNewest | OnFull::Block => {
                    self.dropped += 1;
                    return Ok(None);
                }
                OnFull::DropOldest => {
                    let oldest = self.next_after(None).expect("over budget means not empty");
                    self.ack(oldest)?;
                    self.dropped += 1;
                }
            }
        }
        match self.append(payload) {
            // A full (or failing) disk: under drop_oldest, give up the
            // oldest segment file to make room, then try once more.
            Err(OutboxError::Io { .. })
                if self.config.on_full == OnFull::DropOldest && self.drop_oldest_segment()? =>
            {
                self.append(payload)
            }
            other => other,
        }
    }

    /// Drops every waiting message of the oldest segment that is not being
    /// written, deleting its file; false when there is none.
    fn drop_oldest_segment(&mut self) -> Result<bool, OutboxError> {
        let writer = self.writer.as_ref().map(|(n, _)| *n);
        let Some(&oldest) = self.segments.keys().find(|n| Some(**n) != writer) else {
            return Ok(false);
        };
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, loc)| loc.seg == oldest)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.ack(id)?;
            self.dropped += 1;
        }
        log::warn!("outbox: dropped the oldest segment to make room on a full disk");
        Ok(true)
    }

    /// Appends one record to the current segment (a new one when it is full).
    fn append(&mut self, payload: &[u8]) -> Result<Option<u64>, OutboxError> {
        let size = payload.len() as u64;
        let current_full = match &self.writer {
            None => true,
            Some((n, _)) => self
                .segments
                .get(n)
                .is_none_or(|s| s.size >= self.config.segment_bytes),
        };
        if current_full {
            self.new_segment()?;
        }
        let id = self.next_id;
        self.next_id += 1;
        let (n, file) = self.writer.as_mut().expect("a segment is open");
        let seg = self.segments.get_mut(n).expect("open segment is listed");
        let mut record = Vec::with_capacity(HEADER as usize + payload.len());
        let mut covered = id.to_le_bytes().to_vec();
        covered.extend_from_slice(payload);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&covered).to_le_bytes());
        record.extend_from_slice(&covered);
        if let Err(e) = file.write_all(&record) {
            // Cut a partial record off again: a torn record in the middle
            // of a segment would hide every record written after it.
            let _ = file.set_len(seg.size);
            return Err(io_err(&seg.log)(e));
        }
        if self.config.fsync == Fsync::Always {
            file.sync_data().map_err(io_err(&seg.log))?;
        }
        self.pending.insert(
            id,
            Loc {
                seg: *n,
                offset: seg.size,
                len: payload.len() as u32,
            },
        );
        seg.size += record.len() as u64;
        seg.live += 1;
        self.pending_bytes += size;
        Ok(Some(id))
    }

    /// The payload of waiting message `id`.
    pub fn read(&self, id: u64) -> Result<Option<Vec<u8>>, OutboxError> {
        let Some(loc) = self.pending.get(&id) else {
            return Ok(None);
        };
        let seg = &self.segments[&loc.seg];
        let mut f = File::open(&seg.log).map_err(io_err(&seg.log))?;
        f.seek(SeekFrom::Start(loc.offset + HEADER))
            .map_err(io_err(&seg.log))?;
        let mut buf = vec![0u8; loc.len as usize];
        f.read_exact(&mut buf).map_err(io_err(&seg.log))?;
        Ok(Some(buf))
    }

    /// Marks `id` delivered; deletes its segment once all of it is.
    pub fn ack(&mut self, id: u64) -> Result<(), OutboxError> {
        let Some(loc) = self.pending.remove(&id) else {
            return Ok(());
        };
        self.pending_bytes -= loc.len as u64;
        let is_writer = self.writer.as_ref().is_some_and(|(n, _)| *n == loc.seg);
        let seg = self
            .segments
            .get_mut(&loc.seg)
            .expect("pending ids have segments");
        seg.live -= 1;
        if seg.live == 0 && (!is_writer || seg.size >= self.config.segment_bytes) {
            let seg = self.segments.remove(&loc.seg).expect("just seen");
            if is_writer {
                self.writer = None;
            }
            fs::remove_file(&seg.log).map_err(io_err(&seg.log))?;
            let _ = fs::remove_file(&seg.ack);
            return Ok(());
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&seg.ack)
            .map_err(io_err(&seg.ack))?;
        f.write_all(&id.to_le_bytes()).map_err(io_err(&seg.ack))?;
        if self.config.fsync == Fsync::Always {
            f.sync_data().map_err(io_err(&seg.ack))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_length_near_u32_max_marks_the_segment_damaged() {
        let mut bytes = Vec::new();
        for len in [u32::MAX, u32::MAX - 15, u32::MAX - 16] {
            bytes.clear();
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&[0; 28]);
            let (records, damaged) = scan(&bytes);
            assert!(records.is_empty() && damaged, "len {len}");
        }
    }

    fn cfg(max: u64, seg: u64, on_full: OnFull) -> OutboxConfig {
        OutboxConfig {
            dir: None,
            max_bytes: max,
            segment_bytes: seg,
            fsync: Fsync::Never,
            on_full,
        }
    }

    fn open(dir: &Path) -> Outbox {
        Outbox::open(dir, cfg(1 << 20, 64, OnFull::DropOldest)).unwrap()
    }

    #[test]
    fn survives_reopen_and_forgets_acked() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = open(dir.path());
        let ids: Vec<u64> = (0..10u8)
            .map(|i| ob.push(&[i; 20]).unwrap().unwrap())
            .collect();
        ob.ack(ids[0]).unwrap();
        ob.ack(ids[3]).unwrap();
        drop(ob);
        let mut ob = open(dir.path());
        let left: Vec<u64> = ob.ids().collect();
        assert_eq!(left, vec![1, 2, 4, 5, 6, 7, 8, 9]);
        assert_eq!(ob.read(4).unwrap().unwrap(), vec![4u8; 20]);
        assert_eq!(ob.next_after(Some(2)), Some(4));
        // New ids continue after the old ones.
        assert_eq!(ob.push(b"x").unwrap(), Some(10));
        for id in left {
            ob.ack(id).unwrap();
        }
        ob.ack(10).unwrap();
        assert!(ob.is_empty());
        drop(ob);
        // Fully acknowledged segments are gone from disk.
        let logs = fs::read_dir(dir.path()).unwrap().count();
        assert!(logs <= 2, "{logs} files left");
        assert!(open(dir.path()).is_empty());
    }

    #[test]
    fn full_policies_drop_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(dir.path(), cfg(100, 1 << 20, OnFull::DropOldest)).unwrap();
        for i in 0..5u8 {
            ob.push(&[i; 30]).unwrap();
        }
        assert_eq!(ob.ids().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(ob.dropped(), 2);
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(dir.path(), cfg(100, 1 << 20, OnFull::DropNewest)).unwrap();
        for i in 0..5u8 {
            ob.push(&[i; 30]).unwrap();
        }
        assert_eq!(ob.ids().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(ob.dropped(), 2);
        assert!(matches!(
            ob.push(&[0; 101]),
            Err(OutboxError::TooLarge(101))
        ));
    }

    #[test]
    fn damaged_segment_is_set_aside_keeping_good_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(dir.path(), cfg(1 << 20, 1 << 20, OnFull::DropOldest)).unwrap();
        for i in 0..4u8 {
            ob.push(&[i; 10]).unwrap();
        }
        drop(ob);
        let (log, _) = seg_paths(dir.path(), 0);
        let mut bytes = fs::read(&log).unwrap();
        // Flip a byte inside the third record's payload.
        bytes[2 * 26 + 20] ^= 0xff;
        fs::write(&log, &bytes).unwrap();
        let ob = Outbox::open(dir.path(), cfg(1 << 20, 1 << 20, OnFull::DropOldest)).unwrap();
        assert_eq!(ob.len(), 2);
        assert_eq!(ob.set_aside(), 1);
        let first = ob.next_after(None).unwrap();
        assert_eq!(ob.read(first).unwrap().unwrap(), vec![0u8; 10]);
        assert!(dir.path().join("seg-0000000000.log.corrupt").exists());
        // A torn tail (crash mid-append) is handled the same way.
        drop(ob);
        let (log, _) = seg_paths(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[9, 0, 0]).unwrap();
        drop(f);
        let ob = Outbox::open(dir.path(), cfg(1 << 20, 1 << 20, OnFull::DropOldest)).unwrap();
        assert_eq!(ob.len(), 2);
    }
}
