//! The image stage: an encoded image (JPEG, PNG) → the model's input tensor.
//! Owns `[image]` and resolves it against the model: the config first, then
//! the model's `edgeinfer.image` metadata, then a preset, then the model's
//! input shape.
//!
//! Conventions, fixed because boxes found in the input are mapped back to the
//! source through [`Geometry`]:
//!
//! - Coordinates are continuous: pixel `i` covers `[i, i + 1)` and its centre
//!   is `i + 0.5`. Resampling maps the centre of input pixel `i` to source
//!   point `offset + (i + 0.5) * scale` (fast_image_resize's convention, as
//!   Pillow's), so a box `[x0, x1)` in the input covers `[to_source(x0),
//!   to_source(x1))` in the source. `nearest` takes the source pixel that
//!   contains that point.
//! - `stretch` maps the whole region of interest onto the input. `crop`
//!   scales by the larger of the two ratios (input filled) and cuts the
//!   centre: the cut may start at a fractional source position, and then
//!   the filter samples there. `pad` scales by the smaller ratio, rounds the
//!   scaled size to whole pixels (at least 1), puts it at
//!   `((W - w) / 2, (H - h) / 2)` (rounded down) and fills the rest with
//!   `pad_value` before scaling, mean and std, as if the source had that
//!   border. Its x and y scales may then differ by the rounding.
//! - `gray` is Pillow's `convert("L")`: `(19595 R + 38470 G + 7471 B +
//!   32768) >> 16` on the resized RGB bytes, i.e. 0.299 R + 0.587 G +
//!   0.114 B rounded to a whole byte, so `u8` models get whole values and
//!   float models see what PIL-trained ones saw.
//! - `mean` and `std` are in the tensor's channel order (B, G, R for `bgr`).

use std::fmt::Display;
use std::io::Cursor;

use fast_image_resize as fr;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use serde::{Deserialize, Serialize};

use crate::problem::Problems;

/// `max_pixels` when nothing sets it: a 40 MP photo decodes, a header
/// claiming gigapixels does not.
const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// Worst-case decoded bytes per pixel for PNG and JPEG (16-bit RGBA), for
/// the decoder's allocation limit.
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// Allocation allowance beyond the pixels: PNG text, ICC and EXIF chunks,
/// decoder tables.
const ALLOC_SLACK: u64 = 16 << 20;

/// Pillow's BT.601 luma weights in 16-bit fixed point (they sum to 65536).
const LUMA: [u32; 3] = [19595, 38470, 7471];

/// Metadata key holding an [`ImageConfig`] as JSON, written by
/// `edgeinfer-host train --images`.
pub const IMAGE_META: &str = "edgeinfer.image";

/// `[image]`: how an image becomes the model's input. Unset fields come from
/// the model's metadata, then the preset, then the model's input shape.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Settings of a well-known training recipe; fields set here win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// `[width, height]` of the model's input; default its input shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<[u32; 2]>,
    /// How the image is fitted to `size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<Resize>,
    /// The resampling filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// The value (0-255, every channel) of the border `resize = "pad"` adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_value: Option<u8>,
    /// Channel order, or grayscale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<Color>,
    /// Where channels go in the tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<ImageLayout>,
    /// How 0-255 pixel values are scaled before mean and std.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
    /// Per-channel mean subtracted after scaling (one value, or one per
    /// channel in the tensor's channel order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation divided by after the mean (one value,
    /// or one per channel in the tensor's channel order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f32>>,
    /// Element type of the input tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<ImageDtype>,
    /// A fixed region of interest `[x, y, width, height]` in source pixels
    /// (after EXIF orientation), cut before resizing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roi: Option<[u32; 4]>,
    /// Images with more pixels than this are refused before decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pixels: Option<u64>,
}

/// Settings presets.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// RGB, scale to 0..1, mean (0.485, 0.456, 0.406), std (0.229, 0.224,
    /// 0.225), NCHW, f32: torchvision's ImageNet models.
    Imagenet,
}

