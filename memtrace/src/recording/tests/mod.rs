//! Tests that go through both the writer and the reader. Helpers here are shared with the unit
//! tests of the individual modules.

mod damage;
mod fuzz;
mod roundtrip;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use bytes::{BufMut, BytesMut};

use super::events_frame::{self, Encoding, Prefix};
use super::frame::{
    begin_frame, end_frame, FrameType, SessionId, FRAME_CHECKSUM_LEN, FRAME_HEAD_LEN, MAGIC,
    PREAMBLE_LEN, SESSION_ID_LEN, SESSION_VERSION,
};
use super::wire::put_uvarint;
use super::{
    ClockBase, RecordError, RecordingHeader, RecordingReader, RecordingWriter, ReplayOutcome,
    WriterOptions,
};
use crate::event::{
    Abi, AttachEvent, AttachFd, Comm, Event, EventBody, ExecEvent, ExecMappingEvent,
    ExecMappingKind, ExitEvent, FileRef, ForkEvent, ImageLayout, JitSymbolEvent, LimitsEvent,
    Losses, MapsLine, ModuleEvent, StackEvent, Syscall, SyscallEvent,
};

pub(crate) fn sample_header() -> RecordingHeader {
    RecordingHeader {
        kernel_release: "6.8.0-45-generic".into(),
        command_line: vec![
            "memtrace".into(),
            "record".into(),
            "--".into(),
            "./app".into(),
        ],
        clock_base: ClockBase {
            monotonic_ns: 5_000_000_000,
            realtime_ns: 1_700_000_000_000_000_000,
        },
        started_by: "memtrace 0.1.0".into(),
        mode: Some(crate::recording::Mode::User),
        backend: None,
    }
}

/// A path under the system temp directory that no other test uses.
pub(crate) fn scratch_path(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "memtrace-record-{}-{unique}-{name}",
        std::process::id()
    ))
}

pub(crate) fn write_recording(
    events: &[Event],
    options: WriterOptions,
    lost: Option<Losses>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = RecordingWriter::new(&mut out, &sample_header(), options).unwrap();
    for event in events {
        writer.write_event(event).unwrap();
    }
    match lost {
        Some(lost) => {
            writer.finish(lost).unwrap();
        }
        // Dropped without finish: the open frame is written, the trailer is not.
        None => drop(writer),
    }
    out
}

/// Everything a reader makes of `bytes`: the events, the error that stopped it (if any), and the
/// outcome. `Err` when the reader could not even start.
pub(crate) struct Replay {
    pub events: Vec<Event>,
    pub error: Option<RecordError>,
    pub outcome: ReplayOutcome,
}

pub(crate) fn replay(bytes: &[u8]) -> Result<Replay, RecordError> {
    let mut reader = RecordingReader::new(bytes)?;
    let mut events = Vec::new();
    let mut error = None;
    for item in reader.by_ref() {
        match item {
            Ok(event) => events.push(event),
            Err(stop) => {
                assert!(error.is_none(), "the reader went on after an error");
                error = Some(stop);
            }
        }
    }
    Ok(Replay {
        events,
        error,
        outcome: reader.outcome(),
    })
}

/// A frame as it lies in a recording.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameSpan {
    pub start: usize,
    pub end: usize,
    pub frame_type: FrameType,
}

/// The format version in a recording's preamble.
pub(crate) fn version_of(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[MAGIC.len()..PREAMBLE_LEN].try_into().unwrap())
}

/// Where the first frame starts: after the session id from version 3 on.
pub(crate) fn preamble_len(bytes: &[u8]) -> usize {
    if version_of(bytes) >= SESSION_VERSION {
        PREAMBLE_LEN + SESSION_ID_LEN
    } else {
        PREAMBLE_LEN
    }
}

/// The session a recording's frames are sealed with (version 3 on).
pub(crate) fn session_of(bytes: &[u8]) -> Option<SessionId> {
    (version_of(bytes) >= SESSION_VERSION).then(|| {
        SessionId(
            bytes[PREAMBLE_LEN..PREAMBLE_LEN + SESSION_ID_LEN]
                .try_into()
                .unwrap(),
        )
    })
}

