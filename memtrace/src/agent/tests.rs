//! The agent's pipeline fed a busy server's day in compressed time.

use std::collections::BTreeSet;

use super::{
    flight::FlightRecorder,
    mode::{AgentMode, TriggerOptions},
    triggers::TriggerKind,
    workload,
};
use crate::{
    event::Losses,
    recording::{
        ClockBase, Mode, RecordingHeader, RecordingReader, RecordingWriter, WriterOptions,
    },
    replay::{replay_from, ReplayOptions, Replayed},
    stream::Stream,
    user_mode::{UserMode, UserModeOptions, DEFAULT_KEEP_EXITED},
};

const SECOND: u64 = 1_000_000_000;
const START: u64 = 1_000 * SECOND;

fn header() -> RecordingHeader {
    RecordingHeader {
        kernel_release: "6.18.0-test".into(),
        command_line: vec!["memtrace".into(), "agent".into()],
        clock_base: ClockBase {
            monotonic_ns: START,
            realtime_ns: 1_765_000_000 * SECOND,
        },
        started_by: "memtrace test".into(),
        mode: Some(Mode::Agent),
        backend: None,
    }
}

fn agent() -> AgentMode {
    AgentMode::new(
        UserMode::new(UserModeOptions::default()),
        FlightRecorder::new(header(), 7200 * SECOND, 1 << 30),
        TriggerOptions {
            enabled: TriggerKind::ALL.into_iter().collect::<BTreeSet<_>>(),
            growing_for_ns: 300 * SECOND,
            size_bytes: None,
            max_map_count: 65_530,
        },
    )
}

/// Feeds `seconds` of the day, with a keyframe every minute as the agent takes them.
fn run(agent: &mut AgentMode, stream: &mut Stream, seconds: u64) {
    agent.keyframe(START);
    stream.feed_all(&workload::start(START), agent);
    for second in 0..seconds {
        if second > 0 && second % 60 == 0 {
            agent.keyframe(workload::time_of(START, second) - 1);
        }
        stream.feed_all(&workload::second(START, second), agent);
    }
}

/// The layouts of every live process, as comparable tuples, with each memfd region's
/// "fd closed".
/// A region as compared: start, end, perms, kind, name, and for a memfd whether its fd is closed.
type RegionKey = (u64, u64, String, String, String, Option<bool>);

fn layouts(user_mode: &UserMode) -> Vec<(u32, Vec<RegionKey>)> {
    user_mode
        .model
        .live_processes()
        .filter(|view| view.process().traced())
        .map(|view| {
            let regions = view
                .layout()
                .iter()
                .map(|region| {
                    (
                        region.start,
                        region.end,
                        region.perms.to_string(),
                        region.kind.as_str().to_owned(),
                        region.name().to_owned(),
                        view.memfd_fd_closed(region),
                    )
                })
                .collect();
            (view.process().pid(), regions)
        })
        .collect()
}

/// A capture cut an hour into a session replays alone: the layouts of its processes at the
/// window's end equal the live model's (the full stream's) at that moment.
#[test]
fn a_capture_cut_an_hour_in_replays_alone() {
    let mut agent = agent();
    let mut stream = Stream::new(None, None);
    run(&mut agent, &mut stream, 3600);
    let window = agent
        .flight
        .cut(workload::time_of(START, 3300))
        .expect("the window");
    assert_eq!(
        window.start_ns,
        workload::time_of(START, 3300) - 1,
        "the window starts at the last keyframe before it"
    );
    let mut writer = RecordingWriter::new(Vec::new(), &header(), WriterOptions::default()).unwrap();
    let mut events = 0;
    for event in window.events() {
        writer.write_event(&event.unwrap()).unwrap();
        events += 1;
    }
    assert!(
        events < stream.events() / 10,
        "the window is the last few minutes: {events} events"
    );
    let bytes = writer.finish(Losses::default()).unwrap();
    let replay = replay_from(
        RecordingReader::new(bytes.as_slice()).unwrap(),
        &ReplayOptions {
            path: Default::default(),
            until: None,
            print_events: false,
            interval: None,
            since: None,
            keep_exited: DEFAULT_KEEP_EXITED,
            pids: Vec::new(),
        },
        None,
    )
    .unwrap();
    assert!(replay.stopped_by.is_none() && replay.outcome.problems().is_empty());
    let Replayed::User(replayed) = replay.consumer else {
        panic!("an agent capture replays as user mode");
    };
    let live = layouts(&agent.user_mode);
    assert_eq!(live.len(), 2, "the two services are live");
    assert!(
        live.iter().any(|(_, regions)| regions.len() > 60),
        "an hour of leaked views"
    );
    assert_eq!(layouts(&replayed), live);
}

/// The flight recorder keeps to its budget: after a day, its bytes are within the history
/// asked for, and the oldest history goes by whole segments.
#[test]
fn the_flight_recorder_keeps_to_its_budget() {
    let mut agent = AgentMode::new(
        UserMode::new(UserModeOptions::default()),
        FlightRecorder::new(header(), 600 * SECOND, 4 << 20),
        TriggerOptions {
            enabled: BTreeSet::new(),
            growing_for_ns: 300 * SECOND,
            size_bytes: None,
            max_map_count: 65_530,
        },
    );
    let mut stream = Stream::new(None, None);
    run(&mut agent, &mut stream, 3 * 3600);
    assert!(
        agent.flight.bytes() <= (4 << 20) + (1 << 20),
        "{} bytes",
        agent.flight.bytes()
    );
    let oldest = agent.flight.oldest_ns().unwrap();
    let now = workload::time_of(START, 3 * 3600);
    // A segment goes once its end is older than the history asked, checked as each new one
    // starts: what is kept reaches back the history plus at most two whole segments (a minute
    // each) and the one being written.
    assert!(
        (600 * SECOND..=780 * SECOND).contains(&(now - oldest)),
        "history reaches back {} s",
        (now - oldest) / SECOND
    );
    assert!(agent.flight.dropped_segments > 100);
}
