//! One list of call stacks with their weights, shared by the stack formats (pprof, folded,
//! the HTML flame graph) so that they all say the same thing.

use std::collections::BTreeMap;

use crate::report::call_sites::{frame_label, is_allocator_frame};
use crate::report::schema::{FrameReport, ProcessReport};

/// The frame standing for unreleased regions created without a sampled stack (smaller than
/// --stack-min-size, or traced with --no-stacks), so that stack totals match `unreleased`.
pub(crate) const NO_STACK: &str = "[no call stack sampled]";

/// One call stack of one process and what it created.
pub(crate) struct ProfileStack<'r> {
    pub process: &'r ProcessReport,
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

/// Every process's stacks, each process's largest in-use first.
pub(crate) fn profile_stacks(processes: &[ProcessReport]) -> Vec<ProfileStack<'_>> {
    processes.iter().flat_map(process_stacks).collect()
}

fn process_stacks(process: &ProcessReport) -> Vec<ProfileStack<'_>> {
    // The same stack appears in both lists; its addresses identify it.
    let mut stacks: BTreeMap<Vec<u64>, ProfileStack<'_>> = BTreeMap::new();
    let empty = |frames| ProfileStack {
        process,
        frames,
        inuse_bytes: 0,
        inuse_regions: 0,
        alloc_bytes: 0,
        alloc_regions: 0,
    };
    for group in &process.unreleased.by_stack {
        let stack = stacks
            .entry(addresses(&group.frames))
            .or_insert_with(|| empty(program_frames(&group.frames)));
        stack.inuse_bytes += group.bytes;
        stack.inuse_regions += group.count;
    }
    for site in &process.allocated_by_stack {
        let stack = stacks
            .entry(addresses(&site.frames))
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
    let unreleased = &process.unreleased;
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

fn addresses(frames: &[FrameReport]) -> Vec<u64> {
    frames.iter().map(|frame| frame.address).collect()
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

/// The root frame naming the process: `comm-pid`, as perf's collapsed stacks do.
pub(crate) fn process_label(process: &ProcessReport) -> String {
    format!("{}-{}", process.comm, process.pid)
}
