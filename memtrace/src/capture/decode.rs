//! Ring-buffer messages → [`Event`]s. Short or unknown messages are errors, never panics: the
//! bytes come from another program.
//!
//! Messages carry no comm (memtrace_common's `MessageHeader` says why): the [`Decoder`] keeps
//! each thread's, learnt from the messages that carry one (a thread first seen, a fork, an exec,
//! a rename), and fills every event's `comm` with it, as when each message carried its own.

use std::collections::HashMap;

use memtrace_common::{
    fork_flags, read_record, syscall_flags, Abi, CommMessage, ExecMessage, ExitMessage, FilePath,
    ForkMessage, Identity, MessageHeader, MessageKind, OomVictimMessage, StackSampleMessage,
    Syscall, SyscallDetailMessage, SyscallMessage, UNKNOWN_UID,
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

/// A decoded message. An exec also says where its image was loaded, so capture can rebuild
/// the mappings the kernel made for it.
#[derive(Debug)]
pub enum Decoded {
    Event {
        event: Event,
        loaded_image: Option<LoadedImage>,
        /// Who the task is, as the kernel said in the message: a fork's child, an exec's task
        /// (the event types carry no such field yet).
        identity: Option<TaskIdentity>,
    },
    /// Not an event yet: it becomes one once unwound against the process's layout.
    Stack(RawStack),
    /// Something the kernel told that is not (yet) an event.
    Noted(Note),
}

/// What a message told besides events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// A thread's comm (now known to the decoder, which fills it into the thread's events),
    /// with its identity: when a traced thread is first seen or renamed.
    Comm(TaskIdentity),
    /// Who a task is, as its fork (the child) or its exec told it ([`Decoded::Event`]'s
    /// `identity`, as capture delivers it).
    Identity(TaskIdentity),
    /// The OOM killer chose a victim (`oom:mark_victim`, with `ProbeOptions::oom_victims`).
    OomVictim(OomVictim),
}

/// A task's identity from the kernel at the message, so that nothing need read `/proc` after
/// the fact: `pid` and `tid` as the host sees them, its cgroup v2 id (`bpf_get_current_cgroup_id`'s
/// value; 0: unknown), and its pid and tid in its own pid namespace (equal to `pid` and `tid`
/// outside containers; 0: unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskIdentity {
    pub pid: u32,
    pub tid: u32,
    pub cgroup_id: u64,
    pub ns_pid: u32,
    pub ns_tid: u32,
}

impl TaskIdentity {
    fn new(pid: u32, tid: u32, identity: &Identity) -> Self {
        Self {
            pid,
            tid,
            cgroup_id: identity.cgroup_id,
            ns_pid: identity.ns_tgid,
            ns_tid: identity.ns_tid,
        }
    }
}

