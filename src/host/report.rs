//! `report.md`, the training curve and the confusion matrix (SVG).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::train::Metrics;
use super::{write_file, HostError, TrainOptions, TrainSummary};

fn plot_err<E: std::fmt::Display>(file: &Path) -> impl Fn(E) -> HostError + '_ {
    move |e| HostError::Output {
        file: file.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes `report.md`, `curve.svg` and (classification) `confusion.svg`.
pub fn write(dir: &Path, opts: &TrainOptions, s: &TrainSummary) -> Result<(), HostError> {
    curve(&dir.join("curve.svg"), s)?;
    if let Metrics::Class { confusion, .. } = &s.test {
        confusion_svg(&dir.join("confusion.svg"), confusion, &s.labels)?;
    }
    write_file(&dir.join("report.md"), markdown(opts, s).as_bytes())
}

fn markdown(opts: &TrainOptions, s: &TrainSummary) -> String {
    let f = &opts.fit;
    let mut md = String::new();
    let _ = writeln!(md, "# Training report\n");
    let _ = writeln!(
        md,
        "Data: `{}`; target {}; {} examples after cleaning ({} rows dropped for missing \
         or non-finite values, {} values imputed, {} windows skipped for mixed labels).\n",
        opts.data
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        opts.spec.target.join(", "),
        s.examples,
        s.dropped_rows,
        s.imputed_values,
        s.mixed_windows
    );
    let _ = writeln!(
        md,
        "Network: `{}` ({} activation, {} parameters); init {:?}; {:?} lr {}; {:?} loss; \
         batch {}; seed {}.\n",
        f.arch,
        f.activation.name(),
        s.params,
        f.init,
        f.optimizer,
        f.lr,
        f.loss,
        f.batch,
        f.seed
    );
    let _ = writeln!(
        md,
        "Splits (train / validation / test): {} / {} / {}. Standardization statistics \
         come from the training split and are baked into the model as its first nodes.\n",
        s.splits[0], s.splits[1], s.splits[2]
    );
    let _ = writeln!(
        md,
        "Epochs run: {} of {}; weights kept from epoch {}.\n",
        s.epochs_run, f.epochs, s.best_epoch
    );
    let held = if s.splits[2] > 0 {
        "Test"
    } else {
        "Validation"
    };
    match &s.test {
        Metrics::Class {
            accuracy,
            precision,
            recall,
            confusion,
        } => {
            let _ = writeln!(md, "## {held} metrics\n\nAccuracy: {:.4}\n", accuracy);
            let _ = writeln!(md, "| class | precision | recall |\n|---|---|---|");
            for (i, l) in s.labels.iter().enumerate() {
                let _ = writeln!(md, "| {l} | {:.4} | {:.4} |", precision[i], recall[i]);
            }
            let _ = writeln!(md, "\nConfusion matrix (rows: true, columns: predicted):\n");
            let _ = writeln!(md, "| | {} |", s.labels.join(" | "));
            let _ = writeln!(md, "|---|{}", "---|".repeat(s.labels.len()));
            for (i, row) in confusion.iter().enumerate() {
                let cells: Vec<String> = row.iter().map(|c| c.to_string()).collect();
                let _ = writeln!(md, "| {} | {} |", s.labels[i], cells.join(" | "));
            }
            let _ = writeln!(md, "\n![confusion matrix](confusion.svg)\n");
        }
        Metrics::Regress { mse, mae, r2 } => {
            let _ = writeln!(
                md,
                "## {held} metrics\n\nMSE {mse:.6}, MAE {mae:.6}, R² {r2:.4}\n"
            );
        }
    }
    if let Some((m, sd)) = s.kfold {
        let _ = writeln!(
            md,
            "{}-fold cross-validation on train + validation: {m:.4} ± {sd:.4}\n",
            opts.kfold.unwrap_or(0)
        );
    }
    let _ = writeln!(
        md,
        "Export check: the ONNX file run by the device's model runner differs from the \
         trainer by at most {:e} over every example (allowed {:e}).\n",
        s.verify_max_abs_diff,
        super::VERIFY_TOLERANCE
    );
    let _ = writeln!(md, "![training curve](curve.svg)");
    md
}

fn curve(path: &Path, s: &TrainSummary) -> Result<(), HostError> {
    let e = plot_err(path);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let losses = s
        .history
        .iter()
        .flat_map(|h| [h.train_loss, h.val_loss])
        .filter(|v| v.is_finite());
    let top = losses.fold(0.0f64, f64::max).max(1e-9) * 1.05;
    let epochs = s.history.len().max(2) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("loss per epoch", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(1.0..epochs, 0.0..top)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("loss")
        .draw()
        .map_err(&e)?;
    let series = |f: fn(&super::train::Epoch) -> f64| {
        s.history
            .iter()
            .filter(move |h| f(h).is_finite())
            .map(move |h| (h.epoch as f64, f(h)))
            .collect::<Vec<_>>()
    };
    chart
        .draw_series(LineSeries::new(series(|h| h.train_loss), &BLUE))
        .map_err(&e)?
        .label("train")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    chart
        .draw_series(LineSeries::new(series(|h| h.val_loss), &RED))
        .map_err(&e)?
        .label("validation")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)
}

fn confusion_svg(path: &Path, m: &[Vec<u32>], labels: &[String]) -> Result<(), HostError> {
    let e = plot_err(path);
    let n = m.len();
    let cell = 64i32;
    let (left, top) = (120i32, 60i32);
    let size = (
        (left + cell * n as i32 + 20) as u32,
        (top + cell * n as i32 + 20) as u32,
    );
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let max = m.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let style = ("sans-serif", 14).into_font();
    root.draw(&Text::new(
        "rows: true, columns: predicted",
        (left, 10),
        style.clone(),
    ))
    .map_err(&e)?;
    for (i, l) in labels.iter().enumerate() {
        let p = i as i32 * cell;
        root.draw(&Text::new(
            l.clone(),
            (left + p + 4, top - 20),
            style.clone(),
        ))
        .map_err(&e)?;
        root.draw(&Text::new(
            l.clone(),
            (8, top + p + cell / 2 - 7),
            style.clone(),
        ))
        .map_err(&e)?;
    }
    for (i, row) in m.iter().enumerate() {
        for (j, &c) in row.iter().enumerate() {
            let (x, y) = (left + j as i32 * cell, top + i as i32 * cell);
            let shade = 255 - (200.0 * c as f64 / max) as u8;
            root.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                RGBColor(shade, shade, 255).filled(),
            ))
            .map_err(&e)?;
            root.draw(&Text::new(
                c.to_string(),
                (x + cell / 3, y + cell / 2 - 7),
                style.clone(),
            ))
            .map_err(&e)?;
        }
    }
    root.present().map_err(&e)
}

/// A progress bar over training epochs on standard error.
#[derive(Debug)]
pub struct Progress {
    bar: indicatif::ProgressBar,
    metric: &'static str,
}

impl Progress {
    /// A bar of `epochs` steps; the metric is named for `task`.
    pub fn new(epochs: usize, task: super::data::Task) -> Self {
        let bar = indicatif::ProgressBar::new(epochs as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} epoch {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let metric = match task {
            super::data::Task::Classify => "acc",
            super::data::Task::Regress => "R²",
        };
        Progress { bar, metric }
    }

    /// Shows a finished epoch.
    pub fn epoch(&self, e: &super::train::Epoch) {
        self.bar.set_position(e.epoch as u64);
        self.bar.set_message(format!(
            "loss {:.4} val loss {:.4} val {} {:.4}",
            e.train_loss, e.val_loss, self.metric, e.val_metric
        ));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