/// How an image is fitted to the model's input size.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// To exactly the input size; the aspect ratio may change.
    #[default]
    Stretch,
    /// Keep the aspect ratio, fill the input, cut the centre out.
    Crop,
    /// Keep the aspect ratio, fit inside the input, border with `pad_value`.
    Pad,
}

/// Resampling filters.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (triangle) convolution.
    #[default]
    Bilinear,
    /// Catmull-Rom cubic convolution.
    CatmullRom,
    /// Lanczos, 3 lobes.
    Lanczos3,
}

/// Channel order.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Color {
    /// Red, green, blue.
    #[default]
    Rgb,
    /// Blue, green, red (OpenCV-trained models).
    Bgr,
    /// One channel: 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601, as PIL's "L").
    Gray,
}

/// Tensor layouts.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ImageLayout {
    /// `[1, channels, height, width]`.
    #[default]
    Nchw,
    /// `[1, height, width, channels]`.
    Nhwc,
}

/// Pixel scaling.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// `p / 255`: 0..1.
    #[default]
    Unit,
    /// `p / 127.5 - 1`: -1..1.
    Signed,
    /// `p`: 0..255.
    Raw,
}

/// Input element types.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ImageDtype {
    /// 32-bit floats.
    #[default]
    F32,
    /// Bytes 0-255 (scale, mean and std do not apply).
    U8,
}

/// Where the model's input pixels came from in the source image, so boxes
/// found in the input can be given in source pixels:
/// `source_x = input_x * scale_x + offset_x` (likewise y), in continuous
/// coordinates where pixel `i` covers `[i, i + 1)`: the input box
/// `[x0, x1)` came from the source box `[to_source(x0), to_source(x1))`.
/// With `pad`, input points in the border map outside the region of
/// interest (possibly to negative source coordinates).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Source image width after EXIF orientation.
    pub width: u32,
    /// Source image height after EXIF orientation.
    pub height: u32,
    /// Source pixels per input pixel, x.
    pub scale_x: f32,
    /// Source pixels per input pixel, y.
    pub scale_y: f32,
    /// Source x of input x = 0.
    pub offset_x: f32,
    /// Source y of input y = 0.
    pub offset_y: f32,
}

impl Geometry {
    /// The source point of input point `(x, y)`.
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        (
            x * self.scale_x + self.offset_x,
            y * self.scale_y + self.offset_y,
        )
    }
}

/// Why an image could not become a tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageError {
    /// Zero bytes.
    #[error("empty image (0 bytes)")]
    Empty,
    /// More pixels than `max_pixels`, found from the header.
    #[error("{width}x{height} is {} pixels, over the limit of {limit} (image.max_pixels)", *width as u64 * *height as u64)]
    TooLarge {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// The limit.
        limit: u64,
    },
    /// Not a JPEG or PNG, truncated, or corrupt.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// The region of interest is not inside the image.
    #[error("region of interest {roi:?} is outside the {width}x{height} image")]
    Roi {
        /// `[x, y, width, height]`.
        roi: [u32; 4],
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
    },
}

/// Resolved image settings for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePrep {
    /// The settings, every field set (mean and std one value per channel):
    /// what the stage does, for descriptions and metadata. The stage works
    /// from its own copy taken at [`ImageConfig::resolve`], so changing this
    /// changes nothing.
    pub config: ImageConfig,
    /// Input width and height.
    width: u32,
    height: u32,
    /// 1 (gray) or 3.
    channels: usize,
    layout: ImageLayout,
    color: Color,
    resize: Resize,
    filter: Filter,
    pad_value: u8,
    roi: Option<[u32; 4]>,
    max_pixels: u64,
    dtype: ImageDtype,
    /// Scale, mean and std folded per tensor channel: `v = p * mul + add`.
    mul: [f32; 3],
    add: [f32; 3],
}

