//! The matrix product of the dense convolutions with few output positions
//! (7×7 outputs and smaller) on AVX2 with FMA: output channels in the
//! vectors, positions broadcast, the input read in place.
//!
//! Why: [`packed`](super::packed)'s tiles run along positions, 16 at a
//! time, so 49 positions cost as much as 64 there; the gemm crate, which ran
//! these instead, re-packs the weights on every call (9.4 MB for one of
//! ResNet-18's 512-channel layers). Here a tile is [`CHANNELS`] channels by
//! up to [`MOST`] positions, the positions split evenly over the tiles (49
//! are four tiles of 6 and five of 5), so no lane computes a position that
//! is not there; the weights are packed once, when the op is built; and
//! each tap of each position is read where it lies in the input, as
//! [`Columns::Planes`](super::packed::Columns::Planes) reads it.

use std::arch::x86_64::*;

/// Output channels one tile computes: two 8-float vectors. Packed weights
/// come in groups of this many channels, zero past the last.
pub(super) const CHANNELS: usize = 16;

/// Positions one tile computes at most: 12 sums, the two weight vectors
/// and the broadcast take 15 of the 16 registers.
const MOST: usize = 6;

/// The most depth folded per pass, as in [`packed`](super::packed): a
/// group's weights for one pass (16 KiB) stay in L1.
const DEPTH: usize = 256;

/// Whether this CPU runs [`product`].
pub(super) fn runs_here() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx2") && has!("fma")
}

/// `out[c, i] = clamp(bias[c] + Σ_k W[c, k] · input[at[k] + positions[i]])`
/// for each output channel `c` (row `c` of `out`, `positions.len()` long)
/// and position `i`: `packed` from
/// [`pack_rows`](super::packed::pack_rows) in groups of
/// [`CHANNELS`]; `sums` is scratch space. Must run on a CPU with AVX2 and
/// FMA ([`runs_here`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn product(
    packed: &[f32],
    input: &[f32],
    at: &[usize],
    positions: &[usize],
    out: &mut [f32],
    bias: &[f32],
    [low, high]: [f32; 2],
    sums: &mut Vec<f32>,
) {
    let (cout, n, depth) = (bias.len(), positions.len(), at.len());
    let width = cout.next_multiple_of(CHANNELS);
    assert!(runs_here() && n > 0 && packed.len() == width * depth && out.len() == cout * n);
    let last = positions.iter().max().copied().unwrap_or(0);
    assert!(at.iter().all(|&a| a + last < input.len()));
    // Position `i`'s sums are row `i` of `sums`, all channels: a tile
    // loads and stores them as whole vectors.
    sums.clear();
    for _ in 0..n {
        sums.extend_from_slice(bias);
        sums.resize(sums.len() + width - cout, 0.0);
    }
    let tiles = n.div_ceil(MOST);
    let pass = depth.div_ceil(depth.div_ceil(DEPTH));
    for k0 in (0..depth).step_by(pass) {
        let k = pass.min(depth - k0);
        let at = &at[k0..k0 + k];
        for g in 0..width / CHANNELS {
            let weights = packed[(g * depth + k0) * CHANNELS..][..k * CHANNELS].as_ptr();
            let mut i = 0;
            for q in 0..tiles {
                let p = n / tiles + usize::from(q < n % tiles);
                let sums = sums[i * width + g * CHANNELS..].as_mut_ptr();
                let positions = &positions[i..i + p];
                // SAFETY: AVX2 and FMA are there, as asserted; the tile
                // reads `k` rows of `CHANNELS` weights, inside `packed`,
                // and `input` at `at[t] + positions[j]`, inside it as
                // asserted; it loads and stores `CHANNELS` sums for each of
                // its `p` positions, rows `width` apart inside `sums`.
                unsafe {
                    let tile = Tile {
                        weights,
                        input: input.as_ptr(),
                        at,
                        sums,
                        width,
                    };
                    match p {
                        1 => tile.run::<1>(positions),
                        2 => tile.run::<2>(positions),
                        3 => tile.run::<3>(positions),
                        4 => tile.run::<4>(positions),
                        5 => tile.run::<5>(positions),
                        _ => tile.run::<6>(positions),
                    }
                }
                i += p;
            }
        }
    }
    // Eight channels at a time: one line of each position's sums, written
    // out to eight rows, where channel by channel each line would be read
    // eight times, far apart.
    for (c0, out) in out.chunks_mut(8 * n).enumerate() {
        for (i, sums) in sums.chunks_exact(width).enumerate() {
            for (j, out) in out.chunks_exact_mut(n).enumerate() {
                // Maximum then minimum: a NaN stays NaN, as in the other
                // paths.
                let s = sums[8 * c0 + j];
                let s = if s < low { low } else { s };
                out[i] = if s > high { high } else { s };
            }
        }
    }
}

