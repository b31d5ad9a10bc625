//! `mjpeg` source: a Motion-JPEG byte stream (JPEG images back to back) from
//! a program's stdout (`rpicam-vid --codec mjpeg -o -`) or from a file or
//! FIFO, one frame per sample.
//!
//! Frames are cut at their JPEG markers, not by searching for `FF D9`: after
//! the start of image (`FF D8`) every marker segment is skipped by its
//! length (so an EXIF thumbnail inside APP1, itself a JPEG, is part of its
//! frame), and in entropy-coded data `FF 00` is a stuffed byte and `FF D0`
//! to `FF D7` are restart markers; the frame ends at the end of image
//! (`FF D9`). Garbage between frames and broken frames (a new start before
//! the end, a bad segment length, a frame over `max_frame_bytes`) are
//! counted and reported as bad records, and the splitter resynchronizes on
//! the next start of image.
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

/// One thing the splitter found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// A complete JPEG, `FF D8` to `FF D9`.
    Frame(Vec<u8>),
    /// Garbage or a broken frame, and what was wrong; the splitter is
    /// looking for the next start of image.
    Broken(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for `FF D8`; `ff`: the last byte was `FF`.
    Seek { ff: bool },
    /// In a frame, between segments: expecting `FF`.
    Marker,
    /// Read `FF` (and maybe fill bytes `FF`): expecting a marker code.
    Code,
    /// Read a segment's marker: its 2-byte length follows (`have` bytes of
    /// it read, the first in `hi`).
    Length { code: u8, have: u8, hi: u8 },
    /// Inside a segment's payload: `left` bytes to go; `scan` when it is
    /// the SOS header, after which entropy-coded data follows.
    Payload { left: usize, scan: bool },
    /// Entropy-coded data; `ff`: the last byte was `FF`.
    Scan { ff: bool },
}

/// Cuts a Motion-JPEG byte stream into JPEG frames, fed in chunks of any
/// size (the same frames come out however the stream is cut).
#[derive(Debug)]
pub struct Splitter {
    state: State,
    frame: Vec<u8>,
    max_frame: usize,
    /// Bytes skipped while looking for a start of image.
    garbage: usize,
    /// The skipped bytes are the rest of a frame already reported broken.
    quiet: bool,
}

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;

