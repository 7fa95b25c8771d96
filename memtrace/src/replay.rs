//! Replaying a recording through the same pipeline a live session uses.

use std::{path::PathBuf, time::Duration};

use crate::{
    pipeline::Pipeline,
    record::{RecordError, RecordingHeader, RecordingReader, ReplayOutcome},
};

pub struct ReplayOptions {
    pub path: PathBuf,
    /// Stop at this point of the session (from the recording's start).
    pub until: Option<Duration>,
    pub print_events: bool,
    /// `--interval`: a block of growth every this long of the recorded session.
    pub interval: Option<Duration>,
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
    replay_from(reader, options.until, options.interval, printer)
}

/// The replay of a recording already opened, from any source (a file; bytes in `cargo xtask
/// fuzz`).
pub fn replay_from<R: std::io::Read>(
    mut reader: RecordingReader<R>,
    until: Option<Duration>,
    interval: Option<Duration>,
    printer: Option<Box<dyn std::io::Write + Send>>,
) -> Result<Replayed, RecordError> {
    let header = reader.header().clone();
    let mut pipeline = Pipeline::new(printer, None);
    if let Some(period) = interval {
        pipeline.print_intervals(crate::session::interval_printer(period));
    }
    let stop_at = until.map(|until| {
        header
            .clock_base
            .monotonic_ns
            .saturating_add(until.as_nanos() as u64)
    });
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
