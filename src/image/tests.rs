//! The image stage's tests: images made here with known pixels, each
//! option checked value by value against numbers computed independently.

use std::path::Path;

use image::{ImageEncoder, Rgb, RgbImage};

use super::*;
use crate::problem::Origin;
use crate::rng::Rng;

type Dims = [Option<usize>; 4];

fn nchw(c: usize, h: usize, w: usize) -> Dims {
    [Some(1), Some(c), Some(h), Some(w)]
}

fn nhwc(h: usize, w: usize, c: usize) -> Dims {
    [Some(1), Some(h), Some(w), Some(c)]
}

/// `(field, message)` of every problem `resolve` notes, and its result.
fn try_resolve(
    cfg: &ImageConfig,
    dims: &[Option<usize>],
) -> (Option<ImagePrep>, Vec<(String, String)>) {
    let origin = Origin::new("test.toml", Path::new("."));
    let mut p = Problems::new(&origin);
    let prep = cfg.resolve(dims, &mut p);
    let list = p
        .into_vec()
        .into_iter()
        .map(|p| (p.field, p.message))
        .collect();
    (prep, list)
}

fn resolve(cfg: &ImageConfig, dims: &[Option<usize>]) -> ImagePrep {
    let (prep, problems) = try_resolve(cfg, dims);
    assert!(problems.is_empty(), "{problems:?}");
    prep.expect("resolved without problems")
}

fn fields(cfg: &ImageConfig, dims: &[Option<usize>]) -> Vec<String> {
    let (prep, problems) = try_resolve(cfg, dims);
    assert!(prep.is_none() || problems.is_empty());
    problems.into_iter().map(|(f, _)| f).collect()
}

fn validate(cfg: &ImageConfig) -> Vec<(String, String)> {
    let origin = Origin::new("test.toml", Path::new("."));
    let mut p = Problems::new(&origin);
    cfg.validate(&mut p);
    p.into_vec()
        .into_iter()
        .map(|p| (p.field, p.message))
        .collect()
}

/// Distinct, known values in every channel of every pixel.
fn pattern(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            ((10 + 30 * x + 7 * y) % 256) as u8,
            ((200 + 256 * 4 - 11 * x + 13 * y) % 256) as u8,
            ((5 + 17 * x * y + 3 * x) % 256) as u8,
        ])
    })
}

fn png(img: &RgbImage) -> Vec<u8> {
    png_with_exif(img, None)
}

fn png_with_exif(img: &RgbImage, exif: Option<Vec<u8>>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut enc = image::codecs::png::PngEncoder::new(&mut buf);
    if let Some(exif) = exif {
        enc.set_exif_metadata(exif).unwrap();
    }
    enc.write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    buf
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 95)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    buf
}

/// A little-endian TIFF block holding only an Orientation tag.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes()); // first IFD right after the header
    t.extend_from_slice(&1u16.to_le_bytes()); // one entry
    t.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    t.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    t.extend_from_slice(&1u32.to_le_bytes()); // one value
    t.extend_from_slice(&value.to_le_bytes());
    t.extend_from_slice(&[0, 0]); // the value field's padding
    t.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    t
}

/// `jpeg` with an APP1 Exif segment right after SOI.
fn splice_exif(jpeg: &[u8], tiff: &[u8]) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(tiff);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut covered = kind.to_vec();
    covered.extend_from_slice(data);
    out.extend_from_slice(&covered);
    out.extend_from_slice(&crc32fast::hash(&covered).to_be_bytes());
}

/// A PNG whose header claims `w` x `h` RGB pixels and whose data is two
/// bytes: only a decoder that trusts the header would allocate.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &[0x78, 0x9c]);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// The tensor built the plain way: every element from its pixel, by
/// index arithmetic, with `value(channel, byte)` for the arithmetic.
fn reference(
    img: &RgbImage,
    color: Color,
    layout: ImageLayout,
    value: impl Fn(usize, u8) -> f64,
) -> Vec<f64> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let channels = if color == Color::Gray { 1 } else { 3 };
    let byte = |x: usize, y: usize, c: usize| -> u8 {
        let px = img.get_pixel(x as u32, y as u32).0;
        match color {
            Color::Rgb => px[c],
            Color::Bgr => px[2 - c],
            Color::Gray => {
                (0.299 * f64::from(px[0]) + 0.587 * f64::from(px[1]) + 0.114 * f64::from(px[2]))
                    .round() as u8
            }
        }
    };
    let mut out = vec![0.0; channels * w * h];
    for c in 0..channels {
        for y in 0..h {
            for x in 0..w {
                let at = match layout {
                    ImageLayout::Nchw => (c * h + y) * w + x,
                    ImageLayout::Nhwc => (y * w + x) * channels + c,
                };
                out[at] = value(c, byte(x, y, c));
            }
        }
    }
    out
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

/// Channel `c` of the `w` x `h` NCHW tensor at `(x, y)`.
fn at(out: &[f32], w: usize, h: usize, c: usize, x: usize, y: usize) -> f32 {
    out[(c * h + y) * w + x]
}

// ---- config ----

#[test]
fn validate_names_each_field() {
    assert!(validate(&ImageConfig::default()).is_empty());
    let good = ImageConfig {
        size: Some([224, 224]),
        mean: Some(vec![0.5]),
        std: Some(vec![0.2, 0.3, 0.4]),
        max_pixels: Some(1),
        roi: Some([0, 0, 1, 1]),
        ..ImageConfig::default()
    };
    assert!(validate(&good).is_empty());
    let bad = ImageConfig {
        size: Some([0, 224]),
        mean: Some(vec![0.1, f32::NAN]),
        std: Some(vec![0.0]),
        max_pixels: Some(0),
        roi: Some([3, 4, 5, 0]),
        ..ImageConfig::default()
    };
    let problems = validate(&bad);
    let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "image.size",
            "image.mean",
            "image.mean",
            "image.std",
            "image.max_pixels",
            "image.roi"
        ]
    );
    assert_eq!(
        problems[0].1,
        "expected a width and height of at least 1, found [0, 224]"
    );
    assert_eq!(
        problems[1].1,
        "expected 1 value or 3 (one per channel), found 2"
    );
    assert_eq!(problems[2].1, "expected finite numbers, found [0.1, NaN]");
    assert_eq!(
        problems[3].1,
        "expected positive finite numbers, found [0.0]"
    );
    let inf = ImageConfig {
        std: Some(vec![f32::INFINITY, -1.0, 1.0]),
        ..ImageConfig::default()
    };
    assert_eq!(validate(&inf).len(), 1);
}