impl Splitter {
    /// A splitter refusing frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Splitter {
            state: State::Seek { ff: false },
            frame: Vec::new(),
            max_frame,
            garbage: 0,
            quiet: false,
        }
    }

    /// Splits the next bytes of the stream; what they completed goes to
    /// `out`.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<Split>) {
        while !data.is_empty() {
            let used = self.step(data, out);
            data = &data[used..];
            if self.frame.len() > self.max_frame {
                let size = self.frame.len();
                self.broken(
                    out,
                    format!(
                        "frame over max_frame_bytes ({} bytes), skipped at {size} bytes",
                        self.max_frame
                    ),
                );
            }
        }
    }

    /// The stream ended: reports a frame cut short or trailing garbage, and
    /// starts over for a new stream.
    pub fn finish(&mut self) -> Option<String> {
        let what = match self.state {
            State::Seek { ff } => {
                let garbage = self.garbage + usize::from(ff);
                (garbage > 0 && !self.quiet)
                    .then(|| format!("{garbage} bytes of garbage at the end of the stream"))
            }
            _ => Some(format!(
                "the stream ended inside a frame, after {} bytes of it",
                self.frame.len()
            )),
        };
        *self = Splitter::new(self.max_frame);
        what
    }

    /// Reports a broken frame and resynchronizes on the next start of image
    /// without reporting the rest of it as garbage.
    fn broken(&mut self, out: &mut Vec<Split>, why: String) {
        out.push(Split::Broken(why));
        self.frame = Vec::new();
        self.state = State::Seek { ff: false };
        self.garbage = 0;
        self.quiet = true;
    }

    /// A start of image was read (its two bytes are consumed).
    fn start_frame(&mut self, out: &mut Vec<Split>) {
        if self.garbage > 0 && !self.quiet {
            out.push(Split::Broken(format!(
                "{} bytes of garbage before a frame",
                self.garbage
            )));
        }
        self.garbage = 0;
        self.quiet = false;
        self.frame.clear();
        self.frame.extend_from_slice(&[0xFF, SOI]);
        self.state = State::Marker;
    }

    /// Consumes a prefix of `data` (at least one byte); returns its length.
    fn step(&mut self, data: &[u8], out: &mut Vec<Split>) -> usize {
        let b = data[0];
        match self.state {
            State::Seek { ff } => {
                if ff && b == SOI {
                    self.start_frame(out);
                    return 1;
                }
                if ff {
                    self.garbage += 1;
                }
                if b == 0xFF {
                    self.state = State::Seek { ff: true };
                    return 1;
                }
                // Skip to the next FF at once.
                let n = data.iter().position(|&x| x == 0xFF).unwrap_or(data.len());
                self.garbage += n;
                self.state = State::Seek { ff: false };
                n
            }
            State::Marker => {
                if b != 0xFF {
                    self.broken(
                        out,
                        format!(
                            "expected a marker at byte {} of a frame, found 0x{b:02X}",
                            self.frame.len()
                        ),
                    );
                    return 1;
                }
                self.frame.push(b);
                self.state = State::Code;
                1
            }
            State::Code => {
                self.code(b, out);
                1
            }
            State::Length { code, have, hi } => {
                self.frame.push(b);
                if have == 0 {
                    self.state = State::Length {
                        code,
                        have: 1,
                        hi: b,
                    };
                    return 1;
                }
                let len = usize::from(u16::from_be_bytes([hi, b]));
                if len < 2 {
                    self.broken(
                        out,
                        format!("segment 0x{code:02X} has a bad length ({len})"),
                    );
                    return 1;
                }
                self.state = State::Payload {
                    left: len - 2,
                    scan: code == SOS,
                };
                if len == 2 {
                    self.after_payload(code == SOS);
                }
                1
            }
            State::Payload { left, scan } => {
                let n = left.min(data.len());
                self.frame.extend_from_slice(&data[..n]);
                if n == left {
                    self.after_payload(scan);
                } else {
                    self.state = State::Payload {
                        left: left - n,
                        scan,
                    };
                }
                n
            }
            State::Scan { ff: false } => {
                let n = data
                    .iter()
                    .position(|&x| x == 0xFF)
                    .map_or(data.len(), |i| i + 1);
                self.frame.extend_from_slice(&data[..n]);
                if data[n - 1] == 0xFF {
                    self.state = State::Scan { ff: true };
                }
                n
            }
            State::Scan { ff: true } => {
                match b {
                    // A stuffed FF, or a restart marker: still data.
                    0x00 | 0xD0..=0xD7 => {
                        self.frame.push(b);
                        self.state = State::Scan { ff: false };
                    }
                    // Fill bytes before a marker.
                    0xFF => self.frame.push(b),
                    // A marker ends the scan (EOI, or tables and another
                    // scan of a progressive JPEG).
                    _ => self.code(b, out),
                }
                1
            }
        }
    }

    /// The marker code after `FF` (already in the frame).
    fn code(&mut self, b: u8, out: &mut Vec<Split>) {
        match b {
            0xFF => self.frame.push(b),
            SOI => {
                let size = self.frame.len().saturating_sub(1);
                out.push(Split::Broken(format!(
                    "a new frame started before the end of the last one, after {size} bytes of it"
                )));
                self.garbage = 0;
                self.quiet = true;
                self.start_frame(out);
            }
            EOI => {
                self.frame.push(b);
                let frame = std::mem::take(&mut self.frame);
                if frame.len() <= self.max_frame {
                    out.push(Split::Frame(frame));
                    self.state = State::Seek { ff: false };
                    self.garbage = 0;
                    self.quiet = false;
                } else {
                    // `feed` reports it; keep the size for the message.
                    self.frame = frame;
                }
            }
            // Standalone markers: TEM, and restart markers out of place
            // (tolerated, decoders skip them).
            0x01 | 0xD0..=0xD7 => {
                self.frame.push(b);
                self.state = State::Marker;
            }
            0xC0..=0xFE => {
                self.frame.push(b);
                self.state = State::Length {
                    code: b,
                    have: 0,
                    hi: 0,
                };
            }
            _ => self.broken(
                out,
                format!(
                    "invalid marker 0xFF{b:02X} at byte {} of a frame",
                    self.frame.len()
                ),
            ),
        }
    }

    fn after_payload(&mut self, scan: bool) {
        self.state = if scan {
            State::Scan { ff: false }
        } else {
            State::Marker
        };
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

    /// A baseline JPEG of noise (so its entropy-coded data has stuffed
    /// `FF 00` bytes), different for each `seed`.
    fn jpeg(seed: u32, size: u32) -> Vec<u8> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let img = image::RgbImage::from_fn(size, size, |_, _| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    /// `outer` with an APP1 (EXIF) segment holding `thumb`, a whole JPEG
    /// with its own FFD8 and FFD9, right after its start of image.
    fn with_thumbnail(outer: &[u8], thumb: &[u8]) -> Vec<u8> {
        let len = u16::try_from(2 + 6 + thumb.len()).unwrap();
        let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(b"Exif\0\0");
        out.extend_from_slice(thumb);
        out.extend_from_slice(&outer[2..]);
        out
    }

    /// Frames and broken-frame reports of `stream` fed in `chunk`-byte
    /// pieces, with the end of the stream.
    fn split(stream: &[u8], chunk: usize, max: usize) -> (Vec<Vec<u8>>, Vec<String>) {
        let mut s = Splitter::new(max);
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            s.feed(piece, &mut out);
        }
        out.extend(s.finish().map(Split::Broken));
        let mut frames = Vec::new();
        let mut broken = Vec::new();
        for x in out {
            match x {
                Split::Frame(f) => frames.push(f),
                Split::Broken(why) => broken.push(why),
            }
        }
        (frames, broken)
    }

    fn has_stuffing(jpeg: &[u8]) -> bool {
        jpeg.windows(2).any(|w| w == [0xFF, 0x00])
    }

    #[test]
    fn concatenated_jpegs_split_exactly() {
        let frames: Vec<Vec<u8>> = (0..4).map(|i| jpeg(i, 48 + 16 * i)).collect();
        assert!(
            frames.iter().any(|f| has_stuffing(f)),
            "test frames need FF00"
        );
        let stream = frames.concat();
        for chunk in [1, 7, 4096, stream.len()] {
            let (got, broken) = split(&stream, chunk, 1 << 20);
            assert_eq!(got, frames, "chunk {chunk}");
            assert!(broken.is_empty(), "chunk {chunk}: {broken:?}");
        }
    }

    #[test]
    fn exif_thumbnail_is_part_of_its_frame() {
        let thumb = jpeg(9, 8);
        let a = with_thumbnail(&jpeg(1, 24), &thumb);
        let b = jpeg(2, 24);
        let stream = [a.clone(), b.clone()].concat();
        for chunk in [1, 7, 4096] {
            let (got, broken) = split(&stream, chunk, 1 << 20);
            assert_eq!(got, vec![a.clone(), b.clone()], "chunk {chunk}");
            assert!(broken.is_empty(), "{broken:?}");
        }
    }

    #[test]
    fn garbage_and_truncated_frames_are_reported_and_skipped() {
        let f: Vec<Vec<u8>> = (0..4).map(|i| jpeg(i, 24)).collect();
        let truncated = &f[1][..f[1].len() - 40];
        let stream = [
            b"noise\xFF\x00\xFF".as_slice(),
            &f[0],
            truncated,
            &f[2],
            b"\x00\x01\xFF\xFF junk",
            &f[3],
            &f[0][..100],
        ]
        .concat();
        for chunk in [1, 7, 4096] {
            let (got, broken) = split(&stream, chunk, 1 << 20);
            assert_eq!(got, vec![f[0].clone(), f[2].clone(), f[3].clone()]);
            assert_eq!(broken.len(), 4, "chunk {chunk}: {broken:?}");
            assert!(broken[0].contains("8 bytes of garbage"), "{}", broken[0]);
            assert!(broken[1].contains("new frame started"), "{}", broken[1]);
            assert!(broken[2].contains("garbage"), "{}", broken[2]);
            assert!(broken[3].contains("ended inside a frame"), "{}", broken[3]);
        }
    }

    #[test]
    fn bad_segment_length_and_oversized_frames_resynchronize() {
        let a = jpeg(1, 24);
        let b = jpeg(2, 64);
        let c = jpeg(3, 24);
        // A DQT segment claiming a length of 1.
        let bad = [0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x01, 0x12, 0x34];
        let stream = [&bad[..], &a, &b, &c].concat();
        let max = a.len().max(c.len()) + 1;
        assert!(b.len() > max);
        for chunk in [1, 7, 4096] {
            let (got, broken) = split(&stream, chunk, max);
            assert_eq!(got, vec![a.clone(), c.clone()], "chunk {chunk}");
            assert_eq!(broken.len(), 2, "{broken:?}");
            assert!(broken[0].contains("bad length"), "{}", broken[0]);
            assert!(broken[1].contains("max_frame_bytes"), "{}", broken[1]);
        }
    }

    #[test]
    fn restart_markers_and_progressive_scans_stay_in_the_frame() {
        // The shape of a progressive JPEG with restart intervals: tables
        // and a second scan after the first one's data.
        let frame: Vec<u8> = [
            &[0xFF, 0xD8][..],
            &[0xFF, 0xDD, 0x00, 0x04, 0x00, 0x10], // DRI
            &[0xFF, 0xC2, 0x00, 0x05, 1, 2, 3],    // SOF2
            &[0xFF, 0xDA, 0x00, 0x03, 7],          // SOS
            &[
                0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0xD1, 0x78,
            ],
            &[0xFF, 0xC4, 0x00, 0x04, 0xFF, 0xD9], // DHT holding FFD9
            &[0xFF, 0xDA, 0x00, 0x02],             // SOS
            &[0x9A, 0xFF, 0x00],
            &[0xFF, 0xD9],
        ]
        .concat();
        let stream = [frame.clone(), frame.clone()].concat();
        for chunk in [1, 2, 3, 7] {
            let (got, broken) = split(&stream, chunk, 1 << 20);
            assert_eq!(got, vec![frame.clone(), frame.clone()], "chunk {chunk}");
            assert!(broken.is_empty(), "{broken:?}");
        }
    }

    #[test]
    fn any_bytes_split_without_panicking_into_whole_frames() {
        // Good frames with bytes flipped, dropped and repeated at random
        // places, split at random boundaries: whatever comes out is a
        // frame from FFD8 to FFD9 within the size limit.
        let good = [jpeg(1, 24), with_thumbnail(&jpeg(2, 24), &jpeg(3, 8))].concat();
        let mut state = 0x9E37_79B9u32;
        let mut rand = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as usize % n.max(1)
        };
        for round in 0..200 {
            let mut stream = good.clone();
            for _ in 0..1 + rand(8) {
                let at = rand(stream.len());
                match rand(3) {
                    0 => stream[at] = [0xFF, 0xD8, 0xD9, 0x00, 0x01][rand(5)],
                    1 => {
                        stream.remove(at);
                    }
                    _ => {
                        let piece = stream[at..(at + rand(64)).min(stream.len())].to_vec();
                        stream.splice(at..at, piece);
                    }
                }
            }
            let max = 512 + rand(4096);
            let mut splitter = Splitter::new(max);
            let mut out = Vec::new();
            let mut rest = stream.as_slice();
            while !rest.is_empty() {
                let n = 1 + rand(97).min(rest.len() - 1);
                splitter.feed(&rest[..n], &mut out);
                rest = &rest[n..];
            }
            splitter.finish();
            for split in out {
                if let Split::Frame(f) = split {
                    assert!(f.starts_with(&[0xFF, 0xD8]), "round {round}");
                    assert!(f.ends_with(&[0xFF, 0xD9]), "round {round}");
                    assert!(f.len() <= max, "round {round}");
                }
            }
        }
    }

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
