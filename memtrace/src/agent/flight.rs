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

use crate::recording::RecordingSink;

/// A segment's bytes as the writer handed them over, a frame (at most 64 KiB of payload) at
/// a time. Kept as chunks rather than one growing buffer: a day of segments each grown by
/// reallocation to hundreds of KiB and freed ten minutes later leaves the C library's heap
/// fragmented (measured: RSS up 40% over a compressed day while the heap itself grew 0.8 MB).
#[derive(Clone, Debug, Default)]
pub struct Chunks {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes in order, to be read as a recording.
    pub fn reader(&self) -> ChunkReader<'_> {
        ChunkReader {
            chunks: &self.chunks,
            at: 0,
        }
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.chunks.push(Bytes::copy_from_slice(bytes));
        self.len += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl RecordingSink for Chunks {}

/// Reads [`Chunks`] front to back.
pub struct ChunkReader<'c> {
    chunks: &'c [Bytes],
    at: usize,
}

impl std::io::Read for ChunkReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while let Some(first) = self.chunks.first() {
            if self.at < first.len() {
                let taken = out.len().min(first.len() - self.at);
                out[..taken].copy_from_slice(&first[self.at..self.at + taken]);
                self.at += taken;
                return Ok(taken);
            }
            self.chunks = &self.chunks[1..];
            self.at = 0;
        }
        Ok(0)
    }
}

use crate::{
    event::{Event, Losses},
    recording::{RecordError, RecordingHeader, RecordingReader, RecordingWriter, WriterOptions},
};

/// One segment: a recording in memory, from its keyframe on.
#[derive(Debug)]
struct Segment {
    bytes: Chunks,
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
    open: Option<(RecordingWriter<Chunks>, u64)>,
    last_event_ns: u64,
    /// Segments dropped to keep within the budget, and their bytes.
    pub dropped_segments: u64,
}

/// A window of history cut out for a capture: complete recordings, oldest first.
#[derive(Debug, Default)]
pub struct Window {
    /// Shared with the flight recorder: a capture copies nothing it can read in place.
    segments: Vec<Chunks>,
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
        let writer =
            RecordingWriter::new(Chunks::default(), &self.header, WriterOptions::default())?;
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
        let mut segments: Vec<(u64, Chunks, u64, u64)> = self
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
            // The open segment goes on growing: the window takes its chunks as they stand.
            let bytes = writer.sink().cloned().unwrap_or_default();
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
            bytes,
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
    fn add(&mut self, bytes: Chunks, start_ns: u64, end_ns: u64, events: u64) {
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
            .flat_map(|bytes| match RecordingReader::new(bytes.reader()) {
                Ok(reader) => Box::new(reader) as Box<dyn Iterator<Item = _>>,
                Err(error) => Box::new(std::iter::once(Err(error))),
            })
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|bytes| bytes.len() as u64).sum()
    }
}
