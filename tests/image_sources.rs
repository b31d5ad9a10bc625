//! The image sources on real files, directories, processes and FIFOs:
//! `image_dir`, `mjpeg` and the `image` payload format of `mqtt` (its
//! config; end to end over a broker is tested with the pipeline).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, SystemTime};

use edgeinfer::problem::{Origin, Problems};
use edgeinfer::source::{
    After, ImageDirConfig, MjpegConfig, Sample, Source, SourceConfig, SourceError,
};

/// Longest wait for a source's next result before the test fails (a guard
/// against hanging, not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(20);

/// A baseline JPEG of noise, different for each `seed`.
fn jpeg(seed: u32, size: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let img = image::RgbImage::from_fn(size, size, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .unwrap();
    out
}

fn frames(n: u32) -> Vec<Vec<u8>> {
    (0..n).map(|i| jpeg(i, 16 + (i % 3) * 8)).collect()
}

/// A source read on its own thread, its results coming through a channel.
struct Pump {
    rx: Receiver<Result<Option<Sample>, SourceError>>,
}

impl Pump {
    fn new(mut source: Box<dyn Source>) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || loop {
            let r = source.next_sample();
            let end = matches!(r, Ok(None)) || matches!(r, Err(ref e) if !e.is_recoverable());
            if tx.send(r).is_err() || end {
                return;
            }
        });
        Pump { rx }
    }

    fn next(&self) -> Result<Option<Sample>, SourceError> {
        self.rx
            .recv_timeout(PATIENCE)
            .expect("the source gave nothing in time")
    }

    /// The next result, which must be an image; its origin and bytes.
    fn image(&self) -> (String, Vec<u8>, u64) {
        match self.next() {
            Ok(Some(s)) => {
                let f = s.frame.expect("an image sample");
                assert!(s.values.is_empty());
                (f.origin, f.bytes, s.ts_ms)
            }
            other => panic!("expected an image, found {other:?}"),
        }
    }
}

fn watch(dir: &Path, after: After, poll_ms: u64) -> Pump {
    let mut c = ImageDirConfig::new(dir);
    c.after = after;
    c.poll_ms = poll_ms;
    Pump::new(Box::new(c.open(&Origin::default())))
}

/// Writes `name` in `dir` complete and at once: written under a `.part`
/// name, given modification time `mtime_s` (seconds after 2020-01-01), and
/// renamed into place.
fn drop_in(dir: &Path, name: &str, bytes: &[u8], mtime_s: u64) -> PathBuf {
    let part = dir.join(format!("{name}.part"));
    let f = File::create(&part).unwrap();
    (&f).write_all(bytes).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800 + mtime_s))
        .unwrap();
    drop(f);
    let to = dir.join(name);
    fs::rename(&part, &to).unwrap();
    to
}

#[test]
fn image_dir_yields_new_files_once_in_arrival_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let f = frames(4);
    let pump = watch(dir, After::Keep, 20);
    // Arrival order is modification time, then name.
    drop_in(dir, "c.jpg", &f[0], 10);
    drop_in(dir, "b.JPG", &f[1], 20);
    drop_in(dir, "a.png", &f[2], 20);
    drop_in(dir, "notes.txt", b"not an image", 5);
    let got: Vec<(String, Vec<u8>, u64)> = (0..3).map(|_| pump.image()).collect();
    let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(names, vec!["c.jpg", "a.png", "b.JPG"]);
    assert_eq!(got[0].1, f[0]);
    assert_eq!(got[1].1, f[2]);
    assert_eq!(got[2].1, f[1]);
    assert_eq!(got[0].2, (1_577_836_800 + 10) * 1000, "ts_ms is the mtime");
    // Kept files are not read again: the next one is the new file.
    drop_in(dir, "d.jpeg", &f[3], 1);
    assert_eq!(pump.image().0, "d.jpeg");
    for name in ["a.png", "b.JPG", "c.jpg", "d.jpeg"] {
        assert!(dir.join(name).exists(), "keep leaves {name}");
    }
}

