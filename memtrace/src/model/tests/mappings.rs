//! mmap, munmap, mprotect and mremap on one process.

use crate::event::{Abi, Syscall};
use crate::model::testing::*;
use crate::model::RegionKind::{Anon, File, Other, SharedAnon};
use crate::model::{Origin, SyscallName};

const PID: u32 = 100;
const A: u64 = 0x7f00_0000_0000;
const PAGE: u64 = 0x1000;

fn libfoo() -> crate::event::FileRef {
    file(42, "/usr/lib/libfoo.so")
}

#[test]
fn anonymous_mmap_rounds_its_length_up_to_a_page() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, 100, RW);
    feed.assert_layout(PID, &[(A, A + PAGE, "rw-p", Anon, "")]);
    let view = feed.model.process(PID).unwrap();
    let region = view.layout().region_at(A).unwrap();
    assert_eq!(region.created.origin, Origin::Syscall);
    assert_eq!(region.created.syscall, Some(Syscall::Mmap));
    assert_eq!(region.created.pid, PID);
}

#[test]
fn shared_anonymous_and_file_mappings_are_classified() {
    let mut feed = Feed::new();
    feed.syscall(
        PID,
        Syscall::Mmap,
        [0, PAGE, RW, MAP_SHARED | MAP_ANONYMOUS, u64::MAX, 0],
        A as i64,
    )
    .mmap_file(
        PID,
        A + PAGE,
        2 * PAGE,
        RX,
        MAP_PRIVATE,
        3,
        0x3000,
        libfoo(),
    )
    .syscall(
        PID,
        Syscall::Mmap,
        [0, PAGE, PROT_READ, MAP_PRIVATE, 9, 0],
        (A + 3 * PAGE) as i64,
    );
    feed.assert_layout(
        PID,
        &[
            (A, A + PAGE, "rw-s", SharedAnon, ""),
            (A + PAGE, A + 3 * PAGE, "r-xp", File, "/usr/lib/libfoo.so"),
            // A file the kernel side could not name.
            (A + 3 * PAGE, A + 4 * PAGE, "r--p", Other, ""),
        ],
    );
    let view = feed.model.process(PID).unwrap();
    let lib = view.layout().region_at(A + PAGE).unwrap();
    assert_eq!((lib.offset, lib.inode), (0x3000, 42));
}

#[test]
fn failed_mmap_changes_nothing_but_is_counted() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, PAGE, RW).syscall(
        PID,
        Syscall::Mmap,
        [0, 1 << 40, RW, ANON, u64::MAX, 0],
        -ENOMEM,
    );
    feed.assert_layout(PID, &[(A, A + PAGE, "rw-p", Anon, "")]);
    let view = feed.model.process(PID).unwrap();
    let counts = view.process().stats().counts(SyscallName::Mmap);
    assert_eq!((counts.calls, counts.failed), (2, 1));
}

#[test]
fn ia32_mmap2_counts_its_offset_in_pages_and_old_mmap_in_bytes() {
    let mut feed = Feed::new();
    feed.abi = Abi::I386;
    let lib = file(7, "/usr/lib32/libc.so.6");
    // A result an ia32 task sees as 0xf7f00000, sign-extended on the way out.
    let sign_extended = 0xffff_ffff_f7f0_0000_u64 as i64;
    feed.syscall_full(
        PID,
        Syscall::Mmap2,
        [0, PAGE, RX, MAP_PRIVATE, 3, 5],
        sign_extended,
        None,
        Some(lib.clone()),
    )
    .syscall_full(
        PID,
        Syscall::OldMmap,
        [0, PAGE, PROT_READ, MAP_PRIVATE, 3, 0x2000],
        0xf7f1_0000,
        None,
        Some(lib),
    );
    feed.assert_layout(
        PID,
        &[
            (
                0xf7f0_0000,
                0xf7f0_1000,
                "r-xp",
                File,
                "/usr/lib32/libc.so.6",
            ),
            (
                0xf7f1_0000,
                0xf7f1_1000,
                "r--p",
                File,
                "/usr/lib32/libc.so.6",
            ),
        ],
    );
    let view = feed.model.process(PID).unwrap();
    assert_eq!(
        view.layout().region_at(0xf7f0_0000).unwrap().offset,
        5 * 4096
    );
    assert_eq!(view.layout().region_at(0xf7f1_0000).unwrap().offset, 0x2000);
    assert_eq!(view.process().stats().counts(SyscallName::Mmap).calls, 2);
    assert_eq!(view.process().abi(), Abi::I386);
}

