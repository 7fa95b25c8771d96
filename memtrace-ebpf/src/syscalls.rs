//! Syscall entry and exit (`raw_syscalls:sys_enter` / `sys_exit` as raw tracepoints, and the
//! exec entries' `sched_prepare_exec`).
//!
//! Exit does the work: it reads the arguments from the user registers, which these syscalls
//! leave intact (old_mmap's block from user memory), pairs them with the result and emits one
//! record. Records that carry a file (mmap of an fd, memfd_create) resolve it at exit, when the
//! fd is known to be valid. An entry matters only for an exec, whose exit runs in the new image
//! (its arguments and file name are read and parked at entry), and with `--latency`, where
//! every traced entry parks its start time (`in_flight`). Exec entries are parked at
//! `sched_prepare_exec` where the kernel has it (6.10), and `sys_enter` is then not attached.

use aya_ebpf::{
    bindings::{pt_regs, task_struct, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel_buf, bpf_probe_read_user, bpf_probe_read_user_buf,
        bpf_probe_read_user_str_bytes, generated::bpf_task_pt_regs,
    },
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use memtrace_common::{
    ipc_call, lost_slot, syscall_errno, syscall_flags, Abi, MessageKind, StackSampleMessage,
    Syscall, SyscallDetailMessage, SyscallMessage, IO_SETUP_RING_ARG, STACK_RING_BYTES,
};

use crate::{
    emit::{
        count_lost, current_ids, header, log_enabled, reserve, submit_flags, syscall_latency,
        thread_is_traced,
    },
    in_flight::{self, Parked},
    kernel_structs::{current_abi, file_of_fd, fill_file_path, read, KernelPtr},
    PendingSyscall, CONFIG, EXEC_FILENAMES, FILENAME_SCRATCH, PENDING, STACKS,
};

const MAP_ANONYMOUS: u64 = 0x20;

/// One of the user registers the kernel saved, loaded straight from its `struct pt_regs`.
///
/// At exit `regs` is a BTF-typed pointer (the argument of `tp_btf/sys_exit` and of fexit):
/// the verifier checks each such load against the kernel's struct. The registers are read
/// where they are used rather than copied whole onto the stack: the copy's 168 bytes pushed
/// sys_exit past the 512 bytes that verifiers before 6.13 allow a program's whole call chain
/// (6.12: "combined stack size of 2 calls is 592. Too large").
macro_rules! user_reg {
    ($regs:expr, $field:ident) => {{
        let regs: *const pt_regs = $regs;
        // SAFETY: `regs` is the kernel's `struct pt_regs` as the verifier knows it (BTF), or a
        // copy of it on the stack; either way the verifier checks the load.
        unsafe { (*regs).$field }
    }};
}

// These two programs run for every syscall of every process on the machine. Each first tests
// the syscall number alone, before any map lookup, helper call or ABI read, so that a process
// making other syscalls pays for the kernel's hook and nothing more (`cargo xtask bench`
// measures it against empty programs on the same hooks).

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let number: i64 = ctx.arg(1);
    // Without `--latency` only an exec's entry matters: every other syscall, ours included,
    // leaves at this compare.
    let ours = if syscall_latency() {
        Syscall::may_be_traced(number)
    } else {
        Syscall::may_be_exec(number)
    };
    if ours {
        let regs: KernelPtr = ctx.arg(0);
        enter_syscall(&ctx, number, regs, current_abi);
    }
    0
}

