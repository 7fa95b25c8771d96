//! What memtrace's syscall programs cost next to the kernel's own hook.
//!
//! Once any program is attached to the raw `sys_enter`/`sys_exit` tracepoints, every syscall of
//! every process takes the kernel's slow path: that cost (the floor) comes with the hook, not
//! with memtrace. So memtrace is measured against two empty programs on the same hooks
//! (`memtrace hook-floor -- CMD`), in the same run, on two workloads:
//! - traced: tests/programs/mmap_loop.c under memtrace (every call is one it reports);
//! - bystander: tests/programs/getppid_loop.c, a process memtrace does not trace, making a
//!   syscall it never traces, while memtrace traces an idle process (what everyone else on the
//!   machine pays).
//!
//! The three configurations run interleaved, round after round, so that a change in the
//! machine's load hits them alike; the figure is each workload's CPU time per syscall (it
//! excludes the time spent waiting for a CPU on a busy machine), median over the rounds.
//! memtrace runs with `--backend raw-tracepoint`: the floor is that backend's floor.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use super::{median, read_event_counts, ScratchDir};
use crate::{cmd, privilege, workspace::Workspace};

/// memtrace ÷ floor, the goal for both workloads.
const TARGET_RATIO_TO_FLOOR: f64 = 1.05;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Untraced,
    Floor,
    Memtrace,
}

const HOOKS: [Hook; 3] = [Hook::Untraced, Hook::Floor, Hook::Memtrace];

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::Floor => "floor",
            Self::Memtrace => "memtrace",
        }
    }
}

struct Workloads {
    mmap_loop: PathBuf,
    getppid_loop: PathBuf,
}

/// CPU ns per syscall of one round: `[traced, bystander]`.
type Round = [f64; 2];

pub fn measure(
    workspace: &Workspace,
    memtrace: &Path,
    mmap_loop: &Path,
    getppid_calls: u64,
    rounds: u32,
    scratch: &ScratchDir,
) -> Result<()> {
    let workloads = Workloads {
        mmap_loop: mmap_loop.to_owned(),
        getppid_loop: compile(workspace, "getppid_loop")?,
    };
    // At least 5 rounds: medians of fewer say little on a shared machine.
    let rounds = rounds.max(5);
    cmd::step(format!(
        "timing the hook's cost: {rounds} interleaved rounds of untraced / empty programs (floor) \
         / memtrace --backend raw-tracepoint"
    ));
    // An mmap+munmap pair costs some 20 getppid calls: a quarter as many keeps the rounds short.
    let mmap_iterations = (getppid_calls / 4).max(1);
    let mut results: Vec<(Hook, Round)> = Vec::new();
    for round in 0..rounds {
        for hook in HOOKS {
            let report = scratch
                .path
                .join(format!("hook-{round}-{}.json", hook.name()));
            let traced = traced_loop(
                hook,
                memtrace,
                &workloads.mmap_loop,
                mmap_iterations,
                &report,
            )?;
            let bystander = bystander_loop(hook, memtrace, &workloads.getppid_loop, getppid_calls)?;
            results.push((hook, [traced, bystander]));
        }
    }
    print(&results, rounds, mmap_iterations, getppid_calls);
    Ok(())
}

fn compile(workspace: &Workspace, name: &str) -> Result<PathBuf> {
    let binary = workspace.xtask_dir().join(name);
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Wextra", "-o"])
            .arg(&binary)
            .arg(workspace.root.join(format!("tests/programs/{name}.c"))),
    )?;
    Ok(binary)
}

/// CPU ns per syscall of the mmap/munmap loop, run under `hook`. Under memtrace the report
/// must hold every call, or the figure would flatter a tracer that drops events.
fn traced_loop(
    hook: Hook,
    memtrace: &Path,
    workload: &Path,
    iterations: u64,
    report: &Path,
) -> Result<f64> {
    let mut command = match hook {
        Hook::Untraced => Command::new(workload),
        Hook::Floor => floor_command(memtrace, workload)?,
        Hook::Memtrace => {
            let mut command = privilege::root_command(memtrace)?;
            command
                .args(["--backend", "raw-tracepoint", "--format", "json", "-o"])
                .arg(report)
                .arg("--")
                .arg(workload);
            command
        }
    };
    let cpu_ns = cpu_ns(command.arg(iterations.to_string()))?;
    if hook == Hook::Memtrace {
        let counts = read_event_counts(report)?;
        let calls = 2 * iterations;
        if counts.lost_events > 0 || counts.events < calls {
            bail!(
                "memtrace reported {} events ({} lost) for {calls} calls",
                counts.events,
                counts.lost_events
            );
        }
    }
    Ok(cpu_ns as f64 / (2 * iterations) as f64)
}

