//! `edgeinfer-host fleet-sim`: many simulated devices on one broker, each
//! publishing what a real one does (retained `online` status with an
//! `offline` Last Will, retained `info`, postcard result batches at QoS 1
//! with sequence numbers, periodic metrics), so collection can be
//! load-tested without the boards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, LastWill, Outgoing, Packet, QoS, RecvTimeoutError};
use serde_json::json;
use sha2::Digest;

use crate::host::listen::mqtt_options;
use crate::host::HostError;
use crate::rng::Rng;
use crate::schema::{ClassResult, Prediction, ResultBatch, ResultRecord, SCHEMA_VERSION};

/// The simulated fleet.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// `mqtt://HOST[:PORT]`.
    pub broker: String,
    /// Number of devices (`sim-001`, `sim-002`, ...).
    pub devices: usize,
    /// Result messages per second per device.
    pub rate: f64,
    /// Records per result message.
    pub batch: usize,
    /// How long to publish.
    pub seconds: f64,
    /// Topic prefix before the device id.
    pub prefix: String,
    /// Seconds between metrics messages.
    pub metrics_every: f64,
    /// First device number, so several simulators can share a broker.
    pub first: usize,
}

/// What the simulated fleet sent.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SimSummary {
    /// Devices simulated.
    pub devices: usize,
    /// Result messages published and acknowledged by the broker.
    pub messages: u64,
    /// Result records in them.
    pub results: u64,
    /// Payload bytes of those messages.
    pub bytes: u64,
    /// Devices that did not get every message acknowledged in time.
    pub incomplete: Vec<String>,
}

/// The labels every simulated device reports.
pub const LABELS: [&str; 3] = ["idle", "run", "fault"];

/// One simulated device's id.
pub fn device_id(n: usize) -> String {
    format!("sim-{n:03}")
}

/// Runs the fleet until `seconds` have passed (or `stop`), then waits for
/// the broker to acknowledge everything and disconnects cleanly.
pub fn fleet_sim(opts: &SimOptions, stop: &AtomicBool) -> Result<SimSummary, HostError> {
    if opts.devices == 0 || !(opts.rate > 0.0 && opts.rate.is_finite()) || opts.batch == 0 {
        return Err(HostError::Usage(
            "fleet-sim: expected --devices ≥ 1, --rate > 0 and --batch ≥ 1".into(),
        ));
    }
    // Fail on a bad URL here, once, not in every thread.
    mqtt_options(&opts.broker, "check".into())?;
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..opts.devices)
            .map(|i| {
                let n = opts.first + i;
                s.spawn(move || device(opts, n, stop))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(HostError::Mqtt("device thread".into())))
            })
            .collect::<Vec<_>>()
    });
    let mut summary = SimSummary {
        devices: opts.devices,
        ..SimSummary::default()
    };
    for r in results {
        let d = r?;
        summary.messages += d.messages;
        summary.results += d.results;
        summary.bytes += d.bytes;
        if !d.complete {
            summary.incomplete.push(d.id);
        }
    }
    Ok(summary)
}

struct DeviceRun {
    id: String,
    messages: u64,
    results: u64,
    bytes: u64,
    complete: bool,
}