/// `sched_prepare_exec(struct task_struct *task, struct linux_binprm *bprm)` (Linux 6.10 and
/// later): an exec past its point of no return, while the task is still the caller (its user
/// registers, its memory, its TS_COMPAT are the caller's until the new image is loaded). On a
/// kernel that has it, without `--latency`, this parks an execve's entry instead of
/// `sys_enter`, which is then not attached at all: a traced mmap pays one program, and every
/// other syscall of the machine one program's filter rather than two. A failed exec never gets
/// here; its exit still has the caller's registers and is reported from them
/// ([`unparked_syscall`]).
#[btf_tracepoint(function = "sched_prepare_exec")]
pub fn sched_prepare_exec(ctx: BtfTracePointContext) -> i32 {
    let task: *mut task_struct = ctx.arg(0);
    // SAFETY: `task` is the tracepoint's BTF-typed task; the helper returns its saved user
    // registers (a BTF pointer the loads below are checked against).
    let regs = unsafe { bpf_task_pt_regs(task) } as usize as *const pt_regs;
    if regs.is_null() {
        return 0;
    }
    // An exec the kernel itself started (a usermode helper's) made no syscall: its number
    // is no exec's, and `try_enter_syscall` turns it away.
    let number = user_reg!(regs, orig_rax) as i64;
    if Syscall::may_be_exec(number) {
        enter_syscall(&ctx, number, regs.cast(), current_abi);
    }
    0
}

/// A BTF tracepoint rather than a raw one: its `regs` argument is typed, so the syscall number
/// is one direct load; a raw tracepoint needs `bpf_probe_read_kernel` for it, which measured
/// as much as the rest of a bystander's filter.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    let regs: *const pt_regs = ctx.arg(0);
    let number = user_reg!(regs, orig_rax) as i64;
    if Syscall::may_be_traced(number) {
        exit_syscall(regs, number, ctx.arg(1), current_abi);
    }
    0
}

/// A syscall's entry, from any backend: `number` in the ABI `abi()` says (called only for a
/// traced thread: the ABI costs a kernel read on the raw tracepoint), `regs` the user
/// registers the kernel saved.
#[inline(always)]
pub fn enter_syscall<C: EbpfContext>(
    ctx: &C,
    number: i64,
    regs: KernelPtr,
    abi: impl FnOnce() -> Abi,
) {
    let _ = try_enter_syscall(ctx, number, regs, abi);
}

/// Parks the syscall, its ABI and the time: the arguments are read at exit, where the user
/// registers still hold them (the kernel preserves them for these syscalls). execve is the
/// exception: its exit runs in the new image, so its arguments and filename are read now.
#[inline(always)]
fn try_enter_syscall<C: EbpfContext>(
    ctx: &C,
    number: i64,
    regs: KernelPtr,
    abi: impl FnOnce() -> Abi,
) -> Result<(), i64> {
    // The ABI first: without `--latency` a munmap (11, ia32's execve number) leaves here.
    let abi = abi();
    let Some(syscall) = Syscall::from_number(abi, number) else {
        return Ok(());
    };
    let latency = syscall_latency();
    if !syscall.is_exec() && !latency {
        return Ok(());
    }
    let (tgid, tid) = current_ids();
    if !thread_is_traced_here(tgid, tid) {
        return Ok(());
    }
    // An exec's entry comes here without `--latency` too; its latency is then unknown (0), as
    // every other call's.
    let entry_ns = if latency {
        // SAFETY: no arguments; CLOCK_MONOTONIC.
        unsafe { bpf_ktime_get_ns() }
    } else {
        0
    };
    let parked = if syscall.is_exec() {
        park_exec(regs, syscall, abi, tid, entry_ns)
    } else {
        in_flight::park(tid, number, syscall, abi as u32, entry_ns)
    };
    if parked.is_err() {
        count_lost(lost_slot::PENDING_FULL);
        if log_enabled() {
            warn!(ctx, "memtrace: in-flight syscall table full, tid {}", tid);
        }
    }
    Ok(())
}

/// Whether the current thread is traced: first the per-CPU memory of the traced thread last
/// seen here (no lookup), then [`thread_is_traced`]'s lookup, remembered for the next call.
#[inline(always)]
fn thread_is_traced_here(tgid: u32, tid: u32) -> bool {
    if in_flight::seen_here(tid) {
        return true;
    }
    if !thread_is_traced(tgid, tid) {
        return false;
    }
    in_flight::remember_seen(tid);
    true
}

