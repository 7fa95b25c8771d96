//! Synthetic event streams for `cargo xtask bench`'s footprint measurements: memtrace's memory
//! must grow with live regions, not with events or with processes come and gone.
//!
//! - `footprint forks N FILE`: writes a recording of N short-lived processes (each forked by
//!   one long-lived parent, maps 64 KiB it never frees, and exits), for `memtrace replay`.
//! - `footprint churn HOURS`: feeds the model a compressed-time attach to a process with
//!   steady churn (a 4 MiB buffer mapped and freed 20 times a second, a short-lived child every
//!   10 seconds) and prints memtrace's RSS after every simulated hour: it must stay flat.
//! - `footprint model-forks N`: the model alone fed N short-lived processes; prints the RSS
//!   per process.
//! - `footprint phases FILE [streamed]`: replays a recording and prints memtrace's RSS after each phase
//!   (the model fed, the report streamed as JSON, the report built whole, its JSON rendered),
//!   to tell which one holds the bytes; with `streamed`, only the model and the stream.
//! - `footprint regions N`: one process leaking N pages; prints the RSS per live region.

use std::{env, fs, process::ExitCode};

use memtrace::event::{
    Abi, Comm, Event, EventBody, ExitRecord, ForkRecord, SnapshotRecord, SnapshotRegion, Syscall,
    SyscallRecord,
};
use memtrace::model::Model;
use memtrace::record::{ClockBase, RecordingHeader, RecordingWriter, WriterOptions};

const PARENT: u32 = 1000;
const START_NS: u64 = 1_000_000_000_000;
const MAP_PRIVATE_ANONYMOUS: u64 = 0x22;
const RW: u64 = 3;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let number = |index: usize| args.get(index).and_then(|text| text.parse::<u64>().ok());
    match (args.first().map(String::as_str), number(1)) {
        (Some("forks"), Some(count)) if args.len() == 3 => match write_forks(count, &args[2]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("footprint: {error}");
                ExitCode::FAILURE
            }
        },
        (Some("churn"), Some(hours)) => {
            churn(hours);
            ExitCode::SUCCESS
        }
        (Some("model-forks"), Some(count)) => {
            model_forks(count);
            ExitCode::SUCCESS
        }
        (Some("phases"), _) if args.len() == 2 || args.get(2).is_some_and(|a| a == "streamed") => {
            match phases(&args[1], args.len() == 3) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("footprint: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        (Some("regions"), Some(count)) => {
            regions(count);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: footprint forks N FILE | churn HOURS | model-forks N | regions N | phases FILE [streamed]");
            ExitCode::from(2)
        }
    }
}

fn event(time_ns: u64, pid: u32, body: EventBody) -> Event {
    Event {
        time_ns,
        pid,
        tid: pid,
        comm: Comm::from_str_lossy("footprint"),
        abi: Abi::X86_64,
        body,
    }
}

fn mmap_anon(time_ns: u64, pid: u32, address: u64, len: u64) -> Event {
    syscall(
        time_ns,
        pid,
        Syscall::Mmap,
        [0, len, RW, MAP_PRIVATE_ANONYMOUS, u64::MAX, 0],
        address as i64,
    )
}

fn syscall(time_ns: u64, pid: u32, syscall: Syscall, args: [u64; 6], ret: i64) -> Event {
    event(
        time_ns,
        pid,
        EventBody::Syscall(SyscallRecord {
            syscall,
            args,
            ret,
            entry_ns: time_ns - 500,
            string: None,
            file: None,
        }),
    )
}

/// A parent as memtrace finds it at attach: 40 regions of libraries, heap, stack.
fn parent_snapshot(time_ns: u64) -> Event {
    let regions = (0..40u64)
        .map(|index| SnapshotRegion {
            start: 0x7f00_0000_0000 + index * 0x10_0000,
            end: 0x7f00_0000_0000 + index * 0x10_0000 + 0x8_0000,
            perms: if index % 2 == 0 { "r-xp" } else { "rw-p" }.to_owned(),
            offset: 0,
            inode: 100 + index / 2,
            name: format!("/usr/lib/lib{}.so", index / 2),
        })
        .collect();
    event(
        time_ns,
        PARENT,
        EventBody::Snapshot(SnapshotRecord {
            regions,
            start_brk: 0x5600_0000_0000,
            brk: 0x5600_0002_1000,
            ppid: 1,
            exe: "/usr/sbin/footprint".to_owned(),
            memfd_fds: Vec::new(),
        }),
    )
}

/// A child of the parent: forked, maps 64 KiB, exits.
fn short_lived_child(time_ns: u64, child: u32) -> [Event; 3] {
    [
        event(
            time_ns,
            PARENT,
            EventBody::Fork(ForkRecord {
                child_pid: child,
                child_tid: child,
                thread: false,
                shares_mm: false,
            }),
        ),
        mmap_anon(time_ns + 1_000, child, 0x7e00_0000_0000, 64 << 10),
        event(
            time_ns + 2_000,
            child,
            EventBody::Exit(ExitRecord {
                status: 0,
                group_dead: true,
            }),
        ),
    ]
}

