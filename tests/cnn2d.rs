//! The 2-D CNN benchmark set (src/export/cnn2d.rs) through the binary:
//! both convolution layouts give the same outputs, and the same as ONNX
//! Runtime where it is installed.

mod common;

use std::path::Path;

use common::{bin, max_abs_diff, onnxruntime, read_f32, run, stderr, write_f32};
use edgeinfer::export::reference::Dense;
use edgeinfer::export::{cnn2d, write_model};
use edgeinfer::rng::Rng;

fn infer(model: &Path, input: &Path, out: &Path, layout: &str) -> Dense {
    let o = run(bin()
        .args(["infer", "--model"])
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .args(["--conv-layout", layout]));
    assert!(o.status.success(), "{}", stderr(&o));
    read_f32(out)
}

/// Every network of the benchmark set, at its real size and at a held-out
/// one: channels-first and channels-last plans agree with each other and
/// with ONNX Runtime to 1e-4 (outputs are softmax probabilities, checked
/// to be neither flat nor saturated).
#[test]
fn both_layouts_give_onnx_runtimes_outputs_on_the_benchmark_set() {
    let tmp = tempfile::tempdir().unwrap();
    let models = [
        (
            "mobilenet_v2_224",
            cnn2d::mobilenet_v2(17, 224).unwrap(),
            224,
        ),
        ("mobilenet_v2_96", cnn2d::mobilenet_v2(3, 96).unwrap(), 96),
        ("resnet18_224", cnn2d::resnet18(19, 224).unwrap(), 224),
        ("resnet18_64", cnn2d::resnet18(5, 64).unwrap(), 64),
        (
            "squeezenet1_1_224",
            cnn2d::squeezenet1_1(23, 224).unwrap(),
            224,
        ),
        ("kws_dscnn", cnn2d::kws_dscnn(29).unwrap(), 0),
    ];
    for (name, proto, size) in models {
        let model = tmp.path().join(format!("{name}.onnx"));
        write_model(&proto, &model).unwrap();
        let shape = if size == 0 {
            vec![1, 1, cnn2d::KWS_INPUT[0], cnn2d::KWS_INPUT[1]]
        } else {
            vec![1, 3, size, size]
        };
        let n = shape.iter().product();
        let input = tmp.path().join(format!("{name}-x.npy"));
        write_f32(&input, &Dense::new(shape, Rng::new(9).normal_vec(n, 1.0)));
        let nchw = infer(&model, &input, &tmp.path().join("nchw.npy"), "nchw");
        let nhwc = infer(&model, &input, &tmp.path().join("nhwc.npy"), "nhwc");
        assert!(
            nchw.data.iter().all(|p| p.is_finite()),
            "{name}: {:?}",
            &nchw.data[..8]
        );
        // Neither flat nor saturated, so 1e-4 is a real tolerance.
        let top = nchw.data.iter().copied().fold(0.0, f32::max);
        eprintln!("{name}: top probability {top}");
        assert!(
            (0.01..0.999).contains(&top),
            "{name}: top probability {top}"
        );
        let d = max_abs_diff(&nchw, &nhwc);
        assert!(d <= 1e-4, "{name}: nchw vs nhwc differ by {d}");
        if let Some(ort) = onnxruntime(&model, &input, &tmp.path().join("ort.npy")) {
            for (layout, ours) in [("nchw", &nchw), ("nhwc", &nhwc)] {
                let d = max_abs_diff(ours, &ort);
                assert!(d <= 1e-4, "{name} {layout}: {d} from ONNX Runtime");
            }
        }
    }
}

/// `profile` says which layout ran: the config's or `--conv-layout`'s,
/// NCHW by default; a layout it does not know is a usage error.
#[test]
fn profile_reports_the_layout_that_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let kws = tmp.path().join("kws.onnx");
    write_model(&cnn2d::kws_dscnn(29).unwrap(), &kws).unwrap();
    let layout = |model: &Path, extra: &[&str]| -> String {
        let o = run(bin()
            .args(["profile", "--runs", "5", "--json", "--model"])
            .arg(model)
            .args(extra));
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["conv_layout"].as_str().unwrap().to_string()
    };
    assert_eq!(layout(&kws, &[]), "nchw");
    assert_eq!(layout(&kws, &["--conv-layout", "nhwc"]), "nhwc");
    // From the config, on the demo's 1-D CNN (tract lays out 1-D
    // convolutions the same way): same outputs as NCHW.
    let demo = common::repo("models/demo/model.onnx");
    let cfg = tmp.path().join("demo.toml");
    std::fs::write(
        &cfg,
        format!("[model]\npath = {demo:?}\nconv_layout = \"nhwc\"\n[source]\nkind = \"stdin\"\n"),
    )
    .unwrap();
    let o = run(bin()
        .args(["profile", "--runs", "5", "--json", "--config"])
        .arg(&cfg));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["conv_layout"], "nhwc", "{v}");
    let input = common::repo("models/demo/input.npy");
    let nchw = infer(&demo, &input, &tmp.path().join("a.npy"), "nchw");
    let nhwc = infer(&demo, &input, &tmp.path().join("b.npy"), "nhwc");
    assert!(max_abs_diff(&nchw, &nhwc) <= 1e-5);
    let o = run(bin()
        .args(["profile", "--model"])
        .arg(&kws)
        .args(["--conv-layout", "sideways"]));
    common::assert_bad_input(&o, &["--conv-layout", "expected nchw or nhwc"]);
}
