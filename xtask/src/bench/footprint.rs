//! The footprint benchmark: memtrace's memory must grow with live regions, not
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

use super::proc;
use crate::{cmd, privilege, workspace::Workspace};

const FOLLOW_CHILDREN: u32 = 5000;
const TARGET_FOLLOW_MIB: f64 = 64.0;
/// The issue's own workload: a replay of 1M short-lived processes, with its report.
const REPLAY_PROCESSES: u64 = 1_000_000;
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
    // Both report forms: JSON is streamed, text is built whole; exited processes are folded
    // past the most recent 256 either way.
    for format in ["json", "text"] {
        let mut replay = Command::new(memtrace);
        replay
            .arg("replay")
            .arg(&recording)
            .args(["--format", format, "-o", "/dev/null"]);
        let replay_kib = peak_rss_kib(&mut replay)?;
        println!(
            "footprint: replay of {REPLAY_PROCESSES} processes ({recording_bytes} byte recording), --format {format}: peak RSS {:.1} MiB, goal <= {TARGET_REPLAY_MIB} MiB",
            mib(replay_kib),
        );
    }
    // Where the replay's memory goes.
    let phases = cmd::read_stdout(Command::new(&example).arg("phases").arg(&recording))?;
    let _ = fs::remove_file(&recording);
    let phase = |name: &str| -> Option<f64> {
        let mut words = phases.split_whitespace();
        words.find(|word| *word == name)?;
        Some(words.next()?.parse::<f64>().ok()? / 1024.0)
    };
    if let (Some(model), Some(streamed), Some(report), Some(json), Some(text)) = (
        phase("model_kib"),
        phase("streamed_peak_kib"),
        phase("report_kib"),
        phase("json_kib"),
        phase("text_kib"),
    ) {
        println!(
            "footprint: that replay's RSS after each phase: pipeline fed {model:.1} MiB, JSON streamed (peak) {streamed:.1} MiB, report built {report:.1} MiB, JSON rendered {json:.1} MiB, text rendered {text:.1} MiB"
        );
    }
    let pipeline = cmd::read_stdout(
        Command::new(&example).args(["pipeline-forks", &REPLAY_PROCESSES.to_string()]),
    )?;
    println!("footprint: the pipeline alone, {}", pipeline.trim());

    cmd::step(format!(
        "footprint: a {CHURN_HOURS}-hour attach with steady churn, compressed"
    ));
    let churn = cmd::read_stdout(Command::new(&example).args(["churn", &CHURN_HOURS.to_string()]))?;
    let hourly: Vec<u64> = churn
        .lines()
        .filter_map(|line| line.strip_prefix("churn hour "))
        .filter_map(|rest| rest.split_whitespace().nth(2)?.parse().ok())
        .collect();
    // `churn events N processes K folded F json_bytes … after_reports_rss_kib R peak_kib P`
    let totals: Vec<&str> = churn
        .lines()
        .find_map(|line| line.strip_prefix("churn events "))
        .unwrap_or("?")
        .split_whitespace()
        .collect();
    let total = |name: &str| -> &str {
        totals
            .iter()
            .position(|word| *word == name)
            .and_then(|at| totals.get(at + 1))
            .copied()
            .unwrap_or("?")
    };
    let churn_events = totals.first().copied().unwrap_or("?");
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
    let kib_as_mib = |kib: &str| kib.parse::<u64>().map_or(f64::NAN, mib);
    println!(
        "footprint: after the {CHURN_HOURS} h: {} processes kept, {} folded; its JSON and text reports built and rendered: RSS {:.1} MiB, peak {:.1} MiB",
        total("processes"),
        total("folded"),
        kib_as_mib(total("after_reports_rss_kib")),
        kib_as_mib(total("peak_kib")),
    );
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
        for pid in std::iter::once(child.id()).chain(proc::children(child.id())) {
            peak = peak.max(proc::peak_rss_kib(pid).unwrap_or(0));
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
