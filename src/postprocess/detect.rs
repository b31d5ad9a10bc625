//! Detection outputs → boxes: YOLO- and SSD-style layouts, score threshold,
//! per-class non-maximum suppression, boxes in source-image pixels.
//!
//! The model gives boxes in its input's pixels (or, `normalized`, in
//! fractions of the input's width and height); [`Geometry`] maps them to the
//! source image, where they are clipped to the image and rounded.
//!
//! Each box keeps only its best class (as Ultralytics' and TensorFlow's
//! exports report them), so a box is one candidate, not one per class.

use serde::Deserialize;

use crate::image::Geometry;
use crate::problem::Problems;
use crate::schema::Detection;

/// How the model lays out its detections.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DetectFormat {
    /// One output `[1, N, 5 + C]`: per box cx, cy, w, h, objectness and C
    /// class scores; a box's score is objectness × its best class score.
    Yolov5,
    /// One output `[1, 4 + C, N]`: cx, cy, w, h and C class scores of every
    /// box, attribute by attribute; no objectness.
    Yolov8,
    /// Boxes `[1, N, 4]` and scores `[1, N, C]` (each box takes its best
    /// class); or boxes `[1, N, 4]`, scores `[1, N]` and class indices
    /// `[1, N]` (as floats), in that order.
    Ssd,
}

impl DetectFormat {
    fn name(self) -> &'static str {
        match self {
            DetectFormat::Yolov5 => "yolov5",
            DetectFormat::Yolov8 => "yolov8",
            DetectFormat::Ssd => "ssd",
        }
    }
}

/// The order of a box's four values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BoxFormat {
    /// Centre x, centre y, width, height.
    Cxcywh,
    /// Left, top, right, bottom.
    Xyxy,
    /// Top, left, bottom, right (TensorFlow's SSDs).
    Yxyx,
}

/// `[postprocess] kind = "detect"`: how detection outputs become boxes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// The output layout: `yolov5`, `yolov8` or `ssd`.
    pub format: DetectFormat,
    /// The YOLO output is stored the other way round from the format's usual
    /// export: `[1, 5 + C, N]` for `yolov5`, `[1, N, 4 + C]` for `yolov8`.
    #[serde(default)]
    pub transposed: bool,
    /// Boxes scoring below this (0 to 1) are dropped.
    #[serde(default = "default_score_threshold")]
    pub score_threshold: f32,
    /// A box whose intersection over union with a better box exceeds this
    /// (0 to 1) is dropped.
    #[serde(default = "default_iou_threshold")]
    pub iou_threshold: f32,
    /// At most this many boxes are reported per image, best first.
    #[serde(default = "default_max_boxes")]
    pub max_boxes: usize,
    /// The order of a box's four values; default `cxcywh` for YOLO formats,
    /// `yxyx` for `ssd`.
    #[serde(default)]
    pub box_format: Option<BoxFormat>,
    /// Box values are fractions (0 to 1) of the model input's width and
    /// height instead of input pixels; default false for YOLO formats, true
    /// for `ssd`.
    #[serde(default)]
    pub normalized: Option<bool>,
    /// Overlapping boxes suppress each other whatever their classes; by
    /// default only boxes of the same class do.
    #[serde(default)]
    pub class_agnostic: bool,
    /// A class never reported (the background class of SSDs that score
    /// one); boxes take their best class among the others.
    #[serde(default)]
    pub background_class: Option<u32>,
    /// Class names; default the model's `edgeinfer.labels` metadata.
    #[serde(default)]
    pub labels: Vec<String>,
}

fn default_score_threshold() -> f32 {
    0.25
}

fn default_iou_threshold() -> f32 {
    0.45
}

fn default_max_boxes() -> usize {
    100
}

impl DetectConfig {
    /// `format` with every other setting at its default.
    pub fn new(format: DetectFormat) -> Self {
        DetectConfig {
            format,
            transposed: false,
            score_threshold: default_score_threshold(),
            iou_threshold: default_iou_threshold(),
            max_boxes: default_max_boxes(),
            box_format: None,
            normalized: None,
            class_agnostic: false,
            background_class: None,
            labels: Vec::new(),
        }
    }

    /// Checks the settings on their own (fields named `postprocess.<field>`);
    /// [`Detector::new`] checks them against the model.
    pub fn validate(&self, p: &mut Problems) {
        for (field, value) in [
            ("postprocess.score_threshold", self.score_threshold),
            ("postprocess.iou_threshold", self.iou_threshold),
        ] {
            p.check((0.0..=1.0).contains(&value), field, || {
                format!("expected a number from 0 to 1, found {value}")
            });
        }
        p.at_least_one(self.max_boxes as u64, "postprocess.max_boxes");
        p.check(
            !(self.transposed && self.format == DetectFormat::Ssd),
            "postprocess.transposed",
            || "expected false with format = \"ssd\" (only YOLO outputs are transposed)".into(),
        );
    }
}

/// One candidate box: `[x0, y0, x1, y1]` with `x0 <= x1`, `y0 <= y1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// `[x0, y0, x1, y1]`.
    pub bbox: [f32; 4],
    /// Its score.
    pub score: f32,
    /// Its class index.
    pub class: u32,
}

/// Intersection over union of two `[x0, y0, x1, y1]` boxes; 0 when either
/// is empty or a value is NaN.
pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    // f32::max returns the number when the other side is NaN, so NaN
    // coordinates give empty extents rather than a NaN overlap.
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Greedy non-maximum suppression: by descending score (NaN last, ties in
/// the given order), keeps each candidate whose IoU with every kept box of
/// its class (of any class when `class_agnostic`) is at most
/// `iou_threshold`, until `max_boxes` are kept. Returns them best first.
pub fn nms(
    mut candidates: Vec<Candidate>,
    iou_threshold: f32,
    class_agnostic: bool,
    max_boxes: usize,
) -> Vec<Candidate> {
    let rank = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    // Stable, and total_cmp cannot panic; NaN ranked as -inf cannot jump the queue.
    candidates.sort_by(|a, b| rank(b.score).total_cmp(&rank(a.score)));
    let mut kept: Vec<Candidate> = Vec::with_capacity(max_boxes.min(candidates.len()));
    for c in candidates {
        if kept.len() >= max_boxes {
            break;
        }
        let suppressed = kept
            .iter()
            .any(|k| (class_agnostic || k.class == c.class) && iou(k.bbox, c.bbox) > iou_threshold);
        if !suppressed {
            kept.push(c);
        }
    }
    kept
}

/// Which outputs hold what, as checked against the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One output; `box_major`: stored `[1, N, values per box]`, else
    /// `[1, values per box, N]`.
    Yolo { objectness: bool, box_major: bool },
    /// Boxes and per-class scores.
    SsdScores,
    /// Boxes, best scores and class indices.
    SsdClasses,
}

