//! Attaching to a service that has already grown, and watching what grows: a program leaking
//! like seed 000 (a memfd "doublemapper" mapped rw and r-x every 100 ms, fd closed, never
//! unmapped) while it churns 4 MiB buffers and keeps a fixed cache of 1 MiB buffers.

use std::process::Command;
use std::time::Duration;

use memtrace_tests::{
    process, program, replay_json, require_root, spawn_ready, Abi, Runtime, Scratch, Tracer,
};
use serde_json::Value;

/// The leak's rounds: 6 s of work, one every 100 ms (plus the work itself).
const ROUNDS: u64 = 60;
const VIEW_BYTES: u64 = 256 << 10;

/// The interval blocks' times (`--- +1.000s ---`), in seconds.
fn block_times(stderr: &str) -> Vec<f64> {
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix("--- +")?.strip_suffix("s ---"))
        .map(|seconds| seconds.parse().unwrap())
        .collect()
}

fn findings_of<'r>(report: &'r Value, kind: &str) -> Vec<&'r Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|finding| finding["kind"] == kind)
        .collect()
}

/// The unreleased memfd:doublemapper regions' creation times.
fn leaked_views(entry: &Value) -> Vec<u64> {
    entry["unreleased"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|group| group["name"] == "memfd:doublemapper")
        .flat_map(|group| group["regions"].as_array().unwrap())
        .map(|region| region["created_ns"].as_u64().unwrap())
        .collect()
}

