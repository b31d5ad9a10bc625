//! Faults a board meets in the field, injected for real: a network
//! partition (a broker in its own network namespace, the link cut), power
//! loss (SIGKILL at random moments, seeded), a full disk (a small tmpfs), a
//! sensor program that dies, and hostile or careless settings. The figures
//! these runs give are in docs/reliability.md.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::broker::{Broker, Subscriber};
use common::netns::NetnsBroker;
use common::*;
use edgeinfer::rng::Rng;
use edgeinfer::schema::ResultBatch;

const T: Duration = Duration::from_secs(60);

fn model(name: &str) -> String {
    format!("{:?}", repo(&format!("models/{name}/model.onnx")))
}

/// The seed MLP on a simulated 10-channel sensor, one result per sample,
/// published to `url` through an outbox in `dir`.
fn config(dir: &Path, device: &str, rate: f64, url: &str, extra: &str) -> PathBuf {
    let p = dir.join(format!("{device}.toml"));
    std::fs::write(
        &p,
        format!(
            "device_id = \"{device}\"\n[model]\npath = {}\n[source]\nkind = \"simulated\"\n\
             channels = 10\nrate_hz = {rate}\n[window]\nsize = 1\nlayout = \"flat\"\n\
             [[sink]]\nkind = \"mqtt\"\n[mqtt]\nbroker = \"{url}\"\nreconnect_min_ms = 100\n\
             reconnect_max_ms = 1000\ngrace_s = 20.0\nmetrics_interval_s = 0.5\n\
             [outbox]\ndir = \"outbox-{device}\"\n{extra}",
            model("seed-mlp")
        ),
    )
    .unwrap();
    p
}

fn start(cfg: &Path, args: &[&str]) -> Child {
    spawn_run(cfg, args, true)
}

/// Sequence numbers of every result batch received.
fn seqs(sub: &Subscriber) -> BTreeSet<u64> {
    sub.records().iter().map(|r| r.seq).collect()
}

fn wait_seqs(sub: &Subscriber, done: impl Fn(&BTreeSet<u64>) -> bool) {
    sub.wait_for(T, |m| {
        let s: BTreeSet<u64> = m
            .iter()
            .filter(|m| m.topic.ends_with("/result"))
            .flat_map(|m| ResultBatch::from_postcard(&m.payload).unwrap().records)
            .map(|r| r.seq)
            .collect();
        done(&s)
    });
}

/// A subscriber whose session the broker keeps while the network is cut,
/// so what is published meanwhile reaches it afterwards.
fn persistent_subscriber(ip: &str, port: u16, filter: &str) -> Subscriber {
    let mut o = rumqttc::MqttOptions::new(
        format!("reliability-{}", common::broker::free_port()),
        ip,
        port,
    );
    o.set_clean_session(false);
    Subscriber::connect_with(o, &[filter])
}

