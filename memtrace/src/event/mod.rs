//! The event stream: what the kernel told us, decoded into safe Rust.
//!
//! Live capture produces these from ring-buffer records, a recording stores them, replay reads
//! them back, and the model consumes them. Nothing downstream of this module knows where an
//! event came from.

pub mod kernel_snapshot;

pub use memtrace_common::{Abi, ImageLayout, Syscall, IO_SETUP_RING_ARG};

/// Argument slots past a syscall's own that capture fills with what the kernel's answer
/// implies but does not say, read from `/proc` as the event is decoded: the event then carries
/// it, so the model, a recording and its replay elsewhere need nothing else.
pub mod completed_args {
    /// `shmat`: the bytes the attachment maps (the segment's size, page-aligned); 0 when the
    /// segment could not be found (detached and destroyed before capture read it).
    pub const SHMAT_SIZE: usize = 3;
    /// `shmat`: the segment's key, which names it (`/SYSV%08x`, as `/proc/PID/maps` does).
    pub const SHMAT_KEY: usize = 4;
    /// `io_setup`: the bytes of the ring mapped at `args[IO_SETUP_RING_ARG]`; 0 when unknown.
    pub const IO_SETUP_RING_SIZE: usize = 3;
}

/// A task's `comm`, kept as the kernel's fixed 16 bytes so events stay `Copy`-cheap.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm(pub [u8; memtrace_common::COMM_LEN]);

impl Comm {
    pub fn from_str_lossy(name: &str) -> Self {
        let mut bytes = [0u8; memtrace_common::COMM_LEN];
        let len = name.len().min(memtrace_common::COMM_LEN - 1);
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self(bytes)
    }

    pub fn as_string(&self) -> String {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        String::from_utf8_lossy(&self.0[..end]).into_owned()
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_string())
    }
}

/// One event: who, when, and what.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds (the kernel's `bpf_ktime_get_ns`).
    pub time_ns: u64,
    /// The process (tgid).
    pub pid: u32,
    /// The thread.
    pub tid: u32,
    pub comm: Comm,
    /// The ABI of the syscall (for process events: of the task).
    pub abi: Abi,
    pub body: EventBody,
}

