//! Reserving ring-buffer messages: headers, the traced-process and traced-thread checks, comms,
//! and loss accounting.

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    },
    macros::map,
    maps::{ring_buf::RingBufEntry, PerCpuArray},
};
use memtrace_common::{
    lost_slot, Abi, CommMessage, MessageHeader, MessageKind, COMM_LEN, MAX_CGROUPS,
};

use crate::{
    kernel_structs::{current_task, identity, KernelPtr},
    CONFIG, EVENTS, LOST, THREADS, TRACED,
};

/// The current task's (tgid, tid).
#[inline(always)]
pub fn current_ids() -> (u32, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
}

/// Whether the current task's process is traced: it is in [`TRACED`], or it runs in the
/// `--cgroup` cgroup, which puts it in [`TRACED`]. Once there it stays traced until it exits,
/// even if it leaves the cgroup: its layout so far is known, and dropping it mid-way would
/// leave a half-told history. (Its children are then traced only with `--follow`.)
///
/// The cgroup test comes first and needs no map: one helper call (4.18 and later, allowed in
/// every tracing program) and a compare. Only a member pays the lookup that keeps [`TRACED`]
/// up to date, as any traced process pays one lookup.
#[inline(always)]
pub fn is_traced(tgid: u32) -> bool {
    if cgroups_traced() && in_traced_cgroup() {
        // SAFETY: the value is only tested for presence, never read.
        if unsafe { TRACED.get(tgid) }.is_none() {
            let _ = TRACED.insert(tgid, 1, 0);
        }
        return true;
    }
    // SAFETY: the value is only tested for presence, never read.
    unsafe { TRACED.get(tgid) }.is_some()
}

/// Whether the session traces cgroups (`--cgroup`).
#[inline(always)]
pub fn cgroups_traced() -> bool {
    // SAFETY: CONFIG is read-only data the loader wrote; the first slot is set when any is.
    unsafe { core::ptr::read_volatile((&raw const CONFIG.cgroup_ids).cast::<u64>()) != 0 }
}

/// Whether the current task runs in one of the `--cgroup` cgroups: one helper call, then a
/// compare per cgroup given (the slots after the last are 0).
#[inline(always)]
fn in_traced_cgroup() -> bool {
    // SAFETY: no arguments; the id of the task's cgroup in the v2 hierarchy.
    let current = unsafe { bpf_get_current_cgroup_id() };
    let ids = (&raw const CONFIG.cgroup_ids).cast::<u64>();
    let mut index = 0;
    while index < MAX_CGROUPS {
        // SAFETY: `index` is below the array's length; CONFIG is read-only data.
        let id = unsafe { core::ptr::read_volatile(ids.add(index)) };
        if id == 0 {
            return false;
        }
        if id == current {
            return true;
        }
        index += 1;
    }
    false
}

/// Whether the current thread belongs to a traced process: the syscall programs' test, one
/// lookup by tid for a thread already seen. A thread not in [`THREADS`] yet (one that was there
/// before tracing began, or whose process just joined the `--cgroup`) is checked by its process
/// ([`is_traced`]), added, and its comm sent, so that userspace knows every thread's name
/// without the header carrying it.
#[inline(always)]
pub fn thread_is_traced(tgid: u32, tid: u32) -> bool {
    // SAFETY: the value is only tested for presence, never read.
    if unsafe { THREADS.get(tid) }.is_some() {
        return true;
    }
    first_seen(tgid, tid)
}

/// A thread of a traced process seen for the first time. Kept out of line: it runs once per
/// thread, and inlined it would grow every syscall program's hot path.
#[inline(never)]
fn first_seen(tgid: u32, tid: u32) -> bool {
    if !is_traced(tgid) {
        return false;
    }
    // A full table costs a comm message per syscall of the threads that did not fit, never a
    // wrong name.
    let _ = THREADS.insert(tid, 0, 0);
    emit_comm(
        current_task(),
        tgid,
        tid,
        bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    );
    true
}

/// Tells userspace the comm and identity of `task`, thread `tid` of process `tgid`.
pub fn emit_comm(task: KernelPtr, tgid: u32, tid: u32, comm: [u8; COMM_LEN]) {
    let identity = identity(task);
    let Some(mut entry) = reserve::<CommMessage>() else {
        return;
    };
    entry.write(CommMessage {
        header: header(MessageKind::Comm, Abi::Unknown, tgid, tid),
        comm,
        identity,
    });
    entry.submit(submit_flags::<CommMessage>());
}

/// Counts an event that could not be delivered, so userspace can report it.
pub fn count_lost(slot: u32) {
    if let Some(counter) = LOST.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot: no other program runs on this CPU while we hold it.
        unsafe { *counter += 1 };
    }
}

/// Reserves a record in the ring buffer, counting a loss when it is full.
pub fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count_lost(lost_slot::RING_FULL);
    }
    entry
}

/// Bytes submitted on this CPU since it last woke the reader (`ProbeConfig::wakeup_bytes`).
#[map]
static UNWOKEN_BYTES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Submit flags for a message of `T`: wake the reader only once this CPU has submitted its
/// share of the threshold (`ProbeConfig::wakeup_bytes`).
#[inline(always)]
pub fn submit_flags<T>() -> u64 {
    let Some(unwoken) = UNWOKEN_BYTES.get_ptr_mut(0) else {
        return BPF_RB_FORCE_WAKEUP as u64;
    };
    // SAFETY: this CPU's slot; a program is not re-entered on its CPU while it runs.
    let unwoken = unsafe { &mut *unwoken };
    *unwoken += core::mem::size_of::<T>() as u64;
    let threshold = unsafe { core::ptr::read_volatile(&raw const CONFIG.wakeup_bytes) };
    if *unwoken >= threshold {
        *unwoken = 0;
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Whether every traced syscall's entry is stamped (`--latency`, `ProbeConfig::syscall_latency`).
#[inline(always)]
pub fn syscall_latency() -> bool {
    unsafe { core::ptr::read_volatile(&raw const CONFIG.syscall_latency) != 0 }
}

/// The header for a message about the thread `tid`, stamped now.
#[inline(always)]
pub fn header(kind: MessageKind, abi: Abi, tgid: u32, tid: u32) -> MessageHeader {
    MessageHeader {
        kind: kind as u32,
        abi: abi as u32,
        // SAFETY: no arguments; returns CLOCK_MONOTONIC.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        tid,
    }
}

pub fn log_enabled() -> bool {
    unsafe { core::ptr::read_volatile(&raw const CONFIG.log_enabled) != 0 }
}