/// An execve's entry: its arguments and filename, while the caller's memory still exists.
#[inline(always)]
fn park_exec(
    regs: KernelPtr,
    syscall: Syscall,
    abi: Abi,
    tid: u32,
    entry_ns: u64,
) -> Result<(), i64> {
    let saved: pt_regs = read(regs, 0)?;
    let mut pending = PendingSyscall {
        syscall: syscall as u32,
        flags: 0,
        abi: abi as u32,
        _pad: 0,
        entry_ns,
        args: read_args(&raw const saved, abi),
    };
    park_exec_filename(&mut pending, tid, usize::from(syscall == Syscall::Execveat));
    in_flight::park_in_map(tid, &pending)
}

/// The six syscall arguments: from the user registers, in the ABI's register order (old_mmap's
/// six values from the block its one argument points to), or for an execve from its entry.
#[inline(always)]
fn syscall_args(regs: *const pt_regs, parked: &Parked, tid: u32) -> Result<[u64; 6], i64> {
    if parked.args_parked != 0 {
        let entry = PENDING.get_ptr(tid).ok_or(0i64)?;
        // SAFETY: a map value pointer; the entry is removed only after the exit is reported.
        return Ok(unsafe { (*entry).args });
    }
    let abi = Abi::from_u32(parked.abi);
    let mut args = read_args(regs, abi);
    if parked.syscall == Syscall::OldMmap as u32 {
        // SAFETY: the helper checks the user address.
        let block: [u32; 6] =
            unsafe { bpf_probe_read_user(args[0] as *const [u32; 6]) }.map_err(|e| e as i64)?;
        for (arg, value) in args.iter_mut().zip(block) {
            *arg = u64::from(value);
        }
    }
    Ok(args)
}

/// The six syscall arguments from the user registers, in the ABI's register order.
#[inline(always)]
fn read_args(regs: *const pt_regs, abi: Abi) -> [u64; 6] {
    match abi {
        // int 0x80 / sysenter / syscall from compat mode: ebx, ecx, edx, esi, edi, ebp.
        Abi::I386 => [
            user_reg!(regs, rbx) & 0xffff_ffff,
            user_reg!(regs, rcx) & 0xffff_ffff,
            user_reg!(regs, rdx) & 0xffff_ffff,
            user_reg!(regs, rsi) & 0xffff_ffff,
            user_reg!(regs, rdi) & 0xffff_ffff,
            user_reg!(regs, rbp) & 0xffff_ffff,
        ],
        // The syscall instruction clobbers rcx, so the fourth argument travels in r10.
        _ => [
            user_reg!(regs, rdi),
            user_reg!(regs, rsi),
            user_reg!(regs, rdx),
            user_reg!(regs, r10),
            user_reg!(regs, r8),
            user_reg!(regs, r9),
        ],
    }
}

/// Reads the exec filename while the caller's memory still exists (it lives on the stack, so
/// it is resident) and parks it for exit.
fn park_exec_filename(pending: &mut PendingSyscall, tid: u32, arg: usize) {
    let Some(&address) = pending.args.get(arg) else {
        return;
    };
    let Some(buffer) = FILENAME_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours until this program returns; the helper
    // checks the user address and bounds the copy by the buffer.
    let buffer = unsafe { &mut *buffer };
    if unsafe { bpf_probe_read_user_str_bytes(address as *const u8, buffer) }.is_ok()
        && EXEC_FILENAMES.insert(tid, buffer, 0).is_ok()
    {
        pending.flags |= syscall_flags::HAS_STRING;
    }
}

