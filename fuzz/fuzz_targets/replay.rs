//! Any bytes, read as a recording and replayed through the pipeline into a report, as
//! `memtrace replay` does: nothing may panic, hang or allocate without bound. Frames are named
//! without reading files (the fuzzer must not open paths a crafted recording names).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::{
    record::RecordingReader,
    replay::replay_from,
    report::{self, SessionInfo, Source},
};

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = RecordingReader::new(data) else {
        return;
    };
    let Ok(replayed) = replay_from(reader, None, None, None) else {
        return;
    };
    let _ = replayed.outcome.problems();
    let info = SessionInfo {
        source: Source::Replay,
        events: replayed.pipeline.events,
        lost: replayed.pipeline.lost,
        backend: None,
    };
    let report = report::build(&replayed.pipeline.model, &info);
    let _ = report::json::render(&report);
});
