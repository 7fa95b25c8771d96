//! Growth over time: each traced process's live regions and bytes, per group (kind + name, and
//! call site), sampled on a session-wide clock.
//!
//! Samples are taken when the event stream crosses a step boundary, *before* the crossing
//! event is applied: no event lies between the boundary and that moment, so the sample is the
//! exact state at the boundary, and a replay of the same events takes the same samples.
//! Memory stays bounded: the step doubles every [`SAMPLES_PER_STEP`] boundaries (so a
//! 24-hour session is sampled as coarsely as it needs), and a process keeping more than
//! `2 × SAMPLES_PER_STEP` samples drops every other one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::model::address_space::AddressSpace;
use crate::model::call_stacks::StackId;
use crate::model::region::{Origin, RegionKind};

/// The first step: fine enough to see a leak of a few seconds grow, sample by sample.
pub const FIRST_STEP_NS: u64 = 100_000_000;
/// Boundaries crossed at one step before it doubles; also half the samples a process keeps.
pub const SAMPLES_PER_STEP: usize = 64;

/// What a series counts: regions of one kind and name, or of one kind created by one call
/// stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GroupKey {
    Named(RegionKind, Option<Arc<str>>),
    /// Regions of one kind created by one call stack.
    CallSite(RegionKind, StackId),
}

impl GroupKey {
    /// `memfd:doublemapper`, `anon`, `file:/usr/lib/libc.so.6`; call sites are named by the
    /// report, which knows the symbols.
    pub fn label(&self) -> Option<String> {
        match self {
            Self::Named(kind, None) => Some(kind.as_str().to_owned()),
            // memfd names already carry their kind (`memfd:NAME`).
            Self::Named(RegionKind::Memfd, Some(name)) => Some(name.to_string()),
            Self::Named(kind, Some(name)) => Some(format!("{}:{name}", kind.as_str())),
            Self::CallSite(..) => None,
        }
    }
}

/// Index of a [`GroupKey`] in [`Groups`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(u32);

/// The session's group keys, interned: samples hold 4-byte ids, not names.
#[derive(Debug, Default)]
pub struct Groups {
    keys: Vec<GroupKey>,
    ids: HashMap<GroupKey, GroupId>,
    /// Samples' per-group totals, interned too: short-lived processes of one program end with
    /// the same totals (the same libraries, the same buffers), a steady process keeps taking
    /// the same sample, and a sample's totals are most of what it costs.
    totals: HashSet<Arc<[GroupTotal]>>,
    /// How many interned totals were in use at the last sweep.
    totals_after_sweep: usize,
}

impl Groups {
    /// The shared copy of these totals.
    fn intern_totals(&mut self, totals: Vec<GroupTotal>) -> Arc<[GroupTotal]> {
        if let Some(shared) = self.totals.get(totals.as_slice()) {
            return Arc::clone(shared);
        }
        // Totals no sample holds any more (their processes' timelines dropped them) are swept
        // whenever the set has doubled since the last sweep: the set stays within twice what
        // is in use, at an amortized constant cost per sample.
        if self.totals.len() >= 2 * self.totals_after_sweep.max(1024) {
            self.totals.retain(|shared| Arc::strong_count(shared) > 1);
            self.totals_after_sweep = self.totals.len();
        }
        let shared: Arc<[GroupTotal]> = Arc::from(totals);
        self.totals.insert(Arc::clone(&shared));
        shared
    }

    fn intern(&mut self, key: GroupKey) -> GroupId {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = GroupId(self.keys.len() as u32);
        self.keys.push(key.clone());
        self.ids.insert(key, id);
        id
    }

    pub fn key(&self, id: GroupId) -> &GroupKey {
        &self.keys[id.0 as usize]
    }
}

/// One group's live regions and bytes at a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupTotal {
    pub group: GroupId,
    pub regions: u32,
    pub bytes: u64,
}

/// A process's live memory at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub time_ns: u64,
    pub regions: u32,
    pub bytes: u64,
    /// Groups with live regions, in id order; shared between equal samples.
    pub groups: Arc<[GroupTotal]>,
}

impl Sample {
    /// The totals of a layout, per group.
    pub(crate) fn of(space: &AddressSpace, time_ns: u64, groups: &mut Groups) -> Sample {
        let totals = Totals::of(space);
        let mut by_id: Vec<GroupTotal> = totals
            .groups
            .into_iter()
            .map(|(key, (regions, bytes))| GroupTotal {
                group: groups.intern(key),
                regions,
                bytes,
            })
            .collect();
        by_id.sort_unstable_by_key(|total| total.group);
        Sample {
            time_ns,
            regions: totals.regions,
            bytes: totals.bytes,
            groups: groups.intern_totals(by_id),
        }
    }

    pub fn group(&self, id: GroupId) -> Option<&GroupTotal> {
        self.groups
            .binary_search_by_key(&id, |total| total.group)
            .ok()
            .map(|index| &self.groups[index])
    }
}

/// A layout's live regions and bytes, in all and per group, keyed by what they count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub regions: u32,
    pub bytes: u64,
    pub groups: HashMap<GroupKey, (u32, u64)>,
}

impl Totals {
    pub fn of(space: &AddressSpace) -> Totals {
        let mut totals = Totals::default();
        for region in space.iter() {
            totals.regions += 1;
            totals.bytes += region.len();
            let mut add = |key: GroupKey| {
                let total = totals.groups.entry(key).or_default();
                total.0 += 1;
                total.1 += region.len();
            };
            add(GroupKey::Named(region.kind, region.name.clone()));
            // Call sites count what this process's syscalls made, not the loader's images.
            if let (Some(stack), Origin::Syscall) = (region.stack, region.created.origin) {
                add(GroupKey::CallSite(region.kind, stack));
            }
        }
        totals
    }
}