#[test]
fn over_takes_each_set_field() {
    let base = ImageConfig {
        preset: Some(Preset::Imagenet),
        size: Some([10, 20]),
        std: Some(vec![2.0]),
        filter: Some(Filter::Lanczos3),
        max_pixels: Some(7),
        ..ImageConfig::default()
    };
    let top = ImageConfig {
        size: Some([30, 40]),
        mean: Some(vec![1.0]),
        roi: Some([1, 2, 3, 4]),
        ..ImageConfig::default()
    };
    let merged = top.over(&base);
    assert_eq!(
        merged,
        ImageConfig {
            preset: Some(Preset::Imagenet),
            size: Some([30, 40]),
            mean: Some(vec![1.0]),
            std: Some(vec![2.0]),
            filter: Some(Filter::Lanczos3),
            roi: Some([1, 2, 3, 4]),
            max_pixels: Some(7),
            ..ImageConfig::default()
        }
    );
    assert_eq!(ImageConfig::default().over(&base), base);
    assert_eq!(base.over(&ImageConfig::default()), base);
}

#[test]
fn metadata_round_trips() {
    let full = ImageConfig {
        preset: Some(Preset::Imagenet),
        size: Some([320, 240]),
        resize: Some(Resize::Pad),
        filter: Some(Filter::CatmullRom),
        pad_value: Some(114),
        color: Some(Color::Bgr),
        layout: Some(ImageLayout::Nhwc),
        scale: Some(Scale::Signed),
        mean: Some(vec![0.485, 0.456, 0.406]),
        std: Some(vec![0.229, 0.224, 0.225]),
        dtype: Some(ImageDtype::U8),
        roi: Some([1, 2, 300, 200]),
        max_pixels: Some(12_000_000),
    };
    let json = full.to_metadata();
    assert!(json.contains("\"resize\":\"pad\""), "{json}");
    assert!(json.contains("\"filter\":\"catmull_rom\""), "{json}");
    assert_eq!(ImageConfig::from_metadata(&json), Ok(full));
    assert_eq!(ImageConfig::default().to_metadata(), "{}");
    assert_eq!(ImageConfig::from_metadata("{}"), Ok(ImageConfig::default()));
    assert!(ImageConfig::from_metadata("{\"sise\":[1,2]}").is_err());
    assert!(ImageConfig::from_metadata("{\"resize\":\"squash\"}").is_err());
    // What a resolved stage reports reads back as the same settings.
    let prep = resolve(
        &ImageConfig {
            preset: Some(Preset::Imagenet),
            ..ImageConfig::default()
        },
        &nchw(3, 224, 224),
    );
    let back = ImageConfig::from_metadata(&prep.config.to_metadata()).unwrap();
    assert_eq!(back, prep.config);
    assert_eq!(resolve(&back, &nchw(3, 224, 224)), prep);
}

// ---- resolve ----

#[test]
fn resolve_infers_layout_and_color_from_the_shape() {
    let none = ImageConfig::default();
    let cases: [(Dims, ImageLayout, Color, Vec<usize>); 6] = [
        (
            nchw(3, 224, 200),
            ImageLayout::Nchw,
            Color::Rgb,
            vec![1, 3, 224, 200],
        ),
        (
            nhwc(224, 200, 3),
            ImageLayout::Nhwc,
            Color::Rgb,
            vec![1, 224, 200, 3],
        ),
        (
            nchw(1, 28, 28),
            ImageLayout::Nchw,
            Color::Gray,
            vec![1, 1, 28, 28],
        ),
        (
            nhwc(28, 27, 1),
            ImageLayout::Nhwc,
            Color::Gray,
            vec![1, 28, 27, 1],
        ),
        // Both could be channels: NCHW first.
        (
            nchw(3, 3, 3),
            ImageLayout::Nchw,
            Color::Rgb,
            vec![1, 3, 3, 3],
        ),
        (
            [None, Some(3), Some(16), Some(8)],
            ImageLayout::Nchw,
            Color::Rgb,
            vec![1, 3, 16, 8],
        ),
    ];
    for (dims, layout, color, shape) in cases {
        let prep = resolve(&none, &dims);
        assert_eq!(prep.config.layout, Some(layout), "{dims:?}");
        assert_eq!(prep.config.color, Some(color), "{dims:?}");
        assert_eq!(prep.shape(), shape, "{dims:?}");
    }
    // Defaults fill everything else.
    let prep = resolve(&none, &nchw(3, 224, 200));
    assert_eq!(
        prep.config,
        ImageConfig {
            preset: None,
            size: Some([200, 224]),
            resize: Some(Resize::Stretch),
            filter: Some(Filter::Bilinear),
            pad_value: Some(0),
            color: Some(Color::Rgb),
            layout: Some(ImageLayout::Nchw),
            scale: Some(Scale::Unit),
            mean: Some(vec![0.0; 3]),
            std: Some(vec![1.0; 3]),
            dtype: Some(ImageDtype::F32),
            roi: None,
            max_pixels: Some(40_000_000),
        }
    );
    assert!(!prep.is_u8());
    let gray = resolve(&none, &nchw(1, 28, 28));
    assert_eq!(gray.config.mean, Some(vec![0.0]));
    assert_eq!(gray.config.std, Some(vec![1.0]));
}

