//! What goes in comes out: every event variant, under every way of cutting the stream into
//! frames, through memory and through a file.

use super::*;
use crate::recording::MAX_FRAME_PAYLOAD;

#[test]
fn every_variant_round_trips_in_every_framing() {
    let events = every_variant();
    let lost = Losses {
        ring_full: 17,
        pending_full: u64::MAX,
        stacks_not_sampled: 9,
    };
    let framings = [
        WriterOptions::default(),
        WriterOptions {
            compress: false,
            ..WriterOptions::default()
        },
        WriterOptions {
            max_frame_events: 1,
            ..WriterOptions::default()
        },
        WriterOptions {
            max_frame_events: 2,
            ..WriterOptions::default()
        },
        WriterOptions {
            max_frame_events: 7,
            ..WriterOptions::default()
        },
        // Smaller than many single events: those get frames of their own.
        WriterOptions {
            max_frame_bytes: 64,
            ..WriterOptions::default()
        },
        WriterOptions {
            max_frame_events: 0,
            max_frame_bytes: 0,
            ..WriterOptions::default()
        },
    ];
    for options in framings {
        let bytes = write_recording(&events, options, Some(lost));
        let mut reader = RecordingReader::new(&bytes[..]).unwrap();
        assert_eq!(reader.header(), &sample_header());
        let replayed: Vec<Event> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(replayed, events, "{options:?}");
        let outcome = reader.outcome();
        assert_eq!(
            outcome,
            ReplayOutcome {
                events: events.len() as u64,
                complete: true,
                truncated_at: None,
                corrupt_frames_skipped: 0,
                trailer: Some(super::super::Trailer {
                    events: events.len() as u64,
                    lost,
                    frames: outcome.trailer.and_then(|t| t.frames),
                }),
                sequenced: true,
                sealed: true,
                ..ReplayOutcome::default()
            }
        );
        assert!(outcome.trailer.unwrap().frames.unwrap() > 0);
        assert!(outcome.problems().is_empty());
        assert_eq!(
            outcome.to_string(),
            format!("{} events, complete", events.len())
        );
    }
}

#[test]
fn a_session_without_events_is_a_valid_recording() {
    let bytes = write_recording(&[], WriterOptions::default(), Some(Losses::default()));
    let replay = replay(&bytes).unwrap();
    assert!(replay.events.is_empty());
    assert!(replay.outcome.complete);
    // Preamble, header frame, trailer frame: nothing else.
    let types: Vec<_> = frame_spans(&bytes)
        .iter()
        .map(|span| span.frame_type)
        .collect();
    assert_eq!(types, [FrameType::Header, FrameType::Trailer]);
}

#[test]
fn a_writer_dropped_without_finish_keeps_its_events() {
    let events = every_variant();
    let bytes = write_recording(&events, WriterOptions::default(), None);
    let replay = replay(&bytes).unwrap();
    assert_eq!(replay.events, events);
    assert!(replay.error.is_none());
    assert!(!replay.outcome.complete);
    let truncation = replay.outcome.truncated_at.unwrap();
    assert_eq!(
        (truncation.events, truncation.byte),
        (events.len() as u64, bytes.len() as u64)
    );
    assert_eq!(
        replay.outcome.to_string(),
        format!(
            "{0} events, truncated after {0} events at byte {1}",
            events.len(),
            bytes.len()
        )
    );
}

#[test]
fn recordings_round_trip_through_files() {
    let path = scratch_path("roundtrip");
    let events = every_variant();
    let mut writer = RecordingWriter::create(
        &crate::output::check(&path).unwrap(),
        &sample_header(),
        WriterOptions::default(),
    )
    .unwrap();
    for event in &events {
        writer.write_event(event).unwrap();
    }
    assert_eq!(writer.events_written(), events.len() as u64);
    writer.finish(Losses::default()).unwrap();

    let mut reader = RecordingReader::open(&path).unwrap();
    assert_eq!(reader.header(), &sample_header());
    let replayed: Vec<Event> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(replayed, events);
    assert!(reader.outcome().complete);
    std::fs::remove_file(&path).unwrap();

    let error = RecordingReader::open(&path).err().unwrap();
    assert!(matches!(error, RecordError::Open { .. }), "{error}");
}

#[test]
fn an_event_too_large_for_any_frame_is_refused_and_the_recording_goes_on() {
    let events = every_variant();
    let huge = event(
        10,
        1,
        EventBody::Syscall(SyscallEvent {
            string: Some("x".repeat(MAX_FRAME_PAYLOAD)),
            ..syscall(Syscall::Execve, [0; 6], 0)
        }),
    );
    let mut out = Vec::new();
    let mut writer =
        RecordingWriter::new(&mut out, &sample_header(), WriterOptions::default()).unwrap();
    writer.write_event(&events[0]).unwrap();
    let error = writer.write_event(&huge).err().unwrap();
    assert!(
        matches!(error, RecordError::EventTooLarge { .. }),
        "{error}"
    );
    for event in &events[1..] {
        writer.write_event(event).unwrap();
    }
    assert_eq!(writer.events_written(), events.len() as u64);
    writer.finish(Losses::default()).unwrap();
    let replay = replay(&out).unwrap();
    assert_eq!(replay.events, events);
    assert!(replay.outcome.complete);
}

