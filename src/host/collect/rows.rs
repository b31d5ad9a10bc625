//! Device messages into rows: decoding what arrives on each topic, and
//! writing a batch of messages in one transaction (the SQL is shared by
//! SQLite and PostgreSQL, see `store.rs`).

use std::collections::{BTreeMap, HashMap};

use rumqttc::Publish;
use serde_json::{json, Value};

use super::store::{Store, StoreError};
use crate::host::listen::{decode_batch, topic_parts};
use crate::schema::{Prediction, ResultBatch};

/// The device's labels and model, from its retained `info`.
#[derive(Debug, Clone, Default)]
pub(super) struct DeviceInfo {
    labels: Vec<String>,
    model_sha256: Option<String>,
}

/// One message, decoded.
pub(super) enum Item {
    Results {
        batch: ResultBatch,
        bytes: usize,
    },
    Status {
        device: String,
        online: bool,
    },
    Info {
        device: String,
        info: Value,
    },
    Metrics {
        device: String,
        body: Value,
    },
    Error {
        device: String,
        ts_ms: Option<i64>,
        source: &'static str,
        reason: String,
    },
}

impl Item {
    /// The device the message is from.
    fn device(&self) -> &str {
        match self {
            Item::Results { batch, .. } => &batch.device,
            Item::Status { device, .. }
            | Item::Info { device, .. }
            | Item::Metrics { device, .. }
            | Item::Error { device, .. } => device,
        }
    }
}

fn now_ms() -> i64 {
    crate::clock::now_ms() as i64
}

pub(super) fn decode(p: &Publish) -> Item {
    let (device, kind) = topic_parts(&p.topic);
    let text = || String::from_utf8_lossy(&p.payload).trim().to_string();
    let bad = |device: String, reason: String| Item::Error {
        device,
        ts_ms: None,
        source: "collector",
        reason: format!("{}: {reason}", p.topic),
    };
    match kind.as_str() {
        "result" => match decode_batch(&p.payload) {
            // The topic names the device, as for its other messages: the
            // broker's ACLs guard topics, not the id inside a payload.
            Ok(batch) => Item::Results {
                batch: ResultBatch { device, ..batch },
                bytes: p.payload.len(),
            },
            Err(e) => bad(device, e),
        },
        "status" => match text().as_str() {
            "online" => Item::Status {
                device,
                online: true,
            },
            "offline" => Item::Status {
                device,
                online: false,
            },
            other => bad(
                device,
                format!("status {other:?}: expected online or offline"),
            ),
        },
        "info" | "metrics" | "error" => match serde_json::from_slice::<Value>(&p.payload) {
            Ok(v) if v.is_object() => match kind.as_str() {
                "info" => Item::Info { device, info: v },
                "metrics" => Item::Metrics { device, body: v },
                _ => Item::Error {
                    device,
                    ts_ms: v["ts_ms"].as_i64(),
                    source: "device",
                    // Bounded: it is indexed, and read by people.
                    reason: v["reason"]
                        .as_str()
                        .map_or_else(|| v.to_string(), String::from)
                        .chars()
                        .take(1000)
                        .collect(),
                },
            },
            _ => bad(device, "expected a JSON object".into()),
        },
        _ => bad(device, "not a device topic".into()),
    }
}

/// Writes one decoded batch of messages in one transaction; returns the
/// (new, duplicate) result counts.
pub(super) fn write(
    store: &mut Store,
    items: &[(Item, bool)],
    infos: &mut HashMap<String, DeviceInfo>,
) -> Result<(u64, u64), StoreError> {
    store.begin()?;
    match write_items(store, items, infos) {
        Ok(n) => {
            store.commit()?;
            Ok(n)
        }
        Err(e) => {
            let _ = store.rollback();
            Err(e)
        }
    }
}

const SEEN: &str = "INSERT INTO devices (id, first_seen_ms, last_seen_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (id) DO UPDATE SET last_seen_ms = CASE WHEN excluded.last_seen_ms > \
     devices.last_seen_ms THEN excluded.last_seen_ms ELSE devices.last_seen_ms END";

const RESULT: &str = "INSERT INTO results (device, seq, ts_ms, model_sha256, kind, class, label, \
     score, detail, bytes, received_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (device, seq) DO NOTHING";

