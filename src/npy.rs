//! The NumPy `.npy` format, for the tensors `infer` reads and writes: every
//! numeric type tract runs (f16, f32, f64, i8 to i64, u8 to u64, bool).
//!
//! Written here rather than taken from a crate because a general reader
//! (Python-literal parser, big integers) cost the device binary about
//! 300 KB for a header that is one line of text. Versions 1, 2 and 3,
//! either byte order, C order only (Fortran order is refused, not
//! transposed).

use std::io::Write;
use std::path::Path;

use tract_onnx::prelude::{f16, DatumType, Tensor};

/// Why a .npy file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be opened, read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The bytes are not a .npy file this reader understands.
    #[error("{0}")]
    Format(String),
}

const MAGIC: &[u8] = b"\x93NUMPY";

fn bad(msg: impl Into<String>) -> NpyError {
    NpyError::Format(msg.into())
}

/// Reads a .npy file into a tensor of its type.
pub fn read(path: &Path) -> Result<Tensor, NpyError> {
    parse(&std::fs::read(path)?)
}

/// Parses the bytes of a .npy file.
pub fn parse(bytes: &[u8]) -> Result<Tensor, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    let data_start = start
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| bad("header runs past the end of the file"))?;
    let header = &bytes[start..data_start];
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    let descr = dict_value(header, "descr")?;
    let descr = descr
        .strip_prefix(['\'', '"'])
        .and_then(|d| d.strip_suffix(['\'', '"']))
        .ok_or_else(|| bad(format!("descr {descr} is not a string")))?;
    if dict_value(header, "fortran_order")? != "False" {
        return Err(bad("Fortran-order arrays are not supported"));
    }
    let shape = parse_shape(dict_value(header, "shape")?)?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad("shape too large"))?;
    let data = &bytes[data_start..];
    let (little, kind) = match descr.as_bytes() {
        [b'<' | b'|' | b'=', rest @ ..] => (true, rest),
        [b'>', rest @ ..] => (false, rest),
        _ => return Err(bad(format!("unsupported dtype {descr:?}"))),
    };
    // Elements are read as little-endian; a big-endian file's are reversed
    // first.
    fn take<const N: usize, T>(
        data: &[u8],
        count: usize,
        little: bool,
        from_le: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, NpyError> {
        let expected = count.checked_mul(N).ok_or_else(|| bad("shape too large"))?;
        if data.len() != expected {
            return Err(bad(format!(
                "expected {expected} bytes of data for the shape, found {}",
                data.len()
            )));
        }
        Ok(data
            .chunks_exact(N)
            .map(|c| {
                let mut b: [u8; N] = c.try_into().expect("chunks_exact gives N bytes");
                if !little {
                    b.reverse();
                }
                from_le(b)
            })
            .collect())
    }
    let t = match kind {
        b"f2" => Tensor::from_shape(&shape, &take(data, count, little, f16::from_le_bytes)?),
        b"f4" => Tensor::from_shape(&shape, &take(data, count, little, f32::from_le_bytes)?),
        b"f8" => Tensor::from_shape(&shape, &take(data, count, little, f64::from_le_bytes)?),
        b"i1" => Tensor::from_shape(&shape, &take(data, count, little, i8::from_le_bytes)?),
        b"i2" => Tensor::from_shape(&shape, &take(data, count, little, i16::from_le_bytes)?),
        b"i4" => Tensor::from_shape(&shape, &take(data, count, little, i32::from_le_bytes)?),
        b"i8" => Tensor::from_shape(&shape, &take(data, count, little, i64::from_le_bytes)?),
        b"u1" => Tensor::from_shape(&shape, &take(data, count, little, u8::from_le_bytes)?),
        b"u2" => Tensor::from_shape(&shape, &take(data, count, little, u16::from_le_bytes)?),
        b"u4" => Tensor::from_shape(&shape, &take(data, count, little, u32::from_le_bytes)?),
        b"u8" => Tensor::from_shape(&shape, &take(data, count, little, u64::from_le_bytes)?),
        b"b1" => Tensor::from_shape(&shape, &take(data, count, little, |b: [u8; 1]| b[0] != 0)?),
        _ => {
            return Err(bad(format!(
                "dtype {descr:?} is not a number type (f2, f4, f8, i1 to i8, u1 to u8, b1)"
            )))
        }
    };
    t.map_err(|e| bad(e.to_string()))
}

/// The raw text of `'key': value` in the header's dict, up to the next
/// top-level comma or the closing brace.
fn dict_value<'a>(header: &'a str, key: &str) -> Result<&'a str, NpyError> {
    let missing = || bad(format!("header has no {key:?}: {}", header.trim()));
    let at = [format!("'{key}'"), format!("\"{key}\"")]
        .iter()
        .find_map(|k| header.find(k.as_str()).map(|i| i + k.len()))
        .ok_or_else(missing)?;
    let rest = header[at..].trim_start();
    let rest = rest.strip_prefix(':').ok_or_else(missing)?.trim_start();
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Ok(rest[..i].trim()),
            _ => {}
        }
    }
    Err(missing())
}

fn parse_shape(s: &str) -> Result<Vec<usize>, NpyError> {
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad(format!("shape {s} is not a tuple")))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.trim_end_matches('L')
                .parse()
                .map_err(|_| bad(format!("shape {s}: {d:?} is not a size")))
        })
        .collect()
}

