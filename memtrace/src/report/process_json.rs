//! One process's JSON as the streamed report writes it ([`crate::report::stream`]): the
//! fields of its [`ProcessReport`], but the two lists that grow with its regions, `layout` and
//! each group's `regions`, written from the model entry by entry. A process of a million
//! regions would otherwise hold both lists, owned, three times the model's own bytes.

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use crate::model::{ProcessView, Region};
use crate::report::processes::{layout_entry, Members};
use crate::report::schema::{ProcessReport, Unreleased, UnreleasedGroup};
use crate::report::summary::unreleased_region;

/// A process's report, made with [`Listed::Evidence`](crate::report::summary::Listed), and
/// the model it lists its regions from.
pub(crate) struct ProcessJson<'a, 'm> {
    pub(crate) report: &'a ProcessReport,
    pub(crate) members: &'a Members<'m>,
    pub(crate) view: &'a ProcessView<'m>,
}

impl Serialize for ProcessJson<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Every field named, none skipped with `..`: a field added to the report is an error
        // here until it is written here too (a test holds the bytes to the whole report's).
        let ProcessReport {
            pid,
            ppid,
            comm,
            exe,
            abi,
            alive,
            execs,
            exit_code,
            signal,
            syscalls,
            layout: _,
            summary,
            unreleased,
            held_since_attach,
            brk,
            distributions,
            timeline,
            allocated_by_stack,
            container,
            perf_map,
            anomalies,
            map_count,
            limits,
            map_failures,
        } = self.report;
        let view = self.view;
        let mut out = serializer.serialize_struct("ProcessReport", 24)?;
        out.serialize_field("pid", pid)?;
        out.serialize_field("ppid", ppid)?;
        out.serialize_field("comm", comm)?;
        out.serialize_field("exe", exe)?;
        out.serialize_field("abi", abi)?;
        out.serialize_field("alive", alive)?;
        out.serialize_field("execs", execs)?;
        out.serialize_field("exit_code", exit_code)?;
        out.serialize_field("signal", signal)?;
        out.serialize_field("syscalls", syscalls)?;
        out.serialize_field("layout", &Layout(view))?;
        out.serialize_field("summary", summary)?;
        out.serialize_field(
            "unreleased",
            &UnreleasedJson {
                unreleased,
                members: &self.members.unreleased,
                view,
            },
        )?;
        out.serialize_field(
            "held_since_attach",
            &Groups {
                groups: held_since_attach,
                members: &self.members.held_since_attach,
                view,
            },
        )?;
        out.serialize_field("brk", brk)?;
        out.serialize_field("distributions", distributions)?;
        out.serialize_field("timeline", timeline)?;
        out.serialize_field("allocated_by_stack", allocated_by_stack)?;
        out.serialize_field("container", container)?;
        out.serialize_field("perf_map", perf_map)?;
        out.serialize_field("anomalies", anomalies)?;
        out.serialize_field("map_count", map_count)?;
        out.serialize_field("limits", limits)?;
        out.serialize_field("map_failures", map_failures)?;
        out.end()
    }
}

/// The layout, a region at a time.
struct Layout<'a, 'm>(&'a ProcessView<'m>);

impl Serialize for Layout<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.layout().iter().map(layout_entry))
    }
}

struct UnreleasedJson<'a, 'm> {
    unreleased: &'a Unreleased,
    members: &'a [Vec<&'m Region>],
    view: &'a ProcessView<'m>,
}

impl Serialize for UnreleasedJson<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Unreleased {
            total_regions,
            total_bytes,
            groups,
            by_stack,
        } = self.unreleased;
        let mut out = serializer.serialize_struct("Unreleased", 4)?;
        out.serialize_field("total_regions", total_regions)?;
        out.serialize_field("total_bytes", total_bytes)?;
        out.serialize_field(
            "groups",
            &Groups {
                groups,
                members: self.members,
                view: self.view,
            },
        )?;
        out.serialize_field("by_stack", by_stack)?;
        out.end()
    }
}

/// Groups, each with its regions from the model (`members`, in the groups' order).
struct Groups<'a, 'm> {
    groups: &'a [UnreleasedGroup],
    members: &'a [Vec<&'m Region>],
    view: &'a ProcessView<'m>,
}

impl Serialize for Groups<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.groups
                .iter()
                .zip(self.members)
                .map(|(group, members)| GroupJson {
                    group,
                    members,
                    view: self.view,
                }),
        )
    }
}

struct GroupJson<'a, 'm> {
    group: &'a UnreleasedGroup,
    members: &'a [&'m Region],
    view: &'a ProcessView<'m>,
}

impl Serialize for GroupJson<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let UnreleasedGroup {
            kind,
            name,
            perms,
            count,
            bytes,
            first_created_ns,
            last_created_ns,
            thread_stacks: _,
            regions: _,
        } = self.group;
        let mut out = serializer.serialize_struct("UnreleasedGroup", 8)?;
        out.serialize_field("kind", kind)?;
        out.serialize_field("name", name)?;
        out.serialize_field("perms", perms)?;
        out.serialize_field("count", count)?;
        out.serialize_field("bytes", bytes)?;
        out.serialize_field("first_created_ns", first_created_ns)?;
        out.serialize_field("last_created_ns", last_created_ns)?;
        out.serialize_field("regions", &Regions(self.members, self.view))?;
        out.end()
    }
}

struct Regions<'a, 'm>(&'a [&'m Region], &'a ProcessView<'m>);

impl Serialize for Regions<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let view = self.1;
        serializer.collect_seq(self.0.iter().map(|region| unreleased_region(view, region)))
    }
}
