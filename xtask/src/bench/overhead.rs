//! The overhead benchmark: the workload (tests/programs/mmap_loop.c) untraced, under memtrace
//! in several configurations and under strace; the size of a recording, and how fast it
//! replays.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{median, read_event_counts, slug, EventCounts, ScratchDir};
use crate::{cmd, privilege};

/// Each iteration of the workload makes two syscalls (mmap, munmap).
const SYSCALLS_PER_ITERATION: u64 = 2;

const TARGET_SLOWDOWN: f64 = 1.3;
/// Issue #25: the flight recorder keeps recordings in memory, so bytes per event decide how
/// many minutes of history fit; and a replay of a --no-stacks recording on one core.
const TARGET_BYTES_PER_EVENT: f64 = 16.0;
const TARGET_REPLAY_EVENTS_PER_SECOND: f64 = 10e6;

/// One way of running the workload. Add a configuration here to benchmark it too.
struct Configuration {
    name: &'static str,
    tracer: Tracer,
    /// Slow tracers run `iterations / divisor` iterations; their time is scaled back up.
    iteration_divisor: u64,
}

enum Tracer {
    Untraced,
    Memtrace {
        extra_args: &'static [&'static str],
        /// Also write a recording, whose size and replay speed are measured.
        record: bool,
    },
    Strace,
}

/// The first configuration is the baseline the others are compared with.
const CONFIGURATIONS: &[Configuration] = &[
    Configuration {
        name: "untraced",
        tracer: Tracer::Untraced,
        iteration_divisor: 1,
    },
    Configuration {
        name: "memtrace",
        tracer: Tracer::Memtrace {
            extra_args: &[],
            record: false,
        },
        iteration_divisor: 1,
    },
    Configuration {
        name: "memtrace --no-stacks",
        tracer: Tracer::Memtrace {
            extra_args: &["--no-stacks"],
            record: false,
        },
        iteration_divisor: 1,
    },
    Configuration {
        // A stack for every call, even these 4 KiB pages (the default samples only mappings
        // of 64 KiB and more): the cost of stacks at their most expensive.
        name: "memtrace --stack-min-size 0",
        tracer: Tracer::Memtrace {
            extra_args: &["--stack-min-size", "0"],
            record: false,
        },
        iteration_divisor: 1,
    },
    Configuration {
        // Without stacks, so that replay speed measures events through decoding and the
        // model: naming the frames of a few stacks is a fixed cost of the report (loading
        // libc's debug info takes ~0.1 s), not a cost per event.
        name: "memtrace --record --no-stacks",
        tracer: Tracer::Memtrace {
            extra_args: &["--no-stacks"],
            record: true,
        },
        iteration_divisor: 1,
    },
    Configuration {
        name: "strace",
        tracer: Tracer::Strace,
        // strace stops the process twice per syscall: ~100x slower.
        iteration_divisor: 100,
    },
];

/// What one run of a configuration measured.
struct Run {
    /// Scaled to the full iteration count.
    wall: Duration,
    /// From memtrace's JSON report.
    counts: Option<EventCounts>,
    recording: Option<Recording>,
}

struct Recording {
    path: PathBuf,
    bytes: u64,
    events: u64,
}

/// A configuration's runs, summarised.
struct Summary {
    name: &'static str,
    iterations: u64,
    scaled_from: Option<u64>,
    is_memtrace: bool,
    wall: Duration,
    events: Option<u64>,
    /// The worst run: any loss matters.
    lost_events: Option<u64>,
}

/// Times every configuration, then the replay of the recording one of them made, and prints
/// the table.
pub fn measure(
    memtrace: &Path,
    workload: &Path,
    total_iterations: u64,
    repeats: u32,
    scratch: &ScratchDir,
) -> Result<()> {
    let mut summaries = Vec::new();
    let mut recording = None;
    for configuration in CONFIGURATIONS {
        let iterations = (total_iterations / configuration.iteration_divisor).max(1);
        let scaled = configuration.iteration_divisor > 1;
        cmd::step(format!(
            "timing {} ({} x {iterations} iterations{})",
            configuration.name,
            repeats,
            if scaled {
                format!(
                    ", 1/{} of the others, times scaled up",
                    configuration.iteration_divisor
                )
            } else {
                String::new()
            }
        ));
        let mut runs = Vec::new();
        for run_index in 0..repeats {
            let run_dir = scratch
                .path
                .join(format!("{}-{run_index}", slug(configuration.name)));
            fs::create_dir_all(&run_dir)
                .with_context(|| format!("creating {}", run_dir.display()))?;
            let mut run = run_once(configuration, memtrace, workload, iterations, &run_dir)
                .with_context(|| format!("benchmarking {}", configuration.name))?;
            run.wall = run
                .wall
                .mul_f64(total_iterations as f64 / iterations as f64);
            runs.push(run);
        }
        summaries.push(summarise(
            configuration,
            total_iterations,
            iterations,
            &runs,
        ));
        if let Some(last_recording) = runs.into_iter().filter_map(|run| run.recording).next_back() {
            recording = Some(last_recording);
        }
    }

    let replay = match &recording {
        Some(recording) => Some(time_replay(memtrace, recording, repeats)?),
        None => None,
    };

    print_report(&summaries, recording.as_ref(), replay, repeats);
    Ok(())
}

