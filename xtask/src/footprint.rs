//! `cargo xtask bench`'s footprint part: memtrace's memory must grow with live regions, not
//! with events or with processes come and gone. Measured, not asserted: the goals are printed
//! next to the numbers.
//!
//! - 5000 short-lived children under `--follow` (live, real processes);
//! - the replay of a recording of 1M short-lived processes (written by the `footprint`
//!   example, memtrace/examples/footprint.rs);
//! - a compressed-time 24-hour attach to a process with steady churn, fed to the model by the
//!   example, with memtrace's RSS after every simulated hour;
//! - the cost of one live region.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, privilege, workspace::Workspace};

const FOLLOW_CHILDREN: u32 = 5000;
const TARGET_FOLLOW_MIB: f64 = 64.0;
/// The replay includes building and writing the report, which lists every process: measured
/// on 100k processes; the model alone is measured on 1M (`model-forks`).
const REPLAY_PROCESSES: u64 = 100_000;
const MODEL_PROCESSES: u64 = 1_000_000;
const TARGET_REPLAY_MIB: f64 = 1024.0;
const CHURN_HOURS: u32 = 24;

pub fn measure(workspace: &Workspace, memtrace: &Path, scratch: &Path) -> Result<()> {
    let example = build_example(workspace)?;

    cmd::step(format!(
        "footprint: {FOLLOW_CHILDREN} short-lived children under --follow"
    ));
    let script = format!("i=0; while [ $i -lt {FOLLOW_CHILDREN} ]; do /bin/true; i=$((i+1)); done");
    let mut follow = privilege::root_command(memtrace)?;
    follow
        .args(["--follow", "--format", "json", "-o", "/dev/null", "--"])
        .args(["/bin/sh", "-c", &script]);
    let follow_kib = peak_rss_kib(&mut follow)?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "footprint: {FOLLOW_CHILDREN} children under --follow: peak RSS {:.1} MiB, goal <= {TARGET_FOLLOW_MIB} MiB ({:.1} KiB per child)",
        mib(follow_kib),
        follow_kib as f64 / f64::from(FOLLOW_CHILDREN)
    );

    cmd::step(format!(
        "footprint: replay of {REPLAY_PROCESSES} short-lived processes"
    ));
    let recording = scratch.join("forks.mtr");
    cmd::run(
        Command::new(&example)
            .arg("forks")
            .arg(REPLAY_PROCESSES.to_string())
            .arg(&recording),
    )?;
    let recording_bytes = fs::metadata(&recording)
        .with_context(|| format!("reading the size of {}", recording.display()))?
        .len();
    let mut replay = Command::new(memtrace);
    replay
        .arg("replay")
        .arg(&recording)
        .args(["--format", "json", "-o", "/dev/null"]);
    let replay_kib = peak_rss_kib(&mut replay)?;
    println!(
        "footprint: replay of {REPLAY_PROCESSES} processes with their report: peak RSS {:.1} MiB ({} byte recording, {:.0} bytes per process; goal for 1M: <= {TARGET_REPLAY_MIB} MiB)",
        mib(replay_kib),
        recording_bytes,
        replay_kib as f64 * 1024.0 / REPLAY_PROCESSES as f64
    );
    // Where the replay's memory goes: the report lists every process in full, and is built
    // whole and rendered to one string before it is written.
    let phases = cmd::read_stdout(Command::new(&example).arg("phases").arg(&recording))?;
    let phase = |name: &str| -> Option<f64> {
        let mut words = phases.split_whitespace();
        words.find(|word| *word == name)?;
        Some(words.next()?.parse::<f64>().ok()? / 1024.0)
    };
    if let (Some(model), Some(streamed), Some(report), Some(json)) = (
        phase("model_kib"),
        phase("streamed_peak_kib"),
        phase("report_kib"),
        phase("json_kib"),
    ) {
        println!(
            "footprint: that replay's RSS after each phase: model {model:.1} MiB, report built {report:.1} MiB, JSON rendered {json:.1} MiB; streamed instead (report::stream): peak {streamed:.1} MiB"
        );
    }
    // The 1M-process replay with its report streamed (report::stream, which the JSON
    // output can use instead of building the report whole): the goal's own workload.
    let million = scratch.join("forks-1m.mtr");
    cmd::run(
        Command::new(&example)
            .arg("forks")
            .arg(MODEL_PROCESSES.to_string())
            .arg(&million),
    )?;
    let streamed = cmd::read_stdout(
        Command::new(&example)
            .arg("phases")
            .arg(&million)
            .arg("streamed"),
    )?;
    let _ = fs::remove_file(&million);
    let streamed_peak = streamed
        .split_whitespace()
        .skip_while(|word| *word != "streamed_peak_kib")
        .nth(1)
        .and_then(|kib| kib.parse::<u64>().ok())
        .context("the streamed replay printed no peak")?;
    println!(
        "footprint: replay of {MODEL_PROCESSES} processes, JSON report streamed: peak RSS {:.1} MiB, goal <= {TARGET_REPLAY_MIB} MiB",
        mib(streamed_peak)
    );
    let model = cmd::read_stdout(
        Command::new(&example).args(["model-forks", &MODEL_PROCESSES.to_string()]),
    )?;
    println!("footprint: the model alone, {}", model.trim());

    cmd::step(format!(
        "footprint: a {CHURN_HOURS}-hour attach with steady churn, compressed"
    ));
    let churn = cmd::read_stdout(Command::new(&example).args(["churn", &CHURN_HOURS.to_string()]))?;
    let hourly: Vec<u64> = churn
        .lines()
        .filter_map(|line| line.strip_prefix("churn hour "))
        .filter_map(|rest| rest.split_whitespace().nth(2)?.parse().ok())
        .collect();
    let churn_events = churn
        .lines()
        .find_map(|line| line.strip_prefix("churn events "))
        .unwrap_or("?")
        .to_owned();
    let regions = cmd::read_stdout(Command::new(&example).args(["regions", "1000000"]))?;
    let per_region = regions.split_whitespace().last().unwrap_or("?").to_owned();

    match (hourly.get(1), hourly.last()) {
        (Some(&first_hour), Some(&last_hour)) => println!(
            "footprint: {CHURN_HOURS} h of churn ({churn_events} events)  hour 1 {:.1} MiB -> hour {CHURN_HOURS} {:.1} MiB   goal: flat  (x{:.2})",
            mib(first_hour),
            mib(last_hour),
            last_hour as f64 / first_hour.max(1) as f64
        ),
        _ => bail!("the churn workload printed no hourly RSS:\n{churn}"),
    }
    println!("footprint: one live region costs {per_region} bytes");
    Ok(())
}

fn build_example(workspace: &Workspace) -> Result<PathBuf> {
    cmd::step("building the footprint workloads (memtrace/examples/footprint.rs)");
    cmd::run(Command::new("cargo").current_dir(&workspace.root).args([
        "build",
        "--release",
        "-p",
        "memtrace",
        "--example",
        "footprint",
    ]))?;
    Ok(workspace.target_dir.join("release/examples/footprint"))
}

/// Runs the command to its end and returns the highest peak RSS (VmHWM) seen of it or its
/// children (sudo runs memtrace as its child), polled every 10 ms: the peak only grows, so
/// the last reading before exit is all but the true one.
fn peak_rss_kib(command: &mut Command) -> Result<u64> {
    let line = cmd::describe(command);
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {line}"))?;
    let mut peak = 0;
    loop {
        for pid in std::iter::once(child.id()).chain(children(child.id())) {
            peak = peak.max(vm_hwm_kib(pid).unwrap_or(0));
        }
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                bail!("{line} failed ({status}): {stderr}");
            }
            return Ok(peak);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .collect()
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
