//! The program break: the heap region it implies, its failures, and how much room it has
//! before it runs into the next mapping.

use std::sync::Arc;

use crate::model::address_space::AddressSpace;
use crate::model::region::{page_align_up, Creation, Perms, Region, RegionKind};

pub const HEAP_NAME: &str = "[heap]";

/// A brk call the kernel refused (it returns the old break instead of -errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrkFailure {
    pub time_ns: u64,
    pub requested: u64,
    /// The break at the time, as the failed call returned it.
    pub current: u64,
    /// How far beyond the current break the program wanted to go.
    pub asked_bytes: u64,
}

/// How much the break can still grow, and what stops it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Headroom<'a> {
    /// From start_brk to the next mapping; `None` when start_brk is unknown.
    pub room_total: Option<u64>,
    /// From the current break to the next mapping; `None` when the break is unknown.
    pub room_left: Option<u64>,
    /// The lowest mapping above start_brk that is not the heap.
    pub bounded_by: &'a Region,
}

/// start_brk and brk are unknown only for a process memtrace met without an exec or attach;
/// it learns the break from the first brk call then, but never the start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrkState {
    start: Option<u64>,
    current: Option<u64>,
    /// Boxed: most processes have none, and every process, a forked child that never ran
    /// included, pays for the field; the second allocation is the point (8 bytes, not 24).
    #[allow(clippy::box_collection)]
    failures: Option<Box<Vec<BrkFailure>>>,
}

impl BrkState {
    pub fn start(&self) -> Option<u64> {
        self.start
    }

    pub fn current(&self) -> Option<u64> {
        self.current
    }

    pub fn failures(&self) -> &[BrkFailure] {
        self.failures.as_deref().map_or(&[], Vec::as_slice)
    }

    pub fn headroom<'a>(&self, space: &'a AddressSpace) -> Option<Headroom<'a>> {
        let floor = self.start.or(self.current)?;
        let bounded_by = space.first_from(floor, |region| region.kind != RegionKind::Heap)?;
        Some(Headroom {
            room_total: self
                .start
                .map(|start| bounded_by.start.saturating_sub(start)),
            room_left: self
                .current
                .map(|current| bounded_by.start.saturating_sub(current)),
            bounded_by,
        })
    }

    /// A new image's break (exec, attach); its failures stay with the process.
    pub(crate) fn reset(&mut self, start: u64, current: u64) {
        self.start = Some(start);
        self.current = Some(current);
    }

    /// The child's break after fork: same values, none of the parent's history.
    pub(crate) fn inherit(&self) -> BrkState {
        BrkState {
            start: self.start,
            current: self.current,
            failures: None,
        }
    }

    pub(crate) fn record_failure(&mut self, failure: BrkFailure) {
        self.failures.get_or_insert_default().push(failure);
    }

    /// Moves the break and grows or shrinks the heap region to `[start_brk, page_align(brk))`.
    pub(crate) fn move_break(
        &mut self,
        new_break: u64,
        space: &mut AddressSpace,
        creation: Creation,
        heap_name: &Arc<str>,
    ) {
        let Some(old_break) = self.current.replace(new_break) else {
            return;
        };
        let floor = self.start.unwrap_or(old_break);
        let heap_end = |brk: u64| {
            if brk <= floor {
                floor
            } else {
                page_align_up(brk)
            }
        };
        let (old_end, new_end) = (heap_end(old_break), heap_end(new_break));
        if new_end < old_end {
            space.unmap(new_end, old_end);
        } else if new_end > old_end
            && !space
                .grow_region_ending_at(old_end, new_end, |region| region.kind == RegionKind::Heap)
        {
            space.map(heap_region(old_end, new_end, creation, heap_name));
        }
    }
}

pub(crate) fn heap_region(start: u64, end: u64, created: Creation, name: &Arc<str>) -> Region {
    Region {
        start,
        end,
        perms: Perms::PRIVATE_RW,
        kind: RegionKind::Heap,
        name: Some(name.clone()),
        offset: 0,
        inode: 0,
        created,
        memfd: None,
        thread_stack: false,
        sealed: false,
        pkey: 0,
        stack: None,
    }
}
