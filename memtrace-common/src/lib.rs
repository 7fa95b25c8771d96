//! The event ABI between memtrace's eBPF programs and its userspace.
//!
//! Every message the kernel side writes into the ring buffer starts with a [`MessageHeader`]
//! whose `kind` says which of the `#[repr(C)]` structs below follows. Both sides compile this one
//! definition, so the layouts cannot drift apart. Fields are sized and padded explicitly (no
//! `bool`, no implicit padding) so that the bytes are the same on both sides.
#![no_std]

/// User space only: the global allocator wrapper memtrace uses to end cleanly when memory runs out.
#[cfg(feature = "user")]
pub mod alloc;
pub mod kernel_mode;

/// Length of the fixed buffers that carry a path or a name (memfd name, exec filename).
pub const PATH_LEN: usize = 256;
/// A file path is collected in the kernel one dentry at a time, each into its own slot.
pub const PATH_COMPONENTS: usize = 16;
pub const COMPONENT_LEN: usize = 64;
/// Number of program-visible comm bytes (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// How much of the user stack (from the stack pointer up) a stack sample copies: enough for
/// userspace to unwind through libc into the program with DWARF CFI.
pub const STACK_SAMPLE_BYTES: usize = 8192;

/// By default only mappings of at least this size get a stack sample: large blocks are the
/// ones that bypass the heap and leak, and sampling every 4 KiB mapping would cost more than
/// the syscall (see `cargo xtask bench`).
pub const DEFAULT_STACK_MIN_BYTES: u64 = 64 << 10;

/// The ring buffer's default size. Large enough for bursts of exec-time file mappings; the
/// benchmark and tests shrink it through `--ring-buffer-size` to exercise the loss counter.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 8 << 20;

/// The stack-sample ring's size. Samples have a ring of their own so that they can never take
/// the room the layout events need: when this one is full a sample is skipped and counted
/// ([`lost_slot::STACK_NOT_SAMPLED`]), and the event it belonged to is delivered all the same.
pub const STACK_RING_BYTES: u32 = 8 << 20;

/// The error a syscall's return value carries, if any. The kernel reserves the top 4095
/// values (`-MAX_ERRNO..0`) for errors; every other value is a result (an mmap address above
/// 2^63 is one). Both sides decide failure with this one test.
#[inline(always)]
pub const fn syscall_errno(ret: i64) -> Option<i32> {
    if ret < 0 && ret >= -4095 {
        Some(-ret as i32)
    } else {
        None
    }
}

/// The ABI of the task that made a syscall, as the kernel decides it (TS_COMPAT), not as the
/// program's ELF class suggests.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Abi {
    Unknown = 0,
    X86_64 = 1,
    I386 = 2,
}

impl Abi {
    pub fn from_u32(value: u32) -> Self {
        match value {
            1 => Self::X86_64,
            2 => Self::I386,
            _ => Self::Unknown,
        }
    }
}

/// Which record follows the header.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Syscall = 1,
    Fork = 2,
    Exec = 3,
    Exit = 4,
    /// A [`SyscallDetailMessage`].
    SyscallDetail = 6,
    /// A [`StackSampleMessage`]: the user stack of the syscall just reported by the same thread.
    StackSample = 7,
    /// A [`CommMessage`]: a thread's name, when it changed or when the thread was first seen.
    Comm = 8,
    /// An [`OomVictimMessage`]: the OOM killer chose a victim (`oom:mark_victim`; loaded only
    /// when asked for).
    OomVictim = 9,
}

impl MessageKind {
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::Syscall,
            2 => Self::Fork,
            3 => Self::Exec,
            4 => Self::Exit,
            6 => Self::SyscallDetail,
            7 => Self::StackSample,
            8 => Self::Comm,
            9 => Self::OomVictim,
            _ => return None,
        })
    }
}