#[test]
fn resolve_dynamic_dims_take_the_size() {
    let sized = ImageConfig {
        size: Some([64, 32]),
        ..ImageConfig::default()
    };
    let prep = resolve(&sized, &[None, Some(3), None, None]);
    assert_eq!(prep.shape(), vec![1, 3, 32, 64]);
    let prep = resolve(&sized, &[Some(1), None, None, Some(3)]);
    assert_eq!(prep.shape(), vec![1, 32, 64, 3]);
    // One fixed dim must still agree.
    let prep = resolve(&sized, &[Some(1), Some(3), Some(32), None]);
    assert_eq!(prep.shape(), vec![1, 3, 32, 64]);
    assert_eq!(
        fields(&sized, &[Some(1), Some(3), Some(33), None]),
        ["image.size"]
    );
    let (prep, problems) = try_resolve(&ImageConfig::default(), &[Some(1), Some(3), None, None]);
    assert!(prep.is_none());
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].0, "image.size");
    assert!(
        problems[0].1.starts_with("expected [width, height]")
            && problems[0].1.ends_with("found none"),
        "{}",
        problems[0].1
    );
    // All dynamic: layout and color fall back to NCHW RGB.
    let prep = resolve(&sized, &[None, None, None, None]);
    assert_eq!(prep.shape(), vec![1, 3, 32, 64]);
}

#[test]
fn resolve_reports_mismatches() {
    let none = ImageConfig::default();
    let size = |w, h| ImageConfig {
        size: Some([w, h]),
        ..ImageConfig::default()
    };
    assert_eq!(fields(&size(100, 100), &nchw(3, 224, 224)), ["image.size"]);
    // [width, height], not [height, width].
    assert_eq!(fields(&size(224, 112), &nchw(3, 224, 112)), ["image.size"]);
    assert!(fields(&size(112, 224), &nchw(3, 224, 112)).is_empty());
    assert_eq!(fields(&none, &nchw(3, 224, 224)[..3]), ["image"]);
    assert_eq!(
        fields(&none, &[Some(2), Some(3), Some(8), Some(8)]),
        ["image"]
    );
    let gray = ImageConfig {
        color: Some(Color::Gray),
        ..ImageConfig::default()
    };
    assert_eq!(fields(&gray, &nchw(3, 8, 8)), ["image.color"]);
    let bgr = ImageConfig {
        color: Some(Color::Bgr),
        ..ImageConfig::default()
    };
    assert_eq!(fields(&bgr, &nchw(1, 8, 8)), ["image.color"]);
    assert_eq!(resolve(&bgr, &nchw(3, 8, 8)).config.color, Some(Color::Bgr));
    let nchw_set = ImageConfig {
        layout: Some(ImageLayout::Nchw),
        ..ImageConfig::default()
    };
    let (_, problems) = try_resolve(&nchw_set, &nhwc(224, 224, 3));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "image.layout");
    assert_eq!(
        problems[0].1,
        "expected 1 or 3 channels in the nchw layout, found 224 in the model input [1, 224, 224, 3]"
    );
    assert_eq!(fields(&none, &nchw(2, 8, 8)), ["image.layout"]);
    // Three means for one channel.
    let three = ImageConfig {
        mean: Some(vec![0.1, 0.2, 0.3]),
        ..ImageConfig::default()
    };
    assert_eq!(fields(&three, &nchw(1, 8, 8)), ["image.mean"]);
    // The merged settings are checked too (metadata is not validated
    // elsewhere).
    let zero_std = ImageConfig {
        std: Some(vec![0.0]),
        ..ImageConfig::default()
    };
    assert_eq!(fields(&zero_std, &nchw(3, 8, 8)), ["image.std"]);
    assert_eq!(fields(&none, &nchw(3, 0, 8)), ["image.size"]);
}

#[test]
fn resolve_preset_and_config_over_it() {
    let imagenet = ImageConfig {
        preset: Some(Preset::Imagenet),
        ..ImageConfig::default()
    };
    let prep = resolve(&imagenet, &nchw(3, 224, 224));
    let c = &prep.config;
    assert_eq!(c.preset, Some(Preset::Imagenet));
    assert_eq!(c.color, Some(Color::Rgb));
    assert_eq!(c.scale, Some(Scale::Unit));
    assert_eq!(c.mean, Some(vec![0.485, 0.456, 0.406]));
    assert_eq!(c.std, Some(vec![0.229, 0.224, 0.225]));
    assert_eq!(c.layout, Some(ImageLayout::Nchw));
    assert_eq!(c.dtype, Some(ImageDtype::F32));
    assert_eq!(c.size, Some([224, 224]));

    let over = ImageConfig {
        preset: Some(Preset::Imagenet),
        scale: Some(Scale::Signed),
        mean: Some(vec![0.5]),
        dtype: Some(ImageDtype::U8),
        ..ImageConfig::default()
    };
    let prep = resolve(&over, &nchw(3, 224, 224));
    assert_eq!(prep.config.scale, Some(Scale::Signed));
    assert_eq!(prep.config.mean, Some(vec![0.5; 3]));
    assert_eq!(prep.config.std, Some(vec![0.229, 0.224, 0.225]));
    assert!(prep.is_u8());

    // The preset's layout comes before the shape's: an NHWC model with
    // the preset needs `layout` set.
    assert_eq!(fields(&imagenet, &nhwc(224, 224, 3)), ["image.layout"]);
    let nhwc_set = ImageConfig {
        layout: Some(ImageLayout::Nhwc),
        ..imagenet.clone()
    };
    assert_eq!(
        resolve(&nhwc_set, &nhwc(224, 224, 3)).shape(),
        vec![1, 224, 224, 3]
    );
    // The preset's RGB does not fit a gray model; with gray set, its
    // three means and stds do not either.
    assert_eq!(fields(&imagenet, &nchw(1, 28, 28)), ["image.color"]);
    let gray = ImageConfig {
        color: Some(Color::Gray),
        ..imagenet.clone()
    };
    let (_, problems) = try_resolve(&gray, &nchw(1, 28, 28));
    let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["image.mean", "image.std"]);
    assert_eq!(
        problems[0].1,
        "expected 1 value for the 1-channel input, found 3 (from the preset)"
    );
}

// ---- pixels without resizing ----

