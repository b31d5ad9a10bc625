//! `edgeinfer-host` for real: models trained with candle on real data,
//! exported, verified, run by the device binary; results read back through
//! a real broker.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::broker::Broker;
use common::*;
use serde_json::Value;

/// Iris from linfa-datasets (bundled with the crate) as a CSV file with
/// named species.
fn iris_csv(dir: &Path) -> PathBuf {
    let ds = linfa_datasets::iris();
    let names = ["setosa", "versicolor", "virginica"];
    let mut text = ds.feature_names().join(",") + ",species\n";
    for (row, t) in ds.records().rows().into_iter().zip(ds.targets().iter()) {
        let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        text += &format!("{},{}\n", cells.join(","), names[*t]);
    }
    let p = dir.join("iris.csv");
    std::fs::write(&p, text).unwrap();
    p
}

fn train_iris(data: &Path, out: &Path, seed: u64, epochs: usize, extra: &[&str]) -> Output {
    run(host()
        .args(["train", "--data"])
        .arg(data)
        .args([
            "--target", "species", "--task", "classify", "--arch", "mlp:16",
        ])
        .args([
            "--lr",
            "0.01",
            "--epochs",
            &epochs.to_string(),
            "--batch",
            "16",
        ])
        .args(["--val-split", "0.2", "--test-split", "0.2"])
        .args(["--seed", &seed.to_string()])
        .args(extra)
        .arg("--out")
        .arg(out))
}

