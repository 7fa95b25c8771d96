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

/// Room for this many gone pids is kept however few there are: below it, giving back the
/// room a burst of exits took is not worth the reallocation.
const GONE_ROOM_FLOOR: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct Exited {
    /// Exited traced processes not yet shown to the owner, oldest exit first.
    pub(crate) queue: VecDeque<usize>,
    /// Pids of folded processes that no newer process has taken, with their exit times, for
    /// as long as their stragglers may arrive.
    gone: HashMap<u32, u64>,
    /// The same pids in the order they were folded (oldest exit first, as the queue), so that
    /// each is let go once its stragglers' time is over. Expired one by one rather than swept
    /// in bulk: a bulk sweep let the map reach thousands of entries first, and a map keeps
    /// the room it grew to (measured: 276 KiB held for good after two hours of a service
    /// forking once a second, an eighth of the agent's heap).
    order: VecDeque<(u32, u64)>,
}

impl Exited {
    /// The newest process with this pid was folded away at `exit_ns`.
    pub(crate) fn forget(&mut self, pid: u32, exit_ns: u64, now_ns: u64) {
        self.gone.insert(pid, exit_ns);
        self.order.push_back((pid, exit_ns));
        while let Some(&(oldest, exit_ns)) = self.order.front() {
            if exit_ns.saturating_add(STRAGGLER_NS) >= now_ns {
                break;
            }
            self.order.pop_front();
            // Unless the pid was taken and folded again since: that entry is the newer one's.
            if self.gone.get(&oldest) == Some(&exit_ns) {
                self.gone.remove(&oldest);
            }
        }
        // After a burst, the room it took goes back (to twice what is left, so that growing
        // again costs amortized constant time).
        let room = 2 * self.order.len().max(GONE_ROOM_FLOOR);
        if self.order.capacity() > 2 * room {
            self.order.shrink_to(room);
        }
        if self.gone.capacity() > 2 * room {
            self.gone.shrink_to(room);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A day of exits keeps only the pids whose stragglers may still come, and the room of a
    /// burst is given back.
    #[test]
    fn gone_pids_are_let_go_once_their_stragglers_time_is_over() {
        let mut exited = Exited::default();
        let second = 1_000_000_000;
        for index in 0..20_000u64 {
            let now = 1_000 * second + index * second;
            exited.forget(10_000 + (index % 5_000) as u32, now - 300 * second, now);
        }
        assert!(exited.gone.len() <= 1, "{} pids kept", exited.gone.len());
        assert!(exited.gone.capacity() <= 4 * GONE_ROOM_FLOOR);
        // A burst: 50 000 exits within the straggler time, all kept, then let go.
        let burst = 30_000 * second;
        for index in 0..50_000u64 {
            exited.forget(100_000 + index as u32, burst, burst + index);
        }
        assert!(exited.is_straggler(100_000, burst - 1));
        assert!(exited.gone.len() >= 50_000);
        exited.forget(1, burst + 20 * second, burst + 20 * second);
        assert!(!exited.is_straggler(100_000, burst - 1));
        assert!(exited.is_straggler(1, burst));
        assert!(exited.gone.capacity() <= 4 * GONE_ROOM_FLOOR);
        assert!(exited.order.capacity() <= 4 * GONE_ROOM_FLOOR);
    }
}
