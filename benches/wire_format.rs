//! Encode/decode cost and size of the wire format (postcard) vs JSON, side
//! by side in one run.
//!
//!     cargo bench --bench wire_format
//!
//! The batches are what the MQTT sink publishes: a `ResultBatch` of 1 or 10
//! records of each result kind. JSON is the sink's `encoding = "json"`
//! (serde_json of the same batch). Rounds alternate the two encodings; the
//! medians per batch and the JSON/postcard ratios are printed.

use std::time::Instant;

use edgeinfer::rng::Rng;
use edgeinfer::schema::{
    AnomalyResult, ClassResult, Prediction, ResultBatch, ResultRecord, SCHEMA_VERSION,
};

fn batch(records: usize, result: &Prediction) -> ResultBatch {
    ResultBatch {
        version: SCHEMA_VERSION,
        model: None,
        device: "pump-07".into(),
        records: (0..records)
            .map(|i| ResultRecord {
                source: None,
                seq: 1_000_000 + i as u64,
                ts_ms: 1_764_400_000_000 + 100 * i as u64,
                result: result.clone(),
            })
            .collect(),
    }
}

/// Median ns per call of `f` over `rounds` rounds of `iters` calls.
fn time<F: FnMut()>(rounds: usize, iters: usize, mut f: F) -> f64 {
    let mut v: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (rounds, iters) = if quick { (1, 200) } else { (9, 50_000) };
    let mut rng = Rng::new(5);
    let kinds = [
        (
            "class (top 3)",
            Prediction::Class(ClassResult {
                class: 1,
                score: 0.973,
                top: vec![(1, 0.973), (0, 0.021), (2, 0.006)],
            }),
        ),
        ("10 values", Prediction::Values(rng.normal_vec(10, 1.0))),
        (
            "anomaly",
            Prediction::Anomaly(AnomalyResult {
                score: 0.42,
                threshold: 0.4,
                anomalous: true,
            }),
        ),
    ];
    println!(
        "{:<24} {:>9} {:>9} {:>7} {:>11} {:>11} {:>7} {:>11} {:>11} {:>7}",
        "batch",
        "pc B",
        "json B",
        "size",
        "pc enc ns",
        "json enc ns",
        "enc",
        "pc dec ns",
        "json dec ns",
        "dec"
    );
    for (name, result) in &kinds {
        for records in [1, 10] {
            let b = batch(records, result);
            let pc = b.to_postcard();
            let js = serde_json::to_vec(&b).unwrap();
            // Both must round-trip, or the timings mean nothing.
            assert_eq!(ResultBatch::from_postcard(&pc).unwrap(), b);
            assert_eq!(serde_json::from_slice::<ResultBatch>(&js).unwrap(), b);
            let (mut pe, mut je, mut pd, mut jd) = (vec![], vec![], vec![], vec![]);
            for _ in 0..rounds {
                pe.push(time(1, iters, || {
                    std::hint::black_box(std::hint::black_box(&b).to_postcard());
                }));
                je.push(time(1, iters, || {
                    std::hint::black_box(serde_json::to_vec(std::hint::black_box(&b)).unwrap());
                }));
                pd.push(time(1, iters, || {
                    std::hint::black_box(
                        ResultBatch::from_postcard(std::hint::black_box(&pc)).unwrap(),
                    );
                }));
                jd.push(time(1, iters, || {
                    std::hint::black_box(
                        serde_json::from_slice::<ResultBatch>(std::hint::black_box(&js)).unwrap(),
                    );
                }));
            }
            let med = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (pe, je, pd, jd) = (med(pe), med(je), med(pd), med(jd));
            println!(
                "{:<24} {:>9} {:>9} {:>7.2} {:>11.0} {:>11.0} {:>7.2} {:>11.0} {:>11.0} {:>7.2}",
                format!("{name} x{records}"),
                pc.len(),
                js.len(),
                js.len() as f64 / pc.len() as f64,
                pe,
                je,
                je / pe,
                pd,
                jd,
                jd / pd
            );
        }
    }
    println!("size, enc, dec: JSON / postcard (higher means postcard wins by that factor)");
}
