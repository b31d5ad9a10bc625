//! The matrix product of the dense convolutions (`GemmConv`) on AVX-512 or
//! AVX2 with FMA, with its operands in the layout its inner loop reads.
//!
//! Why: under `perf`, ResNet-18 spent 57 % of its time in the gemm crate's
//! AVX-512 kernel and another 25 % around it: laying the input windows out
//! as columns, the crate copying those columns again into its own panels
//! (and the weights, on every call), and a further pass adding the bias.
//! Here the weights are packed once, when the op is built; each window row
//! is dealt out to the panels as soon as it is gathered, with no second
//! copy; and each tile starts from its bias and is clamped in registers
//! before it is stored.
//!
//! A tile is [`ROWS`] output channels by up to [`LANES`] output positions,
//! 24 of the 32 vector registers, which hide the fused multiply-add's
//! latency on two units. AVX2 has 16 registers of half the width: there a
//! tile is [`AVX2_ROWS`] channels by [`AVX2_LANES`] positions (12
//! registers of sums, 2 of columns and one weight), and a panel is one
//! tile wide. The depth is folded at most [`DEPTH`] at a time:
//! a group of channels' weights for one pass (8 KiB) stays in L1 while the
//! block's panels stream past it from L2.

use std::arch::x86_64::*;

/// Output channels one AVX-512 tile computes; packed weights come in
/// groups of this many rows ([`AVX2_ROWS`] on AVX2), zero past the last
/// channel.
const ROWS: usize = 8;

/// Output channels one AVX2 tile computes. With four channels by 24
/// positions (12 sums, 3 columns, a weight: all 16 registers) the compiler
/// kept a sum on the stack, and ResNet-18 ran 1.7× slower than on the
/// gemm crate.
const AVX2_ROWS: usize = 6;

/// Output positions of a full AVX-512 panel: three 16-float vectors.
const LANES: usize = 48;

/// Output positions of a full AVX2 panel: two 8-float vectors, so that a
/// tile's columns for one pass are one contiguous run. In 48-wide panels
/// (a tile's 64 bytes per row 192 bytes apart) products from ResNet-18's
/// k = 192 up took 1.0–1.2× the gemm crate's time on a Zen 3; in these,
/// 0.85–1.03×, and MobileNetV2's shallow ones 0.6–0.8× (the products alone,
/// side by side, BENCHMARKS.md "16-wide panels on AVX2").
const AVX2_LANES: usize = 16;

/// The most depth folded per pass: fewer passes store and reload each
/// tile fewer times, and a pass's weights for a group of channels stay in
/// L1. Passes split the depth evenly, so a stem's 147 is one pass, not 128
/// and 19.
const DEPTH: usize = 256;

/// Weights `[cout, k]`, given as the row-major blocks of columns
/// `[cout, k_i]` of each product, laid out for [`product`] (`rows` the
/// kernel's [`Isa::rows`]) or for `narrow`'s product (`rows` its
/// `CHANNELS`): for each group of `rows` channels, for each `k`, the
/// group's weights, zero past the last channel.
pub(super) fn pack_rows(rows: usize, blocks: &[&[f32]], cout: usize) -> Vec<f32> {
    let depth: usize = blocks.iter().map(|b| b.len() / cout).sum();
    let groups = cout.div_ceil(rows);
    let mut packed = vec![0f32; groups * depth * rows];
    let mut k0 = 0;
    for block in blocks {
        let k = block.len() / cout;
        for (c, row) in block.chunks_exact(k.max(1)).enumerate() {
            let group = &mut packed[c / rows * depth * rows..][..depth * rows];
            for (i, &w) in row.iter().enumerate() {
                group[(k0 + i) * rows + c % rows] = w;
            }
        }
        k0 += k;
    }
    packed
}

/// Where a block of positions' columns go, and how wide its panel `p` is:
/// panel `p` of a block of `n` positions starts at `p * isa.lanes() *
/// depth` and holds `depth` rows of `width` floats, position `i` of the
/// panel at offset `i` of each row.
fn panel(isa: Isa, p: usize, n: usize, depth: usize) -> (usize, usize, usize) {
    let full = isa.lanes();
    let lanes = (n - p * full).min(full);
    (p * full * depth, lanes, lanes.div_ceil(16) * 16)
}

/// Deals row `r` of a block's columns, `row[i]` for its positions `i`, out
/// to the panels of `columns`, each `depth` rows deep.
pub(super) fn put_row(isa: Isa, row: &[f32], r: usize, depth: usize, columns: &mut [f32]) {
    match isa {
        Isa::Avx512 => deal::<LANES>(isa, row, r, depth, columns),
        Isa::Avx2 => deal::<AVX2_LANES>(isa, row, r, depth, columns),
    }
}

