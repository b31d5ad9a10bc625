//! Pipeline overhead vs a bare tract `run` loop, side by side in one run.
//!
//!     cargo bench --bench pipeline_overhead
//!
//! For each model, the same inputs go (a) straight into a tract plan built
//! the usual way (`into_optimized`, `into_runnable`, one reused state, input
//! tensors made beforehand) and (b) through the whole pipeline: source
//! thread, queue, preprocess, window, model, postprocess, policy, sink
//! thread. Rounds alternate a and b so both see the same machine load; the
//! medians and their ratio are printed.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use edgeinfer::config::SimMode;
use edgeinfer::export::zoo;
use edgeinfer::pipeline::{prepare, RunOptions};
use edgeinfer::rng::Rng;
use edgeinfer::schema::ResultRecord;
use edgeinfer::sink::{Sink, SinkError};
use edgeinfer::source::{MemorySource, Sample, SimulatedSource, Source};
use edgeinfer::{Config, ModelFile};
use tract_onnx::prelude::*;

/// Counts what it is given.
struct CountSink(Arc<std::sync::atomic::AtomicU64>);

impl Sink for CountSink {
    fn write(&mut self, _: &ResultRecord) -> Result<(), SinkError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

struct Case {
    name: &'static str,
    config: String,
    model: PathBuf,
    /// The model input shape the pipeline pins.
    shape: Vec<usize>,
    channels: usize,
    samples: Vec<Sample>,
    /// The model inputs the pipeline's windows produce, for the bare loop.
    windows: Vec<Vec<f32>>,
}

fn bare_loop(model: &Path, shape: &[usize], windows: &[Vec<f32>]) -> f64 {
    let plan = tract_onnx::onnx()
        .model_for_path(model)
        .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("tract loads the model");
    let mut state = plan.spawn().unwrap();
    let tensors: Vec<TValue> = windows
        .iter()
        .map(|w| Tensor::from_shape(shape, w).unwrap().into_tvalue())
        .collect();
    let t0 = Instant::now();
    let mut sink = 0.0f32;
    for t in &tensors {
        let out = state.run(tvec!(t.clone())).unwrap();
        sink += out[0].to_plain_array_view::<f32>().unwrap()[[0, 0]];
    }
    std::hint::black_box(sink);
    t0.elapsed().as_secs_f64() / tensors.len() as f64
}

fn pipeline_loop(case: &Case) -> f64 {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = Config::parse(&case.config, "bench", root).unwrap();
    let file = ModelFile::read(&root.join(&case.model)).unwrap();
    let prepared = prepare(&config, &file, Some(case.channels)).unwrap();
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let source = MemorySource::new(case.samples.clone(), Some(case.channels));
    let opts = RunOptions {
        count: None,
        stop: Arc::new(AtomicBool::new(false)),
        control: None,
    };
    let t0 = Instant::now();
    let summary = prepared
        .run(
            Box::new(source),
            vec![Box::new(CountSink(count.clone()))],
            &opts,
        )
        .unwrap();
    let dt = t0.elapsed().as_secs_f64();
    assert_eq!(summary.emitted as usize, case.windows.len());
    dt / summary.emitted as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Simulated vibration samples for `results` windows and the NCW windows
/// the pipeline's window stage makes of them.
fn windowed(results: usize, size: usize, hop: usize) -> (Vec<Sample>, Vec<Vec<f32>>) {
    let n = size + (results - 1) * hop;
    let mut src = SimulatedSource::new(100.0, 3, SimMode::Alternate, 5.0, 9, false);
    let samples: Vec<Sample> = (0..n)
        .map(|_| src.next_sample().unwrap().unwrap())
        .collect();
    let mut w = edgeinfer::window::Window::new(size, hop, 3, edgeinfer::config::Layout::Ncw);
    let mut windows = Vec::new();
    for s in &samples {
        if w.push(&s.values) {
            let mut buf = Vec::new();
            w.fill(&mut buf);
            windows.push(buf);
        }
    }
    (samples, windows)
}

fn demo_case(results: usize) -> Case {
    let (samples, windows) = windowed(results, zoo::DEMO_WINDOW, zoo::DEMO_HOP);
    Case {
        name: "demo 1-D CNN [1,3,64], hop 32",
        config: "[model]\npath = \"models/demo/model.onnx\"\n[source]\nkind = \"stdin\"\n".into(),
        model: "models/demo/model.onnx".into(),
        shape: vec![1, 3, zoo::DEMO_WINDOW],
        channels: 3,
        samples,
        windows,
    }
}

/// The MobileNet-style 1-D CNN, written to `dir`.
fn mobilenet_case(results: usize, dir: &Path) -> Case {
    let path = dir.join("mobilenet_1d.onnx");
    edgeinfer::export::write_model(&zoo::mobilenet_1d(11).unwrap(), &path).unwrap();
    let size = zoo::MOBILENET_1D_WINDOW;
    let (samples, windows) = windowed(results, size, size / 2);
    Case {
        name: "MobileNet-style 1-D CNN [1,3,256], hop 128",
        config: format!(
            "[model]\npath = {:?}\n[source]\nkind = \"stdin\"\n",
            path.display().to_string()
        ),
        model: path,
        shape: vec![1, 3, size],
        channels: 3,
        samples,
        windows,
    }
}

fn mlp_case(results: usize) -> Case {
    let mut rng = Rng::new(3);
    let samples: Vec<Sample> = (0..results)
        .map(|i| Sample::new(i as u64, rng.normal_vec(10, 1.0)))
        .collect();
    let windows = samples.iter().map(|s| s.values.clone()).collect();
    Case {
        name: "seed MLP 10-20-10, one sample per result",
        config: "[model]\npath = \"models/seed-mlp/model.onnx\"\n[source]\nkind = \"stdin\"\n\
                 [window]\nsize = 1\nlayout = \"flat\"\n"
            .into(),
        model: "models/seed-mlp/model.onnx".into(),
        shape: vec![1, 10],
        channels: 10,
        samples,
        windows,
    }
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep it short then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (results, rounds) = if quick { (200, 1) } else { (20_000, 7) };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!(
        "{:<44} {:>12} {:>12} {:>8} {:>14}",
        "model", "bare µs", "pipeline µs", "ratio", "overhead µs"
    );
    let tmp = std::env::temp_dir().join(format!("edgeinfer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // The MobileNet-style model costs ~50x the demo's per result: fewer results.
    let cases = [
        demo_case(results),
        mlp_case(results),
        mobilenet_case((results / 10).max(20), &tmp),
    ];
    for case in cases {
        let (mut bare, mut pipe) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            bare.push(bare_loop(
                &root.join(&case.model),
                &case.shape,
                &case.windows,
            ));
            pipe.push(pipeline_loop(&case));
        }
        let (b, p) = (median(bare) * 1e6, median(pipe) * 1e6);
        println!(
            "{:<44} {:>12.2} {:>12.2} {:>8.3} {:>14.2}",
            case.name,
            b,
            p,
            p / b,
            p - b
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
