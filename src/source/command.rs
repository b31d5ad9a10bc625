//! `command` source: spawn a process and read its stdout lines as samples.

use std::io::BufReader;
use std::process::{Child, ChildStdout, Command, Stdio};

use serde::Deserialize;

use super::lines::LineFormat;
use super::{LineSource, Sample, Source, SourceError};

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
}

impl CommandConfig {
    /// Checks `[source]` of this kind.
    pub fn validate(&self, p: &mut crate::problem::Problems) {
        p.check(!self.program.trim().is_empty(), "source.program", || {
            "expected a program to run".into()
        });
    }
}

/// A child process's stdout as a sample stream; the child is killed when the
/// source is dropped so no orphan outlives the pipeline.
#[derive(Debug)]
pub struct CommandSource {
    child: Child,
    lines: LineSource<BufReader<ChildStdout>>,
}

impl CommandSource {
    /// Starts `program args...`.
    pub fn spawn(
        program: &str,
        args: &[String],
        format: LineFormat,
        fields: Vec<String>,
    ) -> Result<Self, SourceError> {
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
        Ok(CommandSource {
            child,
            lines: LineSource::new(program, BufReader::new(stdout), format, fields),
        })
    }
}

impl Source for CommandSource {
    fn next_sample(&mut self) -> Result<Option<Sample>, SourceError> {
        self.lines.next_sample()
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
