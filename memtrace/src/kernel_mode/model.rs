//! Kernel mode's model: the snapshots of outstanding kernel allocations, in order, and what
//! they say together (outstanding at the end, change over the session, what keeps growing).
//! Pure and synchronous: live sessions and replays feed it the same snapshot events.

use std::collections::BTreeMap;

use crate::{
    event::{
        kernel_snapshot::{
            KernelCounters, KernelGroup, KernelModeSource, KernelSnapshot, MeminfoValue, SlabCache,
        },
        Event, EventBody,
    },
    stream::Consumer,
};

/// What identifies a call site in the report: the allocator, the address (named), the cache.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SiteKey {
    pub source: KernelModeSource,
    pub call_site: u64,
    pub function: String,
    pub module: String,
    pub cache: String,
}

impl SiteKey {
    fn of(group: &KernelGroup) -> Self {
        Self {
            source: group.source,
            call_site: group.call_site,
            function: group.function.clone(),
            module: group.module.clone(),
            cache: group.cache.clone(),
        }
    }
}

/// Outstanding count and bytes of one call site at one snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Point {
    pub count: u64,
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub struct KernelModel {
    /// Snapshot times (CLOCK_MONOTONIC ns), in order.
    times: Vec<u64>,
    /// Every call site ever seen, with one point per snapshot (zero where it had none).
    series: BTreeMap<SiteKey, Vec<Point>>,
    /// The latest snapshot's stacks per call site, with their counts.
    stacks: BTreeMap<SiteKey, Vec<(u64, Vec<String>)>>,
    counters: KernelCounters,
    first_meminfo: Vec<MeminfoValue>,
    last_meminfo: Vec<MeminfoValue>,
    first_slabs: Vec<SlabCache>,
    last_slabs: Vec<SlabCache>,
}

/// Kernel mode's consumer: it takes the kernel snapshots; a kernel-mode stream carries
/// nothing else that counts here (losses are the stream's).
impl Consumer for KernelModel {
    fn consume(&mut self, event: &Event) {
        if let EventBody::KernelSnapshot(snapshot) = &event.body {
            self.apply(event.time_ns, snapshot);
        }
    }
}

impl KernelModel {
    pub fn apply(&mut self, time_ns: u64, snapshot: &KernelSnapshot) {
        let index = self.times.len();
        self.times.push(time_ns);
        if index == 0 {
            self.first_meminfo = snapshot.meminfo.clone();
            self.first_slabs = snapshot.slabs.clone();
        }
        self.last_meminfo = snapshot.meminfo.clone();
        self.last_slabs = snapshot.slabs.clone();
        // Totals, not increments; the larger guards against reordering.
        let c = &mut self.counters;
        c.allocs = c.allocs.max(snapshot.counters.allocs);
        c.frees = c.frees.max(snapshot.counters.frees);
        c.table_full = c.table_full.max(snapshot.counters.table_full);
        c.stack_lost = c.stack_lost.max(snapshot.counters.stack_lost);
        c.sites_full = c.sites_full.max(snapshot.counters.sites_full);

        self.stacks.clear();
        for group in &snapshot.groups {
            let key = SiteKey::of(group);
            let points = self.series.entry(key.clone()).or_default();
            points.resize(index + 1, Point::default());
            points[index].count += group.count;
            points[index].bytes += group.bytes;
            if !group.stack.is_empty() {
                self.stacks
                    .entry(key)
                    .or_default()
                    .push((group.count, group.stack.clone()));
            }
        }
        for points in self.series.values_mut() {
            points.resize(index + 1, Point::default());
        }
    }

    pub fn snapshot_times(&self) -> &[u64] {
        &self.times
    }

    pub fn counters(&self) -> KernelCounters {
        self.counters
    }

    /// Every call site with its points, one per snapshot.
    pub fn series(&self) -> impl Iterator<Item = (&SiteKey, &[Point])> {
        self.series
            .iter()
            .map(|(key, points)| (key, points.as_slice()))
    }