impl Preset {
    /// The preset's settings as a config that others are laid over.
    fn settings(self) -> ImageConfig {
        match self {
            Preset::Imagenet => ImageConfig {
                color: Some(Color::Rgb),
                scale: Some(Scale::Unit),
                mean: Some(vec![0.485, 0.456, 0.406]),
                std: Some(vec![0.229, 0.224, 0.225]),
                layout: Some(ImageLayout::Nchw),
                dtype: Some(ImageDtype::F32),
                ..ImageConfig::default()
            },
        }
    }
}

/// The config name of a setting (`"nchw"`), for messages.
fn name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Model dims as `[1, 3, ?, ?]` (`?` dynamic), for messages.
fn fmt_dims(dims: &[Option<usize>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or_else(|| "?".to_owned(), |n| n.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Notes problems with a mean or std list on its own.
fn check_list(values: Option<&[f32]>, field: &str, positive: bool, p: &mut Problems) {
    let Some(values) = values else { return };
    p.check(matches!(values.len(), 1 | 3), field, || {
        format!(
            "expected 1 value or 3 (one per channel), found {}",
            values.len()
        )
    });
    let ok = values
        .iter()
        .all(|v| v.is_finite() && (!positive || *v > 0.0));
    p.check(ok, field, || {
        let kind = if positive {
            "positive finite"
        } else {
            "finite"
        };
        format!("expected {kind} numbers, found {values:?}")
    });
}

/// A mean or std list as one value per channel (`default` when unset).
/// Lengths other than 1 and 3 were noted by [`check_list`]; 3 values for a
/// gray input are noted here.
fn per_channel(
    values: Option<&[f32]>,
    default: f32,
    channels: usize,
    field: &str,
    from_preset: bool,
    p: &mut Problems,
) -> [f32; 3] {
    match values {
        None => [default; 3],
        Some(&[v]) => [v; 3],
        Some(vs) if vs.len() == channels => {
            let mut out = [default; 3];
            out[..channels].copy_from_slice(vs);
            out
        }
        Some(vs) => {
            if vs.len() == 3 {
                let from = if from_preset {
                    " (from the preset)"
                } else {
                    ""
                };
                p.push(
                    field,
                    format!(
                        "expected 1 value for the {channels}-channel input, found {}{from}",
                        vs.len()
                    ),
                );
            }
            [default; 3]
        }
    }
}

/// Layout from a 4-D shape: channels (1 or 3) second means NCHW, last (and
/// not second) means NHWC; NCHW when the shape does not say.
fn infer_layout(dims: &[Option<usize>]) -> ImageLayout {
    let is_channels = |d: Option<usize>| matches!(d, Some(1 | 3));
    if is_channels(dims[1]) {
        ImageLayout::Nchw
    } else if is_channels(dims[3]) {
        ImageLayout::Nhwc
    } else {
        ImageLayout::Nchw
    }
}

impl ImageConfig {
    /// Checks `[image]` on its own (fields named `image.<field>`); see
    /// [`ImageConfig::resolve`] for the checks against the model.
    pub fn validate(&self, p: &mut Problems) {
        if let Some([w, h]) = self.size {
            p.check(w > 0 && h > 0, "image.size", || {
                format!("expected a width and height of at least 1, found [{w}, {h}]")
            });
        }
        check_list(self.mean.as_deref(), "image.mean", false, p);
        check_list(self.std.as_deref(), "image.std", true, p);
        if let Some(n) = self.max_pixels {
            p.at_least_one(n, "image.max_pixels");
        }
        if let Some([x, y, w, h]) = self.roi {
            p.check(w > 0 && h > 0, "image.roi", || {
                format!(
                    "expected [x, y, width, height] with a width and height of at least 1, found [{x}, {y}, {w}, {h}]"
                )
            });
        }
    }

    /// The settings a model's `edgeinfer.image` metadata holds.
    pub fn from_metadata(json: &str) -> Result<ImageConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    /// The JSON for a model's `edgeinfer.image` metadata.
    pub fn to_metadata(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `self`'s fields where set, else `base`'s.
    pub fn over(&self, base: &ImageConfig) -> ImageConfig {
        ImageConfig {
            preset: self.preset.or(base.preset),
            size: self.size.or(base.size),
            resize: self.resize.or(base.resize),
            filter: self.filter.or(base.filter),
            pad_value: self.pad_value.or(base.pad_value),
            color: self.color.or(base.color),
            layout: self.layout.or(base.layout),
            scale: self.scale.or(base.scale),
            mean: self.mean.clone().or_else(|| base.mean.clone()),
            std: self.std.clone().or_else(|| base.std.clone()),
            dtype: self.dtype.or(base.dtype),
            roi: self.roi.or(base.roi),
            max_pixels: self.max_pixels.or(base.max_pixels),
        }
    }

    /// Resolves against the model's declared input dimensions (4-D; `None`
    /// for a dynamic one): every problem goes to `p`.
    ///
    /// Each setting comes from `self` (the config already laid over the
    /// model's metadata), else the preset, else the input shape, else the
    /// default. The merged settings are checked as [`validate`](Self::validate)
    /// does, since model metadata is checked nowhere else.
    pub fn resolve(&self, dims: &[Option<usize>], p: &mut Problems) -> Option<ImagePrep> {
        let before = p.len();
        let preset = self.preset.map(Preset::settings).unwrap_or_default();
        let cfg = self.over(&preset);
        cfg.validate(p);
        if dims.len() != 4 {
            p.push(
                "image",
                format!(
                    "expected a 4-D model input ([1, C, H, W] or [1, H, W, C]), found {}",
                    fmt_dims(dims)
                ),
            );
            return None;
        }
        let shape = fmt_dims(dims);
        p.check(matches!(dims[0], None | Some(1)), "image", || {
            format!("expected a batch dimension of 1 or dynamic, found the model input {shape}")
        });

        let layout = cfg.layout.unwrap_or_else(|| infer_layout(dims));
        let (chan_dim, h_dim, w_dim) = match layout {
            ImageLayout::Nchw => (dims[1], dims[2], dims[3]),
            ImageLayout::Nhwc => (dims[3], dims[1], dims[2]),
        };
        let chan_dim_ok = match chan_dim {
            Some(c) => p.check(matches!(c, 1 | 3), "image.layout", || {
                format!(
                    "expected 1 or 3 channels in the {} layout, found {c} in the model input {shape}",
                    name(&layout)
                )
            }),
            None => true,
        };

        let color = match cfg.color {
            Some(color) => {
                let needs = if color == Color::Gray { 1 } else { 3 };
                if let (true, Some(c)) = (chan_dim_ok, chan_dim) {
                    p.check(c == needs, "image.color", || {
                        format!(
                            "expected a {needs}-channel model input for color = \"{}\", found {c} channels in {shape}",
                            name(&color)
                        )
                    });
                }
                color
            }
            None if chan_dim == Some(1) => Color::Gray,
            None => Color::Rgb,
        };
        let channels = if color == Color::Gray { 1 } else { 3 };

        let size = match cfg.size {
            Some([w, h]) => {
                let agrees = |dim: Option<usize>, v: u32| dim.is_none_or(|d| d == v as usize);
                p.check(agrees(w_dim, w) && agrees(h_dim, h), "image.size", || {
                    format!(
                        "expected [width, height] matching the model input {shape} ({} layout), found [{w}, {h}]",
                        name(&layout)
                    )
                });
                Some([w, h])
            }
            None => {
                let fixed = |d: Option<usize>| d.and_then(|d| u32::try_from(d).ok());
                match (fixed(w_dim), fixed(h_dim)) {
                    (Some(w), Some(h)) => {
                        p.check(w > 0 && h > 0, "image.size", || {
                            format!("expected a model input of at least 1x1, found {shape}")
                        });
                        Some([w, h])
                    }
                    _ => {
                        p.push(
                            "image.size",
                            format!(
                                "expected [width, height]: the model input {shape} has no fixed width and height, found none"
                            ),
                        );
                        None
                    }
                }
            }
        };

        let from_preset = |own: &Option<Vec<f32>>| own.is_none() && self.preset.is_some();
        let mean = per_channel(
            cfg.mean.as_deref(),
            0.0,
            channels,
            "image.mean",
            from_preset(&self.mean),
            p,
        );
        let std = per_channel(
            cfg.std.as_deref(),
            1.0,
            channels,
            "image.std",
            from_preset(&self.std),
            p,
        );

        if p.len() > before {
            return None;
        }
        let [width, height] = size?;
        let scale = cfg.scale.unwrap_or_default();
        let dtype = cfg.dtype.unwrap_or_default();
        let (s, o) = match scale {
            Scale::Unit => (1.0 / 255.0, 0.0),
            Scale::Signed => (1.0 / 127.5, -1.0),
            Scale::Raw => (1.0, 0.0),
        };
        // Bytes go in as they are: u8 models do their own scaling.
        let (mul, add) = match dtype {
            ImageDtype::F32 => (
                std::array::from_fn(|c| s / std[c]),
                std::array::from_fn(|c| (o - mean[c]) / std[c]),
            ),
            ImageDtype::U8 => ([1.0; 3], [0.0; 3]),
        };
        let config = ImageConfig {
            preset: cfg.preset,
            size: Some([width, height]),
            resize: Some(cfg.resize.unwrap_or_default()),
            filter: Some(cfg.filter.unwrap_or_default()),
            pad_value: Some(cfg.pad_value.unwrap_or(0)),
            color: Some(color),
            layout: Some(layout),
            scale: Some(scale),
            mean: Some(mean[..channels].to_vec()),
            std: Some(std[..channels].to_vec()),
            dtype: Some(dtype),
            roi: cfg.roi,
            max_pixels: Some(cfg.max_pixels.unwrap_or(DEFAULT_MAX_PIXELS)),
        };
        Some(ImagePrep {
            width,
            height,
            channels,
            layout,
            color,
            resize: cfg.resize.unwrap_or_default(),
            filter: cfg.filter.unwrap_or_default(),
            pad_value: cfg.pad_value.unwrap_or(0),
            roi: cfg.roi,
            max_pixels: cfg.max_pixels.unwrap_or(DEFAULT_MAX_PIXELS),
            dtype,
            mul,
            add,
            config,
        })
    }
}

/// Where the resampled region lands: the source box sampled (continuous
/// source coordinates), the size it is resampled to, and its place in the
/// input.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Placement {
    left: f64,
    top: f64,
    crop_w: f64,
    crop_h: f64,
    dst_w: u32,
    dst_h: u32,
    pad_x: u32,
    pad_y: u32,
}

impl Placement {
    /// The source box is whole pixels the input's size: no resampling.
    fn is_copy(&self) -> bool {
        self.left.fract() == 0.0
            && self.top.fract() == 0.0
            && self.crop_w == f64::from(self.dst_w)
            && self.crop_h == f64::from(self.dst_h)
    }
}

/// Converts an error of the image crate or the resizer.
fn decode_error(e: impl Display) -> ImageError {
    ImageError::Decode(e.to_string())
}

/// The JPEG decoder fills a scan cut short with gray instead of failing, so
/// a frame truncated in transfer would pass as a picture. Inside a scan 0xFF
/// is always followed by 0x00 or a restart marker, so the end-of-image
/// marker after the last start-of-scan is a reliable sign the data is whole
/// (bytes after it do not matter).
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let Some(sos) = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Pillow's `convert("L")` of one RGB pixel.
#[inline(always)]
fn luma(px: &[u8]) -> u8 {
    let sum = LUMA[0] * u32::from(px[0]) + LUMA[1] * u32::from(px[1]) + LUMA[2] * u32::from(px[2]);
    // At most (65536 * 255 + 32768) >> 16 = 255.
    ((sum + 32768) >> 16) as u8
}

impl ImagePrep {
    /// The input tensor's shape.
    pub fn shape(&self) -> Vec<usize> {
        let (w, h) = (self.width as usize, self.height as usize);
        match self.layout {
            ImageLayout::Nchw => vec![1, self.channels, h, w],
            ImageLayout::Nhwc => vec![1, h, w, self.channels],
        }
    }

    /// True when the model takes bytes (`dtype = "u8"`).
    pub fn is_u8(&self) -> bool {
        self.dtype == ImageDtype::U8
    }

    /// Decodes `bytes` (JPEG or PNG), checking the pixel limit from the
    /// header first, and applies EXIF orientation. Gray and 16-bit images
    /// become 8-bit RGB; alpha is dropped (transparent pixels keep their
    /// stored colour).
    pub fn decode(&self, bytes: &[u8]) -> Result<image::RgbImage, ImageError> {
        if bytes.is_empty() {
            return Err(ImageError::Empty);
        }
        let limit = self.max_pixels;
        let mut limits = Limits::default();
        limits.max_alloc = Some(
            limit
                .saturating_mul(MAX_BYTES_PER_PIXEL)
                .saturating_add(ALLOC_SLACK),
        );
        let mut reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(decode_error)?;
        match reader.format() {
            None => {
                return Err(ImageError::Decode(
                    "not a JPEG or PNG image (unknown signature)".into(),
                ))
            }
            Some(image::ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => {
                return Err(ImageError::Decode(
                    "truncated JPEG: no end-of-image marker after the last scan".into(),
                ))
            }
            Some(_) => {}
        }
        // Dimension limits go on only after the header is read: set now, they
        // would turn an oversized image into a decoder error, not TooLarge.
        reader.limits(limits.clone());
        let mut decoder = reader.into_decoder().map_err(decode_error)?;
        let (width, height) = decoder.dimensions();
        if u64::from(width) * u64::from(height) > limit {
            return Err(ImageError::TooLarge {
                width,
                height,
                limit,
            });
        }
        if width == 0 || height == 0 {
            return Err(ImageError::Decode(format!(
                "the header gives {width}x{height}: no pixels"
            )));
        }
        // The header's size is all the decoder may produce or allocate for.
        limits.max_image_width = Some(width);
        limits.max_image_height = Some(height);
        limits
            .reserve(decoder.total_bytes())
            .map_err(decode_error)?;
        decoder.set_limits(limits).map_err(decode_error)?;
        // Unreadable EXIF is no reason to drop the picture: it stays as stored.
        let orientation = decoder.orientation().unwrap_or_else(|e| {
            log::debug!("image: ignoring unreadable EXIF orientation: {e}");
            Orientation::NoTransforms
        });
        let mut img = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
        img.apply_orientation(orientation);
        Ok(img.into_rgb8())
    }

    /// Where the region of interest `[x, y, w, h]` goes in the input.
    fn placement(&self, [x, y, w, h]: [u32; 4]) -> Placement {
        let (iw, ih) = (u64::from(self.width), u64::from(self.height));
        let (rw, rh) = (u64::from(w), u64::from(h));
        let (x, y, wf, hf) = (f64::from(x), f64::from(y), f64::from(w), f64::from(h));
        let (iwf, ihf) = (iw as f64, ih as f64);
        let whole = Placement {
            left: x,
            top: y,
            crop_w: wf,
            crop_h: hf,
            dst_w: self.width,
            dst_h: self.height,
            pad_x: 0,
            pad_y: 0,
        };
        match self.resize {
            Resize::Stretch => whole,
            Resize::Crop => {
                // Integer comparison of the aspect ratios, so the side that
                // fits is exactly the region's (no fractional crop box).
                let (crop_w, crop_h) = if iw * rh >= ih * rw {
                    (wf, wf * ihf / iwf)
                } else {
                    (hf * iwf / ihf, hf)
                };
                Placement {
                    left: x + (wf - crop_w) / 2.0,
                    top: y + (hf - crop_h) / 2.0,
                    crop_w,
                    crop_h,
                    ..whole
                }
            }
            Resize::Pad => {
                let (dst_w, dst_h) = if iw * rh <= ih * rw {
                    let h = (hf * iwf / wf).round().clamp(1.0, ihf) as u32;
                    (self.width, h)
                } else {
                    let w = (wf * ihf / hf).round().clamp(1.0, iwf) as u32;
                    (w, self.height)
                };
                Placement {
                    dst_w,
                    dst_h,
                    pad_x: (self.width - dst_w) / 2,
                    pad_y: (self.height - dst_h) / 2,
                    ..whole
                }
            }
        }
    }

    /// Region of interest, resize, colour, scaling and layout of a decoded
    /// image into `out` (the flat tensor; u8 values as whole numbers).
    ///
    /// An image with no pixels gives [`ImageError::Roi`] (nothing is inside
    /// it).
    pub fn tensor(
        &self,
        img: &image::RgbImage,
        out: &mut Vec<f32>,
    ) -> Result<Geometry, ImageError> {
        let (width, height) = img.dimensions();
        let roi = self.roi.unwrap_or([0, 0, width, height]);
        let [rx, ry, rw, rh] = roi;
        let inside = |start: u32, len: u32, total: u32| {
            len > 0 && u64::from(start) + u64::from(len) <= u64::from(total)
        };
        if !inside(rx, rw, width) || !inside(ry, rh, height) {
            return Err(ImageError::Roi { roi, width, height });
        }
        let place = self.placement(roi);
        let src_len = width as usize * height as usize * 3;
        let src = img
            .as_raw()
            .get(..src_len)
            .ok_or_else(|| ImageError::Decode("image buffer shorter than its size".into()))?;

        let resized;
        let (view, stride) = if place.is_copy() {
            let stride = width as usize * 3;
            let start = place.top as usize * stride + place.left as usize * 3;
            (src.get(start..).unwrap_or_default(), stride)
        } else {
            let src_image = fr::images::ImageRef::new(width, height, src, fr::PixelType::U8x3)
                .map_err(decode_error)?;
            let mut dst = fr::images::Image::new(place.dst_w, place.dst_h, fr::PixelType::U8x3);
            let algorithm = match self.filter {
                Filter::Nearest => fr::ResizeAlg::Nearest,
                Filter::Bilinear => fr::ResizeAlg::Convolution(fr::FilterType::Bilinear),
                Filter::CatmullRom => fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom),
                Filter::Lanczos3 => fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3),
            };
            let options = fr::ResizeOptions::new().resize_alg(algorithm).crop(
                place.left,
                place.top,
                place.crop_w,
                place.crop_h,
            );
            fr::Resizer::new()
                .resize(&src_image, &mut dst, &options)
                .map_err(|e| ImageError::Decode(format!("cannot resize: {e}")))?;
            resized = dst.into_vec();
            (resized.as_slice(), place.dst_w as usize * 3)
        };
        self.write(view, stride, &place, out);

        let scale_x = place.crop_w / f64::from(place.dst_w);
        let scale_y = place.crop_h / f64::from(place.dst_h);
        Ok(Geometry {
            width,
            height,
            scale_x: scale_x as f32,
            scale_y: scale_y as f32,
            offset_x: (place.left - f64::from(place.pad_x) * scale_x) as f32,
            offset_y: (place.top - f64::from(place.pad_y) * scale_y) as f32,
        })
    }

    /// Colour, scaling and layout of the `dst_w` x `dst_h` RGB pixels at
    /// the start of `src` (rows `stride` bytes apart) into `out`, at the
    /// placement's offset, with the border (if any) of `pad_value`.
    fn write(&self, src: &[u8], stride: usize, place: &Placement, out: &mut Vec<f32>) {
        let (w, h, channels) = (self.width as usize, self.height as usize, self.channels);
        let plane = w * h;
        let (dw, dh) = (place.dst_w as usize, place.dst_h as usize);
        let (px0, py0) = (place.pad_x as usize, place.pad_y as usize);
        let (mul, add) = (self.mul, self.add);
        out.clear();
        out.resize(plane * channels, 0.0);
        if dw < w || dh < h {
            let pad = f32::from(self.pad_value);
            let border: [f32; 3] = std::array::from_fn(|i| pad * mul[i] + add[i]);
            match self.layout {
                ImageLayout::Nchw => {
                    for (i, p) in out.chunks_exact_mut(plane).enumerate() {
                        p.fill(border[i]);
                    }
                }
                ImageLayout::Nhwc => {
                    for px in out.chunks_exact_mut(channels) {
                        px.copy_from_slice(&border[..channels]);
                    }
                }
            }
        }
        // Tensor channel i takes source component order[i].
        let order = match self.color {
            Color::Bgr => [2, 1, 0],
            Color::Rgb | Color::Gray => [0, 1, 2],
        };
        let [o0, o1, o2] = order;
        let rows = (0..dh).map_while(|y| src.get(y * stride..y * stride + dw * 3));
        match (self.layout, self.color) {
            // One channel: both layouts are the same plane.
            (_, Color::Gray) => {
                for (y, row) in rows.enumerate() {
                    let at = (py0 + y) * w + px0;
                    let Some(dst) = out.get_mut(at..at + dw) else {
                        break;
                    };
                    for (o, px) in dst.iter_mut().zip(row.chunks_exact(3)) {
                        *o = f32::from(luma(px)) * mul[0] + add[0];
                    }
                }
            }
            (ImageLayout::Nchw, _) => {
                let (p0, rest) = out.split_at_mut(plane);
                let (p1, p2) = rest.split_at_mut(plane);
                for (y, row) in rows.enumerate() {
                    let at = (py0 + y) * w + px0;
                    let (Some(d0), Some(d1), Some(d2)) = (
                        p0.get_mut(at..at + dw),
                        p1.get_mut(at..at + dw),
                        p2.get_mut(at..at + dw),
                    ) else {
                        break;
                    };
                    for (((px, a), b), c) in row.chunks_exact(3).zip(d0).zip(d1).zip(d2) {
                        *a = f32::from(px[o0]) * mul[0] + add[0];
                        *b = f32::from(px[o1]) * mul[1] + add[1];
                        *c = f32::from(px[o2]) * mul[2] + add[2];
                    }
                }
            }
            (ImageLayout::Nhwc, _) => {
                for (y, row) in rows.enumerate() {
                    let at = ((py0 + y) * w + px0) * 3;
                    let Some(dst) = out.get_mut(at..at + dw * 3) else {
                        break;
                    };
                    for (o, px) in dst.chunks_exact_mut(3).zip(row.chunks_exact(3)) {
                        o[0] = f32::from(px[o0]) * mul[0] + add[0];
                        o[1] = f32::from(px[o1]) * mul[1] + add[1];
                        o[2] = f32::from(px[o2]) * mul[2] + add[2];
                    }
                }
            }
        }
    }

    /// [`decode`](Self::decode), then [`tensor`](Self::tensor).
    pub fn run(&self, bytes: &[u8], out: &mut Vec<f32>) -> Result<Geometry, ImageError> {
        let img = self.decode(bytes)?;
        self.tensor(&img, out)
    }
}

#[cfg(test)]
mod tests;
