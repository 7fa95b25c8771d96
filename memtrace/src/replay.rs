//! Replaying a recording: its events through the same stream a live session uses, into the
//! consumer of the mode its header names.

use std::{path::PathBuf, time::Duration};

use crate::{
    event::{Event, EventBody},
    kernel_mode::model::KernelModel,
    recording::{Mode, RecordError, RecordingHeader, RecordingReader, ReplayOutcome},
    report::ReportOptions,
    stream::{self, Consumer, Stream},
    user_mode::{interval, UserMode, UserModeOptions},
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

/// The consumer a replay fed, by the recording's mode.
pub enum Replayed {
    User(Box<UserMode>),
    Kernel(KernelModel),
}

pub struct Replay {
    pub consumer: Replayed,
    pub stream: Stream,
    pub header: RecordingHeader,
    pub outcome: ReplayOutcome,
    /// Why reading stopped early, if it did; everything before it was replayed.
    pub stopped_by: Option<RecordError>,
}

/// Opening errors (not a recording, another version) are returned; an error in the middle
/// ends the replay but keeps what was read, so the report still shows it.
pub fn run(options: &ReplayOptions) -> Result<Replay, RecordError> {
    let reader = RecordingReader::open(&options.path)?;
    replay_from(
        reader,
        options,
        stream::stderr_printer(options.print_events),
    )
}

/// The replay of a recording already opened, from any source (a file; bytes in `cargo xtask
/// fuzz`). `options.path` is not read.
pub fn replay_from<R: std::io::Read>(
    mut reader: RecordingReader<R>,
    options: &ReplayOptions,
    printer: Option<Box<dyn std::io::Write + Send>>,
) -> Result<Replay, RecordError> {
    let header = reader.header().clone();
    let from_start = |since: Duration| {
        header
            .clock_base
            .monotonic_ns
            .saturating_add(since.as_nanos() as u64)
    };
    let stop_at = options.until.map(from_start);
    let mut stream = Stream::new(printer, None);
    let mut stopped_by = None;
    // The first event tells the mode of recordings whose header does not; it stays lent by
    // the reader until it is fed.
    let mut first = false;
    match reader.read_event() {
        Some(Ok(_)) => first = true,
        Some(Err(error)) => stopped_by = Some(error),
        None => {}
    }
    let mut consumer = match mode_of(&header, first.then(|| reader.current())) {
        Mode::Kernel => Replayed::Kernel(KernelModel::default()),
        Mode::User | Mode::Agent => {
            let mut user_mode = UserMode::new(UserModeOptions {
                keep_exited: options.keep_exited,
                report: ReportOptions {
                    since_ns: options.since.map_or(0, from_start),
                    ..ReportOptions::default()
                },
                keep_pids: options.pids.clone(),
            });
            if let Some(period) = options.interval {
                user_mode.print_intervals(interval::stderr_printer(period));
            }
            Replayed::User(Box::new(user_mode))
        }
    };
    let feed = |event: &Event, stream: &mut Stream, consumer: &mut Replayed| {
        // Past --until the rest is still read, not modelled: damage after that point must
        // fail the replay as it would without --until.
        if stop_at.is_none_or(|stop_at| event.time_ns <= stop_at) {
            stream.feed(event, consumer.as_consumer());
        }
    };
    if first {
        feed(reader.current(), &mut stream, &mut consumer);
    }
    // Events are lent by the reader, not moved out: see `RecordingReader::read_event`.
    while stopped_by.is_none() {
        match reader.read_event() {
            Some(Ok(event)) => feed(event, &mut stream, &mut consumer),
            Some(Err(error)) => stopped_by = Some(error),
            None => break,
        }
    }
    stream.finish();
    Ok(Replay {
        consumer,
        stream,
        header,
        outcome: reader.outcome(),
        stopped_by,
    })
}

impl Replayed {
    fn as_consumer(&mut self) -> &mut dyn Consumer {
        match self {
            Self::User(user_mode) => user_mode.as_mut(),
            Self::Kernel(model) => model,
        }
    }
}

/// The mode the header names. Recordings made before the header named it are told by their
/// first event: kernel mode's first event is always the snapshot of the kernel's totals at
/// the start, which no user-mode session records.
fn mode_of(header: &RecordingHeader, first: Option<&Event>) -> Mode {
    match (header.mode, first) {
        (Some(mode), _) => mode,
        (None, Some(event)) if matches!(event.body, EventBody::KernelSnapshot(_)) => Mode::Kernel,
        (None, _) => Mode::User,
    }
}
