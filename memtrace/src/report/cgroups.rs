//! The processes of a report grouped by cgroup: a container (a `docker run`, a pod's
//! container, a systemd service) is a cgroup, and whoever traces a whole one (`--cgroup`) or
//! a host with several asks first what each holds.

use std::collections::HashMap;

use crate::report::schema::{CgroupReport, ExitedProgramReport, ProcessReport};

/// The cgroup a process is grouped under; "" when its identity is unknown (a recording made
/// before memtrace read it, or a process gone before it could be read).
pub fn cgroup_of(process: &ProcessReport) -> &str {
    process.container.as_ref().map_or("", |c| c.cgroup.as_str())
}

/// Sums processes into their cgroups, in the order each cgroup first appears.
#[derive(Default)]
pub struct CgroupTotals {
    order: Vec<CgroupReport>,
    index: HashMap<String, usize>,
}

impl CgroupTotals {
    pub fn add(&mut self, process: &ProcessReport) {
        let group = self.group(cgroup_of(process));
        group.pids.push(process.pid);
        group.live_processes += u64::from(process.alive);
        group.regions += process.summary.iter().map(|kind| kind.regions).sum::<u64>();
        group.bytes += process.summary.iter().map(|kind| kind.bytes).sum::<u64>();
        group.unreleased_regions += process.unreleased.total_regions;
        group.unreleased_bytes += process.unreleased.total_bytes;
    }

    fn group(&mut self, name: &str) -> &mut CgroupReport {
        let index = match self.index.get(name) {
            Some(&index) => index,
            None => {
                self.order.push(CgroupReport {
                    cgroup: name.to_owned(),
                    ..CgroupReport::default()
                });
                self.index.insert(name.to_owned(), self.order.len() - 1);
                self.order.len() - 1
            }
        };
        &mut self.order[index]
    }

    /// Adds a program's folded processes (`exited`): how many, what they had mapped at their
    /// exits and what of it was unreleased.
    pub fn add_folded(&mut self, folded: &ExitedProgramReport) {
        let group = self.group(&folded.cgroup);
        group.folded_processes += folded.processes;
        group.regions += folded.regions;
        group.bytes += folded.bytes;
        group.unreleased_regions += folded.unreleased.total_regions + folded.loaded_regions;
        group.unreleased_bytes += folded.unreleased.total_bytes + folded.loaded_bytes;
    }

    pub fn finish(self) -> Vec<CgroupReport> {
        self.order
    }
}

/// The cgroups of `processes` and of the `exited` programs folded, in the order each first
/// appears.
pub fn of(processes: &[ProcessReport], exited: &[ExitedProgramReport]) -> Vec<CgroupReport> {
    let mut totals = CgroupTotals::default();
    for process in processes {
        totals.add(process);
    }
    for program in exited {
        totals.add_folded(program);
    }
    totals.finish()
}

/// Whether the text report shows processes under a heading per cgroup: when they are in more
/// than one, or in any container (another root or pid namespace), where the cgroup is how a
/// person names it.
pub fn worth_headings(processes: &[ProcessReport], cgroups: &[CgroupReport]) -> bool {
    cgroups.len() > 1
        || processes.iter().any(|process| {
            process
                .container
                .as_ref()
                .is_some_and(|c| c.root != "/" || c.ns_pid != process.pid)
        })
}
