//! The flight recorder: the last `--history` seconds of the event stream, at most
//! `--history-bytes`, in memory, oldest dropped first.
//!
//! It is kept as segments, each a recording of its own that starts with a keyframe of every
//! live process (the agent writes one every `--keyframe-interval`): a window cut from the
//! middle of a day is the segments from the last keyframe before it on, and replays alone,
//! as Java Flight Recorder's chunks and a video's keyframes do. Dropping history drops whole
//! segments, so what is left always starts at a keyframe.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::recording::RecordingSink;

/// A segment's bytes as the writer handed them over, in blocks of [`BLOCK`] bytes.
///
/// Not one growing buffer: a day of segments each grown by reallocation to hundreds of KiB
/// and freed ten minutes later leaves the C library's heap fragmented (measured: RSS up 40%
/// over a compressed day while the heap itself grew 0.8 MB). Not a copy of each write either:
/// a keyframe grows with the live regions, so the frames' sizes drift through the day, and
/// each size freed when its segment is dropped was never asked for again; the C library kept
/// seven of each in its per-thread cache (measured: 178 KiB cached at hour 24 of the agent's
/// bench against 70 KiB at hour 1, a fifth of the agent's heap). Blocks of one size are what
/// the next segment asks for again.
#[derive(Debug, Default)]
pub struct Chunks {
    /// Full blocks, oldest first.
    full: Vec<Bytes>,
    /// The block being filled (no room yet before the first write).
    open: BytesMut,
    len: usize,
}

/// A block of [`Chunks`]: big enough that the vector of blocks costs little (2% of it), small
/// enough that a segment's last, partly filled block wastes little.
const BLOCK: usize = 2048;

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
            chunks: &self.full,
            last: &self.open,
            at: 0,
        }
    }
}

/// A copy shares the full blocks and copies the open one's bytes (a capture cut from the open
/// segment while it goes on being written).
impl Clone for Chunks {
    fn clone(&self) -> Self {
        let mut full = self.full.clone();
        if !self.open.is_empty() {
            full.push(Bytes::copy_from_slice(&self.open));
        }
        Self {
            full,
            open: BytesMut::new(),
            len: self.len,
        }
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<usize> {
        let written = bytes.len();
        while !bytes.is_empty() {
            if self.open.len() == self.open.capacity() {
                let filled = std::mem::replace(&mut self.open, BytesMut::with_capacity(BLOCK));
                if !filled.is_empty() {
                    self.full.push(filled.freeze());
                }
            }
            let room = self.open.capacity() - self.open.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.open.extend_from_slice(now);
            bytes = rest;
        }
        self.len += written;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl RecordingSink for Chunks {}

/// Reads [`Chunks`] front to back.
pub struct ChunkReader<'c> {
    chunks: &'c [Bytes],
    /// The open block's bytes, after the full ones.
    last: &'c [u8],
    at: usize,
}

impl std::io::Read for ChunkReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let chunk: &[u8] = match self.chunks.first() {
                Some(first) => first,
                None => self.last,
            };
            if self.at < chunk.len() {
                let taken = out.len().min(chunk.len() - self.at);
                out[..taken].copy_from_slice(&chunk[self.at..self.at + taken]);
                self.at += taken;
                return Ok(taken);
            }
            if self.chunks.is_empty() {
                return Ok(0);
            }
            self.chunks = &self.chunks[1..];
            self.at = 0;
        }
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

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    /// Writes of any size come back in order, from the blocks and from a copy cut while the
    /// last block is being filled; every full block is one block's size.
    #[test]
    fn chunks_read_back_what_was_written_in_blocks_of_one_size() {
        let mut chunks = Chunks::default();
        let mut written = Vec::new();
        for (index, size) in [0, 1, 7, BLOCK - 8, BLOCK, 3 * BLOCK + 5, 100]
            .into_iter()
            .enumerate()
        {
            let bytes: Vec<u8> = (0..size).map(|at| (at * 31 + index) as u8).collect();
            chunks.write_all(&bytes).unwrap();
            written.extend_from_slice(&bytes);
            let copy = chunks.clone();
            for reader in [chunks.reader(), copy.reader()] {
                let mut read = Vec::new();
                let mut reader = reader;
                reader.read_to_end(&mut read).unwrap();
                assert_eq!(read, written);
            }
            assert_eq!(copy.len(), written.len());
        }
        assert_eq!(chunks.len(), written.len());
        assert!(chunks.full.iter().all(|block| block.len() == BLOCK));
        assert!(chunks.open.capacity() == BLOCK);
    }
}
