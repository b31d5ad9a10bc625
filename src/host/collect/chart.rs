//! The per-device chart of `edgeinfer-host report`: classes or values
//! over time, with offline spans and sequence gaps shaded (plotters, SVG).

use plotters::coord::Shift;
use plotters::prelude::*;

use super::history::{class_names, online, DeviceHistory, HistoryResult};

/// What a chart's y axis shows.
enum Kind {
    Classes,
    Values(usize),
    Score,
    Empty,
}

impl Kind {
    fn of(results: &[HistoryResult]) -> Self {
        if results.iter().any(|r| r.class.is_some()) {
            Kind::Classes
        } else if let Some(n) = results
            .iter()
            .map(|r| r.values.len())
            .max()
            .filter(|&n| n > 0)
        {
            // More lines than this are unreadable.
            Kind::Values(n.min(8))
        } else if results.iter().any(|r| r.score.is_some()) {
            Kind::Score
        } else {
            Kind::Empty
        }
    }

    /// Value of line `k` of a result, for the line kinds.
    fn value(&self, r: &HistoryResult, k: usize) -> Option<f64> {
        match self {
            Kind::Values(_) => r.values.get(k).copied(),
            Kind::Score => r.score,
            _ => None,
        }
        .filter(|v| v.is_finite())
    }
}

const SIZE: (u32, u32) = (960, 360);

