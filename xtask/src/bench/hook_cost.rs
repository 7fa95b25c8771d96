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
//!
//! The programs' own time comes from the kernel's BPF statistics (`kernel.bpf_stats_enabled`,
//! switched on for the measurement and restored after): each program's `run_time_ns` and
//! `run_cnt`, read from the fds of the memtrace that holds it (`/proc/PID/fdinfo`, so that other
//! tracers on the machine are not counted) once the traced loop is done. Per traced syscall is
//! the programs' whole time over the loop's calls: it also holds what other processes' syscalls
//! cost these programs meanwhile (little on a quiet machine), so it errs high, never low.

use std::{
    fs,
    io::{BufRead, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use super::{median, read_event_counts, ScratchDir};
use crate::{cmd, privilege, workspace::Workspace};

/// memtrace ÷ floor, the goals of the traced loop and of the bystander (issue #25).
const TARGET_TRACED_RATIO_TO_FLOOR: f64 = 1.10;
const TARGET_BYSTANDER_RATIO_TO_FLOOR: f64 = 1.05;
/// The syscall programs' time per traced mmap or munmap, entry and exit together.
const TARGET_PROGRAM_NS_PER_CALL: f64 = 150.0;
/// The programs a traced syscall may run, as bpftool names them (whole, from their BTF):
/// without `--latency`, on a kernel with `sched_prepare_exec` (6.10), only `sys_exit` runs for
/// an mmap and `sys_enter` is not attached; the exec entries' program is counted too, so that
/// whatever the traced path costs shows.
const SYSCALL_PROGRAMS: [&str; 3] = ["sys_enter", "sched_prepare_exec", "sys_exit"];
const FLOOR_PROGRAMS: [&str; 2] = ["floor_enter", "floor_exit"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Untraced,
    Floor,
    Memtrace,
    /// memtrace with `--latency`: every traced call's entry stamped too (traced loop only: a
    /// bystander pays the same number test either way).
    Latency,
}

const HOOKS: [Hook; 4] = [Hook::Untraced, Hook::Floor, Hook::Memtrace, Hook::Latency];

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::Floor => "floor",
            Self::Memtrace => "memtrace",
            Self::Latency => "latency",
        }
    }
}

struct Workloads {
    mmap_loop: PathBuf,
    getppid_loop: PathBuf,
}

/// CPU ns per syscall of one round: `[traced, bystander]`.
type Round = [f64; 2];

/// One program's BPF statistics over a traced loop.
#[derive(Clone, Debug)]
struct ProgramTime {
    name: String,
    run_time_ns: u64,
    run_cnt: u64,
    /// The loop's traced syscalls.
    calls: u64,
}

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
         / memtrace --backend raw-tracepoint / the same with --latency"
    ));
    // An mmap+munmap pair costs some 20 getppid calls: a quarter as many keeps the rounds short.
    let mmap_iterations = (getppid_calls / 4).max(1);
    let stats = BpfStats::enable()?;
    let mut results: Vec<(Hook, Round)> = Vec::new();
    let mut program_times: Vec<(Hook, Vec<ProgramTime>)> = Vec::new();
    for round in 0..rounds {
        for hook in HOOKS {
            let report = scratch
                .path
                .join(format!("hook-{round}-{}.json", hook.name()));
            let (traced, programs) = traced_loop(
                hook,
                memtrace,
                &workloads.mmap_loop,
                mmap_iterations,
                &report,
            )?;
            program_times.push((hook, programs));
            let bystander = match hook {
                Hook::Latency => f64::NAN,
                _ => bystander_loop(hook, memtrace, &workloads.getppid_loop, getppid_calls)?,
            };
            results.push((hook, [traced, bystander]));
        }
    }
    drop(stats);
    print(&results, rounds, mmap_iterations, getppid_calls);
    print_program_times(&program_times, rounds);
    Ok(())
}

/// `kernel.bpf_stats_enabled` switched on, and its value before, put back when dropped (also
/// when a round fails).
struct BpfStats {
    before: String,
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(error) = set_sysctl(&self.before) {
            println!(
                "xtask: could not restore kernel.bpf_stats_enabled={}: {error:#}",
                self.before
            );
        }
    }
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        let before = fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS}"))?
            .trim()
            .to_owned();
        set_sysctl("1")?;
        Ok(Self { before })
    }
}

