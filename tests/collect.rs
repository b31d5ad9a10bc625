//! `edgeinfer-host collect`, `query`, `report`, `dashboard` and `fleet-sim`
//! against real parts: Mosquitto, SQLite files, a private PostgreSQL
//! server, headless Chromium.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::broker::{Broker, Subscriber};
use common::postgres::Postgres;
use common::{signal, skip};
use edgeinfer::host::collect::store::{Store, Val};
use edgeinfer::schema::{ClassResult, Prediction, ResultBatch, ResultRecord, SCHEMA_VERSION};

fn host() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgeinfer-host"));
    c.env_remove("EDGEINFER_BROKER").env_remove("EDGEINFER_DB");
    c
}

/// A running `edgeinfer-host` with its stderr lines kept and forwarded;
/// killed when dropped, so a failing test leaves nothing running.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    log: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = host()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        let log = Arc::new(Mutex::new(String::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                keep.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        Proc { child, lines, log }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no {needle:?} line; stderr: {}", self.log());
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit summary on stdout.
    fn stop(mut self) -> serde_json::Value {
        signal(self.child.id(), 15);
        let mut text = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit {status:?}: {}", self.log());
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A collector that has subscribed.
fn collector(broker: &Broker, db: &str, extra: &[&str]) -> Proc {
    let url = broker.url();
    let mut args = vec!["collect", "--broker", &url, "--db", db];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args);
    p.wait_line("subscribed to", Duration::from_secs(20));
    p
}

