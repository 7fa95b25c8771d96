//! `cargo xtask bench`: measurements, never pass/fail tests: the targets are printed next to
//! the numbers for a human to judge. One module per benchmark:
//! - [`overhead`]: how much memtrace slows down a syscall-heavy process, next to strace, and
//!   how compact and fast to replay its recordings are;
//! - [`footprint`]: how much memory memtrace takes;
//! - [`kernel_mode`]: what `memtrace kernel` costs the other processes;
//! - [`hook_cost`]: memtrace's programs next to empty ones on the same hooks;
//! - [`sustained_rate`]: the highest event rate taken with nothing lost.
//!
//! [`proc`] reads what they observe of running processes.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::{build, cmd, setup, workspace::Workspace};

mod footprint;
mod hook_cost;
mod kernel_mode;
mod overhead;
mod proc;
mod stacks;
mod sustained_rate;

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
    /// Only measure call stacks at scale: peak RSS on a large executable, samples/s.
    #[arg(long)]
    stacks_only: bool,
}

pub fn bench(workspace: &Workspace, options: &BenchOptions) -> Result<()> {
    setup::setup(workspace, setup::Purpose::Bench)?;
    let memtrace = build::build(workspace)?;
    let scratch = ScratchDir::create()?;
    if options.footprint_only {
        return footprint::measure(workspace, &memtrace, &scratch.path);
    }
    if options.rate_only {
        return sustained_rate::measure(workspace, &memtrace, &scratch.path, options.rate_rounds);
    }
    if options.stacks_only {
        return stacks::measure(workspace, &memtrace, &scratch.path);
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

    overhead::measure(
        &memtrace,
        &workload,
        options.iterations,
        options.runs,
        &scratch,
    )?;
    footprint::measure(workspace, &memtrace, &scratch.path)?;
    kernel_mode::measure(workspace, &memtrace)?;
    hook_cost::measure(
        workspace,
        &memtrace,
        &workload,
        options.iterations,
        options.runs,
        &scratch,
    )?;
    sustained_rate::measure(workspace, &memtrace, &scratch.path, options.rate_rounds)?;
    stacks::measure(workspace, &memtrace, &scratch.path)
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

/// The top-level "events" and "lost_events" of a memtrace JSON report.
#[derive(Clone, Copy)]
struct EventCounts {
    events: u64,
    lost_events: u64,
}

/// Reads them.
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
