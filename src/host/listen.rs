//! `edgeinfer-host listen` and `decode`: what devices publish, as JSON
//! lines, with sequence gaps and duplicates reported per device.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS, RecvTimeoutError};
use serde_json::{json, Map, Value};

use super::HostError;
use crate::schema::ResultBatch;

/// Decodes a result payload: postcard first (what devices send by default),
/// then the JSON encoding of the same batch.
pub fn decode_batch(bytes: &[u8]) -> Result<ResultBatch, String> {
    match ResultBatch::from_postcard(bytes) {
        Ok(b) => Ok(b),
        Err(pe) => serde_json::from_slice::<ResultBatch>(bytes)
            .map_err(|_| format!("neither a postcard nor a JSON result batch ({pe})")),
    }
}

/// `edgeinfer-host decode`: the records of one result payload read from
/// `file` (standard input when `None`), as [`batch_lines`] gives them.
pub fn decode_command(
    file: Option<&std::path::Path>,
    labels: &[String],
) -> Result<Vec<Value>, HostError> {
    let origin = file.map_or("stdin".into(), |f| f.display().to_string());
    let bad = |message: String| HostError::Input {
        file: origin.clone(),
        message,
    };
    let bytes = match file {
        Some(f) => std::fs::read(f).map_err(|e| bad(format!("cannot read: {e}")))?,
        None => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .map_err(|e| bad(format!("cannot read: {e}")))?;
            bytes
        }
    };
    let batch = decode_batch(&bytes).map_err(bad)?;
    Ok(batch_lines(&batch, labels))
}

/// One JSON object per record: `device`, `seq`, `ts_ms` and the result's
/// fields (class, label, score, values, ...).
pub fn batch_lines(batch: &ResultBatch, labels: &[String]) -> Vec<Value> {
    batch
        .records
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("device".into(), json!(batch.device));
            if let Value::Object(rest) = r.to_json(labels) {
                m.extend(rest);
            }
            Value::Object(m)
        })
        .collect()
}

/// Distinct records, duplicates and gaps per device.
#[derive(Debug, Default)]
pub struct Tracker {
    seen: BTreeMap<String, BTreeSet<u64>>,
    duplicates: BTreeMap<String, u64>,
}

impl Tracker {
    /// Notes a record; false when it is a duplicate (QoS 1 redelivery).
    pub fn note(&mut self, device: &str, seq: u64) -> bool {
        let fresh = self.seen.entry(device.into()).or_default().insert(seq);
        if !fresh {
            *self.duplicates.entry(device.into()).or_default() += 1;
        }
        fresh
    }

    /// Distinct records over every device.
    pub fn distinct(&self) -> usize {
        self.seen.values().map(BTreeSet::len).sum()
    }

    /// Per device: distinct records, duplicates, and the missing sequence
    /// numbers between the lowest and highest seen, as ranges.
    pub fn report(&self) -> Value {
        let devices: Map<String, Value> = self
            .seen
            .iter()
            .map(|(d, s)| {
                let mut missing = Vec::new();
                let mut prev: Option<u64> = None;
                for &q in s {
                    if let Some(p) = prev {
                        if q > p + 1 {
                            missing.push(json!([p + 1, q - 1]));
                        }
                    }
                    prev = Some(q);
                }
                let gap_count: u64 = missing
                    .iter()
                    .map(|r| r[1].as_u64().unwrap_or(0) - r[0].as_u64().unwrap_or(0) + 1)
                    .sum();
                (
                    d.clone(),
                    json!({
                        "records": s.len(),
                        "first_seq": s.first(),
                        "last_seq": s.last(),
                        "duplicates": self.duplicates.get(d).copied().unwrap_or(0),
                        "missing": gap_count,
                        "missing_ranges": missing,
                    }),
                )
            })
            .collect();
        Value::Object(devices)
    }
}

/// What to listen to.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// `mqtt://HOST[:PORT]`.
    pub broker: String,
    /// Topic filters.
    pub topics: Vec<String>,
    /// Exit 0 after this many distinct records.
    pub count: Option<usize>,
    /// Fail when `count` records (or, without a count, any) have not
    /// arrived in this time.
    pub timeout: Option<Duration>,
    /// MQTT client id (default `edgeinfer-host-<pid>`).
    pub client_id: Option<String>,
    /// Keep the session (clean session off) and subscribe at QoS 1, so
    /// what is published while away is delivered on return.
    pub persistent: bool,
}

/// The `info` topic next to a `result` filter, to learn class labels.
fn info_filter(filter: &str) -> Option<String> {
    filter.strip_suffix("/result").map(|p| format!("{p}/info"))
}

/// Client options for the host's commands: plain `mqtt://` (a local
/// bridge speaks TLS for them), 10 s keep-alive, 1 MiB packets.
pub(crate) fn mqtt_options(broker: &str, id: String) -> Result<MqttOptions, HostError> {
    let url = crate::mqtt::BrokerUrl::parse(broker).map_err(|e| HostError::Input {
        file: "--broker".into(),
        message: e.to_string(),
    })?;
    if url.tls {
        return Err(HostError::Usage(
            "--broker: edgeinfer-host speaks plain mqtt:// (use a local bridge for TLS)".into(),
        ));
    }
    let mut mo = MqttOptions::new(id, url.host.clone(), url.port);
    mo.set_keep_alive(Duration::from_secs(10));
    mo.set_max_packet_size(1 << 20, 1 << 20);
    Ok(mo)
}

