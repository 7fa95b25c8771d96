//! memtrace's kernel side.
//!
//! - `syscalls`: the entry and exit of the traced syscalls, on `sys_enter`/`sys_exit`
//!   tracepoints. They fire for 64-bit and ia32 tasks alike (the `syscalls:*` tracepoints miss
//!   ia32) and need no tracefs nor ftrace, so they work everywhere.
//! - `fentry`: the same entry and exit on fentry/fexit of the syscalls' own kernel functions,
//!   which cost the other processes nothing; they need ftrace, so userspace uses them where they
//!   attach and the tracepoints elsewhere (`probes::backend`).
//! - `process`: fork, exec and exit (`sched_process_*` raw tracepoints), which keep the set of
//!   traced processes and tell userspace where each new image was put (which file, at which
//!   bases, with which stack and vdso), so it can rebuild the layout the program starts with.
//! - `floor`: two empty programs, the benchmark's measure of the tracepoints' own cost.
//! - `kernel_mode`: the slab, page and per-CPU allocators' tracepoints, for `memtrace kernel` only.
//!
//! Only processes in [`TRACED`] produce events. On the tracepoints, every other syscall is
//! turned away on its number alone; a syscall of a traced thread costs one hash lookup by tid
//! ([`THREADS`]), one of an untraced process two. With `--cgroup`, a process of that cgroup is
//! traced on sight (`emit::is_traced`).
#![no_std]
#![no_main]
// `in_flight::thread_gone`'s atomic add.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod emit;
mod fentry;
mod floor;
mod in_flight;
mod kernel_mode;
mod kernel_structs;
mod process;
mod syscalls;

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
pub use memtrace_common::PendingSyscall;
use memtrace_common::{
    lost_slot, KernelOffsets, ProbeConfig, DEFAULT_RING_BUFFER_BYTES, PATH_LEN, STACK_RING_BYTES,
};

/// Kernel struct offsets, written by userspace from the running kernel's BTF before load.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };

/// Tunables, written by userspace before load.
#[unsafe(no_mangle)]
static CONFIG: ProbeConfig = ProbeConfig::UNSET;

/// Everything the kernel side reports. Userspace sizes it with `--ring-buffer-size`.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BUFFER_BYTES, 0);

/// Stack samples, apart from [`EVENTS`] so that they can never crowd out the events the
/// layout needs: a sample that does not fit is counted as not sampled, nothing else.
#[map]
static STACKS: RingBuf = RingBuf::with_byte_size(STACK_RING_BYTES, 0);

/// The traced processes (tgid → unused). Userspace seeds it; with `--follow` fork adds
/// children; the last thread's exit removes the process.
#[map]
static TRACED: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);

/// The threads of traced processes already seen (tid → unused), so that the syscall programs
/// test a thread with one lookup (`emit::thread_is_traced`). Fork adds traced children and
/// threads, the thread's exit removes it; a thread missing is added at its first syscall.
#[map]
static THREADS: HashMap<u32, u32> = HashMap::with_max_entries(32768, 0);

/// Syscalls between entry and exit, by tid, when the per-CPU slot of `in_flight` cannot
/// hold them (and always execve, which the exec tracepoint looks up).
#[map]
static PENDING: HashMap<u32, PendingSyscall> = HashMap::with_max_entries(16384, 0);

/// Per-CPU counters of events that could not be delivered ([`lost_slot`]).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost_slot::COUNT, 0);

/// The filename of an execve in flight, by tid, read at entry: a successful exec returns into
/// a new image where the old memory is gone. Apart from [`PENDING`] so that the common
/// syscalls do not copy 256 bytes they never use.
#[map]
static EXEC_FILENAMES: HashMap<u32, [u8; PATH_LEN]> = HashMap::with_max_entries(1024, 0);

/// Room to read an exec filename into before it is copied into [`EXEC_FILENAMES`]: the eBPF
/// stack is only 512 bytes.
#[map]
static FILENAME_SCRATCH: PerCpuArray<[u8; PATH_LEN]> = PerCpuArray::with_max_entries(1, 0);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here, so it is never taken at run time.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
