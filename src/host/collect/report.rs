//! `edgeinfer-host report`: per-device charts and a markdown summary.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use super::chart::{chart_svg, fmt_utc};
use super::history::{class_names, online};
pub use super::history::{DeviceHistory, HistoryResult};
use crate::host::{write_file, HostError};

/// What the report found, for the caller to print and test.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceSummary {
    /// Device id (unsanitized).
    pub id: String,
    /// Number of stored results.
    pub results: u64,
    /// Lowest sequence number.
    pub first_seq: Option<i64>,
    /// Highest sequence number.
    pub last_seq: Option<i64>,
    /// Sequence numbers missing between first and last.
    pub missing: u64,
    /// The missing ranges (inclusive).
    pub missing_ranges: Vec<(i64, i64)>,
    /// Redeliveries the collector dropped.
    pub duplicates: u64,
    /// Time online within [first_seen, until_ms], from the status changes (an "online" with no later
    /// "offline" counts until until_ms).
    pub online_ms: i64,
    /// `online_ms` as a fraction of the span.
    pub online_fraction: f64,
    /// raw_bytes / published_bytes when both are known and published_bytes > 0.
    pub bytes_ratio: Option<f64>,
    /// Per label (or class index as text; or "values"), number of results, sorted by count desc then name.
    pub classes: Vec<(String, u64)>,
    /// Errors reported or undecodable payloads.
    pub errors: u64,
    /// File name of its chart in the out dir.
    pub chart: String,
}

/// Writes DIR/summary.md and one DIR/<sanitized id>.svg per device; returns the summaries in the order given.
pub fn write_report(
    devices: &[DeviceHistory],
    until_ms: i64,
    out: &Path,
) -> Result<Vec<DeviceSummary>, HostError> {
    std::fs::create_dir_all(out).map_err(|e| HostError::Output {
        file: out.display().to_string(),
        message: e.to_string(),
    })?;
    let mut used = HashSet::new();
    let mut summaries = Vec::with_capacity(devices.len());
    for d in devices {
        let s = summarize(d, until_ms, unique_name(&d.id, &mut used));
        let path = out.join(&s.chart);
        let svg = chart_svg(d, until_ms).map_err(|message| HostError::Output {
            file: path.display().to_string(),
            message,
        })?;
        write_file(&path, svg.as_bytes())?;
        summaries.push(s);
    }
    write_file(
        &out.join("summary.md"),
        markdown(devices, &summaries, until_ms).as_bytes(),
    )?;
    Ok(summaries)
}

