//! The device CLI end to end: real binary, real models, real files and
//! processes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use common::*;
use edgeinfer::export::reference::{eval, Dense};
use edgeinfer::schema::Prediction;

#[test]
fn demo_runs_with_no_arguments_until_ctrl_c_and_drains() {
    let mut child = bin()
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let second: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["seq"], 0);
    assert_eq!(second["seq"], 1);
    // The demo starts healthy: the first windows are normal.
    assert_eq!(first["label"], "normal");
    assert!(first["score"].as_f64().unwrap() > 0.9);
    signal(child.id(), 2);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    for l in rest {
        serde_json::from_str::<serde_json::Value>(&l).unwrap();
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("results"), "{err}");
}

#[test]
fn run_count_stops_after_n_results() {
    let o = run(bin()
        .args(["run", "--count", "3", "--config"])
        .arg(repo("examples/demo.toml")));
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = json_lines(&stdout(&o));
    assert_eq!(recs.len(), 3);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"], i as u64);
        assert_eq!(r["top"].as_array().unwrap().len(), 2);
    }
    // Windows of 64 samples, hop 32: the third result needs 128 samples.
    assert!(stderr(&o).contains("3 results"), "{}", stderr(&o));
}

/// Ground truth of the recording: 5 s normal, 5 s fault, in turn.
fn fault_at(ts_ms: u64) -> bool {
    (ts_ms / 5000) % 2 == 1
}

#[test]
fn replay_predicts_the_recording_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("results.jsonl");
    let o = run(bin()
        .args(["replay", "--config"])
        .arg(repo("examples/replay-vibration.toml"))
        .arg("--input")
        .arg(repo("examples/data/vibration.csv"))
        .arg("--output")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = json_lines(&std::fs::read_to_string(&out).unwrap());
    // 2000 rows, windows of 64 every 32: 1 + (2000 - 64) / 32 = 61.
    assert_eq!(recs.len(), 61);
    let (mut right, mut clean) = (0, 0);
    for r in &recs {
        let end = r["ts_ms"].as_u64().unwrap();
        let start = end - 630;
        if fault_at(start) != fault_at(end) {
            continue; // straddles a switch
        }
        clean += 1;
        if (r["label"] == "fault") == fault_at(end) {
            right += 1;
        }
    }
    assert!(clean > 40);
    assert_eq!(right, clean, "{right}/{clean} clean windows right");
}

#[cfg(feature = "threads")]
#[test]
fn replay_on_two_model_threads_gives_the_same_results() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("examples/replay-vibration.toml")).unwrap();
    let model = repo("models/demo/model.onnx");
    let text = text.replace(
        "path = \"../models/demo/model.onnx\"",
        &format!("path = {model:?}\nthreads = 2"),
    );
    assert!(text.contains("threads = 2"));
    let threaded = tmp.path().join("threaded.toml");
    std::fs::write(&threaded, text).unwrap();
    let mut outputs = Vec::new();
    for (name, cfg) in [
        ("one.jsonl", repo("examples/replay-vibration.toml")),
        ("two.jsonl", threaded),
    ] {
        let out = tmp.path().join(name);
        let o = run(bin()
            .args(["replay", "--config"])
            .arg(&cfg)
            .arg("--input")
            .arg(repo("examples/data/vibration.csv"))
            .arg("--output")
            .arg(&out));
        assert!(o.status.success(), "{}", stderr(&o));
        outputs.push(json_lines(&std::fs::read_to_string(&out).unwrap()));
    }
    assert_eq!(outputs[0].len(), 61);
    // One thread runs the classifier's product on edgeinfer's own kernel
    // and two on tract's (docs/config.md): the same results up to float
    // rounding, in a different summation order.
    assert_eq!(outputs[0].len(), outputs[1].len());
    for (one, two) in outputs[0].iter().zip(&outputs[1]) {
        for key in ["seq", "ts_ms", "class", "label"] {
            assert_eq!(one[key], two[key], "{one} vs {two}");
        }
        let scores = |r: &serde_json::Value| {
            let top = r["top"].as_array().unwrap().iter();
            std::iter::once(r["score"].as_f64().unwrap())
                .chain(top.map(|t| t[1].as_f64().unwrap()))
                .collect::<Vec<_>>()
        };
        for (a, b) in scores(one).iter().zip(scores(two)) {
            assert!((a - b).abs() <= 1e-5, "{one} vs {two}");
        }
    }
}

