//! Reading the container: the preamble, then one frame after another, telling a complete frame
//! from a cut-off one, a corrupt one, and lost structure; and what follows the trailer. Knows
//! nothing of what payloads mean.
//!
//! Every read is bounded by what the format allows, never by the size of the source: a pipe of
//! zeros or a sparse file of a terabyte ends a replay as quickly as a short file does.

use std::io::{self, BufReader, Read};

use super::error::RecordError;
use super::frame::{
    checksum, SessionId, FORMAT_VERSION, FRAME_CHECKSUM_LEN, FRAME_HEAD_LEN, FRAME_SYNC, MAGIC,
    MAX_FRAME_PAYLOAD, OLDEST_READABLE_VERSION, PREAMBLE_LEN, SESSION_ID_LEN, SESSION_VERSION,
};

/// Large reads keep replay from being bound by syscalls; frames are read out of this buffer.
const READ_BUFFER_BYTES: usize = 256 << 10;
/// Where a frame should start, this many zero bytes are taken for the end of what was written
/// (a file system can leave zeros after a crash: the file's size was updated, its data not),
/// without reading on to the end: a pipe of zeros has none, and a sparse file's could be a
/// terabyte away.
pub(crate) const ZERO_TAIL_LIMIT: usize = 64 << 10;

/// What the file holds at the current position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NextFrame {
    /// A complete frame whose checksum matched; its payload is [`FrameReader::payload`].
    Frame { frame_type: u8, start: u64 },
    /// A complete frame whose checksum did not match. The reader is past it.
    Corrupt { start: u64 },
    /// The file ends right after the last complete frame.
    End { at: u64 },
    /// The file ends inside a frame, or only zero bytes follow (what a file system can leave
    /// after a crash, when the file's size was updated but its data was not).
    Cut { at: u64 },
    /// No frame starts where one must: the structure is lost from here on.
    Broken { at: u64, reason: &'static str },
}

/// What follows a recording's trailer, when something does: none of it is part of the
/// session, and a replay says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterTrailer {
    /// Another recording's preamble (`cat a.mtr b.mtr`).
    Recording { at: u64 },
    /// A frame.
    Frame { at: u64 },
    /// Zero bytes only (as far as the reader looked).
    Zeros { at: u64 },
    /// Anything else.
    Garbage { at: u64 },
}

impl std::fmt::Display for AfterTrailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Recording { at } => write!(
                f,
                "a second recording follows the trailer at byte {at}: it was not replayed (replay each recording on its own)"
            ),
            Self::Frame { at } => write!(
                f,
                "a frame follows the trailer at byte {at}: frames after a session's end are not part of it"
            ),
            Self::Zeros { at } => write!(f, "zero bytes follow the trailer at byte {at}"),
            Self::Garbage { at } => write!(f, "unknown bytes follow the trailer at byte {at}"),
        }
    }
}

pub(crate) struct FrameReader<R> {
    source: BufReader<R>,
    /// End of the last complete frame.
    offset: u64,
    /// Everything taken from the source, complete frames or not.
    bytes_read: u64,
    /// The payload of the last frame; reused so that replay does not allocate per frame.
    payload: Vec<u8>,
    /// The preamble's format version.
    version: u32,
    /// Version 3 on: the session every frame is sealed with.
    session: Option<SessionId>,
}

