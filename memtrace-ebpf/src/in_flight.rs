//! Syscalls between their entry and their exit.
//!
//! Exit needs what entry saw: the time (for the latency), the ABI and which syscall (to pair
//! them), for execve also the arguments and the filename. A hash map keyed by tid costs an
//! insert, a lookup and a delete per syscall; a per-CPU slot costs almost nothing and serves
//! the common case, where a syscall exits on the CPU it entered with no other traced syscall
//! entering there in between. The slot holds only the 16 bytes of a [`Parked`] syscall: the
//! arguments are still in the user registers at exit. Everything else (a slot already taken,
//! execve, whose exit runs in the new image and which the exec tracepoint also looks up by
//! tid) goes through [`PENDING`] as a whole [`PendingSyscall`].

use core::sync::atomic::AtomicU64;

use aya_ebpf::{macros::map, maps::PerCpuArray};
use memtrace_common::Syscall;

use crate::{PendingSyscall, PENDING};

/// A slot taken longer than this belongs to a task that moved to another CPU (or died): it
/// may be reused.
const STALE_NS: u64 = 1_000_000_000;

/// What exit needs of a syscall's entry, besides the arguments.
#[derive(Clone, Copy)]
pub struct Parked {
    /// A [`Syscall`].
    pub syscall: u32,
    /// An [`memtrace_common::Abi`]: the ABI at entry (a successful ia32 → x86_64 execve
    /// returns in the new image).
    pub abi: u32,
    /// `memtrace_common::syscall_flags`.
    pub flags: u32,
    /// Non-zero: the arguments are in [`PENDING`] (execve), not in the registers.
    pub args_parked: u32,
    /// 0: entry not seen.
    pub entry_ns: u64,
}

impl Parked {
    pub const NONE: Self = Self {
        syscall: 0,
        abi: 0,
        flags: 0,
        args_parked: 0,
        entry_ns: 0,
    };
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Slot {
    /// The thread whose syscall is parked here; 0 when free.
    tid: u32,
    /// The syscall's number, which its exit compares with its own: the same number is the same
    /// syscall (execve, whose number may change, never comes here).
    number: u32,
    entry_ns: u64,
    /// A [`Syscall`] and an ABI, as in [`Parked`], in 16 bits each.
    syscall: u16,
    abi: u16,
    /// The traced thread that last entered a syscall on this CPU, and [`THREAD_EXITS`] then:
    /// while no traced thread has exited since, that tid is still that traced thread (a tid is
    /// reused only after its thread is gone), and its next syscall here needs no lookup.
    seen_tid: u32,
    seen_exits: u64,
}

/// Exits of traced threads (and execs that gave a thread another tid) so far: each one makes
/// every CPU's [`Slot::seen_tid`] stale.
static THREAD_EXITS: AtomicU64 = AtomicU64::new(0);

/// Whether `tid` is the traced thread this CPU last saw enter a syscall, with no traced
/// thread gone since: the common case of a traced thread making syscall after syscall, which
/// then costs no map lookup.
#[inline(always)]
pub fn seen_here(tid: u32) -> bool {
    slot().is_some_and(|slot| slot.seen_tid == tid && slot.seen_exits == thread_exits())
}

/// [`THREAD_EXITS`] now. A plain aligned load, which is atomic (LLVM's BPF backend has no
/// atomic load to select).
#[inline(always)]
fn thread_exits() -> u64 {
    // SAFETY: a pointer to the static counter.
    unsafe { core::ptr::read_volatile(THREAD_EXITS.as_ptr()) }
}

/// Remembers `tid`, found traced by a lookup, for [`seen_here`].
#[inline(always)]
pub fn remember_seen(tid: u32) {
    if let Some(slot) = slot() {
        slot.seen_exits = thread_exits();
        slot.seen_tid = tid;
    }
}

/// A traced thread is gone (or changed its tid): no CPU may take its tid for traced any more.
#[inline(always)]
pub fn thread_gone() {
    // An atomic add (BPF_XADD, in every kernel's instruction set) so that two exits at once
    // both count: `AtomicU64` offers no `fetch_add` on this target, the intrinsic does.
    // SAFETY: a pointer to the static counter, only ever accessed atomically.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            THREAD_EXITS.as_ptr(),
            1,
        );
    }
}

