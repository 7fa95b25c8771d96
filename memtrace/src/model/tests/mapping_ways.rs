//! The ways of mapping besides mmap (#23): SysV segments, AIO rings, protection keys, seals,
//! remap_file_pages, each as the kernel applies it.

use crate::event::{completed_args, Syscall};
use crate::model::testing::*;
use crate::model::RegionKind::{Anon, Memfd, Other, SharedAnon};
use crate::model::SyscallName;

const PID: u32 = 100;
const A: u64 = 0x7f00_0000_0000;
const PAGE: u64 = 0x1000;
const EPERM: i64 = 1;

/// A successful shmat of segment `shmid` (key `key`, `size` bytes as capture read them) at `at`.
fn shmat(feed: &mut Feed, shmid: u64, key: u32, size: u64, flags: u64, at: u64) {
    let mut args = [shmid, 0, flags, 0, 0, 0];
    args[completed_args::SHMAT_SIZE] = size;
    args[completed_args::SHMAT_KEY] = u64::from(key);
    feed.syscall(PID, Syscall::Shmat, args, at as i64);
}

fn calls(feed: &Feed, name: SyscallName) -> (u64, u64) {
    let view = feed.model.process(PID).unwrap();
    let counts = view.process().stats().counts(name);
    (counts.calls, counts.failed)
}

#[test]
fn shmdt_removes_every_piece_of_one_attachment_and_nothing_else() {
    let mut feed = Feed::new();
    // Segment 7 attached twice, the first attachment split by an mprotect.
    shmat(&mut feed, 7, 0x1234, 4 * PAGE, 0, A);
    shmat(&mut feed, 7, 0x1234, 4 * PAGE, 0o10000, A + 8 * PAGE);
    feed.mprotect(PID, A + PAGE, PAGE, PROT_READ);
    feed.assert_layout(
        PID,
        &[
            (A, A + PAGE, "rw-s", SharedAnon, "/SYSV00001234"),
            (A + PAGE, A + 2 * PAGE, "r--s", SharedAnon, "/SYSV00001234"),
            (
                A + 2 * PAGE,
                A + 4 * PAGE,
                "rw-s",
                SharedAnon,
                "/SYSV00001234",
            ),
            (
                A + 8 * PAGE,
                A + 12 * PAGE,
                "r--s",
                SharedAnon,
                "/SYSV00001234",
            ),
        ],
    );
    feed.syscall(PID, Syscall::Shmdt, [A, 0, 0, 0, 0, 0], 0);
    feed.assert_layout(
        PID,
        &[(
            A + 8 * PAGE,
            A + 12 * PAGE,
            "r--s",
            SharedAnon,
            "/SYSV00001234",
        )],
    );
    let view = feed.model.process(PID).unwrap();
    assert_eq!(view.layout().region_at(A + 8 * PAGE).unwrap().inode, 7);
    assert_eq!(calls(&feed, SyscallName::Shmat), (2, 0));
    assert_eq!(calls(&feed, SyscallName::Shmdt), (1, 0));
}

#[test]
fn a_shmat_of_unknown_size_is_counted_and_maps_nothing() {
    let mut feed = Feed::new();
    shmat(&mut feed, 7, 0, 0, 0, A);
    feed.syscall(PID, Syscall::Shmdt, [A, 0, 0, 0, 0, 0], 0);
    feed.assert_layout(PID, &[]);
    assert_eq!(calls(&feed, SyscallName::Shmat), (1, 0));
    assert_eq!(calls(&feed, SyscallName::Shmdt), (1, 0));
}

#[test]
fn io_setup_maps_the_ring_and_io_destroy_removes_it() {
    let mut feed = Feed::new();
    let ring = |at: u64, size: u64| {
        let mut args = [128, 0x5000, at, 0, 0, 0];
        args[completed_args::IO_SETUP_RING_SIZE] = size;
        args
    };
    feed.syscall(PID, Syscall::IoSetup, ring(A, 3 * PAGE), 0)
        .syscall(PID, Syscall::IoSetup, ring(A + 4 * PAGE, PAGE), 0)
        // A failed one maps nothing.
        .syscall(PID, Syscall::IoSetup, ring(0, 0), -11);
    feed.syscall(PID, Syscall::IoDestroy, [A + 4 * PAGE, 0, 0, 0, 0, 0], 0);
    feed.assert_layout(PID, &[(A, A + 3 * PAGE, "rw-s", Other, "/[aio]")]);
    assert_eq!(calls(&feed, SyscallName::IoSetup), (3, 1));
    assert_eq!(calls(&feed, SyscallName::IoDestroy), (1, 0));
}

