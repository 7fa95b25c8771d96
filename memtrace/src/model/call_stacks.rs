//! Call stacks, interned: a leak is many regions allocated from one call site, so each distinct
//! stack is stored once and regions point at it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use crate::event::JitSymbolEvent;

/// An index into [`CallStacks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(u32);

#[derive(Clone, Debug, Default)]
pub struct CallStacks {
    stacks: Vec<Arc<[u64]>>,
    ids: HashMap<Arc<[u64]>, StackId>,
    /// The build-id of each file the stacks run through, as it was when they were unwound:
    /// the first one told for its path.
    build_ids: HashMap<String, Vec<u8>>,
    /// A process whose file at a path is another build than the first one told (a container
    /// with its own file of a host path): its own build-id, empty when its file cannot be
    /// found by one.
    differing: HashMap<(u32, String), Vec<u8>>,
    /// The JIT functions each process's stacks run through, by start: what its perf map named
    /// them when they were unwound.
    jit_symbols: HashMap<u32, BTreeMap<u64, (u64, String)>>,
    /// Stacks whose walk stopped before the outermost frame.
    truncated: std::collections::HashSet<StackId>,
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

    /// The stack with these frames was cut short (its walk stopped before the entry point).
    pub(crate) fn mark_truncated(&mut self, frames: &[u64]) {
        let id = self.intern(frames);
        self.truncated.insert(id);
    }

    /// Whether the stack with these frames was cut short.
    pub fn is_truncated(&self, frames: &[u64]) -> bool {
        self.ids
            .get(frames)
            .is_some_and(|id| self.truncated.contains(id))
    }

    /// Return addresses, innermost first.
    pub fn frames(&self, id: StackId) -> &[u64] {
        self.stacks.get(id.0 as usize).map_or(&[], |frames| frames)
    }

    /// A module record: `build_id` is the build of process `pid`'s file at `path`; empty
    /// means that file is not the one the path names elsewhere and cannot be found by build-id
    /// (it has none, or could not be read), so its frames are not named.
    pub(crate) fn record_module(&mut self, pid: u32, path: &str, build_id: &[u8]) {
        let key = (pid, path.to_string());
        match self.build_ids.get(path) {
            _ if build_id.is_empty() => {
                self.differing.insert(key, Vec::new());
            }
            None => {
                self.build_ids.insert(path.to_string(), build_id.to_vec());
                self.differing.remove(&key);
            }
            Some(first) if first.as_slice() == build_id => {
                self.differing.remove(&key);
            }
            Some(_) => {
                self.differing.insert(key, build_id.to_vec());
            }
        }
    }

    /// The build-id process `pid`'s module had when stacks through it were unwound (`None`:
    /// unknown, or the file has none).
    pub fn build_id(&self, pid: u32, path: &str) -> Option<&[u8]> {
        self.differing
            .get(&(pid, path.to_string()))
            .or_else(|| self.build_ids.get(path))
            .map(Vec::as_slice)
            .filter(|id| !id.is_empty())
    }

    /// Whether frames of process `pid` in `path` may be named by path: not when its file was
    /// told to differ from the path's first one and has no build-id to find it by (or could
    /// not be read); its frames then stay module+offset rather than take another file's
    /// names.
    pub fn nameable(&self, pid: u32, path: &str) -> bool {
        !self
            .differing
            .get(&(pid, path.to_string()))
            .is_some_and(Vec::is_empty)
    }

    /// A JIT symbol record of process `pid`; one at the same start replaces the one before
    /// (the runtime freed that code and compiled other code there).
    pub(crate) fn record_jit_symbol(&mut self, pid: u32, record: &JitSymbolEvent) {
        self.jit_symbols
            .entry(pid)
            .or_default()
            .insert(record.start, (record.len, record.name.clone()));
    }

    /// The JIT function process `pid` had at `address`, as its perf map named it.
    pub fn jit_function(&self, pid: u32, address: u64) -> Option<&str> {
        let (&start, (len, name)) = self.jit_symbols.get(&pid)?.range(..=address).next_back()?;
        (address - start < *len).then_some(name.as_str())
    }

    /// Where process `pid`'s JIT symbols start: perf-map names of JIT code, and the vDSO's
    /// functions (told the same way: no file names them at replay).
    pub fn jit_symbol_starts(&self, pid: u32) -> impl Iterator<Item = u64> + '_ {
        self.jit_symbols
            .get(&pid)
            .into_iter()
            .flat_map(|symbols| symbols.keys().copied())
    }

    /// Process `pid` is gone for good (folded away, its pid free): what was told about its
    /// own files goes with it, or the next process with its pid would inherit it.
    pub(crate) fn forget_process(&mut self, pid: u32) {
        self.jit_symbols.remove(&pid);
        if !self.differing.is_empty() {
            self.differing.retain(|(owner, _), _| *owner != pid);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A container's file at a host path is told apart per process: by its own build-id, or
    /// as not nameable when it has none to be found by.
    #[test]
    fn a_process_with_another_file_at_a_path_keeps_its_own_build() {
        let mut stacks = CallStacks::default();
        stacks.record_module(10, "/usr/bin/app", b"host");
        stacks.record_module(20, "/usr/bin/app", b"container");
        stacks.record_module(30, "/usr/bin/app", b"");
        assert_eq!(stacks.build_id(10, "/usr/bin/app"), Some(&b"host"[..]));
        assert_eq!(stacks.build_id(11, "/usr/bin/app"), Some(&b"host"[..]));
        assert_eq!(stacks.build_id(20, "/usr/bin/app"), Some(&b"container"[..]));
        assert_eq!(stacks.build_id(30, "/usr/bin/app"), None);
        assert!(stacks.nameable(20, "/usr/bin/app"));
        assert!(!stacks.nameable(30, "/usr/bin/app"));
        stacks.record_module(20, "/usr/bin/app", b"host");
        assert_eq!(stacks.build_id(20, "/usr/bin/app"), Some(&b"host"[..]));
    }
}