/// [`put_row`] for panels of `L` positions.
fn deal<const L: usize>(isa: Isa, row: &[f32], r: usize, depth: usize, columns: &mut [f32]) {
    let n = row.len();
    let (whole, rest) = row.split_at(n / L * L);
    // Row `r` of whole panel `p` is at `p * L * depth + r * L`: a step,
    // where `panel` would multiply and divide for every 16 floats.
    let panels = columns[r * L..].chunks_mut(L * depth);
    for (part, dst) in whole.chunks_exact(L).zip(panels) {
        // A constant length: vector moves, not a call.
        dst[..L].copy_from_slice(part);
    }
    if !rest.is_empty() {
        let (at, lanes, width) = panel(isa, n / L, n, depth);
        columns[at + r * width..][..lanes].copy_from_slice(rest);
    }
}

/// Where [`product`] reads the columns `[k, i]` of a block's positions.
#[derive(Clone, Copy)]
pub(super) enum Columns<'a> {
    /// Laid out by [`put_row`].
    Panels(&'a [f32]),
    /// Read in place, on AVX2 only and for a multiple of 16 positions:
    /// `columns[k, i] = planes[at[k] + i]`. A stride-1 convolution's
    /// windows over its padded input are this, with positions running
    /// through the padded rows, so that nothing is gathered.
    Planes { planes: &'a [f32], at: &'a [usize] },
}

/// `out[c, i] = clamp(bias[c] + Σ_k W[c, k] · columns[k, i])` for the
/// `n` positions `i` of a block, channel `c`'s row at `c * stride` in
/// `out`, on the kernel `isa`, which must run on this CPU: `packed` from
/// [`pack_rows`] and `columns` laid out for `isa`.
#[allow(clippy::too_many_arguments)]
pub(super) fn product(
    isa: Isa,
    packed: &[f32],
    columns: Columns,
    n: usize,
    out: &mut [f32],
    stride: usize,
    bias: &[f32],
    [low, high]: [f32; 2],
) {
    let rows = isa.rows();
    let cout = bias.len();
    let depth = packed.len() / (cout.div_ceil(rows) * rows);
    assert!(n > 0 && n <= stride && (cout - 1) * stride + n <= out.len());
    let full = isa.lanes();
    match columns {
        Columns::Panels(columns) => {
            let (at, _, width) = panel(isa, n.div_ceil(full) - 1, n, depth);
            assert!(columns.len() >= at + depth * width);
        }
        Columns::Planes { planes, at } => {
            assert!(matches!(isa, Isa::Avx2) && n.is_multiple_of(AVX2_LANES) && at.len() == depth);
            assert!(at.iter().all(|&a| a + n <= planes.len()));
        }
    }
    assert!(isa.runs_here());
    let pass = depth.div_ceil(depth.div_ceil(DEPTH));
    for k0 in (0..depth).step_by(pass) {
        let k = pass.min(depth - k0);
        for (g, bias) in bias.chunks(rows).enumerate() {
            let weights = &packed[(g * depth + k0) * rows..][..k * rows];
            for p in 0..n.div_ceil(full) {
                let (at, lanes, width) = panel(isa, p, n, depth);
                let out = &mut out[g * rows * stride + p * full..];
                let tile = Tile {
                    depth: k,
                    rows: bias.len(),
                    lanes,
                    stride,
                    start: if k0 == 0 { Some(bias) } else { None },
                    clamp: (k0 + k == depth).then_some([low, high]),
                };
                // SAFETY: the CPU has the features `isa` names, as
                // checked; the tile reads `k` rows of `width` floats (of
                // 16 from `planes`), inside the columns as asserted above,
                // and `weights` holds `k` rows of `rows`; the tile's `rows`
                // rows of `lanes` outputs, `stride` apart, lie inside
                // `out`, as asserted above for the whole block.
                unsafe {
                    match (isa, columns) {
                        (Isa::Avx512, Columns::Panels(columns)) => {
                            let cols = &columns[at + k0 * width..][..k * width];
                            match width / 16 {
                                1 => tile.run::<1>(cols, weights, out),
                                2 => tile.run::<2>(cols, weights, out),
                                _ => tile.run::<3>(cols, weights, out),
                            }
                        }
                        // Group by group here too: every group passing
                        // over 16 positions' columns before the next 16
                        // kept those in L1 but ran MobileNetV2's 96 × 12544
                        // expansion 2.1× slower, its stores spread over 96
                        // rows.
                        (Isa::Avx2, Columns::Panels(columns)) => {
                            let cols = columns[at + k0 * width..].as_ptr();
                            tile.run_avx2(|t| cols.add(t * width), weights, out);
                        }
                        (_, Columns::Planes { planes, at }) => {
                            let (planes, at) = (planes[p * full..].as_ptr(), &at[k0..k0 + k]);
                            tile.run_avx2(|t| planes.add(*at.get_unchecked(t)), weights, out);
                        }
                    }
                }
            }
        }
    }
}

