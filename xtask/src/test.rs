//! `cargo xtask test`: what CI runs. Build, then formatting, lints and the test suite, the
//! integration tests driving the freshly built binary.

use std::{ffi::OsString, process::Command, time::Instant};

use anyhow::{bail, Result};

use crate::{
    build, cmd, dist, privilege,
    setup::{self, Purpose},
    vm_matrix,
    workspace::Workspace,
};

/// Built for bpfel-unknown-none only (through memtrace/build.rs): a `no_std` crate that cannot
/// build for the host ("unwinding panics are not supported without std"), so the host's clippy
/// and tests leave it out and it is linted on its own target with nightly.
const EBPF_PACKAGE: &str = "memtrace-ebpf";

pub fn test(
    workspace: &Workspace,
    kernels: &[String],
    cargo_test_args: Vec<OsString>,
) -> Result<()> {
    let started = Instant::now();
    // Before the build, so a mistyped label fails at once.
    let kernels = vm_matrix::select(kernels)?;
    setup::setup(workspace, Purpose::Test)?;
    let memtrace_binary = build::build(workspace)?;
    // tests/tests/it/static_binary.rs runs the shipped static binary in an old userland.
    let dist = dist::dist(workspace)?;
    if !privilege::is_root()? {
        cmd::step("note: not root, so tests that load BPF programs cannot run for real");
    }

    let mut format = workspace.cargo();
    format.args(["fmt", "--all", "--", "--check"]);

    let mut lint = workspace.cargo();
    lint.args([
        "clippy",
        "--workspace",
        "--exclude",
        EBPF_PACKAGE,
        "--all-targets",
    ])
    .args(["--", "-D", "warnings"]);

    let mut lint_ebpf = Command::new("cargo");
    lint_ebpf
        .current_dir(workspace.root.join(EBPF_PACKAGE))
        .args([
            "+nightly",
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(workspace.xtask_dir().join("ebpf-clippy"))
        .args(["--", "-D", "warnings"]);

    let mut test = workspace.cargo();
    // --no-fail-fast: one failing test binary should not hide the others' results.
    test.args(["test", "--workspace", "--exclude", EBPF_PACKAGE])
        .arg("--no-fail-fast")
        .args(&cargo_test_args)
        .env("MEMTRACE_BIN", &memtrace_binary)
        .env("MEMTRACE_DIST_BIN", &dist.binary);

    // The fuzz target is a workspace of its own (it builds with nightly and sanitizers under
    // `cargo xtask fuzz`), so nothing above compiles it: a changed signature would go unseen
    // until someone fuzzes. A plain check keeps it building.
    let mut check_fuzz = Command::new("cargo");
    check_fuzz
        .current_dir(workspace.root.join("fuzz"))
        .args(["check", "--bins"])
        // The replay target needs no eBPF object.
        .env("AYA_BUILD_SKIP", "1");

    let checks: [(&str, &str, Command); 5] = [
        ("fmt", "checking formatting", format),
        ("clippy", "linting (warnings are errors)", lint),
        (
            "clippy-ebpf",
            "linting the eBPF programs for their own target",
            lint_ebpf,
        ),
        (
            "fuzz-build",
            "checking that the fuzz target builds",
            check_fuzz,
        ),
        (
            "test",
            "running the test suite against the release binary",
            test,
        ),
    ];
    // Every check runs even after one fails, so one CI run reports all of them.
    let mut failed = Vec::new();
    // How long each step took, said at the end: where a slow CI run spent its time.
    let mut took = vec![("setup, build and dist", started.elapsed())];
    for (name, description, mut command) in checks {
        cmd::step(description);
        let step_started = Instant::now();
        if let Err(error) = cmd::run(&mut command) {
            println!("xtask: {name} failed: {error:#}");
            failed.push(name);
        }
        took.push((name, step_started.elapsed()));
    }
    // The same tests on other kernels, in guests (vm_matrix.rs).
    cmd::step("running the kernel matrix");
    let step_started = Instant::now();
    if let Err(error) = vm_matrix::run(workspace, &memtrace_binary, &kernels) {
        println!("xtask: kernel-matrix failed: {error:#}");
        failed.push("kernel-matrix");
    }
    took.push(("kernel-matrix", step_started.elapsed()));
    let took: Vec<String> = took
        .iter()
        .map(|(name, elapsed)| format!("{name} {} s", elapsed.as_secs()))
        .collect();
    cmd::step(format!(
        "steps took: {} ({} s in all)",
        took.join(", "),
        started.elapsed().as_secs()
    ));
    if !failed.is_empty() {
        bail!("failed steps: {}", failed.join(", "));
    }
    cmd::step("all checks passed");
    Ok(())
}
