//! Ring-buffer messages → [`Event`]s. Short or unknown messages are errors, never panics: the
//! bytes come from another program.
//!
//! Messages carry no comm (memtrace_common's `MessageHeader` says why): the [`Decoder`] keeps
//! each thread's, learnt from the messages that carry one (a thread first seen, a fork, an exec,
//! a rename), and fills every event's `comm` with it, as when each message carried its own.

use std::collections::HashMap;

use memtrace_common::{
    fork_flags, read_record, syscall_flags, Abi, CommMessage, ExecMessage, ExitMessage, FilePath,
    ForkMessage, MessageHeader, MessageKind, StackSampleMessage, Syscall, SyscallDetailMessage,
    SyscallMessage,
};

use super::exec_image::LoadedImage;
use crate::event::{
    Comm, Event, EventBody, ExecRecord, ExitRecord, FileRef, ForkRecord, SyscallRecord,
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
    Stack(StackCapture),
    /// A thread's comm, now known to the decoder: nothing to deliver.
    Comm,
}

/// The registers and stack bytes the kernel copied at a syscall that created memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackCapture {
    pub time_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub abi: Abi,
    /// What the unwinder reads, built here once so that no stack bytes are copied again.
    pub sample: StackSample,
}

/// Decodes the messages of one session, in ring order, remembering each thread's comm.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Each live traced thread's comm, by tid.
    comms: HashMap<u32, Comm>,
}

impl Decoder {
    /// The comm of thread `tid` of process `pid`: its own, else its process's (a thread whose
    /// first-seen message was lost in a full ring), else empty.
    fn comm_of(&self, pid: u32, tid: u32) -> Comm {
        self.comms
            .get(&tid)
            .or_else(|| self.comms.get(&pid))
            .copied()
            .unwrap_or_default()
    }

