//! What the benchmarks observe of a running process (memtrace, perhaps under sudo), read from
//! /proc through the procfs crate. Each reading is `None` once the process is gone: the
//! benchmarks poll until it exits, keeping the last reading.

use std::{path::Path, time::Duration};

use procfs::process::Process;

fn process(pid: u32) -> Option<Process> {
    Process::new(i32::try_from(pid).ok()?).ok()
}

/// The process's peak resident set (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    process(pid)?.status().ok()?.vmhwm
}

/// The process's user + system CPU time.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = process(pid)?.stat().ok()?;
    let ticks = stat.utime + stat.stime;
    Some(Duration::from_secs_f64(
        ticks as f64 / procfs::ticks_per_second() as f64,
    ))
}

/// The children of the process's main thread (sudo's child is the command it runs).
pub fn children(pid: u32) -> Vec<u32> {
    process(pid)
        .and_then(|process| process.task_main_thread().ok()?.children().ok())
        .unwrap_or_default()
}

/// `pid` itself if it runs `program`, else its child that does (under sudo).
pub fn process_running(pid: u32, program: &Path) -> Option<u32> {
    let program = std::fs::canonicalize(program).ok()?;
    let runs = |pid: u32| process(pid).and_then(|p| p.exe().ok()) == Some(program.clone());
    if runs(pid) {
        return Some(pid);
    }
    children(pid).into_iter().find(|&child| runs(child))
}
