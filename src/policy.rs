//! The policy stage: which results are emitted, and in what form.
//!
//! Rules combine: a result passes when it *changed* (its class changed with
//! `on_change`, a value moved past the `deadband`; every result counts as
//! changed when neither is set) or a `heartbeat` is due, and at least
//! `min_interval_ms` passed since the last one. With `summary_ms`, passing
//! results are folded into one summary record per period instead. Times are
//! sample times, so a replay behaves as it would have live.

use serde::Deserialize;

use crate::problem::Problems;
use crate::schema::{Prediction, SummaryResult};

/// `[policy]`: which results are emitted (rules combine; see above).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Emit only when the class (or the anomaly verdict) changes.
    #[serde(default)]
    pub on_change: bool,
    /// Emit only when a value moved by more than this since the last emitted result.
    #[serde(default)]
    pub deadband: Option<f32>,
    /// Emit only when a value moved by more than this fraction of its last emitted value.
    #[serde(default)]
    pub deadband_relative: Option<f32>,
    /// Emit at most one result per this many milliseconds of sample time.
    #[serde(default)]
    pub min_interval_ms: Option<u64>,
    /// Emit the latest result at least this often (ms) even when unchanged.
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
    /// Fold results into one summary record per this many milliseconds.
    #[serde(default)]
    pub summary_ms: Option<u64>,
    /// Older name of the `mqtt` sink's `batch_max_records`, still read:
    /// used by `mqtt` sinks that do not set their own.
    #[serde(default)]
    pub batch_max_records: Option<usize>,
    /// Older name of the `mqtt` sink's `batch_max_ms`, still read.
    #[serde(default)]
    pub batch_max_ms: Option<u64>,
}

impl PolicyConfig {
    /// Checks `[policy]`.
    pub fn validate(&self, p: &mut Problems) {
        for (value, field) in [
            (self.deadband, "policy.deadband"),
            (self.deadband_relative, "policy.deadband_relative"),
        ] {
            if let Some(v) = value {
                p.check(v.is_finite() && v >= 0.0, field, || {
                    format!("expected a number >= 0, found {v}")
                });
            }
        }
        if let Some(n) = self.batch_max_records {
            p.at_least_one(n as u64, "policy.batch_max_records");
        }
    }
}

/// Decides per result whether (and as what) it is emitted.
#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    last: Option<Prediction>,
    last_emit_ms: Option<u64>,
    summary: Option<Fold>,
}

#[derive(Debug, Clone)]
struct Fold {
    from_ts_ms: u64,
    last_ts_ms: u64,
    count: u32,
    class_counts: Vec<(u32, u32)>,
    sum: Vec<f64>,
    min: Vec<f32>,
    max: Vec<f32>,
}

/// The numbers a deadband and a summary look at.
fn values(p: &Prediction) -> Vec<f32> {
    match p {
        Prediction::Class(c) => vec![c.score],
        Prediction::Values(v) => v.clone(),
        Prediction::Anomaly(a) => vec![a.score],
        Prediction::Summary(s) => s.mean.clone(),
        // How many objects: what a deadband on a detector watches.
        Prediction::Detections(d) => vec![d.len() as f32],
    }
}

/// The classes present in a detection result, sorted, each once.
fn present(d: &[crate::schema::Detection]) -> Vec<u32> {
    let mut c: Vec<u32> = d.iter().map(|d| d.class).collect();
    c.sort_unstable();
    c.dedup();
    c
}

impl Fold {
    fn new(ts: u64) -> Self {
        Fold {
            from_ts_ms: ts,
            last_ts_ms: ts,
            count: 0,
            class_counts: vec![],
            sum: vec![],
            min: vec![],
            max: vec![],
        }
    }

    fn add(&mut self, ts: u64, p: &Prediction) {
        self.count += 1;
        self.last_ts_ms = ts;
        let classes = match p {
            Prediction::Class(c) => vec![c.class],
            Prediction::Detections(d) => present(d),
            _ => vec![],
        };
        for class in classes {
            match self.class_counts.binary_search_by_key(&class, |e| e.0) {
                Ok(i) => self.class_counts[i].1 += 1,
                Err(i) => self.class_counts.insert(i, (class, 1)),
            }
        }
        let v = values(p);
        if self.sum.len() != v.len() {
            self.sum = vec![0.0; v.len()];
            self.min = vec![f32::INFINITY; v.len()];
            self.max = vec![f32::NEG_INFINITY; v.len()];
        }
        for (i, x) in v.iter().enumerate() {
            self.sum[i] += *x as f64;
            self.min[i] = self.min[i].min(*x);
            self.max[i] = self.max[i].max(*x);
        }
    }

