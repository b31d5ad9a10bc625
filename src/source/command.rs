//! `command` source: spawn a process and read its stdout lines as samples.

use std::io::BufReader;
use std::process::{Child, ChildStdout, Command, Stdio};

use super::{LineSource, Sample, Source, SourceError};
use crate::config::LineFormat;

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
