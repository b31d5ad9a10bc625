//! A synthetic image-folder data set for the image trainer's tests: four
//! classes of noisy pictures (a filled circle, a filled square, horizontal
//! stripes, vertical stripes) at random positions, sizes and intensities,
//! with Gaussian pixel noise, saved as PNG and JPEG.

use std::path::Path;

use edgeinfer::rng::Rng;
use image::{Rgb, RgbImage};

/// The class names, sorted (the trainer's class order).
pub const CLASSES: [&str; 4] = ["circle", "hstripes", "square", "vstripes"];

/// One `size`x`size` picture of `class` (an index into [`CLASSES`]).
pub fn picture(class: usize, size: u32, rng: &mut Rng) -> RgbImage {
    let s = size as f64;
    let background = rng.range(20.0, 110.0);
    let foreground = background + rng.range(70.0, 140.0);
    // A slight colour cast, so RGB and gray differ.
    let tint = [
        rng.range(0.85, 1.0),
        rng.range(0.85, 1.0),
        rng.range(0.85, 1.0),
    ];
    let inside: Box<dyn Fn(f64, f64) -> bool> = match CLASSES[class] {
        "circle" => {
            let r = rng.range(0.15 * s, 0.32 * s);
            let (cx, cy) = (
                rng.range(r + 1.0, s - r - 1.0),
                rng.range(r + 1.0, s - r - 1.0),
            );
            Box::new(move |x, y| (x - cx).powi(2) + (y - cy).powi(2) <= r * r)
        }
        "square" => {
            let side = rng.range(0.28 * s, 0.6 * s);
            let (x0, y0) = (
                rng.range(1.0, s - side - 1.0),
                rng.range(1.0, s - side - 1.0),
            );
            Box::new(move |x, y| x >= x0 && x < x0 + side && y >= y0 && y < y0 + side)
        }
        stripes => {
            let period = rng.range(0.14 * s, 0.24 * s);
            let phase = rng.range(0.0, period);
            let horizontal = stripes == "hstripes";
            Box::new(move |x, y| {
                let t = if horizontal { y } else { x };
                ((t + phase) % period) < period / 2.0
            })
        }
    };
    let mut img = RgbImage::new(size, size);
    for y in 0..size {
        for x in 0..size {
            let base = if inside(x as f64 + 0.5, y as f64 + 0.5) {
                foreground
            } else {
                background
            };
            let noise = 12.0 * rng.normal();
            let px = tint.map(|t| (base * t + noise).clamp(0.0, 255.0) as u8);
            img.put_pixel(x, y, Rgb(px));
        }
    }
    img
}

/// Writes `per_class` pictures of each class into `dir/<class>/`, every
/// other one as JPEG, the rest as PNG.
pub fn write_folder(dir: &Path, per_class: usize, size: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    for (c, name) in CLASSES.iter().enumerate() {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..per_class {
            let img = picture(c, size, &mut rng);
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            img.save(folder.join(format!("{name}-{i:03}.{ext}")))
                .unwrap();
        }
    }
}

/// The encoded bytes of a fresh picture of `class`, as PNG.
pub fn png_bytes(class: usize, size: u32, rng: &mut Rng) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    picture(class, size, rng)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}