/// A syscall's exit, from any backend: `regs` the user registers the kernel saved (BTF-typed:
/// see [`user_reg`]), `number` the syscall's number in the ABI `abi()` says (called only for
/// a syscall whose entry was not seen), `ret` the result.
///
/// An fexit program knows its syscall and ABI: given them as constants, the compiler keeps
/// of this function only that syscall's path, so each fexit program is small and quick to
/// verify; the tracepoint passes what the registers and the task say.
///
/// Returns nothing on purpose: early returns of a `Result` from here let LLVM leave the
/// error payload's register uninitialized, which the verifier rejects.
///
/// Everything it calls that carries real work is inlined too (`#[inline(always)]` on
/// `emit_syscall`, `emit_stack_sample`, `fill_file_path`, `Syscall::from_number`): one frame
/// rather than a chain of calls. 6.1's verifier stops tracking which values matter at a call
/// to a subprogram and treats them all as mattering, which defeats its pruning of equivalent
/// states: as calls, sys_exit cost it 800k of its 1M-instruction budget (41 s to load under
/// emulation, each fexit program as much); inlined, 15 s.
///
/// The common path (the entry parked in this CPU's slot) makes three helper calls besides the
/// ring's: the ids, the time and the ring's fill level. No comm: see `MessageHeader`.
#[inline(always)]
pub fn exit_syscall(regs: *const pt_regs, number: i64, ret: i64, abi: impl FnOnce() -> Abi) {
    let (tgid, tid) = current_ids();
    let mut parked = Parked::NONE;
    // A parked entry means the thread is traced; checking the per-CPU slot first spares the
    // common case the traced-thread lookup. Either can be stale: a slot whose syscall exited
    // on another CPU, a map entry whose exit this program missed (a run it skipped while
    // another was preempted on the same CPU). Trust an entry only for the syscall this exit
    // is for, or a futex's exit would be decoded as the munmap parked before it. Without
    // `--latency` only execs are parked, always in the map: the slot is never filled, and
    // neither it nor the map is looked at for the other calls.
    let latency = syscall_latency();
    let paired = (latency && in_flight::take_from_slot(tid, number, &mut parked))
        || ((latency || Syscall::may_be_exec(number))
            && thread_is_traced_here(tgid, tid)
            && in_flight::take_from_map(tid, &mut parked)
            && is_same_syscall(&parked, number));
    // Entry not parked (without `--latency`, the common case), not seen (the process was
    // attached mid-syscall) or its record lost (the task moved to another CPU and its slot was
    // reused): the arguments are still in the user registers; only the latency is unknown.
    if !paired
        && !(thread_is_traced_here(tgid, tid) && unparked_syscall(number, abi(), ret, &mut parked))
    {
        return;
    }
    let args = syscall_args(regs, &parked, tid);
    if parked.args_parked != 0 {
        in_flight::forget_exec(tid);
    }
    // An old_mmap block out of reach: the call is not reported.
    if let Ok(mut args) = args {
        let mut ret = ret;
        if !results_in_user_memory(&mut parked, &mut args, &mut ret) {
            return;
        }
        if let Ok(timestamp_ns) = emit_syscall(&parked, &args, tgid, tid, ret) {
            if wants_stack_sample(&parked, &args, ret) {
                emit_stack_sample(regs, Abi::from_u32(parked.abi), tgid, tid, timestamp_ns);
            }
        }
    }
    if parked.flags & syscall_flags::HAS_STRING != 0 {
        let _ = EXEC_FILENAMES.remove(tid);
    }
}

/// What the syscalls that answer through user memory made, read at exit into the message: the
/// ring address io_setup wrote through `ctx_idp` (into `args[2]`), and ia32's ipc(2) turned
/// into the shmat or shmdt it made (shmat's address is written through its fourth argument).
/// False for an ipc call memtrace does not report.
#[inline(always)]
fn results_in_user_memory(parked: &mut Parked, args: &mut [u64; 6], ret: &mut i64) -> bool {
    let ia32 = parked.abi == Abi::I386 as u32;
    if parked.syscall == Syscall::IoSetup as u32 {
        args[IO_SETUP_RING_ARG] = 0;
        if *ret == 0 {
            args[IO_SETUP_RING_ARG] = read_user_word(args[1], ia32);
        }
        return true;
    }
    if parked.syscall != Syscall::Ipc as u32 {
        return true;
    }
    let [call, first, second, third, ptr, _] = *args;
    // The call's low 16 bits; the high ones carry a version (ipc/syscall.c).
    match call & 0xffff {
        ipc_call::SHMAT => {
            parked.syscall = Syscall::Shmat as u32;
            *args = [first, ptr, second, 0, 0, 0];
            if *ret == 0 {
                *ret = read_user_word(third, true) as i64;
            }
        }
        ipc_call::SHMDT => {
            parked.syscall = Syscall::Shmdt as u32;
            *args = [ptr, 0, 0, 0, 0, 0];
        }
        _ => return false,
    }
    parked.flags |= syscall_flags::VIA_IPC;
    true
}

