//! Events inside an events frame, encoded compactly and decoded without per-event allocation
//! (strings aside).
//!
//! Each frame is coded on its own: the context below (previous time, which pid and comm each
//! thread has) starts empty at every frame, so a frame can be decoded even when the frames
//! before it were lost. Within a frame, time is a delta from the previous event, the thread id
//! is written only when it changes, and pid and comm only when they change for that thread.
//! docs/recording-format.md describes the same layout for other tools.

use std::collections::HashMap;

use bytes::BufMut;

use super::kernel_codec;
use super::wire::{
    get_bool, get_bytes, get_ivarint, get_string, get_u32_varint, get_u8, get_uvarint, put_bool,
    put_bytes, put_ivarint, put_str, put_uvarint, Malformed,
};
use crate::event::{
    Abi, AttachEvent, AttachFd, Comm, ContainerIdentity, Event, EventBody, ExecEvent,
    ExecMappingEvent, ExecMappingKind, ExitEvent, FileRef, ForkEvent, JitSymbolEvent, LimitsEvent,
    Losses, MapsLine, ModuleEvent, StackEvent, Syscall, SyscallEvent,
};

/// The tag byte that starts every event: body kind, ABI, and which optional parts follow.
mod tag {
    pub const KIND: u8 = 0b0000_0111;
    pub const ABI_SHIFT: u32 = 3;
    pub const ABI: u8 = 0b0001_1000;
    /// The pid and comm of the thread follow (first event of the thread in this frame, or they
    /// changed).
    pub const IDENTITY: u8 = 0b0010_0000;
    /// The thread id follows (it differs from the previous event's).
    pub const TID: u8 = 0b0100_0000;
    pub const RESERVED: u8 = 0b1000_0000;
}

/// Body kinds in the tag's low bits.
mod kind {
    pub const SYSCALL: u8 = 0;
    pub const FORK: u8 = 1;
    pub const EXEC: u8 = 2;
    pub const EXIT: u8 = 3;
    pub const EXEC_MAPPING: u8 = 4;
    pub const ATTACH: u8 = 5;
    pub const LOST: u8 = 6;
    /// The kind continues in the next byte ([`extended`]): the tag has no bits left.
    pub const EXTENDED: u8 = 7;
}

/// Kinds after [`kind::EXTENDED`], in the byte that follows the tag.
mod extended {
    pub const STACK: u8 = 0;
    pub const MODULE: u8 = 1;
    pub const KERNEL_SNAPSHOT: u8 = 2;
    pub const CONTAINER: u8 = 3;
    /// A [`Losses`] that counts call stacks not sampled; one that does not keeps the
    /// shorter [`kind::LOST`] form older readers know.
    pub const LOST_WITH_STACKS: u8 = 4;
    /// A [`JitSymbolEvent`]: start, length, name.
    pub const JIT_SYMBOL: u8 = 5;
    /// A [`StackEvent`] cut short (`truncated`), written as [`STACK`] is.
    pub const STACK_TRUNCATED: u8 = 6;
    /// The agent's keyframe of a process: an attach layout's body.
    pub const KEYFRAME: u8 = 7;
    /// A [`LimitsEvent`]: what bounds the process's mappings.
    pub const LIMITS: u8 = 8;
}

/// The byte that starts a syscall body: the [`Syscall`] number and which optional parts follow.
mod syscall_head {
    pub const NUMBER: u8 = 0b0001_1111;
    pub const STRING: u8 = 0b0010_0000;
    pub const FILE: u8 = 0b0100_0000;
    /// The entry was not seen (`entry_ns` 0: no `--latency`), and no duration follows. Without
    /// this bit a 0 would be coded as a duration of the whole clock, 8 bytes an event. Unset
    /// in recordings made before it (this bit was reserved), which read as they always did;
    /// a memtrace from before refuses a recording that sets it ("reserved bit").
    pub const NO_ENTRY: u8 = 0b1000_0000;
}

/// Syscall numbers share their byte with two flags: a syscall added to memtrace-common beyond
/// what the field holds must fail the build, not corrupt recordings.
const _: () = {
    let mut index = 0;
    while index < Syscall::ALL.len() {
        assert!(Syscall::ALL[index] as u32 <= syscall_head::NUMBER as u32);
        index += 1;
    }
};

