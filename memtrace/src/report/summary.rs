//! Memory by kind, and the unreleased regions grouped the way a person hunts a leak.

use std::collections::BTreeMap;

use crate::model::{AddressSpace, Origin, Perms, ProcessView, Region, RegionKind, SyscallName};
use crate::report::call_sites::{self, FrameNamer};
use crate::report::findings;
use crate::report::schema::{
    KindSummary, MemfdReport, Unreleased, UnreleasedGroup, UnreleasedRegion,
};
use crate::report::ReportOptions;

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

/// Which regions a group lists in the report being made.
#[derive(Clone, Copy)]
pub(crate) enum Listed<'o> {
    /// All of them: the report built whole.
    All,
    /// Only those the findings read ([`findings::reads`]): the streamed JSON writes the lists
    /// from the model as it goes ([`crate::report::stream`]), which a million regions need.
    Evidence(&'o ReportOptions),
}

/// Groups of regions, each with its regions in the model, in the order the report lists them.
pub(crate) type Grouped<'m> = Vec<(UnreleasedGroup, Vec<&'m Region>)>;

/// The process's unreleased regions grouped by (kind, name, perms), largest bytes first, and
/// each group's regions in the model. `since_ns`: only regions created from then on
/// (`replay --since`; 0 for all).
pub(crate) fn unreleased<'m>(
    view: &ProcessView<'m>,
    since_ns: u64,
    listed: Listed<'_>,
    namer: &mut dyn FrameNamer,
) -> (Unreleased, Vec<Vec<&'m Region>>) {
    let regions = view
        .unreleased()
        .filter(move |region| region.created.time_ns >= since_ns);
    let (groups, members) = grouped(view, regions, listed).into_iter().unzip();
    let groups: Vec<UnreleasedGroup> = groups;
    let unreleased = Unreleased {
        total_regions: groups.iter().map(|group| group.count).sum(),
        total_bytes: groups.iter().map(|group| group.bytes).sum(),
        groups,
        by_stack: call_sites::unreleased_by_stack(view, since_ns, namer),
    };
    (unreleased, members)
}

/// What the process had allocated before memtrace attached and still holds (regions from
/// `/proc/PID/maps` at attach, not the files and stacks it loaded), grouped like
/// [`unreleased`]: the state at attach, diagnosed like a dump.
pub(crate) fn held_since_attach<'m>(
    view: &ProcessView<'m>,
    since_ns: u64,
    listed: Listed<'_>,
) -> Grouped<'m> {
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
    grouped(view, regions, listed)
}

fn grouped<'m>(
    view: &ProcessView<'m>,
    regions: impl Iterator<Item = &'m Region>,
    listed: Listed<'_>,
) -> Grouped<'m> {
    let mut groups: BTreeMap<(RegionKind, &str, Perms), (UnreleasedGroup, Vec<&'m Region>)> =
        BTreeMap::new();
    for region in regions {
        let (group, members) = groups
            .entry((region.kind, region.name(), region.perms))
            .or_insert_with(|| {
                let group = UnreleasedGroup {
                    kind: region.kind.as_str(),
                    name: region.name().to_owned(),
                    perms: region.perms.to_string(),
                    count: 0,
                    bytes: 0,
                    first_created_ns: region.created.time_ns,
                    last_created_ns: region.created.time_ns,
                    thread_stacks: true,
                    regions: Vec::new(),
                };
                (group, Vec::new())
            });
        group.count += 1;
        group.bytes += region.len();
        group.first_created_ns = group.first_created_ns.min(region.created.time_ns);
        group.last_created_ns = group.last_created_ns.max(region.created.time_ns);
        group.thread_stacks &= region.thread_stack;
        members.push(region);
    }
    let mut groups: Grouped<'m> = groups.into_values().collect();
    for (group, members) in &mut groups {
        members.sort_by_key(|region| (region.created.time_ns, region.start));
        group.regions = members
            .iter()
            .map(|region| unreleased_region(view, region))
            .filter(|region| match listed {
                Listed::All => true,
                Listed::Evidence(options) => findings::reads(region, options),
            })
            .collect();
    }
    groups.sort_by(|(a, _), (b, _)| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.count.cmp(&a.count))
            .then(a.first_created_ns.cmp(&b.first_created_ns))
            .then_with(|| (&a.name, &a.perms).cmp(&(&b.name, &b.perms)))
    });
    groups
}

pub(crate) fn unreleased_region(view: &ProcessView<'_>, region: &Region) -> UnreleasedRegion {
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
