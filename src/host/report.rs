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

/// Writes `report.md`, `curve.svg` and (classification) `confusion.svg`;
/// returns every file the training run left in `dir`, in the order written.
pub fn write(dir: &Path, opts: &TrainOptions, s: &TrainSummary) -> Result<Vec<String>, HostError> {
    let mut files: Vec<String> = [
        "model.onnx",
        "weights.safetensors",
        "input.npy",
        "output.npy",
        "edgeinfer.toml",
    ]
    .map(String::from)
    .to_vec();
    curve(&dir.join("curve.svg"), s)?;
    files.push("curve.svg".into());
    if let Metrics::Class { confusion, .. } = &s.test {
        confusion_svg(&dir.join("confusion.svg"), confusion, &s.labels)?;
        files.push("confusion.svg".into());
    }
    write_file(&dir.join("report.md"), markdown(opts, s).as_bytes())?;
    files.push("report.md".into());
    Ok(files)
}

/// One metrics row: headline figures of a split.
fn metrics_row(name: &str, size: usize, m: Option<&Metrics>) -> String {
    match m {
        Some(Metrics::Class { accuracy, .. }) => format!("| {name} | {size} | {accuracy:.4} |"),
        Some(Metrics::Regress { mse, mae, r2 }) => {
            format!("| {name} | {size} | {mse:.6} | {mae:.6} | {r2:.4} |")
        }
        None => format!("| {name} | {size} | – |"),
    }
}

