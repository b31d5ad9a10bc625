//! The seed network end to end: a 10→20→10 MLP (two linear layers, no
//! activation, as in the article the project grew from), every parameter
//! drawn from normal(0, 0.1), Adam lr 0.001, MSE, 1000 epochs; exported to
//! ONNX, verified against the trainer, then run by the device runtime.
//!
//!     cargo run --release --features host --example seed_network [OUT_DIR]
//!
//! The data: 1000 rows of x ~ normal(0, 1)^10 and y = A·x + noise(0.05)
//! with a fixed random A, written to OUT_DIR/seed.csv (default
//! target/seed-network).

use std::path::PathBuf;

use anyhow::Result;
use edgeinfer::host::data::{DataSpec, Task};
use edgeinfer::host::net::{Activation, Arch, Init};
use edgeinfer::host::train::{FitOptions, Loss, OptimizerKind};
use edgeinfer::host::{train_command, TrainOptions};
use edgeinfer::rng::Rng;
use edgeinfer::ModelFile;

fn main() -> Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/seed-network".into()),
    );
    std::fs::create_dir_all(&out)?;
    let mut rng = Rng::new(2024);
    let a = rng.normal_vec(100, 0.3);
    let mut csv = String::new();
    let xs: Vec<String> = (0..10).map(|i| format!("x{i}")).collect();
    let ys: Vec<String> = (0..10).map(|i| format!("y{i}")).collect();
    csv += &format!("{},{}\n", xs.join(","), ys.join(","));
    for _ in 0..1000 {
        let x = rng.normal_vec(10, 1.0);
        let noise = rng.normal_vec(10, 0.05);
        let y: Vec<f32> = (0..10)
            .map(|r| (0..10).map(|c| a[r * 10 + c] * x[c]).sum::<f32>() + noise[r])
            .collect();
        let cells: Vec<String> = x.iter().chain(&y).map(|v| v.to_string()).collect();
        csv += &(cells.join(",") + "\n");
    }
    let data = out.join("seed.csv");
    std::fs::write(&data, csv)?;

    let opts = TrainOptions {
        data,
        images: None,
        spec: DataSpec {
            task: Task::Regress,
            target: ys,
            features: xs,
            window: None,
            impute: false,
            labels: vec![],
        },
        fit: FitOptions {
            arch: Arch::Mlp(vec![20]),
            kernel: 3,
            init: Init::Normal(0.1),
            activation: Activation::Identity,
            optimizer: OptimizerKind::Adam,
            lr: Some(0.001),
            epochs: 1000,
            batch: Some(32),
            loss: Loss::Mse,
            // The article's 1000 epochs, all of them.
            patience: Some(0),
            seed: 1,
            augment: false,
        },
        val_split: 0.2,
        test_split: 0.1,
        kfold: None,
        out: out.join("model"),
        progress: false,
        quantize: false,
        weight_scales: Default::default(),
    };
    let summary = train_command(&opts, &mut |e| {
        if e.epoch % 100 == 0 {
            println!(
                "epoch {:4}: train MSE {:.5}, validation MSE {:.5}, R² {:.4}",
                e.epoch, e.train_loss, e.val_loss, e.val_metric
            );
        }
    })?;
    println!(
        "test: {}; export vs trainer max |diff| {:e}",
        serde_json::to_string(&summary.test)?,
        summary.verify_max_abs_diff
    );

    // The device runtime runs the exported file.
    let file = ModelFile::read(&opts.out.join("model.onnx"))?;
    let mut model = file.load(None)?;
    let x = Rng::new(7).normal_vec(10, 1.0);
    let y = model.run_f32(&x)?;
    let expected: Vec<f32> = (0..10)
        .map(|r| (0..10).map(|c| a[r * 10 + c] * x[c]).sum::<f32>())
        .collect();
    let err = y
        .iter()
        .zip(&expected)
        .map(|(p, t)| (p - t).abs())
        .fold(0.0f32, f32::max);
    println!(
        "device runtime on a fresh x: max |y - A·x| = {err:.4} ({} parameters)",
        summary.params
    );
    Ok(())
}
