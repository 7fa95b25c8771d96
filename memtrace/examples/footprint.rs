//! Synthetic event streams for `cargo xtask bench`'s footprint measurements: memtrace's memory
//! must grow with live regions, not with events or with processes come and gone.
//!
//! - `footprint forks N FILE`: writes a recording of N short-lived processes (each forked by
//!   one long-lived parent, maps 64 KiB it never frees, and exits), for `memtrace replay`.
//! - `footprint churn HOURS`: feeds the stream and user mode (the model, and the folding of exited
//!   processes) a compressed-time attach to a process with steady churn (a 4 MiB buffer mapped
//!   and freed 20 times a second, a short-lived child every 10 seconds), prints memtrace's RSS
//!   after every simulated hour (it must stay flat), then after its JSON and text reports.
//! - `footprint pipeline-forks N`: user mode alone fed N short-lived processes; prints the
//!   RSS per process.
//! - `footprint phases FILE`: replays a recording and prints memtrace's RSS after each phase
//!   (user mode fed, the report streamed as JSON, the report built whole, its JSON and its
//!   text rendered), to tell which one holds the bytes.
//! - `footprint regions N`: one process leaking N pages; prints the RSS per live region.
//! - `footprint crafted forks|mappings FILE`: writes the hardening tests' crafted recording of
//!   a million forks that never run, or of a million mappings never unmapped
//!   (tests/src/crafted.rs), for `memtrace replay`.
//! - `footprint agent-day HOURS`: the agent's pipeline (user mode, the flight recorder with a
//!   keyframe a minute, the triggers evaluated every second) fed a busy server in compressed
//!   time (memtrace::agent::workload); prints the RSS after every hour, the CPU per million
//!   events, and how many minutes of that server 64 MiB of history holds; with `no-leak`, the
//!   same day without its slow leak (the live processes' needs constant).
//! - `footprint scrape PROCESSES SCRAPES`: the agent's CPU per scrape of /metrics over
//!   loopback HTTP, with that many synthetic processes.

use std::{env, fs, process::ExitCode};

use memtrace::event::{
    Abi, AttachEvent, Comm, Event, EventBody, ExitEvent, ForkEvent, Syscall, SyscallEvent,
};
use memtrace::model::Model;
use memtrace::recording::{ClockBase, RecordingHeader, RecordingWriter, WriterOptions};
use memtrace::{
    stream::Stream,
    user_mode::{UserMode, UserModeOptions},
};

// The tests crate's own module, by path: that crate's build script builds C programs, which
// the bench has no need of.
#[path = "../../tests/src/crafted.rs"]
mod crafted;

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
        (Some("agent-day"), Some(hours)) if args.len() <= 3 => {
            agent_day(hours, args.get(2).map(String::as_str) != Some("no-leak"));
            ExitCode::SUCCESS
        }
        (Some("scrape"), Some(processes)) if args.len() == 3 => {
            match number(2).map(|scrapes| scrape(processes, scrapes)) {
                Some(Ok(())) => ExitCode::SUCCESS,
                Some(Err(error)) => {
                    eprintln!("footprint: {error}");
                    ExitCode::FAILURE
                }
                None => ExitCode::from(2),
            }
        }
        (Some("pipeline-forks"), Some(count)) => {
            pipeline_forks(count);
            ExitCode::SUCCESS
        }
        (Some("phases"), _) if args.len() == 2 => match phases(&args[1]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("footprint: {error}");
                ExitCode::FAILURE
            }
        },
        (Some("crafted"), _) if args.len() == 3 => {
            let bytes = match args[1].as_str() {
                "forks" => crafted::million_forks(),
                "mappings" => crafted::million_mappings(),
                _ => return ExitCode::from(2),
            };
            match fs::write(&args[2], bytes) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("footprint: {}: {error}", args[2]);
                    ExitCode::FAILURE
                }
            }
        }
        (Some("regions"), Some(count)) => {
            regions(count);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: footprint forks N FILE | churn HOURS | agent-day HOURS [no-leak] | scrape PROCESSES SCRAPES | pipeline-forks N | regions N | crafted forks|mappings FILE | phases FILE");
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
        EventBody::Syscall(SyscallEvent {
            syscall,
            args,
            ret,
            entry_ns: time_ns - 500,
            string: None,
            file: None,
        }),
    )
}