#[test]
fn exact_values_without_resizing() {
    let img = pattern(5, 4);
    let bytes = png(&img);
    let unit = |_: usize, v: u8| f64::from(v) / 255.0;
    type Value = Box<dyn Fn(usize, u8) -> f64>;
    let cases: Vec<(&str, ImageConfig, Dims, Value)> = vec![
        (
            "defaults",
            ImageConfig::default(),
            nchw(3, 4, 5),
            Box::new(unit),
        ),
        (
            "signed nhwc",
            ImageConfig {
                scale: Some(Scale::Signed),
                ..ImageConfig::default()
            },
            nhwc(4, 5, 3),
            Box::new(|_, v| f64::from(v) / 127.5 - 1.0),
        ),
        (
            "raw bgr",
            ImageConfig {
                scale: Some(Scale::Raw),
                color: Some(Color::Bgr),
                ..ImageConfig::default()
            },
            nchw(3, 4, 5),
            Box::new(|_, v| f64::from(v)),
        ),
        (
            "one mean and std",
            ImageConfig {
                mean: Some(vec![0.5]),
                std: Some(vec![0.25]),
                ..ImageConfig::default()
            },
            nchw(3, 4, 5),
            Box::new(|_, v| (f64::from(v) / 255.0 - 0.5) / 0.25),
        ),
        (
            "per-channel mean and std, bgr nhwc",
            ImageConfig {
                mean: Some(vec![0.1, 0.2, 0.3]),
                std: Some(vec![0.5, 0.25, 2.0]),
                color: Some(Color::Bgr),
                ..ImageConfig::default()
            },
            nhwc(4, 5, 3),
            Box::new(|c, v| {
                let (m, s) = ([0.1, 0.2, 0.3][c], [0.5, 0.25, 2.0][c]);
                (f64::from(v) / 255.0 - m) / s
            }),
        ),
        (
            "signed with mean and std",
            ImageConfig {
                scale: Some(Scale::Signed),
                mean: Some(vec![-0.5]),
                std: Some(vec![3.0]),
                ..ImageConfig::default()
            },
            nchw(3, 4, 5),
            Box::new(|_, v| (f64::from(v) / 127.5 - 1.0 + 0.5) / 3.0),
        ),
        (
            "imagenet",
            ImageConfig {
                preset: Some(Preset::Imagenet),
                ..ImageConfig::default()
            },
            nchw(3, 4, 5),
            Box::new(|c, v| {
                let m = [0.485, 0.456, 0.406][c];
                let s = [0.229, 0.224, 0.225][c];
                (f64::from(v) / 255.0 - m) / s
            }),
        ),
        (
            "gray",
            ImageConfig::default(),
            nchw(1, 4, 5),
            Box::new(unit),
        ),
        (
            "gray raw nhwc",
            ImageConfig {
                scale: Some(Scale::Raw),
                ..ImageConfig::default()
            },
            nhwc(4, 5, 1),
            Box::new(|_, v| f64::from(v)),
        ),
        (
            "u8 ignores scale, mean and std",
            ImageConfig {
                preset: Some(Preset::Imagenet),
                scale: Some(Scale::Signed),
                dtype: Some(ImageDtype::U8),
                ..ImageConfig::default()
            },
            nchw(3, 4, 5),
            Box::new(|_, v| f64::from(v)),
        ),
        (
            "u8 gray nhwc",
            ImageConfig {
                dtype: Some(ImageDtype::U8),
                ..ImageConfig::default()
            },
            nhwc(4, 5, 1),
            Box::new(|_, v| f64::from(v)),
        ),
    ];
    // Reused across cases, as per frame: left longer than needed.
    let mut out = vec![f32::NAN; 1000];
    for (what, cfg, dims, value) in cases {
        let prep = resolve(&cfg, &dims);
        let color = prep.config.color.unwrap();
        let layout = prep.config.layout.unwrap();
        let geometry = prep.run(&bytes, &mut out).unwrap();
        assert_eq!(out.len(), prep.shape().iter().product::<usize>(), "{what}");
        assert_close(&out, &reference(&img, color, layout, value), what);
        if prep.is_u8() {
            assert!(out.iter().all(|v| v.fract() == 0.0), "{what}");
        }
        assert_eq!(
            geometry,
            Geometry {
                width: 5,
                height: 4,
                scale_x: 1.0,
                scale_y: 1.0,
                offset_x: 0.0,
                offset_y: 0.0
            },
            "{what}"
        );
    }
}

#[test]
fn gray_is_pillows_rounded_luma() {
    // Pillow's fixed-point formula and the rounded BT.601 sum agree on
    // these, and both on the ends of the range.
    let img = RgbImage::from_fn(4, 2, |x, y| {
        let all = [
            [0, 0, 0],
            [255, 255, 255],
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [10, 20, 30],
            [200, 100, 50],
            [1, 2, 3],
        ];
        Rgb(all[(y * 4 + x) as usize])
    });
    let prep = resolve(
        &ImageConfig {
            dtype: Some(ImageDtype::U8),
            ..ImageConfig::default()
        },
        &nchw(1, 2, 4),
    );
    let mut out = Vec::new();
    prep.tensor(&img, &mut out).unwrap();
    // 0.299 R + 0.587 G + 0.114 B, rounded.
    assert_eq!(out, [0.0, 255.0, 76.0, 150.0, 29.0, 18.0, 124.0, 2.0]);
}

// ---- resizing ----

/// A `raw`, NCHW RGB stage for a `w` x `h` input.
fn raw(w: usize, h: usize, extra: ImageConfig) -> ImagePrep {
    resolve(
        &ImageConfig {
            scale: Some(Scale::Raw),
            ..extra
        },
        &nchw(3, h, w),
    )
}

fn nearest() -> ImageConfig {
    ImageConfig {
        filter: Some(Filter::Nearest),
        ..ImageConfig::default()
    }
}

/// Asserts the NCHW tensor `out` (`w` x `h`) is `source(x, y)` per pixel.
fn assert_pixels(out: &[f32], w: usize, h: usize, source: impl Fn(usize, usize) -> [u8; 3]) {
    assert_eq!(out.len(), 3 * w * h);
    for y in 0..h {
        for x in 0..w {
            for (c, &want) in source(x, y).iter().enumerate() {
                assert_eq!(
                    at(out, w, h, c, x, y),
                    f32::from(want),
                    "pixel ({x}, {y}) channel {c}"
                );
            }
        }
    }
}