/// The OOM killer's victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomVictim {
    pub time_ns: u64,
    /// 0 on kernels whose tracepoint gives only the victim's pid (then `identity.tid`).
    pub identity: TaskIdentity,
    pub comm: Option<Comm>,
    pub uid: Option<u32>,
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
        let mut identity = None;
        let body = match kind {
            MessageKind::Comm => {
                let message: CommMessage = read_record(bytes).ok_or_else(short)?;
                self.comms.insert(header.tid, Comm(message.comm));
                return Ok(Decoded::Noted(Note::Comm(TaskIdentity::new(
                    header.tgid,
                    header.tid,
                    &message.identity,
                ))));
            }
            MessageKind::OomVictim => {
                let message: OomVictimMessage = read_record(bytes).ok_or_else(short)?;
                let has_task = message.has_task != 0;
                return Ok(Decoded::Noted(Note::OomVictim(OomVictim {
                    time_ns: header.timestamp_ns,
                    identity: TaskIdentity::new(header.tgid, header.tid, &message.identity),
                    comm: has_task.then_some(Comm(message.comm)),
                    uid: (message.uid != UNKNOWN_UID).then_some(message.uid),
                })));
            }
            MessageKind::StackSample => {
                let sample: StackSampleMessage = read_record(bytes).ok_or_else(short)?;
                let len = (sample.len as usize).min(sample.stack.len());
                return Ok(Decoded::Stack(RawStack {
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
                identity = Some(TaskIdentity::new(
                    message.child_tgid,
                    message.child_tid,
                    &message.child,
                ));
                EventBody::Fork(ForkEvent {
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
                identity = Some(TaskIdentity::new(
                    header.tgid,
                    header.tid,
                    &message.identity,
                ));
                EventBody::Exec(Box::new(exec_record(&message)))
            }
            MessageKind::Exit => {
                let message: ExitMessage = read_record(bytes).ok_or_else(short)?;
                EventBody::Exit(ExitEvent {
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
            identity,
        })
    }
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
            identity: Identity {
                cgroup_id: 7,
                ns_tgid: 1,
                ns_tid: tid - tgid + 1,
            },
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
            Decoded::Noted(Note::Comm(TaskIdentity {
                pid: 42,
                tid: 43,
                cgroup_id: 7,
                ns_pid: 1,
                ns_tid: 2
            }))
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
            child: Identity {
                cgroup_id: 9,
                ns_tgid: 1,
                ns_tid: 2,
            },
        };
        let Decoded::Event {
            event: forked,
            identity,
            ..
        } = fed(&mut decoder, &fork)
        else {
            panic!("a fork decodes to an event");
        };
        assert_eq!(forked.comm.as_string(), "server");
        // The child's identity, as the kernel gave it.
        assert_eq!(
            identity,
            Some(TaskIdentity {
                pid: 10,
                tid: 11,
                cgroup_id: 9,
                ns_pid: 1,
                ns_tid: 2
            })
        );
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
        exec.identity = Identity {
            cgroup_id: 3,
            ns_tgid: 5,
            ns_tid: 5,
        };
        let Decoded::Event {
            event: execed,
            identity,
            ..
        } = fed(&mut decoder, &exec)
        else {
            panic!("an exec decodes to an event");
        };
        assert_eq!(execed.comm.as_string(), "true");
        assert_eq!(identity.map(|i| (i.cgroup_id, i.ns_pid)), Some((3, 5)));
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

    fn syscall_of(decoder: &mut Decoder, message: &SyscallMessage) -> SyscallEvent {
        match event(decoder, memtrace_common::record_as_bytes(message)).body {
            EventBody::Syscall(syscall) => syscall,
            other => panic!("expected a syscall, got {other:?}"),
        }
    }

    /// #23's syscalls decode like the others: their arguments and result as the kernel side
    /// put them (ia32's ipc shmat as a shmat, io_setup's ring address in args[2]).
    #[test]
    fn every_way_a_mapping_is_made_decodes_to_a_syscall() {
        let mut decoder = Decoder::default();
        for (syscall, args, ret) in [
            (
                Syscall::Shmat,
                [5, 0, 0o10000, 0, 0, 0],
                0x7f12_3400_0000_i64,
            ),
            (Syscall::Shmdt, [0x7f12_3400_0000, 0, 0, 0, 0, 0], 0),
            (
                Syscall::IoSetup,
                [128, 0x7ffd_0000_1000, 0x7f55_0000_0000, 0, 0, 0],
                0,
            ),
            (Syscall::IoDestroy, [0x7f55_0000_0000, 0, 0, 0, 0, 0], 0),
            (
                Syscall::PkeyMprotect,
                [0x7f00_0000_0000, 8192, 1, 3, 0, 0],
                0,
            ),
            (Syscall::Mseal, [0x7f00_0000_0000, 8192, 0, 0, 0, 0], -38),
            (
                Syscall::RemapFilePages,
                [0x7f00_0000_0000, 8192, 0, 1, 0, 0],
                0,
            ),
        ] {
            let message = SyscallMessage {
                syscall: syscall as u32,
                args,
                ret,
                ..munmap(20, 20, 1_000)
            };
            let record = syscall_of(&mut decoder, &message);
            assert_eq!(
                (record.syscall, record.args, record.ret),
                (syscall, args, ret)
            );
        }
        let via_ipc = SyscallMessage {
            header: header(MessageKind::Syscall, Abi::I386, 2_000, 21, 21),
            syscall: Syscall::Shmat as u32,
            flags: syscall_flags::VIA_IPC,
            args: [3, 0, 0, 0, 0, 0],
            ret: 0xf7c0_0000,
            entry_ns: 1_900,
        };
        let record = syscall_of(&mut decoder, &via_ipc);
        assert_eq!((record.syscall, record.ret), (Syscall::Shmat, 0xf7c0_0000));
        assert_eq!(record.args[0], 3);
    }

    #[test]
    fn an_oom_victim_is_noted_with_what_the_kernel_gave() {
        let mut decoder = Decoder::default();
        let with_task = OomVictimMessage {
            header: header(MessageKind::OomVictim, Abi::Unknown, 9_000, 300, 301),
            uid: 1000,
            has_task: 1,
            comm: comm("hog"),
            identity: Identity {
                cgroup_id: 77,
                ns_tgid: 1,
                ns_tid: 2,
            },
        };
        let Decoded::Noted(Note::OomVictim(victim)) = fed(&mut decoder, &with_task) else {
            panic!("an OOM victim is a note");
        };
        assert_eq!(victim.time_ns, 9_000);
        assert_eq!((victim.identity.pid, victim.identity.tid), (300, 301));
        assert_eq!(victim.identity.cgroup_id, 77);
        assert_eq!(victim.comm.map(|c| c.as_string()), Some("hog".to_owned()));
        assert_eq!(victim.uid, Some(1000));
        // Older kernels: the pid alone.
        let pid_only = OomVictimMessage {
            header: header(MessageKind::OomVictim, Abi::Unknown, 9_500, 0, 302),
            uid: UNKNOWN_UID,
            has_task: 0,
            comm: [0; 16],
            identity: Identity::default(),
        };
        let Decoded::Noted(Note::OomVictim(victim)) = fed(&mut decoder, &pid_only) else {
            panic!("an OOM victim is a note");
        };
        assert_eq!(
            (victim.identity.tid, victim.comm, victim.uid),
            (302, None, None)
        );
    }
}
