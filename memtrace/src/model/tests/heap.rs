//! brk: growing, shrinking and failing, and the room the heap has.

use crate::event::{Abi, Syscall};
use crate::model::testing::*;
use crate::model::RegionKind::{File, Heap, Stack};
use crate::model::{Origin, SyscallName};

const PID: u32 = 200;
const START_BRK: u64 = 0x0060_0000;
const STACK: (u64, u64) = (0x7ffd_0000_0000, 0x7ffd_0002_1000);

fn fed_after_exec() -> Feed {
    let mut feed = Feed::new();
    feed.exec(
        PID,
        exec_record("/usr/bin/bash", Abi::X86_64, START_BRK, STACK),
    );
    feed
}

#[test]
fn brk_grows_and_shrinks_one_heap_region() {
    let mut feed = fed_after_exec();
    feed.brk(PID, 0, START_BRK);
    feed.assert_layout(PID, &[(STACK.0, STACK.1, "rw-p", Stack, "[stack]")]);

    feed.brk(PID, START_BRK + 0x21000, START_BRK + 0x21000).brk(
        PID,
        START_BRK + 0x22010,
        START_BRK + 0x22010,
    );
    feed.assert_layout(
        PID,
        &[
            (START_BRK, START_BRK + 0x23000, "rw-p", Heap, "[heap]"),
            (STACK.0, STACK.1, "rw-p", Stack, "[stack]"),
        ],
    );
    let view = feed.model.process(PID).unwrap();
    let heap = view.layout().region_at(START_BRK).unwrap();
    assert_eq!(heap.created.origin, Origin::Syscall);
    assert_eq!(heap.created.syscall, Some(Syscall::Brk));
    assert_eq!(
        view.unreleased().count(),
        1,
        "the heap counts as one region"
    );

    feed.brk(PID, START_BRK + 0x1000, START_BRK + 0x1000);
    feed.assert_layout(
        PID,
        &[
            (START_BRK, START_BRK + 0x1000, "rw-p", Heap, "[heap]"),
            (STACK.0, STACK.1, "rw-p", Stack, "[stack]"),
        ],
    );
    feed.brk(PID, START_BRK, START_BRK);
    feed.assert_layout(PID, &[(STACK.0, STACK.1, "rw-p", Stack, "[stack]")]);
    let brk = feed.model.process(PID).unwrap().process().brk().clone();
    assert_eq!(
        (brk.start(), brk.current()),
        (Some(START_BRK), Some(START_BRK))
    );
}

#[test]
fn refused_brk_is_a_failure_with_the_size_asked_and_a_bounded_heap() {
    let mut feed = fed_after_exec();
    let lib = file(9, "/lib64/libc.so.6");
    feed.mmap_file(PID, START_BRK + MIB, 0x10000, RX, MAP_PRIVATE, 3, 0, lib)
        .brk(PID, START_BRK + 0x21000, START_BRK + 0x21000)
        // The kernel refuses by returning the old break.
        .brk(PID, START_BRK + 2 * MIB, START_BRK + 0x21000);
    feed.assert_layout(
        PID,
        &[
            (START_BRK, START_BRK + 0x21000, "rw-p", Heap, "[heap]"),
            (
                START_BRK + MIB,
                START_BRK + MIB + 0x10000,
                "r-xp",
                File,
                "/lib64/libc.so.6",
            ),
            (STACK.0, STACK.1, "rw-p", Stack, "[stack]"),
        ],
    );
    let view = feed.model.process(PID).unwrap();
    let brk = view.process().brk();
    assert_eq!(brk.failures().len(), 1);
    let failure = brk.failures()[0];
    assert_eq!(failure.requested, START_BRK + 2 * MIB);
    assert_eq!(failure.current, START_BRK + 0x21000);
    assert_eq!(failure.asked_bytes, 2 * MIB - 0x21000);
    let counts = view.process().stats().counts(SyscallName::Brk);
    assert_eq!((counts.calls, counts.failed), (2, 1));

    let headroom = view.headroom().unwrap();
    assert_eq!(headroom.room_total, Some(MIB));
    assert_eq!(headroom.room_left, Some(MIB - 0x21000));
    assert_eq!(headroom.bounded_by.name(), "/lib64/libc.so.6");
    assert_eq!(headroom.bounded_by.start, START_BRK + MIB);
}

#[test]
fn brk_query_is_not_a_failure() {
    let mut feed = fed_after_exec();
    feed.brk(PID, 0, START_BRK);
    let counts = feed
        .model
        .process(PID)
        .unwrap()
        .process()
        .stats()
        .counts(SyscallName::Brk);
    assert_eq!((counts.calls, counts.failed), (1, 0));
}

#[test]
fn a_process_met_mid_flight_learns_its_break_from_brk() {
    let mut feed = Feed::new();
    let current = 0x5555_0000_0000 + 0x4_2000;
    feed.brk(PID, 0, current)
        .brk(PID, current + 0x2000, current + 0x2000);
    feed.assert_layout(PID, &[(current, current + 0x2000, "rw-p", Heap, "[heap]")]);
    let view = feed.model.process(PID).unwrap();
    assert_eq!(view.process().brk().start(), None);
    assert_eq!(view.headroom(), None, "nothing above the heap");
}