#[test]
fn image_dir_waits_for_a_file_being_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let full = jpeg(7, 96);
    let pump = watch(&dir, After::Keep, 300);
    let path = dir.join("slow.jpg");
    let mut f = File::create(&path).unwrap();
    // Written in parts over several poll intervals, less than one interval
    // between parts: no two listings in a row see the same size.
    let parts: Vec<&[u8]> = full.chunks(full.len().div_ceil(24)).collect();
    assert!(parts.len() > 20);
    for part in parts {
        f.write_all(part).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(f);
    let (name, bytes, _) = pump.image();
    assert_eq!(name, "slow.jpg");
    assert_eq!(bytes.len(), full.len(), "the whole file, not a part");
    assert!(bytes == full);
}

#[test]
fn image_dir_ignores_names_being_written_until_renamed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let f = frames(2);
    for name in ["x.jpg.tmp", ".hidden.jpg", "y.jpg~", "z.jpg.part"] {
        fs::write(dir.join(name), &f[0]).unwrap();
    }
    let pump = watch(dir, After::Keep, 20);
    drop_in(dir, "marker.jpg", &f[1], 0);
    assert_eq!(pump.image().0, "marker.jpg");
    fs::rename(dir.join("x.jpg.tmp"), dir.join("x.jpg")).unwrap();
    let (name, bytes, _) = pump.image();
    assert_eq!(name, "x.jpg");
    assert_eq!(bytes, f[0]);
}

#[test]
fn image_dir_moves_or_deletes_what_it_read() {
    let tmp = tempfile::tempdir().unwrap();
    let watched = tmp.path().join("in");
    fs::create_dir(&watched).unwrap();
    let done = tmp.path().join("done/today");
    let f = frames(2);

    let pump = watch(&watched, After::Move(done.clone()), 20);
    drop_in(&watched, "a.jpg", &f[0], 0);
    assert_eq!(pump.image().0, "a.jpg");
    drop_in(&watched, "b.jpg", &f[1], 0);
    assert_eq!(pump.image().0, "b.jpg");
    assert!(!watched.join("a.jpg").exists());
    assert_eq!(fs::read(done.join("a.jpg")).unwrap(), f[0]);
    drop(pump);

    let gone = tmp.path().join("gone");
    fs::create_dir(&gone).unwrap();
    let pump = watch(&gone, After::Delete, 20);
    drop_in(&gone, "c.jpg", &f[0], 0);
    assert_eq!(pump.image().0, "c.jpg");
    // The same name again is a new file.
    drop_in(&gone, "c.jpg", &f[1], 1);
    let (name, bytes, _) = pump.image();
    assert_eq!((name.as_str(), bytes), ("c.jpg", f[1].clone()));
    assert!(!gone.join("c.jpg").exists());
}

#[test]
fn image_dir_reports_a_failed_move_and_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let watched = tmp.path().join("in");
    fs::create_dir(&watched).unwrap();
    // The move target is a file: moving into it fails.
    let blocker = tmp.path().join("blocker");
    fs::write(&blocker, b"").unwrap();
    let f = frames(2);
    let pump = watch(&watched, After::Move(blocker), 20);
    drop_in(&watched, "a.jpg", &f[0], 0);
    assert_eq!(
        pump.image().0,
        "a.jpg",
        "read even though it cannot be moved"
    );
    match pump.next() {
        Err(SourceError::BadRecord { reason, .. }) => {
            assert!(reason.contains("a.jpg: cannot move it"), "{reason}")
        }
        other => panic!("expected the failed move, found {other:?}"),
    }
    drop_in(&watched, "b.jpg", &f[1], 1);
    assert_eq!(pump.image().0, "b.jpg", "a.jpg is not read again");
    assert!(watched.join("a.jpg").exists());
}

