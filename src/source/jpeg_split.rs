//! Cutting a Motion-JPEG byte stream into JPEG frames at their markers,
//! not by searching for `FF D9`: after the start of image (`FF D8`) every
//! marker segment is skipped by its length (so an EXIF thumbnail inside
//! APP1, itself a JPEG, is part of its frame), and in entropy-coded data
//! `FF 00` is a stuffed byte and `FF D0` to `FF D7` are restart markers;
//! the frame ends at the end of image (`FF D9`). Garbage between frames and
//! broken frames (a new start before the end, a bad segment length, a frame
//! over the size limit) are reported, and the splitter resynchronizes on
//! the next start of image. Pure: the `mjpeg` source reads, this cuts.

/// One thing the splitter found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// A complete JPEG, `FF D8` to `FF D9`.
    Frame(Vec<u8>),
    /// Garbage or a broken frame, and what was wrong; the splitter is
    /// looking for the next start of image.
    Broken(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for `FF D8`; `ff`: the last byte was `FF`.
    Seek { ff: bool },
    /// In a frame, between segments: expecting `FF`.
    Marker,
    /// Read `FF` (and maybe fill bytes `FF`): expecting a marker code.
    Code,
    /// Read a segment's marker: its 2-byte length follows (`have` bytes of
    /// it read, the first in `hi`).
    Length { code: u8, have: u8, hi: u8 },
    /// Inside a segment's payload: `left` bytes to go; `scan` when it is
    /// the SOS header, after which entropy-coded data follows.
    Payload { left: usize, scan: bool },
    /// Entropy-coded data; `ff`: the last byte was `FF`.
    Scan { ff: bool },
}

/// Cuts a Motion-JPEG byte stream into JPEG frames, fed in chunks of any
/// size (the same frames come out however the stream is cut).
#[derive(Debug)]
pub struct Splitter {
    state: State,
    frame: Vec<u8>,
    max_frame: usize,
    /// Bytes skipped while looking for a start of image.
    garbage: usize,
    /// The skipped bytes are the rest of a frame already reported broken.
    quiet: bool,
}

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;