#[map]
static IN_FLIGHT: PerCpuArray<Slot> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn slot() -> Option<&'static mut Slot> {
    // SAFETY: the per-CPU slot is this CPU's; programs run with migration disabled, and a
    // program is not re-entered on its CPU while it runs.
    IN_FLIGHT.get_ptr_mut(0).map(|slot| unsafe { &mut *slot })
}

/// Parks a syscall other than execve at entry. Fails only when the fallback map is full.
#[inline(always)]
pub fn park(tid: u32, number: i64, syscall: Syscall, abi: u32, entry_ns: u64) -> Result<(), i64> {
    if let Some(slot) = slot() {
        let stale = slot.entry_ns.saturating_add(STALE_NS) < entry_ns;
        if slot.tid == 0 || slot.tid == tid || stale {
            slot.number = number as u32;
            slot.syscall = syscall as u16;
            slot.abi = abi as u16;
            slot.entry_ns = entry_ns;
            slot.tid = tid;
            return Ok(());
        }
    }
    park_in_map(
        tid,
        &PendingSyscall {
            syscall: syscall as u32,
            flags: 0,
            abi,
            _pad: 0,
            entry_ns,
            args: [0; 6],
        },
    )
}

/// Parks a syscall in [`PENDING`]: an execve with its arguments, or a syscall whose CPU's
/// slot was taken.
#[inline(always)]
pub fn park_in_map(tid: u32, pending: &PendingSyscall) -> Result<(), i64> {
    PENDING.insert(tid, pending, 0).map_err(i64::from)
}

/// Takes back into `out` what entry parked for this thread in this CPU's slot, if it is
/// there and is the syscall `number` (an entry of another is stale: it is dropped). (Writing
/// through `&mut` rather than returning an `Option` keeps LLVM from moving uninitialized
/// registers on the empty path, which the verifier rejects.)
#[inline(always)]
pub fn take_from_slot(tid: u32, number: i64, out: &mut Parked) -> bool {
    let Some(slot) = slot() else {
        return false;
    };
    if slot.tid != tid {
        return false;
    }
    slot.tid = 0;
    if slot.number != number as u32 {
        return false;
    }
    out.syscall = u32::from(slot.syscall);
    out.abi = u32::from(slot.abi);
    out.flags = 0;
    out.args_parked = 0;
    out.entry_ns = slot.entry_ns;
    true
}

/// Takes back into `out` what entry parked for this thread in the fallback map. An execve's
/// entry stays there until its exit has read the arguments ([`forget_exec`]).
#[inline(always)]
pub fn take_from_map(tid: u32, out: &mut Parked) -> bool {
    let Some(parked) = PENDING.get_ptr(tid) else {
        return false;
    };
    // SAFETY: a map value pointer, read before the entry is removed.
    let parked = unsafe { &*parked };
    out.syscall = parked.syscall;
    out.abi = parked.abi;
    out.flags = parked.flags;
    out.entry_ns = parked.entry_ns;
    if is_exec(parked.syscall) {
        out.args_parked = 1;
    } else {
        out.args_parked = 0;
        let _ = PENDING.remove(tid);
    }
    true
}

/// Removes an execve's entry once its exit is reported.
#[inline(always)]
pub fn forget_exec(tid: u32) {
    let _ = PENDING.remove(tid);
}

#[inline(always)]
pub fn is_exec(syscall: u32) -> bool {
    syscall == Syscall::Execve as u32 || syscall == Syscall::Execveat as u32
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
