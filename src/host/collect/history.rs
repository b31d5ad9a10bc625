//! A device's stored history as `report` and its charts read it, and what
//! both derive from it (online spans, class names).

use std::collections::BTreeMap;

/// One stored result, as the report reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryResult {
    /// Device sequence number.
    pub seq: i64,
    /// Device timestamp, ms since the epoch.
    pub ts_ms: i64,
    /// Class index (classification, summary) or None.
    pub class: Option<i64>,
    /// Its label when known.
    pub label: Option<String>,
    /// Class score or anomaly score.
    pub score: Option<f64>,
    /// Regression values (empty otherwise).
    pub values: Vec<f64>,
}

/// One device's history.
#[derive(Debug, Clone, Default)]
pub struct DeviceHistory {
    /// Device id, as the device sent it (untrusted).
    pub id: String,
    /// Model name the device reported.
    pub model: Option<String>,
    /// SHA-256 of the device's model file.
    pub model_sha256: Option<String>,
    /// When the collector first heard from the device, ms since the epoch.
    pub first_seen_ms: i64,
    /// When the collector last heard from the device, ms since the epoch.
    pub last_seen_ms: i64,
    /// Results, ordered by seq.
    pub results: Vec<HistoryResult>,
    /// Redeliveries the collector dropped (QoS 1 duplicates).
    pub duplicates: u64,
    /// Status changes as (received ms, online), oldest first.
    pub status: Vec<(i64, bool)>,
    /// From the device's newest metrics (since the device last started): the raw sample bytes its
    /// sensors produced (samples x channels x 4). None if no metrics.
    pub raw_bytes: Option<u64>,
    /// From the same metrics: the bytes the device published. None if no metrics.
    pub published_bytes: Option<u64>,
    /// Errors the device reported (error topic) plus payloads the collector could not decode.
    pub errors: u64,
}

/// Online intervals clipped to [from, until]. The device counts as offline until its first
/// "online": without a status message we cannot claim it was up.
pub(super) fn online(status: &[(i64, bool)], from: i64, until: i64) -> Vec<(i64, i64)> {
    let mut sorted = status.to_vec();
    // Stable, so same-millisecond changes keep their arrival order.
    sorted.sort_by_key(|s| s.0);
    let mut out = Vec::new();
    let mut push = |a: i64, b: i64| {
        let (a, b) = (a.max(from), b.min(until));
        if b > a {
            out.push((a, b));
        }
    };
    let mut since = None;
    for (t, up) in sorted {
        match (up, since) {
            (true, None) => since = Some(t),
            (false, Some(s)) => {
                push(s, t);
                since = None;
            }
            _ => {}
        }
    }
    if let Some(s) = since {
        push(s, until);
    }
    out
}

/// Class index → label; results without a label borrow one another result gave for the class.
pub(super) fn class_names(results: &[HistoryResult]) -> BTreeMap<i64, String> {
    let mut names = BTreeMap::new();
    for r in results {
        if let (Some(c), Some(l)) = (r.class, &r.label) {
            names.entry(c).or_insert_with(|| l.clone());
        }
    }
    names
}
