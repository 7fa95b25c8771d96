//! What an exited process keeps: enough for its report, not a copy of its parent.
//!
//! A forked child that never exec'd ran on a copy of its parent's layout; once it has exited,
//! that copy says nothing the parent's own report does not. It keeps the regions it created
//! itself (its leaks), the ones its call stacks run through (to name their frames), and its
//! heap and what bounds it (its brk report). So 1M short-lived children cost memtrace what
//! they did, not 1M copies of their parent. Distributions shrink to their summaries
//! ([`SyscallStats::compact`](crate::model::stats::SyscallStats::compact)).

use std::collections::BTreeSet;

use crate::model::address_space::AddressSpace;
use crate::model::brk::BrkState;
use crate::model::call_stacks::CallStacks;
use crate::model::region::{Origin, RegionKind};

/// Drops from an exited child's layout what it only inherited.
pub(crate) fn inherited_copy(
    space: &mut AddressSpace,
    pid: u32,
    brk: &BrkState,
    stacks: &CallStacks,
) {
    let own = |origin: Origin, creator: u32| origin != Origin::Attach && creator == pid;
    let mut keep: BTreeSet<u64> = BTreeSet::new();
    let mut frames: Vec<u64> = Vec::new();
    for region in space.iter() {
        if own(region.created.origin, region.created.pid) || region.kind == RegionKind::Heap {
            keep.insert(region.start);
            if let Some(stack) = region.stack {
                frames.extend(stacks.frames(stack));
            }
        }
    }
    for address in frames {
        // A return address points after its call: the call's region is the one before it.
        for lookup in [address, address.saturating_sub(1)] {
            if let Some(region) = space.region_at(lookup) {
                keep.insert(region.start);
            }
        }
    }
    if let Some(headroom) = brk.headroom(space) {
        keep.insert(headroom.bounded_by.start);
    }
    if keep.len() == space.len() {
        return;
    }
    space.retain(|region| keep.contains(&region.start));
}