#[test]
fn iris_trains_above_93_percent_and_the_device_runs_the_export() {
    let tmp = tempfile::tempdir().unwrap();
    let data = iris_csv(tmp.path());
    let out = tmp.path().join("iris");
    let o = train_iris(&data, &out, 1, 150, &["--patience", "30"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = last_json(&o);
    let acc = s["test"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.93, "iris test accuracy {acc}");
    assert_eq!(s["splits"], serde_json::json!([90, 30, 30]));
    assert!(s["verify_max_abs_diff"].as_f64().unwrap() <= 1e-4);
    assert_eq!(
        s["labels"],
        serde_json::json!(["setosa", "versicolor", "virginica"])
    );
    for f in [
        "model.onnx",
        "weights.safetensors",
        "edgeinfer.toml",
        "input.npy",
        "output.npy",
        "report.md",
        "curve.svg",
        "confusion.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Accuracy"), "{report}");

    // The device binary on the reference input gives the reference output.
    let y = tmp.path().join("y.npy");
    let o = run(bin()
        .args(["infer", "--model"])
        .arg(out.join("model.onnx"))
        .arg("--input")
        .arg(out.join("input.npy"))
        .arg("--output")
        .arg(&y));
    assert!(o.status.success(), "{}", stderr(&o));
    let diff = max_abs_diff(&read_f32(&y), &read_f32(&out.join("output.npy")));
    assert!(diff <= 1e-4, "device vs trainer {diff}");

    // The written device config runs: CSV lines in, labelled classes out.
    let o = run(bin()
        .args(["check", "--config"])
        .arg(out.join("edgeinfer.toml")));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut child = bin()
        .args(["run", "--config"])
        .arg(out.join("edgeinfer.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // A textbook setosa and a textbook virginica.
        writeln!(stdin, "5.1,3.5,1.4,0.2\n7.7,3.0,6.1,2.3").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let labels: Vec<Value> = json_lines(&stdout(&o))
        .iter()
        .map(|r| r["label"].clone())
        .collect();
    assert_eq!(labels, vec!["setosa", "virginica"]);

    // verify, standalone, on the whole file.
    let o = run(host()
        .args(["verify", "--model"])
        .arg(out.join("model.onnx"))
        .arg("--data")
        .arg(&data));
    assert!(o.status.success(), "{}", stderr(&o));
    let v = last_json(&o);
    assert_eq!(v["examples"], 150);
    assert!(v["max_abs_diff"].as_f64().unwrap() <= 1e-4);
    assert!(v["metrics"]["accuracy"].as_f64().unwrap() >= 0.9);
}

#[test]
fn a_fixed_seed_reproduces_the_model_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let data = iris_csv(tmp.path());
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    for (dir, seed) in [(&a, 5), (&b, 5), (&c, 6)] {
        let o = train_iris(&data, dir, seed, 20, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let bytes = |d: &Path| std::fs::read(d.join("model.onnx")).unwrap();
    assert_eq!(bytes(&a), bytes(&b));
    assert_ne!(bytes(&a), bytes(&c));
}

#[test]
fn verify_catches_a_model_that_does_not_match_its_trainer() {
    let tmp = tempfile::tempdir().unwrap();
    let data = iris_csv(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (dir, seed) in [(&a, 1), (&b, 2)] {
        let o = train_iris(&data, dir, seed, 10, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    std::fs::copy(b.join("weights.safetensors"), a.join("weights.safetensors")).unwrap();
    let o = run(host()
        .args(["verify", "--model"])
        .arg(a.join("model.onnx"))
        .arg("--data")
        .arg(&data));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("differs from the trainer"),
        "{}",
        stderr(&o)
    );
}

/// The runtime reads labels as a JSON array or comma-separated; so does
/// verify.
#[test]
fn verify_reads_comma_separated_labels_like_the_runtime() {
    use prost::Message;
    let tmp = tempfile::tempdir().unwrap();
    let data = iris_csv(tmp.path());
    let dir = tmp.path().join("m");
    let o = train_iris(&data, &dir, 1, 10, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let path = dir.join("model.onnx");
    let mut proto = tract_onnx::pb::ModelProto::decode(&std::fs::read(&path).unwrap()[..]).unwrap();
    let labels = proto
        .metadata_props
        .iter_mut()
        .find(|p| p.key == edgeinfer::model::meta::LABELS)
        .unwrap();
    labels.value = "setosa, versicolor, virginica".into();
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    let o = run(host()
        .args(["verify", "--model"])
        .arg(&path)
        .arg("--data")
        .arg(&data));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn kfold_and_regression_on_wine_quality() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = linfa_datasets::winequality();
    let mut text = ds
        .feature_names()
        .iter()
        .map(|n| n.replace(' ', "_"))
        .collect::<Vec<_>>()
        .join(",")
        + ",quality\n";
    for (row, t) in ds.records().rows().into_iter().zip(ds.targets().iter()) {
        let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        text += &format!("{},{}\n", cells.join(","), t);
    }
    let data = tmp.path().join("wine.csv");
    std::fs::write(&data, text).unwrap();
    let out = tmp.path().join("wine");
    let o = run(host()
        .args(["train", "--data"])
        .arg(&data)
        .args([
            "--target", "quality", "--task", "regress", "--arch", "mlp:32",
        ])
        .args(["--lr", "0.003", "--epochs", "40", "--kfold", "3"])
        .arg("--out")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = last_json(&o);
    let r2 = s["test"]["r2"].as_f64().unwrap();
    assert!(r2 > 0.2, "wine quality R² {r2}");
    assert!(s["test"]["mae"].as_f64().unwrap() < 0.7);
    let (mean, std) = (
        s["kfold"][0].as_f64().unwrap(),
        s["kfold"][1].as_f64().unwrap(),
    );
    assert!(mean > 0.1 && std >= 0.0, "k-fold {mean} ± {std}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("3-fold cross-validation"));
    assert!(!out.join("confusion.svg").exists());
}

#[test]
fn record_train_and_run_a_windowed_1d_cnn() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("vibration.csv");
    for (mode, seed) in [("normal", 21), ("fault", 22)] {
        let cfg = tmp.path().join(format!("{mode}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[model]\npath = {:?}\n[source]\nkind = \"simulated\"\nmode = \"{mode}\"\n\
                 seed = {seed}\nrealtime = false\n",
                repo("models/demo/model.onnx")
            ),
        )
        .unwrap();
        let o = run(host()
            .args(["record", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&data)
            .args(["--label", mode, "--seconds", "20"]));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let text = std::fs::read_to_string(&data).unwrap();
    assert!(text.starts_with("ts_ms,x,y,z,label\n"));
    assert_eq!(text.lines().count(), 1 + 2 * 2000);

    let out = tmp.path().join("vib");
    let o = run(host()
        .args(["train", "--data"])
        .arg(&data)
        .args(["--target", "label", "--task", "classify"])
        .args(["--window", "64", "--hop", "32", "--channels", "x,y,z"])
        .args([
            "--arch", "cnn1d:4", "--lr", "0.01", "--epochs", "60", "--batch", "8",
        ])
        .args(["--seed", "3"])
        .arg("--out")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = last_json(&o);
    // 1 + (4000 - 64) / 32 = 124 windows; the two starting at rows 1952 and
    // 1984 straddle the recordings and are skipped.
    assert_eq!(s["examples"], 122);
    assert_eq!(s["mixed_windows"], 2);
    assert!(s["test"]["accuracy"].as_f64().unwrap() >= 0.9, "{s}");

    // The device replays the recording through the exported model.
    let o = run(bin()
        .args(["replay", "--config"])
        .arg(out.join("edgeinfer.toml"))
        .arg("--input")
        .arg(&data));
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = json_lines(&stdout(&o));
    assert_eq!(recs.len(), 124);
    let normal = recs[..61].iter().filter(|r| r["label"] == "normal").count();
    let fault = recs[63..].iter().filter(|r| r["label"] == "fault").count();
    assert_eq!((normal, fault), (61, 61));
}

#[test]
fn bad_training_input_exits_2_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let iris = iris_csv(tmp.path());
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let one_class = write("one.csv", "a,b,y\n1,2,k\n3,4,k\n5,6,k\n7,8,k\n");
    let tiny = write("tiny.csv", "a,b,y\n1,2,k\n3,4,j\n");
    let nan = write("nan.csv", "a,b,y\nnan,2,k\n3,,j\ninf,1,k\n");
    let short = write("short.csv", "x,y\n1,a\n2,b\n3,a\n");
    let out = tmp.path().join("out");
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            vec![
                "--data".into(),
                "absent.csv".into(),
                "--target".into(),
                "y".into(),
            ],
            vec!["absent.csv", "cannot read"],
        ),
        (
            vec![
                "--data".into(),
                iris.display().to_string(),
                "--target".into(),
                "colour".into(),
            ],
            vec!["iris.csv", "unknown column \"colour\"", "species"],
        ),
        (
            vec![
                "--data".into(),
                one_class.display().to_string(),
                "--target".into(),
                "y".into(),
            ],
            vec!["one.csv", "one class"],
        ),
        (
            vec![
                "--data".into(),
                tiny.display().to_string(),
                "--target".into(),
                "y".into(),
            ],
            vec!["too few examples"],
        ),
        (
            vec![
                "--data".into(),
                iris.display().to_string(),
                "--target".into(),
                "species".into(),
                "--kfold".into(),
                "500".into(),
            ],
            vec!["--kfold", "expected 2 to"],
        ),
        (
            vec![
                "--data".into(),
                short.display().to_string(),
                "--target".into(),
                "y".into(),
                "--window".into(),
                "10".into(),
            ],
            vec!["short.csv", "--window 10 is longer than the data"],
        ),
        (
            vec![
                "--data".into(),
                nan.display().to_string(),
                "--target".into(),
                "y".into(),
            ],
            vec!["nan.csv", "no usable rows"],
        ),
        (
            vec![
                "--data".into(),
                iris.display().to_string(),
                "--target".into(),
                "species".into(),
                "--init".into(),
                "uniform".into(),
            ],
            vec!["--init uniform", "expected normal:STD, xavier or he"],
        ),
    ];
    for (args, needles) in cases {
        let o = run(host()
            .arg("train")
            .args(&args)
            .args(["--task", "classify", "--arch", "mlp:4", "--epochs", "2"])
            .arg("--out")
            .arg(&out));
        assert_bad_input(&o, &needles);
    }
    // Regression on a column of words says so, not "no usable rows".
    let o = run(host()
        .args(["train", "--data"])
        .arg(&iris)
        .args([
            "--target", "species", "--task", "regress", "--arch", "mlp:4",
        ])
        .args(["--epochs", "2", "--out"])
        .arg(&out));
    assert_bad_input(
        &o,
        &[
            "iris.csv",
            "--target \"species\"",
            "expected a numeric column",
            "setosa",
        ],
    );
}

fn device_config(dir: &Path, broker: &Broker, count_hint: &str) -> PathBuf {
    let p = dir.join(format!("device-{count_hint}.toml"));
    std::fs::write(
        &p,
        format!(
            "device_id = \"pump-7\"\n[model]\npath = {:?}\n[source]\nkind = \"simulated\"\n\
             mode = \"alternate\"\nrealtime = false\n[[sink]]\nkind = \"mqtt\"\n\
             [mqtt]\nbroker = \"{}\"\n[outbox]\ndir = \"outbox\"\n",
            repo("models/demo/model.onnx"),
            broker.url()
        ),
    )
    .unwrap();
    p
}

fn run_device(cfg: &Path, count: u64) {
    let o = run(bin()
        .args(["run", "--config"])
        .arg(cfg)
        .args(["--count", &count.to_string()])
        .env("HOME", cfg.parent().unwrap())
        .env_remove("EDGEINFER_BROKER"));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn listen_decodes_results_from_a_real_broker_with_labels_and_seq() {
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = device_config(tmp.path(), &broker, "a");
    let mut listener = host()
        .args([
            "listen",
            "--broker",
            &broker.url(),
            "--count",
            "30",
            "--timeout",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The listener must be subscribed before the device publishes; it says
    // so on stderr.
    let (tx, rx) = std::sync::mpsc::channel();
    let err = listener.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if l.starts_with("listening on") {
                let _ = tx.send(());
            }
            lines.push(l);
        }
        lines
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the listener subscribes");
    run_device(&cfg, 30);
    let o = listener.wait_with_output().unwrap();
    let err_lines = reader.join().unwrap();
    assert!(o.status.success(), "{err_lines:?}");
    let recs = json_lines(&stdout(&o));
    assert_eq!(recs.len(), 30);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["device"], "pump-7");
        assert_eq!(r["seq"], i as u64);
        assert!(r["ts_ms"].as_u64().unwrap() > 0);
        assert!(r["label"] == "normal" || r["label"] == "fault", "{r}");
        assert!(r["score"].as_f64().unwrap() >= 0.5);
    }
    let report: Value = serde_json::from_str(err_lines.last().unwrap()).unwrap();
    assert_eq!(report["pump-7"]["records"], 30);
    assert_eq!(report["pump-7"]["missing"], 0);

    // Nothing arrives: --timeout fails.
    let o = run(host().args([
        "listen",
        "--broker",
        &broker.url(),
        "--topic",
        "nobody/+/result",
        "--count",
        "1",
        "--timeout",
        "1",
    ]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("timeout: 0 of 1 records"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_persistent_listener_gets_what_was_published_while_it_was_away() {
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = device_config(tmp.path(), &broker, "b");
    let listen = |count: &str, timeout: &str| {
        run(host().args([
            "listen",
            "--broker",
            &broker.url(),
            "--client-id",
            "ops-desk",
            "--persistent",
            "--count",
            count,
            "--timeout",
            timeout,
        ]))
    };
    // First visit: creates the session (nothing to read yet).
    let o = listen("1", "1");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // Away: the device publishes 25 results.
    run_device(&cfg, 25);
    // Back: all 25 are delivered.
    let o = listen("25", "30");
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = json_lines(&stdout(&o));
    let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..25).collect::<Vec<_>>());
}

#[test]
fn decode_reads_a_postcard_payload_from_a_file_or_stdin() {
    use edgeinfer::schema::{ClassResult, Prediction, ResultBatch, ResultRecord, SCHEMA_VERSION};
    let batch = ResultBatch {
        version: SCHEMA_VERSION,
        model: None,
        device: "d1".into(),
        records: (0..3)
            .map(|i| ResultRecord {
                source: None,
                seq: 10 + i,
                ts_ms: 1000 * i,
                result: Prediction::Class(ClassResult {
                    class: i as u32 % 2,
                    score: 0.75,
                    top: vec![(i as u32 % 2, 0.75)],
                }),
            })
            .collect(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("payload.bin");
    std::fs::write(&p, batch.to_postcard()).unwrap();
    let o = run(host().arg("decode").arg(&p).args(["--labels", "ok,bad"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = json_lines(&stdout(&o));
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1]["device"], "d1");
    assert_eq!(recs[1]["seq"], 11);
    assert_eq!(recs[1]["label"], "bad");
    assert_eq!(recs[1]["score"], 0.75);

    let mut child = host()
        .arg("decode")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"not a payload")
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_bad_input(&o, &["stdin", "neither a postcard nor a JSON result batch"]);
}

/// Exported models are standard ONNX: ONNX Runtime (from PyPI) loads them
/// and agrees with the trainer's reference output. CI installs onnxruntime
/// and sets EDGEINFER_TEST_ORT=1, which makes its absence a failure.
#[test]
fn exports_run_in_onnx_runtime_too() {
    let script = "import sys, numpy as np, onnxruntime as ort\n\
                  s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
                  x = np.load(sys.argv[2])\n\
                  y = s.run(None, {s.get_inputs()[0].name: x})[0]\n\
                  print(float(np.abs(y - np.load(sys.argv[3])).max()))\n";
    let probe = Command::new("python3")
        .args(["-c", "import onnxruntime, numpy"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("EDGEINFER_TEST_ORT").is_none(),
            "EDGEINFER_TEST_ORT is set but python3 cannot import onnxruntime and numpy"
        );
        common::skip("python3 with onnxruntime and numpy not found");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = iris_csv(tmp.path());
    let iris = tmp.path().join("iris");
    let o = train_iris(&data, &iris, 1, 20, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for dir in [iris, repo("models/demo")] {
        let o = run(Command::new("python3")
            .args(["-c", script])
            .arg(dir.join("model.onnx"))
            .arg(dir.join("input.npy"))
            .arg(dir.join("output.npy")));
        assert!(o.status.success(), "{}", stderr(&o));
        let diff: f32 = stdout(&o).trim().parse().unwrap();
        assert!(
            diff <= 1e-4,
            "{}: ONNX Runtime differs by {diff}",
            dir.display()
        );
    }
}

/// An obviously too short run says it did not converge, in the summary and
/// on stderr, and the default learning rate is chosen and printed.
#[test]
fn a_too_short_run_says_it_did_not_converge() {
    let tmp = tempfile::tempdir().unwrap();
    let data = iris_csv(tmp.path());
    let out = tmp.path().join("short");
    let o = run(host()
        .args(["train", "--data"])
        .arg(&data)
        .args([
            "--target", "species", "--task", "classify", "--arch", "mlp:32",
        ])
        .args(["--epochs", "3", "--seed", "1", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = last_json(&o);
    assert_eq!(s["converged"], false, "{s}");
    assert_eq!(s["epochs_run"], 3);
    assert_eq!(s["lr_auto"], true);
    let lr = s["lr"].as_f64().unwrap();
    assert!((1e-4..=0.1).contains(&lr), "{lr}");
    // Train, validation and test metrics side by side.
    for split in ["train", "val", "test"] {
        assert!(s[split]["accuracy"].is_number(), "{split}: {s}");
    }
    let err = stderr(&o);
    assert!(
        err.contains("did not converge") && err.contains("--epochs"),
        "{err}"
    );
    assert!(err.contains("learning rate"), "{err}");
    // 15 test rows: too few to trust, and it says so.
    assert!(err.contains("--kfold"), "{err}");
    let wrote = err.lines().find(|l| l.starts_with("wrote")).unwrap();
    for f in [
        "model.onnx",
        "weights.safetensors",
        "curve.svg",
        "confusion.svg",
        "report.md",
    ] {
        assert!(wrote.contains(f), "{f} not in {wrote}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("did not converge"), "{report}");
    // Left to its defaults, the same data converges.
    let o = run(host()
        .args(["train", "--data"])
        .arg(&data)
        .args([
            "--target", "species", "--task", "classify", "--arch", "mlp:32",
        ])
        .args(["--seed", "1", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = last_json(&o);
    assert_eq!(s["converged"], true, "{s}");
    assert!(s["test"]["accuracy"].as_f64().unwrap() >= 0.9, "{s}");
}
