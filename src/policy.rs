//! The policy stage: which results are emitted.

use crate::config::PolicyConfig;
use crate::schema::Prediction;

/// Decides per result whether it is emitted; all configured rules must agree.
#[derive(Debug, Clone)]
pub struct Policy {
    on_change: bool,
    min_interval_ms: Option<u64>,
    last_class: Option<u32>,
    last_emit_ms: Option<u64>,
}

impl Policy {
    /// A policy from `[policy]`.
    pub fn new(config: &PolicyConfig) -> Self {
        Policy {
            on_change: config.on_change,
            min_interval_ms: config.min_interval_ms,
            last_class: None,
            last_emit_ms: None,
        }
    }

    /// True when the result at `ts_ms` should be emitted.
    pub fn admit(&mut self, ts_ms: u64, prediction: &Prediction) -> bool {
        if let (true, Prediction::Class(c)) = (self.on_change, prediction) {
            if self.last_class == Some(c.class) {
                return false;
            }
        }
        if let (Some(min), Some(last)) = (self.min_interval_ms, self.last_emit_ms) {
            if ts_ms.saturating_sub(last) < min {
                return false;
            }
        }
        if let Prediction::Class(c) = prediction {
            self.last_class = Some(c.class);
        }
        self.last_emit_ms = Some(ts_ms);
        true
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

    #[test]
    fn every_by_default() {
        let mut p = Policy::new(&PolicyConfig::default());
        assert!((0..3).all(|i| p.admit(i, &class(0))));
    }

    #[test]
    fn on_change_and_min_interval() {
        let mut p = Policy::new(&PolicyConfig {
            on_change: true,
            min_interval_ms: Some(100),
        });
        let got: Vec<bool> = [(0, 0), (10, 0), (20, 1), (150, 1), (160, 0), (300, 0)]
            .iter()
            .map(|&(t, c)| p.admit(t, &class(c)))
            .collect();
        assert_eq!(got, vec![true, false, false, true, false, true]);
    }
}
