//! An events frame's payload around its events: its place in the stream (version 2 on), and
//! from version 3 how many events it holds and how they are stored (as encoded, or compressed
//! with LZ4). The events themselves are `codec.rs`'s.
//!
//! LZ4 (block format, one block per frame, no dictionary) because it pays on the live path:
//! the encoded events of a mmap/munmap loop shrink about fourfold at well over 500 MB/s, and
//! decompress several times faster than replay decodes, while a frame stays self-contained (a
//! flight recorder can keep frames and write any window of them as a recording of its own).

use bytes::BufMut;

use super::frame::{SEQUENCED_VERSION, SESSION_VERSION};
use super::wire::{get_u8, get_uvarint, put_uvarint, Malformed};

/// How the events of a version 3 frame are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// The encoded events as they are.
    Plain = 0,
    /// The encoded events as one LZ4 block, preceded by their length (a varint).
    Lz4 = 1,
}

/// The most an LZ4 block can expand: each byte of input yields at most 255 of output (a
/// run's length costs a byte per 255). A claimed length beyond this cannot be true, and is
/// not allocated.
const LZ4_MAX_RATIO: usize = 255;

/// An events frame's place in the stream and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Prefix {
    /// Version 2 on: the frame's number, from 0.
    pub sequence: u64,
    /// Version 2 on: events the writer wrote in the frames before this one.
    pub first_event: u64,
    /// Version 3 on: events in this frame.
    pub events: Option<u64>,
    pub encoding: Encoding,
}

impl Prefix {
    /// Reads the prefix of a payload of format `version`; returns it and where the events (or
    /// their compressed block) start. Version 1 frames have none: everything is events.
    pub(crate) fn read(payload: &[u8], version: u32) -> Result<(Self, usize), Malformed> {
        let mut rest = payload;
        let mut prefix = Self {
            sequence: 0,
            first_event: 0,
            events: None,
            encoding: Encoding::Plain,
        };
        if version >= SEQUENCED_VERSION {
            prefix.sequence = get_uvarint(&mut rest)?;
            prefix.first_event = get_uvarint(&mut rest)?;
        }
        if version >= SESSION_VERSION {
            prefix.events = Some(get_uvarint(&mut rest)?);
            prefix.encoding = match get_u8(&mut rest)? {
                0 => Encoding::Plain,
                1 => Encoding::Lz4,
                _ => return Err(Malformed("an events frame has an unknown encoding")),
            };
        }
        Ok((prefix, payload.len() - rest.len()))
    }

    /// Appends a version 3 prefix.
    pub(crate) fn put(&self, buf: &mut impl BufMut) {
        put_uvarint(buf, self.sequence);
        put_uvarint(buf, self.first_event);
        put_uvarint(buf, self.events.unwrap_or(0));
        buf.put_u8(self.encoding as u8);
    }
}

/// Appends the encoded events `body` as a version 3 frame stores them: compressed when
/// `compress` and that makes them smaller, else as they are. `scratch` is reused between
/// frames. Returns the encoding used.
pub(crate) fn choose_encoding(body: &[u8], compress: bool, scratch: &mut Vec<u8>) -> Encoding {
    if !compress || body.len() < 64 {
        return Encoding::Plain;
    }
    scratch.resize(lz4_flex::block::get_maximum_output_size(body.len()), 0);
    match lz4_flex::block::compress_into(body, scratch) {
        // The length varint costs up to 4 bytes for a frame's body.
        Ok(len) if len + 4 < body.len() => {
            scratch.truncate(len);
            Encoding::Lz4
        }
        _ => Encoding::Plain,
    }
}

/// Appends the stored form of `body` for `encoding` (`scratch` holding its compression).
pub(crate) fn put_body(buf: &mut impl BufMut, body: &[u8], encoding: Encoding, scratch: &[u8]) {
    match encoding {
        Encoding::Plain => buf.put_slice(body),
        Encoding::Lz4 => {
            put_uvarint(buf, body.len() as u64);
            buf.put_slice(scratch);
        }
    }
}

/// The events of an LZ4 frame, decompressed into `out` (reused between frames). The claimed
/// length is checked against what the block could possibly expand to, and against `limit`,
/// before anything is allocated.
pub(crate) fn decompress(
    mut stored: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), Malformed> {
    let len = get_uvarint(&mut stored)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= limit && len <= stored.len().saturating_mul(LZ4_MAX_RATIO))
        .ok_or(Malformed(
            "a compressed frame claims more events than it can hold",
        ))?;
    out.clear();
    out.resize(len, 0);
    match lz4_flex::block::decompress_into(stored, out) {
        Ok(got) if got == len => Ok(()),
        _ => Err(Malformed("a compressed frame does not decompress")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_round_trip_and_old_versions_have_less() {
        let prefix = Prefix {
            sequence: 7,
            first_event: 1 << 40,
            events: Some(4096),
            encoding: Encoding::Lz4,
        };
        let mut buf = Vec::new();
        prefix.put(&mut buf);
        buf.extend_from_slice(b"rest");
        let (read, at) = Prefix::read(&buf, 3).unwrap();
        assert_eq!((read, &buf[at..]), (prefix, &b"rest"[..]));
        let (v2, at) = Prefix::read(&buf, 2).unwrap();
        assert_eq!((v2.sequence, v2.first_event, v2.events), (7, 1 << 40, None));
        assert_eq!(at, 1 + 6);
        assert_eq!(Prefix::read(&buf, 1).unwrap().1, 0);
        let mut unknown = buf.clone();
        unknown[1 + 6 + 2] = 9;
        assert!(Prefix::read(&unknown, 3).is_err());
    }

    #[test]
    fn bodies_compress_when_it_pays_and_lies_are_not_allocated() {
        let body: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        let mut scratch = Vec::new();
        let encoding = choose_encoding(&body, true, &mut scratch);
        assert_eq!(encoding, Encoding::Lz4);
        let mut stored = Vec::new();
        put_body(&mut stored, &body, encoding, &scratch);
        assert!(stored.len() < body.len() / 4);
        let mut out = Vec::new();
        decompress(&stored, &mut out, usize::MAX).unwrap();
        assert_eq!(out, body);
        // Random bytes do not compress: stored as they are.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                // xorshift64: bytes without repeats for LZ4 to find.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        assert_eq!(choose_encoding(&noise, true, &mut scratch), Encoding::Plain);
        assert_eq!(choose_encoding(&body, false, &mut scratch), Encoding::Plain);
        // A block claiming 64 MiB in a few bytes, or more than the limit, is refused up front.
        let mut lie = Vec::new();
        put_uvarint(&mut lie, 64 << 20);
        lie.extend_from_slice(&[0x1f, 0, 1, 0]);
        assert!(decompress(&lie, &mut out, usize::MAX).is_err());
        assert!(out.capacity() < 1 << 20);
        assert!(decompress(&stored, &mut out, 100).is_err());
        // A damaged block is malformed, not a panic.
        let mut damaged = stored.clone();
        let last = damaged.len() - 1;
        damaged[last / 2] ^= 0xff;
        let _ = decompress(&damaged, &mut out, usize::MAX);
    }
}
