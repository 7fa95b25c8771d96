//! Keyframes: a live process's state written in the attach layout's form and read back by a
//! model that starts there (the agent's capture) gives the same layout, break and memfd state.

use crate::event::{Event, EventBody};
use crate::model::testing::*;
use crate::model::{Model, RegionKind};

const PID: u32 = 700;
const EXITED: u32 = 701;
const A: u64 = 0x7f00_0000_0000;

/// Everything a layout can hold: a heap, anonymous and shared anonymous memory, a file, a
/// memfd whose fd was closed and one whose fd is open, a prctl-named region.
fn busy_process() -> Feed {
    let mut feed = Feed::new();
    feed.attach(
        PID,
        crate::event::AttachEvent {
            regions: vec![
                maps_line(0x40_0000, 0x40_1000, "r-xp", 11, "/usr/bin/service"),
                maps_line(0x7ffc_0000_0000, 0x7ffc_0002_1000, "rw-p", 0, "[stack]"),
                maps_line(0x7ffc_0010_5000, 0x7ffc_0010_7000, "r-xp", 0, "[vdso]"),
                maps_line(
                    A + 0x9000_0000,
                    A + 0x9001_0000,
                    "rw-p",
                    0,
                    "[anon:glibc: malloc]",
                ),
            ],
            start_brk: 0x60_0000,
            brk: 0x60_0000,
            ppid: 1,
            exe: "/usr/bin/service".to_owned(),
            memfd_fds: Vec::new(),
        },
    );
    feed.brk(PID, 0x62_0000, 0x62_0000)
        .mmap_anon(PID, A, 16 * MIB, RW)
        .mmap_file(
            PID,
            A + 0x1000_0000,
            8 * 4096,
            1,
            2,
            3,
            0,
            file(33, "/usr/lib/libx.so"),
        )
        .memfd_create(PID, "doublemapper", 5555, 7)
        .mmap_memfd(PID, A + 0x2000_0000, 4 * MIB, RW, ("doublemapper", 5555, 7))
        .mmap_memfd(PID, A + 0x2040_0000, 4 * MIB, RX, ("doublemapper", 5555, 7))
        .close(PID, 7)
        .memfd_create(PID, "kept", 6666, 8)
        .mmap_memfd(PID, A + 0x3000_0000, MIB, RW, ("kept", 6666, 8));
    // Shared anonymous memory.
    feed.syscall(
        PID,
        crate::event::Syscall::Mmap,
        [A + 0x4000_0000, MIB, RW, 0x21, u64::MAX, 0],
        (A + 0x4000_0000) as i64,
    );
    // An exited process has no keyframe.
    feed.mmap_anon(EXITED, A, MIB, RW).exit(EXITED, 0);
    feed
}

fn replayed_from_keyframes(model: &Model) -> Feed {
    let mut replay = Feed::new();
    for keyframe in model.keyframes() {
        replay.model.apply(&Event {
            time_ns: 5_000_000_000,
            pid: keyframe.pid,
            tid: keyframe.pid,
            comm: keyframe.comm,
            abi: keyframe.abi,
            body: EventBody::Keyframe(keyframe.layout),
        });
    }
    replay
}

#[test]
fn a_model_started_at_a_keyframe_has_the_same_layout() {
    let feed = busy_process();
    let replay = replayed_from_keyframes(&feed.model);
    let layout = feed.layout(PID);
    assert!(layout
        .iter()
        .any(|region| region.3 == RegionKind::SharedAnon));
    assert!(layout.iter().any(|region| region.3 == RegionKind::Heap));
    assert_eq!(replay.layout(PID), layout);
    assert!(
        replay.model.process(EXITED).is_none(),
        "exited processes have no keyframe"
    );
    let (live, started) = (
        feed.model.process(PID).unwrap(),
        replay.model.process(PID).unwrap(),
    );
    assert_eq!(
        started.process().brk.current(),
        live.process().brk.current()
    );
    assert_eq!(started.process().brk.start(), live.process().brk.start());
    assert_eq!(started.process().exe(), "/usr/bin/service");
    let closed = |view: &crate::model::ProcessView<'_>| -> Vec<Option<bool>> {
        view.layout()
            .iter()
            .map(|region| view.memfd_fd_closed(region))
            .collect()
    };
    assert_eq!(closed(&started), closed(&live));
    assert!(closed(&live).contains(&Some(true)) && closed(&live).contains(&Some(false)));
}

/// A keyframe of a process the model already follows changes nothing: the live history stays.
#[test]
fn a_keyframe_of_a_known_process_is_ignored() {
    let mut feed = busy_process();
    let before = feed.layout(PID);
    let created: Vec<u64> = feed
        .model
        .process(PID)
        .unwrap()
        .layout()
        .iter()
        .map(|r| r.created.time_ns)
        .collect();
    for keyframe in feed.model.keyframes() {
        feed.send(
            keyframe.pid,
            keyframe.pid,
            EventBody::Keyframe(keyframe.layout),
        );
    }
    assert_eq!(feed.layout(PID), before);
    let after: Vec<u64> = feed
        .model
        .process(PID)
        .unwrap()
        .layout()
        .iter()
        .map(|r| r.created.time_ns)
        .collect();
    assert_eq!(
        after, created,
        "creation times are the live ones, not the keyframe's"
    );
}
