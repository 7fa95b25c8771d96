//! Writing a recording during a live session: events are batched into frames, and each frame
//! reaches the file whole, so a crash at any moment leaves a prefix of complete frames (plus at
//! most one partial frame that readers recognise and drop).

use std::{
    fs::File,
    io::{self, Write},
    time::{Duration, Instant},
};

use bytes::BytesMut;

use super::codec::EventEncoder;
use super::error::RecordError;
use super::events_frame::{self, Encoding, Prefix};
use super::frame::{
    begin_frame, end_frame, payload_len, put_preamble, FrameType, SessionId, MAX_FRAME_PAYLOAD,
};
use super::header::{encode_header, encode_trailer, RecordingHeader, Trailer};
use crate::event::{Event, Losses};

/// The most the events of one frame may take, encoded: a frame's payload also holds its
/// prefix (four varints at most 31 bytes) and the compressed length.
pub(crate) const MAX_EVENTS_BYTES: usize = MAX_FRAME_PAYLOAD - 64;

/// Where a recording goes. A file is synced to disk when the recording finishes; memory
/// (tests, benchmarks) has nothing to sync.
pub trait RecordingSink: Write {
    fn sync_to_disk(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl RecordingSink for File {
    fn sync_to_disk(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

impl RecordingSink for Vec<u8> {}

/// Lets a caller keep the sink: write through `&mut file` and still own `file` afterwards.
impl<S: RecordingSink + ?Sized> RecordingSink for &mut S {
    fn sync_to_disk(&mut self) -> io::Result<()> {
        (**self).sync_to_disk()
    }
}

/// When an events frame is closed and written, and how it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Close the frame once it holds this many events.
    pub max_frame_events: usize,
    /// Close the frame once its events take this many bytes, encoded (at most
    /// [`MAX_FRAME_PAYLOAD`]; one event larger than this still gets a frame of its own).
    pub max_frame_bytes: usize,
    /// [`RecordingWriter::flush_if_due`] writes the open frame when this much time has passed
    /// since the last flush: the most a crash can lose.
    pub flush_interval: Duration,
    /// Compress each events frame (LZ4) when that makes it smaller.
    pub compress: bool,
}

impl Default for WriterOptions {
    /// Frames of a few thousand events amortise the framing and the per-frame restart of the
    /// delta coding to well under a byte per event, and give LZ4 enough to find the repeats
    /// in (64 KiB is its window).
    fn default() -> Self {
        Self {
            max_frame_events: 4096,
            max_frame_bytes: 64 << 10,
            flush_interval: Duration::from_secs(1),
            compress: true,
        }
    }
}

/// Writes a recording. Call [`write_event`](Self::write_event) for each event,
/// [`flush_if_due`](Self::flush_if_due) regularly (also when idle), and
/// [`finish`](Self::finish) at the end. Dropping the writer without `finish` writes the open
/// frame but no trailer, so replay reports the recording as cut off.
pub struct RecordingWriter<W: RecordingSink = File> {
    /// `None` once [`finish`](Self::finish) has taken it.
    out: Option<W>,
    options: WriterOptions,
    /// The recording's identity, in every frame's checksum.
    session: SessionId,
    /// What goes to the sink next, assembled in place: whole frames.
    frame: BytesMut,
    /// The encoded events of the open events frame.
    body: BytesMut,
    /// The open frame's events compressed, reused from frame to frame.
    scratch: Vec<u8>,
    /// An events frame is open (its context started), even if it holds no event yet.
    frame_open: bool,
    frame_events: usize,
    encoder: EventEncoder,
    events: u64,
    /// Events in frames that reached the sink whole.
    events_flushed: u64,
    /// Events frames that reached the sink whole: the next frame's sequence number.
    frames_written: u64,
    bytes_written: u64,
    last_flush: Instant,
    /// A write failed: the file may end in a partial frame, after which nothing may go.
    failed: bool,
}

impl RecordingWriter<File> {
    /// Creates the checked `output` as a new owner-only file (see [`crate::output`]) and
    /// writes the preamble and header. Recordings hold command lines, paths and addresses.
    pub fn create(
        output: &crate::output::Output,
        header: &RecordingHeader,
        options: WriterOptions,
    ) -> Result<Self, RecordError> {
        let file = output.create_streaming()?;
        Self::new(file, header, options)
    }
}

impl<W: RecordingSink> RecordingWriter<W> {
    /// Writes the preamble and header to `out` at once, so even a session that records nothing
    /// leaves a readable recording. The recording gets a new random session id.
    pub fn new(
        out: W,
        header: &RecordingHeader,
        options: WriterOptions,
    ) -> Result<Self, RecordError> {
        Self::with_session(out, header, options, SessionId::random())
    }

    /// [`new`](Self::new) with a given session id (a copy of frames, tests).
    pub(crate) fn with_session(
        out: W,
        header: &RecordingHeader,
        options: WriterOptions,
        session: SessionId,
    ) -> Result<Self, RecordError> {
        let options = WriterOptions {
            max_frame_events: options.max_frame_events.max(1),
            max_frame_bytes: options.max_frame_bytes.min(MAX_EVENTS_BYTES),
            ..options
        };
        let typical = options.max_frame_bytes.min(1 << 20) + 1024;
        let mut writer = Self {
            out: Some(out),
            options,
            session,
            // Room for a typical frame; an exceptional one grows the buffers when it comes.
            frame: BytesMut::with_capacity(typical),
            body: BytesMut::with_capacity(typical),
            scratch: Vec::new(),
            frame_open: false,
            frame_events: 0,
            encoder: EventEncoder::default(),
            events: 0,
            events_flushed: 0,
            frames_written: 0,
            bytes_written: 0,
            last_flush: Instant::now(),
            failed: false,
        };
        put_preamble(&mut writer.frame, &session);
        let start = begin_frame(&mut writer.frame, FrameType::Header);
        encode_header(header, &mut writer.frame);
        let size = payload_len(&writer.frame, start);
        if size > MAX_FRAME_PAYLOAD {
            return Err(RecordError::HeaderTooLarge { size });
        }
        end_frame(&mut writer.frame, start, Some(&session));
        writer.write_out()?;
        writer.flush()?;
        Ok(writer)
    }

    /// The recording's session id.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Adds an event to the open frame, and writes the frame out if that fills it.
    pub fn write_event(&mut self, event: &Event) -> Result<(), RecordError> {
        if self.failed || self.out.is_none() {
            return Err(RecordError::WriterFailed);
        }
        self.open_frame();
        let before = self.body.len();
        self.encoder.encode(event, &mut self.body);
        if self.body.len() > MAX_EVENTS_BYTES {
            return self.write_oversized(event, before);
        }
        self.frame_events += 1;
        self.events += 1;
        if self.frame_events >= self.options.max_frame_events
            || self.body.len() >= self.options.max_frame_bytes
        {
            self.close_frame()?;
        }
        Ok(())
    }

    /// The event did not fit the open frame: write the frame without it, then give the event a
    /// frame of its own, if it fits one at all.
    fn write_oversized(&mut self, event: &Event, before: usize) -> Result<(), RecordError> {
        self.body.truncate(before);
        if self.frame_events > 0 {
            self.close_frame()?;
        } else {
            self.discard_frame();
        }
        self.open_frame();
        self.encoder.encode(event, &mut self.body);
        let size = self.body.len();
        if size > MAX_EVENTS_BYTES {
            self.discard_frame();
            return Err(RecordError::EventTooLarge { size });
        }
        self.frame_events = 1;
        self.events += 1;
        self.close_frame()
    }

    /// Flushes when [`WriterOptions::flush_interval`] has passed since the last flush. The live
    /// session calls this every time it wakes up, events or not. Returns whether it flushed.
    pub fn flush_if_due(&mut self, now: Instant) -> Result<bool, RecordError> {
        if now.saturating_duration_since(self.last_flush) < self.options.flush_interval {
            return Ok(false);
        }
        self.flush()?;
        self.last_flush = now;
        Ok(true)
    }

    /// Writes the open frame, even if it is not full, and flushes the sink.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        if self.failed {
            return Err(RecordError::WriterFailed);
        }
        self.close_frame()?;
        self.last_flush = Instant::now();
        let out = self.out.as_mut().ok_or(RecordError::WriterFailed)?;
        let result = out.flush();
        result.map_err(|error| self.fail(error))
    }

    /// Writes the open frame and the trailer, syncs the file to disk, and hands the sink back.
    /// `lost` is the kernel side's final loss totals.
    pub fn finish(mut self, lost: Losses) -> Result<W, RecordError> {
        self.close_frame()?;
        let start = begin_frame(&mut self.frame, FrameType::Trailer);
        encode_trailer(
            &Trailer {
                events: self.events,
                lost,
                frames: Some(self.frames_written),
            },
            &mut self.frame,
        );
        end_frame(&mut self.frame, start, Some(&self.session));
        self.write_out()?;
        let mut out = self.out.take().ok_or(RecordError::WriterFailed)?;
        out.flush().map_err(RecordError::Write)?;
        out.sync_to_disk().map_err(RecordError::Write)?;
        Ok(out)
    }

    /// What the sink holds so far (every frame flushed): a recording kept in memory is read
    /// from here while it is still being written.
    pub fn sink(&self) -> Option<&W> {
        self.out.as_ref()
    }

    /// Appends an events frame of another recording (`frame`: its bytes from sync marker to
    /// checksum, as that recording's writer handed them to its sink; `source`: the session it
    /// was sealed with), without decoding its events: it is checked, renumbered into this
    /// recording's sequence, and sealed with this recording's session id. The open frame, if
    /// any, is written first. Returns how many events the frame held.
    ///
    /// This is how the agent's flight recorder saves a window of the frames it keeps in memory
    /// as a recording of its own: each frame decodes on its own, so any run of them replays.
    pub fn copy_frame(&mut self, frame: &[u8], source: &SessionId) -> Result<u64, RecordError> {
        if self.failed || self.out.is_none() {
            return Err(RecordError::WriterFailed);
        }
        let copied = |reason| RecordError::CopiedFrame { reason };
        let (frame_type, payload) = super::frame::open_sealed(frame, source).map_err(copied)?;
        if frame_type != FrameType::Events as u8 {
            return Err(copied("it is not an events frame"));
        }
        let (prefix, start) = Prefix::read(payload, super::frame::FORMAT_VERSION)
            .map_err(|super::wire::Malformed(reason)| copied(reason))?;
        let events = prefix
            .events
            .filter(|&events| events > 0)
            .ok_or(copied("it holds no events"))?;
        self.close_frame()?;
        let begin = begin_frame(&mut self.frame, FrameType::Events);
        Prefix {
            sequence: self.frames_written,
            first_event: self.events_flushed,
            ..prefix
        }
        .put(&mut self.frame);
        bytes::BufMut::put_slice(&mut self.frame, &payload[start..]);
        if payload_len(&self.frame, begin) > MAX_FRAME_PAYLOAD {
            self.frame.truncate(begin);
            return Err(copied("renumbered, it exceeds the frame size limit"));
        }
        end_frame(&mut self.frame, begin, Some(&self.session));
        self.write_out()?;
        self.events += events;
        self.events_flushed += events;
        self.frames_written += 1;
        Ok(events)
    }

    /// Events accepted so far.
    pub fn events_written(&self) -> u64 {
        self.events
    }

    /// Events in frames handed to the sink whole: what the file holds if nothing more can be
    /// written.
    pub fn events_flushed(&self) -> u64 {
        self.events_flushed
    }

    /// Bytes handed to the sink so far (events in the open frame not included).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Starts an events frame unless one is open: its coding context starts afresh.
    fn open_frame(&mut self) {
        if !self.frame_open {
            self.encoder.start_frame();
            self.frame_open = true;
        }
    }

    fn discard_frame(&mut self) {
        self.body.clear();
        self.frame_open = false;
        self.frame_events = 0;
    }

    /// Seals the open events frame, if it holds events, and writes it.
    fn close_frame(&mut self) -> Result<(), RecordError> {
        if !std::mem::take(&mut self.frame_open) {
            return Ok(());
        }
        let events = std::mem::take(&mut self.frame_events) as u64;
        if events == 0 {
            self.body.clear();
            return Ok(());
        }
        let encoding =
            events_frame::choose_encoding(&self.body, self.options.compress, &mut self.scratch);
        let start = begin_frame(&mut self.frame, FrameType::Events);
        // The frame's place in the stream, so a reader can tell a missing, repeated or
        // reordered frame, and how many events it lost; and how many it holds, so that a copy
        // of it can be renumbered without decoding it.
        Prefix {
            sequence: self.frames_written,
            first_event: self.events_flushed,
            events: Some(events),
            encoding,
        }
        .put(&mut self.frame);
        events_frame::put_body(&mut self.frame, &self.body, encoding, &self.scratch);
        end_frame(&mut self.frame, start, Some(&self.session));
        self.body.clear();
        if encoding == Encoding::Lz4 && self.scratch.capacity() > 4 * self.options.max_frame_bytes {
            // An oversized event's frame: do not keep its buffer for the whole session.
            self.scratch = Vec::new();
        }
        self.write_out()?;
        self.events_flushed += events;
        self.frames_written += 1;
        Ok(())
    }

    /// Writes everything assembled in `frame` with one `write_all`, so the file only ever
    /// grows by whole frames unless the write itself fails.
    fn write_out(&mut self) -> Result<(), RecordError> {
        if self.failed {
            return Err(RecordError::WriterFailed);
        }
        let out = self.out.as_mut().ok_or(RecordError::WriterFailed)?;
        let result = out.write_all(&self.frame);
        let len = self.frame.len();
        self.frame.clear();
        match result {
            Ok(()) => {
                self.bytes_written += len as u64;
                Ok(())
            }
            Err(error) => Err(self.fail(error)),
        }
    }

    fn fail(&mut self, error: io::Error) -> RecordError {
        self.failed = true;
        RecordError::Write(error)
    }
}

impl<W: RecordingSink> Drop for RecordingWriter<W> {
    /// Keeps the open frame's events when the session ends without [`finish`](Self::finish)
    /// (an error path): the recording then replays as cut off, with nothing lost. Errors cannot
    /// be reported from here; the next reader sees their effect.
    fn drop(&mut self) {
        if self.out.is_some() && !self.failed {
            let _ = self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        fs::{self, Permissions},
        os::unix::fs::PermissionsExt,
        path::Path,
    };

    use super::*;
    use crate::recording::tests::{sample_header, scratch_path};

    #[test]
    fn files_are_created_owner_only_even_over_an_open_file() {
        let path = scratch_path("mode");
        fs::write(&path, b"old contents").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();
        let writer = RecordingWriter::create(
            &crate::output::check(&path).unwrap(),
            &sample_header(),
            WriterOptions::default(),
        )
        .unwrap();
        writer.finish(Losses::default()).unwrap();
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        assert!(fs::read(&path).unwrap().starts_with(b"MEMTRACE"));
        fs::remove_file(&path).unwrap();

        let writer = RecordingWriter::create(
            &crate::output::check(&path).unwrap(),
            &sample_header(),
            WriterOptions::default(),
        )
        .unwrap();
        drop(writer);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn creating_in_a_missing_directory_names_the_path() {
        let error = crate::output::check(Path::new("/nonexistent-memtrace-dir/rec")).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("cannot write /nonexistent-memtrace-dir/rec: "));
    }

    /// A sink that accepts a fixed number of bytes, then fails like a full disk.
    struct FullDisk {
        written: Vec<u8>,
        room: usize,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let take = buf.len().min(self.room - self.written.len());
            if take == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "no space left on device",
                ));
            }
            self.written.extend_from_slice(&buf[..take]);
            Ok(take)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl RecordingSink for FullDisk {}

