//! Replay: the header, then every event of every intact frame, then an account of how the
//! recording ended.

use std::{fmt, fs::File, io::Read, path::Path};

use super::codec::EventDecoder;
use super::error::RecordError;
use super::frame::FrameType;
use super::frame_reader::{FrameReader, NextFrame};
use super::header::{decode_header, decode_trailer, RecordingHeader, Trailer};
use super::wire::Malformed;
use crate::event::Event;

/// How a replay went. Final once the reader's iterator has returned `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// Events delivered.
    pub events: u64,
    /// The trailer was seen: the session finished cleanly.
    pub complete: bool,
    /// Where the readable data ends when there is no trailer (the session was killed, crashed,
    /// or is still writing).
    pub truncated_at: Option<Truncation>,
    /// Frames whose checksum did not match, or whose content did not decode; their events are
    /// missing from the replay.
    pub corrupt_frames_skipped: u64,
    /// What the writer said at the end, when it got there.
    pub trailer: Option<Trailer>,
}

/// The end of the readable data of a recording without a trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// Events delivered before the cut.
    pub events: u64,
    /// Length of the usable prefix: the offset where the first incomplete frame starts.
    pub byte: u64,
}

impl fmt::Display for Truncation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "truncated after {} events at byte {}",
            self.events, self.byte
        )
    }
}

impl fmt::Display for ReplayOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} events", self.events)?;
        if self.complete {
            write!(f, ", complete")?;
        }
        if let Some(truncation) = &self.truncated_at {
            write!(f, ", {truncation}")?;
        }
        if self.corrupt_frames_skipped > 0 {
            write!(
                f,
                ", {} corrupt frames skipped",
                self.corrupt_frames_skipped
            )?;
        }
        Ok(())
    }
}

/// Reads a recording: [`header`](Self::header) first, then iterate for the events. The iterator
/// yields `Err` only when reading cannot go on (an I/O error, or the frame structure is lost);
/// it ends after that. Truncation and skipped frames are not errors: see
/// [`outcome`](Self::outcome).
pub struct RecordingReader<R = File> {
    frames: FrameReader<R>,
    header: RecordingHeader,
    decoder: EventDecoder,
    /// Where the next event starts in the current events frame; `None` between frames.
    position_in_frame: Option<usize>,
    outcome: ReplayOutcome,
    finished: bool,
}

impl RecordingReader<File> {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RecordError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|error| RecordError::Open {
            path: path.to_owned(),
            error,
        })?;
        Self::new(file)
    }
}

impl<R: Read> RecordingReader<R> {
    /// Checks the preamble and reads the header frame.
    pub fn new(source: R) -> Result<Self, RecordError> {
        let mut frames = FrameReader::open(source)?;
        let header = read_header(&mut frames)?;
        Ok(Self {
            frames,
            header,
            decoder: EventDecoder::default(),
            position_in_frame: None,
            outcome: ReplayOutcome::default(),
            finished: false,
        })
    }

    pub fn header(&self) -> &RecordingHeader {
        &self.header
    }

    /// How the replay went so far; final after the iterator ended.
    pub fn outcome(&self) -> ReplayOutcome {
        self.outcome
    }

    /// The next event of the current frame, if it has one left.
    fn next_in_frame(&mut self) -> Option<Event> {
        let position = self.position_in_frame?;
        let payload = self.frames.payload();
        let mut rest = payload.get(position..).filter(|rest| !rest.is_empty())?;
        match self.decoder.decode(&mut rest) {
            Ok(event) => {
                self.position_in_frame = Some(payload.len() - rest.len());
                self.outcome.events += 1;
                Some(event)
            }
            // The checksum matched but the content is wrong: the events decoded so far have
            // been delivered; the rest of the frame cannot be trusted.
            Err(Malformed(_)) => {
                self.outcome.corrupt_frames_skipped += 1;
                None
            }
        }
    }

    /// Moves to the next frame. Returns an error to hand out, if reading cannot go on.
    fn advance_frame(&mut self) -> Option<RecordError> {
        let next = match self.frames.next_frame() {
            Ok(next) => next,
            Err(error) => {
                self.finished = true;
                return Some(RecordError::Read(error));
            }
        };
        match next {
            NextFrame::Frame { frame_type, .. } => self.enter_frame(frame_type),
            NextFrame::Corrupt { .. } => self.outcome.corrupt_frames_skipped += 1,
            NextFrame::End { at } | NextFrame::Cut { at } => {
                self.outcome.truncated_at = Some(Truncation {
                    events: self.outcome.events,
                    byte: at,
                });
                self.finished = true;
            }
            NextFrame::Broken { at, reason } => {
                self.finished = true;
                return Some(RecordError::Unrecoverable { byte: at, reason });
            }
        }
        None
    }

    fn enter_frame(&mut self, frame_type: u8) {
        match FrameType::from_u8(frame_type) {
            Some(FrameType::Events) => {
                self.decoder.start_frame();
                self.position_in_frame = Some(0);
            }
            Some(FrameType::Trailer) => match decode_trailer(self.frames.payload()) {
                Ok(trailer) => {
                    self.outcome.trailer = Some(trailer);
                    self.outcome.complete = true;
                    // Whatever follows a trailer is not part of the session.
                    self.finished = true;
                }
                Err(Malformed(_)) => self.outcome.corrupt_frames_skipped += 1,
            },
            // Only the first frame may be a header.
            Some(FrameType::Header) => self.outcome.corrupt_frames_skipped += 1,
            // A frame type from a later revision of the format: not ours to interpret.
            None => {}
        }
    }
}

impl<R: Read> Iterator for RecordingReader<R> {
    type Item = Result<Event, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(event) = self.next_in_frame() {
                return Some(Ok(event));
            }
            self.position_in_frame = None;
            if self.finished {
                return None;
            }
            if let Some(error) = self.advance_frame() {
                return Some(Err(error));
            }
        }
    }
}

fn read_header<R: Read>(frames: &mut FrameReader<R>) -> Result<RecordingHeader, RecordError> {
    let corrupt = |reason| Err(RecordError::CorruptHeader { reason });
    match frames.next_frame().map_err(RecordError::Read)? {
        NextFrame::End { .. } | NextFrame::Cut { .. } => Err(RecordError::TruncatedHeader {
            bytes: frames.bytes_read(),
        }),
        NextFrame::Broken { reason, .. } => corrupt(reason),
        NextFrame::Corrupt { .. } => corrupt("checksum mismatch"),
        NextFrame::Frame { frame_type, .. } if frame_type != FrameType::Header as u8 => {
            corrupt("the first frame is not a header")
        }
        NextFrame::Frame { .. } => decode_header(frames.payload())
            .map_err(|Malformed(reason)| RecordError::CorruptHeader { reason }),
    }
}
