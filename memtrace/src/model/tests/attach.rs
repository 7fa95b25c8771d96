//! Layouts from `/proc/PID/maps`.

use crate::event::AttachEvent;
use crate::model::testing::*;
use crate::model::RegionKind::{Anon, File, Heap, Memfd, Other, SharedAnon, Stack, Vdso};
use crate::model::{space_from_maps, Birth, Origin};

const PID: u32 = 500;

fn maps() -> Vec<crate::event::MapsLine> {
    vec![
        maps_line(0x40_0000, 0x40_1000, "r-xp", 11, "/usr/sbin/sshd"),
        maps_line(0x60_0000, 0x62_1000, "rw-p", 0, "[heap]"),
        maps_line(
            0x7f00_0000_0000,
            0x7f00_0040_0000,
            "rw-s",
            77,
            "/memfd:doublemapper (deleted)",
        ),
        maps_line(0x7f00_0040_0000, 0x7f00_0041_0000, "rw-p", 0, ""),
        maps_line(
            0x7f00_0041_0000,
            0x7f00_0042_0000,
            "rw-s",
            3,
            "/dev/zero (deleted)",
        ),
        maps_line(0x7f00_0042_0000, 0x7f00_0043_0000, "rw-s", 0, ""),
        maps_line(
            0x7f00_0043_0000,
            0x7f00_0044_0000,
            "r--p",
            12,
            "/usr/lib/old.so (deleted)",
        ),
        maps_line(
            0x7f00_0044_0000,
            0x7f00_0045_0000,
            "rw-p",
            0,
            "[anon:glibc: malloc]",
        ),
        maps_line(
            0x7f00_0045_0000,
            0x7f00_0046_0000,
            "rw-p",
            5,
            "anon_inode:[perf_event]",
        ),
        maps_line(0x7ffc_0000_0000, 0x7ffc_0002_1000, "rw-p", 0, "[stack]"),
        maps_line(0x7ffc_0010_0000, 0x7ffc_0010_4000, "r--p", 0, "[vvar]"),
        maps_line(
            0x7ffc_0010_4000,
            0x7ffc_0010_5000,
            "r--p",
            0,
            "[vvar_vclock]",
        ),
        maps_line(0x7ffc_0010_5000, 0x7ffc_0010_7000, "r-xp", 0, "[vdso]"),
        maps_line(
            0xffff_ffff_ff60_0000,
            0xffff_ffff_ff60_1000,
            "--xp",
            0,
            "[vsyscall]",
        ),
    ]
}

#[test]
fn attach_builds_a_classified_layout() {
    let mut feed = Feed::new();
    feed.attach(
        PID,
        AttachEvent {
            regions: maps(),
            start_brk: 0x60_0000,
            brk: 0x62_0800,
            ppid: 1,
            exe: "/usr/sbin/sshd".to_owned(),
            memfd_fds: Vec::new(),
        },
    );
    feed.assert_layout(
        PID,
        &[
            (0x40_0000, 0x40_1000, "r-xp", File, "/usr/sbin/sshd"),
            (0x60_0000, 0x62_1000, "rw-p", Heap, "[heap]"),
            (
                0x7f00_0000_0000,
                0x7f00_0040_0000,
                "rw-s",
                Memfd,
                "memfd:doublemapper",
            ),
            (0x7f00_0040_0000, 0x7f00_0041_0000, "rw-p", Anon, ""),
            (0x7f00_0041_0000, 0x7f00_0042_0000, "rw-s", SharedAnon, ""),
            (0x7f00_0042_0000, 0x7f00_0043_0000, "rw-s", SharedAnon, ""),
            (
                0x7f00_0043_0000,
                0x7f00_0044_0000,
                "r--p",
                File,
                "/usr/lib/old.so",
            ),
            (
                0x7f00_0044_0000,
                0x7f00_0045_0000,
                "rw-p",
                Anon,
                "[anon:glibc: malloc]",
            ),
            (
                0x7f00_0045_0000,
                0x7f00_0046_0000,
                "rw-p",
                Other,
                "anon_inode:[perf_event]",
            ),
            (0x7ffc_0000_0000, 0x7ffc_0002_1000, "rw-p", Stack, "[stack]"),
            (0x7ffc_0010_0000, 0x7ffc_0010_4000, "r--p", Vdso, "[vvar]"),
            (
                0x7ffc_0010_4000,
                0x7ffc_0010_5000,
                "r--p",
                Vdso,
                "[vvar_vclock]",
            ),
            (0x7ffc_0010_5000, 0x7ffc_0010_7000, "r-xp", Vdso, "[vdso]"),
            (
                0xffff_ffff_ff60_0000,
                0xffff_ffff_ff60_1000,
                "--xp",
                Vdso,
                "[vsyscall]",
            ),
        ],
    );
    let view = feed.model.process(PID).unwrap();
    let process = view.process();
    assert_eq!(process.birth(), Birth::Attach);
    assert_eq!((process.ppid(), process.exe()), (1, "/usr/sbin/sshd"));
    assert_eq!(
        (process.brk().start(), process.brk().current()),
        (Some(0x60_0000), Some(0x62_0800))
    );
    assert!(view
        .layout()
        .iter()
        .all(|region| region.created.origin == Origin::Attach));
    assert_eq!(view.unreleased().count(), 0, "nothing the session created");
    assert_eq!(view.layout().region_at(0x40_0000).unwrap().inode, 11);
}

#[test]
fn the_model_compares_with_maps_through_coverage() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, 0x7f00_0000_0000, 0x1000, RW)
        .mmap_anon(PID, 0x7f00_0000_1000, 0x1000, RW)
        .syscall(
            PID,
            crate::event::Syscall::Mmap,
            [0, 0x1000, RW, MAP_SHARED | MAP_ANONYMOUS, u64::MAX, 0],
            0x7f00_0000_2000,
        );
    let kernel = space_from_maps(&[
        maps_line(0x7f00_0000_0000, 0x7f00_0000_2000, "rw-p", 0, ""),
        maps_line(
            0x7f00_0000_2000,
            0x7f00_0000_3000,
            "rw-s",
            1,
            "/dev/zero (deleted)",
        ),
    ]);
    let model = feed.model.process(PID).unwrap().layout().coverage();
    assert_eq!(model, kernel.coverage());
}
