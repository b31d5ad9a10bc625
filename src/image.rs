//! The image stage: an encoded image (JPEG, PNG) → the model's input tensor.
//! Owns `[image]` and resolves it against the model: the config first, then
//! the model's `edgeinfer.image` metadata, then a preset, then the model's
//! input shape.
//!
//! INTERFACE STUB: the bodies are being written; signatures are fixed.

use serde::{Deserialize, Serialize};

use crate::problem::Problems;

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
    /// Per-channel mean subtracted after scaling (one value, or one per channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation divided by after the mean.
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
/// `source_x = input_x * scale_x + offset_x` (likewise y).
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
    /// The settings, every field set.
    pub config: ImageConfig,
}

impl ImageConfig {
    /// Checks `[image]` on its own (fields named `image.<field>`).
    pub fn validate(&self, _p: &mut Problems) {}

    /// The settings a model's `edgeinfer.image` metadata holds.
    pub fn from_metadata(json: &str) -> Result<ImageConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    /// The JSON for a model's `edgeinfer.image` metadata.
    pub fn to_metadata(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `self`'s fields where set, else `base`'s.
    pub fn over(&self, _base: &ImageConfig) -> ImageConfig {
        self.clone()
    }

    /// Resolves against the model's declared input dimensions (4-D; `None`
    /// for a dynamic one): every problem goes to `p`.
    pub fn resolve(&self, _dims: &[Option<usize>], _p: &mut Problems) -> Option<ImagePrep> {
        None
    }
}

impl ImagePrep {
    /// The input tensor's shape.
    pub fn shape(&self) -> Vec<usize> {
        Vec::new()
    }

    /// True when the model takes bytes (`dtype = "u8"`).
    pub fn is_u8(&self) -> bool {
        false
    }

    /// Decodes `bytes` (JPEG or PNG), checking the pixel limit from the
    /// header first, and applies EXIF orientation.
    pub fn decode(&self, _bytes: &[u8]) -> Result<image::RgbImage, ImageError> {
        Err(ImageError::Empty)
    }

    /// Region of interest, resize, colour, scaling and layout of a decoded
    /// image into `out` (the flat tensor; u8 values as whole numbers).
    pub fn tensor(
        &self,
        _img: &image::RgbImage,
        _out: &mut Vec<f32>,
    ) -> Result<Geometry, ImageError> {
        Err(ImageError::Empty)
    }

    /// [`decode`](Self::decode), then [`tensor`](Self::tensor).
    pub fn run(&self, bytes: &[u8], out: &mut Vec<f32>) -> Result<Geometry, ImageError> {
        let img = self.decode(bytes)?;
        self.tensor(&img, out)
    }
}
