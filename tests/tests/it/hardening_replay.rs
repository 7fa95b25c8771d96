//! Replay that ends, and says why (issue #29, rows 4 to 6): a pipe of zeros, a sparse file of
//! 20 GB, two recordings concatenated, a header spliced onto another recording's frames, a
//! frame or garbage after the trailer; memory exhaustion ends with one line; crafted
//! recordings of a million forks or mappings (memtrace_tests::crafted) replay; and a killed
//! replay's temporary is cleaned by the next run.

use std::{
    fs,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use memtrace_tests::crafted::{million_forks, million_mappings};
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

/// The crafted recordings replay whole, their text report (the default) or their JSON report
/// included, in under 256 MiB each (#29; `cargo xtask bench --footprint-only` prints the
/// figures too). Asserted: memory, not time, is the same from run to run for the same input
/// (1M forks: 229 MiB, 1M mappings: 160 MiB in either format when written; the text report
/// of the mappings took 503 MiB while it was built with every region listed).
#[test]
fn crafted_recordings_of_a_million_forks_or_mappings_replay() {
    const MAX_CRAFTED_KIB: u64 = 256 * 1024;
    let scratch = Scratch::new("crafted");
    for (name, bytes) in [("forks", million_forks()), ("mappings", million_mappings())] {
        let path = scratch.file(&format!("{name}.mtr"));
        fs::write(&path, &bytes).unwrap();
        for format in ["text", "json"] {
            let output = Command::new("/usr/bin/time")
                .args(["-f", "peak %M KiB"])
                .arg(memtrace_bin())
                .arg("replay")
                .arg(&path)
                .args(["--format", format, "-o", "/dev/null"])
                .output()
                .expect("/usr/bin/time (cargo xtask setup installs it)");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{name} ({format}): {stderr}");
            println!("{name} ({format}): {} bytes; {stderr}", bytes.len());
            let peak_kib: u64 = stderr
                .lines()
                .rev()
                .find_map(|line| {
                    line.strip_prefix("peak ")?
                        .strip_suffix(" KiB")?
                        .parse()
                        .ok()
                })
                .expect("/usr/bin/time's peak line");
            assert!(
                peak_kib < MAX_CRAFTED_KIB,
                "{name} ({format}): replay peaked at {peak_kib} KiB, over the goal of {MAX_CRAFTED_KIB} KiB"
            );
        }
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
