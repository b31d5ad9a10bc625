//! Latency of one forward pass on 1 vs 2 threads (`[model] threads`), side
//! by side in one run.
//!
//!     cargo bench --bench threads
//!
//! tract splits matrix products across its thread pool only when they are
//! large enough to pay for the hand-off, so small models should show no
//! gain (or a small loss) and larger ones a real speedup. Rounds alternate
//! the two settings; medians and the 1-thread / 2-thread ratio are printed.

use std::time::Instant;

use edgeinfer::export::zoo;
use edgeinfer::export::{ElemType, GraphBuilder};
use edgeinfer::model::ConvLayout;
use edgeinfer::rng::Rng;
use edgeinfer::ModelFile;
use tract_onnx::pb::ModelProto;

/// An MLP of about 10 M MACs: 1024 → 2048 → 2048 → 10.
fn wide_mlp() -> ModelProto {
    let mut rng = Rng::new(21);
    let mut g = GraphBuilder::new("wide_mlp");
    let mut h = g.input("x", ElemType::F32, &[1.into(), 1024.into()]);
    let mut width = 1024;
    for out in [2048, 2048] {
        let w = rng.normal_vec(width * out, (2.0 / width as f64).sqrt());
        let l = g.gemm(&h, width, out, w, vec![0.0; out]).unwrap();
        h = g.relu(&l);
        width = out;
    }
    let y = g
        .gemm(
            &h,
            width,
            10,
            rng.normal_vec(10 * width, 0.05),
            vec![0.0; 10],
        )
        .unwrap();
    g.output(&y, "y", ElemType::F32, &[1.into(), 10.into()]);
    g.finish()
}

/// A 2-D CNN of about 40 M MACs: two 3×3 convolutions over 64×64 maps.
fn conv_64x64() -> ModelProto {
    let mut rng = Rng::new(23);
    let mut g = GraphBuilder::new("conv_64x64");
    let x = g.input(
        "image",
        ElemType::F32,
        &[1.into(), 3.into(), 64.into(), 64.into()],
    );
    let mut h = x;
    let mut ch = 3;
    for out in [16, 32] {
        let w = rng.normal_vec(out * ch * 9, (2.0 / (ch * 9) as f64).sqrt());
        let c = g
            .conv(&h, ch, out, &[3, 3], 1, 1, 1, w, vec![0.0; out])
            .unwrap();
        h = g.relu(&c);
        ch = out;
    }
    let p = g.global_avg_pool(&h);
    let f = g.flatten(&p, 1);
    let y = g
        .gemm(&f, ch, 10, rng.normal_vec(10 * ch, 0.1), vec![0.0; 10])
        .unwrap();
    g.output(&y, "y", ElemType::F32, &[1.into(), 10.into()]);
    g.finish()
}

fn median_us(model: &mut edgeinfer::Model, input: &[f32], iters: usize) -> f64 {
    let mut v: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(model.run_f32(input).unwrap());
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (rounds, iters) = if quick { (1, 5) } else { (7, 400) };
    let cases: Vec<(&str, ModelProto)> = vec![
        ("seed MLP 10-20-10", zoo::seed_mlp(7).unwrap()),
        ("ResNet-style 2-D CNN", zoo::resnet_style(5).unwrap()),
        ("MobileNet-style 1-D CNN", zoo::mobilenet_1d(11).unwrap()),
        ("MobileNet-style 2-D CNN", zoo::mobilenet_style(3).unwrap()),
        ("wide MLP 1024-2048-2048-10", wide_mlp()),
        ("2-D CNN 3x3 convs on 64x64", conv_64x64()),
    ];
    println!(
        "{:<28} {:>10} {:>12} {:>12} {:>9}",
        "model", "MACs", "1 thread µs", "2 threads µs", "speedup"
    );
    for (name, proto) in cases {
        let bytes = {
            use prost::Message;
            proto.encode_to_vec()
        };
        let file = ModelFile::from_bytes(bytes, name).unwrap();
        let mut one = file.load_with(None, 1, ConvLayout::Nchw).unwrap();
        let mut two = file.load_with(None, 2, ConvLayout::Nchw).unwrap();
        let n: usize = one.info().inputs[0].shape.iter().product();
        let input = Rng::new(3).normal_vec(n, 1.0);
        // Same inputs, same outputs: threading must not change results.
        let (a, b) = (one.run_f32(&input).unwrap(), two.run_f32(&input).unwrap());
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(diff <= 1e-4, "{name}: 1 vs 2 threads differ by {diff}");
        let (mut t1, mut t2) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            t1.push(median_us(&mut one, &input, iters));
            t2.push(median_us(&mut two, &input, iters));
        }
        t1.sort_by(f64::total_cmp);
        t2.sort_by(f64::total_cmp);
        let (a, b) = (t1[t1.len() / 2], t2[t2.len() / 2]);
        println!(
            "{:<28} {:>10} {:>12.1} {:>12.1} {:>9.2}",
            name,
            one.info().macs,
            a,
            b,
            a / b
        );
    }
}
