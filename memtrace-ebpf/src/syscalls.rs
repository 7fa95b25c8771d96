//! Syscall entry and exit (`raw_syscalls:sys_enter` / `sys_exit` as raw tracepoints).
//!
//! Entry decides whether the syscall is one of ours (by ABI, then number), reads its arguments
//! and any string argument while the user memory is still there, and parks them in `PENDING`.
//! Exit pairs them with the result and emits one record. Records that carry a file (mmap of an
//! fd, memfd_create) or a string resolve them at exit, when the fd is known to be valid.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use aya_log_ebpf::warn;
use memtrace_common::{
    lost_slot, syscall_flags, Abi, EventKind, Syscall, SyscallDetailEvent, SyscallEvent,
};

use crate::{
    emit::{count_lost, current_ids, header, is_traced, log_enabled, reserve, submit_flags},
    kernel::{current_abi, file_of_fd, fill_file_path, read, KernelPtr},
    PendingSyscall, PENDING, SCRATCH,
};

const MAP_ANONYMOUS: u64 = 0x20;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let _ = try_sys_enter(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_sys_exit(&ctx);
    0
}

fn try_sys_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) {
        return Ok(());
    }
    let abi = current_abi();
    let number: i64 = ctx.arg(1);
    let Some(syscall) = Syscall::from_number(abi, number) else {
        return Ok(());
    };
    let regs: KernelPtr = ctx.arg(0);

    let pending = SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch slot, exclusively ours until this program returns.
    let pending = unsafe { &mut *pending };
    pending.syscall = syscall as u32;
    pending.flags = 0;
    pending.abi = abi as u32;
    // SAFETY: no arguments; CLOCK_MONOTONIC.
    pending.entry_ns = unsafe { bpf_ktime_get_ns() };
    pending.args = read_args(regs, abi)?;

    match syscall {
        Syscall::OldMmap => {
            // old_mmap passes one pointer to a block of six 32-bit values.
            let block: [u32; 6] =
                unsafe { bpf_probe_read_user(pending.args[0] as *const [u32; 6]) }
                    .map_err(|e| e as i64)?;
            for (arg, value) in pending.args.iter_mut().zip(block) {
                *arg = u64::from(value);
            }
        }
        Syscall::Execve => read_user_string(pending, 0),
        Syscall::Execveat => read_user_string(pending, 1),
        _ => {}
    }

    if PENDING.insert(tid, pending, 0).is_err() {
        count_lost(lost_slot::PENDING_FULL);
        if log_enabled() {
            warn!(ctx, "memtrace: in-flight syscall table full, tid {}", tid);
        }
    }
    Ok(())
}

/// The six syscall arguments from the user registers, in the ABI's register order.
fn read_args(regs: KernelPtr, abi: Abi) -> Result<[u64; 6], i64> {
    let regs: pt_regs = read(regs, 0)?;
    Ok(match abi {
        // int 0x80 / sysenter / syscall from compat mode: ebx, ecx, edx, esi, edi, ebp.
        Abi::I386 => [
            regs.rbx & 0xffff_ffff,
            regs.rcx & 0xffff_ffff,
            regs.rdx & 0xffff_ffff,
            regs.rsi & 0xffff_ffff,
            regs.rdi & 0xffff_ffff,
            regs.rbp & 0xffff_ffff,
        ],
        // The syscall instruction clobbers rcx, so the fourth argument travels in r10.
        _ => [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9],
    })
}

fn read_user_string(pending: &mut PendingSyscall, arg: usize) {
    let Some(&address) = pending.args.get(arg) else {
        return;
    };
    // SAFETY: the helper checks the user address and bounds the copy by the buffer.
    if unsafe { bpf_probe_read_user_str_bytes(address as *const u8, &mut pending.string) }.is_ok() {
        pending.flags |= syscall_flags::HAS_STRING;
    }
}

fn try_sys_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    let Some(pending) = PENDING.get_ptr(tid) else {
        return Ok(());
    };
    // SAFETY: a map value pointer, valid until we remove the entry below.
    let pending = unsafe { &*pending };
    let ret: i64 = ctx.arg(1);
    let result = emit_syscall(pending, tgid, tid, ret);
    let _ = PENDING.remove(tid);
    result
}

fn emit_syscall(pending: &PendingSyscall, tgid: u32, tid: u32, ret: i64) -> Result<(), i64> {
    let abi = Abi::from_u32(pending.abi);
    let file_fd = file_descriptor_of_interest(pending, ret);
    let core = SyscallEvent {
        header: header(EventKind::Syscall, abi, tgid, tid),
        syscall: pending.syscall,
        flags: pending.flags,
        args: pending.args,
        ret,
        entry_ns: pending.entry_ns,
    };

    let read_at_exit = string_to_read_at_exit(pending, ret);
    let has_string = pending.flags & syscall_flags::HAS_STRING != 0 || read_at_exit.is_some();
    if file_fd.is_none() && !has_string {
        let mut entry = reserve::<SyscallEvent>().ok_or(0i64)?;
        entry.write(core);
        entry.submit(submit_flags());
        return Ok(());
    }

    let mut entry = reserve::<SyscallDetailEvent>().ok_or(0i64)?;
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to a reservation of the right size; every field we hand to
    // userspace is written below (`file.components` beyond `file.depth` are never read).
    unsafe {
        (*event).syscall = core;
        (*event).string = pending.string;
        if let Some(address) = read_at_exit {
            if bpf_probe_read_user_str_bytes(address as *const u8, &mut (*event).string).is_ok() {
                (*event).syscall.flags |= syscall_flags::HAS_STRING;
            }
        }
        (*event).file.depth = 0;
        (*event).file.truncated = 0;
        (*event).file.inode = 0;
        if let Some(fd) = file_fd {
            if let Ok(file) = file_of_fd(fd) {
                if fill_file_path(file, &raw mut (*event).file).is_ok() {
                    (*event).syscall.flags |= syscall_flags::HAS_FILE;
                }
            }
        }
        (*event).syscall.header.kind = EventKind::SyscallDetail as u32;
    }
    entry.submit(submit_flags());
    Ok(())
}

/// The user address of a string argument that entry could not read, if it can be read now.
/// Entry often cannot: a string literal in a page not yet faulted in is out of reach of a
/// program that may not fault, but by exit the kernel has read it in. A successful execve's
/// old memory is gone by exit; entry read that one (it lives on the stack).
fn string_to_read_at_exit(pending: &PendingSyscall, ret: i64) -> Option<u64> {
    if pending.flags & syscall_flags::HAS_STRING != 0 {
        return None;
    }
    match Syscall::from_u32(pending.syscall)? {
        Syscall::MemfdCreate => Some(pending.args[0]),
        Syscall::Execve if ret != 0 => Some(pending.args[0]),
        Syscall::Execveat if ret != 0 => Some(pending.args[1]),
        _ => None,
    }
}

/// The fd whose file the record should name: mmap's fd argument for a successful file
/// mapping, or the new memfd.
fn file_descriptor_of_interest(pending: &PendingSyscall, ret: i64) -> Option<u32> {
    if (-4095..0).contains(&ret) {
        return None;
    }
    match Syscall::from_u32(pending.syscall)? {
        Syscall::Mmap | Syscall::Mmap2 | Syscall::OldMmap => {
            let fd = pending.args[4] as u32 as i32;
            (pending.args[3] & MAP_ANONYMOUS == 0 && fd >= 0).then_some(fd as u32)
        }
        Syscall::MemfdCreate => Some(ret as u32),
        _ => None,
    }
}
