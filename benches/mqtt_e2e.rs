//! End to end through a local broker (Mosquitto when on PATH, else the
//! embedded one), the seed 10→20→10 MLP, measured on the binary users run:
//!
//!     cargo bench --bench mqtt_e2e
//!
//! - `edgeinfer run` with stdin input and results over MQTT at QoS 1,
//!   1/10/100 records per message: results/s from start to the last result
//!   received by a subscriber;
//! - the same binary taking its input over MQTT (a QoS 1 publisher, one CSV
//!   line per message) and publishing results on the same link: samples/s
//!   end to end, what the device counted as dropped, its peak RSS;
//! - payload bytes per result, postcard vs JSON;
//! - MQTT messages per hour for a 10 Hz result stream under `every`,
//!   `on_change` + `heartbeat`, and `batch`.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeinfer::config::SimMode;
use edgeinfer::pipeline::{prepare, RunOptions};
use edgeinfer::rng::Rng;
use edgeinfer::schema::{ClassResult, Prediction, ResultBatch, ResultRecord, SCHEMA_VERSION};
use edgeinfer::sink::{Sink, SinkError};
use edgeinfer::source::{MemorySource, Sample, SimulatedSource, Source};
use edgeinfer::{Config, ModelFile};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

#[path = "../tests/common/broker.rs"]
mod broker;
use broker::Broker;

/// The broker setting docs/reliability.md recommends for a device that
/// takes its input over MQTT: a per-client queue far above Mosquitto's
/// default of 1,000, so the broker does not drop what a busy device has
/// not taken yet.
fn mosquitto_conf(_: &Path, port: u16) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\n\
         max_queued_messages 1000000\n"
    )
}

/// Counts result records arriving on `edgeinfer/+/result`.
struct Counter {
    records: Arc<AtomicU64>,
    last: Arc<Mutex<Instant>>,
    metrics: Arc<Mutex<serde_json::Value>>,
    client: Client,
}