    fn finish(self) -> (u64, Prediction) {
        let n = self.count.max(1) as f64;
        (
            self.last_ts_ms,
            Prediction::Summary(SummaryResult {
                count: self.count,
                from_ts_ms: self.from_ts_ms,
                class_counts: self.class_counts,
                mean: self.sum.iter().map(|s| (s / n) as f32).collect(),
                min: self.min,
                max: self.max,
            }),
        )
    }
}

impl Policy {
    /// A policy from `[policy]`.
    pub fn new(config: &PolicyConfig) -> Self {
        Policy {
            config: config.clone(),
            last: None,
            last_emit_ms: None,
            summary: None,
        }
    }

    /// Whether a result is compared with the last one (else every one counts as changed).
    fn compares(&self) -> bool {
        let c = &self.config;
        c.on_change || c.deadband.is_some() || c.deadband_relative.is_some()
    }

    fn changed(&self, p: &Prediction) -> bool {
        if !self.compares() {
            return true;
        }
        let Some(last) = &self.last else { return true };
        let c = &self.config;
        if c.on_change {
            match (last, p) {
                (Prediction::Class(a), Prediction::Class(b)) if a.class != b.class => return true,
                (Prediction::Anomaly(a), Prediction::Anomaly(b)) if a.anomalous != b.anomalous => {
                    return true
                }
                // An object of some class appeared or the last one of a
                // class went.
                (Prediction::Detections(a), Prediction::Detections(b))
                    if present(a) != present(b) =>
                {
                    return true
                }
                _ => {}
            }
        }
        if c.deadband.is_some() || c.deadband_relative.is_some() {
            let (old, new) = (values(last), values(p));
            if old.len() != new.len() {
                return true;
            }
            return old.iter().zip(&new).any(|(o, n)| {
                let d = (n - o).abs();
                c.deadband.is_some_and(|a| d > a)
                    || c.deadband_relative.is_some_and(|r| d > r * o.abs())
            });
        }
        false
    }

    /// Offers the result at `ts_ms`; returns what to emit now, if anything.
    pub fn offer(&mut self, ts_ms: u64, p: Prediction) -> Option<(u64, Prediction)> {
        let since = self.last_emit_ms.map(|l| ts_ms.saturating_sub(l));
        let heartbeat = match (self.config.heartbeat_ms, since) {
            (Some(h), Some(s)) => s >= h,
            _ => false,
        };
        let spaced = match (self.config.min_interval_ms, since) {
            (Some(m), Some(s)) => s >= m,
            _ => true,
        };
        if !(spaced && (heartbeat || self.changed(&p))) {
            return self.summary_due(ts_ms);
        }
        self.last_emit_ms = Some(ts_ms);
        let Some(period) = self.config.summary_ms else {
            if self.compares() {
                self.last = Some(p.clone());
            }
            return Some((ts_ms, p));
        };
        let fold = self.summary.get_or_insert_with(|| Fold::new(ts_ms));
        let due = ts_ms.saturating_sub(fold.from_ts_ms) >= period;
        let out = if due {
            self.summary.take().map(Fold::finish)
        } else {
            None
        };
        self.summary
            .get_or_insert_with(|| Fold::new(ts_ms))
            .add(ts_ms, &p);
        self.last = Some(p);
        out
    }

    fn summary_due(&mut self, ts_ms: u64) -> Option<(u64, Prediction)> {
        let period = self.config.summary_ms?;
        let f = self.summary.as_ref()?;
        (ts_ms.saturating_sub(f.from_ts_ms) >= period)
            .then(|| self.summary.take().map(Fold::finish))?
    }

