//! MQTT end to end: the real binary against a real broker process.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::broker::{Broker, Subscriber};
use common::*;
use edgeinfer::export::reference::{eval, Dense};
use edgeinfer::schema::{Prediction, ResultBatch, SensorFrame};

use prost::Message;

const T: Duration = Duration::from_secs(30);

fn write_cfg(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("device.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn device(cfg: &Path, args: &[&str]) -> Child {
    spawn_run(cfg, args, false)
}

fn finish(child: Child) -> String {
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "device failed: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn model(name: &str) -> String {
    format!("{:?}", repo(&format!("models/{name}/model.onnx")))
}

fn mqtt_section(b: &Broker) -> String {
    format!(
        "[mqtt]\nbroker = \"{}\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n\
         metrics_interval_s = 0.5\ngrace_s = 20.0\n[outbox]\ndir = \"outbox\"\n",
        b.url()
    )
}

/// Waits until the device is online. It subscribes before it announces
/// `online`, and the broker handles a connection's packets in order, so its
/// subscriptions are active by then.
fn wait_online(sub: &Subscriber, device: &str) {
    let topic = format!("edgeinfer/{device}/status");
    sub.wait_for(T, |m| {
        m.iter().any(|m| m.topic == topic && m.payload == b"online")
    });
}

#[test]
fn sensor_messages_in_results_out_match_the_reference() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cfg(
        dir.path(),
        &format!(
            "device_id = \"mlp\"\n[model]\npath = {}\n[source]\nkind = \"mqtt\"\n\
             [[source.topics]]\nfilter = \"sensors/+/features\"\nformat = \"json\"\n\
             [window]\nsize = 1\nlayout = \"flat\"\n[[sink]]\nkind = \"mqtt\"\n{}",
            model("seed-mlp"),
            mqtt_section(&broker)
        ),
    );
    let sub = Subscriber::connect(broker.port, &["edgeinfer/mlp/#"]);
    let dev = device(&cfg, &["--count", "5"]);
    wait_online(&sub, "mlp");
    let rows: Vec<Vec<f32>> = (0..5)
        .map(|i| {
            (0..10)
                .map(|j| ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0)
                .collect()
        })
        .collect();
    for r in &rows {
        sub.publish("sensors/a/features", serde_json::to_vec(r).unwrap());
    }
    finish(dev);
    sub.wait_for(T, |m| {
        m.iter().filter(|m| m.topic.ends_with("/result")).count() >= 5
    });
    let recs = sub.records();
    assert_eq!(
        recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    let proto = tract_onnx::pb::ModelProto::decode(
        &std::fs::read(repo("models/seed-mlp/model.onnx")).unwrap()[..],
    )
    .unwrap();
    for (rec, row) in recs.iter().zip(&rows) {
        let want = eval(&proto, &[Dense::new(vec![1, 10], row.clone())])
            .unwrap()
            .remove(0);
        let Prediction::Values(v) = &rec.result else {
            panic!("{rec:?}")
        };
        assert!(max_abs_diff(&Dense::new(vec![1, 10], v.clone()), &want) <= 1e-4);
    }
    // Retained info describes the model; metrics flowed.
    let info = sub.on("/info");
    let info: serde_json::Value = serde_json::from_slice(&info[0].payload).unwrap();
    assert_eq!(info["schema_version"], 1);
    assert_eq!(info["outputs"][0]["shape"], serde_json::json!([1, 10]));
    let sha = edgeinfer::ModelFile::read(&repo("models/seed-mlp/model.onnx"))
        .unwrap()
        .load(None)
        .unwrap()
        .info()
        .sha256
        .clone();
    assert_eq!(info["model_sha256"], sha);
    // Offline on a clean exit.
    sub.wait_for(T, |m| {
        m.iter()
            .any(|m| m.topic.ends_with("/status") && m.payload == b"offline")
    });
}

#[test]
fn every_payload_format_and_malformed_payloads_in_between() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cfg(
        dir.path(),
        &format!(
            "device_id = \"fmt\"\n[model]\npath = {}\n[source]\nkind = \"mqtt\"\nchannels = 1\n\
             [[source.topics]]\nfilter = \"s/json\"\nformat = \"json\"\n\
             [[source.topics]]\nfilter = \"s/obj\"\nformat = \"json\"\nfields = [\"t\"]\n\
             [[source.topics]]\nfilter = \"s/csv\"\nformat = \"csv\"\n\
             [[source.topics]]\nfilter = \"s/f32\"\nformat = \"f32le\"\n\
             [[source.topics]]\nfilter = \"s/pc\"\nformat = \"postcard\"\n\
             [[sink]]\nkind = \"mqtt\"\n{}",
            model("thermal-trend"),
            mqtt_section(&broker)
        ),
    );
    let sub = Subscriber::connect(broker.port, &["edgeinfer/fmt/#"]);
    let dev = device(&cfg, &["--count", "4"]);
    wait_online(&sub, "fmt");
    let send = |i: usize, v: f32| match i % 5 {
        0 => sub.publish("s/json", v.to_string()),
        1 => sub.publish("s/obj", format!("{{\"t\": {v}}}")),
        2 => sub.publish("s/csv", v.to_string()),
        3 => sub.publish("s/f32", v.to_le_bytes().to_vec()),
        _ => sub.publish(
            "s/pc",
            SensorFrame::new(vec![(1000 + i as u64, vec![v])]).to_postcard(),
        ),
    };
    let bad: [(&str, &[u8]); 5] = [
        ("s/json", b"{not json"),
        ("s/f32", &[1, 2, 3]),
        ("s/csv", b"x,y"),
        ("s/pc", &[0xff, 0xff, 0xff]),
        ("s/json", b"[1, 2]"),
    ];
    for i in 0..13 {
        send(i, 40.0 + i as f32);
        if (3..8).contains(&i) {
            let (topic, payload) = bad[i - 3];
            sub.publish(topic, payload.to_vec());
        }
    }
    finish(dev);
    // Results and errors go out on their own topics, so either may arrive
    // last: wait for both.
    sub.wait_for(T, |m| {
        let on = |end: &str| m.iter().filter(|m| m.topic.ends_with(end)).count();
        on("/result") >= 4 && on("/error") >= 5
    });
    let recs = sub.records();
    assert_eq!(recs.len(), 4);
    for (k, rec) in recs.iter().enumerate() {
        // Window k holds 40 + k ..= 49 + k: mean 44.5 + k, slope 1.
        let Prediction::Values(v) = &rec.result else {
            panic!()
        };
        assert!((v[0] - (44.5 + k as f32)).abs() < 1e-4, "{v:?}");
        assert!((v[1] - 1.0).abs() < 1e-4, "{v:?}");
    }
    let errors: Vec<String> = sub
        .on("/error")
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(errors.len(), 5, "{errors:?}");
    for (e, topic) in errors.iter().zip(["s/json", "s/f32", "s/csv", "s/pc"]) {
        assert!(e.contains(&format!(": {topic}: ")), "{e}");
    }
    assert!(
        errors[4].contains("expected 1 channels, found 2"),
        "{}",
        errors[4]
    );
}

