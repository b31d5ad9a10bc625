//! Images end to end with the real binary: image sources (a watched
//! directory, a Motion-JPEG stream from a program, MQTT payloads) through
//! the image stage and real tract to results on a real broker, `infer
//! --image`, detection boxes in source pixels, and bad images counted,
//! reported and skipped.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::broker::{Broker, Subscriber};
use common::*;
use edgeinfer::export::{write_model, Attr, Dim, ElemType, GraphBuilder};
use edgeinfer::schema::Prediction;
use image::{ImageFormat, Rgb, RgbImage};

const T: Duration = Duration::from_secs(30);

/// A classifier that needs no training: the mean brightness of a 16x16 RGB
/// input (0..1) decides `bright` (class 1) over `dark` (class 0). Its
/// scores are exactly `0.5 - mean` and `mean - 0.5`, so a test knows the
/// answer for any image it makes.
fn brightness_model(dir: &Path) -> PathBuf {
    brightness(dir, false)
}

/// [`brightness_model`], or with `bytes` one that takes u8 pixels (0-255)
/// and scales them itself.
fn brightness(dir: &Path, bytes: bool) -> PathBuf {
    let mut g = GraphBuilder::new("brightness");
    let shape = [1.into(), 3.into(), 16.into(), 16.into()];
    let x = if bytes {
        let x = g.input("x", ElemType::U8, &shape);
        let f = g.node("Cast", &[&x], &[("to", Attr::Int(1))]);
        let k = g.constant("inv255", &[1], vec![1.0 / 255.0]);
        g.node("Mul", &[&f, &k], &[])
    } else {
        g.input("x", ElemType::F32, &shape)
    };
    let pooled = g.global_avg_pool(&x);
    let flat = g.flatten(&pooled, 1);
    let third = 1.0 / 3.0;
    let scores = g
        .gemm(
            &flat,
            3,
            2,
            vec![-third, -third, -third, third, third, third],
            vec![0.5, -0.5],
        )
        .unwrap();
    g.output(&scores, "scores", ElemType::F32, &[1.into(), 2.into()]);
    g.metadata("edgeinfer.task", "classify");
    g.metadata("edgeinfer.labels", "dark,bright");
    g.metadata(
        "edgeinfer.image",
        r#"{"size":[16,16],"color":"rgb","layout":"nchw","scale":"unit"}"#,
    );
    let path = dir.join(if bytes {
        "brightness_u8.onnx"
    } else {
        "brightness.onnx"
    });
    write_model(&g.finish(), &path).unwrap();
    path
}

/// A `w`x`h` image of grey level `level` with a little texture, so JPEG
/// has something to encode.
fn picture(w: u32, h: u32, level: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let t = ((x * 7 + y * 3) % 9) as i32 - 4;
        let v = (level as i32 + t).clamp(0, 255) as u8;
        Rgb([v, v, v])
    })
}

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn jpeg(level: u8) -> Vec<u8> {
    encode(&picture(40, 30, level), ImageFormat::Jpeg)
}

fn mqtt_section(b: &Broker) -> String {
    format!(
        "[mqtt]\nbroker = \"{}\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n\
         metrics_interval_s = 0.5\n[outbox]\ndir = \"outbox\"\n",
        b.url()
    )
}

fn wait_online(sub: &Subscriber, device: &str) {
    let topic = format!("edgeinfer/{device}/status");
    sub.wait_for(T, |m| {
        m.iter().any(|m| m.topic == topic && m.payload == b"online")
    });
}

/// A device `cam` running `model` on `source` (the `[source]` and any
/// other sections) with results to `broker`, and a subscriber to all it
/// publishes, connected before it starts.
fn start_device(
    dir: &Path,
    model: &Path,
    source: &str,
    broker: &Broker,
) -> (Subscriber, std::process::Child) {
    let cfg = dir.join("edgeinfer.toml");
    std::fs::write(
        &cfg,
        format!(
            "device_id = \"cam\"\n[model]\npath = {model:?}\n{source}\n\
             [[sink]]\nkind = \"mqtt\"\nbatch_max_records = 1\n{}",
            mqtt_section(broker)
        ),
    )
    .unwrap();
    let sub = Subscriber::connect(broker.port, &["edgeinfer/cam/#"]);
    let dev = spawn_run(&cfg, &[], false);
    (sub, dev)
}

