//! `image_dir` source: a watched directory of image files, one frame per
//! new file, in arrival order (modification time, then name).
//!
//! The directory is polled (every `poll_ms`), so it works on any file
//! system, network mounts included, with no inotify.
//!
//! Two rules keep a file from being read while it is still being written:
//!
//! - A file is read only once its size and modification time held still
//!   across one poll interval (it was listed with the same size and time at
//!   the previous poll). A file therefore waits one to two poll intervals.
//! - Names starting with `.` or ending in `.tmp`, `.part` or `~` are
//!   ignored: a writer that writes `img.jpg.part` (or `.img.jpg`) and
//!   renames it to `img.jpg` when done is never read half-way, however
//!   slowly it writes. This is the safe way to drop files in.
//!
//! The bytes are handed on undecoded (the image stage decodes them), so a
//! file with the right extension and the wrong contents is the image
//! stage's to report.
//!
//! With `after = "keep"` the names of processed files are remembered in
//! memory only: after a restart of edgeinfer the files still in the
//! directory are processed again. A name is forgotten when its file leaves
//! the directory, so a new file of the same name is a new file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::{Sample, Source, SourceError};
use crate::problem::{Origin, Problems};

/// `[source] kind = "image_dir"`: image files dropped into a directory.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageDirConfig {
    /// The watched directory (relative to the config file's directory).
    /// Files are read once their size and modification time held still for
    /// one poll interval; names starting with `.` or ending in `.tmp`,
    /// `.part` or `~` are ignored, so writers can write under such a name
    /// and rename the file into place when it is complete.
    pub path: PathBuf,
    /// What happens to a file once read: `"keep"` (default; processed names
    /// are remembered in memory, so a restart processes the directory
    /// again), `"move:DIR"` (moved into DIR, relative to the config file's
    /// directory, created if missing; a file of the same name there is
    /// replaced) or `"delete"`. A file that cannot be moved or deleted is
    /// reported and left in place, not read again.
    #[serde(default)]
    pub after: After,
    /// How often the directory is listed, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// File name extensions read, without the dot, in any case (`JPG` and
    /// `jpg` alike); other files are left alone.
    #[serde(default = "default_extensions")]
    pub extensions: Vec<String>,
}

fn default_poll_ms() -> u64 {
    200
}

fn default_extensions() -> Vec<String> {
    vec!["jpg".into(), "jpeg".into(), "png".into()]
}

/// What an `image_dir` source does with a file it read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum After {
    /// Leave it (its name is remembered so it is read once).
    #[default]
    Keep,
    /// Move it into this directory.
    Move(PathBuf),
    /// Delete it.
    Delete,
}

impl TryFrom<String> for After {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "keep" => Ok(After::Keep),
            "delete" => Ok(After::Delete),
            _ => match s.strip_prefix("move:") {
                Some(dir) if !dir.trim().is_empty() => Ok(After::Move(PathBuf::from(dir))),
                _ => Err(format!(
                    "expected \"keep\", \"delete\" or \"move:DIR\", found {s:?}"
                )),
            },
        }
    }
}