#[test]
fn munmap_of_the_head_tail_and_middle_splits_regions() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, 10 * PAGE, RW)
        .munmap(PID, A, PAGE)
        .munmap(PID, A + 9 * PAGE, PAGE)
        .munmap(PID, A + 4 * PAGE, 2 * PAGE);
    feed.assert_layout(
        PID,
        &[
            (A + PAGE, A + 4 * PAGE, "rw-p", Anon, ""),
            (A + 6 * PAGE, A + 9 * PAGE, "rw-p", Anon, ""),
        ],
    );
}

#[test]
fn munmap_across_regions_and_holes_removes_everything_in_range() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, 2 * PAGE, RW)
        .mmap_file(
            PID,
            A + 3 * PAGE,
            2 * PAGE,
            PROT_READ,
            MAP_PRIVATE,
            3,
            0,
            libfoo(),
        )
        .mmap_anon(PID, A + 6 * PAGE, 2 * PAGE, RW)
        .munmap(PID, A + PAGE, 6 * PAGE);
    feed.assert_layout(
        PID,
        &[
            (A, A + PAGE, "rw-p", Anon, ""),
            (A + 7 * PAGE, A + 8 * PAGE, "rw-p", Anon, ""),
        ],
    );
}

#[test]
fn split_file_mappings_keep_their_offsets() {
    let mut feed = Feed::new();
    feed.mmap_file(
        PID,
        A,
        4 * PAGE,
        PROT_READ,
        MAP_PRIVATE,
        3,
        0x10000,
        libfoo(),
    )
    .munmap(PID, A + PAGE, PAGE);
    let view = feed.model.process(PID).unwrap();
    let offsets: Vec<_> = view.layout().iter().map(|r| (r.start, r.offset)).collect();
    assert_eq!(offsets, [(A, 0x10000), (A + 2 * PAGE, 0x12000)]);
}

#[test]
fn map_fixed_replaces_what_it_overlays() {
    let mut feed = Feed::new();
    feed.mmap_file(PID, A, 4 * PAGE, PROT_READ, MAP_PRIVATE, 3, 0, libfoo())
        .mmap_anon(PID, A + 4 * PAGE, 4 * PAGE, RW)
        // Straddles both regions.
        .mmap_fixed_anon(PID, A + 3 * PAGE, 2 * PAGE, PROT_NONE)
        // Inside one region.
        .mmap_fixed_anon(PID, A + PAGE, PAGE, RX);
    feed.assert_layout(
        PID,
        &[
            (A, A + PAGE, "r--p", File, "/usr/lib/libfoo.so"),
            (A + PAGE, A + 2 * PAGE, "r-xp", Anon, ""),
            (
                A + 2 * PAGE,
                A + 3 * PAGE,
                "r--p",
                File,
                "/usr/lib/libfoo.so",
            ),
            (A + 3 * PAGE, A + 5 * PAGE, "---p", Anon, ""),
            (A + 5 * PAGE, A + 8 * PAGE, "rw-p", Anon, ""),
        ],
    );
    let view = feed.model.process(PID).unwrap();
    assert_eq!(
        view.layout().region_at(A + 2 * PAGE).unwrap().offset,
        2 * PAGE
    );
}

#[test]
fn mprotect_splits_and_keeps_private_or_shared() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, 4 * PAGE, RW)
        .syscall(
            PID,
            Syscall::Mmap,
            [0, 2 * PAGE, RW, MAP_SHARED | MAP_ANONYMOUS, u64::MAX, 0],
            (A + 4 * PAGE) as i64,
        )
        .mprotect(PID, A + PAGE, PAGE, PROT_NONE)
        // Across the boundary of both mappings; PROT_GROWSDOWN-style high bits are ignored.
        .mprotect(PID, A + 3 * PAGE, 2 * PAGE, PROT_READ | 0x0100_0000);
    feed.assert_layout(
        PID,
        &[
            (A, A + PAGE, "rw-p", Anon, ""),
            (A + PAGE, A + 2 * PAGE, "---p", Anon, ""),
            (A + 2 * PAGE, A + 3 * PAGE, "rw-p", Anon, ""),
            (A + 3 * PAGE, A + 4 * PAGE, "r--p", Anon, ""),
            (A + 4 * PAGE, A + 5 * PAGE, "r--s", SharedAnon, ""),
            (A + 5 * PAGE, A + 6 * PAGE, "rw-s", SharedAnon, ""),
        ],
    );
}