/// One tile's part of a pass.
struct Tile<'a> {
    /// The pass's weights for the tile's channels: a row of [`CHANNELS`]
    /// per tap.
    weights: *const f32,
    input: *const f32,
    /// Where each tap of the pass starts in `input`.
    at: &'a [usize],
    /// The tile's first position's sums; the next position's are `width`
    /// further.
    sums: *mut f32,
    width: usize,
}

impl Tile<'_> {
    /// Folds the pass into the sums of the `P` positions at `positions`
    /// (offsets from each tap's start).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run<const P: usize>(&self, positions: &[usize]) {
        let off: [usize; P] = std::array::from_fn(|j| positions[j]);
        let mut acc = [[_mm256_setzero_ps(); 2]; P];
        for (j, acc) in acc.iter_mut().enumerate() {
            for (v, a) in acc.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(self.sums.add(j * self.width + 8 * v));
            }
        }
        for (t, &at) in self.at.iter().enumerate() {
            let w0 = _mm256_loadu_ps(self.weights.add(t * CHANNELS));
            let w1 = _mm256_loadu_ps(self.weights.add(t * CHANNELS + 8));
            let tap = self.input.add(at);
            for (acc, &off) in acc.iter_mut().zip(&off) {
                let x = _mm256_broadcast_ss(&*tap.add(off));
                acc[0] = _mm256_fmadd_ps(w0, x, acc[0]);
                acc[1] = _mm256_fmadd_ps(w1, x, acc[1]);
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            for (v, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(self.sums.add(j * self.width + 8 * v), *a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::values;
    use crate::model::packed::pack_rows;

    /// Every tile size, channel counts that are not a multiple of
    /// [`CHANNELS`], depths over [`DEPTH`], bias and bounds, with taps and
    /// positions scattered through the input, match a plain loop.
    #[test]
    fn products_match_a_plain_loop() {
        if !runs_here() {
            return;
        }
        for (cout, depth, n) in [
            (16, 9, 1),
            (8, 20, 2),
            (20, 40, 3),
            (5, 30, 4),
            (40, 513, 49),
            (17, 300, 63),
            (33, 7, 11),
        ] {
            let w = values(cout * depth, 3);
            let bias = values(cout, 5);
            let [low, high] = [-1.5f32, 2.0];
            // Taps in reverse order, a few floats apart; positions two
            // apart, past every tap's start.
            let at: Vec<usize> = (0..depth).map(|k| (depth - 1 - k) * 3).collect();
            let positions: Vec<usize> = (0..n).map(|i| 2 * i).collect();
            let input = values(depth * 3 + 2 * n, 1);
            let packed = pack_rows(CHANNELS, &[&w], cout);
            let mut out = vec![f32::NAN; cout * n];
            let mut sums = vec![];
            product(
                &packed,
                &input,
                &at,
                &positions,
                &mut out,
                &bias,
                [low, high],
                &mut sums,
            );
            for c in 0..cout {
                for i in 0..n {
                    let sum: f32 = (0..depth)
                        .map(|k| w[c * depth + k] * input[at[k] + positions[i]])
                        .sum();
                    let want = (bias[c] + sum).clamp(low, high);
                    let got = out[c * n + i];
                    assert!(
                        (want - got).abs() <= 1e-4 * want.abs().max(1.0),
                        "{cout} {depth} {n}: [{c}, {i}] {want} vs {got}"
                    );
                }
            }
        }
    }
}
