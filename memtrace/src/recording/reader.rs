//! Replay: the header, then every event of every intact frame, then an account of how the
//! recording ended.

use std::{fmt, fs::File, io::Read, path::Path};

use super::codec::EventDecoder;
use super::error::RecordError;
use super::events_frame::{self, Encoding, Prefix};
use super::frame::{FrameType, SessionId, SEQUENCED_VERSION, SESSION_VERSION};
use super::frame_reader::{AfterTrailer, FrameReader, NextFrame};
use super::header::{decode_header, decode_trailer, RecordingHeader, Trailer};
use super::wire::Malformed;
use super::writer::MAX_EVENTS_BYTES;
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
    /// The recording numbers its frames (format version 2 on), so the counts below are
    /// known; a version 1 recording can only be checked against its trailer's event count.
    pub sequenced: bool,
    /// Events frames that never arrived (their numbers were skipped), not counting frames
    /// already counted in `corrupt_frames_skipped`.
    pub frames_missing: u64,
    /// Events the writer wrote that this replay did not get: in missing or corrupt frames, or
    /// after a malformed event.
    pub events_missing: u64,
    /// Frames whose number came before the one expected (a repeat, or out of order): skipped,
    /// so that no event is counted twice or fed out of order.
    pub frames_out_of_order: u64,
    /// The trailer claims fewer events or frames than the recording holds: (claimed, held).
    pub trailer_disagrees: Option<(u64, u64)>,
    /// The frames are sealed with the session's id (format version 3 on): a corrupt frame may
    /// also be one of another recording.
    pub sealed: bool,
    /// Something follows the trailer: not part of the session, and not replayed.
    pub after_trailer: Option<AfterTrailer>,
}