/// The byte that starts an exec-mapping body.
mod mapping_head {
    pub const KIND: u8 = 0b0000_0011;
    pub const FILE: u8 = 0b0000_0100;
    pub const NAME: u8 = 0b0000_1000;
    pub const RESERVED: u8 = 0b1111_0000;
}

mod fork_flags {
    pub const THREAD: u8 = 1;
    pub const SHARES_MM: u8 = 2;
    /// Recordings made before this flag existed lack it: their children were kept.
    pub const UNTRACED: u8 = 4;
    pub const RESERVED: u8 = !(THREAD | SHARES_MM | UNTRACED);
}

use memtrace_common::COMM_LEN;

/// Who a thread is, as far as events repeat it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Identity {
    pid: u32,
    comm: Comm,
}

/// What the encoder and the decoder both know at each point of a frame. They update it the same
/// way, which is what lets the encoder leave out whatever the decoder can infer.
#[derive(Default)]
struct FrameContext {
    previous_time_ns: u64,
    /// The previous event's thread and its identity: most events repeat both.
    current: Option<(u32, Identity)>,
    /// Every thread whose identity this frame has given. Looked up only when the thread changes.
    known: HashMap<u32, Identity>,
    /// The call stacks this frame has spelled out, so that a repeated one (a leak is many
    /// allocations from one call site) is a reference: by content when encoding, by index
    /// when decoding.
    stack_ids: HashMap<Vec<u64>, u64>,
    stacks: Vec<Vec<u64>>,
}

impl FrameContext {
    fn reset(&mut self) {
        self.previous_time_ns = 0;
        self.current = None;
        self.known.clear();
        self.stack_ids.clear();
        self.stacks.clear();
    }

    fn current_tid(&self) -> Option<u32> {
        self.current.map(|(tid, _)| tid)
    }

    fn identity_of(&self, tid: u32) -> Option<Identity> {
        match self.current {
            Some((current_tid, identity)) if current_tid == tid => Some(identity),
            _ => self.known.get(&tid).copied(),
        }
    }
}

/// Encodes the events of one frame after another.
#[derive(Default)]
pub(crate) struct EventEncoder {
    context: FrameContext,
}

impl EventEncoder {
    /// Forgets everything: the next event is the first of a new frame.
    pub(crate) fn start_frame(&mut self) {
        self.context.reset();
    }

    pub(crate) fn encode(&mut self, event: &Event, buf: &mut impl BufMut) {
        let identity = Identity {
            pid: event.pid,
            comm: event.comm,
        };
        let tid_follows = self.context.current_tid() != Some(event.tid);
        let identity_follows = self.context.identity_of(event.tid) != Some(identity);

        let mut tag = body_kind(&event.body) | ((event.abi as u8) << tag::ABI_SHIFT);
        if tid_follows {
            tag |= tag::TID;
        }
        if identity_follows {
            tag |= tag::IDENTITY;
        }
        buf.put_u8(tag);
        put_ivarint(
            buf,
            event.time_ns.wrapping_sub(self.context.previous_time_ns) as i64,
        );
        if tid_follows {
            put_uvarint(buf, event.tid.into());
        }
        if identity_follows {
            put_uvarint(buf, event.pid.into());
            put_comm(buf, &event.comm);
            self.context.known.insert(event.tid, identity);
        }
        self.context.current = Some((event.tid, identity));
        self.context.previous_time_ns = event.time_ns;

        encode_body(&event.body, event.time_ns, &mut self.context, buf);
    }
}

/// Decodes the events of one frame after another.
#[derive(Default)]
pub(crate) struct EventDecoder {
    context: FrameContext,
    /// Reading a format version 1 recording, whose attach layouts end after their regions.
    version_1: bool,
}

impl EventDecoder {
    /// A decoder for a recording of format `version`.
    pub(crate) fn for_version(version: u32) -> Self {
        Self {
            version_1: version < 2,
            ..Self::default()
        }
    }