    /// The latest snapshot's stacks of a call site, most allocations first.
    pub fn stacks_of(&self, key: &SiteKey) -> Vec<(u64, Vec<String>)> {
        let mut stacks = self.stacks.get(key).cloned().unwrap_or_default();
        stacks.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        stacks
    }

    pub fn meminfo(&self) -> (&[MeminfoValue], &[MeminfoValue]) {
        (&self.first_meminfo, &self.last_meminfo)
    }

    pub fn slabs(&self) -> (&[SlabCache], &[SlabCache]) {
        (&self.first_slabs, &self.last_slabs)
    }
}

/// A call site's outstanding allocations keep growing when, over at least
/// [`GROWING_MIN_INTERVALS`] intervals, the count rose in at least three quarters of them and
/// ended above where it started by at least [`GROWING_MIN_ALLOCATIONS`]. A burst that then
/// stays flat (a cache warming up) is not growth; a steady leak is.
pub fn is_growing(points: &[Point]) -> bool {
    let intervals = points.len().saturating_sub(1);
    if intervals < GROWING_MIN_INTERVALS {
        return false;
    }
    let rises = points
        .windows(2)
        .filter(|w| w[1].count > w[0].count)
        .count();
    let (first, last) = (points[0].count, points[intervals].count);
    rises * 4 >= intervals * 3 && last >= first + GROWING_MIN_ALLOCATIONS
}

pub const GROWING_MIN_INTERVALS: usize = 3;
pub const GROWING_MIN_ALLOCATIONS: u64 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    fn group(function: &str, count: u64) -> KernelGroup {
        KernelGroup {
            source: KernelModeSource::Kmalloc,
            call_site: 0x1000,
            function: function.into(),
            module: String::new(),
            cache: "kmalloc-64".into(),
            count,
            bytes: count * 64,
            stack: Vec::new(),
        }
    }

    fn snapshot(groups: Vec<KernelGroup>) -> KernelSnapshot {
        KernelSnapshot {
            groups,
            ..Default::default()
        }
    }

    fn points(counts: &[u64]) -> Vec<Point> {
        counts
            .iter()
            .map(|&count| Point {
                count,
                bytes: count * 64,
            })
            .collect()
    }

    #[test]
    fn a_call_site_absent_from_a_snapshot_has_nothing_outstanding_then() {
        let mut model = KernelModel::default();
        model.apply(1, &snapshot(vec![]));
        model.apply(2, &snapshot(vec![group("a+0x1", 5)]));
        model.apply(3, &snapshot(vec![]));
        let (_, series) = model.series().next().unwrap();
        assert_eq!(
            series.iter().map(|p| p.count).collect::<Vec<_>>(),
            [0, 5, 0]
        );
    }

    #[test]
    fn groups_of_one_call_site_through_different_stacks_add_up() {
        let mut model = KernelModel::default();
        let mut a = group("a+0x1", 3);
        a.stack = vec!["a+0x1".into(), "b+0x2".into()];
        let mut b = group("a+0x1", 4);
        b.stack = vec!["a+0x1".into(), "c+0x3".into()];
        model.apply(1, &snapshot(vec![a, b]));
        let (key, series) = model.series().next().unwrap();
        assert_eq!(series[0].count, 7);
        let stacks = model.stacks_of(key);
        assert_eq!(stacks[0].0, 4);
        assert_eq!(stacks[1].0, 3);
    }

    #[test]
    fn steady_growth_is_growing_and_a_flat_burst_is_not() {
        assert!(is_growing(&points(&[0, 10, 20, 30, 40])));
        assert!(is_growing(&points(&[0, 10, 20, 15, 30])));
        assert!(!is_growing(&points(&[0, 1000, 1000, 1000, 1000])));
        assert!(!is_growing(&points(&[0, 10, 20])), "too few intervals");
        assert!(
            !is_growing(&points(&[0, 1, 2, 3, 4])),
            "too few allocations"
        );
        assert!(!is_growing(&points(&[40, 30, 20, 10, 0])));
    }
}