fn sim(broker: &Broker, devices: usize, rate: f64, seconds: f64) -> Child {
    host()
        .args(["fleet-sim", "--broker", &broker.url()])
        .args([
            "--devices",
            &devices.to_string(),
            "--rate",
            &rate.to_string(),
        ])
        .args(["--seconds", &seconds.to_string(), "--metrics-every", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sim_summary(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "fleet-sim: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn count(db: &str, sql: &str) -> i64 {
    let mut s = Store::open(db).unwrap();
    s.query(sql, &[]).unwrap()[0][0].int().unwrap_or(0)
}

/// Waits until the database holds `n` results (or the time is up).
fn wait_results(db: &str, n: i64, timeout: Duration) -> i64 {
    let until = Instant::now() + timeout;
    loop {
        let have = Store::open(db)
            .ok()
            .and_then(|mut s| s.query("SELECT COUNT(*) FROM results", &[]).ok())
            .and_then(|r| r[0][0].int())
            .unwrap_or(-1);
        if have >= n || Instant::now() > until {
            return have;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `sql` counts `n` (or the time is up); returns the count.
fn wait_count(db: &str, sql: &str, n: i64, timeout: Duration) -> i64 {
    let until = Instant::now() + timeout;
    loop {
        let have = count(db, sql);
        if have == n || Instant::now() > until {
            return have;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every device's results are exactly seq 1..=n, each once, and they add
/// up to what the simulator had acknowledged.
fn assert_complete(db: &str, devices: usize, total: i64) {
    let mut s = Store::open(db).unwrap();
    let rows = s
        .query(
            "SELECT device, COUNT(*), MIN(seq), MAX(seq) FROM results GROUP BY device ORDER BY device",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), devices, "{rows:?}");
    let mut sum = 0;
    for r in &rows {
        let (n, lo, hi) = (
            r[1].int().unwrap(),
            r[2].int().unwrap(),
            r[3].int().unwrap(),
        );
        assert_eq!(
            (lo, hi),
            (1, n),
            "device {:?}: {n} results, seq {lo}..{hi}",
            r[0]
        );
        sum += n;
    }
    assert_eq!(sum, total);
    // The per-device counter the dashboard reads moved with the rows.
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM devices d WHERE d.results <> \
             (SELECT COUNT(*) FROM results r WHERE r.device = d.id)"
        ),
        0
    );
}

/// Mosquitto (not the embedded fallback broker, for shared
/// subscriptions), configured for collectors as docs/collect.md says: the
/// default queue of 1000 messages per client overflows, and Mosquitto drops
/// what overflows, whenever a collector falls a second or two behind.
fn mosquitto() -> Option<Broker> {
    let b = Broker::start_with(|_, port| {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\n\
             max_queued_messages 1000000\nmax_inflight_messages 100\n"
        )
    });
    if !b.is_mosquitto() {
        skip("shared subscriptions are tested through Mosquitto");
        return None;
    }
    Some(b)
}

/// Three collectors in one `$share` group split a 50-device fleet; one is
/// SIGKILLed mid-run and comes back under its client id (as a service
/// manager restarts it): every (device, seq) is stored exactly once.
fn three_collectors_one_killed(db: &str) {
    let Some(broker) = mosquitto() else { return };
    let group = ["--group", "fleet"];
    let c1 = collector(&broker, db, &[&group[..], &["--client-id", "c1"]].concat());
    let c2 = collector(&broker, db, &[&group[..], &["--client-id", "c2"]].concat());
    let c3 = collector(&broker, db, &[&group[..], &["--client-id", "c3"]].concat());
    let fleet = sim(&broker, 50, 20.0, 6.0);
    std::thread::sleep(Duration::from_secs(2));
    drop(c2); // SIGKILL
    std::thread::sleep(Duration::from_secs(1));
    let c2 = collector(&broker, db, &[&group[..], &["--client-id", "c2"]].concat());
    let summary = sim_summary(fleet);
    let total = summary["results"].as_i64().unwrap();
    assert!(total >= 50 * 60, "{summary}");
    let stored = wait_results(db, total, Duration::from_secs(60));
    assert_eq!(
        stored,
        total,
        "collector logs:\n{}\n{}\n{}",
        c1.log(),
        c2.log(),
        c3.log()
    );
    // Each simulated device said offline as it left; every collector
    // receives status, so this waits on whichever writes it.
    let offline = "SELECT COUNT(*) FROM devices WHERE online = 0";
    assert_eq!(wait_count(db, offline, 50, Duration::from_secs(30)), 50);
    let stats: Vec<_> = [c1, c2, c3].into_iter().map(Proc::stop).collect();
    // The group split the work: every collector stored some of it.
    for s in &stats {
        assert!(s["results"].as_u64().unwrap() > 0, "{stats:?}");
    }
    assert_complete(db, 50, total);
    // Status and info reached the database for every device.
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM devices WHERE model_sha256 IS NOT NULL"
        ),
        50
    );
    assert!(count(db, "SELECT COUNT(*) FROM metrics") >= 50);
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM results WHERE label IS NULL"),
        0,
        "labels from info"
    );
}

#[test]
fn shared_group_of_three_collectors_loses_nothing_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fleet.sqlite");
    three_collectors_one_killed(db.to_str().unwrap());
}

#[test]
fn shared_group_of_three_collectors_loses_nothing_postgres() {
    let Some(pg) = Postgres::start() else { return };
    three_collectors_one_killed(&pg.url());
}

/// PostgreSQL stopped for a few seconds in the middle of a run: the
/// collector stops acknowledging, reconnects with backoff and catches up.
#[test]
fn postgres_restarted_mid_run_loses_nothing() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let Some(broker) = mosquitto() else { return };
    let db = pg.url();
    let c = collector(&broker, &db, &["--client-id", "pg-restart"]);
    let fleet = sim(&broker, 5, 50.0, 6.0);
    std::thread::sleep(Duration::from_secs(2));
    pg.stop();
    c.wait_line("database write failed", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    pg.start_again();
    c.wait_line("database back", Duration::from_secs(30));
    let total = sim_summary(fleet)["results"].as_i64().unwrap();
    assert_eq!(wait_results(&db, total, Duration::from_secs(60)), total);
    let stats = c.stop();
    assert!(stats["db_failures"].as_u64().unwrap() >= 1, "{stats}");
    assert_complete(&db, 5, total);
}

/// A collector that comes back to a backlog larger than one transaction
/// (10 000 messages waiting in its session) takes all of it. Acks that did
/// not fit rumqttc's request queue used to be dropped, and the broker's
/// in-flight window, full of messages never acknowledged, stalled delivery
/// for good after ~1 600 messages.
#[test]
fn a_backlog_waiting_in_the_session_is_collected_whole() {
    let Some(broker) = mosquitto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("backlog.sqlite");
    let db = db.to_str().unwrap();
    collector(&broker, db, &["--client-id", "backlog"]).stop();
    let total = sim_summary(sim(&broker, 50, 100.0, 2.0))["results"]
        .as_i64()
        .unwrap();
    assert!(total >= 9000, "{total}");
    let c = collector(&broker, db, &["--client-id", "backlog"]);
    let stored = wait_results(db, total, Duration::from_secs(60));
    assert_eq!(stored, total, "collector log:\n{}", c.log());
    let stats = c.stop();
    assert_eq!(stats["results"].as_i64().unwrap(), total, "{stats}");
    assert_complete(db, 50, total);
}

/// An SQLite file held locked by another writer longer than the busy
/// timeout: the collector backs off without acknowledging and catches up.
#[test]
fn sqlite_locked_by_another_writer_loses_nothing() {
    let Some(broker) = mosquitto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("locked.sqlite");
    let db = db.to_str().unwrap();
    let c = collector(&broker, db, &["--client-id", "locked"]);
    let fleet = sim(&broker, 3, 20.0, 5.0);
    std::thread::sleep(Duration::from_secs(1));
    let lock = rusqlite::Connection::open(db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    c.wait_line("database write failed", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    let total = sim_summary(fleet)["results"].as_i64().unwrap();
    let stored = wait_results(db, total, Duration::from_secs(60));
    assert_eq!(stored, total, "collector log:\n{}", c.log());
    let stats = c.stop();
    assert!(stats["db_failures"].as_u64().unwrap() >= 1, "{stats}");
    assert_complete(db, 3, total);
}

fn batch(device: &str, seqs: std::ops::RangeInclusive<u64>, class: u32) -> Vec<u8> {
    ResultBatch {
        version: SCHEMA_VERSION,
        model: None,
        device: device.into(),
        records: seqs
            .map(|seq| ResultRecord {
                source: None,
                seq,
                ts_ms: 1_700_000_000_000 + seq * 1000,
                result: Prediction::Class(ClassResult {
                    class,
                    score: 0.75,
                    top: vec![(class, 0.75)],
                }),
            })
            .collect(),
    }
    .to_postcard()
}

fn query(db: &str, args: &[&str]) -> String {
    let out = host()
        .args(["query", "--db", db])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Garbage on a result topic is stored as an error and skipped; results
/// from a device that has sent no info yet are kept, and `query` names
/// their classes once the info arrives; QoS 1 duplicates are dropped and
/// counted.
#[test]
fn bad_payloads_and_devices_without_info_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bad.sqlite");
    bad_payloads_and_devices_without_info(db.to_str().unwrap());
}

#[test]
fn bad_payloads_and_devices_without_info_postgres() {
    let Some(pg) = Postgres::start() else { return };
    bad_payloads_and_devices_without_info(&pg.url());
}

/// ... and text PostgreSQL would refuse (a NUL in a label) is stored
/// with U+FFFD rather than failing its batch on every redelivery; results
/// are filed under the device their topic names, whatever the payload says.
fn bad_payloads_and_devices_without_info(db: &str) {
    let Some(broker) = mosquitto() else { return };
    let c = collector(&broker, db, &["--client-id", "bad"]);
    let pubr = Subscriber::connect(broker.port, &["test/unused"]);
    pubr.publish("edgeinfer/junk/result", vec![0xff, 0x00, 0x13, 0x37]);
    pubr.publish("edgeinfer/junk/status", "maybe");
    pubr.publish("edgeinfer/junk/metrics", "not json");
    pubr.publish("edgeinfer/new/result", batch("new", 1..=3, 1));
    pubr.publish("edgeinfer/new/result", batch("impostor", 2..=4, 1));
    assert_eq!(wait_results(db, 4, Duration::from_secs(20)), 4);
    // No info yet: stored with the class and no label.
    let rows = query(db, &["--device", "new"]);
    let rows = common::json_lines(&rows);
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["class"], 1);
    assert!(rows[0]["label"].is_null(), "{}", rows[0]);
    pubr.publish(
        "edgeinfer/new/info",
        r#"{"device":"new","labels":["ok","wo\u0000rn"],"model_sha256":"ab"}"#,
    );
    let until = Instant::now() + Duration::from_secs(20);
    while count(db, "SELECT COUNT(*) FROM devices WHERE labels IS NOT NULL") == 0 {
        assert!(Instant::now() < until, "info not stored: {}", c.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let rows = common::json_lines(&query(db, &["--device", "new"]));
    assert_eq!(rows[3]["label"], "wo\u{fffd}rn");
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM devices WHERE id = 'impostor'"),
        0
    );
    assert_eq!(rows[3]["seq"], 4);
    // With the labels known, a result and a device error, both with text
    // PostgreSQL refuses raw, are stored at once.
    // The error and metrics twice each, as a redelivery would send them:
    // stored once. One publisher's messages arrive in order, so once
    // result 5 is stored, they have been handled.
    for _ in 0..2 {
        pubr.publish(
            "edgeinfer/new/error",
            r#"{"ts_ms":5,"reason":"bad\u0000thing"}"#,
        );
        pubr.publish("edgeinfer/new/metrics", r#"{"ts_ms":5,"samples":80}"#);
    }
    pubr.publish("edgeinfer/new/result", batch("new", 5..=5, 1));
    assert_eq!(
        wait_results(db, 5, Duration::from_secs(20)),
        5,
        "{}",
        c.log()
    );
    let rows = common::json_lines(&query(db, &["--device", "new"]));
    assert_eq!(rows[4]["label"], "wo\u{fffd}rn");
    assert_eq!(count(db, "SELECT COUNT(*) FROM metrics"), 1);
    let reasons = count(
        db,
        "SELECT COUNT(*) FROM errors WHERE reason = 'bad\u{fffd}thing'",
    );
    assert_eq!(reasons, 1);
    let stats = c.stop();
    assert_eq!(stats["undecodable"], 3, "{stats}");
    assert_eq!(stats["duplicates"], 2, "{stats}");
    assert_eq!(
        count(db, "SELECT duplicates FROM devices WHERE id = 'new'"),
        2
    );
    let mut s = Store::open(db).unwrap();
    let errors = s
        .query(
            "SELECT device, source, reason FROM errors WHERE source = 'collector' ORDER BY reason",
            &[],
        )
        .unwrap();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.iter().all(|e| e[0] == Val::Text("junk".into())));
    assert!(errors.iter().all(|e| e[1] == Val::Text("collector".into())));
    let reasons: Vec<&str> = errors.iter().filter_map(|e| e[2].text()).collect();
    assert!(
        reasons[0].contains("edgeinfer/junk/metrics: expected a JSON object"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("neither a postcard nor a JSON result batch"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("status \"maybe\""), "{reasons:?}");
}

/// A database written by a newer edgeinfer-host is refused with one clear
/// line, before anything is subscribed or written.
#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("newer.sqlite");
    let db = db.to_str().unwrap();
    Store::open(db)
        .unwrap()
        .execute("UPDATE edgeinfer_schema SET version = 42", &[])
        .unwrap();
    for args in [
        vec!["collect", "--broker", "mqtt://127.0.0.1:1", "--db", db],
        vec!["query", "--db", db],
    ] {
        let out = host().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("database schema version 42 is newer than this edgeinfer-host reads (1)"),
            "{err}"
        );
        assert!(err.contains(db), "{err}");
    }
    // And a query of a database that does not exist does not create one.
    let missing = dir.path().join("missing.sqlite");
    let out = host()
        .args(["query", "--db", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!missing.exists());
}

/// The SQLite file on a disk that fills up: writes fail, nothing is
/// acknowledged, and once space is freed the collector catches up.
#[test]
fn sqlite_on_a_full_disk_loses_nothing() {
    let Some(broker) = mosquitto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(tmpfs) = common::small_tmpfs(dir.path(), "16m") else {
        return;
    };
    let mnt = &tmpfs.0;
    let db = mnt.join("full.sqlite");
    let db = db.to_str().unwrap();
    let c = collector(&broker, db, &["--client-id", "full"]);
    // Leave almost no room.
    let filler = mnt.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let fleet = sim(&broker, 4, 50.0, 4.0);
    c.wait_line("database write failed", Duration::from_secs(30));
    std::fs::remove_file(&filler).unwrap();
    let total = sim_summary(fleet)["results"].as_i64().unwrap();
    let stored = wait_results(db, total, Duration::from_secs(60));
    assert_eq!(stored, total, "collector log:\n{}", c.log());
    let stats = c.stop();
    assert!(stats["db_failures"].as_u64().unwrap() >= 1, "{stats}");
    assert_complete(db, 4, total);
}

/// `query` filters by device and time and prints CSV; `report` writes a
/// summary and a chart per device from the same database.
#[test]
fn query_and_report_read_what_was_collected_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.sqlite");
    query_and_report_read_what_was_collected(db.to_str().unwrap());
}

#[test]
fn query_and_report_read_what_was_collected_postgres() {
    let Some(pg) = Postgres::start() else { return };
    query_and_report_read_what_was_collected(&pg.url());
}

fn query_and_report_read_what_was_collected(db: &str) {
    let Some(broker) = mosquitto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let c = collector(&broker, db, &["--client-id", "q"]);
    let total = sim_summary(sim(&broker, 3, 10.0, 2.0))["results"]
        .as_i64()
        .unwrap();
    assert_eq!(wait_results(db, total, Duration::from_secs(30)), total);
    let offline = "SELECT COUNT(*) FROM devices WHERE online = 0";
    assert_eq!(wait_count(db, offline, 3, Duration::from_secs(30)), 3);
    c.stop();
    let csv = query(db, &["--device", "sim-002", "--format", "csv"]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "device,seq,ts_ms,model_sha256,kind,class,label,score,detail,bytes,received_ms"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len() as i64, total / 3);
    assert!(rows.iter().all(|r| r.starts_with("sim-002,")));
    // Device time: everything is from the last minute, nothing from a
    // second from now on.
    assert_eq!(
        common::json_lines(&query(db, &["--since", "1m"])).len() as i64,
        total
    );
    let out = dir.path().join("report");
    let o = host()
        .args(["report", "--db", db, "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summaries: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summaries.as_array().unwrap().len(), 3);
    for s in summaries.as_array().unwrap() {
        assert_eq!(s["results"].as_i64().unwrap(), total / 3, "{s}");
        assert_eq!(s["missing"], 0);
        // 16 samples x 3 channels x 4 bytes per result against a few
        // bytes of postcard.
        assert!(s["bytes_ratio"].as_f64().unwrap() > 5.0, "{s}");
        let chart = out.join(s["chart"].as_str().unwrap());
        assert!(std::fs::read_to_string(chart).unwrap().contains("<svg"));
    }
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    for d in ["sim-001", "sim-002", "sim-003"] {
        assert!(md.contains(d), "{md}");
    }
    // What the dashboard serves, on this engine.
    let now = edgeinfer::clock::now_ms() as i64;
    let mut store = Store::open(db).unwrap();
    let snap = edgeinfer::host::collect::query::fleet_snapshot(&mut store, now).unwrap();
    assert_eq!(snap["totals"]["devices"], 3, "{snap}");
    assert_eq!(snap["totals"]["results"], total, "{snap}");
    for d in snap["devices"].as_array().unwrap() {
        assert_eq!(d["online"], false, "{d}");
        assert_eq!(d["results"].as_i64().unwrap(), total / 3, "{d}");
        let n = d["timeline"].as_array().unwrap().len() as i64;
        assert_eq!(n, (total / 3).min(120), "{d}");
        assert_eq!(d["last"]["seq"].as_i64().unwrap(), total / 3, "{d}");
        assert!(d["last"]["label"].is_string(), "{d}");
    }
}

/// The dashboard in a real headless browser: the page polls, the devices
/// appear with their state and last label, and a screenshot is taken.
#[test]
fn dashboard_shows_the_fleet_in_a_browser() {
    let Some(_) = common::browser::chromium() else {
        return;
    };
    let Some(broker) = mosquitto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dash.sqlite");
    let db = db.to_str().unwrap();
    let c = collector(&broker, db, &["--client-id", "dash"]);
    let total = sim_summary(sim(&broker, 3, 10.0, 2.0))["results"]
        .as_i64()
        .unwrap();
    assert_eq!(wait_results(db, total, Duration::from_secs(30)), total);
    // One device comes back online and stays: the others said offline.
    let p = Subscriber::connect(broker.port, &["test/unused"]);
    p.publish_retained("edgeinfer/sim-002/status", "online");
    let state = |online| format!("SELECT COUNT(*) FROM devices WHERE online = {online}");
    assert_eq!(wait_count(db, &state(1), 1, Duration::from_secs(20)), 1);
    assert_eq!(wait_count(db, &state(0), 2, Duration::from_secs(20)), 2);
    let dash = Proc::spawn(&["dashboard", "--db", db, "--listen", "127.0.0.1:0"]);
    let line = dash.wait_line("dashboard on ", Duration::from_secs(20));
    let url = line
        .split("dashboard on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let dom = common::browser::dump_dom(&url, 5000);
    let mut s = Store::open(db).unwrap();
    for id in ["sim-001", "sim-002", "sim-003"] {
        let row = dom
            .split("<tr")
            .find(|r| r.contains(&format!("data-id=\"{id}\"")))
            .unwrap_or_else(|| panic!("no row for {id}: {dom}"));
        let state = if id == "sim-002" { "online" } else { "offline" };
        assert!(
            row.contains(&format!(">{state}<")),
            "{id} not {state}: {row}"
        );
        let last = s
            .query(
                "SELECT label FROM results WHERE device = $1 ORDER BY seq DESC LIMIT 1",
                &[id.into()],
            )
            .unwrap();
        let label = last[0][0].text().unwrap().to_string();
        assert!(
            row.contains(&format!("class=\"label\">{label}<")),
            "{id}: last label {label}: {row}"
        );
        assert!(row.contains("<svg"), "{id} has no timeline");
    }
    let shot = dir.path().join("dashboard.png");
    common::browser::screenshot(&url, 5000, &shot, (1280, 800));
    let keep = std::env::var_os("EDGEINFER_KEEP_SCREENSHOT");
    if let Some(to) = keep {
        std::fs::copy(&shot, to).unwrap();
    }
    drop(dash);
    c.stop();
}