    pub(crate) fn start_frame(&mut self) {
        self.context.reset();
    }

    /// Decodes the event at the start of `buf` and advances past it. Inlined, like the body
    /// decoders below, so that the 200-byte `Event` is built where the caller wants it instead
    /// of being copied out through each layer: those copies cost a third of replay time.
    #[inline]
    pub(crate) fn decode(&mut self, buf: &mut &[u8]) -> Result<Event, Malformed> {
        let tag = get_u8(buf)?;
        if tag & tag::RESERVED != 0 {
            return Err(Malformed("an event tag has its reserved bit set"));
        }
        let abi = decode_abi(u32::from((tag & tag::ABI) >> tag::ABI_SHIFT))?;
        let time_ns = self
            .context
            .previous_time_ns
            .wrapping_add(get_ivarint(buf)? as u64);
        let (tid, identity) = if tag & (tag::TID | tag::IDENTITY) == 0 {
            // Most events: the previous event's thread and identity, read where they are
            // kept. (Writing them back each time, as a whole, made every event wait on the
            // store of the one before: a tenth of replay.)
            self.context.current.ok_or(Malformed(
                "the first event of a frame does not name its thread",
            ))?
        } else {
            let tid = if tag & tag::TID != 0 {
                get_u32_varint(buf)?
            } else {
                self.context.current_tid().ok_or(Malformed(
                    "the first event of a frame does not name its thread",
                ))?
            };
            let identity = if tag & tag::IDENTITY != 0 {
                let identity = Identity {
                    pid: get_u32_varint(buf)?,
                    comm: get_comm(buf)?,
                };
                self.context.known.insert(tid, identity);
                identity
            } else {
                self.context.identity_of(tid).ok_or(Malformed(
                    "an event's thread has no pid and comm in this frame",
                ))?
            };
            self.context.current = Some((tid, identity));
            (tid, identity)
        };
        self.context.previous_time_ns = time_ns;

        let body = match tag & tag::KIND {
            kind::ATTACH => EventBody::Attach(decode_attach(buf, !self.version_1)?),
            kind => decode_body(kind, time_ns, &mut self.context, buf)?,
        };
        Ok(Event {
            time_ns,
            pid: identity.pid,
            tid,
            comm: identity.comm,
            abi,
            body,
        })
    }
}

fn body_kind(body: &EventBody) -> u8 {
    match body {
        EventBody::Syscall(_) => kind::SYSCALL,
        EventBody::Fork(_) => kind::FORK,
        EventBody::Exec(_) => kind::EXEC,
        EventBody::Exit(_) => kind::EXIT,
        EventBody::ExecMapping(_) => kind::EXEC_MAPPING,
        EventBody::Attach(_) => kind::ATTACH,
        EventBody::Lost(record) if record.stacks_not_sampled == 0 => kind::LOST,
        EventBody::Lost(_)
        | EventBody::Stack(_)
        | EventBody::Module(_)
        | EventBody::JitSymbol(_)
        | EventBody::KernelSnapshot(_)
        | EventBody::Container(_)
        | EventBody::Keyframe(_)
        | EventBody::Limits(_) => kind::EXTENDED,
    }
}

/// Strict, unlike [`Abi::from_u32`]: a value no writer produces means the frame is malformed.
fn decode_abi(value: u32) -> Result<Abi, Malformed> {
    match Abi::from_u32(value) {
        abi if abi as u32 == value => Ok(abi),
        _ => Err(Malformed("an ABI value is out of range")),
    }
}

/// The comm without its trailing zero bytes; anything before them (including bytes after an
/// inner NUL, or invalid UTF-8) is kept, so the 16 bytes come back exactly.
fn put_comm(buf: &mut impl BufMut, comm: &Comm) {
    let trailing_zeros = comm.0.iter().rev().take_while(|&&byte| byte == 0).count();
    put_bytes(buf, &comm.0[..COMM_LEN - trailing_zeros]);
}

fn get_comm(buf: &mut &[u8]) -> Result<Comm, Malformed> {
    let bytes = get_bytes(buf)?;
    let mut comm = [0u8; COMM_LEN];
    comm.get_mut(..bytes.len())
        .ok_or(Malformed("a comm is longer than 16 bytes"))?
        .copy_from_slice(bytes);
    Ok(Comm(comm))
}

