//! Exited processes, and folding the older ones away.
//!
//! A daemon traced for a day (sshd and its sessions, a build farm's workers) leaves thousands
//! of exited processes. The model keeps each one's layout at exit for its report, so without
//! a bound memtrace's memory would grow with every process come and gone. Its owner therefore
//! folds exited processes beyond the most recent few away
//! ([`Model::fold_exited`](super::Model::fold_exited)): each is shown to it once, oldest exit
//! first, so that its report can be added to totals elsewhere, and then forgotten here (unless
//! the owner keeps it in full, as the example of a finding).
//!
//! Folding depends only on the events applied, so a replay folds exactly what the live
//! session folded.

use std::collections::{HashMap, VecDeque};

/// What the model's owner decided about an exited process it was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fold {
    /// Its report went into totals: the model forgets it.
    Away,
    /// It stays in full (the example of something); it is not shown again.
    Keep,
}

/// How long after its exit an event of a folded process may still arrive: records wait in the
/// rings for a drain (50 ms) and behind a busy consumer, and stack samples travel in a ring of
/// their own. Within this, an event of a folded pid is a straggler, not a new process.
const STRAGGLER_NS: u64 = 10_000_000_000;

/// Gone pids are swept of old entries once there are this many (and then whenever their
/// number doubles): a sweep is rare, and the map stays within twice what is recent.
const GONE_SWEEP_FLOOR: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct Exited {
    /// Exited traced processes not yet shown to the owner, oldest exit first.
    pub(crate) queue: VecDeque<usize>,
    /// Pids of folded processes that no newer process has taken, with their exit times.
    gone: HashMap<u32, u64>,
    gone_after_sweep: usize,
}

impl Exited {
    /// The newest process with this pid was folded away at `exit_ns`.
    pub(crate) fn forget(&mut self, pid: u32, exit_ns: u64, now_ns: u64) {
        self.gone.insert(pid, exit_ns);
        if self.gone.len() >= 2 * self.gone_after_sweep.max(GONE_SWEEP_FLOOR) {
            self.gone
                .retain(|_, exit_ns| exit_ns.saturating_add(STRAGGLER_NS) >= now_ns);
            self.gone_after_sweep = self.gone.len();
        }
    }

    /// Whether an event of `pid` made at `time_ns` belongs to a process folded away.
    pub(crate) fn is_straggler(&self, pid: u32, time_ns: u64) -> bool {
        self.gone
            .get(&pid)
            .is_some_and(|&exit_ns| time_ns <= exit_ns)
    }

    /// A new process has this pid.
    pub(crate) fn reused(&mut self, pid: u32) {
        self.gone.remove(&pid);
    }
}
