//! Ring-buffer records → [`Event`]s. Short or unknown records are errors, never panics: the
//! bytes come from another program.

use memtrace_common::{
    fork_flags, read_record, syscall_flags, Abi, ExecMessage, ExitMessage, FilePath, ForkMessage,
    MessageHeader, MessageKind, StackSampleMessage, Syscall, SyscallDetailMessage, SyscallMessage,
};

use super::exec_image::LoadedImage;
use crate::event::{
    Comm, Event, EventBody, ExecEvent, ExitEvent, FileRef, ForkEvent, SyscallEvent,
};
use crate::stacks::{StackAbi, StackSample};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {0} bytes is too short")]
    Short(usize),
    #[error("ring buffer record of unknown kind {0}")]
    UnknownKind(u32),
    #[error("syscall record with unknown syscall {0}")]
    UnknownSyscall(u32),
}

/// A decoded record. An exec also says where its image was loaded, so capture can rebuild
/// the mappings the kernel made for it.
#[derive(Debug)]
pub enum Decoded {
    Event {
        event: Event,
        loaded_image: Option<LoadedImage>,
    },
    /// Not an event yet: it becomes one once unwound against the process's layout.
    Stack(RawStack),
}

/// The registers and stack bytes the kernel copied at a syscall that created memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawStack {
    pub time_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub abi: Abi,
    /// What the unwinder reads, built here once so that no stack bytes are copied again.
    pub sample: StackSample,
}

pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let header: MessageHeader = read_record(bytes).ok_or(DecodeError::Short(bytes.len()))?;
    let kind = MessageKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let short = || DecodeError::Short(bytes.len());
    let mut loaded_image = None;
    let body = match kind {
        MessageKind::StackSample => {
            let sample: StackSampleMessage = read_record(bytes).ok_or_else(short)?;
            let len = (sample.len as usize).min(sample.stack.len());
            return Ok(Decoded::Stack(RawStack {
                time_ns: header.timestamp_ns,
                pid: header.tgid,
                tid: header.tid,
                comm: Comm(header.comm),
                abi: Abi::from_u32(header.abi),
                sample: StackSample {
                    abi: match Abi::from_u32(header.abi) {
                        Abi::I386 => StackAbi::I386,
                        _ => StackAbi::X86_64,
                    },
                    ip: sample.ip,
                    sp: sample.sp,
                    bp: sample.bp,
                    stack: sample.stack[..len].to_vec(),
                },
            }));
        }
        MessageKind::Syscall => {
            let event: SyscallMessage = read_record(bytes).ok_or_else(short)?;
            EventBody::Syscall(syscall_record(&event, None, None)?)
        }
        MessageKind::SyscallDetail => {
            let event: SyscallDetailMessage = read_record(bytes).ok_or_else(short)?;
            let flags = event.syscall.flags;
            let string = (flags & syscall_flags::HAS_STRING != 0).then(|| c_string(&event.string));
            let file = (flags & syscall_flags::HAS_FILE != 0).then(|| file_ref(&event.file));
            EventBody::Syscall(syscall_record(&event.syscall, string, file)?)
        }
        MessageKind::Fork => {
            let event: ForkMessage = read_record(bytes).ok_or_else(short)?;
            EventBody::Fork(ForkEvent {
                child_pid: event.child_tgid,
                child_tid: event.child_tid,
                thread: event.flags & fork_flags::THREAD != 0,
                shares_mm: event.flags & fork_flags::SHARES_MM != 0,
                untraced: event.flags & fork_flags::UNTRACED != 0,
            })
        }
        MessageKind::Exec => {
            let event: ExecMessage = read_record(bytes).ok_or_else(short)?;
            if event.exe.depth > 0 {
                loaded_image = Some(LoadedImage {
                    exe: file_ref(&event.exe),
                    phdr: event.layout.phdr,
                    interp_base: event.layout.interp_base,
                    vdso_base: event.vdso_base,
                });
            }
            EventBody::Exec(Box::new(exec_record(&event)))
        }
        MessageKind::Exit => {
            let event: ExitMessage = read_record(bytes).ok_or_else(short)?;
            EventBody::Exit(ExitEvent {
                status: event.exit_code,
                group_dead: event.group_dead != 0,
            })
        }
    };
    let event = Event {
        time_ns: header.timestamp_ns,
        pid: header.tgid,
        tid: header.tid,
        comm: Comm(header.comm),
        abi: Abi::from_u32(header.abi),
        body,
    };
    Ok(Decoded::Event {
        event,
        loaded_image,
    })
}