/// A file name made only of [A-Za-z0-9._-], so an id from the network can neither leave the
/// directory nor hide as a dotfile; case-insensitively unique, for case-insensitive file systems.
fn unique_name(id: &str, used: &mut HashSet<String>) -> String {
    let mapped: String = id
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .take(64)
        .collect();
    let base = match mapped.trim_start_matches('.') {
        "" => "device",
        s => s,
    };
    let mut name = base.to_string();
    let mut n = 2;
    while !used.insert(name.to_lowercase()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    format!("{name}.svg")
}

fn summarize(d: &DeviceHistory, until_ms: i64, chart: String) -> DeviceSummary {
    let mut seqs: Vec<i64> = d.results.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let missing_ranges: Vec<(i64, i64)> = seqs
        .windows(2)
        .filter(|w| w[1] > w[0] + 1)
        .map(|w| (w[0] + 1, w[1] - 1))
        .collect();
    // i128: a range may span more than i64::MAX.
    let missing = missing_ranges
        .iter()
        .map(|&(a, b)| (b as i128 - a as i128 + 1) as u64)
        .fold(0u64, u64::saturating_add);
    let online_ms = online(&d.status, d.first_seen_ms, until_ms)
        .iter()
        .map(|&(a, b)| b.saturating_sub(a))
        .fold(0i64, i64::saturating_add);
    let span = until_ms.saturating_sub(d.first_seen_ms);
    let names = class_names(&d.results);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for r in &d.results {
        *counts.entry(class_key(r, &names)).or_default() += 1;
    }
    let mut classes: Vec<(String, u64)> = counts.into_iter().collect();
    classes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    DeviceSummary {
        id: d.id.clone(),
        results: d.results.len() as u64,
        first_seq: seqs.first().copied(),
        last_seq: seqs.last().copied(),
        missing,
        missing_ranges,
        duplicates: d.duplicates,
        online_ms,
        online_fraction: if span > 0 {
            (online_ms as f64 / span as f64).clamp(0.0, 1.0)
        } else {
            0.0
        },
        bytes_ratio: match (d.raw_bytes, d.published_bytes) {
            (Some(r), Some(p)) if p > 0 => Some(r as f64 / p as f64),
            _ => None,
        },
        classes,
        errors: d.errors,
        chart,
    }
}

fn class_key(r: &HistoryResult, names: &BTreeMap<i64, String>) -> String {
    match r.class {
        Some(c) => r
            .label
            .clone()
            .or_else(|| names.get(&c).cloned())
            .unwrap_or_else(|| c.to_string()),
        None if !r.values.is_empty() => "values".into(),
        None if r.score.is_some() => "score".into(),
        None => "empty".into(),
    }
}

/// Safe inside a markdown table cell, heading or link text: ids and labels come from the network.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '|' | '[' | ']' | '`' | '*' | '_' | '<' | '>' | '#' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn duration(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    match s {
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 7200.0 => format!("{:.1} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} d", s / 86_400.0),
    }
}