/// The network to the broker is cut for three keep-alive periods: the
/// runtime notices within 1.5 keep-alives (by its own clock), keeps every
/// result in its outbox, and delivers all of them once the network is
/// back; the subscriber sees every sequence number, duplicates only where
/// QoS 1 allows them.
#[test]
fn a_partition_is_detected_within_one_and_a_half_keep_alives_and_loses_nothing() {
    let Some(broker) = NetnsBroker::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keep_alive = 2.0;
    let cfg = config(dir.path(), "part", 50.0, &broker.url(), "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[mqtt]\n",
        &format!("[mqtt]\nkeep_alive_s = {keep_alive}\n"),
    );
    std::fs::write(&cfg, text).unwrap();
    let sub = persistent_subscriber(&broker.ip, broker.port, "edgeinfer/part/result");
    let mut dev = start(&cfg, &[]);
    let (tx, lines) = std::sync::mpsc::channel::<(Instant, String)>();
    let err = dev.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines() {
            if tx.send((Instant::now(), l.unwrap_or_default())).is_err() {
                return;
            }
        }
    });
    wait_seqs(&sub, |s| s.len() >= 50);
    let cut_at = Instant::now();
    broker.cut();
    // The runtime's own report: how long the broker had been silent.
    let (seen_at, line) = loop {
        let (at, l) = lines.recv_timeout(T).expect("no loss detected");
        if l.contains("presumed lost") {
            break (at, l);
        }
    };
    let silent: f64 = line
        .split("for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(silent <= 1.5 * keep_alive, "{line}");
    eprintln!(
        "partition detected {:.2} s after the cut (keep-alive {keep_alive} s): {line}",
        seen_at.duration_since(cut_at).as_secs_f64()
    );
    // Stay cut for three keep-alives in all, then heal.
    std::thread::sleep(Duration::from_secs_f64(3.0 * keep_alive).saturating_sub(cut_at.elapsed()));
    broker.heal();
    let healed_at = Instant::now();
    common::signal(dev.id(), 15);
    let status = dev.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    while let Ok((_, l)) = lines.recv_timeout(Duration::from_secs(5)) {
        rest.push_str(&l);
        rest.push('\n');
    }
    let summary = rest
        .lines()
        .find(|l| l.contains("inferences"))
        .unwrap_or_else(|| panic!("no summary in {rest}"));
    let emitted: u64 = summary
        .split(" results")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    wait_seqs(&sub, |s| s.len() as u64 >= emitted);
    let got = seqs(&sub);
    assert!(
        got.len() as u64 == emitted && got.iter().all(|s| *s < emitted),
        "{} of {emitted} results received: {summary}",
        got.len()
    );
    eprintln!(
        "partition: {emitted} results, all delivered {:.1} s after the network came back",
        healed_at.elapsed().as_secs_f64()
    );
}

/// Power loss, fifty times over: the runtime is SIGKILLed at seeded random
/// moments while it publishes and while the outbox rotates segment files.
/// Every restart opens the outbox and continues the numbering, and in the
/// end the subscriber holds every sequence number from 0 up: nothing that
/// was written to the outbox was lost.
#[test]
fn sigkill_at_random_moments_loses_nothing_written_to_the_outbox() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // Small segments: the kills land while files rotate, too.
    let cfg = config(
        dir.path(),
        "kill",
        400.0,
        &broker.url(),
        "segment_bytes = 2048\n",
    );
    let sub = Subscriber::connect(broker.port, &["edgeinfer/kill/result"]);
    let mut rng = Rng::new(20261129);
    for i in 0..50 {
        let mut dev = start(&cfg, &[]);
        let wait = 60 + (rng.uniform() * 400.0) as u64;
        std::thread::sleep(Duration::from_millis(wait));
        dev.kill().unwrap();
        dev.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut dev.stderr.take().unwrap(), &mut err).unwrap();
        assert!(
            !err.contains("panicked") && !err.contains("error:"),
            "run {i}: {err}"
        );
    }
    let aside = std::fs::read_dir(dir.path().join("outbox-kill"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".corrupt"))
        .count();
    // One more run delivers the backlog, then one new result last.
    let dev = start(&cfg, &["--count", "1"]);
    let o = dev.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let next: u64 = std::fs::read_to_string(dir.path().join("outbox-kill/next_seq"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_seqs(&sub, |s| s.contains(&(next - 1)) && s.len() as u64 >= next);
    assert_eq!(
        seqs(&sub),
        (0..next).collect(),
        "{aside} segments set aside"
    );
    eprintln!(
        "power loss: 50 kills, {next} results, all delivered; {aside} torn segments set aside"
    );
}

/// The outbox on a disk that fills up (a 128 KiB tmpfs) with no broker:
/// a clear error in the log, the configured drop policy, inference goes
/// on, and once the broker is back everything still on disk arrives.
#[test]
fn a_full_disk_drops_by_policy_and_the_runtime_keeps_inferring() {
    let dir = tempfile::tempdir().unwrap();
    let Some(tmpfs) = common::small_tmpfs(dir.path(), "128k") else {
        return;
    };
    let mnt = tmpfs.0.clone();

    let port = common::broker::free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    // max_bytes larger than the disk: the disk fills first.
    let cfg = config(
        dir.path(),
        "disk",
        2000.0,
        &url,
        "max_bytes = 10000000\nsegment_bytes = 8192\n",
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "dir = \"outbox-disk\"",
        &format!("dir = {:?}", mnt.join("outbox")),
    );
    std::fs::write(&cfg, text).unwrap();
    let mut dev = start(&cfg, &[]);
    let err = dev.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines() {
            let _ = tx.send(l.unwrap_or_default());
        }
    });
    let deadline = Instant::now() + T;
    let full = loop {
        let l = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no disk-full report");
        if l.contains("No space left") || l.contains("disk full") {
            break l;
        }
    };
    assert!(full.contains("outbox"), "{full}");
    // Still inferring after the disk filled up: more samples keep coming.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        dev.try_wait().unwrap().is_none(),
        "the runtime stopped on a full disk"
    );
    // The broker comes back: what is on disk is delivered, the disk frees up.
    let broker = Broker::start_on(port, |_, port| {
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n")
    });
    let sub = Subscriber::connect(broker.port, &["edgeinfer/disk/#"]);
    // More results than the 128 KiB disk can hold (about 2,000): writing
    // resumed once the link freed space.
    wait_seqs(&sub, |s| s.len() >= 5000);
    // The failure was reported on the error topic too.
    sub.wait_for(T, |m| {
        m.iter().any(|m| {
            m.topic.ends_with("/error") && String::from_utf8_lossy(&m.payload).contains("disk full")
        })
    });
    common::signal(dev.id(), 15);
    assert!(dev.wait().unwrap().success());
    let mut rest = String::new();
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(5)) {
        rest.push_str(&l);
        rest.push('\n');
    }
    assert!(!rest.contains("panicked"), "{rest}");
    // The exit summary says what the full disk cost.
    let summary = rest
        .lines()
        .find(|l| l.contains("inferences"))
        .unwrap_or_else(|| panic!("{rest}"));
    assert!(summary.contains("dropped by the full outbox"), "{summary}");
    eprintln!("full disk: {summary}");
}