impl Splitter {
    /// A splitter refusing frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Splitter {
            state: State::Seek { ff: false },
            frame: Vec::new(),
            max_frame,
            garbage: 0,
            quiet: false,
        }
    }

    /// Splits the next bytes of the stream; what they completed goes to
    /// `out`.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<Split>) {
        while !data.is_empty() {
            let used = self.step(data, out);
            data = &data[used..];
            if self.frame.len() > self.max_frame {
                let size = self.frame.len();
                self.broken(
                    out,
                    format!(
                        "frame over max_frame_bytes ({} bytes), skipped at {size} bytes",
                        self.max_frame
                    ),
                );
            }
        }
    }

    /// The stream ended: reports a frame cut short or trailing garbage, and
    /// starts over for a new stream.
    pub fn finish(&mut self) -> Option<String> {
        let what = match self.state {
            State::Seek { ff } => {
                let garbage = self.garbage + usize::from(ff);
                (garbage > 0 && !self.quiet)
                    .then(|| format!("{garbage} bytes of garbage at the end of the stream"))
            }
            _ => Some(format!(
                "the stream ended inside a frame, after {} bytes of it",
                self.frame.len()
            )),
        };
        *self = Splitter::new(self.max_frame);
        what
    }

    /// Reports a broken frame and resynchronizes on the next start of image
    /// without reporting the rest of it as garbage.
    fn broken(&mut self, out: &mut Vec<Split>, why: String) {
        out.push(Split::Broken(why));
        self.frame = Vec::new();
        self.state = State::Seek { ff: false };
        self.garbage = 0;
        self.quiet = true;
    }

    /// A start of image was read (its two bytes are consumed).
    fn start_frame(&mut self, out: &mut Vec<Split>) {
        if self.garbage > 0 && !self.quiet {
            out.push(Split::Broken(format!(
                "{} bytes of garbage before a frame",
                self.garbage
            )));
        }
        self.garbage = 0;
        self.quiet = false;
        self.frame.clear();
        self.frame.extend_from_slice(&[0xFF, SOI]);
        self.state = State::Marker;
    }

    /// Consumes a prefix of `data` (at least one byte); returns its length.
    fn step(&mut self, data: &[u8], out: &mut Vec<Split>) -> usize {
        let b = data[0];
        match self.state {
            State::Seek { ff } => {
                if ff && b == SOI {
                    self.start_frame(out);
                    return 1;
                }
                if ff {
                    self.garbage += 1;
                }
                if b == 0xFF {
                    self.state = State::Seek { ff: true };
                    return 1;
                }
                // Skip to the next FF at once.
                let n = data.iter().position(|&x| x == 0xFF).unwrap_or(data.len());
                self.garbage += n;
                self.state = State::Seek { ff: false };
                n
            }
            State::Marker => {
                if b != 0xFF {
                    self.broken(
                        out,
                        format!(
                            "expected a marker at byte {} of a frame, found 0x{b:02X}",
                            self.frame.len()
                        ),
                    );
                    return 1;
                }
                self.frame.push(b);
                self.state = State::Code;
                1
            }
            State::Code => {
                self.code(b, out);
                1
            }
            State::Length { code, have, hi } => {
                self.frame.push(b);
                if have == 0 {
                    self.state = State::Length {
                        code,
                        have: 1,
                        hi: b,
                    };
                    return 1;
                }
                let len = usize::from(u16::from_be_bytes([hi, b]));
                if len < 2 {
                    self.broken(
                        out,
                        format!("segment 0x{code:02X} has a bad length ({len})"),
                    );
                    return 1;
                }
                self.state = State::Payload {
                    left: len - 2,
                    scan: code == SOS,
                };
                if len == 2 {
                    self.after_payload(code == SOS);
                }
                1
            }
            State::Payload { left, scan } => {
                let n = left.min(data.len());
                self.frame.extend_from_slice(&data[..n]);
                if n == left {
                    self.after_payload(scan);
                } else {
                    self.state = State::Payload {
                        left: left - n,
                        scan,
                    };
                }
                n
            }
            State::Scan { ff: false } => {
                let n = data
                    .iter()
                    .position(|&x| x == 0xFF)
                    .map_or(data.len(), |i| i + 1);
                self.frame.extend_from_slice(&data[..n]);
                if data[n - 1] == 0xFF {
                    self.state = State::Scan { ff: true };
                }
                n
            }
            State::Scan { ff: true } => {
                match b {
                    // A stuffed FF, or a restart marker: still data.
                    0x00 | 0xD0..=0xD7 => {
                        self.frame.push(b);
                        self.state = State::Scan { ff: false };
                    }
                    // Fill bytes before a marker.
                    0xFF => self.frame.push(b),
                    // A marker ends the scan (EOI, or tables and another
                    // scan of a progressive JPEG).
                    _ => self.code(b, out),
                }
                1
            }
        }
    }

    /// The marker code after `FF` (already in the frame).
    fn code(&mut self, b: u8, out: &mut Vec<Split>) {
        match b {
            0xFF => self.frame.push(b),
            SOI => {
                let size = self.frame.len().saturating_sub(1);
                out.push(Split::Broken(format!(
                    "a new frame started before the end of the last one, after {size} bytes of it"
                )));
                self.garbage = 0;
                self.quiet = true;
                self.start_frame(out);
            }
            EOI => {
                self.frame.push(b);
                let frame = std::mem::take(&mut self.frame);
                if frame.len() <= self.max_frame {
                    out.push(Split::Frame(frame));
                    self.state = State::Seek { ff: false };
                    self.garbage = 0;
                    self.quiet = false;
                } else {
                    // `feed` reports it; keep the size for the message.
                    self.frame = frame;
                }
            }
            // Standalone markers: TEM, and restart markers out of place
            // (tolerated, decoders skip them).
            0x01 | 0xD0..=0xD7 => {
                self.frame.push(b);
                self.state = State::Marker;
            }
            0xC0..=0xFE => {
                self.frame.push(b);
                self.state = State::Length {
                    code: b,
                    have: 0,
                    hi: 0,
                };
            }
            _ => self.broken(
                out,
                format!(
                    "invalid marker 0xFF{b:02X} at byte {} of a frame",
                    self.frame.len()
                ),
            ),
        }
    }

    fn after_payload(&mut self, scan: bool) {
        self.state = if scan {
            State::Scan { ff: false }
        } else {
            State::Marker
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A baseline JPEG of noise (so its entropy-coded data has stuffed
    /// `FF 00` bytes), different for each `seed`.
    fn jpeg(seed: u32, size: u32) -> Vec<u8> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let img = image::RgbImage::from_fn(size, size, |_, _| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    /// `outer` with an APP1 (EXIF) segment holding `thumb`, a whole JPEG
    /// with its own FFD8 and FFD9, right after its start of image.
    fn with_thumbnail(outer: &[u8], thumb: &[u8]) -> Vec<u8> {
        let len = u16::try_from(2 + 6 + thumb.len()).unwrap();
        let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(b"Exif\0\0");
        out.extend_from_slice(thumb);
        out.extend_from_slice(&outer[2..]);
        out
    }

    /// Frames and broken-frame reports of `stream` fed in `chunk`-byte
    /// pieces, with the end of the stream.
    fn split(stream: &[u8], chunk: usize, max: usize) -> (Vec<Vec<u8>>, Vec<String>) {
        let mut s = Splitter::new(max);
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            s.feed(piece, &mut out);
        }
        out.extend(s.finish().map(Split::Broken));
        let mut frames = Vec::new();
        let mut broken = Vec::new();
        for x in out {
            match x {
                Split::Frame(f) => frames.push(f),
                Split::Broken(why) => broken.push(why),
            }
        }
        (frames, broken)
    }

    fn has_stuffing(jpeg: &[u8]) -> bool {
        jpeg.windows(2).any(|w| w == [0xFF, 0x00])
    }

    #[test]
    fn concatenated_jpegs_split_exactly() {
        let frames: Vec<Vec<u8>> = (0..4).map(|i| jpeg(i, 48 + 16 * i)).collect();
        assert!(
            frames.iter().any(|f| has_stuffing(f)),
            "test frames need FF00"
        );
        let stream = frames.concat();
        for chunk in [1, 7, 4096, stream.len()] {
            let (got, broken) = split(&stream, chunk, 1 << 20);
            assert_eq!(got, frames, "chunk {chunk}");
            assert!(broken.is_empty(), "chunk {chunk}: {broken:?}");
        }
    }

    #[test]
    fn exif_thumbnail_is_part_of_its_frame() {
        let thumb = jpeg(9, 8);
        let a = with_thumbnail(&jpeg(1, 24), &thumb);
        let b = jpeg(2, 24);
        let stream = [a.clone(), b.clone()].concat();
        for chunk in [1, 7, 4096] {
            let (got, broken) = split(&stream, chunk, 1 << 20);
            assert_eq!(got, vec![a.clone(), b.clone()], "chunk {chunk}");
            assert!(broken.is_empty(), "{broken:?}");
        }
    }

    #[test]
    fn garbage_and_truncated_frames_are_reported_and_skipped() {
        let f: Vec<Vec<u8>> = (0..4).map(|i| jpeg(i, 24)).collect();
        let truncated = &f[1][..f[1].len() - 40];
        let stream = [
            b"noise\xFF\x00\xFF".as_slice(),
            &f[0],
            truncated,
            &f[2],
            b"\x00\x01\xFF\xFF junk",
            &f[3],
            &f[0][..100],
        ]
        .concat();
        for chunk in [1, 7, 4096] {
            let (got, broken) = split(&stream, chunk, 1 << 20);
            assert_eq!(got, vec![f[0].clone(), f[2].clone(), f[3].clone()]);
            assert_eq!(broken.len(), 4, "chunk {chunk}: {broken:?}");
            assert!(broken[0].contains("8 bytes of garbage"), "{}", broken[0]);
            assert!(broken[1].contains("new frame started"), "{}", broken[1]);
            assert!(broken[2].contains("garbage"), "{}", broken[2]);
            assert!(broken[3].contains("ended inside a frame"), "{}", broken[3]);
        }
    }

    #[test]
    fn bad_segment_length_and_oversized_frames_resynchronize() {
        let a = jpeg(1, 24);
        let b = jpeg(2, 64);
        let c = jpeg(3, 24);
        // A DQT segment claiming a length of 1.
        let bad = [0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x01, 0x12, 0x34];
        let stream = [&bad[..], &a, &b, &c].concat();
        let max = a.len().max(c.len()) + 1;
        assert!(b.len() > max);
        for chunk in [1, 7, 4096] {
            let (got, broken) = split(&stream, chunk, max);
            assert_eq!(got, vec![a.clone(), c.clone()], "chunk {chunk}");
            assert_eq!(broken.len(), 2, "{broken:?}");
            assert!(broken[0].contains("bad length"), "{}", broken[0]);
            assert!(broken[1].contains("max_frame_bytes"), "{}", broken[1]);
        }
    }

    #[test]
    fn restart_markers_and_progressive_scans_stay_in_the_frame() {
        // The shape of a progressive JPEG with restart intervals: tables
        // and a second scan after the first one's data.
        let frame: Vec<u8> = [
            &[0xFF, 0xD8][..],
            &[0xFF, 0xDD, 0x00, 0x04, 0x00, 0x10], // DRI
            &[0xFF, 0xC2, 0x00, 0x05, 1, 2, 3],    // SOF2
            &[0xFF, 0xDA, 0x00, 0x03, 7],          // SOS
            &[
                0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0xD1, 0x78,
            ],
            &[0xFF, 0xC4, 0x00, 0x04, 0xFF, 0xD9], // DHT holding FFD9
            &[0xFF, 0xDA, 0x00, 0x02],             // SOS
            &[0x9A, 0xFF, 0x00],
            &[0xFF, 0xD9],
        ]
        .concat();
        let stream = [frame.clone(), frame.clone()].concat();
        for chunk in [1, 2, 3, 7] {
            let (got, broken) = split(&stream, chunk, 1 << 20);
            assert_eq!(got, vec![frame.clone(), frame.clone()], "chunk {chunk}");
            assert!(broken.is_empty(), "{broken:?}");
        }
    }

    #[test]
    fn any_bytes_split_without_panicking_into_whole_frames() {
        // Good frames with bytes flipped, dropped and repeated at random
        // places, split at random boundaries: whatever comes out is a
        // frame from FFD8 to FFD9 within the size limit.
        let good = [jpeg(1, 24), with_thumbnail(&jpeg(2, 24), &jpeg(3, 8))].concat();
        let mut state = 0x9E37_79B9u32;
        let mut rand = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as usize % n.max(1)
        };
        for round in 0..200 {
            let mut stream = good.clone();
            for _ in 0..1 + rand(8) {
                let at = rand(stream.len());
                match rand(3) {
                    0 => stream[at] = [0xFF, 0xD8, 0xD9, 0x00, 0x01][rand(5)],
                    1 => {
                        stream.remove(at);
                    }
                    _ => {
                        let piece = stream[at..(at + rand(64)).min(stream.len())].to_vec();
                        stream.splice(at..at, piece);
                    }
                }
            }
            let max = 512 + rand(4096);
            let mut splitter = Splitter::new(max);
            let mut out = Vec::new();
            let mut rest = stream.as_slice();
            while !rest.is_empty() {
                let n = 1 + rand(97).min(rest.len() - 1);
                splitter.feed(&rest[..n], &mut out);
                rest = &rest[n..];
            }
            splitter.finish();
            for split in out {
                if let Split::Frame(f) = split {
                    assert!(f.starts_with(&[0xFF, 0xD8]), "round {round}");
                    assert!(f.ends_with(&[0xFF, 0xD9]), "round {round}");
                    assert!(f.len() <= max, "round {round}");
                }
            }
        }
    }
}
