//! A live tracing session: load the probes, start or attach to the target, pump the ring
//! buffer through the pipeline until the session ends, and hand back what it saw.

use std::{
    collections::HashMap,
    ffi::OsString,
    io::Write,
    path::PathBuf,
    process::ExitStatus,
    time::{Duration, Instant},
};

use nix::time::{clock_gettime, ClockId};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    capture::{Capture, Captured},
    event::{Abi, Comm, Event, EventBody, LostRecord},
    launch::{self, GatedCommand, LaunchError},
    pipeline::Pipeline,
    probes::{backend::Attached, preflight, ProbeError, ProbeOptions, Probes},
    procfs,
    record::{ClockBase, RecordError, RecordingHeader, RecordingWriter, WriterOptions},
};

#[derive(Clone, Debug)]
pub enum Target {
    /// Start this command and trace it from its exec on.
    Command(Vec<OsString>),
    /// Attach to a running process.
    Pid(u32),
}

#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub target: Target,
    pub probes: ProbeOptions,
    /// Print one line per event on stderr.
    pub print_events: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Write the event stream to this file.
    pub record: Option<PathBuf>,
    /// memtrace's own command line, kept in the recording.
    pub command_line: Vec<String>,
    /// `--interval`: print a block of growth on stderr every this long.
    pub interval: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no such process: {0}")]
    NoSuchProcess(u32),
    #[error("cannot trace process {0}: {1}")]
    Untraceable(u32, &'static str),
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("reading the ring buffer: {0}")]
    Ring(std::io::Error),
    #[error("snapshot of process {0}: {1}")]
    Snapshot(u32, std::io::Error),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

impl SessionError {
    /// The verifier's log, when it rejected one of the programs.
    pub fn verifier_log(&self) -> Option<String> {
        match self {
            Self::Probes(error) => error.verifier_log(),
            _ => None,
        }
    }
}

/// What a finished session leaves behind.
pub struct LiveOutcome {
    pub pipeline: Pipeline,
    /// The command's exit status, for `memtrace -- CMD`.
    pub command_status: Option<ExitStatus>,
    /// Ring records that could not be decoded.
    pub undecodable: u64,
    /// The syscall hooks the session used.
    pub backend: Attached,
}

/// The time of day on the kernel's event clock (`bpf_ktime_get_ns` is CLOCK_MONOTONIC).
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

pub fn realtime_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_REALTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