fn markdown(opts: &TrainOptions, s: &TrainSummary) -> String {
    let f = &opts.fit;
    let mut md = String::new();
    let _ = writeln!(md, "# Training report\n");
    for w in &s.warnings {
        let _ = writeln!(md, "> **Warning:** {w}\n");
    }
    let _ = writeln!(md, "## Data\n");
    if let Some(img) = &opts.images {
        let _ = writeln!(
            md,
            "Image folder `{}`: {} images of {} classes ({}), each stretched to {}x{} {} \
             by the device's image stage and scaled to 0..1.\n",
            opts.data.display(),
            s.examples,
            s.labels.len(),
            s.labels.join(", "),
            img.size[0],
            img.size[1],
            if img.grayscale { "gray" } else { "RGB" },
        );
        if opts.fit.augment {
            let _ = writeln!(
                md,
                "Training images were flipped and shifted at random each epoch (`--augment`).\n"
            );
        }
        if !s.skipped_images.is_empty() {
            let _ = writeln!(md, "Skipped {} files:\n", s.skipped_images.len());
            for f in &s.skipped_images {
                let _ = writeln!(md, "- `{f}`");
            }
            let _ = writeln!(md);
        }
    } else {
        let _ = writeln!(
            md,
            "`{}`; target {}; {} examples after cleaning ({} rows dropped for missing \
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
    }
    let _ = writeln!(
        md,
        "Splits (train / validation / test): {} / {} / {}, seeded and stratified by \
         class. Standardization statistics come from the training split and are baked \
         into the model as its first nodes.\n",
        s.splits[0], s.splits[1], s.splits[2]
    );
    let _ = writeln!(md, "## Hyperparameters\n");
    let _ = writeln!(md, "| setting | value |\n|---|---|");
    let rows: Vec<(&str, String)> = vec![
        ("network", format!("`{}` ({} parameters)", f.arch, s.params)),
        ("activation", f.activation.name().into()),
        ("initialization", format!("{:?}", f.init)),
        ("optimizer", format!("{:?}", f.optimizer)),
        (
            "learning rate",
            format!(
                "{:.2e}{}",
                s.lr,
                if s.lr_auto { " (range test)" } else { "" }
            ),
        ),
        (
            "batch",
            format!(
                "{}{}",
                s.batch,
                if f.batch.is_none() {
                    " (by data size)"
                } else {
                    ""
                }
            ),
        ),
        ("loss", format!("{:?}", f.loss)),
        (
            "epochs",
            format!(
                "{} run of at most {}; weights kept from epoch {}; patience {}",
                s.epochs_run, f.epochs, s.best_epoch, s.patience
            ),
        ),
        ("converged", if s.converged { "yes" } else { "no" }.into()),
        ("seed", f.seed.to_string()),
    ];
    for (k, v) in rows {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(md, "\n## Metrics\n");
    match &s.test {
        Metrics::Class { .. } => {
            let _ = writeln!(md, "| split | examples | Accuracy |\n|---|---|---|");
        }
        Metrics::Regress { .. } => {
            let _ = writeln!(
                md,
                "| split | examples | MSE | MAE | R² |\n|---|---|---|---|---|"
            );
        }
    }
    let held = if s.splits[2] > 0 {
        "test"
    } else {
        "validation (no test split)"
    };
    for line in [
        metrics_row("train", s.splits[0], Some(&s.train)),
        metrics_row("validation", s.splits[1], s.val.as_ref()),
        metrics_row(
            held,
            if s.splits[2] > 0 {
                s.splits[2]
            } else {
                s.splits[1]
            },
            Some(&s.test),
        ),
    ] {
        let _ = writeln!(md, "{line}");
    }
    if let Metrics::Class {
        precision, recall, ..
    } = &s.test
    {
        let _ = writeln!(md, "\n| class | precision | recall |\n|---|---|---|");
        for (i, l) in s.labels.iter().enumerate() {
            let _ = writeln!(md, "| {l} | {:.4} | {:.4} |", precision[i], recall[i]);
        }
        let _ = writeln!(
            md,
            "\n![confusion matrix of the {held} split](confusion.svg)\n"
        );
    }
    if let Some((m, sd)) = s.kfold {
        let _ = writeln!(
            md,
            "\n{}-fold cross-validation on train + validation: {m:.4} ± {sd:.4}\n",
            opts.kfold.unwrap_or(0)
        );
    }
    let _ = writeln!(md, "\n![training curve](curve.svg)\n");
    let _ = writeln!(md, "## Export check\n");
    let _ = writeln!(
        md,
        "The ONNX file run by the device's model runner differs from the trainer by at \
         most {:e} over every example (allowed {:e}).",
        s.verify_max_abs_diff,
        super::VERIFY_TOLERANCE
    );
    md
}

/// Loss per epoch on a log scale, and beside it the validation metric.
fn curve(path: &Path, s: &TrainSummary) -> Result<(), HostError> {
    let e = plot_err(path);
    let root = SVGBackend::new(path, (960, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (left, right) = root.split_horizontally(520);
    let epochs = s.history.len().max(2) as f64;
    let series = |f: fn(&super::train::Epoch) -> f64| {
        s.history
            .iter()
            .filter(move |h| f(h).is_finite() && f(h) > 0.0)
            .map(move |h| (h.epoch as f64, f(h)))
            .collect::<Vec<_>>()
    };
    let (train, val) = (series(|h| h.train_loss), series(|h| h.val_loss));
    let all = train.iter().chain(&val).map(|p| p.1);
    let lo = all.clone().fold(f64::INFINITY, f64::min).min(1.0) * 0.8;
    let hi = all.fold(0.0f64, f64::max).max(lo * 10.0) * 1.2;
    let mut chart = ChartBuilder::on(&left)
        .caption("loss per epoch (log scale)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(1.0..epochs, (lo.max(1e-9)..hi).log_scale())
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("loss")
        .draw()
        .map_err(&e)?;
    for (points, colour, name) in [(train, BLUE, "train"), (val, RED, "validation")] {
        chart
            .draw_series(LineSeries::new(points, colour))
            .map_err(&e)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(&e)?;
    let name = match s.test {
        Metrics::Class { .. } => "validation accuracy",
        Metrics::Regress { .. } => "validation R²",
    };
    let metric: Vec<(f64, f64)> = s
        .history
        .iter()
        .filter(|h| h.val_metric.is_finite())
        .map(|h| (h.epoch as f64, h.val_metric))
        .collect();
    let low = metric.iter().map(|p| p.1).fold(0.0f64, f64::min);
    let mut chart = ChartBuilder::on(&right)
        .caption(name, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(1.0..epochs, low..1.0)
        .map_err(&e)?;
    chart.configure_mesh().x_desc("epoch").draw().map_err(&e)?;
    chart
        .draw_series(LineSeries::new(metric, RED))
        .map_err(&e)?;
    root.present().map_err(&e)
}

/// The confusion matrix: counts and, below them, the share of the true
/// class (row-normalized); the title above, whole.
fn confusion_svg(path: &Path, m: &[Vec<u32>], labels: &[String]) -> Result<(), HostError> {
    let e = plot_err(path);
    let n = m.len();
    let cell = 72i32;
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(4) as i32;
    let (left, top) = ((longest * 8 + 24).max(90), 76i32);
    let width = (left + cell * n as i32 + 20).max(360);
    let size = (width as u32, (top + cell * n as i32 + 40) as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let style = ("sans-serif", 14).into_font();
    let small = ("sans-serif", 11).into_font();
    root.draw(&Text::new(
        "Confusion matrix (rows: true class, columns: predicted)",
        (8, 8),
        ("sans-serif", 15).into_font(),
    ))
    .map_err(&e)?;
    for (i, l) in labels.iter().enumerate() {
        let p = i as i32 * cell;
        root.draw(&Text::new(
            l.clone(),
            (left + p + 4, top - 22),
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
        let total: u32 = row.iter().sum();
        for (j, &c) in row.iter().enumerate() {
            let (x, y) = (left + j as i32 * cell, top + i as i32 * cell);
            let share = if total == 0 {
                0.0
            } else {
                c as f64 / total as f64
            };
            let shade = 255 - (200.0 * share) as u8;
            root.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                RGBColor(shade, shade, 255).filled(),
            ))
            .map_err(&e)?;
            root.draw(&Text::new(
                c.to_string(),
                (x + 8, y + cell / 2 - 16),
                style.clone(),
            ))
            .map_err(&e)?;
            root.draw(&Text::new(
                format!("{:.0} %", 100.0 * share),
                (x + 8, y + cell / 2 + 4),
                small.clone(),
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