/// A frame's payload.
pub(crate) fn payload_of(bytes: &[u8], span: FrameSpan) -> &[u8] {
    &bytes[span.start + FRAME_HEAD_LEN..span.end - FRAME_CHECKSUM_LEN]
}

/// An events frame's prefix and its events as encoded (decompressed if need be).
pub(crate) fn events_of(bytes: &[u8], span: FrameSpan) -> (Prefix, Vec<u8>) {
    let payload = payload_of(bytes, span);
    let (prefix, start) = Prefix::read(payload, version_of(bytes)).unwrap();
    let events = match prefix.encoding {
        Encoding::Plain => payload[start..].to_vec(),
        Encoding::Lz4 => {
            let mut out = Vec::new();
            events_frame::decompress(&payload[start..], &mut out, usize::MAX).unwrap();
            out
        }
    };
    (prefix, events)
}

/// Appends a frame with a valid checksum (sealed with `session`) around an arbitrary payload.
pub(crate) fn append_frame(
    bytes: &mut Vec<u8>,
    session: Option<&SessionId>,
    frame_type: u8,
    payload: &[u8],
) {
    let mut frame = BytesMut::new();
    let start = begin_frame(&mut frame, FrameType::Events);
    frame[start + FRAME_HEAD_LEN - 1] = frame_type;
    frame.put_slice(payload);
    end_frame(&mut frame, start, session);
    bytes.extend_from_slice(&frame);
}

/// A version 3 events frame's payload around plain encoded events.
pub(crate) fn events_payload(
    sequence: u64,
    first_event: u64,
    events: u64,
    encoded: &[u8],
) -> Vec<u8> {
    let mut payload = Vec::new();
    Prefix {
        sequence,
        first_event,
        events: Some(events),
        encoding: Encoding::Plain,
    }
    .put(&mut payload);
    payload.extend_from_slice(encoded);
    payload
}

/// A recording of this version rewritten as a version 1 or 2 writer wrote it: the preamble
/// without session id, checksums without it, events frames with their version's prefix, and
/// (version 1) the trailer's first three fields only. Version 1 attach layouts also differ:
/// `events` must hold none.
pub(crate) fn downgrade(bytes: &[u8], version: u32) -> Vec<u8> {
    assert!(version < SESSION_VERSION);
    let mut old = MAGIC.to_vec();
    old.extend_from_slice(&version.to_le_bytes());
    for span in frame_spans(bytes) {
        let payload = payload_of(bytes, span);
        let payload = match span.frame_type {
            FrameType::Header => payload.to_vec(),
            FrameType::Events => {
                let (prefix, events) = events_of(bytes, span);
                let mut old_payload = Vec::new();
                if version >= 2 {
                    put_uvarint(&mut old_payload, prefix.sequence);
                    put_uvarint(&mut old_payload, prefix.first_event);
                }
                old_payload.extend_from_slice(&events);
                old_payload
            }
            FrameType::Trailer => {
                let trailer = super::header::decode_trailer(payload).unwrap();
                let mut old_payload = Vec::new();
                put_uvarint(&mut old_payload, trailer.events);
                put_uvarint(&mut old_payload, trailer.lost.ring_full);
                put_uvarint(&mut old_payload, trailer.lost.pending_full);
                if version >= 2 {
                    put_uvarint(&mut old_payload, trailer.frames.unwrap());
                    put_uvarint(&mut old_payload, trailer.lost.stacks_not_sampled);
                }
                old_payload
            }
        };
        append_frame(&mut old, None, span.frame_type as u8, &payload);
    }
    old
}

/// The frames of an intact recording, by walking the lengths.
pub(crate) fn frame_spans(bytes: &[u8]) -> Vec<FrameSpan> {
    let mut spans = Vec::new();
    let mut start = preamble_len(bytes);
    while start < bytes.len() {
        let len = u32::from_le_bytes(bytes[start + 2..start + 6].try_into().unwrap()) as usize;
        let end = start + FRAME_HEAD_LEN + len + FRAME_CHECKSUM_LEN;
        let frame_type = FrameType::from_u8(bytes[start + 6]).unwrap();
        spans.push(FrameSpan {
            start,
            end,
            frame_type,
        });
        start = end;
    }
    assert_eq!(start, bytes.len());
    spans
}

