//! Frames in JIT-compiled code named from the runtime's perf map (`/tmp/perf-PID.map`), live
//! and in a replay once the map is gone.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use memtrace_tests::{replay_json, require_root, require_tool, workspace_root, Scratch, Tracer};

/// Reads lines from a child's stdout until one that is `expected`.
fn wait_for_line(stdout: &mut impl BufRead, expected: &str) {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), expected);
}
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// The call-site group of the process's unreleased memory that holds `bytes` or more and
/// whose call site names `function`. Another group may hold as much: node's threads each
/// reserve a 64 MiB malloc arena (glibc's `alloc_new_heap`), and how many do varies by run.
fn group_of_at_least<'r>(report: &'r Value, pid: u64, bytes: u64, function: &str) -> &'r Value {
    let process = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|process| process["pid"].as_u64() == Some(pid))
        .unwrap_or_else(|| panic!("no process {pid}: {report:#}"));
    let large: Vec<&Value> = process["unreleased"]["by_stack"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|group| group["bytes"].as_u64().unwrap() >= bytes)
        .collect();
    large
        .iter()
        .find(|group| {
            group["call_site"]
                .as_str()
                .is_some_and(|call_site| call_site.contains(function))
        })
        .copied()
        .unwrap_or_else(|| {
            let call_sites: Vec<&str> = large
                .iter()
                .filter_map(|group| group["call_site"].as_str())
                .collect();
            panic!("no call site of {bytes} bytes names {function}: {call_sites:?}")
        })
}

/// The group names makeBuffers at its call site (the runtime's frames above it skipped),
/// from a frame in anonymous memory (JIT code, no module) that the perf map named.
fn assert_names_make_buffers(report: &Value, pid: u64, when: &str) {
    let group = group_of_at_least(report, pid, 40 * 4 * MIB, "makeBuffers");
    let call_site = group["call_site"].as_str().unwrap();
    let first = call_site.split(" ← ").next().unwrap();
    assert!(
        first.contains("makeBuffers"),
        "{when}: the call site is {call_site:?}"
    );
    let jit_frame = group["frames"].as_array().unwrap().iter().find(|frame| {
        frame["function"]
            .as_str()
            .is_some_and(|name| name.contains("makeBuffers"))
    });
    let jit_frame = jit_frame.unwrap_or_else(|| panic!("{when}: {group:#}"));
    assert!(jit_frame["module"].is_null(), "{when}: {jit_frame:#}");
    let process = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|process| process["pid"].as_u64() == Some(pid))
        .unwrap();
    assert_eq!(process["perf_map"], true, "{when}");
}

#[test]
fn node_frames_are_named_from_its_perf_map_live_and_in_a_replay() {
    require_root();
    let node = require_tool("node", "nodejs");
    let scratch = Scratch::new("jit-node");
    let script = workspace_root().join("tests/programs/jit_buffers.js");
    let mut child = Command::new(node)
        .args(["--perf-basic-prof", "--always-sparkplug"])
        .arg(&script)
        // Where node writes its isolate log.
        .current_dir(scratch.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting node");
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut stdout, "ready");

    let report_path = scratch.file("report.json");
    let recording = scratch.file("node.mtrace");
    let tracer = Tracer::attach(&[
        "--pid",
        &pid.to_string(),
        "--record",
        recording.to_str().unwrap(),
        "--format",
        "json",
        "-o",
        report_path.to_str().unwrap(),
    ]);
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    wait_for_line(&mut stdout, "kept 40");
    assert!(child.wait().unwrap().success());
    let (status, stderr) = tracer.wait(Duration::from_secs(60));
    assert!(status.success(), "memtrace failed: {stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_names_make_buffers(&report, pid.into(), "live");
    assert_eq!(
        report["lost"]["stacks_not_sampled"], 0,
        "{:#}",
        report["lost"]
    );

    // The replay names the frame from the recording: the perf map is gone.
    let perf_map = format!("/tmp/perf-{pid}.map");
    std::fs::remove_file(&perf_map).unwrap();
    assert!(!Path::new(&perf_map).exists());
    let (output, replayed) = replay_json(&scratch, &recording, &[]);
    assert!(output.status.success(), "{output:?}");
    assert_names_make_buffers(&replayed, pid.into(), "replay");
}

/// A JVM's compiled Java method, named from the perf map `jcmd PID Compiler.perfmap` writes.
/// The JIT code keeps frame pointers (-XX:+PreserveFramePointer, what profiling a JVM with
/// perf maps asks for: compiled Java frames have no CFI), and C1 compiles makeBuffers (C2
/// would drop the paths 4 MiB buffers take that the warm-up did not, and run them in the
/// interpreter).
#[test]
fn a_jvm_method_is_named_from_its_perf_map() {
    require_root();
    let (java, javac, jcmd) = (
        require_tool("java", "default-jdk-headless"),
        require_tool("javac", "default-jdk-headless"),
        require_tool("jcmd", "default-jdk-headless"),
    );
    let scratch = Scratch::new("jit-jvm");
    let source = workspace_root().join("tests/programs/Retainer.java");
    let compiled = Command::new(javac)
        .arg("-d")
        .arg(scratch.path())
        .arg(&source)
        .status()
        .unwrap();
    assert!(compiled.success());
    let mut child = Command::new(java)
        .args([
            "-XX:+PreserveFramePointer",
            "-XX:TieredStopAtLevel=1",
            "-cp",
        ])
        .arg(scratch.path())
        .arg("Retainer")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting java");
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut stdout, "ready");
    let perfmap = Command::new(jcmd)
        .args([&pid.to_string(), "Compiler.perfmap"])
        .output()
        .unwrap();
    assert!(perfmap.status.success(), "{perfmap:?}");
    let perf_map = format!("/tmp/perf-{pid}.map");
    assert!(Path::new(&perf_map).exists(), "jcmd wrote no {perf_map}");

    let report_path = scratch.file("report.json");
    let tracer = Tracer::attach(&[
        "--pid",
        &pid.to_string(),
        "--format",
        "json",
        "-o",
        report_path.to_str().unwrap(),
    ]);
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    wait_for_line(&mut stdout, "kept 40");
    assert!(child.wait().unwrap().success());
    let (status, stderr) = tracer.wait(Duration::from_secs(60));
    assert!(status.success(), "memtrace failed: {stderr}");
    let _ = std::fs::remove_file(&perf_map);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_names_make_buffers(&report, pid.into(), "live");
}
