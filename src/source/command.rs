//! `command` source: spawn a process and read its stdout lines as samples.

use std::io::BufReader;
use std::process::{Child, ChildStdout, Stdio};

use serde::Deserialize;

use super::lines::LineFormat;
use super::process::{spawn, Backoff};
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
        super::process::Backoff::validate(self.restart_min_ms, self.restart_max_ms, p);
    }

    /// Starts the program.
    pub fn open(&self) -> Result<CommandSource, SourceError> {
        let mut s =
            CommandSource::spawn(&self.program, &self.args, self.format, self.fields.clone())?;
        s.backoff = Backoff::new(self.restart_min_ms, self.restart_max_ms);
        s.restart = Some(self.clone());
        Ok(s)
    }
}

/// A child process's stdout as a sample stream; the child is killed when the
/// source is dropped so no orphan outlives the pipeline.
#[derive(Debug)]
pub struct CommandSource {
    child: Child,
    lines: Lines,
    /// Settings to start it again with (none: it ends with the program).
    restart: Option<CommandConfig>,
    backoff: Backoff,
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
            backoff: Backoff::new(0, 0),
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
        let delay = self.backoff.next_delay();
        let reason = self.backoff.reason(status, delay);
        log::warn!("{}: {reason}", config.program);
        std::thread::sleep(delay);
        let (child, lines) = start(
            &config.program,
            &config.args,
            config.format,
            config.fields.clone(),
        )?;
        self.child = child;
        self.lines = lines;
        self.backoff.restarted();
        Ok(Some(SourceError::Restarted {
            origin: config.program,
            reason,
        }))
    }
}

type Lines = LineSource<BufReader<ChildStdout>>;

/// The child process and a reader of its stdout lines. Its stderr is the
/// service's: a line program's complaints are rare and belong in the log.
fn start(
    program: &str,
    args: &[String],
    format: LineFormat,
    fields: Vec<String>,
) -> Result<(Child, Lines), SourceError> {
    let (child, stdout) = spawn(program, args, Stdio::inherit())?;
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