/// The number before `word` in the exit summary line of `log`.
fn summary_count(log: &str, word: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("inferences"))
        .unwrap_or_else(|| panic!("no summary in {log}"));
    let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let i = words
        .iter()
        .position(|w| *w == word)
        .unwrap_or_else(|| panic!("no {word} in {line}"));
    words[i - 1].parse().unwrap()
}

/// SIGTERM while the broker is away: the runtime stops inferring, puts
/// what it holds into the outbox and exits 0 within `grace_s`; the next
/// start delivers every result.
#[test]
fn sigterm_with_the_broker_away_exits_within_grace_and_keeps_everything() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "term", 200.0, &broker.url(), "");
    let grace = 3.0;
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("grace_s = 20.0", &format!("grace_s = {grace}"));
    std::fs::write(&cfg, text).unwrap();
    let mut o = rumqttc::MqttOptions::new("term-sub", "127.0.0.1", broker.port);
    o.set_clean_session(false);
    let sub = Subscriber::connect_with(o, &["edgeinfer/term/result"]);
    let dev = start(&cfg, &[]);
    wait_seqs(&sub, |s| s.len() >= 20);
    broker.kill();
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    common::signal(dev.id(), 15);
    let out = dev.wait_with_output().unwrap();
    let took = asked.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{:?}: {log}", out.status);
    // Generous slack for a loaded machine; the point is that it does not
    // hang on an unreachable broker.
    assert!(took < grace + 5.0, "took {took:.1} s: {log}");
    assert!(log.contains("still unacknowledged"), "{log}");
    let emitted = summary_count(&log, "results");
    broker.restart();
    // The subscriber reconnects every 20 ms; let it be back first.
    std::thread::sleep(Duration::from_secs(1));
    let dev = start(&cfg, &["--count", "1"]);
    assert!(dev.wait_with_output().unwrap().status.success());
    wait_seqs(&sub, |s| s.len() as u64 > emitted);
    assert_eq!(seqs(&sub), (0..=emitted).collect());
    eprintln!("SIGTERM with the broker away: exit 0 after {took:.2} s, {emitted} results kept and delivered");
}