fn put_file(buf: &mut impl BufMut, file: &FileRef) {
    put_uvarint(buf, file.inode);
    put_str(buf, &file.path);
}

fn get_file(buf: &mut &[u8]) -> Result<FileRef, Malformed> {
    Ok(FileRef {
        inode: get_uvarint(buf)?,
        path: get_string(buf)?,
    })
}

fn encode_body(body: &EventBody, time_ns: u64, context: &mut FrameContext, buf: &mut impl BufMut) {
    match body {
        EventBody::Syscall(record) => encode_syscall(record, time_ns, buf),
        EventBody::Fork(record) => {
            put_uvarint(buf, record.child_pid.into());
            put_uvarint(buf, record.child_tid.into());
            let mut flags = 0;
            if record.thread {
                flags |= fork_flags::THREAD;
            }
            if record.shares_mm {
                flags |= fork_flags::SHARES_MM;
            }
            if record.untraced {
                flags |= fork_flags::UNTRACED;
            }
            buf.put_u8(flags);
        }
        EventBody::Exec(record) => encode_exec(record, buf),
        EventBody::Exit(record) => {
            put_uvarint(buf, record.status.into());
            put_bool(buf, record.group_dead);
        }
        EventBody::ExecMapping(record) => encode_exec_mapping(record, buf),
        EventBody::Attach(record) => encode_attach(record, buf),
        EventBody::Lost(record) => {
            if record.stacks_not_sampled != 0 {
                buf.put_u8(extended::LOST_WITH_STACKS);
            }
            put_uvarint(buf, record.ring_full);
            put_uvarint(buf, record.pending_full);
            if record.stacks_not_sampled != 0 {
                put_uvarint(buf, record.stacks_not_sampled);
            }
        }
        EventBody::Stack(record) => {
            buf.put_u8(if record.truncated {
                extended::STACK_TRUNCATED
            } else {
                extended::STACK
            });
            encode_stack(record, context, buf);
        }
        EventBody::Container(record) => {
            buf.put_u8(extended::CONTAINER);
            put_uvarint(buf, record.ns_pid.into());
            put_str(buf, &record.cgroup);
            put_str(buf, &record.root);
        }
        EventBody::Limits(record) => {
            buf.put_u8(extended::LIMITS);
            put_uvarint(buf, record.max_map_count);
            put_bool(buf, record.address_space.is_some());
            if let Some(bytes) = record.address_space {
                put_uvarint(buf, bytes);
            }
        }
        EventBody::Module(record) => {
            buf.put_u8(extended::MODULE);
            put_str(buf, &record.path);
            put_bytes(buf, &record.build_id);
        }
        EventBody::JitSymbol(record) => {
            buf.put_u8(extended::JIT_SYMBOL);
            put_uvarint(buf, record.start);
            put_uvarint(buf, record.len);
            put_str(buf, &record.name);
        }
        EventBody::KernelSnapshot(record) => {
            buf.put_u8(extended::KERNEL_SNAPSHOT);
            kernel_codec::encode(record, buf);
        }
        EventBody::Keyframe(record) => {
            buf.put_u8(extended::KEYFRAME);
            encode_attach(record, buf);
        }
    }
}

/// A stack already spelled out in this frame is its index plus one; a new one is 0, then
/// its frames as zigzag deltas from the previous frame (return addresses in one module are
/// close, so most take two or three bytes).
fn encode_stack(record: &StackEvent, context: &mut FrameContext, buf: &mut impl BufMut) {
    if let Some(&index) = context.stack_ids.get(&record.frames) {
        put_uvarint(buf, index + 1);
        return;
    }
    put_uvarint(buf, 0);
    context
        .stack_ids
        .insert(record.frames.clone(), context.stack_ids.len() as u64);
    put_uvarint(buf, record.frames.len() as u64);
    let mut previous = 0u64;
    for &frame in &record.frames {
        put_ivarint(buf, frame.wrapping_sub(previous) as i64);
        previous = frame;
    }
}

