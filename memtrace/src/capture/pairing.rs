//! Putting each stack sample back behind its syscall's record.
//!
//! Samples travel in their own ring, stamped with their syscall's time; the reader places each
//! right after that syscall's record, so the stream reads as if they had never been apart.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::RawStack;
use crate::event::{Event, EventBody};

/// How long a sample waits for its syscall's record. The record was submitted before the
/// sample, but a reader stops at a record another CPU has reserved and not yet submitted, so the
/// record can come a drain or two later; it never takes this long.
const MAX_WAIT: Duration = Duration::from_millis(200);

/// Samples read but not yet placed, by (tid, syscall time), with when they were read.
#[derive(Default)]
pub struct StackPairing {
    waiting: HashMap<(u32, u64), (RawStack, Instant)>,
    /// The time of the last syscall record read for each thread: a sample no later than it
    /// has missed its record (read in an earlier drain) and need not wait.
    last_record: HashMap<u32, u64>,
}

impl StackPairing {
    pub fn sampled(&mut self, stack: RawStack) {
        self.waiting
            .insert((stack.tid, stack.time_ns), (stack, Instant::now()));
    }

    /// The sample of this syscall, if it was read.
    pub fn take_for(&mut self, event: &Event) -> Option<RawStack> {
        match event.body {
            EventBody::Syscall(_) => {
                self.last_record.insert(event.tid, event.time_ns);
            }
            EventBody::Exit(_) => {
                self.last_record.remove(&event.tid);
                return None;
            }
            _ => return None,
        }
        if self.waiting.is_empty() {
            return None;
        }
        // The sample may have been read before the message that told its thread's comm.
        self.waiting
            .remove(&(event.tid, event.time_ns))
            .map(|(stack, _)| RawStack {
                comm: event.comm,
                ..stack
            })
    }

    /// The samples whose record has not come within [`MAX_WAIT`] (every one left, on the last
    /// drain), in time order (so that the stream does not depend on hashing). The model still
    /// attaches them by their time, if their regions exist.
    pub fn take_unpaired(&mut self, last: bool) -> impl Iterator<Item = RawStack> {
        let now = Instant::now();
        let due: Vec<(u32, u64)> = self
            .waiting
            .iter()
            .filter(|((tid, time_ns), (_, read_at))| {
                last || now.duration_since(*read_at) >= MAX_WAIT
                    || self
                        .last_record
                        .get(tid)
                        .is_some_and(|&last_ns| *time_ns <= last_ns)
            })
            .map(|(&key, _)| key)
            .collect();
        let mut rest: Vec<RawStack> = due
            .iter()
            .filter_map(|key| self.waiting.remove(key))
            .map(|(stack, _)| stack)
            .collect();
        rest.sort_by_key(|stack| (stack.time_ns, stack.tid));
        rest.into_iter()
    }
}
