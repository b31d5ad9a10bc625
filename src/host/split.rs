//! Splitting examples into train, validation and test sets, and the
//! standardization computed from the training split.

use crate::rng::Rng;

/// Example indices of the train, validation and test splits.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    /// What the weights are fitted on (and the standardization computed from).
    pub train: Vec<usize>,
    /// Watched every epoch for early stopping.
    pub val: Vec<usize>,
    /// Held out until the end.
    pub test: Vec<usize>,
}

/// A seeded shuffle of `0..n` (Fisher-Yates).
pub fn shuffled(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx
}

/// Shuffles examples with `seed` and cuts them into splits. With `classes`
/// (one class id per example) the cut is stratified: every class is split
/// in the same proportions, so a small test split still holds each class.
pub fn split(
    n: usize,
    classes: Option<&[u32]>,
    val: f64,
    test: f64,
    seed: u64,
) -> Result<Splits, String> {
    if !(0.0..1.0).contains(&val) || !(0.0..1.0).contains(&test) || val + test >= 1.0 {
        return Err(format!(
            "--val-split {val} and --test-split {test}: expected fractions in [0, 1) that sum below 1"
        ));
    }
    let mut rng = Rng::new(seed);
    let groups: Vec<Vec<usize>> = match classes {
        Some(c) => {
            let k = c.iter().map(|&x| x as usize + 1).max().unwrap_or(0);
            let mut g = vec![Vec::new(); k];
            for (i, &x) in c.iter().enumerate() {
                g[x as usize].push(i);
            }
            g
        }
        None => vec![(0..n).collect()],
    };
    let mut s = Splits {
        train: vec![],
        val: vec![],
        test: vec![],
    };
    for g in groups {
        let order = shuffled(g.len(), &mut rng);
        let n_test = (g.len() as f64 * test).round() as usize;
        let n_val = ((g.len() as f64 * val).round() as usize).min(g.len() - n_test);
        let pick = |r: std::ops::Range<usize>| r.map(|i| g[order[i]]).collect::<Vec<_>>();
        s.test.extend(pick(0..n_test));
        s.val.extend(pick(n_test..n_test + n_val));
        s.train.extend(pick(n_test + n_val..g.len()));
    }
    let too_few =
        (test > 0.0 && s.test.is_empty()) || (val > 0.0 && s.val.is_empty()) || s.train.len() < 2;
    if too_few {
        return Err(format!(
            "too few examples ({n}) for a {:.0}% validation and {:.0}% test split: \
             each split needs at least one and training at least two",
            val * 100.0,
            test * 100.0
        ));
    }
    Ok(s)
}

/// Per-feature (tabular) or per-channel (windows) mean and standard
/// deviation over `x`; a constant feature gets std 1 so it passes through.
pub fn standardization(x: &[Vec<f32>], shape: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let groups = shape[0];
    let per = shape[1..].iter().product::<usize>();
    let mut mean = vec![0.0f64; groups];
    let mut sq = vec![0.0f64; groups];
    let count = (x.len() * per) as f64;
    for ex in x {
        for (g, chunk) in ex.chunks(per).enumerate() {
            for &v in chunk {
                mean[g] += v as f64;
                sq[g] += (v as f64) * (v as f64);
            }
        }
    }
    let mut std = vec![1.0f32; groups];
    for g in 0..groups {
        mean[g] /= count;
        let var = (sq[g] / count - mean[g] * mean[g]).max(0.0);
        if var.sqrt() > 1e-6 {
            std[g] = var.sqrt() as f32;
        }
    }
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_seeded_disjoint_and_complete() {
        let s = split(100, None, 0.2, 0.1, 7).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (70, 20, 10));
        assert_eq!(s, split(100, None, 0.2, 0.1, 7).unwrap());
        assert_ne!(s, split(100, None, 0.2, 0.1, 8).unwrap());
        let mut all: Vec<usize> = [s.train, s.val, s.test].concat();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(split(3, None, 0.2, 0.1, 7).unwrap_err().contains("too few"));
        // Stratified: 80 of class 0 and 20 of class 1 split 8:2 and 2:0... each.
        let classes: Vec<u32> = (0..100).map(|i| u32::from(i >= 80)).collect();
        let s = split(100, Some(&classes), 0.2, 0.1, 7).unwrap();
        let ones = |v: &[usize]| v.iter().filter(|&&i| classes[i] == 1).count();
        assert_eq!((ones(&s.train), ones(&s.val), ones(&s.test)), (14, 4, 2));
        assert_eq!(s.train.len() + s.val.len() + s.test.len(), 100);
    }

    #[test]
    fn standardization_is_per_channel_over_the_window() {
        let (m, s) = standardization(
            &[vec![1.0, 3.0, 5.0, 5.0], vec![1.0, 3.0, 5.0, 5.0]],
            &[2, 2],
        );
        assert_eq!(m, vec![2.0, 5.0]);
        assert_eq!(s, vec![1.0, 1.0]);
    }
}
