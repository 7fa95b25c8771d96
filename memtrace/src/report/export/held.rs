//! One list of call stacks with their weights, shared by the stack formats (pprof, folded,
//! the HTML flame graph) so that they all say the same thing.

use std::collections::BTreeMap;

use crate::report::call_sites::{frame_label, is_allocator_frame};
use crate::report::schema::{
    AllocatedSite, ExitedProgramReport, FrameReport, LayoutEntry, ProcessReport, Report, Unreleased,
};

/// The frame standing for unreleased regions created without a sampled stack (smaller than
/// --stack-min-size, or traced with --no-stacks), so that stack totals match `unreleased`.
pub(crate) const NO_STACK: &str = "[no call stack sampled]";

/// Whose call stacks: a process listed in full, or a program's folded processes.
#[derive(Clone)]
pub(crate) struct Owner<'r> {
    /// The root frame's name: `comm-pid`, as perf's collapsed stacks name a process, or
    /// `comm (N exited, folded)`; it tells owners apart.
    pub label: String,
    /// The process's pid; a folded program's first.
    pub pid: u32,
    pub comm: &'r str,
    /// Its cgroup v2 path; "" when unknown.
    pub cgroup: &'r str,
    /// Where its modules were mapped; empty for folded processes.
    pub layout: &'r [LayoutEntry],
}

/// One call stack of one process (or folded program) and what it created.
pub(crate) struct ProfileStack<'r> {
    pub owner: Owner<'r>,
    /// Innermost first, the allocator's own frames (libc, the loader) left out as in the
    /// report's call sites: leak hunters look for their own code at the leaf. Empty for
    /// [`NO_STACK`].
    pub frames: &'r [FrameReport],
    /// Still mapped at the end.
    pub inuse_bytes: u64,
    pub inuse_regions: u64,
    /// Created during the session, released since or not.
    pub alloc_bytes: u64,
    pub alloc_regions: u64,
}

/// Every listed process's stacks, then every folded program's, each one's largest in-use
/// first.
pub(crate) fn profile_stacks(report: &Report) -> Vec<ProfileStack<'_>> {
    let processes = report.processes.iter().flat_map(|process| {
        owner_stacks(
            process_owner(process),
            &process.unreleased,
            &process.allocated_by_stack,
        )
    });
    let folded = report.exited.iter().flat_map(|program| {
        owner_stacks(
            folded_owner(program),
            &program.unreleased,
            &program.allocated_by_stack,
        )
    });
    processes.chain(folded).collect()
}

fn owner_stacks<'r>(
    owner: Owner<'r>,
    unreleased: &'r Unreleased,
    allocated_by_stack: &'r [AllocatedSite],
) -> Vec<ProfileStack<'r>> {
    // The same stack appears in both lists; its frames identify it (a folded program's
    // addresses differ from process to process, its modules and offsets do not).
    let mut stacks: BTreeMap<Vec<(Option<&str>, u64)>, ProfileStack<'r>> = BTreeMap::new();
    let empty = |frames| ProfileStack {
        owner: owner.clone(),
        frames,
        inuse_bytes: 0,
        inuse_regions: 0,
        alloc_bytes: 0,
        alloc_regions: 0,
    };
    for group in &unreleased.by_stack {
        let stack = stacks
            .entry(places(&group.frames))
            .or_insert_with(|| empty(program_frames(&group.frames)));
        stack.inuse_bytes += group.bytes;
        stack.inuse_regions += group.count;
    }
    for site in allocated_by_stack {
        let stack = stacks
            .entry(places(&site.frames))
            .or_insert_with(|| empty(program_frames(&site.frames)));
        stack.alloc_bytes += site.bytes;
        stack.alloc_regions += site.count;
    }
    let mut stacks: Vec<ProfileStack<'_>> = stacks.into_values().collect();
    // A region grown in place after its stack was taken (the brk heap) holds more than its
    // stack was seen to create: what a stack holds, it allocated.
    for stack in &mut stacks {
        stack.alloc_bytes = stack.alloc_bytes.max(stack.inuse_bytes);
        stack.alloc_regions = stack.alloc_regions.max(stack.inuse_regions);
    }
    let sampled_bytes: u64 = unreleased.by_stack.iter().map(|group| group.bytes).sum();
    let sampled_regions: u64 = unreleased.by_stack.iter().map(|group| group.count).sum();
    let unsampled_bytes = unreleased.total_bytes.saturating_sub(sampled_bytes);
    if unsampled_bytes > 0 {
        // What they allocated and released is unknown: at least what they still hold.
        let regions = unreleased.total_regions.saturating_sub(sampled_regions);
        stacks.push(ProfileStack {
            inuse_bytes: unsampled_bytes,
            inuse_regions: regions,
            alloc_bytes: unsampled_bytes,
            alloc_regions: regions,
            ..empty(&[])
        });
    }
    stacks.sort_by_key(|stack| std::cmp::Reverse((stack.inuse_bytes, stack.alloc_bytes)));
    stacks
}

fn places(frames: &[FrameReport]) -> Vec<(Option<&str>, u64)> {
    frames
        .iter()
        .map(|frame| match (&frame.module, frame.offset) {
            (Some(module), Some(offset)) => (Some(module.as_str()), offset),
            _ => (None, frame.address),
        })
        .collect()
}

/// The frames from the first one outside the allocator on (all of them when every frame is
/// the allocator's, as when the loader maps a library).
fn program_frames(frames: &[FrameReport]) -> &[FrameReport] {
    match frames.iter().position(|frame| !is_allocator_frame(frame)) {
        Some(first) => &frames[first..],
        None => frames,
    }
}

/// A frame's name in the stack formats: its function, else `module+0xoffset`, else the
/// address.
pub(crate) fn label(frame: &FrameReport) -> String {
    frame_label(frame)
}

pub(crate) fn process_owner(process: &ProcessReport) -> Owner<'_> {
    Owner {
        label: format!("{}-{}", process.comm, process.pid),
        pid: process.pid,
        comm: &process.comm,
        cgroup: process
            .container
            .as_ref()
            .map_or("", |container| container.cgroup.as_str()),
        layout: &process.layout,
    }
}

fn folded_owner(program: &ExitedProgramReport) -> Owner<'_> {
    Owner {
        label: format!("{} ({} exited, folded)", program.comm, program.processes),
        pid: program.first_pid,
        comm: &program.comm,
        cgroup: &program.cgroup,
        layout: &[],
    }
}
