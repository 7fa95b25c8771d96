//! Where every event goes, whether it was just captured or read back from a recording: the
//! model, and optionally the `--events` printer and the recorder. Live tracing and replay both
//! push events through here, so a replay computes exactly what the live run computed.

use std::io::Write;

use crate::{
    event::{Event, EventBody, LostRecord},
    event_line,
    model::Model,
    record::{RecordError, RecordingWriter},
};

pub struct Pipeline {
    pub model: Model,
    printer: Option<Box<dyn Write + Send>>,
    recorder: Option<RecordingWriter>,
    /// Events fed, not counting loss reports.
    pub events: u64,
    /// The latest loss totals.
    pub lost: LostRecord,
}

impl Pipeline {
    pub fn new(printer: Option<Box<dyn Write + Send>>, recorder: Option<RecordingWriter>) -> Self {
        Self {
            model: Model::new(),
            printer,
            recorder,
            events: 0,
            lost: LostRecord::default(),
        }
    }

    /// Records, prints and models one event. A failing recorder stops the session (the
    /// recording must not silently miss events); a failing printer (closed pipe) only stops
    /// printing.
    pub fn feed(&mut self, event: &Event) -> Result<(), RecordError> {
        if let Some(recorder) = &mut self.recorder {
            recorder.write_event(event)?;
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
        self.model.apply(event);
        Ok(())
    }

    pub fn recorder_mut(&mut self) -> Option<&mut RecordingWriter> {
        self.recorder.as_mut()
    }

    /// Ends the recording with its trailer, so a reader knows it is complete.
    pub fn finish_recording(&mut self) -> Result<(), RecordError> {
        if let Some(recorder) = self.recorder.take() {
            recorder.finish(self.lost)?;
        }
        if let Some(printer) = &mut self.printer {
            let _ = printer.flush();
        }
        Ok(())
    }
}