fn run_once(
    configuration: &Configuration,
    memtrace: &Path,
    workload: &Path,
    iterations: u64,
    run_dir: &Path,
) -> Result<Run> {
    let report = run_dir.join("report.json");
    let recording = run_dir.join("rec.mtr");
    let mut command = match &configuration.tracer {
        Tracer::Untraced => Command::new(workload),
        Tracer::Memtrace { extra_args, record } => {
            let mut command = privilege::root_command(memtrace)?;
            if *record {
                command.arg("--record").arg(&recording);
            }
            command
                .args(*extra_args)
                .args(["--format", "json", "-o"])
                .arg(&report)
                .arg("--")
                .arg(workload);
            command
        }
        Tracer::Strace => {
            let mut command = Command::new("strace");
            command
                .args(["-f", "-o", "/dev/null", "-e", "trace=mmap,munmap"])
                .arg(workload);
            command
        }
    };
    command.arg(iterations.to_string());

    let wall = time_command(&mut command)?;
    let mut run = Run {
        wall,
        counts: None,
        recording: None,
    };
    if let Tracer::Memtrace { record, .. } = configuration.tracer {
        let counts = read_event_counts(&report)?;
        run.counts = Some(counts);
        if record {
            let bytes = fs::metadata(&recording)
                .with_context(|| format!("reading the size of {}", recording.display()))?
                .len();
            run.recording = Some(Recording {
                path: recording,
                bytes,
                events: counts.events,
            });
        }
    }
    Ok(run)
}

/// How long the workload's loop took, as the workload measured it (`loop_ns N` on stdout): a
/// tracer's start-up (loading and verifying its programs) and its report are not the
/// per-syscall overhead this benchmark is about. Falls back to the command's wall time.
/// Output is captured to keep the table readable, and shown if the command fails.
fn time_command(command: &mut Command) -> Result<Duration> {
    let line = cmd::describe(command);
    let start = Instant::now();
    let output = cmd::capture(command).with_context(|| format!("could not start `{line}`"))?;
    let wall = String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("loop_ns ")?.trim().parse::<u64>().ok())
        .map_or_else(|| start.elapsed(), Duration::from_nanos);
    if !output.status.success() {
        bail!(
            "`{line}` failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(wall)
}

/// How long a replay takes: the whole command, and its fixed start-up (process start,
/// header, an empty report), timed as a replay that stops before the first event.
struct ReplayTiming {
    whole: Duration,
    start_up: Duration,
}

fn time_replay(memtrace: &Path, recording: &Recording, runs: u32) -> Result<ReplayTiming> {
    cmd::step(format!(
        "timing replay of a {} byte recording ({runs} runs)",
        recording.bytes
    ));
    let median_of = |extra: &[&str]| -> Result<Duration> {
        let mut walls = Vec::new();
        for _ in 0..runs {
            let mut command = Command::new(memtrace);
            command
                .arg("replay")
                .arg(&recording.path)
                .args(["--format", "json", "-o", "/dev/null"])
                .args(extra);
            walls.push(time_command(&mut command).context("benchmarking replay")?);
        }
        Ok(median(walls))
    };
    Ok(ReplayTiming {
        whole: median_of(&[])?,
        start_up: median_of(&["--until", "0"])?,
    })
}

fn summarise(configuration: &Configuration, iterations: u64, ran: u64, runs: &[Run]) -> Summary {
    let counts: Vec<EventCounts> = runs.iter().filter_map(|run| run.counts).collect();
    Summary {
        name: configuration.name,
        iterations,
        scaled_from: (ran != iterations).then_some(ran),
        is_memtrace: matches!(configuration.tracer, Tracer::Memtrace { .. }),
        wall: median(runs.iter().map(|run| run.wall).collect()),
        events: (!counts.is_empty()).then(|| median(counts.iter().map(|c| c.events).collect())),
        lost_events: counts.iter().map(|c| c.lost_events).max(),
    }
}

fn print_report(
    summaries: &[Summary],
    recording: Option<&Recording>,
    replay: Option<ReplayTiming>,
    runs: u32,
) {
    let baseline = summaries[0].wall.as_secs_f64();
    println!();
    println!(
        "Workload: mmap+munmap of one page, {} iterations; the loop's own time as the \
         workload measured it (a tracer's start-up excluded), median of {runs} runs.",
        summaries[0].iterations
    );
    println!(
        "{:<28} {:>10} {:>8} {:>9} {:>12} {:>6}  target",
        "configuration", "wall", "ns/call", "ratio", "events", "lost"
    );
    for summary in summaries {
        let wall = summary.wall.as_secs_f64();
        let calls = (summary.iterations * SYSCALLS_PER_ITERATION) as f64;
        let optional = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
        let target = if summary.is_memtrace {
            format!("<= {TARGET_SLOWDOWN:.2}x, 0 lost")
        } else if let Some(ran) = summary.scaled_from {
            format!("(ran {ran} iterations, scaled)")
        } else {
            String::new()
        };
        println!(
            "{:<28} {:>9.3}s {:>8.0} {:>8.2}x {:>12} {:>6}  {target}",
            summary.name,
            wall,
            wall * 1e9 / calls,
            wall / baseline,
            optional(summary.events),
            optional(summary.lost_events),
        );
    }
    if let Some(recording) = recording {
        let events = recording.events.max(1) as f64;
        println!(
            "recording: {} bytes for {} events = {:.1} bytes/event (target <= {TARGET_BYTES_PER_EVENT})",
            recording.bytes,
            recording.events,
            recording.bytes as f64 / events
        );
        if let Some(replay) = replay {
            let whole = replay.whole.as_secs_f64();
            let through_pipeline = (whole - replay.start_up.as_secs_f64()).max(f64::EPSILON);
            println!(
                "replay: {:.3}s for {} events = {:.2} M events/s for the whole command; \
                 {:.2} M events/s through decoding and the model ({:.0} ms of start-up \
                 excluded) (target >= {} M events/s)",
                whole,
                recording.events,
                events / whole / 1e6,
                events / through_pipeline / 1e6,
                replay.start_up.as_secs_f64() * 1e3,
                TARGET_REPLAY_EVENTS_PER_SECOND / 1e6
            );
        }
    }
}