#[test]
fn image_dir_missing_directory_is_reported_once_and_watched_for() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("later");
    let pump = watch(&dir, After::Keep, 20);
    match pump.next() {
        Err(e @ SourceError::Unavailable { .. }) => {
            assert!(e.is_recoverable());
            assert!(e.to_string().contains("cannot list the directory"), "{e}");
        }
        other => panic!("expected the missing directory, found {other:?}"),
    }
    // Several polls pass with the directory still missing: nothing more
    // is reported, and the file is the next result.
    std::thread::sleep(Duration::from_millis(200));
    fs::create_dir(&dir).unwrap();
    drop_in(&dir, "a.jpg", &jpeg(1, 16), 0);
    assert_eq!(pump.image().0, "a.jpg");
    // Gone again: reported again, once.
    fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(pump.next(), Err(SourceError::Unavailable { .. })));
    fs::create_dir(&dir).unwrap();
    drop_in(&dir, "b.jpg", &jpeg(2, 16), 0);
    assert_eq!(pump.image().0, "b.jpg");
}

#[test]
fn image_dir_empty_and_unreadable_files_are_bad_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pump = watch(dir, After::Keep, 20);
    fs::write(dir.join("empty.jpg"), b"").unwrap();
    match pump.next() {
        Err(SourceError::BadRecord { reason, .. }) => {
            assert_eq!(reason, "empty.jpg: empty file")
        }
        other => panic!("expected the empty file, found {other:?}"),
    }
    // Decoding is not this source's job: any bytes are handed on.
    drop_in(dir, "text.jpg", b"not a jpeg", 0);
    assert_eq!(pump.image().1, b"not a jpeg");
    // The empty file filled later is read then.
    fs::write(dir.join("empty.jpg"), b"filled").unwrap();
    assert_eq!(pump.image().0, "empty.jpg");

    let locked = dir.join("locked.jpg");
    fs::write(&locked, b"secret").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(&locked).is_ok() {
        // Root reads anything: nothing to test here.
        return;
    }
    match pump.next() {
        Err(SourceError::BadRecord { reason, .. }) => {
            assert!(reason.starts_with("locked.jpg: cannot read it"), "{reason}")
        }
        other => panic!("expected the unreadable file, found {other:?}"),
    }
    drop_in(dir, "after.jpg", b"x", 0);
    assert_eq!(pump.image().0, "after.jpg", "not retried");
}

#[test]
fn image_dir_config() {
    let origin = Origin::new("cfg/edge.toml", Path::new("cfg"));
    let parse = |s: &str| toml::from_str::<SourceConfig>(s);
    let c = parse("kind = \"image_dir\"\npath = \"inbox\"\nafter = \"move:done\"").unwrap();
    let SourceConfig::ImageDir(ref dir) = c else {
        panic!("{c:?}")
    };
    assert_eq!(dir.after, After::Move("done".into()));
    assert_eq!(dir.poll_ms, 200);
    assert_eq!(dir.extensions, vec!["jpg", "jpeg", "png"]);
    assert!(c.images());
    assert_eq!(c.channels(&origin).unwrap(), None);
    let mut p = Problems::new(&origin);
    c.validate(&mut p);
    assert!(p.is_empty());

    let err = parse("kind = \"image_dir\"\npath = \"x\"\nafter = \"archive\"").unwrap_err();
    assert!(
        err.to_string()
            .contains("expected \"keep\", \"delete\" or \"move:DIR\""),
        "{err}"
    );
    assert!(parse("kind = \"image_dir\"\npath = \"x\"\nrecursive = true").is_err());

    let bad = parse(
        "kind = \"image_dir\"\npath = \"inbox\"\nafter = \"move:inbox\"\npoll_ms = 0\nextensions = [\".jpg\"]",
    )
    .unwrap();
    let mut p = Problems::new(&origin);
    bad.validate(&mut p);
    let fields: Vec<String> = p.into_vec().into_iter().map(|e| e.field).collect();
    assert_eq!(
        fields,
        vec!["source.poll_ms", "source.extensions[0]", "source.after"]
    );
}

fn mjpeg_file(dir: &Path, frames: &[Vec<u8>]) -> PathBuf {
    let path = dir.join("frames.mjpeg");
    fs::write(&path, frames.concat()).unwrap();
    path
}

