//! The mode-free event stream. Every event of a session, captured live or read back from a
//! recording, passes here once, in order: to the `--events` printer, to the recorder, into the
//! counts of events and losses, and then to the consumer of the session's mode (user mode's
//! model, kernel mode's, the agent's). The stream knows nothing of what consumes it, so a
//! replay computes exactly what the live session computed, and a new mode is a new consumer.

use std::{fs::File, io::Write, time::Instant};

use crate::{
    event::{Event, EventBody, Losses},
    event_line,
    recording::{RecordError, RecordingSink, RecordingWriter},
};

/// What a mode does with the events.
pub trait Consumer {
    /// Takes one event, in stream order.
    fn consume(&mut self, event: &Event);
}

pub struct Stream<W: RecordingSink = File> {
    printer: Option<Box<dyn Write + Send>>,
    recorder: Option<RecordingWriter<W>>,
    /// Why the recorder stopped, if it did; the session goes on without it.
    recording_failure: Option<RecordingFailure>,
    /// Everything fed, loss reports, stacks and modules included: what a complete recording
    /// would hold.
    stream_events: u64,
    /// Events fed, not counting loss reports.
    events: u64,
    /// The latest loss totals.
    lost: Losses,
}

impl<W: RecordingSink> Stream<W> {
    pub fn new(
        printer: Option<Box<dyn Write + Send>>,
        recorder: Option<RecordingWriter<W>>,
    ) -> Self {
        Self {
            printer,
            recorder,
            recording_failure: None,
            stream_events: 0,
            events: 0,
            lost: Losses::default(),
        }
    }

    /// Records, prints and counts one event, then hands it to `consumer`. A failing recorder
    /// (a full disk) stops recording but not the session: every event still reaches the
    /// consumer, so the report is whole, and [`recording_failure`](Self::recording_failure)
    /// says what the recording misses. A failing printer (closed pipe) only stops printing.
    pub fn feed(&mut self, event: &Event, consumer: &mut dyn Consumer) {
        self.stream_events += 1;
        if let Some(recorder) = &mut self.recorder {
            if let Err(error) = recorder.write_event(event) {
                self.stop_recording(error);
            }
        }
        if let Some(printer) = &mut self.printer {
            if let Some(line) = event_line::format(event) {
                if writeln!(printer, "{line}").is_err() {
                    self.printer = None;
                }
            }
        }
        match &event.body {
            EventBody::Lost(lost) => self.lost = *lost,
            _ => self.events += 1,
        }
        consumer.consume(event);
    }

    /// Feeds each event in turn.
    pub fn feed_all(&mut self, events: &[Event], consumer: &mut dyn Consumer) {
        for event in events {
            self.feed(event, consumer);
        }
    }

    /// Events fed, not counting loss reports.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The latest loss totals the stream carried.
    pub fn lost(&self) -> Losses {
        self.lost
    }

    /// Writes the recorder's open frame when its flush interval has passed (see
    /// [`RecordingWriter::flush_if_due`]).
    pub fn flush_recording_if_due(&mut self, now: Instant) {
        if let Some(recorder) = &mut self.recorder {
            if let Err(error) = recorder.flush_if_due(now) {
                self.stop_recording(error);
            }
        }
    }

    /// Ends the recording with its trailer, so a reader knows it is complete, and flushes the
    /// printer.
    pub fn finish(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            let kept = recorder.events_flushed();
            if let Err(error) = recorder.finish(self.lost) {
                self.recording_failure = Some(RecordingFailure {
                    error,
                    events_kept: kept,
                });
            }
        }
        if let Some(printer) = &mut self.printer {
            let _ = printer.flush();
        }
    }

    /// Ends the recording and gives back its sink (a recording kept in memory); `None` when
    /// there was no recorder or it failed.
    pub fn finish_into_sink(&mut self) -> Option<W> {
        let recorder = self.recorder.take()?;
        match recorder.finish(self.lost) {
            Ok(sink) => Some(sink),
            Err(error) => {
                self.recording_failure = Some(RecordingFailure {
                    error,
                    events_kept: 0,
                });
                None
            }
        }
    }

    fn stop_recording(&mut self, error: RecordError) {
        let events_kept = self
            .recorder
            .take()
            .map_or(0, |recorder| recorder.events_flushed());
        self.recording_failure = Some(RecordingFailure { error, events_kept });
    }

    /// What the recording misses, when the recorder failed: one line for the user.
    pub fn recording_failure(&self) -> Option<String> {
        let failure = self.recording_failure.as_ref()?;
        Some(format!(
            "{}; the recording holds the first {} of the session's {} events and no trailer (replay reports it truncated); the report covers all of them",
            failure.error, failure.events_kept, self.stream_events
        ))
    }
}

/// A recording that could not be completed.
#[derive(Debug)]
struct RecordingFailure {
    error: RecordError,
    /// Events in the frames that reached the file: a replay gives these.
    events_kept: u64,
}

/// The `--events` printer: one line per event on stderr.
pub fn stderr_printer(enabled: bool) -> Option<Box<dyn Write + Send>> {
    enabled.then(|| Box::new(std::io::LineWriter::new(std::io::stderr())) as Box<dyn Write + Send>)
}