fn decode_stack(context: &mut FrameContext, buf: &mut &[u8]) -> Result<StackEvent, Malformed> {
    let reference = get_uvarint(buf)?;
    if reference > 0 {
        let frames = usize::try_from(reference - 1)
            .ok()
            .and_then(|index| context.stacks.get(index))
            .ok_or(Malformed("a stack refers to one its frame has not given"))?;
        return Ok(StackEvent {
            frames: frames.clone(),
            truncated: false,
        });
    }
    let count = get_uvarint(buf)?;
    // Each frame takes at least one byte: a larger count is a lie, not an allocation to make.
    if count > buf.len() as u64 {
        return Err(Malformed("a stack claims more frames than its frame holds"));
    }
    let mut frames = Vec::with_capacity(count as usize);
    let mut previous = 0u64;
    for _ in 0..count {
        previous = previous.wrapping_add(get_ivarint(buf)? as u64);
        frames.push(previous);
    }
    context.stacks.push(frames.clone());
    Ok(StackEvent {
        frames,
        truncated: false,
    })
}

#[inline]
fn decode_body(
    kind: u8,
    time_ns: u64,
    context: &mut FrameContext,
    buf: &mut &[u8],
) -> Result<EventBody, Malformed> {
    Ok(match kind {
        kind::SYSCALL => EventBody::Syscall(decode_syscall(time_ns, buf)?),
        kind::FORK => {
            let child_pid = get_u32_varint(buf)?;
            let child_tid = get_u32_varint(buf)?;
            let flags = get_u8(buf)?;
            if flags & fork_flags::RESERVED != 0 {
                return Err(Malformed("fork flags have reserved bits set"));
            }
            EventBody::Fork(ForkEvent {
                child_pid,
                child_tid,
                thread: flags & fork_flags::THREAD != 0,
                shares_mm: flags & fork_flags::SHARES_MM != 0,
                untraced: flags & fork_flags::UNTRACED != 0,
            })
        }
        kind::EXEC => EventBody::Exec(Box::new(decode_exec(buf)?)),
        kind::EXIT => EventBody::Exit(ExitEvent {
            status: get_u32_varint(buf)?,
            group_dead: get_bool(buf)?,
        }),
        kind::EXEC_MAPPING => EventBody::ExecMapping(decode_exec_mapping(buf)?),
        kind::LOST => EventBody::Lost(Losses {
            ring_full: get_uvarint(buf)?,
            pending_full: get_uvarint(buf)?,
            stacks_not_sampled: 0,
        }),
        kind::EXTENDED => match get_u8(buf)? {
            extended::STACK => EventBody::Stack(decode_stack(context, buf)?),
            extended::STACK_TRUNCATED => EventBody::Stack(StackEvent {
                truncated: true,
                ..decode_stack(context, buf)?
            }),
            extended::LOST_WITH_STACKS => EventBody::Lost(Losses {
                ring_full: get_uvarint(buf)?,
                pending_full: get_uvarint(buf)?,
                stacks_not_sampled: get_uvarint(buf)?,
            }),
            extended::MODULE => EventBody::Module(ModuleEvent {
                path: get_string(buf)?,
                build_id: get_bytes(buf)?.to_vec(),
            }),
            extended::JIT_SYMBOL => EventBody::JitSymbol(JitSymbolEvent {
                start: get_uvarint(buf)?,
                len: get_uvarint(buf)?,
                name: get_string(buf)?,
            }),
            extended::KERNEL_SNAPSHOT => {
                EventBody::KernelSnapshot(Box::new(kernel_codec::decode(buf)?))
            }
            extended::KEYFRAME => EventBody::Keyframe(decode_attach(buf, true)?),
            extended::CONTAINER => EventBody::Container(ContainerIdentity {
                ns_pid: get_u32_varint(buf)?,
                cgroup: get_string(buf)?,
                root: get_string(buf)?,
            }),
            extended::LIMITS => EventBody::Limits(LimitsEvent {
                max_map_count: get_uvarint(buf)?,
                address_space: if get_bool(buf)? {
                    Some(get_uvarint(buf)?)
                } else {
                    None
                },
            }),
            _ => return Err(Malformed("an event has an unknown extended kind")),
        },
        _ => return Err(Malformed("an event has an unknown kind")),
    })
}