impl ImageDirConfig {
    /// A config watching `path` with every other setting at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ImageDirConfig {
            path: path.into(),
            after: After::Keep,
            poll_ms: default_poll_ms(),
            extensions: default_extensions(),
        }
    }

    /// Checks `[source]` of this kind.
    pub fn validate(&self, p: &mut Problems) {
        p.check(!self.path.as_os_str().is_empty(), "source.path", || {
            "expected the directory to watch, found an empty path".into()
        });
        p.at_least_one(self.poll_ms, "source.poll_ms");
        p.check(!self.extensions.is_empty(), "source.extensions", || {
            "expected at least one file name extension, e.g. [\"jpg\", \"png\"]".into()
        });
        for (i, e) in self.extensions.iter().enumerate() {
            p.check(
                !e.is_empty() && !e.contains(['.', '/']),
                &format!("source.extensions[{i}]"),
                || format!("expected an extension without the dot, e.g. \"jpg\", found {e:?}"),
            );
        }
        if let After::Move(dir) = &self.after {
            let origin = p.origin();
            p.check(
                origin.resolve(dir) != origin.resolve(&self.path),
                "source.after",
                || {
                    format!(
                        "expected a directory other than the watched one, found {:?}",
                        dir.display().to_string()
                    )
                },
            );
        }
    }

    /// The source this config describes (paths resolved against `origin`).
    /// The directory need not exist yet: it is reported, and watched for.
    pub fn open(&self, origin: &Origin) -> ImageDirSource {
        let after = match &self.after {
            After::Move(dir) => {
                let dir = origin.resolve(dir);
                // Created now when possible; a failure shows at the first
                // move, with the file it concerns.
                let _ = std::fs::create_dir_all(&dir);
                After::Move(dir)
            }
            other => other.clone(),
        };
        ImageDirSource::new(
            origin.resolve(&self.path),
            after,
            Duration::from_millis(self.poll_ms.max(1)),
            &self.extensions,
        )
    }
}

/// A file's size and modification time, as listed.
type Stat = (u64, SystemTime);

/// New files of a watched directory, read once each.
#[derive(Debug)]
pub struct ImageDirSource {
    dir: PathBuf,
    name: String,
    after: After,
    poll: Duration,
    extensions: Vec<String>,
    /// Names read (or given up on) that are still in the directory.
    done: HashSet<OsString>,
    /// Names reported empty, with their stat then: read when it changes.
    empty: HashMap<OsString, Stat>,
    /// What the last listing found, for the stable-file rule.
    listed: HashMap<OsString, Stat>,
    /// Stable files not handed out yet, oldest first.
    ready: VecDeque<(OsString, Stat)>,
    /// Problems to report before the next file (a failed move).
    reports: VecDeque<SourceError>,
    last_poll: Option<Instant>,
    /// The directory could not be listed at the last poll.
    failing: bool,
    /// Files taken from the directory so far (the record number).
    taken: u64,
}

impl ImageDirSource {
    /// Watches `dir` every `poll` for files with one of `extensions`.
    pub fn new(dir: PathBuf, after: After, poll: Duration, extensions: &[String]) -> Self {
        ImageDirSource {
            name: dir.display().to_string(),
            dir,
            after,
            poll,
            extensions: extensions
                .iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
            done: HashSet::new(),
            empty: HashMap::new(),
            listed: HashMap::new(),
            ready: VecDeque::new(),
            reports: VecDeque::new(),
            last_poll: None,
            failing: false,
            taken: 0,
        }
    }

    /// True for a name this source reads: a wanted extension, and not a
    /// name writers use while writing.
    fn wanted(&self, name: &OsStr) -> bool {
        let Some(name) = name.to_str() else {
            // Extensions are ASCII: a name that is not UTF-8 still has one.
            let lossy = name.to_string_lossy().into_owned();
            return self.wanted(OsStr::new(&lossy));
        };
        if in_progress(name) {
            return false;
        }
        let ext = Path::new(name).extension().and_then(OsStr::to_str);
        ext.is_some_and(|e| self.extensions.iter().any(|w| w.eq_ignore_ascii_case(e)))
    }

