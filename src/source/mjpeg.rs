//! `mjpeg` source: a Motion-JPEG byte stream (JPEG images back to back) from
//! a program's stdout (`rpicam-vid --codec mjpeg -o -`) or from a file or
//! FIFO, one frame per sample.
//!
//! Frames are cut at their JPEG markers by [`Splitter`] (`jpeg_split.rs`);
//! garbage and broken frames are counted and reported as bad records.
//!
//! A camera is faster than a model. For a program or a FIFO (live), a reader
//! thread reads the stream all the time and keeps only the newest complete
//! frame; a frame replaced before the pipeline took it is skipped and
//! counted ([`Source::skipped`]). A regular file is a recording: every frame
//! is handed out in order and nothing is skipped for a busy model.
//! `every_nth` and `max_fps` thin the stream in both cases.
//!
//! Frames are numbered from 0 in stream order since the source started,
//! skipped ones included (and across program restarts), so the `frame N`
//! origin of each result shows the gaps.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::jpeg_split::{Split, Splitter};
use super::process::{spawn, Backoff};
use super::{now_ms, Sample, Source, SourceError};
use crate::problem::{Origin, Problems};

/// `[source] kind = "mjpeg"`: a Motion-JPEG stream, one frame per sample.
/// Exactly one of `command` and `path`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MjpegConfig {
    /// The program writing the stream to its stdout, and its arguments,
    /// e.g. `["rpicam-vid", "-t", "0", "--codec", "mjpeg", "-o", "-"]`.
    /// It is started again after it exits (any exit), with a delay that
    /// doubles from `restart_min_ms` to `restart_max_ms`. Its stderr is
    /// logged at debug level only (cameras print a line per frame); the
    /// last lines are logged as a warning when it exits.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// A file or a FIFO holding the stream (relative to the config file's
    /// directory); it must exist when the source starts. A regular file is
    /// a recording: every frame, then the end of the input. A FIFO (or
    /// character device) is live: when its writer closes it, it is opened
    /// again for the next writer.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Larger frames are broken frames: counted, reported and skipped.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// At most this many frames per second: a frame arriving sooner than
    /// 1/max_fps after the last one handed out is skipped (counted). For a
    /// recording (a regular file) frames are spaced out to this rate
    /// instead, as nothing is lost by waiting for a file.
    #[serde(default)]
    pub max_fps: Option<f64>,
    /// Hand out only frames 0, n, 2n, ... of the stream; the others are
    /// skipped (counted).
    #[serde(default = "one")]
    pub every_nth: u64,
    /// First restart delay of `command`, in milliseconds.
    #[serde(default = "default_restart_min")]
    pub restart_min_ms: u64,
    /// Longest restart delay of `command`, in milliseconds.
    #[serde(default = "default_restart_max")]
    pub restart_max_ms: u64,
}

fn default_max_frame_bytes() -> usize {
    16 << 20
}
fn one() -> u64 {
    1
}
fn default_restart_min() -> u64 {
    250
}
fn default_restart_max() -> u64 {
    30_000
}