fn reasons(sub: &Subscriber) -> Vec<String> {
    sub.on("/error")
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn class_of(r: &edgeinfer::ResultRecord) -> u32 {
    match &r.result {
        Prediction::Class(c) => c.class,
        other => panic!("expected a class, found {other:?}"),
    }
}

fn stop(child: std::process::Child) -> String {
    signal(child.id(), 15);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn a_watched_directory_gives_one_result_per_image_named_by_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = brightness_model(dir.path());
    let broker = Broker::start();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let (sub, dev) = start_device(
        dir.path(),
        &model,
        "[source]\nkind = \"image_dir\"\npath = \"incoming\"\nafter = \"move:done\"\npoll_ms = 50\n\
         [image]\nmax_pixels = 100000",
        &broker,
    );
    wait_online(&sub, "cam");
    // Good images, and among them bad ones: a truncated JPEG, text named
    // .jpg, one over the pixel limit.
    let good = [
        ("a.jpg", 230u8),
        ("b.jpg", 20),
        ("c.png", 200),
        ("d.jpg", 40),
    ];
    let half = jpeg(230);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.jpg", jpeg(230)),
        ("truncated.jpg", half[..half.len() / 2].to_vec()),
        ("b.jpg", jpeg(20)),
        ("text.jpg", b"not an image at all".to_vec()),
        ("c.png", encode(&picture(40, 30, 200), ImageFormat::Png)),
        (
            "huge.png",
            encode(&picture(400, 300, 200), ImageFormat::Png),
        ),
        ("d.jpg", jpeg(40)),
    ];
    for (name, bytes) in &files {
        // Written under a temporary name and renamed into place, as camera
        // tools do.
        let tmp = incoming.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, incoming.join(name)).unwrap();
        std::thread::sleep(Duration::from_millis(120));
    }
    sub.wait_for(T, |m| {
        m.iter().filter(|m| m.topic.ends_with("/result")).count() >= 4
            && m.iter().filter(|m| m.topic.ends_with("/error")).count() >= 3
    });
    let records = sub.records();
    let got: Vec<(String, u32)> = records
        .iter()
        .map(|r| (r.source.clone().unwrap_or_default(), class_of(r)))
        .collect();
    let expected: Vec<(String, u32)> = good
        .iter()
        .map(|(n, level)| (n.to_string(), u32::from(*level > 128)))
        .collect();
    assert_eq!(got, expected);
    let errors = reasons(&sub);
    for bad in ["truncated.jpg", "text.jpg", "huge.png"] {
        assert!(
            errors.iter().any(|e| e.contains(bad)),
            "{bad} not reported: {errors:?}"
        );
    }
    assert!(
        errors
            .iter()
            .any(|e| e.contains("huge.png") && e.contains("max_pixels")),
        "{errors:?}"
    );
    // Processed files moved out of the watched directory, bad ones too.
    sub.wait_for(T, |_| std::fs::read_dir(&incoming).unwrap().count() == 0);
    let done: Vec<String> = std::fs::read_dir(dir.path().join("done"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(done.len(), files.len(), "{done:?}");
    let err = stop(dev);
    assert!(err.contains("4 results"), "{err}");
}

/// A Motion-JPEG "camera": frames of alternating brightness at 30 fps on
/// stdout, with garbage and a broken frame in the stream, exiting after a
/// while (it is restarted).
fn camera_script(dir: &Path, frames: usize) -> PathBuf {
    let frames_dir = dir.join("frames");
    std::fs::create_dir_all(&frames_dir).unwrap();
    for i in 0..2 {
        std::fs::write(
            frames_dir.join(format!("{i}.jpg")),
            jpeg(if i == 0 { 20 } else { 235 }),
        )
        .unwrap();
    }
    let script = dir.join("camera.py");
    std::fs::write(
        &script,
        format!(
            r#"import sys, time
frames = [open("{d}/0.jpg", "rb").read(), open("{d}/1.jpg", "rb").read()]
out = sys.stdout.buffer
start = time.time()
for i in range({frames}):
    if i == 5:
        out.write(b"garbage between frames")
    if i == 9:
        # A frame cut short in its image data, as when a writer dies.
        out.write(frames[0][: len(frames[0]) - 10])
    out.write(frames[(i // 10) % 2])
    out.flush()
    time.sleep(max(0, start + (i + 1) / 30 - time.time()))
"#,
            d = frames_dir.display()
        ),
    )
    .unwrap();
    script
}

#[test]
fn a_camera_stream_runs_the_newest_frames_and_survives_garbage_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let model = brightness_model(dir.path());
    let script = camera_script(dir.path(), 60);
    let broker = Broker::start();
    let (sub, dev) = start_device(
        dir.path(),
        &model,
        &format!("[source]\nkind = \"mjpeg\"\ncommand = [\"python3\", {script:?}]\nmax_fps = 10.0"),
        &broker,
    );
    // Two runs of the camera program at least: 2 s each.
    sub.wait_for(T, |m| {
        m.iter().filter(|m| m.topic.ends_with("/result")).count() >= 30
    });
    let err = stop(dev);
    let records = sub.records();
    // Frames 0-9 of each 20 are dark, 10-19 bright: every result agrees
    // with the frame its source names.
    for r in &records {
        let source = r.source.clone().expect("a frame number");
        let n: usize = source
            .strip_prefix("frame ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{source}"));
        // Frame numbers count every whole frame since the start, across
        // the program's restarts (60 frames a run): frame n shows picture
        // (n / 10) % 2, dark then bright.
        assert_eq!(class_of(r), (n as u32 / 10) % 2, "{source}");
    }
    let classes: Vec<u32> = records.iter().map(class_of).collect();
    assert!(classes.contains(&0) && classes.contains(&1), "{classes:?}");
    // max_fps = 10 of a 30 fps stream: most frames skipped, and counted.
    let metrics: Vec<serde_json::Value> = sub
        .on("/metrics")
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    let last = metrics.last().expect("metrics");
    let skipped = last["frames_skipped"].as_u64().unwrap();
    let inferences = last["inferences"].as_u64().unwrap();
    assert!(skipped > inferences, "{last}");
    assert!(last["source_restarts"].as_u64().unwrap() >= 1, "{last}");
    let errors = reasons(&sub);
    assert!(
        !errors.is_empty(),
        "the broken frame and garbage are reported"
    );
    assert!(err.contains("camera frames skipped"), "{err}");
}

#[test]
fn images_published_on_a_topic_are_classified_and_named_by_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let model = brightness_model(dir.path());
    let broker = Broker::start();
    let (sub, dev) = start_device(
        dir.path(),
        &model,
        "[source]\nkind = \"mqtt\"\n[[source.topics]]\nfilter = \"cams/+/jpeg\"\nformat = \"image\"",
        &broker,
    );
    wait_online(&sub, "cam");
    sub.publish("cams/door/jpeg", jpeg(240));
    sub.publish("cams/door/jpeg", b"\xff\xd8 broken".to_vec());
    sub.publish("cams/yard/jpeg", jpeg(10));
    sub.wait_for(T, |m| {
        m.iter().filter(|m| m.topic.ends_with("/result")).count() >= 2
    });
    let got: Vec<(String, u32)> = sub
        .records()
        .iter()
        .map(|r| (r.source.clone().unwrap_or_default(), class_of(r)))
        .collect();
    assert_eq!(
        got,
        vec![("cams/door/jpeg".into(), 1), ("cams/yard/jpeg".into(), 0)]
    );
    let errors = reasons(&sub);
    assert!(
        errors.iter().any(|e| e.contains("cams/door/jpeg")),
        "{errors:?}"
    );
    stop(dev);
}

#[test]
fn infer_image_prints_one_line_per_image_and_fails_for_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = brightness_model(dir.path());
    let bright = dir.path().join("bright.jpg");
    let dark = dir.path().join("dark.png");
    let bad = dir.path().join("bad.jpg");
    std::fs::write(&bright, jpeg(250)).unwrap();
    std::fs::write(&dark, encode(&picture(64, 48, 10), ImageFormat::Png)).unwrap();
    std::fs::write(&bad, b"nope").unwrap();
    let out = dir.path().join("out.npy");
    let o = run(bin()
        .args(["infer", "--json", "--model"])
        .arg(&model)
        .arg("--image")
        .arg(&bright)
        .arg("--image")
        .arg(&dark)
        .arg("--output")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&stdout(&o));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["label"], "bright");
    assert_eq!(lines[0]["file"], bright.display().to_string());
    assert_eq!(lines[1]["label"], "dark");
    // The PNG is lossless: the score is exactly 0.5 - mean brightness of
    // the resized image, which for a 64x48 texture around 10 is ~10/255.
    let score = lines[1]["score"].as_f64().unwrap();
    assert!((score - (0.5 - 10.0 / 255.0)).abs() < 0.01, "{score}");
    let stacked = read_f32(&out);
    assert_eq!(stacked.shape, vec![2, 2]);
    let o = run(bin()
        .args(["infer", "--json", "--model"])
        .arg(&model)
        .arg("--image")
        .arg(&bad)
        .arg("--image")
        .arg(&bright));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let lines = json_lines(&stdout(&o));
    assert!(
        lines[0]["error"].as_str().unwrap().contains("decode"),
        "{lines:?}"
    );
    assert_eq!(lines[1]["label"], "bright");
    assert!(stderr(&o).contains("1 of 2 images"), "{}", stderr(&o));
    // A model that takes bytes gets the pixels as bytes, and agrees.
    let bytes_model = brightness(dir.path(), true);
    let o = run(bin()
        .args(["infer", "--json", "--model"])
        .arg(&bytes_model)
        .arg("--image")
        .arg(&dark));
    assert!(o.status.success(), "{}", stderr(&o));
    let line = &json_lines(&stdout(&o))[0];
    assert_eq!(line["label"], "dark");
    assert!(
        (line["score"].as_f64().unwrap() - score).abs() < 1e-5,
        "{line}"
    );
}