/// The syscalls memtrace decodes, independent of the ABI's numbering.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Syscall {
    Mmap = 1,
    /// ia32 only: offset in 4096-byte pages.
    Mmap2 = 2,
    /// ia32 only: a single pointer to the six arguments in user memory, read at entry.
    OldMmap = 3,
    Munmap = 4,
    Brk = 5,
    Mremap = 6,
    Mprotect = 7,
    MemfdCreate = 8,
    Execve = 9,
    Execveat = 10,
    Close = 11,
    /// SysV shared memory, attached: `shmat(shmid, shmaddr, shmflg)` returns the address. An
    /// ia32 `ipc(SHMAT, ...)` is reported as this too, with these three arguments and the
    /// address the kernel wrote through its fourth as the result ([`syscall_flags::VIA_IPC`]).
    Shmat = 12,
    /// `shmdt(shmaddr)`; also ia32's `ipc(SHMDT, ...)`.
    Shmdt = 13,
    /// `io_setup(nr_events, ctx_idp)` maps the AIO ring; the kernel writes the ring's address
    /// (the context id) through `ctx_idp`: read at exit into `args[2]` ([`IO_SETUP_RING_ARG`]).
    IoSetup = 14,
    /// `io_destroy(ctx_id)` unmaps the ring at `ctx_id`.
    IoDestroy = 15,
    /// `pkey_mprotect(start, len, prot, pkey)`.
    PkeyMprotect = 16,
    /// `mseal(start, len, flags)` (Linux 6.10).
    Mseal = 17,
    /// `remap_file_pages(start, size, prot, pgoff, flags)`.
    RemapFilePages = 18,
    /// ia32 only: the SysV IPC multiplexer `ipc(call, first, second, third, ptr, fifth)`, as it
    /// is parked at entry. Never in a message: its exit reports the shmat or shmdt it made as
    /// that syscall, and drops the other calls (semaphores, messages, shmget, shmctl).
    Ipc = 19,
}

/// `args[2]` of a successful `io_setup`: the context id the kernel wrote through `ctx_idp`,
/// which is the ring's address (`aio_setup_ring`); 0 when it could not be read.
pub const IO_SETUP_RING_ARG: usize = 2;

/// ia32 `ipc(2)` calls memtrace reports (include/uapi/linux/ipc.h).
pub mod ipc_call {
    pub const SHMAT: u64 = 21;
    pub const SHMDT: u64 = 22;
}

impl Syscall {
    pub const ALL: [Syscall; 19] = [
        Self::Mmap,
        Self::Mmap2,
        Self::OldMmap,
        Self::Munmap,
        Self::Brk,
        Self::Mremap,
        Self::Mprotect,
        Self::MemfdCreate,
        Self::Execve,
        Self::Execveat,
        Self::Close,
        Self::Shmat,
        Self::Shmdt,
        Self::IoSetup,
        Self::IoDestroy,
        Self::PkeyMprotect,
        Self::Mseal,
        Self::RemapFilePages,
        Self::Ipc,
    ];