/// A `u32` (ia32) or `u64` the syscall wrote at `address` in user memory; 0 if out of reach.
#[inline(always)]
fn read_user_word(address: u64, ia32: bool) -> u64 {
    // SAFETY: the helper checks the user address.
    unsafe {
        if ia32 {
            bpf_probe_read_user(address as *const u32).map_or(0, u64::from)
        } else {
            bpf_probe_read_user(address as *const u64).unwrap_or(0)
        }
    }
}

/// Whether the parked entry is the one of the syscall `number` exits.
#[inline(always)]
fn is_same_syscall(parked: &Parked, number: i64) -> bool {
    if Syscall::from_number(Abi::from_u32(parked.abi), number)
        .is_some_and(|syscall| syscall as u32 == parked.syscall)
    {
        return true;
    }
    // An exec that changed the ABI returns with the new ABI's execve number: the kernel sets
    // it when it switches personality (x86_64 → i386: 11, i386 → x86_64: 59).
    let exec = |abi| {
        matches!(
            Syscall::from_number(abi, number),
            Some(Syscall::Execve | Syscall::Execveat)
        )
    };
    in_flight::is_exec(parked.syscall) && (exec(Abi::X86_64) || exec(Abi::I386))
}

/// A traced syscall seen only at its exit (`entry_ns` 0: unknown), into `out`.
#[inline(always)]
fn unparked_syscall(number: i64, abi: Abi, ret: i64, out: &mut Parked) -> bool {
    let Some(syscall) = Syscall::from_number(abi, number) else {
        return false;
    };
    // A successful exec's registers belong to the new image by now (the exec event tells
    // about it); a failed one returns to the caller, registers and memory intact, which is how
    // a failed exec is seen where nothing parks its entry (`sched_prepare_exec` sees only
    // those past the point of no return).
    if syscall.is_exec() && syscall_errno(ret).is_none() {
        return false;
    }
    out.syscall = syscall as u32;
    out.abi = abi as u32;
    out.flags = 0;
    out.args_parked = 0;
    out.entry_ns = 0;
    true
}

/// Calls that create memory, large enough to be worth a stack (`ProbeConfig::stack_min_bytes`).
#[inline(always)]
fn wants_stack_sample(parked: &Parked, args: &[u64; 6], ret: i64) -> bool {
    let threshold = unsafe { core::ptr::read_volatile(&raw const CONFIG.stack_min_bytes) };
    if threshold == u64::MAX || syscall_errno(ret).is_some() {
        return false;
    }
    let created = match Syscall::from_u32(parked.syscall) {
        Some(Syscall::Mmap | Syscall::Mmap2 | Syscall::OldMmap) => args[1],
        Some(Syscall::Mremap) => args[2],
        // A memfd is rare and names what will be mapped: always worth its stack.
        Some(Syscall::MemfdCreate) => u64::MAX,
        // A brk that moved the break to where it was asked: the heap grew or shrank.
        Some(Syscall::Brk) if args[0] != 0 && ret as u64 == args[0] => u64::MAX,
        _ => 0,
    };
    created >= threshold
}