impl ReplayOutcome {
    /// One line per way the recording is damaged; empty when it is whole.
    pub fn problems(&self) -> Vec<String> {
        let plural = |n: u64| if n == 1 { "" } else { "s" };
        let mut problems = Vec::new();
        if let Some(truncation) = &self.truncated_at {
            problems.push(format!("recording {truncation}"));
        }
        if self.corrupt_frames_skipped > 0 {
            let n = self.corrupt_frames_skipped;
            let why = if self.sealed {
                " (damaged, or not of this recording's session: frames spliced from another)"
            } else {
                ""
            };
            problems.push(format!("{n} corrupt frame{} skipped{why}", plural(n)));
        }
        if self.frames_missing > 0 {
            let n = self.frames_missing;
            problems.push(format!("{n} frame{} missing from the recording", plural(n)));
        }
        if self.frames_out_of_order > 0 {
            let n = self.frames_out_of_order;
            problems.push(format!(
                "{n} frame{} repeated or out of order skipped",
                plural(n)
            ));
        }
        if self.events_missing > 0 {
            let n = self.events_missing;
            problems.push(format!(
                "{n} event{} the recorder wrote are missing from the replay",
                plural(n)
            ));
        }
        if let Some((claimed, held)) = self.trailer_disagrees {
            problems.push(format!(
                "the trailer counts {claimed} but the recording holds {held}: it is corrupt"
            ));
        }
        if let Some(after) = &self.after_trailer {
            problems.push(after.to_string());
        }
        problems
    }
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
    /// Where the next event starts in the current events frame's events; `None` between
    /// frames.
    position_in_frame: Option<usize>,
    /// Where the events start in the current frame's payload, when they are stored as they
    /// are; `None` when they were decompressed into `decompressed`.
    events_at: Option<usize>,
    /// The current frame's events, decompressed; reused from frame to frame.
    decompressed: Vec<u8>,
    /// Events the current frame says it holds (version 3), and those decoded from it.
    frame_events: Option<u64>,
    /// The event [`read_event`](Self::read_event) lends.
    current: Event,
    decoded_in_frame: u64,
    outcome: ReplayOutcome,
    finished: bool,
    /// The sequence number the next events frame should carry.
    next_sequence: u64,
    /// Events the writer wrote up to the current position, as far as the frames tell: the
    /// current frame's first event index plus the events decoded from it.
    events_accounted: u64,
    /// Corrupt frames since the last good events frame: a gap in the numbering they explain
    /// is not counted again as missing.
    corrupt_since_sequenced: u64,
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
        let version = frames.version();
        let sequenced = version >= SEQUENCED_VERSION;
        Ok(Self {
            frames,
            header,
            decoder: EventDecoder::for_version(version),
            position_in_frame: None,
            events_at: None,
            decompressed: Vec::new(),
            frame_events: None,
            current: Event::of_session(0, crate::event::EventBody::Lost(Default::default())),
            decoded_in_frame: 0,
            outcome: ReplayOutcome {
                sequenced,
                sealed: version >= SESSION_VERSION,
                ..ReplayOutcome::default()
            },
            finished: false,
            next_sequence: 0,
            events_accounted: 0,
            corrupt_since_sequenced: 0,
        })
    }

    pub fn header(&self) -> &RecordingHeader {
        &self.header
    }

    /// The recording's session id (format version 3 on).
    pub fn session(&self) -> Option<SessionId> {
        self.frames.session()
    }

    /// How the replay went so far; final after the iterator ended.
    pub fn outcome(&self) -> ReplayOutcome {
        self.outcome
    }

    /// The next event of the current frame, if it has one left.
    #[inline]
    fn next_in_frame(&mut self) -> Option<Event> {
        let position = self.position_in_frame?;
        let events = match self.events_at {
            Some(start) => &self.frames.payload()[start..],
            None => &self.decompressed[..],
        };
        let Some(mut rest) = events.get(position..).filter(|rest| !rest.is_empty()) else {
            // The frame's end: a version 3 frame must have held what it said.
            if self
                .frame_events
                .take()
                .is_some_and(|count| count != self.decoded_in_frame)
            {
                self.corrupt_frame();
            }
            return None;
        };
        match self.decoder.decode(&mut rest) {
            Ok(event) => {
                self.position_in_frame = Some(events.len() - rest.len());
                self.outcome.events += 1;
                self.events_accounted += 1;
                self.decoded_in_frame += 1;
                Some(event)
            }
            // The checksum matched but the content is wrong: the events decoded so far have
            // been delivered; the rest of the frame cannot be trusted.
            Err(Malformed(_)) => {
                self.frame_events = None;
                self.corrupt_frame();
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
            NextFrame::Corrupt { .. } => self.corrupt_frame(),
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

    fn corrupt_frame(&mut self) {
        self.outcome.corrupt_frames_skipped += 1;
        self.corrupt_since_sequenced += 1;
    }

    fn enter_frame(&mut self, frame_type: u8) {
        match FrameType::from_u8(frame_type) {
            Some(FrameType::Events) => {
                let Some((prefix, start)) = self.check_sequence() else {
                    return;
                };
                match prefix.encoding {
                    Encoding::Plain => self.events_at = Some(start),
                    Encoding::Lz4 => {
                        let stored = &self.frames.payload()[start..];
                        if events_frame::decompress(
                            stored,
                            &mut self.decompressed,
                            MAX_EVENTS_BYTES,
                        )
                        .is_err()
                        {
                            self.corrupt_frame();
                            return;
                        }
                        self.events_at = None;
                    }
                }
                self.frame_events = prefix.events;
                self.decoded_in_frame = 0;
                self.decoder.start_frame();
                self.position_in_frame = Some(0);
            }
            Some(FrameType::Trailer) => match decode_trailer(self.frames.payload()) {
                Ok(trailer) => {
                    self.check_trailer(&trailer);
                    self.outcome.trailer = Some(trailer);
                    self.outcome.complete = true;
                    // Whatever follows a trailer is not part of the session: it is looked at
                    // (a few bytes) only to say what it is.
                    self.finished = true;
                    if let Ok(after) = self.frames.after_trailer() {
                        self.outcome.after_trailer = after;
                    }
                }
                Err(Malformed(_)) => self.corrupt_frame(),
            },
            // Only the first frame may be a header.
            Some(FrameType::Header) => self.corrupt_frame(),
            // A frame type from a later revision of the format: not ours to interpret.
            None => {}
        }
    }
}

impl<R: Read> RecordingReader<R> {
    /// Reads an events frame's prefix: its place in the stream (version 2 on: its sequence
    /// number and the index of its first event), counts what went missing before it, and
    /// returns the prefix and where its events start; `None` when the frame must be skipped.
    fn check_sequence(&mut self) -> Option<(Prefix, usize)> {
        let Ok((prefix, start)) = Prefix::read(self.frames.payload(), self.frames.version()) else {
            self.corrupt_frame();
            return None;
        };
        if !self.outcome.sequenced {
            return Some((prefix, start));
        }
        let (sequence, first_event) = (prefix.sequence, prefix.first_event);
        if sequence < self.next_sequence {
            self.outcome.frames_out_of_order += 1;
            return None;
        }
        if first_event < self.events_accounted {
            // Numbered as new, but claims events already delivered: not the writer's frame.
            self.corrupt_frame();
            return None;
        }
        let gap = sequence - self.next_sequence;
        self.outcome.frames_missing += gap.saturating_sub(self.corrupt_since_sequenced);
        self.outcome.events_missing += first_event - self.events_accounted;
        self.corrupt_since_sequenced = 0;
        self.next_sequence = sequence + 1;
        self.events_accounted = first_event;
        Some((prefix, start))
    }

    /// Compares the writer's totals with what arrived: frames and events missing at the end
    /// (after the last frame read) are counted; totals below what arrived mean corruption.
    fn check_trailer(&mut self, trailer: &Trailer) {
        if !self.outcome.sequenced {
            // Version 1: only the event count can be checked.
            self.events_accounted = self.outcome.events;
        }
        match trailer.events.checked_sub(self.events_accounted) {
            Some(missing) => self.outcome.events_missing += missing,
            None => {
                self.outcome.trailer_disagrees = Some((trailer.events, self.events_accounted));
            }
        }
        if let Some(frames) = trailer.frames.filter(|_| self.outcome.sequenced) {
            match frames.checked_sub(self.next_sequence) {
                Some(gap) => {
                    self.outcome.frames_missing += gap.saturating_sub(self.corrupt_since_sequenced)
                }
                None => self.outcome.trailer_disagrees = Some((frames, self.next_sequence)),
            }
        }
    }
}

impl<R: Read> RecordingReader<R> {
    /// The next event, lent: decoded into the reader's own slot, so that a replay of millions
    /// of events does not move each one out through the iterator's layers (those copies of a
    /// 200-byte event cost a tenth of replay time). `Err` and the end as for the iterator.
    #[inline]
    pub fn read_event(&mut self) -> Option<Result<&Event, RecordError>> {
        loop {
            if let Some(event) = self.next_in_frame() {
                self.current = event;
                return Some(Ok(&self.current));
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

    /// The event [`read_event`](Self::read_event) last lent.
    pub fn current(&self) -> &Event {
        &self.current
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