#[test]
fn nearest_picks_the_pixel_under_each_centre() {
    let img = pattern(4, 4);
    let px = |x: usize, y: usize| img.get_pixel(x as u32, y as u32).0;
    let mut out = Vec::new();
    // 4 -> 2: input pixel i's centre is source 2i + 1, the left edge of
    // pixel 2i + 1, which is the one taken.
    let geometry = raw(2, 2, nearest()).tensor(&img, &mut out).unwrap();
    assert_pixels(&out, 2, 2, |x, y| px(2 * x + 1, 2 * y + 1));
    assert_eq!((geometry.scale_x, geometry.scale_y), (2.0, 2.0));
    assert_eq!((geometry.offset_x, geometry.offset_y), (0.0, 0.0));
    // 4 -> 8: each source pixel twice.
    let geometry = raw(8, 8, nearest()).tensor(&img, &mut out).unwrap();
    assert_pixels(&out, 8, 8, |x, y| px(x / 2, y / 2));
    assert_eq!((geometry.scale_x, geometry.scale_y), (0.5, 0.5));
    // 4x4 -> 2x4: only x resampled.
    raw(2, 4, nearest()).tensor(&img, &mut out).unwrap();
    assert_pixels(&out, 2, 4, |x, y| px(2 * x + 1, y));
}

/// Resampling a row with the triangle filter, derived from its
/// definition: output pixel i is centred on source point
/// `(i + 0.5) * scale`; source pixel j (centre j + 0.5) weighs
/// `max(0, 1 - |j + 0.5 - centre| / support)` with the support widened
/// to `scale` when shrinking; weights are normalised over the pixels
/// that exist.
fn triangle(src: &[f64], out_len: usize) -> Vec<f64> {
    let scale = src.len() as f64 / out_len as f64;
    let support = scale.max(1.0);
    (0..out_len)
        .map(|i| {
            let centre = (i as f64 + 0.5) * scale;
            let (mut sum, mut total) = (0.0, 0.0);
            for (j, v) in src.iter().enumerate() {
                let w = (1.0 - (j as f64 + 0.5 - centre).abs() / support).max(0.0);
                sum += w * v;
                total += w;
            }
            sum / total
        })
        .collect()
}

#[test]
fn bilinear_matches_the_triangle_filter() {
    // Rows are ramps in x; each channel a different ramp.
    let ramp = |x: u32, c: u32| (8 + 16 * x + 5 * c) as u8;
    let img = RgbImage::from_fn(8, 3, |x, _| Rgb([ramp(x, 0), ramp(x, 1), 255 - ramp(x, 2)]));
    let mut out = Vec::new();
    // 8 -> 4 in x, height unchanged: a single horizontal pass.
    raw(4, 3, ImageConfig::default())
        .tensor(&img, &mut out)
        .unwrap();
    for c in 0..3 {
        let row: Vec<f64> = (0..8)
            .map(|x| f64::from(img.get_pixel(x, 0).0[c]))
            .collect();
        let want = triangle(&row, 4);
        // Interior: the ramp at the centre exactly (weights 1/8, 3/8,
        // 3/8, 1/8); edges: renormalised over three pixels.
        if c == 0 {
            assert_eq!(want[1], 8.0 + 16.0 * 2.5);
            assert!((want[0] - 34.0 / 1.75).abs() < 1e-9);
        }
        for y in 0..3 {
            for (x, want) in want.iter().enumerate() {
                let got = f64::from(at(&out, 4, 3, c, x, y));
                assert!(
                    (got - want).abs() <= 0.5 + 1e-3,
                    "channel {c} ({x}, {y}): got {got}, want {want:.3}"
                );
            }
        }
    }
    // 8 -> 16 (enlarging): linear interpolation between centres.
    raw(16, 3, ImageConfig::default())
        .tensor(&img, &mut out)
        .unwrap();
    let row: Vec<f64> = (0..8)
        .map(|x| f64::from(img.get_pixel(x, 0).0[0]))
        .collect();
    let want = triangle(&row, 16);
    assert_eq!(want[3], 8.0 + 16.0 * 1.25);
    for (x, w) in want.iter().enumerate() {
        let got = f64::from(at(&out, 16, 3, 0, x, 1));
        assert!((got - w).abs() <= 0.5 + 1e-3, "x {x}: got {got}, want {w}");
    }

    // Both directions: separable, so the 2-D result is the triangle
    // filter along x of the one along y; the two passes each round to
    // bytes, so within one level.
    let img = RgbImage::from_fn(9, 7, |x, y| {
        let v = (3 + 20 * x + 11 * y) as u8;
        Rgb([v, 255 - v, (x * y * 4) as u8])
    });
    raw(4, 3, ImageConfig::default())
        .tensor(&img, &mut out)
        .unwrap();
    for c in 0..3 {
        let columns: Vec<Vec<f64>> = (0..9)
            .map(|x| {
                let col: Vec<f64> = (0..7)
                    .map(|y| f64::from(img.get_pixel(x, y).0[c]))
                    .collect();
                triangle(&col, 3)
            })
            .collect();
        for y in 0..3 {
            let row: Vec<f64> = columns.iter().map(|col| col[y]).collect();
            for (x, want) in triangle(&row, 4).iter().enumerate() {
                let got = f64::from(at(&out, 4, 3, c, x, y));
                assert!(
                    (got - want).abs() <= 1.0,
                    "2-D channel {c} ({x}, {y}): got {got}, want {want:.3}"
                );
            }
        }
    }

    // A flat image stays flat under every filter.
    let flat = RgbImage::from_pixel(13, 7, Rgb([17, 130, 250]));
    for filter in [
        Filter::Bilinear,
        Filter::CatmullRom,
        Filter::Lanczos3,
        Filter::Nearest,
    ] {
        let cfg = ImageConfig {
            filter: Some(filter),
            ..ImageConfig::default()
        };
        for (w, h) in [(5, 3), (20, 11)] {
            raw(w, h, cfg.clone()).tensor(&flat, &mut out).unwrap();
            assert_pixels(&out, w, h, |_, _| [17, 130, 250]);
        }
    }
}

// ---- crop, pad, region of interest ----

