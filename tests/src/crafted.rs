//! Recordings crafted byte by byte from docs/recording-format.md (version 3), as an attacker
//! would write them, independently of memtrace's own writer: a million forks, a million
//! mappings. Shared by the hardening tests and the footprint bench, which replays them against
//! the 256 MB goal (issue #29); the `footprint` example includes this file by path, so it
//! uses nothing but std and crc32fast.

/// Writes recordings from docs/recording-format.md, version 3, as an attacker would craft
/// them: frames of plain events, sealed with a session id.
struct Crafted {
    bytes: Vec<u8>,
    session: [u8; 16],
}

impl Crafted {
    fn new() -> Self {
        let session = [0x5a; 16];
        let mut bytes = b"MEMTRACE".to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&session);
        let mut crafted = Self { bytes, session };
        // Header: kernel release, started by, clock base, command line, mode (user), no backend.
        let mut header = Vec::new();
        for text in ["6.18", "crafted"] {
            put_str(&mut header, text);
        }
        put_varint(&mut header, 1_000);
        put_varint(&mut header, 0);
        put_varint(&mut header, 1);
        put_str(&mut header, "crafted");
        header.extend_from_slice(&[1, 0]);
        crafted.frame(1, &header);
        crafted
    }

    fn frame(&mut self, frame_type: u8, payload: &[u8]) {
        self.bytes.extend_from_slice(&[0xfa, 0xce]);
        self.bytes
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.bytes.push(frame_type);
        self.bytes.extend_from_slice(payload);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.session);
        crc.update(&[frame_type]);
        crc.update(payload);
        self.bytes.extend_from_slice(&crc.finalize().to_le_bytes());
    }

    /// `events` bodies (kind, body bytes) from thread 1000 of process 1000, 4096 a frame; an
    /// attach layout of process 1000 first, then a trailer.
    fn events(mut self, count: usize, event: impl Fn(usize) -> (u8, Vec<u8>)) -> Vec<u8> {
        let mut sequence = 0;
        let mut first_event = 0;
        let mut index = 0;
        while index < count {
            let mut body = Vec::new();
            let mut in_frame = 0;
            // The first event names its thread and identity; the rest repeat them.
            let put = |body: &mut Vec<u8>, kind: u8, rest: &[u8], first: bool| {
                body.push(kind | 1 << 3 | if first { 0x60 } else { 0 });
                put_varint(body, 20); // time delta, zigzag 10
                if first {
                    put_varint(body, 1000);
                    put_varint(body, 1000);
                    put_str(body, "crafted");
                }
                body.extend_from_slice(rest);
            };
            if sequence == 0 {
                // Attach layout: start_brk, brk, ppid, exe, no regions, no memfds.
                let mut attach = vec![0, 0, 1];
                put_str(&mut attach, "/crafted");
                attach.extend_from_slice(&[0, 0]);
                put(&mut body, 5, &attach, true);
                in_frame += 1;
            }
            while index < count && in_frame < 4096 {
                let (kind, rest) = event(index);
                put(&mut body, kind, &rest, in_frame == 0);
                in_frame += 1;
                index += 1;
            }
            let mut payload = Vec::new();
            put_varint(&mut payload, sequence);
            put_varint(&mut payload, first_event);
            put_varint(&mut payload, in_frame);
            payload.push(0);
            payload.extend_from_slice(&body);
            self.frame(2, &payload);
            sequence += 1;
            first_event += in_frame;
        }
        let mut trailer = Vec::new();
        for value in [first_event, 0, 0, sequence, 0] {
            put_varint(&mut trailer, value);
        }
        self.frame(3, &trailer);
        self.bytes
    }
}

fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push(value as u8 | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn put_signed(buf: &mut Vec<u8>, value: i64) {
    put_varint(buf, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_str(buf: &mut Vec<u8>, text: &str) {
    put_varint(buf, text.len() as u64);
    buf.extend_from_slice(text.as_bytes());
}

/// A million forks of children that never run, in about 9 MB.
pub fn million_forks() -> Vec<u8> {
    Crafted::new().events(1_000_000, |index| {
        let mut fork = Vec::new();
        put_varint(&mut fork, 2_000 + index as u64);
        put_varint(&mut fork, 2_000 + index as u64);
        fork.push(0);
        (1, fork)
    })
}

/// A million anonymous pages mapped and never unmapped, in about 17 MB.
pub fn million_mappings() -> Vec<u8> {
    Crafted::new().events(1_000_000, |index| {
        let mut mmap = vec![1];
        let address = 0x1_0000_0000 + index as i64 * 0x2000;
        for argument in [0, 4096, 3, 0x22, -1, 0] {
            put_signed(&mut mmap, argument);
        }
        put_signed(&mut mmap, address);
        put_signed(&mut mmap, 100);
        (0, mmap)
    })
}