    /// A match rather than a search of [`Self::ALL`]: the eBPF programs call it on their hot
    /// path, where a search is a loop.
    #[inline(always)]
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::Mmap,
            2 => Self::Mmap2,
            3 => Self::OldMmap,
            4 => Self::Munmap,
            5 => Self::Brk,
            6 => Self::Mremap,
            7 => Self::Mprotect,
            8 => Self::MemfdCreate,
            9 => Self::Execve,
            10 => Self::Execveat,
            11 => Self::Close,
            12 => Self::Shmat,
            13 => Self::Shmdt,
            14 => Self::IoSetup,
            15 => Self::IoDestroy,
            16 => Self::PkeyMprotect,
            17 => Self::Mseal,
            18 => Self::RemapFilePages,
            19 => Self::Ipc,
            _ => return None,
        })
    }

    /// The kernel's own name for the syscall, as strace prints it; the report's rows fold
    /// the ABI variants together under the first word (`mmap2` and `old_mmap` are `mmap`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Mmap => "mmap",
            Self::Mmap2 => "mmap2",
            Self::OldMmap => "old_mmap",
            Self::Munmap => "munmap",
            Self::Brk => "brk",
            Self::Mremap => "mremap",
            Self::Mprotect => "mprotect",
            Self::MemfdCreate => "memfd_create",
            Self::Execve => "execve",
            Self::Execveat => "execveat",
            Self::Close => "close",
            Self::Shmat => "shmat",
            Self::Shmdt => "shmdt",
            Self::IoSetup => "io_setup",
            Self::IoDestroy => "io_destroy",
            Self::PkeyMprotect => "pkey_mprotect",
            Self::Mseal => "mseal",
            Self::RemapFilePages => "remap_file_pages",
            Self::Ipc => "ipc",
        }
    }

    /// Maps a raw syscall number to what memtrace traces. The two ABIs number syscalls
    /// differently and their numbers collide (ia32 45 is brk, x86_64 45 is recvfrom), so the
    /// ABI must be known first.
    ///
    /// Always inlined: as a call in the eBPF programs it made 6.1's verifier prune far less
    /// (memtrace-ebpf's `exit_syscall` says why).
    #[inline(always)]
    pub fn from_number(abi: Abi, nr: i64) -> Option<Self> {
        match abi {
            Abi::X86_64 => match nr {
                3 => Some(Self::Close),
                9 => Some(Self::Mmap),
                10 => Some(Self::Mprotect),
                11 => Some(Self::Munmap),
                12 => Some(Self::Brk),
                25 => Some(Self::Mremap),
                30 => Some(Self::Shmat),
                59 => Some(Self::Execve),
                67 => Some(Self::Shmdt),
                206 => Some(Self::IoSetup),
                207 => Some(Self::IoDestroy),
                216 => Some(Self::RemapFilePages),
                319 => Some(Self::MemfdCreate),
                322 => Some(Self::Execveat),
                329 => Some(Self::PkeyMprotect),
                462 => Some(Self::Mseal),
                _ => None,
            },
            Abi::I386 => match nr {
                6 => Some(Self::Close),
                11 => Some(Self::Execve),
                45 => Some(Self::Brk),
                90 => Some(Self::OldMmap),
                91 => Some(Self::Munmap),
                117 => Some(Self::Ipc),
                125 => Some(Self::Mprotect),
                163 => Some(Self::Mremap),
                192 => Some(Self::Mmap2),
                245 => Some(Self::IoSetup),
                246 => Some(Self::IoDestroy),
                257 => Some(Self::RemapFilePages),
                356 => Some(Self::MemfdCreate),
                358 => Some(Self::Execveat),
                380 => Some(Self::PkeyMprotect),
                // The direct SysV IPC syscalls (Linux 5.1); older kernels only have ipc(2).
                397 => Some(Self::Shmat),
                398 => Some(Self::Shmdt),
                462 => Some(Self::Mseal),
                _ => None,
            },
            Abi::Unknown => None,
        }
    }
}

impl Syscall {
    /// Whether a raw syscall number is one memtrace traces in either ABI. The raw tracepoints
    /// see every syscall of every process before knowing its ABI (that costs a kernel read):
    /// this test on the number alone lets everything else through at the price of the hook.
    #[inline(always)]
    pub fn may_be_traced(nr: i64) -> bool {
        Self::from_number(Abi::X86_64, nr).is_some() || Self::from_number(Abi::I386, nr).is_some()
    }

    /// Whether a raw syscall number is execve or execveat in either ABI: the only syscalls
    /// whose entry matters without `--latency` (their exit runs in the new image).
    #[inline(always)]
    pub fn may_be_exec(nr: i64) -> bool {
        matches!(nr, 59 | 322 | 11 | 358)
    }

    pub fn is_exec(self) -> bool {
        matches!(self, Self::Execve | Self::Execveat)
    }
}