/// Detection outputs → [`Detection`]s, for one model's output shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Detector {
    config: DetectConfig,
    layout: Layout,
    boxes: usize,
    classes: usize,
    box_format: BoxFormat,
    normalized: bool,
    input_size: (f32, f32),
}

/// `[1, 2, 3], [4]` (or `no outputs`), for messages.
fn describe(shapes: &[Vec<usize>]) -> String {
    if shapes.is_empty() {
        return "no outputs".into();
    }
    shapes
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Detector {
    /// The detector for `config` on a model whose input is `input_size`
    /// (width, height) pixels and whose outputs have `output_shapes`. `None`
    /// after noting in `p` why the outputs do not fit the format, or why the
    /// labels or background class do not fit the outputs.
    pub fn new(
        config: DetectConfig,
        input_size: (u32, u32),
        output_shapes: &[Vec<usize>],
        p: &mut Problems,
    ) -> Option<Detector> {
        let (layout, boxes, classes) = match config.format {
            DetectFormat::Yolov5 | DetectFormat::Yolov8 => yolo_layout(&config, output_shapes, p)?,
            DetectFormat::Ssd => ssd_layout(output_shapes, p)?,
        };
        let before = p.len();
        // With class indices as a tensor only the labels tell how many
        // classes there are.
        let known_classes = layout != Layout::SsdClasses;
        if known_classes && !config.labels.is_empty() && config.labels.len() != classes {
            p.push(
                "postprocess.labels",
                format!(
                    "expected {classes} labels (one per class of the model's outputs {}), found {}",
                    describe(output_shapes),
                    config.labels.len()
                ),
            );
        }
        if let Some(bg) = config.background_class {
            p.check(
                !known_classes || (bg as usize) < classes,
                "postprocess.background_class",
                || format!("expected a class index below {classes}, found {bg}"),
            );
        }
        if p.len() != before {
            return None;
        }
        let ssd = config.format == DetectFormat::Ssd;
        let classes = if known_classes {
            classes
        } else {
            config.labels.len()
        };
        Some(Detector {
            box_format: config.box_format.unwrap_or(if ssd {
                BoxFormat::Yxyx
            } else {
                BoxFormat::Cxcywh
            }),
            normalized: config.normalized.unwrap_or(ssd),
            input_size: (input_size.0 as f32, input_size.1 as f32),
            config,
            layout,
            boxes,
            classes,
        })
    }

    /// How many classes the model scores: from its output shapes, or, for an
    /// SSD that outputs class indices, the number of labels (0 without).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// How many candidate boxes the model outputs (N).
    pub fn boxes(&self) -> usize {
        self.boxes
    }

    /// The settings.
    pub fn config(&self) -> &DetectConfig {
        &self.config
    }

    /// The objects in one inference's `outputs` (flat, in the shapes given
    /// to [`new`](Self::new)), best first, in the source image's pixels.
    /// Outputs of other sizes give no detections.
    pub fn apply(&self, outputs: &[&[f32]], geometry: &Geometry) -> Vec<Detection> {
        let mut candidates = Vec::new();
        let n = self.boxes;
        match (self.layout, outputs) {
            (
                Layout::Yolo {
                    objectness,
                    box_major,
                },
                [data, ..],
            ) => self.decode_yolo(data, objectness, box_major, geometry, &mut candidates),
            (Layout::SsdScores, [boxes, scores, ..])
                if self.classes > 0
                    && n.checked_mul(4) == Some(boxes.len())
                    && n.checked_mul(self.classes) == Some(scores.len()) =>
            {
                for (b, s) in boxes.chunks_exact(4).zip(scores.chunks_exact(self.classes)) {
                    let (class, score) = self.best_class(s);
                    let b = [b[0], b[1], b[2], b[3]];
                    self.push(&mut candidates, b, score, class, geometry);
                }
            }
            (Layout::SsdClasses, [boxes, scores, classes, ..])
                if n.checked_mul(4) == Some(boxes.len())
                    && scores.len() == n
                    && classes.len() == n =>
            {
                for ((b, &score), &class) in boxes.chunks_exact(4).zip(*scores).zip(*classes) {
                    // Indices arrive as floats: the nearest whole number,
                    // unless negative, NaN or beyond u32.
                    let class = class.round();
                    if !(0.0..=u32::MAX as f32).contains(&class)
                        || self.config.background_class == Some(class as u32)
                    {
                        continue;
                    }
                    let b = [b[0], b[1], b[2], b[3]];
                    self.push(&mut candidates, b, score, class as u32, geometry);
                }
            }
            _ => {}
        }
        nms(
            candidates,
            self.config.iou_threshold,
            self.config.class_agnostic,
            self.config.max_boxes,
        )
        .into_iter()
        .map(|c| Detection {
            class: c.class,
            score: c.score,
            bbox: round_box(c.bbox),
        })
        .collect()
    }

    fn decode_yolo(
        &self,
        data: &[f32],
        objectness: bool,
        box_major: bool,
        geometry: &Geometry,
        out: &mut Vec<Candidate>,
    ) {
        let n = self.boxes;
        let head = if objectness { 5 } else { 4 };
        let per_box = head + self.classes;
        if n.checked_mul(per_box) != Some(data.len()) || n == 0 || self.classes == 0 {
            return;
        }
        if box_major {
            for row in data.chunks_exact(per_box) {
                let (class, best) = self.best_class(&row[head..]);
                let score = if objectness { row[4] * best } else { best };
                self.push(
                    out,
                    [row[0], row[1], row[2], row[3]],
                    score,
                    class,
                    geometry,
                );
            }
            return;
        }
        // Each attribute is a contiguous row of N values here: walking the
        // class rows in order reads memory sequentially, where a box at a
        // time would stride N floats per class (8400 × 80 cache misses for
        // YOLOv8 at 640).
        let mut best = vec![(f32::NEG_INFINITY, 0u32); n];
        for (c, row) in data[head * n..].chunks_exact(n).enumerate() {
            if self.config.background_class == Some(c as u32) {
                continue;
            }
            for (b, &s) in best.iter_mut().zip(row) {
                if s > b.0 {
                    *b = (s, c as u32);
                }
            }
        }
        for (i, &(best, class)) in best.iter().enumerate() {
            let score = if objectness {
                data[4 * n + i] * best
            } else {
                best
            };
            let raw = [data[i], data[n + i], data[2 * n + i], data[3 * n + i]];
            self.push(out, raw, score, class, geometry);
        }
    }

    /// The best class of one box's `scores`, skipping the background class
    /// and NaN; `-inf` when none is left.
    fn best_class(&self, scores: &[f32]) -> (u32, f32) {
        let mut best = (0, f32::NEG_INFINITY);
        for (c, &s) in scores.iter().enumerate() {
            if s > best.1 && self.config.background_class != Some(c as u32) {
                best = (c as u32, s);
            }
        }
        best
    }

    /// Adds the candidate unless its score is below the threshold or not
    /// finite, or its box is not finite or empty once in the image.
    fn push(
        &self,
        out: &mut Vec<Candidate>,
        raw: [f32; 4],
        score: f32,
        class: u32,
        geometry: &Geometry,
    ) {
        if !(score.is_finite() && score >= self.config.score_threshold) {
            return;
        }
        if let Some(bbox) = self.source_box(raw, geometry) {
            out.push(Candidate { bbox, score, class });
        }
    }

    /// A box's four values → `[x0, y0, x1, y1]` in source pixels, clipped
    /// to the image; `None` when not finite or empty once rounded.
    ///
    /// Clipping comes before suppression so that `max_boxes` counts only
    /// boxes that are reported, and overlap is measured in the image.
    fn source_box(&self, raw: [f32; 4], g: &Geometry) -> Option<[f32; 4]> {
        let [a, b, c, d] = raw;
        let (x0, y0, x1, y1) = match self.box_format {
            BoxFormat::Cxcywh => (a - c / 2.0, b - d / 2.0, a + c / 2.0, b + d / 2.0),
            BoxFormat::Xyxy => (a, b, c, d),
            BoxFormat::Yxyx => (b, a, d, c),
        };
        let (sx, sy) = if self.normalized {
            self.input_size
        } else {
            (1.0, 1.0)
        };
        let (ax, ay) = g.to_source(x0 * sx, y0 * sy);
        let (bx, by) = g.to_source(x1 * sx, y1 * sy);
        if ![ax, ay, bx, by].iter().all(|v| v.is_finite()) {
            return None;
        }
        // Bounds beyond u16 would not survive rounding into a Detection.
        let w = g.width.min(u16::MAX as u32) as f32;
        let h = g.height.min(u16::MAX as u32) as f32;
        let bbox = [
            ax.min(bx).clamp(0.0, w),
            ay.min(by).clamp(0.0, h),
            ax.max(bx).clamp(0.0, w),
            ay.max(by).clamp(0.0, h),
        ];
        let r = round_box(bbox);
        (r[2] > r[0] && r[3] > r[1]).then_some(bbox)
    }
}

/// A clipped box in whole pixels.
fn round_box(b: [f32; 4]) -> [u16; 4] {
    b.map(|v| v.round() as u16)
}

/// Checks a YOLO format's one output: (layout, N, C).
fn yolo_layout(
    config: &DetectConfig,
    shapes: &[Vec<usize>],
    p: &mut Problems,
) -> Option<(Layout, usize, usize)> {
    let objectness = config.format == DetectFormat::Yolov5;
    let head = if objectness { 5 } else { 4 };
    // YOLOv5 exports box by box, YOLOv8 attribute by attribute.
    let box_major = objectness != config.transposed;
    let shape_of = |box_major: bool| {
        if box_major {
            format!("[1, N, {head} + classes]")
        } else {
            format!("[1, {head} + classes, N]")
        }
    };
    let expected = shape_of(box_major);
    let name = config.format.name();
    let transposed = if config.transposed {
        " (transposed)"
    } else {
        ""
    };
    let mismatch = |p: &mut Problems| {
        p.push(
            "postprocess.format",
            format!(
                "{name}{transposed} expects one output {expected}, found {}",
                describe(shapes)
            ),
        );
        None
    };
    let [shape] = shapes else {
        return mismatch(p);
    };
    let &[1, d1, d2] = shape.as_slice() else {
        return mismatch(p);
    };
    let (n, per_box) = if box_major { (d1, d2) } else { (d2, d1) };
    if per_box <= head {
        return mismatch(p);
    }
    let classes = per_box - head;
    let flip = format!(
        "it looks like {}: set postprocess.transposed = {}",
        shape_of(!box_major),
        !config.transposed
    );
    if !config.labels.is_empty() {
        // The labels say how many classes there are; a mismatch that the
        // other layout would explain is most likely that.
        if config.labels.len() != classes && n == head + config.labels.len() {
            p.push(
                "postprocess.format",
                format!(
                    "{name}{transposed} expects {expected}, found {shape:?} with {} labels; {flip}",
                    config.labels.len()
                ),
            );
            return None;
        }
    } else if n < per_box {
        // Detectors output thousands of boxes and tens of classes; fewer
        // boxes than values per box means the layout is the other way round.
        p.push(
            "postprocess.format",
            format!(
                "{name}{transposed} expects {expected}, found {shape:?}: {n} boxes of {per_box} values each; {flip}, or give postprocess.labels to confirm {classes} classes"
            ),
        );
        return None;
    }
    Some((
        Layout::Yolo {
            objectness,
            box_major,
        },
        n,
        classes,
    ))
}

/// Checks an SSD's two or three outputs: (layout, N, C), C 0 when the model
/// gives class indices.
fn ssd_layout(shapes: &[Vec<usize>], p: &mut Problems) -> Option<(Layout, usize, usize)> {
    let fits = match shapes {
        [b, s] => match (b.as_slice(), s.as_slice()) {
            (&[1, n, 4], &[1, m, c]) if n == m && c >= 1 => Some((Layout::SsdScores, n, c)),
            _ => None,
        },
        [b, s, c] => match (b.as_slice(), s.as_slice(), c.as_slice()) {
            (&[1, n, 4], &[1, m], &[1, k]) if n == m && n == k => Some((Layout::SsdClasses, n, 0)),
            _ => None,
        },
        _ => None,
    };
    if fits.is_none() {
        p.push(
            "postprocess.format",
            format!(
                "ssd expects boxes [1, N, 4] and scores [1, N, classes], or boxes [1, N, 4], scores [1, N] and classes [1, N]; found {}",
                describe(shapes)
            ),
        );
    }
    fits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Origin;

    fn config(toml: &str) -> DetectConfig {
        toml::from_str(toml).unwrap()
    }

    /// The detector, or the (field, message) of every problem.
    fn detector(
        config: DetectConfig,
        input: (u32, u32),
        shapes: &[Vec<usize>],
    ) -> Result<Detector, Vec<(String, String)>> {
        let origin = Origin::new("t.toml", std::path::Path::new("."));
        let mut p = Problems::new(&origin);
        let d = Detector::new(config, input, shapes, &mut p);
        let problems: Vec<_> = p
            .into_vec()
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect();
        match d {
            Some(d) if problems.is_empty() => Ok(d),
            _ => Err(problems),
        }
    }

    /// Input pixels are source pixels, in a `width` × `height` image.
    fn identity(width: u32, height: u32) -> Geometry {
        Geometry {
            width,
            height,
            scale_x: 1.0,
            scale_y: 1.0,
            offset_x: 0.0,
            offset_y: 0.0,
        }
    }

    /// `found` is `expected` (class, score, box), in order; scores to 1e-6
    /// because some are products.
    fn assert_boxes(found: &[Detection], expected: &[(u32, f32, [u16; 4])]) {
        let view: Vec<_> = found.iter().map(|d| (d.class, d.score, d.bbox)).collect();
        assert_eq!(found.len(), expected.len(), "{view:?}");
        for (d, &(class, score, bbox)) in found.iter().zip(expected) {
            assert_eq!((d.class, d.bbox), (class, bbox), "{view:?}");
            assert!((d.score - score).abs() < 1e-6, "{view:?}");
        }
    }

    // Four candidates, two classes, in a 100 × 100 input (cx, cy, w, h):
    //   A (30, 30, 20, 20) → [20, 20, 40, 40], class 0, 0.9 × 0.9 = 0.81
    //   B (32, 30, 20, 20) → [22, 20, 42, 40], class 0, 0.8 × 0.9 = 0.72
    //     IoU(A, B) = 18·20 / (400 + 400 − 360) = 360/440 ≈ 0.82 > 0.45
    //   C (34, 30, 20, 20) → [24, 20, 44, 40], class 1, 1.0 × 0.6 = 0.6
    //     IoU(A, C) = 16·20 / (800 − 320) = 320/480 ≈ 0.67 > 0.45
    //   D (80, 80, 10, 10) → class 0, 0.5 × 0.4 = 0.2 < 0.25
    // Per class: B goes (same class as A), C stays (other class), D is under
    // the threshold. Class-agnostic: C goes too.
    /// Two classes: the labels confirm a layout of fewer boxes than values
    /// per box, which real detectors never have.
    const V5: &str = "format = \"yolov5\"\nlabels = [\"a\", \"b\"]";
    const V8: &str = "format = \"yolov8\"\nlabels = [\"a\", \"b\"]";

    const PER_CLASS: [(u32, f32, [u16; 4]); 2] =
        [(0, 0.81, [20, 20, 40, 40]), (1, 0.6, [24, 20, 44, 40])];
    const AGNOSTIC: [(u32, f32, [u16; 4]); 1] = [(0, 0.81, [20, 20, 40, 40])];

    /// YOLOv5 `[1, 4, 7]`: cx, cy, w, h, objectness, class 0, class 1.
    #[rustfmt::skip]
    const YOLOV5: [f32; 28] = [
        30.0, 30.0, 20.0, 20.0, 0.9, 0.9, 0.1,
        32.0, 30.0, 20.0, 20.0, 0.8, 0.9, 0.2,
        34.0, 30.0, 20.0, 20.0, 1.0, 0.1, 0.6,
        80.0, 80.0, 10.0, 10.0, 0.5, 0.4, 0.3,
    ];

    /// The same boxes as YOLOv8 `[1, 6, 4]`: one row per attribute, the
    /// objectness multiplied into the class scores.
    #[rustfmt::skip]
    const YOLOV8: [f32; 24] = [
        30.0, 32.0, 34.0, 80.0, // cx
        30.0, 30.0, 30.0, 80.0, // cy
        20.0, 20.0, 20.0, 10.0, // w
        20.0, 20.0, 20.0, 10.0, // h
        0.81, 0.72, 0.1, 0.2,   // class 0
        0.1, 0.2, 0.6, 0.15,    // class 1
    ];

    /// YOLOV8 the other way round, `[1, 4, 6]`: one row per box.
    #[rustfmt::skip]
    const YOLOV8_TRANSPOSED: [f32; 24] = [
        30.0, 30.0, 20.0, 20.0, 0.81, 0.1,
        32.0, 30.0, 20.0, 20.0, 0.72, 0.2,
        34.0, 30.0, 20.0, 20.0, 0.1, 0.6,
        80.0, 80.0, 10.0, 10.0, 0.2, 0.15,
    ];

    #[test]
    fn yolov5_suppresses_within_a_class_unless_agnostic() {
        let d = detector(config(V5), (100, 100), &[vec![1, 4, 7]]).unwrap();
        assert_eq!(d.classes(), 2);
        assert_eq!(d.boxes(), 4);
        assert_boxes(&d.apply(&[&YOLOV5], &identity(100, 100)), &PER_CLASS);
        let d = detector(
            config(&format!("{V5}\nclass_agnostic = true")),
            (100, 100),
            &[vec![1, 4, 7]],
        )
        .unwrap();
        assert_boxes(&d.apply(&[&YOLOV5], &identity(100, 100)), &AGNOSTIC);
    }

    #[test]
    fn yolov8_reads_both_storage_orders() {
        let d = detector(config(V8), (100, 100), &[vec![1, 6, 4]]).unwrap();
        assert_eq!(d.classes(), 2);
        assert_boxes(&d.apply(&[&YOLOV8], &identity(100, 100)), &PER_CLASS);
        let d = detector(
            config(&format!("{V8}\ntransposed = true")),
            (100, 100),
            &[vec![1, 4, 6]],
        )
        .unwrap();
        assert_eq!(d.classes(), 2);
        assert_boxes(
            &d.apply(&[&YOLOV8_TRANSPOSED], &identity(100, 100)),
            &PER_CLASS,
        );
        // Transposed YOLOv5 is YOLOV5 attribute by attribute.
        let mut v5t = [0.0; 28];
        for (i, row) in YOLOV5.chunks(7).enumerate() {
            for (a, &v) in row.iter().enumerate() {
                v5t[a * 4 + i] = v;
            }
        }
        let d = detector(
            config(&format!("{V5}\ntransposed = true\nclass_agnostic = true")),
            (100, 100),
            &[vec![1, 7, 4]],
        )
        .unwrap();
        assert_boxes(&d.apply(&[&v5t], &identity(100, 100)), &AGNOSTIC);
    }

    // Three SSD boxes, (ymin, xmin, ymax, xmax) in fractions of a 200 × 100
    // input (x × 200, y × 100):
    //   0: (0.2, 0.1, 0.4, 0.3)   → [20, 20, 60, 40]
    //   1: (0.2, 0.11, 0.4, 0.31) → [22, 20, 62, 40]
    //      IoU(0, 1) = 38·20 / (800 + 800 − 760) = 760/840 ≈ 0.9
    //   2: (0.5, 0.5, 0.9, 0.9)   → [100, 50, 180, 90]
    #[rustfmt::skip]
    const SSD_BOXES: [f32; 12] = [
        0.2, 0.1, 0.4, 0.3,
        0.2, 0.11, 0.4, 0.31,
        0.5, 0.5, 0.9, 0.9,
    ];
    // Class 0 is the background: box 2 is mostly background, best real
    // class 2 (0.3); boxes 0 and 1 are class 1 (0.7, 0.6), 1 suppressed.
    #[rustfmt::skip]
    const SSD_SCORES: [f32; 9] = [
        0.1, 0.7, 0.2,
        0.05, 0.6, 0.35,
        0.9, 0.05, 0.3,
    ];

    #[test]
    fn ssd_with_class_scores() {
        let shapes = [vec![1, 3, 4], vec![1, 3, 3]];
        let d = detector(
            config("format = \"ssd\"\nbackground_class = 0"),
            (200, 100),
            &shapes,
        )
        .unwrap();
        assert_eq!(d.classes(), 3);
        let found = d.apply(&[&SSD_BOXES, &SSD_SCORES], &identity(200, 100));
        assert_boxes(
            &found,
            &[(1, 0.7, [20, 20, 60, 40]), (2, 0.3, [100, 50, 180, 90])],
        );
        // Without a background class box 2 is class 0 at 0.9, now first.
        let d = detector(config("format = \"ssd\""), (200, 100), &shapes).unwrap();
        let found = d.apply(&[&SSD_BOXES, &SSD_SCORES], &identity(200, 100));
        assert_boxes(
            &found,
            &[(0, 0.9, [100, 50, 180, 90]), (1, 0.7, [20, 20, 60, 40])],
        );
    }

    #[test]
    fn ssd_with_scores_and_class_indices() {
        let shapes = [vec![1, 4, 4], vec![1, 4], vec![1, 4]];
        let d = detector(
            config("format = \"ssd\"\nbackground_class = 0"),
            (200, 100),
            &shapes,
        )
        .unwrap();
        assert_eq!(d.classes(), 0);
        // Box 3 (a copy of box 2) is background; box 1 suppressed by box 0.
        let mut boxes = SSD_BOXES.to_vec();
        boxes.extend([0.5, 0.5, 0.9, 0.9]);
        let found = d.apply(
            &[&boxes, &[0.7, 0.6, 0.3, 0.95], &[1.0, 1.0, 2.0, 0.0]],
            &identity(200, 100),
        );
        assert_boxes(
            &found,
            &[(1, 0.7, [20, 20, 60, 40]), (2, 0.3, [100, 50, 180, 90])],
        );
        // Labels give the class count; indices that are not classes are skipped.
        let c = config("format = \"ssd\"\nlabels = [\"bg\", \"cat\", \"dog\"]");
        let d = detector(c, (200, 100), &shapes).unwrap();
        assert_eq!(d.classes(), 3);
        let found = d.apply(
            &[&boxes, &[0.7, 0.6, 0.3, 0.95], &[1.0, -1.0, f32::NAN, 0.0]],
            &identity(200, 100),
        );
        assert_boxes(
            &found,
            &[(0, 0.95, [100, 50, 180, 90]), (1, 0.7, [20, 20, 60, 40])],
        );
    }

    #[test]
    fn normalized_and_pixel_coordinates() {
        // (cx, cy, w, h) = (0.15, 0.3, 0.1, 0.2) of a 200 × 100 input is
        // (30, 30, 20, 20) pixels → [20, 20, 40, 40].
        let out = [0.15, 0.3, 0.1, 0.2, 1.0, 0.5];
        let d = detector(
            config("format = \"yolov5\"\nnormalized = true\nlabels = [\"a\"]"),
            (200, 100),
            &[vec![1, 1, 6]],
        )
        .unwrap();
        assert_boxes(
            &d.apply(&[&out], &identity(200, 100)),
            &[(0, 0.5, [20, 20, 40, 40])],
        );
        // As pixels the same box spans x 0.1..0.2: nothing once rounded.
        let d = detector(
            config("format = \"yolov5\"\nlabels = [\"a\"]"),
            (200, 100),
            &[vec![1, 1, 6]],
        )
        .unwrap();
        assert_boxes(&d.apply(&[&out], &identity(200, 100)), &[]);
        // SSD boxes in input pixels, x0 y0 x1 y1: [20, 20, 60, 40] as given.
        let d = detector(
            config("format = \"ssd\"\nnormalized = false\nbox_format = \"xyxy\""),
            (200, 100),
            &[vec![1, 1, 4], vec![1, 1, 1]],
        )
        .unwrap();
        let found = d.apply(&[&[20.0, 20.0, 60.0, 40.0], &[0.5]], &identity(200, 100));
        assert_boxes(&found, &[(0, 0.5, [20, 20, 60, 40])]);
    }

    #[test]
    fn geometry_maps_clips_and_rounds() {
        // Source = input × 2 + (10, 20), in a 100 × 90 image; xyxy boxes:
        //   [20.3, 20, 40, 40] → x 50.6..90, y 60..100 → clipped y ..90,
        //                        rounded [51, 60, 90, 90]
        //   [45, 0, 60, 10]    → x 100..130 → clipped 100..100: empty
        //   [-10, -15, 5, 5]   → x −10..20, y −10..30 → [0, 0, 20, 30]
        //   [44.9, 0, 60, 10]  → x 99.8..100: rounds to 100..100, empty
        let geometry = Geometry {
            width: 100,
            height: 90,
            scale_x: 2.0,
            scale_y: 2.0,
            offset_x: 10.0,
            offset_y: 20.0,
        };
        #[rustfmt::skip]
        let out = [
            20.3, 45.0, -10.0, 44.9, // x0
            20.0, 0.0, -15.0, 0.0,   // y0
            40.0, 60.0, 5.0, 60.0,   // x1
            40.0, 10.0, 5.0, 10.0,   // y1
            0.9, 0.8, 0.7, 0.6,      // class 0
        ];
        let d = detector(
            config("format = \"yolov8\"\nbox_format = \"xyxy\"\nlabels = [\"a\"]"),
            (50, 50),
            &[vec![1, 5, 4]],
        )
        .unwrap();
        assert_boxes(
            &d.apply(&[&out], &geometry),
            &[(0, 0.9, [51, 60, 90, 90]), (0, 0.7, [0, 0, 20, 30])],
        );
    }

    #[test]
    fn clipping_comes_before_suppression() {
        // xyxy in a 100 × 100 image: A [-100, 0, 10, 10] (0.9) and
        // B [0, 0, 10, 10] (0.8) overlap by 100 / 1100 ≈ 0.09 as given, but
        // A clipped is [0, 0, 10, 10], B itself: IoU 1, B suppressed.
        #[rustfmt::skip]
        let out = [
            -100.0, 0.0, // x0
            0.0, 0.0,    // y0
            10.0, 10.0,  // x1
            10.0, 10.0,  // y1
            0.9, 0.8,    // class 0
        ];
        let d = detector(
            config("format = \"yolov8\"\nbox_format = \"xyxy\"\nlabels = [\"a\"]"),
            (100, 100),
            &[vec![1, 5, 2]],
        )
        .unwrap();
        assert_boxes(
            &d.apply(&[&out], &identity(100, 100)),
            &[(0, 0.9, [0, 0, 10, 10])],
        );
    }

    /// Four disjoint 10 × 10 boxes along x, one class, YOLOv8 layout.
    fn disjoint(scores: [f32; 4]) -> [f32; 20] {
        #[rustfmt::skip]
        let out = [
            5.0, 25.0, 45.0, 65.0,
            5.0, 5.0, 5.0, 5.0,
            10.0, 10.0, 10.0, 10.0,
            10.0, 10.0, 10.0, 10.0,
            scores[0], scores[1], scores[2], scores[3],
        ];
        out
    }

    #[test]
    fn score_threshold_is_inclusive_and_max_boxes_keeps_the_best() {
        let c = config("format = \"yolov8\"\nlabels = [\"a\"]");
        let d = detector(c.clone(), (100, 100), &[vec![1, 5, 4]]).unwrap();
        let found = d.apply(
            &[&disjoint([0.25, 0.249_999_9, 1.0, 0.0])],
            &identity(100, 100),
        );
        assert_boxes(
            &found,
            &[(0, 1.0, [40, 0, 50, 10]), (0, 0.25, [0, 0, 10, 10])],
        );
        let d = detector(
            DetectConfig { max_boxes: 2, ..c },
            (100, 100),
            &[vec![1, 5, 4]],
        )
        .unwrap();
        let found = d.apply(&[&disjoint([0.3, 0.9, 0.5, 0.7])], &identity(100, 100));
        assert_boxes(
            &found,
            &[(0, 0.9, [20, 0, 30, 10]), (0, 0.7, [60, 0, 70, 10])],
        );
    }

    #[test]
    fn nan_and_infinite_values_are_ignored() {
        // Box 0: class 0 NaN, class 1 0.5 → class 1. Box 1: NaN centre.
        // Box 2: NaN scores. Box 3: infinite score. Box 4: plain 0.7.
        #[rustfmt::skip]
        let out = [
            5.0, f32::NAN, 45.0, 65.0, 85.0,
            5.0, 5.0, 5.0, 5.0, 5.0,
            10.0, 10.0, 10.0, 10.0, 10.0,
            10.0, 10.0, 10.0, 10.0, 10.0,
            f32::NAN, 0.9, f32::NAN, f32::INFINITY, 0.7,
            0.5, 0.1, f32::NAN, 0.3, 0.0,
        ];
        for transposed in [false, true] {
            let (data, shape) = if transposed {
                let mut t = vec![0.0; 30];
                for a in 0..6 {
                    for i in 0..5 {
                        t[i * 6 + a] = out[a * 5 + i];
                    }
                }
                (t, vec![1, 5, 6])
            } else {
                (out.to_vec(), vec![1, 6, 5])
            };
            let c = DetectConfig {
                transposed,
                labels: vec!["a".into(), "b".into()],
                ..DetectConfig::new(DetectFormat::Yolov8)
            };
            let d = detector(c, (100, 100), &[shape]).unwrap();
            let found = d.apply(&[&data], &identity(100, 100));
            assert_boxes(
                &found,
                &[(0, 0.7, [80, 0, 90, 10]), (1, 0.5, [0, 0, 10, 10])],
            );
        }
        // A NaN score handed to nms sorts last instead of first.
        let cand = |score, x| Candidate {
            bbox: [x, 0.0, x + 10.0, 10.0],
            score,
            class: 0,
        };
        let kept = nms(vec![cand(f32::NAN, 0.0), cand(0.5, 20.0)], 0.45, false, 10);
        assert_eq!(kept[0].score, 0.5);
        assert!(kept[1].score.is_nan());
    }

    #[test]
    fn outputs_of_the_wrong_size_give_nothing() {
        let d = detector(config(V5), (100, 100), &[vec![1, 4, 7]]).unwrap();
        assert!(d.apply(&[&YOLOV5[..27]], &identity(100, 100)).is_empty());
        assert!(d.apply(&[], &identity(100, 100)).is_empty());
        let d = detector(
            config("format = \"ssd\""),
            (200, 100),
            &[vec![1, 3, 4], vec![1, 3, 3]],
        )
        .unwrap();
        assert!(d.apply(&[&SSD_BOXES], &identity(200, 100)).is_empty());
        assert!(d
            .apply(&[&SSD_BOXES, &SSD_SCORES[..8]], &identity(200, 100))
            .is_empty());
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]), 0.0);
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]), 0.0);
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]), 1.0);
        // Half of each overlaps: 5·10 / (100 + 100 − 50) = 1/3.
        let third = iou([0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]);
        assert!((third - 1.0 / 3.0).abs() < 1e-6, "{third}");
        // One inside the other: 25 / 100.
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 5.0, 5.0]), 0.25);
        assert_eq!(iou([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]), 0.0);
        assert_eq!(
            iou([f32::NAN, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]),
            0.0
        );
    }

    #[test]
    fn nms_is_greedy_by_score() {
        // A [0,0,10,10] 0.9; B [5,0,15,10] 0.8: IoU 1/3; C [8,0,18,10] 0.7:
        // IoU(A, C) = 2·10 / 180 = 0.11, IoU(B, C) = 7·10 / 130 = 0.54.
        // At 0.3, B goes (1/3 > 0.3) and so C stays: B no longer suppresses.
        let c = |x: f32, score| Candidate {
            bbox: [x, 0.0, x + 10.0, 10.0],
            score,
            class: 0,
        };
        let kept = nms(vec![c(8.0, 0.7), c(0.0, 0.9), c(5.0, 0.8)], 0.3, false, 10);
        let scores: Vec<f32> = kept.iter().map(|k| k.score).collect();
        assert_eq!(scores, vec![0.9, 0.7]);
        // At 0.5 B stays, and suppresses C.
        let kept = nms(vec![c(8.0, 0.7), c(0.0, 0.9), c(5.0, 0.8)], 0.5, false, 10);
        let scores: Vec<f32> = kept.iter().map(|k| k.score).collect();
        assert_eq!(scores, vec![0.9, 0.8]);
    }

    fn problems(config: DetectConfig, shapes: &[Vec<usize>]) -> Vec<(String, String)> {
        detector(config, (640, 640), shapes).unwrap_err()
    }

    #[test]
    fn output_shapes_that_do_not_fit_are_named() {
        let v5 = || config("format = \"yolov5\"");
        let v8 = || config("format = \"yolov8\"");
        let ssd = || config("format = \"ssd\"");
        let p = problems(v5(), &[vec![1, 10, 4], vec![1, 10, 3]]);
        assert_eq!(p[0].0, "postprocess.format");
        assert_eq!(
            p[0].1,
            "yolov5 expects one output [1, N, 5 + classes], found [1, 10, 4], [1, 10, 3]"
        );
        // Five values per box leave no class.
        let p = problems(v5(), &[vec![1, 100, 5]]);
        assert!(p[0].1.contains("found [1, 100, 5]"), "{p:?}");
        assert_eq!(
            problems(v8(), &[vec![2, 84, 8400]])[0].0,
            "postprocess.format"
        );
        assert_eq!(problems(v8(), &[vec![84, 8400]])[0].0, "postprocess.format");
        assert_eq!(
            problems(v8(), &[])[0].1,
            "yolov8 expects one output [1, 4 + classes, N], found no outputs"
        );
        // YOLOv8 stored box by box: the layout is named.
        let p = problems(v8(), &[vec![1, 8400, 84]]);
        assert_eq!(p[0].0, "postprocess.format");
        assert!(
            p[0].1.contains("set postprocess.transposed = true"),
            "{p:?}"
        );
        let d = detector(
            DetectConfig {
                transposed: true,
                ..v8()
            },
            (640, 640),
            &[vec![1, 8400, 84]],
        )
        .unwrap();
        assert_eq!((d.classes(), d.boxes()), (80, 8400));
        let d = detector(v8(), (640, 640), &[vec![1, 84, 8400]]).unwrap();
        assert_eq!((d.classes(), d.boxes()), (80, 8400));
        // Labels settle the count: 3 labels fit [1, 7, 2] as 2 boxes.
        let three = || vec!["a".into(), "b".into(), "c".into()];
        let d = detector(
            DetectConfig {
                labels: three(),
                ..v8()
            },
            (640, 640),
            &[vec![1, 7, 2]],
        )
        .unwrap();
        assert_eq!((d.classes(), d.boxes()), (3, 2));
        let p = problems(
            DetectConfig {
                labels: three(),
                ..v8()
            },
            &[vec![1, 8400, 7]],
        );
        assert!(
            p[0].1
                .contains("with 3 labels; it looks like [1, N, 4 + classes]"),
            "{p:?}"
        );
        let p = problems(
            DetectConfig {
                labels: three(),
                ..v8()
            },
            &[vec![1, 84, 8400]],
        );
        assert_eq!(p[0].0, "postprocess.labels");
        assert_eq!(
            p[0].1,
            "expected 80 labels (one per class of the model's outputs [1, 84, 8400]), found 3"
        );
        // SSD: scores per class need two outputs, best scores three.
        let ssd_msg = "ssd expects boxes [1, N, 4] and scores [1, N, classes], or boxes [1, N, 4], scores [1, N] and classes [1, N]; found ";
        for shapes in [
            vec![vec![1, 10, 4], vec![1, 10]],
            vec![vec![1, 10, 4], vec![1, 11, 3]],
            vec![vec![1, 10, 5], vec![1, 10, 3]],
            vec![vec![1, 10, 4], vec![1, 10], vec![1, 9]],
            vec![vec![1, 10, 4]],
        ] {
            let p = problems(ssd(), &shapes);
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].0, "postprocess.format");
            assert!(p[0].1.starts_with(ssd_msg), "{p:?}");
            assert!(p[0].1.ends_with(&describe(&shapes)), "{p:?}");
        }
        let p = problems(
            DetectConfig {
                background_class: Some(3),
                ..ssd()
            },
            &[vec![1, 10, 4], vec![1, 10, 3]],
        );
        assert_eq!(
            p,
            vec![(
                "postprocess.background_class".to_string(),
                "expected a class index below 3, found 3".to_string()
            )]
        );
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = config("format = \"yolov8\"");
        assert_eq!(c, DetectConfig::new(DetectFormat::Yolov8));
        assert_eq!(
            (c.score_threshold, c.iou_threshold, c.max_boxes),
            (0.25, 0.45, 100)
        );
        assert!(toml::from_str::<DetectConfig>("format = \"yolov8\"\nkind = \"detect\"").is_err());
        assert!(toml::from_str::<DetectConfig>("format = \"yolov9\"").is_err());
        assert!(toml::from_str::<DetectConfig>("format = \"ssd\"\nbox_format = \"xywh\"").is_err());
        // As a variant of a `kind`-tagged [postprocess], the tag is not a field.
        #[derive(Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
        enum Post {
            Detect(DetectConfig),
        }
        let Post::Detect(d) =
            toml::from_str::<Post>("kind = \"detect\"\nformat = \"ssd\"\nmax_boxes = 5").unwrap();
        assert_eq!(d.max_boxes, 5);

        let origin = Origin::new("t.toml", std::path::Path::new("."));
        let mut p = Problems::new(&origin);
        c.validate(&mut p);
        assert!(p.is_empty());
        config(
            "format = \"ssd\"\ntransposed = true\nscore_threshold = 1.5\niou_threshold = nan\nmax_boxes = 0",
        )
        .validate(&mut p);
        let fields: Vec<String> = p.into_vec().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            vec![
                "postprocess.score_threshold",
                "postprocess.iou_threshold",
                "postprocess.max_boxes",
                "postprocess.transposed"
            ]
        );
    }

    mod real_model {
        use super::*;
        use crate::export::{to_bytes, Dim, ElemType, GraphBuilder};
        use crate::model::{InputPin, ModelFile};
        use tract_onnx::prelude::*;

        /// Runs a model whose outputs are `outputs` (shape, values) whatever
        /// its input: `x · 0 + constant`, so tract cannot fold the graph to a
        /// constant and the values go through a real forward pass. Returns
        /// the outputs' shapes as the model reports them, and their values.
        fn run_constant_model(
            outputs: &[(Vec<usize>, Vec<f32>)],
        ) -> (Vec<Vec<usize>>, Vec<Vec<f32>>) {
            let mut g = GraphBuilder::new("detect");
            let x = g.input("x", ElemType::F32, &[1.into(), 1.into()]);
            let zero = g.constant("zero", &[], vec![0.0]);
            let gated = g.node("Mul", &[&x, &zero], &[]);
            for (k, (shape, values)) in outputs.iter().enumerate() {
                let c = g.constant("c", shape, values.clone());
                let y = g.add(&gated, &c);
                let dims: Vec<Dim> = shape.iter().map(|&d| d.into()).collect();
                g.output(&y, &format!("y{k}"), ElemType::F32, &dims);
            }
            let file = ModelFile::from_bytes(to_bytes(&g.finish()), "test").unwrap();
            let pin = InputPin {
                dtype: f32::datum_type(),
                shape: vec![1, 1],
            };
            let mut model = file.load(Some(&[pin])).unwrap();
            let input = Tensor::from_shape(&[1, 1], &[3.0f32]).unwrap();
            let out = model.run(tvec!(input.into())).unwrap();
            let values = out
                .iter()
                .map(|t| {
                    t.to_plain_array_view::<f32>()
                        .unwrap()
                        .iter()
                        .copied()
                        .collect()
                })
                .collect();
            let shapes = model
                .info()
                .outputs
                .iter()
                .map(|o| o.shape.clone())
                .collect();
            (shapes, values)
        }

        #[test]
        fn yolov5_model() {
            let (shapes, values) = run_constant_model(&[(vec![1, 4, 7], YOLOV5.to_vec())]);
            assert_eq!(shapes, vec![vec![1, 4, 7]]);
            let d = detector(config(V5), (100, 100), &shapes).unwrap();
            let outputs: Vec<&[f32]> = values.iter().map(Vec::as_slice).collect();
            assert_boxes(&d.apply(&outputs, &identity(100, 100)), &PER_CLASS);
        }

        #[test]
        fn ssd_model() {
            let (shapes, values) = run_constant_model(&[
                (vec![1, 3, 4], SSD_BOXES.to_vec()),
                (vec![1, 3, 3], SSD_SCORES.to_vec()),
            ]);
            assert_eq!(shapes, vec![vec![1, 3, 4], vec![1, 3, 3]]);
            let d = detector(
                config("format = \"ssd\"\nbackground_class = 0"),
                (200, 100),
                &shapes,
            )
            .unwrap();
            let outputs: Vec<&[f32]> = values.iter().map(Vec::as_slice).collect();
            assert_boxes(
                &d.apply(&outputs, &identity(200, 100)),
                &[(1, 0.7, [20, 20, 60, 40]), (2, 0.3, [100, 50, 180, 90])],
            );
        }
    }
}
