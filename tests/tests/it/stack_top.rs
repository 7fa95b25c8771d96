//! A call stack is whole however near the stack's top main's frame sits.
//!
//! A sample copies up to 8 KiB from the stack pointer. Where the stack's end lies nearer than
//! that (main's frame near the top: a small environment, and ASLR's random offset of the
//! stack top), the copy used to fall back to a fixed 4 KiB or 1 KiB that stopped before
//! `_start` in some runs and not in others. Here the depth of the allocating call below main
//! moves the syscall's stack pointer across those 8 KiB, with an empty environment and a
//! large one; every run's stack must reach `_start`, and say it is whole.

use std::process::Command;

use memtrace_tests::{memtrace_bin, processes, program, require_root, Abi, Runtime, Scratch};
use serde_json::Value;

/// The functions of the call-site group that holds stack_depth's leaked block.
fn leaking_stack(report: &Value) -> (Vec<String>, Value) {
    let process = &processes(report)[0];
    let groups = process["unreleased"]["by_stack"]
        .as_array()
        .expect("unreleased.by_stack");
    let group = groups
        .iter()
        .find(|group| {
            group["call_site"]
                .as_str()
                .unwrap_or("")
                .contains("leak_block")
        })
        .unwrap_or_else(|| panic!("no call site through leak_block: {groups:#?}"));
    let functions = group["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|frame| frame["function"].as_str().unwrap_or("?").to_string())
        .collect();
    (functions, group.clone())
}

#[test]
fn stacks_near_the_top_reach_start_whatever_the_depth() {
    require_root();
    let scratch = Scratch::new("stack-top");
    let exe = program("stack_depth", Abi::X86_64, Runtime::LibcNoFramePointers);
    let report_path = scratch.file("report.json");
    for environment in [0, 6000] {
        // Depths in steps that do not divide the page size, so the stack pointer lands at
        // many offsets in its page, from a shallow call to one near the copy's reach.
        for depth in (0..7600).step_by(300) {
            let _ = std::fs::remove_file(&report_path);
            let output = Command::new(memtrace_bin())
                .env_clear()
                .env("PAD", "x".repeat(environment))
                .args(["--format", "json", "-o"])
                .arg(&report_path)
                .arg("--")
                .arg(&exe)
                .arg(depth.to_string())
                .output()
                .expect("running memtrace");
            assert!(
                output.status.success(),
                "memtrace failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let report: Value =
                serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
            let (functions, group) = leaking_stack(&report);
            let case = format!("depth {depth}, environment of {environment} bytes");
            assert!(
                functions.iter().any(|function| function == "at_depth")
                    && functions.iter().any(|function| function == "main"),
                "{case}: {functions:?}"
            );
            assert_eq!(
                functions.last().map(String::as_str),
                Some("_start"),
                "{case}: the stack ends at {functions:?}"
            );
            assert_eq!(
                group["truncated"], false,
                "{case}: a whole stack is not reported cut short: {group:#}"
            );
        }
    }
}