pub async fn run(options: LiveOptions) -> Result<LiveOutcome, SessionError> {
    // Checked before the probes load, so a session that cannot mean anything never starts.
    match options.target {
        Target::Pid(pid) => {
            if !procfs::process_exists(pid) {
                return Err(SessionError::NoSuchProcess(pid));
            }
            if let Some(reason) = procfs::untraceable_reason(pid) {
                return Err(SessionError::Untraceable(pid, reason));
            }
        }
        Target::Command(_) => {
            launch::invoking_user()?;
        }
    }
    let mut probes = Probes::load(&options.probes)?;
    let mut capture = Capture::new(probes.take_events()?).map_err(SessionError::Ring)?;
    let mut pipeline = Pipeline::new(printer(options.print_events), recorder(&options)?);
    let mut interval_ticks = options.interval.map(|period| {
        pipeline.print_intervals(interval_printer(period));
        tokio::time::interval(period)
    });

    // Events a process made before its snapshot are already part of the snapshot.
    let mut snapshot_taken_at: HashMap<u32, u64> = HashMap::new();
    let mut command = None;
    match &options.target {
        Target::Command(argv) => {
            let gated = GatedCommand::spawn(argv)?;
            probes.trace(gated.pid)?;
            gated.release()?;
            command = Some(gated);
        }
        Target::Pid(pid) => {
            let mut pids = vec![*pid];
            if options.probes.follow_children {
                pids.extend(procfs::descendants(*pid));
            }
            for &pid in &pids {
                probes.trace(pid)?;
            }
            for &pid in &pids {
                let taken_at = monotonic_ns();
                match procfs::snapshot(pid) {
                    Ok(snapshot) => {
                        snapshot_taken_at.insert(pid, taken_at);
                        pipeline.feed(&snapshot_event(pid, taken_at, snapshot))?;
                    }
                    // A child that exited while we looked is no longer of interest.
                    Err(_) if pid != options.target_pid() => {}
                    Err(error) => return Err(SessionError::Snapshot(pid, error)),
                }
            }
            // Scripts wait for this line before they make the target act.
            eprintln!(
                "memtrace: attached to {} process{} ({}); Ctrl-C to stop",
                pids.len(),
                if pids.len() == 1 { "" } else { "es" },
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }

    let mut command_wait = command.map(|gated| {
        let mut child = gated.child;
        tokio::task::spawn_blocking(move || child.wait())
    });
    let mut interrupt = signal(SignalKind::interrupt()).map_err(SessionError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(SessionError::Signals)?;
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut command_status = None;
    let mut batch = Vec::new();
    let mut lost = LostRecord::default();

    loop {
        tokio::select! {
            result = capture.next_batch(&mut batch) => result.map_err(SessionError::Ring)?,
            _ = interrupt.recv() => {
                // The command shares our terminal and gets the Ctrl-C too: let it decide
                // whether to end; a traced pid is never ours to stop.
                if command_wait.is_none() { break; }
            }
            _ = terminate.recv() => break,
            _ = sleep_until(deadline) => break,
            _ = next_tick(&mut interval_ticks) => pipeline.tick_interval(monotonic_ns()),
            status = wait_for(&mut command_wait) => {
                command_status = status.ok().and_then(Result::ok);
                command_wait = None;
            }
        }
        feed_batch(&mut pipeline, &mut batch, &snapshot_taken_at)?;
        probes.flush_logs();
        lost = report_new_losses(&probes, &mut pipeline, lost)?;
        pipeline.flush_recording_if_due(Instant::now());
        let command_done = command_status.is_some() && !options.probes.follow_children;
        if command_done || probes.traced_count()? == 0 {
            break;
        }
    }

    // Whatever the kernel wrote before the end still belongs to the session.
    capture.drain(&mut batch);
    feed_batch(&mut pipeline, &mut batch, &snapshot_taken_at)?;
    probes.flush_logs();
    report_new_losses(&probes, &mut pipeline, lost)?;
    pipeline.finish_recording()?;
    if command_status.is_none() {
        if let Some(wait) = command_wait {
            // Ended by SIGTERM or --duration: the command keeps running, untraced.
            drop(wait);
        }
    }
    Ok(LiveOutcome {
        pipeline,
        command_status,
        undecodable: capture.undecodable,
        backend: probes.backend().clone(),
    })
}

impl LiveOptions {
    fn target_pid(&self) -> u32 {
        match self.target {
            Target::Pid(pid) => pid,
            Target::Command(_) => 0,
        }
    }
}

fn printer(enabled: bool) -> Option<Box<dyn Write + Send>> {
    enabled.then(|| Box::new(std::io::LineWriter::new(std::io::stderr())) as Box<dyn Write + Send>)
}

fn recorder(options: &LiveOptions) -> Result<Option<RecordingWriter>, RecordError> {
    let Some(path) = &options.record else {
        return Ok(None);
    };
    let header = RecordingHeader {
        kernel_release: preflight::kernel_release(),
        command_line: options.command_line.clone(),
        clock_base: ClockBase {
            monotonic_ns: monotonic_ns(),
            realtime_ns: realtime_ns(),
        },
        started_by: format!("memtrace {}", env!("CARGO_PKG_VERSION")),
    };
    RecordingWriter::create(path, &header, WriterOptions::default()).map(Some)
}

fn snapshot_event(pid: u32, time_ns: u64, snapshot: crate::event::SnapshotRecord) -> Event {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| Comm::from_str_lossy(c.trim_end()))
        .unwrap_or_default();
    let abi = if procfs::is_ia32(pid) {
        Abi::I386
    } else {
        Abi::X86_64
    };
    Event {
        time_ns,
        pid,
        tid: pid,
        comm,
        abi,
        body: EventBody::Snapshot(snapshot),
    }
}

fn feed_batch(
    pipeline: &mut Pipeline,
    batch: &mut Vec<Captured>,
    snapshot_taken_at: &HashMap<u32, u64>,
) -> Result<(), RecordError> {
    let before_snapshot = |pid: u32, time_ns: u64| {
        snapshot_taken_at
            .get(&pid)
            .is_some_and(|&taken_at| time_ns < taken_at)
    };
    for captured in batch.drain(..) {
        match captured {
            Captured::Event(event) if !before_snapshot(event.pid, event.time_ns) => {
                pipeline.feed(&event)?;
            }
            Captured::Stack(stack) if !before_snapshot(stack.pid, stack.time_ns) => {
                pipeline.feed_stack(&stack)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Turns a change in the kernel's loss counters into a `Lost` event, so the loss is in the
/// report and in the recording at the point where it happened.
fn report_new_losses(
    probes: &Probes,
    pipeline: &mut Pipeline,
    previous: LostRecord,
) -> Result<LostRecord, SessionError> {
    let lost = probes.lost()?;
    if lost != previous {
        pipeline.feed(&Event {
            time_ns: monotonic_ns(),
            pid: 0,
            tid: 0,
            comm: Comm::default(),
            abi: Abi::Unknown,
            body: EventBody::Lost(lost),
        })?;
    }
    Ok(lost)
}

/// The `--interval` blocks go to stderr, like `--events`.
pub fn interval_printer(period: Duration) -> crate::interval::IntervalPrinter {
    crate::interval::IntervalPrinter::new(
        period.as_nanos().min(u64::MAX.into()) as u64,
        Box::new(std::io::LineWriter::new(std::io::stderr())),
    )
}

async fn next_tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

type CommandWait = tokio::task::JoinHandle<std::io::Result<ExitStatus>>;

async fn wait_for(
    wait: &mut Option<CommandWait>,
) -> Result<std::io::Result<ExitStatus>, tokio::task::JoinError> {
    match wait {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}
