//! The agent's view of growth: each live process's groups sampled at a fixed period over a
//! sliding window, judged by the report's own test of a steady rise.
//!
//! The model's timeline samples a whole session on a step that doubles as the session grows
//! (a day is sampled every quarter of an hour), which suits a report of the session but not a
//! trigger that must see five minutes of growth after five days: the agent keeps its own
//! window of recent samples instead, a few dozen per group, and forgets processes gone.

use std::collections::{HashMap, VecDeque};

use crate::model::{
    timeline::{GroupKey, Totals},
    Model, RegionKind,
};
use crate::report::growth::{rise_of, Rise};

/// Samples kept per group: the window is this many periods long.
const WINDOW_SAMPLES: usize = 32;

/// Kinds a program loads rather than allocates (the report's rule): never a leak.
const LOADED: [RegionKind; 3] = [RegionKind::File, RegionKind::Stack, RegionKind::Vdso];

/// A group found growing long enough to trigger.
#[derive(Clone, Debug, PartialEq)]
pub struct Growing {
    pub pid: u32,
    pub comm: String,
    /// `memfd:doublemapper`, `anon`…
    pub group: String,
    pub bytes_per_s: u64,
    pub since_ns: u64,
    pub grown_bytes: u64,
    pub bytes_now: u64,
}

#[derive(Debug)]
pub struct GrowthTracker {
    /// How long a rise must last before it triggers.
    growing_for_ns: u64,
    period_ns: u64,
    last_sample_ns: Option<u64>,
    processes: HashMap<u32, Series>,
}

/// One process's groups over the window.
#[derive(Debug, Default)]
struct Series {
    times_ns: VecDeque<u64>,
    /// Bytes per group, one value per time (0 where the group had none).
    groups: HashMap<String, VecDeque<u64>>,
}

impl GrowthTracker {
    /// Samples often enough to see `growing_for` as a steady rise of many points: a
    /// sixteenth of it, at least a second and at most a minute.
    pub fn new(growing_for_ns: u64) -> Self {
        let period_ns = (growing_for_ns / 16).clamp(1_000_000_000, 60_000_000_000);
        Self {
            growing_for_ns,
            period_ns,
            last_sample_ns: None,
            processes: HashMap::new(),
        }
    }

    /// Samples every live traced process if a period has passed, and returns the groups that
    /// have risen steadily for at least `growing_for` (each time it samples: the caller's
    /// rate limit decides what becomes a capture).
    pub fn sample(&mut self, model: &Model, now_ns: u64) -> Vec<Growing> {
        if self
            .last_sample_ns
            .is_some_and(|last| now_ns < last.saturating_add(self.period_ns))
        {
            return Vec::new();
        }
        self.last_sample_ns = Some(now_ns);
        let mut live = HashMap::with_capacity(self.processes.len());
        let mut growing = Vec::new();
        for view in model.live_processes() {
            let process = view.process();
            if !process.traced() {
                continue;
            }
            let pid = process.pid();
            let mut series = self.processes.remove(&pid).unwrap_or_default();
            series.push(now_ns, &Totals::of(view.layout()));
            for (group, rise) in series.rises() {
                if now_ns.saturating_sub(rise.since_ns) >= self.growing_for_ns {
                    growing.push(Growing {
                        pid,
                        comm: process.comm(),
                        bytes_now: series.groups[&group].back().copied().unwrap_or(0),
                        group,
                        bytes_per_s: rise.rate,
                        since_ns: rise.since_ns,
                        grown_bytes: rise.grown,
                    });
                }
            }
            live.insert(pid, series);
        }
        // Processes gone (or no longer traced) leave nothing behind.
        self.processes = live;
        growing
    }

    /// The rate of every group rising steadily now, whatever for how long (for the metrics).
    pub fn rates(&self) -> impl Iterator<Item = (u32, String, u64)> + '_ {
        self.processes.iter().flat_map(|(&pid, series)| {
            series
                .rises()
                .map(move |(group, rise)| (pid, group, rise.rate))
        })
    }
}

impl Series {
    fn push(&mut self, time_ns: u64, totals: &Totals) {
        if self.times_ns.len() == WINDOW_SAMPLES {
            self.times_ns.pop_front();
            for values in self.groups.values_mut() {
                values.pop_front();
            }
        }
        self.times_ns.push_back(time_ns);
        let samples = self.times_ns.len();
        for (key, &(_, bytes)) in &totals.groups {
            let GroupKey::Named(kind, _) = key else {
                continue;
            };
            if LOADED.contains(kind) {
                continue;
            }
            let Some(label) = key.label() else {
                continue;
            };
            let values = self.groups.entry(label).or_default();
            // A group new in this sample had none before.
            while values.len() + 1 < samples {
                values.push_back(0);
            }
            values.push_back(bytes);
        }
        for values in self.groups.values_mut() {
            if values.len() < samples {
                values.push_back(0);
            }
        }
        // Groups that are gone from the whole window are forgotten.
        self.groups
            .retain(|_, values| values.iter().any(|&bytes| bytes > 0));
    }

    fn rises(&self) -> impl Iterator<Item = (String, Rise)> + '_ {
        self.groups.iter().filter_map(|(group, values)| {
            let points: Vec<(u64, u64)> = self
                .times_ns
                .iter()
                .copied()
                .zip(values.iter().copied())
                .collect();
            Some((group.clone(), rise_of(&points)?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::*;

    const PID: u32 = 900;
    const SECOND: u64 = 1_000_000_000;

    /// A memfd leak of 1 MiB a second is growing once it has grown for `growing_for`; churn of
    /// the same size is not.
    #[test]
    fn a_steady_leak_triggers_after_growing_for_and_churn_never() {
        let mut feed = Feed::new();
        feed.memfd_create(PID, "doublemapper", 5555, 7);
        let mut tracker = GrowthTracker::new(20 * SECOND);
        let mut fired = Vec::new();
        let base = 0x7f00_0000_0000u64;
        for second in 0..40u64 {
            feed.time_ns = 10 * SECOND + second * SECOND;
            feed.mmap_memfd(PID, base + second * MIB, MIB, RW, ("doublemapper", 5555, 7));
            // Churn beside it: mapped and unmapped.
            let churn = base + 0x1000_0000;
            if second % 2 == 0 {
                feed.mmap_anon(PID, churn, 8 * MIB, RW);
            } else {
                feed.munmap(PID, churn, 8 * MIB);
            }
            let time = feed.time_ns;
            fired.push((second, tracker.sample(&feed.model, time)));
        }
        let first = fired
            .iter()
            .find(|(_, growing)| !growing.is_empty())
            .expect("the leak triggers");
        assert!((19..=24).contains(&first.0), "fired at {}s", first.0);
        let growing = &first.1[0];
        assert_eq!(growing.group, "memfd:doublemapper");
        let rate = growing.bytes_per_s as f64 / MIB as f64;
        assert!((0.95..=1.05).contains(&rate), "rate {rate} MiB/s");
        assert!(fired
            .iter()
            .flat_map(|(_, growing)| growing)
            .all(|growing| growing.group == "memfd:doublemapper"));
    }

    #[test]
    fn an_exited_process_is_forgotten() {
        let mut feed = Feed::new();
        let mut tracker = GrowthTracker::new(20 * SECOND);
        feed.mmap_anon(PID, 0x7f00_0000_0000, MIB, RW);
        tracker.sample(&feed.model, 10 * SECOND);
        assert_eq!(tracker.processes.len(), 1);
        feed.exit(PID, 0);
        tracker.sample(&feed.model, 20 * SECOND);
        assert!(tracker.processes.is_empty());
    }
}