fn markdown(devices: &[DeviceHistory], summaries: &[DeviceSummary], until_ms: i64) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Fleet report\n");
    let _ = writeln!(
        m,
        "{} devices; online time counted until {} UTC. Raw / published compares the sensor \
         bytes a device sampled with the bytes it sent instead.\n",
        summaries.len(),
        fmt_utc(until_ms)
    );
    let _ = writeln!(
        m,
        "| device | results | missing | duplicates | online | raw / published | errors | top classes |\n\
         |---|---:|---:|---:|---:|---:|---:|---|"
    );
    let online_pct = |d: &DeviceHistory, s: &DeviceSummary| {
        if d.status.is_empty() {
            "–".to_string()
        } else {
            format!("{:.1} %", 100.0 * s.online_fraction)
        }
    };
    let ratio = |s: &DeviceSummary| s.bytes_ratio.map_or("–".into(), |r| format!("{r:.1}×"));
    for (d, s) in devices.iter().zip(summaries) {
        let top: Vec<String> = s
            .classes
            .iter()
            .take(3)
            .map(|(c, n)| format!("{} ({n})", md(c)))
            .collect();
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            md(&s.id),
            s.results,
            s.missing,
            s.duplicates,
            online_pct(d, s),
            ratio(s),
            s.errors,
            top.join(", ")
        );
    }
    for (d, s) in devices.iter().zip(summaries) {
        let _ = writeln!(m, "\n## {}\n", md(&s.id));
        if let Some(model) = &d.model {
            let sha = d.model_sha256.as_deref().map_or(String::new(), |h| {
                format!(" (sha256 {})", md(&h.chars().take(16).collect::<String>()))
            });
            let _ = writeln!(m, "- model: {}{sha}", md(model));
        }
        let _ = writeln!(
            m,
            "- seen: {} to {} UTC",
            fmt_utc(d.first_seen_ms),
            fmt_utc(d.last_seen_ms)
        );
        let seq = match (s.first_seq, s.last_seq) {
            (Some(a), Some(b)) => format!(", seq {a} to {b}"),
            _ => String::new(),
        };
        let _ = writeln!(m, "- results: {}{seq}", s.results);
        if s.missing > 0 {
            // Long outages would otherwise bury the rest of the section.
            let shown: Vec<String> = s
                .missing_ranges
                .iter()
                .take(10)
                .map(|&(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}–{b}")
                    }
                })
                .collect();
            let more = s.missing_ranges.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more ranges")
            } else {
                String::new()
            };
            let _ = writeln!(m, "- missing: {} ({}{more})", s.missing, shown.join(", "));
        }
        let _ = writeln!(m, "- duplicates dropped: {}", s.duplicates);
        if d.status.is_empty() {
            let _ = writeln!(m, "- online: no status messages");
        } else {
            let _ = writeln!(
                m,
                "- online: {} ({} of {})",
                online_pct(d, s),
                duration(s.online_ms),
                duration(until_ms.saturating_sub(d.first_seen_ms))
            );
        }
        match (d.raw_bytes, d.published_bytes) {
            (Some(r), Some(p)) => {
                let _ = writeln!(m, "- bytes: {r} raw, {p} published ({})", ratio(s));
            }
            _ => {
                let _ = writeln!(m, "- bytes: no metrics");
            }
        }
        let _ = writeln!(m, "- errors: {}", s.errors);
        if !s.classes.is_empty() {
            let _ = writeln!(m, "\n| class | results |\n|---|---:|");
            for (c, n) in &s.classes {
                let _ = writeln!(m, "| {} | {n} |", md(c));
            }
        }
        let _ = writeln!(m, "\n![{}]({})", md(&s.id), s.chart);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(seq: i64, class: Option<i64>, label: Option<&str>) -> HistoryResult {
        HistoryResult {
            seq,
            ts_ms: seq.saturating_mul(1000).saturating_add(1_700_000_000_000),
            class,
            label: label.map(String::from),
            score: Some(0.9),
            values: vec![],
        }
    }

    fn device(id: &str, results: Vec<HistoryResult>) -> DeviceHistory {
        DeviceHistory {
            id: id.into(),
            first_seen_ms: 1_700_000_000_000,
            last_seen_ms: 1_700_000_020_000,
            results,
            ..Default::default()
        }
    }

    fn svg(dir: &Path, s: &DeviceSummary) -> String {
        std::fs::read_to_string(dir.join(&s.chart)).unwrap_or_default()
    }

    #[test]
    fn gaps() {
        let seqs = [1, 2, 3, 7, 8, 12];
        let d = device("a", seqs.iter().map(|&s| res(s, Some(0), None)).collect());
        let s = summarize(&d, 1_700_000_030_000, "a.svg".into());
        assert_eq!(s.results, 6);
        assert_eq!((s.first_seq, s.last_seq), (Some(1), Some(12)));
        // 4..=6 and 9..=11: six numbers.
        assert_eq!(s.missing, 6);
        assert_eq!(s.missing_ranges, vec![(4, 6), (9, 11)]);
        let d = device(
            "b",
            vec![res(i64::MIN, None, None), res(i64::MAX, None, None)],
        );
        let s = summarize(&d, 0, "b.svg".into());
        assert_eq!(s.missing, u64::MAX - 1);
    }

    #[test]
    fn online_time() {
        let mut d = device("a", vec![]);
        d.first_seen_ms = 0;
        d.status = vec![(1000, true), (4000, false), (6000, true)];
        let s = summarize(&d, 10_000, String::new());
        assert_eq!(s.online_ms, 7000);
        assert!((s.online_fraction - 0.7).abs() < 1e-12);
        // A repeated "online" keeps the first start; changes before first_seen are clipped.
        d.first_seen_ms = 2000;
        d.status = vec![(1000, true), (3000, true), (4000, false), (5000, false)];
        let s = summarize(&d, 10_000, String::new());
        assert_eq!(s.online_ms, 2000);
        assert!((s.online_fraction - 0.25).abs() < 1e-12);
        d.status.clear();
        assert_eq!(summarize(&d, 10_000, String::new()).online_ms, 0);
    }

    #[test]
    fn bytes_ratio() {
        let mut d = device("a", vec![]);
        (d.raw_bytes, d.published_bytes) = (Some(12_000), Some(300));
        assert_eq!(summarize(&d, 0, String::new()).bytes_ratio, Some(40.0));
        d.published_bytes = Some(0);
        assert_eq!(summarize(&d, 0, String::new()).bytes_ratio, None);
        (d.raw_bytes, d.published_bytes) = (None, Some(300));
        assert_eq!(summarize(&d, 0, String::new()).bytes_ratio, None);
    }

    #[test]
    fn class_counts() {
        let d = device(
            "a",
            vec![
                res(1, Some(0), Some("idle")),
                res(2, Some(1), Some("walk")),
                res(3, Some(1), None),
                res(4, Some(1), Some("walk")),
                res(5, Some(0), Some("idle")),
                res(6, Some(2), None),
                res(7, Some(3), None),
            ],
        );
        let s = summarize(&d, 0, String::new());
        let want: Vec<(String, u64)> = [("walk", 3), ("idle", 2), ("2", 1), ("3", 1)]
            .map(|(c, n)| (c.to_string(), n))
            .to_vec();
        assert_eq!(s.classes, want);
    }

    #[test]
    fn hostile_ids_stay_inside_and_are_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new").join("report");
        let mut evil = device("../evil|id", vec![res(1, Some(0), Some("a|b\nc"))]);
        evil.status = vec![(1_700_000_000_000, true)];
        let devices = [
            evil,
            device("a/b", vec![]),
            device("A_b", vec![]),
            device("..", vec![]),
        ];
        let s = write_report(&devices, 1_700_000_030_000, &out).unwrap();
        let charts: Vec<&str> = s.iter().map(|s| s.chart.as_str()).collect();
        assert_eq!(
            charts,
            ["_evil_id.svg", "a_b.svg", "A_b-2.svg", "device.svg"]
        );
        for s in &s {
            assert!(svg(&out, s).contains("<svg"), "{}", s.chart);
        }
        assert!(!dir.path().join("new").join("evil_id.svg").exists());
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert!(md.contains("| ../evil\\|id | 1 |"), "{md}");
        assert!(!md.contains("evil|id"));
        assert!(md.contains("a\\|b c (1)"));
        assert!(md.contains("![../evil\\|id](_evil_id.svg)"));
    }

    #[test]
    fn no_results() {
        let dir = tempfile::tempdir().unwrap();
        let s = write_report(&[device("empty", vec![])], 1_700_000_030_000, dir.path()).unwrap();
        assert_eq!(s[0].results, 0);
        assert_eq!((s[0].first_seq, s[0].missing), (None, 0));
        assert!(s[0].classes.is_empty());
        let svg = svg(dir.path(), &s[0]);
        assert!(svg.contains("<svg") && svg.contains("no results"));
    }

    #[test]
    fn values_chart() {
        let dir = tempfile::tempdir().unwrap();
        let results: Vec<HistoryResult> = [1, 2, 3, 5, 6]
            .iter()
            .map(|&seq| HistoryResult {
                values: (0..10).map(|k| (seq * k) as f64).collect(),
                class: None,
                score: None,
                ..res(seq, None, None)
            })
            .collect();
        let mut d = device("v", results);
        d.results[1].values[0] = f64::NAN;
        d.status = vec![(1_700_000_002_000, true), (1_700_000_004_000, false)];
        let s = write_report(&[d], 1_700_000_030_000, dir.path()).unwrap();
        assert_eq!(s[0].classes, vec![("values".to_string(), 5)]);
        assert_eq!(s[0].missing_ranges, vec![(4, 4)]);
        let svg = svg(dir.path(), &s[0]);
        assert!(svg.contains("<svg") && svg.contains("value 7") && !svg.contains("value 8"));
        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(md.contains("- missing: 1 (4)"));
    }

    #[test]
    fn utc() {
        assert_eq!(fmt_utc(0), "1970-01-01 00:00:00");
        assert_eq!(fmt_utc(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(fmt_utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(fmt_utc(-1000), "1969-12-31 23:59:59");
    }
}
