//! The fentry/fexit backend: the same entry and exit as `syscalls`, attached to the kernel's
//! functions for exactly the syscalls memtrace traces, instead of to `sys_enter`/`sys_exit`.
//!
//! The raw tracepoints put every syscall of every process on the kernel's slow path; these
//! trampolines cost only the traced syscalls anything. They need ftrace, which some kernels
//! forbid (lockdown): userspace then falls back to the raw tracepoints (`probes::backend`).
//!
//! Each function is one syscall of one ABI, so it names both: a 64-bit program's `int 0x80`
//! also goes through the `__ia32_*` functions. Every function takes the user registers the
//! kernel saved (`const struct pt_regs *`); fexit adds the result after the arguments.
//! userspace lists the same functions and program names in `probes::backend::FENTRY_FUNCTIONS`.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use memtrace_common::Abi;

use crate::syscalls::{enter_syscall, exit_syscall};

/// One fentry and one fexit program per syscall function: `entry, exit, "function", ABI,
/// the syscall's number in that ABI` (what `Syscall::from_number` decodes).
macro_rules! syscall_function {
    ($($entry:ident, $exit:ident, $function:tt, $abi:ident, $number:literal;)*) => {$(
        #[fentry(function = $function)]
        pub fn $entry(ctx: FEntryContext) -> i32 {
            enter_syscall(&ctx, $number, ctx.arg(0), || Abi::$abi);
            0
        }

        #[fexit(function = $function)]
        pub fn $exit(ctx: FExitContext) -> i32 {
            exit_syscall(ctx.arg(0), $number, ctx.arg(1), || Abi::$abi);
            0
        }
    )*};
}

syscall_function! {
    x64_mmap_enter, x64_mmap_exit, "__x64_sys_mmap", X86_64, 9;
    x64_mprotect_enter, x64_mprotect_exit, "__x64_sys_mprotect", X86_64, 10;
    x64_munmap_enter, x64_munmap_exit, "__x64_sys_munmap", X86_64, 11;
    x64_brk_enter, x64_brk_exit, "__x64_sys_brk", X86_64, 12;
    x64_mremap_enter, x64_mremap_exit, "__x64_sys_mremap", X86_64, 25;
    x64_close_enter, x64_close_exit, "__x64_sys_close", X86_64, 3;
    x64_execve_enter, x64_execve_exit, "__x64_sys_execve", X86_64, 59;
    x64_memfd_enter, x64_memfd_exit, "__x64_sys_memfd_create", X86_64, 319;
    x64_execveat_enter, x64_execveat_exit, "__x64_sys_execveat", X86_64, 322;
    ia32_close_enter, ia32_close_exit, "__ia32_sys_close", I386, 6;
    ia32_execve_enter, ia32_execve_exit, "__ia32_compat_sys_execve", I386, 11;
    ia32_brk_enter, ia32_brk_exit, "__ia32_sys_brk", I386, 45;
    ia32_old_mmap_enter, ia32_old_mmap_exit, "__ia32_compat_sys_ia32_mmap", I386, 90;
    ia32_munmap_enter, ia32_munmap_exit, "__ia32_sys_munmap", I386, 91;
    ia32_mprotect_enter, ia32_mprotect_exit, "__ia32_sys_mprotect", I386, 125;
    ia32_mremap_enter, ia32_mremap_exit, "__ia32_sys_mremap", I386, 163;
    ia32_mmap2_enter, ia32_mmap2_exit, "__ia32_sys_mmap_pgoff", I386, 192;
    ia32_memfd_enter, ia32_memfd_exit, "__ia32_sys_memfd_create", I386, 356;
    ia32_execveat_enter, ia32_execveat_exit, "__ia32_compat_sys_execveat", I386, 358;
}
