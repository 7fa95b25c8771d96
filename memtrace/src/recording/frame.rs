//! The container: the file's preamble (magic, version, and from version 3 the session id) and
//! the framing around every payload (sync marker, length, type, checksum). What the payloads
//! hold is the business of `header.rs`, `codec.rs` and `events_frame.rs`.

use bytes::{BufMut, BytesMut};

/// First bytes of every recording.
pub const MAGIC: [u8; 8] = *b"MEMTRACE";
/// The format version this build writes. Version 3 seals every frame with the session's id
/// (so frames of two recordings cannot be mixed unnoticed), counts the events of each events
/// frame and may compress them (LZ4); version 2 numbered the events frames. This build still
/// reads versions 1 and 2.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest version this build reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// The first version whose events frames carry their sequence number and first event index.
pub(crate) const SEQUENCED_VERSION: u32 = 2;
/// The first version with a session id in the preamble, in every frame's checksum, and events
/// frames that count their events and say how they are encoded.
pub(crate) const SESSION_VERSION: u32 = 3;
/// Magic followed by the version as a little-endian u32.
pub(crate) const PREAMBLE_LEN: usize = MAGIC.len() + 4;
/// A session id's length: 128 random bits, as a UUID.
pub const SESSION_ID_LEN: usize = 16;

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

/// Which recording a frame belongs to: random, drawn when the recording starts. From version
/// 3 it is in the preamble and in every frame's checksum, so a frame of another recording
/// (two recordings concatenated, a header spliced onto another's frames) fails its checksum
/// instead of replaying under the wrong session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; SESSION_ID_LEN]);

impl SessionId {
    /// A new, random id. Without a random source the id is derived from the clocks and the
    /// pid: still distinct between recordings, which is all it has to be.
    pub fn random() -> Self {
        let mut id = [0u8; SESSION_ID_LEN];
        if getrandom::fill(&mut id).is_err() {
            let seed = crate::clock::realtime_ns() ^ crate::clock::monotonic_ns().rotate_left(32);
            id[..8].copy_from_slice(&seed.to_le_bytes());
            id[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        }
        Self(id)
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

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

/// The preamble of a recording this build writes: magic, version, session id.
pub(crate) fn put_preamble(buf: &mut BytesMut, session: &SessionId) {
    buf.put_slice(&MAGIC);
    buf.put_u32_le(FORMAT_VERSION);
    buf.put_slice(&session.0);
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

/// Fills in the length and appends the checksum of the frame that starts at `start`, sealed
/// with `session` (`None`: a version 1 or 2 frame). The caller keeps payloads within
/// [`MAX_FRAME_PAYLOAD`], so the length fits its u32.
pub(crate) fn end_frame(buf: &mut BytesMut, start: usize, session: Option<&SessionId>) {
    let len = payload_len(buf, start) as u32;
    let len_at = start + FRAME_SYNC.len();
    buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    let type_at = len_at + 4;
    let checksum = checksum(session, buf[type_at], &buf[type_at + 1..]);
    buf.put_u32_le(checksum);
}

/// The checksum a frame carries: CRC-32 (IEEE 802.3, as zlib computes it) of the session id
/// (version 3 on), the type byte and the payload.
pub(crate) fn checksum(session: Option<&SessionId>, frame_type: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    if let Some(session) = session {
        hasher.update(&session.0);
    }
    hasher.update(&[frame_type]);
    hasher.update(payload);
    hasher.finalize()
}

/// The type and payload of one whole frame (`frame`: from sync marker to checksum), checked
/// against the session it was sealed with.
pub(crate) fn open_sealed<'a>(
    frame: &'a [u8],
    session: &SessionId,
) -> Result<(u8, &'a [u8]), &'static str> {
    if frame.len() < FRAME_HEAD_LEN + FRAME_CHECKSUM_LEN || frame[..2] != FRAME_SYNC {
        return Err("it does not start as a frame");
    }
    let len = u32::from_le_bytes([frame[2], frame[3], frame[4], frame[5]]) as usize;
    if len > MAX_FRAME_PAYLOAD || frame.len() != FRAME_HEAD_LEN + len + FRAME_CHECKSUM_LEN {
        return Err("its length is not the frame's");
    }
    let frame_type = frame[FRAME_HEAD_LEN - 1];
    let (payload, stored) = frame[FRAME_HEAD_LEN..].split_at(len);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    if checksum(Some(session), frame_type, payload) != stored {
        return Err("its checksum does not match the session it came from");
    }
    Ok((frame_type, payload))
}

/// The whole frames at the start of `bytes`, one after another (e.g. what a writer handed
/// its sink, the preamble left out), until one is incomplete; each is `(start, end)`.
pub fn frame_bounds(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut bounds = Vec::new();
    let mut start = 0;
    while let Some(head) = bytes.get(start..start + FRAME_HEAD_LEN) {
        if head[..2] != FRAME_SYNC {
            break;
        }
        let len = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let end = start + FRAME_HEAD_LEN + len + FRAME_CHECKSUM_LEN;
        if len > MAX_FRAME_PAYLOAD || end > bytes.len() {
            break;
        }
        bounds.push((start, end));
        start = end;
    }
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_sync_length_type_payload_checksum() {
        let session = SessionId([7; SESSION_ID_LEN]);
        let mut buf = BytesMut::new();
        let start = begin_frame(&mut buf, FrameType::Trailer);
        buf.put_slice(b"abc");
        end_frame(&mut buf, start, Some(&session));
        assert_eq!(&buf[..2], &FRAME_SYNC);
        assert_eq!(&buf[2..6], &3u32.to_le_bytes());
        assert_eq!(buf[6], FrameType::Trailer as u8);
        assert_eq!(&buf[7..10], b"abc");
        let mut sealed = vec![7; SESSION_ID_LEN];
        sealed.extend_from_slice(&[3, b'a', b'b', b'c']);
        assert_eq!(&buf[10..], &crc32fast::hash(&sealed).to_le_bytes());
        // Another session's seal differs; a version 2 frame has none.
        assert_ne!(
            checksum(Some(&SessionId([8; 16])), 3, b"abc"),
            checksum(Some(&session), 3, b"abc")
        );
        assert_eq!(checksum(None, 3, b"abc"), crc32fast::hash(b"\x03abc"));
        // The well-known CRC-32 check value, so other tools know which CRC this is.
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn session_ids_differ() {
        assert_ne!(SessionId::random(), SessionId::random());
        assert_eq!(
            SessionId([0xab; 16]).to_string(),
            "abababababababababababababababab"
        );
    }
}