impl MjpegConfig {
    /// A config reading `path` with every other setting at its default.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        MjpegConfig {
            command: None,
            path: Some(path.into()),
            max_frame_bytes: default_max_frame_bytes(),
            max_fps: None,
            every_nth: 1,
            restart_min_ms: default_restart_min(),
            restart_max_ms: default_restart_max(),
        }
    }

    /// A config running `command` with every other setting at its default.
    pub fn from_command(command: &[&str]) -> Self {
        MjpegConfig {
            command: Some(command.iter().map(|s| s.to_string()).collect()),
            path: None,
            ..Self::from_path("")
        }
    }

    /// Checks `[source]` of this kind.
    pub fn validate(&self, p: &mut Problems) {
        match (&self.command, &self.path) {
            (Some(_), Some(_)) => p.push(
                "source.command",
                "expected exactly one of command and path, found both",
            ),
            (None, None) => p.push(
                "source.command",
                "expected exactly one of command (a program writing MJPEG to stdout) and path (a file or FIFO), found neither",
            ),
            (Some(c), None) => {
                p.check(
                    c.first().is_some_and(|prog| !prog.trim().is_empty()),
                    "source.command",
                    || format!("expected a program and its arguments, found {c:?}"),
                );
            }
            (None, Some(path)) => {
                p.check(!path.as_os_str().is_empty(), "source.path", || {
                    "expected a file or FIFO path, found an empty string".into()
                });
            }
        }
        p.check(self.max_frame_bytes >= 64, "source.max_frame_bytes", || {
            format!("expected at least 64 bytes, found {}", self.max_frame_bytes)
        });
        if let Some(fps) = self.max_fps {
            p.positive(fps, "source.max_fps", "frames per second");
        }
        p.at_least_one(self.every_nth, "source.every_nth");
        super::process::Backoff::validate(self.restart_min_ms, self.restart_max_ms, p);
    }

    /// Starts the program, or opens the file; a FIFO is opened by the
    /// reader thread, as opening one waits for its writer.
    pub fn open(&self, origin: &Origin) -> Result<MjpegSource, SourceError> {
        let thin = Thinning {
            every_nth: self.every_nth.max(1),
            min_gap: self
                .max_fps
                .filter(|f| f.is_finite() && *f > 0.0)
                .map(|f| Duration::from_secs_f64(1.0 / f)),
        };
        if let Some(command) = &self.command {
            let (program, args) = command.split_first().ok_or_else(|| SourceError::Fatal {
                origin: "mjpeg".into(),
                reason: "command is empty".into(),
            })?;
            let input = Input::Command {
                program: program.clone(),
                args: args.to_vec(),
                backoff: Backoff::new(self.restart_min_ms, self.restart_max_ms),
                child: Arc::new(Mutex::new(None)),
            };
            return MjpegSource::live(program.clone(), input, self.max_frame_bytes, thin);
        }
        let path = origin.resolve(self.path.as_deref().unwrap_or(Path::new("")));
        let name = path.display().to_string();
        let fatal = |e: std::io::Error| SourceError::Fatal {
            origin: name.clone(),
            reason: format!("cannot open: {e}"),
        };
        let meta = std::fs::metadata(&path).map_err(fatal)?;
        if meta.is_file() {
            let file = File::open(&path).map_err(fatal)?;
            Ok(MjpegSource::recording(
                name,
                Box::new(file),
                self.max_frame_bytes,
                thin,
            ))
        } else if meta.is_dir() {
            Err(SourceError::Fatal {
                origin: name,
                reason: "is a directory, expected a file or FIFO (kind = \"image_dir\" reads a directory)".into(),
            })
        } else {
            MjpegSource::live(name, Input::Fifo(path), self.max_frame_bytes, thin)
        }
    }
}

/// `every_nth` and `max_fps`.
#[derive(Debug, Clone, Copy)]
struct Thinning {
    every_nth: u64,
    min_gap: Option<Duration>,
}

/// Where a live stream comes from.
#[derive(Debug)]
enum Input {
    /// A program's stdout; the child is shared so dropping the source can
    /// kill it while the reader thread reads.
    Command {
        program: String,
        args: Vec<String>,
        backoff: Backoff,
        child: Arc<Mutex<Option<Child>>>,
    },
    /// A FIFO (or character device), opened again at each end of file.
    Fifo(PathBuf),
}

/// Reports waiting for the pipeline; more are summed up in one.
const MAX_REPORTS: usize = 32;