/// Which kernel [`product`] runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// The kernel for this CPU, or `None` when it has neither AVX-512F nor
    /// AVX2 with FMA (the gemm crate then runs the products).
    pub(super) fn of_this_cpu() -> Option<Self> {
        Self::ALL.into_iter().find(|isa| isa.runs_here())
    }

    /// Every kernel, the fastest first.
    const ALL: [Isa; 2] = [Isa::Avx512, Isa::Avx2];

    /// Whether this CPU has the features the kernel needs.
    fn runs_here(self) -> bool {
        use std::arch::is_x86_feature_detected as has;
        match self {
            Isa::Avx512 => has!("avx512f"),
            Isa::Avx2 => has!("avx2") && has!("fma"),
        }
    }

    /// Output channels per tile, and per group of packed weights.
    pub(super) fn rows(self) -> usize {
        match self {
            Isa::Avx512 => ROWS,
            Isa::Avx2 => AVX2_ROWS,
        }
    }

    /// Output positions per full panel of columns.
    pub(super) fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => LANES,
            Isa::Avx2 => AVX2_LANES,
        }
    }
}

/// One tile's part of a product.
#[derive(Clone, Copy)]
struct Tile<'a> {
    depth: usize,
    /// Channels stored, at most the kernel's per tile ([`ROWS`] or
    /// [`AVX2_ROWS`]).
    rows: usize,
    /// Positions stored, at most `16 * V` (16 on AVX2).
    lanes: usize,
    stride: usize,
    /// The bias to start from, on the first pass; later passes start from
    /// what the last one stored.
    start: Option<&'a [f32]>,
    /// Bounds applied before storing, on the last pass.
    clamp: Option<[f32; 2]>,
}

