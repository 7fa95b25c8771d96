//! The session metadata at the start of a recording and the trailer at its clean end, and their
//! payload encodings.

use bytes::BufMut;

use super::wire::{
    get_bool, get_string, get_u8, get_uvarint, put_bool, put_str, put_uvarint, Malformed,
};
use crate::{clock, event::Losses, probes::backend::BackendInfo};

/// Which mode wrote a recording, and so which consumer replays it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `memtrace` tracing processes' syscalls.
    User,
    /// `memtrace kernel`: kernel snapshots.
    Kernel,
    /// `memtrace agent`: a capture of its flight recorder; replays as user mode does.
    Agent,
}

impl Mode {
    fn code(self) -> u8 {
        match self {
            Self::User => 1,
            Self::Kernel => 2,
            Self::Agent => 3,
        }
    }

    fn from_code(code: u8) -> Result<Self, Malformed> {
        match code {
            1 => Ok(Self::User),
            2 => Ok(Self::Kernel),
            3 => Ok(Self::Agent),
            _ => Err(Malformed("unknown recording mode")),
        }
    }
}

/// What a replay needs to know about the session that recorded the events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordingHeader {
    /// `uname -r` of the machine that recorded.
    pub kernel_release: String,
    /// The traced command (or memtrace's own arguments when it attached to processes).
    pub command_line: Vec<String>,
    pub clock_base: ClockBase,
    /// The program that wrote the recording, e.g. `memtrace 0.1.0`.
    pub started_by: String,
    /// The mode that wrote it; `None` in recordings made before the header said (replay then
    /// tells the mode by the first event).
    pub mode: Option<Mode>,
    /// How a live user-mode session hooked the syscalls, so that a replay reports it too.
    pub backend: Option<BackendInfo>,
}

impl RecordingHeader {
    /// The header of a recording started now, by this memtrace, on this kernel.
    pub fn now(mode: Mode, command_line: &[String], backend: Option<BackendInfo>) -> Self {
        Self {
            kernel_release: crate::probes::preflight::kernel_release(),
            command_line: command_line.to_vec(),
            clock_base: ClockBase {
                monotonic_ns: clock::monotonic_ns(),
                realtime_ns: clock::realtime_ns(),
            },
            started_by: format!("memtrace {}", env!("CARGO_PKG_VERSION")),
            mode: Some(mode),
            backend,
        }
    }
}

/// One instant read on both clocks, so that replay can turn event times (CLOCK_MONOTONIC) into
/// wall-clock times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockBase {
    pub monotonic_ns: u64,
    /// CLOCK_REALTIME, nanoseconds since the Unix epoch.
    pub realtime_ns: u64,
}

impl ClockBase {
    /// The wall-clock time (ns since the epoch) of an event's monotonic timestamp. Events
    /// before the base are handled too (attach layouts can predate it).
    pub fn wall_time_ns(&self, monotonic_ns: u64) -> u64 {
        let offset = monotonic_ns as i128 - self.monotonic_ns as i128;
        (self.realtime_ns as i128 + offset).clamp(0, u64::MAX as i128) as u64
    }
}

/// Written by [`RecordingWriter::finish`](super::RecordingWriter::finish): its presence tells a
/// cleanly finished recording from a cut-off one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trailer {
    /// How many events the writer wrote.
    pub events: u64,
    /// The kernel side's loss totals at the end of the session.
    pub lost: Losses,
    /// How many events frames the writer wrote; `None` in a version 1 recording.
    pub frames: Option<u64>,
}

pub(crate) fn encode_header(header: &RecordingHeader, buf: &mut impl BufMut) {
    put_str(buf, &header.kernel_release);
    put_str(buf, &header.started_by);
    put_uvarint(buf, header.clock_base.monotonic_ns);
    put_uvarint(buf, header.clock_base.realtime_ns);
    put_uvarint(buf, header.command_line.len() as u64);
    for argument in &header.command_line {
        put_str(buf, argument);
    }
    // Appended within version 2 (older readers ignore bytes after the fields they know): the
    // mode, then the backend if there was one.
    if let Some(mode) = header.mode {
        buf.put_u8(mode.code());
        put_bool(buf, header.backend.is_some());
        if let Some(backend) = &header.backend {
            put_str(buf, &backend.name);
            put_bool(buf, backend.why.is_some());
            if let Some(why) = &backend.why {
                put_str(buf, why);
            }
        }
    }
}

/// Bytes after the known fields are ignored, so a later writer may append fields without a new
/// format version.
pub(crate) fn decode_header(mut buf: &[u8]) -> Result<RecordingHeader, Malformed> {
    let buf = &mut buf;
    let kernel_release = get_string(buf)?;
    let started_by = get_string(buf)?;
    let clock_base = ClockBase {
        monotonic_ns: get_uvarint(buf)?,
        realtime_ns: get_uvarint(buf)?,
    };
    let count = get_uvarint(buf)?;
    // Every argument takes at least its length byte: this bounds the allocation by the frame.
    let mut command_line = Vec::with_capacity(count.min(buf.len() as u64) as usize);
    for _ in 0..count {
        command_line.push(get_string(buf)?);
    }
    let (mut mode, mut backend) = (None, None);
    if !buf.is_empty() {
        mode = Some(Mode::from_code(get_u8(buf)?)?);
        if get_bool(buf)? {
            let name = get_string(buf)?;
            let why = if get_bool(buf)? {
                Some(get_string(buf)?)
            } else {
                None
            };
            backend = Some(BackendInfo { name, why });
        }
    }
    Ok(RecordingHeader {
        kernel_release,
        command_line,
        clock_base,
        started_by,
        mode,
        backend,
    })
}