/// What the reader thread shares with the source.
#[derive(Debug, Default)]
struct Slot {
    /// The newest complete frame not yet taken: number, time, bytes.
    frame: Option<(u64, u64, Vec<u8>)>,
    /// Errors to hand out before the next frame.
    reports: VecDeque<SourceError>,
    /// Broken frames beyond `MAX_REPORTS` not reported one by one.
    unreported: u64,
    /// When the last frame was handed out (for `max_fps`).
    last_taken: Option<Instant>,
    skipped: u64,
    /// The reader stopped (`Some(None)`: end of input).
    ended: Option<Option<SourceError>>,
    /// The source was dropped.
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, e: SourceError) {
        let mut slot = self.lock();
        if slot.reports.len() < MAX_REPORTS {
            slot.reports.push_back(e);
        } else {
            slot.unreported += 1;
        }
        self.changed.notify_all();
    }
}

/// A Motion-JPEG stream as a source of frames.
#[derive(Debug)]
pub struct MjpegSource {
    name: String,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// A reader thread keeps the newest frame.
    Live {
        shared: Arc<Shared>,
        /// Killed when the source is dropped.
        child: Option<Arc<Mutex<Option<Child>>>>,
        /// Opened for writing when the source is dropped, to wake a reader
        /// waiting for a writer.
        fifo: Option<PathBuf>,
    },
    /// Read on the caller's thread, every frame in order.
    Recording(Box<Recording>),
}

#[derive(Debug)]
struct Recording {
    reader: Box<dyn ReadDebug>,
    splitter: Splitter,
    pending: VecDeque<Split>,
    thin: Thinning,
    /// Number of the next frame of the stream.
    next: u64,
    bad: u64,
    skipped: u64,
    last_taken: Option<Instant>,
    done: bool,
    buf: Vec<u8>,
}

/// A reader that can be printed in a `Debug` of the source.
trait ReadDebug: Read + Send {}
impl<T: Read + Send> ReadDebug for T {}
impl std::fmt::Debug for dyn ReadDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reader")
    }
}

const CHUNK: usize = 64 << 10;

impl MjpegSource {
    /// A recording: every frame of `reader`, then the end.
    fn recording(
        name: String,
        reader: Box<dyn ReadDebug>,
        max_frame: usize,
        thin: Thinning,
    ) -> Self {
        MjpegSource {
            name,
            mode: Mode::Recording(Box::new(Recording {
                reader,
                splitter: Splitter::new(max_frame),
                pending: VecDeque::new(),
                thin,
                next: 0,
                bad: 0,
                skipped: 0,
                last_taken: None,
                done: false,
                buf: Vec::new(),
            })),
        }
    }

