//! The replay budget: 5 million events a second on one core, for the worst common case (a
//! process mapping and unmapping 4 KiB in a loop). Run with
//! `cargo test --release -- --ignored --nocapture throughput`.

use std::time::Instant;

use crate::event::{Abi, Comm, Event, EventBody, Syscall, SyscallEvent};
use crate::model::testing::*;
use crate::model::Model;

fn loop_events(count: usize) -> Vec<Event> {
    let comm = Comm::from_str_lossy("loop");
    (0..count)
        .map(|index| {
            let address = 0x7f00_0000_0000 + (index as u64 / 2 % 64) * 0x1000;
            let (syscall, args) = if index % 2 == 0 {
                (Syscall::Mmap, [0, 4096, RW, ANON, u64::MAX, 0])
            } else {
                (Syscall::Munmap, [address, 4096, 0, 0, 0, 0])
            };
            let time_ns = 1_000 + index as u64 * 200;
            Event {
                time_ns,
                pid: 42,
                tid: 42,
                comm,
                abi: Abi::X86_64,
                body: EventBody::Syscall(SyscallEvent {
                    syscall,
                    args,
                    ret: if syscall == Syscall::Mmap {
                        address as i64
                    } else {
                        0
                    },
                    entry_ns: time_ns - 150,
                    string: None,
                    file: None,
                }),
            }
        })
        .collect()
}

#[test]
fn mmap_munmap_loop_leaves_nothing_behind() {
    let mut model = Model::new();
    for event in &loop_events(10_000) {
        model.apply(event);
    }
    assert!(model.process(42).unwrap().layout().is_empty());
}

#[test]
#[ignore = "timing: run in release"]
fn throughput_of_the_mmap_munmap_loop() {
    let events = loop_events(5_000_000);
    let mut model = Model::new();
    let started = Instant::now();
    for event in &events {
        model.apply(event);
    }
    let elapsed = started.elapsed();
    let per_second = events.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{} events in {elapsed:?}: {:.2} M events/s",
        events.len(),
        per_second / 1e6
    );
    assert!(per_second > 5e6, "{per_second:.0} events/s");
}
