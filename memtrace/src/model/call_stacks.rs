//! Call stacks, interned: a leak is many regions allocated from one call site, so each distinct
//! stack is stored once and regions point at it.

use std::{collections::HashMap, sync::Arc};

/// An index into [`CallStacks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(u32);

#[derive(Clone, Debug, Default)]
pub struct CallStacks {
    stacks: Vec<Arc<[u64]>>,
    ids: HashMap<Arc<[u64]>, StackId>,
    /// The build-id of each file the stacks run through, as it was when they were unwound.
    build_ids: HashMap<String, Vec<u8>>,
}

impl CallStacks {
    pub(crate) fn intern(&mut self, frames: &[u64]) -> StackId {
        if let Some(&id) = self.ids.get(frames) {
            return id;
        }
        let id = StackId(self.stacks.len() as u32);
        let frames: Arc<[u64]> = Arc::from(frames);
        self.stacks.push(Arc::clone(&frames));
        self.ids.insert(frames, id);
        id
    }

    /// Return addresses, innermost first.
    pub fn frames(&self, id: StackId) -> &[u64] {
        self.stacks.get(id.0 as usize).map_or(&[], |frames| frames)
    }

    pub(crate) fn record_module(&mut self, path: &str, build_id: &[u8]) {
        self.build_ids.insert(path.to_string(), build_id.to_vec());
    }

    /// The build-id a module had when stacks through it were unwound (`None`: unknown, or the
    /// file has none).
    pub fn build_id(&self, path: &str) -> Option<&[u8]> {
        self.build_ids
            .get(path)
            .map(Vec::as_slice)
            .filter(|id| !id.is_empty())
    }

    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }
}

/// What one call stack created over a session, released since or not: the "alloc" side of a
/// heap profile, next to the unreleased regions (the "in use" side).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocated {
    pub regions: u64,
    pub bytes: u64,
}
