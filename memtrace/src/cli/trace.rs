//! `memtrace [OPTIONS] -- CMD`, `--pid`, `--cgroup`: a live user-mode session and its report.

use std::process::ExitCode;

use anyhow::Context as _;

use super::{
    args::{positive_seconds, TraceArgs},
    exit_code_of,
    report_output::{write_user_report, Outputs},
};
use crate::{
    report::{SessionInfo, Source},
    session::{self, LiveOptions, Target},
    user_mode::UserModeOptions,
};

pub fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let target = match (args.pid, &args.cgroup, args.command.is_empty()) {
        (Some(pid), _, _) => Target::Pid(pid),
        (None, Some(path), _) => Target::Cgroup(crate::cgroup::Cgroup::resolve(path)?),
        (None, None, false) => Target::Command(args.command.clone()),
        (None, None, true) => anyhow::bail!(
            "nothing to trace: give a command (`memtrace -- CMD`), a process (`memtrace --pid PID`) or a cgroup (`memtrace --cgroup PATH`)"
        ),
    };
    let cgroup_ids = match &target {
        Target::Cgroup(cgroup) => vec![cgroup.id],
        _ => Vec::new(),
    };
    let mut outputs = Outputs::check(args.record.as_deref(), &args.output)?;
    let options = LiveOptions {
        target,
        probes: args.probes.options(args.follow, cgroup_ids),
        print_events: args.events,
        duration: positive_seconds("--duration", args.duration)?,
        record: outputs.record.take(),
        command_line: std::env::args().collect(),
        interval: positive_seconds("--interval", args.interval)?,
        user_mode: UserModeOptions {
            keep_exited: args.exited.keep_exited,
            ..UserModeOptions::default()
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(session::run(options))?;
    if outcome.undecodable > 0 {
        eprintln!(
            "memtrace: {} kernel records could not be decoded",
            outcome.undecodable
        );
    }
    if outcome.unreadable_images > 0 {
        eprintln!(
            "memtrace: the layout the kernel made at {} exec(s) could not be rebuilt (see the warnings above); those images are missing from their processes' layouts",
            outcome.unreadable_images
        );
    }
    let stream = outcome.stream;
    let mut user_mode = outcome.user_mode;
    let info = SessionInfo {
        source: Source::Live,
        events: stream.events(),
        lost: stream.lost(),
        backend: Some(outcome.backend.info()),
    };
    // Whatever happens to the report, what the recording misses is said too.
    let written = write_user_report(&mut user_mode, &info, &[], &args.output, &outputs);
    if user_mode.unreadable_modules() > 0 {
        eprintln!(
            "memtrace: {} module file(s) of traced processes could not be read as the process maps them (it was gone, or the file there is not the mapped one): frames in them show module+offset, and their stacks were walked by frame pointers only",
            user_mode.unreadable_modules()
        );
    }
    let recording_failed = stream.recording_failure();
    if let Some(failure) = &recording_failed {
        eprintln!("memtrace: {}", crate::escape::terminal(failure));
    }
    let lost = stream.lost();
    if lost.total() > 0 {
        eprintln!(
            "memtrace: {} events lost (ring buffer full: {}, in-flight table full: {}); try a larger --ring-buffer-size",
            lost.total(),
            lost.ring_full,
            lost.pending_full
        );
    }
    written?;
    // A recording that misses events is a failure of memtrace's, whatever the command did.
    Ok(match outcome.command_status {
        _ if recording_failed.is_some() => ExitCode::FAILURE,
        Some(status) => exit_code_of(status),
        None => ExitCode::SUCCESS,
    })
}