    #[test]
    fn a_failed_write_stops_the_writer() {
        let disk = FullDisk {
            written: Vec::new(),
            room: 200,
        };
        let options = WriterOptions {
            max_frame_events: 2,
            ..WriterOptions::default()
        };
        let mut writer = RecordingWriter::new(disk, &sample_header(), options).unwrap();
        let event = crate::recording::workload::mmap_munmap_loop(1)
            .next()
            .unwrap();
        let mut result = Ok(());
        for _ in 0..100 {
            result = writer.write_event(&event);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(RecordError::Write(_))));
        assert!(matches!(
            writer.write_event(&event),
            Err(RecordError::WriterFailed)
        ));
        assert!(matches!(writer.flush(), Err(RecordError::WriterFailed)));
    }

    #[test]
    fn flush_if_due_waits_for_the_interval() {
        let options = WriterOptions {
            flush_interval: Duration::from_secs(1),
            ..WriterOptions::default()
        };
        let mut writer = RecordingWriter::new(Vec::new(), &sample_header(), options).unwrap();
        let header_bytes = writer.bytes_written();
        let event = crate::recording::workload::mmap_munmap_loop(1)
            .next()
            .unwrap();
        writer.write_event(&event).unwrap();
        let start = writer.last_flush;
        assert!(!writer
            .flush_if_due(start + Duration::from_millis(500))
            .unwrap());
        assert_eq!(writer.bytes_written(), header_bytes);
        assert!(writer.flush_if_due(start + Duration::from_secs(1)).unwrap());
        assert!(writer.bytes_written() > header_bytes);
        // The interval restarts from that flush.
        assert!(!writer
            .flush_if_due(start + Duration::from_millis(1500))
            .unwrap());
    }
}
