//! memfds: naming their mappings and knowing when their fds are gone.

use crate::event::{Abi, Syscall};
use crate::model::testing::*;
use crate::model::RegionKind::Memfd;

const PID: u32 = 400;
const CHILD: u32 = 401;
const A: u64 = 0x7f00_0000_0000;
const INODE: u64 = 5555;
const FD: i64 = 7;
const DOUBLEMAPPER: (&str, u64, u64) = ("doublemapper", INODE, FD as u64);

fn create_and_map_twice(feed: &mut Feed) {
    feed.memfd_create(PID, "doublemapper", INODE, FD)
        .mmap_memfd(PID, A, 4 * MIB, RW, DOUBLEMAPPER)
        .mmap_memfd(PID, A + 4 * MIB, 4 * MIB, RX, DOUBLEMAPPER);
}

/// The layout [`create_and_map_twice`] makes.
fn assert_mapped_twice(feed: &Feed) {
    feed.assert_layout(
        PID,
        &[
            (A, A + 4 * MIB, "rw-s", Memfd, "memfd:doublemapper"),
            (
                A + 4 * MIB,
                A + 8 * MIB,
                "r-xs",
                Memfd,
                "memfd:doublemapper",
            ),
        ],
    );
}

fn fd_closed(feed: &Feed, pid: u32) -> Vec<Option<bool>> {
    let view = feed.model.process(pid).unwrap();
    view.layout()
        .iter()
        .map(|region| view.memfd_fd_closed(region))
        .collect()
}

#[test]
fn memfd_mappings_are_named_after_the_memfd() {
    let mut feed = Feed::new();
    create_and_map_twice(&mut feed);
    assert_mapped_twice(&feed);
    let view = feed.model.process(PID).unwrap();
    let memfd = view.memfd(view.layout().region_at(A).unwrap()).unwrap();
    assert_eq!(&*memfd.name, "memfd:doublemapper");
    assert_eq!(memfd.created_by_pid, PID);
    assert_eq!(memfd.inode, INODE);
}

#[test]
fn closing_the_fd_while_mappings_live_is_detected() {
    let mut feed = Feed::new();
    create_and_map_twice(&mut feed);
    assert_eq!(fd_closed(&feed, PID), [Some(false), Some(false)]);
    feed.close(PID, FD as u64);
    assert_eq!(fd_closed(&feed, PID), [Some(true), Some(true)]);
}

#[test]
fn a_mapping_through_a_known_fd_is_its_memfds_even_without_a_file() {
    let mut feed = Feed::new();
    feed.memfd_create(PID, "jit", INODE, FD).syscall(
        PID,
        Syscall::Mmap,
        [0, MIB, RW, MAP_SHARED, FD as u64, 0],
        A as i64,
    );
    feed.assert_layout(PID, &[(A, A + MIB, "rw-s", Memfd, "memfd:jit")]);
}

#[test]
fn a_memfd_from_before_the_session_is_recognised_by_its_path() {
    let mut feed = Feed::new();
    let old = file(999, "/memfd:wayland-shm (deleted)");
    feed.mmap_file(PID, A, MIB, RW, MAP_SHARED, 4, 0, old);
    feed.assert_layout(PID, &[(A, A + MIB, "rw-s", Memfd, "memfd:wayland-shm")]);
    assert_eq!(fd_closed(&feed, PID), [None], "its fds are unknown");
}

#[test]
fn an_inherited_fd_keeps_the_memfd_open() {
    let mut feed = Feed::new();
    create_and_map_twice(&mut feed);
    feed.fork(PID, CHILD, false, false).close(PID, FD as u64);
    assert_eq!(fd_closed(&feed, PID), [Some(false), Some(false)]);
    feed.close(CHILD, FD as u64);
    assert_eq!(fd_closed(&feed, PID), [Some(true), Some(true)]);
}

#[test]
fn at_exit_the_fd_state_is_taken_before_exit_closes_fds() {
    let mut feed = Feed::new();
    create_and_map_twice(&mut feed);
    feed.exit(PID, 0);
    assert_eq!(fd_closed(&feed, PID), [Some(false), Some(false)]);

    let mut feed = Feed::new();
    create_and_map_twice(&mut feed);
    feed.close(PID, FD as u64).exit(PID, 0);
    assert_eq!(fd_closed(&feed, PID), [Some(true), Some(true)]);
}

#[test]
fn exec_closes_cloexec_memfds() {
    let mut feed = Feed::new();
    feed.syscall_full(
        PID,
        Syscall::MemfdCreate,
        [0x1000, 1, 0, 0, 0, 0],
        FD,
        Some("cloexec"),
        Some(file(INODE, "/memfd:cloexec")),
    )
    .fork(PID, CHILD, false, false)
    .exec(
        CHILD,
        exec_record(
            "/bin/true",
            Abi::X86_64,
            0x60_0000,
            (0x7ffe_0000_0000, 0x7ffe_0002_1000),
        ),
    );
    let memfd = feed.model.memfds().iter().next().unwrap();
    assert_eq!(memfd.open_fds(), 1, "the parent's fd only");
    assert!(feed
        .model
        .process(CHILD)
        .unwrap()
        .process()
        .fds()
        .is_empty());
}

/// A Wayland client's buffers: a memfd per frame, mapped, unmapped and closed. The registry
/// must not grow with them, while the memfds still mapped or open stay known.
#[test]
fn memfds_nothing_refers_to_are_forgotten() {
    let mut feed = Feed::new();
    // One leaked (mapped, fd closed) and one open (fd kept, not mapped), before the churn.
    create_and_map_twice(&mut feed);
    feed.close(PID, FD as u64);
    feed.memfd_create(PID, "kept-open", INODE + 1, 8);
    let frame = A + 0x1000_0000;
    for index in 0..10_000u64 {
        let inode = 100_000 + index;
        feed.memfd_create(PID, "wl_shm", inode, 9)
            .mmap_memfd(PID, frame, MIB, RW, ("wl_shm", inode, 9))
            .munmap(PID, frame, MIB)
            .close(PID, 9);
    }
    let held = feed.model.memfds().iter().count();
    assert!(
        held <= 2 * 1024,
        "{held} memfds held after 10000 freed ones"
    );
    let names: Vec<&str> = feed.model.memfds().iter().map(|m| &*m.name).collect();
    assert!(names.contains(&"memfd:doublemapper"), "{names:?}");
    assert!(names.contains(&"memfd:kept-open"), "{names:?}");
    // The leak is still named and still known to have lost its fd.
    assert_eq!(fd_closed(&feed, PID)[..2], [Some(true), Some(true)]);
    assert_mapped_twice(&feed);
    // A memfd made after a sweep (its id taken from a swept one) is its own.
    feed.memfd_create(PID, "after", 777_777, 9).mmap_memfd(
        PID,
        frame,
        MIB,
        RW,
        ("after", 777_777, 9),
    );
    let view = feed.model.process(PID).unwrap();
    let region = view.layout().region_at(frame).unwrap();
    assert_eq!(region.name.as_deref(), Some("memfd:after"));
    assert_eq!(view.memfd_fd_closed(region), Some(false));
}
