//! Rebuilds the shipped models in `models/` with their reference input and
//! output files, and the recording in `examples/data/`. Run from the
//! repository root: `cargo run --example make_models`.
//!
//! Reference outputs come from the plain reference evaluator
//! (`edgeinfer::export::reference`), not from tract, so tests that compare
//! tract's results with them check tract against an independent computation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgeinfer::export::reference::{eval, Dense};
use edgeinfer::export::{cnn2d, write_model, zoo};
use edgeinfer::rng::Rng;
use ndarray_npy::write_npy;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::tract_ndarray::{ArrayD, IxDyn};

fn save(dir: &Path, model: &ModelProto, input: Dense) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_model(model, &dir.join("model.onnx"))?;
    let output = eval(model, std::slice::from_ref(&input))?.remove(0);
    for (name, t) in [("input.npy", input), ("output.npy", output)] {
        let a = ArrayD::from_shape_vec(IxDyn(&t.shape), t.data)?;
        write_npy(dir.join(name), &a).with_context(|| format!("writing {name}"))?;
    }
    println!("wrote {}", dir.display());
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--zoo DIR`: only the test networks, for benchmarks (not shipped).
    if let [flag, dir] = &args[..] {
        if flag == "--zoo" {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir)?;
            write_model(&zoo::mobilenet_style(3)?, &dir.join("mobilenet_style.onnx"))?;
            write_model(
                &zoo::mobilenet_v1(13, 0.5, 224)?,
                &dir.join("mobilenet_v1_050_224.onnx"),
            )?;
            write_model(
                &zoo::mobilenet_v1(13, 1.0, 224)?,
                &dir.join("mobilenet_v1_100_224.onnx"),
            )?;
            write_model(
                &zoo::mobilenet_v1(13, 1.0, 320)?,
                &dir.join("mobilenet_v1_100_320.onnx"),
            )?;
            write_model(&zoo::mobilenet_1d(11)?, &dir.join("mobilenet_1d.onnx"))?;
            write_model(&zoo::resnet_style(5)?, &dir.join("resnet_style.onnx"))?;
            write_model(&zoo::cnn1d_mixed(7)?, &dir.join("cnn1d_mixed.onnx"))?;
            write_model(
                &cnn2d::mobilenet_v2(17, 224)?,
                &dir.join("mobilenet_v2_224.onnx"),
            )?;
            write_model(&cnn2d::resnet18(19, 224)?, &dir.join("resnet18_224.onnx"))?;
            write_model(
                &cnn2d::squeezenet1_1(23, 224)?,
                &dir.join("squeezenet1_1_224.onnx"),
            )?;
            write_model(&cnn2d::kws_dscnn(29)?, &dir.join("kws_dscnn.onnx"))?;
            println!("wrote {}", dir.display());
            return Ok(());
        }
    }
    let repo = PathBuf::from(args.first().cloned().unwrap_or_else(|| ".".into()));
    let root = repo.join("models");

    // The seed network, untrained: normal(0, 0.1) weights from seed 1.
    let mut rng = Rng::new(2);
    let x = Dense::new(vec![4, 10], rng.normal_vec(40, 1.0));
    save(&root.join("seed-mlp"), &zoo::seed_mlp(1)?, x)?;

    // The demo is trained: models/demo/make.sh.

    // The temperature trend regressor: closed-form mean and slope weights.
    let ramp: Vec<f32> = (0..2 * zoo::TREND_WINDOW)
        .map(|i| 40.0 + 0.25 * (i % zoo::TREND_WINDOW) as f32 + (i / zoo::TREND_WINDOW) as f32)
        .collect();
    let input = Dense::new(vec![2, zoo::TREND_WINDOW], ramp);
    save(&root.join("thermal-trend"), &zoo::thermal_trend()?, input)?;

    // A 20 s recording of the simulated sensor for the replay example.
    let csv = repo.join("examples/data/vibration.csv");
    std::fs::create_dir_all(repo.join("examples/data"))?;
    std::fs::write(&csv, zoo::simulated_csv(5, 2000))?;
    println!("wrote {}", csv.display());
    Ok(())
}
