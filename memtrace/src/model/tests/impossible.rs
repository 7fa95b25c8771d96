//! Successes the kernel cannot return are refused: counted as anomalies, never applied, never
//! counted as calls. Each case starts from the same layout and must leave it exactly as it was.

use crate::event::Syscall;
use crate::model::testing::*;
use crate::model::RegionKind::Anon;
use crate::model::SyscallName;

const PID: u32 = 100;
const A: u64 = 0x7f00_0000_0000;
const PAGE: u64 = 0x1000;

/// Four anonymous rw pages at A, then `call`; asserts the refusal and the untouched layout.
#[track_caller]
fn refused(syscall: Syscall, args: [u64; 6], ret: i64, reason: &str) {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, 4 * PAGE, RW);
    let before = feed.layout(PID);
    let calls_before = feed
        .model
        .process(PID)
        .unwrap()
        .process()
        .stats()
        .counts(SyscallName::of(syscall).unwrap())
        .calls;
    feed.syscall(PID, syscall, args, ret);
    assert_eq!(feed.layout(PID), before, "{syscall:?} {args:x?} = {ret:#x}");
    let view = feed.model.process(PID).unwrap();
    let anomalies = view.process().anomalies();
    assert_eq!(anomalies.count, 1);
    assert_eq!(anomalies.examples[0].reason, reason);
    assert_eq!(anomalies.examples[0].syscall, syscall);
    assert_eq!(
        view.process()
            .stats()
            .counts(SyscallName::of(syscall).unwrap())
            .calls,
        calls_before,
        "a refused record is not a call"
    );
}

#[test]
fn futex_exit_decoded_as_munmap_is_refused() {
    // The record seen on node: FUTEX_WAIT_BITSET|PRIVATE|CLOCK_REALTIME is 393.
    refused(
        Syscall::Munmap,
        [A + 0x8b4, 393, 0, 0, 0, 0],
        0,
        "unaligned address",
    );
}

#[test]
fn munmap_of_zero_bytes_is_refused() {
    refused(Syscall::Munmap, [A, 0, 0, 0, 0, 0], 0, "zero length");
}

#[test]
fn unaligned_mprotect_is_refused() {
    refused(
        Syscall::Mprotect,
        [A + 1, PAGE, PROT_READ, 0, 0, 0],
        0,
        "unaligned address",
    );
}

#[test]
fn unaligned_mremap_is_refused() {
    refused(
        Syscall::Mremap,
        [A + 8, PAGE, 2 * PAGE, 0, 0, 0],
        A as i64,
        "unaligned address",
    );
}

#[test]
fn mremap_to_zero_bytes_is_refused() {
    refused(
        Syscall::Mremap,
        [A, PAGE, 0, 0, 0, 0],
        A as i64,
        "zero length",
    );
}

#[test]
fn mremap_to_an_unaligned_address_is_refused() {
    refused(
        Syscall::Mremap,
        [A, PAGE, 2 * PAGE, 0, 0, 0],
        (A + 0x10) as i64,
        "unaligned result",
    );
}

#[test]
fn mmap_of_zero_bytes_is_refused() {
    refused(
        Syscall::Mmap,
        [0, 0, RW, MAP_PRIVATE | MAP_ANONYMOUS, u64::MAX, 0],
        (A + 8 * PAGE) as i64,
        "zero length",
    );
}

#[test]
fn mmap_at_an_unaligned_address_is_refused() {
    refused(
        Syscall::Mmap,
        [0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS, u64::MAX, 0],
        (A + 8 * PAGE + 12) as i64,
        "unaligned result",
    );
}

#[test]
fn possible_calls_are_not_anomalies() {
    let mut feed = Feed::new();
    feed.mmap_anon(PID, A, 4 * PAGE, RW)
        // mprotect of 0 bytes at an aligned address succeeds and changes nothing.
        .mprotect(PID, A, 0, PROT_READ)
        .munmap(PID, A + 3 * PAGE, 100);
    feed.assert_layout(PID, &[(A, A + 3 * PAGE, "rw-p", Anon, "")]);
    let view = feed.model.process(PID).unwrap();
    assert_eq!(view.process().anomalies().count, 0);
}