fn frame_number(origin: &str) -> u64 {
    origin
        .strip_prefix("frame ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("origin {origin:?}"))
}

#[test]
fn mjpeg_file_yields_every_frame_then_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let f = frames(5);
    let path = mjpeg_file(tmp.path(), &f);
    let mut s = MjpegConfig::from_path(&path)
        .open(&Origin::default())
        .unwrap();
    assert!(!s.newest_only(), "a recording keeps every frame");
    assert!(s.paced());
    assert_eq!(s.channels(), None);
    for (i, want) in f.iter().enumerate() {
        let sample = s.next_sample().unwrap().unwrap();
        let frame = sample.frame.unwrap();
        assert_eq!(frame.origin, format!("frame {i}"));
        assert!(&frame.bytes == want, "frame {i}");
    }
    assert!(s.next_sample().unwrap().is_none());
    assert_eq!(s.skipped(), 0);
}

#[test]
fn mjpeg_every_nth_hands_out_frames_0_3_6() {
    let tmp = tempfile::tempdir().unwrap();
    let f = frames(10);
    let mut c = MjpegConfig::from_path(mjpeg_file(tmp.path(), &f));
    c.every_nth = 3;
    let mut s = c.open(&Origin::default()).unwrap();
    let mut got = Vec::new();
    while let Some(sample) = s.next_sample().unwrap() {
        let frame = sample.frame.unwrap();
        let n = frame_number(&frame.origin);
        assert!(frame.bytes == f[n as usize]);
        got.push(n);
    }
    assert_eq!(got, vec![0, 3, 6, 9]);
    assert_eq!(s.skipped(), 6);
}

