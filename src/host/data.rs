//! Training data: CSV in, cleaned examples out, split and standardized the
//! way the exported model will see them.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::HostError;
use crate::window::Layout;
use crate::window::Window;

/// A CSV file as text cells under a header.
#[derive(Debug, Clone)]
pub struct Table {
    /// Header names, in file order.
    pub columns: Vec<String>,
    /// Data rows; every row has one cell per column.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Reads a CSV file with a header line. Rows with the wrong number of
    /// cells are errors (they mean a broken file, not missing values).
    pub fn read(path: &Path) -> Result<Table, HostError> {
        let bytes = std::fs::read(path).map_err(|e| HostError::Input {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        let bad = |message: String| HostError::Input {
            file: path.display().to_string(),
            message,
        };
        let text =
            String::from_utf8(bytes).map_err(|_| bad("expected UTF-8 text (a CSV file)".into()))?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines
            .next()
            .ok_or_else(|| bad("expected a header line, found an empty file".into()))?;
        let columns: Vec<String> = split_cells(header);
        let mut rows = Vec::new();
        for (i, line) in lines.enumerate() {
            let cells = split_cells(line);
            if cells.len() != columns.len() {
                return Err(bad(format!(
                    "line {}: expected {} cells, found {}",
                    i + 2,
                    columns.len(),
                    cells.len()
                )));
            }
            rows.push(cells);
        }
        Ok(Table { columns, rows })
    }

    /// Index of `name`, or an error listing the columns there are.
    pub fn column(&self, name: &str, file: &str) -> Result<usize, HostError> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| HostError::Input {
                file: file.into(),
                message: format!(
                    "unknown column {name:?}: expected one of {}",
                    self.columns.join(", ")
                ),
            })
    }
}

fn split_cells(line: &str) -> Vec<String> {
    line.split(',')
        .map(|c| c.trim().trim_matches('"').to_string())
        .collect()
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    /// One class out of several (softmax output).
    Classify,
    /// Real values.
    Regress,
}

/// How to turn a table into examples.
#[derive(Debug, Clone)]
pub struct DataSpec {
    /// Classification or regression.
    pub task: Task,
    /// Target column(s): one for `classify`, one or more for `regress`.
    pub target: Vec<String>,
    /// Feature columns (tabular) or channel columns (windows); empty: every
    /// column that is not a target (nor `ts_ms`/`timestamp` for windows).
    pub features: Vec<String>,
    /// Cut rows into windows of (size, hop) instead of one example per row.
    pub window: Option<(usize, usize)>,
    /// Fill missing feature values with the column mean instead of dropping rows.
    pub impute: bool,
    /// Class names in class-id order; empty: sorted (numerically when they
    /// are numbers).
    pub labels: Vec<String>,
}

/// Targets of every example.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Class ids into `Dataset::labels`.
    Class(Vec<u32>),
    /// One row of values per example.
    Values(Vec<Vec<f32>>),
}