#[test]
fn attach_to_a_grown_leaky_service_and_watch_it_grow() {
    require_root();
    let scratch = Scratch::new("growth");
    let service = program("leaky_service", Abi::X86_64, Runtime::Libc);
    let (mut target, ready) = spawn_ready(Command::new(&service).arg(ROUNDS.to_string()));
    assert_eq!(ready, "ready\n");
    // Let it grow before memtrace comes.
    std::thread::sleep(Duration::from_millis(1000));
    let pid = target.id();
    let report_path = scratch.file("report.json");
    let recording = scratch.file("session.mtr");
    let tracer = Tracer::attach(&[
        "--pid",
        &pid.to_string(),
        "--interval",
        "1",
        "--record",
        recording.to_str().unwrap(),
        "--format",
        "json",
        "-o",
        report_path.to_str().unwrap(),
    ]);
    let (status, stderr) = tracer.wait(Duration::from_secs(30));
    assert!(target.wait().unwrap().success());
    assert!(status.success(), "memtrace failed: {stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let entry = process(&report, u64::from(pid));

    // Every leaked mapping is counted, those from before attach included.
    let memfd = findings_of(&report, "unreleased-memfd");
    assert_eq!(memfd.len(), 1, "{:#}", report["findings"]);
    let memfd = memfd[0];
    assert_eq!(memfd["name"], "memfd:doublemapper");
    assert_eq!(memfd["regions"], 2 * ROUNDS, "{memfd:#}");
    let at_attach = memfd["at_attach"].as_u64().unwrap();
    let during = memfd["during_trace"].as_u64().unwrap();
    assert_eq!(at_attach + during, 2 * ROUNDS);
    assert!(
        at_attach >= 2 * 8 && at_attach.is_multiple_of(2),
        "about 10 rounds leaked before attach: {at_attach}"
    );

    // The growing finding names the leak with its true rate: the views created during the
    // trace, over the time they took.
    let growing = findings_of(&report, "growing");
    assert_eq!(
        growing.len(),
        1,
        "{:#}\n{}",
        report["findings"],
        entry["timeline"]
    );
    let growing = growing[0];
    assert_eq!(growing["group"], "memfd:doublemapper");
    // (The views found at attach are held since attach, not unreleased during the trace.)
    let mut created = leaked_views(entry);
    created.sort_unstable();
    let span_s = (created[created.len() - 1] - created[0]) as f64 / 1e9;
    // Each round maps two views a few µs apart: rounds are what a rate counts.
    let rounds = (created.len() as f64 / 2.0).round() - 1.0;
    let truth = rounds * 2.0 * VIEW_BYTES as f64 / span_s;
    let rate = growing["bytes_per_s"].as_f64().unwrap();
    assert!(
        (rate - truth).abs() / truth < 0.10,
        "growing at {rate:.0} B/s, truly {truth:.0} B/s"
    );
    assert_eq!(growing["regions"], 2 * ROUNDS);
    // Neither the churn nor the fixed cache (nor the memfd whose fd stays open) is flagged.
    assert!(findings_of(&report, "unreleased-anon").is_empty());
    let text = report["findings"].to_string();
    assert!(!text.contains("memfd:kept"), "{text}");

    // --interval 1: one block per second of the trace, each naming the service and the leak.
    let times = block_times(&stderr);
    let timeline = &entry["timeline"]["times_ns"];
    let traced_s = (timeline[timeline.as_array().unwrap().len() - 1]
        .as_u64()
        .unwrap()
        - timeline[0].as_u64().unwrap()) as f64
        / 1e9;
    assert!(
        (times.len() as f64 - traced_s.floor()).abs() <= 1.0 && !times.is_empty(),
        "{} blocks over {traced_s:.1}s:\n{stderr}",
        times.len()
    );
    for (index, time) in times.iter().enumerate() {
        assert!((time - (index + 1) as f64).abs() < 1e-9, "{times:?}");
    }
    let growing_lines = stderr
        .lines()
        .filter(|line| line.trim_start().starts_with("memfd:doublemapper"))
        .count();
    // Every block after the first (which shows the process as new) names the leak.
    assert!(growing_lines >= times.len() - 1, "{stderr}");

    // The replay reproduces the timeline and the findings.
    let (output, replayed) = replay_json(&scratch, &recording, &["--interval", "1"]);
    assert!(output.status.success());
    assert_eq!(replayed["findings"], report["findings"]);
    assert_eq!(
        process(&replayed, u64::from(pid))["timeline"],
        entry["timeline"]
    );
    let replay_stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!block_times(&replay_stderr).is_empty(), "{replay_stderr}");

    // --since A --until B: what was created in the window and is still mapped at B.
    let count_until = |until: &str| {
        let (_, report) = replay_json(&scratch, &recording, &["--until", until]);
        leaked_views(process(&report, u64::from(pid)))
    };
    let before = count_until("0.5");
    let at_end = count_until("1.5");
    let (_, window) = replay_json(&scratch, &recording, &["--since", "0.5", "--until", "1.5"]);
    let in_window = leaked_views(process(&window, u64::from(pid)));
    assert_eq!(in_window.len(), at_end.len() - before.len());
    assert!(in_window.len() >= 2 * 3, "{in_window:?}");
    let latest_before = before.iter().max().copied().unwrap_or(0);
    assert!(in_window.iter().all(|&created| created > latest_before));
}

/// The seconds a process's timeline spans: from the first sample to exit.
fn traced_seconds(entry: &Value) -> f64 {
    let times = entry["timeline"]["times_ns"].as_array().unwrap();
    let first = times[0].as_u64().unwrap();
    let last = times[times.len() - 1].as_u64().unwrap();
    (last - first) as f64 / 1e9
}

/// `--interval` in launch mode: a block per second while the command runs.
#[test]
fn interval_blocks_in_launch_mode() {
    require_root();
    let scratch = Scratch::new("growth-launch");
    let service = program("leaky_service", Abi::X86_64, Runtime::Libc);
    let run = memtrace_tests::memtrace_json(
        &scratch,
        &["--interval", "1", "--", service.to_str().unwrap(), "25"],
    );
    run.assert_success();
    let stderr = run.stderr();
    let times = block_times(&stderr);
    let entry = &memtrace_tests::processes_running(run.report(), "leaky_service-64")[0];
    // The first block comes a second after the exec, the first event.
    let expected = traced_seconds(entry).floor();
    assert!(
        (times.len() as f64 - expected).abs() <= 1.0 && !times.is_empty(),
        "{} blocks over {expected}s:\n{stderr}",
        times.len()
    );
    assert!(stderr.contains("memfd:doublemapper"), "{stderr}");
}