#[test]
fn crop_cuts_the_centre() {
    let crop = |filter| ImageConfig {
        resize: Some(Resize::Crop),
        filter: Some(filter),
        ..ImageConfig::default()
    };
    let mut out = Vec::new();
    // 8x4 into 4x4: the middle four columns, unscaled.
    let img = pattern(8, 4);
    let px = |img: &RgbImage, x: usize, y: usize| img.get_pixel(x as u32, y as u32).0;
    let g = raw(4, 4, crop(Filter::Bilinear))
        .tensor(&img, &mut out)
        .unwrap();
    assert_pixels(&out, 4, 4, |x, y| px(&img, x + 2, y));
    assert_eq!(
        g,
        Geometry {
            width: 8,
            height: 4,
            scale_x: 1.0,
            scale_y: 1.0,
            offset_x: 2.0,
            offset_y: 0.0
        }
    );
    // 4x8 into 4x4: the middle rows.
    let tall = pattern(4, 8);
    let g = raw(4, 4, crop(Filter::Bilinear))
        .tensor(&tall, &mut out)
        .unwrap();
    assert_pixels(&out, 4, 4, |x, y| px(&tall, x, y + 2));
    assert_eq!((g.offset_x, g.offset_y), (0.0, 2.0));
    // 16x8 into 4x4: the middle 8x8, halved.
    let big = pattern(16, 8);
    let g = raw(4, 4, crop(Filter::Nearest))
        .tensor(&big, &mut out)
        .unwrap();
    assert_pixels(&out, 4, 4, |x, y| px(&big, 4 + 2 * x + 1, 2 * y + 1));
    assert_eq!(
        (g.scale_x, g.scale_y, g.offset_x, g.offset_y),
        (2.0, 2.0, 4.0, 0.0)
    );
    // 7x4 into 4x4: the cut starts half-way into column 1; centres fall
    // on 2.0, 3.0, ... so nearest takes columns 2 to 5.
    let odd = pattern(7, 4);
    let g = raw(4, 4, crop(Filter::Nearest))
        .tensor(&odd, &mut out)
        .unwrap();
    assert_pixels(&out, 4, 4, |x, y| px(&odd, x + 2, y));
    assert_eq!((g.scale_x, g.offset_x), (1.0, 1.5));
}

#[test]
fn pad_centres_the_image_in_a_border() {
    let pad = |filter, value| ImageConfig {
        resize: Some(Resize::Pad),
        filter: Some(filter),
        pad_value: Some(value),
        ..ImageConfig::default()
    };
    let mut out = Vec::new();
    let px = |img: &RgbImage, x: usize, y: usize| img.get_pixel(x as u32, y as u32).0;
    // 4x2 into 4x4: unscaled, one border row above and below.
    let wide = pattern(4, 2);
    let g = raw(4, 4, pad(Filter::Bilinear, 7))
        .tensor(&wide, &mut out)
        .unwrap();
    assert_pixels(&out, 4, 4, |x, y| match y {
        1 | 2 => px(&wide, x, y - 1),
        _ => [7; 3],
    });
    assert_eq!(
        g,
        Geometry {
            width: 4,
            height: 2,
            scale_x: 1.0,
            scale_y: 1.0,
            offset_x: 0.0,
            offset_y: -1.0
        }
    );
    assert_eq!(g.to_source(0.0, 1.0), (0.0, 0.0));
    assert_eq!(g.to_source(4.0, 3.0), (4.0, 2.0));
    // 8x4 into 4x4: halved to 4x2, rows 1 and 2.
    let big = pattern(8, 4);
    let g = raw(4, 4, pad(Filter::Nearest, 9))
        .tensor(&big, &mut out)
        .unwrap();
    assert_pixels(&out, 4, 4, |x, y| match y {
        1 | 2 => px(&big, 2 * x + 1, 2 * (y - 1) + 1),
        _ => [9; 3],
    });
    assert_eq!(
        (g.scale_x, g.scale_y, g.offset_x, g.offset_y),
        (2.0, 2.0, 0.0, -2.0)
    );
    // 2x4 into 4x4: columns 1 and 2.
    let tall = pattern(2, 4);
    let g = raw(4, 4, pad(Filter::Bilinear, 0))
        .tensor(&tall, &mut out)
        .unwrap();
    assert_pixels(&out, 4, 4, |x, y| match x {
        1 | 2 => px(&tall, x - 1, y),
        _ => [0; 3],
    });
    assert_eq!((g.offset_x, g.offset_y), (-1.0, 0.0));
    // 3x1 into 4x4: 4x1 (4/3 rounded), rows from 1 (of (4 - 1) / 2).
    let line = pattern(3, 1);
    let g = raw(4, 4, pad(Filter::Nearest, 0))
        .tensor(&line, &mut out)
        .unwrap();
    assert_eq!((g.scale_x, g.scale_y), (0.75, 1.0));
    assert_eq!((g.offset_x, g.offset_y), (0.0, -1.0));
    assert_pixels(&out, 4, 4, |x, y| match y {
        // Centres 0.375, 1.125, 1.875, 2.625.
        1 => px(&line, [0, 1, 1, 2][x], 0),
        _ => [0; 3],
    });
    // The border goes through scale, mean and std like any pixel, in
    // either layout.
    let prep = resolve(
        &ImageConfig {
            mean: Some(vec![0.1, 0.2, 0.3]),
            std: Some(vec![0.5, 0.25, 2.0]),
            ..pad(Filter::Bilinear, 51)
        },
        &nhwc(4, 4, 3),
    );
    prep.tensor(&wide, &mut out).unwrap();
    for (i, v) in out.iter().enumerate() {
        let (y, c) = (i / 12, i % 3);
        let x = (i / 3) % 4;
        let byte = if y == 1 || y == 2 {
            px(&wide, x, y - 1)[c]
        } else {
            51
        };
        let want = (f64::from(byte) / 255.0 - [0.1, 0.2, 0.3][c]) / [0.5, 0.25, 2.0][c];
        assert!(
            (f64::from(*v) - want).abs() < 1e-5,
            "element {i}: {v} vs {want}"
        );
    }
}

