//! A synthetic workload for the recording's tests: one thread mapping and unmapping an anonymous
//! page in a loop, the densest stream memtrace sees. (Replay speed is measured on the whole
//! `memtrace replay` command by `cargo xtask bench`, not here: a timed test is flaky on a busy
//! machine and measures a debug build.)

use super::{
    ClockBase, RecordError, RecordingHeader, RecordingReader, RecordingWriter, WriterOptions,
};
use crate::event::{Abi, Comm, Event, EventBody, Losses, Syscall, SyscallEvent};

use crate::linux_abi::PAGE_SIZE as PAGE;
const PROT_READ_WRITE: u64 = 0x3;
const MAP_PRIVATE_ANONYMOUS: u64 = 0x22;
/// The fd argument of an anonymous mmap: -1 as the register holds it.
const NO_FD: u64 = u64::MAX;

/// `count` events alternating `mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS,
/// -1, 0)` and the `munmap` of its result, from one thread, about 300 ns apart. The address
/// wanders over a few pages and the timings jitter, as they do in a real run.
pub fn mmap_munmap_loop(count: usize) -> impl Iterator<Item = Event> {
    let comm = Comm::from_str_lossy("mmap-loop");
    let mut time_ns = 1_234_567_890_123u64;
    let mut noise = 0x2545_f491_4f6c_dd1du64;
    (0..count).map(move |index| {
        // xorshift: reproducible jitter without a dependency.
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        time_ns += 250 + noise % 100;
        let duration_ns = 150 + (noise >> 8) % 600;
        let address = 0x7f12_3456_7000 - ((index as u64 / 2) % 16) * PAGE;
        let (syscall, args, ret) = if index % 2 == 0 {
            let args = [0, PAGE, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, NO_FD, 0];
            (Syscall::Mmap, args, address as i64)
        } else {
            (Syscall::Munmap, [address, PAGE, 0, 0, 0, 0], 0)
        };
        Event {
            time_ns,
            pid: 48_213,
            tid: 48_213,
            comm,
            abi: Abi::X86_64,
            body: EventBody::Syscall(SyscallEvent {
                syscall,
                args,
                ret,
                entry_ns: time_ns - duration_ns,
                string: None,
                file: None,
            }),
        }
    })
}

/// A whole recording of `events` in memory, finished with a trailer.
pub fn record_in_memory(events: impl IntoIterator<Item = Event>) -> Result<Vec<u8>, RecordError> {
    let header = RecordingHeader {
        kernel_release: "6.8.0-bench".into(),
        command_line: vec!["mmap-loop".into()],
        clock_base: ClockBase {
            monotonic_ns: 1_234_567_890_123,
            realtime_ns: 1_700_000_000_000_000_000,
        },
        started_by: "memtrace bench".into(),
        mode: Some(crate::recording::Mode::User),
        backend: None,
    };
    let mut writer = RecordingWriter::new(Vec::new(), &header, WriterOptions::default())?;
    for event in events {
        writer.write_event(&event)?;
    }
    writer.finish(Losses::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mmap_munmap_loop_takes_at_most_40_bytes_per_event() {
        let events = 100_000;
        let recording = record_in_memory(mmap_munmap_loop(events)).unwrap();
        let bytes_per_event = recording.len() as f64 / events as f64;
        println!(
            "mmap/munmap loop: {} bytes for {events} events = {bytes_per_event:.2} bytes/event",
            recording.len()
        );
        assert!(bytes_per_event <= 40.0, "{bytes_per_event:.2} bytes/event");

        let mut reader = RecordingReader::new(&recording[..]).unwrap();
        let replayed: Vec<Event> = reader.by_ref().map(Result::unwrap).collect();
        assert!(replayed.into_iter().eq(mmap_munmap_loop(events)));
        assert!(reader.outcome().complete);
    }
}