/// A sensor program that dies is started again with backoff; each restart
/// is counted in the metrics and reported on the error topic, and the
/// pipeline goes on with the new program's samples.
#[test]
fn a_sensor_program_that_dies_is_restarted_and_counted() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cmd.toml");
    std::fs::write(
        &cfg,
        format!(
            "device_id = \"cmd\"\n[model]\npath = {}\n[source]\nkind = \"command\"\n\
             program = \"sh\"\nargs = [\"-c\", \"for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo $i; done; exit 3\"]\n\
             restart_min_ms = 50\nrestart_max_ms = 200\n[window]\nsize = 10\nhop = 10\n\
             [[sink]]\nkind = \"mqtt\"\n[mqtt]\nbroker = \"{}\"\nmetrics_interval_s = 0.2\n\
             [outbox]\ndir = \"outbox\"\n",
            model("thermal-trend"),
            broker.url()
        ),
    )
    .unwrap();
    let sub = Subscriber::connect(broker.port, &["edgeinfer/cmd/#"]);
    let dev = start(&cfg, &["--count", "6"]);
    let o = dev.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // 12 lines per run, a result per 10: six results need at least four runs.
    assert!(err.contains("restarting it in"), "{err}");
    let restarts = summary_count(&err, "source");
    assert!(restarts >= 3, "{err}");
    // The metrics carry the count (how far it got depends on timing).
    sub.wait_for(T, |m| {
        m.iter().any(|m| {
            m.topic.ends_with("/metrics")
                && serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()
                    ["source_restarts"]
                    .is_u64()
        })
    });
    let errors = sub.on("/error");
    assert!(
        errors
            .iter()
            .any(|m| String::from_utf8_lossy(&m.payload).contains("exited (exit status: 3)")),
        "{:?}",
        errors.len()
    );
}