fn write_forks(count: u64, path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let header = RecordingHeader {
        kernel_release: "footprint".to_owned(),
        command_line: vec!["footprint".to_owned(), "forks".to_owned()],
        clock_base: ClockBase {
            monotonic_ns: START_NS,
            realtime_ns: 0,
        },
        started_by: "memtrace footprint example".to_owned(),
    };
    let _ = fs::remove_file(path);
    let mut writer = RecordingWriter::create(path, &header, WriterOptions::default())?;
    writer.write_event(&parent_snapshot(START_NS))?;
    for index in 0..count {
        // Pids wrap as the kernel's do, so that reuse is part of the workload.
        let child = 2000 + (index % 4_000_000) as u32;
        for event in short_lived_child(START_NS + 10_000 + index * 10_000, child) {
            writer.write_event(&event)?;
        }
    }
    writer.finish(Default::default())?;
    Ok(())
}

/// memtrace's resident memory now, in KiB.
fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// A figure of /proc/self/status, in KiB (`VmRSS:` now, `VmHWM:` the peak so far).
fn status_kib(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn churn(hours: u64) {
    const PER_SECOND: u64 = 20;
    let mut model = Model::new();
    model.apply(&parent_snapshot(START_NS));
    let buffer = 0x7e00_0000_0000u64;
    let mut child = 2000u32;
    let baseline = rss_kib();
    println!("churn hour 0 rss_kib {baseline}");
    for hour in 1..=hours {
        for second in 0..3600u64 {
            let now = START_NS + ((hour - 1) * 3600 + second) * 1_000_000_000;
            for tick in 0..PER_SECOND {
                let time_ns = now + tick * (1_000_000_000 / PER_SECOND);
                model.apply(&mmap_anon(time_ns, PARENT, buffer, 4 << 20));
                model.apply(&syscall(
                    time_ns + 100_000,
                    PARENT,
                    Syscall::Munmap,
                    [buffer, 4 << 20, 0, 0, 0, 0],
                    0,
                ));
            }
            if second % 10 == 0 {
                child = if child >= 30_000 { 2000 } else { child + 1 };
                for event in short_lived_child(now + 500_000_000, child) {
                    model.apply(&event);
                }
            }
        }
        println!("churn hour {hour} rss_kib {}", rss_kib());
    }
    println!("churn events {}", model.events());
}

/// The model alone (no decoding, no report) fed N short-lived processes.
fn model_forks(count: u64) {
    let mut model = Model::new();
    model.apply(&parent_snapshot(START_NS));
    let before = rss_kib();
    for index in 0..count {
        let child = 2000 + (index % 4_000_000) as u32;
        for event in short_lived_child(START_NS + 10_000 + index * 10_000, child) {
            model.apply(&event);
        }
    }
    let after = rss_kib();
    println!(
        "model-forks {count} rss_kib {after} bytes_per_process {}",
        (after.saturating_sub(before) * 1024) / count.max(1)
    );
}

fn regions(count: u64) {
    let mut model = Model::new();
    model.apply(&parent_snapshot(START_NS));
    let before = rss_kib();
    for index in 0..count {
        // Every other page, so that no two regions touch.
        let address = 0x7000_0000_0000 + index * 2 * 4096;
        model.apply(&mmap_anon(
            START_NS + 1_000 + index * 1_000,
            PARENT,
            address,
            4096,
        ));
    }
    let after = rss_kib();
    println!(
        "regions {count} rss_kib {after} bytes_per_region {}",
        (after.saturating_sub(before) * 1024) / count.max(1)
    );
}

/// Where a replay's memory goes: the model, the report built from it, its JSON.
fn phases(path: &str, streamed_only: bool) -> Result<(), Box<dyn std::error::Error>> {
    let mut reader = memtrace::record::RecordingReader::open(path)?;
    let mut model = Model::new();
    let start = rss_kib();
    for event in &mut reader {
        model.apply(&event?);
    }
    let processes = model.processes().count();
    let after_model = rss_kib();
    let session = memtrace::report::SessionInfo {
        source: memtrace::report::Source::Replay,
        events: model.events(),
        lost: model.lost(),
        backend: None,
    };
    // Streamed first, while the peak is still the model's: what a replay would take if it
    // wrote its report this way.
    memtrace::report::stream::write_json(
        &model,
        &session,
        &Default::default(),
        &mut memtrace::report::NoNames,
        &[],
        &mut std::io::sink(),
    )?;
    let streamed_peak = status_kib("VmHWM:");
    if streamed_only {
        // The whole report of a million processes is several GB: not built here.
        println!("phases processes {processes} model_kib {after_model} streamed_peak_kib {streamed_peak}");
        return Ok(());
    }
    let report = memtrace::report::build(&model, &session);
    let after_report = rss_kib();
    let json = memtrace::report::json::render(&report);
    let after_json = rss_kib();
    println!(
        "phases processes {processes} start_kib {start} model_kib {after_model} streamed_peak_kib {streamed_peak} report_kib {after_report} json_kib {after_json} json_bytes {}",
        json.len()
    );
    Ok(())
}
