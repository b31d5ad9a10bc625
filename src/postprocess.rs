//! The postprocess stage: raw model outputs → typed [`Prediction`]s.

use crate::config::AnomalyScore;
use crate::schema::{AnomalyResult, ClassResult, Prediction};

/// How outputs are read.
#[derive(Debug, Clone, PartialEq)]
pub enum Postprocess {
    /// Best class and the `top_k` best.
    Classify {
        /// Apply softmax first.
        softmax: bool,
        /// How many classes to report.
        top_k: usize,
        /// Results below this best score are dropped.
        min_score: Option<f32>,
    },
    /// Values as they are.
    Regress,
    /// Score vs threshold.
    Anomaly {
        /// Output value or reconstruction error.
        score: AnomalyScore,
        /// Scores above this are anomalous.
        threshold: f32,
    },
}

/// Softmax in place, shifted by the maximum so large logits do not overflow.
pub fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// The `k` best (index, score) pairs, best first; ties keep the lower index.
/// NaN scores sort last instead of panicking.
fn top_k_of(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k.min(scores.len()) + 1);
    let rank = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
    for (i, &s) in scores.iter().enumerate() {
        // Insertion into a short sorted list: k is small, so this beats
        // sorting every index of every output.
        let pos = top
            .iter()
            .position(|&(_, t)| rank(s) > rank(t))
            .unwrap_or(top.len());
        if pos < k {
            top.insert(pos, (i as u32, s));
            top.truncate(k);
        }
    }
    top
}

impl Postprocess {
    /// Reads one inference: `input` is the window as given to the model,
    /// `output` the first output. `None` when the result is filtered out.
    pub fn apply(&self, input: &[f32], output: &[f32]) -> Option<Prediction> {
        match self {
            Postprocess::Classify {
                softmax: sm,
                top_k,
                min_score,
            } => {
                let softmaxed;
                let scores: &[f32] = if *sm {
                    let mut v = output.to_vec();
                    softmax(&mut v);
                    softmaxed = v;
                    &softmaxed
                } else {
                    output
                };
                let top = top_k_of(scores, *top_k);
                let &(best, score) = top.first()?;
                if min_score.is_some_and(|m| score < m) {
                    return None;
                }
                Some(Prediction::Class(ClassResult {
                    class: best,
                    score,
                    top,
                }))
            }
            Postprocess::Regress => Some(Prediction::Values(output.to_vec())),
            Postprocess::Anomaly { score, threshold } => {
                let s = match score {
                    AnomalyScore::Output => *output.first()?,
                    AnomalyScore::Reconstruction => {
                        let n = input.len().min(output.len()).max(1);
                        input
                            .iter()
                            .zip(output)
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum::<f32>()
                            / n as f32
                    }
                };
                Some(Prediction::Anomaly(AnomalyResult {
                    score: s,
                    threshold: *threshold,
                    anomalous: s > *threshold,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_with_softmax_top_k_and_min_score() {
        let p = Postprocess::Classify {
            softmax: true,
            top_k: 2,
            min_score: None,
        };
        let Some(Prediction::Class(c)) = p.apply(&[], &[0.0, 2.0, 1.0]) else {
            panic!("expected a class")
        };
        assert_eq!(c.class, 1);
        let e: Vec<f32> = [0.0f32, 2.0, 1.0].iter().map(|x| x.exp()).collect();
        let total: f32 = e.iter().sum();
        assert!((c.score - e[1] / total).abs() < 1e-6);
        assert_eq!(c.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        let strict = Postprocess::Classify {
            softmax: true,
            top_k: 1,
            min_score: Some(0.9),
        };
        assert!(strict.apply(&[], &[0.0, 0.1]).is_none());
    }

    #[test]
    fn top_k_keeps_order_ties_and_puts_nan_last() {
        assert_eq!(
            top_k_of(&[0.1, 0.7, 0.7, 0.2], 3),
            vec![(1, 0.7), (2, 0.7), (3, 0.2)]
        );
        let t = top_k_of(&[f32::NAN, 0.5, -1.0], 2);
        assert_eq!(t, vec![(1, 0.5), (2, -1.0)]);
        assert_eq!(top_k_of(&[3.0], 5), vec![(0, 3.0)]);
    }

    #[test]
    fn anomaly_scores() {
        let out = Postprocess::Anomaly {
            score: AnomalyScore::Output,
            threshold: 0.5,
        };
        assert_eq!(
            out.apply(&[], &[0.7]),
            Some(Prediction::Anomaly(AnomalyResult {
                score: 0.7,
                threshold: 0.5,
                anomalous: true
            }))
        );
        let rec = Postprocess::Anomaly {
            score: AnomalyScore::Reconstruction,
            threshold: 1.0,
        };
        let Some(Prediction::Anomaly(a)) = rec.apply(&[1.0, 2.0], &[1.0, 0.0]) else {
            panic!()
        };
        assert_eq!(a.score, 2.0);
        assert!(a.anomalous);
    }
}
