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
    // Every way a mapping is made (#23).
    x64_shmat_enter, x64_shmat_exit, "__x64_sys_shmat", X86_64, 30;
    x64_shmdt_enter, x64_shmdt_exit, "__x64_sys_shmdt", X86_64, 67;
    x64_io_setup_enter, x64_io_setup_exit, "__x64_sys_io_setup", X86_64, 206;
    x64_io_destroy_enter, x64_io_destroy_exit, "__x64_sys_io_destroy", X86_64, 207;
    x64_remap_enter, x64_remap_exit, "__x64_sys_remap_file_pages", X86_64, 216;
    x64_pkey_mprot_enter, x64_pkey_mprot_exit, "__x64_sys_pkey_mprotect", X86_64, 329;
    x64_mseal_enter, x64_mseal_exit, "__x64_sys_mseal", X86_64, 462;
    ia32_ipc_enter, ia32_ipc_exit, "__ia32_compat_sys_ipc", I386, 117;
    ia32_io_setup_enter, ia32_io_setup_exit, "__ia32_compat_sys_io_setup", I386, 245;
    ia32_io_destroy_enter, ia32_io_destroy_exit, "__ia32_sys_io_destroy", I386, 246;
    ia32_remap_enter, ia32_remap_exit, "__ia32_sys_remap_file_pages", I386, 257;
    ia32_pkey_mprot_enter, ia32_pkey_mprot_exit, "__ia32_sys_pkey_mprotect", I386, 380;
    ia32_shmat_enter, ia32_shmat_exit, "__ia32_compat_sys_shmat", I386, 397;
    ia32_shmdt_enter, ia32_shmdt_exit, "__ia32_sys_shmdt", I386, 398;
    ia32_mseal_enter, ia32_mseal_exit, "__ia32_sys_mseal", I386, 462;
}
