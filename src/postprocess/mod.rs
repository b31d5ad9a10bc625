//! The postprocess stage: raw model outputs → typed [`Prediction`]s. Owns
//! `[postprocess]` and resolves it against the model (its task and labels
//! metadata, its output size).

pub mod detect;

use serde::Deserialize;

use crate::model::{meta, meta_list, ModelFile};
use crate::problem::Problems;
use crate::schema::{AnomalyResult, ClassResult, Prediction};

/// `[postprocess]`, selected by `kind`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PostprocessConfig {
    /// Scores per class → best class.
    Classify {
        /// Apply softmax to the output first (for models that end in logits).
        #[serde(default)]
        softmax: bool,
        /// How many best classes to report.
        #[serde(default = "default_top_k")]
        top_k: usize,
        /// Class names; default the model's `edgeinfer.labels` metadata.
        #[serde(default)]
        labels: Vec<String>,
        /// A file of class names, one per line (blank lines and lines
        /// starting with `#` skipped), used when `labels` is empty.
        #[serde(default)]
        labels_file: Option<std::path::PathBuf>,
        /// Results whose best score is below this are not emitted.
        #[serde(default)]
        min_score: Option<f32>,
    },
    /// The output values as they are.
    Regress {},
    /// An anomaly score compared with a threshold.
    Anomaly {
        /// `output` (the model outputs the score) or `reconstruction` (mean
        /// squared difference between the model's input and output).
        #[serde(default)]
        score: AnomalyScore,
        /// Scores above this are anomalous.
        threshold: f32,
    },
    /// Objects in an image: boxes from YOLO- or SSD-style outputs (needs an
    /// image source).
    Detect(detect::DetectConfig),
}

fn default_top_k() -> usize {
    1
}

/// How the anomaly score is computed.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyScore {
    /// The model's first output value.
    #[default]
    Output,
    /// Mean squared error between the model input and its output (autoencoders).
    Reconstruction,
}

impl PostprocessConfig {
    /// Checks `[postprocess]` on its own (see [`resolve`] for the checks
    /// against the model).
    pub fn validate(&self, p: &mut Problems) {
        match self {
            PostprocessConfig::Classify { top_k: 0, .. } => {
                p.push("postprocess.top_k", "expected at least 1, found 0");
            }
            PostprocessConfig::Detect(d) => d.validate(p),
            _ => {}
        }
    }
}

/// What the postprocess stage is resolved against: the model's outputs and
/// its input.
#[derive(Debug, Clone, Copy)]
pub struct ModelShapes<'a> {
    /// Every output's shape, in graph order.
    pub outputs: &'a [Vec<usize>],
    /// Values in the input tensor.
    pub input_len: usize,
    /// The input image's (width, height) when the input is an image.
    pub image_size: Option<(u32, u32)>,
}

/// The postprocess stage and the class labels for `config` (or, without
/// one, the model's `edgeinfer.task`, else `regress`) on `file`'s model of
/// `shapes`. Labels come from the config, else the model's metadata. `None`
/// after noting every problem in `p`.
pub fn resolve(
    config: Option<&PostprocessConfig>,
    file: &ModelFile,
    shapes: ModelShapes,
    p: &mut Problems,
) -> Option<(Postprocess, Vec<String>)> {
    let outputs: usize = shapes
        .outputs
        .first()
        .map(|o| o.iter().product())
        .unwrap_or(0);
    let input_len = shapes.input_len;
    let task_default = match file.metadata(meta::TASK) {
        Some("classify") => PostprocessConfig::Classify {
            softmax: false,
            top_k: 1,
            labels: vec![],
            labels_file: None,
            min_score: None,
        },
        _ => PostprocessConfig::Regress {},
    };
    let config = config.unwrap_or(&task_default);
    let before = p.len();
    let mut labels = file
        .metadata(meta::LABELS)
        .map(meta_list)
        .unwrap_or_default();
    let post = match config {
        PostprocessConfig::Classify {
            softmax,
            top_k,
            labels: configured,
            labels_file,
            min_score,
        } => {
            if !configured.is_empty() {
                labels = configured.clone();
            } else if let Some(f) = labels_file {
                labels = read_labels(&p.origin().resolve(f), p).unwrap_or_default();
            }
            p.check(
                labels.is_empty() || labels.len() == outputs,
                "postprocess.labels",
                || {
                    format!(
                        "expected {outputs} labels (one per model output), found {}",
                        labels.len()
                    )
                },
            );
            p.check(*top_k <= outputs, "postprocess.top_k", || {
                format!("expected at most {outputs} (the model's outputs), found {top_k}")
            });
            Postprocess::Classify {
                softmax: *softmax,
                top_k: *top_k,
                min_score: *min_score,
            }
        }
        PostprocessConfig::Regress {} => Postprocess::Regress,
        PostprocessConfig::Anomaly { score, threshold } => {
            p.check(
                *score != AnomalyScore::Reconstruction || outputs == input_len,
                "postprocess.score",
                || {
                    format!(
                        "reconstruction needs an output as large as the input ({input_len} values), found {outputs}"
                    )
                },
            );
            Postprocess::Anomaly {
                score: *score,
                threshold: *threshold,
            }
        }
        PostprocessConfig::Detect(d) => {
            let Some(size) = shapes.image_size else {
                p.push(
                    "postprocess.kind",
                    "detect needs an image source (image_dir, mjpeg, or mqtt topics of format \"image\")",
                );
                return None;
            };
            if !d.labels.is_empty() {
                labels = d.labels.clone();
            }
            let mut d = d.clone();
            d.labels = labels.clone();
            Postprocess::Detect(Box::new(detect::Detector::new(d, size, shapes.outputs, p)?))
        }
    };
    (p.len() == before).then_some((post, labels))
}

