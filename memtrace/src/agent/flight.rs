//! The flight recorder: the last `--history` seconds of the event stream, at most
//! `--history-bytes`, in memory, oldest dropped first.
//!
//! It is kept as segments, each a recording of its own that starts with a keyframe of every
//! live process (the agent writes one every `--keyframe-interval`): a window cut from the
//! middle of a day is the segments from the last keyframe before it on, and replays alone,
//! as Java Flight Recorder's chunks and a video's keyframes do. Dropping history drops whole
//! segments, so what is left always starts at a keyframe.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::{
    event::{Event, Losses},
    recording::{RecordError, RecordingHeader, RecordingReader, RecordingWriter, WriterOptions},
};

/// One segment: a recording in memory, from its keyframe on.
#[derive(Debug)]
struct Segment {
    bytes: Bytes,
    /// CLOCK_MONOTONIC ns of its keyframe and of its last event.
    start_ns: u64,
    end_ns: u64,
    events: u64,
}

pub struct FlightRecorder {
    header: RecordingHeader,
    history_ns: u64,
    history_bytes: u64,
    closed: VecDeque<Segment>,
    /// The segment being written, and when its keyframe was taken.
    open: Option<(RecordingWriter<Vec<u8>>, u64)>,
    last_event_ns: u64,
    /// Segments dropped to keep within the budget, and their bytes.
    pub dropped_segments: u64,
}

/// A window of history cut out for a capture: complete recordings, oldest first.
#[derive(Debug, Default)]
pub struct Window {
    /// Shared with the flight recorder: a capture copies nothing it can read in place.
    segments: Vec<Bytes>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub events: u64,
}

impl FlightRecorder {
    pub fn new(header: RecordingHeader, history_ns: u64, history_bytes: u64) -> Self {
        Self {
            header,
            history_ns,
            history_bytes,
            closed: VecDeque::new(),
            open: None,
            last_event_ns: 0,
            dropped_segments: 0,
        }
    }

    /// Starts a segment at a keyframe taken at `time_ns`, closing the one before; the caller
    /// writes the keyframe's events next. Drops the oldest segments beyond the budget.
    pub fn start_segment(&mut self, time_ns: u64, lost: Losses) -> Result<(), RecordError> {
        self.close_open(lost)?;
        let writer = RecordingWriter::new(Vec::new(), &self.header, WriterOptions::default())?;
        self.open = Some((writer, time_ns));
        self.enforce_budget();
        Ok(())
    }

    /// Records one event into the open segment (none is open before the first keyframe).
    pub fn record(&mut self, event: &Event) -> Result<(), RecordError> {
        self.last_event_ns = self.last_event_ns.max(event.time_ns);
        match &mut self.open {
            Some((writer, _)) => writer.write_event(event),
            None => Ok(()),
        }
    }

    /// Bytes held: closed segments and what the open one has written.
    pub fn bytes(&self) -> u64 {
        self.closed
            .iter()
            .map(|segment| segment.bytes.len() as u64)
            .sum::<u64>()
            + self
                .open
                .as_ref()
                .map_or(0, |(writer, _)| writer.bytes_written())
    }

    /// How far back the history reaches: the start of its oldest segment.
    pub fn oldest_ns(&self) -> Option<u64> {
        self.closed
            .front()
            .map(|segment| segment.start_ns)
            .or(self.open.as_ref().map(|(_, start)| *start))
    }

    /// The history from the last keyframe at or before `from_ns` to now, as recordings (all
    /// of it when `from_ns` is older). The open segment is flushed into it as it stands and
    /// stays open.
    pub fn cut(&mut self, from_ns: u64) -> Result<Window, RecordError> {
        let mut segments: Vec<(u64, Bytes, u64, u64)> = self
            .closed
            .iter()
            .map(|segment| {
                (
                    segment.start_ns,
                    segment.bytes.clone(),
                    segment.end_ns,
                    segment.events,
                )
            })
            .collect();
        if let Some((writer, start_ns)) = &mut self.open {
            writer.flush()?;
            // The open segment goes on growing: the window takes a copy of it as it stands.
            let bytes = Bytes::copy_from_slice(writer.sink().map_or(&[][..], Vec::as_slice));
            segments.push((
                *start_ns,
                bytes,
                self.last_event_ns,
                writer.events_written(),
            ));
        }
        let first = segments
            .iter()
            .rposition(|&(start_ns, ..)| start_ns <= from_ns)
            .unwrap_or(0);
        let mut window = Window::default();
        for (start_ns, bytes, end_ns, events) in segments.drain(first..) {
            window.add(bytes, start_ns, end_ns, events);
        }
        Ok(window)
    }

    fn close_open(&mut self, lost: Losses) -> Result<(), RecordError> {
        let Some((writer, start_ns)) = self.open.take() else {
            return Ok(());
        };
        let events = writer.events_written();
        let bytes = writer.finish(lost)?;
        self.closed.push_back(Segment {
            bytes: Bytes::from(bytes),
            start_ns,
            end_ns: self.last_event_ns.max(start_ns),
            events,
        });
        Ok(())
    }

    /// Drops the oldest closed segments while the history is over its bytes or its time.
    fn enforce_budget(&mut self) {
        let now = self.last_event_ns;
        while let Some(oldest) = self.closed.front() {
            let too_old = oldest.end_ns.saturating_add(self.history_ns) < now;
            if !too_old && self.bytes() <= self.history_bytes {
                break;
            }
            self.closed.pop_front();
            self.dropped_segments += 1;
        }
    }
}

impl Window {
    fn add(&mut self, bytes: Bytes, start_ns: u64, end_ns: u64, events: u64) {
        if self.segments.is_empty() {
            self.start_ns = start_ns;
        }
        self.end_ns = end_ns;
        self.events += events;
        self.segments.push(bytes);
    }

    /// Every event of the window, in order, each segment read as the recording it is.
    pub fn events(&self) -> impl Iterator<Item = Result<Event, RecordError>> + '_ {
        self.segments
            .iter()
            .flat_map(|bytes| match RecordingReader::new(&bytes[..]) {
                Ok(reader) => Box::new(reader) as Box<dyn Iterator<Item = _>>,
                Err(error) => Box::new(std::iter::once(Err(error))),
            })
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|bytes| bytes.len() as u64).sum()
    }
}
