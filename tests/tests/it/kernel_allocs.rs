//! `memtrace kernel`: kernel allocations by call site, against a real program's real pipes.
//!
//! tests/programs/pipes.c opens N pipes and keeps them, then opens and closes N more. Each
//! pipe is allocated by the kernel's `alloc_pipe_info`; traced in that process's context, the
//! call site must show N outstanding (±5%), not 2N, in the live report and in the replay of
//! its recording.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
};

use memtrace_tests::{attach, memtrace, program, replay_json, require_root, Abi, Runtime, Scratch};
use rstest::rstest;
use serde_json::Value;

const PIPES: u64 = 1000;

/// Runs pipes.c under `memtrace kernel --pid`, recording; returns the JSON report.
fn trace_pipes(scratch: &Scratch, abi: Abi) -> Value {
    let mut pipes = Command::new(program("pipes", abi, Runtime::Libc))
        .arg(PIPES.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting pipes");
    let mut lines = BufReader::new(pipes.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let pid = pipes.id().to_string();
    let report = scratch.file("kernel.json");
    let recording = scratch.file("kernel.mtr");
    let mut tracer = attach(&[
        "kernel",
        "--pid",
        &pid,
        "--duration",
        "2",
        "--interval",
        "0.5",
        "--format",
        "json",
        "-o",
        report.to_str().unwrap(),
        "--record",
        recording.to_str().unwrap(),
    ]);
    let mut stdin = pipes.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "done");
    let status = tracer.wait().unwrap();
    // The first N pipes were still open when memtrace took its last snapshot.
    drop(stdin);
    assert!(pipes.wait().unwrap().success());
    assert!(status.success(), "memtrace kernel failed: {status:?}");
    serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
}

/// The call sites in `alloc_pipe_info` (one per allocation it makes: the pipe, its buffers).
fn pipe_sites(report: &Value) -> Vec<&Value> {
    report["kernel"]["call_sites"]
        .as_array()
        .expect("kernel.call_sites")
        .iter()
        .filter(|site| {
            site["call_site"]
                .as_str()
                .is_some_and(|name| name.starts_with("alloc_pipe_info+"))
        })
        .collect()
}

#[track_caller]
fn assert_n_pipes_outstanding(report: &Value) {
    let sites = pipe_sites(report);
    assert!(
        !sites.is_empty(),
        "no alloc_pipe_info call site in {:#}",
        report["kernel"]["call_sites"]
    );
    let (low, high) = (PIPES * 95 / 100, PIPES * 105 / 100);
    for site in sites {
        let outstanding = site["outstanding"].as_u64().unwrap();
        assert!(
            (low..=high).contains(&outstanding),
            "{outstanding} outstanding at {site:#}, expected {PIPES} ±5% (the {PIPES} closed pipes must not count)"
        );
        assert!(site["bytes"].as_u64().unwrap() >= outstanding);
        assert!(
            site["cache"].as_str().unwrap().starts_with("kmalloc-"),
            "{site:#}"
        );
        assert_eq!(site["module"], Value::Null, "pipes are core kernel code");
    }
    let caches = report["kernel"]["caches"].as_array().unwrap();
    assert!(caches
        .iter()
        .any(|c| c["outstanding"].as_u64().unwrap() >= PIPES));
    let totals = report["kernel"]["totals"].as_array().unwrap();
    assert!(
        totals
            .iter()
            .any(|t| t["name"] == "Slab" && t["end"].as_u64().unwrap() > 0),
        "{totals:?}"
    );
}

#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn pipes_are_counted_once_and_replayed_alike(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("kernel-pipes-{}", abi.name()));
    let live = trace_pipes(&scratch, abi);
    assert_eq!(live["source"], "live");
    assert_n_pipes_outstanding(&live);

    let (output, replayed) = replay_json(&scratch, &scratch.file("kernel.mtr"), &[]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(replayed["source"], "replay");
    assert_eq!(replayed["kernel"], live["kernel"]);
    assert_eq!(replayed["findings"], live["findings"]);

    let text = memtrace(&["replay", scratch.file("kernel.mtr").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("by call site:"), "{text}");
    let line = text
        .lines()
        .find(|line| line.trim_start().starts_with("alloc_pipe_info+"))
        .unwrap_or_else(|| panic!("no alloc_pipe_info line in:\n{text}"));
    assert!(line.contains(" kmalloc-"), "{line}");
}

#[test]
fn follow_needs_a_process() {
    let output = memtrace(&["kernel", "--follow", "--duration", "1"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--follow needs --pid or a command"),
        "{stderr}"
    );
}