#[test]
fn replay_skips_malformed_rows_and_writes_postcard() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("rec.csv");
    let mut text = String::from("ts_ms,x,y,z\n");
    for i in 0..100 {
        if i == 10 {
            text.push_str("100,oops,1,2\n");
        }
        if i == 20 {
            text.push_str("200,1,2\n");
        }
        let v = (i % 2) as f32;
        text.push_str(&format!("{},{v},{v},{v}\n", i * 10));
    }
    std::fs::write(&csv, text).unwrap();
    let out = tmp.path().join("results.bin");
    let o = run(bin()
        .args(["replay", "--config"])
        .arg(repo("examples/demo.toml"))
        .arg("--input")
        .arg(&csv)
        .arg("--output")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("record 12"), "{err}");
    assert!(err.contains("expected 4 fields, found 3"), "{err}");
    assert!(err.contains("100 samples"), "{err}");
    assert!(err.contains("2 skipped"), "{err}");
    let recs = edgeinfer::sink::read_postcard_records(&out).unwrap();
    // 100 good rows: windows at 64 and 96.
    assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(recs[1].ts_ms, 950);
    // Every axis alternates 0/1 every sample: maximal high-frequency energy, a fault.
    assert!(matches!(&recs[0].result, Prediction::Class(c) if c.class == 1));
}

#[test]
fn stdin_lines_through_the_seed_mlp_match_the_reference() {
    let mut child = bin()
        .args(["run", "--config"])
        .arg(repo("examples/stdin-mlp.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rows: Vec<Vec<f32>> = (0..5)
        .map(|i| (0..10).map(|j| (i * 10 + j) as f32 / 25.0 - 1.0).collect())
        .collect();
    {
        let mut stdin = child.stdin.take().unwrap();
        for (i, r) in rows.iter().enumerate() {
            let line: Vec<String> = r.iter().map(|v| v.to_string()).collect();
            writeln!(stdin, "{}", line.join(",")).unwrap();
            if i == 1 {
                writeln!(stdin, "1,2,three").unwrap();
                writeln!(stdin, "1,2,3").unwrap();
                writeln!(stdin, "1,2,3,4,5,6,7,8,9,NaN").unwrap();
            }
        }
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = json_lines(&stdout(&o));
    assert_eq!(recs.len(), 5);
    let model = tract_onnx::pb::ModelProto::decode(
        &std::fs::read(repo("models/seed-mlp/model.onnx")).unwrap()[..],
    )
    .unwrap();
    for (rec, row) in recs.iter().zip(&rows) {
        let want = eval(&model, &[Dense::new(vec![1, 10], row.clone())]).unwrap();
        let got: Vec<f32> = rec["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let diff = max_abs_diff(&Dense::new(vec![1, 10], got), &want[0]);
        assert!(diff <= 1e-4, "{diff}");
    }
    let err = stderr(&o);
    assert!(err.contains("record 3: expected a number"), "{err}");
    assert!(err.contains("expected 10 channels, found 3"), "{err}");
    assert!(err.contains("missing policy: reject"), "{err}");
    assert!(err.contains("3 skipped"), "{err}");
}

use prost::Message;

#[test]
fn command_source_feeds_the_trend_model() {
    let o = run(bin()
        .args(["run", "--config"])
        .arg(repo("examples/command-sensor.toml")));
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = json_lines(&stdout(&o));
    // 30 readings 40 + i % 7, windows of 10 every 5: starts 0, 5, 10, 15, 20.
    assert_eq!(recs.len(), 5);
    let temps: Vec<f32> = (0..30).map(|i| 40.0 + (i % 7) as f32).collect();
    for (k, rec) in recs.iter().enumerate() {
        let (mean, slope) = mean_slope(&temps[5 * k..5 * k + 10]);
        let v = rec["values"].as_array().unwrap();
        assert!((v[0].as_f64().unwrap() as f32 - mean).abs() < 1e-4);
        assert!((v[1].as_f64().unwrap() as f32 - slope).abs() < 1e-4);
    }
}

#[test]
fn file_poll_reads_sysfs_style_files() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("temp"), "42500\n").unwrap();
    let cfg = tmp.path().join("thermal.toml");
    let model = repo("models/thermal-trend/model.onnx");
    std::fs::write(
        &cfg,
        format!(
            "[model]\npath = {model:?}\n[source]\nkind = \"file_poll\"\nrate_hz = 200.0\n\
             [[source.files]]\npath = \"temp\"\nscale = 0.001\n"
        ),
    )
    .unwrap();
    let o = run(bin().args(["run", "--count", "3", "--config"]).arg(&cfg));
    assert!(o.status.success(), "{}", stderr(&o));
    for rec in json_lines(&stdout(&o)) {
        let v = rec["values"].as_array().unwrap();
        assert!((v[0].as_f64().unwrap() - 42.5).abs() < 1e-4, "{rec}");
        assert!(v[1].as_f64().unwrap().abs() < 1e-4, "{rec}");
    }
}

#[test]
fn check_config_accepts_every_example() {
    for name in [
        "demo",
        "sysfs-thermal",
        "replay-vibration",
        "stdin-mlp",
        "command-sensor",
        "mqtt-device",
        "mqtt-sensors",
    ] {
        let o = run(bin()
            .args(["check", "--config"])
            .arg(repo(&format!("examples/{name}.toml"))));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(stdout(&o).contains("ok: the config would run"), "{name}");
    }
    let o = run(bin()
        .args(["check", "--config"])
        .arg(repo("examples/demo.toml")));
    let text = stdout(&o);
    assert!(text.contains("64 samples x 3 channels, hop 32"), "{text}");
    assert!(text.contains("labels: normal, fault"), "{text}");
}

fn write_config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("bad.toml");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn bad_configs_exit_2_naming_file_field_and_expectation() {
    let tmp = tempfile::tempdir().unwrap();
    let model = repo("models/demo/model.onnx");
    let base = format!("[model]\npath = {model:?}\n[source]\nkind = \"simulated\"\n");
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("{base}[window]\nsizee = 3\n"),
            vec!["bad.toml", "window", "unknown field `sizee`"],
        ),
        (
            format!("{base}[window]\nsize = \"big\"\n"),
            vec!["bad.toml", "window.size", "expected"],
        ),
        (
            format!("{base}[window]\nsize = 10\n"),
            vec![
                "bad.toml",
                "window",
                "[1, 3, 10]",
                "'signal' F32 [?, 3, 64]",
            ],
        ),
        (
            format!("{base}[postprocess]\nkind = \"classify\"\nlabels = [\"a\"]\n"),
            vec!["postprocess.labels", "expected 2 labels"],
        ),
        (
            "[model]\npath = \"nowhere.onnx\"\n[source]\nkind = \"stdin\"\n".into(),
            vec!["nowhere.onnx", "cannot read model file"],
        ),
        (
            format!("[model]\npath = {model:?}\nthreads = 0\n[source]\nkind = \"simulated\"\n"),
            vec!["bad.toml", "model.threads", "expected at least 1"],
        ),
        (
            format!(
                "[model]\npath = {model:?}\nconv_layout = \"sideways\"\n[source]\nkind = \"simulated\"\n"
            ),
            vec!["bad.toml", "model.conv_layout", "nchw"],
        ),
        (
            format!("{base}[source.extra]\n"),
            vec!["bad.toml", "source"],
        ),
        (
            "[model\n".into(),
            vec!["bad.toml", "line 1", "invalid TOML"],
        ),
        // Zero channels once divided by zero at run time.
        (
            format!(
                "[model]\npath = {model:?}\n[source]\nkind = \"mqtt\"\nchannels = 0\n\
                 [[source.topics]]\nfilter = \"s/#\"\n"
            ),
            vec!["bad.toml", "source.channels", "at least 1 channel"],
        ),
        // `block` once behaved as drop_newest without a word.
        (
            format!("{base}[outbox]\non_full = \"block\"\n"),
            vec!["bad.toml", "outbox.on_full", "found block"],
        ),
    ];
    for (body, needles) in cases {
        let cfg = write_config(tmp.path(), &body);
        for cmd in ["run", "check"] {
            let o = run(bin().args([cmd, "--config"]).arg(&cfg));
            assert_bad_input(&o, &needles);
        }
    }
    let o = run(bin()
        .args(["run", "--config"])
        .arg(tmp.path().join("absent.toml")));
    assert_bad_input(&o, &["absent.toml", "cannot read"]);
}