/// A leak is many allocations from one call site: after the first, each repeat of a stack in
/// a frame is a reference of a byte or two, and frames still stand alone (a stack repeated in
/// a later frame is spelled out again there).
#[test]
fn repeated_stacks_are_references() {
    let call_site: Vec<u64> = (0..12).map(|i| 0x7f12_3456_0000 + i * 0x1_0000).collect();
    let stack = |time_ns| {
        event(
            time_ns,
            7,
            EventBody::Stack(StackEvent {
                frames: call_site.clone(),
                // Cut short: its kind is the other stack kind, its repeats references too.
                truncated: time_ns % 2 == 0,
            }),
        )
    };
    let once = write_recording(
        &[stack(1)],
        WriterOptions::default(),
        Some(Losses::default()),
    );
    let many: Vec<Event> = (1..=1000).map(stack).collect();
    let options = WriterOptions {
        max_frame_events: 250,
        ..WriterOptions::default()
    };
    let bytes = write_recording(&many, options, Some(Losses::default()));
    let per_repeat = (bytes.len() - once.len()) as f64 / 999.0;
    assert!(per_repeat < 8.0, "{per_repeat:.1} bytes per repeated stack");
    let replayed = replay(&bytes).unwrap();
    assert_eq!(replayed.events, many);
    assert!(replayed.outcome.complete);
}

/// The agent's flight recorder keeps frames as the writer handed them out and later saves a
/// window of them as a recording of its own: renumbered, sealed with the new session, and
/// replayed whole, without decoding a single event on the way.
#[test]
fn a_window_of_frames_becomes_a_recording_of_its_own() {
    let events: Vec<Event> = crate::recording::workload::mmap_munmap_loop(30_000).collect();
    // The writer's sink keeps each write: the preamble and header, then one frame per write.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);
    impl std::io::Write for Writes {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl super::super::RecordingSink for Writes {}
    let mut writer = RecordingWriter::new(
        Writes::default(),
        &sample_header(),
        WriterOptions::default(),
    )
    .unwrap();
    for event in &events {
        writer.write_event(event).unwrap();
    }
    let source = writer.session();
    let writes = writer.finish(Losses::default()).unwrap().0;
    let frames: Vec<&Vec<u8>> = writes[1..writes.len() - 1].iter().collect();
    assert!(frames.len() >= 4, "{} frames", frames.len());
    // Each write is exactly one frame, as frame_bounds finds it.
    assert!(frames
        .iter()
        .all(|frame| super::super::frame_bounds(frame) == [(0, frame.len())]));

    let window = &frames[1..3];
    let mut copy =
        RecordingWriter::new(Vec::new(), &sample_header(), WriterOptions::default()).unwrap();
    assert_ne!(copy.session(), source);
    let mut held = 0;
    for frame in window {
        held += copy.copy_frame(frame, &source).unwrap();
    }
    let bytes = copy.finish(Losses::default()).unwrap();
    let replayed = super::replay(&bytes).unwrap();
    assert!(replayed.error.is_none());
    assert!(
        replayed.outcome.problems().is_empty(),
        "{:?}",
        replayed.outcome
    );
    assert_eq!(replayed.events.len() as u64, held);
    // The window's events, in order: those after the first frame's.
    let first = super::super::events_frame::Prefix::read(
        &window[0][super::FRAME_HEAD_LEN..window[0].len() - super::FRAME_CHECKSUM_LEN],
        3,
    )
    .unwrap()
    .0
    .first_event as usize;
    assert_eq!(replayed.events, events[first..first + held as usize]);
    assert_eq!(replayed.outcome.trailer.unwrap().frames, Some(2));

    // What cannot be copied is refused, and the copy goes on.
    let mut copy =
        RecordingWriter::new(Vec::new(), &sample_header(), WriterOptions::default()).unwrap();
    let other = super::super::SessionId([1; 16]);
    let header_and_preamble = &writes[0];
    let trailer = writes.last().unwrap();
    for (frame, session, reason) in [
        (
            &frames[0][..],
            &other,
            "its checksum does not match the session it came from",
        ),
        (
            &frames[0][..frames[0].len() - 1],
            &source,
            "its length is not the frame's",
        ),
        (
            &header_and_preamble[..],
            &source,
            "it does not start as a frame",
        ),
        (&trailer[..], &source, "it is not an events frame"),
    ] {
        let error = copy.copy_frame(frame, session).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("cannot copy a frame into the recording: {reason}")
        );
    }
    copy.copy_frame(frames[0], &source).unwrap();
    let bytes = copy.finish(Losses::default()).unwrap();
    assert!(super::replay(&bytes).unwrap().outcome.problems().is_empty());
}