/// The hot path: an anonymous mmap/munmap is a head byte, six arguments, the result and the
/// duration, all varints. Arguments and result are zigzag-coded because -1 (fd) and -errno are
/// common and would otherwise take ten bytes.
fn encode_syscall(record: &SyscallEvent, time_ns: u64, buf: &mut impl BufMut) {
    let mut head = record.syscall as u8;
    if record.string.is_some() {
        head |= syscall_head::STRING;
    }
    if record.file.is_some() {
        head |= syscall_head::FILE;
    }
    if record.entry_ns == 0 {
        head |= syscall_head::NO_ENTRY;
    }
    buf.put_u8(head);
    for &arg in &record.args {
        put_ivarint(buf, arg as i64);
    }
    put_ivarint(buf, record.ret);
    if record.entry_ns != 0 {
        put_ivarint(buf, time_ns.wrapping_sub(record.entry_ns) as i64);
    }
    if let Some(string) = &record.string {
        put_str(buf, string);
    }
    if let Some(file) = &record.file {
        put_file(buf, file);
    }
}

#[inline]
fn decode_syscall(time_ns: u64, buf: &mut &[u8]) -> Result<SyscallEvent, Malformed> {
    let head = get_u8(buf)?;
    let syscall = Syscall::from_u32(u32::from(head & syscall_head::NUMBER))
        .ok_or(Malformed("a syscall number is unknown"))?;
    let mut args = [0u64; 6];
    for arg in &mut args {
        *arg = get_ivarint(buf)? as u64;
    }
    let ret = get_ivarint(buf)?;
    let entry_ns = if head & syscall_head::NO_ENTRY != 0 {
        0
    } else {
        time_ns.wrapping_sub(get_ivarint(buf)? as u64)
    };
    let string = if head & syscall_head::STRING != 0 {
        Some(get_string(buf)?)
    } else {
        None
    };
    let file = if head & syscall_head::FILE != 0 {
        Some(get_file(buf)?)
    } else {
        None
    };
    Ok(SyscallEvent {
        syscall,
        args,
        ret,
        entry_ns,
        string,
        file,
    })
}

fn encode_exec(record: &ExecEvent, buf: &mut impl BufMut) {
    put_uvarint(buf, record.old_tid.into());
    put_uvarint(buf, record.personality.into());
    buf.put_u8(record.new_abi as u8);
    put_str(buf, &record.filename);
    put_str(buf, &record.interp);
    // The layout's addresses in their declared order, one varint each.
    let layout: [u64; 13] = bytemuck::cast(record.layout);
    for value in layout {
        put_uvarint(buf, value);
    }
}

fn decode_exec(buf: &mut &[u8]) -> Result<ExecEvent, Malformed> {
    let old_tid = get_u32_varint(buf)?;
    let personality = get_u32_varint(buf)?;
    let new_abi = decode_abi(u32::from(get_u8(buf)?))?;
    let filename = get_string(buf)?;
    let interp = get_string(buf)?;
    let mut layout = [0u64; 13];
    for value in &mut layout {
        *value = get_uvarint(buf)?;
    }
    Ok(ExecEvent {
        old_tid,
        personality,
        new_abi,
        filename,
        interp,
        layout: bytemuck::cast(layout),
    })
}

fn encode_exec_mapping(record: &ExecMappingEvent, buf: &mut impl BufMut) {
    let mut head = match record.kind {
        ExecMappingKind::Mmap => 0,
        ExecMappingKind::Bss => 2,
        ExecMappingKind::Special => 3,
    };
    if record.file.is_some() {
        head |= mapping_head::FILE;
    }
    if record.name.is_some() {
        head |= mapping_head::NAME;
    }
    buf.put_u8(head);
    put_uvarint(buf, record.start);
    put_uvarint(buf, record.len);
    put_uvarint(buf, record.prot.into());
    put_uvarint(buf, record.flags.into());
    put_uvarint(buf, record.offset);
    if let Some(file) = &record.file {
        put_file(buf, file);
    }
    if let Some(name) = &record.name {
        put_str(buf, name);
    }
}

