//! End to end through a local broker (Mosquitto when on PATH, else the
//! embedded one), QoS 1, the seed 10→20→10 MLP:
//!
//!     cargo bench --bench mqtt_e2e
//!
//! - sustained results per second from the first sample to the last PUBACK,
//!   and publish-to-PUBACK latency p50/p99, with and without batching;
//! - payload bytes per result, postcard vs JSON;
//! - MQTT messages per hour for a 10 Hz result stream under `every`,
//!   `on_change` + `heartbeat`, and `batch`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeinfer::config::{Encoding, SimMode};
use edgeinfer::mqtt::{Link, LinkSetup};
use edgeinfer::pipeline::{prepare, RunOptions};
use edgeinfer::rng::Rng;
use edgeinfer::schema::{ClassResult, Prediction, ResultBatch, ResultRecord, SCHEMA_VERSION};
use edgeinfer::sink::{MqttSink, MqttSinkConfig, Sink, SinkError};
use edgeinfer::source::{MemorySource, Sample, SimulatedSource, Source};
use edgeinfer::stats::percentile;
use edgeinfer::{Config, ModelFile};

fn broker() -> (u16, Option<std::process::Child>) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("mosquitto")
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok();
    if child.is_none() {
        edgeinfer::broker::spawn(format!("127.0.0.1:{port}").parse().unwrap()).unwrap();
    }
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    (port, child)
}

/// Results/s end to end and PUBACK latency (p50, p99) in µs.
fn end_to_end(port: u16, results: usize, batch: usize) -> (f64, u64, u64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[model]\npath = \"models/seed-mlp/model.onnx\"\n[source]\nkind = \"stdin\"\n\
         [window]\nsize = 1\nlayout = \"flat\"\n[policy]\nbatch_max_records = {batch}\n\
         [mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\ninflight = 64\n"
    );
    let config = Config::parse(&text, "bench", root).unwrap();
    let file = ModelFile::read(&root.join("models/seed-mlp/model.onnx")).unwrap();
    let prepared = prepare(&config, &file, Some(10)).unwrap();
    let mut outbox = config.outbox.clone();
    outbox.dir = Some(dir.path().join("outbox"));
    outbox.max_bytes = 1 << 30;
    let mut link = Link::start(LinkSetup {
        config: config.mqtt.clone().unwrap(),
        device_id: format!("bench{batch}"),
        base_dir: root.to_path_buf(),
        outbox,
        subscriptions: vec![],
        info: "{}".into(),
    })
    .unwrap();
    while !link.shared.connected.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut rng = Rng::new(1);
    let samples: Vec<Sample> = (0..results)
        .map(|i| Sample {
            ts_ms: i as u64,
            values: rng.normal_vec(10, 1.0),
        })
        .collect();
    let sink = MqttSink::new(
        link.shared.clone(),
        "bench",
        &MqttSinkConfig {
            encoding: Encoding::Postcard,
            batch_max_records: Some(batch),
            batch_max_ms: Some(5),
        },
        None,
    );
    let opts = RunOptions {
        count: None,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let t0 = Instant::now();
    prepared
        .run(
            Box::new(MemorySource::new(samples, Some(10))),
            vec![Box::new(sink)],
            &opts,
        )
        .unwrap();
    while !link.shared.outbox().is_empty() {
        std::thread::sleep(Duration::from_micros(200));
    }
    let rate = results as f64 / t0.elapsed().as_secs_f64();
    let lat: Vec<u64> = link
        .shared
        .counters
        .ack_latency_us
        .lock()
        .unwrap()
        .iter()
        .copied()
        .collect();
    link.close();
    (rate, percentile(&lat, 0.5), percentile(&lat, 0.99))
}

fn payload_sizes() {
    let class = ResultRecord {
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
        seq: 123_456,
        ts_ms: 1_795_939_319_843,
        result: Prediction::Values(rng.normal_vec(10, 1.0)),
    };
    println!("\npayload bytes per result (one record per message / 10 per message):");
    println!(
        "{:<28} {:>10} {:>10} {:>8}",
        "result", "postcard", "json", "ratio"
    );
    for (name, rec) in [("class (demo)", class), ("10 values (seed MLP)", values)] {
        for n in [1usize, 10] {
            let b = ResultBatch {
                version: SCHEMA_VERSION,
                device: "pi-042".into(),
                records: (0..n as u64)
                    .map(|i| ResultRecord {
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
    let results = if quick { 500 } else { 50_000 };
    let (port, child) = broker();
    println!("end to end through a local broker, QoS 1, seed MLP ({results} results):");
    println!(
        "{:<22} {:>12} {:>14} {:>14}",
        "batching", "results/s", "PUBACK p50 µs", "PUBACK p99 µs"
    );
    for batch in [1usize, 10, 100] {
        let (rate, p50, p99) = end_to_end(port, results, batch);
        println!(
            "{:<22} {:>12.0} {:>14} {:>14}",
            format!("{batch} record(s)/message"),
            rate,
            p50,
            p99
        );
    }
    payload_sizes();
    if !quick {
        messages_per_hour();
    }
    if let Some(mut c) = child {
        let _ = c.kill();
    }
}
