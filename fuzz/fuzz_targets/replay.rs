//! Any bytes, read as a recording and replayed through the pipeline into a report, as
//! `memtrace replay` does: nothing may panic, hang or allocate without bound. Frames are named
//! without reading files (the fuzzer must not open paths a crafted recording names).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::{
    recording::RecordingReader,
    replay::{replay_from, ReplayOptions},
    report::{self, SessionInfo, Source},
};

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = RecordingReader::new(data) else {
        return;
    };
    // Few exited processes kept, so that folding them is fuzzed too.
    let options = ReplayOptions {
        path: Default::default(),
        until: None,
        print_events: false,
        interval: None,
        since: None,
        keep_exited: 2,
        pids: Vec::new(),
    };
    let Ok(replayed) = replay_from(reader, &options, None) else {
        return;
    };
    let _ = replayed.outcome.problems();
    let info = SessionInfo {
        source: Source::Replay,
        events: replayed.pipeline.events,
        lost: replayed.pipeline.lost,
        backend: None,
    };
    let pipeline = &replayed.pipeline;
    let report = report::build_with(
        &pipeline.model,
        &pipeline.exited,
        &info,
        &mut report::NoNames,
    );
    let _ = report::json::render(&report);
});