/// Starts every message in the ring buffer.
///
/// It carries no comm: `bpf_get_current_comm` cost a fifth of a traced syscall's program time,
/// and the comm changes only at exec and rename. A thread's comm comes once, when the thread is
/// first seen ([`CommMessage`]) or born ([`ForkMessage::comm`]), and again when it changes
/// ([`ExecMessage::comm`], a [`CommMessage`] from `task_rename`); userspace keeps it per thread.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct MessageHeader {
    /// A [`MessageKind`].
    pub kind: u32,
    /// An [`Abi`]: the ABI of the syscall being made (for process events, of the task; for
    /// an exec, of the task before the exec: `ExecMessage::new_abi` is the one after).
    pub abi: u32,
    /// `bpf_ktime_get_ns`: CLOCK_MONOTONIC, nanoseconds.
    pub timestamp_ns: u64,
    pub tgid: u32,
    pub tid: u32,
}

/// A thread's comm: sent when a traced thread is first seen by the syscall programs (one that
/// was there before tracing began, or joined the `--cgroup`) and when a traced thread is
/// renamed (`task_rename`: prctl(PR_SET_NAME), a write to /proc/PID/comm, exec's own rename).
/// The header names the thread, which for a rename is not always the one that renamed it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct CommMessage {
    pub header: MessageHeader,
    pub comm: [u8; COMM_LEN],
    /// The thread's identity at that moment.
    pub identity: Identity,
}

/// Who a task is, as the kernel says at the message, so that userspace need not read `/proc`
/// after the fact (when the task may be gone): its cgroup v2 (the id `bpf_get_current_cgroup_id`
/// returns: its directory's inode number; 0 if unknown) and its ids in its own pid namespace
/// (what the task itself sees as its pid and tid, `task->thread_pid->numbers[level].nr`; equal
/// to the header's outside containers; 0 if unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Identity {
    pub cgroup_id: u64,
    pub ns_tgid: u32,
    pub ns_tid: u32,
}

/// `oom:mark_victim`: the OOM killer picked a victim. The header names the victim (on kernels
/// whose tracepoint passes only its pid, `tgid` is 0 and `tid` that pid); its timestamp is when.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct OomVictimMessage {
    pub header: MessageHeader,
    /// The victim's uid, on kernels whose tracepoint passes it; [`UNKNOWN_UID`] otherwise.
    pub uid: u32,
    /// Non-zero when the tracepoint passed the task, so `comm` and `identity` are filled.
    pub has_task: u32,
    pub comm: [u8; COMM_LEN],
    pub identity: Identity,
}

/// [`OomVictimMessage::uid`] when the kernel does not say.
pub const UNKNOWN_UID: u32 = u32::MAX;

/// A file as the kernel's dentry chain names it: `components[0]` is the file's own name,
/// `components[1]` its parent's, and so on up to the root, crossing mount points. An empty
/// component marks a mount crossing and is not part of the path.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FilePath {
    pub inode: u64,
    /// How many slots of `components` are filled.
    pub depth: u32,
    /// Non-zero when the walk stopped before the root (too deep).
    pub truncated: u32,
    pub components: [[u8; COMPONENT_LEN]; PATH_COMPONENTS],
}

/// Flags in [`SyscallMessage::flags`].
pub mod syscall_flags {
    /// `path` holds a string the syscall passed (memfd name, exec filename).
    pub const HAS_STRING: u32 = 1;
    /// `file` holds the file behind the fd argument (mmap) or the result (memfd_create).
    pub const HAS_FILE: u32 = 2;
    /// An ia32 shmat or shmdt made through `ipc(2)`: `args` and `ret` are given as the direct
    /// syscall's (see [`super::Syscall::Shmat`]).
    pub const VIA_IPC: u32 = 4;
}

