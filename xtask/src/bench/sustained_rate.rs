//! The sustained-rate benchmark: the highest event rate memtrace takes with nothing lost.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use super::{proc, read_event_counts, slug};
use crate::{cmd, privilege, workspace::Workspace};

/// Stack settings the sustained-rate measurement compares: every call sampled (the most a
/// stack can cost, since the 4 KiB mappings are below the default threshold), and none.
const RATE_STACK_SETTINGS: [(&str, &str); 2] = [
    ("stacks on every call", "--stack-min-size=0"),
    ("stacks off", "--no-stacks"),
];
/// Flooding threads per run: from one CPU's worth to more threads than the machine's CPUs.
const RATE_THREADS: [u32; 3] = [1, 2, 4];

/// The highest event rate memtrace takes with nothing lost, at default ring sizes: several
/// threads flood mmap/munmap (tests/programs/rate.c) while memtrace's CPU time and peak RSS
/// are read from /proc until it exits.
pub fn measure(workspace: &Workspace, memtrace: &Path, scratch: &Path, rounds: u64) -> Result<()> {
    let source = workspace.root.join("tests/programs/rate.c");
    let workload = workspace.xtask_dir().join("rate");
    cmd::step("compiling the sustained-rate workload (tests/programs/rate.c)");
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Wextra", "-pthread", "-o"])
            .arg(&workload)
            .arg(&source),
    )?;
    println!();
    println!(
        "Sustained rate: THREADS threads x {rounds} mmap+munmap pairs of one page, default \
         ring sizes; rate = events / the flood's own time; memtrace's CPU and peak RSS from \
         /proc (noisy on a shared machine: compare ratios)."
    );
    println!(
        "{:<22} {:>7} {:>12} {:>6} {:>12} {:>16} {:>9}",
        "stacks", "threads", "events", "lost", "M events/s", "CPU s/M events", "RSS MiB"
    );
    for (label, flag) in RATE_STACK_SETTINGS {
        let mut best: Option<f64> = None;
        for threads in RATE_THREADS {
            let report = scratch.join(format!("rate-{}-{threads}.json", slug(label)));
            let mut command = privilege::root_command(memtrace)?;
            command
                .arg(flag)
                .args(["--format", "json", "-o"])
                .arg(&report)
                .arg("--")
                .arg(&workload)
                .arg(threads.to_string())
                .arg(rounds.to_string())
                .stdout(Stdio::piped());
            let observed = observe(&mut command, memtrace)
                .with_context(|| format!("running {}", cmd::describe(&command)))?;
            let counts = read_event_counts(&report)?;
            let rate = counts.events as f64 / observed.loop_time.as_secs_f64().max(1e-9);
            if counts.lost_events == 0 {
                best = Some(best.map_or(rate, |b: f64| b.max(rate)));
            }
            println!(
                "{:<22} {:>7} {:>12} {:>6} {:>12.2} {:>16.3} {:>9.1}",
                label,
                threads,
                counts.events,
                counts.lost_events,
                rate / 1e6,
                observed.cpu.as_secs_f64() / (counts.events.max(1) as f64 / 1e6),
                observed.peak_rss_bytes as f64 / f64::from(1u32 << 20),
            );
        }
        match best {
            Some(rate) => println!(
                "{label}: highest sustained rate with 0 lost: {:.2} M events/s",
                rate / 1e6
            ),
            None => println!("{label}: every run lost events"),
        }
    }
    Ok(())
}

/// What was seen of one memtrace run.
pub(super) struct Observed {
    /// The workload's flood, as it measured it.
    pub(super) loop_time: Duration,
    /// memtrace's user + system time, at the last look before it exited.
    pub(super) cpu: Duration,
    /// memtrace's VmHWM.
    pub(super) peak_rss_bytes: u64,
}

/// Runs `command` (memtrace, perhaps under sudo), sampling memtrace's /proc entry until it
/// exits.
pub(super) fn observe(command: &mut Command, memtrace: &Path) -> Result<Observed> {
    let mut child = command.spawn()?;
    let mut cpu = Duration::ZERO;
    let mut peak_rss_bytes = 0;
    let mut pid = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        pid = pid.or_else(|| proc::process_running(child.id(), memtrace));
        if let Some(pid) = pid {
            if let Some(time) = proc::cpu_time(pid) {
                cpu = time;
            }
            peak_rss_bytes = peak_rss_bytes.max(proc::peak_rss_kib(pid).unwrap_or(0) * 1024);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        use std::io::Read as _;
        out.read_to_string(&mut stdout)?;
    }
    if !status.success() {
        bail!("failed ({status}): {stdout}");
    }
    let loop_ns = stdout
        .lines()
        .find_map(|line| line.strip_prefix("loop_ns ")?.trim().parse::<u64>().ok())
        .context("the workload printed no loop_ns")?;
    Ok(Observed {
        loop_time: Duration::from_nanos(loop_ns),
        cpu,
        peak_rss_bytes,
    })
}