fn decode_exec_mapping(buf: &mut &[u8]) -> Result<ExecMappingEvent, Malformed> {
    let head = get_u8(buf)?;
    if head & mapping_head::RESERVED != 0 {
        return Err(Malformed("an exec-mapping head has reserved bits set"));
    }
    let kind = match head & mapping_head::KIND {
        0 => ExecMappingKind::Mmap,
        2 => ExecMappingKind::Bss,
        3 => ExecMappingKind::Special,
        _ => return Err(Malformed("an exec mapping has an unknown kind")),
    };
    let start = get_uvarint(buf)?;
    let len = get_uvarint(buf)?;
    let prot = get_u32_varint(buf)?;
    let flags = get_u32_varint(buf)?;
    let offset = get_uvarint(buf)?;
    let file = if head & mapping_head::FILE != 0 {
        Some(get_file(buf)?)
    } else {
        None
    };
    let name = if head & mapping_head::NAME != 0 {
        Some(get_string(buf)?)
    } else {
        None
    };
    Ok(ExecMappingEvent {
        kind,
        start,
        len,
        prot,
        flags,
        offset,
        file,
        name,
    })
}

/// The fewest bytes a maps line of an attach layout can take (four one-byte varints, two empty strings).
const MIN_REGION_LEN: usize = 6;

fn encode_attach(record: &AttachEvent, buf: &mut impl BufMut) {
    put_uvarint(buf, record.start_brk);
    put_uvarint(buf, record.brk);
    put_uvarint(buf, record.ppid.into());
    put_str(buf, &record.exe);
    put_uvarint(buf, record.regions.len() as u64);
    for region in &record.regions {
        put_uvarint(buf, region.start);
        put_uvarint(buf, region.end);
        put_uvarint(buf, region.offset);
        put_uvarint(buf, region.inode);
        put_str(buf, &region.perms);
        put_str(buf, &region.name);
    }
    // Added in format version 2, after the regions; version 1 attach layouts have none.
    put_uvarint(buf, record.memfd_fds.len() as u64);
    for fd in &record.memfd_fds {
        put_uvarint(buf, fd.fd.into());
        put_uvarint(buf, fd.inode);
        put_bool(buf, fd.cloexec);
    }
}

