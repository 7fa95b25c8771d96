//! Recordings that were cut off, corrupted, or are not recordings at all.

use bytes::BytesMut;

use super::*;
use crate::recording::codec::EventDecoder;
use crate::recording::frame::FORMAT_VERSION;
use crate::recording::AfterTrailer;

/// A small recording of several frames (three events each) and its events. Small, because the
/// tests below replay it once per byte: every variant but the ones with kilobytes of strings.
fn small_recording() -> (Vec<u8>, Vec<Event>) {
    let all = every_variant();
    let events: Vec<Event> = [0, 1, 3, 4, 5, 7, 8, 9, 11, 13, 16]
        .into_iter()
        .map(|index| all[index].clone())
        .collect();
    // Frames of three events are too small to compress: stored as encoded, so that the tests
    // below can craft frames from their events.
    let options = WriterOptions {
        max_frame_events: 3,
        compress: false,
        ..WriterOptions::default()
    };
    let bytes = write_recording(
        &events,
        options,
        Some(Losses {
            ring_full: 1,
            pending_full: 2,
            stacks_not_sampled: 0,
        }),
    );
    (bytes, events)
}

/// How many events each frame holds, decoded frame by frame (and as its prefix says).
fn events_in(bytes: &[u8], span: FrameSpan) -> usize {
    if span.frame_type != FrameType::Events {
        return 0;
    }
    let (prefix, events) = events_of(bytes, span);
    let mut events = &events[..];
    let mut decoder = EventDecoder::default();
    let mut count = 0;
    while !events.is_empty() {
        decoder.decode(&mut events).unwrap();
        count += 1;
    }
    assert_eq!(prefix.events, Some(count as u64));
    count
}

#[test]
fn a_cut_at_every_byte_keeps_every_complete_frame() {
    let (bytes, events) = small_recording();
    let spans = frame_spans(&bytes);
    assert!(
        spans.len() >= 5,
        "the recording should have several event frames"
    );
    let header_end = spans[0].end;

    for cut in 0..=bytes.len() {
        let prefix = &bytes[..cut];
        if cut < header_end {
            let error = RecordingReader::new(prefix).err().unwrap();
            match cut {
                0 => assert!(matches!(error, RecordError::Empty)),
                _ => assert!(
                    matches!(error, RecordError::TruncatedHeader { bytes } if bytes == cut as u64),
                    "cut at {cut}: {error}"
                ),
            }
            continue;
        }
        let complete: Vec<FrameSpan> = spans
            .iter()
            .copied()
            .filter(|span| span.end <= cut)
            .collect();
        let expected_events: usize = complete.iter().map(|&span| events_in(&bytes, span)).sum();
        let usable = complete.last().map_or(0, |span| span.end);

        let replay = replay(prefix).unwrap();
        assert!(replay.error.is_none(), "cut at {cut}: {:?}", replay.error);
        assert_eq!(replay.events, events[..expected_events], "cut at {cut}");
        assert_eq!(replay.outcome.corrupt_frames_skipped, 0);
        if cut == bytes.len() {
            assert!(replay.outcome.complete);
            assert_eq!(replay.outcome.truncated_at, None);
        } else {
            assert!(!replay.outcome.complete, "cut at {cut}");
            let truncation = replay.outcome.truncated_at.unwrap();
            assert_eq!(truncation.events, expected_events as u64, "cut at {cut}");
            assert_eq!(truncation.byte, usable as u64, "cut at {cut}");
        }
    }
}

#[test]
fn a_zero_filled_tail_reads_as_a_cut() {
    let (bytes, events) = small_recording();
    let spans = frame_spans(&bytes);
    let third = spans[3];
    let mut damaged = bytes[..third.end].to_vec();
    // The file system kept the size but not the data of the last write, inside a frame...
    damaged.extend(std::iter::repeat_n(0, 5000));
    let replay = replay(&damaged).unwrap();
    assert!(replay.error.is_none());
    assert_eq!(replay.events, events[..9]);
    assert_eq!(replay.outcome.truncated_at.unwrap().byte, third.end as u64);

    // ...or across a frame's head, which then fails its checksum.
    let mut damaged = bytes.clone();
    damaged[spans[2].start + FRAME_HEAD_LEN..].fill(0);
    let replay = super::replay(&damaged).unwrap();
    assert!(replay.error.is_none(), "{:?}", replay.error);
    assert_eq!(replay.events, events[..3]);
    assert!(replay.outcome.truncated_at.is_some());
}