#[test]
fn several_config_mistakes_are_reported_together() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        "colour = 1\n[model]\npath = 7\n[source]\nkind = \"simulated\"\nrate_hz = 0.0\n[window]\nhop = -1\n",
    );
    let o = run(bin().args(["check", "--config"]).arg(&cfg));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    for field in ["colour", "model.path", "window.hop"] {
        assert!(
            err.contains(&format!("bad.toml: {field}")),
            "{field} missing from {err}"
        );
    }
    assert!(!err.contains("panicked"));
}

/// Settings the MQTT link refuses are refused by `check --config` too:
/// both go through one validator per section.
#[test]
fn check_refuses_every_mqtt_setting_that_run_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let model = repo("models/demo/model.onnx");
    let base = format!(
        "[model]\npath = {model:?}\n[source]\nkind = \"simulated\"\n[[sink]]\nkind = \"mqtt\"\n\
         [outbox]\ndir = \"outbox\"\n[mqtt]\nbroker = \"mqtt://127.0.0.1:1\"\n"
    );
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "inflight = 0\n",
            vec!["mqtt.inflight", "expected at least 1"],
        ),
        (
            "max_packet_bytes = 100\n",
            vec!["mqtt.max_packet_bytes", "expected at least 128"],
        ),
        (
            "reconnect_min_ms = 5000\nreconnect_max_ms = 100\n",
            vec!["mqtt.reconnect_min_ms", "reconnect_max_ms"],
        ),
        (
            "username = \"u\"\npassword_env = \"EDGEINFER_TEST_UNSET_PASSWORD\"\n",
            vec![
                "mqtt.password_env",
                "EDGEINFER_TEST_UNSET_PASSWORD",
                "not set",
            ],
        ),
    ];
    for (extra, needles) in cases {
        let cfg = write_config(tmp.path(), &format!("{base}{extra}"));
        for cmd in ["check", "run"] {
            let o = run(bin()
                .args([cmd, "--config"])
                .arg(&cfg)
                .env_remove("EDGEINFER_TEST_UNSET_PASSWORD")
                .env_remove("EDGEINFER_BROKER"));
            assert_bad_input(&o, &needles);
        }
    }
    // mqtts:// without a CA file, and with one that is not there.
    if cfg!(feature = "tls") {
        let tls = base.replace("mqtt://127.0.0.1:1", "mqtts://127.0.0.1:1");
        for (extra, needles) in [
            ("", vec!["mqtt.ca_file", "expected a CA certificate"]),
            (
                "ca_file = \"nowhere.pem\"\n",
                vec!["mqtt.ca_file", "nowhere.pem"],
            ),
        ] {
            let cfg = write_config(tmp.path(), &format!("{tls}{extra}"));
            for cmd in ["check", "run"] {
                let o = run(bin().args([cmd, "--config"]).arg(&cfg));
                assert_bad_input(&o, &needles);
            }
        }
    }
}