/// Renders into a string so a failed write surfaces as one `HostError::Output`.
pub(super) fn chart_svg(d: &DeviceHistory, until_ms: i64) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        draw(&root, d, until_ms).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    d: &DeviceHistory,
    until_ms: i64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let mut rs: Vec<&HistoryResult> = d.results.iter().collect();
    rs.sort_by_key(|r| (r.seq, r.ts_ms));
    // Runs of consecutive seqs: lines break between runs, so a gap shows as one.
    let mut runs: Vec<&[&HistoryResult]> = Vec::new();
    let mut start = 0;
    for i in 1..=rs.len() {
        if i == rs.len() || rs[i].seq > rs[i - 1].seq.saturating_add(1) {
            runs.push(&rs[start..i]);
            start = i;
        }
    }
    let ts = rs.iter().map(|r| r.ts_ms);
    let x0 = ts.clone().fold(d.first_seen_ms, i64::min);
    // The chart ends where the device's history does; only a device that
    // is online now runs to `until_ms`. A device gone for days would
    // otherwise be a sliver of data beside a long grey band.
    let last_status = d.status.last().copied();
    let end = match last_status {
        Some((_, true)) => until_ms,
        Some((at, false)) => at,
        None => d.last_seen_ms,
    };
    let x1 = ts.fold(end.max(d.last_seen_ms), i64::max);
    let (x0, x1) = (x0 as f64, (x1 as f64).max(x0 as f64 + 1000.0));
    let span_ms = x1 - x0;

    let kind = Kind::of(&d.results);
    let names = class_names(&d.results);
    let classes: Vec<i64> = {
        let mut c: Vec<i64> = rs.iter().filter_map(|r| r.class).collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    let (y0, y1) = match kind {
        Kind::Classes => (
            *classes.first().unwrap_or(&0) as f64 - 0.5,
            *classes.last().unwrap_or(&0) as f64 + 0.5,
        ),
        Kind::Values(n) => {
            let vals = rs
                .iter()
                .flat_map(|r| (0..n).filter_map(|k| kind.value(r, k)));
            padded(vals)
        }
        Kind::Score => padded(rs.iter().filter_map(|r| kind.value(r, 0))),
        Kind::Empty => (0.0, 1.0),
    };
    let class_name = |c: i64| {
        let n = names.get(&c).cloned().unwrap_or_else(|| c.to_string());
        svg_text(&n, 20)
    };
    let label_width = classes
        .iter()
        .map(|&c| class_name(c).chars().count() as u32)
        .max()
        .unwrap_or(4);
    let title = match &d.model {
        Some(m) => format!("{} ({})", svg_text(&d.id, 60), svg_text(m, 40)),
        None => svg_text(&d.id, 60),
    };
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size((label_width * 8 + 20).clamp(48, 180))
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let class_span = classes.last().zip(classes.first()).map_or(1, |(hi, lo)| {
        (hi.saturating_sub(*lo)).clamp(0, 22) as usize + 2
    });
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&|v| tick(*v as i64, span_ms))
        .x_desc(format!("UTC, from {}", fmt_utc(x0 as i64)))
        .y_labels(if matches!(kind, Kind::Classes) {
            class_span
        } else {
            8
        })
        .y_label_formatter(&|v| match kind {
            Kind::Classes if (v - v.round()).abs() < 1e-6 => class_name(v.round() as i64),
            Kind::Classes | Kind::Empty => String::new(),
            _ => {
                let t = format!("{v:.3}");
                t.trim_end_matches('0').trim_end_matches('.').to_string()
            }
        })
        .y_desc(match kind {
            Kind::Classes => "class",
            Kind::Values(_) => "value",
            Kind::Score => "score",
            Kind::Empty => "",
        })
        .draw()?;

    // Bands first, so the data is drawn over them.
    let band = |a: f64, b: f64, colour: RGBAColor| {
        Rectangle::new([(a.max(x0), y0), (b.min(x1), y1)], colour.filled())
    };
    if !d.status.is_empty() {
        let mut offline = Vec::new();
        let mut at = d.first_seen_ms;
        for (a, b) in online(&d.status, d.first_seen_ms, until_ms) {
            offline.push((at, a));
            at = b;
        }
        offline.push((at, until_ms));
        chart.draw_series(
            offline
                .into_iter()
                .filter(|(a, b)| b > a)
                .map(|(a, b)| band(a as f64, b as f64, RGBColor(160, 160, 160).mix(0.35))),
        )?;
    }
    chart.draw_series(runs.windows(2).filter_map(|w| {
        let (a, b) = (w[0].last()?.ts_ms as f64, w[1].first()?.ts_ms as f64);
        Some(band(a.min(b), a.max(b), RED.mix(0.15)))
    }))?;

    match kind {
        Kind::Classes => {
            for run in &runs {
                let pts: Vec<(f64, f64)> = run
                    .iter()
                    .filter_map(|r| Some((r.ts_ms as f64, r.class? as f64)))
                    .collect();
                let steps = pts.windows(2).flat_map(|w| [w[0], (w[1].0, w[0].1), w[1]]);
                chart.draw_series(LineSeries::new(steps, RGBColor(150, 150, 150)))?;
            }
            chart.draw_series(rs.iter().filter_map(|r| {
                let c = r.class?;
                let i = classes.binary_search(&c).unwrap_or(0);
                // Past Palette99's red, the colour of the missing-seq band.
                Some(Circle::new(
                    (r.ts_ms as f64, c as f64),
                    3,
                    Palette99::pick(i + 3).filled(),
                ))
            }))?;
        }
        Kind::Values(_) | Kind::Score => {
            let lines = if let Kind::Values(n) = kind { n } else { 1 };
            for k in 0..lines {
                // Past Palette99's red, as for classes.
                let style = Palette99::pick(k + 3).stroke_width(2);
                let mut labelled = false;
                for run in &runs {
                    // A missing or non-finite value breaks the line as a seq gap does.
                    for seg in run.split(|r| kind.value(r, k).is_none()) {
                        let pts = seg
                            .iter()
                            .filter_map(|r| Some((r.ts_ms as f64, kind.value(r, k)?)));
                        let anno = chart.draw_series(LineSeries::new(pts, style))?;
                        if !labelled && lines > 1 {
                            anno.label(format!("value {k}")).legend(move |(x, y)| {
                                PathElement::new([(x, y), (x + 16, y)], style)
                            });
                            labelled = true;
                        }
                    }
                }
                chart.draw_series(rs.iter().filter_map(|r| {
                    Some(Circle::new(
                        (r.ts_ms as f64, kind.value(r, k)?),
                        2,
                        style.color.filled(),
                    ))
                }))?;
            }
            if lines > 1 {
                chart
                    .configure_series_labels()
                    .border_style(BLACK)
                    .background_style(WHITE.mix(0.8))
                    .draw()?;
            }
        }
        Kind::Empty => {
            let note = if d.results.is_empty() {
                "no results"
            } else {
                "no plottable results"
            };
            root.draw(&Text::new(
                note,
                (SIZE.0 as i32 / 2 - 40, SIZE.1 as i32 / 2),
                ("sans-serif", 16).into_font(),
            ))?;
        }
    }
    root.draw(&Text::new(
        "grey: offline · red: missing seq",
        (SIZE.0 as i32 - 230, 8),
        ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    Ok(())
}

/// A y range around the values with a margin, never empty.
fn padded(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    if !(lo.is_finite() && hi.is_finite()) {
        (0.0, 1.0)
    } else if hi - lo < 1e-9 {
        (lo - 1.0, hi + 1.0)
    } else {
        let m = (hi - lo) * 0.05;
        (lo - m, hi + m)
    }
}

/// Text for the SVG: XML forbids most control characters even escaped; long labels crowd the axis.
fn svg_text(s: &str, max: usize) -> String {
    let mut t: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        t.push('…');
    }
    t
}

/// An x tick: time of day for short spans, date and minute for longer ones.
fn tick(ms: i64, span_ms: f64) -> String {
    let s = fmt_utc(ms);
    let part = if span_ms <= 2.0 * 86_400_000.0 {
        s.get(11..)
    } else {
        s.get(5..16)
    };
    part.unwrap_or(&s).to_string()
}

/// `YYYY-MM-DD HH:MM:SS` (UTC); days to civil date after Howard Hinnant's algorithm.
pub(super) fn fmt_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}