#[test]
fn roi_is_cut_first() {
    let img = pattern(8, 8);
    let px = |x: usize, y: usize| img.get_pixel(x as u32, y as u32).0;
    let mut out = Vec::new();
    let roi = |r| ImageConfig {
        roi: Some(r),
        ..nearest()
    };
    let g = raw(4, 2, roi([2, 3, 4, 2])).tensor(&img, &mut out).unwrap();
    assert_pixels(&out, 4, 2, |x, y| px(x + 2, y + 3));
    assert_eq!(
        g,
        Geometry {
            width: 8,
            height: 8,
            scale_x: 1.0,
            scale_y: 1.0,
            offset_x: 2.0,
            offset_y: 3.0
        }
    );
    // Resized: the region's own pixel grid.
    let g = raw(2, 2, roi([2, 2, 4, 4])).tensor(&img, &mut out).unwrap();
    assert_pixels(&out, 2, 2, |x, y| px(2 + 2 * x + 1, 2 + 2 * y + 1));
    assert_eq!((g.scale_x, g.offset_x, g.offset_y), (2.0, 2.0, 2.0));
    // Up to the edge is inside; one past is not.
    let g = raw(4, 2, roi([4, 6, 4, 2])).tensor(&img, &mut out).unwrap();
    assert_pixels(&out, 4, 2, |x, y| px(x + 4, y + 6));
    assert_eq!((g.offset_x, g.offset_y), (4.0, 6.0));
    for r in [
        [5, 6, 4, 2],
        [4, 7, 4, 2],
        [u32::MAX, 0, 4, 2],
        [0, 0, 9, 1],
    ] {
        assert_eq!(
            raw(4, 2, roi(r)).tensor(&img, &mut out),
            Err(ImageError::Roi {
                roi: r,
                width: 8,
                height: 8
            })
        );
    }
    // With crop: the centre of the region, not of the image.
    let crop = ImageConfig {
        resize: Some(Resize::Crop),
        ..roi([0, 2, 6, 4])
    };
    let g = raw(4, 4, crop).tensor(&img, &mut out).unwrap();
    assert_pixels(&out, 4, 4, |x, y| px(x + 1, y + 2));
    assert_eq!((g.offset_x, g.offset_y), (1.0, 2.0));
}

/// The brightest input pixel's box, mapped back, is the bright source
/// block: the geometry agrees with where the resizer sampled.
#[test]
fn geometry_maps_boxes_back_onto_the_source() {
    // Black 16x16 with white at x 6..8, y 4..6.
    let img = RgbImage::from_fn(16, 16, |x, y| {
        let on = (6..8).contains(&x) && (4..6).contains(&y);
        Rgb([if on { 255 } else { 0 }; 3])
    });
    let brightest = |out: &[f32], w: usize| {
        let i = (0..out.len() / 3)
            .max_by(|&a, &b| out[a].total_cmp(&out[b]))
            .unwrap();
        ((i % w) as f32, (i / w) as f32)
    };
    let stretch = ImageConfig::default();
    // Scaled to 12x16 -> 6x8, one border column each side.
    let padded = ImageConfig {
        resize: Some(Resize::Pad),
        roi: Some([4, 0, 12, 16]),
        ..ImageConfig::default()
    };
    // 16x16 -> 8x4: rows 4..12 halved.
    let cropped = ImageConfig {
        resize: Some(Resize::Crop),
        ..ImageConfig::default()
    };
    for (what, cfg, (w, h)) in [
        ("stretch", stretch, (8, 8)),
        ("pad", padded, (8, 8)),
        ("crop", cropped, (8, 4)),
    ] {
        for filter in [Filter::Nearest, Filter::Bilinear] {
            let cfg = ImageConfig {
                filter: Some(filter),
                ..cfg.clone()
            };
            let mut out = Vec::new();
            let g = raw(w, h, cfg).tensor(&img, &mut out).unwrap();
            let (x, y) = brightest(&out, w);
            let (x0, y0) = g.to_source(x, y);
            let (x1, y1) = g.to_source(x + 1.0, y + 1.0);
            assert_eq!((x0, y0, x1, y1), (6.0, 4.0, 8.0, 6.0), "{what} {filter:?}");
        }
    }
}

// ---- decoding ----