#[test]
fn mremap_shrinks_in_place() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, 4 * PAGE, RW)
        .mremap(PID, (A, 4 * PAGE), PAGE, 0, A);
    feed.assert_layout(PID, &[(A, A + PAGE, "rw-p", Anon, "")]);
}

#[test]
fn mremap_grows_in_place_as_one_region() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, 2 * PAGE, RW)
        .mremap(PID, (A, 2 * PAGE), 5 * PAGE, MREMAP_MAYMOVE, A);
    feed.assert_layout(PID, &[(A, A + 5 * PAGE, "rw-p", Anon, "")]);
    let view = feed.model.process(PID).unwrap();
    // Still the mmap's region: created by mmap, not by mremap.
    assert_eq!(
        view.layout().region_at(A).unwrap().created.syscall,
        Some(Syscall::Mmap)
    );
}

#[test]
fn mremap_moves_keeping_perms_backing_and_origin() {
    let mut feed = Feed::new();
    let b = A + 0x100_0000;
    feed.mmap_file(
        PID,
        A,
        4 * PAGE,
        PROT_READ,
        MAP_PRIVATE,
        3,
        0x8000,
        libfoo(),
    )
    // The middle two pages of the file mapping move, and grow by a page.
    .mremap(PID, (A + PAGE, 2 * PAGE), 3 * PAGE, MREMAP_MAYMOVE, b);
    feed.assert_layout(
        PID,
        &[
            (A, A + PAGE, "r--p", File, "/usr/lib/libfoo.so"),
            (
                A + 3 * PAGE,
                A + 4 * PAGE,
                "r--p",
                File,
                "/usr/lib/libfoo.so",
            ),
            (b, b + 3 * PAGE, "r--p", File, "/usr/lib/libfoo.so"),
        ],
    );
    let view = feed.model.process(PID).unwrap();
    let moved = view.layout().region_at(b).unwrap();
    assert_eq!(moved.offset, 0x9000, "offset of the part that moved");
    assert_eq!(moved.created.syscall, Some(Syscall::Mmap));
    assert_eq!(
        view.layout().region_at(A + 3 * PAGE).unwrap().offset,
        0xb000
    );
}

#[test]
fn mremap_moving_a_shrunk_range_gives_the_tail_back() {
    let mut feed = Feed::new();
    let b = A + 0x100_0000;
    feed.mmap_anon(PID, A, 4 * PAGE, RW)
        .mremap(PID, (A, 4 * PAGE), PAGE, MREMAP_MAYMOVE, b);
    feed.assert_layout(PID, &[(b, b + PAGE, "rw-p", Anon, "")]);
}

#[test]
fn mremap_fixed_replaces_the_target_range() {
    let mut feed = Feed::new();
    let b = A + 0x100_0000;
    feed.mmap_anon(PID, A, 2 * PAGE, RW)
        .mmap_file(PID, b, 4 * PAGE, PROT_READ, MAP_PRIVATE, 3, 0, libfoo())
        .mremap(
            PID,
            (A, 2 * PAGE),
            2 * PAGE,
            MREMAP_MAYMOVE | MREMAP_FIXED,
            b + PAGE,
        );
    feed.assert_layout(
        PID,
        &[
            (b, b + PAGE, "r--p", File, "/usr/lib/libfoo.so"),
            (b + PAGE, b + 3 * PAGE, "rw-p", Anon, ""),
            (
                b + 3 * PAGE,
                b + 4 * PAGE,
                "r--p",
                File,
                "/usr/lib/libfoo.so",
            ),
        ],
    );
}

#[test]
fn mremap_dontunmap_leaves_the_old_range_mapped() {
    let mut feed = Feed::new();
    let b = A + 0x100_0000;
    feed.mmap_anon(PID, A, 2 * PAGE, RW).mremap(
        PID,
        (A, 2 * PAGE),
        2 * PAGE,
        MREMAP_MAYMOVE | MREMAP_DONTUNMAP,
        b,
    );
    feed.assert_layout(
        PID,
        &[
            (A, A + 2 * PAGE, "rw-p", Anon, ""),
            (b, b + 2 * PAGE, "rw-p", Anon, ""),
        ],
    );
}

#[test]
fn mremap_of_memory_never_seen_maps_the_new_range() {
    let mut feed = Feed::new();
    feed.mremap(PID, (A, PAGE), 4 * PAGE, MREMAP_MAYMOVE, A + 0x10_0000);
    feed.assert_layout(PID, &[(A + 0x10_0000, A + 0x10_4000, "rw-p", Anon, "")]);
}

