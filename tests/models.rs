//! Shipped and test networks through the real `edgeinfer infer` binary and
//! tract, checked against the independent reference evaluator.

mod common;

use std::path::Path;

use common::*;
use edgeinfer::config::SimMode;
use edgeinfer::export::reference::{eval, Dense};
use edgeinfer::export::{to_bytes, write_model, zoo, Attr, ElemType, GraphBuilder};
use edgeinfer::rng::Rng;
use edgeinfer::ModelFile;
use tract_onnx::pb::ModelProto;

const SHIPPED: &[&str] = &["seed-mlp", "demo", "demo-int8", "thermal-trend"];

#[test]
fn every_shipped_model_matches_its_reference_output() {
    let dirs: Vec<String> = std::fs::read_dir(repo("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| repo("models").join(n).is_dir())
        .collect();
    assert_eq!(dirs.len(), SHIPPED.len(), "models/ holds {dirs:?}");
    let tmp = tempfile::tempdir().unwrap();
    for name in dirs {
        let dir = repo("models").join(&name);
        assert!(dir.join("README.md").is_file(), "{name} has no README.md");
        let out = tmp.path().join(format!("{name}.npy"));
        let o = run(bin()
            .arg("infer")
            .arg("--model")
            .arg(dir.join("model.onnx"))
            .arg("--input")
            .arg(dir.join("input.npy"))
            .arg("--output")
            .arg(&out));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let diff = max_abs_diff(&read_f32(&out), &read_f32(&dir.join("output.npy")));
        assert!(diff <= 1e-4, "{name}: max abs diff {diff}");
    }
}

#[test]
fn shipped_models_rebuild_byte_for_byte() {
    // The demo is trained (models/demo/make.sh); tests/host.rs checks that
    // training is reproducible.
    let rebuilt: [(&str, ModelProto); 2] = [
        ("seed-mlp", zoo::seed_mlp(1).unwrap()),
        ("thermal-trend", zoo::thermal_trend().unwrap()),
    ];
    for (name, model) in rebuilt {
        let shipped = std::fs::read(repo("models").join(name).join("model.onnx")).unwrap();
        assert!(to_bytes(&model) == shipped, "{name} differs from its maker");
    }
    assert_eq!(
        edgeinfer::demo::MODEL,
        &std::fs::read(repo("models/demo/model.onnx")).unwrap()[..]
    );
}

fn infer_vs_reference(model: &ModelProto, input: Dense, tol: f32) {
    let tmp = tempfile::tempdir().unwrap();
    let (m, x, y) = (
        tmp.path().join("m.onnx"),
        tmp.path().join("x.npy"),
        tmp.path().join("y.npy"),
    );
    write_model(model, &m).unwrap();
    write_f32(&x, &input);
    let o = run(bin()
        .arg("infer")
        .arg("--model")
        .arg(&m)
        .arg("--input")
        .arg(&x)
        .arg("--output")
        .arg(&y));
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = eval(model, &[input]).unwrap().remove(0);
    let diff = max_abs_diff(&read_f32(&y), &expected);
    assert!(diff <= tol, "max abs diff {diff}");
}

fn random(shape: &[usize], seed: u64) -> Dense {
    let n = shape.iter().product();
    Dense::new(shape.to_vec(), Rng::new(seed).normal_vec(n, 1.0))
}

#[test]
fn mobilenet_style_cnn_runs_right() {
    infer_vs_reference(
        &zoo::mobilenet_style(3).unwrap(),
        random(&[1, 3, 32, 32], 4),
        1e-4,
    );
}

#[test]
fn mobilenet_style_1d_cnn_runs_right() {
    infer_vs_reference(
        &zoo::mobilenet_1d(11).unwrap(),
        random(&[1, 3, zoo::MOBILENET_1D_WINDOW], 12),
        1e-4,
    );
}

#[test]
fn resnet_style_cnn_runs_right() {
    infer_vs_reference(
        &zoo::resnet_style(5).unwrap(),
        random(&[1, 3, 16, 16], 6),
        1e-4,
    );
}

#[test]
fn mixed_1d_cnn_runs_right_at_any_batch_size() {
    let model = zoo::cnn1d_mixed(7).unwrap();
    infer_vs_reference(&model, random(&[1, 2, 32], 8), 1e-5);
    infer_vs_reference(&model, random(&[5, 2, 32], 9), 1e-5);
}

#[test]
fn several_inputs_of_f32_i64_and_u8() {
    let mut g = GraphBuilder::new("mixed_inputs");
    let a = g.input("a", ElemType::U8, &[1.into(), 3.into()]);
    let b = g.input("b", ElemType::I64, &[1.into(), 3.into()]);
    let c = g.input("c", ElemType::F32, &[1.into(), 3.into()]);
    let af = g.node("Cast", &[&a], &[("to", Attr::Int(1))]);
    let sum = g.add(&af, &c);
    let bb = g.add(&b, &b);
    g.output(&sum, "sum", ElemType::F32, &[1.into(), 3.into()]);
    g.output(&bb, "twice", ElemType::I64, &[1.into(), 3.into()]);
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m.onnx");
    write_model(&g.finish(), &m).unwrap();
    use ndarray_npy::write_npy;
    use tract_onnx::prelude::tract_ndarray::arr2;
    write_npy(tmp.path().join("a.npy"), &arr2(&[[1u8, 2, 250]])).unwrap();
    write_npy(tmp.path().join("b.npy"), &arr2(&[[-5i64, 0, 1 << 40]])).unwrap();
    write_npy(tmp.path().join("c.npy"), &arr2(&[[0.5f32, 0.25, -1.0]])).unwrap();
    let o = run(bin()
        .arg("infer")
        .arg("--model")
        .arg(&m)
        .args([
            "--input", "a.npy", "--input", "b.npy", "--input", "c.npy", "--json",
        ])
        .current_dir(tmp.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["outputs"][0]["name"], "sum");
    assert_eq!(
        v["outputs"][0]["data"],
        serde_json::json!([1.5, 2.25, 249.0])
    );
    assert_eq!(v["outputs"][1]["dtype"], "I64");
    assert_eq!(
        v["outputs"][1]["data"],
        serde_json::json!([-10.0, 0.0, (1u64 << 41) as f64])
    );
}

#[test]
fn demo_model_tells_the_simulated_modes_apart() {
    let file = ModelFile::read(&repo("models/demo/model.onnx")).unwrap();
    let mut model = file.load(None).unwrap();
    // Seeds the training recordings (101, 102) did not use.
    for (mode, class) in [(SimMode::Normal, 0), (SimMode::Fault, 1)] {
        for w in zoo::simulated_windows(mode, 1234, 50) {
            let p = model.run_f32(&w).unwrap();
            assert!(p[class] > 0.9, "{mode:?}: {p:?}");
        }
    }
}

#[test]
fn cost_and_size_figures() {
    let m = ModelFile::read(&repo("models/seed-mlp/model.onnx"))
        .unwrap()
        .load(None)
        .unwrap();
    let info = m.info();
    assert_eq!(info.params, 10 * 20 + 20 + 20 * 10 + 10);
    assert_eq!(info.macs, 10 * 20 + 20 * 10);
    assert_eq!(info.flops, 2 * info.macs);
    assert_eq!(info.inputs[0].shape, vec![1, 10]);
    assert_eq!(info.outputs[0].shape, vec![1, 10]);
    let bytes = std::fs::read(repo("models/seed-mlp/model.onnx")).unwrap();
    assert_eq!(info.file_size, bytes.len() as u64);
    use sha2::Digest;
    assert_eq!(
        info.sha256,
        edgeinfer::model::hex(&sha2::Sha256::digest(&bytes))
    );
    let o = run(bin()
        .args(["check", "--model"])
        .arg(repo("models/seed-mlp/model.onnx")));
    assert!(o.status.success());
    let text = stdout(&o);
    for needle in [
        "params: 430".to_string(),
        "FLOPs per inference: 800".to_string(),
        format!("sha256: {}", info.sha256),
        "x F32 [1, 10]".to_string(),
        "y F32 [1, 10]".to_string(),
    ] {
        assert!(text.contains(&needle), "{needle} not in {text}");
    }
}

#[test]
fn infer_rejects_bad_files_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let mlp = repo("models/seed-mlp/model.onnx");
    let infer = |model: &Path, input: &Path| {
        run(bin()
            .arg("infer")
            .arg("--model")
            .arg(model)
            .arg("--input")
            .arg(input))
    };
    let good_input = repo("models/seed-mlp/input.npy");
    let missing = tmp.path().join("nope.onnx");
    assert_bad_input(
        &infer(&missing, &good_input),
        &["nope.onnx", "cannot read model file"],
    );
    let text = tmp.path().join("text.onnx");
    std::fs::write(&text, "this is not a model\n").unwrap();
    assert_bad_input(
        &infer(&text, &good_input),
        &["text.onnx", "not an ONNX model"],
    );
    let wrong_shape = tmp.path().join("wrong.npy");
    write_f32(&wrong_shape, &Dense::new(vec![1, 7], vec![0.0; 7]));
    assert_bad_input(
        &infer(&mlp, &wrong_shape),
        &["seed-mlp", "input 0 ('x')", "[?, 10]", "[1, 7]"],
    );
    let wrong_type = tmp.path().join("ints.npy");
    use tract_onnx::prelude::tract_ndarray::arr2;
    ndarray_npy::write_npy(&wrong_type, &arr2(&[[1i64; 10]])).unwrap();
    assert_bad_input(
        &infer(&mlp, &wrong_type),
        &["input 0 ('x')", "expected 'x' F32", "I64"],
    );
    // numpy's default dtype is read, and converted for a float input.
    let doubles = tmp.path().join("doubles.npy");
    ndarray_npy::write_npy(&doubles, &arr2(&[[0.5f64; 10]])).unwrap();
    let o = infer(&mlp, &doubles);
    assert!(o.status.success(), "{}", stderr(&o));
    // A type that is not a number is refused, saying which are.
    let complex = tmp.path().join("complex.npy");
    let header = "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0; 8]);
    std::fs::write(&complex, bytes).unwrap();
    assert_bad_input(
        &infer(&mlp, &complex),
        &["complex.npy", "not a number type", "\"<c8\""],
    );
    let not_npy = tmp.path().join("junk.npy");
    std::fs::write(&not_npy, "junk").unwrap();
    assert_bad_input(
        &infer(&mlp, &not_npy),
        &["junk.npy", "expected a .npy file"],
    );
    assert_bad_input(
        &infer(&mlp, &tmp.path().join("absent.npy")),
        &["absent.npy"],
    );
}

/// Model files that once crashed the runtime (found by fuzz/onnx, kept in
/// tests/data/fuzz/onnx): each is now refused with one line, never a panic.
#[test]
fn model_files_found_by_fuzzing_are_refused_not_crashed_on() {
    let dir = repo("tests/data/fuzz/onnx");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let o = run(bin()
            .arg("infer")
            .arg("--model")
            .arg(&path)
            .arg("--input")
            .arg(repo("models/seed-mlp/input.npy")));
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert_bad_input(&o, &[&name]);
        n += 1;
    }
    assert!(n > 0, "no files in {}", dir.display());
}

/// ONNX's own backend test models (the `onnx` Python package ships them)
/// through `edgeinfer infer`: every one that tract runs matches its
/// reference outputs, and every one it cannot run is listed, with tract's
/// reason, in tests/data/onnx_backend.json. A model that changes sides
/// (a tract upgrade that fixes one, a change here that breaks one) fails
/// the test until the list says so. CI installs onnx and sets
/// EDGEINFER_TEST_ONNX=1, which makes its absence a failure.
#[test]
fn onnx_backend_test_models_run_or_are_listed_with_the_reason() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import onnx, numpy"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("EDGEINFER_TEST_ONNX").is_none(),
            "EDGEINFER_TEST_ONNX is set but python3 cannot import onnx and numpy"
        );
        skip("python3 with onnx and numpy not found");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let o = run(std::process::Command::new("python3")
        .arg(repo("tests/onnx_backend.py"))
        .arg(env!("CARGO_BIN_EXE_edgeinfer"))
        .arg(tmp.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let got: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&stdout(&o)).unwrap();
    let listed: std::collections::BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(repo("tests/data/onnx_backend.json")).unwrap(),
    )
    .unwrap();
    let side = |v: &str| v.split(':').next().unwrap_or("").to_string();
    let mut changed = Vec::new();
    for (name, verdict) in &got {
        let expected = listed.get(name).map(|v| side(v));
        if expected.as_deref() != Some(side(verdict).as_str()) {
            changed.push(format!("{name}: now {verdict}, listed {expected:?}"));
        }
    }
    assert!(
        changed.is_empty(),
        "update tests/data/onnx_backend.json:\n{}",
        changed.join("\n")
    );
    let ok = got.values().filter(|v| *v == "ok").count();
    assert!(ok * 2 > got.len(), "only {ok} of {} models run", got.len());
}
