//! Replay that ends, and says why (issue #29, rows 4 to 6): a pipe of zeros, a sparse file of
//! 20 GB, two recordings concatenated, a header spliced onto another recording's frames, a
//! frame or garbage after the trailer; memory exhaustion ends with one line; crafted
//! recordings of a million forks or mappings (written here from docs/recording-format.md)
//! replay; and a killed replay's temporary is cleaned by the next run.

use std::{
    fs,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use memtrace_tests::{memtrace_bin, record_mmap_loop, recording_frames, require_root, Scratch};

/// `memtrace replay` of `input` (a path, or stdin from `stdin`), with a hang detector: a replay
/// that has not ended after 30 s is killed and fails the test. (Speed is the bench's; this
/// only catches a replay that never ends.)
fn replay(input: &Path, stdin: Option<Stdio>, extra: &[&str]) -> Output {
    let mut command = Command::new(memtrace_bin());
    command
        .arg("replay")
        .arg(input)
        .args(["-o", "/dev/null"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(stdin) = stdin {
        command.stdin(stdin);
    }
    let mut child = command.spawn().unwrap();
    let give_up = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > give_up {
            let _ = child.kill();
            panic!("replay of {} did not end", input.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[track_caller]
fn assert_damaged(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn zeros_after_the_last_frame_end_the_replay_at_once() {
    require_root();
    let scratch = Scratch::new("zero-tail");
    let recording = record_mmap_loop(&scratch, "a.mtr", "50");
    let bytes = fs::read(&recording).unwrap();
    let head = scratch.file("head.mtr");
    let first_frames = recording_frames(&bytes)[1].1;
    fs::write(&head, &bytes[..first_frames]).unwrap();

    // A pipe that never ends: the head, then /dev/zero.
    let mut pipe = Command::new("sh")
        .arg("-c")
        .arg(format!("cat {}; exec cat /dev/zero", head.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = Stdio::from(pipe.stdout.take().unwrap());
    let output = replay(Path::new("/dev/stdin"), Some(stdin), &[]);
    let _ = pipe.kill();
    let _ = pipe.wait();
    assert_damaged(&output, &format!("at byte {first_frames}"));

    // The same head extended to 20 GB, sparsely (no disk space is used).
    let sparse = fs::OpenOptions::new().append(true).open(&head).unwrap();
    sparse.set_len(20 << 30).unwrap();
    drop(sparse);
    let started = Instant::now();
    let output = replay(&head, None, &[]);
    assert_damaged(&output, &format!("at byte {first_frames}"));
    println!(
        "a 20 GB sparse tail: replay ended in {:?}",
        started.elapsed()
    );
}

#[test]
fn whatever_follows_the_trailer_fails_the_replay() {
    require_root();
    let scratch = Scratch::new("after-trailer");
    let a = fs::read(record_mmap_loop(&scratch, "a.mtr", "20")).unwrap();
    let b = fs::read(record_mmap_loop(&scratch, "b.mtr", "300")).unwrap();
    let b_frames = recording_frames(&b);
    let extra_frame = &b[b_frames[1].0..b_frames[1].1];
    for (name, bytes, expected) in [
        (
            "concatenated",
            [&a[..], &b[..]].concat(),
            format!("a second recording follows the trailer at byte {}", a.len()),
        ),
        (
            "frame",
            [&a[..], extra_frame].concat(),
            format!("a frame follows the trailer at byte {}", a.len()),
        ),
        (
            "garbage",
            [&a[..], b"not a frame"].concat(),
            format!("unknown bytes follow the trailer at byte {}", a.len()),
        ),
    ] {
        let path = scratch.file(name);
        fs::write(&path, bytes).unwrap();
        assert_damaged(&replay(&path, None, &[]), &expected);
    }

    // a's header on b's frames and trailer: every frame fails a's seal.
    let a_header = recording_frames(&a)[0].1;
    let spliced = [&a[..a_header], &b[b_frames[1].0..]].concat();
    let path = scratch.file("spliced");
    fs::write(&path, spliced).unwrap();
    let output = replay(&path, None, &["--format", "json"]);
    assert_damaged(
        &output,
        &format!(
            "{} corrupt frames skipped (damaged, or not of this recording's session",
            b_frames.len() - 1
        ),
    );
}

/// Writes recordings from docs/recording-format.md, version 3, as an attacker would craft
/// them: frames of plain events, sealed with a session id.
struct Crafted {
    bytes: Vec<u8>,
    session: [u8; 16],
}

impl Crafted {
    fn new() -> Self {
        let session = [0x5a; 16];
        let mut bytes = b"MEMTRACE".to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&session);
        let mut crafted = Self { bytes, session };
        // Header: kernel release, started by, clock base, command line, mode (user), no backend.
        let mut header = Vec::new();
        for text in ["6.18", "crafted"] {
            put_str(&mut header, text);
        }
        put_varint(&mut header, 1_000);
        put_varint(&mut header, 0);
        put_varint(&mut header, 1);
        put_str(&mut header, "crafted");
        header.extend_from_slice(&[1, 0]);
        crafted.frame(1, &header);
        crafted
    }

    fn frame(&mut self, frame_type: u8, payload: &[u8]) {
        self.bytes.extend_from_slice(&[0xfa, 0xce]);
        self.bytes
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.bytes.push(frame_type);
        self.bytes.extend_from_slice(payload);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.session);
        crc.update(&[frame_type]);
        crc.update(payload);
        self.bytes.extend_from_slice(&crc.finalize().to_le_bytes());
    }

    /// `events` bodies (kind, body bytes) from thread 1000 of process 1000, 4096 a frame; an
    /// attach layout of process 1000 first, then a trailer.
    fn events(mut self, count: usize, event: impl Fn(usize) -> (u8, Vec<u8>)) -> Vec<u8> {
        let mut sequence = 0;
        let mut first_event = 0;
        let mut index = 0;
        while index < count {
            let mut body = Vec::new();
            let mut in_frame = 0;
            // The first event names its thread and identity; the rest repeat them.
            let put = |body: &mut Vec<u8>, kind: u8, rest: &[u8], first: bool| {
                body.push(kind | 1 << 3 | if first { 0x60 } else { 0 });
                put_varint(body, 20); // time delta, zigzag 10
                if first {
                    put_varint(body, 1000);
                    put_varint(body, 1000);
                    put_str(body, "crafted");
                }
                body.extend_from_slice(rest);
            };
            if sequence == 0 {
                // Attach layout: start_brk, brk, ppid, exe, no regions, no memfds.
                let mut attach = vec![0, 0, 1];
                put_str(&mut attach, "/crafted");
                attach.extend_from_slice(&[0, 0]);
                put(&mut body, 5, &attach, true);
                in_frame += 1;
            }
            while index < count && in_frame < 4096 {
                let (kind, rest) = event(index);
                put(&mut body, kind, &rest, in_frame == 0);
                in_frame += 1;
                index += 1;
            }
            let mut payload = Vec::new();
            put_varint(&mut payload, sequence);
            put_varint(&mut payload, first_event);
            put_varint(&mut payload, in_frame);
            payload.push(0);
            payload.extend_from_slice(&body);
            self.frame(2, &payload);
            sequence += 1;
            first_event += in_frame;
        }
        let mut trailer = Vec::new();
        for value in [first_event, 0, 0, sequence, 0] {
            put_varint(&mut trailer, value);
        }
        self.frame(3, &trailer);
        self.bytes
    }
}

fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push(value as u8 | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn put_signed(buf: &mut Vec<u8>, value: i64) {
    put_varint(buf, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_str(buf: &mut Vec<u8>, text: &str) {
    put_varint(buf, text.len() as u64);
    buf.extend_from_slice(text.as_bytes());
}

/// A million forks of children that never run, in about 9 MB.
fn million_forks() -> Vec<u8> {
    Crafted::new().events(1_000_000, |index| {
        let mut fork = Vec::new();
        put_varint(&mut fork, 2_000 + index as u64);
        put_varint(&mut fork, 2_000 + index as u64);
        fork.push(0);
        (1, fork)
    })
}

/// A million anonymous pages mapped and never unmapped, in about 17 MB.
fn million_mappings() -> Vec<u8> {
    Crafted::new().events(1_000_000, |index| {
        let mut mmap = vec![1];
        let address = 0x1_0000_0000 + index as i64 * 0x2000;
        for argument in [0, 4096, 3, 0x22, -1, 0] {
            put_signed(&mut mmap, argument);
        }
        put_signed(&mut mmap, address);
        put_signed(&mut mmap, 100);
        (0, mmap)
    })
}

/// `memtrace ARGS` under `ulimit -v KIB`.
fn limited(kib: u64, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(memtrace_bin())
        .args(args)
        .output()
        .unwrap()
}

#[track_caller]
fn assert_out_of_memory(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("memtrace: out of memory: an allocation of "),
        "{stderr}"
    );
}

#[test]
fn running_out_of_memory_ends_with_one_line() {
    require_root();
    // Address space too small to load the probes: one line, whatever failed first (an
    // allocation, a ring buffer's mapping).
    for kib in [20_000, 30_000, 40_000, 45_000, 60_000] {
        let output = limited(kib, &["-o", "/dev/null", "--", "true"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{kib} KiB: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{kib} KiB: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A crafted recording whose model outgrows the limit: the allocator's line.
    let scratch = Scratch::new("oom-replay");
    let crafted = scratch.file("mappings.mtr");
    fs::write(&crafted, million_mappings()).unwrap();
    assert_out_of_memory(&limited(
        60_000,
        &["replay", crafted.to_str().unwrap(), "-o", "/dev/null"],
    ));
}

/// The crafted recordings replay whole; their peak memory is printed (the bench holds the
/// goal of 256 MB).
#[test]
fn crafted_recordings_of_a_million_forks_or_mappings_replay() {
    let scratch = Scratch::new("crafted");
    for (name, bytes) in [("forks", million_forks()), ("mappings", million_mappings())] {
        let path = scratch.file(&format!("{name}.mtr"));
        fs::write(&path, &bytes).unwrap();
        let output = Command::new("/usr/bin/time")
            .args(["-f", "peak %M KiB"])
            .arg(memtrace_bin())
            .arg("replay")
            .arg(&path)
            .args(["--format", "json", "-o", "/dev/null"])
            .output()
            .expect("/usr/bin/time (cargo xtask setup installs it)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{name}: {stderr}");
        println!("{name}: {} bytes; {stderr}", bytes.len());
    }
}

/// A replay killed while it writes its report leaves a temporary beside the target; the next
/// run in that directory removes it.
#[test]
fn a_killed_runs_temporary_is_removed_by_the_next() {
    let scratch = Scratch::new("killed-temporary");
    let crafted = scratch.file("mappings.mtr");
    fs::write(&crafted, million_mappings()).unwrap();
    let out = scratch.file("out");
    fs::create_dir(&out).unwrap();
    let temporaries = || {
        fs::read_dir(&out)
            .unwrap()
            .filter_map(|entry| entry.ok())
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".memtrace-")
            })
            .count()
    };
    let mut child = Command::new(memtrace_bin())
        .arg("replay")
        .arg(&crafted)
        .args(["--format", "json", "--show-layout", "-o"])
        .arg(out.join("report.json"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let give_up = Instant::now() + Duration::from_secs(60);
    while temporaries() == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the replay ended first"
        );
        assert!(Instant::now() < give_up, "no temporary appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(temporaries(), 1);
    // Any run that checks an output in that directory: this one then fails to open its input.
    let next = Command::new(memtrace_bin())
        .args(["replay", "/nonexistent.mtr", "-o"])
        .arg(out.join("other.json"))
        .output()
        .unwrap();
    assert!(!next.status.success());
    assert_eq!(
        temporaries(),
        0,
        "the killed run's temporary is still there"
    );
}
