//! `edgeinfer-host quantize` and `train --quantize`: the int8 model of a
//! trained one (see [`crate::export::quantize`]), calibrated on the
//! training data and scored against the f32 model on held-out examples.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::data::Dataset;
use super::train::Metrics;
use super::{dataset_for_model, run_batch, HostError};
use crate::export::quantize::{quantize, QuantizeReport, WeightScales};
use crate::rng::Rng;
use crate::ModelFile;

/// What `train --quantize` calls the int8 model, beside model.onnx.
pub const INT8_FILE: &str = "model-int8.onnx";

/// Most examples the activation ranges are measured on.
pub const CALIBRATION_EXAMPLES: usize = 512;

/// What quantizing a model gave: size, accuracy and speed, f32 against int8.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeSummary {
    /// The int8 model written.
    pub out: String,
    /// Examples the activation ranges were measured on.
    pub calibration_examples: usize,
    /// File size of the f32 model, bytes.
    pub f32_bytes: u64,
    /// File size of the int8 model, bytes.
    pub int8_bytes: u64,
    /// int8_bytes / f32_bytes.
    pub size_ratio: f64,
    /// Examples scored.
    pub examples: usize,
    /// The f32 model's metrics on them.
    pub f32_metrics: Metrics,
    /// The int8 model's metrics on them.
    pub int8_metrics: Metrics,
    /// Largest |f32 − int8| over every output of every scored example.
    pub max_abs_diff: f32,
    /// Median single-example forward pass of the f32 model, µs (the
    /// device's code path; `edgeinfer profile --model` reproduces it).
    pub f32_p50_us: f64,
    /// The same for the int8 model.
    pub int8_p50_us: f64,
    /// int8_p50_us / f32_p50_us (below 1: int8 is faster).
    pub latency_ratio: f64,
    /// How the weights were scaled.
    pub weight_scales: WeightScales,
    /// What the rewrite did.
    pub rewrite: QuantizeReport,
}

/// Up to [`CALIBRATION_EXAMPLES`] of `pool`, drawn without replacement.
fn calibration_subset(pool: &[usize]) -> Vec<usize> {
    let mut idx = pool.to_vec();
    if idx.len() > CALIBRATION_EXAMPLES {
        let mut rng = Rng::new(11);
        for i in 0..CALIBRATION_EXAMPLES {
            let j = i + (rng.next_u64() as usize) % (idx.len() - i);
            idx.swap(i, j);
        }
        idx.truncate(CALIBRATION_EXAMPLES);
    }
    idx
}

/// Median single-example forward pass of `file`, µs: 20 runs after one
/// warm-up, or as many as fit in half a second.
fn p50_us(file: &ModelFile, example: &[f32]) -> Result<f64, HostError> {
    let mut model = file.load(None)?;
    model.run_f32(example)?;
    let start = Instant::now();
    let mut times = vec![];
    while times.len() < 20 || (times.len() < 200 && start.elapsed().as_secs_f64() < 0.5) {
        let t = Instant::now();
        std::hint::black_box(model.run_f32(example)?);
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(crate::stats::percentile(&times, 0.5))
}

/// Quantizes the model at `model` into `out`, calibrating on the examples
/// `calibrate` of `data` and scoring both models on `score`.
pub fn quantize_model(
    model: &Path,
    out: &Path,
    data: &Dataset,
    calibrate: &[usize],
    score: &[usize],
    scales: WeightScales,
) -> Result<QuantizeSummary, HostError> {
    let file = ModelFile::read(model)?;
    let origin = model.display().to_string();
    let bad = |message: String| HostError::Input {
        file: origin.clone(),
        message,
    };
    let calib = calibration_subset(calibrate);
    if calib.is_empty() || score.is_empty() {
        return Err(bad(
            "expected examples to calibrate and score on, found none".into(),
        ));
    }
    let (cx, _) = data.select(&calib);
    let mut shape = vec![cx.len()];
    shape.extend_from_slice(&data.shape);
    let batch = tract_onnx::prelude::Tensor::from_shape(&shape, &cx.concat())
        .map_err(|e| bad(e.to_string()))?;
    let (int8, rewrite) = quantize(file.proto(), &batch, scales).map_err(|e| bad(e.to_string()))?;
    crate::export::write_model(&int8, out).map_err(|e| HostError::Output {
        file: out.display().to_string(),
        message: e.to_string(),
    })?;
    let qfile = ModelFile::read(out)?;

    let (sx, sy) = data.select(score);
    let f32_out = run_batch(&file, &sx, &data.shape)?;
    let int8_out = run_batch(&qfile, &sx, &data.shape)?;
    let max_abs_diff = f32_out
        .iter()
        .flatten()
        .zip(int8_out.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let f32_p50_us = p50_us(&file, &sx[0])?;
    let int8_p50_us = p50_us(&qfile, &sx[0])?;
    let (f32_bytes, int8_bytes) = (file.bytes().len() as u64, qfile.bytes().len() as u64);
    Ok(QuantizeSummary {
        out: out.display().to_string(),
        calibration_examples: calib.len(),
        f32_bytes,
        int8_bytes,
        size_ratio: int8_bytes as f64 / f32_bytes as f64,
        examples: score.len(),
        f32_metrics: Metrics::of(&f32_out, &sy, data.outputs()),
        int8_metrics: Metrics::of(&int8_out, &sy, data.outputs()),
        max_abs_diff,
        f32_p50_us,
        int8_p50_us,
        latency_ratio: int8_p50_us / f32_p50_us,
        weight_scales: scales,
        rewrite,
    })
}

/// `edgeinfer-host quantize`: the model at `model` (made by `train`)
/// quantized into `out`, calibrated on the examples of `data` (the CSV
/// file or image folder it was trained on) and scored on all of them.
pub fn quantize_command(
    model: &Path,
    data: &Path,
    out: &Path,
    scales: WeightScales,
) -> Result<QuantizeSummary, HostError> {
    let file = ModelFile::read(model)?;
    let dataset = dataset_for_model(&file, data)?;
    let all: Vec<usize> = (0..dataset.x.len()).collect();
    quantize_model(model, out, &dataset, &all, &all, scales)
}
