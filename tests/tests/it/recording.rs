//! Recording on one run and replaying anywhere: identical reports, private files, and
//! damaged recordings that still give what they hold.

use std::{
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::Duration,
};

use memtrace_tests::{
    memtrace, memtrace_bin, memtrace_json, processes, program, replay_json, require_root, Abi,
    Runtime, Scratch,
};
use serde_json::Value;

#[track_caller]
fn assert_same_report_but_source(live: &Value, replayed: &Value) {
    assert_eq!(live["source"], "live");
    assert_eq!(replayed["source"], "replay");
    let mut live = live.clone();
    let mut replayed = replayed.clone();
    live["source"] = Value::Null;
    replayed["source"] = Value::Null;
    // How the syscalls were hooked travels in the recording: the replay says it too.
    assert!(
        live == replayed,
        "replay differs from the live run:\nlive: {live:#}\nreplay: {replayed:#}"
    );
}

fn live_equals_replay(parent_abi: Abi, child_abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!(
        "replay-{}-{}",
        parent_abi.name(),
        child_abi.name()
    ));
    let recording = scratch.file("session.mtr");
    let parent = program("exec_child", parent_abi, Runtime::Libc);
    let child = program("doublemapper", child_abi, Runtime::Libc);
    let run = memtrace_json(
        &scratch,
        &[
            "--follow",
            "--record",
            recording.to_str().unwrap(),
            "--",
            parent.to_str().unwrap(),
            child.to_str().unwrap(),
            "4",
        ],
    );
    run.assert_success();
    let mode = std::fs::metadata(&recording).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "layouts defeat ASLR: recordings are private");
    let report_mode = std::fs::metadata(scratch.file("report.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(report_mode, 0o600, "and so are reports written with -o");
    let (output, replayed) = replay_json(&scratch, &recording, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_same_report_but_source(run.report(), &replayed);
}

#[test]
fn replay_of_64_bit_programs_equals_the_live_report() {
    live_equals_replay(Abi::X86_64, Abi::X86_64);
}

#[test]
fn replay_of_a_32_to_64_bit_exec_equals_the_live_report() {
    live_equals_replay(Abi::I386, Abi::X86_64);
}

#[test]
fn replay_can_stop_early_and_pick_processes() {
    require_root();
    let scratch = Scratch::new("replay-until");
    let recording = scratch.file("session.mtr");
    let forktree = program("forktree", Abi::X86_64, Runtime::Libc);
    memtrace_json(
        &scratch,
        &[
            "--follow",
            "--record",
            recording.to_str().unwrap(),
            "--",
            forktree.to_str().unwrap(),
        ],
    )
    .assert_success();
    let (_, everything) = replay_json(&scratch, &recording, &[]);
    let first = processes(&everything)[0]["pid"].as_u64().unwrap();
    let (output, picked) = replay_json(&scratch, &recording, &["--pid", &first.to_string()]);
    assert!(output.status.success());
    assert_eq!(processes(&picked).len(), 1);
    assert_eq!(processes(&picked)[0]["pid"], first);
    // At second 0 of the session nothing has happened yet.
    let (output, at_start) = replay_json(&scratch, &recording, &["--until", "0"]);
    assert!(output.status.success());
    assert!(at_start["events"].as_u64().unwrap() < everything["events"].as_u64().unwrap());
}

/// A recorder killed with SIGKILL leaves a file without a trailer: replay gives every
/// complete frame, says where the data ends, and exits non-zero.
#[test]
fn a_recording_cut_by_kill_9_replays_what_was_written() {
    require_root();
    let scratch = Scratch::new("kill-9");
    let recording = scratch.file("session.mtr");
    let flood = program("flood", Abi::X86_64, Runtime::Bare);
    let mut tracer = Command::new(memtrace_bin())
        .args([
            "--record",
            recording.to_str().unwrap(),
            "--format",
            "json",
            "-o",
            "/dev/null",
            "--",
        ])
        .arg(&flood)
        .arg("400000000")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Until the once-a-second flush has written frames: a fixed wait is not enough on a
    // loaded machine, where loading the probes alone can take seconds.
    let started = std::time::Instant::now();
    while std::fs::metadata(&recording).map_or(0, |m| m.len()) < 256 << 10 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the recording never grew"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The flood is memtrace's child; killing it by name would also kill the flood of a test
    // running in parallel.
    let flood_pid = Command::new("pgrep")
        .args(["-P", &tracer.id().to_string()])
        .output()
        .unwrap();
    tracer.kill().unwrap();
    tracer.wait().unwrap();
    for pid in String::from_utf8_lossy(&flood_pid.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }

    let (output, replayed) = replay_json(&scratch, &recording, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("truncated after"), "{stderr}");
    let events = replayed["events"].as_u64().unwrap();
    assert!(
        events > 10_000,
        "the flushed frames replay: {events} events"
    );
    assert_eq!(processes(&replayed).len(), 1);
}

#[test]
fn a_corrupted_frame_is_skipped_and_counted() {
    require_root();
    let scratch = Scratch::new("corrupt");
    let recording = scratch.file("session.mtr");
    let flood = program("flood", Abi::X86_64, Runtime::Bare);
    memtrace_json(
        &scratch,
        &[
            "--record",
            recording.to_str().unwrap(),
            "--",
            flood.to_str().unwrap(),
            "50000",
        ],
    )
    .assert_success();
    let mut bytes = std::fs::read(&recording).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&recording, &bytes).unwrap();
    let (output, replayed) = replay_json(&scratch, &recording, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("corrupt frame") || stderr.contains("corrupt at byte"),
        "{stderr}"
    );
    assert!(replayed["events"].as_u64().unwrap() > 0);
}

#[test]
fn files_that_are_not_recordings_get_one_line() {
    let scratch = Scratch::new("not-a-recording");
    let path = scratch.file("notes.txt");
    std::fs::write(&path, "hello, this is text\n").unwrap();
    let output = memtrace(&["replay", path.to_str().unwrap()]);
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "memtrace: not a memtrace recording: bad magic\n"
    );

    let future = scratch.file("future.mtr");
    let mut bytes = b"MEMTRACE".to_vec();
    bytes.extend(7u32.to_le_bytes());
    std::fs::write(&future, bytes).unwrap();
    let output = memtrace(&["replay", future.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("version 7"), "{stderr}");

    let output = memtrace(&["replay", scratch.file("missing.mtr").to_str().unwrap()]);
    assert!(!output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stderr).lines().count(), 1);
}
