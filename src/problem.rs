//! Config problems: what every stage's validator reports, and where a
//! config came from.
//!
//! A leaf module: each stage owns its config section and checks it here,
//! and `config.rs` only reads TOML and hands sections to their owners, so
//! no stage needs to know about `config.rs` (and there is no import cycle).

use std::path::{Path, PathBuf};

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigProblem {
    /// The config file (or `embedded:...`).
    pub file: String,
    /// Dotted path of the field, e.g. `window.size`.
    pub field: String,
    /// What was expected and what was found.
    pub message: String,
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

/// Where a config came from: names it in problems and anchors its relative
/// paths.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The file name as given (or `embedded:...`), for messages.
    pub name: String,
    /// Directory relative paths resolve against (the file's directory).
    pub base_dir: PathBuf,
}

impl Origin {
    /// An origin named `name` whose relative paths start at `base_dir`.
    pub fn new(name: &str, base_dir: &Path) -> Self {
        Origin {
            name: name.into(),
            base_dir: base_dir.to_path_buf(),
        }
    }

    /// Resolves a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A problem at `field` of this config.
    pub fn problem(&self, field: &str, message: impl Into<String>) -> ConfigProblem {
        ConfigProblem {
            file: self.name.clone(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Collects the problems of one config, from every section's validator.
#[derive(Debug)]
pub struct Problems<'a> {
    origin: &'a Origin,
    list: Vec<ConfigProblem>,
}

impl<'a> Problems<'a> {
    /// An empty list for the config from `origin`.
    pub fn new(origin: &'a Origin) -> Self {
        Problems {
            origin,
            list: Vec::new(),
        }
    }

    /// Where the config came from (to resolve paths while validating).
    pub fn origin(&self) -> &'a Origin {
        self.origin
    }

    /// Notes a problem at `field`.
    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.list.push(self.origin.problem(field, message));
    }

    /// Notes problems found elsewhere.
    pub fn extend(&mut self, problems: impl IntoIterator<Item = ConfigProblem>) {
        self.list.extend(problems);
    }

    /// Notes a problem at `field` unless `ok`; returns `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: impl FnOnce() -> String) -> bool {
        if !ok {
            self.push(field, message());
        }
        ok
    }

    /// Notes a problem unless `value` is at least 1.
    pub fn at_least_one(&mut self, value: u64, field: &str) {
        self.check(value >= 1, field, || {
            format!("expected at least 1, found {value}")
        });
    }

    /// Notes a problem unless `rate` is a positive, finite number.
    pub fn positive(&mut self, value: f64, field: &str, unit: &str) {
        self.check(value.is_finite() && value > 0.0, field, || {
            format!("expected a positive number of {unit}, found {value}")
        });
    }

    /// True when nothing was noted.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How many problems were noted.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// The problems noted.
    pub fn into_vec(self) -> Vec<ConfigProblem> {
        self.list
    }

    /// `value` when nothing was noted, else every problem.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.list))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_file_and_field() {
        let origin = Origin::new("a/b.toml", Path::new("a"));
        let mut p = Problems::new(&origin);
        p.positive(0.0, "source.rate_hz", "samples per second");
        p.positive(2.0, "source.rate_hz", "samples per second");
        p.at_least_one(0, "pipeline.capacity");
        let errs = p.into_result(()).unwrap_err();
        assert_eq!(
            errs.to_string(),
            "a/b.toml: source.rate_hz: expected a positive number of samples per second, found 0\n\
             a/b.toml: pipeline.capacity: expected at least 1, found 0"
        );
        assert_eq!(
            origin.resolve(Path::new("m.onnx")),
            PathBuf::from("a/m.onnx")
        );
        assert_eq!(
            origin.resolve(Path::new("/m.onnx")),
            PathBuf::from("/m.onnx")
        );
    }
}