#[test]
fn the_embedded_demo_config_is_the_shipped_example() {
    let c = edgeinfer::demo::config();
    let file = edgeinfer::Config::load(&repo("examples/demo.toml")).unwrap();
    assert_eq!(c.source, file.source);
    assert_eq!(c.postprocess, file.postprocess);
    // The demo's model is the trained one, classes in the order the config
    // and the docs use.
    let m = edgeinfer::ModelFile::from_bytes(edgeinfer::demo::MODEL.to_vec(), "demo").unwrap();
    assert_eq!(
        m.metadata(edgeinfer::model::meta::LABELS),
        Some("[\"normal\",\"fault\"]")
    );
    assert_eq!(m.metadata("edgeinfer.train.arch"), Some("cnn1d:8,16"));
}

/// Reads `child`'s stderr on a thread; the lines arrive on the channel.
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits up to `secs` for a line containing `needle`.
fn wait_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str, secs: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?} in {secs} s; got: {seen:#?}")
}

/// With no broker at the address, the runtime says so at once at the
/// default log level (which broker, what failed, when it tries again, what
/// waits), exits 0 on Ctrl-C with what was delivered and what is kept, and
/// the next start says that earlier results wait.
#[test]
fn an_unreachable_broker_is_reported_at_once_and_at_exit() {
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let start = || {
        bin()
            .args(["run", "--broker", &url])
            .env("HOME", home.path())
            .env_remove("RUST_LOG")
            .env_remove("EDGEINFER_BROKER")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = start();
    let lines = stderr_lines(&mut child);
    let warning = wait_line(&lines, "cannot connect", 10);
    for part in [url.as_str(), "next attempt in", "wait in the outbox"] {
        assert!(warning.contains(part), "{part:?} not in {warning}");
    }
    // Let a few results pile up in the outbox.
    std::thread::sleep(std::time::Duration::from_secs(2));
    signal(child.id(), 2);
    let summary = wait_line(&lines, "results", 15);
    assert!(child.wait().unwrap().success());
    assert!(
        summary.contains("0 result messages delivered") && summary.contains("left in the outbox"),
        "{summary}"
    );
    // The next start says what earlier runs left.
    let mut child = start();
    let lines = stderr_lines(&mut child);
    let earlier = wait_line(&lines, "from earlier runs", 10);
    assert!(earlier.contains("wait in the outbox"), "{earlier}");
    signal(child.id(), 2);
    assert!(child.wait().unwrap().success());
}

/// One Ctrl-C may reach the runtime twice (GNU timeout and terminals
/// signal the process and its group): it still drains and exits 0 with its
/// summary.
#[test]
fn one_interrupt_delivered_twice_still_drains() {
    // Two deliveries of one request, as the process and as its group.
    let mut child = bin()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    signal(child.id(), 2);
    signal(child.id(), 2);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    wait_line(&lines, "inferences", 5);
    // GNU timeout itself, when it is installed.
    if std::process::Command::new("timeout")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
    {
        let o = run(std::process::Command::new("timeout")
            .args(["-s", "INT", "--preserve-status", "2"])
            .arg(env!("CARGO_BIN_EXE_edgeinfer"))
            .arg("run"));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stderr(&o).contains("inferences"), "{}", stderr(&o));
    }
}