#[test]
fn failed_munmap_mprotect_and_mremap_change_nothing() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, 2 * PAGE, RW)
        .syscall(PID, Syscall::Munmap, [A, PAGE, 0, 0, 0, 0], -22)
        .syscall(
            PID,
            Syscall::Mprotect,
            [A, PAGE, PROT_NONE, 0, 0, 0],
            -ENOMEM,
        )
        .syscall(
            PID,
            Syscall::Mremap,
            [A, 2 * PAGE, 8 * PAGE, 0, 0, 0],
            -ENOMEM,
        );
    feed.assert_layout(PID, &[(A, A + 2 * PAGE, "rw-p", Anon, "")]);
    let stats = feed.model.process(PID).unwrap().process().stats();
    for name in [
        SyscallName::Munmap,
        SyscallName::Mprotect,
        SyscallName::Mremap,
    ] {
        assert_eq!(stats.counts(name).failed, 1, "{name:?}");
    }
}

#[test]
fn distributions_record_sizes_and_latency() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, PAGE, RW)
        .mmap_anon(PID, A + PAGE, 16 * MIB, RW)
        .munmap(PID, A, PAGE);
    let stats = feed.model.process(PID).unwrap().process().stats();
    let sizes = stats.sizes(SyscallName::Mmap);
    assert_eq!(sizes.count, 2);
    assert_eq!(sizes.p50, PAGE);
    assert!(sizes.max >= 16 * MIB && sizes.max <= 16 * MIB + 16 * MIB / 100);
    let latency = stats.latency_ns(SyscallName::Mmap);
    assert_eq!((latency.count, latency.p50, latency.max), (2, 500, 500));
}

#[test]
fn coverage_merges_neighbours_with_the_same_perms_and_backing() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, PAGE, RW)
        .mmap_anon(PID, A + PAGE, PAGE, RW)
        .mmap_anon(PID, A + 2 * PAGE, PAGE, PROT_READ)
        .mmap_file(
            PID,
            A + 3 * PAGE,
            PAGE,
            PROT_READ,
            MAP_PRIVATE,
            3,
            0,
            libfoo(),
        )
        .mmap_file(
            PID,
            A + 4 * PAGE,
            PAGE,
            PROT_READ,
            MAP_PRIVATE,
            3,
            PAGE,
            libfoo(),
        );
    let view = feed.model.process(PID).unwrap();
    let coverage: Vec<_> = view
        .layout()
        .coverage()
        .into_iter()
        .map(|entry| (entry.start, entry.end, entry.perms.to_string(), entry.name))
        .collect();
    assert_eq!(
        coverage,
        [
            (A, A + 2 * PAGE, "rw-p".to_owned(), String::new()),
            (A + 2 * PAGE, A + 3 * PAGE, "r--p".to_owned(), String::new()),
            (
                A + 3 * PAGE,
                A + 5 * PAGE,
                "r--p".to_owned(),
                "/usr/lib/libfoo.so".to_owned()
            ),
        ]
    );
}

/// An exited process's layout is frozen into a sorted slice: it must answer every question as
/// the map did, and a change (a late stack sample's, a fork of an exited parent's copy) must
/// thaw it, not be lost.
#[test]
fn a_frozen_layout_answers_and_changes_like_the_map() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, 4 * PAGE, RW)
        .mmap_anon(PID, A + 8 * PAGE, PAGE, RW)
        .mprotect(PID, A + PAGE, PAGE, PROT_NONE)
        .mmap_anon(PID, A + 16 * PAGE, 2 * PAGE, RW);
    let tree = feed.model.process(PID).unwrap().layout().clone();
    let mut frozen = tree.clone();
    frozen.freeze();
    assert!(tree.iter().eq(frozen.iter()));
    assert_eq!(frozen, tree);
    assert_eq!(frozen.len(), tree.len());
    assert_eq!(frozen.total_bytes(), tree.total_bytes());
    assert_eq!(frozen.coverage(), tree.coverage());
    for address in (A - PAGE..A + 20 * PAGE).step_by(PAGE as usize / 2) {
        assert_eq!(
            frozen.region_at(address),
            tree.region_at(address),
            "{address:#x}"
        );
        assert_eq!(
            frozen.first_from(address, |_| true),
            tree.first_from(address, |_| true),
            "{address:#x}"
        );
    }
    let mut changed = tree.clone();
    for space in [&mut frozen, &mut changed] {
        space.unmap(A + 2 * PAGE, A + 9 * PAGE);
        space.protect(A + 16 * PAGE, A + 17 * PAGE, RX);
    }
    assert_eq!(frozen, changed);
    assert_eq!(frozen.len(), 4);
}
