//! Helpers shared by the integration tests: the built binary, the repo's
//! files, .npy I/O and process plumbing.
#![allow(dead_code)]

pub mod broker;
pub mod browser;
pub mod netns;
pub mod postgres;
pub mod shapes;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgeinfer::export::reference::Dense;
use ndarray_npy::{read_npy, write_npy};
use tract_onnx::prelude::tract_ndarray::{ArrayD, IxDyn};

/// The `edgeinfer` binary cargo built for these tests.
/// The built `edgeinfer-host` binary (tests of the `host` feature).
#[cfg(feature = "host")]
pub fn host() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgeinfer-host"))
}

/// The last line of `o`'s stdout as JSON (a command's summary).
pub fn last_json(o: &Output) -> serde_json::Value {
    let text = stdout(o);
    let line = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr: {}", stderr(o)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
}

/// A path inside the repository.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `cmd` to completion.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn edgeinfer")
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Says that a test is skipped and why, so that it shows in the normal
/// output of `cargo test`: libtest captures `print!`/`eprint!`, not writes
/// to the stderr handle itself.
pub fn skip(reason: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\nSKIPPED {}: {reason}",
        std::thread::current().name().unwrap_or("test")
    );
}

/// Asserts a bad-input failure: exit code 2, no panic, and exactly one
/// error line that contains every one of `needles`.
pub fn assert_bad_input(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {:?}", lines[0]);
    }
}

/// Parses every stdout line as JSON.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Reads an f32 .npy file.
pub fn read_f32(path: &Path) -> Dense {
    let a: ArrayD<f32> = read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Dense::new(a.shape().to_vec(), a.iter().copied().collect())
}

/// Writes an f32 .npy file.
pub fn write_f32(path: &Path, t: &Dense) {
    let a = ArrayD::from_shape_vec(IxDyn(&t.shape), t.data.clone()).unwrap();
    write_npy(path, &a).unwrap();
}

/// Largest absolute difference; panics when shapes differ.
pub fn max_abs_diff(a: &Dense, b: &Dense) -> f32 {
    assert_eq!(a.shape, b.shape);
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// What the thermal-trend model computes for one window: (mean, slope per
/// sample), by the textbook formulas.
pub fn mean_slope(w: &[f32]) -> (f32, f32) {
    let n = w.len() as f32;
    let t_mean = (n - 1.0) / 2.0;
    let mean = w.iter().sum::<f32>() / n;
    let ss: f32 = (0..w.len()).map(|t| (t as f32 - t_mean).powi(2)).sum();
    let slope = w
        .iter()
        .enumerate()
        .map(|(t, v)| (t as f32 - t_mean) * (v - mean))
        .sum::<f32>()
        / ss;
    (mean, slope)
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Sends signal `sig` (2 = SIGINT, 15 = SIGTERM) to process `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid this test spawned; no memory is involved.
    let rc = unsafe { kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// `edgeinfer run --config CFG ARGS` in the background with HOME in the
/// config's directory, no broker from the environment, stdout discarded and
/// stderr piped; `quiet` also clears RUST_LOG.
pub fn spawn_run(cfg: &Path, args: &[&str], quiet: bool) -> std::process::Child {
    let mut cmd = bin();
    cmd.arg("run")
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env("HOME", cfg.parent().unwrap())
        .env_remove("EDGEINFER_BROKER")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if quiet {
        cmd.env_remove("RUST_LOG");
    }
    cmd.spawn().unwrap()
}

/// A tmpfs of `size` (e.g. "128k") mounted on `dir/small`, unmounted when
/// dropped. Mounting needs root: `None` (after saying SKIPPED) elsewhere,
/// and a failure where EDGEINFER_TEST_NETNS says root is required.
pub fn small_tmpfs(dir: &Path, size: &str) -> Option<Tmpfs> {
    let mnt = dir.join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var_os("EDGEINFER_TEST_NETNS").is_none(),
            "EDGEINFER_TEST_NETNS is set but a tmpfs cannot be mounted"
        );
        skip("mounting a small tmpfs needs root");
        return None;
    }
    Some(Tmpfs(mnt))
}

/// A mounted tmpfs (see [`small_tmpfs`]).
pub struct Tmpfs(pub PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// ONNX Runtime's first output for `input`, or None where python3 has no
/// onnxruntime (CI sets EDGEINFER_TEST_ORT=1, which makes that a failure).
pub fn onnxruntime(model: &Path, input: &Path, out: &Path) -> Option<Dense> {
    let script = "import sys, numpy as np, onnxruntime as ort\n\
                  s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
                  x = np.load(sys.argv[2])\n\
                  np.save(sys.argv[3], s.run(None, {s.get_inputs()[0].name: x})[0])\n";
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(model)
        .arg(input)
        .arg(out)
        .output();
    match o {
        Ok(o) if o.status.success() => Some(read_f32(out)),
        _ => {
            assert!(
                std::env::var_os("EDGEINFER_TEST_ORT").is_none(),
                "EDGEINFER_TEST_ORT is set but onnxruntime did not run {}",
                model.display()
            );
            skip("python3 with onnxruntime and numpy not found");
            None
        }
    }
}