#[test]
fn a_flipped_byte_costs_one_frame_at_most() {
    let (bytes, events) = small_recording();
    let spans = frame_spans(&bytes);
    for (index, span) in spans.iter().enumerate() {
        let lost_events = events_in(&bytes, *span);
        let before: usize = spans[..index]
            .iter()
            .map(|&span| events_in(&bytes, span))
            .sum();
        let mut expected = events.clone();
        expected.drain(before..before + lost_events);

        for at in span.start..span.end {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0xff;
            let sync_or_length = at < span.start + FRAME_HEAD_LEN - 1;
            let result = replay(&damaged);
            if span.frame_type == FrameType::Header {
                // A longer length makes the header look cut off: the two cannot be told apart.
                let error = result.err().unwrap();
                let length_grew = at >= span.start + 2 && sync_or_length;
                assert!(
                    matches!(error, RecordError::CorruptHeader { .. })
                        || length_grew && matches!(error, RecordError::TruncatedHeader { .. }),
                    "byte {at}: {error}"
                );
                continue;
            }
            let replay = result.unwrap();
            if sync_or_length {
                // The structure may be lost from here; everything before is still there.
                assert!(replay.events.len() >= before, "byte {at}");
                assert_eq!(replay.events[..before], events[..before]);
                continue;
            }
            // Type, payload or checksum: exactly this frame is skipped.
            assert!(replay.error.is_none(), "byte {at}: {:?}", replay.error);
            assert_eq!(replay.outcome.corrupt_frames_skipped, 1, "byte {at}");
            if span.frame_type == FrameType::Trailer {
                assert!(!replay.outcome.complete);
                assert_eq!(replay.events, events);
            } else {
                assert!(replay.outcome.complete, "byte {at}");
                assert_eq!(replay.events, expected, "byte {at}");
            }
        }
    }
}

#[test]
fn a_broken_sync_marker_stops_with_a_clear_error() {
    let (bytes, events) = small_recording();
    let spans = frame_spans(&bytes);
    let mut damaged = bytes.clone();
    damaged[spans[2].start] = b'X';
    let replay = replay(&damaged).unwrap();
    assert_eq!(replay.events, events[..3]);
    let error = replay.error.unwrap();
    assert_eq!(
        error.to_string(),
        format!(
            "recording is corrupt at byte {} (no frame starts there); nothing after it can be read",
            spans[2].start
        )
    );
    assert!(!replay.outcome.complete);
    assert_eq!(replay.outcome.truncated_at, None);

    // A length no writer produces.
    let mut damaged = bytes;
    damaged[spans[2].start + 5] = 0xff;
    let error = super::replay(&damaged).unwrap().error.unwrap();
    assert!(
        error
            .to_string()
            .contains("a frame length exceeds the limit"),
        "{error}"
    );
}

#[test]
fn frames_with_a_valid_checksum_but_bad_content_are_skipped() {
    let (bytes, events) = small_recording();
    let spans = frame_spans(&bytes);
    let trailer = spans.last().unwrap();
    let mut crafted = bytes[..trailer.start].to_vec();
    // An event frame whose second event is garbage: the first is delivered, the rest dropped.
    // It is numbered as the next frame, so it is not taken for a repeat.
    let session = session_of(&bytes);
    let session = session.as_ref();
    let (_, events_part) = events_of(&bytes, spans[1]);
    let first_event_len = events_part.len() - {
        let mut rest = &events_part[..];
        EventDecoder::default().decode(&mut rest).unwrap();
        rest.len()
    };
    let events_frames = spans
        .iter()
        .filter(|s| s.frame_type == FrameType::Events)
        .count();
    let mut garbage = events_part[..first_event_len].to_vec();
    garbage.push(0xff);
    let payload = events_payload(events_frames as u64, events.len() as u64, 2, &garbage);
    append_frame(&mut crafted, session, FrameType::Events as u8, &payload);
    // A second header, a malformed trailer, and a frame type from the future.
    append_frame(&mut crafted, session, FrameType::Header as u8, b"");
    append_frame(&mut crafted, session, FrameType::Trailer as u8, &[0x80]);
    append_frame(&mut crafted, session, 200, b"from a later format revision");
    crafted.extend_from_slice(&bytes[trailer.start..]);

    let replay = replay(&crafted).unwrap();
    assert!(replay.error.is_none());
    let mut expected = events.clone();
    expected.push(events[0].clone());
    assert_eq!(replay.events, expected);
    assert_eq!(replay.outcome.corrupt_frames_skipped, 3);
    assert!(replay.outcome.complete);
    // The trailer was written before the crafted frame: it counts one frame and one event
    // fewer than the replay found.
    assert_eq!(
        replay.outcome.trailer_disagrees,
        Some((events_frames as u64, events_frames as u64 + 1))
    );
}

