//! A process's growth over time as the report carries it: one series of live regions and
//! bytes per group, on the sample times the model took, plus a last point at the report's
//! moment (exit, the last event, or `replay --until`).

use std::collections::HashMap;

use serde::Serialize;

use crate::model::timeline::{GroupKey, Totals};
use crate::model::{ProcessView, RegionKind};
use crate::report::call_sites::{self, FrameNamer};

/// Named groups kept in a report, largest peak first; the totals still count every region.
const MAX_NAMED_SERIES: usize = 24;
/// Call-site series kept, largest peak first.
const MAX_CALL_SITE_SERIES: usize = 8;

/// The JSON `timeline` of a process. Every series has one value per entry of `times_ns`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TimelineReport {
    /// The sampling step at the end of the session (it doubles as a session grows).
    pub step_ns: u64,
    pub times_ns: Vec<u64>,
    /// Live regions and bytes of the whole process.
    pub regions: Vec<u32>,
    pub bytes: Vec<u64>,
    /// Of `bytes`, what the process allocated rather than loaded: every kind but files,
    /// stacks and the vdso (all groups, not only the series listed).
    pub allocated: Vec<u64>,
    pub groups: Vec<GroupSeries>,
}

/// Kinds a program loads rather than allocates: their growth is loading, not leaking.
pub(crate) const LOADED_KINDS: [RegionKind; 3] =
    [RegionKind::File, RegionKind::Stack, RegionKind::Vdso];

/// The bytes of groups that are allocated memory, not loaded images.
fn allocated_of<'k>(totals: impl Iterator<Item = (&'k GroupKey, u64)>) -> u64 {
    totals
        .filter_map(|(key, bytes)| match key {
            GroupKey::Named(kind, _) if !LOADED_KINDS.contains(kind) => Some(bytes),
            _ => None,
        })
        .sum()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupSeries {
    /// `memfd:doublemapper`, `anon`, `file:/usr/lib/…/libc.so.6`, or a call site
    /// (`hx_alloc_tmp ← process_image ← main (bigalloc.c:13)`).
    pub group: String,
    /// The regions' kind.
    pub kind: &'static str,
    /// A call site's series (of the regions of `kind` it created), not a kind + name's.
    pub call_site: bool,
    pub regions: Vec<u32>,
    pub bytes: Vec<u64>,
}

pub(crate) fn timeline_report(
    view: &ProcessView<'_>,
    now_ns: u64,
    step_ns: u64,
    namer: &mut dyn FrameNamer,
) -> TimelineReport {
    let groups = view.timeline_groups();
    let samples = view.process().timeline().samples();
    let exit_ns = view.process().exit().map(|exit| exit.time_ns);
    let end_ns = exit_ns.unwrap_or(now_ns);
    let mut report = TimelineReport {
        step_ns,
        ..TimelineReport::default()
    };
    // An exited process's last sample is its layout at exit (before it was compacted);
    // a live one's last point is its layout now.
    let at_exit = exit_ns.is_some() && samples.last().is_some_and(|last| last.time_ns == end_ns);
    let points = samples
        .iter()
        .filter(|sample| sample.time_ns < end_ns || at_exit)
        .count();
    let width = if at_exit { points } else { points + 1 };
    let mut series: HashMap<GroupKey, (Vec<u32>, Vec<u64>)> = HashMap::new();
    for (index, sample) in samples.iter().take(points).enumerate() {
        report.times_ns.push(sample.time_ns);
        report.regions.push(sample.regions);
        report.bytes.push(sample.bytes);
        report.allocated.push(allocated_of(
            sample
                .groups
                .iter()
                .map(|total| (groups.key(total.group), total.bytes)),
        ));
        for total in sample.groups.iter() {
            let (regions, bytes) = series
                .entry(groups.key(total.group).clone())
                .or_insert_with(|| (vec![0; width], vec![0; width]));
            regions[index] = total.regions;
            bytes[index] = total.bytes;
        }
    }
    if !at_exit {
        let last = Totals::of(view.layout());
        report.times_ns.push(end_ns);
        report.regions.push(last.regions);
        report.bytes.push(last.bytes);
        report.allocated.push(allocated_of(
            last.groups.iter().map(|(key, total)| (key, total.1)),
        ));
        for (key, (regions, bytes)) in last.groups {
            let entry = series
                .entry(key)
                .or_insert_with(|| (vec![0; width], vec![0; width]));
            entry.0[points] = regions;
            entry.1[points] = bytes;
        }
    }
    let mut named = Vec::new();
    let mut sites = Vec::new();
    for (key, (regions, bytes)) in series {
        let peak = bytes.iter().copied().max().unwrap_or(0);
        match &key {
            GroupKey::Named(kind, _) => named.push((
                peak,
                GroupSeries {
                    group: key.label().unwrap_or_default(),
                    kind: kind.as_str(),
                    call_site: false,
                    regions,
                    bytes,
                },
            )),
            GroupKey::CallSite(kind, stack) => sites.push((peak, *stack, *kind, regions, bytes)),
        }
    }
    named.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.group.cmp(&b.1.group)));
    report.groups.extend(
        named
            .into_iter()
            .take(MAX_NAMED_SERIES)
            .map(|(_, series)| series),
    );
    sites.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    for (_, stack, kind, regions, bytes) in sites.into_iter().take(MAX_CALL_SITE_SERIES) {
        let frames = view.stacks.frames(stack);
        report.groups.push(GroupSeries {
            group: call_sites::call_site_of(view, frames, namer),
            kind: kind.as_str(),
            call_site: true,
            regions,
            bytes,
        });
    }
    report
}