/// Writes a tensor as a version 1.0 .npy file of its own type (a type .npy
/// has no code for is written as f32).
pub fn write(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    let (descr, data): (&str, Vec<u8>) = match t.datum_type() {
        DatumType::F16 => ("<f2", le_bytes(t, f16::to_le_bytes)?),
        DatumType::F32 => ("<f4", le_bytes(t, f32::to_le_bytes)?),
        DatumType::F64 => ("<f8", le_bytes(t, f64::to_le_bytes)?),
        DatumType::I8 => ("|i1", le_bytes(t, i8::to_le_bytes)?),
        DatumType::I16 => ("<i2", le_bytes(t, i16::to_le_bytes)?),
        DatumType::I32 => ("<i4", le_bytes(t, i32::to_le_bytes)?),
        DatumType::I64 => ("<i8", le_bytes(t, i64::to_le_bytes)?),
        DatumType::U8 => ("|u1", le_bytes(t, u8::to_le_bytes)?),
        DatumType::U16 => ("<u2", le_bytes(t, u16::to_le_bytes)?),
        DatumType::U32 => ("<u4", le_bytes(t, u32::to_le_bytes)?),
        DatumType::U64 => ("<u8", le_bytes(t, u64::to_le_bytes)?),
        DatumType::Bool => ("|b1", le_bytes(t, |v: bool| [v as u8])?),
        _ => {
            let f = t.cast_to::<f32>().map_err(|e| bad(e.to_string()))?;
            ("<f4", le_bytes(&f, f32::to_le_bytes)?)
        }
    };
    let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}}}");
    // The format pads the header with spaces so the data starts on a
    // 64-byte boundary, and ends it with a newline.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let len = u16::try_from(header.len()).map_err(|_| bad("shape too long for a header"))?;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    std::fs::File::create(path)?.write_all(&out)?;
    Ok(())
}

fn le_bytes<T: tract_onnx::prelude::Datum + Copy, const N: usize>(
    t: &Tensor,
    f: impl Fn(T) -> [u8; N],
) -> Result<Vec<u8>, NpyError> {
    let v = t
        .to_plain_array_view::<T>()
        .map_err(|e| bad(e.to_string()))?;
    Ok(v.iter().flat_map(|&x| f(x)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_each_type_and_rank() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            Tensor::from_shape(&[2, 3], &[0.5f32, -1.0, 2.25, 1e-7, 3.0, -0.0]).unwrap(),
            Tensor::from_shape(&[3], &[-5i64, 0, 1 << 40]).unwrap(),
            Tensor::from_shape(&[1, 1, 2], &[1u8, 250]).unwrap(),
            Tensor::from_shape(&[2], &[f16::from_f32(1.5), f16::from_f32(-0.25)]).unwrap(),
            Tensor::from_shape(&[2], &[1e300f64, -2.5]).unwrap(),
            Tensor::from_shape(&[2], &[-128i8, 127]).unwrap(),
            Tensor::from_shape(&[2], &[-30000i16, 7]).unwrap(),
            Tensor::from_shape(&[2], &[i32::MIN, 9]).unwrap(),
            Tensor::from_shape(&[2], &[65535u16, 0]).unwrap(),
            Tensor::from_shape(&[2], &[u32::MAX, 1]).unwrap(),
            Tensor::from_shape(&[2], &[u64::MAX, 2]).unwrap(),
            Tensor::from_shape(&[3], &[true, false, true]).unwrap(),
            Tensor::from_shape::<f32>(&[], &[7.5]).unwrap(),
            Tensor::from_shape::<f32>(&[0, 4], &[]).unwrap(),
        ];
        for t in cases {
            let p = dir.path().join("t.npy");
            write(&p, &t).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            let header_end = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!(header_end % 64, 0, "data starts on a 64-byte boundary");
            assert_eq!(read(&p).unwrap(), t);
        }
    }

    #[test]
    fn reads_what_other_writers_write() {
        // Big-endian data, version 2 header, double-quoted keys, a
        // trailing "L" on a size, no trailing comma: all legal .npy.
        let header = "{\"descr\": \">f4\", \"fortran_order\": False, \"shape\": (2L, 1)}\n";
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[2, 0]);
        b.extend_from_slice(&(header.len() as u32).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&1.5f32.to_be_bytes());
        b.extend_from_slice(&(-2.0f32).to_be_bytes());
        let t = parse(&b).unwrap();
        assert_eq!(t, Tensor::from_shape(&[2, 1], &[1.5f32, -2.0]).unwrap());
    }

    #[test]
    fn refuses_what_it_cannot_read_with_a_reason() {
        let npy = |h: &str, data: &[u8]| {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&[1, 0]);
            b.extend_from_slice(&(h.len() as u16).to_le_bytes());
            b.extend_from_slice(h.as_bytes());
            b.extend_from_slice(data);
            b
        };
        let c64_header = "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }";
        let fortran = "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }";
        let f32_header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        // 2^62 elements of 4 bytes: the byte count overflows, not the count.
        let huge = f32_header.replace("(2,)", "(4611686018427387904,)");
        for (bytes, expect) in [
            (b"hello, world".to_vec(), "magic"),
            (npy(c64_header, &[0; 8]), "\"<c8\" is not a number type"),
            (npy(fortran, &[0; 4]), "Fortran"),
            (npy(f32_header, &[0; 4]), "expected 8 bytes"),
            (npy("{'descr': '<f4'}", &[]), "fortran_order"),
            (npy("{'descr': '<f4'", &[]), "descr"),
            (npy(&huge, &[]), "too large"),
            (npy(f32_header, &[])[..20].to_vec(), "past the end"),
            (npy(&f32_header[..30], &[]), "fortran_order"),
        ] {
            let e = parse(&bytes).unwrap_err().to_string();
            assert!(e.contains(expect), "{e:?} should mention {expect:?}");
        }
    }
}