fn comm_bytes(bytes: &[u8]) -> Comm {
    let mut comm = [0u8; 16];
    comm[..bytes.len()].copy_from_slice(bytes);
    Comm(comm)
}

fn event(time_ns: u64, tid: u32, body: EventBody) -> Event {
    Event {
        time_ns,
        pid: 4000,
        tid,
        comm: Comm::from_str_lossy("app"),
        abi: Abi::X86_64,
        body,
    }
}

fn syscall(syscall: Syscall, args: [u64; 6], ret: i64) -> SyscallEvent {
    SyscallEvent {
        syscall,
        args,
        ret,
        entry_ns: 0,
        string: None,
        file: None,
    }
}

/// Every variant of [`EventBody`], with edge values: extremes, empty and long strings, invalid
/// UTF-8 comms, time going backwards, threads interleaving.
pub(crate) fn every_variant() -> Vec<Event> {
    let long = "/very/long/path/".repeat(400);
    let mut events = vec![
        event(
            1_000,
            4000,
            EventBody::Syscall(SyscallEvent {
                entry_ns: 900,
                ..syscall(
                    Syscall::Mmap,
                    [0, 4096, 3, 0x22, u64::MAX, 0],
                    0x7f12_3456_7000,
                )
            }),
        ),
        event(
            u64::MAX,
            u32::MAX,
            EventBody::Syscall(SyscallEvent {
                entry_ns: 0,
                string: Some(String::new()),
                file: Some(FileRef {
                    inode: u64::MAX,
                    path: String::new(),
                }),
                ..syscall(Syscall::MemfdCreate, [u64::MAX; 6], i64::MIN)
            }),
        ),
        // Time goes backwards (events from different CPUs), entry after exit.
        event(
            0,
            0,
            EventBody::Syscall(SyscallEvent {
                entry_ns: u64::MAX,
                string: Some(long.clone()),
                ..syscall(Syscall::Execve, [1, 2, 3, 4, 5, 6], i64::MAX)
            }),
        ),
        event(
            2_000,
            4001,
            EventBody::Syscall(SyscallEvent {
                entry_ns: 1_999,
                file: Some(FileRef {
                    inode: 1234,
                    path: "/memfd:jit (deleted)ü".into(),
                }),
                ..syscall(Syscall::Mmap2, [0, 8192, 5, 2, 7, 3], -12)
            }),
        ),
        event(
            2_100,
            4001,
            EventBody::Fork(ForkEvent {
                child_pid: u32::MAX,
                child_tid: 0,
                thread: true,
                shares_mm: false,
                untraced: false,
            }),
        ),
        event(
            2_200,
            4001,
            EventBody::Fork(ForkEvent {
                child_pid: 5,
                child_tid: 6,
                thread: false,
                shares_mm: true,
                untraced: true,
            }),
        ),
        event(
            2_300,
            4000,
            EventBody::Exec(Box::new(ExecEvent {
                old_tid: u32::MAX,
                personality: 0x0800_0000,
                new_abi: Abi::I386,
                filename: String::new(),
                interp: long,
                layout: ImageLayout {
                    start_code: u64::MAX,
                    end_code: 0,
                    start_data: 1,
                    end_data: u64::MAX - 1,
                    start_brk: 0x5555_5555_0000,
                    brk: 0x5555_5557_0000,
                    start_stack: 0x7ffd_0000_0000,
                    mmap_base: 0x7f00_0000_0000,
                    stack_start: 0x7ffc_ffff_0000,
                    stack_end: 0x7ffd_0001_0000,
                    interp_base: 0,
                    entry: 0x5555_5555_1040,
                    phdr: 0x5555_5555_0040,
                },
            })),
        ),
        event(
            2_400,
            4000,
            EventBody::Exit(ExitEvent {
                status: u32::MAX,
                group_dead: true,
            }),
        ),
        event(
            2_500,
            4002,
            EventBody::Exit(ExitEvent {
                status: 0,
                group_dead: false,
            }),
        ),
        event(
            2_600,
            4002,
            EventBody::Attach(AttachEvent {
                regions: Vec::new(),
                start_brk: 0,
                brk: 0,
                ppid: 0,
                exe: String::new(),
                memfd_fds: Vec::new(),
            }),
        ),
        event(
            2_700,
            4002,
            EventBody::Attach(AttachEvent {
                regions: (0..300)
                    .map(|index| MapsLine {
                        start: index * 0x1000,
                        end: u64::MAX - index,
                        perms: ["r-xp", "rw-p", "", "---s"][index as usize % 4].into(),
                        offset: index << 40,
                        inode: index,
                        name: if index % 3 == 0 {
                            String::new()
                        } else {
                            format!("/lib/lib{index}.so")
                        },
                    })
                    .collect(),
                start_brk: u64::MAX,
                brk: 1,
                ppid: u32::MAX,
                exe: "/usr/bin/ünïcödé".into(),
                memfd_fds: Vec::new(),
            }),
        ),
        event(
            2_800,
            4003,
            EventBody::Lost(Losses {
                ring_full: u64::MAX,
                pending_full: 0,
                stacks_not_sampled: 0,
            }),
        ),
        event(2_900, 4003, EventBody::Lost(Losses::default())),
        event(
            2_950,
            4003,
            EventBody::JitSymbol(JitSymbolEvent {
                start: u64::MAX,
                len: 0x204,
                name: "JS:^makeBuffers /app/jit.js:3:21".into(),
            }),
        ),
        event(
            2_960,
            4003,
            EventBody::Keyframe(AttachEvent {
                regions: vec![MapsLine {
                    start: 0x7f00_0000_0000,
                    end: 0x7f00_0040_0000,
                    perms: "rw-s".into(),
                    offset: 0,
                    inode: 5555,
                    name: "/memfd:doublemapper (deleted)".into(),
                }],
                start_brk: 0x55_0000,
                brk: 0x56_0000,
                ppid: 1,
                exe: "/usr/bin/dotnet".into(),
                memfd_fds: vec![AttachFd {
                    fd: 7,
                    inode: 5555,
                    cloexec: true,
                }],
            }),
        ),
        event(
            2_970,
            4003,
            EventBody::Limits(LimitsEvent {
                max_map_count: 65_530,
                address_space: Some(u64::MAX),
            }),
        ),
        event(2_980, 4003, EventBody::Limits(LimitsEvent::default())),
    ];
    for (kind, file, name) in [
        (ExecMappingKind::Mmap, true, false),
        (ExecMappingKind::Bss, false, true),
        (ExecMappingKind::Special, true, true),
    ] {
        events.push(event(
            3_000,
            4000,
            EventBody::ExecMapping(ExecMappingEvent {
                kind,
                start: u64::MAX,
                len: 0,
                prot: u32::MAX,
                flags: 0x812,
                offset: u64::MAX,
                file: file.then(|| FileRef {
                    inode: 77,
                    path: "/usr/lib/ld-linux-x86-64.so.2".into(),
                }),
                name: name.then(|| "[vdso]".into()),
            }),
        ));
    }
    // Identities: comms with invalid UTF-8, bytes after an inner NUL, all 16 bytes used, empty;
    // every ABI; a thread whose comm changes.
    let comms = [
        comm_bytes(&[0xff, 0xfe, 0x80]),
        comm_bytes(&[b'a', 0, b'b', 0, 0xc3]),
        Comm([0xff; 16]),
        Comm::default(),
        comm_bytes(b"0123456789abcdef"),
    ];
    for (index, comm) in comms.into_iter().enumerate() {
        for abi in [Abi::Unknown, Abi::X86_64, Abi::I386] {
            let mut renamed = event(
                4_000 + index as u64,
                4000,
                EventBody::Lost(Losses {
                    ring_full: 1,
                    pending_full: 2,
                    stacks_not_sampled: 3,
                }),
            );
            renamed.comm = comm;
            renamed.abi = abi;
            events.push(renamed);
        }
    }
    let mut other_process = event(
        5_000,
        4000,
        EventBody::Exit(ExitEvent {
            status: 9,
            group_dead: true,
        }),
    );
    other_process.pid = u32::MAX;
    events.push(other_process);
    events
}