    /// A live stream read by its own thread.
    fn live(
        name: String,
        mut input: Input,
        max_frame: usize,
        thin: Thinning,
    ) -> Result<Self, SourceError> {
        let shared = Arc::new(Shared::default());
        let (child, fifo) = match &input {
            Input::Command { child, .. } => (Some(child.clone()), None),
            Input::Fifo(path) => (None, Some(path.clone())),
        };
        // The first start happens here so a missing program is an error of
        // `open`, not of the first frame.
        if let Input::Command {
            program,
            args,
            child,
            ..
        } = &mut input
        {
            let started = start_program(program, args)?;
            *lock(child) = Some(started);
        }
        let reader = Reader {
            name: name.clone(),
            input,
            shared: shared.clone(),
            splitter: Splitter::new(max_frame),
            thin,
            next: 0,
            bad: 0,
        };
        if let Err(e) = std::thread::Builder::new()
            .name("mjpeg".into())
            .spawn(move || reader.run())
        {
            // No source will own the program: it must not outlive this.
            if let Some(mut c) = child.as_ref().and_then(|c| lock(c).take()) {
                let _ = c.kill();
                let _ = c.wait();
            }
            return Err(SourceError::Fatal {
                origin: name,
                reason: format!("cannot start the reader thread: {e}"),
            });
        }
        Ok(MjpegSource {
            name,
            mode: Mode::Live {
                shared,
                child,
                fifo,
            },
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the camera program with its stderr piped: the reader thread
/// logs it at debug level and keeps the last lines for the exit report.
fn start_program(program: &str, args: &[String]) -> Result<Child, SourceError> {
    let (mut child, stdout) = spawn(program, args, Stdio::piped())?;
    // Put stdout back: the reader takes it from the child.
    child.stdout = Some(stdout);
    Ok(child)
}

/// The exit status of a program whose stdout closed. It is given a moment
/// to exit on its own (so its status says why it ended) and is killed
/// after that; the lock is not held while waiting, so dropping the source
/// is never held up.
fn reap(child: &Mutex<Option<Child>>) -> Option<std::process::ExitStatus> {
    for _ in 0..20 {
        match lock(child).as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => return Some(status),
            Some(Ok(None)) => {}
            _ => return None,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut guard = lock(child);
    let c = guard.as_mut()?;
    let _ = c.kill();
    c.wait().ok()
}

/// The last lines a program wrote to stderr.
#[derive(Debug, Default)]
struct StderrTail {
    lines: Mutex<VecDeque<String>>,
}

const TAIL_LINES: usize = 10;

impl StderrTail {
    /// Reads `stderr` until it closes (on its own thread).
    fn follow(self: &Arc<Self>, program: &str, stderr: std::process::ChildStderr) {
        let tail = self.clone();
        let program = program.to_string();
        let _ = std::thread::Builder::new()
            .name("mjpeg-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).split(b'\n') {
                    let Ok(line) = line else { break };
                    let line = String::from_utf8_lossy(&line).trim_end().to_string();
                    if line.is_empty() {
                        continue;
                    }
                    log::debug!("{program}: {line}");
                    let mut lines = lock(&tail.lines);
                    if lines.len() == TAIL_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(line);
                }
            });
    }

    fn take(&self) -> Vec<String> {
        lock(&self.lines).drain(..).collect()
    }
}

/// The reader thread of a live stream.
struct Reader {
    name: String,
    input: Input,
    shared: Arc<Shared>,
    splitter: Splitter,
    thin: Thinning,
    next: u64,
    bad: u64,
}

impl Reader {
    fn run(mut self) {
        let end = if matches!(self.input, Input::Command { .. }) {
            self.run_command()
        } else {
            self.run_fifo()
        };
        let mut slot = self.shared.lock();
        slot.ended = Some(end);
        self.shared.changed.notify_all();
    }

    fn stopped(&self) -> bool {
        self.shared.lock().stop
    }

    /// Waits `delay` unless the source is dropped first; true when it was.
    fn sleep(&self, delay: Duration) -> bool {
        let slot = self.shared.lock();
        let (slot, _) = self
            .shared
            .changed
            .wait_timeout_while(slot, delay, |s| !s.stop)
            .unwrap_or_else(|e| e.into_inner());
        slot.stop
    }

    fn run_command(&mut self) -> Option<SourceError> {
        let Input::Command {
            program,
            args,
            mut backoff,
            child,
        } = std::mem::replace(&mut self.input, Input::Fifo(PathBuf::new()))
        else {
            return None;
        };
        loop {
            let (stdout, stderr) = {
                let mut guard = lock(&child);
                let c = guard.as_mut()?;
                (c.stdout.take(), c.stderr.take())
            };
            let tail = Arc::new(StderrTail::default());
            if let Some(stderr) = stderr {
                tail.follow(&program, stderr);
            }
            if let Some(mut stdout) = stdout {
                self.read_to_end(&mut stdout);
            }
            let status = reap(&child);
            if self.stopped() {
                return None;
            }
            self.end_of_stream();
            let delay = backoff.next_delay();
            let reason = backoff.reason(status, delay);
            let said = tail.take();
            if said.is_empty() {
                log::warn!("{program}: {reason}");
            } else {
                log::warn!(
                    "{program}: {reason}; its last words:\n  {}",
                    said.join("\n  ")
                );
            }
            let last = said.last().map(|l| format!("; last stderr line: {l}"));
            if self.sleep(delay) {
                return None;
            }
            match start_program(&program, &args) {
                Ok(c) => *lock(&child) = Some(c),
                Err(e) => return Some(e),
            }
            backoff.restarted();
            self.shared.report(SourceError::Restarted {
                origin: program.clone(),
                reason: format!("{reason}{}", last.unwrap_or_default()),
            });
        }
    }

    fn run_fifo(&mut self) -> Option<SourceError> {
        let Input::Fifo(path) = &self.input else {
            return None;
        };
        let path = path.clone();
        let mut failing = false;
        loop {
            // Blocks until a writer opens it.
            match File::open(&path) {
                Ok(mut f) => {
                    if std::mem::take(&mut failing) {
                        log::warn!("{}: readable again", self.name);
                    }
                    if self.stopped() {
                        return None;
                    }
                    self.read_to_end(&mut f);
                    if self.stopped() {
                        return None;
                    }
                    self.end_of_stream();
                    log::info!("{}: the writer closed it; waiting for the next", self.name);
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        self.shared.report(SourceError::Unavailable {
                            origin: self.name.clone(),
                            reason: format!("cannot open: {e}; trying again every second"),
                        });
                    }
                    if self.sleep(Duration::from_secs(1)) {
                        return None;
                    }
                }
            }
        }
    }

    /// Splits everything `input` holds; a read error ends it like an end of
    /// file (the caller starts it over).
    fn read_to_end(&mut self, input: &mut dyn Read) {
        let mut buf = vec![0u8; CHUNK];
        let mut out = Vec::new();
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("{}: read failed: {e}", self.name);
                    return;
                }
            };
            self.splitter.feed(&buf[..n], &mut out);
            for split in out.drain(..) {
                self.handle(split);
            }
            if self.stopped() {
                return;
            }
        }
    }

    fn end_of_stream(&mut self) {
        if let Some(why) = self.splitter.finish() {
            self.handle(Split::Broken(why));
        }
    }

    fn handle(&mut self, split: Split) {
        match split {
            Split::Broken(why) => {
                self.bad += 1;
                log::debug!("{}: {why}", self.name);
                self.shared.report(SourceError::BadRecord {
                    origin: self.name.clone(),
                    record: self.bad,
                    reason: format!("before frame {}: {why}", self.next),
                });
            }
            Split::Frame(bytes) => {
                let n = self.next;
                self.next += 1;
                let mut slot = self.shared.lock();
                let too_soon = match (self.thin.min_gap, slot.last_taken) {
                    (Some(gap), Some(last)) => last.elapsed() < gap,
                    _ => false,
                };
                if !n.is_multiple_of(self.thin.every_nth) || too_soon {
                    slot.skipped += 1;
                    return;
                }
                if slot.frame.replace((n, now_ms(), bytes)).is_some() {
                    slot.skipped += 1;
                }
                self.shared.changed.notify_all();
            }
        }
    }
}