/// One completed syscall: its arguments at entry and its result at exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SyscallMessage {
    pub header: MessageHeader,
    /// A [`Syscall`].
    pub syscall: u32,
    /// [`syscall_flags`].
    pub flags: u32,
    /// Arguments as the ABI passed them (ia32: zero-extended 32-bit values; old_mmap: the six
    /// values read from the user's argument block).
    pub args: [u64; 6],
    /// The raw result: an address, a value, or -errno.
    pub ret: i64,
    /// When the syscall entered (0: not seen); `header.timestamp_ns` is when it returned.
    pub entry_ns: u64,
}

/// A syscall that also carries a string argument or a file: [`MessageKind::SyscallDetail`]. Kept
/// apart from [`SyscallMessage`] so the common anonymous mmap/munmap stays small in the ring.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SyscallDetailMessage {
    pub syscall: SyscallMessage,
    pub string: [u8; PATH_LEN],
    pub file: FilePath,
}

/// The user registers and the top of the user stack at a syscall that created memory, for
/// userspace to unwind. Travels in its own ring ([`names::STACKS_MAP`]); its header's
/// `timestamp_ns` is that of the syscall's own record, which is how userspace pairs them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct StackSampleMessage {
    pub header: MessageHeader,
    /// Where the syscall returns to, and the stack and frame pointers at that point.
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// How many bytes of `stack` (from `sp` up) were readable.
    pub len: u32,
    pub _pad: u32,
    pub stack: [u8; STACK_SAMPLE_BYTES],
}

/// What the kernel side remembers of a syscall between its entry and its exit (by tid, in the
/// [`names::PENDING_MAP`] or a per-CPU slot). Shared so that tests can plant a stale entry and
/// check that an exit of another syscall never takes it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct PendingSyscall {
    /// A [`Syscall`].
    pub syscall: u32,
    /// [`syscall_flags`].
    pub flags: u32,
    /// The ABI at entry: a successful ia32 → x86_64 execve returns in the new image.
    pub abi: u32,
    pub _pad: u32,
    pub entry_ns: u64,
    pub args: [u64; 6],
}

/// Flags in [`ForkMessage::flags`].
pub mod fork_flags {
    /// The child is a thread of the parent's process (same tgid).
    pub const THREAD: u32 = 1;
    /// The child shares the parent's address space (threads, vfork, CLONE_VM).
    pub const SHARES_MM: u32 = 2;
    /// The child will not be traced: the session neither follows children nor traces a
    /// cgroup (whose members are traced wherever they come from).
    pub const UNTRACED: u32 = 4;
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ForkMessage {
    /// The parent's identity is in the header.
    pub header: MessageHeader,
    pub child_tgid: u32,
    pub child_tid: u32,
    /// [`fork_flags`].
    pub flags: u32,
    pub _pad: u32,
    /// The parent's comm, which the child inherits.
    pub comm: [u8; COMM_LEN],
    /// The child's identity: its cgroup (`CLONE_INTO_CGROUP` puts it elsewhere than its
    /// parent) and its ids in its own pid namespace (a new one with `CLONE_NEWPID`).
    pub child: Identity,
}

/// Where a new image's pieces are, as the kernel set them up at exec: `mm_struct`'s bounds,
/// the stack VMA and the auxv points. The kernel's exec event carries it and userspace's exec
/// record keeps it as is, so both sides name the same addresses one way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ImageLayout {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub mmap_base: u64,
    /// The stack VMA (`bprm->vma`).
    pub stack_start: u64,
    pub stack_end: u64,
    /// Where the kernel loaded the ELF interpreter (auxv AT_BASE); 0 for static binaries.
    pub interp_base: u64,
    /// auxv AT_ENTRY and AT_PHDR: the entry point and the program headers.
    pub entry: u64,
    pub phdr: u64,
}

