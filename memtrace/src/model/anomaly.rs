//! Successes the kernel cannot return. Such a record can only come from a decoding fault (an
//! exit paired with another syscall's entry: a futex's `munmap(0x119518b4, 393) = 0`), so the
//! model refuses it: the layout stays as it was, and the report counts it.

use crate::event::{Abi, Syscall, SyscallEvent};
use crate::model::region::PAGE_SIZE;

/// Examples kept per process; the count goes on.
pub const KEPT_EXAMPLES: usize = 16;

/// One refused record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    pub time_ns: u64,
    pub tid: u32,
    pub syscall: Syscall,
    pub args: [u64; 6],
    pub ret: i64,
    /// Why the kernel could not have returned this.
    pub reason: &'static str,
}

/// A process's refused records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Anomalies {
    pub count: u64,
    /// The first [`KEPT_EXAMPLES`].
    pub examples: Vec<Anomaly>,
}

impl Anomalies {
    pub(crate) fn record(&mut self, anomaly: Anomaly) {
        self.count += 1;
        if self.examples.len() < KEPT_EXAMPLES {
            self.examples.push(anomaly);
        }
    }
}

/// Why a successful `record` is impossible, if it is: the kernel checks these before it
/// changes anything and fails with EINVAL.
pub(crate) fn impossible_success(abi: Abi, record: &SyscallEvent) -> Option<&'static str> {
    let unaligned = |address: u64| !address.is_multiple_of(PAGE_SIZE);
    let result = match abi {
        Abi::I386 => record.ret as u64 & u64::from(u32::MAX),
        _ => record.ret as u64,
    };
    let [address, len, third, ..] = record.args;
    match record.syscall {
        Syscall::Munmap
        | Syscall::Mprotect
        | Syscall::Mremap
        | Syscall::PkeyMprotect
        | Syscall::Mseal
        | Syscall::Shmdt
            if unaligned(address) =>
        {
            Some("unaligned address")
        }
        Syscall::Munmap if len == 0 => Some("zero length"),
        // mremap's new length; an old length of 0 is legal (it duplicates a shared mapping).
        Syscall::Mremap if third == 0 => Some("zero length"),
        Syscall::Mmap | Syscall::Mmap2 | Syscall::OldMmap if len == 0 => Some("zero length"),
        Syscall::Mmap | Syscall::Mmap2 | Syscall::OldMmap | Syscall::Mremap | Syscall::Shmat
            if unaligned(result) =>
        {
            Some("unaligned result")
        }
        // mprotect of 0 bytes at an aligned address succeeds and changes nothing.
        _ => None,
    }
}
