//! The window stage: a sliding window of samples laid out as the model's
//! input tensor.

use crate::config::Layout;

/// A sliding window of `size` samples that is ready every `hop` samples.
///
/// Each value is stored twice, `size` apart, in the layout's own order, so
/// the current window is always one contiguous run per channel (NCW) or one
/// run in all (NWC, flat): a push is a few stores and filling the model's
/// input is plain copies, with no wrap-around and no transposing.
#[derive(Debug, Clone)]
pub struct Window {
    size: usize,
    hop: usize,
    channels: usize,
    layout: Layout,
    buf: Vec<f32>,
    /// Next write position in 0..size; also where the oldest sample sits.
    pos: usize,
    seen: usize,
    since_ready: usize,
}

impl Window {
    /// A window of `size` samples × `channels`, ready every `hop` samples.
    pub fn new(size: usize, hop: usize, channels: usize, layout: Layout) -> Self {
        Window {
            size,
            hop,
            channels,
            layout,
            buf: vec![0.0; 2 * size * channels],
            pos: 0,
            seen: 0,
            since_ready: 0,
        }
    }

    /// Channels per sample.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Samples per window.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Samples between windows.
    pub fn hop(&self) -> usize {
        self.hop
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The input tensor shape this window fills, batch of one.
    pub fn shape(&self) -> Vec<usize> {
        shape_for(self.layout, self.size, self.channels)
    }

    /// Adds one sample (exactly `channels` values); true when a window is ready.
    pub fn push(&mut self, values: &[f32]) -> bool {
        debug_assert_eq!(values.len(), self.channels);
        let (n, p) = (self.size, self.pos);
        match self.layout {
            Layout::Ncw => {
                for (c, v) in values.iter().enumerate() {
                    let base = c * 2 * n;
                    self.buf[base + p] = *v;
                    self.buf[base + p + n] = *v;
                }
            }
            Layout::Nwc | Layout::Flat => {
                let ch = self.channels;
                self.buf[p * ch..(p + 1) * ch].copy_from_slice(values);
                self.buf[(p + n) * ch..(p + n + 1) * ch].copy_from_slice(values);
            }
        }
        self.pos = if p + 1 == n { 0 } else { p + 1 };
        self.seen += 1;
        if self.seen < n {
            return false;
        }
        if self.seen == n {
            return true;
        }
        self.since_ready += 1;
        if self.since_ready == self.hop {
            self.since_ready = 0;
            true
        } else {
            false
        }
    }

    /// Writes the current window into `out` in the model's layout.
    pub fn fill(&self, out: &mut Vec<f32>) {
        out.clear();
        let (n, p) = (self.size, self.pos);
        match self.layout {
            Layout::Ncw => {
                for c in 0..self.channels {
                    let base = c * 2 * n + p;
                    out.extend_from_slice(&self.buf[base..base + n]);
                }
            }
            Layout::Nwc | Layout::Flat => {
                let ch = self.channels;
                out.extend_from_slice(&self.buf[p * ch..(p + n) * ch]);
            }
        }
    }
}

/// The tensor shape of a `size` × `channels` window in `layout`.
pub fn shape_for(layout: Layout, size: usize, channels: usize) -> Vec<usize> {
    match layout {
        Layout::Ncw => vec![1, channels, size],
        Layout::Nwc => vec![1, size, channels],
        Layout::Flat => vec![1, size * channels],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_window_when_full_then_every_hop() {
        let mut w = Window::new(3, 2, 1, Layout::Flat);
        let ready: Vec<bool> = (0..8).map(|i| w.push(&[i as f32])).collect();
        assert_eq!(
            ready,
            vec![false, false, true, false, true, false, true, false]
        );
        let mut out = vec![];
        w.fill(&mut out);
        assert_eq!(out, vec![5.0, 6.0, 7.0]);
    }

    #[test]
    fn layouts_place_channels_right() {
        let mut ncw = Window::new(2, 1, 3, Layout::Ncw);
        let mut nwc = Window::new(2, 1, 3, Layout::Nwc);
        for s in [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]] {
            ncw.push(&s);
            nwc.push(&s);
        }
        let mut out = vec![];
        ncw.fill(&mut out);
        assert_eq!(out, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(ncw.shape(), vec![1, 3, 2]);
        nwc.fill(&mut out);
        assert_eq!(out, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(nwc.shape(), vec![1, 2, 3]);
    }

    #[test]
    fn matches_a_plain_slice_of_history_over_many_wraps() {
        for layout in [Layout::Ncw, Layout::Nwc, Layout::Flat] {
            let (size, hop, ch) = (4, 3, 3);
            let mut w = Window::new(size, hop, ch, layout);
            let mut history: Vec<Vec<f32>> = Vec::new();
            let mut out = vec![];
            let mut windows = 0;
            for i in 0..50 {
                let s: Vec<f32> = (0..ch).map(|c| (i * 10 + c) as f32).collect();
                history.push(s.clone());
                if w.push(&s) {
                    windows += 1;
                    w.fill(&mut out);
                    let last = &history[history.len() - size..];
                    let want: Vec<f32> = match layout {
                        Layout::Ncw => (0..ch)
                            .flat_map(|c| last.iter().map(move |s| s[c]))
                            .collect(),
                        _ => last.iter().flatten().copied().collect(),
                    };
                    assert_eq!(out, want, "{layout:?} at sample {i}");
                }
            }
            assert_eq!(windows, 1 + (50 - size) / hop);
        }
    }
}