    pub fn decode(&mut self, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let header: MessageHeader = read_record(bytes).ok_or(DecodeError::Short(bytes.len()))?;
        let kind =
            MessageKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
        let short = || DecodeError::Short(bytes.len());
        let mut loaded_image = None;
        let body = match kind {
            MessageKind::Comm => {
                let message: CommMessage = read_record(bytes).ok_or_else(short)?;
                self.comms.insert(header.tid, Comm(message.comm));
                return Ok(Decoded::Comm);
            }
            MessageKind::StackSample => {
                let sample: StackSampleMessage = read_record(bytes).ok_or_else(short)?;
                let len = (sample.len as usize).min(sample.stack.len());
                return Ok(Decoded::Stack(StackCapture {
                    time_ns: header.timestamp_ns,
                    pid: header.tgid,
                    tid: header.tid,
                    comm: self.comm_of(header.tgid, header.tid),
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
                let message: SyscallMessage = read_record(bytes).ok_or_else(short)?;
                EventBody::Syscall(syscall_record(&message, None, None)?)
            }
            MessageKind::SyscallDetail => {
                let message: SyscallDetailMessage = read_record(bytes).ok_or_else(short)?;
                let flags = message.syscall.flags;
                let string =
                    (flags & syscall_flags::HAS_STRING != 0).then(|| c_string(&message.string));
                let file = (flags & syscall_flags::HAS_FILE != 0).then(|| file_ref(&message.file));
                EventBody::Syscall(syscall_record(&message.syscall, string, file)?)
            }
            MessageKind::Fork => {
                let message: ForkMessage = read_record(bytes).ok_or_else(short)?;
                let comm = Comm(message.comm);
                self.comms.insert(header.tid, comm);
                if message.flags & fork_flags::UNTRACED == 0 {
                    self.comms.insert(message.child_tid, comm);
                }
                EventBody::Fork(ForkRecord {
                    child_pid: message.child_tgid,
                    child_tid: message.child_tid,
                    thread: message.flags & fork_flags::THREAD != 0,
                    shares_mm: message.flags & fork_flags::SHARES_MM != 0,
                    untraced: message.flags & fork_flags::UNTRACED != 0,
                })
            }
            MessageKind::Exec => {
                let message: ExecMessage = read_record(bytes).ok_or_else(short)?;
                if message.exe.depth > 0 {
                    loaded_image = Some(LoadedImage {
                        exe: file_ref(&message.exe),
                        phdr: message.layout.phdr,
                        interp_base: message.layout.interp_base,
                        vdso_base: message.vdso_base,
                    });
                }
                // A non-leader thread's exec takes over the leader's tid; the others are gone.
                self.comms.remove(&message.old_tid);
                self.comms.insert(header.tid, Comm(message.comm));
                EventBody::Exec(Box::new(exec_record(&message)))
            }
            MessageKind::Exit => {
                let message: ExitMessage = read_record(bytes).ok_or_else(short)?;
                EventBody::Exit(ExitRecord {
                    status: message.exit_code,
                    group_dead: message.group_dead != 0,
                })
            }
        };
        let comm = self.comm_of(header.tgid, header.tid);
        if let EventBody::Exit(exit) = &body {
            // The thread is gone. The leader's comm stays until the whole process is: it names
            // the threads whose own was lost.
            if header.tid != header.tgid {
                self.comms.remove(&header.tid);
            }
            if exit.group_dead {
                self.comms.remove(&header.tgid);
            }
        }
        let event = Event {
            time_ns: header.timestamp_ns,
            pid: header.tgid,
            tid: header.tid,
            comm,
            abi: Abi::from_u32(header.abi),
            body,
        };
        Ok(Decoded::Event {
            event,
            loaded_image,
        })
    }
}

fn syscall_record(
    event: &SyscallMessage,
    string: Option<String>,
    file: Option<FileRef>,
) -> Result<SyscallRecord, DecodeError> {
    let syscall =
        Syscall::from_u32(event.syscall).ok_or(DecodeError::UnknownSyscall(event.syscall))?;
    Ok(SyscallRecord {
        syscall,
        args: event.args,
        ret: event.ret,
        entry_ns: event.entry_ns,
        string,
        file,
    })
}

fn exec_record(event: &ExecMessage) -> ExecRecord {
    ExecRecord {
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
        assert_eq!(
            Decoder::default().decode(&[0u8; 10]).unwrap_err(),
            DecodeError::Short(10)
        );
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let mut bytes = vec![0u8; 64];
        bytes[0] = 99;
        assert_eq!(
            Decoder::default().decode(&bytes).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
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

    fn header(kind: MessageKind, abi: Abi, time_ns: u64, tgid: u32, tid: u32) -> MessageHeader {
        MessageHeader {
            kind: kind as u32,
            abi: abi as u32,
            timestamp_ns: time_ns,
            tgid,
            tid,
        }
    }

    fn comm(name: &str) -> [u8; 16] {
        let mut comm = [0u8; 16];
        comm[..name.len()].copy_from_slice(name.as_bytes());
        comm
    }

    fn comm_message(tgid: u32, tid: u32, name: &str) -> CommMessage {
        CommMessage {
            header: header(MessageKind::Comm, Abi::Unknown, 1, tgid, tid),
            comm: comm(name),
        }
    }

    fn munmap(tgid: u32, tid: u32, time_ns: u64) -> SyscallMessage {
        SyscallMessage {
            header: header(MessageKind::Syscall, Abi::X86_64, time_ns, tgid, tid),
            syscall: Syscall::Munmap as u32,
            flags: 0,
            args: [0x7f00_0000_0000, 4096, 0, 0, 0, 0],
            ret: 0,
            entry_ns: time_ns - 100,
        }
    }

    fn event(decoder: &mut Decoder, bytes: &[u8]) -> Event {
        match decoder.decode(bytes).unwrap() {
            Decoded::Event { event, .. } => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn fed<T: bytemuck::Pod>(decoder: &mut Decoder, message: &T) -> Decoded {
        decoder
            .decode(memtrace_common::record_as_bytes(message))
            .unwrap()
    }

    #[test]
    fn ia32_mmap2_record_round_trips() {
        let mut decoder = Decoder::default();
        assert!(matches!(
            fed(&mut decoder, &comm_message(42, 43, "prog")),
            Decoded::Comm
        ));
        let record = SyscallMessage {
            header: header(MessageKind::Syscall, Abi::I386, 2_000, 42, 43),
            syscall: Syscall::Mmap2 as u32,
            flags: 0,
            args: [0, 1 << 20, 3, 0x22, 0xffff_ffff, 0],
            ret: 0xf7a0_0000,
            entry_ns: 1_500,
        };
        let event = event(&mut decoder, memtrace_common::record_as_bytes(&record));
        assert_eq!((event.pid, event.tid, event.abi), (42, 43, Abi::I386));
        assert_eq!(event.comm.as_string(), "prog");
        let EventBody::Syscall(syscall) = event.body else {
            panic!("expected a syscall, got {:?}", event.body);
        };
        assert_eq!(syscall.syscall, Syscall::Mmap2);
        assert_eq!(syscall.ret, 0xf7a0_0000);
        assert_eq!(syscall.entry_ns, 1_500);
        assert_eq!(syscall.file, None);
        // A record cut short is rejected rather than read past its end.
        let bytes = memtrace_common::record_as_bytes(&record);
        assert!(decoder.decode(&bytes[..bytes.len() - 1]).is_err());
    }

    /// Every event names its thread's comm as the kernel last told it: first seen, inherited
    /// at fork, renamed, replaced by exec; a thread whose own was never told gets its
    /// process's; an exited thread is forgotten.
    #[test]
    fn each_thread_s_comm_follows_its_messages() {
        let mut decoder = Decoder::default();
        let comm_at = |decoder: &mut Decoder, tgid, tid| {
            event(
                decoder,
                memtrace_common::record_as_bytes(&munmap(tgid, tid, 5_000)),
            )
            .comm
            .as_string()
        };
        // Nothing told yet: empty, as a message without a comm always decoded.
        assert_eq!(comm_at(&mut decoder, 10, 10), "");
        fed(&mut decoder, &comm_message(10, 10, "server"));
        assert_eq!(comm_at(&mut decoder, 10, 10), "server");

        // A new thread inherits its parent's comm, and is then renamed on its own.
        let fork = ForkMessage {
            header: header(MessageKind::Fork, Abi::X86_64, 6_000, 10, 10),
            child_tgid: 10,
            child_tid: 11,
            flags: fork_flags::THREAD | fork_flags::SHARES_MM,
            _pad: 0,
            comm: comm("server"),
        };
        let forked = event(&mut decoder, memtrace_common::record_as_bytes(&fork));
        assert_eq!(forked.comm.as_string(), "server");
        assert_eq!(comm_at(&mut decoder, 10, 11), "server");
        fed(&mut decoder, &comm_message(10, 11, "worker-1"));
        assert_eq!(comm_at(&mut decoder, 10, 11), "worker-1");
        assert_eq!(comm_at(&mut decoder, 10, 10), "server");
        // A thread never told (its first-seen message lost): its process's comm.
        assert_eq!(comm_at(&mut decoder, 10, 12), "server");

        // The thread exits: the exit still names it, then it is forgotten.
        let exit = ExitMessage {
            header: header(MessageKind::Exit, Abi::X86_64, 7_000, 10, 11),
            exit_code: 0,
            group_dead: 0,
        };
        let exited = event(&mut decoder, memtrace_common::record_as_bytes(&exit));
        assert_eq!(exited.comm.as_string(), "worker-1");
        assert_eq!(comm_at(&mut decoder, 10, 11), "server");

        // An exec gives the task the comm the kernel set.
        let mut exec: ExecMessage = bytemuck::Zeroable::zeroed();
        exec.header = header(MessageKind::Exec, Abi::X86_64, 8_000, 10, 10);
        exec.old_tid = 10;
        exec.comm = comm("true");
        let execed = event(&mut decoder, memtrace_common::record_as_bytes(&exec));
        assert_eq!(execed.comm.as_string(), "true");
        assert_eq!(comm_at(&mut decoder, 10, 10), "true");

        // The whole process exits: nothing of it is kept.
        let exit = ExitMessage {
            header: header(MessageKind::Exit, Abi::X86_64, 9_000, 10, 10),
            exit_code: 0,
            group_dead: 1,
        };
        event(&mut decoder, memtrace_common::record_as_bytes(&exit));
        assert!(decoder.comms.is_empty(), "{:?}", decoder.comms);
    }
}