pub(crate) fn encode_trailer(trailer: &Trailer, buf: &mut impl BufMut) {
    put_uvarint(buf, trailer.events);
    put_uvarint(buf, trailer.lost.ring_full);
    put_uvarint(buf, trailer.lost.pending_full);
    // Appended in version 2 (a version 1 reader ignores them): the frame count, then the call
    // stacks not sampled.
    if let Some(frames) = trailer.frames {
        put_uvarint(buf, frames);
        put_uvarint(buf, trailer.lost.stacks_not_sampled);
    }
}

/// Like the header, ignores bytes after the known fields.
pub(crate) fn decode_trailer(mut buf: &[u8]) -> Result<Trailer, Malformed> {
    let buf = &mut buf;
    let events = get_uvarint(buf)?;
    let ring_full = get_uvarint(buf)?;
    let pending_full = get_uvarint(buf)?;
    // Version 2's fields; a version 1 trailer ends here.
    let (frames, stacks_not_sampled) = if buf.is_empty() {
        (None, 0)
    } else {
        let frames = get_uvarint(buf)?;
        let stacks = if buf.is_empty() { 0 } else { get_uvarint(buf)? };
        (Some(frames), stacks)
    };
    Ok(Trailer {
        events,
        lost: Losses {
            ring_full,
            pending_full,
            stacks_not_sampled,
        },
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_with_edge_values() {
        let header = RecordingHeader {
            kernel_release: "6.8.0-45-generic".into(),
            command_line: vec![
                "./a.out".into(),
                String::new(),
                "ünïcode".into(),
                "x".repeat(5000),
            ],
            clock_base: ClockBase {
                monotonic_ns: u64::MAX,
                realtime_ns: 0,
            },
            started_by: "memtrace 0.1.0".into(),
            mode: Some(Mode::User),
            backend: Some(BackendInfo {
                name: "raw-tracepoint".into(),
                why: Some("fentry unavailable: ftrace is locked down".into()),
            }),
        };
        let mut buf = Vec::new();
        encode_header(&header, &mut buf);
        assert_eq!(decode_header(&buf), Ok(header.clone()));
        assert!(decode_header(&buf[..buf.len() - 1]).is_err());
        for (mode, backend) in [(Some(Mode::Kernel), None), (None, None)] {
            let header = RecordingHeader {
                mode,
                backend,
                ..header.clone()
            };
            let mut buf = Vec::new();
            encode_header(&header, &mut buf);
            assert_eq!(decode_header(&buf), Ok(header));
        }
    }

    /// A header written before the mode existed ends after the command line: it still reads,
    /// with no mode, and a reader of that time ignores the new fields.
    #[test]
    fn a_header_without_mode_is_from_before_the_mode() {
        let mut buf = Vec::new();
        put_str(&mut buf, "6.1.0");
        put_str(&mut buf, "memtrace 0.1.0");
        put_uvarint(&mut buf, 5);
        put_uvarint(&mut buf, 6);
        put_uvarint(&mut buf, 0);
        let header = decode_header(&buf).unwrap();
        assert_eq!((header.mode, header.backend), (None, None));
    }

    #[test]
    fn an_absurd_argument_count_does_not_allocate_it() {
        let mut buf = Vec::new();
        put_str(&mut buf, "k");
        put_str(&mut buf, "s");
        put_uvarint(&mut buf, 1);
        put_uvarint(&mut buf, 2);
        put_uvarint(&mut buf, u64::MAX);
        assert!(decode_header(&buf).is_err());
    }

    #[test]
    fn trailer_round_trips() {
        let trailer = Trailer {
            events: u64::MAX,
            lost: Losses {
                ring_full: 3,
                pending_full: u64::MAX,
                stacks_not_sampled: 7,
            },
            frames: Some(7),
        };
        let mut buf = Vec::new();
        encode_trailer(&trailer, &mut buf);
        assert_eq!(decode_trailer(&buf), Ok(trailer));
    }

    #[test]
    fn wall_time_follows_the_monotonic_clock() {
        let base = ClockBase {
            monotonic_ns: 1_000,
            realtime_ns: 1_700_000_000_000_000_000,
        };
        assert_eq!(base.wall_time_ns(1_500), 1_700_000_000_000_000_500);
        assert_eq!(base.wall_time_ns(500), 1_699_999_999_999_999_500);
        assert_eq!(
            ClockBase {
                monotonic_ns: 10,
                realtime_ns: 5
            }
            .wall_time_ns(0),
            0
        );
    }
}
