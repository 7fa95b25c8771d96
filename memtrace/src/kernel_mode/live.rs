//! A live kernel-mode session: attach the allocator programs, snapshot their outstanding
//! table once per snapshot period through the stream (into the recording, if any) into kernel
//! mode's model, until the duration ends, Ctrl-C or SIGTERM, or the traced processes are gone.

use std::{ffi::OsString, process::ExitStatus, time::Duration};

use tokio::signal::unix::{signal, SignalKind};

use super::{capture::SnapshotTaker, kallsyms::KernelSymbols, model::KernelModel};
use crate::{
    clock::{monotonic_ns, sleep_until},
    event::{Event, EventBody},
    launch::GatedCommand,
    probes::kernel_mode::{KernelModeOptions, KernelModeProbes},
    procfs,
    recording::{Mode, RecordingHeader, RecordingWriter, WriterOptions},
    stream::Stream,
};

/// Whose allocations count.
#[derive(Clone, Debug)]
pub enum KernelTarget {
    /// Every allocation in the system.
    System,
    /// Allocations made in this process's context (and its children's with `--follow`).
    Pid(u32),
    /// A command started for the purpose.
    Command(Vec<OsString>),
}

#[derive(Clone, Debug)]
pub struct KernelOptions {
    pub target: KernelTarget,
    pub follow: bool,
    pub stacks: bool,
    /// Time between two kernel snapshots.
    pub snapshot_period: Duration,
    pub duration: Option<Duration>,
    pub record: Option<crate::output::Output>,
    pub max_outstanding: u32,
    pub pages: bool,
    pub command_line: Vec<String>,
}

pub struct KernelOutcome {
    pub stream: Stream,
    pub model: KernelModel,
    pub command_status: Option<ExitStatus>,
}

pub async fn run(options: KernelOptions) -> anyhow::Result<KernelOutcome> {
    if let KernelTarget::Pid(pid) = options.target {
        anyhow::ensure!(procfs::process_exists(pid), "no process with pid {pid}");
    }
    let symbols = KernelSymbols::load().unwrap_or_default();
    if symbols.is_empty() {
        eprintln!(
            "memtrace: /proc/kallsyms shows no addresses (kernel.kptr_restrict?): call sites stay addresses"
        );
    }
    let mut probes = KernelModeProbes::load(&KernelModeOptions {
        filter_pids: !matches!(options.target, KernelTarget::System),
        follow_children: options.follow,
        stacks: options.stacks,
        max_outstanding: options.max_outstanding,
        pages: options.pages,
    })?;
    for tracepoint in &probes.layout.unsupported {
        eprintln!(
            "memtrace: this kernel's {tracepoint} tracepoint has an unknown prototype: not traced"
        );
    }
    let recorder = match &options.record {
        Some(path) => Some(RecordingWriter::create(
            path,
            &RecordingHeader::now(Mode::Kernel, &options.command_line, None),
            WriterOptions::default(),
        )?),
        None => None,
    };
    let mut stream = Stream::new(None, recorder);
    let mut model = KernelModel::default();
    let page_size = u64::from(probes.layout.config.page_size);
    let mut taker = SnapshotTaker::new(symbols, page_size);

    let mut command = None;
    let mut pids = Vec::new();
    match &options.target {
        KernelTarget::System => {}
        KernelTarget::Pid(pid) => {
            pids.push(*pid);
            if options.follow {
                pids.extend(procfs::descendants(*pid));
            }
        }
        KernelTarget::Command(argv) => {
            let gated = GatedCommand::spawn(argv)?;
            pids.push(gated.pid);
            command = Some(gated);
        }
    }
    for &pid in &pids {
        probes.trace(pid)?;
    }
    // The first snapshot holds the kernel's totals at the start: the baseline of the report.
    feed_snapshot(&mut stream, &mut model, &mut taker, &probes)?;
    // Scripts wait for this line before they make the target act.
    eprintln!(
        "memtrace: attached to the kernel's allocators ({}); Ctrl-C to stop",
        match &options.target {
            KernelTarget::System => "system-wide".to_owned(),
            _ => format!(
                "allocations of pid {}{}",
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                if options.follow { " and children" } else { "" }
            ),
        }
    );
    let mut command_wait = match command {
        Some(gated) => {
            gated.release()?;
            let mut child = gated.child;
            Some(tokio::task::spawn_blocking(move || child.wait()))
        }
        None => None,
    };

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut next_snapshot = tokio::time::Instant::now() + options.snapshot_period;
    // How often to check that the traced processes are still there.
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    let mut command_status = None;
    loop {
        tokio::select! {
            _ = interrupt.recv() => {
                // A command shares our terminal and gets the Ctrl-C too: let it decide.
                if command_wait.is_none() { break; }
            }
            _ = terminate.recv() => break,
            _ = sleep_until(deadline) => break,
            status = wait_for(&mut command_wait) => {
                command_status = status.ok().and_then(Result::ok);
                command_wait = None;
                if !options.follow { break; }
            }
            _ = tokio::time::sleep_until(next_snapshot) => {
                feed_snapshot(&mut stream, &mut model, &mut taker, &probes)?;
                next_snapshot += options.snapshot_period;
            }
            _ = poll.tick() => {
                stream.flush_recording_if_due(std::time::Instant::now());
                if !pids.is_empty() && !pids.iter().any(|&pid| procfs::process_exists(pid))
                    && (!options.follow || probes.traced_count()? == 0)
                {
                    break;
                }
            }
        }
    }
    feed_snapshot(&mut stream, &mut model, &mut taker, &probes)?;
    stream.finish();
    Ok(KernelOutcome {
        stream,
        model,
        command_status,
    })
}

fn feed_snapshot(
    stream: &mut Stream,
    model: &mut KernelModel,
    taker: &mut SnapshotTaker,
    probes: &KernelModeProbes,
) -> anyhow::Result<()> {
    let snapshot = taker.take(probes)?;
    stream.feed(
        &Event::of_session(
            monotonic_ns(),
            EventBody::KernelSnapshot(Box::new(snapshot)),
        ),
        model,
    );
    Ok(())
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
