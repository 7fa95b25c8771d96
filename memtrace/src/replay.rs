//! Replaying a recording through the same pipeline a live session uses.

use std::{path::PathBuf, time::Duration};

use crate::{
    pipeline::Pipeline,
    recording::{RecordError, RecordingHeader, RecordingReader, ReplayOutcome},
    report::{folded::ExitedPrograms, ReportOptions},
};

pub struct ReplayOptions {
    pub path: PathBuf,
    /// Stop at this point of the session (from the recording's start).
    pub until: Option<Duration>,
    pub print_events: bool,
    /// `--interval`: a block of growth every this long of the recorded session.
    pub interval: Option<Duration>,
    /// `--since`: the report counts what was created from this point on (from the start).
    pub since: Option<Duration>,
    /// `--keep-exited`: exited processes listed in full; older ones are folded by program.
    pub keep_exited: usize,
    /// `--pid`: the processes reported, never folded.
    pub pids: Vec<u32>,
}

pub struct Replayed {
    pub pipeline: Pipeline,
    pub header: RecordingHeader,
    pub outcome: ReplayOutcome,
    /// Why reading stopped early, if it did; everything before it was replayed.
    pub stopped_by: Option<RecordError>,
}

/// Opening errors (not a recording, another version) are returned; an error in the middle
/// ends the replay but keeps what was read, so the report still shows it.
pub fn run(options: &ReplayOptions) -> Result<Replayed, RecordError> {
    let reader = RecordingReader::open(&options.path)?;
    let printer = options.print_events.then(|| {
        Box::new(std::io::LineWriter::new(std::io::stderr())) as Box<dyn std::io::Write + Send>
    });
    replay_from(reader, options, printer)
}

/// The replay of a recording already opened, from any source (a file; bytes in `cargo xtask
/// fuzz`).
/// `options.path` is not read.
pub fn replay_from<R: std::io::Read>(
    mut reader: RecordingReader<R>,
    options: &ReplayOptions,
    printer: Option<Box<dyn std::io::Write + Send>>,
) -> Result<Replayed, RecordError> {
    let header = reader.header().clone();
    let mut pipeline = Pipeline::new(printer, None);
    let from_start = |since: Duration| {
        header
            .clock_base
            .monotonic_ns
            .saturating_add(since.as_nanos() as u64)
    };
    let report_options = ReportOptions {
        since_ns: options.since.map_or(0, from_start),
        ..ReportOptions::default()
    };
    pipeline.fold_exited(
        options.keep_exited,
        ExitedPrograms::new(report_options, options.pids.clone()),
    );
    if let Some(period) = options.interval {
        pipeline.print_intervals(crate::session::interval_printer(period));
    }
    let stop_at = options.until.map(from_start);
    let mut stopped_by = None;
    for item in &mut reader {
        match item {
            Ok(event) => {
                // Past --until the rest is still read, not modelled: damage after that point
                // must fail the replay as it would without --until.
                if stop_at.is_some_and(|stop_at| event.time_ns > stop_at) {
                    continue;
                }
                pipeline.feed(&event)?;
            }
            Err(error) => {
                stopped_by = Some(error);
                break;
            }
        }
    }
    pipeline.finish_recording()?;
    Ok(Replayed {
        pipeline,
        header,
        outcome: reader.outcome(),
        stopped_by,
    })
}
