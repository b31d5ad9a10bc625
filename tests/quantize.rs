//! int8 for real: models trained by `edgeinfer-host train --quantize` on
//! generated data, quantized, run by the device binary and (where it is
//! installed) ONNX Runtime, scored against their f32 originals.

mod common;

use std::path::{Path, PathBuf};

use common::shapes;
use common::*;
use edgeinfer::rng::Rng;
use serde_json::Value;

/// An iris-like table with more rows: `classes` Gaussian blobs in
/// `features` dimensions that overlap enough that accuracy is not 100 %.
fn blobs_csv(dir: &Path, rows: usize, features: usize, classes: usize) -> PathBuf {
    let mut rng = Rng::new(3);
    let centers: Vec<Vec<f64>> = (0..classes)
        .map(|_| (0..features).map(|_| rng.normal() * 1.2).collect())
        .collect();
    let mut text: Vec<String> = (0..features).map(|f| format!("f{f}")).collect();
    text.push("kind".into());
    let mut csv = text.join(",") + "\n";
    for r in 0..rows {
        let c = r % classes;
        let cells: Vec<String> = centers[c]
            .iter()
            .map(|m| format!("{:.4}", 10.0 + m + rng.normal()))
            .collect();
        csv += &format!("{},k{c}\n", cells.join(","));
    }
    let p = dir.join("blobs.csv");
    std::fs::write(&p, csv).unwrap();
    p
}

fn quantized(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    let s = last_json(o);
    s["quantized"].clone()
}

/// The int8 model's kernels, from `profile --ops`: one integer matrix
/// product per quantized layer, and `profile` calls it int8.
fn assert_integer_kernels(model: &Path, quantized_layers: usize) {
    let o = run(bin()
        .args(["profile", "--runs", "20", "--ops", "--json", "--model"])
        .arg(model));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let nodes = v["slowest_nodes"].as_array().unwrap();
    let integer = nodes
        .iter()
        .filter(|n| n["op"] == "OptMatMul" && n["detail"].as_str().unwrap().contains("i32"))
        .count();
    assert_eq!(integer, quantized_layers, "{nodes:?}");
    assert_eq!(v["precision"], "int8", "{v}");
}

/// A weight-heavy MLP on an iris-like table (3000 rows): the int8 file is
/// under 30 % of the f32 one, test accuracy within one percentage point, the device
/// binary runs it on integer kernels and gives the summary's outputs.
#[test]
fn an_int8_mlp_keeps_its_accuracy_at_a_quarter_of_the_size() {
    let tmp = tempfile::tempdir().unwrap();
    let data = blobs_csv(tmp.path(), 3000, 32, 3);
    let out = tmp.path().join("blobs");
    let o = run(host()
        .args(["train", "--data"])
        .arg(&data)
        .args([
            "--target",
            "kind",
            "--task",
            "classify",
            "--arch",
            "mlp:256,256",
        ])
        .args([
            "--epochs",
            "40",
            "--patience",
            "10",
            "--seed",
            "2",
            "--quantize",
        ])
        .arg("--out")
        .arg(&out));
    let q = quantized(&o);
    let (f, i) = (
        q["f32_metrics"]["accuracy"].as_f64().unwrap(),
        q["int8_metrics"]["accuracy"].as_f64().unwrap(),
    );
    eprintln!("{q}");
    assert!(f > 0.8, "f32 accuracy {f}");
    assert!((f - i).abs() <= 0.01, "f32 {f} vs int8 {i}");
    assert!(q["size_ratio"].as_f64().unwrap() <= 0.30, "{q}");
    assert_eq!(q["examples"], 300, "the test split");
    // The two hidden layers; the logits' layer stays f32.
    assert_eq!(q["rewrite"]["quantized_layers"], 2);
    assert_eq!(q["rewrite"]["folded_relus"], 2);
    let int8 = out.join("model-int8.onnx");
    assert!(int8.is_file());
    assert_integer_kernels(&int8, 2);
}

/// The standalone command on a trained image classifier: calibrated on
/// the folder, within a point of the f32 model on it, and ONNX Runtime
/// reads the file and computes the same classes.
#[test]
fn quantize_an_image_classifier_from_its_training_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    shapes::write_folder(&data, 80, 32, 5);
    let out = tmp.path().join("shapes-model");
    let o = run(host()
        .args(["train", "--images"])
        .arg(&data)
        .args(["--grayscale", "--size", "24x24", "--epochs", "40"])
        .args(["--patience", "6", "--seed", "1", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let int8 = tmp.path().join("shapes-int8.onnx");
    let o = run(host()
        .args(["quantize", "--model"])
        .arg(out.join("model.onnx"))
        .arg("--calibration")
        .arg(&data)
        .arg("--out")
        .arg(&int8));
    assert!(o.status.success(), "{}", stderr(&o));
    let q = last_json(&o);
    eprintln!("{q}");
    let (f, i) = (
        q["f32_metrics"]["accuracy"].as_f64().unwrap(),
        q["int8_metrics"]["accuracy"].as_f64().unwrap(),
    );
    assert!(f > 0.85, "f32 accuracy {f}");
    assert!((f - i).abs() <= 0.01, "f32 {f} vs int8 {i}");
    // The second convolution; the first sums 9 products, the head makes
    // the logits.
    assert_eq!(q["rewrite"]["quantized_layers"], 1);
    assert_integer_kernels(&int8, 1);

    // ONNX Runtime runs the same file to the same classes.
    let ours = tmp.path().join("ours.npy");
    let input = out.join("input.npy");
    let o = run(bin()
        .args(["infer", "--model"])
        .arg(&int8)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&ours));
    assert!(o.status.success(), "{}", stderr(&o));
    let Some(b) = onnxruntime(&int8, &input, &tmp.path().join("ort.npy")) else {
        return;
    };
    let a = read_f32(&ours);
    let argmax = |v: &[f32]| (0..v.len()).fold(0, |m, i| if v[i] > v[m] { i } else { m });
    let n = a.shape[1];
    for (x, y) in a.data.chunks(n).zip(b.data.chunks(n)) {
        assert_eq!(argmax(x), argmax(y), "{x:?} vs {y:?}");
    }
    assert!(max_abs_diff(&a, &b) < 0.05, "{}", max_abs_diff(&a, &b));
}

/// A model `train` did not make has no data spec to calibrate with: one
/// line naming the file and what is missing, exit 2, nothing written.
#[test]
fn quantize_refuses_a_model_without_training_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q.onnx");
    let o = run(host()
        .args(["quantize", "--model"])
        .arg(repo("models/seed-mlp/model.onnx"))
        .arg("--calibration")
        .arg(repo("models/seed-mlp/input.npy"))
        .arg("--out")
        .arg(&out));
    assert_bad_input(&o, &["seed-mlp/model.onnx", "edgeinfer.target"]);
    assert!(!out.exists());
}