/// A parent as memtrace finds it at attach: 40 regions of libraries.
fn parent_attach(time_ns: u64) -> Event {
    let regions = memtrace::agent::workload::library_regions().collect();
    event(
        time_ns,
        PARENT,
        EventBody::Attach(AttachEvent {
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
            EventBody::Fork(ForkEvent {
                child_pid: child,
                child_tid: child,
                thread: false,
                shares_mm: false,
                untraced: false,
            }),
        ),
        mmap_anon(time_ns + 1_000, child, 0x7e00_0000_0000, 64 << 10),
        event(
            time_ns + 2_000,
            child,
            EventBody::Exit(ExitEvent {
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
        mode: Some(memtrace::recording::Mode::User),
        backend: None,
    };
    let _ = fs::remove_file(path);
    let output = memtrace::output::check(std::path::Path::new(path))?;
    let mut writer = RecordingWriter::create(&output, &header, WriterOptions::default())?;
    writer.write_event(&parent_attach(START_NS))?;
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
    let (mut stream, mut user_mode) = consumers();
    let mut feed = |event: &Event| stream.feed(event, &mut user_mode);
    feed(&parent_attach(START_NS));
    let buffer = 0x7e00_0000_0000u64;
    let mut child = 2000u32;
    let baseline = rss_kib();
    println!("churn hour 0 rss_kib {baseline}");
    for hour in 1..=hours {
        for second in 0..3600u64 {
            let now = START_NS + ((hour - 1) * 3600 + second) * 1_000_000_000;
            for tick in 0..PER_SECOND {
                let time_ns = now + tick * (1_000_000_000 / PER_SECOND);
                feed(&mmap_anon(time_ns, PARENT, buffer, 4 << 20));
                feed(&syscall(
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
                    feed(&event);
                }
            }
        }
        println!("churn hour {hour} rss_kib {}", rss_kib());
    }
    let (json, text) = reports(&stream, &user_mode);
    println!(
        "churn events {} processes {} folded {} json_bytes {json} text_bytes {text} after_reports_rss_kib {} peak_kib {}",
        stream.events(),
        user_mode.model.process_count(),
        user_mode.exited().folded_processes(),
        rss_kib(),
        status_kib("VmHWM:")
    );
}

/// The stream and user mode's consumer, as a session without recorder or printer has them.
fn consumers() -> (Stream, UserMode) {
    (
        Stream::new(None, None),
        UserMode::new(UserModeOptions::default()),
    )
}

/// The session's JSON and text reports, built and dropped: their sizes.
fn reports(stream: &Stream, user_mode: &UserMode) -> (usize, usize) {
    let report = report_of(stream, user_mode);
    let json = memtrace::report::json::render(&report).len();
    let text = memtrace::report::text::render(&report, &Default::default()).len();
    (json, text)
}

/// The report of the session, built whole, frames unnamed.
fn report_of(stream: &Stream, user_mode: &UserMode) -> memtrace::report::Report {
    memtrace::report::build_with(
        &user_mode.model,
        user_mode.exited(),
        &session_of(stream),
        &mut memtrace::report::NoNames,
    )
}

fn session_of(stream: &Stream) -> memtrace::report::SessionInfo {
    memtrace::report::SessionInfo {
        source: memtrace::report::Source::Replay,
        events: stream.events(),
        lost: stream.lost(),
        backend: None,
    }
}

/// The stream and user mode alone (no decoding, no report) fed N short-lived processes.
fn pipeline_forks(count: u64) {
    let (mut stream, mut user_mode) = consumers();
    stream.feed(&parent_attach(START_NS), &mut user_mode);
    let before = rss_kib();
    for index in 0..count {
        let child = 2000 + (index % 4_000_000) as u32;
        for event in short_lived_child(START_NS + 10_000 + index * 10_000, child) {
            stream.feed(&event, &mut user_mode);
        }
    }
    let after = rss_kib();
    println!(
        "pipeline-forks {count} rss_kib {after} bytes_per_process {} processes_kept {}",
        (after.saturating_sub(before) * 1024) / count.max(1),
        user_mode.model.process_count()
    );
}

fn regions(count: u64) {
    let mut model = Model::new();
    model.apply(&parent_attach(START_NS));
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

/// Where a replay's memory goes: user mode fed, the report streamed, built, rendered.
fn phases(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let reader = memtrace::recording::RecordingReader::open(path)?;
    let start = rss_kib();
    let options = memtrace::replay::ReplayOptions {
        path: path.into(),
        until: None,
        print_events: false,
        interval: None,
        since: None,
        keep_exited: memtrace::user_mode::DEFAULT_KEEP_EXITED,
        pids: Vec::new(),
    };
    let replay = memtrace::replay::replay_from(reader, &options, None)?;
    let memtrace::replay::Replayed::User(user_mode) = replay.consumer else {
        return Err("not a user-mode recording".into());
    };
    let stream = replay.stream;
    let processes = user_mode.model.process_count();
    let after_model = rss_kib();
    let session = session_of(&stream);
    memtrace::report::stream::write_json(
        &user_mode.model,
        user_mode.exited(),
        &session,
        &mut memtrace::report::NoNames,
        &[],
        memtrace::report::ranking::DEFAULT_ROWS,
        &mut std::io::sink(),
    )?;
    let streamed_peak = status_kib("VmHWM:");
    let report = report_of(&stream, &user_mode);
    let after_report = rss_kib();
    let json = memtrace::report::json::render(&report);
    let after_json = rss_kib();
    let text = memtrace::report::text::render(&report, &Default::default());
    let after_text = rss_kib();
    println!(
        "phases processes_kept {processes} folded {} start_kib {start} model_kib {after_model} streamed_peak_kib {streamed_peak} report_kib {after_report} json_kib {after_json} text_kib {after_text} json_bytes {} text_bytes {} peak_kib {}",
        user_mode.exited().folded_processes(),
        json.len(),
        text.len(),
        status_kib("VmHWM:")
    );
    Ok(())
}

/// The agent's pipeline, a compressed day of a busy server.
fn agent_day(hours: u64, leak: bool) {
    use memtrace::agent::{
        flight::FlightRecorder,
        mode::{AgentMode, TriggerOptions},
        triggers::TriggerKind,
        workload,
    };
    const SECOND: u64 = 1_000_000_000;
    const HISTORY_BYTES: u64 = 64 << 20;
    let header = RecordingHeader {
        kernel_release: "footprint".to_owned(),
        command_line: vec!["footprint".to_owned(), "agent-day".to_owned()],
        clock_base: ClockBase {
            monotonic_ns: START_NS,
            realtime_ns: 0,
        },
        started_by: "memtrace footprint example".to_owned(),
        mode: Some(memtrace::recording::Mode::Agent),
        backend: None,
    };
    let mut agent = AgentMode::new(
        UserMode::new(UserModeOptions::default()),
        FlightRecorder::new(header, 600 * SECOND, HISTORY_BYTES),
        TriggerOptions {
            enabled: TriggerKind::ALL.into_iter().collect(),
            growing_for_ns: 300 * SECOND,
            size_bytes: None,
            max_map_count: 65_530,
        },
    );
    let mut stream: Stream = Stream::new(None, None);
    agent.keyframe(START_NS);
    stream.feed_all(&workload::start(START_NS), &mut agent);
    let cpu_start = cpu_seconds();
    for hour in 1..=hours {
        for second in (hour - 1) * 3600..hour * 3600 {
            let now = workload::time_of(START_NS, second);
            if second > 0 && second % 60 == 0 {
                agent.keyframe(now - 1);
            }
            stream.feed_all(&workload::second_of(START_NS, second, leak), &mut agent);
            agent.evaluate(now);
            let _ = agent.take_fired();
            let _ = agent.user_mode.take_forgotten();
        }
        // RssAnon beside RSS: the pages memtrace allocated, without its own code's, which
        // the kernel may map in or drop from one run to the next.
        println!(
            "agent-day hour {hour} rss_kib {} history_bytes {} regions {} rss_anon_kib {}",
            rss_kib(),
            agent.flight.bytes(),
            agent
                .user_mode
                .model
                .live_processes()
                .map(|view| view.layout().iter().count())
                .sum::<usize>(),
            status_kib("RssAnon:")
        );
    }
    let cpu = cpu_seconds() - cpu_start;
    let events = stream.events();
    // What the history held for its ten minutes at the end, per minute: the bytes of a minute.
    let bytes_per_minute = agent.flight.bytes() as f64
        / ((agent.flight.oldest_ns().map_or(0, |oldest| {
            workload::time_of(START_NS, hours * 3600).saturating_sub(oldest)
        }) as f64
            / 60e9)
            .max(1.0));
    println!(
        "agent-day events {events} cpu_s {cpu:.2} cpu_s_per_million_events {:.3} history_bytes {} bytes_per_minute {:.0} minutes_in_64_mib {:.0} peak_kib {}",
        cpu / (events as f64 / 1e6),
        agent.flight.bytes(),
        bytes_per_minute,
        HISTORY_BYTES as f64 / bytes_per_minute,
        status_kib("VmHWM:")
    );
}

/// What a scrape of /metrics costs the agent (memtrace::agent::metrics_bench).
fn scrape(processes: u64, scrapes: u64) -> Result<(), std::io::Error> {
    let figures =
        memtrace::agent::metrics_bench::bench_scrape(processes as usize, scrapes as usize)?;
    println!("scrape {figures}");
    Ok(())
}

/// This process's user and system CPU time so far, in seconds.
fn cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let seconds =
        |time: nix::sys::time::TimeVal| time.tv_sec() as f64 + time.tv_usec() as f64 / 1e6;
    seconds(usage.user_time()) + seconds(usage.system_time())
}
