//! `memtrace replay FILE`: a recording's report, by the mode that recorded it.

use std::process::ExitCode;

use super::{
    args::{positive_seconds, seconds_option, ReplayArgs},
    kernel::write_kernel_report,
    report_output::{write_user_report, Outputs},
};
use crate::{
    kernel_mode, output,
    replay::{self, ReplayOptions, Replayed},
    report::{SessionInfo, Source},
};

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let until = args
        .until
        .map(|seconds| seconds_option("--until", seconds))
        .transpose()?;
    let outputs = Outputs::check(None, &args.output)?;
    for output in outputs.reports() {
        output::refuse_input(output, ("the recording", &args.file))?;
    }
    let since = args
        .since
        .map(|seconds| seconds_option("--since", seconds))
        .transpose()?;
    if let (Some(since), Some(until)) = (since, until) {
        if since > until {
            anyhow::bail!("--since must not be later than --until");
        }
    }
    let replay = replay::run(&ReplayOptions {
        path: args.file.clone(),
        until,
        print_events: args.events,
        interval: positive_seconds("--interval", args.interval)?,
        since,
        keep_exited: args.exited.keep_exited,
        pids: args.pids.clone(),
    })?;
    // A damaged recording still gets its report (nothing read is lost), then a non-zero exit
    // with one line per problem, --until or not.
    let mut damaged = false;
    if let Some(error) = &replay.stopped_by {
        eprintln!(
            "memtrace: replay stopped early: {}",
            crate::escape::terminal(&error.to_string())
        );
        damaged = true;
    }
    for problem in replay.outcome.problems() {
        eprintln!("memtrace: {problem}");
        damaged = true;
    }
    if !replay.outcome.sequenced {
        eprintln!(
            "memtrace: this recording is format version 1, which does not number its frames: only its trailer's event count can be checked"
        );
    }
    match replay.consumer {
        Replayed::Kernel(model) => {
            let report = kernel_mode::report::build(&model, Source::Replay);
            write_kernel_report(&report, &args.output, &outputs)?;
        }
        Replayed::User(mut user_mode) => {
            let info = SessionInfo {
                source: Source::Replay,
                events: replay.stream.events(),
                lost: replay.stream.lost(),
                // What the live session said of its hooks, as its recording carries it.
                backend: replay.header.backend.clone(),
            };
            write_user_report(&mut user_mode, &info, &args.pids, &args.output, &outputs)?;
        }
    }
    Ok(if damaged {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
