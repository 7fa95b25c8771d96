//! Bad input: one clear line on stderr and a non-zero exit.

use std::process::Command;

use memtrace_tests::{assert_one_line_error, memtrace, memtrace_bin, require_root};

#[test]
fn unknown_pid() {
    require_root();
    // Above the largest pid the kernel hands out.
    let output = memtrace(&["--pid", "4194304"]);
    assert_one_line_error(&output, "memtrace: no such process: 4194304");
}

#[test]
fn nothing_to_trace() {
    let output = memtrace(&[]);
    assert_one_line_error(&output, "nothing to trace");
}

#[test]
fn ring_buffer_size_must_be_a_power_of_two() {
    require_root();
    let output = memtrace(&["--ring-buffer-size", "5000", "--", "true"]);
    assert_one_line_error(&output, "--ring-buffer-size 5000 must be a power of two");
}

#[test]
fn not_root_names_the_missing_capabilities() {
    require_root();
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(memtrace_bin())
        .args(["--", "true"])
        .output()
        .expect("setpriv (util-linux) runs memtrace as nobody");
    assert_one_line_error(
        &output,
        "needs root, or the CAP_BPF and CAP_PERFMON capabilities",
    );
}

#[test]
fn a_command_that_cannot_run() {
    require_root();
    let output = memtrace(&["--", "/nonexistent/program"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot run /nonexistent/program"),
        "{stderr}"
    );
}
