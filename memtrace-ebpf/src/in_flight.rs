//! Syscalls between their entry and their exit.
//!
//! Exit needs what entry saw (the time, the ABI, for execve the filename). A hash map keyed by
//! tid costs an insert, a lookup and a delete per syscall; a per-CPU slot costs almost
//! nothing and serves the common case, where a syscall exits on the CPU it entered with no
//! other traced syscall entering there in between. Everything else (a slot already taken,
//! execve, which the exec tracepoint also looks up by tid) goes through [`PENDING`].

use aya_ebpf::{macros::map, maps::PerCpuArray};
use memtrace_common::Syscall;

use crate::{PendingSyscall, PENDING};

/// A slot taken longer than this belongs to a task that moved to another CPU (or died): it
/// may be reused.
const STALE_NS: u64 = 1_000_000_000;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Slot {
    /// The thread whose syscall is parked here; 0 when free.
    tid: u32,
    _pad: u32,
    pending: PendingSyscall,
}

#[map]
static IN_FLIGHT: PerCpuArray<Slot> = PerCpuArray::with_max_entries(1, 0);

fn slot() -> Option<&'static mut Slot> {
    // SAFETY: the per-CPU slot is this CPU's; programs run with migration disabled, and a
    // program is not re-entered on its CPU while it runs.
    IN_FLIGHT.get_ptr_mut(0).map(|slot| unsafe { &mut *slot })
}

/// Parks a syscall at entry. Fails only when the fallback map is full.
pub fn park(tid: u32, pending: &PendingSyscall) -> Result<(), i64> {
    let exec =
        pending.syscall == Syscall::Execve as u32 || pending.syscall == Syscall::Execveat as u32;
    if !exec {
        if let Some(slot) = slot() {
            let stale = slot.pending.entry_ns.saturating_add(STALE_NS) < pending.entry_ns;
            if slot.tid == 0 || slot.tid == tid || stale {
                slot.pending = *pending;
                slot.tid = tid;
                return Ok(());
            }
        }
    }
    PENDING.insert(tid, pending, 0).map_err(i64::from)
}

/// Takes back into `out` what entry parked for this thread in this CPU's slot, if it is
/// there. (Writing through `&mut` rather than returning an `Option` keeps LLVM from moving
/// uninitialized registers on the empty path, which the verifier rejects.)
pub fn take_from_slot(tid: u32, out: &mut PendingSyscall) -> bool {
    let Some(slot) = slot() else {
        return false;
    };
    if slot.tid != tid {
        return false;
    }
    slot.tid = 0;
    *out = slot.pending;
    true
}

/// Takes back into `out` what entry parked for this thread in the fallback map.
pub fn take_from_map(tid: u32, out: &mut PendingSyscall) -> bool {
    let Some(parked) = PENDING.get_ptr(tid) else {
        return false;
    };
    // SAFETY: a map value pointer, copied before the entry is removed.
    *out = unsafe { *parked };
    let _ = PENDING.remove(tid);
    true
}

/// A thread that exits inside a syscall never reaches its sys_exit.
pub fn forget(tid: u32) {
    if let Some(slot) = slot() {
        if slot.tid == tid {
            slot.tid = 0;
        }
    }
    let _ = PENDING.remove(tid);
}