/// `with_memfds`: the memfd descriptors follow the regions (format version 2 on). The body is
/// not length-prefixed and other events follow it, so only the version can tell.
fn decode_attach(buf: &mut &[u8], with_memfds: bool) -> Result<AttachEvent, Malformed> {
    let start_brk = get_uvarint(buf)?;
    let brk = get_uvarint(buf)?;
    let ppid = get_u32_varint(buf)?;
    let exe = get_string(buf)?;
    let count = get_uvarint(buf)?;
    // A corrupt count must not reserve memory the frame could never fill.
    let capacity = count.min((buf.len() / MIN_REGION_LEN) as u64) as usize;
    let mut regions = Vec::with_capacity(capacity);
    for _ in 0..count {
        regions.push(MapsLine {
            start: get_uvarint(buf)?,
            end: get_uvarint(buf)?,
            offset: get_uvarint(buf)?,
            inode: get_uvarint(buf)?,
            perms: get_string(buf)?,
            name: get_string(buf)?,
        });
    }
    let mut memfd_fds = Vec::new();
    if with_memfds {
        let count = get_uvarint(buf)?;
        // Three varints of one byte at least per fd.
        memfd_fds.reserve(count.min((buf.len() / 3) as u64) as usize);
        for _ in 0..count {
            memfd_fds.push(AttachFd {
                fd: get_u32_varint(buf)?,
                inode: get_uvarint(buf)?,
                cloexec: get_bool(buf)?,
            });
        }
    }
    Ok(AttachEvent {
        regions,
        start_brk,
        brk,
        ppid,
        exe,
        memfd_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syscall_event(tid: u32, time_ns: u64) -> Event {
        Event {
            time_ns,
            pid: 100,
            tid,
            comm: Comm::from_str_lossy("worker"),
            abi: Abi::X86_64,
            body: EventBody::Syscall(SyscallEvent {
                syscall: Syscall::Munmap,
                args: [0x7f12_3456_7000, 4096, 0, 0, 0, 0],
                ret: 0,
                entry_ns: time_ns - 200,
                string: None,
                file: None,
            }),
        }
    }

    fn round_trip(events: &[Event]) -> Vec<u8> {
        let mut encoder = EventEncoder::default();
        let mut buf = Vec::new();
        for event in events {
            encoder.encode(event, &mut buf);
        }
        let mut decoder = EventDecoder::default();
        let mut read = &buf[..];
        for event in events {
            assert_eq!(&decoder.decode(&mut read).unwrap(), event);
        }
        assert!(read.is_empty());
        buf
    }

    #[test]
    fn repeated_threads_leave_out_tid_pid_and_comm() {
        let first = syscall_event(101, 1_000_000);
        let second = syscall_event(101, 1_000_300);
        let one = round_trip(std::slice::from_ref(&first)).len();
        let two = round_trip(&[first, second]).len();
        // Tag, time delta (2 bytes), head, args (3+2+4), ret, duration (2 bytes).
        assert_eq!(two - one, 1 + 2 + 1 + (7 + 2 + 4) + 1 + 2);
    }

    /// A call whose entry was not seen (no `--latency`) is coded without a duration, and reads
    /// back as not seen, beside one whose entry was; a duration of 0 is not "not seen".
    #[test]
    fn an_unseen_entry_takes_no_bytes() {
        let seen = syscall_event(101, 1_000_000);
        let mut unseen = syscall_event(101, 1_000_300);
        let EventBody::Syscall(call) = &mut unseen.body else {
            unreachable!()
        };
        call.entry_ns = 0;
        let mut instant = syscall_event(101, 1_000_600);
        let EventBody::Syscall(call) = &mut instant.body else {
            unreachable!()
        };
        call.entry_ns = instant.time_ns;
        let one = round_trip(std::slice::from_ref(&seen)).len();
        let two = round_trip(&[seen.clone(), unseen.clone()]).len();
        // Tag, time delta (2 bytes), head, args (3+2+4), ret; no duration.
        assert_eq!(two - one, 1 + 2 + 1 + (7 + 2 + 4) + 1);
        round_trip(&[seen, unseen, instant]);
    }

    #[test]
    fn interleaved_threads_reuse_what_the_frame_gave() {
        let mut events = Vec::new();
        for round in 0..4 {
            for tid in [101, 102, 103] {
                events.push(syscall_event(tid, 1_000 + round * 10 + u64::from(tid)));
            }
        }
        // A thread whose comm changes (exec) is given again.
        let mut renamed = syscall_event(102, 2_000);
        renamed.comm = Comm::from_str_lossy("renamed");
        events.push(renamed);
        events.push(syscall_event(101, 2_100));
        round_trip(&events);
    }

    #[test]
    fn a_frame_must_name_its_first_thread() {
        let mut encoder = EventEncoder::default();
        let mut buf = Vec::new();
        encoder.encode(&syscall_event(1, 1_000), &mut buf);
        encoder.encode(&syscall_event(1, 2_000), &mut buf);
        let first_len = {
            let mut decoder = EventDecoder::default();
            let mut read = &buf[..];
            decoder.decode(&mut read).unwrap();
            buf.len() - read.len()
        };
        // The second event alone, decoded as if it started a frame.
        let mut decoder = EventDecoder::default();
        assert!(decoder.decode(&mut &buf[first_len..]).is_err());
    }

    #[test]
    fn out_of_range_values_are_malformed() {
        assert!(decode_abi(3).is_err());
        assert!(
            get_comm(&mut &[17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]).is_err()
        );
        let mut decoder = EventDecoder::default();
        assert!(decoder.decode(&mut &[0x80][..]).is_err());
        assert!(decoder
            .decode(&mut &[tag::TID | tag::IDENTITY | 7, 0, 1, 1, 0][..])
            .is_err());
    }
}