fn set_sysctl(value: &str) -> Result<()> {
    let mut command = privilege::root_command(Path::new("sysctl"))?;
    cmd::read_stdout(command.args(["-q", &format!("kernel.bpf_stats_enabled={value}")]))?;
    Ok(())
}

/// The BPF statistics of the programs the process `pid` holds open, by name.
fn program_times(pid: u32, calls: u64) -> Result<Vec<ProgramTime>> {
    let mut times = Vec::new();
    let fdinfo = format!("/proc/{pid}/fdinfo");
    for entry in fs::read_dir(&fdinfo).with_context(|| format!("reading {fdinfo}"))? {
        let Ok(info) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.trim().parse().ok())
        };
        // A program's fd has its statistics; a link's fd names its program but has none.
        let (Some(id), Some(run_time_ns), Some(run_cnt)) =
            (field("prog_id"), field("run_time_ns"), field("run_cnt"))
        else {
            continue;
        };
        let shown = cmd::read_stdout(privilege::root_command(Path::new("bpftool"))?.args([
            "prog",
            "show",
            "id",
            &id.to_string(),
            "--json",
        ]))?;
        let shown: serde_json::Value = serde_json::from_str(&shown)
            .with_context(|| format!("bpftool prog show id {id}: {shown}"))?;
        let Some(name) = shown["name"].as_str() else {
            bail!("bpftool prog show id {id} names no program: {shown}");
        };
        times.push(ProgramTime {
            name: name.to_owned(),
            run_time_ns,
            run_cnt,
            calls,
        });
    }
    Ok(times)
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

