//! Image folders as training data: one subfolder per class, every image
//! turned into a tensor by the device's own image stage
//! ([`ImagePrep::run`]), so the model is trained on exactly what a device
//! will feed it. Also the training-time augmentation of image tensors.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::data::{Dataset, Targets};
use super::HostError;
use crate::image::{Color, Filter, ImageConfig, ImageDtype, ImageLayout, ImagePrep, Resize, Scale};
use crate::problem::{Origin, Problems};
use crate::rng::Rng;

/// File extensions read as images (any case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// How `train --images` turns files into tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSpec {
    /// `[width, height]` every image is stretched to.
    pub size: [u32; 2],
    /// One gray channel instead of red, green and blue.
    pub grayscale: bool,
}

impl ImageSpec {
    /// The image settings the model carries in its `edgeinfer.image`
    /// metadata. Every field the trainer relies on is set, so a device
    /// with other defaults still prepares images the same way.
    pub fn config(&self) -> ImageConfig {
        ImageConfig {
            size: Some(self.size),
            color: Some(if self.grayscale {
                Color::Gray
            } else {
                Color::Rgb
            }),
            layout: Some(ImageLayout::Nchw),
            scale: Some(Scale::Unit),
            resize: Some(Resize::Stretch),
            filter: Some(Filter::Bilinear),
            dtype: Some(ImageDtype::F32),
            ..ImageConfig::default()
        }
    }

    /// The settings of a model's `edgeinfer.image` metadata, as
    /// `train --images` writes it.
    pub fn from_metadata(json: &str) -> Result<ImageSpec, String> {
        let cfg = ImageConfig::from_metadata(json)
            .map_err(|e| format!("{}: {e}", crate::image::IMAGE_META))?;
        let size = cfg.size.ok_or_else(|| {
            format!(
                "{}: expected a size (a model made by train --images)",
                crate::image::IMAGE_META
            )
        })?;
        Ok(ImageSpec {
            size,
            grayscale: cfg.color == Some(Color::Gray),
        })
    }

    /// Channels of the tensor.
    pub fn channels(&self) -> usize {
        if self.grayscale {
            1
        } else {
            3
        }
    }