impl Targets {
    /// Number of examples.
    pub fn len(&self) -> usize {
        match self {
            Targets::Class(c) => c.len(),
            Targets::Values(v) => v.len(),
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The targets of `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Targets {
        match self {
            Targets::Class(c) => Targets::Class(idx.iter().map(|&i| c[i]).collect()),
            Targets::Values(v) => Targets::Values(idx.iter().map(|&i| v[i].clone()).collect()),
        }
    }
}

/// Cleaned examples, ready to split.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// One flat example per entry: `features` values, a `[channels, window]`
    /// NCW window, or a `[channels, height, width]` image.
    pub x: Vec<Vec<f32>>,
    /// Shape of one example: `[features]`, `[channels, window]` or
    /// `[channels, height, width]`.
    pub shape: Vec<usize>,
    /// What each example should give.
    pub y: Targets,
    /// Class names (classification), in class-id order.
    pub labels: Vec<String>,
    /// Feature or channel names.
    pub features: Vec<String>,
    /// Target column names.
    pub targets: Vec<String>,
    /// Rows dropped for missing or non-finite values.
    pub dropped_rows: usize,
    /// Feature values filled with the column mean (`impute`).
    pub imputed_values: usize,
    /// Windows skipped because their rows carry more than one label.
    pub mixed_windows: usize,
    /// sha256 of the examples: every value of `x`, then every target, as
    /// little-endian bytes. Columns the model does not use (timestamps)
    /// do not count, so the same data recorded at another time hashes the same.
    pub sha256: String,
    /// Files of an image folder that were skipped: `class/file: why`.
    pub skipped: Vec<String>,
}

pub(super) fn examples_sha256(x: &[Vec<f32>], y: &Targets) -> String {
    let mut h = Sha256::new();
    for v in x.iter().flatten() {
        h.update(v.to_le_bytes());
    }
    match y {
        Targets::Class(c) => c.iter().for_each(|k| h.update(k.to_le_bytes())),
        Targets::Values(v) => v.iter().flatten().for_each(|t| h.update(t.to_le_bytes())),
    }
    crate::model::hex(&h.finalize())
}

impl Dataset {
    /// Outputs the model needs: classes, or target columns.
    pub fn outputs(&self) -> usize {
        match &self.y {
            Targets::Class(_) => self.labels.len(),
            Targets::Values(v) => v.first().map_or(self.targets.len(), |r| r.len()),
        }
    }

    /// Loads and cleans `path` as `spec` says.
    pub fn load(path: &Path, spec: &DataSpec) -> Result<Dataset, HostError> {
        let table = Table::read(path)?;
        Dataset::from_table(&table, spec, &path.display().to_string())
    }

    /// Cleans `table` as `spec` says; `file` names it in errors.
    pub fn from_table(table: &Table, spec: &DataSpec, file: &str) -> Result<Dataset, HostError> {
        let bad = |message: String| HostError::Input {
            file: file.into(),
            message,
        };
        if spec.target.is_empty() {
            return Err(bad("--target: expected at least one column".into()));
        }
        if spec.task == Task::Classify && spec.target.len() != 1 {
            return Err(bad(format!(
                "--target: classification takes one column, found {}",
                spec.target.len()
            )));
        }
        let target_ix = spec
            .target
            .iter()
            .map(|t| table.column(t, file))
            .collect::<Result<Vec<_>, _>>()?;
        let feature_names: Vec<String> = if spec.features.is_empty() {
            table
                .columns
                .iter()
                .filter(|c| !spec.target.contains(c))
                .filter(|c| spec.window.is_none() || !matches!(c.as_str(), "ts_ms" | "timestamp"))
                .cloned()
                .collect()
        } else {
            spec.features.clone()
        };
        if feature_names.is_empty() {
            return Err(bad("expected at least one feature column".into()));
        }
        let feature_ix = feature_names
            .iter()
            .map(|f| table.column(f, file))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(t) = feature_names.iter().find(|f| spec.target.contains(f)) {
            return Err(bad(format!(
                "column {t:?} is both a feature and the target"
            )));
        }

        let number = |s: &str| s.parse::<f32>().ok().filter(|v| v.is_finite());
        // A column of words is a mistake in the command, not missing data.
        let not_numeric = |i: usize| {
            let filled = || {
                table
                    .rows
                    .iter()
                    .map(|r| r[i].trim())
                    .filter(|v| !v.is_empty())
            };
            let text =
                filled().find(|v| !v.eq_ignore_ascii_case("nan") && v.parse::<f64>().is_err());
            text.filter(|_| filled().all(|v| number(v).is_none()))
        };
        if spec.task == Task::Regress {
            for (name, &i) in spec.target.iter().zip(&target_ix) {
                if let Some(v) = not_numeric(i) {
                    return Err(bad(format!(
                        "--target {name:?}: expected a numeric column to regress on, found values like {v:?} \
                         (use --task classify for class labels)"
                    )));
                }
            }
        }
        for (name, &i) in feature_names.iter().zip(&feature_ix) {
            if let Some(v) = not_numeric(i) {
                return Err(bad(format!(
                    "feature column {name:?}: expected numbers, found values like {v:?} \
                     (leave it out with --features)"
                )));
            }
        }
        // Target first: a row without one cannot be used, imputed or not.
        let mut cells: Vec<Vec<Option<f32>>> = Vec::new();
        let mut raw_targets: Vec<Vec<String>> = Vec::new();
        let mut dropped = 0;
        for row in &table.rows {
            let t: Vec<String> = target_ix.iter().map(|&i| row[i].clone()).collect();
            let target_ok = match spec.task {
                Task::Classify => !t[0].is_empty() && !t[0].eq_ignore_ascii_case("nan"),
                Task::Regress => t.iter().all(|v| number(v).is_some()),
            };
            let f: Vec<Option<f32>> = feature_ix.iter().map(|&i| number(&row[i])).collect();
            if !target_ok || (!spec.impute && f.iter().any(Option::is_none)) {
                dropped += 1;
                continue;
            }
            cells.push(f);
            raw_targets.push(t);
        }
        if cells.is_empty() {
            return Err(bad(format!(
                "no usable rows: all {} rows have missing or non-finite values",
                table.rows.len()
            )));
        }
        let mut imputed = 0;
        if spec.impute {
            for j in 0..feature_names.len() {
                let present: Vec<f32> = cells.iter().filter_map(|r| r[j]).collect();
                if present.is_empty() {
                    return Err(bad(format!(
                        "column {:?} has no finite value to impute from",
                        feature_names[j]
                    )));
                }
                let mean = present.iter().sum::<f32>() / present.len() as f32;
                for r in cells.iter_mut() {
                    if r[j].is_none() {
                        r[j] = Some(mean);
                        imputed += 1;
                    }
                }
            }
        }
        let rows: Vec<Vec<f32>> = cells
            .into_iter()
            .map(|r| r.into_iter().map(|v| v.unwrap_or(0.0)).collect())
            .collect();

        let (labels, row_y) = match spec.task {
            Task::Classify => {
                let names: Vec<&str> = raw_targets.iter().map(|t| t[0].as_str()).collect();
                let mut labels = class_labels(&names);
                if !spec.labels.is_empty() {
                    if let Some(l) = labels.iter().find(|l| !spec.labels.contains(l)) {
                        return Err(bad(format!(
                            "class {l:?} of {:?} is not in --labels {}",
                            spec.target[0],
                            spec.labels.join(",")
                        )));
                    }
                    labels = spec.labels.clone();
                }
                if labels.len() < 2 {
                    return Err(bad(format!(
                        "target {:?} has one class ({:?}): classification needs at least 2",
                        spec.target[0],
                        labels.first().cloned().unwrap_or_default()
                    )));
                }
                let ids = names
                    .iter()
                    .map(|n| labels.iter().position(|l| l == n).unwrap_or(0) as u32)
                    .collect();
                (labels, Targets::Class(ids))
            }
            Task::Regress => (
                vec![],
                Targets::Values(
                    raw_targets
                        .iter()
                        .map(|t| t.iter().filter_map(|v| number(v)).collect())
                        .collect(),
                ),
            ),
        };

        let (x, y, shape, mixed) = match spec.window {
            None => (rows, row_y, vec![feature_names.len()], 0),
            Some((size, hop)) => {
                if size == 0 || hop == 0 {
                    return Err(bad("--window and --hop: expected at least 1".into()));
                }
                if size > rows.len() {
                    return Err(bad(format!(
                        "--window {size} is longer than the data: {} usable rows",
                        rows.len()
                    )));
                }
                let (x, y, mixed) = windows(&rows, &row_y, size, hop);
                if x.is_empty() {
                    return Err(bad(format!(
                        "no window of {size} rows carries a single label"
                    )));
                }
                (x, y, vec![feature_names.len(), size], mixed)
            }
        };
        Ok(Dataset {
            shape,
            labels,
            features: feature_names,
            targets: spec.target.clone(),
            dropped_rows: dropped,
            imputed_values: imputed,
            mixed_windows: mixed,
            sha256: examples_sha256(&x, &y),
            x,
            y,
            skipped: vec![],
        })
    }

    /// Re-numbers classes to follow `labels` (a model's class order); a
    /// class the model does not know is an error.
    pub fn relabel(&mut self, labels: &[String]) -> Result<(), String> {
        let Targets::Class(ids) = &mut self.y else {
            return Ok(());
        };
        let map = self
            .labels
            .iter()
            .map(|l| {
                labels
                    .iter()
                    .position(|m| m == l)
                    .map(|p| p as u32)
                    .ok_or_else(|| {
                        format!("class {l:?} is not one of the model's labels {labels:?}")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for id in ids.iter_mut() {
            *id = map[*id as usize];
        }
        self.labels = labels.to_vec();
        Ok(())
    }

    /// The examples at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> (Vec<Vec<f32>>, Targets) {
        (
            idx.iter().map(|&i| self.x[i].clone()).collect(),
            self.y.select(idx),
        )
    }
}

/// Class names sorted numerically when every one is a number, else as text,
/// so the same data always gives the same class ids.
fn class_labels(names: &[&str]) -> Vec<String> {
    let mut labels: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    labels.sort();
    labels.dedup();
    if labels.iter().all(|l| l.parse::<f64>().is_ok()) {
        labels.sort_by(|a, b| {
            a.parse::<f64>()
                .unwrap_or(0.0)
                .total_cmp(&b.parse::<f64>().unwrap_or(0.0))
        });
    }
    labels
}

/// Cuts rows into NCW windows with the device's own window stage. A window
/// takes its target from its rows; one whose rows disagree (it straddles a
/// change of label) is skipped and counted.
fn windows(
    rows: &[Vec<f32>],
    y: &Targets,
    size: usize,
    hop: usize,
) -> (Vec<Vec<f32>>, Targets, usize) {
    let channels = rows[0].len();
    let mut w = Window::new(size, hop, channels, Layout::Ncw);
    let (mut xs, mut ids, mut vals, mut mixed) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for (i, r) in rows.iter().enumerate() {
        if !w.push(r) {
            continue;
        }
        let first = i + 1 - size;
        match y {
            Targets::Class(c) => {
                if c[first..=i].iter().any(|&k| k != c[i]) {
                    mixed += 1;
                    continue;
                }
                ids.push(c[i]);
            }
            // A regression window predicts the value at its last row.
            Targets::Values(v) => vals.push(v[i].clone()),
        }
        let mut buf = Vec::new();
        w.fill(&mut buf);
        xs.push(buf);
    }
    let y = match y {
        Targets::Class(_) => Targets::Class(ids),
        Targets::Values(_) => Targets::Values(vals),
    };
    (xs, y, mixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, text).unwrap();
        Table::read(&p).unwrap()
    }

    fn spec(task: Task, target: &str) -> DataSpec {
        DataSpec {
            task,
            target: vec![target.into()],
            features: vec![],
            window: None,
            impute: false,
            labels: vec![],
        }
    }

    #[test]
    fn drops_rows_with_missing_values_and_maps_classes() {
        let t = table("a,b,kind\n1,2,cat\nnan,3,dog\n4,,cat\n5,6,dog\n7,inf,cat\n8,9,bird\n");
        let d = Dataset::from_table(&t, &spec(Task::Classify, "kind"), "t.csv").unwrap();
        assert_eq!(d.dropped_rows, 3);
        assert_eq!(d.labels, vec!["bird", "cat", "dog"]);
        assert_eq!(d.y, Targets::Class(vec![1, 2, 0]));
        assert_eq!(d.x, vec![vec![1.0, 2.0], vec![5.0, 6.0], vec![8.0, 9.0]]);
    }

    #[test]
    fn numeric_labels_sort_as_numbers_and_impute_fills_means() {
        let t = table("a,y\n1,10\n,2\n3,10\n5,2\n");
        let mut s = spec(Task::Classify, "y");
        s.impute = true;
        let d = Dataset::from_table(&t, &s, "t.csv").unwrap();
        assert_eq!(d.labels, vec!["2", "10"]);
        assert_eq!(d.imputed_values, 1);
        assert_eq!(d.x[1], vec![3.0]);
    }

    #[test]
    fn windows_match_the_device_window_and_skip_mixed_labels() {
        let mut text = String::from("ts_ms,x,y,label\n");
        for i in 0..10 {
            let l = if i < 5 { "a" } else { "b" };
            text += &format!("{i},{i},{},{l}\n", 10 * i);
        }
        let mut s = spec(Task::Classify, "label");
        s.window = Some((4, 2));
        let d = Dataset::from_table(&table(&text), &s, "t.csv").unwrap();
        assert_eq!(d.features, vec!["x", "y"]);
        assert_eq!(d.shape, vec![2, 4]);
        // Windows end at rows 3, 5, 7, 9; those ending at 5 and 7 span a and b.
        assert_eq!(d.mixed_windows, 2);
        assert_eq!(d.y, Targets::Class(vec![0, 1]));
        assert_eq!(
            d.x[0],
            vec![0.0, 1.0, 2.0, 3.0, 0.0, 10.0, 20.0, 30.0],
            "NCW: channel x, then channel y"
        );
    }
}
