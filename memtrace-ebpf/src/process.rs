//! Process lifecycle: fork (who is traced next), exec (the new image), exit (who is gone).

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_probe_read_kernel_str_bytes},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use aya_log_ebpf::debug;
use memtrace_common::{
    fork_flags, Abi, ExecMessage, ExitMessage, ForkMessage, Identity, MessageKind,
    OomVictimMessage, COMM_LEN, UNKNOWN_UID,
};

use crate::{
    emit::{current_ids, emit_comm, header, is_traced, log_enabled, reserve, submit_flags},
    in_flight,
    kernel_structs::{
        current_abi, fill_file_path, identity, offset, read, read_kernel_string, KernelPtr,
    },
    CONFIG, EXEC_FILENAMES, PENDING, THREADS, TRACED,
};

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, run by the
/// parent before the child first runs, so a followed child never misses its first syscall.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

fn try_fork(ctx: &RawTracePointContext) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) {
        return Ok(());
    }
    let parent: KernelPtr = ctx.arg(0);
    let child: KernelPtr = ctx.arg(1);
    let child_tid: u32 = read(child, offset!(task_pid))?;
    let child_tgid: u32 = read(child, offset!(task_tgid))?;
    let parent_mm: u64 = read(parent, offset!(task_mm))?;
    let child_mm: u64 = read(child, offset!(task_mm))?;

    let mut flags = 0;
    if child_tgid == tgid {
        flags |= fork_flags::THREAD;
    }
    if child_mm == parent_mm {
        flags |= fork_flags::SHARES_MM;
    }
    let follow = unsafe { core::ptr::read_volatile(&raw const CONFIG.follow_children) } != 0;
    if flags & fork_flags::THREAD == 0 {
        if follow {
            let _ = TRACED.insert(child_tgid, 1, 0);
        } else if !crate::emit::cgroups_traced() {
            // Userspace keeps no copy of a layout nothing will ever be applied to.
            flags |= fork_flags::UNTRACED;
        }
    }
    // A traced child is known by its fork message, comm included: its syscalls need not
    // announce it. (A child of the `--cgroup` is checked at its first syscall instead.)
    if flags & fork_flags::THREAD != 0 || follow {
        let _ = THREADS.insert(child_tid, 0, 0);
    }

    let child_identity = identity(child);
    let mut entry = reserve::<ForkMessage>().ok_or(0i64)?;
    entry.write(ForkMessage {
        header: header(MessageKind::Fork, current_abi(), tgid, tid),
        child_tgid,
        child_tid,
        flags,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
        child: child_identity,
    });
    entry.submit(submit_flags::<ForkMessage>());
    Ok(())
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`, run
/// once the new image is loaded and before it runs.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    let _ = try_exec(&ctx);
    0
}

fn try_exec(ctx: &RawTracePointContext) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) {
        return Ok(());
    }
    let task: KernelPtr = ctx.arg(0);
    let old_tid = ctx.arg::<u64>(1) as u32;
    let bprm: KernelPtr = ctx.arg(2);

    // The ABI the exec was called from. The task's TS_COMPAT already says the new image's
    // (the kernel's set_personality_64bit/ia32 rewrite it while loading), so it comes from
    // the parked execve entry.
    let calling_abi = match PENDING.get_ptr(old_tid) {
        // SAFETY: valid map value pointer; one field read.
        Some(pending) => Abi::from_u32(unsafe { (*pending).abi }),
        None => Abi::Unknown,
    };
    // A non-leader thread that execs takes over the leader's tid: its execve will return
    // under the new tid, so its parked entry must move too.
    if old_tid != tid {
        in_flight::thread_gone();
        let _ = THREADS.remove(old_tid);
        let _ = THREADS.insert(tid, 0, 0);
        if let Some(pending) = PENDING.get_ptr(old_tid) {
            // SAFETY: valid map value until removed; copied before removal.
            let moved = unsafe { *pending };
            let _ = PENDING.insert(tid, moved, 0);
            let _ = PENDING.remove(old_tid);
        }
        if let Some(filename) = EXEC_FILENAMES.get_ptr(old_tid) {
            // SAFETY: valid map value until removed; the map update copies it (with no
            // byte-by-byte copy through the stack, which older verifiers count per byte)
            // before the removal.
            #[allow(
                clippy::needless_borrows_for_generic_args,
                reason = "by value, the 256 bytes would be copied through the stack"
            )]
            let _ = EXEC_FILENAMES.insert(tid, unsafe { &*filename }, 0);
            let _ = EXEC_FILENAMES.remove(old_tid);
        }
    }

    // Everything fallible comes before the reservation: a reservation must be submitted or
    // discarded on every path.
    let mm: KernelPtr = read(task, offset!(task_mm))?;
    let new_abi = image_abi(bprm);
    let task_identity = identity(task);
    let mut entry = reserve::<ExecMessage>().ok_or(0i64)?;
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reservation of an ExecMessage; every field is written.
    unsafe {
        (*event).header = header(MessageKind::Exec, calling_abi, tgid, tid);
        (*event).old_tid = old_tid;
        (*event).personality = read(task, offset!(task_personality)).unwrap_or(0);
        (*event).new_abi = new_abi as u32;
        (*event)._pad = 0;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
        (*event).identity = task_identity;
        (*event).layout.start_code = read(mm, offset!(mm_start_code)).unwrap_or(0);
        (*event).layout.end_code = read(mm, offset!(mm_end_code)).unwrap_or(0);
        (*event).layout.start_data = read(mm, offset!(mm_start_data)).unwrap_or(0);
        (*event).layout.end_data = read(mm, offset!(mm_end_data)).unwrap_or(0);
        (*event).layout.start_brk = read(mm, offset!(mm_start_brk)).unwrap_or(0);
        (*event).layout.brk = read(mm, offset!(mm_brk)).unwrap_or(0);
        (*event).layout.start_stack = read(mm, offset!(mm_start_stack)).unwrap_or(0);
        (*event).layout.mmap_base = read(mm, offset!(mm_mmap_base)).unwrap_or(0);
        let stack_vma: KernelPtr = read(bprm, offset!(binprm_vma)).unwrap_or(core::ptr::null());
        (*event).layout.stack_start = read(stack_vma, offset!(vma_vm_start)).unwrap_or(0);
        (*event).layout.stack_end = read(stack_vma, offset!(vma_vm_end)).unwrap_or(0);
        if new_abi == Abi::I386 {
            fill_auxv_points::<u32>(mm, event);
        } else {
            fill_auxv_points::<u64>(mm, event);
        }
        let filename: KernelPtr = read(bprm, offset!(binprm_filename)).unwrap_or(core::ptr::null());
        read_kernel_string(filename, &mut (*event).filename);
        let interp: KernelPtr = read(bprm, offset!(binprm_interp)).unwrap_or(core::ptr::null());
        read_kernel_string(interp, &mut (*event).interp);
        (*event).exe.depth = 0;
        (*event).exe.truncated = 0;
        (*event).exe.inode = 0;
        let file: KernelPtr = read(bprm, offset!(binprm_file)).unwrap_or(core::ptr::null());
        if !file.is_null() {
            let _ = fill_file_path(file, &raw mut (*event).exe);
        }
    }
    entry.submit(submit_flags::<ExecMessage>());
    if log_enabled() {
        debug!(ctx, "memtrace: exec in traced process {}", tgid);
    }
    Ok(())
}

/// The ABI of the image just loaded, from the ELF header the kernel read (`bprm->buf`): for a
/// script, that buffer holds the interpreter's header by now.
fn image_abi(bprm: KernelPtr) -> Abi {
    let buf = offset!(binprm_buf);
    let class: u8 = read(bprm, buf + 4).unwrap_or(0);
    let machine: u16 = read(bprm, buf + 18).unwrap_or(0);
    match (class, machine) {
        (1, 3) => Abi::I386,    // ELFCLASS32, EM_386
        (2, 62) => Abi::X86_64, // ELFCLASS64, EM_X86_64
        _ => Abi::Unknown,
    }
}

/// Where the loader put things, from the auxiliary vector the kernel saved in the mm, written
/// straight into the event: a compat (ia32) exec saves it in 32-bit words (`elf_addr_t` is
/// `u32` there), hence `W`.
///
/// Shaped for older verifiers (6.1 rejected the exec program as too large): the word size is
/// decided once, outside the loop, and the values go to ring memory, which the verifier does
/// not track, rather than to stack variables, whose differing known/unknown states at each of
/// the loop's exits it would otherwise carry, unmerged, through the rest of the program.
///
/// # Safety
/// `event` must point to writable memory for an `ExecMessage` (a ring-buffer reservation).
unsafe fn fill_auxv_points<W: Copy + Into<u64>>(mm: KernelPtr, event: *mut ExecMessage) {
    const AT_NULL: u64 = 0;
    const AT_PHDR: u64 = 3;
    const AT_BASE: u64 = 7;
    const AT_ENTRY: u64 = 9;
    const AT_SYSINFO_EHDR: u64 = 33;
    let event = unsafe { &mut *event };
    event.layout.interp_base = 0;
    event.layout.entry = 0;
    event.layout.phdr = 0;
    event.vdso_base = 0;
    let auxv = offset!(mm_saved_auxv);
    let pair_size = 2 * core::mem::size_of::<W>();
    for pair in 0..24usize {
        // Key and value in one read.
        let Ok([key, value]) = read::<[W; 2]>(mm, auxv + pair * pair_size) else {
            break;
        };
        let value: u64 = value.into();
        match key.into() {
            AT_NULL => break,
            AT_PHDR => event.layout.phdr = value,
            AT_BASE => event.layout.interp_base = value,
            AT_ENTRY => event.layout.entry = value,
            AT_SYSINFO_EHDR => event.vdso_base = value,
            _ => {}
        }
    }
}

/// `sched_process_exit(struct task_struct *p, bool group_dead)`, once per exiting thread: the
/// tracepoint's form on kernels that pass `group_dead` (userspace picks this program or
/// [`sched_process_exit_legacy`] from the kernel's BTF, see memtrace's probes::kernel_differences).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    let group_dead = ctx.arg::<u64>(1) & 0xff != 0;
    let _ = try_exit(&ctx, |_| group_dead);
    0
}

/// `sched_process_exit(struct task_struct *p)`: the older form (6.12 and before), which does
/// not say whether the whole process is gone. do_exit() decrements `signal->live` before it
/// fires the tracepoint, so 0 there means the last thread is exiting. Two threads exiting at
/// once may both see 0: the process is then reported gone twice, which userspace tolerates.
/// A raw tracepoint program may not even read an argument its tracepoint lacks (attaching
/// fails with EINVAL), so this is a program of its own rather than a branch.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit_legacy(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit(&ctx, |task| {
        let signal: KernelPtr = read(task, offset!(task_signal)).unwrap_or(core::ptr::null());
        // On a failed read, keep the process traced: a missed exit costs a map slot, a false
        // one would lose the rest of the process's events.
        !signal.is_null() && read::<i32>(signal, offset!(signal_live)).is_ok_and(|live| live == 0)
    });
    0
}

fn try_exit(
    ctx: &RawTracePointContext,
    is_group_dead: impl FnOnce(KernelPtr) -> bool,
) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) {
        return Ok(());
    }
    let task: KernelPtr = ctx.arg(0);
    let group_dead = is_group_dead(task);
    // A thread killed inside a syscall never reaches sys_exit.
    in_flight::forget(tid);
    let _ = EXEC_FILENAMES.remove(tid);
    let _ = THREADS.remove(tid);
    in_flight::thread_gone();
    if group_dead {
        let _ = TRACED.remove(tgid);
    }
    let exit_code: u32 = read(task, offset!(task_exit_code)).unwrap_or(0);
    let mut entry = reserve::<ExitMessage>().ok_or(0i64)?;
    entry.write(ExitMessage {
        header: header(MessageKind::Exit, current_abi(), tgid, tid),
        exit_code,
        group_dead: u32::from(group_dead),
    });
    entry.submit(submit_flags::<ExitMessage>());
    Ok(())
}

/// `task_rename(struct task_struct *task, const char *comm)`: a task's comm changes
/// (prctl(PR_SET_NAME), pthread_setname_np, a write to /proc/PID/comm, exec). Fires in the
/// renamer's context, which need not be the renamed task: the message names the task.
#[raw_tracepoint(tracepoint = "task_rename")]
pub fn task_rename(ctx: RawTracePointContext) -> i32 {
    let _ = try_rename(&ctx);
    0
}

fn try_rename(ctx: &RawTracePointContext) -> Result<(), i64> {
    let task: KernelPtr = ctx.arg(0);
    let tgid: u32 = read(task, offset!(task_tgid))?;
    // SAFETY: the value is only tested for presence, never read.
    if unsafe { TRACED.get(tgid) }.is_none() {
        return Ok(());
    }
    let tid: u32 = read(task, offset!(task_pid))?;
    let source: KernelPtr = ctx.arg(1);
    let mut comm = [0u8; COMM_LEN];
    // SAFETY: the helper checks the kernel address and bounds the copy by `comm`.
    unsafe { bpf_probe_read_kernel_str_bytes(source, &mut comm) }.map_err(|e| e as i64)?;
    emit_comm(task, tgid, tid, comm);
    Ok(())
}

/// `oom:mark_victim(struct task_struct *task, uid_t uid)`, the tracepoint's form since Linux
/// 6.8: the victim, with its comm, identity and uid. Attached only when asked for
/// (`ProbeOptions::oom_victims`); userspace picks this program or the older forms' from the
/// kernel's BTF, as for `sched_process_exit`.
#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn oom_victim(ctx: RawTracePointContext) -> i32 {
    let uid = ctx.arg::<u64>(1) as u32;
    let _ = emit_oom_victim_task(ctx.arg(0), uid);
    0
}

/// `oom:mark_victim(struct task_struct *task)`.
#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn oom_victim_no_uid(ctx: RawTracePointContext) -> i32 {
    let _ = emit_oom_victim_task(ctx.arg(0), UNKNOWN_UID);
    0
}

/// `oom:mark_victim(int pid)`: older kernels name the victim by its pid alone.
#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn oom_victim_pid(ctx: RawTracePointContext) -> i32 {
    let pid = ctx.arg::<u64>(0) as u32;
    if let Some(mut entry) = reserve::<OomVictimMessage>() {
        entry.write(OomVictimMessage {
            header: header(MessageKind::OomVictim, Abi::Unknown, 0, pid),
            uid: UNKNOWN_UID,
            has_task: 0,
            comm: [0; COMM_LEN],
            identity: Identity::default(),
        });
        entry.submit(submit_flags::<OomVictimMessage>());
    }
    0
}

fn emit_oom_victim_task(task: KernelPtr, uid: u32) -> Result<(), i64> {
    let tgid: u32 = read(task, offset!(task_tgid))?;
    let tid: u32 = read(task, offset!(task_pid))?;
    let comm: [u8; COMM_LEN] = read(task, offset!(task_comm)).unwrap_or([0; COMM_LEN]);
    let victim = identity(task);
    let mut entry = reserve::<OomVictimMessage>().ok_or(0i64)?;
    entry.write(OomVictimMessage {
        header: header(MessageKind::OomVictim, Abi::Unknown, tgid, tid),
        uid,
        has_task: 1,
        comm,
        identity: victim,
    });
    entry.submit(submit_flags::<OomVictimMessage>());
    Ok(())
}
