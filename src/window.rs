//! The window stage: a sliding window of samples laid out as the model's
//! input tensor. Owns `[window]`, and resolves it against the model: the
//! config first, then the model's metadata, then its input shape.

use serde::Deserialize;

use crate::model::{meta, meta_list, shape_fits, DeclaredInput, ModelFile};
use crate::problem::Problems;

/// `[window]`: missing values come from the model's metadata, then its input shape.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Samples per window.
    pub size: Option<usize>,
    /// Samples between the starts of consecutive windows; default `size`.
    pub hop: Option<usize>,
    /// How the window is laid out in the model's input tensor.
    pub layout: Option<Layout>,
}

/// Layout of a window in the input tensor.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `[1, channels, size]`, what 1-D convolutions take.
    Ncw,
    /// `[1, size, channels]`.
    Nwc,
    /// `[1, size × channels]`, time-major: what an MLP over features takes.
    Flat,
}

impl Layout {
    /// Parses a layout name as the model's metadata gives it.
    pub fn from_name(s: &str) -> Option<Layout> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ncw" => Some(Layout::Ncw),
            "nwc" => Some(Layout::Nwc),
            "flat" => Some(Layout::Flat),
            _ => None,
        }
    }

    /// The lower-case name, as in config and metadata.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Ncw => "ncw",
            Layout::Nwc => "nwc",
            Layout::Flat => "flat",
        }
    }
}

impl WindowConfig {
    /// Checks `[window]` on its own (see [`WindowConfig::resolve`] for the
    /// checks against the model).
    pub fn validate(&self, p: &mut Problems) {
        for (value, field) in [(self.size, "window.size"), (self.hop, "window.hop")] {
            p.check(value != Some(0), field, || {
                "expected a positive number of samples, found 0".into()
            });
        }
    }

