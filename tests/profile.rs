//! `edgeinfer profile` against known values.

mod common;

use common::*;

fn profile_json(args: &[&str]) -> serde_json::Value {
    let o = run(bin()
        .arg("profile")
        .args(args)
        .args(["--runs", "50", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn seed_mlp_figures_are_exact_where_they_can_be() {
    let model = repo("models/seed-mlp/model.onnx");
    let r = profile_json(&["--model", model.to_str().unwrap(), "--rate", "10"]);
    assert_eq!(r["params"], 430);
    assert_eq!(r["macs"], 400);
    assert_eq!(r["flops"], 800);
    assert_eq!(r["file_bytes"], std::fs::metadata(&model).unwrap().len());
    assert_eq!(r["weights_bytes"], 430 * 4);
    assert_eq!(r["input_shape"], serde_json::json!([1, 10]));
    let lat: Vec<f64> = ["min", "p50", "p90", "p99", "max"]
        .iter()
        .map(|k| r[format!("latency_{k}_us")].as_f64().unwrap())
        .collect();
    assert!(
        lat[0] > 0.0 && lat.windows(2).all(|w| w[0] <= w[1]),
        "{lat:?}"
    );
    assert!(r["peak_rss_after_runs_bytes"].as_u64() >= r["rss_before_load_bytes"].as_u64());
    assert!(r["core_peak_flops_per_s"].as_f64().unwrap() > 1e6);
    // One regression record of 10 f32: version 1 + device "edgeinfer" (1 + 9)
    // + 1 record + seq 1_000_000 (3-byte varint) + ts_ms now (6) + variant 1
    // + length 1 + 40; then the model tag: 8 bytes of sha256 + an empty
    // version (1), the model declaring none.
    assert_eq!(r["result_postcard_bytes"], 72);
    // PUBLISH: header 1 + length 1 + topic (2 + 26) + packet id 2 + payload.
    assert_eq!(r["mqtt_packet_postcard_bytes"], 1 + 1 + 2 + 26 + 2 + 72);
    let json_len = r["result_json_bytes"].as_u64().unwrap();
    assert_eq!(r["mqtt_packet_json_bytes"], 1 + 2 + 2 + 26 + 2 + json_len);
    // With no config, the flat input [1, 10] is a window of 10 one-channel
    // samples, hop 10: at 10 Hz one result per second, one message each.
    assert_eq!(r["channels"], 1);
    assert_eq!(r["results_per_s"], 1.0);
    assert_eq!(r["messages_per_hour"], 3_600.0);
    assert_eq!(r["bytes_per_hour"], 3_600.0 * 104.0);
    // Raw: 10 samples/s of one f32 on "edgeinfer/edgeinfer/raw" (23 chars).
    let raw = 36_000.0 * (1 + 1 + 2 + 23 + 2 + 4) as f64;
    assert_eq!(r["raw_stream_bytes_per_hour"], raw);
    assert_eq!(r["saving_factor"], raw / (3_600.0 * 104.0));
    // Default outbox: 64 MiB of 72-byte results.
    assert_eq!(r["outbox_capacity_results"], (64u64 << 20) / 72);
}

#[test]
fn config_settings_change_the_network_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            "device_id = \"pi\"\n[model]\npath = {:?}\n[source]\nkind = \"simulated\"\nrate_hz = 100.0\n\
             [window]\nhop = 50\n[policy]\nbatch_max_records = 10\n[mqtt]\nprefix = \"p\"\nqos = 0\n",
            repo("models/demo/model.onnx")
        ),
    )
    .unwrap();
    let r = profile_json(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(r["sample_rate_hz"], 100.0);
    assert_eq!(r["results_per_s"], 2.0);
    assert_eq!(r["records_per_message"], 10);
    assert_eq!(r["messages_per_hour"], 720.0);
    assert_eq!(r["channels"], 3);
    // Raw: 100 samples/s of 3 f32 on "p/raw", QoS 0: 1 + 1 + (2 + 5) + 12.
    assert_eq!(r["raw_stream_bytes_per_hour"], 100.0 * 3600.0 * 21.0);
    let saving = r["saving_factor"].as_f64().unwrap();
    assert!((saving - 7_560_000.0 / r["bytes_per_hour"].as_f64().unwrap()).abs() < 1e-9);
    assert!(saving > 20.0, "{r}");
    // The trained demo (models/demo/report.md): Sub/Div 3 + 3, conv 8·3·5 + 8,
    // conv 16·8·5 + 16, Gemm 2·16 + 2.
    assert_eq!(r["params"], 6 + 128 + 656 + 34);
    let text = stdout(&run(bin()
        .args(["profile", "--runs", "5", "--config"])
        .arg(&cfg)));
    for row in ["compute", "memory", "latency", "network", "availability"] {
        assert!(text.contains(row), "{row} missing: {text}");
    }
}

#[test]
fn bad_profile_arguments_are_one_line() {
    let o = run(bin().args(["profile", "--model", "/nonexistent.onnx"]));
    assert_bad_input(&o, &["/nonexistent.onnx", "cannot read model file"]);
    let o = run(bin()
        .args(["profile", "--runs", "0", "--model"])
        .arg(repo("models/demo/model.onnx")));
    assert_bad_input(&o, &["--runs"]);
    // Rates that would make every per-second figure meaningless.
    for rate in ["0", "-5", "inf"] {
        let o = run(bin()
            .args(["profile", "--rate", rate, "--model"])
            .arg(repo("models/demo/model.onnx")));
        assert_bad_input(&o, &["--rate", "expected a positive number"]);
    }
}

#[test]
fn any_single_input_model_is_profiled_even_without_a_window() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("mobilenet.onnx");
    edgeinfer::export::write_model(&edgeinfer::export::zoo::mobilenet_style(3).unwrap(), &m)
        .unwrap();
    let r = profile_json(&["--model", m.to_str().unwrap(), "--rate", "2"]);
    assert_eq!(r["input_shape"], serde_json::json!([1, 3, 32, 32]));
    // Parameters: stem 16·3·3·3 + 16, dw 16·9 + 16, pw 32·16 + 32,
    // dw 32·9 + 32, pw 64·32 + 64, head 10·64 + 10, and two Clip bounds
    // per ReLU6 (5 of them).
    let params = 432 + 16 + 144 + 16 + 512 + 32 + 288 + 32 + 2048 + 64 + 640 + 10 + 10;
    assert_eq!(r["params"], params);
    assert_eq!(r["results_per_s"], 2.0);
    assert!(r["macs"].as_u64().unwrap() > 0);
}

#[cfg(feature = "threads")]
#[test]
fn threads_flag_reaches_the_model_and_zero_is_refused() {
    let model = repo("models/demo/model.onnx");
    let m = model.to_str().unwrap();
    let one = profile_json(&["--model", m]);
    let two = profile_json(&["--model", m, "--threads", "2"]);
    assert_eq!(one["threads"], 1);
    assert_eq!(two["threads"], 2);
    assert_eq!(one["macs"], two["macs"]);
    let o = run(bin()
        .args(["profile", "--threads", "0", "--model"])
        .arg(&model));
    assert_bad_input(&o, &["--threads", "expected at least 1"]);
}

/// `--ops` splits an inference by operator: every node of the optimized
/// graph is counted once per inference, the shares add up, and the
/// demo's convolutions show as tract's matrix products.
#[test]
fn ops_flag_breaks_the_time_down_by_operator() {
    let model = repo("models/demo/model.onnx");
    let model = model.to_str().unwrap();
    let plain = profile_json(&["--model", model]);
    assert!(plain.get("ops").is_none(), "{plain}");
    let r = profile_json(&["--model", model, "--ops"]);
    let ops = r["ops"].as_array().expect("ops");
    assert!(ops.len() >= 3, "{ops:?}");
    let share: f64 = ops.iter().map(|o| o["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-9, "{share}");
    for o in ops {
        assert!(o["nodes"].as_u64().unwrap() >= 1, "{o}");
        assert!(o["us_per_inference"].as_f64().unwrap() >= 0.0, "{o}");
    }
    // Most time first.
    let us: Vec<f64> = ops
        .iter()
        .map(|o| o["us_per_inference"].as_f64().unwrap())
        .collect();
    assert!(us.windows(2).all(|w| w[0] >= w[1]), "{us:?}");
    // On x86_64 the dense layer runs on edgeinfer's own product
    // (`GemmConv`); the 1-D convolutions stay tract's everywhere.
    let (tract_products, ours) = if cfg!(target_arch = "x86_64") {
        (2, 1)
    } else {
        (3, 0)
    };
    let matmul = ops
        .iter()
        .find(|o| o["op"] == "OptMatMul")
        .expect("OptMatMul");
    assert_eq!(
        matmul["nodes"], tract_products,
        "the demo's two convolutions and, off x86_64, its dense layer"
    );
    let gemm = ops.iter().find(|o| o["op"] == "GemmConv");
    assert_eq!(
        gemm.map_or(0, |g| g["nodes"].as_u64().unwrap()),
        ours,
        "{ops:?}"
    );
    // The slowest nodes one by one: named after the ONNX nodes, the
    // matrix products with the kernel tract picked for them.
    let slow = r["slowest_nodes"].as_array().expect("slowest_nodes");
    let total_nodes: u64 = ops.iter().map(|o| o["nodes"].as_u64().unwrap()).sum();
    assert_eq!(slow.len() as u64, total_nodes.min(12), "{slow:?}");
    let us: Vec<f64> = slow
        .iter()
        .map(|o| o["us_per_inference"].as_f64().unwrap())
        .collect();
    assert!(us.windows(2).all(|w| w[0] >= w[1]), "{us:?}");
    let mm: Vec<_> = slow.iter().filter(|n| n["op"] == "OptMatMul").collect();
    assert_eq!(mm.len(), tract_products, "{slow:?}");
    for n in mm {
        let detail = n["detail"].as_str().unwrap();
        assert!(detail.contains("mmm") && detail.contains("out "), "{n}");
    }
    // And the table shows them.
    let o = run(bin().args(["profile", "--model", model, "--ops", "--runs", "20"]));
    assert!(o.status.success());
    let table = stdout(&o);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("operators") && l.contains("µs")),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("slowest nodes")),
        "{table}"
    );
}

/// `--nodes` sets how many of the slowest nodes `--ops` lists: a count,
/// or `all` for every node of the optimized graph; anything else, or
/// `--nodes` without `--ops`, is refused.
#[test]
fn nodes_flag_lists_as_many_nodes_as_asked() {
    let model = repo("models/demo/model.onnx");
    let model = model.to_str().unwrap();
    let all = profile_json(&["--model", model, "--ops", "--nodes", "all"]);
    let total: u64 = (all["ops"].as_array().unwrap().iter())
        .map(|o| o["nodes"].as_u64().unwrap())
        .sum();
    let listed = all["slowest_nodes"].as_array().unwrap();
    assert_eq!(listed.len() as u64, total, "{listed:?}");
    let mut names: Vec<&str> = listed.iter().map(|n| n["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len() as u64, total, "each node once: {names:?}");
    let two = profile_json(&["--model", model, "--ops", "--nodes", "2"]);
    assert_eq!(two["slowest_nodes"].as_array().unwrap().len(), 2);
    let o = run(bin().args(["profile", "--model", model, "--ops", "--nodes", "many"]));
    assert_bad_input(&o, &["--nodes", "expected a number of nodes or `all`"]);
    let o = run(bin().args(["profile", "--model", model, "--nodes", "2"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
