//! memtrace's kernel side.
//!
//! - `syscalls`: raw `sys_enter`/`sys_exit` tracepoints. They fire for 64-bit and ia32 tasks
//!   alike (the `syscalls:*` tracepoints miss ia32) and need no tracefs.
//! - `process`: fork, exec and exit (`sched_process_*` raw tracepoints), which keep the set of
//!   traced processes and tell userspace where each new image was put (which file, at which
//!   bases, with which stack and vdso), so it can rebuild the layout the program starts with.
//!
//! Only raw tracepoints: they need no tracefs, and no ftrace (fentry/fexit are not available
//! everywhere, e.g. in sandboxed VMs that forbid function tracing).
//!
//! Only processes in [`TRACED`] produce events; for everyone else each probe is one hash
//! lookup.
#![no_std]
#![no_main]

mod emit;
mod kernel;
mod process;
mod syscalls;

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use memtrace_common::{lost_slot, KernelOffsets, ProbeConfig, DEFAULT_RING_BUFFER_BYTES, PATH_LEN};

/// Kernel struct offsets, written by userspace from the running kernel's BTF before load.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };

/// Tunables, written by userspace before load.
#[unsafe(no_mangle)]
static CONFIG: ProbeConfig = ProbeConfig {
    follow_children: 0,
    log_enabled: 0,
    wakeup_bytes: 0,
};

/// Everything the kernel side reports. Userspace sizes it with `--ring-buffer-size`.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BUFFER_BYTES, 0);

/// The traced processes (tgid → unused). Userspace seeds it; with `--follow` fork adds
/// children; the last thread's exit removes the process.
#[map]
static TRACED: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);

/// Syscalls between entry and exit, by tid: exit needs the arguments entry saw.
#[map]
static PENDING: HashMap<u32, PendingSyscall> = HashMap::with_max_entries(16384, 0);

/// Per-CPU counters of events that could not be delivered ([`lost_slot`]).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost_slot::COUNT, 0);

/// Room to build a [`PendingSyscall`] before it is copied into [`PENDING`]: it is larger than
/// the 512-byte eBPF stack allows.
#[map]
static SCRATCH: PerCpuArray<PendingSyscall> = PerCpuArray::with_max_entries(1, 0);

/// What `sys_enter` remembers for `sys_exit`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingSyscall {
    /// A `memtrace_common::Syscall`.
    syscall: u32,
    /// `memtrace_common::syscall_flags`.
    flags: u32,
    /// The ABI at entry: a successful ia32 → x86_64 execve returns in the new image.
    abi: u32,
    _pad: u32,
    entry_ns: u64,
    args: [u64; 6],
    string: [u8; PATH_LEN],
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here, so it is never taken at run time.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
