//! Memory by kind, and the unreleased regions grouped the way a person hunts a leak.

use std::collections::BTreeMap;

use crate::model::{AddressSpace, Origin, ProcessView, Region, RegionKind, SyscallName};
use crate::report::call_sites::{self, FrameNamer};
use crate::report::schema::{
    KindSummary, MemfdReport, Unreleased, UnreleasedGroup, UnreleasedRegion,
};

/// Regions and bytes per kind, largest first, with each kind's share of the mapped bytes.
pub(crate) fn by_kind(layout: &AddressSpace) -> Vec<KindSummary> {
    let mut totals: BTreeMap<RegionKind, (u64, u64)> = BTreeMap::new();
    for region in layout.iter() {
        let entry = totals.entry(region.kind).or_default();
        entry.0 += 1;
        entry.1 += region.len();
    }
    let all_bytes: u64 = totals.values().map(|&(_, bytes)| bytes).sum();
    let mut summary: Vec<KindSummary> = totals
        .into_iter()
        .map(|(kind, (regions, bytes))| KindSummary {
            kind: kind.as_str(),
            regions,
            bytes,
            percent: percent(bytes, all_bytes),
        })
        .collect();
    summary.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.kind.cmp(b.kind)));
    summary
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 10_000.0 / whole as f64).round() / 100.0
}

/// The process's unreleased regions grouped by (kind, name, perms), largest bytes first.
/// `since_ns`: only regions created from then on (`replay --since`; 0 for all).
pub(crate) fn unreleased(
    view: &ProcessView<'_>,
    since_ns: u64,
    namer: &mut dyn FrameNamer,
) -> Unreleased {
    let regions = view
        .unreleased()
        .filter(|region| region.created.time_ns >= since_ns);
    let groups = grouped(view, regions);
    Unreleased {
        total_regions: groups.iter().map(|group| group.count).sum(),
        total_bytes: groups.iter().map(|group| group.bytes).sum(),
        groups,
        by_stack: call_sites::unreleased_by_stack(view, since_ns, namer),
    }
}

/// What the process had allocated before memtrace attached and still holds (regions from
/// `/proc/PID/maps` at attach, not the files and stacks it loaded), grouped like
/// [`unreleased`]: the state at attach, diagnosed like a dump.
pub(crate) fn held_since_attach(view: &ProcessView<'_>, since_ns: u64) -> Vec<UnreleasedGroup> {
    let pid = view.process().pid();
    // A forked child's copies of its parent's regions stay the parent's.
    let regions = view.layout().iter().filter(move |region| {
        region.created.origin == Origin::Attach
            && region.created.pid == pid
            && region.created.time_ns >= since_ns
            && !matches!(
                region.kind,
                RegionKind::File | RegionKind::Stack | RegionKind::Vdso
            )
    });
    grouped(view, regions)
}

fn grouped<'m>(
    view: &ProcessView<'m>,
    regions: impl Iterator<Item = &'m Region>,
) -> Vec<UnreleasedGroup> {
    let mut groups: BTreeMap<(RegionKind, &str, String), UnreleasedGroup> = BTreeMap::new();
    for region in regions {
        let perms = region.perms.to_string();
        let group = groups
            .entry((region.kind, region.name(), perms.clone()))
            .or_insert_with(|| UnreleasedGroup {
                kind: region.kind.as_str(),
                name: region.name().to_owned(),
                perms,
                count: 0,
                bytes: 0,
                first_created_ns: region.created.time_ns,
                last_created_ns: region.created.time_ns,
                regions: Vec::new(),
            });
        group.count += 1;
        group.bytes += region.len();
        group.first_created_ns = group.first_created_ns.min(region.created.time_ns);
        group.last_created_ns = group.last_created_ns.max(region.created.time_ns);
        group.regions.push(unreleased_region(view, region));
    }
    let mut groups: Vec<UnreleasedGroup> = groups.into_values().collect();
    for group in &mut groups {
        group
            .regions
            .sort_by_key(|region| (region.created_ns, region.start));
    }
    groups.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.count.cmp(&a.count))
            .then(a.first_created_ns.cmp(&b.first_created_ns))
            .then_with(|| (&a.name, &a.perms).cmp(&(&b.name, &b.perms)))
    });
    groups
}

fn unreleased_region(view: &ProcessView<'_>, region: &Region) -> UnreleasedRegion {
    UnreleasedRegion {
        start: region.start,
        len: region.len(),
        perms: region.perms.to_string(),
        kind: region.kind.as_str(),
        name: region.name().to_owned(),
        created_ns: region.created.time_ns,
        syscall: region
            .created
            .syscall
            .and_then(SyscallName::of)
            .map_or("", SyscallName::as_str),
        memfd_fd_closed: view.memfd_fd_closed(region),
        memfd: view.memfd(region).map(|memfd| MemfdReport {
            name: memfd.name.to_string(),
            inode: memfd.inode,
            created_ns: memfd.created_ns,
            created_by_pid: memfd.created_by_pid,
        }),
        thread_stack: region.thread_stack,
    }
}
