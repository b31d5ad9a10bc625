//! Reading the collected data back: `query` (rows as JSON lines or CSV),
//! the histories `report` draws, and the snapshot `dashboard` serves.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::history::{DeviceHistory, HistoryResult};
use super::store::{Store, StoreError, Val};

/// How `query` prints rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// A header line, then one comma-separated line per result.
    Csv,
}

/// `15s`, `10m`, `1h`, `2d` or plain seconds.
pub fn parse_since(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(format!("--since {s}: expected a number with s, m, h or d")),
    };
    match num.parse::<f64>() {
        Ok(n) if n >= 0.0 && n.is_finite() => Ok(Duration::from_secs_f64(n * scale)),
        _ => Err(format!("--since {s}: expected a number with s, m, h or d")),
    }
}

/// The columns `query` prints, in order.
pub const COLUMNS: [&str; 11] = [
    "device",
    "seq",
    "ts_ms",
    "model_sha256",
    "kind",
    "class",
    "label",
    "score",
    "detail",
    "bytes",
    "received_ms",
];

/// Each device's labels, to name results stored before its `info` came.
fn labels(store: &mut Store) -> Result<HashMap<String, Vec<String>>, StoreError> {
    Ok(store
        .query("SELECT id, labels FROM devices", &[])?
        .into_iter()
        .filter_map(|r| {
            let labels = serde_json::from_str(r[1].text()?).ok()?;
            Some((r[0].text()?.to_string(), labels))
        })
        .collect())
}

/// Results of one device (or all), with device time ≥ `since_ms`, in
/// device then sequence order. Labels missing at write time are filled
/// in from the device's `info` when it is known now.
pub fn results(
    store: &mut Store,
    device: Option<&str>,
    since_ms: Option<i64>,
) -> Result<Vec<Vec<Val>>, StoreError> {
    let labels = labels(store)?;
    let mut rows = store.query(
        &format!(
            "SELECT {} FROM results WHERE (CAST($1 AS TEXT) IS NULL OR device = $1) AND ts_ms >= $2 \
             ORDER BY device, seq",
            COLUMNS.join(", ")
        ),
        &[device.into(), since_ms.unwrap_or(i64::MIN).into()],
    )?;
    for r in &mut rows {
        if let (Val::Null, Some(class), Some(dev)) = (&r[6], r[5].int(), r[0].text()) {
            if let Some(l) = labels.get(dev).and_then(|l| l.get(class as usize)) {
                r[6] = Val::Text(l.clone());
            }
        }
    }
    Ok(rows)
}

fn csv_field(v: &Val) -> String {
    let s = match v {
        Val::Null => return String::new(),
        Val::Int(i) => return i.to_string(),
        Val::Real(f) => return f.to_string(),
        Val::Text(s) => s,
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.clone()
    }
}

/// Prints rows from [`results`].
pub fn write_rows(rows: &[Vec<Val>], format: Format, out: &mut dyn Write) -> std::io::Result<()> {
    match format {
        Format::Csv => {
            writeln!(out, "{}", COLUMNS.join(","))?;
            for r in rows {
                let line: Vec<String> = r.iter().map(csv_field).collect();
                writeln!(out, "{}", line.join(","))?;
            }
        }
        Format::Json => {
            for r in rows {
                let mut m = Map::new();
                for (c, v) in COLUMNS.iter().zip(r) {
                    let v = match (*c, v) {
                        // Stored as JSON text; printed as JSON.
                        ("detail", Val::Text(t)) => serde_json::from_str(t).unwrap_or(v.to_json()),
                        _ => v.to_json(),
                    };
                    m.insert((*c).into(), v);
                }
                writeln!(out, "{}", Value::Object(m))?;
            }
        }
    }
    out.flush()
}

fn values_of(detail: &Val) -> Vec<f64> {
    detail
        .text()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|v| {
            v["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
        })
        .unwrap_or_default()
}

/// Every device's history, for `report`.
pub fn histories(store: &mut Store) -> Result<Vec<DeviceHistory>, StoreError> {
    let devices = store.query(
        "SELECT id, model, model_sha256, first_seen_ms, last_seen_ms, duplicates \
         FROM devices ORDER BY id",
        &[],
    )?;
    let mut all_results: HashMap<String, Vec<HistoryResult>> = HashMap::new();
    for r in results(store, None, None)? {
        let dev = r[0].text().unwrap_or_default().to_string();
        all_results.entry(dev).or_default().push(HistoryResult {
            seq: r[1].int().unwrap_or(0),
            ts_ms: r[2].int().unwrap_or(0),
            class: r[5].int(),
            label: r[6].text().map(String::from),
            score: r[7].real(),
            values: values_of(&r[8]),
        });
    }
    let mut out = Vec::new();
    for d in devices {
        let id = d[0].text().unwrap_or_default().to_string();
        let status = store
            .query(
                "SELECT received_ms, online FROM status_events WHERE device = $1 \
                 ORDER BY received_ms",
                &[id.as_str().into()],
            )?
            .into_iter()
            .map(|r| (r[0].int().unwrap_or(0), r[1].int() == Some(1)))
            .collect();
        let metrics = store.query(
            "SELECT body FROM metrics WHERE device = $1 ORDER BY received_ms DESC LIMIT 1",
            &[id.as_str().into()],
        )?;
        let body: Value = metrics
            .first()
            .and_then(|r| r[0].text())
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        let errors = store
            .query(
                "SELECT COUNT(*) FROM errors WHERE device = $1",
                &[id.as_str().into()],
            )?
            .first()
            .and_then(|r| r[0].int())
            .unwrap_or(0);
        out.push(DeviceHistory {
            results: all_results.remove(&id).unwrap_or_default(),
            id,
            model: d[1].text().map(String::from),
            model_sha256: d[2].text().map(String::from),
            first_seen_ms: d[3].int().unwrap_or(0),
            last_seen_ms: d[4].int().unwrap_or(0),
            duplicates: d[5].int().unwrap_or(0).max(0) as u64,
            status,
            raw_bytes: body["bytes_in_sensor"].as_u64(),
            published_bytes: body["bytes_published"].as_u64(),
            errors: errors.max(0) as u64,
        });
    }
    Ok(out)
}

