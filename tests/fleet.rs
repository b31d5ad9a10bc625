//! Running a fleet, through a real broker and real processes: signed
//! updates (applied, refused, rolled back), SIGKILL while receiving and
//! while swapping, remote commands and replays, hot reload, a full disk,
//! and Home Assistant discovery checked field by field.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::broker::{Broker, Msg, Subscriber};
use common::{repo, signal};
use edgeinfer::export::{to_bytes, Dim, ElemType, GraphBuilder};
use edgeinfer::fleet::update::split;
use edgeinfer::fleet::wire::{self, Action, Bundle, Order, Reply, SelfTest};
use edgeinfer::schema::ResultBatch;
use prost::Message as _;
use tract_onnx::pb;

const T: Duration = Duration::from_secs(60);
const DEV: &str = "pi";

fn host() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgeinfer-host"));
    c.env_remove("EDGEINFER_BROKER");
    c
}

/// A device process; its stderr is kept; killed when dropped.
struct Device {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Device {
    fn start(cfg: &Path) -> Device {
        let mut child = common::bin()
            .args(["run", "--config"])
            .arg(cfg)
            .env("HOME", cfg.parent().unwrap())
            .env("RUST_LOG", "edgeinfer=info")
            .env_remove("EDGEINFER_BROKER")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                keep.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Device { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The demo model's ONNX proto.
fn demo_proto() -> pb::ModelProto {
    pb::ModelProto::decode(&std::fs::read(repo("models/demo/model.onnx")).unwrap()[..]).unwrap()
}

fn set_meta(m: &mut pb::ModelProto, key: &str, value: &str) {
    m.metadata_props.retain(|p| p.key != key);
    m.metadata_props.push(pb::StringStringEntryProto {
        key: key.into(),
        value: value.into(),
    });
}

/// The demo model with other class names and a version: another model
/// for the same pipeline.
fn model_b() -> Vec<u8> {
    let mut m = demo_proto();
    set_meta(&mut m, "edgeinfer.labels", r#"["healthy","worn"]"#);
    set_meta(&mut m, "edgeinfer.version", "v2");
    to_bytes(&m)
}

/// A model for the demo's window that loads and passes a self-test on
/// positive input, and gives NaN on the sensor's negative values: it
/// fails in service only.
fn model_sqrt() -> Vec<u8> {
    let mut g = GraphBuilder::new("sqrt");
    let x = g.input(
        "signal",
        ElemType::F32,
        &[Dim::Fixed(1), 3.into(), 64.into()],
    );
    let r = g.node("Sqrt", &[&x], &[]);
    let p = g.global_avg_pool(&r);
    let f = g.flatten(&p, 1);
    g.output(&f, "probs", ElemType::F32, &[Dim::Fixed(1), 3.into()]);
    for (k, v) in [
        ("edgeinfer.window", "64"),
        ("edgeinfer.hop", "32"),
        ("edgeinfer.layout", "ncw"),
        ("edgeinfer.channels", r#"["x","y","z"]"#),
        ("edgeinfer.task", "classify"),
        ("edgeinfer.labels", r#"["a","b","c"]"#),
        ("edgeinfer.version", "sqrt"),
    ] {
        g.metadata(k, v);
    }
    to_bytes(&g.finish())
}

/// The sqrt model's self-test: all ones in, one per channel out.
fn sqrt_selftest() -> SelfTest {
    SelfTest {
        input: vec![1.0; 3 * 64],
        output: vec![1.0; 3],
    }
}

/// A device that runs the demo model (copied to `dir/model/model.onnx`)
/// on a simulated sensor and publishes results, with `extra` appended.
fn setup(dir: &Path, broker: &Broker, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("model")).unwrap();
    std::fs::copy(repo("models/demo/model.onnx"), dir.join("model/model.onnx")).unwrap();
    let o = host()
        .args(["keygen", "--out"])
        .arg(dir.join("keys"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg = dir.join("device.toml");
    std::fs::write(
        &cfg,
        format!(
            "device_id = \"{DEV}\"\n[model]\npath = \"model/model.onnx\"\n\
             [source]\nkind = \"simulated\"\nrate_hz = 200.0\nchannels = 3\nmode = \"alternate\"\n\
             [[sink]]\nkind = \"mqtt\"\n[mqtt]\nbroker = \"{}\"\nreconnect_min_ms = 100\n\
             reconnect_max_ms = 500\nmetrics_interval_s = 0.5\n[outbox]\ndir = \"outbox\"\n{extra}",
            broker.url()
        ),
    )
    .unwrap();
    cfg
}

const REMOTE: &str = "[remote]\npublic_key = \"keys/edgeinfer.pub\"\nstate_dir = \"state\"\n";

fn key(dir: &Path) -> ed25519_dalek::SigningKey {
    wire::read_secret_key(&dir.join("keys")).unwrap()
}

/// A subscriber to the device's topics, the device started, and the
/// version of the model its first result came from.
fn start_watched(
    broker: &Broker,
    cfg: &Path,
    extra_filters: &[&str],
) -> (Subscriber, Device, String) {
    let mut filters = vec![format!("edgeinfer/{DEV}/#")];
    filters.extend(extra_filters.iter().map(|f| f.to_string()));
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    let sub = Subscriber::connect(broker.port, &filters);
    let dev = Device::start(cfg);
    sub.wait_for(T, |m| m.iter().any(|m| m.topic.ends_with("/result")));
    let version = results(&sub)[0].0.clone();
    (sub, dev, version)
}

fn replies(sub: &Subscriber) -> Vec<Reply> {
    sub.on(&format!("{DEV}/reply"))
        .iter()
        .filter_map(|m| serde_json::from_slice(&m.payload).ok())
        .collect()
}

/// The first reply to order `id`.
fn wait_reply(sub: &Subscriber, id: &str) -> Reply {
    sub.wait_for(T, |m| {
        m.iter().any(|m| {
            m.topic.ends_with("/reply")
                && serde_json::from_slice::<Reply>(&m.payload).is_ok_and(|r| r.id == id)
        })
    });
    replies(sub).into_iter().find(|r| r.id == id).unwrap()
}

/// The version a result message's tag names: its own, or for a model
/// that declares none, the start of its sha256 (as `info` and replies say).
fn tag_version(b: &ResultBatch) -> String {
    let t = b
        .model
        .as_ref()
        .expect("every result message names its model");
    if t.version.is_empty() {
        t.prefix_hex()[..12].to_string()
    } else {
        t.version.clone()
    }
}

/// Result batches received: (model version, seq, ts_ms) per record.
fn results(sub: &Subscriber) -> Vec<(String, u64, u64)> {
    sub.on(&format!("{DEV}/result"))
        .iter()
        .flat_map(|m| {
            let b = ResultBatch::from_postcard(&m.payload).unwrap();
            let v = tag_version(&b);
            b.records
                .into_iter()
                .map(move |r| (v.clone(), r.seq, r.ts_ms))
        })
        .collect()
}

/// Waits for `n` more results from the model of version `version`.
fn wait_results_of(sub: &Subscriber, version: &str, n: usize) {
    let before = results(sub).iter().filter(|r| r.0 == version).count();
    sub.wait_for(T, |m| {
        m.iter()
            .filter(|m| m.topic.ends_with("/result"))
            .flat_map(|m| {
                let b = ResultBatch::from_postcard(&m.payload).unwrap();
                std::iter::repeat_n(tag_version(&b), b.records.len())
            })
            .filter(|v| v == version)
            .count()
            >= before + n
    });
}

/// Every sequence number from the first to the last, none missing.
fn assert_no_gap(sub: &Subscriber) {
    let seqs: BTreeSet<u64> = results(sub).iter().map(|r| r.1).collect();
    let (first, last) = (*seqs.first().unwrap(), *seqs.last().unwrap());
    assert_eq!(
        seqs.len() as u64,
        last - first + 1,
        "sequence numbers missing between {first} and {last}"
    );
}

fn retained_info(sub: &Subscriber) -> serde_json::Value {
    let info = sub.on(&format!("{DEV}/info"));
    serde_json::from_slice(&info.last().unwrap().payload).unwrap()
}

/// Sends an update built by hand, after `mutate` had its way with the
/// manifest and the chunks; returns its id.
fn send_update(
    sub: &Subscriber,
    key: Option<&ed25519_dalek::SigningKey>,
    model: Vec<u8>,
    selftest: Option<SelfTest>,
    mutate: impl FnOnce(&mut wire::Manifest, &mut Vec<wire::Chunk>),
) -> String {
    let id = format!("u{}", common::broker::free_port());
    let bundle = Bundle { model, selftest };
    let (mut manifest, mut chunks) = split(&bundle, &id, "test", 1000, vec![], vec![]);
    mutate(&mut manifest, &mut chunks);
    sub.publish(
        &format!("edgeinfer/{DEV}/cmd"),
        Order::new(DEV, &id, Action::Update(manifest)).sign(key),
    );
    for c in chunks {
        sub.publish(
            &format!("edgeinfer/{DEV}/update"),
            postcard::to_stdvec(&c).unwrap(),
        );
    }
    id
}

/// `edgeinfer-host deploy` to `targets` (`--device pi`, `--all`).
fn deploy(dir: &Path, broker: &Broker, model: &Path, targets: &[&str]) -> std::process::Output {
    host()
        .args(["deploy", "--broker", &broker.url(), "--key"])
        .arg(dir.join("keys"))
        .arg("--model")
        .arg(model)
        .args(["--timeout", "60"])
        .args(targets)
        .output()
        .unwrap()
}

fn cmd(dir: &Path, broker: &Broker, words: &[&str]) -> (Option<i32>, Reply) {
    let o = host()
        .args(["cmd", "--broker", &broker.url(), "--device", DEV, "--key"])
        .arg(dir.join("keys"))
        .args(["--timeout", "30"])
        .args(words)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let reply = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("{e}: {out} {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code(), reply)
}

/// The longest time between two consecutive results (by device time).
fn longest_gap_ms(r: &[(String, u64, u64)]) -> u64 {
    let mut by_seq: Vec<&(String, u64, u64)> = r.iter().collect();
    by_seq.sort_by_key(|r| r.1);
    by_seq.dedup_by_key(|r| r.1);
    by_seq
        .windows(2)
        .map(|w| w[1].2.saturating_sub(w[0].2))
        .max()
        .unwrap_or(0)
}

/// `deploy` sends a model; the device answers `applied`, its results
/// carry the new model's tag and its info the new labels, sequence
/// numbers run on without a gap; `rollback` goes back, and a restart
/// keeps what runs.
#[test]
fn a_signed_deploy_applies_without_a_gap_and_rolls_back_on_command() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = setup(d, &broker, REMOTE);
    let (sub, mut dev, a_version) = start_watched(&broker, &cfg, &[]);
    std::fs::create_dir_all(d.join("b")).unwrap();
    std::fs::write(d.join("b/model.onnx"), model_b()).unwrap();
    let o = deploy(d, &broker, &d.join("b/model.onnx"), &["--device", DEV]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        dev.log()
    );
    assert!(out.starts_with("pi: applied"), "{out}");
    wait_results_of(&sub, "v2", 20);
    let info = retained_info(&sub);
    assert_eq!(info["model_version"], "v2");
    assert_eq!(info["labels"], serde_json::json!(["healthy", "worn"]));
    let b_sha = edgeinfer::fleet::store::sha256_hex(&model_b());
    assert_eq!(info["model_sha256"], b_sha.as_str());
    let tagged = sub
        .on("/result")
        .iter()
        .rev()
        .find_map(|m| ResultBatch::from_postcard(&m.payload).unwrap().model)
        .unwrap();
    assert_eq!(tagged.prefix_hex(), &b_sha[..16]);
    sub.wait_for(T, |m| {
        m.iter().any(|m| {
            m.topic.ends_with("/metrics")
                && serde_json::from_slice::<serde_json::Value>(&m.payload)
                    .is_ok_and(|v| v["model_version"] == "v2")
        })
    });
    assert_no_gap(&sub);
    // Results of one model, then only of the other: no message mixes them.
    let versions: Vec<String> = results(&sub).into_iter().map(|r| r.0).collect();
    let switch = versions.iter().position(|v| v == "v2").unwrap();
    assert!(versions[..switch].iter().all(|v| *v == a_version));
    assert!(versions[switch..].iter().all(|v| v == "v2"));
    eprintln!(
        "longest gap between two results across the swap: {} ms",
        longest_gap_ms(&results(&sub))
    );

    let (code, reply) = cmd(d, &broker, &["rollback"]);
    assert_eq!((code, reply.outcome.as_str()), (Some(0), "ok"), "{reply:?}");
    assert_eq!(reply.model_version, a_version);
    wait_results_of(&sub, &a_version, 10);
    assert_no_gap(&sub);
    // What runs is on disk: a restart runs it again.
    dev.kill();
    let mut dev = Device::start(&cfg);
    let n = results(&sub).len();
    sub.wait_for(T, |m| {
        m.iter().filter(|m| m.topic.ends_with("/result")).count() > n + 5
    });
    assert!(results(&sub)[n..].iter().all(|r| r.0 == a_version));
    assert_no_gap(&sub);
    // `--all`: every device whose retained info says it takes updates.
    let o = deploy(d, &broker, &d.join("b/model.onnx"), &["--all"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.starts_with("pi: applied"), "{out}");
    wait_results_of(&sub, "v2", 5);
    assert_no_gap(&sub);
    // Two targets, one of them not there: each gets its line, and the
    // command fails because one did not apply it.
    let demo = repo("models/demo/model.onnx");
    let o = host()
        .args(["deploy", "--broker", &broker.url(), "--key"])
        .arg(d.join("keys"))
        .arg("--model")
        .arg(&demo)
        .args(["--devices", "pi,ghost", "--timeout", "5"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("pi: applied"), "{out}");
    assert!(out.contains("ghost: no answer"), "{out}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 of 2 devices did not apply the update"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    dev.kill();
}

/// Every bad update is refused with its reason, and one that fails in
/// service is rolled back; the device keeps publishing results of the
/// model it had throughout, with no gap. Chunks out of order or twice
/// (QoS 1 redelivers) still assemble.
#[test]
fn bad_updates_are_refused_or_rolled_back_and_nothing_is_lost() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = setup(
        d,
        &broker,
        &format!("{REMOTE}max_update_bytes = 100000\nchunk_timeout_s = 2.0\n"),
    );
    let (sub, _dev, a_version) = start_watched(&broker, &cfg, &[]);
    let k = key(d);
    let refused = |id: &str, needle: &str| {
        let r = wait_reply(&sub, id);
        assert_eq!(r.outcome, "refused", "{r:?}");
        assert!(r.detail.contains(needle), "{needle:?} not in {r:?}");
        assert_eq!(r.model_version, a_version);
    };
    // Signed by another key.
    let other = tempfile::tempdir().unwrap();
    wire::keygen(other.path()).unwrap();
    let id = send_update(
        &sub,
        Some(&wire::read_secret_key(other.path()).unwrap()),
        model_b(),
        None,
        |_, _| {},
    );
    refused(&id, "bad signature");
    // Unsigned.
    let id = send_update(&sub, None, model_b(), None, |_, _| {});
    refused(&id, "unsigned");
    // The signed sha256 is not that of the bytes sent.
    let id = send_update(&sub, Some(&k), model_b(), None, |m, _| {
        m.sha256 = edgeinfer::fleet::store::sha256_hex(b"something else")
    });
    refused(&id, "sha256 mismatch");
    // A chunk that never comes.
    let id = send_update(&sub, Some(&k), model_b(), None, |_, c| {
        c.remove(2);
    });
    refused(&id, "chunks missing (2)");
    // Chunks of an update no manifest announced.
    let stray = wire::Chunk {
        id: "nobody".into(),
        index: 0,
        data: vec![1, 2, 3],
    };
    sub.publish(
        &format!("edgeinfer/{DEV}/update"),
        postcard::to_stdvec(&stray).unwrap(),
    );
    refused("nobody", "unknown update");
    // Bigger than the device takes.
    let id = send_update(&sub, Some(&k), vec![0u8; 200_000], None, |_, _| {});
    refused(&id, "max_update_bytes = 100000");
    // Not a model.
    let id = send_update(&sub, Some(&k), b"not onnx at all".to_vec(), None, |_, _| {});
    refused(&id, "not an ONNX model");
    // A model for another input.
    let mlp = std::fs::read(repo("models/seed-mlp/model.onnx")).unwrap();
    let id = send_update(&sub, Some(&k), mlp, None, |_, _| {});
    refused(&id, "");
    // A self-test the model fails.
    let mut wrong = sqrt_selftest();
    wrong.output[1] = 2.0;
    let id = send_update(&sub, Some(&k), model_sqrt(), Some(wrong), |_, _| {});
    refused(&id, "self-test: output 1 is 1, the reference says 2");
    // Passes its self-test, then fails in service: rolled back.
    let id = send_update(
        &sub,
        Some(&k),
        model_sqrt(),
        Some(sqrt_selftest()),
        |_, _| {},
    );
    let r = wait_reply(&sub, &id);
    assert_eq!(r.outcome, "rolled_back", "{r:?}");
    assert!(r.detail.contains("failed 3 inferences in a row"), "{r:?}");
    assert_eq!(r.model_version, a_version);
    wait_results_of(&sub, &a_version, 10);
    assert!(
        results(&sub).iter().all(|r| r.0 == a_version),
        "a result came from a failing model"
    );
    assert_eq!(retained_info(&sub)["model_version"], a_version.as_str());
    // Every refusal was also reported on the error topic.
    assert!(sub.on("/error").len() >= 10);
    assert_no_gap(&sub);
    // Reordered and duplicated chunks assemble into the signed bytes.
    let id = send_update(&sub, Some(&k), model_b(), None, |_, c| {
        c.reverse();
        let again = c[1].clone();
        c.push(again);
    });
    let r = wait_reply(&sub, &id);
    assert_eq!(r.outcome, "applied", "{r:?}");
    // The version is the one the signed manifest names.
    wait_results_of(&sub, "test", 5);
    assert_no_gap(&sub);
}

/// Commands: ping, info, a `set` that changes batching at run time and
/// survives a restart, a `set` validation refuses, `restart`; an order
/// sent twice, one signed long ago, one for another device: refused.
#[test]
fn commands_round_trip_and_replays_are_refused() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = setup(d, &broker, REMOTE);
    let (sub, mut dev, _) = start_watched(&broker, &cfg, &[]);
    let (code, r) = cmd(d, &broker, &["ping"]);
    assert_eq!(
        (code, r.outcome.as_str(), r.detail.as_str()),
        (Some(0), "ok", "pong")
    );
    let (_, r) = cmd(d, &broker, &["info"]);
    assert_eq!(r.data.unwrap()["device"], DEV);
    for setting in ["batch_max_ms=60000", "batch_max_records=4"] {
        let (code, r) = cmd(d, &broker, &["set", setting]);
        assert_eq!((code, r.outcome.as_str()), (Some(0), "ok"), "{r:?}");
    }
    let per_message = |sub: &Subscriber, n: usize| {
        sub.wait_for(T, |m| {
            m.iter()
                .filter(|m| m.topic.ends_with("/result"))
                .rev()
                .take(3)
                .filter(|m| {
                    ResultBatch::from_postcard(&m.payload)
                        .unwrap()
                        .records
                        .len()
                        == n
                })
                .count()
                == 3
        })
    };
    per_message(&sub, 4);
    let (code, r) = cmd(d, &broker, &["set", "policy.heartbeat_ms=-5"]);
    assert_eq!((code, r.outcome.as_str()), (Some(1), "refused"), "{r:?}");
    assert!(r.detail.contains("policy.heartbeat_ms"), "{r:?}");
    let (code, r) = cmd(d, &broker, &["set", "model.path=\"x\""]);
    assert_eq!(code, Some(1));
    assert!(r.detail.contains("not settable at run time"), "{r:?}");
    // The setting is kept across a restart of the process...
    dev.kill();
    let sub2 = Subscriber::connect(broker.port, &[&format!("edgeinfer/{DEV}/result")]);
    let mut dev = Device::start(&cfg);
    per_message(&sub2, 4);
    // ... and across a remote restart, which keeps the pid.
    let pid = dev.child.id();
    let onlines = sub
        .on("/status")
        .iter()
        .filter(|m| m.payload == b"online")
        .count();
    let (code, r) = cmd(d, &broker, &["restart"]);
    assert_eq!((code, r.detail.as_str()), (Some(0), "restarting"));
    sub.wait_for(T, |m| {
        m.iter()
            .filter(|m| m.topic.ends_with("/status") && m.payload == b"online")
            .count()
            > onlines
    });
    // The process this test started is still the one running: restarted
    // in place, not exited.
    assert!(
        dev.child.try_wait().unwrap().is_none(),
        "the process {pid} exited instead of restarting in place"
    );
    assert!(dev.log().contains("edgeinfer: restarting"), "{}", dev.log());
    assert_no_gap(&sub);

    // Replays: the same signed bytes twice.
    let k = key(d);
    let ping = Order::new(DEV, "twice", Action::Ping).sign(Some(&k));
    sub.publish(&format!("edgeinfer/{DEV}/cmd"), ping.clone());
    assert_eq!(wait_reply(&sub, "twice").outcome, "ok");
    sub.publish(&format!("edgeinfer/{DEV}/cmd"), ping);
    sub.wait_for(T, |m| {
        m.iter()
            .filter(|m| m.topic.ends_with("/reply"))
            .filter_map(|m| serde_json::from_slice::<Reply>(&m.payload).ok())
            .filter(|r| r.id == "twice")
            .count()
            == 2
    });
    let second = replies(&sub)
        .into_iter()
        .filter(|r| r.id == "twice")
        .nth(1)
        .unwrap();
    assert_eq!(second.outcome, "refused");
    assert!(second.detail.contains("replayed"), "{second:?}");
    // Signed ten minutes ago.
    let mut old = Order::new(DEV, "old", Action::Ping);
    old.ts_ms -= 600_000;
    sub.publish(&format!("edgeinfer/{DEV}/cmd"), old.sign(Some(&k)));
    assert!(wait_reply(&sub, "old").detail.contains("expired"));
    // Signed for another device, sent to this one.
    sub.publish(
        &format!("edgeinfer/{DEV}/cmd"),
        Order::new("other", "elsewhere", Action::Ping).sign(Some(&k)),
    );
    assert!(wait_reply(&sub, "elsewhere")
        .detail
        .contains("signed for device \"other\""));
    dev.kill();
}

/// SIGKILL while chunks arrive, and while a swapped-in model is on
/// probation: after a restart the device runs a working model, results
/// go on, and the update gets its answer.
#[test]
fn sigkill_while_receiving_and_while_swapping_restarts_on_a_working_model() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Slow inferences (one per 32 samples at 10 Hz): a swapped-in model
    // waits about 3 s on probation, long enough to be killed there.
    let cfg = setup(d, &broker, REMOTE);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("rate_hz = 200.0", "rate_hz = 10.0");
    std::fs::write(&cfg, text).unwrap();
    let (sub, mut dev, a_version) = start_watched(&broker, &cfg, &[]);
    let k = key(d);
    let journal = d.join("state/journal.json");
    let wait_journal = |phase: &str| {
        let until = Instant::now() + T;
        loop {
            let j = std::fs::read_to_string(&journal).unwrap_or_default();
            if j.contains(phase) {
                return;
            }
            assert!(Instant::now() < until, "journal never reached {phase}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // Killed while receiving: half the chunks came.
    let id = send_update(&sub, Some(&k), model_b(), None, |_, c| {
        c.truncate(c.len() / 2);
    });
    wait_journal("receiving");
    dev.kill();
    let mut dev = Device::start(&cfg);
    let r = wait_reply(&sub, &id);
    assert_eq!(r.outcome, "interrupted", "{r:?}");
    assert_eq!(r.model_version, a_version);
    wait_results_of(&sub, &a_version, 2);

    // Killed with the new model swapped in and not yet confirmed.
    let id = send_update(&sub, Some(&k), model_b(), None, |_, _| {});
    wait_journal("probation");
    dev.kill();
    let current = std::fs::read_to_string(d.join("state/current.json")).unwrap();
    assert!(current.contains("\"test\""), "{current}");
    let _dev = Device::start(&cfg);
    // The restart resumes the probation: the first good inference confirms.
    let r = wait_reply(&sub, &id);
    assert_eq!(
        (r.outcome.as_str(), r.model_version.as_str()),
        ("applied", "test"),
        "{r:?}"
    );
    wait_results_of(&sub, "test", 2);
    assert_no_gap(&sub);
}

/// Replacing the model file swaps the new model in (verified and on
/// probation like an update, no signature needed); a broken file is
/// refused and reported while the model keeps running; SIGHUP reloads too.
#[test]
fn hot_reload_by_file_replacement_and_sighup() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = setup(d, &broker, REMOTE);
    let (sub, dev, a_version) = start_watched(&broker, &cfg, &[]);
    let model = d.join("model/model.onnx");
    let replace = |bytes: &[u8]| {
        let tmp = d.join("model/.incoming");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &model).unwrap();
    };
    // The reference files beside the model are its self-test: B passes
    // the demo's (same weights).
    std::fs::copy(repo("models/demo/input.npy"), d.join("model/input.npy")).unwrap();
    std::fs::copy(repo("models/demo/output.npy"), d.join("model/output.npy")).unwrap();
    replace(&model_b());
    wait_results_of(&sub, "v2", 10);
    assert_eq!(retained_info(&sub)["model_version"], "v2");
    // A broken file: refused, reported, v2 keeps running.
    replace(b"garbage");
    sub.wait_for(T, |m| {
        m.iter().any(|m| {
            m.topic.ends_with("/error")
                && String::from_utf8_lossy(&m.payload).contains("reload refused")
        })
    });
    wait_results_of(&sub, "v2", 10);
    // SIGHUP reloads (here the demo model back, after the broken file).
    std::fs::copy(repo("models/demo/model.onnx"), &model).unwrap();
    signal(dev.child.id(), 1);
    wait_results_of(&sub, &a_version, 10);
    assert_no_gap(&sub);
}

/// A full disk while receiving: the update is refused and the device
/// keeps running its model.
#[test]
fn a_full_disk_while_receiving_refuses_the_update() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(small) = common::small_tmpfs(d, "64k") else {
        return;
    };
    let broker = Broker::start();
    let cfg = setup(
        d,
        &broker,
        &format!(
            "[remote]\npublic_key = \"keys/edgeinfer.pub\"\nstate_dir = {:?}\n",
            small.0
        ),
    );
    let (sub, _dev, a_version) = start_watched(&broker, &cfg, &[]);
    // 200 kB do not fit in 64 KiB of tmpfs.
    let mut rng = edgeinfer::rng::Rng::new(7);
    let big: Vec<u8> = (0..200_000)
        .map(|_| (rng.uniform() * 256.0) as u8)
        .collect();
    let id = send_update(&sub, Some(&key(d)), big, None, |_, _| {});
    let r = wait_reply(&sub, &id);
    assert_eq!(r.outcome, "refused", "{r:?}");
    assert!(r.detail.contains("No space left"), "{r:?}");
    wait_results_of(&sub, &a_version, 10);
    // Space is free again: an update goes through.
    let id = send_update(&sub, Some(&key(d)), model_b(), None, |_, _| {});
    assert_eq!(wait_reply(&sub, &id).outcome, "applied");
    assert_no_gap(&sub);
}

fn json(m: &Msg) -> serde_json::Value {
    serde_json::from_slice(&m.payload).unwrap()
}

/// Home Assistant discovery, checked field by field against the MQTT
/// discovery schema: topics, unique ids, state and availability topics,
/// templates, the device block; published again when Home Assistant says
/// it is online; removed when turned off.
#[test]
fn home_assistant_discovery_follows_the_documented_schema() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ha = "[homeassistant]\nenabled = true\nname = \"Pump 7\"\n";
    let cfg = setup(d, &broker, &format!("{REMOTE}{ha}"));
    let sub = Subscriber::connect(
        broker.port,
        &["homeassistant/#", &format!("edgeinfer/{DEV}/#")],
    );
    let mut dev = Device::start(&cfg);
    let node = "edgeinfer_pi";
    let topics = [
        format!("homeassistant/sensor/{node}/label/config"),
        format!("homeassistant/sensor/{node}/score/config"),
        format!("homeassistant/binary_sensor/{node}/connectivity/config"),
        format!("homeassistant/sensor/{node}/inferences/config"),
        format!("homeassistant/sensor/{node}/latency/config"),
        format!("homeassistant/sensor/{node}/outbox/config"),
    ];
    sub.wait_for(T, |m| {
        topics.iter().all(|t| m.iter().any(|m| &m.topic == t))
    });
    sub.wait_for(T, |m| m.iter().any(|m| m.topic.ends_with("/state")));
    let config = |t: &str| json(sub.on(t).last().unwrap());
    let label = config(&topics[0]);
    assert_eq!(label["name"], "Label");
    assert_eq!(label["unique_id"], "edgeinfer_pi_label");
    assert_eq!(label["state_topic"], "edgeinfer/pi/state");
    assert_eq!(label["availability_topic"], "edgeinfer/pi/status");
    assert_eq!(label["payload_available"], "online");
    assert_eq!(label["payload_not_available"], "offline");
    assert_eq!(
        label["value_template"],
        "{{ value_json.label | default(value_json.class) }}"
    );
    assert_eq!(label["device"]["identifiers"], serde_json::json!([node]));
    assert_eq!(label["device"]["name"], "Pump 7");
    assert_eq!(label["device"]["manufacturer"], "edgeinfer");
    assert_eq!(label["origin"]["name"], "edgeinfer");
    let score = config(&topics[1]);
    assert_eq!(score["value_template"], "{{ value_json.score }}");
    assert_eq!(score["state_class"], "measurement");
    let conn = config(&topics[2]);
    assert_eq!(conn["device_class"], "connectivity");
    assert_eq!(conn["state_topic"], "edgeinfer/pi/status");
    assert_eq!(
        (conn["payload_on"].as_str(), conn["payload_off"].as_str()),
        (Some("online"), Some("offline"))
    );
    assert_eq!(conn["entity_category"], "diagnostic");
    assert!(conn.get("availability_topic").is_none());
    let lat = config(&topics[4]);
    assert_eq!(lat["state_topic"], "edgeinfer/pi/metrics");
    assert_eq!(
        lat["value_template"],
        "{{ value_json.latency_model_p50_us }}"
    );
    for t in &topics {
        let m = sub.on(t);
        assert!(m.iter().all(|m| m.retain || !m.payload.is_empty()));
        // Every id keeps to [a-zA-Z0-9_-].
        let uid = config(t)["unique_id"].as_str().unwrap().to_string();
        assert!(uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    }
    // What the templates read: the label and score of the latest result.
    let state = json(sub.on("/state").last().unwrap());
    assert!(
        ["normal", "fault"].contains(&state["label"].as_str().unwrap()),
        "{state}"
    );
    assert!(state["score"].as_f64().unwrap() > 0.0);
    // A retained copy for a fresh subscriber (Home Assistant restarting).
    let late = Subscriber::connect(broker.port, &[&topics[0]]);
    late.wait_for(T, |m| m.iter().any(|m| m.retain && !m.payload.is_empty()));
    // Home Assistant comes online: everything is published again.
    let before = sub.on(&topics[0]).len();
    sub.publish("homeassistant/status", "online");
    sub.wait_for(T, |m| {
        m.iter().filter(|m| m.topic == topics[0]).count() > before
    });
    // Turned off: empty retained configs remove the entities.
    dev.kill();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("enabled = true", "enabled = false");
    std::fs::write(&cfg, text).unwrap();
    let _dev = Device::start(&cfg);
    sub.wait_for(T, |m| {
        topics
            .iter()
            .all(|t| m.iter().any(|m| &m.topic == t && m.payload.is_empty()))
    });
    let gone = Subscriber::connect(broker.port, &["homeassistant/#"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        gone.messages
            .lock()
            .unwrap()
            .iter()
            .all(|m| m.payload.is_empty()),
        "retained discovery left behind"
    );
}