    /// Lists the directory; files stable since the last listing become
    /// ready. `Err` only when listing starts failing.
    fn poll(&mut self) -> Result<(), SourceError> {
        self.last_poll = Some(Instant::now());
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                self.listed.clear();
                if std::mem::replace(&mut self.failing, true) {
                    return Ok(());
                }
                return Err(SourceError::Unavailable {
                    origin: self.name.clone(),
                    reason: format!("cannot list the directory: {e}; watching for it to come back"),
                });
            }
        };
        if std::mem::take(&mut self.failing) {
            log::warn!("{}: the directory can be listed again", self.name);
        }
        let mut listed = HashMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !self.wanted(&name) {
                continue;
            }
            // Follows symbolic links: a link to an image is an image.
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            listed.insert(name, (meta.len(), mtime));
        }
        // Names of files that left are forgotten: memory stays bounded by
        // the directory, and a new file of the same name is read.
        self.done.retain(|n| listed.contains_key(n));
        self.empty.retain(|n, _| listed.contains_key(n));
        let mut ready: Vec<(OsString, Stat)> = listed
            .iter()
            .filter(|(name, stat)| {
                !self.done.contains(*name)
                    && self.empty.get(*name) != Some(stat)
                    && self.listed.get(*name) == Some(stat)
            })
            .map(|(n, s)| (n.clone(), *s))
            .collect();
        ready.sort_by(|a, b| (a.1 .1, &a.0).cmp(&(b.1 .1, &b.0)));
        self.ready.extend(ready);
        self.listed = listed;
        Ok(())
    }

    /// Reads one stable file and disposes of it per `after`.
    /// `None` when the file went away since it was listed (another reader
    /// took it): nothing to read, nothing wrong.
    fn take(&mut self, name: OsString, (len, mtime): Stat) -> Result<Option<Sample>, SourceError> {
        self.taken += 1;
        // A file of this name seen later is judged afresh.
        self.listed.remove(&name);
        let shown = name.to_string_lossy().into_owned();
        let path = self.dir.join(&name);
        let bad = |reason: String| SourceError::BadRecord {
            origin: self.name.clone(),
            record: self.taken,
            reason: format!("{shown}: {reason}"),
        };
        if len == 0 {
            // Read again only if it changes: a writer that creates the
            // file and fills it after a pause gets its file read.
            self.empty.insert(name, (len, mtime));
            return Err(bad("empty file".into()));
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) if b.is_empty() => {
                self.empty.insert(name, (len, mtime));
                return Err(bad("empty file".into()));
            }
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::debug!("{}: {shown} went away before it was read", self.name);
                return Ok(None);
            }
            Err(e) => {
                // Not retried: a file that cannot be read now will most
                // likely not be readable at the next poll either.
                self.done.insert(name);
                return Err(bad(format!("cannot read it: {e}; not tried again")));
            }
        };
        let disposed = match &self.after {
            After::Keep => {
                self.done.insert(name.clone());
                Ok(())
            }
            After::Delete => std::fs::remove_file(&path)
                .map_err(|e| format!("cannot delete it: {e}; left in place, not read again")),
            After::Move(dir) => move_file(&path, &dir.join(&name)).map_err(|e| {
                format!(
                    "cannot move it to {}: {e}; left in place, not read again",
                    dir.display()
                )
            }),
        };
        if let Err(reason) = disposed {
            self.done.insert(name);
            self.reports.push_back(bad(reason));
        }
        let ts_ms = mtime
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Ok(Some(Sample::image(ts_ms, bytes, shown)))
    }
}

/// True for names writers use while a file is not complete.
fn in_progress(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with(".tmp")
        || name.ends_with(".part")
        || name.ends_with('~')
}

/// Renames `from` to `to`, creating `to`'s directory when it is missing and
/// copying when they are on different file systems.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && from.exists() => {
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::rename(from, to)
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            std::fs::copy(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

impl Source for ImageDirSource {
    fn next_sample(&mut self) -> Result<Option<Sample>, SourceError> {
        loop {
            if let Some(e) = self.reports.pop_front() {
                return Err(e);
            }
            if let Some((name, stat)) = self.ready.pop_front() {
                match self.take(name, stat)? {
                    Some(sample) => return Ok(Some(sample)),
                    None => continue,
                }
            }
            if let Some(last) = self.last_poll {
                let due = last + self.poll;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            self.poll()?;
        }
    }

    fn channels(&self) -> Option<usize> {
        None
    }

    /// Files arrive at the pace of whoever writes them.
    fn paced(&self) -> bool {
        true
    }
}