/// The user registers and as much of the stack above the stack pointer as can be read (a
/// main thread's stack may end less than a full sample above it), in the stack ring, stamped
/// with its syscall's `timestamp_ns` so that userspace pairs the two. A full stack ring costs
/// this sample only, counted as not sampled.
/// Inlined: see [`exit_syscall`].
#[inline(always)]
fn emit_stack_sample(regs: *const pt_regs, abi: Abi, tgid: u32, tid: u32, timestamp_ns: u64) {
    let Some(mut entry) = STACKS.reserve::<StackSampleMessage>(0) else {
        count_lost(lost_slot::STACK_NOT_SAMPLED);
        return;
    };
    let event = entry.as_mut_ptr();
    let (ip, sp, bp) = (
        user_reg!(regs, rip),
        user_reg!(regs, rsp),
        user_reg!(regs, rbp),
    );
    // SAFETY: `event` is a reservation of a StackSampleMessage; userspace reads `len` bytes of
    // `stack`, which are written here, and every other field.
    unsafe {
        (*event).header = header(MessageKind::StackSample, abi, tgid, tid);
        (*event).header.timestamp_ns = timestamp_ns;
        (*event).ip = ip;
        (*event).sp = sp;
        (*event).bp = bp;
        (*event)._pad = 0;
        // All of the stack from `sp` up to the buffer's size, or as much as lies before the
        // end of the stack's mapping. A read that crosses the mapping's end fails whole, and
        // where main's frame sits within the buffer's size of the stack's top (ASLR and the
        // environment's size decide) a fixed shorter fallback cut the stack before `_start`
        // in some runs and not in others. A mapping ends on a page boundary, so the readable
        // length is one of the page ends above `sp`: trying those, longest first, copies
        // exactly up to the end.
        use memtrace_common::STACK_SAMPLE_BYTES as BYTES;
        const PAGE: u64 = 4096;
        const PAGES: u64 = BYTES as u64 / PAGE;
        let source = sp as *const u8;
        let stack = &mut (*event).stack;
        let mut copied = 0;
        // The page ends above `sp`, from the first beyond the buffer down to the nearest.
        let mut end = PAGE - (sp & (PAGE - 1)) + PAGES * PAGE;
        for _ in 0..=PAGES {
            // Masked as well as bounded, so the verifier knows the length stays in `stack`.
            let len = (end.min(BYTES as u64) as usize) & (2 * BYTES - 1);
            if len == 0 || len > BYTES {
                break;
            }
            if bpf_probe_read_user_buf(source, &mut stack[..len]).is_ok() {
                copied = len as u32;
                break;
            }
            end = end.wrapping_sub(PAGE);
        }
        (*event).len = copied;
    }
    // Like the event ring, wake the reader only once a quarter of the ring waits.
    let flags = if STACKS.query(BPF_RB_AVAIL_DATA as u64) >= u64::from(STACK_RING_BYTES / 4) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}

/// Emits the syscall's record; returns its timestamp, for a stack sample to name it by.
/// Inlined: see [`exit_syscall`].
#[inline(always)]
fn emit_syscall(
    parked: &Parked,
    args: &[u64; 6],
    tgid: u32,
    tid: u32,
    ret: i64,
) -> Result<u64, i64> {
    let file_fd = file_descriptor_of_interest(parked, args, ret);
    let read_at_exit = string_to_read_at_exit(parked, args, ret);
    let has_string = parked.flags & syscall_flags::HAS_STRING != 0 || read_at_exit != NO_STRING;
    if file_fd == NO_FILE && !has_string {
        let mut entry = reserve::<SyscallMessage>().ok_or(0i64)?;
        // SAFETY: a reservation of a SyscallMessage; every field is written.
        let timestamp_ns =
            unsafe { fill_syscall(entry.as_mut_ptr(), parked, args, tgid, tid, ret) };
        entry.submit(submit_flags::<SyscallMessage>());
        return Ok(timestamp_ns);
    }

    let mut entry = reserve::<SyscallDetailMessage>().ok_or(0i64)?;
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to a reservation of the right size; every field we hand to
    // userspace is written below (`file.components` beyond `file.depth` are never read).
    let timestamp_ns =
        unsafe { fill_syscall(&raw mut (*event).syscall, parked, args, tgid, tid, ret) };
    unsafe {
        if parked.flags & syscall_flags::HAS_STRING != 0 {
            // One bounded helper copy: a plain assignment compiles to a 256-step byte loop,
            // which pushed sys_exit past the 1M-instruction budget of 6.1's verifier.
            let copied = match EXEC_FILENAMES.get_ptr(tid) {
                Some(parked) => {
                    bpf_probe_read_kernel_buf(parked.cast::<u8>(), &mut (*event).string).is_ok()
                }
                None => false,
            };
            if !copied {
                (*event).string[0] = 0;
            }
        } else if read_at_exit != NO_STRING {
            let address = read_at_exit as *const u8;
            if bpf_probe_read_user_str_bytes(address, &mut (*event).string).is_ok() {
                (*event).syscall.flags |= syscall_flags::HAS_STRING;
            }
        }
        (*event).file.depth = 0;
        (*event).file.truncated = 0;
        (*event).file.inode = 0;
        if file_fd != NO_FILE {
            if let Ok(file) = file_of_fd(file_fd) {
                if fill_file_path(file, &raw mut (*event).file).is_ok() {
                    (*event).syscall.flags |= syscall_flags::HAS_FILE;
                }
            }
        }
        (*event).syscall.header.kind = MessageKind::SyscallDetail as u32;
    }
    entry.submit(submit_flags::<SyscallDetailMessage>());
    Ok(timestamp_ns)
}

