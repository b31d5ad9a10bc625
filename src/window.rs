//! The window stage: a sliding window of samples laid out as the model's
//! input tensor.

use std::collections::VecDeque;

use crate::config::Layout;

/// A sliding window of `size` samples that is ready every `hop` samples.
#[derive(Debug, Clone)]
pub struct Window {
    size: usize,
    hop: usize,
    channels: usize,
    layout: Layout,
    /// Time-major values of the last `size` samples.
    buf: VecDeque<f32>,
    since_ready: usize,
    primed: bool,
}

impl Window {
    /// A window of `size` samples × `channels`, ready every `hop` samples.
    pub fn new(size: usize, hop: usize, channels: usize, layout: Layout) -> Self {
        Window {
            size,
            hop,
            channels,
            layout,
            buf: VecDeque::with_capacity(size * channels),
            since_ready: 0,
            primed: false,
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
        if self.buf.len() == self.size * self.channels {
            self.buf.drain(..self.channels);
        }
        self.buf.extend(values.iter().copied());
        if self.buf.len() < self.size * self.channels {
            return false;
        }
        if !self.primed {
            self.primed = true;
            self.since_ready = 0;
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
        match self.layout {
            Layout::Nwc | Layout::Flat => out.extend(self.buf.iter().copied()),
            Layout::Ncw => {
                out.resize(self.size * self.channels, 0.0);
                for (i, v) in self.buf.iter().enumerate() {
                    let (t, c) = (i / self.channels, i % self.channels);
                    out[c * self.size + t] = *v;
                }
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
}
