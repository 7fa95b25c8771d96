//! The primitive encodings every frame payload is built from: LEB128 varints, zigzag for signed
//! values, length-prefixed byte strings.
//!
//! Encoding writes into any [`BufMut`]. Decoding reads from a `&[u8]` through [`Buf`] and checks
//! `remaining()` before every read, so malformed input becomes a [`Malformed`] error and never a
//! panic: `Buf`'s own getters panic when the buffer is short.

use bytes::{Buf, BufMut};

/// Why a frame whose checksum matched still could not be decoded (a writer bug or a crafted
/// file). The text names what was wrong, for diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub &'static str);

/// A u64 takes at most 10 LEB128 bytes (7 bits each).
const MAX_VARINT_LEN: usize = 10;

/// Assembles the varint on the stack and appends it in one call: `BufMut::put_u8` per byte
/// costs a capacity check and a copy each, which made byte-wise encoding the writer's hot spot.
#[inline]
pub(crate) fn put_uvarint(buf: &mut impl BufMut, mut value: u64) {
    let mut bytes = [0u8; MAX_VARINT_LEN];
    let mut len = 0;
    while value >= 0x80 {
        bytes[len] = value as u8 | 0x80;
        value >>= 7;
        len += 1;
    }
    bytes[len] = value as u8;
    buf.put_slice(&bytes[..=len]);
}

/// Signed values go through zigzag so that small negative numbers (-1 as an fd, -errno, a clock
/// going slightly backwards) stay one or two bytes instead of ten.
pub(crate) fn put_ivarint(buf: &mut impl BufMut, value: i64) {
    put_uvarint(buf, zigzag(value));
}

pub(crate) fn put_bytes(buf: &mut impl BufMut, bytes: &[u8]) {
    put_uvarint(buf, bytes.len() as u64);
    buf.put_slice(bytes);
}

pub(crate) fn put_str(buf: &mut impl BufMut, text: &str) {
    put_bytes(buf, text.as_bytes());
}

pub(crate) fn put_bool(buf: &mut impl BufMut, value: bool) {
    buf.put_u8(u8::from(value));
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

pub(crate) fn get_u8(buf: &mut &[u8]) -> Result<u8, Malformed> {
    if buf.has_remaining() {
        Ok(buf.get_u8())
    } else {
        Err(Malformed("a field runs past the end of its frame"))
    }
}

#[inline]
pub(crate) fn get_uvarint(buf: &mut &[u8]) -> Result<u64, Malformed> {
    // Most values in a frame (flags, small deltas, zero arguments) are one byte.
    if let Some(&byte) = buf.first() {
        if byte < 0x80 {
            buf.advance(1);
            return Ok(u64::from(byte));
        }
    }
    let mut value = 0u64;
    for (index, &byte) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            // The tenth byte holds only the top bit of a u64.
            if index == MAX_VARINT_LEN - 1 && byte > 1 {
                return Err(Malformed("a varint overflows 64 bits"));
            }
            buf.advance(index + 1);
            return Ok(value);
        }
    }
    if buf.remaining() >= MAX_VARINT_LEN {
        Err(Malformed("a varint is longer than 10 bytes"))
    } else {
        Err(Malformed("a varint runs past the end of its frame"))
    }
}

#[inline]
pub(crate) fn get_ivarint(buf: &mut &[u8]) -> Result<i64, Malformed> {
    get_uvarint(buf).map(unzigzag)
}

pub(crate) fn get_u32_varint(buf: &mut &[u8]) -> Result<u32, Malformed> {
    u32::try_from(get_uvarint(buf)?).map_err(|_| Malformed("a 32-bit field holds a larger value"))
}

pub(crate) fn get_bool(buf: &mut &[u8]) -> Result<bool, Malformed> {
    match get_u8(buf)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Malformed("a flag byte is neither 0 nor 1")),
    }
}

/// A length-prefixed byte string, borrowed from the frame.
pub(crate) fn get_bytes<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], Malformed> {
    let len = get_uvarint(buf)?;
    let whole: &'a [u8] = buf;
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= whole.len())
        .ok_or(Malformed("a string is longer than the rest of its frame"))?;
    let (bytes, rest) = whole.split_at(len);
    *buf = rest;
    Ok(bytes)
}

/// A length-prefixed UTF-8 string. Allocates exactly the string's length, which the check in
/// [`get_bytes`] bounds by what is left of the frame.
pub(crate) fn get_string(buf: &mut &[u8]) -> Result<String, Malformed> {
    let bytes = get_bytes(buf)?;
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| Malformed("a string is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_varints_round_trip_at_every_length() {
        let mut values = vec![0, 1, 0x7f, 0x80, 0x3fff, 0x4000, u64::MAX - 1, u64::MAX];
        values.extend((0..64).map(|shift| 1u64 << shift));
        for value in values {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, value);
            let expected_len = (64 - value.leading_zeros() as usize).div_ceil(7).max(1);
            assert_eq!(buf.len(), expected_len, "length of {value:#x}");
            let mut read = &buf[..];
            assert_eq!(get_uvarint(&mut read), Ok(value));
            assert!(read.is_empty());
        }
    }

    #[test]
    fn signed_varints_keep_small_magnitudes_small() {
        for value in [0, -1, 1, -64, 63, i64::MIN, i64::MAX, -4095] {
            let mut buf = Vec::new();
            put_ivarint(&mut buf, value);
            let mut read = &buf[..];
            assert_eq!(get_ivarint(&mut read), Ok(value));
        }
        let mut buf = Vec::new();
        put_ivarint(&mut buf, -1);
        assert_eq!(buf, [1]);
    }

    #[test]
    fn varint_errors_instead_of_panicking() {
        assert!(get_uvarint(&mut &[][..]).is_err());
        assert!(get_uvarint(&mut &[0x80, 0x80][..]).is_err());
        assert!(get_uvarint(&mut &[0xff; 11][..]).is_err());
        // Ten bytes whose last carries more than the 64th bit.
        let mut overflow = [0xff; 10];
        overflow[9] = 0x02;
        assert!(get_uvarint(&mut &overflow[..]).is_err());
        assert!(get_u32_varint(&mut &[0x80, 0x80, 0x80, 0x80, 0x10][..]).is_err());
    }

    #[test]
    fn strings_are_bounded_by_the_frame() {
        let mut buf = Vec::new();
        put_str(&mut buf, "héllo");
        let mut read = &buf[..];
        assert_eq!(get_string(&mut read).as_deref(), Ok("héllo"));
        // A length larger than what follows.
        assert!(get_bytes(&mut &[5, b'a', b'b'][..]).is_err());
        // A length that does not even fit in usize on 32-bit targets.
        assert!(
            get_bytes(&mut &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f][..]).is_err()
        );
        assert!(get_string(&mut &[2, 0xc3, 0x28][..]).is_err());
    }
}