/// A "detector" whose output is a fixed YOLOv5-style tensor whatever the
/// image: `[1, 3, 4 + 1 + 2]` over a 32x32 input, plus 0 x the input so it
/// depends on it.
fn detector_model(dir: &Path) -> PathBuf {
    let mut g = GraphBuilder::new("fixed_detector");
    let x = g.input(
        "x",
        ElemType::F32,
        &[1.into(), 3.into(), 32.into(), 32.into()],
    );
    let pooled = g.global_avg_pool(&x);
    let flat = g.flatten(&pooled, 1);
    let zero = g.constant("zero", &[1], vec![0.0]);
    let nothing = g.node("Mul", &[&flat, &zero], &[]);
    let sum = g.node("ReduceSum", &[&nothing], &[("keepdims", Attr::Int(1))]);
    #[rustfmt::skip]
    let rows = vec![
        // cx, cy, w, h, objectness, class 0, class 1
        16.0, 16.0, 8.0, 8.0, 0.9, 0.9, 0.1, // class 0, 0.81
        17.0, 16.0, 8.0, 8.0, 0.9, 0.8, 0.1, // overlaps the first: suppressed
        8.0, 8.0, 4.0, 4.0, 0.8, 0.1, 0.5, // class 1, 0.40
        24.0, 24.0, 4.0, 4.0, 0.1, 0.9, 0.1, // 0.09: under the threshold
    ];
    let fixed = g.constant("fixed", &[1, 4, 7], rows);
    let out = g.node("Add", &[&fixed, &sum], &[]);
    g.output(
        &out,
        "boxes",
        ElemType::F32,
        &[1.into(), 4.into(), 7.into()],
    );
    g.metadata("edgeinfer.image", r#"{"size":[32,32],"resize":"stretch"}"#);
    let _ = Dim::from(1);
    let path = dir.join("detector.onnx");
    write_model(&g.finish(), &path).unwrap();
    path
}

#[test]
fn detections_come_out_as_boxes_in_source_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let model = detector_model(dir.path());
    let incoming = dir.path().join("in");
    std::fs::create_dir(&incoming).unwrap();
    // 64x96 source, stretched to 32x32: x doubles, y triples.
    std::fs::write(
        incoming.join("scene.png"),
        encode(&picture(64, 96, 100), ImageFormat::Png),
    )
    .unwrap();
    let cfg = dir.path().join("edgeinfer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\npath = {model:?}\n\
             [source]\nkind = \"image_dir\"\npath = \"in\"\npoll_ms = 50\n\
             [postprocess]\nkind = \"detect\"\nformat = \"yolov5\"\nscore_threshold = 0.25\n\
             iou_threshold = 0.45\nlabels = [\"cat\", \"dog\"]\n\
             [[sink]]\nkind = \"stdout\"\n"
        ),
    )
    .unwrap();
    let o = run(bin().args(["run", "--count", "1", "--config"]).arg(&cfg));
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&stdout(&o));
    let d = &lines[0]["detections"];
    // Box 1: cx 16, cy 16, w 8, h 8 → input (12, 12)-(20, 20) → source
    // x * 2, y * 3 = (24, 36)-(40, 60), score 0.9 * 0.9.
    assert_eq!(d[0]["label"], "cat");
    assert_eq!(d[0]["box"], serde_json::json!([24, 36, 40, 60]));
    assert!((d[0]["score"].as_f64().unwrap() - 0.81).abs() < 1e-5);
    // Box 3: (6, 6)-(10, 10) → (12, 18)-(20, 30), 0.8 * 0.5.
    assert_eq!(d[1]["label"], "dog");
    assert_eq!(d[1]["box"], serde_json::json!([12, 18, 20, 30]));
    assert_eq!(d.as_array().unwrap().len(), 2, "{d}");
    assert_eq!(lines[0]["source"], "scene.png");
}

#[test]
fn image_settings_that_do_not_fit_the_model_are_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let model = brightness_model(dir.path());
    let cfg = dir.path().join("edgeinfer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\npath = {model:?}\n\
             [source]\nkind = \"image_dir\"\npath = \"in\"\n\
             [image]\nsize = [20, 16]\nstd = [0.0]\n"
        ),
    )
    .unwrap();
    let o = run(bin().args(["check", "--config"]).arg(&cfg));
    assert_bad_input(&o, &["image.std"]);
    std::fs::write(
        &cfg,
        format!(
            "[model]\npath = {model:?}\n\
             [source]\nkind = \"image_dir\"\npath = \"in\"\n\
             [image]\nsize = [20, 16]\n"
        ),
    )
    .unwrap();
    let o = run(bin().args(["check", "--config"]).arg(&cfg));
    assert_bad_input(&o, &["image.size"]);
}