fn syscall_record(
    event: &SyscallMessage,
    string: Option<String>,
    file: Option<FileRef>,
) -> Result<SyscallEvent, DecodeError> {
    let syscall =
        Syscall::from_u32(event.syscall).ok_or(DecodeError::UnknownSyscall(event.syscall))?;
    Ok(SyscallEvent {
        syscall,
        args: event.args,
        ret: event.ret,
        entry_ns: event.entry_ns,
        string,
        file,
    })
}

fn exec_record(event: &ExecMessage) -> ExecEvent {
    ExecEvent {
        old_tid: event.old_tid,
        personality: event.personality,
        new_abi: Abi::from_u32(event.new_abi),
        filename: c_string(&event.filename),
        interp: c_string(&event.interp),
        layout: event.layout,
    }
}

/// Joins the dentry names the kernel collected leaf first into an absolute path.
fn file_ref(path: &FilePath) -> FileRef {
    let depth = (path.depth as usize).min(path.components.len());
    let mut joined = String::new();
    if path.truncated != 0 {
        joined.push_str("/...");
    }
    for component in path.components[..depth].iter().rev() {
        // Empty slots mark mount crossings.
        if component[0] == 0 {
            continue;
        }
        joined.push('/');
        joined.push_str(&c_string(component));
    }
    if joined.is_empty() {
        joined.push('/');
    }
    FileRef {
        inode: path.inode,
        path: joined,
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrace_common::{COMPONENT_LEN, PATH_COMPONENTS};

    #[test]
    fn short_record_is_an_error() {
        assert_eq!(decode(&[0u8; 10]).unwrap_err(), DecodeError::Short(10));
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let mut bytes = vec![0u8; 64];
        bytes[0] = 99;
        assert_eq!(decode(&bytes).unwrap_err(), DecodeError::UnknownKind(99));
    }

    #[test]
    fn path_components_join_leaf_last() {
        let mut path = FilePath {
            inode: 7,
            depth: 3,
            truncated: 0,
            components: [[0; COMPONENT_LEN]; PATH_COMPONENTS],
        };
        for (slot, name) in ["libc.so.6", "lib", "usr"].iter().enumerate() {
            path.components[slot][..name.len()].copy_from_slice(name.as_bytes());
        }
        let file = file_ref(&path);
        assert_eq!(file.path, "/usr/lib/libc.so.6");
        assert_eq!(file.inode, 7);
        path.truncated = 1;
        assert_eq!(file_ref(&path).path, "/.../usr/lib/libc.so.6");
    }

    #[test]
    fn ia32_mmap2_record_round_trips() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"prog");
        let record = SyscallMessage {
            header: MessageHeader {
                kind: MessageKind::Syscall as u32,
                abi: Abi::I386 as u32,
                timestamp_ns: 2_000,
                tgid: 42,
                tid: 43,
                comm,
            },
            syscall: Syscall::Mmap2 as u32,
            flags: 0,
            args: [0, 1 << 20, 3, 0x22, 0xffff_ffff, 0],
            ret: 0xf7a0_0000,
            entry_ns: 1_500,
        };
        let Decoded::Event { event, .. } =
            decode(memtrace_common::record_as_bytes(&record)).unwrap()
        else {
            panic!("a syscall record decodes to an event");
        };
        assert_eq!((event.pid, event.tid, event.abi), (42, 43, Abi::I386));
        assert_eq!(event.comm.as_string(), "prog");
        let EventBody::Syscall(syscall) = event.body else {
            panic!("expected a syscall, got {:?}", event.body);
        };
        assert_eq!(syscall.syscall, Syscall::Mmap2);
        assert_eq!(syscall.ret, 0xf7a0_0000);
        assert_eq!(syscall.file, None);
        // A record cut short is rejected rather than read past its end.
        let bytes = memtrace_common::record_as_bytes(&record);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