/// Results kept per device in a dashboard timeline.
const TIMELINE: i64 = 120;
/// The window the dashboard's rates are averaged over.
const RATE_WINDOW_MS: i64 = 60_000;

/// The fleet as the dashboard shows it (the JSON documented in
/// docs/collect.md).
pub fn fleet_snapshot(store: &mut Store, now_ms: i64) -> Result<Value, StoreError> {
    let since = now_ms - RATE_WINDOW_MS;
    let mut rates: HashMap<String, (i64, i64)> = HashMap::new();
    for r in store.query(
        "SELECT device, COUNT(*), CAST(SUM(bytes) AS BIGINT) FROM results \
         WHERE received_ms >= $1 GROUP BY device",
        &[since.into()],
    )? {
        rates.insert(
            r[0].text().unwrap_or_default().into(),
            (r[1].int().unwrap_or(0), r[2].int().unwrap_or(0)),
        );
    }
    let window_s = RATE_WINDOW_MS as f64 / 1000.0;
    let devices = store.query(
        "SELECT id, online, model, model_sha256, first_seen_ms, last_seen_ms, labels, results \
         FROM devices ORDER BY id",
        &[],
    )?;
    let mut list = Vec::new();
    let (mut online, mut total, mut rate, mut byte_rate) = (0, 0i64, 0.0, 0.0);
    for d in devices {
        let id = d[0].text().unwrap_or_default().to_string();
        let labels: Vec<String> = d[6]
            .text()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        let mut recent = store.query(
            "SELECT seq, ts_ms, class, label, score, detail FROM results WHERE device = $1 \
             ORDER BY seq DESC LIMIT $2",
            &[id.as_str().into(), TIMELINE.into()],
        )?;
        recent.reverse();
        let label_of = |r: &[Val]| {
            r[3].text()
                .map(String::from)
                .or_else(|| r[2].int().and_then(|c| labels.get(c as usize).cloned()))
        };
        let timeline: Vec<Value> = recent
            .iter()
            .map(|r| {
                let y = match r[2].int() {
                    Some(c) => json!(c),
                    None => r[4]
                        .real()
                        .map(|s| json!(s))
                        .or_else(|| values_of(&r[5]).first().map(|v| json!(v)))
                        .unwrap_or(Value::Null),
                };
                json!([r[1].to_json(), y, label_of(r)])
            })
            .collect();
        let last = recent.last().map(|r| {
            let values = values_of(&r[5]);
            json!({
                "seq": r[0].to_json(),
                "ts_ms": r[1].to_json(),
                "class": r[2].to_json(),
                "label": label_of(r),
                "score": r[4].to_json(),
                "values": if values.is_empty() { Value::Null } else { json!(values) },
            })
        });
        let state = d[1].int().map(|o| o == 1);
        if state == Some(true) {
            online += 1;
        }
        // Counted as stored: a COUNT(*) over every result of a long
        // history, every refresh, would not stay cheap.
        let n = d[7].int().unwrap_or(0);
        let (recent_n, recent_bytes) = rates.get(&id).copied().unwrap_or((0, 0));
        total += n;
        rate += recent_n as f64 / window_s;
        byte_rate += recent_bytes as f64 / window_s;
        list.push(json!({
            "id": id,
            "online": state,
            "model": d[2].to_json(),
            "model_sha256": d[3].to_json(),
            "first_seen_ms": d[4].to_json(),
            "last_seen_ms": d[5].to_json(),
            "results": n,
            "results_per_s": recent_n as f64 / window_s,
            "bytes_per_s": recent_bytes as f64 / window_s,
            "last": last,
            "timeline": timeline,
        }));
    }
    Ok(json!({
        "now_ms": now_ms,
        "error": null,
        "totals": {
            "devices": list.len(),
            "online": online,
            "results": total,
            "results_per_s": rate,
            "bytes_per_s": byte_rate,
        },
        "devices": list,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_units() {
        assert_eq!(parse_since("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_since("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_since("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_since("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_since("1w").is_err());
        assert!(parse_since("-1h").is_err());
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field(&Val::Text("a,b".into())), "\"a,b\"");
        assert_eq!(
            csv_field(&Val::Text("say \"hi\"".into())),
            "\"say \"\"hi\"\"\""
        );
        assert_eq!(csv_field(&Val::Null), "");
        assert_eq!(csv_field(&Val::Int(-3)), "-3");
    }
}
