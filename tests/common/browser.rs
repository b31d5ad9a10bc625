//! A real headless Chromium for the dashboard tests: the page's DOM after
//! its scripts ran, and screenshots.
//!
//! CI sets EDGEINFER_TEST_BROWSER and requires Chromium; elsewhere the
//! tests that need it are skipped when it is not installed.
//!
//! `--virtual-time-budget` is what makes the dumps deterministic: Chromium
//! runs the page's timers on a virtual clock, fast-forwarded while the page
//! is idle and paused while a fetch() is pending. A page that polls a JSON
//! endpoint every second has therefore made (and rendered) about
//! `wait_ms / 1000` polls when the DOM is dumped, however slowly the server
//! answered.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The names the browser goes by: Debian's first.
const NAMES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// How long Chromium may take beyond the page's virtual time: a pending
/// fetch() stops the virtual clock, so a server that never answers would
/// otherwise hang the test.
const SLACK: Duration = Duration::from_secs(60);

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    NAMES.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The Chromium executable; `None` (after reporting the skip) when it is
/// not installed, and a panic instead when EDGEINFER_TEST_BROWSER is set.
pub fn chromium() -> Option<PathBuf> {
    let found = find();
    if found.is_none() {
        assert!(
            std::env::var_os("EDGEINFER_TEST_BROWSER").is_none(),
            "EDGEINFER_TEST_BROWSER is set but no Chromium on PATH ({}); \
             install Debian's `chromium`",
            NAMES.join(", ")
        );
        super::skip("no Chromium on PATH (install `chromium` to run it)");
    }
    found
}

/// Runs headless Chromium on `url` with `args`, for `wait_ms` of the page's
/// virtual time, and returns its stdout.
fn run(url: &str, wait_ms: u64, args: &[String]) -> String {
    let exe = find().expect("no Chromium: call browser::chromium() first and skip without it");
    // A fresh profile each time: no cache or service worker carries a page
    // over from another test, and parallel runs do not share a lock.
    let profile = tempfile::tempdir().expect("Chromium profile dir");
    let out_path = profile.path().join("stdout");
    let err_path = profile.path().join("stderr");
    let mut cmd = Command::new(&exe);
    cmd.args([
        "--headless",
        // CI runs as root, where the sandbox cannot start.
        "--no-sandbox",
        "--disable-gpu",
        // Containers often have a 64 MB /dev/shm, too small for renderers.
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--mute-audio",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--virtual-time-budget={wait_ms}"))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    // Files rather than pipes: Chromium's helper processes inherit them and
    // may outlive the browser, which would block a reader of a pipe.
    .stdout(std::fs::File::create(&out_path).expect("Chromium stdout file"))
    .stderr(std::fs::File::create(&err_path).expect("Chromium stderr file"));
    // Its own process group, so that a hung browser goes with its helpers.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    let pgid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_millis(wait_ms) + SLACK;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for Chromium") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill(2) on the process group this function created; helpers
    // left behind by a finished browser go too. No memory is involved.
    unsafe { kill(-pgid, 9) };
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        None => panic!("Chromium did not finish {url} within {wait_ms} ms + {SLACK:?}:\n{stderr}"),
        Some(s) if !s.success() => panic!("Chromium failed on {url} ({s}):\n{stderr}"),
        Some(_) => {}
    }
    let out = std::fs::read(&out_path).expect("read Chromium stdout");
    String::from_utf8_lossy(&out).into_owned()
}

/// The DOM of `url` serialized after the page ran for `wait_ms` of virtual
/// time, scripts and completed fetch() calls included.
pub fn dump_dom(url: &str, wait_ms: u64) -> String {
    let dom = run(url, wait_ms, &["--dump-dom".to_string()]);
    assert!(
        dom.contains("<html"),
        "Chromium dumped no document for {url}: {dom:?}"
    );
    dom
}

/// Saves a PNG of `url` rendered in a `size` (width, height) window after
/// `wait_ms` of virtual time into `out`.
pub fn screenshot(url: &str, wait_ms: u64, out: &Path, size: (u32, u32)) {
    // A stale file from an earlier run must not pass for this one.
    let _ = std::fs::remove_file(out);
    let out_abs = std::path::absolute(out).expect("absolute screenshot path");
    run(
        url,
        wait_ms,
        &[
            format!("--screenshot={}", out_abs.display()),
            format!("--window-size={},{}", size.0, size.1),
            "--hide-scrollbars".to_string(),
        ],
    );
    let png = std::fs::read(&out_abs)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", out_abs.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 100,
        "{} is not a PNG ({} bytes)",
        out_abs.display(),
        png.len()
    );
}
