//! `command` source: spawn a process and read its stdout lines as samples.

use std::io::BufReader;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::lines::LineFormat;
use super::{LineSource, Sample, Source, SourceError};

/// When a `command` source's program is started again after it exits.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// After a crash or a non-zero exit status; a clean exit (status 0)
    /// ends the stream.
    #[default]
    OnFailure,
    /// After any exit.
    Always,
    /// Never: the stream ends with the program.
    Never,
}

/// `[source] kind = "command"`: a child process whose stdout lines are samples.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Program to run (looked up on PATH).
    pub program: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// `csv` or `json`, as for `stdin`.
    #[serde(default)]
    pub format: LineFormat,
    /// For JSON objects: the field names that become channels, in order.
    #[serde(default)]
    pub fields: Vec<String>,
    /// `on_failure` (default), `always` or `never`: when the program is
    /// started again after it exits, with a delay that doubles from
    /// `restart_min_ms` up to `restart_max_ms` (back to the minimum after a
    /// minute of running).
    #[serde(default)]
    pub restart: Restart,
    /// First restart delay in milliseconds.
    #[serde(default = "default_restart_min")]
    pub restart_min_ms: u64,
    /// Longest restart delay in milliseconds.
    #[serde(default = "default_restart_max")]
    pub restart_max_ms: u64,
}

fn default_restart_min() -> u64 {
    250
}
fn default_restart_max() -> u64 {
    30_000
}

impl CommandConfig {
    /// Checks `[source]` of this kind.
    pub fn validate(&self, p: &mut crate::problem::Problems) {
        p.check(!self.program.trim().is_empty(), "source.program", || {
            "expected a program to run".into()
        });
        p.check(
            self.restart_min_ms > 0 && self.restart_min_ms <= self.restart_max_ms,
            "source.restart_min_ms",
            || {
                format!(
                    "expected 0 < restart_min_ms <= restart_max_ms, found {} and {}",
                    self.restart_min_ms, self.restart_max_ms
                )
            },
        );
    }

    /// Starts the program.
    pub fn open(&self) -> Result<CommandSource, SourceError> {
        let mut s =
            CommandSource::spawn(&self.program, &self.args, self.format, self.fields.clone())?;
        s.restart = Some(self.clone());
        s.delay = Duration::from_millis(self.restart_min_ms);
        Ok(s)
    }
}

/// A program that ran this long is healthy again: its next restart waits
/// the shortest delay.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// A child process's stdout as a sample stream; the child is killed when the
/// source is dropped so no orphan outlives the pipeline.
#[derive(Debug)]
pub struct CommandSource {
    child: Child,
    lines: Lines,
    /// Settings to start it again with (none: it ends with the program).
    restart: Option<CommandConfig>,
    /// The next restart delay.
    delay: Duration,
    started: Instant,
    restarts: u64,
}

impl CommandSource {
    /// Starts `program args...`.
    pub fn spawn(
        program: &str,
        args: &[String],
        format: LineFormat,
        fields: Vec<String>,
    ) -> Result<Self, SourceError> {
        let (child, lines) = start(program, args, format, fields)?;
        Ok(CommandSource {
            child,
            lines,
            restart: None,
            delay: Duration::ZERO,
            started: Instant::now(),
            restarts: 0,
        })
    }

    /// After the program's output ended: whether (and after what wait) to
    /// start it again, per the restart policy and its exit status.
    fn after_exit(&mut self) -> Result<Option<SourceError>, SourceError> {
        let status = self.child.wait().ok();
        let Some(config) = self.restart.clone() else {
            return Ok(None);
        };
        let clean = status.is_some_and(|s| s.success());
        let again = match config.restart {
            Restart::Never => false,
            Restart::OnFailure => !clean,
            Restart::Always => true,
        };
        if !again {
            return Ok(None);
        }
        if self.started.elapsed() >= HEALTHY_AFTER {
            self.delay = Duration::from_millis(config.restart_min_ms);
        }
        let how = status.map_or("was lost".to_string(), |s| s.to_string());
        let reason = format!(
            "the program exited ({how}); restarting it in {:.1} s (restart {})",
            self.delay.as_secs_f64(),
            self.restarts + 1
        );
        log::warn!("{}: {reason}", config.program);
        std::thread::sleep(self.delay);
        self.delay = (self.delay * 2).min(Duration::from_millis(config.restart_max_ms));
        let (child, lines) = start(
            &config.program,
            &config.args,
            config.format,
            config.fields.clone(),
        )?;
        self.child = child;
        self.lines = lines;
        self.started = Instant::now();
        self.restarts += 1;
        Ok(Some(SourceError::Restarted {
            origin: config.program,
            reason,
        }))
    }
}

type Lines = LineSource<BufReader<ChildStdout>>;

/// The child process and a reader of its stdout lines.
fn start(
    program: &str,
    args: &[String],
    format: LineFormat,
    fields: Vec<String>,
) -> Result<(Child, Lines), SourceError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| SourceError::Fatal {
            origin: program.into(),
            reason: format!("cannot start: {e}"),
        })?;
    let stdout = child.stdout.take().ok_or_else(|| SourceError::Fatal {
        origin: program.into(),
        reason: "no stdout pipe".into(),
    })?;
    let lines = LineSource::new(program, BufReader::new(stdout), format, fields);
    Ok((child, lines))
}

impl Source for CommandSource {
    fn next_sample(&mut self) -> Result<Option<Sample>, SourceError> {
        match self.lines.next_sample()? {
            Some(s) => Ok(Some(s)),
            None => match self.after_exit()? {
                // Counted and reported like a bad record; the new program's
                // lines follow.
                Some(restarted) => Err(restarted),
                None => Ok(None),
            },
        }
    }

    fn channels(&self) -> Option<usize> {
        self.lines.channels()
    }

    fn paced(&self) -> bool {
        true
    }
}

impl Drop for CommandSource {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