impl Recording {
    fn next_sample(&mut self, name: &str) -> Result<Option<Sample>, SourceError> {
        loop {
            match self.pending.pop_front() {
                Some(Split::Broken(why)) => {
                    self.bad += 1;
                    return Err(SourceError::BadRecord {
                        origin: name.into(),
                        record: self.bad,
                        reason: format!("before frame {}: {why}", self.next),
                    });
                }
                Some(Split::Frame(bytes)) => {
                    let n = self.next;
                    self.next += 1;
                    if !n.is_multiple_of(self.thin.every_nth) {
                        self.skipped += 1;
                        continue;
                    }
                    // A file can wait: space frames out instead of skipping.
                    if let (Some(gap), Some(last)) = (self.thin.min_gap, self.last_taken) {
                        let due = last + gap;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    }
                    self.last_taken = Some(Instant::now());
                    return Ok(Some(Sample::image(now_ms(), bytes, format!("frame {n}"))));
                }
                None => {}
            }
            if self.done {
                return Ok(None);
            }
            if self.buf.is_empty() {
                self.buf = vec![0u8; CHUNK];
            }
            let mut out = Vec::new();
            match self.reader.read(&mut self.buf) {
                Ok(0) => {
                    self.done = true;
                    if let Some(why) = self.splitter.finish() {
                        out.push(Split::Broken(why));
                    }
                }
                Ok(n) => self.splitter.feed(&self.buf[..n], &mut out),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(SourceError::Fatal {
                        origin: name.into(),
                        reason: format!("read failed: {e}"),
                    })
                }
            }
            self.pending.extend(out);
        }
    }
}