/// Windows of the thermal-trend model over `temps`: (ts_ms, mean, slope).
fn trend_windows(temps: &[f32]) -> Vec<(u64, f32, f32)> {
    (9..temps.len())
        .map(|end| {
            let (mean, slope) = mean_slope(&temps[end - 9..=end]);
            (end as u64 * 1000, mean, slope)
        })
        .collect()
}

/// Runs the thermal-trend model over a recording with `policy` and an MQTT
/// sink; returns the result messages as decoded batches.
fn replay_with_policy(
    broker: &Broker,
    temps: &[f32],
    policy: &str,
    encoding: &str,
) -> Vec<ResultBatch> {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("ts_ms,temp\n");
    for (i, t) in temps.iter().enumerate() {
        csv.push_str(&format!("{},{t}\n", i * 1000));
    }
    std::fs::write(dir.path().join("rec.csv"), csv).unwrap();
    let device_id = format!("pol{}", broker.port);
    let cfg = write_cfg(
        dir.path(),
        &format!(
            "device_id = \"{device_id}\"\n[model]\npath = {}\n[source]\nkind = \"replay\"\npath = \"rec.csv\"\n\
             timestamp_column = \"ts_ms\"\n[policy]\n{policy}\n[[sink]]\nkind = \"mqtt\"\nencoding = \"{encoding}\"\n{}",
            model("thermal-trend"),
            mqtt_section(broker)
        ),
    );
    let sub = Subscriber::connect(broker.port, &[&format!("edgeinfer/{device_id}/result")]);
    finish(device(&cfg, &[]));
    let sent: u64 = std::fs::read_to_string(dir.path().join("outbox/next_seq"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let count = |m: &[common::broker::Msg]| -> u64 {
        m.iter()
            .map(|m| match encoding {
                "json" => serde_json::from_slice::<ResultBatch>(&m.payload)
                    .unwrap()
                    .records
                    .len(),
                _ => ResultBatch::from_postcard(&m.payload)
                    .unwrap()
                    .records
                    .len(),
            } as u64)
            .sum()
    };
    sub.wait_for(T, |m| count(m) >= sent);
    sub.on("/result")
        .iter()
        .map(|m| match encoding {
            "json" => serde_json::from_slice(&m.payload).unwrap(),
            _ => ResultBatch::from_postcard(&m.payload).unwrap(),
        })
        .collect()
}

fn values(r: &edgeinfer::ResultRecord) -> (f32, f32) {
    match &r.result {
        Prediction::Values(v) => (v[0], v[1]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn publish_policies_give_exactly_the_expected_records() {
    let broker = Broker::start();
    // 20 readings at 20 °C, then a step to 30 °C for 20 more.
    let temps: Vec<f32> = (0..40).map(|i| if i < 20 { 20.0 } else { 30.0 }).collect();
    let windows = trend_windows(&temps);

    // every + batch of 4 records per message.
    let batches = replay_with_policy(&broker, &temps, "batch_max_records = 4", "postcard");
    let sizes: Vec<usize> = batches.iter().map(|b| b.records.len()).collect();
    assert_eq!(sizes, vec![4, 4, 4, 4, 4, 4, 4, 3]);
    let recs: Vec<_> = batches.iter().flat_map(|b| b.records.clone()).collect();
    assert_eq!(recs.len(), windows.len());
    for (r, (ts, mean, slope)) in recs.iter().zip(&windows) {
        assert_eq!(r.ts_ms, *ts);
        let (m, s) = values(r);
        assert!((m - mean).abs() < 1e-4 && (s - slope).abs() < 1e-4);
    }
    assert!(batches
        .iter()
        .all(|b| b.device.starts_with("pol") && b.version == 1));

    // deadband 2.5 with a 10 s heartbeat.
    let mut expect = vec![];
    let mut last: Option<(u64, f32, f32)> = None;
    for &(ts, m, s) in &windows {
        let emit = match last {
            None => true,
            Some((lt, lm, ls)) => (m - lm).abs() > 2.5 || (s - ls).abs() > 2.5 || ts - lt >= 10_000,
        };
        if emit {
            expect.push(ts);
            last = Some((ts, m, s));
        }
    }
    let recs: Vec<_> = replay_with_policy(
        &broker,
        &temps,
        "deadband = 2.5\nheartbeat_ms = 10000",
        "postcard",
    )
    .into_iter()
    .flat_map(|b| b.records)
    .collect();
    assert_eq!(recs.iter().map(|r| r.ts_ms).collect::<Vec<_>>(), expect);
    assert!(expect.len() > 3 && expect.len() < windows.len());
    assert_eq!(
        recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..expect.len() as u64).collect::<Vec<_>>()
    );

    // min_interval, as JSON.
    let recs: Vec<_> = replay_with_policy(&broker, &temps, "min_interval_ms = 5000", "json")
        .into_iter()
        .flat_map(|b| b.records)
        .collect();
    assert_eq!(
        recs.iter().map(|r| r.ts_ms).collect::<Vec<_>>(),
        vec![9000, 14000, 19000, 24000, 29000, 34000, 39000]
    );

    // summary per 10 s.
    let recs: Vec<_> = replay_with_policy(&broker, &temps, "summary_ms = 10000", "postcard")
        .into_iter()
        .flat_map(|b| b.records)
        .collect();
    let summaries: Vec<_> = recs
        .iter()
        .map(|r| match &r.result {
            Prediction::Summary(s) => (
                s.from_ts_ms,
                r.ts_ms,
                s.count,
                s.mean[0],
                s.min[0],
                s.max[0],
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    let fold = |from: u64, to: u64| {
        let w: Vec<_> = windows
            .iter()
            .filter(|w| w.0 >= from && w.0 <= to)
            .collect();
        let mean = w.iter().map(|w| w.1).sum::<f32>() / w.len() as f32;
        let min = w.iter().map(|w| w.1).fold(f32::MAX, f32::min);
        let max = w.iter().map(|w| w.1).fold(f32::MIN, f32::max);
        (from, to, w.len() as u32, mean, min, max)
    };
    let expect = [
        fold(9000, 18000),
        fold(19000, 28000),
        fold(29000, 38000),
        fold(39000, 39000),
    ];
    assert_eq!(summaries.len(), expect.len());
    for (got, want) in summaries.iter().zip(&expect) {
        assert_eq!((got.0, got.1, got.2), (want.0, want.1, want.2));
        assert!(
            (got.3 - want.3).abs() < 1e-3
                && (got.4 - want.4).abs() < 1e-3
                && (got.5 - want.5).abs() < 1e-3
        );
    }
}

fn seq_set(recs: &[edgeinfer::ResultRecord]) -> std::collections::BTreeSet<u64> {
    recs.iter().map(|r| r.seq).collect()
}

fn simulated_mlp(device_id: &str, rate: f64, broker_url: &str, backoff_min: u64) -> String {
    format!(
        "device_id = \"{device_id}\"\n[model]\npath = {}\n[source]\nkind = \"simulated\"\nchannels = 10\n\
         rate_hz = {rate}\n[window]\nsize = 1\nlayout = \"flat\"\n[[sink]]\nkind = \"mqtt\"\n\
         [mqtt]\nbroker = \"{broker_url}\"\nreconnect_min_ms = {backoff_min}\nreconnect_max_ms = 1000\n\
         grace_s = 30.0\nmetrics_interval_s = 0.3\n[outbox]\ndir = \"outbox\"\n",
        model("seed-mlp")
    )
}

#[test]
fn broker_killed_mid_stream_loses_nothing() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cfg(dir.path(), &simulated_mlp("kb", 200.0, &broker.url(), 500));
    let sub = Subscriber::connect(broker.port, &["edgeinfer/kb/result"]);
    let dev = device(&cfg, &["--count", "800"]);
    sub.wait_for(T, |m| m.len() >= 100);
    broker.kill();
    std::thread::sleep(Duration::from_millis(800));
    broker.restart();
    let err = finish(dev);
    sub.wait_for(T, |m| {
        let recs: Vec<_> = m
            .iter()
            .flat_map(|m| ResultBatch::from_postcard(&m.payload).unwrap().records)
            .collect();
        seq_set(&recs).len() >= 800
    });
    let got = seq_set(&sub.records());
    assert_eq!(got, (0..800).collect(), "device said: {err}");
    assert!(err.contains("connection lost"), "{err}");
}

#[test]
fn runtime_killed_with_unacknowledged_results_delivers_them_after_restart() {
    // No broker yet: results pile up in the outbox.
    let port = common::broker::free_port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let cfg = write_cfg(dir.path(), &simulated_mlp("kr", 100.0, &url, 100));
    let mut dev = device(&cfg, &[]);
    let seq_file = dir.path().join("outbox/next_seq");
    let deadline = std::time::Instant::now() + T;
    while std::fs::read_to_string(&seq_file)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        < 50
    {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    dev.kill().unwrap();
    dev.wait().unwrap();
    let first_run: u64 = std::fs::read_to_string(&seq_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let broker = Broker::start_on(port, |_, port| {
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n")
    });
    let sub = Subscriber::connect(broker.port, &["edgeinfer/kr/#"]);
    let dev = device(&cfg, &["--count", "10"]);
    finish(dev);
    let total = first_run + 10;
    sub.wait_for(T, |m| {
        let recs: Vec<_> = m
            .iter()
            .filter(|m| m.topic.ends_with("/result"))
            .flat_map(|m| ResultBatch::from_postcard(&m.payload).unwrap().records)
            .collect();
        seq_set(&recs).len() as u64 >= total
    });
    assert_eq!(seq_set(&sub.records()), (0..total).collect());
}

#[test]
fn status_is_retained_online_and_the_last_will_says_offline() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cfg(dir.path(), &simulated_mlp("st", 20.0, &broker.url(), 100));
    let mut dev = device(&cfg, &[]);
    let first = Subscriber::connect(broker.port, &["edgeinfer/st/result"]);
    first.wait_for(T, |m| !m.is_empty());
    // A subscriber arriving later still learns the device is online.
    let late = Subscriber::connect(
        broker.port,
        &[
            "edgeinfer/st/status",
            "edgeinfer/st/info",
            "edgeinfer/st/metrics",
        ],
    );
    late.wait_for(T, |m| {
        m.iter().any(|m| m.topic.ends_with("/status"))
            && m.iter().any(|m| m.topic.ends_with("/info"))
    });
    let status = late.on("/status");
    assert_eq!(
        (status[0].payload.as_slice(), status[0].retain),
        (&b"online"[..], true)
    );
    assert!(late.on("/info")[0].retain);
    late.wait_for(T, |m| {
        m.iter().any(|m| {
            m.topic.ends_with("/metrics")
                && serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["inferences"]
                    .as_u64()
                    > Some(0)
        })
    });
    dev.kill().unwrap();
    dev.wait().unwrap();
    late.wait_for(T, |m| {
        m.iter()
            .any(|m| m.topic.ends_with("/status") && m.payload == b"offline")
    });
    assert!(!first.on("/result").is_empty());
    let metrics = late.on("/metrics");
    let m: serde_json::Value = serde_json::from_slice(&metrics.last().unwrap().payload).unwrap();
    for key in [
        "inferences",
        "results",
        "errors",
        "outbox_depth",
        "acked",
        "bytes_in_sensor",
        "bytes_published",
        "latency_model_p50_us",
        "latency_model_p99_us",
        "puback_p99_us",
    ] {
        assert!(
            m.get(key).is_some_and(|v| v.is_u64()),
            "{key} missing in {m}"
        );
    }
    assert!(m["inferences"].as_u64().unwrap() > 0, "{m}");
    assert!(m["acked"].as_u64().unwrap() > 0, "{m}");
}

fn sh(dir: &Path, script: &str) {
    let o = std::process::Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn tls_with_username_and_password_against_mosquitto() {
    let have = |tool: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let required = std::env::var("EDGEINFER_TEST_BROKER").is_ok_and(|v| v == "mosquitto");
    let tools = have("mosquitto") && have("mosquitto_passwd") && have("openssl");
    if !(required || tools) {
        common::skip("TLS needs Mosquitto, mosquitto_passwd and openssl (CI sets EDGEINFER_TEST_BROKER=mosquitto to require them)");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    sh(
        certs.path(),
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj '/CN=edgeinfer test CA' 2>/dev/null
         openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=localhost' 2>/dev/null
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf 2>/dev/null
         mosquitto_passwd -b -c passwd device 's3cret pass'
         mosquitto_passwd -b passwd reader r3ader",
    );
    let plain = common::broker::free_port();
    let c = certs.path().to_path_buf();
    let broker = Broker::start_with(|_, port| {
        format!(
            // `user root`: as root Mosquitto would otherwise switch to its own
            // user, which cannot read the test's private files.
            "user root\nper_listener_settings false\nallow_anonymous false\npassword_file {}\n\
             listener {plain} 127.0.0.1\nlistener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            c.join("passwd").display(),
            c.join("ca.crt").display(),
            c.join("server.crt").display(),
            c.join("server.key").display()
        )
    });
    if !broker.is_mosquitto() {
        common::skip("TLS needs Mosquitto (CI sets EDGEINFER_TEST_BROKER=mosquitto to require it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), "s3cret pass\n").unwrap();
    let cfg = write_cfg(
        dir.path(),
        &format!(
            "device_id = \"tls\"\n[model]\npath = {}\n[source]\nkind = \"simulated\"\nchannels = 10\nrate_hz = 50.0\n\
             [window]\nsize = 1\nlayout = \"flat\"\n[[sink]]\nkind = \"mqtt\"\n\
             [mqtt]\nbroker = \"mqtts://localhost:{}\"\nca_file = {:?}\nusername = \"device\"\n\
             password_file = \"password\"\n[outbox]\ndir = \"outbox\"\n",
            model("seed-mlp"),
            broker.port,
            c.join("ca.crt")
        ),
    );
    let mut opts = rumqttc::MqttOptions::new("reader", "127.0.0.1", plain);
    opts.set_credentials("reader", "r3ader");
    let sub = Subscriber::connect_with(opts, &["edgeinfer/tls/#"]);
    let dev = device(&cfg, &["--count", "5"]);
    let err = finish(dev);
    sub.wait_for(T, |m| {
        m.iter().filter(|m| m.topic.ends_with("/result")).count() >= 5
    });
    assert_eq!(seq_set(&sub.records()), (0..5).collect());
    assert!(
        !err.contains("s3cret"),
        "password leaked into the log: {err}"
    );

    // A wrong password never connects: results stay in the outbox.
    std::fs::write(dir.path().join("password"), "wrong\n").unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        "[mqtt]\n",
        "[mqtt]\ngrace_s = 1.0\nmetrics_interval_s = 0.2\n",
    );
    std::fs::write(&cfg, &text).unwrap();
    let err = finish(device(&cfg, &["--count", "3"]));
    assert!(err.contains("still unacknowledged"), "{err}");
    assert!(!err.contains("wrong"), "{err}");
    std::fs::write(dir.path().join("password"), "s3cret pass\n").unwrap();

    // TLS is never given up for plain TCP: `mqtts://` aimed at the plain
    // listener fails the handshake and delivers nothing.
    let before = sub.records().len();
    let plain_url = text.replace(
        &format!("mqtts://localhost:{}", broker.port),
        &format!("mqtts://localhost:{plain}"),
    );
    std::fs::write(&cfg, &plain_url).unwrap();
    let err = finish(device(&cfg, &["--count", "3"]));
    assert!(err.contains("cannot connect to mqtts://"), "{err}");
    assert!(err.contains("still unacknowledged"), "{err}");

    // A certificate from another CA is refused.
    sh(
        certs.path(),
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 2 -subj '/CN=another CA' 2>/dev/null",
    );
    std::fs::write(
        &cfg,
        text.replace(
            &format!("{:?}", c.join("ca.crt")),
            &format!("{:?}", c.join("other.crt")),
        ),
    )
    .unwrap();
    let err = finish(device(&cfg, &["--count", "3"]));
    assert!(err.contains("cannot connect to mqtts://"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(err.contains("still unacknowledged"), "{err}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sub.records().len(),
        before,
        "a refused link delivered results"
    );

    // With the right settings again, everything kept is delivered, and the
    // password is in no message the device sent (status, info, metrics,
    // errors, results) and in none of its logs.
    std::fs::write(&cfg, &text).unwrap();
    // Half a second at 50 Hz: metrics go out every 0.2 s.
    let err = finish(device(&cfg, &["--count", "25"]));
    sub.wait_for(T, |m| {
        m.iter().filter(|m| m.topic.ends_with("/metrics")).count() >= 1
    });
    assert!(!err.contains("s3cret"), "{err}");
    let all = sub.messages.lock().unwrap();
    assert!(all.iter().any(|m| m.topic.ends_with("/info")));
    for m in all.iter() {
        let text = String::from_utf8_lossy(&m.payload);
        assert!(!text.contains("s3cret"), "a secret in {}: {text}", m.topic);
    }
}

#[test]
fn embedded_broker_serves_local_subscribers() {
    let port = common::broker::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cfg(
        dir.path(),
        &simulated_mlp("emb", 20.0, &format!("mqtt://127.0.0.1:{port}"), 100).replace(
            "[outbox]",
            &format!("[broker]\nembedded = true\nlisten = \"127.0.0.1:{port}\"\n[outbox]"),
        ),
    );
    let dev = device(&cfg, &["--count", "60"]);
    let deadline = std::time::Instant::now() + T;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "embedded broker never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sub = Subscriber::connect(port, &["edgeinfer/emb/result"]);
    sub.wait_for(T, |m| m.len() >= 3);
    let recs = sub.records();
    assert!(
        recs.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "{:?}",
        seq_set(&recs)
    );
    finish(dev);
}

#[test]
fn broker_flag_and_environment_make_the_demo_publish_as_well_as_print() {
    let broker = Broker::start();
    let home = tempfile::tempdir().unwrap();
    let sub = Subscriber::connect(broker.port, &["edgeinfer/demo/result"]);
    // --broker on the built-in demo.
    let o = bin()
        .args(["run", "--count", "3", "--broker"])
        .arg(broker.url())
        .env("HOME", home.path())
        .env_remove("EDGEINFER_BROKER")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_lines(&stdout(&o)).len(), 3);
    sub.wait_for(T, |m| m.len() >= 3);
    assert_eq!(seq_set(&sub.records()), (0..3).collect());
    // EDGEINFER_BROKER with no arguments at all; the sequence continues
    // from the outbox's saved number.
    let o = bin()
        .env("HOME", home.path())
        .env("EDGEINFER_BROKER", broker.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sub.wait_for(T, |m| m.len() >= 4);
    signal(o.id(), 15);
    let out = o.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    sub.wait_for(T, |m| {
        m.iter()
            .flat_map(|m| ResultBatch::from_postcard(&m.payload).unwrap().records)
            .any(|r| r.seq == 3)
    });
}

#[test]
fn edgeinfer_broker_relays_messages() {
    let port = common::broker::free_port();
    let mut child = bin()
        .args(["broker", "--bind", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + T;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let a = Subscriber::connect(port, &["x/#"]);
    let b = Subscriber::connect(port, &["nothing"]);
    b.publish("x/y", "hello");
    a.wait_for(T, |m| {
        m.iter().any(|m| m.topic == "x/y" && m.payload == b"hello")
    });
    let _ = child.kill();
    let _ = child.wait();
}

/// Normal operation of `edgeinfer broker` (clients connect, publish,
/// subscribe, leave) writes nothing at the default log level; a real error
/// (the port is taken) is shown.
#[test]
fn edgeinfer_broker_is_quiet_until_something_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::broker::free_port();
    let broker = |port: u16| {
        bin()
            .args(["broker", "--bind", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = broker(port);
    let deadline = std::time::Instant::now() + T;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    {
        let sub = Subscriber::connect(port, &["edgeinfer/#"]);
        let o = common::run(
            bin()
                .args(["run", "--count", "5", "--broker"])
                .arg(format!("mqtt://127.0.0.1:{port}"))
                .env("HOME", dir.path())
                .env_remove("RUST_LOG"),
        );
        assert!(o.status.success(), "{}", common::stderr(&o));
        sub.wait_for(T, |m| m.iter().any(|m| m.topic.ends_with("/result")));
    }
    // Another broker on the same port cannot listen, and says so.
    let mut second = broker(port);
    let err = second.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(err), &mut text);
        text
    });
    std::thread::sleep(Duration::from_secs(2));
    let _ = second.kill();
    let _ = second.wait();
    let second_log = reader.join().unwrap();
    assert!(second_log.contains("Server error"), "{second_log}");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("listening on"))
        .collect();
    assert!(
        lines.is_empty(),
        "the broker logged in normal operation: {lines:#?}"
    );
}

/// A model slow enough to fall behind a flood (six rounds of 16.7 M
/// multiply-accumulates).
fn slow_model(path: &Path) {
    let m = edgeinfer::export::zoo::slow_square(6).unwrap();
    edgeinfer::export::write_model(&m, path).unwrap();
}

/// A full input queue drops and counts sensor messages instead of stalling
/// the network thread: under a flood the link stays connected, keeps
/// publishing results and receiving their PUBACKs.
#[test]
fn a_flooded_input_is_dropped_and_counted_while_results_keep_flowing() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("slow.onnx");
    slow_model(&slow);
    let cfg = write_cfg(
        dir.path(),
        &format!(
            "device_id = \"flood\"\n[model]\npath = {slow:?}\n\
             [source]\nkind = \"mqtt\"\nchannels = 256\n\
             [[source.topics]]\nfilter = \"flood/in\"\nformat = \"f32le\"\n\
             [window]\nsize = 1\nlayout = \"flat\"\n[pipeline]\ncapacity = 4\n\
             [[sink]]\nkind = \"mqtt\"\n\
             [mqtt]\nbroker = \"{}\"\nkeep_alive_s = 1.0\nmetrics_interval_s = 0.5\ngrace_s = 20.0\n\
             [outbox]\ndir = \"outbox\"\n",
            broker.url()
        ),
    );
    let sub = Subscriber::connect(broker.port, &["edgeinfer/flood/#"]);
    let dev = device(&cfg, &[]);
    wait_online(&sub, "flood");
    let payload: Vec<u8> = (0..256)
        .flat_map(|i| ((i % 7) as f32 / 7.0).to_le_bytes())
        .collect();
    for _ in 0..4000 {
        sub.publish("flood/in", payload.clone());
    }
    // While the model is far behind: drops are counted, and results are
    // published and acknowledged on the same link.
    let metric = |m: &common::broker::Msg, key: &str| {
        serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()[key]
            .as_u64()
            .unwrap_or(0)
    };
    sub.wait_for(T, |msgs| {
        msgs.iter().any(|m| {
            m.topic.ends_with("/metrics")
                && metric(m, "mqtt_in_dropped") > 0
                && metric(m, "acked") >= 5
        })
    });
    let during = sub.on("/metrics");
    assert!(during.iter().all(|m| metric(m, "connects") == 1));
    assert!(
        !sub.on("/status").iter().any(|m| m.payload == b"offline"),
        "the link went offline under the flood"
    );
    let errors = sub.on("/error");
    assert!(
        errors
            .iter()
            .any(|m| String::from_utf8_lossy(&m.payload).contains("input queue full")),
        "no drop report on the error topic"
    );
    common::signal(dev.id(), 15);
    let err = finish(dev);
    // The exit summary counts the drops; every result emitted arrived.
    let summary = err
        .lines()
        .find(|l| l.contains("inferences"))
        .unwrap_or_else(|| panic!("{err}"));
    let number_before = |word: &str| -> u64 {
        let words: Vec<&str> = summary
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .collect();
        let i = words.iter().position(|w| *w == word).unwrap();
        words[i - 1].parse().unwrap()
    };
    let (samples, dropped) = (number_before("samples"), number_before("dropped"));
    assert!(dropped > 0, "{summary}");
    // Every message the broker delivered is a sample or a counted drop.
    assert!(
        samples + dropped <= 4000 && samples + dropped >= 1000,
        "{summary}"
    );
    let emitted = number_before("results");
    sub.wait_for(T, |msgs| {
        let recs: Vec<_> = msgs
            .iter()
            .filter(|m| m.topic.ends_with("/result"))
            .flat_map(|m| ResultBatch::from_postcard(&m.payload).unwrap().records)
            .collect();
        seq_set(&recs).len() as u64 >= emitted
    });
    assert_eq!(seq_set(&sub.records()), (0..emitted).collect(), "{summary}");
}