#[test]
fn exif_orientation_is_applied() {
    let img = pattern(5, 3);
    let (w, h) = (5usize, 3usize);
    let px = |x: usize, y: usize| img.get_pixel(x as u32, y as u32).0;
    let prep = raw(5, 3, ImageConfig::default());
    // Orientation value, rotated size, and where rotated (x, y) was.
    type Source = Box<dyn Fn(usize, usize) -> (usize, usize)>;
    let cases: [(u16, (u32, u32), Source); 4] = [
        (1, (5, 3), Box::new(|x, y| (x, y))),
        // 90° clockwise: the bottom-left corner comes to the top left.
        (6, (3, 5), Box::new(move |x, y| (y, h - 1 - x))),
        (3, (5, 3), Box::new(move |x, y| (w - 1 - x, h - 1 - y))),
        // 90° anticlockwise: the top-right corner comes to the top left.
        (8, (3, 5), Box::new(move |x, y| (w - 1 - y, x))),
    ];
    for (value, size, source) in cases {
        let bytes = png_with_exif(&img, Some(exif_orientation(value)));
        let got = prep.decode(&bytes).unwrap();
        assert_eq!(got.dimensions(), size, "orientation {value}");
        for (x, y, p) in got.enumerate_pixels() {
            let (sx, sy) = source(x as usize, y as usize);
            assert_eq!(p.0, px(sx, sy), "orientation {value} at ({x}, {y})");
        }
    }

    // JPEG, with the segment spliced in by hand: 48x32 of flat 16x16
    // blocks (whole chroma blocks, so colours survive compression).
    let colours: [[u8; 3]; 6] = [
        [220, 30, 30],
        [30, 220, 30],
        [30, 30, 220],
        [230, 230, 230],
        [20, 20, 20],
        [220, 220, 30],
    ];
    let blocks = RgbImage::from_fn(48, 32, |x, y| Rgb(colours[(y / 16 * 3 + x / 16) as usize]));
    let bytes = splice_exif(&jpeg(&blocks), &exif_orientation(6));
    let got = prep.decode(&bytes).unwrap();
    assert_eq!(got.dimensions(), (32, 48));
    for (x, y, p) in got.enumerate_pixels() {
        // Block centres only: edges blur.
        if x % 16 == 0 || x % 16 == 15 || y % 16 == 0 || y % 16 == 15 {
            continue;
        }
        let (sx, sy) = (y, 31 - x);
        let want = colours[(sy / 16 * 3 + sx / 16) as usize];
        for c in 0..3 {
            assert!(
                (i32::from(p.0[c]) - i32::from(want[c])).abs() <= 6,
                "({x}, {y}) channel {c}: {:?} vs {want:?}",
                p.0
            );
        }
    }
    // The same JPEG without the segment is stored as is.
    assert_eq!(prep.decode(&jpeg(&blocks)).unwrap().dimensions(), (48, 32));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let prep = raw(4, 4, ImageConfig::default());
    let mut out = Vec::new();
    assert_eq!(prep.decode(&[]), Err(ImageError::Empty));
    assert_eq!(prep.run(&[], &mut out), Err(ImageError::Empty));

    let mut rng = Rng::new(7);
    let mut noise = |n: usize| -> Vec<u8> { (0..n).map(|_| rng.next_u64() as u8).collect() };
    assert!(matches!(
        prep.decode(&noise(1000)),
        Err(ImageError::Decode(_))
    ));
    assert!(matches!(
        prep.decode(b"P6\n1 1\n255\n\0\0\0"),
        Err(ImageError::Decode(_))
    ));

    // Real images cut short.
    let photo = pattern(64, 48);
    for whole in [jpeg(&photo), png(&photo)] {
        for cut in [1, 8, 20, whole.len() / 3, whole.len() / 2] {
            let got = prep.decode(&whole[..cut]);
            assert!(
                matches!(got, Err(ImageError::Decode(_))),
                "cut at {cut}: {got:?}"
            );
        }
    }
    // Right signatures, random rest; and random damage to real images.
    for i in 0..300 {
        let mut bytes = match i % 3 {
            0 => b"\x89PNG\r\n\x1a\n".to_vec(),
            1 => vec![0xFF, 0xD8, 0xFF],
            _ => Vec::new(),
        };
        if i % 3 == 2 {
            bytes = if i % 2 == 0 {
                jpeg(&photo)
            } else {
                png(&photo)
            };
            let flips = noise(8);
            for pair in flips.chunks(2) {
                let at = (usize::from(pair[0]) * 7 + 40) % bytes.len();
                bytes[at] ^= pair[1] | 1;
            }
        } else {
            let n = usize::from(noise(1)[0]) * 3;
            bytes.extend(noise(n));
        }
        if let Ok(img) = prep.decode(&bytes) {
            prep.tensor(&img, &mut out).unwrap();
        }
    }

    // A header claiming 10^10 pixels: refused from the header alone.
    assert_eq!(
        prep.decode(&png_header_only(100_000, 100_000)),
        Err(ImageError::TooLarge {
            width: 100_000,
            height: 100_000,
            limit: 40_000_000
        })
    );
    assert!(matches!(
        prep.decode(&png_header_only(u32::MAX, u32::MAX)),
        Err(ImageError::TooLarge { .. }) | Err(ImageError::Decode(_))
    ));
    // JPEG's largest: 65535 x 65535 written into a real frame header.
    let mut big = jpeg(&photo);
    let sof = big
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    big[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(
        prep.decode(&big),
        Err(ImageError::TooLarge {
            width: 65535,
            height: 65535,
            limit: 40_000_000
        })
    );
    // Zero width.
    assert!(matches!(
        prep.decode(&png_header_only(0, 5)),
        Err(ImageError::Decode(_))
    ));
    // The limit is the config's.
    let small = raw(
        4,
        4,
        ImageConfig {
            max_pixels: Some(4 * 4 - 1),
            ..ImageConfig::default()
        },
    );
    assert_eq!(
        small.decode(&png(&pattern(4, 4))),
        Err(ImageError::TooLarge {
            width: 4,
            height: 4,
            limit: 15
        })
    );
    let exact = raw(
        4,
        4,
        ImageConfig {
            max_pixels: Some(4 * 4),
            ..ImageConfig::default()
        },
    );
    assert!(exact.decode(&png(&pattern(4, 4))).is_ok());
    // An image with no pixels has no region inside it.
    assert_eq!(
        prep.tensor(&RgbImage::new(0, 3), &mut out),
        Err(ImageError::Roi {
            roi: [0, 0, 0, 3],
            width: 0,
            height: 3
        })
    );
}

#[test]
fn one_pixel_images_work_everywhere() {
    let dot = RgbImage::from_pixel(1, 1, Rgb([40, 150, 230]));
    let mut out = Vec::new();
    for bytes in [png(&dot), jpeg(&dot)] {
        for resize in [Resize::Stretch, Resize::Crop, Resize::Pad] {
            for filter in [
                Filter::Nearest,
                Filter::Bilinear,
                Filter::CatmullRom,
                Filter::Lanczos3,
            ] {
                let cfg = ImageConfig {
                    resize: Some(resize),
                    filter: Some(filter),
                    ..ImageConfig::default()
                };
                let prep = raw(5, 3, cfg);
                let g = prep.run(&bytes, &mut out).unwrap();
                let what = format!("{resize:?} {filter:?}");
                let want = prep.decode(&bytes).unwrap().get_pixel(0, 0).0;
                if bytes[0] == 0x89 {
                    assert_eq!(want, [40, 150, 230]);
                }
                // The middle input pixel is the dot under every mode.
                for (c, &v) in want.iter().enumerate() {
                    assert_eq!(at(&out, 5, 3, c, 2, 1), f32::from(v), "{what}");
                }
                let (x0, _) = g.to_source(2.0, 1.0);
                let (x1, _) = g.to_source(3.0, 2.0);
                assert!(x0 <= 0.5 && x1 >= 0.5, "{what}: {g:?}");
                if resize == Resize::Pad {
                    // Scaled to 3x3, centred: columns 0 and 4 border.
                    assert_eq!((g.scale_x, g.offset_x), (1.0 / 3.0, -1.0 / 3.0), "{what}");
                    assert_eq!(at(&out, 5, 3, 0, 0, 1), 0.0, "{what}");
                    assert_eq!(at(&out, 5, 3, 0, 4, 1), 0.0, "{what}");
                } else {
                    assert_pixels(&out, 5, 3, |_, _| want);
                }
            }
        }
    }
}