impl Source for MjpegSource {
    fn next_sample(&mut self) -> Result<Option<Sample>, SourceError> {
        let shared = match &mut self.mode {
            Mode::Recording(r) => return r.next_sample(&self.name),
            Mode::Live { shared, .. } => shared.clone(),
        };
        let mut slot = shared.lock();
        loop {
            if let Some(e) = slot.reports.pop_front() {
                return Err(e);
            }
            if slot.unreported > 0 {
                let n = std::mem::take(&mut slot.unreported);
                return Err(SourceError::BadRecord {
                    origin: self.name.clone(),
                    record: 0,
                    reason: format!("{n} more broken frames, not reported one by one"),
                });
            }
            if let Some((n, ts, bytes)) = slot.frame.take() {
                slot.last_taken = Some(Instant::now());
                return Ok(Some(Sample::image(ts, bytes, format!("frame {n}"))));
            }
            if let Some(end) = slot.ended.take() {
                // Said once; after it the stream is over.
                slot.ended = Some(None);
                return end.map_or(Ok(None), Err);
            }
            slot = shared.changed.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn channels(&self) -> Option<usize> {
        None
    }

    /// Frames go one by one: each is a whole model input.
    fn paced(&self) -> bool {
        true
    }

    fn newest_only(&self) -> bool {
        matches!(self.mode, Mode::Live { .. })
    }

    fn skipped(&self) -> u64 {
        match &self.mode {
            Mode::Live { shared, .. } => shared.lock().skipped,
            Mode::Recording(r) => r.skipped,
        }
    }
}

impl Drop for MjpegSource {
    fn drop(&mut self) {
        let Mode::Live {
            shared,
            child,
            fifo,
        } = &self.mode
        else {
            return;
        };
        shared.lock().stop = true;
        shared.changed.notify_all();
        // The reader thread is not joined: it notices `stop` after its
        // current read, which killing the program ends at once.
        if let Some(child) = child {
            if let Some(c) = lock(child).as_mut() {
                let _ = c.kill();
            }
        }
        if let Some(path) = fifo {
            wake_fifo_reader(path);
        }
    }
}

/// Opens the FIFO for writing without waiting: a reader blocked opening it
/// (no writer yet) wakes up, finds the end of file and sees it should stop.
/// With no reader waiting the open fails, which is fine.
fn wake_fifo_reader(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems_name_their_fields() {
        let origin = Origin::default();
        let fields = |toml: &str| {
            let c: MjpegConfig = toml::from_str(toml).unwrap();
            let mut p = Problems::new(&origin);
            c.validate(&mut p);
            p.into_vec()
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        assert!(fields("command = [\"rpicam-vid\", \"-o\", \"-\"]").is_empty());
        assert!(fields("path = \"cam.fifo\"\nmax_fps = 5.0\nevery_nth = 2").is_empty());
        assert_eq!(fields(""), vec!["source.command"]);
        assert_eq!(
            fields("command = [\"a\"]\npath = \"b\""),
            vec!["source.command"]
        );
        assert_eq!(fields("command = []"), vec!["source.command"]);
        assert_eq!(
            fields("path = \"x\"\nevery_nth = 0\nmax_fps = 0.0\nmax_frame_bytes = 1"),
            vec![
                "source.max_frame_bytes",
                "source.max_fps",
                "source.every_nth"
            ]
        );
        assert!(toml::from_str::<MjpegConfig>("path = \"x\"\nfps = 1").is_err());
    }
}
