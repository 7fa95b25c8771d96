//! Putting each stack sample back behind its syscall's record.
//!
//! Samples travel in their own ring, stamped with their syscall's time; the reader places each
//! right after that syscall's record, so the stream reads as if they had never been apart.

use std::collections::HashMap;

use super::StackCapture;
use crate::event::{Event, EventBody};

/// Samples read but not yet placed, by (tid, syscall time).
#[derive(Default)]
pub struct StackPairing {
    waiting: HashMap<(u32, u64), StackCapture>,
}

impl StackPairing {
    pub fn sampled(&mut self, stack: StackCapture) {
        self.waiting.insert((stack.tid, stack.time_ns), stack);
    }

    /// The sample of this syscall, if it was read.
    pub fn take_for(&mut self, event: &Event) -> Option<StackCapture> {
        if self.waiting.is_empty() || !matches!(event.body, EventBody::Syscall(_)) {
            return None;
        }
        self.waiting.remove(&(event.tid, event.time_ns))
    }

    /// Every sample left, in time order (so that the stream does not depend on hashing).
    pub fn take_rest(&mut self) -> impl Iterator<Item = StackCapture> {
        let mut rest: Vec<StackCapture> = self.waiting.drain().map(|(_, stack)| stack).collect();
        rest.sort_by_key(|stack| (stack.time_ns, stack.tid));
        rest.into_iter()
    }
}
