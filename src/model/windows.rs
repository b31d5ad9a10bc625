//! Where a convolution's windows lie: its input padded (and split into
//! phase planes for a stride of 2) so that a kernel reads each tap in
//! place, and the windows gathered into columns where it does not.

use super::kernel::Geometry;

/// What [`Geometry::gather_row`] reads one image's windows from.
pub(super) enum Windows<'a> {
    /// The image as it is: each output row's taps are a run of an input
    /// row, with the padding filled in around it.
    Image(&'a [f32]),
    /// The image's planes with their padding, `plane` floats apart and in
    /// rows of `row`, and `at`, for each output position, where its
    /// window's first tap lies in a plane.
    Padded {
        planes: &'a [f32],
        at: &'a [u32],
        plane: usize,
        row: usize,
    },
}

impl Geometry {
    /// The step `s` of the (phase) planes [`pad`](Self::pad) lays the
    /// input out in, when every window lies in them: equal strides of 1 or
    /// 2, so that a tap `(ky, kx)` of position `(oy, ox)` is row `oy + ky /
    /// s`, column `ox + kx / s` of a phase plane.
    pub(super) fn phases(&self) -> Option<usize> {
        let [oh, ow] = self.output;
        let [kh, kw] = self.kernel_hw;
        let [sh, s] = self.strides;
        let (ph, pw) = self.padded();
        let fits = oh + (kh - 1) / s <= ph.div_ceil(s) && ow + (kw - 1) / s <= pw.div_ceil(s);
        (sh == s && s <= 2 && fits).then_some(s)
    }

    /// Where each row `(ci, ky, kx)` of the columns starts in the (phase)
    /// planes of step `s` that [`pad`](Self::pad) lays out.
    pub(super) fn tap_starts(&self, s: usize) -> Vec<usize> {
        let [_, cin, _, _] = self.input;
        let (plane, pw) = self.phase_plane(s);
        let [kh, kw] = self.kernel_hw;
        (0..cin)
            .flat_map(|c| (0..kh).flat_map(move |y| (0..kw).map(move |x| (c, y, x))))
            .map(|(c, y, x)| ((c * s + y % s) * s + x % s) * plane + y / s * pw + x / s)
            .collect()
    }

    /// Copies `image`'s planes into `planes` with the padding around each
    /// (zeros), each split into `s × s` phase planes when the step `s` is
    /// over 1: phase `(a, b)` holds the padded plane's rows `a, a + s, …`
    /// and columns `b, b + s, …`. `planes` holds at least `len` floats;
    /// returns the size and row length of one (phase) plane.
    pub(super) fn pad(
        &self,
        image: &[f32],
        planes: &mut Vec<f32>,
        s: usize,
        len: usize,
    ) -> (usize, usize) {
        let [_, _, h, w] = self.input;
        let [pt, pl] = self.pad_before;
        let (size, pw) = self.phase_plane(s);
        planes.clear();
        planes.resize((image.len() / (h * w) * s * s * size).max(len), 0.0);
        for (c, plane) in image.chunks_exact(h * w).enumerate() {
            for (y, row) in plane.chunks_exact(w).enumerate() {
                let (a, y) = ((y + pt) % s, (y + pt) / s);
                for b in 0..s {
                    // The first input column whose padded column is `b`
                    // past a multiple of `s`.
                    let x = (b + s - pl % s) % s;
                    let at = ((c * s + a) * s + b) * size + y * pw + (x + pl) / s;
                    if s == 1 {
                        planes[at..at + w].copy_from_slice(row);
                    } else {
                        // Chunks, not a stride: the compiler vectorises
                        // these into shuffles, as in `gather_row`.
                        let values = row.get(x..).unwrap_or_default().chunks(s);
                        for (d, v) in planes[at..].iter_mut().zip(values) {
                            *d = v[0];
                        }
                    }
                }
            }
        }
        (size, pw)
    }

    /// The size and row length of one of the `s × s` phase planes of the
    /// padded input (of the padded plane itself, for `s` = 1).
    pub(super) fn phase_plane(&self, s: usize) -> (usize, usize) {
        let (ph, pw) = self.padded();
        (ph.div_ceil(s) * pw.div_ceil(s), pw.div_ceil(s))
    }

    /// The padded input's height and width.
    pub(super) fn padded(&self) -> (usize, usize) {
        let [_, _, h, w] = self.input;
        let [pt, pl] = self.pad_before;
        let [pb, pr] = self.pad_after;
        (h + pt + pb, w + pl + pr)
    }

    /// Lays the windows of output positions `start..start + len` out as
    /// columns: row `(ci, ky, kx)` of `columns` holds, for each position,
    /// the input value under that tap (0 in the padding).
    pub(super) fn gather(&self, windows: &Windows, start: usize, len: usize, columns: &mut [f32]) {
        for (r, row) in columns.chunks_exact_mut(len).enumerate() {
            self.gather_row(windows, r, start, row);
        }
    }

    /// Row `r` of [`gather`](Self::gather), for positions `start..start +
    /// row.len()`.
    pub(super) fn gather_row(&self, windows: &Windows, r: usize, start: usize, row: &mut [f32]) {
        let [kh, kw] = self.kernel_hw;
        let (ci, ky, kx) = (r / (kh * kw), r / kw % kh, r % kw);
        let image = match *windows {
            Windows::Image(image) => image,
            Windows::Padded {
                planes,
                at,
                plane,
                row: pw,
            } => {
                let at = &at[start..start + row.len()];
                let tap = &planes[ci * plane + ky * pw + kx..];
                for (v, &a) in row.iter_mut().zip(at) {
                    *v = tap[a as usize];
                }
                return;
            }
        };
        let [_, _, h, w] = self.input;
        let [_, ow] = self.output;
        let [sh, sw] = self.strides;
        let [pt, pl] = self.pad_before;
        let len = row.len();
        let plane = &image[ci * h * w..][..h * w];
        // Output columns whose tap lands inside the input row.
        let first = pl.saturating_sub(kx).div_ceil(sw);
        let end = (w + pl).saturating_sub(kx).div_ceil(sw);
        // Stepped, not divided out of `start + done` per run: KWS's
        // stem has 5-wide output rows, so a run per 5 values, and took
        // 18.4–21.2 µs stepped against 20.3–24.8 µs divided.
        let (mut oy, mut ox) = (start / ow, start % ow);
        let mut done = 0;
        while done < len {
            let run = (ow - ox).min(len - done);
            let dst = &mut row[done..done + run];
            let iy = (oy * sh + ky).wrapping_sub(pt);
            let (lo, hi) = (first.clamp(ox, ox + run), end.clamp(ox, ox + run));
            if iy >= h || lo >= hi {
                dst.fill(0.0);
            } else {
                dst[..lo - ox].fill(0.0);
                dst[hi - ox..].fill(0.0);
                let src = &plane[iy * w..][..w];
                let ix = lo * sw + kx - pl;
                let dst = &mut dst[lo - ox..hi - ox];
                if sw == 1 {
                    dst.copy_from_slice(&src[ix..ix + dst.len()]);
                } else if sw == 2 && ix + 2 * dst.len() <= w {
                    // Pairs, not a stride: the compiler vectorises this
                    // into shuffles, where `step_by` moves one value at a
                    // time.
                    for (d, pair) in dst.iter_mut().zip(src[ix..].chunks_exact(2)) {
                        *d = pair[0];
                    }
                } else {
                    for (d, &s) in dst.iter_mut().zip(src[ix..].iter().step_by(sw)) {
                        *d = s;
                    }
                }
            }
            done += run;
            (oy, ox) = (oy + 1, 0);
        }
    }
}