/// Whatever follows the trailer is not replayed, and is said: a second recording
/// (`cat a.mtr b.mtr`), a frame, zeros or garbage.
#[test]
fn bytes_after_the_trailer_are_reported() {
    let (bytes, events) = small_recording();
    let spans = frame_spans(&bytes);
    let end = bytes.len() as u64;
    let (second, _) = small_recording();
    let frame = &bytes[spans[1].start..spans[1].end];
    for (tail, expected) in [
        (&second[..], AfterTrailer::Recording { at: end }),
        (&second[..3], AfterTrailer::Recording { at: end }),
        (frame, AfterTrailer::Frame { at: end }),
        (&[0; 100_000][..], AfterTrailer::Zeros { at: end }),
        (b"trailing garbage", AfterTrailer::Garbage { at: end }),
        (&[0, 0, 1][..], AfterTrailer::Garbage { at: end }),
    ] {
        let replay = replay(&[&bytes[..], tail].concat()).unwrap();
        assert_eq!(replay.events, events);
        assert!(replay.outcome.complete);
        assert!(replay.error.is_none());
        assert_eq!(replay.outcome.after_trailer, Some(expected));
        assert_eq!(replay.outcome.problems(), vec![expected.to_string()]);
    }
    assert!(AfterTrailer::Recording { at: 5 }
        .to_string()
        .starts_with("a second recording follows the trailer at byte 5"));
    assert_eq!(replay(&bytes).unwrap().outcome.after_trailer, None);
}

/// The frames of one recording under another's header (a spliced file) fail their checksums:
/// the session id seals every frame.
#[test]
fn frames_of_another_session_are_not_replayed_under_this_one() {
    let (a, _) = small_recording();
    let (b, _) = small_recording();
    assert_ne!(session_of(&a), session_of(&b));
    let a_header = frame_spans(&a)[0];
    let b_spans = frame_spans(&b);
    let spliced = [&a[..a_header.end], &b[b_spans[1].start..]].concat();
    let replay = replay(&spliced).unwrap();
    assert!(replay.events.is_empty());
    assert_eq!(
        replay.outcome.corrupt_frames_skipped,
        b_spans.len() as u64 - 1
    );
    assert!(!replay.outcome.complete);
    assert!(
        replay.outcome.problems()[1].contains("frames spliced from another"),
        "{:?}",
        replay.outcome.problems()
    );
}

