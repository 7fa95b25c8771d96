//! What makes the agent save its history: the kinds of trigger, what fired, and the rate
//! limit that turns a storm into one capture and a count.

use std::collections::HashMap;

/// A kind of trigger (`--no-trigger KIND` turns one off).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum TriggerKind {
    /// A brk that could not move the break (seed 003: bash starved by sshd's layout).
    BrkFailed,
    /// An mmap or mremap that failed with ENOMEM.
    MmapFailed,
    /// A process's map count above 90% of `vm.max_map_count`.
    MapCount,
    /// A group the growth model calls growing for at least `--growing-for`.
    Growing,
    /// A process's allocated memory crossing `--trigger-size` (off until given).
    Size,
    /// The OOM killer choosing a victim (`oom:mark_victim`).
    Oom,
    /// Kernel memory rising steadily while no process's memory explains it.
    Kernel,
    /// SIGUSR1: a capture now.
    Signal,
}

impl TriggerKind {
    pub const ALL: [TriggerKind; 8] = [
        Self::BrkFailed,
        Self::MmapFailed,
        Self::MapCount,
        Self::Growing,
        Self::Size,
        Self::Oom,
        Self::Kernel,
        Self::Signal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BrkFailed => "brk-failed",
            Self::MmapFailed => "mmap-failed",
            Self::MapCount => "map-count",
            Self::Growing => "growing",
            Self::Size => "size",
            Self::Oom => "oom",
            Self::Kernel => "kernel",
            Self::Signal => "signal",
        }
    }
}

/// A trigger that fired: what, for whom, when, and what was seen, in one line.
#[derive(Clone, Debug, PartialEq)]
pub struct Fired {
    pub kind: TriggerKind,
    /// The process it is about; 0 for the system (a signal, the kernel).
    pub pid: u32,
    pub comm: String,
    /// CLOCK_MONOTONIC ns of the event or evaluation that fired it.
    pub time_ns: u64,
    /// What was seen, for the log and the capture's `trigger.json`.
    pub detail: String,
    /// The figures behind it (a growing group's rate, a failed call's size), for tools.
    pub figures: serde_json::Value,
}

/// At most one capture per trigger kind and process in `cooldown_ns`; what fires meanwhile is
/// counted and told once the cooldown is over. The signal is never limited: a person asked.
#[derive(Debug)]
pub struct RateLimit {
    cooldown_ns: u64,
    /// (kind, pid) → when it last captured, and what was skipped since.
    last: HashMap<(TriggerKind, u32), Limited>,
}

#[derive(Clone, Copy, Debug)]
struct Limited {
    captured_ns: u64,
    skipped: u64,
}

/// What the rate limit says of a trigger that fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Capture it; `skipped_before` triggers of its kind and process were skipped since the
    /// last capture, to be told with this one.
    Capture { skipped_before: u64 },
    /// Skipped; the first skip since its last capture (worth a log line), or a later one.
    Skipped { first: bool },
}

impl RateLimit {
    pub fn new(cooldown_ns: u64) -> Self {
        Self {
            cooldown_ns,
            last: HashMap::new(),
        }
    }

    pub fn judge(&mut self, fired: &Fired) -> Verdict {
        if fired.kind == TriggerKind::Signal {
            return Verdict::Capture { skipped_before: 0 };
        }
        let key = (fired.kind, fired.pid);
        match self.last.get_mut(&key) {
            Some(limited)
                if fired.time_ns < limited.captured_ns.saturating_add(self.cooldown_ns) =>
            {
                limited.skipped += 1;
                Verdict::Skipped {
                    first: limited.skipped == 1,
                }
            }
            Some(limited) => {
                let skipped_before = limited.skipped;
                *limited = Limited {
                    captured_ns: fired.time_ns,
                    skipped: 0,
                };
                Verdict::Capture { skipped_before }
            }
            None => {
                self.last.insert(
                    key,
                    Limited {
                        captured_ns: fired.time_ns,
                        skipped: 0,
                    },
                );
                Verdict::Capture { skipped_before: 0 }
            }
        }
    }

    /// Forgets a process gone from the model: a new process may take its pid.
    pub fn forget(&mut self, pid: u32) {
        self.last.retain(|&(_, limited_pid), _| limited_pid != pid);
    }

    /// The skips of cooldowns that ended by `now_ns`, to be told: (kind, pid, skipped).
    pub fn ended_cooldowns(&mut self, now_ns: u64) -> Vec<(TriggerKind, u32, u64)> {
        let cooldown = self.cooldown_ns;
        let mut told = Vec::new();
        self.last.retain(|&(kind, pid), limited| {
            let over = now_ns >= limited.captured_ns.saturating_add(cooldown);
            if over && limited.skipped > 0 {
                told.push((kind, pid, limited.skipped));
            }
            !over
        });
        told.sort_unstable();
        told
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fired(kind: TriggerKind, pid: u32, time_s: u64) -> Fired {
        Fired {
            kind,
            pid,
            comm: "bash".into(),
            time_ns: time_s * 1_000_000_000,
            detail: String::new(),
            figures: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_storm_gives_one_capture_then_a_count() {
        let mut limit = RateLimit::new(600_000_000_000);
        assert_eq!(
            limit.judge(&fired(TriggerKind::BrkFailed, 7, 10)),
            Verdict::Capture { skipped_before: 0 }
        );
        assert_eq!(
            limit.judge(&fired(TriggerKind::BrkFailed, 7, 11)),
            Verdict::Skipped { first: true }
        );
        for second in 12..500 {
            assert_eq!(
                limit.judge(&fired(TriggerKind::BrkFailed, 7, second)),
                Verdict::Skipped { first: false }
            );
        }
        // Another process, another kind: their own limits.
        assert!(matches!(
            limit.judge(&fired(TriggerKind::BrkFailed, 8, 12)),
            Verdict::Capture { .. }
        ));
        assert!(matches!(
            limit.judge(&fired(TriggerKind::MmapFailed, 7, 12)),
            Verdict::Capture { .. }
        ));
        assert_eq!(limit.ended_cooldowns(100_000_000_000), Vec::new());
        assert_eq!(
            limit.ended_cooldowns(700_000_000_000),
            vec![(TriggerKind::BrkFailed, 7, 489)]
        );
        // Once told, the cooldown is over: the next one captures.
        assert_eq!(
            limit.judge(&fired(TriggerKind::BrkFailed, 7, 701)),
            Verdict::Capture { skipped_before: 0 }
        );
    }

    #[test]
    fn the_signal_is_never_limited() {
        let mut limit = RateLimit::new(600_000_000_000);
        for second in 0..25 {
            assert_eq!(
                limit.judge(&fired(TriggerKind::Signal, 0, second)),
                Verdict::Capture { skipped_before: 0 }
            );
        }
    }
}
