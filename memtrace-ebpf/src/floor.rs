//! Two programs that do nothing, on the hooks `syscalls` uses: the cost of the kernel's hook
//! alone (every syscall of every process takes the kernel's slow path once a program is
//! attached to `sys_enter`/`sys_exit`). `cargo xtask bench` attaches them through memtrace's
//! hidden `hook-floor` command and compares memtrace with this floor, which no tracer on these
//! hooks can go below.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn floor_enter(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn floor_exit(_ctx: RawTracePointContext) -> i32 {
    0
}