#[test]
fn files_that_are_not_recordings_get_one_line_errors() {
    let message = |bytes: &[u8]| RecordingReader::new(bytes).err().unwrap().to_string();
    assert_eq!(message(b""), "not a memtrace recording: the file is empty");
    assert_eq!(
        message(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
        "not a memtrace recording: bad magic"
    );
    assert_eq!(
        message(b"M"),
        "recording is cut off after 1 bytes, inside its header: it holds no events"
    );
    assert_eq!(message(b"MEMTRAC!"), "not a memtrace recording: bad magic");

    let (bytes, _) = small_recording();
    let mut other_version = bytes.clone();
    other_version[MAGIC.len()..PREAMBLE_LEN].copy_from_slice(&7u32.to_le_bytes());
    assert_eq!(
        message(&other_version),
        "recording format version 7 is not supported (this memtrace reads versions 1 to 3)"
    );
    assert_eq!(FORMAT_VERSION, 3);
    // Cut inside the session id.
    assert_eq!(
        message(&bytes[..PREAMBLE_LEN + 5]),
        format!(
            "recording is cut off after {} bytes, inside its header: it holds no events",
            PREAMBLE_LEN + 5
        )
    );

    // A preamble followed by an events frame instead of the header.
    let spans = frame_spans(&bytes);
    let mut headless = bytes[..preamble_len(&bytes)].to_vec();
    headless.extend_from_slice(&bytes[spans[1].start..]);
    assert_eq!(
        message(&headless),
        "recording header is corrupt: the first frame is not a header"
    );
}

/// The events frames of `small_recording`, and the recording rebuilt from a choice of them.
fn rebuilt(bytes: &[u8], order: &[usize]) -> Vec<u8> {
    let spans = frame_spans(bytes);
    let events: Vec<FrameSpan> = spans
        .iter()
        .copied()
        .filter(|s| s.frame_type == FrameType::Events)
        .collect();
    let mut out = bytes[..spans[0].end].to_vec();
    for &index in order {
        out.extend_from_slice(&bytes[events[index].start..events[index].end]);
    }
    out.extend_from_slice(&bytes[spans.last().unwrap().start..]);
    out
}

#[test]
fn missing_repeated_and_reordered_frames_are_counted() {
    let (bytes, events) = small_recording();
    let frames = frame_spans(&bytes)
        .iter()
        .filter(|s| s.frame_type == FrameType::Events)
        .count();
    assert_eq!(frames, 4, "11 events, 3 a frame");
    let whole = replay(&rebuilt(&bytes, &[0, 1, 2, 3])).unwrap();
    assert_eq!(whole.events, events);
    assert!(whole.outcome.problems().is_empty(), "{:?}", whole.outcome);

    // Frame 1 dropped: its 3 events are counted as missing.
    let dropped = replay(&rebuilt(&bytes, &[0, 2, 3])).unwrap().outcome;
    assert_eq!((dropped.frames_missing, dropped.events_missing), (1, 3));
    // The last frame dropped: only the trailer can tell.
    let last = replay(&rebuilt(&bytes, &[0, 1, 2])).unwrap().outcome;
    assert_eq!((last.frames_missing, last.events_missing), (1, 2));
    // Frame 1 three times: the repeats are skipped, nothing is delivered twice.
    let repeated = replay(&rebuilt(&bytes, &[0, 1, 1, 1, 2, 3])).unwrap();
    assert_eq!(repeated.events, events);
    assert_eq!(repeated.outcome.frames_out_of_order, 2);
    assert_eq!(repeated.outcome.problems().len(), 1);
    // Frames 1 and 2 swapped: 2 arrives first (1 looks missing), then 1 is out of order.
    let swapped = replay(&rebuilt(&bytes, &[0, 2, 1, 3])).unwrap().outcome;
    assert_eq!(swapped.frames_out_of_order, 1);
    assert_eq!(swapped.events_missing, 3);
}

#[test]
fn a_trailer_with_wrong_totals_is_reported() {
    let (bytes, events) = small_recording();
    let spans = frame_spans(&bytes);
    let trailer = spans.last().unwrap();
    for (claimed_events, expected) in [
        (
            events.len() as u64 + 5,
            "5 events the recorder wrote are missing from the replay",
        ),
        (
            2,
            "the trailer counts 2 but the recording holds 11: it is corrupt",
        ),
    ] {
        let mut crafted = bytes[..trailer.start].to_vec();
        let mut payload = Vec::new();
        put_uvarint(&mut payload, claimed_events);
        put_uvarint(&mut payload, 1);
        put_uvarint(&mut payload, 2);
        put_uvarint(&mut payload, 4);
        append_frame(
            &mut crafted,
            session_of(&bytes).as_ref(),
            FrameType::Trailer as u8,
            &payload,
        );
        let outcome = replay(&crafted).unwrap().outcome;
        assert!(outcome.complete);
        assert_eq!(outcome.problems(), vec![expected.to_string()]);
    }
}

#[test]
fn version_1_recordings_still_replay_and_check_their_event_count() {
    // A version 1 recording: no sequence prefix in events frames, a three-field trailer, and
    // attach layouts without memfd descriptors (so this one has no attach layout, which version 2
    // encodes differently).
    let (_, events) = small_recording();
    let events: Vec<Event> = events
        .into_iter()
        .filter(|event| !matches!(event.body, EventBody::Attach(_)))
        .collect();
    let options = WriterOptions {
        max_frame_events: 3,
        ..WriterOptions::default()
    };
    let bytes = write_recording(&events, options, Some(Losses::default()));
    let old = downgrade(&bytes, 1);
    let replayed = replay(&old).unwrap();
    assert_eq!(replayed.events, events);
    assert!(!replayed.outcome.sequenced);
    assert!(!replayed.outcome.sealed);
    assert!(
        replayed.outcome.problems().is_empty(),
        "{:?}",
        replayed.outcome
    );

    // A version 1 attach layout followed by another event in the same frame: the next event is not
    // taken for memfd descriptors.
    let attach = every_variant()
        .into_iter()
        .find(|event| matches!(event.body, EventBody::Attach(_)))
        .unwrap();
    let mut encoder = crate::recording::codec::EventEncoder::default();
    let mut payload = BytesMut::new();
    encoder.encode(&attach, &mut payload);
    // Version 2 ends an attach layout with its memfd count (0 here): version 1 has no such byte.
    assert_eq!(payload.last(), Some(&0));
    payload.truncate(payload.len() - 1);
    encoder.encode(&events[0], &mut payload);
    let spans = frame_spans(&old);
    let mut v1 = old[..spans[0].end].to_vec();
    append_frame(&mut v1, None, FrameType::Events as u8, &payload);
    let replayed = replay(&v1).unwrap();
    assert_eq!(replayed.events, vec![attach, events[0].clone()]);
}

/// Version 2 recordings (numbered frames, no session id, no compression) replay as before,
/// with their checks: a frame dropped from one is still counted.
#[test]
fn version_2_recordings_still_replay_with_their_checks() {
    let (bytes, events) = small_recording();
    let old = downgrade(&bytes, 2);
    let replayed = replay(&old).unwrap();
    assert_eq!(replayed.events, events);
    assert!(replayed.outcome.sequenced && !replayed.outcome.sealed);
    assert!(
        replayed.outcome.problems().is_empty(),
        "{:?}",
        replayed.outcome
    );
    let spans = frame_spans(&old);
    let dropped = [&old[..spans[2].start], &old[spans[2].end..]].concat();
    let outcome = replay(&dropped).unwrap().outcome;
    assert_eq!((outcome.frames_missing, outcome.events_missing), (1, 3));
}

/// A recording the version 2 memtrace wrote of a real program (50 mmap/munmap pairs, with
/// call stacks and modules): every event replays, and the model sees the syscalls it made.
#[test]
fn a_real_version_2_recording_replays_whole() {
    let bytes = include_bytes!("v2.mtr");
    assert_eq!(version_of(bytes), 2);
    let replayed = replay(bytes).unwrap();
    assert!(replayed.error.is_none());
    assert_eq!(replayed.events.len(), 138);
    assert!(replayed.outcome.complete);
    assert!(
        replayed.outcome.problems().is_empty(),
        "{:?}",
        replayed.outcome
    );
    let calls = |syscall: Syscall| {
        replayed
            .events
            .iter()
            .filter(
                |event| matches!(&event.body, EventBody::Syscall(call) if call.syscall == syscall),
            )
            .count()
    };
    assert_eq!((calls(Syscall::Mmap), calls(Syscall::Munmap)), (58, 51));
    assert!(replayed
        .events
        .iter()
        .any(|event| matches!(event.body, EventBody::Stack(_))));
}

/// Compressed frames (what the writer makes of a real loop) damaged anywhere cost that frame
/// at most, like plain ones.
#[test]
fn a_flipped_byte_in_a_compressed_frame_costs_that_frame() {
    let events: Vec<Event> = crate::recording::workload::mmap_munmap_loop(20_000).collect();
    let bytes = write_recording(&events, WriterOptions::default(), Some(Losses::default()));
    let spans = frame_spans(&bytes);
    let compressed: Vec<FrameSpan> = spans
        .iter()
        .copied()
        .filter(|span| {
            span.frame_type == FrameType::Events
                && events_of(&bytes, *span).0.encoding
                    == crate::recording::events_frame::Encoding::Lz4
        })
        .collect();
    assert!(
        compressed.len() >= 2,
        "{} compressed frames",
        compressed.len()
    );
    let span = compressed[1];
    let lost = events_in(&bytes, span);
    // Forty places across the frame (each replay decodes the whole loop).
    let step = (span.end - span.start - FRAME_HEAD_LEN) / 40;
    for at in (span.start + FRAME_HEAD_LEN..span.end).step_by(step.max(1)) {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x55;
        let replayed = replay(&damaged).unwrap();
        assert!(replayed.error.is_none(), "byte {at}");
        assert_eq!(replayed.outcome.corrupt_frames_skipped, 1, "byte {at}");
        assert_eq!(replayed.events.len(), events.len() - lost, "byte {at}");
    }
}