fn write_items(
    store: &mut Store,
    items: &[(Item, bool)],
    infos: &mut HashMap<String, DeviceInfo>,
) -> Result<(u64, u64), StoreError> {
    let now = now_ms();
    let (mut fresh, mut dup) = (0u64, 0u64);
    // Per device: (results stored, duplicates dropped).
    let mut counts: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    // Every device row this transaction touches, locked first and in one
    // order: collectors sharing a PostgreSQL database would otherwise
    // deadlock on each other's rows.
    let mut seen: BTreeMap<&str, i64> = BTreeMap::new();
    for (item, retained) in items {
        // A retained message may be old: it makes a device known, not
        // recently seen.
        let at = if *retained { 0 } else { now };
        let e = seen.entry(item.device()).or_insert(at);
        *e = (*e).max(at);
    }
    for (device, at) in &seen {
        store.execute(SEEN, &[(*device).into(), now.into(), (*at).into()])?;
    }
    for (item, _) in items {
        match item {
            Item::Results { batch, bytes } => {
                let info = infos.get(&batch.device).cloned().unwrap_or_default();
                let share = (*bytes / batch.records.len().max(1)) as i64;
                for r in &batch.records {
                    let (kind, class, score) = match &r.result {
                        Prediction::Class(c) => ("class", Some(c.class as i64), Some(c.score)),
                        Prediction::Values(_) => ("values", None, None),
                        Prediction::Anomaly(a) => ("anomaly", None, Some(a.score)),
                        Prediction::Detections(d) => (
                            "detections",
                            d.first().map(|d| d.class as i64),
                            d.first().map(|d| d.score),
                        ),
                        Prediction::Summary(s) => (
                            "summary",
                            s.class_counts
                                .iter()
                                .max_by_key(|(_, n)| *n)
                                .map(|(c, _)| *c as i64),
                            None,
                        ),
                    };
                    let label = class.and_then(|c| info.labels.get(c as usize).cloned());
                    let mut detail = r.to_json(&info.labels);
                    if let Some(m) = detail.as_object_mut() {
                        for k in ["seq", "ts_ms", "class", "label", "score"] {
                            m.remove(k);
                        }
                    }
                    let n = store.execute(
                        RESULT,
                        &[
                            batch.device.as_str().into(),
                            r.seq.into(),
                            r.ts_ms.into(),
                            info.model_sha256.clone().into(),
                            kind.into(),
                            class.into(),
                            label.into(),
                            score.map(f64::from).into(),
                            detail.to_string().into(),
                            share.into(),
                            now.into(),
                        ],
                    )?;
                    let c = counts.entry(batch.device.as_str()).or_default();
                    if n == 1 {
                        fresh += 1;
                        c.0 += 1;
                    } else {
                        dup += 1;
                        c.1 += 1;
                    }
                }
            }
            Item::Status { device, online } => {
                let current = store.query(
                    "SELECT online FROM devices WHERE id = $1",
                    &[device.as_str().into()],
                )?;
                let was = current.first().and_then(|r| r[0].int());
                let online = i64::from(*online);
                if was != Some(online) {
                    store.execute(
                        "INSERT INTO status_events (device, received_ms, online) VALUES ($1, $2, $3)",
                        &[device.as_str().into(), now.into(), online.into()],
                    )?;
                    store.execute(
                        "UPDATE devices SET online = $2, status_ms = $3 WHERE id = $1",
                        &[device.as_str().into(), online.into(), now.into()],
                    )?;
                }
            }
            Item::Info { device, info } => {
                let labels: Vec<String> = info["labels"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            // As Val does for every text column.
                            .filter_map(|s| s.as_str().map(|s| s.replace('\0', "\u{fffd}")))
                            .collect()
                    })
                    .unwrap_or_default();
                let sha = info["model_sha256"].as_str().map(String::from);
                store.execute(
                    "UPDATE devices SET model = $2, model_sha256 = $3, model_version = $4, \
                     labels = $5, info = $6 WHERE id = $1",
                    &[
                        device.as_str().into(),
                        info["model"].as_str().into(),
                        sha.clone().into(),
                        info["model_version"].as_str().into(),
                        json!(labels).to_string().into(),
                        info.to_string().into(),
                    ],
                )?;
                infos.insert(
                    device.clone(),
                    DeviceInfo {
                        labels,
                        model_sha256: sha,
                    },
                );
            }
            Item::Metrics { device, body } => {
                store.execute(
                    // A redelivered message is the same (device, ts_ms).
                    "INSERT INTO metrics (device, received_ms, ts_ms, body) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                    &[
                        device.as_str().into(),
                        now.into(),
                        body["ts_ms"].as_i64().into(),
                        body.to_string().into(),
                    ],
                )?;
            }
            Item::Error {
                device,
                ts_ms,
                source,
                reason,
            } => {
                store.execute(
                    "INSERT INTO errors (device, received_ms, ts_ms, source, reason) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[
                        device.as_str().into(),
                        now.into(),
                        (*ts_ms).into(),
                        (*source).into(),
                        reason.as_str().into(),
                    ],
                )?;
            }
        }
    }
    for (device, (stored, dropped)) in counts {
        store.execute(
            "UPDATE devices SET results = results + $2, duplicates = duplicates + $3 WHERE id = $1",
            &[device.into(), stored.into(), dropped.into()],
        )?;
    }
    Ok((fresh, dup))
}

/// Labels and models of the devices already in the database, so results
/// that arrive before this run has seen an `info` still get labels.
pub(super) fn known_infos(store: &mut Store) -> Result<HashMap<String, DeviceInfo>, StoreError> {
    let rows = store.query("SELECT id, labels, model_sha256 FROM devices", &[])?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let id = r[0].text()?.to_string();
            let labels = r[1]
                .text()
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_default();
            let model_sha256 = r[2].text().map(String::from);
            Some((
                id,
                DeviceInfo {
                    labels,
                    model_sha256,
                },
            ))
        })
        .collect())
}