/// Writes the syscall's message straight into its reservation (built on the stack and copied,
/// its 80 bytes cost a tenth of the exit program's time), stamped now; returns the stamp.
///
/// # Safety
/// `message` must point to writable memory for a `SyscallMessage` (a ring-buffer reservation).
#[inline(always)]
unsafe fn fill_syscall(
    message: *mut SyscallMessage,
    parked: &Parked,
    args: &[u64; 6],
    tgid: u32,
    tid: u32,
    ret: i64,
) -> u64 {
    let message = unsafe { &mut *message };
    message.header = header(MessageKind::Syscall, Abi::from_u32(parked.abi), tgid, tid);
    message.syscall = parked.syscall;
    message.flags = parked.flags;
    message.args = *args;
    message.ret = ret;
    message.entry_ns = parked.entry_ns;
    message.header.timestamp_ns
}

// "None" of the two functions below, as plain values rather than `Option`s: LLVM loads an
// `Option`'s payload from the stack before testing which variant it holds, and on the `None`
// path that slot was never written. 5.10's verifier refuses any read of unwritten stack
// ("invalid read from stack"); later ones allow it to privileged programs.

/// No string to read at exit (a null address, which could not be read anyway).
const NO_STRING: u64 = 0;
/// No file to name (never a descriptor: they fit in an `int`).
const NO_FILE: u32 = u32::MAX;

/// The user address of a string argument that entry could not read, if it can be read now
/// ([`NO_STRING`] if not). Entry often cannot: a string literal in a page not yet faulted in
/// is out of reach of a program that may not fault, but by exit the kernel has read it in. A
/// successful execve's old memory is gone by exit; entry read that one (it lives on the
/// stack).
#[inline(always)]
fn string_to_read_at_exit(parked: &Parked, args: &[u64; 6], ret: i64) -> u64 {
    if parked.flags & syscall_flags::HAS_STRING != 0 {
        return NO_STRING;
    }
    match Syscall::from_u32(parked.syscall) {
        Some(Syscall::MemfdCreate) => args[0],
        Some(Syscall::Execve) if ret != 0 => args[0],
        Some(Syscall::Execveat) if ret != 0 => args[1],
        _ => NO_STRING,
    }
}

/// The fd whose file the record should name ([`NO_FILE`] if none): mmap's fd argument for a
/// successful file mapping, or the new memfd.
#[inline(always)]
fn file_descriptor_of_interest(parked: &Parked, args: &[u64; 6], ret: i64) -> u32 {
    if syscall_errno(ret).is_some() {
        return NO_FILE;
    }
    match Syscall::from_u32(parked.syscall) {
        Some(Syscall::Mmap | Syscall::Mmap2 | Syscall::OldMmap) => {
            let fd = args[4] as u32 as i32;
            if args[3] & MAP_ANONYMOUS == 0 && fd >= 0 {
                fd as u32
            } else {
                NO_FILE
            }
        }
        Some(Syscall::MemfdCreate) => ret as u32,
        _ => NO_FILE,
    }
}