/// One process's samples, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeline {
    samples: Vec<Sample>,
}

impl Timeline {
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Gives back the room kept for more samples (at exit: there will be none).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.samples.shrink_to_fit();
    }

    pub(crate) fn push(&mut self, sample: Sample) {
        if self
            .samples
            .last()
            .is_some_and(|last| last.time_ns >= sample.time_ns)
        {
            return;
        }
        self.samples.push(sample);
        if self.samples.len() > 2 * SAMPLES_PER_STEP {
            // Keep the first and every other one after it: the span stays whole, the
            // resolution halves, as the session clock's own step does.
            let mut index = 0;
            self.samples.retain(|_| {
                index += 1;
                index % 2 == 1
            });
        }
    }
}

/// The session-wide sampling clock. Boundaries lie at multiples of the step from the first
/// event; the step is the smallest power-of-two multiple of [`FIRST_STEP_NS`] that divides the
/// session so far into at most [`SAMPLES_PER_STEP`] steps, so a coarser step's boundaries are
/// also finer ones' and a long session is sampled evenly.
#[derive(Debug, Default)]
pub struct Clock {
    origin_ns: Option<u64>,
    next_ns: u64,
}

/// The boundaries an event crossed: the first and the last (they hold the same state, so the
/// ones between add nothing but memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crossing {
    pub first_ns: u64,
    pub last_ns: u64,
}

impl Clock {
    /// Advances to `time_ns`; returns the boundaries crossed, if any.
    pub fn advance(&mut self, time_ns: u64) -> Option<Crossing> {
        let Some(origin) = self.origin_ns else {
            self.origin_ns = Some(time_ns);
            self.next_ns = time_ns.saturating_add(FIRST_STEP_NS);
            return None;
        };
        if time_ns < self.next_ns {
            return None;
        }
        let step = step_for(time_ns - origin);
        let steps = (time_ns - origin) / step;
        let last_ns = (origin + steps * step).max(self.next_ns);
        let first_ns = self.next_ns;
        self.next_ns = origin.saturating_add((steps + 1).saturating_mul(step));
        Some(Crossing { first_ns, last_ns })
    }

    /// The step now.
    pub fn step_ns(&self) -> u64 {
        self.origin_ns
            .map_or(FIRST_STEP_NS, |origin| step_for(self.next_ns - origin))
    }
}

fn step_for(elapsed_ns: u64) -> u64 {
    let mut step = FIRST_STEP_NS;
    while elapsed_ns / step >= SAMPLES_PER_STEP as u64 && step < u64::MAX / 2 {
        step *= 2;
    }
    step
}

/// Least-squares rate of a series, in units per second, and how well a line fits it (R²).
pub fn trend(points: &[(u64, u64)]) -> Option<(f64, f64)> {
    if points.len() < 3 {
        return None;
    }
    let origin = points[0].0;
    let n = points.len() as f64;
    let xs = points.iter().map(|&(t, _)| (t - origin) as f64 / 1e9);
    let mean_x = xs.clone().sum::<f64>() / n;
    let mean_y = points.iter().map(|&(_, y)| y as f64).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (x, &(_, y)) in xs.zip(points) {
        let dx = x - mean_x;
        let dy = y as f64 - mean_y;
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let fit = if syy == 0.0 {
        0.0
    } else {
        (sxy * sxy) / (sxx * syy)
    };
    Some((slope, fit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_crosses_each_boundary_once_and_coarsens() {
        let mut clock = Clock::default();
        assert_eq!(clock.advance(1_000), None);
        assert_eq!(clock.advance(1_000 + FIRST_STEP_NS - 1), None);
        let crossing = clock.advance(1_000 + FIRST_STEP_NS).unwrap();
        assert_eq!(crossing.first_ns, 1_000 + FIRST_STEP_NS);
        assert_eq!(crossing.last_ns, crossing.first_ns);
        // A quiet hour: one crossing, spanning it, without walking millions of steps.
        let hour = 3_600_000_000_000;
        let crossing = clock.advance(hour).unwrap();
        assert!(crossing.last_ns <= hour && crossing.last_ns > crossing.first_ns);
        assert!(clock.step_ns() > FIRST_STEP_NS);
    }

    #[test]
    fn timeline_stays_bounded() {
        let mut timeline = Timeline::default();
        for index in 0..10_000u64 {
            timeline.push(Sample {
                time_ns: index,
                regions: 0,
                bytes: index,
                groups: Arc::from([]),
            });
        }
        assert!(timeline.samples().len() <= 2 * SAMPLES_PER_STEP);
        assert_eq!(timeline.samples()[0].time_ns, 0);
    }

    #[test]
    fn trend_of_a_line_and_of_churn() {
        let line: Vec<(u64, u64)> = (0..20).map(|i| (i * 100_000_000, i * 1000)).collect();
        let (rate, fit) = trend(&line).unwrap();
        assert!((rate - 10_000.0).abs() < 1e-6);
        assert!(fit > 0.999);
        let churn: Vec<(u64, u64)> = (0..20).map(|i| (i * 100_000_000, (i % 2) * 4096)).collect();
        let (_, fit) = trend(&churn).unwrap();
        assert!(fit < 0.1);
    }
}