    /// The window this config makes for `file`'s `input`: each setting from
    /// the config, else the model's metadata, else the input's shape.
    /// `source_channels` is what the source knows of its channel count.
    /// `None` after noting why in `p`.
    pub fn resolve(
        &self,
        file: &ModelFile,
        input: &DeclaredInput,
        source_channels: Option<usize>,
        p: &mut Problems,
    ) -> Option<Window> {
        let dims = &input.dims;
        let dim = |i: usize| dims.get(i).copied().flatten();
        let meta_usize = |key: &str| file.metadata(key).and_then(|v| v.trim().parse().ok());
        let layout = self
            .layout
            .or_else(|| file.metadata(meta::LAYOUT).and_then(Layout::from_name))
            .or(match dims.len() {
                3 => Some(Layout::Ncw),
                2 => Some(Layout::Flat),
                _ => None,
            });
        let Some(layout) = layout else {
            p.push(
                "window.layout",
                format!("expected ncw, nwc or flat; the model input {input} has no obvious layout"),
            );
            return None;
        };
        let (chan_dim, size_dim) = match layout {
            Layout::Ncw => (dim(1), dim(2)),
            Layout::Nwc => (dim(2), dim(1)),
            Layout::Flat => (None, None),
        };
        if source_channels == Some(0) {
            p.push("source.channels", "expected at least 1 channel, found 0");
            return None;
        }
        let channels = source_channels
            .or_else(|| {
                file.metadata(meta::CHANNELS)
                    .map(|v| meta_list(v).len())
                    .filter(|n| *n > 0)
            })
            .or(chan_dim.filter(|n| *n > 0))
            .or(match (layout, dim(1), self.size) {
                (Layout::Flat, Some(n), Some(size)) if size > 0 && n % size == 0 => Some(n / size),
                _ => None,
            })
            .unwrap_or(1);
        let flat_size = match (layout, dim(1)) {
            (Layout::Flat, Some(n)) if n % channels == 0 => Some(n / channels),
            _ => None,
        };
        let Some(size) = self
            .size
            .or_else(|| meta_usize(meta::WINDOW))
            .or(size_dim)
            .or(flat_size)
            .filter(|n| *n > 0)
        else {
            p.push(
                "window.size",
                format!(
                    "expected a value: the model input {input} has no fixed length and no {} metadata",
                    meta::WINDOW
                ),
            );
            return None;
        };
        let hop = self
            .hop
            .or_else(|| meta_usize(meta::HOP))
            .filter(|n| *n > 0)
            .unwrap_or(size);
        let shape = shape_for(layout, size, channels);
        if !shape_fits(dims, &shape) {
            p.push(
                "window",
                format!(
                    "a window of {size} samples x {channels} channels ({layout:?}) makes a tensor {shape:?}, \
                     but the model takes {input}"
                ),
            );
            return None;
        }
        Some(Window::new(size, hop, channels, layout))
    }
}

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
    use crate::export::{Dim, ElemType, GraphBuilder};
    use crate::problem::Origin;

    /// A model taking `dims` (0 for a symbolic dimension) with `meta`.
    fn model(dims: &[usize], meta: &[(&str, &str)]) -> ModelFile {
        let mut g = GraphBuilder::new("t");
        let shape: Vec<Dim> = dims
            .iter()
            .map(|&d| {
                if d == 0 {
                    Dim::Symbol("N".into())
                } else {
                    Dim::Fixed(d)
                }
            })
            .collect();
        let x = g.input("x", ElemType::F32, &shape);
        let y = g.relu(&x);
        g.output(&y, "y", ElemType::F32, &shape);
        for (k, v) in meta {
            g.metadata(k, v);
        }
        ModelFile::from_bytes(crate::export::to_bytes(&g.finish()), "m.onnx").unwrap()
    }

    fn resolve(
        cfg: &WindowConfig,
        file: &ModelFile,
        channels: Option<usize>,
    ) -> Result<Window, Vec<String>> {
        let origin = Origin::new("t.toml", std::path::Path::new("."));
        let mut p = Problems::new(&origin);
        let w = cfg.resolve(file, &file.inputs()[0], channels, &mut p);
        let fields = p.into_vec().into_iter().map(|e| e.field).collect();
        w.ok_or(fields)
    }

    fn described(w: &Window) -> (usize, usize, usize, Layout) {
        (w.size(), w.hop(), w.channels(), w.layout())
    }

    #[test]
    fn resolution_prefers_config_then_metadata_then_shape() {
        let ncw = model(&[0, 3, 64], &[]);
        let w = resolve(&WindowConfig::default(), &ncw, None).unwrap();
        assert_eq!(described(&w), (64, 64, 3, Layout::Ncw));
        let with_meta = model(
            &[0, 3, 64],
            &[(meta::HOP, "16"), (meta::CHANNELS, "[\"x\",\"y\",\"z\"]")],
        );
        let w = resolve(&WindowConfig::default(), &with_meta, None).unwrap();
        assert_eq!(described(&w), (64, 16, 3, Layout::Ncw));
        let cfg = WindowConfig {
            hop: Some(8),
            ..Default::default()
        };
        assert_eq!(resolve(&cfg, &with_meta, None).unwrap().hop(), 8);
        // A flat input of 20 values and a window of 10: 2 channels.
        let flat = model(&[1, 20], &[]);
        let cfg = WindowConfig {
            size: Some(10),
            ..Default::default()
        };
        let w = resolve(&cfg, &flat, None).unwrap();
        assert_eq!(described(&w), (10, 10, 2, Layout::Flat));
        // The source's channel count decides the flat window's length.
        let w = resolve(&WindowConfig::default(), &flat, Some(4)).unwrap();
        assert_eq!(described(&w), (5, 5, 4, Layout::Flat));
        let nwc = model(&[1, 8, 2], &[(meta::LAYOUT, "nwc")]);
        let w = resolve(&WindowConfig::default(), &nwc, None).unwrap();
        assert_eq!(described(&w), (8, 8, 2, Layout::Nwc));
    }

    #[test]
    fn resolution_names_what_does_not_fit() {
        let ncw = model(&[0, 3, 64], &[]);
        let cfg = WindowConfig {
            size: Some(10),
            ..Default::default()
        };
        assert_eq!(resolve(&cfg, &ncw, None).unwrap_err(), vec!["window"]);
        assert_eq!(
            resolve(&WindowConfig::default(), &ncw, Some(2)).unwrap_err(),
            vec!["window"]
        );
        let open_ended = model(&[0, 3, 0], &[]);
        assert_eq!(
            resolve(&WindowConfig::default(), &open_ended, None).unwrap_err(),
            vec!["window.size"]
        );
        let rank4 = model(&[1, 1, 2, 2], &[]);
        assert_eq!(
            resolve(&WindowConfig::default(), &rank4, None).unwrap_err(),
            vec!["window.layout"]
        );
        // No channels at all is a config error, never a division by zero.
        let flat = model(&[1, 20], &[(meta::CHANNELS, "")]);
        assert_eq!(
            resolve(&WindowConfig::default(), &flat, Some(0)).unwrap_err(),
            vec!["source.channels"]
        );
        assert_eq!(
            described(&resolve(&WindowConfig::default(), &flat, None).unwrap()),
            (20, 20, 1, Layout::Flat)
        );
    }

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