#[test]
fn pkey_mprotect_changes_permissions_as_mprotect_does() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, 4 * PAGE, RW).syscall(
        PID,
        Syscall::PkeyMprotect,
        [A + PAGE, PAGE, PROT_READ, 1, 0, 0],
        0,
    );
    feed.assert_layout(
        PID,
        &[
            (A, A + PAGE, "rw-p", Anon, ""),
            (A + PAGE, A + 2 * PAGE, "r--p", Anon, ""),
            (A + 2 * PAGE, A + 4 * PAGE, "rw-p", Anon, ""),
        ],
    );
    let view = feed.model.process(PID).unwrap();
    assert_eq!(view.layout().region_at(A + PAGE).unwrap().pkey, 1);
    assert_eq!(view.layout().region_at(A).unwrap().pkey, 0);
    // Key -1 keeps the pages' key, as mprotect does.
    feed.syscall(
        PID,
        Syscall::PkeyMprotect,
        [A + PAGE, PAGE, RW, u64::from(u32::MAX), 0, 0],
        0,
    );
    let view = feed.model.process(PID).unwrap();
    let region = view.layout().region_at(A + PAGE).unwrap();
    assert_eq!(
        (region.perms.to_string().as_str(), region.pkey),
        ("rw-p", 1)
    );
    assert_eq!(calls(&feed, SyscallName::PkeyMprotect), (2, 0));
}

#[test]
fn a_sealed_range_is_not_unmapped_nor_reprotected() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, 4 * PAGE, RW)
        .syscall(PID, Syscall::Mseal, [A, 2 * PAGE, 0, 0, 0, 0], 0)
        // What the kernel does: refuses.
        .syscall(PID, Syscall::Munmap, [A, PAGE, 0, 0, 0, 0], -EPERM)
        .syscall(PID, Syscall::Mprotect, [A + PAGE, PAGE, 0, 0, 0, 0], -EPERM)
        // A success the kernel cannot have given: an anomaly, not applied.
        .syscall(PID, Syscall::Munmap, [A, 4 * PAGE, 0, 0, 0, 0], 0)
        // Past the seal, as usual.
        .munmap(PID, A + 3 * PAGE, PAGE);
    // Split at the seal's end, as the kernel splits the VMA.
    feed.assert_layout(
        PID,
        &[
            (A, A + 2 * PAGE, "rw-p", Anon, ""),
            (A + 2 * PAGE, A + 3 * PAGE, "rw-p", Anon, ""),
        ],
    );
    let view = feed.model.process(PID).unwrap();
    assert!(view.layout().region_at(A).unwrap().sealed);
    assert!(!view.layout().region_at(A + 2 * PAGE).unwrap().sealed);
    let anomalies = view.process().anomalies();
    assert_eq!(anomalies.count, 1);
    assert_eq!(anomalies.examples[0].reason, "the range is sealed");
    assert_eq!(calls(&feed, SyscallName::Mseal), (1, 0));
    assert_eq!(calls(&feed, SyscallName::Munmap), (2, 1));
    assert_eq!(calls(&feed, SyscallName::Mprotect), (1, 1));
}

#[test]
fn remap_file_pages_keeps_the_layout_and_moves_the_offset() {
    let mut feed = Feed::new();
    feed.memfd_create(PID, "db", 77, 3)
        .mmap_memfd(PID, A, 4 * PAGE, RW, ("db", 77, 3))
        .syscall(PID, Syscall::RemapFilePages, [A, PAGE, 0, 2, 0, 0], 0);
    // Split where the file's pages stop following on, as the kernel's new VMA is.
    feed.assert_layout(
        PID,
        &[
            (A, A + PAGE, "rw-s", Memfd, "memfd:db"),
            (A + PAGE, A + 4 * PAGE, "rw-s", Memfd, "memfd:db"),
        ],
    );
    let view = feed.model.process(PID).unwrap();
    assert_eq!(view.layout().region_at(A).unwrap().offset, 2 * PAGE);
    assert_eq!(view.layout().region_at(A + PAGE).unwrap().offset, PAGE);
    assert_eq!(calls(&feed, SyscallName::RemapFilePages), (1, 0));
}