#[test]
fn mjpeg_file_with_garbage_reports_it_and_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let f = frames(3);
    let path = tmp.path().join("bad.mjpeg");
    fs::write(
        &path,
        [&f[0][..], b"garbage", &f[1][..f[1].len() / 2], &f[2]].concat(),
    )
    .unwrap();
    let mut s = MjpegConfig::from_path(&path)
        .open(&Origin::default())
        .unwrap();
    let mut frames_seen = Vec::new();
    let mut bad = 0;
    loop {
        match s.next_sample() {
            Ok(Some(sample)) => frames_seen.push(sample.frame.unwrap().bytes),
            Ok(None) => break,
            Err(SourceError::BadRecord { .. }) => bad += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(frames_seen, vec![f[0].clone(), f[2].clone()]);
    assert_eq!(bad, 2, "the garbage and the cut frame");
}

/// A shell script writing `frames` (as files in `dir`) one after another,
/// `pause` seconds apart, then doing `then`.
fn pacer_script(dir: &Path, frames: &[Vec<u8>], pause: &str, then: &str) -> String {
    let mut script = String::new();
    for (i, f) in frames.iter().enumerate() {
        let p = dir.join(format!("f{i}.jpg"));
        fs::write(&p, f).unwrap();
        script.push_str(&format!("cat '{}'; sleep {pause}; ", p.display()));
    }
    script.push_str(then);
    script
}

#[test]
fn mjpeg_command_slow_consumer_gets_the_newest_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let f = frames(30);
    let script = pacer_script(tmp.path(), &f, "0.02", "exec sleep 30");
    let mut s = MjpegConfig::from_command(&["sh", "-c", &script])
        .open(&Origin::default())
        .unwrap();
    assert!(s.newest_only());
    let mut seen = Vec::new();
    loop {
        let sample = s.next_sample().unwrap().unwrap();
        let frame = sample.frame.unwrap();
        let n = frame_number(&frame.origin);
        assert!(frame.bytes == f[n as usize], "frame {n}");
        seen.push(n);
        if n == 29 {
            break;
        }
        // A model slower than the camera.
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(
        seen.windows(2).any(|w| w[1] > w[0] + 1),
        "the gaps show in the frame numbers: {seen:?}"
    );
    // Every frame was either handed out or skipped.
    assert_eq!(s.skipped(), 30 - seen.len() as u64, "{seen:?}");
}

#[test]
fn mjpeg_command_is_restarted_when_it_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let f = frames(3);
    let path = mjpeg_file(tmp.path(), &f);
    let script = format!("cat '{}'; echo bye >&2; sleep 0.2", path.display());
    let mut c = MjpegConfig::from_command(&["sh", "-c", &script]);
    c.restart_min_ms = 50;
    let mut s = c.open(&Origin::default()).unwrap();
    let mut restarts = 0;
    let mut numbers = Vec::new();
    while restarts < 2 || numbers.last().is_none_or(|&n| n < 6) {
        match s.next_sample() {
            Ok(Some(sample)) => {
                let frame = sample.frame.unwrap();
                let n = frame_number(&frame.origin);
                assert!(frame.bytes == f[(n % 3) as usize], "frame {n}");
                numbers.push(n);
            }
            Err(SourceError::Restarted { origin, reason }) => {
                assert_eq!(origin, "sh");
                assert!(reason.contains("exited"), "{reason}");
                assert!(reason.contains("last stderr line: bye"), "{reason}");
                restarts += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    // Numbers go on across restarts.
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
}

#[test]
fn mjpeg_missing_program_fails_at_open() {
    let err = MjpegConfig::from_command(&["/nonexistent/camera"])
        .open(&Origin::default())
        .unwrap_err();
    assert!(!err.is_recoverable());
    assert!(err.to_string().contains("cannot start"), "{err}");
}

#[test]
fn mjpeg_fifo_is_live_and_reopened_for_the_next_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("cam.fifo");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    let f = frames(5);
    let mut s = MjpegConfig::from_path(&fifo)
        .open(&Origin::default())
        .unwrap();
    assert!(s.newest_only());
    let writer = {
        let (fifo, f) = (fifo.clone(), f.clone());
        std::thread::spawn(move || {
            // Two writers in turn, as a camera program restarting.
            for part in [&f[..3], &f[3..]] {
                let mut w = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                for frame in part {
                    w.write_all(frame).unwrap();
                    std::thread::sleep(Duration::from_millis(30));
                }
            }
        })
    };
    let mut seen = Vec::new();
    while seen.last() != Some(&4) {
        let frame = s.next_sample().unwrap().unwrap().frame.unwrap();
        let n = frame_number(&frame.origin);
        assert!(frame.bytes == f[n as usize], "frame {n}");
        seen.push(n);
    }
    writer.join().unwrap();
    assert_eq!(s.skipped(), 5 - seen.len() as u64, "{seen:?}");
}

#[test]
fn mjpeg_max_fps_skips_frames_arriving_too_soon() {
    let tmp = tempfile::tempdir().unwrap();
    let f = frames(11);
    // Ten frames 20 ms apart, a pause, and one more.
    let script = pacer_script(tmp.path(), &f[..10], "0.02", "");
    let last = tmp.path().join("last.jpg");
    fs::write(&last, &f[10]).unwrap();
    let script = format!("{script}sleep 1; cat '{}'; exec sleep 30", last.display());
    let mut c = MjpegConfig::from_command(&["sh", "-c", &script]);
    c.max_fps = Some(2.0);
    let mut s = c.open(&Origin::default()).unwrap();
    // A consumer always waiting, so nothing is skipped for being busy: the
    // frames after the first come sooner than 1/max_fps after it.
    let mut seen = Vec::new();
    for _ in 0..2 {
        match s.next_sample() {
            Ok(Some(sample)) => seen.push(frame_number(&sample.frame.unwrap().origin)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen[1], 10, "{seen:?}");
    assert_eq!(s.skipped(), 9);
}

#[test]
fn mjpeg_config_in_source_config() {
    let origin = Origin::default();
    let c: SourceConfig = toml::from_str(
        "kind = \"mjpeg\"\ncommand = [\"rpicam-vid\", \"-t\", \"0\", \"--codec\", \"mjpeg\", \"-o\", \"-\"]\nmax_fps = 5.0",
    )
    .unwrap();
    assert!(c.images());
    assert_eq!(c.channels(&origin).unwrap(), None);
    assert_eq!(c.rate_hz(), None);
    let mut p = Problems::new(&origin);
    c.validate(&mut p);
    assert!(p.is_empty(), "{:?}", p.into_vec());
}