impl Counter {
    fn connect(port: u16) -> Counter {
        let mut opts = MqttOptions::new(format!("bench-count-{port}"), "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(opts, 1000);
        let records = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(Instant::now()));
        let metrics = Arc::new(Mutex::new(serde_json::Value::Null));
        let subscribed = Arc::new(AtomicU64::new(0));
        {
            let (records, last, metrics, subscribed, client) = (
                records.clone(),
                last.clone(),
                metrics.clone(),
                subscribed.clone(),
                client.clone(),
            );
            std::thread::spawn(move || loop {
                match conn.recv() {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        let _ = client.try_subscribe("edgeinfer/+/result", QoS::AtLeastOnce);
                        let _ = client.try_subscribe("edgeinfer/+/metrics", QoS::AtMostOnce);
                    }
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                        subscribed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p))))
                        if p.topic.ends_with("/metrics") =>
                    {
                        if let Ok(m) = serde_json::from_slice(&p.payload) {
                            *metrics.lock().unwrap() = m;
                        }
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        if let Ok(b) = ResultBatch::from_postcard(&p.payload) {
                            records.fetch_add(b.records.len() as u64, Ordering::Relaxed);
                            *last.lock().unwrap() = Instant::now();
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => return,
                }
            });
        }
        while subscribed.load(Ordering::Relaxed) < 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        Counter {
            records,
            last,
            metrics,
            client,
        }
    }

    /// Waits until `n` records arrived or nothing arrived for 5 s; returns
    /// how many arrived and when the last did.
    fn wait(&self, n: u64) -> (u64, Instant) {
        loop {
            let got = self.records.load(Ordering::Relaxed);
            let last = *self.last.lock().unwrap();
            if got >= n || (got > 0 && last.elapsed() > Duration::from_secs(5)) {
                return (got, last);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A counter from the last metrics message received.
    fn metric(&self, key: &str) -> u64 {
        self.metrics.lock().unwrap()[key].as_u64().unwrap_or(0)
    }

    fn reset(&self) {
        self.records.store(0, Ordering::Relaxed);
    }
}

/// The device as users run it: `edgeinfer run --config FILE`, a fresh
/// state directory, the seed MLP, results over MQTT at QoS 1.
fn device(dir: &Path, port: u16, id: &str, source: &str, batch: usize) -> Child {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    device_with(
        dir,
        port,
        id,
        &root.join("models/seed-mlp/model.onnx"),
        source,
        batch,
        "",
    )
}

/// [`device`] with another model and more `[mqtt]` settings.
fn device_with(
    dir: &Path,
    port: u16,
    id: &str,
    model: &Path,
    source: &str,
    batch: usize,
    mqtt: &str,
) -> Child {
    let cfg = dir.join(format!("{id}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "device_id = \"{id}\"\n[model]\npath = {model:?}\n{source}\n\
             [window]\nsize = 1\nlayout = \"flat\"\n\
             [[sink]]\nkind = \"mqtt\"\nbatch_max_records = {batch}\nbatch_max_ms = 5\n\
             [mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\ninflight = 64\n{mqtt}\n\
             [outbox]\ndir = {outbox:?}\n",
            outbox = dir.join(format!("{id}-state")),
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn csv_lines(n: usize) -> Vec<String> {
    let mut rng = Rng::new(1);
    (0..n)
        .map(|_| {
            let v: Vec<String> = rng
                .normal_vec(10, 1.0)
                .iter()
                .map(|x| format!("{x:.4}"))
                .collect();
            v.join(",")
        })
        .collect()
}

/// Peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    proc_status_mib(pid, "VmHWM:")
}

/// A memory line of /proc/PID/status, in MiB.
fn proc_status_mib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Stops the device with SIGINT and returns its exit summary line.
fn stop(child: Child) -> String {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) on the child this bench spawned; no memory involved.
    unsafe { kill(child.id() as i32, 2) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find(|l| l.contains(" samples, "))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// stdin → model → MQTT: lines piped into the binary, results counted at a
/// subscriber. Returns results/s from start to the last result received.
fn stdin_to_mqtt(port: u16, counter: &Counter, lines: &[String], batch: usize) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    counter.reset();
    let t0 = Instant::now();
    let mut child = device(
        dir.path(),
        port,
        &format!("stdin{batch}"),
        "[source]\nkind = \"stdin\"",
        batch,
    );
    {
        let mut stdin = child.stdin.take().unwrap();
        let mut text = lines.join("\n");
        text.push('\n');
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let (got, last) = counter.wait(lines.len() as u64);
    let _ = child.wait();
    (got as f64 / (last - t0).as_secs_f64(), got)
}

/// MQTT → model → MQTT on one link: a QoS 1 publisher sends one CSV line
/// per message; the device subscribes, infers and publishes results.
/// Returns samples/s from the first publish to the last result, results
/// received, the device's exit summary and its peak RSS.
fn mqtt_to_mqtt(
    port: u16,
    counter: &Counter,
    lines: &[String],
    batch: usize,
) -> (f64, u64, String, f64) {
    let dir = tempfile::tempdir().unwrap();
    counter.reset();
    let id = format!("loop{batch}");
    let child = device(
        dir.path(),
        port,
        &id,
        "[source]\nkind = \"mqtt\"\n[[source.topics]]\nfilter = \"bench/in\"\nformat = \"csv\"",
        batch,
    );
    // Online means subscribed (the device subscribes before it says so).
    wait_online(port, &id);
    let client = publisher(port, &id);
    let t0 = Instant::now();
    for l in lines {
        client
            .publish("bench/in", QoS::AtLeastOnce, false, l.clone())
            .unwrap();
    }
    let (got, last) = counter.wait(lines.len() as u64);
    let rss = peak_rss_mib(child.id());
    let summary = stop(child);
    let _ = client.disconnect();
    (got as f64 / (last - t0).as_secs_f64(), got, summary, rss)
}

/// A QoS 1 publisher (100 in flight) whose event loop runs in a thread.
fn publisher(port: u16, id: &str) -> Client {
    let mut opts = MqttOptions::new(format!("bench-pub-{id}"), "127.0.0.1", port);
    opts.set_inflight(100);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(opts, 1000);
    std::thread::spawn(move || while conn.recv().is_ok_and(|e| e.is_ok()) {});
    client
}

/// Current resident memory of a process (VmRSS), in MiB.
fn rss_mib(pid: u32) -> f64 {
    proc_status_mib(pid, "VmRSS:")
}

/// A flood: the slow model (six rounds, about 100 M multiply-accumulates
/// an inference) fed over MQTT at `factor` times the rate it sustains, for
/// `secs` seconds; then nothing until the device has worked off its queue;
/// then input at half its rate. Reports the rates, what the device dropped
/// and counted, its memory, whether its link held, and the recovery.
fn flood(port: u16, counter: &Counter, factor: f64, secs: f64) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("slow.onnx");
    edgeinfer::export::write_model(&edgeinfer::export::zoo::slow_square(6).unwrap(), &model)
        .unwrap();
    let id = "flood";
    let child = device_with(
        dir.path(),
        port,
        id,
        &model,
        "[source]\nkind = \"mqtt\"\nchannels = 256\n\
         [[source.topics]]\nfilter = \"bench/flood\"\nformat = \"f32le\"",
        1,
        "keep_alive_s = 2.0\nmetrics_interval_s = 0.5\ngrace_s = 30.0",
    );
    wait_online(port, id);
    counter.reset();
    let client = publisher(port, id);
    let payload: Vec<u8> = (0..256)
        .flat_map(|i| ((i % 7) as f32 / 7.0).to_le_bytes())
        .collect();
    let send = |n: usize| {
        for _ in 0..n {
            client
                .publish("bench/flood", QoS::AtLeastOnce, false, payload.clone())
                .unwrap();
        }
    };
    // The rate the device sustains: a burst that fits its input queue,
    // timed from the first result to the last.
    send(1);
    counter.wait(1);
    let t = Instant::now();
    send(300);
    counter.wait(301);
    let rate = 300.0 / t.elapsed().as_secs_f64();
    // The flood, paced in 10 ms ticks.
    let target = rate * factor;
    let (mut sent, mut peak_rss) = (0u64, 0f64);
    let before = counter.records.load(Ordering::Relaxed);
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        let due = (t.elapsed().as_secs_f64() * target) as u64;
        send(due.saturating_sub(sent) as usize);
        sent = sent.max(due);
        peak_rss = peak_rss.max(rss_mib(child.id()));
        std::thread::sleep(Duration::from_millis(10));
    }
    let flood_s = t.elapsed().as_secs_f64();
    let during = counter.records.load(Ordering::Relaxed) - before;
    // Recovery: the queue worked off (no result for 2 s after the last).
    let ended = Instant::now();
    let drained_at = loop {
        std::thread::sleep(Duration::from_millis(50));
        let last = *counter.last.lock().unwrap();
        if last.elapsed() > Duration::from_secs(2) {
            break last;
        }
        peak_rss = peak_rss.max(rss_mib(child.id()));
    };
    let recovery = drained_at.saturating_duration_since(ended).as_secs_f64();
    let dropped_after_flood = counter.metric("mqtt_in_dropped");
    // Then half the sustained rate for a few seconds: nothing dropped.
    let before = counter.records.load(Ordering::Relaxed);
    let calm = (rate * 2.0).ceil() as u64;
    for _ in 0..calm {
        send(1);
        std::thread::sleep(Duration::from_secs_f64(2.0 / rate));
    }
    let (got, _) = counter.wait(before + calm);
    std::thread::sleep(Duration::from_secs(1));
    let dropped_calm = counter.metric("mqtt_in_dropped") - dropped_after_flood;
    let connects = counter.metric("connects");
    // Every flood message became a result or a counted drop.
    let flood_results = counter.records.load(Ordering::Relaxed) - 301 - (got - before);
    let hwm = peak_rss_mib(child.id());
    let summary = stop(child);
    let _ = client.disconnect();
    println!(
        "\nflood: slow model over MQTT (f32le, QoS 1), sustained {rate:.0} inferences/s; \
         input at {:.1}x that ({target:.0} msg/s) for {flood_s:.1} s:",
        factor
    );
    println!(
        "  sent {sent}, results during the flood {during} ({:.0}/s), dropped and counted on the device {dropped_after_flood}",
        during as f64 / flood_s
    );
    println!(
        "  accounted for: {sent} sent = {flood_results} results + {dropped_after_flood} counted drops{}",
        if flood_results + dropped_after_flood == sent { "" } else { "  (MISMATCH)" }
    );
    println!(
        "  queue worked off {recovery:.1} s after the flood; then {calm} messages at half rate: {} results, {dropped_calm} dropped",
        got - before
    );
    println!(
        "  RSS peak {hwm:.1} MiB (sampled max {peak_rss:.1} MiB); MQTT connections in all {connects} (1 = the link never dropped)"
    );
    println!("  device: {summary}");
}

fn wait_online(port: u16, id: &str) {
    let mut opts = MqttOptions::new(format!("bench-status-{id}"), "127.0.0.1", port);
    opts.set_clean_session(true);
    let (client, mut conn) = Client::new(opts, 10);
    client
        .subscribe(format!("edgeinfer/{id}/status"), QoS::AtLeastOnce)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            conn.recv_timeout(Duration::from_millis(100))
        {
            if &p.payload[..] == b"online" {
                return;
            }
        }
    }
    panic!("device {id} did not come online");
}

fn payload_sizes() {
    let class = ResultRecord {
        source: None,
        seq: 123_456,
        ts_ms: 1_795_939_319_843,
        result: Prediction::Class(ClassResult {
            class: 1,
            score: 0.987,
            top: vec![(1, 0.987)],
        }),
    };
    let mut rng = Rng::new(2);
    let values = ResultRecord {
        source: None,
        seq: 123_456,
        ts_ms: 1_795_939_319_843,
        result: Prediction::Values(rng.normal_vec(10, 1.0)),
    };
    println!("\npayload bytes per result (one record per message / 10 per message):");
    println!(
        "{:<28} {:>10} {:>10} {:>8}",
        "result", "postcard", "json", "ratio"
    );
    // Each message names its model as a device's does.
    let tag = |model: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("models/{model}/model.onnx"));
        let file = ModelFile::read(&path).unwrap();
        let sha = file.sha256();
        edgeinfer::schema::ModelTag::new(&sha, &edgeinfer::pipeline::model_version(&file, &sha))
    };
    for (name, rec, model) in [
        ("class (demo)", class, "demo"),
        ("10 values (seed MLP)", values, "seed-mlp"),
    ] {
        for n in [1usize, 10] {
            let b = ResultBatch {
                version: SCHEMA_VERSION,
                model: Some(tag(model)),
                device: "pi-042".into(),
                records: (0..n as u64)
                    .map(|i| ResultRecord {
                        source: None,
                        seq: rec.seq + i,
                        ..rec.clone()
                    })
                    .collect(),
            };
            let (p, j) = (b.to_postcard().len(), serde_json::to_vec(&b).unwrap().len());
            println!(
                "{:<28} {:>10.1} {:>10.1} {:>8.3}",
                format!("{name} x{n}"),
                p as f64 / n as f64,
                j as f64 / n as f64,
                p as f64 / j as f64
            );
        }
    }
}