impl Tile<'_> {
    /// Folds `depth` rows of `cols` (`16 * V` floats each) times `weights`
    /// ([`ROWS`] each) into the tile at the start of `out`.
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const V: usize>(&self, cols: &[f32], weights: &[f32], out: &mut [f32]) {
        let last = (self.lanes - 16 * (V - 1)) as u32;
        let mask = |v: usize| -> __mmask16 {
            if v + 1 < V || last == 16 {
                0xffff
            } else {
                (1u16 << last) - 1
            }
        };
        let out = out.as_mut_ptr();
        let (cols, weights) = (cols.as_ptr(), weights.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
        // Rows past `rows` are computed from zero weights and never
        // stored: constant indices keep `acc` in registers.
        for (r, acc) in acc.iter_mut().enumerate() {
            if r < self.rows {
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = match self.start {
                        Some(bias) => _mm512_set1_ps(bias[r]),
                        None => _mm512_maskz_loadu_ps(mask(v), out.add(r * self.stride + 16 * v)),
                    };
                }
            }
        }
        for t in 0..self.depth {
            let c: [__m512; V] =
                std::array::from_fn(|v| _mm512_loadu_ps(cols.add(t * 16 * V + 16 * v)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*weights.add(t * ROWS + r));
                for (a, &c) in acc.iter_mut().zip(&c) {
                    *a = _mm512_fmadd_ps(c, w, *a);
                }
            }
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            if r < self.rows {
                for (v, a) in acc.iter_mut().enumerate() {
                    if let Some([low, high]) = self.clamp {
                        // Maximum then minimum with the value second: a
                        // NaN stays NaN, as in the other paths.
                        *a = _mm512_max_ps(_mm512_set1_ps(low), *a);
                        *a = _mm512_min_ps(_mm512_set1_ps(high), *a);
                    }
                    _mm512_mask_storeu_ps(out.add(r * self.stride + 16 * v), mask(v), *a);
                }
            }
        }
    }

    /// [`run`](Self::run) on AVX2, for [`AVX2_ROWS`] channels and up to
    /// 16 positions: row `t` of the columns starts at `row(t)`, `weights`
    /// rows are [`AVX2_ROWS`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, row: impl Fn(usize) -> *const f32, weights: &[f32], out: &mut [f32]) {
        const V: usize = 2;
        // Up to 16 positions: the second vector's mask is empty for 8 or
        // fewer.
        let mask = |v: usize| -> __m256i {
            let n = self.lanes.saturating_sub(8 * v).min(8) as i32;
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(n),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        };
        let out = out.as_mut_ptr();
        let weights = weights.as_ptr();
        let mut acc = [[_mm256_setzero_ps(); V]; AVX2_ROWS];
        for (r, acc) in acc.iter_mut().enumerate() {
            if r < self.rows {
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = match self.start {
                        Some(bias) => _mm256_set1_ps(bias[r]),
                        None if self.lanes == 16 => {
                            _mm256_loadu_ps(out.add(r * self.stride + 8 * v))
                        }
                        None => _mm256_maskload_ps(out.add(r * self.stride + 8 * v), mask(v)),
                    };
                }
            }
        }
        for t in 0..self.depth {
            let cols = row(t);
            let c: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(cols.add(8 * v)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = _mm256_broadcast_ss(&*weights.add(t * AVX2_ROWS + r));
                for (a, &c) in acc.iter_mut().zip(&c) {
                    *a = _mm256_fmadd_ps(c, w, *a);
                }
            }
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            if r < self.rows {
                for (v, a) in acc.iter_mut().enumerate() {
                    if let Some([low, high]) = self.clamp {
                        *a = _mm256_max_ps(_mm256_set1_ps(low), *a);
                        *a = _mm256_min_ps(_mm256_set1_ps(high), *a);
                    }
                    // A masked store only where it must: on AMD's Zen 3
                    // it is microcoded, and with it on every tile
                    // MobileNetV2's k = 16 products ran 1.7× slower than
                    // the gemm crate's.
                    if self.lanes == 16 {
                        _mm256_storeu_ps(out.add(r * self.stride + 8 * v), *a);
                    } else {
                        _mm256_maskstore_ps(out.add(r * self.stride + 8 * v), mask(v), *a);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::values;

    /// Products of every tile width, channel counts that are not a
    /// multiple of [`ROWS`], depths over [`DEPTH`], bias, bounds and a
    /// weight matrix given in two blocks match a plain triple loop.
    #[test]
    fn products_match_a_plain_loop() {
        let cases = [
            (1, 1, 1),
            (8, 3, 48),
            (7, 300, 50),
            (17, 513, 130),
            (16, 9, 33),
            (5, 20, 41),
            (9, 7, 20),
            (13, 600, 32),
        ];
        let isas = Isa::ALL.into_iter().filter(|isa| isa.runs_here());
        for (isa, (cout, depth, n)) in isas.flat_map(|isa| cases.map(|case| (isa, case))) {
            let split = depth / 3;
            let w = values(cout * depth, 3);
            let x = values(depth * n, 1);
            let bias = values(cout, 5);
            let [low, high] = [-1.5f32, 2.0];
            let first: Vec<f32> = w.chunks(depth).flat_map(|r| r[..split].to_vec()).collect();
            let second: Vec<f32> = w.chunks(depth).flat_map(|r| r[split..].to_vec()).collect();
            let packed = pack_rows(isa.rows(), &[&first, &second], cout);
            let full = isa.lanes();
            let mut columns = vec![f32::NAN; depth * n.div_ceil(full) * full];
            for p in 0..n.div_ceil(full) {
                let (at, lanes, width) = panel(isa, p, n, depth);
                for k in 0..depth {
                    for i in 0..lanes {
                        columns[at + k * width + i] = x[k * n + p * full + i];
                    }
                }
            }
            let stride = n + 3;
            let run = |columns: Columns| {
                let mut out = vec![f32::NAN; cout * stride];
                product(
                    isa,
                    &packed,
                    columns,
                    n,
                    &mut out,
                    stride,
                    &bias,
                    [low, high],
                );
                check(&out, stride, &w, &x, &bias, [low, high], [cout, depth, n]);
            };
            run(Columns::Panels(&columns));
            // The same columns read in place from rows of `x` in reverse
            // order, each a few floats past the last one's end.
            if matches!(isa, Isa::Avx2) && n.is_multiple_of(AVX2_LANES) {
                let at: Vec<usize> = (0..depth).map(|k| (depth - 1 - k) * (n + 5)).collect();
                let mut planes = vec![f32::NAN; depth * (n + 5)];
                for (k, &a) in at.iter().enumerate() {
                    planes[a..a + n].copy_from_slice(&x[k * n..][..n]);
                }
                run(Columns::Planes {
                    planes: &planes,
                    at: &at,
                });
            }
        }
    }

    /// Asserts that `out` holds `clamp(bias + w · x)` for `n` positions in
    /// rows `stride` apart, and nothing past them.
    fn check(
        out: &[f32],
        stride: usize,
        w: &[f32],
        x: &[f32],
        bias: &[f32],
        [low, high]: [f32; 2],
        [cout, depth, n]: [usize; 3],
    ) {
        for c in 0..cout {
            for i in 0..n {
                let sum: f32 = (0..depth).map(|k| w[c * depth + k] * x[k * n + i]).sum();
                let want = (bias[c] + sum).clamp(low, high);
                let got = out[c * stride + i];
                assert!(
                    (want - got).abs() <= 1e-4 * want.abs().max(1.0),
                    "{cout} {depth} {n}: [{c}, {i}] {want} vs {got}"
                );
            }
            let past = &out[c * stride + n..(c + 1) * stride];
            assert!(past.iter().all(|v| v.is_nan()), "only the block is written");
        }
    }
}