    /// Names of the channels, for the model's metadata and the report.
    pub fn channel_names(&self) -> Vec<String> {
        let names: &[&str] = if self.grayscale {
            &["gray"]
        } else {
            &["red", "green", "blue"]
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// The device's image stage for these settings, resolved against the
    /// input the exported model declares (`[N, C, H, W]`, N dynamic).
    pub fn prep(&self) -> Result<ImagePrep, HostError> {
        let [w, h] = self.size;
        if w == 0 || h == 0 {
            return Err(HostError::Usage(format!(
                "--size {w}x{h}: expected a width and a height of at least 1"
            )));
        }
        let dims = [
            None,
            Some(self.channels()),
            Some(h as usize),
            Some(w as usize),
        ];
        let origin = Origin::new("--images", Path::new("."));
        let mut problems = Problems::new(&origin);
        let prep = self.config().resolve(&dims, &mut problems);
        match prep {
            Some(p) if problems.is_empty() => Ok(p),
            _ => Err(HostError::Usage(format!(
                "image settings {}: {}",
                self.config().to_metadata(),
                problems
                    .into_vec()
                    .iter()
                    .map(|p| format!("{}: {}", p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
        }
    }
}

/// Parses `--size WxH`.
pub fn parse_size(s: &str) -> Result<[u32; 2], String> {
    let parsed = s
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some([w.trim().parse().ok()?, h.trim().parse().ok()?]));
    match parsed {
        Some([w, h]) if w > 0 && h > 0 => Ok([w, h]),
        _ => Err(format!(
            "expected WIDTHxHEIGHT in pixels, like 32x32, found {s:?}"
        )),
    }
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, HostError> {
    let read = std::fs::read_dir(dir).map_err(|e| HostError::Input {
        file: dir.display().to_string(),
        message: format!("cannot read the folder: {e}"),
    })?;
    let mut paths: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !hidden(p))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Loads an image folder: one subfolder per class (class names are the
/// subfolder names, sorted), `.jpg`, `.jpeg` and `.png` files in each, each
/// made a `[C, H, W]` example by `prep`. A file that is not an image or
/// cannot be decoded is skipped and named in [`Dataset::skipped`]; a class
/// folder without a readable image, or fewer than two classes, is an error
/// naming the folder.
pub fn load_folder(dir: &Path, spec: &ImageSpec, prep: &ImagePrep) -> Result<Dataset, HostError> {
    let bad = |file: &Path, message: String| HostError::Input {
        file: file.display().to_string(),
        message,
    };
    let classes: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.len() < 2 {
        return Err(bad(
            dir,
            format!(
                "expected one subfolder per class and at least 2 classes, found {}{}",
                classes.len(),
                classes
                    .first()
                    .map(|c| format!(" ({})", c.file_name().unwrap_or_default().to_string_lossy()))
                    .unwrap_or_default()
            ),
        ));
    }
    let shape = vec![
        spec.channels(),
        spec.size[1] as usize,
        spec.size[0] as usize,
    ];
    let per: usize = shape.iter().product();
    let (mut x, mut ids, mut labels, mut skipped) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut buf = Vec::with_capacity(per);
    for (class, folder) in classes.iter().enumerate() {
        let name = folder
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let mut found = 0usize;
        for file in sorted_entries(folder)? {
            if file.is_dir() {
                continue;
            }
            let shown = format!(
                "{name}/{}",
                file.file_name().unwrap_or_default().to_string_lossy()
            );
            let image_ext = file.extension().is_some_and(|e| {
                IMAGE_EXTENSIONS
                    .iter()
                    .any(|x| e.to_string_lossy().eq_ignore_ascii_case(x))
            });
            if !image_ext {
                skipped.push(format!("{shown}: not a .jpg, .jpeg or .png file"));
                continue;
            }
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) => {
                    skipped.push(format!("{shown}: cannot read: {e}"));
                    continue;
                }
            };
            match prep.run(&bytes, &mut buf) {
                Ok(_) if buf.len() == per && buf.iter().all(|v| v.is_finite()) => {
                    x.push(buf.clone());
                    ids.push(class as u32);
                    found += 1;
                }
                Ok(_) => skipped.push(format!(
                    "{shown}: the image stage gave {} values, expected {per}",
                    buf.len()
                )),
                Err(e) => skipped.push(format!("{shown}: {e}")),
            }
        }
        if found == 0 {
            return Err(bad(
                folder,
                format!("class {name:?} has no readable .jpg, .jpeg or .png image"),
            ));
        }
        labels.push(name);
    }
    let y = Targets::Class(ids);
    Ok(Dataset {
        sha256: super::data::examples_sha256(&x, &y),
        x,
        shape,
        y,
        labels,
        features: spec.channel_names(),
        targets: vec!["class".into()],
        dropped_rows: 0,
        imputed_values: 0,
        mixed_windows: 0,
        skipped,
    })
}

/// Training-time augmentation of `[C, H, W]` examples: a random horizontal
/// flip and a shift of up to a sixteenth of the size (at least a pixel)
/// each way, the edge pixels repeated into the gap. Only training batches
/// are changed; validation, test and the export see the images as they are.
#[derive(Debug)]
pub struct Augment {
    /// The standardized training examples, flat.
    data: Vec<f32>,
    shape: [usize; 3],
}

impl Augment {
    /// Over the training tensor `x` (`[n, C, H, W]`).
    pub fn new(x: &Tensor) -> Result<Augment, HostError> {
        let candle = |e: candle_core::Error| HostError::Train(e.to_string());
        let dims = x.dims();
        if dims.len() != 4 {
            return Err(HostError::Usage(
                "--augment applies to images (--images)".into(),
            ));
        }
        Ok(Augment {
            data: x.flatten_all().and_then(|t| t.to_vec1()).map_err(candle)?,
            shape: [dims[1], dims[2], dims[3]],
        })
    }

    /// The examples `rows`, each flipped and shifted at random.
    pub fn batch(&self, rows: &[usize], rng: &mut Rng) -> Result<Tensor, HostError> {
        let [c, h, w] = self.shape;
        let per = c * h * w;
        let reach = |n: usize| (n / 16).max(1) as i64;
        let (rx, ry) = (reach(w), reach(h));
        let mut out = Vec::with_capacity(rows.len() * per);
        for &r in rows {
            let src = &self.data[r * per..(r + 1) * per];
            let flip = rng.next_u64() & 1 == 1;
            let dx = (rng.next_u64() % (2 * rx as u64 + 1)) as i64 - rx;
            let dy = (rng.next_u64() % (2 * ry as u64 + 1)) as i64 - ry;
            for ch in 0..c {
                let plane = &src[ch * h * w..(ch + 1) * h * w];
                for y in 0..h as i64 {
                    let sy = (y - dy).clamp(0, h as i64 - 1) as usize;
                    for x in 0..w as i64 {
                        let fx = if flip { w as i64 - 1 - x } else { x };
                        let sx = (fx - dx).clamp(0, w as i64 - 1) as usize;
                        out.push(plane[sy * w + sx]);
                    }
                }
            }
        }
        Tensor::from_vec(out, (rows.len(), c, h, w), &Device::Cpu)
            .map_err(|e| HostError::Train(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_parses_width_by_height() {
        assert_eq!(parse_size("48x32").unwrap(), [48, 32]);
        assert_eq!(parse_size("16X16").unwrap(), [16, 16]);
        assert!(parse_size("0x3").is_err());
        assert!(parse_size("32").is_err());
        assert!(parse_size("ax3").is_err());
    }

    #[test]
    fn augmentation_flips_and_shifts_within_the_reach() {
        // One 1x2x4 example: rows 0 1 2 3 / 4 5 6 7.
        let x = Tensor::from_vec(
            (0..8).map(|v| v as f32).collect::<Vec<_>>(),
            (1, 1, 2, 4),
            &Device::Cpu,
        )
        .unwrap();
        let a = Augment::new(&x).unwrap();
        let mut rng = Rng::new(3);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let t = a.batch(&[0], &mut rng).unwrap();
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(v.len(), 8);
            // A shift of at most one pixel, edges repeated: every row keeps
            // values of its own source row or the other one.
            assert!(v.iter().all(|p| (0.0..8.0).contains(p)));
            seen.insert(v.iter().map(|p| *p as i32).collect::<Vec<_>>());
        }
        let flipped = vec![3, 2, 1, 0, 7, 6, 5, 4];
        assert!(seen.contains(&vec![0, 1, 2, 3, 4, 5, 6, 7]), "{seen:?}");
        assert!(seen.contains(&flipped), "{seen:?}");
        assert!(seen.len() > 2, "shifts too: {seen:?}");
        assert!(Augment::new(
            &Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap()
        )
        .is_err());
    }
}
