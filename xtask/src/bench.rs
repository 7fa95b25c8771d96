//! `cargo xtask bench`: how much memtrace slows down a syscall-heavy process, next to strace,
//! how compact and fast its recordings are, and how much memory it takes (`footprint`). A measurement, never a pass/fail test: the
//! targets are printed next to the numbers for a human to judge.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{build, cmd, privilege, workspace::Workspace};

mod hook_cost;

#[derive(clap::Args)]
pub struct BenchOptions {
    /// mmap+munmap pairs per run of the workload.
    #[arg(long, default_value_t = 2_000_000)]
    iterations: u64,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Only measure the hook's cost (memtrace against empty programs on its hooks).
    #[arg(long)]
    hook_only: bool,
    /// mmap+munmap pairs per thread in the sustained-rate runs.
    #[arg(long, default_value_t = 200_000)]
    rate_rounds: u64,
    /// Only measure memtrace's memory footprint (not the overhead and replay speed).
    #[arg(long)]
    footprint_only: bool,
    /// Only measure the highest event rate memtrace takes with nothing lost.
    #[arg(long)]
    rate_only: bool,
}

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

#[derive(Clone, Copy)]
struct EventCounts {
    events: u64,
    lost_events: u64,
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

pub fn bench(workspace: &Workspace, options: &BenchOptions) -> Result<()> {
    let memtrace = build::build(workspace)?;
    let scratch = ScratchDir::create()?;
    if options.footprint_only {
        return crate::footprint::measure(workspace, &memtrace, &scratch.path);
    }
    if options.rate_only {
        return sustained_rate(workspace, &memtrace, &scratch.path, options.rate_rounds);
    }
    let workload = compile_workload(workspace)?;
    if options.hook_only {
        return hook_cost::measure(
            workspace,
            &memtrace,
            &workload,
            options.iterations,
            options.runs,
            &scratch,
        );
    }

    let mut summaries = Vec::new();
    let mut recording = None;
    for configuration in CONFIGURATIONS {
        let iterations = (options.iterations / configuration.iteration_divisor).max(1);
        let scaled = configuration.iteration_divisor > 1;
        cmd::step(format!(
            "timing {} ({} x {iterations} iterations{})",
            configuration.name,
            options.runs,
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
        for run_index in 0..options.runs {
            let run_dir = scratch
                .path
                .join(format!("{}-{run_index}", slug(configuration.name)));
            fs::create_dir_all(&run_dir)
                .with_context(|| format!("creating {}", run_dir.display()))?;
            let mut run = run_once(configuration, &memtrace, &workload, iterations, &run_dir)
                .with_context(|| format!("benchmarking {}", configuration.name))?;
            run.wall = run
                .wall
                .mul_f64(options.iterations as f64 / iterations as f64);
            runs.push(run);
        }
        summaries.push(summarise(
            configuration,
            options.iterations,
            iterations,
            &runs,
        ));
        if let Some(last_recording) = runs.into_iter().filter_map(|run| run.recording).next_back() {
            recording = Some(last_recording);
        }
    }

    let replay = match &recording {
        Some(recording) => Some(time_replay(&memtrace, recording, options.runs)?),
        None => None,
    };

    print_report(&summaries, recording.as_ref(), replay, options.runs);
    crate::footprint::measure(workspace, &memtrace, &scratch.path)?;
    crate::bench_kernel::bench_kernel(workspace, &memtrace)?;
    hook_cost::measure(
        workspace,
        &memtrace,
        &workload,
        options.iterations,
        options.runs,
        &scratch,
    )?;
    sustained_rate(workspace, &memtrace, &scratch.path, options.rate_rounds)
}

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
fn sustained_rate(
    workspace: &Workspace,
    memtrace: &Path,
    scratch: &Path,
    rounds: u64,
) -> Result<()> {
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
struct Observed {
    /// The workload's flood, as it measured it.
    loop_time: Duration,
    /// memtrace's user + system time, at the last look before it exited.
    cpu: Duration,
    /// memtrace's VmHWM.
    peak_rss_bytes: u64,
}

/// Runs `command` (memtrace, perhaps under sudo), sampling memtrace's /proc entry until it
/// exits.
fn observe(command: &mut Command, memtrace: &Path) -> Result<Observed> {
    let mut child = command.spawn()?;
    let ticks_per_second = 100.0; // USER_HZ on Linux.
    let mut cpu = Duration::ZERO;
    let mut peak_rss_bytes = 0;
    let mut pid = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        pid = pid.or_else(|| process_running(child.id(), memtrace));
        if let Some(pid) = pid {
            if let Some(ticks) = cpu_ticks(pid) {
                cpu = Duration::from_secs_f64(ticks as f64 / ticks_per_second);
            }
            peak_rss_bytes = peak_rss_bytes.max(vm_hwm(pid).unwrap_or(0));
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

/// `pid` itself if it runs `program`, else its child that does (under sudo).
fn process_running(pid: u32, program: &Path) -> Option<u32> {
    let runs = |pid: u32| {
        fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .zip(fs::canonicalize(program).ok())
            .is_some_and(|(exe, program)| exe == program)
    };
    if runs(pid) {
        return Some(pid);
    }
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .find(|&child| runs(child))
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Builds the workload, tests/programs/mmap_loop.c, into target/xtask/.
fn compile_workload(workspace: &Workspace) -> Result<PathBuf> {
    let source = workspace.root.join("tests/programs/mmap_loop.c");
    let output_dir = workspace.xtask_dir();
    fs::create_dir_all(&output_dir)
        .with_context(|| format!("creating {}", output_dir.display()))?;
    let binary = output_dir.join("mmap_loop");
    cmd::step("compiling the workload (tests/programs/mmap_loop.c)");
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Wextra", "-o"])
            .arg(&binary)
            .arg(&source),
    )?;
    Ok(binary)
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

/// The top-level "events" and "lost_events" of a memtrace JSON report.
fn read_event_counts(report: &Path) -> Result<EventCounts> {
    let text = fs::read_to_string(report)
        .with_context(|| format!("reading memtrace's report {}", report.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing memtrace's report {}", report.display()))?;
    let field = |name: &str| {
        json.get(name)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("{} has no top-level number {name:?}", report.display()))
    };
    Ok(EventCounts {
        events: field("events")?,
        lost_events: field("lost_events")?,
    })
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

fn median<T: Ord + Copy>(mut values: Vec<T>) -> T {
    values.sort_unstable();
    values[values.len() / 2]
}

/// "memtrace --record" -> "memtrace-record", for per-run directory names.
fn slug(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// A per-invocation temporary directory for reports and recordings, removed when done.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("memtrace-bench-{}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory in /tmp is harmless.
        let _ = fs::remove_dir_all(&self.path);
    }
}