impl<R: Read> FrameReader<R> {
    /// Reads and checks the preamble.
    pub(crate) fn open(source: R) -> Result<Self, RecordError> {
        let mut reader = Self {
            source: BufReader::with_capacity(READ_BUFFER_BYTES, source),
            offset: 0,
            bytes_read: 0,
            payload: Vec::new(),
            version: 0,
            session: None,
        };
        let mut preamble = [0u8; PREAMBLE_LEN];
        let got = reader
            .read_up_to(&mut preamble)
            .map_err(RecordError::Read)?;
        if got == 0 {
            return Err(RecordError::Empty);
        }
        let magic_got = got.min(MAGIC.len());
        if preamble[..magic_got] != MAGIC[..magic_got] {
            return Err(RecordError::BadMagic);
        }
        if got < PREAMBLE_LEN {
            return Err(RecordError::TruncatedHeader { bytes: got as u64 });
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&preamble[MAGIC.len()..]);
        let version = u32::from_le_bytes(version);
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(RecordError::UnsupportedVersion { found: version });
        }
        reader.version = version;
        reader.offset = PREAMBLE_LEN as u64;
        if version >= SESSION_VERSION {
            let mut session = [0u8; SESSION_ID_LEN];
            let got = reader.read_up_to(&mut session).map_err(RecordError::Read)?;
            if got < SESSION_ID_LEN {
                return Err(RecordError::TruncatedHeader {
                    bytes: reader.bytes_read,
                });
            }
            reader.session = Some(SessionId(session));
            reader.offset += SESSION_ID_LEN as u64;
        }
        Ok(reader)
    }

    pub(crate) fn version(&self) -> u32 {
        self.version
    }

    pub(crate) fn session(&self) -> Option<SessionId> {
        self.session
    }

    pub(crate) fn payload(&self) -> &[u8] {
        &self.payload
    }

    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    pub(crate) fn next_frame(&mut self) -> io::Result<NextFrame> {
        let start = self.offset;
        let mut head = [0u8; FRAME_HEAD_LEN];
        let got = self.read_up_to(&mut head)?;
        if got == 0 {
            return Ok(NextFrame::End { at: start });
        }
        let sync_got = got.min(FRAME_SYNC.len());
        if head[..sync_got] != FRAME_SYNC[..sync_got] {
            return self.after_lost_sync(start, &head[..got]);
        }
        if got < FRAME_HEAD_LEN {
            return Ok(NextFrame::Cut { at: start });
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&head[FRAME_SYNC.len()..FRAME_SYNC.len() + 4]);
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME_PAYLOAD {
            return Ok(NextFrame::Broken {
                at: start,
                reason: "a frame length exceeds the limit",
            });
        }
        let frame_type = head[FRAME_HEAD_LEN - 1];

        // `take` + `read_to_end` grows the buffer with the data actually there, so a length
        // near the limit in a short file does not allocate the whole length up front.
        self.payload.clear();
        let wanted = (len + FRAME_CHECKSUM_LEN) as u64;
        let got = (&mut self.source)
            .take(wanted)
            .read_to_end(&mut self.payload)?;
        self.bytes_read += got as u64;
        if (got as u64) < wanted {
            return Ok(NextFrame::Cut { at: start });
        }
        self.offset = start + (FRAME_HEAD_LEN as u64) + wanted;

        let mut stored = [0u8; FRAME_CHECKSUM_LEN];
        stored.copy_from_slice(&self.payload[len..]);
        self.payload.truncate(len);
        if self.payload.capacity() > 4 * READ_BUFFER_BYTES && len < READ_BUFFER_BYTES {
            // After a large frame (an attach layout), do not keep its buffer for the rest.
            self.payload.shrink_to(READ_BUFFER_BYTES);
        }
        if checksum(self.session.as_ref(), frame_type, &self.payload) != u32::from_le_bytes(stored)
        {
            return Ok(NextFrame::Corrupt { start });
        }
        Ok(NextFrame::Frame { frame_type, start })
    }

    /// What follows the trailer just read, if anything: a few bytes are looked at, never the
    /// rest of the source.
    pub(crate) fn after_trailer(&mut self) -> io::Result<Option<AfterTrailer>> {
        let at = self.offset;
        let mut next = [0u8; MAGIC.len()];
        let got = self.read_up_to(&mut next)?;
        let next = &next[..got];
        Ok(match next {
            [] => None,
            _ if MAGIC.starts_with(next) => Some(AfterTrailer::Recording { at }),
            _ if next.starts_with(&FRAME_SYNC) => Some(AfterTrailer::Frame { at }),
            _ if next.iter().all(|&byte| byte == 0) && self.rest_is_zero()? => {
                Some(AfterTrailer::Zeros { at })
            }
            _ => Some(AfterTrailer::Garbage { at }),
        })
    }

    /// Where a frame should start there is something else: a tail of zeros means the file was
    /// cut (see [`NextFrame::Cut`]), anything else that the structure is lost.
    fn after_lost_sync(&mut self, start: u64, head: &[u8]) -> io::Result<NextFrame> {
        if head.iter().any(|&byte| byte != 0) || !self.rest_is_zero()? {
            return Ok(NextFrame::Broken {
                at: start,
                reason: "no frame starts there",
            });
        }
        Ok(NextFrame::Cut { at: start })
    }

    /// Whether what follows is zeros, up to its end or [`ZERO_TAIL_LIMIT`] bytes, whichever
    /// comes first.
    fn rest_is_zero(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        let mut looked = 0;
        while looked < ZERO_TAIL_LIMIT {
            let got = self.read_up_to(&mut chunk)?;
            if chunk[..got].iter().any(|&byte| byte != 0) {
                return Ok(false);
            }
            if got < chunk.len() {
                break;
            }
            looked += got;
        }
        Ok(true)
    }

    /// Fills `buf` unless the source ends first; returns how much it filled.
    fn read_up_to(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.source.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(got) => filled += got,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.bytes_read += filled as u64;
        Ok(filled)
    }
}
