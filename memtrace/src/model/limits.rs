//! What bounds a process's mappings and the calls refused at a bound: the limits the session
//! told (`vm.max_map_count`, `RLIMIT_AS`) and the mmap and mremap calls that failed with
//! ENOMEM. Exhaustion is a finding of its own, growth or not: the next mapping fails.

use crate::event::{LimitsEvent, Syscall};

/// Failures kept per process as examples (with the layout's size when each happened); the
/// count goes on.
pub const KEPT_FAILURES: usize = 8;

/// An mmap or mremap the kernel refused with ENOMEM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFailure {
    pub time_ns: u64,
    pub syscall: Syscall,
    /// The length asked for (mremap: the new length).
    pub asked_bytes: u64,
    /// The layout when it failed: its bytes, and its mappings as the kernel counts them.
    pub mapped_bytes: u64,
    pub map_count: u64,
}

/// A process's mmap and mremap calls refused with ENOMEM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapFailures {
    pub count: u64,
    pub largest_ask: u64,
    /// The first [`KEPT_FAILURES`].
    pub examples: Vec<MapFailure>,
}

impl MapFailures {
    /// Whether another example is kept: the caller measures the layout only then, so a program
    /// failing in a loop costs a count, not a walk of its layout per call.
    pub(crate) fn wants_example(&self) -> bool {
        self.examples.len() < KEPT_FAILURES
    }

    pub(crate) fn record(&mut self, failure: MapFailure) {
        self.count += 1;
        self.largest_ask = self.largest_ask.max(failure.asked_bytes);
        if self.wants_example() {
            self.examples.push(failure);
        }
    }

    /// A failure past the kept examples: counted, its ask remembered.
    pub(crate) fn count_only(&mut self, asked_bytes: u64) {
        self.count += 1;
        self.largest_ask = self.largest_ask.max(asked_bytes);
    }
}

/// The limits and failures of one process, boxed in it: most processes fail nothing, and
/// every byte of a process is paid per process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    /// As the session last told them (absent from recordings made before they were told).
    pub limits: Option<LimitsEvent>,
    pub failures: MapFailures,
}