impl Event {
    /// An event of the session rather than of a process (losses, kernel-mode snapshots):
    /// pid 0, no thread, no ABI.
    pub fn of_session(time_ns: u64, body: EventBody) -> Self {
        Self {
            time_ns,
            pid: 0,
            tid: 0,
            comm: Comm::default(),
            abi: Abi::Unknown,
            body,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum EventBody {
    Syscall(SyscallEvent),
    Fork(ForkEvent),
    /// Boxed: it is large and rare, and every event is as large as its largest variant.
    Exec(Box<ExecEvent>),
    Exit(ExitEvent),
    /// A mapping change the kernel made while loading a new image, before it ran. Arrives
    /// before the [`EventBody::Exec`] it belongs to.
    ExecMapping(ExecMappingEvent),
    /// The layout of a process memtrace attached to, from `/proc/PID/maps`.
    Attach(AttachEvent),
    /// The kernel side could not deliver some events. Totals so far, not increments.
    Lost(Losses),
    /// The user call stack of this thread's preceding syscall (one that created memory),
    /// unwound at capture time so that a replay needs neither the stack bytes nor the
    /// binaries' unwind tables.
    Stack(StackEvent),
    /// A file that call stacks run through, as it was when they were unwound: announced once,
    /// before the first stack that needs it, so a replay elsewhere names frames only from the
    /// same build.
    Module(ModuleEvent),
    /// A function of JIT code that call stacks run through, as the process's perf map
    /// (`/tmp/perf-PID.map`) named it when they were unwound: announced once, before the
    /// first stack that needs it, so a replay names the frame though the map is gone.
    JitSymbol(JitSymbolEvent),
    /// Kernel mode (`memtrace kernel`): the outstanding kernel allocations at one instant.
    /// Boxed: large, and one per interval.
    KernelSnapshot(Box<kernel_snapshot::KernelSnapshot>),
    /// Who the process is in its container (read from /proc when memtrace first sees it), so
    /// the report and a replay elsewhere name it as the container does.
    Container(ContainerIdentity),
    /// The agent's keyframe of a live process: its layout as the model held it at that point
    /// of the stream, in the attach layout's form. Recorded, never fed to the live model: a
    /// window cut from the middle of a recording replays alone from the last keyframe before
    /// it. A replay that already knows the process ignores it.
    Keyframe(AttachEvent),
    /// What bounds the process's mappings (read from /proc when memtrace first sees it, and
    /// again after an exec), so that a replay judges the same limits.
    Limits(LimitsEvent),
}

/// The limits a process maps against: the kernel refuses a mapping past either with ENOMEM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LimitsEvent {
    /// `vm.max_map_count` (`/proc/sys/vm/max_map_count`, read once per session): the most
    /// mappings (VMAs) a process may have; 0 when unknown.
    pub max_map_count: u64,
    /// The soft `RLIMIT_AS` (`Max address space` in `/proc/PID/limits`), in bytes; `None`
    /// when unlimited.
    pub address_space: Option<u64>,
}

/// A process's container identity, as the host reads it from `/proc/PID`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ContainerIdentity {
    /// Its cgroup v2 path (`0::PATH` in `/proc/PID/cgroup`).
    pub cgroup: String,
    /// Its pid in its own (innermost) pid namespace: the last `NSpid` of its status; the host
    /// pid for a process in the host's namespace.
    pub ns_pid: u32,
    /// Its root directory as the host sees it (`/proc/PID/root`): `/` on the host, the
    /// container's root directory in a chroot or a container.
    pub root: String,
}

impl ContainerIdentity {
    /// A path the host shows (`/proc/PID/maps` read by memtrace) as the process sees it:
    /// without its root's prefix. A path outside its root is shown unchanged.
    pub fn process_view<'p>(&self, host_path: &'p str) -> &'p str {
        if self.root.is_empty() || self.root == "/" {
            return host_path;
        }
        match host_path.strip_prefix(self.root.as_str()) {
            Some(rest) if rest.starts_with('/') => rest,
            _ => host_path,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModuleEvent {
    pub path: String,
    /// The ELF build-id; empty when the file has none (or could not be read).
    pub build_id: Vec<u8>,
}

/// A JIT-compiled function of the process: `[start, start + len)` is its code.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct JitSymbolEvent {
    pub start: u64,
    pub len: u64,
    pub name: String,
}

/// Return addresses, innermost first: the first is where the syscall returns to (in libc).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StackEvent {
    pub frames: Vec<u64>,
    /// The walk stopped before the outermost frame (the entry point): the stack is cut
    /// short, not whole.
    pub truncated: bool,
}

/// A file the kernel named by walking its dentries (a mapping's backing file, a memfd).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileRef {
    pub inode: u64,
    /// Absolute path as `/proc/PID/maps` shows it (memfds: `/memfd:NAME`), without
    /// ` (deleted)`.
    pub path: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SyscallEvent {
    pub syscall: Syscall,
    /// Arguments as passed (ia32 values zero-extended; old_mmap's block already read).
    pub args: [u64; 6],
    /// Address, value or -errno.
    pub ret: i64,
    pub entry_ns: u64,
    /// memfd_create's name, execve's filename.
    pub string: Option<String>,
    /// mmap: the file behind the fd; memfd_create: the new memfd.
    pub file: Option<FileRef>,
}

impl SyscallEvent {
    pub fn failed(&self) -> bool {
        self.errno().is_some()
    }