/// CPU ns per syscall of the mmap/munmap loop, run under `hook`, and the BPF statistics of the
/// programs that ran for it. Under memtrace the report must hold every call, or the figure
/// would flatter a tracer that drops events.
fn traced_loop(
    hook: Hook,
    memtrace: &Path,
    workload: &Path,
    iterations: u64,
    report: &Path,
) -> Result<(f64, Vec<ProgramTime>)> {
    if hook == Hook::Untraced {
        let cpu_ns = cpu_ns(Command::new(workload).arg(iterations.to_string()))?;
        return Ok((cpu_ns as f64 / (2 * iterations) as f64, Vec::new()));
    }
    // The loop runs in a shell that then waits for a line on stdin: the programs' statistics
    // are read while they are still loaded, once the loop is done. (--follow: the loop is the
    // shell's child.)
    let mut command = privilege::root_command(memtrace)?;
    match hook {
        Hook::Floor => {
            command.arg("hook-floor");
        }
        _ => {
            command
                .args([
                    "--backend",
                    "raw-tracepoint",
                    "--follow",
                    "--format",
                    "json",
                ])
                .arg("-o")
                .arg(report);
            if hook == Hook::Latency {
                command.arg("--latency");
            }
        }
    }
    command
        .args(["--", "sh", "-c", r#""$0" "$1"; read _"#])
        .arg(workload)
        .arg(iterations.to_string());
    let line = cmd::describe(&command);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let stdout = child.stdout.take().context("the loop's stdout")?;
    let mut cpu_ns = None;
    for output in BufReader::new(stdout).lines() {
        let output = output.context("reading the loop's stdout")?;
        if let Some(value) = output.strip_prefix("cpu_ns ") {
            cpu_ns = value.trim().parse::<u64>().ok();
            break;
        }
    }
    let programs = match cpu_ns {
        Some(_) => program_times(child.id(), 2 * iterations),
        None => Ok(Vec::new()),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"\n");
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    let Some(cpu_ns) = cpu_ns else {
        bail!("`{line}` printed no cpu_ns line");
    };
    let programs = programs?;
    if matches!(hook, Hook::Memtrace | Hook::Latency) {
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
    Ok((cpu_ns as f64 / (2 * iterations) as f64, programs))
}

/// CPU ns per getppid of an untraced process, while `hook` is attached.
fn bystander_loop(hook: Hook, memtrace: &Path, workload: &Path, iterations: u64) -> Result<f64> {
    let calls = iterations.to_string();
    let cpu = match hook {
        Hook::Untraced => cpu_ns(Command::new(workload).arg(&calls))?,
        // The empty programs run for every process: the workload under them is a bystander.
        Hook::Floor => cpu_ns(floor_command(memtrace, workload)?.arg(&calls))?,
        Hook::Memtrace | Hook::Latency => {
            let tracing = TracingIdle::start(memtrace)?;
            let cpu = cpu_ns(Command::new(workload).arg(&calls));
            tracing.stop()?;
            cpu?
        }
    };
    Ok(cpu as f64 / iterations as f64)
}

/// The empty programs attached while `workload` runs.
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
    for (workload, name, target) in [
        (0, "traced mmap+munmap", TARGET_TRACED_RATIO_TO_FLOOR),
        (1, "bystander getppid", TARGET_BYSTANDER_RATIO_TO_FLOOR),
    ] {
        let floor = median_of(Hook::Floor, workload);
        let memtrace = median_of(Hook::Memtrace, workload);
        println!(
            "{name:<26} {:>9.0} {floor:>7.0} {memtrace:>9.0} {:>14.3}x  <= {target:.2}x",
            median_of(Hook::Untraced, workload),
            memtrace / floor,
        );
    }
    let floor = median_of(Hook::Floor, 0);
    let latency = median_of(Hook::Latency, 0);
    println!(
        "{:<26} {:>9} {floor:>7.0} {latency:>9.0} {:>14.3}x  (no goal: the price of --latency)",
        "traced, with --latency",
        "",
        latency / floor,
    );
    // Per-round ratios too: their spread shows how far the machine's noise reaches.
    for (workload, name) in [(0, "traced"), (1, "bystander")] {
        let ratios: Vec<String> = results
            .chunks(HOOKS.len())
            .map(|round| format!("{:.2}", round[2].1[workload] / round[1].1[workload]))
            .collect();
        println!("  {name} memtrace/floor per round: {}", ratios.join(" "));
    }
}

/// The programs' own time (BPF statistics) in the traced loop: per run and per traced syscall,
/// min/median/max over the rounds.
fn print_program_times(rounds_programs: &[(Hook, Vec<ProgramTime>)], rounds: u32) {
    println!();
    println!(
        "The programs' own time in the traced loop (kernel.bpf_stats_enabled), over {rounds} \
         rounds: min / median / max. Per traced syscall: the program's whole run time over the \
         loop's mmap and munmap calls."
    );
    println!(
        "{:<18} {:>26} {:>26}",
        "program", "ns per run", "ns per traced syscall"
    );
    let spread = |mut values: Vec<f64>| -> String {
        if values.is_empty() {
            return "-".to_owned();
        }
        values.sort_by(f64::total_cmp);
        format!(
            "{:.0} / {:.0} / {:.0}",
            values[0],
            values[values.len() / 2],
            values[values.len() - 1]
        )
    };
    let of = |hooks: &[Hook], name: &str, per: fn(&ProgramTime) -> f64| -> Vec<f64> {
        rounds_programs
            .iter()
            .filter(|(hook, _)| hooks.contains(hook))
            .flat_map(|(_, programs)| programs)
            .filter(|program| program.name == name)
            .map(per)
            .collect()
    };
    let per_run = |p: &ProgramTime| p.run_time_ns as f64 / p.run_cnt.max(1) as f64;
    let per_call = |p: &ProgramTime| p.run_time_ns as f64 / p.calls.max(1) as f64;
    let hooks = [Hook::Floor, Hook::Memtrace];
    for name in FLOOR_PROGRAMS.iter().chain(&SYSCALL_PROGRAMS) {
        println!(
            "{name:<18} {:>26} {:>26}",
            spread(of(&hooks, name, per_run)),
            spread(of(&hooks, name, per_call))
        );
    }
    // Entry and exit together, round by round.
    let together = |hook: Hook| -> Vec<f64> {
        rounds_programs
            .iter()
            .filter(|(h, _)| *h == hook)
            .map(|(_, programs)| {
                programs
                    .iter()
                    .filter(|p| SYSCALL_PROGRAMS.contains(&p.name.as_str()))
                    .map(per_call)
                    .sum()
            })
            .collect()
    };
    println!(
        "{:<18} {:>26} {:>26}  target <= {TARGET_PROGRAM_NS_PER_CALL:.0} (median)",
        "enter+exit",
        "",
        spread(together(Hook::Memtrace))
    );
    println!(
        "{:<18} {:>26} {:>26}  with --latency (no goal)",
        "enter+exit",
        "",
        spread(together(Hook::Latency))
    );
}
