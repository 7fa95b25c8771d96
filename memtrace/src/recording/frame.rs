//! The container: the file's preamble (magic and version) and the framing around every payload
//! (sync marker, length, type, checksum). What the payloads hold is the business of
//! `header.rs` and `codec.rs`.

use bytes::{BufMut, BytesMut};

/// First bytes of every recording.
pub const MAGIC: [u8; 8] = *b"MEMTRACE";
/// The format version this build writes. Version 2 numbers the events frames, so a replay can
/// tell a missing, repeated or reordered frame; this build still reads version 1.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest version this build reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// The first version whose events frames carry their sequence number and first event index.
pub(crate) const SEQUENCED_VERSION: u32 = 2;
/// Magic followed by the version as a little-endian u32.
pub(crate) const PREAMBLE_LEN: usize = MAGIC.len() + 4;

/// Starts every frame, so that a reader can tell a frame boundary from garbage after a length
/// field went wrong.
pub(crate) const FRAME_SYNC: [u8; 2] = [0xfa, 0xce];
/// Sync marker, payload length (u32 LE), frame type.
pub(crate) const FRAME_HEAD_LEN: usize = FRAME_SYNC.len() + 4 + 1;
/// CRC-32 after the payload.
pub(crate) const FRAME_CHECKSUM_LEN: usize = 4;
/// The largest payload a writer produces and a reader accepts. A length above it cannot come
/// from a writer, so it marks the structure as broken. Big enough for the attach layout of a process
/// with far more mappings than the kernel's default `vm.max_map_count` allows.
pub const MAX_FRAME_PAYLOAD: usize = 64 << 20;

/// What a frame's payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameType {
    /// The session's [`RecordingHeader`](super::RecordingHeader); always the first frame.
    Header = 1,
    /// A batch of events.
    Events = 2,
    /// The [`Trailer`](super::Trailer) written when the session finished cleanly.
    Trailer = 3,
}

impl FrameType {
    pub(crate) fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Header),
            2 => Some(Self::Events),
            3 => Some(Self::Trailer),
            _ => None,
        }
    }
}

pub(crate) fn put_preamble(buf: &mut BytesMut) {
    buf.put_slice(&MAGIC);
    buf.put_u32_le(FORMAT_VERSION);
}

/// Appends a frame head whose length is filled in by [`end_frame`]; the payload is then appended
/// to `buf` directly, so a frame is assembled without copying. Returns where the frame starts.
pub(crate) fn begin_frame(buf: &mut BytesMut, frame_type: FrameType) -> usize {
    let start = buf.len();
    buf.put_slice(&FRAME_SYNC);
    buf.put_u32_le(0);
    buf.put_u8(frame_type as u8);
    start
}

/// Length of the payload appended since [`begin_frame`] returned `start`.
pub(crate) fn payload_len(buf: &BytesMut, start: usize) -> usize {
    buf.len() - start - FRAME_HEAD_LEN
}

/// Fills in the length and appends the checksum of the frame that starts at `start`. The
/// caller keeps payloads within [`MAX_FRAME_PAYLOAD`], so the length fits its u32.
pub(crate) fn end_frame(buf: &mut BytesMut, start: usize) {
    let len = payload_len(buf, start) as u32;
    let len_at = start + FRAME_SYNC.len();
    buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    let type_at = len_at + 4;
    let checksum = crc32fast::hash(&buf[type_at..]);
    buf.put_u32_le(checksum);
}

/// The checksum a frame carries: CRC-32 (IEEE 802.3, as zlib computes it) of the type byte
/// followed by the payload.
pub(crate) fn checksum(frame_type: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[frame_type]);
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_sync_length_type_payload_checksum() {
        let mut buf = BytesMut::new();
        let start = begin_frame(&mut buf, FrameType::Trailer);
        buf.put_slice(b"abc");
        end_frame(&mut buf, start);
        assert_eq!(&buf[..2], &FRAME_SYNC);
        assert_eq!(&buf[2..6], &3u32.to_le_bytes());
        assert_eq!(buf[6], FrameType::Trailer as u8);
        assert_eq!(&buf[7..10], b"abc");
        assert_eq!(&buf[10..], &checksum(3, b"abc").to_le_bytes());
        // The well-known CRC-32 check value, so other tools know which CRC this is.
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }
}
