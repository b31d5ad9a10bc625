//! What the sources that run a program share: starting it with its stdout
//! piped, and the restart delay that doubles while it keeps failing.

use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::SourceError;

/// A program that ran this long is healthy again: its next restart waits
/// the shortest delay.
pub(crate) const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Restart delays: from `min`, doubling per exit up to `max`, and back to
/// `min` once the program has run for [`HEALTHY_AFTER`]. A program that
/// fails at once is not restarted in a tight loop; one that crashes once a
/// day restarts quickly.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    started: Instant,
    restarts: u64,
}

impl Backoff {
    /// Checks the `restart_min_ms` / `restart_max_ms` pair of a source
    /// that runs a program.
    pub(crate) fn validate(min_ms: u64, max_ms: u64, p: &mut crate::problem::Problems) {
        p.check(
            min_ms > 0 && min_ms <= max_ms,
            "source.restart_min_ms",
            || {
                format!(
                    "expected 0 < restart_min_ms <= restart_max_ms, found {min_ms} and {max_ms}"
                )
            },
        );
    }

    /// Delays from `min_ms` to `max_ms`; the program counts as started now.
    pub(crate) fn new(min_ms: u64, max_ms: u64) -> Self {
        let min = Duration::from_millis(min_ms);
        Backoff {
            min,
            max: Duration::from_millis(max_ms).max(min),
            next: min,
            started: Instant::now(),
            restarts: 0,
        }
    }

    /// The wait before the next start (the program just exited).
    pub(crate) fn next_delay(&mut self) -> Duration {
        if self.started.elapsed() >= HEALTHY_AFTER {
            self.next = self.min;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// The program was started again.
    pub(crate) fn restarted(&mut self) {
        self.started = Instant::now();
        self.restarts += 1;
    }

    /// What a restart report says: how the program ended and when it
    /// starts again.
    pub(crate) fn reason(&self, status: Option<ExitStatus>, delay: Duration) -> String {
        let how = status.map_or("was lost".to_string(), |s| s.to_string());
        format!(
            "the program exited ({how}); restarting it in {:.1} s (restart {})",
            delay.as_secs_f64(),
            self.restarts + 1
        )
    }
}

/// Starts `program args...` with stdin closed, stdout piped, and stderr as
/// given.
pub(crate) fn spawn(
    program: &str,
    args: &[String],
    stderr: Stdio,
) -> Result<(Child, ChildStdout), SourceError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| SourceError::Fatal {
            origin: program.into(),
            reason: format!("cannot start: {e}"),
        })?;
    let stdout = child.stdout.take().ok_or_else(|| SourceError::Fatal {
        origin: program.into(),
        reason: "no stdout pipe".into(),
    })?;
    Ok((child, stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let mut b = Backoff::new(100, 350);
        let delays: Vec<u64> = (0..4).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
    }
}
