//! Any bytes, read as a recording and replayed through the stream into a report, as
//! `memtrace replay` does: nothing may panic, hang or allocate without bound. Frames are named
//! without reading files (the fuzzer must not open paths a crafted recording names).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::{
    recording::RecordingReader,
    kernel_mode,
    replay::{replay_from, ReplayOptions, Replayed},
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
        events: replayed.stream.events(),
        lost: replayed.stream.lost(),
        backend: replayed.header.backend.clone(),
    };
    match &replayed.consumer {
        Replayed::User(user_mode) => {
            let report = report::build_with(
                &user_mode.model,
                user_mode.exited(),
                &info,
                &mut report::NoNames,
            );
            let _ = report::json::render(&report);
        }
        Replayed::Kernel(model) => {
            let report = kernel_mode::report::build(model, Source::Replay);
            let _ = kernel_mode::report::render_json(&report);
        }
    }
});