/// The device segment and the kind (last segment) of a device topic.
pub(crate) fn topic_parts(topic: &str) -> (String, String) {
    let mut parts: Vec<&str> = topic.rsplitn(3, '/').collect();
    parts.resize(3, "");
    (parts[1].to_string(), parts[0].to_string())
}

/// Subscribes and prints JSON lines to `out` until the count, the timeout
/// or `stop`. Returns the per-device report.
pub fn listen(
    opts: &ListenOptions,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> Result<Value, HostError> {
    let id = opts
        .client_id
        .clone()
        .unwrap_or_else(|| format!("edgeinfer-host-{}", std::process::id()));
    let mut mo = mqtt_options(&opts.broker, id)?;
    mo.set_clean_session(!opts.persistent);
    let (client, mut conn) = Client::new(mo, 256);
    let mut filters = opts.topics.clone();
    for f in &opts.topics {
        if let Some(i) = info_filter(f) {
            if !filters.contains(&i) {
                filters.push(i);
            }
        }
    }
    let qos = if opts.persistent {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let start = Instant::now();
    let mut tracker = Tracker::default();
    let mut labels: HashMap<String, Vec<String>> = HashMap::new();
    let mut last_error = String::new();
    let mut subscribed = 0;
    let mut connected = false;
    let write_err = |e: std::io::Error| HostError::Output {
        file: "stdout".into(),
        message: e.to_string(),
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if opts.count.is_some_and(|n| tracker.distinct() >= n) {
            break;
        }
        if let Some(t) = opts.timeout {
            // Without a count, the timeout is how long to listen, and
            // hearing nothing in that time is the failure.
            if start.elapsed() >= t && opts.count.is_none() && tracker.distinct() > 0 {
                break;
            }
            if start.elapsed() >= t {
                let _ = client.disconnect();
                return Err(HostError::Mqtt(format!(
                    "timeout: {} of {} records after {:.1} s{}",
                    tracker.distinct(),
                    opts.count.map_or("any".into(), |n| n.to_string()),
                    t.as_secs_f64(),
                    if last_error.is_empty() {
                        String::new()
                    } else {
                        format!(" (last broker error: {last_error})")
                    }
                )));
            }
        }
        // Until connected, a short wait would abort each handshake that
        // takes longer (rumqttc connects inside the future it drops);
        // rumqttc's connection timeout (5 s) bounds the wait.
        let wait = if connected {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(30)
        };
        let event = match conn.recv_timeout(wait) {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                connected = false;
                last_error = e.to_string();
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let p = match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                connected = true;
                subscribed = 0;
                for f in &filters {
                    client
                        .try_subscribe(f.clone(), qos)
                        .map_err(|e| HostError::Mqtt(e.to_string()))?;
                }
                continue;
            }
            Event::Incoming(Packet::SubAck(_)) => {
                log::info!("subscribed");
                subscribed += 1;
                if subscribed == filters.len() {
                    // Scripts wait for this line before they publish.
                    eprintln!("listening on {}", opts.topics.join(" "));
                }
                continue;
            }
            Event::Incoming(Packet::Publish(p)) => p,
            _ => continue,
        };
        let (device, kind) = topic_parts(&p.topic);
        let wanted = opts.topics.iter().any(|f| rumqttc::matches(&p.topic, f));
        if kind == "info" {
            if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                if let Some(l) = v["labels"].as_array() {
                    let l = l
                        .iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect();
                    labels.insert(device.clone(), l);
                }
            }
        }
        if !wanted {
            continue;
        }
        if kind == "result" {
            match decode_batch(&p.payload) {
                Ok(batch) => {
                    let l = labels.get(&batch.device).cloned().unwrap_or_default();
                    for (rec, line) in batch.records.iter().zip(batch_lines(&batch, &l)) {
                        if tracker.note(&batch.device, rec.seq) {
                            writeln!(out, "{line}").map_err(write_err)?;
                        }
                    }
                }
                Err(e) => {
                    let line = json!({"device": device, "topic": p.topic, "error": e});
                    writeln!(out, "{line}").map_err(write_err)?;
                }
            }
        } else {
            let payload = serde_json::from_slice::<Value>(&p.payload)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&p.payload).into()));
            let line = json!({"device": device, "topic": kind, "payload": payload});
            writeln!(out, "{line}").map_err(write_err)?;
        }
        out.flush().map_err(write_err)?;
    }
    let _ = client.disconnect();
    // Let the DISCONNECT reach the broker, so a persistent session is kept
    // cleanly rather than ended by a dropped socket.
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        match conn.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Err(_) | Ok(Err(_)) => break,
            _ => {}
        }
    }
    Ok(tracker.report())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_topics_and_info_filters() {
        assert_eq!(
            topic_parts("edgeinfer/pump-7/result"),
            ("pump-7".into(), "result".into())
        );
        assert_eq!(
            info_filter("edgeinfer/+/result").unwrap(),
            "edgeinfer/+/info"
        );
    }

    #[test]
    fn tracker_counts_duplicates_and_gaps() {
        let mut t = Tracker::default();
        for q in [1, 2, 2, 5, 6, 9, 1] {
            t.note("d", q);
        }
        assert_eq!(t.distinct(), 5);
        let r = &t.report()["d"];
        assert_eq!(r["duplicates"], 2);
        assert_eq!(r["missing"], 4);
        assert_eq!(r["missing_ranges"], json!([[3, 4], [7, 8]]));
    }
}