    /// At the end of the stream: the partial summary, if one is open.
    pub fn finish(&mut self) -> Option<(u64, Prediction)> {
        self.summary
            .take()
            .filter(|f| f.count > 0)
            .map(Fold::finish)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ClassResult;

    fn class(c: u32) -> Prediction {
        Prediction::Class(ClassResult {
            class: c,
            score: 1.0,
            top: vec![],
        })
    }

    fn run(config: PolicyConfig, input: &[(u64, Prediction)]) -> Vec<(u64, Prediction)> {
        let mut p = Policy::new(&config);
        let mut out: Vec<(u64, Prediction)> = input
            .iter()
            .filter_map(|(t, x)| p.offer(*t, x.clone()))
            .collect();
        out.extend(p.finish());
        out
    }

    fn ts(out: &[(u64, Prediction)]) -> Vec<u64> {
        out.iter().map(|o| o.0).collect()
    }

    #[test]
    fn every_by_default() {
        let input: Vec<_> = (0..3).map(|i| (i, class(0))).collect();
        assert_eq!(ts(&run(PolicyConfig::default(), &input)), vec![0, 1, 2]);
    }

    #[test]
    fn on_change_of_detections_is_an_object_class_appearing_or_going() {
        let boxes = |classes: &[u32]| {
            Prediction::Detections(
                classes
                    .iter()
                    .map(|&class| crate::schema::Detection {
                        class,
                        score: 0.9,
                        bbox: [0, 0, 1, 1],
                    })
                    .collect(),
            )
        };
        let input = vec![
            (0, boxes(&[])),
            (1, boxes(&[])),
            (2, boxes(&[3])),
            (3, boxes(&[3, 3])), // a second object of a class already there
            (4, boxes(&[3, 1])),
            (5, boxes(&[1])),
            (6, boxes(&[1])),
            (7, boxes(&[])),
        ];
        let c = PolicyConfig {
            on_change: true,
            ..Default::default()
        };
        assert_eq!(ts(&run(c, &input)), vec![0, 2, 4, 5, 7]);
        // A summary counts, per class, the results it appeared in.
        let c = PolicyConfig {
            summary_ms: Some(100),
            ..Default::default()
        };
        let out = run(c, &input);
        let Prediction::Summary(s) = &out[0].1 else {
            panic!("{out:?}")
        };
        assert_eq!(s.class_counts, vec![(1, 3), (3, 3)]);
    }

    #[test]
    fn on_change_with_min_interval_and_heartbeat() {
        let input: Vec<_> = [
            (0, 0),
            (10, 0),
            (20, 1),
            (150, 1),
            (160, 0),
            (300, 0),
            (1400, 0),
        ]
        .iter()
        .map(|&(t, c)| (t, class(c)))
        .collect();
        let c = PolicyConfig {
            on_change: true,
            min_interval_ms: Some(100),
            ..Default::default()
        };
        assert_eq!(ts(&run(c.clone(), &input)), vec![0, 150, 300]);
        let c = PolicyConfig {
            heartbeat_ms: Some(1000),
            ..c
        };
        assert_eq!(ts(&run(c, &input)), vec![0, 150, 300, 1400]);
    }

    #[test]
    fn deadband_absolute_and_relative() {
        let v = |x: f32| Prediction::Values(vec![x]);
        let input = vec![
            (0, v(10.0)),
            (1, v(10.4)),
            (2, v(10.6)),
            (3, v(11.0)),
            (4, v(12.0)),
        ];
        let abs = PolicyConfig {
            deadband: Some(0.5),
            ..Default::default()
        };
        assert_eq!(ts(&run(abs, &input)), vec![0, 2, 4]);
        let rel = PolicyConfig {
            deadband_relative: Some(0.1),
            ..Default::default()
        };
        assert_eq!(ts(&run(rel, &input)), vec![0, 4]);
    }

    #[test]
    fn summary_folds_each_period() {
        let input: Vec<_> = [(0, 0), (400, 1), (900, 1), (1000, 0), (1500, 1)]
            .iter()
            .map(|&(t, c)| (t, class(c)))
            .collect();
        let c = PolicyConfig {
            summary_ms: Some(1000),
            ..Default::default()
        };
        let out = run(c, &input);
        assert_eq!(out.len(), 2);
        let Prediction::Summary(s) = &out[0].1 else {
            panic!()
        };
        assert_eq!((s.count, s.from_ts_ms, out[0].0), (3, 0, 900));
        assert_eq!(s.class_counts, vec![(0, 1), (1, 2)]);
        assert_eq!(
            (s.mean.clone(), s.min.clone(), s.max.clone()),
            (vec![1.0], vec![1.0], vec![1.0])
        );
        let Prediction::Summary(s) = &out[1].1 else {
            panic!()
        };
        assert_eq!((s.count, s.from_ts_ms), (2, 1000));
    }
}