/// The class names in a labels file, one per line.
fn read_labels(path: &std::path::Path, p: &mut Problems) -> Option<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect(),
        ),
        Err(e) => {
            p.push(
                "postprocess.labels_file",
                format!(
                    "expected a readable file of labels, {}: {e}",
                    path.display()
                ),
            );
            None
        }
    }
}

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
    /// Boxes in the source image.
    Detect(Box<detect::Detector>),
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
    /// True when the stage reads every output of the model, not only the
    /// first (detectors).
    pub fn needs_all_outputs(&self) -> bool {
        matches!(self, Postprocess::Detect(_))
    }

    /// Reads one inference given all the model's outputs; `geometry` maps
    /// the input image's pixels to the source image's when the input was
    /// an image.
    pub fn apply_all(
        &self,
        input: &[f32],
        outputs: &[crate::model::Output],
        geometry: Option<&crate::image::Geometry>,
    ) -> Option<Prediction> {
        if let Postprocess::Detect(d) = self {
            let slices: Vec<&[f32]> = outputs.iter().map(|o| o.values.as_slice()).collect();
            return Some(Prediction::Detections(d.apply(&slices, geometry?)));
        }
        self.apply(input, &outputs.first()?.values)
    }

    /// Reads one inference: `input` is the window as given to the model,
    /// `output` the first output. `None` when the result is filtered out,
    /// and for a detector, which needs [`apply_all`](Self::apply_all).
    pub fn apply(&self, input: &[f32], output: &[f32]) -> Option<Prediction> {
        match self {
            Postprocess::Detect(_) => None,
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
    use crate::export::{ElemType, GraphBuilder};
    use crate::problem::Origin;

    /// A model of 4 inputs and 3 outputs with `meta`.
    fn model(meta: &[(&str, &str)]) -> ModelFile {
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", ElemType::F32, &[1.into(), 4.into()]);
        let y = g.gemm(&x, 4, 3, vec![0.0; 12], vec![0.0; 3]).unwrap();
        g.output(&y, "y", ElemType::F32, &[1.into(), 3.into()]);
        for (k, v) in meta {
            g.metadata(k, v);
        }
        ModelFile::from_bytes(crate::export::to_bytes(&g.finish()), "m.onnx").unwrap()
    }

    fn run(
        config: Option<&str>,
        file: &ModelFile,
        input_len: usize,
    ) -> Result<(Postprocess, Vec<String>), Vec<String>> {
        #[derive(Deserialize)]
        struct Section {
            postprocess: PostprocessConfig,
        }
        let config = config.map(|c| toml::from_str::<Section>(c).unwrap().postprocess);
        let origin = Origin::new("t.toml", std::path::Path::new("."));
        let mut p = Problems::new(&origin);
        let shapes = ModelShapes {
            outputs: &[vec![1, 3]],
            input_len,
            image_size: None,
        };
        let r = resolve(config.as_ref(), file, shapes, &mut p);
        let fields = p.into_vec().into_iter().map(|e| e.field).collect();
        r.ok_or(fields)
    }

    #[test]
    fn resolution_follows_config_then_metadata() {
        let plain = model(&[]);
        assert_eq!(
            run(None, &plain, 4).unwrap(),
            (Postprocess::Regress, vec![])
        );
        let classifier = model(&[(meta::TASK, "classify"), (meta::LABELS, "a, b, c")]);
        let (post, labels) = run(None, &classifier, 4).unwrap();
        assert_eq!(
            post,
            Postprocess::Classify {
                softmax: false,
                top_k: 1,
                min_score: None
            }
        );
        assert_eq!(labels, vec!["a", "b", "c"]);
        let (post, labels) = run(
            Some("[postprocess]\nkind = \"classify\"\ntop_k = 3\nlabels = [\"x\", \"y\", \"z\"]\nsoftmax = true\n"),
            &classifier,
            4,
        )
        .unwrap();
        assert!(matches!(
            post,
            Postprocess::Classify {
                top_k: 3,
                softmax: true,
                ..
            }
        ));
        assert_eq!(labels, vec!["x", "y", "z"]);
        let (post, _) = run(
            Some(
                "[postprocess]\nkind = \"anomaly\"\nscore = \"reconstruction\"\nthreshold = 0.5\n",
            ),
            &plain,
            3,
        )
        .unwrap();
        assert!(matches!(post, Postprocess::Anomaly { threshold: 0.5, .. }));
    }

    #[test]
    fn resolution_names_every_misfit() {
        let plain = model(&[]);
        assert_eq!(
            run(
                Some("[postprocess]\nkind = \"classify\"\ntop_k = 4\nlabels = [\"x\"]\n"),
                &plain,
                4
            )
            .unwrap_err(),
            vec!["postprocess.labels", "postprocess.top_k"]
        );
        assert_eq!(
            run(
                Some("[postprocess]\nkind = \"anomaly\"\nscore = \"reconstruction\"\nthreshold = 1.0\n"),
                &plain,
                4
            )
            .unwrap_err(),
            vec!["postprocess.score"]
        );
        // Wrong-length labels in the model's metadata are named too.
        let bad_meta = model(&[(meta::TASK, "classify"), (meta::LABELS, "[\"a\"]")]);
        assert_eq!(
            run(None, &bad_meta, 4).unwrap_err(),
            vec!["postprocess.labels"]
        );
    }

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