/// A completed exec: the new image as the kernel set it up, read from `mm_struct` and the
/// `linux_binprm` at `sched_process_exec`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ExecMessage {
    pub header: MessageHeader,
    /// The tid that called exec (a non-leader thread's exec takes over the tgid).
    pub old_tid: u32,
    /// `task_struct.personality`.
    pub personality: u32,
    /// The ABI of the new image, from its ELF header (`bprm->buf`).
    pub new_abi: u32,
    pub _pad: u32,
    /// The comm the exec gave the task (the new file's name).
    pub comm: [u8; COMM_LEN],
    /// The task's identity after the exec.
    pub identity: Identity,
    pub layout: ImageLayout,
    /// Where the vdso is (auxv AT_SYSINFO_EHDR): userspace places the special mappings by it.
    pub vdso_base: u64,
    /// The name exec was called with (`bprm->filename`).
    pub filename: [u8; PATH_LEN],
    /// The script interpreter or binary the kernel finally ran (`bprm->interp`).
    pub interp: [u8; PATH_LEN],
    /// The ELF file that was loaded (`bprm->file`), resolved by the kernel: userspace reads its
    /// program headers to rebuild the mappings the loader made.
    pub exe: FilePath,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ExitMessage {
    pub header: MessageHeader,
    /// `task_struct.exit_code`: wait status (code << 8, or the signal).
    pub exit_code: u32,
    /// Non-zero when the last thread of the process exits.
    pub group_dead: u32,
}

/// Kernel-struct field offsets that the programs need, resolved by userspace from the running
/// kernel's BTF and written into the programs' read-only data before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    pub task_thread_info: u32,
    pub thread_info_status: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_mm: u32,
    pub task_exit_code: u32,
    pub task_personality: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_f_path: u32,
    pub file_f_inode: u32,
    pub inode_i_ino: u32,
    pub path_dentry: u32,
    pub path_mnt: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name_name: u32,
    /// `mount.mnt` (the `vfsmount` embedded in `struct mount`).
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub vfsmount_mnt_root: u32,
    /// `task_struct.fs` and `fs_struct.root`: the task's root directory, where a path as the
    /// task sees it starts (a chroot's or a container's root).
    pub task_fs: u32,
    pub fs_struct_root: u32,
    pub mm_start_code: u32,
    pub mm_end_code: u32,
    pub mm_start_data: u32,
    pub mm_end_data: u32,
    pub mm_start_brk: u32,
    pub mm_brk: u32,
    pub mm_start_stack: u32,
    pub mm_mmap_base: u32,
    pub mm_saved_auxv: u32,
    pub binprm_vma: u32,
    pub binprm_file: u32,
    pub binprm_filename: u32,
    pub binprm_interp: u32,
    pub binprm_buf: u32,
    pub vma_vm_start: u32,
    pub vma_vm_end: u32,
    /// `x86 TS_COMPAT` in `thread_info.status`.
    pub ts_compat: u32,
    /// `task_struct.signal`, and `signal_struct.live.counter` (threads not yet exiting): how
    /// kernels whose `sched_process_exit` lacks `group_dead` tell the last thread's exit.
    pub task_signal: u32,
    pub signal_live: u32,
    /// The task's cgroup v2 id: `task->cgroups->dfl_cgrp->kn->id`.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// Ids in the task's own pid namespace: `task->thread_pid` (the tid),
    /// `task->signal->pids[PIDTYPE_TGID]` (the tgid), and in a `struct pid` its `level` and
    /// `numbers[level].nr`.
    pub task_thread_pid: u32,
    pub signal_pids: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    /// `sizeof(struct upid)` and `upid.nr`.
    pub upid_size: u32,
    pub upid_nr: u32,
    /// `task_struct.comm`, for a task that is not the current one (`oom:mark_victim`).
    pub task_comm: u32,
}