fn device(opts: &SimOptions, n: usize, stop: &AtomicBool) -> Result<DeviceRun, HostError> {
    let id = device_id(n);
    let base = format!("{}/{id}", opts.prefix);
    let mut mo = mqtt_options(&opts.broker, format!("fleet-sim-{id}"))?;
    mo.set_last_will(LastWill::new(
        format!("{base}/status"),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    mo.set_inflight(1000);
    let (client, mut conn) = Client::new(mo, 4096);
    let mut rng = Rng::new(0x5eed ^ n as u64);
    let period = Duration::from_secs_f64(1.0 / opts.rate);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(opts.seconds.max(0.0));
    let mut next = start;
    let mut next_metrics = start + Duration::from_secs_f64(opts.metrics_every);
    let (mut seq, mut state) = (0u64, 0u32);
    // Result messages sent; other acknowledged messages (retained status
    // and info, again at each reconnect); acks received.
    let (mut sent, mut extra, mut acked, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut connected = false;
    let info = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "device": id,
        "schema_version": SCHEMA_VERSION,
        "encoding": "postcard",
        "model": "fleet-sim.onnx",
        // Three model versions across the fleet, as during a rollout.
        "model_sha256": crate::model::hex(&sha2::Sha256::digest(format!("fleet-sim model {}", n % 3))),
        "inputs": [[1, 3, 16]],
        "outputs": [[1, 3]],
        "labels": LABELS,
        "window": {"size": 16, "hop": 16, "channels": 3, "layout": "ncw"},
    })
    .to_string();
    // The broker's acknowledgement of the last result, with a grace
    // period after the end for slow brokers.
    let deadline = end + Duration::from_secs(30);
    loop {
        let now = Instant::now();
        let publishing = now < end && !stop.load(Ordering::Relaxed);
        if !publishing && acked >= sent + extra {
            break;
        }
        if !publishing && now > deadline {
            break;
        }
        if connected && publishing && now >= next {
            let ts = crate::clock::now_ms();
            let records = (0..opts.batch)
                .map(|_| {
                    // A machine that mostly idles, sometimes runs, rarely faults.
                    let u = rng.uniform();
                    state = match (state, u) {
                        (_, u) if u < 0.01 => 2,
                        (0, u) if u < 0.1 => 1,
                        (1, u) if u < 0.1 => 0,
                        (2, _) => 0,
                        (s, _) => s,
                    };
                    seq += 1;
                    let score = rng.range(0.6, 0.99) as f32;
                    ResultRecord {
                        source: None,
                        seq,
                        ts_ms: ts,
                        result: Prediction::Class(ClassResult {
                            class: state,
                            score,
                            top: vec![(state, score)],
                        }),
                    }
                })
                .collect();
            let payload = ResultBatch {
                version: SCHEMA_VERSION,
                device: id.clone(),
                records,
                model: None,
            }
            .to_postcard();
            let len = payload.len() as u64;
            if client
                .try_publish(format!("{base}/result"), QoS::AtLeastOnce, false, payload)
                .is_ok()
            {
                sent += 1;
                bytes += len;
                next += period;
            } else {
                // The request queue is full: the broker is behind; the
                // same records go out on the next turn.
                seq -= opts.batch as u64;
            }
        }
        if connected && publishing && now >= next_metrics {
            let results = seq;
            let metrics = json!({
                "ts_ms": crate::clock::now_ms(),
                "samples": results * 16,
                "inferences": results,
                "results": results,
                "bytes_in_sensor": results * 16 * 3 * 4,
                "bytes_published": bytes,
                "published": sent,
                "acked": acked,
            });
            let _ = client.try_publish(
                format!("{base}/metrics"),
                QoS::AtMostOnce,
                false,
                metrics.to_string(),
            );
            next_metrics += Duration::from_secs_f64(opts.metrics_every);
        }
        let wait = if connected {
            next.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20))
        } else {
            // Cutting the wait short would abort the handshake in progress
            // (rumqttc connects inside the future a timeout drops).
            Duration::from_secs(30)
        };
        match conn.recv_timeout(wait) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                connected = true;
                let _ =
                    client.try_publish(format!("{base}/status"), QoS::AtLeastOnce, true, "online");
                let _ = client.try_publish(
                    format!("{base}/info"),
                    QoS::AtLeastOnce,
                    true,
                    info.clone(),
                );
                // The two retained messages are acknowledged too.
                extra += 2;
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Err(e)) => {
                connected = false;
                log::warn!("{id}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let complete = acked >= sent + extra;
    // A clean exit says offline, as a device's does.
    let _ = client.try_publish(format!("{base}/status"), QoS::AtLeastOnce, true, "offline");
    let until = Instant::now() + Duration::from_secs(2);
    let mut offline_acked = false;
    while Instant::now() < until && !offline_acked {
        if let Ok(Ok(Event::Incoming(Packet::PubAck(_)))) =
            conn.recv_timeout(Duration::from_millis(50))
        {
            offline_acked = true;
        }
    }
    let _ = client.disconnect();
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        match conn.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Err(_) | Ok(Err(_)) => break,
            _ => {}
        }
    }
    Ok(DeviceRun {
        id,
        messages: sent,
        results: sent * opts.batch as u64,
        bytes,
        complete,
    })
}