/// Collects a child's stderr lines in a thread, with when each came.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines() {
            if tx.send(l.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`, returning everything read so far.
fn wait_line(lines: &std::sync::mpsc::Receiver<String>, needle: &str, log: &mut String) {
    let deadline = Instant::now() + T;
    while !log.contains(needle) {
        let l = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no {needle:?} in {log}"));
        log.push_str(&l);
        log.push('\n');
    }
}

/// Sensors that vanish or end badly: a polled file that disappears and
/// comes back (warned once each way, the pipeline goes on), a replay file
/// cut off mid-line (the partial line skipped and counted). A stdin that
/// closes is a clean end: tests/cli.rs.
#[test]
fn sensors_that_vanish_come_back_and_cut_files_end_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let temp = dir.path().join("temp");
    std::fs::write(&temp, "42000\n").unwrap();
    let cfg = dir.path().join("poll.toml");
    std::fs::write(
        &cfg,
        format!(
            "device_id = \"poll\"\n[model]\npath = {}\n[source]\nkind = \"file_poll\"\nrate_hz = 50.0\n\
             [[source.files]]\npath = {temp:?}\nscale = 0.001\n\
             [[preprocess]]\nop = \"missing\"\npolicy = \"hold_last\"\n[[sink]]\nkind = \"stdout\"\n",
            model("thermal-trend")
        ),
    )
    .unwrap();
    let mut dev = bin()
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut dev);
    let mut log = String::new();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&temp).unwrap();
    wait_line(&lines, "reads as missing", &mut log);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&temp, "43000\n").unwrap();
    wait_line(&lines, "readable again", &mut log);
    std::thread::sleep(Duration::from_millis(300));
    common::signal(dev.id(), 15);
    let out = dev.wait_with_output().unwrap();
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(5)) {
        log.push_str(&l);
        log.push('\n');
    }
    assert!(out.status.success(), "{log}");
    assert_eq!(log.matches("reads as missing").count(), 1, "{log}");
    let results = json_lines(&String::from_utf8_lossy(&out.stdout));
    assert!(results.len() >= 10, "{log}");
    // The mean of the last window is the new reading: the channel came back.
    let last = &results.last().unwrap()["values"][0];
    assert!((last.as_f64().unwrap() - 43.0).abs() < 1e-3, "{last}");

    // A recording cut off mid-line.
    let csv = dir.path().join("cut.csv");
    let mut text = edgeinfer::export::zoo::simulated_csv(1, 200);
    text.push_str("2000,0.12");
    std::fs::write(&csv, text).unwrap();
    let o = run(bin()
        .args(["replay", "--config"])
        .arg(repo("examples/replay-vibration.toml"))
        .arg("--input")
        .arg(&csv)
        .arg("--output")
        .arg(dir.path().join("cut.jsonl")));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    // 200 rows, windows of 64 every 32: 1 + (200 - 64) / 32 = 5.
    assert_eq!(summary_count(&err, "results"), 5, "{err}");
    assert_eq!(summary_count(&err, "skipped"), 1, "{err}");
}

/// Settings that would publish where they should not, or write outside
/// the state directory, are refused; the state directory is the owner's
/// alone.
#[test]
fn hostile_settings_are_refused_and_the_state_directory_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[model]\npath = {}\n[source]\nkind = \"simulated\"\n[[sink]]\nkind = \"mqtt\"\n",
        model("demo")
    );
    for (extra, needles) in [
        (
            "[mqtt]\nprefix = \"plant/#\"\n".to_string(),
            vec!["mqtt.prefix", "wildcards"],
        ),
        (
            "[mqtt]\nprefix = \"plant/+/x\"\n".to_string(),
            vec!["mqtt.prefix", "wildcards"],
        ),
        (
            "[mqtt]\nprefix = \"plant//x\"\n".to_string(),
            vec!["mqtt.prefix", "empty levels"],
        ),
        (
            "device_id = \"../../etc\"\n".to_string(),
            vec!["device_id", "'/'"],
        ),
        ("device_id = \"a+b\"\n".to_string(), vec!["device_id"]),
    ] {
        let body = if extra.starts_with("device_id") {
            format!("{extra}{base}")
        } else {
            format!("{base}{extra}")
        };
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, body).unwrap();
        let o = run(bin().args(["check", "--config"]).arg(&cfg));
        assert_bad_input(&o, &needles);
    }
    // The default state directory, made by the runtime, is 0700.
    let home = tempfile::tempdir().unwrap();
    let port = common::broker::free_port();
    let mut dev = bin()
        .args(["run", "--broker", &format!("mqtt://127.0.0.1:{port}")])
        .env("HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let outbox = home.path().join(".local/state/edgeinfer/demo/outbox");
    let deadline = Instant::now() + T;
    while !outbox.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    common::signal(dev.id(), 2);
    assert!(dev.wait().unwrap().success());
    use std::os::unix::fs::PermissionsExt;
    for d in [
        outbox.clone(),
        outbox.parent().unwrap().to_path_buf(),
        home.path().join(".local/state/edgeinfer"),
    ] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", d.display());
    }
}

/// Sensor messages larger than `max_payload_bytes` are refused before they
/// are decoded: counted, reported, skipped; the next good one is used.
#[test]
fn oversized_payloads_are_refused_before_decoding() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("big.toml");
    std::fs::write(
        &cfg,
        format!(
            "device_id = \"big\"\n[model]\npath = {}\n[source]\nkind = \"mqtt\"\nchannels = 10\n\
             max_payload_bytes = 1024\n[[source.topics]]\nfilter = \"in\"\nformat = \"csv\"\n\
             [window]\nsize = 1\nlayout = \"flat\"\n[[sink]]\nkind = \"mqtt\"\n\
             [mqtt]\nbroker = \"{}\"\n[outbox]\ndir = \"outbox\"\n",
            model("seed-mlp"),
            broker.url()
        ),
    )
    .unwrap();
    let sub = Subscriber::connect(broker.port, &["edgeinfer/big/#"]);
    let dev = start(&cfg, &["--count", "1"]);
    sub.wait_for(T, |m| {
        m.iter()
            .any(|m| m.topic.ends_with("/status") && m.payload == b"online")
    });
    // 100 KB of digits that would parse as a (wrong) sample if decoded.
    sub.publish("in", "1,".repeat(50_000) + "1");
    sub.publish("in", "1,2,3,4,5,6,7,8,9,10");
    let o = dev.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    sub.wait_for(T, |m| m.iter().any(|m| m.topic.ends_with("/result")));
    let errors = sub.on("/error");
    assert!(
        errors
            .iter()
            .any(|m| String::from_utf8_lossy(&m.payload).contains("over max_payload_bytes")),
        "{} error reports",
        errors.len()
    );
}
