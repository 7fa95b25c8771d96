//! The kernel-mode benchmark: what `memtrace kernel` (system-wide) costs the other
//! processes on the machine. A pipe-heavy loop (tests/programs/pipe_loop.c) allocates and frees
//! kernel memory on every iteration; it runs untraced and with `memtrace kernel` attached, in
//! alternating pairs so that background load drifts hit both sides alike, and the median of
//! the paired ratios is reported.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, privilege, workspace::Workspace};

const ITERATIONS: u64 = 200_000;
const PAIRS: usize = 5;

pub fn measure(workspace: &Workspace, memtrace: &Path) -> Result<()> {
    let source = workspace.root.join("tests/programs/pipe_loop.c");
    let output_dir = workspace.xtask_dir();
    fs::create_dir_all(&output_dir)?;
    let workload = output_dir.join("pipe_loop");
    cmd::step("compiling the kernel-mode workload (tests/programs/pipe_loop.c)");
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Wextra", "-o"])
            .arg(&workload)
            .arg(&source),
    )?;
    cmd::step(format!(
        "timing pipe_loop {ITERATIONS} untraced and under `memtrace kernel`, {PAIRS} pairs"
    ));
    let mut ratios = Vec::new();
    let mut untraced_ns = Vec::new();
    let mut traced_ns = Vec::new();
    for _ in 0..PAIRS {
        let base = loop_ns(&workload)?;
        let traced = traced_loop_ns(memtrace, &workload)?;
        untraced_ns.push(base);
        traced_ns.push(traced);
        ratios.push(traced as f64 / base as f64);
    }
    ratios.sort_by(f64::total_cmp);
    let per_iteration = |values: &mut Vec<u64>| {
        values.sort_unstable();
        values[values.len() / 2] as f64 / ITERATIONS as f64
    };
    println!();
    println!("kernel mode (system-wide) seen by another process: pipe+write+read+close loop");
    println!(
        "  untraced {:.0} ns/iteration, traced {:.0} ns/iteration (medians)",
        per_iteration(&mut untraced_ns),
        per_iteration(&mut traced_ns)
    );
    println!(
        "  slowdown, median of {PAIRS} paired runs: {:.2}x (range {:.2}x..{:.2}x)",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    Ok(())
}

fn loop_ns(workload: &Path) -> Result<u64> {
    let output = Command::new(workload)
        .arg(ITERATIONS.to_string())
        .output()
        .context("running pipe_loop")?;
    if !output.status.success() {
        bail!(
            "pipe_loop failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("loop_ns ")?.trim().parse().ok())
        .context("pipe_loop printed no loop_ns")
}

/// Runs the workload while `memtrace kernel` traces the whole system, then stops memtrace.
fn traced_loop_ns(memtrace: &Path, workload: &Path) -> Result<u64> {
    let mut tracer = privilege::root_command(memtrace)?;
    tracer
        .args([
            "kernel",
            "--interval",
            "1",
            "--format",
            "json",
            "-o",
            "/dev/null",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut tracer = tracer.spawn().context("starting memtrace kernel")?;
    let mut first_line = String::new();
    BufReader::new(tracer.stderr.take().context("memtrace's stderr")?)
        .read_line(&mut first_line)?;
    if !first_line.contains("attached") {
        let _ = tracer.kill();
        bail!("memtrace kernel did not attach: {first_line}");
    }
    let result = loop_ns(workload);
    // SIGTERM ends the session cleanly (a report is written, the programs detach).
    let _ = Command::new("kill")
        .args(["-TERM", &tracer.id().to_string()])
        .status();
    let status = tracer.wait()?;
    if !status.success() {
        bail!("memtrace kernel failed: {status}");
    }
    std::thread::sleep(Duration::from_millis(100));
    result
}