    /// The error, if the result is in the kernel's -errno range.
    pub fn errno(&self) -> Option<i32> {
        memtrace_common::syscall_errno(self.ret)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkEvent {
    pub child_pid: u32,
    pub child_tid: u32,
    /// The child is a thread of the same process.
    pub thread: bool,
    /// The child shares the parent's address space (threads, vfork).
    pub shares_mm: bool,
    /// The child will not be traced (the session does not follow children): nothing of it
    /// comes after its fork.
    pub untraced: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub old_tid: u32,
    pub personality: u32,
    /// The ABI of the new image (from its ELF header).
    pub new_abi: Abi,
    pub filename: String,
    /// The script interpreter or the binary as the kernel finally ran it (`bprm->interp`).
    pub interp: String,
    /// Where the image's pieces are, as the kernel's exec event gave them.
    pub layout: ImageLayout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    /// The wait status as the kernel keeps it (`exit_code`): `code << 8`, or a signal number.
    pub status: u32,
    /// The last thread of the process.
    pub group_dead: bool,
}

impl ExitEvent {
    /// The exit code, when the process exited rather than being killed.
    pub fn exit_code(&self) -> Option<i32> {
        (self.status & 0x7f == 0).then_some(((self.status >> 8) & 0xff) as i32)
    }

    /// The signal that killed the process.
    pub fn signal(&self) -> Option<i32> {
        let signal = (self.status & 0x7f) as i32;
        (signal != 0).then_some(signal)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecMappingKind {
    /// An ELF segment of the executable or the interpreter.
    Mmap,
    /// Anonymous bss beyond a segment's file pages.
    Bss,
    /// vdso, vvar and friends.
    Special,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecMappingEvent {
    pub kind: ExecMappingKind,
    pub start: u64,
    pub len: u64,
    /// `PROT_*` bits (read 1, write 2, exec 4).
    pub prot: u32,
    /// `MAP_*` flags for [`ExecMappingKind::Mmap`].
    pub flags: u32,
    /// Offset into the file in bytes.
    pub offset: u64,
    pub file: Option<FileRef>,
    /// `[vdso]`, `[vvar]`… for special mappings.
    pub name: Option<String>,
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsLine {
    pub start: u64,
    pub end: u64,
    /// `r-xp` as the kernel prints it.
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    /// Path, `[heap]`, `[stack]`, `[vdso]`…, or empty for anonymous memory.
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachEvent {
    pub regions: Vec<MapsLine>,
    /// The kernel's `start_brk` (field 47 of `/proc/PID/stat`).
    pub start_brk: u64,
    /// The break: the end of the `[heap]` line of `/proc/PID/maps` (the kernel does not
    /// publish it; the heap ends at it, page-aligned), `start_brk` without a heap.
    pub brk: u64,
    /// The process's parent (field 4 of `/proc/PID/stat`).
    pub ppid: u32,
    /// The target of `/proc/PID/exe`, as the process names it (from its own root).
    pub exe: String,
    /// The process's open fds that refer to memfds (from `/proc/PID/fd`), so that a memfd
    /// mapping found at attach can tell whether its fd was closed.
    pub memfd_fds: Vec<AttachFd>,
}

/// An open fd of a process at attach that refers to a memfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachFd {
    pub fd: u32,
    /// The memfd's inode, as `/proc/PID/maps` shows it for its mappings.
    pub inode: u64,
    /// Opened with `O_CLOEXEC` (`MFD_CLOEXEC`): an exec closes it.
    pub cloexec: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// Events dropped because the ring buffer was full.
    pub ring_full: u64,
    /// Syscalls whose entry could not be remembered (in-flight table full).
    pub pending_full: u64,
    /// Call stacks not sampled (their ring was full). Not lost events: the syscalls were
    /// delivered and applied; only who made them is unknown.
    pub stacks_not_sampled: u64,
}

impl Losses {
    /// Lost events: what the layout and the counts miss. Unsampled stacks are not among them.
    pub fn total(&self) -> u64 {
        self.ring_full + self.pending_full
    }
}
