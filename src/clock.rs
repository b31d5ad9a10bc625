//! Wall-clock time as the wire format counts it, and rate-limited reports.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Counts repeated events (drops, write failures) and says when to report
/// them: at most once per period, so a flood of one failure gives one log
/// line per period with a count, not a line per event.
#[derive(Debug)]
pub struct ReportEvery {
    every: Duration,
    last: Option<Instant>,
    since: u64,
}

impl ReportEvery {
    /// Reports at most once per `every`; the first event reports at once.
    pub fn new(every: Duration) -> Self {
        ReportEvery {
            every,
            last: None,
            since: 0,
        }
    }

    /// Counts one event; when a report is due, returns how many events
    /// happened since the last one.
    pub fn count(&mut self) -> Option<u64> {
        self.since += 1;
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_first_event_then_counts_until_the_period_is_over() {
        let mut r = ReportEvery::new(Duration::from_secs(3600));
        assert_eq!(r.count(), Some(1));
        assert_eq!(r.count(), None);
        assert_eq!(r.count(), None);
        let mut r2 = ReportEvery::new(Duration::ZERO);
        assert_eq!(r2.count(), Some(1));
        assert_eq!(r2.count(), Some(1));
        // What was held back is in the next report (the period as if over).
        r.last = None;
        assert_eq!(r.count(), Some(3));
    }
}
