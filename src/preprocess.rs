//! The preprocess stage: per-channel steps from config, in config order.
//!
//! Steps run on each sample as it arrives, before windowing: every step is
//! per value, so the result is the same as on the window, and overlapping
//! windows do not redo the work. Scale, standardize and min-max all compile
//! to one per-channel affine map.

use serde::Deserialize;

use crate::model::{meta, ModelInfo};
use crate::problem::Problems;

/// One `[[preprocess]]` step, selected by `op`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PreprocessStep {
    /// `x * factor + offset`.
    Scale {
        /// Multiplier: one number, or one per channel.
        #[serde(default = "per_channel_one")]
        factor: PerChannel,
        /// Added after multiplying: one number, or one per channel.
        #[serde(default = "per_channel_zero")]
        offset: PerChannel,
    },
    /// `(x - mean) / std`; without values, the model's `edgeinfer.mean` and
    /// `edgeinfer.std` metadata.
    Standardize {
        /// Means: one number, or one per channel.
        mean: Option<PerChannel>,
        /// Standard deviations: one number, or one per channel.
        std: Option<PerChannel>,
    },
    /// `(x - min) / (max - min)`, mapping [min, max] to [0, 1].
    MinMax {
        /// Lower bounds: one number, or one per channel.
        min: PerChannel,
        /// Upper bounds: one number, or one per channel.
        max: PerChannel,
    },
    /// Limits every value to `[min, max]`.
    Clamp {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// What to do with NaN or infinite values.
    Missing {
        /// `reject` (drop the sample, counted), `zero`, or `hold_last`.
        policy: MissingPolicy,
    },
}

fn per_channel_one() -> PerChannel {
    PerChannel::One(1.0)
}
fn per_channel_zero() -> PerChannel {
    PerChannel::One(0.0)
}

/// A number for every channel, or one per channel.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerChannel {
    /// The same value for every channel.
    One(f32),
    /// One value per channel, in channel order.
    Each(Vec<f32>),
}

/// NaN / missing-value policy.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MissingPolicy {
    /// Drop the whole sample and count it.
    Reject,
    /// Replace with 0.
    Zero,
    /// Replace with the channel's last good value (0 before there is one).
    HoldLast,
}

/// Checks the `[[preprocess]]` steps on their own (lengths against the
/// channel count are checked by [`Preprocess::build`]).
pub fn validate(steps: &[PreprocessStep], p: &mut Problems) {
    for (i, step) in steps.iter().enumerate() {
        if let PreprocessStep::Clamp { min, max } = step {
            p.check(min <= max, &format!("preprocess[{i}].min"), || {
                format!("expected min <= max, found {min} > {max}")
            });
        }
    }
}

/// Why a sample was rejected.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum Rejected {
    /// A missing value under `policy = "reject"`.
    #[error("channel {channel} is {value} (missing policy: reject)")]
    Missing {
        /// The channel.
        channel: usize,
        /// Its value (NaN or infinite).
        value: f32,
    },
    /// A non-finite value that no `missing` step replaced.
    #[error(
        "channel {channel} is {value} (add a [[preprocess]] op = \"missing\" step to replace it)"
    )]
    NotFinite {
        /// The channel.
        channel: usize,
        /// Its value.
        value: f32,
    },
}

#[derive(Debug, Clone)]
enum Step {
    Affine {
        mul: Vec<f32>,
        add: Vec<f32>,
    },
    Clamp {
        min: f32,
        max: f32,
    },
    Missing {
        policy: MissingPolicy,
        last: Vec<f32>,
    },
}

/// The compiled steps for a fixed channel count.
#[derive(Debug, Clone)]
pub struct Preprocess {
    steps: Vec<Step>,
}

/// One value per channel, or a problem at `field`.
fn expand(v: &PerChannel, channels: usize, field: &str) -> Result<Vec<f32>, (String, String)> {
    match v {
        PerChannel::One(x) => Ok(vec![*x; channels]),
        PerChannel::Each(xs) if xs.len() == channels => Ok(xs.clone()),
        PerChannel::Each(xs) => Err((
            field.to_string(),
            format!(
                "expected one number or {channels} (one per channel), found {}",
                xs.len()
            ),
        )),
    }
}

fn meta_floats(info: &ModelInfo, key: &str) -> Option<Vec<f32>> {
    info.metadata
        .get(key)
        .and_then(|v| serde_json::from_str::<Vec<f32>>(v).ok())
}