/// CPU ns per getppid of an untraced process, while `hook` is attached.
fn bystander_loop(hook: Hook, memtrace: &Path, workload: &Path, iterations: u64) -> Result<f64> {
    let calls = iterations.to_string();
    let cpu = match hook {
        Hook::Untraced => cpu_ns(Command::new(workload).arg(&calls))?,
        // The empty programs run for every process: the workload under them is a bystander.
        Hook::Floor => cpu_ns(floor_command(memtrace, workload)?.arg(&calls))?,
        Hook::Memtrace => {
            let tracing = TracingIdle::start(memtrace)?;
            let cpu = cpu_ns(Command::new(workload).arg(&calls));
            tracing.stop()?;
            cpu?
        }
    };
    Ok(cpu as f64 / iterations as f64)
}

fn floor_command(memtrace: &Path, workload: &Path) -> Result<Command> {
    let mut command = privilege::root_command(memtrace)?;
    command.args(["hook-floor", "--"]).arg(workload);
    Ok(command)
}

/// The loop's CPU time (`cpu_ns N` on the workload's stdout).
fn cpu_ns(command: &mut Command) -> Result<u64> {
    let line = cmd::describe(command);
    let output = cmd::capture(command).with_context(|| format!("could not start `{line}`"))?;
    if !output.status.success() {
        bail!(
            "`{line}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("cpu_ns ")?.trim().parse().ok())
        .with_context(|| format!("`{line}` printed no cpu_ns line"))
}

/// memtrace attached (`--pid`) to an idle process of ours, for the bystander to run next to.
struct TracingIdle {
    idle: Child,
    memtrace: Child,
}

impl TracingIdle {
    fn start(memtrace: &Path) -> Result<Self> {
        let idle = Command::new("sleep")
            .arg("3600")
            .spawn()
            .context("starting `sleep 3600`")?;
        let mut command = privilege::root_command(memtrace)?;
        command
            .args(["--backend", "raw-tracepoint", "-o", "/dev/null", "--pid"])
            .arg(idle.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut memtrace = command.spawn().context("starting memtrace --pid")?;
        let stderr = memtrace.stderr.take().context("memtrace's stderr")?;
        let mut tracing = Self { idle, memtrace };
        // memtrace says when it is attached; anything else first is an error to show.
        let mut said = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading memtrace's stderr")?;
            if line.starts_with("memtrace: attached") {
                return Ok(tracing);
            }
            said.push_str(&line);
            said.push('\n');
        }
        let _ = tracing.idle.kill();
        let status = tracing.memtrace.wait()?;
        bail!("memtrace --pid ended ({status}) before attaching:\n{said}")
    }

    /// Ends the idle process; memtrace ends with it, as the last traced process is gone.
    fn stop(mut self) -> Result<()> {
        self.idle.kill().context("stopping the idle process")?;
        let _ = self.idle.wait();
        let status = self.memtrace.wait().context("waiting for memtrace")?;
        if !status.success() {
            bail!("memtrace --pid failed ({status})");
        }
        Ok(())
    }
}

fn print(results: &[(Hook, Round)], rounds: u32, mmap_iterations: u64, getppid_calls: u64) {
    let median_of = |hook: Hook, workload: usize| {
        // Medians of integers: ns are whole enough here.
        median(
            results
                .iter()
                .filter(|(h, _)| *h == hook)
                .map(|(_, round)| round[workload].round() as u64)
                .collect(),
        ) as f64
    };
    println!();
    println!(
        "The hook's cost: CPU ns per syscall, median of {rounds} interleaved rounds ({mmap_iterations} \
         mmap+munmap pairs, {getppid_calls} getppid calls); floor = empty programs on \
         sys_enter/sys_exit (the kernel's slow path alone)."
    );
    println!(
        "{:<26} {:>9} {:>7} {:>9} {:>15}  target",
        "workload", "untraced", "floor", "memtrace", "memtrace/floor"
    );
    for (workload, name) in [(0, "traced mmap+munmap"), (1, "bystander getppid")] {
        let floor = median_of(Hook::Floor, workload);
        let memtrace = median_of(Hook::Memtrace, workload);
        println!(
            "{name:<26} {:>9.0} {floor:>7.0} {memtrace:>9.0} {:>14.3}x  <= {TARGET_RATIO_TO_FLOOR:.2}x",
            median_of(Hook::Untraced, workload),
            memtrace / floor,
        );
    }
    // Per-round ratios too: their spread shows how far the machine's noise reaches.
    for (workload, name) in [(0, "traced"), (1, "bystander")] {
        let ratios: Vec<String> = results
            .chunks(HOOKS.len())
            .map(|round| format!("{:.2}", round[2].1[workload] / round[1].1[workload]))
            .collect();
        println!("  {name} memtrace/floor per round: {}", ratios.join(" "));
    }
}