/// Counts messages the way the MQTT sink forms them (records only).
struct MessageCount {
    records: u64,
    per_message: u64,
    pending: u64,
    messages: u64,
}

impl Sink for MessageCount {
    fn write(&mut self, _: &ResultRecord) -> Result<(), SinkError> {
        self.records += 1;
        self.pending += 1;
        if self.pending == self.per_message {
            self.messages += 1;
            self.pending = 0;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// One hour of the simulated machine (5 s normal / 5 s fault) classified
/// by the demo CNN 10 times a second (100 Hz sensor, hop 10).
fn messages_per_hour() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("\nMQTT messages per hour, 10 results/s (demo model, 100 Hz sensor, hop 10):");
    for (name, policy, per) in [
        ("every", "", 1),
        (
            "on_change + heartbeat 60 s",
            "on_change = true\nheartbeat_ms = 60000",
            1,
        ),
        ("batch 10 records", "", 10),
    ] {
        let text = format!(
            "[model]\npath = \"models/demo/model.onnx\"\n[source]\nkind = \"stdin\"\n[window]\nhop = 10\n[policy]\n{policy}\n"
        );
        let config = Config::parse(&text, "bench", root).unwrap();
        let file = ModelFile::read(&root.join("models/demo/model.onnx")).unwrap();
        let prepared = prepare(&config, &file, Some(3)).unwrap();
        let mut src = SimulatedSource::new(100.0, 3, SimMode::Alternate, 5.0, 3, false);
        let samples: Vec<Sample> = (0..360_000)
            .map(|_| src.next_sample().unwrap().unwrap())
            .collect();
        struct Shared(Arc<std::sync::Mutex<(u64, u64)>>, MessageCount);
        impl Sink for Shared {
            fn write(&mut self, r: &ResultRecord) -> Result<(), SinkError> {
                self.1.write(r)?;
                *self.0.lock().unwrap() = (self.1.records, self.1.messages);
                Ok(())
            }
            fn flush(&mut self) -> Result<(), SinkError> {
                Ok(())
            }
        }
        let counts = Arc::new(std::sync::Mutex::new((0, 0)));
        let sink = Shared(
            counts.clone(),
            MessageCount {
                records: 0,
                per_message: per,
                pending: 0,
                messages: 0,
            },
        );
        prepared
            .run(
                Box::new(MemorySource::new(samples, Some(3))),
                vec![Box::new(sink)],
                &RunOptions::default(),
            )
            .unwrap();
        let (records, messages) = *counts.lock().unwrap();
        println!(
            "{:<28} {:>8} records {:>8} messages",
            name, records, messages
        );
    }
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 2_000 } else { 100_000 };
    let broker = Broker::start_with(mosquitto_conf);
    let counter = Counter::connect(broker.port);
    let lines = csv_lines(n);
    println!(
        "`edgeinfer run`, seed MLP, results over MQTT at QoS 1 (inflight 64), {} broker, {n} samples:",
        if broker.is_mosquitto() { "Mosquitto" } else { "embedded" }
    );
    println!("{:<34} {:>14} {:>12}", "path", "results/s", "received");
    for batch in [1usize, 10, 100] {
        let (rate, got) = stdin_to_mqtt(broker.port, &counter, &lines, batch);
        println!(
            "{:<34} {:>14.0} {:>12}",
            format!("stdin -> MQTT, {batch} record(s)/msg"),
            rate,
            got
        );
    }
    for batch in [1usize, 100] {
        let (rate, got, summary, rss) = mqtt_to_mqtt(broker.port, &counter, &lines, batch);
        println!(
            "{:<34} {:>14.0} {:>12}   peak RSS {rss:.1} MiB; device: {summary}",
            format!("MQTT -> MQTT, {batch} record(s)/msg"),
            rate,
            got
        );
    }
    flood(broker.port, &counter, 10.0, if quick { 2.0 } else { 10.0 });
    let _ = counter.client.disconnect();
    payload_sizes();
    if !quick {
        messages_per_hour();
    }
}