impl Preprocess {
    /// Compiles `config`'s steps for `channels` channels; missing
    /// standardize values come from the model's metadata. `None` after
    /// noting every problem in `p`.
    pub fn build(
        config: &[PreprocessStep],
        channels: usize,
        info: &ModelInfo,
        p: &mut Problems,
    ) -> Option<Self> {
        let mut steps = Vec::new();
        let mut problems: Vec<(String, String)> = Vec::new();
        for (i, step) in config.iter().enumerate() {
            let field = |name: &str| format!("preprocess[{i}].{name}");
            let step = match step {
                PreprocessStep::Scale { factor, offset } => {
                    match (
                        expand(factor, channels, &field("factor")),
                        expand(offset, channels, &field("offset")),
                    ) {
                        (Ok(mul), Ok(add)) => Some(Step::Affine { mul, add }),
                        (a, b) => {
                            problems.extend(a.err());
                            problems.extend(b.err());
                            None
                        }
                    }
                }
                PreprocessStep::Standardize { mean, std } => {
                    let from_meta = |key: &str, name: &str| match meta_floats(info, key) {
                        Some(v) => Ok(PerChannel::Each(v)),
                        None => Err((
                            field(name),
                            format!("expected a value here or {key} in the model's metadata"),
                        )),
                    };
                    let mean = mean
                        .clone()
                        .map(Ok)
                        .unwrap_or_else(|| from_meta(meta::MEAN, "mean"));
                    let std = std
                        .clone()
                        .map(Ok)
                        .unwrap_or_else(|| from_meta(meta::STD, "std"));
                    let mean = mean.and_then(|m| expand(&m, channels, &field("mean")));
                    let std = std.and_then(|s| expand(&s, channels, &field("std")));
                    match (mean, std) {
                        (Ok(mean), Ok(std)) => {
                            if std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
                                problems.push((
                                    field("std"),
                                    "expected positive standard deviations".into(),
                                ));
                                None
                            } else {
                                Some(Step::Affine {
                                    mul: std.iter().map(|s| 1.0 / s).collect(),
                                    add: mean.iter().zip(&std).map(|(m, s)| -m / s).collect(),
                                })
                            }
                        }
                        (a, b) => {
                            problems.extend(a.err());
                            problems.extend(b.err());
                            None
                        }
                    }
                }
                PreprocessStep::MinMax { min, max } => {
                    match (
                        expand(min, channels, &field("min")),
                        expand(max, channels, &field("max")),
                    ) {
                        (Ok(lo), Ok(hi)) => {
                            if lo.iter().zip(&hi).any(|(l, h)| h <= l) {
                                problems.push((
                                    field("max"),
                                    "expected max > min for every channel".into(),
                                ));
                                None
                            } else {
                                Some(Step::Affine {
                                    mul: lo.iter().zip(&hi).map(|(l, h)| 1.0 / (h - l)).collect(),
                                    add: lo.iter().zip(&hi).map(|(l, h)| -l / (h - l)).collect(),
                                })
                            }
                        }
                        (a, b) => {
                            problems.extend(a.err());
                            problems.extend(b.err());
                            None
                        }
                    }
                }
                PreprocessStep::Clamp { min, max } => Some(Step::Clamp {
                    min: *min,
                    max: *max,
                }),
                PreprocessStep::Missing { policy } => Some(Step::Missing {
                    policy: *policy,
                    last: vec![0.0; channels],
                }),
            };
            steps.extend(step);
        }
        let ok = problems.is_empty();
        for (field, message) in problems {
            p.push(&field, message);
        }
        ok.then_some(Preprocess { steps })
    }

    /// Applies every step to one sample in place. `Err` means the sample is
    /// rejected (a NaN under `reject`, or a NaN left when no step handled it).
    pub fn apply(&mut self, values: &mut [f32]) -> Result<(), Rejected> {
        for step in &mut self.steps {
            match step {
                Step::Affine { mul, add } => {
                    for ((v, m), a) in values.iter_mut().zip(mul.iter()).zip(add.iter()) {
                        *v = *v * m + a;
                    }
                }
                Step::Clamp { min, max } => {
                    for v in values.iter_mut() {
                        // NaN stays NaN: clamping must not invent a reading.
                        if v.is_finite() {
                            *v = v.clamp(*min, *max);
                        }
                    }
                }
                Step::Missing { policy, last } => {
                    for (c, v) in values.iter_mut().enumerate() {
                        if v.is_finite() {
                            last[c] = *v;
                            continue;
                        }
                        match policy {
                            MissingPolicy::Reject => {
                                return Err(Rejected::Missing {
                                    channel: c,
                                    value: *v,
                                })
                            }
                            MissingPolicy::Zero => *v = 0.0,
                            MissingPolicy::HoldLast => *v = last[c],
                        }
                    }
                }
            }
        }
        // A non-finite value would make every output of the window garbage.
        if let Some(c) = values.iter().position(|v| !v.is_finite()) {
            return Err(Rejected::NotFinite {
                channel: c,
                value: values[c],
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::{ConfigProblem, Origin};
    use std::path::Path;

    fn info(meta: &[(&str, &str)]) -> ModelInfo {
        ModelInfo {
            origin: "m".into(),
            file_size: 0,
            sha256: String::new(),
            inputs: vec![],
            outputs: vec![],
            params: 0,
            macs: 0,
            flops: 0,
            conv_layout: crate::model::ConvLayout::Nchw,
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn build(steps: &str, meta: &[(&str, &str)]) -> Result<Preprocess, Vec<ConfigProblem>> {
        #[derive(Deserialize)]
        struct Steps {
            #[serde(default)]
            preprocess: Vec<PreprocessStep>,
        }
        let steps: Steps = toml::from_str(steps).unwrap();
        let origin = Origin::new("t.toml", Path::new("."));
        let mut p = Problems::new(&origin);
        let built = Preprocess::build(&steps.preprocess, 2, &info(meta), &mut p);
        built.ok_or_else(|| p.into_vec())
    }

    #[test]
    fn steps_apply_in_order() {
        let mut p = build(
            "[[preprocess]]\nop = \"missing\"\npolicy = \"hold_last\"\n\
             [[preprocess]]\nop = \"scale\"\nfactor = [2.0, 10.0]\noffset = 1.0\n\
             [[preprocess]]\nop = \"standardize\"\nmean = 1.0\nstd = [1.0, 2.0]\n\
             [[preprocess]]\nop = \"clamp\"\nmin = -5.0\nmax = 5.0\n",
            &[],
        )
        .unwrap();
        let mut v = [1.0, 1.0];
        p.apply(&mut v).unwrap();
        assert_eq!(v, [2.0, 5.0]); // (3-1)/1 = 2; (11-1)/2 = 5
        let mut v = [f32::NAN, 0.5];
        p.apply(&mut v).unwrap();
        assert_eq!(v, [2.0, 2.5]); // held 1.0 → 2.0; (6-1)/2 = 2.5
    }

    #[test]
    fn min_max_and_reject() {
        let mut p = build(
            "[[preprocess]]\nop = \"missing\"\npolicy = \"reject\"\n\
             [[preprocess]]\nop = \"min_max\"\nmin = 0.0\nmax = [10.0, 4.0]\n",
            &[],
        )
        .unwrap();
        let mut v = [5.0, 1.0];
        p.apply(&mut v).unwrap();
        assert_eq!(v, [0.5, 0.25]);
        assert!(p.apply(&mut [f32::NAN, 1.0]).is_err());
    }

    #[test]
    fn nan_without_a_missing_step_is_rejected_and_zero_policy_replaces() {
        let mut p = build("", &[]).unwrap();
        assert!(p.apply(&mut [f32::INFINITY, 1.0]).is_err());
        let mut p = build("[[preprocess]]\nop = \"missing\"\npolicy = \"zero\"\n", &[]).unwrap();
        let mut v = [f32::NAN, 1.0];
        p.apply(&mut v).unwrap();
        assert_eq!(v, [0.0, 1.0]);
    }

    #[test]
    fn standardize_defaults_from_metadata_and_checks_lengths() {
        let mut p = build(
            "[[preprocess]]\nop = \"standardize\"\n",
            &[(meta::MEAN, "[1.0, 2.0]"), (meta::STD, "[2.0, 4.0]")],
        )
        .unwrap();
        let mut v = [3.0, 6.0];
        p.apply(&mut v).unwrap();
        assert_eq!(v, [1.0, 1.0]);
        let errs = build("[[preprocess]]\nop = \"standardize\"\n", &[]).unwrap_err();
        assert_eq!(errs.len(), 2);
        let errs = build(
            "[[preprocess]]\nop = \"scale\"\nfactor = [1.0, 2.0, 3.0]\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(errs[0].field, "preprocess[0].factor");
    }
}