/// Tunables written into the programs' read-only data before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeConfig {
    /// Non-zero: children of traced processes become traced (`--follow`).
    pub follow_children: u32,
    /// Non-zero: the programs emit aya-log diagnostics (`--ebpf-log`); off by default because
    /// each log record costs as much as an event.
    pub log_enabled: u32,
    /// Non-zero: every traced syscall's entry is stamped, for its latency (`--latency`). Zero:
    /// the entry programs see only execve and execveat (whose exit runs in the new image), and
    /// a traced mmap or munmap pays one program and one clock read, not two of each.
    pub syscall_latency: u32,
    pub _pad: u32,
    /// Wake the reader once this many bytes were submitted on one CPU since its last wakeup:
    /// one wakeup per event would cost more than the event itself. Counted per CPU rather than
    /// asked of the ring (`bpf_ringbuf_query`), which reads a line the reader keeps writing
    /// (16 ns a message here). Userspace gives a share of its threshold to each CPU, so what
    /// waits never exceeds it; the reader also polls on a timer, so a quiet stream is still
    /// delivered promptly.
    pub wakeup_bytes: u64,
    /// Sample the user stack of mmap/mremap/brk/memfd_create calls that create at least this
    /// many bytes (`u64::MAX`: never).
    pub stack_min_bytes: u64,
    /// `--cgroup`: the ids of up to [`MAX_CGROUPS`] cgroups v2 (their directories' inode
    /// numbers) whose processes are all traced, whether they were there at attach, were started
    /// in one or joined it later; the ones given first, then 0s (all 0: none). Compared with
    /// `bpf_get_current_cgroup_id()`, so membership is the kernel's own.
    pub cgroup_ids: [u64; MAX_CGROUPS],
}

/// The most cgroups one session traces (`--cgroup` repeated): the programs compare a task's
/// cgroup with each in turn, on every syscall of every process of the host, so the list stays
/// short enough to cost a few compares rather than a map lookup.
pub const MAX_CGROUPS: usize = 8;

impl ProbeConfig {
    /// Everything off: nothing followed, no logs, no stacks, no cgroup. The eBPF object's
    /// initial value, and where kernel mode starts.
    pub const UNSET: Self = Self {
        follow_children: 0,
        log_enabled: 0,
        syscall_latency: 0,
        _pad: 0,
        wakeup_bytes: 0,
        stack_min_bytes: u64::MAX,
        cgroup_ids: [0; MAX_CGROUPS],
    };
}

/// Names shared by the two sides.
pub mod names {
    pub const EVENTS_MAP: &str = "EVENTS";
    pub const TRACED_MAP: &str = "TRACED";
    /// The threads of traced processes the programs have seen (tid → unused): a syscall of a
    /// thread found here costs one lookup; one not found is checked against [`TRACED_MAP`],
    /// added, and its comm sent.
    pub const THREADS_MAP: &str = "THREADS";
    pub const LOST_MAP: &str = "LOST";
    /// The ring of [`super::StackSampleMessage`]s, apart from [`EVENTS_MAP`].
    pub const STACKS_MAP: &str = "STACKS";
    /// Syscalls between entry and exit that did not fit the per-CPU slot
    /// ([`super::PendingSyscall`] by tid).
    pub const PENDING_MAP: &str = "PENDING";
    pub const OFFSETS_GLOBAL: &str = "OFFSETS";
    pub const CONFIG_GLOBAL: &str = "CONFIG";
}

/// Slots of the per-CPU [`names::LOST_MAP`] counter array.
pub mod lost_slot {
    /// Ring buffer full: an event was dropped.
    pub const RING_FULL: u32 = 0;
    /// The in-flight syscall table was full: the syscall's entry was not remembered.
    pub const PENDING_FULL: u32 = 1;
    /// A stack sample was not taken (its ring was full). Not a lost event: the syscall itself
    /// was delivered; only its call stack is unknown.
    pub const STACK_NOT_SAMPLED: u32 = 2;
    pub const COUNT: u32 = 3;
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: plain-old-data, `#[repr(C)]` with explicit padding: every bit pattern is valid.
    unsafe impl aya::Pod for KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ProbeConfig {}
}

/// Reads a record out of raw ring-buffer bytes without assuming alignment; `None` when the
/// bytes are too short. The `Pod` derive checks at compile time that a record has no padding
/// and no field that some bit pattern would make invalid.
#[cfg(feature = "user")]
pub fn read_record<T: bytemuck::Pod>(bytes: &[u8]) -> Option<T> {
    bytes
        .get(..core::mem::size_of::<T>())
        .map(bytemuck::pod_read_unaligned)
}

/// The bytes of a record, as the kernel side would write them (tests and tools build records
/// with this).
#[cfg(feature = "user")]
pub fn record_as_bytes<T: bytemuck::Pod>(value: &T) -> &[u8] {
    bytemuck::bytes_of(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_u32_inverts_the_discriminant() {
        for syscall in Syscall::ALL {
            assert_eq!(Syscall::from_u32(syscall as u32), Some(syscall));
        }
        assert_eq!(Syscall::from_u32(0), None);
        assert_eq!(Syscall::from_u32(Syscall::ALL.len() as u32 + 1), None);
    }

    /// The tracepoints' first filter lets through exactly the numbers of both ABIs.
    #[test]
    fn may_be_traced_is_the_union_of_both_abis() {
        for nr in -1..1024 {
            let traced = Syscall::from_number(Abi::X86_64, nr).is_some()
                || Syscall::from_number(Abi::I386, nr).is_some();
            assert_eq!(Syscall::may_be_traced(nr), traced, "syscall {nr}");
        }
        // getppid (x86_64 110, ia32 64), the benchmark's bystander, is not ours.
        assert!(!Syscall::may_be_traced(110) && !Syscall::may_be_traced(64));
        assert!(Syscall::may_be_traced(9) && Syscall::may_be_traced(192));
    }

    /// The entry programs' filter without `--latency` lets through exactly the exec numbers.
    #[test]
    fn may_be_exec_is_the_union_of_both_abis_execs() {
        for nr in -1..1024 {
            let exec = [Abi::X86_64, Abi::I386]
                .into_iter()
                .any(|abi| Syscall::from_number(abi, nr).is_some_and(Syscall::is_exec));
            assert_eq!(Syscall::may_be_exec(nr), exec, "syscall {nr}");
        }
    }

    /// Every way a mapping is made (#23), in each ABI's own numbering
    /// (arch/x86/entry/syscalls/syscall_{64,32}.tbl).
    #[test]
    fn the_mapping_syscalls_of_both_abis() {
        let x86_64 = [
            (30, Syscall::Shmat),
            (67, Syscall::Shmdt),
            (206, Syscall::IoSetup),
            (207, Syscall::IoDestroy),
            (216, Syscall::RemapFilePages),
            (329, Syscall::PkeyMprotect),
            (462, Syscall::Mseal),
        ];
        let i386 = [
            (117, Syscall::Ipc),
            (245, Syscall::IoSetup),
            (246, Syscall::IoDestroy),
            (257, Syscall::RemapFilePages),
            (380, Syscall::PkeyMprotect),
            (397, Syscall::Shmat),
            (398, Syscall::Shmdt),
            (462, Syscall::Mseal),
        ];
        for (nr, syscall) in x86_64 {
            assert_eq!(Syscall::from_number(Abi::X86_64, nr), Some(syscall), "{nr}");
        }
        for (nr, syscall) in i386 {
            assert_eq!(Syscall::from_number(Abi::I386, nr), Some(syscall), "{nr}");
        }
        // x86_64 117 is setresuid, ia32 30 is utime: not ours.
        assert_eq!(Syscall::from_number(Abi::X86_64, 117), None);
        assert_eq!(Syscall::from_number(Abi::I386, 30), None);
        assert_eq!(Syscall::Mseal.name(), "mseal");
        assert_eq!(Syscall::RemapFilePages.name(), "remap_file_pages");
    }
}
